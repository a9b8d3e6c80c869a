"""Atomic training checkpoints through `torch.distributed.checkpoint` (DCP).

One layout serves a plain single-process model and an FSDP2 (`fully_shard`) model under
torchrun: `get_state_dict` / `set_state_dict` turn either into canonical-FQN state dicts
(DTensor shards when sharded) and DCP writes each rank's shards in parallel.

    root/step_00001000/      .metadata, __{rank}_0.distcp  (DCP: {"model", "optim"})
                             extra.json                     (trainer state, rank 0)
                             rng_rank{r}.safetensors        (per-rank RNG states)
    root/latest              "step_00001000"

A save writes into `root/.step_<step:08d>.tmp/`; once every rank is done, rank 0 fsyncs it,
renames it to its final name and atomically rewrites `latest`. A kill at any point leaves
the previous checkpoint complete; stale `.tmp` directories are removed by the next save.
Our own state is never pickled (DCP tensors, safetensors, JSON). DCP itself pickles its
`.metadata` index; it is read back through an allow-list unpickler (`_SafeReader`), and
DCP reads non-tensor entries with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

__all__ = [
    "CheckpointError",
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

LATEST = "latest"
EXTRA = "extra.json"
_STEP_RE = re.compile(r"^step_(\d{8,})$")
_TMP_RE = re.compile(r"^\.step_\d{8,}\.(tmp|old)$")


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or unreadable."""


# ------------------------------------------------------------------ distributed helpers
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


# ------------------------------------------------------------------ RNG
def _json_tensor(obj: Any) -> torch.Tensor:
    """JSON-encode `obj` into a uint8 tensor (safetensors stores tensors only)."""
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).clone()


def _tensor_json(t: torch.Tensor) -> Any:
    return json.loads(bytes(t.to(torch.uint8).tolist()).decode())


def capture_rng() -> dict[str, torch.Tensor]:
    """This process's RNG states as tensors: torch CPU, CUDA (current device, if CUDA is
    initialised), numpy's global legacy generator and Python's `random` (both as JSON bytes)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    states = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": _json_tensor([kind, keys.tolist(), pos, has_gauss, cached]),
        "python": _json_tensor([version, list(internal), gauss_next]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(states: dict[str, torch.Tensor]) -> None:
    """Inverse of `capture_rng` (a CUDA state is skipped when CUDA is unavailable)."""
    torch.set_rng_state(states["torch_cpu"])
    kind, keys, pos, has_gauss, cached = _tensor_json(states["numpy"])
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = _tensor_json(states["python"])
    random.setstate((version, tuple(internal), gauss_next))
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch_cuda"])


def _save_rng(directory: Path, rank: int, world_size: int) -> None:
    save_file(capture_rng(), str(directory / f"rng_rank{rank}.safetensors"), {"world_size": str(world_size)})


def _load_rng(path: Path, rank: int) -> None:
    file = path / f"rng_rank{rank}.safetensors"
    if not file.is_file():
        saved = len(list(path.glob("rng_rank*.safetensors")))
        if saved and rank >= saved:  # resumed on more ranks than saved: no state to restore
            warnings.warn(
                f"{file} missing (checkpoint saved by {saved} ranks); RNG not restored", stacklevel=3
            )
            return
        raise CheckpointError(f"checkpoint {path}: missing RNG state {file.name}")
    try:
        restore_rng(load_file(str(file)))
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: unreadable RNG state {file.name}: {e}") from e


# ------------------------------------------------------------------ file-system helpers
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    """Flush every file of `directory`, then the directory entry itself."""
    for file in directory.iterdir():
        if file.is_file():
            _fsync_path(file)
    _fsync_path(directory)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def _is_complete(path: Path) -> bool:
    return (path / ".metadata").is_file() and (path / EXTRA).is_file()


def _complete_steps(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete `step_*` directory under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and _is_complete(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def _remove_stale(root: Path) -> None:
    """Delete `.step_*.tmp` / `.step_*.old` left behind by interrupted saves."""
    for p in root.iterdir():
        if _TMP_RE.match(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _prune(root: Path, keep_last: int, current: Path) -> None:
    """Keep the newest `keep_last` complete checkpoints, and always `current`."""
    steps = [p for _, p in _complete_steps(root)]
    doomed = steps[: max(len(steps) - max(keep_last, 1), 0)]
    for p in doomed:
        if p.resolve() != current.resolve():
            shutil.rmtree(p, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rank 0: make the fully written `tmp` the checkpoint `final` and point `latest` at it."""
    _fsync_tree(tmp)
    old = None
    if final.exists():  # re-saving a step: move the old copy aside, delete it afterwards
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_path(final.parent)
    _write_text_atomic(final.parent / LATEST, final.name + "\n")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ DCP I/O
