"""What every benchmark JSON records about its run: name, date, the command line, the machine."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import torch


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


def result_header(benchmark: str, device: str = "cuda", launcher: str = "python") -> dict:
    """The first keys of a result JSON: benchmark, date, command (as typed), machine."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([launcher, "benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine(device),
    }
