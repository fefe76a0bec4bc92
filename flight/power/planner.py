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
- modes above the operator's cap and the thermal governor's are left out.

The agent applies the first step and plans again every step or when the charge strays from
the plan's prediction (the world surprised it). A step's fractions x[k, m] become one mode
run for the whole step: the plan gives the step an average board power (idle plus each
mode's share of its extra power); the mode that does the most work within that power runs
(lower modes do more work per watt, so this rounding rarely loses work); if none fits, the
mode with the largest fraction runs when the plan has the board working at least half the
step, and the board idles otherwise. A re-plan a step later corrects what rounding cost.

When no schedule keeps those limits (idling alone would not), the plan is to idle: no work
is affordable. If HiGHS fails or runs past ``time_limit_s``, :func:`make_plan` returns None
and the caller falls back to the simple rule (``flight.power.policy.decide``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from flight.power.lp import BatterySpec, ComputeMode, build_energy_lp, simulate_energy_wh, stored_power_w
from flight.power.policy import Battery, ModePower

DEFAULT_TIME_LIMIT_S = 0.2  # a plan a minute; a Jetson's core does it in tens of ms


@dataclass(frozen=True)
class Plan:
    """A solved plan: per step the mode (index into the modes, -1 for idle) and the charge
    predicted at each step's end, from ``start_unix_s`` every ``step_s``."""

    start_unix_s: float
    step_s: float
    mode_index: tuple[int, ...]
    soc_pct: tuple[float, ...]  # N + 1 values: now, then each step's end
    work_fraction: tuple[float, ...]  # Σ_m x[k, m]: how much of each step the board works
    solve_ms: float
    cap_index: int

    def step_at(self, now_unix_s: float) -> int:
        return int((now_unix_s - self.start_unix_s) // self.step_s)

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


def _round_step(x: np.ndarray, budget_w: float, loaded_w: np.ndarray, rate: np.ndarray) -> int:
    """One mode for a step (see the module doc); -1: idle."""
    if x.sum() < 1e-3:
        return -1
    fits = np.flatnonzero(loaded_w <= budget_w + 1e-6)
    if fits.size:
        return int(fits[np.argmax(rate[fits] - 1e-9 * loaded_w[fits])])
    return int(np.argmax(x)) if x.sum() >= 0.5 else -1


def make_plan(now_unix_s: float, soc_pct: float, forecast_w, step_s: float, platform_w: float, battery: Battery,
              modes: tuple[ModePower, ...], keep_pct: float, cap_index: int,
              time_limit_s: float | None = DEFAULT_TIME_LIMIT_S, orbit_period_s: float | None = None,
              margin_w: float = 0.0) -> Plan | None:
    """The plan (all idle when nothing is affordable), or None when the solver fails or runs
    out of time. ``margin_w`` (the forecast's observed error, a multiple of it) is taken off
    every sample the LP sees; the scarcity reserve weighs the expected forecast, without it:
    a margin that turns every tight day into a scarce one would hoard a day's energy."""
    expected = np.maximum(np.asarray(forecast_w, dtype=float), 0.0)
    solar = np.maximum(expected - max(0.0, margin_w), 0.0)
    if solar.size < 2 or not math.isfinite(soc_pct) or not modes:
        return None
    soc_pct = min(100.0, soc_pct)  # a full battery's rounding
    cap_index = max(0, min(cap_index, len(modes) - 1))
    usable = modes[: cap_index + 1]
    full = battery.capacity_wh
    keep = keep_pct / 100.0 * full
    idle_w = min(m.idle_w for m in usable)
    spec_now = BatterySpec(full, max(0.0, soc_pct), 0.0, battery.charge_efficiency, battery.discharge_efficiency)
    idle_path = simulate_energy_wh(solar - platform_w - idle_w, step_s, spec_now)
    period_steps = int(round((orbit_period_s or solar.size * step_s / 1.5) / step_s))
    reserve = max(_next_orbit_reserve_wh(solar[-period_steps:], platform_w, idle_w, step_s, battery),
                  _scarcity_reserve_wh(expected, platform_w, idle_w, step_s, battery))
    final_wh = min(keep + reserve, idle_path[-1], full)  # idling always meets it: a plan always exists

    def idle_plan() -> Plan:
        return Plan(float(now_unix_s), float(step_s), (-1,) * solar.size,
                    tuple(float(100.0 * e / full) for e in idle_path), (0.0,) * solar.size, 0.0, cap_index)

    if soc_pct < keep_pct or idle_path.min() < keep - 1e-9:
        return idle_plan()  # nothing is affordable: idling is the most that keeps the limits
    spec = BatterySpec(full, soc_pct, keep_pct, battery.charge_efficiency, battery.discharge_efficiency)
    lp_modes = [ComputeMode(m.name, m.idle_w, max(m.idle_w, m.loaded_w),
                            m.throughput_rel if m.throughput_rel is not None else float(i + 1))
                for i, m in enumerate(usable)]
    lp = build_energy_lp(solar, np.full(solar.size, platform_w), step_s, spec, lp_modes, None, final_wh)
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
    budget = idle_w + x @ (loaded - idle_w)
    choice = tuple(_round_step(x[k], budget[k], loaded, rate) for k in range(n))
    return Plan(float(now_unix_s), float(step_s), choice, tuple(float(100.0 * e / full) for e in energy),
                tuple(float(w) for w in work), solve_ms, cap_index)
