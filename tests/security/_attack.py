"""What the attack tests share: a host over real plugin directories, listeners, denial checks.

Every attacker is a real directory plugin written to the test's tmp_path and loaded by a real
PluginSystem. Its code is a module-level ``attack(arg)`` (and optionally ``serve(arg)``); the
template below turns them into hookimpls that act only when the host names the plugin, so
``system.hook.attack(who=name, arg=...)`` reaches exactly one plugin through the host's ordinary
broadcast path. ``HOOK`` in the plugin's module is the host's relay (``ctx.hook`` from
``helix_start``), for plugins that call other plugins.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import helixhooks as hh
from helixhooks.plugin import PluginEvent
from tests._plugins import write_plugin

# How long a listener waits to be sure nothing connected: the attacks are synchronous (or
# their threads are joined first), so a connection would already sit in the backlog.
QUIET = 0.2
# Any blocking call the attacks make is bounded by this.
TIMEOUT = 2.0


class AttackSpec:
    @hh.hookspec(firstresult=True)
    def attack(self, who: str, arg: object) -> object:
        """Plugin ``who`` runs its attack on ``arg``; the others return None."""

    @hh.hookspec(firstresult=True)
    def serve(self, who: str, arg: object) -> object:
        """Plugin ``who`` does a service for another plugin (calls through the relay)."""


TEMPLATE = """\
import helixhooks as hh

NAME = {name!r}
HOOK = None

{code}

class Plugin:
    @hh.hookimpl
    def helix_start(self, ctx):
        global HOOK
        HOOK = ctx.hook

    @hh.hookimpl
    def attack(self, who, arg):
        if who == NAME:
            return attack(arg)
        return None

    @hh.hookimpl
    def serve(self, who, arg):
        if who == NAME:
            return serve(arg)
        return None
"""


class Host:
    """A PluginSystem over the attack plugins written to ``root``, and what it published."""

    def __init__(self, root: Path) -> None:
        self.plugins = root / "plugins"
        self.plugins.mkdir(parents=True, exist_ok=True)
        self.events: list[PluginEvent] = []
        self._system: hh.PluginSystem | None = None

    def plugin(self, name: str, code: str, *permissions: str | os.PathLike[str]) -> Path:
        """Write plugin ``name`` with ``code`` (defining ``attack``) and ``permissions``."""
        listed = json.dumps([os.fspath(p) for p in permissions])  # TOML takes JSON strings
        source = TEMPLATE.format(name=name, code=textwrap.dedent(code))
        return write_plugin(self.plugins, name, source, extra=f"permissions = {listed}\n")

    def start(self, **config: Any) -> hh.PluginSystem:
        """Load and start every plugin written so far; each must start."""
        settings: dict[str, Any] = {
            "plugin_dirs": [self.plugins],
            "entry_point_group": None,
            "load_timeout": 10.0,
            **config,
        }
        system = hh.PluginSystem(hh.Config(**settings), specs=[AttackSpec])
        self._system = system
        system.subscribe(self.events.append)
        system.load_all()
        system.start_all()
        assert system.problems == []
        return system

    @property
    def system(self) -> hh.PluginSystem:
        assert self._system is not None, "start() the host first"
        return self._system

    def attack(self, name: str, arg: object = None) -> Any:
        """The host calls the hook; plugin ``name`` attacks."""
        return self.system.hook.attack(who=name, arg=arg)

    def denials(self, name: str) -> dict[str, int]:
        return dict(self.system.metrics.get_stats(name).denials)

    @contextmanager
    def denies(
        self, plugin: str, permission: str, target: str | None, *, times: int = 1
    ) -> Iterator[pytest.ExceptionInfo[hh.PermissionDenied]]:
        """The block raises PermissionDenied for ``plugin``'s ``permission`` on ``target``,
        counted ``times`` in its metrics and published as that many ``permission_denied``
        events, the last the one raised (more than one: the library tried another way)."""
        before = self.denials(plugin).get(permission, 0)
        seen = len(self.events)
        with pytest.raises(hh.PermissionDenied) as caught:
            yield caught
        error = caught.value
        assert (error.plugin, error.permission, error.target) == (plugin, permission, target)
        assert self.denials(plugin).get(permission, 0) == before + times
        published = [e for e in self.events[seen:] if e.kind == "permission_denied"]
        assert len(published) == times and all(e.name == plugin for e in published)
        assert published[-1].error is error

    def close(self) -> None:
        if self._system is not None:
            self._system.close()

    def quiet(self, name: str) -> None:
        """Nothing was denied to plugin ``name`` and nothing published for it."""
        assert self.denials(name) == {}
        assert [e for e in self.events if e.kind == "permission_denied" and e.name == name] == []


class Listener:
    """A listening socket the test owns (TCP on loopback, or unix): did anything connect?"""

    def __init__(self, path: Path | None = None) -> None:
        family = socket.AF_UNIX if path is not None else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(str(path) if path is not None else ("127.0.0.1", 0))
        self.sock.listen(8)
        self.address: Any = self.sock.getsockname()
        # The address as a PermissionDenied names it: host:port, or the socket's path.
        self.target = f"{self.address[0]}:{self.address[1]}" if path is None else str(path)

    def reached(self, timeout: float = QUIET) -> bool:
        """Whether a connection is waiting (it is accepted and closed)."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


