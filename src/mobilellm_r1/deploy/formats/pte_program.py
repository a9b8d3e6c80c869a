"""The module that `pte.write` exports: our `Transformer`'s own layers (quantized or not, as
`pte.prepared_model` left them) around ExecuTorch's KV-cache ops.

`PteProgram.forward(tokens [1, T], input_pos [1]) -> logits [1, vocab]` runs T tokens from
position `input_pos[0]`: it writes their keys and values into per-layer caches held as mutable
buffers (`llama::update_cache`, layout [1, max_context, kv_heads, head_dim]) and attends with
`llama::custom_sdpa` (causal from `start_pos`, GQA without repeating the kv heads). The math is
`model.Transformer`'s: the same embedding, norms, MLPs and projections (the modules themselves),
RoPE in the consecutive-pair convention in float32 (`rope_cos_sin`, `apply_rope`), the L2
QK-norm after RoPE on RoPE layers, and on NoPE layers no rotation and, with
`attn_temperature_tuning`, Llama-4's query scaling by position.

`kv_cache="int8"` stores keys and values as int8 with a float32 scale and an int8 zero point per
(position, kv head) row of head_dim values (`quantized_decomposed.quantize_per_token`, asymmetric,
as ExecuTorch's `QuantizedKVCache`), and attends with `llama::custom_quantized_sdpa`, which also
takes the query quantized per (token, head) row: a quarter of the cache bytes, at the price of
int8 rounding of q, k and v.
"""

from __future__ import annotations

import torch
from torch import nn

from ...model.model import (
    Attention,
    DecoderLayer,
    Transformer,
    apply_rope,
    l2_qk_norm,
    rope_cos_sin,
    temperature_scale,
)

KV_CACHES = ("fp32", "int8")  # the KV cache kinds a program can hold


def load_custom_ops() -> None:
    """Register ExecuTorch's `llama::` ops (update_cache, custom_sdpa) with PyTorch and their
    kernels with ExecuTorch's runtime, and the `quantized_decomposed::` embedding kernels."""
    import executorch.kernels.quantized  # noqa: F401
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [..., n] float -> (int8 values [..., n], float32 scales [..., 1], int8 zero points
    [..., 1]): asymmetric int8 per row of the last dimension (XNNPACK's parameter choice)."""
    scales, zeros = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric(x, torch.int8)
    values = torch.ops.quantized_decomposed.quantize_per_token(x, scales, zeros, -128, 127, torch.int8)
    return values, scales.to(torch.float32), zeros.to(torch.int8)


class CachedAttention(nn.Module):
    """`model.Attention` (its projections) over a KV cache updated by ExecuTorch's ops, in
    float32 (`custom_sdpa`) or int8 (`custom_quantized_sdpa`); see the module docstring."""

    def __init__(self, attn: Attention, max_context: int, kv_cache: str = "fp32") -> None:
        super().__init__()
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
        self.qkv_proj, self.o_proj = attn.qkv_proj, attn.o_proj
        self.n_heads, self.n_kv, self.head_dim = attn.n_heads, attn.n_kv, attn.head_dim
        self.use_rope, self.use_qk_norm = attn.use_rope, attn.use_qk_norm
        self.temperature_tuning, self.eps = attn.temperature_tuning, attn.eps
        self.floor_scale, self.attn_scale = attn.floor_scale, attn.attn_scale
        self.quantized = kv_cache == "int8"
        shape = (1, max_context, self.n_kv, self.head_dim)
        dtype = torch.int8 if self.quantized else torch.float32
        for name in ("k", "v"):
            self.register_buffer(f"{name}_cache", torch.zeros(shape, dtype=dtype), persistent=False)
            if self.quantized:  # per (position, kv head) row: [1, max_context, kv_heads, 1]
                row = (*shape[:3], 1)
                self.register_buffer(f"{name}_scales", torch.ones(row), persistent=False)
                self.register_buffer(f"{name}_zeros", torch.zeros(row, dtype=torch.int8), persistent=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, start: int
    ) -> torch.Tensor:
        """x [1, T, d] at positions [1, T] = start .. start+T-1 -> attention output [1, T, d]."""
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, self.n_heads + 2 * self.n_kv, self.head_dim)
        q, k, v = qkv.split([self.n_heads, self.n_kv, self.n_kv], dim=2)  # [1, T, heads, hd]
        if self.use_rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.use_qk_norm:
            q, k = l2_qk_norm(q, self.eps), l2_qk_norm(k, self.eps)
        if self.temperature_tuning:
            q = q * temperature_scale(positions, self.floor_scale, self.attn_scale)[:, :, None, None]
        out = self.attend_int8(q, k, v, start) if self.quantized else self.attend_fp32(q, k, v, start)
        return self.o_proj(out.reshape(b, t, -1))

    def attend_fp32(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
        """Write k, v [1, T, kv_heads, hd] at `start`, attend q [1, T, heads, hd] -> [1, T, heads, hd]."""
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        return torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True)

    def attend_int8(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
        """`attend_fp32` over the int8 cache: k and v quantized per row into it, q per row too."""
        for name, x in (("k", k), ("v", v)):
            values, scales, zeros = quantize_rows(x)
            torch.ops.llama.update_cache(values, getattr(self, f"{name}_cache"), start)
            torch.ops.llama.update_cache(scales, getattr(self, f"{name}_scales"), start)
            torch.ops.llama.update_cache(zeros, getattr(self, f"{name}_zeros"), start)
        q8, q_scales, q_zeros = quantize_rows(q)
        return torch.ops.llama.custom_quantized_sdpa(
            q8,
            self.k_cache,
            self.v_cache,
            start,
            None,
            0.0,
            True,
            None,
            q_zeros,
            q_scales,
            self.k_zeros,
            self.k_scales,
            self.v_zeros,
            self.v_scales,
            False,
        )


class CachedLayer(nn.Module):
    """A `model.DecoderLayer` (its norms and MLP) with `CachedAttention`."""

    def __init__(self, layer: DecoderLayer, max_context: int, kv_cache: str = "fp32") -> None:
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = (
            layer.input_layernorm,
            layer.post_attention_layernorm,
        )
        self.self_attn = CachedAttention(layer.self_attn, max_context, kv_cache)
        self.feed_forward = layer.feed_forward

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, start: int
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, positions, start)
        return x + self.feed_forward(self.post_attention_layernorm(x))


class PteProgram(nn.Module):
    """The exported network: next-token logits after `tokens`, KV caches inside (batch 1)."""

    def __init__(self, model: Transformer, max_context: int, kv_cache: str = "fp32") -> None:
        super().__init__()
        self.max_context, self.kv_cache = max_context, kv_cache
        self.embed_tokens, self.norm, self.lm_head = model.embed_tokens, model.norm, model.lm_head
        self.layers = nn.ModuleList(CachedLayer(layer, max_context, kv_cache) for layer in model.layers)
        self.register_buffer("inv_freq", model.inv_freq(torch.device("cpu")), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """tokens [1, T] int64 written from position input_pos [1] int64 -> logits [1, vocab]."""
        t = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + t <= self.max_context)
        positions = (input_pos + torch.arange(t, device=tokens.device))[None]  # [1, T]
        cos, sin = rope_cos_sin(positions, self.inv_freq)
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, positions, start)
        return self.lm_head(self.norm(h[:, -1]))
