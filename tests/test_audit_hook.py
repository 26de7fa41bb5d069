"""The guard's two fronts: the C audit hook (helixhooks._audit) where it was built, the Python
hook where it was not. Each is exercised in a fresh interpreter, where the guard installs its
hook for the first time; the rest of the suite runs with whichever this interpreter has."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import helixhooks
from helixhooks import _guard
from tests._plugins import write_plugin

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
        _audit.install(_guard._audit, ())


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
    where = str(Path(helixhooks.__file__).parents[1])
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
