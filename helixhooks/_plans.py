"""How to run one exact implementation list of a hook: the code a dispatch plan calls.

The plain impls run as straight-line code generated per *shape* (each impl's argument
positions, timed or not) and compiled once, as attrs generates its methods: each argument is
read from the call once, and a per-impl concern (timing for Metrics) is composed in when the code
is made, so a call pays for the concern's own work and nothing else. Wrappers stay pluggy's: its
loop runs them, with every plain impl as one block in their place.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from pluggy import HookImpl

from . import _pluggy_compat as compat

if TYPE_CHECKING:
    from .metrics import _Slot

PlanRun = Callable[[Mapping[str, object], bool], object]


class CompiledImpls:
    """The plain impls of a compiled plan, whose functions the plan's code reads from ``fs``.

    Retiring a term replaces its entries in ``fs`` by ``_skipped``, so a call already running
    the plan skips them at their turn. The code keeps the index of the impl it is at in its
    local ``i``; a drain reads it from the call's frame to wait only for a call inside one.
    """

    __slots__ = ("codes", "fs", "owners")

    def __init__(
        self, codes: tuple[object, ...], fs: list[Callable[..., object]], owners: list[object]
    ):
        self.codes = codes
        self.fs = fs
        self.owners = owners


class Runner:
    """A plan's run function; ``steps`` is None when pluggy's own loop runs the impls."""

    __slots__ = ("run", "steps", "whole")

    def __init__(self, run: PlanRun, steps: CompiledImpls | None, whole: frozenset[object]) -> None:
        self.run = run
        self.steps = steps
        # Terms a call reaches in ways ``steps`` cannot locate (wrappers, pluggy's loop): a
        # drain of one of these waits for whole calls.
        self.whole = whole


def skipped(*args: object) -> None:
    """Stands in for a retired impl in a plan already running: the call skips it."""
    return None


def build_runner(hook_name: str, impls: list[HookImpl], slots: list[_Slot] | None) -> Runner:
    """How to run ``impls`` (in pluggy's order) for one call, timing each."""
    is_wrapper = [impl.wrapper or impl.hookwrapper for impl in impls]
    owners = [getattr(impl, "owner", None) for impl in impls]
    plain = [impl for impl, wrapper in zip(impls, is_wrapper, strict=True) if not wrapper]
    plain_slots = (
        [slot for slot, wrapper in zip(slots, is_wrapper, strict=True) if not wrapper]
        if slots is not None
        else None
    )
    contiguous = is_wrapper == sorted(is_wrapper)
    with_defaults = compat.PASSES_DEFAULTS and any(impl.kwargnames for impl in plain)
    if not contiguous or with_defaults:
        # Shapes pluggy never builds itself, or arguments whose defaults pluggy's version decides
        # whether to pass: pluggy runs them, ours only time them.
        copies = _timed_copies(impls, slots)
        run = functools.partial(compat.multicall, hook_name, copies)
        return Runner(run, None, frozenset(owners) - {None})

    def fallback(kwargs: Mapping[str, object], firstresult: bool) -> object:
        # A missing argument: pluggy's loop names it exactly as pluggy does (a rare path, so
        # its timed copies are made per call rather than kept with the plan).
        impls = _timed_copies(plain, plain_slots)
        return compat.multicall(hook_name, impls, kwargs, firstresult)

    call_order = list(reversed(plain))
    run_plain, run_args, names, fs = _compile_plain(call_order, _reversed(plain_slots), fallback)
    steps = CompiledImpls(
        (run_plain.__code__, run_args.__code__),
        fs,
        [getattr(impl, "owner", None) for impl in call_order],
    )
    wrappers = [impl for impl, wrapper in zip(impls, is_wrapper, strict=True) if wrapper]
    if not wrappers:
        return Runner(run_plain, steps, frozenset())

    # pluggy runs the wrappers, with every plain impl as one block in their place; the block
    # returns the hook's final answer, which firstresult=True hands over unchanged.
    lists = tuple(
        [_block(wrappers[0], functools.partial(run_args, firstresult), tuple(names)), *wrappers]
        for firstresult in (False, True)
    )

    def run_wrapped(kwargs: Mapping[str, object], firstresult: bool) -> object:
        return compat.multicall(hook_name, lists[firstresult], kwargs, True)

    wrapper_owners = frozenset(getattr(impl, "owner", None) for impl in wrappers) - {None}
    return Runner(run_wrapped, steps, wrapper_owners)


def _reversed(slots: list[_Slot] | None) -> list[_Slot] | None:
    return list(reversed(slots)) if slots is not None else None


def _block(like: HookImpl, function: Callable[..., object], argnames: tuple[str, ...]) -> HookImpl:
    """What stands in, for pluggy's ``_multicall``, for all the plain impls of a wrapped hook.

    ``argnames`` are every argument the plain impls take, so pluggy reads them for the block as
    it would for the impls (a missing one is pluggy's own HookCallError, raised where the first
    plain impl would be called). A HookImpl of the same type as the wrappers beside it, so the
    interpreter's specialized attribute reads in pluggy's loop keep working.
    """
    block = compat.owned_copy(like, None)
    for slot, value in (
        ("function", function),
        ("argnames", argnames),
        ("kwargnames", ()),
        ("wrapper", False),
        ("hookwrapper", False),
        ("plugin_name", "<helixhooks>"),
    ):
        object.__setattr__(block, slot, value)
    return block


def _timed_copies(impls: list[HookImpl], slots: list[_Slot] | None) -> list[HookImpl]:
    if slots is None:
        return impls
    return [
        impl if impl.wrapper or impl.hookwrapper else _timed_copy(impl, slot)
        for impl, slot in zip(impls, slots, strict=True)
    ]


def _timed_copy(impl: HookImpl, slot: _Slot) -> HookImpl:
    function = impl.function
    record = slot.samples.append
    mark_error = slot.error_marks.append

    def timed(*args: object, **kwargs: object) -> object:
        start = perf_counter()
        try:
            result = function(*args, **kwargs)
        except BaseException:
            record(perf_counter() - start)
            mark_error(True)
            raise
        record(perf_counter() - start)
        return result

    twin = compat.owned_copy(impl, getattr(impl, "owner", None))
    object.__setattr__(twin, "function", timed)
    return twin


# Generated plan code, by shape: each impl's argument positions, and whether calls are timed.
_TEMPLATES: dict[tuple[tuple[tuple[int, ...], ...], bool], Callable[..., Any]] = {}
_TEMPLATES_LOCK = threading.Lock()


def _compile_plain(
    impls: list[HookImpl], slots: list[_Slot] | None, fallback: PlanRun
) -> tuple[Any, Any, list[str], list[Callable[..., object]]]:
    """Straight-line code calling ``impls`` in order (pluggy's call order).

    Returns ``run`` and ``run_args`` (see _template), the argument names in ``run_args``'
    order, and ``fs``, the functions the code calls. Each argument is read from the call's
    kwargs once, not once per impl; a missing one sends the call to ``fallback``, pluggy's own
    loop, which names it exactly as pluggy does.
    """
    names: list[str] = []
    for impl in impls:
        names.extend(n for n in impl.argnames if n not in names)
    shape = tuple(tuple(names.index(n) for n in impl.argnames) for impl in impls)
    timed = slots is not None
    with _TEMPLATES_LOCK:
        factory = _TEMPLATES.get((shape, timed))
        if factory is None:
            factory = _TEMPLATES[(shape, timed)] = _template(shape, len(names), timed)
    fs = [impl.function for impl in impls]
    if slots is None:
        return (*factory(fallback, *names, fs), names, fs)
    records = [slot.samples.append for slot in slots]

    def fail(index: int, seconds: float) -> None:
        slots[index].samples.append(seconds)
        slots[index].error_marks.append(True)

    return (*factory(fallback, perf_counter, fail, *names, fs, *records), names, fs)


def _template(
    shape: tuple[tuple[int, ...], ...], arg_count: int, timed: bool
) -> Callable[..., tuple[PlanRun, Callable[..., object]]]:
    """Source for ``run(kw, firstresult)`` and ``run_args(firstresult, a0, a1, ...)``.

    ``run`` serves hook calls; ``run_args`` is the block that pluggy's loop calls, with the
    arguments it read for it, when wrappers run around the plain impls.
    """
    count = len(shape)
    params = ["fallback"]
    if timed:
        params += ["clock", "fail"]
    params += [f"n{j}" for j in range(arg_count)] + ["fs"]
    if timed:
        params += [f"t{i}" for i in range(count)]
    calls = ["results = []"]
    indent = ""
    if timed:
        calls += ["last = clock()", "try:"]
        indent = "    "
    # ``i`` is kept for the drain (see _reaching) and for naming the impl that raised.
    if not count:
        calls.append(f"{indent}i = 0")
    for i, positions in enumerate(shape):
        args = ", ".join(f"a{j}" for j in positions)
        calls.append(f"{indent}i = {i}")
        calls.append(f"{indent}r = fs[{i}]({args})")
        if timed:
            calls.append(f"{indent}now = clock(); t{i}(now - last); last = now")
        calls += [
            f"{indent}if r is not None:",
            f"{indent}    if firstresult:",
            f"{indent}        return r",
            f"{indent}    results.append(r)",
        ]
    if timed:
        calls += ["except BaseException:", "    fail(i, clock() - last)", "    raise"]
    calls.append("return None if firstresult else results")
    body = ["def run(kw, firstresult):"]
    if arg_count:
        body += ["    try:"]
        body += [f"        a{j} = kw[n{j}]" for j in range(arg_count)]
        body += ["    except KeyError:", "        return fallback(kw, firstresult)"]
    body += ["    " + line for line in calls]
    body += [f"def run_args({', '.join(['firstresult', *(f'a{j}' for j in range(arg_count))])}):"]
    body += ["    " + line for line in calls]
    source = f"def make({', '.join(params)}):\n" + "\n".join("    " + line for line in body)
    source += "\n    return run, run_args\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<helixhooks plan {shape!r}>", "exec"), namespace)
    factory: Callable[..., tuple[PlanRun, Callable[..., object]]] = namespace["make"]
    return factory
