"""Every use of pluggy's internals, in one place, checked against the installed pluggy at import.

pluggy's public API cannot put one dispatch under every hook call, swap an implementation list in
one step, or reuse implementations parsed once; the few private names that can are reached only
through this module. Each release from 1.4 to 1.7 was read for them, and tox runs the suite on
each. A pluggy without them fails here, at import, with what to install instead of a wrong answer
in the middle of a hook call. Its version is checked at import too where pluggy has it at hand
(up to 1.6); from 1.7 pluggy reads it from its distribution metadata, which costs more than the
rest of ``import helixhooks``, so the check waits for the first live manager.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import pluggy
from pluggy import HookCaller, HookImpl

SUPPORTED = ">=1.4,<1.8"
"""The pluggy releases whose internals this module was written against (setup.cfg says the same)."""

HookExec: TypeAlias = Callable[[str, Sequence[HookImpl], Mapping[str, object], bool], object]


def _release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string; None when it does not start with them."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def unsupported(version: str) -> str | None:
    """Why pluggy ``version`` will not do, or None when it is supported."""
    release = _release(version)
    if release is not None and (1, 4) <= release < (1, 8):
        return None
    return (
        f"helixhooks needs pluggy {SUPPORTED}, but pluggy {version} is installed: "
        f"install a supported one with `pip install 'pluggy{SUPPORTED}'`"
    )


def _check() -> tuple[Callable[..., object], bool]:
    """pluggy's ``_multicall``, and whether it passes impl arguments that have defaults."""
    eager = vars(pluggy).get("__version__")
    problem = unsupported(eager) if isinstance(eager, str) else None
    if problem is not None:
        raise ImportError(problem)
    try:
        from pluggy._callers import _multicall

        missing = [
            f"{owner.__name__}.{name}"
            for owner, names in (
                (pluggy.PluginManager, ("_hookexec", "_verify_hook", "parse_hookimpl_opts")),
                (HookCaller, ("_hookimpls", "_add_hookimpl", "_maybe_apply_history")),
            )
            for name in names
            if not hasattr(owner, name)
        ]
        missing += [f"HookImpl.{slot}" for slot in _IMPL_SLOTS if slot not in HookImpl.__slots__]
    except ImportError as exc:
        missing = [f"pluggy._callers._multicall ({exc})"]
    if missing:
        raise ImportError(
            f"the installed pluggy lacks internals helixhooks relies on "
            f"({', '.join(missing)}): install pluggy{SUPPORTED}"
        )
    # pluggy 1.7 started handing impls the hook arguments that their defaults stand in for;
    # read off its loop itself, which is what decides it.
    return _multicall, "kwargnames" in _multicall.__code__.co_names


_IMPL_SLOTS = (
    "argnames",
    "function",
    "hookwrapper",
    "kwargnames",
    "opts",
    "plugin",
    "plugin_name",
    "tryfirst",
    "trylast",
    "wrapper",
)

multicall, PASSES_DEFAULTS = _check()
_version_checked = isinstance(vars(pluggy).get("__version__"), str)


class OwnedImpl(HookImpl):  # type: ignore[misc]  # pluggy marks HookImpl final for its users
    """A HookImpl that knows which term of service of which plugin generation it belongs to.

    The dispatch reads ``owner`` to leave out implementations retired by a stop or a swap, even
    from a list a caller copied before the retirement. ``hook`` is the name of the hook it
    implements (pluggy's HookImpl does not know it). Created only by ``owned_copy``.
    """

    __slots__ = ("hook", "owner")
    hook: str
    owner: Any


def owned_copy(impl: HookImpl, owner: object, hook: str | None = None) -> OwnedImpl:
    """A copy of ``impl`` (parsed by pluggy already) that carries ``owner``, and ``hook``.

    Without ``hook``, the copy implements the same hook as ``impl`` (if ``impl`` says which).
    """
    twin: OwnedImpl = object.__new__(OwnedImpl)
    for slot in HookImpl.__slots__:
        if hasattr(impl, slot):
            object.__setattr__(twin, slot, getattr(impl, slot))
    twin.hook = hook if hook is not None else getattr(impl, "hook", "")
    twin.owner = owner
    return twin


