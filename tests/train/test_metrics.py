"""MFU both ways: against the measured matmul peak and the vendor's dense bf16 figure."""

from __future__ import annotations

import pytest
import torch

from mobilellm_r1.train import metrics
from mobilellm_r1.train.metrics import measure_peak_flops, mfu_both, vendor_peak_flops


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H200", 989.4),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA L4", 121.0),
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_vendor_peak_matches_device_names(monkeypatch, name, tflops):
    monkeypatch.setattr(metrics.torch.cuda, "get_device_name", lambda device=None: name)
    got = vendor_peak_flops(torch.device("cuda"))
    assert got == (None if tflops is None else pytest.approx(tflops * 1e12))


def test_vendor_peak_is_none_on_cpu():
    assert vendor_peak_flops(torch.device("cpu")) is None


def test_mfu_both_divides_by_each_peak():
    assert mfu_both(400e12, 800e12, 989.4e12) == {
        "mfu": pytest.approx(0.5),
        "mfu_vendor": pytest.approx(400 / 989.4),
    }
    assert mfu_both(1e9, None, None) == {"mfu": None, "mfu_vendor": None}


def test_measured_peak_is_a_positive_rate_on_cpu():
    assert measure_peak_flops(torch.device("cpu"), size=128, reps=1) > 0
