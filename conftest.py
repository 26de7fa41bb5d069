"""Test-wide settings: Hypothesis profiles (a fast default, a thorough one for CI), and fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# pytester runs the pytest plugin's fixtures in projects of their own, as plugin authors do.
pytest_plugins = ["pytester"]

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads every 10 us, so that races show up within a short test."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """An empty plugin directory."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    return directory


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`helixhooks run` keeps a snapshot in the user's state directory: the tests' go elsewhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
        yield
