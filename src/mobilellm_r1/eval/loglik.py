"""Log-likelihood scoring of continuations, for multiple-choice benchmarks (lm-eval-harness style).

`continuation_logprobs` batches (context, continuation) token requests: each batch is RIGHT-padded
and run through one plain causal forward. Because the model is causal, the logits at every
position before the padding are exactly those of the unpadded sequence, so no padding mask is
needed; only those positions are read. Requests with the same model input (one context followed
by different one-token continuations, as MMLU's letters) are read from one shared row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn as nn

from ..model.model import module_device
from ..model.padding import pad_rows

__all__ = ["continuation_logprobs", "encode_pair", "score_multiple_choice", "score_partial"]

Request = tuple[list[int], list[int]]


class TextEncoder(Protocol):
    """Anything with `encode(text, bos=...) -> list[int]` (e.g. `mobilellm_r1.tokenizer.Tokenizer`)."""

    def encode(self, text: str, bos: bool = False) -> list[int]: ...


def _forward(model: nn.Module, inputs: Sequence[tuple[int, ...]], pad_id: int) -> torch.Tensor:
    """Logits [B, L, V] of ``inputs`` right-padded to the longest, L, in one plain causal forward."""
    return model(pad_rows(inputs, pad_id).to(module_device(model)))


def _score(logits: torch.Tensor, request: Request) -> tuple[float, bool]:
    """(sum log p, all greedy) of a request's continuation from its input's logits [L, V]:
    continuation token j (0-based) after a context of length C is predicted at position C - 1 + j."""
    ctx, cont = request
    rows = logits[len(ctx) - 1 : len(ctx) - 1 + len(cont)].float()  # [n_cont, V]
    logp = torch.log_softmax(rows, dim=-1)  # float32 log-softmax
    target = torch.tensor(cont, dtype=torch.long, device=logp.device)  # [n_cont]
    total = logp.gather(-1, target[:, None]).sum().item()
    return total, bool((rows.argmax(dim=-1) == target).all().item())


@torch.inference_mode()
def continuation_logprobs(
    model: nn.Module, requests: Sequence[Request], batch_size: int = 8, pad_id: int = 0
) -> list[tuple[float, bool]]:
    """(sum log p(continuation | context), whether every continuation token is the argmax) per request.

    requests: (context ids, continuation ids); the context must be non-empty (start it with BOS
    when there is no text) and the continuation non-empty. A request's model input is
    (context + continuation)[:-1]; requests with the same input share one row of one forward
    (MMLU's " A" .. " D" after one context: one row instead of four). The distinct inputs are
    sorted by length (longest first) to limit padding, run `batch_size` per forward, and the
    results returned in request order.
    """
    rows: dict[tuple[int, ...], list[int]] = {}  # model input -> the requests reading it
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont:
            raise ValueError("context and continuation must both be non-empty")
        rows.setdefault(tuple(ctx + cont[:-1]), []).append(i)
    inputs = sorted(rows, key=len, reverse=True)
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    for lo in range(0, len(inputs), batch_size):
        batch = inputs[lo : lo + batch_size]
        logits = _forward(model, batch, pad_id)
        for row, key in enumerate(batch):
            for i in rows[key]:
                results[i] = _score(logits[row], requests[i])
    return [r for r in results if r is not None]


def encode_pair(tokenizer: TextEncoder, context: str, continuation: str, bos: bool = True) -> Request:
    """Token ids (context, continuation) the way lm-eval-harness splits them.

    Trailing whitespace of the context moves to the continuation. The whole string is encoded
    once and split at the context's token count, so the continuation tokens are the ones the
    model would actually see. If the tokenizer merges across the boundary (the whole encoding
    does not start with the context's encoding), we fall back to encoding context and
    continuation separately and concatenating them, which keeps the context tokens identical
    across choices (a fair comparison) at the cost of a slightly non-canonical tokenisation.
    """
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    ctx = tokenizer.encode(stripped, bos=bos)
    whole = tokenizer.encode(stripped + continuation, bos=bos)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    return ctx, tokenizer.encode(continuation, bos=False)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value (the first one on ties)."""
    return max(range(len(values)), key=lambda i: values[i])


def score_multiple_choice(
    model: nn.Module,
    tokenizer: TextEncoder,
    context: str,
    choices: Sequence[str],
    gold: int,
    *,
    bos: bool = True,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Score one multiple-choice question by the log-likelihood of each choice after `context`.

    Returns {"acc": 1.0/0.0 (argmax of raw sums == gold), "acc_norm": same with each sum divided
    by the choice's UTF-8 byte length, "logprobs": list of raw sums, "pred", "pred_norm"}.
    """
    requests = [encode_pair(tokenizer, context, choice, bos=bos) for choice in choices]
    logprobs = [lp for lp, _ in continuation_logprobs(model, requests, batch_size=batch_size)]
    normed = [lp / max(len(c.encode("utf-8")), 1) for lp, c in zip(logprobs, choices, strict=True)]
    pred, pred_norm = argmax(logprobs), argmax(normed)
    return {
        "acc": float(pred == gold),
        "acc_norm": float(pred_norm == gold),
        "logprobs": logprobs,
        "pred": pred,
        "pred_norm": pred_norm,
    }


def score_partial(
    model: nn.Module,
    tokenizer: TextEncoder,
    contexts: Sequence[str],
    continuation: str,
    gold: int,
    *,
    bos: bool = True,
    batch_size: int = 8,
) -> dict[str, Any]:
    """WinoGrande-style partial scoring: one shared continuation after each candidate context.

    The prediction is the context under which the continuation is most likely.
    Returns {"acc": 1.0/0.0, "logprobs": continuation log-prob per context, "pred"}.
    """
    requests = [encode_pair(tokenizer, ctx, continuation, bos=bos) for ctx in contexts]
    logprobs = [lp for lp, _ in continuation_logprobs(model, requests, batch_size=batch_size)]
    pred = argmax(logprobs)
    return {"acc": float(pred == gold), "logprobs": logprobs, "pred": pred}
