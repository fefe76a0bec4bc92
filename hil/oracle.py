"""The offline optimum of compute work over a profile: the denominator of ``work_vs_oracle``.

Given the whole profile in advance (solar input, platform load and, optionally, a thermal
power cap per step), :func:`solve_oracle` finds the most compute work any schedule of power
modes could have done under the same battery model and limits the agent flew with. The
benchmark ``work_vs_oracle`` is then the agent's work (:func:`work_done`) over
``OracleResult.work``; :func:`naive_always_on` is the other end of the scale, a board that
runs its top mode flat out and breaks the floor in eclipse.

Battery model (the agent's own, ``flight/power/policy.py``, NOS3 EPS style): net = solar −
load; charging stores net·η_charge, discharging draws |net|/η_discharge; the battery
saturates at full and the surplus is wasted ("spill").

The linear program, per step k (length ``dt_s``, h = dt_s/3600 h) and mode m:

    maximise   Σ_k Σ_m throughput_m · x[k,m] · dt_s
    subject to Σ_m x[k,m] ≤ 1,  0 ≤ x[k,m] ≤ 1
               board[k] = idle_0 + Σ_m x[k,m]·(loaded_m − idle_0) ≤ max_board_power_w[k]
               c[k] − d[k] + spill[k] = solar[k] − platform[k] − board[k],  c, d, spill ≥ 0
               E[k+1] = E[k] + h·(η_c·c[k] − d[k]/η_d)
               floor ≤ E[k] ≤ capacity,  E[0] = initial,  E[N] ≥ final minimum

x[k,m] is the fraction of step k spent loaded in mode m; the rest of the step the board idles
in the mode with the lowest idle power (idle_0). Idle is implicit rather than a variable per
mode because idling in any other mode only costs more power for no work: the optimum would
never choose it. board[k] is substituted into the balance row, so it is not a variable.

Why the LP is the true optimum and an upper bound on the agent (its "relaxations"):

1. Charging and discharging at once (c·d > 0). The LP cannot forbid it (that needs a binary
   per step), but with η_c·η_d < 1 it only loses energy: a solution with c, d > 0 maps to
   c' = ΔE/(h·η_c), d' = 0 (ΔE ≥ 0) or c' = 0, d' = −ΔE·η_d/h (ΔE < 0), with the same E
   trajectory and board power, and a spill that is larger by d·(1/(η_c·η_d) − 1) or
   c·(1 − η_c·η_d) ≥ 0; so it can never buy work that spilling would not. HiGHS may still
   return it where energy has no use (alternative optima); ``OracleResult.cycled_wh``
   reports how much the raw solution burned that way. tests/test_hil_oracle.py checks the
   optimum against a MILP that forbids it.
2. Spilling while not full. The real battery stores every surplus watt; the LP may waste
   it, and does where energy has no use (the top mode already runs and the battery will
   fill later anyway: alternative optima). This never helps: the battery map
   E → min(full, E + gain) is monotone, so flying the LP's board schedule through the real
   model keeps E at least as high at every step, and the floor and the final minimum still
   hold. Conversely every real schedule is LP-feasible (spill = what saturation threw
   away). Hence the LP optimum is reachable by the real model, and :func:`solve_oracle`
   reports the schedule as the real model flies it (``soc_pct``, ``charge_w``…), with the
   LP's own trajectory in ``lp_soc_pct`` (never above ``soc_pct``).
3. Mixing modes inside a step and idling at idle_0. The agent runs one mode per step, idling
   in that mode (idle_m ≥ idle_0), so for the same work it draws at least the LP's power:
   its schedule is LP-feasible and ``work ≥ agent's work`` whenever the agent kept the floor,
   the thermal cap and the final minimum. The gap is (idle_m − idle_0)·(1 − duty) per step,
   and an agent closes most of it by idling in the lowest mode and alternating modes from
   step to step. No mode-switch time or cost is modelled, which flatters the oracle
   slightly. One exception: a board that is off (the HIL loop counts 0 W while the agent
   is down) draws less than idle_0, which the oracle cannot; such steps can let the agent
   save energy the oracle could not.
4. The thermal limit, linearised. ``max_board_power_w[k]`` stands in for "the board stays
   below its temperature limit": the most it may dissipate in step k. The caller derives it
   (from the thermal model with the environment's heat loads along the profile). A cap per
   step is exact for a steady-state limit, but the board's heat capacity lets real
   schedules exceed the steady-state power for a while; a cap tighter than what the
   thermal model really allows can put the oracle below an agent, so derive the cap
   generously (an upper bound on the allowed power), never conservatively. Or pass the
   harness's own two-node model (:class:`ThermalBound`): the board and radiator
   temperatures become variables stepped exactly as ``hil.physics.thermal`` steps them (its
   forward-Euler sub-steps), with the board below ``board_limit_c`` at each step's end. The
   one term that is not linear, the radiator's emission σεA·T⁴, is relaxed to anything up to
   the chord of T⁴ between the coldest and hottest the radiator can be at that sub-step
   (the coldest: the lowest idle power throughout; the hottest: the top mode's power
   throughout, the board held at the limit at each step's end). T⁴ is convex, so the chord
   lies above it: every real schedule is feasible, with at least its real cooling, and the
   optimum is an upper bound (loose by the chord's height above T⁴, most where the two
   bounds are far apart).
5. The step. Inputs are taken as constant over each step (the HIL loop integrates them that
   way: left-point values). Averaging a finer profile into blocks (:func:`coarsen`) gives a
   coarser LP that is a relaxation of the finer one: any fine schedule, averaged over the
   blocks, is feasible for it with the same work (the constraints are linear and E is only
   checked at block ends). So the coarse optimum is ≥ the fine one, which keeps
   ``work_vs_oracle`` conservative; the excess comes from dips below the floor or above full
   inside a block that the block ends do not see. On the synthetic orbit of the tests, against
   10 s steps: 0.000 % at 60 s, +0.8 % at 300 s, +2.9 % at 950 s.

The final state of charge: by default the battery must end at least as full as it started.
Without this the optimum drains the battery to the floor just before the horizon, work
bought with energy that the next eclipse (after the horizon) needed: an agent that has to
survive that eclipse could never do it. To compare with an agent that ended lower than it
started, pass ``final_soc_min_pct`` = the agent's final charge, so that both spend the same.

Pure numpy/scipy: arrays and small frozen dataclasses in, a frozen result out; no I/O.

>>> modes = [ComputeMode("low", 5.0, 10.0, 1.0), ComputeMode("high", 6.0, 30.0, 2.0)]
>>> bat = BatterySpec(capacity_wh=100.0, initial_soc_pct=50.0, floor_pct=10.0)
>>> r = solve_oracle(np.full(6, 100.0), 600.0, 10.0, bat, modes)   # an hour of plenty
>>> r.status, round(r.work)
('optimal', 7200)
>>> r.mode_fractions[:, 1]
array([1., 1., 1., 1., 1., 1.])
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.optimize import linprog

from flight.power.lp import BatterySpec, ComputeMode, simulate_energy_wh
from flight.power.lp import EnergyLp as _Lp  # noqa: F401 - the tests build the LP directly
from flight.power.lp import build_energy_lp as _build_lp
from hil.physics.thermal import KELVIN_OFFSET, STABILITY_FRACTION, STEFAN_BOLTZMANN_W_M2_K4, ThermalParams

# Slack in Wh when checking the solution and the idle trajectory against the floor and the
# final minimum: HiGHS's primal feasibility tolerance is 1e-7 on rows with coefficients of
# order 1, so 1e-6 Wh (3.6 mJ) is far above solver noise and far below anything physical.
_TOL_WH = 1e-6


class OracleInfeasible(ValueError):
    """No schedule keeps the limits, not even idling in the lowest mode throughout.

    Idling in the lowest mode keeps the battery at least as full as any other schedule at
    every step, so when idling breaks a limit, every schedule does. ``step`` is the step
    boundary (0…N) where idling first breaks it, ``soc_pct`` the charge there.
    """

    def __init__(self, message: str, step: int, soc_pct: float):
        super().__init__(message)
        self.step = step
        self.soc_pct = soc_pct


NUMERICAL_TROUBLE = 4  # scipy's linprog status: "numerical difficulties encountered" (another method may not)


class OracleError(RuntimeError):
    """HiGHS did not find the optimum (iteration limit, numerical trouble); carries its status."""


def modes_from_board(board: Any, work_per_s_at_maxn: float) -> tuple[ComputeMode, ...]:
    """All modes of a loaded board profile (``flight.hal.boards.load_board``), in its order."""
    return tuple(ComputeMode.from_profile(m, work_per_s_at_maxn) for m in board.modes)


@dataclass(frozen=True)
class OracleResult:
    """The optimum. Arrays per step k = 0…N−1, except the charges, at the N+1 step
    boundaries (``soc_pct[0]`` is the initial charge). ``mode_fractions[k, m]``: share of
    step k spent loaded in mode m; the rest idles in the lowest-idle mode.

    ``soc_pct``, ``charge_w`` (into the battery, before η_c), ``discharge_w`` (out of it,
    after η_d) and ``spill_w`` (surplus wasted because the battery is full): the schedule
    flown through the battery model, as the agent's run is. ``lp_soc_pct``: the LP's own
    trajectory, lower where it wasted energy it could have stored (module docstring,
    point 2). ``cycled_wh``: energy the raw LP solution burned by charging and discharging
    at once (point 1; harmless, reported so that it is seen)."""

    work: float
    soc_pct: np.ndarray
    mode_fractions: np.ndarray
    board_power_w: np.ndarray
    status: str
    solve_s: float
    charge_w: np.ndarray
    discharge_w: np.ndarray
    spill_w: np.ndarray
    lp_soc_pct: np.ndarray
    mode_names: tuple[str, ...]
    dt_s: float
    cycled_wh: float
    n_variables: int
    n_constraints: int


@dataclass(frozen=True)
class NaiveResult:
    """A run of the top mode loaded throughout. ``soc_pct`` at the N+1 step boundaries;
    ``floor_violations``: the boundaries where it was below the floor; ``empty_steps``: the
    boundaries where it was empty (the model holds it at 0 %; a real bus would brown out)."""

    work: float
    soc_pct: np.ndarray
    board_power_w: np.ndarray
    floor_violations: np.ndarray
    empty_steps: np.ndarray
    min_soc_pct: float


def _per_step(name: str, values: ArrayLike, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name}: need a scalar or one value per step ({n}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}: not finite at step {bad} ({arr[bad]})")
    return arr


def _profile(solar_power_w: ArrayLike, dt_s: float, platform_load_w: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    solar = np.asarray(solar_power_w, dtype=float)
    if solar.ndim != 1 or solar.size == 0:
        raise ValueError(f"solar_power_w: need a 1-D array with one value per step, got shape {solar.shape}")
    solar = _per_step("solar_power_w", solar, solar.size)
    if np.any(solar < 0):
        raise ValueError(f"solar_power_w: negative at step {int(np.argmax(solar < 0))} ({solar.min()} W)")
    if not dt_s > 0:
        raise ValueError(f"dt_s: must be > 0 s, got {dt_s}")
    platform = _per_step("platform_load_w", platform_load_w, solar.size)
    return solar, platform


def coarsen(values: ArrayLike, factor: int) -> np.ndarray:
    """Block means of a per-step profile, for solving on a step ``factor`` times longer.

    Average (do not subsample) solar, platform load and thermal cap: with block means the
    coarse LP is a relaxation of the fine one (module docstring, point 5).

    >>> coarsen([1.0, 3.0, 10.0, 20.0], 2)
    array([ 2., 15.])
    """
    arr = np.asarray(values, dtype=float)
    if factor < 1 or arr.ndim != 1 or arr.size % factor:
        raise ValueError(
            f"coarsen: need a 1-D profile whose length is a multiple of factor; got {arr.size} values, "
            f"factor {factor}: trim the profile to a multiple of {factor} steps first"
        )
    return arr.reshape(-1, factor).mean(axis=1)


def _check_feasible(solar: np.ndarray, platform: np.ndarray, dt_s: float, battery: BatterySpec,
                    idle: ComputeMode, cap: np.ndarray | None, final_wh: float) -> None:
    """Raise :class:`OracleInfeasible` when idling in the lowest mode throughout breaks a
    limit. Exact: idling keeps the battery fullest (module docstring), so otherwise the LP
    is feasible (idling itself is a solution)."""
    full = battery.capacity_wh
    if cap is not None and np.any(cap < idle.idle_power_w):
        k = int(np.argmax(cap < idle.idle_power_w))
        raise OracleInfeasible(
            f"max_board_power_w[{k}] = {cap[k]:.2f} W is below the lowest idle power "
            f"({idle.name}, {idle.idle_power_w} W): the board cannot run at all there; "
            "raise the cap to at least the idle power (the board cannot be switched off)", k, float("nan"))
    energy = simulate_energy_wh(solar - platform - idle.idle_power_w, dt_s, battery)
    floor_wh = battery.floor_pct / 100.0 * full
    below = np.flatnonzero(energy < floor_wh - _TOL_WH)
    if below.size:
        k = int(below[0])
        raise OracleInfeasible(
            f"even idling in {idle.name} ({idle.idle_power_w} W) the battery falls to "
            f"{100 * energy[k] / full:.2f} % at step {k} (t = {k * dt_s:.0f} s), below the floor "
            f"{battery.floor_pct} %: start fuller, lower the platform load or the floor", k, 100 * energy[k] / full)
    if energy[-1] < final_wh - _TOL_WH:
        n = energy.size - 1
        raise OracleInfeasible(
            f"final_soc_min_pct {100 * final_wh / full:.2f} % cannot be reached: even idling in "
            f"{idle.name} ({idle.idle_power_w} W) the battery ends at {100 * energy[-1] / full:.2f} %; "
            "end the profile at the orbital phase where it started (whole orbits), or pass "
            f"final_soc_min_pct ≤ {100 * energy[-1] / full:.2f}", n, 100 * energy[-1] / full)


@dataclass(frozen=True)
class ThermalBound:
    """The harness's thermal model as a limit for the oracle (module docstring, point 4): its parameters, the
    heat the radiator absorbs in each step (``hil.loop.Trace.absorbed_w``), the temperatures at the start, and
    the board's limit at each step's end, °C."""

    params: ThermalParams
    absorbed_w: np.ndarray
    board_start_c: float
    radiator_start_c: float
    board_limit_c: float


def _substeps(params: ThermalParams, dt_s: float, radiator_k: np.ndarray) -> int:
    """The sub-steps ``ThermalModel.step`` splits a step of ``dt_s`` into at these radiator temperatures; one
    number for them all, as the LP needs (ValueError otherwise: a step too long for one)."""
    g = params.board_to_radiator_w_per_k
    g_rad = 4.0 * STEFAN_BOLTZMANN_W_M2_K4 * params.radiator_emissivity * params.radiator_area_m2 * radiator_k**3
    rate = np.maximum(2.0 * g / params.board_heat_capacity_j_per_k,
                      (2.0 * g + g_rad) / params.radiator_heat_capacity_j_per_k)
    counts = np.unique(np.maximum(1, np.ceil(dt_s * rate / STABILITY_FRACTION)).astype(int))
    if counts.size != 1:
        raise ValueError(f"thermal: at dt_s = {dt_s} the harness splits steps into {counts.min()} to {counts.max()} "
                         "sub-steps over the radiator's range; solve at a shorter step")
    return int(counts[0])


def _simulate(th: ThermalBound, dt_s: float, sub: int, power_w: float, n: int, limit_k: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The harness's forward-Euler steps (``ThermalModel.step``) at a constant power: (the board at each step's
    end, the radiator at each sub-step's start and the end), K. ``limit_k``: the board put back to it at each
    step's end where it is above."""
    p = th.params
    sigma_e_a = STEFAN_BOLTZMANN_W_M2_K4 * p.radiator_emissivity * p.radiator_area_m2
    g, c_b, c_r = p.board_to_radiator_w_per_k, p.board_heat_capacity_j_per_k, p.radiator_heat_capacity_j_per_k
    h = dt_s / sub
    t_b, t_r = th.board_start_c + KELVIN_OFFSET, th.radiator_start_c + KELVIN_OFFSET
    board = np.empty(n + 1)
    trail = np.empty(n * sub + 1)
    board[0] = t_b
    for k in range(n):
        q_w = float(th.absorbed_w[k])
        for i in range(sub):
            trail[k * sub + i] = t_r
            flow = g * (t_b - t_r)
            t_b, t_r = t_b + h * (power_w - flow) / c_b, t_r + h * (flow + q_w - sigma_e_a * t_r**4) / c_r
        if limit_k is not None:
            t_b = min(t_b, limit_k)
        board[k + 1] = t_b
    trail[-1] = t_r
    return board, trail


