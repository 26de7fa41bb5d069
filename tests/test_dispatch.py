"""The dispatch layer under pluggy's hook calls, through the public API only (DESIGN.md decision 0).

Every test runs real plugin directories in a real PluginSystem with real threads. A plugin call
that must stay in flight blocks on a ``threading.Event`` the test controls, so "did not wait for
it" is observed while the event is still unset, not guessed from timings. Every wait is bounded:
the drain timeout (``load_timeout``) is ``LOAD_TIMEOUT``, and an operation that must not wait for
an unrelated blocked call gets ``PROMPT`` seconds, well under it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

import helixhooks as hh
from helixhooks import hookspec

from ._plugins import wait_for, write_plugin

# What a drain that waited for an unrelated (blocked) call would take.
LOAD_TIMEOUT = 8.0
# What an operation that must not wait for that call is given; generous, far below LOAD_TIMEOUT.
PROMPT = 4.0
# How long a plugin call blocks at most on its gate, so no thread outlives a failed test for long.
GATE_LIMIT = 30.0


class DispatchSpec:
    """The host hooks the test plugins implement."""

    @hookspec
    def block(self) -> object:
        """Blocks on the test's gate (in plugins that implement it)."""

    @hookspec
    def ping(self) -> object:
        """Answers (plugin name, whether it is started)."""

    @hookspec
    def chain(self) -> object:
        """Every plugin answers; one tryfirst impl may block first."""

    @hookspec
    def work(self, n: int) -> object:
        """Returns n; counts itself in flight."""

    @hookspec
    def restart_other(self, target: str) -> object:
        """Calls system.restart(target) from inside a hook call."""


class Bus:
    """What the test and its plugins share: handed to each plugin as config["bus"]."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.read_names = False
        self.system: hh.PluginSystem | None = None


# A plugin that logs its lifecycle and keeps a ``started`` flag: True at the end of helix_start,
# False at the start of helix_stop. Its calls log whether it was started when they ran.
PROBE = """
import helixhooks as hh


class Plugin:
    started = False

    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.name = ctx.name
        self.bus = config["bus"]

    @hh.hookimpl
    def helix_start(self, ctx):
        self.bus.log.append(("start", self.name))
        self.started = True

    @hh.hookimpl
    def helix_stop(self, ctx):
        self.started = False
        self.bus.log.append(("stop", self.name))

    @hh.hookimpl
    def ping(self):
        self.bus.log.append(("ping", self.name, self.started))
        return (self.name, self.started)

    @hh.hookimpl
    def chain(self):
        self.bus.log.append(("chain", self.name, self.started))
        return (self.name, self.started)

    @hh.hookimpl
    def restart_other(self, target):
        self.bus.system.restart(target)
        self.bus.log.append(("restarted", self.name, target))
        return target
"""

# A probe whose ``block`` waits on the test's gate, then (if asked) reads system.names().
BLOCKER = (
    PROBE
    + """
    @hh.hookimpl
    def block(self):
        self.bus.log.append(("block", self.name, self.started))
        self.bus.entered.set()
        self.bus.gate.wait(30)
        if self.bus.read_names:
            self.bus.log.append(("names", self.name, tuple(self.bus.system.names())))
        self.bus.log.append(("block-done", self.name))
        return self.name
