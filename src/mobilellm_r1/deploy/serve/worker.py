"""The engine's thread: the continuous-batching engine is synchronous, the server is asyncio.

`EngineWorker` owns the engine and runs its steps on one thread. Requests come in through a
thread-safe inbox (`submit`, `abort`); each step's `TokenEvent`s go to the asyncio queue of
their request (through the event loop's `call_soon_threadsafe`). A request is forgotten once
all its samples have finished; an aborted one (e.g. its client disconnected) frees its blocks
at the engine's next step. If a step raises, every request in flight gets a `WorkerError`
(the server answers 500 for those) and the engine is rebuilt empty.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.05


@dataclass
class WorkerError:
    """Delivered instead of a TokenEvent when the request failed inside the engine."""

    message: str
    status: int = 500


@dataclass
class _Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    samples: int
    finished: set[int] = field(default_factory=set)


class EngineWorker:
    """Runs `engine.step()` on a thread while there is work (see module docstring).

    `make_engine()` builds the engine (again after a failed step)."""

    def __init__(
        self, make_engine: Callable[[], Any], on_events: Callable[[list], None] | None = None
    ) -> None:
        self._make_engine = make_engine
        self.engine = make_engine()
        self._on_events = on_events
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._subs: dict[str, _Subscription] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    # ------------------------------------------------------------------ asyncio side
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def submit(self, request: Any) -> asyncio.Queue:
        """Queue `request` (an EngineRequest); its events arrive on the returned queue."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        self._inbox.put(("add", request, _Subscription(loop, events, request.params.n)))
        self._wake.set()
        return events

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id, None))
        self._wake.set()

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain_inbox()
            if not self.engine.has_work():
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            try:
                events = self.engine.step()
            except Exception as err:  # a failed step: fail what is in flight, start clean
                log.exception("engine step failed")
                self._fail_all(f"engine step failed: {type(err).__name__}: {err}")
                continue
            if self._on_events is not None:
                self._on_events(events)
            for event in events:
                self._deliver(event)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, item, sub = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "abort":
                if self._subs.pop(item, None) is not None:
                    self.engine.abort(item)
                continue
            try:
                self.engine.add(item)
            except ValueError as err:  # the server validates first; this is the engine's own check
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, WorkerError(str(err), 400))
                continue
            self._subs[item.id] = sub

    def _deliver(self, event: Any) -> None:
        sub = self._subs.get(event.request_id)
        if sub is None:  # aborted while the step ran
            return
        sub.loop.call_soon_threadsafe(sub.queue.put_nowait, event)
        if event.finish_reason is not None:
            sub.finished.add(event.sample_index)
            if len(sub.finished) == sub.samples:
                del self._subs[event.request_id]

    def _fail_all(self, message: str) -> None:
        for sub in self._subs.values():
            sub.loop.call_soon_threadsafe(sub.queue.put_nowait, WorkerError(message))
        self._subs.clear()
        self.engine = self._make_engine()
