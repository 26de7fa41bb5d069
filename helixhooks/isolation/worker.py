"""The process tier's worker: confine this process, import one plugin, answer the host's frames.

The host runs ``python -I -X utf8 .../isolation/worker.py FD``, FD being its end of a socketpair.
Standard library only, and its siblings (wire.py, confine.py) are loaded by path: it must run
before anything of the plugin's is imported, and under another interpreter than the host's, where
helixhooks may not be installed. The host's first frame says what to load and how to confine it:

- ``plugin``, ``version``: the plugin's name and version;
- ``kind``: "directory", "file" or "entry_point"; ``path`` (directory or file) or ``module``;
  ``entry``: "module:Attr" (directory), "Attr" (file or entry point) or None;
- ``sys_path``: where imports are looked up (``-I`` left only the standard library);
- ``policy``: confine.apply's policy; ``net_scopes``: [[host, port or None], ...] when the net
  permission is scoped by host (the kernel only knows ports; see _NetGuard); ``run_scopes``:
  the programs a scoped run grant allows (the kernel allows exec or not; see _RunGuard).

Requests are served one at a time, in order; the host waits for each answer with its own time limit.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import ipaddress
import logging
import os
import socket
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_MODULE = "_helix_plugin"
_MARK = "helixhooks_impl"  # the attribute pluggy's HookimplMarker("helixhooks") sets
_WRAPPING = ("wrapper", "hookwrapper")
_PASSED = ("tryfirst", "trylast", "optionalhook", "specname")  # what the host's proxy marks


def _sibling(name: str) -> types.ModuleType:
    """wire.py or confine.py, by path: importing the helixhooks package would import pluggy."""
    qualified = f"_helix_{name}"
    module = sys.modules.get(qualified)
    if module is None:
        spec = importlib.util.spec_from_file_location(qualified, os.path.join(_HERE, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return module


wire = _sibling("wire")


class Context:
    """What a process plugin's lifecycle hooks get as ``ctx``: PluginContext's data, no relay.

    ``hook`` is None: a process plugin cannot call other plugins (their code is not here).
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.name: str = data["name"]
        self.version: str = data["version"]
        self.config: Mapping[str, Any] = types.MappingProxyType(dict(data.get("config") or {}))
        path = data.get("path")
        self.path = Path(path) if path is not None else None
        self.data_dir = Path(os.getcwd())
        self.handover: bool = bool(data.get("handover"))
        self.hook = None

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"helixhooks.plugin.{self.name}")

    def __repr__(self) -> str:
        return f"Context(name={self.name!r}, version={self.version!r}, handover={self.handover})"


class _NetGuard:
    """Holds a host-scoped net grant to its hosts: the kernel's rules only know ports.

    A lookup of a name is allowed when a scope names it (any port: a lookup has none that
    matters); a connection to an address when a scope is that address, or when the plugin got
    the address from a lookup allowed here — so ``net=api.example.com:443`` follows the name's
    real addresses without the worker resolving anything on its own.
    """

    def __init__(self, scopes: list[tuple[str, int | None]]) -> None:
        self.scopes = scopes
        self.looked_up: dict[str, set[int | None]] = {}
        self._addresses: dict[str, set[str]] = {}

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.getaddrinfo":
            host = _host_text(args[0])
            ports = {port for scope, port in self.scopes if scope == host}
            if not ports:
                raise PermissionError(f"permission 'net={host}' denied")
            self.looked_up.setdefault(host, set()).update(ports)
        elif event in ("socket.connect", "socket.sendto"):
            address = args[1]
            if not isinstance(address, tuple) or len(address) < 2:
                return  # a unix socket: no host to hold it to (seccomp and Landlock decide)
            host, port = _host_text(address[0]), address[1]
            if not self._allows(host, port):
                raise PermissionError(f"permission 'net={host}:{port}' denied")

    def _allows(self, host: str, port: int) -> bool:
        if any(scope == host and allowed in (None, port) for scope, allowed in self.scopes):
            return True
        if self.looked_up:
            self._learn()
        return any(
            host in addresses and allowed in (None, port)
            for name, addresses in self._addresses.items()
            for allowed in self.looked_up.get(name, ())
        )

    def _learn(self) -> None:
        # The lookups were allowed, and answered by the same resolver the plugin used.
        for name in self.looked_up:
            if name not in self._addresses:
                try:
                    found = socket.getaddrinfo(name, None)
                except OSError:
                    found = []
                self._addresses[name] = {str(info[4][0]) for info in found}


class _RunGuard:
    """Holds a program-scoped run grant to its programs: the kernel allows exec or not at all."""

    _EVENTS = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"})

    def __init__(self, scopes: list[str]) -> None:
        self.scopes = scopes

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in self._EVENTS:
            return
        program: Any
        if event == "os.system":
            program = "/bin/sh"
        elif event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            program = executable or (argv if isinstance(argv, (str, bytes)) else argv[0])
        else:
            program = args[0]
        given = os.fsdecode(program)
        real = os.path.realpath(given) if os.sep in given else None
        name = os.path.basename(given)
        if not any(real == s if os.sep in s else name == s for s in self.scopes):
            raise PermissionError(f"permission 'run={name}' denied")


def _host_text(host: object) -> str:
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text.lower().rstrip(".")


