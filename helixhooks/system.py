"""PluginSystem: the facade that composes discovery, resolution, loading, lifecycle and health."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pluggy

from .config import Config
from .dependencies import DependencyResolver
from .discovery import Discovery
from .errors import DependencyError, HelixError, LifecycleError, LoadError
from .health import HealthChecker, HealthMonitor, HealthStatus
from .lifecycle import LifecycleManager
from .loader import LoadedPlugin, Loader
from .metrics import Metrics, PluginStats
from .plugin import PluginEvent, PluginInfo, PluginState, Problem, deliver
from .registry import PluginRecord, Registry

Subscriber = Callable[[PluginEvent], None]


class PluginSystem:
    """Everything a host needs: ``with PluginSystem(config, specs=[Spec]) as s: s.hook.x()``.

    One lifecycle operation runs at a time (load, start, stop, restart, unload); hook calls through
    ``hook`` never wait for them.
    """

    def __init__(
        self,
        config: Config | None = None,
        logger: logging.Logger | None = None,
        specs: Sequence[object] = (),
    ) -> None:
        self.config = config or Config()
        self.logger = logger or logging.getLogger("helixhooks")
        self.metrics = Metrics()
        all_specs = [*_import_specs(self.config.hookspecs), *specs]
        self.registry = Registry(
            specs=all_specs, metrics=self.metrics, drain_timeout=self.config.load_timeout
        )
        self.loader = Loader(self.config, self.logger, specs=all_specs, metrics=self.metrics)
        self.discovery = Discovery(self.config)
        self.lifecycle = LifecycleManager(
            self.loader,
            self.registry,
            self.logger,
            config=self.config,
            metrics=self.metrics,
            on_event=self._emit,
        )
        self.health_checker = HealthChecker(self.registry, self.config)
        self.health_monitor: HealthMonitor | None = None
        self._subscribers: list[Subscriber] = []
        self._scan_problems: list[Problem] = []
        self._lock = threading.RLock()

    @property
    def hook(self) -> pluggy.HookRelay:
        """Broadcast calls to every STARTED plugin: ``system.hook.analyze(text=...)``."""
        return self.registry.pm.hook

    @property
    def problems(self) -> list[Problem]:
        """Every plugin that could not be discovered, resolved, loaded, initialized or started.

        Computed from the records, so a plugin that a restart brought back drops out of it.
        """
        problems = list(self._scan_problems)
        for record in self.registry.list():
            if record.error is not None and record.state is not PluginState.STARTED:
                problems.append(
                    Problem(_location(record), record.name, str(record.error), record.error)
                )
        return problems

    def add_hookspecs(self, spec: object) -> None:
        """Declare more host hooks; plugins loaded afterwards are validated against them too."""
        with self._lock:
            self.registry.add_hookspecs(spec)
            self.loader.add_hookspecs(spec)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every PluginEvent; returns a function that unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def load_all(self) -> list[str]:
        """Discover, resolve, load and initialize every plugin; returns the initialized names.

        A broken plugin is recorded in ``problems`` with its dependents; every other plugin loads.
        """
        with self._lock:
            candidates = self.discovery.scan()
            self._scan_problems = list(self.discovery.problems)
            for candidate in candidates:
                record = self.registry.get(candidate.info.name)
                if record is None or record.state is PluginState.UNLOADED:
                    self.registry.add(candidate.info, candidate)
            resolution = DependencyResolver(self._live_infos()).resolve()
            for name, error in resolution.problems.items():
                if self._state(name) is not PluginState.DISCOVERED:
                    continue
                if name in resolution.held_back:
                    self._hold_back(name, error)
                else:
                    self._fail(name, error)
            initialized = []
            for name in resolution.order:
                if self._state(name) is not PluginState.DISCOVERED:
                    continue
                blocker = self._blocking_dependency(name)
                if blocker is not None:
                    self._hold_back(name, _held_back(name, blocker))
                    continue
                self.registry.set_state(name, PluginState.RESOLVED)
                if self._load(name) and self._init(name):
                    initialized.append(name)
            return initialized

    def start_all(self) -> list[str]:
        """Start every loaded plugin in dependency order; returns the names started."""
        with self._lock:
            started = self.lifecycle.start_all()
            interval = self.config.health_interval
            if interval is not None and self.health_monitor is None:
                self.health_monitor = HealthMonitor(
                    self.health_checker, self.lifecycle, interval=interval, on_event=self._emit
                )
                self.health_monitor.start()
            return started

    def stop_all(self) -> None:
        """Stop the health monitor, then every started plugin in reverse dependency order."""
        with self._lock:
            monitor, self.health_monitor = self.health_monitor, None
            if monitor is not None:
                monitor.stop()
            self.lifecycle.stop_all()

    def close(self) -> None:
        """Stop everything, then unload every plugin, dependents first.

        Leaving the ``with`` block only stops, so the plugins can still be inspected; a host that
        is done with this system closes it to drop the plugins' modules too.
        """
        with self._lock:
            self.stop_all()
            order = DependencyResolver(self._live_infos()).resolve().order
            remaining = set(self.registry.names())
            for name in [*reversed(order), *sorted(remaining - set(order))]:
                self.unload(name)

    def restart(self, name: str) -> None:
        """Stop ``name`` and its dependents, then start it and them again."""
        with self._lock:
            self._record(name)
            self.lifecycle.restart(name)

    def unload(self, name: str) -> None:
        """Stop (dependents first), then drop a plugin and its modules."""
        with self._lock:
            record = self._record(name)
            for dependent in reversed(self._dependents(name)):
                if self._state(dependent) is PluginState.STARTED:
                    self.lifecycle.stop(dependent)
            if record.state is PluginState.STARTED:
                self.lifecycle.stop(name)
            version = record.info.version
            if record.loaded is not None:
                self.loader.unload(name)
            self.registry.unregister(name)
            self.metrics.forget(name)
            self._emit(PluginEvent("unloaded", name, version))

    def get(self, name: str) -> PluginHandle:
        """A handle on one plugin: its state, health, stats and its own hook implementations."""
        self._record(name)
        return PluginHandle(self, name)

    def names(self) -> list[str]:
        return self.registry.names()

    def health(self) -> dict[str, HealthStatus]:
        """Check every plugin concurrently, each bounded by ``config.health_timeout``."""
        return self.health_checker.check_all()

    def __enter__(self) -> PluginSystem:
        self.load_all()
        self.start_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def _live_infos(self) -> list[PluginInfo]:
        return [r.info for r in self.registry.list() if r.state is not PluginState.UNLOADED]

    def _dependents(self, name: str) -> list[str]:
        return DependencyResolver(self._live_infos()).dependents(name)

    def _state(self, name: str) -> PluginState | None:
        record = self.registry.get(name)
        return record.state if record is not None else None

    def _record(self, name: str) -> PluginRecord:
        return self.registry.require(name)

    def _blocking_dependency(self, name: str) -> str | None:
        """A dependency that failed, or that is itself held back (not loaded, with a reason)."""
        for dependency in self._record(name).info.parsed_dependencies:
            record = self.registry.get(dependency.name)
            if record is None:
                continue
            if record.state is PluginState.FAILED or (
                record.state is PluginState.DISCOVERED and record.error is not None
            ):
                return dependency.name
        return None

    def _load(self, name: str) -> bool:
        record = self._record(name)
        isolation = self.config.isolation or record.info.isolation
        if isolation == "process":
            # Running it in-process instead would silently drop the isolation it asked for.
            self._fail(
                name,
                LoadError(
                    "asks for process isolation, which this version of helixhooks cannot "
                    "provide yet",
                    plugin=name,
                    path=_location(record),
                    hint="set isolation = 'inprocess' in its manifest (or Config.isolation) "
                    "to run it in the host process",
                ),
            )
            return False
        try:
            loaded: LoadedPlugin = self.loader.load(record.candidate or record.info.name)
        except LoadError as exc:
            self._fail(name, exc)
            return False
        self.registry.register(loaded)
        self._emit(PluginEvent("loaded", name, record.info.version))
        return True

    def _init(self, name: str) -> bool:
        try:
            self.lifecycle.init(name)
        except HelixError:
            # The lifecycle has recorded the failure on the plugin's record and told subscribers.
            return False
        return True

    def _hold_back(self, name: str, error: HelixError) -> None:
        """Keep a plugin that is fine itself but needs a broken one; a later load_all retries it."""
        record = self._record(name)
        with self.registry.lock:
            record.error = error
        self.logger.warning("%s", error)
        self._emit(PluginEvent("held_back", name, record.info.version, error))

    def _fail(self, name: str, error: HelixError) -> None:
        record = self._record(name)
        self.registry.set_state(name, PluginState.FAILED, error)
        self.logger.warning("%s", error)
        self._emit(PluginEvent("failed", name, record.info.version, error))

    def _emit(self, event: PluginEvent) -> None:
        for callback in list(self._subscribers):
            deliver(callback, event, self.logger)


class PluginHandle:
    """A view of one plugin in a PluginSystem; reads are live, not a snapshot."""

    def __init__(self, system: PluginSystem, name: str) -> None:
        self._system = system
        self.name = name

    @property
    def _record(self) -> PluginRecord:
        return self._system._record(self.name)

    @property
    def info(self) -> PluginInfo:
        return self._record.info

    @property
    def state(self) -> PluginState:
        return self._record.state

    @property
    def version(self) -> str:
        return self._record.info.version

    @property
    def error(self) -> BaseException | None:
        return self._record.error

    @property
    def plugin(self) -> object | None:
        return self._record.plugin

    def health(self) -> HealthStatus:
        return self._system.health_checker.check(self.name)

    def stats(self) -> PluginStats:
        return self._system.metrics.get_stats(self.name)

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call this plugin's own impl of ``hook_name``; returns its result, not a list."""
        record = self._record
        if record.state is not PluginState.STARTED or record.loaded is None:
            raise LifecycleError(
                f"cannot call {hook_name!r}: the plugin is {record.state.value}, not started",
                plugin=self.name,
                hint="start it first (system.start_all() or system.restart(name))",
            )
        caller = getattr(record.loaded.pm.hook, hook_name, None)
        if caller is None or not caller.get_hookimpls():
            raise HelixError(
                f"does not implement hook {hook_name!r}",
                plugin=self.name,
                hint="call a hook the plugin implements: "
                + ", ".join(sorted(_implemented(record.loaded.pm))),
            )
        result = caller(**kwargs)
        if caller.spec is not None and caller.spec.opts.get("firstresult"):
            return result
        return result[0] if result else None

    def __repr__(self) -> str:
        record = self._system.registry.get(self.name)
        state = record.state.value if record else "gone"
        return f"<PluginHandle {self.name} {state}>"


