"""Stage markers: `RUN/.stages/NAME.json`, written atomically when a stage starts and when it ends.

A marker records the stage's content key (`plan.stage_key`), its state (`running` from the start,
`done` once the command exited 0, `failed` when it did not), the command line, the wall time, the device, and the command's
JSON report (the last JSON line it printed on stdout), which the run report reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_write

MARKERS = ".stages"


@dataclass
class Marker:
    """What a run knows about one stage."""

    key: str
    state: Literal["running", "done", "failed"]
    argv: list[str]
    started: float = field(default_factory=time.time)
    wall_s: float | None = None
    attempts: int = 1  # how many times the stage was started under this key (resumes + 1)
    device: str = ""
    result: Any = None  # the command's JSON report


def marker_path(run_dir: Path, name: str) -> Path:
    return run_dir / MARKERS / f"{name}.json"


def log_path(run_dir: Path, name: str) -> Path:
    """Where the stage's stdout is kept (`RUN/.stages/NAME.log`)."""
    return marker_path(run_dir, name).with_suffix(".log")


def read_marker(run_dir: Path, name: str) -> Marker | None:
    """The stage's marker, or None when there is none (or it cannot be read: the stage re-runs)."""
    path = marker_path(run_dir, name)
    try:
        data = json.loads(path.read_text())
        return Marker(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # a torn or foreign file: treat the stage as never run
        return None


def write_marker(run_dir: Path, name: str, marker: Marker) -> None:
    """Write the marker atomically (a kill leaves the old one or the new one, never a torn file)."""
    path = marker_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(asdict(marker), indent=1, default=str))


def last_json(text: str) -> Any:
    """The last line of `text` that parses as a JSON object (a command's report), or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    try:  # a multi-line JSON document (e.g. `curate` prints its report indented)
        start = text.rindex("\n{") + 1 if "\n{" in text else text.index("{")
        return json.loads(text[start:])
    except ValueError:
        return None
