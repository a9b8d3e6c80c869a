"""Training checkpoints: exact resume, pruning, `latest`, kill-safety, FSDP2 under torchrun."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mobilellm_r1.train.checkpoint as ckpt
from mobilellm_r1.train.checkpoint import (
    CheckpointError,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")
TINY = "hidden_size=32, intermediate_size_mlp=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16, vocab_size=100"

# Shared by this module and the subprocess scripts below (exec'd there as source).
COMMON = f"""
import random
import numpy as np
import torch
import torch.nn.functional as F
from mobilellm_r1.model import ModelConfig, build_model

def tiny(seed):
    return build_model(ModelConfig({TINY}), seed=seed)

def train_step(model, opt):
    x = torch.randint(0, 100, (2, 8))
    logits = model(x).float() + 0.01 * torch.rand(2, 8, 100)  # RNG-dependent noise
    scale = 1 + 0.01 * random.random() + 0.01 * float(np.random.rand())
    loss = F.cross_entropy(logits.flatten(0, 1), torch.roll(x, -1, 1).flatten()) * scale
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()
"""
_ns: dict = {}
exec(COMMON, _ns)
tiny, train_step = _ns["tiny"], _ns["train_step"]


def _seed(s: int) -> None:
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)


def _trained(steps: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    _seed(0)
    model = tiny(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        train_step(model, opt)
    return model, opt


def _fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = tiny(1)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def _snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    flat = {f"p.{k}": v.detach().clone() for k, v in model.named_parameters()}
    for i, st in opt.state_dict()["state"].items():
        flat.update({f"o.{i}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
    return flat


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def test_roundtrip_resumes_bit_identically(tmp_path: Path) -> None:
    model, opt = _trained()
    extra = {"scheduler": {"last_epoch": 2}, "data": {"cursor": [3, 7]}, "metrics": {"loss": 4.5}}
    path = save_checkpoint(tmp_path, 2, model, opt, extra)
    assert path == tmp_path / "step_00000002" and latest_checkpoint(tmp_path) == path
    assert (tmp_path / "latest").read_text().strip() == path.name
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*")) == [
        "extra.json",
        "manifest.json",
        "rng_rank0.safetensors",
        "state.json",
        "tensors",
        "tensors/shard-00001-model-00001-of-00001.safetensors",
    ]
    state, rng = _snapshot(model, opt), capture_rng()
    losses = [train_step(model, opt) for _ in range(3)]

    _seed(123)
    model2, opt2 = _fresh()
    assert load_checkpoint(path, model2, opt2) == {"step": 2, **extra}
    assert model2.lm_head.weight is model2.embed_tokens.weight
    _assert_same(_snapshot(model2, opt2), state)
    assert opt2.param_groups[0]["lr"] == 1e-2
    _assert_same(capture_rng(), rng)
    assert [train_step(model2, opt2) for _ in range(3)] == losses

    model3 = tiny(2)  # model-only load
    load_checkpoint(path, model3)
    assert all(torch.equal(p, state[f"p.{k}"]) for k, p in model3.named_parameters())


def test_rng_capture_restore() -> None:
    rng = capture_rng()
    a = (torch.rand(3), random.random(), np.random.rand(2), np.random.randn())
    restore_rng(rng)
    b = (torch.rand(3), random.random(), np.random.rand(2), np.random.randn())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2]) and a[3] == b[3]


def test_keep_last_pruning(tmp_path: Path) -> None:
    model, opt = _trained(1)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, opt, {}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000004", "step_00000005"]
    # The checkpoint just written survives even when newer-numbered ones exist.
    save_checkpoint(tmp_path, 3, model, opt, {}, keep_last=1)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000003", "step_00000005"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
    save_checkpoint(tmp_path, 3, model, opt, {"again": True}, keep_last=None)  # re-save a step
    assert load_checkpoint(latest_checkpoint(tmp_path), model) == {"step": 3, "again": True}
    for step in (6, 7):
        save_checkpoint(tmp_path, step, model, opt, {}, keep_last=None)
    assert len(list(tmp_path.glob("step_*"))) == 4


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.getpid, ())


def test_latest_fallbacks_and_errors(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "nowhere") is None and latest_checkpoint(tmp_path) is None
    model, opt = _trained(1)
    for step in (1, 2):
        save_checkpoint(tmp_path, step, model, opt, {})
    (tmp_path / ".step_00000009.tmp").mkdir()  # an interrupted save is never "latest"
    (tmp_path / "step_00000008").mkdir()  # nor an incomplete directory
    step1, step2 = tmp_path / "step_00000001", tmp_path / "step_00000002"
    (tmp_path / "latest").write_text("step_00000001\n")
    assert latest_checkpoint(tmp_path) == step1
    for broken in ("step_00000007", "garbage", ""):
        (tmp_path / "latest").write_text(broken)
        assert latest_checkpoint(tmp_path) == step2
    (tmp_path / "latest").unlink()
    assert latest_checkpoint(tmp_path) == step2

    for bad in (tmp_path / "missing", tmp_path / "step_00000008"):
        with pytest.raises(CheckpointError, match=bad.name):
            load_checkpoint(bad, model, opt)
    (step2 / ".metadata").write_bytes(b"\x80not metadata")
    with pytest.raises(CheckpointError, match=re.escape(str(step2))):
        load_checkpoint(step2, model, opt)
    (step2 / ".metadata").write_bytes(pickle.dumps(_Evil()))  # never read: not in the manifest
    with pytest.raises(CheckpointError, match=r"\.metadata is not listed in manifest\.json"):
        load_checkpoint(step2, model, opt)
    (step1 / "extra.json").write_text("{truncated")
    with pytest.raises(CheckpointError, match=re.escape(str(step1))):
        load_checkpoint(step1, model, opt)
    with pytest.raises(TypeError):  # not JSON-able: fails before anything is written
        save_checkpoint(tmp_path, 3, model, opt, {"bad": object()})
    assert not list(tmp_path.glob("*step_00000003*"))


KILLED_SAVE = """
import sys, time
from pathlib import Path
from safetensors.torch import save_file
import mobilellm_r1.train.checkpoint as ckpt

