"""Safe execution of untrusted generated Python programs (HumanEval / MBPP / LiveCodeBench style).

Every program runs in its own ``python -I -S`` subprocess, never in the harness process. The prelude
(:data:`_PRELUDE`) forks once: the parent stays behind as a minimal init that only reaps and reports
the program's wait status on a private pipe, the child drops privileges and runs the program.
Protections, by isolation mode (see :func:`isolation_mode`, probed once per process):

* all modes (the prelude sets them on itself first): ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS``
  (address space -> ``MemoryError``), ``RLIMIT_FSIZE`` (largest file, also caps captured
  stdout/stderr), ``RLIMIT_CORE=0``; the wall-clock limit (``timeout_s`` x :func:`calibrate`
  factor + a start-up allowance) ends the run with SIGKILL; stdout/stderr go to files and are
  truncated when read back.
* ``"root-ns"`` (harness runs as root and ``unshare`` works): ``unshare --net --pid --ipc --mount
  --mount-proc --fork --kill-child``. No network interfaces (every connection, loopback included,
  fails); a private IPC namespace; a PID namespace with its own /proc, so the host's processes are
  invisible and, when its init dies (killed by the harness, or by ``--kill-child`` when ``unshare``
  dies), the kernel kills every process in it: ``setsid`` or double forks cannot outlive the run.
  The mount namespace hides every top-level directory except the system ones (:data:`_SYSTEM_DIRS`)
  under empty read-only tmpfs (so /run, /var, /home, /root, the project ...), binding back only the
  interpreter's prefix read-only; /tmp, /dev/shm and /dev/mqueue are empty and read-only; the
  program's working directory is a fresh tmpfs of ``disk_mb`` (the total it can write). The program
  then runs as ``nobody`` with ``RLIMIT_NPROC`` = ``1 + max_processes`` (it counts all ``nobody``
  processes of the host, so parallel sandboxes can make a program's forks fail earlier, never later)
  and a parent-death signal re-armed after the uid drop.
* ``"user-ns"`` (not root, unprivileged user namespaces work): the same, inside ``--user
  --map-root-user`` and without the uid drop; ``RLIMIT_NPROC`` = ``3 + max_processes`` counts the
  processes of the new user namespace (``unshare`` and init included; kernel >= 5.14), and its hard
  limit cannot be raised there, so ``os.fork``, ``posix.fork`` or ctypes cannot exceed it.
* ``"none"``: no namespaces; the prelude replaces ``socket.socket`` and process-creation functions
  (``os.fork``, ``subprocess.Popen``, ...) with functions raising ``PermissionError``. This Python-level
  guard is best effort only (ctypes can bypass it), and the file system is not hidden.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "error", "timeout", "killed", "oom"]
OUTPUT_LIMIT = 64 * 1024
STARTUP_ALLOWANCE_S = 1.0
_NS_FLAGS = ["--net", "--pid", "--ipc", "--mount", "--mount-proc", "--fork", "--kill-child"]
# Top-level directories the sandbox keeps (system programs and libraries, devices, kernel views);
# every other one is hidden. /tmp is replaced by an empty read-only tmpfs holding the working dir.
_SYSTEM_DIRS = frozenset(
    {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys"}
)
_CALIBRATION_SNIPPET = (
    "import time\nt=time.perf_counter()\nsum(i*i for i in range(3_000_000))\nprint(time.perf_counter()-t)"
)
_CALIBRATION_REFERENCE_S = 0.15

_PRELUDE = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
for name, pair in cfg["limits"].items():
    resource.setrlimit(getattr(resource, name), tuple(pair))
sys.argv = ["main.py"]
with open("main.py") as f:
    src = f.read()
def _libc():
    import ctypes
    return ctypes, ctypes.CDLL(None, use_errno=True)
def _mount(src, dst, fstype, flags, data):
    ctypes, libc = _libc()
    if libc.mount(src, dst.encode(), fstype, flags, data) != 0:
        raise OSError(ctypes.get_errno(), "sandbox: mount failed: " + dst)
RO, NOSUID, NODEV, REMOUNT, BIND, REC = 1, 2, 4, 32, 4096, 16384
def _tmpfs(path, opts, ro):
    _mount(b"tmpfs", path, b"tmpfs", NOSUID | NODEV, opts.encode())
    return (lambda: _mount(None, path, None, REMOUNT | RO | NOSUID | NODEV, None)) if ro else None
def _isolate(c):
    keep = [(k, os.open(k, os.O_PATH)) for k in c["keep"]]
    seal = [_tmpfs(d, "size=64k,mode=0755", True) for d in (*c["hide"], "/tmp")]
    for f in c["hide_files"]:
        _mount(b"/dev/null", f, None, BIND, None)
    for k, fd in keep:
        os.makedirs(k, exist_ok=True)
        _mount(("/proc/self/fd/%d" % fd).encode(), k, None, BIND | REC, None)
        _mount(None, k, None, REMOUNT | BIND | RO | NOSUID | NODEV, None)
        os.close(fd)
    os.makedirs(c["work"])
    _tmpfs(c["work"], "size=%dm,mode=0700,uid=%d,gid=%d" % (c["disk_mb"], c["uid"] or 0, c["gid"] or 0), False)
    for d in ("/dev/shm", "/dev/mqueue"):
        if os.path.isdir(d):
            seal.append(_tmpfs(d, "size=4k,mode=0755", True))
    for s in seal:
        s()
    os.chdir(c["work"])
    with open("main.py", "w") as f:
        f.write(src)
    if c["uid"] is not None:
        os.chown("main.py", c["uid"], c["gid"])
if cfg["isolate"]:
    _isolate(cfg)
init = os.getpid()
child = os.fork()
if child:  # init: keep nothing the program talks through, reap, report the program's wait status
    for fd in cfg["channel"]:
        os.close(fd)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            os.write(cfg["status_fd"], b"%d" % status)
            os._exit(0)
os.close(cfg["status_fd"])
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])
if cfg["nproc"] is not None:
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
if cfg["isolate"]:
    _libc()[1].prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL, re-armed after the uid drop cleared it
    if os.getppid() != init:
        os._exit(137)
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
del cfg, src, f, _deny, _mount, _tmpfs, _isolate, _libc, init, child
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
    disk_mb: int = 64
    output_limit: int = OUTPUT_LIMIT


def _base_cmd() -> list[str]:
    return [os.path.realpath(sys.executable), "-I", "-S", "-c"]


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


def _limits(job: Job) -> dict[str, list[int]]:
    """The resource limits the prelude sets on itself first (inherited by the program). Set there
    rather than in a ``preexec_fn``, which would make every start fork the harness process (GBs
    with a model loaded) instead of using vfork."""
    cpu = int(job.timeout_s * calibrate()) + 1
    mb = 1024 * 1024
    return {
        "RLIMIT_CPU": [cpu, cpu + 1],
        "RLIMIT_AS": [job.memory_mb * mb] * 2,
        "RLIMIT_FSIZE": [job.max_file_mb * mb] * 2,
        "RLIMIT_CORE": [0, 0],
    }


@functools.cache
def _mount_plan() -> dict[str, list[str]]:
    """What the prelude hides: top-level directories and files outside :data:`_SYSTEM_DIRS`, and the
    interpreter prefixes inside them that are bound back read-only (the stdlib must stay importable)."""
    hide, hide_files = [], []
    for entry in sorted(os.listdir("/")):
        path = os.path.join("/", entry)
        if entry in _SYSTEM_DIRS or entry == "tmp" or os.path.islink(path):
            continue
        if os.path.isdir(path):
            hide.append(path)
        elif os.path.isfile(path):
            hide_files.append(path)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    keep = sorted(p for p in prefixes if "/" + p.split(os.sep)[1] in hide)
    return {"hide": hide, "hide_files": hide_files, "keep": keep}


def _config(job: Job, mode: str, work: str, status_fd: int, channel: Sequence[int]) -> dict:
    """The prelude's configuration for ``job`` in ``mode``."""
    root = mode == "root-ns"
    nobody = pwd.getpwnam("nobody") if root else None
    nproc = {"root-ns": 1, "user-ns": 3}.get(mode)  # user-ns counts unshare and init too
    return {
        "isolate": mode != "none",
        "uid": nobody.pw_uid if nobody else None,
        "gid": nobody.pw_gid if nobody else None,
        "nproc": None if nproc is None else nproc + job.max_processes,
        "patch_socket": not job.network and mode == "none",
        "patch_fork": job.max_processes == 0 and mode == "none",
        "work": work,
        "disk_mb": job.disk_mb,
        "status_fd": status_fd,
        "channel": list(channel),
        "limits": _limits(job),
        **(_mount_plan() if mode != "none" else {}),
    }


