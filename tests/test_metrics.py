"""Metrics: figures per plugin and hook, and pluggy's semantics kept through the timed dispatch."""

from __future__ import annotations

import json
import math
import threading
import time
import types
from collections.abc import Callable, Generator

import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks import metrics as metrics_module
from helixhooks._dispatch import FOLD_EVERY, Dispatch
from helixhooks.markers import PROJECT_NAME, hookimpl, hookspec
from helixhooks.metrics import CallStats, Metrics, PluginStats


class Spec:
    @hookspec
    def compute(self, a: int, b: int) -> int:  # type: ignore[empty-body]
        """Two arguments: impls may take any subset."""

    @hookspec(firstresult=True)
    def pick(self, a: int) -> int:  # type: ignore[empty-body]
        """First non-None result wins."""

    @hookspec
    def combine(self, a: int, b: int, c: int) -> object:
        """Three arguments, for impls taking more than two."""

    @hookspec(historic=True)
    def announce(self, word: str) -> None:
        """Replayed to plugins registered later."""


def _plugin(
    body: Callable[..., object],
    hook: str = "compute",
    *,
    tryfirst: bool = False,
    trylast: bool = False,
) -> object:
    """A plugin module whose ``hook`` impl is ``body``; pluggy passes the arguments it names."""
    plugin = types.ModuleType("plugin")
    setattr(plugin, hook, hookimpl(tryfirst=tryfirst, trylast=trylast)(body))
    return plugin


def _returning(value: object) -> Callable[[int], object]:
    # A closure, not a default argument: pluggy treats parameters with defaults differently.
    return lambda a: value


def _appending_to(seen: list[int]) -> Callable[[int], None]:
    return lambda a: seen.append(a)


def _noting(called: list[str], label: str, value: int | None) -> Callable[[int], int | None]:
    def impl(a: int) -> int | None:
        called.append(label)
        return value

    return impl


def _timed_manager() -> tuple[pluggy.PluginManager, Metrics]:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(Spec)
    metrics = Metrics()
    Dispatch(pm, metrics)
    return pm, metrics


def _bare() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(Spec)
    return pm


def _count(metrics: Metrics, name: str, hook: str) -> int:
    stats = metrics.get_stats(name).hooks.get(hook)
    return stats.count if stats else 0


# -- pluggy semantics through the installed dispatch ------------------------------------------


def test_results_come_in_pluggy_order_with_tryfirst_and_trylast() -> None:
    timed, metrics = _timed_manager()
    bare = _bare()
    for pm in (timed, bare):
        pm.register(_plugin(lambda a: ("plain1", a)), name="plain1")
        pm.register(_plugin(lambda a: ("first", a), tryfirst=True), name="first")
        pm.register(_plugin(lambda b: ("plain2", b)), name="plain2")
        pm.register(_plugin(lambda: ("last", 0), trylast=True), name="last")
    expected = bare.hook.compute(a=1, b=2)
    assert expected[0] == ("first", 1)
    assert timed.hook.compute(a=1, b=2) == expected
    for name in ("plain1", "first", "plain2", "last"):
        assert _count(metrics, name, "compute") == 1


def test_none_results_are_dropped_but_counted() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: None), name="quiet")
    pm.register(_plugin(lambda a: a), name="loud")
    assert pm.hook.compute(a=3, b=4) == [3]
    assert _count(metrics, "quiet", "compute") == 1
    assert _count(metrics, "loud", "compute") == 1


def test_firstresult_stops_at_first_value_and_skips_the_rest() -> None:
    pm, metrics = _timed_manager()
    called: list[str] = []
    pm.register(_plugin(_noting(called, "late", 20), "pick"), name="late")
    pm.register(_plugin(_noting(called, "mid", 2), "pick"), name="mid")
    pm.register(_plugin(_noting(called, "early", None), "pick"), name="early")
    assert pm.hook.pick(a=2) == 2
    assert called == ["early", "mid"]
    assert _count(metrics, "early", "pick") == 1
    assert _count(metrics, "mid", "pick") == 1
    assert "pick" not in metrics.get_stats("late").hooks


def test_firstresult_with_no_value_returns_none() -> None:
    pm, _ = _timed_manager()
    pm.register(_plugin(lambda a: None, "pick"), name="nothing")
    assert pm.hook.pick(a=1) is None


