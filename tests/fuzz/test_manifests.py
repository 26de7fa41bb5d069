"""Manifests as users write them: plugin.toml (valid TOML with any values, and random or mangled
text) and PLUGIN_INFO literals in single-file plugins (any literal, set any way).

Documented: ``Discovery.scan`` never raises for a plugin's fault; it reports a Problem whose
error is a ManifestError and goes on. ``get_info`` and ``candidate`` raise only ManifestError,
and agree with ``scan``. ``PluginInfo.from_mapping`` raises only ManifestError.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from helixhooks.config import Config
from helixhooks.discovery import Discovery
from helixhooks.errors import ManifestError
from helixhooks.plugin import PluginCandidate, PluginInfo

from . import _toml
from ._toml import HUGE

_names = st.sampled_from(["alpha", "my-plugin", "x.y", "_p", "9bad", "", "a b", "a" * 129])
_versions = st.sampled_from(["1.0.0", "1.2", "1.0rc1", "v1.0.0", "2!1.0", "1.0.0-b.1+x", "one"])
_dependencies = st.sampled_from(
    ["alpha", "alpha ^1.0", "beta>=1,<2", "gamma ~1.2.3", "d 1.x || 3", "e ==1.*", "f ^", "9 ^1"]
)
_permissions = st.sampled_from(
    [
        "net",
        "net=api.example.com:443",
        "network=host:1",
        "net=[::1]:8080",
        "net=/run/x.sock",
        "net=:80",
        "net=h:99999",
        "net=::1",
        "read=./data",
        "write=/tmp",
        "read=",
        "env=HOME",
        "env=1A",
        "run=git",
        "run=./bin/x",
        "ffi",
        "sys=x",
        "bogus",
        "read=a\x00b",
    ]
)
_entries = st.sampled_from(["plugin:Plugin", "plugin", "pkg.mod:Attr", "missing:X", ":X", "a b"])


def _field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly one that could be right, else any TOML value at all."""
    return good | _toml.values


# Every manifest key, each with values that could be right or anything; a few unknown keys.
_FIELDS = {
    "name": _field(_names),
    "version": _field(_versions),
    "description": _field(st.text(max_size=10)),
    "author": _field(st.text(max_size=10)),
    "dependencies": _field(st.lists(_dependencies, max_size=3)),
    "capabilities": _field(st.lists(st.text(max_size=5), max_size=2)),
    "permissions": _field(st.lists(_permissions, max_size=3)),
    "requires": _field(st.sampled_from([">=0.1", "^0", "~=0.1", ">=", "nope"])),
    "isolation": _field(st.sampled_from(["inprocess", "process", "inproces"])),
    "entry": _field(_entries),
    "config": _toml.values,
    "nmae": _toml.values,
}
plugin_tables = st.fixed_dictionaries(
    {"name": _field(_names), "version": _field(_versions)},
    optional={k: v for k, v in _FIELDS.items() if k not in ("name", "version")},
) | st.fixed_dictionaries({}, optional=_FIELDS)
manifests = st.fixed_dictionaries(
    {"plugin": plugin_tables | _toml.values},
    optional={"config": st.dictionaries(st.text(max_size=5), _toml.values) | _toml.values},
) | st.dictionaries(st.sampled_from(["plugin", "config", "tool", "Plugin"]), _toml.values)


@st.composite
def mangled(draw: st.DrawFn) -> str:
    """A manifest's text with a few characters inserted or deleted: mostly almost TOML."""
    text = _toml.document(draw(manifests))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = (
                text[:at] + draw(st.text("[]{}\"'=.,#\\\n x1", min_size=1, max_size=3)) + text[at:]
            )
        else:
            text = text[:at] + text[at + draw(st.integers(1, 5)) :]
    return text


@contextlib.contextmanager
def plugin_dir() -> Iterator[Path]:
    """A fresh plugin dir per example (tmp_path is one per test, not per example)."""
    with tempfile.TemporaryDirectory(prefix="helix-fuzz-") as root:
        yield Path(root)


def discover(root: Path, plugin: Path) -> list[PluginCandidate]:
    """Scan ``root``, holding discovery to its documented errors; returns what it found."""
    discovery = Discovery(Config(plugin_dirs=[root], entry_point_group=None))
    found = discovery.scan()
    for problem in discovery.problems:
        assert isinstance(problem.error, ManifestError), problem
    try:
        info = discovery.get_info(plugin)
    except ManifestError:
        assert not found, "scan found a plugin that get_info refuses"
        with contextlib.suppress(ManifestError):
            assert discovery.candidate(plugin) is None
        return found
    assert [candidate.info for candidate in found] == [info]
    candidate = discovery.candidate(plugin)
    assert candidate is not None and candidate.info == info
    assert PluginInfo.from_mapping(info.to_dict()) == info
    return found


def write_manifest(root: Path, text: str | bytes, with_module: bool) -> Path:
    directory = root / "plugin"
    directory.mkdir()
    manifest = directory / "plugin.toml"
    if isinstance(text, bytes):
        manifest.write_bytes(text)
    else:
        manifest.write_text(text, encoding="utf-8")
    if with_module:
        (directory / "plugin.py").write_text("class Plugin: pass\n")
    return directory


