"""Generated one-day power cases and a fast closed loop that flies the agent's energy policy
through them, for ``bench.power`` (and its tests): the truth on one side, the agent's belief
with realistic errors on the other, the offline optimum as the yardstick.

A case is drawn from a seed: an orbit (400–800 km; sun-synchronous at several local times, or
inclined), an array (sun-tracking, or body-fixed panels under a nadir, sun or inertial
attitude), one of the three boards, a battery of 20–120 Wh, a platform load with steps the
agent is not told of, a starting charge, and the agent's errors: its cells' efficiency off by
up to ±15 %, the degradation unknown (it believes none), and its instruments: a fuel gauge that
reads whole percent (half the cases) or tenths and reports the capacity it has learnt within
3 % of a battery faded to 80-100 % of the nameplate the agent is configured with, its cells'
charge and discharge efficiencies (the truth's, drawn; the agent assumes 0.95 each way, as
flight.power.lp does), and solar power read with 1 % noise (each drawn on a stream of its own, so
a case's orbit, arrays and loads are those its seed always drew).

The loop, every ``STEP_S`` (60 s, the agent's forecast step) over a day:

- *truth*: the arrays' output from ``hil.physics.solar`` (the harness's model, with the true
  parameters) and the true platform load;
- *agent*: the policy under test, given what the agent would know: the charge as its gauge
  reads it and the solar power as its EPS measures it (what the arrays deliver: only the loads' with the
  battery full, and the agent leaves those readings out of its calibration), its own array model
  (``flight.power.array`` with its believed parameters) calibrated online from the measured power, the
  configured platform load, learnt on from the gauge as the agent learns it (``flight.power.load``); the baseline is
  today's rule on the orbit's eclipses (``flight.power.policy.decide`` without a forecast),
  the planner the receding-horizon plan (``flight.power.planner``) with the rule as its
  fall-back, both as ``flight.agent.control_core`` runs them;
- the battery integrates the truth with the agent's board power (the mode's loaded power
  when it computes, the lowest mode's idle power otherwise), at the truth's efficiencies; a step
  in which it empties credits only the work of the part it lasted.

What it leaves out (the lockstep HIL flies those): temperature (no thermal limit), the
control period's 1 s, mode-switch costs, the worker's own timing. The figure is the work
(Σ throughput · time) over the optimum's, the optimum given the truth (``hil/oracle.py``)
and asked to end at least as full as the agent ended, or (the "start" rule) only as full as
the agent started where it ended fuller (:func:`optimum`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from flight.hal.boards import load_board
from flight.link.definitions import PARAMETERS
from flight.orbit import Orbit, predict_summary
from flight.orbit.elements import sun_synchronous_inc_deg
from flight.orbit.saa import ESTIMATE
from flight.orbit.shadow import shadow_factor
from flight.orbit.sun import raan_deg_for_ltan, sun_position_teme_km
from flight.power.array import ArrayModel, Panel, SolarCalibration, forecast_solar
from flight.power.load import FULL_PCT, GaugeLoadLearner
from flight.power.planner import make_plan
from flight.power.policy import Battery, ModePower, PowerInputs, PowerSettings, decide
from hil.oracle import BatterySpec, ComputeMode, OracleInfeasible, solve_oracle
from hil.physics.battery import delivered_solar_w, gauge_pct
from hil.physics.solar import array_power_w

STEP_S = 60.0
TICKS_PER_STEP = 60  # the agent's 1-s control period: what its load learner sees of the gauge
PLAN_STEP_S = 120.0  # the agent's forecast and plan step (flight.agent.control.FORECAST_STEP_S)
DAY_S = 86400.0
T0_S = 1_794_830_400.0  # 2026-11-16T12:00:00Z
BOARDS = ("orin_nano", "orin_nx_16gb", "agx_orin_64gb")
_DEFAULTS = {p.name: p.default for p in PARAMETERS}  # the agent flies its dictionary's defaults
FLOOR_PCT, MARGIN_PCT = _DEFAULTS["battery_floor_pct"], _DEFAULTS["battery_margin_pct"]
LOAD_MARGIN_PCT = _DEFAULTS["load_margin_pct"]


@dataclass(frozen=True)
class PowerCase:
    seed: int
    alt_km: float
    inc_deg: float
    raan_deg: float
    ltan_h: float | None  # sun-synchronous local time of the ascending node, None if inclined
    pointing: str
    attitude: str
    normals: tuple[tuple[float, float, float], ...]
    area_m2: float
    efficiency: float  # truth
    degradation_per_year: float  # truth
    years: float
    belief_efficiency: float  # what the agent's configuration says
    board: str
    capacity_wh: float
    platform_w: float  # nominal: what the agent is configured with
    load_steps: tuple[tuple[float, float], ...]  # (from s, extra W) the agent is not told of
    soc0_pct: float
    soc_step_pct: float = 1.0  # the agent's fuel gauge's resolution (0: exact)
    power_noise_pct: float = 1.0  # the solar power's measurement noise, one standard deviation
    nameplate_wh: float | None = None  # what the agent is configured with (None: capacity_wh, a new battery)
    gauge_capacity_wh: float | None = None  # the capacity the gauge has learnt and reports (None: none)
    # The board's radiator (the HIL's [thermal]; bench.power flies no heat): None, the harness's default.
    radiator_area_m2: float | None = None
    board_to_radiator_w_per_k: float | None = None
    radiator_heat_capacity_j_per_k: float | None = None
    # The cells' efficiencies, the truth's (:func:`cells`); the agent assumes flight.power.policy.Battery's.
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95


def generate_case(seed: int) -> PowerCase:
    rng = np.random.default_rng(seed)
    alt = float(rng.uniform(400.0, 800.0))
    if rng.random() < 0.6:
        ltan = float(rng.choice([6.5, 9.0, 10.5, 12.0, 13.5, 15.0, 18.0]))
        inc, raan = sun_synchronous_inc_deg(alt), raan_deg_for_ltan(ltan, T0_S)
    else:
        ltan, inc, raan = None, float(rng.choice([28.5, 45.0, 51.6, 65.0])), float(rng.uniform(0.0, 360.0))
    pointing = "sun_tracking" if rng.random() < 0.4 else "body_fixed"
    attitude = "nadir" if pointing == "sun_tracking" else str(rng.choice(["nadir", "nadir", "sun", "inertial"]))
    if pointing == "body_fixed" and attitude == "nadir":
        normals = ((1.0, 0.0, 0.0),) if rng.random() < 0.5 else ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, -1.0))
    elif attitude == "inertial":
        d = rng.normal(size=3)
        normals = (tuple(float(x) for x in d / np.linalg.norm(d)),)
    else:
        normals = ((1.0, 0.0, 0.0),)
    board = str(rng.choice(BOARDS))
    top_w = max(m.loaded_power_w for m in load_board(board).modes)
    platform = float(rng.uniform(4.0, 15.0))
    area = float((platform + top_w) * rng.uniform(0.7, 1.6) / (1361.0 * 0.28) / len(normals) * 1.6)
    steps = tuple((float(rng.uniform(0, DAY_S)), float(rng.uniform(1.0, 4.0))) for _ in range(int(rng.integers(0, 3))))
    efficiency = float(rng.uniform(0.26, 0.30))
    case = PowerCase(
        seed=seed, alt_km=alt, inc_deg=inc, raan_deg=raan, ltan_h=ltan, pointing=pointing, attitude=attitude,
        normals=normals, area_m2=area, efficiency=efficiency, degradation_per_year=float(rng.uniform(0.0, 0.03)),
        years=float(rng.uniform(0.0, 4.0)), belief_efficiency=efficiency * float(rng.uniform(0.85, 1.15)),
        board=board, capacity_wh=float(rng.uniform(20.0, 120.0)), platform_w=platform, load_steps=steps,
        soc0_pct=float(rng.uniform(45.0, 95.0)))
    return replace(case, **instruments(seed, case.capacity_wh), **radiator(seed, board), **cells(seed))


CHARGE_EFFICIENCY = (0.90, 0.97)  # the truth's, drawn (estimate: Li-ion at low rates, round trip about 84-95 %)
DISCHARGE_EFFICIENCY = (0.92, 0.98)


def cells(seed: int) -> dict[str, float]:
    """The cells' true charge and discharge efficiencies, drawn on a stream of their own (found in audit: the
    truth's battery integrated at the agent's own 0.95 each way, so the agent's battery model was the answer)."""
    rng = np.random.default_rng([seed, 3])
    return {"charge_efficiency": float(rng.uniform(*CHARGE_EFFICIENCY)),
            "discharge_efficiency": float(rng.uniform(*DISCHARGE_EFFICIENCY))}


