"""DependencyResolver: load order, every kind of dependency problem, and who is held back."""

from __future__ import annotations

import itertools
import pickle
import random
import tracemalloc

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version as Pep440Version

from helixhooks.dependencies import DependencyResolver, Resolution
from helixhooks.errors import (
    CyclicDependency,
    DependencyError,
    MissingDependency,
    VersionConflict,
    VersionError,
)
from helixhooks.plugin import PluginInfo

NAMES = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "oscar",
    "papa",
    "quebec",
    "romeo",
]
CONFLICT_TARGET = "zulu"  # not in NAMES, so a conflict on it cannot close a cycle


def info(name: str, *dependencies: str, version: str = "1.0.0") -> PluginInfo:
    return PluginInfo(name, version, dependencies=dependencies)


def order_of(*infos: PluginInfo, names: list[str] | None = None) -> list[str]:
    return DependencyResolver(infos).resolve_order(names)


def cycle_of(problem: DependencyError) -> list[str]:
    assert isinstance(problem, CyclicDependency)
    return problem.cycle


def respects(order: list[str], edges: dict[str, list[str]]) -> bool:
    position = {name: at for at, name in enumerate(order)}
    return all(
        position[dep] < position[name]
        for name, deps in edges.items()
        if name in position
        for dep in deps
    )


# -- order ---------------------------------------------------------------------------------------


def test_dependencies_come_first_and_ties_go_by_name() -> None:
    plugins = [
        info("zulu"),
        info("alpha", "bravo"),
        info("bravo", "charlie"),
        info("charlie"),
        info("mike"),
    ]
    assert order_of(*plugins) == ["charlie", "bravo", "alpha", "mike", "zulu"]


def test_a_plugin_that_becomes_ready_goes_first_if_its_name_is_smallest() -> None:
    # "golf" is ready from the start, "alpha" only after "echo"; "alpha" still goes first.
    plugins = [info("delta", "golf"), info("golf"), info("echo"), info("alpha", "echo")]
    assert order_of(*plugins) == ["echo", "alpha", "golf", "delta"]


def test_same_order_for_every_input_order() -> None:
    plugins = [
        info("alpha", "delta"),
        info("bravo", "delta", "echo"),
        info("charlie"),
        info("delta", "echo"),
        info("echo"),
    ]
    orders = {tuple(order_of(*perm)) for perm in itertools.permutations(plugins)}
    assert orders == {("charlie", "echo", "delta", "alpha", "bravo")}


def test_names_select_those_plugins_and_their_transitive_dependencies_only() -> None:
    plugins = [
        info("alpha", "bravo"),
        info("bravo", "charlie"),
        info("charlie"),
        info("delta", "charlie"),
        info("echo"),
    ]
    assert order_of(*plugins, names=["alpha"]) == ["charlie", "bravo", "alpha"]
    assert order_of(*plugins, names=["echo", "delta"]) == ["charlie", "delta", "echo"]
    assert order_of(*plugins, names=[]) == []


def test_a_name_asked_for_twice_counts_once() -> None:
    plugins = [info("alpha", "bravo", "charlie"), info("bravo"), info("charlie")]
    assert order_of(*plugins, names=["alpha", "alpha"]) == ["bravo", "charlie", "alpha"]


def test_a_broken_plugin_outside_names_does_not_matter() -> None:
    plugins = [info("alpha", "bravo"), info("bravo"), info("charlie", "ghost")]
    assert order_of(*plugins, names=["alpha"]) == ["bravo", "alpha"]


