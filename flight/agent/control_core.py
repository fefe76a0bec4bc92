"""The control tick as a pure function: readings and state in, decisions and events out.

:func:`control_step` takes everything one tick looks at (:class:`ControlInputs`: the board's
readings, the battery, the orbit prediction, the mode, the parameters, the fault count) and
what the previous tick left (:class:`ControlState`), and returns what to do
(:class:`ControlOutput`): the events and SAFE transitions in the order they happen, the power
mode to run, the compute admission and why. No I/O, no clock, no agent: the controller
(flight/agent/control.py) reads the hardware, calls this, and applies the result; tests call
it directly.

Order of the decisions (each a pure function of its own):

1. repeated faults → SAFE;
2. sensors that went missing, or came back and stayed (:func:`report_sensors`);
3. thermal governor on the hottest zone (flight/thermal/governor.py); the hard limit → SAFE;
4. battery below ``battery_safe_pct`` → SAFE;
5. no valid command for ``contact_timeout_s`` → SAFE;
6. power policy (flight/power/policy.py): the most productive mode whose plan keeps the floor,
   one level lower for each thermal step; in SAFE and IDLE the lowest mode and no compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Union

from flight.hal.base import EpsReading, HalReading
from flight.agent.modes import BATTERY_CAUSE, CONTACT_CAUSE, REPEATED_FAULTS
from flight.link.definitions import Admission, EpsSource, Mode
from flight.orbit import OrbitPrediction
from flight.power.planner import DEFAULT_TIME_LIMIT_S, Plan, make_plan
from flight.power.policy import Battery, ModePower, PowerDecision, PowerInputs, PowerSettings, decide
from flight.thermal.governor import Action, GovernorState, ThermalDecision, ThermalLimits, govern
from flight.thermal.model import ThermalPlanInputs

PREDICTION_HORIZON_S = 24 * 3600.0  # SAA passes can be 10 h apart; 24 h costs ~4 ms on a PC


@dataclass(frozen=True)
class Emit:
    """Emit this dictionary event."""

    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class EnterSafe:
    """Fall back to SAFE now, for this reason (after the events before it)."""

    reason: str


@dataclass(frozen=True)
class SensorDown:
    """A sensor reported missing (SENSOR_MISSING said), until it has read again for ``sensor_restore_s``."""

    key: str  # the sensor: the text before the first ": " of the hardware layer's note
    what: str  # the note as first said, repeated by SENSOR_RESTORED so the ground can pair the two
    good_since_s: float | None = None  # monotonic time it last read again; None while missing
    dropouts: int = 0  # times it went missing again after reading again, before it held


def sensor_key(what: str) -> str:
    """The sensor a hardware layer's note names: its notes say ``"<sensor>: <why>"``, and the why
    may carry the bad value or an errno that changes from one read to the next."""
    return what.split(": ", 1)[0]


def report_sensors(missing: tuple[str, ...], down: tuple[SensorDown, ...], mono_s: float,
                   restore_s: float) -> tuple[tuple[SensorDown, ...], list[Emit]]:
    """SENSOR_MISSING once when a sensor goes; SENSOR_RESTORED once it has read again for ``restore_s``.

    Why the wait: a sensor that flaps (an I2C read failing one tick in two on a hot board, a value
    crossing its bound and back) said both events at every tick, each change of its why too (an
    audit: a simulated zone whose bad value changed each step gave two events a tick), and filled the
    packet store's event class for nothing. Readings are not delayed: the tick uses what it reads, and
    ``sensors_missing`` counts what is missing now. Sensors are followed by name, so a new reason is
    not a new event; the dropouts between are counted in SENSOR_RESTORED. ``restore_s`` 0: at once."""
    now: dict[str, str] = {}
    for what in missing:
        now.setdefault(sensor_key(what), what)
    known = {d.key: d for d in down}
    kept: list[SensorDown] = []
    events: list[Emit] = []
    for key, what in sorted(now.items()):
        d = known.get(key)
        if d is None:
            events.append(Emit("SENSOR_MISSING", {"what": what}))
            kept.append(SensorDown(key, what))
        elif d.good_since_s is not None:  # back, and gone again before it held
            kept.append(replace(d, good_since_s=None, dropouts=d.dropouts + 1))
        else:
            kept.append(d)
    for d in down:
        if d.key in now:
            continue
        since = mono_s if d.good_since_s is None else d.good_since_s
        if mono_s - since >= restore_s:
            events.append(Emit("SENSOR_RESTORED", {"what": d.what, "dropouts": d.dropouts}))
        else:
            kept.append(replace(d, good_since_s=since))
    return tuple(sorted(kept, key=lambda d: d.key)), events


@dataclass(frozen=True)
class ControlInputs:
    now_s: float  # UTC, to age the prediction
    mono_s: float  # the governor's time base
    mode: Mode
    reading: HalReading
    eps: EpsReading
    eps_source: EpsSource
    prediction: OrbitPrediction | None
    contact_age_s: float
    fault_count: int  # faults recorded within fault_window_s
    params: Mapping[str, Any]
    modes: tuple[ModePower, ...]  # lowest power first
    operator_cap: int  # index of the highest mode the operator allows
    battery: Battery
    platform_load_w: float
    rate_window_s: float = 30.0  # for the rate of rise
    solar_forecast_w: tuple[float, ...] | None = None  # the arrays' calibrated forecast from now
    forecast_step_s: float = 60.0
    solar_error_w: float = 0.0  # the forecast's observed RMS error: the plan's margin on it
    thermal: ThermalPlanInputs | None = None  # the learnt board model, once trusted: the plan's thermal limit
    orbit_period_s: float | None = None  # where the plan looks one orbit ahead (None: 2/3 of the forecast)
    # The planner's wall-clock limit; None in lockstep, where a result must not depend on how
    # busy the machine is (the same seed flies the same day).
    plan_time_limit_s: float | None = DEFAULT_TIME_LIMIT_S


@dataclass(frozen=True)
class ControlState:
    """What one tick leaves for the next."""

    governor: GovernorState = field(default_factory=GovernorState)
    sensors_down: tuple[SensorDown, ...] = ()  # reported missing, not yet said restored
    contact_lost: bool = False
    admission: Admission = Admission.NONE
    temp_rate_c_per_min: float | None = None
    plan: Plan | None = None  # the receding-horizon plan in force (with an array forecast)
    power_mode_index: int | None = None  # the power mode this tick chose (None before the first)
    # The power mode in force as the governor first stepped down: its steps are counted down from it (None: none)
    thermal_base: int | None = None


@dataclass(frozen=True)
class ControlOutput:
    state: ControlState
    actions: tuple[Union[Emit, EnterSafe], ...]  # in order: protections and their SAFE transitions
    mode: Mode  # the mode after this tick's protections
    clear_faults: bool  # the fault count sent the agent SAFE: start counting again
    thermal: ThermalDecision | None  # None with no temperature at all
    decision: PowerDecision  # what the energy plan allows
    power_mode: str  # what runs now (the plan's mode in COMPUTE, the lowest otherwise)
    power_mode_index: int
    admission: Admission
    reason: str  # why this power mode and admission
    after: tuple[Emit, ...]  # events to emit once the power mode is applied
    temp_max_c: float | None

    @property
    def safe_reasons(self) -> tuple[str, ...]:
        return tuple(a.reason for a in self.actions if isinstance(a, EnterSafe))


def control_step(inp: ControlInputs, state: ControlState) -> ControlOutput:
    p = inp.params
    actions: list[Union[Emit, EnterSafe]] = []
    mode = inp.mode

    def go_safe(reason: str) -> None:
        nonlocal mode
        if mode is not Mode.SAFE:
            actions.append(EnterSafe(reason))
            mode = Mode.SAFE

    # 1. Faults first: a tick that fails further down must still be able to go SAFE.
    clear_faults = False
    if inp.fault_count >= p["fault_limit"]:
        actions.append(Emit("FAULTS_REPEATED", {"count": inp.fault_count, "window_s": p["fault_window_s"]}))
        clear_faults = True
        if mode is Mode.SAFE:  # already SAFE: it now waits for a command, its return on its own cancelled (found in
            actions.append(EnterSafe(REPEATED_FAULTS))  # audit: faults while SAFE were never said nor cleared, it
        go_safe(REPEATED_FAULTS)  # recovered and fell back, and a SET_MODE out of SAFE said completed fell back too

    # 2. Sensors: each one reported once when it goes and once when it has come back for good.
    sensors_down, said = report_sensors(inp.reading.missing, state.sensors_down, inp.mono_s, p["sensor_restore_s"])
    actions += said

    # 3. Heat: the hard limit overrides everything.
    temps = inp.reading.temps_c
    temp_max = max(temps.values()) if temps else None
    governor, thermal, rate = state.governor, None, state.temp_rate_c_per_min
    if temp_max is not None:
        limits = ThermalLimits(p["thermal_soft_limit_c"], p["thermal_hard_limit_c"], p["thermal_hysteresis_c"],
                               p["thermal_min_dwell_s"], p["thermal_lookahead_s"], inp.rate_window_s)
        thermal, governor = govern(limits, len(inp.modes) - 1, governor, inp.mono_s, temp_max)
        rate = thermal.rate_c_per_min
        if thermal.action is Action.HARD_STOP or (temp_max >= limits.hard_c and mode is not Mode.SAFE):
            # Every tick at or above the limit, not only the latch's first: a board commanded out of SAFE while
            # latched (its zones missing meanwhile) ran COMPUTE at 99 °C (found in audit).
            reason = thermal.reason if thermal.action is Action.HARD_STOP else (
                f"{temp_max:.1f} °C at or above hard limit {limits.hard_c:.1f} °C")
            actions.append(Emit("THERMAL_HARD_LIMIT", {"reason": reason}))
            go_safe(f"hard thermal limit: {reason}")
        elif thermal.action is Action.HARD_CLEAR:
            actions.append(Emit("THERMAL_HARD_CLEAR", {"reason": thermal.reason}))

    # 4. Battery.
    soc = inp.eps.soc_pct
    if soc is not None and soc < p["battery_safe_pct"] and mode is not Mode.SAFE:
        actions.append(Emit("LOW_BATTERY", {"soc_pct": soc, "limit_pct": p["battery_safe_pct"]}))
        go_safe(f"{BATTERY_CAUSE}{soc:.1f} % below {p['battery_safe_pct']:.1f} %")

    # 5. Ground contact: reported once per loss.
    contact_lost = inp.contact_age_s > p["contact_timeout_s"]
    if contact_lost and not state.contact_lost and mode is not Mode.SAFE:
        actions.append(Emit("CONTACT_LOST", {"age_s": inp.contact_age_s, "timeout_s": p["contact_timeout_s"]}))
        go_safe(CONTACT_CAUSE)

    # 6. Power.
    base = None
    if governor.steps_down:
        base = state.thermal_base if state.thermal_base is not None else (
            state.power_mode_index if state.power_mode_index is not None else inp.operator_cap)
    decision, plan = plan_power(inp, governor.steps_down, temp_max, state.plan, base)
    if mode is Mode.COMPUTE:
        power_mode, index, admission, reason = decision.mode, decision.mode_index, decision.admission, decision.reason
    else:
        power_mode, index, admission = inp.modes[0].name, 0, Admission.NONE
        reason = (f"mode {mode.value}: lowest power mode, no compute"
                  + {Mode.SAFE: " (command SET_MODE mode=IDLE, then mode=COMPUTE)",
                     Mode.IDLE: " (command SET_MODE mode=COMPUTE)"}.get(mode, ""))
    after: tuple[Emit, ...] = ()
    if admission is not state.admission:
        after = (Emit("ADMISSION_CHANGED", {"old": state.admission.value, "new": admission.value, "reason": reason}),)
    new_state = replace(state, governor=governor, sensors_down=sensors_down, contact_lost=contact_lost,
                        admission=admission, plan=plan, temp_rate_c_per_min=rate, power_mode_index=index,
                        thermal_base=base)
    return ControlOutput(new_state, tuple(actions), mode, clear_faults, thermal, decision, power_mode, index,
                         admission, reason, after, temp_max)


def plan_power(inp: ControlInputs, thermal_steps: int, temp_max_c: float | None,
               plan: Plan | None = None, thermal_base: int | None = None) -> tuple[PowerDecision, Plan | None]:
    """The energy plan, under the operator's cap, one mode lower per thermal step; with an array
    forecast the receding-horizon plan (kept until its step ends or the charge strays from it),
    the simple rule otherwise and whenever no plan can be made. ``thermal_base``: the power mode in
    force as the governor first stepped down; the plan's steps are taken off it (found in audit:
    taken off the operator's cap, a step above the mode the plan ran lowered nothing)."""
    p = inp.params
    if inp.eps.soc_pct is None and inp.eps_source is EpsSource.BENCH:
        cap = max(0, inp.operator_cap - thermal_steps) if temp_max_c is not None else 0
        mode = inp.modes[cap]
        return PowerDecision(mode.name, cap, Admission.ALL, mode.loaded_w,
                             "bench supply (config): no battery to protect, only heat and the operator cap", 0.0), None
    if inp.eps.soc_pct is None and inp.eps_source is EpsSource.NONE:
        lowest = inp.modes[0]
        return PowerDecision(lowest.name, 0, Admission.NONE, lowest.idle_w,
                             "no battery reading (this board has no EPS): no compute; on a desk, start the agent "
                             "with --bench-supply", 0.0), None
    inputs = power_inputs(inp)
    settings = PowerSettings(p["battery_floor_pct"], p["battery_margin_pct"], p["training_reserve_pct"])
    # No temperature at all means no thermal protection: run the lowest mode until one reads.
    if temp_max_c is None:
        return decide(inputs, inp.modes, inp.battery, settings, 0), None
    cap = inp.operator_cap
    if inputs.solar_forecast_w is not None and inputs.soc_pct is not None:
        top = cap if not thermal_steps or thermal_base is None else min(cap, thermal_base)
        planned = _receding_horizon(inp, inputs, settings, max(0, top - thermal_steps), plan)
        if planned is not None:
            return planned
    # Each thermal step takes one level off the mode the energy plan would run: a step always
    # lowers the power actually drawn, whatever the modes above it.
    decision = decide(inputs, inp.modes, inp.battery, settings, cap)
    if thermal_steps:
        decision = decide(inputs, inp.modes, inp.battery, settings, max(0, decision.mode_index - thermal_steps))
    return decision, None


