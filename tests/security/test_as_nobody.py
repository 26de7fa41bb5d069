"""The process tier for an ordinary user: a whole host running as ``nobody`` confines its worker.

Namespaces, Landlock and seccomp all work without root; this proves it by running the host
itself as ``nobody`` (which needs this test to run as root, to switch to it) under an
interpreter nobody can execute, with a copy of helixhooks and its dependencies on its PYTHONPATH.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest

import helixhooks as hh

HOST = """
import json, os, sys
import helixhooks as hh

class Spec:
    @hh.hookspec(firstresult=True)
    def attack(self, code): ...

config = hh.Config(plugin_dirs=[sys.argv[1]], entry_point_group=None, data_dir=sys.argv[2])
system = hh.PluginSystem(config, specs=[Spec])
system.load_all()
system.start_all()
result = {"problems": [p.reason for p in system.problems], "uid": os.getuid()}
if not result["problems"]:
    result["layers"] = system.get("evil").layers
    result["capabilities"] = hh.Sandbox.capabilities()
    result["worker_uid"] = system.hook.attack(code="result = os.getuid()")
    result["env"] = system.hook.attack(code="result = sorted(os.environ)")
    try:
        system.hook.attack(code=f"socket.create_connection(('127.0.0.1', {sys.argv[3]}), 5)")
        result["connect"] = "connected"
    except OSError as exc:
        result["connect"] = type(exc).__name__
    try:
        system.hook.attack(code="open('/etc/hostname').read()")
        result["read"] = "read"
    except OSError as exc:
        result["read"] = type(exc).__name__
system.close()
print(json.dumps(result))
"""

PLUGIN = """
import os, socket
import helixhooks as hh

class Plugin:
    @hh.hookimpl
    def attack(self, code):
        scope = {"os": os, "socket": socket}
        exec(code, scope)
        return scope.get("result")
"""


def _interpreter() -> str:
    """An interpreter of this Python version that nobody may execute (pyenv's may sit under
    /root), or a skip saying why there is none."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        if candidate and Path(candidate).exists() and _nobody_runs([candidate, "-c", "pass"]):
            return candidate
    pytest.skip(f"no Python {version} interpreter that the user nobody may run")


def _nobody_runs(command: list[str], **kwargs: object) -> bool:
    try:
        probe = subprocess.run(command, user="nobody", capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload]
    except PermissionError:  # the interpreter itself, or a directory on its way
        return False
    return probe.returncode == 0


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody can read and write (pytest's own temporary ones are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="helixhooks-nobody-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(
    os.getuid() != 0,
    reason="switching to nobody needs root; as an ordinary "
    "user, the rest of the process-tier suite is this test",
)
def test_a_host_running_as_nobody_confines_its_worker(shared_dir: Path) -> None:
    python = _interpreter()
    nobody = pwd.getpwnam("nobody")
    # helixhooks and its dependencies, copied where nobody can read them (a tox env, say, may be
    # private to its owner).
    import attr
    import attrs
    import packaging
    import watchdog

    site = shared_dir / "site"
    for module in (hh, pluggy, attr, attrs, packaging, watchdog):
        package = Path(module.__file__).resolve().parent  # type: ignore[arg-type]
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("helixhooks", "pluggy", "attrs", "packaging", "watchdog"):  # versions are read
        dist = importlib.metadata.distribution(name)
        found = Path(str(dist.locate_file(""))).glob(f"{name}-{dist.version}.dist-info")
        for info in found:
            shutil.copytree(info, site / info.name)
    env = {"PYTHONPATH": str(site), "HOST_SECRET": "s3cret"}
    if not _nobody_runs([python, "-c", "import helixhooks, pluggy, attrs, watchdog"], env=env):
        pytest.skip(f"nobody cannot import helixhooks and its dependencies from {site}")
    plugin = shared_dir / "plugins" / "evil"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text(
        '[plugin]\nname = "evil"\nversion = "1.0.0"\nentry = "plugin:Plugin"\n'
        'isolation = "process"\n'
    )
    (plugin / "plugin.py").write_text(textwrap.dedent(PLUGIN))
    (shared_dir / "host.py").write_text(HOST)
    data = shared_dir / "data"
    data.mkdir()
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        run = subprocess.run(
            [
                python,
                str(shared_dir / "host.py"),
                str(shared_dir / "plugins"),
                str(data),
                str(listener.getsockname()[1]),
            ],
            user="nobody",
            env=env,
            cwd=shared_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        listener.close()
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["problems"] == []
    assert result["uid"] == result["worker_uid"] == nobody.pw_uid
    assert "HOST_SECRET" not in result["env"]
    for layer in ("namespaces", "landlock-fs", "seccomp", "rlimits", "pdeathsig"):
        if result["capabilities"].get(layer) == "available":
            assert result["layers"][layer] == "active", (layer, result["layers"])
    assert result["connect"] != "connected"
    assert result["read"] != "read"
