"""The MobileLLM-R1 decoder: a dense Llama-4-text transformer as a plain `nn.Module`.

Pieces, in the order a token meets them:
  embed_tokens -> L x [RMSNorm -> GQA attention (RoPE, L2 QK-norm) -> residual,
                       RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> tied LM head.

It computes the same function as transformers' `Llama4ForCausalLM` for `llama4_text`
configs without MoE:
  * RoPE in Llama-4's convention: consecutive pairs (x[2i], x[2i+1]) of each head are
    rotated as one complex number, computed in float32;
  * the parameter-free L2 QK-norm (x * rsqrt(mean(x^2) + eps)) is applied *after* RoPE
    on RoPE layers when `use_qk_norm`;
  * NoPE layers (`no_rope_layers[i] == 0`) skip RoPE and QK-norm and may scale queries
    (`attn_temperature_tuning`).

The elementwise pieces (`rms_norm`, `apply_rope`, `swiglu`) are module-level functions that
torch-function modes can override (`torch.overrides`, as `torch.nn.functional` does): influence
scoring gives them fused forward-mode rules that way (`curation/jvp_rules.py`).

Parameter names mirror HF's, except that q/k/v and gate/up are stored stacked
(`qkv_proj`, `gate_up_proj`: fewer, larger GEMMs); `hf.py` splits and stacks them.
Parallelism, compilation and HF I/O live in sibling modules, never here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_variadic

from .config import ModelConfig

DECODE_MATMUL_MIN_SLOTS = 1024  # cache length from which decoding attention uses plain matmuls
DECODE_MATMUL_DEVICES = ("cuda",)  # where that helps (CPU's fused SDPA is faster throughout)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision to float32 (float32 and float64 stay): the dtype norms and RoPE compute in."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) over the last dim, computed in float32 (`upcast`), cast back to
    x's dtype, then times ``weight`` when given (HF's order). Overridable (module docstring)."""
    if has_torch_function_variadic(x, weight):
        return handle_torch_function(rms_norm, (x, weight), x, weight, eps)
    out = F.rms_norm(upcast(x), (x.shape[-1],), eps=eps).type_as(x)
    return out if weight is None else out * weight


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale; normalises in float32 like the reference."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def l2_qk_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Parameter-free L2 QK-norm of Llama-4: x * rsqrt(mean(x^2) + eps) over head_dim."""
    return rms_norm(x, None, eps)


def temperature_scale(position_ids: torch.Tensor, floor_scale: int, attn_scale: float) -> torch.Tensor:
    """Llama-4's NoPE query factor 1 + log1p(floor((pos + 1) / floor_scale)) * attn_scale, [B, T]."""
    return torch.log1p(torch.floor((position_ids.float() + 1.0) / floor_scale)) * attn_scale + 1.0


def rope_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the rotation angles, float32. position_ids [B, T] -> [B, T, head_dim/2] each."""
    angles = position_ids[..., None].float() * inv_freq.float()
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [..., T, H, hd] by angles [..., T, hd/2] (Llama-4 convention),
    in float32 (`upcast`). Overridable (module docstring)."""
    if has_torch_function_variadic(x, cos, sin):
        return handle_torch_function(apply_rope, (x, cos, sin), x, cos, sin)
    xf = upcast(x).unflatten(-1, (-1, 2))  # [..., T, H, hd/2, 2]
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)  # [..., T, 1, hd/2]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2).type_as(x)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's gating, silu(gate) * up. Overridable (module docstring)."""
    if has_torch_function_variadic(gate, up):
        return handle_torch_function(swiglu, (gate, up), gate, up)
    return F.silu(gate) * up


