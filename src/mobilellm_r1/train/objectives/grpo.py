"""GRPO (Shao et al. 2024, DeepSeekMath): reinforcement learning from verifiable rewards.

One optimizer step (``objective: grpo``):

1. take ``prompts_per_step`` prompts (seeded shuffle per epoch, resumable), render each with the
   chat template (the math system prompt by default);
2. sample ``group_size`` completions per prompt from the current policy with the
   continuous-batching engine (:class:`~mobilellm_r1.deploy.batching.BatchingEngine`; the
   prompt of a group is prefilled once and shared, finished samples leave the batch);
3. reward each completion with the evaluation harness's math judge: 1 if its final answer
   (the ``boxed`` protocol, strictly: the last ``\\boxed{}``; a completion without one has no
   answer) equals the gold answer, else 0; the judge never evaluates completion text;
4. group-normalised advantage ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)``, the same
   for every token of completion i (groups whose rewards are all equal carry no signal);
5. ``iterations`` gradient passes over the rollouts minimising, per completion token t,

       -min(rho_t A, clip(rho_t, 1 - clip_eps, 1 + clip_eps) A) + beta * KL_t,
       rho_t = pi(y_t) / pi_old(y_t),  KL_t = exp(q_t) - q_t - 1,  q_t = log pi_ref(y_t) - log pi(y_t)

   (the k3 estimator of KL(pi || pi_ref) against the frozen initial policy), averaged over each
   completion's tokens then over completions (``loss_agg: seq``, the GRPO paper) or over all
   tokens of the step (``loss_agg: token``, DAPO). With ``iterations: 1`` pi_old is the policy
   itself, so rho = 1 and nothing is clipped: clipping only acts from the second pass on.

Before step 1 the prompt set can be narrowed: ``pool_size`` keeps a seeded sample of that many
prompts, and ``filter_samples: k`` samples every prompt k times with the initial policy and keeps
those solved by some but not all samples (a group whose rewards are all equal has zero advantage,
so always- and never-solved prompts only cost rollouts; the pass-rate filter of DAPO-style
recipes, done once up front). The pass counts go to ``out_dir/grpo_prompt_filter.json``, which a
resumed run reads back instead of sampling again.

Logs per step: mean reward, reward std, completion length, KL, clip fraction, the fraction of
groups with a learning signal, plus the trainer's loss / lr / grad norm / tokens/s.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ...atomic import atomic_write
from ...data.records import iter_jsonl
from ...deploy.batching import BatchingEngine, kv_dtype
from ...deploy.paged_cache import PagedKVCache, blocks_for
from ...deploy.sampling import SamplingParams
from ...eval.math_grading import MathJudge, math_gold
from ...model.padding import pad_rows
from ...tokenizer import chat_messages
from ..grpo_filter import FILTER_FILE, pass_rate_summary
from ..optim import clip_gradients
from .base import Loop, Objective, StepResult, autocast

if TYPE_CHECKING:
    from ...model import Transformer
    from ...tokenizer import Tokenizer
    from ..config import GRPOSection, TrainConfig
    from ..parallel import DistInfo

IGNORE = -100
ROLLOUT_BLOCK = 16  # KV block of the rollout engine, in tokens


@dataclass
class Prompt:
    """A verifiable prompt: chat messages (no assistant turn) and the gold final answer."""

    id: str
    messages: list[dict[str, str]]
    answer: str


def _answer_of(row: dict[str, Any], where: str) -> str:
    """Gold answer: ``answer``, ``meta.answer``, or the last boxed of ``solution``."""
    for value in (row.get("answer"), (row.get("meta") or {}).get("answer")):
        if value not in (None, ""):
            return str(value)
    if row.get("solution"):
        boxed = math_gold(str(row["solution"]))
        if boxed:
            return boxed
    raise ValueError(f"{where}: no gold answer (fields answer, meta.answer, or a boxed solution)")


def _messages_of(row: dict[str, Any], where: str, system: str | None) -> list[dict[str, str]]:
    """Chat without the assistant reply: ``messages`` minus trailing assistant turns, else the
    ``problem`` / ``question`` / ``prompt`` text with the configured system prompt."""
    if row.get("messages"):
        msgs = [dict(m) for m in row["messages"]]
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
        if msgs:
            return msgs
    for key in ("problem", "question", "prompt"):
        if row.get(key):
            return chat_messages(str(row[key]), system=system)
    raise ValueError(f"{where}: no prompt (fields messages, problem, question or prompt)")


def load_prompts(paths: list[str], system: str | None = "math", domain: str | None = "math") -> list[Prompt]:
    """Verifiable prompts from jsonl files (NuminaMath-TIR style ``problem`` + ``solution``, GSM8K
    style ``question`` + ``answer``, or SFT records with ``messages`` + ``meta.answer``).

    Rows whose ``meta.domain`` differs from ``domain`` are skipped (``domain: null`` keeps all).
    A malformed line, or a row without a prompt or an answer, raises ValueError naming ``file:line``.
    """
    prompts = []
    for path in paths:
        for row, where in iter_jsonl(path):
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            meta_domain = (row.get("meta") or {}).get("domain")
            if domain and meta_domain and meta_domain != domain:
                continue
            answer = row.get("answer", "")
            if isinstance(answer, str) and "####" in answer:  # GSM8K: the number after ####
                row = row | {"answer": answer.split("####")[-1].strip().replace(",", "")}
            rid = str(row.get("id", f"{Path(path).stem}:{where.rsplit(':', 1)[1]}"))
            prompts.append(Prompt(rid, _messages_of(row, where, system), _answer_of(row, where)))
    if not prompts:
        raise ValueError(f"no prompts in {paths}")
    return prompts


def seeded_pool(prompts: list[Prompt], size: int, seed: int) -> list[Prompt]:
    """A seeded sample of `size` prompts in file order (all of them when `size` is 0 or more)."""
    if not size or size >= len(prompts):
        return prompts
    picked = random.Random(seed).sample(range(len(prompts)), size)
    return [prompts[i] for i in sorted(picked)]


class PromptSampler:
    """Endless seeded epochs over the prompts; ``state_dict`` resumes exactly."""

    def __init__(self, prompts: list[Prompt], seed: int) -> None:
        self.prompts, self.seed = prompts, seed
        self.epoch, self.index = 0, 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[Prompt]:
        out = []
        while len(out) < n:
            if self.index == len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self.prompts[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._shuffle()


# ------------------------------------------------------------------------------ maths
def group_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """rewards [P, G] -> advantages [P, G]: (r - group mean) / (group std + eps), std with ddof=0."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, correction=0)
    return (rewards - mean) / (std + eps)


