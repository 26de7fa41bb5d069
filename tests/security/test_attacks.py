"""The in-process guard against real attacks: each one is stopped, and only for the plugin at fault.

Every attacker is a real directory plugin (tests/security/_attack.py) whose hook does the deed for
real: a socket to a listener the test opened, a file written, a program started, a library
loaded. For each attack the test proves (1) the hook call raised PermissionDenied naming the
plugin, the permission and the target; (2) the side effect did not happen (the listener saw no
connection, the file is not there, the child never ran, the library is not mapped); (3) the
denial was counted in the plugin's metrics and published as one ``permission_denied`` event; and
(4) the same code in a plugin holding the right permission, scoped to the target, succeeds: the
guard tells them apart, rather than the operation being broken.

(sys.addaudithook is the one exception to (1): CPython swallows what an audit hook raises for
it, so the plugin sees no error, but the hook is not added and the denial is still counted.)

The last section holds the holes this suite found in the guard, since closed (a hard link
into the scope, a shell line behind one program, SQLite's own files, signals, directory
listings, dir_fd, an audited call with no Python frame under it). What the guard cannot stop
at all is in test_bypasses.py.
"""

from __future__ import annotations

import _thread
import ctypes
import importlib
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import helixhooks as hh
from tests.security._attack import (
    TIMEOUT,
    Host,
    Listener,
    assert_stopped,
    endpoint,
    uncaught,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX sockets, pty, signals")


# -- net ------------------------------------------------------------------------------------------

CONNECT = """
import socket

def attack(arg):
    kind, address = arg
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    kind_ = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind_) as sock:
        sock.settimeout(2)
        if kind == "udp":
            sock.sendto(b"x", tuple(address))
        else:
            sock.connect(address)
    return "sent"
"""


@pytest.mark.parametrize("kind", ["tcp", "udp", "unix"])
def test_connecting_without_net_is_denied(host: Host, tmp_path: Path, kind: str) -> None:
    with endpoint(kind, tmp_path) as target:
        host.plugin("denied", CONNECT)
        host.plugin("allowed", CONNECT, f"net={target.target}")
        host.start()

        with host.denies("denied", "net", target.target):
            host.attack("denied", (kind, target.address))
        assert not target.reached()

        assert host.attack("allowed", (kind, target.address)) == "sent"
        assert target.reached()
        host.quiet("allowed")


def test_net_scoped_to_one_port_denies_the_others(host: Host, listener: Listener) -> None:
    other = Listener()
    try:
        host.plugin("scoped", CONNECT, f"net={listener.target}")
        host.start()

        with host.denies("scoped", "net", other.target):
            host.attack("scoped", ("tcp", other.address))
        assert not other.reached()

        assert host.attack("scoped", ("tcp", listener.address)) == "sent"
        assert listener.reached()
    finally:
        other.close()


# -- run ------------------------------------------------------------------------------------------

RUN = """
import os, shlex, subprocess

def attack(arg):
    how, program, marker = arg
    if how == "subprocess.run":
        return subprocess.run([program, marker], timeout=5).returncode
    if how == "subprocess.Popen":
        with subprocess.Popen([program, marker]) as child:
            return child.wait(5)
    if how == "os.system":
        return os.waitstatus_to_exitcode(os.system(f"{program} {shlex.quote(marker)}"))
    if how == "os.posix_spawn":
        pid = os.posix_spawn(program, [program, marker], dict(os.environ))
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    raise ValueError(how)
"""


@pytest.mark.parametrize(
    "how", ["subprocess.run", "subprocess.Popen", "os.system", "os.posix_spawn"]
)
def test_running_a_program_without_run_is_denied(host: Host, tmp_path: Path, how: str) -> None:
    touch = shutil.which("touch")
    assert touch is not None
    # posix_spawn takes a path; the others look the name up on PATH (and name it so when denied).
    program = touch if how == "os.posix_spawn" else "touch"
    # os.system runs a shell, which runs the whole line: the shell is what needs run.
    runs = "/bin/sh" if how == "os.system" else program
    host.plugin("denied", RUN)
    host.plugin("other", RUN, "run=true")
    host.plugin("allowed", RUN, "run=sh" if how == "os.system" else "run=touch")
    host.start()

    for name in ("denied", "other"):
        marker = tmp_path / f"ran-{name}"
        with host.denies(name, "run", runs):
            host.attack(name, (how, program, str(marker)))
        assert not marker.exists()  # the child never ran

    marker = tmp_path / "ran-allowed"
    assert host.attack("allowed", (how, program, str(marker))) == 0
    assert marker.exists()
    host.quiet("allowed")


PTY_FORK = """
import os, pty

def attack(pipe):
    pid, fd = pty.fork()
    if pid == 0:  # the child: say so, and leave at once
        try:
            os.write(pipe, b"x")
        finally:
            os._exit(0)
    try:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        os.close(fd)
"""


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def _ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0.2)[0])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_pty_fork_without_run_is_denied(host: Host, pipe: tuple[int, int]) -> None:
    read, write = pipe
    host.plugin("denied", PTY_FORK)
    host.plugin("allowed", PTY_FORK, "run")
    host.start()

    # PermissionDenied is a PermissionError: pty.fork falls back from os.forkpty to os.fork,
    # which is denied too.
    with host.denies("denied", "run", None, times=2):
        host.attack("denied", write)
    assert not _ready(read)  # no child to write to the pipe

    assert host.attack("allowed", write) == 0
    assert _ready(read) and os.read(read, 1) == b"x"
    host.quiet("allowed")


