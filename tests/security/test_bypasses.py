"""Known bypasses of the in-process guard: each a real attack that works today.

The guard is one PEP 578 audit hook that names the acting plugin from the stack (or the thread
it started, or Sandbox.execute's context). It is not a security boundary (DESIGN.md decision 9)
and these tests say where it ends: code that raises no audit event, events raised from Python
that Python code can silence, the guard's own state living in the plugin's interpreter, no
limit on memory or time, and plugin-scheduled work that runs with no plugin frame on a thread
the plugin did not start.

Each test asserts that the guard DID stop the attack (``assert_stopped``: a denial, and the
side effect absent; for memory and time, that a limit cut the call short), and is marked
``xfail(strict=True, raises=GuardMissed)``: it xfails only because the attack really worked (the
side effect is there), and any other failure (a broken attack, a typo) fails the run. Someone who
closes a hole sees the test XPASS, which fails the strict run until the test moves to
test_attacks.py. ``pytest --runxfail`` shows each one's evidence.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import importlib.util
import json
import shlex
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import helixhooks as hh
from tests.security._attack import (
    TIMEOUT,
    GuardMissed,
    Host,
    Listener,
    assert_stopped,
    uncaught,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX attacks")


def bypass(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=GuardMissed, reason=reason)


# -- code that raises no audit event --------------------------------------------------------------


@bypass(
    "ctypes raises events when a library is opened (ctypes.dlopen) or a symbol is looked up "
    "(ctypes.dlsym), not when a foreign function is called (ctypes.call_function is only "
    "_ctypes.call_function); CDLL caches a looked-up function as an attribute, so a function the "
    "host already used is called by the plugin with no event at all"
)
def test_a_function_the_host_already_looked_up_is_called_without_an_event(
    host: Host, tmp_path: Path
) -> None:
    libc = ctypes.CDLL(None)
    libc.system(b"true")  # the host uses it once: libc.system is now a plain attribute
    marker = tmp_path / "ran"
    host.plugin(
        "ffi-less",
        """
        def attack(arg):
            libc, command = arg
            return libc.system(command)
        """,
    )
    host.start()

    command = f"touch {shlex.quote(str(marker))}".encode()
    assert_stopped(
        host,
        "ffi-less",
        lambda: host.attack("ffi-less", (libc, command)),
        marker.exists,
        "libc.system ran a shell command for a plugin without ffi or run",
    )


@bypass(
    "ctypes.memmove and ctypes.memset are foreign functions bound when ctypes was imported: "
    "importing ctypes and calling them raises no audit event, so a plugin without ffi writes "
    "any memory of the process (here: the bytes of an immutable object of the host's)"
)
def test_ctypes_helpers_write_memory_without_an_event(host: Host) -> None:
    precious = bytes(bytearray(b"host secret"))  # a fresh object, not a shared constant
    host.plugin(
        "ffi-less",
        """
        import ctypes, sys

        def attack(target):
            # A bytes object's data starts one byte before the end of an empty one.
            ctypes.memmove(id(target) + sys.getsizeof(b"") - 1, b"PWNED", 5)
        """,
    )
    host.start()

    assert_stopped(
        host,
        "ffi-less",
        lambda: host.attack("ffi-less", precious),
        lambda: precious.startswith(b"PWNED"),
        "an immutable bytes object of the host's was rewritten in memory",
    )


FORK_EXEC = """
import os, shutil, _posixsubprocess

def attack(marker):
    program = os.fsencode(shutil.which("touch"))
    errpipe_read, errpipe_write = os.pipe()
    head = ([b"touch", os.fsencode(marker)], [program], True, (errpipe_write,), None, None,
            -1, -1, -1, -1, -1, -1, errpipe_read, errpipe_write, True, False)
    tail = (None, None, None, -1, None)  # gid, extra_groups, uid, umask, preexec_fn
    # 3.11+ takes process_group after start_new_session, and later allow_vfork at the end.
    shapes = [head + (-1,) + tail + (False,), head + (-1,) + tail, head + tail]
    try:
        for shape in shapes:
            try:
                pid = _posixsubprocess.fork_exec(*shape)
                break
            except TypeError:  # the wrong number of arguments for this Python
                continue
        else:
            raise RuntimeError("no fork_exec signature fits this Python")
    finally:
        os.close(errpipe_write)
    try:
        failure = os.read(errpipe_read, 256)
    finally:
        os.close(errpipe_read)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if failure or status:
        raise RuntimeError(f"the child failed: {failure!r}, status {status}")
