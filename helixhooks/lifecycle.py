"""The plugin lifecycle: init, start and stop in dependency order, with failures kept contained.

Plugin code never runs under the registry's lock: each lifecycle hook runs in a daemon worker
thread that the caller waits for, bounded by ``Config.load_timeout``, and the registry is only
written once the hook has returned. A plugin that raises or hangs is FAILED, the plugins that
depend on it are held back, and every other plugin carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from ._operation import Outcome, Step, Steps, drive, post
from .config import Config
from .dependencies import DependencyResolver
from .errors import (
    DependencyError,
    HelixError,
    LifecycleError,
    LoadError,
    PluginTimeout,
    SandboxError,
)
from .loader import LoadedPlugin, Loader, phase_timeout
from .plugin import (
    PluginCandidate,
    PluginContext,
    PluginEvent,
    PluginState,
    deliver,
)
from .registry import PluginRecord, Registry

if TYPE_CHECKING:
    from .metrics import Metrics

_log = logging.getLogger("helixhooks.lifecycle")

_CAN_INIT = frozenset({PluginState.LOADED, PluginState.STOPPED, PluginState.FAILED})
_CAN_START = frozenset({PluginState.INITIALIZED, PluginState.STOPPED})
_CAN_STOP = frozenset({PluginState.STARTED})
_CAN_RESTART = _CAN_INIT | _CAN_START | _CAN_STOP
# start_all leaves FAILED plugins alone: retrying them is restart's job, or a reload's.
_START_ALL_PICKS = frozenset({PluginState.LOADED, PluginState.INITIALIZED, PluginState.STOPPED})


def context_for(
    record: PluginRecord | LoadedPlugin,
    config: Config,
    registry: Registry,
    *,
    handover: bool = False,
) -> PluginContext:
    """What a plugin's lifecycle hooks are handed: identity, merged config, the host's hooks.

    For a record, as it is now; for a generation (a reload's staged one), as it was loaded.
    """
    candidate = record.candidate
    return PluginContext(
        name=record.name,
        version=record.info.version,
        config=config.config_for(record.name, record.info.config),
        path=candidate.fspath if candidate is not None else None,
        hook=registry.pm.hook,
        handover=handover,
    )


def _wants_load(record: PluginRecord) -> bool:
    """Not loaded yet: new, held back before loading, or FAILED before its code loaded."""
    return record.loaded is None and record.state in (
        PluginState.DISCOVERED,
        PluginState.RESOLVED,
        PluginState.FAILED,
    )


def _location(record: PluginRecord) -> str | None:
    return record.candidate.location if record.candidate is not None else None


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
        self.loader = loader
        self.config = config if config is not None else loader.config
        self._logger = logger or _log
        self.metrics = metrics
        self._on_event = on_event
        #: Held for a whole lifecycle operation: one runs at a time.
        self.lock = threading.RLock()

    def load_all(self, candidates: Iterable[PluginCandidate]) -> list[str]:
        """Record, resolve, load and initialize ``candidates``; returns the names initialized.

        New plugins, and plugins that failed to load or were held back by a broken dependency,
        are (re)tried with their candidate as just discovered; loaded ones are left alone. A
        broken plugin is FAILED with the reason, its dependents are held back, and every other
        plugin loads.
        """
        with self.lock:
            return drive(self.load_all_steps(list(candidates)))

    def load_all_steps(
        self, candidates: list[PluginCandidate], names: Collection[str] | None = None
    ) -> Steps[list[str]]:
        """``load_all`` as steps; ``names`` limits it to those plugins (say, ones held back)."""
        for candidate in candidates:
            self._admit(candidate)
        resolution = DependencyResolver(
            [r.info for r in self.registry.list() if r.state is not PluginState.UNLOADED]
        ).resolve()
        for name, error in resolution.problems.items():
            record = self.registry.get(name)
            if record is None or not _wants_load(record) or (names and name not in names):
                continue
            if name in resolution.held_back:
                self._hold_back(record, error, blocker=error.plugin or name)
            else:
                self.mark_failed(record, error, None)
        initialized = []
        held: dict[str, str] = {}  # held-back plugin -> the failed plugin at the root of it
        for name in resolution.order:
            record = self._record(name)
            if not _wants_load(record) or (names and name not in names):
                continue
            blocker = self._blocker(record, held)
            if blocker is not None and blocker[1] is not None:
                dependency, root = blocker[0], blocker[1]
                held[name] = root
                error = self._held_back_error(name, dependency, root)
                self._hold_back(record, error, blocker=dependency)
                continue
            if (yield from self._load(record)):
                try:
                    yield from self._init(name)
                except HelixError:
                    # Recorded on the plugin, with an event; the others go on.
                    continue
                initialized.append(name)
        return initialized

    def _admit(self, candidate: PluginCandidate) -> None:
        """Record a discovered plugin, or refresh a record that never loaded with it."""
        record = self.registry.get(candidate.info.name)
        if record is None or record.state is PluginState.UNLOADED:
            self.registry.add(candidate.info, candidate)
        elif _wants_load(record):
            with self.registry.lock:
                record.info = candidate.info
                record.candidate = candidate

    def _load(self, record: PluginRecord) -> Steps[bool]:
        """Import the plugin's code; a failure leaves it FAILED with the reason."""
        name = record.name
        try:
            loaded = yield from self.loader.load_steps(record.candidate or record.info.name)
        except HelixError as exc:
            self.mark_failed(record, exc, None)
            return False
        self.registry.register(loaded)
        with self.registry.lock:
            record.held_by = None
        self.emit(PluginEvent("loaded", name, record.info.version))
        return True

    def init(self, name: str) -> None:
        """LOADED, STOPPED or FAILED -> INITIALIZED: ``helix_init(config, ctx)``."""
        with self.lock:
            drive(self._init(name))

    def start(self, name: str) -> None:
        """INITIALIZED or STOPPED -> STARTED: ``helix_start(ctx)``, then its hookimpls go live."""
        with self.lock:
            drive(self._start(name))

    def stop(self, name: str) -> None:
        """STARTED -> STOPPED: its hookimpls leave the live manager first, then ``helix_stop(ctx)``.

        A stop that raises or overruns leaves the plugin FAILED (re-init before the next start).
        """
        with self.lock:
            drive(self._stop(name))

    def start_all(self, names: Iterable[str] | None = None) -> list[str]:
        """Init (if needed) and start plugins in dependency order; returns the names started.

        ``names`` limits this to those plugins and their dependencies. LOADED, INITIALIZED and
        STOPPED plugins are started; a plugin that fails is FAILED and the plugins depending on
        it are held back (their state stays, their ``error`` says why). Never raises for a
        plugin's fault.
        """
        with self.lock:
            return drive(self._start_all(None if names is None else list(names)))

    def _start_all(self, wanted: list[str] | None) -> Steps[list[str]]:
        for name in wanted or ():
            self._record(name)
        resolution = self.resolver().resolve(wanted)
        for name, problem in resolution.problems.items():
            record = self.registry.get(name)
            if record is not None and record.state in _START_ALL_PICKS:
                self._hold_back(record, problem, blocker=problem.plugin or name)
        picked = [n for n in resolution.order if self._state(n) in _START_ALL_PICKS]
        return (yield from self.start_steps(picked))

    def stop_all(self) -> None:
        """Stop every STARTED plugin, dependents before their dependencies.

        A plugin whose stop fails is recorded (FAILED, its error, a "failed" event) and the
        others are still stopped.
        """
        with self.lock:
            drive(self._stop_all())

    def _stop_all(self) -> Steps[None]:
        for name in reversed(self._full_order()):
            if self._state(name) is PluginState.STARTED:
                yield from self.stop_steps(name)

    def restart(self, name: str) -> None:
        """Stop the plugin's started dependents and the plugin, then start it and them again.

        A FAILED plugin is re-initialized first. Dependents held back because of this plugin
        are started too once it is up. Raises if the plugin itself cannot be brought back (its
        dependents are then held back), or if a dependency of it is not started.
        """
        with self.lock:
            drive(self._restart(name))

    def _restart(self, name: str) -> Steps[None]:
        record = self._record(name)
        self._require(record, "restart", _CAN_RESTART, PluginState.STARTED)
        if record.loaded is None:
            raise LifecycleError(
                f"cannot restart: its code never loaded ({record.error})",
                plugin=name,
                path=_location(record),
                hint="fix the file named above, then call load_all() (or reload it)",
            )
        self._require_dependencies_started(record, "restart")
        dependents = [
            d
            for d in self.resolver().dependents(name)
            if self._state(d) is PluginState.STARTED
            or (self._held_by(d) is not None and self._state(d) in _START_ALL_PICKS)
        ]
        for dependent in reversed(dependents):
            if self._state(dependent) is PluginState.STARTED:
                yield from self.stop_steps(dependent)
        if record.state is PluginState.STARTED:
            yield from self.stop_steps(name)
        try:
            yield from self._bring_up(name)
        except HelixError:
            yield from self.start_steps(dependents)  # they are held back, with the reason
            raise
        yield from self.start_steps(dependents)

    def fail(self, name: str, error: HelixError) -> None:
        """Take a plugin out of service as FAILED with ``error`` (e.g. when it is given up on).

        A STARTED plugin is stopped first, so its hookimpls leave the live manager and
        ``helix_stop`` gets to release what it holds.
        """
        with self.lock:
            drive(self._fail(name, error))

    def _fail(self, name: str, error: HelixError) -> Steps[None]:
        record = self._record(name)
        if record.state is PluginState.STARTED:
            yield from self.stop_steps(name)
        self.mark_failed(record, error, None)
        for dependent in self.resolver().dependents(name):
            held = self._record(dependent)
            if held.state in _START_ALL_PICKS and held.held_by is not None:
                self._hold_back(held, self._held_back_error(dependent, name, name), blocker=name)

    def context(self, name: str) -> PluginContext:
        """The PluginContext the plugin's lifecycle hooks are handed."""
        return context_for(self._record(name), self.config, self.registry)

    def _init(self, name: str) -> Steps[None]:
        record = self._record(name)
        self._require(record, "init", _CAN_INIT, PluginState.INITIALIZED)
        loaded = self._loaded(record)
        ctx = context_for(record, self.config, self.registry)
        duration = yield from self._run_hook(record, loaded, "init", config=ctx.config, ctx=ctx)
        with self.registry.lock:
            self._check_unchanged(record, loaded, "init")
            self.registry.set_state(name, PluginState.INITIALIZED)
            record.timings["init"] = duration
        if self.metrics is not None:
            self.metrics.record_init(name, duration)

    def _start(self, name: str) -> Steps[None]:
        record = self._record(name)
        self._require(record, "start", _CAN_START, PluginState.STARTED)
        self._require_dependencies_started(record, "start")
        loaded = self._loaded(record)
        ctx = context_for(record, self.config, self.registry)
        duration = yield from self._run_hook(record, loaded, "start", ctx=ctx)
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
                record.held_by = None
        if misfit is not None:
            # Hookspecs the host added since the load may not fit: the plugin cannot serve.
            yield from self._release(loaded, ctx)
            self.mark_failed(record, misfit, duration)
            raise misfit
        if self.metrics is not None:
            self.metrics.record_start(name, duration)
        self.emit(PluginEvent("started", name, record.info.version, duration=duration))

    def _stop(self, name: str) -> Steps[None]:
        record = self._record(name)
        self._require(record, "stop", _CAN_STOP, PluginState.STOPPED)
        # Its dependents first: a started plugin's dependencies are always started.
        for dependent in self.registry.direct_dependents(name):
            if self._state(dependent) is PluginState.STARTED:
                yield from self.stop_steps(dependent)
                self._hold_back(
                    self._record(dependent),
                    self._held_back_error(dependent, name, None, stopping=True),
                    blocker=name,
                )
        loaded = self._loaded(record)
        ctx = context_for(record, self.config, self.registry)
        # Out of the live manager before helix_stop runs: hosts never call a stopping plugin.
        term = self.registry.take_out(name, PluginState.STOPPED)
        # Then its calls already under way finish first (waited for without the registry lock,
        # which they may need).
        self.registry.drain(term)
        duration = yield from self._run_hook(record, loaded, "stop", ctx=ctx)
        with self.registry.lock:
            record.timings["stop"] = duration
        self.emit(PluginEvent("stopped", name, record.info.version, duration=duration))

    def _release(self, loaded: LoadedPlugin, ctx: PluginContext) -> Steps[None]:
        """``helix_stop`` for a plugin that started but cannot serve; a failure is only logged."""
        try:
            yield from self.phase_steps(loaded, "stop", ctx=ctx)
        except HelixError as exc:
            self._logger.warning("plugin %r: helix_stop failed or overran: %s", ctx.name, exc)

    def stop_steps(self, name: str) -> Steps[None]:
        try:
            yield from self._stop(name)
        except HelixError as exc:
            # Already recorded on the plugin (FAILED, its error, a "failed" event); going on
            # matters more here than this one plugin's cleanup.
            self._logger.debug("stopping %r failed, carrying on: %s", name, exc)

    def _bring_up(self, name: str) -> Steps[None]:
        if self._record(name).state in (PluginState.LOADED, PluginState.FAILED):
            yield from self._init(name)
        yield from self._start(name)

    def start_steps(self, order: list[str]) -> Steps[list[str]]:
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
                self._hold_back(
                    record, self._held_back_error(name, dependency, root), blocker=dependency
                )
                continue
            try:
                yield from self._bring_up(name)
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

    def _held_back_error(
        self, name: str, dependency: str, root: str | None, *, stopping: bool = False
    ) -> DependencyError:
        if root is None:
            state = self._state(dependency)
            why = (
                "is being stopped"
                if stopping
                else f"is not started ({state.value if state else 'not loaded'})"
            )
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

    def _hold_back(self, record: PluginRecord, error: HelixError, *, blocker: str) -> None:
        """Keep a plugin that is fine itself but needs ``blocker``; starting it later retries."""
        with self.registry.lock:
            record.error = error
            record.held_by = blocker
        self._logger.warning("%s", error)
        self.emit(PluginEvent("held_back", record.name, record.info.version, error=error))

    def run_phase(self, loaded: LoadedPlugin, phase: str, **kwargs: object) -> float:
        """Run ``helix_<phase>`` of one generation, live or staged, bounded by load_timeout.

        Returns its duration; raises PluginTimeout or LifecycleError (the plugin's exception
        chained). Changes no record: hot reload runs a staged generation's phases with it.
        """
        return drive(self.phase_steps(loaded, phase, **kwargs))

    def phase_steps(self, loaded: LoadedPlugin, phase: str, **kwargs: object) -> Steps[float]:
        """``run_phase`` as steps, for an operation that runs several (see _operation)."""
        return (yield from self.hook_steps(loaded, phase, **kwargs))[1]

    def hook_steps(
        self, loaded: LoadedPlugin, phase: str, **kwargs: object
    ) -> Steps[tuple[object, float]]:
        """``phase_steps`` giving the hook's answer too (a firstresult hook's, else a list)."""
        hook = f"helix_{phase}"
        if not loaded.gen.implements(hook):
            return None, 0.0
        dispatch = self.registry.dispatch
        timeout = phase_timeout(self.config, loaded.info)
        caller = getattr(self.registry.pm.hook, hook)
        firstresult = bool(caller.spec is not None and caller.spec.opts.get("firstresult"))
        outcome: Outcome = yield Step(
            lambda: dispatch.call(loaded.gen, hook, kwargs, firstresult=firstresult),
            plugin=loaded.name,
            phase=phase,
            timeout=timeout,
        )
        if outcome.timed_out:
            raise PluginTimeout(
                loaded.name,
                phase,
                timeout,
                hint=f"{hook} is still running in an abandoned thread (Python cannot kill "
                f"it); make it return within load_timeout, moving slow work to a thread of its "
                f"own, or raise load_timeout",
            )
        if isinstance(outcome.error, (PluginTimeout, SandboxError)) and (
            outcome.error.plugin == loaded.name
        ):
            raise outcome.error  # its worker's fate, said by its proxy: a timeout, a crash
        if outcome.error is not None:
            error = LifecycleError(
                f"{hook} raised {type(outcome.error).__name__}: {outcome.error}",
                plugin=loaded.name,
                path=loaded.candidate.location if loaded.candidate is not None else None,
                hint=f"fix the plugin's {hook}; the original exception is chained",
            )
            raise error from outcome.error
        return outcome.value, outcome.duration

    def _run_hook(
        self,
        record: PluginRecord,
        loaded: LoadedPlugin,
        phase: str,
        **kwargs: object,
    ) -> Steps[float]:
        """``run_phase`` for the record's generation; a raise or a timeout leaves it FAILED."""
        began = time.perf_counter()
        try:
            return (yield from self.phase_steps(loaded, phase, **kwargs))
        except HelixError as error:
            self._fail_phase(record, loaded, phase, error, time.perf_counter() - began)
            raise

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
        self.mark_failed(record, error, duration)

    def mark_failed(self, record: PluginRecord, error: HelixError, duration: float | None) -> None:
        with self.registry.lock:
            if record.state is PluginState.FAILED:
                record.error = error
            else:
                self.registry.set_state(record.name, PluginState.FAILED, error)
        self._logger.error("%s", error)
        self.emit(
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

    def _require_dependencies_started(self, record: PluginRecord, action: str) -> None:
        for dependency in record.info.parsed_dependencies:
            state = self._state(dependency.name)
            if state is not PluginState.STARTED:
                why = state.value if state is not None else "not loaded"
                raise DependencyError(
                    f"cannot {action}: it depends on {dependency.name!r}, which is {why}",
                    plugin=record.name,
                    hint=f"start {dependency.name!r} first (or start_all())",
                )

    def _held_by(self, name: str) -> str | None:
        record = self.registry.get(name)
        return record.held_by if record is not None else None

    def resolver(self) -> DependencyResolver:
        # One per use: a resolver caches what it parses, and a long-lived one would keep the
        # versions of every plugin ever loaded.
        return DependencyResolver(self.registry)

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
        resolution = self.resolver().resolve()
        return [*resolution.order, *resolution.problems]

    def emit(self, event: PluginEvent) -> None:
        # On the thread that asked for the operation, in order (see _operation.post).
        post(lambda: deliver(self._on_event, event, self._logger))