"""
)

# A probe whose ``chain`` impl runs first and blocks on the gate: the call holds its copy of the
# impl list while the test retires other plugins.
GATE = PROBE.replace(
    "    @hh.hookimpl\n    def chain(self):",
    "    @hh.hookimpl(tryfirst=True)\n    def chain(self):",
).replace(
    '        self.bus.log.append(("chain", self.name, self.started))\n',
    '        self.bus.log.append(("chain", self.name, self.started))\n'
    "        self.bus.entered.set()\n"
    "        self.bus.gate.wait(30)\n",
)
assert "tryfirst=True" in GATE and "gate.wait" in GATE.split("def chain")[1].split("def ")[0]


class Worker(threading.Thread):
    """Runs ``fn`` once in a daemon thread, keeping its result or exception."""

    def __init__(self, fn: Callable[[], object], name: str = "test-worker") -> None:
        super().__init__(name=name, daemon=True)
        self._fn = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None

    def run(self) -> None:
        began = time.monotonic()
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - began

    def finished_within(self, timeout: float) -> bool:
        self.join(timeout)
        return not self.is_alive()


def _go(fn: Callable[[], object], name: str = "test-worker") -> Worker:
    worker = Worker(fn, name)
    worker.start()
    return worker


def _system(
    root: Path, bus: Bus, names: list[str], *, load_timeout: float = LOAD_TIMEOUT
) -> hh.PluginSystem:
    system = hh.PluginSystem(
        hh.Config(
            plugin_dirs=[root],
            entry_point_group=None,
            load_timeout=load_timeout,
            plugin_config={name: {"bus": bus} for name in names},
        ),
        specs=[DispatchSpec],
    )
    bus.system = system
    return system


@pytest.fixture
def bus() -> Iterator[Bus]:
    bus = Bus()
    try:
        yield bus
    finally:
        # Whatever happened, no plugin call stays blocked after the test.
        bus.gate.set()


def _close(system: hh.PluginSystem, bus: Bus, *workers: Worker) -> None:
    bus.gate.set()
    for worker in workers:
        worker.join(LOAD_TIMEOUT + PROMPT)
    system.close()


def _state(system: hh.PluginSystem, name: str) -> hh.PluginState:
    return system.get(name).state


# -- 1. draining waits only for the retiring plugin's own calls ------------------------------


@pytest.mark.parametrize("operation", ["stop", "restart"])
def test_retiring_a_plugin_waits_only_for_its_own_calls(
    tmp_path: Path, bus: Bus, operation: str
) -> None:
    write_plugin(tmp_path, "x", BLOCKER)
    write_plugin(tmp_path, "y", PROBE)
    system = _system(tmp_path, bus, ["x", "y"])
    system.load_all()
    system.start_all()
    workers: list[Worker] = []
    try:
        caller = _go(system.hook.block, "x-caller")
        workers.append(caller)
        assert bus.entered.wait(PROMPT), "x's block() never started"

        retire = system.lifecycle.stop if operation == "stop" else system.restart
        retiring = _go(lambda: retire("y"), f"{operation}-y")
        workers.append(retiring)
        # Reads of the system while y is being retired (and x is blocked) must not queue behind
        # a drain either.
        reads = _go(lambda: (system.names(), system.health(), system.problems), "reads")
        workers.append(reads)

        stuck = [
            what
            for what, worker in (
                (f"{operation}('y') (waited for plugin x's unrelated in-flight call)", retiring),
                ("names()/health()/problems (blocked while y was being retired)", reads),
            )
            if not worker.finished_within(PROMPT)
        ]
        assert not stuck, f"did not finish while x's call was blocked: {stuck}"
        assert not bus.gate.is_set() and caller.is_alive(), "x's call must still be blocked"
        assert retiring.error is None, retiring.error
        assert reads.error is None, reads.error
        names, health, problems = reads.result  # type: ignore[misc]
        assert names == ["x", "y"]
        assert set(health) == {"x", "y"}
        assert problems == []
        expected = hh.PluginState.STOPPED if operation == "stop" else hh.PluginState.STARTED
        assert _state(system, "y") is expected
        assert ("stop", "y") in bus.log

        bus.gate.set()
        assert caller.finished_within(PROMPT)
        assert caller.error is None and caller.result == ["x"]
    finally:
        _close(system, bus, *workers)


# -- 2. a hook may read the system, or restart another plugin, while plugins are retired -----


def test_a_draining_plugins_call_can_read_names_and_the_stop_waits_for_it(
    tmp_path: Path, bus: Bus
) -> None:
    write_plugin(tmp_path, "p", BLOCKER)
    write_plugin(tmp_path, "q", PROBE)
    bus.read_names = True
    system = _system(tmp_path, bus, ["p", "q"])
    system.load_all()
    system.start_all()
    pm = system.registry.pm
    workers: list[Worker] = []
    try:
        caller = _go(system.hook.block, "p-caller")
        workers.append(caller)
        assert bus.entered.wait(PROMPT), "p's block() never started"

        stopping = _go(lambda: system.lifecycle.stop("p"), "stop-p")
        workers.append(stopping)
        wait_for(lambda: pm.get_plugin("p") is None, "p to leave the live manager", PROMPT)
        time.sleep(0.2)
        # The drain waits for p's own in-flight call: helix_stop has not run yet.
        assert ("stop", "p") not in bus.log, "helix_stop ran while p's own call was in flight"
        assert stopping.is_alive()

        bus.gate.set()
        assert caller.finished_within(PROMPT), (
            "p's in-flight call could not read system.names() while p was being drained "
            "(a lock is held during the drain)"
        )
        assert stopping.finished_within(PROMPT), "stopping p stalled after its call finished"
        assert caller.error is None, caller.error
        assert stopping.error is None, stopping.error
        assert ("names", "p", ("p", "q")) in bus.log
        assert bus.log.index(("block-done", "p")) < bus.log.index(("stop", "p"))
        assert _state(system, "p") is hh.PluginState.STOPPED
    finally:
        _close(system, bus, *workers)


@pytest.mark.parametrize(("caller_name", "target"), [("a", "b"), ("b", "b")])
def test_a_hook_that_restarts_a_plugin_does_not_wait_for_itself(
    tmp_path: Path, bus: Bus, caplog: pytest.LogCaptureFixture, caller_name: str, target: str
) -> None:
    # Only the calling plugin implements restart_other: the call's thread is in its impl.
    write_plugin(tmp_path, "a", PROBE if caller_name == "a" else _without_restart(PROBE))
    write_plugin(tmp_path, "b", PROBE if caller_name == "b" else _without_restart(PROBE))
    system = _system(tmp_path, bus, ["a", "b"])
    system.load_all()
    system.start_all()
    workers: list[Worker] = []
    try:
        call = _go(lambda: system.hook.restart_other(target=target), "restart-from-hook")
        workers.append(call)
        assert call.finished_within(PROMPT), (
            f"a hook of {caller_name!r} calling system.restart({target!r}) waited for its own "
            f"in-flight call (the drain must never wait for the calling thread)"
        )
        assert call.error is None, call.error
        assert call.result == [target]
        assert not [r for r in caplog.records if "still running" in r.getMessage()], [
            r.getMessage() for r in caplog.records
        ]
        assert _state(system, target) is hh.PluginState.STARTED
        assert bus.log.count(("start", target)) == 2
        assert bus.log.count(("stop", target)) == 1
    finally:
        _close(system, bus, *workers)


def _without_restart(code: str) -> str:
    return code.replace(
        "    @hh.hookimpl\n    def restart_other(self, target):",
        "    def _no_restart(self, target):",
    )


# -- 3. a call holding an old impl list never reaches a plugin retired since ----------------


def test_a_stale_impl_list_skips_plugins_retired_several_retirements_ago(
    tmp_path: Path, bus: Bus
) -> None:
    write_plugin(tmp_path, "gate", GATE)
    for name in ("victim", "o1", "o2", "o3"):
        write_plugin(tmp_path, name, PROBE)
    # A short drain timeout: an implementation that (wrongly) waits for the blocked call on
    # every retirement still gets through the five of them, and the call then meets them all.
    timeout = 1.5
    system = _system(tmp_path, bus, ["gate", "victim", "o1", "o2", "o3"], load_timeout=timeout)
    system.load_all()
    system.start_all()
    workers: list[Worker] = []
    try:
        # The call copies the impl list (victim's impl included), then blocks in gate's impl,
        # which runs first.
        caller = _go(system.hook.chain, "chain-caller")
        workers.append(caller)
        assert bus.entered.wait(PROMPT), "gate's chain() never started"

        def retire_many() -> None:
            system.lifecycle.stop("victim")
            system.lifecycle.stop("o1")
            system.restart("o2")
            system.lifecycle.stop("o3")
            system.restart("o2")

        retiring = _go(retire_many, "retire-many")
        workers.append(retiring)
        assert retiring.finished_within(5 * timeout + 3 * PROMPT), "retiring plugins hung"
        assert retiring.error is None, retiring.error
        assert ("stop", "victim") in bus.log
        assert caller.is_alive(), "the chain call must still be blocked in gate's impl"

        bus.gate.set()
        assert caller.finished_within(PROMPT)
        assert caller.error is None, caller.error
        findings = []
        assert retiring.elapsed is not None
        if retiring.elapsed > PROMPT:
            findings.append(
                f"the 5 retirements took {retiring.elapsed:.1f}s: they waited for the call "
                f"blocked in gate's impl (a drain waits only for the retired generation's own "
                f"calls; a call that has not reached the retired impl yet must skip it instead)"
            )
        ran_stopped = [entry for entry in bus.log if entry[0] == "chain" and entry[2] is False]
        if ran_stopped:
            findings.append(
                f"the call that copied the impl list before 5 retirements then ran retired "
                f"plugins' impls after their helix_stop: {ran_stopped}"
            )
        answered = {name for name, _ in caller.result}  # type: ignore[attr-defined]
        if answered & {"victim", "o1", "o3"}:
            findings.append(f"stopped plugins answered the call: {caller.result}")
        assert not findings, "\n".join(findings)
    finally:
        _close(system, bus, *workers)


# -- 4. PluginHandle.call is drained by stop like any other call ----------------------------

WORKER_PLUGIN = """
import threading
import time

