"""The reload transaction: a plugin's new generation replaces the running one, or nothing changes.

For a STARTED plugin A (OSGi's update and refresh, done as one step for A's callers):

1. stage: A's files are imported as a new generation beside the old one (a fresh private module
   name), its manifest checked against what is loaded (its dependencies, and its dependents'
   constraints on it), its hookimpls validated against the live hookspecs, and ``helix_init``
   run with the config the old one got (the host's table merged over the new manifest's);
2. A's started dependents are stopped, dependents first (they are restarted, not swapped: a
   dependent may have taken anything from the old A at its start, through the hook relay);
3. the old generation's ``helix_save_state`` result goes to the new one's
   ``helix_restore_state``, and the new one is started, while the old one still serves: no call
   finds A missing, and none reaches a generation that is not started;
4. swap: every hook's implementation list gets the new impls at the old ones' positions, in one
   assignment per hook; calls admitted before it finish on the old generation (drained);
5. the dependents are started again, against the new A;
6. commit: the version is recorded, the old generation stopped (``ctx.handover`` True) and its
   modules dropped.

A failure in 1-3 leaves the old generation serving, untouched; a dependent failing in 5 swaps
the old generation back in and restarts the dependents against it. Either way the version
history never records the new version, a ``reload_failed`` event says why, and ReloadError is
raised. Since old and new run side by side in 3, a plugin holding an exclusive resource (a
bound port) hands it over in its state instead of acquiring it again in ``helix_start``.

A plugin that is not serving just gets its new code: a FAILED one (or one never loaded, or held
back) is brought up with it, a STOPPED one stays stopped until it is started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

from ._operation import Steps
from .errors import (
    CyclicDependency,
    HelixError,
    MissingDependency,
    ReloadError,
    VersionConflict,
)
from .health import verdict
from .lifecycle import context_for
from .loader import process_plugin
from .plugin import PluginCandidate, PluginContext, PluginEvent, PluginState
from .versioning import parse_constraint

if TYPE_CHECKING:
    from .lifecycle import LifecycleManager
    from .loader import LoadedPlugin
    from .registry import PluginRecord

_log = logging.getLogger("helixhooks.reload")


def reload_steps(
    life: LifecycleManager, name: str, fetch: Callable[[], PluginCandidate]
) -> Steps[None]:
    """Replace plugin ``name``'s code by what ``fetch`` finds now, as a transaction.

    ``fetch`` reads the plugin's current manifest (a ManifestError refuses the reload like any
    other failure). Raises ReloadError (the cause chained) when the reload is refused or
    rolled back.
    """
    record = life.registry.require(name)
    began = perf_counter()
    candidate: PluginCandidate | None = None
    try:
        candidate = fetch()
        if candidate.info.name != name:
            raise ReloadError(
                f"its manifest now names it {candidate.info.name!r}; a reload keeps the name",
                plugin=name,
                path=candidate.location,
                hint=f"change the name back, or unload {name!r} and load the renamed plugin",
            )
        if record.state is PluginState.STARTED:
            yield from _replace_serving(life, record, candidate)
        else:
            yield from _replace_idle(life, record, candidate)
    except HelixError as exc:
        error = _refusal(record, candidate, exc)
        life.emit(
            PluginEvent(
                "reload_failed",
                name,
                candidate.info.version if candidate is not None else record.info.version,
                error=error,
                duration=perf_counter() - began,
            )
        )
        # The root cause, not a ReloadError that only said it less completely.
        inner = exc.__cause__ if isinstance(exc, ReloadError) and exc is not error else None
        raise error from (inner if inner is not None else exc)
    life.emit(PluginEvent("reloaded", name, record.info.version, duration=perf_counter() - began))


def _replace_serving(
    life: LifecycleManager, record: PluginRecord, candidate: PluginCandidate
) -> Steps[None]:
    registry, loader = life.registry, life.loader
    name = record.name
    old = record.loaded
    assert old is not None, "a STARTED plugin has loaded code"
    check_fit(life, candidate)
    new = yield from loader.load_steps(candidate)
    ctx = context_for(new, life.config, registry)
    try:
        registry.verify(new)
        init = yield from life.phase_steps(new, "init", config=ctx.config, ctx=ctx)
    except HelixError:
        loader.discard(new)
        raise
    dependents = [d for d in life.resolver().dependents(name) if _state(life, d) is _STARTED]
    for dependent in reversed(dependents):
        if _state(life, dependent) is _STARTED:
            yield from life.stop_steps(dependent)
    started = False
    try:
        if old.gen.implements("helix_save_state"):
            saved, _ = yield from life.hook_steps(
                old, "save_state", ctx=context_for(old, life.config, registry)
            )
            yield from life.phase_steps(new, "restore_state", state=saved, ctx=ctx)
        start = yield from life.phase_steps(new, "start", ctx=ctx)
        started = True
        yield from _check_worker(life, new, ctx)
        registry.swap(name, new, remember=False)
    except HelixError:
        if started:
            yield from _release(life, new)
        loader.discard(new)
        yield from life.start_steps(dependents)
        raise
    back = yield from life.start_steps(dependents)
    failed = next((d for d in dependents if d not in back), None)
    if failed is not None:
        cause = registry.require(failed).error
        yield from _roll_back(life, old, new, dependents, back)
        error = ReloadError(
            f"its dependent {failed!r} could not start against version {new.info.version}, so "
            f"version {old.info.version} was put back: {cause}",
            plugin=name,
            hint=f"make {failed!r} work with the new version (or constrain its dependency), "
            "then save again",
        )
        raise error from cause
    registry.remember(name, new.info.version)
    with registry.lock:
        record.timings["init"] = init
        record.timings["start"] = start
    if life.metrics is not None:
        life.metrics.record_init(name, init)
        life.metrics.record_start(name, start)
    yield from _release(life, old)
    loader.discard(old)


def _check_worker(life: LifecycleManager, new: LoadedPlugin, ctx: PluginContext) -> Steps[None]:
    """Blue/green for a process plugin: its new worker answers, and is healthy, before it serves."""
    proxy = process_plugin(new.plugin)
    if proxy is None:
        return
    proxy.ping()
    if new.gen.implements("helix_health_check"):
        results, _ = yield from life.hook_steps(new, "health_check", ctx=ctx)
        healthy, message = verdict(list(results) if isinstance(results, list) else [results])
        if not healthy:
            raise ReloadError(
                f"the new version's worker is not healthy: {message}",
                plugin=new.name,
                hint="fix what its helix_health_check reports, then save again",
            )


def _roll_back(
    life: LifecycleManager,
    old: LoadedPlugin,
    new: LoadedPlugin,
    dependents: list[str],
    back: list[str],
) -> Steps[None]:
    """Put ``old`` back in service after a dependent failed against ``new``."""
    for dependent in reversed(back):
        if _state(life, dependent) is _STARTED:
            yield from life.stop_steps(dependent)
    life.registry.swap(old.name, old, remember=False)
    yield from _release(life, new)
    life.loader.discard(new)
    yield from life.start_steps(dependents)


def _release(life: LifecycleManager, loaded: LoadedPlugin) -> Steps[None]:
    """``helix_stop`` for a generation another one takes over from; a failure is only logged."""
    ctx = context_for(loaded, life.config, life.registry, handover=True)
    try:
        yield from life.phase_steps(loaded, "stop", ctx=ctx)
    except HelixError as exc:
        _log.warning("plugin %r: helix_stop of the replaced generation failed: %s", ctx.name, exc)


def _replace_idle(
    life: LifecycleManager, record: PluginRecord, candidate: PluginCandidate
) -> Steps[None]:
    """New code for a plugin that does not serve; a FAILED (or held back) one is brought up."""
    registry, loader = life.registry, life.loader
    name = record.name
    stays_stopped = record.state is PluginState.STOPPED
    try:
        check_fit(life, candidate)
        new = yield from loader.load_steps(candidate)
        registry.verify(new)
    except HelixError as exc:
        if record.loaded is None or record.state is PluginState.FAILED:
            # What is on disk now is why it does not run: say so, not what failed before.
            life.mark_failed(record, exc, None)
        raise
    old = record.loaded
    registry.register(new, replacing=True)
    if old is not None:
        loader.discard(old)
    if stays_stopped:
        return
    held = [d for d in life.resolver().dependents(name) if registry.require(d).held_by is not None]
    yield from life.start_steps([name])
    # Held back before they could load: they load now that what held them back is up.
    unloaded = {d for d in held if registry.require(d).loaded is None}
    if unloaded and record.state is PluginState.STARTED:
        yield from life.load_all_steps([], names=unloaded)
    yield from life.start_steps(held)
    if record.state is PluginState.FAILED:
        error = record.error
        raise error if isinstance(error, HelixError) else ReloadError(str(error), plugin=name)


def check_fit(life: LifecycleManager, candidate: PluginCandidate) -> None:
    """Refuse a new version that what is loaded cannot take.

    It may not ask for permissions beyond the running version's without the host's consent;
    its dependencies must be loaded, in versions its constraints admit, and not depend on it;
    every loaded plugin that depends on it must admit the new version.
    """
    info = candidate.info
    registry = life.registry
    name = info.name
    guard = life.loader.guard
    current = registry.get(name)
    if guard is not None and current is not None and current.loaded is not None:
        guard.refuse_widening(candidate)
    for dependency in info.parsed_dependencies:
        found = registry.get(dependency.name)
        if found is None or found.state is PluginState.UNLOADED:
            raise MissingDependency(name, dependency.name, dependency.constraint)
        constraint = dependency.constraint
        if constraint and not parse_constraint(constraint).matches(found.info.version):
            raise VersionConflict(name, dependency.name, constraint, found.info.version)
    dependents = life.resolver().dependents(name)
    for dependency in info.parsed_dependencies:
        if dependency.name in dependents:
            raise CyclicDependency([name, dependency.name, name])
    for dependent in registry.direct_dependents(name):
        found = registry.get(dependent)
        if found is None or found.loaded is None:
            continue
        for dependency in found.info.parsed_dependencies:
            constraint = dependency.constraint
            if (
                dependency.name == name
                and constraint
                and not parse_constraint(constraint).matches(info.version)
            ):
                conflict = VersionConflict(dependent, name, constraint, info.version)
                raise ReloadError(
                    f"its dependent {dependent!r} requires {name} {constraint!r}, which the new "
                    f"version {info.version} does not match",
                    plugin=name,
                    path=found.candidate.location if found.candidate else None,
                    hint=f"relax {dependent!r}'s constraint first, or keep {name}'s version "
                    f"within {constraint!r}",
                ) from conflict


def _refusal(
    record: PluginRecord, candidate: PluginCandidate | None, cause: HelixError
) -> ReloadError:
    if record.state is PluginState.STARTED and record.loaded is not None:
        what = f"reload refused, version {record.info.version} keeps serving"
    else:
        what = "reload failed"
    if isinstance(cause, ReloadError):
        if cause.message.startswith(what):
            return cause
        return ReloadError(
            f"{what}: {cause.message}", plugin=record.name, path=cause.path, hint=cause.hint
        )
    culprit = f" ({cause.plugin!r})" if cause.plugin and cause.plugin != record.name else ""
    return ReloadError(
        f"{what}: {cause.message}{culprit}",
        plugin=record.name,
        path=cause.path or (candidate.location if candidate is not None else None),
        hint=cause.hint or "fix the plugin's files and save again",
    )


_STARTED = PluginState.STARTED


def _state(life: LifecycleManager, name: str) -> PluginState | None:
    record = life.registry.get(name)
    return record.state if record is not None else None