def install_hookexec(pm: pluggy.PluginManager, hookexec: HookExec) -> None:
    """Put ``hookexec`` under every call through ``pm``, beneath any later tracing or monitoring.

    ``enable_tracing`` and ``add_hookcall_monitoring`` wrap whatever ``_inner_hookexec`` holds,
    and their undo puts it back, so ours stays innermost and theirs keep working on top.
    The first call checks pluggy's version where import could not (see the module docstring).
    """
    global _version_checked
    if not _version_checked:
        problem = unsupported(pluggy.__version__)
        if problem is not None:
            raise ImportError(problem)
        _version_checked = True
    pm._inner_hookexec = hookexec  # type: ignore[assignment]  # same contract, looser types


def plugins_by_name(pm: pluggy.PluginManager) -> dict[str, object]:
    """pluggy's own name -> plugin mapping (blocked names map to None)."""
    mapping: dict[str, object] = pm._name2plugin
    return mapping


def caller_for(pm: pluggy.PluginManager, hook_name: str) -> HookCaller:
    """``pm``'s caller of ``hook_name``, created (without a spec) as ``pm.register`` would."""
    caller: HookCaller | None = getattr(pm.hook, hook_name, None)
    if caller is None:
        caller = HookCaller(hook_name, pm._hookexec)
        setattr(pm.hook, hook_name, caller)
    return caller


def detached_caller(pm: pluggy.PluginManager, hook_name: str) -> HookCaller:
    """A caller of ``pm`` not yet in ``pm.hook`` (put it there once its list is ready)."""
    return HookCaller(hook_name, pm._hookexec)


def scratch_caller(like: HookCaller) -> HookCaller:
    """A detached caller of the same hook, to compute an impl list by pluggy's rules."""
    return HookCaller(like.name, like._hookexec)


def add_impl(caller: HookCaller, impl: HookImpl) -> None:
    """Add ``impl`` by pluggy's ordering rules, replaying a historic hook's calls to it first."""
    caller._maybe_apply_history(impl)
    caller._add_hookimpl(impl)


def insert_impl(caller: HookCaller, impl: HookImpl) -> None:
    """Add ``impl`` by pluggy's ordering rules without any replay (for scratch callers)."""
    caller._add_hookimpl(impl)


def replay_history(caller: HookCaller, impl: HookImpl) -> None:
    caller._maybe_apply_history(impl)


def impl_list(caller: HookCaller) -> list[HookImpl]:
    """The caller's own list (not a copy): pluggy copies it once at the start of every call."""
    impls: list[HookImpl] = caller._hookimpls
    return impls


def replace_impls(caller: HookCaller, impls: Sequence[HookImpl]) -> None:
    """Replace the caller's implementation list in one step (a slice assignment under the GIL)."""
    caller._hookimpls[:] = impls


def remove_plugin(
    pm: pluggy.PluginManager, name: str, impls: Sequence[tuple[str, HookImpl]]
) -> None:
    """What ``pm.unregister(name=name)`` does, given the plugin's impls instead of a search.

    Each list changes in one step under the GIL (``list.remove`` runs no Python code), as in
    pluggy's own ``_remove_plugin``. An impl no longer in its list (taken out through pluggy
    directly) is passed over.
    """
    for hook_name, impl in impls:
        caller: HookCaller | None = getattr(pm.hook, hook_name, None)
        if caller is not None:
            # list.remove compares by identity here (HookImpl has no __eq__): one C call.
            with contextlib.suppress(ValueError):
                caller._hookimpls.remove(impl)
    pm._name2plugin.pop(name, None)


def verify(pm: pluggy.PluginManager, caller: HookCaller, impl: HookImpl) -> None:
    """pluggy's own check of ``impl`` against ``caller``'s spec; PluginValidationError if unfit."""
    pm._verify_hook(caller, impl)
