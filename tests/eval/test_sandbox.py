"""Tests for the sandboxed execution of untrusted generated programs."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilellm_r1.eval.code_check import CodeCheck, check_program, run_check
from mobilellm_r1.eval.sandbox import (
    OUTPUT_LIMIT,
    STARTUP_ALLOWANCE_S,
    Job,
    calibrate,
    isolation_mode,
    run_many,
    run_program,
)

FORK_BOMB = "import os\nwhile True: os.fork()\n"
BIG_ALLOC = "b = bytearray(10 * 1024**3)\n"
needs_ns = pytest.mark.skipif(isolation_mode() == "none", reason="no namespace isolation on this host")


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port that IS listening in the parent, so a refusal cannot be a merely closed port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server.getsockname()[1]
    server.close()


def test_calibrate_factor_in_range() -> None:
    assert 1.0 <= calibrate() <= 10.0


def test_correct_program_reads_stdin() -> None:
    res = run_program("x = input()\nprint(x[::-1])\n", stdin="abc\n", timeout_s=5)
    assert res.status == "ok" and res.returncode == 0
    assert res.stdout == "cba\n"


def test_assertion_failure_reports_traceback() -> None:
    res = run_program("def f(x):\n    return x + 1\nassert f(1) == 3\n", timeout_s=5)
    assert res.status == "error" and res.returncode == 1
    assert "Traceback" in res.stderr and "AssertionError" in res.stderr and "main.py" in res.stderr


def test_infinite_loop_times_out_promptly() -> None:
    res = run_program("while True:\n    pass\n", timeout_s=1)
    assert res.status == "timeout"
    assert res.seconds <= 1 * calibrate() + STARTUP_ALLOWANCE_S + 1.0


def test_fork_bomb_is_contained() -> None:
    res = run_program(FORK_BOMB, timeout_s=2)
    assert res.status in {"error", "killed", "timeout"}
    assert res.seconds < 2 * calibrate() + STARTUP_ALLOWANCE_S + 2.0
    assert run_program("print('alive')", timeout_s=5).stdout == "alive\n"


def test_huge_allocation_is_oom() -> None:
    res = run_program(BIG_ALLOC, timeout_s=5)
    assert res.status == "oom" and "MemoryError" in res.stderr


@pytest.mark.parametrize("target", ["('127.0.0.1', {port})", "('1.1.1.1', 53)"])
def test_network_is_disabled(listening_port: int, target: str) -> None:
    addr = target.format(port=listening_port)
    res = run_program(f"import socket\nsocket.create_connection({addr}, timeout=3)\n", timeout_s=5)
    assert res.status == "error"
    # A disabled network, not a closed port: the parent's listening port must not even be reachable.
    assert "ConnectionRefusedError" not in res.stderr
    assert any(s in res.stderr for s in ("Network is unreachable", "network access is disabled"))


def test_network_can_be_enabled(listening_port: int) -> None:
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {listening_port}), timeout=3).close()\n"
    assert run_program(code, timeout_s=5, network=True).status == "ok"


@needs_ns
@pytest.mark.parametrize("where", ["tmp_path", "tmp"])
def test_write_outside_cwd_is_refused(tmp_path: Path, where: str) -> None:
    outside = tmp_path / "victim" if where == "tmp_path" else Path(f"/tmp/escape_{uuid.uuid4().hex}")
    if where == "tmp_path":
        outside.mkdir()
    target = outside / "pwned.txt" if where == "tmp_path" else outside
    res = run_program(f"open({str(target)!r}, 'w').write('x')\n", timeout_s=5)
    assert res.status == "error"
    assert any(s in res.stderr for s in ("PermissionError", "Read-only file system", "FileNotFoundError"))
    assert not target.exists()


def test_write_to_cwd_works_and_is_removed() -> None:
    code = "import os\nopen('out.txt', 'w').write('hi')\nprint(open('out.txt').read(), os.getcwd())\n"
    res = run_program(code, timeout_s=5)
    assert res.status == "ok" and res.stdout.startswith("hi ")
    assert not Path(res.stdout.split()[1]).exists()


def test_output_is_truncated() -> None:
    res = run_program(f"print('x' * {OUTPUT_LIMIT * 4})\n", timeout_s=5)
    assert res.status == "ok" and len(res.stdout) < OUTPUT_LIMIT + 100 and res.stdout.endswith("[truncated]")


def test_humaneval_composition() -> None:
    prompt = "def add(a, b):\n    '''Add two numbers.'''\n"
    test = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    assert run_check(CodeCheck(prompt + "    return a + b\n", test, "add", prelude=prompt), 5).status == "ok"
    bad = run_check(CodeCheck(prompt + "    return a - b\n", test, "add", prelude=prompt), 5)
    assert bad.status == "error" and "AssertionError" in bad.stderr


def test_check_program() -> None:
    assert check_program("def sq(x):\n    return x * x", "assert sq(3) == 9", timeout_s=5).status == "ok"
    assert check_program("def sq(x):\n    return x + x", "assert sq(3) == 9", timeout_s=5).status == "error"


def test_run_many_keeps_going_and_order(listening_port: int) -> None:
    jobs = [
        Job("print(input())", timeout_s=5, stdin="first"),
        Job("while True:\n    pass\n", timeout_s=1),
        Job(FORK_BOMB, timeout_s=2),
        Job(BIG_ALLOC, timeout_s=5),
        Job(
            f"import socket\nsocket.create_connection(('127.0.0.1', {listening_port}), timeout=3)\n",
            timeout_s=5,
        ),
        Job("assert False\n", timeout_s=5),
        Job("print('last')", timeout_s=5),
    ]
    res = run_many(jobs, workers=3)
    assert [r.status for r in res][:2] == ["ok", "timeout"]
    assert res[2].status in {"error", "killed", "timeout"}
    assert [r.status for r in res][3:] == ["oom", "error", "error", "ok"]
    assert res[0].stdout == "first\n" and res[-1].stdout == "last\n"


def test_python_level_fallback_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without namespaces, the prelude still denies sockets and process creation (best effort)."""
    from mobilellm_r1.eval import sandbox

    monkeypatch.setattr(sandbox, "isolation_mode", lambda: "none")
    net = sandbox.run_program(
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\n", timeout_s=5
    )
    assert net.status == "error" and "network access is disabled" in net.stderr
    fork = sandbox.run_program(FORK_BOMB, timeout_s=5)
    assert fork.status == "error" and "process creation is disabled" in fork.stderr
    assert sandbox.run_program("print(input())", stdin="hi", timeout_s=5).stdout == "hi\n"


