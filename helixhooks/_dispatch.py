"""The one dispatch layer under every hook call into plugin code made through pluggy.

Installed once per live PluginManager (by the Registry), beneath pluggy's tracing and monitoring.
Broadcast calls (``system.hook.x()``), one plugin's impl (``PluginHandle.call``), lifecycle and
health hooks all run here, through a *plan*: how to run one exact implementation list, built once
and reused per call. Per-impl concerns (timing for Metrics today) are composed into the plan when it
is built, as generated code, so a call pays for nothing but the concerns' own work.

In-flight accounting is per term of service: a generation of a plugin serves from activation to
retirement (a stop or a swap), and every impl it put in the live manager is an ``OwnedImpl`` that
names that term. A call is *admitted* once it has entered its plan's ``calls`` and seen the plan
alive; retiring a term marks every plan holding it dead first and then waits for the admitted
calls. A call that finds its plan dead plans again without the retired impls, so a list a caller
copied before any number of retirements never reaches a retired impl. The wait happens outside
the registry's lock and never counts the waiting thread's own calls.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from threading import get_ident
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pluggy import HookImpl

from . import _pluggy_compat as compat
from ._bounded import abandoned_threads
from ._operation import on_behalf_of
from ._plans import Runner, build_runner, skipped

if TYPE_CHECKING:
    import pluggy

    from .metrics import Metrics

_log = logging.getLogger("helixhooks.dispatch")

# A plan folds its timing samples into Metrics every this many calls (a power of two, tested
# with a mask): it bounds the raw samples held, and 512-1024 measured cheapest.
FOLD_EVERY = 1024
_FOLD_MASK = FOLD_EVERY - 1
# Hooks called once per start, stop or reload: their plans are not worth keeping.
_ONCE = frozenset(
    {"helix_init", "helix_start", "helix_stop", "helix_save_state", "helix_restore_state"}
)
# Plans kept besides the newest per hook, for callers that alternate lists (subset callers).
_RECENT_PLANS = 32


class NotServing(Exception):
    """A call for a generation that is not (or no longer) in service."""


class Generation:
    """One loaded generation of a plugin, as the dispatch sees it.

    ``impls`` are the implementations pluggy parsed and validated at load, in ``pm.register``'s
    order; each activation puts fresh copies of them in the live manager for a new ``Term``.
    ``calls`` holds the thread idents of this generation's own calls (lifecycle, health, handle)
    in flight.
    """

    __slots__ = ("_direct", "_impls", "calls", "name", "term")

    def __init__(self, name: str, impls: Sequence[tuple[str, HookImpl]]) -> None:
        self.name = name
        # Each impl knows its hook name: every loaded plugin keeps these, and a (hook, impl)
        # pair per impl would cost more than the name's slot.
        self._impls = tuple(_unowned(hook, impl) for hook, impl in impls)
        self.calls: list[int] = []
        self.term: Term | None = None
        self._direct: dict[str, _DirectList] | None = None  # made on first use

    @property
    def impls(self) -> tuple[tuple[str, HookImpl], ...]:
        """(hook name, impl) of each implementation."""
        return tuple((impl.hook, impl) for impl in self._impls)

    def hooks(self) -> list[str]:
        """The hook names this generation implements."""
        return sorted({impl.hook for impl in self._impls})

    def implements(self, hook_name: str) -> bool:
        return any(impl.hook == hook_name for impl in self._impls)


def _unowned(hook: str, impl: HookImpl) -> compat.OwnedImpl:
    """``impl`` as an OwnedImpl of ``hook`` that no term owns yet (itself if it is one)."""
    if isinstance(impl, compat.OwnedImpl) and impl.owner is None and impl.hook == hook:
        return impl
    return compat.owned_copy(impl, None, hook)


# A term not retired by a swap has no successors; one shared empty mapping stands for them.
_NO_SUCCESSORS: Mapping[HookImpl, HookImpl] = MappingProxyType({})


class Term:
    """One stretch of a generation's service in the live manager, from activation to retirement."""

    __slots__ = ("_impls", "generation", "plans", "retired", "skipped", "successors")

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        # Each impl this term put in the live manager (see Generation._impls).
        self._impls: tuple[compat.OwnedImpl, ...] = ()
        self.retired = False
        # Retired by a swap: each old impl's replacement, for lists copied before the swap.
        self.successors: Mapping[HookImpl, HookImpl] = _NO_SUCCESSORS
        # Retired by a stop: calls already under way skip its impls. By a swap they still run
        # them (the new generation is not in their list), and the drain waits for them.
        self.skipped = False
        # Made on first use: most terms never serve a broadcast call, and a WeakSet is large.
        self.plans: weakref.WeakSet[_Plan] | None = None

    @property
    def impls(self) -> tuple[tuple[str, HookImpl], ...]:
        """(hook name, impl) of each impl this term put in the live manager."""
        return tuple((impl.hook, impl) for impl in self._impls)


