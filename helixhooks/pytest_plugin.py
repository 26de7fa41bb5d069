"""pytest fixtures for plugin authors, registered through the ``pytest11`` entry point.

``helix_system`` builds a PluginSystem over the plugin directories a test names, loaded and
started, and stops every system it built when the test ends::

    def test_my_plugin(helix_system):
        system = helix_system("plugins", specs=[MyHostSpec])
        assert system.get("mine").call("analyze", text="x") == {...}
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from .config import Config
from .system import PluginSystem

SystemFactory = Callable[..., PluginSystem]


@pytest.fixture
def helix_system() -> Iterator[SystemFactory]:
    """Factory: ``helix_system(*plugin_dirs, specs=(), start=True, **config)`` -> PluginSystem."""
    systems: list[PluginSystem] = []

    def make(
        *plugin_dirs: str | os.PathLike[str],
        specs: Sequence[object] = (),
        start: bool = True,
        **config: Any,
    ) -> PluginSystem:
        config.setdefault("entry_point_group", None)
        system = PluginSystem(Config(plugin_dirs=plugin_dirs, **config), specs=specs)
        systems.append(system)
        system.load_all()
        if start:
            system.start_all()
        return system

    yield make
    for system in reversed(systems):
        system.stop_all()
