"""The process tier: plugins in a real worker process, the wire between, and every way one fails."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import helixhooks as hh
from helixhooks.isolation import proxy, worker_process

from ._plugins import systems, wait_for, write_plugin

# An exception in a worker's monitor or output thread is a bug the test must not pass over.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class Spec:
    @hh.hookspec
    def echo(self, value: object) -> object:
        """Return something derived from value."""

    @hh.hookspec
    def pair(self, left: object, right: object) -> object:
        """Two arguments; an impl may take either."""

    @hh.hookspec(firstresult=True)
    def act(self, what: str) -> object:
        """Do ``what`` in the plugin: the tests' way to make a worker misbehave."""


PROCESS = 'isolation = "process"\n'

# A plugin whose act(what) runs ``what`` as Python in the worker and returns ``result``.
ACTOR = """
import os, sys, signal, time, json
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.config = dict(config)
        self.ctx = ctx

    @hh.hookimpl
    def echo(self, value):
        return {"value": value, "pid": os.getpid(), "cwd": os.getcwd()}

    @hh.hookimpl
    def pair(self, right):
        return right

    @hh.hookimpl
    def act(self, what):
        scope = {"os": os, "sys": sys, "signal": signal, "time": time, "self": self}
        exec(what, scope)
        return scope.get("result")
"""


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., hh.PluginSystem]]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    with systems(plugins, [Spec], data_dir=tmp_path / "data") as factory:

        def started(code: str = ACTOR, extra: str = "", **config: object) -> hh.PluginSystem:
            write_plugin(plugins, "boxed", code, extra=PROCESS + extra)
            system = factory(**config)
            system.load_all()
            system.start_all()
            assert system.get("boxed").state is hh.PluginState.STARTED, system.problems
            return system

        yield started


def _worker(system: hh.PluginSystem) -> worker_process.WorkerProcess:
    record = system.registry.get("boxed")
    assert record is not None and record.loaded is not None
    plugin = record.loaded.plugin
    assert isinstance(plugin, proxy.ProcessPlugin) and plugin.worker is not None
    return plugin.worker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (the monitor thread reaps it).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # reaped between the two looks
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_process_plugin_serves_from_its_own_process(make: Callable[..., hh.PluginSystem]) -> None:
    system = make(plugin_config={"boxed": {"greeting": "hi"}})
    (answer,) = system.hook.echo(value=[1, "two", {"three": 3.0}])
    assert answer["value"] == [1, "two", {"three": 3.0}]
    assert answer["pid"] not in (os.getpid(), None)
    assert Path(answer["cwd"]) == (Path(system.config.data_dir or "") / "boxed").resolve()
    # pluggy's argument pruning: the impl takes only ``right``.
    assert system.hook.pair(left="l", right="r") == ["r"]
    assert system.hook.act(what="result = (self.config, self.ctx.name, sys.flags.isolated)") == [
        {"greeting": "hi"},
        "boxed",
        1,
    ]  # a tuple crosses as a list
    assert system.get("boxed").stats().hooks["echo"].count == 1


def test_the_plugin_s_exception_crosses_as_data(make: Callable[..., hh.PluginSystem]) -> None:
    system = make()
    with pytest.raises(KeyError) as raised:
        system.hook.act(what="raise KeyError('missing')")
    error = raised.value
    assert isinstance(error, hh.RemoteError) and error.plugin == "boxed"
    assert error.error_type == "KeyError" and "missing" in str(error)
    assert "exec(what, scope)" in error.remote_traceback
    with pytest.raises(hh.RemoteError, match="raised CustomError: custom"):
        system.hook.act(what="class CustomError(Exception): pass\nraise CustomError('custom')")
    # The worker lives on after its plugin raised.
    assert system.hook.act(what="result = 7") == 7


def test_what_json_cannot_carry_is_an_error_naming_hook_and_argument(
    make: Callable[..., hh.PluginSystem],
) -> None:
    system = make()
    with pytest.raises(hh.UnsendableValue, match=r"hook 'echo': argument 'value' \(set\)"):
        system.hook.echo(value={1, 2})
    with pytest.raises(TypeError, match="hook 'act' returned a value JSON cannot carry"):
        system.hook.act(what="result = object()")
    with pytest.raises(hh.UnsendableValue, match="argument 'value'"):
        system.hook.echo(value=float("nan"))
    assert system.hook.act(what="result = 'fine'") == "fine"