# -- ffi ------------------------------------------------------------------------------------------

LOAD = """
import ctypes

def attack(path):
    ctypes.CDLL(path)
    return "loaded"
"""

# Libraries found on most Linux systems that the interpreter and the test suite do not map.
_SPARE_LIBRARIES = ("libform.so.6", "libpanel.so.6", "libanl.so.1", "libnsl.so.2", "libutil.so.1")
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64")


def _mapped() -> str:
    return Path("/proc/self/maps").read_text()


def _spare_library() -> str:
    """A real shared library that this process has not mapped, by its real path."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps to see which libraries are loaded")
    mapped = _mapped()
    for name in _SPARE_LIBRARIES:
        for directory in _LIBRARY_DIRS:
            path = os.path.realpath(os.path.join(directory, name))
            if os.path.exists(path) and path not in mapped:
                return path
    pytest.skip("no spare shared library to load here")


def test_loading_a_library_without_ffi_is_denied(host: Host) -> None:
    library = _spare_library()
    host.plugin("denied", LOAD)
    host.plugin("allowed", LOAD, "ffi")
    host.start()

    with host.denies("denied", "ffi", None):
        host.attack("denied", library)
    assert library not in _mapped()

    assert host.attack("allowed", library) == "loaded"
    assert library in _mapped()
    host.quiet("allowed")


HOST_HANDLE = """
def attack(arg):
    libc, command = arg
    return libc.system(command)
"""


def test_a_library_the_host_loaded_is_still_ffi(host: Host, tmp_path: Path) -> None:
    # The host opened libc; the plugin gets the handle and calls a function in it. Looking the
    # function up is the ctypes.dlsym event, on the plugin's stack. (A function the host already
    # looked up is cached on the handle, and calling it raises no event: test_bypasses.py.)
    host.plugin("denied", HOST_HANDLE)
    host.plugin("allowed", HOST_HANDLE, "ffi")
    host.start()

    marker = tmp_path / "ran-denied"
    with host.denies("denied", "ffi", None):
        host.attack("denied", (ctypes.CDLL(None), f"touch {shlex.quote(str(marker))}".encode()))
    assert not marker.exists()

    marker = tmp_path / "ran-allowed"
    command = f"touch {shlex.quote(str(marker))}".encode()
    assert host.attack("allowed", (ctypes.CDLL(None), command)) == 0
    assert marker.exists()
    host.quiet("allowed")


# -- write ----------------------------------------------------------------------------------------

WRITE = """
import os, shutil

