"""LiveCodeBench task: loading and safe decoding, prompt, code extraction, sandboxed grading.

The fixture holds 4 hand-written problems in the exact ``livecodebench/code_generation_lite`` format:
two stdin problems (abc901_a, 2999A) and two functional LeetCode-style ones (3901, 3100); 2999A and 3100
carry base64(zlib(pickle(json))) private tests, 3100 is dated outside the v6 window.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import warnings
import zlib
from datetime import date
from pathlib import Path

import pytest

from mobilellm_r1.eval.lcb_check import record_tests
from mobilellm_r1.eval.livecodebench import (
    LCB_SYSTEM_PROMPT,
    V6_WINDOW,
    UnsafePickleError,
    build_check,
    decode_private_tests,
    extract_code,
    grade,
    lcb_messages,
    lcb_prompt,
    load_livecodebench,
    parse_check,
    release_files,
    stdout_matches,
    tokens_match,
    values_match,
)
from mobilellm_r1.eval.sandbox import run_many
from mobilellm_r1.tokenizer import SYSTEM_PROMPTS

FIXTURE = Path(__file__).parent / "fixtures" / "livecodebench_sample.jsonl"
IN_WINDOW = ["abc901_a", "2999A", "3901"]
ALL_IDS = [*IN_WINDOW, "3100"]

# Reference solutions (kept out of the fixture, as the dataset has none).
REFERENCE = {
    "abc901_a": (
        "n = int(input())\na = list(map(int, input().split()))\n"
        "print(max(a), min(a))\nprint(max(a) - min(a))\n"
    ),
    # sys.stdin.buffer, floats printed with repr (checked with the tolerance), exit() without -S's site
    "2999A": (
        "import sys\n\ndef main():\n    data = sys.stdin.buffer.read().split()\n    t, i = int(data[0]), 1\n"
        "    for _ in range(t):\n        n = int(data[i])\n"
        "        a = list(map(int, data[i + 1 : i + 1 + n]))\n        i += 1 + n\n"
        "        print(sum(a) / n)\n    exit()\n\nif __name__ == '__main__':\n    main()\n"
    ),
    "3901": (
        "class Solution:\n    def maxWindowSum(self, nums: List[int], k: int) -> int:\n"
        "        s = best = sum(nums[:k])\n        for i in range(k, len(nums)):\n"
        "            s += nums[i] - nums[i - k]\n            best = max(best, s)\n        return best\n"
    ),
    # returns tuples: compared as lists
    "3100": (
        "class Solution:\n    def pairsWithSum(self, nums: List[int], target: int) -> List[List[int]]:\n"
        "        n = len(nums)\n"
        "        return [(i, j) for i in range(n) for j in range(i + 1, n) if nums[i] + nums[j] == target]\n"
    ),
}
OPEN0_VARIANT = (  # open(0) reads file descriptor 0 directly
    "n, *a = map(int, open(0).read().split())\nprint(f'{max(a)} {min(a)}  ')\n\nprint(max(a) - min(a))\n\n"
)
OS_FD_VARIANT = (  # raw file-descriptor I/O
    "import os\ndata = b''\nwhile chunk := os.read(0, 4):\n    data += chunk\n"
    "n, *a = map(int, data.split())\n"
    "os.write(1, f'{max(a)} {min(a)}\\n{max(a) - min(a)}\\n'.encode())\n"
)


def fenced(code: str, lang: str = "python") -> str:
    return f"Let me think.\n\n```{lang}\n{code}```\n\nThis runs in O(n)."


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_livecodebench(FIXTURE, start_date=None, end_date=None)


@pytest.fixture(scope="module")
def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["question_id"]: r for r in records}


def encode_private(payload: object) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(payload))).decode()


# ----------------------------------------------------------------------------------------- loading


def test_load_window_and_decoding(records: list[dict]) -> None:
    assert V6_WINDOW == ("2024-08-01", "2025-05-01")
    assert [r["question_id"] for r in load_livecodebench(FIXTURE)] == IN_WINDOW  # the default v6 window
    assert [r["question_id"] for r in records] == ALL_IDS
    only_2025 = load_livecodebench(FIXTURE, start_date=date(2025, 1, 1), end_date=None)
    assert [r["question_id"] for r in only_2025] == ["2999A"]
    up_to = load_livecodebench(FIXTURE, start_date=None, end_date="2024-09-14")  # both ends inclusive
    assert [r["question_id"] for r in up_to] == ["abc901_a", "3100"]
    for r in records:
        assert len(r["public_test_cases"]) >= 1 and len(r["private_test_cases"]) == 3
        assert isinstance(r["metadata"], dict)
    p2 = records[1]
    assert {t["testtype"] for t in p2["private_test_cases"]} == {"stdin"}  # decoded from the pickle payload
    assert records[3]["metadata"] == {"func_name": "pairsWithSum"}
    assert records[3]["private_test_cases"][0]["testtype"] == "functional"


def test_load_directory_layouts(tmp_path: Path) -> None:
    data = tmp_path / "livecodebench"
    data.mkdir()
    shutil.copy(FIXTURE, data / "test6.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["question_id"] for r in load_livecodebench(tmp_path, release="v6")] == IN_WINDOW
    with pytest.warns(UserWarning, match=r"lacks \['test.jsonl'"):
        assert len(load_livecodebench(tmp_path)) == 3
    with pytest.raises(FileNotFoundError, match="none of the v1 files"):
        load_livecodebench(tmp_path, release="v1")
    custom = tmp_path / "custom"
    custom.mkdir()
    shutil.copy(FIXTURE, custom / "my_export.jsonl")
    assert len(load_livecodebench(custom, start_date=None, end_date=None)) == 4
    with pytest.raises(FileNotFoundError, match=r"livecodebench.*jsonl file path"):
        load_livecodebench(tmp_path / "nowhere")


def test_release_files() -> None:
    assert release_files("release_v6") == ["test.jsonl", *(f"test{i}.jsonl" for i in range(2, 7))]
    assert release_files("release_v1") == ["test.jsonl"]
    assert release_files("v6") == ["test6.jsonl"]
    assert release_files("v5_v6") == ["test5.jsonl", "test6.jsonl"]
    assert release_files("release_latest") == release_files("release_v6")
    for bad in ("release_v7", "v0", "v3_v2", "latest"):
        with pytest.raises(ValueError, match="unknown LiveCodeBench release"):
            release_files(bad)


def test_hub_failure_says_where_to_put_files() -> None:
    with pytest.raises(RuntimeError, match=r"put them in <data dir>/livecodebench/"):
        load_livecodebench(hub_id="no-such-org/no-such-lcb-dataset", release="v6")


def test_duplicate_ids_and_bad_tests_rejected(tmp_path: Path) -> None:
    line = FIXTURE.read_text().splitlines()[0]
    path = tmp_path / "dup.jsonl"
    path.write_text(line + "\n" + line + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_livecodebench(path)
    row = json.loads(line)
    row["public_test_cases"] = json.dumps([{"input": "1", "output": 2, "testtype": "stdin"}])
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="public_test_cases: test 0"):
        load_livecodebench(path)


# ----------------------------------------------------------------------------------- private tests


def test_decode_private_tests_formats() -> None:
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_private_tests(json.dumps(tests)) == tests
    assert decode_private_tests(encode_private(json.dumps(tests))) == tests
    assert decode_private_tests(encode_private(json.dumps(tests).encode())) == tests
    assert decode_private_tests(encode_private(tests)) == tests  # already-decoded plain data is fine too
    assert decode_private_tests("") == [] and decode_private_tests(None) == []
    with pytest.raises(ValueError, match="neither a JSON list nor base64"):
        decode_private_tests("this is !! not base64")


class _Payload:
    """Pickles to a call of ``func(*args)`` on load, as a malicious dataset file could."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for evil in (_Payload(os.system, f"touch {marker}"), _Payload(os.mkdir, str(marker))):
        blob = encode_private(evil)
        with pytest.raises(
            UnsafePickleError, match=r"refusing to unpickle global (posix|os)\.(system|mkdir)"
        ):
            decode_private_tests(blob)
    assert not marker.exists()
    # also through the loader, naming the problem
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    row["private_test_cases"] = encode_private(_Payload(eval, "1 + 1"))
    path = tmp_path / "evil.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(
        UnsafePickleError, match=r"problem abc901_a: refusing to unpickle global builtins\.eval"
    ):
        load_livecodebench(path)


