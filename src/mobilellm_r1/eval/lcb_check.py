"""LiveCodeBench checking: output matching and the sandboxed test harness (`livecodebench` grades
with these).

Tests, public then private, all must pass (a sample stops at its first failing test):

* ``testtype == "stdin"``: the program reads the test input on stdin (``input()``, ``sys.stdin``,
  ``sys.stdin.buffer``, ``open(0)`` and ``os.read(0, ...)`` all work: the harness redirects file
  descriptors 0 and 1 per test) and its stdout is compared with :func:`stdout_matches`: surrounding
  blank lines and each line's surrounding whitespace are ignored; lines that still differ are compared
  token by token, numbers by value (integers exactly, other numbers within a relative/absolute
  tolerance of :data:`FLOAT_TOL`; LiveCodeBench's own checker compares them as exact decimals, so this
  is more lenient only for non-integer numeric tokens, as problem statements with real outputs allow).
* ``testtype == "functional"``: the input is one JSON value per line (the arguments), the output a JSON
  value; the harness calls ``Solution().<metadata.func_name>(*args)`` and compares with
  :func:`values_match` (tuples count as lists, floats within :data:`FLOAT_TOL`).

Execution: one :mod:`~mobilellm_r1.eval.sandbox` process per sample runs a self-contained harness
(it imports nothing from this package) that executes the extracted code once per stdin test (fresh
globals each time) or defines it once for functional tests, with a per-test wall-clock limit of
``timeout_s`` (default 6 s, LiveCodeBench's) x :func:`~mobilellm_r1.eval.sandbox.calibrate`, and
reports each test after :data:`RESULT_MARKER`: its status (the harness stops at a runtime error or
timeout), the captured stdout, or the return value as :mod:`~mobilellm_r1.eval.plain_data`. The
code sees the usual competitive programming imports (:data:`SOLUTION_PRELUDE`), ``exit``/``quit``
(absent under ``python -S``), a recursion limit of 50,000 and no limit on int <-> str digits.

Trust: only the test *inputs* enter the sandbox. :func:`parse_check` compares the reported outputs
with the expected ones in the harness process, so a program that reads the harness's memory, walks
its frames or writes fake reports on its file descriptors can at most claim outputs, never a pass it
did not compute; a return value that is not plain data (e.g. an object whose ``__eq__`` is always
true) is a wrong answer.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from mobilellm_r1.eval.plain_data import decode_plain, encode_plain
from mobilellm_r1.eval.sandbox import ExecResult, Job, calibrate

DEFAULT_TIMEOUT_S = 6.0
FLOAT_TOL = 1e-6
RESULT_MARKER = "@@LCB-HARNESS-RESULT@@"

# Imports that LiveCodeBench-style judges make available to every solution (typing names for starter
# code annotations, and the usual competitive-programming modules).
SOLUTION_PRELUDE = (
    "from typing import *\n"
    "import bisect, collections, copy, functools, heapq, itertools, math, operator, random, re, "
    "string, sys\n"
    "from bisect import *\nfrom collections import *\nfrom functools import *\nfrom heapq import *\n"
    "from itertools import *\nfrom math import *\n"
)


def record_tests(record: Mapping[str, Any]) -> list[dict]:
    """Public then private test cases of a decoded record."""
    return [*record["public_test_cases"], *record["private_test_cases"]]


def is_functional(record: Mapping[str, Any]) -> bool:
    """Whether the record's tests call `Solution().<func_name>` (else they run a stdin program)."""
    tests = record_tests(record)
    return bool(tests) and tests[0]["testtype"] == "functional"


# ------------------------------------------------------------------------------------ output matching

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def tokens_match(got: str, want: str, tol: float = 1e-6) -> bool:
    """Whitespace-free tokens: equal strings, equal integers, or other numbers within ``tol`` (rel/abs)."""
    if got == want:
        return True
    if not (_NUMBER.fullmatch(got) and _NUMBER.fullmatch(want)):
        return False
    if _INTEGER.fullmatch(got) and _INTEGER.fullmatch(want):
        return int(got) == int(want)
    try:
        a, b = Decimal(got), Decimal(want)
        return a == b or abs(a - b) <= Decimal(repr(tol)) * max(Decimal(1), abs(b))
    except (ArithmeticError, InvalidOperation):  # e.g. exponents beyond the decimal context
        return False


def stdout_matches(got: str, want: str, tol: float = 1e-6) -> str | None:
    """None when ``got`` matches the expected stdout ``want``, else a short reason.

    Surrounding blank lines and each line's surrounding whitespace are ignored; differing lines are
    compared token by token with :func:`tokens_match`.
    """
    got_lines = [line.strip() for line in got.strip().split("\n")]
    want_lines = [line.strip() for line in want.strip().split("\n")]
    if len(got_lines) != len(want_lines):
        return f"{len(got_lines)} output lines, expected {len(want_lines)}"
    for i, (g, w) in enumerate(zip(got_lines, want_lines, strict=True)):
        if g == w:
            continue
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt) or not all(tokens_match(a, b, tol) for a, b in zip(gt, wt, strict=True)):
            return f"line {i + 1}: got {g[:60]!r}, expected {w[:60]!r}"
    return None


