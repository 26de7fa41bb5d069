"""Plugin code run with a time limit, on pooled daemon worker threads.

Python cannot kill a thread, so a call that overruns its limit is abandoned: the caller gets
control back on time and the worker runs on alone. Starting a thread per call costs more than
handing the call to an idle worker, so workers are pooled; an abandoned one never returns to it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")

_log = logging.getLogger("helixhooks.bounded")


class BoundedCall(Generic[T]):
    """``fn`` started at once in a daemon worker thread, for a caller that waits with a time limit.

    Python cannot kill a thread, so a call that overruns is abandoned, not stopped: it runs on,
    and whatever it returns or raises later is logged and dropped, never applied. Its worker is
    never reused. Killing a hung plugin for real is the process tier's job.
    """

    def __init__(self, fn: Callable[[], T], *, plugin: str, phase: str) -> None:
        self.plugin = plugin
        self.phase = phase
        self.value: T | None = None
        self.error: BaseException | None = None
        self.duration = 0.0
        self._fn = fn
        # Held until the call finishes: acquiring a held lock with a timeout is the cheapest
        # wait there is (an Event builds a Condition and a lock per wait).
        self._latch = threading.Lock()
        self._latch.acquire()
        self._done = False
        self._lock = threading.Lock()
        self._abandoned = False
        self._ident: int | None = None
        self._created = time.perf_counter()
        _WORKERS.run(self)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def thread_name(self) -> str:
        """What its worker thread is called while it runs this call."""
        return f"helixhooks-{self.phase}-{self.plugin}"

    def elapsed(self) -> float:
        return time.perf_counter() - self._created

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; False means the call overran and is now abandoned."""
        if self._latch.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX)):
            self._latch.release()
            return True
        with self._lock:
            # It may have finished between the wait expiring and taking the lock: then it counts.
            if self._done:
                return True
            self._abandoned = True
            if self._ident is not None:
                _ABANDONED.add(self._ident)
        return False

    def _run(self, worker: _Worker) -> bool:
        """Run the call; True if ``worker`` went back to its pool (the call was not abandoned)."""
        began = time.perf_counter()
        with self._lock:
            self._ident = threading.get_ident()
            if self._abandoned:
                _ABANDONED.add(self._ident)
        try:
            self.value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - plugin code may raise anything; the waiter gets it
            self.error = exc
        self.duration = time.perf_counter() - began
        with self._lock:
            abandoned = self._abandoned
            # Back in the pool before the waiter wakes, so that its next call finds this worker.
            kept = not abandoned and worker.rejoin()
            self._done = True
            self._latch.release()
            _ABANDONED.discard(self._ident)
        if abandoned:
            outcome = f"raised {self.error!r}" if self.error is not None else "finished"
            _log.warning(
                "plugin %r: %s %s after %.3fs, past its time limit; the outcome is discarded",
                self.plugin,
                self.phase,
                outcome,
                self.duration,
            )
        return kept


class Job(Protocol):
    """What a pooled worker runs: a BoundedCall, or a lifecycle operation's runner."""

    @property
    def thread_name(self) -> str: ...

    def _run(self, worker: _Worker) -> bool:
        """Run; True if ``worker`` went back to its pool (the job was not abandoned)."""


class _Worker:
    """A daemon thread that runs jobs one after another while its pool keeps it."""

    def __init__(self, pool: _Workers, first: Job) -> None:
        self._pool = pool
        self._inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        # Through the inbox, not the thread's args, which hold their objects until it ends.
        self._inbox.put(first)
        self._thread = threading.Thread(target=self._serve, name=first.thread_name, daemon=True)
        self._thread.start()

    def give(self, call: Job) -> None:
        self._thread.name = call.thread_name
        self._inbox.put(call)

    def rejoin(self) -> bool:
        """Offer this worker back to its pool; False if the pool is full (the worker ends)."""
        # Renamed first: once in the pool, the worker may be handed its next call at any moment.
        self._thread.name = _IDLE_NAME
        return self._pool.keep_idle(self)

    def _serve(self) -> None:
        call: Job | None = self._inbox.get()
        while call is not None:
            kept = call._run(self)
            # Dropped before waiting: an idle worker must not keep a call's plugin objects alive.
            call = None
            if kept:
                call = self._next_call()

    def _next_call(self) -> Job | None:
        """The next call handed over, or None once idle for too long (the worker then ends)."""
        try:
            return self._inbox.get(timeout=self._pool.idle_timeout)
        except queue.Empty:
            if self._pool.release_idle(self):
                return None
            # A call was handed over as the wait ran out: it is on its way.
            return self._inbox.get()


class _Workers:
    """A pool of idle workers: handing a call to a waiting thread is cheaper than starting one.

    At most ``keep`` idle workers are kept, each for up to ``idle_timeout`` seconds; more calls
    at once start more threads, which end when they find the pool full. A worker whose call was
    abandoned is never taken back.
    """

    def __init__(self, keep: int, idle_timeout: float) -> None:
        self.keep = keep
        self.idle_timeout = idle_timeout
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def run(self, call: Job) -> None:
        """Start ``call`` on an idle worker, or on a new one."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            _Worker(self, call)
        else:
            worker.give(call)

    def keep_idle(self, worker: _Worker) -> bool:
        with self._lock:
            if len(self._idle) >= self.keep:
                return False
            self._idle.append(worker)
            return True

    def release_idle(self, worker: _Worker) -> bool:
        """Take an idle worker out for good; False if a call was handed to it meanwhile."""
        with self._lock:
            if worker not in self._idle:
                return False
            self._idle.remove(worker)
            return True

    def forget_idle(self) -> None:
        # In a forked child the idle workers' threads do not exist.
        self._idle.clear()
        self._lock = threading.Lock()


def run_job(job: Job) -> None:
    """Start ``job`` on a pooled worker."""
    _WORKERS.run(job)


def abandon_thread(ident: int) -> None:
    """Count ``ident`` as running abandoned work until ``release_thread``."""
    _ABANDONED.add(ident)


def release_thread(ident: int) -> None:
    _ABANDONED.discard(ident)


def abandoned_threads() -> frozenset[int]:
    """Idents of the threads running a call whose caller stopped waiting for it.

    Draining a plugin's calls does not wait for these: their outcome is discarded anyway.
    """
    return frozenset(_ABANDONED)


_ABANDONED: set[int] = set()
_IDLE_NAME = "helixhooks-worker-idle"
# Lifecycle calls come one at a time and a health round one per plugin; idle workers leave
# within seconds, so a burst of calls leaves no threads behind for long.
_WORKERS = _Workers(keep=8, idle_timeout=5.0)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKERS.forget_idle)
