"""Text sources for pretraining data: JSONL (plain, .gz, .zst), Parquet and Hugging Face datasets.

A :class:`SourceSpec` names where the rows are and how a row becomes text (one field, or a
``str.format`` template over several fields).  :func:`list_units` cuts a source into work units
(byte ranges of JSONL files aligned to line starts, row ranges of Parquet files, contiguous shards
of HF datasets) in a deterministic order, and :func:`read_unit` yields the unit's
:class:`Document` s.  Bad rows raise :class:`DataError` naming the file and line / row and the
field; with ``on_error="skip"`` they are counted per reason in a :class:`ReadStats` instead.  A
file that cannot be read to its end (truncated or corrupt ``.gz`` / ``.zst`` / Parquet) is a
:class:`DataError` too (reason ``unreadable_file``, naming the file and the last row read); with
``on_error="skip"`` the rest of that file is skipped with a warning.
"""

from __future__ import annotations

import functools
import glob
import gzip
import io
import itertools
import json
import math
import os
import string
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

DEFAULT_PART_BYTES = 64 * 2**20
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSED_SUFFIXES = (".gz", ".zst")
FORMATS = ("jsonl", "parquet", "hf", "text", "auto")
MAX_SKIP_EXAMPLES = 5
_BATCH_ROWS = 1024
_SCAN_CHUNK = 4 * 2**20
_HF_SAVED_MARKERS = ("state.json", "dataset_dict.json")
UNREADABLE = "unreadable_file"  # DataError reason of a file that ends in a read error


class DataError(ValueError):
    """A row that cannot become a document; the message names the file, line / row and field.

    ``reason`` is a short key (``malformed_json``, ``invalid_utf8``, ``missing_field``, ...) used to
    count skipped rows; ``location`` is ``file:line`` / ``file:row N`` / ``dataset[split]#index``.
    """

    def __init__(self, location: str, detail: str, reason: str = "error") -> None:
        super().__init__(f"{location}: {detail}")
        self.location, self.detail, self.reason = location, detail, reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.location, self.detail, self.reason))


@dataclass(frozen=True)
class Document:
    """One text document and where it came from (``file:line``, ``file:row N`` or dataset index)."""

    text: str
    source: str
    location: str


@dataclass
class SourceSpec:
    """Where a source's rows are and how a row becomes text.

    Attributes:
        name: source name; output shards go to ``out_dir/<name>/``.
        path: a file, glob, directory, saved HF dataset dir or hub id (``format="hf"``), or a list
            of them.  Each entry expands to its files in sorted order; entries keep the given order.
        format: ``jsonl`` / ``parquet`` / ``hf`` / ``text`` (each plain-text file is one
            document: source code, LaTeX, reST...), or ``auto`` (by suffix; a directory holding a
            ``save_to_disk`` dataset is ``hf``).  ``auto`` never reaches a hub.
        text_field: the field holding the text (when there is no template).
        template: ``str.format`` template over row fields, e.g.
            ``"Question: {question}\\nAnswer: {answer}"``; fields may be strings or numbers.
        hf_split, hf_config, hf_streaming: passed to ``datasets.load_dataset``.
        on_error: ``raise`` a :class:`DataError` on a bad row, or ``skip`` it and count it.
    """

    name: str
    path: str | list[str]  # os.PathLike values are turned into str
    format: Literal["jsonl", "parquet", "hf", "text", "auto"] = "auto"
    text_field: str = "text"
    template: str | None = None
    hf_split: str = "train"
    hf_config: str | None = None
    hf_streaming: bool = False
    on_error: Literal["raise", "skip"] = "raise"

    def __post_init__(self) -> None:
        single = isinstance(self.path, (str, os.PathLike))
        self.path = os.fspath(self.path) if single else [os.fspath(p) for p in self.path]  # type: ignore[union-attr]
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(f"source name must be a plain directory name, got {self.name!r}")
        if self.format not in FORMATS:
            raise ValueError(f"source {self.name!r}: format must be one of {FORMATS}, got {self.format!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(
                f"source {self.name!r}: on_error must be 'raise' or 'skip', got {self.on_error!r}"
            )
        if not self.paths:
            raise ValueError(f"source {self.name!r}: path is empty")
        if self.template is not None:
            template_fields(self.template)

    @property
    def paths(self) -> list[str]:
        """``path`` as a list."""
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @property
    def fields(self) -> tuple[str, ...]:
        """Row fields a document needs (the template's fields, else ``text_field``)."""
        return template_fields(self.template) if self.template is not None else (self.text_field,)


