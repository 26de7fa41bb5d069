"""The guard's two fronts: the C audit hook (helixhooks._audit) where it was built, the Python
hook where it was not. Each is exercised in a fresh interpreter, where the guard installs its
hook for the first time; the rest of the suite runs with whichever this interpreter has."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import helixhooks as hh
from helixhooks import _guard
from helixhooks.security import PermissionSet
from tests._plugins import systems, write_plugin

BUILT = importlib.util.find_spec("helixhooks._audit") is not None
NOT_BUILT = "helixhooks._audit is not built here (no compiler when installed, or a source tree "
NOT_BUILT += "without build_ext --inplace): the guard uses its Python hook"

WRITER = """
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def act(self, path):
        with open(path, "w") as file:
            file.write("written")
        return "wrote"
"""

HOST = """
import sys

if sys.argv[1] == "python":
    sys.modules["helixhooks._audit"] = None  # as if it had not been built
import helixhooks as hh
from helixhooks import _guard


class Spec:
    @hh.hookspec
    def act(self, path): ...


config = hh.Config(plugin_dirs=[sys.argv[2]], entry_point_group=None)
system = hh.PluginSystem(config, specs=[Spec])
with system:
    assert system.problems == [], system.problems
    print("front:", "C" if _guard._set_engaged is not None else "Python")
    print("inside:", system.hook.act(path=sys.argv[3]))
    try:
        system.hook.act(path=sys.argv[4])
    except hh.PermissionDenied as error:
        print("outside: denied", error.permission)
    print("denials:", dict(system.metrics.get_stats("writer").denials))
    # An audit hook runs untraced (CPython's rule for hooks in Python; the C hook keeps it).
    traced = set()
    sys.settrace(lambda frame, event, arg: traced.add(frame.f_code.co_name))
    open(sys.argv[3] + ".host", "w").close()  # a checked event: the guard walks the stack
    sys.settrace(None)
    print("traced the guard:", "_audit" in traced or "_acting_owner" in traced)
system.close()
print("engaged after close:", _guard._engaged)
"""


def test_the_guard_installs_the_c_hook_where_it_is_built() -> None:
    if not BUILT:
        pytest.skip(NOT_BUILT)
    from helixhooks import _audit

    _guard._install()
    assert _guard._set_engaged is _audit.set_engaged
    with pytest.raises(RuntimeError, match="installed already"):
        _audit.install(_guard._audit, (), (), _guard._module_owner, _guard._acting, {}, "tag")


@pytest.mark.parametrize(
    "front",
    [pytest.param("C", marks=pytest.mark.skipif(not BUILT, reason=NOT_BUILT)), "Python"],
)
def test_each_front_holds_a_plugin_to_its_write_scope(tmp_path: Path, front: str) -> None:
    scope = tmp_path / "scope"
    scope.mkdir()
    write_plugin(
        tmp_path / "plugins", "writer", WRITER, extra=f"permissions = [{f'write={scope}'!r}]\n"
    )
    inside, outside = scope / "in.txt", tmp_path / "out.txt"
    # The helixhooks this interpreter runs (a source tree or an installed one), and no other:
    # PYTHONPATH names it, and the working directory is not a source tree (python -c puts it
    # first on sys.path).
    where = str(Path(hh.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([where, os.environ.get("PYTHONPATH", "")])}
    paths = [str(tmp_path / "plugins"), str(inside), str(outside)]
    done = subprocess.run(
        [sys.executable, "-c", HOST, front.lower(), *paths],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"front: {front}",
        "inside: ['wrote']",
        "outside: denied write",
        "denials: {'write': 1}",
        "traced the guard: False",
        "engaged after close: 0",
    ]
    assert inside.read_text() == "written"
    assert not outside.exists()


SPAWNER = """
import pathlib
import threading
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def act(self, path):
        # Library code only on the thread's stack: its tag is what names the plugin.
        thread = threading.Thread(target=pathlib.Path(path).write_text, args=("x",))
        thread.start()
        thread.join()
        return "spawned"
