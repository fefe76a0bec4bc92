"""The controller: read the board, run the control core, apply its decision, say why.

Once per ``control_period_s`` of agent time: read the hardware layer and the EPS, keep the
orbit prediction fresh, hand everything to :func:`flight.agent.control_core.control_step`
(pure), then carry out what it returns: its events and SAFE transitions in order, the power
mode, the compute admission. The latest decision is in ``POWER_HK`` and ``THERMAL_HK``.

It also owns the two commands that change its inputs: ``SET_POWER_MODE`` (the operator's
cap) and ``SET_TLE`` (the orbit).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from flight.agent.control_core import (
    PREDICTION_HORIZON_S,
    ControlInputs,
    ControlOutput,
    ControlState,
    EnterSafe,
    control_step,
)
from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.ports import Component, EventPort, FaultLog, ModePort
from flight.agent.schedule import JUMP_TOLERANCE_S
from flight.clock import Clock, backoff_s
from flight.hal.base import Board, EpsReading, HalError, HalReading, PowerMode, PowerModesUnavailable
from flight.link.definitions import RAIL_CHANNELS, ZONE_CHANNELS, Admission, EpsSource
from flight.link.dictionary import FailureCode
from flight.link.messages import PLAN_MAX_MODES, PLAN_MAX_NAME, PLAN_MAX_STEPS, CommandRequest, PlanRecord
from flight.orbit import (TLE_VALID_BEFORE_EPOCH_S, Orbit, OrbitPrediction, PropagationError, TleError, predict_summary,
                          tle_current)
from flight.orbit.saa import SaaDrift
from flight.power.array import ArrayModel, SolarCalibration, SolarForecast, forecast_solar
from flight.power.load import FULL_PCT, GaugeLoadLearner
from flight.power.planner import DEFAULT_TIME_LIMIT_S, Plan
from flight.power.policy import Battery, ModePower, PowerDecision
from flight.thermal.governor import Action
from flight.thermal.model import OPEN_LOOP_STEPS, ThermalFit, ThermalPlanInputs, open_loop_error_c

PREDICTION_PERIOD_S = 60.0  # re-propagate once a minute of agent time: cheap, and passes move slowly
FORECAST_ORBITS = 1.5  # the array forecast reaches past the next deficit, whatever the orbit's phase
MIN_HORIZON_ORBITS = 2.0  # an orbit sgp4 cannot take a day ahead is predicted to where it can, if this far
PROPAGATION_MARGIN_S = 60.0  # short of the time sgp4 failed at (it fails between its own grid points)
PLAN_REPORT_MIN_S = 60.0  # a new plan goes to the ground at most this often (~400 B each)
POWER_MODE_BACKOFF_MAX_S = 600.0  # after failures in a row nvpmodel is tried at most this seldom (_mode_backing_off)
POWER_MODE_QUERY_S = 30.0
"""The power mode in force is asked of the board at most this often (agent time): the agent sets it, and
knows what it set; the query finds a change made by hand on the board. On a Jetson each query is an
``nvpmodel -q`` process (an audit: two a second, each able to hold the loop up to its timeout)."""
FORECAST_STEP_S = 120.0  # coarse: the plan weighs minutes; ~70 steps over 1.5 orbits solve in a few ms
RATE_TICK_MAX_S = 300.0  # ticks further apart are a stall, not the loop's pace (the rate window's)
GAUGE_CAPACITY_RANGE = (0.3, 1.2)
"""The gauge's full-charge capacity is taken within these fractions of the configured one: a battery at under
0.3 of its nameplate is spent, and one over 1.2 is a gauge or configuration error (said as a sensor missing)."""


def mode_powers(board: Board, modes: tuple[PowerMode, ...] | None = None) -> tuple[ModePower, ...]:
    """The board's power modes (``modes``, else the HAL's) as the plan sees them: idle and loaded power from
    the profile.

    A mode whose power nothing states (MAXN on a board without a profile) costs the most the
    plan can imagine: never chosen for being "free".
    """
    by_name = {m.name: m for m in board.profile.modes} if board.profile is not None else {}
    out = []
    for m in board.hal.power_modes() if modes is None else modes:
        prof = by_name.get(m.name)
        if prof is not None:
            out.append(ModePower(m.name, prof.idle_power_w, prof.loaded_power_w, prof.inference_rel_maxn))
        else:
            watts = m.budget_w if m.budget_w else math.inf
            out.append(ModePower(m.name, watts, watts))
    if any(mp.throughput_rel is None for mp in out):  # no profile for some: rank by order
        out = [ModePower(mp.name, mp.idle_w, mp.loaded_w) for mp in out]
    return tuple(out)


def profile_power_modes(board: Board, why: PowerModesUnavailable) -> tuple[PowerMode, ...]:
    """The board profile's modes, for the plan's model of power while the board cannot list its own (a Jetson
    without a readable nvpmodel.conf): the agent runs (telemetry, commands, compute as the limits allow) rather
    than refusing to start (found in audit: a restart loop, the board silent, for want of one file). Their IDs
    are placeholders: no mode can be set until the board's own list is back. Without a profile nothing says
    what a mode costs: :class:`HalError`, the agent does not start."""
    if board.profile is None:
        raise HalError(f"{why}; and no board profile gives the modes' power meanwhile: set [hal] board")
    return tuple(PowerMode(m.name, i, m.budget_w, "profile") for i, m in enumerate(board.profile.modes))


def zone_channels(temps_c: dict[str, float]) -> dict[str, float | None]:
    """Each ``temp_<zone>_c`` channel from a reading's zones: ``<zone>-thermal`` as L4T 36 names a zone, the bare
    name as the harness does, or ``t<zone>_tegra`` (the board zone of an AGX Orin, ``tboard_tegra``; found in audit:
    temp_board_c was nil on every real board)."""
    return {channel: temps_c.get(f"{zone}-thermal", temps_c.get(zone, temps_c.get(f"t{zone}_tegra")))
            for zone, channel in ZONE_CHANNELS.items()}


@dataclass(frozen=True)
class PowerSetup:
    """The configuration's [power] section, as the controller needs it."""

    battery_capacity_wh: float
    platform_load_w: float
    bench_supply: bool
    control_period_s: float
    array: ArrayModel | None = None  # the [array] section: None, and the plan treats sunlight as power


