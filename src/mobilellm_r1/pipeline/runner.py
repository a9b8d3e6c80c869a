"""Run a plan: each stage is its own `mobilellm-r1` process, started in the run directory
(forked from a fork server that imported torch once, `launch.py`).

A child process gets the stage's command line; its stdout goes to `RUN/.stages/NAME.log` (the
last JSON document in it is the stage's report) and, up to that report, to the terminal; its
stderr (progress bars) goes straight to the terminal. The child dies with the orchestrator, so a
killed run leaves no stage running. Before a stage starts, its marker says `running` under its
key (and, every HEARTBEAT_S while it runs, the time spent so far); after it exits 0, `done` with
its wall time (a resumed stage's includes its killed attempts) and report. Under torchrun (WORLD_SIZE > 1) every rank runs
this loop: `ranks: all` stages (training, influence) start on every rank, the others on rank 0
while the other ranks wait for its marker (the run directory must be on a shared filesystem).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from .config import PipelineConfig
from .launch import run_stage
from .markers import Marker, last_json, log_path, read_marker, write_marker
from .plan import StagePlan

# Commands that continue their own partial output: a resumed stage passes these flags. Every
# other command starts over after a kill (its old outputs are deleted first).
RESUME_FLAGS: dict[tuple[str, ...], list[str]] = {
    ("train",): ["--resume"],
    ("data", "tokenize"): [],
    ("curate", "coevolve"): [],
}
WAIT_POLL_S = 2.0
# How often a running stage's marker records its elapsed time, so that a killed attempt's time
# counts in the stage's wall time when it resumes (seconds; the environment variable is for tests).
HEARTBEAT_S = float(os.environ.get("MOBILELLM_R1_HEARTBEAT_S", "30"))


class StageFailed(RuntimeError):
    """A stage's command exited non-zero (the message names the stage, code and log)."""


def command_of(argv: list[str]) -> tuple[str, ...]:
    """The (sub)command words of a stage's command line: ('train',), ('curate', 'mix'), ..."""
    words = []
    for word in argv:
        if word.startswith("-"):
            break
        words.append(word)
    return tuple(words[:2])


def resume_flags(argv: list[str]) -> list[str] | None:
    """Flags that make the command continue its partial output, or None when it cannot."""
    return RESUME_FLAGS.get(command_of(argv))


