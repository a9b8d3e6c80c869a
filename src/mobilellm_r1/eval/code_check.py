"""Code checking in two sandboxes: the candidate program in one, the test code that judges it in another.

A verdict that the candidate's own process computes (its exit code, a line it prints, a flag in its
memory) can be forged by the candidate: it can exit early, raise ``SystemExit``, call ``os._exit`` from
``atexit``, reach the harness's frames and file descriptors, or return an object whose ``__eq__`` is
always true. So a :class:`CodeCheck` runs as two :mod:`~mobilellm_r1.eval.sandbox` processes with
separate PID, mount, IPC and network namespaces, joined only by two pipes the harness creates:

* the candidate process (C) executes the program (as ``__main__``), then any ``setup`` code, then serves
  requests: call a name of its namespace (or an object it returned earlier) with given arguments, or
  read an attribute. A result goes back as :mod:`~mobilellm_r1.eval.plain_data` (exact builtin types);
  any other object stays in C and goes back as a handle, usable only as a later call's target or
  argument. An exception in C, ``sys.exit`` included, makes that request fail; C's exit code is ignored.
* the checker process (T) runs the test code (dataset content: also sandboxed) with the candidate's
  names bound to :class:`Remote` stand-ins that forward calls to C. Values compared in T are plain data
  rebuilt by T itself; a handle refuses ``==``, ``bool``, iteration and arithmetic. T's verdict is the
  last :data:`VERDICT_MARKER` line on T's own stdout, which C cannot reach.

Test code forms: HumanEval (``entry_point`` set): T executes the prompt (its helper functions, and the
entry point's signature with only a docstring), then the test code, then ``check(<remote entry point>)``.
Assert lines (MBPP, ``entry_point`` None): T executes the test code with every free name that is not a
builtin (nor a standard-library module used as ``module.attr``, e.g. ``math.isclose``, which T imports
itself) bound to the candidate's object of that name (see :attr:`CodeCheck.builtin_names` for the
builtin names a task redefines).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from dataclasses import dataclass

from mobilellm_r1.eval.plain_data import decode_plain, encode_plain
from mobilellm_r1.eval.sandbox import ExecResult, Job, finish, parallel, start

VERDICT_MARKER = "@@CODE-CHECK-VERDICT@@"
MESSAGE_LIMIT = 16 * 1024 * 1024

_COMMON = r"""
import ast, builtins, json, os, sys
_cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
_rin = os.fdopen(_cfg["fds"][0], "rb")
_wfd = _cfg["fds"][1]
_LIMIT = _cfg["limit"]


def _send(message):
    data = (json.dumps(message) + "\n").encode("utf-8")
    while data:
        data = data[os.write(_wfd, data):]


def _receive():
    line = _rin.readline(_LIMIT + 1)
    if not line.endswith(b"\n"):
        return None
    return json.loads(line)


def _describe(exc):
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable>"
    return "%s: %s" % (type(exc).__name__, text[:300])
"""

_CANDIDATE_MAIN = r"""
_objects = []
_ns = {"__name__": "__main__", "__builtins__": builtins}


def _handle(value):
    _objects.append(value)
    return {"r": len(_objects) - 1}


def _resolve(target):
    if "r" in target:
        return _objects[target["r"]]
    try:
        return _ns[target["g"]]
    except KeyError:
        raise NameError("name %r is not defined" % target["g"]) from None


def _answer(request):
    op = request["op"]
    if op == "ready":
        return None
    obj = _resolve(request["target"])
    if op == "getattr":
        return getattr(obj, request["name"])
    args = decode_plain(request["args"], ref=_resolve)
    kwargs = decode_plain(request["kwargs"], ref=_resolve)
    return obj(*args, **kwargs)


try:
    exec(compile(_cfg["program"], "solution.py", "exec"), _ns)
    if _cfg["setup"]:
        exec(compile(_cfg["setup"], "setup.py", "exec"), _ns)
    _failure = None
except BaseException as exc:
    _failure = "the program failed: " + _describe(exc)
while (_request := _receive()) is not None:
    try:
        if _failure:
            raise RuntimeError(_failure)
        _reply = {"value": encode_plain(_answer(_request), ref=_handle)}
    except BaseException as exc:
        _reply = {"error": _describe(exc)}
    _send(_reply)
"""

_CHECKER_MAIN = r'''
class CandidateError(Exception):
    """A request to the candidate's process failed."""


def _request(message):
    _send(message)
    reply = _receive()
    if type(reply) is not dict:
        raise CandidateError("the candidate's process ended or sent a malformed reply")
    if type(reply.get("error")) is str:
        raise CandidateError(reply["error"][:300])
    if type(reply.get("value")) is not str:
        raise CandidateError("malformed reply")
    return decode_plain(reply["value"], ref=_remote)


def _remote(handle):
    if type(handle) is not dict or type(handle.get("r")) is not int:
        raise ValueError("malformed handle")
    return Remote({"r": handle["r"]})


def _target(value):
    return value._target if type(value) is Remote else None


class Remote:
    """An object of the candidate's process: can be called or passed back, never compared here."""

    __slots__ = ("_target",)

    def __init__(self, target):
        object.__setattr__(self, "_target", target)

    def __call__(self, *args, **kwargs):
        args, kwargs = encode_plain(list(args), ref=_target), encode_plain(kwargs, ref=_target)
        return _request({"op": "call", "target": self._target, "args": args, "kwargs": kwargs})

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _request({"op": "getattr", "target": self._target, "name": name})

    def _refuse(self, *args):
        raise TypeError("an object of the candidate's process is not a plain value")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __iter__ = __len__ = _refuse
    __hash__ = None

    def __repr__(self):
        return "<object of the candidate's process>"


