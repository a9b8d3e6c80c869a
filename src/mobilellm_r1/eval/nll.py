"""Per-token NLL of a task's reference solutions (the paper's Fig. 7 benchmark-perplexity tracking).

For each record with a gold solution (GSM8K answers, MATH solutions, HumanEval canonical
solutions, MBPP reference code, AIME'24 solutions), the model reads the problem and is scored
only on the solution tokens: NLL = -sum log p(solution | problem) / solution tokens, summed over
records before dividing (a token mean, not a mean of per-record means).

:func:`token_mean_nll` is the one token-mean NLL of the project: this module's benchmark NLL, the
trainer's held-out NLL and the influence probing-set loss all call it with their own forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.model import module_device
from ..model.padding import pad_rows
from .loglik import encode_pair
from .registry import generation_task

IGNORE = -100
Example = tuple[Sequence[int], Sequence[int]]  # token ids and aligned labels (-100: not scored)
LossSums = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def token_mean_nll(
    examples: Sequence[Example],
    loss_sums: LossSums,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> tuple[float, int]:
    """(token-mean NLL, scored tokens) of ``examples``: the next-token losses of every scored target
    (token t + 1 where its label is not -100) summed over all examples, divided by their number.

    Examples run ``batch_size`` at a time in order of length, right-padded (ids with 0, labels with
    -100); ``loss_sums(ids [B, T], labels [B, T])`` returns the loss sum and target count per row.
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    total, count = 0.0, 0
    for s in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[s : s + batch_size]]
        ids = pad_rows([x for x, _ in batch], 0).to(device)
        labels = pad_rows([y for _, y in batch], IGNORE).to(device)
        sums, counts = loss_sums(ids, labels)
        total, count = total + float(sums.sum()), count + int(counts.sum())
    return total / max(count, 1), count


def model_loss_sums(model: nn.Module) -> LossSums:
    """``loss_sums`` of :func:`token_mean_nll` for a plain causal LM (``model(ids)`` -> logits
    [B, T, V]): float32 next-token cross-entropy summed per row, and the targets per row."""

    def fn(ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits, targets = model(ids)[:, :-1].float(), labels[:, 1:]
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
        return ce.view(targets.shape).sum(dim=1), (targets != IGNORE).sum(dim=1)

    return fn


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
    with torch.inference_mode():
        nll, tokens = token_mean_nll(
            examples, model_loss_sums(model), batch_size=batch_size, device=module_device(model)
        )
    return {"nll": nll, "tokens": float(tokens), "n": float(len(examples))}
