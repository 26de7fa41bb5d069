"""A Hypothesis state machine over the lifecycle of five directory plugins, called all the time.

The dependency graph is fixed (b -> a, c -> b, d -> a, e alone). Rules are the public lifecycle
operations, and reloads of a plugin's rewritten files (good or broken); two background threads
keep calling ``system.hook.ping()`` and ``system.get(name).call("ping")`` throughout. After
every step:

- every STARTED plugin's dependencies are all STARTED;
- the live manager holds the hookimpls of exactly the STARTED plugins;
- no background call raised anything but a documented HelixError;
- every ping answer came from a plugin that was started while it answered (each plugin keeps a
  ``started`` flag: True at the end of helix_start, False at the start of helix_stop, and its
  ping reports the flag on entry and on exit).

The first two are checked after every step. The background calls' findings are tagged with the
step during which they were seen and asserted in teardown: when they fail depends on thread
timing, and failing at a varying step would make Hypothesis report an inconsistent data
generation instead of the finding (a replay that does not hit the race is reported as Flaky,
with the finding attached).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import helixhooks as hh
from helixhooks import hookspec

from ._plugins import write_plugin

GRAPH: dict[str, list[str]] = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": []}
NAMES = sorted(GRAPH)

PING_PLUGIN = """
import time

import helixhooks as hh


class Plugin:
    started = False

    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.name = ctx.name

    @hh.hookimpl
    def helix_start(self, ctx):
        self.started = True

    @hh.hookimpl
    def helix_stop(self, ctx):
        self.started = False

    @hh.hookimpl
    def ping(self):
        on_entry = self.started
        time.sleep(0.0001)
        return (self.name, on_entry, self.started)
"""


class PingSpec:
    @hookspec
    def ping(self) -> object:
        """(plugin name, started on entry, started on exit)."""


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="helix-stateful-"))
        for name, dependencies in GRAPH.items():
            write_plugin(self.root, name, PING_PLUGIN, dependencies=dependencies)
        self.system = hh.PluginSystem(
            hh.Config(plugin_dirs=[self.root], entry_point_group=None, load_timeout=2.0),
            specs=[PingSpec],
        )
        self.violations: list[str] = []
        self.answers = 0
        self.steps: list[str] = ["load_all (setup)"]
        self.system.load_all()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._broadcast, name="ping-broadcast", daemon=True),
            threading.Thread(target=self._one_by_one, name="ping-handles", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- background callers ---------------------------------------------------------------

    def _violation(self, what: str) -> None:
        self.violations.append(f"during step {len(self.steps)} ({self.steps[-1]}): {what}")

    def _check(self, how: str, answer: object) -> None:
        self.answers += 1
        if not (isinstance(answer, tuple) and len(answer) == 3):
            self._violation(f"{how} answered {answer!r}")
            return
        name, on_entry, on_exit = answer
        if not (on_entry and on_exit):
            self._violation(
                f"{how}: {name} answered while not started "
                f"(started on entry: {on_entry}, on exit: {on_exit})"
            )

    def _broadcast(self) -> None:
        while not self._stopping.is_set():
            try:
                answers = self.system.hook.ping()
            except hh.HelixError:
                pass
            except BaseException as exc:
                self._violation(f"system.hook.ping() raised {exc!r}")
            else:
                for answer in answers:
                    self._check("system.hook.ping()", answer)
            time.sleep(0.0002)

    def _one_by_one(self) -> None:
        turn = 0
        while not self._stopping.is_set():
            name = NAMES[turn % len(NAMES)]
            turn += 1
            try:
                answer = self.system.get(name).call("ping")
            except hh.HelixError:
                pass
            except BaseException as exc:
                self._violation(f"get({name!r}).call('ping') raised {exc!r}")
            else:
                self._check(f"get({name!r}).call('ping')", answer)
            time.sleep(0.0002)

    # -- rules ----------------------------------------------------------------------------

    @rule()
    def start_all(self) -> None:
        self.steps.append("start_all")
        self.system.start_all()

    @rule()
    def stop_all(self) -> None:
        self.steps.append("stop_all")
        self.system.stop_all()

    @rule()
    def load_all(self) -> None:
        self.steps.append("load_all")
        self.system.load_all()

    @rule(name=st.sampled_from(NAMES))
    def stop(self, name: str) -> None:
        self.steps.append(f"lifecycle.stop({name!r})")
        with contextlib.suppress(hh.HelixError):
            self.system.lifecycle.stop(name)

    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        self.steps.append(f"restart({name!r})")
        with contextlib.suppress(hh.HelixError):
            self.system.restart(name)

    @rule(name=st.sampled_from(NAMES))
    def fail(self, name: str) -> None:
        self.steps.append(f"lifecycle.fail({name!r})")
        with contextlib.suppress(hh.HelixError):
            self.system.lifecycle.fail(name, hh.HelixError("failed by the test", plugin=name))

    @rule(name=st.sampled_from(NAMES))
    def unload(self, name: str) -> None:
        self.steps.append(f"unload({name!r})")
        with contextlib.suppress(hh.HelixError):
            self.system.unload(name)

    @rule(name=st.sampled_from(NAMES), broken=st.booleans())
    def reload(self, name: str, broken: bool) -> None:
        self.steps.append(f"reload({name!r}, broken={broken})")
        code = "def broken(:\n" if broken else PING_PLUGIN
        write_plugin(self.root, name, code, dependencies=GRAPH[name])
        with contextlib.suppress(hh.HelixError):
            self.system.reload(name)

    # -- invariants -----------------------------------------------------------------------

    def _states(self) -> dict[str, hh.PluginState]:
        return {name: self.system.get(name).state for name in self.system.names()}

    @invariant()
    def started_plugins_have_started_dependencies(self) -> None:
        states = self._states()
        for name, state in states.items():
            if state is not hh.PluginState.STARTED:
                continue
            for dependency in GRAPH[name]:
                assert states.get(dependency) is hh.PluginState.STARTED, (
                    f"{name} is STARTED but its dependency {dependency} is "
                    f"{states.get(dependency, 'unloaded')}"
                )

    @invariant()
    def live_manager_holds_exactly_the_started_plugins(self) -> None:
        started = {n for n, s in self._states().items() if s is hh.PluginState.STARTED}
        pm = self.system.registry.pm
        registered = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
        assert registered == started, f"live manager: {sorted(registered)}, started: {started}"
        impls = {impl.plugin_name for impl in pm.hook.ping.get_hookimpls()}
        assert impls == started, f"ping impls of {sorted(impls)}, started: {sorted(started)}"

    def teardown(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)
        try:
            self.system.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        assert not any(t.is_alive() for t in self._threads), "a background caller hung"
        assert not self.violations, (
            f"background calls saw {len(self.violations)} violation(s) in steps "
            f"{self.steps}: {self.violations[:5]}"
        )


LifecycleMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleMachine = LifecycleMachine.TestCase
