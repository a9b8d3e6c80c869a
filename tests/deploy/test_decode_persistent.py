"""The persistent decode step's launch arithmetic (its numbers against the eager model are in
test_fused_decode.py, its compilation for sm_90 in test_decode_kernels.py)."""

from __future__ import annotations

import pytest

from mobilellm_r1.deploy.decode_persistent import SMLimits, n_phases, prefetch_sizes, resident_programs
from mobilellm_r1.model import preset

H100 = SMLimits(sms=132)


def test_phases_per_step() -> None:
    assert n_phases(15, 5) == 76  # the embedding, then qkv, attention, o, gate_up, down per layer
    assert n_phases(15, 4) == 61  # the MLP as one phase


@pytest.mark.parametrize(
    ("n_regs", "shared", "warps", "per_sm"),
    [
        (32, 0, 4, 16),  # threads bound: 2,048 / 128
        (128, 0, 4, 4),  # registers: 65,536 / (128 x 128)
        (130, 0, 4, 3),  # 130 registers round up to 136 per thread (256 per warp): 3 blocks
        (64, 100_000, 4, 2),  # shared memory: 233,472 / 100,000
        (255, 0, 8, 1),
        (16, 0, 1, 32),  # the block limit
    ],
)
def test_resident_programs(n_regs: int, shared: int, warps: int, per_sm: int) -> None:
    assert resident_programs(n_regs, shared, warps, H100) == per_sm * 132
    assert resident_programs(n_regs, shared, warps, H100, per_sm=1) == 132


def test_resident_programs_refuses_a_kernel_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        resident_programs(64, 300_000, 4, H100)


def test_prefetch_sizes() -> None:
    cfg = preset("950m")  # qkv 7.1 MB, o 4.7 MB, gate / up / down 18.9 MB each, 6 kv heads
    sizes = prefetch_sizes(cfg, 2, 4 << 20)
    assert sizes == {"PF_QKV": 4 << 20, "PF_O": 4 << 20, "PF_MLP": (4 << 20) // 3, "PF_KV": (4 << 20) // 12}
    small = prefetch_sizes(cfg, 2, 64 << 20)  # a budget past a matrix asks for that matrix only
    assert small["PF_QKV"] == 36 * 64 * 1536 * 2 and small["PF_O"] == 1536 * 1536 * 2
    assert prefetch_sizes(cfg, 2, 0) == dict.fromkeys(sizes, 0)
