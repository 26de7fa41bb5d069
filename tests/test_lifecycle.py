"""LifecycleManager with real plugin files, the real Loader and Registry, and real threads."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks import _bounded
from helixhooks._bounded import BoundedCall
from helixhooks.config import Config
from helixhooks.errors import DependencyError, LifecycleError, LoadError, PluginTimeout
from helixhooks.lifecycle import LifecycleManager
from helixhooks.loader import Loader
from helixhooks.markers import hookspec
from helixhooks.metrics import Metrics
from helixhooks.plugin import PluginContext, PluginEvent, PluginState
from helixhooks.registry import Registry

from ._plugins import write_plugin

# Each lifecycle hook logs (phase, plugin name) in the host's shared list, then runs the host's
# action for that phase, if any: both come in through the plugin's config table.
RECORDING_PLUGIN = """
from helixhooks.markers import hookimpl


def _run(ctx, phase):
    ctx.config["log"].append((phase, ctx.name))
    action = ctx.config.get(phase)
    return action(ctx) if action is not None else None


class Plugin:
    @hookimpl
    def helix_init(self, config, ctx):
        self.name = ctx.name
        self.seen = [("config", dict(config)), ("init", ctx)]
        _run(ctx, "init")

    @hookimpl
    def helix_start(self, ctx):
        self.seen.append(("start", ctx))
        _run(ctx, "start")

    @hookimpl
    def helix_stop(self, ctx):
        _run(ctx, "stop")

    @hookimpl
    def helix_health_check(self, ctx):
        return _run(ctx, "health")

    @hookimpl
    def answer(self):
        return self.name
"""

# Lifecycle hooks that name no ctx (pluggy prunes the argument), and an init without config.
CTXLESS_PLUGIN = """
from helixhooks.markers import hookimpl


class Plugin:
    calls = []

    @hookimpl
    def helix_init(self):
        self.calls.append("init")

    @hookimpl
    def helix_start(self):
        self.calls.append("start")

    @hookimpl
    def helix_stop(self):
        self.calls.append("stop")

    @hookimpl
    def answer(self):
        return "ctxless"
"""

Action = Callable[[PluginContext], object]


class AnswerSpec:
    """The host's capability hook: each started plugin answers its own name."""

    @hookspec
    def answer(self) -> str | None:
        """The plugin's name."""


@attrs.define
class Rig:
    """A host made of the real parts, with every hook call and event recorded."""

    registry: Registry
    loader: Loader
    lifecycle: LifecycleManager
    metrics: Metrics
    log: list[tuple[str, str]]
    events: list[PluginEvent]

    def state(self, name: str) -> PluginState:
        record = self.registry.get(name)
        assert record is not None
        return record.state

    def error(self, name: str) -> BaseException | None:
        record = self.registry.get(name)
        assert record is not None
        return record.error

    def calls(self, phase: str) -> list[str]:
        return [name for logged, name in self.log if logged == phase]

    def kinds(self, name: str) -> list[str]:
        return [event.kind for event in self.events if event.name == name]

    def close(self) -> None:
        """Drop the plugins' modules: another rig's Loader reuses the same private names."""
        for name in self.registry.names():
            self.loader.unload(name)


_OPEN_RIGS: list[Rig] = []


@pytest.fixture(autouse=True)
def _close_rigs() -> Iterator[None]:
    yield
    while _OPEN_RIGS:
        _OPEN_RIGS.pop().close()


