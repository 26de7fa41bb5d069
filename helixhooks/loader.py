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
import logging
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pluggy
from pluggy import HookspecOpts

from .config import Config
from .discovery import MANIFEST, Discovery
from .errors import LoadError
from .hookspecs import LifecycleSpec
from .markers import PROJECT_NAME
from .plugin import PluginCandidate, PluginInfo

if TYPE_CHECKING:
    from .metrics import Metrics

PRIVATE_PACKAGE = "helixhooks._plugins"
"""Parent of every private plugin module name; nothing else is imported under it."""

HookspecNamespace = type | types.ModuleType

MISFIT_HINT = (
    "match the hookimpl names and arguments to the host's hookspecs, "
    "or mark a hook the host may not know with @hookimpl(optionalhook=True)"
)
_FIX_CODE = "fix the error in the plugin's code; it is not loaded until it imports cleanly"

# One load at a time in the process, across Loaders: generation numbers stay consecutive, no two
# Loaders pick the same private module name, and an entry-point load can tell which new
# sys.modules keys are its own.
_LOAD_LOCK = threading.RLock()


@attrs.frozen(eq=False)
class LoadedPlugin:
    """One imported generation of a plugin.

    ``pm`` is a private manager holding only this plugin: lifecycle hooks are called through it one
    plugin at a time, and it is where the plugin was validated. ``modules`` are the ``sys.modules``
    keys this load created, which unloading removes.
    """

    info: PluginInfo
    module: types.ModuleType
    plugin: object
    pm: pluggy.PluginManager
    candidate: PluginCandidate | None = None
    generation: int = 1
    modules: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.info.name


