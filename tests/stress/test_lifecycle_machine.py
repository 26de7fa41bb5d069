"""A Hypothesis state machine over the lifecycle of six directory plugins, called all the time.

The plugins depend on each other (with constraints: b needs a ^1, d needs a >=1,<3), and their
files are real and edited: rules load (all, or one plugin whose files just appeared), start,
stop, restart, fail, reload (after writing a new generation of the plugin's source: good, a
major version, or broken in one of six ways), unload, delete, and call hooks. From the first
rule to the last, 2-4 background threads call ``system.hook.ping`` and each plugin's own
``ping`` through its handle, with ``sys.setswitchinterval`` at 10 us so that threads switch
inside the operations.

After every rule:

- the live pluggy manager holds the hookimpls of exactly the STARTED plugins;
- a STARTED plugin's dependencies are all STARTED (so no dependent of a stopped or failed
  plugin is STARTED);
- no call, in the foreground or the background, raised anything but a plugin's own deliberate
  error (``ping(value="boom")`` raises ValueError). A handle call on a plugin that is not
  started is refused with a LifecycleError, as documented; refused while the plugin was
  STARTED and no operation ran is a violation. Every answer came from a generation that was
  started when it answered, and in the foreground from the generation the registry holds;
- each reload did what reload.py promises: refused, a STARTED plugin keeps serving its old
  generation; done, it serves the new one.

The background calls' findings are tagged with the step during which they were seen and
asserted in teardown: when they fail depends on thread timing, and failing at a varying step
would make Hypothesis report an inconsistent data generation instead of the finding (a replay
that does not hit the race is reported as Flaky, with the finding attached).
"""

from __future__ import annotations

import contextlib
import faulthandler
import itertools
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import helixhooks as hh
from helixhooks import hookspec

from .._plugins import write_plugin

GRAPH: dict[str, list[str]] = {
    "a": [],
    "b": ["a ^1"],
    "c": ["b"],
    "d": ["a >=1,<3"],
    "e": [],
    "f": ["c", "e"],
}
NAMES = sorted(GRAPH)
# Handle calls also ask for a plugin that never exists: refused, as documented.
CALLED = [*NAMES, "ghost"]

PLUGIN = """
import time

import helixhooks as hh

GEN = {gen}
{top}


class Plugin:
    started = False
    handed = 0  # how many reloads the state has come through

    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.name = ctx.name
        {init}

    @hh.hookimpl
    def helix_start(self, ctx):
        {start}
        self.started = True

    @hh.hookimpl
    def helix_stop(self, ctx):
        self.started = False

    @hh.hookimpl
    def helix_save_state(self, ctx):
        return self.handed + 1

    @hh.hookimpl
    def helix_restore_state(self, state, ctx):
        {restore}
        self.handed = state

    @hh.hookimpl
    def ping(self, value):
        on_entry = self.started
        if value == "boom":
            raise ValueError(f"deliberate: {{self.name}} g{{GEN}}")
        time.sleep(0.0001)
        return (self.name, GEN, on_entry, self.started)
"""
FAULT = 'raise RuntimeError("broken on purpose")'
# How a new generation of a plugin's source differs: its code, and its version.
VARIANTS: dict[str, dict[str, str]] = {
    "good": {},
    "major": {"version": "2.0.0"},
    "syntax": {"top": "def broken(:"},
    "import_error": {"top": FAULT},
    "init_fails": {"init": FAULT},
    "start_fails": {"start": FAULT},
    "restore_fails": {"restore": FAULT},
}


class PingSpec:
    @hookspec
    def ping(self, value: str) -> object:
        """(plugin name, generation, started on entry, started on exit)."""