import helixhooks as hh


class Plugin:
    started = False

    def __init__(self):
        self.lock = threading.Lock()
        self.inflight = 0
        self.violations = []
        self.starts = 0

    @hh.hookimpl
    def helix_start(self, ctx):
        self.starts += 1
        self.started = True

    @hh.hookimpl
    def helix_stop(self, ctx):
        self.started = False
        with self.lock:
            if self.inflight:
                self.violations.append(f"helix_stop ran with {self.inflight} work call(s) running")

    @hh.hookimpl
    def work(self, n):
        with self.lock:
            self.inflight += 1
        try:
            if not self.started:
                self.violations.append(f"work({n}) began while the plugin was not started")
            time.sleep(0.0002)
            if not self.started:
                self.violations.append(f"work({n}) ran on after helix_stop began")
            return n
        finally:
            with self.lock:
                self.inflight -= 1
"""


@pytest.mark.usefixtures("fast_switching")
def test_handle_calls_are_drained_by_stop(tmp_path: Path, bus: Bus) -> None:
    write_plugin(tmp_path, "p", WORKER_PLUGIN)
    system = _system(tmp_path, bus, ["p"], load_timeout=5.0)
    system.load_all()
    system.start_all()
    plugin: Any = system.get("p").plugin
    stop = threading.Event()
    errors: list[BaseException] = []
    answered = [0]

    def loop(offset: int) -> None:
        n = offset
        while not stop.is_set():
            n += 4
            try:
                result = system.get("p").call("work", n=n)
            except hh.LifecycleError:
                continue  # p is not started at this instant: documented
            except BaseException as exc:
                errors.append(exc)
                return
            if result != n:
                errors.append(AssertionError(f"work({n}) answered {result!r}"))
                return
            answered[0] += 1

    callers = [_go(lambda i=i: loop(i), f"handle-caller-{i}") for i in range(4)]
    try:
        wait_for(lambda: answered[0] >= 20, "handle calls to get through", PROMPT)
        for _ in range(200):
            system.restart("p")
            if plugin.violations or errors:
                break
    finally:
        stop.set()
        for caller in callers:
            caller.join(PROMPT)
        system.close()
    assert not errors, errors[:3]
    assert not plugin.violations, plugin.violations[:5]
    assert plugin.starts == 201
    assert answered[0] > 20


# -- 5. lifecycle correctness does not depend on Metrics (or on pluggy's monitoring) --------


def test_stop_and_restart_work_under_pluggys_call_monitoring(tmp_path: Path, bus: Bus) -> None:
    write_plugin(tmp_path, "x", BLOCKER)
    write_plugin(tmp_path, "y", PROBE)
    system = _system(tmp_path, bus, ["x", "y"])
    system.load_all()
    system.start_all()
    pm = system.registry.pm
    seen: list[tuple[str, str]] = []
    undo = pm.add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: seen.append(("before", hook_name)),
        lambda outcome, hook_name, impls, kwargs: seen.append(("after", hook_name)),
    )
    workers: list[Worker] = []
    try:
        assert sorted(system.hook.ping()) == [("x", True), ("y", True)]
        assert ("before", "ping") in seen and ("after", "ping") in seen
        # Statistics keep counting under the monitoring.
        assert system.metrics.get_stats("x").hooks["ping"].count == 1

        # A call in flight in x delays x's helix_stop until it finishes.
        caller = _go(system.hook.block, "x-caller")
        workers.append(caller)
        assert bus.entered.wait(PROMPT)
        stopping = _go(lambda: system.lifecycle.stop("x"), "stop-x")
        workers.append(stopping)
        wait_for(
            lambda: pm.get_plugin("x") is None or not stopping.is_alive(),
            "x to leave the live manager",
            PROMPT,
        )
        time.sleep(0.2)
        assert stopping.error is None, f"stop('x') under call monitoring raised: {stopping.error}"
        assert ("stop", "x") not in bus.log, "helix_stop ran while x's call was in flight"
        bus.gate.set()
        assert caller.finished_within(PROMPT) and caller.error is None, caller.error
        assert stopping.finished_within(PROMPT) and stopping.error is None, stopping.error
        assert bus.log.index(("block-done", "x")) < bus.log.index(("stop", "x"))
        assert _state(system, "x") is hh.PluginState.STOPPED
        assert pm.get_plugin("x") is None
        assert ("before", "block") in seen and ("after", "block") in seen

        system.restart("y")
        assert _state(system, "y") is hh.PluginState.STARTED
        assert bus.log.count(("start", "y")) == 2 and ("stop", "y") in bus.log
        assert system.hook.ping() == [("y", True)]
    finally:
        undo()
        _close(system, bus, *workers)


def test_stop_and_restart_work_with_pluggys_tracing(tmp_path: Path, bus: Bus) -> None:
    write_plugin(tmp_path, "x", PROBE)
    write_plugin(tmp_path, "y", PROBE)
    system = _system(tmp_path, bus, ["x", "y"])
    system.load_all()
    system.start_all()
    pm = system.registry.pm
    trace: list[str] = []
    pm.trace.root.setwriter(trace.append)
    undo = pm.enable_tracing()
    try:
        assert sorted(system.hook.ping()) == [("x", True), ("y", True)]
        assert any("ping" in line for line in trace), trace
        try:
            system.restart("y")
        except hh.HelixError as exc:
            pytest.fail(f"restart('y') with pluggy tracing enabled raised: {exc}")
        assert _state(system, "y") is hh.PluginState.STARTED
        system.lifecycle.stop("x")
        assert _state(system, "x") is hh.PluginState.STOPPED
        assert ("stop", "x") in bus.log
        assert pm.get_plugin("x") is None
        assert system.hook.ping() == [("y", True)]
        assert system.metrics.get_stats("y").hooks["ping"].count == 2
    finally:
        undo()
        pm.trace.root.setwriter(None)
        _close(system, bus)


# -- 6. every call shape gives bare pluggy's answer, and is counted -------------------------


class ShapeSpec:
    @hookspec
    def one(self, a: int) -> object: ...

    @hookspec
    def two(self, a: int, b: int) -> object: ...

    @hookspec
    def three(self, a: int, b: int, c: int) -> object: ...

    @hookspec(firstresult=True)
    def first(self, a: int) -> object: ...

    @hookspec
    def old_wrapped(self, a: int) -> object: ...

    @hookspec
    def new_wrapped(self, a: int) -> object: ...

    @hookspec
    def raising(self, a: int) -> object: ...


SHAPES_HEAD = """
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.log = config["log"]
"""

SHAPES = {
    "p1": """
    @hh.hookimpl
    def one(self, a):
        self.log.append(("p1", "one"))
        return f"p1:{a}"

    @hh.hookimpl
    def two(self, a, b):
        self.log.append(("p1", "two"))
        return ("p1", a, b)

    @hh.hookimpl
    def three(self, a, b, c):
        self.log.append(("p1", "three"))
        return ("p1", a, b, c)

    @hh.hookimpl
    def first(self, a):
        self.log.append(("p1", "first"))
        return "p1"

    @hh.hookimpl
    def old_wrapped(self, a):
        self.log.append(("p1", "old_wrapped"))
        return ["p1", a]

    @hh.hookimpl
    def new_wrapped(self, a):
        self.log.append(("p1", "new_wrapped"))
        return "p1"

    @hh.hookimpl
    def raising(self, a):
        self.log.append(("p1", "raising"))
        return "p1"
