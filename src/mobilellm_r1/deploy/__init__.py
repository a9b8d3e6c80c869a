"""Deployment: static batched generation (`generate.py`), the continuous-batching engine
(`batching.py`, `paged_cache.py`), sampling (`sampling.py`), on-device export (`export.py`,
`formats/`), the OpenAI-compatible server (`serve/`) and the `generate`, `export` and `serve`
commands (`commands.py`).

The names below are imported on first use, so the command line can list `generate` without
importing torch.
"""

from .. import lazy_exports

_EXPORTS = {
    "BatchingEngine": ".batching",
    "Completion": ".generate",
    "EngineRequest": ".batching",
    "Generator": ".generate",
    "SamplingParams": ".sampling",
    "TokenEvent": ".batching",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
