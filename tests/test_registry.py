"""Registry: records and states, version history, activation, and the atomic swap."""

from __future__ import annotations

import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks.errors import LifecycleError, LoadError
from helixhooks.loader import LoadedPlugin, Loader
from helixhooks.markers import PROJECT_NAME, hookspec
from helixhooks.metrics import Metrics
from helixhooks.plugin import PluginCandidate, PluginInfo, PluginState
from helixhooks.registry import HISTORY_LIMIT, PluginRecord, Registry

from ._plugins import wait_for


class AgentSpec:
    @hookspec
    def analyze(self, text: str) -> object:
        """Score a text."""

    @hookspec
    def summarize(self, text: str) -> object:
        """Shorten a text."""


HOOK_HEADER = "from helixhooks.markers import hookimpl\n\n"


class PluginFactory:
    """Writes single-file plugins to disk and loads each with a real Loader."""

    def __init__(self, root: Path, loader: Loader) -> None:
        self.root = root
        self.loader = loader

    def __call__(self, name: str, body: str, version: str = "1.0.0") -> LoadedPlugin:
        path = self.root / f"{name}.py"
        path.write_text(HOOK_HEADER + textwrap.dedent(body))
        info = PluginInfo(name, version)
        return self.loader.load(PluginCandidate(info, path, "file"))


@pytest.fixture
def make_plugin(tmp_path: Path) -> Iterator[PluginFactory]:
    loader = Loader(specs=[AgentSpec])
    yield PluginFactory(tmp_path, loader)
    for name in {path.stem for path in tmp_path.glob("*.py")}:
        loader.unload(name)


def answering(tag: str, hook: str = "analyze", options: str = "") -> str:
    return f"@hookimpl{options}\ndef {hook}(text):\n    return {tag!r}\n"


@pytest.fixture
def registry() -> Registry:
    return Registry(specs=[AgentSpec])


def started(registry: Registry, loaded: LoadedPlugin) -> PluginRecord:
    record = registry.register(loaded)
    registry.set_state(loaded.info.name, PluginState.INITIALIZED)
    registry.set_state(loaded.info.name, PluginState.STARTED)
    registry.activate(loaded.info.name)
    return record


def test_add_records_a_discovered_plugin(registry: Registry) -> None:
    info = PluginInfo("alpha", "1.0.0")
    record = registry.add(info)
    assert record.state is PluginState.DISCOVERED
    assert (record.name, record.module, record.plugin) == ("alpha", None, None)
    assert registry.get("alpha") is record
    assert registry.get("missing") is None


def test_list_and_names_are_sorted(registry: Registry) -> None:
    for name in ("gamma", "alpha", "beta"):
        registry.add(PluginInfo(name, "1.0.0"))
    assert registry.names() == ["alpha", "beta", "gamma"]
    assert [record.name for record in registry.list()] == ["alpha", "beta", "gamma"]


def test_add_refuses_a_live_name_and_replaces_an_unloaded_one(registry: Registry) -> None:
    registry.add(PluginInfo("alpha", "1.0.0"))
    with pytest.raises(LifecycleError, match="already registered") as caught:
        registry.add(PluginInfo("alpha", "2.0.0"))
    assert caught.value.plugin == "alpha"
    registry.set_state("alpha", PluginState.UNLOADED)
    replacement = registry.add(PluginInfo("alpha", "2.0.0"))
    assert replacement.state is PluginState.DISCOVERED
    assert registry.get("alpha") is replacement


def test_valid_transitions_move_the_state_and_keep_the_error(registry: Registry) -> None:
    registry.add(PluginInfo("alpha", "1.0.0"))
    registry.set_state("alpha", PluginState.RESOLVED)
    failure = RuntimeError("init blew up")
    registry.set_state("alpha", PluginState.FAILED, failure)
    record = registry.get("alpha")
    assert record is not None
    assert record.state is PluginState.FAILED
    assert record.error is failure


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], PluginState.STARTED),
        ([PluginState.RESOLVED], PluginState.STOPPED),
        ([PluginState.UNLOADED], PluginState.DISCOVERED),
    ],
)
def test_invalid_transition_is_a_lifecycle_error_naming_both_states(
    registry: Registry, path: list[PluginState], target: PluginState
) -> None:
    registry.add(PluginInfo("alpha", "1.0.0"))
    for state in path:
        registry.set_state("alpha", state)
    record = registry.get("alpha")
    assert record is not None
    current = record.state
    with pytest.raises(LifecycleError) as caught:
        registry.set_state("alpha", target)
    assert caught.value.plugin == "alpha"
    assert current.value in str(caught.value)
    assert target.value in str(caught.value)
    assert record.state is current