class Loader:
    """Imports plugins, validates their hookimpls on a private manager, and unloads them."""

    def __init__(
        self,
        config: Config | None = None,
        logger: logging.Logger | None = None,
        specs: Sequence[object] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        self.logger = logger if logger is not None else logging.getLogger("helixhooks.loader")
        self.metrics = metrics
        self._specs: list[HookspecNamespace] = [LifecycleSpec]
        for spec in specs:
            self.add_hookspecs(spec)
        self._generations: dict[str, int] = {}
        self._spec_opts: dict[tuple[HookspecNamespace, str], HookspecOpts | None] = {}
        self._live: dict[str, list[LoadedPlugin]] = {}

    def add_hookspecs(self, spec: object) -> None:
        """Validate later loads against ``spec`` (a class or module of hookspecs) too."""
        namespace = hookspec_namespace(spec)
        if namespace not in self._specs:
            self._specs.append(namespace)

    def load(self, candidate_or_path: PluginCandidate | str | os.PathLike[str]) -> LoadedPlugin:
        """Import a plugin as a new generation and validate it; a failure leaves no module behind.

        A path is read with ``Discovery.get_info`` first. Raises LoadError naming the plugin, the
        file at fault and, for a hook that does not fit, the hook.
        """
        candidate = self._as_candidate(candidate_or_path)
        name = candidate.info.name
        with _LOAD_LOCK:
            started = time.perf_counter()
            generation = self._generations.get(name, 0) + 1
            while _private_name(name, generation) in sys.modules:
                # Another Loader's generation of a plugin with this name lives there.
                generation += 1
            private_name = _private_name(name, generation)
            known_modules = frozenset(sys.modules)
            try:
                module, plugin = self._import(candidate, private_name)
                pm = self._validate(candidate, module, plugin)
            except BaseException:
                for key in _created_modules(candidate, private_name, known_modules):
                    sys.modules.pop(key, None)
                raise
            loaded = LoadedPlugin(
                info=candidate.info,
                module=module,
                plugin=plugin,
                pm=pm,
                candidate=candidate,
                generation=generation,
                modules=_created_modules(candidate, private_name, known_modules),
            )
            self._generations[name] = generation
            self._live.setdefault(name, []).append(loaded)
            seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.install(pm)
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
            generations = self._live.pop(name, [])
            for loaded in generations:
                _drop_modules(loaded)
        if generations:
            self.logger.debug("unloaded %s", name)

    def discard(self, loaded: LoadedPlugin) -> None:
        """Remove one generation's modules, e.g. the old one after a hot reload swapped it out.

        Other generations of the same plugin stay loaded; metrics are kept.
        """
        with _LOAD_LOCK:
            generations = self._live.get(loaded.name, [])
            if loaded in generations:
                generations.remove(loaded)
                if not generations:
                    del self._live[loaded.name]
            _drop_modules(loaded)
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
        source = candidate.source
        if isinstance(source, EntryPoint):
            module_name, attribute = source.module, source.attr or None
            module = self._run_import(candidate, lambda: importlib.import_module(module_name))
        else:
            root = source.absolute()
            module_name, _, attribute_text = (info.entry or "__init__").partition(":")
            attribute = attribute_text or None
            _install_finder()
            if candidate.kind == "directory":
                module = self._run_import(candidate, lambda: _import_package(private_name, root))
                if module_name != "__init__":
                    module = self._run_import(
                        candidate,
                        lambda: importlib.import_module(f"{private_name}.{module_name}"),
                    )
            else:
                module = self._run_import(candidate, lambda: _import_file(private_name, root))
        return module, self._entry_object(candidate, module, module_name, attribute)

    def _run_import(
        self, candidate: PluginCandidate, do_import: Callable[[], types.ModuleType]
    ) -> types.ModuleType:
        try:
            return do_import()
        except Exception as exc:
            raise LoadError(
                f"import failed: {type(exc).__name__}: {exc}",
                plugin=candidate.info.name,
                path=_fault_file(exc, candidate),
                hint=_FIX_CODE,
            ) from exc

    def _entry_object(
        self,
        candidate: PluginCandidate,
        module: types.ModuleType,
        module_name: str,
        attribute: str | None,
    ) -> object:
        """Resolve ``module:attribute``; a class is instantiated with no arguments."""
        if attribute is None:
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
        except Exception as exc:
            raise LoadError(
                f"entry class {attribute} could not be instantiated: {type(exc).__name__}: {exc}",
                plugin=candidate.info.name,
                path=_fault_file(exc, candidate, module.__file__),
                hint="the entry class must be constructible with no arguments",
            ) from exc

    def _validate(
        self, candidate: PluginCandidate, module: types.ModuleType, plugin: object
    ) -> pluggy.PluginManager:
        """Register ``plugin`` alone on a fresh manager with every spec, so a misfit fails here."""
        pm = _PrivateManager(self._spec_opts)
        for spec in self._specs:
            pm.add_hookspecs(spec)
        try:
            pm.register(plugin, name=candidate.info.name)
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise LoadError(
                "hookimpl does not fit the host's hookspecs: " + "; ".join(str(exc).splitlines()),
                plugin=candidate.info.name,
                path=module.__file__ or candidate.location,
                hint=MISFIT_HINT,
            ) from exc
        return pm


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


def hookspec_namespace(spec: object) -> HookspecNamespace:
    """``spec`` as pluggy takes it: hookspecs live on a class or a module."""
    if not isinstance(spec, (type, types.ModuleType)):
        raise TypeError(f"hookspecs must be a class or a module, not {type(spec).__name__}")
    return spec


def _private_name(name: str, generation: int) -> str:
    """``helixhooks._plugins.<name>.g<N>``; the name is escaped injectively into an identifier.

    ``_`` becomes ``__``, ``-`` becomes ``_d`` and ``.`` becomes ``_o``, so ``a-b`` and ``a_b``
    never share a module name.
    """
    safe = name.replace("_", "__").replace("-", "_d").replace(".", "_o")
    return f"{PRIVATE_PACKAGE}.{safe}.g{generation}"


def _private_modules(private_name: str) -> tuple[str, ...]:
    prefix = private_name + "."
    return tuple(
        sorted(key for key in list(sys.modules) if key == private_name or key.startswith(prefix))
    )


def _created_modules(
    candidate: PluginCandidate, private_name: str, known: frozenset[str]
) -> tuple[str, ...]:
    """The ``sys.modules`` keys this load added: its private package and what is under it.

    For an entry point, only its own package: a first import of json or requests by the plugin
    is not the plugin's to remove.
    """
    if isinstance(candidate.source, EntryPoint):
        package = candidate.source.module.partition(".")[0]
    else:
        package = private_name
    prefix = package + "."
    # The set difference runs in C: scanning every module name per load would grow with the
    # number of plugins loaded.
    added = sys.modules.keys() - known
    return tuple(sorted(key for key in added if key == package or key.startswith(prefix)))


def _drop_modules(loaded: LoadedPlugin) -> None:
    # Sweeping the private prefix also catches submodules the plugin imported lazily, after load.
    keys = set(loaded.modules) | set(
        _private_modules(_private_name(loaded.name, loaded.generation))
    )
    for key in keys:
        sys.modules.pop(key, None)


def _fault_file(exc: BaseException, candidate: PluginCandidate, fallback: str | None = None) -> str:
    """The plugin file an exception comes from: the innermost traceback frame inside the plugin."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename
    if not isinstance(candidate.source, EntryPoint):
        root = Path(candidate.source).absolute()
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if Path(frame.filename).is_relative_to(root):
                return frame.filename
        return fallback or str(root)
    return fallback or candidate.location


class _SourceLoader(importlib.abc.Loader):
    """Executes a module from its source file, never from a cached ``.pyc``."""

    def __init__(self, filename: Path) -> None:
        self.filename = filename

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        code = compile(self.filename.read_bytes(), str(self.filename), "exec", dont_inherit=True)
        exec(code, module.__dict__)


class _PluginFinder(importlib.abc.MetaPathFinder):
    """Finds the submodules of private plugin packages, so they compile from source too.

    It answers only for names under PRIVATE_PACKAGE and searches only the parent package's
    ``__path__`` (the plugin directory), which is why plugin directories need not be on sys.path.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None or not fullname.startswith(PRIVATE_PACKAGE + "."):
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            package_init = Path(entry, leaf, "__init__.py")
            if package_init.is_file():
                return _source_spec(fullname, package_init, package_dir=package_init.parent)
            module_file = Path(entry, leaf + ".py")
            if module_file.is_file():
                return _source_spec(fullname, module_file)
        return None


_FINDER = _PluginFinder()
_FINDER_LOCK = threading.Lock()


def _install_finder() -> None:
    # Ahead of the path finder, which would otherwise find plugin submodules and use their .pyc.
    with _FINDER_LOCK:
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def _source_spec(
    fullname: str, filename: Path, package_dir: Path | None = None
) -> importlib.machinery.ModuleSpec:
    spec = importlib.util.spec_from_file_location(
        fullname,
        filename,
        loader=_SourceLoader(filename),
        submodule_search_locations=[str(package_dir)] if package_dir is not None else None,
    )
    assert spec is not None, "a spec from an explicit loader is never None"
    return spec


def _import_package(private_name: str, directory: Path) -> types.ModuleType:
    """A directory plugin as a package, so its own submodules import relatively."""
    init = directory / "__init__.py"
    if init.is_file():
        spec = _source_spec(private_name, init, package_dir=directory)
    else:
        spec = importlib.machinery.ModuleSpec(private_name, None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
    return _execute(spec)


def _import_file(private_name: str, filename: Path) -> types.ModuleType:
    return _execute(_source_spec(private_name, filename))


def _execute(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    module = importlib.util.module_from_spec(spec)
    # In sys.modules before its code runs, as the import system does, so its relative imports
    # find their parent package.
    sys.modules[spec.name] = module
    if spec.loader is not None:
        spec.loader.exec_module(module)
    return module