def attack(arg):
    how, path, other = arg
    if how == "open":
        with open(path, "w") as f:
            f.write("written")
    elif how == "os.open":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT))
    elif how == "os.remove":
        os.remove(path)
    elif how == "os.rename":
        os.rename(path, other)
    elif how == "os.mkdir":
        os.mkdir(path)
    elif how == "shutil.rmtree":
        shutil.rmtree(path)
    else:
        raise ValueError(how)
    return how
"""


def _prepare(directory: Path) -> None:
    """What the writes work on, under ``directory``."""
    directory.mkdir(exist_ok=True)
    (directory / "victim.txt").write_text("precious")
    (directory / "tree" / "sub").mkdir(parents=True)
    (directory / "tree" / "sub" / "leaf.txt").write_text("leaf")


# how -> (path, other): what it writes in directory d (outside, or the scope itself) and the scope
_WRITES: dict[str, Callable[[Path, Path], tuple[Path, Path | None]]] = {
    "open": lambda d, scope: (d / "new.txt", None),
    "os.open": lambda d, scope: (d / "new.txt", None),
    "os.remove": lambda d, scope: (d / "victim.txt", None),
    "os.rename (from outside)": lambda d, scope: (d / "victim.txt", scope / "stolen.txt"),
    "os.rename (to outside)": lambda d, scope: (scope / "victim.txt", d / "dropped.txt"),
    "os.mkdir": lambda d, scope: (d / "newdir", None),
    "shutil.rmtree": lambda d, scope: (d / "tree", None),
}


def _unchanged(directory: Path) -> bool:
    names = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    return names == ["tree", "tree/sub", "tree/sub/leaf.txt", "victim.txt"]


@pytest.fixture
def scope(tmp_path: Path) -> Path:
    """A plugin's write scope, and a directory beside it (``outside``), both prepared."""
    for name in ("scope", "outside"):
        _prepare(tmp_path / name)
    return tmp_path / "scope"


@pytest.mark.parametrize("case", list(_WRITES))
def test_writing_outside_the_write_scope_is_denied(host: Host, scope: Path, case: str) -> None:
    outside = scope.parent / "outside"
    path, other = _WRITES[case](outside, scope)
    host.plugin("writer", WRITE, f"write={scope}")
    host.start()

    target = other if case == "os.rename (to outside)" else path
    with host.denies("writer", "write", str(target)):
        host.attack("writer", (case.split()[0], str(path), other and str(other)))
    assert _unchanged(outside)
    assert _unchanged(scope)


@pytest.mark.parametrize("case", list(_WRITES))
def test_the_same_writes_inside_the_write_scope_succeed(host: Host, scope: Path, case: str) -> None:
    path, other = _WRITES[case](scope, scope)
    host.plugin("writer", WRITE, f"write={scope}")
    host.start()

    host.attack("writer", (case.split()[0], str(path), other and str(other)))
    assert not _unchanged(scope)
    host.quiet("writer")


def test_symlinks_and_dotdot_are_judged_by_the_real_path(host: Host, scope: Path) -> None:
    outside = scope.parent / "outside"
    (scope / "away").symlink_to(outside, target_is_directory=True)
    (scope / "here").symlink_to(scope / "tree", target_is_directory=True)
    host.plugin("writer", WRITE, f"write={scope}")
    host.start()

    for sneaky in (scope / "away" / "new.txt", f"{scope}/tree/../../outside/new.txt"):
        with host.denies("writer", "write", str(sneaky)):
            host.attack("writer", ("open", str(sneaky), None))
        assert _unchanged(outside)

    # The same spellings that stay inside the scope are fine.
    for fine in (scope / "here" / "new.txt", f"{scope}/tree/sub/../../new.txt"):
        assert host.attack("writer", ("open", str(fine), None)) == "open"
    assert (scope / "tree" / "new.txt").read_text() == "written"
    assert (scope / "new.txt").read_text() == "written"
    assert host.denials("writer") == {"write": 2}