# ------------------------------------------------------------------------------ prompt and extraction


def test_prompt_formats(by_id: dict[str, dict]) -> None:
    stdin_prompt = lcb_prompt(by_id["abc901_a"])
    assert stdin_prompt.startswith("### Question:\nYou are given N integers")
    assert "### Format: Read the inputs from stdin solve the problem" in stdin_prompt
    assert "```python\n# YOUR CODE HERE\n```" in stdin_prompt
    assert stdin_prompt.endswith("### Answer: (use the provided format with backticks)\n\n")
    functional = lcb_prompt(by_id["3901"])
    assert "### Format: You will use the following starter code" in functional
    assert f"```python\n{by_id['3901']['starter_code']}\n```" in functional
    messages = lcb_messages(by_id["3901"])
    assert messages == [
        {"role": "system", "content": SYSTEM_PROMPTS["python"]},
        {"role": "user", "content": functional},
    ]
    assert lcb_messages(by_id["3901"], system=LCB_SYSTEM_PROMPT)[0]["content"].startswith("You are an expert")
    assert lcb_messages(by_id["3901"], system=None) == [{"role": "user", "content": functional}]


def test_extract_code() -> None:
    two = "```python\nfirst()\n```\ntext\n```py\nsecond()\n```\n```\nplain()\n```"
    assert extract_code(two) == "second()\n"
    assert extract_code("```\nplain()\n```\n```text\nother()\n```") == "other()\n"
    assert extract_code("no code at all") == ""
    assert extract_code("```python\n\n```") == ""
    assert extract_code("<think>```python\ndraft()\n```</think>\nfinal answer, no code") == ""
    assert extract_code("<think>```python\ndraft()\n```</think>```Python\nfinal()\n```") == "final()\n"


