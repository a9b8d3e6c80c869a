"""Hugging Face checkpoint directories <-> our `Transformer`.

A directory holds `config.json` (`Llama4ForCausalLM`, `model_type: llama4_text`),
`model.safetensors` or sharded `model-0000k-of-0000n.safetensors` + `model.safetensors.index.json`,
`generation_config.json`, and the tokenizer files. Weights are read with safetensors only;
pickled `*.bin` checkpoints are refused; a malformed file raises `CheckpointError` naming it.
Directories are written to a temporary sibling and renamed into place, so an interrupted save
never damages an existing checkpoint; the temporaries a killed save left are removed by the
next save to the same directory. `load_checked` is how the commands load a model: on a checked
device, with non-finite weights refused.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..devices import resolve_device
from .config import DTYPE_NAMES, ModelConfig
from .model import Transformer

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

ARCHITECTURE = "Llama4ForCausalLM"
MODEL_TYPE = "llama4_text"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read: the message names the file or key."""


# --------------------------------------------------------------------------- config
def to_hf_config(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """`config.json` content that transformers' `Llama4TextConfig` reads back to the same model."""
    n = cfg.num_hidden_layers
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size_mlp,
        "intermediate_size_mlp": cfg.intermediate_size_mlp,
        "num_hidden_layers": n,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "use_qk_norm": cfg.use_qk_norm,
        "no_rope_layers": list(cfg.no_rope_layers),
        "attn_temperature_tuning": cfg.attn_temperature_tuning,
        "floor_scale": cfg.floor_scale,
        "attn_scale": cfg.attn_scale,
        # Dense model: every layer is full attention over the whole context, no experts.
        "attention_chunk_size": cfg.max_position_embeddings,
        "layer_types": ["full_attention"] * n,
        "moe_layers": [],
        "interleave_moe_layer_step": 0,
        "num_local_experts": 0,
        "num_experts_per_tok": 0,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "initializer_range": cfg.initializer_range,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": list(cfg.eos_token_id),
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }


def _rope_theta(hf: dict[str, Any], source: str) -> float:
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported (only default RoPE)")
    theta = params.get("rope_theta", hf.get("rope_theta"))
    if theta is None:
        raise CheckpointError(f"{source}: missing field 'rope_theta'")
    return float(theta)


def _check_dense(hf: dict[str, Any], source: str) -> None:
    n = int(hf["num_hidden_layers"])
    moe = hf.get("moe_layers")
    if moe is None:  # transformers' default: every `interleave_moe_layer_step`-th layer
        step = int(hf.get("interleave_moe_layer_step", 1) or 0)
        moe = list(range(step - 1, n, step)) if step > 0 else []
    if moe and int(hf.get("num_local_experts", 16) or 0) > 0:
        raise CheckpointError(f"{source}: mixture-of-experts layers {moe} are not supported")
    chunk = hf.get("attention_chunk_size")
    chunked = "chunked_attention" in (hf.get("layer_types") or [])
    if chunked and chunk is not None and int(chunk) < int(hf["max_position_embeddings"]):
        raise CheckpointError(
            f"{source}: chunked attention with attention_chunk_size={chunk} < "
            f"max_position_embeddings={hf['max_position_embeddings']} is not supported"
        )


def from_hf_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Parse a `llama4_text` config dict; unsupported variants and fields of the wrong type
    raise `CheckpointError` naming `source`."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(hf).__name__}")
    try:
        return _parse_hf_config(hf, source)
    except CheckpointError:
        raise
    except KeyError as err:
        raise CheckpointError(f"{source}: missing field {err}") from err
    except (TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: {err}") from err


def _parse_hf_config(hf: dict[str, Any], source: str) -> ModelConfig:
    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r}, expected {MODEL_TYPE!r}")
    archs = hf.get("architectures") or [ARCHITECTURE]
    if ARCHITECTURE not in archs:
        raise CheckpointError(f"{source}: architectures {archs}, expected {ARCHITECTURE!r}")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    for key in required:
        if key not in hf:
            raise CheckpointError(f"{source}: missing field {key!r}")
    _check_dense(hf, source)
    eos = hf.get("eos_token_id")
    n = int(hf["num_hidden_layers"])
    fields: dict[str, Any] = {
        "hidden_size": hf["hidden_size"],
        "intermediate_size_mlp": hf.get("intermediate_size_mlp", hf.get("intermediate_size")),
        "num_hidden_layers": n,
        "num_attention_heads": hf["num_attention_heads"],
        "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "head_dim": hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        "vocab_size": hf["vocab_size"],
        "max_position_embeddings": hf.get("max_position_embeddings", 4096),
        "rope_theta": _rope_theta(hf, source),
        "rms_norm_eps": hf.get("rms_norm_eps", 1e-5),
        "use_qk_norm": hf.get("use_qk_norm", True),
        # Missing keys take transformers' Llama4TextConfig defaults (NoPE every 4th layer,
        # temperature tuning on, untied head), so both libraries build the same model.
        # Released configs may list more no_rope_layers than layers; the first n are used.
        "no_rope_layers": list(hf.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(n)])[:n],
        "attn_temperature_tuning": hf.get("attn_temperature_tuning", True),
        "floor_scale": hf.get("floor_scale", 8192),
        "attn_scale": hf.get("attn_scale", 0.1),
        "tie_word_embeddings": hf.get("tie_word_embeddings", False),
        "initializer_range": hf.get("initializer_range", 0.02),
        "bos_token_id": hf.get("bos_token_id", 128000),
        "eos_token_id": list(eos) if isinstance(eos, list) else [eos] if eos is not None else [],
        "pad_token_id": hf.get("pad_token_id"),
    }
    return ModelConfig(**fields)