def _free_names(tree):
    """Names the test code reads: stdlib modules used only as ``module.attr`` are imported here, every
    other non-builtin name, and the builtin names the task asks the program to define, is the
    candidate's."""
    bases = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    uses = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and (node.id in _cfg["names"] or not hasattr(builtins, node.id)):
            uses.setdefault(node.id, []).append(id(node) in bases)
    ns = {"__name__": "__main__"}
    for name, as_base in uses.items():
        if name in sys.stdlib_module_names and all(as_base):
            ns[name] = __import__(name)
        else:
            ns[name] = Remote({"g": name})
    return ns


def _traceback(exc):
    tb = exc.__traceback__
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _run_tests():
    _request({"op": "ready"})
    if _cfg["entry_point"]:
        ns = {"__name__": "__main__"}
        exec(compile(_cfg["prelude"], "prompt.py", "exec"), ns)
        ns[_cfg["entry_point"]] = candidate = Remote({"g": _cfg["entry_point"]})
        exec(compile(_cfg["tests"], "test.py", "exec"), ns)
        ns["check"](candidate)
    else:
        tree = ast.parse(_cfg["tests"], "test.py")
        exec(compile(tree, "test.py", "exec"), _free_names(tree))


try:
    _run_tests()
    _verdict = {"passed": True, "message": ""}
except BaseException as exc:
    _lines = [t.tb_lineno for t in _traceback(exc) if t.tb_frame.f_code.co_filename == "test.py"]
    _where = "test.py line %d: " % _lines[-1] if _lines else ""
    _verdict = {"passed": False, "message": _where + _describe(exc)}
sys.stdout.flush()
os.write(1, ("\n" + _cfg["marker"] + json.dumps(_verdict) + "\n").encode("utf-8"))
'''


@functools.cache
def _source(main: str) -> str:
    helpers = "\n\n".join(inspect.getsource(fn) for fn in (encode_plain, decode_plain))
    return "from __future__ import annotations\n" + _COMMON + "\n\n" + helpers + "\n" + main


@dataclass(frozen=True)
class CodeCheck:
    """A candidate ``program`` and the test code that judges it (see the module docstring).

    ``tests``: HumanEval test code defining ``check(candidate)`` when ``entry_point`` is set (with the
    task's prompt as ``prelude``), else assert lines. ``setup`` runs in the candidate's process after the
    program (MBPP's ``test_setup_code`` builds objects of the program's classes). ``builtin_names``:
    builtin names that assert lines call on the program (MBPP task 126 asks for a function ``sum``);
    taken from the task's reference code, never from the candidate, so a program cannot take over
    ``tuple`` or ``isinstance`` in the checker.
    """

    program: str
    tests: str
    entry_point: str | None = None
    prelude: str = ""
    setup: str = ""
    builtin_names: tuple[str, ...] = ()


def _verdict(checker: ExecResult, candidate: ExecResult) -> ExecResult:
    """The check's result: ``ok`` only on the checker's passing verdict; the candidate's output kept."""
    lines = [x for x in checker.stdout.splitlines() if x.startswith(VERDICT_MARKER)]
    try:
        verdict = json.loads(lines[-1][len(VERDICT_MARKER) :]) if lines else {}
    except ValueError:
        verdict = {}
    if verdict.get("passed") is True:
        status, message = "ok", ""
    elif "timeout" in (checker.status, candidate.status):  # the candidate may hit its CPU limit first
        status, message = "timeout", "time limit exceeded"
    else:
        status = "error"
        message = str(verdict.get("message") or f"checker ended without a verdict ({checker.status})")
        message += "\n" + checker.stderr[-500:] if checker.stderr.strip() else ""
    stderr = (candidate.stderr + "\n" + message).strip() if message else candidate.stderr
    return ExecResult(status, checker.returncode, candidate.stdout, stderr, checker.seconds)


def run_check(check: CodeCheck, timeout_s: float = 10, memory_mb: int = 1024) -> ExecResult:
    """Run one check: ``status == "ok"`` exactly when the test code passed against the program."""
    requests, replies = os.pipe(), os.pipe()  # checker -> candidate, candidate -> checker
    common = {"limit": MESSAGE_LIMIT}
    cand_cfg = {**common, "program": check.program, "setup": check.setup, "fds": [requests[0], replies[1]]}
    check_cfg = {
        **common,
        **{k: getattr(check, k) for k in ("tests", "entry_point", "prelude")},
        "names": list(check.builtin_names),
        "marker": VERDICT_MARKER,
        "fds": [replies[0], requests[1]],
    }
    candidate_job = Job(_source(_CANDIDATE_MAIN), timeout_s, json.dumps(cand_cfg), memory_mb)
    checker_job = Job(_source(_CHECKER_MAIN), timeout_s, json.dumps(check_cfg), memory_mb)
    try:
        candidate = start(candidate_job, channel=(requests[0], replies[1]))
        try:
            checker = start(checker_job, channel=(replies[0], requests[1]))
        except BaseException:
            finish(candidate, wait=False)
            raise
    finally:
        for fd in (*requests, *replies):
            os.close(fd)
    checked = finish(checker)
    return _verdict(checked, finish(candidate, wait=False))


def run_checks(
    checks: list[CodeCheck], timeout_s: float = 10, workers: int = 2, memory_mb: int = 1024
) -> list[ExecResult]:
    """:func:`run_check` for each check, ``workers`` at a time; results keep the order of ``checks``."""
    return parallel(lambda c: run_check(c, timeout_s, memory_mb), checks, workers)


def check_program(program: str, tests: str, timeout_s: float) -> ExecResult:
    """Check ``program`` against assert lines ``tests``; ``ok`` means every assertion held."""
    return run_check(CodeCheck(program, tests), timeout_s)