@pytest.mark.parametrize("shape", ["one argument", "two arguments", "mixed"])
def test_an_impl_exception_propagates_and_counts_as_an_error(shape: str) -> None:
    pm, metrics = _timed_manager()
    boom = ValueError("boom")
    called: list[str] = []

    def fail(a: int, b: int) -> None:
        raise boom

    def fail_one(a: int) -> None:
        raise boom

    if shape == "one argument":
        after, failing, before = (
            lambda a: called.append("after"),
            fail_one,
            lambda a: called.append("before"),
        )
    elif shape == "two arguments":
        after, failing, before = (
            lambda a, b: called.append("after"),
            fail,
            lambda a, b: called.append("before"),
        )
    else:
        after, failing, before = (
            lambda: called.append("after"),
            fail,
            lambda a: called.append("before"),
        )
    pm.register(_plugin(after), name="after")
    pm.register(_plugin(failing), name="failing")
    pm.register(_plugin(before), name="before")
    with pytest.raises(ValueError, match="boom") as info:
        pm.hook.compute(a=1, b=2)
    assert info.value is boom
    assert called == ["before"]
    failing = metrics.get_stats("failing").hooks["compute"]
    assert (failing.count, failing.errors) == (1, 1)
    assert metrics.get_stats("before").hooks["compute"].errors == 0
    assert "compute" not in metrics.get_stats("after").hooks


def test_a_missing_argument_is_pluggys_hook_call_error() -> None:
    timed, metrics = _timed_manager()
    bare = _bare()
    side_effects: dict[str, list[int]] = {"timed": [], "bare": []}
    for label, pm in (("timed", timed), ("bare", bare)):
        pm.register(_plugin(lambda b: b), name="needs_b")
        pm.register(_plugin(_appending_to(side_effects[label])), name="a")
    with (
        pytest.warns(UserWarning, match="cannot be found"),
        pytest.raises(pluggy.HookCallError) as expected,
    ):
        bare.hook.compute(a=1)
    with (
        pytest.warns(UserWarning, match="cannot be found"),
        pytest.raises(pluggy.HookCallError) as got,
    ):
        timed.hook.compute(a=1)
    assert str(got.value) == str(expected.value) == "hook call must provide argument 'b'"
    assert side_effects == {"timed": [1], "bare": [1]}
    # pluggy raised before calling needs_b: not the plugin's error, and not a call.
    assert "compute" not in metrics.get_stats("needs_b").hooks


@pytest.mark.parametrize(
    "body",
    [lambda: 7, lambda c: c, lambda c, a: (c, a), lambda b, c, a: (b, c, a)],
    ids=["none", "one", "two", "three"],
)
def test_impls_get_exactly_the_arguments_they_name(body: Callable[..., object]) -> None:
    timed, _ = _timed_manager()
    bare = _bare()
    timed.register(_plugin(body, "combine"), name="p")
    bare.register(_plugin(body, "combine"), name="p")
    assert timed.hook.combine(a=1, b=2, c=3) == bare.hook.combine(a=1, b=2, c=3)


@pytest.mark.parametrize("body", [lambda c: c, lambda a, c: c, lambda a, b, c: c])
def test_a_missing_argument_is_named_for_every_arity(body: Callable[..., object]) -> None:
    pm, _ = _timed_manager()
    pm.register(_plugin(body, "combine"), name="p")
    with (
        pytest.warns(UserWarning, match="cannot be found"),
        pytest.raises(pluggy.HookCallError, match="must provide argument 'c'"),
    ):
        pm.hook.combine(a=1, b=2)


def test_keyword_defaults_are_passed_as_the_installed_pluggy_passes_them() -> None:
    timed, metrics = _timed_manager()
    bare = _bare()
    for pm in (timed, bare):
        pm.register(_plugin(lambda a, b=100: (a, b)), name="defaults")
    assert timed.hook.compute(a=1, b=2) == bare.hook.compute(a=1, b=2)
    assert _count(metrics, "defaults", "compute") == 1


class OldStyleWrapper:
    def __init__(self) -> None:
        self.seen: list[object] = []

    @hookimpl(hookwrapper=True)
    def compute(self, a: int) -> Generator[None, pluggy.Result[list[int]], None]:
        outcome = yield
        self.seen.append(outcome.get_result())
        outcome.force_result([*outcome.get_result(), -a])


class NewStyleWrapper:
    @hookimpl(wrapper=True)
    def compute(self, a: int) -> Generator[None, list[int], list[int]]:
        try:
            result = yield
        except ValueError:
            return [-1]
        return [a * 1000, *result]


