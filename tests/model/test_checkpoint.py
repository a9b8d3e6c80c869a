"""save_pretrained / load_pretrained: exact round trips, sharding, tokenizer files, errors, atomicity."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mobilellm_r1.model.hf as hf_io
from helpers import VOCAB, small_config
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import CheckpointError, load_pretrained, save_pretrained
from mobilellm_r1.tokenizer import load_tokenizer


def make_model(seed: int = 0, **overrides) -> torch.nn.Module:
    model = build_model(small_config(**overrides), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    return model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, dtype: torch.dtype | None = None) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        expected = sa[key] if dtype is None else sa[key].to(dtype)
        assert sb[key].dtype == expected.dtype, key
        assert torch.equal(sb[key], expected), key


IDS = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> Path:
    """A single-file fp32 checkpoint; tests needing to damage it copy it first."""
    return save_pretrained(model, None, tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def damaged(saved, tmp_path) -> Path:
    """A private copy of the saved checkpoint, to be damaged by one test."""
    return Path(shutil.copytree(saved, tmp_path / "damaged"))


# ------------------------------------------------------------------ round trips
@torch.no_grad()
def test_round_trip_fp32_exact(model, saved) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    loaded, _ = load_pretrained(saved)
    assert loaded.config == model.config
    assert_same_weights(model, loaded)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    assert not loaded.training
    assert torch.equal(loaded(IDS), model(IDS))
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys  # tied head omitted, as transformers writes it
    assert "model.layers.0.self_attn.q_proj.weight" in keys
    assert "model.layers.1.feed_forward.up_proj.weight" in keys


@torch.no_grad()
def test_round_trip_bf16_exact(model, tmp_path) -> None:
    directory = save_pretrained(model, None, tmp_path / "bf16", dtype=torch.bfloat16)
    config = json.loads((directory / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    tensors = load_file(str(directory / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    loaded, _ = load_pretrained(directory)
    assert_same_weights(model, loaded, dtype=torch.bfloat16)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    # re-saving the bf16 model without a dtype argument keeps bf16 bit-exactly
    again, _ = load_pretrained(save_pretrained(loaded, None, tmp_path / "bf16b"))
    assert_same_weights(loaded, again)
    # load_pretrained(dtype=) casts on load
    as32, _ = load_pretrained(directory, dtype=torch.float32)
    assert_same_weights(loaded, as32, dtype=torch.float32)


@torch.no_grad()
def test_round_trip_untied_and_nope(tmp_path) -> None:
    model = make_model(seed=3, tie_word_embeddings=False, no_rope_layers=[0, 1])
    loaded, _ = load_pretrained(save_pretrained(model, None, tmp_path / "untied"))
    assert loaded.config == model.config
    assert loaded.lm_head.weight is not loaded.embed_tokens.weight
    assert_same_weights(model, loaded)


def test_overwrite_existing_dir(model, tmp_path) -> None:
    parent = tmp_path / "parent"
    save_pretrained(make_model(seed=7), None, parent / "ckpt")
    save_pretrained(model, None, parent / "ckpt")
    loaded, _ = load_pretrained(parent / "ckpt")
    assert_same_weights(model, loaded)
    assert [p.name for p in parent.iterdir()] == ["ckpt"]  # no temp / old dirs left behind


# ------------------------------------------------------------------ sharding
@pytest.fixture(scope="module")
def sharded(model, tmp_path_factory) -> Path:
    return save_pretrained(model, None, tmp_path_factory.mktemp("sharded") / "model", max_shard_size=50_000)


def test_sharded_layout(model, sharded) -> None:
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    n = len(shards)
    assert n > 1
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert not (sharded / "model.safetensors").exists()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    stored = {}
    for shard in shards:
        stored.update({k: (v, shard) for k, v in load_file(str(sharded / shard)).items()})
    assert {k: s for k, (_, s) in stored.items()} == index["weight_map"]
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t, _ in stored.values())


@torch.no_grad()
def test_sharded_loads_exactly(model, sharded) -> None:
    loaded, _ = load_pretrained(sharded)
    assert_same_weights(model, loaded)
    assert torch.equal(loaded(IDS), model(IDS))


@torch.no_grad()
def test_transformers_loads_sharded(model, sharded) -> None:
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        sharded, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (hf.eval()(IDS).logits - model(IDS)).abs().max().item() <= 1e-4


def test_sharded_missing_shard(sharded, tmp_path) -> None:
    copy = Path(shutil.copytree(sharded, tmp_path / "copy"))
    (copy / "model-00002-of-{:05d}.safetensors".format(len(list(copy.glob("model-*"))))).unlink()
    with pytest.raises(CheckpointError, match="model-00002-of"):
        load_pretrained(copy)


# ------------------------------------------------------------------ tokenizer files
def test_save_with_tokenizer(model, tokenizer, tmp_path) -> None:
    directory = save_pretrained(model, tokenizer, tmp_path / "with_tok")
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
        "config.json",
        "model.safetensors",
    ):
        assert (directory / name).is_file(), name
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["bos_token_id"] == 1 and generation["eos_token_id"] == [2]
    assert json.loads((directory / "tokenizer_config.json").read_text())["model_max_length"] == 256
    loaded, tok = load_pretrained(directory)
    assert_same_weights(model, loaded)
    assert tok.vocab_size == tokenizer.vocab_size == 128_256
    for text in ("Hello, world!", "def f(x):\n    return x ** 2\n", "数学 \\boxed{42} 👍🏽", ""):
        assert tok.encode(text, bos=True) == tokenizer.encode(text, bos=True)
    messages = [{"role": "user", "content": "2+2?"}]
    assert tok.apply_chat_template(messages, add_generation_prompt=True) == tokenizer.apply_chat_template(
        messages, add_generation_prompt=True
    )


# ------------------------------------------------------------------ errors
def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_config(damaged) -> None:
    (damaged / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_pretrained(damaged)


def test_wrong_model_type(damaged) -> None:
    _edit_config(damaged, model_type="llama")
    with pytest.raises(CheckpointError, match="model_type"):
        load_pretrained(damaged)


def test_moe_config_refused(damaged) -> None:
    _edit_config(damaged, num_local_experts=16, moe_layers=[1], num_experts_per_tok=1)
    with pytest.raises(CheckpointError, match="mixture-of-experts"):
        load_pretrained(damaged)


def test_invalid_config_values(damaged) -> None:
    _edit_config(damaged, num_key_value_heads=3)
    with pytest.raises(CheckpointError, match="num_key_value_heads"):
        load_pretrained(damaged)


def test_wrong_shape_names_key_and_file(damaged) -> None:
    path = damaged / "model.safetensors"
    tensors = load_file(str(path))
    key = "model.layers.1.self_attn.k_proj.weight"
    tensors[key] = tensors[key].reshape(-1, 32).contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.safetensors") as err:
        load_pretrained(damaged)
    assert key in str(err.value)
    assert "shape" in str(err.value)


def test_unexpected_key(damaged) -> None:
    path = damaged / "model.safetensors"
    tensors = load_file(str(path))
    tensors["model.layers.0.self_attn.extra.weight"] = torch.zeros(4)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="unexpected") as err:
        load_pretrained(damaged)
    assert "model.layers.0.self_attn.extra.weight" in str(err.value)


def test_missing_key(damaged) -> None:
    path = damaged / "model.safetensors"
    tensors = load_file(str(path))
    del tensors["model.layers.0.feed_forward.gate_proj.weight"]
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing") as err:
        load_pretrained(damaged)
    assert "model.layers.0.feed_forward.gate_proj.weight" in str(err.value)


def test_tied_head_stored_is_accepted(damaged, model) -> None:
    """Some writers store the tied lm_head too; it is skipped, not an unexpected key."""
    path = damaged / "model.safetensors"
    tensors = load_file(str(path))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, str(path), metadata={"format": "pt"})
    loaded, _ = load_pretrained(damaged)
    assert_same_weights(model, loaded)


def test_pickle_only_refused(damaged) -> None:
    (damaged / "model.safetensors").unlink()
    (damaged / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="pickle") as err:
        load_pretrained(damaged)
    assert "pytorch_model.bin" in str(err.value)


def test_no_weights(damaged) -> None:
    (damaged / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_pretrained(damaged)


def test_nonexistent_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path / "does" / "not" / "exist")


def test_file_instead_of_dir(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_pretrained(tmp_path / "file")


# ------------------------------------------------------------------ atomic save
def test_failed_save_keeps_existing_checkpoint(model, tmp_path, monkeypatch) -> None:
    parent = tmp_path / "parent"
    target = save_pretrained(model, None, parent / "ckpt")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(hf_io, "_write_weights", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(make_model(seed=9), None, parent / "ckpt")
    assert [p.name for p in parent.iterdir()] == ["ckpt"]  # no temp dirs left
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    loaded, _ = load_pretrained(target)
    assert_same_weights(model, loaded)

    # a failed first save leaves nothing at all
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(model, None, parent / "fresh")
    assert [p.name for p in parent.iterdir()] == ["ckpt"]


# ------------------------------------------------------------------ untrusted model directories (issue 17)
class _Payload:
    """Unpickling this creates `marker` (stands in for any code a crafted file would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("model.safetensors", r"model\.safetensors: not a readable safetensors file"),
        ("config.json", r"config\.json: invalid JSON"),
        ("pytorch_model.bin", r"only pickled weights \(pytorch_model\.bin\)"),
    ],
)
def test_pickled_model_file_is_refused(damaged, tmp_path, name: str, error: str) -> None:
    marker = tmp_path / "pwned"
    if name == "pytorch_model.bin":
        (damaged / "model.safetensors").unlink()
    for payload in (pickle.dumps(_Payload(marker)), _torch_saved(_Payload(marker))):
        (damaged / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match=error):
            load_pretrained(damaged)
        assert not marker.exists()


