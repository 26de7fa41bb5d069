"""Dependency resolution: a deterministic load order, or the exact reason a plugin cannot load.

A broken plugin (a missing dependency, a version conflict, a cycle) holds back only the plugins
that depend on it; every other plugin still resolves.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from .errors import (
    CyclicDependency,
    DependencyError,
    MissingDependency,
    VersionConflict,
    VersionError,
)
from .plugin import PluginInfo
from .versioning import Constraint, Version, parse_constraint_uncached, parse_version_uncached


class _Record(Protocol):
    @property
    def info(self) -> PluginInfo: ...


@runtime_checkable
class _Registry(Protocol):
    def list(self) -> Iterable[_Record]: ...


@attrs.frozen
class Resolution:
    """The healthy plugins in load order, and for every broken one the reason it cannot load.

    ``held_back`` names the problems that are only a broken dependency's: such a plugin is fine
    in itself and can load once that dependency is fixed.
    """

    order: list[str]
    problems: dict[str, DependencyError]
    held_back: frozenset[str] = frozenset()


@attrs.frozen
class _Graph:
    """The plugins in scope as a graph, plus those broken in their own right.

    ``order`` holds every plugin in scope not on or after a cycle, broken ones included.
    """

    order: list[str]
    broken: dict[str, DependencyError]
    deps: dict[str, list[str]]
    dependents: dict[str, list[str]]


class DependencyResolver:
    """Orders plugins so that each comes after everything it depends on.

    Given PluginInfos it reads them once; given a registry it reads ``registry.list()`` on every
    call, so it follows loads and unloads. Ties in the order are broken by name, so the same
    plugins always give the same order whatever order they come in.

    Parsed constraints, versions and match results are cached per resolver: a large graph has
    few distinct constraints and versions, and parsing them per edge would dominate the cost.
    """

    def __init__(self, registry_or_infos: _Registry | Iterable[PluginInfo]) -> None:
        self._registry: _Registry | None = None
        self._fixed: dict[str, PluginInfo] = {}
        if isinstance(registry_or_infos, _Registry):
            self._registry = registry_or_infos
        else:
            self._fixed = _by_name(registry_or_infos)
        self._constraints: dict[str, Constraint] = {}
        self._versions: dict[str, Version] = {}
        # constraint -> version -> whether it matches: keyed in two steps, not by pairs, so that a
        # large resolve allocates no key per edge (and leaves the garbage collector less to do).
        self._matches: dict[str, dict[str, bool]] = {}
        self._unmatchable: dict[tuple[str, str], VersionError] = {}

    def resolve_order(self, names: Iterable[str] | None = None) -> list[str]:
        """The load order of ``names`` and their transitive dependencies (default: all plugins).

        Raises the root problem of the first broken plugin by name; a plugin that is only held
        back by a broken dependency is never the one reported.
        """
        graph = self._graph(names)
        if graph.broken:
            raise graph.broken[min(graph.broken)]
        return graph.order

    def resolve(self, names: Iterable[str] | None = None) -> Resolution:
        """Like resolve_order, but reports every broken plugin instead of raising the first."""
        graph = self._graph(names)
        if not graph.broken:
            return Resolution(graph.order, {})
        held_back = _held_back(graph.broken, graph.deps, graph.dependents)
        problems = {**graph.broken, **held_back}
        healthy = [name for name in graph.order if name not in problems]
        return Resolution(healthy, dict(sorted(problems.items())), frozenset(held_back))

    def check_dependencies(self, info: PluginInfo) -> tuple[bool, list[str]]:
        """Whether ``info``'s direct dependencies are present and match their constraints.

        Returns ``(satisfied, names)`` where names lists the absent dependencies and those whose
        version does not match, in the order ``info`` declares them.
        """
        plugins = self._plugins()
        missing: list[str] = []
        for dependency in info.parsed_dependencies:
            name, constraint = dependency.name, dependency.constraint
            target = plugins.get(name)
            unmet = target is None or (
                constraint is not None and not self._satisfies(constraint, target.version)
            )
            if unmet and name not in missing:
                missing.append(name)
        return not missing, missing

    def dependents(self, name: str) -> list[str]:
        """Every plugin that depends on ``name``, directly or not, in dependency order.

        Follows declared dependencies whatever their versions, so it also answers for a plugin
        that is being replaced or is already gone. A cycle among them raises CyclicDependency.
        """
        plugins = self._plugins()
        direct: defaultdict[str, list[str]] = defaultdict(list)
        for info in plugins.values():
            for dependency in info.parsed_dependencies:
                direct[dependency.name].append(info.name)
        found: set[str] = set()
        todo = [name]
        for current in todo:  # grows while we walk it: a breadth-first search
            for dependent in direct.get(current, ()):
                if dependent != name and dependent not in found:
                    found.add(dependent)
                    todo.append(dependent)
        deps = {
            dependent: [dep for dep in self._deps_of(plugins[dependent]) if dep in found]
            for dependent in found
        }
        inside = {dep: [d for d in direct[dep] if d in found] for dep in found}
        order, stuck = _kahn(deps, inside)
        if stuck:
            cycles = _cycle_problems(stuck, deps)
            raise cycles[min(cycles)]
        return order

    def _plugins(self) -> dict[str, PluginInfo]:
        if self._registry is None:
            return self._fixed
        return _by_name(record.info for record in self._registry.list())

    def _graph(self, names: Iterable[str] | None) -> _Graph:
        """Build and order the graph of ``names`` and their dependencies (default: all)."""
        plugins = self._plugins()
        broken: dict[str, DependencyError] = {}
        if names is None:
            scope = list(plugins)
        else:
            scope = []
            for name in dict.fromkeys(names):  # a name asked for twice is still one plugin
                if name in plugins:
                    scope.append(name)
                else:
                    broken[name] = MissingDependency(name, name)
        seen = set(scope)
        deps: dict[str, list[str]] = {}
        dependents: defaultdict[str, list[str]] = defaultdict(list)
        # The hot loop of a large resolve: cache hits are looked up inline, misses go through
        # the method that fills the cache.
        matches = self._matches
        for name in scope:  # grows with dependencies not yet in scope
            present = deps[name] = []
            for dependency in plugins[name].parsed_dependencies:
                dep_name, constraint = dependency.name, dependency.constraint
                target = plugins.get(dep_name)
                if target is None:
                    if name not in broken:
                        broken[name] = MissingDependency(name, dep_name, constraint)
                    continue
                if constraint is not None:
                    by_version = matches.get(constraint)
                    satisfied = None if by_version is None else by_version.get(target.version)
                    if satisfied is None:
                        satisfied = self._check(constraint, target.version)
                    if not satisfied and name not in broken:
                        broken[name] = self._conflict(name, dep_name, constraint, target.version)
                present.append(dep_name)
                dependents[dep_name].append(name)
                if dep_name not in seen:
                    seen.add(dep_name)
                    scope.append(dep_name)
        order, stuck = _kahn(deps, dependents)
        if stuck:
            for name, problem in _cycle_problems(stuck, deps).items():
                broken.setdefault(name, problem)
        return _Graph(order, broken, deps, dependents)

    def _deps_of(self, info: PluginInfo) -> list[str]:
        return [dependency.name for dependency in info.parsed_dependencies]

    def _satisfies(self, constraint: str, version: str) -> bool:
        satisfied = self._matches.get(constraint, {}).get(version)
        return self._check(constraint, version) if satisfied is None else satisfied

    def _check(self, constraint: str, version: str) -> bool:
        """Match ``version`` against ``constraint`` (not in the cache yet) and cache the answer."""
        parsed = self._constraints.get(constraint)
        if parsed is None:
            parsed = self._constraints[constraint] = parse_constraint_uncached(constraint)
        found = self._versions.get(version)
        if found is None:
            found = self._versions[version] = parse_version_uncached(version)
        try:
            satisfied = parsed.matches(found)
        except VersionError as exc:
            # An npm range cannot judge a PEP 440 version with no SemVer reading (an epoch,
            # four release numbers): it is not a match, and the reason is kept for the error.
            self._unmatchable[(constraint, version)] = exc
            satisfied = False
        self._matches.setdefault(constraint, {})[version] = satisfied
        return satisfied

    def _conflict(
        self, plugin: str, dependency: str, constraint: str, found: str
    ) -> VersionConflict:
        cause = self._unmatchable.get((constraint, found))
        reason = cause.message if cause is not None else None
        conflict = VersionConflict(plugin, dependency, constraint, found, reason)
        conflict.__cause__ = cause
        return conflict


def _by_name(infos: Iterable[PluginInfo]) -> dict[str, PluginInfo]:
    plugins: dict[str, PluginInfo] = {}
    for info in infos:
        earlier = plugins.get(info.name)
        if earlier is not None:
            raise DependencyError(
                f"given twice (versions {earlier.version} and {info.version})",
                plugin=info.name,
                hint="pass each plugin once: keep the version you mean to load",
            )
        plugins[info.name] = info
    return plugins


def _kahn(
    deps: Mapping[str, Sequence[str]], dependents: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str]]:
    """Kahn's algorithm with a heap, so ready plugins come out smallest name first.

    Returns the order and the plugins never ready: those on a cycle and those after one.
    """
    waiting = {name: len(names) for name, names in deps.items()}
    ready = [name for name, count in waiting.items() if not count]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents.get(name, ()):
            waiting[dependent] -= 1
            if not waiting[dependent]:
                heapq.heappush(ready, dependent)
    if len(order) == len(waiting):
        return order, []
    return order, [name for name, count in waiting.items() if count]


def _cycle_problems(
    stuck: Iterable[str], deps: Mapping[str, Sequence[str]]
) -> dict[str, CyclicDependency]:
    """A CyclicDependency for every plugin on a cycle, naming a cycle that starts with it."""
    problems: dict[str, CyclicDependency] = {}
    for component in _strongly_connected(sorted(stuck), deps):
        first = component[0]
        if len(component) == 1 and first not in deps[first]:
            continue
        inside = set(component)
        for start in sorted(component):
            if start in problems:
                continue
            # One tuple per cycle, shared by the errors of all its members: each error reads
            # the cycle from its own member on demand, so a cycle of n plugins costs O(n).
            cycle = tuple(_shortest_cycle(start, deps, inside))
            for at, member in enumerate(cycle[:-1]):
                if member not in problems:
                    problems[member] = CyclicDependency(cycle, start=at)
    return problems


def _strongly_connected(nodes: list[str], deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm among ``nodes``; iterative, as a long chain would overflow the stack."""
    members = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(deps[root]))]
        while work:
            node, edges = work[-1]
            for dep in edges:
                if dep not in members:
                    continue
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(deps[dep])))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while not component or component[-1] != node:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                    components.append(component)
    return components