# -- read -----------------------------------------------------------------------------------------

READ = """
def attack(path):
    with open(path) as f:
        return f.read()
"""


def test_reading_outside_the_read_scope_is_denied(host: Host, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("data")
    (data / "peek").symlink_to(secret)
    reader = host.plugin("reader", READ, f"read={data}")
    (reader / "own.txt").write_text("own")
    host.start()

    for sneaky in (secret, data / "peek"):
        with host.denies("reader", "read", str(sneaky)):
            host.attack("reader", str(sneaky))

    assert host.attack("reader", str(data / "in.txt")) == "data"
    assert host.attack("reader", str(reader / "own.txt")) == "own"  # its own files: always
    assert host.denials("reader") == {"read": 2}


def test_a_plugin_that_declares_no_read_permission_may_read(host: Host, tmp_path: Path) -> None:
    # The documented rule (_guard._allowed): reads are held to scopes only for plugins that
    # declare some, as importing a module reads files. This is that rule, not a hole.
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    host.plugin("nosy", READ, "net=127.0.0.1:1")
    host.start()

    assert host.attack("nosy", str(secret)) == "hunter2"
    host.quiet("nosy")


# -- threads --------------------------------------------------------------------------------------

THREADS = """
import socket, threading
from concurrent.futures import ThreadPoolExecutor

def attack(arg):
    how, address = arg
    if how == "its own function":
        failed = []

        def connect():
            try:
                socket.create_connection(address, timeout=2).close()
            except Exception as exc:
                failed.append(exc)

        thread = threading.Thread(target=connect)
        thread.start()
        thread.join(5)
        if failed:
            raise failed[0]
    elif how == "socket.create_connection":
        # Library code on the plugin's behalf: no plugin frame in the thread. What it raises
        # goes to threading.excepthook; the socket it returns is dropped (and warned about).
        thread = threading.Thread(target=socket.create_connection, args=(address, 2))
        thread.start()
        thread.join(5)
    elif how == "sock.connect":
        with socket.socket() as sock:  # only C code in the thread, under threading's frames
            sock.settimeout(2)
            thread = threading.Thread(target=sock.connect, args=(address,))
            thread.start()
            thread.join(5)
    elif how == "a pool's socket.create_connection":
        with ThreadPoolExecutor(1) as pool:
            pool.submit(socket.create_connection, address, 2).result(5).close()
    return "joined"
"""


@pytest.mark.parametrize(
    "how",
    [
        "its own function",
        pytest.param(
            "socket.create_connection",
            marks=pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),
        ),
        "sock.connect",
        "a pool's socket.create_connection",
    ],
)
def test_a_thread_the_plugin_starts_acts_for_it(host: Host, listener: Listener, how: str) -> None:
    host.plugin("denied", THREADS)
    host.plugin("allowed", THREADS, f"net={listener.target}")
    host.start()

    with uncaught() as errors:
        with host.denies("denied", "net", listener.target):
            host.attack("denied", (how, listener.address))
            if errors:  # from a thread whose target is the library function
                error = errors.pop()
                assert error is not None
                raise error
        assert not listener.reached()

        assert host.attack("allowed", (how, listener.address)) == "joined"
        assert listener.reached()
    assert errors == []
    host.quiet("allowed")


# -- tampering with the interpreter -------------------------------------------------------------

FAKE_SOCKET = """
import socket, sys, types

REAL_SOCKET = socket.socket  # saved before the swap

def attack(address):
    saved = sys.modules["socket"]
    sys.modules["socket"] = types.ModuleType("socket")
    try:
        with REAL_SOCKET(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(address)
    finally:
        sys.modules["socket"] = saved
    return "connected"
"""


