"""The trainer: one loop for every objective (`train/objectives/`: lm, kd, sft, grpo).

The loop builds the model and the recipe's objective around it, then runs the objective's
optimizer steps; it names no objective. Data preparation happens before (`objectives.prepare_data`).
The objectives' default step takes `grad_accum` micro-batches per rank; the loss is the
token-mean over the whole global batch (every rank's micro-batches), so 1 rank and N ranks at
the same global batch compute the same update. bf16 autocast (single process) or FSDP2 bf16
parameter gathering (several) over fp32 master weights; gradient clipping (unless
`optim.grad_clip` is null or 0; the norm is logged either way); a step whose
loss or gradient norm is not finite is skipped, counted, and `max_bad_steps` in a row stop
the run. Checkpoints (DCP) hold model, optimizer, RNG, step and data-loader state;
`resume=True` continues from the latest intact one exactly (a corrupt one is skipped, see
`checkpoint.resume_latest`). A new run refuses an `out_dir` that is not empty unless
`overwrite=True`, which deletes that run's outputs first. Every `eval_every` steps: held-out
NLL and RankMe (paper Eq. 8) of the pooled final hidden states of the eval texts.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from ..data.mixture import Batch
from ..data.records import read_records
from ..eval.nll import reference_examples, text_examples, token_mean_nll
from ..eval.rankme import rankme_of_model
from ..model import Transformer, build_model
from ..model.config import LONG_CONTEXT
from ..model.hf import load_pretrained, save_pretrained
from ..typed_config import to_dict
from . import parallel
from .checkpoint import EXTRA, CheckpointError, resume_latest, save_checkpoint
from .config import TrainConfig
from .float8 import convert_to_float8
from .metrics import METRICS, MetricsLogger, measure_peak_flops, mfu_both, vendor_peak_flops
from .objectives import Loop, Objective, StepResult, objective_for
from .objectives.base import autocast
from .optim import build_optimizer, lr_factor, set_lr


class NonFiniteLossError(RuntimeError):
    """Raised after `max_bad_steps` consecutive steps with a non-finite loss or gradient."""


RUN_OUTPUTS = (METRICS, "tb", "checkpoints", "final")  # what a run writes under out_dir


def check_out_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Whether a run into `out` must first delete a previous run's outputs (`overwrite` of a
    used `out`). A used `out` without `resume` or `overwrite` is refused (FileExistsError), and
    so are both at once; `train` checks this before it prepares any data."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in out_dir, --overwrite replaces it: pass one")
    found = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if resume or not found:
        return False
    if not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise FileExistsError(
            f"out_dir {out} is not empty ({shown}): pass --resume to continue that run "
            "or --overwrite to replace its outputs"
        )
    return True


class _HiddenStates(nn.Module):
    """The objective seen as `model(ids, return_hidden=True)`, what `eval.rankme` calls;
    going through the objective's forward lets FSDP gather the weights."""

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, ids: torch.Tensor, return_hidden: bool = True) -> torch.Tensor:
        zeros = torch.zeros_like(ids)
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        return self.objective(Batch(ids, zeros, positions, zeros, zeros[:, 0]), output="hidden")