"""


class Spec:
    @hh.hookspec
    def act(self, path: str) -> object: ...


@pytest.mark.skipif(not BUILT, reason=NOT_BUILT)
@pytest.mark.parametrize("actor", ["the host", "a plugin frame", "a tagged thread", "execute"])
def test_the_c_hook_calls_the_guard_only_when_a_plugin_may_be_acting(
    plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, actor: str
) -> None:
    # What the guard is asked to check is counted: the C hook settles the host's own events
    # (no plugin frame, no tag, no Sandbox.execute) without calling it.
    _guard._install()
    assert _guard._set_engaged is not None, "the Python hook was installed in this process"
    asked: list[tuple[object, ...]] = []

    def counted(args: tuple[object, ...]) -> list[tuple[str, object]]:
        asked.append(args)
        return _guard._open(args)

    monkeypatch.setitem(_guard._CHECKS, "open", counted)
    name, source = ("spawner", SPAWNER) if actor == "a tagged thread" else ("writer", WRITER)
    write_plugin(plugins, name, source, extra=f"permissions = ['write={tmp_path}']\n")
    target = tmp_path / "written.txt"
    with systems(plugins, [Spec]) as make, make() as system:
        if actor == "the host":
            target.write_text("the host's")
        elif actor == "execute":
            system.sandbox.execute(name, target.write_text, "on its behalf")
        else:
            system.hook.act(path=str(target))
    assert target.exists()
    assert [args[0] for args in asked].count(str(target)) == (0 if actor == "the host" else 1)


def test_a_module_is_the_plugins_from_its_admission_to_its_release(tmp_path: Path) -> None:
    # The answer "not a plugin's module" that either front keeps per module name is dropped when
    # the plugins admitted change; a module's __name__ is read afresh at every event.
    module = types.ModuleType("helixtest_late.mod")
    exec("def write(path):\n    open(path, 'w').close()\n", module.__dict__)
    denials: list[hh.PermissionDenied] = []
    late = _guard.Owner("late", PermissionSet(), denials.append)
    # Another plugin admitted all along: the guard looks at the module's events before too.
    bystander = _guard.Owner("bystander", PermissionSet(), denials.append)
    _guard.admit("helixtest_bystander", bystander)
    try:
        module.write(tmp_path / "before")
        _guard.admit("helixtest_late", late)
        try:
            with pytest.raises(hh.PermissionDenied):
                module.write(tmp_path / "during")
            module.__name__ = "helixtest_other.mod"
            module.write(tmp_path / "renamed")
        finally:
            _guard.release("helixtest_late", late)
        module.__name__ = "helixtest_late.mod"
        module.write(tmp_path / "after")
    finally:
        _guard.release("helixtest_bystander", bystander)
    assert [d.plugin for d in denials] == ["late"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after", "before", "renamed"]


class _NamedByGet(dict):  # type: ignore[type-arg]
    """Globals whose get() names another module than their "__name__" item does."""

    def get(self, key: object, default: object = None) -> object:
        return "helixtest_odd.mod" if key == "__name__" else super().get(key, default)


@pytest.mark.parametrize("globals_", ["a dict whose get() is its own", "an unhashable __name__"])
def test_a_frames_module_name_is_read_as_the_python_guard_reads_it(
    tmp_path: Path, globals_: str
) -> None:
    # Where the C hook cannot read a frame as frame.f_globals.get("__name__") does, the Python
    # guard decides: the same outcome from either front.
    namespace: dict[str, object]
    if globals_ == "a dict whose get() is its own":
        namespace = _NamedByGet(__name__="host_module")
    else:
        namespace = {"__name__": ["unhashable"]}
    exec("def write(path):\n    open(path, 'w').close()\n", namespace)
    write: Callable[[Path], None] = namespace["write"]  # type: ignore[assignment]
    denials: list[hh.PermissionDenied] = []
    owner = _guard.Owner("odd", PermissionSet(), denials.append)
    _guard.admit("helixtest_odd", owner)
    try:
        with pytest.raises(hh.PermissionDenied if globals_.startswith("a dict") else TypeError):
            write(tmp_path / "written")
    finally:
        _guard.release("helixtest_odd", owner)
    assert not (tmp_path / "written").exists()


# An "open" event's (mode, flags): builtins.open's modes, and os.open's flags (mode None).
OPENS = [
    *((mode, 0) for mode in ("r", "rb", "rt", "U", "rU", "w", "wb", "a", "x", "r+", "+")),
    *(
        (None, flags)
        for flags in (
            os.O_RDONLY,
            os.O_RDONLY | os.O_CLOEXEC,
            os.O_WRONLY,
            os.O_RDWR,
            os.O_RDONLY | os.O_APPEND,
            os.O_RDONLY | os.O_CREAT,
            os.O_RDONLY | os.O_TRUNC,
        )
    ),
]


@pytest.mark.parametrize("read_scoped", [False, True], ids=["no read scopes", "read scoped"])
@pytest.mark.parametrize(("mode", "flags"), OPENS)
def test_an_open_is_looked_at_as_the_guard_tells_a_write_from_a_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    read_scoped: bool,
    mode: str | None,
    flags: int,
) -> None:
    # One "open" event raised from an admitted module's frame: whether the guard looks for the
    # acting plugin. A read is looked at only while some plugin admitted declares read scopes;
    # either front lets it go before walking the stack (the C one in C), by _writes' rule.
    walks: list[object] = []
    acting_owner = _guard._acting_owner

    def counted(frame: types.FrameType | None) -> _guard.Owner | None:
        walks.append(frame)
        return acting_owner(frame)

    monkeypatch.setattr(_guard, "_acting_owner", counted)
    module = types.ModuleType("helixtest_opener.mod")
    exec("import sys\ndef opens(*args):\n    sys.audit('open', *args)\n", module.__dict__)
    asked = ["write", f"read={tmp_path}"] if read_scoped else ["write"]
    owner = _guard.Owner("opener", PermissionSet.parse(asked), lambda error: None)
    args = (str(tmp_path / "file"), mode, flags)
    _guard.admit("helixtest_opener", owner)
    try:
        module.opens(*args)
    finally:
        _guard.release("helixtest_opener", owner)
    assert len(walks) == (1 if read_scoped or _guard._writes(args) else 0)
