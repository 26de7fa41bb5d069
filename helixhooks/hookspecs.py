"""The lifecycle hooks every plugin may implement.

They are called for one plugin at a time through its own HookImpl, never broadcast, so an
implementation may omit ``ctx`` (pluggy prunes arguments an impl does not name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .markers import hookspec
from .plugin import PluginContext


class LifecycleSpec:
    """Hookspecs of the plugin lifecycle, registered on every manager helixhooks creates."""

    @hookspec
    def helix_init(self, config: Mapping[str, Any], ctx: PluginContext) -> None:
        """Prepare the plugin: ``config`` is its manifest [config] merged with the host's."""

    @hookspec
    def helix_start(self, ctx: PluginContext) -> None:
        """Begin serving; after this the plugin's capability hooks are called."""

    @hookspec
    def helix_stop(self, ctx: PluginContext) -> None:
        """Stop serving and release what start acquired."""

    @hookspec
    def helix_health_check(self, ctx: PluginContext) -> object:
        """Report health: True/None is healthy; False, a message string or an exception is not."""

    @hookspec(firstresult=True)
    def helix_info(self) -> Mapping[str, Any] | None:
        """Optional extra facts about the plugin, shown by ``helixhooks info``."""

    @hookspec(firstresult=True)
    def helix_save_state(self, ctx: PluginContext) -> object:
        """On the generation a reload replaces: what the new generation should carry on with.

        In-process the value is handed over as is (by reference, never copied), so live objects
        such as a bound socket or a cache may be passed; see ``ctx.handover`` in helix_stop.
        """

    @hookspec
    def helix_restore_state(self, state: object, ctx: PluginContext) -> None:
        """On the new generation, before it serves: take over what helix_save_state returned.

        Raising rolls the reload back; the old generation keeps serving.
        """


LIFECYCLE_HOOKS = frozenset(
    {
        "helix_init",
        "helix_start",
        "helix_stop",
        "helix_health_check",
        "helix_info",
        "helix_save_state",
        "helix_restore_state",
    }
)