def test_set_state_of_unknown_plugin_is_a_lifecycle_error(registry: Registry) -> None:
    with pytest.raises(LifecycleError, match="not registered"):
        registry.set_state("ghost", PluginState.RESOLVED)


def test_register_loads_a_record_and_appends_history(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    registry.add(PluginInfo("alpha", "1.0.0"))
    loaded = make_plugin("alpha", answering("a"), version="1.0.0")
    record = registry.register(loaded)
    assert record.state is PluginState.LOADED
    assert record.loaded is loaded
    assert record.module is loaded.module
    assert record.plugin is loaded.plugin
    assert registry.versions("alpha") == ["1.0.0"]
    assert not registry.is_active("alpha")


def test_register_creates_an_absent_record_and_refuses_a_loaded_one(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    loaded = make_plugin("beta", answering("b"))
    assert registry.register(loaded).state is PluginState.LOADED
    with pytest.raises(LifecycleError, match="loaded to loaded"):
        registry.register(loaded)


def test_unregister_drops_the_record_and_keeps_history(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    record = started(registry, make_plugin("alpha", answering("a"), version="1.0.0"))
    registry.unregister("alpha")
    assert record.state is PluginState.UNLOADED
    assert registry.get("alpha") is None
    assert not registry.is_active("alpha")
    assert registry.pm.hook.analyze(text="") == []
    registry.register(make_plugin("alpha", answering("a2"), version="1.1.0"))
    assert registry.versions("alpha") == ["1.0.0", "1.1.0"]
    registry.unregister("never-there")


def test_activate_and_deactivate_change_what_hooks_return(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    registry.register(make_plugin("alpha", answering("a")))
    registry.register(make_plugin("beta", answering("b")))
    assert registry.pm.hook.analyze(text="") == []
    registry.activate("alpha")
    registry.activate("alpha")
    assert registry.pm.hook.analyze(text="") == ["a"]
    registry.activate("beta")
    assert sorted(registry.pm.hook.analyze(text="")) == ["a", "b"]
    registry.deactivate("alpha")
    registry.deactivate("alpha")
    assert registry.pm.hook.analyze(text="") == ["b"]
    assert (registry.is_active("alpha"), registry.is_active("beta")) == (False, True)


def test_activate_needs_loaded_code(registry: Registry) -> None:
    registry.add(PluginInfo("alpha", "1.0.0"))
    with pytest.raises(LifecycleError, match="no loaded code"):
        registry.activate("alpha")


def test_activate_rejects_impls_that_do_not_fit_the_live_specs(
    tmp_path: Path, registry: Registry
) -> None:
    # Loaded without the host's specs, the optional hook passes the loader's validation.
    path = tmp_path / "loose.py"
    path.write_text(HOOK_HEADER + "@hookimpl(optionalhook=True)\ndef analyze(txt):\n    return 1\n")
    loader = Loader()
    loaded = loader.load(PluginCandidate(PluginInfo("loose", "1.0.0"), path, "file"))
    registry.register(loaded)
    with pytest.raises(LoadError, match="analyze") as caught:
        registry.activate("loose")
    assert caught.value.plugin == "loose"
    assert not registry.is_active("loose")
    loader.unload("loose")


def results(registry: Registry, hook: str = "analyze") -> list[object]:
    caller: Callable[..., list[object]] = getattr(registry.pm.hook, hook)
    return caller(text="")


def test_swap_keeps_the_plugins_call_position(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    for name in ("first", "middle", "last"):
        started(registry, make_plugin(name, answering(name)))
    assert results(registry) == ["last", "middle", "first"]
    old = registry.get("middle")
    assert old is not None
    old_loaded = old.loaded
    new = make_plugin("middle", answering("middle v2"), version="2.0.0")
    assert registry.swap("middle", new) is old_loaded
    assert results(registry) == ["last", "middle v2", "first"]
    assert registry.pm.get_plugin("middle") is new.plugin
    assert old_loaded is not None
    assert registry.pm.get_name(old_loaded.plugin) is None
    record = registry.get("middle")
    assert record is not None
    assert (record.loaded, record.info.version, record.state) == (
        new,
        "2.0.0",
        PluginState.STARTED,
    )
    assert registry.versions("middle") == ["1.0.0", "2.0.0"]
    registry.deactivate("middle")
    assert results(registry) == ["last", "first"]


def test_swap_adds_new_hooks_and_drops_removed_ones(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    started(registry, make_plugin("other", answering("other", "summarize")))
    started(registry, make_plugin("target", answering("old analyze")))
    new_body = answering("new summary", "summarize") + answering(
        "x", "extra_hook", "(optionalhook=True)"
    )
    registry.swap("target", make_plugin("target", new_body, version="2.0.0"))
    assert results(registry) == []
    assert results(registry, "summarize") == ["new summary", "other"]
    assert registry.pm.hook.extra_hook(text="") == ["x"]
    registry.deactivate("target")
    assert results(registry, "summarize") == ["other"]
    assert registry.pm.hook.extra_hook(text="") == []


def test_swap_orders_an_impl_whose_options_changed_by_pluggys_rules(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    started(registry, make_plugin("target", answering("target")))
    started(registry, make_plugin("other", answering("other")))
    assert results(registry) == ["other", "target"]
    registry.swap("target", make_plugin("target", answering("first!", options="(tryfirst=True)")))
    assert results(registry) == ["first!", "other"]


def test_swap_of_a_misfit_changes_nothing(
    registry: Registry, make_plugin: PluginFactory, tmp_path: Path
) -> None:
    started(registry, make_plugin("target", answering("old")))
    path = tmp_path / "misfit" / "target.py"
    path.parent.mkdir()
    path.write_text(HOOK_HEADER + "@hookimpl(optionalhook=True)\ndef analyze(txt):\n    return 1\n")
    loader = Loader()
    misfit = loader.load(PluginCandidate(PluginInfo("target", "2.0.0"), path, "file"))
    record = registry.get("target")
    assert record is not None
    before = record.loaded
    with pytest.raises(LoadError, match="txt") as caught:
        registry.swap("target", misfit)
    assert caught.value.plugin == "target"
    assert results(registry) == ["old"]
    assert record.loaded is before
    assert registry.versions("target") == ["1.0.0"]
    loader.unload("target")


def test_metrics_time_calls_through_the_live_manager_across_a_swap(
    make_plugin: PluginFactory,
) -> None:
    metrics = Metrics()
    registry = Registry(specs=[AgentSpec], metrics=metrics)
    started(registry, make_plugin("target", answering("old")))
    registry.pm.hook.analyze(text="")
    registry.swap("target", make_plugin("target", answering("new")))
    assert registry.pm.hook.analyze(text="") == ["new"]
    assert metrics.get_stats("target").hooks["analyze"].count == 2


def test_swap_needs_an_active_plugin_of_the_same_name(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    registry.register(make_plugin("target", answering("old")))
    with pytest.raises(LifecycleError, match="not active"):
        registry.swap("target", make_plugin("target", answering("new")))
    registry.activate("target")
    with pytest.raises(LifecycleError, match="'other'"):
        registry.swap("target", make_plugin("other", answering("other")))
    with pytest.raises(LifecycleError, match="not registered"):
        registry.swap("ghost", make_plugin("ghost", answering("ghost")))


def target_generations(make_plugin: PluginFactory) -> tuple[LoadedPlugin, LoadedPlugin]:
    return tuple(  # type: ignore[return-value]
        make_plugin(
            "target",
            f"@hookimpl\ndef analyze(text):\n    return ('target', {generation})\n",
            version=f"{generation}.0.0",
        )
        for generation in (1, 2)
    )


def hammer(
    registry: Registry,
    generations: tuple[LoadedPlugin, LoadedPlugin],
    swaps: int,
    between_swaps: Callable[[int], None] = lambda _round: None,
) -> list[str]:
    """8 threads call the hook while this thread swaps; returns every result that was wrong."""
    stop = threading.Event()
    wrong: list[str] = []
    calls = [0] * 8

    seen: set[object] = set()

    def call_loop(index: int) -> None:
        while not stop.is_set():
            answers = registry.pm.hook.analyze(text="")
            targets = [answer for answer in answers if answer[0] == "target"]
            if len(targets) != 1:
                wrong.append(repr(answers))
            seen.update(targets)
            calls[index] += 1

    def wait_until_seen(generation: int) -> None:
        # Callers must really run across swaps; waiting for them (bounded) keeps that from
        # depending on how the machine happens to schedule threads.
        wait_for(lambda: ("target", generation) in seen, f"a caller to see generation {generation}")

    threads = [threading.Thread(target=call_loop, args=(i,), daemon=True) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        wait_until_seen(1)
        for round_number in range(swaps):
            between_swaps(round_number)
            registry.swap("target", generations[(round_number + 1) % 2])
            if round_number == 0:
                wait_until_seen(2)
        wait_for(lambda: all(calls), "every caller thread to call the hook")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert all(calls), "every caller thread got to call the hook"
    assert seen == {("target", 1), ("target", 2)}, "callers ran while generations swapped"
    return wrong


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_callers_never_see_the_plugin_missing_or_doubled(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    for name in ("o1", "o2"):
        started(
            registry,
            make_plugin(name, f"@hookimpl\ndef analyze(text):\n    return ('other', {name!r})\n"),
        )
    generations = target_generations(make_plugin)
    started(registry, generations[0])
    assert hammer(registry, generations, swaps=200) == []
    answers = registry.pm.hook.analyze(text="")
    assert sorted(answers) == [("other", "o1"), ("other", "o2"), ("target", 1)]
    assert registry.versions("target")[-1] == "1.0.0"
    # 201 versions were registered; the history keeps the newest HISTORY_LIMIT.
    assert len(registry.versions("target")) == HISTORY_LIMIT


@pytest.mark.usefixtures("fast_switching")
def test_swaps_stay_atomic_while_other_plugins_come_and_go(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    others = [f"o{index}" for index in range(3)]
    for name in others:
        started(
            registry,
            make_plugin(name, f"@hookimpl\ndef analyze(text):\n    return ('other', {name!r})\n"),
        )
    generations = target_generations(make_plugin)
    started(registry, generations[0])

    def toggle_another(round_number: int) -> None:
        name = others[round_number % len(others)]
        if registry.is_active(name):
            registry.deactivate(name)
        else:
            registry.activate(name)

    assert hammer(registry, generations, swaps=200, between_swaps=toggle_another) == []
    active = sorted(name for name in others if registry.is_active(name))
    answers = registry.pm.hook.analyze(text="")
    assert sorted(answers) == sorted([("target", 1)] + [("other", name) for name in active])


@pytest.fixture
def drained(make_plugin: PluginFactory) -> Iterator[tuple[Registry, threading.Event]]:
    """A registry with metrics, holding 'slow' (blocks in analyze until released) and 'fast'."""
    registry = Registry(specs=[AgentSpec], metrics=Metrics(), drain_timeout=30)
    release = threading.Event()
    slow = make_plugin(
        "slow",
        "import builtins\n@hookimpl\ndef analyze(text):\n"
        "    builtins._helix_release.wait(30)\n    return 'slow'\n",
    )
    import builtins

    builtins._helix_release = release  # type: ignore[attr-defined]
    for loaded in (slow, make_plugin("fast", answering("fast"))):
        registry.register(loaded)
        registry.activate(loaded.info.name)
    yield registry, release
    release.set()
    del builtins._helix_release  # type: ignore[attr-defined]


def test_deactivate_waits_for_calls_in_flight(drained: tuple[Registry, threading.Event]) -> None:
    registry, release = drained
    results: list[object] = []
    call = threading.Thread(target=lambda: results.append(registry.pm.hook.analyze(text="x")))
    call.start()
    _wait_in_flight(registry)
    deactivated = threading.Event()
    stopper = threading.Thread(target=lambda: (registry.deactivate("slow"), deactivated.set()))
    stopper.start()
    # The call inside 'slow' is still running, so deactivate cannot have returned.
    assert not deactivated.wait(0.2)
    release.set()
    assert deactivated.wait(10)
    call.join(10)
    stopper.join(10)
    assert sorted(results[0]) == ["fast", "slow"]  # type: ignore[arg-type]
    assert registry.pm.hook.analyze(text="x") == ["fast"]


def test_a_stale_impl_list_never_reaches_a_deactivated_plugin(
    drained: tuple[Registry, threading.Event],
) -> None:
    registry, release = drained
    release.set()
    stale = registry.pm.hook.analyze.get_hookimpls()
    assert {impl.plugin_name for impl in stale} == {"slow", "fast"}
    registry.deactivate("slow")
    # What a caller that copied the list just before the deactivation would run.
    assert registry.pm._hookexec("analyze", stale, {"text": "x"}, False) == ["fast"]


def test_drain_gives_up_after_its_timeout(
    drained: tuple[Registry, threading.Event], caplog: pytest.LogCaptureFixture
) -> None:
    registry, release = drained
    registry.drain_timeout = 0.05
    call = threading.Thread(target=registry.pm.hook.analyze, kwargs={"text": "x"})
    call.start()
    _wait_in_flight(registry)
    registry.deactivate("slow")
    assert "still running" in caplog.text
    assert not registry.is_active("slow")
    release.set()
    call.join(10)


def _wait_in_flight(registry: Registry) -> None:
    plans = registry.dispatch._plans
    wait_for(lambda: any(plan.calls for plan in plans.values()), "the hook call to start")


def test_a_reactivated_plugin_answers_again_through_metrics(make_plugin: PluginFactory) -> None:
    # Metrics keeps retired impls out of calls by identity: what goes live again must be new.
    metrics = Metrics()
    registry = Registry(specs=[AgentSpec], metrics=metrics)
    started(registry, make_plugin("target", answering("target")))
    for _ in range(3):
        assert registry.pm.hook.analyze(text="") == ["target"]
        registry.deactivate("target")
        assert registry.pm.hook.analyze(text="") == []
        registry.activate("target")
    assert metrics.get_stats("target").hooks["analyze"].count == 3


class AnnounceSpec:
    @hookspec(historic=True)
    def announce(self, word: str) -> None:
        """Told to every plugin, including those that come later."""


def test_activate_replays_historic_calls_to_the_plugin(make_plugin: PluginFactory) -> None:
    registry = Registry(specs=[AgentSpec, AnnounceSpec])
    registry.pm.hook.announce.call_historic(kwargs={"word": "hello"})
    # Optional to the loader, which does not know the hook; the live spec is checked at activate.
    body = "heard = []\n@hookimpl(optionalhook=True)\ndef announce(word):\n    heard.append(word)\n"
    loaded = make_plugin("late", body)
    started(registry, loaded)
    assert loaded.module.heard == ["hello"]
    registry.pm.hook.announce.call_historic(kwargs={"word": "again"})
    assert loaded.module.heard == ["hello", "again"]


def test_activate_refuses_blocked_names_and_objects_active_under_another_name(
    registry: Registry, make_plugin: PluginFactory
) -> None:
    blocked = make_plugin("blocked", answering("blocked"))
    registry.register(blocked)
    registry.pm.set_blocked("blocked")
    with pytest.raises(LifecycleError, match="blocked"):
        registry.activate("blocked")
    assert results(registry) == []

    twice = make_plugin("twice", answering("twice"))
    registry.register(twice)
    registry.pm.register(twice.plugin, name="alias")
    with pytest.raises(LifecycleError, match="already active as 'alias'"):
        registry.activate("twice")
    assert registry.pm.get_plugin("twice") is None


# Each impl's options, as the plugin writes them in @hookimpl(...).
IMPL_OPTIONS = st.sampled_from(["", "tryfirst=True", "trylast=True", "wrapper=True"])


def impls_source(tag: str, options: list[str]) -> str:
    """A plugin with one impl of ``analyze`` per entry of ``options``, named in dir() order."""
    source = []
    for index, option in enumerate(options):
        marker = ", ".join(filter(None, ['specname="analyze"', option]))
        body = "return (yield)" if option == "wrapper=True" else f"return {tag!r}"
        source.append(f"@hookimpl({marker})\ndef impl_{index}(text):\n    {body}\n")
    return "".join(source)


@given(
    others=st.lists(st.lists(IMPL_OPTIONS, min_size=1, max_size=3), max_size=3),
    options=st.lists(IMPL_OPTIONS, min_size=1, max_size=5),
)
def test_activate_orders_impls_exactly_as_pm_register(
    others: list[list[str]], options: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        factory = PluginFactory(Path(root), Loader(specs=[AgentSpec]))
        registry = Registry(specs=[AgentSpec])
        twin = pluggy.PluginManager(PROJECT_NAME)
        twin.add_hookspecs(AgentSpec)
        plugins = [factory(f"other{i}", impls_source(f"other{i}", o)) for i, o in enumerate(others)]
        plugins.append(factory("target", impls_source("target", options)))
        try:
            for loaded in plugins:
                started(registry, loaded)
                twin.register(loaded.plugin, name=loaded.info.name)

            def order(pm: pluggy.PluginManager) -> list[tuple[str, str]]:
                impls = pm.hook.analyze.get_hookimpls()
                return [(impl.plugin_name, impl.function.__name__) for impl in impls]

            assert order(registry.pm) == order(twin)
            # Out and back in again: the same place.
            registry.deactivate("target")
            registry.activate("target")
            twin.unregister(name="target")
            twin.register(plugins[-1].plugin, name="target")
            assert order(registry.pm) == order(twin)
        finally:
            for loaded in plugins:
                factory.loader.unload(loaded.info.name)
