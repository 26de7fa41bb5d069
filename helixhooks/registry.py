"""The plugin records, their version history, and the live pluggy PluginManager.

Writers (add, register, state changes, activation, swap) take ``Registry.lock`` one at a time;
hook calls through ``Registry.pm.hook`` take no lock. That is safe because pluggy copies a hook's
implementation list at the start of every call, and every change here replaces a list in one step.
"""

from __future__ import annotations

import builtins
import copy
import threading
from typing import TYPE_CHECKING

import attrs
import pluggy
from pluggy import HookCaller, HookImpl

from .errors import LifecycleError, LoadError
from .hookspecs import LifecycleSpec
from .loader import MISFIT_HINT, LoadedPlugin, hookspec_namespace
from .markers import PROJECT_NAME
from .plugin import TRANSITIONS, PluginCandidate, PluginInfo, PluginState

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    from .metrics import Metrics


@attrs.define
class PluginRecord:
    """What the registry knows about one plugin; changed only under ``Registry.lock``."""

    info: PluginInfo
    state: PluginState
    loaded: LoadedPlugin | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)
    candidate: PluginCandidate | None = None
    #: Seconds spent in each phase: "load", "init", "start", ...
    timings: dict[str, float] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def module(self) -> ModuleType | None:
        return self.loaded.module if self.loaded is not None else None

    @property
    def plugin(self) -> object | None:
        return self.loaded.plugin if self.loaded is not None else None


