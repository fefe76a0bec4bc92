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
from dataclasses import dataclass, replace

from flight.link.definitions import ThermalState


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


@dataclass(frozen=True)
class GovernorState:
    """What the governor remembers between two samples (a value: the control core passes it on)."""

    steps_down: int = 0
    hard: bool = False
    last_change_s: float = float("-inf")
    samples: tuple[tuple[float, float], ...] = ()  # (time_s, temp_c) within the rate window

    @property
    def state(self) -> ThermalState:
        return ThermalState.HARD_LIMIT if self.hard else (ThermalState.THROTTLED if self.steps_down else ThermalState.NOMINAL)


def rate_c_per_s(samples: tuple[tuple[float, float], ...]) -> float:
    """Least-squares slope of the samples; 0 with fewer than two."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in samples) / var


def govern(lim: ThermalLimits, max_steps: int, st: GovernorState, now_s: float,
           temp_c: float) -> tuple[ThermalDecision, GovernorState]:
    """One sample through the governor: its decision and the state to pass to the next call."""
    st = replace(st, steps_down=min(st.steps_down, max_steps),
                 samples=tuple(s for s in (*st.samples, (now_s, temp_c)) if s[0] >= now_s - lim.rate_window_s))
    rate = rate_c_per_s(st.samples)
    projected = temp_c + max(rate, 0.0) * lim.lookahead_s
    dwell_over = now_s - st.last_change_s >= lim.min_dwell_s

    def decide(action: Action, reason: str, new: GovernorState) -> tuple[ThermalDecision, GovernorState]:
        if action is not Action.HOLD:
            new = replace(new, last_change_s=now_s)
        return ThermalDecision(action, new.state, new.steps_down, temp_c, rate * 60.0, projected, reason), new

    if temp_c >= lim.hard_c:
        if not st.hard:
            return decide(Action.HARD_STOP, f"{temp_c:.1f} °C at or above hard limit {lim.hard_c:.1f} °C",
                          replace(st, hard=True, steps_down=max_steps))
        return decide(Action.HOLD, "still at hard limit", st)
    if st.hard:
        if temp_c <= lim.hard_c - lim.hysteresis_c:
            return decide(Action.HARD_CLEAR, f"{temp_c:.1f} °C back below {lim.hard_c - lim.hysteresis_c:.1f} °C",
                          replace(st, hard=False))
        return decide(Action.HOLD, "cooling from hard limit", st)
    if (temp_c >= lim.soft_c or projected >= lim.soft_c) and st.steps_down < max_steps and dwell_over:
        why = (f"{temp_c:.1f} °C at or above soft limit {lim.soft_c:.1f} °C" if temp_c >= lim.soft_c
               else f"rising {rate * 60:.1f} °C/min: {projected:.1f} °C expected in {lim.lookahead_s:.0f} s")
        return decide(Action.STEP_DOWN, why, replace(st, steps_down=st.steps_down + 1))
    cool = lim.soft_c - lim.hysteresis_c
    if st.steps_down and temp_c <= cool and projected < cool and dwell_over:
        return decide(Action.STEP_UP, f"{temp_c:.1f} °C at or below {cool:.1f} °C", replace(st, steps_down=st.steps_down - 1))
    return decide(Action.HOLD, "", st)