def _import_plugin(load: Mapping[str, Any]) -> object:
    kind, entry = load["kind"], load.get("entry")
    if kind == "entry_point":
        module = importlib.import_module(load["module"])
        return _entry_object(module, entry)
    path = load["path"]
    if kind == "file":
        spec = importlib.util.spec_from_file_location(_MODULE, path)
    else:
        init = os.path.join(path, "__init__.py")
        if os.path.exists(init):
            spec = importlib.util.spec_from_file_location(
                _MODULE, init, submodule_search_locations=[path]
            )
        else:  # a package without __init__.py: only its submodules hold code
            spec = importlib.machinery.ModuleSpec(_MODULE, None, is_package=True)
            spec.submodule_search_locations = [path]
    if spec is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module
    if spec.loader is not None:
        spec.loader.exec_module(module)
    if kind == "directory":
        module_name, _, attribute = (entry or "__init__").partition(":")
        if module_name != "__init__":
            module = importlib.import_module(f"{_MODULE}.{module_name}")
        return _entry_object(module, attribute or None)
    return _entry_object(module, entry)


def _entry_object(module: types.ModuleType, attribute: str | None) -> object:
    if not attribute:
        return module
    found = module
    for part in attribute.split("."):
        found = getattr(found, part)
    return found() if inspect.isclass(found) else found


def _hookimpls(plugin: object) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    """attribute name -> (the impl, its description for the host)."""
    found: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
    for attribute in dir(plugin):
        try:
            method = getattr(plugin, attribute)
        except Exception:  # noqa: BLE001 - pluggy skips what it cannot read; so do we
            continue
        opts = getattr(method, _MARK, None) if inspect.isroutine(method) else None
        if not isinstance(opts, dict):
            continue
        if any(opts.get(key) for key in _WRAPPING):
            raise TypeError(
                f"hook {attribute!r} is a wrapper; a wrapper cannot run in another process "
                "than the calls it wraps"
            )
        found[attribute] = (
            method,
            {
                "attribute": attribute,
                "args": _argnames(method),
                "opts": {k: opts[k] for k in _PASSED if k in opts},
            },
        )
    return found


def _argnames(function: Callable[..., Any]) -> list[str]:
    """The arguments pluggy passes: positional ones without a default (``self`` already bound)."""
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


def _error(exc: BaseException, hook: str | None = None) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "hook": hook,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def _serve(channel: Any, impls: Mapping[str, tuple[Callable[..., Any], Any]]) -> int:
    while True:
        try:
            request = channel.receive()
        except wire.ChannelClosed:
            return 0  # the host went away: nothing left to serve
        ident, op = request.get("id"), request.get("op")
        if op == "call":
            reply = _call(ident, impls, request)
        elif op == "ping":
            reply = {"id": ident, "ok": os.getpid()}
        elif op == "stop":
            channel.send({"id": ident, "ok": None})
            return 0
        else:
            reply = {"id": ident, "error": _error(wire.ProtocolError(f"unknown op {op!r}"))}
        try:
            channel.send(reply)
        except (TypeError, ValueError, RecursionError, wire.ProtocolError) as exc:
            hook = request.get("hook")
            cannot = TypeError(f"hook {hook!r} returned a value JSON cannot carry: {exc}")
            channel.send({"id": ident, "error": _error(cannot, hook)})


def _call(ident: object, impls: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    hook = request.get("hook")
    if not isinstance(hook, str) or hook not in impls:
        return {"id": ident, "error": _error(LookupError(f"no hook {hook!r}"), hook)}
    function, _ = impls[hook]
    args = dict(request.get("args") or {})
    if "ctx" in request:
        args["ctx"] = Context(request["ctx"])
    try:
        return {"id": ident, "ok": function(**args)}
    except BaseException as exc:  # noqa: BLE001 - the plugin's error, reported to the host
        return {"id": ident, "error": _error(exc, hook)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    channel = wire.Channel(socket.socket(fileno=int(argv[1])))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    load = channel.receive()
    if load.get("op") != "load" or load.get("protocol") != wire.PROTOCOL:
        channel.send({"op": "refused", "error": _error(wire.ProtocolError(f"bad load {load!r}"))})
        return 2
    # Before confining: the read rules cover where imports are looked up.
    sys.path[:] = load["sys_path"]
    try:
        layers = _sibling("confine").apply(load["policy"])
    except Exception as exc:  # noqa: BLE001 - ConfinementError, or a layer failing: reported
        channel.send({"op": "refused", "stage": "confine", "error": _error(exc)})
        return 3
    scopes = load.get("net_scopes")
    if scopes:
        sys.addaudithook(_NetGuard([(_host_text(h), p) for h, p in scopes]))
    if load.get("run_scopes"):
        sys.addaudithook(_RunGuard(list(load["run_scopes"])))
    try:
        impls = _hookimpls(_import_plugin(load))
    except BaseException as exc:  # noqa: BLE001 - the plugin's import failing: reported
        channel.send({"op": "refused", "stage": "import", "error": _error(exc)})
        return 4
    channel.send(
        {
            "op": "hello",
            "protocol": wire.PROTOCOL,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "layers": layers,
            "hooks": [description for _, description in impls.values()],
        }
    )
    return _serve(channel, impls)


if __name__ == "__main__":
    sys.exit(main())