REPLAN_SOC_DRIFT_PCT = 2.0  # the charge strays this far from the plan's prediction: plan again


def _receding_horizon(inp: ControlInputs, inputs: PowerInputs, settings: PowerSettings, cap: int,
                      plan: Plan | None) -> tuple[PowerDecision, Plan] | None:
    soc = float(inputs.soc_pct)
    keep = settings.floor_pct + settings.margin_pct
    fresh = False
    if plan is not None and plan.cap_index == cap and plan.step_at(inp.now_s) == 0:
        frac = (inp.now_s - plan.start_unix_s) / plan.step_s
        expected = plan.soc_pct[0] + (plan.soc_pct[1] - plan.soc_pct[0]) * frac
        fresh = abs(expected - soc) <= REPLAN_SOC_DRIFT_PCT  # else the world surprised the plan
    if not fresh:
        plan = make_plan(inp.now_s, soc, inputs.solar_forecast_w, inputs.forecast_step_s, inputs.platform_load_w,
                         inp.battery, inp.modes, keep, cap, time_limit_s=inp.plan_time_limit_s,
                         orbit_period_s=inp.orbit_period_s,
                         margin_w=inputs.forecast_margin_w,
                         load_margin_w=inp.params["load_margin_pct"] / 100.0 * inputs.platform_load_w,
                         thermal=inp.thermal)
        if plan is None:
            return None
    index = plan.mode_at(inp.now_s)
    headroom = (plan.min_soc_pct - keep) / 100.0 * inp.battery.capacity_wh
    horizon_min = len(plan.mode_index) * plan.step_s / 60.0
    # The solve time is in plan_ms, not here: a reason must not depend on the machine.
    keeps = f"keeps {keep:.0f} %" + ("" if plan.held_pct is None else f", holds {plan.held_pct:.0f} % an orbit on")
    if index < 0:
        lowest = inp.modes[0]
        return PowerDecision(lowest.name, 0, Admission.NONE, lowest.idle_w,
                             f"plan over {horizon_min:.0f} min (forecast): idle now, lowest charge "
                             f"{plan.min_soc_pct:.1f} % ({keeps})", headroom), plan
    mode = inp.modes[index]
    admission = Admission.ALL if plan.min_soc_pct >= keep + settings.training_reserve_pct else Admission.INFERENCE
    reason = (f"plan over {horizon_min:.0f} min (forecast): {mode.name} now, lowest charge "
              f"{plan.min_soc_pct:.1f} % ({keeps})")
    return PowerDecision(mode.name, index, admission, mode.loaded_w, reason, headroom), plan