def make_rig(
    root: Path,
    plugins: Mapping[str, Sequence[str]],
    *,
    actions: Mapping[str, Mapping[str, Any]] | None = None,
    sources: Mapping[str, str] | None = None,
    load_timeout: float = 10.0,
    health_timeout: float = 10.0,
    manifest_config: str = "",
) -> Rig:
    """Write ``plugins`` (name -> dependencies) under ``root``, load and register them."""
    log: list[tuple[str, str]] = []
    tables = {name: {"log": log, **(actions or {}).get(name, {})} for name in plugins}
    config = Config(
        load_timeout=load_timeout,
        health_timeout=health_timeout,
        plugin_config=tables,
        entry_point_group=None,
    )
    metrics = Metrics()
    loader = Loader(config, specs=[AnswerSpec], metrics=metrics)
    registry = Registry(specs=[AnswerSpec], metrics=metrics)
    events: list[PluginEvent] = []
    lifecycle = LifecycleManager(
        loader, registry, config=config, metrics=metrics, on_event=events.append
    )
    for name, dependencies in plugins.items():
        source = (sources or {}).get(name, RECORDING_PLUGIN)
        extra = f"[config]\n{manifest_config}" if manifest_config else ""
        directory = write_plugin(root, name, source, dependencies=dependencies, extra=extra)
        registry.register(loader.load(directory))
    rig = Rig(registry, loader, lifecycle, metrics, log, events)
    _OPEN_RIGS.append(rig)
    return rig


def fail(message: str) -> Action:
    def action(ctx: PluginContext) -> None:
        raise RuntimeError(message)

    return action


CHAIN = {"a": (), "b": ("a",), "c": ("b",)}
DIAMOND = {"d": ("b", "c"), "c": ("a",), "b": ("a",), "a": ()}


def test_start_all_follows_a_chain_and_stop_all_reverses_it(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"c": ("b",), "b": ("a",), "a": ()})

    assert rig.lifecycle.start_all() == ["a", "b", "c"]

    assert rig.log == [
        ("init", "a"), ("start", "a"), ("init", "b"), ("start", "b"), ("init", "c"), ("start", "c")
    ]  # fmt: skip
    assert [rig.state(n) for n in "abc"] == [PluginState.STARTED] * 3
    assert [e.name for e in rig.events if e.kind == "started"] == ["a", "b", "c"]

    rig.lifecycle.stop_all()

    assert rig.calls("stop") == ["c", "b", "a"]
    assert [rig.state(n) for n in "abc"] == [PluginState.STOPPED] * 3
    assert [e.name for e in rig.events if e.kind == "stopped"] == ["c", "b", "a"]


def test_a_diamond_starts_dependencies_first_ties_by_name(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, DIAMOND)

    assert rig.lifecycle.start_all() == ["a", "b", "c", "d"]
    assert rig.calls("start") == ["a", "b", "c", "d"]

    rig.lifecycle.stop_all()
    assert rig.calls("stop") == ["d", "c", "b", "a"]


def test_start_all_with_names_starts_them_and_their_dependencies(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {**CHAIN, "x": ()})

    assert rig.lifecycle.start_all(["b"]) == ["a", "b"]
    assert rig.state("c") is PluginState.LOADED
    assert rig.state("x") is PluginState.LOADED

    # A second start_all only picks up what is not started yet.
    assert rig.lifecycle.start_all() == ["c", "x"]


def test_start_all_with_an_unknown_name_raises(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    with pytest.raises(LifecycleError, match="no plugin named 'nope'"):
        rig.lifecycle.start_all(["nope"])
    assert rig.state("a") is PluginState.LOADED


def test_failing_init_holds_back_dependents_and_starts_the_rest(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {**CHAIN, "x": ()}, actions={"a": {"init": fail("no database")}})

    assert rig.lifecycle.start_all() == ["x"]

    assert rig.state("a") is PluginState.FAILED
    error = rig.error("a")
    assert isinstance(error, LifecycleError)
    assert error.plugin == "a"
    assert "helix_init raised RuntimeError: no database" in str(error)
    assert error.hint
    assert isinstance(error.__cause__, RuntimeError)

    assert rig.state("b") is PluginState.LOADED
    held_b = rig.error("b")
    assert isinstance(held_b, DependencyError)
    assert "held back: depends on 'a', which failed" in str(held_b)
    assert rig.state("c") is PluginState.LOADED
    assert "held back: depends on 'b', which is held back because 'a' failed" in str(rig.error("c"))
    assert rig.calls("init") == ["a", "x"]

    failed = [e for e in rig.events if e.kind == "failed"]
    assert [(e.name, e.error) for e in failed] == [("a", error)]
    assert failed[0].duration is not None
    assert rig.kinds("b") == rig.kinds("c") == ["held_back"]
    assert rig.registry.pm.hook.answer() == ["x"]


def test_failing_start_fails_the_plugin_and_keeps_its_hooks_out(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {**CHAIN, "x": ()}, actions={"b": {"start": fail("port taken")}})

    assert rig.lifecycle.start_all() == ["a", "x"]

    assert rig.state("b") is PluginState.FAILED
    assert "helix_start raised RuntimeError: port taken" in str(rig.error("b"))
    assert not rig.registry.is_active("b")
    assert "depends on 'b', which failed" in str(rig.error("c"))
    assert sorted(rig.registry.pm.hook.answer()) == ["a", "x"]


def test_a_direct_start_failure_raises(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"start": fail("port taken")}})
    rig.lifecycle.init("a")

    with pytest.raises(LifecycleError, match="port taken") as caught:
        rig.lifecycle.start("a")

    assert rig.error("a") is caught.value
    assert rig.state("a") is PluginState.FAILED