def test_a_fake_socket_module_does_not_hide_the_connect(
    host: Host, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "socket", socket)  # put back whatever happens
    host.plugin("denied", FAKE_SOCKET)
    host.plugin("allowed", FAKE_SOCKET, f"net={listener.target}")
    host.start()

    # The socket.connect event is raised in C, whatever sys.modules says.
    with host.denies("denied", "net", listener.target):
        host.attack("denied", listener.address)
    assert sys.modules["socket"] is socket
    assert not listener.reached()

    assert host.attack("allowed", listener.address) == "connected"
    assert listener.reached()
    host.quiet("allowed")


PROBE = "helixhooks.tests.security.probe"

AUDIT_HOOK = f"""
import sys

SEEN = []

def _hook(event, args):
    if event == {PROBE!r}:
        SEEN.append(args)

def attack(arg):
    sys.addaudithook(_hook)
    return "added"

def serve(arg):
    return list(SEEN)
"""


def test_adding_an_audit_hook_needs_sys(host: Host) -> None:
    host.plugin("denied", AUDIT_HOOK)
    host.plugin("allowed", AUDIT_HOOK, "sys")  # its hook stays for the process: it is harmless
    host.start()

    # sys.addaudithook swallows an Exception raised by an audit hook for its event and simply
    # does not add the hook (CPython's rule), so the plugin sees no error here: the denial is
    # counted and published all the same, and the hook is not there.
    assert host.attack("denied") == "added"
    assert host.denials("denied") == {"sys": 1}
    [event] = [e for e in host.events if e.kind == "permission_denied"]
    assert isinstance(event.error, hh.PermissionDenied)
    assert (event.name, event.error.plugin, event.error.permission) == ("denied", "denied", "sys")
    sys.audit(PROBE, "after the denial")
    assert host.system.hook.serve(who="denied", arg=None) == []

    assert host.attack("allowed") == "added"
    sys.audit(PROBE, "after the grant")
    assert host.system.hook.serve(who="allowed", arg=None) == [("after the grant",)]
    host.quiet("allowed")


# -- plugins calling plugins ----------------------------------------------------------------------

RELAY = """
import socket

def serve(address):
    with socket.create_connection(address, timeout=2):
        return NAME + " connected"

def attack(arg):
    other, address = arg
    return HOOK.serve(who=other, arg=address)  # through the host's relay (ctx.hook)
"""


def test_each_plugin_called_through_the_relay_has_its_own_permissions(
    host: Host, listener: Listener
) -> None:
    host.plugin("a", RELAY)
    host.plugin("b", RELAY, f"net={listener.target}")
    host.start()

    # a, with no net, asks b, which may connect: b's code does, as b.
    assert host.attack("a", ("b", listener.address)) == "b connected"
    assert listener.reached()

    # b asks a: a's code connects, as a, inside b's call.
    with host.denies("a", "net", listener.target):
        host.attack("b", ("a", listener.address))
    assert not listener.reached()
    host.quiet("b")


# -- env ------------------------------------------------------------------------------------------

ENV = """
import os

def attack(arg):
    name, value = arg
    if value is None:
        del os.environ[name]
    else:
        os.environ[name] = value
    return os.environ.get(name)
"""

VARIABLE = "HELIXHOOKS_ATTACK_X"


def test_setting_an_environment_variable_needs_env_for_it(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)  # and unset again afterwards
    host.plugin("none", ENV)
    host.plugin("other", ENV, "env=HELIXHOOKS_ATTACK_Y")
    host.plugin("exact", ENV, f"env={VARIABLE}")
    host.start()

    for name in ("none", "other"):
        with host.denies(name, "env", VARIABLE):
            host.attack(name, (VARIABLE, "1"))
        assert VARIABLE not in os.environ

    assert host.attack("exact", (VARIABLE, "1")) == "1"
    assert os.environ[VARIABLE] == "1"
    host.quiet("exact")

    with host.denies("other", "env", VARIABLE):  # unsetting it is judged the same way
        host.attack("other", (VARIABLE, None))
    assert os.environ[VARIABLE] == "1"
    assert host.attack("exact", (VARIABLE, None)) is None
    assert VARIABLE not in os.environ


