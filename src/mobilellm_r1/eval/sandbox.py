"""Safe execution of untrusted generated Python programs (HumanEval / MBPP / LiveCodeBench style).

Every program runs in its own ``python -I -S`` subprocess, never in the harness process, in a fresh
temporary working directory that is removed afterwards. Protections, by isolation mode
(see :func:`isolation_mode`, probed once per process):

* all modes: ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS`` (address space -> ``MemoryError``),
  ``RLIMIT_FSIZE`` (largest file, also caps captured stdout/stderr), ``RLIMIT_CORE=0``; a new session,
  whose whole process group is SIGKILLed when the wall-clock limit (``timeout_s`` x :func:`calibrate`
  factor + a start-up allowance) passes; stdout/stderr go to files and are truncated when read back.
* ``"root-ns"`` (harness runs as root and ``unshare`` works): the program runs under
  ``unshare --net --pid --mount --fork --kill-child``. New network namespace: no interfaces, so every
  connection (loopback included) fails. New PID namespace: the program is PID 1, so all its descendants
  die with it. New mount namespace: read-only empty tmpfs mounted over /tmp, /var/tmp and /dev/shm.
  The prelude then drops to ``nobody`` (so root-owned files and directories, the repo included, are
  not writable; the working directory is chowned to ``nobody``) and ``RLIMIT_NPROC`` =
  ``1 + max_processes`` applies. Note: RLIMIT_NPROC counts all ``nobody`` processes of the host, so
  parallel sandboxes can make a program's own forks fail earlier (never later) than requested.
* ``"user-ns"`` (not root, unprivileged user namespaces work): as above but with
  ``--user --map-root-user`` and no uid drop, so file-system writes are only limited by the user's own
  permissions (plus the read-only /tmp tmpfs); process creation is guarded by the prelude patch below.
* ``"none"``: no namespaces; the prelude replaces ``socket.socket`` and process-creation functions
  (``os.fork``, ``subprocess.Popen``, ...) with functions raising ``PermissionError``. This Python-level
  guard is best effort only (ctypes can bypass it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "error", "timeout", "killed", "oom"]
OUTPUT_LIMIT = 64 * 1024
STARTUP_ALLOWANCE_S = 1.0
_NS_FLAGS = ["--net", "--pid", "--mount", "--fork", "--kill-child"]
_CALIBRATION_SNIPPET = (
    "import time\nt=time.perf_counter()\nsum(i*i for i in range(3_000_000))\nprint(time.perf_counter()-t)"
)
_CALIBRATION_REFERENCE_S = 0.15

_PRELUDE = r"""
import json, os, sys
cfg = json.loads(sys.argv[1])
sys.argv = ["main.py"]
with open("main.py") as f:
    src = f.read()
def _mount(src, dst, fstype, flags, data):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(src, dst.encode(), fstype, flags, data) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: mount failed: " + dst)
if cfg["mount_tmpfs"]:
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(d):
            _mount(b"tmpfs", d, b"tmpfs", 1, b"size=64k")  # 1 == MS_RDONLY
for hide, keep in cfg["rebind"]:  # hide e.g. /root, re-expose only the interpreter's prefix
    fds = [os.open(k, os.O_PATH) for k in keep]
    _mount(b"tmpfs", hide, b"tmpfs", 0, b"size=64k,mode=0755")
    for k, fd in zip(keep, fds):
        os.makedirs(k, exist_ok=True)
        _mount(("/proc/self/fd/%d" % fd).encode(), k, None, 4096 | 16384, None)  # MS_BIND | MS_REC
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])
def _deny(what):
    def deny(*args, **kwargs):
        raise PermissionError(what + " is disabled in the sandbox")
    return deny
if cfg["patch_socket"]:
    import socket
    socket.socket = _deny("network access")
if cfg["patch_fork"]:
    import subprocess
    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve"):
        if hasattr(os, name):
            setattr(os, name, _deny("process creation"))
    subprocess.Popen = _deny("process creation")
code = compile(src, "main.py", "exec")
del cfg, src, f, _deny, _mount
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed run."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Job:
    """Arguments of one :func:`run_program` call, for :func:`run_many`."""

    source: str
    timeout_s: float
    stdin: str = ""
    memory_mb: int = 1024
    max_processes: int = 0
    max_file_mb: int = 16
    network: bool = False


def _base_cmd() -> list[str]:
    return [sys.executable, "-I", "-S", "-c"]


