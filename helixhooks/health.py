"""Health checks, each bounded by ``Config.health_timeout``, and a monitor that restarts the sick.

A check never hangs the host: it runs in a daemon thread that is abandoned when it overruns
(Python cannot kill a thread). While an abandoned check of a plugin is still running, that
plugin is reported unhealthy without starting another, so a hung check costs one thread, not
one per round.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import attrs

from ._bounded import BoundedCall
from ._dispatch import NotServing
from .config import Config
from .errors import HelixError, LifecycleError
from .lifecycle import LifecycleManager, context_for
from .loader import LoadedPlugin
from .plugin import PluginEvent, PluginState, deliver
from .registry import PluginRecord, Registry

_logger = logging.getLogger("helixhooks.health")


@attrs.frozen
class HealthStatus:
    """One plugin's health at ``checked_at`` (time.time()); ``latency`` is the check's seconds."""

    name: str
    healthy: bool
    state: PluginState
    message: str
    latency: float
    checked_at: float


@attrs.define
class _Pending:
    """A check under way: its thread, and when the caller stops waiting for it."""

    record: PluginRecord
    loaded: LoadedPlugin
    run: BoundedCall[list[object]]
    deadline: float
    checked_at: float


class HealthChecker:
    """Calls ``helix_health_check(ctx)`` through each plugin's private manager.

    True or None is healthy; False, a message string, an exception or a timeout is not; so is
    any plugin that is not STARTED. A plugin without a health check is healthy.
    """

    def __init__(self, registry: Registry, config: Config | None = None) -> None:
        self.registry = registry
        self.config = config if config is not None else Config()
        self._abandoned: dict[str, tuple[LoadedPlugin, BoundedCall[list[object]]]] = {}
        self._abandoned_lock = threading.Lock()

    def check(self, name: str) -> HealthStatus:
        """Check one plugin; waits at most ``health_timeout``."""
        return self._finish(self._begin(self.registry.require(name)))

    def check_all(self) -> dict[str, HealthStatus]:
        """Check every plugin at once: all checks start before any is waited for.

        The whole round takes about as long as the slowest check, at most ``health_timeout``.
        """
        records = self.registry.list()
        with self._abandoned_lock:
            # Forget finished or unloaded ones: an entry keeps an old generation's code alive.
            names = {record.name for record in records}
            for name, (_, run) in list(self._abandoned.items()):
                if run.done or name not in names:
                    del self._abandoned[name]
        begun = [self._begin(record) for record in records]
        return {
            record.name: self._finish(item) for record, item in zip(records, begun, strict=True)
        }

    def _begin(self, record: PluginRecord) -> HealthStatus | _Pending:
        """Start the check, or answer at once when no plugin code needs to run."""
        checked_at = time.time()
        state = record.state
        loaded = record.loaded
        if state is not PluginState.STARTED or loaded is None:
            return HealthStatus(record.name, False, state, _not_started(record), 0.0, checked_at)
        if not loaded.gen.implements("helix_health_check"):
            return HealthStatus(record.name, True, state, "no health check", 0.0, checked_at)
        with self._abandoned_lock:
            earlier = self._abandoned.get(record.name)
            if earlier is not None and earlier[0] is loaded and not earlier[1].done:
                return HealthStatus(
                    record.name,
                    False,
                    state,
                    f"an earlier health check has hung for {earlier[1].elapsed():.1f}s "
                    f"(timed out, still running)",
                    0.0,
                    checked_at,
                )
            self._abandoned.pop(record.name, None)
        ctx = context_for(record, self.config, self.registry)
        dispatch = self.registry.dispatch
        run: BoundedCall[list[object]] = BoundedCall(
            # serving: a check admitted before a stop is waited for; one after it is refused.
            lambda: dispatch.call(loaded.gen, "helix_health_check", {"ctx": ctx}, serving=True),
            plugin=record.name,
            phase="health_check",
        )
        deadline = time.monotonic() + self.config.health_timeout
        return _Pending(record, loaded, run, deadline, checked_at)

    def _finish(self, item: HealthStatus | _Pending) -> HealthStatus:
        if isinstance(item, HealthStatus):
            return item
        record, run = item.record, item.run
        state = PluginState.STARTED
        if not run.wait(item.deadline - time.monotonic()):
            with self._abandoned_lock:
                self._abandoned[record.name] = (item.loaded, run)
            timeout = self.config.health_timeout
            message = f"health check timed out after {timeout:g}s"
            return HealthStatus(record.name, False, state, message, run.elapsed(), item.checked_at)
        if isinstance(run.error, NotServing):
            message = "stopped while its health check was starting"
            return HealthStatus(record.name, False, record.state, message, 0.0, item.checked_at)
        if run.error is not None:
            message = f"health check raised {type(run.error).__name__}: {run.error}"
            return HealthStatus(record.name, False, state, message, run.duration, item.checked_at)
        healthy, message = verdict(run.value or [])
        return HealthStatus(record.name, healthy, state, message, run.duration, item.checked_at)


def _not_started(record: PluginRecord) -> str:
    if record.state is PluginState.FAILED and record.error is not None:
        return f"failed: {record.error}"
    return f"not started ({record.state.value})"


def verdict(results: list[object]) -> tuple[bool, str]:
    """Healthy or not, and why, from what a plugin's helix_health_check impls returned (pluggy
    leaves a None answer out of the results)."""
    if not results or results[0] is True:
        return True, "ok"
    answer = results[0]
    if answer is False:
        return False, "health check returned False"
    if isinstance(answer, str):
        return False, answer or "health check returned an empty message"
    return False, f"health check returned {answer!r}; expected True, None, False or a message"


def _backoff_delay(restarts: int, backoff: float, max_backoff: float) -> float:
    """Seconds to wait after the ``restarts``-th restart: backoff doubling each time, capped."""
    try:
        return min(math.ldexp(backoff, restarts - 1), max_backoff)
    except OverflowError:
        return max_backoff


@attrs.define
class _Patient:
    """What the monitor remembers about an unhealthy plugin."""

    failures: int = 0
    restarts: int = 0
    next_restart_at: float = 0.0
    given_up: bool = False
    #: A "health_failed" event was sent: a healthy check then sends "health_recovered".
    reported: bool = False


class HealthMonitor:
    """Checks every plugin each ``interval`` seconds and restarts a STARTED plugin that stays sick.

    After ``failures_before_restart`` unhealthy checks in a row the plugin is restarted; further
    restarts wait ``backoff`` seconds, doubling up to ``max_backoff``. After ``max_restarts``
    restarts that did not cure it, the monitor gives up and the plugin is FAILED. A healthy
    check forgets all of it. A plugin the host stopped is left alone.

    Events through ``on_event``: "health_failed" when a plugin reaches the threshold,
    "restarted" after a restart, "health_recovered" at the first healthy check after a
    "health_failed". The restarts' own events and the "failed" of giving up come
    from the LifecycleManager's subscriber.
    """

    def __init__(
        self,
        checker: HealthChecker,
        lifecycle: LifecycleManager,
        *,
        interval: float,
        failures_before_restart: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_restarts: int = 5,
        on_event: Callable[[PluginEvent], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        if failures_before_restart < 1:
            raise ValueError(
                f"failures_before_restart must be >= 1, got {failures_before_restart!r}"
            )
        if not 0 <= backoff <= max_backoff:
            raise ValueError(f"need 0 <= backoff <= max_backoff, got {backoff!r}, {max_backoff!r}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts!r}")
        self.checker = checker
        self.lifecycle = lifecycle
        self.interval = interval
        self.failures_before_restart = failures_before_restart
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_restarts = max_restarts
        self._on_event = on_event
        self._patients: dict[str, _Patient] = {}
        self._round_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run rounds in a daemon thread, the first one at once."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="helixhooks-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the rounds; waits for the round under way, which every time limit bounds."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join()

    def run_once(self) -> dict[str, HealthStatus]:
        """One round: check every plugin, then restart or give up on those that stay sick."""
        with self._round_lock:
            statuses = self.checker.check_all()
            for name in set(self._patients) - set(statuses):
                del self._patients[name]
            for status in statuses.values():
                self._observe(status)
            return statuses

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:
                # A bug in one round must not end the monitoring for good.
                _logger.exception("health round failed")
            self._stopping.wait(self.interval)

    def _observe(self, status: HealthStatus) -> None:
        name = status.name
        if status.healthy:
            cured = self._patients.pop(name, None)
            if cured is not None:
                _logger.info("plugin %r is healthy again", name)
                if cured.reported:
                    self._emit(PluginEvent("health_recovered", name, self._version(name)))
            return
        patient = self._patients.get(name)
        if status.state is PluginState.STARTED and (patient is None or patient.given_up):
            # A given-up plugin that is STARTED again was brought back by the host: a fresh start.
            patient = self._patients[name] = _Patient()
        if patient is None or patient.given_up:
            return
        if status.state is not PluginState.STARTED and not (
            status.state is PluginState.FAILED and patient.restarts
        ):
            # Stopped by the host, or failed before the monitor restarted it: not ours to heal.
            del self._patients[name]
            return
        patient.failures += 1
        if patient.failures < self.failures_before_restart:
            return
        if patient.failures == self.failures_before_restart:
            error = LifecycleError(
                f"unhealthy {patient.failures} times in a row: {status.message}",
                plugin=name,
                hint="see the plugin's health check; the monitor restarts it",
            )
            patient.reported = True
            self._emit(PluginEvent("health_failed", name, self._version(name), error=error))
        if time.monotonic() < patient.next_restart_at:
            return
        if patient.restarts >= self.max_restarts:
            self._give_up(name, patient, status)
        else:
            self._restart(name, patient)

    def _restart(self, name: str, patient: _Patient) -> None:
        patient.restarts += 1
        patient.failures = 0
        try:
            self.lifecycle.restart(name)
        except HelixError as exc:
            # The lifecycle has recorded it (FAILED, its error, a "failed" event); the next
            # restart comes after the backoff.
            _logger.warning("restart %d of %r failed: %s", patient.restarts, name, exc)
        else:
            self._emit(PluginEvent("restarted", name, self._version(name)))
        delay = _backoff_delay(patient.restarts, self.backoff, self.max_backoff)
        patient.next_restart_at = time.monotonic() + delay

    def _give_up(self, name: str, patient: _Patient, status: HealthStatus) -> None:
        patient.given_up = True
        error = LifecycleError(
            f"given up after {patient.restarts} restart(s): still unhealthy: {status.message}",
            plugin=name,
            hint="fix what its health check reports, then restart or reload it",
        )
        try:
            self.lifecycle.fail(name, error)
        except HelixError as exc:
            _logger.warning("could not mark %r as failed: %s", name, exc)

    def _version(self, name: str) -> str | None:
        record = self.checker.registry.get(name)
        return record.info.version if record is not None else None

    def _emit(self, event: PluginEvent) -> None:
        deliver(self._on_event, event, _logger)
