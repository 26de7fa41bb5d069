"""helixhooks: a hot-reloadable plugin system for Python, built on pluggy."""

__version__ = "0.1.0"
