"""The control tick as a pure function: every decision tested directly, without an agent."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flight.agent.control_core import ControlInputs, ControlState, Emit, control_step, report_sensors, sensor_key
from flight.hal.base import EpsReading, HalReading
from flight.link.definitions import DICTIONARY, Admission, EpsSource, Mode, ThermalState
from flight.power.policy import Battery, ModePower

PARAMS = {p.name: p.default for p in DICTIONARY.parameters}
MODES = (ModePower("10W", 5.0, 10.5, 0.4), ModePower("15W", 5.2, 14.5, 0.6), ModePower("25W", 5.5, 22.0, 0.85),
         ModePower("MAXN", 6.0, 30.0, 1.0))


def inputs(**changes) -> ControlInputs:
    base = ControlInputs(
        now_s=1_795_000_000.0, mono_s=1000.0, mode=Mode.COMPUTE,
        reading=HalReading({"tj-thermal": 50.0}, {}, 12.0, 10.0, 30.0),
        eps=EpsReading(95.0, 8.2, 80.0), eps_source=EpsSource.SIM, prediction=None, contact_age_s=1.0,
        fault_count=0, params=PARAMS, modes=MODES, operator_cap=len(MODES) - 1, battery=Battery(100.0),
        platform_load_w=10.0,
    )
    return replace(base, **changes)


def names(out) -> list[str]:
    return [a.name if isinstance(a, Emit) else f"SAFE: {a.reason}" for a in out.actions]


@pytest.mark.req("AGT-020")
def test_a_full_battery_in_compute_runs_the_most_productive_mode_and_trains():
    out = control_step(inputs(), ControlState())
    assert out.actions == () and out.mode is Mode.COMPUTE
    assert out.admission is Admission.ALL and out.power_mode == "MAXN" and out.power_mode_index == 3
    assert out.after == (Emit("ADMISSION_CHANGED", {"old": "NONE", "new": "ALL", "reason": out.reason}),)
    again = control_step(inputs(mono_s=1001.0), out.state)
    assert again.after == ()  # reported on a change only


@pytest.mark.req("AGT-020")
def test_safe_and_idle_run_the_lowest_mode_and_say_what_to_do():
    for mode, hint in ((Mode.SAFE, "SET_MODE mode=IDLE, then mode=COMPUTE"), (Mode.IDLE, "SET_MODE mode=COMPUTE")):
        out = control_step(inputs(mode=mode), ControlState())
        assert out.power_mode == "10W" and out.admission is Admission.NONE and hint in out.reason


@pytest.mark.req("AGT-003")
def test_hard_limit_goes_safe_once_and_clears_with_hysteresis():
    hot = inputs(reading=HalReading({"tj-thermal": 96.0}, {}, None, None, None))
    out = control_step(hot, ControlState())
    assert names(out) == ["THERMAL_HARD_LIMIT", "SAFE: hard thermal limit: 96.0 °C at or above hard limit 95.0 °C"]
    assert out.mode is Mode.SAFE and out.power_mode == "10W" and out.admission is Admission.NONE
    assert out.state.governor.state is ThermalState.HARD_LIMIT
    still = control_step(replace(hot, mode=Mode.SAFE, mono_s=1001.0), out.state)
    assert still.actions == ()  # latched: no second event, already SAFE
    cool = control_step(inputs(mode=Mode.SAFE, mono_s=1002.0, reading=HalReading({"tj-thermal": 89.0}, {}, None, None,
                                                                                   None)), still.state)
    assert names(cool) == ["THERMAL_HARD_CLEAR"]


@pytest.mark.req("AGT-021")
def test_each_thermal_step_takes_one_level_off_the_energy_plan():
    state = ControlState()
    warm = HalReading({"tj-thermal": 86.0}, {}, None, None, None)
    out = control_step(inputs(reading=warm), state)
    assert out.thermal.action.value == "STEP_DOWN" and out.power_mode == "25W"
    later = control_step(inputs(reading=warm, mono_s=1000.0 + PARAMS["thermal_min_dwell_s"]), out.state)
    assert later.power_mode == "15W" and later.state.governor.steps_down == 2


@pytest.mark.req("AGT-003")
def test_at_the_hard_limit_a_mode_out_of_safe_goes_safe_again_though_the_limit_is_latched():
    """Found in audit: only the latch's first crossing went SAFE; IDLE commanded at 92 °C, then 96 °C, stayed."""
    out = control_step(inputs(reading=HalReading({"tj-thermal": 96.0}, {}, None, None, None)), ControlState())
    cooling = control_step(inputs(mode=Mode.IDLE, mono_s=1001.0,
                                  reading=HalReading({"tj-thermal": 92.0}, {}, None, None, None)), out.state)
    assert cooling.state.governor.hard and cooling.actions == ()  # below the limit, latched: nothing to do
    hot = control_step(inputs(mode=Mode.IDLE, mono_s=1002.0,
                              reading=HalReading({"tj-thermal": 96.5}, {}, None, None, None)), cooling.state)
    assert names(hot) == ["THERMAL_HARD_LIMIT", "SAFE: hard thermal limit: 96.5 °C at or above hard limit 95.0 °C"]
    assert hot.mode is Mode.SAFE and hot.admission is Admission.NONE


