"""The control tick: read the board, decide how hard it may work, act, and say why.

Once per ``control_period_s`` of agent time: read the hardware layer, feed the thermal
governor, check the battery, ground contact and fault rate, run the power policy against
the orbit prediction, then set the power mode and compute admission. Each change is an
event with its reason, and the latest decision is in housekeeping.

The decisions themselves are pure functions (flight.thermal.governor, flight.power.policy,
flight.agent.modes); this module only gathers their inputs and applies their outputs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flight.agent.modes import Mode
from flight.hal.base import HalError, HalReading, PowerMode
from flight.link.definitions import RAIL_CHANNELS, ZONE_CHANNELS
from flight.orbit import Orbit, OrbitPrediction, predict_summary
from flight.power.policy import Admission, Battery, ModePower, PowerDecision, PowerInputs, PowerSettings, decide
from flight.thermal.governor import Action, ThermalGovernor, ThermalLimits

if TYPE_CHECKING:
    from flight.agent.agent import Agent

PREDICTION_PERIOD_S = 60.0  # re-propagate once a minute of agent time: cheap, and passes move slowly
PREDICTION_HORIZON_S = 24 * 3600.0  # SAA passes can be 10 h apart; 24 h costs ~4 ms on a PC


@dataclass
class ControlStatus:
    reading: HalReading | None = None
    eps: dict[str, float | None] = field(default_factory=dict)
    prediction: OrbitPrediction | None = None
    decision: PowerDecision | None = None
    admission: Admission = Admission.NONE
    throttle_state: str = "NOMINAL"
    throttle_steps: int = 0
    temp_max_c: float | None = None
    temp_rate_c_per_min: float | None = None


class Controller:
    def __init__(self, agent: "Agent", mode_power: dict[str, tuple[float, ...]]):
        """``mode_power``: power mode name -> (idle_w, loaded_w[, throughput_rel]), from the board profile."""
        self.agent = agent
        self.hal = agent.hal
        self.modes: tuple[PowerMode, ...] = self.hal.power_modes()
        # A mode whose power nothing states (MAXN on a board without a profile) costs the most
        # the plan can imagine: never chosen for being "free".
        self._mode_power = tuple(
            ModePower(m.name, *mode_power.get(m.name, (m.budget_w, m.budget_w) if m.budget_w else (math.inf, math.inf)))
            for m in self.modes
        )
        if any(mp.throughput_rel is None for mp in self._mode_power):  # no profile for some: rank by order
            self._mode_power = tuple(ModePower(mp.name, mp.idle_w, mp.loaded_w) for mp in self._mode_power)
        self.status = ControlStatus()
        self.governor = self._new_governor()
        self._missing: set[str] = set()
        self._faults: deque[float] = deque()
        self._contact_lost = False
        self._predicted_at_s = -math.inf
        self._announced: set[tuple[str, int]] = set()
        self.orbit: Orbit | None = None

    def _new_governor(self) -> ThermalGovernor:
        p = self.agent.params
        # The rate of rise needs several samples: keep at least three control periods in the window.
        limits = ThermalLimits(p["thermal_soft_limit_c"], p["thermal_hard_limit_c"], p["thermal_hysteresis_c"],
                               p["thermal_min_dwell_s"], p["thermal_lookahead_s"],
                               rate_window_s=max(30.0, 3.0 * self.agent.config.control_period_s))
        gov = ThermalGovernor(limits, max_steps=len(self.modes) - 1)
        old = getattr(self, "governor", None)
        if old is not None:  # new limits, same history: dwell and rate of rise carry on
            gov.adopt_state(old)
        return gov

    def limits_changed(self) -> None:
        """Parameters changed: rebuild the governor, keeping its state."""
        self.governor = self._new_governor()

    def set_orbit(self, orbit: Orbit | None) -> None:
        self.orbit = orbit
        self._predicted_at_s = -math.inf

    def record_fault(self, what: str) -> None:
        self._faults.append(self.agent.clock.monotonic_s())

    # --- the tick ----------------------------------------------------------------------

    def tick(self) -> None:
        agent = self.agent
        now_s = agent.clock.now_s()
        mono_s = agent.clock.monotonic_s()
        p = agent.params
        # Faults first: a tick that fails further down must still be able to go SAFE.
        while self._faults and self._faults[0] < mono_s - p["fault_window_s"]:
            self._faults.popleft()
        if len(self._faults) >= p["fault_limit"] and agent.mode is not Mode.SAFE:
            agent.emit("FAULTS_REPEATED", count=len(self._faults), window_s=p["fault_window_s"])
            self._faults.clear()
            agent.enter_safe("repeated faults")
        try:
            reading = self.hal.read()
        except Exception as exc:  # noqa: BLE001 - a sensor layer bug: no readings this tick, protections still run
            agent.emit("INTERNAL_ERROR", where="hal read", reason=f"{type(exc).__name__}: {exc}"[:200])
            self.record_fault("hal read")
            reading = HalReading({}, {}, None, None, None, missing=(f"all sensors: read failed ({type(exc).__name__})",))
        self.status.reading = reading
        self._report_missing(reading)
        read_eps = getattr(self.hal, "read_eps", None)
        eps: dict[str, float | None] = {"soc_pct": None, "bus_voltage_v": None, "solar_power_w": None}
        if read_eps is not None:
            try:
                eps = read_eps()
            except Exception as exc:  # noqa: BLE001
                agent.emit("INTERNAL_ERROR", where="eps read", reason=f"{type(exc).__name__}: {exc}"[:200])
                self.record_fault("eps read")
        self.status.eps = eps
        if self.orbit is not None and (mono_s - self._predicted_at_s >= PREDICTION_PERIOD_S or self._boundary_passed(now_s)):
            self._predict(now_s)
            self._predicted_at_s = mono_s

        # Heat first: the hard limit overrides everything.
        thermal_step = None
        temps = reading.temps_c
        self.status.temp_max_c = max(temps.values()) if temps else None
        if self.status.temp_max_c is not None:
            th = self.governor.update(mono_s, self.status.temp_max_c)
            self.status.temp_rate_c_per_min = th.rate_c_per_min
            self.status.throttle_state = th.state.value
            self.status.throttle_steps = th.steps_down
            if th.action is Action.HARD_STOP:
                agent.emit("THERMAL_HARD_LIMIT", reason=th.reason)
                agent.enter_safe(f"hard thermal limit: {th.reason}")
            elif th.action is Action.HARD_CLEAR:
                agent.emit("THERMAL_HARD_CLEAR", reason=th.reason)
            elif th.action in (Action.STEP_DOWN, Action.STEP_UP):
                thermal_step = th  # reported once the step's power mode is known, below

        soc = eps.get("soc_pct")
        if soc is not None and soc < p["battery_safe_pct"] and agent.mode is not Mode.SAFE:
            agent.emit("LOW_BATTERY", soc_pct=soc, limit_pct=p["battery_safe_pct"])
            agent.enter_safe(f"battery {soc:.1f} % below {p['battery_safe_pct']:.1f} %")

        age = agent.contact_age_s()
        if age > p["contact_timeout_s"]:
            if not self._contact_lost and agent.mode is not Mode.SAFE:
                agent.emit("CONTACT_LOST", age_s=age, timeout_s=p["contact_timeout_s"])
                agent.enter_safe("ground contact lost")
            self._contact_lost = True
        else:
            self._contact_lost = False

        self._apply_power(self._plan(eps))
        if thermal_step is not None:
            current = self.hal.current_power_mode()
            agent.emit("THERMAL_STEP_DOWN" if thermal_step.action is Action.STEP_DOWN else "THERMAL_STEP_UP",
                       power_mode=current.name if current else "?", reason=thermal_step.reason)
        self.answer_sim()

    def answer_sim(self) -> None:
        """Under HIL, tell the harness the load it must feed back into its models."""
        answer = getattr(self.hal, "answer", None)
        if answer is not None:
            compute = self.agent.mode is Mode.COMPUTE and self.status.admission is not Admission.NONE
            answer({"mode": self.agent.mode.value, "admission": self.status.admission.value,
                    "compute_duty": 1.0 if compute else 0.0})

    def _boundary_passed(self, now_s: float) -> bool:
        """True once an eclipse or SAA edge the last prediction knew of has gone by: predict again."""
        pred = self.status.prediction
        if pred is None:
            return False
        age = now_s - pred.time_unix_s
        edges = (pred.to_eclipse_entry_s, pred.to_eclipse_exit_s, pred.to_saa_entry_s, pred.to_saa_exit_s)
        return any(math.isfinite(e) and e - age <= 0 for e in edges)

    def _plan(self, eps: dict[str, float | None]) -> PowerDecision:
        p = self.agent.params
        pred = self.status.prediction
        age = self.agent.clock.now_s() - pred.time_unix_s if pred else 0.0

        def finite(v: float | None) -> float | None:  # a time from the prediction, aged to now
            return max(0.0, v - age) if v is not None and math.isfinite(v) else None

        inputs = PowerInputs(
            soc_pct=eps.get("soc_pct"),
            solar_power_w=eps.get("solar_power_w"),
            platform_load_w=self.agent.config.platform_load_w,
            in_eclipse=pred.in_eclipse if pred else None,
            time_to_eclipse_s=finite(pred.to_eclipse_entry_s) if pred else None,
            eclipse_duration_s=pred.eclipse_duration_s if pred and math.isfinite(pred.eclipse_duration_s) else None,
            time_to_sun_s=finite(pred.to_eclipse_exit_s) if pred and pred.in_eclipse else None,
        )
        if pred is not None and not pred.in_eclipse and inputs.time_to_eclipse_s is None:
            # Sunlit with no eclipse in the horizon (high beta): plan to the horizon's end with no shadow.
            inputs = PowerInputs(**{**inputs.__dict__, "time_to_eclipse_s": PREDICTION_HORIZON_S,
                                    "eclipse_duration_s": 0.0})
        if eps.get("soc_pct") is None and self.agent.config.bench_supply:
            cap = self._operator_cap() - self.governor.steps_down if self.status.temp_max_c is not None else 0
            cap = max(0, cap)
            mode = self._mode_power[cap]
            return PowerDecision(mode.name, cap, Admission.ALL, mode.loaded_w,
                                 "bench supply (config): no battery to protect, only heat and the operator cap", 0.0)
        settings = PowerSettings(p["battery_floor_pct"], p["battery_margin_pct"], p["training_reserve_pct"])
        battery = Battery(self.agent.config.battery_capacity_wh)
        # No temperature at all means no thermal protection: run the lowest mode until one reads.
        if self.status.temp_max_c is None:
            return decide(inputs, self._mode_power, battery, settings, 0)
        # Each thermal step takes one level off the mode the energy plan would run: a step always
        # lowers the power actually drawn, whatever the modes above it.
        plan = decide(inputs, self._mode_power, battery, settings, self._operator_cap())
        if self.governor.steps_down:
            plan = decide(inputs, self._mode_power, battery, settings, max(0, plan.mode_index - self.governor.steps_down))
        return plan

    def _operator_cap(self) -> int:
        names = [m.name for m in self.modes]
        cap = self.agent.power_mode_cap
        return names.index(cap) if cap in names else len(names) - 1

    def _apply_power(self, decision: PowerDecision) -> None:
        agent = self.agent
        self.status.decision = decision
        if agent.mode is Mode.COMPUTE:
            target, admission = decision.mode, decision.admission
            reason = decision.reason
        else:
            target, admission = self.modes[0].name, Admission.NONE
            reason = f"{agent.mode.value}: lowest power mode, no compute"
        current = self.hal.current_power_mode()
        if current is None or current.name != target:
            try:
                self.hal.set_power_mode(target)
                agent.emit("POWER_MODE_CHANGED", old=current.name if current else "?", new=target, reason=reason[:200])
            except HalError as exc:
                agent.emit("POWER_MODE_FAILED", name=target, reason=str(exc)[:200])
                self.record_fault("power mode")
        if admission is not self.status.admission:
            agent.emit("ADMISSION_CHANGED", old=self.status.admission.value, new=admission.value, reason=reason[:200])
            self.status.admission = admission
        names = [m.name for m in self.modes]
        index = names.index(target) if target in names else 0
        reading = self.status.reading
        agent.compute.admit(admission.value, index, len(names), reading.board_power_w if reading else None, reason)

    def _predict(self, now_s: float) -> None:
        try:
            pred = predict_summary(self.orbit, now_s, PREDICTION_HORIZON_S)
        except Exception as exc:  # noqa: BLE001 - a bad TLE or decayed orbit must not stop control
            self.status.prediction = None
            self.agent.emit("INTERNAL_ERROR", where="orbit prediction", reason=f"{type(exc).__name__}: {exc}"[:200])
            self.record_fault("orbit prediction")
            return
        self.status.prediction = pred
        for kind, event, t_in, dur in (
            ("eclipse", "ECLIPSE_PREDICTED", pred.to_eclipse_entry_s, pred.eclipse_duration_s),
            ("saa", "SAA_PREDICTED", pred.to_saa_entry_s, pred.saa_duration_s),
        ):
            self._announced = {k for k in self._announced if k[1] * 60 >= now_s - 3600}  # forget old passes
            if math.isfinite(t_in):
                key = (kind, int((now_s + t_in) // 60))  # one announcement per pass
                if key not in self._announced:
                    self._announced.add(key)
                    self.agent.emit(event, in_s=t_in, duration_s=dur if math.isfinite(dur) else 0.0)

    def _report_missing(self, reading: HalReading) -> None:
        now_missing = set(reading.missing)
        for what in sorted(now_missing - self._missing):
            self.agent.emit("SENSOR_MISSING", what=what[:200])
        for what in sorted(self._missing - now_missing):
            self.agent.emit("SENSOR_RESTORED", what=what[:200])
        self._missing = now_missing

    # --- housekeeping ------------------------------------------------------------------

    def power_hk(self) -> dict[str, Any]:
        st = self.status
        r = st.reading
        pred = st.prediction
        d = st.decision
        mode = self.hal.current_power_mode()
        out: dict[str, Any] = {
            "battery_soc_pct": st.eps.get("soc_pct"),
            "bus_voltage_v": st.eps.get("bus_voltage_v"),
            "solar_power_w": st.eps.get("solar_power_w"),
            "eps_source": "sim" if hasattr(self.hal, "read_eps") else (
                "bench supply (config)" if self.agent.config.bench_supply else "none"),
            "board_power_w": r.board_power_w if r else None,
            "power_mode": mode.name if mode else None,
            "power_mode_cap": self.agent.power_mode_cap,
            "power_budget_w": d.budget_w if d else None,
            "admission": st.admission.value,
            "power_reason": (d.reason if d else "")[:200],
            "energy_headroom_wh": d.headroom_wh if d else None,
        }
        rails = r.rails if r else {}
        for rail, channel in RAIL_CHANNELS.items():
            out[channel] = rails[rail].power_w if rail in rails else None
        if pred is not None:
            out.update(in_eclipse=pred.in_eclipse, eclipse_in_s=pred.to_eclipse_entry_s,
                       eclipse_exit_in_s=pred.to_eclipse_exit_s, eclipse_duration_s=pred.eclipse_duration_s,
                       in_saa=pred.in_saa, saa_in_s=pred.to_saa_entry_s, saa_exit_in_s=pred.to_saa_exit_s,
                       beta_deg=pred.beta_deg, tle_age_s=pred.tle_age_s)
        return out

    def thermal_hk(self) -> dict[str, Any]:
        st = self.status
        temps = st.reading.temps_c if st.reading else {}
        out: dict[str, Any] = {ch: temps.get(f"{zone}-thermal", temps.get(zone)) for zone, ch in ZONE_CHANNELS.items()}
        out.update(temp_max_c=st.temp_max_c, temp_rate_c_per_min=st.temp_rate_c_per_min,
                   throttle_state=st.throttle_state, throttle_steps=st.throttle_steps)
        return out
