"""The one token-mean NLL: equal to a per-token brute force, independent of batching, and equal to
the continuation log-likelihoods that benchmark NLL was computed from before."""

from __future__ import annotations

import random

import pytest
import torch

from helpers import small_config
from mobilellm_r1.eval.loglik import continuation_logprobs
from mobilellm_r1.eval.nll import IGNORE, model_loss_sums, token_mean_nll
from mobilellm_r1.model import Transformer, build_model


@pytest.fixture(scope="module")
def model() -> Transformer:
    return build_model(small_config(), seed=0).eval()


def examples(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) with a context of 1..6 unscored tokens and 1..8 scored ones."""
    rng, out = random.Random(seed), []
    for _ in range(7):
        ctx = [rng.randrange(1, 1000) for _ in range(rng.randint(1, 6))]
        cont = [rng.randrange(1, 1000) for _ in range(rng.randint(1, 8))]
        out.append((ctx + cont, [IGNORE] * len(ctx) + cont))
    return out


@torch.no_grad()
def brute_force(model: Transformer, data: list[tuple[list[int], list[int]]]) -> tuple[float, int]:
    total, count = 0.0, 0
    for ids, labels in data:
        logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)
        for t in range(len(ids) - 1):
            if labels[t + 1] != IGNORE:
                total -= float(logp[t, labels[t + 1]])
                count += 1
    return total / count, count


@torch.no_grad()
def test_token_mean_matches_brute_force_at_any_batch_size(model) -> None:
    data = examples()
    want, tokens = brute_force(model, data)
    for batch_size in (1, 3, 8):
        nll, count = token_mean_nll(data, model_loss_sums(model), batch_size=batch_size)
        assert count == tokens and nll == pytest.approx(want, rel=1e-5)


@torch.no_grad()
def test_equals_the_continuation_logprobs_benchmark_nll_used(model) -> None:
    """reference_nll was -sum(continuation log-probs) / continuation tokens; the merge keeps it."""
    data = examples(seed=1)
    requests = []
    for ids, labels in data:
        start = next(i for i, t in enumerate(labels) if t != IGNORE)
        requests.append((ids[:start], ids[start:]))
    old_tokens = sum(len(c) for _, c in requests)
    old = -sum(lp for lp, _ in continuation_logprobs(model, requests, batch_size=4)) / old_tokens
    nll, count = token_mean_nll(data, model_loss_sums(model), batch_size=4)
    assert count == old_tokens and nll == pytest.approx(old, rel=1e-5)


def test_nothing_scored_is_zero_not_a_division_error(model) -> None:
    with torch.no_grad():
        assert token_mean_nll([([5, 6], [IGNORE, IGNORE])], model_loss_sums(model)) == (0.0, 0)
        assert token_mean_nll([], model_loss_sums(model)) == (0.0, 0)
