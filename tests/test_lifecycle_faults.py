"""Lifecycle faults end to end: failed restarts, failed plugins' dependents, broken plugin code.

Real plugin directories, a real PluginSystem, the public API only. Every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import helixhooks as hh
from helixhooks import hookspec

from ._plugins import write_plugin


class PingSpec:
    @hookspec
    def ping(self) -> object:
        """The plugin's name."""


# Logs its lifecycle in config["log"] (when given); helix_start raises while the file named by
# config["flag"] exists; helix_health_check answers config["healthy"]() (healthy when absent).
PLUGIN = """
import os

import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.name = ctx.name
        self.config = config
        self.log = config.get("log", [])

    @hh.hookimpl
    def helix_start(self, ctx):
        flag = self.config.get("flag")
        if flag and os.path.exists(flag):
            raise RuntimeError(f"{flag} exists: refusing to start")
        self.log.append(("start", self.name))

    @hh.hookimpl
    def helix_stop(self, ctx):
        self.log.append(("stop", self.name))

    @hh.hookimpl
    def helix_health_check(self, ctx):
        healthy = self.config.get("healthy")
        return True if healthy is None else healthy()

    @hh.hookimpl
    def ping(self):
        return self.name
"""


def _system(
    root: Path, plugin_config: dict[str, dict[str, Any]] | None = None, **config: Any
) -> hh.PluginSystem:
    return hh.PluginSystem(
        hh.Config(
            plugin_dirs=[root],
            entry_point_group=None,
            plugin_config=plugin_config or {},
            **config,
        ),
        specs=[PingSpec],
    )


def _states(system: hh.PluginSystem) -> dict[str, hh.PluginState]:
    return {name: system.get(name).state for name in system.names()}


def _invariant_violations(system: hh.PluginSystem) -> list[str]:
    """STARTED plugins whose dependencies are not all STARTED; impls of plugins not STARTED."""
    states = _states(system)
    wrong = []
    for name, state in states.items():
        if state is not hh.PluginState.STARTED:
            continue
        for dependency in system.get(name).info.parsed_dependencies:
            if states.get(dependency.name) is not hh.PluginState.STARTED:
                wrong.append(
                    f"{name} is started but its dependency {dependency.name} is "
                    f"{states.get(dependency.name)}"
                )
    live = {name for name, plugin in system.registry.pm.list_name_plugin() if plugin is not None}
    started = {name for name, state in states.items() if state is hh.PluginState.STARTED}
    if live != started:
        wrong.append(f"live manager holds {sorted(live)} but started are {sorted(started)}")
    return wrong


# -- 7. a dependency whose restart failed once, then succeeded, brings its dependents back ---


def test_dependents_come_back_when_a_failed_restart_is_retried(tmp_path: Path) -> None:
    flag = tmp_path / "refuse-start"
    log: list[tuple[str, str]] = []
    write_plugin(tmp_path / "plugins", "base", PLUGIN)
    write_plugin(tmp_path / "plugins", "mid", PLUGIN, dependencies=["base"])
    write_plugin(tmp_path / "plugins", "top", PLUGIN, dependencies=["mid"])
    system = _system(
        tmp_path / "plugins",
        {
            "base": {"flag": str(flag), "log": log},
            "mid": {"log": log},
            "top": {"log": log},
        },
    )
    system.load_all()
    system.start_all()
    try:
        flag.write_text("")
        with pytest.raises(hh.HelixError):
            system.restart("base")
        assert _states(system)["base"] is hh.PluginState.FAILED
        assert not _invariant_violations(system)

        flag.unlink()
        system.restart("base")
        states = _states(system)
        assert states == dict.fromkeys(["base", "mid", "top"], hh.PluginState.STARTED), (
            "the dependents stopped by the failed restart were not started again: "
            f"{ {n: s.value for n, s in states.items()} }"
        )
        assert sorted(system.hook.ping()) == ["base", "mid", "top"]
        mentions = [p for p in system.problems if p.name == "base" or "base" in p.reason]
        assert not mentions, mentions
        assert not _invariant_violations(system)
    finally:
        system.close()


