"""Permissions as Deno names them, what each plugin is granted, and the host's Sandbox policy.

A permission is a name and an optional scope: ``net[=host[:port]]``, ``read[=path]``,
``write[=path]``, ``env[=VAR]``, ``run[=program]``, ``ffi``, ``sys`` (``network`` is ``net``).
Everything not granted is denied.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

import attrs

from .errors import LoadError, ManifestError, PermissionDenied, PluginTimeout

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

    from .config import Config
    from .plugin import PluginInfo

NAMES = ("net", "read", "write", "env", "run", "ffi", "sys")
ALIASES = {"network": "net"}
_SCOPELESS = frozenset({"ffi", "sys"})
_PATHS = frozenset({"read", "write"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r"[0-9]+")
_NET_HINT = (
    "write net alone for every host, or net=host, net=host:port or net=[ipv6]:port, "
    "e.g. net=api.example.com:443"
)
_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)

logger = logging.getLogger("helixhooks.security")

Resolver = Callable[[str], Collection[str]]
T = TypeVar("T")


@attrs.frozen
class Permission:
    """One permission: a canonical name and a scope (None: all of it). Build with ``parse``.

    A parsed scope is canonical, so equal permissions compare equal: a net host is lowercase
    without a trailing dot, an IP address is in its short form (IPv6 in brackets, an
    IPv4-mapped one as IPv4), a net scope starting with ``/`` or NUL is a unix socket path kept
    as written, and read, write and path-like run scopes are absolute real paths.
    """

    name: str
    scope: str | None = None

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        plugin: str | None = None,
        base: str | os.PathLike[str] | None = None,
    ) -> Permission:
        """Parse ``text``; relative paths are taken from ``base`` (None: the working directory).

        Paths are resolved (``~``, ``..``, symlinks) now, so later matching compares real paths.
        """
        name, scope = check_syntax(text, plugin=plugin)
        if scope is not None and (name in _PATHS or (name == "run" and _is_path(scope))):
            scope = _real_path(scope, base)
        return cls(name, scope)

    def covers(self, other: Permission) -> bool:
        """Whether granting this permission grants ``other`` too (no name is resolved here)."""
        if self.name != other.name:
            return False
        if self.scope is None:
            return True
        if other.scope is None:
            return False
        if self.name == "net":
            host, port = net_scope(self.scope)
            other_host, other_port = net_scope(other.scope)
            return host == other_host and port in (None, other_port)
        if self.name in _PATHS:
            return _within(other.scope, self.scope)
        if self.name == "run" and not _is_path(self.scope):
            other_name = os.path.basename(other.scope) if _is_path(other.scope) else other.scope
            return other_name == self.scope
        return self.scope == other.scope

    def __str__(self) -> str:
        return self.name if self.scope is None else f"{self.name}={self.scope}"


def check_syntax(text: str, *, plugin: str | None = None) -> tuple[str, str | None]:
    """The canonical name and scope of ``text``, paths left as written; a ManifestError if bad.

    This is what manifest validation can afford: no file system access, and each distinct
    string is parsed once however many manifests repeat it.
    """
    try:
        return _parse(text)
    except ManifestError as exc:
        raise ManifestError(exc.message, plugin=plugin, hint=exc.hint) from exc.__cause__


# Failures are not cached: they name the plugin at fault.
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[str, str | None]:
    written, eq, scope = text.partition("=")
    name = ALIASES.get(written, written)
    if name not in NAMES:
        import difflib  # only a mistake needs it

        known = sorted([*NAMES, *ALIASES])
        close = difflib.get_close_matches(written, known, n=1)
        raise ManifestError(
            f"unknown permission {written!r}" + (f" in {text!r}" if eq else ""),
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + "permissions are "
            + ", ".join(known),
        )
    if not eq:
        return name, None
    if name in _SCOPELESS:
        raise ManifestError(
            f"permission {text!r}: {name} takes no scope", hint=f"write {name!r} alone"
        )
    if not scope.strip():
        raise ManifestError(
            f"permission {text!r} has an empty scope",
            hint=f"write {name!r} alone for all of it, or give a scope after '='",
        )
    if "\0" in scope and not (name == "net" and scope.startswith("\0")):
        raise ManifestError(
            f"permission {text!r} contains a NUL character", hint="remove the NUL character"
        )
    if name == "net":
        try:
            host, port = net_scope(scope)
        except ValueError as exc:
            raise ManifestError(f"permission {text!r}: {exc}", hint=_NET_HINT) from None
        return name, _render_net(host, port)
    if name == "env" and not _ENV_NAME.fullmatch(scope):
        raise ManifestError(
            f"permission {text!r}: {scope!r} is not an environment variable name",
            hint="use letters, digits and '_', not starting with a digit, e.g. env=HOME",
        )
    return name, scope


@functools.lru_cache(maxsize=4096)
def net_scope(scope: str) -> tuple[str, int | None]:
    """``(host, port)`` of a net scope: a canonical host, or a unix socket path with no port."""
    if scope.startswith(("/", "\0")):
        return scope, None
    if scope.startswith("["):
        inside, closed, rest = scope[1:].partition("]")
        if not closed:
            raise ValueError(f"'[' has no closing ']' in {scope!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{rest!r} follows the address; only ':port' may")
        address = _ip(inside)
        if address is None or ":" not in inside:
            raise ValueError(f"{inside!r} in brackets is not an IPv6 address")
        return str(address), (_port(rest[1:]) if rest else None)
    if scope.count(":") > 1:
        raise ValueError(f"IPv6 address {scope!r} must be in brackets, e.g. [::1]:8080")
    host, colon, port = scope.partition(":")
    if not host:
        raise ValueError(f"no host before ':{port}'")
    return _host(host), (_port(port) if colon else None)


def _host(text: str) -> str:
    host = text.lower().removesuffix(".")
    if host.replace(".", "").isdigit():
        address = _ip(host)
        if address is None:
            raise ValueError(f"{text!r} is not an IPv4 address")
        return str(address)
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{text!r} is not a host name or an IP address")
    return host


def _port(text: str) -> int:
    if not text:
        raise ValueError("no port after ':'")
    if not _PORT.fullmatch(text):
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not in 1..65535")
    return port


def _render_net(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith(("/", "\0")) else host
    return shown if port is None else f"{shown}:{port}"


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> IPv4Address | IPv6Address | None:
    """``text`` as an IP address (an IPv4-mapped IPv6 one as IPv4), or None if it is not one."""
    # Imported here: hosts with only named scopes never need it, and it is slow to import.
    import ipaddress

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_path(program: str) -> bool:
    """Whether a run scope names a path (resolved at parse) rather than a program name."""
    return program.startswith("~") or _has_separator(program)


def _has_separator(path: str) -> bool:
    return any(sep in path for sep in _SEPARATORS)


def _real_path(path: str, base: str | os.PathLike[str] | None) -> str:
    path = os.path.expanduser(path)
    if base is not None:
        path = os.path.join(base, path)  # an absolute path stays as it is
    return os.path.realpath(path)


def _within(path: str, scope: str) -> bool:
    """Whether ``path`` is ``scope`` or below it: whole components, "/data" holds no "/data2"."""
    if path == scope:
        return True
    return path.startswith(scope if scope.endswith(_SEPARATORS) else scope + os.sep)


def _net_target(target: object) -> tuple[str, int | None] | None:
    """``(host, port)`` of a net target as the scopes spell them; None if it cannot be read."""
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if isinstance(target, tuple) and len(target) >= 2:
        host, port = target[0], target[1]
        if not isinstance(host, str) or not isinstance(port, int):
            return None
    elif isinstance(target, str):
        if target.startswith(("/", "\0")):
            return target, None
        if target.count(":") > 1 and not target.startswith("["):
            host, port = target, None  # a bare IPv6 address
        else:
            try:
                return net_scope(target)
            except ValueError:
                return None
    else:
        return None
    address = _ip(host)
    return (str(address) if address else host.lower().removesuffix(".")), port


@attrs.frozen
class PermissionSet:
    """The permissions a plugin asks for or is granted; it allows nothing it does not list."""

    permissions: tuple[Permission, ...] = ()
    # What every allows() call looks up: each name's scopes, or None when it is granted whole.
    _scopes: Mapping[str, tuple[str, ...] | None] = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        scopes: dict[str, tuple[str, ...] | None] = {}
        for permission in self.permissions:
            name, scope = permission.name, permission.scope
            if scope is None:
                scopes[name] = None
            elif name not in scopes or scopes[name] is not None:
                scopes[name] = (*(scopes.get(name) or ()), scope)
        object.__setattr__(self, "_scopes", scopes)

    @classmethod
    def parse(
        cls,
        texts: Iterable[str],
        *,
        plugin: str | None = None,
        base: str | os.PathLike[str] | None = None,
    ) -> PermissionSet:
        """Parse each of ``texts`` (see Permission.parse); duplicates are kept once."""
        parsed = tuple(
            dict.fromkeys(Permission.parse(text, plugin=plugin, base=base) for text in texts)
        )
        # Most plugins ask for nothing: they share one empty set.
        return cls(parsed) if parsed or cls is not PermissionSet else _NOTHING

    def allows(self, name: str, target: object = None, *, resolve: Resolver | None = None) -> bool:
        """Whether this set permits ``name`` on ``target``; ``target=None``: in any scope.

        net: ``target`` is ``"host:port"``, ``"[ipv6]:port"``, a socket address tuple
        ``(host, port, ...)``, or a unix socket path (``/...`` or ``\\0...``, matched only by
        ``net`` or a scope equal to it). A target without a port is a name lookup, which any
        scope of that host allows whatever its port (a connection always has a port; unlike
        ``covers``, where a request without a port asks for every port). A scope naming a host
        also allows the addresses ``resolve(host)`` returns (None: names only); an IP scope
        allows that address only.
        read/write: the real path of ``target`` (``..`` and symlinks resolved) must be the scope
        or below it. env: the variable's exact name. run: a name scope allows a program of that
        name at any path, a path scope that real path only. ffi, sys: ``target`` is ignored.
        A target that cannot be read is denied.
        """
        name = _canonical(name)
        if name not in self._scopes:
            return False
        scopes = self._scopes[name]
        if scopes is None or target is None:
            return True
        if name == "net":
            return _allows_net(scopes, target, resolve)
        if name == "env":
            return target in scopes
        if not isinstance(target, (str, bytes, os.PathLike)):
            return False
        given = os.fsdecode(target)
        try:
            if name in _PATHS:
                real = os.path.realpath(given)
                return any(_within(real, scope) for scope in scopes)
            return _allows_run(scopes, given)
        except ValueError:  # a NUL in the path: no file has that name
            return False

    def scopes(self, name: str) -> tuple[str, ...] | None:
        """The scopes ``name`` is granted in (None: any); KeyError if it is not granted at all."""
        return self._scopes[_canonical(name)]

    @property
    def names(self) -> Collection[str]:
        """The permission names this set has, in any scope."""
        return self._scopes.keys()

    def uncovered_by(self, grants: PermissionSet) -> tuple[Permission, ...]:
        """The permissions of this set that no permission in ``grants`` covers."""
        return tuple(p for p in self.permissions if not any(g.covers(p) for g in grants))

    def added_since(self, older: PermissionSet) -> tuple[Permission, ...]:
        """What this set asks for beyond ``older``: an update that widens its permissions."""
        return self.uncovered_by(older)

    def __bool__(self) -> bool:
        return bool(self.permissions)

    def __iter__(self) -> Iterator[Permission]:
        return iter(self.permissions)

    def __str__(self) -> str:
        return ", ".join(map(str, self.permissions))


_NOTHING = PermissionSet()


def _canonical(name: str) -> str:
    canonical = ALIASES.get(name, name)
    if canonical not in NAMES:
        scoped = " (pass the scope as the target)" if "=" in name else ""
        known = ", ".join([*NAMES, *ALIASES])
        raise ValueError(f"unknown permission {name!r}{scoped}; permissions are {known}")
    return canonical


def _allows_run(scopes: tuple[str, ...], given: str) -> bool:
    program = os.path.basename(given)
    # A bare program name is looked up on PATH, not taken from the working directory.
    real = os.path.realpath(given) if _has_separator(given) else None
    return any(real == scope if _is_path(scope) else program == scope for scope in scopes)


def _allows_net(scopes: tuple[str, ...], target: object, resolve: Resolver | None) -> bool:
    wanted = _net_target(target)
    if wanted is None:
        return False
    host, port = wanted
    address = _ip(host)
    for scope in scopes:
        scope_host, scope_port = net_scope(scope)
        if port is not None and scope_port not in (None, port):
            continue
        if scope_host == host:
            return True
        named = not scope_host.startswith(("/", "\0")) and _ip(scope_host) is None
        if address is not None and resolve is not None and named:
            try:
                resolved = resolve(scope_host)
            except OSError:  # a name that does not resolve has no addresses
                continue
            if address in {_ip(item) for item in resolved}:
                return True
    return False


def granted(info: PluginInfo, config: Config, base: str | os.PathLike[str] | None) -> PermissionSet:
    """What a plugin runs with: what its manifest requests, if the host's grants cover it.

    With ``config.grants`` None the request stands. Otherwise ``grants[name]`` (else
    ``grants["*"]``, else nothing) bounds it, its paths taken from the host's working directory,
    and a request beyond it is a LoadError.
    """
    requested = PermissionSet.parse(info.permissions, plugin=info.name, base=base)
    grants = _grants_for(info.name, config)
    beyond = requested.uncovered_by(grants) if grants is not None else ()
    if beyond:
        asked = ", ".join(map(str, beyond))
        # A plugin's own entry replaces grants["*"] for it, which the fix must not hide.
        shared = info.name not in (config.grants or {}) and "*" in (config.grants or {})
        replaces = " (an entry of its own replaces '*' for it)" if shared else ""
        raise LoadError(
            f"asks for {asked}, which its grants ({grants or 'none'}) do not cover",
            plugin=info.name,
            path=os.fspath(base) if base is not None else None,
            hint=f"add {str(beyond[0])!r} to the host's Config.grants[{info.name!r}] (the "
            f"[grants] table){replaces}, or drop it from the plugin's permissions",
        )
    return requested


def _grants_for(name: str, config: Config) -> PermissionSet | None:
    """The host's grants for plugin ``name``; None when the host bounds nothing."""
    if config.grants is None:
        return None
    key = name if name in config.grants else "*"
    try:
        return PermissionSet.parse(config.grants.get(key, ()))
    except ManifestError as exc:
        raise ManifestError(
            f"Config.grants[{key!r}]: {exc.message}",
            path="Config.grants",
            hint=f"{exc.hint}, in the host's Config.grants ([grants] table)",
        ) from exc


