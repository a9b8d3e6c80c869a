"""Deployment: fast batched generation (`generate.py`), sampling (`sampling.py`) and the
`generate` command (`commands.py`).

The names below are imported on first use, so the command line can list `generate` without
importing torch.
"""

from .. import lazy_exports

_EXPORTS = {"Completion": ".generate", "Generator": ".generate", "SamplingParams": ".sampling"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