# --------------------------------------------------------------------------- weights
# Our stacked matrices and the HF matrices they hold, in row order.
_STACKED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "feed_forward.gate_up_proj": ("feed_forward.gate_proj", "feed_forward.up_proj"),
}


def _stack_sizes(cfg: ModelConfig, stacked: str) -> list[int]:
    if stacked == "self_attn.qkv_proj":
        kv = cfg.num_key_value_heads * cfg.head_dim
        return [cfg.num_attention_heads * cfg.head_dim, kv, kv]
    return [cfg.intermediate_size_mlp] * 2


def _unstack(name: str) -> tuple[str, str] | None:
    """'layers.3.self_attn.qkv_proj.weight' -> ('layers.3.', 'self_attn.qkv_proj')."""
    for stacked in _STACKED:
        suffix = f"{stacked}.weight"
        if name.endswith(suffix):
            return name[: -len(suffix)], stacked
    return None


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameters under HF names: `model.` prefix, stacked matrices split, tied LM head
    omitted (as transformers writes it)."""
    cfg, out = model.config, {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                out[name] = tensor
            continue
        stacked = _unstack(name)
        if stacked is None:
            out[f"model.{name}"] = tensor
            continue
        prefix, key = stacked
        for part, chunk in zip(_STACKED[key], tensor.split(_stack_sizes(cfg, key)), strict=True):
            out[f"model.{prefix}{part}.weight"] = chunk
    return out


def from_hf_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of `hf_state_dict`: stack q/k/v and gate/up, strip the `model.` prefix."""
    out = {}
    for name, tensor in hf.items():
        if name != "lm_head.weight":
            out[name.removeprefix("model.")] = tensor
    for i in range(cfg.num_hidden_layers):
        for stacked, parts in _STACKED.items():
            pieces = [out.pop(f"layers.{i}.{part}.weight") for part in parts]
            out[f"layers.{i}.{stacked}.weight"] = torch.cat(pieces, dim=0)
    if cfg.tie_word_embeddings:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    else:
        out["lm_head.weight"] = hf["lm_head.weight"]
    return out


def _shards(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.detach().contiguous().cpu()
        size += nbytes
    return shards


def _write_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int) -> None:
    shards = _shards(state, max_shard_bytes)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], directory / SINGLE_FILE, metadata=meta)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, directory / fname, metadata=meta)
        for name, tensor in shard.items():
            weight_map[name] = fname
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))


def _weight_files(directory: Path) -> list[Path]:
    if (directory / SINGLE_FILE).exists():
        return [directory / SINGLE_FILE]
    index = directory / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_bytes())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index}: unreadable index ({err!r})") from err
        if not all(isinstance(n, str) and Path(n).name == n for n in names):
            raise CheckpointError(f"{index}: weight_map names a file outside {directory}")
        files = [directory / f for f in names]
        for f in files:
            if not f.exists():
                raise CheckpointError(f"{index}: lists {f.name}, which is missing")
        return files
    pickled = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
    if pickled:
        raise CheckpointError(
            f"{directory}: only pickled weights ({', '.join(pickled)}); convert to safetensors, "
            "pickles are never loaded"
        )
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}")


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor, Path]]:
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = [(key, f.get_tensor(key)) for key in f.keys()]  # noqa: SIM118
        except (SafetensorError, OSError, ValueError, TypeError) as err:  # truncated, garbage, ...
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
        for key, tensor in tensors:
            yield key, tensor, path


