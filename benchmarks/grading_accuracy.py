"""Math grading accuracy on labelled (output, gold) pairs: our judge, math-verify alone, and
Qwen2.5-Math's grader (the seeds' evaluation harness).

The pairs come from the real MATH500 and GSM8K gold answers (:mod:`mobilellm_r1.eval.answer_pairs`:
correct answers in each output style and surface form, and wrong variants, labels by
construction). Per category it prints, for each grader, the accuracy, false accepts (a wrong
pair graded correct) and false rejects (a correct pair graded wrong).

- ours: :class:`~mobilellm_r1.eval.math_grading.MathJudge` with the pair's answer protocol;
- math-verify: ``verify(parse("\\boxed{gold}"), parse(output))`` with its default extraction;
- qwen: ``math_equal(extract_answer(output, data), gold)`` from Qwen2.5-Math's
  ``evaluation/{parser,grader}.py``, imported from ``--qwen-dir`` at run time (their repository's
  ``evaluation`` folder; it needs ``pip install word2number regex``). Without it, it is skipped.

    python benchmarks/grading_accuracy.py --qwen-dir /path/to/Qwen2.5-Math/evaluation

Before grading, each output is cut at the first of its task's stop strings, as generation cuts
it (``mobilellm_r1.eval.math_tasks``: "Problem:" for MATH500's and "Q:" for GSM8K's few-shot prompts;
chat outputs, read under the ``boxed`` protocol, have none), so a few-shot run-on into an invented
next problem is graded the way a real run sees it.

``--pairs heldout`` grades the independent held-out set of benchmarks/grading_pairs_heldout.py
instead (written without reading the judge or the pair generator above) and writes
results/grading_accuracy_heldout.json.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

from grading_pairs_heldout import heldout_pairs
from mobilellm_r1.eval.answer_pairs import Pair, labelled_pairs
from mobilellm_r1.eval.math_grading import MathJudge
from mobilellm_r1.eval.registry import TASKS, math_task
from provenance import RESULTS, result_header, write_result

ITEM_TIMEOUT_S = 10
_QWEN_DATA = {"math500": "math", "gsm8k": "gsm8k"}


def load_records(eval_dir: Path, gsm8k_records: int, seed: int) -> dict[str, list[dict]]:
    """MATH500 (all) and a seeded sample of GSM8K test records."""

    def rows(name: str) -> list[dict]:
        path = eval_dir / name / "test.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    gsm8k = rows("gsm8k")
    return {"math500": rows("math500"), "gsm8k": random.Random(seed).sample(gsm8k, gsm8k_records)}


def stop_strings(source: str, protocol: str) -> tuple[str, ...]:
    """The stop strings generation applies to an output of ``source`` read under ``protocol``:
    the few-shot (base) sampling's under the task's base protocol, the chat sampling's otherwise."""
    chat = protocol != math_task(source).base_protocol
    return TASKS[source].sampling(chat).stop_strings


def cut_at_stop_strings(pairs: list[Pair]) -> tuple[list[Pair], int]:
    """Each output cut where its earliest stop string starts (as the generator does), and how
    many outputs were cut."""
    out, cut = [], 0
    for pair in pairs:
        hits = [i for i in (pair.output.find(s) for s in stop_strings(pair.source, pair.protocol)) if i >= 0]
        if hits:
            pair, cut = replace(pair, output=pair.output[: min(hits)]), cut + 1
        out.append(pair)
    return out, cut


def grade_ours(pairs: list[Pair], workers: int) -> list[bool]:
    """Our judge, each pair under its own protocol."""
    verdicts: list[bool] = [False] * len(pairs)
    with MathJudge(workers=workers) as judge:
        for protocol in sorted({p.protocol for p in pairs}):
            idx = [i for i, p in enumerate(pairs) if p.protocol == protocol]
            graded = judge.judge_many([(pairs[i].gold, pairs[i].output) for i in idx], protocol)
            for i, v in zip(idx, graded, strict=True):
                verdicts[i] = v.correct
    return verdicts


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError


def _init_qwen(qwen_dir: str | None) -> None:
    """Pool initializer: make Qwen's evaluation folder importable (and its latex2sympy)."""
    signal.signal(signal.SIGALRM, _alarm)
    if qwen_dir:
        sys.path[:0] = [qwen_dir, str(Path(qwen_dir) / "latex2sympy")]


def _math_verify_one(pair: Pair) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"\\boxed{{{pair.gold}}}"), parse(pair.output)))


def _qwen_one(pair: Pair) -> bool:
    from grader import math_equal
    from parser import extract_answer, strip_string

    data = _QWEN_DATA[pair.source]
    gold = extract_answer(f"\\boxed{{{pair.gold}}}", data) if data == "math" else strip_string(pair.gold)
    return bool(math_equal(extract_answer(pair.output, data), gold))


def _timed(args: tuple[str, Pair]) -> bool:
    """Run one grader on one pair under a SIGALRM timeout (a timeout or crash grades wrong)."""
    name, pair = args
    signal.alarm(ITEM_TIMEOUT_S)
    try:
        return (_qwen_one if name == "qwen" else _math_verify_one)(pair)
    except Exception:
        return False
    finally:
        signal.alarm(0)


