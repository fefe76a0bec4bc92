"""The rest of the spacecraft's draw, learnt from the battery's energy balance (pure).

The platform load (radios, attitude control, heaters, the bus) is configured, but it changes:
loads nobody announced switch on, heaters cycle. The battery tells it: over a stretch of time
the energy the arrays gave, less what the board drew, less what went into the battery, is what
the rest of the spacecraft used.

What goes into the battery is read from its fuel gauge, and a real gauge is coarse: a smart
battery reports its relative state of charge in whole percent (SBS ``RelativeStateOfCharge``).
One step of a 60 Wh battery is 0.6 Wh: 36 W over a minute. Windows of fixed length read a step
or none, so each said the load was tens of watts off, and the estimate followed the noise (an
audit: 24.3 W learnt after three orbits for a true 12 W, as windows whose estimate came out
negative were dropped). :class:`GaugeLoadLearner` measures from one change of the reading to
another instead: the state of charge was on the boundary between the two readings at about
the middle of the tick that saw it change, so the charge between two such points is known to
the rounding of the tick's timing, not to a step of the gauge. Where the reading changes at
every tick (a fine gauge), a window closes at the first change :data:`WINDOW_S` after it opened,
as fixed windows did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

WINDOW_S = 60.0
"""The shortest stretch one estimate is read from (a fine gauge's changes are each a tick apart)."""

WEIGHT_PER_WINDOW = 0.2
"""How far one WINDOW_S of evidence moves the estimate (exponentially weighted; a longer window
weighs as that many windows would)."""

MAX_TICK_S = 600.0
"""Readings further apart than this (the loop stalled, the board suspended) do not say what the power was
between them: the window open is forgotten."""

FULL_PCT = 99.5
"""A reading at or above it: the battery is full, the charger throttles the arrays, and their
measured power is not what the spacecraft drew (such windows say nothing)."""


@dataclass(frozen=True)
class LoadEstimate:
    """The estimate and how many windows made it. Each window moves it by at most ``max_step_w``
    (2 W, or a fifth of the load): a gauge that jumps (recalibrated, or a battery swapped on the
    bench) is not a load. A window whose balance comes out negative counts like any other (noise
    either way averages out; dropping the negative ones biased the estimate up); the estimate
    itself never goes below zero."""

    load_w: float
    samples: int = 0

    def update(self, energy_change_wh: float, dt_s: float, solar_w: float, board_w: float,
               charge_efficiency: float, discharge_efficiency: float, was_full: bool,
               weight: float = WEIGHT_PER_WINDOW) -> LoadEstimate:
        """One window: the battery's energy change over ``dt_s`` with the arrays' and the board's
        mean power over it."""
        if was_full or not dt_s > 0 or not all(math.isfinite(v) for v in (energy_change_wh, solar_w, board_w)):
            return self
        rate_w = energy_change_wh * 3600.0 / dt_s
        net_w = rate_w / charge_efficiency if rate_w > 0 else rate_w * discharge_efficiency
        seen = solar_w - board_w - net_w
        if not math.isfinite(seen):
            return self
        max_step_w = max(2.0, 0.2 * self.load_w)
        seen = min(self.load_w + max_step_w / weight, max(self.load_w - max_step_w / weight, seen))
        load_w = max(0.0, (1.0 - weight) * self.load_w + weight * seen)
        return replace(self, load_w=load_w, samples=self.samples + 1)


@dataclass
class _Window:
    start_s: float  # when it opened: the middle of the tick whose reading changed
    start_wh: float  # the charge then: the boundary between that tick's two readings
    solar_wh: float = 0.0  # the arrays' and the board's energy since (each reading held to the next tick)
    board_wh: float = 0.0
    full: bool = False  # a reading at FULL_PCT or above in it: it says nothing


class GaugeLoadLearner:
    """Learns :class:`LoadEstimate` from each tick's gauge reading, solar power and board power,
    between changes of the reading (see the module's docstring). ``tick`` takes the monotonic time;
    ``gap`` forgets the window open (a reading missing: the charge between is not known)."""

    def __init__(self, load_w: float, capacity_wh: float, charge_efficiency: float, discharge_efficiency: float,
                 window_s: float = WINDOW_S):
        self.estimate = LoadEstimate(float(load_w))
        self.capacity_wh = float(capacity_wh)
        self.charge_efficiency = charge_efficiency
        self.discharge_efficiency = discharge_efficiency
        self.window_s = window_s
        self._last: tuple[float, float, float, float] | None = None  # (mono s, soc %, solar W, board W)
        self._window: _Window | None = None

    @property
    def load_w(self) -> float:
        return self.estimate.load_w

    @property
    def samples(self) -> int:
        """The windows the estimate was learnt from."""
        return self.estimate.samples

    def gap(self) -> None:
        self._last, self._window = None, None

    def tick(self, mono_s: float, soc_pct: float, solar_w: float, board_w: float) -> None:
        if not all(math.isfinite(v) for v in (mono_s, soc_pct, solar_w, board_w)):
            self.gap()
            return
        last, self._last = self._last, (mono_s, soc_pct, solar_w, board_w)
        if last is None:
            return
        dt_s = mono_s - last[0]
        if dt_s <= 0:  # the monotonic clock does not go back; a repeated tick says nothing new
            self._last = last
            return
        if dt_s > MAX_TICK_S:  # a stalled loop: what the powers did meanwhile is not known
            self._window = None
            return
        # Each reading holds until the next: a board's ticks are a second apart, and the harness's physics
        # holds its powers over each step (its steps are the agent's ticks), which samples joined by
        # trapezoids read half a step early (seen: the estimate swung 1.5 W about the truth at 60-s steps).
        half_solar_wh = last[2] * dt_s / 3600.0 / 2.0
        half_board_wh = last[3] * dt_s / 3600.0 / 2.0
        full = max(last[1], soc_pct) >= FULL_PCT
        window = self._window
        if window is not None:  # the tick's first half is the open window's
            window.solar_wh += half_solar_wh
            window.board_wh += half_board_wh
            window.full |= full
        if soc_pct != last[1]:
            edge_s = (last[0] + mono_s) / 2.0
            edge_wh = (last[1] + soc_pct) / 2.0 / 100.0 * self.capacity_wh
            if window is None or edge_s - window.start_s >= self.window_s:
                if window is not None:
                    self._close(window, edge_s, edge_wh)
                window = self._window = _Window(edge_s, edge_wh, full=full)
            window.solar_wh += half_solar_wh  # and its second half, of the window open after its change
            window.board_wh += half_board_wh
            return
        if window is not None:
            window.solar_wh += half_solar_wh
            window.board_wh += half_board_wh

    def _close(self, window: _Window, end_s: float, end_wh: float) -> None:
        dt_s = end_s - window.start_s
        weight = 1.0 - (1.0 - WEIGHT_PER_WINDOW) ** (dt_s / self.window_s)
        self.estimate = self.estimate.update(
            end_wh - window.start_wh, dt_s, window.solar_wh * 3600.0 / dt_s, window.board_wh * 3600.0 / dt_s,
            self.charge_efficiency, self.discharge_efficiency, window.full, weight=weight)