@pytest.mark.parametrize(
    ("constraint", "version", "satisfied"),
    [
        ("^1.2", "1.4.0", True),
        ("^1.2", "2.0.0", False),
        ("~1.2.3", "1.2.9", True),
        ("~1.2.3", "1.3.0", False),
        (">=1 <2 || 3", "3.1.0", True),
        ("1.x", "2.0.0", False),
        (">=2,<3", "2.1", True),
        (">=2,<3", "3.0", False),
        ("~=0.4", "0.4.2", True),
        ("~=0.4", "1.0", False),
        ("!=1.3", "1.3", False),
    ],
)
def test_every_edge_constraint_is_checked_in_both_dialects(
    constraint: str, version: str, satisfied: bool
) -> None:
    plugins = [info("alpha", f"bravo {constraint}"), info("bravo", version=version)]
    resolution = DependencyResolver(plugins).resolve()
    if satisfied:
        assert resolution == Resolution(["bravo", "alpha"], {})
    else:
        assert resolution.order == ["bravo"]
        assert isinstance(resolution.problems["alpha"], VersionConflict)
        assert list(resolution.problems) == ["alpha"]


# -- problems ------------------------------------------------------------------------------------


def test_missing_dependency_names_who_needs_what() -> None:
    with pytest.raises(MissingDependency) as caught:
        order_of(info("alpha", "bravo"), info("bravo", "ghost >=2"))
    error = caught.value
    assert (error.plugin, error.dependency, error.constraint) == ("bravo", "ghost", ">=2")
    assert "'ghost >=2'" in str(error)
    assert error.hint is not None
    assert "ghost" in error.hint


def test_unknown_requested_name_is_a_missing_dependency() -> None:
    with pytest.raises(MissingDependency) as caught:
        order_of(info("alpha"), names=["alpha", "ghost"])
    assert caught.value.dependency == "ghost"


def test_version_conflict_names_dependent_constraint_and_found_version() -> None:
    with pytest.raises(VersionConflict) as caught:
        order_of(info("alpha", "bravo ^2.0"), info("bravo", version="1.5.0"))
    error = caught.value
    assert (error.plugin, error.dependency, error.constraint, error.found) == (
        "alpha",
        "bravo",
        "^2.0",
        "1.5.0",
    )
    assert error.path == "^2.0"
    assert "1.5.0" in str(error)


def test_pep440_conflict_is_caught_too() -> None:
    with pytest.raises(VersionConflict) as caught:
        order_of(info("alpha", "bravo >=1,!=1.3"), info("bravo", version="1.3"))
    assert caught.value.constraint == ">=1,!=1.3"


def test_npm_range_against_a_version_it_cannot_read_is_a_conflict_with_the_reason() -> None:
    plugins = [info("alpha", "bravo ^1.0"), info("bravo", version="1.2.3.4")]
    with pytest.raises(VersionConflict) as caught:
        order_of(*plugins)
    assert caught.value.found == "1.2.3.4"
    assert isinstance(caught.value.__cause__, VersionError)
    assert "SemVer" in str(caught.value.__cause__)
    # The reason is in the message itself, not only in __cause__ (which a log line drops).
    assert "4 release numbers" in str(caught.value)
    assert caught.value.reason is not None
    assert pickle.loads(pickle.dumps(caught.value)).reason == caught.value.reason
    resolver = DependencyResolver(plugins)
    assert resolver.check_dependencies(plugins[0]) == (False, ["bravo"])


def test_cycle_is_listed_in_order_and_closed() -> None:
    plugins = [info("alpha", "bravo"), info("bravo", "charlie"), info("charlie", "alpha")]
    with pytest.raises(CyclicDependency) as caught:
        order_of(*plugins)
    assert caught.value.cycle == ["alpha", "bravo", "charlie", "alpha"]
    assert "alpha -> bravo -> charlie -> alpha" in str(caught.value)


def test_self_dependency_is_a_cycle_of_one() -> None:
    with pytest.raises(CyclicDependency) as caught:
        order_of(info("alpha", "alpha"), info("bravo"))
    assert caught.value.cycle == ["alpha", "alpha"]


