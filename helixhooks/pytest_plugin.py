"""pytest fixtures for plugin authors, registered through the ``pytest11`` entry point.

- ``helix_plugin_dir``: a temporary plugin directory to write plugins into, edit and remove.
- ``helix_system``: a factory of started PluginSystems over plugin directories and plugin
  objects, each closed when the test ends. The test then fails if a thread or child process
  started during it is still running: a plugin thread that ``helix_stop`` did not end, a call
  abandoned at its time limit, a worker process left behind.
- ``helix_reload_check``: reloads a plugin N times and fails if that leaves modules, threads or
  child processes behind.

::

    def test_my_plugin(helix_plugin_dir, helix_system):
        helix_plugin_dir.add("mine", MINE_SOURCE, config={"threshold": 0.5})
        system = helix_system(helix_plugin_dir, specs=[MyHostSpec])
        assert system.get("mine").call("analyze", text="x") == {...}

How long the leak checks wait for threads and processes to end is the ini option
``helix_leak_timeout`` (seconds, default 2).
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ._leaks import Snapshot
from ._source_import import private_module
from ._toml import dumps
from .config import Config
from .discovery import MANIFEST
from .plugin import PluginState
from .system import PluginSystem

SystemFactory = Callable[..., PluginSystem]
ReloadCheck = Callable[..., None]

_LEAK_TIMEOUT = "helix_leak_timeout"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _LEAK_TIMEOUT,
        "seconds helixhooks' fixtures wait for threads and child processes to end before "
        "failing a test that leaves them running",
        default="2",
    )


class PluginDir:
    """A plugin directory for one test; ``os.fspath`` of it is its path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(
        self,
        name: str,
        source: str,
        version: str = "1.0.0",
        entry: str | None = None,
        **manifest: Any,
    ) -> Path:
        """Write plugin ``name`` as ``<path>/<name>/plugin.toml`` and ``plugin.py``; its directory.

        ``source`` is dedented. Without ``entry``, the one class in it with hookimpls is the
        plugin (``plugin:ThatClass``), or else the module itself. Other manifest keys go into
        ``[plugin]`` (``dependencies=["base ^1"]``, ``permissions=[...]``), except ``config``,
        which is the ``[config]`` table. Adding a plugin again rewrites it.
        """
        directory = self.path / name
        directory.mkdir(parents=True, exist_ok=True)
        source = textwrap.dedent(source)
        table: dict[str, Any] = {"name": name, "version": version}
        entry = entry if entry is not None else _default_entry(source)
        if entry is not None:
            table["entry"] = entry
        config = manifest.pop("config", None)
        document: dict[str, Any] = {"plugin": {**table, **manifest}}
        if config is not None:
            document["config"] = config
        (directory / MANIFEST).write_text(dumps(document), encoding="utf-8")
        self.edit(name, source)
        return directory

    def edit(self, name: str, source: str) -> Path:
        """Rewrite plugin ``name``'s ``plugin.py`` (dedented); returns the file.

        Its modification time moves forward even within the clock's resolution, so anything
        that compares sizes and times sees the change too (a reload compares contents).
        """
        file = self.path / name / "plugin.py"
        before = file.stat().st_mtime_ns if file.exists() else 0
        file.write_text(textwrap.dedent(source), encoding="utf-8")
        after = file.stat()
        if after.st_mtime_ns <= before:
            os.utime(file, ns=(after.st_atime_ns, before + 1))
        return file

    def remove(self, name: str) -> None:
        """Delete plugin ``name``'s directory."""
        shutil.rmtree(self.path / name)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<PluginDir {self.path}>"


