"""Chunked LM-head losses against full-logit references: values and gradients (fp64), bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mobilellm_r1.model import ModelConfig, build_model
from mobilellm_r1.train.losses import (
    chunked_cross_entropy,
    chunked_kl_distill,
    kd_loss,
    topk_kl_distill,
)

N, D, V = 37, 24, 600
CHUNKS = [8, 13, 100]  # not dividing N, and larger than N
TIGHT = {"rtol": 1e-10, "atol": 1e-12}

# --------------------------------------------------------------------------- references (full logits)


def reduce(per_token: torch.Tensor, keep: torch.Tensor, reduction: str) -> torch.Tensor:
    total = (per_token * keep).sum()
    return total / keep.sum() if reduction == "mean" else total


def ref_ce(logits, labels, reduction="mean"):
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction=reduction)


def ref_kl(logits, teacher, temperature, keep, reduction="mean"):
    """T^2 * KL(p_t || p_s) per token, via F.kl_div."""
    log_ps = torch.log_softmax(logits / temperature, -1)
    log_pt = torch.log_softmax(teacher / temperature, -1)
    per_token = F.kl_div(log_ps, log_pt, log_target=True, reduction="none").sum(-1) * temperature**2
    return reduce(per_token, keep, reduction)


def ref_topk(logits, ids, logprobs, temperature, keep, reduction="mean"):
    """T^2 * sum_{top-k} q (log q - log p_s), q = teacher renormalised over its top-k."""
    log_q = logprobs - torch.logsumexp(logprobs, -1, keepdim=True)
    log_ps = torch.log_softmax(logits / temperature, -1).gather(1, ids)
    per_token = (log_q.exp() * (log_q - log_ps)).sum(-1) * temperature**2
    return reduce(per_token, keep, reduction)


# --------------------------------------------------------------------------- helpers


def problem(seed: int = 0, n: int = N, d: int = D, v: int = V, dtype=torch.float64):
    """hidden [n, d], weight [v, d] (leaves), labels [n] with ~1/4 ignored, teacher logits [n, v]."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, d, generator=gen, dtype=dtype) * 0.5).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=gen)
    labels[torch.rand(n, generator=gen) < 0.25] = -100
    teacher = torch.randn(n, v, generator=gen, dtype=dtype) * 2.0
    return hidden, weight, labels, teacher


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def check_against(ours, ref, hidden, weight, **tol):
    """Same value, same grads w.r.t. hidden and weight."""
    torch.testing.assert_close(ours, ref, **(tol or TIGHT))
    for a, b in zip(grads(ours, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(a, b, **(tol or TIGHT))


# --------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ce_matches_full_logits(chunk, reduction):
    h, w, y, _ = problem()
    ours = chunked_cross_entropy(h, w, y, chunk_size=chunk, reduction=reduction)
    check_against(ours, ref_ce(h @ w.T, y, reduction), h, w)


def test_fused_ce_matches_full_logits_and_eager():
    """The torch.compile'd chunk (one test: compiling on CPU takes ~20 s): fp64 exact against
    the full logits, with chunks of two sizes; under bf16 autocast equal to the eager path."""
    h, w, y, _ = problem()
    ours = chunked_cross_entropy(h, w, y, chunk_size=13, fused=True)
    check_against(ours, ref_ce(h @ w.T, y), h, w)
    h32, w32 = (t.detach().float().requires_grad_() for t in (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = chunked_cross_entropy(h32, w32, y, chunk_size=13, fused=True)
        eager = chunked_cross_entropy(h32, w32, y, chunk_size=13)
    check_against(fused, eager, h32, w32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ce_all_ignored_is_zero(reduction):
    h, w, y, _ = problem()
    loss, stats = chunked_cross_entropy(
        h, w, torch.full_like(y, -100), reduction=reduction, return_stats=True
    )
    assert loss.item() == 0.0 and stats.count.item() == 0 and stats.loss_sum.item() == 0.0
    gh, gw = grads(loss, h, w)
    assert not gh.any() and not gw.any()


def test_ce_stats_give_global_mean_over_microbatches():
    h, w, y, _ = problem()
    ref = ref_ce(h @ w.T, y)
    parts = [
        chunked_cross_entropy(h[s], w, y[s], chunk_size=8, return_stats=True)
        for s in (slice(0, 20), slice(20, N))
    ]
    loss_sum = sum(stats.loss_sum for _, stats in parts)
    count = sum(stats.count for _, stats in parts)
    assert count.item() == (y != -100).sum().item()
    torch.testing.assert_close(loss_sum / count, ref.detach(), **TIGHT)
    # the trainer's way: reduction="sum", scaled by 1 / global count, grads accumulate
    total = sum(chunked_cross_entropy(h[s], w, y[s], reduction="sum") for s in (slice(0, 20), slice(20, N)))
    check_against(total / count, ref, h, w)


def test_ce_frozen_inputs_and_no_grad():
    h, w, y, _ = problem()
    ref = ref_ce(h @ w.T, y)
    (gh_ref,) = grads(ref, h)
    loss = chunked_cross_entropy(h, w.detach(), y, chunk_size=13)  # frozen head
    torch.testing.assert_close(grads(loss, h)[0], gh_ref, **TIGHT)
    loss = chunked_cross_entropy(h.detach(), w, y, chunk_size=13)  # frozen trunk
    torch.testing.assert_close(grads(loss, w)[0], grads(ref_ce(h.detach() @ w.T, y), w)[0], **TIGHT)
    with torch.no_grad():
        loss = chunked_cross_entropy(h, w, y)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref.detach(), **TIGHT)


def test_ce_scales_by_grad_output():
    h, w, y, _ = problem()
    ours = chunked_cross_entropy(h, w, y, chunk_size=8) * 3.5
    check_against(ours, ref_ce(h @ w.T, y) * 3.5, h, w)


# --------------------------------------------------------------------------- KL distillation


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_kl_matches_full_logits(chunk, temperature, reduction):
    h, w, y, t = problem(1)
    keep = y != -100
    ref = ref_kl(h @ w.T, t, temperature, keep, reduction)
    ours = chunked_kl_distill(
        h, w, t, temperature=temperature, mask=keep, chunk_size=chunk, reduction=reduction
    )
    check_against(ours, ref, h, w)


def test_fused_kd_matches_full_logits_and_eager():
    """Compiled KL (+ CE) chunks: fp64 exact against the full-logit formula, with -inf teacher
    logits and a callable teacher; under bf16 autocast equal to the eager chunks."""
    h, w, y, t = problem(3)
    keep = y != -100
    ours = kd_loss(h, w, y, lambda a, b: t[a:b], alpha_ce=0.3, temperature=2.0, chunk_size=13, fused=True)
    ref = 0.7 * ref_kl(h @ w.T, t, 2.0, keep) + 0.3 * ref_ce(h @ w.T, y)
    check_against(ours, ref, h, w)
    t[:5, :50] = float("-inf")  # p_t = 0 there (the full-logit reference gives nan)
    kd = {"alpha_ce": 0.3, "temperature": 2.0, "chunk_size": 13}
    check_against(kd_loss(h, w, y, t, fused=True, **kd), kd_loss(h, w, y, t, **kd), h, w)
    h32, w32 = (x.detach().float().requires_grad_() for x in (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = chunked_kl_distill(h32, w32, t.float(), temperature=2.0, chunk_size=13, fused=True)
        eager = chunked_kl_distill(h32, w32, t.float(), temperature=2.0, chunk_size=13)
    check_against(fused, eager, h32, w32, rtol=1e-3, atol=1e-4)  # a bf16 ulp of dlogits apart


def test_kl_teacher_callable_and_no_mask():
    h, w, _, t = problem(2)
    calls = []

    def teacher(start: int, stop: int) -> torch.Tensor:
        calls.append((start, stop))
        return t[start:stop]

    ours = chunked_kl_distill(h, w, teacher, temperature=1.5, chunk_size=13)
    assert calls == [(0, 13), (13, 26), (26, 37)]
    check_against(ours, ref_kl(h @ w.T, t, 1.5, torch.ones(N, dtype=torch.bool)), h, w)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_gradient_wrt_student_logits(temperature):
    """With weight = I (d = V), hidden *are* the logits: the grad is T * (p_s - p_t) / count."""
    v = 50
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(N, v, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(N, v, generator=gen, dtype=torch.float64) * 2
    keep = torch.rand(N, generator=gen) < 0.7
    eye = torch.eye(v, dtype=torch.float64)
    ours = chunked_kl_distill(logits, eye, teacher, temperature=temperature, mask=keep, chunk_size=8)
    (g_ours,) = grads(ours, logits)
    (g_ref,) = grads(ref_kl(logits, teacher, temperature, keep), logits)
    p_s, p_t = torch.softmax(logits / temperature, -1), torch.softmax(teacher / temperature, -1)
    closed = temperature * (p_s - p_t).detach() * keep[:, None] / keep.sum()
    torch.testing.assert_close(g_ours, g_ref, **TIGHT)
    torch.testing.assert_close(g_ours, closed, **TIGHT)


def test_kl_teacher_with_neg_inf_logits():
    h, w, _, t = problem(4)
    t[:, ::7] = float("-inf")  # e.g. a teacher that masks part of the vocabulary
    ours = chunked_kl_distill(h, w, t, chunk_size=13)
    assert torch.isfinite(ours)
    log_pt = torch.log_softmax(t, -1)
    explicit = (log_pt.exp() * (log_pt - torch.log_softmax(h @ w.T, -1))).nan_to_num().sum(-1).mean()
    check_against(ours, explicit, h, w)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_kd_loss_mixes_kl_and_ce(alpha):
    h, w, y, t = problem(5)
    keep = y != -100
    s = h @ w.T
    ref = (1 - alpha) * ref_kl(s, t, 2.0, keep) + alpha * ref_ce(s, y)
    ours = kd_loss(h, w, y, lambda a, b: t[a:b], alpha_ce=alpha, temperature=2.0, chunk_size=13)
    check_against(ours, ref, h, w)


# --------------------------------------------------------------------------- top-k distillation


def teacher_topk(t: torch.Tensor, k: int, temperature: float, shuffle: bool = False):
    log_pt = torch.log_softmax(t / temperature, -1)
    logprobs, ids = log_pt.topk(k, dim=-1)
    if shuffle:  # order within the top-k must not matter
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(0))
        logprobs, ids = logprobs[:, perm], ids[:, perm]
    return ids, logprobs


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_with_k_equal_v_is_exact_kl(temperature):
    h, w, y, t = problem(6)
    keep = y != -100
    ids, logprobs = teacher_topk(t, V, temperature, shuffle=True)
    ours = topk_kl_distill(h, w, ids, logprobs, temperature=temperature, mask=keep, chunk_size=13)
    check_against(ours, ref_kl(h @ w.T, t, temperature, keep), h, w)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_topk_matches_truncated_formula(chunk, reduction):
    h, w, y, t = problem(7)
    keep = y != -100
    ids, logprobs = teacher_topk(t, 20, 1.5)
    ref = ref_topk(h @ w.T, ids, logprobs, 1.5, keep, reduction)
    ours = topk_kl_distill(
        h, w, ids, logprobs, temperature=1.5, mask=keep, chunk_size=chunk, reduction=reduction
    )
    check_against(ours, ref, h, w)


def test_topk_documented_relation_to_exact_kl():
    """Per token: KL = m * L + m log m + R, with m the top-k mass and R the tail term."""
    h, w, _, t = problem(8)
    k = 40
    ids, logprobs = teacher_topk(t, k, 1.0)
    with torch.no_grad():
        per_token = [topk_kl_distill(h[i : i + 1], w, ids[i : i + 1], logprobs[i : i + 1]) for i in range(N)]
        loss = torch.stack(per_token)
        log_pt, log_ps = torch.log_softmax(t, -1), torch.log_softmax(h @ w.T, -1)
        exact = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
        m = logprobs.exp().sum(-1)
        tail = torch.ones_like(log_pt, dtype=torch.bool).scatter_(1, ids, False)
        r = (log_pt.exp() * (log_pt - log_ps) * tail).sum(-1)
    torch.testing.assert_close(exact, m * loss + m * m.log() + r, **TIGHT)
    assert (loss >= 0).all() and ((-m * m.log()) <= 1 - m).all()


def test_topk_gradient_wrt_student_logits():
    """grad = T * (p_s - q scattered into [V]) / count, q the renormalised truncated teacher."""
    v, k, temperature = 50, 7, 2.0
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(N, v, generator=gen, dtype=torch.float64, requires_grad=True)
    ids, logprobs = teacher_topk(torch.randn(N, v, generator=gen, dtype=torch.float64), k, temperature)
    ours = topk_kl_distill(logits, torch.eye(v, dtype=torch.float64), ids, logprobs, temperature=temperature)
    q = torch.softmax(logprobs, -1)
    p_s = torch.softmax(logits / temperature, -1).detach()
    closed = temperature * (p_s - torch.zeros_like(p_s).scatter_(1, ids, q)) / N
    torch.testing.assert_close(grads(ours, logits)[0], closed, **TIGHT)


# --------------------------------------------------------------------------- low precision


def test_bf16_inputs_close_to_fp32():
    h32, w32, y, t = problem(10, dtype=torch.float32)
    h, w = h32.detach().bfloat16().requires_grad_(), w32.detach().bfloat16().requires_grad_()
    for fn in (
        lambda a, b: chunked_cross_entropy(a, b, y, chunk_size=13),
        lambda a, b: kd_loss(a, b, y, t.bfloat16(), alpha_ce=0.5, temperature=2.0, chunk_size=13),
        lambda a, b: topk_kl_distill(a, b, *teacher_topk(t, 16, 1.0), chunk_size=13),
    ):
        ours, ref = fn(h, w), fn(h32, w32)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, rtol=3e-2, atol=1e-3)
        for a, b in zip(grads(ours, h, w), grads(ref, h32, w32), strict=True):
            assert a.dtype == torch.bfloat16
            torch.testing.assert_close(a.float(), b, rtol=0, atol=3e-2 * b.abs().max().item())


def test_autocast_bf16_keeps_fp32_weight_grad():
    h, w, y, _ = problem(11, dtype=torch.float32)
    ref = ref_ce(h @ w.T, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = chunked_cross_entropy(h, w, y, chunk_size=13)
    (gh, gw), (rh, rw) = grads(ours, h, w), grads(ref, h, w)
    assert gh.dtype == torch.float32 and gw.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=0)
    assert (ours - ref).abs() > 0  # the logits really were bf16
    torch.testing.assert_close(gw, rw, rtol=0, atol=2e-2 * rw.abs().max().item())
    torch.testing.assert_close(gh, rh, rtol=0, atol=2e-2 * rh.abs().max().item())


# --------------------------------------------------------------------------- end to end, tied weights


def test_tied_transformer_gradients_match_full_logits():
    cfg = ModelConfig(
        hidden_size=32,
        intermediate_size_mlp=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=500,
        max_position_embeddings=64,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=[2],
    )
    model = build_model(cfg, seed=0)
    assert model.lm_head.weight is model.embed_tokens.weight
    gen = torch.Generator().manual_seed(12)
    ids = torch.randint(0, 500, (2, 19), generator=gen)
    labels = torch.randint(0, 500, (2, 19), generator=gen)
    labels[:, :3] = -100
    params = [p for p in model.parameters()]
    hidden = model(ids, return_hidden=True).flatten(0, 1)
    ours = grads(
        chunked_cross_entropy(hidden, model.lm_head.weight, labels.flatten(), chunk_size=13), *params
    )
    ref = grads(ref_ce(model(ids).flatten(0, 1), labels.flatten()), *params)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rejects_bad_arguments():
    h, w, y, t = problem()
    with pytest.raises(ValueError, match="reduction"):
        chunked_cross_entropy(h, w, y, reduction="none")
    with pytest.raises(ValueError, match="teacher logits"):
        chunked_kl_distill(h, w, t[:, :-1])
    with pytest.raises(ValueError, match="hidden"):
        chunked_cross_entropy(h, w[:, :-1], y)