class Registry:
    """Thread-safe store of plugin records and the live ``pluggy.PluginManager``.

    A plugin is *active* while its hookimpls are in ``pm``, registered under its name.
    """

    def __init__(
        self,
        specs: Sequence[object] = (),
        metrics: Metrics | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        #: The one writer lock; hold it to change several things as one step.
        self.lock = threading.RLock()
        # With metrics installed, taking a plugin out waits (up to drain_timeout) for the hook
        # calls that may still reach it, so its stop hook never races its own capability calls.
        self._metrics = metrics
        self.drain_timeout = drain_timeout
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(LifecycleSpec)
        for spec in specs:
            self.add_hookspecs(spec)
        if metrics is not None:
            metrics.install(self.pm)
        self._records: dict[str, PluginRecord] = {}
        self._history: dict[str, list[str]] = {}

    def add_hookspecs(self, spec: object) -> None:
        """Declare more host hooks on the live manager."""
        with self.lock:
            self.pm.add_hookspecs(hookspec_namespace(spec))

    def add(self, info: PluginInfo, candidate: PluginCandidate | None = None) -> PluginRecord:
        """Record a DISCOVERED plugin; an UNLOADED record of the same name is replaced."""
        with self.lock:
            existing = self._records.get(info.name)
            if existing is not None and existing.state is not PluginState.UNLOADED:
                raise LifecycleError(
                    f"is already registered ({existing.state.value})",
                    plugin=info.name,
                    path=candidate.location if candidate is not None else None,
                    hint="unregister it first, or give the new plugin another name",
                )
            record = PluginRecord(info, PluginState.DISCOVERED, candidate=candidate)
            self._records[info.name] = record
            return record

    def register(self, loaded: LoadedPlugin) -> PluginRecord:
        """Record ``loaded`` as the plugin's code, now LOADED (not yet active)."""
        name = loaded.info.name
        with self.lock:
            record = self._records.get(name)
            if record is None:
                record = PluginRecord(loaded.info, PluginState.LOADED, candidate=loaded.candidate)
                self._records[name] = record
            else:
                self.set_state(name, PluginState.LOADED)
                record.info = loaded.info
                record.candidate = loaded.candidate or record.candidate
            record.loaded = loaded
            self._history.setdefault(name, []).append(loaded.info.version)
            return record

    def get(self, name: str) -> PluginRecord | None:
        return self._records.get(name)

    def require(self, name: str) -> PluginRecord:
        """The record of ``name``; an unknown name is a LifecycleError listing the known ones."""
        record = self._records.get(name)
        if record is None:
            raise LifecycleError(
                f"no plugin named {name!r}",
                plugin=name,
                hint="known plugins: "
                + (", ".join(self.names()) or "none")
                + "; check `helixhooks list` and the plugin dirs",
            )
        return record

    # Below this method, annotations say builtins.list: the name list is this method there.
    def list(self) -> list[PluginRecord]:
        """Every record, sorted by name."""
        with self.lock:
            return [self._records[name] for name in sorted(self._records)]

    def names(self) -> builtins.list[str]:
        with self.lock:
            return sorted(self._records)

    def unregister(self, name: str) -> None:
        """Deactivate and drop a plugin's record; its version history stays. Unknown: no-op."""
        with self.lock:
            record = self._records.get(name)
            if record is None:
                return
            self.deactivate(name)
            # Whoever still holds the record sees that it is gone, whatever state it was in.
            record.state = PluginState.UNLOADED
            del self._records[name]

    def versions(self, name: str) -> builtins.list[str]:
        """Every version ever registered under ``name``, oldest first (repeats included)."""
        with self.lock:
            return list(self._history.get(name, ()))

    def set_state(self, name: str, state: PluginState, error: BaseException | None = None) -> None:
        """Move ``name`` to ``state`` if plugin.TRANSITIONS allows; ``error`` replaces the last."""
        with self.lock:
            record = self._require(name)
            if state not in TRANSITIONS[record.state]:
                allowed = ", ".join(sorted(s.value for s in TRANSITIONS[record.state])) or "none"
                raise LifecycleError(
                    f"invalid state change from {record.state.value} to {state.value}",
                    plugin=name,
                    hint=f"from {record.state.value} it may go to: {allowed}",
                )
            record.state = state
            record.error = error

    def activate(self, name: str) -> None:
        """Put the plugin's hookimpls in the live manager; already active: no-op.

        Does what ``pm.register`` does, with the impls the plugin's private manager built at
        load instead of parsing the plugin again: each is verified against the live hookspecs
        (the host may have added some since), then added by pluggy's own ordering rules,
        historic hooks replaying their calls to it.
        """
        with self.lock:
            loaded = self._require_loaded(name)
            if self.pm.get_plugin(name) is loaded.plugin:
                return
            if self.pm.has_plugin(name):
                raise LifecycleError(
                    "another generation is active under this name",
                    plugin=name,
                    hint="swap generations with Registry.swap, not activate",
                )
            if self.pm.is_blocked(name) or loaded.plugin in self.pm._name2plugin.values():
                # pluggy's own answers: a blocked name registers nothing, and a plugin object
                # registered under another name is a ValueError.
                self.pm.register(loaded.plugin, name=name)
                return
            impls = [
                (caller_name, impl, self._verified(caller_name, impl, name, loaded))
                for caller_name, impl in _prebuilt_impls(loaded)
            ]
            self.pm._name2plugin[name] = loaded.plugin
            for caller_name, impl, verified in impls:
                caller = getattr(self.pm.hook, caller_name, None)
                if caller is None:
                    caller = HookCaller(caller_name, self.pm._hookexec)
                    setattr(self.pm.hook, caller_name, caller)
                elif not verified:
                    # An earlier impl's historic replay may have added this hook's spec.
                    self._verify(caller, [impl], name, loaded)
                caller._maybe_apply_history(impl)
                caller._add_hookimpl(impl)

    def _verified(self, caller_name: str, impl: HookImpl, name: str, loaded: LoadedPlugin) -> bool:
        """Verify ``impl`` against the live spec of its hook; False if there is none yet."""
        caller: HookCaller | None = getattr(self.pm.hook, caller_name, None)
        if caller is None or not caller.has_spec():
            return False
        self._verify(caller, [impl], name, loaded)
        return True

    def deactivate(self, name: str) -> None:
        """Take the plugin's hookimpls out of the live manager; not active: no-op."""
        with self.lock:
            plugin = self.pm.get_plugin(name)
            if plugin is None:
                return
            retired = _live_impls(self.pm, plugin)
            self.pm.unregister(name=name)
            self._drain(retired)

    def _drain(self, retired: builtins.list[HookImpl]) -> None:
        if self._metrics is not None and retired:
            self._metrics.drain(self.pm, retired, self.drain_timeout)

    def is_active(self, name: str) -> bool:
        return self.pm.has_plugin(name)

    def swap(self, name: str, new: LoadedPlugin) -> LoadedPlugin:
        """Replace an active plugin's hookimpls by ``new``'s in place; returns the old generation.

        Each hook's implementation list is rebuilt with the new impls at the old ones' positions
        and replaced in one assignment, so a concurrent call sees the old or the new version,
        never neither and never both. A hook only ``new`` implements is placed by pluggy's own
        ordering rules; a hook only the old one implemented loses it. ``new`` is verified against
        the live hookspecs first: a misfit is a LoadError and nothing changes.
        """
        with self.lock:
            old = self._require_loaded(name)
            if new.info.name != name:
                raise LifecycleError(
                    f"cannot swap in plugin {new.info.name!r} for {name!r}",
                    plugin=name,
                    hint="swap only a new generation of the same plugin",
                )
            if self.pm.get_plugin(name) is not old.plugin:
                raise LifecycleError(
                    "is not active, so there is nothing to swap",
                    plugin=name,
                    hint="activate the plugin, or register the new generation instead",
                )
            if self.pm.get_name(new.plugin) is not None:
                raise LifecycleError(
                    "the new generation is already active",
                    plugin=name,
                    hint="load a fresh generation to swap in",
                )
            plan = self._plan_swap(name, old, new)
            retired = _live_impls(self.pm, old.plugin)
            for caller, impls in plan:
                for impl in impls:
                    if impl.plugin is new.plugin:
                        # Historic hooks replay their calls to new impls, as pm.register does.
                        caller._maybe_apply_history(impl)
            for caller, impls in plan:
                # Slice assignment is one step under the GIL, like pluggy's own _remove_plugin;
                # callers copy the list once per call, so they see it whole, before or after.
                caller._hookimpls[:] = impls
                if getattr(self.pm.hook, caller.name, None) is not caller:
                    setattr(self.pm.hook, caller.name, caller)
            self.pm._name2plugin[name] = new.plugin
            record = self._records[name]
            record.loaded = new
            record.info = new.info
            record.candidate = new.candidate or record.candidate
            self._history.setdefault(name, []).append(new.info.version)
            self._drain(retired)
            return old

    def _plan_swap(
        self, name: str, old: LoadedPlugin, new: LoadedPlugin
    ) -> builtins.list[tuple[HookCaller, builtins.list[HookImpl]]]:
        """Each affected caller and its new impl list; verifies, but changes nothing live."""
        new_impls: dict[str, builtins.list[HookImpl]] = {}
        for hook_name, impl in _prebuilt_impls(new):
            new_impls.setdefault(hook_name, []).append(impl)
        plan = []
        for caller in list(vars(self.pm.hook).values()):
            incoming = new_impls.pop(caller.name, [])
            current = caller.get_hookimpls()
            if not incoming and not any(impl.plugin is old.plugin for impl in current):
                continue
            self._verify(caller, incoming, name, new)
            plan.append((caller, _replace_impls(caller, current, old.plugin, incoming)))
        for hook_name, incoming in new_impls.items():
            # A hook no plugin implemented yet and no spec declares, as pm.register would add it.
            caller = HookCaller(hook_name, self.pm._hookexec)
            plan.append((caller, _replace_impls(caller, [], old.plugin, incoming)))
        return plan

    def _verify(
        self, caller: HookCaller, impls: builtins.list[HookImpl], name: str, new: LoadedPlugin
    ) -> None:
        if not caller.has_spec():
            return
        try:
            for impl in impls:
                self.pm._verify_hook(caller, impl)
        except pluggy.PluginValidationError as exc:
            raise _misfit(name, new, exc) from exc

    def _require(self, name: str) -> PluginRecord:
        record = self._records.get(name)
        if record is None:
            known = ", ".join(sorted(self._records)) or "none"
            raise LifecycleError(
                "is not registered", plugin=name, hint=f"registered plugins: {known}"
            )
        return record

    def _require_loaded(self, name: str) -> LoadedPlugin:
        record = self._require(name)
        if record.loaded is None:
            raise LifecycleError(
                f"has no loaded code ({record.state.value})",
                plugin=name,
                hint="load the plugin and register it first",
            )
        return record.loaded


def _live_impls(pm: pluggy.PluginManager, plugin: object) -> list[HookImpl]:
    """The HookImpl objects of ``plugin`` that sit in ``pm``'s callers now."""
    return [
        impl
        for caller in pm.get_hookcallers(plugin) or ()
        for impl in caller.get_hookimpls()
        if impl.plugin is plugin
    ]


def _prebuilt_impls(loaded: LoadedPlugin) -> list[tuple[str, HookImpl]]:
    """(hook name, impl) for each impl ``pm.register`` built on the plugin's private manager.

    Reusing them spares a second parse (pluggy reads every attribute of the plugin with
    ``inspect.getattr_static``). They are copies: Metrics keeps a retired impl out of a
    manager's calls by its identity, and a restarted plugin must not look retired. The order is
    ``pm.register``'s: by hook name (its ``dir()`` order, but for an impl with a ``specname``)
    and, within a hook, as registered.
    """
    plugin = loaded.plugin
    prebuilt: list[tuple[str, HookImpl]] = []
    for hook_name, caller in sorted(vars(loaded.pm.hook).items()):
        impls = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin]
        # Each trylast impl went first, so a caller holds those in reverse registration order.
        registered = [i for i in impls if not i.trylast] + [i for i in reversed(impls) if i.trylast]
        prebuilt.extend((hook_name, copy.copy(impl)) for impl in registered)
    return prebuilt


