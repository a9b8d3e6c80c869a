"""Process lifetime: a worker process that ends when the process that started it dies.

Call :func:`die_with_parent` first thing in a pool worker (e.g. a ``ProcessPoolExecutor``
initializer) with the parent's pid, so a SIGKILLed parent leaves no orphans blocked on its
queues.  On Linux the kernel delivers SIGKILL on the parent's death (``PR_SET_PDEATHSIG``; it
follows the thread that started the worker, which a pool's owner keeps alive while it runs);
elsewhere a daemon thread polls the parent pid.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 0.5


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` dies (at once if it already has)."""
    if sys.platform.startswith("linux"):
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # died before the signal was armed
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)
