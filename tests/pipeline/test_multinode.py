"""The e2e runner across two "nodes" (torchrun, c10d rendezvous, gloo) trains exactly as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from helpers import E2E_DATA_STAGES

RECIPE = (
    """name: mn
out_dir: run
stages:
"""
    + E2E_DATA_STAGES
    + """
  - name: pretrain
    run: train --recipe train/tiny_cpu
    set: [out_dir=pretrain, steps=3, data.micro_batch=2, data.seq_len=64, checkpoint_every=3, eval_every=0, log_every=1]
    inputs: [data/shards/synthetic]
    outputs: [pretrain]
    ranks: all
"""
)


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_process(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        (d / "recipe.yaml").write_text(RECIPE)
    cli = [sys.executable, "-m", "mobilellm_r1.cli", "run", "recipe.yaml"]
    # one process with the same global batch: 2 micro-batches of 2
    subprocess.run([*cli, "--set", "pretrain.data.grad_accum=2"], cwd=one, check=True, capture_output=True)
    endpoint = f"127.0.0.1:{_free_port()}"
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "e2e-test",
        "-m", "mobilellm_r1.cli", "run", "recipe.yaml",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            torchrun, cwd=two, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    marker = json.loads((two / "run" / ".stages" / "pretrain.json").read_text())
    assert marker["state"] == "done"
    reference, distributed = _losses(one / "run"), _losses(two / "run")
    assert len(reference) == len(distributed) == 3
    assert max(abs(a - b) for a, b in zip(reference, distributed, strict=True)) < 1e-5
    assert (two / "run" / "report.html").is_file()