""",
    "p2": """
    @hh.hookimpl(tryfirst=True)
    def one(self, a):
        self.log.append(("p2", "one"))
        return f"p2:{a}"

    @hh.hookimpl
    def two(self, b, a):
        self.log.append(("p2", "two"))
        return None

    @hh.hookimpl
    def three(self, c, a):
        self.log.append(("p2", "three"))
        return ("p2", c, a)

    @hh.hookimpl
    def first(self, a):
        self.log.append(("p2", "first"))
        return "p2" if a > 0 else None

    @hh.hookimpl(hookwrapper=True)
    def old_wrapped(self, a):
        outcome = yield
        outcome.force_result([*outcome.get_result(), ("old-wrapper", a)])

    @hh.hookimpl
    def new_wrapped(self, a):
        self.log.append(("p2", "new_wrapped"))
        return None

    @hh.hookimpl
    def raising(self, a):
        self.log.append(("p2", "raising"))
        raise ValueError(f"p2 cannot take {a}")
""",
    "p3": """
    @hh.hookimpl(trylast=True)
    def one(self, a):
        self.log.append(("p3", "one"))
        return f"p3:{a}"

    @hh.hookimpl
    def two(self, a, b):
        self.log.append(("p3", "two"))
        return ("p3", b, a)

    @hh.hookimpl
    def three(self):
        self.log.append(("p3", "three"))
        return "p3"

    @hh.hookimpl(tryfirst=True)
    def first(self, a):
        self.log.append(("p3", "first"))
        return None

    @hh.hookimpl
    def old_wrapped(self, a):
        self.log.append(("p3", "old_wrapped"))
        return "p3"

    @hh.hookimpl(wrapper=True)
    def new_wrapped(self, a):
        result = yield
        return [*result, ("new-wrapper", a)]

    @hh.hookimpl
    def raising(self, a):
        self.log.append(("p3", "raising"))
        return "p3"