# ----------------------------------------------------------------------------------- output matching


def test_stdout_matching_rules() -> None:
    assert stdout_matches("7 1 \n6\n\n", "7 1\n6") is None
    assert stdout_matches("  7   1\n6", "7 1\n6") is None  # token-wise
    assert stdout_matches("1.5\n2", "1.5000000000\n2.0000000000") is None
    assert stdout_matches("0.3333333", "0.3333333333") is None  # within 1e-6
    assert "line 1" in (stdout_matches("0.334", "0.3333333333") or "")
    assert "2 output lines, expected 1" in (stdout_matches("1\n2", "1") or "")
    assert stdout_matches("Yes", "YES") is not None
    assert tokens_match("1e18", "1000000000000000000")
    assert not tokens_match("1000000000000000001", "1000000000000000000")  # integers exactly, not as floats
    assert not tokens_match("1e999999999", "1")


def test_values_matching_rules() -> None:
    assert values_match((1, (2, 3)), [1, [2, 3]])
    assert values_match({"a": [1.0000000001]}, {"a": [1]})
    assert not values_match([1, 2], [1, 2, 3])
    assert not values_match(2, 3) and not values_match("a", ["a"])
    assert values_match(None, None) and not values_match(None, 0)


# -------------------------------------------------------------------------------------------- grading


