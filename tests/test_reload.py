"""The reload transaction, run on demand (``PluginSystem.reload``): real files, real imports."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import helixhooks as hh
from helixhooks._source_import import FINDER
from helixhooks.plugin import PluginEvent
from helixhooks.registry import HISTORY_LIMIT
from tests._plugins import pip_command, systems, write_plugin


class Spec:
    @hh.hookspec
    def echo(self, value: object) -> object: ...

    @hh.hookspec(firstresult=True)
    def first(self, value: object) -> object: ...


@pytest.fixture
def make_system(plugins: Path) -> Iterator[Callable[..., hh.PluginSystem]]:
    with systems(plugins, [Spec], load_timeout=10.0) as make:
        yield make


def _events(system: hh.PluginSystem) -> list[PluginEvent]:
    events: list[PluginEvent] = []
    system.subscribe(events.append)
    return events


ANSWER = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def echo(self, value):
        return ("{tag}", value)
"""


def test_reload_swaps_in_the_new_code_and_records_the_version(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", ANSWER.format(tag="v1"))
    system = make_system()
    events = _events(system)
    with system:
        assert system.hook.echo(value=1) == [("v1", 1)]
        write_plugin(plugins, "a", ANSWER.format(tag="v2"), version="1.1.0")
        system.reload("a")
        assert system.hook.echo(value=1) == [("v2", 1)]
        assert system.get("a").call("echo", value=2) == ("v2", 2)
        assert system.get("a").version == "1.1.0"
        assert system.get("a").state is hh.PluginState.STARTED
        assert system.registry.versions("a") == ["1.0.0", "1.1.0"]
    kinds = [(e.kind, e.name, e.version) for e in events]
    assert ("reloaded", "a", "1.1.0") in kinds
    assert [e.kind for e in events].count("reload_failed") == 0


STATEFUL = """
import helixhooks as hh

log = []

class Plugin:
    def __init__(self):
        self.counter = {{"n": 0}}
        self.config = None

    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.config = dict(config)
        log.append(("init", "{tag}"))

    @hh.hookimpl
    def helix_start(self, ctx):
        log.append(("start", "{tag}"))

    @hh.hookimpl
    def helix_stop(self, ctx):
        log.append(("stop", "{tag}", ctx.handover))

    @hh.hookimpl
    def helix_save_state(self, ctx):
        log.append(("save", "{tag}"))
        return self.counter

    @hh.hookimpl
    def helix_restore_state(self, state, ctx):
        log.append(("restore", "{tag}"))
        {restore}
        self.counter = state

    @hh.hookimpl
    def echo(self, value):
        self.counter["n"] += 1
        return ("{tag}", self.counter["n"], self.config["greeting"])
"""


def _stateful(tag: str, restore: str = "pass") -> str:
    return STATEFUL.format(tag=tag, restore=restore)


def test_state_is_handed_over_by_reference_and_init_gets_the_same_config(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", _stateful("v1"), extra='[config]\ngreeting = "manifest"\n')
    system = make_system(plugin_config={"a": {"greeting": "host"}})
    with system:
        assert system.hook.echo(value=0) == [("v1", 1, "host")]
        assert system.hook.echo(value=0) == [("v1", 2, "host")]
        old_module = system.get("a").plugin.__class__.__module__
        old_log = sys.modules[old_module].log
        write_plugin(plugins, "a", _stateful("v2"), extra='[config]\ngreeting = "manifest"\n')
        system.reload("a")
        # The same counter object: the new generation carries on from 2.
        assert system.hook.echo(value=0) == [("v2", 3, "host")]
        new_log = sys.modules[system.get("a").plugin.__class__.__module__].log
    # Old: saved, then stopped after the swap knowing it handed over. New: init exactly once,
    # restored before it started, and nothing of it ran before.
    assert old_log == [("init", "v1"), ("start", "v1"), ("save", "v1"), ("stop", "v1", True)]
    assert new_log == [("init", "v2"), ("restore", "v2"), ("start", "v2"), ("stop", "v2", False)]


BROKEN_VERSIONS = {
    "syntax error": ("def broken(:\n", "plugin.py", "line 1"),
    "import error": ("import helixhooks_no_such_module\n", "No module named", "plugin.py"),
    "bad hook signature": (
        "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n"
        "    def echo(self, value, nonsense):\n        return 1\n",
        "nonsense",
        "echo",
    ),
    "init raises": (
        "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n"
        "    def helix_init(self, config):\n        raise RuntimeError('init says no')\n"
        "    @hh.hookimpl\n    def echo(self, value):\n        return ('v2', value)\n",
        "init says no",
        "helix_init",
    ),
    "start raises": (
        "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n"
        "    def helix_start(self):\n        raise RuntimeError('start says no')\n"
        "    @hh.hookimpl\n    def echo(self, value):\n        return ('v2', value)\n",
        "start says no",
        "helix_start",
    ),
    "restore_state raises": (
        _stateful("v2", restore="raise ValueError('cannot take this state')"),
        "cannot take this state",
        "helix_restore_state",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_VERSIONS))
def test_a_broken_version_is_refused_the_old_one_serves_and_the_next_good_save_reloads(
    case: str, plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    code, *expected = BROKEN_VERSIONS[case]
    extra = '[config]\ngreeting = "hi"\n'
    write_plugin(plugins, "a", _stateful("v1"), extra=extra)
    system = make_system()
    events = _events(system)
    with system:
        assert system.hook.echo(value=0) == [("v1", 1, "hi")]
        write_plugin(plugins, "a", code, version="2.0.0", extra=extra)
        with pytest.raises(hh.ReloadError) as refused:
            system.reload("a")
        for text in expected:
            assert text in str(refused.value)
        assert "version 1.0.0 keeps serving" in str(refused.value)
        assert system.hook.echo(value=0) == [("v1", 2, "hi")]
        assert system.get("a").state is hh.PluginState.STARTED
        assert system.get("a").version == "1.0.0"
        assert system.registry.versions("a") == ["1.0.0"]
        failed = [e for e in events if e.kind == "reload_failed"]
        assert len(failed) == 1 and failed[0].error is not None
        assert all(text in str(failed[0].error) for text in expected)
        assert system.problems == []
        # The staged generation left nothing behind.
        assert len(system.loader._live["a"]) == 1
        write_plugin(plugins, "a", _stateful("v3"), version="3.0.0", extra=extra)
        system.reload("a")
        assert system.hook.echo(value=0) == [("v3", 3, "hi")]
        assert system.registry.versions("a") == ["1.0.0", "3.0.0"]


def test_a_syntax_error_names_the_file_and_line(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", ANSWER.format(tag="v1"))
    system = make_system()
    with system:
        write_plugin(plugins, "a", "import helixhooks\n\nx = (1,\n")
        with pytest.raises(hh.ReloadError) as refused:
            system.reload("a")
    assert isinstance(refused.value.__cause__, hh.LoadError)
    assert str(plugins / "a" / "plugin.py") in str(refused.value)
    assert "line 3" in str(refused.value)


LIBRARY = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def first(self, value):
        return "{tag}"
"""

USER = """
import helixhooks as hh

seen = []

class Plugin:
    @hh.hookimpl
    def helix_start(self, ctx):
        lib = ctx.hook.first(value=None)
        seen.append(("start", lib))
        if lib == "{refuse}":
            raise RuntimeError("cannot work with " + lib)
        self.lib = lib

    @hh.hookimpl
    def helix_stop(self, ctx):
        seen.append(("stop", self.lib))

    @hh.hookimpl
    def echo(self, value):
        return ("user", self.lib)
"""


def test_reloading_a_dependency_restarts_its_dependents_against_the_new_version(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "lib", LIBRARY.format(tag="lib1"))
    write_plugin(plugins, "user", USER.format(refuse="never"), dependencies=["lib ^1"])
    system = make_system()
    with system:
        assert system.hook.echo(value=0) == [("user", "lib1")]
        write_plugin(plugins, "lib", LIBRARY.format(tag="lib2"), version="1.1.0")
        system.reload("lib")
        assert system.hook.echo(value=0) == [("user", "lib2")]
        assert system.get("user").state is hh.PluginState.STARTED
        seen = sys.modules[system.get("user").plugin.__class__.__module__].seen
    assert seen == [("start", "lib1"), ("stop", "lib1"), ("start", "lib2"), ("stop", "lib2")]


def test_a_dependent_failing_against_the_new_version_rolls_both_back(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "lib", LIBRARY.format(tag="lib1"))
    write_plugin(plugins, "user", USER.format(refuse="lib2"), dependencies=["lib ^1"])
    system = make_system()
    events = _events(system)
    with system:
        write_plugin(plugins, "lib", LIBRARY.format(tag="lib2"), version="1.1.0")
        with pytest.raises(hh.ReloadError, match=r"dependent 'user'.*cannot work with lib2"):
            system.reload("lib")
        assert system.hook.first(value=None) == "lib1"
        assert system.hook.echo(value=0) == [("user", "lib1")]
        assert system.get("user").state is hh.PluginState.STARTED
        assert system.get("lib").version == "1.0.0"
        assert system.registry.versions("lib") == ["1.0.0"]
        assert len(system.loader._live["lib"]) == 1
        seen = sys.modules[system.get("user").plugin.__class__.__module__].seen
    assert seen[:4] == [("start", "lib1"), ("stop", "lib1"), ("start", "lib2"), ("start", "lib1")]
    assert [e.kind for e in events if e.name == "lib"].count("reload_failed") == 1


def test_a_version_bump_that_breaks_a_dependents_constraint_is_refused(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "lib", LIBRARY.format(tag="lib1"))
    write_plugin(plugins, "user", USER.format(refuse="never"), dependencies=["lib ^1"])
    system = make_system()
    with system:
        write_plugin(plugins, "lib", LIBRARY.format(tag="lib2"), version="2.0.0")
        with pytest.raises(hh.ReloadError) as refused:
            system.reload("lib")
        assert isinstance(refused.value.__cause__, hh.VersionConflict)
        assert "'user'" in str(refused.value) and "^1" in str(refused.value)
        assert system.hook.echo(value=0) == [("user", "lib1")]
        # The user was never stopped: the refusal came before anything changed.
        seen = sys.modules[system.get("user").plugin.__class__.__module__].seen
        assert seen == [("start", "lib1")]


def test_a_new_dependency_that_is_not_loaded_is_refused(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", ANSWER.format(tag="v1"))
    system = make_system()
    with system:
        write_plugin(plugins, "a", ANSWER.format(tag="v2"), dependencies=["ghost >=1"])
        with pytest.raises(hh.ReloadError, match="ghost"):
            system.reload("a")
        assert system.hook.echo(value=0) == [("v1", 0)]


def test_a_renamed_plugin_is_refused(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    directory = write_plugin(plugins, "a", ANSWER.format(tag="v1"))
    system = make_system()
    with system:
        toml = directory / "plugin.toml"
        toml.write_text(toml.read_text().replace('name = "a"', 'name = "b"'))
        with pytest.raises(hh.ReloadError, match="now names it 'b'"):
            system.reload("a")
        assert system.hook.echo(value=0) == [("v1", 0)]


def test_a_failed_plugin_comes_up_when_reloaded_with_a_fix(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", "def broken(:\n")
    write_plugin(plugins, "b", ANSWER.format(tag="b"), dependencies=["a"])
    system = make_system()
    with system:
        assert system.get("a").state is hh.PluginState.FAILED
        assert system.get("b").error is not None  # held back
        write_plugin(plugins, "a", "def still_broken(:\n")
        with pytest.raises(hh.ReloadError, match="reload failed"):
            system.reload("a")
        assert "still_broken" in str(system.get("a").error) or "line 1" in str(
            system.get("a").error
        )
        write_plugin(plugins, "a", ANSWER.format(tag="a"))
        system.reload("a")
        assert system.get("a").state is hh.PluginState.STARTED
        # The dependent it held back comes up with it.
        assert system.get("b").state is hh.PluginState.STARTED
        assert sorted(system.hook.echo(value=0)) == [("a", 0), ("b", 0)]
        assert system.problems == []


def test_a_stopped_plugin_gets_its_new_code_and_stays_stopped(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", ANSWER.format(tag="v1"))
    system = make_system()
    with system:
        system.lifecycle.stop("a")
        write_plugin(plugins, "a", ANSWER.format(tag="v2"), version="1.0.1")
        system.reload("a")
        assert system.get("a").state is hh.PluginState.LOADED
        assert system.hook.echo(value=0) == []
        system.lifecycle.start_all()
        assert system.hook.echo(value=0) == [("v2", 0)]


def test_editing_a_package_submodule_reloads_the_package(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    directory = write_plugin(
        plugins,
        "pkg",
        "import helixhooks as hh\nfrom .helpers import word\n\nclass Plugin:\n"
        "    @hh.hookimpl\n    def echo(self, value):\n        return word()\n",
    )
    (directory / "helpers.py").write_text("def word():\n    return 'old'\n")
    system = make_system()
    with system:
        assert system.hook.echo(value=0) == ["old"]
        # Same size, so a cached .pyc with the same mtime-second would pass as current.
        (directory / "helpers.py").write_text("def word():\n    return 'new'\n")
        system.reload("pkg")
        assert system.hook.echo(value=0) == ["new"]
        live = [m for m in sys.modules if m.startswith("helixhooks._plugins.pkg.")]
        assert len({m.split(".")[3] for m in live}) == 1  # one generation's modules remain


PORT_HOLDER = """
import socket
import subprocess
import helixhooks as hh

class Plugin:
    sock = None

    @hh.hookimpl
    def helix_start(self, ctx):
        if self.sock is None:
            # Binding again while the old generation holds the port would fail.
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", {port}))
            self.sock.listen()

    @hh.hookimpl
    def helix_save_state(self, ctx):
        return self.sock

    @hh.hookimpl
    def helix_restore_state(self, state, ctx):
        self.sock = state

    @hh.hookimpl
    def helix_stop(self, ctx):
        if not ctx.handover:
            self.sock.close()

    @hh.hookimpl
    def echo(self, value):
        return ("{tag}", self.sock.getsockname()[1])
"""


def test_a_plugin_holding_a_port_hands_it_over(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    extra = f'permissions = ["net=127.0.0.1:{port}"]\n'
    write_plugin(plugins, "server", PORT_HOLDER.format(port=port, tag="v1"), extra=extra)
    system = make_system()
    with system:
        write_plugin(plugins, "server", PORT_HOLDER.format(port=port, tag="v2"), extra=extra)
        system.reload("server")
        assert system.hook.echo(value=0) == [("v2", port)]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # still listening: the old generation's stop left the socket open
    # The last generation's own stop (no handover) closed it: the port is free again.
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


CALLED = """
import helixhooks as hh

class Plugin:
    serving = False

    @hh.hookimpl
    def helix_start(self):
        self.serving = True

    @hh.hookimpl
    def helix_stop(self):
        self.serving = False

    @hh.hookimpl{marker}
    def echo(self, value):
        return ("{name}", "{tag}", self.serving)

    @hh.hookimpl
    def first(self, value):
        return ("{name}", "{tag}", self.serving)
"""


@pytest.mark.usefixtures("fast_switching")
def test_calls_from_many_threads_during_100_reloads_never_miss_or_repeat(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    for name in ("a", "b", "c"):
        write_plugin(plugins, name, CALLED.format(name=name, tag=0, marker=""))
    system = make_system()
    failures: list[str] = []
    calls = [0]
    done = threading.Event()

    def caller() -> None:
        while not done.is_set():
            try:
                answers = system.hook.echo(value=0)
                first = system.hook.first(value=0)
            except Exception as exc:  # any exception is what this test looks for
                failures.append(f"raised {exc!r}")
                return
            calls[0] += 1
            if [a[0] for a in answers] != order:
                failures.append(f"answers {answers}")
            if not all(a[2] for a in answers) or first is None or not first[2]:
                failures.append(f"a generation not started answered: {answers} {first}")

    with system:
        order = [a[0] for a in system.hook.echo(value=0)]
        assert sorted(order) == ["a", "b", "c"]
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            for tag in range(1, 101):
                write_plugin(plugins, "b", CALLED.format(name="b", tag=tag, marker=""))
                system.reload("b")
        finally:
            done.set()
            for thread in threads:
                thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        assert calls[0] > 0
        assert [a[:2] for a in system.hook.echo(value=0)] == [
            (name, "100" if name == "b" else "0") for name in order
        ]


def test_200_reloads_leave_no_growth_behind(
    plugins: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "a", CALLED.format(name="a", tag=0, marker=""))
    write_plugin(plugins, "b", CALLED.format(name="b", tag=0, marker=""))
    system = make_system()
    with system:
        dispatch = system.registry.dispatch

        def sizes() -> tuple[int, ...]:
            hooks = vars(system.registry.pm.hook).values()
            return (
                len(sys.modules),
                sum(len(caller.get_hookimpls()) for caller in hooks),
                len(system.loader._live["a"]),
                len(FINDER.found),
                len(system.metrics.get_stats("a").hooks),
            )

        first_module = weakref.ref(sys.modules[system.get("a").plugin.__class__.__module__])
        for tag in range(1, 201):
            write_plugin(plugins, "a", CALLED.format(name="a", tag=tag, marker=""))
            system.reload("a")
            system.hook.echo(value=0)
            if tag == 10:
                before = sizes()
        assert sizes() == before
        assert len(dispatch._recent) <= 33
        assert len(system.registry.versions("a")) == HISTORY_LIMIT
        gc.collect()
        assert first_module() is None, "the first generation's module is still referenced"


ENTRY_POINT_PLUGIN = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def echo(self, value):
        return "{tag}"
"""

HOST_SCRIPT = """
import json, os, site, subprocess, sys
from pathlib import Path
site.addsitedir(sys.argv[1])
import helixhooks as hh

class Spec:
    @hh.hookspec
    def echo(self, value): ...

config = hh.Config(plugin_dirs=[], entry_point_group="helixhooks.test_reload")
answers = []
with hh.PluginSystem(config, specs=[Spec]) as system:
    answers.append([system.hook.echo(value=0), system.get("eppkg").version])
    subprocess.run(sys.argv[2:], check=True, capture_output=True)
    system.reload("eppkg")
    answers.append([system.hook.echo(value=0), system.get("eppkg").version])
    answers.append(system.registry.versions("eppkg"))
print(json.dumps(answers))
"""


def _entry_point_project(root: Path, version: str, tag: str) -> Path:
    project = root / "eppkg"
    package = project / "src" / "eppkg"
    package.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "eppkg"\nversion = "{version}"\n'
        '[project.entry-points."helixhooks.test_reload"]\neppkg = "eppkg.plugin:Plugin"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(ENTRY_POINT_PLUGIN.format(tag=tag))
    return project


def _host(target: Path, *then: str) -> list[object]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a stale .pyc must not fool the reload
    done = subprocess.run(
        [sys.executable, "-c", HOST_SCRIPT, str(target), *then],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answers: list[object] = json.loads(done.stdout)
    return answers


def test_an_editable_entry_point_plugin_reloads_from_its_changed_source(tmp_path: Path) -> None:
    project = _entry_point_project(tmp_path, "1.0.0", "v1")
    target = tmp_path / "site"
    subprocess.run(
        pip_command("--target", str(target), "-e", str(project)), check=True, timeout=300
    )
    source = project / "src" / "eppkg" / "plugin.py"
    # The edit keeps the size and the mtime, as a quick save can: only the source tells.
    edit = (
        "import os, sys; from pathlib import Path; p = Path(sys.argv[1]); s = p.stat(); "
        "p.write_text(p.read_text().replace('v1', 'v2')); os.utime(p, ns=(s.st_atime_ns, "
        "s.st_mtime_ns))"
    )
    answers = _host(target, sys.executable, "-c", edit, str(source))
    assert answers == [[["v1"], "1.0.0"], [["v2"], "1.0.0"], ["1.0.0", "1.0.0"]]


def test_an_upgraded_distribution_reloads_with_its_new_metadata(tmp_path: Path) -> None:
    target = tmp_path / "site"
    old = _entry_point_project(tmp_path / "old", "1.0.0", "v1")
    subprocess.run(pip_command("--target", str(target), str(old)), check=True, timeout=300)
    new = _entry_point_project(tmp_path / "new", "2.0.0", "v2")
    upgrade = pip_command("--upgrade", "--target", str(target), str(new))
    answers = _host(target, *upgrade)
    assert answers == [[["v1"], "1.0.0"], [["v2"], "2.0.0"], ["1.0.0", "2.0.0"]]