@dataclass(frozen=True)
class Unit:
    """One work unit of a source: a part of one file or dataset.

    jsonl: bytes ``[start, stop)`` (``stop=None``: to the end), whose first line is ``line``
    (1-based); compressed files are one unit.  parquet: rows ``[start, stop)``.  hf: contiguous
    shard ``shard`` of ``num_shards`` holding dataset rows ``[start, stop)`` (``stop=None`` when
    streaming).
    """

    format: str
    path: str
    start: int = 0
    stop: int | None = None
    line: int = 1
    shard: int = 0
    num_shards: int = 1


@dataclass
class ReadStats:
    """Counters of a read: documents yielded and rows skipped per reason (with a few examples)."""

    docs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, message: str | None = None) -> None:
        """Count one skipped row; keep the first :data:`MAX_SKIP_EXAMPLES` messages."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if message is not None and len(self.examples) < MAX_SKIP_EXAMPLES:
            self.examples.append(message)


def template_fields(template: str) -> tuple[str, ...]:
    """Root field names used by a ``str.format`` template; positional fields are refused."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"invalid template {template!r}: {err}") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ValueError(f"template {template!r} uses a positional field; name the row field instead")
        if root not in names:
            names.append(root)
    return tuple(names)


# ====================================================================== row -> text
class RowFormatter:
    """Turns a row (a dict) into document text per a :class:`SourceSpec`."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.fields = spec.fields

    def text(self, row: Any, where: str) -> str:
        """The row's text; raises :class:`DataError` naming ``where`` and the field."""
        if not isinstance(row, dict):
            raise DataError(where, f"expected a JSON object, got {type(row).__name__}", "not_an_object")
        if self.spec.template is None:
            text = self._value(row, self.spec.text_field, where, numbers=False)
        else:
            for name in self.fields:
                self._value(row, name, where, numbers=True)
            try:
                text = self.spec.template.format_map(row)
            except (KeyError, IndexError, AttributeError, ValueError, TypeError) as err:
                raise DataError(where, f"template failed: {err!r}", "template_error") from None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                detail = f"text has an unpaired surrogate at character {err.start}"
                raise DataError(where, detail, "invalid_unicode") from None
        return text

    @staticmethod
    def _value(row: dict[str, Any], name: str, where: str, numbers: bool) -> Any:
        if name not in row:
            raise DataError(where, f"missing field {name!r}", "missing_field")
        value = row[name]
        ok = (str, int, float) if numbers else (str,)
        if not isinstance(value, ok) or isinstance(value, bool):
            kind = "null" if value is None else type(value).__name__
            raise DataError(where, f"field {name!r} is {kind}, not a string", "non_string_field")
        return value


def _emit(rows: Iterable[tuple[Any, str]], spec: SourceSpec, stats: ReadStats) -> Iterator[Document]:
    """Turn (row or DataError, location) pairs into documents, raising or counting bad and empty rows."""
    formatter = RowFormatter(spec)
    for row, where in rows:
        try:
            if isinstance(row, DataError):
                raise row
            text = formatter.text(row, where)
        except DataError as err:
            if spec.on_error == "raise":
                raise
            if err.reason == UNREADABLE:
                warnings.warn(f"skipping the rest of the file: {err}", stacklevel=2)
            stats.skip(err.reason, str(err))
            continue
        if not text:
            stats.skip("empty")
            continue
        stats.docs += 1
        yield Document(text, spec.name, where)


# ====================================================================== jsonl
def _open_binary(path: str) -> BinaryIO:
    """Open a file for binary line reading, decompressing ``.gz`` / ``.zst`` on the fly.

    Both decompressors raise at the end of a truncated stream (gzip ``EOFError``, Arrow's zstd
    ``OSError``: "Truncated compressed stream"); python-zstandard's reader would end silently.
    """
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.endswith(".zst"):
        import pyarrow as pa

        stream = pa.CompressedInputStream(pa.OSFile(path), "zstd")
        return io.BufferedReader(stream, buffer_size=2**20)  # type: ignore[arg-type]
    return open(path, "rb")


def _until_read_error(rows: Iterator[tuple[Any, str]], path: str) -> Iterator[tuple[Any, str]]:
    """Pass ``rows`` through; a read or decompression error ends them with a :class:`DataError`
    (reason :data:`UNREADABLE`) naming ``path``, the last row read and the error."""
    import pyarrow as pa

    last = None
    try:
        for row, where in rows:
            last = where
            yield row, where
    except (OSError, EOFError, zlib.error, pa.ArrowException) as err:
        row = (last or "").removeprefix(f"{path}:")
        where = "from the start" if last is None else f"after {'line ' if row.isdigit() else ''}{row}"
        detail = f"truncated or corrupt file, unreadable {where} ({type(err).__name__}: {err})"
        yield DataError(path, detail, UNREADABLE), path