def test_pickled_shard_index_is_refused(sharded, tmp_path) -> None:
    copy = Path(shutil.copytree(sharded, tmp_path / "copy"))
    marker = tmp_path / "pwned"
    (copy / "model.safetensors.index.json").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match=r"index\.json: unreadable index"):
        load_pretrained(copy)
    (copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "../../x.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="outside"):
        load_pretrained(copy)
    (copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["not", "a", "map"]}))
    with pytest.raises(CheckpointError, match=r"index\.json: unreadable index"):
        load_pretrained(copy)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:7],  # shorter than the header length
        lambda b: b"\xff" * 64,  # garbage
        lambda b: b[:8] + b"{not json" + b[17:],  # broken header
    ],
)
def test_damaged_safetensors_is_one_error_naming_the_file(damaged, damage) -> None:
    path = damaged / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_pretrained(damaged)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]", "expected a JSON object, got list"),
        (None, "invalid JSON"),  # bytes that are not UTF-8
        ('{"model_type": "llama4_text", "hidden_size": "big", "num_hidden_layers": 2, '
         '"num_attention_heads": 4, "vocab_size": 1000, "rope_theta": 1e4}', "config.json: "),
        ('{"model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": "two", '
         '"num_attention_heads": 4, "vocab_size": 1000, "rope_theta": 1e4}', "config.json: "),
        ('{"model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 2, "rope_parameters": 3, '
         '"num_attention_heads": 4, "vocab_size": 1000}', "config.json: "),
    ],
)  # fmt: skip
def test_malformed_config_is_one_error_naming_the_file(damaged, text: str | None, error: str) -> None:
    path = damaged / "config.json"
    path.write_bytes(b"\xff\xfe{" if text is None else text.encode())
    with pytest.raises(CheckpointError, match=re.escape(error)) as err:
        load_pretrained(damaged)
    assert str(path) in str(err.value)


