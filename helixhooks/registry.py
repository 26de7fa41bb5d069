"""The plugin records, their version history, and the live pluggy PluginManager.

Writers (add, register, state changes, activation, swap) take ``Registry.lock`` one at a time;
hook calls through ``Registry.pm.hook`` take no lock. That is safe because pluggy copies a hook's
implementation list at the start of every call, every change here replaces a list in one step, and
the dispatch layer keeps a copied list from reaching a retired plugin. Waiting for calls still in
flight (draining) happens after the lock is released: a plugin's call may itself need it.
"""

from __future__ import annotations

import builtins
import itertools
import operator
import threading
from typing import TYPE_CHECKING

import attrs
import pluggy
from pluggy import HookCaller, HookImpl

from . import _pluggy_compat as compat
from ._dispatch import Dispatch, Term
from .errors import LifecycleError, LoadError
from .hookspecs import LifecycleSpec
from .loader import MISFIT_HINT, LoadedPlugin, hookspec_namespace
from .markers import PROJECT_NAME
from .plugin import TRANSITIONS, PluginCandidate, PluginInfo, PluginState

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    from .metrics import Metrics


HISTORY_LIMIT = 100
"""Versions remembered per plugin name by ``Registry.versions``."""


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
    #: The dependency that holds this plugin back (it is fine itself); None once it starts.
    held_by: str | None = None

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
        # Taking a plugin out waits (up to drain_timeout) for the calls that may still reach it,
        # so its stop hook never races its own calls.
        self.drain_timeout = drain_timeout
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        #: Every call into plugin code through ``pm`` runs through it; metrics are optional.
        self.dispatch = Dispatch(self.pm, metrics)
        self.pm.add_hookspecs(LifecycleSpec)
        for spec in specs:
            self.add_hookspecs(spec)
        self._records: dict[str, PluginRecord] = {}
        # Most plugins only ever have one version: kept as itself, a tuple once there are more
        # (a tuple of one is 48 bytes more than nothing, for every plugin).
        self._history: dict[str, str | tuple[str, ...]] = {}
        # dependency name -> names of the recorded plugins that declare it
        self._dependents: dict[str, builtins.list[str]] = {}

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
            if existing is not None:
                self._unindex(existing.info)
            record = PluginRecord(info, PluginState.DISCOVERED, candidate=candidate)
            self._records[info.name] = record
            self._index(info)
            return record

    def register(self, loaded: LoadedPlugin, *, replacing: bool = False) -> PluginRecord:
        """Record ``loaded`` as the plugin's code, now LOADED (not yet active).

        ``replacing``: a reload gives a plugin that is not serving new code, so one that is
        LOADED already stays so.
        """
        name = loaded.info.name
        with self.lock:
            record = self._records.get(name)
            if record is None:
                record = PluginRecord(loaded.info, PluginState.LOADED, candidate=loaded.candidate)
                self._records[name] = record
            elif not (replacing and record.state is PluginState.LOADED):
                self.set_state(name, PluginState.LOADED)
                self._unindex(record.info)
                record.info = loaded.info
                record.candidate = loaded.candidate or record.candidate
            self._index(loaded.info)
            record.loaded = loaded
            self._remember(name, loaded.info.version)
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
            term = self._take_out(name)
            # Whoever still holds the record sees that it is gone, whatever state it was in.
            record.state = PluginState.UNLOADED
            del self._records[name]
            self._unindex(record.info)
        self.drain(term)

    def versions(self, name: str) -> builtins.list[str]:
        """The versions registered under ``name``, oldest first (repeats included).

        Only the last HISTORY_LIMIT are kept: a plugin reloaded all day must not grow this.
        """
        with self.lock:
            history = self._history.get(name, ())
            return [history] if isinstance(history, str) else list(history)

    def direct_dependents(self, name: str) -> builtins.list[str]:
        """The recorded plugins that declare a dependency on ``name``, sorted by name."""
        with self.lock:
            return sorted(self._dependents.get(name, ()))

    def _index(self, info: PluginInfo) -> None:
        for dependency in info.parsed_dependencies:
            # Lists: a set of one name costs four times the memory, and these stay short.
            dependents = self._dependents.setdefault(dependency.name, [])
            if info.name not in dependents:
                dependents.append(info.name)

    def _unindex(self, info: PluginInfo) -> None:
        for dependency in info.parsed_dependencies:
            dependents = self._dependents.get(dependency.name)
            if dependents is not None and info.name in dependents:
                dependents.remove(info.name)
                if not dependents:
                    del self._dependents[dependency.name]

    def _remember(self, name: str, version: str) -> None:
        history = self._history.get(name)
        if history is None:
            self._history[name] = version
        else:
            earlier = (history,) if isinstance(history, str) else history
            self._history[name] = (*earlier, version)[-HISTORY_LIMIT:]

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

        Does what ``pm.register`` does, with the impls parsed and validated at load instead of
        parsing the plugin again: each is verified against the live hookspecs (the host may have
        added some since), then added by pluggy's own ordering rules, historic hooks replaying
        their calls to it. Each activation is a new term of service with fresh impl copies.
        """
        with self.lock:
            loaded = self._require_loaded(name)
            by_name = compat.plugins_by_name(self.pm)
            if by_name.get(name) is loaded.plugin:
                return
            if name in by_name:
                raise LifecycleError(
                    "is blocked in the live manager"
                    if by_name[name] is None
                    else "another generation is active under this name",
                    plugin=name,
                    hint="unblock the name, or swap generations with Registry.swap",
                )
            # By identity, in C: this runs for every activation, over every active plugin.
            if any(map(operator.is_, by_name.values(), itertools.repeat(loaded.plugin))):
                other = next(n for n, p in by_name.items() if p is loaded.plugin)
                raise LifecycleError(
                    f"its plugin object is already active as {other!r}",
                    plugin=name,
                    hint="give each plugin an object of its own",
                )
            pending = [
                (impl, self._verified(hook_name, impl, name, loaded))
                for hook_name, impl in loaded.gen.impls
            ]
            impls = self.dispatch.activate(loaded.gen)
            by_name[name] = loaded.plugin
            for (hook_name, impl), (_, verified) in zip(impls, pending, strict=True):
                caller = compat.caller_for(self.pm, hook_name)
                if not verified and caller.has_spec():
                    # An earlier impl's historic replay may have added this hook's spec.
                    self._verify(caller, [impl], name, loaded)
                compat.add_impl(caller, impl)

    def _verified(self, caller_name: str, impl: HookImpl, name: str, loaded: LoadedPlugin) -> bool:
        """Verify ``impl`` against the live spec of its hook; False if there is none yet."""
        caller: HookCaller | None = getattr(self.pm.hook, caller_name, None)
        if caller is None or not caller.has_spec():
            return False
        self._verify(caller, [impl], name, loaded)
        return True

    def deactivate(self, name: str) -> None:
        """Take the plugin's hookimpls out of the live manager, then wait for its calls.

        Call it without holding ``lock``: the wait is for plugin code, which may need it.
        """
        with self.lock:
            term = self._take_out(name)
        self.drain(term)

    def take_out(self, name: str, state: PluginState) -> Term | None:
        """Deactivate ``name`` and move it to ``state`` in one step; ``drain`` the result after.

        Returns the ended term (None if it was not active), for the caller to drain once it
        holds no lock.
        """
        with self.lock:
            term = self._take_out(name)
            self.set_state(name, state)
            return term

    def drain(self, term: Term | None) -> bool:
        """Wait (up to drain_timeout) for the calls still running in ``term``; False on timeout."""
        return self.dispatch.drain(term, self.drain_timeout)

    def _take_out(self, name: str) -> Term | None:
        record = self._records.get(name)
        if record is None or record.loaded is None:
            return None
        term = record.loaded.gen.term
        if term is None or self.pm.get_plugin(name) is not record.loaded.plugin:
            return None
        # pluggy's unregister finds a plugin's impls by scanning every hook's list; the term
        # knows them, so taking a plugin out costs its own impls, not every plugin's.
        compat.remove_plugin(self.pm, name, term.impls)
        return self.dispatch.retire(record.loaded.gen)

    def is_active(self, name: str) -> bool:
        return self.pm.has_plugin(name)

    def swap(self, name: str, new: LoadedPlugin, *, remember: bool = True) -> LoadedPlugin:
        """Replace an active plugin's hookimpls by ``new``'s in place; returns the old generation.

        Each hook's implementation list is rebuilt with the new impls at the old ones' positions
        and replaced in one assignment, so a concurrent call sees the old or the new version,
        never neither and never both. A hook only ``new`` implements is placed by pluggy's own
        ordering rules; a hook only the old one implemented loses it. ``new`` is verified against
        the live hookspecs first: a misfit is a LoadError and nothing changes. Returns once the
        calls admitted to the old generation have finished.

        ``remember=False`` leaves the version history alone: a reload records the version only
        once nothing can roll it back (``remember``).
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
            successors: dict[HookImpl, HookImpl] = {}
            plan = self._plan_swap(name, old, new, successors)
            for caller, impls in plan:
                for impl in impls:
                    if impl.plugin is new.plugin:
                        # Historic hooks replay their calls to new impls, as pm.register does.
                        compat.replay_history(caller, impl)
            for caller, impls in plan:
                # One step under the GIL, like pluggy's own _remove_plugin; callers copy the
                # list once per call, so they see it whole, before or after.
                compat.replace_impls(caller, impls)
                if getattr(self.pm.hook, caller.name, None) is not caller:
                    setattr(self.pm.hook, caller.name, caller)
            compat.plugins_by_name(self.pm)[name] = new.plugin
            term = self.dispatch.retire(old.gen, successors=successors)
            record = self._records[name]
            record.loaded = new
            self._unindex(record.info)
            record.info = new.info
            self._index(new.info)
            record.candidate = new.candidate or record.candidate
            if remember:
                self._remember(name, new.info.version)
        self.drain(term)
        return old

    def remember(self, name: str, version: str) -> None:
        """Add ``version`` to ``name``'s history (see ``swap``)."""
        with self.lock:
            self._remember(name, version)

    def verify(self, new: LoadedPlugin) -> None:
        """Check ``new``'s hookimpls against the live hookspecs; a misfit is a LoadError."""
        with self.lock:
            for hook_name, impl in new.gen.impls:
                caller = getattr(self.pm.hook, hook_name, None)
                if caller is not None:
                    self._verify(caller, [impl], new.name, new)

    def _plan_swap(
        self,
        name: str,
        old: LoadedPlugin,
        new: LoadedPlugin,
        successors: dict[HookImpl, HookImpl],
    ) -> builtins.list[tuple[HookCaller, builtins.list[HookImpl]]]:
        """Each affected caller and its new impl list; verifies, but changes nothing live.

        Verifying comes first: the new generation's term begins only once nothing can fail.
        """
        self.verify(new)
        new_impls: dict[str, builtins.list[HookImpl]] = {}
        for hook_name, impl in self.dispatch.activate(new.gen):
            new_impls.setdefault(hook_name, []).append(impl)
        plan = []
        for caller in list(vars(self.pm.hook).values()):
            incoming = new_impls.pop(caller.name, [])
            current = caller.get_hookimpls()
            if not incoming and not any(impl.plugin is old.plugin for impl in current):
                continue
            plan.append((caller, _replace_impls(caller, current, old.plugin, incoming, successors)))
        for hook_name, incoming in new_impls.items():
            # A hook no plugin implemented yet and no spec declares, as pm.register would add it.
            caller = compat.detached_caller(self.pm, hook_name)
            plan.append((caller, _replace_impls(caller, [], old.plugin, incoming, successors)))
        return plan

    def _verify(
        self, caller: HookCaller, impls: builtins.list[HookImpl], name: str, new: LoadedPlugin
    ) -> None:
        if not caller.has_spec():
            return
        try:
            for impl in impls:
                compat.verify(self.pm, caller, impl)
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