RADIATOR_SIZED_C = 80.0  # the board temperature a case's radiator is sized to hold, in sunlight, at its sized power
RADIATOR_SIZED_FRACTION = (0.6, 1.1)  # of the board's top mode: a radiator for less heats the top modes past it


def radiator(seed: int, board: str) -> dict[str, float]:
    """The case's radiator as a designer sizes it for the board (found in audit: the HIL flew every board with
    one radiator, sized for 15 W, so an AGX Orin spent its days held to its lowest modes by heat): for a
    fraction of the top mode's loaded power, held at :data:`RADIATOR_SIZED_C` in full sunlight (a fraction
    below 1: the top modes run only while the board is cool or in shadow). Drawn on a stream of its own."""
    from hil.physics.thermal import ThermalParams

    top_w = max(m.loaded_power_w for m in load_board(board).modes)
    fraction = float(np.random.default_rng([seed, 2]).uniform(*RADIATOR_SIZED_FRACTION))
    sized = ThermalParams().sized_for(top_w * fraction, RADIATOR_SIZED_C, shadow_factor=1.0)
    return {"radiator_area_m2": sized.radiator_area_m2, "board_to_radiator_w_per_k": sized.board_to_radiator_w_per_k,
            "radiator_heat_capacity_j_per_k": sized.radiator_heat_capacity_j_per_k}


