"""The worker's confinement (helixhooks/isolation/confine.py) against the real kernel.

Every test starts a fresh interpreter that loads confine.py by path, as the worker does, applies a
policy to itself and then tries what the policy forbids (with a control where the policy allows
it, so that a denial is known to be the layer's doing). Most tests run twice: as the test's own
user, and as ``nobody`` (an ordinary user, where the kernel's rules for the unprivileged apply),
from a world-readable copy of confine.py and an interpreter nobody can run. A test that needs a
kernel feature skips with the reason ``capabilities()`` gives when it is absent.
"""

from __future__ import annotations

import functools
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import helixhooks
from helixhooks.isolation import confine
from tests.security._attack import Listener

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="confinement is Linux's")

CONFINE = Path(helixhooks.__file__).parent / "isolation" / "confine.py"
TIMEOUT = 60.0
# What each child runs first: confine.py loaded by path, a policy applied (its report printed),
# and helpers that print each outcome as one JSON line: [label, "ok" | "ErrorType ERRNO" | value].
PRELUDE = """\
import errno, importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("confine", sys.argv[1])
confine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(confine)
args = json.loads(sys.argv[3])

def say(label, value):
    print(json.dumps([label, value]), flush=True)

def attempt(label, action):
    try:
        action()
    except Exception as error:
        code = getattr(error, "errno", None)
        name = errno.errorcode.get(code) if isinstance(code, int) else None
        say(label, type(error).__name__ + (" " + name if name else ""))
    else:
        say(label, "ok")

policy = json.loads(sys.argv[2])
if policy is not None:
    say("report", confine.apply(policy))
"""
DENIED = "PermissionError EACCES"
REFUSED = "PermissionError EPERM"
NOBODY_PYTHONS = (sys.executable, "/usr/bin/python3")


@dataclass
class Outcome:
    """What a child printed, by label, and how it ended."""

    returncode: int
    said: dict[str, object]
    stderr: str

    @property
    def report(self) -> dict[str, str]:
        report = self.said.get("report")
        assert isinstance(report, dict), f"no report: {self.stderr}"
        return report

    def __getitem__(self, label: str) -> object:
        assert label in self.said, f"{label!r} not reached: {self.said} {self.stderr}"
        return self.said[label]


