"""The confinement a process-tier worker applies to itself before it imports any plugin code.

Standard library only. The worker loads this file by path, possibly under another interpreter
than the host's, so it imports nothing from helixhooks and nothing third-party. That is also why
Landlock and seccomp are driven by a few lines of our own (three syscalls through ctypes, a BPF
program packed with struct) rather than landlockpy or pyseccomp: a dependency would have to be
installed into every interpreter a worker may run under, and pyseccomp needs the system's
libseccomp besides.

Policy: a JSON object. Every key is optional; an unknown key is an error, since a misspelt key
would otherwise leave a layer off without a word.

``parent_pid`` (int or null)
    The host's pid. The worker asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG), then
    checks getppid() and kills itself at once if the parent is already gone. The kernel sends the
    signal when the *thread* that spawned the worker ends, so a host spawns workers from a thread
    that lives as long as they do.
``limits`` (object)
    ``memory_mb`` (RLIMIT_AS; address space, so each thread's stack counts), ``cpu_seconds``
    (RLIMIT_CPU: SIGXCPU at the limit, SIGKILL one second later for a plugin that ignores it),
    ``open_files`` (RLIMIT_NOFILE), ``file_size_mb`` (RLIMIT_FSIZE: Python ignores SIGXFSZ, so a
    write past it fails with EFBIG), ``processes`` (RLIMIT_NPROC, see below); each a number or
    null. RLIMIT_CORE is always 0. No limit is set above the hard limit already in force.
``net`` (bool, default false)
    Some net permission is granted.
``net_ports`` (list of int, or null)
    The TCP ports a scoped net grant may connect to; null (the default) is any port. Ignored
    when ``net`` is false.
``read`` (list of str)
    Paths readable: the plugin's directory, its data directory, its read scopes. apply() adds
    interpreter_paths() and, when ``net`` is true, the resolver's and the CA certificates' files.
``write`` (list of str)
    Paths writable (and readable): the data directory and the write scopes. /dev/null is added.
``read_all``, ``write_all`` (bool)
    An unscoped read or write grant: Landlock then does not handle reads, or writes.
``run`` (bool, default false)
    exec and fork are allowed.
``strict`` (bool, default false)
    Raise ConfinementError rather than run with a needed layer missing.
``disable`` (list of layer names)
    Layers not to apply: for a host working around a layer that misbehaves on its machine, or a
    test holding one layer on its own. Each is reported unavailable, and strict refuses it where
    it is needed.

Layers, in the order apply() takes them, and why that order:

1. ``pdeathsig``: first, so that a worker whose host dies during the rest does not linger.
2. ``namespaces``: when ``net`` is false, a new user and network namespace (only a loopback,
   down). unshare(CLONE_NEWUSER) needs a single-threaded process, and the uid and gid maps are
   written through /proc/self, which Landlock is about to close. When ``net`` is granted but a
   ``processes`` limit is asked for by a user other than root, a user namespace alone (see 5).
3. ``landlock-fs``, ``landlock-net``, ``landlock-scope``: one Landlock ruleset. Files: every
   access right the ABI knows is handled (refer from ABI 2, truncate from 3, ioctl_dev from 5);
   read paths get read-file, read-dir and execute; write paths get every handled right. Net (ABI
   4): when ``net`` is false, TCP connect and bind are handled with no port allowed (beside the
   namespace, not instead of it); for ``net_ports``, connecting to those ports is allowed and
   binding to none, since a scoped grant is for a client. Landlock has no UDP rules and no
   hosts, so those are left to the guard. Scope (ABI 6): signals and abstract unix sockets are
   kept inside the worker's domain, so it cannot signal its host (tracing is kept inside by
   Landlock at every ABI). One O_PATH descriptor, on /proc/self, stays open: it keeps that
   rule alive (see _allow_path). Before rlimits because a low ``open_files`` could starve the
   descriptors the rules are built from.
4. ``rlimits``: after the unshare (see 5) and before the filter.
5. ``processes``: RLIMIT_NPROC counts a uid's tasks (threads included) per user namespace, and
   the kernel never applies it to uid 0 (in any namespace: copy_process exempts the root user).
   So for a non-root worker it is set *after* entering its own user namespace, where it counts
   only the worker's own tasks, the worker included; the parent namespace's count keeps the
   limit it had. Without a user namespace it would count every process of the uid, the host's
   included, so it is then reported unavailable. For a root worker it is unavailable. Either
   way it is not needed when ``run`` is false and seccomp is active: fork is refused outright.
6. ``seccomp``: last, so that none of our own setup has to get past it. Always: ptrace,
   process_vm_readv/writev and io_uring (whose operations seccomp never sees) fail with EPERM.
   ``net`` false: socket fails with EACCES, and socketpair for any family but AF_UNIX (the
   worker's channel is an inherited descriptor). ``run`` false: execve, execveat, fork, vfork and
   clone without CLONE_THREAD fail with EPERM, clone3 with ENOSYS (glibc then creates threads
   with clone), and signals may go to the worker itself only (a fallback for kernels without
   Landlock's signal scope). Always, too: unshare, setns, mount, umount2, pivot_root, bpf,
   perf_event_open, userfaultfd and the keyring calls (the worker holds every capability in its
   own user namespace; these are its ways into less trodden kernel code). Errors, not kills, so
   the plugin sees a PermissionError the host can report; so do syscalls of another ABI (int
   0x80, x32), which the rules would not match.
   x86_64 and aarch64 (little-endian); elsewhere the layer is unavailable.

apply() returns each layer's outcome: ``"active"``, ``"not needed"`` (the policy does not call
for it), or ``"unavailable: <reason>"``. A layer may be active though not needed (Landlock's net
rules beside the namespace, its scopes beside seccomp), or unavailable though not needed.
Under ``strict`` it raises for a needed layer that is unavailable: pdeathsig when
``parent_pid`` is given, namespaces when ``net`` is false, landlock-fs unless both ``read_all``
and ``write_all``, landlock-net for ``net_ports``, landlock-scope when ``run`` is true
(otherwise seccomp keeps signals in), rlimits and seccomp always, processes as in 5.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import math
import os
import resource
import signal
import stat
import struct
import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

__all__ = ["ConfinementError", "apply", "capabilities", "interpreter_paths"]

LAYERS = (
    "pdeathsig",
    "namespaces",
    "landlock-fs",
    "landlock-net",
    "landlock-scope",
    "rlimits",
    "processes",
    "seccomp",
)
ACTIVE = "active"
NOT_NEEDED = "not needed"
AVAILABLE = "available"
_UNAVAILABLE = "unavailable: "
_DISABLED = "disabled by the policy's 'disable' key"

_LIMITS = frozenset({"memory_mb", "cpu_seconds", "open_files", "file_size_mb", "processes"})
_POLICY_KEYS = frozenset(
    {
        "parent_pid",
        "limits",
        "net",
        "net_ports",
        "read",
        "write",
        "read_all",
        "write_all",
        "run",
        "strict",
        "disable",
    }
)
_MIB = 1 << 20

# What the interpreter itself reads while it runs, beside its prefixes and sys.path.
_SYSTEM_PATHS = (
    "/dev/null",
    "/dev/urandom",
    "/dev/zero",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    # An extension module imported later (ssl, sqlite3, ...) loads its library from here.
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
)
# Name resolution and TLS verification, for a plugin granted net.
_NET_PATHS = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
    "/etc/pki",
    "/usr/share/ca-certificates",
)
_SINKS = ("/dev/null",)
_PINNED = ("/proc/self",)

# prctl(2) and unshare(2)
_PR_SET_PDEATHSIG = 1
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000

# Landlock: the same syscall numbers on x86_64 and aarch64.
_LANDLOCK_CREATE_RULESET = 444
_LANDLOCK_ADD_RULE = 445
_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_ABI1 = (1 << 13) - 1  # execute .. make_sym
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
# The rights that mean something on a file; the kernel refuses the others on a file rule.
_FS_FILE = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1
_NET_ABI = 4
_SCOPE_ABI = 6

# seccomp BPF
_BPF_LD_W_ABS = 0x20
_BPF_JEQ = 0x15
_BPF_JGE = 0x35
_BPF_JSET = 0x45
_BPF_RET = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_DATA_NR = 0
_DATA_ARCH = 4
_DATA_ARGS = 16  # args[i] at 16 + 8 * i; the low 32 bits first on a little-endian machine
_X32_SYSCALL_BIT = 0x40000000
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_NEVER = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
)
_SYSCALLS = {
    "x86_64": {
        "socket": 41,
        "socketpair": 53,
        "clone": 56,
        "fork": 57,
        "vfork": 58,
        "execve": 59,
        "kill": 62,
        "ptrace": 101,
        "rt_sigqueueinfo": 129,
        "tkill": 200,
        "tgkill": 234,
        "rt_tgsigqueueinfo": 297,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "execveat": 322,
        "pidfd_send_signal": 424,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "clone3": 435,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
    },
    # asm-generic numbering; aarch64 has no fork or vfork.
    "aarch64": {
        "ptrace": 117,
        "kill": 129,
        "tkill": 130,
        "tgkill": 131,
        "rt_sigqueueinfo": 138,
        "socket": 198,
        "socketpair": 199,
        "clone": 220,
        "execve": 221,
        "rt_tgsigqueueinfo": 240,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "execveat": 281,
        "pidfd_send_signal": 424,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "clone3": 435,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "bpf": 280,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
    },
}

_PROBE_TIMEOUT = 60.0
_PROBE_CODE = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.spec_from_file_location('_helixhooks_confine_probe', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "json.dump(module._probe(), sys.stdout)\n"
)

Instruction = tuple[int, int, int, int]


class ConfinementError(Exception):
    """A needed layer is unavailable under ``strict``, or the policy or the caller is unfit.

    The message starts with the layer (or ``policy`` / ``apply``) and gives the reason.
    """


class _Unavailable(Exception):
    """The layer cannot be applied on this machine; the message is the reason."""


# A NamedTuple, not a dataclass: dataclasses look the class's module up in sys.modules, where a
# file loaded by path need not be.
class _Policy(NamedTuple):
    parent_pid: int | None
    limits: dict[str, float]
    net: bool
    net_ports: tuple[int, ...] | None
    read: tuple[str, ...]
    write: tuple[str, ...]
    read_all: bool
    write_all: bool
    run: bool
    strict: bool
    disable: frozenset[str]


def capabilities() -> dict[str, str]:
    """Each layer: ``"available"`` or ``"unavailable: <reason>"`` on this machine, for this user.

    The layers are probed by applying them for real, in a child interpreter started for the
    purpose (forking a host that runs threads is not safe), so the calling process is unchanged.
    ``landlock-abi`` is the Landlock ABI version, ``"0"`` without Landlock.
    """
    if sys.platform != "linux":
        return {**dict.fromkeys(LAYERS, _UNAVAILABLE + "not Linux"), "landlock-abi": "0"}
    # Here, not at the top: the host probes, the worker never does, and subprocess is a third of
    # what loading this file costs the worker otherwise.
    import subprocess

    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE_CODE, os.path.abspath(__file__)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return _probe_failed(f"the probe could not run: {error}")
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no message"]
        return _probe_failed(f"the probe exited with {done.returncode}: {last[0]}")
    found = json.loads(done.stdout)
    return {str(layer): str(outcome) for layer, outcome in found.items()}


def _probe_failed(reason: str) -> dict[str, str]:
    return {**dict.fromkeys(LAYERS, _UNAVAILABLE + reason), "landlock-abi": "0"}


def _probe() -> dict[str, str]:
    """capabilities() in the child: apply a policy calling for every layer; say how it went."""
    report = apply({"parent_pid": os.getppid(), "limits": {"processes": 64}, "run": True})
    found = {
        layer: AVAILABLE if outcome == ACTIVE else outcome for layer, outcome in report.items()
    }
    try:
        found["landlock-abi"] = str(_landlock_abi())
    except _Unavailable:
        found["landlock-abi"] = "0"
    return found


def interpreter_paths() -> list[str]:
    """What the running interpreter reads: its prefixes, every existing ``sys.path`` entry, the
    directories of the shared objects it has mapped and the usual library directories, a few
    devices and files under /etc, each also by its real path; and /proc/self as it is (its real
    path names the calling process)."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        *sys.path,
        *_mapped_directories(),
        *_SYSTEM_PATHS,
    ]
    return [*_existing(candidates), "/proc/self"]