@pytest.mark.req("AGT-021")
def test_with_a_forecast_each_thermal_step_lowers_the_mode_in_force():
    """Found in audit: with a forecast each step came off the operator's cap, so a plan running below it kept its
    mode through a STEP_DOWN (25W at MAXN's cap: the first step lowered nothing)."""
    sunlit = dict(eps=EpsReading(90.0, 8.2, 25.0), solar_forecast_w=tuple([33.0] * 72), forecast_step_s=120.0,
                  plan_time_limit_s=None)
    cool = control_step(inputs(**sunlit, reading=HalReading({"tj-thermal": 60.0}, {}, None, None, None)),
                        ControlState())
    assert cool.power_mode == "25W"  # the plan's, under MAXN's cap
    warm = control_step(inputs(**sunlit, mono_s=1010.0, now_s=1_795_000_010.0,
                               reading=HalReading({"tj-thermal": 86.0}, {}, None, None, None)), cool.state)
    assert warm.thermal.action.value == "STEP_DOWN" and warm.power_mode == "15W"
    warmer = control_step(inputs(**sunlit, mono_s=1040.0, now_s=1_795_000_040.0,
                                 reading=HalReading({"tj-thermal": 87.0}, {}, None, None, None)), warm.state)
    assert warmer.state.governor.steps_down == 2 and warmer.power_mode == "10W"


@pytest.mark.req("AGT-004")
def test_low_battery_and_lost_contact_go_safe_once():
    out = control_step(inputs(eps=EpsReading(15.0, 7.0, 0.0), contact_age_s=1e6), ControlState())
    # The first reason wins; a loss of contact found already SAFE is noted, not reported again.
    assert names(out) == ["LOW_BATTERY", "SAFE: battery 15.0 % below 20.0 %"] and out.state.contact_lost
    lost = control_step(inputs(mode=Mode.IDLE, contact_age_s=1e6), ControlState())
    assert names(lost) == ["CONTACT_LOST", "SAFE: ground contact lost"]
    again = control_step(inputs(mode=Mode.IDLE, contact_age_s=2e6), lost.state)
    assert "CONTACT_LOST" not in names(again)  # once per loss
    back = control_step(inputs(mode=Mode.IDLE, contact_age_s=1.0), again.state)
    assert not back.state.contact_lost


@pytest.mark.req("AGT-005")
def test_repeated_faults_go_safe_and_reset_the_count():
    out = control_step(inputs(fault_count=PARAMS["fault_limit"]), ControlState())
    assert names(out)[:2] == ["FAULTS_REPEATED", "SAFE: repeated faults"] and out.clear_faults
    assert not control_step(inputs(fault_count=PARAMS["fault_limit"] - 1), ControlState()).clear_faults


@pytest.mark.req("AGT-022")
def test_missing_sensors_are_reported_once_each_way():
    gone = inputs(reading=HalReading({"tj-thermal": 50.0}, {}, None, None, None, missing=("gpu-thermal: read empty",)))
    out = control_step(gone, ControlState())
    assert out.actions == (Emit("SENSOR_MISSING", {"what": "gpu-thermal: read empty"}),)
    assert control_step(gone, out.state).actions == ()
    restore_s = PARAMS["sensor_restore_s"]
    back = control_step(inputs(mono_s=1001.0), out.state)
    assert back.actions == ()  # read again, not yet for sensor_restore_s
    held = control_step(inputs(mono_s=1001.0 + restore_s), back.state)
    assert held.actions == (Emit("SENSOR_RESTORED", {"what": "gpu-thermal: read empty", "dropouts": 0}),)
    assert held.state.sensors_down == ()
    at_once = control_step(inputs(mono_s=1001.0, params={**PARAMS, "sensor_restore_s": 0.0}), out.state)
    assert at_once.actions == (Emit("SENSOR_RESTORED", {"what": "gpu-thermal: read empty", "dropouts": 0}),)


