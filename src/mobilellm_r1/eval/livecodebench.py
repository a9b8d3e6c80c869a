"""LiveCodeBench code generation: loading, the chat prompt, code extraction and sandboxed grading.

Source: LiveCodeBench (Jain et al. 2024, "LiveCodeBench: Holistic and Contamination Free Evaluation of
Large Language Models for Code"), HF dataset ``livecodebench/code_generation_lite``. Its files
``test.jsonl`` .. ``test6.jsonl`` are the successive release deltas; ``release_vN`` is the union of the
first N files (``release_v6``: 1055 problems, contest dates 2023-05 .. 2025-04) and ``vN`` the N-th file
alone (``v6`` = ``test6.jsonl``, 175 problems).

Protocol (MobileLLM-R1 paper, "LiveCodeBench-v6"): problems of ``release_v6`` whose contest date lies in
the window 2024-08-01 .. 2025-05-01 (:data:`V6_WINDOW`, the default of :func:`load_livecodebench`,
both ends inclusive), a 0-shot chat prompt (:func:`lcb_messages`), n = 16 samples per problem at
temperature 0.6 and top-p 0.95, scored by unbiased pass@1 (:func:`grade`).

Record fields (one JSON object per line): ``question_title``, ``question_content``, ``platform``
(leetcode / codeforces / atcoder), ``question_id``, ``contest_id``, ``contest_date`` (ISO),
``starter_code``, ``difficulty``, ``public_test_cases`` (a JSON string: list of ``{input, output,
testtype}``), ``private_test_cases`` (the same list either as a JSON string or as
``base64(zlib(pickle(json string)))``) and ``metadata`` (JSON string, ``{"func_name": ...}`` for
functional problems). :func:`load_livecodebench` returns the records with these three fields decoded
(lists / dict); pickle payloads are decoded by a restricted unpickler that refuses every global
(:func:`decode_private_tests`), never by ``pickle.loads``.

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
prints a one-line JSON summary after :data:`RESULT_MARKER`. The code sees the usual competitive
programming imports (:data:`SOLUTION_PRELUDE`), ``exit``/``quit`` (absent under ``python -S``), a
recursion limit of 50,000 and no limit on int <-> str digits. The harness is not hardened against a
program that deliberately inspects it (frames, file descriptors) to forge its summary.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import inspect
import io
import itertools
import json
import pickle
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mobilellm_r1.eval.metrics import pass_summary
from mobilellm_r1.eval.sandbox import ExecResult, Job, calibrate, run_many
from mobilellm_r1.tokenizer import chat_messages

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FLOAT_TOL",
    "HUB_ID",
    "LCB_SYSTEM_PROMPT",
    "RESULT_MARKER",
    "SOLUTION_PRELUDE",
    "V6_WINDOW",
    "UnsafePickleError",
    "build_check",
    "decode_private_tests",
    "extract_code",
    "grade",
    "lcb_messages",
    "lcb_prompt",
    "load_livecodebench",
    "parse_check",
    "release_files",
    "stdout_matches",
    "values_match",
]

HUB_ID = "livecodebench/code_generation_lite"
V6_WINDOW = ("2024-08-01", "2025-05-01")
DEFAULT_TIMEOUT_S = 6.0
FLOAT_TOL = 1e-6
RESULT_MARKER = "@@LCB-HARNESS-RESULT@@"
MAX_DECOMPRESSED_BYTES = 1 << 30
_RELEASE_FILES = ["test.jsonl", *(f"test{i}.jsonl" for i in range(2, 7))]
_LOCAL_SUBDIRS = ("livecodebench", "livecodebench_v6")

LCB_SYSTEM_PROMPT = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests."
)
_STDIN_FORMAT = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
    "on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
    "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
    "```python\n# YOUR CODE HERE\n```"
)
_FUNCTIONAL_FORMAT = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters.\n```python\n{starter_code}\n```"
)

# Imports that LiveCodeBench-style judges make available to every solution (typing names for starter
# code annotations, and the usual competitive-programming modules).
SOLUTION_PRELUDE = (
    "from typing import *\n"
    "import bisect, collections, copy, functools, heapq, itertools, math, operator, random, re, "
    "string, sys\n"
    "from bisect import *\nfrom collections import *\nfrom functools import *\nfrom heapq import *\n"
    "from itertools import *\nfrom math import *\n"
)


# ----------------------------------------------------------------------------------------- loading


def release_files(release: str) -> list[str]:
    """Data files of a release tag: ``release_vN`` (cumulative), ``release_latest``, ``vN`` or ``vN_vM``."""
    tag = release.strip().lower()
    if tag == "release_latest":
        return list(_RELEASE_FILES)
    cumulative = re.fullmatch(r"release_v(\d+)", tag)
    single = re.fullmatch(r"v(\d+)(?:_v(\d+))?", tag)
    n_files = len(_RELEASE_FILES)
    if cumulative and 1 <= int(cumulative[1]) <= n_files:
        return _RELEASE_FILES[: int(cumulative[1])]
    if single:
        lo = int(single[1])
        hi = int(single[2]) if single[2] else lo
        if 1 <= lo <= hi <= n_files:
            return _RELEASE_FILES[lo - 1 : hi]
    raise ValueError(
        f"unknown LiveCodeBench release {release!r}; expected release_v1..release_v{n_files}, "
        f"release_latest, vN or vN_vM with 1 <= N <= M <= {n_files}"
    )


class UnsafePickleError(pickle.UnpicklingError):
    """A private-test pickle payload referenced a global (class / function): refused, never executed."""


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler for plain data only: any global or persistent reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            f"refusing to unpickle global {module}.{name} in LiveCodeBench private_test_cases: only plain "
            "str/bytes/list/dict/number data is accepted (the payload is malformed or malicious)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            "refusing a persistent reference in LiveCodeBench private_test_cases: only plain data is accepted"
        )


def _validate_tests(tests: Any, what: str) -> list[dict]:
    """Check a decoded test list: dicts with string ``input`` / ``output`` and a known ``testtype``."""
    if not isinstance(tests, list):
        raise ValueError(f"{what}: expected a list of test cases, got {type(tests).__name__}")
    out = []
    for i, test in enumerate(tests):
        ok = (
            isinstance(test, dict)
            and isinstance(test.get("input"), str)
            and isinstance(test.get("output"), str)
        )
        if not ok or test.get("testtype") not in ("stdin", "functional"):
            raise ValueError(
                f"{what}: test {i} is not {{input: str, output: str, testtype: stdin|functional}}"
            )
        out.append({"input": test["input"], "output": test["output"], "testtype": test["testtype"]})
    return out


def decode_private_tests(value: str | list | None) -> list[dict]:
    """Decode ``private_test_cases``: a JSON string, or ``base64(zlib(pickle(JSON string)))``.

    The pickle layer is read by a restricted unpickler whose ``find_class`` raises
    :class:`UnsafePickleError`, so a payload can only yield plain data (str, bytes, list, dict, numbers),
    never import or call anything. The decompressed size is capped at 1 GiB.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, list):
        return _validate_tests(value, "private_test_cases")
    text = value.strip()
    if text[0] in "[{":
        return _validate_tests(json.loads(text), "private_test_cases")
    try:
        compressed = base64.b64decode(text, validate=True)
        inflater = zlib.decompressobj()
        blob = inflater.decompress(compressed, MAX_DECOMPRESSED_BYTES + 1)
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise ValueError(
            "private_test_cases is neither a JSON list nor base64(zlib(pickle(JSON))) data"
        ) from exc
    if len(blob) > MAX_DECOMPRESSED_BYTES or inflater.unconsumed_tail:
        raise ValueError(f"private_test_cases decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")
    payload = _PlainDataUnpickler(io.BytesIO(blob)).load()
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8")
    if isinstance(payload, str):
        payload = json.loads(payload)
    return _validate_tests(payload, "private_test_cases")