def _existing(candidates: Iterable[str]) -> list[str]:
    found: dict[str, None] = {}
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            found[os.path.abspath(candidate)] = None
            found[os.path.realpath(candidate)] = None
    return list(found)


def _mapped_directories() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    fields = (line.split(maxsplit=5) for line in lines)
    return list(dict.fromkeys(os.path.dirname(f[5]) for f in fields if f[5:] and f[5][0] == "/"))


def apply(policy: dict[str, object]) -> dict[str, str]:
    """Confine the calling process, which must be single-threaded, in the order the module
    docstring gives. Returns each layer's outcome; raises ConfinementError for a malformed
    policy, a multi-threaded caller, or (under ``strict``) a needed layer that is unavailable."""
    parsed = _parse(policy)
    if sys.platform != "linux":
        return _apply_elsewhere(parsed)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        # unshare would fail, and Landlock and seccomp would hold the calling thread only.
        raise ConfinementError(f"apply: {threads} threads are running; confine before starting any")
    results: dict[str, str] = {}
    if parsed.parent_pid is None:
        results["pdeathsig"] = NOT_NEEDED
    else:
        parent_pid = parsed.parent_pid
        results["pdeathsig"] = _attempt(parsed, "pdeathsig", lambda: _die_with_parent(parent_pid))
    root = _kernel_uid() == 0
    processes = parsed.limits.get("processes")
    own_userns = _namespaces(parsed, processes is not None and not root, results)
    results.update(_landlock(parsed))
    results["rlimits"] = _attempt(parsed, "rlimits", lambda: _set_limits(parsed.limits))
    results["processes"] = _processes(parsed, processes, root, own_userns)
    results["seccomp"] = _attempt(parsed, "seccomp", lambda: _install_seccomp(parsed))
    if parsed.strict:
        _refuse_missing(parsed, results)
    return {layer: results[layer] for layer in LAYERS}


