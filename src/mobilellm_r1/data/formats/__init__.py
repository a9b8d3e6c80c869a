"""Source formats: one module per format, one line per format in :data:`FORMATS`.

Each module defines ``FORMAT``, an instance of a :class:`~.base.SourceFormat` subclass: it says
which file names ``format: auto`` gives it, cuts a file (or dataset) into work units and reads
the rows of one unit.  :mod:`mobilellm_r1.data.sources` dispatches on this registry alone, and
every config that names a source format (source specs, data recipes, probe sets, chat sources,
``data tokenize --format``) checks the name against it.  To add a format, write
``formats/<name>.py`` and add ``"<name>": <name>.FORMAT`` below.
"""

from __future__ import annotations

from . import hf, jsonl, parquet, text
from .base import SourceFormat

FORMATS: dict[str, SourceFormat] = {
    "jsonl": jsonl.FORMAT,
    "parquet": parquet.FORMAT,
    "hf": hf.FORMAT,
    "text": text.FORMAT,
}
AUTO = "auto"  # not a format: pick one per file by its name (see SourceFormat.claims)


def format_names() -> tuple[str, ...]:
    """The values a source's ``format`` may take: every registered format, then ``auto``."""
    return (*FORMATS, AUTO)


def check_format(value: str) -> str:
    """``value`` if it is a registered format or ``auto``; else a one-line ValueError naming them."""
    if value not in format_names():
        raise ValueError(f"format: expected one of {list(format_names())}, got {value!r}")
    return value
