"""cfdp-py's timers on the clock of the entity that runs them.

cfdp-py times its positive-acknowledgement, NAK and check timers with ``spacepackets.countdown``,
which reads the wall clock (``spacepackets.countdown.time_ms``). The agent's timers run on its
own clock (simulated under lockstep) and a transfer must not time out while it is suspended
between passes, so this module routes that one function through the entity whose handler is
running: each :class:`~flight.files.entity.FileEntity` wraps its calls into cfdp-py in
:func:`timebase`, which binds (per thread: the ground server runs one entity per spacecraft
thread) the time the timers see. Outside an entity's call the wall clock is used as before.

This is the one place we reach into a library's module; cfdp-py offers no clock of its own
(its check timers come from a provider, its acknowledgement and NAK timers do not).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import spacepackets.countdown as _countdown

_local = threading.local()
_wall_time_ms = _countdown.time_ms


def _time_ms() -> int:
    now_ms = getattr(_local, "now_ms", None)
    return now_ms() if now_ms is not None else _wall_time_ms()


def install() -> None:
    """Route spacepackets' countdown clock through :func:`timebase` (idempotent)."""
    _countdown.time_ms = _time_ms


@contextmanager
def timebase(now_ms: Callable[[], int]) -> Iterator[None]:
    """While inside, cfdp-py's timers in this thread read ``now_ms``."""
    previous = getattr(_local, "now_ms", None)
    _local.now_ms = now_ms
    try:
        yield
    finally:
        _local.now_ms = previous


install()
