"""1,000 reloads of one plugin: RSS and ``sys.modules`` stay flat.

DESIGN target: 1,000 reloads of one plugin: ``sys.modules`` size and RSS flat (<= 5 MB growth).
Run from the repo root: ``.venv/bin/python bench/reload_soak.py`` (``--quick``: 200 reloads;
``--reloads N`` for another count; the other options below vary the load).

A started ``PluginSystem(Config(plugin_dirs=[root]), specs=[Spec])`` (hot reload off) with five
directory plugins. One of them is reloaded ``--reloads`` times with ``system.reload(name)``, its
plugin.py rewritten before each with a new tag, so each reload is a real new generation (new
code, a new private module). Its state goes across each reload (``helix_save_state`` /
``helix_restore_state`` count the reloads). After each reload the host calls the hook
``--calls`` times (default 10) through ``system.hook`` and once through the plugin's handle,
each checked to answer the new tag. Nothing reads the metrics unless ``--read-metrics``
(``Metrics.snapshot()`` after each reload). ``--ballast KIB`` gives each generation's module
that much data, so that generations kept alive show in RSS.

Measured after a warm-up of 20 reloads, then every 100 reloads and at the end, each after
``gc.collect()``: the current RSS (``/proc/self/statm`` resident pages x page size; not the
peak), ``len(sys.modules)``, the gc-tracked objects (less the benchmark's own weak references),
and how many retired generations are alive, from weak references to each one's plugin instance
and class (a live class keeps its module's globals): just before the collection (waiting for
the cyclic gc) and just after it (kept by something: a leak).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pluggy
from _report import print_results, result

import helixhooks as hh

WARMUP = 20
EVERY = 100
TARGET_BYTES = 5_000_000  # 5 MB
OTHERS = 4  # plugins besides the reloaded one

PLUGIN = """\
import helixhooks as hh

BALLAST = bytearray({ballast})


class Plugin:
    @hh.hookimpl
    def helix_init(self, config, ctx):
        self.reloads = 0

    @hh.hookimpl
    def helix_save_state(self, ctx):
        return self.reloads + 1

    @hh.hookimpl
    def helix_restore_state(self, state, ctx):
        self.reloads = state

    @hh.hookimpl
    def tag(self):
        return "{name}:{tag}"
"""


class Spec:
    @hh.hookspec
    def tag(self) -> str:  # type: ignore[empty-body]
        """This plugin's name and the tag its current code carries."""


def write_plugin(root: Path, name: str, tag: str, ballast: int) -> None:
    """A directory plugin: plugin.toml, and plugin.py answering ``name:tag``."""
    directory = root / name
    directory.mkdir(exist_ok=True)
    (directory / "plugin.toml").write_text(
        f'[plugin]\nname = "{name}"\nversion = "1.0.0"\nentry = "plugin:Plugin"\n'
    )
    (directory / "plugin.py").write_text(PLUGIN.format(name=name, tag=tag, ballast=ballast))


def rss() -> int:
    """Resident set size now, in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def snapshot() -> tuple[int, int, int]:
    """(RSS bytes, len(sys.modules), gc-tracked objects), after a full collection."""
    gc.collect()
    return rss(), len(sys.modules), len(gc.get_objects())


def alive(
    instances: list[weakref.ref[object]], classes: list[weakref.ref[type]]
) -> tuple[int, int]:
    """How many retired generations' plugin instances, and classes (so modules), are alive."""
    return sum(1 for ref in instances if ref() is not None), sum(
        1 for ref in classes if ref() is not None
    )


