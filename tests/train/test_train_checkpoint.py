"""Training checkpoints: exact resume, pruning, `latest`, kill-safety, FSDP2 under torchrun."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import get_state_dict

import mobilellm_r1.train.checkpoint as ckpt
from helpers import TINY_MODEL_SET
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


# ------------------------------------------------------------------ untrusted checkpoints (issue 17)
class _Payload:
    """Unpickling this creates `marker` (stands in for any code a crafted checkpoint would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _reseal(path: Path) -> None:
    """What an attacker would do after editing files: rewrite the manifest to match them."""
    names = ckpt.manifest.listed_files(path)
    ckpt.manifest.write_manifest(path, ckpt.manifest.digests(path, names))


def _legacy_checkpoint(path: Path, marker: Path) -> dict:
    """The older layout (DCP's default writer) with the payload as a param group's lr, a non-tensor
    (bytes) entry that the previous loader read with `torch.load(weights_only=False)`.
    Returns the model/optimizer state template that loader passed to `dcp.load`."""
    model, opt = _trained(1)
    model_sd, optim_sd = get_state_dict(model, opt)
    optim_sd["param_groups"][0]["lr"] = _Payload(marker)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path, no_dist=True)
    (path / "extra.json").write_text('{"step": 1}')
    model_sd, optim_sd = get_state_dict(*_fresh())
    return {"model": model_sd, "optim": optim_sd}


def test_legacy_bytes_entry_is_refused_unread(tmp_path: Path) -> None:
    root, marker = tmp_path / "ckpt", tmp_path / "pwned"
    template = _legacy_checkpoint(root / "step_00000001", marker)
    # The old behaviour: DCP's default load planner unpickles the bytes entry, running the payload.
    dcp.load(template, checkpoint_id=root / "step_00000001", no_dist=True)
    assert marker.exists()
    marker.unlink()
    model, opt = _fresh()
    with pytest.raises(CheckpointError, match=r"older DCP layout .* pickles"):
        ckpt.resume_latest(root, model, opt)  # found as the latest checkpoint, and refused
    assert not marker.exists()


def test_legacy_metadata_pickle_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "step_00000001").mkdir()
    (tmp_path / "step_00000001" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    (tmp_path / "step_00000001" / "extra.json").write_text('{"step": 1}')
    with pytest.raises(CheckpointError, match=r"step_00000001 has the older DCP layout"):
        load_checkpoint(tmp_path / "step_00000001", *_fresh())
    assert not marker.exists()


# Each file kind of a checkpoint replaced by a pickle payload, the manifest rewritten to match.
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("tensors/shard-00001-model-00001-of-00001.safetensors", "cannot load model/optimizer state"),
        ("state.json", "unreadable state.json"),
        ("extra.json", "unreadable extra.json"),
        ("rng_rank0.safetensors", "unreadable RNG state rng_rank0.safetensors"),
        ("manifest.json", "manifest.json is unreadable"),
    ],
)
def test_pickle_in_any_file_is_refused(tmp_path: Path, name: str, error: str) -> None:
    model, opt = _trained(1)
    path = save_checkpoint(tmp_path, 1, model, opt, {})
    marker = tmp_path / "pwned"
    for payload in (pickle.dumps(_Payload(marker)), _torch_saved(_Payload(marker))):
        (path / name).write_bytes(payload)
        if name != "manifest.json":
            _reseal(path)
        with pytest.raises(CheckpointError, match=re.escape(error)):
            load_checkpoint(path, *_fresh())
        assert not marker.exists()


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _flip(file: Path) -> None:
    """Invert the 4 KB at offset 4096 (inside the tensor data of a shard)."""
    data = bytearray(file.read_bytes())
    data[4096:8192] = bytes(b ^ 0xFF for b in data[4096:8192])
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip, "fails its checksum"),
        (lambda f: f.write_bytes(f.read_bytes()[:-100]), "bytes, the manifest says"),
        (Path.unlink, "is missing"),
    ],
)
def test_corrupt_checkpoint_falls_back_to_previous(tmp_path: Path, damage, message: str) -> None:
    model, opt = _trained(1)
    save_checkpoint(tmp_path, 1, model, opt, {"tag": "one"})
    step1 = _snapshot(model, opt)
    train_step(model, opt)
    save_checkpoint(tmp_path, 2, model, opt, {"tag": "two"})
    shard = "tensors/shard-00001-model-00001-of-00001.safetensors"
    damage(tmp_path / "step_00000002" / shard)

    model2, opt2 = _fresh()
    with pytest.raises(ckpt.CorruptCheckpointError, match=rf"step_00000002: {re.escape(shard)} .*{message}"):
        load_checkpoint(tmp_path / "step_00000002", model2, opt2)
    with pytest.warns(UserWarning, match=rf"{re.escape(shard)} .*{message}.*falling back"):
        path, extra = ckpt.resume_latest(tmp_path, model2, opt2)
    assert path == tmp_path / "step_00000001" and extra == {"step": 1, "tag": "one"}
    _assert_same(_snapshot(model2, opt2), step1)  # step 1's weights, never the damaged ones

    _flip(tmp_path / "step_00000001" / "rng_rank0.safetensors")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no intact checkpoint"):
        ckpt.resume_latest(tmp_path, *_fresh())
    assert ckpt.resume_latest(tmp_path / "empty", *_fresh()) is None