# -- code of the plugin's that the host runs later -----------------------------------------------

CALLBACK = """
def attack(path):
    def later():
        with open(path, "w") as f:
            f.write("written")
        return "written"
    return later
"""


@pytest.mark.parametrize("where", ["the host's thread", "a thread of the host's"])
def test_a_callback_the_host_runs_later_is_still_the_plugins(
    host: Host, tmp_path: Path, where: str
) -> None:
    def run(callback: Callable[[], Any]) -> Any:
        if where == "the host's thread":
            return callback()
        with ThreadPoolExecutor(1) as pool:  # started by the host, so not tagged
            return pool.submit(callback).result(TIMEOUT)

    host.plugin("denied", CALLBACK)
    host.plugin("allowed", CALLBACK, f"write={tmp_path}")
    host.start()

    later = host.attack("denied", str(tmp_path / "denied.txt"))
    with host.denies("denied", "write", str(tmp_path / "denied.txt")):
        run(later)  # outside any hook call: only the callback's own frame is the plugin's
    assert not (tmp_path / "denied.txt").exists()

    later = host.attack("allowed", str(tmp_path / "allowed.txt"))
    assert run(later) == "written"
    assert (tmp_path / "allowed.txt").read_text() == "written"
    host.quiet("allowed")


SWAP_MODULE = """
import sys, types

def attack(path):
    fake = types.ModuleType("json")

    def dumps(obj, **kwargs):
        with open(path, "w") as f:
            f.write("written")
        return "{}"

    fake.dumps = dumps
    sys.modules["json"] = fake
"""