class Receiver:
    """A UDP socket on loopback the test owns: did any datagram reach it?"""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address: Any = self.sock.getsockname()
        self.target = f"{self.address[0]}:{self.address[1]}"

    def reached(self, timeout: float = QUIET) -> bool:
        self.sock.settimeout(timeout)
        try:
            self.sock.recv(64)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@contextmanager
def endpoint(kind: str, tmp_path: Path) -> Iterator[Listener | Receiver]:
    """A ``tcp`` or ``unix`` listener, or a ``udp`` receiver, closed afterwards."""
    if kind == "udp":
        made: Listener | Receiver = Receiver()
    else:
        made = Listener(unix_path(tmp_path, "s.sock") if kind == "unix" else None)
    try:
        yield made
    finally:
        made.close()


def unix_path(tmp_path: Path, name: str) -> Path:
    """A unix socket path under ``tmp_path``, if short enough (sun_path holds 107 bytes)."""
    path = tmp_path / name
    if len(os.fsencode(path)) > 100:
        pytest.skip(f"tmp_path is too long for a unix socket path: {path}")
    return path


@contextmanager
def uncaught() -> Iterator[list[BaseException | None]]:
    """What threads raise and nobody catches, in the block: ``threading.excepthook`` (a Thread)
    and ``sys.unraisablehook`` (a raw ``_thread`` thread), both put back afterwards.

    Set and restored here, inside the test, whatever pytest's own capture does per phase.
    """
    caught: list[BaseException | None] = []
    hooks = threading.excepthook, sys.unraisablehook
    threading.excepthook = lambda args: caught.append(args.exc_value)
    sys.unraisablehook = lambda args: caught.append(args.exc_value)
    try:
        yield caught
    finally:
        threading.excepthook, sys.unraisablehook = hooks


class GuardMissed(AssertionError):
    """The guard let an attack through: what a known bypass's strict xfail expects to see."""


def assert_stopped(
    host: Host, plugin: str, attempt: Callable[[], object], happened: Callable[[], bool], what: str
) -> None:
    """The guard stopped ``attempt``: it denied ``plugin`` something and ``what`` did not happen.

    GuardMissed if ``what`` happened, whatever else: the attack worked. Any other failure is a
    plain test failure, so a strict xfail on GuardMissed fails for that reason and no other: an
    attack that breaks by itself (a typo, a missing file) proves nothing and must not xfail.
    """
    before = sum(host.denials(plugin).values())
    try:
        attempt()
    except hh.PermissionDenied:
        pass
    except Exception as error:
        pytest.fail(f"the attack failed by itself, which proves nothing: {error!r}")
    denied = sum(host.denials(plugin).values()) > before
    if happened():
        also = " (although a denial was counted)" if denied else ""
        raise GuardMissed(f"the guard did not stop it: {what}{also}")
    if not denied:
        pytest.fail(f"nothing was denied and yet {what} did not happen: the attack is broken")
