"""Text sources for pretraining data: JSONL (plain, .gz, .zst), Parquet, Hugging Face datasets, plain text.

A :class:`SourceSpec` names where the rows are and how a row becomes text (one field, or a
``str.format`` template over several fields).  :func:`list_units` cuts a source into work units
(byte ranges of JSONL files aligned to line starts, row ranges of Parquet files, contiguous shards
of HF datasets) in a deterministic order, and :func:`read_unit` yields the unit's
:class:`Document` s.  Each format is one module of :mod:`.formats` and one line in its
:data:`FORMATS` registry; this module dispatches on that registry alone.  Bad rows raise
:class:`DataError` naming the file and line / row and the field; with ``on_error="skip"`` they
are counted per reason in a :class:`ReadStats` instead.  A file that cannot be read to its end
(truncated or corrupt ``.gz`` / ``.zst`` / Parquet) is a :class:`DataError` too (reason
``unreadable_file``, naming the file and the last row read); with ``on_error="skip"`` the rest of
that file is skipped with a warning.
"""

from __future__ import annotations

import glob
import os
import string
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .formats import AUTO, FORMATS, format_names
from .formats.base import MAX_SKIP_EXAMPLES as MAX_SKIP_EXAMPLES
from .formats.base import UNREADABLE, DataError, ReadStats, Unit

DEFAULT_PART_BYTES = 64 * 2**20


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
        format: a key of :data:`FORMATS`: ``jsonl`` / ``parquet`` / ``hf`` / ``text`` (each
            plain-text file is one document: source code, LaTeX, reST...), or ``auto`` (by
            suffix; a directory holding a ``save_to_disk`` dataset is ``hf``).  ``auto`` never
            reaches a hub.
        text_field: the field holding the text (when there is no template).
        template: ``str.format`` template over row fields, e.g.
            ``"Question: {question}\\nAnswer: {answer}"``; fields may be strings or numbers.
        hf_split, hf_config, hf_streaming: passed to ``datasets.load_dataset``.
        on_error: ``raise`` a :class:`DataError` on a bad row, or ``skip`` it and count it.
    """

    name: str
    path: str | list[str]  # os.PathLike values are turned into str
    format: str = AUTO  # a key of FORMATS, or "auto"
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
        if self.format not in format_names():
            raise ValueError(
                f"source {self.name!r}: format must be one of {format_names()}, got {self.format!r}"
            )
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


# ====================================================================== files & units
def _format_of(path: str) -> str | None:
    """The registered format that ``auto`` reads this file name with (see
    :meth:`~.formats.base.SourceFormat.claims`), else None."""
    return next((name for name, fmt in FORMATS.items() if fmt.claims(path)), None)


def _whole_entry(entry: str, fmt: str) -> str | None:
    """The format reading ``entry`` as one dataset (not expanded to files), if any."""
    if fmt != AUTO:
        return fmt if FORMATS[fmt].whole_entry(entry, auto=False) else None
    return next((name for name, f in FORMATS.items() if f.whole_entry(entry, auto=True)), None)


def _scanned(filename: str, fmt: str) -> bool:
    """Whether a directory scan for ``fmt`` includes ``filename``."""
    return _format_of(filename) is not None if fmt == AUTO else FORMATS[fmt].scans(filename)


def _expand(entry: str, fmt: str) -> list[tuple[str, str]]:
    """(format, path) pairs of one ``path`` entry, sorted."""
    if (whole := _whole_entry(entry, fmt)) is not None:
        return [(whole, entry)]
    if glob.has_magic(entry):
        files = sorted(p for p in glob.glob(entry, recursive=True) if Path(p).is_file())
    elif Path(entry).is_dir():
        found = Path(entry).rglob("*")
        files = sorted(str(p) for p in found if p.is_file() and p.name[0] != "." and _scanned(p.name, fmt))
    elif Path(entry).is_file():
        files = [entry]
    else:
        raise FileNotFoundError(f"no such file or directory: {entry!r}")
    if not files:
        raise FileNotFoundError(f"{entry!r} matches no {'' if fmt == AUTO else fmt + ' '}files")
    if fmt == AUTO and (unknown := [p for p in files if _format_of(p) is None]):
        raise ValueError(
            f"cannot tell the format of {unknown[0]!r} (use .jsonl[.gz|.zst] or .parquet, or set format)"
        )
    return [(fmt if fmt != AUTO else str(_format_of(p)), p) for p in files]


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
        units += FORMATS[fmt].units(spec, path, part_bytes, docs_per_shard)
    return units


def unit_rows(spec: SourceSpec, unit: Unit, stats: ReadStats | None = None) -> Iterator[tuple[Any, str]]:
    """The raw (row or :class:`DataError`, location) pairs of one unit, before any text formatting;
    parquet / HF readers fetch only ``spec.fields``."""
    if unit.format not in FORMATS:
        raise ValueError(f"unknown unit format {unit.format!r}")
    return FORMATS[unit.format].rows(spec, unit, stats if stats is not None else ReadStats())


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
