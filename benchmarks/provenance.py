"""What every benchmark JSON records about its run (name, date, the command line, the machine),
and where and how it is written."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

from mobilellm_r1.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = Path(__file__).resolve().parents[1] / "src"


def code_revision() -> str:
    """A digest of the library's source (sha256 over src/**/*.py, paths and bytes, first 12
    hex digits): names the code a result was measured with, also on a machine that gets the
    working tree without its git history."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*.py")):
        digest.update(path.relative_to(SOURCE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine(device: str = "cuda") -> dict:
    """Versions and hardware: torch / transformers / python, host, and the GPU (or CPU) used."""
    import transformers

    info = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["gpus"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    else:
        info["torch_threads"] = torch.get_num_threads()
        info["cpu"] = platform.processor() or platform.machine()
    return info


def _script_path(argv0: str) -> str:
    """The running script as typed from the repository root: benchmarks/<name> or, for scripts in a
    subfolder, benchmarks/<folder>/<name>."""
    path = Path(argv0).resolve()
    bench = RESULTS.parent
    return str(path.relative_to(bench.parent)) if path.is_relative_to(bench) else "benchmarks/" + path.name


def result_header(benchmark: str, device: str = "cuda", launcher: str = "python") -> dict:
    """The first keys of a result JSON: benchmark, date, command (as typed), the source digest
    (`code_revision`), machine."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([launcher, _script_path(sys.argv[0]), *sys.argv[1:]]),
        "code": code_revision(),
        "machine": machine(device),
    }


def dated_result(stem: str) -> Path:
    """benchmarks/results/<stem>_<today>.json, the default output of a benchmark."""
    return RESULTS / f"{stem}_{datetime.date.today().isoformat()}.json"


def write_result(result: dict, path: str | Path, quiet: bool = False) -> None:
    """Write `result` as indented JSON through a temporary file (a run cut off while writing
    keeps the last complete file) and, unless `quiet`, say where."""
    atomic_write(Path(path), json.dumps(result, indent=2))
    if not quiet:
        print(f"\nwrote {path}")
