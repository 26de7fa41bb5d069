"""Loader: private per-generation module names, source-only imports, validation, unload."""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import os
import py_compile
import sys
import textwrap
import weakref
from pathlib import Path

import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helixhooks as hh
from helixhooks._dispatch import Dispatch
from helixhooks._source_import import PRIVATE_PACKAGE, private_module
from helixhooks.errors import LoadError
from helixhooks.loader import LoadedPlugin, Loader
from helixhooks.markers import PROJECT_NAME, hookspec
from helixhooks.metrics import Metrics
from helixhooks.plugin import NAME_PATTERN, PluginCandidate, PluginInfo

from ._plugins import call_own


class AgentSpec:
    @hookspec
    def analyze(self, text: str) -> object:
        """Score a text."""


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def directory_candidate(directory: Path, name: str, entry: str | None) -> PluginCandidate:
    return PluginCandidate(PluginInfo(name, "1.0.0", entry=entry), directory, "directory")


def file_candidate(path: Path, name: str, entry: str | None = None) -> PluginCandidate:
    return PluginCandidate(PluginInfo(name, "1.0.0", entry=entry), path, "file")


def private_keys(name: str) -> list[str]:
    prefix = f"{PRIVATE_PACKAGE}.{name}."
    return [key for key in sys.modules if key.startswith(prefix)]


@pytest.fixture
def loader() -> Loader:
    return Loader(specs=[AgentSpec])


@pytest.fixture
def analyzer_dir(tmp_path: Path) -> Path:
    root = tmp_path / "analyzer"
    write(root / "__init__.py", "PACKAGE_MARK = 'init ran'\n")
    write(
        root / "plugin.py",
        """
        from helixhooks.markers import hookimpl

        from . import util
        from .sub.deep import suffix

        class Analyzer:
            @hookimpl
            def analyze(self, text):
                return util.double(text) + suffix()
        """,
    )
    write(root / "util.py", "def double(text):\n    return text * 2\n")
    write(root / "sub" / "__init__.py", "")
    write(
        root / "sub" / "deep.py",
        "from .. import util\n\ndef suffix():\n    return util.double('!')\n",
    )
    return root


def test_directory_plugin_imports_its_subpackages_relatively(
    loader: Loader, analyzer_dir: Path
) -> None:
    loaded = loader.load(directory_candidate(analyzer_dir, "textanalyzer", "plugin:Analyzer"))
    base = f"{PRIVATE_PACKAGE}.textanalyzer.g1"
    assert loaded.generation == 1
    assert loaded.module.__name__ == f"{base}.plugin"
    assert type(loaded.plugin).__name__ == "Analyzer"
    assert isinstance(loaded.plugin, loaded.module.Analyzer)
    assert call_own(loaded, "analyze", text="ab") == ["abab!!"]
    assert {impl.plugin for _, impl in loaded.gen.impls} == {loaded.plugin}
    assert set(loaded.modules) == {
        base,
        f"{base}.plugin",
        f"{base}.util",
        f"{base}.sub",
        f"{base}.sub.deep",
    }
    assert sys.modules[base].PACKAGE_MARK == "init ran"
    for key in loaded.modules:
        module = sys.modules[key]
        assert Path(module.__file__ or "").is_relative_to(analyzer_dir)
        assert module.__spec__ is not None and module.__spec__.origin == module.__file__
        # Compiled from source on every import: there is no cached bytecode to name.
        assert module.__spec__.cached is None and not hasattr(module, "__cached__")
    loader.unload("textanalyzer")


def test_plugin_dirs_are_not_put_on_sys_path(loader: Loader, analyzer_dir: Path) -> None:
    before = list(sys.path)
    loader.load(directory_candidate(analyzer_dir, "textanalyzer", "plugin:Analyzer"))
    assert sys.path == before
    from_plugin_dir = [
        key
        for key, module in list(sys.modules.items())
        if Path(getattr(module, "__file__", None) or "").is_relative_to(analyzer_dir)
    ]
    assert from_plugin_dir
    assert all(key.startswith(f"{PRIVATE_PACKAGE}.textanalyzer.") for key in from_plugin_dir)
    loader.unload("textanalyzer")