def test_a_raising_stop_is_recorded_and_the_others_still_stop(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, CHAIN, actions={"b": {"stop": fail("cannot flush")}})
    rig.lifecycle.start_all()

    rig.lifecycle.stop_all()

    assert rig.calls("stop") == ["c", "b", "a"]
    assert rig.state("a") is rig.state("c") is PluginState.STOPPED
    assert rig.state("b") is PluginState.FAILED
    assert "helix_stop raised RuntimeError: cannot flush" in str(rig.error("b"))
    assert rig.kinds("b")[-1] == "failed"
    # It left the live manager before its stop ran, whatever the stop did.
    assert rig.registry.pm.hook.answer() == []


def test_a_start_past_load_timeout_fails_without_blocking_the_host(tmp_path: Path) -> None:
    release = threading.Event()
    finished = threading.Event()

    def hang(ctx: PluginContext) -> None:
        release.wait(30)
        finished.set()

    rig = make_rig(
        tmp_path, {"slow": (), "after": ("slow",), "x": ()},
        actions={"slow": {"start": hang}},
        load_timeout=0.2,
    )  # fmt: skip
    try:
        assert rig.lifecycle.start_all() == ["x"]
        # start_all came back while the plugin's start still hangs.
        assert not finished.is_set()
        worker = next(t for t in threading.enumerate() if t.name == "helixhooks-start-slow")

        error = rig.error("slow")
        assert isinstance(error, PluginTimeout)
        assert (error.plugin, error.phase, error.timeout) == ("slow", "start", 0.2)
        assert "abandoned" in str(error)
        assert rig.state("slow") is PluginState.FAILED
        assert "depends on 'slow', which failed" in str(rig.error("after"))
    finally:
        release.set()

    worker.join(10)
    assert not worker.is_alive()
    # The late finish changed nothing: still FAILED, still out of the live manager.
    assert rig.state("slow") is PluginState.FAILED
    assert rig.registry.pm.hook.answer() == ["x"]
    assert rig.kinds("slow") == ["failed"]


def test_restart_stops_dependents_first_and_starts_them_after(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {**CHAIN, "x": ()})
    rig.lifecycle.start_all()
    rig.log.clear()

    rig.lifecycle.restart("a")

    assert rig.log == [
        ("stop", "c"), ("stop", "b"), ("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")
    ]  # fmt: skip
    assert {n: rig.state(n) for n in "abcx"} == dict.fromkeys("abcx", PluginState.STARTED)
    assert sorted(rig.registry.pm.hook.answer()) == ["a", "b", "c", "x"]


