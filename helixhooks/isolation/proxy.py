"""The host's side of a process plugin: an ordinary plugin object whose hookimpls call its worker.

The registry, the dispatch layer, metrics, activation, swap and draining see a plugin object like
any other: each hook the worker reported becomes a real function with the same name and argument
names, marked with ``hookimpl`` and the same options, so pluggy validates and prunes arguments as
for an in-process plugin. Only data crosses, as JSON.

The worker lives while the plugin serves: ``helix_stop`` ends it, and ``helix_init`` or
``helix_start`` start a new one when it is gone (after a stop, or a crash), replaying the last
``helix_init`` so the new worker starts from where the old one did.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import keyword
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import (
    HelixError,
    LoadError,
    RemoteError,
    ResourceExceeded,
    UnsendableValue,
    WorkerCrashed,
)
from ..markers import hookimpl
from ..plugin import PluginCandidate, PluginContext
from ..security import PermissionSet, net_scope
from . import wire
from .worker_process import WorkerProcess

CrashHandler = Callable[[str, "ProcessPlugin", HelixError], None]

# Lifecycle hooks run under load_timeout and get ``ctx`` as data; the rest under call_timeout.
_LIFECYCLE = frozenset(
    {"helix_init", "helix_start", "helix_stop", "helix_save_state", "helix_restore_state"}
)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What running programs needs readable (and executable): the programs, their libraries, and the
# dynamic linker's cache. A run scope still names which programs the guard lets through.
_PROGRAM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/ld.so.cache")
_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "tryfirst": bool,
    "trylast": bool,
    "optionalhook": bool,
    "specname": (str, type(None)),
}


class ProcessPlugin:
    """Plugin ``name`` running in a worker process; its hooks are attributes of this object."""

    def __init__(
        self,
        name: str,
        load: Mapping[str, Any],
        *,
        env: Mapping[str, str],
        data_dir: str,
        config: Config,
        on_crash: CrashHandler | None = None,
    ) -> None:
        self.name = name
        self.config = config
        #: Told of a worker that died while serving (not one the plugin's stop ended).
        self.on_crash = on_crash
        self._load, self._env, self._data_dir = dict(load), dict(env), data_dir
        self._init_args: tuple[Any, ...] | None = None
        self.worker: WorkerProcess | None = None
        hello = self._start_worker().hello
        self.hooks: tuple[str, ...] = tuple(self._install(hello["hooks"]))
        self._defaults()

    @property
    def layers(self) -> Mapping[str, str]:
        """Each confinement layer of the current worker: active, not needed, or unavailable."""
        worker = self.worker
        return dict(worker.hello.get("layers") or {}) if worker is not None else {}

    def _start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            self.name,
            self._load,
            env=self._env,
            cwd=self._data_dir,
            timeout=self.config.load_timeout,
            on_exit=self._exited,
        )
        if worker.hello.get("op") == "refused":
            error = worker.hello.get("error") or {}
            stage = worker.hello.get("stage", "start")
            raise LoadError(
                f"its worker refused to {_STAGES.get(stage, stage)}: "
                f"{error.get('type')}: {error.get('message')}",
                plugin=self.name,
                hint=_HINTS.get(stage, "see the plugin's log for the worker's output"),
            )
        self.worker = worker
        return worker

    def _exited(self, worker: WorkerProcess, error: HelixError) -> None:
        if worker is self.worker and self.on_crash is not None:
            self.on_crash(self.name, self, error)

    def _install(self, hooks: object) -> list[str]:
        if not isinstance(hooks, list):
            raise self._misdescribed(hooks)
        names = []
        for description in hooks:
            attribute, argnames, opts = _checked(description)
            if attribute is None:
                raise self._misdescribed(description)
            setattr(self, attribute, self._remote(attribute, argnames, opts))
            names.append(attribute)
        return names

    def _misdescribed(self, what: object) -> LoadError:
        return LoadError(
            f"its worker described its hooks as {str(what)[:200]!r}",
            plugin=self.name,
            hint="the worker is not helixhooks' own, or a different version of it",
        )

    def _defaults(self) -> None:
        """The lifecycle hooks that start and end workers, for a plugin without them too."""
        if "helix_init" not in self.hooks:
            self.helix_init = _marked("helix_init", ("config", "ctx"), {}, self._ensure_worker_init)
        if "helix_start" not in self.hooks:
            self.helix_start = _marked("helix_start", ("ctx",), {}, lambda ctx: self._ensure())
        if "helix_stop" not in self.hooks:
            self.helix_stop = _marked("helix_stop", (), {}, self.close)

    def _remote(
        self, attribute: str, argnames: tuple[str, ...], opts: dict[str, Any]
    ) -> Callable[..., Any]:
        hook = opts.get("specname") or attribute
        if not hook.startswith("helix_"):
            return _capability(attribute, hook, argnames, opts, self._send)
        call = functools.partial(self._call, attribute, hook, argnames)
        if hook == "helix_init":
            return _marked(attribute, argnames, opts, self._remote_init(call))
        return _marked(attribute, argnames, opts, call)

    def _send(self, message: dict[str, Any], hook: str) -> Any:
        """A host hook's call (no ``ctx``, under call_timeout): the hot path, kept short."""
        worker = self.worker
        if worker is None:
            raise WorkerCrashed("its worker is not running", plugin=self.name)
        try:
            reply = worker.request(message, self.config.call_timeout, phase=f"call {hook}")
        except (TypeError, ValueError, RecursionError, wire.ProtocolError) as exc:
            raise _unsendable(self.name, hook, message, exc) from None
        if "error" in reply:
            raise _remote_error(self.name, hook, reply["error"], self.config)
        return reply.get("ok")

    def _remote_init(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def init(*args: Any) -> Any:
            self._init_args = args
            if self.worker is None or self.worker.ended is not None:
                self._respawn(replay=False)
            return call(*args)

        return init

    def _ensure_worker_init(self, config: object, ctx: object) -> None:
        self._init_args = None
        self._ensure()

    def _ensure(self) -> None:
        if self.worker is None or self.worker.ended is not None:
            self._respawn(replay=True)

    def _respawn(self, *, replay: bool) -> None:
        hello = self._start_worker().hello
        described = [_checked(d)[0] for d in hello.get("hooks") or ()]
        if sorted(map(str, described)) != sorted(self.hooks):
            raise LoadError(
                "its code on disk has other hooks than the loaded version's",
                plugin=self.name,
                hint="reload the plugin to take its new code",
            )
        if replay and self._init_args is not None:
            self._call("helix_init", "helix_init", _init_names(self), *self._init_args)

    def _call(self, attribute: str, hook: str, argnames: tuple[str, ...], *args: Any) -> Any:
        if hook == "helix_start":
            self._ensure()
        worker = self.worker
        assert worker is not None
        message: dict[str, Any] = {"op": "call", "hook": attribute, "args": {}}
        for argname, value in zip(argnames, args, strict=True):
            if argname == "ctx" and isinstance(value, PluginContext):
                message["ctx"] = _context(value)
            else:
                message["args"][argname] = value
        if hook in _LIFECYCLE:
            timeout: float | None = self.config.load_timeout
        elif hook == "helix_health_check":
            timeout = self.config.health_timeout
        else:
            timeout = self.config.call_timeout
        try:
            phase = hook.removeprefix("helix_") if hook in _LIFECYCLE else f"call {hook}"
            reply = worker.request(message, timeout, phase=phase)
        except (TypeError, ValueError, RecursionError, wire.ProtocolError) as exc:
            raise _unsendable(self.name, hook, message, exc) from None
        if hook == "helix_stop":
            worker.stop(self.config.load_timeout)
        if "error" in reply:
            raise _remote_error(self.name, hook, reply["error"], self.config)
        return reply.get("ok")

    def ping(self) -> None:
        """One round trip to the worker, within health_timeout: it is alive and answering."""
        worker = self.worker
        if worker is None:
            raise WorkerCrashed("its worker is not running", plugin=self.name)
        worker.request({"op": "ping"}, self.config.health_timeout, phase="health check")

    def close(self) -> None:
        """End the worker, if one runs: the plugin is unloaded."""
        worker = self.worker
        if worker is not None and worker.ended is None:
            worker.stop(self.config.load_timeout)

    def __repr__(self) -> str:
        worker = self.worker
        pid = worker.pid if worker is not None and worker.ended is None else None
        return f"<ProcessPlugin {self.name!r} worker pid={pid}>"


_STAGES = {"confine": "confine itself", "import": "import the plugin", "start": "start"}
_HINTS = {
    "confine": "a confinement layer the host requires (Config.strict) is missing here; see "
    "Sandbox.capabilities(), or turn strict off",
    "import": "fix the error above in the plugin's code",
}


def _init_names(plugin: ProcessPlugin) -> tuple[str, ...]:
    function = getattr(plugin, "helix_init")  # noqa: B009 - set per instance, by _install
    return tuple(inspect.signature(function).parameters)


def _marked(
    name: str, argnames: Sequence[str], opts: Mapping[str, Any], call: Callable[..., Any]
) -> Callable[..., Any]:
    """A function ``name(<argnames>)`` calling ``call`` with them, marked as a hookimpl.

    Generated, as pluggy reads argument names from the code object; every name is an identifier
    not starting with ``_`` (see _identifier), so the source cannot be anything but this.
    """
    params = ", ".join(argnames)
    source = f"def {name}({params}):\n    return _call({params})\n"
    namespace: dict[str, Any] = {"_call": call}
    exec(compile(source, f"<process hook {name}>", "exec"), namespace)
    marked: Callable[..., Any] = hookimpl(**opts)(namespace[name])
    return marked


def _capability(
    attribute: str,
    hook: str,
    argnames: Sequence[str],
    opts: Mapping[str, Any],
    send: Callable[[dict[str, Any], str], Any],
) -> Callable[..., Any]:
    """``attribute(<argnames>)`` building its message as a literal: no loop, no lookups.

    Every name is an identifier not starting with ``_`` (see _identifier), embedded with repr.
    """
    params = ", ".join(argnames)
    args = ", ".join(f"{name!r}: {name}" for name in argnames)
    source = (
        f"def {attribute}({params}):\n"
        f"    return _send({{'op': 'call', 'hook': {attribute!r}, 'args': {{{args}}}}}, {hook!r})\n"
    )
    namespace: dict[str, Any] = {"_send": send}
    exec(compile(source, f"<process hook {attribute}>", "exec"), namespace)
    marked: Callable[..., Any] = hookimpl(**opts)(namespace[attribute])
    return marked


def _checked(description: object) -> tuple[str | None, tuple[str, ...], dict[str, Any]]:
    """A worker's description of one hook, or (None, ...) if the host cannot take it as given."""
    if not isinstance(description, dict):
        return None, (), {}
    attribute, argnames, opts = (
        description.get("attribute"),
        description.get("args"),
        description.get("opts"),
    )
    if not _identifier(attribute) or not isinstance(argnames, list):
        return None, (), {}
    if not all(_identifier(arg) for arg in argnames) or len(set(argnames)) != len(argnames):
        return None, (), {}
    if not isinstance(opts, dict) or any(
        key not in _OPTIONS or not isinstance(value, _OPTIONS[key]) for key, value in opts.items()
    ):
        return None, (), {}
    if opts.get("specname") is not None and not _identifier(opts["specname"]):
        return None, (), {}
    return str(attribute), tuple(argnames), dict(opts)


def _identifier(text: object) -> bool:
    # Never a dunder or private name: setattr on the proxy must not touch its own machinery.
    return (
        isinstance(text, str)
        and text.isidentifier()
        and not keyword.iskeyword(text)
        and not text.startswith("_")
    )


def _context(ctx: PluginContext) -> dict[str, Any]:
    return {
        "name": ctx.name,
        "version": ctx.version,
        "config": dict(ctx.config),
        "path": None if ctx.path is None else os.fspath(ctx.path),
        "handover": ctx.handover,
    }


def _unsendable(
    plugin: str, hook: str, message: Mapping[str, Any], exc: Exception
) -> UnsendableValue:
    culprit = "its arguments"
    for argname, value in message["args"].items():
        try:
            wire.encode(value)
        except (TypeError, ValueError, RecursionError, wire.ProtocolError):
            culprit = f"argument {argname!r} ({type(value).__name__})"
            break
    else:
        if "ctx" in message:
            culprit = "ctx.config (the plugin's config)"
    return UnsendableValue(
        f"hook {hook!r}: {culprit} cannot be sent to its worker: {exc}",
        plugin=plugin,
        hint="a process plugin takes and returns JSON data only: None, bool, int, float, str, "
        "list and dict with str keys; pass such data instead",
    )


def _remote_error(plugin: str, hook: str, error: object, config: Config) -> Exception:
    if not isinstance(error, dict):
        error = {"type": "Exception", "message": str(error)[:2000]}
    type_name = str(error.get("type"))
    message = str(error.get("message"))[:10_000]
    if type_name == "MemoryError":
        limit = config.limits.memory_mb
        return ResourceExceeded(
            f"hook {hook!r} ran out of memory in its worker (limits.memory_mb = {limit})",
            plugin=plugin,
            hint="raise limits.memory_mb in the host's Config, or make the plugin use less",
        )
    cls = _remote_class(type_name)
    exc = cls(f"hook {hook!r} raised {type_name}: {message}", plugin=plugin)
    exc.error_type = type_name
    exc.remote_traceback = str(error.get("traceback") or "")[:100_000]
    return exc


@functools.cache
def _remote_class(type_name: str) -> type[RemoteError]:
    """RemoteError, also an instance of the built-in exception the worker raised (if it was one),
    so a host's ``except KeyError`` works for a process plugin as for an in-process one."""
    builtin = getattr(builtins, type_name, None)
    if not (isinstance(builtin, type) and issubclass(builtin, Exception)):
        return RemoteError
    try:
        cls = type(f"Remote{type_name}", (RemoteError, builtin), {"__module__": __name__})
        cls("probe", plugin="probe")
    except TypeError:  # a layout or constructor the mix cannot take (UnicodeDecodeError, say)
        return RemoteError
    return cls


def data_dir(config: Config, name: str) -> str:
    """The plugin's own directory: its worker's working directory, always writable by it."""
    root = config.data_dir or Path(tempfile.gettempdir()) / f"helixhooks-{os.getuid()}"
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.fspath(path.resolve())


def start(
    candidate: PluginCandidate,
    permissions: PermissionSet,
    config: Config,
    on_crash: CrashHandler | None = None,
) -> ProcessPlugin:
    """Start ``candidate`` in a confined worker and return its proxy (raises LoadError)."""
    info = candidate.info
    directory = data_dir(config, info.name)
    entry_point = candidate.entry_point
    load: dict[str, Any] = {
        "op": "load",
        "protocol": wire.PROTOCOL,
        "plugin": info.name,
        "version": info.version,
        "sys_path": _import_path(),
        "policy": policy(candidate, permissions, config, directory),
        "net_scopes": _host_scopes(permissions),
        "run_scopes": permissions.scopes("run") if "run" in permissions.names else None,
    }
    if entry_point is not None:
        load.update(kind="entry_point", module=entry_point.module, entry=entry_point.attr or None)
    else:
        # Absolute: the worker's working directory is its data directory, not the host's.
        path = os.path.abspath(candidate.fspath or "")
        load.update(kind=candidate.kind, path=path, entry=info.entry)
    # tempfile's choice, inside what the worker may write (Landlock keeps it out of /tmp).
    temporary = os.path.join(directory, "tmp")
    os.makedirs(temporary, exist_ok=True)
    return ProcessPlugin(
        info.name,
        load,
        env={**_environment(permissions), "TMPDIR": temporary},
        data_dir=directory,
        config=config,
        on_crash=on_crash,
    )


def _import_path() -> list[str]:
    """The host's sys.path for the worker, less the host's working directory (which ``python
    -m`` and ``""`` put there): the worker's is its data directory, and every entry is readable
    to it, so a host started from its home must not hand the plugin its home."""
    here = os.getcwd()
    paths = (os.path.abspath(p) for p in sys.path if p)
    return list(dict.fromkeys(p for p in paths if p != here))


def policy(
    candidate: PluginCandidate, permissions: PermissionSet, config: Config, directory: str
) -> dict[str, Any]:
    """What confine.apply holds the worker to: the plugin's permissions and the host's limits."""
    limits = config.limits
    net = permissions.scopes("net") if "net" in permissions.names else ()
    read = permissions.scopes("read") if "read" in permissions.names else ()
    write = permissions.scopes("write") if "write" in permissions.names else ()
    ports = None if net is None else sorted({p for s in net if (p := net_scope(s)[1]) is not None})
    if net and any(net_scope(s)[1] is None for s in net):
        ports = None  # a scope without a port: any port of that host, which the kernel cannot say
    location = os.path.abspath(candidate.fspath) if candidate.fspath else None
    return {
        "parent_pid": os.getpid(),
        "limits": {
            "memory_mb": limits.memory_mb,
            "cpu_seconds": limits.cpu_seconds,
            "open_files": limits.open_files,
            "file_size_mb": limits.file_size_mb,
            "processes": limits.processes,
        },
        "net": "net" in permissions.names,
        "net_ports": ports,
        # helixhooks itself too: an editable install imports it from outside sys.path.
        "read": [
            *(read or ()),
            *([location] if location else []),
            directory,
            _PACKAGE_ROOT,
            *(_PROGRAM_DIRS if "run" in permissions.names else ()),
        ],
        "write": [*(write or ()), directory],
        "read_all": read is None,
        "write_all": write is None,
        "run": "run" in permissions.names,
        "strict": config.strict,
    }


def _host_scopes(permissions: PermissionSet) -> list[list[Any]] | None:
    if "net" not in permissions.names:
        return None
    scopes = permissions.scopes("net")
    if scopes is None:
        return None
    return [list(net_scope(scope)) for scope in scopes if not scope.startswith(("/", "\0"))]


def _environment(permissions: PermissionSet) -> dict[str, str]:
    """Only the variables the plugin may read: a host's secrets stay in the host."""
    if "env" not in permissions.names:
        return {}
    scopes = permissions.scopes("env")
    if scopes is None:
        return dict(os.environ)
    return {name: os.environ[name] for name in scopes if name in os.environ}