root = Path(sys.argv[1])
torch.manual_seed(0)
model = tiny(0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
train_step(model, opt)
ckpt.save_checkpoint(root, 1, model, opt, {"tag": "one"})
save_file({k: v.clone() for k, v in model.state_dict().items()}, str(root.parent / "ref.safetensors"))
train_step(model, opt)

original = getattr(ckpt, sys.argv[2])
def stall(*args, **kwargs):  # block just before `hook` would run
    print("STALLED", flush=True)
    time.sleep(120)
    original(*args, **kwargs)
setattr(ckpt, sys.argv[2], stall)
ckpt.save_checkpoint(root, 2, model, opt, {"tag": "two"})
"""


def _assert_recovers(root: Path, ref: dict[str, torch.Tensor], renamed: bool) -> None:
    """After a save of step 2 died midway: step 1 is what `latest` gives, it loads, and the
    next save removes the stale temporary directory."""
    step1, stale = root / "step_00000001", root / ".step_00000002.tmp"
    assert latest_checkpoint(root) == step1
    assert (root / "latest").read_text().strip() == step1.name
    assert stale.exists() != renamed
    model, opt = _fresh()
    assert load_checkpoint(step1, model, opt) == {"step": 1, "tag": "one"}
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    save_checkpoint(root, 3, model, opt, {})
    assert latest_checkpoint(root) == root / "step_00000003"
    assert not list(root.glob(".*tmp"))


def test_killed_save_leaves_previous_checkpoint(tmp_path: Path) -> None:
    """A real SIGKILL while step 2 is half written (DCP files there, RNG/extra not yet)."""
    root, script = tmp_path / "ckpt", tmp_path / "killed_save.py"
    script.write_text(COMMON + KILLED_SAVE)
    cmd = [sys.executable, str(script), str(root), "_save_rng"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=_env(), text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "STALLED", f"subprocess ended early (rc={proc.poll()})"
        assert list((root / ".step_00000002.tmp" / "tensors").glob("*.safetensors"))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    _assert_recovers(root, load_file(str(tmp_path / "ref.safetensors")), renamed=False)


class _Crash(BaseException):
    """Stands in for a kill (nothing in `save_checkpoint` may clean up after it)."""


# DCP files written; everything written but not renamed; renamed but `latest` not rewritten.
@pytest.mark.parametrize("hook", ["_save_rng", "_publish", "_write_text_atomic"])
def test_crash_midway_leaves_previous_checkpoint(tmp_path: Path, monkeypatch, hook: str) -> None:
    model, opt = _trained(1)
    save_checkpoint(tmp_path, 1, model, opt, {"tag": "one"})
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    train_step(model, opt)

    def crash(*args: object, **kwargs: object) -> None:
        raise _Crash

    monkeypatch.setattr(ckpt, hook, crash)
    with pytest.raises(_Crash):
        save_checkpoint(tmp_path, 2, model, opt, {"tag": "two"})
    monkeypatch.undo()
    _assert_recovers(tmp_path, ref, renamed=hook == "_write_text_atomic")


DIST_WORKER = """
import gc, json, sys
from pathlib import Path
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.distributed.fsdp import fully_shard
from mobilellm_r1.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

mode, out = sys.argv[1], Path(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)
random.seed(rank)
np.random.seed(rank)
model = tiny(0 if mode == "save" else 1)
for layer in model.layers:
    fully_shard(layer)
fully_shard(model)
assert type(model.norm.weight).__name__ == "DTensor"
opt = torch.optim.AdamW(model.parameters(), lr=1e-2 if mode == "save" else 1e-3)
if mode == "save":
    for _ in range(2):
        train_step(model, opt)
    save_checkpoint(out / "ckpt", 2, model, opt, {"world": dist.get_world_size()})
else:
    extra = load_checkpoint(latest_checkpoint(out / "ckpt"), model, opt)
    assert extra == {"step": 2, "world": 2}, extra
full_model, full_optim = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank == 0:  # the state at the checkpoint (cpu_offload: rank 0 holds it)
    flat = {"model." + k: v.clone() for k, v in full_model.items()}
    for fqn, st in full_optim["state"].items():
        flat.update({f"optim.{fqn}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
losses = [train_step(model, opt) for _ in range(2)]
if rank == 0:
    save_file(flat, str(out / f"full_{mode}.safetensors"))
gathered = [None, None]
dist.all_gather_object(gathered, losses)
if rank == 0:
    (out / f"losses_{mode}.json").write_text(json.dumps(gathered))
# Free FSDP/DCP objects while the process group is alive: left to interpreter teardown they
# sporadically abort the process ("terminate called without an active exception", gloo).
del model, opt, full_model, full_optim
gc.collect()
dist.destroy_process_group()
"""


def _run_two_ranks(script: Path, *args: str) -> None:
    """What `torchrun --standalone --nproc-per-node 2` does, minus the agent process (faster):
    as under torchrun, the workers' TCPStore is hosted outside them (here: in this process,
    on a port it picked itself, so no free-port race)."""
    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": "2"}
    env["TORCHELASTIC_USE_AGENT_STORE"] = "True"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err[-4000:]


def test_fsdp2_two_process_gloo_roundtrip(tmp_path: Path) -> None:
    script = tmp_path / "dist_worker.py"
    script.write_text(COMMON + DIST_WORKER)
    for mode in ("save", "load"):  # two separate 2-process jobs
        _run_two_ranks(script, mode, str(tmp_path))
    ckpt = tmp_path / "ckpt" / "step_00000002"
    names = {str(p.relative_to(ckpt)) for p in ckpt.rglob("*")}
    assert {
        "tensors/shard-00001-model-00001-of-00001.safetensors",
        "tensors/shard-00002-model-00001-of-00001.safetensors",
        "rng_rank0.safetensors",
        "rng_rank1.safetensors",
        "extra.json",
    } <= names
    saved, loaded = (
        load_file(str(tmp_path / "full_save.safetensors")),
        load_file(str(tmp_path / "full_load.safetensors")),
    )
    assert any(k.endswith("exp_avg_sq") for k in saved)
    _assert_same(loaded, saved)
    losses = json.loads((tmp_path / "losses_save.json").read_text())
    assert json.loads((tmp_path / "losses_load.json").read_text()) == losses
    assert losses[0] != losses[1]  # per-rank RNG streams (and data) really differ
    model, opt = _fresh()  # resharded: saved by 2 ranks, loaded by one process
    assert load_checkpoint(ckpt, model, opt) == {"step": 2, "world": 2}
    for name, p in model.named_parameters():
        assert torch.equal(p, saved[f"model.{name}"]), name
    for i, name in enumerate(n for n, _ in model.named_parameters()):
        for key, value in opt.state_dict()["state"][i].items():
            assert torch.equal(value, saved[f"optim.{name}.{key}"]), (name, key)