class KVCache(nn.Module):
    """Preallocated keys/values for every layer: buffers k{l}, v{l} of [B, kv_heads, max_len, head_dim].

    Slots are written in place at `cache_pos`. Keeping them as module buffers lets
    `torch.compile` treat them as static state (mutated in place, fixed addresses), so a
    decode step can be captured in a CUDA graph without copying the cache.

    The protocol `Attention` uses: `update(layer, cache_pos, k, v) -> (k_all, v_all)`, over
    which it attends with the forward's mask. A cache object (such as the engine's paged
    cache) may also define `attend(layer, q, k, v) -> Tensor | None`, q [B, H, T, hd] and
    k, v [B, kvh, T, hd]: it then stores k, v and does the attention itself, returning
    [B, H, T, hd], or returns None to leave this forward to `update` and the mask.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        for i in range(cfg.num_hidden_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.batch_size, self.max_len = batch_size, max_len

    def update(
        self, layer: int, cache_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, kvh, T, hd] at slots cache_pos [T]; return the layer's full cache."""
        k_all, v_all = getattr(self, f"k{layer}"), getattr(self, f"v{layer}")
        k_all.index_copy_(2, cache_pos, k)
        v_all.index_copy_(2, cache_pos, v)
        return k_all, v_all


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Bool mask [B, 1, T, T]: query t sees key s iff s <= t and both lie in the same document."""
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (causal & same_doc)[:, None]


def doc_ids_from_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Packed rows restart positions at 0 for each document: doc id = running count of zeros."""
    return (position_ids == 0).long().cumsum(dim=1)