def test_unlisted_file_is_refused(tmp_path: Path) -> None:
    model, opt = _trained(1)
    path = save_checkpoint(tmp_path, 1, model, opt, {})
    (path / "tensors" / "shard-00002-model-00001-of-00001.safetensors").write_bytes(b"")
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"shard-00002.* not listed in manifest\.json"):
        load_checkpoint(path, *_fresh())


# ------------------------------------------------------------------ the trainer's run directory
RUN = [
    TINY_MODEL_SET,
    "data.overrides=[seq_len=32, 'synth={out: data/synth, seed: 0, scale: 0.02}']",
    "data.micro_batch=2",
    "eval_every=0",
    "precision=fp32",
    "checkpoint_every=1",
    "keep_last=5",
    "out_dir=run",
]


def _train_args(steps: int) -> list[str]:
    sets = [*RUN, f"steps={steps}"]
    return [
        "train",
        "--recipe",
        "train/tiny_cpu",
        "--device",
        "cpu",
        *(x for s in sets for x in ("--set", s)),
    ]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def run_in_tmp(tmp_path, monkeypatch) -> Path:
    """cwd = tmp_path; the trainer's export writes no tokenizer files (building them takes seconds)."""
    from mobilellm_r1.model.hf import save_pretrained
    from mobilellm_r1.train.trainer import Trainer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        Trainer, "export", lambda self, directory: save_pretrained(self.model, None, directory)
    )
    return tmp_path / "run"