def test_file_plugin_without_entry_registers_the_module(loader: Loader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "hello.py",
        """
        from helixhooks.markers import hookimpl

        PLUGIN_INFO = {"name": "hellofile", "version": "1.0.0"}

        @hookimpl
        def analyze(text):
            return f"hello {text}"
        """,
    )
    loaded = loader.load(file_candidate(path, "hellofile"))
    assert loaded.module.__name__ == f"{PRIVATE_PACKAGE}.hellofile.g1"
    assert loaded.plugin is loaded.module
    assert loaded.modules == (f"{PRIVATE_PACKAGE}.hellofile.g1",)
    assert call_own(loaded, "analyze", text="you") == ["hello you"]
    by_path = loader.load(path)
    assert by_path.candidate is not None
    assert by_path.candidate.kind == "file"
    assert by_path.module.__name__ == f"{PRIVATE_PACKAGE}.hellofile.g2"
    loader.unload("hellofile")


def test_init_entry_registers_the_package_module(loader: Loader, tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    write(
        root / "__init__.py",
        """
        from helixhooks.markers import hookimpl
        from .helpers import shout

        @hookimpl
        def analyze(text):
            return shout(text)
        """,
    )
    write(root / "helpers.py", "def shout(text):\n    return text.upper()\n")
    loaded = loader.load(directory_candidate(root, "pkg", "__init__"))
    assert loaded.plugin is loaded.module
    assert loaded.module.__name__ == f"{PRIVATE_PACKAGE}.pkg.g1"
    assert call_own(loaded, "analyze", text="hi") == ["HI"]
    loader.unload("pkg")


def test_dotted_attribute_entry_and_non_class_object(loader: Loader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "nested.py",
        """
        from helixhooks.markers import hookimpl

        class Outer:
            class Impl:
                @hookimpl
                def analyze(self, text):
                    return "inner"

        INSTANCE = Outer.Impl()
        """,
    )
    by_class = loader.load(file_candidate(path, "nested", "nested:Outer.Impl"))
    assert type(by_class.plugin).__qualname__ == "Outer.Impl"
    by_object = loader.load(file_candidate(path, "nested", "nested:INSTANCE"))
    assert by_object.plugin is by_object.module.INSTANCE
    loader.unload("nested")


def test_each_load_is_a_new_generation_compiled_from_source(loader: Loader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "gen.py",
        """
        from helixhooks.markers import hookimpl

        @hookimpl
        def analyze(text):
            return "one"
        """,
    )
    # A .pyc matching the first source: the standard loader would keep serving it after an edit
    # that keeps the size and the mtime.
    py_compile.compile(str(path), doraise=True)
    stat = path.stat()
    first = loader.load(file_candidate(path, "gen"))
    path.write_text(path.read_text().replace('"one"', '"two"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    second = loader.load(file_candidate(path, "gen"))

    assert (first.generation, second.generation) == (1, 2)
    assert first.module.__name__.endswith(".gen.g1")
    assert second.module.__name__.endswith(".gen.g2")
    assert first.module is not second.module
    assert call_own(first, "analyze", text="") == ["one"]
    assert call_own(second, "analyze", text="") == ["two"]
    assert sys.modules[first.module.__name__] is first.module
    assert sys.modules[second.module.__name__] is second.module
    assert loader.loaded("gen") is second
    loader.unload("gen")
    assert not private_keys("gen")


def test_metrics_time_the_load_and_calls_through_the_private_manager(tmp_path: Path) -> None:
    metrics = Metrics()
    loader = Loader(specs=[AgentSpec], metrics=metrics)
    path = write(
        tmp_path / "timed.py",
        """
        from helixhooks.markers import hookimpl

        @hookimpl
        def analyze(text):
            return text
        """,
    )
    loaded = loader.load(file_candidate(path, "timed"))
    dispatch = Dispatch(pluggy.PluginManager(PROJECT_NAME), metrics)
    dispatch.call(loaded.gen, "analyze", {"text": "a"})
    dispatch.call(loaded.gen, "analyze", {"text": "b"})
    stats = metrics.get_stats("timed")
    assert stats.load_time is not None
    assert stats.load_time > 0
    assert stats.hooks["analyze"].count == 2
    loader.unload("timed")


def test_generations_keep_counting_after_unload(loader: Loader, tmp_path: Path) -> None:
    path = write(tmp_path / "count.py", "X = 1\n")
    assert loader.load(file_candidate(path, "count")).generation == 1
    loader.unload("count")
    assert loader.loaded("count") is None
    assert loader.load(file_candidate(path, "count")).generation == 2
    loader.unload("count")


def test_two_loaders_never_share_a_private_module_name(tmp_path: Path) -> None:
    path = write(tmp_path / "shared.py", "X = 1\n")
    first_loader, second_loader = Loader(), Loader()
    first = first_loader.load(file_candidate(path, "shared"))
    second = second_loader.load(file_candidate(path, "shared"))
    assert first.module.__name__ != second.module.__name__
    assert sys.modules[first.module.__name__] is first.module
    second_loader.unload("shared")
    assert sys.modules[first.module.__name__] is first.module
    first_loader.unload("shared")
    assert not private_keys("shared")


def test_discard_drops_one_generation_and_keeps_the_other(loader: Loader, tmp_path: Path) -> None:
    path = write(tmp_path / "pair.py", "X = 1\n")
    first = loader.load(file_candidate(path, "pair"))
    second = loader.load(file_candidate(path, "pair"))
    loader.discard(first)
    assert first.module.__name__ not in sys.modules
    assert sys.modules[second.module.__name__] is second.module
    assert loader.loaded("pair") is second
    loader.discard(second)
    assert loader.loaded("pair") is None
    assert not private_keys("pair")


def test_unload_lets_the_old_module_be_garbage_collected(
    loader: Loader, analyzer_dir: Path
) -> None:
    loaded: LoadedPlugin | None = loader.load(
        directory_candidate(analyzer_dir, "textanalyzer", "plugin:Analyzer")
    )
    assert loaded is not None
    assert call_own(loaded, "analyze", text="x") == ["xx!!"]
    module_ref = weakref.ref(loaded.module)
    package_ref = weakref.ref(sys.modules[f"{PRIVATE_PACKAGE}.textanalyzer.g1"])
    plugin_ref = weakref.ref(loaded.plugin)
    loader.unload("textanalyzer")
    assert not private_keys("textanalyzer")
    del loaded
    gc.collect()
    assert module_ref() is None
    assert package_ref() is None
    assert plugin_ref() is None


def test_unload_removes_submodules_imported_after_load(loader: Loader, tmp_path: Path) -> None:
    root = tmp_path / "lazy"
    write(
        root / "__init__.py",
        """
        def late():
            from . import later
            return later.VALUE
        """,
    )
    write(root / "later.py", "VALUE = 42\n")
    loaded = loader.load(directory_candidate(root, "lazy", "__init__"))
    assert loaded.modules == (f"{PRIVATE_PACKAGE}.lazy.g1",)
    assert loaded.module.late() == 42
    assert f"{PRIVATE_PACKAGE}.lazy.g1.later" in sys.modules
    loader.unload("lazy")
    assert not private_keys("lazy")


def test_load_by_path_reads_the_manifest(loader: Loader, analyzer_dir: Path) -> None:
    write(
        analyzer_dir / "plugin.toml",
        """
        [plugin]
        name = "textanalyzer"
        version = "2.1.0"
        entry = "plugin:Analyzer"
        """,
    )
    by_directory = loader.load(analyzer_dir)
    by_manifest = loader.load(str(analyzer_dir / "plugin.toml"))
    for loaded in (by_directory, by_manifest):
        assert loaded.info.version == "2.1.0"
        assert loaded.candidate is not None
        assert loaded.candidate.kind == "directory"
        assert loaded.candidate.source == analyzer_dir
        assert call_own(loaded, "analyze", text="a") == ["aa!!"]
    loader.unload("textanalyzer")


def test_optional_unknown_hook_is_accepted(loader: Loader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "extra.py",
        """
        from helixhooks.markers import hookimpl

        @hookimpl(optionalhook=True)
        def some_future_hook(value):
            return value
        """,
    )
    loaded = loader.load(file_candidate(path, "extra"))
    assert call_own(loaded, "some_future_hook", value=3) == [3]
    loader.unload("extra")


def test_host_specs_added_later_apply_to_later_loads(tmp_path: Path) -> None:
    loader = Loader()
    path = write(
        tmp_path / "late.py",
        """
        from helixhooks.markers import hookimpl

        @hookimpl
        def analyze(text):
            return text
        """,
    )
    with pytest.raises(LoadError, match="analyze"):
        loader.load(file_candidate(path, "late"))
    loader.add_hookspecs(AgentSpec)
    assert call_own(loader.load(file_candidate(path, "late")), "analyze", text="t") == ["t"]
    loader.unload("late")


def test_non_namespace_spec_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="class or a module"):
        Loader(specs=[AgentSpec()])


BROKEN = {
    "syntax error": (
        {"plugin.py": "from . import util\n", "util.py": "def broken(:\n    pass\n"},
        "plugin:Analyzer",
        "util.py",
        ["SyntaxError"],
    ),
    "import raises": (
        {"plugin.py": "raise RuntimeError('no database configured')\n"},
        "plugin:Analyzer",
        "plugin.py",
        ["RuntimeError", "no database configured"],
    ),
    "missing import": (
        {"plugin.py": "from . import nowhere\n"},
        "plugin:Analyzer",
        "plugin.py",
        ["ImportError", "nowhere"],
    ),
    "missing attribute": (
        {"plugin.py": "class Analyser:\n    pass\n"},
        "plugin:Analyzer",
        "plugin.py",
        ["'Analyzer'", "plugin:Analyzer"],
    ),
    "constructor raises": (
        {
            "plugin.py": (
                "class Analyzer:\n    def __init__(self):\n        raise ValueError('nope')\n"
            )
        },
        "plugin:Analyzer",
        "plugin.py",
        ["ValueError", "nope", "no arguments"],
    ),
    "unknown hook": (
        {
            "plugin.py": (
                "from helixhooks.markers import hookimpl\n"
                "class Analyzer:\n"
                "    @hookimpl\n"
                "    def analyse(self, text):\n"
                "        return text\n"
            )
        },
        "plugin:Analyzer",
        "plugin.py",
        ["'analyse'", "unknown hook"],
    ),
    "wrong argument": (
        {
            "plugin.py": (
                "from helixhooks.markers import hookimpl\n"
                "class Analyzer:\n"
                "    @hookimpl\n"
                "    def analyze(self, txt):\n"
                "        return txt\n"
            )
        },
        "plugin:Analyzer",
        "plugin.py",
        ["'analyze'", "txt"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_a_load_error_naming_plugin_file_and_cause(
    loader: Loader, tmp_path: Path, case: str
) -> None:
    files, entry, fault_file, fragments = BROKEN[case]
    root = tmp_path / "broken"
    for filename, source in files.items():
        write(root / filename, source)
    with pytest.raises(LoadError) as caught:
        loader.load(directory_candidate(root, "broken", entry))
    error = caught.value
    message = str(error)
    assert error.plugin == "broken"
    assert "'broken'" in message
    assert error.path == str(root / fault_file)
    assert str(root / fault_file) in message
    for fragment in fragments:
        assert fragment in message
    assert error.hint
    assert error.__cause__ is not None
    assert not private_keys("broken")
    assert loader.loaded("broken") is None


def test_hook_misfit_chains_pluggys_validation_error(loader: Loader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "misfit.py",
        """
        from helixhooks.markers import hookimpl

        @hookimpl
        def analyze(text, extra):
            return text
        """,
    )
    with pytest.raises(LoadError, match="extra") as caught:
        loader.load(file_candidate(path, "misfit"))
    assert isinstance(caught.value.__cause__, pluggy.PluginValidationError)
    assert not private_keys("misfit")


def test_failed_load_does_not_use_up_a_generation(loader: Loader, tmp_path: Path) -> None:
    path = write(tmp_path / "flaky.py", "raise RuntimeError('first try')\n")
    with pytest.raises(LoadError):
        loader.load(file_candidate(path, "flaky"))
    path.write_text("X = 2\n")
    loaded = loader.load(file_candidate(path, "flaky"))
    assert loaded.generation == 1
    assert loaded.module.X == 2
    loader.unload("flaky")


def make_distribution(site: Path, package: str, plugin_source: str) -> None:
    """A tiny installed distribution: a package and a dist-info with an entry point."""
    write(site / package / "__init__.py", "")
    write(site / package / "plugin.py", plugin_source)
    dist_info = site / f"{package}-1.0.dist-info"
    write(dist_info / "METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    write(
        dist_info / "entry_points.txt",
        f"[helixhooks.plugins]\n{package} = {package}.plugin:Plugin\n",
    )


def entry_point_candidate(package: str) -> PluginCandidate:
    (entry_point,) = importlib.metadata.distribution(package).entry_points.select(
        group="helixhooks.plugins"
    )
    info = PluginInfo(package, "1.0", entry=entry_point.value)
    return PluginCandidate(info, entry_point, "entry_point", distribution=package)


def test_entry_point_plugin_imports_under_its_real_name(
    loader: Loader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = "helix_test_demo_dist"
    make_distribution(
        tmp_path,
        package,
        """
        from helixhooks.markers import hookimpl

        class Plugin:
            @hookimpl
            def analyze(self, text):
                return "from the distribution"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = loader.load(entry_point_candidate(package))
    assert loaded.module.__name__ == f"{package}.plugin"
    assert sys.modules[f"{package}.plugin"] is loaded.module
    assert type(loaded.plugin).__name__ == "Plugin"
    assert loaded.modules == (package, f"{package}.plugin")
    assert call_own(loaded, "analyze", text="") == ["from the distribution"]
    loader.unload(package)
    assert package not in sys.modules
    assert f"{package}.plugin" not in sys.modules


def test_broken_entry_point_leaves_nothing_in_sys_modules(
    loader: Loader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = "helix_test_broken_dist"
    make_distribution(tmp_path, package, "raise ImportError('missing native library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError, match="missing native library") as caught:
        loader.load(entry_point_candidate(package))
    assert caught.value.plugin == package
    assert package not in sys.modules
    assert f"{package}.plugin" not in sys.modules


@given(st.from_regex(NAME_PATTERN, fullmatch=True), st.from_regex(NAME_PATTERN, fullmatch=True))
def test_private_names_are_distinct_dotted_identifiers(first: str, second: str) -> None:
    private = private_module(first, 1)
    assert private.startswith(PRIVATE_PACKAGE + ".")
    assert all(part.isidentifier() for part in private.split("."))
    assert (private == private_module(second, 1)) == (first == second)


class RankSpec:
    @hookspec(firstresult=True)
    def rank(self, text: str) -> int:
        """The first answer wins."""


def test_every_load_gets_the_hookspecs_whole(tmp_path: Path) -> None:
    # The second and later loads read the specs from the Loader's cache of them.
    loader = Loader(specs=[AgentSpec, RankSpec])
    fits = "from helixhooks.markers import hookimpl\n\n@hookimpl\ndef rank(text):\n    return 1\n"
    loads = [loader.load(file_candidate(write(tmp_path / f"p{i}.py", fits), f"p{i}")) for i in "ab"]
    for loaded in loads:
        assert call_own(loaded, "rank", text="") == [1]
        assert [hook for hook, _ in loaded.gen.impls] == ["rank"]
    misfit = write(tmp_path / "misfit.py", fits.replace("rank(text)", "rank(text, extra)"))
    with pytest.raises(LoadError, match="extra"):
        loader.load(file_candidate(misfit, "misfit"))
    for name in ("pa", "pb"):
        loader.unload(name)


def test_a_failed_load_leaves_none_of_its_submodules_behind(loader: Loader, tmp_path: Path) -> None:
    package = tmp_path / "half"
    write(package / "__init__.py", "")
    write(package / "good.py", "VALUE = 1\n")
    write(package / "plugin.py", "from . import good\nraise RuntimeError('late')\n")
    with pytest.raises(LoadError, match="late"):
        loader.load(directory_candidate(package, "half", "plugin"))
    assert not private_keys("half")
    # The generation is not used up either: the fixed plugin loads as g1.
    write(package / "plugin.py", "from . import good\n")
    loaded = loader.load(directory_candidate(package, "half", "plugin"))
    assert loaded.modules == tuple(
        f"{PRIVATE_PACKAGE}.half.g1{suffix}" for suffix in ("", ".good", ".plugin")
    )
    loader.unload("half")


# --- plugin code that would take the host down, and imports that need a hint -------------------


def test_sys_exit_at_import_is_a_load_error_naming_the_file_and_line(
    loader: Loader, tmp_path: Path
) -> None:
    path = write(tmp_path / "quitter.py", "import sys\n\nsys.exit(3)\n")
    with pytest.raises(LoadError) as caught:
        loader.load(file_candidate(path, "quitter"))
    error = caught.value
    assert error.plugin == "quitter"
    assert error.path == str(path)
    assert "called sys.exit(3) at import (line 3)" in error.message
    assert error.hint is not None and "must not exit the host" in error.hint
    assert isinstance(error.__cause__, SystemExit)
    assert not private_keys("quitter")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("raise SystemExit", "entry class Boom called sys.exit() in its constructor (line 3)"),
        ("raise SystemExit('bye')", "called sys.exit('bye') in its constructor"),
        ("raise GeneratorExit('odd')", "could not be instantiated: GeneratorExit: odd (line 3)"),
        ("raise Stop()", "could not be instantiated: Stop"),
    ],
)
def test_a_base_exception_in_the_constructor_is_a_load_error(
    loader: Loader, tmp_path: Path, body: str, fragment: str
) -> None:
    write(
        tmp_path / "boom" / "plugin.py",
        f"class Boom:\n    def __init__(self):\n        {body}\n\n"
        "class Stop(BaseException):\n    pass\n",
    )
    with pytest.raises(LoadError) as caught:
        loader.load(directory_candidate(tmp_path / "boom", "boom", "plugin:Boom"))
    assert fragment in caught.value.message
    assert caught.value.path == str(tmp_path / "boom" / "plugin.py")
    assert not private_keys("boom")


def test_a_base_exception_at_import_is_a_load_error(loader: Loader, tmp_path: Path) -> None:
    path = write(tmp_path / "odd.py", "class Stop(BaseException):\n    pass\n\nraise Stop('x')\n")
    with pytest.raises(LoadError, match=r"import raised Stop: x \(line 4\)") as caught:
        loader.load(file_candidate(path, "odd"))
    assert caught.value.hint is not None and "Exception subclass" in caught.value.hint


def test_keyboard_interrupt_at_import_still_goes_through(loader: Loader, tmp_path: Path) -> None:
    path = write(tmp_path / "ctrlc.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        loader.load(file_candidate(path, "ctrlc"))
    assert not private_keys("ctrlc")


def test_load_all_survives_a_plugin_that_exits_and_loads_the_good_one(tmp_path: Path) -> None:
    from helixhooks.config import Config
    from helixhooks.system import PluginSystem

    write(tmp_path / "good.py", 'PLUGIN_INFO = {"name": "good", "version": "1.0"}\n')
    write(
        tmp_path / "quitter.py",
        'import sys\nPLUGIN_INFO = {"name": "quitter", "version": "1.0"}\nsys.exit("bye")\n',
    )
    write(
        tmp_path / "ctor" / "plugin.toml",
        '[plugin]\nname = "ctor"\nversion = "1.0"\nentry = "plugin:Plugin"\n',
    )
    write(
        tmp_path / "ctor" / "plugin.py",
        "import sys\n\nclass Plugin:\n    def __init__(self):\n        sys.exit()\n",
    )
    system = PluginSystem(Config(plugin_dirs=[tmp_path], entry_point_group=None))

    system.load_all()

    assert system.get("good").state.value == "initialized"
    reasons = {problem.name: problem.reason for problem in system.problems}
    assert set(reasons) == {"quitter", "ctor"}
    assert "called sys.exit('bye') at import (line 3)" in reasons["quitter"]
    assert str(tmp_path / "quitter.py") in reasons["quitter"]
    assert "entry class Plugin called sys.exit() in its constructor" in reasons["ctor"]
    system.close()


def test_an_absolute_import_of_a_sibling_module_hints_the_relative_one(
    loader: Loader, tmp_path: Path
) -> None:
    root = tmp_path / "siblings"
    write(root / "plugin.py", "import helper\n")
    write(root / "helper.py", "")
    with pytest.raises(LoadError) as caught:
        loader.load(directory_candidate(root, "siblings", "plugin"))
    assert "No module named 'helper' (line 1)" in caught.value.message
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("use a relative import: from . import helper")
    # From a subpackage, the dots climb to the plugin directory.
    write(root / "plugin.py", "from .sub import deep\n")
    write(root / "sub" / "__init__.py", "")
    write(root / "sub" / "deep.py", "import helper\n")
    with pytest.raises(LoadError) as caught:
        loader.load(directory_candidate(root, "siblings", "plugin"))
    assert caught.value.path == str(root / "sub" / "deep.py")
    assert "from .. import helper" in (caught.value.hint or "")
    # A module that is nowhere gets no such hint.
    write(root / "plugin.py", "import not_installed_anywhere_xyz\n")
    with pytest.raises(LoadError) as caught:
        loader.load(directory_candidate(root, "siblings", "plugin"))
    assert "relative import" not in (caught.value.hint or "")


def test_a_single_file_plugin_with_a_relative_import_is_told_to_become_a_directory(
    loader: Loader, tmp_path: Path
) -> None:
    path = write(tmp_path / "lonely.py", "import os\nfrom . import helper\n")
    write(tmp_path / "helper.py", "")
    with pytest.raises(LoadError) as caught:
        loader.load(file_candidate(path, "lonely"))
    message = caught.value.message
    assert "a single-file plugin cannot use relative imports" in message
    assert "(line 2)" in message
    assert PRIVATE_PACKAGE not in str(caught.value)
    assert "directory plugin" in (caught.value.hint or "")


def test_a_private_module_name_never_shows_in_an_import_error(
    loader: Loader, tmp_path: Path
) -> None:
    root = tmp_path / "partial"
    write(root / "plugin.py", "from . import missing_thing\n")
    with pytest.raises(LoadError) as caught:
        loader.load(directory_candidate(root, "partial", "plugin"))
    assert PRIVATE_PACKAGE not in caught.value.message
    assert "<plugin partial>" in caught.value.message


CLASS_ONLY = """
from helixhooks.markers import hookimpl

PLUGIN_INFO = {"name": "classy", "version": "1.0"}

class Analyzer:
    @hookimpl
    def analyze(self, text):
        return text
"""


def test_a_module_entry_whose_hookimpls_are_on_a_class_logs_a_warning(
    loader: Loader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "classy.py", CLASS_ONLY)
    with caplog.at_level(logging.WARNING, logger="helixhooks.loader"):
        loader.load(file_candidate(path, "classy"))
    [record] = [r for r in caplog.records if r.name == "helixhooks.loader"]
    message = record.getMessage()
    assert "class Analyzer in it has hookimpls that will never run" in message
    assert '"entry": ":Analyzer"' in message
    caplog.clear()
    root = tmp_path / "pkg"
    write(root / "plugin.py", CLASS_ONLY)
    with caplog.at_level(logging.WARNING, logger="helixhooks.loader"):
        loader.load(directory_candidate(root, "pkgclassy", "plugin"))
    [record] = [r for r in caplog.records if r.name == "helixhooks.loader"]
    assert 'set entry = "plugin:Analyzer"' in record.getMessage()
    loader.unload("classy")
    loader.unload("pkgclassy")


def test_no_warning_when_the_module_has_hookimpls_of_its_own_or_entry_names_the_class(
    loader: Loader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = CLASS_ONLY + "\n@hookimpl\ndef helix_start():\n    pass\n"
    path = write(tmp_path / "mixed.py", own)
    imported = write(tmp_path / "imports.py", "from helixhooks.hookspecs import LifecycleSpec\n")
    named = write(tmp_path / "named.py", CLASS_ONLY)
    with caplog.at_level(logging.WARNING, logger="helixhooks.loader"):
        loader.load(file_candidate(path, "mixed"))
        loader.load(file_candidate(imported, "imports"))
        loader.load(file_candidate(named, "named", "named:Analyzer"))
    assert [r for r in caplog.records if r.name == "helixhooks.loader"] == []
    for name in ("mixed", "imports", "named"):
        loader.unload(name)


def test_two_entry_points_naming_one_object_fail_the_second_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = "helix_test_shared_object"
    write(tmp_path / "site" / package / "__init__.py", "")
    write(
        tmp_path / "site" / package / "plugin.py",
        """
        from helixhooks.markers import hookimpl

        class Plugin:
            started = 0

            @hookimpl
            def helix_start(self, ctx):
                Plugin.started += 1

        shared = Plugin()
        """,
    )
    dist_info = tmp_path / "site" / f"{package}-1.0.dist-info"
    write(dist_info / "METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    write(
        dist_info / "entry_points.txt",
        f"[helixhooks.plugins]\nfirst = {package}.plugin:shared\n"
        f"second = {package}.plugin:shared\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "plugins").mkdir()
    system = hh.PluginSystem(hh.Config(plugin_dirs=[tmp_path / "plugins"]))
    try:
        system.load_all()
        assert system.start_all() == ["first"]
        second = system.get("second")
        assert second.state is hh.PluginState.FAILED
        assert isinstance(second.error, LoadError)
        assert "same object as plugin 'first'" in str(second.error)
        # The second one never ran a lifecycle hook on the shared object.
        assert sys.modules[f"{package}.plugin"].Plugin.started == 1
    finally:
        system.close()