def test_old_style_hookwrapper_sees_and_replaces_the_result() -> None:
    pm, metrics = _timed_manager()
    wrapper = OldStyleWrapper()
    pm.register(wrapper, name="wrapper")
    pm.register(_plugin(lambda a: a), name="inner")
    assert pm.hook.compute(a=5, b=0) == [5, -5]
    assert wrapper.seen == [[5]]
    assert _count(metrics, "inner", "compute") == 1
    # A wrapper's duration would include the impls it wraps; it is not counted as a call.
    assert metrics.get_stats("wrapper").hooks == {}


def test_new_style_wrapper_can_handle_an_impl_error() -> None:
    pm, metrics = _timed_manager()
    fail = {"now": False}

    def body(a: int) -> int:
        if fail["now"]:
            raise ValueError("inner failed")
        return a

    pm.register(NewStyleWrapper(), name="wrapper")
    pm.register(_plugin(body), name="inner")
    assert pm.hook.compute(a=2, b=0) == [2000, 2]
    fail["now"] = True
    assert pm.hook.compute(a=2, b=0) == [-1]
    inner = metrics.get_stats("inner").hooks["compute"]
    assert (inner.count, inner.errors) == (2, 1)


def test_historic_calls_reach_plugins_registered_later() -> None:
    pm, metrics = _timed_manager()
    heard: list[tuple[str, str]] = []
    pm.register(_plugin(lambda word: heard.append(("early", word)), "announce"), name="early")
    pm.hook.announce.call_historic(kwargs={"word": "hi"})
    pm.register(_plugin(lambda word: heard.append(("late", word)), "announce"), name="late")
    assert heard == [("early", "hi"), ("late", "hi")]
    assert _count(metrics, "early", "announce") == 1
    assert _count(metrics, "late", "announce") == 1


def test_call_extra_runs_temporary_methods_too() -> None:
    timed, metrics = _timed_manager()
    bare = _bare()

    def extra(a: int) -> str:
        return f"extra{a}"

    for pm in (timed, bare):
        pm.register(_plugin(lambda a: a), name="p")
    expected = bare.hook.compute.call_extra([extra], {"a": 1, "b": 2})
    assert timed.hook.compute.call_extra([extra], {"a": 1, "b": 2}) == expected
    assert timed.hook.compute.call_extra([extra], {"a": 1, "b": 2}) == expected
    assert _count(metrics, "p", "compute") == 2
    assert _count(metrics, "<temp>", "compute") == 2


def test_subset_hook_caller_alternating_with_the_full_hook() -> None:
    pm, metrics = _timed_manager()
    plugins = {name: _plugin(_returning(name)) for name in "xyz"}
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    subset = pm.subset_hook_caller("compute", remove_plugins=[plugins["y"]])
    for _ in range(3):
        assert subset(a=0, b=0) == ["z", "x"]
        assert pm.hook.compute(a=0, b=0) == ["z", "y", "x"]
    assert [_count(metrics, name, "compute") for name in "xyz"] == [6, 3, 6]


def test_one_impl_calls_interleaved_with_hook_calls() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: "one"), name="one")
    pm.register(_plugin(lambda a: "two"), name="two")
    impls = pm.hook.compute.get_hookimpls()
    for _ in range(3):
        assert pm._hookexec("compute", [impls[0]], {"a": 1}, False) == ["one"]
        assert pm.hook.compute(a=1, b=1) == ["two", "one"]
    assert (_count(metrics, "one", "compute"), _count(metrics, "two", "compute")) == (6, 3)


def test_registering_and_unregistering_changes_who_is_called() -> None:
    pm, metrics = _timed_manager()
    first = _plugin(lambda a: "first")
    pm.register(first, name="first")
    assert pm.hook.compute(a=1, b=2) == ["first"]
    pm.register(_plugin(lambda a: "second"), name="second")
    assert pm.hook.compute(a=1, b=2) == ["second", "first"]
    pm.unregister(first)
    assert pm.hook.compute(a=1, b=2) == ["second"]
    assert (_count(metrics, "first", "compute"), _count(metrics, "second", "compute")) == (2, 2)


_impl_specs = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-3, 3)),
        st.sampled_from(["plain", "tryfirst", "trylast"]),
        # how many of the hook's arguments the impl takes: all-one, all-two and mixed lists
        # run through different loops of the dispatch
        st.integers(0, 2),
    ),
    max_size=6,
)


