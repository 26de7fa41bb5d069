"""The example plugin package, really pip-installed, found through its entry point and run."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
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


# -- the package itself: a lazy top level ---------------------------------------------------------

# What `import helixhooks` must not pull in: the host side is imported on first use of its names.
HEAVY = ("attr", "attrs", "packaging", "importlib.metadata", "email", "tomllib", "tomli")
HEAVY += ("watchdog", "pluggy", "logging", "threading")


def _imported_by(code: str) -> list[str]:
    """The modules a fresh interpreter imports running ``code``, beyond its own start."""
    script = (
        "import sys, json; before = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return list(json.loads(result.stdout))


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_helixhooks_imports_nothing_else() -> None:
    modules = _imported_by("import helixhooks")
    # What the interpreter itself has preloaded differs between Python versions (3.10 has not
    # imported importlib or warnings by then); no part of helixhooks and nothing heavy, though.
    assert "helixhooks" in modules
    assert [m for m in modules if m.startswith("helixhooks.")] == []
    assert _heavy(modules) == []


def test_a_plugin_that_uses_hookimpl_pulls_in_what_pluggy_does_only() -> None:
    modules = _imported_by("import helixhooks\n@helixhooks.hookimpl\ndef helix_start(ctx): ...")
    assert not [m for m in modules if m.startswith("helixhooks.") and m != "helixhooks.markers"]
    assert set(_heavy(modules)) <= set(_imported_by("import pluggy"))


def test_semver_checks_do_not_import_packaging() -> None:
    modules = _imported_by(
        "from helixhooks import Versioner\nassert Versioner().is_compatible('1.2.3', '^1.0')"
    )
    assert not [m for m in modules if m == "packaging" or m.startswith("packaging.")]
    assert "importlib.metadata" not in modules


def test_every_public_name_resolves_to_its_submodule_object() -> None:
    module = importlib.import_module("helixhooks")
    assert sorted(module.__all__) == sorted(set(module.__all__))
    for name in module.__all__:
        value = getattr(module, name)
        origin = importlib.import_module(f"helixhooks.{module._SUBMODULE[name]}")
        assert value is getattr(origin, name), name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        module.NoSuchName  # noqa: B018


def test_star_import_and_from_import_give_every_name() -> None:
    names = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json; from helixhooks import *; from helixhooks import PluginSystem, "
                "hookimpl, Versioner; import helixhooks as hh\n"
                "print(json.dumps([n for n in hh.__all__ if n not in globals()]))",
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert names == []
