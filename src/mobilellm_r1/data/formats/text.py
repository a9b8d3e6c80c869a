"""Plain text: each file is one document (source code, LaTeX, reST...); never picked by ``auto``.

A directory given with ``format: text`` includes every file in it that is not hidden.
"""

from __future__ import annotations

from pathlib import Path

from .base import DataError, ReadStats, Rows, SourceFormat, SpecView, Unit


class TextFormat(SourceFormat):
    """Whole files as documents: the row is ``{text_field: content}``."""

    name = "text"

    def scans(self, filename: str) -> bool:
        """Every file of a directory (hidden ones are left out by the caller)."""
        return True

    def rows(self, spec: SpecView, unit: Unit, stats: ReadStats) -> Rows:
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


FORMAT = TextFormat()
