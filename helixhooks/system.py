"""PluginSystem: the facade that composes discovery, resolution, loading, lifecycle and health."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import pluggy

from ._dispatch import NotServing
from ._guard import PluginGuard
from ._operation import drive
from .config import Config
from .dependencies import DependencyResolver
from .discovery import Discovery
from .errors import HelixError, LifecycleError, LoadError, PermissionDenied, ReloadError
from .health import HealthChecker, HealthMonitor, HealthStatus
from .lifecycle import LifecycleManager
from .loader import Loader, isolated, process_plugin
from .metrics import Metrics, PluginStats
from .plugin import PluginCandidate, PluginEvent, PluginInfo, PluginState, Problem, deliver
from .registry import PluginRecord, Registry
from .reload import reload_steps
from .security import Sandbox

if TYPE_CHECKING:
    from .hot_reload import HotReloader
    from .isolation.proxy import ProcessPlugin
    from .isolation.supervisor import Supervisor

Subscriber = Callable[[PluginEvent], None]

# Events every plugin has, not counted in its stats (a count of each would cost every plugin a
# table); the rest (reloads, refusals, failures, restarts, crashes) are what an operator watches.
_ROUTINE_EVENTS = frozenset({"loaded", "started", "stopped", "held_back", "unloaded"})


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
        #: What each plugin may do; the guard holds in-process plugins to it.
        self.sandbox = Sandbox(self.config, on_denied=self._denied)
        self.loader = Loader(
            self.config,
            self.logger,
            specs=all_specs,
            metrics=self.metrics,
            guard=PluginGuard(self.sandbox, enforce=self.config.sandbox_enabled),
        )
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
        self._reloader: HotReloader | None = None
        self._supervisor: Supervisor | None = None
        self.loader.on_worker_crash = self._worker_crashed

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
            known = {c.info.name for c in candidates} | set(self.registry.names())
            for warning in self.config.unknown_plugin_config(known):
                self.logger.warning("%s", warning)
            return self.lifecycle.load_all(candidates)

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
            if self.config.hot_reload:
                self.watch()
            return started

    def stop_all(self) -> None:
        """Stop watching and the health monitor, then every started plugin, dependents first."""
        self.stop_watching()
        with self._lock:
            monitor, self.health_monitor = self.health_monitor, None
            if monitor is not None:
                monitor.stop()
            if self._supervisor is not None:
                self._supervisor.close()  # a restart still waiting must not undo this stop
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
                self._unload(name)

    def restart(self, name: str) -> None:
        """Stop ``name`` and its dependents, then start it and them again."""
        with self._lock:
            self._record(name)
            self.lifecycle.restart(name)

    def load_plugin(self, path: str | os.PathLike[str]) -> str | None:
        """Load and start the plugin at ``path``, an entry of a plugin dir that appeared later.

        Returns its name, or None if ``path`` holds no plugin by discovery's rules. Raises the
        plugin's error if it could not be loaded or started (held back by a dependency that is
        not started is not an error: it starts with that dependency).
        """
        with self._lock:
            candidate = self.discovery.candidate(path)
            if candidate is None:
                return None
            name = candidate.info.name
            existing = self.registry.get(name)
            if existing is not None and existing.loaded is not None:
                raise LoadError(
                    f"a plugin named {name!r} is already loaded from {_location(existing)}",
                    plugin=name,
                    path=candidate.location,
                    hint="give the new plugin another name, or remove one of the two",
                )
            with self.lifecycle.lock:
                # This one only: other plugins that failed to load are not retried behind the
                # host's back.
                drive(self.lifecycle.load_all_steps([candidate], names={name}))
                drive(self.lifecycle.start_steps([name]))
            record = self._record(name)
            if record.state is PluginState.FAILED and isinstance(record.error, HelixError):
                raise record.error
            return name

    def register(
        self, plugin: object, info: PluginInfo | str | None = None, *, start: bool = True
    ) -> str:
        """Add ``plugin``, an object or module with hookimpls, as a plugin; returns its name.

        For a host's built-in plugins and for tests. It is validated against the host's specs
        as a loaded plugin is, initialized, and started unless ``start`` is false (``start_all``
        starts it then). ``info`` is its name or whole manifest (dependencies, config); by
        default it is named after its class (or module) at version 0.0.0. It has no files, so
        it cannot be reloaded; and it is the host's own code, which the guard does not hold to
        permissions, so it may not ask for any. Raises the plugin's error if it could not be
        initialized or started (held back by a dependency that is not started is not an error).
        """
        if not isinstance(info, PluginInfo):
            info = PluginInfo(info or _object_name(plugin), "0.0.0")
        name = info.name
        if info.permissions:
            raise LoadError(
                "a plugin object registered by the host runs as the host's own code, which "
                "the guard does not hold to permissions",
                plugin=name,
                hint="leave permissions out of its PluginInfo, or make it a plugin directory",
            )
        with self._lock, self.lifecycle.lock:
            existing = self.registry.get(name)
            if existing is not None:
                raise LoadError(
                    f"a plugin named {name!r} is already registered",
                    plugin=name,
                    path=existing.candidate.location if existing.candidate else None,
                    hint="give the object another name: register(plugin, 'other_name')",
                )
            if isolated(self.config, info):
                raise LoadError(
                    "an object of the host's cannot run in a worker process",
                    plugin=name,
                    hint="make it a plugin directory to run it isolated, or register it with "
                    "isolation 'inprocess' (and no Config.isolation = 'process')",
                )
            self.registry.register(self.loader.adopt(info, plugin))
            self.lifecycle.emit(PluginEvent("loaded", name, info.version))
            # A failure is recorded on the plugin (FAILED, its error, an event): raised below.
            if start:
                drive(self.lifecycle.start_steps([name]))
            else:
                with contextlib.suppress(HelixError):
                    self.lifecycle.init(name)
        record = self._record(name)
        if record.state is PluginState.FAILED and isinstance(record.error, HelixError):
            raise record.error
        return name

    def watch(self) -> HotReloader:
        """Reload plugins as their files change, in a thread of its own, until stop_watching().

        Watches the config's plugin dirs; ``HotReloader.watch`` adds more. Started by
        ``start_all`` when ``Config.hot_reload`` is set.
        """
        # Imported here: hosts that never watch do not pay for watchdog's import.
        from .hot_reload import HotReloader

        with self._lock:
            if self._reloader is None:
                self._reloader = HotReloader(self)
                self._reloader.start()
            return self._reloader

    def stop_watching(self) -> None:
        """Stop reloading on file changes; a reload under way finishes first."""
        with self._lock:
            reloader, self._reloader = self._reloader, None
        # Not under the lock: the reloader's thread may be waiting for it to reload.
        if reloader is not None:
            reloader.stop()

    def reload(self, name: str) -> None:
        """Replace ``name`` by what its files (or its installed distribution) hold now.

        A transaction (see reload.py): the new version serves, with its dependents restarted
        against it, or nothing changes and ReloadError says why. Works for directory, file and
        entry-point plugins; an entry point's metadata is read again, so a ``pip install -U``
        reloads the new version.
        """
        with self._lock:
            record = self._record(name)
            with self.lifecycle.lock:
                drive(reload_steps(self.lifecycle, name, lambda: self._current(record)))

    def _current(self, record: PluginRecord) -> PluginCandidate:
        """The candidate for ``record``'s plugin as its files or metadata read now."""
        candidate = record.candidate
        if candidate is None:
            raise ReloadError(
                "was registered by hand, so there are no files to reload it from",
                plugin=record.name,
                hint="register the new object yourself (Registry.swap), or load it from a file",
            )
        source = candidate.source
        if isinstance(source, Path):
            if not source.exists():
                raise ReloadError(
                    "its files are gone",
                    plugin=record.name,
                    path=str(source),
                    hint="put them back, or unload the plugin",
                )
            return PluginCandidate(self.discovery.get_info(source), source, candidate.kind)
        for found in self.discovery.entry_points():
            if found.info.name == record.name:
                return found
        raise ReloadError(
            "its entry point is no longer installed",
            plugin=record.name,
            path=candidate.location,
            hint="install its distribution again, or unload the plugin",
        )

    def unload(self, name: str) -> None:
        """Stop (dependents first), then drop a plugin and its modules."""
        with self._lock:
            self._unload(name)

    def _unload(self, name: str) -> None:
        record = self._record(name)
        if record.state is PluginState.STARTED:
            # Stopping cascades to its started dependents first.
            self.lifecycle.stop(name)
        version = record.info.version
        self.registry.unregister(name)
        if record.loaded is not None:
            self.loader.unload(name)
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

    def _state(self, name: str) -> PluginState | None:
        record = self.registry.get(name)
        return record.state if record is not None else None

    def _record(self, name: str) -> PluginRecord:
        return self.registry.require(name)

    def _emit(self, event: PluginEvent) -> None:
        if event.kind not in _ROUTINE_EVENTS:
            self.metrics.record_event(event.name, event.kind)
        for callback in list(self._subscribers):
            deliver(callback, event, self.logger)

    def _worker_crashed(self, name: str, proxy: ProcessPlugin, error: HelixError) -> None:
        if self._supervisor is None:
            from .isolation.supervisor import Supervisor

            self._supervisor = Supervisor(
                serving=self._worker_serving,
                fail=self.lifecycle.fail,
                restart=self.lifecycle.restart,
                emit=self._emit,
            )
        self._supervisor.crashed(name, proxy, error)

    def _worker_serving(self, name: str, proxy: ProcessPlugin, failed: bool) -> str | None:
        """The version of ``name`` if ``proxy`` is its current code (and FAILED, if asked)."""
        record = self.registry.get(name)
        if record is None or record.loaded is None or record.loaded.plugin is not proxy:
            return None
        if failed and record.state is not PluginState.FAILED:
            return None
        return record.info.version

    def _denied(self, error: PermissionDenied) -> None:
        """The guard refused a plugin something: counted, logged and published."""
        name = error.plugin or "?"
        self.metrics.record_denial(name, error.permission)
        self.logger.warning("%s", error, extra={"helix_event": True})
        record = self.registry.get(name)
        version = record.info.version if record is not None else None
        self.lifecycle.emit(PluginEvent("permission_denied", name, version, error=error))


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

    @property
    def layers(self) -> dict[str, str] | None:
        """A process plugin's confinement layers, as its worker reported them (each "active",
        "not needed" or "unavailable: why"); None for a plugin running in the host's process."""
        proxy = process_plugin(self._record.plugin)
        return None if proxy is None else dict(proxy.layers)

    def health(self) -> HealthStatus:
        return self._system.health_checker.check(self.name)

    def stats(self) -> PluginStats:
        return self._system.metrics.get_stats(self.name)

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call this plugin's own impl of ``hook_name``; returns its result, not a list.

        The call counts as the plugin's own: stopping it waits for the call to finish.
        """
        record = self._record
        loaded = record.loaded
        if loaded is not None and not loaded.gen.implements(hook_name):
            raise HelixError(
                f"does not implement hook {hook_name!r}",
                plugin=self.name,
                hint="call a hook the plugin implements: " + ", ".join(loaded.gen.hooks()),
            )
        caller = getattr(self._system.registry.pm.hook, hook_name, None)
        spec = caller.spec if caller is not None else None
        firstresult = bool(spec is not None and spec.opts.get("firstresult"))
        try:
            if loaded is None:
                raise NotServing(self.name)
            result = self._system.registry.dispatch.call(
                loaded.gen, hook_name, kwargs, firstresult=firstresult, serving=True
            )
        except NotServing:
            raise LifecycleError(
                f"cannot call {hook_name!r}: the plugin is {record.state.value}, not started",
                plugin=self.name,
                hint="start it first (system.start_all() or system.restart(name))",
            ) from None
        if firstresult:
            return result
        return result[0] if result else None

    def __repr__(self) -> str:
        record = self._system.registry.get(self.name)
        state = record.state.value if record else "gone"
        return f"<PluginHandle {self.name} {state}>"


def _object_name(plugin: object) -> str:
    """A registered object's default name: its own for a module or class, else its class's."""
    named = plugin if isinstance(plugin, (type, ModuleType)) else type(plugin)
    return str(named.__name__)


def _location(record: PluginRecord) -> str:
    return record.candidate.location if record.candidate is not None else record.name


def _import_specs(targets: Sequence[str]) -> list[object]:
    """Resolve ``"module:Attr"`` or ``"path/file.py:Attr"`` hookspec references from a config.

    Every failure is a LoadError naming the reference, the file at fault and the fix: a module
    or file that is not there, one that raises while it is imported (SystemExit included), an
    attribute it lacks, or one that is neither a class nor a module of hookspecs.
    """
    import traceback
    import types

    from .markers import PROJECT_NAME

    usage = "give hookspecs as 'module:Class' or 'file.py:Class' (relative to the config)"
    specs: list[object] = []
    for target in targets:
        module_ref, _, attr = target.partition(":")
        where = module_ref
        try:
            if module_ref.endswith(".py"):
                path = Path(module_ref)
                if not path.is_file():
                    raise LoadError(
                        f"the host's hookspecs file {target!r} does not exist",
                        path=str(path),
                        hint=usage,
                    )
                spec = importlib.util.spec_from_file_location(
                    f"helixhooks._hostspecs.{path.stem}", path
                )
                if spec is None or spec.loader is None:
                    raise LoadError(
                        f"cannot import the host's hookspecs {target!r}: not a Python file",
                        path=str(path),
                        hint=usage,
                    )
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(module_ref)
        except (LoadError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # the host's own code may raise anything: reported
            missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
            if missing and (module_ref == missing or module_ref.startswith(missing + ".")):
                raise LoadError(
                    f"cannot import the host's hookspecs {target!r}: no module named "
                    f"{module_ref!r}",
                    path=module_ref,
                    hint=f"{usage}; a module must be importable (installed, or on sys.path)",
                ) from exc
            line = ""
            if isinstance(exc, SyntaxError) and exc.filename:
                where = exc.filename
            else:
                frames = traceback.extract_tb(exc.__traceback__)
                at = next((f for f in reversed(frames) if f.name == "<module>"), None)
                if at is not None:
                    where, line = at.filename, f" (line {at.lineno})"
            what = "called sys.exit()" if isinstance(exc, SystemExit) else "raised"
            raise LoadError(
                f"the host's hookspecs {target!r} {what} while being imported: "
                f"{type(exc).__name__}: {exc}{line}",
                path=where,
                hint="fix the error in that file: the host's hookspecs must import cleanly",
            ) from exc
        where = getattr(module, "__file__", None) or module_ref
        value: object = module
        for part in attr.split(".") if attr else ():
            try:
                value = getattr(value, part)
            except AttributeError as exc:
                raise LoadError(
                    f"cannot import the host's hookspecs {target!r}: {module_ref!r} has no "
                    f"attribute {part!r}",
                    path=where,
                    hint=f"name a class or module of @hookspec functions; {usage}",
                ) from exc
        if not isinstance(value, (type, types.ModuleType)):
            raise LoadError(
                f"the host's hookspecs {target!r} name {type(value).__name__} {value!r:.40}, "
                "not a class or module of hookspecs",
                path=where,
                hint="name the class (or module) whose functions are marked @hookspec, "
                "e.g. 'myhost.specs:HostSpec'",
            )
        marker = PROJECT_NAME + "_spec"
        if not any(hasattr(getattr(value, name, None), marker) for name in dir(value)):
            raise LoadError(
                f"the host's hookspecs {target!r} hold no @hookspec function",
                path=where,
                hint="mark the host's hook functions with @helixhooks.hookspec, or name the "
                "class that holds them",
            )
        specs.append(value)
    return specs
