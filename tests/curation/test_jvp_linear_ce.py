"""curation/jvp_linear_ce.py: the per-row loss and logit gradient `ce_rows` against PyTorch's
cross-entropy and autograd, and the head's forward-mode rule against `torch.func.jvp` of
F.cross_entropy(F.linear(...)), eager and `torch.compile`d (inside vmap(jvp), where a plain compiled
function would be skipped)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch.func import jvp, vmap

from mobilellm_r1.curation.jvp_linear_ce import LinearCrossEntropy, ce_rows_eager, ce_rows_fusable
from mobilellm_r1.train.losses import IGNORE_INDEX


def _problem(dtype: torch.dtype = torch.float64, n: int = 24, d: int = 8, v: int = 300):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, d, generator=gen, dtype=dtype)
    weight = 0.5 * torch.randn(v, d, generator=gen, dtype=dtype)
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[[2, 7]] = IGNORE_INDEX
    return hidden, weight, targets


@pytest.mark.parametrize("ce_rows", [ce_rows_eager, ce_rows_fusable], ids=["eager", "fusable"])
def test_ce_rows_is_cross_entropy_and_its_logit_gradient(ce_rows) -> None:
    hidden, weight, targets = _problem()
    logits = F.linear(hidden, weight).requires_grad_()
    ce, g = ce_rows(logits.detach(), targets)
    expected = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")
    torch.testing.assert_close(ce, expected.detach())
    (grad,) = torch.autograd.grad(expected.sum(), logits)
    valid = targets != IGNORE_INDEX
    torch.testing.assert_close(g[valid], grad[valid])
    assert ce[~valid].eq(0).all()
    torch.testing.assert_close(g[~valid], logits[~valid].softmax(-1))  # the rule zeroes these rows
    # half precision: float32 loss, gradient in the logits' dtype
    ce16, g16 = ce_rows(logits.detach().bfloat16(), targets)
    assert ce16.dtype == torch.float32 and g16.dtype == torch.bfloat16
    torch.testing.assert_close(ce16.double(), ce, rtol=0.02, atol=0.05)
    torch.testing.assert_close(g16.double(), g.detach(), rtol=0.02, atol=0.01)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_head_rule_equals_pytorchs_forward_mode(compiled: bool) -> None:
    hidden, weight, targets = _problem(torch.float32)
    gen = torch.Generator().manual_seed(1)
    d_hidden = torch.randn(hidden.shape, generator=gen)
    d_weights = torch.randn((3, *weight.shape), generator=gen)  # 3 query directions

    def plain(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(F.linear(h, w), targets, ignore_index=IGNORE_INDEX, reduction="none")

    def rule(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return LinearCrossEntropy.apply(h, w, targets, compiled)[0]

    torch._dynamo.reset()
    counters.clear()
    outs = {}
    for name, fn in (("plain", plain), ("rule", rule)):
        outs[name] = vmap(lambda dw, fn=fn: jvp(fn, (hidden, weight), (d_hidden, dw)))(d_weights)
    torch.testing.assert_close(outs["rule"][0], outs["plain"][0])  # the losses
    torch.testing.assert_close(outs["rule"][1], outs["plain"][1], rtol=1e-4, atol=1e-5)  # the tangents
    assert outs["rule"][1][:, [2, 7]].eq(0).all()
    assert counters["stats"]["unique_graphs"] == (1 if compiled else 0)  # compiled inside vmap(jvp)
    # only the weight moves (the influence case of a parameter subset)
    only_w = jvp(rule, (hidden, weight), (torch.zeros_like(hidden), d_weights[0]))[1]
    expected = jvp(plain, (hidden, weight), (torch.zeros_like(hidden), d_weights[0]))[1]
    torch.testing.assert_close(only_w, expected, rtol=1e-4, atol=1e-5)


def test_head_rule_has_no_backward() -> None:
    hidden, weight, targets = _problem(torch.float32)
    with pytest.raises(RuntimeError, match="forward-mode"):
        LinearCrossEntropy.apply(hidden.requires_grad_(), weight, targets)[0].sum().backward()