def test_restart_reinitializes_a_failed_plugin(tmp_path: Path) -> None:
    broken = {"start": True}

    def start(ctx: PluginContext) -> None:
        if broken["start"]:
            raise RuntimeError("not yet")

    rig = make_rig(tmp_path, {"a": (), "b": ("a",)}, actions={"a": {"start": start}})
    rig.lifecycle.start_all()
    assert rig.state("a") is PluginState.FAILED
    broken["start"] = False
    rig.log.clear()

    rig.lifecycle.restart("a")

    # Its dependent was held back by a's failure: the restart brings it up too.
    assert rig.log == [("init", "a"), ("start", "a"), ("init", "b"), ("start", "b")]
    assert rig.state("a") is PluginState.STARTED
    assert rig.error("a") is None
    assert rig.state("b") is PluginState.STARTED
    assert rig.error("b") is None


def test_restart_that_fails_raises_and_holds_the_dependents_back(tmp_path: Path) -> None:
    broken = {"start": False}

    def start(ctx: PluginContext) -> None:
        if broken["start"]:
            raise RuntimeError("lost the socket")

    rig = make_rig(tmp_path, CHAIN, actions={"a": {"start": start}})
    rig.lifecycle.start_all()
    broken["start"] = True

    with pytest.raises(LifecycleError, match="lost the socket"):
        rig.lifecycle.restart("a")

    assert rig.state("a") is PluginState.FAILED
    assert rig.state("b") is rig.state("c") is PluginState.STOPPED
    assert "depends on 'a', which failed" in str(rig.error("b"))
    assert rig.registry.pm.hook.answer() == []


@pytest.mark.parametrize(
    ("operation", "state_before", "message"),
    [
        ("start", PluginState.LOADED, "cannot start: it is loaded, and started can only"),
        ("stop", PluginState.LOADED, "cannot stop: it is loaded"),
        ("init", PluginState.STARTED, "cannot init: it is started"),
        ("start", PluginState.STARTED, "cannot start: it is started"),
        ("init", PluginState.INITIALIZED, "cannot init: it is initialized"),
    ],
)
def test_invalid_requests_raise_naming_plugin_and_states(
    tmp_path: Path, operation: str, state_before: PluginState, message: str
) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    if state_before is PluginState.INITIALIZED:
        rig.lifecycle.init("a")
    elif state_before is PluginState.STARTED:
        rig.lifecycle.start_all()
    rig.log.clear()

    with pytest.raises(LifecycleError, match=message) as caught:
        getattr(rig.lifecycle, operation)("a")

    assert caught.value.plugin == "a"
    assert caught.value.hint
    assert rig.state("a") is state_before
    assert rig.log == []


def test_operations_on_an_unloaded_plugin_raise(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    rig.registry.unregister("a")
    for operation in (rig.lifecycle.init, rig.lifecycle.start, rig.lifecycle.restart):
        with pytest.raises(LifecycleError, match="no plugin named 'a'"):
            operation("a")


def test_plugin_sees_its_context_and_the_merged_config(tmp_path: Path) -> None:
    rig = make_rig(
        tmp_path,
        {"a": ()},
        actions={"a": {"mode": "host"}},
        manifest_config='threshold = 0.5\nmode = "manifest"\n',
    )
    rig.lifecycle.start_all()

    seen = dict(rig.registry.get("a").plugin.seen)  # type: ignore[union-attr]
    config = seen["config"]
    assert config["threshold"] == 0.5
    assert config["mode"] == "host"
    ctx = seen["init"]
    assert (ctx.name, ctx.version, ctx.path) == ("a", "1.0.0", tmp_path / "a")
    assert ctx.config == config
    assert ctx.hook is rig.registry.pm.hook
    assert ctx.logger.name == "helixhooks.plugin.a"
    assert seen["start"] == ctx
    assert rig.lifecycle.context("a") == ctx


def test_capability_hooks_are_live_only_while_started(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    answer = rig.registry.pm.hook.answer

    assert answer() == []
    rig.lifecycle.init("a")
    assert answer() == []
    rig.lifecycle.start("a")
    assert answer() == ["a"]
    assert rig.registry.is_active("a")
    rig.lifecycle.stop("a")
    assert answer() == []
    rig.lifecycle.start("a")
    assert answer() == ["a"]


def test_a_plugin_stopping_is_already_out_of_the_live_manager(tmp_path: Path) -> None:
    answers_during_stop: list[list[str]] = []

    def stop(ctx: PluginContext) -> None:
        assert ctx.hook is not None
        answers_during_stop.append(ctx.hook.answer())

    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"stop": stop}})
    rig.lifecycle.start_all()

    rig.lifecycle.stop("a")

    assert answers_during_stop == [[]]


