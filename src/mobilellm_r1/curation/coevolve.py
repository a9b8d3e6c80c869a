"""Data-model co-evolution (MobileLLM-R1 Eq. 6-7): score, keep the helpful samples, re-mix, train, repeat.

Stage t (model theta_t, pool D_t: source -> JSONL files of rows ``id`` / ``text``; a row's source is its
pool entry):

1. score every sample of D_t against the probing sets with theta_t (one checkpoint, Eq. 2-4, the
   :class:`~.influence_run.InfluenceScorer`);
2. Eq. 6: keep D_{t+1} = {x in D_t : I(x; theta_t) > 0}, written per source to ``stage_t/data/``;
3. Eq. 5 weights over the kept samples (:mod:`.mixing`) -> a data recipe ``stage_t/mixture.yaml`` whose
   sources are the kept files (tokenized by the trainer into ``stage_t/shards/`` on first use);
4. Eq. 7: theta_{t+1} = a training stage from theta_t (``model.init_from``) on that mixture
   (``stage_t/train/final``).

The loop stops when the positive fraction |D_{t+1}| / |D_t| falls below ``min_positive_fraction`` (the
pool has converged: the paper's influence histograms narrow toward 0 and two stages sufficed) or after
``max_stages`` trained stages; with ``score_final`` the last model scores the last pool once more (its
histogram, no training).  Every stage writes ``stage_t/summary.json`` (positive fraction, histogram,
rho and weights, training result); the run writes ``histograms.json`` and ``histograms.png`` (all
stages overlaid, the paper's Fig. 5) and ``coevolve.json``.

Resuming: a stage whose summary exists is skipped; inside a stage, scoring resumes from its parts, and
training resumes from its last checkpoint (or is skipped once ``train/final`` exists).  One process
(CPU or one GPU).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_write
from ..data.recipes import MixSource, MixtureRecipe
from ..data.records import JsonlWriter, read_records
from ..typed_config import bounded, load_config, to_dict
from .figures import agg_figure, png_bytes
from .influence_run import Checkpoint, InfluenceConfig, InfluenceScorer
from .mixing import eq5_weights, mix_header, source_stats, write_recipe

if TYPE_CHECKING:
    from ..train.config import TrainConfig


@dataclass
class StageTraining:
    """The training recipe of every stage; init_from, data.recipe and out_dir are set per stage."""

    recipe: str = "train/tiny_cpu"
    overrides: list[str] = field(default_factory=list)


@dataclass
class CoevolveConfig:
    """A co-evolution run (YAML, see ``recipes/curation/coevolve_synthetic.yaml``)."""

    name: str
    pool: dict[str, list[str]]  # source -> JSONL files / globs (rows id, source, text)
    probes: dict[str, str]  # capability -> JSONL probing set (text)
    model: str  # the starting model (HF directory)
    train: StageTraining = field(default_factory=StageTraining)
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    column: str = "joint"  # the score of Eq. 6 and Eq. 5: joint (Eq. 3-4) or one capability of probes
    max_epochs: float | None = bounded(
        None, gt=0
    )  # Eq. 5 epoch cap over a stage's token budget (None: no cap)
    seq_len: int = bounded(2048, ge=1)  # packing length of the stage mixtures
    max_stages: int = 2  # trained stages at most
    min_positive_fraction: float = bounded(
        0.05, ge=0, le=1
    )  # stop once fewer samples than this stay positive
    score_final: bool = True  # score the last pool with the last model (histogram only)
    histogram_bins: int = 50
    out_dir: str = "runs/coevolve/{name}"
    device: str | None = None  # scoring and training (default: cuda when available)
    seed: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        if not self.pool or not self.probes:
            raise ValueError("coevolve needs a pool (source -> files) and probes (capability -> file)")
        if self.max_stages < 1 or self.histogram_bins < 1:
            raise ValueError(
                f"max_stages and histogram_bins must be >= 1, got {self.max_stages}, {self.histogram_bins}"
            )
        if self.column != "joint" and self.column not in self.probes:
            raise ValueError(
                f"column {self.column!r}: use joint or a capability of probes {list(self.probes)}"
            )
        if self.influence.preconditioner == "adam":
            raise ValueError("coevolve scores with the identity or datainf preconditioner, not adam")
        self.out_dir = self.out_dir.format(name=self.name)


def load_coevolve_config(path: str, overrides: list[str] | None = None) -> CoevolveConfig:
    """A co-evolution config by path or shipped name (``curation/coevolve_synthetic``)."""
    from ..data.recipes import recipe_path

    return load_config(CoevolveConfig, recipe_path(path), overrides)


# ---------------------------------------------------------------------------------------- one stage
def _pool_ids(pool: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """(row ids, pool entry of each row) in scoring order."""
    ids, sources = [], []
    for name, files in pool.items():
        for rec in read_records(files):
            ids.append(str(rec.row.get("id", rec.location)))
            sources.append(name)
    if not ids:
        raise ValueError("the pool is empty")
    return ids, sources


def _score(cfg: CoevolveConfig, t: int, pool: dict[str, list[str]], model: str, out: Path) -> pa.Table:
    """Influence of every pool sample under ``model`` (Eq. 2-4), ``source`` set to the pool entry."""
    from ..tokenizer import load_tokenizer

    ids, sources = _pool_ids(pool)
    settings = replace(cfg.influence, device=cfg.device or cfg.influence.device)
    scorer = InfluenceScorer([Checkpoint(f"stage{t}", 1, model)], cfg.probes, load_tokenizer(model), settings)
    result = scorer.run([f for files in pool.values() for f in files], out)
    table = pq.read_table(result["output"])
    if table.column("id").to_pylist() != ids:
        raise RuntimeError(f"{out}: scored ids do not match the pool (files changed while scoring?)")
    return table.set_column(table.schema.get_field_index("source"), "source", pa.array(sources, pa.string()))


def _write_kept(pool: dict[str, list[str]], keep: np.ndarray, data: Path) -> dict[str, list[str]]:
    """Eq. 6: the rows with a positive score, one JSONL per source.  ``id`` is filled in where missing
    (``file:line``) and ``source`` set to the pool entry (the Eq. 5 source, whatever the row said)."""
    kept, i = {}, 0
    for name, files in pool.items():
        path = data / f"{name}.jsonl"
        with JsonlWriter(path) as out:
            for rec in read_records(files):
                if keep[i]:
                    out.write({**rec.row, "id": str(rec.row.get("id", rec.location)), "source": name})
                i += 1
        kept[name] = [str(path)]
    return kept


def histogram(values: np.ndarray, bins: int) -> dict[str, Any]:
    """Counts and bin edges of the scores (one curve of the paper's Fig. 5)."""
    counts, edges = np.histogram(values, bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _stage_train_config(cfg: CoevolveConfig, t: int, model: str, recipe: Path, stage: Path) -> TrainConfig:
    """The stage's training config: the configured recipe, initialised from ``model``, on ``recipe``."""
    from ..train.config import load_train_config

    q = json.dumps  # paths as quoted YAML scalars
    overrides = [
        *cfg.train.overrides,
        f"name={q(f'{cfg.name}_stage{t}')}",
        f"model.init_from={q(model)}",
        f"data.recipe={q(str(recipe))}",
        f"out_dir={q(str(stage / 'train'))}",
    ]
    train_cfg = load_train_config(cfg.train.recipe, overrides)
    if train_cfg.objective not in ("lm", "kd"):
        raise ValueError(f"{cfg.train.recipe}: coevolve trains on mixtures (objective lm or kd)")
    return train_cfg


def _train(train_cfg: TrainConfig, device: str | None) -> dict:
    """Eq. 7: one training stage; resumes from its last checkpoint, skipped once ``final`` exists.  The
    trainer's progress lines go to stderr, keeping stdout for the JSON report."""
    from ..train.objectives import prepare_data
    from ..train.trainer import Trainer

    final = Path(train_cfg.out_dir) / "final"
    report = {"config": to_dict(train_cfg), "final": str(final)}
    if (final / "config.json").exists():
        return {**report, "skipped": True}
    with contextlib.redirect_stdout(sys.stderr):
        prepare_data(train_cfg, device)
        return {**report, **Trainer(train_cfg, resume=True, device=device).fit()}


def _mix(
    cfg: CoevolveConfig, t: int, kept: pa.Table, column: str, train_cfg: TrainConfig, stage: Path
) -> dict:
    """Eq. 5 over the kept samples -> the stage's data recipe (sources without kept samples get 0).
    The epoch cap's budget is the stage's steps x micro_batch x grad_accum x seq_len tokens."""
    d = train_cfg.data
    budget = float(train_cfg.steps * d.micro_batch * d.grad_accum * (d.seq_len or cfg.seq_len))
    mix = eq5_weights(
        source_stats(kept, column),
        column,
        0.0,
        max_epochs=cfg.max_epochs,
        token_budget=budget if cfg.max_epochs is not None else None,
    )
    sources = [
        MixSource(name=g, weight=mix.weights.get(g, 0.0), files=[str(stage / "data" / f"{g}.jsonl")])
        for g in cfg.pool
    ]
    recipe = MixtureRecipe(
        name=f"{cfg.name}_stage{t}",
        sources=sources,
        seq_len=cfg.seq_len,
        seed=cfg.seed,
        shards_root=str(stage / "shards"),
        description=f"co-evolution stage {t}: {column} > 0 under {train_cfg.model.init_from}",
    )
    write_recipe(recipe, train_cfg.data.recipe, mix_header(mix, f"the kept samples of stage {t}"))
    return mix.as_dict()


def run_stage(cfg: CoevolveConfig, t: int, pool: dict[str, list[str]], model: str, stage: Path) -> dict:
    """Stage t (module docstring); returns its summary (``stop``: why the loop ends here, else None)."""
    start = time.perf_counter()
    scores = _score(cfg, t, pool, model, stage / "influence")
    column = cfg.column if cfg.column == "joint" else f"{cfg.column}@stage{t}"
    values = scores.column(column).to_numpy(zero_copy_only=False)
    keep = values > 0
    summary: dict[str, Any] = {
        "stage": t,
        "model": model,
        "pool": dict(Counter(scores.column("source").to_pylist())),
        "samples": len(values),
        "positive": int(keep.sum()),
        "positive_fraction": float(keep.mean()),
        "histogram": histogram(values, cfg.histogram_bins),
        "trained": False,
        "stop": None,
    }
    if not keep.any() or keep.mean() < cfg.min_positive_fraction:
        summary["stop"] = f"positive fraction {keep.mean():.4g} < {cfg.min_positive_fraction:g}"
    elif t > cfg.max_stages:
        summary["stop"] = f"max_stages ({cfg.max_stages}) reached"
    if summary["stop"]:
        return {**summary, "seconds": time.perf_counter() - start}
    kept = _write_kept(pool, keep, stage / "data")
    train_cfg = _stage_train_config(cfg, t, model, stage / "mixture.yaml", stage)
    mix = _mix(cfg, t, scores.filter(pa.array(keep)), column, train_cfg, stage)
    train = _train(train_cfg, cfg.device)
    summary.update(
        kept={g: int(mix["samples"].get(g, 0)) for g in pool},
        mix=mix,
        recipe=train_cfg.data.recipe,
        train=train,
        trained=True,
        next_pool=kept,
        next_model=train["final"],
    )
    if t == cfg.max_stages and not cfg.score_final:
        summary["stop"] = f"max_stages ({cfg.max_stages}) reached"
    return {**summary, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------- the loop
def _check_config(out: Path, cfg: CoevolveConfig) -> None:
    """Record the config; refuse to resume a directory written with another one (device aside)."""
    snapshot = to_dict(cfg)
    snapshot.pop("device")
    snapshot["influence"].pop("device")
    text = json.dumps(snapshot, indent=1, sort_keys=True)
    path = out / "config.json"
    if path.exists() and json.loads(path.read_text()) != json.loads(text):
        raise ValueError(f"{out} holds a co-evolution run with another config (config.json differs)")
    if not path.exists():
        atomic_write(path, text)


def plot_histograms(stages: list[dict], path: Path) -> None:
    """All stages' score histograms overlaid as densities (the paper's Fig. 5), PNG, Agg backend."""
    fig = agg_figure((6, 4))
    ax = fig.add_subplot()
    for s in stages:
        counts, edges = np.asarray(s["histogram"]["counts"], float), np.asarray(s["histogram"]["edges"])
        density = counts / max(counts.sum(), 1) / np.maximum(np.diff(edges), 1e-300)
        ax.stairs(density, edges, label=f"stage {s['stage']} ({s['positive_fraction']:.0%} > 0)")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("influence I(x; theta_t)")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, png_bytes(fig))


def run_coevolve(cfg: CoevolveConfig) -> dict[str, Any]:
    """The co-evolution loop (module docstring); resumable.  Returns the run report."""
    out = Path(cfg.out_dir).resolve()
    _check_config(out, cfg)
    pool, model = {g: list(f) for g, f in cfg.pool.items()}, cfg.model
    stages, resumed = [], []
    for t in range(1, cfg.max_stages + 2):
        path = out / f"stage_{t}" / "summary.json"
        if path.exists():
            summary = json.loads(path.read_text())
            resumed.append(t)
        else:
            summary = run_stage(cfg, t, pool, model, out / f"stage_{t}")
            atomic_write(path, json.dumps(summary, indent=1, default=str))
        stages.append(summary)
        if summary["stop"]:
            break
        pool, model = summary["next_pool"], summary["next_model"]
    atomic_write(out / "histograms.json", json.dumps({s["stage"]: s["histogram"] for s in stages}))
    plot_histograms(stages, out / "histograms.png")
    report = {
        "out_dir": str(out),
        "stop": stages[-1]["stop"],
        "final_model": stages[-1].get("next_model") or model,
        "resumed_stages": resumed,
        "stages": [
            {k: s.get(k) for k in ("stage", "samples", "positive_fraction", "kept", "trained", "seconds")}
            | {"weights": s.get("mix", {}).get("weights")}
            for s in stages
        ],
        "histograms": str(out / "histograms.png"),
    }
    atomic_write(out / "coevolve.json", json.dumps(report, indent=1))
    return report