class Sandbox:
    """The permission policy of one host: what each plugin may do.

    Plugins are registered as they load; one never registered may do nothing (deny by default).
    """

    def __init__(
        self, config: Config, on_denied: Callable[[PermissionDenied], None] | None = None
    ) -> None:
        self.config = config
        #: Told of every denial the guard makes for this host's plugins (before it is raised).
        self.on_denied = on_denied or _log_denial
        # One assignment or pop per change: readers on other threads need no lock.
        self._granted: dict[str, tuple[PluginInfo, PermissionSet]] = {}

    @staticmethod
    def capabilities() -> dict[str, str]:
        """Which confinement layers of the process tier work on this machine, really tried:
        each "available" or "unavailable: why" (see isolation.confine)."""
        from .isolation import confine

        return confine.capabilities()

    def register(self, info: PluginInfo, base: str | os.PathLike[str] | None) -> PermissionSet:
        """Work out what ``info`` runs with (see ``granted``) and keep it, replacing any earlier."""
        permissions = granted(info, self.config, base)
        self._granted[info.name] = (info, permissions)
        logger.debug("plugin %r runs with: %s", info.name, permissions or "no permissions")
        return permissions

    def forget(self, name: str) -> None:
        self._granted.pop(name, None)

    def permissions(self, name: str) -> PermissionSet:
        """What plugin ``name`` was registered with; nothing for a plugin never registered."""
        entry = self._granted.get(name)
        return entry[1] if entry else PermissionSet()

    def check_permission(
        self,
        plugin: str | PluginInfo,
        permission: str,
        target: object = None,
        *,
        resolve: Resolver | None = None,
    ) -> bool:
        """Whether ``plugin`` may use ``permission`` (a name, no scope) on ``target``.

        See PermissionSet.allows for targets and ``resolve``. A PluginInfo other than the one
        registered under its name is judged by what it requests that the host's grants cover
        (paths from the working directory); asking beyond its grants is no error here.
        """
        return self._judged(plugin).allows(permission, target, resolve=resolve)

    def execute(
        self, plugin: str | PluginInfo, fn: Callable[..., T], /, *args: object, **kwargs: object
    ) -> T:
        """Run ``fn(*args, **kwargs)`` as ``plugin``: held to its permissions by the guard.

        For host code doing something on a plugin's behalf. It runs on a worker thread, bounded
        by ``Config.load_timeout`` (PluginTimeout after; Python cannot kill the thread, which is
        abandoned). What it raises is raised here, a PermissionDenied included.
        """
        from . import _guard
        from ._bounded import BoundedCall

        name = plugin if isinstance(plugin, str) else plugin.name
        owner = _guard.Owner(name, self._judged(plugin), self.on_denied)

        def run() -> T:
            with _guard.acting_as(owner):
                return fn(*args, **kwargs)

        call = BoundedCall(run, plugin=name, phase="execute")
        timeout = self.config.load_timeout
        if not call.wait(timeout):
            raise PluginTimeout(
                name,
                "execute",
                timeout,
                hint="the function is still running in an abandoned thread; make it return "
                "sooner, or raise load_timeout",
            )
        if call.error is not None:
            raise call.error
        return call.value  # type: ignore[return-value]  # set when no error was raised

    def _judged(self, plugin: str | PluginInfo) -> PermissionSet:
        if isinstance(plugin, str):
            return self.permissions(plugin)
        entry = self._granted.get(plugin.name)
        if entry is not None and entry[0] == plugin:
            return entry[1]
        requested = PermissionSet.parse(plugin.permissions, plugin=plugin.name)
        grants = _grants_for(plugin.name, self.config)
        if grants is not None:
            beyond = set(requested.uncovered_by(grants))
            requested = PermissionSet(tuple(p for p in requested if p not in beyond))
        return requested


def _log_denial(error: PermissionDenied) -> None:
    logger.warning("%s", error)
