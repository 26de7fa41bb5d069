"""The pytest plugin's fixtures, used as a plugin author would: in a pytest run of their own.

Each test writes a small project whose tests use the fixtures and runs pytest on it in a child
process (pytester), then reads the outcome: the author's passing tests pass, and the tests of
plugins that leak fail with a message naming what leaked.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The plugin under test is this checkout's, whatever helixhooks is installed.
PLUGIN_ARGS = ("-p", "no:helixhooks", "-p", "helixhooks.pytest_plugin", "-p", "no:cacheprovider")

HEADER = '''
import pathlib
import sys
import threading
import time

import pytest

import helixhooks as hh


class Spec:
    @hh.hookspec
    def shout(self, text): ...


SHOUTER = """
import helixhooks as hh

class Shouter:
    @hh.hookimpl
    def helix_init(self, config):
        self.suffix = config["suffix"]

    @hh.hookimpl
    def shout(self, text):
        return text.upper() + self.suffix
"""
'''


@pytest.fixture
def author(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A plugin author's project: helixhooks importable from this checkout, short leak waits."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeini("[pytest]\nhelix_leak_timeout = 0.5\n")
    return pytester


def test_an_authors_tests_use_plugin_dirs_objects_edits_and_reloads(
    author: pytest.Pytester,
) -> None:
    author.makepyfile(
        test_author=HEADER
        + '''

class Whisperer:
    @hh.hookimpl
    def shout(self, text):
        return text.lower()


def test_plugins_from_files_and_objects(helix_plugin_dir, helix_system):
    helix_plugin_dir.add("shouter", SHOUTER, config={"suffix": "!"})
    system = helix_system(helix_plugin_dir, Whisperer(), specs=[Spec])
    assert sorted(system.hook.shout(text="Hi")) == ["HI!", "hi"]
    assert system.get("Whisperer").state is hh.PluginState.STARTED
    assert system.problems == []


def test_dependencies_config_and_permissions_reach_the_plugin(
    helix_plugin_dir, helix_system, tmp_path
):
    helix_plugin_dir.add("base", "class Base:\\n    pass\\n", version="1.4.0")
    helix_plugin_dir.add(
        "writer",
        """
        import helixhooks as hh

        class Writer:
            @hh.hookimpl
            def helix_init(self, config):
                self.path = config["out"]

            @hh.hookimpl
            def shout(self, text):
                with open(self.path, "w") as out:
                    out.write(text)
                return "written"
        """,
        dependencies=["base ^1.2"],
        permissions=[f"write={tmp_path}"],
        config={"out": str(tmp_path / "out.txt"), "nested": {"a b": [1, 2.5, "x\\"y"]}},
    )
    system = helix_system(helix_plugin_dir, specs=[Spec])
    assert system.hook.shout(text="hey") == ["written"]
    assert (tmp_path / "out.txt").read_text() == "hey"
    assert system.get("writer").info.dependencies == ("base ^1.2",)


def test_edits_reload_at_once_even_within_one_second(helix_plugin_dir, helix_system):
    helix_plugin_dir.add("shouter", SHOUTER, config={"suffix": "!"})
    system = helix_system(helix_plugin_dir, specs=[Spec], hot_reload=True, debounce=0.02)
    for suffix in ("?", "?!", "!?"):  # three saves in well under a second
        helix_plugin_dir.edit("shouter", SHOUTER.replace("+ self.suffix", f"+ {suffix!r}"))
        deadline = time.monotonic() + 20
        while system.hook.shout(text="a") != ["A" + suffix]:
            assert time.monotonic() < deadline, system.hook.shout(text="a")
            time.sleep(0.01)


def test_a_removed_plugin_cannot_be_reloaded(helix_plugin_dir, helix_system):
    helix_plugin_dir.add("shouter", SHOUTER, config={"suffix": "!"})
    system = helix_system(helix_plugin_dir, specs=[Spec])
    helix_plugin_dir.remove("shouter")
    with pytest.raises(hh.ReloadError, match="its files are gone"):
        system.reload("shouter")


TICKER = """
import threading

import helixhooks as hh

class Ticker:
    ticks = 0

    @hh.hookimpl
    def helix_start(self):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.tick, name="ticker")
        self.thread.start()

    def tick(self):
        while not self.stopping.wait(0.001):
            self.ticks += 1

    @hh.hookimpl
    def helix_stop(self):
        self.stopping.set()
        self.thread.join()

    @hh.hookimpl
    def helix_save_state(self):
        return self.ticks

    @hh.hookimpl
    def helix_restore_state(self, state):
        self.ticks = state

    @hh.hookimpl
    def shout(self, text):
        return "VERSION"