def test_a_module_swapped_in_with_the_plugins_functions_is_still_the_plugins(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host imports json after the plugin replaced it; what runs is the plugin's function,
    # so its frame names the plugin. (The same swap with code exec'd into the fake module's own
    # namespace has no plugin frame: test_bypasses.py.)
    def host_saves() -> str:
        return str(importlib.import_module("json").dumps({"saved": True}))

    host.plugin("denied", SWAP_MODULE)
    host.plugin("allowed", SWAP_MODULE, f"write={tmp_path}")
    host.start()

    monkeypatch.setitem(sys.modules, "json", json)
    host.attack("denied", str(tmp_path / "denied.txt"))
    with host.denies("denied", "write", str(tmp_path / "denied.txt")):
        host_saves()
    assert not (tmp_path / "denied.txt").exists()

    host.attack("allowed", str(tmp_path / "allowed.txt"))
    assert host_saves() == "{}"
    assert (tmp_path / "allowed.txt").read_text() == "written"
    host.quiet("allowed")


ASYNCIO_RUN = """
import asyncio

def attack(address):
    async def connect():
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 2)
        writer.close()
        await writer.wait_closed()
        return "connected"

    return asyncio.run(connect())
"""


def test_an_event_loop_the_plugin_runs_in_its_hook_is_the_plugins(
    host: Host, listener: Listener
) -> None:
    # The loop runs inside the hook call, so the plugin's frame is under every task. (A task
    # handed to the host's own loop is not: test_bypasses.py.)
    host.plugin("denied", ASYNCIO_RUN)
    host.plugin("allowed", ASYNCIO_RUN, f"net={listener.target}")
    host.start()

    with host.denies("denied", "net", listener.target):
        host.attack("denied", listener.address)
    assert not listener.reached()

    assert host.attack("allowed", listener.address) == "connected"
    assert listener.reached()
    host.quiet("allowed")


# -- holes the attack suite found in the guard, closed --------------------------------------


def test_a_hard_link_into_the_scope_does_not_open_the_file_outside(host: Host, scope: Path) -> None:
    victim = scope.parent / "outside" / "victim.txt"
    host.plugin(
        "linker",
        """
        import os

        def attack(arg):
            source, link = arg
            os.link(source, link)
            with open(link, "w") as f:
                f.write("overwritten")
        """,
        f"write={scope}",
    )
    host.start()

    assert_stopped(
        host,
        "linker",
        lambda: host.attack("linker", (str(victim), str(scope / "link"))),
        lambda: victim.read_text() == "overwritten",
        "the file outside the scope was overwritten through a hard link",
    )


def test_run_for_one_program_does_not_run_a_whole_shell_line(host: Host, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    host.plugin(
        "chained",
        """
        import os

        def attack(command):
            return os.system(command)
        """,
        "run=true",
    )
    host.start()

    assert_stopped(
        host,
        "chained",
        lambda: host.attack("chained", f"true && touch {shlex.quote(str(marker))}"),
        marker.exists,
        "touch ran, with only run=true granted",
    )


def test_sqlite_cannot_write_a_database_outside_the_write_scope(host: Host, scope: Path) -> None:
    database = scope.parent / "outside" / "stolen.db"
    host.plugin(
        "sqlite",
        """
        import sqlite3

        def attack(path):
            db = sqlite3.connect(path)
            try:
                db.execute("create table t (x)")
                db.commit()
            finally:
                db.close()
        """,
        f"write={scope}",
    )
    host.start()

    assert_stopped(
        host,
        "sqlite",
        lambda: host.attack("sqlite", str(database)),
        database.exists,
        "a database was created outside the write scope",
    )


def test_signalling_a_process_needs_run(host: Host) -> None:
    with subprocess.Popen(["sleep", "10"]) as child:
        try:
            host.plugin(
                "killer",
                """
                import os, signal

                def attack(pid):
                    os.kill(pid, signal.SIGTERM)
                """,
            )
            host.start()

            def killed() -> bool:
                try:
                    return child.wait(TIMEOUT) == -signal.SIGTERM
                except subprocess.TimeoutExpired:
                    return False

            assert_stopped(
                host,
                "killer",
                lambda: host.attack("killer", child.pid),
                killed,
                "the host's child process was killed",
            )
        finally:
            child.kill()


def test_listing_a_directory_outside_the_read_scope_is_denied(host: Host, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "secret-name.txt").write_text("")
    listed: list[str] = []
    host.plugin(
        "lister",
        """
        import os

        def attack(path):
            return os.listdir(path)
        """,
        f"read={tmp_path / 'data'}",
    )
    host.start()

    assert_stopped(
        host,
        "lister",
        lambda: listed.extend(host.attack("lister", str(tmp_path))),
        lambda: "secret-name.txt" in listed,
        "the names in a directory outside the read scope were listed",
    )


def test_a_name_relative_to_a_directory_outside_the_scope_is_outside(
    host: Host, scope: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = scope.parent / "outside"
    monkeypatch.chdir(scope)  # a host working in the directory it lets the plugin write
    host.plugin(
        "remover",
        """
        import os

        def attack(directory):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.remove("victim.txt", dir_fd=fd)
            finally:
                os.close(fd)
        """,
        f"write={scope}",
    )
    host.start()

    assert_stopped(
        host,
        "remover",
        lambda: host.attack("remover", str(outside)),
        lambda: not (outside / "victim.txt").exists(),
        "a file outside the write scope was removed",
    )


def test_an_audited_call_with_no_python_frame_is_judged(host: Host, listener: Listener) -> None:
    host.plugin("bystander", "def attack(arg):\n    return arg\n")
    host.start()  # a plugin is loaded: the guard is engaged

    # Blocking, so the thread's connect is one system call: once the connection is up (seen
    # with getpeername), closing the socket cannot catch it half way (EBADF in the thread).
    with uncaught() as errors, socket.socket() as sock:
        _thread.start_new_thread(sock.connect, (listener.address,))  # the host's own thread
        deadline = time.monotonic() + TIMEOUT
        reached = False
        while not (reached or errors) and time.monotonic() < deadline:
            reached = listener.reached(0.05)
        # The socket stays open until the thread's connect has returned.
        while not errors and time.monotonic() < deadline and not _connected(sock):
            time.sleep(0.01)
    assert errors == [], f"the host's own connect failed in the guard: {errors}"
    assert reached


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True
