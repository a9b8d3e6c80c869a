"""Two-process code checking: wrong programs that forge a pass now fail (issue 17, finding 3).

Each attack is first run the old way, program and asserts in one process judged by its exit code
(that run passes: the attack works there), then through :func:`run_check` (it fails).
"""

from __future__ import annotations

import pytest

from mobilellm_r1.eval.code_check import VERDICT_MARKER, CodeCheck, check_program, run_check, run_checks
from mobilellm_r1.eval.plain_data import decode_plain, encode_plain
from mobilellm_r1.eval.sandbox import run_program

PROMPT = 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
WRONG = "    return a - b\n"
FORGED_VERDICT = f'\\n{VERDICT_MARKER}{{"passed": true, "message": ""}}\\n'
ATTACKS = {
    "sys_exit_at_import": WRONG + "import sys\nsys.exit(0)\n",
    "raise_system_exit": WRONG + "raise SystemExit\n",
    "os_exit_at_import": WRONG + "import os\nos._exit(0)\n",
    "atexit_os_exit": WRONG + "import atexit, os\natexit.register(os._exit, 0)\n",
    "exit_inside_call": "    import sys\n    sys.exit(0)\n",
    "always_true_eq": (
        "    class Anything:\n        def __eq__(self, other):\n            return True\n"
        "        __ne__ = lambda self, other: False\n    return Anything()\n"
    ),
    "int_subclass_eq": "    class I(int):\n        __eq__ = lambda self, other: True\n    return I(0)\n",
    "forged_verdict_on_every_fd": WRONG
    + (
        "import os\nfor fd in range(1, 64):\n    try:\n"
        f"        os.write(fd, b'{FORGED_VERDICT}')\n    except OSError:\n        pass\n"
    ),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_passed_by_exit_code_fails_now(name: str) -> None:
    completion = ATTACKS[name]
    old_style = PROMPT + completion + "\n" + TEST + "\ncheck(add)\n"
    if name != "forged_verdict_on_every_fd":  # that one targets the new protocol's verdict line
        assert run_program(old_style, timeout_s=5).status == "ok"  # the exit code said: passed
    res = run_check(CodeCheck(PROMPT + completion, TEST, "add", prelude=PROMPT), timeout_s=5)
    assert res.status == "error", res


def test_honest_program_passes_and_wrong_one_names_the_line() -> None:
    good = run_check(CodeCheck(PROMPT + "    return a + b\n", TEST, "add", prelude=PROMPT), timeout_s=5)
    assert good.status == "ok" and good.returncode == 0
    bad = run_check(CodeCheck(PROMPT + WRONG, TEST, "add", prelude=PROMPT), timeout_s=5)
    assert bad.status == "error" and "test.py line 2: AssertionError" in bad.stderr


def test_assert_lines_reach_objects_kept_in_the_program() -> None:
    """MBPP style: the program's class instances stay in its process, passed back as handles."""
    program = (
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
    )
    tests = "assert longest([Pair(1, 5), Pair(2, 3)]) == 4\nassert Pair(7, 9).b == 9\nassert math.isclose(longest([Pair(0, 1)]), 1)\n"
    assert check_program(program, tests, timeout_s=5).status == "ok"
    # a handle is not a value: comparing it fails instead of trusting its __eq__
    compare = check_program(program, "assert Pair(1, 2) == Pair(1, 2)\n", timeout_s=5)
    assert compare.status == "error" and "not a plain value" in compare.stderr


def test_program_cannot_take_over_checker_builtins() -> None:
    """Only builtin names the task itself redefines (from the reference) go to the program."""
    program = "def tuple(x):\n    return ()\ndef f(xs):\n    return xs[::-1]\n"
    assert check_program(program, "assert tuple(f([1, 2])) == tuple([1, 2])\n", timeout_s=5).status == "error"
    redefined = CodeCheck(
        "def sum(a, b):\n    return a * b\n", "assert sum(2, 3) == 6\n", builtin_names=("sum",)
    )
    assert run_check(redefined, timeout_s=5).status == "ok"


def test_timeout_and_many_checks_keep_order() -> None:
    checks = [
        CodeCheck("def f():\n    while True:\n        pass\n", "assert f() == 1\n"),
        CodeCheck("def f():\n    return 1\n", "assert f() == 1\n"),
        CodeCheck("def f(:\n", "assert f() == 1\n"),
    ]
    res = run_checks(checks, timeout_s=1, workers=2)
    assert [r.status for r in res] == ["timeout", "ok", "error"]
    assert "SyntaxError" in res[2].stderr


@pytest.mark.parametrize(
    "value",
    [None, True, -(2**100), 0.1, float("inf"), 1 - 2j, "é", b"\x00", [1, (2,)], {(1, 2): {3}}, frozenset()],
)
def test_plain_data_round_trip_keeps_exact_types(value: object) -> None:
    back = decode_plain(encode_plain(value))
    assert back == value and type(back) is type(value)


def test_plain_data_refuses_non_plain_and_malformed() -> None:
    class Sneaky(str):
        def __eq__(self, other: object) -> bool:
            return True

    for value in (Sneaky("x"), [object()], iter([1]), {1: print}):
        with pytest.raises(TypeError, match="is not plain data"):
            encode_plain(value)
    for text in ('["i", 3]', '["q"]', '["l", [["s", 1]]]', '["S", [["l", []]]]', '["r", 0]', "[" * 100000):
        with pytest.raises(ValueError, match="malformed"):
            decode_plain(text)