@dataclass(frozen=True)
class Child:
    """How a confined child runs: which interpreter, as which user, with which confine.py."""

    python: str
    confine: str
    user: str | None  # None: the test's own
    capabilities: dict[str, str] = field(default_factory=dict, compare=False)

    def run(
        self,
        policy: dict[str, object] | None,
        body: str = "",
        args: Mapping[str, object] | None = None,
        timeout: float = TIMEOUT,
    ) -> Outcome:
        done = subprocess.run(
            self.command(PRELUDE + textwrap.dedent(body), policy, args or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            **self.as_user(),
        )
        said = {}
        for line in done.stdout.splitlines():
            label, value = json.loads(line)
            said[label] = value
        return Outcome(done.returncode, said, done.stderr)

    def command(self, code: str, policy: object, args: object) -> list[str]:
        return [self.python, "-I", "-c", code, self.confine, json.dumps(policy), json.dumps(args)]

    def as_user(self) -> dict[str, Any]:
        return as_user(self.user)

    def require(self, *layers: str) -> None:
        for layer in layers:
            if self.capabilities[layer] != confine.AVAILABLE:
                pytest.skip(f"{layer}: {self.capabilities[layer]}")


@functools.cache
def nobody_python() -> tuple[str | None, str]:
    """An interpreter nobody can run, or None and the reason there is none."""
    if os.geteuid() != 0:
        return None, "switching to nobody needs root"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return None, "there is no user nobody"
    for python in NOBODY_PYTHONS:
        try:
            subprocess.run(
                [python, "-I", "-c", "import ctypes, resource"],
                capture_output=True,
                timeout=TIMEOUT,
                check=True,
                **as_user("nobody"),
            )
        except (OSError, subprocess.CalledProcessError):
            continue
        return python, ""
    return None, f"none of {NOBODY_PYTHONS} runs as nobody (/root is not theirs to read)"


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as ``user`` (None: as we are), without our groups."""
    if user is None:
        return {}
    group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    return {"user": user, "group": group, "extra_groups": [], "env": {}}


@functools.cache
def capabilities_for(python: str, user: str | None) -> dict[str, str]:
    """capabilities() as the child's user sees them, on the child's interpreter."""
    directory = Path(tempfile.mkdtemp(prefix="helixhooks-confine-probe-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        copy = directory / "confine.py"
        shutil.copy(CONFINE, copy)
        copy.chmod(0o644)
        probe = Child(python, str(copy), user)
        found = probe.run(None, "say('capabilities', confine.capabilities())")["capabilities"]
        assert isinstance(found, dict)
        return {str(layer): str(outcome) for layer, outcome in found.items()}
    finally:
        shutil.rmtree(directory)


@dataclass(frozen=True)
class Area:
    """A world-accessible tree: confine.py, a plugin, its data directory, and a directory outside
    both whose file every user may read and write as far as file modes go (so only the
    confinement stands between a plugin and it)."""

    root: Path

    @property
    def confine(self) -> Path:
        return self.root / "confine.py"

    @property
    def plugin(self) -> Path:
        return self.root / "plugin"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def secret(self) -> Path:
        return self.outside / "secret"

    def policy(self, **changes: object) -> dict[str, object]:
        """A plugin's policy: nothing granted but its own directory and its data."""
        return {"read": [str(self.plugin)], "write": [str(self.data)], **changes}


@pytest.fixture
def area() -> Iterator[Area]:
    made = Area(Path(tempfile.mkdtemp(prefix="helixhooks-confine-", dir="/tmp")))
    made.root.chmod(0o755)
    shutil.copy(CONFINE, made.confine)
    made.confine.chmod(0o644)
    for directory, mode in ((made.plugin, 0o755), (made.data, 0o777), (made.outside, 0o777)):
        directory.mkdir()
        directory.chmod(mode)
    (made.plugin / "plugin.py").write_text("VALUE = 1\n")
    made.secret.write_text("secret")
    made.secret.chmod(0o666)
    (made.data / "escape").symlink_to("../outside")
    yield made
    shutil.rmtree(made.root)


@pytest.fixture(params=["self", "nobody"])
def child(request: pytest.FixtureRequest, area: Area) -> Child:
    """A child as the test's own user, and one as nobody."""
    if request.param == "self":
        return own_child(area)
    python, reason = nobody_python()
    if python is None:
        pytest.skip(reason)
    return Child(python, str(area.confine), "nobody", capabilities_for(python, "nobody"))


@pytest.fixture
def me(area: Area) -> Child:
    """A child as the test's own user only."""
    return own_child(area)


def own_child(area: Area) -> Child:
    return Child(sys.executable, str(area.confine), None, capabilities_for(sys.executable, None))


@pytest.fixture
def listeners() -> Iterator[tuple[Listener, Listener]]:
    made = (Listener(), Listener())
    yield made
    for listener in made:
        listener.close()


def port(listener: Listener) -> int:
    return int(listener.address[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has died; nobody may reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# --- capabilities, the report, strict ------------------------------------------------------------


def test_capabilities_name_every_layer_and_match_what_apply_does(child: Child) -> None:
    caps = child.capabilities
    assert set(caps) == {*confine.LAYERS, "landlock-abi"}
    assert caps["landlock-abi"].isdigit()
    for layer in confine.LAYERS:
        assert caps[layer] == confine.AVAILABLE or caps[layer].startswith("unavailable: ")
    # The probe's own policy, applied here: each layer is active exactly where it is available.
    done = child.run({"parent_pid": os.getpid(), "run": True, "limits": {"processes": 64}})
    for layer in confine.LAYERS:
        expected = confine.ACTIVE if caps[layer] == confine.AVAILABLE else caps[layer]
        assert done.report[layer] == expected, layer


def test_capabilities_leave_the_caller_unconfined(me: Child) -> None:
    done = me.run(
        None,
        """
        confine.capabilities()
        say("status", [line for line in open("/proc/self/status")
                       if line.startswith(("NoNewPrivs:", "Seccomp:"))])
        say("userns", os.readlink("/proc/self/ns/user") == args["userns"])
        """,
        {"userns": os.readlink("/proc/self/ns/user")},
    )
    assert done["status"] == ["NoNewPrivs:\t0\n", "Seccomp:\t0\n"]
    assert done["userns"] is True


def test_strict_refuses_a_needed_layer_that_is_missing(me: Child, area: Area) -> None:
    me.require("landlock-fs")
    body = "say('plugin code ran', True)"
    strict = me.run(area.policy(strict=True, disable=["landlock-fs"]), body)
    assert strict.returncode != 0 and "plugin code ran" not in strict.said
    assert "ConfinementError: landlock-fs: disabled by the policy's 'disable' key" in strict.stderr
    # Without strict the plugin runs, less confined, and the report says so.
    lax = me.run(area.policy(disable=["landlock-fs"]), body)
    assert lax["plugin code ran"] is True
    assert lax.report["landlock-fs"] == "unavailable: disabled by the policy's 'disable' key"
    # A disabled layer the policy does not need is no reason to refuse.
    unneeded = me.run(area.policy(strict=True, disable=["landlock-net"], net=True), body)
    assert unneeded["plugin code ran"] is True, unneeded.stderr


def test_strict_runs_when_every_needed_layer_is_there(child: Child, area: Area) -> None:
    child.require("pdeathsig", "namespaces", "landlock-fs", "rlimits", "seccomp")
    done = child.run(area.policy(strict=True, parent_pid=os.getpid()), "say('ran', True)")
    assert done["ran"] is True, done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the case of a worker running as root")
def test_strict_refuses_a_process_limit_root_cannot_have(me: Child, area: Area) -> None:
    me.require("seccomp")
    limited = area.policy(strict=True, limits={"processes": 8})
    # With run granted only RLIMIT_NPROC could bound processes, and the kernel exempts uid 0.
    done = me.run({**limited, "run": True}, "say('ran', True)")
    assert "ConfinementError: processes: the kernel does not apply RLIMIT_NPROC to uid 0" in (
        done.stderr
    )
    # Without run, seccomp refuses fork itself: the limit is not needed.
    done = me.run(limited, "say('ran', True)")
    assert done["ran"] is True, done.stderr
    assert (
        done.report["processes"] == "unavailable: the kernel does not apply RLIMIT_NPROC to uid 0"
    )


def test_malformed_policies_are_refused_before_anything_is_applied(me: Child) -> None:
    bad = {
        "not an object": [],
        "unknown key": {"netports": [80]},
        "unknown limit": {"limits": {"memory": 10}},
        "negative limit": {"limits": {"memory_mb": -1}},
        "bool limit": {"limits": {"open_files": True}},
        "flag not bool": {"net": "yes"},
        "port out of range": {"net": True, "net_ports": [70000]},
        "paths not strings": {"read": [1]},
        "unknown layer": {"disable": ["apparmor"]},
        "parent_pid not int": {"parent_pid": "1"},
    }
    done = me.run(
        None,
        """
        for label, policy in args.items():
            try:
                confine.apply(policy)
            except confine.ConfinementError as error:
                say(label, str(error))
            else:
                say(label, "applied")
        say("status", [line for line in open("/proc/self/status") if line.startswith("Seccomp:")])
        """,
        bad,
    )
    for label in bad:
        assert str(done[label]).startswith("policy: "), label
    assert done["status"] == ["Seccomp:\t0\n"]


def test_a_threaded_caller_is_refused(me: Child) -> None:
    done = me.run(
        None,
        """
        import threading
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            confine.apply({})
        except confine.ConfinementError as error:
            say("error", str(error))
        stop.set()
        """,
    )
    assert str(done["error"]).startswith("apply: 2 threads are running")


def test_interpreter_paths_name_what_python_reads() -> None:
    paths = confine.interpreter_paths()
    assert len(paths) == len(set(paths))
    assert os.path.realpath(sys.base_prefix) in paths and "/proc/self" in paths
    assert all(os.path.isabs(path) for path in paths)
    assert os.path.dirname(os.path.realpath(os.__file__)) in paths


# --- net ------------------------------------------------------------------------------------------

CONNECT = """
import socket
attempt("connect", lambda: socket.create_connection(("127.0.0.1", args["port"]), timeout=5).close())
attempt("unix socketpair", lambda: [end.close() for end in socket.socketpair()])
"""
ALONE = {
    "namespaces": ["seccomp", "landlock-net"],
    "seccomp": ["namespaces", "landlock-net"],
    "landlock-net": ["namespaces", "seccomp"],
}
HOW = {"namespaces": "OSError ENETUNREACH", "seccomp": DENIED, "landlock-net": DENIED}


@pytest.mark.parametrize("layer", list(ALONE))
def test_without_net_no_connection_each_layer_alone(
    child: Child, area: Area, listeners: tuple[Listener, Listener], layer: str
) -> None:
    child.require(layer)
    done = child.run(area.policy(disable=ALONE[layer]), CONNECT, {"port": port(listeners[0])})
    assert done.report[layer] == confine.ACTIVE
    assert done["connect"] == HOW[layer]
    assert not listeners[0].reached()
    assert done["unix socketpair"] == "ok"  # the worker's own kind of channel


def test_with_net_the_connection_is_made(
    child: Child, area: Area, listeners: tuple[Listener, Listener]
) -> None:
    done = child.run(area.policy(net=True), CONNECT, {"port": port(listeners[0])})
    assert done["connect"] == "ok"
    assert listeners[0].reached()
    assert done.report["namespaces"] == confine.NOT_NEEDED
    assert done.report["landlock-net"] == confine.NOT_NEEDED


def test_net_ports_allow_those_ports_only(
    child: Child, area: Area, listeners: tuple[Listener, Listener]
) -> None:
    child.require("landlock-net")
    allowed, other = listeners
    done = child.run(
        area.policy(net=True, net_ports=[port(allowed)]),
        """
        import socket
        for label, number in (("allowed", args["allowed"]), ("other", args["other"])):
            address = ("127.0.0.1", number)
            attempt(label, lambda: socket.create_connection(address, timeout=5).close())
        attempt("bind", lambda: socket.create_server(("127.0.0.1", 0)).close())
        """,
        {"allowed": port(allowed), "other": port(other)},
    )
    assert done.report["landlock-net"] == confine.ACTIVE
    assert done["allowed"] == "ok" and allowed.reached()
    assert done["other"] == DENIED and not other.reached()
    assert done["bind"] == DENIED


# --- files ----------------------------------------------------------------------------------------

READS = """
def read(path):
    with open(path) as file:
        file.read()
attempt("plugin file", lambda: read(args["plugin"] + "/plugin.py"))
attempt("outside", lambda: read(args["secret"]))
attempt("listing outside", lambda: os.listdir(args["outside"]))
attempt("via symlink", lambda: read(args["data"] + "/escape/secret"))
attempt("via ..", lambda: read(args["data"] + "/../outside/secret"))
attempt("/etc/passwd", lambda: read("/etc/passwd"))
"""
WRITES = """
def write(path):
    with open(path, "w") as file:
        file.write("written")
def symlink_then_write():
    os.symlink(args["outside"], args["data"] + "/made")
    write(args["data"] + "/made/through-made-link")
attempt("data", lambda: write(args["data"] + "/mine"))
attempt("outside", lambda: write(args["outside"] + "/new"))
attempt("overwrite outside", lambda: write(args["secret"]))
attempt("via symlink", lambda: write(args["data"] + "/escape/through-link"))
attempt("via ..", lambda: write(args["data"] + "/../outside/through-dotdot"))
attempt("via a new symlink", symlink_then_write)
attempt("rename out", lambda: os.rename(args["data"] + "/mine", args["outside"] + "/moved"))
attempt("hard link out", lambda: os.link(args["data"] + "/mine", args["outside"] + "/linked"))
attempt("mkdir outside", lambda: os.mkdir(args["outside"] + "/dir"))
attempt("remove outside", lambda: os.unlink(args["secret"]))
"""


def paths(area: Area) -> dict[str, object]:
    return {
        "plugin": str(area.plugin),
        "data": str(area.data),
        "outside": str(area.outside),
        "secret": str(area.secret),
    }


def test_reads_are_held_to_the_read_paths(child: Child, area: Area) -> None:
    child.require("landlock-fs")
    done = child.run(area.policy(), READS, paths(area))
    assert done.report["landlock-fs"] == confine.ACTIVE
    assert done["plugin file"] == "ok"
    for label in ("outside", "listing outside", "via symlink", "via ..", "/etc/passwd"):
        assert done[label] == DENIED, label
    # Control: the same reads with read granted whole.
    granted = child.run(area.policy(read_all=True), READS, paths(area))
    assert all(granted[label] == "ok" for label in ("outside", "via symlink", "via .."))


def test_writes_are_held_to_the_write_paths(child: Child, area: Area) -> None:
    child.require("landlock-fs")
    done = child.run(area.policy(), WRITES, paths(area))
    assert done.report["landlock-fs"] == confine.ACTIVE
    assert done["data"] == "ok"
    for label in ("outside", "overwrite outside", "via symlink", "via ..", "via a new symlink"):
        assert done[label] == DENIED, label
    # Across directories Landlock answers EXDEV where the refer right is involved.
    assert done["rename out"] in (DENIED, "OSError EXDEV")
    assert done["hard link out"] in (DENIED, "OSError EXDEV")
    assert done["mkdir outside"] == DENIED and done["remove outside"] == DENIED
    assert sorted(os.listdir(area.outside)) == ["secret"]
    assert area.secret.read_text() == "secret"
    # Control: the same writes with write granted whole.
    granted = child.run(area.policy(write_all=True), WRITES, paths(area))
    assert granted["outside"] == "ok" and granted["via .."] == "ok"
    assert "new" in os.listdir(area.outside)


def test_the_interpreter_still_works_confined(child: Child, area: Area) -> None:
    child.require("landlock-fs")
    done = child.run(
        area.policy(),
        """
        import importlib
        for name in ("ssl", "sqlite3", "hashlib", "decimal", "json", "ctypes", "zlib", "lzma",
                     "zoneinfo", "concurrent.futures", "email.mime.text"):
            attempt("import " + name, lambda: importlib.import_module(name))
        import hashlib, time
        attempt("sha256", lambda: hashlib.sha256(b"x").hexdigest())
        attempt("localtime", time.localtime)
        attempt("urandom", lambda: os.urandom(16))
        attempt("devnull", lambda: open(os.devnull, "w").write("x"))
        attempt("plugin import", lambda: importlib.util.spec_from_file_location(
            "plugin", args["plugin"] + "/plugin.py").loader.load_module())
        """,
        paths(area),
    )
    failed = {label: value for label, value in done.said.items() if value not in ("ok",)}
    failed.pop("report")
    assert failed == {}


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


@pytest.mark.skipif(not os.access(DROP_CACHES, os.W_OK), reason="needs root to drop caches")
def test_proc_self_stays_readable_when_the_kernel_drops_its_dentries(me: Child) -> None:
    """procfs makes a new inode for /proc/<pid> after its dentry is evicted, and a Landlock rule
    holds an inode: confine keeps a descriptor open on it. (Evicts the machine's dentry cache.)"""
    me.require("landlock-fs")
    code = PRELUDE + textwrap.dedent(
        """
        def status():
            with open("/proc/self/status") as file:
                file.read()
        attempt("before", status)
        sys.stdin.readline()
        attempt("after", status)
        """
    )
    worker = subprocess.Popen(
        me.command(code, {}, {}), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdin is not None
        assert json.loads(worker.stdout.readline())[0] == "report"
        assert json.loads(worker.stdout.readline()) == ["before", "ok"]
        DROP_CACHES.write_text("2\n")  # dentries and inodes
        worker.stdin.write("\n")
        worker.stdin.close()
        assert json.loads(worker.stdout.readline()) == ["after", "ok"]
    finally:
        worker.kill()
        worker.wait(TIMEOUT)


# --- run ------------------------------------------------------------------------------------------

RUN = """
import subprocess, threading, concurrent.futures
attempt("fork", lambda: os.fork() or None)
attempt("subprocess", lambda: subprocess.run(["/bin/true"], check=True))
attempt("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {}))
say("os.system", os.system("true"))
attempt("execv", lambda: os.execv("/bin/true", ["true"]))
def threads():
    found = []
    workers = [threading.Thread(target=found.append, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(found) == list(range(8))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(abs, range(-4, 0))) == [4, 3, 2, 1]
attempt("threads", threads)
"""


def test_without_run_no_exec_no_fork_but_threads(child: Child, area: Area) -> None:
    child.require("seccomp")
    done = child.run(area.policy(read=[str(area.plugin), "/bin", "/usr/bin"]), RUN)
    assert done.report["seccomp"] == confine.ACTIVE
    for label in ("fork", "subprocess", "posix_spawn", "execv"):
        assert done[label] == REFUSED, label
    assert done["os.system"] != 0
    assert done["threads"] == "ok"


def test_with_run_programs_run(child: Child, area: Area) -> None:
    done = child.run(area.policy(read=[str(area.plugin), "/bin", "/usr/bin"], run=True), RUN)
    assert done["subprocess"] == "ok" and done["posix_spawn"] == "ok" and done["os.system"] == 0
    assert "execv" not in done.said and done.returncode == 0  # replaced by /bin/true


FORKS = """
import time
pids = []
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    pids.append(pid)
say("forks", len(pids))
for pid in pids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def test_200_forks_without_run_all_fail(child: Child, area: Area) -> None:
    child.require("seccomp")
    assert child.run(area.policy(), FORKS)["forks"] == 0


@pytest.mark.parametrize("net", [False, True], ids=["user+net namespace", "user namespace"])
def test_200_forks_are_bounded_by_the_process_limit(child: Child, area: Area, net: bool) -> None:
    """With net granted the worker enters a user namespace all the same, for the count."""
    done = child.run(area.policy(net=net, run=True, limits={"processes": 8}), FORKS)
    if child.capabilities["processes"] != confine.AVAILABLE:
        assert done.report["processes"] == child.capabilities["processes"]
        pytest.skip(f"processes: {child.capabilities['processes']}")
    assert done.report["processes"] == confine.ACTIVE
    # The limit counts the worker's own tasks, the worker included.
    assert 0 < int(str(done["forks"])) <= 7
    assert done.report["namespaces"] == (confine.NOT_NEEDED if net else confine.ACTIVE)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x32 ABI is x86_64's")
def test_x32_syscalls_cannot_go_around_the_filter(me: Child, area: Area) -> None:
    """x32 calls share x86_64's audit arch with numbers of their own (bit 30 set)."""
    me.require("seccomp")
    body = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def x32_getpid():
        if libc.syscall(ctypes.c_long(0x40000000 + 39)) == -1:
            raise OSError(ctypes.get_errno(), "x32 getpid")
    attempt("x32", x32_getpid)
    """
    assert me.run(area.policy(), body)["x32"] == REFUSED
    # Control: without the filter the kernel answers itself (ENOSYS where x32 is not built).
    assert me.run(area.policy(disable=["seccomp"]), body)["x32"] in ("ok", "OSError ENOSYS")


# --- rlimits --------------------------------------------------------------------------------------


def test_memory_limit_makes_a_10_gb_allocation_fail(child: Child, area: Area) -> None:
    done = child.run(
        area.policy(limits={"memory_mb": 512}),
        """
        attempt("10 GB", lambda: bytearray(10 << 30))
        attempt("10 MB", lambda: bytearray(10 << 20))
        """,
    )
    assert done["10 GB"] == "MemoryError" and done["10 MB"] == "ok"


@pytest.mark.parametrize(("ignore", "ends_by"), [(False, signal.SIGXCPU), (True, signal.SIGKILL)])
def test_cpu_limit_ends_an_infinite_loop(
    me: Child, area: Area, ignore: bool, ends_by: signal.Signals
) -> None:
    started = time.monotonic()
    done = me.run(
        area.policy(limits={"cpu_seconds": 1}),
        """
        import signal
        if args["ignore"]:
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True:
            pass
        """,
        {"ignore": ignore},
    )
    assert done.returncode == -ends_by
    assert time.monotonic() - started < TIMEOUT / 2


def test_file_size_open_files_and_core_limits(child: Child, area: Area) -> None:
    done = child.run(
        area.policy(limits={"file_size_mb": 1, "open_files": 32}),
        """
        import resource
        def big():
            with open(args["data"] + "/big", "wb") as file:
                file.write(b"x" * (2 << 20))
        attempt("2 MB file", big)
        say("size", os.path.getsize(args["data"] + "/big"))
        attempt("64 files", lambda: [open(os.devnull) for _ in range(64)])
        say("core", resource.getrlimit(resource.RLIMIT_CORE))
        """,
        paths(area),
    )
    assert done["2 MB file"] == "OSError EFBIG" and done["size"] == 1 << 20
    assert done["64 files"] == "OSError EMFILE"
    assert done["core"] == [0, 0]


# --- the parent ----------------------------------------------------------------------------------

MIDDLE = """
import json, os, subprocess, sys
python, confine, code, policy = sys.argv[1:5]
policy = json.loads(policy)
if policy.pop("parent_pid", None):
    policy["parent_pid"] = os.getpid()
inner = subprocess.Popen([python, "-I", "-c", code, confine, json.dumps(policy), "{}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
for line in inner.stdout:
    if line.startswith('["ready"'):
        break
print(inner.pid, flush=True)
os._exit(0)
"""
SLEEPER = PRELUDE + "say('ready', True)\nimport time\ntime.sleep(120)\n"


@pytest.mark.parametrize("pdeathsig", [True, False])
def test_the_worker_dies_when_its_parent_dies(child: Child, area: Area, pdeathsig: bool) -> None:
    """A middle process starts the confined worker (every layer on) and exits."""
    policy = area.policy(parent_pid=pdeathsig)
    middle = subprocess.run(
        [
            child.python,
            "-I",
            "-c",
            MIDDLE,
            child.python,
            child.confine,
            SLEEPER,
            json.dumps(policy),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
        cwd="/",
        **child.as_user(),
    )
    worker = int(middle.stdout)
    try:
        deadline = time.monotonic() + (10 if pdeathsig else 1)
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.02)
        # Control: without parent_pid the worker outlives the middle process.
        assert alive(worker) is not pdeathsig
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_dies_at_once(me: Child, area: Area) -> None:
    # The pid given is not our parent's: as if the parent died and we were handed to another.
    done = me.run(area.policy(parent_pid=1), "say('plugin code ran', True)")
    assert done.returncode == -signal.SIGKILL and done.said == {}


TOUCH_PARENT = """
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
def seize(pid):
    if libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(pid), None, None) != 0:  # PTRACE_SEIZE
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    libc.ptrace(ctypes.c_long(17), ctypes.c_long(pid), None, None)  # PTRACE_DETACH
attempt("signal", lambda: os.kill(args["victim"], 0))
attempt("signal its group", lambda: os.killpg(os.getpgid(args["victim"]), 0))
attempt("ptrace", lambda: seize(args["victim"]))
attempt("signal parent", lambda: os.kill(os.getppid(), 0))
attempt("signal itself", lambda: os.kill(os.getpid(), 0))
"""
# net is granted in each, since a worker in its own user namespace could not trace a process
# outside it anyway (the kernel wants CAP_SYS_PTRACE in the target's namespace).
GUARDS = {
    # run is refused, so seccomp keeps signals to the worker itself; ptrace is always refused.
    "seccomp": {"net": True, "run": False, "disable": ["landlock-scope", "landlock-fs"]},
    # run is granted, so only Landlock stands between the worker and other processes: its
    # signal scope, and its rule that a domain traces only processes within it.
    "landlock-scope": {"net": True, "run": True, "disable": ["seccomp"]},
}


@pytest.mark.parametrize("guard", list(GUARDS))
def test_the_worker_cannot_signal_or_trace_outside_itself(
    child: Child, area: Area, guard: str
) -> None:
    """Signal 0 checks the permission without sending anything, so a failure harms no one. The
    victim is a process of the worker's own user (like its host), outside its confinement."""
    child.require(guard)
    # In a session of its own, so that its group does not hold the worker too.
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True, **child.as_user())
    try:
        args = {"victim": victim.pid}
        done = child.run(area.policy(**GUARDS[guard]), TOUCH_PARENT, args)
        assert done.report[guard] == confine.ACTIVE
        assert done["signal"] == REFUSED and done["signal its group"] == REFUSED
        assert done["ptrace"] == REFUSED and done["signal parent"] == REFUSED
        assert done["signal itself"] == "ok"
        # Control: with neither guard, the same user may signal and trace its own processes.
        free = child.run(
            area.policy(net=True, run=True, disable=["seccomp", "landlock-scope", "landlock-fs"]),
            TOUCH_PARENT,
            args,
        )
        assert free["signal"] == "ok" and free["ptrace"] == "ok"
    finally:
        victim.kill()
        victim.wait(TIMEOUT)