def _taking(arity: int, value: object) -> Callable[..., object]:
    return [lambda: value, lambda a: (value, a), lambda a, b: (value, a, b)][arity]


@given(impls=_impl_specs, firstresult=st.booleans())
def test_results_match_bare_pluggy(
    impls: list[tuple[int | None, str, int]], firstresult: bool
) -> None:
    hook = "pick" if firstresult else "compute"
    timed, metrics = _timed_manager()
    bare = _bare()
    for index, (value, order, arity) in enumerate(impls):
        # pick's spec has one argument
        arity = min(arity, 1) if firstresult else arity
        impl = _returning(value) if value is None else _taking(arity, value)
        first, last = order == "tryfirst", order == "trylast"
        for pm in (timed, bare):
            pm.register(_plugin(impl, hook, tryfirst=first, trylast=last), name=f"p{index}")
    assert getattr(timed.hook, hook)(a=1, b=2) == getattr(bare.hook, hook)(a=1, b=2)
    called = sum(_count(metrics, f"p{index}", hook) for index in range(len(impls)))
    if firstresult and any(value is not None for value, _, _ in impls):
        assert 1 <= called <= len(impls)
    else:
        assert called == len(impls)


# -- tracing on top ------------------------------------------------------------------------------


def test_tracing_enabled_after_install_sees_timed_calls() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: a), name="p")
    seen: list[object] = []
    pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: None, lambda outcome, *rest: seen.append(outcome.get_result())
    )
    assert pm.hook.compute(a=4, b=0) == [4]
    assert seen == [[4]]
    assert _count(metrics, "p", "compute") == 1


# -- the figures --------------------------------------------------------------------------------


def _nearest_rank(samples: list[float], percent: int) -> float:
    ordered = sorted(samples)
    return ordered[max(1, -(-len(ordered) * percent // 100)) - 1]


_durations = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1e3)), min_size=1, max_size=300
)


@given(samples=_durations, errors=st.integers(0, 5))
def test_recorded_figures_are_exact_and_percentiles_close(
    samples: list[float], errors: int
) -> None:
    metrics = Metrics()
    for index, seconds in enumerate(samples):
        metrics.record_call("p", "hook", seconds, error=index < errors)
    stats = metrics.get_stats("p").hooks["hook"]
    assert stats.count == len(samples)
    assert stats.errors == min(errors, len(samples))
    assert math.isclose(stats.total, math.fsum(samples), rel_tol=1e-9, abs_tol=1e-12)
    assert (stats.min, stats.max) == (min(samples), max(samples))
    for percent, got in ((50, stats.p50), (95, stats.p95), (99, stats.p99)):
        exact = _nearest_rank(samples, percent)
        assert abs(got - exact) <= exact / 64 + 1e-300
        assert stats.min <= got <= stats.max


def test_percentiles_of_a_known_spread() -> None:
    metrics = Metrics()
    for millis in range(1, 1001):
        metrics.record_call("p", "hook", millis / 1000)
    stats = metrics.get_stats("p").hooks["hook"]
    assert stats.p50 == pytest.approx(0.500, rel=1 / 64)
    assert stats.p95 == pytest.approx(0.950, rel=1 / 64)
    assert stats.p99 == pytest.approx(0.990, rel=1 / 64)
    assert (stats.min, stats.max) == (0.001, 1.0)


def test_figures_survive_many_folds() -> None:
    metrics = Metrics()
    rounds = 3 * metrics_module._MAX_BUFFERED + 17
    for index in range(rounds):
        metrics.record_call("p", "hook", 0.002 if index % 10 else 0.001)
        if index % 1000 == 0:
            metrics.get_stats("p")
    stats = metrics.get_stats("p").hooks["hook"]
    assert stats.count == rounds
    assert stats.p50 == pytest.approx(0.002, rel=1 / 64)
    assert stats.min == 0.001


@pytest.mark.parametrize("seconds", [-1e-9, math.nan, math.inf])
def test_impossible_durations_are_refused(seconds: float) -> None:
    metrics = Metrics()
    for record in (metrics.record_load, metrics.record_init, metrics.record_start):
        with pytest.raises(ValueError, match="duration"):
            record("p", seconds)
    with pytest.raises(ValueError, match="duration"):
        metrics.record_call("p", "hook", seconds)
    assert metrics.snapshot() == {}


def test_unknown_plugin_has_empty_stats() -> None:
    assert Metrics().get_stats("nobody") == PluginStats(None, None, None, {})


