"""The permission policy in a running host: grants at load, denials counted and published, the
reload rule, Sandbox.execute, and the guard's bookkeeping. The attacks are in tests/security."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import helixhooks as hh
from helixhooks import _guard
from helixhooks.plugin import PluginEvent
from tests._plugins import systems, write_plugin


class Spec:
    @hh.hookspec
    def act(self, path: str) -> object: ...


WRITER = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def act(self, path):
        with open(path, "w") as file:
            file.write("{tag}")
        return "{tag}"
"""


@pytest.fixture
def make_system(plugins: Path) -> Iterator[Callable[..., hh.PluginSystem]]:
    with systems(plugins, [Spec]) as make:
        yield make


def _permissions(*texts: str) -> str:
    return "permissions = [" + ", ".join(repr(t) for t in texts) + "]\n"


def test_a_request_beyond_the_grants_fails_that_plugin_only(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "greedy", WRITER.format(tag="g"), extra=_permissions("net", "write"))
    write_plugin(plugins, "modest", WRITER.format(tag="m"), extra=_permissions(f"write={tmp_path}"))
    system = make_system(grants={"*": [f"write={tmp_path}"]})
    with system:
        greedy = system.get("greedy")
        assert greedy.state is hh.PluginState.FAILED
        assert isinstance(greedy.error, hh.LoadError)
        assert "net" in str(greedy.error) and f"write={tmp_path}" in str(greedy.error)
        assert "Config.grants" in str(greedy.error)
        assert system.hook.act(path=str(tmp_path / "out")) == ["m"]


def test_a_denial_is_raised_counted_and_published_with_the_version(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="w"), version="2.1.0")
    system = make_system()
    events: list[PluginEvent] = []
    system.subscribe(events.append)
    target = tmp_path / "forbidden.txt"
    with system:
        with pytest.raises(hh.PermissionDenied) as denied:
            system.hook.act(path=str(target))
        assert denied.value.plugin == "w" and denied.value.permission == "write"
        assert denied.value.target == str(target)
        assert not target.exists()
        assert system.get("w").stats().denials == {"write": 1}
    published = [e for e in events if e.kind == "permission_denied"]
    assert [(e.name, e.version, e.error) for e in published] == [("w", "2.1.0", denied.value)]


def test_code_at_import_and_in_the_constructor_is_the_plugins(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "eager", f"open({str(tmp_path / 'x')!r}, 'w')\n", entry="plugin")
    write_plugin(
        plugins,
        "builder",
        f"class Plugin:\n    def __init__(self):\n        open({str(tmp_path / 'y')!r}, 'w')\n",
    )
    system = make_system()
    with system:
        for name in ("eager", "builder"):
            error = system.get(name).error
            assert system.get(name).state is hh.PluginState.FAILED
            assert "PermissionDenied" in str(error) and "write" in str(error)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_with_the_sandbox_disabled_nothing_is_enforced_but_grants_still_bound_loads(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="w"))
    write_plugin(plugins, "greedy", WRITER.format(tag="g"), extra=_permissions("net"))
    system = make_system(sandbox_enabled=False, grants={"*": []})
    with system:
        assert system.hook.act(path=str(tmp_path / "free.txt")) == ["w"]
        assert (tmp_path / "free.txt").read_text() == "w"
        assert system.get("greedy").state is hh.PluginState.FAILED


def test_a_reload_that_widens_permissions_needs_the_hosts_consent(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    (tmp_path / "a").mkdir()
    write_plugin(plugins, "w", WRITER.format(tag="v1"), extra=_permissions(f"write={tmp_path}/a"))
    system = make_system()
    events: list[PluginEvent] = []
    system.subscribe(events.append)
    with system:
        write_plugin(plugins, "w", WRITER.format(tag="v2"), extra=_permissions(f"write={tmp_path}"))
        with pytest.raises(hh.ReloadError, match=r"more permissions \(write=") as refused:
            system.reload("w")
        assert "Config.grants" in str(refused.value)
        assert system.hook.act(path=str(tmp_path / "a" / "f")) == ["v1"]
        # Narrowing (or keeping) needs no consent.
        write_plugin(
            plugins, "w", WRITER.format(tag="v3"), extra=_permissions(f"write={tmp_path}/a")
        )
        system.reload("w")
        assert system.hook.act(path=str(tmp_path / "a" / "f")) == ["v3"]
    failed = [e for e in events if e.kind == "reload_failed"]
    assert len(failed) == 1 and f"write={tmp_path}" in str(failed[0].error)


def test_grants_are_the_consent_a_widening_reload_needs(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="v1"))
    system = make_system(grants={"w": [f"write={tmp_path}"]})
    with system:
        with pytest.raises(hh.PermissionDenied):
            system.hook.act(path=str(tmp_path / "f"))
        write_plugin(plugins, "w", WRITER.format(tag="v2"), extra=_permissions(f"write={tmp_path}"))
        system.reload("w")
        assert system.hook.act(path=str(tmp_path / "f")) == ["v2"]
        assert system.sandbox.check_permission("w", "write", str(tmp_path / "f"))