def _default_entry(source: str) -> str | None:
    """``plugin:Class`` for the one class of ``source`` with hookimpls, unless the module has
    hookimpls of its own (then it is the plugin, as discovery takes it without an entry)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # a test of a broken plugin: the loader reports it
    if any(_is_hookimpl(node) for node in tree.body):
        return None
    classes = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(_is_hookimpl(item) for item in node.body)
    ]
    return f"plugin:{classes[0]}" if len(classes) == 1 else None


def _is_hookimpl(node: ast.stmt) -> bool:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "hookimpl":
            return True
    return False


@pytest.fixture
def helix_plugin_dir(tmp_path: Path) -> PluginDir:
    """An empty plugin directory (``.path``) with ``add``, ``edit`` and ``remove``."""
    directory = tmp_path / "helix_plugins"
    directory.mkdir()
    return PluginDir(directory)


@pytest.fixture
def helix_system(request: pytest.FixtureRequest) -> Iterator[SystemFactory]:
    """Factory: ``helix_system(*dirs_or_plugin_objects, specs=(), start=True, **config)``.

    Paths (and ``helix_plugin_dir``) are the plugin dirs; any other argument is a plugin
    object, registered by its class's name (``PluginSystem.register``). ``config`` holds Config
    keys; entry points are off unless ``entry_point_group`` is given. The system is loaded and,
    unless ``start`` is false, started. At the end of the test every system made is closed,
    and the test fails if a thread or child process started during it still runs.
    """
    before = Snapshot.take()
    systems: list[PluginSystem] = []

    def make(
        *sources: object, specs: Sequence[object] = (), start: bool = True, **config: Any
    ) -> PluginSystem:
        plugin_dirs = [s for s in sources if isinstance(s, (str, os.PathLike))]
        objects = [s for s in sources if not isinstance(s, (str, os.PathLike))]
        config.setdefault("entry_point_group", None)
        system = PluginSystem(Config(plugin_dirs=plugin_dirs, **config), specs=specs)
        systems.append(system)
        system.load_all()
        for plugin in objects:
            system.register(plugin, start=False)
        if start:
            system.start_all()
        return system

    yield make
    for system in reversed(systems):
        system.close()
    _fail_on_leftovers(
        before.leftovers(_leak_timeout(request)),
        "still running after the test's helixhooks systems were closed",
    )


@pytest.fixture
def helix_reload_check(request: pytest.FixtureRequest) -> ReloadCheck:
    """``helix_reload_check(system, name, times=10, edit=None)``: reload, then look for leaks.

    Reloads plugin ``name`` once to warm up, then ``times`` times more, calling ``edit(i)``
    before each reload if given (to change the plugin's files, say with
    ``helix_plugin_dir.edit``). Fails if a reload is refused, if the plugin is not started
    after one, or if the reloads left modules in ``sys.modules``, threads or child processes
    behind (each generation's ``helix_stop`` must end what its ``helix_start`` began).
    """
    timeout = _leak_timeout(request)

    def check(
        system: PluginSystem,
        name: str,
        times: int = 10,
        edit: Callable[[int], object] | None = None,
    ) -> None:
        def reload(i: int) -> None:
            if edit is not None:
                edit(i)
            system.reload(name)
            state = system.get(name).state
            if state is not PluginState.STARTED:
                pytest.fail(f"plugin {name!r} is {state.value} after reload {i}", pytrace=False)

        reload(0)  # a first reload may import what the plugin imports lazily
        modules = _modules_but_own(system, name)
        before = Snapshot.take()
        for i in range(1, times + 1):
            reload(i)
        added = sorted(_modules_but_own(system, name) - modules)
        leftovers = [f"module {module!r}" for module in added]
        # Each reload's new generation may stand in for the old one's threads and workers.
        leftovers += before.leftovers(timeout, replacing=True)
        _fail_on_leftovers(leftovers, f"left behind by {times} reloads of plugin {name!r}")

    return check


def _modules_but_own(system: PluginSystem, name: str) -> set[str]:
    """``sys.modules`` but the modules of plugin ``name``'s generation now serving."""
    loaded = system.registry.require(name).loaded
    modules = set(sys.modules)
    if loaded is None:
        return modules
    own = set(loaded.modules)
    root = private_module(name, loaded.generation)
    return {m for m in modules - own if m != root and not m.startswith(root + ".")}


def _leak_timeout(request: pytest.FixtureRequest) -> float:
    return float(request.config.getini(_LEAK_TIMEOUT))


def _fail_on_leftovers(leftovers: list[str], what: str) -> None:
    if leftovers:
        lines = "\n".join(f"  {line}" for line in leftovers)
        pytest.fail(f"{len(leftovers)} thing(s) {what}:\n{lines}", pytrace=False)