"""


def test_a_plugin_that_cleans_up_survives_reloads(
    helix_plugin_dir, helix_system, helix_reload_check
):
    helix_plugin_dir.add("ticker", TICKER)
    system = helix_system(helix_plugin_dir, specs=[Spec])
    edit = lambda i: helix_plugin_dir.edit("ticker", TICKER.replace("VERSION", f"v{i}"))
    helix_reload_check(system, "ticker", times=8, edit=edit)
    assert system.hook.shout(text="") == ["v8"]
'''
    )
    result = author.runpytest_subprocess(*PLUGIN_ARGS, timeout=240)
    result.assert_outcomes(passed=5)


def test_a_process_plugin_leaves_nothing_behind(author: pytest.Pytester) -> None:
    # The first worker starts helixhooks' spawner thread, which lives as long as the process:
    # that is not the plugin's leak (it was reported as one).
    author.makepyfile(
        test_process=HEADER
        + """

def test_a_process_plugin(helix_plugin_dir, helix_system, helix_reload_check):
    helix_plugin_dir.add("shouter", SHOUTER, config={"suffix": "!"}, isolation="process")
    system = helix_system(helix_plugin_dir, specs=[Spec])
    assert system.hook.shout(text="hi") == ["HI!"]
    assert system.get("shouter").layers is not None
    helix_reload_check(system, "shouter", times=2)
"""
    )
    result = author.runpytest_subprocess(*PLUGIN_ARGS, timeout=240)
    result.assert_outcomes(passed=1)


LEAKS = '''

LEAKY = """
import threading
import time

import helixhooks as hh

class Leaky:
    @hh.hookimpl
    def helix_start(self):
        threading.Thread(target=self.poll, name="leaky-poller", daemon=True).start()

    def poll(self):
        while True:
            time.sleep(0.01)

    @hh.hookimpl
    def shout(self, text):
        return text
"""


def test_leaks_a_thread(helix_plugin_dir, helix_system):
    helix_plugin_dir.add("leaky", LEAKY)
    system = helix_system(helix_plugin_dir, specs=[Spec])
    assert system.hook.shout(text="x") == ["x"]


SPAWNER = """
import subprocess
import sys

import helixhooks as hh

class Spawner:
    @hh.hookimpl
    def helix_init(self, config):
        self.pid_file = config["pid_file"]

    @hh.hookimpl
    def helix_start(self):
        worker = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", "helix-leaked-worker"]
        )
        with open(self.pid_file, "w") as out:
            out.write(str(worker.pid))
"""


def test_leaks_a_worker_process(helix_plugin_dir, helix_system):
    pid_file = pathlib.Path.cwd() / "worker.pid"  # where the outer test finds it
    helix_plugin_dir.add(
        "spawner",
        SPAWNER,
        permissions=["run", f"write={pid_file.parent}"],
        config={"pid_file": str(pid_file)},
    )
    helix_system(helix_plugin_dir, specs=[Spec])


RESTARTER = """
import threading

import helixhooks as hh

class Restarter:
    @hh.hookimpl
    def helix_start(self):
        self.stopping = threading.Event()
        threading.Thread(
            target=self.stopping.wait, name="forgotten-by-stop", daemon=True
        ).start()

    @hh.hookimpl
    def shout(self, text):
        return text
"""


def test_reloads_leak_threads(helix_plugin_dir, helix_reload_check):
    helix_plugin_dir.add("restarter", RESTARTER)
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[helix_plugin_dir], entry_point_group=None), specs=[Spec]
    )
    with system:
        helix_reload_check(system, "restarter", times=3)


HOARDER = """
import sys
import types

import helixhooks as hh

class Hoarder:
    @hh.hookimpl
    def helix_start(self):
        name = f"hoard_{id(self)}"
        sys.modules[name] = types.ModuleType(name)
"""


def test_reloads_leak_modules(helix_plugin_dir, helix_reload_check):
    helix_plugin_dir.add("hoarder", HOARDER)
    system = hh.PluginSystem(
        hh.Config(plugin_dirs=[helix_plugin_dir], entry_point_group=None), specs=[Spec]
    )
    with system:
        helix_reload_check(system, "hoarder", times=2)
'''


def test_leaking_plugins_fail_the_authors_tests_naming_the_leak(author: pytest.Pytester) -> None:
    author.makepyfile(test_leaks=HEADER + LEAKS)
    pid_file = author.path / "worker.pid"
    try:
        result = author.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:randomly", timeout=240)
    finally:
        if pid_file.exists():  # the leaked worker outlives the author's run: end it
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    result.assert_outcomes(passed=2, failed=2, errors=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_thread*",
            "*1 thing(s) still running after the test's helixhooks systems were closed:",
            "*daemon thread 'leaky-poller' started with Leaky.poll() (*leaky*plugin.py:*), now "
            "at *",
        ]
    )
    assert "ERROR at teardown of test_leaks_a_worker_process" in out
    assert "helix-leaked-worker" in out
    assert f"child process {pid_file.read_text()}: " in out
    result.stdout.fnmatch_lines(
        [
            "*3 thing(s) left behind by 3 reloads of plugin 'restarter':",
            "*thread 'forgotten-by-stop' started with Event.wait() *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*2 thing(s) left behind by 2 reloads of plugin 'hoarder':",
            "*module 'hoard_*'",
        ]
    )
