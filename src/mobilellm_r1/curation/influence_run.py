"""Chunked, resumable, data-parallel influence scoring of a JSONL corpus to parquet (MobileLLM-R1 Eq. 2-4).

:class:`InfluenceScorer` (or :func:`score_samples`) scores every sample of JSONL files (``id``, ``text``,
optional ``source``) against the probing sets of several capabilities (JSONL with ``text``, or lists of
texts) at several training checkpoints, with the forward-mode scores of :mod:`.influence` (positive =
training on the sample lowers the capability's probe loss), and combines them with Eq. 3-4.

Output directory::

    meta.json                 run settings; a rerun with other settings is refused
    queries/<ckpt>.pt         the queries u = P grad L_P of each checkpoint (one per capability)
    parts/part-00000.parquet  one file per chunk of ``chunk_size`` samples, written atomically
    influence.parquet         all parts in input order, written once every part exists

Columns: ``id`` (string), ``source`` (string, null when absent), ``tokens`` (tokens scored, BOS included,
after truncation to ``seq_len``), one float64 column ``<capability>@<checkpoint>`` per pair, ``joint``.

Resuming: finished parts are skipped, so a killed run restarts where it stopped.  Data parallel under
``torchrun`` (only if ``torch.distributed`` is initialised): rank r scores the chunks i with
i % world == r; the queries are computed first (checkpoint j by rank j % world, then a barrier); the
rank that finds every part present merges them (no final barrier).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from ..atomic import atomic_write
from ..data.records import PathLike, read_records
from ..typed_config import bounded
from .filters import batched
from .influence import (
    AdamPreconditioner,
    DataInfPreconditioner,
    IdentityPreconditioner,
    Preconditioner,
    Query,
    influence_scores,
    joint_weights,
    probe_gradient,
    select_params,
)
from .progress import count_records, progress_bar

PreconditionerKind = Literal["identity", "adam", "datainf"]
RESULT_FILE = "influence.parquet"


class TextTokenizer(Protocol):
    """What the runner needs of a tokenizer (:class:`mobilellm_r1.tokenizer.Tokenizer` has it)."""

    def encode(self, text: str, bos: bool = False) -> list[int]: ...


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint t of Eq. 3: ``name`` (the column suffix, e.g. ``t1``), its training ``step`` (the
    weight of Eq. 4), the ``model`` (an HF directory for ``load_pretrained``, or a loaded module) and,
    for the ``adam`` preconditioner, ``adam_state``: a name -> exp_avg_sq mapping, an FQN-keyed optimizer
    state dict, or a ``torch.save`` file of either."""

    name: str
    step: int
    model: PathLike | nn.Module
    adam_state: PathLike | Mapping[str, Any] | None = None


@dataclass
class InfluenceConfig:
    """Settings of a scoring run (all but ``device`` / ``keep_models`` / ``bf16`` enter ``meta.json``)."""

    seq_len: int = bounded(2048, ge=2)  # tokens per sample (BOS included); longer samples are truncated
    batch_size: int = bounded(16, ge=1)  # samples per JVP pass
    chunk_size: int = bounded(4096, ge=1)  # samples per part file
    subset: str | list[str] = "all"  # parameter subset (see select_params)
    preconditioner: PreconditionerKind = "identity"
    probe_batch_size: int = bounded(8, ge=1)
    max_probe: int | None = bounded(None, ge=1)  # first n probe texts per capability
    datainf_samples: int = bounded(64, ge=1)  # training rows for DataInf's per-sample gradients
    datainf_damping: float = bounded(0.1, gt=0)
    bf16: bool = False  # bf16 autocast of the JVP passes
    dtype: str = "float32"  # parameter dtype of models loaded from directories
    device: str | None = None  # default: cuda:<LOCAL_RANK> if available, else cpu
    keep_models: bool = True  # keep every checkpoint (and its queries) in memory between chunks
    vmap_queries: bool = True  # one JVP pass for all capabilities of a checkpoint
    extra: dict[str, Any] = field(default_factory=dict)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _texts(source: PathLike | Sequence[str]) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        return [r.text for r in read_records(source)]
    return list(source)


