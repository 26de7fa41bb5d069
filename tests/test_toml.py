"""The TOML writer: whatever it writes, tomllib reads back as given; manifests read back too."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import helixhooks as hh
from helixhooks._toml import dumps
from helixhooks.pytest_plugin import PluginDir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Any text TOML can hold: UTF-8, so no lone surrogates.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(TEXT, VALUES, max_size=6)


@given(DOCUMENTS)
def test_tomllib_reads_back_what_was_written(document: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(document)) == document


def test_special_floats_and_empty_containers() -> None:
    text = dumps({"a": math.inf, "b": -math.inf, "c": {}, "d": [], "e": [{}], "f": math.nan})
    read = tomllib.loads(text)
    assert read["a"] == math.inf and read["b"] == -math.inf and math.isnan(read["f"])
    assert (read["c"], read["d"], read["e"]) == ({}, [], [{}])


@pytest.mark.parametrize(
    ("document", "fragment"),
    [({"when": object()}, "key 'when'"), ({"a": {"b": [b"x"]}}, "key 'a.b'"), ({1: 2}, "keys")],
)
def test_what_toml_cannot_hold_is_a_type_error(document: dict[Any, Any], fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        dumps(document)


MANIFEST_TEXT = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20)


@given(
    description=MANIFEST_TEXT,
    author=MANIFEST_TEXT,
    config=st.dictionaries(TEXT, VALUES, max_size=4),
)
def test_a_plugin_dir_manifest_reads_back_through_discovery(
    tmp_path_factory: pytest.TempPathFactory, description: str, author: str, config: Any
) -> None:
    plugins = PluginDir(tmp_path_factory.mktemp("plugins"))
    directory = plugins.add(
        "quoted",
        "class Plugin:\n    pass\n",
        version="2.0.0rc1",
        description=description,
        author=author,
        dependencies=["base ^1.2", "other >=1,<2"],
        permissions=["read=./data dir", "env=TOKEN"],
        config=config,
    )
    info = hh.Discovery(hh.Config(entry_point_group=None)).get_info(directory)
    assert info == hh.PluginInfo(
        "quoted",
        "2.0.0rc1",
        description=description,
        author=author,
        dependencies=["base ^1.2", "other >=1,<2"],
        permissions=["read=./data dir", "env=TOKEN"],
        entry="plugin",  # discovery's default: the class has no hookimpls
        config=config,
    )
    assert info.config == config  # not part of PluginInfo's equality


def test_add_picks_the_entry_a_plugin_author_means(tmp_path: Path) -> None:
    plugins = PluginDir(tmp_path)
    discovery = hh.Discovery(hh.Config(entry_point_group=None))
    one_class = "import helixhooks as hh\nclass Mine:\n    @hh.hookimpl\n    def x(self): ...\n"
    module = "from helixhooks import hookimpl\n@hookimpl\ndef x(): ...\nclass Helper: ...\n"
    two = one_class + "class Other:\n    @hh.hookimpl(tryfirst=True)\n    def y(self): ...\n"
    assert discovery.get_info(plugins.add("a", one_class)).entry == "plugin:Mine"
    assert discovery.get_info(plugins.add("b", module)).entry == "plugin"
    assert discovery.get_info(plugins.add("c", two)).entry == "plugin"
    assert discovery.get_info(plugins.add("d", one_class, entry="plugin")).entry == "plugin"
    assert discovery.get_info(plugins.add("e", "x = (")).entry == "plugin"


def test_edit_moves_the_modification_time_forward(tmp_path: Path) -> None:
    plugins = PluginDir(tmp_path)
    file = plugins.add("a", "x = 1\n") / "plugin.py"
    times = [file.stat().st_mtime_ns]
    for _ in range(5):
        plugins.edit("a", "x = 2\n")  # same size, within the clock's resolution
        times.append(file.stat().st_mtime_ns)
    assert times == sorted(set(times))
    plugins.remove("a")
    assert not (tmp_path / "a").exists()