def instruments(seed: int, capacity_wh: float) -> dict[str, float]:
    """The case's battery as the agent knows it, drawn on a stream of its own (a case's orbit, arrays and loads
    are those its seed always drew): a gauge of whole percent or tenths; a battery faded to 80-100 % of the
    nameplate the agent is configured with, whose gauge reports the capacity it has learnt within 3 %."""
    rng = np.random.default_rng([seed, 1])
    step = float(rng.choice([1.0, 0.1]))
    fade, error = float(rng.uniform(0.8, 1.0)), float(rng.uniform(-0.03, 0.03))
    return {"soc_step_pct": step, "nameplate_wh": capacity_wh / fade, "gauge_capacity_wh": capacity_wh * (1.0 + error)}


def _orbit(case: PowerCase) -> Orbit:
    return Orbit.from_elements(alt_km=case.alt_km, inc_deg=case.inc_deg, raan_deg=case.raan_deg, epoch_unix_s=T0_S)


def truth_solar_w(case: PowerCase, orbit: Orbit, times: np.ndarray) -> np.ndarray:
    """The harness's model with the true parameters (``hil.physics.solar.array_power_w``: its own
    geometry, not the agent's; each panel its own incidence, clipped at its own 0)."""
    r, v = orbit.propagate(times)
    sun_km = sun_position_teme_km(times)
    shadow = shadow_factor(r, sun_km, "conical")
    return array_power_w(shadow, sun_km - r, r, v, [(n, case.area_m2) for n in case.normals], case.efficiency,
                         case.degradation_per_year, case.years, case.pointing, case.attitude)


def platform_w(case: PowerCase, t_s: np.ndarray) -> np.ndarray:
    load = np.full(t_s.shape, case.platform_w)
    for start, extra in case.load_steps:
        load = load + np.where(t_s >= start, extra, 0.0)
    return load


def modes_of(case: PowerCase) -> tuple[ModePower, ...]:
    return tuple(ModePower(m.name, m.idle_power_w, m.loaded_power_w, m.inference_rel_maxn)
                 for m in load_board(case.board).modes)


@dataclass(frozen=True)
class Flight:
    work: float
    floor_violation_steps: int
    min_soc_pct: float
    final_soc_pct: float
    plan_ms: tuple[float, ...]


def believed_capacity_wh(case: PowerCase) -> float:
    """The capacity the agent plans with: its gauge's where it reports one, else its configuration's nameplate
    (as flight.agent.control takes it)."""
    return case.gauge_capacity_wh or case.nameplate_wh or case.capacity_wh


def battery_step(case: PowerCase, stored_wh: float, net_w: float) -> tuple[float, float]:
    """The truth's battery over one step of ``net_w`` on the bus: (the charge after it, the part of the step it
    lasted). At the truth's efficiencies (the case's cells, not the agent's belief); full holds at the capacity and
    empty at 0 (an audit: -652 %, and the day after recovered from a negative charge), and a step in which it
    empties lasted only until then (found in audit: the whole step's work was credited)."""
    gain = case.charge_efficiency if net_w > 0 else 1.0 / case.discharge_efficiency
    change_wh = net_w * gain * STEP_S / 3600.0
    lasted = 1.0 if stored_wh + change_wh >= 0.0 else stored_wh / -change_wh
    return max(0.0, min(case.capacity_wh, stored_wh + change_wh)), lasted


