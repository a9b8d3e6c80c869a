"""The distillation teacher: chunked logits equal the teacher's own full logits (ours and HF)."""

from __future__ import annotations

import pytest
import torch
import transformers

from helpers import small_config
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.train.teacher import load_teacher

CPU = torch.device("cpu")


def check_chunks(teacher, ids: torch.Tensor, full: torch.Tensor) -> None:
    """Every chunk of `teacher.chunks(ids)` equals the rows of the full logits [B, T, V]."""
    chunk_fn, flat = teacher.chunks(ids), full.flatten(0, 1)
    for start, stop in ((0, 5), (5, 17), (17, ids.numel())):
        torch.testing.assert_close(chunk_fn(start, stop), flat[start:stop], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(teacher(ids), full, rtol=1e-5, atol=1e-5)


def test_our_checkpoint_as_teacher(tmp_path) -> None:
    model = build_model(small_config(), seed=3).eval()
    save_pretrained(model, None, tmp_path)
    teacher = load_teacher(str(tmp_path), CPU)
    assert teacher.head is not None and teacher.vocab_size == model.config.vocab_size
    ids = torch.randint(0, 1000, (2, 11))
    with torch.no_grad():
        check_chunks(teacher, ids, model(ids))


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_transformers_teacher(tmp_path, kind) -> None:
    """A plain-head architecture (llama) goes through its hidden states and LM head; one with
    logit soft-capping (gemma2) falls back to its full logits."""
    common = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)  # fmt: skip
    if kind == "llama":
        config = transformers.LlamaConfig(**common, tie_word_embeddings=False)
    else:
        config = transformers.Gemma2Config(**common, final_logit_softcapping=5.0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path)
    teacher = load_teacher(str(tmp_path), CPU)
    assert (teacher.head is None) == (kind == "gemma2") and teacher.vocab_size == 300
    ids = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        check_chunks(teacher, ids, model(input_ids=ids).logits)


def test_missing_teacher_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"distill\.teacher .*no config\.json"):
        load_teacher(str(tmp_path / "absent"), CPU)
    (tmp_path / "config.json").write_text('{"model_type": "no_such_architecture"}')
    with pytest.raises(ValueError, match=r"distill\.teacher .*cannot load it as a transformers causal LM"):
        load_teacher(str(tmp_path), CPU)
