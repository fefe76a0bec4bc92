"""Thermal throttling (pure logic): step the power mode down before it gets too hot.

- Soft limit: step down one power-mode level, then wait ``min_dwell_s`` before the next
  step either way, so the board does not oscillate between two modes; step back up one
  level once the temperature is ``hysteresis_c`` below the soft limit (and not rising
  towards it).
- Rate of rise: act on ``temp + rate × lookahead_s`` as well as on the temperature, so a
  fast climb is caught before the limit, not after (HPE's Spaceborne Computer stepped down
  "in a stairstep fashion" the same way).
- Hard limit: stop compute at once and go SAFE; no dwell applies.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class ThermalState(str, enum.Enum):
    NOMINAL = "NOMINAL"
    THROTTLED = "THROTTLED"
    HARD_LIMIT = "HARD_LIMIT"


class Action(str, enum.Enum):
    HOLD = "HOLD"
    STEP_DOWN = "STEP_DOWN"
    STEP_UP = "STEP_UP"
    HARD_STOP = "HARD_STOP"
    HARD_CLEAR = "HARD_CLEAR"


@dataclass(frozen=True)
class ThermalLimits:
    soft_c: float
    hard_c: float
    hysteresis_c: float = 5.0
    min_dwell_s: float = 30.0
    lookahead_s: float = 60.0
    rate_window_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.soft_c < self.hard_c:
            raise ValueError(f"soft limit {self.soft_c} °C must be below hard limit {self.hard_c} °C")
        if self.hysteresis_c <= 0 or self.min_dwell_s < 0 or self.lookahead_s < 0 or self.rate_window_s <= 0:
            raise ValueError("hysteresis and rate window must be positive; dwell and lookahead not negative")


@dataclass(frozen=True)
class ThermalDecision:
    action: Action
    state: ThermalState
    steps_down: int
    temp_c: float
    rate_c_per_min: float
    projected_c: float
    reason: str


class ThermalGovernor:
    def __init__(self, limits: ThermalLimits, max_steps: int):
        self.limits = limits
        self.max_steps = max_steps
        self.steps_down = 0
        self.hard = False
        self._last_change_s = float("-inf")
        self._samples: deque[tuple[float, float]] = deque()

    def adopt_state(self, other: "ThermalGovernor") -> None:
        """Carry steps, hard-limit latch, dwell timer and samples over from ``other`` (new limits)."""
        self.steps_down = min(other.steps_down, self.max_steps)
        self.hard = other.hard
        self._last_change_s = other._last_change_s
        self._samples = deque(other._samples)

    def rate_c_per_s(self) -> float:
        """Least-squares slope of the recent samples; 0 with fewer than two."""
        n = len(self._samples)
        if n < 2:
            return 0.0
        mean_t = sum(t for t, _ in self._samples) / n
        mean_y = sum(y for _, y in self._samples) / n
        var = sum((t - mean_t) ** 2 for t, _ in self._samples)
        if var == 0:
            return 0.0
        return sum((t - mean_t) * (y - mean_y) for t, y in self._samples) / var

    def update(self, now_s: float, temp_c: float) -> ThermalDecision:
        lim = self.limits
        self._samples.append((now_s, temp_c))
        while self._samples and self._samples[0][0] < now_s - lim.rate_window_s:
            self._samples.popleft()
        rate = self.rate_c_per_s()
        projected = temp_c + max(rate, 0.0) * lim.lookahead_s
        dwell_over = now_s - self._last_change_s >= lim.min_dwell_s

        def decide(action: Action, reason: str) -> ThermalDecision:
            if action is not Action.HOLD:
                self._last_change_s = now_s
            state = ThermalState.HARD_LIMIT if self.hard else (
                ThermalState.THROTTLED if self.steps_down else ThermalState.NOMINAL)
            return ThermalDecision(action, state, self.steps_down, temp_c, rate * 60.0, projected, reason)

        if temp_c >= lim.hard_c:
            if not self.hard:
                self.hard = True
                self.steps_down = self.max_steps
                return decide(Action.HARD_STOP, f"{temp_c:.1f} °C at or above hard limit {lim.hard_c:.1f} °C")
            return decide(Action.HOLD, "still at hard limit")
        if self.hard:
            if temp_c <= lim.hard_c - lim.hysteresis_c:
                self.hard = False
                return decide(Action.HARD_CLEAR, f"{temp_c:.1f} °C back below {lim.hard_c - lim.hysteresis_c:.1f} °C")
            return decide(Action.HOLD, "cooling from hard limit")
        if (temp_c >= lim.soft_c or projected >= lim.soft_c) and self.steps_down < self.max_steps and dwell_over:
            self.steps_down += 1
            why = (f"{temp_c:.1f} °C at or above soft limit {lim.soft_c:.1f} °C" if temp_c >= lim.soft_c
                   else f"rising {rate * 60:.1f} °C/min: {projected:.1f} °C expected in {lim.lookahead_s:.0f} s")
            return decide(Action.STEP_DOWN, why)
        cool = lim.soft_c - lim.hysteresis_c
        if self.steps_down and temp_c <= cool and projected < cool and dwell_over:
            self.steps_down -= 1
            return decide(Action.STEP_UP, f"{temp_c:.1f} °C at or below {cool:.1f} °C")
        return decide(Action.HOLD, "")
