"""Starting a stage's process: forked from a fork server that imported torch and the stage code
once, or (where the platform has no fork server) a fresh interpreter per stage.

A fresh `python -m mobilellm_r1.cli` spends ~3 s importing torch and the stage modules before it
does anything (2-core CPU); a recipe of 23 stages pays that 23 times. Python's `forkserver`
start method keeps one clean process that imported :data:`PRELOAD` and forks a child per stage:
the child runs the CLI in the stage's directory with the orchestrator's environment and its
stdout on a socket the orchestrator reads line by line; stderr (progress bars) is the
orchestrator's. The server itself never runs a tensor operation (a fork after OpenMP or CUDA
started is unsafe; a test checks neither has). A child ends when the orchestrator does (it
watches the orchestrator's end of its stdout socket), and the server once both are gone, so a
killed run leaves no stage running.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import multiprocessing
import multiprocessing.context
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ..procs import die_with_parent

# Imported once by the fork server: torch and the stage modules built on it, but none that loads
# pyarrow (its import starts a thread; a fork copies no thread) and not the exporters' ExecuTorch
# / gguf stacks (two stages use them).
PRELOAD = [
    "torch",
    "mobilellm_r1.train.commands",
    "mobilellm_r1.train.trainer",
    "mobilellm_r1.eval.runner",
    "mobilellm_r1.curation.influence",
]


def fork_server_available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def run_stage(argv: list[str], cwd: Path, on_line: Callable[[str], None]) -> int:
    """Run `mobilellm-r1 ARGV` in `cwd`; each stdout line goes to `on_line`; returns its exit
    code (negative: killed by that signal)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = _forked if fork_server_available() else _fresh
    return start(argv, cwd, env, on_line)


def _fresh(argv: list[str], cwd: Path, env: dict[str, str], on_line: Callable[[str], None]) -> int:
    parent = os.getpid()
    with subprocess.Popen(
        [sys.executable, "-m", "mobilellm_r1.cli", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: die_with_parent(parent),
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            on_line(line)
    return child.returncode


@functools.cache
def _fork_context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, told once what its server imports (read when it starts)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _forked(argv: list[str], cwd: Path, env: dict[str, str], on_line: Callable[[str], None]) -> int:
    ours, theirs = socket.socketpair()
    child = _fork_context().Process(
        target=stage_main, args=(argv, str(cwd), env, theirs), name="mobilellm-r1-stage"
    )
    with ours:
        child.start()
        theirs.close()  # the child holds its own copy: EOF below once it exits
        with ours.makefile("r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                on_line(line)
    child.join()
    assert child.exitcode is not None
    return child.exitcode


def stage_main(argv: list[str], cwd: str, env: dict[str, str], out: socket.socket) -> None:
    """The forked stage (a child of the fork server): the orchestrator's environment and
    directory, stdout to `out`, then the CLI's `main(ARGV)` as `mobilellm-r1 ARGV` would run it,
    exit handlers included (multiprocessing ends its children with `os._exit`,
    which skips them)."""
    watch = out.dup()
    threading.Thread(target=_exit_when_closed, args=(watch,), daemon=True).start()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.stdout.flush()
    os.dup2(out.fileno(), 1)
    out.close()
    sys.stdout.reconfigure(line_buffering=True)
    import torch

    if "OMP_NUM_THREADS" in env:  # OpenMP read the server's value when torch was imported
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = ["mobilellm-r1", *argv]
    # the CLI is the layer above this one: run its entry point by name, as `mobilellm-r1 ARGV` would
    main = importlib.import_module("mobilellm_r1.cli").main
    code = 0
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
    sys.exit(code)


def _exit_when_closed(sock: socket.socket) -> None:
    """End this process once the orchestrator's end of `sock` closes (it died or gave up): the
    orchestrator sends nothing, so the socket turns readable only at that EOF. (The fork server
    outlives the orchestrator while any child of it runs, so a parent-death signal would not
    fire.)"""
    select.select([sock], [], [])
    os._exit(1)
