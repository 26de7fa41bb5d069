"""The in-process guard: one audit hook (PEP 578) holding plugins to the permissions they have.

Which plugin is acting is read from the stack when an audited event fires: the innermost frame
whose module is a plugin's. Nothing is set around the calls into plugins, so the hook calls on
the hot path pay nothing for the guard (a context variable set and reset around every impl cost
more than pluggy's own loop per impl). The stack also attributes what a context variable would
miss: a callback the plugin handed to the host, a thread whose target is the plugin's function.
A thread a plugin starts is tagged with it (the ``_thread.start_new_thread`` event), so a thread
running host or library code on its behalf is held to its permissions too. ``Sandbox.execute``
names the plugin explicitly, for host code run on a plugin's behalf.

The hook is C where ``helixhooks._audit`` was built: it calls ``_audit`` only while some plugin is
admitted, only for the events in ``_CHECKS``, and only when a plugin may be acting by
``_acting_owner``'s rules, which it applies in C to the same state. So every other audited event
in the process (``id()`` raises one) costs next to nothing, and so does walking the stack for the
host's own checked events (its writes, renames, reads), with no plugin on it. Where it was not
built, ``_audit`` is the hook itself.

It stops mistakes and records violations; it is not a security boundary (docs/security.md).
Audit hooks cannot be removed, so there is one per process, installed on first use; each
PluginSystem registers its plugins' modules with it and takes them out again.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import attrs

from ._source_import import PRIVATE_PACKAGE
from .errors import PermissionDenied, ReloadError
from .security import PermissionSet, Sandbox

if TYPE_CHECKING:
    from .plugin import PluginCandidate

_PRIVATE = PRIVATE_PACKAGE + "."
# A private module name's first four parts name one generation of one plugin.
_PRIVATE_PARTS = 4


@attrs.frozen(eq=False)
class Owner:
    """A plugin generation as the guard knows it: its permissions, whom to tell of a denial.

    ``candidate`` (None for ``Sandbox.execute``) is where its own files are, which it may read.
    """

    name: str
    permissions: PermissionSet
    on_denied: Callable[[PermissionDenied], None]
    candidate: PluginCandidate | None = None
    generation: int = 0
    root: str = ""


# module root (a generation's private package, or an installed plugin's top-level package)
# -> its plugin. Changed in place under the lock, one key at a time: the hook's lookups are
# single dict operations, which need no lock, and admitting n plugins stays O(n).
_roots: dict[str, Owner] = {}
_roots_lock = threading.Lock()
_installed = False
# Plugins admitted plus Sandbox.execute calls under way: with none, every event returns at once.
_engaged = 0
_acting: contextvars.ContextVar[Owner | None] = contextvars.ContextVar(
    "helixhooks_acting", default=None
)
_state = threading.local()


def admit(root: str, owner: Owner) -> None:
    """Hold the code of module ``root`` (and below) to ``owner``'s permissions."""
    _install()
    with _roots_lock:
        replaced = _roots.get(root)
        if replaced is not None:
            _count_reads(replaced, -1)
        _roots[root] = owner
        _count_reads(owner, +1)
        _count_engaged()


def release(root: str, owner: Owner) -> None:
    """Forget module ``root``, if it is still ``owner``'s (an installed plugin's new
    generation may have taken it over)."""
    with _roots_lock:
        if _roots.get(root) is owner:
            del _roots[root]
            _count_reads(owner, -1)
            _count_engaged()


@contextmanager
def acting_as(owner: Owner) -> Iterator[None]:
    """Attribute what runs inside to ``owner`` where no plugin frame is on the stack."""
    global _executing
    _install()
    token = _acting.set(owner)
    with _roots_lock:
        _executing += 1
        _count_reads(owner, +1)
        _count_engaged()
    try:
        yield
    finally:
        _acting.reset(token)
        with _roots_lock:
            _executing -= 1
            _count_reads(owner, -1)
            _count_engaged()


_executing = 0
# Admitted owners that declare read scopes: with none, reads are not looked at.
_read_scoped = 0


def _count_engaged() -> None:
    global _engaged, _owner_of
    _engaged = len(_roots) + _executing
    _owner_of = {}
    if _set_engaged is not None:
        _set_engaged(_engaged > 0, _read_scoped > 0)


def _count_reads(owner: Owner, change: int) -> None:
    global _read_scoped
    if "read" in owner.permissions.names:
        _read_scoped += change