def values_match(got: Any, want: Any, tol: float = 1e-6) -> bool:
    """Functional-test equality: tuples count as lists, floats compare within ``tol`` (rel/abs)."""
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(values_match(a, b, tol) for a, b in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(values_match(got[k], want[k], tol) for k in want)
    numbers = (int, float)
    if (
        isinstance(got, numbers)
        and isinstance(want, numbers)
        and (isinstance(got, float) or isinstance(want, float))
    ):
        try:
            return got == want or abs(got - want) <= tol * max(1.0, abs(want))
        except OverflowError:
            return False
    try:
        return bool(got == want)
    except Exception:  # an exotic return value whose == raises
        return False


# ------------------------------------------------------------------------------------------- harness

_HARNESS_MAIN = r'''
_cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
_real_out = os.dup(1)
_inputs = _cfg["tests"]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large output -> OSError in the program, not a kill


class _TestTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _TestTimeout


def _frame(i, status, message="", **result):
    record = {"i": i, "status": status, "message": message[:400], **result}
    data = ("\n" + _MARKER + json.dumps(record) + "\n").encode()
    while data:
        data = data[os.write(_real_out, data):]
    if status != "ok":
        os._exit(0)


def _onto(fd, target):
    # the program may have closed fd 0 or 1 (open(0) objects close it when collected): then os.open
    # can return ``target`` itself, which must be kept, not closed
    if fd != target:
        os.dup2(fd, target)
        os.close(fd)


def _redirect(stdin_text):
    with open("lcb_stdin.txt", "wb") as f:
        f.write(stdin_text.encode("utf-8"))
    _onto(os.open("lcb_stdin.txt", os.O_RDONLY), 0)
    _onto(os.open("lcb_stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "wb", closefd=False)), encoding="utf-8")


def _captured():
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    with open("lcb_stdout.txt", "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def _describe(exc):
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable>"
    return "%s: %s" % (type(exc).__name__, text[:200])


def _guarded(fn):
    """(failure status or None, message, value) of fn() under the per-test wall-clock alarm."""
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, _cfg["test_timeout_s"])
            value = fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TestTimeout:
        return "timeout", "time limit exceeded", None
    except SystemExit as exc:
        if exc.code in (None, 0):
            return None, "", None
        return "runtime_error", "exit status %r" % (exc.code,), None
    except BaseException as exc:
        return "runtime_error", _describe(exc), None
    return None, "", value


def _namespace(name):
    ns = {"__name__": name, "__builtins__": builtins}
    exec(_prelude, ns)
    return ns


signal.signal(signal.SIGALRM, _alarm)
if not hasattr(builtins, "exit"):
    builtins.exit = builtins.quit = sys.exit
sys.setrecursionlimit(50000)
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)
_prelude = compile(_cfg["prelude"], "prelude.py", "exec")
try:
    _code = compile(_cfg["code"], "solution.py", "exec")
except BaseException as exc:
    _frame(0, "compile_error", _describe(exc))

if _cfg["func_name"] is None:
    for _i, _input in enumerate(_inputs):
        _redirect(_input)
        _ns = _namespace("__main__")
        _status, _msg, _ = _guarded(lambda: exec(_code, _ns))
        _out = _captured()
        _frame(_i, _status or "ok", "test %d: %s" % (_i, _msg), out=_out)
else:
    _redirect("")
    _ns = _namespace("solution")
    _status, _msg, _ = _guarded(lambda: exec(_code, _ns))
    if _status:
        _frame(0, _status, "defining the solution: " + _msg)
    if not isinstance(_ns.get("Solution"), type):
        _frame(0, "runtime_error", "the code defines no class Solution")
    for _i, _input in enumerate(_inputs):
        try:
            _args = [json.loads(line) for line in _input.split("\n") if line.strip()]
        except ValueError as exc:
            _frame(_i, "harness_error", "test %d: bad test data: %s" % (_i, exc))
        _redirect("")
        _status, _msg, _got = _guarded(lambda: getattr(_ns["Solution"](), _cfg["func_name"])(*_args))
        if _status:
            _frame(_i, _status, "test %d: %s" % (_i, _msg))
        try:
            _value = encode_plain(_got)
        except (TypeError, ValueError) as exc:
            _frame(_i, "wrong_answer", "test %d: returned %s" % (_i, _describe(exc)))
        _frame(_i, "ok", value=_value)
'''


@functools.cache
def _harness_source() -> str:
    """The program run in the sandbox: stdlib imports, :func:`encode_plain`, the test driver."""
    header = (
        "from __future__ import annotations\n"
        "import builtins, io, json, os, signal, sys\n"
        f"_MARKER = {RESULT_MARKER!r}\n"
    )
    return header + "\n\n" + inspect.getsource(encode_plain) + "\n" + _HARNESS_MAIN


def build_check(
    record: Mapping[str, Any],
    code: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = 2048,
    max_file_mb: int = 64,
) -> Job:
    """One sandbox :class:`~mobilellm_r1.eval.sandbox.Job` running ``code`` on all of ``record``'s test inputs.

    The harness program is the job's source; the code and the test *inputs* travel on its stdin as
    JSON. The expected outputs never enter the sandbox: :func:`parse_check` compares outside.
    ``timeout_s`` limits each test (scaled by :func:`~mobilellm_r1.eval.sandbox.calibrate` inside the
    harness); the job as a whole gets ``timeout_s`` x (tests + 1) + 1 s (scaled by the sandbox).
    ``max_file_mb`` bounds the per-test stdin / stdout files the harness writes, and what it reports.
    """
    tests = record_tests(record)
    func_name = record["metadata"].get("func_name") if is_functional(record) else None
    payload = {
        "code": code,
        "prelude": SOLUTION_PRELUDE,
        "func_name": func_name,
        "tests": [t["input"] for t in tests],
        "test_timeout_s": timeout_s * calibrate(),
    }
    return Job(
        source=_harness_source(),
        timeout_s=timeout_s * (len(tests) + 1) + 1.0,
        stdin=json.dumps(payload),
        memory_mb=memory_mb,
        max_file_mb=max_file_mb,
        disk_mb=2 * max_file_mb + 16,
        output_limit=max_file_mb << 20,
    )


def _frames(stdout: str) -> dict[int, dict]:
    """The harness's per-test reports (the first one for each test index)."""
    frames: dict[int, dict] = {}
    for line in stdout.splitlines():
        if not line.startswith(RESULT_MARKER):
            continue
        try:
            frame = json.loads(line[len(RESULT_MARKER) :])
        except ValueError:
            continue
        if isinstance(frame, dict) and type(frame.get("i")) is int:
            frames.setdefault(frame["i"], frame)
    return frames


def _judge(frame: dict, test: Mapping[str, Any], i: int, functional: bool) -> tuple[str, str]:
    """(status, message) of one test from the harness's report: the comparison happens here."""
    status = frame.get("status")
    if status != "ok":
        known = status in ("wrong_answer", "runtime_error", "timeout", "compile_error", "harness_error")
        return (status if known else "runtime_error"), str(frame.get("message", ""))
    if not functional:
        bad = stdout_matches(str(frame.get("out", "")), test["output"], FLOAT_TOL)
        return ("wrong_answer", f"test {i}: {bad}") if bad else ("passed", "")
    try:
        want = json.loads(test["output"])
    except ValueError as exc:
        return "harness_error", f"test {i}: bad test data: {exc}"
    try:
        got = decode_plain(str(frame.get("value")))
    except ValueError as exc:
        return "runtime_error", f"test {i}: {exc}"
    if values_match(got, want, FLOAT_TOL):
        return "passed", ""
    return "wrong_answer", f"test {i}: got {repr(got)[:60]}, expected {test['output'][:60]}"


def parse_check(result: ExecResult, record: Mapping[str, Any]) -> dict[str, Any]:
    """Grade a harness run against ``record``'s expected outputs: ``{passed, status, n_passed, n_tests,
    message}``.

    ``status`` is one of "passed", "wrong_answer", "runtime_error", "timeout", "compile_error"; a test
    the harness did not report on (killed by the sandbox, out of memory, os._exit) is "timeout" when
    the sandbox timed the run out, else "runtime_error", with the tail of its stderr as message.
    """
    tests, frames, functional = record_tests(record), _frames(result.stdout), is_functional(record)
    for i, test in enumerate(tests):
        if i not in frames:
            status = "timeout" if result.status == "timeout" else "runtime_error"
            tail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
            message = f"sandbox status {result.status}" + (f": {tail[0][:200]}" if tail else "")
            return _verdict(status, i, len(tests), message)
        status, message = _judge(frames[i], test, i, functional)
        if status != "passed":
            return _verdict(status, i, len(tests), message)
    return _verdict("passed", len(tests), len(tests), "")


def _verdict(status: str, n_passed: int, n_tests: int, message: str) -> dict:
    """One sample's grading record (``passed`` iff every test passed)."""
    return {
        "passed": status == "passed",
        "status": status,
        "n_passed": n_passed,
        "n_tests": n_tests,
        "message": message,
    }