def test_a_plugin_that_does_not_fit_hookspecs_added_later_fails_to_start(tmp_path: Path) -> None:
    misfit = RECORDING_PLUGIN + (
        "\n    @hookimpl(optionalhook=True)\n    def later(self, wrong_name):\n        return 1\n"
    )
    rig = make_rig(tmp_path, {"a": (), "x": ()}, sources={"a": misfit})

    class LaterSpec:
        @hookspec
        def later(self, value: int) -> int | None:
            """A hook the host declares after the plugins were loaded."""

    rig.registry.add_hookspecs(LaterSpec)

    assert rig.lifecycle.start_all() == ["x"]

    error = rig.error("a")
    assert isinstance(error, LoadError)
    assert "wrong_name" in str(error)
    assert rig.state("a") is PluginState.FAILED
    # It had started: its stop ran to release what start took.
    assert rig.calls("stop") == ["a"]
    assert rig.registry.pm.hook.answer() == ["x"]


def test_lifecycle_hooks_may_omit_ctx(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"bare": ()}, sources={"bare": CTXLESS_PLUGIN})

    assert rig.lifecycle.start_all() == ["bare"]
    assert rig.registry.pm.hook.answer() == ["ctxless"]
    rig.lifecycle.stop_all()

    plugin = rig.registry.get("bare").plugin  # type: ignore[union-attr]
    assert plugin.calls == ["init", "start", "stop"]  # type: ignore[union-attr]


