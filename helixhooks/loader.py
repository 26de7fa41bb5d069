"""Import plugins under private module names, from source, and validate them before use.

Directory and file plugins are imported as ``helixhooks._plugins.<name>.g<N>``, one name per
generation, so a new version can be imported beside the one still serving. Their code is always
compiled from the source file: a ``.pyc`` whose source has the same size and mtime-second would
serve stale code on a fast reload. Entry-point plugins are installed code and import under their
real names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import attrs
import pluggy
from pluggy import HookImpl, HookspecOpts

from . import _pluggy_compat as compat
from ._dispatch import Generation
from ._load_errors import (
    constructor_error,
    import_error,
    unreached_classes,
    unreached_warning,
)
from ._operation import Outcome, Step, Steps, drive
from ._source_import import (
    FINDER,
    FINDER_LOCK,
    absolute,
    fresh_package,
    import_file,
    import_package,
    install_finder,
    private_module,
)
from .config import Config
from .discovery import MANIFEST, Discovery
from .errors import LoadError, PluginTimeout
from .hookspecs import LifecycleSpec
from .markers import PROJECT_NAME
from .plugin import PluginCandidate, PluginInfo
from .versioning import parse_constraint

if TYPE_CHECKING:
    from ._guard import PluginGuard
    from .isolation.proxy import CrashHandler, ProcessPlugin
    from .metrics import Metrics

HookspecNamespace = type | types.ModuleType

MISFIT_HINT = (
    "match the hookimpl names and arguments to the host's hookspecs, "
    "or mark a hook the host may not know with @hookimpl(optionalhook=True)"
)

# Held only for bookkeeping, never while plugin code runs: no two Loaders pick the same private
# module name, and two plugins cannot both claim one object.
_LOAD_LOCK = threading.RLock()


@attrs.frozen(eq=False)
class LoadedPlugin:
    """One imported generation of a plugin.

    ``gen`` is the generation as the dispatch layer sees it: the hookimpls validated at load
    (lifecycle hooks are called through them, one plugin at a time) and its calls in flight.
    ``modules`` are the ``sys.modules`` keys this load created, which unloading removes.
    """

    info: PluginInfo
    module: types.ModuleType
    plugin: object
    gen: Generation
    candidate: PluginCandidate | None = None
    generation: int = 1
    modules: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name


def _registered_impls(pm: pluggy.PluginManager, plugin: object) -> list[tuple[str, HookImpl]]:
    """(hook name, impl) for each impl ``pm.register`` built, in the order it added them.

    That order is by hook name (``dir()``'s, but for an impl with a ``specname``) and, within a
    hook, as registered; activating the impls in it reproduces what ``pm.register`` would do.
    """
    registered: list[tuple[str, HookImpl]] = []
    for hook_name, caller in sorted(vars(pm.hook).items()):
        impls = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin]
        # Each trylast impl went first, so a caller holds those in reverse registration order.
        ordered = [i for i in impls if not i.trylast] + [i for i in reversed(impls) if i.trylast]
        # Owned by no term yet: the plugin's first activation takes these very impls.
        registered.extend((hook_name, compat.owned_copy(impl, None, hook_name)) for impl in ordered)
    return registered


class Loader:
    """Imports plugins, validates their hookimpls on a private manager, and unloads them."""

    def __init__(
        self,
        config: Config | None = None,
        logger: logging.Logger | None = None,
        specs: Sequence[object] = (),
        metrics: Metrics | None = None,
        guard: PluginGuard | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        self.logger = logger if logger is not None else logging.getLogger("helixhooks.loader")
        self.metrics = metrics
        #: Told of each generation before its code runs, and after it is unloaded.
        self.guard = guard
        #: Told when a process plugin's worker dies while it serves (see isolation.supervisor).
        self.on_worker_crash: CrashHandler | None = None
        self._specs: list[HookspecNamespace] = [LifecycleSpec]
        self._generations: dict[str, int] = {}
        self._spec_opts: dict[tuple[HookspecNamespace, str], HookspecOpts | None] = {}
        # name -> its loaded generations, oldest first (a tuple: almost always just one)
        self._live: dict[str, tuple[LoadedPlugin, ...]] = {}
        # id of each loaded plugin object -> its plugin's name (the object is alive while it is
        # listed: _live holds it until _disown, so its id cannot be reused meanwhile)
        self._owners: dict[int, str] = {}
        # One manager with every spec validates each load in turn (registered, checked, then
        # unregistered): building one per load cost more than the validation itself.
        self._scratch: pluggy.PluginManager | None = None
        self._scratch_lock = threading.Lock()
        for spec in specs:
            self.add_hookspecs(spec)

    def add_hookspecs(self, spec: object) -> None:
        """Validate later loads against ``spec`` (a class or module of hookspecs) too."""
        namespace = hookspec_namespace(spec)
        if namespace not in self._specs:
            self._specs.append(namespace)
            with self._scratch_lock:
                self._scratch = None

    def load(self, candidate_or_path: PluginCandidate | str | os.PathLike[str]) -> LoadedPlugin:
        """Import a plugin as a new generation and validate it; a failure leaves no module behind.

        A path is read with ``Discovery.get_info`` first. The plugin's code (its module's top
        level and its class's constructor) runs bounded by ``Config.load_timeout``, outside any
        lock, so one hanging plugin delays no other load. Raises LoadError naming the plugin,
        the file at fault and, for a hook that does not fit, the hook.
        """
        return drive(self.load_steps(candidate_or_path))

    def load_steps(
        self, candidate_or_path: PluginCandidate | str | os.PathLike[str]
    ) -> Steps[LoadedPlugin]:
        """``load`` as steps, for a lifecycle operation that loads several (see _operation)."""
        candidate = self._as_candidate(candidate_or_path)
        name = candidate.info.name
        _check_requires(candidate)
        started = time.perf_counter()
        with _LOAD_LOCK:
            generation = self._generations.get(name, 0) + 1
            while private_module(name, generation) in sys.modules:
                # Another Loader's generation of a plugin with this name lives there.
                generation += 1
        private_name = private_module(name, generation)
        if self.guard is not None:
            # Before any of its code runs: a request beyond the host's grants stops it here.
            root = private_name if candidate.entry_point is None else _package(candidate)
            self.guard.admit(candidate, generation, root)
        evicted: dict[str, types.ModuleType] = {}
        if (
            candidate.entry_point is not None
            and self.loaded(name) is not None
            and not isolated(self.config, candidate.info)
        ):
            # A new generation of installed code: its package imports afresh, from source,
            # while the old generation keeps its module objects (and is put back on failure).
            evicted = fresh_package(_package(candidate))
        # Only an entry point needs to tell its new modules from the rest by a before/after
        # difference; a private package's are all under its name (and the finder records them).
        known_modules = frozenset(sys.modules) if candidate.entry_point is not None else frozenset()
        outcome: Outcome = yield Step(
            lambda: self._import(candidate, private_name),
            plugin=name,
            phase="import",
            timeout=phase_timeout(self.config, candidate.info),
        )
        if outcome.timed_out:
            sys.modules.update(evicted)
            with _LOAD_LOCK:
                # Its import runs on: the next load of this plugin must not take its name.
                self._generations[name] = max(generation, self._generations.get(name, 0))
            raise PluginTimeout(
                name,
                "import",
                self.config.load_timeout,
                hint="its module top level or constructor is still running in an abandoned "
                "thread; move slow work to helix_init or helix_start, or raise load_timeout",
            )
        try:
            if outcome.error is not None:
                raise outcome.error
            module, plugin = cast(tuple[types.ModuleType, object], outcome.value)
            impls = self._validated(name, module.__file__ or candidate.location, plugin)
            with _LOAD_LOCK:
                self._refuse_shared_object(candidate, plugin)
                loaded = LoadedPlugin(
                    info=candidate.info,
                    module=module,
                    plugin=plugin,
                    gen=Generation(name, impls),
                    candidate=candidate,
                    generation=generation,
                    modules=_created_modules(candidate, private_name, known_modules),
                )
                with FINDER_LOCK:
                    # Now in ``modules``; the finder records only what is imported later on.
                    FINDER.found.pop(private_name, None)
                self._live[name] = (*self._live.get(name, ()), loaded)
                self._owners[id(plugin)] = name
                self._generations[name] = max(generation, self._generations.get(name, 0))
        except BaseException:
            if outcome.error is None:
                _end_worker(outcome.value[1])  # type: ignore[index]  # (module, plugin)
            for key in _created_modules(candidate, private_name, known_modules):
                sys.modules.pop(key, None)
            sys.modules.update(evicted)
            if self.guard is not None:
                self.guard.release(name, generation)
            with FINDER_LOCK:
                FINDER.found.pop(private_name, None)
            raise
        seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.record_load(name, seconds)
        self.logger.debug(
            "loaded %s %s (generation %d) from %s in %.4fs",
            name,
            candidate.info.version,
            generation,
            candidate.location,
            seconds,
        )
        return loaded

    def adopt(self, info: PluginInfo, plugin: object) -> LoadedPlugin:
        """Take ``plugin``, an object or module the host already has, as a loaded plugin.

        Nothing is imported: its hookimpls are validated like a loaded plugin's, and it owns no
        modules, so unloading it removes nothing from ``sys.modules``.
        """
        name = info.name
        module = plugin if isinstance(plugin, types.ModuleType) else inspect.getmodule(plugin)
        if module is None:
            # Made at run time (exec, a REPL): its class's module name is all there is.
            module = types.ModuleType(type(plugin).__module__)
        where = getattr(module, "__file__", None) or module.__name__
        impls = self._validated(name, where, plugin)
        with _LOAD_LOCK:
            if self._owners.get(id(plugin)) is not None:
                raise LoadError(
                    f"this object is plugin {self._owners[id(plugin)]!r} already ({plugin!r})",
                    plugin=name,
                    hint="register each object once, or give each plugin an object of its own",
                )
            generation = self._generations.get(name, 0) + 1
            loaded = LoadedPlugin(
                info=info,
                module=module,
                plugin=plugin,
                gen=Generation(name, impls),
                generation=generation,
            )
            self._live[name] = (*self._live.get(name, ()), loaded)
            self._owners[id(plugin)] = name
            self._generations[name] = generation
        return loaded

    def _disown(self, loaded: LoadedPlugin) -> None:
        if self._owners.get(id(loaded.plugin)) == loaded.name:
            del self._owners[id(loaded.plugin)]

    def _refuse_shared_object(self, candidate: PluginCandidate, plugin: object) -> None:
        """Two plugins (say, two entry points) naming one object would share its hookimpls."""
        other = self._owners.get(id(plugin))
        if other is not None and other != candidate.info.name:
            raise LoadError(
                f"its entry names the same object as plugin {other!r} ({plugin!r})",
                plugin=candidate.info.name,
                path=candidate.location,
                hint="give each plugin an object of its own, or remove one of the two entry points",
            )

    def loaded(self, name: str) -> LoadedPlugin | None:
        """The newest generation of ``name`` still loaded, or None."""
        with _LOAD_LOCK:
            generations = self._live.get(name)
            return generations[-1] if generations else None

    def unload(self, name: str) -> None:
        """Remove every loaded generation of ``name`` from ``sys.modules`` and forget it.

        Metrics are the caller's to forget: a reload keeps them.
        """
        with _LOAD_LOCK:
            generations = self._live.pop(name, ())
            for loaded in generations:
                self._disown(loaded)
                _drop_modules(loaded, keep=())
                if self.guard is not None:
                    self.guard.release(name, loaded.generation)
        for loaded in generations:
            _end_worker(loaded.plugin)
        if generations:
            self.logger.debug("unloaded %s", name)

    def discard(self, loaded: LoadedPlugin) -> None:
        """Remove one generation's modules, e.g. the old one after a hot reload swapped it out.

        Other generations of the same plugin stay loaded; metrics are kept.
        """
        with _LOAD_LOCK:
            rest = tuple(g for g in self._live.get(loaded.name, ()) if g is not loaded)
            if rest:
                self._live[loaded.name] = rest
            else:
                self._live.pop(loaded.name, None)
            self._disown(loaded)
            # An entry point's generations share module names: the newer one's stay.
            _drop_modules(loaded, keep=rest)
            if self.guard is not None:
                self.guard.release(loaded.name, loaded.generation)
        _end_worker(loaded.plugin)
        self.logger.debug("discarded %s generation %d", loaded.name, loaded.generation)

    def _as_candidate(
        self, candidate_or_path: PluginCandidate | str | os.PathLike[str]
    ) -> PluginCandidate:
        if isinstance(candidate_or_path, PluginCandidate):
            return candidate_or_path
        path = Path(candidate_or_path)
        info = Discovery(self.config).get_info(path)
        if path.name == MANIFEST:
            path = path.parent
        return PluginCandidate(info, path, "directory" if path.is_dir() else "file")

    def _import(
        self, candidate: PluginCandidate, private_name: str
    ) -> tuple[types.ModuleType, object]:
        """The entry module and the object to register with pluggy."""
        info = candidate.info
        if isolated(self.config, info):
            # A stand-in, never in sys.modules: the plugin's modules are in its worker.
            module = types.ModuleType(private_name)
            module.__file__ = candidate.location
            return module, self._start_worker(candidate)
        # Read without making a Path: making one parses and interns the path's parts.
        entry_point, path = candidate.entry_point, candidate.fspath
        if entry_point is not None:
            module_name, attribute = entry_point.module, entry_point.attr or None
            module = self._run_import(candidate, lambda: importlib.import_module(module_name))
        else:
            assert path is not None  # a directory or file plugin
            # The candidate's own string (see absolute), not one more made from a Path.
            root = absolute(path)
            module_name, _, attribute_text = (info.entry or "__init__").partition(":")
            attribute = attribute_text or None
            install_finder()
            if candidate.kind == "directory":
                module = self._run_import(candidate, lambda: import_package(private_name, root))
                if module_name != "__init__":
                    module = self._run_import(
                        candidate,
                        lambda: importlib.import_module(f"{private_name}.{module_name}"),
                    )
            else:
                module = self._run_import(candidate, lambda: import_file(private_name, root))
        return module, self._entry_object(candidate, module, module_name, attribute)

    def _start_worker(self, candidate: PluginCandidate) -> object:
        """A process plugin: its code runs in a confined worker; the host holds a proxy."""
        # Only hosts with process plugins pay for importing these.
        from ._guard import base_directory
        from .isolation import proxy
        from .security import granted

        if self.guard is not None:
            permissions = self.guard.sandbox.permissions(candidate.info.name)
        else:
            permissions = granted(candidate.info, self.config, base_directory(candidate))
        return proxy.start(candidate, permissions, self.config, on_crash=self.on_worker_crash)

    def _run_import(
        self, candidate: PluginCandidate, do_import: Callable[[], types.ModuleType]
    ) -> types.ModuleType:
        """Run ``do_import``; whatever the plugin's code raises becomes a LoadError.

        SystemExit (a plugin calling ``sys.exit()``) and the other BaseExceptions too: a plugin
        must not take the host down. Only a real Ctrl-C (KeyboardInterrupt) goes through.
        """
        try:
            return do_import()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # plugin code may raise anything: reported, never lost
            raise import_error(candidate, exc) from exc

    def _entry_object(
        self,
        candidate: PluginCandidate,
        module: types.ModuleType,
        module_name: str,
        attribute: str | None,
    ) -> object:
        """Resolve ``module:attribute``; a class is instantiated with no arguments.

        Without an attribute the module itself is the plugin; if it has no hookimpl of its own
        but a class in it has some, those would never run, which is logged as a warning.
        """
        if attribute is None:
            unreached = unreached_classes(module)
            if unreached:
                self.logger.warning("%s", unreached_warning(candidate, module_name, unreached))
            return module
        target: object = module
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError as exc:
                raise LoadError(
                    f"entry {module_name}:{attribute} names {part!r}, "
                    f"which module {module_name!r} does not define",
                    plugin=candidate.info.name,
                    path=module.__file__ or candidate.location,
                    hint="define it in the module, or fix entry in the plugin's manifest",
                ) from exc
        if not isinstance(target, type):
            return target
        try:
            return target()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # plugin code may raise anything: reported, never lost
            raise constructor_error(candidate, attribute, module, exc) from exc

    def _validate(self, name: str, plugin: object) -> list[tuple[str, HookImpl]]:
        """Parse and check ``plugin``'s hookimpls on the scratch manager with every spec.

        Returns (hook name, impl) in ``pm.register``'s order; the plugin leaves the manager
        again, so a loaded plugin costs its impls and nothing more.
        """
        with self._scratch_lock:
            pm = self._scratch
            if pm is None:
                pm = self._scratch = _PrivateManager(self._spec_opts)
                for spec in self._specs:
                    pm.add_hookspecs(spec)
            try:
                pm.register(plugin, name=name)
                pm.check_pending()
                impls = _registered_impls(pm, plugin)
                pm.unregister(plugin)
            except BaseException:
                # pluggy may leave a half-registered plugin behind (1.4 does): start afresh.
                self._scratch = None
                raise
            return impls

    def _validated(self, name: str, where: str, plugin: object) -> list[tuple[str, HookImpl]]:
        """``_validate``; a hook that does not fit is a LoadError naming ``where`` (its file)."""
        try:
            return self._validate(name, plugin)
        except pluggy.PluginValidationError as exc:
            raise LoadError(
                "hookimpl does not fit the host's hookspecs: " + "; ".join(str(exc).splitlines()),
                plugin=name,
                path=where,
                hint=MISFIT_HINT,
            ) from exc


class _PrivateManager(pluggy.PluginManager):
    """A plugin's private manager, taking hookspec options from its Loader's cache of them.

    Every load adds the same hookspec namespaces, and pluggy would read each of them with
    ``inspect.getattr_static`` again for every plugin.
    """

    def __init__(self, spec_opts: dict[tuple[HookspecNamespace, str], HookspecOpts | None]) -> None:
        super().__init__(PROJECT_NAME)
        self._spec_opts = spec_opts

    def parse_hookspec_opts(
        self, module_or_class: HookspecNamespace, name: str
    ) -> HookspecOpts | None:
        key = (module_or_class, name)
        if key not in self._spec_opts:
            self._spec_opts[key] = super().parse_hookspec_opts(module_or_class, name)
        return self._spec_opts[key]


def _check_requires(candidate: PluginCandidate) -> None:
    """Refuse a plugin whose ``requires`` does not admit this helixhooks."""
    from . import __version__  # the package is fully imported by the time plugins load

    requires = candidate.info.requires
    if requires is not None and not parse_constraint(requires).matches(__version__):
        raise LoadError(
            f"requires helixhooks {requires}, but helixhooks {__version__} is running",
            plugin=candidate.info.name,
            path=candidate.location,
            hint=f"install a helixhooks that satisfies {requires!r}, or use a version of the "
            "plugin made for this one",
        )


def hookspec_namespace(spec: object) -> HookspecNamespace:
    """``spec`` as pluggy takes it: hookspecs live on a class or a module."""
    if not isinstance(spec, (type, types.ModuleType)):
        raise TypeError(f"hookspecs must be a class or a module, not {type(spec).__name__}")
    return spec


def _created_modules(
    candidate: PluginCandidate, private_name: str, known: frozenset[str]
) -> tuple[str, ...]:
    """The ``sys.modules`` keys this load added: its private package and what is under it.

    For an entry point, only its own package: a first import of json or requests by the plugin
    is not the plugin's to remove.
    """
    if candidate.entry_point is None:
        with FINDER_LOCK:
            found = list(FINDER.found.get(private_name, ()))
        return tuple(sorted(k for k in {private_name, *found} if k in sys.modules))
    package = _package(candidate)
    prefix = package + "."
    # The set difference runs in C; only entry-point loads pay it.
    added = sys.modules.keys() - known
    return tuple(sorted(key for key in added if key == package or key.startswith(prefix)))


def isolated(config: Config, info: PluginInfo) -> bool:
    """Whether the plugin runs in a worker process: the host's Config.isolation decides first."""
    return (config.isolation or info.isolation) == "process"


#: A process plugin's phases are bounded by its proxy, which kills the worker at load_timeout;
#: the thread running the phase waits this much longer, so that the kill is what ends it.
WORKER_GRACE = 5.0


def phase_timeout(config: Config, info: PluginInfo) -> float:
    """How long an import or lifecycle phase of the plugin may take before it is abandoned."""
    return config.load_timeout + (WORKER_GRACE if isolated(config, info) else 0.0)


def process_plugin(plugin: object) -> ProcessPlugin | None:
    """``plugin`` if it is a process plugin's proxy. Asks only once the process tier is loaded:
    hosts without process plugins never import it."""
    proxy = sys.modules.get("helixhooks.isolation.proxy")
    return plugin if proxy is not None and isinstance(plugin, proxy.ProcessPlugin) else None


def _end_worker(plugin: object) -> None:
    """A process plugin's worker ends with its generation (never under _LOAD_LOCK: it waits)."""
    proxy = process_plugin(plugin)
    if proxy is not None:
        proxy.close()


def _package(candidate: PluginCandidate) -> str:
    """An installed plugin's top-level package: its modules are under it."""
    entry_point = candidate.entry_point
    assert entry_point is not None, "a directory or file plugin has a private package"
    return entry_point.module.partition(".")[0]


def _drop_modules(loaded: LoadedPlugin, keep: Sequence[LoadedPlugin]) -> None:
    # The finder's record also holds submodules the plugin imported lazily, after load.
    root = private_module(loaded.name, loaded.generation)
    with FINDER_LOCK:
        found = FINDER.found.pop(root, [])
    kept = {key for other in keep for key in other.modules}
    for key in {*loaded.modules, *found} - kept:
        sys.modules.pop(key, None)