def _radiator_bounds(th: ThermalBound, dt_s: float, idle_w: float, top_w: float, n: int
                     ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(sub-steps a step, the board at each step's end idling throughout, and the coldest and the hottest the
    radiator can be at each sub-step's start, K). The Euler map is increasing in both temperatures and the
    power (its steps are short: module doc of hil.physics.thermal), so the lowest idle power throughout bounds
    every schedule from below, and the top mode's power throughout, the board put back to its limit at each
    step's end, the radiator from above."""
    limit_k = max(th.board_limit_c, th.board_start_c) + KELVIN_OFFSET
    sub = _substeps(th.params, dt_s, np.array([th.radiator_start_c + KELVIN_OFFSET]))
    idle_board, lo = _simulate(th, dt_s, sub, idle_w, n)
    _, hi = _simulate(th, dt_s, sub, top_w, n, limit_k)
    if _substeps(th.params, dt_s, np.concatenate([lo, hi])) != sub:
        raise ValueError(f"thermal: at dt_s = {dt_s} the harness would split steps differently over the radiator's "
                         "range; solve at a shorter step")
    return sub, idle_board, lo, hi


def _with_thermal(lp: Any, th: ThermalBound, dt_s: float, modes: Sequence[ComputeMode]) -> tuple[Any, ...]:
    """The LP's arrays with the harness's thermal model added (module docstring, point 4). New columns, on the
    sub-step grid j = 0..N·S: the board's and the radiator's temperature (°C: the rows are alike in any origin,
    and values of tens keep HiGHS's tolerances meaningful), then the radiator's emission (W)."""
    n, m = lp.n, lp.m
    p = th.params
    limit_k = max(th.board_limit_c, th.board_start_c) + KELVIN_OFFSET
    if np.asarray(th.absorbed_w).shape != (n,):
        raise ValueError(f"thermal.absorbed_w: need one value per step ({n}), got shape {np.shape(th.absorbed_w)}")
    idle_w = min(md.idle_power_w for md in modes)
    top_w = max(md.loaded_power_w for md in modes)
    extra_w = np.array([md.loaded_power_w - idle_w for md in modes])
    sub, idle_board, lo, hi = _radiator_bounds(th, dt_s, idle_w, top_w, n)
    over = np.flatnonzero(idle_board[1:] > limit_k + 1e-6)
    if over.size:  # the coolest any schedule can be: then every schedule breaks the limit
        k = int(over[0]) + 1
        raise OracleInfeasible(f"even idling at {idle_w} W the board reaches {idle_board[k] - KELVIN_OFFSET:.2f} C at "
                               f"step {k}, above its limit {limit_k - KELVIN_OFFSET:g} C", k, float("nan"))
    ns = n * sub
    base = lp.c.size
    col_tb, col_tr, col_r = base, base + ns + 1, base + 2 * (ns + 1)
    n_new = 3 * ns + 2
    h = dt_s / sub
    g, c_b, c_r = p.board_to_radiator_w_per_k, p.board_heat_capacity_j_per_k, p.radiator_heat_capacity_j_per_k
    sigma_e_a = STEFAN_BOLTZMANN_W_M2_K4 * p.radiator_emissivity * p.radiator_area_m2
    j = np.arange(ns)
    step = j // sub
    col_x = step[:, None] * m + np.arange(m)[None, :]
    # Board rows 0..ns-1: Tb[j+1] - (1 - hG/Cb) Tb[j] - (hG/Cb) Tr[j] - (h/Cb) Σ x·extra = (h/Cb) idle
    # Radiator rows ns..2ns-1: Tr[j+1] - (1 - hG/Cr) Tr[j] - (hG/Cr) Tb[j] + (h/Cr) R[j] = (h/Cr) Q[step]
    rows = [j, j, j, np.repeat(j, m), ns + j, ns + j, ns + j, ns + j]
    cols = [col_tb + j + 1, col_tb + j, col_tr + j, col_x.ravel(), col_tr + j + 1, col_tr + j, col_tb + j, col_r + j]
    vals = [np.ones(ns), np.full(ns, -(1.0 - h * g / c_b)), np.full(ns, -h * g / c_b), np.tile(-h / c_b * extra_w, ns),
            np.ones(ns), np.full(ns, -(1.0 - h * g / c_r)), np.full(ns, -h * g / c_r), np.full(ns, h / c_r)]
    eq_new = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(2 * ns, base + n_new)).tocsr()
    a_eq = sp.vstack([sp.hstack([lp.a_eq, sp.csr_array((lp.a_eq.shape[0], n_new))]), eq_new]).tocsr()
    b_eq = np.concatenate([lp.b_eq, np.full(ns, h / c_b * idle_w), h / c_r * np.asarray(th.absorbed_w)[step]])
    # Emission rows: R[j] - slope_j Tr[j] <= intercept_j, the chord of σεA T⁴ over [lo_j, hi_j]
    f_lo, f_hi = sigma_e_a * lo[:-1] ** 4, sigma_e_a * hi[:-1] ** 4
    span = np.maximum(hi[:-1] - lo[:-1], 1e-9)
    slope = (f_hi - f_lo) / span
    ub_new = sp.coo_array((np.concatenate([np.ones(ns), -slope]), (np.concatenate([j, j]),
                                                                   np.concatenate([col_r + j, col_tr + j]))),
                          shape=(ns, base + n_new)).tocsr()
    a_ub = sp.vstack([sp.hstack([lp.a_ub, sp.csr_array((lp.a_ub.shape[0], n_new))]), ub_new]).tocsr()
    b_ub = np.concatenate([lp.b_ub, f_lo - slope * (lo[:-1] - KELVIN_OFFSET)])
    bounds = np.vstack([lp.bounds, np.empty((n_new, 2))])
    tb = bounds[col_tb: col_tb + ns + 1]
    tb[:, 1] = np.inf
    tb[:, 0] = -KELVIN_OFFSET
    tb[::sub, 1] = limit_k - KELVIN_OFFSET  # each step's end: what the trace records, and the agent reads
    tb[0] = th.board_start_c
    # The radiator within its bounds, a millikelvin of room: HiGHS meets each row to 1e-7, and the bounds are
    # one where the two runs have not yet parted (the first sub-steps)
    bounds[col_tr: col_tr + ns + 1] = np.column_stack([lo - KELVIN_OFFSET - 1e-3, hi - KELVIN_OFFSET + 1e-3])
    bounds[col_tr] = th.radiator_start_c
    bounds[col_r: col_r + ns] = (-np.inf, np.inf)
    c = np.concatenate([lp.c, np.zeros(n_new)])
    return c, a_ub, b_ub, a_eq, b_eq, bounds


def solve_oracle(
    solar_power_w: ArrayLike,
    dt_s: float,
    platform_load_w: float | ArrayLike,
    battery: BatterySpec,
    modes: Sequence[ComputeMode],
    max_board_power_w: ArrayLike | None = None,
    final_soc_min_pct: float | None = None,
    thermal: ThermalBound | None = None,
) -> OracleResult:
    """The most work any schedule of ``modes`` can do over the profile within the limits.

    ``solar_power_w[k]``, ``platform_load_w`` (scalar or per step) and
    ``max_board_power_w[k]`` (the thermal limit's linearisation: the most the board may
    dissipate in step k; ``None``: no thermal limit) hold over step k, of ``dt_s`` seconds.
    Pass what the simulator integrated: for ``hil.loop``, rows 0…N−1 of the trace.
    ``final_soc_min_pct``: the battery ends at least this full (default: as full as it
    started; see the module docstring for why, and for when to pass the agent's final charge).
    ``thermal``: the harness's two-node model as the limit instead of (or with) a cap per step
    (:class:`ThermalBound`, module docstring point 4; about 3N more variables and rows a
    sub-step, a day at 10 s steps in a few seconds).

    Raises :class:`OracleInfeasible` when no schedule keeps the limits (diagnosed from the
    idle schedule, with the step and charge where it fails) and :class:`OracleError` when
    HiGHS does not reach the optimum.

    Size: N·(M + 4) + 1 variables and 3N rows (4N with a thermal cap). One day at 10 s
    steps with 5 modes is 77 761 variables and 34 560 rows; HiGHS solves it in about 0.6 s
    (at 60 s steps: 12 961 and 5 760, 0.05 s; tests/test_hil_oracle.py prints the times).
    :func:`coarsen` gives a cheaper answer that is never lower (module docstring, point 5).
    """
    if not modes:
        raise ValueError("modes: need at least one power mode")
    names = [md.name for md in modes]
    if len(set(names)) != len(names):
        raise ValueError(f"modes: duplicate names in {names}")
    solar, platform = _profile(solar_power_w, dt_s, platform_load_w)
    n, m = solar.size, len(modes)
    cap = None if max_board_power_w is None else _per_step("max_board_power_w", max_board_power_w, n)
    full = battery.capacity_wh
    final_pct = battery.initial_soc_pct if final_soc_min_pct is None else float(final_soc_min_pct)
    if not 0.0 <= final_pct <= 100.0:
        raise ValueError(f"final_soc_min_pct: must be within [0, 100] %, got {final_pct}")
    final_wh = final_pct / 100.0 * full
    idle = min(modes, key=lambda md: md.idle_power_w)
    _check_feasible(solar, platform, dt_s, battery, idle, cap, final_wh)

    lp = _build_lp(solar, platform, dt_s, battery, modes, cap, final_wh)
    arrays = (lp.c, lp.a_ub, lp.b_ub, lp.a_eq, lp.b_eq, lp.bounds)
    if thermal is not None:
        arrays = _with_thermal(lp, thermal, dt_s, modes)
    cost, a_ub, b_ub, a_eq, b_eq, bounds = arrays
    t0 = time.perf_counter()
    # With the thermal rows, HiGHS's simplex stalls on some days (status 4, numerical difficulties: seen in
    # bench.hil, an AGX Orin starting cold) where its interior point method, with its crossover to a vertex, solves
    # them; on others the interior point method stalls and the dual simplex solves (an AGX Orin with a radiator
    # sized for it, seed 2030): each is tried in turn where the one before had numerical trouble.
    methods = ("highs",) if thermal is None else ("highs-ipm", "highs-ds")
    tried: list[str] = []
    for method in methods:
        res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method=method)
        tried.append(f"{method}: status {res.status} after {time.perf_counter() - t0:.1f} s")
        if res.status != NUMERICAL_TROUBLE:
            break
    solve_s = time.perf_counter() - t0
    n_rows = a_eq.shape[0] + (a_ub.shape[0] if a_ub is not None else 0)
    if res.status != 0:
        raise OracleError(
            f"HiGHS status {res.status} on {cost.size} variables, {n_rows} rows ({'; '.join(tried)}): "
            f"{res.message}; try a coarser step (coarsen) or check the inputs for extreme values")

    v = res.x
    x = np.clip(v[: n * m].reshape(n, m), 0.0, 1.0)
    raw_c = np.maximum(v[lp.col_c: lp.col_c + n], 0.0)
    raw_d = np.maximum(v[lp.col_d: lp.col_d + n], 0.0)
    lp_energy = v[lp.col_e: lp.col_e + n + 1]
    idle_w = idle.idle_power_w
    board = idle_w + x @ np.array([md.loaded_power_w - idle_w for md in modes])
    thr = np.array([md.throughput_per_s for md in modes])
    work = float(np.sum(x @ thr) * dt_s)
    eta_c, eta_d, h = battery.charge_efficiency, battery.discharge_efficiency, dt_s / 3600.0
    cycled_wh = float(np.sum(np.minimum(raw_c, raw_d) * (1.0 - eta_c * eta_d) / eta_d) * h)

    # The schedule as the battery model flies it (module docstring, point 2).
    net = solar - platform - board
    energy = simulate_energy_wh(net, dt_s, battery)
    # Invariant (point 2): the model's battery is never emptier than the LP's. The slack is
    # HiGHS's primal feasibility tolerance (1e-7 per row) accumulated over the N battery rows.
    assert np.all(energy >= lp_energy - (_TOL_WH + 1e-7 * n)), "battery model below the LP: solver tolerance?"
    charge = np.where(net >= 0, np.diff(energy) / (h * eta_c), 0.0)
    discharge = np.where(net < 0, -net, 0.0)
    spill = np.where(net >= 0, np.maximum(net - charge, 0.0), 0.0)

    return OracleResult(
        work=work,
        soc_pct=100.0 * energy / full,
        mode_fractions=x,
        board_power_w=board,
        status="optimal",
        solve_s=solve_s,
        charge_w=charge,
        discharge_w=discharge,
        spill_w=spill,
        lp_soc_pct=100.0 * lp_energy / full,
        mode_names=tuple(names),
        dt_s=float(dt_s),
        cycled_wh=cycled_wh,
        n_variables=int(cost.size),
        n_constraints=int(n_rows),
    )