def test_generate_on_garbage_weights_is_one_line(damaged, capsys) -> None:
    from mobilellm_r1.cli import main

    (damaged / "model.safetensors").write_bytes(b"\x00" * 100)
    assert main(["generate", "--model", str(damaged), "--prompt", "x", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mobilellm-r1: error: ")
    assert "model.safetensors: not a readable safetensors file" in err


def test_save_removes_temporaries_of_a_killed_save(model, tmp_path) -> None:
    parent = tmp_path / "parent"
    save_pretrained(model, None, parent / "final")
    for stale in (".final.tmp-k1ll3d", ".final.old-4242"):  # what a kill mid-save leaves
        (parent / stale).mkdir()
        (parent / stale / "model.safetensors").write_bytes(b"partial")
    (parent / ".other.tmp-abc").mkdir()  # another directory's save: not ours to remove
    save_pretrained(model, None, parent / "final")
    assert sorted(p.name for p in parent.iterdir()) == [".other.tmp-abc", "final"]
    assert_same_weights(model, load_pretrained(parent / "final")[0])


def test_check_finite_weights_names_the_tensor() -> None:
    from mobilellm_r1.model.hf import check_finite_weights

    model = build_model(small_config(), seed=0)
    check_finite_weights(model, "ok")  # a healthy model passes
    with torch.no_grad():
        model.layers[1].self_attn.o_proj.weight[0, :3] = torch.tensor([float("nan"), float("inf"), 1.0])
    with pytest.raises(
        ValueError, match=r"^ckpt: weight layers\.1\.self_attn\.o_proj\.weight has 2 non-finite"
    ):
        check_finite_weights(model, "ckpt")


def test_load_checked_resolves_the_device_casts_and_refuses_nan_weights(tmp_path, monkeypatch) -> None:
    from mobilellm_r1.model.hf import load_checked

    model = make_model()
    save_pretrained(model, None, tmp_path / "ok")
    loaded, _ = load_checked(tmp_path / "ok", device="cpu", dtype="bfloat16")
    assert_same_weights(model, loaded, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert next(load_checked(tmp_path / "ok")[0].parameters()).device.type == "cpu"  # None: best here
    with pytest.raises(ValueError, match=r"^--device cuda: CUDA is not available"):
        load_checked(tmp_path / "ok", device="cuda")
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    save_pretrained(model, None, tmp_path / "nan")
    with pytest.raises(ValueError, match=r"nan: weight norm\.weight has 1 non-finite value"):
        load_checked(tmp_path / "nan", device="cpu")
