"""Training metrics: JSONL (always), TensorBoard (if installed), a tqdm progress bar.

A run resumed at step `start` first drops what the killed run logged past `start` (the rows of
`metrics.jsonl`, rewritten atomically, and TensorBoard's events, through its `purge_step`), so
every step has one row however often it was re-run.

MFU = achieved training FLOP/s / (peak FLOP/s x ranks), with training FLOPs per token
= 3 x forward matmul FLOPs (`ModelConfig.flops_per_token(seq_len)["train"]`: weights incl.
the LM head, plus attention scores and values) and the peak *measured* on this device at
start-up (a large bf16 matmul on GPU, fp32 on CPU). `mfu_vendor` divides by the vendor's dense
bf16 figure instead (`vendor_peak_flops`: 989 TFLOP/s for H100 SXM / H200, the number nanochat,
torchtitan and OLMo-core quote), so both accountings can be compared with other systems.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write

METRICS = "metrics.jsonl"
# what the progress bar shows, when the step logged it (reward and kl: GRPO)
BAR_KEYS = ("loss", "reward", "kl", "lr", "grad_norm", "tokens_per_s", "mfu")
# Dense (no sparsity) bf16 tensor-core TFLOP/s from the vendors' datasheets, matched in this order
# as substrings of `torch.cuda.get_device_name()` (GH200 before H200, the H100 variants before H100).
VENDOR_BF16_TFLOPS = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)


def measure_peak_flops(device: torch.device, size: int | None = None, reps: int = 5) -> float:
    """FLOP/s of a square matmul on `device` (bf16 on CUDA, fp32 on CPU), best of `reps`."""
    cuda = device.type == "cuda"
    n = size or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def vendor_peak_flops(device: torch.device) -> float | None:
    """The vendor's dense bf16 FLOP/s for this CUDA device, None on CPU or an unlisted GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in VENDOR_BF16_TFLOPS if key in name), None)


def mfu_both(flops_per_s: float, measured_peak: float | None, vendor_peak: float | None) -> dict[str, Any]:
    """MFU against the measured matmul peak (`mfu`) and the vendor's figure (`mfu_vendor`);
    None where that peak is unknown."""
    return {
        "mfu": flops_per_s / measured_peak if measured_peak else None,
        "mfu_vendor": flops_per_s / vendor_peak if vendor_peak else None,
    }


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the rows of the JSONL file `path` up to step `last_step` (atomically); rows that do not
    parse (a line torn by a kill) are dropped with a warning naming the line."""
    if not path.exists():
        return
    kept, torn = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            step = json.loads(line)["step"]
        except (ValueError, TypeError, KeyError):
            torn.append(number)
            continue
        if isinstance(step, int) and step <= last_step:
            kept.append(line + "\n")
    if torn:
        warnings.warn(f"{path}: dropped unreadable line(s) {torn[:5]}", stacklevel=2)
    atomic_write(path, "".join(kept))


class MetricsLogger:
    """Rank 0 writes `metrics.jsonl` and TensorBoard events under `out_dir` and drives the bar."""

    def __init__(self, out_dir: Path, *, enabled: bool, total_steps: int, start: int = 0) -> None:
        self.enabled = enabled
        self._file = self._tb = self._bar = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(out_dir / METRICS, start)
        self._file = (out_dir / METRICS).open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = start + 1 if (out_dir / "tb").exists() else None  # hide events of re-run steps
            self._tb = SummaryWriter(str(out_dir / "tb"), purge_step=purge)
        except ImportError:  # tensorboard is optional
            self._tb = None
        self._bar = tqdm(total=total_steps, initial=start, desc="train", dynamic_ncols=True)

    def log_step(self, step: int, values: dict[str, Any], force: bool = False) -> None:
        """Record one step; the JSONL line is written every step, the bar text when `force`."""
        if not self.enabled:
            return
        if torch.cuda.is_available():
            values["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        record = {"step": step, **{k: v for k, v in values.items() if v is not None}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}", value, step)
        self._bar.update(1)
        if force:
            shown = {k: record[k] for k in BAR_KEYS if k in record}
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"eval/{key}", value, step)
        self._bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))

    def close(self) -> None:
        if self.enabled:
            self._bar.close()
            self._file.close()
            if self._tb is not None:
                self._tb.close()
