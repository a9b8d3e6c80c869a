"""LiveCodeBench code generation: loading, the chat prompt, code extraction and sandboxed grading.

Source: LiveCodeBench (Jain et al. 2024, "LiveCodeBench: Holistic and Contamination Free Evaluation of
Large Language Models for Code"), HF dataset ``livecodebench/code_generation_lite``. Its files
``test.jsonl`` .. ``test6.jsonl`` are the successive release deltas; ``release_vN`` is the union of the
first N files (``release_v6``: 1055 problems, contest dates 2023-05 .. 2025-04) and ``vN`` the N-th file
alone (``v6`` = ``test6.jsonl``, 175 problems).

Protocol (MobileLLM-R1 paper, "LiveCodeBench-v6"): problems of ``release_v6`` whose contest date lies in
the window 2024-08-01 .. 2025-05-01 (:data:`V6_WINDOW`, the default of :func:`load_livecodebench`,
both ends inclusive), a 0-shot chat prompt (:func:`lcb_messages`), n = 16 samples per problem at
temperature 0.6 and top-p 0.95, scored by unbiased pass@1 (:func:`grade`); the generation task is
:data:`LIVECODEBENCH`.

Record fields (one JSON object per line): ``question_title``, ``question_content``, ``platform``
(leetcode / codeforces / atcoder), ``question_id``, ``contest_id``, ``contest_date`` (ISO),
``starter_code``, ``difficulty``, ``public_test_cases`` (a JSON string: list of ``{input, output,
testtype}``), ``private_test_cases`` (the same list either as a JSON string or as
``base64(zlib(pickle(json string)))``) and ``metadata`` (JSON string, ``{"func_name": ...}`` for
functional problems). :func:`load_livecodebench` returns the records with these three fields decoded
(lists / dict); pickle payloads are decoded by a restricted unpickler that refuses every global
(:func:`decode_private_tests`), never by ``pickle.loads``.

Checking (output matching, the sandboxed harness, its protocol): :mod:`~mobilellm_r1.eval.lcb_check`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import re
import warnings
import zlib
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from mobilellm_r1.data.records import iter_jsonl
from mobilellm_r1.eval.engines import GenRequest
from mobilellm_r1.eval.lcb_check import (
    DEFAULT_TIMEOUT_S,
    FLOAT_TOL,
    RESULT_MARKER,
    SOLUTION_PRELUDE,
    build_check,
    parse_check,
    record_tests,
    stdout_matches,
    tokens_match,
    values_match,
)
from mobilellm_r1.eval.metrics import pass_summary
from mobilellm_r1.eval.sandbox import Job, run_many
from mobilellm_r1.eval.tasks import GenTask
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
    "tokens_match",
    "values_match",
]

HUB_ID = "livecodebench/code_generation_lite"
V6_WINDOW = ("2024-08-01", "2025-05-01")
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
        return (row for p in paths for row, _ in iter_jsonl(p))  # one row at a time: the files are large
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
        raw = (row for file in files for row, _ in iter_jsonl(file))
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
    record_of: dict[int, dict] = {}
    for record in records:
        n_tests = len(record_tests(record))
        for s, completion in enumerate(completions_by_id[record["question_id"]]):
            base = {"id": record["question_id"], "sample": s, "n_tests": n_tests}
            code = extract_code(completion)
            if code:
                record_of[len(results)] = record
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
            results[index].update(parse_check(outcome, record_of[index]))
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


LIVECODEBENCH = GenTask(
    name="livecodebench",
    load=lambda d: load_livecodebench(d),
    id_of=lambda r, i: str(r["question_id"]),
    base_request=lambda r, rid, d: GenRequest(rid, messages=lcb_messages(r)),
    chat_request=lambda r, rid: GenRequest(rid, messages=lcb_messages(r)),
    grade=lambda records, ids, grouped, chat, ctx: grade(records, grouped, workers=ctx.workers),
    reference=lambda r: None,
    chat_n=16,
    chat_only=True,
)
