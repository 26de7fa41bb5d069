"""helixhooks: a hot-reloadable plugin system for Python, built on pluggy.

Every public name is imported on first use (PEP 562 ``__getattr__``), so ``import helixhooks``
costs next to nothing, and a plugin module that only needs ``hookimpl`` does not pull in the
host's side (discovery, TOML, packaging, importlib.metadata, the lifecycle). ``from helixhooks
import X`` and ``helixhooks.X`` work for every name in ``__all__``; type checkers see the
imports below.
"""

import importlib

# Not typing.TYPE_CHECKING: importing typing alone would cost more than the rest of this module.
# Type checkers treat a variable of this name as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config, Limits
    from .dependencies import DependencyResolver, Resolution
    from .discovery import Discovery
    from .errors import (
        CyclicDependency,
        DependencyError,
        HelixError,
        LifecycleError,
        LoadError,
        ManifestError,
        MissingDependency,
        PermissionDenied,
        PluginTimeout,
        ReloadError,
        RemoteError,
        ResourceExceeded,
        SandboxError,
        UnsendableValue,
        VersionConflict,
        VersionError,
        WorkerCrashed,
    )
    from .health import HealthChecker, HealthMonitor, HealthStatus
    from .hot_reload import HotReloader
    from .lifecycle import LifecycleManager
    from .loader import LoadedPlugin, Loader
    from .markers import hookimpl, hookspec
    from .metrics import CallStats, Metrics, PluginStats
    from .plugin import (
        Dependency,
        PluginCandidate,
        PluginContext,
        PluginEvent,
        PluginInfo,
        PluginState,
        Problem,
    )
    from .registry import PluginRecord, Registry
    from .security import Permission, PermissionSet, Sandbox
    from .system import PluginHandle, PluginSystem
    from .versioning import Constraint, Version, Versioner
    from .watcher import Change, Watcher

__version__ = "0.1.0"

__all__ = [
    "CallStats",
    "Change",
    "Config",
    "Constraint",
    "CyclicDependency",
    "Dependency",
    "DependencyError",
    "DependencyResolver",
    "Discovery",
    "HealthChecker",
    "HealthMonitor",
    "HealthStatus",
    "HelixError",
    "HotReloader",
    "LifecycleError",
    "LifecycleManager",
    "Limits",
    "LoadError",
    "LoadedPlugin",
    "Loader",
    "ManifestError",
    "Metrics",
    "MissingDependency",
    "Permission",
    "PermissionDenied",
    "PermissionSet",
    "PluginCandidate",
    "PluginContext",
    "PluginEvent",
    "PluginHandle",
    "PluginInfo",
    "PluginRecord",
    "PluginState",
    "PluginStats",
    "PluginSystem",
    "PluginTimeout",
    "Problem",
    "Registry",
    "ReloadError",
    "RemoteError",
    "Resolution",
    "ResourceExceeded",
    "Sandbox",
    "SandboxError",
    "UnsendableValue",
    "Version",
    "VersionConflict",
    "VersionError",
    "Versioner",
    "Watcher",
    "WorkerCrashed",
    "hookimpl",
    "hookspec",
]

# Where each public name lives, by submodule.
_SUBMODULE = {
    "Config": "config",
    "Limits": "config",
    "DependencyResolver": "dependencies",
    "Resolution": "dependencies",
    "Discovery": "discovery",
    "CyclicDependency": "errors",
    "DependencyError": "errors",
    "HelixError": "errors",
    "LifecycleError": "errors",
    "LoadError": "errors",
    "ManifestError": "errors",
    "MissingDependency": "errors",
    "PermissionDenied": "errors",
    "PluginTimeout": "errors",
    "ReloadError": "errors",
    "RemoteError": "errors",
    "UnsendableValue": "errors",
    "ResourceExceeded": "errors",
    "SandboxError": "errors",
    "VersionConflict": "errors",
    "VersionError": "errors",
    "WorkerCrashed": "errors",
    "HealthChecker": "health",
    "HealthMonitor": "health",
    "HealthStatus": "health",
    "HotReloader": "hot_reload",
    "LifecycleManager": "lifecycle",
    "LoadedPlugin": "loader",
    "Loader": "loader",
    "hookimpl": "markers",
    "hookspec": "markers",
    "CallStats": "metrics",
    "Metrics": "metrics",
    "PluginStats": "metrics",
    "Dependency": "plugin",
    "PluginCandidate": "plugin",
    "PluginContext": "plugin",
    "PluginEvent": "plugin",
    "PluginInfo": "plugin",
    "PluginState": "plugin",
    "Problem": "plugin",
    "PluginRecord": "registry",
    "Registry": "registry",
    "Permission": "security",
    "PermissionSet": "security",
    "Sandbox": "security",
    "PluginHandle": "system",
    "PluginSystem": "system",
    "Constraint": "versioning",
    "Version": "versioning",
    "Versioner": "versioning",
    "Change": "watcher",
    "Watcher": "watcher",
}

if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise accept any name

    def __getattr__(name: str) -> object:
        submodule = _SUBMODULE.get(name)
        if submodule is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{submodule}", __name__), name)
        globals()[name] = value  # later lookups find it without calling __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


del TYPE_CHECKING
