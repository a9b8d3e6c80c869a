"""Atomic, verified training checkpoints through `torch.distributed.checkpoint` (DCP).

One layout serves a plain single-process model and an FSDP2 (`fully_shard`) model under
torchrun: `get_state_dict` / `set_state_dict` turn either into canonical-FQN state dicts
(DTensor shards when sharded) and DCP writes each rank's shards in parallel.

    root/step_00001000/  tensors/shard-{r+1:05d}-model-00001-of-00001.safetensors
                                          (DCP, HF storage: rank r's tensors of {"model", "optim"})
                         state.json       (the non-tensor rest of that state: param_groups, ...)
                         extra.json       (trainer state, rank 0)
                         rng_rank{r}.safetensors  (per-rank RNG states)
                         manifest.json    (size and xxh3-128 of every file above, written last)
    root/latest          "step_00001000"

Nothing is ever unpickled: tensors are safetensors (DCP's `HuggingFaceStorageReader` builds its
index from their JSON headers, the shard offsets included), everything else is JSON. Checkpoints
of the older DCP layout (`.metadata` + `*.distcp`, which are pickles) are refused unread.

A save writes into `root/.step_<step:08d>.tmp/`; once every rank is done the files are hashed
(each rank a share), rank 0 writes the manifest, fsyncs, renames the directory to its final name
and atomically rewrites `latest`. A kill at any point leaves the previous checkpoint complete;
stale `.tmp` directories are removed by the next save. A load verifies every file against the
manifest before reading any; `resume_latest` falls back to the previous checkpoint when one is
corrupt (a warning names the file).
"""

from __future__ import annotations

import contextlib
import json
import os
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
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from ..atomic import atomic_write
from . import manifest

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "resume_latest",
    "save_checkpoint",
]

LATEST = "latest"
EXTRA = "extra.json"
STATE = "state.json"
TENSORS = "tensors"
_STEP_RE = re.compile(r"^step_(\d{8,})$")
_TMP_RE = re.compile(r"^\.step_\d{8,}\.(tmp|old)$")


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or unreadable."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is missing, truncated or fails its checksum."""


