"""The helix_system fixture, used the way a plugin author would: in a pytest run of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_helix_system_fixture_starts_and_stops_plugins(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    (plugins / "demo").mkdir(parents=True)
    (plugins / "demo" / "plugin.toml").write_text(
        '[plugin]\nname = "demo"\nversion = "1.0.0"\nentry = "plugin:Demo"\n'
        f"permissions = [{'write=' + str(tmp_path)!r}]\n"
    )
    log = tmp_path / "log.txt"
    (plugins / "demo" / "plugin.py").write_text(
        "import helixhooks as hh\n"
        "class Demo:\n"
        "    @hh.hookimpl\n"
        f"    def helix_stop(self):\n        open({str(log)!r}, 'a').write('stopped')\n"
        "    @hh.hookimpl\n"
        "    def shout(self, text):\n        return text.upper()\n"
    )
    (tmp_path / "test_demo.py").write_text(
        "import helixhooks as hh\n"
        "class Spec:\n"
        "    @hh.hookspec\n"
        "    def shout(self, text): ...\n"
        "def test_demo(helix_system):\n"
        "    system = helix_system('plugins', specs=[Spec])\n"
        "    assert system.hook.shout(text='hi') == ['HI']\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:helixhooks",
            "-p",
            "helixhooks.pytest_plugin",
            "test_demo.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert log.read_text() == "stopped"