class Controller(Component):
    NAME = "controller"
    COMMANDS = ("SET_POWER_MODE", "SET_TLE")
    EVENTS = ("THERMAL_STEP_DOWN", "THERMAL_STEP_UP", "THERMAL_HARD_LIMIT", "THERMAL_HARD_CLEAR", "LOW_BATTERY",
              "CONTACT_LOST", "FAULTS_REPEATED", "SENSOR_MISSING", "SENSOR_RESTORED", "POWER_MODE_CHANGED",
              "POWER_MODE_FAILED", "POWER_MODES_UNAVAILABLE", "POWER_MODES_RESTORED", "ADMISSION_CHANGED",
              "ORBIT_UPDATED", "ORBIT_UNPREDICTABLE", "ECLIPSE_PREDICTED", "SAA_PREDICTED")
    CHANNELS = ("cpu_pct", "mem_pct", "sensors_missing",
                "battery_soc_pct", "bus_voltage_v", "solar_power_w", "eps_source", "board_power_w",
                *RAIL_CHANNELS.values(), "power_mode", "power_mode_cap", "power_budget_w", "admission", "power_reason",
                "energy_headroom_wh", "in_eclipse", "eclipse_in_s", "eclipse_exit_in_s", "eclipse_duration_s", "in_saa",
                "saa_in_s", "saa_exit_in_s", "beta_deg", "tle_age_s",
                "solar_predicted_w", "solar_model_scale", "solar_error_w", "plan_ms", "plan_min_soc_pct",
                "plan_held_pct", "platform_load_est_w", "battery_capacity_wh", "thermal_model_rms_c", "plan_temp_max_c",
                *ZONE_CHANNELS.values(), "temp_max_c", "temp_rate_c_per_min", "throttle_state", "throttle_steps")

    def __init__(
        self,
        board: Board,
        setup: PowerSetup,
        params: Mapping[str, Any],
        emit: EventPort,
        modes: ModePort,
        faults: FaultLog,
        clock: Clock,
        contact_age_s: Callable[[], float],
        admit: Callable[[Admission, int, int, float | None, str], None],
        memory: Any,
        internal_error: Callable[[str, BaseException], None],
        configured_tle: tuple[str, str] | None = None,
        publish_plan: Callable[[PlanRecord], None] | None = None,
    ):
        """``admit(admission, mode_index, n_modes, board_power_w, reason)`` tells the compute
        supervisor what may run; ``memory`` keeps the TLE and the operator's cap across
        restarts (flight.agent.state.PersistentState); ``internal_error(where, exc)`` is the
        executive's; ``configured_tle`` is the orbit until a SET_TLE replaces it;
        ``publish_plan`` sends a new energy plan to the ground (TM(140,1)), at most every
        ``PLAN_REPORT_MIN_S``."""
        self.board = board
        self.hal = board.hal
        self.setup = setup
        self.params = params
        self._emit = emit
        self._modes = modes
        self._faults = faults
        self._clock = clock
        self._contact_age_s = contact_age_s
        self._admit = admit
        self._memory = memory
        self._internal_error = internal_error
        self._publish_plan = publish_plan
        self._reported_plan: Plan | None = None
        self._plan_reported_s = -math.inf  # monotonic: a UTC step back must not silence the reports
        self._mode_known: tuple[str | None, float] | None = None  # (the mode in force, monotonic s it was known)
        # nvpmodel's failures in a row, and the last one's time, of the query and of the set apart
        self._mode_failures = {"query": 0, "set": 0}
        self._mode_failed_s = {"query": -math.inf, "set": -math.inf}
        self._modes_unavailable = False  # power modes out (the tool or its conf): said, and a fault, once an outage
        self._plan_seen: Plan | None = None
        self._plan_umbra: tuple[bool, ...] = ()
        try:
            self.power_modes: tuple[PowerMode, ...] = self.hal.power_modes()
            self.modes_from_board = True
        except PowerModesUnavailable as exc:  # said at the first tick, which finds it again (POWER_MODES_UNAVAILABLE)
            self.power_modes = profile_power_modes(board, exc)
            self.modes_from_board = False  # the profile's, until the board lists its own (_take_board_modes)
        self.mode_powers = mode_powers(board, self.power_modes)
        names = [m.name for m in self.power_modes]
        # A commanded cap this board has no mode of (a JetPack update renamed its modes, a module swapped):
        # its lowest mode is the cap until SET_POWER_MODE sets one, said at boot (found in audit: taken as no cap)
        self.cap_problem = (f"{memory.power_mode_cap}: not a power mode of this board ({', '.join(names)}); its "
                            f"lowest, {names[0]}, is the cap until SET_POWER_MODE sets one"
                            if names and memory.power_mode_cap not in names + ["AUTO"] else None)
        self.eps_source = board.eps.source if board.eps is not None else (
            EpsSource.BENCH if setup.bench_supply else EpsSource.NONE)
        self.state = ControlState()
        self.last: ControlOutput | None = None
        self.reading: HalReading | None = None
        self.eps = EpsReading()
        self.prediction: OrbitPrediction | None = None
        self.orbit: Orbit | None = None
        self.forecast: SolarForecast | None = None  # the array model's output, unscaled
        self.calibration = SolarCalibration()
        self.solar_predicted_w: float | None = None
        battery = Battery(setup.battery_capacity_wh)
        # The battery's capacity the plan and the load learner use: its gauge's where the EPS gives one.
        self.capacity_wh = setup.battery_capacity_wh
        self._gauge_capacity_wh: float | None = None  # the last the gauge gave within GAUGE_CAPACITY_RANGE
        self._last_tick_mono_s: float | None = None
        self._tick_s = 0.0  # the last interval between ticks (monotonic), for the rate of rise's window
        self.load = GaugeLoadLearner(setup.platform_load_w, setup.battery_capacity_wh, battery.charge_efficiency,
                                     battery.discharge_efficiency)
        self.thermal_fit = ThermalFit()
        # The current sample (start s, Σ board W, Σ sun, ticks) and the last two boundaries'
        # (temperature °C, the sample's mean power W): the model's evidence.
        self._th_sample: tuple[float, float, float, int] | None = None
        self._th_marks: list[tuple[float, float]] = []
        # Samples (T at start, mean W, mean sun) for the model's open-loop check, and its error:
        # the plan's thermal margin (its prediction runs ~70 samples open loop).
        self._th_history: deque[tuple[float, float, float]] = deque(maxlen=OPEN_LOOP_STEPS + 1)
        self._th_open_sq: float | None = None
        self._predicted_at_s = -math.inf
        self._predicted_utc_s = 0.0  # UTC when predicted: a step of UTC since is a new prediction
        self._unpredictable_said = False  # ORBIT_UNPREDICTABLE said for the orbit in use
        self._announced: set[tuple[str, int]] = set()
        # The newer of the TLE commanded (SET_TLE, kept across restarts) and the configuration's
        # (_boot_orbit).
        commanded = None
        if memory.tle:
            try:
                commanded = Orbit.from_tle(*memory.tle)
            except ValueError:
                memory.remember_tle(None)
        self._configured_orbit = Orbit.from_tle(*configured_tle) if configured_tle else None  # checked when read
        orbit = self._boot_orbit(commanded, self._configured_orbit, clock.now_s())
        if orbit is not None:
            self.set_orbit(orbit)

    @staticmethod
    def _boot_orbit(commanded: Orbit | None, configured: Orbit | None, now_s: float) -> Orbit | None:
        """The newer by epoch of the commanded and the configured orbit, the commanded on a tie: a
        configuration deployed with a fresher TLE than one commanded months ago must not lose to it
        (found in review: the commanded one won whatever its age). An epoch more than
        TLE_VALID_BEFORE_EPOCH_S ahead of the clock is a typing error, not news, and never wins (found
        in review: a configured 2056 beat every TLE commanded, at each boot); where both are, the clock
        is the one wrong (a board booted with no time), and the operator's, the commanded, is kept."""
        plausible = [o for o in (commanded, configured)
                     if o is not None and o.epoch_unix_s - now_s <= TLE_VALID_BEFORE_EPOCH_S]
        if not plausible:  # none, or both ahead of the clock (a board booted with no time): the commanded
            return commanded or configured
        return max(plausible, key=lambda o: o.epoch_unix_s)  # max keeps the first of equals: the commanded

    def set_orbit(self, orbit: Orbit | None) -> None:
        self.orbit = orbit
        self._predicted_at_s = -math.inf
        self._unpredictable_said = False

    def _power_mode_now(self) -> str | None:
        """The power mode in force, None where the board cannot say now (a failed nvpmodel -q): as the
        agent last set it or the board last said, asked again once :data:`POWER_MODE_QUERY_S` has passed."""
        mono_s = self._clock.monotonic_s()
        if self._mode_known is not None and 0.0 <= mono_s - self._mode_known[1] < POWER_MODE_QUERY_S:
            return self._mode_known[0]
        if self._mode_backing_off(mono_s, "query"):
            return None
        try:
            mode = self.hal.current_power_mode()
        except HalError as exc:
            self._mode_known = None  # a failure is not remembered as a mode
            self._mode_failed(mono_s, "query")
            if isinstance(exc, PowerModesUnavailable):
                self._modes_out(exc)
            else:  # it ran, and failed as a tool does: the outage is over (found in review: it was kept for good)
                self._modes_back(None)
                self._internal_error("power mode query", exc)
            return None
        self._mode_failures["query"] = 0
        name = mode.name if mode else None
        self._modes_back(name)
        self._mode_known = (name, mono_s)
        return name

    def _modes_out(self, exc: PowerModesUnavailable) -> None:
        """Power modes cannot be read or set (found in audit: on a Jetson without nvpmodel each try was an
        internal error and a fault, and the agent went SAFE for repeated faults within minutes of every start):
        one condition, said and counted as one fault for as long as it lasts, tried again as any failure is."""
        if not self._modes_unavailable:
            self._modes_unavailable = True
            self._emit("POWER_MODES_UNAVAILABLE", reason=str(exc))
            self._faults.record("power modes")

    def _take_board_modes(self) -> None:
        """Where the plan runs on the profile's modes, the board's own once it can list them (its conf readable
        again), at the start of a tick, before its decision: taken as a query answered in the middle of a tick,
        that tick's decision, made over the profile's modes, was applied over the board's (found in review: a mode
        the conf lacks set, POWER_MODE_FAILED, and an index past the modes given to admission). A plan made over
        other modes is dropped: its indices are of that list. Reading the conf is a file read, not nvpmodel."""
        if self.modes_from_board:
            return
        try:
            modes = self.hal.power_modes()
        except HalError:
            return  # gone again between the two reads: the next answer takes them
        self.modes_from_board = True
        if [m.name for m in modes] != [m.name for m in self.power_modes]:
            self.state = replace(self.state, plan=None, power_mode_index=None, thermal_base=None)
        self.power_modes, self.mode_powers = modes, mode_powers(self.board, modes)

    def _modes_back(self, name: str | None) -> None:
        """The tool ran (with whatever outcome): an outage said is over, and the next is said and counted."""
        if self._modes_unavailable:
            self._modes_unavailable = False
            self._emit("POWER_MODES_RESTORED", mode=name or "?")

    def _mode_backing_off(self, mono_s: float, what: str) -> bool:
        """Whether nvpmodel failed too lately to be run again now: one failure is tried again at the next tick,
        then it waits POWER_MODE_QUERY_S, doubling at each failure in a row up to POWER_MODE_BACKOFF_MAX_S (found
        in audit: a failing or hung nvpmodel was run at every tick, up to 10 s a call on the loop itself, turns
        of 30 s for good). ``what``: "query" or "set", each with its failures (found in review: a set the board
        refused was tried at every tick again, the query between succeeding). The doubling stops with the cap
        (found in audit: 2.0 ** n raised OverflowError at every tick once a week of failures had counted n past
        1025, and the tick's decisions were never applied)."""
        failures = self._mode_failures[what]
        if failures < 2:
            return False
        wait_s = backoff_s(POWER_MODE_QUERY_S, POWER_MODE_BACKOFF_MAX_S, failures - 2)
        return 0.0 <= mono_s - self._mode_failed_s[what] < wait_s

    def _mode_failed(self, mono_s: float, what: str) -> None:
        self._mode_failures[what] += 1
        self._mode_failed_s[what] = mono_s

    # --- the tick ----------------------------------------------------------------------

    def tick(self) -> ControlOutput:
        now_s = self._clock.now_s()
        mono_s = self._clock.monotonic_s()
        p = self.params
        self._take_board_modes()
        fault_count = self._faults.count_since(mono_s - p["fault_window_s"])
        try:
            reading = self.hal.read()
        except Exception as exc:  # noqa: BLE001 - a sensor layer bug: no readings this tick, protections still run
            self._internal_error("hal read", exc)
            reading = HalReading({}, {}, None, None, None, missing=(f"all sensors: read failed ({type(exc).__name__})",))
        self.reading = reading
        eps = EpsReading()
        if self.board.eps is not None:
            try:
                eps = self.board.eps.read_eps()
            except Exception as exc:  # noqa: BLE001
                self._internal_error("eps read", exc)
        eps = self._checked_capacity(eps)
        if eps.missing:  # the EPS's broken readings are sensors missing, said and counted as the board's are
            reading = replace(reading, missing=(*reading.missing, *eps.missing))
            self.reading = reading
        self.eps = eps
        # UTC moved unlike the monotonic clock since the prediction (found in audit: after a step back of a day the
        # plan took an eclipse 25 min away for one 25 h away, until the next period; contacts.py does the same)
        stepped = abs(now_s - (self._predicted_utc_s + (mono_s - self._predicted_at_s))) > JUMP_TOLERANCE_S
        if self.orbit is not None and (mono_s - self._predicted_at_s >= PREDICTION_PERIOD_S or stepped
                                       or self._boundary_passed(now_s)):
            self._predict(now_s)
            self._predicted_at_s, self._predicted_utc_s = mono_s, now_s
        forecast_w = self._calibrate(now_s, eps)
        if eps.full_charge_wh is not None:  # held through a reading missing or out of range: a capacity moves
            self._gauge_capacity_wh = eps.full_charge_wh  # over weeks, and one dropout is no cause to jump 20 %
        self.capacity_wh = self._gauge_capacity_wh or self.setup.battery_capacity_wh
        self.load.capacity_wh = self.capacity_wh
        self._learn_load(mono_s, eps, reading)
        thermal = self._thermal_inputs(now_s, mono_s, reading)
        self._note_tick(mono_s)

        out = control_step(ControlInputs(
            now_s=now_s, mono_s=mono_s, mode=self._modes.mode, reading=reading, eps=eps, eps_source=self.eps_source,
            prediction=self.prediction, contact_age_s=self._contact_age_s(), fault_count=fault_count, params=p,
            modes=self.mode_powers, operator_cap=self._operator_cap(), battery=Battery(self.capacity_wh),
            platform_load_w=self.load.load_w, rate_window_s=self._rate_window_s(),
            solar_forecast_w=forecast_w, forecast_step_s=FORECAST_STEP_S,
            solar_error_w=self.calibration.error_w, thermal=thermal,
            orbit_period_s=self.orbit.period_s if self.orbit is not None else None,
            plan_time_limit_s=None if self.board.stepper is not None else DEFAULT_TIME_LIMIT_S,
        ), self.state)
        self.state, self.last = out.state, out
        plan = out.state.plan
        if plan is not None and plan is not self._plan_seen:  # the shadow it was made against, kept with it
            n = len(plan.mode_index)
            umbra = self.forecast.umbra_from_now(plan.start_unix_s)[:n] if self.forecast is not None else ()
            self._plan_seen, self._plan_umbra = plan, tuple(umbra) + (False,) * (n - len(umbra))
        if out.clear_faults:
            self._faults.clear()
        for action in out.actions:
            if isinstance(action, EnterSafe):
                self._modes.enter_safe(action.reason)
            else:
                self._emit(action.name, **action.args)
        self._apply(out)
        if plan is not None and plan is not self._reported_plan and mono_s - self._plan_reported_s >= PLAN_REPORT_MIN_S:
            self._report_plan(plan, mono_s)  # after the tick's own work: a report never stands in its way
        return out

    def _report_plan(self, plan: Plan, mono_s: float) -> None:
        """The plan in force, with the shadow it was forecast against, to the ground: its first
        ``PLAN_MAX_STEPS`` steps (a plan over a long orbit is cut, not lost)."""
        self._reported_plan, self._plan_reported_s = plan, mono_s
        if self._publish_plan is None:
            return
        n = min(len(plan.mode_index), PLAN_MAX_STEPS)
        solar = tuple(plan.solar_w[:n]) + (0.0,) * (n - len(plan.solar_w[:n]))
        try:
            self._publish_plan(PlanRecord(
                plan.start_unix_s, plan.step_s, plan.soc_pct[:n + 1], plan.mode_index[:n],
                tuple(m.name[:PLAN_MAX_NAME] for m in self.mode_powers[:PLAN_MAX_MODES]), solar, self._plan_umbra[:n],
                plan.keep_pct, plan.solve_ms))
        except Exception as exc:  # noqa: BLE001 - the plan report is news for the ground, never a reason to stop
            self._internal_error("plan report", exc)

    def _apply(self, out: ControlOutput) -> None:
        current = self._power_mode_now()
        if current != out.power_mode and not self._mode_backing_off(self._clock.monotonic_s(), "set"):
            try:
                now_in = self.hal.set_power_mode(out.power_mode)  # the mode once in force (nvpmodel -q after -m)
                self._mode_known = (now_in.name if now_in else out.power_mode, self._clock.monotonic_s())
                self._mode_failures["set"] = 0
                self._modes_back(self._mode_known[0])
                self._emit("POWER_MODE_CHANGED", old=current or "?", new=out.power_mode, reason=out.reason)
            except PowerModesUnavailable as exc:
                self._mode_known = None
                self._mode_failed(self._clock.monotonic_s(), "set")
                self._modes_out(exc)
            except HalError as exc:
                self._mode_known = None  # whatever the board is in now, it is asked
                self._mode_failed(self._clock.monotonic_s(), "set")
                self._modes_back(None)
                self._emit("POWER_MODE_FAILED", name=out.power_mode, reason=str(exc))
                self._faults.record("power mode")
        for event in out.after:
            self._emit(event.name, **event.args)
        th = out.thermal
        if th is not None and th.action in (Action.STEP_DOWN, Action.STEP_UP):
            self._emit("THERMAL_STEP_DOWN" if th.action is Action.STEP_DOWN else "THERMAL_STEP_UP",
                       power_mode=self._power_mode_now() or "?", reason=th.reason)
        reading = self.reading
        self._admit(out.admission, out.power_mode_index, len(self.mode_powers),
                    reading.board_power_w if reading else None, out.reason)

    def _operator_cap(self) -> int:
        """The index of the highest mode the operators allow: AUTO all, a name unknown here the lowest."""
        names = [m.name for m in self.power_modes]
        cap = self._memory.power_mode_cap
        return names.index(cap) if cap in names else len(names) - 1 if cap == "AUTO" else 0

    def _boundary_passed(self, now_s: float) -> bool:
        """True once an eclipse or SAA edge the last prediction knew of has gone by: predict again."""
        pred = self.prediction
        if pred is None:
            return False
        age = now_s - pred.time_unix_s
        edges = (pred.to_eclipse_entry_s, pred.to_eclipse_exit_s, pred.to_saa_entry_s, pred.to_saa_exit_s)
        return any(math.isfinite(e) and e - age <= 0 for e in edges)

    def _note_tick(self, mono_s: float) -> None:
        """How far apart the ticks come (a stall, over RATE_TICK_MAX_S, is no tick): the rate of rise's window."""
        last, self._last_tick_mono_s = self._last_tick_mono_s, mono_s
        if last is not None and 0.0 < mono_s - last <= RATE_TICK_MAX_S:
            self._tick_s = mono_s - last

    def _rate_window_s(self) -> float:
        """The rate of rise's window: three ticks at least, as the ticks come. Under a harness stepping 60 s at a
        time the ticks are that far apart whatever the control period says, and a window of three periods held
        one sample: the rate read 0 and the look-ahead did nothing (an audit)."""
        return max(30.0, 3.0 * self.setup.control_period_s, 3.0 * self._tick_s)

    def _checked_capacity(self, eps: EpsReading) -> EpsReading:
        """The gauge's full-charge capacity, kept where it is within GAUGE_CAPACITY_RANGE of the configured one;
        else dropped, and said as a sensor missing (the last one within it is used meanwhile). A faded battery's
        every percent is fewer Wh than its nameplate's: planned on the nameplate, 15 % fade broke the floor in
        bench.power's cases."""
        fcc, nameplate = eps.full_charge_wh, self.setup.battery_capacity_wh
        if fcc is None or GAUGE_CAPACITY_RANGE[0] * nameplate <= fcc <= GAUGE_CAPACITY_RANGE[1] * nameplate:
            return eps
        low, high = (f * nameplate for f in GAUGE_CAPACITY_RANGE)
        why = f"eps full_charge_wh: not a reading in {low:g}..{high:g} (of the configured {nameplate:g} Wh)"
        return replace(eps, full_charge_wh=None, missing=(*eps.missing, why))

    def _learn_load(self, mono_s: float, eps: EpsReading, reading: HalReading) -> None:
        """What the charge did, with the arrays' and the board's power known, tells the rest of the
        spacecraft's draw (flight.power.load: measured between changes of the gauge's reading, which
        is coarse). Timed on the monotonic clock: a UTC step back froze the learning until UTC caught
        up (an audit)."""
        if eps.soc_pct is None or eps.solar_power_w is None or reading.board_power_w is None:
            self.load.gap()
            return
        self.load.tick(mono_s, eps.soc_pct, eps.solar_power_w, reading.board_power_w)

    def _thermal_inputs(self, now_s: float, mono_s: float, reading: HalReading) -> ThermalPlanInputs | None:
        """Fold this tick into the board model's sample (every FORECAST_STEP_S of monotonic
        time: the plan's step) and, once the model is trusted, what the plan's thermal limit
        needs (the shadow ahead is looked up on the UTC the forecast was made in)."""
        temps = [t for t in reading.temps_c.values() if isinstance(t, (int, float)) and math.isfinite(t)]
        temp = max(temps) if temps else None
        power, pred = reading.board_power_w, self.prediction
        if temp is None or power is None or not (math.isfinite(temp) and math.isfinite(power)):
            self._th_sample, self._th_marks = None, []  # a gap: the lags no longer follow each other
            self._th_history.clear()
            return None
        sun = 0.0 if pred is not None and pred.in_eclipse else 1.0
        if self._th_sample is None:
            self._th_sample, self._th_marks = (mono_s, 0.0, 0.0, 0), [(temp, power)]
        start, p_sum, sun_sum, ticks = self._th_sample
        self._th_sample = (start, p_sum + power, sun_sum + sun, ticks + 1)
        if mono_s - start >= FORECAST_STEP_S:
            _, p_sum, sun_sum, ticks = self._th_sample
            mean_p, mean_sun = p_sum / ticks, sun_sum / ticks
            marks = self._th_marks
            if len(marks) == 2:  # (T[k-1], P[k-1]), (T[k], ·) and this sample: P[k], sun[k] → T[k+1]
                self.thermal_fit = self.thermal_fit.update(marks[1][0], marks[0][0], mean_p, marks[0][1], mean_sun,
                                                           temp)
            marks[-1] = (marks[-1][0], mean_p)
            self._th_history.append((marks[-1][0], mean_p, mean_sun))
            if self.thermal_fit.usable and len(self._th_history) == self._th_history.maxlen:
                miss = open_loop_error_c(self.thermal_fit, list(self._th_history), temp)
                if miss is not None and math.isfinite(miss):
                    sq = miss * miss
                    self._th_open_sq = sq if self._th_open_sq is None else 0.9 * self._th_open_sq + 0.1 * sq
            self._th_marks = [*marks, (temp, mean_p)][-2:]
            self._th_sample = (mono_s, 0.0, 0.0, 0)
        if not self.thermal_fit.usable or len(self._th_marks) < 2:
            return None
        forecast = self.forecast
        sun_ahead = tuple(forecast.shadow[max(0, int((now_s - forecast.start_unix_s) // forecast.step_s)):]) \
            if forecast is not None and forecast.shadow else (sun,)
        # The sample before now: the last boundary's, or (past half a sample into this one) this
        # sample's start and its power so far.
        start, p_sum, _, ticks = self._th_sample
        if mono_s - start < FORECAST_STEP_S / 2.0 or ticks == 0:
            t_prev, p_prev = self._th_marks[0]
        else:
            t_prev, p_prev = self._th_marks[1][0], p_sum / ticks
        margin_c = max(1.0, 2.0 * self.thermal_error_c)
        return ThermalPlanInputs(self.thermal_fit, temp, t_prev, p_prev, sun_ahead,
                                 self.params["thermal_soft_limit_c"] - margin_c)

    @property
    def thermal_error_c(self) -> float:
        """The board model's error as the plan meets it: RMS of its open-loop miss half an hour
        ahead once measured, its one-step error until then."""
        if self._th_open_sq is None:
            return self.thermal_fit.rms_c
        return max(self.thermal_fit.rms_c, math.sqrt(self._th_open_sq))

    def _calibrate(self, now_s: float, eps: EpsReading) -> tuple[float, ...] | None:
        """Fold the measured solar power into the model's calibration; the scaled forecast from now."""
        forecast, array = self.forecast, self.setup.array
        if forecast is None or array is None:
            self.solar_predicted_w = None
            return None
        ahead, now = forecast.from_now(now_s), forecast.at(now_s)
        if now is None:
            return None
        raw_now, at_edge = now
        # Not while the battery is full: the charger then takes no more, and an EPS that measures what the arrays
        # deliver reads the loads, not what they could give (found in audit: such readings would pull the scale down)
        full = eps.soc_pct is not None and eps.soc_pct >= FULL_PCT
        if eps.solar_power_w is not None and not at_edge and not full:
            self.calibration = self.calibration.update(raw_now, eps.solar_power_w, array.peak_w)
        scale = self.calibration.scale
        self.solar_predicted_w = raw_now * scale
        return tuple(w * scale for w in ahead)

    def predict_again(self) -> None:
        """Make the orbit's prediction again at the next tick, and announce the SAA pass it finds again even
        where its entry stays within the minute announced (the SAA's drift estimate changed)."""
        self._predicted_at_s = -math.inf
        self._announced = {key for key in self._announced if key[0] != "saa"}

    def saa_drift(self) -> SaaDrift:
        """The operators' estimate of the SAA's drift (parameters ``saa_drift_*_deg_per_yr``), which every
        prediction of the SAA moves the model by."""
        return SaaDrift(float(self.params["saa_drift_west_deg_per_yr"]),
                        float(self.params["saa_drift_north_deg_per_yr"]))

    def _predict(self, now_s: float) -> None:
        horizon_s, cut = PREDICTION_HORIZON_S, None
        while True:
            try:
                pred = predict_summary(self.orbit, now_s, horizon_s, saa_drift=self.saa_drift())
                if self.setup.array is not None:
                    self.forecast = forecast_solar(self.orbit, self.setup.array, now_s,
                                                   FORECAST_ORBITS * self.orbit.period_s, FORECAST_STEP_S)
                break
            except PropagationError as exc:  # the elements, or the clock, not a fault of the software: said once
                # a TLE (found in an audit: a fault each minute, and SAFE by repeated faults). An orbit that
                # decays within the horizon is predicted up to then, where that is still two orbits (found in
                # audit: the whole prediction was dropped, the power policy left to assume an eclipse now).
                usable_s = exc.time_unix_s - now_s - PROPAGATION_MARGIN_S
                if cut is None and horizon_s > usable_s >= MIN_HORIZON_ORBITS * self.orbit.period_s:
                    horizon_s, cut = usable_s, exc
                    continue
                self.prediction = None
                self.forecast = None
                self._unpredictable(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - a bug must not stop control
                self.prediction = None
                self.forecast = None
                self._internal_error("orbit prediction", exc)
                return
        if cut is not None:
            self._unpredictable(f"predicted {horizon_s / 3600.0:.1f} h ahead, not {PREDICTION_HORIZON_S / 3600.0:.0f}: "
                                f"{cut}")
        self.prediction = pred
        self._announced = {k for k in self._announced if k[1] * 60 >= now_s - 3600}  # forget old passes
        for kind, event, t_in, dur in (
            ("eclipse", "ECLIPSE_PREDICTED", pred.to_eclipse_entry_s, pred.next_eclipse_duration_s),
            ("saa", "SAA_PREDICTED", pred.to_saa_entry_s, pred.next_saa_duration_s),
        ):
            if math.isfinite(t_in):
                key = (kind, int((now_s + t_in) // 60))  # one announcement per pass
                if key not in self._announced:
                    self._announced.add(key)
                    self._emit(event, in_s=t_in, duration_s=dur if math.isfinite(dur) else 0.0)

    def _unpredictable(self, reason: str) -> None:
        if not self._unpredictable_said:
            self._unpredictable_said = True
            self._emit("ORBIT_UNPREDICTABLE", reason=reason)

    # --- commands ----------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"SET_POWER_MODE": Handler(self._set_power_mode), "SET_TLE": Handler(self._set_tle)}

    def _set_power_mode(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        if name.upper() == "AUTO":
            name = "AUTO"
        else:
            try:
                self.hal.power_mode(name)
            except PowerModesUnavailable as exc:  # no list of modes (a Jetson's unreadable conf): none can be set
                raise CommandFailed(f"power modes unavailable: {exc}", FailureCode.EXECUTION_ERROR) from None
            except HalError as exc:
                raise CommandFailed(str(exc), FailureCode.OUT_OF_RANGE) from None
        old = self._memory.power_mode_cap
        saved = self._memory.remember_cap(name)
        self.tick()  # apply the cap now, not at the next tick
        return {"cap": name, "old_cap": old, "power_mode": self._power_mode_now(),  # what is in force now
                **self._unsaved(saved)}

    def _set_tle(self, req: CommandRequest) -> dict[str, Any]:
        try:
            orbit = Orbit.from_tle(req.args["line1"], req.args["line2"])
        except TleError as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        now_s = self._clock.now_s()
        try:
            orbit.propagate(now_s)
        except PropagationError as exc:
            # An epoch behind the clock, or within a day ahead of it, that sgp4 cannot reach is a wrong epoch (a
            # year typed 57 for 26: found in an audit, completed, then a fault each minute); one further ahead is
            # taken, as the clock is the one wrong (a board booted with no time): said by ORBIT_UNPREDICTABLE.
            if orbit.epoch_unix_s - now_s <= TLE_VALID_BEFORE_EPOCH_S:
                days = (now_s - orbit.epoch_unix_s) / 86400.0
                raise CommandFailed(f"line1: epoch {orbit.epoch_unix_s:.0f} (unix s) is {abs(days):.1f} days "
                                    f"{'before' if days >= 0 else 'after'} the board's clock; sgp4 cannot propagate "
                                    f"it to now (error {exc.code}): check the epoch's year, and the board's clock "
                                    f"(unix s {now_s:.0f})", FailureCode.BAD_ARGUMENTS) from None
        saved = self._memory.remember_tle([req.args["line1"], req.args["line2"]])
        self.set_orbit(orbit)
        self._emit("ORBIT_UPDATED", satnum=orbit.satnum, epoch=round(orbit.epoch_unix_s, 3))
        period = orbit.period_s
        # Set as commanded; whether it predicts the radiation environment is said (found in review: a
        # year-old TLE gave a confident flux class, and nothing told the operator).
        # And whether it still holds after a reboot, where the newer of it and the configured one is taken;
        # null where either epoch is over a day ahead (a predicted set, or a configured typing error): the
        # clock at that boot decides (found in review, each way).
        ahead = [o for o in (orbit, self._configured_orbit)
                 if o is not None and o.epoch_unix_s - now_s > TLE_VALID_BEFORE_EPOCH_S]
        kept = None if ahead else self._boot_orbit(orbit, self._configured_orbit, now_s) is orbit
        return {"satnum": orbit.satnum, "period_s": round(period, 3) if math.isfinite(period) else None,
                "tle_age_s": round(now_s - orbit.epoch_unix_s, 1),
                "predicts_radiation": tle_current(orbit.epoch_unix_s, now_s), "kept_at_boot": kept if saved else False,
                **self._unsaved(saved)}

    def _unsaved(self, saved: bool) -> dict[str, str]:
        """A command's result where what it set is in force but the state file could not keep it (a full or
        read-only disk: STATE_NOT_WRITTEN): said, so the operator knows a restart loses it."""
        return {} if saved else {"unsaved": f"in force, not kept across a restart: the state file could not be "
                                            f"written ({self._memory.write_error})"}

    # --- telemetry ---------------------------------------------------------------------

    @property
    def decision(self) -> PowerDecision | None:
        return self.last.decision if self.last else None

    def telemetry(self) -> dict[str, Any]:
        r = self.reading
        out = self.last
        d = out.decision if out else None
        gov = self.state.governor
        values: dict[str, Any] = {
            "cpu_pct": r.cpu_pct if r else None,
            "mem_pct": r.mem_pct if r else None,
            "sensors_missing": len(r.missing) if r else 0,
            "battery_soc_pct": self.eps.soc_pct,
            "bus_voltage_v": self.eps.bus_voltage_v,
            "solar_power_w": self.eps.solar_power_w,
            "eps_source": self.eps_source.value,
            "board_power_w": r.board_power_w if r else None,
            "power_mode": self._power_mode_now(),
            "power_mode_cap": self._memory.power_mode_cap,
            "power_budget_w": d.budget_w if d else None,
            "admission": self.state.admission.value,
            "power_reason": out.reason if out else "",
            "energy_headroom_wh": d.headroom_wh if d else None,
            "solar_predicted_w": self.solar_predicted_w,
            "solar_model_scale": self.calibration.scale if self.setup.array is not None else None,
            "solar_error_w": self.calibration.error_w if self.setup.array is not None else None,
            "plan_ms": self.state.plan.solve_ms if self.state.plan is not None else None,
            "plan_min_soc_pct": self.state.plan.min_soc_pct if self.state.plan is not None else None,
            "plan_held_pct": self.state.plan.held_pct if self.state.plan is not None else None,
            "platform_load_est_w": self.load.load_w,
            "battery_capacity_wh": self.capacity_wh,
            "thermal_model_rms_c": self.thermal_error_c if self.thermal_fit.usable else None,
            "plan_temp_max_c": self.state.plan.temp_max_c if self.state.plan is not None else None,
        }
        rails = r.rails if r else {}
        for rail, channel in RAIL_CHANNELS.items():
            values[channel] = rails[rail].power_w if rail in rails else None
        pred = self.prediction
        orbit_keys = ("in_eclipse", "eclipse_in_s", "eclipse_exit_in_s", "eclipse_duration_s", "in_saa", "saa_in_s",
                      "saa_exit_in_s", "beta_deg", "tle_age_s")
        if pred is not None:
            # Times from the last prediction (made every PREDICTION_PERIOD_S), counted down to now (found in
            # review: up to a minute late; 15 s to an SAA entry 2 s away).
            since_s = self._clock.now_s() - pred.time_unix_s

            def left(to_s: float) -> float:
                return max(0.0, to_s - since_s) if math.isfinite(to_s) else to_s

            values.update(in_eclipse=pred.in_eclipse, eclipse_in_s=left(pred.to_eclipse_entry_s),
                          eclipse_exit_in_s=left(pred.to_eclipse_exit_s), eclipse_duration_s=pred.eclipse_duration_s,
                          in_saa=pred.in_saa, saa_in_s=left(pred.to_saa_entry_s), saa_exit_in_s=left(pred.to_saa_exit_s),
                          beta_deg=pred.beta_deg, tle_age_s=pred.tle_age_s + since_s)
        else:
            values.update(dict.fromkeys(orbit_keys))
        values.update(zone_channels(r.temps_c if r else {}))
        values.update(temp_max_c=out.temp_max_c if out else None, temp_rate_c_per_min=self.state.temp_rate_c_per_min,
                      throttle_state=gov.state.value, throttle_steps=gov.steps_down)
        return values
