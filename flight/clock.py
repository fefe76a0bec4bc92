"""Clocks: the real one on a board, a simulated one the HIL harness steps.

Everything in the agent asks its clock, never ``time`` directly, so the same code runs
in real time on a Jetson and faster than real time in lockstep under the harness (the
NOS3 time-driver idea; Trio's MockClock for tests).
"""

from __future__ import annotations

import abc
import math
import time


class Clock(abc.ABC):
    @abc.abstractmethod
    def now_s(self) -> float:
        """UTC as Unix seconds: what time stamps in packets say."""

    @abc.abstractmethod
    def monotonic_s(self) -> float:
        """A clock that never steps back: what timers and rates use."""

    @abc.abstractmethod
    def timeout_until(self, deadline_s: float) -> float | None:
        """How long the loop may wait for I/O before ``deadline_s`` (monotonic) is due.

        None means "until something arrives": a simulated clock only moves when the
        harness says so, and that arrives as a message.
        """


class RealClock(Clock):
    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()

    def timeout_until(self, deadline_s: float) -> float | None:
        return max(0.0, deadline_s - time.monotonic())


class SimClock(Clock):
    """Time that moves only when told to; ``now_s`` and ``monotonic_s`` are the same value."""

    def __init__(self, start_s: float = 0.0):
        self._t_s = float(start_s)

    def now_s(self) -> float:
        return self._t_s

    def monotonic_s(self) -> float:
        return self._t_s

    def set(self, t_s: float) -> None:
        if t_s < self._t_s:
            raise ValueError(f"simulated time cannot go back from {self._t_s} to {t_s}")
        self._t_s = float(t_s)

    def advance(self, dt_s: float) -> None:
        self.set(self._t_s + dt_s)

    def timeout_until(self, deadline_s: float) -> float | None:
        return 0.0 if deadline_s <= self._t_s else None


def backoff_s(first_s: float, cap_s: float, doublings: int) -> float:
    """``first_s`` doubled ``doublings`` times, at most ``cap_s``: the wait before a try again after failures in a
    row. The doubling stops at the cap (found in audit: ``2.0 ** n`` raised OverflowError once a week of failures at
    the cap had counted ``n`` past 1025)."""
    return min(first_s * 2.0 ** min(max(0, doublings), math.ceil(math.log2(cap_s / first_s))), cap_s)