"""


@bypass(
    "the subprocess.Popen event is raised by subprocess.py, in Python, before it calls "
    "_posixsubprocess.fork_exec; the C function itself raises no event, so calling it directly "
    "runs a program without run"
)
def test_fork_exec_runs_a_program_without_an_event(host: Host, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    host.plugin("runless", FORK_EXEC)
    host.start()

    assert_stopped(
        host,
        "runless",
        lambda: host.attack("runless", str(marker)),
        marker.exists,
        "a child process ran touch for a plugin without run",
    )


@pytest.mark.parametrize("call", ["os.mkfifo", "os.mknod"])
@bypass("os.mkfifo and os.mknod raise no audit event: they create entries outside the write scope")
def test_creating_a_special_file_raises_no_event(host: Host, tmp_path: Path, call: str) -> None:
    scope = tmp_path / "scope"
    scope.mkdir()
    planted = tmp_path / "planted"
    host.plugin(
        "writer",
        """
        import os

        def attack(arg):
            call, path = arg
            getattr(os, call.partition(".")[2])(path)
        """,
        f"write={scope}",
    )
    host.start()

    assert_stopped(
        host,
        "writer",
        lambda: host.attack("writer", (call, str(planted))),
        planted.exists,
        f"{call} created a file outside the write scope",
    )


@bypass(
    "the open event carries the path and the flags but not dir_fd, so the guard resolves a "
    "relative name against the working directory: with the working directory inside the write "
    "scope, os.open(name, O_CREAT, dir_fd=<a directory outside>) writes outside it"
)
def test_a_name_opened_relative_to_a_directory_fd(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope, outside = tmp_path / "scope", tmp_path / "outside"
    scope.mkdir()
    outside.mkdir()
    monkeypatch.chdir(scope)  # a host working in the directory it lets the plugin write
    host.plugin(
        "writer",
        """
        import os

        def attack(directory):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.close(os.open("planted", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
            finally:
                os.close(fd)
        """,
        f"write={scope}",
    )
    host.start()

    assert_stopped(
        host,
        "writer",
        lambda: host.attack("writer", str(outside)),
        (outside / "planted").exists,
        "a file was created outside the write scope",
    )


@bypass(
    "reading os.environ raises no audit event (it is a dict filled at startup), so env "
    "permissions hold only os.putenv/os.unsetenv: a plugin reads any variable, secrets included"
)
def test_reading_the_environment(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIXHOOKS_ATTACK_SECRET", "hunter2")
    read: list[str] = []
    host.plugin(
        "reader",
        """
        import os

        def attack(name):
            return os.environ[name]
        """,
        "env=HELIXHOOKS_ATTACK_OTHER",
    )
    host.start()

    assert_stopped(
        host,
        "reader",
        lambda: read.append(host.attack("reader", "HELIXHOOKS_ATTACK_SECRET")),
        lambda: read == ["hunter2"],
        "the plugin read a variable its env permission does not name",
    )


# -- the guard is Python in the plugin's own interpreter ------------------------------------------


@bypass(
    "subprocess (and shutil) raise their events with sys.audit from Python code: a plugin "
    "that rebinds sys.audit silences them, and _posixsubprocess raises none of its own"
)
def test_rebinding_sys_audit_silences_the_events_raised_from_python(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "audit", sys.audit)  # put back whatever happens
    marker = tmp_path / "ran"
    host.plugin(
        "runless",
        """
        import subprocess, sys

        def attack(marker):
            audit = sys.audit
            sys.audit = lambda event, *args: None
            try:
                return subprocess.run(["touch", marker], timeout=5).returncode
            finally:
                sys.audit = audit
        """,
    )
    host.start()

    assert_stopped(
        host,
        "runless",
        lambda: host.attack("runless", str(marker)),
        marker.exists,
        "subprocess.run ran touch for a plugin without run",
    )


TAMPER = """
import os.path
import helixhooks._guard

def attack(arg):
    how, path, inside = arg
    if how == "its busy flag":
        # What the guard sets while it checks, so that its own work is not checked.
        helixhooks._guard._state.busy = True
        try:
            with open(path, "w") as f:
                f.write("written")
        finally:
            helixhooks._guard._state.busy = False
    elif how == "the C hook's switch":
        # Off, the C audit hook (where it is built) calls the guard for nothing.
        from helixhooks import _audit

        _audit.set_engaged(False)
        try:
            with open(path, "w") as f:
                f.write("written")
        finally:
            _audit.set_engaged(True)
    else:
        # The guard resolves paths with os.path.realpath, looked up when it checks.
        realpath = os.path.realpath
        os.path.realpath = lambda *args, **kwargs: inside
        try:
            with open(path, "w") as f:
                f.write("written")
        finally:
            os.path.realpath = realpath
"""


@pytest.mark.parametrize(
    "how",
    [
        "its busy flag",
        "os.path.realpath",
        pytest.param(
            "the C hook's switch",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("helixhooks._audit") is None,
                reason="helixhooks._audit is not built here: the guard uses its Python hook",
            ),
        ),
    ],
)
@bypass(
    "the guard is Python code in the plugin's interpreter: its state (helixhooks._guard, the "
    "C hook's switch) and the functions it calls (os.path.realpath) are the plugin's to change"
)
def test_the_guard_can_be_switched_off_from_inside(host: Host, tmp_path: Path, how: str) -> None:
    scope = tmp_path / "scope"
    scope.mkdir()
    outside = tmp_path / "outside.txt"
    host.plugin("tamperer", TAMPER, f"write={scope}")
    host.start()

    assert_stopped(
        host,
        "tamperer",
        lambda: host.attack("tamperer", (how, str(outside), str(scope / "x"))),
        outside.exists,
        "a file outside the write scope was written",
    )


# -- no limits in-process -------------------------------------------------------------------------


@bypass(
    "nothing limits a plugin's memory in-process: Config.limits (memory_mb) applies to the "
    "process tier's workers only"
)
def test_memory_is_not_limited(host: Host) -> None:
    host.plugin(
        "hog",
        """
        def attack(size):
            return len(bytearray(size))
        """,
    )
    host.start(limits={"memory_mb": 16})

    try:
        allocated = host.attack("hog", 64 * 2**20)
    except (MemoryError, hh.ResourceExceeded):
        return
    raise GuardMissed(f"the plugin allocated {allocated} bytes under limits.memory_mb=16")


@bypass(
    "nothing bounds a hook call's time in-process: Config.call_timeout and limits.cpu_seconds "
    "are not applied to in-process plugins, and Python cannot interrupt a running thread"
)
def test_a_hook_call_is_not_bounded_in_time(host: Host) -> None:
    host.plugin(
        "spinner",
        """
        import time

        def attack(seconds):
            deadline = time.perf_counter() + seconds
            spins = 0
            while time.perf_counter() < deadline:
                spins += 1
            return spins
        """,
    )
    host.start(call_timeout=0.05, limits={"cpu_seconds": 0.05})

    started = time.perf_counter()
    try:
        host.attack("spinner", 0.3)
    except (hh.PluginTimeout, hh.ResourceExceeded):
        return
    spent = time.perf_counter() - started
    raise GuardMissed(f"the hook call spun {spent:.2f}s under call_timeout=0.05, cpu_seconds=0.05")


# -- work the plugin schedules, run later without a plugin frame ---------------------------------

SCHEDULE = """
import functools, os, socket

def attack(arg):
    how, schedule, target = arg
    if how == "os.system":
        schedule(functools.partial(os.system, target))
    else:
        schedule(functools.partial(socket.create_connection, target, 2))
"""


@pytest.mark.parametrize("how", ["os.system", "socket.create_connection"])
@bypass(
    "a functools.partial of a library function, run later by the host on its own thread, "
    "leaves no plugin frame on the stack, runs on no thread the plugin started and in no "
    "Sandbox.execute: the guard sees the host"
)
def test_library_code_the_plugin_schedules_runs_as_the_host(
    host: Host, listener: Listener, tmp_path: Path, how: str
) -> None:
    scheduled: list[Callable[[], Any]] = []
    marker = tmp_path / "ran"
    host.plugin("scheduler", SCHEDULE)
    host.start()
    if how == "os.system":
        target: object = f"touch {shlex.quote(str(marker))}"
        happened = marker.exists
    else:
        target = listener.address
        happened = listener.reached

    def host_runs_its_callbacks() -> None:
        host.attack("scheduler", (how, scheduled.append, target))
        for callback in scheduled:
            result = callback()
            if isinstance(result, socket.socket):
                result.close()

    assert_stopped(
        host,
        "scheduler",
        host_runs_its_callbacks,
        happened,
        f"{how} ran for a plugin without the permission",
    )


@bypass(
    "a module whose code the plugin exec'd into the module's own namespace has frames whose "
    "__name__ is not a plugin module: when the host calls it on its own thread, nothing on "
    "the stack is the plugin's"
)
def test_a_module_swapped_in_for_one_the_host_uses_later(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "json", json)  # put back whatever happens
    written = tmp_path / "written.txt"
    host.plugin(
        "swapper",
        """
        import sys, types

        SOURCE = '''
        def dumps(obj, **kwargs):
            with open(PATH, "w") as f:
                f.write("written")
            return "{}"
        '''

        def attack(path):
            fake = types.ModuleType("json")
            fake.PATH = path
            exec(SOURCE, fake.__dict__)
            sys.modules["json"] = fake
        """,
    )
    host.start()

    def host_saves_later() -> None:
        host.attack("swapper", str(written))
        importlib.import_module("json").dumps({"saved": True})

    assert_stopped(
        host,
        "swapper",
        host_saves_later,
        written.exists,
        "the host's json.dumps wrote a file for a plugin without write",
    )


@bypass(
    "a task the plugin puts on the host's event loop runs later on the loop's thread, a host "
    "thread: its frames are asyncio's and the library coroutine's, and its context names no "
    "plugin, so asyncio.open_connection connects for a plugin without net"
)
def test_a_task_on_the_hosts_event_loop(host: Host, listener: Listener) -> None:
    host.plugin(
        "tasker",
        """
        import asyncio

        def attack(address):
            return asyncio.get_running_loop().create_task(asyncio.open_connection(*address))
        """,
    )
    host.start()

    async def host_serves() -> None:
        task = host.attack("tasker", listener.address)  # called from the host's coroutine
        _, writer = await asyncio.wait_for(task, TIMEOUT)
        writer.close()
        await writer.wait_closed()

    assert_stopped(
        host,
        "tasker",
        lambda: asyncio.run(host_serves()),
        listener.reached,
        "the task connected for a plugin without net",
    )


@bypass(
    "only threading.Thread is tagged with its plugin (by the _thread.start_*thread event "
    "naming Thread._bootstrap from 3.12, by a wrapped Thread.start before): a thread started "
    "with _thread.start_new_thread running library code (http.client, socket) has no plugin "
    "frame and no tag"
)
def test_a_raw_thread_running_library_code(host: Host, listener: Listener) -> None:
    connections: list[Any] = []
    host.plugin(
        "threader",
        """
        import _thread, http.client

        def attack(address):
            connection = http.client.HTTPConnection(*address, timeout=2)
            _thread.start_new_thread(connection.connect, ())
            return connection
        """,
    )
    host.start()

    # Were it denied, the error would surface in the thread as an unraisable exception.
    try:
        with uncaught():
            assert_stopped(
                host,
                "threader",
                lambda: connections.append(host.attack("threader", listener.address)),
                lambda: listener.reached(TIMEOUT),
                "the raw thread connected for a plugin without net",
            )
    finally:
        for connection in connections:
            connection.close()


@bypass(
    "the guard knows a plugin's code by its module's __name__ (the private package the loader "
    "gave it, or its installed package): a plugin that renames its own module to a host "
    "module's name looks like the host's code on the stack"
)
def test_a_plugin_that_renames_its_module_is_taken_for_the_host(host: Host, tmp_path: Path) -> None:
    target = tmp_path / "written"
    host.plugin(
        "renamed",
        """
        globals()["__name__"] = "os"

        def attack(path):
            with open(path, "w") as file:
                file.write("x")
        """,
    )
    host.start()

    assert_stopped(
        host,
        "renamed",
        lambda: host.attack("renamed", str(target)),
        target.exists,
        "the renamed plugin wrote a file without write",
    )
