"""Writes real plugin directories for the tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pluggy

import helixhooks as hh
from helixhooks._dispatch import Dispatch
from helixhooks.loader import LoadedPlugin
from helixhooks.markers import PROJECT_NAME


def call_own(loaded: LoadedPlugin, hook: str, **kwargs: object) -> object:
    """Call one loaded generation's own impls of ``hook`` through a dispatch, as lifecycle does."""
    return Dispatch(pluggy.PluginManager(PROJECT_NAME)).call(loaded.gen, hook, kwargs)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll until ``condition`` holds; fail naming ``what`` if it does not within ``timeout``.

    Thread tests wait for progress this way instead of hoping the scheduler made it.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def pip_command(*args: str) -> list[str]:
    """``pip install`` of ``args`` with no dependencies, no build isolation and no questions."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-input",
        "--disable-pip-version-check",
        *args,
    ]


def pip_install(project: Path, target: Path) -> None:
    """A real ``pip install`` of ``project`` into the directory ``target`` (no deps, no index)."""
    subprocess.run(
        pip_command("--target", str(target), str(project)),
        check=True,
        capture_output=True,
        timeout=300,
    )


@contextmanager
def systems(
    plugins: Path, specs: Sequence[object], **defaults: object
) -> Iterator[Callable[..., hh.PluginSystem]]:
    """A factory of PluginSystems over ``plugins`` (entry points off), all closed at the end."""
    made: list[hh.PluginSystem] = []

    def make(**config: object) -> hh.PluginSystem:
        settings = {"plugin_dirs": [plugins], "entry_point_group": None, **defaults, **config}
        system = hh.PluginSystem(hh.Config(**settings), specs=specs)  # type: ignore[arg-type]
        made.append(system)
        return system

    try:
        yield make
    finally:
        for system in made:
            system.close()


def write_plugin(
    root: Path,
    name: str,
    code: str,
    *,
    version: str = "1.0.0",
    dependencies: Sequence[str] = (),
    entry: str = "plugin:Plugin",
    extra: str = "",
) -> Path:
    """A directory plugin: plugin.toml plus plugin.py holding ``code``."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    deps = ", ".join(f'"{d}"' for d in dependencies)
    (directory / "plugin.toml").write_text(
        f'[plugin]\nname = "{name}"\nversion = "{version}"\nentry = "{entry}"\n'
        f"dependencies = [{deps}]\n{extra}"
    )
    (directory / "plugin.py").write_text(textwrap.dedent(code))
    return directory


class EchoSpec:
    """A host hook most test plugins implement."""

    from helixhooks.markers import hookspec

    @hookspec
    def echo(self, value: object) -> object:
        """Return something derived from value."""

    @hookspec
    def other(self) -> object:
        """A second hook, to see that a plugin's hooks appear together."""
