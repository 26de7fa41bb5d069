"""Dependency graphs of any shape: cycles, self-loops, missing plugins, version conflicts in both
dialects, versions an npm range cannot judge, and plugins given twice.

Documented (helixhooks/dependencies.py): ``resolve`` never raises for a broken plugin and
reports each with a DependencyError; ``resolve_order`` raises the first one by name; a plugin
given twice is a DependencyError; ``dependents`` raises CyclicDependency for a cycle among
them. tests/test_dependencies.py checks the exact answers on DAGs; these check that any graph
gets an answer consistent with a plain reading of the rules, and no other error.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helixhooks.dependencies import DependencyResolver
from helixhooks.errors import (
    CyclicDependency,
    DependencyError,
    MissingDependency,
    VersionConflict,
    VersionError,
)
from helixhooks.plugin import PluginInfo
from helixhooks.versioning import parse_constraint

NAMES = ["a", "b", "c", "d", "e", "f"]
# Versions of both kinds; the last three have no SemVer reading, so an npm range cannot judge them.
VERSIONS = [
    "1.0.0",
    "1.2.3",
    "2.0.0-rc.1",
    "0.1",
    "1.0rc1",
    "2.0.post1",
    "1!1.0",
    "1.2.3.4",
    "1.0.post1.dev1",
]
CONSTRAINTS = [
    "^1.0",
    "~1.2",
    ">=1 <2 || 3",
    "1.x",
    "*",
    ">=0.0.0",
    "<0.0.0-0",
    "2.0.0-rc.1",
    ">=1,<2",
    "~=1.2",
    "==1.*",
    "!=1.2.3",
    "===0.1",
]
_edges = st.tuples(st.sampled_from([*NAMES, "ghost"]), st.none() | st.sampled_from(CONSTRAINTS))


@st.composite
def graphs(draw: st.DrawFn) -> list[PluginInfo]:
    """Up to six plugins, each with up to four dependencies on anything, itself included."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True))
    infos = []
    for name in names:
        deps = draw(st.lists(_edges, max_size=4, unique_by=lambda edge: edge[0]))
        written = [dep if constraint is None else f"{dep} {constraint}" for dep, constraint in deps]
        infos.append(PluginInfo(name, draw(st.sampled_from(VERSIONS)), dependencies=written))
    return infos


def _satisfied(constraint: str | None, version: str) -> bool:
    if constraint is None:
        return True
    try:
        return parse_constraint(constraint).matches(version)
    except VersionError:  # a version this dialect cannot judge does not match
        return False


def expected_order(infos: list[PluginInfo]) -> set[str]:
    """The plugins that load, by the rules read plainly: every dependency present and matching,
    not on a cycle, and every dependency loading too (a fixed point)."""
    by_name = {info.name: info for info in infos}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for dep in by_name[todo.pop()].parsed_dependencies:
                if dep.name == goal:
                    return True
                if dep.name in by_name and dep.name not in seen:
                    seen.add(dep.name)
                    todo.append(dep.name)
        return False

    fine = {
        info.name
        for info in infos
        if not reaches(info.name, info.name)
        and all(
            d.name in by_name and _satisfied(d.constraint, by_name[d.name].version)
            for d in info.parsed_dependencies
        )
    }
    loading: set[str] = set()
    while True:
        ready = {
            name
            for name in fine - loading
            if all(d.name in loading for d in by_name[name].parsed_dependencies)
        }
        if not ready:
            return loading
        loading |= ready


@given(graphs())
def test_any_graph_resolves_to_an_order_and_a_reason_for_every_other_plugin(
    infos: list[PluginInfo],
) -> None:
    by_name = {info.name: info for info in infos}
    resolution = DependencyResolver(infos).resolve()

    assert set(resolution.order) == expected_order(infos)
    assert len(resolution.order) == len(set(resolution.order))
    assert set(resolution.order) | set(resolution.problems) == set(by_name)
    assert not set(resolution.order) & set(resolution.problems)
    assert resolution.held_back <= set(resolution.problems)
    placed: set[str] = set()
    for name in resolution.order:
        assert {d.name for d in by_name[name].parsed_dependencies} <= placed
        placed.add(name)
    for name, problem in resolution.problems.items():
        assert isinstance(problem, DependencyError)
        assert problem.plugin == name
        _check_reason(problem, by_name)

    roots = set(resolution.problems) - resolution.held_back
    if not roots:
        assert DependencyResolver(list(reversed(infos))).resolve_order() == resolution.order
        return
    with pytest.raises(DependencyError) as raised:
        DependencyResolver(list(reversed(infos))).resolve_order()
    assert raised.value.plugin == min(roots)


def _check_reason(problem: DependencyError, by_name: dict[str, PluginInfo]) -> None:
    """A root problem's reason is true of the graph."""
    if isinstance(problem, CyclicDependency):
        cycle = problem.cycle
        assert cycle[0] == cycle[-1] == problem.plugin
        for before, after in itertools.pairwise(cycle):
            assert after in {d.name for d in by_name[before].parsed_dependencies}
    elif isinstance(problem, MissingDependency):
        assert problem.dependency not in by_name
    elif isinstance(problem, VersionConflict):
        assert not _satisfied(problem.constraint, by_name[problem.dependency].version)


@given(graphs(), st.lists(st.sampled_from([*NAMES, "ghost"]), max_size=3))
def test_resolving_some_names_answers_for_them_and_their_dependencies(
    infos: list[PluginInfo], wanted: list[str]
) -> None:
    resolver = DependencyResolver(infos)
    resolution = resolver.resolve(wanted)
    known = {info.name for info in infos}
    for name in wanted:
        assert name in resolution.order or name in resolution.problems
        if name not in known:
            assert isinstance(resolution.problems[name], MissingDependency)
    with contextlib.suppress(DependencyError):
        assert resolver.resolve_order(wanted) == resolution.order


@given(graphs(), st.sampled_from([*NAMES, "ghost"]))
def test_dependents_and_checks_answer_or_name_a_cycle(infos: list[PluginInfo], name: str) -> None:
    resolver = DependencyResolver(infos)
    with contextlib.suppress(CyclicDependency):
        dependents = resolver.dependents(name)
        assert name not in dependents
    for info in infos:
        satisfied, unmet = resolver.check_dependencies(info)
        assert satisfied == (not unmet)


@given(graphs(), st.data())
def test_a_plugin_given_twice_is_a_dependency_error(
    infos: list[PluginInfo], data: st.DataObject
) -> None:
    twice = data.draw(st.sampled_from(infos))
    again = PluginInfo(twice.name, data.draw(st.sampled_from(VERSIONS)))
    with contextlib.suppress(DependencyError):
        DependencyResolver([*infos, again])
        raise AssertionError(f"{twice.name} given twice was accepted")
