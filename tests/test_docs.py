"""Every code block of README.md and docs/*.md is executed here, so the docs cannot rot.

Each Markdown file is one test. Its blocks run in the order they appear, in a fresh temporary
directory (the *project*) that holds a copy of ``examples/`` under the same name, as a clone
of this repository would; blocks of one file share that directory and one Python namespace,
so a later block builds on what an earlier one wrote, defined or started. What "executed" means
for each kind of block (the word after the opening fence):

``python``
    If its first line is a file-name comment (``# plugins/hello/plugin.py``), the block is that
    file: it is compiled, and written there (directories made as needed); the code runs when a
    later block loads or imports it. A file copied from ``examples/`` (not written by an earlier
    block) is not overwritten: the block quotes it and must equal it. Any other python block is
    run with ``exec`` in the file's namespace, with the project as working directory and first
    on ``sys.path`` (as ``python`` started there would have it); what it prints is its output.
    Line numbers in tracebacks are the Markdown file's.
``toml``
    With a file-name comment, written (or quoted) as above, then read by the project's own
    readers: a ``plugin.toml`` as discovery reads a plugin directory's manifest (``[plugin]``
    and ``[config]``, every key checked by ``PluginInfo``; whether ``entry`` names a module is
    checked when a later block loads the plugin), or, below a ``pyproject.toml``, as discovery
    reads one shipped in a package (with the name and version the entry point and the project
    give); a ``helixhooks.toml``, or a ``pyproject.toml`` with ``[tool.helixhooks]``, by
    ``Config.from_file``; any other file is parsed. Without a file-name comment, the block is
    parsed and then read as a manifest if it has a ``[plugin]`` table, else as configuration
    keys (``Config.from_mapping``), so a wrong key fails either way.
``sh``
    Each line is a command, run for real in the project with ``bash``, a block starting in the
    project directory (``cd`` lasts to the end of the block); ``helixhooks``, ``python``,
    ``python3`` and ``pytest`` are the interpreter and the helixhooks under test. Every command
    must exit 0, unless the line ends with ``# exit status N``. Three kinds of command are not
    handed to bash:

    - ``pip install``: a directory in the project (the example package) is really installed,
      with no dependencies, no package index and no build isolation, into a directory that later
      commands and python blocks have on their path. The project itself (``.``), helixhooks by
      name and other names are not installed (that would need the network, and the package
      under test is already importable); the test checks that each extra named is one
      setup.cfg declares, and that any other name is a tool tox.ini or setup.cfg names.
    - ``tox``: not run (it runs the whole matrix, minutes long, on every interpreter); each env
      it names must be one tox.ini has, and a run of the whole env_list must be the very command
      ``.ci/run`` runs.
    - ``helixhooks run`` without ``--duration``: started in the background, as in a terminal of
      its own, and kept running while the blocks that follow do their work; once it says it is
      running, the block is done. A ``text`` block that begins with ``^C`` stops it: SIGINT,
      as Ctrl-C sends; it must exit 0. One still running when its file ends fails the test.
``text``
    Output, checked against the real output of what came just before: of the block before it,
    if that block printed anything (a python block's stdout; an sh block's stdout and stderr);
    else of the ``helixhooks run`` running in the background, from when that block began, waited
    for up to 60 s; after ``^C``, of that run from the moment it was stopped. Lines compare
    after normalizing: runs of spaces count as one space; a clock time (``08:09:13``) matches
    any clock time, and a duration (``0.7 ms``, ``57.1 us``, ``2.5s``) any duration. ``...``
    in a line matches any text, and a line that is only ``...`` any number of lines. A block's
    own output must match line for line, in that sense; a background run's output is a live log
    whose lines interleave by timing (its calls every ``run_interval``), so there the lines
    shown must appear in that order, and other lines may come between them.

A python block that needs the module of an optional extra (``prometheus_client``) that is not
installed skips the rest of its file, saying so, as the extra's own tests do; the tox envs
install every extra, so there every block runs.

Any other kind of block, a fence the test cannot read (indented, ``~~~``, unclosed), a
``text`` block with nothing to compare with, or a ``pip`` or ``tox`` command the test cannot
check fails the test: no block is passed over silently. A file whose blocks leave threads or
child processes running (a PluginSystem not closed, a worker) fails too.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from packaging.requirements import InvalidRequirement, Requirement

import helixhooks as hh
from helixhooks._entry_points import _shipped_table, manifest_table
from helixhooks._leaks import Snapshot

from ._plugins import pip_command

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The helixhooks these tests import: commands the docs run use the same one.
HELIX_HOME = Path(hh.__file__).resolve().parents[1]

KINDS = ("python", "toml", "sh", "text")
COMMAND_TIMEOUT = 120.0
OUTPUT_TIMEOUT = 60.0
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_FILE_COMMENT = re.compile(r"#\s+(\S+)(?:\s.*)?")
_EXIT_STATUS = re.compile(r"\s+#\s*exit status (\d+)\s*$")
_CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\b")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s)\b")
_PIP_FLAGS = frozenset({"-q", "--quiet", "-U", "--upgrade"})
# The modules of helixhooks' optional extras, which some blocks need.
_EXTRAS = {"prometheus_client": "prometheus", "rich": "rich"}


# --- reading the blocks ----------------------------------------------------------------------


@attrs.frozen
class Block:
    """One fenced code block: its file, the line of its opening fence, its kind and text."""

    doc: Path
    line: int
    kind: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def lines(self) -> list[str]:
        return self.body.splitlines()


def read_blocks(doc: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of ``doc`` (or of ``text``, as if it were that file's).

    A fence this reader does not understand is an error.
    """
    if text is None:
        text = doc.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks = []
    at = 0
    while at < len(lines):
        match = _FENCE.match(lines[at])
        at += 1
        if match is None:
            continue
        indent, fence, info = match.groups()
        where = f"{doc.relative_to(ROOT)}:{at}"
        if indent or fence != "```":
            pytest.fail(f"{where}: write code blocks with ``` at the start of the line")
        start = at
        body = []
        while at < len(lines) and lines[at].rstrip() != "```":
            body.append(lines[at])
            at += 1
        if at == len(lines):
            pytest.fail(f"{where}: the code block is never closed")
        at += 1
        blocks.append(Block(doc, start, info.strip(), "\n".join(body) + "\n"))
    return blocks