def _replace_impls(
    caller: HookCaller,
    current: list[HookImpl],
    old_plugin: object,
    incoming: list[HookImpl],
    successors: dict[HookImpl, HookImpl],
) -> list[HookImpl]:
    """``current`` with ``old_plugin``'s impls replaced in place by ``incoming``.

    An incoming impl takes the position of an old one in the same ordering class (wrapper or
    not, tryfirst, trylast), and is recorded in ``successors``; the rest are placed by pluggy's
    own ordering on a scratch caller.
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
            successors[impl] = successor
    scratch = compat.scratch_caller(caller)
    compat.impl_list(scratch).extend(kept)
    for impl in pending:
        compat.insert_impl(scratch, impl)
    return compat.impl_list(scratch)


def _order_class(impl: HookImpl) -> tuple[bool, bool, bool]:
    return (impl.wrapper or impl.hookwrapper, impl.tryfirst, impl.trylast)


def _misfit(name: str, loaded: LoadedPlugin, exc: pluggy.PluginValidationError) -> LoadError:
    return LoadError(
        "hookimpl does not fit the live hookspecs: " + "; ".join(str(exc).splitlines()),
        plugin=name,
        path=loaded.module.__file__ or (loaded.candidate.location if loaded.candidate else None),
        hint=MISFIT_HINT,
    )
