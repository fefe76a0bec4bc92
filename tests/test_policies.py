"""Pure decision logic: modes, thermal governor, power budget."""

import pytest

from flight.agent.modes import Conditions, Mode, commanded_refusal
from flight.power.policy import Admission, Battery, ModePower, PowerInputs, PowerSettings, decide
from flight.thermal.governor import Action, GovernorState, ThermalLimits, ThermalState, govern

OK = Conditions(battery_soc_pct=80, battery_floor_pct=30, temp_max_c=50, thermal_soft_limit_c=85, thermal_hard_limit_c=95)


def test_commanded_mode_changes_follow_the_ladder():
    assert commanded_refusal(Mode.SAFE, Mode.IDLE, OK) is None
    assert commanded_refusal(Mode.IDLE, Mode.COMPUTE, OK) is None
    assert commanded_refusal(Mode.COMPUTE, Mode.SAFE, OK) is None
    assert "command IDLE first" in commanded_refusal(Mode.SAFE, Mode.COMPUTE, OK)
    assert "not a commandable" in commanded_refusal(Mode.BOOT, Mode.IDLE, OK)


@pytest.mark.req("AGT-002")
def test_commanded_mode_changes_respect_battery_and_heat():
    low = Conditions(25, 30, 50, 85, 95)
    assert "below the floor" in commanded_refusal(Mode.SAFE, Mode.IDLE, low)
    assert commanded_refusal(Mode.IDLE, Mode.SAFE, low) is None  # going SAFE is always allowed
    warm = Conditions(80, 30, 88, 85, 95)
    assert commanded_refusal(Mode.SAFE, Mode.IDLE, warm) is None
    assert "soft limit" in commanded_refusal(Mode.IDLE, Mode.COMPUTE, warm)
    hot = Conditions(80, 30, 96, 85, 95)
    assert "hard limit" in commanded_refusal(Mode.SAFE, Mode.IDLE, hot)


LIMITS = ThermalLimits(soft_c=80, hard_c=95, hysteresis_c=5, min_dwell_s=30, lookahead_s=60, rate_window_s=30)


