"""Parity with transformers' `Llama4ForCausalLM` in both directions, and greedy generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.model import ModelConfig, build_model
from mobilellm_r1.model.hf import load_pretrained, save_pretrained, to_hf_config

VOCAB = 1000
TOL = 1e-4

# (heads, kv_heads, head_dim, layers, hidden, no_rope_layers, attn_temperature_tuning)
SHAPES = [
    (4, 4, 16, 2, 64, None, False),
    (6, 2, 32, 3, 96, None, False),
    (8, 1, 16, 2, 64, [1, 0], False),
    (9, 3, 32, 3, 96, [1, 0, 1], True),
]
SHAPE_IDS = [f"h{s[0]}-kv{s[1]}-hd{s[2]}-L{s[3]}{'-tt' if s[6] else ''}" for s in SHAPES]


def make_cfg(shape) -> ModelConfig:
    heads, kv, hd, layers, hidden, nope, temperature_tuning = shape
    return ModelConfig(
        hidden_size=hidden,
        intermediate_size_mlp=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=hd,
        vocab_size=VOCAB,
        max_position_embeddings=512,
        initializer_range=0.1,
        no_rope_layers=nope or [],
        # a small floor_scale makes the NoPE query scaling kick in within a few tokens
        attn_temperature_tuning=temperature_tuning,
        floor_scale=8,
        rope_theta=10_000.0,  # a small theta makes every rotation frequency matter over 50 tokens
        bos_token_id=1,
        eos_token_id=[2],
    )


def perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Norm scales away from 1 (both libraries init them to 1), so their placement is tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))


def rand_ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def hf_load(directory: Path, dtype: torch.dtype = torch.float32):
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, output_loading_info=True
    )
    return hf.eval(), info


@pytest.fixture(scope="module", params=range(len(SHAPES)), ids=SHAPE_IDS)
def ours_saved(request, tmp_path_factory):
    """Our random model and the directory it was saved to."""
    cfg = make_cfg(SHAPES[request.param])
    model = build_model(cfg, seed=request.param).eval()
    perturb_norms(model, request.param)
    directory = save_pretrained(model, None, tmp_path_factory.mktemp("ours") / "ckpt")
    return model, directory


# ------------------------------------------------------------------ (a) ours -> transformers
@torch.no_grad()
def test_ours_to_transformers_logits(ours_saved) -> None:
    model, directory = ours_saved
    hf, info = hf_load(directory)
    assert isinstance(hf, transformers.Llama4ForCausalLM)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()  # tied
    ids = rand_ids((3, 50), 0)
    ref = hf(ids).logits
    assert (model(ids) - ref).abs().max().item() <= TOL
    assert ref.abs().max() > 0.5  # not a degenerate comparison


# ------------------------------------------------------------------ (b) transformers -> ours
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@torch.no_grad()
def test_transformers_to_ours_logits(tmp_path, shape) -> None:
    cfg = make_cfg(shape)
    hf_cfg = transformers.Llama4TextConfig(**to_hf_config(cfg))
    assert hf_cfg.tie_word_embeddings and hf_cfg.moe_layers == []
    torch.manual_seed(0)
    hf = transformers.Llama4ForCausalLM(hf_cfg).eval()
    perturb_norms(hf, 1)
    hf.save_pretrained(tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()  # no tokenizer files written
    ours, tokenizer = load_pretrained(tmp_path)
    assert ours.config.no_rope_layers == cfg.no_rope_layers
    assert ours.lm_head.weight is ours.embed_tokens.weight
    assert not ours.training
    ids = rand_ids((2, 50), 1)
    assert (ours(ids) - hf(ids).logits).abs().max().item() <= TOL
    assert tokenizer.vocab_size == 128_256  # the default Llama-3 tokenizer


# ------------------------------------------------------------------ (c) greedy generation
@torch.no_grad()
def test_greedy_generation_matches_transformers(ours_saved) -> None:
    model, directory = ours_saved
    hf, _ = hf_load(directory)
    # No eos in HF's generation: `min_new_tokens` would otherwise mask the eos logit (ours
    # generates with stop_token_ids=() and never masks anything).
    hf.generation_config.eos_token_id = None
    prompts = [rand_ids((n,), 10 + n).tolist() for n in (5, 17, 1, 9)]
    ours = Generator(model).generate(prompts, SamplingParams(max_new_tokens=64, stop_token_ids=()))
    for prompt, (completion,) in zip(prompts, ours, strict=True):
        ref = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=64,
            min_new_tokens=64,
            do_sample=False,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
        assert completion.token_ids == ref
        assert completion.finish_reason == "length"


# ------------------------------------------------------------------ bf16 smoke
@torch.no_grad()
def test_bf16_both_directions(tmp_path, ours_saved) -> None:
    model, _ = ours_saved
    ids = rand_ids((2, 24), 2)
    ref = model(ids)
    # ours (bf16) -> transformers
    save_pretrained(model, None, tmp_path / "ours16", dtype=torch.bfloat16)
    assert json.loads((tmp_path / "ours16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    hf16, info = hf_load(tmp_path / "ours16", dtype=torch.bfloat16)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert hf16.model.embed_tokens.weight.dtype == torch.bfloat16
    hf_logits = hf16(ids).logits.float()
    # transformers (bf16) -> ours
    hf16.save_pretrained(tmp_path / "hf16")
    ours16, _ = load_pretrained(tmp_path / "hf16")
    assert ours16.embed_tokens.weight.dtype == torch.bfloat16
    ours_logits = ours16(ids).float()
    scale = ref.abs().max().item()
    for logits in (hf_logits, ours_logits):
        assert torch.isfinite(logits).all()
        assert (logits - ref).abs().max().item() < 0.1 * scale
    assert (hf_logits - ours_logits).abs().max().item() < 0.1 * scale


# ------------------------------------------------------------------ config defaults
@torch.no_grad()
def test_config_without_optional_keys_matches_transformers(tmp_path) -> None:
    cfg = make_cfg((4, 2, 16, 4, 64, None, False))
    model = build_model(cfg, seed=0).eval()
    save_pretrained(model, None, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("no_rope_layers", "attn_temperature_tuning", "layer_types"):
        del config[key]
    config["floor_scale"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    hf, _ = hf_load(tmp_path)
    ours, _ = load_pretrained(tmp_path)
    ids = rand_ids((1, 40), 3)
    assert (ours(ids) - hf(ids).logits).abs().max().item() <= TOL