def _parse_json_line(raw: bytes, where: str, first: bool) -> Any:
    """Decode one JSONL line (strict UTF-8); None for a blank line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        detail = f"invalid UTF-8 byte 0x{raw[err.start]:02x} at byte {err.start} of the line"
        raise DataError(where, detail, "invalid_utf8") from None
    if first:
        line = line.removeprefix("\ufeff")
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            where, f"malformed JSON ({err.msg} at column {err.colno})", "malformed_json"
        ) from None


def _jsonl_rows(unit: Unit, stats: ReadStats) -> Iterator[tuple[Any, str]]:
    with _open_binary(unit.path) as f:
        if unit.start:
            f.seek(unit.start)
        pos, line_no = unit.start, unit.line - 1
        for raw in f:
            if unit.stop is not None and pos >= unit.stop:
                break
            pos += len(raw)
            line_no += 1
            where = f"{unit.path}:{line_no}"
            try:
                row = _parse_json_line(raw, where, first=line_no == 1)
            except DataError as err:
                yield err, where
                continue
            if row is None:
                stats.skip("blank_line")
                continue
            yield row, where


def _jsonl_cuts(path: str, gap: int, by_lines: bool) -> list[tuple[int, int]]:
    """(byte offset, lines before it) of each part: line starts >= ``gap`` bytes (or lines) apart."""
    cuts, newlines, offset = [(0, 0)], 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            nl = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + offset  # '\n' positions
            while True:
                cut_byte, cut_lines = cuts[-1]
                j = cut_lines + gap - 1 - newlines if by_lines else np.searchsorted(nl, cut_byte + gap - 1)
                if j >= len(nl):
                    break
                cuts.append((int(nl[j]) + 1, newlines + int(j) + 1))
            newlines, offset = newlines + len(nl), offset + len(chunk)
    if len(cuts) > 1 and cuts[-1][0] >= offset:
        cuts.pop()
    return cuts


def _jsonl_units(path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
    """Plain files: line-aligned parts; compressed files: one unit (they cannot be seeked)."""
    if path.endswith(COMPRESSED_SUFFIXES):
        return [Unit("jsonl", path)]
    size = Path(path).stat().st_size
    if docs_per_shard is None and size <= part_bytes:
        return [Unit("jsonl", path, 0, size)]
    cuts = _jsonl_cuts(path, docs_per_shard or part_bytes, by_lines=docs_per_shard is not None)
    stops = [c for c, _ in cuts[1:]] + [size]
    return [Unit("jsonl", path, a, b, n + 1) for (a, n), b in zip(cuts, stops, strict=True)]


# ====================================================================== parquet
def _parquet_units(path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
    """Row ranges by row group; an unreadable file is one unit, whose read reports the error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException):
        return [Unit("parquet", path)]
    total = meta.num_rows
    if docs_per_shard is not None:
        bounds = [*list(range(0, total, docs_per_shard)), total]
    else:
        bounds, row, size = [0], 0, 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if size and size + group.total_byte_size > part_bytes:
                bounds.append(row)
                size = 0
            row += group.num_rows
            size += group.total_byte_size
        bounds.append(total)
    if total == 0:
        bounds = [0, 0]
    return [Unit("parquet", path, a, b) for a, b in itertools.pairwise(bounds)]


def _parquet_rows(spec: SourceSpec, unit: Unit) -> Iterator[tuple[Any, str]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(unit.path)
    stop = pf.metadata.num_rows if unit.stop is None else unit.stop
    groups, first_row, row = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if row < stop and row + n > unit.start:
            groups.append(g)
            first_row = row if first_row is None else first_row
        row += n
    if not groups:
        return
    present = [name for name in dict.fromkeys(spec.fields) if name in pf.schema_arrow.names]
    row = first_row
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=groups, columns=present or None):
        lo, hi = max(unit.start - row, 0), min(stop - row, batch.num_rows)
        if lo < hi:
            records = batch.slice(lo, hi - lo).select(present).to_pylist() if present else [{}] * (hi - lo)
            for i, rec in enumerate(records, start=row + lo):
                yield rec, f"{unit.path}:row {i}"
        row += batch.num_rows
        if row >= stop:
            break