class Attention(nn.Module):
    """Grouped-query self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.use_rope = bool(cfg.no_rope_layers[layer_idx])
        self.use_qk_norm = cfg.use_qk_norm and self.use_rope
        self.temperature_tuning = cfg.attn_temperature_tuning and not self.use_rope
        self.eps, self.floor_scale, self.attn_scale = cfg.rms_norm_eps, cfg.floor_scale, cfg.attn_scale
        d, hd = cfg.hidden_size, cfg.head_dim
        # q, k and v projections as one matrix (rows: H*hd query, then kvh*hd key, kvh*hd value):
        # one GEMM instead of three. hf.py splits it into HF's q_proj / k_proj / v_proj.
        self.qkv_proj = nn.Linear(d, (self.n_heads + 2 * self.n_kv) * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        position_ids: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        cache_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, self.n_heads + 2 * self.n_kv, self.head_dim)
        q, k, v = qkv.split([self.n_heads, self.n_kv, self.n_kv], dim=2)
        if self.use_rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.use_qk_norm:
            q, k = l2_qk_norm(q, self.eps), l2_qk_norm(k, self.eps)
        if self.temperature_tuning:
            scale = temperature_scale(position_ids, self.floor_scale, self.attn_scale)
            q = (q * scale[:, :, None, None]).to(q.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, hd]
        if cache is None:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True
            )
        else:
            out = self._cached(q, k, v, mask, cache, cache_pos)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))

    def _cached(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache,
        cache_pos: torch.Tensor,
    ) -> torch.Tensor:
        """Write k, v into the cache, then attend over its first S = mask.shape[-1] slots.

        One query per row (decoding): query groups are folded into rows so each kv head is
        read once, q [B, H, 1, hd] -> [B, kvh, rep, hd] against k, v [B, kvh, S, hd]. Fused
        SDPA kernels parallelise over queries, not keys, so a single query over a long cache
        runs on few thread blocks; on CUDA, past `DECODE_MATMUL_MIN_SLOTS` slots, the two
        attention matmuls are written out instead (softmax in float32).

        mask None: a causal prefill into an empty cache (slots 0..T-1), which attends to the
        chunk itself with the fused causal kernel.

        A cache with an `attend` method may take over (see `KVCache`): its non-None result is
        the output."""
        if hasattr(cache, "attend") and (out := cache.attend(self.layer_idx, q, k, v)) is not None:
            return out
        k_all, v_all = cache.update(self.layer_idx, cache_pos, k, v)
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        s = mask.shape[-1]
        k_all, v_all = k_all[:, :, :s], v_all[:, :, :s]
        b, _, t, hd = q.shape
        if t > 1:
            return F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, enable_gqa=True)
        qg = q.reshape(b, self.n_kv, self.n_heads // self.n_kv, hd)
        if s < DECODE_MATMUL_MIN_SLOTS or q.device.type not in DECODE_MATMUL_DEVICES:
            out = F.scaled_dot_product_attention(qg, k_all, v_all, attn_mask=mask)
        else:
            scores = torch.matmul(qg * hd**-0.5, k_all.transpose(-1, -2)).float()  # [B, kvh, rep, S]
            probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            out = torch.matmul(probs.to(v_all.dtype), v_all)
        return out.reshape(b, self.n_heads, 1, hd)  # CUDA SDPA may return [B, kvh, rep, hd] strided


class FeedForward(nn.Module):
    """SwiGLU MLP: down(silu(gate(x)) * up(x)), gate and up stacked in one matrix
    (rows: hidden gate, then hidden up)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(dim, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(swiglu(gate, up))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.feed_forward = FeedForward(cfg.hidden_size, cfg.intermediate_size_mlp)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        position_ids: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        cache_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, position_ids, mask, cache, cache_pos)
        return x + self.feed_forward(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Decoder-only LM. `forward(input_ids [B, T]) -> logits [B, T, vocab]`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """RoPE inverse frequencies [head_dim/2], float32 (recomputed, so a dtype cast of the
        module can never round them)."""
        hd = self.config.head_dim
        exponent = torch.arange(0, hd, 2, dtype=torch.float, device=device) / hd
        return 1.0 / (self.config.rope_theta**exponent)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, initializer_range) for every matrix, ones for norms (works after `to_empty()`)."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                if module is self.lm_head and self.config.tie_word_embeddings:
                    continue
                module.weight.normal_(0.0, std, generator=generator)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        *,
        doc_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cache_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        return_hidden: bool = False,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits [B, T, vocab] (or final hidden states [B, T, d] with `return_hidden`).

        position_ids [B, T]: RoPE positions (default 0..T-1, or `cache_pos` when decoding).
        doc_ids [B, T]: packed sequences; attention is restricted to the same document
            (use `doc_ids_from_position_ids` when positions restart per document).
        cache / cache_pos [T]: decode with a `KVCache`, writing this chunk at slots cache_pos;
            attn_mask [B, 1, T, S] (bool) says which of the first S cache slots each query
            sees (default: slots <= its own; a chunk written from slot 0 attends causally
            to itself through the fused kernel).
        last_only: compute logits for the last position only -> [B, 1, vocab].
        """
        b, t = input_ids.shape
        if position_ids is None:
            base = cache_pos if cache is not None else torch.arange(t, device=input_ids.device)
            position_ids = base[None, :].expand(b, t)
        mask = attn_mask
        if cache is not None and mask is None and (t == 1 or int(cache_pos[0]) != 0):
            slots = torch.arange(cache.max_len, device=input_ids.device)
            mask = (slots[None, :] <= cache_pos[:, None])[None, None]
        elif cache is None and doc_ids is not None:
            mask = document_causal_mask(doc_ids)
        rope = rope_cos_sin(position_ids, self.inv_freq(input_ids.device))
        h = self.embed_tokens(input_ids)
        for layer in self.layers:
            h = layer(h, rope, position_ids, mask, cache, cache_pos)
        if last_only:
            h = h[:, -1:]
        h = self.norm(h)
        return h if return_hidden else self.lm_head(h)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's (first) parameter."""
    return next(module.parameters()).device


def build_model(
    cfg: ModelConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> Transformer:
    """Randomly initialised model (meta-device construction, then materialised on `device`)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device or "cpu")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    model.init_weights(generator)
    if cfg.tie_word_embeddings:  # to_empty() keeps the tie; re-assert for clarity
        model.lm_head.weight = model.embed_tokens.weight
    return model.to(dtype=dtype) if dtype is not None else model
