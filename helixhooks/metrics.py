"""Per-plugin call metrics, and the timed dispatch that feeds them from pluggy's hook calls.

Timing sits on the hot path of every hook call, so the dispatch does as little as it can per
impl call: one ``perf_counter`` stamp and one ``list.append`` (atomic under the GIL, so no lock).
Sorting those raw samples into totals and a histogram is deferred until figures are read or a
plan has made enough calls, and then done in batches under the metrics lock. Hooks with wrappers
run through pluggy's own ``_multicall`` (with timed copies of the plain impls), so wrapper
semantics are exactly pluggy's.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from time import perf_counter
from typing import Any, TypeAlias

import attrs
import pluggy
from pluggy import HookCallError, HookImpl
from pluggy._callers import _multicall

from .errors import HelixError

_log = logging.getLogger("helixhooks.metrics")

# Histogram buckets per power of two: a bucket's midpoint is within 1/64 (1.6%) of any value in it.
_SUB_BUCKETS = 32
# Durations below this share one bucket reported as 0; ``frexp`` stays exact above it.
_TINY = 2.0**-1000
_ZERO_KEY = -(2**31)
# Longer durations are refused: the bounds of their buckets would overflow a float.
_LARGEST = 2.0**1000
# A plan folds its slots every this many calls (a power of two, tested with a mask); this bounds
# the raw samples a slot holds. Smaller batches pay more per bucket, larger ones find the
# samples gone cold in the CPU cache (measured: 512-1024 is cheapest).
_FOLD_EVERY = 1024
_FOLD_MASK = _FOLD_EVERY - 1
# record_call folds a slot once it holds this many samples.
_MAX_BUFFERED = 4096
# Plans kept besides the newest per hook name, for callers that alternate impl lists
# (subset hook callers, one-plugin calls); bounded because a plan keeps its plugins alive.
_RECENT_PLANS = 32


@attrs.frozen
class CallStats:
    """Figures for one plugin's impl of one hook; durations are in seconds.

    ``total``, ``min`` and ``max`` are exact; the percentiles come from a histogram and are
    within 1.6% of the sample at that rank (nearest-rank definition).
    """

    count: int
    errors: int
    total: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float


@attrs.frozen
class PluginStats:
    """One plugin's figures: lifecycle durations (None until recorded) and per-hook call stats."""

    load_time: float | None = None
    init_time: float | None = None
    start_time: float | None = None
    hooks: Mapping[str, CallStats] = attrs.field(factory=dict)