""",
}

SHAPE_CALLS: list[tuple[str, dict[str, int]]] = [
    ("one", {"a": 1}),
    ("two", {"a": 1, "b": 2}),
    ("three", {"a": 1, "b": 2, "c": 3}),
    ("first", {"a": 1}),
    ("first", {"a": -1}),
    ("old_wrapped", {"a": 4}),
    ("new_wrapped", {"a": 5}),
    ("raising", {"a": 6}),
]


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return ("value", call())
    except Exception as exc:
        return ("raised", (type(exc), str(exc)))


def test_every_call_shape_answers_as_bare_pluggy_and_is_counted(tmp_path: Path) -> None:
    log: list[tuple[str, str]] = []
    # A chain of dependencies fixes the start order, hence pluggy's registration order.
    write_plugin(tmp_path, "p1", SHAPES_HEAD + SHAPES["p1"])
    write_plugin(tmp_path, "p2", SHAPES_HEAD + SHAPES["p2"], dependencies=["p1"])
    write_plugin(tmp_path, "p3", SHAPES_HEAD + SHAPES["p3"], dependencies=["p2"])
    system = hh.PluginSystem(
        hh.Config(
            plugin_dirs=[tmp_path],
            entry_point_group=None,
            plugin_config={name: {"log": log} for name in SHAPES},
        ),
        specs=[ShapeSpec],
    )
    system.load_all()
    assert system.start_all() == ["p1", "p2", "p3"]
    bare = pluggy.PluginManager("helixhooks")
    bare.add_hookspecs(ShapeSpec)
    for name in ("p1", "p2", "p3"):
        bare.register(system.get(name).plugin, name=name)
    rounds = 3
    try:
        for hook_name, kwargs in SHAPE_CALLS:
            expected = _outcome(lambda h=hook_name, k=kwargs: getattr(bare.hook, h)(**k))
            actual = _outcome(lambda h=hook_name, k=kwargs: getattr(system.hook, h)(**k))
            assert actual == expected, (hook_name, kwargs)
        # Sanity: the shapes are the ones meant.
        assert _outcome(lambda: bare.hook.one(a=1)) == ("value", ["p2:1", "p1:1", "p3:1"])
        assert _outcome(lambda: bare.hook.new_wrapped(a=5)) == (
            "value",
            ["p1", ("new-wrapper", 5)],
        )
        assert _outcome(lambda: bare.hook.raising(a=6))[0] == "raised"

        log.clear()
        for _ in range(rounds):
            for hook_name, kwargs in SHAPE_CALLS:
                _outcome(lambda h=hook_name, k=kwargs: getattr(system.hook, h)(**k))
        counted = {}
        for name in SHAPES:
            for hook_name, stats in system.metrics.get_stats(name).hooks.items():
                if hook_name in dict(SHAPE_CALLS):
                    counted[(name, hook_name)] = stats.count
        ran: dict[tuple[str, str], int] = {}
        for entry in log:
            ran[entry] = ran.get(entry, 0) + 1
        # One comparison call per hook came before the counted rounds.
        before = {key: count // rounds for key, count in ran.items()}
        assert counted == {key: count + before[key] for key, count in ran.items()}
        assert system.metrics.get_stats("p2").hooks["raising"].errors == rounds + 1
    finally:
        system.close()


COUNTED = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def ping(self):
        return "{tag}"
"""


