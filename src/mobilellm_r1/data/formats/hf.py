"""Hugging Face datasets: a ``save_to_disk`` directory or a hub id (``format: hf``).

A map-style dataset is cut into contiguous shards of about ``part_bytes`` arrow bytes; a
streaming one keeps its own data-file shards.  ``auto`` picks this format only for a directory
holding a saved dataset, so ``auto`` never reaches a hub.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import BATCH_ROWS, ReadStats, Rows, SourceFormat, SpecView, Unit

SAVED_MARKERS = ("state.json", "dataset_dict.json")


def is_saved_dataset(path: str) -> bool:
    """Whether ``path`` is a directory written by ``save_to_disk``."""
    return any((Path(path) / marker).is_file() for marker in SAVED_MARKERS)


@functools.lru_cache(maxsize=8)
def load_hf(path: str, config: str | None, split: str, streaming: bool) -> Any:
    """A ``save_to_disk`` directory via ``load_from_disk``, else ``datasets.load_dataset`` (cached per process)."""
    import datasets

    if is_saved_dataset(path):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{path}: saved DatasetDict has no split {split!r} (splits: {list(ds)})")
            ds = ds[split]
        return ds
    return datasets.load_dataset(path, name=config, split=split, streaming=streaming)


def contiguous_bounds(total: int, num_shards: int, index: int) -> tuple[int, int]:
    """Rows of ``Dataset.shard(num_shards, index, contiguous=True)``."""
    div, mod = divmod(total, num_shards)
    start = div * index + min(index, mod)
    return start, start + div + (index < mod)


def records(ds: Any, fields: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Rows as dicts of the needed fields (whole rows when the columns are unknown)."""
    if ds.column_names is None:
        yield from ds
        return
    present = [name for name in dict.fromkeys(fields) if name in ds.column_names]
    if present:
        ds = ds.select_columns(present)
    for batch in ds.iter(batch_size=BATCH_ROWS):
        size = len(next(iter(batch.values()), []))
        cols = [batch[name] for name in present]
        for i in range(size):
            yield {name: col[i] for name, col in zip(present, cols, strict=True)}


class HfFormat(SourceFormat):
    """A Hugging Face dataset: the ``path`` entry is the dataset (saved directory or hub id)."""

    name = "hf"

    def whole_entry(self, entry: str, auto: bool) -> bool:
        """Always when asked for by name; under ``auto`` only a saved dataset directory."""
        return not auto or (Path(entry).is_dir() and is_saved_dataset(entry))

    def units(self, spec: SpecView, path: str, part_bytes: int, docs_per_shard: int | None) -> list[Unit]:
        """Contiguous shards (map-style) or the dataset's own data-file shards (streaming)."""
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
        return [Unit("hf", path, *contiguous_bounds(total, n, i), shard=i, num_shards=n) for i in range(n)]

    def rows(self, spec: SpecView, unit: Unit, stats: ReadStats) -> Rows:
        """The shard's rows as dicts of ``spec.fields``, located ``path[split]#index``."""
        ds = load_hf(unit.path, spec.hf_config, spec.hf_split, spec.hf_streaming)
        if unit.num_shards > 1:
            ds = ds.shard(num_shards=unit.num_shards, index=unit.shard, contiguous=True)
        label = f"{unit.path}[{spec.hf_split}]"
        if unit.stop is None and unit.num_shards > 1:
            label += f" shard {unit.shard}/{unit.num_shards}"
        for index, row in enumerate(records(ds, spec.fields), start=unit.start):
            yield row, f"{label}#{index}"


FORMAT = HfFormat()
