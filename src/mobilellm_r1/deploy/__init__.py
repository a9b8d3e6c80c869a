"""Deployment: fast batched generation (`generate.py`) and sampling (`sampling.py`)."""

from .generate import Completion, Generator
from .sampling import SamplingParams

__all__ = ["Completion", "Generator", "SamplingParams"]
