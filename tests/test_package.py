"""The example plugin package, really pip-installed, found through its entry point and run."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import helixhooks as hh

from ._plugins import pip_install

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PACKAGE = EXAMPLES / "packages" / "helix-wordcount"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install(PACKAGE, target)
    return target


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in [
        m for m in sys.modules if m == "helix_wordcount" or m.startswith("helix_wordcount.")
    ]:
        del sys.modules[name]


@pytest.mark.slow
def test_entry_point_plugin_is_listed_from_metadata_without_import(installed: Path) -> None:
    discovery = hh.Discovery(hh.Config(plugin_dirs=[]))
    (candidate,) = [c for c in discovery.scan() if c.info.name == "wordcount"]
    assert candidate.kind == "entry_point"
    assert candidate.info.version == "1.0.2"
    assert candidate.info.description == "Counts words with the tokenizer plugin"
    # from the plugin.toml shipped inside the package, found through the distribution's files
    assert candidate.info.dependencies == ("tokenizer >=1.0",)
    assert "helix_wordcount" not in sys.modules


@pytest.mark.slow
def test_installed_plugin_runs_with_directory_plugins(installed: Path) -> None:
    config = attrs.evolve(hh.Config.from_file(EXAMPLES / "helixhooks.toml"))
    events: list[hh.PluginEvent] = []
    system = hh.PluginSystem(config)
    system.subscribe(events.append)
    with system:
        assert system.problems == []
        started = [e.name for e in events if e.kind == "started"]
        assert started.index("tokenizer") < started.index("wordcount")
        assert system.hook.count_words(text="one two three") == [3]
        handle = system.get("wordcount")
        assert handle.plugin.__class__.__module__ == "helix_wordcount.plugin"
        assert handle.call("count_words", text="a b") == 2
