"""`TrainConfig`: one typed recipe per stage and size (YAML under `recipes/train/`).

cfg = load_train_config("train/tiny_cpu", overrides=["steps=50", "optim.lr=1e-3"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..data.packing import SFTDataConfig
from ..data.recipes import MixtureRecipe, load_mixture, recipe_path
from ..typed_config import bounded, load_config

if TYPE_CHECKING:
    from ..model.config import ModelConfig
    from ..tokenizer import Tokenizer


@dataclass
class ModelSection:
    """Which model: a preset built from scratch, or an HF directory to continue from."""

    preset: str = "tiny"
    init_from: str | None = None  # HF checkpoint directory (mid-training, SFT); overrides preset
    long_context: bool = False  # post-trained 32k variant (rope_theta x8)
    seed: int = bounded(0, ge=0)  # weight initialisation
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields, e.g. hidden_size

    def __post_init__(self) -> None:
        if self.init_from is None:  # a bad preset or override fails here, naming the field
            self.config()

    def config(self) -> ModelConfig:
        """The ModelConfig built from `preset`, `long_context` and `overrides`."""
        from ..model.config import preset

        return preset(self.preset, long_context=self.long_context, **self.overrides)

    def tokenizer(self) -> Tokenizer:
        """The run's tokenizer: `init_from`'s, else the default Llama-3 one."""
        from ..tokenizer import load_tokenizer

        return load_tokenizer(self.init_from) if self.init_from else load_tokenizer()


@dataclass
class DataSection:
    """The mixture recipe and batch geometry. Global batch = micro_batch x grad_accum x ranks."""

    recipe: str = "data/synthetic"
    overrides: list[str] = field(default_factory=list)  # applied to the mixture recipe
    micro_batch: int = bounded(8, ge=1)
    grad_accum: int = bounded(1, ge=1)
    seq_len: int | None = bounded(None, ge=1)  # default: the mixture recipe's
    # Attend only within each packed document (positions restart per document). Off: plain
    # causal attention over the packed row with positions 0..T-1, as the seeds pretrained.
    document_mask: bool = False

    def mixture(self) -> MixtureRecipe:
        """The mixture recipe with `overrides` and `seq_len` applied (what the loader streams)."""
        return load_mixture(
            self.recipe, self.overrides + ([f"seq_len={self.seq_len}"] if self.seq_len else [])
        )


@dataclass
class OptimSection:
    """AdamW and the learning-rate schedule.

    Weight decay applies to every matrix (attention, MLP, the tied embedding/LM head) and
    not to vectors (RMSNorm gains), the common Llama/OLMo choice.
    """

    lr: float = bounded(4e-3, gt=0)
    betas: tuple[float, float] = bounded((0.9, 0.95), ge=0, lt=1)
    eps: float = bounded(1e-8, gt=0)
    weight_decay: float = bounded(0.1, ge=0)
    # Max global gradient norm; null or 0: no clipping (0 as in HF Trainer, Megatron, nanoGPT).
    grad_clip: float | None = bounded(1.0, ge=0)
    schedule: Literal["linear", "cosine", "wsd", "constant"] = "linear"
    warmup_steps: int = bounded(2000, ge=0)
    final_lr_ratio: float = bounded(
        0.1, ge=0, le=1
    )  # end of decay as a fraction of lr (0.1 pretraining, 0 mid-training)
    decay_fraction: float = bounded(0.2, ge=0, le=1)  # WSD: last fraction of steps spent decaying


@dataclass
class DistillSection:
    """Logit distillation (`objective: kd`): student minimises KL to the teacher's logits.

    Live: the teacher runs every step. Offline (`topk_dir`): `train --dump-topk` runs it once
    and stores its top-k log-probs (`train/topk_store.py`); training then reads the store."""

    teacher: str | None = None  # HF causal-LM directory (or hub id) sharing the tokenizer
    temperature: float = bounded(1.0, gt=0)
    alpha_ce: float = bounded(0.0, ge=0, le=1)  # weight of next-token CE mixed in (paper: 0, pure KL)
    topk_dir: str | None = None  # offline mode: stored teacher top-k instead of a live teacher
    topk: int = bounded(64, ge=1)  # k of the store that `--dump-topk` writes
    topk_dtype: Literal["float16", "float32"] = "float16"  # stored log-prob precision


@dataclass
class GRPOSection:
    """GRPO (`objective: grpo`, see `train/objectives/grpo.py`); the paper's study: 100 steps, 32 prompts x 8."""

    prompts: list[str] = field(default_factory=list)  # jsonl files of verifiable prompts
    system: str | None = "math"  # system prompt for rows given as plain problem text
    domain: str | None = "math"  # keep rows whose meta.domain is this (null: all)
    prompts_per_step: int = bounded(32, ge=1)
    group_size: int = bounded(8, ge=1)
    max_new_tokens: int = bounded(1024, ge=1)
    temperature: float = bounded(1.0, ge=0)
    top_p: float = bounded(1.0, gt=0, le=1)
    clip_eps: float = bounded(0.2, ge=0)
    kl_beta: float = bounded(
        0.04, ge=0
    )  # weight of the k3 KL to the frozen initial policy (0: no reference model)
    iterations: int = bounded(1, ge=1)  # gradient passes per rollout (mu)
    loss_agg: Literal["seq", "token"] = "seq"  # per-completion mean (GRPO) or token mean (DAPO)
    micro_batch: int = bounded(8, ge=1)  # rows per forward/backward
    judge_workers: int = bounded(2, ge=1)
    pool_size: int = bounded(0, ge=0)  # 0: every prompt; else a seeded sample of this many
    # > 0: before step 1 each prompt is sampled this many times by the initial policy and kept only
    # if some but not all samples are right (the others give every group the same reward: no signal)
    filter_samples: int = bounded(0, ge=0)


