"""Plugin code imported from source under private module names, never from a cached ``.pyc``.

Directory and file plugins import as ``helixhooks._plugins.<name>.g<N>``; a finder on
``sys.meta_path`` answers for their submodules only, searching only the plugin's own directory,
so plugin directories never go on ``sys.path`` and a package plugin's relative imports work.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path

PRIVATE_PACKAGE = "helixhooks._plugins"
"""Parent of every private plugin module name; nothing else is imported under it."""


def private_module(name: str, generation: int) -> str:
    """``helixhooks._plugins.<name>.g<N>``; the name is escaped injectively into an identifier.

    ``_`` becomes ``__``, ``-`` becomes ``_d`` and ``.`` becomes ``_o``, so ``a-b`` and ``a_b``
    never share a module name.
    """
    safe = name.replace("_", "__").replace("-", "_d").replace(".", "_o")
    return f"{PRIVATE_PACKAGE}.{safe}.g{generation}"


class _SourceLoader(importlib.abc.Loader):
    """Executes a module from its source file (its spec's origin), never from a cached ``.pyc``.

    It keeps no state: one instance serves every module, rather than one more object per
    plugin module loaded.
    """

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        filename = spec.origin if spec is not None else None
        if filename is None:
            raise ImportError(
                f"module {module.__name__!r} has no source file", name=module.__name__
            )
        with open(filename, "rb") as source:
            code = compile(source.read(), filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)


_SOURCE_LOADER = _SourceLoader()


class _SourceSpec(importlib.machinery.ModuleSpec):
    """The spec of a module compiled from source on every import: it has no cached bytecode.

    So its module gets no ``__cached__`` naming a ``.pyc`` that is never written or read (a
    string per plugin module, for nothing).
    """

    @property
    def cached(self) -> str | None:
        return None

    @cached.setter
    def cached(self, value: str | None) -> None:
        if value is not None:
            raise AttributeError("a module compiled from source on every import has no cache")


class _PluginFinder(importlib.abc.MetaPathFinder):
    """Finds the submodules of private plugin packages, so they compile from source too.

    It answers only for names under PRIVATE_PACKAGE and searches only the parent package's
    ``__path__`` (the plugin directory), which is why plugin directories need not be on sys.path.
    ``found`` records what it found per generation's package, so unloading never has to scan
    ``sys.modules``.
    """

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}
        #: Installed top-level packages a reload imported afresh: compiled from source too.
        self.fresh: set[str] = set()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if self.fresh and fullname.partition(".")[0] in self.fresh:
            return self._from_source(fullname, path, target)
        if path is None or not fullname.startswith(PRIVATE_PACKAGE + "."):
            return None
        leaf = fullname.rpartition(".")[2]
        root = ".".join(fullname.split(".", 4)[:4])
        with FINDER_LOCK:
            self.found.setdefault(root, []).append(fullname)
        for entry in path:
            package_dir = os.path.join(entry, leaf)
            package_init = os.path.join(package_dir, "__init__.py")
            if os.path.isfile(package_init):
                return _source_spec(fullname, package_init, package_dir=package_dir)
            module_file = package_dir + ".py"
            if os.path.isfile(module_file):
                return _source_spec(fullname, module_file)
        return None

    def _from_source(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None,
    ) -> importlib.machinery.ModuleSpec | None:
        """What the finders after this one find, but executed from source if it is a .py file.

        They include an editable install's own finder, so its source files are what reloads.
        """
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if isinstance(spec.loader, importlib.machinery.SourceFileLoader) and spec.origin:
                locations = spec.submodule_search_locations
                return _source_spec(
                    fullname, spec.origin, package_dir=locations[0] if locations else None
                )
            return spec
        return None


FINDER = _PluginFinder()
FINDER_LOCK = threading.Lock()


def install_finder() -> None:
    # Ahead of the path finder, which would otherwise find plugin submodules and use their .pyc.
    with FINDER_LOCK:
        if FINDER not in sys.meta_path:
            sys.meta_path.insert(0, FINDER)


def _source_spec(
    fullname: str, filename: str, package_dir: str | None = None
) -> importlib.machinery.ModuleSpec:
    spec = _SourceSpec(
        fullname, _SOURCE_LOADER, origin=filename, is_package=package_dir is not None
    )
    spec.has_location = True  # so the module gets __file__
    if package_dir is not None:
        spec.submodule_search_locations = [package_dir]
    return spec


def absolute(path: str) -> str:
    """``path`` made absolute as ``Path.absolute`` does it; ``path`` itself if it is already.

    A plugin's path string is kept by its candidate, its package's ``__path__`` and the names
    of its files: one string, not a copy for each.
    """
    return path if os.path.isabs(path) else os.fspath(Path(path).absolute())


def import_package(private_name: str, directory: str | os.PathLike[str]) -> types.ModuleType:
    """A directory plugin as a package, so its own submodules import relatively."""
    path = os.fspath(directory)
    init = os.path.join(path, "__init__.py")
    if os.path.isfile(init):
        return _execute(_source_spec(private_name, init, package_dir=path))
    # No code of its own: a bare package module is all its submodules need (a spec would
    # cost more than the module, for every plugin loaded).
    package = types.ModuleType(private_name)
    package.__path__ = [path]
    package.__package__ = private_name
    sys.modules[private_name] = package
    return package


def import_file(private_name: str, filename: str | os.PathLike[str]) -> types.ModuleType:
    return _execute(_source_spec(private_name, os.fspath(filename)))


def _execute(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    module = importlib.util.module_from_spec(spec)
    # In sys.modules before its code runs, as the import system does, so its relative imports
    # find their parent package.
    sys.modules[spec.name] = module
    if spec.loader is not None:
        spec.loader.exec_module(module)
    return module


def fresh_package(package: str) -> dict[str, types.ModuleType]:
    """Make the next import of installed ``package`` run its current source files.

    Takes its modules out of ``sys.modules`` (returned, for the caller to put back if the new
    import fails) and has the finder compile them from source from now on: a ``.pyc`` whose
    source kept its size and mtime-second would otherwise serve the old code.
    """
    prefix = package + "."
    evicted = {
        key: module
        for key, module in list(sys.modules.items())
        if key == package or key.startswith(prefix)
    }
    for key in evicted:
        del sys.modules[key]
    install_finder()
    with FINDER_LOCK:
        FINDER.fresh.add(package)
    importlib.invalidate_caches()
    return evicted