class Trainer:
    """Builds everything a `TrainConfig` names and runs it (see module docstring)."""

    def __init__(
        self, cfg: TrainConfig, *, resume: bool = False, device: str | None = None, overwrite: bool = False
    ) -> None:
        self.cfg = cfg
        objective_cls = objective_for(cfg)
        self.dist = parallel.init_distributed(device)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self.out = Path(cfg.out_dir)
        self._claim_out_dir(resume, overwrite)
        self.tokenizer = cfg.model.tokenizer()
        self.model = self._build_model()
        self.objective = self._wrap(self.model, objective_cls)
        self.optimizer = build_optimizer(self.objective, cfg.optim)
        self.loader, self.seq_len = self.objective.batches(cfg, self.tokenizer, self.dist)
        self.step, self.bad_steps = 0, 0
        self._eval_cache: dict[str, list[list[int]]] | None = None
        self._eval_texts: list[str] = []  # held-out texts for RankMe
        if resume:
            self._resume()
        self.logger = MetricsLogger(
            self.out, enabled=self.dist.is_main, total_steps=cfg.steps, start=self.step
        )
        self.peak_flops = measure_peak_flops(self.dist.device)
        self.vendor_peak = vendor_peak_flops(self.dist.device)

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> Transformer:
        m = self.cfg.model
        if m.init_from:
            model, _ = load_pretrained(m.init_from, device=self.dist.device, dtype=torch.float32)
            if m.long_context and model.config.max_position_embeddings < LONG_CONTEXT:
                # reasoning SFT: raise rope_theta x8 for 32k context (kept in the exported config)
                model.config = model.config.with_long_context()
            model.train()
            return model
        return build_model(m.config(), device=self.dist.device, seed=m.seed)

    def _wrap(self, model: Transformer, objective_cls: type[Objective]) -> Objective:
        """The run's objective around `model` (activation checkpointing, compiled layers and
        FSDP2 sharding applied as configured)."""
        cfg = self.cfg
        convert_to_float8(model.layers, cfg.fp8)
        if cfg.activation_checkpointing:
            parallel.apply_activation_checkpointing(model)
        if cfg.compile:
            for layer in model.layers:
                layer.compile()
        objective = objective_cls.build(cfg, model, self.tokenizer, self.dist)
        if self.dist.distributed:
            parallel.apply_fsdp(
                objective, model.layers, cfg.precision == "bf16", cfg.fsdp_reshard_after_forward
            )
        return objective

    def _claim_out_dir(self, resume: bool, overwrite: bool) -> None:
        """A new run needs an empty `out_dir` (`check_out_dir`); with `overwrite` rank 0 first
        deletes the run outputs `RUN_OUTPUTS`, nothing else."""
        if not check_out_dir(self.out, resume, overwrite):
            return
        if self.dist.is_main:
            for name in RUN_OUTPUTS:
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        parallel.barrier()

    def _resume(self) -> None:
        found = resume_latest(self.out / "checkpoints", self.objective, self.optimizer)
        if found is None:
            return
        path, extra = found
        try:
            self.step = int(extra["step"])
            self.loader.load_state_dict(extra["loader"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {path}: {EXTRA} has no valid step/loader state ({e!r})") from e

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.cfg, self.dist)

    def train_step(self) -> StepResult:
        """One optimizer step of the objective at the scheduled learning rate."""
        set_lr(self.optimizer, self.cfg.optim.lr * lr_factor(self.step, self.cfg.steps, self.cfg.optim))
        return self.objective.train_step(Loop(self.cfg, self.dist, self.optimizer, self.loader, self.step))

    # ------------------------------------------------------------------ held-out NLL
    def _eval_docs(self) -> dict[str, list[tuple[list[int], list[int]]]]:
        """(ids, labels) per held-out example, tokenized once: the first `eval_docs` texts of
        each eval file (BOS + text + EOS, every token scored) and the reference solutions of
        each eval task (only the solution tokens scored). Also sets the RankMe texts: up to
        `eval_docs` of the eval files' texts, taken from each file in turn."""
        if self._eval_cache is None:
            self._eval_cache, per_file = {}, []
            for path in self.cfg.eval_files:
                texts = [r.text for r in itertools.islice(read_records(path), self.cfg.eval_docs)]
                ids = text_examples(self.tokenizer, texts, self.seq_len)
                self._eval_cache[Path(path).stem] = [(x, x) for x in ids]
                per_file.append(texts)
            mixed = [t for group in itertools.zip_longest(*per_file) for t in group if t is not None]
            self._eval_texts = mixed[: self.cfg.eval_docs]
            for task in self.cfg.eval_tasks:
                self._eval_cache[task] = reference_examples(
                    task,
                    self.cfg.eval_data_dir,
                    self.tokenizer,
                    limit=self.cfg.eval_docs,
                    max_len=self.seq_len,
                )
        return self._eval_cache

    def _nll_sums(self, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy of a held-out batch through the objective (so FSDP gathers the
        weights) and its target count: the forward of `eval.nll.token_mean_nll`."""
        y = labels[:, 1:]
        zeros = torch.zeros_like(y)
        positions = torch.arange(y.shape[1], device=y.device).expand_as(y)
        with self._autocast():
            total = self.objective(Batch(ids[:, :-1], y, positions, zeros, zeros[:, 0]), output="nll")
        return total.float().reshape(1), (y != -100).sum()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Token-mean NLL on each eval file and task (the paper tracks benchmark NLL, its Fig. 7)
        and, with `eval_rankme`, RankMe (Eq. 8) of the mean-pooled final hidden states of the eval
        texts. Every rank computes the same values (rank 0 logs them)."""
        self.objective.eval()
        result = {}
        for name, examples in self._eval_docs().items():
            nll, _ = token_mean_nll(examples, self._nll_sums, batch_size=1, device=self.dist.device)
            result[f"nll/{name}"] = nll
        if self.cfg.eval_rankme and self._eval_texts:
            with self._autocast():
                hidden = _HiddenStates(self.objective)
                result["rankme"] = rankme_of_model(
                    hidden, self.tokenizer, self._eval_texts, max_tokens=self.seq_len
                )
        self.objective.train()
        return result

    # ------------------------------------------------------------------ loop
    def _checkpoint(self) -> None:
        extra = {"step": self.step, "loader": self.loader.state_dict(), "config": to_dict(self.cfg)}
        save_checkpoint(
            self.out / "checkpoints", self.step, self.objective, self.optimizer, extra, self.cfg.keep_last
        )

    def _after_step(self, result: StepResult, seconds: float) -> None:
        cfg = self.cfg
        self.bad_steps = self.bad_steps + 1 if result.skipped else 0
        if self.bad_steps >= cfg.max_bad_steps:
            raise NonFiniteLossError(
                f"{self.bad_steps} consecutive steps with a non-finite loss or gradient norm "
                f"(last loss {result.loss}, grad norm {result.grad_norm}) at step {self.step}; stopping"
            )
        flops = preset_flops(self.model, self.seq_len) * result.tokens
        self.logger.log_step(
            self.step,
            {
                "loss": result.loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "grad_norm": result.grad_norm,
                "tokens": result.tokens,
                "tokens_per_s": result.tokens / seconds,
                **mfu_both(flops / seconds / self.dist.world_size, self.peak_flops, self.vendor_peak),
                "skipped": int(result.skipped),
                **result.extra,
            },
            force=self.step % cfg.log_every == 0 or self.step == cfg.steps,
        )

    def fit(self) -> dict:
        """Train to `cfg.steps`; checkpoint on schedule and at the end; export the final model.
        Returns the run's summary: the last step, the steps and trained tokens of this call,
        its wall time (s, export included), the last step's loss, and the paths of the final
        HF model directory and of `metrics.jsonl`. The objective is closed at the end, also
        when training fails."""
        try:
            return self._fit()
        finally:
            self.objective.close()

    def _fit(self) -> dict:
        cfg, last, tokens, started = self.cfg, None, 0, time.perf_counter()
        first = self.step
        self.objective.train()
        while self.step < cfg.steps:
            start = time.perf_counter()
            result = self.train_step()
            self.step += 1
            last, tokens = result, tokens + result.tokens
            self._after_step(result, time.perf_counter() - start)
            if cfg.eval_every and (cfg.eval_files or cfg.eval_tasks) and self.step % cfg.eval_every == 0:
                self.logger.log_eval(self.step, self.evaluate())
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self._checkpoint()
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every:
            self._checkpoint()
        self.export(self.out / "final")
        self.logger.close()
        return {
            "step": self.step,
            "steps_run": self.step - first,
            "tokens": tokens,
            "elapsed_s": round(time.perf_counter() - started, 1),
            "loss": last.loss if last else None,
            "final_model": str(self.out / "final"),
            "metrics": str(self.out / METRICS),
        }

    def export(self, directory: Path) -> None:
        """The trained model as an HF directory (rank 0 writes; FSDP gathers the full weights)."""
        if self.dist.distributed:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full = get_model_state_dict(self.objective, options=options)
            if not self.dist.is_main:
                return
            model = build_model(self.model.config, device="cpu")
            model.load_state_dict({k.removeprefix("model."): v for k, v in full.items()})
        else:
            model = self.model
        save_pretrained(model, self.tokenizer, directory)


def preset_flops(model: Transformer, seq_len: int) -> float:
    """Training FLOPs per token (fwd + bwd = 3 x forward matmul FLOPs at this context)."""
    return model.config.flops_per_token(seq_len)["train"]