def test_a_rolled_back_reload_leaves_the_running_versions_permissions(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="v1"), extra=_permissions(f"write={tmp_path}"))
    system = make_system()
    with system:
        write_plugin(plugins, "w", "def broken(:\n", extra=_permissions(f"write={tmp_path}/a"))
        with pytest.raises(hh.ReloadError):
            system.reload("w")
        assert system.sandbox.check_permission("w", "write", str(tmp_path / "f"))
        assert system.hook.act(path=str(tmp_path / "f")) == ["v1"]


def test_sandbox_execute_runs_host_code_as_the_plugin(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="w"), extra=_permissions(f"write={tmp_path}/ok"))
    (tmp_path / "ok").mkdir()
    system = make_system(load_timeout=0.5)
    with system:
        sandbox = system.sandbox

        def write(path: Path) -> str:
            path.write_text("done")
            return "wrote"

        assert sandbox.execute("w", write, tmp_path / "ok" / "f") == "wrote"
        with pytest.raises(hh.PermissionDenied, match="write="):
            sandbox.execute("w", write, tmp_path / "elsewhere")
        assert not (tmp_path / "elsewhere").exists()
        assert system.get("w").stats().denials == {"write": 1}
        release = threading.Event()
        with pytest.raises(hh.PluginTimeout, match="execute"):
            sandbox.execute("w", release.wait, 30)
        release.set()
        # An unknown plugin may do nothing at all.
        with pytest.raises(hh.PermissionDenied):
            sandbox.execute("nobody", write, tmp_path / "ok" / "g")


def test_unloading_releases_the_plugins_modules_from_the_guard(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="w"))
    system = make_system()
    with system:
        write_plugin(plugins, "w", WRITER.format(tag="w2"))
        system.reload("w")
        mine = [root for root, owner in _guard._roots.items() if owner.on_denied == system._denied]
        assert len(mine) == 1, "the replaced generation is still admitted"
    system.close()
    assert not [owner for owner in _guard._roots.values() if owner.on_denied == system._denied]
    assert system.sandbox.permissions("w").permissions == ()


def test_a_thread_the_plugin_started_acts_for_it_after_the_hook_returned(
    plugins: Path,
    tmp_path: Path,
    make_system: Callable[..., hh.PluginSystem],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The thread runs only library code (Timer, then Path.write_text), after the hook returned:
    # no plugin frame is on its stack, so only its having been started by the plugin tells.
    write_plugin(
        plugins,
        "spawner",
        """
        import pathlib
        import threading
        import helixhooks as hh

        class Plugin:
            @hh.hookimpl
            def act(self, path):
                timer = threading.Timer(0.1, pathlib.Path(path).write_text, args=("x",))
                timer.start()
                return timer
        """,
    )
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    system = make_system()
    with system:
        [timer] = system.hook.act(path=str(tmp_path / "late.txt"))
        timer.join(10)
        assert len(raised) == 1 and isinstance(raised[0], hh.PermissionDenied)
        assert raised[0].plugin == "spawner"
        assert system.get("spawner").stats().denials == {"write": 1}
    assert not (tmp_path / "late.txt").exists()


def test_the_hosts_own_io_is_not_checked_while_plugins_are_loaded(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    write_plugin(plugins, "w", WRITER.format(tag="w"))
    system = make_system()
    with system:
        (tmp_path / "host.txt").write_text("the host may")
        assert (tmp_path / "host.txt").read_text() == "the host may"
        assert system.get("w").stats().denials == {}


IMPORTER = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def helix_start(self):
        import xml.dom.minidom  # its bytecode is not cached yet: the import system writes it
"""

IMPORT_HOST = """
import json, sys
import helixhooks as hh

config = hh.Config(plugin_dirs=[sys.argv[1]], entry_point_group=None)
with hh.PluginSystem(config) as system:
    handle = system.get("importer")
    print(json.dumps([handle.state.value, str(handle.error), handle.stats().denials]))
"""


def test_a_plugin_imports_modules_whose_bytecode_it_may_not_write(
    plugins: Path, tmp_path: Path
) -> None:
    write_plugin(plugins, "importer", IMPORTER)
    cache = tmp_path / "pycache"
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_HOST, str(plugins)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Imported from source; the cache write refused quietly (no denial counted, nothing logged).
    assert json.loads(done.stdout) == ["started", "None", {}]
    assert "denied" not in done.stderr
    assert not list(cache.rglob("minidom*.pyc")), "the plugin planted bytecode"
    assert list(cache.rglob("json*")), "the host's own bytecode is cached as usual"


def test_starting_the_host_s_running_thread_does_not_make_it_the_plugin_s(
    plugins: Path, tmp_path: Path, make_system: Callable[..., hh.PluginSystem]
) -> None:
    # start() refuses a thread already running; on the way, it must not be tagged as the plugin's
    # (before 3.12 the guard tags threads in a wrapped Thread.start).
    write_plugin(
        plugins,
        "starter",
        """
        import threading
        import helixhooks as hh

        class Plugin:
            @hh.hookimpl
            def act(self, path):
                threading.main_thread().start()
        """,
    )
    system = make_system()
    with system:
        with pytest.raises(RuntimeError, match="only be started once"):
            system.hook.act(path="unused")
        (tmp_path / "host.txt").write_text("the host's own write")
    assert (tmp_path / "host.txt").read_text() == "the host's own write"
