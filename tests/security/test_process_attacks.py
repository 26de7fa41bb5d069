"""The attack suite against the process tier: what the guard only discourages, the kernel stops.

Each attack runs as a process plugin's hook; the worker is confined as the plugin's permissions
say. A layer this machine lacks skips its attacks with the reason (Sandbox.capabilities).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import helixhooks as hh
from tests._plugins import systems, wait_for, write_plugin

CAPABILITIES = hh.Sandbox.capabilities()


def needs(*layers: str) -> pytest.MarkDecorator:
    missing = [
        f"{layer}: {CAPABILITIES.get(layer)}"
        for layer in layers
        if CAPABILITIES.get(layer) != "available"
    ]
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "available")


# An exception in a worker's monitor or output thread is a bug the test must not pass over.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class Spec:
    @hh.hookspec(firstresult=True)
    def attack(self, code: str) -> object:
        """Run ``code`` in the plugin; its ``result`` is returned."""


ATTACKER = """
import os, sys, socket, threading, time
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def attack(self, code):
        scope = {"os": os, "sys": sys, "socket": socket, "threading": threading, "time": time}
        exec(code, scope)
        return scope.get("result")
"""


@pytest.fixture
def attacker(tmp_path: Path) -> Iterator[Callable[..., hh.PluginSystem]]:
    plugins = tmp_path / "plugins"
    with systems(plugins, [Spec], data_dir=tmp_path / "data", call_timeout=60) as factory:

        def make(*permissions: str, **config: object) -> hh.PluginSystem:
            listed = ", ".join(f'"{p}"' for p in permissions)
            write_plugin(
                plugins,
                "evil",
                ATTACKER,
                extra=f'isolation = "process"\npermissions = [{listed}]\n',
            )
            system = factory(**config)
            system.load_all()
            system.start_all()
            assert system.get("evil").state is hh.PluginState.STARTED, system.problems
            return system

        yield make


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def _refused(system: hh.PluginSystem, code: str) -> None:
    # PermissionError, or the kernel's "network unreachable" in an empty network namespace.
    with pytest.raises(OSError):  # noqa: PT011
        system.hook.attack(code=code)


@needs("namespaces")
def test_tcp_connect_without_net(attacker: Callable[..., hh.PluginSystem], listener: int) -> None:
    _refused(attacker(), f"socket.create_connection(('127.0.0.1', {listener}), timeout=5)")


@needs("namespaces")
def test_udp_sendto_without_net(attacker: Callable[..., hh.PluginSystem]) -> None:
    _refused(
        attacker(),
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('8.8.8.8', 53))",
    )


@needs("landlock-fs")
def test_unix_socket_connect_without_net(
    attacker: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    try:
        _refused(attacker(), f"s = socket.socket(socket.AF_UNIX)\ns.connect({path!r})")
    finally:
        server.close()


@needs("landlock-net")
def test_net_scoped_to_one_port_refuses_another(
    attacker: Callable[..., hh.PluginSystem], listener: int
) -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    try:
        system = attacker(f"net=127.0.0.1:{listener}")
        system.hook.attack(code=f"socket.create_connection(('127.0.0.1', {listener}), 5).close()")
        port = other.getsockname()[1]
        _refused(system, f"socket.create_connection(('127.0.0.1', {port}), timeout=5)")
    finally:
        other.close()


@needs("seccomp")
@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])",
        # os.system reports a failure to start the shell by its status, not by raising.
        "status = os.system('true')\nif status: raise PermissionError(status)",
        "os.posix_spawn('/bin/true', ['true'], {})",
        "import pty\npid, fd = pty.fork()\nif pid == 0: os._exit(0)",
        "pid = os.fork()\nif pid == 0: os._exit(0)",
    ],
    ids=["subprocess", "system", "posix_spawn", "pty", "fork"],
)
def test_programs_and_forks_without_run(
    attacker: Callable[..., hh.PluginSystem], code: str
) -> None:
    system = attacker()
    _refused(system, code)
    # Threads are not processes: they still work.
    assert (
        system.hook.attack(
            code="t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\nresult = 'ok'"
        )
        == "ok"
    )


@needs("seccomp")
def test_two_hundred_forks_are_bounded(attacker: Callable[..., hh.PluginSystem]) -> None:
    code = (
        "made = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0: os._exit(0)\n"
        "    made += 1\n"
        "result = made"
    )
    assert attacker().hook.attack(code=code) == 0


@needs("landlock-fs")
def test_writes_outside_the_write_scope(
    attacker: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "link").symlink_to(outside)
    system = attacker(f"write={allowed}")
    system.hook.attack(code=f"open({str(allowed / 'ok.txt')!r}, 'w').write('fine')")
    assert (allowed / "ok.txt").read_text() == "fine"
    for target in (outside / "x", allowed / "link" / "x", allowed / ".." / "outside" / "x"):
        _refused(system, f"open({str(target)!r}, 'w').write('pwned')")
    assert list(outside.iterdir()) == []


@needs("landlock-fs")
def test_a_secret_outside_the_read_scope(
    attacker: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.key"
    secret.write_text("hunter2")
    readable = tmp_path / "readable"
    readable.mkdir()
    (readable / "fine.txt").write_text("fine")
    system = attacker(f"read={readable}")
    assert (
        system.hook.attack(code=f"result = open({str(readable / 'fine.txt')!r}).read()") == "fine"
    )
    _refused(system, f"result = open({str(secret)!r}).read()")


@needs("namespaces")
def test_a_thread_of_the_plugin_cannot_connect(
    attacker: Callable[..., hh.PluginSystem], listener: int
) -> None:
    code = (
        "errors = []\n"
        "def run():\n"
        "    try:\n"
        f"        socket.create_connection(('127.0.0.1', {listener}), timeout=5)\n"
        "    except OSError as exc:\n"
        "        errors.append(type(exc).__name__)\n"
        "t = threading.Thread(target=run); t.start(); t.join(10)\n"
        "result = errors"
    )
    assert attacker().hook.attack(code=code) != []


@needs("namespaces")
def test_replacing_socket_or_adding_audit_hooks_changes_nothing(
    attacker: Callable[..., hh.PluginSystem], listener: int
) -> None:
    system = attacker()
    system.hook.attack(code="import types\nsys.modules['socket'] = types.ModuleType('socket')")
    system.hook.attack(code="sys.addaudithook(lambda event, args: None)")
    _refused(
        system,
        f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {listener}))",
    )


def test_a_ten_gigabyte_allocation_is_resource_exceeded(
    attacker: Callable[..., hh.PluginSystem],
) -> None:
    if CAPABILITIES.get("rlimits") != "available":
        pytest.skip(f"rlimits: {CAPABILITIES.get('rlimits')}")
    system = attacker()
    with pytest.raises(hh.ResourceExceeded, match="memory"):
        system.hook.attack(code="block = bytearray(10 * 1024**3)")
    assert system.hook.attack(code="result = 'alive'") == "alive"


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">I", 0xFFFFFFFF),
        struct.pack(">I", 100) + b'{"id": 1, "ok"',
        struct.pack(">I", 4) + b"\xff\xfe\xfd\xfc",
        struct.pack(">I", 200_000) + b"[" * 100_000 + b"]" * 100_000,
        struct.pack(">I", 5_010) + b'{"id": 1, "ok": ' + b"9" * 4_993 + b"}",
        struct.pack(">I", 16) + b'{"id": 999, "ok": 1}'[:16],
        struct.pack(">I", 15) + b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.\x00",
    ],
    ids=["length", "truncated", "utf8", "nesting", "huge-int", "wrong-id", "pickle"],
)
def test_malformed_frames_from_a_worker(
    attacker: Callable[..., hh.PluginSystem], frame: bytes
) -> None:
    system = attacker()
    events: list[hh.PluginEvent] = []
    system.subscribe(events.append)
    code = f"os.write(int(sys.argv[1]), {frame!r})\ntime.sleep(2)\nos._exit(0)"
    with pytest.raises(hh.WorkerCrashed):
        system.hook.attack(code=code)


@needs("landlock-scope")
def test_the_worker_cannot_signal_its_parent(attacker: Callable[..., hh.PluginSystem]) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGWINCH, lambda number, frame: received.append(number))
    try:
        _refused(attacker(), f"os.kill({os.getpid()}, {int(signal.SIGWINCH)})")
    finally:
        signal.signal(signal.SIGWINCH, previous)
    assert received == []


@needs("seccomp")
def test_the_worker_cannot_ptrace_its_parent(attacker: Callable[..., hh.PluginSystem]) -> None:
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"result = (libc.ptrace(16, {os.getpid()}, 0, 0), ctypes.get_errno())"  # PTRACE_ATTACH
    )
    answer, errno = attacker("ffi").hook.attack(code=code)
    assert answer == -1 and errno != 0


def test_in_flight_threads_see_the_worker_go(attacker: Callable[..., hh.PluginSystem]) -> None:
    """Not an attack on the kernel: a worker killing itself while the host waits on it."""
    system = attacker()
    failures: list[BaseException] = []

    def call() -> None:
        try:
            system.hook.attack(code="time.sleep(0.2)\nos.kill(os.getpid(), 9)")
        except hh.WorkerCrashed as exc:
            failures.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and len(failures) == 1


@pytest.mark.parametrize(
    ("code", "error", "why"),
    [
        ("os._exit(0)", hh.WorkerCrashed, "exited with status 0"),
        ("import ctypes; ctypes.string_at(0)", hh.WorkerCrashed, "SIGSEGV"),
        ("os.abort()", hh.WorkerCrashed, "SIGABRT"),
        ("while True: pass", hh.PluginTimeout, "did not finish within 2s"),
    ],
    ids=["exit", "segv", "abort", "infinite-loop"],
)
def test_a_worker_dying_or_hanging_leaves_the_host_standing(
    attacker: Callable[..., hh.PluginSystem], code: str, error: type[Exception], why: str
) -> None:
    system = attacker("ffi", call_timeout=2)
    events: list[hh.PluginEvent] = []
    system.subscribe(events.append)
    with pytest.raises(error, match=why):
        system.hook.attack(code=code)
    wait_for(lambda: any(e.kind == "worker_crashed" for e in events), "the crash event")
    crash = next(e for e in events if e.kind == "worker_crashed")
    assert crash.name == "evil" and why in str(crash.error)
    # Back with a new worker (after the backoff), serving as before.
    wait_for(lambda: system.get("evil").state is hh.PluginState.STARTED, "the restart")
    assert system.hook.attack(code="result = 'back'") == "back"


def test_a_gigabyte_to_stdout(attacker: Callable[..., hh.PluginSystem]) -> None:
    system = attacker()
    code = (
        "line = b'x' * 1023 + b'\\n'\nfor _ in range(1 << 20): os.write(1, line)\nresult = 'done'"
    )
    assert system.hook.attack(code=code) == "done"
    assert system.hook.attack(code="result = 'still here'") == "still here"


def test_a_host_secret_in_the_environment(
    attacker: Callable[..., hh.PluginSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_API_KEY", "s3cret")
    system = attacker()
    assert system.hook.attack(code="result = os.environ.get('HOST_API_KEY')") is None
    assert system.hook.attack(code="result = open('/proc/self/environ').read()").find("s3cret") < 0


def test_a_worker_that_never_answers_the_handshake(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "evil", "import time\ntime.sleep(600)\n", extra='isolation = "process"\n')
    with systems(plugins, [Spec], load_timeout=1, data_dir=tmp_path / "data") as factory:
        system = factory()
        system.load_all()
        error = system.get("evil").error
        assert isinstance(error, hh.PluginTimeout) and "worker start" in str(error)


@needs("seccomp")
def test_no_new_namespaces_or_mounts(attacker: Callable[..., hh.PluginSystem]) -> None:
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "result = [(libc.unshare(0x10000000), ctypes.get_errno()),"  # CLONE_NEWUSER
        " (libc.mount(b'none', b'.', b'tmpfs', 0, None), ctypes.get_errno())]"
    )
    assert attacker("ffi").hook.attack(code=code) == [[-1, 1], [-1, 1]]  # EPERM


def test_temporary_files_go_to_the_plugin_s_own_directory(
    attacker: Callable[..., hh.PluginSystem], tmp_path: Path
) -> None:
    code = "import tempfile\nwith tempfile.NamedTemporaryFile() as f: result = f.name"
    name = attacker().hook.attack(code=code)
    assert Path(name).parent == (tmp_path / "data" / "evil" / "tmp").resolve()