def file_comment(block: Block, suffix: str) -> tuple[str, str] | None:
    """(file name, the rest of the block) if its first line is ``# <name ending in suffix>``."""
    first, _, rest = block.body.partition("\n")
    match = _FILE_COMMENT.fullmatch(first.strip())
    if match is None or not match.group(1).endswith(suffix):
        return None
    return match.group(1), rest


# --- comparing output ------------------------------------------------------------------------


def normalize(line: str) -> str:
    """A line as compared: clock times and durations stand for any, spaces runs for one."""
    line = _CLOCK.sub("HH:MM:SS", line)
    line = _DURATION.sub("<duration>", line)
    return re.sub(r"\s+", " ", line).rstrip()


def _line_pattern(line: str) -> str:
    return "[^\n]*".join(re.escape(part) for part in normalize(line).split("..."))


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is ``expected``, line for line, after normalizing and ``...``."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line.strip() == "..." else _line_pattern(line) + "\n"
        for line in _trimmed(expected)
    )
    text = "".join(normalize(line) + "\n" for line in _trimmed(actual))
    return re.fullmatch(pattern, text) is not None


def unmatched(expected: list[str], actual: list[str]) -> str | None:
    """The first line of ``expected`` not found in ``actual`` after the ones before it (in
    order, other lines between them allowed), or None when all are."""
    at = 0
    for line in _trimmed(expected):
        if line.strip() == "...":
            continue
        pattern = re.compile(_line_pattern(line))
        while at < len(actual) and pattern.fullmatch(normalize(actual[at])) is None:
            at += 1
        if at == len(actual):
            return line
        at += 1
    return None


