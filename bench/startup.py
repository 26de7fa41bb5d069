"""Load, init and start N plugins through PluginSystem, beside importing the modules by hand.

The anchor does the least a host could: importlib each plugin.py from its file, instantiate the
class, call helix_init and helix_start directly, register it with a bare pluggy PluginManager.
Run: python bench/startup.py
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pluggy

import helixhooks as hh

PLUGIN = """
import helixhooks as hh


class Plugin:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.factor = config.get("factor", 2)

    @hh.hookimpl
    def helix_start(self, ctx):
        self.started = True

    @hh.hookimpl
    def work(self, value):
        return value * self.factor
"""


class Spec:
    @hh.hookspec
    def work(self, value: int) -> int: ...


def _generate(root: Path, count: int) -> None:
    for i in range(count):
        directory = root / f"p{i:05d}"
        directory.mkdir()
        deps = f'dependencies = ["p{i - 1:05d} ^1.0"]\n' if i % 4 else ""
        (directory / "plugin.toml").write_text(
            f'[plugin]\nname = "p{i:05d}"\nversion = "1.{i}.0"\nentry = "plugin:Plugin"\n{deps}'
            "[config]\nfactor = 3\n"
        )
        (directory / "plugin.py").write_text(PLUGIN)


def _ours(root: Path) -> float:
    system = hh.PluginSystem(hh.Config(plugin_dirs=[root], entry_point_group=None), specs=[Spec])
    begin = time.perf_counter()
    system.load_all()
    system.start_all()
    elapsed = time.perf_counter() - begin
    assert not system.problems, system.problems[:3]
    system.stop_all()
    for name in system.names():
        system.unload(name)
    return elapsed


_runs = 0


def _by_hand(root: Path) -> float:
    global _runs
    _runs += 1
    pm = pluggy.PluginManager("helixhooks")
    pm.add_hookspecs(Spec)
    begin = time.perf_counter()
    for directory in sorted(root.iterdir()):
        name = f"_bench_by_hand.r{_runs}.{directory.name}"
        spec = importlib.util.spec_from_file_location(name, directory / "plugin.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        plugin = module.Plugin()
        plugin.helix_init({"factor": 3}, None)
        plugin.helix_start(None)
        pm.register(plugin, name=directory.name)
    elapsed = time.perf_counter() - begin
    for name in [m for m in sys.modules if m.startswith(f"_bench_by_hand.r{_runs}.")]:
        del sys.modules[name]
    return elapsed


def main() -> None:
    print(f"{'plugins':>8} {'helixhooks':>12} {'by hand':>12} {'ratio':>7}")
    previous = None
    for count in (50, 200, 800):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            _generate(root, count)
            ours, anchor = [], []
            for _ in range(5):
                anchor.append(_by_hand(root))
                ours.append(_ours(root))
            ours_s, anchor_s = statistics.median(ours), statistics.median(anchor)
            growth = f"  growth x{ours_s / previous:.1f}" if previous else ""
            previous = ours_s
            print(
                f"{count:>8} {ours_s * 1000:>10.1f}ms {anchor_s * 1000:>10.1f}ms "
                f"{ours_s / anchor_s:>6.2f}x{growth}"
            )


if __name__ == "__main__":
    main()