def test_resume_from_earlier_checkpoint_keeps_one_metrics_row_per_step(run_in_tmp: Path) -> None:
    from mobilellm_r1.cli import main

    assert main(_train_args(2)) == 0
    assert _steps(run_in_tmp) == [1, 2]
    # As if killed after logging step 2 but before its checkpoint was published: resume at step 1.
    shutil.rmtree(run_in_tmp / "checkpoints/step_00000002")
    (run_in_tmp / "checkpoints/latest").write_text("step_00000001\n")
    with open(run_in_tmp / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "lo')  # the last row torn by the kill
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: dropped unreadable line\(s\) \[4\]"):
        assert main([*_train_args(2), "--resume"]) == 0
    assert _steps(run_in_tmp) == [1, 2]


def test_new_run_into_used_out_dir_is_refused(run_in_tmp: Path, capsys) -> None:
    from mobilellm_r1.cli import main

    (run_in_tmp / "checkpoints" / "step_00000009").mkdir(parents=True)
    (run_in_tmp / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    (run_in_tmp / ".final.tmp-x1y2").mkdir()  # what an export killed midway leaves
    (run_in_tmp / "notes.txt").write_text("mine")
    assert main(_train_args(1)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out_dir run is not empty (.final.tmp-x1y2, checkpoints, metrics" in err
    assert "--resume" in err and "--overwrite" in err
    assert (run_in_tmp / "metrics.jsonl").read_text() == '{"step": 1, "loss": 9.0}\n'
    assert main([*_train_args(1), "--resume", "--overwrite"]) == 2  # contradictory: a usage error

    assert main([*_train_args(1), "--overwrite"]) == 0
    assert _steps(run_in_tmp) == [1]
    assert sorted(p.name for p in run_in_tmp.iterdir()) == [
        "checkpoints",
        "final",
        "metrics.jsonl",
        "notes.txt",
        "tb",
    ]
    assert sorted(p.name for p in (run_in_tmp / "checkpoints").iterdir()) == ["latest", "step_00000001"]


def test_cli_resume_from_corrupt_checkpoints_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from mobilellm_r1.cli import main

    monkeypatch.chdir(tmp_path)
    model, opt = _trained(1)
    path = save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, opt, {})
    size = (path / "extra.json").stat().st_size
    (path / "extra.json").write_bytes(b"{" + b"?" * (size - 1))  # same size, not the same bytes
    args = _train_args(2)
    with pytest.warns(UserWarning, match=r"extra\.json fails its checksum"):
        assert main([*args, "--resume"]) == 1
    err = capsys.readouterr().err  # data preparation logs above, then the error on one line
    last = err.splitlines()[-1]
    assert last.startswith("mobilellm-r1: error: no intact checkpoint under run/checkpoints")
    assert "extra.json fails its checksum" in last and "Traceback" not in err
    _reseal(path)  # checksums right, content still malformed: a one-line error, no fallback
    assert main([*args, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "unreadable extra.json" in err.splitlines()[-1] and "Traceback" not in err


def test_cli_ends_with_a_summary_naming_the_final_model(run_in_tmp: Path, capsys) -> None:
    from mobilellm_r1.cli import main

    assert main(_train_args(2)) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["steps_run"] == 2
    assert summary["tokens"] == 2 * 2 * 32 and summary["elapsed_s"] > 0
    assert Path(summary["final_model"]) == Path("run/final") and (run_in_tmp / "final").is_dir()
    assert Path(summary["metrics"]) == Path("run/metrics.jsonl")
    lines = err.splitlines()[-3:]
    assert lines[0].startswith("tiny_cpu: done at step 2 (2 steps, 128 tokens, 0m")
    assert f"final loss {summary['loss']:.4f}" in lines[0]
    assert lines[1].split() == ["final", "model:", "run/final"]
    assert lines[2].split() == ["metrics:", "run/metrics.jsonl"]


def test_checkpoint_stores_each_tensor_once(run_in_tmp: Path) -> None:
    """Weights (the tied LM head once, as the embedding) and AdamW's two moments: nothing else
    of any size, no final-model copy in the checkpoint."""
    from mobilellm_r1.cli import main

    assert main(_train_args(1)) == 0
    path = run_in_tmp / "checkpoints" / "step_00000001"
    stored = load_file(str(next((path / "tensors").glob("*.safetensors"))))
    params = {k.removeprefix("model.model."): v for k, v in stored.items() if k.startswith("model.")}
    assert "lm_head.weight" not in params and "embed_tokens.weight" in params
    weights = sum(v.numel() for v in params.values())
    moments = [v for k, v in stored.items() if k.endswith((".exp_avg", ".exp_avg_sq"))]
    assert len(moments) == 2 * len(params) and sum(v.numel() for v in moments) == 2 * weights
    assert sum(v.numel() for v in stored.values()) - 3 * weights <= len(params)  # Adam step counters
    files = [p for p in path.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3 * weights * 4 + 256 * 1024