class InfluenceScorer:
    """Scores JSONL samples against per-capability probing sets at several checkpoints (Eq. 2-4).

    ``probes``: capability -> JSONL path (``text`` field) or list of texts.  ``datainf_train``: the
    training rows of DataInf (JSONL path or texts; default: the first ``datainf_samples`` samples).
    """

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        probes: Mapping[str, PathLike | Sequence[str]],
        tokenizer: TextTokenizer,
        config: InfluenceConfig | None = None,
        *,
        datainf_train: PathLike | Sequence[str] | None = None,
    ) -> None:
        if not checkpoints or not probes:
            raise ValueError("need at least one checkpoint and one probing set")
        names = [c.name for c in checkpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"checkpoint names must be unique, got {names}")
        self.checkpoints, self.tokenizer = list(checkpoints), tokenizer
        self.cfg = config or InfluenceConfig()
        self.capabilities = list(probes)
        self.probe_rows = {
            c: [self._encode(t) for t in _texts(s)][: self.cfg.max_probe] for c, s in probes.items()
        }
        self.datainf_train = datainf_train
        self.columns = [f"{c}@{k.name}" for c in self.capabilities for k in self.checkpoints]
        keys = [(c, k.name) for c in self.capabilities for k in self.checkpoints]
        self.weights = joint_weights(keys, {k.name: k.step for k in self.checkpoints})
        rank, _ = _rank_world()
        default = f"cuda:{os.environ.get('LOCAL_RANK', rank)}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(self.cfg.device or default)
        self._models: dict[str, nn.Module] = {}
        self._queries: dict[str, dict[str, Query]] = {}

    # ------------------------------------------------------------------ pieces
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, bos=True))[: self.cfg.seq_len]

    def _model(self, ck: Checkpoint) -> nn.Module:
        if ck.name in self._models:
            return self._models[ck.name]
        if isinstance(ck.model, nn.Module):
            model = ck.model.to(self.device)
        else:
            from ..model.hf import dtype_from_name, load_pretrained

            model, _ = load_pretrained(ck.model, device=self.device, dtype=dtype_from_name(self.cfg.dtype))
        model.eval()
        if self.cfg.keep_models:
            self._models[ck.name] = model
        return model

    def _preconditioner(
        self, ck: Checkpoint, model: nn.Module, params: Mapping[str, nn.Parameter], train: list[list[int]]
    ) -> Preconditioner:
        kind = self.cfg.preconditioner
        if kind == "identity":
            return IdentityPreconditioner()
        if kind == "adam":
            state = ck.adam_state
            if state is None:
                raise ValueError(f"checkpoint {ck.name!r}: the adam preconditioner needs adam_state")
            if isinstance(state, (str, os.PathLike)):
                state = torch.load(state, map_location=self.device, weights_only=True)
            return AdamPreconditioner.from_state_dict(state, list(params))
        if kind == "datainf":
            return DataInfPreconditioner(
                model, params, train, damping=self.cfg.datainf_damping, batch_size=self.cfg.probe_batch_size
            )
        raise ValueError(f"unknown preconditioner {kind!r}: use identity, adam or datainf")

    def _train_rows(self, samples: PathLike | Sequence[PathLike]) -> list[list[int]]:
        if self.cfg.preconditioner != "datainf":
            return []
        if self.datainf_train is not None:
            texts = _texts(self.datainf_train)
        else:
            texts = []
            for rec in read_records(samples):
                texts.append(rec.text)
                if len(texts) == self.cfg.datainf_samples:
                    break
        return [self._encode(t) for t in texts[: self.cfg.datainf_samples]]

    def _compute_queries(self, ck: Checkpoint, train: list[list[int]], bar: tqdm) -> dict[str, Query]:
        """Eq. 2's preconditioned probe gradient per capability at ``ck`` (``bar`` counts probe rows)."""
        model = self._model(ck)
        params = select_params(model, self.cfg.subset)
        grads = [
            probe_gradient(
                model, self.probe_rows[c], params, batch_size=self.cfg.probe_batch_size, progress=bar.update
            )
            for c in self.capabilities
        ]
        queries = self._preconditioner(ck, model, params, train).apply(grads)
        return dict(zip(self.capabilities, queries, strict=True))

    def _query_path(self, out: Path, ck: Checkpoint) -> Path:
        return out / "queries" / f"{ck.name}.pt"

    def _load_queries(self, out: Path, ck: Checkpoint) -> dict[str, Query]:
        if ck.name in self._queries:
            return self._queries[ck.name]
        queries = torch.load(self._query_path(out, ck), map_location=self.device, weights_only=True)
        if self.cfg.keep_models:
            self._queries[ck.name] = queries
        return queries

    def fingerprint(self, samples: PathLike | Sequence[PathLike]) -> dict[str, Any]:
        """The settings a resumed run must share with the run that wrote the parts."""
        cfg = {k: v for k, v in asdict(self.cfg).items() if k not in ("device", "keep_models", "bf16")}
        paths = (
            [os.fspath(samples)]
            if isinstance(samples, (str, os.PathLike))
            else [os.fspath(p) for p in samples]
        )
        return {
            "config": cfg,
            "samples": paths,
            "checkpoints": [
                {
                    "name": c.name,
                    "step": c.step,
                    "model": os.fspath(c.model)
                    if isinstance(c.model, (str, os.PathLike))
                    else type(c.model).__name__,
                }
                for c in self.checkpoints
            ],
            "probes": {
                c: [len(self.probe_rows[c]), sum(map(len, self.probe_rows[c]))] for c in self.capabilities
            },
            "columns": self.columns,
            "weights": {f"{c}@{t}": w for (c, t), w in self.weights.items()},
        }

    def _check_meta(self, out: Path, meta: dict[str, Any]) -> None:
        path = out / "meta.json"
        text = json.dumps(meta, indent=1, sort_keys=True, default=str)
        if path.exists():
            if json.loads(path.read_text()) != json.loads(text):
                raise ValueError(
                    f"{out} holds a run with other settings (meta.json differs); use a new directory"
                )
            return
        atomic_write(path, text)

    def _score_chunk(self, out: Path, records: list[Any], bar: tqdm) -> pa.Table:
        rows = [self._encode(r.text) for r in records]
        columns: dict[str, Tensor] = {}
        autocast = torch.bfloat16 if self.cfg.bf16 else None
        for ck in self.checkpoints:
            model = self._model(ck)
            params = select_params(model, self.cfg.subset)
            queries = self._load_queries(out, ck)
            scores = influence_scores(
                model,
                rows,
                params,
                [queries[c] for c in self.capabilities],
                batch_size=self.cfg.batch_size,
                autocast_dtype=autocast,
                vmap_queries=self.cfg.vmap_queries,
                progress=bar.update,
            )
            for c, s in zip(self.capabilities, scores, strict=True):
                columns[f"{c}@{ck.name}"] = s
        joint = sum(w * columns[f"{c}@{t}"] for (c, t), w in self.weights.items())
        data: dict[str, Any] = {
            "id": pa.array([str(r.row.get("id", r.location)) for r in records], pa.string()),
            "source": pa.array([_opt_str(r.row.get("source")) for r in records], pa.string()),
            "tokens": pa.array([len(x) for x in rows], pa.int64()),
        }
        for name in self.columns:
            data[name] = pa.array(columns[name].numpy(), pa.float64())
        data["joint"] = pa.array(joint.numpy(), pa.float64())
        return pa.table(data)

    # ------------------------------------------------------------------ run
    def run(
        self, samples: PathLike | Sequence[PathLike], out_dir: PathLike, *, max_chunks: int | None = None
    ) -> dict[str, Any]:
        """Score ``samples`` into ``out_dir`` (see the module docstring); resumable.  ``max_chunks``:
        stop after computing that many chunks on this rank (for staged runs and tests).  Returns
        ``{"output", "chunks", "computed", "skipped", "samples_scored", "seconds", "samples_per_s"}``;
        ``output`` is None while parts are missing."""
        out = Path(out_dir)
        rank, world = _rank_world()
        self._check_meta(out, self.fingerprint(samples))
        train = self._train_rows(samples)
        self._write_queries(out, train, rank, world)
        _barrier()
        parts = out / "parts"
        computed, skipped, scored, n_chunks, start = [], [], 0, 0, time.perf_counter()
        n_ck = len(self.checkpoints)
        total = self._own_samples(count_records(samples), rank, world) * n_ck
        label = "influence: score samples" + (f" x {n_ck} checkpoints" if n_ck > 1 else "")
        unit = "sample" if n_ck == 1 else "sample-ckpt"
        with progress_bar(label, total, unit, disable=rank != 0) as bar:  # rank 0 speaks for all
            for i, records in enumerate(batched(read_records(samples), self.cfg.chunk_size)):
                n_chunks = i + 1
                part = parts / f"part-{i:05d}.parquet"
                if i % world != rank:
                    continue
                done = part.exists()
                if done:
                    skipped.append(i)
                if done or (max_chunks is not None and len(computed) >= max_chunks):
                    bar.total -= len(records) * n_ck  # not scored now: the time left excludes it
                    bar.refresh()
                    continue
                table = self._score_chunk(out, records, bar)
                atomic_write(part, _parquet_bytes(table))
                computed.append(i)
                scored += len(records)
        seconds = time.perf_counter() - start
        result = self._merge(out, n_chunks)
        return {
            "output": result,
            "chunks": n_chunks,
            "computed": computed,
            "skipped": skipped,
            "samples_scored": scored,
            "seconds": seconds,
            "samples_per_s": scored / seconds if seconds > 0 else 0.0,
        }

    def _write_queries(self, out: Path, train: list[list[int]], rank: int, world: int) -> None:
        """Compute and save the queries of this rank's checkpoints that are not on disk yet."""
        n_rows = sum(len(self.probe_rows[c]) for c in self.capabilities)
        for j, ck in enumerate(self.checkpoints):
            path = self._query_path(out, ck)
            if j % world != rank or path.exists():
                continue
            label = f"influence: probe gradients @{ck.name} ({j + 1}/{len(self.checkpoints)})"
            with progress_bar(label, n_rows, "probe row", disable=rank != 0) as bar:
                queries = {
                    c: [u.detach().cpu() for u in q] for c, q in self._compute_queries(ck, train, bar).items()
                }
            atomic_write(path, _torch_bytes(queries))

    def _own_samples(self, n: int, rank: int, world: int) -> int:
        """How many of ``n`` samples fall in this rank's chunks (chunk ``i`` belongs to rank ``i % world``)."""
        size = self.cfg.chunk_size
        return sum(min(size, n - start) for i, start in enumerate(range(0, n, size)) if i % world == rank)

    def _merge(self, out: Path, n_chunks: int) -> Path | None:
        """Concatenate the parts into ``influence.parquet`` when all exist (else None)."""
        paths = [out / "parts" / f"part-{i:05d}.parquet" for i in range(n_chunks)]
        if not all(p.exists() for p in paths):
            return None
        target = out / RESULT_FILE
        if paths:
            table = pa.concat_tables([pq.read_table(p) for p in paths])
        else:
            table = pa.table({n: pa.array([], t) for n, t in _empty_schema(self.columns)})
        atomic_write(target, _parquet_bytes(table))
        return target


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _empty_schema(columns: list[str]) -> list[tuple[str, pa.DataType]]:
    fixed = [("id", pa.string()), ("source", pa.string()), ("tokens", pa.int64())]
    return fixed + [(c, pa.float64()) for c in [*columns, "joint"]]


def score_samples(
    samples: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    checkpoints: Sequence[Checkpoint],
    probes: Mapping[str, PathLike | Sequence[str]],
    tokenizer: TextTokenizer,
    *,
    datainf_train: PathLike | Sequence[str] | None = None,
    max_chunks: int | None = None,
    **config: Any,
) -> dict[str, Any]:
    """One-call form of :class:`InfluenceScorer`: ``config`` holds :class:`InfluenceConfig` fields."""
    scorer = InfluenceScorer(
        checkpoints, probes, tokenizer, InfluenceConfig(**config), datainf_train=datainf_train
    )
    return scorer.run(samples, out_dir, max_chunks=max_chunks)