def work_done(mode_per_step: Sequence[str | int], loaded_per_step: ArrayLike,
              modes: Sequence[ComputeMode], dt_s: float) -> float:
    """The work of a recorded run, in the oracle's units: Σ throughput(mode_k)·loaded_k·dt_s.

    ``mode_per_step``: mode names or indices into ``modes``; ``loaded_per_step``: the share of
    each step spent loaded (the HIL trace's ``duty``). A name that is not a mode (the loop's
    ``"OFF"`` while the agent is down) counts nothing, provided nothing ran then. For a
    ``hil.loop`` trace pass rows 0…N−1: the last row is recorded but not integrated.

    >>> modes = [ComputeMode("10W", 5.0, 10.5, 800.0), ComputeMode("MAXN", 6.0, 30.0, 2000.0)]
    >>> work_done(["10W", "MAXN", "OFF"], [1.0, 0.5, 0.0], modes, 10.0)
    18000.0
    """
    loaded = np.asarray(loaded_per_step, dtype=float)
    labels = list(mode_per_step)
    if loaded.shape != (len(labels),):
        raise ValueError(f"loaded_per_step: need one value per step ({len(labels)}), got shape {loaded.shape}")
    outside = ~((loaded >= 0) & (loaded <= 1))  # NaN too: it compares false both ways (it passed, and summed to NaN)
    if np.any(outside):
        k = int(np.argmax(outside))
        raise ValueError(f"loaded_per_step[{k}] = {loaded[k]}: a share of the step, must be within [0, 1]")
    index = {md.name: i for i, md in enumerate(modes)}
    thr = np.array([md.throughput_per_s for md in modes])
    per_step = np.zeros(len(labels))
    for k, label in enumerate(labels):
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):  # found in audit: -1 (power_cases'
            i = int(label) if 0 <= label < len(modes) else None  # "no mode") was credited the top mode's work
        else:
            i = index.get(label)
        if i is None:
            if loaded[k] > 0:
                raise ValueError(f"step {k}: mode {label!r} is not one of {list(index)} (or an index 0 to "
                                 f"{len(modes) - 1}) but was loaded {loaded[k]}")
            continue
        per_step[k] = thr[i] * loaded[k]
    return float(per_step.sum() * dt_s)


