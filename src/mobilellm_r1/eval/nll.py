"""Per-token NLL of a task's reference solutions (the paper's Fig. 7 benchmark-perplexity tracking).

For each record with a gold solution (GSM8K answers, MATH solutions, HumanEval canonical
solutions, MBPP reference code, AIME'24 solutions), the model reads the problem and is scored
only on the solution tokens: NLL = -sum log p(solution | problem) / solution tokens, summed over
records before dividing (a token mean, not a mean of per-record means).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .loglik import continuation_logprobs, encode_pair
from .registry import generation_task

IGNORE = -100


def text_examples(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids of plain held-out texts (probing sets, eval files), every token scored: BOS + text +
    EOS, cut to ``max_len + 1`` tokens."""
    return [ids[: max_len + 1] for ids in tokenizer.encode_batch(texts, bos=True, eos=True)]


def reference_examples(
    task_name: str, data_dir: Path | str, tokenizer: Any, *, limit: int | None = None, max_len: int = 4096
) -> list[tuple[list[int], list[int]]]:
    """(token ids, labels) per record: labels are -100 over the problem, the ids over the solution.

    ids and labels are aligned (labels[i] is the target *at* token i, to be shifted by the
    caller); sequences are cut to ``max_len + 1`` tokens, and records whose solution would be
    cut away entirely are dropped.
    """
    task = generation_task(task_name)
    out = []
    for record in task.load(Path(data_dir)):
        pair = task.reference(record)
        if pair is None:
            continue
        ctx, cont = encode_pair(tokenizer, pair[0], pair[1])
        cont = [*cont, tokenizer.eos_id]
        ids, labels = (ctx + cont)[: max_len + 1], ([IGNORE] * len(ctx) + cont)[: max_len + 1]
        if any(t != IGNORE for t in labels[1:]):
            out.append((ids, labels))
        if limit is not None and len(out) >= limit:
            break
    return out


def reference_nll(
    model: Any,
    tokenizer: Any,
    task_name: str,
    data_dir: Path | str,
    *,
    limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """{"nll": token-mean NLL of the solutions, "tokens": solution tokens, "n": records}."""
    max_len = model.config.max_position_embeddings
    examples = reference_examples(task_name, data_dir, tokenizer, limit=limit, max_len=max_len - 1)
    requests = []
    for ids, labels in examples:
        start = next(i for i, t in enumerate(labels) if t != IGNORE)
        requests.append((ids[:start], ids[start:]))
    scores = continuation_logprobs(model, requests, batch_size=batch_size, pad_id=0)
    tokens = sum(len(cont) for _, cont in requests)
    total = -sum(lp for lp, _ in scores)
    return {"nll": total / max(tokens, 1), "tokens": float(tokens), "n": float(len(requests))}