def _apply_elsewhere(policy: _Policy) -> dict[str, str]:
    results = dict.fromkeys(LAYERS, _UNAVAILABLE + "not Linux")
    results["rlimits"] = _attempt(policy, "rlimits", lambda: _set_limits(policy.limits))
    if policy.strict:
        _refuse_missing(policy, results)
    return results


def _attempt(policy: _Policy, layer: str, action: Callable[[], object]) -> str:
    if layer in policy.disable:
        return _UNAVAILABLE + _DISABLED
    try:
        action()
    except (_Unavailable, OSError, ValueError) as error:
        return f"{_UNAVAILABLE}{error}"
    return ACTIVE


def _needed(policy: _Policy, results: dict[str, str]) -> dict[str, bool]:
    return {
        "pdeathsig": policy.parent_pid is not None,
        "namespaces": not policy.net,
        "landlock-fs": not (policy.read_all and policy.write_all),
        "landlock-net": policy.net and policy.net_ports is not None,
        "landlock-scope": policy.run,
        "rlimits": True,
        "processes": "processes" in policy.limits
        and (policy.run or results.get("seccomp") != ACTIVE),
        "seccomp": True,
    }


def _refuse_missing(policy: _Policy, results: dict[str, str]) -> None:
    needed = _needed(policy, results)
    for layer in LAYERS:
        if needed[layer] and results[layer].startswith(_UNAVAILABLE):
            raise ConfinementError(f"{layer}: {results[layer][len(_UNAVAILABLE) :]}")