class _Slot:
    """One plugin's figures for one hook: raw samples not yet folded, and the folded state."""

    __slots__ = ("buckets", "count", "error_marks", "errors", "max", "min", "samples", "total")

    def __init__(self) -> None:
        self.samples: list[float] = []
        # One entry per failed call: appending needs no lock, unlike incrementing a counter.
        self.error_marks: list[bool] = []
        self.count = 0
        self.errors = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0
        # bucket key -> number of samples; keys order like the durations they stand for
        self.buckets: dict[int, int] = {}

    def fold(self) -> None:
        """Move the buffered samples into the totals and the histogram (metrics lock held)."""
        # Entries appended meanwhile by threads not holding the lock sit past the lengths read
        # here and are kept. A failed call's sample goes in before its mark and marks are read
        # first, so errors never exceed count.
        marks = self.error_marks
        failed = len(marks)
        del marks[:failed]
        self.errors += failed
        samples = self.samples
        n = len(samples)
        if not n:
            return
        chunk = samples[:n]
        del samples[:n]
        # Sorted, the chunk yields min and max for free and each bucket's count by bisection,
        # which is far cheaper than bucketing samples one by one.
        chunk.sort()
        self.count += n
        self.total += sum(chunk)
        self.min = min(self.min, chunk[0])
        self.max = max(self.max, chunk[-1])
        buckets = self.buckets
        pos = bisect_left(chunk, _TINY)
        if pos:
            buckets[_ZERO_KEY] = buckets.get(_ZERO_KEY, 0) + pos
        while pos < n:
            mantissa, exponent = math.frexp(chunk[pos])
            sub = int((mantissa - 0.5) * 2 * _SUB_BUCKETS)
            upper = math.ldexp(0.5 + (sub + 1) / (2 * _SUB_BUCKETS), exponent)
            end = bisect_left(chunk, upper, pos)
            key = exponent * _SUB_BUCKETS + sub
            buckets[key] = buckets.get(key, 0) + end - pos
            pos = end

    def stats(self) -> CallStats:
        """The figures so far; call fold() first (metrics lock held)."""
        p50, p95, p99 = (self._percentile(percent) for percent in (50, 95, 99))
        return CallStats(self.count, self.errors, self.total, self.min, self.max, p50, p95, p99)

    def _percentile(self, percent: int) -> float:
        rank = max(1, -(-self.count * percent // 100))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                return min(max(_bucket_midpoint(key), self.min), self.max)
        raise AssertionError("bucket counts do not add up to count")


def _bucket_midpoint(key: int) -> float:
    if key == _ZERO_KEY:
        return 0.0
    exponent, sub = divmod(key, _SUB_BUCKETS)
    return math.ldexp(0.5 + (sub + 0.5) / (2 * _SUB_BUCKETS), exponent)


def _check_seconds(seconds: float) -> None:
    if not 0.0 <= seconds <= _LARGEST:
        raise ValueError(f"a duration must be between 0 and {_LARGEST:g} seconds, not {seconds!r}")


class Metrics:
    """Call counts and timings per plugin and hook, plus load, init and start durations.

    Thread-safe; counts are exact under concurrent calls. ``install`` hooks it into a
    PluginManager so that every hookimpl call made through it is timed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[str, _Slot]] = {}
        self._phases: dict[str, dict[str, float]] = {}
        self._dispatches: weakref.WeakSet[_TimedDispatch] = weakref.WeakSet()

    def record_load(self, name: str, seconds: float) -> None:
        """Record how long loading (import and validation) of plugin ``name`` took."""
        self._record_phase(name, "load_time", seconds)

    def record_init(self, name: str, seconds: float) -> None:
        """Record how long plugin ``name``'s helix_init took."""
        self._record_phase(name, "init_time", seconds)

    def record_start(self, name: str, seconds: float) -> None:
        """Record how long plugin ``name``'s helix_start took."""
        self._record_phase(name, "start_time", seconds)

    def record_call(self, name: str, method: str, seconds: float, error: bool = False) -> None:
        """Record one call of plugin ``name``'s impl of hook ``method`` made outside pluggy."""
        _check_seconds(seconds)
        with self._lock:
            slot = self._slot(name, method)
            slot.samples.append(seconds)
            if error:
                slot.error_marks.append(True)
            if len(slot.samples) >= _MAX_BUFFERED:
                slot.fold()

    def get_stats(self, name: str) -> PluginStats:
        """Plugin ``name``'s figures; a plugin never recorded gets empty ones."""
        with self._lock:
            return self._plugin_stats(name)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every plugin's figures as plain JSON-able data, keyed by plugin name."""
        with self._lock:
            names = sorted(self._slots.keys() | self._phases.keys())
            return {name: attrs.asdict(self._plugin_stats(name)) for name in names}

    def forget(self, name: str) -> None:
        """Drop plugin ``name``'s figures, as when it is unloaded."""
        with self._lock:
            self._slots.pop(name, None)
            self._phases.pop(name, None)
            # Cached plans point at the dropped slots; rebuilt plans get fresh ones.
            for dispatch in self._dispatches:
                dispatch.clear()

    def install(self, pm: pluggy.PluginManager) -> None:
        """Time every hookimpl call made through ``pm`` (its hooks, subset callers, call_extra).

        Installing twice on the same manager is a no-op.
        """
        current = pm._inner_hookexec
        owner = getattr(current, "__self__", None)
        if isinstance(owner, _TimedDispatch):
            if owner.metrics is self:
                return
            raise HelixError(
                "another Metrics is already installed on this plugin manager",
                hint="install a single Metrics per plugin manager",
            )
        if current is not _multicall:
            raise HelixError(
                "pluggy tracing or call monitoring is already active on this plugin manager",
                hint="install metrics before enable_tracing() or add_hookcall_monitoring()",
            )
        dispatch = _TimedDispatch(self)
        with self._lock:
            self._dispatches.add(dispatch)
        pm._inner_hookexec = dispatch.hookexec
        _log.debug("timing hook calls of %r", pm.project_name)

    def drain(self, pm: pluggy.PluginManager, impls: Iterable[HookImpl], timeout: float) -> bool:
        """Wait until no hook call through ``pm`` can still reach ``impls``; False on timeout.

        Call it after taking ``impls`` out of ``pm``: pluggy copies a hook's impl list before
        dispatch, so a call may hold a stale copy. Such a call that has not reached the dispatch
        yet is kept from the retired impls; the ones already past it are waited for.
        """
        dispatch = _dispatch_of(pm)
        if dispatch is None:
            raise HelixError(
                "cannot drain a plugin manager that Metrics is not installed on",
                hint="call Metrics.install(pm) when creating the manager",
            )
        with self._lock:
            dispatch.retire(impls)
        return dispatch.wait_idle(timeout)

    def _record_phase(self, name: str, phase: str, seconds: float) -> None:
        _check_seconds(seconds)
        with self._lock:
            self._phases.setdefault(name, {})[phase] = seconds

    def _slot(self, name: str, method: str) -> _Slot:
        # Lock held: two threads must never create separate slots for one plugin and hook.
        hooks = self._slots.setdefault(name, {})
        slot = hooks.get(method)
        if slot is None:
            slot = hooks[method] = _Slot()
        return slot

    def _plugin_stats(self, name: str) -> PluginStats:
        hooks: dict[str, CallStats] = {}
        for method, slot in sorted(self._slots.get(name, {}).items()):
            slot.fold()
            if slot.count:
                hooks[method] = slot.stats()
        phases = self._phases.get(name, {})
        return PluginStats(
            load_time=phases.get("load_time"),
            init_time=phases.get("init_time"),
            start_time=phases.get("start_time"),
            hooks=hooks,
        )

    def _fold(self, slots: Iterable[_Slot]) -> None:
        with self._lock:
            for slot in slots:
                slot.fold()


# One impl call in a plan: function, argument count, the first two argument names ("" when
# absent), a getter returning the argument tuple (used for other counts), the slot's
# samples.append, and the slot.
_UnaryStep: TypeAlias = tuple[
    Callable[[object], object], str, Callable[[float], None], Callable[[bool], None]
]
_BinaryStep: TypeAlias = tuple[
    Callable[[object, object], object],
    str,
    str,
    Callable[[float], None],
    Callable[[bool], None],
]
_Step: TypeAlias = tuple[
    Callable[..., object],
    int,
    str,
    str,
    Callable[[Mapping[str, object]], tuple[object, ...]],
    Callable[[float], None],
    _Slot,
]


class _Plan:
    """How to run and time one exact list of impls of one hook; built once, reused per call."""

    __slots__ = (
        "binary",
        "impls",
        "multicall_impls",
        "needs",
        "slots",
        "steps",
        "ticker",
        "unary",
    )

    def __init__(
        self,
        impls: list[HookImpl],
        steps: tuple[_Step, ...],
        multicall_impls: list[HookImpl] | None,
        slots: tuple[_Slot, ...],
    ) -> None:
        self.impls = impls
        # Call order (pluggy runs the list back to front); empty when multicall_impls is used.
        self.steps = steps
        # Every argument name some impl takes: one subset test per call admits the fast loops,
        # which then need no per-impl missing-argument handling.
        self.needs = frozenset(name for step in steps for name in step[2:4] if name)
        arities = {step[1] for step in steps}
        # When every impl takes one argument (or every impl two), a loop without branches on
        # the argument count runs them: (function, name(s), samples.append, error_marks.append).
        self.unary: tuple[_UnaryStep, ...] | None = None
        self.binary: tuple[_BinaryStep, ...] | None = None
        if arities == {1}:
            self.unary = tuple((s[0], s[2], s[5], s[6].error_marks.append) for s in steps)
        elif arities == {2}:
            self.binary = tuple((s[0], s[2], s[3], s[5], s[6].error_marks.append) for s in steps)
        # With wrappers (or impls taking keyword defaults) pluggy's own _multicall runs these
        # copies of the impls, whose non-wrapper functions are timed.
        self.multicall_impls = multicall_impls
        self.slots = slots
        self.ticker = itertools.count(1)


class _TimedDispatch:
    """A PluginManager's inner hookexec: runs the impls pluggy passes, timing each.

    Impls retired by ``drain`` are left out even when a caller passes a stale list.
    """

    __slots__ = ("__weakref__", "_plans", "_recent", "_retired", "inflight", "metrics")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # Every call appends on entry and pops on exit (both atomic under the GIL); wait_idle
        # swaps in a fresh list and waits for the old one to empty.
        self.inflight: list[None] = []
        # id -> impl of the impls retired by the last two drains; the impl is kept so that its
        # id cannot be reused while it is listed.
        self._retired: tuple[dict[int, HookImpl], dict[int, HookImpl]] = ({}, {})
        # hook name -> plan of its latest impl list: the common case costs one list comparison
        self._plans: dict[str, _Plan] = {}
        # (hook name, *impl ids) -> plan, oldest first; a plan keeps its impls (and ids) alive
        self._recent: dict[tuple[object, ...], _Plan] = {}

    def clear(self) -> None:
        self._plans.clear()
        self._recent.clear()

    def retire(self, impls: Iterable[HookImpl]) -> None:
        """Leave ``impls`` out of every plan from now on (called under the metrics lock)."""
        # A stale impl list can only be held by a call that started before the previous drain
        # finished, so two drains' worth of retirees is enough to remember.
        self._retired = (self._retired[1], {id(impl): impl for impl in impls})
        self.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for the calls in flight now to finish; False if some still run after timeout."""
        previous, self.inflight = self.inflight, []
        deadline = perf_counter() + timeout
        pause = 1e-4
        while previous:
            if perf_counter() >= deadline:
                _log.warning(
                    "%d hook call(s) still running after %.3gs; going on without them",
                    len(previous),
                    timeout,
                )
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        return True

    def hookexec(
        self,
        hook_name: str,
        hook_impls: Sequence[HookImpl],
        caller_kwargs: Mapping[str, object],
        firstresult: bool,
    ) -> object | list[object]:
        """Same contract and semantics as pluggy's _multicall, plus timing."""
        __tracebackhide__ = True
        inflight = self.inflight
        inflight.append(None)
        try:
            plan = self._plans.get(hook_name)
            if plan is None or plan.impls != hook_impls:
                plan = self._plan_for(hook_name, hook_impls)
            if not next(plan.ticker) & _FOLD_MASK:
                self.metrics._fold(plan.slots)
            if plan.multicall_impls is not None:
                return _multicall(hook_name, plan.multicall_impls, caller_kwargs, firstresult)
            results: list[object] = []
            clock = perf_counter
            # The common shapes get their own loops (this is the hot path; the general loop
            # below keeps pluggy's exact behaviour when an argument is missing).
            if plan.needs <= caller_kwargs.keys():
                if plan.unary is not None:
                    last = clock()
                    try:
                        # mark_error is for the except clause: the impl that raised.
                        for call1, arg, record1, mark_error in plan.unary:  # noqa: B007
                            result = call1(caller_kwargs[arg])
                            now = clock()
                            record1(now - last)
                            last = now
                            if result is not None:
                                results.append(result)
                                if firstresult:
                                    return result
                    except BaseException:
                        record1(clock() - last)
                        mark_error(True)
                        raise
                    return None if firstresult else results
                if plan.binary is not None:
                    last = clock()
                    try:
                        for call2, arg1, arg2, record2, mark_error2 in plan.binary:  # noqa: B007
                            result = call2(caller_kwargs[arg1], caller_kwargs[arg2])
                            now = clock()
                            record2(now - last)
                            last = now
                            if result is not None:
                                results.append(result)
                                if firstresult:
                                    return result
                    except BaseException:
                        record2(clock() - last)
                        mark_error2(True)
                        raise
                    return None if firstresult else results
            last = clock()
            for function, arity, first_name, second_name, getter, record, slot in plan.steps:
                # One and two arguments are passed directly: building and unpacking an argument
                # tuple costs more than the timing itself.
                try:
                    if arity == 1:
                        first = caller_kwargs[first_name]
                    elif arity == 2:
                        first = caller_kwargs[first_name]
                        second = caller_kwargs[second_name]
                    else:
                        args = getter(caller_kwargs)
                except KeyError as exc:
                    raise HookCallError(f"hook call must provide argument {exc.args[0]!r}") from exc
                try:
                    if arity == 1:
                        result = function(first)
                    elif arity == 2:
                        result = function(first, second)
                    else:
                        result = function(*args)
                except BaseException:
                    record(clock() - last)
                    slot.error_marks.append(True)
                    raise
                # Consecutive stamps: each impl's duration costs one clock read.
                now = clock()
                record(now - last)
                last = now
                if result is not None:
                    results.append(result)
                    if firstresult:
                        break
            if firstresult:
                return results[0] if results else None
            return results
        finally:
            inflight.pop()

    def _plan_for(self, hook_name: str, hook_impls: Sequence[HookImpl]) -> _Plan:
        key = (hook_name, *map(id, hook_impls))
        # Built and stored under the lock so forget() cannot be overtaken by a stale plan.
        with self.metrics._lock:
            plan = self._recent.get(key)
            if plan is None:
                plan = self._build(hook_name, list(hook_impls))
                self._recent[key] = plan
                if len(self._recent) > _RECENT_PLANS:
                    del self._recent[next(iter(self._recent))]
            self._plans[hook_name] = plan
        return plan

    def _build(self, hook_name: str, passed: list[HookImpl]) -> _Plan:
        metrics = self.metrics
        retired_before, retired_now = self._retired
        impls = [i for i in passed if id(i) not in retired_now and id(i) not in retired_before]
        slots = {
            impl.plugin_name: metrics._slot(impl.plugin_name, hook_name)
            for impl in impls
            if not (impl.wrapper or impl.hookwrapper)
        }
        if any(impl.wrapper or impl.hookwrapper or impl.kwargnames for impl in impls):
            # Wrapper semantics (and keyword-default passing, which differs between pluggy
            # versions) stay exactly pluggy's: it runs the impls, ours only time them.
            multicall_impls = [
                impl
                if impl.wrapper or impl.hookwrapper
                else _timed_copy(impl, slots[impl.plugin_name])
                for impl in impls
            ]
            return _Plan(passed, (), multicall_impls, tuple(slots.values()))
        steps = tuple(_step(impl, slots[impl.plugin_name]) for impl in reversed(impls))
        return _Plan(passed, steps, None, tuple(slots.values()))


def _dispatch_of(pm: pluggy.PluginManager) -> _TimedDispatch | None:
    owner = getattr(pm._inner_hookexec, "__self__", None)
    return owner if isinstance(owner, _TimedDispatch) else None


def _no_arguments(caller_kwargs: Mapping[str, object]) -> tuple[()]:
    return ()


def _step(impl: HookImpl, slot: _Slot) -> _Step:
    names = impl.argnames
    # Lookups in name order: a missing argument is reported by its name, as pluggy does.
    getter: Callable[[Mapping[str, object]], tuple[object, ...]] = _no_arguments
    if len(names) > 2:
        getter = itemgetter(*names)
    first_name, second_name = (*names, "", "")[:2]
    return (impl.function, len(names), first_name, second_name, getter, slot.samples.append, slot)


def _timed_copy(impl: HookImpl, slot: _Slot) -> HookImpl:
    function = impl.function
    record = slot.samples.append

    def timed(*args: object, **kwargs: object) -> object:
        start = perf_counter()
        try:
            result = function(*args, **kwargs)
        except BaseException:
            record(perf_counter() - start)
            slot.error_marks.append(True)
            raise
        record(perf_counter() - start)
        return result

    twin = copy.copy(impl)
    # HookImpl.function is Final for pluggy's users; this private copy is ours to rewire.
    object.__setattr__(twin, "function", timed)
    return twin