_METADATA_CLASSES = {"Metadata", "MetadataIndex", "StorageMeta", "ChunkStorageMetadata", "TensorProperties"}
_METADATA_CLASSES |= {"TensorStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING"}
_ALLOWED_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("collections", "OrderedDict"),
    *(("pathlib", n) for n in ("Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath")),
    *(("torch.distributed.checkpoint.metadata", n) for n in _METADATA_CLASSES),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only the globals a DCP `.metadata` file needs (its dataclasses, dtypes, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in DCP metadata")


class _SafeReader(dcp.FileSystemReader):
    """`FileSystemReader` whose `.metadata` goes through `_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        with open(Path(self.path) / ".metadata", "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"not DCP metadata: {type(metadata).__name__}")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group (intended here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


# ------------------------------------------------------------------ model/optimizer state
def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """{"model": ..., "optim": ...} with canonical FQNs (DTensor shards under FSDP2)."""
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def _apply_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict) -> None:
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


# ------------------------------------------------------------------ public API
def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extra: dict[str, Any],
    keep_last: int | None = 3,
) -> Path:
    """Write model + optimizer (DCP), `extra` (JSON) and per-rank RNG states as
    `root/step_{step:08d}/`, atomically; then prune to the newest `keep_last` checkpoints
    (`None`: keep all). Collective: every rank must call it. Returns the final directory."""
    root = Path(root)
    rank, distributed = _rank(), _distributed()
    world_size = dist.get_world_size() if distributed else 1
    extra_text = json.dumps({"step": step, **extra}, indent=1)  # fail early, on every rank
    final = root / _step_dir_name(step)
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp.mkdir()
    _barrier()
    with _quiet_single_process():
        dcp.save(_state(model, optimizer), checkpoint_id=tmp, no_dist=not distributed)
    _save_rng(tmp, rank, world_size)
    if rank == 0:
        (tmp / EXTRA).write_text(extra_text)
    _barrier()
    if rank == 0:
        _publish(tmp, final)
        if keep_last is not None:
            _prune(root, keep_last, final)
    _barrier()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `root/latest` names if it is complete, else the newest complete
    `step_*` directory; None when there is none (`.tmp` directories are never considered)."""
    root = Path(root)
    try:
        name = (root / LATEST).read_text().strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if _STEP_RE.match(name) and _is_complete(root / name):
        return root / name
    steps = _complete_steps(root)
    return steps[-1][1] if steps else None


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore model (+ optimizer) state in place and this rank's RNG states from the
    checkpoint directory `path`; return its `extra` dict. Collective under torchrun.
    Raises `CheckpointError` naming `path` when it is missing, incomplete or corrupt."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not _is_complete(path):
        raise CheckpointError(f"checkpoint {path} is incomplete (no .metadata or {EXTRA})")
    try:
        extra = json.loads((path / EXTRA).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {EXTRA}: {e}") from e
    state = _state(model, optimizer)
    try:
        with _quiet_single_process():
            dcp.load(state, storage_reader=_SafeReader(path), no_dist=not _distributed())
    except (Exception, dcp.api.CheckpointException) as e:  # the latter is a BaseException
        raise CheckpointError(f"checkpoint {path}: cannot load model/optimizer state: {e}") from e
    _apply_state(model, optimizer, state)
    _load_rng(path, _rank())
    return extra