# ------------------------------------------------------------------ distributed helpers
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _world() -> int:
    return dist.get_world_size() if _distributed() else 1


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _gather(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (our own values between our own ranks)."""
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


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
    """Flush every file and directory under `directory`, then `directory` itself."""
    for path in directory.rglob("*"):
        _fsync_path(path)
    _fsync_path(directory)


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, text, fsync=True)
    _fsync_path(path.parent)


def _is_legacy(path: Path) -> bool:
    """A checkpoint of the older pickle-based DCP layout."""
    return (path / ".metadata").is_file() and not (path / manifest.MANIFEST).is_file()


def _is_complete(path: Path) -> bool:
    """Sealed (has a manifest), or a legacy checkpoint (listed so that loading it is refused loudly)."""
    return (path / manifest.MANIFEST).is_file() or (_is_legacy(path) and (path / EXTRA).is_file())


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


def _seal(tmp: Path) -> None:
    """Hash every file of the finished `tmp` (rank r the r-th share) and let rank 0 write the manifest."""
    names = manifest.listed_files(tmp)
    shares = _gather(manifest.digests(tmp, names[_rank() :: _world()]))
    if _rank() == 0:
        manifest.write_manifest(tmp, {k: v for share in shares for k, v in share.items()})


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


def _verify(path: Path) -> None:
    """Check every file of `path` against its manifest (each rank a share; collective).
    Raises `CorruptCheckpointError` naming the first bad file, identically on every rank."""
    try:
        files = manifest.read_manifest(path)
        names = sorted(files)
        problem = manifest.first_problem(path, names[_rank() :: _world()], files)
        extra = manifest.unlisted(path, files) if _rank() == 0 else []
        if problem is None and extra:
            problem = f"{extra[0]} is not listed in {manifest.MANIFEST}"
    except (OSError, ValueError) as e:
        problem = str(e)
    problems = [p for p in _gather(problem) if p is not None]
    if problems:
        raise CorruptCheckpointError(f"checkpoint {path}: {problems[0]}")


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group (intended here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


# ------------------------------------------------------------------ model/optimizer state
def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are another parameter under a second name (a tied LM head)."""
    unique = {name for name, _ in model.named_parameters()}
    return {name for name, _ in model.named_parameters(remove_duplicate=False)} - unique


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """{"model": ..., "optim": ...} with canonical FQNs (DTensor shards under FSDP2)."""
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def _split(tree: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, data): nested dict `tree` cut in two along the same key paths; `tensors` holds
    the tensor leaves, `data` everything else (lists whole, empty dicts kept)."""
    tensors: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, dict):
            t, d = _split(value)
            if t:
                tensors[key] = t
            if d or not t:
                data[key] = d
        else:
            data[key] = value
    return tensors, data


def _as_like(value: Any, like: Any) -> Any:
    """JSON `value` with the tuples of `like` restored (e.g. Adam's `betas`)."""
    if isinstance(value, list) and isinstance(like, (list, tuple)):
        items = [_as_like(v, like[i] if i < len(like) else None) for i, v in enumerate(value)]
        return tuple(items) if isinstance(like, tuple) else items
    if isinstance(value, dict) and isinstance(like, dict):
        return {k: _as_like(v, like.get(k)) for k, v in value.items()}
    return value


def _join(tensors: dict[str, Any], data: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `_split`; `like` (the live state) gives non-JSON types back."""
    out = {}
    for key in dict.fromkeys([*tensors, *data]):
        t, d, model = tensors.get(key), data.get(key), like.get(key)
        if isinstance(t, dict):
            out[key] = _join(t, d if isinstance(d, dict) else {}, model if isinstance(model, dict) else {})
        else:
            out[key] = t if t is not None else _as_like(d, model)
    return out


def _tensors_only(state: dict[str, Any], model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors DCP stores, JSON-able rest); a tied head is stored once (as the embedding)."""
    tensors, data = _split(state)
    tied = _tied_names(model)
    tensors["model"] = {k: v for k, v in tensors["model"].items() if k not in tied}
    return tensors, data


def _apply_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict) -> None:
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads((path / name).read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise CheckpointError(f"checkpoint {path}: unreadable {name}: {e}") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint {path}: {name} is not a JSON object")
    return value


# ------------------------------------------------------------------ public API
def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extra: dict[str, Any],
    keep_last: int | None = 3,
) -> Path:
    """Write model + optimizer (DCP tensors + JSON), `extra` (JSON) and per-rank RNG states as
    `root/step_{step:08d}/` with a checksum manifest, atomically; then prune to the newest
    `keep_last` checkpoints (`None`: keep all). Collective: every rank must call it. Returns the
    final directory. A value that is neither a tensor nor JSON-able raises TypeError first."""
    root = Path(root)
    rank, distributed = _rank(), _distributed()
    tensors, data = _tensors_only(_state(model, optimizer), model)
    extra_text = json.dumps({"step": step, **extra}, indent=1)  # fail early, on every rank
    state_text = json.dumps(data, indent=1)
    final = root / _step_dir_name(step)
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        (tmp / TENSORS).mkdir(parents=True)
    _barrier()
    writer = HuggingFaceStorageWriter(str(tmp / TENSORS), save_distributed=True)
    with _quiet_single_process():
        dcp.save(tensors, storage_writer=writer, no_dist=not distributed)
    _save_rng(tmp, rank, _world())
    if rank == 0:
        (tmp / EXTRA).write_text(extra_text)
        (tmp / STATE).write_text(state_text)
    _barrier()
    _seal(tmp)
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
    Every file is checked against the manifest before any is read (`CorruptCheckpointError`
    naming the file); other problems raise `CheckpointError` naming `path`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if _is_legacy(path):
        raise CheckpointError(
            f"checkpoint {path} has the older DCP layout (.metadata, *.distcp), whose files are pickles "
            "that can run code when read; it is not loaded (resume from a checkpoint of this version, "
            "or start from an exported model with model.init_from)"
        )
    if not (path / manifest.MANIFEST).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete (no {manifest.MANIFEST})")
    _verify(path)
    extra, data = _read_json(path, EXTRA), _read_json(path, STATE)
    live = _state(model, optimizer)
    tensors, _ = _tensors_only(live, model)
    try:
        with _quiet_single_process():
            dcp.load(
                tensors,
                storage_reader=HuggingFaceStorageReader(str(path / TENSORS)),
                no_dist=not _distributed(),
            )
        _apply_state(model, optimizer, _join(_split(live)[0], data, live))  # loaded in place
    except (Exception, dcp.api.CheckpointException) as e:  # the latter is a BaseException
        raise CheckpointError(f"checkpoint {path}: cannot load model/optimizer state: {e}") from e
    _load_rng(path, _rank())
    return extra


def _candidates(root: Path) -> list[Path]:
    """`latest_checkpoint(root)`, then every older complete checkpoint, newest first."""
    first = latest_checkpoint(root)
    if first is None:
        return []
    older = [p for step, p in _complete_steps(root) if step < int(_STEP_RE.match(first.name).group(1))]
    return [first, *reversed(older)]


def resume_latest(
    root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """Load the latest intact checkpoint under `root` (see `load_checkpoint`): one that fails its
    checksums is skipped with a warning naming the file, and the previous one is tried. Returns
    (its path, its extra dict), None when `root` holds no checkpoint; raises `CheckpointError`
    when every checkpoint is corrupt. Collective under torchrun."""
    failures = []
    for path in _candidates(Path(root)):
        try:
            return path, load_checkpoint(path, model, optimizer)
        except CorruptCheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
            failures.append(str(e))
    if failures:
        raise CheckpointError(f"no intact checkpoint under {root}: {'; '.join(failures)}")
    return None
