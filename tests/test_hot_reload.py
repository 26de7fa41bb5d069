"""Hot reload driven by real file changes: real inotify, real editors where installed.

"Exactly one reload" is checked against a sentinel: after the save under test, another plugin
("z") is edited and its reload awaited. Each plugin's changes settle a debounce after its last
event and are acted on in that order, so by the time z's reload is seen, any reload the save
under test could still cause has happened. No sleep stands in for an assertion.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import helixhooks as hh
from helixhooks.hot_reload import HotReloader
from helixhooks.plugin import PluginEvent
from helixhooks.watcher import Watcher
from tests._plugins import wait_for, write_plugin

DEADLINE = 15.0

PLUGIN = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def helix_stop(self):
        STOPPED.append("{tag}")

    @hh.hookimpl
    def echo(self, value):
        return ("{name}", "{tag}")

STOPPED = []
"""


class Spec:
    @hh.hookspec
    def echo(self, value: object) -> object: ...


def _code(name: str, tag: str) -> str:
    return PLUGIN.format(name=name, tag=tag)


class Host:
    """A started system watching ``plugins``, with the events it published."""

    def __init__(self, plugins: Path, **config: object) -> None:
        self.plugins = plugins
        settings: dict[str, object] = {
            "plugin_dirs": [plugins],
            "entry_point_group": None,
            "hot_reload": True,
            "debounce": 0.1,
            **config,
        }
        self.system = hh.PluginSystem(hh.Config(**settings), specs=[Spec])  # type: ignore[arg-type]
        self.events: list[PluginEvent] = []
        self.system.subscribe(self.events.append)
        self.system.load_all()
        self.system.start_all()
        self.sentinels = 0

    def answers(self) -> dict[str, str]:
        return dict(self.system.hook.echo(value=0))

    def count(self, kind: str, name: str) -> int:
        return sum(1 for e in self.events if e.kind == kind and e.name == name)

    def wait(self, kind: str, name: str, times: int = 1) -> None:
        wait_for(lambda: self.count(kind, name) >= times, f"{kind} of {name} x{times}", DEADLINE)

    def settle(self) -> None:
        """Return once every change made so far has been acted on (see the module docstring)."""
        self.sentinels += 1
        before = self.count("reloaded", "z")
        write_plugin(self.plugins, "z", _code("z", f"s{self.sentinels}"))
        self.wait("reloaded", "z", before + 1)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    write_plugin(directory, "a", _code("a", "v1"))
    write_plugin(directory, "z", _code("z", "s0"))
    return directory


@pytest.fixture
def host(plugins: Path) -> Iterator[Host]:
    made = Host(plugins)
    assert made.system._reloader is not None
    yield made
    made.system.close()


def _replace_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".save-", suffix=".tmp")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def _vim(path: Path) -> None:
    # Vim's own defaults, not vi's: back up by renaming (probing with "4913" first), even in
    # /tmp, which 'backupskip' leaves out by default.
    options = "set backupcopy=auto writebackup backupskip="
    subprocess.run(
        [
            "vim",
            "-Es",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-N",
            "-c",
            options,
            "-c",
            "%s/v1/v2/",
            "-c",
            "wq",
            str(path),
        ],
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
        check=True,
    )


def _burst(path: Path) -> None:
    for step in range(20):
        path.write_text(_code("a", "v1" if step < 19 else "v2"))
        time.sleep(0.01)


SAVES: dict[str, Callable[[Path], None]] = {
    "in-place write": lambda path: path.write_text(_code("a", "v2")),
    "atomic rename": lambda path: _replace_atomically(path, _code("a", "v2")),
    "sed -i": lambda path: subprocess.run(["sed", "-i", "s/v1/v2/", str(path)], check=True),
    "20 writes 10 ms apart": _burst,
}
if shutil.which("vim"):
    SAVES["vim"] = _vim


@pytest.mark.parametrize("save", sorted(SAVES))
def test_each_save_pattern_gives_exactly_one_reload(host: Host, plugins: Path, save: str) -> None:
    SAVES[save](plugins / "a" / "plugin.py")
    host.wait("reloaded", "a")
    assert host.answers()["a"] == "v2"
    host.settle()
    assert host.count("reloaded", "a") == 1
    assert host.count("reload_failed", "a") == 0


