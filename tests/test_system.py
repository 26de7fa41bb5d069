"""PluginSystem end to end, with real plugin files on disk."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

import helixhooks as hh
from helixhooks.plugin import PluginEvent

from ._plugins import EchoSpec, wait_for, write_plugin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _system(plugin_dir: Path) -> hh.PluginSystem:
    return hh.PluginSystem(
        hh.Config(plugin_dirs=[plugin_dir], entry_point_group=None), specs=[EchoSpec]
    )


def _examples_system() -> hh.PluginSystem:
    config = attrs.evolve(hh.Config.from_file(EXAMPLES / "helixhooks.toml"), entry_point_group=None)
    return hh.PluginSystem(config)


def test_examples_start_in_dependency_order_and_serve() -> None:
    system = _examples_system()
    events: list[PluginEvent] = []
    system.subscribe(events.append)
    with system:
        started = [e.name for e in events if e.kind == "started"]
        assert set(started) == {"tokenizer", "analyzer", "reporter", "webhook", "hello", "archive"}
        assert started.index("tokenizer") < started.index("analyzer") < started.index("reporter")
        assert system.problems == []

        assert system.hook.report(text="Good, fast and clear code") == [
            "5 words, score 0.60: positive"
        ]
        assert system.get("webhook").plugin.outbox == [  # type: ignore[attr-defined]
            {"url": "https://hooks.example.com/reports", "body": "5 words, score 0.60: positive"}
        ]
        assert system.hook.greet(name="Ada") == ["hello, Ada"]
        # the host's plugin_config overrides the manifest default threshold 0.5 with 0.25
        analysis = system.get("analyzer").call("analyze", text="good code here now")
        assert analysis == {"score": 0.25, "positive": True, "tokens": 4}

        stats = system.metrics.get_stats("analyzer")
        assert stats.hooks["analyze"].count == 2
        assert stats.load_time is not None and stats.init_time is not None
        health = system.health()
        assert all(status.healthy for status in health.values()), health
    stopped = [e.name for e in events if e.kind == "stopped"]
    assert stopped.index("reporter") < stopped.index("analyzer") < stopped.index("tokenizer")
    assert system.hook.report(text="x") == []


def test_broken_plugins_are_reported_and_everything_else_runs(tmp_path: Path) -> None:
    ok = (
        "import helixhooks as hh\n"
        "class Plugin:\n    @hh.hookimpl\n    def echo(self, value):\n        return value\n"
    )
    write_plugin(tmp_path, "good", ok)
    write_plugin(tmp_path, "needs_good", ok, dependencies=["good ^1.0"])
    (tmp_path / "bad_toml").mkdir()
    (tmp_path / "bad_toml" / "plugin.toml").write_text("[plugin\nname=")
    write_plugin(tmp_path, "raises_on_import", "raise RuntimeError('boom at import')\n")
    write_plugin(
        tmp_path,
        "fails_init",
        "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n    def helix_init(self):\n"
        "        raise ValueError('no database')\n",
    )
    write_plugin(tmp_path, "after_fails_init", ok, dependencies=["fails_init"])
    write_plugin(tmp_path, "after_import_error", ok, dependencies=["raises_on_import"])
    write_plugin(tmp_path, "wants_missing", ok, dependencies=["nowhere >=1"])
    write_plugin(tmp_path, "too_new", ok, dependencies=["good ^2.0"])
    write_plugin(tmp_path, "cycle_a", ok, dependencies=["cycle_b"])
    write_plugin(tmp_path, "cycle_b", ok, dependencies=["cycle_a"])

    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None), specs=[EchoSpec]
    )
    system.load_all()
    system.start_all()
    try:
        states = {name: system.get(name).state for name in system.names()}
        assert states["good"] is hh.PluginState.STARTED
        assert states["needs_good"] is hh.PluginState.STARTED
        assert sorted(system.hook.echo(value=1)) == [1, 1]
        for broken in (
            "raises_on_import",
            "fails_init",
            "after_fails_init",
            "after_import_error",
            "wants_missing",
            "too_new",
            "cycle_a",
            "cycle_b",
        ):
            assert states[broken] is not hh.PluginState.STARTED, broken

        reasons = {p.name: p.reason for p in system.problems}
        assert "boom at import" in reasons["raises_on_import"]
        assert "no database" in reasons["fails_init"]
        assert "fails_init" in reasons["after_fails_init"]
        assert "raises_on_import" in reasons["after_import_error"]
        assert "nowhere" in reasons["wants_missing"]
        assert "^2.0" in reasons["too_new"] and "1.0.0" in reasons["too_new"]
        assert "cycle_a" in reasons["cycle_b"] and "->" in reasons["cycle_b"]
        toml_problem = [p for p in system.problems if "bad_toml" in p.source]
        assert toml_problem, system.problems
    finally:
        system.stop_all()


def test_timeout_in_start_fails_that_plugin_only(tmp_path: Path) -> None:
    release = tmp_path / "release"
    write_plugin(
        tmp_path,
        "slow",
        f"""
        import os, time
        import helixhooks as hh
        class Plugin:
            @hh.hookimpl
            def helix_start(self):
                while not os.path.exists({str(release)!r}):
                    time.sleep(0.01)
        """,
    )
    write_plugin(tmp_path, "quick", "class Plugin:\n    pass\n")
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None, load_timeout=0.3)
    )
    try:
        system.load_all()
        system.start_all()
        assert system.get("quick").state is hh.PluginState.STARTED
        assert system.get("slow").state is hh.PluginState.FAILED
        assert isinstance(system.get("slow").error, hh.PluginTimeout)
    finally:
        release.touch()
        system.stop_all()


def test_unload_drops_modules_metrics_and_record(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "gone",
        "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n    def echo(self, value):\n"
        "        return 'gone'\n",
    )
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None), specs=[EchoSpec]
    )
    events: list[PluginEvent] = []
    system.subscribe(events.append)
    with system:
        module_name = system.get("gone").plugin.__class__.__module__
        assert module_name in sys.modules
        assert system.hook.echo(value=0) == ["gone"]
        system.unload("gone")
        assert module_name not in sys.modules
        assert system.hook.echo(value=0) == []
        assert system.metrics.get_stats("gone").hooks == {}
        with pytest.raises(hh.HelixError, match="no plugin named 'gone'"):
            system.get("gone")
    assert [e.kind for e in events if e.name == "gone"][-2:] == ["stopped", "unloaded"]


def test_handle_call_reaches_only_that_plugin_and_needs_it_started(tmp_path: Path) -> None:
    for name in ("one", "two"):
        write_plugin(
            tmp_path,
            name,
            "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n"
            f"    def echo(self, value):\n        return ({name!r}, value)\n",
        )
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None), specs=[EchoSpec]
    )
    system.load_all()
    handle = system.get("two")
    with pytest.raises(hh.LifecycleError, match="not started"):
        handle.call("echo", value=1)
    system.start_all()
    try:
        assert handle.call("echo", value=1) == ("two", 1)
        with pytest.raises(hh.HelixError, match="does not implement hook 'other'"):
            handle.call("other")
        assert handle.stats().hooks["echo"].count == 1
        assert handle.health().healthy
    finally:
        system.stop_all()


def test_a_raising_subscriber_does_not_break_the_lifecycle(tmp_path: Path) -> None:
    write_plugin(tmp_path, "p", "class Plugin:\n    pass\n")
    system = hh.PluginSystem(hh.Config(plugin_dirs=[tmp_path], entry_point_group=None))

    def broken(event: PluginEvent) -> None:
        raise RuntimeError("subscriber bug")

    seen: list[str] = []
    system.subscribe(broken)
    unsubscribe = system.subscribe(lambda e: seen.append(e.kind))
    with system:
        assert system.get("p").state is hh.PluginState.STARTED
        unsubscribe()
    assert seen == ["loaded", "started"]


_READY_PLUGIN = """
import helixhooks as hh