def test_durations_go_to_record_timings_and_metrics(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    rig.lifecycle.start_all()

    record = rig.registry.get("a")
    assert record is not None
    assert {"init", "start"} <= set(record.timings)
    stats = rig.metrics.get_stats("a")
    assert stats.init_time == record.timings["init"]
    assert stats.start_time == record.timings["start"]
    started = next(e for e in rig.events if e.kind == "started")
    assert started.duration == record.timings["start"]
    assert started.version == "1.0.0"


def test_a_raising_subscriber_is_logged_and_the_lifecycle_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(tmp_path, {"a": (), "b": ("a",)})

    def broken_subscriber(event: PluginEvent) -> None:
        raise ValueError("subscriber bug")

    lifecycle = LifecycleManager(
        rig.loader, rig.registry, config=rig.lifecycle.config, on_event=broken_subscriber
    )

    assert lifecycle.start_all() == ["a", "b"]
    assert "event subscriber failed" in caplog.text


def test_fail_stops_a_started_plugin_and_marks_it_failed(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": ()})
    rig.lifecycle.start_all()
    reason = LifecycleError("given up", plugin="a")

    rig.lifecycle.fail("a", reason)

    assert rig.calls("stop") == ["a"]
    assert rig.state("a") is PluginState.FAILED
    assert rig.error("a") is reason
    assert rig.registry.pm.hook.answer() == []
    assert rig.kinds("a")[-2:] == ["stopped", "failed"]


def test_plugin_code_runs_without_the_registry_lock(tmp_path: Path) -> None:
    could_lock: list[bool] = []

    def start(ctx: PluginContext) -> None:
        # Runs in the hook's worker thread; the registry's RLock is free unless the host holds it.
        acquired = rig.registry.lock.acquire(timeout=5)
        could_lock.append(acquired)
        if acquired:
            rig.registry.lock.release()

    rig = make_rig(tmp_path, {"a": ()}, actions={"a": {"start": start}})
    rig.lifecycle.start_all()

    assert could_lock == [True]
    assert rig.state("a") is PluginState.STARTED


@pytest.mark.usefixtures("fast_switching")
def test_hook_callers_see_a_plugin_whole_while_it_starts_and_stops(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {"a": (), "steady": ()})
    rig.lifecycle.start_all()
    stop = threading.Event()
    bad: list[object] = []

    def call_hooks() -> None:
        while not stop.is_set():
            try:
                answers = rig.registry.pm.hook.answer()
            except Exception as exc:
                bad.append(exc)
                return
            if sorted(answers) not in (["steady"], ["a", "steady"]):
                bad.append(answers)

    callers = [threading.Thread(target=call_hooks) for _ in range(4)]
    for thread in callers:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        for _ in range(30):
            rig.lifecycle.stop("a")
            rig.lifecycle.start("a")
            assert time.monotonic() < deadline, "lifecycle operations took too long"
    finally:
        stop.set()
        for thread in callers:
            thread.join(10)
    assert not any(thread.is_alive() for thread in callers)
    assert bad == []


OPERATIONS = ("init", "start", "stop", "restart")


@given(st.lists(st.tuples(st.sampled_from(OPERATIONS), st.sampled_from("ab")), max_size=12))
def test_hooks_are_live_exactly_while_started(steps: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        rig = make_rig(Path(root), {"a": (), "b": ("a",)})
        _OPEN_RIGS.remove(rig)  # closed here, per example, not once per test
        try:
            _drive(rig, steps)
        finally:
            rig.close()


def _drive(rig: Rig, steps: list[tuple[str, str]]) -> None:
    for operation, name in steps:
        before = rig.state(name)
        try:
            getattr(rig.lifecycle, operation)(name)
        except (LifecycleError, DependencyError):
            assert rig.state(name) is before
        for plugin in "ab":
            state = rig.state(plugin)
            assert rig.registry.is_active(plugin) == (state is PluginState.STARTED)
        # A started plugin's dependencies are started, whatever the operations were.
        assert rig.state("b") is not PluginState.STARTED or rig.state("a") is PluginState.STARTED
    assert sorted(rig.registry.pm.hook.answer()) == [
        p for p in "ab" if rig.state(p) is PluginState.STARTED
    ]


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[_bounded._Workers]:
    """A worker pool of this test's own, its idle workers ended afterwards."""
    pool = _bounded._Workers(keep=2, idle_timeout=60.0)
    monkeypatch.setattr(_bounded, "_WORKERS", pool)
    yield pool
    # With no room left in the pool, each idle worker ends after one more call.
    pool.keep = 0
    ended = []
    while pool._idle:
        run = BoundedCall(threading.current_thread, plugin="pool", phase="teardown")
        assert run.wait(10)
        ended.append(run.value)
    for thread in ended:
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()


def current_thread_name() -> str:
    return threading.current_thread().name


def test_bounded_calls_one_after_another_reuse_one_named_worker(
    workers: _bounded._Workers,
) -> None:
    threads = []
    for phase in ("init", "start", "stop"):
        run = BoundedCall(threading.current_thread, plugin="p", phase=phase)
        assert run.wait(10)
        threads.append(run.value)
        named = BoundedCall(current_thread_name, plugin="p", phase=phase)
        assert named.wait(10)
        assert named.value == f"helixhooks-{phase}-p"

    worker = threads[0]
    assert worker is not threading.current_thread()
    assert threads == [worker] * 3
    # Between calls it waits in the pool, under a name that says so.
    assert worker is not None and worker.is_alive()
    assert worker.name == "helixhooks-worker-idle"


def test_a_worker_whose_call_was_abandoned_is_never_reused(workers: _bounded._Workers) -> None:
    release = threading.Event()

    def hang() -> threading.Thread:
        release.wait(30)
        return threading.current_thread()

    hung = BoundedCall(hang, plugin="p", phase="start")
    try:
        assert not hung.wait(0.05)
        hung_thread = next(t for t in threading.enumerate() if t.name == "helixhooks-start-p")
        later = BoundedCall(threading.current_thread, plugin="p", phase="init")
        assert later.wait(10)
        assert later.value is not hung_thread
    finally:
        release.set()

    # Once its call ends the abandoned worker ends too: it does not rejoin the pool.
    hung_thread.join(10)
    assert not hung_thread.is_alive()
    assert hung.value is hung_thread
    again = BoundedCall(threading.current_thread, plugin="p", phase="init")
    assert again.wait(10)
    assert again.value is later.value


def test_the_pool_keeps_at_most_keep_idle_workers(workers: _bounded._Workers) -> None:
    together = threading.Barrier(4, timeout=10)

    def meet() -> threading.Thread:
        together.wait()
        return threading.current_thread()

    runs = [BoundedCall(meet, plugin=f"p{i}", phase="health_check") for i in range(4)]
    assert all(run.wait(10) for run in runs)
    threads = {run.value for run in runs}
    assert len(threads) == 4

    idle = {worker._thread for worker in workers._idle}
    assert len(idle) == workers.keep == 2
    for thread in threads - idle:
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()
    assert all(thread.is_alive() for thread in idle)


def test_an_idle_worker_ends_after_its_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _bounded._Workers(keep=2, idle_timeout=0.01)
    monkeypatch.setattr(_bounded, "_WORKERS", pool)
    first = BoundedCall(threading.current_thread, plugin="p", phase="init")
    assert first.wait(10)
    assert first.value is not None
    first.value.join(10)
    assert not first.value.is_alive()
    assert pool._idle == []

    second = BoundedCall(threading.current_thread, plugin="p", phase="start")
    assert second.wait(10)
    assert second.value is not first.value
    assert second.value is not None
    second.value.join(10)
    assert not second.value.is_alive()


@pytest.mark.usefixtures("fast_switching")
def test_no_call_is_lost_when_a_worker_times_out_as_it_is_handed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Idle workers give up almost at once while four threads keep handing calls over, so
    # hand-overs race with workers leaving the pool.
    pool = _bounded._Workers(keep=2, idle_timeout=1e-5)
    monkeypatch.setattr(_bounded, "_WORKERS", pool)
    lost: list[tuple[int, int]] = []
    workers: set[threading.Thread] = set()

    def submit(submitter: int) -> None:
        for i in range(150):
            run = BoundedCall(threading.current_thread, plugin=f"p{submitter}", phase="x")
            if not run.wait(10) or run.value is None:
                lost.append((submitter, i))
                return
            workers.add(run.value)

    submitters = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(60)
    assert not any(thread.is_alive() for thread in submitters)
    assert lost == []
    for thread in workers:
        thread.join(10)
        assert not thread.is_alive()


BARE_PLUGIN = """
from helixhooks.markers import hookimpl


class Plugin:
    @hookimpl
    def answer(self):
        return "bare"
"""


def test_a_plugin_without_lifecycle_hooks_runs_no_thread(
    tmp_path: Path, workers: _bounded._Workers
) -> None:
    rig = make_rig(tmp_path, {"bare": ()}, sources={"bare": BARE_PLUGIN})
    # Loading ran the plugin's module on a worker (imports are bounded too); that one is idle.
    workers._idle.clear()

    assert rig.lifecycle.start_all() == ["bare"]
    assert rig.registry.pm.hook.answer() == ["bare"]
    rig.lifecycle.stop_all()
    rig.lifecycle.restart("bare")

    # Any call run would have left its worker idle in the pool.
    assert workers._idle == []
    assert rig.kinds("bare") == ["started", "stopped", "started"]
    record = rig.registry.get("bare")
    assert record is not None
    assert record.timings == {"init": 0.0, "start": 0.0, "stop": 0.0}
    assert rig.metrics.get_stats("bare").start_time == 0.0

    # A plugin that has the hooks does run them, on a pooled worker.
    full = make_rig(tmp_path / "full", {"full": ()})
    workers._idle.clear()
    assert full.lifecycle.start_all() == ["full"]
    assert full.calls("start") == ["full"]
    assert len(workers._idle) == 1
