"""What went wrong when a plugin's code was imported, said so that its author can fix it."""

from __future__ import annotations

import re
import traceback
import types
from pathlib import Path

from ._source_import import PRIVATE_PACKAGE
from .discovery import INFO_VARIABLE
from .errors import LoadError
from .markers import PROJECT_NAME
from .plugin import PluginCandidate

FIX_CODE = "fix the error in the plugin's code; it is not loaded until it imports cleanly"


def fault_file(exc: BaseException, candidate: PluginCandidate, fallback: str | None = None) -> str:
    """The plugin file an exception comes from: the innermost traceback frame inside the plugin."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename
    if isinstance(candidate.source, Path):
        root = Path(candidate.source).absolute()
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if Path(frame.filename).is_relative_to(root):
                return frame.filename
        return fallback or str(root)
    return fallback or candidate.location


_NO_EXIT = (
    "a plugin must not exit the host: raise an exception instead of calling sys.exit(), "
    "or move the code that exits out of the plugin"
)
_NOT_BASE_EXCEPTION = (
    "raise an Exception subclass: a bare BaseException is meant to stop the whole program"
)
# helixhooks._plugins.<escaped name>.g<N>, as _private_name builds it.
_PRIVATE_NAME = re.compile(re.escape(PRIVATE_PACKAGE) + r"\.\w+?\.g\d+")


def constructor_error(
    candidate: PluginCandidate, attribute: str | None, module: types.ModuleType, exc: BaseException
) -> LoadError:
    """The LoadError for an entry class whose constructor raised ``exc``."""
    fault = fault_file(exc, candidate, module.__file__)
    if isinstance(exc, SystemExit):
        return LoadError(
            f"entry class {attribute} called sys.exit({_exit_code(exc)}) in its "
            f"constructor{_fault_line(exc, fault)}",
            plugin=candidate.info.name,
            path=fault,
            hint=_NO_EXIT,
        )
    return LoadError(
        f"entry class {attribute} could not be instantiated: {type(exc).__name__}: {exc}"
        + _fault_line(exc, fault),
        plugin=candidate.info.name,
        path=fault,
        hint=_NOT_BASE_EXCEPTION
        if not isinstance(exc, Exception)
        else "the entry class must be constructible with no arguments",
    )


def import_error(candidate: PluginCandidate, exc: BaseException) -> LoadError:
    """The LoadError for a plugin whose import raised ``exc``: what happened, where, what to do."""
    name = candidate.info.name
    fault = fault_file(exc, candidate)
    at_line = _fault_line(exc, fault)
    if isinstance(exc, SystemExit):
        return LoadError(
            f"called sys.exit({_exit_code(exc)}) at import{at_line}",
            plugin=name,
            path=fault,
            hint=_NO_EXIT,
        )
    if not isinstance(exc, Exception):
        return LoadError(
            f"import raised {type(exc).__name__}: {exc}{at_line}",
            plugin=name,
            path=fault,
            hint=_NOT_BASE_EXCEPTION,
        )
    text = _PRIVATE_NAME.sub(f"<plugin {name}>", str(exc))
    if isinstance(exc, ImportError) and candidate.kind == "file" and _is_relative(exc):
        return LoadError(
            f"import failed: a single-file plugin cannot use relative imports "
            f"(from . import ...){at_line}",
            plugin=name,
            path=fault,
            hint="make it a directory plugin: a directory holding plugin.toml, the plugin's "
            "module and the modules it imports relatively; or import them absolutely from an "
            "installed package",
        )
    hint = FIX_CODE
    if isinstance(exc, ModuleNotFoundError) and candidate.kind == "directory":
        relative = _relative_import_for(exc, candidate, fault)
        if relative is not None:
            hint = (
                f"use a relative import: {relative}; plugin directories are not on sys.path, "
                "so a module beside the plugin's is only found relatively"
            )
    return LoadError(
        f"import failed: {type(exc).__name__}: {text}{at_line}", plugin=name, path=fault, hint=hint
    )


def _exit_code(exc: SystemExit) -> str:
    return "" if exc.code is None else repr(exc.code)


def _fault_line(exc: BaseException, fault: str) -> str:
    """ " (line N)" for the innermost traceback frame in ``fault``; "" when there is none."""
    if isinstance(exc, SyntaxError):
        return ""  # its message names the line already
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == fault and frame.lineno is not None:
            return f" (line {frame.lineno})"
    return ""


def _is_relative(exc: ImportError) -> bool:
    """Whether a single-file plugin's import failed for being relative.

    Its module has no package of its own, so ``from . import x`` looks for the private package
    above it, which does not exist.
    """
    missing = exc.name or ""
    return missing.startswith(PRIVATE_PACKAGE) or "relative import" in str(exc)


def _relative_import_for(
    exc: ModuleNotFoundError, candidate: PluginCandidate, fault: str
) -> str | None:
    """``from . import helper`` when the module a directory plugin imported absolutely is there.

    Looks beside the failing file first, then in the plugin directory; None if it is in neither.
    """
    missing = exc.name or ""
    if not missing or missing.startswith(PRIVATE_PACKAGE + "."):
        return None
    top, dot, rest = missing.partition(".")
    root = Path(str(candidate.source)).absolute()
    here = Path(fault).parent
    if not here.is_relative_to(root):
        here = root
    depth = len(here.relative_to(root).parts)
    for place, dots in ((here, "."), (root, "." * (depth + 1))):
        if (place / f"{top}.py").is_file() or (place / top / "__init__.py").is_file():
            if dot:
                return f"from {dots}{top} import {rest.partition('.')[0]}"
            return f"from {dots} import {top}"
    return None


def unreached_classes(module: types.ModuleType) -> list[str]:
    """Classes defined in ``module`` with hookimpls, when the module itself has none.

    With the module as the plugin, pluggy registers its functions only: a class's hookimpls are
    never called. Empty when the module has a hookimpl of its own (then it is meant that way).
    """
    marker = PROJECT_NAME + "_impl"
    namespace = vars(module)
    if any(_is_hookimpl(value, marker) for value in namespace.values()):
        return []
    return [
        value.__qualname__
        for value in namespace.values()
        if isinstance(value, type)
        and getattr(value, "__module__", None) == module.__name__
        and any(
            _is_hookimpl(member, marker)
            for klass in value.__mro__[:-1]
            for member in vars(klass).values()
        )
    ]


def _is_hookimpl(value: object, marker: str) -> bool:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    # The marker is an attribute set on the function; reading its __dict__ runs no plugin code.
    return isinstance(value, types.FunctionType) and isinstance(value.__dict__.get(marker), dict)


def unreached_warning(candidate: PluginCandidate, module_name: str, classes: list[str]) -> str:
    first = classes[0]
    if candidate.kind == "file":
        module = "the file's module"
        fix = f'add "entry": ":{first}" to {INFO_VARIABLE}'
    else:
        module = "the package (__init__.py)" if module_name == "__init__" else repr(module_name)
        fix = f'set entry = "{module_name}:{first}" in the plugin\'s manifest'
    return (
        f"plugin {candidate.info.name!r}: its entry is {module}, which has no hookimpl of its "
        f"own, but class {', '.join(classes)} in it has hookimpls that will never run "
        f"[{candidate.location}] (fix: {fix}, so that an instance of the class is the plugin)"
    )
