"""Stage processes (`pipeline.launch`): forked from the fork server with the orchestrator's
environment, directory and exit code; the server's imports start no thread pool and no CUDA;
a SIGKILLed orchestrator takes its running stage with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from helpers import E2E_DATA_STAGES, SHARED_DATA, processes_under
from mobilellm_r1.pipeline import launch


@pytest.mark.parametrize("forked", [True, False])
def test_a_stage_gets_the_environment_directory_and_exit_code(forked, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(launch, "fork_server_available", lambda: forked)
    monkeypatch.setenv("MOBILELLM_R1_TEST_MARK", "set-after-the-server-started")
    lines: list[str] = []
    code = launch.run_stage(["info", "--preset", "tiny", "--json"], tmp_path, lines.append)
    assert code == 0
    assert json.loads("".join(lines))["preset"] == "tiny"
    # a bad command line: argparse's exit code 2, no stdout
    lines.clear()
    assert launch.run_stage(["info", "--preset"], tmp_path, lines.append) == 2
    assert lines == []


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request 400 and keeps its Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        _Recorder.seen.append(self.headers.get("Authorization"))
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": {"message": "no", "type": "invalid_request_error"}}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


@pytest.mark.skipif(not (SHARED_DATA / "eval").is_dir(), reason="needs ../shared/data/eval")
def test_the_child_gets_the_orchestrators_current_environment_and_directory(tmp_path, monkeypatch) -> None:
    """An API key exported now (after the fork server may have started in an earlier test) is
    the one a forked `eval --server` stage sends; `data synth --out synth` writes under the
    stage's directory."""
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", f"sk-test-{os.getpid()}")
    argv = ["eval", "--server", f"http://127.0.0.1:{server.server_port}/v1", "--served-model", "m"]
    argv += ["--tasks", "gsm8k", "--chat", "--limit", "1", "--data-dir", str(SHARED_DATA / "eval")]
    try:
        assert launch.run_stage(argv, tmp_path, lambda _: None) != 0  # the server answered 400
    finally:
        server.shutdown()
    assert _Recorder.seen and set(_Recorder.seen) == {f"Bearer sk-test-{os.getpid()}"}
    code = launch.run_stage(["data", "synth", "--out", "synth", "--scale", "0.01"], tmp_path, lambda _: None)
    assert code == 0 and (tmp_path / "synth").is_dir()


def test_the_preloaded_imports_start_no_thread_pool_and_no_cuda() -> None:
    """Forking is safe only before OpenMP or CUDA start: importing PRELOAD must add no thread to
    the interpreter's (numpy's BLAS pool is there from the start), initialise no CUDA context and
    not even ask CUDA for its devices (`torch.cuda.is_available()` initialises the driver, after
    which a forked child cannot use the GPU), nor create Triton's driver."""
    probe = (
        "import os, numpy, importlib, torch\n"
        "asked = []\n"
        "for name in ('is_available', 'device_count', 'get_device_capability', 'get_device_name'):\n"
        "    setattr(torch.cuda, name, lambda *a, _n=name, **k: asked.append(_n))\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        f"for name in {launch.PRELOAD!r}: importlib.import_module(name)\n"
        "import triton.runtime\n"
        "drv = triton.runtime.driver\n"
        "print(before, len(os.listdir('/proc/self/task')), torch.cuda.is_initialized(), asked == [],\n"
        "      drv._active is None and drv._default is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    before, after, cuda, asked_nothing, no_triton_driver = out.split()
    assert after == before and cuda == "False"
    assert asked_nothing == "True" and no_triton_driver == "True"


RECIPE = (
    "name: long\nout_dir: run\nstages:\n"
    + E2E_DATA_STAGES
    + """
  - name: pretrain
    run: train --recipe train/tiny_cpu
    set: [out_dir=pretrain, steps=100000, data.micro_batch=2, data.seq_len=64, checkpoint_every=2, keep_last=1,
          eval_every=0]
    inputs: [data/shards/synthetic]
    outputs: [pretrain]
"""
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_orchestrator_takes_its_stage_with_it(tmp_path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mobilellm_r1.cli", "run", "recipe.yaml"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.time() + 300
        while not (run / "pretrain" / "checkpoints").is_dir():
            assert proc.poll() is None and time.time() < end, "training did not start"
            time.sleep(0.1)
        assert processes_under(run), "the training stage runs in the run directory"
        proc.send_signal(signal.SIGKILL)  # the orchestrator alone, not its process group
        proc.wait()
        end = time.time() + 30
        while processes_under(run):
            assert time.time() < end, f"stage processes outlived the orchestrator: {processes_under(run)}"
            time.sleep(0.1)
    finally:
        for pid in processes_under(run):
            os.kill(pid, signal.SIGKILL)