class Plugin:
    ready = False

    @hh.hookimpl
    def helix_start(self):
        self.ready = True

    @hh.hookimpl
    def helix_stop(self):
        self.ready = False

    @hh.hookimpl
    def echo(self, value):
        return ({name!r}, self.ready)

    @hh.hookimpl
    def other(self):
        return {name!r}
"""


@pytest.mark.usefixtures("fast_switching")
def test_hook_calls_from_threads_while_plugins_restart_stop_and_unload(tmp_path: Path) -> None:
    names = [f"p{i}" for i in range(6)]
    for name in names:
        write_plugin(tmp_path, name, _READY_PLUGIN.format(name=name))
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None), specs=[EchoSpec]
    )
    system.load_all()
    system.start_all()
    errors: list[BaseException] = []
    not_ready: list[object] = []
    calls = [0] * 8
    done = threading.Event()

    def caller(slot: int) -> None:
        try:
            while not done.is_set():
                for name, ready in system.hook.echo(value=slot):
                    if not ready:
                        not_ready.append(name)
                system.hook.other()
                calls[slot] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        for round_ in range(15):
            assert time.monotonic() < deadline, "lifecycle operations took too long"
            system.restart(names[round_ % 3])
            system.lifecycle.stop(names[3])
            system.lifecycle.start(names[3])
        system.unload(names[4])
        system.unload(names[5])
        wait_for(lambda: all(calls), "every caller thread to call the hooks")
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=10)
        system.stop_all()
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert not_ready == [], "a caller reached a plugin that was not fully started"
    assert all(count > 0 for count in calls)


def test_health_interval_restarts_a_plugin_that_stays_unhealthy(tmp_path: Path) -> None:
    sick = tmp_path / "sick"
    starts = tmp_path / "starts"
    write_plugin(
        tmp_path / "plugins",
        "moody",
        f"""
        import os
        import helixhooks as hh
        class Plugin:
            @hh.hookimpl
            def helix_start(self):
                with open({str(starts)!r}, "a") as log:
                    log.write("start\\n")
            @hh.hookimpl
            def helix_health_check(self):
                return "disk full" if os.path.exists({str(sick)!r}) else True
        """,
        extra=f"permissions = [{'write=' + str(starts)!r}]\n",
    )
    config = hh.Config(
        plugin_dirs=[tmp_path / "plugins"], entry_point_group=None, health_interval=0.02
    )
    system = hh.PluginSystem(config)
    kinds: list[str] = []
    system.subscribe(lambda event: kinds.append(event.kind))
    with system:
        assert system.health_monitor is not None
        sick.touch()
        wait_for(lambda: "restarted" in kinds, "the monitor to restart the plugin")
        sick.unlink()
        assert "health_failed" in kinds
        assert starts.read_text().count("start") >= 2
    assert system.health_monitor is None


def test_the_host_s_isolation_setting_overrides_the_manifest(tmp_path: Path) -> None:
    from helixhooks.isolation.proxy import ProcessPlugin

    write_plugin(tmp_path, "boxed", "class Plugin:\n    pass\n", extra='isolation = "process"\n')
    write_plugin(tmp_path, "plain", "class Plugin:\n    pass\n")
    with _system(tmp_path) as system:
        assert system.get("boxed").state is hh.PluginState.STARTED
        assert isinstance(system.registry.get("boxed").loaded.plugin, ProcessPlugin)  # type: ignore[union-attr]
        system.close()
    overridden = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None, isolation="inprocess")
    )
    with overridden:
        assert overridden.get("boxed").state is hh.PluginState.STARTED
        assert not isinstance(overridden.registry.get("boxed").loaded.plugin, ProcessPlugin)  # type: ignore[union-attr]
    overridden.close()


def test_close_unloads_everything_and_leaves_no_modules() -> None:
    system = _examples_system()
    kinds: list[tuple[str, str]] = []
    system.subscribe(lambda event: kinds.append((event.kind, event.name)))
    with system:
        loaded = [system.registry.get(name).loaded for name in system.names()]  # type: ignore[union-attr]
        created = {key for plugin in loaded if plugin is not None for key in plugin.modules}
        assert len(created) >= 5
    system.close()
    assert system.names() == []
    assert not created & set(sys.modules)
    unloaded = [name for kind, name in kinds if kind == "unloaded"]
    assert unloaded.index("reporter") < unloaded.index("analyzer") < unloaded.index("tokenizer")


def test_held_back_plugins_load_once_their_dependency_is_fixed(tmp_path: Path) -> None:
    broken = "raise ImportError('no module named turbo')\n"
    fixed = "class Plugin:\n    pass\n"
    write_plugin(tmp_path, "base", broken)
    for name, needs in (("middle", "base"), ("top", "middle")):
        write_plugin(
            tmp_path,
            name,
            "import helixhooks as hh\nclass Plugin:\n    @hh.hookimpl\n"
            f"    def echo(self, value):\n        return {name!r}\n",
            dependencies=[needs],
        )
    system = _system(tmp_path)
    kinds: list[tuple[str, str]] = []
    system.subscribe(lambda event: kinds.append((event.kind, event.name)))
    with system:
        assert system.get("base").state is hh.PluginState.FAILED
        for name in ("middle", "top"):
            # fine in itself: kept as discovered, with the reason, to be retried
            assert system.get(name).state is hh.PluginState.DISCOVERED
            assert ("held_back", name) in kinds
        reasons = {p.name: p.reason for p in system.problems}
        assert "'base'" in reasons["middle"] and "'middle'" in reasons["top"]

        (tmp_path / "base" / "plugin.py").write_text(fixed)
        system.unload("base")
        system.load_all()
        system.start_all()
        assert sorted(system.hook.echo(value=0)) == ["middle", "top"]
        assert system.problems == []
    system.close()


def test_running_plugins_does_not_fill_the_process_wide_version_cache(tmp_path: Path) -> None:
    from helixhooks import versioning

    for index in range(20):
        write_plugin(
            tmp_path,
            f"p{index:02d}",
            "class Plugin:\n    pass\n",
            version=f"7.{index}.3",
            dependencies=[f"p{index - 1:02d} ^7.0"] if index else [],
        )
    before = versioning._parse_version_cached.cache_info().currsize
    system = hh.PluginSystem(hh.Config(plugin_dirs=[tmp_path], entry_point_group=None))
    try:
        system.load_all()
        assert len(system.start_all()) == 20
        system.restart("p00")
        system.stop_all()
    finally:
        system.close()
    # Validation and each resolver parse versions for themselves: a long-running host that
    # loads ever new versions keeps none of them.
    assert versioning._parse_version_cached.cache_info().currsize - before < 20


class _Doubler:
    started = False
    stopped = False

    @hh.hookimpl
    def helix_start(self) -> None:
        self.started = True

    @hh.hookimpl
    def helix_stop(self) -> None:
        self.stopped = True

    @hh.hookimpl
    def echo(self, value: object) -> object:
        return [value, value]


def test_an_object_registered_by_the_host_serves_beside_loaded_plugins(plugins: Path) -> None:
    write_plugin(
        plugins,
        "loaded",
        "import helixhooks as hh\nclass Plugin:\n"
        "    @hh.hookimpl\n    def echo(self, value):\n        return value\n",
    )
    system = _system(plugins)
    events: list[PluginEvent] = []
    system.subscribe(events.append)
    doubler = _Doubler()
    with system:
        assert system.register(doubler) == "_Doubler"
        assert doubler.started
        assert sorted(map(str, system.hook.echo(value=1))) == ["1", "[1, 1]"]
        assert system.get("_Doubler").call("echo", value=2) == [2, 2]
        assert [e.kind for e in events if e.name == "_Doubler"] == ["loaded", "started"]
        with pytest.raises(hh.ReloadError, match="registered by hand"):
            system.reload("_Doubler")
    assert doubler.stopped
    system.close()
    assert system.names() == []


def test_a_registered_object_takes_a_manifest_and_starts_with_start_all(plugins: Path) -> None:
    write_plugin(plugins, "base", "class Plugin:\n    pass\n", version="2.1.0")
    system = _system(plugins)
    system.load_all()
    info = hh.PluginInfo("doubler", "1.0.0", dependencies=["base ^2"])
    assert system.register(_Doubler(), info, start=False) == "doubler"
    assert system.get("doubler").state is hh.PluginState.INITIALIZED
    assert system.start_all() == ["base", "doubler"]
    assert system.hook.echo(value="x") == [["x", "x"]]
    system.close()


def test_registering_objects_refuses_what_it_cannot_honour(plugins: Path) -> None:
    system = _system(plugins)
    doubler = _Doubler()
    system.register(doubler, "one")
    with pytest.raises(hh.LoadError, match="already registered"):
        system.register(_Doubler(), "one")
    with pytest.raises(hh.LoadError, match="is plugin 'one' already"):
        system.register(doubler, "two")
    with pytest.raises(hh.LoadError, match="does not hold to permissions"):
        system.register(_Doubler(), hh.PluginInfo("net", "1.0.0", permissions=["net"]))

    class Misfit:
        @hh.hookimpl
        def echo(self, value: object, extra: object) -> None: ...

    with pytest.raises(hh.LoadError, match="does not fit") as caught:
        system.register(Misfit())
    assert caught.value.path == __file__
    assert system.names() == ["one"]
    system.close()


def test_an_object_whose_start_fails_is_a_problem_and_raises(plugins: Path) -> None:
    class Broken:
        @hh.hookimpl
        def helix_start(self) -> None:
            raise RuntimeError("no database")

    system = _system(plugins)
    with pytest.raises(hh.LifecycleError, match="no database"):
        system.register(Broken())
    assert system.get("Broken").state is hh.PluginState.FAILED
    assert [p.name for p in system.problems] == ["Broken"]
    system.close()


def test_a_plugins_stats_count_its_reloads_and_refusals_not_its_routine(plugins: Path) -> None:
    code = "import helixhooks as hh\n@hh.hookimpl\ndef echo(value):\n    return {}\n"
    write_plugin(plugins, "p", code.format(1), entry="plugin")
    system = _system(plugins)
    with system:
        for answer in (2, 3):
            write_plugin(plugins, "p", code.format(answer), entry="plugin")
            system.reload("p")
        write_plugin(plugins, "p", "x = (", entry="plugin")
        with pytest.raises(hh.ReloadError):
            system.reload("p")
        assert system.hook.echo(value=0) == [3]
        assert system.get("p").stats().events == {"reloaded": 2, "reload_failed": 1}
    system.close()