@given(manifests, st.booleans())
@example({"plugin": {"name": "a", "version": "1.0"}, "config": {"x": HUGE}}, True)
@example({"plugin": {"name": "a", "version": "1.0", "dependencies": [HUGE]}}, True)
def test_any_valid_toml_manifest_is_a_plugin_or_a_problem(
    document: dict[str, Any], with_module: bool
) -> None:
    with plugin_dir() as root:
        discover(root, write_manifest(root, _toml.document(document), with_module))


@given(st.text(max_size=200) | st.binary(max_size=200) | mangled(), st.booleans())
@example('[plugin]\nname = "a"\nversion = "1.0"\n[config]\nx = ' + _toml.nested(500), True)
@example('[plugin]\nname = "a"\nversion = "1.0"\n[config]\nx = ' + "9" * 5000, True)
def test_any_text_as_plugin_toml_is_a_plugin_or_a_problem(
    text: str | bytes, with_module: bool
) -> None:
    with plugin_dir() as root:
        discover(root, write_manifest(root, text, with_module))


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# Python literals of every kind; floats' inf and nan are written as the names they repr to.
_python_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.complex_numbers(max_magnitude=10)
    | st.text(max_size=10)
    | st.binary(max_size=5)
)
python_values = st.recursive(
    _python_scalars | st.just(HUGE),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.frozensets(_python_scalars, max_size=3).map(set)
        | st.dictionaries(_python_scalars.filter(_hashable), inner, max_size=3)
    ),
    max_leaves=8,
)


def literal(value: Any) -> str:
    """Python source for ``value`` (HUGE in hex, as TOML writes it)."""
    if isinstance(value, _toml.Huge):
        return value.TEXT
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(literal(item) + ", " for item in value) + ")"
    if isinstance(value, set):
        return "{" + ", ".join(map(literal, value)) + "}" if value else "set()"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


_python_fields = {key: strategy | python_values for key, strategy in _FIELDS.items()}
plugin_infos = (
    st.fixed_dictionaries(
        {"name": _python_fields["name"], "version": _python_fields["version"]},
        optional={k: v for k, v in _python_fields.items() if k not in ("name", "version")},
    ).map(literal)
    | python_values.map(literal)
    | st.sampled_from(["f()", "{**x}", "{'a': b}", "inf"])
)

# Module-level statements around the assignment: harmless ones, ones that set PLUGIN_INFO some
# other way, and expressions nested deeper than Python's recursion limit.
_DEEP = "x = " + "1 + " * 3000 + "1"
_statements = st.sampled_from(
    [
        "import os",
        "x = 1",
        "def f():\n    PLUGIN_INFO = 1",
        "class C:\n    PLUGIN_INFO = {}",
        "if x:\n    PLUGIN_INFO = {}",
        "PLUGIN_INFO['a'] = 1",
        "PLUGIN_INFO.update(a=1)",
        "PLUGIN_INFO |= {}",
        "from m import PLUGIN_INFO",
        "import PLUGIN_INFO",
        "PLUGIN_INFO: dict",
        "(PLUGIN_INFO := {})",
        "a, PLUGIN_INFO = 1, 2",
        "for PLUGIN_INFO in []: pass",
        "del PLUGIN_INFO",
        "print(PLUGIN_INFO)",
        "try:\n    pass\nexcept E as PLUGIN_INFO:\n    pass",
        "match x:\n    case {'a': PLUGIN_INFO}:\n        pass",
        "x = [PLUGIN_INFO for PLUGIN_INFO in y]",
        "x = " + "1 + " * 900 + "1",
        "x = " + "-" * 900 + "1",
        "x = a" + ".b" * 900,
        _DEEP,
        "x = (",
    ]
)


@st.composite
def plugin_files(draw: st.DrawFn) -> str:
    before = draw(st.lists(_statements, max_size=2))
    assignment = f"PLUGIN_INFO{draw(st.sampled_from([' =', ': dict =']))} {draw(plugin_infos)}"
    after = draw(st.lists(_statements, max_size=2))
    return "\n".join([*before, assignment, *after]) + "\n"


@given(plugin_files() | st.text(max_size=100).map(lambda text: f"PLUGIN_INFO{text}"))
@example(f'PLUGIN_INFO = {{"name": "a", "version": "1.0"}}\n{_DEEP}\n')
@example('PLUGIN_INFO = {"name": "a", "version": "1.0"}\nx = ' + "1 + " * 950 + "1\n")
@example('PLUGIN_INFO = {"name": "a", "version": "1.0", "config": {"x": ' + "a + " * 500 + "1}}\n")
@example(f'PLUGIN_INFO = {{"name": "a", "version": "1.0", "dependencies": [{HUGE.TEXT}]}}\n')
@example(f"PLUGIN_INFO = {HUGE.TEXT}\n")
def test_any_single_file_plugin_is_a_plugin_or_a_problem(source: str) -> None:
    with plugin_dir() as root:
        path = root / "hello.py"
        path.write_text(source, encoding="utf-8")
        discover(root, path)


@given(st.dictionaries(st.sampled_from(sorted(_FIELDS)), python_values | st.builds(object)))
def test_from_mapping_builds_or_is_a_manifest_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ManifestError):
        info = PluginInfo.from_mapping(data, source="fuzzed")
        assert PluginInfo.from_mapping(info.to_dict()) == info