# -- 8. a plugin taken out as FAILED takes its started dependents out with it ----------------


def _fail_directly(system: hh.PluginSystem, sick: list[bool], flag: Path) -> None:
    system.lifecycle.fail("base", hh.HelixError("given up on it", plugin="base"))


def _monitor(system: hh.PluginSystem, *, max_restarts: int) -> hh.HealthMonitor:
    return hh.HealthMonitor(
        system.health_checker,
        system.lifecycle,
        interval=60.0,  # rounds are run by hand
        failures_before_restart=1,
        backoff=0.0,
        max_backoff=0.0,
        max_restarts=max_restarts,
    )


def _monitor_gives_up_at_once(system: hh.PluginSystem, sick: list[bool], flag: Path) -> None:
    sick[0] = True
    _monitor(system, max_restarts=0).run_once()


def _monitor_gives_up_after_a_restart(
    system: hh.PluginSystem, sick: list[bool], flag: Path
) -> None:
    # The restart works, but the plugin stays unhealthy: the next round gives up.
    sick[0] = True
    monitor = _monitor(system, max_restarts=1)
    monitor.run_once()
    monitor.run_once()


def _monitor_restart_fails(system: hh.PluginSystem, sick: list[bool], flag: Path) -> None:
    sick[0] = True
    flag.write_text("")
    monitor = _monitor(system, max_restarts=1)
    monitor.run_once()
    monitor.run_once()


@pytest.mark.parametrize(
    "take_out",
    [
        _fail_directly,
        _monitor_gives_up_at_once,
        _monitor_gives_up_after_a_restart,
        _monitor_restart_fails,
    ],
    ids=["lifecycle.fail", "monitor-gives-up", "monitor-gives-up-after-restart", "restart-fails"],
)
def test_a_failed_plugins_started_dependents_are_stopped(
    tmp_path: Path, take_out: Callable[[hh.PluginSystem, list[bool], Path], None]
) -> None:
    flag = tmp_path / "refuse-start"
    sick = [False]
    log: list[tuple[str, str]] = []
    root = tmp_path / "plugins"
    write_plugin(root, "base", PLUGIN)
    write_plugin(root, "mid", PLUGIN, dependencies=["base"])
    write_plugin(root, "top", PLUGIN, dependencies=["mid"])
    write_plugin(root, "other", PLUGIN)
    system = _system(
        root,
        {
            "base": {"flag": str(flag), "log": log, "healthy": lambda: not sick[0]},
            "mid": {"log": log},
            "top": {"log": log},
            "other": {"log": log},
        },
    )
    system.load_all()
    system.start_all()
    try:
        take_out(system, sick, flag)
        states = _states(system)
        assert states["base"] is hh.PluginState.FAILED
        assert states["other"] is hh.PluginState.STARTED
        left_running = [n for n in ("mid", "top") if states[n] is hh.PluginState.STARTED]
        assert not left_running, f"left STARTED on a FAILED dependency: {left_running}"
        assert system.hook.ping() == ["other"]
        assert log.index(("stop", "top")) < log.index(("stop", "mid"))
        assert not _invariant_violations(system)
    finally:
        system.close()


def test_stopping_a_plugin_does_not_leave_its_dependents_running(tmp_path: Path) -> None:
    """Not in the numbered list: the stateful test's invariant applied to lifecycle.stop.

    Stopping a dependency either stops its started dependents first or is refused.
    """
    write_plugin(tmp_path, "base", PLUGIN)
    write_plugin(tmp_path, "mid", PLUGIN, dependencies=["base"])
    system = _system(tmp_path)
    system.load_all()
    system.start_all()
    try:
        try:
            system.lifecycle.stop("base")
        except hh.HelixError:
            assert _states(system)["base"] is hh.PluginState.STARTED
        else:
            reason = str(system.get("mid").error)
            assert "held back: depends on 'base', which is being stopped" in reason
        assert not _invariant_violations(system), _invariant_violations(system)
    finally:
        system.close()


# -- 9. restart never starts a plugin whose dependency is not started -----------------------


def _dependency_stopped(system: hh.PluginSystem) -> None:
    system.lifecycle.stop("dependent")
    system.lifecycle.stop("base")