def test_lifecycle_durations_are_kept_per_plugin() -> None:
    metrics = Metrics()
    metrics.record_load("p", 0.5)
    metrics.record_init("p", 0.25)
    metrics.record_start("p", 0.125)
    metrics.record_load("q", 1.0)
    metrics.record_load("p", 0.75)
    assert metrics.get_stats("p") == PluginStats(0.75, 0.25, 0.125, {})
    assert metrics.get_stats("q") == PluginStats(1.0, None, None, {})


def test_snapshot_is_plain_json_data() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: a), name="p")
    pm.hook.compute(a=1, b=1)
    metrics.record_load("p", 0.5)
    metrics.record_call("q", "other", 0.25, error=True)
    snapshot = json.loads(json.dumps(metrics.snapshot()))
    assert sorted(snapshot) == ["p", "q"]
    assert snapshot["p"]["load_time"] == 0.5
    assert snapshot["p"]["init_time"] is None
    assert snapshot["p"]["hooks"]["compute"]["count"] == 1
    assert snapshot["q"]["hooks"]["other"] == {
        "count": 1,
        "errors": 1,
        "total": 0.25,
        "min": 0.25,
        "max": 0.25,
        "p50": 0.25,
        "p95": 0.25,
        "p99": 0.25,
    }


def test_forget_drops_figures_and_later_calls_count_afresh() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: a), name="p")
    pm.register(_plugin(lambda a: a), name="keep")
    for _ in range(3):
        pm.hook.compute(a=1, b=1)
    metrics.record_load("p", 0.5)
    # As PluginSystem.unload does: out of the manager first, then its figures go.
    pm.unregister(name="p")
    metrics.forget("p")
    assert metrics.get_stats("p") == PluginStats()
    assert "p" not in metrics.snapshot()
    pm.register(_plugin(lambda a: a), name="p")
    pm.hook.compute(a=1, b=1)
    assert _count(metrics, "p", "compute") == 1
    assert _count(metrics, "keep", "compute") == 4


def test_durations_go_to_the_impl_that_took_them() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: a), name="quick_after")
    pm.register(_plugin(lambda a: time.sleep(0.02)), name="slow")
    pm.register(_plugin(lambda a: a), name="quick_before")
    pm.register(NewStyleWrapper(), name="wrapper")
    pm.hook.compute(a=1, b=1)
    pm.unregister(name="wrapper")
    pm.hook.compute(a=1, b=1)
    slow = metrics.get_stats("slow").hooks["compute"]
    assert slow.count == 2
    assert slow.min >= 0.015
    assert slow.total >= 0.03


def test_raw_samples_stay_bounded_under_many_calls() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: a), name="p")
    calls = 3 * FOLD_EVERY + 5
    for _ in range(calls):
        pm.hook.compute(a=1, b=1)
    assert len(metrics._slots["p"]["compute"].samples) <= FOLD_EVERY
    assert _count(metrics, "p", "compute") == calls


# -- threads ------------------------------------------------------------------------------------


def _run_threads(count: int, target: Callable[[], None]) -> None:
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


class PassThroughWrapper:
    @hookimpl(wrapper=True)
    def compute(self) -> Generator[None, list[int], list[int]]:
        return (yield)


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "wrapped"])
@pytest.mark.usefixtures("fast_switching")
def test_counts_are_exact_under_concurrent_calls_and_reads(wrapped: bool) -> None:
    pm, metrics = _timed_manager()

    def flaky(a: int) -> int:
        if a % 2:
            raise ValueError("odd")
        return a

    # Registered first so it runs last: "steady" is called whether or not flaky raises.
    pm.register(_plugin(flaky), name="flaky")
    pm.register(_plugin(lambda a: a), name="steady")
    if wrapped:
        pm.register(PassThroughWrapper(), name="wrapper")
    calls_per_thread = 3000
    stop_reading = threading.Event()

    def caller() -> None:
        for index in range(calls_per_thread):
            try:
                pm.hook.compute(a=index, b=0)
            except ValueError:
                assert index % 2

    partial_reads: list[CallStats] = []

    def reader() -> None:
        while not stop_reading.is_set():
            metrics.snapshot()
            flaky_so_far = metrics.get_stats("flaky").hooks.get("compute")
            if flaky_so_far is not None:
                partial_reads.append(flaky_so_far)

    reading = threading.Thread(target=reader)
    reading.start()
    try:
        _run_threads(8, caller)
    finally:
        stop_reading.set()
        reading.join(timeout=60)
    assert not reading.is_alive()
    assert partial_reads
    assert all(read.errors <= read.count for read in partial_reads)
    steady = metrics.get_stats("steady").hooks["compute"]
    flaky_stats = metrics.get_stats("flaky").hooks["compute"]
    assert steady.count == 8 * calls_per_thread
    assert (flaky_stats.count, flaky_stats.errors) == (8 * calls_per_thread, 4 * calls_per_thread)


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_calls_while_plugins_come_and_go() -> None:
    pm, metrics = _timed_manager()
    pm.register(_plugin(lambda a: "steady"), name="steady")
    calls_per_thread = 2000
    done = threading.Event()

    def caller() -> None:
        for _ in range(calls_per_thread):
            assert "steady" in pm.hook.compute(a=0, b=0)

    def churn() -> None:
        while not done.is_set():
            plugin = _plugin(lambda a: "passing")
            pm.register(plugin, name="passing")
            pm.unregister(plugin)
            metrics.forget("passing")

    churning = threading.Thread(target=churn)
    churning.start()
    try:
        _run_threads(8, caller)
    finally:
        done.set()
        churning.join(timeout=60)
    assert not churning.is_alive()
    assert _count(metrics, "steady", "compute") == 8 * calls_per_thread


