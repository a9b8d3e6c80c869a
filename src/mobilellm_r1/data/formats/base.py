"""What every source format shares: the :class:`SourceFormat` protocol, work units, read errors.

A format is one object (a :class:`SourceFormat` subclass instance) that lists the work units of
one file or dataset of a source and reads the rows of one unit.  Its rows are ``(row, location)``
pairs, where ``row`` is a dict of fields, or a :class:`DataError` that the caller raises or counts.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_SKIP_EXAMPLES = 5
UNREADABLE = "unreadable_file"  # DataError reason of a file that ends in a read error
BATCH_ROWS = 1024  # rows per batch of the columnar readers (parquet, hf)

Rows = Iterator[tuple[Any, str]]


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
class Unit:
    """One work unit of a source: a part of one file or dataset, read by ``FORMATS[format]``.

    jsonl: bytes ``[start, stop)`` (``stop=None``: to the end), whose first line is ``line``
    (1-based); compressed files are one unit.  parquet: rows ``[start, stop)``.  hf: contiguous
    shard ``shard`` of ``num_shards`` holding dataset rows ``[start, stop)`` (``stop=None`` when
    streaming).  text: the whole file.
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


class SpecView(Protocol):
    """What a format reads of a source spec (:class:`~mobilellm_r1.data.sources.SourceSpec`)."""

    text_field: str
    hf_split: str
    hf_config: str | None
    hf_streaming: bool

    @property
    def fields(self) -> tuple[str, ...]:
        """Row fields a document needs; columnar readers fetch only these."""
        ...


class SourceFormat:
    """One source format: how ``auto`` and directory scans find its files, its units, its rows.

    Subclasses set :attr:`name` and :attr:`suffixes` and implement :meth:`rows`; the defaults
    make each file one unit.
    """

    name = ""
    suffixes: tuple[str, ...] = ()  # lower-case file name endings this format reads

    def claims(self, filename: str) -> bool:
        """Whether ``format: auto`` reads this file name with this format."""
        return bool(self.suffixes) and filename.lower().endswith(self.suffixes)

    def scans(self, filename: str) -> bool:
        """Whether a directory given with this format explicitly includes this file."""
        return self.claims(filename)

    def whole_entry(self, entry: str, auto: bool) -> bool:
        """Whether a ``path`` entry is one dataset read as it is, not expanded to files
        (``auto``: the spec's format is ``auto``, not this one)."""
        return False

    def units(self, spec: SpecView, path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
        """The work units of one file (or dataset), in order; by default the whole file."""
        return [Unit(self.name, path)]

    def rows(self, spec: SpecView, unit: Unit, stats: ReadStats) -> Rows:
        """The (row or :class:`DataError`, location) pairs of one unit; ``stats`` counts skips
        that never become rows (blank lines)."""
        raise NotImplementedError


def until_read_error(rows: Rows, path: str) -> Rows:
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
