"""`curation.jvp_rules`: each fused forward-mode rule (the model's rms_norm with and without a
weight, apply_rope, swiglu) against PyTorch's own forward mode through the same function, eager
and `torch.compile`d, for one tangent and for 3 vmapped ones; the routing counts; no backward."""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp, vmap

from mobilellm_r1.curation.jvp_rules import jvp_rules
from mobilellm_r1.model import model as decoder

pytestmark = pytest.mark.usefixtures("one_thread")


def cases(dtype: torch.dtype) -> dict[str, tuple]:
    """name -> (function, primals, tangents, rule it routes to)."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dt)

    x, w = rand(2, 5, 3, 8), rand(8, dt=torch.float32)
    cos, sin = rand(2, 5, 4, dt=torch.float32), rand(2, 5, 4, dt=torch.float32)
    a, b = rand(2, 5, 16), rand(2, 5, 16)
    return {
        "rms_norm": (
            lambda x, w: decoder.rms_norm(x, w, 1e-5),
            (x, w),
            (rand(*x.shape), rand(8, dt=torch.float32)),
        ),
        "l2_norm": (lambda x: decoder.l2_qk_norm(x, 1e-5), (x,), (rand(*x.shape),)),
        "apply_rope": (lambda x: decoder.apply_rope(x, cos, sin), (x,), (rand(*x.shape),)),
        "swiglu": (decoder.swiglu, (a, b), (rand(*a.shape), rand(*b.shape))),
    }


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_rules_equal_pytorchs_forward_mode(dtype: torch.dtype, compiled: bool) -> None:
    # float32: rounding only; bf16: PyTorch rounds each eager op to bf16, the rules once
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    for name, (fn, primals, tangents) in cases(dtype).items():
        out_ref, d_ref = jvp(fn, primals, tangents)
        with jvp_rules(compiled=compiled) as mode:
            out, d = jvp(fn, primals, tangents)
        assert dict(mode.routed) == {name: 1}
        assert out.dtype == out_ref.dtype and d.dtype == d_ref.dtype and d.shape == d_ref.shape
        assert relative(out, out_ref) <= tol and relative(d, d_ref) <= tol, name
        # 3 query directions vmapped: the op's vmap rule broadcasts the rule over them
        gen = torch.Generator().manual_seed(1)
        stacked = [
            torch.stack([t, *(torch.randn(t.shape, generator=gen).to(t.dtype) for _ in range(2))])
            for t in tangents
        ]

        def tangent(*ts: torch.Tensor, fn=fn, primals=primals) -> torch.Tensor:
            return jvp(fn, primals, ts)[1]

        ref = vmap(tangent)(*stacked)
        with jvp_rules(compiled=compiled):
            got = vmap(tangent)(*stacked)
        assert got.shape == ref.shape and relative(got, ref) <= tol, name


def test_rms_norm_rule_with_a_constant_weight_and_unrouted_calls() -> None:
    """A weight without a tangent (norms outside the scored subset) gets a zero tangent; calls outside
    the mode, and torch functions inside it, are left alone."""
    x, w, dx = torch.randn(4, 8), torch.randn(8), torch.randn(4, 8)
    ref = jvp(lambda x: decoder.rms_norm(x, w, 1e-6), (x,), (dx,))[1]
    with jvp_rules(compiled=False) as mode:
        got = jvp(lambda x: decoder.rms_norm(x, w, 1e-6), (x,), (dx,))[1]
        torch.nn.functional.silu(x)
    assert relative(got, ref) <= 1e-6 and dict(mode.routed) == {"rms_norm": 1}


def test_rules_have_no_backward() -> None:
    x = torch.randn(4, 8, requires_grad=True)
    with jvp_rules(), pytest.raises(RuntimeError, match="forward-mode"):
        decoder.swiglu(x, x).sum().backward()


def test_vmap_over_primals_of_an_unaligned_rule() -> None:
    """RoPE's cos/sin do not broadcast from the right against x: batched ones are looped over."""
    x, dx = torch.randn(3, 2, 5, 3, 8), torch.randn(2, 5, 3, 8)
    cos, sin = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)

    def rotated(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return jvp(lambda x: decoder.apply_rope(x, c, s), (x,), (dx,))

    ref = vmap(rotated)(x, cos, sin)
    with jvp_rules(compiled=False) as mode:
        got = vmap(rotated)(x, cos, sin)
    assert mode.routed["apply_rope"] == 1
    assert all(relative(g, r) <= 1e-6 for g, r in zip(got, ref, strict=True))