def mb(size: float) -> str:
    return f"{size / 1e6:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="200 reloads")
    parser.add_argument("--reloads", type=int, help="reloads after the warm-up (default 1,000)")
    parser.add_argument(
        "--ballast", type=int, default=0, help="KiB each generation's module holds (default 0)"
    )
    parser.add_argument(
        "--calls", type=int, default=10, help="broadcast hook calls after each reload (default 10)"
    )
    parser.add_argument(
        "--read-metrics",
        action="store_true",
        help="read the metrics (Metrics.snapshot(), which folds buffered timings) each reload",
    )
    args = parser.parse_args()
    calls = args.calls
    reloads = args.reloads or (200 if args.quick else 1_000)

    print(
        f"{reloads:,} reloads of one plugin (after {WARMUP} warm-up reloads) through "
        f"system.reload, file rewritten each time, {calls} broadcast calls and one through "
        f"the handle after each{', metrics read' if args.read_metrics else ''}, "
        f"{args.ballast} KiB module ballast; "
        f"Python {sys.version.split()[0]}, pluggy {pluggy.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="helix-soak-") as tmp:
        root = Path(tmp)
        name = "soaked"
        ballast = args.ballast * 1024
        write_plugin(root, name, "r0", ballast)
        for i in range(OTHERS):
            write_plugin(root, f"other{i}", "v0", ballast)
        system = hh.PluginSystem(hh.Config(plugin_dirs=[root]), specs=[Spec])
        system.load_all()
        system.start_all()
        if system.problems or len(system.names()) != OTHERS + 1:
            raise SystemExit(f"benchmark plugins did not load: {system.problems}")
        handle = system.get(name)
        # Two lists of weak references, not one of pairs: a pair is one more gc-tracked object.
        instances: list[weakref.ref[object]] = []
        classes: list[weakref.ref[type]] = []
        done = 0
        leaked: list[int] = []  # samples at which a retired generation outlived gc.collect()

        def reload_once() -> None:
            nonlocal done
            done += 1
            tag = f"r{done}"
            old = handle.plugin
            instances.append(weakref.ref(old))
            classes.append(weakref.ref(type(old)))
            del old
            write_plugin(root, name, tag, ballast)
            system.reload(name)
            wanted = f"{name}:{tag}"
            for _ in range(calls):
                if wanted not in system.hook.tag():
                    raise SystemExit(f"the hook does not answer {wanted!r} after reload {done}")
            if handle.call("tag") != wanted:
                raise SystemExit(f"{name}'s own impl does not answer {wanted!r}")
            if args.read_metrics:
                system.metrics.snapshot()

        def sample() -> tuple[int, int, int, int, str]:
            """(RSS, sys.modules, gc objects, instances alive, alive before/after a collect)."""
            waiting, modules = alive(instances, classes)
            now_rss, module_count, objects = snapshot()
            # Less the benchmark's own weak references, which the gc tracks too.
            objects -= len(instances) + len(classes)
            instances_after, modules_after = alive(instances, classes)
            if instances_after or modules_after:
                leaked.append(done)
            return (
                now_rss,
                module_count,
                objects,
                waiting,
                f"{waiting}/{modules} -> {instances_after}/{modules_after}",
            )

        for _ in range(WARMUP):
            reload_once()
        start_rss, start_modules, start_objects, _, start_alive = sample()
        began = time.perf_counter()
        print(
            f"{'reloads':>8} {'RSS MB':>8} {'growth MB':>10} {'sys.modules':>12} "
            f"{'gc objects':>11}  retired generations alive, instance/class: before -> after "
            "gc.collect()"
        )
        print(
            f"{0:>8} {mb(start_rss):>8} {mb(0):>10} {start_modules:>12} {start_objects:>11}  "
            f"{start_alive}"
        )
        most_waiting = 0
        end_rss, end_modules, end_objects = start_rss, start_modules, start_objects
        for i in range(1, reloads + 1):
            reload_once()
            if i % EVERY == 0 or i == reloads:
                end_rss, end_modules, end_objects, waiting, now_alive = sample()
                most_waiting = max(most_waiting, waiting)
                print(
                    f"{i:>8} {mb(end_rss):>8} {mb(end_rss - start_rss):>10} {end_modules:>12} "
                    f"{end_objects:>11}  {now_alive}"
                )
        spent = time.perf_counter() - began
        carried = getattr(handle.plugin, "reloads", None)
        system.close()
        gc.collect()
        left = max(alive(instances, classes))
    grown = end_rss - start_rss
    print(
        f"{reloads:,} reloads in {spent:.1f} s ({spent / reloads * 1e3:.2f} ms each with the "
        f"rewrite and {calls + 1} calls); state carried across {carried} of {done} reloads"
    )
    print(
        f"retired generations still alive after a gc.collect(): "
        f"{'none' if not leaked else f'some, at reloads {leaked}'}; after close(): {left} of "
        f"{len(instances)}; waiting for the cyclic gc at a sample: up to {most_waiting}"
    )
    verdict = "met" if grown <= TARGET_BYTES else "MISSED"
    print(f"target RSS growth <= {mb(TARGET_BYTES)} MB: {mb(grown)} MB {verdict}")
    verdict = "met" if end_modules <= start_modules else "MISSED"
    print(f"target sys.modules flat: {start_modules} -> {end_modules} {verdict}")
    print(
        f"(gc-tracked objects: {start_objects} -> {end_objects}, {end_objects - start_objects:+})"
    )
    result(
        f"{reloads:,} reloads of one plugin: RSS growth",
        anchor=f"RSS {mb(start_rss)} MB after {WARMUP} reloads",
        ours=f"+{mb(grown)} MB",
        ratio=None,
        target=f"<= {mb(TARGET_BYTES)} MB",
        met=grown <= TARGET_BYTES,
    )
    result(
        f"{reloads:,} reloads of one plugin: sys.modules",
        anchor=f"{start_modules} modules",
        ours=f"{end_modules} modules",
        ratio=None,
        target="flat",
        met=end_modules <= start_modules,
    )
    print_results()


if __name__ == "__main__":
    main()