def _parse_json_field(value: Any, default: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return json.loads(value) if isinstance(value, str) else value


def _contest_day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip().replace("Z", "+00:00")
    return datetime.fromisoformat(text).date()


def _normalise(raw: Mapping[str, Any]) -> dict:
    """Decode the JSON / pickle string fields of a raw dataset row (other fields kept as they are)."""
    record = dict(raw)
    qid = record["question_id"] = str(raw["question_id"])
    record["public_test_cases"] = _validate_tests(
        _parse_json_field(raw.get("public_test_cases"), []), f"{qid}: public_test_cases"
    )
    try:
        record["private_test_cases"] = decode_private_tests(raw.get("private_test_cases"))
    except (ValueError, pickle.UnpicklingError) as exc:
        raise type(exc)(f"problem {qid}: {exc}") from exc
    record["metadata"] = _parse_json_field(raw.get("metadata"), {})
    record["starter_code"] = raw.get("starter_code") or ""
    types = {t["testtype"] for t in record["public_test_cases"] + record["private_test_cases"]}
    if len(types) > 1:
        raise ValueError(f"problem {qid}: mixed test types {sorted(types)}")
    if types == {"functional"} and not record["metadata"].get("func_name"):
        raise ValueError(f"problem {qid}: functional tests but no metadata.func_name")
    return record


def _iter_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a (possibly gzip-compressed) JSON-lines file, one at a time (the files are large)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _local_files(path: Path, release: str) -> list[Path]:
    """The jsonl files to read from a file path or a data directory (see :func:`load_livecodebench`)."""
    if path.is_file():
        return [path]
    wanted = release_files(release)
    for base in (*(path / sub for sub in _LOCAL_SUBDIRS), path):
        if not base.is_dir():
            continue
        standard = [base / name for name in _RELEASE_FILES if (base / name).is_file()]
        if standard:
            present = [base / name for name in wanted if (base / name).is_file()]
            missing = [name for name in wanted if not (base / name).is_file()]
            if not present:
                raise FileNotFoundError(f"{base} holds none of the {release} files {wanted}")
            if missing:
                warnings.warn(
                    f"LiveCodeBench {release}: {base} lacks {missing}; "
                    f"loading only {[p.name for p in present]}",
                    stacklevel=3,
                )
            return present
        custom = sorted([*base.glob("*.jsonl"), *base.glob("*.jsonl.gz")])
        if custom:
            return custom
    raise FileNotFoundError(
        f"LiveCodeBench data not found at {path}: put test.jsonl .. test6.jsonl of the HF dataset {HUB_ID} "
        f"(or any *.jsonl in the same format) in {path / 'livecodebench'}, or pass a jsonl file path"
    )


def _load_hub(hub_id: str, release: str) -> Iterable[dict]:
    """Rows of ``release`` from the hub: the raw jsonl files, else the dataset's loading script."""
    errors = []
    try:
        from huggingface_hub import hf_hub_download

        paths = [Path(hf_hub_download(hub_id, name, repo_type="dataset")) for name in release_files(release)]
        return itertools.chain.from_iterable(_iter_jsonl(p) for p in paths)
    except Exception as exc:  # any failure falls through to the next loader
        errors.append(f"huggingface_hub: {type(exc).__name__}: {exc}")
    try:
        import datasets

        # the lite dataset is a loading script: datasets 2.x / 3.x need trust_remote_code (older 2.x lack
        # the argument); datasets >= 4 dropped scripts, so this path only serves older versions
        major = int(datasets.__version__.split(".")[0])
        extra = {"trust_remote_code": True} if major < 4 else {}
        try:
            ds = datasets.load_dataset(hub_id, split="test", version_tag=release, **extra)
        except (TypeError, ValueError) as exc:
            if not extra or "trust_remote_code" not in str(exc):
                raise
            ds = datasets.load_dataset(hub_id, split="test", version_tag=release)
        return (dict(row) for row in ds)
    except Exception as exc:
        errors.append(f"datasets: {type(exc).__name__}: {exc}")
    raise RuntimeError(
        f"could not load LiveCodeBench {release} from the hub ({hub_id}): {'; '.join(errors)}. Download "
        f"{', '.join(release_files(release))} from https://huggingface.co/datasets/{hub_id} and put them in "
        "<data dir>/livecodebench/ (then pass the data dir), or pass a jsonl file path"
    )


def load_livecodebench(
    path_or_dir: str | Path | None = None,
    *,
    release: str = "release_v6",
    start_date: str | date | None = V6_WINDOW[0],
    end_date: str | date | None = V6_WINDOW[1],
    hub_id: str = HUB_ID,
) -> list[dict]:
    """Load LiveCodeBench problems whose contest date lies in ``[start_date, end_date]`` (inclusive).

    The default window 2024-08-01 .. 2025-05-01 of ``release_v6`` is the MobileLLM-R1 paper's
    LiveCodeBench-v6 evaluation set; ``None`` leaves a side of the window open.

    ``path_or_dir``: a jsonl(.gz) file, or a directory ``D`` holding the data in ``D/livecodebench/``,
    ``D/livecodebench_v6/`` or ``D`` itself. Where the directory holds the standard file names
    (``test.jsonl``, ``test2.jsonl`` .. ``test6.jsonl``) only those of ``release`` are read (a warning
    names missing ones); otherwise every ``*.jsonl`` there. ``None`` downloads ``release`` from the
    hub (``hub_id``); a failure raises RuntimeError saying where to put local files.

    Returns records in file order, with ``public_test_cases`` / ``private_test_cases`` decoded to lists of
    ``{input, output, testtype}``, ``metadata`` to a dict and ``question_id`` as a string (the id used by
    :func:`grade`).
    """
    if path_or_dir is None:
        raw = _load_hub(hub_id, release)
    else:
        files = _local_files(Path(path_or_dir), release)
        raw = itertools.chain.from_iterable(_iter_jsonl(file) for file in files)
    lo = None if start_date is None else _contest_day(start_date)
    hi = None if end_date is None else _contest_day(end_date)
    records, seen = [], set()
    for row in raw:
        day = _contest_day(row["contest_date"])
        if (lo is not None and day < lo) or (hi is not None and day > hi):
            continue
        record = _normalise(row)
        if record["question_id"] in seen:
            raise ValueError(f"duplicate LiveCodeBench question_id {record['question_id']!r}")
        seen.add(record["question_id"])
        records.append(record)
    return records


# ------------------------------------------------------------------------------ prompt and extraction


def _is_functional(record: Mapping[str, Any]) -> bool:
    tests = [*record["public_test_cases"], *record["private_test_cases"]]
    return bool(tests) and tests[0]["testtype"] == "functional"


def lcb_prompt(record: Mapping[str, Any]) -> str:
    """The user message: question, the answer format (stdin program or starter code), answer cue."""
    starter = record.get("starter_code") or ""
    fmt = _FUNCTIONAL_FORMAT.format(starter_code=starter) if starter else _STDIN_FORMAT
    return (
        f"### Question:\n{record['question_content']}\n\n### Format: {fmt}\n\n"
        "### Answer: (use the provided format with backticks)\n\n"
    )


def lcb_messages(record: Mapping[str, Any], system: str | None = "python") -> list[dict[str, str]]:
    """Chat messages for ``record``: ``system`` (a :data:`~mobilellm_r1.tokenizer.SYSTEM_PROMPTS` key such as
    the default "python", the MobileLLM-R1 model card's code prompt; or a literal prompt such as
    :data:`LCB_SYSTEM_PROMPT`; or None for no system message), then :func:`lcb_prompt`."""
    return chat_messages(lcb_prompt(record), system=system)


_FENCE = re.compile(r"```[ \t]*([^\n`]*)\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The last ```python (or ```py / ```python3) fenced block, else the last fenced block, else "".

    Text up to the last ``</think>`` (a reasoning trace) is ignored when the tag is present.
    """
    if "</think>" in completion:
        completion = completion.rsplit("</think>", 1)[1]
    blocks = [(m[1].strip().lower(), m[2]) for m in _FENCE.finditer(completion)]
    python = [code for lang, code in blocks if lang in ("python", "py", "python3")]
    code = python[-1] if python else (blocks[-1][1] if blocks else "")
    return code.strip("\n") + "\n" if code.strip() else ""


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
_tests = _cfg["tests"]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large output -> OSError in the program, not a kill


class _TestTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _TestTimeout


def _report(status, passed, message=""):
    summary = {"status": status, "passed": passed, "total": len(_tests), "message": message[:400]}
    os.write(_real_out, ("\n" + _MARKER + json.dumps(summary) + "\n").encode())
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
    _report("compile_error", 0, _describe(exc))

if _cfg["func_name"] is None:
    for _i, _test in enumerate(_tests):
        _redirect(_test["input"])
        _ns = _namespace("__main__")
        _status, _msg, _ = _guarded(lambda: exec(_code, _ns))
        _out = _captured()
        if _status:
            _report(_status, _i, "test %d: %s" % (_i, _msg))
        _bad = stdout_matches(_out, _test["output"], _cfg["tol"])
        if _bad:
            _report("wrong_answer", _i, "test %d: %s" % (_i, _bad))
else:
    _redirect("")
    _ns = _namespace("solution")
    _status, _msg, _ = _guarded(lambda: exec(_code, _ns))
    if _status:
        _report(_status, 0, "defining the solution: " + _msg)
    if not isinstance(_ns.get("Solution"), type):
        _report("runtime_error", 0, "the code defines no class Solution")
    for _i, _test in enumerate(_tests):
        try:
            _args = [json.loads(line) for line in _test["input"].split("\n") if line.strip()]
            _want = json.loads(_test["output"])
        except ValueError as exc:
            _report("harness_error", _i, "test %d: bad test data: %s" % (_i, exc))
        _redirect("")
        _status, _msg, _got = _guarded(lambda: getattr(_ns["Solution"](), _cfg["func_name"])(*_args))
        if _status:
            _report(_status, _i, "test %d: %s" % (_i, _msg))
        if not values_match(_got, _want, _cfg["tol"]):
            _got_text = "%s, expected %s" % (repr(_got)[:60], _test["output"][:60])
            _report("wrong_answer", _i, "test %d: got %s" % (_i, _got_text))
_report("passed", len(_tests))
'''


def _harness_source() -> str:
    """The check program: stdlib imports, the matching functions of this module, the test driver."""
    header = (
        "from __future__ import annotations\n"
        "import builtins, io, json, os, re, signal, sys\n"
        "from decimal import Decimal, InvalidOperation\n"
        f"_MARKER = {RESULT_MARKER!r}\n"
        f"_NUMBER = re.compile({_NUMBER.pattern!r})\n"
        f"_INTEGER = re.compile({_INTEGER.pattern!r})\n"
    )
    helpers = "\n\n".join(inspect.getsource(fn) for fn in (tokens_match, stdout_matches, values_match))
    return header + "\n\n" + helpers + "\n" + _HARNESS_MAIN


def _tests_of(record: Mapping[str, Any]) -> list[dict]:
    return [*record["public_test_cases"], *record["private_test_cases"]]


def build_check(
    record: Mapping[str, Any],
    code: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = 2048,
    max_file_mb: int = 64,
) -> Job:
    """One sandbox :class:`~mobilellm_r1.eval.sandbox.Job` running ``code`` against all of ``record``'s tests.

    The harness program is the job's source; the code and the tests travel on its stdin as JSON.
    ``timeout_s`` limits each test (scaled by :func:`~mobilellm_r1.eval.sandbox.calibrate` inside the
    harness); the job as a whole gets ``timeout_s`` x (tests + 1) + 1 s (scaled by the sandbox).
    ``max_file_mb`` bounds the per-test stdin / stdout files the harness writes.
    """
    tests = [{"input": t["input"], "output": t["output"]} for t in _tests_of(record)]
    func_name = record["metadata"].get("func_name") if _is_functional(record) else None
    payload = {
        "code": code,
        "prelude": SOLUTION_PRELUDE,
        "func_name": func_name,
        "tests": tests,
        "test_timeout_s": timeout_s * calibrate(),
        "tol": FLOAT_TOL,
    }
    return Job(
        source=_harness_source(),
        timeout_s=timeout_s * (len(tests) + 1) + 1.0,
        stdin=json.dumps(payload),
        memory_mb=memory_mb,
        max_file_mb=max_file_mb,
    )


def parse_check(result: ExecResult, n_tests: int) -> dict[str, Any]:
    """Read a harness run: ``{passed, status, n_passed, n_tests, message}``.

    ``status`` is one of "passed", "wrong_answer", "runtime_error", "timeout", "compile_error"; a run
    that ended without a summary (killed by the sandbox, out of memory, os._exit) is "timeout" when
    the sandbox timed it out, else "runtime_error", with the tail of its stderr as message.
    """
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                summary = json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                break
            status = str(summary.get("status", "runtime_error"))
            return {
                "passed": status == "passed",
                "status": status,
                "n_passed": int(summary.get("passed", 0)),
                "n_tests": n_tests,
                "message": str(summary.get("message", "")),
            }
    status = "timeout" if result.status == "timeout" else "runtime_error"
    tail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
    message = f"sandbox status {result.status}" + (f": {tail[0][:200]}" if tail else "")
    return {"passed": False, "status": status, "n_passed": 0, "n_tests": n_tests, "message": message}


# -------------------------------------------------------------------------------------------- grading


def _batches(jobs: list[tuple[int, Job]], workers: int, max_bytes: int = 256 << 20) -> Iterable[list]:
    """Split jobs so that one batch's stdin payloads stay below ``max_bytes`` (large private tests)."""
    batch: list[tuple[int, Job]] = []
    size = 0
    for item in jobs:
        if batch and (size + len(item[1].stdin) > max_bytes or len(batch) >= 64 * max(1, workers)):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item[1].stdin)
    if batch:
        yield batch


def grade(
    records: list[dict],
    completions_by_id: Mapping[str, list[str]],
    *,
    workers: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = 2048,
) -> tuple[dict[str, float], list[dict]]:
    """Grade completions (raw model outputs, code extracted by :func:`extract_code`) of every record.

    ``completions_by_id`` maps each record's ``question_id`` to its n samples; ids must match exactly.
    Returns (summary, per-sample results). The summary has ``pass@1`` / ``pass@1_se`` (unbiased pass@1
    averaged over problems, with its standard error), ``pass@n`` / ``pass@n_se`` for n = the smallest
    sample count when that exceeds 1, ``n_problems`` and ``n_samples``. Each per-sample dict holds
    ``id``, ``sample``, ``passed``, ``status`` (see :func:`parse_check`; "no_code" when no code block
    was found), ``n_passed``, ``n_tests`` and a short ``message`` about the first failure.
    """
    ids = [r["question_id"] for r in records]
    missing = [i for i in ids if not completions_by_id.get(i)]
    extra = sorted(set(completions_by_id) - set(ids))
    if missing or extra:
        raise ValueError(
            f"completions do not match records: {len(missing)} records without completions "
            f"(e.g. {missing[:3]}), {len(extra)} completion ids without a record (e.g. {extra[:3]})"
        )
    results: list[dict] = []
    jobs: list[tuple[int, Job]] = []
    for record in records:
        n_tests = len(_tests_of(record))
        for s, completion in enumerate(completions_by_id[record["question_id"]]):
            base = {"id": record["question_id"], "sample": s, "n_tests": n_tests}
            code = extract_code(completion)
            if code:
                jobs.append(
                    (len(results), build_check(record, code, timeout_s=timeout_s, memory_mb=memory_mb))
                )
                results.append(base)
            else:
                no_code = {"passed": False, "status": "no_code", "n_passed": 0}
                results.append({**base, **no_code, "message": "no fenced code block in the completion"})
    for batch in _batches(jobs, workers):
        outcomes = run_many([job for _, job in batch], workers=workers)
        for (index, _), outcome in zip(batch, outcomes, strict=True):
            results[index].update(parse_check(outcome, results[index]["n_tests"]))
    counts: dict[str, list[int]] = {}
    for item in results:
        n_c = counts.setdefault(item["id"], [0, 0])
        n_c[0] += 1
        n_c[1] += int(item["passed"])
    pairs = [(n, c) for n, c in counts.values()]
    summary: dict[str, float] = pass_summary(pairs)
    summary["n_problems"] = len(pairs)
    summary["n_samples"] = min(n for n, _ in pairs)
    return summary, results
