"""Leave-one-out source analysis (MobileLLM-R1, arXiv 2509.24945, Eq. 1).

A reference model theta is trained on every source of a mixture, and one model theta_without_j per
left-out source D_j on all the others.  The group impact of D_j on capability c is the change of the
loss on the capability's probing set P_c (code, math, knowledge) when D_j is left out::

    dL(D_j, P_c) = E_{z in P_c}[ loss(z; theta_without_j) - loss(z; theta) ]        (Eq. 1)

positive: leaving D_j out raises the probe loss, so D_j helps capability c.  The loss of a probing set
is the mean next-token loss over all its tokens (:func:`.influence.probe_loss`).

As in the paper's setup every run gives each source it includes the same token probability (all
weights 1), and every run trains the same number of tokens (steps x global batch x seq_len) without
repeating data: before training, each source must hold its share of the budget in the run with the
fewest sources, else the analysis stops naming the source (or, with ``cap_steps``, lowers the steps
until it holds).  One process; relative paths resolve against the working directory, as in training.

Output directory (a rerun skips runs whose ``result.json`` exists; settings must match)::

    runs/all/                  the reference run: mixture.yaml (derived recipe), the trainer's out_dir
    runs/without_<source>/     (metrics.jsonl, checkpoints/, final/), train.json, result.json
    loo.json                   per-run NLLs, the Eq. 1 table delta[source][capability], settings
    loo.md                     the table in markdown
    loo_heatmap.png            sources x capabilities, diverging colours centred at 0
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_write
from ..data.recipes import MixtureRecipe, prepare, recipe_path
from ..data.records import read_records
from ..eval.nll import text_examples
from ..typed_config import bounded, load_config, to_dict
from .figures import agg_figure, png_bytes
from .influence import Rows, probe_loss
from .mixing import write_recipe
from .progress import progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..train.config import TrainConfig

REFERENCE = "all"


@dataclass
class LOOConfig:
    """A leave-one-out analysis (YAML under ``recipes/curation/``)."""

    probes: dict[str, str]  # capability -> jsonl probing set with a `text` field
    out: str = "runs/loo"
    train: str = "train/tiny_cpu"  # training recipe (objective lm or kd)
    train_overrides: list[str] = field(default_factory=list)  # `key=value`, as `train --set`
    mixture: str | None = None  # data recipe (default: the training recipe's data.recipe)
    mixture_overrides: list[str] = field(default_factory=list)
    exclude: list[str] | None = None  # sources to leave out one at a time (default: every active one)
    eval_docs: int = 64  # first texts of each probing set
    probe_batch_size: int = bounded(8, ge=1)
    cap_steps: bool = False  # lower the steps until no source repeats, instead of failing

    def __post_init__(self) -> None:
        if not self.probes:
            raise ValueError("probes: give at least one capability -> jsonl probing set")
        if self.eval_docs < 1:
            raise ValueError(f"eval_docs must be >= 1, got {self.eval_docs}")


@dataclass(frozen=True)
class LOORun:
    """One training run: its folder name, the source it leaves out (None: reference) and its sources."""

    name: str
    excluded: str | None
    sources: tuple[str, ...]


def load_loo_config(name_or_path: str, overrides: list[str] | None = None) -> LOOConfig:
    """A LOO config by path or shipped name (``curation/loo_synthetic``), with ``key=value`` overrides."""
    return load_config(LOOConfig, recipe_path(name_or_path), overrides)


# ====================================================================== planning
def plan_runs(mixture: MixtureRecipe, exclude: list[str] | None = None) -> list[LOORun]:
    """The reference run over every active source, then one run per left-out source."""
    active = [s.name for s in mixture.active]
    if len(active) < 2:
        raise ValueError(f"mixture {mixture.name!r}: leave-one-out needs >= 2 active sources, has {active}")
    left_out = active if exclude is None else exclude
    unknown = [j for j in left_out if j not in active]
    if unknown or not left_out:
        raise ValueError(f"exclude: {unknown or left_out} not among the active sources {active}")
    runs = [LOORun(REFERENCE, None, tuple(active))]
    return runs + [LOORun(f"without_{j}", j, tuple(n for n in active if n != j)) for j in left_out]


def derived_recipe(mixture: MixtureRecipe, run: LOORun) -> MixtureRecipe:
    """The run's mixture: its sources only, each with weight 1 (equal per-source token probability)."""
    sources = [dataclasses.replace(s, weight=1.0) for s in mixture.sources if s.name in run.sources]
    note = "all sources" if run.excluded is None else f"without {run.excluded}"
    return dataclasses.replace(
        mixture,
        name=f"{mixture.name}-{run.name}",
        sources=sources,
        description=f"leave-one-out of {mixture.name}: {note}, equal weights",
    )


