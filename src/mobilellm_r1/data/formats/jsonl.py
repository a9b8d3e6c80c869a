"""JSON Lines (``.jsonl`` / ``.json`` / ``.ndjson``, plain or ``.gz`` / ``.zst``): one object a line.

Plain files are cut into line-aligned byte ranges; compressed files are one unit (they cannot be
seeked).  A line that is not strict UTF-8 or not JSON is a :class:`DataError` naming ``file:line``.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any, BinaryIO

from .base import DataError, ReadStats, Rows, SourceFormat, SpecView, Unit, until_read_error

SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSED_SUFFIXES = (".gz", ".zst")
SCAN_CHUNK = 4 * 2**20


def open_binary(path: str) -> BinaryIO:
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


def parse_json_line(raw: bytes, where: str, first: bool) -> Any:
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


def line_cuts(path: str, gap: int, by_lines: bool) -> list[tuple[int, int]]:
    """(byte offset, lines before it) of each part: line starts >= ``gap`` bytes (or lines) apart."""
    import numpy as np

    cuts, newlines, offset = [(0, 0)], 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(SCAN_CHUNK):
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


class JsonlFormat(SourceFormat):
    """JSON Lines files, plain (cut at line starts) or compressed (one unit each)."""

    name = "jsonl"
    suffixes = SUFFIXES

    def claims(self, filename: str) -> bool:
        """``.jsonl`` / ``.json`` / ``.ndjson``, maybe followed by ``.gz`` / ``.zst``."""
        name = filename.lower()
        if name.endswith(COMPRESSED_SUFFIXES):
            name = name.rsplit(".", 1)[0]
        return name.endswith(SUFFIXES)

    def units(self, spec: SpecView, path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
        """Plain files: line-aligned parts; compressed files: one unit (they cannot be seeked)."""
        if path.endswith(COMPRESSED_SUFFIXES):
            return [Unit("jsonl", path)]
        size = Path(path).stat().st_size
        if docs_per_shard is None and size <= part_bytes:
            return [Unit("jsonl", path, 0, size)]
        cuts = line_cuts(path, docs_per_shard or part_bytes, by_lines=docs_per_shard is not None)
        stops = [c for c, _ in cuts[1:]] + [size]
        return [Unit("jsonl", path, a, b, n + 1) for (a, n), b in zip(cuts, stops, strict=True)]

    def rows(self, spec: SpecView, unit: Unit, stats: ReadStats) -> Rows:
        """Parsed lines of the unit's byte range; blank lines are counted in ``stats``."""
        return until_read_error(self._lines(unit, stats), unit.path)

    @staticmethod
    def _lines(unit: Unit, stats: ReadStats) -> Rows:
        with open_binary(unit.path) as f:
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
                    row = parse_json_line(raw, where, first=line_no == 1)
                except DataError as err:
                    yield err, where
                    continue
                if row is None:
                    stats.skip("blank_line")
                    continue
                yield row, where


FORMAT = JsonlFormat()
