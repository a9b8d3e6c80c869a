"""GGUF for stock llama.cpp: our dense Llama-4-text decoder written as llama.cpp's `maincoder`.

Why `maincoder` and not `llama4`: llama.cpp's `llama4` requires experts on every layer ("cannot
have zero experts"). `maincoder` (src/models/maincoder.cpp) computes exactly our network:
  * RoPE of type NORM (llama-model.cpp `llama_model_rope_type`): consecutive pairs
    (x[2i], x[2i+1]) rotate together, our (Llama-4) convention, so q/k rows are written as they are;
  * RMS q/k norm with a weight after RoPE, with the file's `rms_norm_eps`: weights of ones make it
    our parameter-free L2 QK-norm x * rsqrt(mean(x^2) + eps);
  * attention scale 1/sqrt(head_dim), pre-norm residual blocks, SwiGLU FFN (silu(gate) * up);
  * `output.weight` optional, falling back to `token_embd.weight`: tied embeddings.
What it cannot compute (NoPE layers) is refused by `check` before anything is written.

The tokenizer is stored the way llama.cpp's converter stores Llama 3 (`gpt2` BPE with the
`llama-bpe` pre-tokenizer, which hard-codes the Llama-3 split regex; a tokenizer trained with
single digits gets `qwen2`, the same regex with one digit per piece): byte-level token strings,
merges, token types (control for the special tokens, unused for padding rows) and the chat
template, so stock llama.cpp tokenizes and templates prompts itself. The export metadata rides
along as string KVs (`mobilellm_r1.*`).

Quantizations: f32 and f16 are written directly (norms stay f32, as llama.cpp expects);
q8_0, q4_0 and q4_k_m are made by llama.cpp's own quantizer from an f32 file written next to the
output and always removed. llama.cpp picks per-tensor types itself: the tied embedding (also the
LM head) becomes q6_K, or q8_0 where a row is not a multiple of 256, and q4_K tensors whose rows
are not a multiple of 256 fall back to q5_0 (`llama-quant.cpp`).
"""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import llama_cpp
import numpy as np
import torch

from .contract import ExportError
from .gguf_runtime import PRE_TOKENIZERS, GGUFRuntime, llama_cpp_log, log_errors

if TYPE_CHECKING:
    from ...model.config import ModelConfig
    from ...model.model import Transformer
    from ...tokenizer import Tokenizer
    from .contract import ExportOptions

ARCHITECTURE = "maincoder"
TOKENIZER_MODEL = "gpt2"
# --quant -> llama.cpp file type (gguf's LlamaFileType mirrors llama.h's llama_ftype)
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M,
}
DIRECT_DTYPES = {"f32": np.float32, "f16": np.float16}  # written by us; the rest by llama.cpp


def check(cfg: ModelConfig, options: ExportOptions) -> None:
    """ExportError, naming the field, for what llama.cpp's `maincoder` cannot compute exactly."""
    nope = [i for i, use_rope in enumerate(cfg.no_rope_layers) if not use_rope]
    if nope:
        also = " (attn_temperature_tuning acts only on those layers)" if cfg.attn_temperature_tuning else ""
        raise ExportError(
            f"no_rope_layers: layers {nope} are NoPE layers{also}; llama.cpp's maincoder applies RoPE "
            "and QK-norm on every layer, so this model cannot be written as GGUF"
        )
    if not cfg.use_qk_norm:
        raise ExportError(
            "use_qk_norm is False; llama.cpp's maincoder always applies the q/k RMS norm, "
            "so this model cannot be written as GGUF"
        )


def write(
    model: Transformer, tokenizer: Tokenizer, path: Path, options: ExportOptions, metadata: dict[str, str]
) -> None:
    """Write `model` as a GGUF file at `path` (directly for f32/f16, else through llama.cpp's
    quantizer from an f32 intermediate beside `path` that is removed whatever happens)."""
    path = Path(path)
    token_table = vocabulary(tokenizer, model.config.vocab_size)
    if options.quant in DIRECT_DTYPES:
        _write_file(model, token_table, tokenizer, path, options, metadata, options.quant)
        return
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".f32.tmp")
    os.close(fd)
    intermediate = Path(name)
    try:
        _write_file(model, token_table, tokenizer, intermediate, options, metadata, "f32")
        quantize(intermediate, path, options.quant)
    finally:
        intermediate.unlink(missing_ok=True)


