import contextvars
import threading
from collections.abc import Callable
from typing import Any

def install(
    callback: Callable[[str, tuple[Any, ...]], None],
    names: tuple[str, ...],
    reads: tuple[str, ...],
    module_owner: Callable[[object], object],
    acting: contextvars.ContextVar[Any],
    threads: dict[int, threading.Thread],
    tag: str,
    /,
) -> None:
    """Add the audit hook, once per process: while engaged, it calls ``callback(event, args)``
    for the events in ``names``, and for no other, unless no plugin may be acting: no module on
    the stack has an owner by ``module_owner(name)``, the current thread (``threads[ident]``, as
    ``threading.current_thread()`` finds it) has None or no attribute ``tag``, and ``acting`` is
    None. While ``set_engaged`` says reads are not checked, the events in ``reads`` (some of
    ``names``) and ``"open"`` for reading are not either."""

def set_engaged(flag: bool, reads: bool = True, /) -> None:
    """Whether the hook looks at events at all (some plugin admitted), and whether it looks at
    reads (some plugin admitted is held to read scopes). Called whenever what ``module_owner``
    answers may have changed: the answers kept are dropped."""

def note_tag() -> None:
    """A thread has been tagged: from now on the hook looks for the current thread's tag."""