@pytest.mark.req("AGT-065", "AGT-022")
def test_a_flapping_sensor_is_said_once_each_way_and_its_dropouts_counted():
    """A zone that reads one tick in two, its bad value in the note each time different (an audit: two
    events a tick, for as long as it flapped): one SENSOR_MISSING, then one SENSOR_RESTORED once it has
    read for sensor_restore_s, counting the dropouts between. The tick still uses what it reads."""
    restore_s = PARAMS["sensor_restore_s"]
    state, said, t = ControlState(), [], 1000.0
    for i in range(200):
        bad = i % 2 == 0
        reading = HalReading({"tj-thermal": 50.0}, {}, None, None, None,
                             missing=(f"gpu-thermal: no valid value ({1e6 + i!r})", "cpu_pct: first sample")
                             if bad else ())
        out = control_step(inputs(mono_s=t, reading=reading), state)
        said += [a for a in out.actions if isinstance(a, Emit)]
        state, t = out.state, t + 1.0
    assert [e.name for e in said] == ["SENSOR_MISSING", "SENSOR_MISSING"]
    assert {e.args["what"] for e in said} == {"gpu-thermal: no valid value (1000000.0)", "cpu_pct: first sample"}
    for _ in range(int(restore_s) + 1):
        out = control_step(inputs(mono_s=t), state)
        said += [a for a in out.actions if isinstance(a, Emit)]
        state, t = out.state, t + 1.0
    restored = [e.args for e in said if e.name == "SENSOR_RESTORED"]
    assert restored == [{"what": "cpu_pct: first sample", "dropouts": 99},
                        {"what": "gpu-thermal: no valid value (1000000.0)", "dropouts": 99}]
    assert state.sensors_down == ()


@pytest.mark.req("AGT-065")
def test_a_sensor_back_for_less_than_the_restore_time_is_one_dropout_and_the_wait_starts_again():
    down, said = report_sensors(("tj-thermal: read failed (EIO)",), (), 0.0, 60.0)
    assert [e.name for e in said] == ["SENSOR_MISSING"]
    down, said = report_sensors((), down, 10.0, 60.0)  # back at 10 s
    down, said = report_sensors(("tj-thermal: read failed (ETIMEDOUT)",), down, 65.0, 60.0)  # gone at 65 s
    assert said == [] and down[0].dropouts == 1 and down[0].good_since_s is None
    down, said = report_sensors((), down, 70.0, 60.0)
    down, said = report_sensors((), down, 129.0, 60.0)
    assert said == []  # 59 s since it came back the second time
    down, said = report_sensors((), down, 130.0, 60.0)
    assert said == [Emit("SENSOR_RESTORED", {"what": "tj-thermal: read failed (EIO)", "dropouts": 1})] and down == ()
    assert sensor_key("ina3221 1-0040 in1: label unreadable: x: y") == "ina3221 1-0040 in1"
    assert sensor_key("no colon here") == "no colon here"


@pytest.mark.req("AGT-014")
def test_without_a_battery_reading_the_eps_source_decides():
    no_eps = control_step(inputs(eps=EpsReading(), eps_source=EpsSource.NONE), ControlState())
    assert no_eps.admission is Admission.NONE and "--bench-supply" in no_eps.reason
    bench = control_step(inputs(eps=EpsReading(), eps_source=EpsSource.BENCH, operator_cap=1), ControlState())
    assert bench.admission is Admission.ALL and bench.power_mode == "15W"  # the operator's cap still holds
    harness_silent = control_step(inputs(eps=EpsReading(), eps_source=EpsSource.SIM), ControlState())
    assert harness_silent.admission is Admission.NONE and "battery state unknown" in harness_silent.reason


@pytest.mark.req("AGT-020")
def test_no_temperature_runs_the_lowest_mode():
    out = control_step(inputs(reading=HalReading({}, {}, None, None, None)), ControlState())
    assert out.power_mode == "10W" and out.thermal is None and out.temp_max_c is None


def test_the_step_is_pure():
    params = dict(PARAMS)
    reading = HalReading({"tj-thermal": 86.0}, {}, None, None, None, missing=("gpu-thermal: gone",))
    inp = inputs(reading=reading, params=params)
    first = control_step(inp, ControlState())
    second = control_step(inp, ControlState())
    assert second == first  # same inputs, same outputs: no state hidden anywhere
    assert params == PARAMS and reading.temps_c == {"tj-thermal": 86.0}  # what it was given is untouched
    assert control_step(inp, first.state) != first  # the state it returned is what carries over