def _shown(lines: list[str]) -> str:
    return "\n".join(f"    {line}" for line in lines) or "    (nothing)"


# --- the background `helixhooks run` ---------------------------------------------------------


class Server:
    """A ``helixhooks run`` without --duration, running as in a terminal of its own."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], where: str) -> None:
        self.where = where
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="docs-server-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def since(self, mark: int) -> list[str]:
        with self._changed:
            return list(self.lines[mark:])

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def wait_for(self, mark: int, expected: list[str], timeout: float = OUTPUT_TIMEOUT) -> None:
        """Until the lines shown appear in order after ``mark``; fail with both if they do not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                missing = unmatched(expected, self.lines[mark:])
                if missing is None:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    break
                self._changed.wait(min(left, 0.5))
        pytest.fail(
            f"{self.where}: `helixhooks run` did not print, in this order,\n{_shown(expected)}\n"
            f"(first missing: {missing!r}); it printed\n{_shown(self.since(mark))}",
            pytrace=False,
        )

    def running(self, watch: bool) -> None:
        """Wait until it serves: it said how many plugins run (and, watching, what it watches)."""
        wanted = ["... plugin(s) running ..."] + (["watching ..."] if watch else [])
        self.wait_for(0, wanted)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT, then its exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            status = self.process.wait(COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"{self.where}: `helixhooks run` did not stop on Ctrl-C", pytrace=False)
        self._reader.join(COMMAND_TIMEOUT)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(COMMAND_TIMEOUT)


# --- running one file's blocks ---------------------------------------------------------------


@attrs.define
class Output:
    """What a block printed itself, and where the background run's output stood when it began."""

    text: str = ""
    server_mark: int | None = None