class _Plan:
    """How to run one exact implementation list of one hook; built once, reused per call."""

    __slots__ = (
        "__weakref__",
        "calls",
        "dead",
        "fold",
        "hook",
        "impls",
        "key",
        "run",
        "steps",
        "ticker",
        "whole",
    )

    def __init__(
        self,
        hook: str,
        impls: list[HookImpl],
        key: tuple[object, ...],
        runner: Runner,
        fold: Callable[[], None],
        ticker: Iterator[int] | None = None,
    ) -> None:
        self.hook = hook
        self.impls = impls
        self.key = key
        self.run = runner.run
        self.steps = runner.steps
        self.whole = runner.whole
        self.fold = fold
        # Shared by the plans of one hook: a hook replanned more often than every FOLD_EVERY
        # calls (a plugin reloaded or restarted all the time) would otherwise never fold.
        self.ticker = ticker if ticker is not None else itertools.count(1)
        # Thread idents of the admitted calls running this plan now (a multiset).
        self.calls: list[int] = []
        self.dead = False


class _DirectList(list[HookImpl]):
    """One generation's own impls of a hook, with their plan: never filtered, never cached."""

    __slots__ = ("plan",)

    plan: _Plan


class Dispatch:
    """A live PluginManager's inner hookexec, and the bookkeeping of which terms still serve."""

    def __init__(self, pm: pluggy.PluginManager, metrics: Metrics | None = None) -> None:
        self._pm = pm
        self._metrics = metrics
        # Taken to build or cache a plan and to retire a term: a plan built from a term that is
        # not yet retired is registered with it before the retirement can look for it.
        self._lock = threading.Lock()
        # hook name -> plan of its latest list: the common case costs one list comparison
        self._plans: dict[str, _Plan] = {}
        # (hook name, *impl ids) -> plan, oldest first; a plan keeps its impls (and ids) alive
        self._recent: dict[tuple[object, ...], _Plan] = {}
        # hook name -> the call counter its broadcast plans share (see _Plan.ticker)
        self._tickers: dict[str, Iterator[int]] = {}
        compat.install_hookexec(pm, self.hookexec)

    def activate(self, generation: Generation) -> list[tuple[str, HookImpl]]:
        """Begin a new term for ``generation``: its impls for the live manager.

        The first term takes the impls made at load; later ones get fresh copies, since the
        impls of an ended term stay dead for good.
        """
        term = Term(generation)
        generation.term = term
        impls = generation._impls
        if all(impl.owner is None for impl in impls):
            for impl in impls:
                impl.owner = term
            term._impls = impls
        else:
            term._impls = tuple(compat.owned_copy(impl, term) for impl in impls)
        return list(term.impls)

    def retire(
        self, generation: Generation, *, successors: Mapping[HookImpl, HookImpl] | None = None
    ) -> Term | None:
        """End the generation's term: its impls are dead for every call not yet admitted.

        When it is leaving service (a stop), calls admitted earlier that have not reached its
        impls yet skip them too. When a swap replaces it, ``successors`` maps each old impl to
        its replacement: a list copied before the swap runs the replacement instead, and calls
        admitted earlier still run the old impl (the drain waits for them), so no call misses
        the plugin and none sees it twice.

        Call it with the registry's lock held, as the impls leave the live manager; then call
        ``drain`` without that lock.
        """
        term = generation.term
        if term is None:
            return None
        with self._lock:
            generation.term = None
            term.retired = True
            term.skipped = successors is None
            term.successors = successors or _NO_SUCCESSORS
            for plan in list(term.plans or ()):
                plan.dead = True
                steps = plan.steps
                if steps is not None and term.skipped:
                    for index, owner in enumerate(steps.owners):
                        if owner is term:
                            steps.fs[index] = skipped
                if self._plans.get(plan.hook) is plan:
                    del self._plans[plan.hook]
                self._recent.pop(plan.key, None)
        return term

    def drain(self, term: Term | None, timeout: float) -> bool:
        """Wait until no admitted call can still reach ``term``'s generation; False on timeout.

        Calls of the waiting thread itself are not waited for (a hook that stops its own plugin
        or restarts another would wait forever), nor are calls abandoned by a time limit.
        """
        if term is None:
            return True
        deadline = perf_counter() + timeout
        pause = 1e-4
        while True:
            # The calling thread, and the thread whose operation it runs (see _operation).
            ignored = on_behalf_of() | abandoned_threads()
            busy = sum(1 for ident in term.generation.calls if ident not in ignored)
            for plan in list(term.plans or ()):
                busy += _reaching(plan, term, [i for i in plan.calls if i not in ignored])
            if not busy:
                return True
            if perf_counter() >= deadline:
                _log.warning(
                    "plugin %r: %d call(s) still running after %.3gs; going on without them",
                    term.generation.name,
                    busy,
                    timeout,
                )
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def call(
        self,
        generation: Generation,
        hook_name: str,
        kwargs: Mapping[str, object],
        *,
        firstresult: bool = False,
        serving: bool = False,
    ) -> Any:
        """Call only ``generation``'s own impls of ``hook_name``, through pluggy's hookexec.

        With ``serving``, the call is refused with NotServing unless the generation is in
        service; once admitted, a stop waits for it to finish before ``helix_stop`` runs.
        """
        me = get_ident()
        calls = generation.calls
        calls.append(me)
        try:
            if serving and generation.term is None:
                raise NotServing(generation.name)
            direct = generation._direct
            impls = direct.get(hook_name) if direct is not None else None
            if impls is None:
                impls = self._direct_list(generation, hook_name, keep=hook_name not in _ONCE)
            return self._pm._hookexec(hook_name, impls, kwargs, firstresult)
        finally:
            calls.remove(me)

    def hookexec(
        self,
        hook_name: str,
        hook_impls: Sequence[HookImpl],
        caller_kwargs: Mapping[str, object],
        firstresult: bool,
    ) -> object:
        """pluggy's inner hookexec: the same contract and results as its ``_multicall``."""
        __tracebackhide__ = True
        plan = self._plans.get(hook_name)
        while True:
            if plan is None or plan.impls != hook_impls:
                if isinstance(hook_impls, _DirectList):
                    direct = hook_impls.plan
                    if not next(direct.ticker) & _FOLD_MASK:
                        direct.fold()
                    return direct.run(caller_kwargs, firstresult)
                plan = self._plan_for(hook_name, hook_impls)
            me = get_ident()
            calls = plan.calls
            calls.append(me)
            try:
                if not plan.dead:
                    if not next(plan.ticker) & _FOLD_MASK:
                        plan.fold()
                    return plan.run(caller_kwargs, firstresult)
            finally:
                calls.remove(me)
            # Retired while we were on our way in: plan again, without the retired impls. The
            # plan that replaced it, if there is one already; else under the lock: a retirement
            # marks a plan dead before it drops it from ``_plans``, and its thread may lose the
            # GIL in between for long enough to retry here a thousand times.
            fresh = self._plans.get(hook_name)
            plan = fresh if fresh is not None and not fresh.dead else None

    def _plan_for(self, hook_name: str, hook_impls: Sequence[HookImpl]) -> _Plan:
        key = (hook_name, *map(id, hook_impls))
        with self._lock:
            plan = self._recent.get(key)
            if plan is None or plan.dead:
                passed = list(hook_impls)
                live = [impl for impl in map(_serving, passed) if impl is not None]
                ticker = self._tickers.get(hook_name)
                if ticker is None:
                    ticker = self._tickers[hook_name] = itertools.count(1)
                plan = self._build(hook_name, passed, live, key, ticker)
                for impl in live:
                    term = getattr(impl, "owner", None)
                    if term is not None:
                        if term.plans is None:
                            term.plans = weakref.WeakSet()
                        term.plans.add(plan)
                self._recent[key] = plan
                if len(self._recent) > _RECENT_PLANS:
                    del self._recent[next(iter(self._recent))]
            self._plans[hook_name] = plan
        return plan

    def _direct_list(self, generation: Generation, hook_name: str, *, keep: bool) -> _DirectList:
        impls = _DirectList(impl for impl in generation._impls if impl.hook == hook_name)
        if keep:
            impls.plan = self._build(hook_name, list(impls), list(impls), (hook_name,))
            if generation._direct is None:
                generation._direct = {}
            generation._direct[hook_name] = impls
        else:
            # A lifecycle hook runs once per start or stop and is timed as a phase
            # (PluginStats.init_time...): pluggy's own loop runs it, with nothing compiled.
            run = functools.partial(compat.multicall, hook_name, list(impls))
            impls.plan = _Plan(
                hook_name, [], (hook_name,), Runner(run, None, frozenset()), _nothing
            )
        return impls

    def _build(
        self,
        hook_name: str,
        passed: list[HookImpl],
        impls: list[HookImpl],
        key: tuple[object, ...],
        ticker: Iterator[int] | None = None,
    ) -> _Plan:
        metrics = self._metrics
        slots = (
            [metrics.slot(impl.plugin_name, hook_name) for impl in impls]
            if metrics is not None
            else None
        )
        runner = build_runner(hook_name, impls, slots)
        fold: Callable[[], None] = _nothing
        if metrics is not None and slots:
            fold = functools.partial(metrics.fold, tuple({id(s): s for s in slots}.values()))
        return _Plan(hook_name, passed, key, runner, fold, ticker)


