"""Tokenize a text source into resumable token shards, and read them back memory-mapped.

Layout of ``out_dir/<source name>/`` (one shard per work unit of :func:`~.sources.list_units`):

* ``shard_{k:05d}.bin``: token ids as little-endian uint32, documents back to back (no BOS/EOS;
  the loader adds EOS between documents);
* ``shard_{k:05d}.json``: the shard's record (unit, docs, tokens, text bytes, skipped rows);
* ``shard_{k:05d}.idx.npy``: int64 offsets into the shard's tokens, ``n_docs + 1`` long,
  ``offsets[0] == 0``.  Written last, so a present ``.idx.npy`` marks a complete shard;
* ``meta.json``: format version, source spec, layout, tokenizer name + fingerprint, shard records
  and totals; written last, atomically.  ``.tokenize.json`` holds the same settings during a run.

A killed run is resumed by running it again: complete shards (``.idx.npy`` consistent with the
``.bin`` size) are kept, the temp files a killed run leaves (exactly the names written here, see
:func:`is_temp_file`) removed, the rest redone.  The result is byte-identical to an uninterrupted
run (only ``meta.json``'s ``created`` differs).  One writer at a time per directory.  Pool workers
die with the process that started them (:func:`~mobilellm_r1.procs.die_with_parent`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import queue
import re
import sys
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..procs import die_with_parent
from ..tokenizer import Tokenizer, load_tokenizer
from .shard_encode import TOKEN_DTYPE, text_batches, write_ids
from .sources import DEFAULT_PART_BYTES, ReadStats, SourceSpec, Unit, list_units, read_unit

FORMAT_VERSION = 1
META_FILE = "meta.json"
RUN_FILE = ".tokenize.json"
OFFSET_DTYPE = np.dtype("<i8")
DEFAULT_BATCH_DOCS = 256
# Settings that must match between runs writing into the same directory.
_SETTINGS_KEYS = ("format_version", "source", "layout", "tokenizer", "units")
_FINGERPRINTS: weakref.WeakKeyDictionary[Tokenizer, str] = weakref.WeakKeyDictionary()
# Temp names written into a shard directory: ``shard_00000.bin.tmp`` and atomic_write's
# ``.<name>.<random>.tmp`` for the .json / .idx.npy records, meta.json and .tokenize.json.
_TEMP_NAME = re.compile(
    r"shard_\d{5,}\.bin\.tmp|\.(shard_\d{5,}\.(json|idx\.npy)|meta\.json|\.tokenize\.json)\.\w+\.tmp"
)

ProgressFn = Callable[[int, int, int], None]  # (docs, tokens, text bytes) of one batch


# ====================================================================== tokenizer identity
def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 over the split regex, every (id, token bytes) pair and the special tokens (~0.1 s, cached)."""
    cached = _FINGERPRINTS.get(tokenizer)
    if cached is not None:
        return cached
    digest = hashlib.sha256(b"mobilellm-r1 tokenizer v1\0" + tokenizer.pat_str.encode() + b"\0")
    specials = tokenizer.special_tokens
    special_ids = set(specials.values())
    enc = tokenizer.encoding
    for i in range(tokenizer.vocab_size):
        if i in special_ids:
            continue
        try:
            token = enc.decode_single_token_bytes(i)
        except KeyError:
            continue
        digest.update(i.to_bytes(4, "little") + len(token).to_bytes(4, "little") + token)
    digest.update(json.dumps(sorted(specials.items(), key=lambda kv: kv[1])).encode())
    _FINGERPRINTS[tokenizer] = digest.hexdigest()
    return _FINGERPRINTS[tokenizer]


