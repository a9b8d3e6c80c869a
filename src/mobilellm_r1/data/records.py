"""JSON-lines record files: the one reader and the one atomic writer every stage uses.

Reading goes through the JSONL reader of :mod:`.sources` (plain, ``.gz`` and ``.zst`` files; strict
UTF-8; blank lines skipped), so a bad line is a :class:`~.sources.DataError` naming ``file:line``,
and a truncated or corrupt compressed file one naming the file and the last line read.

- :func:`iter_jsonl` / :func:`read_jsonl`: the JSON values of one file, lazily / as a list.
- :func:`read_records`: the rows of files, globs or directories with their text field
  (:class:`Record`).
- :class:`JsonlWriter`: writes rows to a temporary sibling that replaces the target only when the
  block ends without an exception (the last good file survives a crash).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sources import DataError, RowFormatter, SourceSpec, Unit, source_rows, unit_rows

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Record:
    """One input row: the JSON object, its text and where it came from (``file:line``)."""

    row: dict[str, Any]
    text: str
    location: str


def _raising(rows: Iterator[tuple[Any, str]]) -> Iterator[tuple[Any, str]]:
    """Pass (row, location) pairs through; a :class:`DataError` in place of a row is raised."""
    for row, where in rows:
        if isinstance(row, DataError):
            raise row
        yield row, where


def iter_jsonl(path: PathLike) -> Iterator[tuple[Any, str]]:
    """(JSON value, ``file:line``) of each non-blank line of one JSONL file (plain, .gz, .zst);
    :class:`DataError` for a malformed line or an unreadable file, FileNotFoundError if absent."""
    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path!r}")
    spec = SourceSpec(name="records", path=path, format="jsonl")
    return _raising(unit_rows(spec, Unit("jsonl", path)))


def read_jsonl(path: PathLike) -> list[Any]:
    """The JSON values of every non-blank line of one JSONL file (see :func:`iter_jsonl`)."""
    return [row for row, _ in iter_jsonl(path)]


def _path_list(inputs: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(p) for p in inputs]


def read_records(inputs: PathLike | Sequence[PathLike], text_field: str = "text") -> Iterator[Record]:
    """The rows of JSONL files (plain, ``.gz``, ``.zst``; files, globs or directories) in order.

    A malformed row or a missing / non-string ``text_field`` raises
    :class:`~mobilellm_r1.data.sources.DataError` naming ``file:line`` and the field.  Blank lines
    are skipped; empty texts are kept.
    """
    spec = SourceSpec(name="records", path=_path_list(inputs), format="jsonl", text_field=text_field)
    formatter = RowFormatter(spec)
    for row, where in _raising(source_rows(spec)):
        yield Record(row, formatter.text(row, where), where)


class JsonlWriter:
    """Context manager writing JSON rows to ``path`` atomically.

    Rows go to a temporary file beside ``path``, which replaces ``path`` (``os.replace``) only when
    the block exits without an exception; otherwise it is deleted and ``path`` is untouched.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.count = 0
        self._tmp: Path | None = None
        self._file: Any = None

    def __enter__(self) -> JsonlWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp, self._file = Path(tmp), open(fd, "w", encoding="utf-8")
        return self

    def write(self, row: dict[str, Any]) -> None:
        """Append one row as a JSON line."""
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.count += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._tmp is not None
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def optional_writer(path: PathLike | None) -> contextlib.AbstractContextManager[JsonlWriter | None]:
    """A :class:`JsonlWriter` for ``path``, or a context yielding None when ``path`` is None."""
    return JsonlWriter(path) if path is not None else contextlib.nullcontext()
