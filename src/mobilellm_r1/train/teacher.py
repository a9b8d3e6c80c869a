"""The frozen distillation teacher (paper: Llama-3.1-8B-Instruct), logits made a chunk at a time.

A teacher's full logits for one micro-batch are as large as the student's: 16 x 4096 tokens x
128,256 in bf16 is 16.8 GB. So `Teacher` runs the teacher's trunk to its final hidden states
[B, T, d] and hands the loss a `TeacherFn` that multiplies one chunk of them by the teacher's LM
head when the loss asks for that chunk (`losses.kd_loss`), like the student side. This is exact
for architectures whose logits are `final_hidden @ lm_head.T` (ours and `PLAIN_HEAD_TYPES`);
any other transformers model (logit soft-capping, logit scaling, ...) falls back to its full
logits, sliced per chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..model.hf import MODEL_TYPE, load_pretrained
from .losses import TeacherFn

# transformers model types whose causal-LM logits are exactly `base_model(ids) @ lm_head.weight.T`
PLAIN_HEAD_TYPES = ("llama", "mistral", "qwen2", "qwen3", "llama4_text")


@dataclass
class Teacher:
    """`trunk(ids [B, T]) -> [B, T, d]` final hidden states (with `head` [V, d]) or, when `head`
    is None, the full logits [B, T, V]."""

    trunk: Callable[[Tensor], Tensor]
    head: Tensor | None
    vocab_size: int

    @torch.no_grad()
    def chunks(self, ids: Tensor) -> TeacherFn:
        """Teacher logits of the flattened tokens of `ids`, on demand: (start, stop) -> [n, V]."""
        out = self.trunk(ids).flatten(0, 1)  # [B*T, d] or [B*T, V]
        if self.head is None:
            return lambda start, stop: out[start:stop]
        return lambda start, stop: out[start:stop] @ self.head.T

    @torch.no_grad()
    def __call__(self, ids: Tensor) -> Tensor:
        """Full logits [B, T, V] (top-k dumps, tests)."""
        return self.chunks(ids)(0, ids.numel()).view(*ids.shape, -1)


def load_teacher(path: str, device: torch.device) -> Teacher:
    """A frozen teacher, bf16 on GPU, fp32 on CPU. A local directory in our format (`model.hf`)
    loads with `load_pretrained`; anything else (e.g. meta-llama/Llama-3.1-8B-Instruct, a hub id
    or a directory) with transformers."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = Path(path) / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE:
        model, _ = load_pretrained(path, device=device, dtype=dtype)
        model.eval().requires_grad_(False)
        return Teacher(
            lambda ids: model(ids, return_hidden=True), model.lm_head.weight, model.config.vocab_size
        )
    import transformers

    local = Path(path).is_absolute() or path.startswith(".") or Path(path).exists()
    if local and not config.is_file():
        raise FileNotFoundError(f"distill.teacher {path!r}: no config.json there (an HF model directory)")
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"distill.teacher {path!r}: cannot load it as a transformers causal LM: {exc}"
        ) from exc
    return transformers_teacher(model.to(device))


def transformers_teacher(model: Any, per_chunk: bool | None = None) -> Teacher:
    """A loaded transformers causal LM as a frozen `Teacher`: final hidden states + LM head when
    its logits are exactly that (`PLAIN_HEAD_TYPES`, or `per_chunk=True`), else its full logits
    (`per_chunk=False` forces them)."""
    model.eval().requires_grad_(False)
    vocab = model.config.get_text_config().vocab_size
    if per_chunk if per_chunk is not None else model.config.model_type in PLAIN_HEAD_TYPES:
        base = model.base_model
        return Teacher(
            lambda ids: base(input_ids=ids).last_hidden_state, model.get_output_embeddings().weight, vocab
        )
    return Teacher(lambda ids: model(input_ids=ids).logits, None, vocab)
