"""The GPU kernels one call spends its time in: `torch.profiler` over a few calls, kernels sorted by
their own device time. Used by diag/profile_train.py and influence_jvp.py --profile."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

# kernel-name markers of each kind (first match wins; lower-case): what is a matmul, what is attention
KINDS = {
    "matmul": ("nvjet", "gemm", "cutlass", "wgmma_gemm", "_mm_", "matmul"),
    "attention": ("sdpa", "flash", "fmha", "attention"),
    "compiled (triton)": ("triton_",),
    "optimizer": ("multi_tensor_apply", "fusedopti", "adam"),
    "communication": ("nccl",),
}


def kernel_kind(name: str) -> str:
    """The kind of a GPU kernel by its name (`KINDS`), "other" (eager elementwise, copies, reductions)
    when no marker matches."""
    low = name.lower()
    return next((kind for kind, marks in KINDS.items() if any(m in low for m in marks)), "other")


def top_kernels(call: Callable[[], object], top: int = 20, calls: int = 2) -> dict:
    """{"ms_per_call": GPU time per call, "kernels": [{"name", "kind", "ms", "share", "launches"}],
    "by_kind": {kind: {"ms", "share"}}}: the `top` kernels by device time per call of `call()` (run
    `calls` times under the profiler) and every kernel's time summed by `kernel_kind`."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
    total_us = sum(e.self_device_time_total for e in events) / calls
    kernels = [
        {
            "name": e.key,
            "kind": kernel_kind(e.key),
            "ms": e.self_device_time_total / calls / 1e3,
            "share": e.self_device_time_total / calls / total_us if total_us else 0.0,
            "launches": e.count // calls,
        }
        for e in events[:top]
    ]
    by_kind: dict[str, float] = {}
    for e in events:
        kind = kernel_kind(e.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total / calls
    shares = {k: {"ms": us / 1e3, "share": us / total_us if total_us else 0.0} for k, us in by_kind.items()}
    return {"ms_per_call": total_us / 1e3, "kernels": kernels, "by_kind": shares}


def print_kernels(profile_result: dict) -> None:
    print(f"  GPU time per call {profile_result['ms_per_call']:.1f} ms")
    kinds = sorted(profile_result["by_kind"].items(), key=lambda kv: -kv[1]["ms"])
    print("  by kind: " + ", ".join(f"{k} {v['ms']:.1f} ms ({100 * v['share']:.1f}%)" for k, v in kinds))
    for k in profile_result["kernels"]:
        print(f"  {k['ms']:8.2f} ms {100 * k['share']:5.1f}% {k['launches']:5d}x  {k['name'][:110]}")
