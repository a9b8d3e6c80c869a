"""Tests for the embedded synthetic corpus (`mobilellm_r1.data.synth`), on a small config.

Answers are re-derived here independently of the generator: arithmetic expressions with an
`ast`-based Fraction evaluator, linear equations and 2x2 systems with Cramer's rule; code is
executed in a subprocess.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import operator
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from mobilellm_r1.data.synth import SynthConfig, generate

SMALL = SynthConfig(
    seed=7, math_docs=100, code_docs=60, knowledge_docs=80, noise_docs=60, sft_general=40, sft_reasoning=40,
    probe_per_domain=10, eval_math=20, eval_code=12, eval_knowledge=20, n_entities=60,
)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The small corpus and its manifest."""
    out = tmp_path_factory.mktemp("synth_a")
    return out, generate(SMALL, out)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ independent re-derivation
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def eval_expr(source: str) -> Fraction:
    """Exact value of an arithmetic expression of integers with + - * / and brackets."""

    def ev(node: ast.AST) -> Fraction:
        """Evaluate one node."""
        if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
            return BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(source, mode="eval").body)


def solve_structured(s: dict[str, Any]) -> Fraction:
    """The answer of a structured problem, computed from scratch."""
    if s["type"] == "expr":
        return eval_expr(s["expr"])
    if s["type"] == "linear":
        a, b = map(Fraction, s["lhs"])
        c, d = map(Fraction, s["rhs"])
        x = (d - b) / (a - c)
        assert a * x + b == c * x + d
        return x
    assert s["type"] == "system"
    (a1, b1, c1), (a2, b2, c2) = ([Fraction(v) for v in row] for row in s["rows"])
    det = a1 * b2 - a2 * b1
    x, y = (c1 * b2 - c2 * b1) / det, (a1 * c2 - a2 * c1) / det
    assert a1 * x + b1 * y == c1 and a2 * x + b2 * y == c2
    p, q = map(Fraction, s["target"])
    return p * x + q * y


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` (balanced braces)."""
    out, start = [], 0
    while (i := text.find("\\boxed{", start)) >= 0:
        depth, j = 1, i + len("\\boxed{")
        while depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        out.append(text[i + len("\\boxed{") : j - 1])
        start = j
    return out


def parse_tex_number(text: str) -> Fraction:
    """`12`, `-3`, `\\frac{7}{4}` or `-\\frac{7}{4}` as a Fraction."""
    if re.fullmatch(r"-?\d+", text):
        return Fraction(int(text))
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", text)
    assert m, text
    return Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)


# ------------------------------------------------------------------------------ determinism
def test_same_seed_is_byte_identical(corpus: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, manifest = corpus
    again = generate(SMALL, tmp_path)
    assert again == manifest
    assert (tmp_path / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    gz = (out / "eval/humaneval/HumanEval.jsonl.gz").read_bytes()
    assert gz[4:8] == b"\0\0\0\0" and not gz[3] & 0x08  # mtime 0, no file name in the header


def test_same_seed_across_processes(corpus: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Independent of string-hash randomisation: a fresh interpreter with another PYTHONHASHSEED."""
    _, manifest = corpus
    code = (
        "import json, sys; from pathlib import Path; from mobilellm_r1.data.synth import SynthConfig, generate; "
        "print(json.dumps(generate(SynthConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(SMALL.to_dict()), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == manifest


def test_different_seed_differs(corpus: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, manifest = corpus
    other = generate(SynthConfig(**{**SMALL.to_dict(), "seed": 8}), tmp_path)
    assert other["files"].keys() == manifest["files"].keys()
    for path, info in manifest["files"].items():
        assert other["files"][path]["sha256"] != info["sha256"], path


def test_manifest_matches_files_and_config(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = corpus
    files = manifest["files"]
    assert manifest["config"] == SMALL.to_dict()
    expected = {"pretrain/math.jsonl": 100, "pretrain/code.jsonl": 60, "pretrain/knowledge.jsonl": 80,
                "sft/general.jsonl": 40, "sft/reasoning.jsonl": 40, "probe/math.jsonl": 10, "eval/gsm8k/test.jsonl": 20,
                "eval/math500/test.jsonl": 20, "eval/humaneval/HumanEval.jsonl.gz": 12,
                "eval/mmlu/dev/synthetic_world_dev.csv": 5, "eval/mmlu/val/synthetic_world_val.csv": 4,
                "eval/mmlu/test/synthetic_world_test.csv": 16}  # fmt: skip
    for path, count in expected.items():
        assert files[path]["records"] == count, path
    assert sum(files[p]["records"] for p in files if "noise_" in p) == 60
    import hashlib

    for path, info in files.items():
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == info["sha256"]
    assert not list(out.rglob("*.tmp"))


def test_scaled_config() -> None:
    half = SynthConfig().scaled(0.5)
    assert (half.math_docs, half.code_docs, half.eval_math, half.seed) == (1000, 500, 100, 0)
    tiny = SynthConfig(seed=3).scaled(0.001)
    assert (tiny.math_docs, tiny.code_docs, tiny.n_entities, tiny.seed) == (2, 1, 30, 3)
    with pytest.raises(ValueError):
        SynthConfig().scaled(0)


# ------------------------------------------------------------------------------------- code
RUNNER = r"""
import contextlib, io, json, sys
results = []
for program in json.load(sys.stdin):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(program, "<sample>", "exec"), {"__name__": "__main__"})
        results.append("ok")
    except BaseException as exc:  # noqa: BLE001
        results.append(type(exc).__name__)
print(json.dumps(results))
"""


def run_programs(programs: list[str]) -> list[str]:
    """Execute each program in a fresh namespace in one subprocess; "ok" or the exception name."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(programs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def python_block(text: str) -> str:
    """The first ```python block of a message."""
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m, text
    return m.group(1)


def test_code_samples_pass_and_mutations_fail(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, _ = corpus
    good = [r["text"] for r in read_jsonl(out / "pretrain/code.jsonl")]
    good += [r["text"] for r in read_jsonl(out / "probe/code.jsonl")]
    with gzip.open(out / "eval/humaneval/HumanEval.jsonl.gz", "rt") as f:
        he = [json.loads(line) for line in f]
    check = "\ncheck({})\n"
    good += [r["prompt"] + r["canonical_solution"] + r["test"] + check.format(r["entry_point"]) for r in he]
    sft_code = [r for r in read_jsonl(out / "sft/reasoning.jsonl") if r["meta"]["domain"] == "code"]
    assert sft_code
    good += [
        python_block(r["messages"][-1]["content"])
        + r["meta"]["test"]
        + check.format(r["meta"]["entry_point"])
        for r in sft_code
    ]
    bad = [r["prompt"] + "    return None\n" + r["test"] + check.format(r["entry_point"]) for r in he]
    swapped = [
        (r, o)
        for r, o in zip(he, he[1:] + he[:1], strict=True)
        if r["canonical_solution"] != o["canonical_solution"]
    ]
    bad += [
        r["prompt"] + o["canonical_solution"] + r["test"] + check.format(r["entry_point"]) for r, o in swapped
    ]
    broken = read_jsonl(out / "pretrain/noise_broken_code.jsonl")
    assert broken and all(r["tests_pass"] is False for r in broken)
    results = run_programs(good + bad + [r["text"] for r in broken])
    assert results[: len(good)] == ["ok"] * len(good)
    assert all(res != "ok" for res in results[len(good) : len(good) + len(bad)])
    assert results[len(good) + len(bad) :] == ["AssertionError"] * len(broken)


# ------------------------------------------------------------------------------------- math
def test_math_answers_recompute(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, _ = corpus
    records = read_jsonl(out / "pretrain/math.jsonl")
    assert {r["level"] for r in records} == {1, 2, 3, 4, 5}
    for r in records:
        value = solve_structured(r["structured"])
        assert value == Fraction(r["answer_value"]) == parse_tex_number(r["answer"])
        assert [parse_tex_number(b) for b in boxed_contents(r["text"])] == [value]
        assert r["question"] in r["text"]
    sft_math = [r for r in read_jsonl(out / "sft/reasoning.jsonl") if r["meta"]["domain"] == "math"]
    assert {r["meta"]["level"] for r in sft_math} == {1, 2, 3, 4, 5}
    for r in sft_math:
        value = solve_structured(r["meta"]["structured"])
        assert [parse_tex_number(b) for b in boxed_contents(r["messages"][-1]["content"])] == [value]


def test_wrong_math_noise_is_wrong(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, _ = corpus
    records = read_jsonl(out / "pretrain/noise_wrong_math.jsonl")
    assert records
    for r in records:
        truth = solve_structured(r["structured"])
        assert truth == Fraction(r["answer_value"])
        shown = [parse_tex_number(b) for b in boxed_contents(r["text"])]
        assert shown == [Fraction(r["boxed_value"])] and shown[0] != truth
        assert r["quality"] == "low"


def test_eval_math_formats_and_answers(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, _ = corpus
    gsm = read_jsonl(out / "eval/gsm8k/test.jsonl")
    side = read_jsonl(out / "eval/structured/gsm8k.jsonl")
    for r, s in zip(gsm, side, strict=True):
        assert list(r) == ["question", "answer"]
        final = r["answer"].splitlines()[-1]
        assert re.fullmatch(r"#### -?\d+", final)
        assert Fraction(int(final[5:])) == solve_structured(s["structured"])
        for expr, val in re.findall(r"<<([^=>]+)=([^>]+)>>", r["answer"]):
            assert eval_expr(expr) == Fraction(val)
    m500 = read_jsonl(out / "eval/math500/test.jsonl")
    side = read_jsonl(out / "eval/structured/math500.jsonl")
    assert {r["level"] for r in m500} == {1, 2, 3, 4, 5}
    for r, s in zip(m500, side, strict=True):
        assert list(r) == ["problem", "solution", "answer", "subject", "level", "unique_id"]
        assert isinstance(r["level"], int) and isinstance(r["subject"], str)
        assert re.fullmatch(r"test/[a-z_]+/\d+\.json", r["unique_id"])
        value = solve_structured(s["structured"])
        assert parse_tex_number(r["answer"]) == value
        assert boxed_contents(r["solution"]) == [r["answer"]]


# ------------------------------------------------------------------------ knowledge + formats
def test_humaneval_and_mmlu_formats(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = corpus
    n_eval = manifest["config"]["eval_knowledge"]
    with gzip.open(out / "eval/humaneval/HumanEval.jsonl.gz", "rt") as f:
        he = [json.loads(line) for line in f]
    for r in he:
        assert set(r) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
        assert f"def {r['entry_point']}(" in r["prompt"] and "def check(candidate):" in r["test"]
    side = read_jsonl(out / "eval/structured/mmlu.jsonl")
    rows_all = []
    for split, n in (("dev", 5), ("val", n_eval // 5), ("test", n_eval - n_eval // 5)):
        with open(out / f"eval/mmlu/{split}/synthetic_world_{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert len(rows) == n
        for row in rows:
            assert len(row) == 6 and row[5] in "ABCD" and len(set(row[1:5])) == 4
        rows_all += rows
    knowledge = [r["text"] for r in read_jsonl(out / "pretrain/knowledge.jsonl")]
    for row, s in zip(rows_all, side, strict=True):
        assert row[1 + "ABCD".index(row[5])] == s["answer"]
        # The held-out fact is taught somewhere in the training prose.
        assert any(s["entity"] in t and s["answer"] in t for t in knowledge), s


def test_no_eval_item_in_training(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = corpus
    train = [r["text"] for p in sorted(out.glob("pretrain/*.jsonl")) for r in read_jsonl(p)]
    train += [
        "\n".join(m["content"] for m in r["messages"])
        for p in sorted(out.glob("sft/*.jsonl"))
        for r in read_jsonl(p)
    ]
    held = [r["question"] for r in read_jsonl(out / "eval/gsm8k/test.jsonl")]
    held += [r["problem"] for r in read_jsonl(out / "eval/math500/test.jsonl")]
    with gzip.open(out / "eval/humaneval/HumanEval.jsonl.gz", "rt") as f:
        held += [json.loads(line)["prompt"] for line in f]
    for split in ("dev", "val", "test"):
        with open(out / f"eval/mmlu/{split}/synthetic_world_{split}.csv", newline="") as f:
            held += [row[0] for row in csv.reader(f)]
    blob = "\x00".join(train)
    leaks = [q for q in held if q in blob]
    assert not leaks
    probes = {r["text"] for d in ("code", "math", "knowledge") for r in read_jsonl(out / f"probe/{d}.jsonl")}
    assert len(probes) == 3 * manifest["config"]["probe_per_domain"] and not probes & set(train)


def test_probe_and_noise_records(corpus: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = corpus
    for domain in ("code", "math", "knowledge"):
        for r in read_jsonl(out / f"probe/{domain}.jsonl"):
            assert list(r) == ["id", "domain", "text"] and r["domain"] == domain and r["text"]
    kinds = sorted(p.split("noise_")[1][:-6] for p in manifest["files"] if "noise_" in p)
    assert kinds == ["boilerplate", "broken_code", "gibberish", "shuffled", "spam", "wrong_math"]
    for kind in kinds:
        assert all(
            r["quality"] == "low" and r["noise_kind"] == kind
            for r in read_jsonl(out / f"pretrain/noise_{kind}.jsonl")
        )
    spam = read_jsonl(out / "pretrain/noise_spam.jsonl")
    assert len({r["cluster"] for r in spam}) < len(spam)  # near-duplicates share clusters
    for name in ("math", "code", "knowledge"):
        assert all(r["quality"] == "high" for r in read_jsonl(out / f"pretrain/{name}.jsonl"))
    for r in read_jsonl(out / "sft/general.jsonl") + read_jsonl(out / "sft/reasoning.jsonl"):
        roles = [m["role"] for m in r["messages"]]
        assert roles[-2:] == ["user", "assistant"] and set(roles) <= {"system", "user", "assistant"}