def test_reference_solutions_pass(records: list[dict]) -> None:
    completions = {r["question_id"]: [fenced(REFERENCE[r["question_id"]])] for r in records}
    completions["abc901_a"].append(fenced(OPEN0_VARIANT, lang="py"))
    completions["abc901_a"].append(fenced(OS_FD_VARIANT, lang="python3"))
    completions["abc901_a"].append("```\n" + REFERENCE["abc901_a"] + "```")  # unlabelled fence
    summary, results = grade(records, completions, workers=4, timeout_s=2.0)
    assert [(r["id"], r["status"]) for r in results if not r["passed"]] == []
    assert summary["pass@1"] == 1.0 and summary["n_problems"] == 4 and summary["n_samples"] == 1
    assert all(r["n_passed"] == r["n_tests"] == 5 - (r["id"] == "2999A") for r in results)


WRONG: dict[str, list[tuple[str, str]]] = {
    "abc901_a": [
        (
            "wrong_answer",
            "input()\na = list(map(int, input().split()))\nprint(max(a))\nprint(max(a) - min(a))\n",
        ),
        ("runtime_error", "n = int(input())\nprint(undefined_name)\n"),
        ("runtime_error", "print(7, 1)\nprint(6)\nexit(3)\n"),  # right output on test 0 but exit status 3
        ("timeout", "while True:\n    pass\n"),
    ],
    "2999A": [
        ("wrong_answer", "import sys\nd = sys.stdin.read().split()\nprint(d[2])\nprint(d[5])\n"),
        ("compile_error", "def broken(:\n    pass\n"),
        # swallows the harness's per-test alarm: the sandbox's whole-run limit ends it
        (
            "timeout",
            "while True:\n    try:\n        while True:\n            pass\n"
            "    except BaseException:\n        pass\n",
        ),
    ],
    "3901": [
        ("wrong_answer", "class Solution:\n    def maxWindowSum(self, nums, k):\n        return max(nums)\n"),
        (
            "runtime_error",
            "class Solution:\n    def maxWindowSum(self, nums, k):\n        return nums[k * 100]\n",
        ),
        (
            "timeout",
            "class Solution:\n    def maxWindowSum(self, nums, k):\n"
            "        while True:\n            k += 1\n",
        ),
        ("runtime_error", "def maxWindowSum(nums, k):\n    return 0\n"),  # no class Solution
    ],
    "3100": [
        ("wrong_answer", "class Solution:\n    def pairsWithSum(self, nums, target):\n        return []\n"),
        (
            "runtime_error",
            "import os\nclass Solution:\n    def pairsWithSum(self, nums, target):\n        os._exit(0)\n",
        ),
    ],
}


def test_wrong_solutions_fail_with_their_status(records: list[dict]) -> None:
    completions = {
        qid: [fenced(REFERENCE[qid]), *(fenced(code) for _, code in WRONG[qid]), "I could not solve it."]
        for qid in ALL_IDS
    }
    summary, results = grade(records, completions, workers=4, timeout_s=0.5)
    got = {qid: [r["status"] for r in results if r["id"] == qid] for qid in ALL_IDS}
    assert got == {qid: ["passed", *(s for s, _ in WRONG[qid]), "no_code"] for qid in ALL_IDS}
    by_key = {(r["id"], r["sample"]): r for r in results}
    assert "exit status 3" in by_key["abc901_a", 3]["message"]
    assert "NameError" in by_key["abc901_a", 2]["message"]
    assert (
        "line 1" in by_key["abc901_a", 1]["message"] and "expected '7 1'" in by_key["abc901_a", 1]["message"]
    )
    assert "no class Solution" in by_key["3901", 4]["message"]
    assert "no fenced code block" in by_key["3100", 3]["message"]
    assert by_key["3100", 1]["n_passed"] == 0 and by_key["3100", 1]["n_tests"] == 5
    # pass@k over problems with n = 6, 5, 6, 4 samples and one correct each
    n = {qid: len(WRONG[qid]) + 2 for qid in ALL_IDS}
    assert summary["n_samples"] == min(n.values()) == 4
    assert summary["pass@1"] == pytest.approx(sum(1 / v for v in n.values()) / 4)
    assert summary["pass@4"] == pytest.approx(sum(1 - (v - 4) / v for v in n.values()) / 4)
    assert summary["pass@1_se"] > 0


