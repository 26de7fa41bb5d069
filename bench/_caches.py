"""What the benchmarks clear to start cold: every lru_cache of helixhooks, found, not listed."""

from __future__ import annotations

import sys
from typing import Any


def helixhooks_lru_caches() -> list[Any]:
    """Every functools.lru_cache at module level in the helixhooks modules imported so far."""
    caches = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "helixhooks" or name.startswith("helixhooks.")):
            continue
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                caches.append(value)
    return caches
