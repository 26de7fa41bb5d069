"""Watcher: real files, real editors, real inotify, and a real inotify failure.

Every wait has a deadline. "Nothing arrives" is shown with a sentinel: debris is written, then a
file that must be reported; inotify reports in order, so what would have come of the debris comes
before the sentinel's change, and a short window after it catches a polling batch's stragglers.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.events import FileMovedEvent

import helixhooks
from helixhooks.config import Config
from helixhooks.errors import HelixError
from helixhooks.watcher import Change, Watcher, _Handler

# watchdog 7 warns when a tree is created faster than it adds watches (it adds one twice, with
# the same callback); harmless here, but it would make the test summary look like a problem.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id .* already exists:RuntimeWarning")

DEADLINE = 5.0
STRAGGLERS = 0.3

DEBRIS = [
    "plugin.py.swp",
    ".plugin.py.swx",
    ".plugin.py.swo",
    "plugin.py~",
    "4913",
    "plugin.py___jb_tmp___",
    "plugin.py___jb_old___",
    ".goutputstream-XK3J1Z",
    ".#plugin.py",
    "plugin.pyc",
    "plugin.pyo",
    "native.pyd",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "plugins").mkdir()
    return tmp_path / "plugins"


@pytest.fixture
def watcher(root: Path) -> Iterator[Watcher]:
    with Watcher(Config()) as watcher:
        watcher.add(root)
        yield watcher


def wait_for(
    watcher: Watcher, wanted: Change | Callable[[Change], bool], timeout: float = DEADLINE
) -> list[Change]:
    """The changes up to and including the first that is ``wanted``; fails at the deadline."""
    matches = wanted.__eq__ if isinstance(wanted, Change) else wanted
    seen: list[Change] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        change = watcher.get(timeout=left)
        if change is not None:
            seen.append(change)
            if matches(change):
                return seen
    pytest.fail(f"no {wanted} within {timeout}s; saw {seen}")


def until_sentinel(watcher: Watcher, sentinel: Path) -> list[Change]:
    """Everything before ``sentinel`` is reported, and what comes just after, less rescans."""
    sentinel.write_text("sentinel")
    seen = wait_for(watcher, Change(sentinel, "created"))
    deadline = time.monotonic() + STRAGGLERS
    while (left := deadline - time.monotonic()) > 0:
        change = watcher.get(timeout=left)
        if change is not None:
            seen.append(change)
    return [change for change in seen if change.path != sentinel and change.kind != "rescan"]


@pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")
def test_mode_is_inotify_on_linux(watcher: Watcher) -> None:
    assert watcher.mode == "inotify"


def test_in_place_write_is_reported(watcher: Watcher, root: Path) -> None:
    plugin = root / "plugin.py"
    plugin.write_text("x = 1\n")
    wait_for(watcher, Change(plugin, "created"))
    with plugin.open("r+") as file:  # in place: same inode, no rename
        file.write("x = 2\n")
    wait_for(watcher, Change(plugin, "modified"))


def test_atomic_rename_reports_the_destination(watcher: Watcher, root: Path) -> None:
    plugin = root / "plugin.py"
    temporary = root / ".plugin.py.tmp-1234"
    temporary.write_text("x = 1\n")
    os.replace(temporary, plugin)
    seen = wait_for(watcher, Change(plugin, "created"))
    assert Change(temporary, "deleted") in seen


def test_jetbrains_safe_write_reports_only_the_real_file(watcher: Watcher, root: Path) -> None:
    plugin = root / "plugin.py"
    plugin.write_text("x = 1\n")
    # The dance: write a temporary, move the original aside, move the temporary in, delete the old.
    (root / "plugin.py___jb_tmp___").write_text("x = 2\n")
    os.replace(plugin, root / "plugin.py___jb_old___")
    os.replace(root / "plugin.py___jb_tmp___", plugin)
    (root / "plugin.py___jb_old___").unlink()
    seen = until_sentinel(watcher, root / "sentinel.py")
    assert {change.path for change in seen} == {plugin}
    assert seen[-1] in (Change(plugin, "created"), Change(plugin, "modified"))


@pytest.mark.skipif(shutil.which("vim") is None, reason="needs vim")
def test_vim_save_reports_only_the_real_file(root: Path) -> None:
    plugin = root / "plugin.py"
    plugin.write_text("x = 1\n")
    with Watcher(Config()) as watcher:
        watcher.add(root)
        # Vim's own defaults, not vi's: back up by renaming (probing with "4913" first), even in
        # /tmp, which 'backupskip' leaves out by default.
        options = "set backupcopy=auto writebackup backupskip="
        edit = ["-c", options, "-c", "normal Ax", "-c", "wq", str(plugin)]
        subprocess.run(
            ["vim", "-Es", "-u", "NONE", "-i", "NONE", "-N", *edit],
            stdin=subprocess.DEVNULL,
            timeout=DEADLINE,
            check=True,
        )
        seen = until_sentinel(watcher, root / "sentinel.py")
    assert plugin.read_text() == "x = 1x\n"
    assert seen and {change.path for change in seen} == {plugin}


def test_debris_is_ignored(watcher: Watcher, root: Path) -> None:
    for name in DEBRIS:
        (root / name).write_text("debris")
    cache = root / "pkg" / "__pycache__"
    cache.mkdir(parents=True)
    (cache / "plugin.cpython-311.pyc").write_bytes(b"\0")
    (cache / "plugin.cpython-311.opt-1.pyc").write_bytes(b"\0")
    seen = until_sentinel(watcher, root / "sentinel.py")
    assert seen == [Change(root / "pkg", "created")]


def test_debris_renamed_onto_debris_is_ignored(watcher: Watcher, root: Path) -> None:
    (root / ".plugin.py.swx").write_text("probe")
    os.replace(root / ".plugin.py.swx", root / "4913")
    assert until_sentinel(watcher, root / "sentinel.py") == []


def test_subdirectories_are_watched_including_new_ones(watcher: Watcher, root: Path) -> None:
    sub = root / "sub"
    sub.mkdir()
    wait_for(watcher, Change(sub, "created"))
    (sub / "plugin.py").write_text("x = 1\n")
    wait_for(watcher, Change(sub / "plugin.py", "created"))
    # A whole tree at once: the file may be written before the new directories are watched.
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "plugin.py").write_text("x = 1\n")
    wait_for(watcher, lambda change: change.path == deep / "plugin.py")


def test_deletion_is_reported(watcher: Watcher, root: Path) -> None:
    plugin = root / "plugin.py"
    plugin.write_text("x = 1\n")
    wait_for(watcher, Change(plugin, "created"))
    plugin.unlink()
    wait_for(watcher, Change(plugin, "deleted"))


def test_moves_in_and_out(watcher: Watcher, root: Path, tmp_path: Path) -> None:
    plugin = root / "plugin.py"
    outside = tmp_path / "plugin.py"
    outside.write_text("x = 1\n")
    os.replace(outside, plugin)
    wait_for(watcher, Change(plugin, "created"))
    os.replace(plugin, outside)
    wait_for(watcher, Change(plugin, "deleted"))


def test_a_renamed_directory_is_deleted_and_created(watcher: Watcher, root: Path) -> None:
    (root / "old").mkdir()
    wait_for(watcher, Change(root / "old", "created"))
    (root / "old").rename(root / "new")
    seen = wait_for(watcher, Change(root / "new", "created"))
    assert Change(root / "old", "deleted") in seen


def test_polling_sees_a_write_within_a_few_intervals(root: Path) -> None:
    with Watcher(Config(watch_interval=0.1), polling=True) as watcher:
        watcher.add(root)
        assert watcher.mode == "polling"
        plugin = root / "plugin.py"
        plugin.write_text("x = 1\n")
        wait_for(watcher, Change(plugin, "created"), timeout=2.0)
        for name in DEBRIS:
            (root / name).write_text("debris")
        assert until_sentinel(watcher, root / "sentinel.py") == []


def test_rescan_ticks_name_each_watched_directory(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with Watcher(Config(), rescan_every=0.2) as watcher:
        watcher.add(first)
        watcher.add(second)
        wait_for(watcher, Change(first, "rescan"))
        wait_for(watcher, Change(second, "rescan"))
        wait_for(watcher, Change(first, "rescan"))  # and again: it is periodic


def test_a_dead_inotify_reader_is_replaced_by_polling(root: Path) -> None:
    with Watcher(Config(watch_interval=0.1), rescan_every=0.2) as watcher:
        watcher.add(root)
        assert watcher.mode == "inotify"
        # The reader thread ends, as when an exception escapes it: events stop coming.
        for emitter in list(watcher._observer.emitters):
            emitter.stop()
            emitter.join(DEADLINE)
        wait_for(watcher, Change(root, "rescan"))
        assert watcher.mode == "polling"
        (root / "plugin.py").write_text("x = 1\n")
        wait_for(watcher, lambda change: change.path == root / "plugin.py")


def test_adding_a_directory_twice_watches_it_once(watcher: Watcher, root: Path) -> None:
    watcher.add(root)
    watcher.add(root / "." / "sub" / "..")
    plugin = root / "plugin.py"
    plugin.write_text("x = 1\n")
    seen = [*wait_for(watcher, Change(plugin, "created")), *until_sentinel(watcher, root / "s.py")]
    assert seen.count(Change(plugin, "created")) == 1


def test_adding_a_missing_directory_says_what_to_do(tmp_path: Path) -> None:
    with Watcher(Config()) as watcher:
        with pytest.raises(HelixError, match="does not exist") as missing:
            watcher.add(tmp_path / "nowhere")
        assert missing.value.path == str(tmp_path / "nowhere")
        assert "(fix: create it first, or correct the path" in str(missing.value)
        (tmp_path / "file.py").write_text("")
        with pytest.raises(HelixError, match="only a directory"):
            watcher.add(tmp_path / "file.py")


@pytest.mark.parametrize("polling", [None, True])
def test_close_is_idempotent_and_stops_every_thread(root: Path, polling: bool | None) -> None:
    before = set(threading.enumerate())
    watcher = Watcher(Config(watch_interval=0.1), polling=polling, rescan_every=0.2)
    watcher.add(root)
    (root / "plugin.py").write_text("x = 1\n")
    wait_for(watcher, Change(root / "plugin.py", "created"))
    closers = [threading.Thread(target=watcher.close) for _ in range(2)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(DEADLINE)
    watcher.close()
    deadline = time.monotonic() + DEADLINE
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(HelixError, match="closed"):
        watcher.add(root)


def test_paths_given_as_bytes_are_decoded(root: Path) -> None:
    # Some watchdog versions give bytes paths for a bytes watch; the handler takes either.
    sink: queue.Queue[Change] = queue.Queue()
    source, dest = os.fsencode(root / "x___jb_tmp___"), os.fsencode(root / "x.py")
    _Handler(root, sink).dispatch(FileMovedEvent(source, dest))
    assert sink.get_nowait() == Change(root / "x.py", "created")
    assert sink.empty()


# The inotify failure is real: a user namespace of our own, with its inotify limits lowered.
_FALLBACK = """
import json, logging, sys, time
from pathlib import Path
from helixhooks.config import Config
from helixhooks.watcher import Watcher

warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("helixhooks.watcher").addHandler(handler)
modes, seen = [], []
with Watcher(Config(watch_interval=0.1)) as watcher:
    for directory in map(Path, sys.argv[1:]):
        watcher.add(directory)
        modes.append(watcher.mode)
    for directory in map(Path, sys.argv[1:]):
        (directory / "plugin.py").write_text("x = 1")
    wanted = {Path(directory) / "plugin.py" for directory in sys.argv[1:]}
    deadline = time.monotonic() + 5
    while wanted - set(seen) and time.monotonic() < deadline:
        change = watcher.get(timeout=0.1)
        if change is not None and change.kind != "rescan":
            seen.append(change.path)
print(json.dumps({"modes": modes, "seen": sorted(map(str, set(seen))), "warnings": warnings}))
"""


def _in_namespace(limit: str, value: int, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a new user namespace whose ``fs.inotify`` ``limit`` is ``value``."""
    lower = 'echo "$2" > "/proc/sys/user/$1" && shift 2 && exec "$@"'
    return subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            lower,
            "sh",
            limit,
            str(value),
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": str(Path(helixhooks.__file__).parents[1])},
    )


@pytest.fixture(scope="module")
def namespaces() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to lower inotify limits in a user namespace")
    probe = _in_namespace("max_inotify_instances", 0, "true")
    if probe.returncode != 0:
        pytest.skip(f"no user namespace with its own inotify limits: {probe.stderr.strip()}")


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize(
    ("limit", "value", "modes", "reason"),
    [
        # No inotify instance at all: polling from the start (or from the first add, by version).
        ("max_inotify_instances", 0, ["polling", "polling"], "instance limit reached"),
        # Room for the first directory's watch only: the second add moves both to polling.
        ("max_inotify_watches", 1, ["inotify", "polling"], "watch limit reached"),
    ],
)
def test_falls_back_to_polling_where_inotify_fails(
    tmp_path: Path, limit: str, value: int, modes: list[str], reason: str
) -> None:
    directories = [tmp_path / "first", tmp_path / "second"]
    for directory in directories:
        directory.mkdir()
    run = _in_namespace(limit, value, sys.executable, "-c", _FALLBACK, *map(str, directories))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["modes"] == modes
    assert result["seen"] == [str(directory / "plugin.py") for directory in directories]
    [warning] = result["warnings"]
    assert reason in warning and "polling every 0.1s" in warning
    if limit == "max_inotify_watches":
        assert str(directories[1]) in warning


_REFUSE = """
import sys
from helixhooks.config import Config
from helixhooks.errors import HelixError
from helixhooks.watcher import Watcher

try:
    with Watcher(Config(), polling=False) as watcher:
        watcher.add(sys.argv[1])
except HelixError as exc:
    print(exc)
"""


@pytest.mark.usefixtures("namespaces")
def test_polling_false_refuses_to_fall_back(tmp_path: Path) -> None:
    run = _in_namespace("max_inotify_watches", 0, sys.executable, "-c", _REFUSE, str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "cannot watch for changes: inotify watch limit reached" in run.stdout
    assert "max_user_watches" in run.stdout