def _dependency_unloaded(system: hh.PluginSystem) -> None:
    system.unload("base")


def _dependency_failed(system: hh.PluginSystem) -> None:
    system.lifecycle.stop("dependent")
    system.lifecycle.fail("base", hh.HelixError("broken", plugin="base"))


@pytest.mark.parametrize(
    "take_down",
    [_dependency_stopped, _dependency_unloaded, _dependency_failed],
    ids=["stopped", "unloaded", "failed"],
)
def test_restart_refuses_a_plugin_whose_dependency_is_not_started(
    tmp_path: Path, take_down: Callable[[hh.PluginSystem], None]
) -> None:
    write_plugin(tmp_path, "base", PLUGIN)
    write_plugin(tmp_path, "dependent", PLUGIN, dependencies=["base"])
    system = _system(tmp_path)
    system.load_all()
    system.start_all()
    try:
        take_down(system)
        assert system.get("dependent").state is hh.PluginState.STOPPED
        with pytest.raises((hh.DependencyError, hh.LifecycleError)) as caught:
            system.restart("dependent")
        assert "base" in str(caught.value), caught.value
        assert system.get("dependent").state is not hh.PluginState.STARTED
        assert system.hook.ping() == []
        assert not _invariant_violations(system), _invariant_violations(system)
    finally:
        system.close()


# -- 10. SystemExit from plugin code is a plugin failure, not the host's exit ---------------

GOOD = """
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def ping(self):
        return "zz_good"
"""

EXITS = {
    "helix_init": """
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_init(self):
        raise SystemExit(3)
""",
    "helix_start": """
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_start(self):
        raise SystemExit("leaving")
""",
    "constructor": """
import helixhooks as hh


class Plugin:
    def __init__(self):
        raise SystemExit(4)

    @hh.hookimpl
    def ping(self):
        return "never"
""",
    "import": """
import sys

sys.exit(5)
""",
}


@pytest.mark.parametrize("where", sorted(EXITS))
def test_system_exit_in_plugin_code_fails_only_that_plugin(tmp_path: Path, where: str) -> None:
    write_plugin(tmp_path, "exits", EXITS[where])
    write_plugin(tmp_path, "zz_good", GOOD)
    system = _system(tmp_path)
    try:
        try:
            system.load_all()
            system.start_all()
        except BaseException as exc:
            pytest.fail(f"SystemExit in the plugin's {where} escaped load_all/start_all: {exc!r}")
        error = system.get("exits").error
        assert system.get("exits").state is hh.PluginState.FAILED, system.get("exits").state
        assert isinstance(error, hh.HelixError), repr(error)
        assert "SystemExit" in str(error) or "sys.exit(" in str(error), str(error)
        assert str(tmp_path / "exits") in str(error), f"the plugin's file is not named: {error}"
        assert system.get("zz_good").state is hh.PluginState.STARTED
        assert system.hook.ping() == ["zz_good"]
    finally:
        system.close()


# -- 12. a plugin whose import hangs is timed out; other loads go on ------------------------

HANGS = """
import os
import time

_deadline = time.monotonic() + 60
while not os.path.exists({release!r}) and time.monotonic() < _deadline:
    time.sleep(0.02)

import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def ping(self):
        return "a_hangs"
"""


class _Run(threading.Thread):
    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc


def test_a_hanging_import_times_out_and_does_not_block_other_loads(tmp_path: Path) -> None:
    # The module top level "hangs" until the test creates this file (or 60 s pass), so that no
    # thread outlives the test by long whatever the outcome.
    release = tmp_path / "release"
    root = tmp_path / "plugins"
    write_plugin(root, "a_hangs", HANGS.format(release=str(release)))
    write_plugin(root, "b_good", GOOD.replace("zz_good", "b_good"))
    system = _system(root, load_timeout=1.0)
    runs: list[_Run] = []
    try:
        first = _Run(system.load_all)
        runs.append(first)
        began = time.monotonic()
        first.start()
        first.join(10)
        assert not first.is_alive(), (
            "load_all did not return within 10 s although load_timeout is 1 s "
            "(a module whose top level hangs is not timed out)"
        )
        assert first.error is None, first.error
        assert time.monotonic() - began < 10
        hung = system.get("a_hangs")
        assert hung.state is hh.PluginState.FAILED
        assert isinstance(hung.error, hh.PluginTimeout) or isinstance(
            hung.error.__cause__, hh.PluginTimeout
        ), repr(hung.error)
        assert system.get("b_good").state is hh.PluginState.INITIALIZED

        # A later load is not stuck behind the import that is still hanging.
        write_plugin(root, "c_late", GOOD.replace("zz_good", "c_late"))
        second = _Run(system.load_all)
        runs.append(second)
        second.start()
        second.join(10)
        assert not second.is_alive(), "a later load_all waited for the hung import"
        assert second.error is None, second.error
        assert not release.exists()
        system.start_all()
        assert sorted(system.hook.ping()) == ["b_good", "c_late"]
    finally:
        release.write_text("")
        for run in runs:
            run.join(10)
        system.close()


# -- 13. a plugin whose import failed loads once its file is fixed --------------------------


BROKEN = "class Plugin(:\n    pass\n"


def test_a_fixed_syntax_error_loads_on_the_next_load_all(tmp_path: Path) -> None:
    directory = write_plugin(tmp_path, "broken", BROKEN)
    write_plugin(
        tmp_path,
        "needs_broken",
        GOOD.replace("zz_good", "needs_broken"),
        dependencies=["broken"],
    )
    system = _system(tmp_path)
    try:
        system.load_all()
        system.start_all()
        assert system.get("broken").state is not hh.PluginState.STARTED
        assert system.hook.ping() == []

        (directory / "plugin.py").write_text(GOOD.replace("zz_good", "broken"))
        system.load_all()
        system.start_all()
        states = _states(system)
        assert states["broken"] is hh.PluginState.STARTED, (
            f"after the fix, load_all did not load it: {states['broken']}, "
            f"{system.get('broken').error}"
        )
        assert states["needs_broken"] is hh.PluginState.STARTED
        assert sorted(system.hook.ping()) == ["broken", "needs_broken"]
        assert system.problems == []
    finally:
        system.close()


def test_restarting_a_plugin_whose_import_failed_says_how_to_fix_it(tmp_path: Path) -> None:
    write_plugin(tmp_path, "broken", BROKEN)
    system = _system(tmp_path)
    try:
        system.load_all()
        with pytest.raises(hh.HelixError) as caught:
            system.restart("broken")
        hint = caught.value.hint or ""
        assert "load_all" in hint or "reload" in hint, (
            f"restarting a plugin whose import failed should say to fix the file and run "
            f"load_all()/reload(); got: {caught.value}"
        )
        assert "fix" in hint.lower() or "edit" in hint.lower(), caught.value
        assert system.get("broken").state is not hh.PluginState.STARTED
    finally:
        system.close()


# -- 14. the manifest's `requires` is checked against the installed helixhooks --------------


def test_requires_is_checked_against_the_helixhooks_version(tmp_path: Path) -> None:
    write_plugin(
        tmp_path, "too_new", GOOD.replace("zz_good", "too_new"), extra='requires = ">=5.0"\n'
    )
    write_plugin(tmp_path, "fits", GOOD.replace("zz_good", "fits"), extra='requires = ">=0.1"\n')
    system = _system(tmp_path)
    try:
        system.load_all()
        system.start_all()
        assert system.get("fits").state is hh.PluginState.STARTED
        assert system.get("too_new").state is not hh.PluginState.STARTED, (
            f"a plugin requiring helixhooks >=5.0 was started with helixhooks {hh.__version__} "
            f"(the manifest's requires is not checked)"
        )
        assert system.hook.ping() == ["fits"]
        reasons = [p.reason for p in system.problems if p.name == "too_new"]
        assert reasons, (
            f"no load problem for a plugin requiring helixhooks >=5.0: {system.problems}"
        )
        assert ">=5.0" in reasons[0] and hh.__version__ in reasons[0], reasons[0]
        assert not [p for p in system.problems if p.name == "fits"]
    finally:
        system.close()