def naive_always_on(
    solar_power_w: ArrayLike,
    dt_s: float,
    platform_load_w: float | ArrayLike,
    battery: BatterySpec,
    modes: Sequence[ComputeMode],
    mode: str | None = None,
) -> NaiveResult:
    """A board that runs ``mode`` (default: the last of ``modes``, the top one, as the HIL's
    naive agent does) loaded all the time, whatever the battery says; same battery model."""
    solar, platform = _profile(solar_power_w, dt_s, platform_load_w)
    if not modes:
        raise ValueError("modes: need at least one power mode")
    chosen = modes[-1] if mode is None else next((md for md in modes if md.name == mode), None)
    if chosen is None:
        raise ValueError(f"mode {mode!r} is not one of {[md.name for md in modes]}")
    board = np.full(solar.size, chosen.loaded_power_w)
    energy = simulate_energy_wh(solar - platform - board, dt_s, battery)
    soc = 100.0 * energy / battery.capacity_wh
    floor_wh = battery.floor_pct / 100.0 * battery.capacity_wh
    return NaiveResult(
        work=float(chosen.throughput_per_s * dt_s * solar.size),
        soc_pct=soc,
        board_power_w=board,
        floor_violations=np.flatnonzero(energy < floor_wh - _TOL_WH),
        empty_steps=np.flatnonzero(energy <= 0.0),
        min_soc_pct=float(soc.min()),
    )