class Governor:
    """The pure governor with its state threaded through, as the control core does."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps
        self.state = GovernorState()

    @property
    def steps_down(self) -> int:
        return self.state.steps_down

    def update(self, now_s: float, temp_c: float):
        decision, self.state = govern(LIMITS, self.max_steps, self.state, now_s, temp_c)
        return decision


@pytest.mark.req("AGT-003")
def test_governor_steps_down_at_soft_limit_with_dwell_and_back_up_with_hysteresis():
    gov = Governor(max_steps=3)
    t = 0.0
    assert gov.update(t, 70).action is Action.HOLD
    d = gov.update(t := t + 1, 81)
    assert d.action is Action.STEP_DOWN and d.steps_down == 1 and d.state is ThermalState.THROTTLED
    assert gov.update(t := t + 10, 82).action is Action.HOLD  # dwell: no second step yet
    assert gov.update(t := t + 25, 82).action is Action.STEP_DOWN and gov.steps_down == 2
    for temp in (78, 77, 76):  # cooler but inside the hysteresis band: hold
        assert gov.update(t := t + 40, temp).action is Action.HOLD
    steady = [gov.update(t := t + 40, 74) for _ in range(3)]
    assert [d.action for d in steady] == [Action.STEP_UP, Action.STEP_UP, Action.HOLD]
    assert gov.steps_down == 0 and steady[-1].state is ThermalState.NOMINAL


def test_governor_acts_on_rate_of_rise_before_the_limit():
    gov = Governor(max_steps=3)
    decisions = [gov.update(float(t), 60 + 0.5 * t) for t in range(0, 20)]  # 30 °C/min, still below 80
    down = [d for d in decisions if d.action is Action.STEP_DOWN]
    assert down and down[0].temp_c < 80 and "rising" in down[0].reason
    assert down[0].rate_c_per_min == pytest.approx(30, rel=0.01)


@pytest.mark.req("AGT-003")
def test_governor_hard_limit_and_clear():
    gov = Governor(max_steps=3)
    d = gov.update(0, 96)
    assert d.action is Action.HARD_STOP and d.state is ThermalState.HARD_LIMIT and d.steps_down == 3
    assert gov.update(1, 93).action is Action.HOLD
    assert gov.update(2, 90).action is Action.HARD_CLEAR


def test_thermal_limits_are_checked():
    with pytest.raises(ValueError, match="soft limit"):
        ThermalLimits(soft_c=95, hard_c=90)


MODES = (ModePower("10W", 5.0, 10.5), ModePower("15W", 5.2, 14.5), ModePower("25W", 5.5, 22.0), ModePower("MAXN", 6.0, 30.0))
BAT = Battery(capacity_wh=100.0, charge_efficiency=1.0, discharge_efficiency=1.0)
SET = PowerSettings(floor_pct=30, margin_pct=5, training_reserve_pct=15)


def sunlit(soc, to_eclipse_s, solar_w=60.0):
    return PowerInputs(soc, solar_w, 10.0, False, to_eclipse_s, 36 * 60.0, None)


def test_full_battery_far_from_eclipse_runs_flat_out_and_trains():
    d = decide(sunlit(95, 50 * 60), MODES, BAT, SET)
    assert d.mode == "MAXN" and d.admission is Admission.ALL


def test_banking_before_eclipse_depends_on_time_left_to_charge():
    # 40 % charge, 30 W of sun, 10 W platform. The shadow costs (10 + 5) W x 36 min = 9 Wh, and
    # 35 % must remain: with an hour of sun left, 15W (14.5 W loaded) still banks +5.5 Wh, 25W drains.
    far = decide(sunlit(40, 60 * 60, solar_w=30.0), MODES, BAT, SET)
    assert far.mode == "15W" and far.admission is Admission.INFERENCE
    # Five minutes before the shadow no mode can make the charge up: compute stops, energy is banked.
    near = decide(sunlit(40, 5 * 60, solar_w=30.0), MODES, BAT, SET)
    assert near.admission is Admission.NONE and "eclipse in 5 min" in near.reason


@pytest.mark.req("AGT-020")
def test_plan_never_goes_below_floor_plus_margin():
    for soc in range(30, 101, 5):
        for to_ecl in (0, 60, 600, 1800, 3600):
            d = decide(sunlit(float(soc), float(to_ecl), solar_w=25.0), MODES, BAT, SET)
            if d.admission is not Admission.NONE:
                assert d.headroom_wh >= 0


def test_eclipse_with_little_charge_stops_compute():
    inputs = PowerInputs(38.0, 0.0, 10.0, True, None, 36 * 60.0, 30 * 60.0)
    d = decide(inputs, MODES, BAT, SET)
    assert d.admission is Admission.NONE and d.mode == "10W" and "no compute" in d.reason


@pytest.mark.req("AGT-020")
def test_inference_is_admitted_before_training():
    d = decide(sunlit(50, 50 * 60, solar_w=40.0), MODES, BAT, SET)
    assert d.admission is Admission.INFERENCE and "training needs" in d.reason


def test_operator_cap_and_unknown_battery():
    assert decide(sunlit(95, 3000), MODES, BAT, SET, cap_index=1).mode == "15W"
    d = decide(PowerInputs(None, None, 10.0, None, None, None, None), MODES, BAT, SET)
    assert d.admission is Admission.NONE and "unknown" in d.reason


@pytest.mark.req("AGT-020")
def test_a_battery_below_floor_plus_margin_in_sunlight_computes_nothing_until_it_is_back():
    """Sunlit at 25 % with a 30 % floor: the arrays would make it up before the shadow, but
    the tightest point is now. The rule ran 25W, 'keeping 39.3 % at the tightest point', where
    the forecast's plan and the receding-horizon plan idle; in eclipse the same. Training, too,
    waits until the charge it has now keeps its reserve."""
    below = decide(sunlit(25.0, 50 * 60, solar_w=60.0), MODES, BAT, SET)
    assert below.admission is Admission.NONE and below.mode == "10W" and below.headroom_wh < 0, below.reason
    assert "the charge now, 25.0 %, is below floor 30 %" in below.reason, below.reason  # not "would end at"
    shaded = decide(PowerInputs(34.0, 40.0, 10.0, True, None, 36 * 60.0, 600.0), MODES, BAT, SET)  # leaving it
    assert shaded.admission is Admission.NONE, shaded.reason
    forecast = PowerInputs(25.0, 60.0, 10.0, False, 50 * 60.0, 36 * 60.0, None,
                           tuple([60.0] * 50 + [0.0] * 36 + [60.0] * 10), 60.0)
    assert decide(forecast, MODES, BAT, SET).admission is Admission.NONE, "as the forecast's plan decides"
    above = decide(sunlit(45.0, 50 * 60, solar_w=60.0), MODES, BAT, SET)
    assert above.admission is Admission.INFERENCE and "training needs 50 %" in above.reason
    assert above.headroom_wh == pytest.approx(10.0)
