"""A run's report: `report.json` (`collect`) and the self-contained `report.html` (`page`).

paths = write_report(cfg, root, command=["mobilellm-r1", "run", "e2e/tiny_cpu"])
"""

from __future__ import annotations

import json
from pathlib import Path

from ...atomic import atomic_write
from ..config import PipelineConfig
from .collect import collect
from .page import render

REPORT_HTML, REPORT_JSON = "report.html", "report.json"


def write_report(cfg: PipelineConfig, root: Path, command: list[str]) -> tuple[Path, Path]:
    """Collect the run's numbers and write both files atomically; returns (html, json) paths."""
    run_dir = root / cfg.run_dir
    data = collect(cfg, root, command)
    html_path, json_path = run_dir / REPORT_HTML, run_dir / REPORT_JSON
    atomic_write(json_path, json.dumps(data, indent=1, default=str) + "\n")
    atomic_write(html_path, render(data))
    return html_path, json_path