@dataclass
class TrainConfig:
    """A training run."""

    name: str
    objective: str = "lm"  # a key of `train.objectives.OBJECTIVES` (checked there: `objective_for`)
    steps: int = bounded(1000, ge=1)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    distill: DistillSection = field(default_factory=DistillSection)
    sft: SFTDataConfig = field(default_factory=SFTDataConfig)  # conversations (objective sft)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast over fp32 master weights
    # float8 matmuls in the decoder layers' linears (train/float8.py; needs precision bf16)
    fp8: Literal["none", "tensorwise", "rowwise"] = "none"
    compile: bool = False
    activation_checkpointing: bool = False
    fsdp_reshard_after_forward: bool = True  # False: keep gathered layer weights for backward
    loss_chunk_tokens: int = bounded(4096, ge=1)  # chunked LM-head loss: tokens per chunk
    # the cross-entropy objectives' LM-head loss: chunked logits (train/losses.py) or cut
    # cross-entropy (train/cut_ce.py: no logits in memory); kd and grpo take chunked only
    loss_kernel: Literal["chunked", "cce"] = "chunked"
    out_dir: str = "runs/{name}"
    checkpoint_every: int = bounded(500, ge=0)  # 0: only at the end
    keep_last: int = bounded(3, ge=1)
    log_every: int = bounded(10, ge=1)
    eval_every: int = bounded(0, ge=0)  # held-out NLL every N steps (0: off)
    eval_files: list[str] = field(default_factory=list)  # jsonl with a "text" field
    # Benchmarks whose reference solutions are scored (eval.nll), read from eval_data_dir/<task>/
    eval_tasks: list[str] = field(default_factory=list)
    eval_data_dir: str = "data/synth/eval"
    eval_docs: int = bounded(64, ge=1)  # examples per eval file / task
    eval_rankme: bool = True  # also RankMe (Eq. 8) of the pooled hidden states of <= eval_docs eval texts
    max_bad_steps: int = bounded(5, ge=1)  # stop after this many non-finite losses in a row
    seed: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.fp8 != "none" and self.precision != "bf16":
            raise ValueError(f"fp8: {self.fp8} needs precision: bf16, got precision: {self.precision}")
        self.out_dir = self.out_dir.format(name=self.name)


def load_train_config(name_or_path: str, overrides: list[str] | None = None) -> TrainConfig:
    """A training recipe by path or shipped name (`train/tiny_cpu`), with `key=value` overrides."""
    return load_config(TrainConfig, recipe_path(name_or_path), overrides)
