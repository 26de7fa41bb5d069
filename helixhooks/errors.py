"""The exception hierarchy: every error names the plugin, what is at fault, and what to do."""

from __future__ import annotations

from collections.abc import Sequence


def safe_repr(value: object) -> str:
    """``repr(value)`` for a message about a value a user wrote; never a ValueError.

    repr refuses an int of more digits than ``sys.get_int_max_str_digits()`` (4,300 by
    default), and TOML and Python literals can spell one in hex; such an int, or anything
    holding one, is described by its type instead.
    """
    try:
        return repr(value)
    except ValueError:
        return f"<{type(value).__name__} holding an integer too large to show>"


class HelixError(Exception):
    """Base of every helixhooks error.

    ``plugin`` is the plugin at fault (None when no single plugin is), ``path`` the file or
    constraint involved, ``hint`` what the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.plugin = plugin
        self.path = path
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"plugin {self.plugin!r}: {self.message}" if self.plugin else self.message
        if self.path:
            text += f" [{self.path}]"
        if self.hint:
            text += f" (fix: {self.hint})"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors do not survive pickling by default; errors cross threads and
        # processes, so keep them reconstructible.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[HelixError], state: dict[str, object]) -> HelixError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._render())
    return err


class ManifestError(HelixError):
    """A manifest (plugin.toml, PLUGIN_INFO, distribution metadata) or config file is invalid."""


class VersionError(HelixError):
    """A version or constraint string cannot be parsed; ``text`` is the offending string."""

    def __init__(
        self,
        message: str,
        *,
        text: str = "",
        plugin: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.text = text
        super().__init__(message, plugin=plugin, path=path, hint=hint)


class DependencyError(HelixError):
    """Dependencies cannot be satisfied."""


class MissingDependency(DependencyError):
    """``plugin`` needs ``dependency``, which is not present."""

    def __init__(self, plugin: str, dependency: str, constraint: str | None = None) -> None:
        self.dependency = dependency
        self.constraint = constraint
        wanted = f"{dependency} {constraint}" if constraint else dependency
        super().__init__(
            f"needs {wanted!r}, which is not available",
            plugin=plugin,
            hint=f"install or add the plugin {dependency!r}, or remove it from dependencies",
        )


class CyclicDependency(DependencyError):
    """The plugins in ``cycle`` depend on each other in a loop; ``cycle`` ends where it starts.

    ``cycle`` may be given as a closed tuple shared by every member's error, with ``start`` the
    member's position in it: ``cycle`` then reads the loop from that member, built on access. A
    cycle of n plugins so costs O(n) for all n errors together, not O(n) each. The message names
    a long cycle's first and last few members and how many are left out.
    """

    #: Cycles with more members than this are abbreviated in the message.
    MESSAGE_MEMBERS = 10

    def __init__(self, cycle: Sequence[str], *, start: int = 0) -> None:
        ring = cycle if isinstance(cycle, tuple) else tuple(cycle)
        self._ring: tuple[str, ...] = ring
        self._start = start
        size = len(ring) - 1
        if size <= self.MESSAGE_MEMBERS:
            path = " -> ".join(self.cycle)
            described = "dependency cycle: "
        else:
            around = [ring[(start + step) % size] for step in range(-2, 6)]
            path = " -> ".join(around[2:]) + f" -> ... ({size - 8:,} more) -> "
            path += " -> ".join([*around[:2], around[2]])
            described = f"dependency cycle of {size:,} plugins: "
        super().__init__(
            described + path,
            plugin=ring[start] if ring else None,
            hint="break the cycle by removing one of these dependencies"
            + ("" if size <= self.MESSAGE_MEMBERS else " (the error's .cycle lists them all)"),
        )

    @property
    def cycle(self) -> list[str]:
        """The loop from this error's plugin back to it: ``[plugin, ..., plugin]``."""
        members, start = self._ring[:-1], self._start
        if not members:
            return list(self._ring)
        return [*members[start:], *members[:start], members[start]]


class VersionConflict(DependencyError):
    """``plugin`` requires ``dependency`` matching ``constraint`` but ``found`` is present.

    ``reason`` says why, when the version cannot match at all (say, a PEP 440 version that has
    no SemVer reading checked against an npm range).
    """

    def __init__(
        self, plugin: str, dependency: str, constraint: str, found: str, reason: str | None = None
    ) -> None:
        self.dependency = dependency
        self.constraint = constraint
        self.found = found
        self.reason = reason
        because = f": {reason}" if reason else ""
        super().__init__(
            f"requires {dependency} {constraint!r} but version {found} is present{because}",
            plugin=plugin,
            path=constraint,
            hint=f"install a version of {dependency!r} matching {constraint!r}, "
            f"or relax the constraint",
        )


class LoadError(HelixError):
    """A plugin's code could not be imported or its hookimpls do not fit the host's hookspecs."""


class LifecycleError(HelixError):
    """An invalid lifecycle transition, or a plugin's init/start/stop raised."""


class PluginTimeout(HelixError):
    """A plugin took longer than its time limit in ``phase``."""

    def __init__(self, plugin: str, phase: str, timeout: float, *, hint: str | None = None) -> None:
        self.phase = phase
        self.timeout = timeout
        super().__init__(
            f"{phase} did not finish within {timeout:g}s",
            plugin=plugin,
            hint=hint or f"make {phase} faster, or raise the time limit in the host's Config",
        )


class PermissionDenied(HelixError, PermissionError):
    """A plugin tried to use a permission it was not granted.

    Also a PermissionError, as the operating system's refusal would be: code that copes with
    an unwritable cache or an unreachable host copes with this (the import system writing a
    module's bytecode for a plugin, for one).
    """

    def __init__(
        self, plugin: str, permission: str, target: str | None = None, *, hint: str | None = None
    ) -> None:
        self.permission = permission
        self.target = target
        what = f"{permission}={target}" if target else permission
        super().__init__(
            f"permission {what!r} denied",
            plugin=plugin,
            hint=hint or f"declare {what!r} in the plugin's permissions and have the host grant it",
        )


class ReloadError(HelixError):
    """A hot reload failed and was rolled back; the old version keeps serving."""


class SandboxError(HelixError):
    """The process sandbox failed."""


class WorkerCrashed(SandboxError):
    """A plugin's worker process died."""


class ResourceExceeded(SandboxError):
    """A plugin's worker process went over a resource limit."""


class UnsendableValue(SandboxError, TypeError):
    """A value for a process plugin's hook is not JSON data, so it cannot cross to its worker."""


class RemoteError(HelixError):
    """A process plugin's hook raised in its worker.

    ``error_type`` names the exception's class there, ``remote_traceback`` is its traceback as
    text. When that class is a built-in exception, this error is an instance of it too (a
    worker's KeyError is caught by ``except KeyError`` in the host); nothing else is rebuilt
    from what a worker sends, as nothing from it is ever unpickled.
    """

    error_type: str = "Exception"
    remote_traceback: str = ""