def test_git_checkout_of_an_older_revision_reloads_once(tmp_path: Path, plugins: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(plugins)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    (plugins / "a" / "plugin.py").write_text(_code("a", "v2"))
    subprocess.run([*git, "commit", "-qam", "v2"], check=True)
    host = Host(plugins)
    try:
        assert host.answers()["a"] == "v2"
        subprocess.run([*git, "checkout", "-q", "HEAD~1", "--", "a/plugin.py"], check=True)
        host.wait("reloaded", "a")
        assert host.answers()["a"] == "v1"
        host.settle()
        assert host.count("reloaded", "a") == 1
        # git's own files are no plugin's: never hashed, never tried as a new plugin.
        reloader = host.system._reloader
        assert reloader is not None and not any(".git" in key for key in reloader._stats)
    finally:
        host.system.close()


@pytest.mark.parametrize("change", ["touch", "identical rewrite"])
def test_a_save_that_changes_nothing_gives_no_reload(
    host: Host, plugins: Path, change: str
) -> None:
    path = plugins / "a" / "plugin.py"
    if change == "touch":
        path.touch()
    else:
        path.write_text(path.read_text())
    host.settle()
    assert host.count("reloaded", "a") == 0
    assert host.answers()["a"] == "v1"


def test_same_size_same_mtime_edit_reloads_with_bytecode_on(
    host: Host, plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = plugins / "a" / "plugin.py"
    before = path.stat()
    path.write_text(_code("a", "v9"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    host.wait("reloaded", "a")
    assert host.answers()["a"] == "v9"


def test_a_broken_save_is_refused_not_retried_and_the_next_good_save_reloads(
    host: Host, plugins: Path
) -> None:
    path = plugins / "a" / "plugin.py"
    path.write_text("import helixhooks\n\ndef broken(:\n")
    host.wait("reload_failed", "a")
    failed = next(e for e in host.events if e.kind == "reload_failed")
    assert "line 3" in str(failed.error) and str(path) in str(failed.error)
    assert host.answers()["a"] == "v1"
    # The same broken content again: not tried again.
    path.write_text("import helixhooks\n\ndef broken(:\n")
    host.settle()
    assert host.count("reload_failed", "a") == 1
    path.write_text(_code("a", "v3"))
    host.wait("reloaded", "a")
    assert host.answers()["a"] == "v3"


def test_a_deleted_plugin_is_unloaded_and_its_module_collected(host: Host, plugins: Path) -> None:
    module = sys.modules[host.system.get("a").plugin.__class__.__module__]
    stopped = module.STOPPED
    collected = weakref.ref(module)
    del module
    shutil.rmtree(plugins / "a")
    host.wait("unloaded", "a")
    assert stopped == ["v1"]
    assert "a" not in host.system.names()
    assert "a" not in host.answers()
    gc.collect()
    assert collected() is None, "the unloaded plugin's module is still referenced"


def test_a_new_plugin_file_is_loaded_and_started(host: Host, plugins: Path) -> None:
    (plugins / "fresh.py").write_text(
        'PLUGIN_INFO = {"name": "fresh", "version": "0.1.0", "entry": ":Plugin"}\n'
        + _code("fresh", "new")
    )
    host.wait("started", "fresh")
    assert host.answers()["fresh"] == "new"
    (plugins / "fresh.py").write_text(
        'PLUGIN_INFO = {"name": "fresh", "version": "0.2.0", "entry": ":Plugin"}\n'
        + _code("fresh", "newer")
    )
    host.wait("reloaded", "fresh")
    assert host.answers()["fresh"] == "newer"


def test_a_new_plugin_directory_is_loaded_once_its_manifest_is_there(
    host: Host, plugins: Path
) -> None:
    write_plugin(plugins, "late", _code("late", "1"))
    host.wait("started", "late")
    assert host.answers()["late"] == "1"
    host.settle()
    assert host.count("loaded", "late") == 1


def test_dropped_events_are_caught_by_the_rescan(plugins: Path) -> None:
    # Polling that never comes round: only the periodic rescan can see the change.
    host = Host(plugins, hot_reload=False, watch_interval=3600.0)
    watcher = Watcher(host.system.config, polling=True, rescan_every=0.2)
    reloader = HotReloader(host.system, watcher=watcher)
    reloader.start()
    try:
        (plugins / "a" / "plugin.py").write_text(_code("a", "rescanned"))
        host.wait("reloaded", "a")
        assert host.answers()["a"] == "rescanned"
    finally:
        reloader.stop()
        host.system.close()


def test_stop_watching_stops_reloading(host: Host, plugins: Path) -> None:
    host.system.stop_watching()
    assert host.system._reloader is None
    threads = [t.name for t in threading.enumerate()]
    assert "helixhooks-hot-reload" not in threads
    (plugins / "a" / "plugin.py").write_text(_code("a", "v2"))
    # Without the watcher, only an explicit reload picks the change up.
    host.system.reload("a")
    assert host.answers()["a"] == "v2"
    assert host.count("reloaded", "a") == 1


def test_helixhooks_run_watch_prints_each_reload_and_refusal(plugins: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    (plugins / "specs.py").write_text(
        "import helixhooks as hh\nclass Spec:\n    @hh.hookspec\n    def echo(self, value): ...\n"
    )
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "helixhooks",
            "run",
            "--watch",
            "--plugin-dir",
            str(plugins),
            "--hookspecs",
            f"{plugins / 'specs.py'}:Spec",
            "--duration",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert run.stdout is not None
    lines: list[str] = []

    def read_until(text: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            line = run.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if text in line:
                return
        pytest.fail(f"no {text!r} in the output:\n{''.join(lines)}")

    try:
        read_until("for changes")
        (plugins / "a" / "plugin.py").write_text("def broken(:\n")
        read_until("reload_failed a")
        (plugins / "a" / "plugin.py").write_text(_code("a", "v2"))
        read_until("reloaded a 1.0.0")
    finally:
        run.terminate()
        run.wait(DEADLINE)
    assert any("line 1" in line for line in lines)


def test_editing_a_package_submodule_reloads_the_package(host: Host, plugins: Path) -> None:
    directory = write_plugin(
        plugins,
        "pkg",
        "import helixhooks as hh\nfrom .words import word\n\nclass Plugin:\n"
        "    @hh.hookimpl\n    def echo(self, value):\n        return ('pkg', word())\n",
    )
    (directory / "words.py").write_text("def word():\n    return 'old'\n")
    host.wait("started", "pkg")
    assert host.answers()["pkg"] == "old"
    (directory / "words.py").write_text("def word():\n    return 'new'\n")
    host.wait("reloaded", "pkg")
    assert host.answers()["pkg"] == "new"


def test_a_new_plugin_is_loaded_without_retrying_the_broken_ones(host: Host, plugins: Path) -> None:
    (plugins / "broken.py").write_text(
        'PLUGIN_INFO = {"name": "broken", "version": "1.0.0"}\nraise RuntimeError("no")\n'
    )
    host.wait("failed", "broken")
    host.settle()
    attempts = host.count("failed", "broken")
    write_plugin(plugins, "late", _code("late", "1"))
    host.wait("started", "late")
    host.settle()
    assert host.count("failed", "broken") == attempts