def fly(case: PowerCase, policy: str) -> Flight:
    """One day of ``policy`` ('plan' or 'baseline') through the case."""
    orbit = _orbit(case)
    n = int(DAY_S / STEP_S)
    times = T0_S + np.arange(n) * STEP_S
    solar = truth_solar_w(case, orbit, times)
    load = platform_w(case, times - T0_S)
    modes = modes_of(case)
    battery = Battery(believed_capacity_wh(case))  # the agent's: the truth's capacity_wh is the physics'
    settings = PowerSettings(FLOOR_PCT, MARGIN_PCT)
    belief = ArrayModel(tuple(Panel(nm, case.area_m2) for nm in case.normals), case.belief_efficiency, case.pointing,
                        case.attitude)
    raw = None
    plan = None
    cal = SolarCalibration()
    learner = GaugeLoadLearner(case.platform_w, battery.capacity_wh, battery.charge_efficiency,
                               battery.discharge_efficiency)
    # Its own stream (found in audit: drawn on the radiator's, [seed, 2])
    noise = np.random.default_rng([case.seed, 4]).normal(0.0, case.power_noise_pct / 100.0, n)
    e = case.soc0_pct / 100.0 * case.capacity_wh
    work, below, low, plan_ms = 0.0, 0, 100.0, []
    board_w = modes[0].idle_w  # the board's draw over the step before (the first: idle)
    for k in range(n):
        now = float(times[k])
        soc = gauge_pct(100.0 * e / case.capacity_wh, case.soc_step_pct)  # what the agent reads
        # The solar power the EPS measures is what it delivers: with the battery full the charger backs off and
        # it reads the loads, not what the arrays could give (hil.physics.delivered_solar_w, as the lockstep HIL
        # feeds the agent); the loads are this step's platform and the board as it last ran.
        room_w = (case.capacity_wh - e) / case.charge_efficiency * 3600.0 / STEP_S
        measured_w = max(0.0, delivered_solar_w(float(solar[k]), float(load[k]) + board_w, room_w) * (1.0 + noise[k]))
        if policy == "plan":
            platform_belief = learner.load_w
            if raw is None or k % 10 == 0:  # a fresh forecast every 10 min (the agent: every minute; the same)
                raw = forecast_solar(orbit, belief, now, 1.5 * orbit.period_s, PLAN_STEP_S)
            ahead, (raw_now, at_edge) = raw.from_now(now), raw.at(now)
            if not at_edge and soc < FULL_PCT:  # as the agent does (flight.agent.control): a full battery's
                cal = cal.update(raw_now, measured_w, belief.peak_w)  # reading is the loads'
            forecast = [w * cal.scale for w in ahead]
            # As the control core does: keep the plan through its first step unless the charge strays.
            stale = plan is None or plan.step_at(now) != 0 or abs(plan.soc_pct[0] - soc) > 2.0 + (
                abs(plan.soc_pct[1] - plan.soc_pct[0]))
            if stale:
                t0 = time.perf_counter()
                plan = make_plan(now, soc, forecast, PLAN_STEP_S, platform_belief, battery, modes,
                                 FLOOR_PCT + MARGIN_PCT, len(modes) - 1, orbit_period_s=orbit.period_s,
                                 margin_w=2.0 * cal.error_w,
                                 load_margin_w=LOAD_MARGIN_PCT / 100.0 * platform_belief, time_limit_s=None)
                if plan is not None:
                    plan_ms.append((time.perf_counter() - t0) * 1000.0)
            if plan is not None:
                index = plan.mode_at(now + STEP_S / 2.0)  # the agent's 1-s ticks, at this step's middle
            else:
                inputs = PowerInputs(soc, measured_w, platform_belief, None, None, None, None,
                                     solar_forecast_w=tuple(forecast), forecast_step_s=PLAN_STEP_S,
                                     forecast_margin_w=2.0 * cal.error_w)
                d = decide(inputs, modes, battery, settings)
                index = d.mode_index if d.admission.value != "NONE" else -1
        else:
            pred = predict_summary(orbit, now, 1.5 * orbit.period_s, saa_drift=ESTIMATE)  # eclipse fields only

            def finite(x: float) -> float | None:
                return None if math.isnan(x) else x

            inputs = PowerInputs(soc, measured_w, case.platform_w, pred.in_eclipse, finite(pred.to_eclipse_entry_s),
                                 finite(pred.eclipse_duration_s), finite(pred.to_eclipse_exit_s) if pred.in_eclipse else None)
            if not pred.in_eclipse and inputs.time_to_eclipse_s is None:
                inputs = PowerInputs(soc, measured_w, case.platform_w, False, 1.5 * orbit.period_s, 0.0, None)
            d = decide(inputs, modes, battery, settings)
            index = d.mode_index if d.admission.value != "NONE" else -1
        board_w = modes[index].loaded_w if index >= 0 else modes[0].idle_w
        e0, (e, lasted) = e, battery_step(case, e, float(solar[k] - load[k] - board_w))
        work += (modes[index].throughput_rel if index >= 0 else 0.0) * STEP_S * lasted
        if policy == "plan":  # the agent reads its gauge each second (its control period) through the step
            for j in range(TICKS_PER_STEP):
                at = j / TICKS_PER_STEP
                learner.tick(now + at * STEP_S, gauge_pct(100.0 * (e0 + (e - e0) * at) / case.capacity_wh,
                                                          case.soc_step_pct), measured_w, board_w)
        true_soc = 100.0 * e / case.capacity_wh
        below += true_soc < FLOOR_PCT - 1e-9
        low = min(low, true_soc)
    return Flight(work, below, low, 100.0 * e / case.capacity_wh, tuple(plan_ms))


