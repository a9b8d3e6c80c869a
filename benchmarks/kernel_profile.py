"""The GPU kernels one call spends its time in: `torch.profiler` over a few calls, kernels sorted by
their own device time. Used by diag/profile_train.py and influence_jvp.py --profile."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def top_kernels(call: Callable[[], object], top: int = 20, calls: int = 2) -> dict:
    """{"ms_per_call": GPU time per call, "kernels": [{"name", "ms", "share", "launches"}]}: the
    `top` kernels by device time per call of `call()` (run `calls` times under the profiler)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
    total_us = sum(e.self_device_time_total for e in events) / calls
    kernels = [
        {
            "name": e.key,
            "ms": e.self_device_time_total / calls / 1e3,
            "share": e.self_device_time_total / calls / total_us if total_us else 0.0,
            "launches": e.count // calls,
        }
        for e in events[:top]
    ]
    return {"ms_per_call": total_us / 1e3, "kernels": kernels}


def print_kernels(profile_result: dict) -> None:
    print(f"  GPU time per call {profile_result['ms_per_call']:.1f} ms")
    for k in profile_result["kernels"]:
        print(f"  {k['ms']:8.2f} ms {100 * k['share']:5.1f}% {k['launches']:5d}x  {k['name'][:110]}")
