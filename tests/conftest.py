"""Test-wide settings: no test may reach a model hub (these machines are offline); Triton
kernels run in Triton's CPU interpreter (set before anything imports them); under pytest-xdist
(`-n 2`, the README's command) each worker runs torch on one thread, so two workers share two
cores instead of four threads fighting over them."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRITON_INTERPRET", "1")
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