def test_the_environment_holds_only_what_the_plugin_may_read(
    make: Callable[..., hh.PluginSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_SECRET", "s3cret")
    monkeypatch.setenv("SHARED", "ok")
    system = make(extra='permissions = ["env=SHARED"]\n')
    env = system.hook.act(what="result = dict(os.environ)")
    # LC_CTYPE: the interpreter's own locale coercion (PEP 538) in a C-locale environment.
    assert env.get("SHARED") == "ok" and set(env) <= {"SHARED", "LC_CTYPE", "TMPDIR"}


def test_the_worker_main_imports_only_the_standard_library() -> None:
    third_party = {"helixhooks", "pluggy", "attrs", "attr", "packaging", "watchdog"}
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('w', {worker_process.WORKER!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & " + repr(third_party) + "))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_host_never_unpickles() -> None:
    """No module of the process tier imports pickle, marshal or shelve, or calls eval on data."""
    banned = {"pickle", "marshal", "shelve", "cPickle", "dill", "cloudpickle"}
    for path in Path(proxy.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned, path
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in banned, path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "eval", path


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("os._exit(3)", "exited with status 3"),
        ("import ctypes; ctypes.string_at(0)", "killed by SIGSEGV"),
        ("os.abort()", "killed by SIGABRT"),
    ],
    ids=["exit", "segv", "abort"],
)
def test_a_crash_is_reported_and_the_worker_comes_back(
    make: Callable[..., hh.PluginSystem], code: str, why: str
) -> None:
    system = make(extra='permissions = ["ffi"]\n')
    events: list[hh.PluginEvent] = []
    system.subscribe(events.append)
    supervisor_backoff(system)
    first = _worker(system).pid
    with pytest.raises(hh.WorkerCrashed, match=why):
        system.hook.act(what=code)
    wait_for(lambda: any(e.kind == "worker_crashed" for e in events), "the crash event")
    crash = next(e for e in events if e.kind == "worker_crashed")
    assert crash.name == "boxed" and why in str(crash.error)
    wait_for(
        lambda: (
            system.get("boxed").state is hh.PluginState.STARTED and _worker(system).pid != first
        ),
        "the restart",
    )
    assert system.hook.act(what="result = os.getpid()") == _worker(system).pid
    assert not _alive(first)


def supervisor_backoff(system: hh.PluginSystem, backoff: float = 0.05) -> None:
    """Restarts after a short wait, so the tests do not sleep through the real backoff."""
    from helixhooks.isolation.supervisor import Supervisor

    Supervisor.backoff = backoff


@pytest.fixture(autouse=True)
def _restore_backoff() -> Iterator[None]:
    from helixhooks.isolation.supervisor import Supervisor

    saved = Supervisor.backoff
    yield
    Supervisor.backoff = saved


def test_a_crash_loop_ends_in_failed(make: Callable[..., hh.PluginSystem], tmp_path: Path) -> None:
    crash_on_start = ACTOR.replace(
        "self.ctx = ctx", "self.ctx = ctx\n        if os.path.exists('crash'): os._exit(9)"
    )
    system = make(code=crash_on_start)
    supervisor_backoff(system, 0.01)
    events: list[hh.PluginEvent] = []
    system.subscribe(events.append)
    (tmp_path / "data" / "boxed" / "crash").touch()
    with pytest.raises(hh.WorkerCrashed):
        system.hook.act(what="os._exit(9)")
    wait_for(
        lambda: "not restarted again" in str(system.get("boxed").error or ""), "the crash loop"
    )
    assert system.get("boxed").state is hh.PluginState.FAILED
    assert sum(e.kind == "worker_crashed" for e in events) == 5
    assert any(p.name == "boxed" and "crashed 5 times" in p.reason for p in system.problems)


def test_a_call_past_call_timeout_kills_the_whole_process_group(
    make: Callable[..., hh.PluginSystem],
) -> None:
    system = make(extra='permissions = ["run"]\n', call_timeout=1.0)
    supervisor_backoff(system)
    child = system.hook.act(
        what="import subprocess\nresult = subprocess.Popen(['sleep', '60']).pid"
    )
    worker = _worker(system).pid
    with pytest.raises(hh.PluginTimeout, match="call act did not finish within 1s"):
        system.hook.act(what="while True: pass")
    wait_for(lambda: not _alive(worker) and not _alive(child), "the worker and its child to die")


def test_init_past_load_timeout_kills_the_worker(
    make: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins, "boxed", ACTOR.replace("self.ctx = ctx", "time.sleep(600)"), extra=PROCESS
    )
    with systems(plugins, [Spec], load_timeout=1.0, data_dir=tmp_path / "data") as factory:
        system = factory()
        system.load_all()
        pid = _worker(system).pid
        system.start_all()
        assert system.get("boxed").state is hh.PluginState.FAILED
        assert isinstance(system.get("boxed").error, hh.PluginTimeout)
        wait_for(lambda: not _alive(pid), "the hung worker to be killed")


def test_a_worker_that_never_answers_the_handshake(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "boxed", "import time\ntime.sleep(600)\n" + ACTOR, extra=PROCESS)
    with systems(plugins, [Spec], load_timeout=1.0, data_dir=tmp_path / "data") as factory:
        system = factory()
        system.load_all()
        error = system.get("boxed").error
        assert isinstance(error, hh.PluginTimeout) and "worker start" in str(error)
    assert not _worker_processes()


def _worker_processes() -> list[int]:
    """Live worker processes that are children of this one."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"worker.py" in cmdline:
                found.append(int(entry))
    return found


def test_calls_in_flight_fail_promptly_when_the_worker_dies(
    make: Callable[..., hh.PluginSystem],
) -> None:
    system = make()
    supervisor_backoff(system, 30)
    errors: list[BaseException] = []
    entered = threading.Barrier(5)

    def call() -> None:
        entered.wait(timeout=10)
        try:
            system.hook.act(what="time.sleep(60)")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    entered.wait(timeout=10)
    time.sleep(0.2)
    os.kill(_worker(system).pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=10)  # their calls sleep 60 s: only the crash can end them this soon
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 4
    assert all(isinstance(e, hh.WorkerCrashed) and "SIGKILL" in str(e) for e in errors), errors


def test_stop_ends_the_worker_and_start_brings_a_new_one(
    make: Callable[..., hh.PluginSystem],
) -> None:
    system = make(plugin_config={"boxed": {"n": 1}})
    first = _worker(system).pid
    system.lifecycle.stop("boxed")
    wait_for(lambda: not _alive(first), "the stopped worker to exit")
    system.lifecycle.start("boxed")
    # helix_init was replayed in the new worker: its config is there.
    assert system.hook.act(what="result = self.config") == {"n": 1}
    assert _worker(system).pid != first
    system.close()
    assert not _worker_processes()


def test_reload_starts_a_new_worker_and_hands_state_over_as_json(
    make: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    stateful = (
        ACTOR
        + """
    @hh.hookimpl
    def helix_save_state(self, ctx):
        return {"seen": getattr(self, "seen", 0), "version": 1}

    @hh.hookimpl
    def helix_restore_state(self, state, ctx):
        self.seen = state["seen"]
        self.restored = state
"""
    )
    system = make(code=stateful)
    system.hook.act(what="self.seen = 41")
    old = _worker(system).pid
    plugin_py = tmp_path / "plugins" / "boxed" / "plugin.py"
    plugin_py.write_text(plugin_py.read_text().replace('"version": 1', '"version": 2'))
    system.reload("boxed")
    assert _worker(system).pid != old
    assert system.hook.act(what="result = self.restored") == {"seen": 41, "version": 1}
    wait_for(lambda: not _alive(old), "the old worker to be retired")


def test_a_flood_of_output_does_not_stop_the_host(
    make: Callable[..., hh.PluginSystem], caplog: pytest.LogCaptureFixture
) -> None:
    system = make()
    system.hook.act(
        what="chunk = b'x' * 1023 + b'\\n'\nfor _ in range(1 << 20): os.write(1, chunk)\nresult = 1"
    )
    assert system.hook.act(what="result = 2") == 2
    wait_for(lambda: "the rest are dropped" in caplog.text, "the dropped-lines notice")


def test_a_run_scope_holds_the_worker_to_its_programs(make: Callable[..., hh.PluginSystem]) -> None:
    system = make(extra='permissions = ["run=true"]\n')
    assert (
        system.hook.act(what="import subprocess\nresult = subprocess.run(['true']).returncode") == 0
    )
    with pytest.raises(PermissionError, match="run=false"):
        system.hook.act(what="import subprocess\nsubprocess.run(['false'])")
    with pytest.raises(PermissionError, match="run=sh"):
        system.hook.act(what="os.system('true')")


@pytest.mark.skipif(os.getuid() != 0, reason="only uid 0 lacks a process limit the kernel applies")
def test_strict_refuses_a_plugin_whose_needed_layer_is_missing(
    make: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    # With run granted, fork is allowed, so only RLIMIT_NPROC would bound the worker's processes:
    # the kernel does not apply it to uid 0.
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "boxed", ACTOR, extra=PROCESS + 'permissions = ["run"]\n')
    with systems(plugins, [Spec], strict=True, data_dir=tmp_path / "data") as factory:
        system = factory()
        system.load_all()
        assert system.get("boxed").state is hh.PluginState.FAILED
        assert "processes" in str(system.get("boxed").error)
        relaxed = factory(strict=False)
        relaxed.load_all()
        relaxed.start_all()
        assert relaxed.get("boxed").state is hh.PluginState.STARTED
        assert (relaxed.get("boxed").layers or {})["processes"].startswith("unavailable")


def test_the_cpu_limit_ends_a_spinning_worker(make: Callable[..., hh.PluginSystem]) -> None:
    system = make(limits={"cpu_seconds": 1})
    supervisor_backoff(system, 30)
    with pytest.raises(hh.ResourceExceeded, match=r"limits\.cpu_seconds"):
        system.hook.act(what="while True: pass")


def test_a_new_worker_that_is_not_healthy_is_not_swapped_in(
    make: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    checked = (
        ACTOR
        + """
    @hh.hookimpl
    def helix_health_check(self):
        return "VERSION" == "1"
"""
    )
    system = make(code=checked.replace("VERSION", "1"))
    old = _worker(system).pid
    (tmp_path / "plugins" / "boxed" / "plugin.py").write_text(checked.replace("VERSION", "2"))
    with pytest.raises(hh.ReloadError, match="worker is not healthy"):
        system.reload("boxed")
    assert _worker(system).pid == old
    assert system.hook.act(what="result = os.getpid()") == old
    wait_for(lambda: len(_worker_processes()) == 1, "the unhealthy new worker to be gone")


def test_a_saved_file_reloads_a_process_plugin_in_a_new_worker(
    make: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    system = make(debounce=0.05)
    old = _worker(system).pid
    system.watch()
    plugin_py = tmp_path / "plugins" / "boxed" / "plugin.py"
    plugin_py.write_text(plugin_py.read_text().replace('"value": value', '"value": ["new", value]'))
    wait_for(lambda: system.hook.echo(value=1)[0]["value"] == ["new", 1], "the new code to serve")
    assert _worker(system).pid != old
    wait_for(lambda: not _alive(old), "the old worker to be retired")


def test_the_worker_dies_with_its_host(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG follows the thread that forked: workers are forked from one that lasts."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "boxed", "class Plugin:\n    pass\n", extra=PROCESS)
    host = (
        "import os, sys, threading, helixhooks as hh\n"
        f"config = hh.Config(plugin_dirs=[{str(plugins)!r}], entry_point_group=None, "
        f"data_dir={str(tmp_path / 'data')!r})\n"
        "system = hh.PluginSystem(config)\n"
        # Loaded from a thread that then ends, as a lifecycle operation's thread may.
        "t = threading.Thread(target=system.load_all); t.start(); t.join()\n"
        "system.start_all()\n"
        "print(system.registry.get('boxed').loaded.plugin.worker.pid, flush=True)\n"
        "threading.Event().wait()\n"
    )
    # The helixhooks under test, wherever this run imports it from.
    env = {**os.environ, "PYTHONPATH": str(Path(hh.__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-c", host],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert line.strip().isdigit(), process.stderr.read()
        pid = int(line)
        time.sleep(0.3)
        assert _alive(pid), "the worker must outlive the thread that loaded it"
    finally:
        process.kill()
        process.wait(timeout=10)
    wait_for(lambda: not _alive(pid), "the worker to die with its host", timeout=10)


@pytest.mark.usefixtures("fast_switching")
def test_many_threads_call_while_the_plugin_reloads(
    make: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    versioned = ACTOR.replace('"value": value', '"value": value, "generation": GENERATION')
    plugin_py = tmp_path / "plugins" / "boxed" / "plugin.py"
    system = make(code=versioned.replace("GENERATION", "0"))
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(4)]

    def caller(mine: list[int]) -> None:
        while not stop.is_set():
            try:
                (answer,) = system.hook.echo(value="x")
            except BaseException as exc:
                errors.append(exc)
                return
            mine.append(answer["generation"])

    threads = [threading.Thread(target=caller, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    try:
        for generation in range(1, 9):
            plugin_py.write_text(versioned.replace("GENERATION", str(generation)))
            system.reload("boxed")
            wait_for(lambda g=generation: all(m and m[-1] >= g for m in seen), "calls to go on")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors[:3]
    assert not any(thread.is_alive() for thread in threads)
    for mine in seen:
        # Each thread saw the generations in order: never an older one after a newer one.
        assert mine == sorted(mine) and mine[-1] == 8
    wait_for(lambda: len(_worker_processes()) == 1, "every retired worker to be gone")