def power_inputs(inp: ControlInputs) -> PowerInputs:
    """The policy's inputs: battery now, and the prediction's times aged to now."""
    pred = inp.prediction
    age = inp.now_s - pred.time_unix_s if pred else 0.0

    def aged(v: float | None) -> float | None:
        return max(0.0, v - age) if v is not None and math.isfinite(v) else None

    inputs = PowerInputs(
        soc_pct=inp.eps.soc_pct,
        solar_power_w=inp.eps.solar_power_w,
        platform_load_w=inp.platform_load_w,
        in_eclipse=pred.in_eclipse if pred else None,
        time_to_eclipse_s=aged(pred.to_eclipse_entry_s) if pred else None,
        eclipse_duration_s=pred.eclipse_duration_s if pred and math.isfinite(pred.eclipse_duration_s) else None,
        time_to_sun_s=aged(pred.to_eclipse_exit_s) if pred and pred.in_eclipse else None,
        solar_forecast_w=inp.solar_forecast_w,
        forecast_step_s=inp.forecast_step_s,
        forecast_margin_w=2.0 * inp.solar_error_w,  # about 95 % of samples, for a normal error
    )
    if pred is not None and not pred.in_eclipse and inputs.time_to_eclipse_s is None:
        # Sunlit with no eclipse in the horizon (high beta): plan to the horizon's end with no shadow.
        inputs = replace(inputs, time_to_eclipse_s=PREDICTION_HORIZON_S, eclipse_duration_s=0.0)
    return inputs