def test_every_cycle_member_gets_the_cycle_starting_with_itself() -> None:
    plugins = [
        info("alpha", "bravo"),
        info("bravo", "charlie"),
        info("charlie", "alpha"),
        info("delta"),
    ]
    resolution = DependencyResolver(plugins).resolve()
    assert resolution.order == ["delta"]
    cycles = {name: cycle_of(problem) for name, problem in resolution.problems.items()}
    assert cycles == {
        "alpha": ["alpha", "bravo", "charlie", "alpha"],
        "bravo": ["bravo", "charlie", "alpha", "bravo"],
        "charlie": ["charlie", "alpha", "bravo", "charlie"],
    }


def test_a_member_off_the_first_cycle_gets_a_cycle_through_itself() -> None:
    # Two cycles sharing "alpha": alpha -> bravo -> alpha and alpha -> charlie -> alpha.
    plugins = [info("alpha", "bravo", "charlie"), info("bravo", "alpha"), info("charlie", "alpha")]
    problems = DependencyResolver(plugins).resolve().problems
    assert cycle_of(problems["charlie"]) == ["charlie", "alpha", "charlie"]
    assert cycle_of(problems["bravo"]) == ["bravo", "alpha", "bravo"]


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(DependencyError, match="given twice") as caught:
        DependencyResolver([info("alpha"), info("bravo"), info("alpha", version="2.0.0")])
    assert caught.value.plugin == "alpha"
    assert "1.0.0" in str(caught.value)
    assert "2.0.0" in str(caught.value)


def test_resolve_order_raises_a_root_cause_not_a_held_back_plugin() -> None:
    # "alpha" sorts first but is only held back; "zulu" is the real problem.
    with pytest.raises(MissingDependency) as caught:
        order_of(info("alpha", "zulu"), info("zulu", "ghost"))
    assert caught.value.plugin == "zulu"


# -- resolve() -----------------------------------------------------------------------------------


def test_resolve_keeps_healthy_plugins_and_holds_back_only_dependents() -> None:
    plugins = [
        info("alpha", "bravo"),  # held back by bravo
        info("bravo", "ghost"),  # missing
        info("charlie", "alpha"),  # held back through alpha
        info("delta", "echo ^2"),  # conflict
        info("echo"),
        info("golf", "echo"),
        info("hotel", "india"),  # cycle
        info("india", "hotel"),
        info("juliet", "india", "echo"),  # held back by the cycle
    ]
    resolution = DependencyResolver(plugins).resolve()
    assert resolution.order == ["echo", "golf"]
    kinds = {name: type(problem).__name__ for name, problem in resolution.problems.items()}
    assert kinds == {
        "alpha": "DependencyError",
        "bravo": "MissingDependency",
        "charlie": "DependencyError",
        "delta": "VersionConflict",
        "hotel": "CyclicDependency",
        "india": "CyclicDependency",
        "juliet": "DependencyError",
    }
    assert list(resolution.problems) == sorted(resolution.problems)
    assert all(problem.plugin == name for name, problem in resolution.problems.items())


def test_held_back_message_names_the_dependency_and_the_root_cause() -> None:
    plugins = [info("alpha", "bravo"), info("bravo", "charlie"), info("charlie", "ghost ^1")]
    problems = DependencyResolver(plugins).resolve().problems
    direct, indirect = problems["bravo"], problems["alpha"]
    assert direct.message == (
        "held back: depends on 'charlie', which failed: needs 'ghost ^1', which is not available"
    )
    assert indirect.message.startswith(
        "held back: depends on 'bravo', which is held back because 'charlie' failed: needs"
    )
    assert indirect.__cause__ is problems["charlie"]
    assert indirect.hint is not None
    assert indirect.hint.startswith("repair 'charlie' first")


def test_held_back_blames_the_first_broken_dependency_declared() -> None:
    plugins = [info("alpha", "echo", "bravo", "charlie"), info("bravo", "ghost")]
    plugins += [info("charlie", "phantom"), info("echo")]
    problem = DependencyResolver(plugins).resolve().problems["alpha"]
    assert "depends on 'bravo'" in problem.message