# helixhooks._audit's switch, and what tells it that threads have tags to look for, when its C
# hook is the one installed (see _install).
_set_engaged: Callable[[bool, bool], None] | None = None
_note_tag: Callable[[], None] | None = None


def _install() -> None:
    global _installed, _set_engaged, _note_tag
    if not _installed:
        with _roots_lock:
            if not _installed:
                try:
                    from . import _audit as front
                except ImportError:
                    # Not built (no compiler at install time, a free-threaded build): the same
                    # checks, but every audited event in the process pays a call into Python.
                    sys.addaudithook(_audit)
                else:
                    # A C hook that calls _audit only while engaged, for the events in _CHECKS,
                    # when a plugin may be acting by _acting_owner's rules, which it applies to
                    # the same state: _module_owner's answers, the thread's tag as
                    # threading.current_thread() finds it (in threading._active), _acting. Like
                    # _audit, it lets reads (listings, opens for reading) go while no plugin
                    # admitted declares read scopes.
                    reads = tuple(name for name, check in _CHECKS.items() if check is _listing)
                    threads = vars(threading)["_active"]
                    front.install(
                        _audit, tuple(_CHECKS), reads, _module_owner, _acting, threads, _TAG
                    )
                    _set_engaged, _note_tag = front.set_engaged, front.note_tag
                if sys.version_info < (3, 12):
                    # No audit event for a thread's start before 3.12: tag it in start().
                    start = _tagging_start(threading.Thread.start)
                    threading.Thread.start = start  # type: ignore[method-assign,assignment,unused-ignore]
                _installed = True


