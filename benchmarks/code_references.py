"""The code graders against the real HumanEval and MBPP sets: every reference solution must pass
and every stub must fail, in the same sandboxes an evaluation uses (`eval.code_tasks`).

  humaneval canonical : the 164 `canonical_solution`s                   -> all pass
  humaneval stubs     : `    pass` and `    return None` as each body    -> all fail
  mbpp reference      : the 500 test-split `code`s (test_setup_code after the code) -> all pass

The tests (tests/eval/test_code_tasks.py) run a fixed eighth of each; this script runs all of
them (~6 min on 2 CPU cores) and exits 1 if any task is graded against its label.

    python benchmarks/code_references.py --data-dir ../shared/data/eval

Writes results/code_references_<date>.json (per set: tasks, graded as expected, the ids that were not,
seconds) and prints a table last.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mobilellm_r1.eval.code_tasks import (
    humaneval_program,
    load_humaneval,
    load_mbpp,
    mbpp_program,
    run_code_checks,
)
from provenance import dated_result, result_header, write_result

HERE = Path(__file__).resolve().parent


def sweep(name: str, tasks: list[dict], programs: list, expect_pass: bool, workers: int) -> dict:
    start = time.perf_counter()
    results = run_code_checks(programs, timeout_s=10, workers=workers)
    wrong = [t["task_id"] for t, r in zip(tasks, results, strict=True) if (r.status == "ok") != expect_pass]
    row = {
        "set": name,
        "tasks": len(tasks),
        "expected": "pass" if expect_pass else "fail",
        "as_expected": len(tasks) - len(wrong),
        "wrong_ids": wrong,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(row, flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data" / "eval")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    humaneval, mbpp = load_humaneval(args.data_dir), load_mbpp(args.data_dir)
    rows = [
        sweep(
            "humaneval canonical",
            humaneval,
            [humaneval_program(r, r["canonical_solution"]) for r in humaneval],
            True,
            args.workers,
        )
    ]
    for stub in ("    pass\n", "    return None\n"):
        programs = [humaneval_program(r, stub) for r in humaneval]
        rows.append(sweep(f"humaneval stub {stub.strip()!r}", humaneval, programs, False, args.workers))
    rows.append(sweep("mbpp reference", mbpp, [mbpp_program(r, r["code"]) for r in mbpp], True, args.workers))
    out = args.out or dated_result("code_references")
    write_result(
        {**result_header("code_references", device="cpu"), "workers": args.workers, "sets": rows}, out
    )
    print("\nset | tasks | as expected | seconds")
    for r in rows:
        print(f"{r['set']} (expected {r['expected']}) | {r['tasks']} | {r['as_expected']} | {r['seconds']}")
    return int(any(r["wrong_ids"] for r in rows))


if __name__ == "__main__":
    sys.exit(main())