def test_stats_types() -> None:
    metrics = Metrics()
    metrics.record_call("p", "hook", 0.5)
    stats = metrics.get_stats("p")
    assert isinstance(stats.hooks["hook"], CallStats)
    with pytest.raises(AttributeError):
        stats.load_time = 1.0  # type: ignore[misc]


def test_histograms_count_calls_under_each_bound_cumulatively() -> None:
    metrics = Metrics()
    for seconds in (0.001, 0.002, 0.002, 0.03, 0.5, 0.0):
        metrics.record_call("p", "hook", seconds, error=seconds > 0.1)
    metrics.record_call("p", "other", 2.0)
    found = metrics.histograms("p", [0.0015, 0.01, 0.1, 1.0])
    assert sorted(found) == ["hook", "other"]
    hook = found["hook"]
    assert hook.counts == (2, 4, 5, 6)
    assert (hook.count, hook.errors) == (6, 1)
    assert hook.total == pytest.approx(0.535)
    assert found["other"].counts == (0, 0, 0, 0)
    assert metrics.histograms("nobody", [1.0]) == {}
    with pytest.raises(ValueError, match="ascend"):
        metrics.histograms("p", [1.0, 0.5])


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=50))
def test_histogram_counts_agree_with_the_samples_within_a_bucket(samples: list[float]) -> None:
    metrics = Metrics()
    for seconds in samples:
        metrics.record_call("p", "hook", seconds)
    bounds = [1e-6, 1e-3, 0.01, 0.1, 1.0, 5.0]
    histogram = metrics.histograms("p", bounds)["hook"]
    assert histogram.count == len(samples)
    for bound, counted in zip(bounds, histogram.counts, strict=True):
        # A sample within 1.6% of a bound may count on either side of it.
        assert (
            sum(s <= bound / 1.02 for s in samples)
            <= counted
            <= sum(s <= bound * 1.02 for s in samples)
        )


def test_totals_merge_a_plugins_hooks() -> None:
    metrics = Metrics()
    for _ in range(99):
        metrics.record_call("p", "fast", 0.001)
    metrics.record_call("p", "slow", 1.0, error=True)
    metrics.record_call("p", "helix_health_check", 5.0)
    totals = metrics.totals("p", hooks={"fast", "slow"})
    assert totals is not None
    assert (totals.count, totals.errors, totals.min, totals.max) == (100, 1, 0.001, 1.0)
    assert totals.p50 == pytest.approx(0.001, rel=0.02) and totals.p99 == pytest.approx(
        0.001, rel=0.02
    )
    everything = metrics.totals("p")
    assert everything is not None and everything.count == 101
    assert metrics.totals("p", hooks=()) is None and metrics.totals("nobody") is None


def test_events_are_counted_per_plugin_and_forgotten_with_it() -> None:
    metrics = Metrics()
    for kind in ("reloaded", "reloaded", "reload_failed"):
        metrics.record_event("p", kind)
    assert metrics.get_stats("p").events == {"reloaded": 2, "reload_failed": 1}
    assert json.loads(json.dumps(metrics.snapshot()))["p"]["events"]["reloaded"] == 2
    metrics.forget("p")
    assert metrics.get_stats("p") == PluginStats()
