"""The plugin lifecycle: init, start and stop in dependency order, with failures kept contained.

Plugin code never runs under the registry's lock: each lifecycle hook runs in a daemon worker
thread that the caller waits for, bounded by ``Config.load_timeout``, and the registry is only
written once the hook has returned. A plugin that raises or hangs is FAILED, the plugins that
depend on it are held back, and every other plugin carries on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy

from .config import Config
from .dependencies import DependencyResolver
from .errors import DependencyError, HelixError, LifecycleError, LoadError, PluginTimeout
from .loader import LoadedPlugin, Loader
from .plugin import PluginContext, PluginEvent, PluginState
from .registry import PluginRecord, Registry

if TYPE_CHECKING:
    from .metrics import Metrics

T = TypeVar("T")

_log = logging.getLogger("helixhooks.lifecycle")

_CAN_INIT = frozenset({PluginState.LOADED, PluginState.STOPPED, PluginState.FAILED})
_CAN_START = frozenset({PluginState.INITIALIZED, PluginState.STOPPED})
_CAN_STOP = frozenset({PluginState.STARTED})
_CAN_RESTART = _CAN_INIT | _CAN_START | _CAN_STOP
# start_all leaves FAILED plugins alone: retrying them is restart's job, or a reload's.
_START_ALL_PICKS = frozenset({PluginState.LOADED, PluginState.INITIALIZED, PluginState.STOPPED})


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
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._created = time.perf_counter()
        _WORKERS.run(self)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def thread_name(self) -> str:
        """What its worker thread is called while it runs this call."""
        return f"helixhooks-{self.phase}-{self.plugin}"

    def elapsed(self) -> float:
        return time.perf_counter() - self._created

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; False means the call overran and is now abandoned."""
        if self._finished.wait(max(timeout, 0.0)):
            return True
        with self._lock:
            # It may have finished between the wait expiring and taking the lock: then it counts.
            if self._finished.is_set():
                return True
            self._abandoned = True
        return False

    def _run(self, worker: _Worker) -> bool:
        """Run the call; True if ``worker`` went back to its pool (the call was not abandoned)."""
        began = time.perf_counter()
        try:
            self.value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - plugin code may raise anything; the waiter gets it
            self.error = exc
        self.duration = time.perf_counter() - began
        with self._lock:
            abandoned = self._abandoned
            # Back in the pool before the waiter wakes, so that its next call finds this worker.
            kept = not abandoned and worker.rejoin()
            self._finished.set()
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


class _Worker:
    """A daemon thread that runs bounded calls one after another while its pool keeps it."""

    def __init__(self, pool: _Workers, first: BoundedCall[Any]) -> None:
        self._pool = pool
        self._inbox: queue.SimpleQueue[BoundedCall[Any]] = queue.SimpleQueue()
        # Through the inbox, not the thread's args, which hold their objects until it ends.
        self._inbox.put(first)
        self._thread = threading.Thread(target=self._serve, name=first.thread_name, daemon=True)
        self._thread.start()

    def give(self, call: BoundedCall[Any]) -> None:
        self._thread.name = call.thread_name
        self._inbox.put(call)

    def rejoin(self) -> bool:
        """Offer this worker back to its pool; False if the pool is full (the worker ends)."""
        # Renamed first: once in the pool, the worker may be handed its next call at any moment.
        self._thread.name = _IDLE_NAME
        return self._pool.keep_idle(self)

    def _serve(self) -> None:
        call: BoundedCall[Any] | None = self._inbox.get()
        while call is not None:
            kept = call._run(self)
            # Dropped before waiting: an idle worker must not keep a call's plugin objects alive.
            call = None
            if kept:
                call = self._next_call()

    def _next_call(self) -> BoundedCall[Any] | None:
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

    def run(self, call: BoundedCall[Any]) -> None:
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


_IDLE_NAME = "helixhooks-worker-idle"
# Lifecycle calls come one at a time and a health round one per plugin; idle workers leave
# within seconds, so a burst of calls leaves no threads behind for long.
_WORKERS = _Workers(keep=8, idle_timeout=5.0)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKERS.forget_idle)


def context_for(record: PluginRecord, config: Config, registry: Registry) -> PluginContext:
    """What a plugin's lifecycle hooks are handed: identity, merged config, the host's hooks."""
    candidate = record.candidate
    path = (
        candidate.source if candidate is not None and isinstance(candidate.source, Path) else None
    )
    return PluginContext(
        name=record.name,
        version=record.info.version,
        config=config.config_for(record.name, record.info.config),
        path=path,
        hook=registry.pm.hook,
    )


