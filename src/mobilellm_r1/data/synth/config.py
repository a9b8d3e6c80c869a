"""`SynthConfig`: sizes and seed of the synthetic corpus."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of every generated file (record counts) and the seed.

    `eval_knowledge` is split into MMLU val (a fifth) and test (the rest); 5 more held-out
    questions form the MMLU dev (few-shot) split. `eval_math` is the size of both the GSM8K and
    the MATH500-style file. `noise_docs` is spread evenly over the noise kinds.
    """

    seed: int = 0
    math_docs: int = 2000
    code_docs: int = 1000
    knowledge_docs: int = 1000
    noise_docs: int = 500
    sft_general: int = 500
    sft_reasoning: int = 500
    probe_per_domain: int = 100
    eval_math: int = 200
    eval_code: int = 100
    eval_knowledge: int = 200
    n_entities: int = 300

    def __post_init__(self) -> None:
        """Reject negative sizes."""
        for f in dataclasses.fields(self):
            if f.name != "seed" and getattr(self, f.name) < 0:
                raise ValueError(f"SynthConfig.{f.name} must be >= 0, got {getattr(self, f.name)}")
        if self.n_entities < 1:
            raise ValueError("SynthConfig.n_entities must be >= 1")

    def scaled(self, factor: float) -> SynthConfig:
        """A copy with every size multiplied by `factor` (rounded; non-zero sizes stay >= 1).

        The seed is kept; `n_entities` is kept at least 30 so the world stays varied.
        """
        if factor <= 0:
            raise ValueError(f"scale factor must be > 0, got {factor}")
        sizes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "seed" and value > 0:
                sizes[f.name] = max(1, round(value * factor))
        sizes["n_entities"] = max(30, sizes["n_entities"])
        return dataclasses.replace(self, **sizes)

    def to_dict(self) -> dict[str, int]:
        """The configuration as a plain dict (field order)."""
        return dataclasses.asdict(self)