class DocRun:
    """The blocks of one Markdown file, run in order in one project directory."""

    def __init__(self, doc: Path, project: Path, scratch: Path) -> None:
        self.doc = doc
        self.project = project
        self.namespace: dict[str, Any] = {"__name__": f"docs_{doc.stem.replace('-', '_')}"}
        self.written: set[Path] = set()
        self.site = scratch / "site"
        self.server: Server | None = None
        bin_dir = scratch / "bin"
        bin_dir.mkdir()
        python = shlex.quote(sys.executable)
        shims = {
            "python": f'exec {python} "$@"',
            "python3": f'exec {python} "$@"',
            "helixhooks": f'exec {python} -m helixhooks "$@"',
            "pytest": f'exec {python} -m pytest "$@"',
        }
        for name, line in shims.items():
            shim = bin_dir / name
            shim.write_text(f"#!/bin/sh\n{line}\n")
            shim.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(
                [str(self.site), str(HELIX_HOME), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PYTHONUNBUFFERED": "1",
            "XDG_STATE_HOME": str(scratch / "state"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        self.env.pop("PYTHONSTARTUP", None)

    def run(self, blocks: list[Block] | None = None) -> None:
        previous: Output | None = None
        for block in read_blocks(self.doc) if blocks is None else blocks:
            if block.kind not in KINDS:
                pytest.fail(
                    f"{block.where}: a ```{block.kind} block, which this test cannot execute "
                    f"(it runs {', '.join(KINDS)})",
                    pytrace=False,
                )
            if block.kind == "text":
                self.check_output(block, previous)
                previous = None
                continue
            mark = self.server.mark() if self.server is not None else None
            if block.kind == "python":
                text = self.python(block)
            elif block.kind == "toml":
                text = self.toml(block)
            else:
                text = self.sh(block)
            previous = Output(text, mark)
        if self.server is not None:
            self.server.kill()
            pytest.fail(
                f"{self.server.where}: `helixhooks run` is still running at the end of the file; "
                "stop it with a ```text block that begins with ^C",
                pytrace=False,
            )

    # -- output

    def check_output(self, block: Block, previous: Output | None) -> None:
        expected = block.lines
        if expected and expected[0].strip() == "^C":
            server = self._server(block)
            mark = server.mark()
            status = server.interrupt()
            self.server = None
            lines = server.since(mark)
            if status != 0:
                pytest.fail(
                    f"{block.where}: `helixhooks run` exited {status} on Ctrl-C:\n{_shown(lines)}",
                    pytrace=False,
                )
            missing = unmatched(expected[1:], lines)
            if missing is not None:
                pytest.fail(
                    f"{block.where}: after Ctrl-C, `helixhooks run` did not print, in this "
                    f"order,\n{_shown(expected[1:])}\n(first missing: {missing!r}); it "
                    f"printed\n{_shown(lines)}",
                    pytrace=False,
                )
            return
        if previous is None:
            pytest.fail(f"{block.where}: output shown after no block that ran", pytrace=False)
        if previous.text:
            actual = previous.text.splitlines()
            if not matches(expected, actual):
                pytest.fail(
                    f"{block.where}: the output shown\n{_shown(expected)}\nis not what the "
                    f"block above printed:\n{_shown(actual)}",
                    pytrace=False,
                )
            return
        if previous.server_mark is None:
            pytest.fail(
                f"{block.where}: output shown, but the block above printed nothing and no "
                "`helixhooks run` is running",
                pytrace=False,
            )
        self._server(block).wait_for(previous.server_mark, expected)

    def _server(self, block: Block) -> Server:
        if self.server is None:
            pytest.fail(f"{block.where}: ^C, but no `helixhooks run` is running", pytrace=False)
        return self.server

    # -- python

    def python(self, block: Block) -> str:
        named = file_comment(block, ".py")
        if named is not None:
            path = self.write(block, *named)
            compile(path.read_text(encoding="utf-8"), str(path), "exec")
            return ""
        # Padded so that the code's line numbers are the Markdown file's.
        code = compile("\n" * block.line + block.body, str(block.doc), "exec")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(code, self.namespace)
        except ModuleNotFoundError as exc:
            extra = _EXTRAS.get(exc.name or "")
            if extra is None:
                raise
            # As tests/test_prometheus.py does: the tox envs install the extras, so it runs there.
            pytest.skip(f"{block.where} needs the helixhooks[{extra}] extra, not installed here")
        return out.getvalue()

    # -- toml

    def toml(self, block: Block) -> str:
        try:
            self._toml(block)
        except hh.HelixError as exc:
            pytest.fail(f"{block.where}: {exc}", pytrace=False)
        return ""

    def _toml(self, block: Block) -> None:
        named = file_comment(block, ".toml")
        if named is None:
            document = self._parse(block, block.body)
            if "plugin" in document:
                _manifest(document, block.where)
            else:
                hh.Config.from_mapping(document)
            return
        path = self.write(block, *named)
        document = self._parse(block, path.read_text(encoding="utf-8"))
        if path.name == "plugin.toml":
            self._manifest_file(document, path)
        elif path.name == "helixhooks.toml" or (
            path.name == "pyproject.toml" and "helixhooks" in document.get("tool", {})
        ):
            hh.Config.from_file(path)

    def _manifest_file(self, document: dict[str, Any], path: Path) -> None:
        """A plugin directory's manifest, or one shipped in a package: read as discovery does."""
        for directory in path.parents:
            if not directory.is_relative_to(self.project):
                break
            pyproject = directory / "pyproject.toml"
            if pyproject.is_file():
                project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
                points = project.get("entry-points", {}).get("helixhooks.plugins", {})
                metadata = {
                    "name": next(iter(points), project["name"]),
                    "version": project["version"],
                    "description": project.get("description", ""),
                    "author": "",
                    "entry": None,
                }
                added = _shipped_table(document, metadata, str(path))
                del metadata["entry"]
                hh.PluginInfo.from_mapping({**metadata, **added}, source=str(path))
                return
        _manifest(document, str(path))

    def _parse(self, block: Block, text: str) -> dict[str, Any]:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{block.where}: not valid TOML: {exc}", pytrace=False)

    # -- files

    def write(self, block: Block, name: str, content: str) -> Path:
        """Write the block's file, or check a quoted example file; returns its path."""
        path = (self.project / name).resolve()
        if not path.is_relative_to(self.project):
            pytest.fail(f"{block.where}: {name} is outside the project", pytrace=False)
        if path.exists() and path not in self.written:
            if path.read_text(encoding="utf-8") != content:
                pytest.fail(
                    f"{block.where}: the block quotes {name}, but differs from that file",
                    pytrace=False,
                )
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self.written.add(path)
        return path

    # -- sh

    def sh(self, block: Block) -> str:
        out: list[str] = []
        cwd = self.project
        for number, raw in enumerate(self._commands(block), block.line + 1):
            where = f"{block.doc.relative_to(ROOT)}:{number}"
            status = 0
            found = _EXIT_STATUS.search(raw)
            line = raw
            if found is not None:
                status = int(found.group(1))
                line = raw[: found.start()]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [part.strip() for part in line.split(" && ")]
            for index, part in enumerate(parts):
                words = shlex.split(part)
                last = index == len(parts) - 1
                if words[0] == "cd":
                    cwd = self._cd(where, cwd, words)
                elif words[:3] in (["python3", "-m", "pip"], ["python", "-m", "pip"]) or (
                    words[0] == "pip"
                ):
                    self.pip(where, cwd, words[words.index("pip") + 1 :])
                elif "tox" in words[:3]:
                    self.tox(where, part, words[words.index("tox") + 1 :])
                elif words[:2] == ["helixhooks", "run"] and "--duration" not in words:
                    self._start_server(where, cwd, words, last)
                else:
                    out.append(self._bash(where, cwd, part, status if last else 0))
        return "".join(out)

    def _commands(self, block: Block) -> list[str]:
        # A line ending in a backslash goes on on the next.
        return block.body.replace("\\\n", "").splitlines()

    def _cd(self, where: str, cwd: Path, words: list[str]) -> Path:
        target = (cwd / words[1]).resolve()
        if len(words) != 2 or not target.is_dir() or not target.is_relative_to(self.project):
            pytest.fail(f"{where}: cannot cd to {words[1:]} in the project", pytrace=False)
        return target

    def _bash(self, where: str, cwd: Path, command: str, status: int) -> str:
        try:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{where}: `{command}` did not end within {exc.timeout:g}s", pytrace=False)
        if done.returncode != status:
            pytest.fail(
                f"{where}: `{command}` exited {done.returncode}, not {status}:\n"
                f"{_shown(done.stdout.splitlines())}",
                pytrace=False,
            )
        return done.stdout

    def _start_server(self, where: str, cwd: Path, words: list[str], last: bool) -> None:
        if not last or self.server is not None:
            pytest.fail(
                f"{where}: a `helixhooks run` that runs until Ctrl-C must end its line, and only "
                "one may run at a time",
                pytrace=False,
            )
        argv = [sys.executable, "-m", "helixhooks", *words[1:]]
        self.server = Server(argv, cwd, self.env, where)
        self.server.running(watch="--watch" in words)

    # -- pip and tox: installed or run only where that is cheap and offline

    def pip(self, where: str, cwd: Path, words: list[str]) -> None:
        if not words or words[0] != "install":
            pytest.fail(f"{where}: only `pip install` is known here, not {words}", pytrace=False)
        requirements = []
        for word in words[1:]:
            if word.startswith("-"):
                if word not in _PIP_FLAGS:
                    pytest.fail(f"{where}: pip option {word} is not known here", pytrace=False)
            else:
                requirements.append(word)
        if not requirements:
            pytest.fail(f"{where}: pip install of nothing", pytrace=False)
        for requirement in requirements:
            self._requirement(where, cwd, requirement)

    def _requirement(self, where: str, cwd: Path, text: str) -> None:
        target, _, extras_text = text.partition("[")
        extras = {e.strip() for e in extras_text.rstrip("]").split(",") if e.strip()}
        if target.startswith((".", "/")) or "/" in target:
            path = (cwd / target).resolve()
            if path == self.project:
                _check_extras(where, extras)  # the project: a clone of this repository
                return
            if not path.is_relative_to(self.project) or not (path / "pyproject.toml").is_file():
                pytest.fail(f"{where}: {target} is not a project to install", pytrace=False)
            done = subprocess.run(
                pip_command("--no-index", "--target", str(self.site), str(path)),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
            )
            if done.returncode:
                pytest.fail(f"{where}: pip could not install {target}:\n{done.stderr}")
            importlib.invalidate_caches()
            return
        try:
            parsed = Requirement(text)
        except InvalidRequirement as exc:
            pytest.fail(f"{where}: {text!r} is not a requirement: {exc}", pytrace=False)
        if parsed.name == "helixhooks":
            _check_extras(where, set(parsed.extras))
        elif parsed.name not in _tools():
            pytest.fail(
                f"{where}: {parsed.name!r} is named neither in tox.ini nor in setup.cfg",
                pytrace=False,
            )

    def tox(self, where: str, command: str, words: list[str]) -> None:
        envs = _tox_envs()
        named = [
            env
            for i, word in enumerate(words[:-1])
            if word == "-e"
            for env in words[i + 1].split(",")
        ]
        unknown = [env for env in named if env not in envs]
        if unknown:
            pytest.fail(f"{where}: tox.ini has no env {unknown}", pytrace=False)
        ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
        if not named and command not in ci.splitlines():
            pytest.fail(f"{where}: `{command}` is not the command .ci/run runs", pytrace=False)

    # -- the end

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server = None
        for value in list(self.namespace.values()):
            if isinstance(value, hh.PluginSystem):
                value.close()


def _manifest(document: dict[str, Any], source: str) -> None:
    """Read a plugin.toml's document as discovery does: unknown tables and keys fail."""
    hh.PluginInfo.from_mapping(manifest_table(document, source), source=source)


def _check_extras(where: str, extras: set[str]) -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    known = set(setup["options.extras_require"])
    if not extras <= known:
        pytest.fail(
            f"{where}: setup.cfg has no extra {sorted(extras - known)} (it has {sorted(known)})",
            pytrace=False,
        )


def _tools() -> set[str]:
    """What tox.ini and setup.cfg say to install, by name: the tools a doc may install."""
    names = set()
    for path, keys in (
        (ROOT / "tox.ini", ("requires", "deps")),
        (ROOT / "setup.cfg", ("install_requires",)),
    ):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path)
        values = [s[k] for s in parser.values() for k in keys if k in s]
        if path.name == "setup.cfg":
            values += list(parser["options.extras_require"].values())
        for value in values:
            for line in value.splitlines():
                line = line.split(":", 1)[-1] if re.match(r"\s*[\w{},-]+:\s", line) else line
                with contextlib.suppress(InvalidRequirement):
                    names.add(Requirement(line.strip()).name)
    return names


def _tox_envs() -> set[str]:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    listed = tox["tox"]["env_list"].replace("\n", " ").replace(",", " ")
    envs = set()
    for word in re.split(r"\s+(?![^{]*})", listed.strip()):
        found = re.fullmatch(r"(.*)\{(.*)\}(.*)", word)
        if found is None:
            envs.add(word)
        else:
            head, options, tail = found.groups()
            envs.update(f"{head}{option.strip()}{tail}" for option in options.split(","))
    envs.update(
        section.split(":", 1)[1] for section in tox.sections() if section.startswith("testenv:")
    )
    return envs


# --- the tests -------------------------------------------------------------------------------


@contextlib.contextmanager
def _project(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DocRun]:
    project = tmp_path / "project"
    shutil.copytree(
        ROOT / "examples",
        project / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    project = project.resolve()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.syspath_prepend(str(scratch / "site"))
    modules = set(sys.modules)
    run = DocRun(doc, project, scratch)
    try:
        yield run
    finally:
        run.close()
        for name in set(sys.modules) - modules:
            where = getattr(sys.modules[name], "__file__", None) or ""
            if where.startswith((str(project), str(scratch))):
                del sys.modules[name]


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=[doc.stem for doc in DOCS])
def test_every_block_runs(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = Snapshot.take()
    with _project(doc, tmp_path, monkeypatch) as run:
        run.run()
    leftovers = before.leftovers(5.0)
    assert not leftovers, f"{doc.name}: its blocks left these running:\n" + "\n".join(leftovers)


def test_the_docs_are_found() -> None:
    names = [doc.relative_to(ROOT).as_posix() for doc in DOCS]
    assert {"README.md", "docs/security.md"} <= set(names)


# --- the rules themselves --------------------------------------------------------------------


def test_output_matching_normalizes_times_and_spaces() -> None:
    assert matches(
        ["08:09:13 started  hello 1.0.0  (0.0 ms)"], ["23:59:01 started hello 1.0.0  (12.5 ms)"]
    )
    assert matches(["hello  1.0.0   2.08 ms"], ["hello 1.0.0 57.1 us"])
    assert not matches(["hello 1.0.0"], ["hello 1.0.1"])
    assert not matches(["a", "b"], ["a"])


def test_ellipsis_matches_text_and_lines() -> None:
    assert matches(
        ["figures kept in .../run-....json (helixhooks stats)"],
        ["figures kept in /tmp/x/run-abc.json (helixhooks stats)"],
    )
    assert matches(["first", "...", "last"], ["first", "x", "y", "last"])
    assert matches(["first", "...", "last"], ["first", "last"])
    assert not matches(["first", "last"], ["first", "x", "last"])


def test_live_output_is_matched_in_order_with_lines_between() -> None:
    actual = [
        "call greet -> ['Hello']",
        "reloaded hello 1.0.0  (1.4 ms)",
        "call greet -> ['Howdy']",
    ]
    assert unmatched(["reloaded hello 1.0.0  (9 ms)", "call greet -> ['Howdy']"], actual) is None
    assert (
        unmatched(["call greet -> ['Howdy']", "reloaded hello 1.0.0"], actual)
        == "reloaded hello 1.0.0"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```yaml\na: 1\n```\n", "cannot execute"),
        ("  ```python\nx = 1\n  ```\n", "start of the line"),
        ("~~~python\nx = 1\n~~~\n", "start of the line"),
        ("```python\nx = 1\n", "never closed"),
        ("```text\nhello\n```\n", "after no block"),
        ("```toml\nplugin_dir = 'x'\n```\n", "did you mean 'plugin_dirs'"),
        ("```python\nprint('hello')\n```\n```text\nhullo\n```\n", "is not what"),
        ("```sh\nfalse\n```\n", "exited 1, not 0"),
        ("```sh\npip install --user tox\n```\n", "option --user"),
        ("```sh\npip install 'helixhooks[nope]'\n```\n", "no extra"),
        ("```sh\npython3 -m tox -e nope\n```\n", "no env"),
    ],
)
def test_what_the_runner_refuses(tmp_path: Path, text: str, message: str) -> None:
    doc = ROOT / "docs" / "probe.md"
    with pytest.raises(pytest.fail.Exception, match=re.escape(message)):
        DocRun(doc, tmp_path, tmp_path).run(read_blocks(doc, text))