def _buffered(system: hh.PluginSystem, name: str, hook: str) -> int:
    """Raw timing samples of ``name``'s ``hook`` not folded into its figures yet."""
    return len(system.metrics.slot(name, hook).samples)


def test_timing_samples_are_folded_however_often_the_hook_is_replanned(tmp_path: Path) -> None:
    from helixhooks._dispatch import FOLD_EVERY

    write_plugin(tmp_path, "steady", COUNTED.format(tag="s"))
    write_plugin(tmp_path, "restless", COUNTED.format(tag="r"))
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None), specs=[DispatchSpec]
    )
    with system:
        # Every restart replans the hook, more often than once per FOLD_EVERY calls.
        for _ in range(12):
            for _ in range(FOLD_EVERY // 4):
                system.hook.ping()
            system.restart("restless")
        assert _buffered(system, "steady", "ping") <= FOLD_EVERY
        # Calls through a handle are folded too, without any broadcast call.
        handle = system.get("steady")
        for _ in range(3 * FOLD_EVERY):
            handle.call("ping")
        assert _buffered(system, "steady", "ping") <= FOLD_EVERY
        assert system.metrics.get_stats("steady").hooks["ping"].count == 6 * FOLD_EVERY
    system.close()


class _Pair:
    @hh.hookimpl
    def helix_init(self, config: object, ctx: object) -> None: ...

    @hh.hookimpl(specname="work")
    def _work_impl(self, value: int) -> int:
        return value


def test_a_generation_keeps_each_impls_hook_and_the_first_term_takes_them() -> None:
    from helixhooks._dispatch import Dispatch, Generation

    pm = pluggy.PluginManager("helixhooks")
    plugin = _Pair()
    pm.register(plugin)
    # Plain pluggy impls, the hook named by the caller (an impl does not know it).
    pairs = [
        (name, impl)
        for name in ("helix_init", "work")
        for impl in getattr(pm.hook, name).get_hookimpls()
    ]
    gen = Generation("pair", pairs)
    assert [(hook, impl.function) for hook, impl in gen.impls] == [
        (hook, impl.function) for hook, impl in pairs
    ]
    assert gen.hooks() == ["helix_init", "work"]
    assert gen.implements("work") and not gen.implements("_work_impl")
    dispatch = Dispatch(pluggy.PluginManager("helixhooks"))
    first = dispatch.activate(gen)
    assert first == list(gen.impls)  # the impls made at load serve the first term
    dispatch.retire(gen)
    second = dispatch.activate(gen)  # an ended term's impls stay dead: fresh copies
    assert [hook for hook, _ in second] == ["helix_init", "work"]
    assert all(new is not old for (_, new), (_, old) in zip(second, first, strict=True))


def test_a_call_meeting_a_retirement_half_done_waits_for_it(tmp_path: Path) -> None:
    # Found by tests/stress: a retirement marks each of its plans dead, then drops it from the
    # dispatch's cache. A call that met the cached plan dead in between took it from the cache
    # again, and again, for as long as the retiring thread waited for the GIL (at a short switch
    # interval, long enough), until RecursionError reached the host's hook call. Held still
    # here, through the dispatch's internals: the retirement's lock taken and the plan marked
    # dead, as by a thread that lost the GIL at that point; the call must wait for the rest.
    write_plugin(tmp_path, "one", COUNTED.format(tag="1"))
    write_plugin(tmp_path, "two", COUNTED.format(tag="2"))
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[tmp_path], entry_point_group=None), specs=[DispatchSpec]
    )
    with system:
        assert sorted(system.hook.ping()) == ["1", "2"]
        dispatch = system.registry.dispatch
        plan = dispatch._plans["ping"]
        marked, finish = threading.Event(), threading.Event()

        def retiring() -> None:
            with dispatch._lock:
                plan.dead = True
                marked.set()
                finish.wait(GATE_LIMIT)
                del dispatch._plans["ping"]
                dispatch._recent.pop(plan.key, None)

        retirement = threading.Thread(target=retiring)
        retirement.start()
        marked.wait(PROMPT)
        timer = threading.Timer(0.2, finish.set)
        timer.start()
        try:
            assert sorted(system.hook.ping()) == ["1", "2"]
        finally:
            finish.set()
            timer.join(PROMPT)
            retirement.join(PROMPT)
        assert not retirement.is_alive()
    system.close()
