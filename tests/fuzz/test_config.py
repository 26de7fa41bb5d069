"""Config files: helixhooks.toml and [tool.helixhooks] in pyproject.toml, with any keys and values.

Documented: ``Config.from_file``, ``Config.load`` and ``Config.from_mapping`` raise only
ManifestError (naming the key and the file); a pyproject.toml that ``load`` meets on the way up
and cannot read is passed over. Grants are judged when a plugin loads: ``security.granted``
raises ManifestError for a bad grant, LoadError for a request beyond one.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from helixhooks.config import Config
from helixhooks.errors import LoadError, ManifestError
from helixhooks.plugin import PluginInfo
from helixhooks.security import granted

from . import _toml
from ._toml import HUGE

_seconds = st.sampled_from([0, -1, 0.5, 30, float("inf"), float("nan"), 1e308, HUGE])
_permission_lists = st.lists(
    st.sampled_from(
        ["net", "net=h:1", "read=./x", "write=/tmp", "env=HOME", "ffi", "bogus", "env=1"]
    ),
    max_size=3,
)


def _key(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A key's value: mostly one that could be right, else any TOML value at all."""
    return good | _toml.values


KEYS = {
    "plugin_dirs": _key(st.sampled_from(["./plugins", ".."]) | st.lists(st.text(max_size=5))),
    "hot_reload": _key(st.booleans()),
    "watch_interval": _key(_seconds),
    "load_timeout": _key(_seconds),
    "sandbox_enabled": _key(st.booleans()),
    "entry_point_group": _key(st.sampled_from(["helixhooks.plugins", False, True])),
    "debounce": _key(_seconds),
    "health_timeout": _key(_seconds),
    "health_interval": _key(_seconds),
    "call_timeout": _key(_seconds),
    "isolation": _key(st.sampled_from(["inprocess", "process", "proces"])),
    "grants": _key(st.dictionaries(st.sampled_from(["*", "alpha", "beta"]), _permission_lists)),
    "plugin_config": _key(st.dictionaries(st.sampled_from(["alpha", "x"]), _toml.values)),
    "limits": _key(
        st.dictionaries(
            st.sampled_from(["memory_mb", "cpu_seconds", "open_files", "file_size_mb", "memory"]),
            _seconds | _toml.values,
        )
    ),
    "hookspecs": _key(st.lists(st.sampled_from(["host.specs:Spec", "specs.py:Spec", ":"]))),
    "plugin_dir": _toml.values,
}
tables = st.fixed_dictionaries({}, optional=KEYS) | st.dictionaries(
    st.text(max_size=8), _toml.values, max_size=3
)
pyprojects = st.fixed_dictionaries(
    {},
    optional={
        "project": st.fixed_dictionaries({"name": st.just("host")}),
        "tool": st.fixed_dictionaries({}, optional={"helixhooks": tables | _toml.values})
        | _toml.values,
    },
)


def check(config: Config) -> None:
    """What a host does with a config next must not raise anything undocumented either."""
    config.config_for("alpha", {"x": 1})
    config.unknown_plugin_config(["alpha"])
    info = PluginInfo("alpha", "1.0.0", permissions=("net=h:1", "read=./x"))
    with contextlib.suppress(ManifestError, LoadError):
        granted(info, config, None)


def read(path: Path) -> None:
    with contextlib.suppress(ManifestError):
        check(Config.from_file(path))


@given(tables)
@example({"load_timeout": HUGE})
@example({"limits": {"memory_mb": HUGE}})
@example({"hookspecs": [HUGE]})
def test_helixhooks_toml_is_a_config_or_a_manifest_error(table: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="helix-fuzz-") as root:
        path = Path(root, "helixhooks.toml")
        path.write_text(_toml.document(table), encoding="utf-8")
        read(path)


@given(pyprojects)
@example({"tool": {"helixhooks": {"plugin_dirs": HUGE}}})
def test_pyproject_toml_is_a_config_or_a_manifest_error(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="helix-fuzz-") as root:
        path = Path(root, "pyproject.toml")
        path.write_text(_toml.document(document), encoding="utf-8")
        read(path)


@given(
    st.text(max_size=200) | st.binary(max_size=200), st.sampled_from(["helixhooks", "pyproject"])
)
@example("load_timeout = " + "9" * 5000, "helixhooks")
@example("x = " + _toml.nested(500), "pyproject")
def test_any_text_as_a_config_file_is_a_config_or_a_manifest_error(
    text: str | bytes, stem: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="helix-fuzz-") as root:
        path = Path(root, f"{stem}.toml")
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        read(path)
        # Found walking up from a directory below: an unreadable pyproject.toml is passed over.
        below = Path(root, "below")
        below.mkdir()
        with contextlib.suppress(ManifestError):
            check(Config.load(below))


@given(st.dictionaries(st.sampled_from(sorted(KEYS)), _toml.values | st.builds(object)))
def test_from_mapping_is_a_config_or_a_manifest_error(table: dict[str, Any]) -> None:
    with contextlib.suppress(ManifestError):
        check(Config.from_mapping(table))
