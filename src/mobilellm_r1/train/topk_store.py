"""Offline top-k distillation: run the teacher once, store its top-k log-probs, train on them.

    mobilellm-r1 train --recipe train/midtrain_950m_phase1 --set distill.topk_dir=D --dump-topk
    torchrun --nproc-per-node 8 -m mobilellm_r1.cli train --recipe ... --set distill.topk_dir=D --dump-topk
    mobilellm-r1 train --recipe train/midtrain_950m_phase1 --set distill.topk_dir=D   # trains from D

`dump_topk` streams the run's mixture exactly as the trainer does (`MixtureLoader`: global sample
i is the i-th sample of the recipe's stream, whatever the world size or batch geometry) and runs
the teacher (`distill.teacher`; bf16 on GPU, fp32 on CPU, no grad) over the first `samples` samples
(default: steps x micro_batch x grad_accum x ranks, all that the run consumes). Per sample and
position it keeps the teacher's k most likely token ids (int32) and their log-probs at
temperature T from the full softmax, log_softmax(logits / T) (float16 or float32).

Store (`distill.topk_dir`):
  meta.json                  k, temperature, seq_len, fingerprint of the sample stream, teacher,
                             samples, shard_size, dtype, vocab_size, complete
  shard_000000.safetensors   ids / logprobs [n, seq_len, k] and sample_ids [n] of samples
                             j * shard_size ... j * shard_size + n - 1
Shards are written atomically, so a dump resumes where it stopped (finished shards are skipped);
under torchrun rank r writes the shards j with j % world == r. Size per sample: seq_len x k x 6
bytes at float16 (4096 x 64: 1.5 MiB).

Training (`objective: kd` with `distill.topk_dir`): `TopkStore.lookup` reads the rows of each
batch's `sample_ids` and the objective is `losses.topk_kd_loss`. The trainer refuses a store whose
seq_len, stream fingerprint, temperature or vocabulary differ from the run's, or that holds fewer
samples than the run consumes. Resume stays exact: the rows follow from the loader state.

Approximation (bounds in `losses.topk_kl_distill`). Instead of the full-vocabulary
T^2 KL(p_t || p_s) the loss is T^2 KL(q || p_s) on the teacher's top-k set S: the teacher
renormalised over S (q = p_t / m, m its top-k mass), against the student's full-vocabulary
log-softmax gathered at S. The teacher's tail mass 1 - m is ignored (the gradient pushes the
student's tail towards 0, not towards the teacher's tail); the two agree when m = 1 (e.g. k = V)
and otherwise differ by at most about (1 - m) x (loss + 1 + the tail's log-ratio).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from ..atomic import atomic_write
from ..data.mixture import Batch, MixtureLoader
from ..data.recipes import build_loader, prepare
from ..typed_config import from_dict
from . import parallel
from .config import TrainConfig
from .teacher import Teacher, load_teacher

FORMAT_VERSION = 1
META_FILE = "meta.json"
DTYPES = {"float16": torch.float16, "float32": torch.float32}
DUMP_HINT = "`mobilellm-r1 train --recipe ... --set distill.topk_dir=DIR --dump-topk`"
# meta.json fields a resumed dump must share with the store it continues
DUMP_SETTINGS = ("k", "temperature", "seq_len", "fingerprint", "teacher", "shard_size", "dtype", "vocab_size")


@dataclass
class TopkMeta:
    """meta.json of a store."""

    k: int
    temperature: float
    seq_len: int
    fingerprint: str  # `stream_fingerprint` of the mixture
    teacher: str
    samples: int
    shard_size: int
    dtype: str  # of the log-probs
    vocab_size: int
    complete: bool = False
    format_version: int = FORMAT_VERSION

    @property
    def shards(self) -> int:
        return -(-self.samples // self.shard_size)

    def rows(self, shard: int) -> int:
        """Samples in shard `shard` (the last one may be short)."""
        return min(self.shard_size, self.samples - shard * self.shard_size)


def run_samples(cfg: TrainConfig, world_size: int) -> int:
    """Samples a run consumes: steps x micro_batch x grad_accum x ranks."""
    return cfg.steps * cfg.data.micro_batch * cfg.data.grad_accum * world_size


def shard_path(directory: Path, shard: int) -> Path:
    return directory / f"shard_{shard:06d}.safetensors"


def read_meta(directory: str | Path) -> TopkMeta:
    """A store's meta.json, checked (errors name the file)."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no top-k store here (write one with {DUMP_HINT})")
    try:
        meta = from_dict(TopkMeta, json.loads(path.read_text()), where=str(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err
    if meta.format_version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.format_version}, expected {FORMAT_VERSION}")
    return meta


def _mismatch(have: TopkMeta, want: TopkMeta, fields: tuple[str, ...]) -> str:
    """'field: store X, run Y; ...' for the fields that differ ('' if none)."""
    return "; ".join(
        f"{f}: store {getattr(have, f)!r}, run {getattr(want, f)!r}"
        for f in fields
        if getattr(have, f) != getattr(want, f)
    )


def stream_fingerprint(loader: MixtureLoader) -> str:
    """Hash of what fixes the sample stream: seq_len, seed, EOS id, sources and weights, each
    source's document lengths and (for tokenized shards) its tokenizer fingerprint."""
    head = {
        "seq_len": loader.seq_len,
        "seed": loader.seed,
        "eos": loader.eos_id,
        "names": loader.names,
        "weights": [float(w) for w in loader.weights],
    }
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for stream in loader.streams:
        digest.update(np.ascontiguousarray(stream.slots, dtype=np.int64).tobytes())
        digest.update(str(getattr(stream.source, "fingerprint", "")).encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def teacher_topk(logits: Tensor, k: int, temperature: float, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The k largest logits per position: ids int32 [..., k] and their log-probs at temperature T
    from the full softmax, log_softmax(logits / T), float32 [..., k] (`chunk` positions at a time)."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be in [1, vocab={logits.shape[-1]}], got {k}")
    flat = logits.reshape(-1, logits.shape[-1])
    ids, logprobs = [], []
    for start in range(0, flat.shape[0], chunk):
        z = flat[start : start + chunk].float() / temperature
        top, idx = z.topk(k, dim=-1)
        logprobs.append(top - torch.logsumexp(z, dim=-1, keepdim=True))
        ids.append(idx.int())
    shape = (*logits.shape[:-1], k)
    return torch.cat(ids).view(shape), torch.cat(logprobs).view(shape)


# ---------------------------------------------------------------------------- dump
def _start(out: Path, meta: TopkMeta) -> None:
    """Check an existing store was made with the same settings, then mark it incomplete."""
    if (out / META_FILE).exists():
        wrong = _mismatch(read_meta(out), meta, DUMP_SETTINGS)
        if wrong:
            raise ValueError(
                f"{out / META_FILE}: the store there was written with other settings ({wrong}); "
                "choose another distill.topk_dir or delete it"
            )
    atomic_write(out / META_FILE, json.dumps(asdict(replace(meta, complete=False)), indent=2))


def _finished(out: Path, meta: TopkMeta, shard: int) -> bool:
    path = shard_path(out, shard)
    if not path.is_file():
        return False
    with safe_open(path, framework="pt") as f:
        return f.get_slice("ids").get_shape() == [meta.rows(shard), meta.seq_len, meta.k]


@torch.inference_mode()
def _dump_shard(
    out: Path,
    meta: TopkMeta,
    shard: int,
    batch: Batch,
    teacher: Teacher,
    batch_size: int,
    device: torch.device,
) -> None:
    """Run the teacher over one shard's samples (`batch_size` rows per forward) and write it."""
    rows = meta.rows(shard)
    ids, logprobs = [], []
    for start in range(0, rows, batch_size):
        x = batch.input_ids[start : min(start + batch_size, rows)].to(device)
        i, lp = teacher_topk(teacher(x), meta.k, meta.temperature)
        ids.append(i.cpu())
        logprobs.append(lp.to(DTYPES[meta.dtype]).cpu())
    tensors = {"ids": torch.cat(ids), "logprobs": torch.cat(logprobs), "sample_ids": batch.sample_ids[:rows]}
    atomic_write(shard_path(out, shard), save(tensors))


def dump_topk(
    cfg: TrainConfig,
    *,
    samples: int | None = None,
    ranks: int | None = None,
    shard_size: int = 128,
    batch_size: int = 4,
    device: str | None = None,
) -> dict[str, Any]:
    """Write the teacher top-k store `cfg.distill.topk_dir` for the run `cfg` (module docstring).

    samples: how many global samples (default `run_samples(cfg, ranks)`, ranks defaulting to
    this process group's size); batch_size: rows per teacher forward. Returns a report."""
    d = cfg.distill
    if cfg.objective != "kd" or not d.teacher or not d.topk_dir:
        raise ValueError("--dump-topk needs objective kd, distill.teacher (to run) and distill.topk_dir")
    if min(shard_size, batch_size, d.topk) < 1:
        raise ValueError(
            f"shard_size, batch_size and distill.topk must be >= 1 ({shard_size}, {batch_size}, {d.topk})"
        )
    begin, info = time.perf_counter(), parallel.init_distributed(device)
    tokenizer, recipe = cfg.model.tokenizer(), cfg.data.mixture()
    if info.is_main:
        prepare(recipe, tokenizer)
    parallel.barrier()
    loader = build_loader(recipe, batch_size=shard_size, eos_id=tokenizer.eos_id)
    teacher = load_teacher(d.teacher, info.device)
    meta = TopkMeta(
        k=d.topk,
        temperature=d.temperature,
        seq_len=recipe.seq_len,
        fingerprint=stream_fingerprint(loader),
        teacher=d.teacher,
        samples=samples or run_samples(cfg, ranks or info.world_size),
        shard_size=shard_size,
        dtype=d.topk_dtype,
        vocab_size=teacher.vocab_size,
    )
    out = Path(d.topk_dir)
    if info.is_main:
        _start(out, meta)
    parallel.barrier()
    counts = torch.zeros(2, dtype=torch.int64, device=info.device)  # written, skipped
    for shard in range(meta.shards):
        batch = loader.next_batch()  # shard `shard`: global samples shard * shard_size ...
        if shard % info.world_size != info.rank:
            continue
        done = _finished(out, meta, shard)
        if not done:
            _dump_shard(out, meta, shard, batch, teacher, batch_size, info.device)
        counts[int(done)] += 1
    written, skipped = (int(c) for c in parallel.all_reduce_sum(counts))
    parallel.barrier()
    if info.is_main:
        atomic_write(out / META_FILE, json.dumps(asdict(replace(meta, complete=True)), indent=2))
    return {
        "topk_dir": str(out),
        "samples": meta.samples,
        "shards": meta.shards,
        "written": written,
        "skipped": skipped,
        "bytes_per_sample": meta.seq_len * meta.k * (4 + DTYPES[meta.dtype].itemsize),
        "seconds": round(time.perf_counter() - begin, 3),
    }


# ---------------------------------------------------------------------------- read
class TopkStore:
    """Read side of a finished store: the teacher top-k of any global samples."""

    max_open = 4  # shard files kept open

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory)
        self.meta = read_meta(self.path)
        if not self.meta.complete:
            raise ValueError(
                f"{self.path / META_FILE}: the dump did not finish (complete: false); rerun {DUMP_HINT}"
            )
        self._open: OrderedDict[int, Any] = OrderedDict()

    def check_run(self, cfg: TrainConfig, loader: MixtureLoader, world_size: int, vocab_size: int) -> None:
        """Refuse a store made for another stream, temperature or vocabulary, or too small a store."""
        want = replace(
            self.meta,
            seq_len=loader.seq_len,
            fingerprint=stream_fingerprint(loader),
            temperature=cfg.distill.temperature,
            vocab_size=vocab_size,
        )
        wrong = _mismatch(self.meta, want, ("seq_len", "fingerprint", "temperature", "vocab_size"))
        if wrong:
            raise ValueError(
                f"{self.path / META_FILE} does not match this run ({wrong}); dump it with {DUMP_HINT}"
            )
        needed = run_samples(cfg, world_size)
        if needed > self.meta.samples:
            raise ValueError(
                f"{self.path}: this run consumes {needed} samples (steps x micro_batch x grad_accum x ranks) "
                f"but the store holds {self.meta.samples}; dump more with --samples"
            )

    def lookup(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Stored top-k ids [B, T, k] (int32) and log-probs [B, T, k] of the batch's samples,
        on the batch's device."""
        if batch.sample_ids is None:
            raise ValueError("top-k distillation needs batches from the mixture loader (Batch.sample_ids)")
        rows = [self._row(int(i)) for i in batch.sample_ids.tolist()]
        device = batch.input_ids.device
        return torch.cat([r[0] for r in rows]).to(device), torch.cat([r[1] for r in rows]).to(device)

    def _row(self, sample: int) -> tuple[Tensor, Tensor]:
        if not 0 <= sample < self.meta.samples:
            raise IndexError(
                f"{self.path}: sample {sample} is not stored (the store holds {self.meta.samples}); "
                "dump more with --samples"
            )
        shard, row = divmod(sample, self.meta.shard_size)
        f = self._shard(shard)
        return f.get_slice("ids")[row : row + 1], f.get_slice("logprobs")[row : row + 1]

    def _shard(self, shard: int) -> Any:
        """The open safetensors file of `shard`, checked against meta.json on first use."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        path, meta = shard_path(self.path, shard), self.meta
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing shard of a complete store; rerun {DUMP_HINT}")
        f = safe_open(path, framework="pt")
        want = [meta.rows(shard), meta.seq_len, meta.k]
        first = shard * meta.shard_size
        if f.get_slice("ids").get_shape() != want or f.get_slice("logprobs").get_shape() != want:
            raise ValueError(f"{path}: ids / logprobs are not {want} as meta.json says (damaged store?)")
        if not torch.equal(f.get_tensor("sample_ids"), torch.arange(first, first + want[0])):
            raise ValueError(
                f"{path}: holds other samples than {first}..{first + want[0] - 1} (damaged store?)"
            )
        self._open[shard] = f
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return f