def test_grade_requires_matching_ids(records: list[dict]) -> None:
    with pytest.raises(ValueError, match="1 records without completions"):
        grade(records, {qid: ["x"] for qid in ALL_IDS[:3]})
    with pytest.raises(ValueError, match="1 completion ids without a record"):
        grade(records, {**{qid: ["x"] for qid in ALL_IDS}, "9999": ["x"]})


def test_build_check_is_one_job_per_sample(by_id: dict[str, dict]) -> None:
    job = build_check(by_id["3901"], REFERENCE["3901"], timeout_s=1.0)
    assert "mobilellm_r1" not in job.source  # the harness is self-contained
    payload = json.loads(job.stdin)
    assert payload["func_name"] == "maxWindowSum" and len(payload["tests"]) == 5
    # only the test inputs enter the sandbox, never the expected outputs (issue 17)
    assert payload["tests"] == [t["input"] for t in record_tests(by_id["3901"])]
    assert job.timeout_s == pytest.approx(1.0 * 6 + 1.0)
    [result] = run_many([job])
    assert result.status == "ok" and parse_check(result, by_id["3901"])["passed"]


# -------------------------------------------------------------- forged passes (issue 17, finding 3)

FORGED_SUMMARY = '\\n@@LCB-HARNESS-RESULT@@{"status": "passed", "passed": 5, "total": 5, "message": ""}\\n'
ATTACKS = {
    # the old harness held every test's expected output in its memory
    "read_expected_outputs": (
        "import gc, sys\ndata = sys.stdin.read()\nfor o in gc.get_objects():\n"
        "    for t in (o if isinstance(o, list) else ()):\n"
        "        if isinstance(t, dict) and t.get('input') == data and isinstance(t.get('output'), str):\n"
        "            print(t['output'])\n            sys.exit()\n"
    ),
    # the old harness's frames held its reporting function
    "frame_walking": (
        "import sys\nf = sys._getframe()\nwhile f is not None:\n"
        "    for name in ('_report', '_frame'):\n"
        "        if name in f.f_globals:\n"
        "            f.f_globals[name](*(('passed', 5) if name == '_report' else (0, 'ok')), **{})\n"
        "    f = f.f_back\n"
    ),
    "forged_summary_on_inherited_fds": (
        "import os\nfor fd in range(1, 64):\n    try:\n"
        f"        os.write(fd, b'{FORGED_SUMMARY}')\n    except OSError:\n        pass\nos._exit(0)\n"
    ),
}
ALWAYS_EQUAL = (
    "class Anything(int):\n    def __eq__(self, other):\n        return True\n"
    "class Solution:\n    def maxWindowSum(self, nums, k):\n        return Anything(0)\n"
)


def test_forged_passes_fail(records: list[dict]) -> None:
    completions = {qid: ["I could not solve it."] for qid in ALL_IDS}
    completions["abc901_a"] = [fenced(code) for code in ATTACKS.values()]
    completions["3901"] = [fenced(ALWAYS_EQUAL)]
    _, results = grade(records, completions, workers=2, timeout_s=2.0)
    assert not any(r["passed"] for r in results)
    statuses = [r["status"] for r in results if r["id"] in ("abc901_a", "3901")]
    assert statuses == ["wrong_answer", "wrong_answer", "runtime_error", "wrong_answer"]
    [always_equal] = [r for r in results if r["id"] == "3901"]
    assert "not plain data" in always_equal["message"]
