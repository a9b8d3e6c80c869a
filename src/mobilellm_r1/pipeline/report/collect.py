"""The numbers of a run (`report.json`), read from its stages' markers and outputs.

One collector per kind of command (`COLLECTORS`, keyed by the command words): it reads what that
command wrote under the stage's first output (`outputs[0]`) and its JSON report (kept in the
marker) and returns the stage's section. A new kind of stage is one function plus one line there.
Everything here is data: files are parsed as JSON, YAML (safe) or Parquet, never executed.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...train.grpo_filter import FILTER_FILE, pass_rate_summary
from ..config import PipelineConfig, StageSpec, stage_argv
from ..markers import Marker, read_marker
from ..runner import command_of

HISTOGRAM_BINS = 40
Section = dict[str, Any]


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """Curves (loss, reward, KL, lr) by step, held-out NLL / RankMe rows, tokens and the final model."""
    rows = _jsonl(out / "metrics.jsonl")
    steps = [r for r in rows if "loss" in r or "reward" in r]
    evals = [r for r in rows if any(k.startswith("nll/") or k == "rankme" for k in r)]
    curves: dict[str, list[list[float]]] = {}
    for key in ("loss", "reward", "kl", "lr"):
        points = [[r["step"], r[key]] for r in steps if isinstance(r.get(key), (int, float))]
        if points:
            curves[key] = points
    return {
        "kind": "train",
        "tokens": int(sum(r.get("tokens", 0) for r in steps)),
        "steps": max((r["step"] for r in steps), default=0),
        "curves": curves,
        "heldout": evals,
        "prompt_filter": prompt_filter(out / FILTER_FILE),
        "final_model": str(out / "final") if (out / "final").is_dir() else None,
    }


def prompt_filter(path: Path) -> dict[str, int] | None:
    """GRPO's pass-rate filter (`grpo.filter_samples`) as `pass_rate_summary` tallies the counts
    saved in `path`; None without one."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return pass_rate_summary(list(saved["solved"]), int(saved["samples"]))


def mix_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """Eq. 5: each source's weight (and rho) as `curate mix` reported them."""
    result = marker.result or {}
    return {"kind": "mixture", "weights": result.get("weights", {}), "rho": result.get("rho", {})}


def influence_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """Per source: samples and mean joint influence; histograms of the joint score per source."""
    import pyarrow.parquet as pq

    path = out / "influence.parquet"
    if not path.exists():
        return {"kind": "influence", "sources": {}}
    table = pq.read_table(path, columns=["source", "joint"]).to_pydict()
    scores: dict[str, list[float]] = {}
    for source, value in zip(table["source"], table["joint"], strict=False):
        scores.setdefault(source, []).append(float(value))
    every = np.array([v for vs in scores.values() for v in vs])
    edges = np.histogram_bin_edges(every, bins=HISTOGRAM_BINS) if every.size else np.array([0.0, 1.0])
    sources = {
        name: {
            "samples": len(vals),
            "mean": float(np.mean(vals)),
            "positive_fraction": float(np.mean(np.array(vals) > 0)),
            "counts": np.histogram(vals, bins=edges)[0].tolist(),
        }
        for name, vals in sorted(scores.items())
    }
    return {"kind": "influence", "bin_edges": edges.tolist(), "sources": sources}


def coevolve_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """Eq. 6-7: per co-evolution stage (its `stage_N/summary.json`), the pool, the fraction of
    positive influence, the samples kept per source, the Eq. 5 weights and the training loss."""
    table = []
    for path in sorted(out.glob("stage_*/summary.json"), key=lambda p: int(p.parent.name.split("_")[1])):
        row = json.loads(path.read_text())
        train = row.get("train") or {}
        table.append(
            {
                "stage": row.get("stage"),
                "pool": row.get("pool", {}),
                "positive_fraction": row.get("positive_fraction"),
                "kept": row.get("kept", {}),
                "weights": (row.get("mix") or {}).get("weights", {}),
                "loss": train.get("loss"),
                "tokens": train.get("tokens"),
                "trained": row.get("trained", False),
            }
        )
    curves = [train_section(stage, d, marker)["curves"] for d in sorted(out.glob("stage_*/train"))]
    return {"kind": "coevolve", "stages": table, "curves": curves}


def eval_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """The harness's summary.json: {task: {metric: value}} and the skipped tasks with reasons."""
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    skipped = summary.pop("skipped", {})
    tasks = {
        name: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for name, metrics in summary.items()
        if isinstance(metrics, dict)
    }
    return {"kind": "eval", "model": _flag(marker, "--model"), "tasks": tasks, "skipped": skipped}


def export_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """The exported file: format, size, and what `export` reported."""
    result = marker.result or {}
    return {
        "kind": "export",
        "file": str(out),
        "bytes": out.stat().st_size if out.is_file() else None,
        "format": _flag(marker, "--format"),
        "quant": _flag(marker, "--quant"),
        "speed": result.get("speed"),
        "report": result,
    }


def generic_section(stage: StageSpec, out: Path, marker: Marker) -> Section:
    """Any other command: its JSON report as it printed it."""
    return {"kind": "command", "report": marker.result}


COLLECTORS: dict[tuple[str, ...], Callable[[StageSpec, Path, Marker], Section]] = {
    ("train",): train_section,
    ("curate", "mix"): mix_section,
    ("curate", "influence"): influence_section,
    ("curate", "coevolve"): coevolve_section,
    ("eval",): eval_section,
    ("export",): export_section,
}


def _flag(marker: Marker, flag: str) -> str | None:
    """The value given to `flag` on the stage's command line as run, or None."""
    words = marker.argv
    return words[words.index(flag) + 1] if flag in words[:-1] else None


def collector_for(argv: list[str]) -> Callable[[StageSpec, Path, Marker], Section]:
    return COLLECTORS.get(command_of(argv), generic_section)


def collect(cfg: PipelineConfig, root: Path, command: list[str]) -> dict[str, Any]:
    """The whole report as plain data (what `report.json` holds)."""
    run_dir = root / cfg.run_dir
    stages = []
    for spec in cfg.stages:
        marker = read_marker(run_dir, spec.name)
        argv = stage_argv(spec, root, cfg.name)
        entry: dict[str, Any] = {
            "name": spec.name,
            "title": spec.heading,
            "command": "mobilellm-r1 " + " ".join(argv),
            "state": marker.state if marker else "not run",
        }
        if marker is not None:
            entry.update(wall_s=marker.wall_s, device=marker.device, attempts=marker.attempts, key=marker.key)
        if marker is not None and marker.state == "done":
            out = run_dir / spec.outputs[0] if spec.outputs else run_dir
            entry["section"] = collector_for(argv)(spec, out, marker)
        stages.append(entry)
    return {
        "recipe": cfg.name,
        "description": cfg.description,
        "run_dir": str(run_dir),
        "command": " ".join(command),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": _versions(),
        "stages": stages,
        "recipe_text": _recipe_text(run_dir),
    }


def _recipe_text(run_dir: Path) -> str:
    path = run_dir / "recipe.yaml"
    return path.read_text() if path.exists() else ""


def _versions() -> dict[str, str]:
    versions = {
        "mobilellm_r1": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return versions