def grade_in_pool(name: str, pairs: list[Pair], workers: int, qwen_dir: str | None = None) -> list[bool]:
    """A peer grader over all pairs in ``workers`` processes."""
    with get_context("spawn").Pool(workers, initializer=_init_qwen, initargs=(qwen_dir,)) as pool:
        return pool.map(_timed, [(name, p) for p in pairs], chunksize=16)


def tally(pairs: list[Pair], verdicts: list[bool]) -> dict[str, dict]:
    """Per category (and "all"): n, accuracy, false accepts and false rejects."""
    groups: dict[str, list[tuple[Pair, bool]]] = defaultdict(list)
    for pair, verdict in zip(pairs, verdicts, strict=True):
        groups[f"{pair.source}/{pair.category}"].append((pair, verdict))
        groups["all"].append((pair, verdict))
    out = {}
    for key, items in sorted(groups.items()):
        fa = sum(v and not p.correct for p, v in items)
        fr = sum(p.correct and not v for p, v in items)
        out[key] = {"n": len(items), "accuracy": 1 - (fa + fr) / len(items), "false_accepts": fa}
        out[key]["false_rejects"] = fr
    return out


def print_table(results: dict[str, dict[str, dict]]) -> None:
    """Category rows, one accuracy / FA / FR column group per grader."""
    names = list(results)
    print(f"{'category':40s} {'n':>5s}  " + "  ".join(f"{n:>20s}" for n in names))
    print(f"{'':40s} {'':>5s}  " + "  ".join(f"{'acc%   FA   FR':>20s}" for _ in names))
    for key, row in results[names[0]].items():
        cells = [results[n][key] for n in names]
        text = "  ".join(
            f"{c['accuracy'] * 100:8.2f} {c['false_accepts']:4d} {c['false_rejects']:4d}" for c in cells
        )
        print(f"{key:40s} {row['n']:5d}  {text}")


def errors(pairs: list[Pair], verdicts: list[bool], limit: int = 3) -> dict[str, list[dict]]:
    """Up to ``limit`` misgraded pairs per category (the output's last 200 characters)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for pair, verdict in zip(pairs, verdicts, strict=True):
        key = f"{pair.source}/{pair.category}"
        if verdict != pair.correct and len(out[key]) < limit:
            row = {"gold": pair.gold, "output_tail": pair.output[-200:], "label": pair.correct}
            out[key].append(row | {"protocol": pair.protocol})
    return dict(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/eval"))
    p.add_argument("--gsm8k-records", type=int, default=400, help="GSM8K test records sampled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--qwen-dir", default=None, help="Qwen2.5-Math's evaluation/ folder")
    p.add_argument(
        "--pairs",
        choices=["generated", "heldout"],
        default="generated",
        help="generated: mobilellm_r1.eval.answer_pairs; heldout: grading_pairs_heldout.py",
    )
    p.add_argument("--out", default=None, help="default results/grading_accuracy[_heldout].json")
    args = p.parse_args()
    if args.out is None:
        args.out = str(
            RESULTS
            / ("grading_accuracy_heldout.json" if args.pairs == "heldout" else "grading_accuracy.json")
        )
    if args.pairs == "heldout":
        pairs = heldout_pairs(args.eval_dir, args.seed)
    else:
        pairs = labelled_pairs(load_records(Path(args.eval_dir), args.gsm8k_records, args.seed), args.seed)
    pairs, n_cut = cut_at_stop_strings(pairs)
    print(
        f"{len(pairs)} labelled pairs ({sum(x.correct for x in pairs)} correct), {n_cut} cut at stop strings"
    )
    graders: dict[str, Callable[[], list[bool]]] = {
        "ours": lambda: grade_ours(pairs, args.workers),
        "math_verify": lambda: grade_in_pool("math_verify", pairs, args.workers),
    }
    skipped = {}
    if args.qwen_dir:
        graders["qwen2.5_math"] = lambda: grade_in_pool("qwen", pairs, args.workers, args.qwen_dir)
    else:
        skipped["qwen2.5_math"] = "no --qwen-dir given (Qwen2.5-Math's grader is not on PyPI)"
    results, seconds, misgraded = {}, {}, {}
    for name, run in graders.items():
        start = time.perf_counter()
        verdicts = run()
        seconds[name] = round(time.perf_counter() - start, 1)
        results[name], misgraded[name] = tally(pairs, verdicts), errors(pairs, verdicts)
        print(f"{name}: {seconds[name]} s")
    print_table(results)
    for name, reason in skipped.items():
        print(f"{name}: skipped ({reason})")
    result = result_header("grading_accuracy", device="cpu") | {
        "config": vars(args)
        | {
            "pairs": len(pairs),
            "item_timeout_s": ITEM_TIMEOUT_S,
            "outputs_cut_at_stop_strings": n_cut,
            "stop_strings": {  # each output is cut at the first of these before grading
                f"{src}/{proto}": list(stop_strings(src, proto))
                for src, proto in sorted({(x.source, x.protocol) for x in pairs})
            },
        },
        "seconds": seconds,
        "summary": {name: res["all"] for name, res in results.items()},
        "per_category": results,
        "skipped": skipped,
        "misgraded_examples": misgraded,
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
