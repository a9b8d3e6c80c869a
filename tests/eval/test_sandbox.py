"""Tests for the sandboxed execution of untrusted generated programs."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilellm_r1.eval.sandbox import (
    OUTPUT_LIMIT,
    STARTUP_ALLOWANCE_S,
    Job,
    calibrate,
    check_program,
    humaneval_source,
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
    assert (
        run_program(humaneval_source(prompt, "    return a + b\n", test, "add"), timeout_s=5).status == "ok"
    )
    bad = run_program(humaneval_source(prompt, "    return a - b\n", test, "add"), timeout_s=5)
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