@functools.cache
def isolation_mode() -> Literal["root-ns", "user-ns", "none"]:
    """Probe once which namespace isolation works on this host."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "none"
    is_root = os.geteuid() == 0
    flags = _NS_FLAGS if is_root else ["--user", "--map-root-user", *_NS_FLAGS]
    try:
        probe = subprocess.run([unshare, *flags, *_base_cmd(), "pass"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    if probe.returncode != 0:
        return "none"
    return "root-ns" if is_root else "user-ns"


@functools.cache
def calibrate() -> float:
    """Host-speed factor: time a fixed CPU-bound snippet in a subprocess, clamped to [1, 10]."""
    try:
        out = subprocess.run([*_base_cmd(), _CALIBRATION_SNIPPET], capture_output=True, text=True, timeout=60)
        measured = float(out.stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 10.0
    return min(10.0, max(1.0, measured / _CALIBRATION_REFERENCE_S))


def _limits(
    timeout_s: float, memory_mb: int, max_processes: int, max_file_mb: int, mode: str
) -> Callable[[], None]:
    """Return the ``preexec_fn`` applying the resource limits (only async-signal-safe-ish calls)."""
    cpu = int(timeout_s * calibrate()) + 1
    mb = 1024 * 1024
    nproc = 1 + max_processes if mode == "root-ns" else None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * mb, memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb * mb, max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc is not None:  # ignored for root; applies once the prelude dropped to ``nobody``
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def _rebind_plan() -> list[tuple[str, list[str]]]:
    """Directories that ``nobody`` cannot traverse (e.g. /root) but that hold the interpreter.

    Each is hidden by an empty tmpfs in the sandbox's mount namespace, and only the interpreter's
    prefixes are bind-mounted back into it, so the dropped program can import the standard library.
    """
    plan: dict[str, list[str]] = {}
    for prefix in {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}:
        parts = prefix.split(os.sep)
        for i in range(2, len(parts)):
            ancestor = os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                plan.setdefault(ancestor, []).append(prefix)
                break
    return sorted(plan.items())


def _command(network: bool, max_processes: int, mode: str) -> tuple[list[str], dict]:
    """Build the command line and the prelude configuration for ``mode``."""
    cfg: dict = {"mount_tmpfs": mode != "none", "uid": None, "gid": None, "rebind": []}
    cfg["patch_socket"] = not network and mode == "none"
    cfg["patch_fork"] = max_processes == 0 and mode != "root-ns"
    prefix: list[str] = []
    if mode != "none":
        flags = [f for f in _NS_FLAGS if not (network and f == "--net")]
        user = ["--user", "--map-root-user"] if mode == "user-ns" else []
        prefix = [shutil.which("unshare") or "unshare", *user, *flags]
    if mode == "root-ns":
        nobody = pwd.getpwnam("nobody")
        cfg["uid"], cfg["gid"] = nobody.pw_uid, nobody.pw_gid
        cfg["rebind"] = _rebind_plan()
    return [*prefix, *_base_cmd(), _PRELUDE, json.dumps(cfg)], cfg


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(OUTPUT_LIMIT + 1)
    text = data[:OUTPUT_LIMIT].decode("utf-8", errors="replace")
    return text + ("\n...[truncated]" if len(data) > OUTPUT_LIMIT else "")


def _status(returncode: int | None, stderr: str, timed_out: bool) -> Status:
    if timed_out or returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode == 0:
        return "ok"
    if "MemoryError" in stderr:
        return "oom"
    return "killed" if returncode is not None and returncode < 0 else "error"


def _prepare_dir(source: str, stdin: str, uid: int | None, gid: int | None) -> tuple[str, str]:
    """Create ``outer`` (harness files, 0711) and ``outer/work`` (program cwd, owned by the sandbox user)."""
    outer = tempfile.mkdtemp(prefix="mllm_sandbox_")
    os.chmod(outer, 0o711)
    work = os.path.join(outer, "work")
    os.mkdir(work, 0o700)
    with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
        f.write(source)
    with open(os.path.join(outer, "stdin"), "w", encoding="utf-8") as f:
        f.write(stdin)
    if uid is not None:
        os.chown(work, uid, gid or -1)
        os.chown(os.path.join(work, "main.py"), uid, gid or -1)
    return outer, work


def run_program(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float,
    memory_mb: int = 1024,
    max_processes: int = 0,
    max_file_mb: int = 16,
    network: bool = False,
) -> ExecResult:
    """Run untrusted ``source`` in an isolated subprocess and report how it ended."""
    mode = isolation_mode()
    cmd, cfg = _command(network, max_processes, mode)
    preexec = _limits(timeout_s, memory_mb, max_processes, max_file_mb, mode)
    wall = timeout_s * calibrate() + STARTUP_ALLOWANCE_S
    outer, work = _prepare_dir(source, stdin, cfg["uid"], cfg["gid"])
    out_path, err_path = os.path.join(outer, "stdout"), os.path.join(outer, "stderr")
    start = time.perf_counter()
    timed_out = False
    try:
        with (
            open(os.path.join(outer, "stdin"), "rb") as fin,
            open(out_path, "wb") as fout,
            open(err_path, "wb") as ferr,
        ):
            proc = subprocess.Popen(
                cmd, stdin=fin, stdout=fout, stderr=ferr, cwd=work, start_new_session=True,
                preexec_fn=preexec, close_fds=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )  # fmt: skip
            try:
                proc.wait(timeout=wall)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        seconds = time.perf_counter() - start
        stderr = _read(err_path)
        code = None if timed_out else proc.returncode
        return ExecResult(_status(code, stderr, timed_out), code, _read(out_path), stderr, seconds)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (it leads its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_many(jobs: list[Job], workers: int = 2) -> list[ExecResult]:
    """Run ``jobs`` in parallel (threads only launch and wait for subprocesses); results keep job order."""
    calibrate(), isolation_mode()  # probe once, before the threads start
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda j: run_program(**vars(j)), jobs))


def check_program(program: str, tests: str, timeout_s: float) -> ExecResult:
    """Run ``program`` followed by ``tests`` (e.g. asserts); ``ok`` means every test passed."""
    return run_program(program + "\n" + tests, timeout_s=timeout_s)


def humaneval_source(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """Compose a HumanEval-style program: prompt + completion, the test code, then ``check(entry_point)``."""
    return prompt + completion + "\n" + test + f"\ncheck({entry_point})\n"
