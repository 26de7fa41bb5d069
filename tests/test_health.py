"""HealthChecker and HealthMonitor with real plugins, real threads and real time limits."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks.errors import LifecycleError
from helixhooks.health import HealthChecker, HealthMonitor, HealthStatus, _backoff_delay
from helixhooks.plugin import PluginContext, PluginState

from .test_lifecycle import Action, Rig, _close_rigs, fail, make_rig  # noqa: F401 - fixture

NO_HEALTH_CHECK = """
from helixhooks.markers import hookimpl


class Plugin:
    @hookimpl
    def answer(self):
        return "quiet"
"""


def answers(value: object) -> Action:
    return lambda ctx: value


def checker_for(rig: Rig) -> HealthChecker:
    return HealthChecker(rig.registry, rig.lifecycle.config)


def monitor_for(
    rig: Rig,
    *,
    interval: float = 60.0,
    failures_before_restart: int = 2,
    backoff: float = 0.0,
    max_backoff: float = 60.0,
    max_restarts: int = 5,
) -> HealthMonitor:
    return HealthMonitor(
        checker_for(rig),
        rig.lifecycle,
        interval=interval,
        failures_before_restart=failures_before_restart,
        backoff=backoff,
        max_backoff=max_backoff,
        max_restarts=max_restarts,
        on_event=rig.events.append,
    )


@pytest.mark.parametrize(
    ("action", "healthy", "message"),
    [
        (answers(True), True, "ok"),
        (answers(None), True, "ok"),
        (answers(False), False, "health check returned False"),
        (answers("disk full"), False, "disk full"),
        (fail("db gone"), False, "health check raised RuntimeError: db gone"),
        (answers(42), False, "health check returned 42; expected True, None, False or a message"),
    ],
)
def test_check_reads_the_plugins_answer(
    tmp_path: Path, action: Action, healthy: bool, message: str
) -> None:
    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"health": action}})
    rig.lifecycle.start_all()

    before = time.time()
    status = checker_for(rig).check("a")

    assert (status.name, status.healthy, status.message) == ("a", healthy, message)
    assert status.state is PluginState.STARTED
    assert status.latency > 0
    assert status.checked_at >= before
    assert rig.calls("health") == ["a"]


def test_a_plugin_without_a_health_check_is_healthy(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"quiet": ()}, sources={"quiet": NO_HEALTH_CHECK})
    rig.lifecycle.start_all()

    status = checker_for(rig).check("quiet")

    assert (status.healthy, status.message) == (True, "no health check")


def test_plugins_not_started_are_unhealthy_naming_their_state(tmp_path: Path) -> None:
    rig = make_rig(
        tmp_path, {"idle": (), "broken": (), "stopped": ()},
        actions={"broken": {"init": fail("no config")}},
    )  # fmt: skip
    rig.lifecycle.start_all(["broken", "stopped"])
    rig.lifecycle.stop("stopped")
    rig.lifecycle.init("idle")

    statuses = checker_for(rig).check_all()

    assert statuses["idle"] == HealthStatus(
        "idle", False, PluginState.INITIALIZED, "not started (initialized)", 0.0,
        statuses["idle"].checked_at,
    )  # fmt: skip
    assert statuses["stopped"].message == "not started (stopped)"
    assert statuses["broken"].state is PluginState.FAILED
    assert statuses["broken"].message.startswith("failed: plugin 'broken': helix_init raised")
    assert "no config" in statuses["broken"].message
    assert not any(status.healthy for status in statuses.values())
    # Nothing of theirs ran: a plugin that is not started is not asked.
    assert rig.calls("health") == []


def test_check_of_an_unknown_plugin_raises(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    with pytest.raises(LifecycleError, match="no plugin named 'nope'"):
        checker_for(rig).check("nope")


def test_a_hanging_check_times_out_while_the_others_answer(tmp_path: Path) -> None:
    release = threading.Event()
    rig = make_rig(
        tmp_path, {"hangs": (), "fine": ()},
        actions={"hangs": {"health": lambda ctx: release.wait(30)}},
        health_timeout=0.2,
    )  # fmt: skip
    rig.lifecycle.start_all()
    checker = checker_for(rig)
    try:
        statuses = checker.check_all()

        assert statuses["fine"].healthy
        assert statuses["fine"].message == "ok"
        assert not statuses["hangs"].healthy
        assert statuses["hangs"].message == "health check timed out after 0.2s"
        assert statuses["hangs"].state is PluginState.STARTED

        # While the abandoned check still hangs, no second thread is started for it.
        again = checker.check("hangs")
        assert not again.healthy
        assert "an earlier health check has hung for" in again.message
        hung = [t for t in threading.enumerate() if t.name == "helixhooks-health_check-hangs"]
        assert len(hung) == 1
        assert rig.calls("health").count("hangs") == 1
    finally:
        release.set()
    hung[0].join(10)
    assert not hung[0].is_alive()

    # Once it is done, the plugin is checked afresh.
    assert checker.check("hangs").healthy


def test_check_all_runs_the_checks_concurrently(tmp_path: Path) -> None:
    # Both checks must be inside their health hook at once to pass the barrier; run one after
    # the other, the first would break it and report unhealthy.
    barrier = threading.Barrier(2, timeout=5)

    def meet(ctx: PluginContext) -> bool:
        barrier.wait()
        return True

    rig = make_rig(
        tmp_path, {"a": (), "b": ()}, actions={"a": {"health": meet}, "b": {"health": meet}}
    )
    rig.lifecycle.start_all()

    statuses = checker_for(rig).check_all()

    assert {name: s.healthy for name, s in statuses.items()} == {"a": True, "b": True}
    assert all(status.latency > 0 for status in statuses.values())


def test_monitor_restarts_a_plugin_after_n_unhealthy_checks(tmp_path: Path) -> None:
    health = {"a": True}
    rig = make_rig(
        tmp_path, {"a": (), "b": ("a",)}, actions={"a": {"health": lambda ctx: health["a"]}}
    )
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, failures_before_restart=3)

    assert monitor.run_once()["a"].healthy
    health["a"] = False
    for _ in range(2):
        assert not monitor.run_once()["a"].healthy
    assert rig.calls("stop") == []

    rig.log.clear()
    monitor.run_once()

    assert [(phase, name) for phase, name in rig.log if phase != "health"] == [
        ("stop", "b"), ("stop", "a"), ("start", "a"), ("start", "b")
    ]  # fmt: skip
    kinds = rig.kinds("a")
    assert kinds.index("health_failed") < kinds.index("restarted")
    assert rig.state("a") is rig.state("b") is PluginState.STARTED


def test_a_healthy_check_resets_the_count(tmp_path: Path) -> None:
    health = {"a": False}
    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"health": lambda ctx: health["a"]}})
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, failures_before_restart=3)

    for answer in (False, False, True, False, False, True):
        health["a"] = answer
        monitor.run_once()

    assert rig.calls("stop") == []
    assert "health_failed" not in rig.kinds("a")


def test_monitor_gives_up_after_max_restarts(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": (), "x": ()}, actions={"a": {"health": answers("wedged")}})
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, failures_before_restart=2, max_restarts=2)

    for _ in range(6):
        monitor.run_once()

    assert rig.state("a") is PluginState.FAILED
    error = rig.error("a")
    assert isinstance(error, LifecycleError)
    assert "given up after 2 restart(s): still unhealthy: wedged" in str(error)
    assert rig.kinds("a").count("restarted") == 2
    assert rig.kinds("a")[-1] == "failed"
    assert rig.registry.pm.hook.answer() == ["x"]

    # Given up means left alone: more rounds restart nothing.
    starts = rig.calls("start").count("a")
    for _ in range(4):
        assert monitor.run_once()["a"].message.startswith("failed: plugin 'a': given up")
    assert rig.calls("start").count("a") == starts
    assert rig.state("x") is PluginState.STARTED


def test_a_restart_that_fails_counts_and_is_retried(tmp_path: Path) -> None:
    starts = {"count": 0}

    def start(ctx: PluginContext) -> None:
        starts["count"] += 1
        if starts["count"] == 2:
            raise RuntimeError("flaky start")

    rig = make_rig(
        tmp_path, {"a": ()},
        actions={"a": {"health": lambda ctx: starts["count"] != 1, "start": start}},
    )  # fmt: skip
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, failures_before_restart=1, max_restarts=3)

    monitor.run_once()  # unhealthy: the restart's start raises, the plugin is FAILED
    assert rig.state("a") is PluginState.FAILED
    monitor.run_once()  # still FAILED after its restart: the monitor tries again
    assert rig.state("a") is PluginState.STARTED
    assert rig.calls("init") == ["a", "a"]  # re-initialized, as it was FAILED
    assert monitor.run_once()["a"].healthy


def test_backoff_holds_further_restarts(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"health": answers(False)}})
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, failures_before_restart=1, backoff=3600.0, max_backoff=3600.0)

    for _ in range(5):
        monitor.run_once()

    assert rig.kinds("a").count("restarted") == 1
    assert rig.state("a") is PluginState.STARTED


def test_monitor_leaves_plugins_the_host_stopped_alone(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    rig.lifecycle.start_all()
    rig.lifecycle.stop("a")
    monitor = monitor_for(rig, failures_before_restart=1)

    for _ in range(3):
        assert not monitor.run_once()["a"].healthy

    assert rig.state("a") is PluginState.STOPPED
    assert "restarted" not in rig.kinds("a")


def test_background_monitor_really_runs_checks(tmp_path: Path) -> None:
    checks = {"count": 0}

    def count(ctx: PluginContext) -> bool:
        checks["count"] += 1
        return True

    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"health": count}})
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, interval=0.01)

    monitor.start()
    try:
        deadline = time.monotonic() + 20
        while checks["count"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        monitor.stop()
    assert checks["count"] >= 3
    assert not any(t.name == "helixhooks-health" for t in threading.enumerate())

    after_stop = checks["count"]
    time.sleep(0.05)
    assert checks["count"] == after_stop


@pytest.mark.parametrize(
    "options",
    [
        {"interval": 0.0},
        {"failures_before_restart": 0},
        {"backoff": -1.0},
        {"backoff": 10.0, "max_backoff": 1.0},
        {"max_restarts": -1},
    ],
)
def test_monitor_rejects_nonsense_settings(tmp_path: Path, options: dict[str, Any]) -> None:
    rig = make_rig(tmp_path, {})
    with pytest.raises(ValueError, match=r"must be|need"):
        monitor_for(rig, **options)


@given(
    backoff=st.floats(0.0, 100.0),
    extra=st.floats(0.0, 1000.0),
    restarts=st.integers(1, 200),
)
def test_backoff_doubles_from_backoff_up_to_the_cap(
    backoff: float, extra: float, restarts: int
) -> None:
    cap = backoff + extra
    delay = _backoff_delay(restarts, backoff, cap)

    assert _backoff_delay(1, backoff, cap) == backoff
    assert backoff <= delay <= cap
    assert _backoff_delay(restarts + 1, backoff, cap) == min(2 * delay, cap)


def test_a_plugin_healthy_again_after_health_failed_is_reported_recovered(tmp_path: Path) -> None:
    health = {"a": False}
    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"health": lambda ctx: health["a"]}})
    rig.lifecycle.start_all()
    monitor = monitor_for(rig, failures_before_restart=2, backoff=60.0)

    for answer in (False, True, False, False, False, True, True):
        health["a"] = answer
        monitor.run_once()

    # One miss then a pass is no news; two misses are, and so is the pass after them.
    kinds = [k for k in rig.kinds("a") if k in ("health_failed", "restarted", "health_recovered")]
    assert kinds == ["health_failed", "restarted", "health_recovered"]
