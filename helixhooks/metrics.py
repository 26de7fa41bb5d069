"""Per-plugin call statistics: counts, errors, totals and latency histograms, nothing else.

The dispatch layer (``_dispatch.py``) feeds it: timing sits on the hot path of every hook call,
so a call does one ``perf_counter`` stamp and one ``list.append`` per impl into a slot's raw
samples (atomic under the GIL, so no lock). Sorting those into totals and a histogram is deferred
until figures are read or a plan has made enough calls, then done in batches under the lock.
Nothing here knows about plugin managers: lifecycle correctness never depends on Metrics.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs

# Histogram buckets per power of two: a bucket's midpoint is within 1/64 (1.6%) of any value in it.
_SUB_BUCKETS = 32
_SCALE = 2 * _SUB_BUCKETS
# Each sub-bucket's upper bound as a mantissa (times 2**exponent).
_UPPER = tuple(0.5 + (sub + 1) / _SCALE for sub in range(_SUB_BUCKETS))
# Durations below this share one bucket reported as 0; ``frexp`` stays exact above it.
_TINY = 2.0**-1000
_ZERO_KEY = -(2**31)
# Longer durations are refused: the bounds of their buckets would overflow a float.
_LARGEST = 2.0**1000
_PHASES = ("load_time", "init_time", "start_time")
_NO_PHASES: tuple[float | None, ...] = (None, None, None)
# record_call folds a slot once it holds this many samples.
_MAX_BUFFERED = 4096


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
    #: Permission name -> how many times the guard denied it to this plugin.
    denials: Mapping[str, int] = attrs.field(factory=dict)
    #: Event kind -> how many such events the plugin had (reloads, refusals, crashes, ...).
    events: Mapping[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Histogram:
    """One plugin's calls of one hook by duration, cumulative as Prometheus counts them.

    ``counts[i]`` calls took at most ``bounds[i]`` seconds; ``count``, ``errors`` and ``total``
    cover every call. A call counts under the bounds its histogram bucket's midpoint is under,
    so one within 1.6% of a bound may count on either side of it.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    errors: int
    total: float


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
        get, frexp, ldexp = buckets.get, math.frexp, math.ldexp
        pos = bisect_left(chunk, _TINY)
        if pos:
            buckets[_ZERO_KEY] = get(_ZERO_KEY, 0) + pos
        # One pass per bucket, not per sample; this runs for every call's samples in the end.
        while pos < n:
            mantissa, exponent = frexp(chunk[pos])
            sub = int((mantissa - 0.5) * _SCALE)
            end = bisect_left(chunk, ldexp(_UPPER[sub], exponent), pos)
            key = exponent * _SUB_BUCKETS + sub
            buckets[key] = get(key, 0) + end - pos
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

    Thread-safe; counts are exact under concurrent calls. The dispatch layer records into the
    slots that ``slot`` hands it; ``record_call`` is for calls made outside pluggy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[str, _Slot]] = {}
        # plugin name -> (load_time, init_time, start_time), replaced whole on each record: a
        # tuple of three is smaller than a list of three (let alone a dict), and every loaded
        # plugin has one
        self._phases: dict[str, tuple[float | None, ...]] = {}
        # plugin name -> permission name -> denials; only plugins that were denied something
        self._denials: dict[str, dict[str, int]] = {}
        # plugin name -> event kind -> count; only plugins that had an event recorded
        self._events: dict[str, dict[str, int]] = {}

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

    def record_denial(self, name: str, permission: str) -> None:
        """Count one use of ``permission`` the guard denied to plugin ``name``."""
        with self._lock:
            denials = self._denials.setdefault(name, {})
            denials[permission] = denials.get(permission, 0) + 1

    def record_event(self, name: str, kind: str) -> None:
        """Count one event of ``kind`` (a PluginEvent's kind, as "reloaded") for plugin ``name``."""
        with self._lock:
            events = self._events.setdefault(name, {})
            events[kind] = events.get(kind, 0) + 1

    def totals(self, name: str, hooks: Collection[str] | None = None) -> CallStats | None:
        """Plugin ``name``'s calls of all its hooks (or of ``hooks``) as one; None if none.

        The percentiles come from the hooks' histograms merged, so they are as exact as one
        hook's are.
        """
        merged = _Slot()
        with self._lock:
            for method, slot in self._slots.get(name, {}).items():
                if hooks is not None and method not in hooks:
                    continue
                slot.fold()
                merged.count += slot.count
                merged.errors += slot.errors
                merged.total += slot.total
                merged.min = min(merged.min, slot.min)
                merged.max = max(merged.max, slot.max)
                for key, count in slot.buckets.items():
                    merged.buckets[key] = merged.buckets.get(key, 0) + count
        return merged.stats() if merged.count else None

    def histograms(self, name: str, bounds: Sequence[float]) -> dict[str, Histogram]:
        """Plugin ``name``'s calls of each hook it was called for, counted under ``bounds``.

        ``bounds`` are upper bounds in seconds, ascending, as a Prometheus histogram's buckets.
        """
        ordered = tuple(bounds)
        if list(ordered) != sorted(set(ordered)):
            raise ValueError(f"bounds must ascend with no repeats, not {ordered!r}")
        found = {}
        with self._lock:
            for method, slot in sorted(self._slots.get(name, {}).items()):
                slot.fold()
                if not slot.count:
                    continue
                counts = []
                seen = 0
                keys = iter(sorted(slot.buckets))
                key = next(keys, None)
                for bound in ordered:
                    while key is not None and _bucket_midpoint(key) <= bound:
                        seen += slot.buckets[key]
                        key = next(keys, None)
                    counts.append(seen)
                found[method] = Histogram(
                    ordered, tuple(counts), slot.count, slot.errors, slot.total
                )
        return found

    def get_stats(self, name: str) -> PluginStats:
        """Plugin ``name``'s figures; a plugin never recorded gets empty ones."""
        with self._lock:
            return self._plugin_stats(name)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every plugin's figures as plain JSON-able data, keyed by plugin name."""
        with self._lock:
            names = sorted(
                self._slots.keys()
                | self._phases.keys()
                | self._denials.keys()
                | self._events.keys()
            )
            return {name: attrs.asdict(self._plugin_stats(name)) for name in names}

    def forget(self, name: str) -> None:
        """Drop plugin ``name``'s figures, as when it is unloaded.

        Call it once the plugin's impls have left the dispatch: a plan still running them keeps
        recording into the dropped slots.
        """
        with self._lock:
            self._slots.pop(name, None)
            self._phases.pop(name, None)
            self._denials.pop(name, None)
            self._events.pop(name, None)

    def slot(self, name: str, method: str) -> _Slot:
        """The slot that plugin ``name``'s impl of ``method`` records its calls into."""
        with self._lock:
            return self._slot(name, method)

    def fold(self, slots: Iterable[_Slot]) -> None:
        """Sort the raw samples of ``slots`` into their figures (the dispatch calls this)."""
        with self._lock:
            for slot in slots:
                slot.fold()

    def _record_phase(self, name: str, phase: str, seconds: float) -> None:
        _check_seconds(seconds)
        with self._lock:
            at = _PHASES.index(phase)
            phases = self._phases.get(name, _NO_PHASES)
            self._phases[name] = (*phases[:at], seconds, *phases[at + 1 :])

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
        load_time, init_time, start_time = self._phases.get(name, _NO_PHASES)
        return PluginStats(
            load_time=load_time,
            init_time=init_time,
            start_time=start_time,
            hooks=hooks,
            denials=dict(self._denials.get(name, {})),
            events=dict(self._events.get(name, {})),
        )
