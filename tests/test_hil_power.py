"""The harness's array and the agent's belief about it (issue 13, items 1-3), flown in lockstep
with the real agent as a subprocess: the profile is the truth, the agent's model is wrong the
way [belief] says, and the plan on its forecast keeps the floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil.loop import ClosedLoop
from hil.profiles.generate import load_or_generate
from hil.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "hil" / "scenarios"


@pytest.mark.req("HIL-010")
def test_the_scenario_array_is_the_truth_and_the_agent_gets_a_wrong_model_of_it(tmp_path):
    sc = load_scenario(SCENARIOS / "body_fixed_scarce.toml")
    profile = load_or_generate(sc)
    solar = np.asarray(profile.columns["solar_power_w"])
    assert profile.metadata["spacecraft"]["array_pointing"] == "body_fixed"
    assert np.mean(solar < 0.5) > 0.45, "a zenith panel is dark for about half the orbit, not only in umbra"
    loop = ClosedLoop(sc, tmp_path)
    believed = loop.agent_config()["array"]
    assert believed["efficiency"] == pytest.approx(0.30 * 1.10) and believed["degradation_per_year"] == 0.0
    assert believed["pointing"] == "body_fixed" and believed["panels"] == [{"normal": [1.0, 0.0, 0.0], "area_m2": 0.25}]
    plain = ClosedLoop(load_scenario(SCENARIOS / "sso_one_orbit.toml"), tmp_path / "plain")
    assert "array" not in plain.agent_config(), "no [array]: no model, the agent plans on eclipses as before"


@pytest.mark.parametrize("raw, key", [
    ({"array": {"pointing": "gimbal"}}, "array.pointing"),
    ({"array": {"normal_orbit_frame": [0, 0, 0]}}, "array.normal_orbit_frame"),
    ({"array": {"efficency": 0.3}}, "array.efficency"),
    ({"belief": {"efficiency_error_pct": 80}}, "belief.efficiency_error_pct"),
])
def test_array_and_belief_tables_are_strict(raw, key):
    base = {"orbit": {"alt_km": 550.0, "sun_synchronous": True, "ltan_h": 22.5}, "duration_s": 600}
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        parse_scenario({**base, **raw})


@pytest.mark.req("HIL-010", "AGT-060")
def test_two_scarce_orbits_on_the_forecast_keep_the_floor_and_the_same_seed_flies_the_same(tmp_path):
    sc = load_scenario(SCENARIOS / "body_fixed_scarce.toml")
    a = ClosedLoop(sc, tmp_path / "a").run()
    b = ClosedLoop(sc, tmp_path / "b").run()
    trace = a.trace.arrays()
    assert trace["soc_pct"].min() >= 30.0 and trace["work"][-1] > 0
    reasons = [e.get("args", {}).get("reason", "") for e in a.events if e["name"] == "ADMISSION_CHANGED"]
    assert any("(forecast)" in r for r in reasons), reasons
    np.testing.assert_array_equal(trace["soc_pct"], b.trace.arrays()["soc_pct"])