def test_own_problem_wins_over_being_on_a_cycle() -> None:
    plugins = [info("alpha", "bravo", "ghost"), info("bravo", "alpha")]
    problems = DependencyResolver(plugins).resolve().problems
    assert isinstance(problems["alpha"], MissingDependency)
    assert cycle_of(problems["bravo"]) == ["bravo", "alpha", "bravo"]


def test_resolve_with_names_reports_unknown_names_and_keeps_the_rest() -> None:
    plugins = [info("alpha", "bravo"), info("bravo"), info("charlie")]
    resolution = DependencyResolver(plugins).resolve(["alpha", "ghost"])
    assert resolution.order == ["bravo", "alpha"]
    assert list(resolution.problems) == ["ghost"]


def test_clean_resolution_has_no_problems() -> None:
    resolution = DependencyResolver([info("alpha", "bravo"), info("bravo")]).resolve()
    assert resolution == Resolution(["bravo", "alpha"], {})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        resolution.order = []  # type: ignore[misc]


# -- check_dependencies and dependents -----------------------------------------------------------


def test_check_dependencies_lists_absent_and_mismatched_names_once_in_order() -> None:
    resolver = DependencyResolver([info("bravo", version="1.0.0"), info("charlie")])
    candidate = info("alpha", "ghost", "bravo >=2", "charlie", "bravo", "ghost ^1")
    assert resolver.check_dependencies(candidate) == (False, ["ghost", "bravo"])
    assert resolver.check_dependencies(info("alpha", "bravo ^1", "charlie")) == (True, [])
    assert resolver.check_dependencies(info("alpha")) == (True, [])


def test_dependents_are_transitive_and_in_dependency_order() -> None:
    plugins = [
        info("alpha", "delta"),
        info("bravo", "alpha", "charlie"),
        info("charlie", "echo"),
        info("delta"),
        info("echo"),
        info("golf", "bravo"),
    ]
    resolver = DependencyResolver(plugins)
    assert resolver.dependents("delta") == ["alpha", "bravo", "golf"]
    assert resolver.dependents("echo") == ["charlie", "bravo", "golf"]
    assert resolver.dependents("golf") == []


def test_dependents_ignore_versions_and_answer_for_absent_plugins() -> None:
    plugins = [info("alpha", "ghost ^9"), info("bravo", "alpha >=5")]
    resolver = DependencyResolver(plugins)
    assert resolver.dependents("ghost") == ["alpha", "bravo"]


def test_dependents_leave_out_the_plugin_itself_on_a_cycle() -> None:
    plugins = [info("alpha", "bravo"), info("bravo", "alpha"), info("charlie", "alpha")]
    assert DependencyResolver(plugins).dependents("alpha") == ["bravo", "charlie"]


def test_dependents_raise_on_a_cycle_among_them() -> None:
    plugins = [info("alpha"), info("bravo", "alpha", "charlie"), info("charlie", "bravo")]
    with pytest.raises(CyclicDependency) as caught:
        DependencyResolver(plugins).dependents("alpha")
    assert caught.value.cycle == ["bravo", "charlie", "bravo"]


# -- a registry as the source --------------------------------------------------------------------


@attrs.frozen
class _Record:
    info: PluginInfo


class _Registry:
    def __init__(self) -> None:
        self.records: dict[str, _Record] = {}

    def list(self) -> list[_Record]:
        return list(self.records.values())


def test_a_registry_is_read_on_every_call() -> None:
    registry = _Registry()
    registry.records["alpha"] = _Record(info("alpha", "bravo ^1"))
    resolver = DependencyResolver(registry)
    assert resolver.check_dependencies(info("charlie", "alpha")) == (True, [])
    assert isinstance(resolver.resolve().problems["alpha"], MissingDependency)
    registry.records["bravo"] = _Record(info("bravo", version="1.1.0"))
    assert resolver.resolve_order() == ["bravo", "alpha"]
    registry.records["bravo"] = _Record(info("bravo", version="2.0.0"))
    with pytest.raises(VersionConflict):
        resolver.resolve_order()