def source_slots(mixture: MixtureRecipe) -> dict[str, int]:
    """Tokens of one epoch of each active source: its tokenized documents plus one EOS each."""
    from ..data.shards import ShardedSource

    slots = {}
    for source in mixture.active:
        shards = ShardedSource(mixture.shard_dir(source))
        slots[source.name] = shards.num_tokens + shards.num_docs
    return slots


def max_steps_without_repeats(
    slots: Mapping[str, int], runs: list[LOORun], global_batch: int, seq_len: int
) -> int:
    """The most steps for which no run reads any source past one epoch.

    A run with n sources of equal weight sends each at most ceil(steps x global_batch / n) samples of
    seq_len + 1 tokens (the mixture's round-robin), so steps x global_batch <= n x floor(slots / (seq_len + 1)).
    """
    return min(
        len(run.sources) * (slots[name] // (seq_len + 1)) // global_batch
        for run in runs
        for name in run.sources
    )


def check_no_repeats(
    slots: Mapping[str, int], runs: list[LOORun], steps: int, global_batch: int, seq_len: int
) -> None:
    """Raise naming the first source that would be repeated at `steps` (see max_steps_without_repeats)."""
    samples = steps * global_batch
    for run in runs:
        need = math.ceil(samples / len(run.sources)) * (seq_len + 1)
        for name in run.sources:
            if slots[name] < need:
                cap = max_steps_without_repeats(slots, runs, global_batch, seq_len)
                raise ValueError(
                    f"source {name!r} holds {slots[name]:,} tokens (EOS included) but run {run.name!r} "
                    f"reads {need:,} of it ({steps} steps x {global_batch} samples / {len(run.sources)} "
                    f"sources x {seq_len + 1} tokens): it would repeat. Lower the steps to <= {cap} or "
                    "set cap_steps: true"
                )


# ====================================================================== Eq. 1 and reports
def group_impact(
    reference: Mapping[str, float], without: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Eq. 1: delta[j][c] = L_c(theta_without_j) - L_c(theta); positive: source j helps capability c."""
    return {j: {c: float(nll[c]) - float(ref) for c, ref in reference.items()} for j, nll in without.items()}


def markdown_table(reference: Mapping[str, float], delta: Mapping[str, Mapping[str, float]]) -> str:
    """The Eq. 1 table: one row per left-out source, one column per capability."""
    caps = list(reference)
    lines = [
        "| left-out source | " + " | ".join(caps) + " |",
        "|---|" + "---:|" * len(caps),
        "| *(reference NLL, all sources)* | " + " | ".join(f"{reference[c]:.4f}" for c in caps) + " |",
    ]
    lines += [f"| {j} | " + " | ".join(f"{row[c]:+.4f}" for c in caps) + " |" for j, row in delta.items()]
    note = "dL(D_j, P_c) = NLL_c(without D_j) - NLL_c(all) (Eq. 1); positive: the source helps."
    return "\n".join(["# Leave-one-out source analysis", "", note, "", *lines, ""])


def heatmap_png(delta: Mapping[str, Mapping[str, float]], capabilities: list[str]) -> bytes:
    """Sources x capabilities heat map of Eq. 1, diverging colour map centred at 0, values annotated."""
    sources = list(delta)
    values = [[delta[j][c] for c in capabilities] for j in sources]
    bound = max((abs(v) for row in values for v in row), default=0.0) or 1e-12
    fig = agg_figure((2.5 + 1.3 * len(capabilities), 1.2 + 0.55 * len(sources)))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(capabilities)), capabilities)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("probing set")
    ax.set_ylabel("left-out source")
    for i, row in enumerate(values):
        for k, v in enumerate(row):
            color = "white" if abs(v) > 0.6 * bound else "black"
            ax.text(k, i, f"{v:+.3f}", ha="center", va="center", color=color, fontsize=9)
    fig.colorbar(image, ax=ax, label="dL (Eq. 1); > 0: source helps")
    ax.set_title("Leave-one-out: loss change without each source")
    fig.tight_layout()
    return png_bytes(fig)


# ====================================================================== runs
def probe_rows(probes: Mapping[str, str], tokenizer: Any, limit: int, seq_len: int) -> dict[str, Rows]:
    """Token ids of the first `limit` texts of each probing set: BOS + text + EOS cut to seq_len + 1
    tokens, as in the trainer's held-out evaluation."""
    rows = {}
    for capability, path in probes.items():
        texts = [record.text for record in itertools.islice(read_records(path), limit)]
        if not texts:
            raise ValueError(f"probing set {capability!r}: {path} has no texts")
        rows[capability] = text_examples(tokenizer, texts, seq_len)
    return rows


def probe_nll(model: Any, rows: Mapping[str, Rows], batch_size: int = 8) -> dict[str, float]:
    """L_c of Eq. 1: the mean next-token loss over all tokens of each probing set."""
    model.eval()
    return {capability: probe_loss(model, r, batch_size=batch_size) for capability, r in rows.items()}


def _normalized(data: Any) -> Any:
    return json.loads(json.dumps(data))


def _cached(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON at `path` if it exists; refuses one written under other settings."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("settings") != settings:
        raise ValueError(
            f"{path} was written with other settings (mixture, training recipe or probes); "
            "use another out directory or delete it"
        )
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


@dataclass
class _Context:
    """What every run shares."""

    cfg: LOOConfig
    mixture: MixtureRecipe
    train: TrainConfig  # with the common step count
    rows: dict[str, Rows]  # tokenized probing sets
    device: str


def _run_one(ctx: _Context, run: LOORun, out: Path, bar: tqdm) -> tuple[dict[str, Any], bool]:
    """Train (or resume) one run and score its probing sets; returns (result, skipped). ``bar``
    (the runs' bar) is relabelled with the phase: the trainer draws its own step bar below it."""
    import torch

    from ..model.hf import load_pretrained
    from ..train.objectives import prepare_data
    from ..train.trainer import Trainer

    folder = out / "runs" / run.name
    recipe = derived_recipe(ctx.mixture, run)
    train = dataclasses.replace(
        ctx.train,
        out_dir=str(folder),
        data=dataclasses.replace(
            ctx.train.data, recipe=str(folder / "mixture.yaml"), overrides=[], seq_len=None
        ),
    )
    train_settings = {k: v for k, v in to_dict(train).items() if k != "out_dir"}
    train_settings["data"] = {k: v for k, v in train_settings["data"].items() if k != "recipe"}
    settings = _normalized(
        {
            "mixture": to_dict(recipe),
            "train": train_settings,
            "probes": ctx.cfg.probes,
            "eval_docs": ctx.cfg.eval_docs,
        }
    )
    result = _cached(folder / "result.json", settings)
    if result is not None:
        return result, True
    write_recipe(recipe, folder / "mixture.yaml")
    trained = _cached(folder / "train.json", settings)
    if trained is None:
        bar.set_description(f"loo: train {_what(run)}")
        prepare_data(train, ctx.device)
        trainer = Trainer(train, resume=True, device=ctx.device)
        trained = {"settings": settings, "summary": trainer.fit()}
        _write_json(folder / "train.json", trained)
        model = trainer.model  # the weights just exported to final/
    else:  # trained before, scoring was interrupted
        model, _ = load_pretrained(folder / "final", device=ctx.device, dtype=torch.float32)
    bar.set_description(f"loo: probe NLL {_what(run)}")
    nll = probe_nll(model, ctx.rows, ctx.cfg.probe_batch_size)
    result = {
        "run": run.name,
        "excluded": run.excluded,
        "sources": list(run.sources),
        "train": trained["summary"],
        "nll": nll,
        "settings": settings,
    }
    _write_json(folder / "result.json", result)
    return result, False


def _what(run: LOORun) -> str:
    """A run's label in the progress display: ``without synth_math`` or ``reference (all sources)``."""
    return "reference (all sources)" if run.excluded is None else f"without {run.excluded}"


def _setup(cfg: LOOConfig, device: str) -> tuple[_Context, list[LOORun], dict[str, Any]]:
    """Load the recipes, make the shards, fix the common step count (no-repeat check)."""
    from ..train.config import load_train_config

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "curate loo trains its runs one after another in one process; run it without torchrun"
        )
    train = load_train_config(cfg.train, cfg.train_overrides)
    if train.objective not in ("lm", "kd"):
        raise ValueError(
            f"{cfg.train}: leave-one-out trains on a mixture (objective lm or kd), not {train.objective}"
        )
    d = train.data
    overrides = [*d.overrides, *cfg.mixture_overrides]
    mixture = dataclasses.replace(d, recipe=cfg.mixture or d.recipe, overrides=overrides).mixture()
    runs = plan_runs(mixture, cfg.exclude)
    tokenizer = train.model.tokenizer()
    prepare(mixture, tokenizer)
    slots = source_slots(mixture)
    global_batch = d.micro_batch * d.grad_accum
    steps = train.steps
    if cfg.cap_steps:
        steps = min(steps, max_steps_without_repeats(slots, runs, global_batch, mixture.seq_len))
        if steps < 1:
            raise ValueError(
                f"cap_steps: not even one step of {global_batch} x {mixture.seq_len + 1} tokens fits "
                f"every source without repeats (tokens per source: {slots})"
            )
    check_no_repeats(slots, runs, steps, global_batch, mixture.seq_len)
    rows = probe_rows(cfg.probes, tokenizer, cfg.eval_docs, mixture.seq_len)
    settings = {
        "train_recipe": cfg.train,
        "mixture": mixture.name,
        "steps": steps,
        "steps_requested": train.steps,
        "global_batch": global_batch,
        "seq_len": mixture.seq_len,
        "tokens_per_run": steps * global_batch * mixture.seq_len,
        "source_tokens": slots,
        "probes": dict(cfg.probes),
        "eval_docs": {c: len(r) for c, r in rows.items()},
    }
    ctx = _Context(cfg, mixture, dataclasses.replace(train, steps=steps), rows, device)
    return ctx, runs, settings


def run_loo(cfg: LOOConfig, device: str = "cpu") -> dict[str, Any]:
    """Every run (skipping finished ones), then loo.json, loo.md and loo_heatmap.png; returns a report."""
    out = Path(cfg.out)
    ctx, runs, settings = _setup(cfg, device)
    results, skipped = {}, []
    with progress_bar("loo: runs", len(runs), unit="run") as bar:
        for run in runs:
            results[run.name], was_skipped = _run_one(ctx, run, out, bar)
            if was_skipped:
                skipped.append(run.name)
            bar.update(1)
    reference = results[REFERENCE]["nll"]
    delta = group_impact(reference, {r.excluded: results[r.name]["nll"] for r in runs if r.excluded})
    table = {
        "settings": settings,
        "capabilities": list(cfg.probes),
        "runs": {name: {k: v for k, v in r.items() if k != "settings"} for name, r in results.items()},
        "delta": delta,
    }
    _write_json(out / "loo.json", table)
    atomic_write(out / "loo.md", markdown_table(reference, delta))
    atomic_write(out / "loo_heatmap.png", heatmap_png(delta, list(cfg.probes)))
    return {
        "out": str(out),
        "runs": len(runs),
        "skipped": skipped,
        "steps": settings["steps"],
        "tokens_per_run": settings["tokens_per_run"],
        "reference_nll": reference,
        "delta": delta,
    }