def _shortest_cycle(start: str, deps: Mapping[str, Sequence[str]], inside: set[str]) -> list[str]:
    """The shortest cycle from ``start`` back to itself, closed: ``[start, ..., start]``."""
    came_from = {start: start}
    queue = [start]
    for node in queue:  # grows while we walk it: a breadth-first search
        node_deps = deps[node]
        # Asked first (one scan in C): a hub that many members depend on is not walked edge
        # by edge in Python once per member.
        if start in node_deps:
            path = [node]
            while path[-1] != start:
                path.append(came_from[path[-1]])
            return [*reversed(path), start]
        for dep in node_deps:
            if dep in inside and dep not in came_from:
                came_from[dep] = node
                queue.append(dep)
    raise AssertionError(f"{start!r} is in a strongly connected component but on no cycle")


def _held_back(
    broken: Mapping[str, DependencyError],
    deps: Mapping[str, Sequence[str]],
    dependents: Mapping[str, Sequence[str]],
) -> dict[str, DependencyError]:
    """A problem for every transitive dependent of a broken plugin, naming the root cause."""
    held: set[str] = set()
    todo = list(broken)
    for name in todo:  # grows while we walk it: a breadth-first search
        for dependent in dependents.get(name, ()):
            if dependent not in broken and dependent not in held:
                held.add(dependent)
                todo.append(dependent)
    # Each held plugin blames its first broken dependency in declaration order, which does not
    # depend on the order the plugins came in; following the blame reaches a root (held plugins
    # are on no cycle, or they would be broken themselves).
    blamed = {
        name: next(dep for dep in deps[name] if dep in broken or dep in held) for name in held
    }
    root_of = {name: name for name in broken}
    problems: dict[str, DependencyError] = {}
    for name in sorted(held):
        chain = [name]
        while chain[-1] not in root_of:
            chain.append(blamed[chain[-1]])
        root = root_of[chain[-1]]
        for link in chain:
            root_of[link] = root
        cause = broken[root]
        dependency = blamed[name]
        why = "failed" if dependency == root else f"is held back because {root!r} failed"
        problem = DependencyError(
            f"held back: depends on {dependency!r}, which {why}: {cause.message}",
            plugin=name,
            hint=f"repair {root!r} first" + (f": {cause.hint}" if cause.hint else ""),
        )
        problem.__cause__ = cause
        problems[name] = problem
    return problems
