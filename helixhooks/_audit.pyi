from collections.abc import Callable
from typing import Any

def install(callback: Callable[[str, tuple[Any, ...]], None], names: tuple[str, ...], /) -> None:
    """Add the audit hook, once per process: while engaged, it calls ``callback(event, args)``
    for the events in ``names``, and for no other."""

def set_engaged(flag: bool, /) -> None:
    """Whether the hook looks at events at all (some plugin admitted)."""
