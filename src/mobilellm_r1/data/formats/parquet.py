"""Parquet files (``.parquet`` / ``.pq``): units are row ranges cut at row-group boundaries.

Only the columns a document needs are read.  An unreadable file is one unit whose read ends in a
:class:`DataError` (reason ``unreadable_file``).
"""

from __future__ import annotations

import itertools

from .base import BATCH_ROWS, ReadStats, Rows, SourceFormat, SpecView, Unit, until_read_error


class ParquetFormat(SourceFormat):
    """Parquet files, cut into row ranges of about ``part_bytes`` uncompressed bytes."""

    name = "parquet"
    suffixes = (".parquet", ".pq")

    def units(self, spec: SpecView, path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
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

    def rows(self, spec: SpecView, unit: Unit, stats: ReadStats) -> Rows:
        """The unit's rows as dicts of ``spec.fields`` (those the file has), ``file:row N``."""
        return until_read_error(self._records(spec, unit), unit.path)

    @staticmethod
    def _records(spec: SpecView, unit: Unit) -> Rows:
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
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=present or None):
            lo, hi = max(unit.start - row, 0), min(stop - row, batch.num_rows)
            if lo < hi:
                records = (
                    batch.slice(lo, hi - lo).select(present).to_pylist() if present else [{}] * (hi - lo)
                )
                for i, rec in enumerate(records, start=row + lo):
                    yield rec, f"{unit.path}:row {i}"
            row += batch.num_rows
            if row >= stop:
                break


FORMAT = ParquetFormat()