def _lifecycle_hook(loaded: LoadedPlugin, phase: str) -> pluggy.HookCaller | None:
    """The plugin's ``helix_<phase>`` on its private manager; None when it has no impl of it."""
    caller: pluggy.HookCaller = getattr(loaded.pm.hook, f"helix_{phase}")
    return caller if caller.get_hookimpls() else None


class LifecycleManager:
    """Moves plugins through plugin.TRANSITIONS, calling their lifecycle hooks one at a time.

    A plugin's capability hookimpls are in the live PluginManager exactly while it is STARTED:
    start activates them after ``helix_start`` returns, stop takes them out before
    ``helix_stop`` runs. Lifecycle operations are serialized by a lock of this manager; the
    registry's lock is held only for the writes themselves, never while plugin code runs.
    """

    def __init__(
        self,
        loader: Loader,
        registry: Registry,
        logger: logging.Logger | None = None,
        *,
        config: Config | None = None,
        metrics: Metrics | None = None,
        on_event: Callable[[PluginEvent], None] | None = None,
    ) -> None:
        self.registry = registry
        self.config = config if config is not None else loader.config
        self._logger = logger or _log
        self._metrics = metrics
        self._on_event = on_event
        self._resolver = DependencyResolver(registry)
        self._lock = threading.RLock()

    def init(self, name: str) -> None:
        """LOADED, STOPPED or FAILED -> INITIALIZED: ``helix_init(config, ctx)``."""
        with self._lock:
            self._init(name)

    def start(self, name: str) -> None:
        """INITIALIZED or STOPPED -> STARTED: ``helix_start(ctx)``, then its hookimpls go live."""
        with self._lock:
            self._start(name)

    def stop(self, name: str) -> None:
        """STARTED -> STOPPED: its hookimpls leave the live manager first, then ``helix_stop(ctx)``.

        A stop that raises or overruns leaves the plugin FAILED (re-init before the next start).
        """
        with self._lock:
            self._stop(name)

    def start_all(self, names: Iterable[str] | None = None) -> list[str]:
        """Init (if needed) and start plugins in dependency order; returns the names started.

        ``names`` limits this to those plugins and their dependencies. LOADED, INITIALIZED and
        STOPPED plugins are started; a plugin that fails is FAILED and the plugins depending on
        it are held back (their state stays, their ``error`` says why). Never raises for a
        plugin's fault.
        """
        with self._lock:
            wanted = None if names is None else list(names)
            for name in wanted or ():
                self._record(name)
            resolution = self._resolver.resolve(wanted)
            for name, problem in resolution.problems.items():
                record = self.registry.get(name)
                if record is not None and record.state in _START_ALL_PICKS:
                    self._hold_back(record, problem)
            picked = [n for n in resolution.order if self._state(n) in _START_ALL_PICKS]
            return self._start_each(picked)

    def stop_all(self) -> None:
        """Stop every STARTED plugin, dependents before their dependencies.

        A plugin whose stop fails is recorded (FAILED, its error, a "failed" event) and the
        others are still stopped.
        """
        with self._lock:
            for name in reversed(self._full_order()):
                if self._state(name) is PluginState.STARTED:
                    self._stop_recorded(name)

    def restart(self, name: str) -> None:
        """Stop the plugin's started dependents and the plugin, then start it and them again.

        A FAILED plugin is re-initialized first. Raises if the plugin itself cannot be brought
        back; its dependents are then held back, and a dependent's own failure is only recorded.
        """
        with self._lock:
            record = self._record(name)
            self._require(record, "restart", _CAN_RESTART, PluginState.STARTED)
            dependents = [
                d for d in self._resolver.dependents(name) if self._state(d) is PluginState.STARTED
            ]
            for dependent in reversed(dependents):
                self._stop_recorded(dependent)
            if record.state is PluginState.STARTED:
                self._stop_recorded(name)
            try:
                self._bring_up(name)
            finally:
                self._start_each(dependents)

    def fail(self, name: str, error: HelixError) -> None:
        """Take a plugin out of service as FAILED with ``error`` (e.g. when it is given up on).

        A STARTED plugin is stopped first, so its hookimpls leave the live manager and
        ``helix_stop`` gets to release what it holds.
        """
        with self._lock:
            record = self._record(name)
            if record.state is PluginState.STARTED:
                self._stop_recorded(name)
            self._mark_failed(record, error, None)

    def context(self, name: str) -> PluginContext:
        """The PluginContext the plugin's lifecycle hooks are handed."""
        return context_for(self._record(name), self.config, self.registry)

    def _init(self, name: str) -> None:
        record = self._record(name)
        self._require(record, "init", _CAN_INIT, PluginState.INITIALIZED)
        loaded = self._loaded(record)
        ctx = context_for(record, self.config, self.registry)
        duration = self._run_hook(record, loaded, "init", config=ctx.config, ctx=ctx)
        with self.registry.lock:
            self._check_unchanged(record, loaded, "init")
            self.registry.set_state(name, PluginState.INITIALIZED)
            record.timings["init"] = duration
        if self._metrics is not None:
            self._metrics.record_init(name, duration)

    def _start(self, name: str) -> None:
        record = self._record(name)
        self._require(record, "start", _CAN_START, PluginState.STARTED)
        loaded = self._loaded(record)
        ctx = context_for(record, self.config, self.registry)
        duration = self._run_hook(record, loaded, "start", ctx=ctx)
        with self.registry.lock:
            self._check_unchanged(record, loaded, "start")
            try:
                self.registry.activate(name)
            except LoadError as exc:
                misfit: LoadError | None = exc
            else:
                misfit = None
                self.registry.set_state(name, PluginState.STARTED)
                record.timings["start"] = duration
        if misfit is not None:
            # Hookspecs the host added since the load may not fit: the plugin cannot serve.
            self._release(loaded, ctx)
            self._mark_failed(record, misfit, duration)
            raise misfit
        if self._metrics is not None:
            self._metrics.record_start(name, duration)
        self._emit(PluginEvent("started", name, record.info.version, duration=duration))

    def _stop(self, name: str) -> None:
        record = self._record(name)
        self._require(record, "stop", _CAN_STOP, PluginState.STOPPED)
        loaded = self._loaded(record)
        ctx = context_for(record, self.config, self.registry)
        with self.registry.lock:
            # Out of the live manager before helix_stop runs: hosts never call a stopping plugin.
            self.registry.deactivate(name)
            self.registry.set_state(name, PluginState.STOPPED)
        duration = self._run_hook(record, loaded, "stop", ctx=ctx)
        with self.registry.lock:
            record.timings["stop"] = duration
        self._emit(PluginEvent("stopped", name, record.info.version, duration=duration))

    def _release(self, loaded: LoadedPlugin, ctx: PluginContext) -> None:
        """``helix_stop`` for a plugin that started but cannot serve; a failure is only logged."""
        caller = _lifecycle_hook(loaded, "stop")
        if caller is None:
            return
        run = BoundedCall(lambda: caller(ctx=ctx), plugin=ctx.name, phase="stop")
        if not run.wait(self.config.load_timeout) or run.error is not None:
            self._logger.warning("plugin %r: helix_stop failed or overran: %r", ctx.name, run.error)

    def _stop_recorded(self, name: str) -> None:
        try:
            self._stop(name)
        except HelixError as exc:
            # Already recorded on the plugin (FAILED, its error, a "failed" event); going on
            # matters more here than this one plugin's cleanup.
            self._logger.debug("stopping %r failed, carrying on: %s", name, exc)

    def _bring_up(self, name: str) -> None:
        if self._record(name).state in (PluginState.LOADED, PluginState.FAILED):
            self._init(name)
        self._start(name)

    def _start_each(self, order: list[str]) -> list[str]:
        """Bring up ``order`` one by one, holding back whatever depends on a plugin not started."""
        started: list[str] = []
        held: dict[str, str] = {}  # held-back plugin -> the failed plugin at the root of it
        for name in order:
            record = self._record(name)
            blocker = self._blocker(record, held)
            if blocker is not None:
                dependency, root = blocker
                if root is not None:
                    held[name] = root
                self._hold_back(record, self._held_back_error(name, dependency, root))
                continue
            try:
                self._bring_up(name)
            except HelixError as exc:
                # Recorded on the plugin with an event; one plugin's fault stops no other.
                self._logger.debug("bringing up %r failed, carrying on: %s", name, exc)
                continue
            started.append(name)
        return started

    def _blocker(self, record: PluginRecord, held: dict[str, str]) -> tuple[str, str | None] | None:
        """The first dependency that is not STARTED, and the failed plugin behind it if any."""
        for dependency in record.info.parsed_dependencies:
            state = self._state(dependency.name)
            if state is PluginState.STARTED:
                continue
            if dependency.name in held:
                return dependency.name, held[dependency.name]
            if state is PluginState.FAILED:
                return dependency.name, dependency.name
            return dependency.name, None
        return None

    def _held_back_error(self, name: str, dependency: str, root: str | None) -> DependencyError:
        if root is None:
            state = self._state(dependency)
            why = f"is not started ({state.value if state else 'not loaded'})"
            return DependencyError(
                f"held back: depends on {dependency!r}, which {why}",
                plugin=name,
                hint=f"start {dependency!r} first, or include it in start_all(names=...)",
            )
        why = "failed" if dependency == root else f"is held back because {root!r} failed"
        root_record = self.registry.get(root)
        cause = root_record.error if root_record is not None else None
        detail = cause.message if isinstance(cause, HelixError) else cause
        error = DependencyError(
            f"held back: depends on {dependency!r}, which {why}" + (f": {detail}" if cause else ""),
            plugin=name,
            hint=f"fix {root!r} first, then restart it",
        )
        error.__cause__ = cause
        return error

    def _hold_back(self, record: PluginRecord, error: HelixError) -> None:
        with self.registry.lock:
            record.error = error
        self._logger.warning("%s", error)
        self._emit(PluginEvent("held_back", record.name, record.info.version, error=error))

    def _run_hook(
        self,
        record: PluginRecord,
        loaded: LoadedPlugin,
        phase: str,
        **kwargs: object,
    ) -> float:
        """Run one lifecycle hook bounded by load_timeout; returns its duration.

        On a raise or a timeout the plugin is marked FAILED and the error is raised. A plugin
        without the hook takes no time: no thread is started for it.
        """
        caller = _lifecycle_hook(loaded, phase)
        if caller is None:
            return 0.0
        timeout = self.config.load_timeout
        run = BoundedCall(lambda: caller(**kwargs), plugin=record.name, phase=phase)
        if not run.wait(timeout):
            error: HelixError = PluginTimeout(
                record.name,
                phase,
                timeout,
                hint=f"helix_{phase} is still running in an abandoned thread (Python cannot kill "
                f"it); make it return within load_timeout, moving slow work to a thread of its "
                f"own, or raise load_timeout",
            )
            self._fail_phase(record, loaded, phase, error, run.elapsed())
            raise error
        if run.error is not None:
            error = LifecycleError(
                f"helix_{phase} raised {type(run.error).__name__}: {run.error}",
                plugin=record.name,
                path=record.candidate.location if record.candidate is not None else None,
                hint=f"fix the plugin's helix_{phase}; the original exception is chained",
            )
            self._fail_phase(record, loaded, phase, error, run.duration)
            raise error from run.error
        return run.duration

    def _fail_phase(
        self,
        record: PluginRecord,
        loaded: LoadedPlugin,
        phase: str,
        error: HelixError,
        duration: float,
    ) -> None:
        with self.registry.lock:
            self._check_unchanged(record, loaded, phase)
        self._mark_failed(record, error, duration)

    def _mark_failed(self, record: PluginRecord, error: HelixError, duration: float | None) -> None:
        with self.registry.lock:
            if record.state is PluginState.FAILED:
                record.error = error
            else:
                self.registry.set_state(record.name, PluginState.FAILED, error)
        self._logger.error("%s", error)
        self._emit(
            PluginEvent("failed", record.name, record.info.version, error=error, duration=duration)
        )

    def _check_unchanged(self, record: PluginRecord, loaded: LoadedPlugin, phase: str) -> None:
        """Refuse to apply a hook's outcome to a plugin unloaded or replaced while it ran."""
        if self.registry.get(record.name) is not record or record.loaded is not loaded:
            raise LifecycleError(
                f"was unloaded or replaced while its {phase} ran; the outcome is discarded",
                plugin=record.name,
                hint="run the lifecycle operation again on the current version",
            )

    def _record(self, name: str) -> PluginRecord:
        return self.registry.require(name)

    def _state(self, name: str) -> PluginState | None:
        record = self.registry.get(name)
        return record.state if record is not None else None

    def _require(
        self,
        record: PluginRecord,
        action: str,
        allowed: frozenset[PluginState],
        target: PluginState,
    ) -> None:
        if record.state not in allowed:
            accepted = " or ".join(sorted(s.value for s in allowed))
            raise LifecycleError(
                f"cannot {action}: it is {record.state.value}, and {target.value} can only be "
                f"reached from {accepted}",
                plugin=record.name,
                hint=f"{action} a plugin only when it is {accepted}",
            )

    def _loaded(self, record: PluginRecord) -> LoadedPlugin:
        if record.loaded is None:
            raise LifecycleError(
                f"has no loaded code ({record.state.value})",
                plugin=record.name,
                hint="load the plugin before initializing or starting it",
            )
        return record.loaded

    def _full_order(self) -> list[str]:
        """Every plugin, dependencies first; broken ones last, as nothing can depend on them."""
        resolution = self._resolver.resolve()
        return [*resolution.order, *resolution.problems]

    def _emit(self, event: PluginEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            # A subscriber's bug must not break the lifecycle that notified it.
            self._logger.exception("event subscriber failed on %s", event)