def _implemented(pm: pluggy.PluginManager) -> Iterator[str]:
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if isinstance(caller, pluggy.HookCaller) and caller.get_hookimpls():
            yield name


def _held_back(name: str, blocker: str) -> DependencyError:
    return DependencyError(
        f"held back: depends on {blocker!r}, which failed or is held back",
        plugin=name,
        hint=f"fix {blocker!r} first (see its own problem)",
    )


def _location(record: PluginRecord) -> str:
    return record.candidate.location if record.candidate is not None else record.name


def _import_specs(targets: Sequence[str]) -> list[object]:
    """Resolve ``"module:Attr"`` or ``"path/file.py:Attr"`` hookspec references from a config."""
    specs = []
    for target in targets:
        module_ref, _, attr = target.partition(":")
        try:
            if module_ref.endswith(".py"):
                path = Path(module_ref)
                spec = importlib.util.spec_from_file_location(
                    f"helixhooks._hostspecs.{path.stem}", path
                )
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(module_ref)
            specs.append(getattr(module, attr) if attr else module)
        except (ImportError, OSError, AttributeError, SyntaxError) as exc:
            raise LoadError(
                f"cannot import the host's hookspecs {target!r}: {exc}",
                path=module_ref,
                hint="give hookspecs as 'module:Class' or 'file.py:Class' (relative to the config)",
            ) from exc
    return specs