def _command(job: Job, mode: str, cfg: dict) -> list[str]:
    prefix: list[str] = []
    if mode != "none":
        flags = [f for f in _NS_FLAGS if not (job.network and f == "--net")]
        user = ["--user", "--map-root-user"] if mode == "user-ns" else []
        prefix = [shutil.which("unshare") or "unshare", *user, *flags]
    return [*prefix, *_base_cmd(), _PRELUDE, json.dumps(cfg)]


def _read(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n...[truncated]" if len(data) > limit else "")


def _status(returncode: int | None, stderr: str, timed_out: bool) -> Status:
    if timed_out or returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode is None:  # init died before reporting: killed from outside
        return "killed"
    if returncode == 0:
        return "ok"
    if "MemoryError" in stderr:
        return "oom"
    return "killed" if returncode < 0 else "error"


def _prepare_dir(source: str, stdin: str) -> str:
    """Create the harness's folder (0711): the program file, its stdin, and later its stdout/stderr.

    The program's own working directory is a tmpfs at ``/tmp/<folder name>`` inside its mount namespace
    (in ``"none"`` mode: ``<folder>/work``, owned by the harness user).
    """
    outer = tempfile.mkdtemp(prefix="mllm_sandbox_")
    os.chmod(outer, 0o711)
    work = os.path.join(outer, "work")
    os.mkdir(work, 0o755)
    for name, text in (("work/main.py", source), ("stdin", stdin)):
        with open(os.path.join(outer, name), "w", encoding="utf-8") as f:
            f.write(text)
    return outer


@dataclass
class Running:
    """A started sandbox (see :func:`start`); :func:`finish` waits for it and reads its result."""

    proc: subprocess.Popen
    outer: str
    status_r: int
    start: float
    wall_s: float
    output_limit: int


def start(job: Job, channel: Sequence[int] = ()) -> Running:
    """Start ``job`` in a sandbox; ``channel`` fds (e.g. pipe ends) stay open in the program."""
    mode = isolation_mode()
    outer = _prepare_dir(job.source, job.stdin)
    status_r, status_w = os.pipe()
    work = os.path.join("/tmp", os.path.basename(outer)) if mode != "none" else os.path.join(outer, "work")
    cfg = _config(job, mode, work, status_w, channel)
    try:
        with (
            open(os.path.join(outer, "stdin"), "rb") as fin,
            open(os.path.join(outer, "stdout"), "wb") as fout,
            open(os.path.join(outer, "stderr"), "wb") as ferr,
        ):
            proc = subprocess.Popen(
                _command(job, mode, cfg), stdin=fin, stdout=fout, stderr=ferr, cwd=os.path.join(outer, "work"),
                start_new_session=True,
                close_fds=True, pass_fds=(status_w, *channel), env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )  # fmt: skip
    except BaseException:
        os.close(status_r)
        shutil.rmtree(outer, ignore_errors=True)
        raise
    finally:
        os.close(status_w)
    wall = job.timeout_s * calibrate() + STARTUP_ALLOWANCE_S
    return Running(proc, outer, status_r, time.perf_counter(), wall, job.output_limit)


def _program_status(fd: int) -> int | None:
    """The program's exit code (negative: killed by that signal) as init reported it, or None."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        data = b""
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(int(data)) if data.strip().isdigit() else None


def finish(run: Running, *, wait: bool = True) -> ExecResult:
    """Wait for ``run`` until its wall-clock limit (or not at all), kill what is left, return its result."""
    timed_out = False
    try:
        try:
            run.proc.wait(timeout=max(0.0, run.start + run.wall_s - time.perf_counter()) if wait else 0)
        except subprocess.TimeoutExpired:
            timed_out = wait
        finally:
            _kill(run.proc)
        seconds = time.perf_counter() - run.start
        code = _program_status(run.status_r)
        stderr = _read(os.path.join(run.outer, "stderr"), OUTPUT_LIMIT)
        stdout = _read(os.path.join(run.outer, "stdout"), run.output_limit)
        code = None if timed_out else code
        return ExecResult(_status(code, stderr, timed_out), code, stdout, stderr, seconds)
    finally:
        shutil.rmtree(run.outer, ignore_errors=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's init (the kernel then kills its whole PID namespace) and ``unshare``'s
    process group, and reap ``unshare``."""
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    with contextlib.suppress(OSError, ValueError), open(children) as f:
        for pid in f.read().split():
            os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_program(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float,
    memory_mb: int = 1024,
    max_processes: int = 0,
    max_file_mb: int = 16,
    network: bool = False,
    disk_mb: int = 64,
    output_limit: int = OUTPUT_LIMIT,
) -> ExecResult:
    """Run untrusted ``source`` in an isolated subprocess and report how it ended."""
    job = Job(source, timeout_s, stdin, memory_mb, max_processes, max_file_mb, network, disk_mb, output_limit)
    return finish(start(job))


def run_many(jobs: list[Job], workers: int = 2) -> list[ExecResult]:
    """Run ``jobs`` in parallel (threads only launch and wait for subprocesses); results keep job order."""
    return parallel(lambda j: run_program(**vars(j)), jobs, workers)


def parallel(fn: Callable, items: list, workers: int) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads (each launches and waits for sandboxes)."""
    calibrate(), isolation_mode()  # probe once, before the threads start
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(fn, items))
