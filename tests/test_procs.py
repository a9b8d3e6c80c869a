"""mobilellm_r1.procs: a worker ends when its parent is SIGKILLed (Linux signal and the polling fallback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD = """
import os, sys, time
sys.platform = {platform!r}  # the branch under test
from mobilellm_r1.procs import die_with_parent
die_with_parent(os.getppid())
print("armed", flush=True)
time.sleep(60)
"""
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline() == "armed\\n"
print(child.pid, flush=True)
child.stdout.close()
child.wait()
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_child_dies_with_its_killed_parent(platform: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child_code = textwrap.dedent(CHILD.format(platform=platform))
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT), child_code],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(child):  # clean up before failing
        os.kill(child, signal.SIGKILL)
        pytest.fail(f"the child ({platform} branch) outlived its SIGKILLed parent by 10 s")