def open_runtime(path: str | Path, threads: int | None = None, kv_cache: str = "f16") -> GGUFRuntime:
    """The file loaded in llama.cpp (CPU). `kv_cache` is the KV cache's element type: "f16"
    (llama.cpp's default) or "f32" (keys and values stored exactly)."""
    return GGUFRuntime(path, threads=threads, kv_cache=kv_cache)


# ---------------------------------------------------------------------- tokenizer
def vocabulary(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(token strings, token types, merges) for `vocab_size` ids, as llama.cpp's converter
    writes a Llama-3 tokenizer: byte-level strings of the ranks (normal), the special tokens
    (control), `[PAD<id>]` (unused) for embedding rows past the tokenizer."""
    pre_tokenizer(tokenizer)
    if vocab_size < tokenizer.vocab_size:
        raise ExportError(
            f"vocab_size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} ids; "
            "llama.cpp needs one embedding row per token"
        )
    model = json.loads(tokenizer.to_hf_json())["model"]
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    entries = [(text, i, gguf.TokenType.NORMAL) for text, i in model["vocab"].items()]
    entries += [(text, i, gguf.TokenType.CONTROL) for text, i in tokenizer.special_tokens.items()]
    for text, i, kind in entries:
        tokens[i], types[i] = text, int(kind)
    if len({i for _, i, _ in entries}) != tokenizer.vocab_size:
        raise ExportError(f"tokenizer {tokenizer.name_or_path}: ids are not contiguous from 0")
    # byte-level strings never hold a space (it is "Ġ"), so "a b" is unambiguous
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if not merges:
        raise ExportError(f"tokenizer {tokenizer.name_or_path}: no BPE merges; llama.cpp needs at least one")
    return tokens, types, merges


def pre_tokenizer(tokenizer: Tokenizer) -> str:
    """The name of llama.cpp's pre-tokenizer that splits text as `tokenizer` does; ExportError
    for a split regex llama.cpp has none for (its ids would differ)."""
    for name, pat_str in PRE_TOKENIZERS.items():
        if tokenizer.pat_str == pat_str:
            return name
    raise ExportError(
        f"tokenizer {tokenizer.name_or_path}: its split regex is neither Llama 3's nor Qwen2's "
        f"single-digit one; llama.cpp's pre-tokenizers ({', '.join(PRE_TOKENIZERS)}) hard-code "
        "theirs, so its ids would differ"
    )


def _add_tokenizer(
    writer: gguf.GGUFWriter, table: tuple[list[str], list[int], list[str]], tokenizer: Tokenizer
) -> None:
    tokens, types, merges = table
    writer.add_tokenizer_model(TOKENIZER_MODEL)
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_eot_token_id(tokenizer.eot_id)
    writer.add_eom_token_id(tokenizer.eom_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(tokenizer.chat_template)


# ---------------------------------------------------------------------- weights
def _add_hparams(writer: gguf.GGUFWriter, cfg: ModelConfig, options: ExportOptions, quant: str) -> None:
    writer.add_context_length(options.context(cfg))
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size_mlp)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def tensors(model: Transformer) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, float tensor) for every tensor of the file: q/k/v and gate/up unstacked,
    q/k norm weights of ones (our QK-norm has none), `output.weight` only when untied."""
    cfg = model.config
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    ones = torch.ones(cfg.head_dim)
    yield "token_embd.weight", model.embed_tokens.weight
    for i, layer in enumerate(model.layers):
        attn, ffn = layer.self_attn, layer.feed_forward
        wq, wk, wv = attn.qkv_proj.weight.split([q, kv, kv])  # rows: H*hd q, kvh*hd k, kvh*hd v
        gate, up = ffn.gate_up_proj.weight.chunk(2)  # rows: gate, then up
        named = {
            "attn_norm": layer.input_layernorm.weight,
            "attn_q": wq,
            "attn_k": wk,
            "attn_v": wv,
            "attn_q_norm": ones,
            "attn_k_norm": ones,
            "attn_output": attn.o_proj.weight,
            "ffn_norm": layer.post_attention_layernorm.weight,
            "ffn_gate": gate,
            "ffn_up": up,
            "ffn_down": ffn.down_proj.weight,
        }
        yield from ((f"blk.{i}.{name}.weight", t) for name, t in named.items())
    yield "output_norm.weight", model.norm.weight
    if not cfg.tie_word_embeddings:
        yield "output.weight", model.lm_head.weight


def as_numpy(name: str, tensor: torch.Tensor, dtype: type[np.floating]) -> np.ndarray:
    """`tensor` as a numpy array of `dtype` (a view when already float32); ExportError naming
    the tensor if its values do not fit in float16."""
    values = tensor.detach().float().cpu()
    if dtype is np.float16:
        largest = values.abs().max().item()
        if largest > torch.finfo(torch.float16).max:
            raise ExportError(f"{name}: values up to {largest:.4g} overflow float16; use --quant f32")
    return values.numpy().astype(dtype, copy=False)


def _write_file(
    model: Transformer,
    token_table: tuple[list[str], list[int], list[str]],
    tokenizer: Tokenizer,
    path: Path,
    options: ExportOptions,
    metadata: dict[str, str],
    quant: str,
) -> None:
    """One unquantized GGUF file, its matrices in `quant` (f32 or f16); 1-D tensors (norms)
    stay f32."""
    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    try:
        _add_hparams(writer, model.config, options, quant)
        _add_tokenizer(writer, token_table, tokenizer)
        for key, value in metadata.items():
            writer.add_string(key, value)
        with torch.no_grad():
            for name, tensor in tensors(model):
                dtype = DIRECT_DTYPES[quant] if tensor.dim() > 1 else np.float32
                writer.add_tensor(name, as_numpy(name, tensor, dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def quantize(src: Path, dst: Path, quant: str) -> None:
    """llama.cpp's quantizer (`llama_model_quantize`, default parameters): `src` -> `dst`."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPES[quant])
    with llama_cpp_log() as log:
        llama_cpp.llama_backend_init()
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise ExportError(f"llama.cpp could not quantize {src} to {quant}: {log_errors(log)}")


# ---------------------------------------------------------------------- reading back
def read_weights(path: str | Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A GGUF file's tensors dequantized to float32 as our `Transformer` state dict (q/k/v and
    gate/up stacked again): the very weights llama.cpp runs, for running them eagerly."""
    reader = gguf.GGUFReader(path)
    found = {
        t.name: torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        for t in reader.tensors
    }
    for name, weight in found.items():
        if name.endswith(("attn_q_norm.weight", "attn_k_norm.weight")) and not bool((weight == 1).all()):
            raise ValueError(f"{path}: {name} is not all ones, which our parameter-free QK-norm needs")
    state = {"embed_tokens.weight": found["token_embd.weight"], "norm.weight": found["output_norm.weight"]}
    state["lm_head.weight"] = found.get("output.weight", state["embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        blk, ours = f"blk.{i}.", f"layers.{i}."
        state[ours + "input_layernorm.weight"] = found[blk + "attn_norm.weight"]
        state[ours + "post_attention_layernorm.weight"] = found[blk + "ffn_norm.weight"]
        qkv = [found[f"{blk}attn_{x}.weight"] for x in "qkv"]
        state[ours + "self_attn.qkv_proj.weight"] = torch.cat(qkv)
        state[ours + "self_attn.o_proj.weight"] = found[blk + "attn_output.weight"]
        gate_up = [found[f"{blk}ffn_{x}.weight"] for x in ("gate", "up")]
        state[ours + "feed_forward.gate_up_proj.weight"] = torch.cat(gate_up)
        state[ours + "feed_forward.down_proj.weight"] = found[blk + "ffn_down.weight"]
    return state
