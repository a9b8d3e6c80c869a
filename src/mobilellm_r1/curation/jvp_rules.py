"""Fused forward-mode (JVP) rules for the decoder's elementwise pieces, for influence scoring.

Under ``torch.func.jvp`` every eager op of RMSNorm, RoPE and SwiGLU runs its own forward-mode
rule: an RMSNorm, for one, becomes some fifteen float32 passes over its [tokens, width] input (the
upcast, square, mean, rsqrt, the scale, and as many again for the tangent). This module gives each
piece one rule, a primal function and a tangent function, each `torch.compile`d on CUDA into one
or two kernels. Per row, with r = rsqrt(mean(x^2) + eps) and n = x r:

    rms_norm(x, w):   d(n w) = r (dx - n mean(n dx)) w + n dw      (l2_qk_norm: w absent)
    apply_rope(x):    linear in x, so the tangent is apply_rope(dx); cos and sin are constants
    swiglu(a, b):     d(silu(a) b) = s (1 + a (1 - s)) da b + silu(a) db,  s = sigmoid(a)

The model's functions of those names are overridable (`torch.overrides`); `jvp_rules()` is the
torch-function mode that routes them to `JvpRule` (the model file stays as it is). The primal is
the model's own function; tangents follow the model's dtypes (float32 inside, cast like the
primal). Both run through the custom op ``mobilellm_r1::jvp_rule``: `torch.compile` is skipped
inside functorch transforms, and an op is opaque to them. The op's vmap rule moves a vmapped
(query) dim first and lets the rule broadcast over it, so K query directions share one launch.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..model import model as decoder
from ..model.model import upcast


# ====================================================================== the rules
def rms_norm_tangent(x: Tensor, w: Tensor | None, dx: Tensor, dw: Tensor | None, eps: float) -> Tensor:
    """Tangent of `model.rms_norm(x, w, eps)` along (dx, dw); dx may carry extra leading dims."""
    xf, dxf = upcast(x), upcast(dx)
    r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    n = xf * r
    dn = (r * (dxf - n * (n * dxf).mean(-1, keepdim=True))).to(x.dtype)  # tangent of the cast n
    return dn if w is None else dn * w + n.to(x.dtype) * dw


def swiglu_tangent(a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    """Tangent of `model.swiglu(a, b)` = silu(a) b along (da, db), computed in float32."""
    af = upcast(a)
    s = torch.sigmoid(af)
    d = s * (1 + af * (1 - s)) * upcast(da) * upcast(b) + af * s * upcast(db)
    return d.to(torch.promote_types(a.dtype, b.dtype))


@dataclass(frozen=True)
class Rule:
    """primal(*args, eps) and tangent(*args, *tangents, eps), the tangents being those of the first
    `varying` args (the rest are held constant: RoPE's cos and sin; tangents given them are ignored). `aligned`: all args broadcast from the right, so a
    vmapped dim of any of them can be padded to the front (else only full-rank args may be vmapped
    that way; the rest are looped over)."""

    primal: Callable[..., Tensor]
    tangent: Callable[..., Tensor]
    varying: int
    aligned: bool = True


RULES: dict[str, Rule] = {
    "rms_norm": Rule(
        lambda x, w, eps: decoder.rms_norm(x, w, eps),
        lambda x, w, dx, dw, eps: rms_norm_tangent(x, w, dx, dw, eps),
        varying=2,
    ),
    "l2_norm": Rule(
        lambda x, eps: decoder.rms_norm(x, None, eps),
        lambda x, dx, eps: rms_norm_tangent(x, None, dx, None, eps),
        varying=1,
    ),
    "apply_rope": Rule(
        lambda x, cos, sin, eps: decoder.apply_rope(x, cos, sin),
        lambda x, cos, sin, dx, eps: decoder.apply_rope(dx, cos, sin),
        varying=1,
        aligned=False,
    ),
    "swiglu": Rule(
        lambda a, b, eps: decoder.swiglu(a, b),
        lambda a, b, da, db, eps: swiglu_tangent(a, b, da, db),
        varying=2,
    ),
}


def _function(name: str, tangent: bool) -> Callable[..., Tensor]:
    rule = RULES[name]
    return rule.tangent if tangent else rule.primal


@functools.cache
def _compiled(name: str, tangent: bool) -> Callable[..., Tensor]:
    return torch.compile(_function(name, tangent), dynamic=True)


# ====================================================================== the custom op
@torch.library.custom_op("mobilellm_r1::jvp_rule", mutates_args=())
def jvp_rule(name: str, tangent: bool, tensors: list[Tensor], eps: float, compiled: bool) -> Tensor:
    """Rule `name`'s primal (``tangent`` False: tensors = args) or tangent (tensors = args then the
    varying args' tangents), `torch.compile`d when ``compiled``."""
    fn = _compiled(name, tangent) if compiled else _function(name, tangent)
    return fn(*tensors, eps)


@jvp_rule.register_fake
def _jvp_rule_fake(name: str, tangent: bool, tensors: list[Tensor], eps: float, compiled: bool) -> Tensor:
    return _function(name, tangent)(*tensors, eps)


@jvp_rule.register_vmap
def _jvp_rule_vmap(info: Any, in_dims: tuple, name: str, tangent: bool, tensors: list[Tensor], eps, compiled):
    """The vmapped dim goes first, each batched tensor padded with 1s to the widest tensor's rank,
    so the rule broadcasts over it; an unaligned rule with a batched lower-rank tensor loops."""
    dims = in_dims[2]
    rank = max(x.dim() - (d is not None) for x, d in zip(tensors, dims, strict=True))
    if RULES[name].aligned or all(
        x.dim() == rank + 1 for x, d in zip(tensors, dims, strict=True) if d is not None
    ):
        padded = [x if d is None else _lead(x, d, rank) for x, d in zip(tensors, dims, strict=True)]
        return jvp_rule(name, tangent, padded, eps, compiled), 0
    slices = (
        [x if d is None else x.movedim(d, 0)[i] for x, d in zip(tensors, dims, strict=True)]
        for i in range(info.batch_size)
    )
    return torch.stack([jvp_rule(name, tangent, part, eps, compiled) for part in slices]), 0


def _lead(x: Tensor, dim: int, rank: int) -> Tensor:
    """x's vmapped dim first, then 1s up to ``rank`` logical dims: [n, 1, ..., 1, *shape]."""
    x = x.movedim(dim, 0)
    return x.view(x.shape[0], *(1,) * (rank + 1 - x.dim()), *x.shape[1:])


# ====================================================================== autograd.Function
class JvpRule(torch.autograd.Function):
    """``apply(name, eps, compiled, *args)`` -> rule `name`'s primal; ``torch.func.jvp`` (also under
    ``vmap``) gets its tangent from the rule. No backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(name: str, eps: float, compiled: bool, *args: Tensor) -> Tensor:
        return jvp_rule(name, False, list(args), eps, compiled)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.name, ctx.eps, ctx.compiled = inputs[:3]
        ctx.save_for_forward(*inputs[3:])

    @staticmethod
    def jvp(ctx: Any, _name: None, _eps: None, _compiled: None, *tangents: Tensor | None) -> Tensor:
        args, varying = ctx.saved_tensors, RULES[ctx.name].varying
        dargs = [
            torch.zeros_like(a) if t is None else t
            for a, t in zip(args[:varying], tangents[:varying], strict=True)
        ]
        return jvp_rule(ctx.name, True, [*args, *dargs], ctx.eps, ctx.compiled)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(
            "JvpRule has a forward-mode (jvp) rule only: run backward passes outside jvp_rules()"
        )


# ====================================================================== routing the model's calls
def _rms_norm_call(x: Tensor, weight: Tensor | None, eps: float) -> tuple[str, float, list[Tensor]]:
    return ("l2_norm", eps, [x]) if weight is None else ("rms_norm", eps, [x, weight])


ROUTES: dict[Callable[..., Tensor], Callable[..., tuple[str, float, list[Tensor]]]] = {
    decoder.rms_norm: _rms_norm_call,
    decoder.apply_rope: lambda x, cos, sin: ("apply_rope", 0.0, [x, cos, sin]),
    decoder.swiglu: lambda gate, up: ("swiglu", 0.0, [gate, up]),
}


class JvpRulesMode(TorchFunctionMode):
    """Routes the model's `rms_norm`, `apply_rope` and `swiglu` calls to `JvpRule`; ``routed`` counts
    them by rule. ``compiled``: the rules run `torch.compile`d (None: on CUDA tensors)."""

    def __init__(self, compiled: bool | None = None) -> None:
        super().__init__()
        self.compiled = compiled
        self.routed: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        route = ROUTES.get(func)
        if route is None:
            return func(*args, **kwargs)
        name, eps, tensors = route(*args, **kwargs)
        self.routed[name] += 1
        compiled = tensors[0].is_cuda if self.compiled is None else self.compiled
        return JvpRule.apply(name, eps, compiled, *tensors)


def jvp_rules(compiled: bool | None = None) -> JvpRulesMode:
    """Context manager: while active, the model's norms, RoPE and SwiGLU take the fused rules
    (``with jvp_rules() as mode:`` exposes the counts)."""
    return JvpRulesMode(compiled)
