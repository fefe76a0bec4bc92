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

Within a window the battery may charge and discharge (a coarse gauge's windows last minutes; the
plan alternates two modes within its step), and each way loses to its own efficiency: the window
keeps the arrays' less the board's energy apart for the ticks that charged and those that
discharged (by the estimate in force), and the load is what solves the window's balance, not its
net change taken through one efficiency (which counted the losses as load: 4 to 8 % high, found
in review). A change of the reading larger than the tick's power could make, plus a step of the
gauge, is a jump (a gauge recalibrated, a battery swapped on the bench): the window open is
forgotten and none opens at it. What it cannot tell apart: a gauge whose reading comes late (one
that updates every 20 s: a step of whole percent on 20 Wh is half a minute of draw) places the
changes either side of a turn of the charge late, and the windows that straddle one read the load
high (8 % in a test where half the windows did); a gauge whose noise is larger than its
steps (a voltage-based estimate read to a tenth) makes each window's change noisy, and the two
efficiencies turn that noise into a bias (low); and it takes the capacity it is given (the
gauge's full-charge capacity, else the configured nameplate) and the configured efficiencies as
the battery's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

WINDOW_S = 60.0
"""The shortest stretch one estimate is read from (a fine gauge's changes are each a tick apart)."""

WEIGHT_PER_WINDOW = 0.2
"""How far one WINDOW_S of evidence moves the estimate (exponentially weighted; a window weighs in
proportion to its length, at most MAX_WEIGHT)."""

MAX_WEIGHT = 0.5
"""The most one window moves the estimate (a long one: the battery balanced for an hour)."""

JUMP_POWER_FACTOR = 1.25
JUMP_WINDOW_S = 30.0
"""A change of the reading is a jump when it exceeds one step of the gauge (the smallest change seen; the
first change only tells the step) plus what JUMP_POWER_FACTOR times the arrays', the board's and the load's
power could move in the time since the reading last changed, at most JUMP_WINDOW_S or the tick (a gauge
updates every few seconds, so its changes come in bursts; a recalibration comes at once)."""

MAX_TICK_S = 600.0
"""Readings further apart than this (the loop stalled, the board suspended) do not say what the power was
between them: the window open is forgotten (so a harness stepping more than this at a time teaches no load)."""

FULL_PCT = 99.5
"""A reading at or above it: the battery is full, the charger throttles the arrays, and their
measured power is not what the spacecraft drew (such windows say nothing)."""

EMPTY_PCT = 0.5
"""A reading at or below it: the battery may be empty, and what the loads asked of it not served (a
brownout): the balance does not hold, and such windows say nothing either (found in audit: a window across
half an hour at 0 % read a 12 W load as 9.6 W, the most one window may move it)."""


@dataclass(frozen=True)
class LoadEstimate:
    """The estimate and how many windows made it. Each window moves it by at most ``max_step_w``
    (2 W, or a fifth of the load): one odd window is not a load. A window whose balance comes out
    negative counts like any other (noise either way averages out; dropping the negative ones
    biased the estimate up); the estimate itself never goes below zero."""

    load_w: float
    samples: int = 0

    def update(self, seen_w: float, weight: float = WEIGHT_PER_WINDOW) -> LoadEstimate:
        """One window whose energy balance says the load was ``seen_w`` over it."""
        if not math.isfinite(seen_w):
            return self
        max_step_w = max(2.0, 0.2 * self.load_w)
        seen_w = min(self.load_w + max_step_w / weight, max(self.load_w - max_step_w / weight, seen_w))
        load_w = max(0.0, (1.0 - weight) * self.load_w + weight * seen_w)
        return replace(self, load_w=load_w, samples=self.samples + 1)


@dataclass
class _Window:
    start_s: float  # when it opened: the middle of the tick whose reading changed
    start_pct: float  # the charge then: the boundary between that tick's two readings (%, so that a capacity
    # that changes meanwhile, the gauge's re-learnt, converts both ends alike)
    charge_wh: float = 0.0  # the arrays' less the board's energy (bus side) over the ticks that charged,
    charge_h: float = 0.0   # and how long they were
    discharge_wh: float = 0.0  # the same over the ticks that discharged
    discharge_h: float = 0.0
    full: bool = False  # a reading at FULL_PCT or above, or at EMPTY_PCT or below, in it: it says nothing

    def add(self, surplus_w: float, dt_s: float, charging: bool) -> None:
        if charging:
            self.charge_wh += surplus_w * dt_s / 3600.0
            self.charge_h += dt_s / 3600.0
        else:
            self.discharge_wh += surplus_w * dt_s / 3600.0
            self.discharge_h += dt_s / 3600.0


class GaugeLoadLearner:
    """Learns :class:`LoadEstimate` from each tick's gauge reading, solar power and board power,
    between changes of the reading (see the module's docstring)."""

    def __init__(self, load_w: float, capacity_wh: float, charge_efficiency: float, discharge_efficiency: float,
                 window_s: float = WINDOW_S):
        self.estimate = LoadEstimate(float(load_w))
        self.capacity_wh = float(capacity_wh)
        self.charge_efficiency = charge_efficiency
        self.discharge_efficiency = discharge_efficiency
        self.window_s = window_s
        self.jumps = 0  # changes of the reading no power could make: not evidence
        self._last: tuple[float, float, float, float] | None = None  # (mono s, soc %, solar W, board W)
        self._window: _Window | None = None
        self._step_pct: float | None = None  # the smallest change of the reading seen: the gauge's step
        self._changed_s = -math.inf  # when the reading last changed

    @property
    def load_w(self) -> float:
        return self.estimate.load_w

    @property
    def samples(self) -> int:
        """The windows the estimate was learnt from."""
        return self.estimate.samples

    def gap(self) -> None:
        """A reading missing: the charge between the readings either side of it is not known."""
        self._last, self._window = None, None

    def tick(self, mono_s: float, soc_pct: float | None, solar_w: float | None, board_w: float | None) -> None:
        """One tick's readings: the monotonic clock (s), the gauge (%, 0 to 100), the arrays' and the
        board's power (W, each held until the next tick). Anything else is a gap."""
        values = (mono_s, soc_pct, solar_w, board_w)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values) or not (
                0.0 <= soc_pct <= 100.0 and solar_w >= 0.0 and board_w >= 0.0):
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
        # holds the arrays' power over each of its steps (samples joined by trapezoids read it half a step
        # early: the estimate swung 1.5 W about the truth at 60-s steps). The board power the harness gives
        # is its last step's, a step late: that evens out over a window.
        surplus_w = last[2] - last[3]
        charging = surplus_w > self.estimate.load_w
        half_s = dt_s / 2.0
        full = max(last[1], soc_pct) >= FULL_PCT or min(last[1], soc_pct) <= EMPTY_PCT
        window = self._window
        if window is not None:  # the tick's first half is the open window's
            window.add(surplus_w, half_s, charging)
            window.full |= full
        if soc_pct == last[1]:
            if window is not None:
                window.add(surplus_w, half_s, charging)
            return
        change_pct = abs(soc_pct - last[1])
        since_s = min(mono_s - self._changed_s, max(JUMP_WINDOW_S, dt_s))
        self._changed_s = mono_s
        if self._step_pct is None:  # the first change: the gauge's step is not known, so nor is a jump
            self._step_pct = change_pct
            self._window = None
            return
        power_w = last[2] + last[3] + self.estimate.load_w  # more than the battery's energy could move by
        if change_pct > JUMP_POWER_FACTOR * power_w * since_s / 36.0 / self.capacity_wh + self._step_pct:
            self.jumps += 1
            self._window = None
            return
        self._step_pct = min(self._step_pct, change_pct)
        edge_s = (last[0] + mono_s) / 2.0
        edge_pct = (last[1] + soc_pct) / 2.0
        if window is None or edge_s - window.start_s >= self.window_s:
            if window is not None:
                self._close(window, edge_s, edge_pct)
            window = self._window = _Window(edge_s, edge_pct, full=full)
        window.add(surplus_w, half_s, charging)  # the tick's second half: the window open after its change

    def _close(self, window: _Window, end_s: float, end_pct: float) -> None:
        """The load that makes the window's balance hold: the battery gained ``eta_c (A_c - L T_c)`` over
        the ticks that charged and ``(A_d - L T_d) / eta_d`` over those that discharged."""
        if window.full:
            return
        eta_c, eta_d = self.charge_efficiency, self.discharge_efficiency
        hours = eta_c * window.charge_h + window.discharge_h / eta_d
        if not hours > 0:
            return
        change_wh = (end_pct - window.start_pct) / 100.0 * self.capacity_wh
        seen_w = (eta_c * window.charge_wh + window.discharge_wh / eta_d - change_wh) / hours
        dt_s = end_s - window.start_s
        # Weighed in proportion to its length: windows whose ends came late or early are longer or shorter, and
        # their mean weighed so is the charge's change over their time, where equal weights overstate it.
        self.estimate = self.estimate.update(seen_w, weight=min(MAX_WEIGHT, WEIGHT_PER_WINDOW * dt_s / self.window_s))
