"""Progress display of the long curate steps: tqdm bars on stderr labelled ``"<command>: <phase>"``.

stdout keeps only each command's final JSON report, so scripts can still parse it. The bars follow
tqdm's defaults (drawn on stderr whether or not it is a terminal); a phase whose total is known
shows the time left.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from ..data.records import PathLike, read_records


def progress_bar(
    label: str, total: float | None = None, unit: str = "row", *, leave: bool = True, disable: bool = False
) -> tqdm:
    """A bar on stderr for one phase, e.g. ``progress_bar("dedup: minhash LSH", 10_000)``; ``leave=False``
    for an inner bar that disappears when its phase ends."""
    return tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True, leave=leave, disable=disable)


def count_records(inputs: PathLike | Sequence[PathLike], text_field: str = "text") -> int:
    """The number of rows :func:`read_records` yields (one extra reading pass, so that the bars of a
    streaming step have a total and a time left)."""
    return sum(1 for _ in read_records(inputs, text_field))