# -- properties ----------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """Random DAGs: node i may depend only on nodes before it; names shuffled over nodes."""
    size = draw(st.integers(min_value=1, max_value=len(NAMES)))
    names = draw(st.permutations(NAMES))[:size]
    edges = {
        names[at]: draw(st.lists(st.sampled_from(names[:at]), unique=True, max_size=3))
        if at
        else []
        for at in range(size)
    }
    return names, edges


def build(
    edges: dict[str, list[str]], extra: dict[str, list[str]] | None = None
) -> list[PluginInfo]:
    extra = extra or {}
    return [info(name, *deps, *extra.get(name, ())) for name, deps in edges.items()]


def ancestors(edges: dict[str, list[str]], name: str) -> set[str]:
    """Everything ``name`` depends on, transitively."""
    found: set[str] = set()
    todo = list(edges[name])
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo.extend(edges[dep])
    return found


@given(dags(), st.randoms(use_true_random=False))
def test_order_respects_every_edge_and_ignores_input_order(
    dag: tuple[list[str], dict[str, list[str]]], rng: random.Random
) -> None:
    _, edges = dag
    plugins = build(edges)
    order = DependencyResolver(plugins).resolve_order()
    assert sorted(order) == sorted(edges)
    assert respects(order, edges)
    rng.shuffle(plugins)
    assert DependencyResolver(plugins).resolve_order() == order
    # Ties by name: each step takes the smallest plugin whose dependencies are all placed.
    placed: set[str] = set()
    for name in order:
        ready = [n for n in edges if n not in placed and set(edges[n]) <= placed]
        assert name == min(ready)
        placed.add(name)


@given(dags(), st.data())
def test_names_give_exactly_their_dependency_closure(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    names, edges = dag
    wanted = data.draw(st.lists(st.sampled_from(names), unique=True))
    order = DependencyResolver(build(edges)).resolve_order(wanted)
    closure = set(wanted).union(*(ancestors(edges, name) for name in wanted))
    assert set(order) == closure
    assert len(order) == len(closure)
    assert respects(order, edges)


@given(dags(), st.data())
def test_a_back_edge_gives_a_real_cycle(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    names, edges = dag
    # Make some plugin depend on one of its own dependents (or on itself): always a cycle.
    lower = data.draw(st.sampled_from(names))
    upper = data.draw(
        st.sampled_from([n for n in names if n == lower or lower in ancestors(edges, n)])
    )
    edges[lower] = [*edges[lower], upper]
    with pytest.raises(CyclicDependency) as caught:
        DependencyResolver(build(edges)).resolve_order()
    cycle = caught.value.cycle
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle)) == len(cycle) - 1
    assert all(after in edges[before] for before, after in itertools.pairwise(cycle))
    problems = DependencyResolver(build(edges)).resolve().problems
    assert isinstance(problems[lower], CyclicDependency)
    assert isinstance(problems[upper], CyclicDependency)


