"""The receding-horizon energy plan (pure): the most work over the next orbit and a half that
keeps the floor, solved as the harness's oracle solves a whole day, on the agent's forecast.

Each plan solves :func:`flight.power.lp.build_energy_lp` with HiGHS over the forecast of the
arrays' output (``flight.power.array``, calibrated, its observed error taken off), the
platform load the agent knows of, and the battery:

- the energy stays at or above floor + margin at every step (the margin covers what the
  forecast gets wrong; the caller sets it from the observed prediction error);
- at the horizon's end the battery holds at least floor + margin plus a reserve (or what
  idling until then would leave, if that is less), so the orbits after the horizon are not
  mortgaged: the lowest an idling board would take the battery over the orbit after the
  horizon (the forecast's last orbit, repeated: the orbit is periodic), or, where the
  arrays do not even cover an idling board over an orbit (a power-scarce day), a day of
  that drain;
- the next orbit's reserve assumes the platform draws ``load_margin_w`` more than the agent
  measured (loads nobody announced);
- the day's reserve that only that margin makes necessary (a day the measured load leaves
  in surplus, but the margin would make scarce) is *held, not built*: one orbit ahead, at the
  same point of the orbit, the battery must hold what it holds now, up to that reserve
  (:func:`_held_wh`). The plan does not spend a charge it already has below the reserve, and
  does not idle to build the reserve either: it grows only from energy the plan did not
  count on (a full battery, a forecast beaten, the forecast margin it keeps back). The day a
  heater comes on is not the day to have spent the reserve; nor is a day on which no heater
  comes on the day to stop working for it.
  Building it at the horizon's end, as a plan once did, spent up to 30 % of a day's work on a
  reserve the day never called on (``bench.power``'s worst case, 0.698 of the optimum); with
  no margin at all, two unannounced steps took one case's battery below the floor for 185
  minutes (seed 2054, down to 12.8 %). Past that orbit a plan may still show the held charge
  spent down to the horizon's reserve; the plans after it, each holding again, do not spend it;
- a Wh still stored at the horizon's end is worth most of what the most frugal mode would
  make of it (:func:`terminal_value_per_wh`);
- modes above the operator's cap and the thermal governor's are left out.

The agent applies the first step and plans again every step or when the charge strays from
the plan's prediction (the world surprised it). A step's fractions x[k, m] become two modes
in turn: the plan gives the step an average board power (idle plus each mode's share of its
extra power); the mode that does the most work within that power runs for part of the step
and the cheapest mode above it (or idle and the lowest mode) for the rest, in the shares that
make up the average (``Plan.mode_at``). Rounding each step to one mode instead lost what
the plan meant to spend between two modes: a board on an eclipse-free orbit with a full
battery ran the mode below its surplus all day and spilled the rest (0.81 of the optimum).

When no schedule keeps those limits (idling alone would not), the plan is to idle: no work
is affordable. If HiGHS fails or runs past ``time_limit_s``, :func:`make_plan` returns None
and the caller falls back to the simple rule (``flight.power.policy.decide``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from flight.power.lp import (
    BatterySpec,
    ComputeMode,
    ThermalRows,
    build_energy_lp,
    simulate_energy_wh,
    stored_power_w,
)
from flight.power.policy import Battery, ModePower
from flight.thermal.model import ThermalPlanInputs

DEFAULT_TIME_LIMIT_S = 0.2  # a plan a minute; a Jetson's core does it in tens of ms


@dataclass(frozen=True)
class Plan:
    """A solved plan: per step the mode (index into the modes, -1 for idle) and the charge
    predicted at each step's end, from ``start_unix_s`` every ``step_s``."""

    start_unix_s: float
    step_s: float
    mode_index: tuple[int, ...]  # the mode that runs the most of each step
    soc_pct: tuple[float, ...]  # N + 1 values: now, then each step's end
    work_fraction: tuple[float, ...]  # Σ_m x[k, m]: how much of each step the board works
    solve_ms: float
    cap_index: int
    # Each step runs ``upper`` for the first ``duty`` of it, then ``lower`` (-1: idle): the
    # plan's average board power, from the two modes either side of it.
    upper: tuple[int, ...] = ()
    lower: tuple[int, ...] = ()
    duty: tuple[float, ...] = ()
    solar_w: tuple[float, ...] = ()  # the forecast it planned on (before the margin came off)
    keep_pct: float = 0.0
    # The charge one orbit ahead the plan holds for the margin's reserve (None: no such hold).
    held_pct: float | None = None
    temp_max_c: float | None = None  # the hottest the board model predicts under the plan (None: no model)

    def step_at(self, now_unix_s: float) -> int:
        return int((now_unix_s - self.start_unix_s) // self.step_s)

    def mode_at(self, now_unix_s: float) -> int:
        """The mode to run at ``now`` (-1: idle), within the plan's steps."""
        k = min(max(0, self.step_at(now_unix_s)), len(self.mode_index) - 1)
        if not self.duty:
            return self.mode_index[k]
        into = (now_unix_s - self.start_unix_s) / self.step_s - k
        return self.upper[k] if into < self.duty[k] else self.lower[k]

    @property
    def min_soc_pct(self) -> float:
        return min(self.soc_pct)


def _next_orbit_reserve_wh(solar: np.ndarray, platform_w: float, idle_w: float, dt_s: float,
                           battery: Battery) -> float:
    """The most an idling board would draw from the battery, net, at any point of one more orbit
    like ``solar`` (the lowest point of its cumulative energy, from the start).

    >>> _next_orbit_reserve_wh(np.array([20.0, 0.0, 0.0, 20.0, 5.0]), 5.0, 5.0, 3600.0, Battery(100.0, 1.0, 1.0))
    10.0
    """
    stored = stored_power_w(solar - platform_w - idle_w, battery.charge_efficiency, battery.discharge_efficiency)
    return float(max(0.0, -np.cumsum(stored * dt_s / 3600.0).min()))


def _scarcity_reserve_wh(solar: np.ndarray, platform_w: float, idle_w: float, dt_s: float,
                         battery: Battery) -> float:
    """A day of what an idling board loses per second on average over the forecast, where that
    average is a loss (0 otherwise): on a power-scarce day, the energy to idle until tomorrow.

    >>> _scarcity_reserve_wh(np.array([30.0, 0.0]), 5.0, 5.0, 60.0, Battery(100.0, 1.0, 1.0))
    0.0
    >>> round(_scarcity_reserve_wh(np.array([12.0, 0.0]), 5.0, 5.0, 60.0, Battery(100.0, 1.0, 1.0)), 1)
    96.0
    """
    stored = stored_power_w(solar - platform_w - idle_w, battery.charge_efficiency, battery.discharge_efficiency)
    mean_w = float(stored.mean())
    return -mean_w * 24.0 if mean_w < 0 else 0.0


def _held_wh(now_wh: float, keep_wh: float, margin_reserve_wh: float, measured_reserve_wh: float,
             idle_at_orbit_wh: float) -> float | None:
    """The charge the plan must hold one orbit ahead for the reserve only the load margin asks
    for: what the battery holds now, up to ``keep + margin_reserve``, and never more than
    idling would leave there (so a plan always exists). None where the margin asks for no more
    than the reserves the end of the horizon already keeps, or the hold for no more than every
    step keeps anyway.

    >>> _held_wh(40.0, 35.0, 50.0, 10.0, 44.0)  # below the reserve: hold what it has
    40.0
    >>> _held_wh(95.0, 35.0, 50.0, 10.0, 99.0)  # above it: spend down to it
    85.0
    >>> _held_wh(40.0, 35.0, 50.0, 10.0, 38.0)  # idling alone would not hold it
    38.0
    >>> _held_wh(40.0, 35.0, 10.0, 10.0, 44.0) is None
    True
    >>> _held_wh(34.0, 35.0, 50.0, 10.0, 44.0) is None  # below what every step keeps
    True
    """
    if margin_reserve_wh <= measured_reserve_wh:
        return None
    held = min(now_wh, keep_wh + margin_reserve_wh, idle_at_orbit_wh)
    return held if held > keep_wh + 1e-9 else None


TERMINAL_VALUE_FRACTION = 0.9


def terminal_value_per_wh(modes: list[ComputeMode], battery: Battery) -> float:
    """What a Wh still stored at the horizon's end is worth (work per Wh): a fraction of what
    the most frugal mode makes of it later, drawn through the discharge efficiency.

    Without it the LP values nothing beyond its reserve, and its solutions are degenerate in
    time: spending a surplus on a costly mode in the first step (the only step applied)
    scores the same as saving it for the frugal mode after the horizon. Re-planned every
    step, that bias ran the costly modes all day: 16 % less work than the optimum on a
    power-scarce body-fixed day. Valued at ``TERMINAL_VALUE_FRACTION`` (below 1, so that work
    now still beats saving in the frugal mode), a Wh buys a costly mode only where it
    would otherwise spill.

    >>> terminal_value_per_wh([ComputeMode("low", 5.0, 10.0, 1.0), ComputeMode("high", 5.0, 30.0, 2.0)],
    ...                       Battery(100.0, 0.95, 1.0))
    648.0
    """
    idle_w = min(md.idle_power_w for md in modes)  # the LP's idle: extra power is above it
    per_wh = [md.throughput_per_s * 3600.0 / (md.loaded_power_w - idle_w) for md in modes if md.loaded_power_w > idle_w]
    return TERMINAL_VALUE_FRACTION * battery.discharge_efficiency * max(per_wh, default=0.0)


MIN_SHARE = 0.25  # of a step: the shortest time one of its two modes runs


def _split_step(budget_w: float, idle_w: float, loaded_w: np.ndarray, rate: np.ndarray) -> tuple[int, int, float]:
    """A step's average board power as two modes in turn: (upper, lower, duty), where
    ``lower`` does the most work within the budget (-1: idle) and ``upper`` is the cheapest
    mode above it, run for the share of the step that makes up the average.

    >>> _split_step(8.0, 4.0, np.array([6.0, 12.0]), np.array([1.0, 1.5]))
    (1, 0, 0.3333333333333333)
    >>> _split_step(5.0, 4.0, np.array([6.0, 12.0]), np.array([1.0, 1.5]))
    (0, -1, 0.5)
    >>> _split_step(11.5, 4.0, np.array([6.0, 12.0]), np.array([1.0, 1.5]))  # 92 %: not worth a switch
    (1, 1, 0.0)
    """
    fits = np.flatnonzero(loaded_w <= budget_w + 1e-6)
    lower = int(fits[np.argmax(rate[fits] - 1e-9 * loaded_w[fits])]) if fits.size else -1
    low_w = loaded_w[lower] if lower >= 0 else idle_w
    above = np.flatnonzero(loaded_w > budget_w + 1e-6)
    if not above.size or budget_w - low_w < 1e-6:
        return lower, lower, 0.0
    upper = int(above[np.argmin(loaded_w[above])])
    duty = float(min(1.0, max(0.0, (budget_w - low_w) / (loaded_w[upper] - low_w))))
    # A share shorter than a quarter of the step is not worth a mode switch (each one is an
    # nvpmodel call and an event): the step runs one mode, and the next plan corrects.
    if duty < MIN_SHARE:
        return lower, lower, 0.0
    if duty > 1.0 - MIN_SHARE:
        return upper, upper, 0.0
    return upper, lower, duty


@dataclass(frozen=True)
class _Thermal(ThermalRows):
    idle_c: np.ndarray = field(default_factory=lambda: np.empty(0))  # the board idling all horizon, as predicted


def _thermal_rows(thermal: ThermalPlanInputs, n: int, idle_w: float) -> _Thermal:
    sun = np.asarray(thermal.sun[:n] + (thermal.sun[-1:] or (1.0,)) * max(0, n - len(thermal.sun)), dtype=float)
    idling = thermal.fit.predict_c(thermal.t_now_c, thermal.t_prev_c, thermal.p_prev_w, np.full(n, idle_w), sun)
    return _Thermal(thermal.fit.theta, thermal.t_now_c, thermal.t_prev_c, thermal.p_prev_w, sun,
                    np.maximum(thermal.limit_c, idling + 0.05), idling)  # idling always keeps the limit


def make_plan(now_unix_s: float, soc_pct: float, forecast_w, step_s: float, platform_w: float, battery: Battery,
              modes: tuple[ModePower, ...], keep_pct: float, cap_index: int,
              time_limit_s: float | None = DEFAULT_TIME_LIMIT_S, orbit_period_s: float | None = None,
              margin_w: float = 0.0, load_margin_w: float = 0.0,
              thermal: ThermalPlanInputs | None = None) -> Plan | None:
    """The plan (all idle when nothing is affordable), or None when the solver fails or runs
    out of time.

    ``margin_w`` (a multiple of the forecast's observed error) is taken off every sample the
    LP sees; the scarcity reserve weighs the expected forecast without it (a forecast margin
    that turned every tight day scarce would hoard a day's energy). ``load_margin_w``, the
    unannounced platform load the reserves allow for, does count there: a day that such a
    load would make scarce holds the charge it has towards that day's reserve (see the
    module doc).
    ``thermal``: the board's learnt temperature model (steps of ``step_s``), used when it is
    trusted: no step may take the predicted temperature above its limit, unless idling would
    too (then no higher than idling would)."""
    expected = np.maximum(np.asarray(forecast_w, dtype=float), 0.0)
    solar = np.maximum(expected - max(0.0, margin_w), 0.0)
    if solar.size < 2 or not math.isfinite(soc_pct) or not modes:
        return None
    soc_pct = min(100.0, soc_pct)  # a full battery's rounding
    cap_index = max(0, min(cap_index, len(modes) - 1))
    usable = modes[: cap_index + 1]
    # A mode whose power nothing states costs inf (``mode_powers``: MAXN on a board with no profile, sorted
    # last): never affordable, so it is left out; in the LP its inf made every plan fail, and the rule ran all
    # day in place of the plan (found in audit).
    while usable and not (math.isfinite(usable[-1].idle_w) and math.isfinite(usable[-1].loaded_w)):
        usable = usable[:-1]
    if not usable:
        return None
    full = battery.capacity_wh
    keep = keep_pct / 100.0 * full
    idle_w = min(m.idle_w for m in usable)
    spec_now = BatterySpec(full, max(0.0, soc_pct), 0.0, battery.charge_efficiency, battery.discharge_efficiency)
    idle_path = simulate_energy_wh(solar - platform_w - idle_w, step_s, spec_now)
    period = orbit_period_s if orbit_period_s is not None and orbit_period_s > 0 else solar.size * step_s / 1.5
    # One orbit ahead, the same point of the orbit as now (the forecast may be a step short).
    orbit_k = max(1, min(int(round(period / step_s)), solar.size))
    # A day's drain is judged over one whole orbit (the forecast's last): an average over 1.5
    # orbits would change with the half-orbit it counts twice, and a hold that came and went
    # with the orbit's phase was spent down whenever it went.
    last_orbit = slice(solar.size - orbit_k, None)
    reserve_load_w = platform_w + max(0.0, load_margin_w)
    reserve = max(_next_orbit_reserve_wh(solar[last_orbit], reserve_load_w, idle_w, step_s, battery),
                  _scarcity_reserve_wh(expected[last_orbit], platform_w, idle_w, step_s, battery))
    final_wh = min(keep + reserve, idle_path[-1], full)  # idling always meets it: a plan always exists
    held = _held_wh(soc_pct / 100.0 * full, keep,
                    _scarcity_reserve_wh(expected[last_orbit], reserve_load_w, idle_w, step_s, battery), reserve,
                    float(idle_path[orbit_k]))

    rows = _thermal_rows(thermal, solar.size, idle_w) if thermal is not None and thermal.fit.usable else None

    def idle_plan() -> Plan:
        return Plan(float(now_unix_s), float(step_s), (-1,) * solar.size,
                    tuple(float(100.0 * e / full) for e in idle_path), (0.0,) * solar.size, 0.0, cap_index,
                    solar_w=tuple(float(w) for w in expected), keep_pct=float(keep_pct),
                    temp_max_c=float(rows.idle_c.max()) if rows is not None else None)

    if soc_pct < keep_pct or idle_path.min() < keep - 1e-9:
        return idle_plan()  # nothing is affordable: idling is the most that keeps the limits
    spec = BatterySpec(full, soc_pct, keep_pct, battery.charge_efficiency, battery.discharge_efficiency)
    lp_modes = [ComputeMode(m.name, m.idle_w, max(m.idle_w, m.loaded_w),
                            m.throughput_rel if m.throughput_rel is not None else float(i + 1))
                for i, m in enumerate(usable)]
    lp = build_energy_lp(solar, np.full(solar.size, platform_w), step_s, spec, lp_modes, None, final_wh,
                         terminal_value_per_wh(lp_modes, battery), rows)
    if held is not None:
        lp.bounds[lp.col_e + orbit_k, 0] = max(lp.bounds[lp.col_e + orbit_k, 0], held)
    t0 = time.perf_counter()
    try:
        res = linprog(lp.c, A_ub=lp.a_ub, b_ub=lp.b_ub, A_eq=lp.a_eq, b_eq=lp.b_eq, bounds=lp.bounds, method="highs",
                      options={} if time_limit_s is None else {"time_limit": time_limit_s})
    except (ValueError, RuntimeError):
        return None
    solve_ms = (time.perf_counter() - t0) * 1000.0
    if res.status == 2:  # infeasible: tolerances at the edge of what idling keeps
        return idle_plan()
    if res.status != 0 or res.x is None:
        return None
    n, m = lp.n, lp.m
    x = np.clip(res.x[: n * m].reshape(n, m), 0.0, 1.0)
    energy = res.x[lp.col_e: lp.col_e + n + 1]
    work = x.sum(axis=1)
    loaded = np.array([md.loaded_power_w for md in lp_modes])
    rate = np.array([md.throughput_per_s for md in lp_modes])
    temp_max = float(res.x[lp.col_t: lp.col_t + n].max()) if rows is not None else None
    budget = idle_w + x @ (loaded - idle_w)
    split = [_split_step(float(budget[k]), idle_w, loaded, rate) if work[k] >= 1e-3 else (-1, -1, 0.0)
             for k in range(n)]
    return Plan(float(now_unix_s), float(step_s), tuple(u if d >= 0.5 else lo for u, lo, d in split),
                tuple(float(100.0 * e / full) for e in energy), tuple(float(w) for w in work), solve_ms, cap_index,
                tuple(u for u, _, _ in split), tuple(lo for _, lo, _ in split), tuple(d for _, _, d in split),
                tuple(float(w) for w in expected), float(keep_pct), None if held is None else 100.0 * held / full,
                temp_max)
