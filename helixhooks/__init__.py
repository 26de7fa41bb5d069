"""helixhooks: a hot-reloadable plugin system for Python, built on pluggy."""

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
    ResourceExceeded,
    SandboxError,
    VersionConflict,
    VersionError,
    WorkerCrashed,
)
from .health import HealthChecker, HealthMonitor, HealthStatus
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
from .system import PluginHandle, PluginSystem
from .versioning import Constraint, Version, Versioner

__version__ = "0.1.0"

__all__ = [
    "CallStats",
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
    "LifecycleError",
    "LifecycleManager",
    "Limits",
    "LoadError",
    "LoadedPlugin",
    "Loader",
    "ManifestError",
    "Metrics",
    "MissingDependency",
    "PermissionDenied",
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
    "Resolution",
    "ResourceExceeded",
    "SandboxError",
    "Version",
    "VersionConflict",
    "VersionError",
    "Versioner",
    "WorkerCrashed",
    "hookimpl",
    "hookspec",
]