def _serving(impl: HookImpl) -> HookImpl | None:
    """``impl``, or what replaced it if its term is retired; None if nothing did."""
    current: HookImpl | None = impl
    while (
        isinstance(current, compat.OwnedImpl)
        and current.owner is not None
        and current.owner.retired
    ):
        current = current.owner.successors.get(current)
    return current


def _reaching(plan: _Plan, term: Term, idents: list[int]) -> int:
    """How many of the calls running ``plan`` (on threads ``idents``) may be inside ``term``."""
    steps = plan.steps
    if not idents or steps is None or term in plan.whole:
        return len(idents)
    at = [index for index, owner in enumerate(steps.owners) if owner is term]
    if not at:
        return 0
    frames = sys._current_frames()
    count = 0
    for ident in idents:
        frame = frames.get(ident)
        admitted = False
        while frame is not None and not (
            frame.f_code in steps.codes and frame.f_locals.get("fs") is steps.fs
        ):
            admitted = admitted or (
                frame.f_code is _HOOKEXEC and frame.f_locals.get("plan") is plan
            )
            frame = frame.f_back
        if frame is None:
            # Not in the plan's code yet, or no more. Between hookexec's check that the plan
            # is alive and the plan's code it will still run every impl, unless they are
            # skipped; before the check (it will find the plan dead) or after the plan's code,
            # it is counted too, for the moment it takes to get there.
            count += admitted and not term.skipped
            continue
        index = frame.f_locals.get("i")
        # Unknown (pluggy's loop on a missing argument): it may be inside. Otherwise inside
        # one of the impls, or (when they are not skipped) still to reach one.
        if index is None or index in at or (not term.skipped and index < at[-1]):
            count += 1
    return count


_HOOKEXEC = Dispatch.hookexec.__code__


def _nothing() -> None:
    return None