# ====================================================================== shard files
def shard_stem(k: int) -> str:
    """File stem of shard ``k``: ``shard_00000``."""
    return f"shard_{k:05d}"


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is a temp file a tokenize run writes (and a killed one leaves behind)."""
    return _TEMP_NAME.fullmatch(path.name) is not None and path.is_file()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _complete_record(dest: Path, k: int) -> dict[str, Any] | None:
    """The record of shard ``k`` if its .bin, .json and .idx.npy agree, else None (redo it)."""
    stem = dest / shard_stem(k)
    try:
        offsets = np.load(stem.with_suffix(".idx.npy"), mmap_mode="r")
        record = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        size = stem.with_suffix(".bin").stat().st_size
    except (OSError, ValueError):
        return None
    ok = offsets.ndim == 1 and len(offsets) >= 1 and int(offsets[0]) == 0
    ok = ok and size == int(offsets[-1]) * TOKEN_DTYPE.itemsize
    ok = ok and (record.get("docs"), record.get("tokens")) == (len(offsets) - 1, int(offsets[-1]))
    return record if ok else None


def _write_shard(
    spec: SourceSpec,
    unit: Unit,
    dest: Path,
    k: int,
    tokenizer: Tokenizer,
    batch_docs: int = DEFAULT_BATCH_DOCS,
    num_threads: int = 1,
    on_batch: ProgressFn | None = None,
) -> dict[str, Any]:
    """Tokenize one unit into shard ``k``: .bin, then .json, then .idx.npy, each via a temp name."""
    stem, stats = dest / shard_stem(k), ReadStats()
    lengths: list[np.ndarray] = []
    text_bytes = 0
    bin_tmp = stem.with_name(stem.name + ".bin.tmp")
    with open(bin_tmp, "wb") as f:
        for texts in text_batches((doc.text for doc in read_unit(spec, unit, stats)), batch_docs):
            lens, nbytes = write_ids(f, tokenizer, texts, num_threads)
            lengths.append(lens)
            text_bytes += nbytes
            if on_batch is not None:
                on_batch(len(texts), int(lens.sum()), nbytes)
        os.fsync(f.fileno())
    offsets = np.zeros(1 + sum(map(len, lengths)), dtype=OFFSET_DTYPE)
    np.cumsum(np.concatenate([np.zeros(0, np.int64), *lengths]), out=offsets[1:])
    record = {"file": stem.name + ".bin", "unit": asdict(unit), "docs": len(offsets) - 1}
    record |= {
        "tokens": int(offsets[-1]),
        "text_bytes": text_bytes,
        "skipped": dict(sorted(stats.skipped.items())),
    }
    if stats.examples:
        record["skip_examples"] = stats.examples
    os.replace(bin_tmp, stem.with_suffix(".bin"))
    atomic_write(stem.with_suffix(".json"), _json_bytes(record), fsync=True)
    buf = io.BytesIO()
    np.save(buf, offsets)
    atomic_write(stem.with_suffix(".idx.npy"), buf.getvalue(), fsync=True)
    return record


# ====================================================================== worker processes
_WORKER: dict[str, Any] = {}


@dataclass(frozen=True)
class _Job:
    spec: SourceSpec
    unit: Unit
    dest: Path
    k: int
    batch_docs: int
    num_threads: int

    def run(self, tokenizer: Tokenizer, on_batch: ProgressFn | None) -> dict[str, Any]:
        args = (self.spec, self.unit, self.dest, self.k, tokenizer, self.batch_docs, self.num_threads)
        return _write_shard(*args, on_batch)


@dataclass(frozen=True)
class _TokenizerRef:
    """What a pool worker needs to rebuild the tokenizer: a path for :func:`load_tokenizer` and
    the fingerprint the result must have (no pickled tokenizer crosses the process boundary)."""

    path: str
    fingerprint: str

    def load(self) -> Tokenizer:
        tok = load_tokenizer(self.path)
        if (got := tokenizer_fingerprint(tok)) != self.fingerprint:
            raise ValueError(
                f"tokenizer {self.path} now has fingerprint {got[:12]}, this run's is "
                f"{self.fingerprint[:12]} (changed on disk?)"
            )
        return tok


def _tokenizer_ref(tokenizer: Tokenizer, stack: contextlib.ExitStack) -> _TokenizerRef:
    """Where workers load ``tokenizer`` from: its own path, else a copy saved into a temporary
    directory that ``stack`` removes (made only then, so a killed run leaves none behind)."""
    path = tokenizer.name_or_path
    if not path or not Path(path).exists():
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="mobilellm-r1-tokenizer-"))
        path = str(tokenizer.save(scratch))
    return _TokenizerRef(path, tokenizer_fingerprint(tokenizer))


def _init_worker(tokenizer: _TokenizerRef, parent: int, progress_queue: Any) -> None:
    """Pool initializer: die with ``parent``; the tokenizer is loaded by the first job (so a
    changed tokenizer file fails that job with a clear error, not the whole pool)."""
    die_with_parent(parent)
    _WORKER["ref"], _WORKER["queue"] = tokenizer, progress_queue


def _worker_job(job: _Job) -> tuple[int, dict[str, Any]]:
    if "tokenizer" not in _WORKER:
        _WORKER["tokenizer"] = _WORKER["ref"].load()
    progress_queue = _WORKER["queue"]
    on_batch = None if progress_queue is None else lambda *counts: progress_queue.put(counts)
    return job.k, job.run(_WORKER["tokenizer"], on_batch)


class _Progress:
    """tqdm bar over documents with tokens/s, MB/s and shards done in the postfix."""

    def __init__(self, total_shards: int, done_shards: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(unit="doc", unit_scale=True, dynamic_ncols=True, file=sys.stderr, disable=not enabled)
        self.total, self.done, self.tokens, self.nbytes = total_shards, done_shards, 0, 0
        self.start = self._shown = time.perf_counter()

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        self.bar.update(docs)
        self.tokens, self.nbytes = self.tokens + tokens, self.nbytes + nbytes
        if time.perf_counter() - self._shown > 0.5:
            self.shard_done(0)

    def shard_done(self, n: int = 1) -> None:
        self.done += n
        self._shown = time.perf_counter()
        secs = max(self._shown - self.start, 1e-9)
        if not self.bar.disable:
            self.bar.set_postfix_str(
                f"tok/s={self.tokens / secs:,.0f} MB/s={self.nbytes / secs / 1e6:.2f} shards={self.done}/{self.total}"
            )


def _run_pool(
    jobs: list[_Job], tokenizer: Tokenizer, workers: int, bar: _Progress
) -> dict[int, dict[str, Any]]:
    """Run shard jobs on ``workers`` spawned processes; per-batch progress arrives through a queue."""
    ctx = mp.get_context("spawn")
    progress_queue = None if bar.bar.disable else ctx.Queue()
    records: dict[int, dict[str, Any]] = {}
    stack = contextlib.ExitStack()
    initargs = (_tokenizer_ref(tokenizer, stack), os.getpid(), progress_queue)
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=initargs)
    try:
        pending = {pool.submit(_worker_job, job) for job in jobs}
        while pending:
            done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            _drain(progress_queue, bar)
            for future in done:
                k, records[k] = future.result()
                bar.shard_done()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        stack.close()
    _drain(progress_queue, bar)
    return records


def _drain(progress_queue: Any, bar: _Progress) -> None:
    while progress_queue is not None:
        try:
            bar.update(*progress_queue.get_nowait())
        except queue.Empty:
            return


# ====================================================================== tokenize
def _settings(
    spec: SourceSpec, tokenizer: Tokenizer, units: list[Unit], part_bytes: int, docs_per_shard: int | None
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "source": asdict(spec),
        "layout": {"part_bytes": part_bytes, "docs_per_shard": docs_per_shard, "dtype": TOKEN_DTYPE.str},
        "tokenizer": {
            "name": tokenizer.name_or_path,
            "fingerprint": tokenizer_fingerprint(tokenizer),
            "vocab_size": tokenizer.vocab_size,
        },
        "units": [asdict(u) for u in units],
    }


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to reuse shards: all but tokenizer name and ``on_error``."""
    out = {key: settings.get(key) for key in _SETTINGS_KEYS}
    if "shards" in settings:  # meta.json
        out["units"] = [record["unit"] for record in settings["shards"]]
    out["tokenizer"] = (settings.get("tokenizer") or {}).get("fingerprint")
    out["source"] = {k: v for k, v in (settings.get("source") or {}).items() if k != "on_error"}
    return out