def token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int = 1024) -> Tensor:
    """log p(targets) from final hidden states, without materialising all logits.

    hidden [N, d], weight [V, d], targets [N] -> [N] float32. Each chunk's [chunk, V] logits are
    recomputed in backward (activation checkpointing), so only one chunk's logits are alive.
    """

    def piece(h: Tensor, y: Tensor) -> Tensor:
        logits = (h @ weight.T).float()  # [n, V]
        return logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)

    outs = []
    for lo in range(0, hidden.shape[0], chunk):
        h, y = hidden[lo : lo + chunk], targets[lo : lo + chunk]
        outs.append(checkpoint(piece, h, y, use_reentrant=False) if torch.is_grad_enabled() else piece(h, y))
    return torch.cat(outs) if outs else hidden.new_zeros(0, dtype=torch.float32)


def grpo_token_loss(
    logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, adv: Tensor, clip_eps: float, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token GRPO loss, KL and clipped flag (all [N]); see the module docstring."""
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    was_clipped = (ratio * adv > clipped * adv).float()
    if ref_logp is None:
        kl = torch.zeros_like(logp)
    else:
        q = ref_logp - logp
        kl = torch.exp(q) - q - 1
    return -(surrogate - beta * kl), kl.detach(), was_clipped


@dataclass
class Rollout:
    """One step's completions, flattened over prompts x group: rows are prompt + completion."""

    ids: Tensor  # [R, L] right-padded
    targets: Tensor  # [R, L-1]: next tokens, IGNORE outside completions
    adv: Tensor  # [R]
    rewards: Tensor  # [P, G]
    lengths: list[int]  # completion tokens per row
    old_logp: Tensor | None = None  # [R, L-1]
    ref_logp: Tensor | None = None  # [R, L-1]
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Frozen:
    """The frozen initial policy, held outside the objective's module tree: never trained,
    sharded or checkpointed (None when `kl_beta` is 0)."""

    model: Transformer | None


class GRPOObjective(Objective):
    """GRPO steps: prompts instead of a token mixture, sampled, judged and reinforced (module
    docstring). Runs in one process; the math judge's workers live until `close`."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, grpo: GRPOSection, **loss: Any) -> None:
        """`loss`: the base class's chunking options (held-out NLL)."""
        super().__init__(model, **loss)
        self.judge = MathJudge(workers=grpo.judge_workers)
        # made before any resume: the reference is always the initial policy
        frozen = copy.deepcopy(model).eval().requires_grad_(False) if grpo.kl_beta > 0 else None
        self.reference = Frozen(frozen)
        self.tokenizer = tokenizer

    loss_kernels = ("chunked",)  # its loss is not plain cross-entropy

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        if not cfg.grpo.prompts:
            raise ValueError("objective grpo needs grpo.prompts (jsonl files of verifiable prompts)")

    @classmethod
    def build(
        cls, cfg: TrainConfig, model: Transformer, tokenizer: Tokenizer, dist: DistInfo
    ) -> GRPOObjective:
        if dist.distributed:
            raise ValueError("GRPO runs in one process (one GPU or CPU); launch it without torchrun")
        loss = {"chunk_tokens": cfg.loss_chunk_tokens, "document_mask": cfg.data.document_mask}
        return cls(model, tokenizer, cfg.grpo, fused_loss=cfg.compile, **loss)

    def batches(self, cfg: TrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> tuple[PromptSampler, int]:
        g = cfg.grpo
        prompts = seeded_pool(
            load_prompts(g.prompts, system=g.system, domain=g.domain), g.pool_size, cfg.seed
        )
        if g.filter_samples:
            prompts = self._filtered(cfg, dist, prompts)
        return PromptSampler(prompts, seed=cfg.seed), self.model.config.max_position_embeddings

    # ------------------------------------------------------------------ prompt filter
    def _filtered(self, cfg: TrainConfig, dist: DistInfo, prompts: list[Prompt]) -> list[Prompt]:
        """The prompts the initial policy solves in some but not all of `filter_samples` samples
        (module docstring); the counts are read back from `out_dir` when this run made them."""
        g = cfg.grpo
        path = Path(cfg.out_dir) / FILTER_FILE
        settings = [
            [p.id for p in prompts],
            g.filter_samples,
            g.temperature,
            g.top_p,
            g.max_new_tokens,
            cfg.seed,
        ]
        digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()
        saved = json.loads(path.read_text()) if path.exists() else {}
        if saved.get("digest") == digest:
            counts = list(saved["solved"])
        else:
            counts = self._pass_counts(cfg, dist, prompts)
            record = {"digest": digest, "samples": g.filter_samples, "ids": settings[0], "solved": counts}
            atomic_write(path, json.dumps(record))
        k = g.filter_samples
        kept = [p for p, c in zip(prompts, counts, strict=True) if 0 < c < k]
        tally = pass_rate_summary(counts, k)
        print(
            f"GRPO prompt filter: {len(prompts)} prompts x {k} samples: kept {len(kept)} "
            f"(never solved {tally['never']}, always solved {tally['always']}); counts in {path}",
            file=sys.stderr,
        )
        if not kept:
            raise ValueError(
                f"grpo.filter_samples={k}: no prompt of {g.prompts} is solved by some but not all "
                f"samples of the initial policy (never {tally['never']}, always {tally['always']}); "
                "use easier or harder prompts, more samples, or filter_samples: 0"
            )
        return kept

    def _pass_counts(self, cfg: TrainConfig, dist: DistInfo, prompts: list[Prompt]) -> list[int]:
        """How many of `filter_samples` samples of each prompt are right, in rollouts the size of
        a training step's (prompts_per_step x group_size rows)."""
        from tqdm.auto import tqdm

        g, k = cfg.grpo, cfg.grpo.filter_samples
        chunk = max(1, g.prompts_per_step * g.group_size // k)
        counts: list[int] = []
        bar = tqdm(
            total=len(prompts), desc="filter prompts", unit="prompt", file=sys.stderr, dynamic_ncols=True
        )
        for lo in range(0, len(prompts), chunk):
            part = prompts[lo : lo + chunk]
            seed = cfg.seed * 100_003 + 1_000_000_000 + lo  # apart from the training steps' seeds
            _, completions = self._generate(cfg, dist, part, k, seed)
            pairs = [
                (p.answer, c.text or "") for p, group in zip(part, completions, strict=True) for c in group
            ]
            right = [v.correct for v in self.judge.judge_many(pairs, "boxed")]
            counts += [sum(right[i : i + k]) for i in range(0, len(right), k)]
            bar.update(len(part))
        bar.close()
        return counts

    def close(self) -> None:
        self.judge.close()

    # ------------------------------------------------------------------ rollout
    def _generate(
        self, cfg: TrainConfig, dist: DistInfo, prompts: list[Prompt], n: int, seed: int
    ) -> tuple[list[list[int]], list[list[Any]]]:
        """`n` sampled completions of each prompt (the rollout settings of `cfg.grpo`)."""
        g = cfg.grpo
        encoded = [
            list(self.tokenizer.apply_chat_template(p.messages, add_generation_prompt=True)) for p in prompts
        ]
        params = SamplingParams(
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            n=n,
            seed=seed,
            stop_token_ids=tuple(self.tokenizer.stop_ids),
        )
        with autocast(cfg, dist):
            completions = self._engine(encoded, params).generate(encoded, params)
        self.model.train()
        return encoded, completions

    def _engine(self, encoded: list[list[int]], params: SamplingParams) -> BatchingEngine:
        """A continuous-batching engine whose KV pool holds exactly this rollout (so it never
        preempts, and frees its memory for the update that follows)."""
        rows = len(encoded) * params.n
        longest = max(len(ids) for ids in encoded) + params.max_new_tokens
        per_block = PagedKVCache.block_bytes(self.model.config, ROLLOUT_BLOCK, kv_dtype(self.model))
        budget = rows * (blocks_for(longest, ROLLOUT_BLOCK) + 1) * per_block
        return BatchingEngine(
            self.model, self.tokenizer, max_batch=rows, block_size=ROLLOUT_BLOCK, kv_budget_bytes=budget
        )

    def _rollout(self, loop: Loop) -> Rollout:
        g = loop.cfg.grpo
        prompts = loop.loader.take(g.prompts_per_step)
        encoded, completions = self._generate(
            loop.cfg, loop.dist, prompts, g.group_size, loop.cfg.seed * 100_003 + loop.step
        )
        pairs = [
            (p.answer, c.text or "") for p, group in zip(prompts, completions, strict=True) for c in group
        ]
        verdicts = self.judge.judge_many(pairs, "boxed")
        rewards = torch.tensor([float(v.correct) for v in verdicts]).view(len(prompts), g.group_size)
        rows = [(ids, c.token_ids) for ids, group in zip(encoded, completions, strict=True) for c in group]
        ids = pad_rows([p + c for p, c in rows], 0)
        targets = pad_rows([[IGNORE] * (len(p) - 1) + c for p, c in rows], IGNORE)
        has_signal = (rewards.std(dim=1) > 0).float().mean().item()
        return Rollout(
            ids, targets, group_advantages(rewards).flatten(), rewards, [len(c) for _, c in rows],
            extra={"groups_with_signal": has_signal},
        )  # fmt: skip

    # ------------------------------------------------------------------ loss
    @staticmethod
    def _logp(model: torch.nn.Module, ids: Tensor, targets: Tensor) -> Tensor:
        """[R, L-1] log-probs of `targets` (0 where IGNORE)."""
        hidden = model(ids[:, :-1], return_hidden=True)  # [R, L-1, d]
        flat_t = targets.flatten()
        keep = flat_t != IGNORE
        out = torch.zeros(flat_t.shape, device=ids.device, dtype=torch.float32)
        out[keep] = token_logprobs(hidden.flatten(0, 1)[keep], model.lm_head.weight, flat_t[keep])
        return out.view_as(targets)

    def _per_row(self, loop: Loop, model: torch.nn.Module, roll: Rollout) -> Tensor:
        """`_logp` of every rollout row under `model`, `grpo.micro_batch` rows at a time, on CPU."""
        size, dev = loop.cfg.grpo.micro_batch, loop.dist.device
        outs = []
        for lo in range(0, roll.ids.shape[0], size):
            ids, tg = roll.ids[lo : lo + size].to(dev), roll.targets[lo : lo + size].to(dev)
            with loop.autocast():
                outs.append(self._logp(model, ids, tg).cpu())
        return torch.cat(outs)

    @staticmethod
    def _token_weights(targets: Tensor, loss_agg: str) -> Tensor:
        """[R, L-1] weights that turn per-token losses into the configured mean."""
        mask = (targets != IGNORE).float()
        if loss_agg == "token":
            return mask / mask.sum().clamp(min=1)
        return mask / mask.sum(dim=1, keepdim=True).clamp(min=1) / mask.shape[0]

    def train_step(self, loop: Loop) -> StepResult:
        """Roll out, then `grpo.iterations` optimizer steps over the rollouts."""
        g, dev = loop.cfg.grpo, loop.dist.device
        roll = self._rollout(loop)
        with torch.no_grad():
            if self.reference.model is not None:
                roll.ref_logp = self._per_row(loop, self.reference.model, roll)
            if g.iterations > 1:
                roll.old_logp = self._per_row(loop, self.model, roll)
        weights = self._token_weights(roll.targets, g.loss_agg)
        stats = {"loss": 0.0, "kl": 0.0, "clip": 0.0}
        grad_norm = 0.0
        for _ in range(g.iterations):
            for lo in range(0, roll.ids.shape[0], g.micro_batch):
                sl = slice(lo, lo + g.micro_batch)
                part = self._micro_loss(loop, roll, sl, weights[sl].to(dev))
                for k in stats:
                    stats[k] += part[k] / g.iterations
            grad_norm = clip_gradients(self.parameters(), loop.cfg.optim.grad_clip)
            loop.optimizer.step()
            loop.optimizer.zero_grad(set_to_none=True)
        return StepResult(
            stats["loss"], grad_norm, sum(roll.lengths), skipped=False, extra=_metrics(roll, stats)
        )

    def _micro_loss(self, loop: Loop, roll: Rollout, sl: slice, w: Tensor) -> dict[str, float]:
        g, dev = loop.cfg.grpo, loop.dist.device
        ids, tg = roll.ids[sl].to(dev), roll.targets[sl].to(dev)
        with loop.autocast():
            logp = self._logp(self.model, ids, tg)
        old = roll.old_logp[sl].to(dev) if roll.old_logp is not None else logp.detach()
        ref = roll.ref_logp[sl].to(dev) if roll.ref_logp is not None else None
        adv = roll.adv[sl].to(dev)[:, None].expand_as(logp)
        per_tok, kl, clipped = grpo_token_loss(logp, old, ref, adv, g.clip_eps, g.kl_beta)
        loss = (per_tok * w).sum()
        loss.backward()
        return {"loss": float(loss.detach()), "kl": float((kl * w).sum()), "clip": float((clipped * w).sum())}


def _metrics(roll: Rollout, stats: dict[str, float]) -> dict[str, float]:
    """The step's GRPO metrics: reward, its spread, completion length, KL, clip fraction."""
    return {
        "reward": roll.rewards.mean().item(),
        "reward_std": roll.rewards.std(correction=0).item(),
        "completion_len": sum(roll.lengths) / len(roll.lengths),
        "kl": stats["kl"],
        "clip_frac": stats["clip"],
        **roll.extra,
    }