# ---------------------------------------------------------------- leaks closed (issue 17, finding 4)


def _host_comms() -> set[str]:
    comms = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            comms.add(Path(f"/proc/{pid}/comm").read_text().strip())
    return comms


@needs_ns
@pytest.mark.parametrize("double_fork", [False, True])
def test_setsid_cannot_outlive_the_timeout(double_fork: bool) -> None:
    """A process that leaves the session (setsid, or a double fork) dies with the sandbox's init."""
    name = "esc" + uuid.uuid4().hex[:10]
    fork = "if os.fork():\n    time.sleep(60)\n" if double_fork else ""
    code = (
        f"import ctypes, os, time\n{fork}os.setsid()\n"
        f"ctypes.CDLL(None).prctl(15, {name.encode()!r})\n"  # PR_SET_NAME: visible in the host's /proc
        "print('escaped', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    )
    res = run_program(code, timeout_s=1, max_processes=2)
    assert res.status == "timeout" and "escaped" in res.stdout
    deadline = time.monotonic() + 2
    while name in _host_comms() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in _host_comms()


@needs_ns
def test_run_lock_and_var_are_not_writable() -> None:
    marker = f"mllm_{uuid.uuid4().hex}"
    code = (
        "import os\nfor d in ('/run/lock', '/var/tmp', '/var/lock', '/dev/shm', '/tmp'):\n"
        "    try:\n"
        f"        open(os.path.join(d, {marker!r}), 'w').write('x')\n"
        "        print('wrote', d)\n"
        "    except OSError as e:\n"
        "        print('refused', d, type(e).__name__)\n"
    )
    res = run_program(code, timeout_s=5)
    assert res.status == "ok" and "wrote" not in res.stdout and res.stdout.count("refused") == 5
    assert not any(
        Path(d, marker).exists() for d in ("/run/lock", "/var/tmp", "/var/lock", "/dev/shm", "/tmp")
    )


@needs_ns
def test_host_unix_sockets_are_unreachable(tmp_path: Path) -> None:
    run_dir = Path("/run") / f"mllm_{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(mode=0o777)
    path = run_dir / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        server.listen(1)
        os.chmod(run_dir, 0o777)
        os.chmod(path, 0o777)  # anyone on the host may connect
        code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\nprint('connected')\n"
        res = run_program(code, timeout_s=5)
    finally:
        server.close()
        shutil.rmtree(run_dir)
    assert res.status == "error" and "connected" not in res.stdout and "FileNotFoundError" in res.stderr


@needs_ns
def test_total_disk_use_is_capped() -> None:
    """Many files each under the per-file cap still stop at the working directory's quota."""
    code = (
        "import os\ntotal = 0\ntry:\n    for i in range(40):\n"
        "        with open('f%d' % i, 'wb') as f:\n            f.write(b'x' * (8 << 20))\n"
        "        total += 8 << 20\nexcept OSError as e:\n    print(total >> 20, e.strerror)\n"
    )
    res = run_program(code, timeout_s=10, max_file_mb=16, disk_mb=32, memory_mb=512)
    assert res.status == "ok", res.stderr
    written, reason = res.stdout.split(" ", 1)
    assert int(written) <= 32 and reason.strip() == "No space left on device"


@needs_ns
def test_host_processes_are_invisible() -> None:
    code = "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
    res = run_program(code, timeout_s=5)
    assert res.status == "ok" and res.stdout.strip() == "[1, 2]"  # the sandbox's init and the program


@needs_ns
def test_project_and_home_are_hidden() -> None:
    project = Path(__file__).resolve().parents[2]
    paths = [project / "pyproject.toml", Path(__file__).resolve(), Path.home(), Path("/work")]
    code = (
        "import os\n"
        f"for p in {[str(p) for p in paths]!r}:\n"
        "    print(os.path.exists(p) and (not os.path.isdir(p) or bool(os.listdir(p))))\n"
    )
    res = run_program(code, timeout_s=5)
    assert all(p.exists() for p in paths)
    assert res.status == "ok"
    home_visible = res.stdout.split()[2] == "True"  # the interpreter's prefix may be bound back below home
    assert res.stdout.split()[:2] == ["False", "False"] and res.stdout.split()[3] == "False"
    assert not home_visible or str(Path(sys.base_prefix).resolve()).startswith(str(Path.home()))


FORK_COUNT = (  # children stay alive, so each fork adds a process
    "import posix, time\nn = 0\nfor _ in range(5):\n    try:\n        pid = posix.fork()\n    except OSError:\n"
    "        break\n    if pid == 0:\n        time.sleep(30)\n        posix._exit(0)\n    n += 1\nprint(n)\n"
)
needs_root_and_system_python = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists() or shutil.which("setpriv") is None,
    reason="running the harness as an unprivileged user needs root, setpriv and a system python",
)


@needs_root_and_system_python
def test_user_ns_mode_limits_posix_fork() -> None:
    """As an unprivileged harness (user-ns mode), ``posix.fork`` is held to ``max_processes`` too."""
    src = Path(__file__).resolve().parents[2] / "src"
    driver = (
        "from mobilellm_r1.eval.sandbox import isolation_mode, run_program\n"
        f"code = {FORK_COUNT!r}\n"
        "print(isolation_mode(), [run_program(code, timeout_s=5, max_processes=k).stdout.strip() for k in (0, 2)])\n"
    )
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c", driver]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, cwd="/tmp", env={"PYTHONPATH": str(src)}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1) == ["user-ns", "['0', '2']\n"]
