"""`mobilellm-r1 curate influence`: a typed job config around :class:`.influence_run.InfluenceScorer`.

A job (YAML, or command-line flags, or both; ``--set key=value`` last) names the samples to score,
one probing set per capability, the checkpoints of Eq. 3 with their steps (the weights of Eq. 4),
the output directory and the :class:`~.influence_run.InfluenceConfig` fields (flat)::

    samples: [runs/curation/probe_sets_synthetic/representative]
    probes: {math: .../probe/math.jsonl, code: .../probe/code.jsonl}
    checkpoints: [{name: t1, step: 1000, model: ckpt/t1}, {name: t2, step: 2000, model: ckpt/t2}]
    out: runs/curation/influence
    seq_len: 2048
    preconditioner: identity

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`run_job` joins the process group itself (NCCL on
CUDA, gloo on CPU), each rank scores its share of the chunks, and the group is destroyed at the
end; rank 0 returns the report (other ranks None).  Reruns skip the parts already written.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..typed_config import bounded, build_config, read_yaml
from .influence_run import Checkpoint, InfluenceConfig, InfluenceScorer


@dataclass
class CheckpointSpec:
    """One checkpoint t of Eq. 3: column suffix ``name``, training ``step`` (Eq. 4 weight), the HF
    model directory and, for the ``adam`` preconditioner, a ``torch.save`` file of its Adam state."""

    name: str
    step: int = bounded(ge=0)
    model: str
    adam_state: str | None = None


@dataclass(kw_only=True)
class InfluenceJob(InfluenceConfig):
    """A scoring run: inputs, checkpoints, output directory, plus every InfluenceConfig field."""

    samples: list[str]  # JSONL files, globs or directories (id, text, optional source)
    probes: dict[str, str]  # capability -> probing-set JSONL
    checkpoints: list[CheckpointSpec]
    out: str
    tokenizer: str | None = None  # default: the first checkpoint's directory
    datainf_train: str | None = None  # DataInf's training rows (default: the first samples)

    def __post_init__(self) -> None:
        if not self.samples or not self.probes or not self.checkpoints:
            raise ValueError("a job needs samples, probes and checkpoints")

    def scoring_config(self) -> InfluenceConfig:
        """The InfluenceConfig part (what enters the run's meta.json)."""
        return InfluenceConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(InfluenceConfig)})


def parse_checkpoint(text: str) -> dict[str, Any]:
    """``NAME:STEP:MODEL_DIR[:ADAM_STATE]`` -> a checkpoint mapping."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[1].isdigit():
        raise ValueError(f"--checkpoint {text!r}: expected NAME:STEP:MODEL_DIR[:ADAM_STATE]")
    spec = {"name": parts[0], "step": int(parts[1]), "model": parts[2]}
    return {**spec, "adam_state": parts[3]} if len(parts) == 4 else spec


def parse_probe(text: str) -> tuple[str, str]:
    """``CAPABILITY=FILE`` -> (capability, file)."""
    capability, sep, path = text.partition("=")
    if not sep or not capability or not path:
        raise ValueError(f"--probe {text!r}: expected CAPABILITY=FILE")
    return capability, path


def load_job(
    path: str | os.PathLike | None, flags: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> InfluenceJob:
    """The YAML at ``path`` (optional), updated with ``flags`` (field -> value), then ``overrides``
    (``key=value``); errors name the file (or ``command line``) and the field."""
    data = read_yaml(path) if path is not None else {}
    data.update(flags or {})
    return build_config(InfluenceJob, data, str(path or "command line"), overrides)


def _column_stats(table: Any) -> dict[str, dict[str, float | None]]:
    """Mean and fraction > 0 of every score column (None for an empty table)."""
    import pyarrow.compute as pc

    stats = {}
    for name in table.column_names[3:]:
        column = table[name]
        positive = pc.sum(pc.greater(column, 0.0)).as_py() or 0
        stats[name] = {
            "mean": pc.mean(column).as_py(),
            "frac_positive": positive / len(column) if len(column) else None,
        }
    return stats


def _report(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from every rank's ``InfluenceScorer.run`` result."""
    import pyarrow.parquet as pq

    output = next((r["output"] for r in results if r["output"] is not None), None)
    scored = sum(r["samples_scored"] for r in results)
    seconds = max(r["seconds"] for r in results)
    report: dict[str, Any] = {
        "output": None if output is None else str(output),
        "chunks": results[0]["chunks"],
        "computed": sorted(i for r in results for i in r["computed"]),
        "skipped": sorted(i for r in results for i in r["skipped"]),
        "world_size": len(results),
        "samples_scored": scored,
        "seconds": seconds,
        "samples_per_s": scored / seconds if seconds > 0 else 0.0,
    }
    if output is not None:
        table = pq.read_table(output)
        report["rows"] = table.num_rows
        report["columns"] = _column_stats(table)
    return report


def run_job(job: InfluenceJob, *, max_chunks: int | None = None) -> dict[str, Any] | None:
    """Score ``job`` (data parallel under torchrun); rank 0 returns the report, other ranks None."""
    import torch.distributed as dist

    from ..tokenizer import load_tokenizer
    from ..train.parallel import init_distributed

    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    info = init_distributed(job.device)
    try:
        checkpoints = [Checkpoint(c.name, c.step, c.model, c.adam_state) for c in job.checkpoints]
        tokenizer = load_tokenizer(job.tokenizer or job.checkpoints[0].model)
        scorer = InfluenceScorer(
            checkpoints, job.probes, tokenizer, job.scoring_config(), datainf_train=job.datainf_train
        )
        result = scorer.run(job.samples, Path(job.out), max_chunks=max_chunks)
        results = [result]
        if dist.is_initialized():
            results = [None] * dist.get_world_size()
            dist.all_gather_object(results, result)
        return _report(results) if info.rank == 0 else None
    finally:
        if owns_group:
            dist.destroy_process_group()