def _replace_impls(
    caller: HookCaller, current: list[HookImpl], old_plugin: object, incoming: list[HookImpl]
) -> list[HookImpl]:
    """``current`` with ``old_plugin``'s impls replaced in place by ``incoming``.

    An incoming impl takes the position of an old one in the same ordering class (wrapper or
    not, tryfirst, trylast); the rest are placed by pluggy's own ordering on a scratch caller.
    """
    pending = list(incoming)
    kept: list[HookImpl] = []
    for impl in current:
        if impl.plugin is not old_plugin:
            kept.append(impl)
            continue
        successor = next((new for new in pending if _order_class(new) == _order_class(impl)), None)
        if successor is not None:
            pending.remove(successor)
            kept.append(successor)
    scratch = HookCaller(caller.name, caller._hookexec)
    scratch._hookimpls.extend(kept)
    for impl in pending:
        scratch._add_hookimpl(impl)
    return scratch._hookimpls


def _order_class(impl: HookImpl) -> tuple[bool, bool, bool]:
    return (impl.wrapper or impl.hookwrapper, impl.tryfirst, impl.trylast)


def _misfit(name: str, loaded: LoadedPlugin, exc: pluggy.PluginValidationError) -> LoadError:
    return LoadError(
        "hookimpl does not fit the live hookspecs: " + "; ".join(str(exc).splitlines()),
        plugin=name,
        path=loaded.module.__file__ or (loaded.candidate.location if loaded.candidate else None),
        hint=MISFIT_HINT,
    )