def _check_existing(dest: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse (unless ``overwrite``: then delete them) shards made with other settings."""
    new = _comparable(settings)
    for path in (dest / META_FILE, dest / RUN_FILE):
        old = _comparable(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else new
        if not (diff := [key for key in _SETTINGS_KEYS if old[key] != new[key]]):
            continue
        if overwrite:
            for stale in [*dest.glob("shard_*"), dest / META_FILE, dest / RUN_FILE]:
                stale.unlink(missing_ok=True)
            return
        what = [f"{key} differs" for key in diff if key != "tokenizer"]
        if "tokenizer" in diff:
            what.insert(0, f"tokenizer fingerprint {str(old['tokenizer'])[:12]} != {new['tokenizer'][:12]}")
        raise ValueError(
            f"{path} was made with other settings ({'; '.join(what)}); "
            "pass overwrite=True to replace the shards, or use another out_dir"
        )


def tokenize_source(
    spec: SourceSpec,
    out_dir: str | os.PathLike,
    tokenizer: Tokenizer | str | os.PathLike | None = None,
    workers: int | None = None,
    docs_per_shard: int | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    part_bytes: int = DEFAULT_PART_BYTES,
    batch_docs: int = DEFAULT_BATCH_DOCS,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Tokenize ``spec`` into ``out_dir/<spec.name>/`` (one shard per work unit); resumable.

    Args:
        tokenizer: a :class:`Tokenizer`, a path for :func:`load_tokenizer`, or None (Llama 3).
        workers: processes (spawned, each loads the tokenizer once from its path, or from a
            temporary copy when it has none, and checks its fingerprint; they die with this
            process; a script calling this needs the ``if __name__ == "__main__":`` guard); 1 runs
            in this process; None: ``min(os.cpu_count(), units to do)``.  Output does not depend on it.
        docs_per_shard: cut units by at most this many records instead of ``part_bytes``
            (see :func:`~.sources.list_units`).
        progress: show a tqdm bar (docs/s, tokens/s, MB/s) and print the report to stderr.
        overwrite: replace shards made with another tokenizer / spec / layout instead of refusing.
        batch_docs, num_threads: documents per ``encode_batch`` call and its threads (batches
            also close at about 4M characters; a document over 1M characters is encoded alone, in
            pieces: see :mod:`.shard_encode`).

    Returns:
        The report: ``docs``, ``tokens``, ``text_bytes``, ``skipped`` (totals over all shards),
        ``shards``, ``shards_reused``, ``seconds`` and ``docs_per_s`` / ``tokens_per_s`` /
        ``mb_per_s`` over the shards written by this call, and ``out_dir``.
    """
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    if tok.vocab_size > 2**32:
        raise ValueError(f"vocab_size {tok.vocab_size} does not fit uint32")
    units = list_units(spec, part_bytes=part_bytes, docs_per_shard=docs_per_shard)
    settings = _settings(spec, tok, units, part_bytes, docs_per_shard)
    dest = Path(out_dir) / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    _check_existing(dest, settings, overwrite)
    for stale in filter(is_temp_file, dest.iterdir()):  # left by a killed run
        stale.unlink(missing_ok=True)
    atomic_write(dest / RUN_FILE, _json_bytes(settings), fsync=True)
    records = {k: rec for k in range(len(units)) if (rec := _complete_record(dest, k)) is not None}
    jobs = [_Job(spec, u, dest, k, batch_docs, num_threads) for k, u in enumerate(units) if k not in records]
    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    bar = _Progress(len(units), len(records), progress)
    try:
        if workers <= 1:
            for job in jobs:
                records[job.k] = job.run(tok, bar.update)
                bar.shard_done()
        else:
            records.update(_run_pool(jobs, tok, workers, bar))
    finally:
        bar.bar.close()
    seconds = time.perf_counter() - bar.start
    meta = _write_meta(dest, settings, [records[k] for k in range(len(units))])
    report = _report(meta, dest, [records[job.k] for job in jobs], seconds)
    if progress:
        print(format_report(report), file=sys.stderr)
    return report


def _write_meta(dest: Path, settings: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    skipped: dict[str, int] = {}
    for rec in records:
        for reason, n in rec["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    meta = {key: settings[key] for key in _SETTINGS_KEYS if key != "units"}  # units: in the records
    meta["shards"] = records
    meta["totals"] = {
        "docs": sum(r["docs"] for r in records),
        "tokens": sum(r["tokens"] for r in records),
        "text_bytes": sum(r["text_bytes"] for r in records),
        "skipped": dict(sorted(skipped.items())),
    }
    meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write(dest / META_FILE, _json_bytes(meta), fsync=True)
    (dest / RUN_FILE).unlink(missing_ok=True)
    return meta


def _report(
    meta: dict[str, Any], dest: Path, written: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """Totals over all shards; rates over the shards written by this call."""
    secs = max(seconds, 1e-9)
    done = {key: sum(r[key] for r in written) for key in ("docs", "tokens", "text_bytes")}
    return {
        "name": meta["source"]["name"],
        "out_dir": str(dest),
        **{key: meta["totals"][key] for key in ("docs", "tokens", "text_bytes", "skipped")},
        "shards": len(meta["shards"]),
        "shards_reused": len(meta["shards"]) - len(written),
        "seconds": round(seconds, 3),
        "docs_per_s": round(done["docs"] / secs, 1),
        "tokens_per_s": round(done["tokens"] / secs, 1),
        "mb_per_s": round(done["text_bytes"] / secs / 1e6, 3),
    }


def format_report(report: dict[str, Any]) -> str:
    """One-paragraph human summary of a :func:`tokenize_source` report."""
    skipped = ", ".join(f"{k}={v:,}" for k, v in report["skipped"].items()) or "none"
    return (
        f"{report['name']}: {report['docs']:,} docs, {report['tokens']:,} tokens in {report['shards']} shards "
        f"({report['shards_reused']} reused) -> {report['out_dir']}\n"
        f"  {report['seconds']:.1f} s, {report['docs_per_s']:,.0f} docs/s, {report['tokens_per_s']:,.0f} tokens/s, "
        f"{report['mb_per_s']:.2f} MB/s; skipped: {skipped}"
    )


# ====================================================================== reading
class ShardedSource:
    """Read-only, lazily memory-mapped view of a tokenized source directory (``out_dir/<name>``).

    Documents are numbered 0..num_docs-1 across shards in order, and their tokens form one global
    stream (documents back to back, no separators: the loader adds EOS itself).  API: :meth:`doc`
    (one document, a memmap view), :meth:`doc_lengths` / :meth:`doc_offsets` (all documents),
    :meth:`token_offset` (global position of a document's first token) and :meth:`read_tokens`
    (``n`` tokens from a global position, across documents and shards).

    Opening reads only ``meta.json``; shard files are mapped on first use (at most
    :attr:`max_open` shards at a time).  Pickling drops the maps, so each process (e.g. a
    DataLoader worker) maps the files itself.
    """

    max_open = 256

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / META_FILE).is_file():
            raise FileNotFoundError(f"{self.path}: no {META_FILE} (not tokenized, or the run did not finish)")
        self.meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{self.path}: format_version {self.meta.get('format_version')} != {FORMAT_VERSION}"
            )
        self.shards: list[dict[str, Any]] = self.meta["shards"]
        self._doc_starts = np.cumsum([0] + [r["docs"] for r in self.shards], dtype=np.int64)
        self._tok_starts = np.cumsum([0] + [r["tokens"] for r in self.shards], dtype=np.int64)
        self._maps: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._all_offsets: np.ndarray | None = None

    @property
    def num_docs(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(self._tok_starts[-1])

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the tokenizer that made the shards (:func:`tokenizer_fingerprint`)."""
        return self.meta["tokenizer"]["fingerprint"]

    def __len__(self) -> int:
        return self.num_docs

    def __repr__(self) -> str:
        return f"ShardedSource({str(self.path)!r}, docs={self.num_docs:,}, tokens={self.num_tokens:,})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": OrderedDict(), "_all_offsets": None}

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, tokens) of shard ``s``: memory maps, checked against meta.json."""
        if s in self._maps:
            self._maps.move_to_end(s)
            return self._maps[s]
        record = self.shards[s]
        bin_path = self.path / record["file"]
        offsets = np.load(bin_path.with_name(bin_path.stem + ".idx.npy"), mmap_mode="r")
        size = bin_path.stat().st_size
        if (len(offsets) - 1, int(offsets[-1]), size) != (
            record["docs"],
            record["tokens"],
            4 * record["tokens"],
        ):
            raise ValueError(f"{bin_path}: .bin / .idx.npy do not match meta.json (damaged shard?)")
        tokens = np.memmap(bin_path, dtype=TOKEN_DTYPE, mode="r") if size else np.zeros(0, TOKEN_DTYPE)
        self._maps[s] = (offsets, tokens)
        if len(self._maps) > self.max_open:
            self._maps.popitem(last=False)
        return offsets, tokens

    def _locate(self, doc: int) -> tuple[int, int]:
        if not -self.num_docs <= doc < self.num_docs:
            raise IndexError(f"document {doc} out of range for {self.num_docs} documents")
        doc %= self.num_docs
        s = int(np.searchsorted(self._doc_starts, doc, side="right")) - 1
        return s, doc - int(self._doc_starts[s])

    def doc(self, i: int) -> np.ndarray:
        """Tokens of document ``i`` (uint32, a read-only view of the shard's memmap)."""
        s, j = self._locate(i)
        offsets, tokens = self.shard(s)
        return tokens[int(offsets[j]) : int(offsets[j + 1])]

    def token_offset(self, doc: int) -> int:
        """Global position of document ``doc``'s first token (``num_docs`` gives ``num_tokens``)."""
        if doc == self.num_docs:
            return self.num_tokens
        s, j = self._locate(doc)
        return int(self._tok_starts[s]) + int(self.shard(s)[0][j])

    def doc_offsets(self) -> np.ndarray:
        """Global token offsets of all documents, int64, ``num_docs + 1`` long (cached)."""
        if self._all_offsets is None:
            parts = [self.shard(s)[0][:-1] + self._tok_starts[s] for s in range(len(self.shards))]
            self._all_offsets = np.concatenate([*parts, [self.num_tokens]]).astype(np.int64)
        return self._all_offsets

    def doc_lengths(self) -> np.ndarray:
        """Token count of every document, in order (int64)."""
        return np.diff(self.doc_offsets())

    def read_tokens(self, start: int, n: int) -> np.ndarray:
        """``n`` tokens of the global stream from position ``start`` (a uint32 copy, no separators)."""
        if start < 0 or n < 0 or start + n > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + n}) out of range for {self.num_tokens} tokens")
        out = np.empty(n, dtype=TOKEN_DTYPE)
        s, pos = int(np.searchsorted(self._tok_starts, start, side="right")) - 1, 0
        while pos < n:
            lo = start + pos - int(self._tok_starts[s])
            take = min(n - pos, int(self._tok_starts[s + 1]) - int(self._tok_starts[s]) - lo)
            out[pos : pos + take] = self.shard(s)[1][lo : lo + take]
            pos, s = pos + take, s + 1
        return out

    def verify(self) -> None:
        """Open every shard (sizes vs meta.json) and check its offsets are 0-based and non-decreasing."""
        for s in range(len(self.shards)):
            offsets = self.shard(s)[0]
            if int(offsets[0]) != 0 or np.any(np.diff(offsets) < 0):
                raise ValueError(f"{self.path}: shard {s} has inconsistent offsets")


def shard_stats(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a tokenized source dir: counts, bytes, document-length percentiles, skipped rows."""
    src = ShardedSource(path)
    lengths = src.doc_lengths() if src.num_docs else np.zeros(1, np.int64)
    totals = src.meta["totals"]
    pct = dict(zip(("p50", "p90", "p99"), np.percentile(lengths, [50, 90, 99]).tolist(), strict=True))
    return {
        "name": src.meta["source"]["name"],
        "path": str(src.path),
        "shards": len(src.shards),
        **{key: totals[key] for key in ("docs", "tokens", "text_bytes")},
        "disk_bytes": sum(p.stat().st_size for p in src.path.glob("shard_*")),
        "bytes_per_token": round(totals["text_bytes"] / max(src.num_tokens, 1), 3),
        "doc_tokens": {
            "mean": round(float(lengths.mean()), 1),
            "min": int(lengths.min()),
            **pct,
            "max": int(lengths.max()),
        },
        "skipped": totals["skipped"],
        "tokenizer": src.meta["tokenizer"],
        "created": src.meta.get("created"),
    }