def _read_checked(model: Transformer, files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, each checked against the HF names/shapes we expect."""
    expected = {k: tuple(v.shape) for k, v in hf_state_dict(model).items()}
    tied = model.config.tie_word_embeddings
    loaded: dict[str, torch.Tensor] = {}
    for name, tensor, path in _iter_tensors(files):
        if name == "lm_head.weight" and tied:
            continue  # some writers store the tied head; the embedding is authoritative
        if name not in expected:
            raise CheckpointError(f"{path.name}: unexpected key {name!r}")
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(
                f"{path.name}: key {name!r} has shape {tuple(tensor.shape)}, expected {expected[name]}"
            )
        loaded[name] = tensor
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise CheckpointError(f"{files[0].parent}: missing key(s) {', '.join(missing)}")
    return loaded


def _load_weights(model: Transformer, files: list[Path], dtype: torch.dtype | None) -> torch.dtype:
    loaded = _read_checked(model, files)
    dtype = dtype or loaded["model.embed_tokens.weight"].dtype
    state = from_hf_state_dict(loaded, model.config)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return dtype


# --------------------------------------------------------------------------- public API
def _resolve(path: str | os.PathLike) -> Path:
    """A local directory, or a hub repo id fetched with huggingface_hub (safetensors + json only)."""
    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{local}: not a directory")
        return local
    text = str(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model"]
        try:
            return Path(snapshot_download(repo_id=text, allow_patterns=patterns))
        except Exception as err:  # offline, unknown repo, ...: report both readings of the path
            raise FileNotFoundError(
                f"{text}: no such local directory, and fetching it as a hub repo failed ({err})"
            ) from err
    raise FileNotFoundError(f"checkpoint directory not found: {local}")


def read_config(directory: str | os.PathLike) -> ModelConfig:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: missing config.json")
    try:
        return from_hf_config(json.loads(path.read_bytes()), source=str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: invalid JSON ({err})") from err


def load_pretrained(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[Transformer, Tokenizer]:
    """Load an HF-format directory (or hub id) -> (model in eval mode, tokenizer).

    `dtype` defaults to the checkpoint's. Without tokenizer files the default Llama-3
    tokenizer is used.
    """
    from ..tokenizer import load_tokenizer

    directory = _resolve(path)
    cfg = read_config(directory)
    with torch.device("meta"):
        model = Transformer(cfg)
    _load_weights(model, _weight_files(directory), dtype)
    model = model.to(device)
    model.eval()
    return model, load_tokenizer(directory)


def check_finite_weights(model: nn.Module, source: object = "model") -> None:
    """Raise ValueError naming the first parameter or buffer that holds NaN or infinite values
    (such a model decodes garbage, e.g. one token repeated, with no other sign)."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                raise ValueError(
                    f"{source}: weight {name} has {bad:,} non-finite value(s) (NaN/inf) of "
                    f"{tensor.numel():,}; refusing to use this checkpoint"
                )


def load_checked(
    path: str | os.PathLike, *, device: str | None = None, dtype: str | None = None
) -> tuple[Transformer, Tokenizer]:
    """What every command that runs a model loads it with: `load_pretrained` on the checked
    `device` (`resolve_device`: None is cuda when available; an unusable one is a ValueError naming
    --device), `dtype` by name (None: the checkpoint's), and non-finite weights refused."""
    model, tokenizer = load_pretrained(
        path, device=resolve_device(device), dtype=dtype_from_name(dtype) if dtype else None
    )
    check_finite_weights(model, path)
    return model, tokenizer


def _atomic_dir(directory: Path) -> tuple[Path, Path]:
    """A fresh temporary sibling of `directory`, after removing those a killed save left."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):
        for stale in directory.parent.glob(f".{glob.escape(directory.name)}.{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    return tmp, directory


def _swap_in(tmp: Path, directory: Path) -> None:
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_pretrained(
    model: Transformer,
    tokenizer: Tokenizer | None,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int = 5 * 1024**3,
) -> Path:
    """Write an HF directory that `transformers.AutoModelForCausalLM` loads unchanged.

    Weights are stored in `dtype` (default: the model's), sharded above `max_shard_size` bytes.
    The directory appears only once complete (temp dir + rename).
    """
    target = Path(directory)
    state = hf_state_dict(model)
    dtype = dtype or next(iter(state.values())).dtype
    state = {k: v.to(dtype) for k, v in state.items()}
    tmp, target = _atomic_dir(target)
    try:
        cfg = model.config
        (tmp / "config.json").write_text(json.dumps(to_hf_config(cfg, dtype), indent=2))
        generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": list(cfg.eos_token_id)}
        if cfg.pad_token_id is not None:
            generation["pad_token_id"] = cfg.pad_token_id
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        _write_weights(state, tmp, max_shard_size)
        if tokenizer is not None:
            tokenizer.save(tmp, model_max_length=cfg.max_position_embeddings)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def dtype_from_name(name: str) -> torch.dtype:
    """`bfloat16` / `float32` / `float16` -> torch dtype, with a clear error otherwise."""
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(_DTYPES)}")
    return _DTYPES[name]