# ====================================================================== hugging face
def _is_saved_dataset(path: str) -> bool:
    return any((Path(path) / marker).is_file() for marker in _HF_SAVED_MARKERS)


@functools.lru_cache(maxsize=8)
def load_hf(path: str, config: str | None, split: str, streaming: bool) -> Any:
    """A ``save_to_disk`` directory via ``load_from_disk``, else ``datasets.load_dataset`` (cached per process)."""
    import datasets

    if _is_saved_dataset(path):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{path}: saved DatasetDict has no split {split!r} (splits: {list(ds)})")
            ds = ds[split]
        return ds
    return datasets.load_dataset(path, name=config, split=split, streaming=streaming)


def _contiguous_bounds(total: int, num_shards: int, index: int) -> tuple[int, int]:
    """Rows of ``Dataset.shard(num_shards, index, contiguous=True)``."""
    div, mod = divmod(total, num_shards)
    start = div * index + min(index, mod)
    return start, start + div + (index < mod)


def _hf_units(spec: SourceSpec, path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
    ds = load_hf(path, spec.hf_config, spec.hf_split, spec.hf_streaming)
    if not hasattr(ds, "__len__"):  # streaming IterableDataset: its own data-file shards
        n = max(1, int(getattr(ds, "num_shards", getattr(ds, "n_shards", 1))))
        return [Unit("hf", path, 0, None, shard=i, num_shards=n) for i in range(n)]
    total = len(ds)
    if docs_per_shard is not None:
        n = math.ceil(total / docs_per_shard)
    else:
        n = math.ceil(ds.data.nbytes / part_bytes)
    n = max(1, min(n, total))
    return [Unit("hf", path, *_contiguous_bounds(total, n, i), shard=i, num_shards=n) for i in range(n)]


def _hf_rows(spec: SourceSpec, unit: Unit) -> Iterator[tuple[Any, str]]:
    ds = load_hf(unit.path, spec.hf_config, spec.hf_split, spec.hf_streaming)
    if unit.num_shards > 1:
        ds = ds.shard(num_shards=unit.num_shards, index=unit.shard, contiguous=True)
    label = f"{unit.path}[{spec.hf_split}]"
    if unit.stop is None and unit.num_shards > 1:
        label += f" shard {unit.shard}/{unit.num_shards}"
    for index, row in enumerate(_hf_records(ds, spec.fields), start=unit.start):
        yield row, f"{label}#{index}"


def _hf_records(ds: Any, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Rows as dicts of the needed fields (whole rows when the columns are unknown)."""
    if ds.column_names is None:
        yield from ds
        return
    present = [name for name in dict.fromkeys(fields) if name in ds.column_names]
    if present:
        ds = ds.select_columns(present)
    for batch in ds.iter(batch_size=_BATCH_ROWS):
        size = len(next(iter(batch.values()), []))
        cols = [batch[name] for name in present]
        for i in range(size):
            yield {name: col[i] for name, col in zip(present, cols, strict=True)}


# ====================================================================== plain text
def _text_rows(spec: SourceSpec, unit: Unit) -> Iterator[tuple[Any, str]]:
    """The whole file as one row ``{text_field: content}``; bad UTF-8 names the line.  The file's
    bytes are dropped before the text is yielded (a long file is held once, as text)."""
    raw = Path(unit.path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        detail = f"invalid UTF-8 byte 0x{raw[err.start]:02x} at byte {err.start}"
        yield DataError(f"{unit.path}:{line}", detail, "invalid_utf8"), f"{unit.path}:{line}"
        return
    del raw
    yield {spec.text_field: text}, unit.path


# ====================================================================== files & units
def _format_of(path: str) -> str | None:
    """``jsonl`` (.jsonl/.json/.ndjson, maybe .gz/.zst) or ``parquet`` (.parquet/.pq) by suffix, else None."""
    name = path.lower()
    if name.endswith(COMPRESSED_SUFFIXES):
        return "jsonl" if name.rsplit(".", 1)[0].endswith(JSONL_SUFFIXES) else None
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "parquet" if name.endswith(PARQUET_SUFFIXES) else None


def _expand(entry: str, fmt: str) -> list[tuple[str, str]]:
    """(format, path) pairs of one ``path`` entry, sorted."""
    if fmt == "hf" or (fmt == "auto" and Path(entry).is_dir() and _is_saved_dataset(entry)):
        return [("hf", entry)]
    if glob.has_magic(entry):
        files = sorted(p for p in glob.glob(entry, recursive=True) if Path(p).is_file())
    elif Path(entry).is_dir() and fmt == "text":
        files = sorted(str(p) for p in Path(entry).rglob("*") if p.is_file() and p.name[0] != ".")
    elif Path(entry).is_dir():
        wanted = ("jsonl", "parquet") if fmt == "auto" else (fmt,)
        found = Path(entry).rglob("*")
        files = sorted(
            str(p) for p in found if p.is_file() and p.name[0] != "." and _format_of(p.name) in wanted
        )
    elif Path(entry).is_file():
        files = [entry]
    else:
        raise FileNotFoundError(f"no such file or directory: {entry!r}")
    if not files:
        raise FileNotFoundError(f"{entry!r} matches no {'' if fmt == 'auto' else fmt + ' '}files")
    if fmt == "auto" and (unknown := [p for p in files if _format_of(p) is None]):
        raise ValueError(
            f"cannot tell the format of {unknown[0]!r} (use .jsonl[.gz|.zst] or .parquet, or set format)"
        )
    return [(fmt if fmt != "auto" else str(_format_of(p)), p) for p in files]


def resolve_files(spec: SourceSpec) -> list[tuple[str, str]]:
    """(format, path) of every file or dataset of a source: entries in order, each sorted, no repeats."""
    seen: dict[tuple[str, str], None] = {}
    for entry in spec.paths:
        for item in _expand(entry, spec.format):
            seen.setdefault(item, None)
    return list(seen)


def list_units(
    spec: SourceSpec, part_bytes: int = DEFAULT_PART_BYTES, docs_per_shard: int | None = None
) -> list[Unit]:
    """Work units of a source in a deterministic order.

    Without ``docs_per_shard`` units hold about ``part_bytes`` each (JSONL bytes on disk, Parquet
    uncompressed row-group bytes, HF arrow bytes); with it, at most ``docs_per_shard`` records
    (JSONL lines, Parquet / HF rows).  Compressed JSONL and streaming HF datasets are not re-split
    (one unit per file / per data-file shard).  Reading a large plain JSONL file's cuts takes one
    pass over it (to count the lines before each part).
    """
    if part_bytes < 1 or (docs_per_shard is not None and docs_per_shard < 1):
        raise ValueError(f"part_bytes and docs_per_shard must be >= 1, got {part_bytes}, {docs_per_shard}")
    units: list[Unit] = []
    for fmt, path in resolve_files(spec):
        if fmt == "jsonl":
            units += _jsonl_units(path, part_bytes, docs_per_shard)
        elif fmt == "parquet":
            units += _parquet_units(path, part_bytes, docs_per_shard)
        elif fmt == "text":
            units.append(Unit("text", path))
        else:
            units += _hf_units(spec, path, part_bytes, docs_per_shard)
    return units


def unit_rows(spec: SourceSpec, unit: Unit, stats: ReadStats | None = None) -> Iterator[tuple[Any, str]]:
    """The raw (row or :class:`DataError`, location) pairs of one unit, before any text formatting;
    parquet / HF readers fetch only ``spec.fields``."""
    if unit.format == "jsonl":
        return _until_read_error(_jsonl_rows(unit, stats if stats is not None else ReadStats()), unit.path)
    if unit.format == "parquet":
        return _until_read_error(_parquet_rows(spec, unit), unit.path)
    if unit.format == "hf":
        return _hf_rows(spec, unit)
    if unit.format == "text":
        return _text_rows(spec, unit)
    raise ValueError(f"unknown unit format {unit.format!r}")


def source_rows(spec: SourceSpec, stats: ReadStats | None = None) -> Iterator[tuple[Any, str]]:
    """The raw (row or :class:`DataError`, location) pairs of every unit of a source, in order."""
    for unit in list_units(spec):
        yield from unit_rows(spec, unit, stats)


def read_unit(spec: SourceSpec, unit: Unit, stats: ReadStats | None = None) -> Iterator[Document]:
    """Documents of one unit; bad rows raise :class:`DataError` or are counted in ``stats``."""
    stats = stats if stats is not None else ReadStats()
    return _emit(unit_rows(spec, unit, stats), spec, stats)


def iter_documents(
    spec: SourceSpec, stats: ReadStats | None = None, **unit_kwargs: Any
) -> Iterator[Document]:
    """All documents of a source, unit after unit (``unit_kwargs`` go to :func:`list_units`)."""
    for unit in list_units(spec, **unit_kwargs):
        yield from read_unit(spec, unit, stats)
