"""Shared by the benchmark-script tests: the scripts' `--threads` sets torch's thread count for
the whole process, so every test here gets it restored afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