# --- policy ------------------------------------------------------------------------------------


def _parse(policy: object) -> _Policy:
    if not isinstance(policy, dict):
        raise ConfinementError(f"policy: must be an object, not {type(policy).__name__}")
    unknown = sorted(set(policy) - _POLICY_KEYS)
    if unknown:
        raise ConfinementError(f"policy: unknown keys {unknown}")
    disable = frozenset(_strings(policy, "disable"))
    if not disable <= set(LAYERS):
        raise ConfinementError(f"policy: 'disable' names no layer: {sorted(disable - set(LAYERS))}")
    parent_pid = policy.get("parent_pid")
    if parent_pid is not None and not _is_int(parent_pid):
        raise ConfinementError("policy: 'parent_pid' must be an integer or null")
    return _Policy(
        parent_pid=parent_pid,
        limits=_limits(policy.get("limits")),
        net=_flag(policy, "net"),
        net_ports=_ports(policy.get("net_ports")),
        read=_strings(policy, "read"),
        write=_strings(policy, "write"),
        read_all=_flag(policy, "read_all"),
        write_all=_flag(policy, "write_all"),
        run=_flag(policy, "run"),
        strict=_flag(policy, "strict"),
        disable=disable,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(policy: dict[object, object], key: str) -> bool:
    value = policy.get(key, False)
    if not isinstance(value, bool):
        raise ConfinementError(f"policy: {key!r} must be true or false")
    return value


def _strings(policy: dict[object, object], key: str) -> tuple[str, ...]:
    value = policy.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfinementError(f"policy: {key!r} must be a list of strings")
    return tuple(value)


def _ports(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_int(port) and 0 < port < 65536 for port in value):
        raise ConfinementError("policy: 'net_ports' must be null or a list of TCP ports")
    return tuple(value)


def _limits(value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfinementError("policy: 'limits' must be an object")
    unknown = sorted(set(value) - _LIMITS)
    if unknown:
        raise ConfinementError(f"policy: unknown limits {unknown}")
    limits: dict[str, float] = {}
    for name, limit in value.items():
        if limit is None:
            continue
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or not limit >= 0:
            raise ConfinementError(f"policy: limit {name!r} must be a number >= 0 or null")
        limits[name] = limit
    return limits


# --- libc ----------------------------------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _checked(result: int, what: str) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
    return result


def _syscall(name: str, number: int, *args: int) -> int:
    arguments = (ctypes.c_ulong(arg) for arg in args)
    return _checked(int(_libc().syscall(ctypes.c_long(number), *arguments)), name)


def _prctl(what: str, option: int, *args: int) -> None:
    arguments = [ctypes.c_ulong(arg) for arg in (*args, 0, 0, 0, 0)[:4]]
    _checked(int(_libc().prctl(ctypes.c_int(option), *arguments)), what)


# --- pdeathsig and namespaces ------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    _prctl("PR_SET_PDEATHSIG", _PR_SET_PDEATHSIG, signal.SIGKILL)
    # A parent that died before the prctl sends no signal: die as the signal would have made us.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def _kernel_uid() -> int:
    """Our uid as the parent user namespace sees it (the kernel's, outside nested namespaces)."""
    uid = os.getuid()
    with open("/proc/self/uid_map") as uid_map:
        for line in uid_map:
            inside, outside, count = (int(field) for field in line.split())
            if inside <= uid < inside + count:
                return outside + uid - inside
    return uid


def _namespaces(policy: _Policy, for_processes: bool, results: dict[str, str]) -> str | None:
    """Enter the namespaces the policy calls for; the reason we are not in our own user
    namespace, or None when we are."""
    if not policy.net:
        results["namespaces"] = _attempt(
            policy, "namespaces", lambda: _enter_namespaces(with_net=True)
        )
        return None if results["namespaces"] == ACTIVE else results["namespaces"]
    results["namespaces"] = NOT_NEEDED
    if not for_processes:
        return "no user namespace was needed"
    entered = _attempt(policy, "namespaces", lambda: _enter_namespaces(with_net=False))
    return None if entered == ACTIVE else entered


def _enter_namespaces(*, with_net: bool) -> None:
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWUSER | (_CLONE_NEWNET if with_net else 0)
    _checked(int(_libc().unshare(ctypes.c_int(flags))), "unshare")
    # An unprivileged process may map its gid only once setgroups is denied for good.
    _write_proc("setgroups", "deny")
    _write_proc("uid_map", f"{uid} {uid} 1\n")
    _write_proc("gid_map", f"{gid} {gid} 1\n")


def _write_proc(name: str, text: str) -> None:
    with open(f"/proc/self/{name}", "w") as file:
        file.write(text)


# --- Landlock ------------------------------------------------------------------------------------


def _landlock_abi() -> int:
    try:
        return _syscall(
            "landlock_create_ruleset",
            _LANDLOCK_CREATE_RULESET,
            0,
            0,
            _LANDLOCK_CREATE_RULESET_VERSION,
        )
    except OSError as error:
        if error.errno == errno.ENOSYS:
            raise _Unavailable(
                "no Landlock in this kernel (or a seccomp filter hides it)"
            ) from None
        if error.errno == errno.EOPNOTSUPP:
            raise _Unavailable("Landlock is not enabled (the lsm= boot parameter)") from None
        raise _Unavailable(f"Landlock: {error}") from None


def _fs_rights(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _landlock(policy: _Policy) -> dict[str, str]:
    """The three Landlock layers, applied as one ruleset."""
    wanted = {
        "landlock-fs": not (policy.read_all and policy.write_all),
        # Beside the namespace when net is false, so the layer also holds without it.
        "landlock-net": not policy.net or policy.net_ports is not None,
        "landlock-scope": True,
    }
    results = {layer: NOT_NEEDED for layer, want in wanted.items() if not want}
    results.update(
        {
            layer: _UNAVAILABLE + _DISABLED
            for layer, want in wanted.items()
            if want and layer in policy.disable
        }
    )
    pending = [layer for layer in wanted if layer not in results]
    if not pending:
        return results
    try:
        abi = _landlock_abi()
    except _Unavailable as error:
        return {**results, **dict.fromkeys(pending, f"{_UNAVAILABLE}{error}")}
    for layer, needs, what in (
        ("landlock-net", _NET_ABI, "network rules"),
        ("landlock-scope", _SCOPE_ABI, "scopes"),
    ):
        if layer in pending and abi < needs:
            results[layer] = f"{_UNAVAILABLE}Landlock ABI {abi} has no {what} (ABI {needs})"
            pending.remove(layer)
    if not pending:
        return results
    fs = _handled_fs(policy, abi) if "landlock-fs" in pending else 0
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if "landlock-net" in pending else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if "landlock-scope" in pending else 0
    try:
        _restrict(policy, fs, net, scoped)
    except OSError as error:
        return {**results, **dict.fromkeys(pending, f"{_UNAVAILABLE}{error}")}
    return {**results, **dict.fromkeys(pending, ACTIVE)}


def _handled_fs(policy: _Policy, abi: int) -> int:
    handled = _fs_rights(abi)
    if policy.read_all:
        handled &= ~_FS_READ
    if policy.write_all:
        handled &= _FS_READ
    return handled


def _restrict(policy: _Policy, fs: int, net: int, scoped: int) -> None:
    # The kernel takes a longer struct than it knows as long as the fields it lacks are zero,
    # which they are: fs, net and scoped were each masked by the ABI already.
    attr = _buffer(struct.pack("=QQQ", fs, net, scoped))
    ruleset = _syscall(
        "landlock_create_ruleset",
        _LANDLOCK_CREATE_RULESET,
        ctypes.addressof(attr),
        ctypes.sizeof(attr),
        0,
    )
    try:
        if fs:
            read = [*policy.read, *interpreter_paths(), *(_NET_PATHS if policy.net else ())]
            for path in read:
                _allow_path(ruleset, path, fs & _FS_READ)
            for path in [*policy.write, *_SINKS]:
                _allow_path(ruleset, path, fs)
        for port in _allowed_ports(policy) if net else ():
            rule = _buffer(struct.pack("=QQ", _NET_CONNECT_TCP, port))
            _add_rule(ruleset, _RULE_NET_PORT, rule)
        _prctl("PR_SET_NO_NEW_PRIVS", _PR_SET_NO_NEW_PRIVS, 1)
        _syscall("landlock_restrict_self", _LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)


def _allowed_ports(policy: _Policy) -> tuple[int, ...]:
    if not policy.net or policy.net_ports is None:
        return ()
    return policy.net_ports


def _allow_path(ruleset: int, path: str, access: int) -> None:
    """Allow ``access`` beneath ``path``; a path that is missing or that we may not reach grants
    nothing, so it is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FS_FILE
        if access:
            rule = _buffer(struct.pack("=Qi", access, fd))
            _add_rule(ruleset, _RULE_PATH_BENEATH, rule)
    finally:
        # A rule holds an inode, and procfs makes a new one for /proc/<pid> each time its dentry
        # is evicted (under memory pressure), which would drop the rule without a word. The open
        # descriptor pins the dentry; it stays open for the worker's life.
        if path not in _PINNED:
            os.close(fd)


def _add_rule(ruleset: int, kind: int, rule: ctypes.Array[ctypes.c_char]) -> None:
    _syscall("landlock_add_rule", _LANDLOCK_ADD_RULE, ruleset, kind, ctypes.addressof(rule), 0)


def _buffer(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data, len(data))


# --- rlimits -------------------------------------------------------------------------------------


def _set_limits(limits: dict[str, float]) -> None:
    _lower(resource.RLIMIT_CORE, 0)
    if "memory_mb" in limits:
        _lower(resource.RLIMIT_AS, int(limits["memory_mb"] * _MIB))
    if "cpu_seconds" in limits:
        seconds = max(1, math.ceil(limits["cpu_seconds"]))
        # SIGXCPU at the soft limit can be caught or ignored; the hard limit's SIGKILL cannot.
        _lower(resource.RLIMIT_CPU, seconds, seconds + 1)
    if "open_files" in limits:
        _lower(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if "file_size_mb" in limits:
        _lower(resource.RLIMIT_FSIZE, int(limits["file_size_mb"] * _MIB))


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit in force (raising it would take a privilege)."""
    hard = soft if hard is None else hard
    current = resource.getrlimit(which)[1]
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
    resource.setrlimit(which, (min(soft, hard), hard))


def _processes(policy: _Policy, processes: float | None, root: bool, own_userns: str | None) -> str:
    if processes is None:
        return NOT_NEEDED
    if "processes" in policy.disable:
        return _UNAVAILABLE + _DISABLED
    if root:
        return _UNAVAILABLE + "the kernel does not apply RLIMIT_NPROC to uid 0"
    if own_userns is not None:
        reason = own_userns.removeprefix(_UNAVAILABLE)
        return f"{_UNAVAILABLE}it needs the worker's own user namespace ({reason})"
    return _attempt(policy, "processes", lambda: _lower(resource.RLIMIT_NPROC, int(processes)))


# --- seccomp -------------------------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _install_seccomp(policy: _Policy) -> None:
    machine = os.uname().machine
    if machine not in _SYSCALLS or sys.byteorder != "little":
        raise _Unavailable(f"no syscall table for {machine} here")
    program = _seccomp_program(machine, net=policy.net, run=policy.run, pid=os.getpid())
    code = _buffer(b"".join(struct.pack("=HBBI", *instruction) for instruction in program))
    fprog = _SockFprog(len(program), ctypes.addressof(code))
    _prctl("PR_SET_NO_NEW_PRIVS", _PR_SET_NO_NEW_PRIVS, 1)
    _prctl("PR_SET_SECCOMP", _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def _seccomp_program(machine: str, *, net: bool, run: bool, pid: int) -> list[Instruction]:
    numbers = _SYSCALLS[machine]
    program = [
        (_BPF_LD_W_ABS, 0, 0, _DATA_ARCH),
        # A syscall of another ABI (int 0x80 on x86_64) has other numbers: refuse them all.
        (_BPF_JEQ, 1, 0, _AUDIT_ARCH[machine]),
        _ret_errno(errno.EPERM),
        (_BPF_LD_W_ABS, 0, 0, _DATA_NR),
    ]
    if machine == "x86_64":
        # x32 calls share x86_64's audit arch; their numbers carry this bit and match no rule.
        program += [(_BPF_JGE, 0, 1, _X32_SYSCALL_BIT), _ret_errno(errno.EPERM)]
    for name in ("ptrace", "process_vm_readv", "process_vm_writev"):
        program += _deny(numbers[name], errno.EPERM)
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        program += _deny(numbers[name], errno.EPERM)
    # In its own user namespace the worker holds every capability there: no new namespaces,
    # mounts, keyrings, BPF programs, perf events or userfaultfd, the usual ways from there to
    # the kernel's less trodden code.
    for name in _NEVER:
        program += _deny(numbers[name], errno.EPERM)
    if not net:
        # No new socket at all: a unix socket could reach the host's services by path (Landlock
        # does not govern connect). A connected pair reaches nothing outside the worker.
        program += _deny(numbers["socket"], errno.EACCES)
        program += _allow_only(numbers["socketpair"], _BPF_JEQ, 1, errno.EACCES)  # AF_UNIX
    if not run:
        for name in ("execve", "execveat", "fork", "vfork", "tkill", "pidfd_send_signal"):
            if name in numbers:
                program += _deny(numbers[name], errno.EPERM)
        program += _allow_only(numbers["clone"], _BPF_JSET, _CLONE_THREAD, errno.EPERM)
        program += _deny(numbers["clone3"], errno.ENOSYS)
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            program += _allow_only(numbers[name], _BPF_JEQ, pid, errno.EPERM)
    program.append((_BPF_RET, 0, 0, _RET_ALLOW))
    return program


def _ret_errno(number: int) -> Instruction:
    return (_BPF_RET, 0, 0, _RET_ERRNO | number)


def _deny(number: int, error: int) -> list[Instruction]:
    return [(_BPF_JEQ, 0, 1, number), _ret_errno(error)]


def _allow_only(number: int, test: int, value: int, error: int) -> list[Instruction]:
    """Syscall ``number`` passes when the low word of its first argument passes ``test`` against
    ``value``, and otherwise fails with ``error``. The low word is all there is to look at: the
    argument is an int the kernel truncates to 32 bits (a family, a pid), or clone's flags,
    where CLONE_THREAD is. Every path through the block returns, so no block reloads the
    syscall number."""
    return [
        (_BPF_JEQ, 0, 4, number),
        (_BPF_LD_W_ABS, 0, 0, _DATA_ARGS),
        (test, 1, 0, value),
        _ret_errno(error),
        (_BPF_RET, 0, 0, _RET_ALLOW),
    ]