def optimum(case: PowerCase, final_soc_pct: float, rule: str = "same_energy") -> float | None:
    """The most work any schedule could do given the truth; None when no schedule keeps the
    floor (the case is left out: idling keeps the battery fullest at every step, so it is
    feasible whenever anything is, and ends at least as full as the agent).

    ``rule`` says where the optimum must end:
    - ``same_energy``: at least as full as the agent ended. Both then spend the same energy,
      and a Wh the agent banked for tomorrow counts as the optimum's work would have;
    - ``start``: at least as full as the agent ended, or as it started if the agent ended
      fuller: energy the agent banked beyond its start counts as work it did not do (a
      day's view: the reserve it built is not credited)."""
    if rule not in ("same_energy", "start"):
        raise ValueError(f"rule: {rule!r} is not same_energy or start")
    orbit = _orbit(case)
    n = int(DAY_S / STEP_S)
    times = T0_S + np.arange(n) * STEP_S
    modes = modes_of(case)
    solar, load = truth_solar_w(case, orbit, times), platform_w(case, times - T0_S)
    spec = BatterySpec(case.capacity_wh, max(case.soc0_pct, FLOOR_PCT), FLOOR_PCT, case.charge_efficiency,
                       case.discharge_efficiency)
    lp_modes = [ComputeMode(m.name, m.idle_w, m.loaded_w, m.throughput_rel) for m in modes]
    final = final_soc_pct if rule == "same_energy" else min(final_soc_pct, case.soc0_pct)
    try:
        return solve_oracle(solar, STEP_S, load, spec, lp_modes, final_soc_min_pct=min(100.0, max(FLOOR_PCT, final))).work
    except OracleInfeasible:
        return None


def run_case(seed: int) -> dict:
    """Everything ``bench.power`` needs of one case (a plain dict: it crosses process pools)."""
    case = generate_case(seed)
    t0 = time.perf_counter()
    planned = fly(case, "plan")
    baseline = fly(case, "baseline")
    best_plan = optimum(case, planned.final_soc_pct)
    best_base = optimum(case, baseline.final_soc_pct)
    start_plan = optimum(case, planned.final_soc_pct, "start")
    start_base = optimum(case, baseline.final_soc_pct, "start")
    an_hour = 3600.0 * min(m.throughput_rel for m in modes_of(case))
    return {
        "case": asdict(case),
        "feasible": best_plan is not None and best_base is not None,
        # An optimum works less than an hour of the lowest mode: a day whose only work lies inside the
        # agent's margin above the floor, too little to judge a policy by; any of the four a ratio is over
        # (a review: the baseline's, ending the day nearly full, could be tiny and its ratios meaningless)
        "little_work": any(best is not None and best < an_hour for best in (best_plan, best_base, start_plan,
                                                                             start_base)),
        "work_vs_oracle": planned.work / best_plan if best_plan else None,
        "floor_violation_steps": planned.floor_violation_steps,
        "min_soc_pct": planned.min_soc_pct,
        "plan_ms": list(planned.plan_ms),
        "work_vs_oracle_start": planned.work / start_plan if start_plan else None,
        "final_soc_pct": planned.final_soc_pct,
        "baseline_work_vs_oracle": baseline.work / best_base if best_base else None,
        "baseline_work_vs_oracle_start": baseline.work / start_base if start_base else None,
        "baseline_floor_violation_steps": baseline.floor_violation_steps,
        "baseline_min_soc_pct": baseline.min_soc_pct,
        "wall_s": time.perf_counter() - t0,
    }