def _tagging_start(start: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    def tagged_start(self: threading.Thread) -> None:
        # Only a thread not started yet: start() refuses the others (the host's main thread
        # among them), which must not be tagged as the plugin's on the way.
        if _engaged and self.ident is None:
            _tag(self, sys._getframe(0).f_back)
        start(self)

    return tagged_start


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audited event in the process: the common cases return first.
    if not _engaged:
        return
    check = _CHECKS.get(event)
    if check is None or (
        not _read_scoped and (check is _listing or (check is _open and not _writes(args)))
    ):
        return
    if getattr(_state, "busy", False):
        return
    # Whatever the check itself does (paths resolved, names looked up) is not the plugin's.
    _state.busy = True
    try:
        if event in _THREAD_STARTS:
            thread = getattr(args[0], "__self__", None)
            if isinstance(thread, threading.Thread):
                _tag(thread, sys._getframe(0).f_back)
            return
        asked = check(args)
        if not _read_scoped:
            # No plugin is held to read scopes: a read (every import makes some) is no one's
            # business, and it skips the walk up the stack.
            asked = [entry for entry in asked if entry[0] != "read"]
        if not asked:
            return
        # f_back, not _getframe(1): an event raised with no Python frame under it (a C function
        # run as a thread's target) has none.
        caller = sys._getframe(0).f_back
        owner = _acting_owner(caller)
        if owner is None:
            return
        for permission, target in asked:
            if not _allowed(owner, permission, target):
                _deny(owner, permission, target, quietly=_caching_bytecode(caller))
    finally:
        _state.busy = False


def _acting_owner(frame: FrameType | None) -> Owner | None:
    """The plugin whose code is innermost on the stack from ``frame``, else the thread's."""
    owners = _owner_of
    while frame is not None:
        name = frame.f_globals.get("__name__")
        owner = owners.get(name, _UNSEEN)
        if owner is _UNSEEN:
            owner = owners[name] = _module_owner(name)
        if owner is not None:
            return owner  # type: ignore[return-value]  # not _UNSEEN, checked above
        frame = frame.f_back
    tagged: Owner | None = getattr(threading.current_thread(), _TAG, None)
    return tagged if tagged is not None else _acting.get()


def _module_owner(name: object) -> Owner | None:
    if not isinstance(name, str):
        return None
    if name.startswith(_PRIVATE):
        return _roots.get(".".join(name.split(".", _PRIVATE_PARTS)[:_PRIVATE_PARTS]))
    return _roots.get(name.partition(".")[0])


# module name -> its plugin's owner, or None: a walk up the stack looks each frame's module up
# once. Replaced, not cleared, when the roots change (a walk under way keeps the old one).
_owner_of: dict[object, object] = {}
_UNSEEN = object()


def _tag(thread: threading.Thread, frame: FrameType | None) -> None:
    """A thread started by a plugin acts for it, whatever code it runs."""
    if thread.name.startswith("helixhooks-"):
        return  # the host's own workers, which run many plugins' calls
    owner = _acting_owner(frame)
    if owner is not None:
        setattr(thread, _TAG, owner)
        if _note_tag is not None:
            _note_tag()


# The attribute of a thread a plugin started: that plugin's owner.
_TAG = "_helix_owner"


def _allowed(owner: Owner, permission: str, target: object) -> bool:
    if target is _WHOLE:
        return any(p.name == permission and p.scope is None for p in owner.permissions)
    if permission == "read":
        if "read" not in owner.permissions.names:
            # Reads are held to scopes only by a plugin that declares some: importing a module
            # reads files, and a plugin that says nothing about reading may read.
            return True
        if _python_owns(target, owner):
            return True
    return owner.permissions.allows(permission, target, resolve=_resolve)


def _deny(owner: Owner, permission: str, target: object, *, quietly: bool = False) -> None:
    error = PermissionDenied(owner.name, permission, _show(target))
    if not quietly:
        owner.on_denied(error)
    raise error


def _caching_bytecode(frame: FrameType | None) -> bool:
    """Whether the import system is writing a module's bytecode cache for the plugin.

    Refused like any write (a plugin could otherwise plant bytecode the host runs later), but
    quietly: the import goes on from source, as for any unwritable cache (PermissionDenied is a
    PermissionError), and it is housekeeping, not the plugin's doing.
    """
    return (
        frame is not None
        and frame.f_code.co_name in _BYTECODE_WRITERS
        and frame.f_globals.get("__name__") == "importlib._bootstrap_external"
    )


_BYTECODE_WRITERS = frozenset({"set_data", "_write_atomic"})


def _show(target: object) -> str | None:
    if target is None or target is _WHOLE:
        return None
    if target is _UNKNOWN:
        return "<a path relative to a directory fd>"
    if isinstance(target, tuple) and len(target) >= 2:
        host = str(target[0])
        return f"[{host}]:{target[1]}" if ":" in host else f"{host}:{target[1]}"
    return os.fsdecode(target) if isinstance(target, (str, bytes)) else str(target)


def _python_owns(target: object, owner: Owner) -> bool:
    """A read any plugin may make: Python's own files (imports) and the plugin's own."""
    if not isinstance(target, (str, bytes)):
        return True
    path = os.path.realpath(os.fsdecode(target))
    directory = base_directory(owner.candidate) if owner.candidate is not None else None
    own = [directory] if directory else []
    return any(path == p or path.startswith(p + os.sep) for p in (*own, *_python_dirs()))


@functools.cache
def _python_dirs() -> tuple[str, ...]:
    """Python's own trees (stdlib, site-packages): where imports read from."""
    import sysconfig

    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    found.update(sysconfig.get_paths().values())
    return tuple(os.path.realpath(d) for d in found if d)


_RESOLVED: dict[str, frozenset[str]] = {}


def _resolve(host: str) -> frozenset[str]:
    """The addresses ``host`` resolves to, cached for the process (a scope's own host names)."""
    found = _RESOLVED.get(host)
    if found is None:
        import socket

        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            infos = []
        found = _RESOLVED[host] = frozenset(str(info[4][0]) for info in infos)
    return found


# -- what each audited event asks for -----------------------------------------------------------

Check = Callable[[tuple[Any, ...]], list[tuple[str, object]]]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _writes(args: tuple[Any, ...]) -> bool:
    """Whether an "open" event (path, mode, flags) opens for writing."""
    mode = args[1]
    if isinstance(mode, str):
        return bool(mode.strip("rbtU"))  # what is left is "w", "a", "x" or "+"
    return bool((args[2] or 0) & _WRITE_FLAGS)


def _open(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    path = args[0]
    if isinstance(path, int) or path is None:
        return []  # an fd already open: what opened it was checked
    return [("write" if _writes(args) else "read", path)]


def _net(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    address = args[1] if len(args) > 1 else None
    return [("net", address)]


def _lookup(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    host = args[0]
    if isinstance(host, bytes):
        host = host.decode("idna", "replace")
    if host is None:
        return []
    port = args[1] if len(args) > 1 and isinstance(args[1], int) else None
    return [("net", (host, port) if port is not None else host)]


def _paths(*positions: int | tuple[int, int], permission: str = "write") -> Check:
    """Checks the paths at ``positions``; (path, dir_fd) pairs name where a relative path is."""

    def check(args: tuple[Any, ...]) -> list[tuple[str, object]]:
        found: list[tuple[str, object]] = []
        for position in positions:
            at, fd_at = position if isinstance(position, tuple) else (position, None)
            path = args[at] if at < len(args) else None
            if path is None and permission == "read":
                path = "."  # a listing of the working directory
            if not isinstance(path, (str, bytes, os.PathLike)):
                continue  # an fd: what opened it was checked
            dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
            found.append((permission, _under(path, dir_fd)))
        return found

    return check


def _under(path: str | bytes | os.PathLike[Any], dir_fd: object) -> object:
    """``path`` as the kernel will find it: a relative one under ``dir_fd`` when there is one."""
    text = os.fsdecode(path)
    if not isinstance(dir_fd, int) or os.path.isabs(text):
        return text
    try:
        return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
    except OSError:
        return _UNKNOWN  # cannot tell where it lands: only an unscoped permission allows it


def _program(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    # subprocess fills in the executable (argv[0], or the shell with shell=True) before this.
    return [("run", os.fsdecode(args[0]))]


def _shell(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    # The command line is the shell's to read: what it runs cannot be told from its first word.
    return [("run", "/bin/sh")]


def _sqlite(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    database = args[0]
    if isinstance(database, (bytes, os.PathLike)):
        database = os.fsdecode(database)
    if not isinstance(database, str) or database in ("", ":memory:"):
        return []
    if database.startswith("file:"):
        database = database[len("file:") :].partition("?")[0]
        if database in ("", ":memory:"):
            return []
    return [("write", database)]


def _path_program(position: int) -> Check:
    def check(args: tuple[Any, ...]) -> list[tuple[str, object]]:
        return [("run", os.fsdecode(args[position]))]

    return check


def _anything(permission: str) -> Check:
    def check(args: tuple[Any, ...]) -> list[tuple[str, object]]:
        return [(permission, None)]

    return check


def _whole(permission: str) -> Check:
    """What only the unscoped permission allows: no scope names it (a fork, a signal)."""

    def check(args: tuple[Any, ...]) -> list[tuple[str, object]]:
        return [(permission, _WHOLE)]

    return check


_listing = _paths(0, permission="read")

# Targets no scope matches: only the permission granted whole allows them.
_WHOLE = object()
_UNKNOWN = object()


def _env(args: tuple[Any, ...]) -> list[tuple[str, object]]:
    return [("env", os.fsdecode(args[0]))]


_THREAD_STARTS = frozenset({"_thread.start_new_thread", "_thread.start_joinable_thread"})

_CHECKS: dict[str, Check] = {
    # These tag the thread instead (see _audit); 3.12 names one, 3.13 the other.
    "_thread.start_new_thread": lambda args: [],
    "_thread.start_joinable_thread": lambda args: [],
    "open": _open,
    "socket.connect": _net,
    "socket.bind": _net,
    "socket.sendto": _net,
    "socket.sendmsg": _net,
    "socket.getaddrinfo": _lookup,
    "socket.gethostbyname": _lookup,
    "socket.gethostbyaddr": _lookup,
    "socket.getnameinfo": lambda args: [("net", args[0])],
    "os.remove": _paths((0, 1)),
    "os.rename": _paths((0, 2), (1, 3)),
    "os.mkdir": _paths((0, 2)),
    "os.rmdir": _paths((0, 1)),
    "os.chmod": _paths((0, 2)),
    "os.chown": _paths((0, 3)),
    "os.chflags": _paths(0),
    "os.lchflags": _paths(0),
    "os.symlink": _paths((1, 2)),
    # A hard link to a file is a way to write it: the file linked needs write too.
    "os.link": _paths((0, 2), (1, 3)),
    "os.truncate": _paths(0),
    "os.utime": _paths((0, 3)),
    "os.setxattr": _paths(0),
    "os.removexattr": _paths(0),
    "shutil.rmtree": _paths((0, 1)),
    "shutil.copyfile": _paths(1),
    "shutil.copymode": _paths(1),
    "shutil.copystat": _paths(1),
    "shutil.copytree": _paths(1),
    "shutil.move": _paths(0, 1),
    "shutil.chown": _paths(0),
    "shutil.make_archive": _paths(0),
    "shutil.unpack_archive": _paths(1),
    "subprocess.Popen": _program,
    "os.system": _shell,
    "os.exec": _path_program(0),
    "os.posix_spawn": _path_program(0),
    "os.spawn": _path_program(1),
    "os.fork": _whole("run"),
    "os.forkpty": _whole("run"),
    "os.kill": _whole("run"),
    "os.killpg": _whole("run"),
    "signal.pthread_kill": _whole("run"),
    "os.listdir": _listing,
    "os.scandir": _listing,
    "sqlite3.connect": _sqlite,
    "os.putenv": _env,
    "os.unsetenv": _env,
    "ctypes.dlopen": _anything("ffi"),
    "ctypes.dlsym": _anything("ffi"),
    "ctypes.dlsym/handle": _anything("ffi"),
    "ctypes.cdata": _anything("ffi"),
    "ctypes.call_function": _anything("ffi"),
    "ctypes.string_at": _anything("ffi"),
    "ctypes.wstring_at": _anything("ffi"),
    "ctypes.PyObj_FromPtr": _anything("ffi"),
    "sys.addaudithook": _anything("sys"),
    "sys.setprofile": _anything("sys"),
    "sys.settrace": _anything("sys"),
}


# -- one host's side ----------------------------------------------------------------------------


class PluginGuard:
    """One host's side of the guard: each plugin generation's modules, held to its permissions.

    The Sandbox learns what each generation runs with when it is admitted (a request beyond the
    host's grants is a LoadError then, before any of its code runs); with ``enforce`` off
    (``Config.sandbox_enabled`` false) that is all, and no event is checked.
    """

    def __init__(self, sandbox: Sandbox, *, enforce: bool = True) -> None:
        self.sandbox = sandbox
        self.enforce = enforce
        self._lock = threading.Lock()
        # name -> the owners of its loaded generations, oldest first (almost always one)
        self._generations: dict[str, tuple[Owner, ...]] = {}

    def admit(self, candidate: PluginCandidate, generation: int, root: str) -> None:
        """Before generation ``generation`` of a plugin runs any code: what it may do."""
        name = candidate.info.name
        permissions = self._register(candidate)
        owner = Owner(name, permissions, self.sandbox.on_denied, candidate, generation, root)
        with self._lock:
            self._generations[name] = (*self._generations.get(name, ()), owner)
        if self.enforce:
            admit(root, owner)

    def release(self, name: str, generation: int) -> None:
        """After a generation is unloaded; the Sandbox goes back to the newest one left."""
        with self._lock:
            owners = self._generations.get(name, ())
            gone = [owner for owner in owners if owner.generation == generation]
            left = tuple(owner for owner in owners if owner.generation != generation)
            if left:
                self._generations[name] = left
            else:
                self._generations.pop(name, None)
        if not gone:
            return
        if self.enforce:
            release(gone[0].root, gone[0])
        if left:
            self._register(left[-1].candidate)  # type: ignore[arg-type]  # admitted ones have one
        else:
            self.sandbox.forget(name)

    def _register(self, candidate: PluginCandidate) -> PermissionSet:
        # Most plugins ask for nothing, and finding their directory costs a system call each.
        base = base_directory(candidate) if candidate.info.permissions else None
        return self.sandbox.register(candidate.info, base)

    def refuse_widening(self, candidate: PluginCandidate) -> None:
        """A new version that asks for more than the running one has needs the host's consent.

        The browser-extension rule: an update does not widen a plugin's permissions silently.
        With ``Config.grants`` set, the grants are that consent (admission checks them); without,
        a reload asking for more is refused.
        """
        info = candidate.info
        if self.sandbox.config.grants is not None:
            return
        wanted = PermissionSet.parse(
            info.permissions, plugin=info.name, base=base_directory(candidate)
        )
        added = wanted.added_since(self.sandbox.permissions(info.name))
        if added:
            listed = ", ".join(map(str, added))
            raise ReloadError(
                f"the new version asks for more permissions ({listed}) than the running one has",
                plugin=info.name,
                path=candidate.location,
                hint=f"grant them in the host's Config.grants[{info.name!r}] to consent, or "
                "drop them from the new version's permissions",
            )


def base_directory(candidate: PluginCandidate) -> str | None:
    """Where a plugin's relative permission paths start: its directory (or its package's)."""
    source = candidate.source
    if isinstance(source, Path):
        directory = source if candidate.kind == "directory" else source.parent
        return os.path.realpath(directory)
    import importlib.util

    try:
        spec = importlib.util.find_spec(source.module.partition(".")[0])
    except (ImportError, ValueError):
        return None
    locations = spec.submodule_search_locations if spec is not None else None
    return os.path.realpath(locations[0]) if locations else None
