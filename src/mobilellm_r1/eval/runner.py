"""Run benchmarks end to end: load, generate (or read predictions), grade, write the report.

Outputs in ``out_dir`` (each file written to a temporary name and renamed, and
``summary.json`` rewritten after every task, so an interrupted run keeps what finished)::

    samples/<task>.jsonl   one row per sample: id, sample, prompt, completion, extracted,
                           verdict fields (correct / passed / acc ...), seconds
    summary.json           {task: {metric: value}}; pass@1 / acc are fractions in [0, 1];
                           plus "skipped": {task: reason} when some task's data could not
                           be loaded
    results.md             the same as a markdown table, with the paper's numbers when the
                           model is a published checkpoint, and the skipped tasks below it

A task whose data is not available (not in ``data_dir``, and for HellaSwag not on a reachable
hub: FileNotFoundError from its loader) is skipped with the loader's message as the reason,
printed to stderr at once, and the other tasks are scored.

Predictions mode scores a jsonl of ``{"task", "id", "completion"}`` (several lines per id
for n samples) over exactly the ids present; ``missing`` counts the task's records without
a prediction.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..atomic import atomic_write
from . import reference
from .choice_tasks import ChoiceItem, ChoiceTask, evaluate_choice_task
from .engines import Engine, GenRequest
from .math_grading import MathJudge
from .nll import reference_nll
from .registry import TASKS, Task, expand_tasks, get_task
from .tasks import GenTask, GradeContext

Row = dict[str, Any]


@dataclass
class EvalOptions:
    """What to evaluate and how (the CLI's flags)."""

    tasks: Sequence[str]
    data_dir: Path
    out_dir: Path
    chat: bool | None = None  # None: chat for post-trained-only tasks, base protocol otherwise
    n: int | None = None  # samples per problem (default: the protocol's)
    limit: int | None = None  # first N records of each task
    max_new_tokens: int | None = None
    temperature: float | None = None
    seed: int = 0
    workers: int = 2  # sandbox / judge processes
    batch_size: int = 16  # log-likelihood batch
    model_name: str = ""  # for the paper-vs-measured column
    nll: bool = False  # per-token NLL of generation tasks' reference solutions instead of sampling


def read_predictions(path: Path) -> dict[str, list[Row]]:
    """Predictions grouped by task; a bad line (not JSON, a field missing, a task not in
    :data:`~mobilellm_r1.eval.registry.TASKS`) raises ValueError naming ``file:line``."""
    grouped: dict[str, list[Row]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not JSON ({err.msg})") from None
            for key in ("task", "id", "completion"):
                if key not in row:
                    raise ValueError(f"{path}:{lineno}: missing field {key!r}")
            if str(row["task"]) not in TASKS:
                raise ValueError(f"{path}:{lineno}: unknown task {row['task']!r}; known: {', '.join(TASKS)}")
            grouped.setdefault(str(row["task"]), []).append(row)
    return grouped


def _jsonl(rows: Iterable[Row]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)


class Evaluator:
    """Runs :class:`EvalOptions` with an engine (generation), a local model (log-likelihood),
    or a predictions file (scoring only)."""

    def __init__(
        self,
        opts: EvalOptions,
        *,
        engine: Engine | None = None,
        model: Any = None,
        tokenizer: Any = None,
        predictions: dict[str, list[Row]] | None = None,
    ) -> None:
        self.opts, self.engine, self.model, self.tokenizer = opts, engine, model, tokenizer
        self.predictions = predictions
        self.summary: dict[str, dict[str, float]] = {}
        self.skipped: dict[str, str] = {}  # task -> why its data could not be loaded

    # ------------------------------------------------------------------ generation tasks
    def _params(self, task: GenTask, chat: bool):
        params = task.sampling(chat)
        o = self.opts
        changes: dict[str, Any] = {"seed": o.seed}
        if o.n is not None:
            changes["n"] = o.n
        if o.max_new_tokens is not None:
            changes["max_new_tokens"] = o.max_new_tokens
        if o.temperature is not None:
            changes["temperature"] = o.temperature
        return replace(params, **changes)

    def _generate(self, task: GenTask, requests: list[GenRequest], chat: bool) -> dict[str, list[Row]]:
        """id -> [{"completion", "seconds", "finish_reason"}] from the engine."""
        if self.engine is None:
            raise ValueError(f"{task.name}: generation needs a model or --predictions")
        params = self._params(task, chat)
        with tqdm(total=len(requests), desc=f"{task.name} generate", unit="prompt") as bar:
            results = self.engine.generate(requests, params, progress=bar.update)
        out: dict[str, list[Row]] = {}
        for req, res in zip(requests, results, strict=True):
            reasons = res.finish_reasons or [""] * len(res.texts)
            out[req.id] = [
                {"completion": t, "seconds": res.seconds / max(len(res.texts), 1), "finish_reason": f}
                for t, f in zip(res.texts, reasons, strict=True)
            ]
        return out

    def _from_predictions(self, task: GenTask, ids: list[str]) -> dict[str, list[Row]]:
        known = set(ids)
        out: dict[str, list[Row]] = {}
        for row in self.predictions.get(task.name, []):
            rid = str(row["id"])
            if rid not in known:
                raise ValueError(f"predictions: unknown id {rid!r} for task {task.name}")
            out.setdefault(rid, []).append({"completion": str(row["completion"])})
        return out

    def run_generation(
        self, task: GenTask, records: list[Row], judge: MathJudge
    ) -> tuple[dict[str, float], list[Row]]:
        o = self.opts
        ids = [task.id_of(r, i) for i, r in enumerate(records)]
        chat = bool(o.chat) or task.chat_only
        requests = [task.request(r, i, chat, o.data_dir) for i, r in enumerate(records)]
        if self.predictions is not None:
            samples = self._from_predictions(task, ids)
        else:
            samples = self._generate(task, requests, chat)
        kept = [(r, rid) for r, rid in zip(records, ids, strict=True) if rid in samples]
        grouped = {rid: [s["completion"] for s in samples[rid]] for _, rid in kept}
        ctx = GradeContext(judge=judge, workers=o.workers)
        summary, rows = task.grade([r for r, _ in kept], [rid for _, rid in kept], grouped, chat, ctx)
        summary = summary | {"missing": float(len(records) - len(kept))}
        prompts = {req.id: req.prompt if req.prompt is not None else req.messages for req in requests}
        return summary, self._join(rows, samples, prompts)

    @staticmethod
    def _join(rows: list[Row], samples: dict[str, list[Row]], prompts: dict[str, Any]) -> list[Row]:
        """Per-sample output rows: grading fields + prompt, completion, timing (by id, in order)."""
        seen: dict[str, int] = {}
        out = []
        for row in rows:
            rid = str(row["id"])
            k = seen.get(rid, 0)
            seen[rid] = k + 1
            out.append({"id": rid, "sample": k, "prompt": prompts.get(rid)} | samples[rid][k] | row)
        return out

    # ------------------------------------------------------------------ log-likelihood tasks
    def run_choice(self, task: ChoiceTask, items: list[ChoiceItem]) -> tuple[dict[str, float], list[Row]]:
        if self.model is None:
            raise ValueError(f"{task.name}: log-likelihood tasks need a local model (--model DIR)")
        with tqdm(total=len(items), desc=f"{task.name} loglik", unit="item") as bar:
            summary, rows = evaluate_choice_task(
                task, items, self.model, self.tokenizer, batch_size=self.opts.batch_size, progress=bar.update
            )
        return summary, rows

    def run_nll(self, name: str) -> dict[str, float]:
        if self.model is None:
            raise ValueError(f"{name}: --nll needs a local model (--model DIR)")
        o = self.opts
        return reference_nll(
            self.model, self.tokenizer, name, o.data_dir, limit=o.limit, batch_size=o.batch_size
        )

    # ------------------------------------------------------------------ driver
    def load(self, task: Task) -> list[Any] | None:
        """The task's first ``limit`` records (or choice items); None, with the reason kept in
        :attr:`skipped` and printed to stderr, when its data is not available."""
        try:
            data = (
                task.load(self.opts.data_dir) if isinstance(task, GenTask) else task.items(self.opts.data_dir)
            )
        except FileNotFoundError as err:
            self.skipped[task.name] = str(err)
            print(f"eval: skipped {task.name}: {err}", file=sys.stderr)
            self._write_reports()
            return None
        return data[: self.opts.limit]

    def run(self) -> dict[str, dict[str, float]]:
        """Evaluate every task in turn; returns the scored tasks' metrics (skipped ones are in
        :attr:`skipped`)."""
        o = self.opts
        names = expand_tasks(o.tasks)
        with MathJudge(workers=o.workers) as judge:
            for name in names:
                start = time.perf_counter()
                task = get_task(name)
                data = self.load(task)
                if data is None:
                    continue
                if isinstance(task, GenTask) and o.nll:
                    summary, rows = self.run_nll(name), []
                elif isinstance(task, GenTask):
                    summary, rows = self.run_generation(task, data, judge)
                else:
                    summary, rows = self.run_choice(task, data)
                summary["seconds"] = round(time.perf_counter() - start, 3)
                atomic_write(o.out_dir / "samples" / f"{name}.jsonl", _jsonl(rows))
                self.summary[name] = summary
                self._write_reports()
        return self.summary

    def _write_reports(self) -> None:
        saved: dict[str, Any] = dict(self.summary)
        if self.skipped:
            saved["skipped"] = self.skipped
        atomic_write(self.opts.out_dir / "summary.json", json.dumps(saved, indent=2) + "\n")
        paper = reference.reference_for(self.opts.model_name) if self.opts.model_name else None
        atomic_write(self.opts.out_dir / "results.md", markdown_table(self.summary, paper, self.skipped))


HEADLINE = ("pass@1", "acc", "acc_norm", "nll")


def markdown_table(
    summary: dict[str, dict[str, float]],
    paper: dict[str, float] | None = None,
    skipped: dict[str, str] | None = None,
) -> str:
    """One row per task: its headline metric (x100, NLL in nats/token) +- SE, pass@n, acc_norm,
    the paper's value, and the count; then one line per skipped task with its reason."""
    lines = [
        "| task | metric | value | ± SE | pass@n | acc_norm | paper | n | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, m in summary.items():
        metric = next((k for k in HEADLINE if k in m), "")
        value = m.get(metric)
        se = m.get(f"{metric}_se")
        pass_n = next(
            (v for k, v in m.items() if k.startswith("pass@") and k != "pass@1" and "_se" not in k), None
        )
        ref = (paper or {}).get(task)
        count = m.get("n_problems", m.get("n"))
        shown = f"{value:.4f}" if metric == "nll" else _pct(value)
        cells = [task, metric, shown, _pct(se), _pct(pass_n), _pct(m.get("acc_norm")), _pct(ref)]
        cells += ["" if count is None else str(int(count)), f"{m.get('seconds', 0):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", f"Skipped ({len(skipped)}, data not available):"]
        lines += [f"- {task}: {reason}" for task, reason in skipped.items()]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"