def rank_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment ((0, 1) outside torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def format_s(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    seconds = round(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


SIGNAL_HINTS = {
    signal.SIGKILL: " (the system's out-of-memory killer sends this: see `dmesg`)",
    signal.SIGILL: (
        " (an instruction this CPU does not run: a native library built for another CPU, e.g."
        " llama.cpp built with -march=native elsewhere or with AMX that this VM withholds; reinstall"
        ' it portably: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir'
        " llama-cpp-python)"
    ),
}


def exit_reason(code: int) -> str:
    """A stage's exit code in words (negative: the signal that killed it)."""
    if code >= 0:
        return f"exit {code}"
    name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
    return f"killed by {name}{SIGNAL_HINTS.get(-code, '')}"


class Runner:
    """Executes a plan in order (module docstring); `log` gets the orchestrator's own lines."""

    def __init__(self, cfg: PipelineConfig, root: Path, log: TextIO | None = None) -> None:
        self.cfg, self.root, self.log = cfg, root, log or sys.stderr
        self.run_dir = root / cfg.run_dir
        self.rank = rank_info()[0]
        self.device = _device()  # asked once: every stage of a run runs on this machine

    def execute(self, plan: list[StagePlan]) -> None:
        """Run every stage that the plan does not skip; StageFailed stops at the first failure."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        begun = time.time()
        todo = [p for p in plan if p.will_run]
        for index, item in enumerate(plan, 1):
            if not item.will_run:
                why = "not selected (--only)" if item.action == "unselected" else "up to date, skipped"
                self._say(f"[{index}/{len(plan)}] {item.stage.name}: {why}")
                continue
            left = sum(self._estimate(p) or 0.0 for p in todo[todo.index(item) :])
            estimate = self._estimate(item)
            self._say(
                f"[{index}/{len(plan)}] {item.stage.name} ({item.action}): {item.stage.heading}  "
                f"| {format_s(time.time() - begun)} elapsed"
                + (f" | stage ~{format_s(estimate)}, run ~{format_s(left)} left" if estimate else "")
            )
            self._say(f"    $ mobilellm-r1 {' '.join(item.argv)}")
            self._run_stage(item)

    def _estimate(self, item: StagePlan) -> float | None:
        if item.marker is not None and item.marker.state == "done" and item.marker.wall_s:
            return item.marker.wall_s
        return item.stage.expected_s

    def _run_stage(self, item: StagePlan) -> None:
        argv = list(item.argv)
        attempts, earlier = 1, 0.0  # earlier: seconds of the attempts this one continues
        if item.action == "resume" and (flags := resume_flags(argv)) is not None:
            argv += flags
            attempts = (item.marker.attempts if item.marker else 0) + 1
            earlier = (item.marker.wall_s if item.marker else None) or 0.0
        else:
            self._clean(item)
        runs_here = item.stage.ranks == "all" or self.rank == 0
        start = time.time()
        marker = Marker(item.key, "running", argv, started=start, wall_s=earlier, attempts=attempts)

        def spent() -> float:  # this attempt's seconds plus those it continues
            return earlier + time.time() - start

        if self.rank == 0:
            write_marker(self.run_dir, item.stage.name, marker)
        if not runs_here:
            self._wait_for(item)
            return
        with self._heartbeat(item.stage.name, marker, spent):
            code, out = self._spawn(argv, item.stage.name)
        if code != 0:
            log = log_path(self.run_dir, item.stage.name)
            if self.rank == 0:
                write_marker(self.run_dir, item.stage.name, replace(marker, state="failed", wall_s=spent()))
            raise StageFailed(
                f"stage {item.stage.name!r} failed ({exit_reason(code)}): its error is above (stderr), "
                f"its output in {log}. Fix the cause and run the same command again: finished stages "
                f"are kept"
            )
        if self.rank == 0:
            done = replace(marker, state="done", wall_s=spent(), device=self.device, result=last_json(out))
            write_marker(self.run_dir, item.stage.name, done)
        else:
            self._wait_for(item)

    @contextlib.contextmanager
    def _heartbeat(self, name: str, marker: Marker, spent: Callable[[], float]) -> Iterator[None]:
        """While the stage runs, rewrite its `running` marker every HEARTBEAT_S with `spent()`, the
        time so far (earlier attempts included): a killed run leaves that in the marker, and the
        resumed attempt adds to it, so the stage's wall time counts every attempt (to HEARTBEAT_S)."""
        if self.rank != 0:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                write_marker(self.run_dir, name, replace(marker, wall_s=spent()))

        thread = threading.Thread(target=beat, name=f"heartbeat-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _clean(self, item: StagePlan) -> None:
        """Delete the stage's old outputs (they belong to other settings or to a killed attempt)."""
        if self.rank != 0:
            return
        for out in item.stage.outputs:
            path = self.run_dir / out
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    def _spawn(self, argv: list[str], name: str) -> tuple[int, str]:
        """Run `mobilellm-r1 ARGV` in the run directory (`launch.run_stage`); (exit code, stdout)."""
        log_file = log_path(self.run_dir, name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        chunks: list[str] = []
        in_report = False
        with open(log_file, "a") as log:

            def on_line(line: str) -> None:
                nonlocal in_report
                chunks.append(line)
                log.write(line)
                in_report = in_report or line.startswith("{")  # the JSON report: kept in the log
                if self.rank == 0 and not in_report:
                    self.log.write("    " + line)

            code = run_stage(argv, self.run_dir, on_line)
        return code, "".join(chunks)

    def _wait_for(self, item: StagePlan) -> None:
        """Block until rank 0 marks the stage done under this key (ranks other than 0)."""
        while True:
            marker = read_marker(self.run_dir, item.stage.name)
            if marker is not None and marker.key == item.key and marker.state == "done":
                return
            if marker is not None and marker.key == item.key and marker.state == "failed":
                raise StageFailed(f"stage {item.stage.name!r} failed on rank 0")
            time.sleep(WAIT_POLL_S)

    def _say(self, line: str) -> None:
        if self.rank == 0:
            print(line, file=self.log, flush=True)


def _device() -> str:
    """The machine a stage ran on, in words: the GPUs `nvidia-smi` lists, else the CPU cores.
    (Asked without torch, so the orchestrator holds no CUDA context.)"""
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split("\n")
        gpus = [n.strip() for n in names if n.strip()]
        if gpus:
            return f"{len(gpus)}x {gpus[0]}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"CPU, {os.cpu_count()} cores"