@given(dags(), st.data())
def test_resolve_reports_exactly_the_broken_and_their_dependents(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    names, edges = dag
    missing = set(data.draw(st.lists(st.sampled_from(names), unique=True, max_size=3)))
    conflicting = set(data.draw(st.lists(st.sampled_from(names), unique=True, max_size=2)))
    conflicting -= missing
    extra = {name: ["ghost"] for name in missing}
    extra.update({name: [f"{CONFLICT_TARGET} >=99"] for name in conflicting})
    plugins = [*build(edges, extra), info(CONFLICT_TARGET)]
    edges[CONFLICT_TARGET] = []
    for name in conflicting:
        edges[name] = [*edges[name], CONFLICT_TARGET]
    broken = missing | conflicting
    held = {name for name in edges if ancestors(edges, name) & broken} - broken
    healthy = set(edges) - broken - held

    resolution = DependencyResolver(plugins).resolve()
    assert set(resolution.problems) == broken | held
    for name in missing:
        assert isinstance(resolution.problems[name], MissingDependency)
    for name in conflicting:
        assert isinstance(resolution.problems[name], VersionConflict)
    for name in held:
        assert resolution.problems[name].message.startswith("held back: depends on")
    assert set(resolution.order) == healthy
    assert respects(resolution.order, edges)
    assert resolution.order == DependencyResolver(plugins).resolve_order(sorted(healthy))


# -- large cycles --------------------------------------------------------------------------------


def test_a_ten_thousand_member_cycle_reports_every_member_without_quadratic_memory() -> None:
    # Each member's error used to carry its own copy of the whole cycle and its message:
    # 10,000 members took gigabytes. They now share one tuple of the cycle.
    size = 10_000
    names = [f"p{index:05d}" for index in range(size)]
    plugins = [info(name, names[(at + 1) % size]) for at, name in enumerate(names)]
    plugins.append(info("outside"))
    resolver = DependencyResolver(plugins)
    tracemalloc.start()
    try:
        resolution = resolver.resolve()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert resolution.order == ["outside"]
    assert set(resolution.problems) == set(names)
    assert all(isinstance(problem, CyclicDependency) for problem in resolution.problems.values())
    assert resolution.held_back == frozenset()
    for at in (0, 1, 4_321, size - 1):
        cycle = cycle_of(resolution.problems[names[at]])
        assert cycle == [*names[at:], *names[:at], names[at]]


def test_a_long_cycle_is_named_compactly_from_each_member() -> None:
    size = 50
    names = [f"p{index:02d}" for index in range(size)]
    plugins = [info(name, names[(at + 1) % size]) for at, name in enumerate(names)]
    problem = DependencyResolver(plugins).resolve().problems["p10"]
    text = str(problem)
    assert problem.plugin == "p10"
    assert "cycle of 50 plugins: p10 -> p11 -> p12" in text
    assert "(42 more)" in text
    assert "p08 -> p09 -> p10" in text
    assert len(text) < 400
    copy = pickle.loads(pickle.dumps(problem))
    assert isinstance(copy, CyclicDependency)
    assert copy.cycle == cycle_of(problem)
    assert str(copy) == text


# -- edge checks against packaging ---------------------------------------------------------------
# The resolver checks PEP 440 specifiers whose clauses name plain releases without packaging's
# objects when the version is a plain release too (versioning._release_matches); packaging is the
# reference for the answer.

_release_numbers = st.lists(st.integers(0, 12), min_size=1, max_size=4)


@st.composite
def _plain_release_clauses(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["~=", "==", "!=", "<=", ">=", "<", ">"]))
    release = draw(_release_numbers.filter(lambda r: op != "~=" or len(r) >= 2))
    text = ".".join(map(str, release))
    wildcard = op in ("==", "!=") and draw(st.booleans())
    return f"{op}{text}.*" if wildcard else f"{op}{text}"


@given(
    st.one_of(
        _release_numbers.map(lambda r: ".".join(map(str, r))),  # PEP 440: 1, 1.0, 1.2.3.4
        st.lists(st.integers(0, 12), min_size=3, max_size=3).map(
            lambda r: ".".join(map(str, r))  # SemVer
        ),
    ),
    st.lists(_plain_release_clauses(), min_size=1, max_size=3),
)
def test_plain_release_edges_are_checked_as_packaging_checks_them(
    version: str, clauses: list[str]
) -> None:
    text = ",".join(clauses)
    if "," not in text and not text.startswith(("~=", "==", "!=")):
        text += ",>=0"  # a lone >=, <, ... would be read as an npm range
    plugins = [info("app", f"lib {text}"), info("lib", version=version)]
    expected = SpecifierSet(text).contains(Pep440Version(version))
    assert DependencyResolver(plugins).check_dependencies(plugins[0]) == (
        expected,
        [] if expected else ["lib"],
    )
