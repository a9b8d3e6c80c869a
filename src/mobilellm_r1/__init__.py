"""mobilellm_r1: open, reproducible training of sub-billion-parameter reasoning LMs
(after MobileLLM-R1, arXiv 2509.24945).

Folders follow the pipeline: `model` (decoder, presets, HF checkpoints), `data`,
`curation`, `train`, `eval`, `deploy` (generation), with `cli` on top. The names below
are imported on first use, so `import mobilellm_r1.data.synth` does not pull in torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "ModelConfig": "mobilellm_r1.model.config",
    "preset": "mobilellm_r1.model.config",
    "build_model": "mobilellm_r1.model.model",
    "load_pretrained": "mobilellm_r1.model.hf",
    "save_pretrained": "mobilellm_r1.model.hf",
    "load_tokenizer": "mobilellm_r1.tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mobilellm_r1' has no attribute {name!r}")
