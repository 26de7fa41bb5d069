"""Lifecycle operations whose plugin calls are each bounded, at one thread handoff per operation.

Bounding every plugin call by handing it to a worker thread costs two thread wake-ups per call,
about 100 us on a quiet machine: more than loading and starting a small plugin takes. So a whole
operation (``start_all``, ``stop_all``, ``load_all``, a restart) runs on one worker instead,
written as a generator that *yields* each plugin call as a ``Step``. The worker runs the steps
inline; the caller's thread only watches the deadline of the step under way. If a step
overruns, the caller abandons that worker (Python cannot kill a thread), sends a timed-out
``Outcome`` into the generator and goes on with it on a fresh worker. A late outcome of the
abandoned step is logged and dropped.

Events for subscribers go through ``post``: they run on the caller's thread, in order, at the
latest when the operation ends, so a subscriber may call back into the host as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import Generic, TypeVar

from . import _bounded

T = TypeVar("T")

_log = logging.getLogger("helixhooks.operation")

_RUNNER_NAME = "helixhooks-operation"
# How often the waiting caller wakes to run posted callbacks while an operation goes on.
_POST_EVERY = 0.05


class Step:
    """One plugin call of an operation: ``fn()``, allowed ``timeout`` seconds."""

    __slots__ = ("fn", "phase", "plugin", "timeout")

    def __init__(self, fn: Callable[[], object], *, plugin: str, phase: str, timeout: float):
        self.fn = fn
        self.plugin = plugin
        self.phase = phase
        self.timeout = timeout


class Outcome:
    """What a step gave: its value or error, how long it ran, or that it overran."""

    __slots__ = ("duration", "error", "timed_out", "value")

    def __init__(
        self,
        value: object = None,
        error: BaseException | None = None,
        duration: float = 0.0,
        timed_out: bool = False,
    ) -> None:
        self.value = value
        self.error = error
        self.duration = duration
        self.timed_out = timed_out


Steps = Generator[Step, Outcome, T]


def drive(steps: Steps[T]) -> T:
    """Run an operation to its end and return its value (or raise what it raised)."""
    return _Operation(steps).run()


def post(callback: Callable[[], None]) -> None:
    """Call ``callback`` on the thread waiting for the running operation, or now if none."""
    operation = _current()
    if operation is None:
        callback()
    else:
        operation.posted.append(callback)


def on_behalf_of() -> frozenset[int]:
    """This thread, and the threads waiting for the operations it runs (transitively).

    A drain run by an operation must not wait for calls of the thread that waits for it.
    """
    idents = {threading.get_ident()}
    operation = _current()
    while operation is not None:
        idents.add(operation.host)
        operation = operation.parent
    return frozenset(idents)


_RUNNING = threading.local()


def _current() -> _Operation[object] | None:
    operation: _Operation[object] | None = getattr(_RUNNING, "operation", None)
    return operation


class _Operation(Generic[T]):
    """One operation's state, shared by the waiting caller and the worker running it."""

    def __init__(self, steps: Steps[T]) -> None:
        self._steps = steps
        self._lock = threading.Lock()
        # Held until the operation ends; the caller waits on it.
        self._ended = threading.Lock()
        self._ended.acquire()
        # The runner allowed to go on; a new object when one is abandoned, None when cancelled.
        self._token: object | None = None
        self._step: Step | None = None
        self._step_began = 0.0
        self._deadline = 0.0
        self._runner_ident = 0
        self._value: T | None = None
        self._error: BaseException | None = None
        self.posted: list[Callable[[], None]] = []
        self.host = threading.get_ident()
        self.parent = _current()

    def run(self) -> T:
        # Up to its first plugin call, the operation runs right here: one that calls no plugin
        # code (a plugin without lifecycle hooks) needs no thread at all.
        try:
            first = next(self._steps)
        except StopIteration as stop:
            value: T = stop.value
            return value
        self._launch(first, None, object())
        try:
            while not self._ended.acquire(timeout=self._wait_time()):
                self._run_posted()
                self._check_deadline()
        except BaseException:
            with self._lock:
                self._token = None  # the runner stops at its next step
            raise
        self._run_posted()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by _finish: T itself

    def _wait_time(self) -> float:
        with self._lock:
            if self._step is None:
                return _POST_EVERY
            return min(max(self._deadline - time.monotonic(), 0.0), _POST_EVERY)

    def _run_posted(self) -> None:
        # Through post: when the waiting thread itself runs an operation, they go on up to
        # the thread that waits for that one.
        while self.posted:
            post(self.posted.pop(0))

    def _check_deadline(self) -> None:
        with self._lock:
            step = self._step
            if step is None or time.monotonic() < self._deadline:
                return
            elapsed = time.perf_counter() - self._step_began
            _bounded.abandon_thread(self._runner_ident)
            self._step = None
            token = self._token = object()
        _log.debug("plugin %r: %s overran; going on without it", step.plugin, step.phase)
        self._launch(None, Outcome(duration=elapsed, timed_out=True), token)

    def _launch(self, step: Step | None, outcome: Outcome | None, token: object) -> None:
        with self._lock:
            self._token = token
        _bounded.run_job(_Runner(self, step, outcome, token))

    def _go(self, step: Step | None, outcome: Outcome | None, token: object) -> bool:
        """Drive the generator until it ends or a step is abandoned; False if abandoned."""
        with self._lock:
            self._runner_ident = threading.get_ident()
        previous = _current()
        _RUNNING.operation = self
        try:
            return self._drive(step, outcome, token)
        finally:
            _RUNNING.operation = previous

    def _drive(self, pending: Step | None, outcome: Outcome | None, token: object) -> bool:
        """Run ``pending`` (if given), then send each outcome on until the generator ends."""
        while True:
            if pending is None:
                with self._lock:
                    if self._token is not token:
                        # Cancelled: the caller is gone. What is left undone stays undone.
                        self._steps.close()
                        return True
                try:
                    pending = self._steps.send(outcome)  # type: ignore[arg-type]
                except StopIteration as stop:
                    self._finish(token, stop.value, None)
                    return True
                except BaseException as exc:  # noqa: BLE001 - the waiting caller raises it
                    self._finish(token, None, exc)
                    return True
            step, pending = pending, None
            with self._lock:
                if self._token is not token:
                    self._steps.close()
                    return True
                self._step = step
                self._step_began = time.perf_counter()
                self._deadline = time.monotonic() + step.timeout
            thread = threading.current_thread()
            # Named for what it runs, as a BoundedCall's worker is: an abandoned one shows it.
            thread.name = f"helixhooks-{step.phase}-{step.plugin}"
            began = time.perf_counter()
            try:
                value, error = step.fn(), None
            except BaseException as exc:  # noqa: BLE001 - plugin code may raise anything
                value, error = None, exc
            duration = time.perf_counter() - began
            with self._lock:
                abandoned = self._token is not token
                if not abandoned:
                    self._step = None
                    thread.name = _RUNNER_NAME
            if abandoned:
                _bounded.release_thread(threading.get_ident())
                what = f"raised {error!r}" if error is not None else "finished"
                _log.warning(
                    "plugin %r: %s %s after %.3fs, past its time limit; the outcome is discarded",
                    step.plugin,
                    step.phase,
                    what,
                    duration,
                )
                return False
            outcome = Outcome(value, error, duration)

    def _finish(self, token: object, value: T | None, error: BaseException | None) -> None:
        with self._lock:
            if self._token is not token:
                return
            self._value = value
            self._error = error
        self._ended.release()


class _Runner:
    """The job a pooled worker runs for an operation: ``step`` first, or ``outcome`` sent on."""

    __slots__ = ("_operation", "_outcome", "_step", "_token")

    def __init__(
        self, operation: _Operation[T], step: Step | None, outcome: Outcome | None, token: object
    ) -> None:
        self._operation: _Operation[object] = operation  # type: ignore[assignment]
        self._step = step
        self._outcome = outcome
        self._token = token

    @property
    def thread_name(self) -> str:
        return _RUNNER_NAME

    def _run(self, worker: _bounded._Worker) -> bool:
        kept = self._operation._go(self._step, self._outcome, self._token)
        return kept and worker.rejoin()
