"""Fixtures shared by the curation tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny ops: one intra-op thread is much faster (and immune to a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
