"""Test-wide settings: no test may reach a model hub (these machines are offline); Triton
kernels run in Triton's CPU interpreter (set before anything imports them)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRITON_INTERPRET", "1")