def deliberate(error: BaseException) -> bool:
    """A plugin's own error: what ``ping(value="boom")`` raises."""
    return isinstance(error, ValueError) and str(error).startswith("deliberate: ")


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # A deadlock would hang the suite: after this long, every thread's stack is printed
        # and the process exits. Cancelled in teardown.
        faulthandler.dump_traceback_later(600, exit=True)
        self.root = Path(tempfile.mkdtemp(prefix="helix-stress-"))
        self.generations = itertools.count(1)
        self.on_disk: set[str] = set()
        for name in NAMES:
            self._write(name, "good")
        self.system = hh.PluginSystem(
            hh.Config(plugin_dirs=[self.root], entry_point_group=None, load_timeout=5.0),
            specs=[PingSpec],
        )
        self.violations: list[str] = []
        self.steps = ["(setup)"]
        # Odd while a rule's lifecycle operation runs: a background call that sees the same even
        # number before and after ran while nothing changed.
        self.operations = 0
        self.answers = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._switch_interval = sys.getswitchinterval()

    # -- files -----------------------------------------------------------------------------

    def _write(self, name: str, variant: str) -> int:
        gen = next(self.generations)
        parts = {"top": "", "init": "pass", "start": "pass", "restore": "pass"}
        parts.update(VARIANTS[variant])
        version = parts.pop("version", f"1.{gen}.0")
        write_plugin(
            self.root,
            name,
            PLUGIN.format(gen=gen, **parts),
            version=version,
            dependencies=GRAPH[name],
        )
        self.on_disk.add(name)
        return gen

    # -- background callers ----------------------------------------------------------------

    @initialize(threads=st.integers(2, 4))
    def begin(self, threads: int) -> None:
        self.steps.append(f"load_all, {threads} threads calling")
        self.system.load_all()
        sys.setswitchinterval(1e-5)
        callers: list[Callable[[int], None]] = [self._by_handle, *[self._broadcast] * (threads - 1)]
        for number, caller in enumerate(callers):
            thread = threading.Thread(
                target=caller,
                args=(number,),
                name=f"stress-{caller.__name__}-{number}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _violation(self, what: str) -> None:
        self.violations.append(f"during step {len(self.steps) - 1} ({self.steps[-1]}): {what}")

    def _check_answer(self, how: str, answer: object) -> None:
        self.answers += 1
        if not (isinstance(answer, tuple) and len(answer) == 4):
            self._violation(f"{how} answered {answer!r}")
            return
        name, gen, on_entry, on_exit = answer
        if not (on_entry and on_exit):
            self._violation(
                f"{how}: {name} g{gen} answered while not started "
                f"(started on entry: {on_entry}, on exit: {on_exit})"
            )

    def _broadcast(self, number: int) -> None:
        for turn in itertools.count():
            if self._stopping.is_set():
                return
            value = "boom" if turn % 7 == number else "x"
            try:
                answers = self.system.hook.ping(value=value)
            except BaseException as exc:
                if not deliberate(exc):
                    self._violation(f"system.hook.ping({value!r}) raised {exc!r}")
            else:
                for answer in answers:
                    self._check_answer(f"system.hook.ping({value!r})", answer)
            time.sleep(0.0002)

    def _by_handle(self, number: int) -> None:
        for turn in itertools.count():
            if self._stopping.is_set():
                return
            name = CALLED[turn % len(CALLED)]
            value = "boom" if turn % 5 == number else "x"
            before = self.operations
            was_started = self._state(name) is hh.PluginState.STARTED
            try:
                answer = self.system.get(name).call("ping", value=value)
            except hh.LifecycleError as exc:
                # The documented refusal of a plugin that is not started (or not there).
                if was_started and before == self.operations and before % 2 == 0:
                    self._violation(f"get({name!r}).call refused a started plugin: {exc}")
            except BaseException as exc:
                if not deliberate(exc):
                    self._violation(f"get({name!r}).call('ping', {value!r}) raised {exc!r}")
            else:
                self._check_answer(f"get({name!r}).call('ping')", answer)
            time.sleep(0.0002)

    # -- rules -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _operation(self, step: str) -> Any:
        """One lifecycle operation: recorded, and marked as running for the background callers."""
        self.steps.append(step)
        self.operations += 1
        try:
            yield
        finally:
            self.operations += 1

    @rule()
    def load_all(self) -> None:
        with self._operation("load_all"):
            self.system.load_all()

    @rule()
    def start_all(self) -> None:
        with self._operation("start_all"):
            self.system.start_all()

    @rule()
    def stop_all(self) -> None:
        with self._operation("stop_all"):
            self.system.stop_all()

    @rule(name=st.sampled_from(NAMES))
    def start(self, name: str) -> None:
        with self._operation(f"lifecycle.start({name!r})"), contextlib.suppress(hh.HelixError):
            self.system.lifecycle.start(name)

    @rule(name=st.sampled_from(NAMES))
    def stop(self, name: str) -> None:
        with self._operation(f"lifecycle.stop({name!r})"), contextlib.suppress(hh.HelixError):
            self.system.lifecycle.stop(name)

    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        with self._operation(f"restart({name!r})"), contextlib.suppress(hh.HelixError):
            self.system.restart(name)

    @rule(name=st.sampled_from(NAMES))
    def fail(self, name: str) -> None:
        with self._operation(f"lifecycle.fail({name!r})"), contextlib.suppress(hh.HelixError):
            self.system.lifecycle.fail(name, hh.HelixError("failed by the test", plugin=name))

    @rule(name=st.sampled_from(NAMES))
    def unload(self, name: str) -> None:
        with self._operation(f"unload({name!r})"), contextlib.suppress(hh.HelixError):
            self.system.unload(name)

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        """The plugin's files go away; it is unloaded (load_all would not find it again)."""
        with self._operation(f"delete({name!r})"):
            shutil.rmtree(self.root / name, ignore_errors=True)
            self.on_disk.discard(name)
            with contextlib.suppress(hh.HelixError):
                self.system.unload(name)

    @rule(name=st.sampled_from(NAMES))
    def add(self, name: str) -> None:
        """The plugin's files appear (again, if they were there), and just it is loaded."""
        with self._operation(f"add({name!r})"):
            if name not in self.on_disk:
                self._write(name, "good")
            # Raises the plugin's own failure, or LoadError if it is loaded already.
            with contextlib.suppress(hh.HelixError):
                self.system.load_plugin(self.root / name)

    @rule(name=st.sampled_from(NAMES), variant=st.sampled_from(sorted(VARIANTS)))
    def reload(self, name: str, variant: str) -> None:
        if name not in self.on_disk:
            return
        with self._operation(f"reload({name!r}, {variant})"):
            gen = self._write(name, variant)
            before = self._state(name)
            old = self._serving_generation(name)
            try:
                self.system.reload(name)
            except hh.ReloadError:
                done = False
            except hh.LifecycleError:
                assert before is None, f"reload of loaded {name!r} raised a LifecycleError"
                return
            else:
                done = True
        if before is hh.PluginState.STARTED:
            assert self._state(name) is hh.PluginState.STARTED, (
                f"{name} was serving, and after a reload that was "
                f"{'done' if done else 'refused'} it is {self._state(name)}"
            )
            serving = self._serving_generation(name)
            assert serving == (gen if done else old), (
                f"{name} serves g{serving} after a reload of g{gen} that was "
                f"{'done' if done else 'refused'} (g{old} served before)"
            )

    @rule(name=st.sampled_from(NAMES))
    def call(self, name: str) -> None:
        """Hook calls from the rules' own thread, between operations: exact answers."""
        self.steps.append(f"call({name!r})")
        started = self._started()
        answers = self.system.hook.ping(value="x")
        assert sorted(answer[0] for answer in answers) == sorted(started)
        for answer in answers:
            self._check_answer("system.hook.ping('x') in the foreground", answer)
            assert answer[1] == self._serving_generation(answer[0]), answer
        try:
            answer = self.system.get(name).call("ping", value="x")
        except hh.LifecycleError:
            assert name not in started, f"get({name!r}).call refused a started plugin"
        else:
            assert name in started, f"get({name!r}).call answered, not started: {answer}"
            assert answer[1] == self._serving_generation(name)
        if started:
            with pytest.raises(ValueError, match=r"^deliberate: "):
                self.system.hook.ping(value="boom")
        else:
            assert self.system.hook.ping(value="boom") == []

    # -- invariants ------------------------------------------------------------------------

    def _state(self, name: str) -> hh.PluginState | None:
        record = self.system.registry.get(name)
        return record.state if record is not None else None

    def _started(self) -> set[str]:
        return {n for n in self.system.names() if self._state(n) is hh.PluginState.STARTED}

    def _serving_generation(self, name: str) -> int | None:
        record = self.system.registry.get(name)
        if record is None or record.loaded is None:
            return None
        gen: int = record.loaded.module.GEN
        return gen

    @invariant()
    def started_plugins_have_started_dependencies(self) -> None:
        for name in self._started():
            record = self.system.registry.get(name)
            assert record is not None
            for dependency in record.info.parsed_dependencies:
                state = self._state(dependency.name)
                assert state is hh.PluginState.STARTED, (
                    f"{name} is STARTED but its dependency {dependency.name} is "
                    f"{state.value if state else 'not loaded'}"
                )

    @invariant()
    def live_manager_holds_exactly_the_started_plugins(self) -> None:
        started = self._started()
        pm = self.system.registry.pm
        registered = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
        assert registered == started, f"live manager: {sorted(registered)}, started: {started}"
        impls = {impl.plugin_name for impl in pm.hook.ping.get_hookimpls()}
        assert impls == started, f"ping impls of {sorted(impls)}, started: {sorted(started)}"

    def teardown(self) -> None:
        self._stopping.set()
        try:
            for thread in self._threads:
                thread.join(10)
            self.system.close()
        finally:
            sys.setswitchinterval(self._switch_interval)
            shutil.rmtree(self.root, ignore_errors=True)
            faulthandler.cancel_dump_traceback_later()
        assert not any(t.is_alive() for t in self._threads), "a background caller hung"
        assert not self.violations, (
            f"calls saw {len(self.violations)} violation(s) in steps {self.steps}: "
            f"{self.violations[:5]}"
        )


# Each example is a system on real files, with threads: slower than a plain property, so half
# the profile's examples (30 by default, 200 in CI), each up to 50 steps.
_profile = settings()  # the profile conftest loaded
LifecycleMachine.TestCase.settings = settings(
    max_examples=max(3, _profile.max_examples // 2),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleMachine = LifecycleMachine.TestCase
