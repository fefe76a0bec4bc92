"""The harness's array and the agent's belief about it (issue 13, items 1-3), flown in lockstep
with the real agent as a subprocess: the profile is the truth, the agent's model is wrong the
way [belief] says, and the plan on its forecast keeps the floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flight.orbit import Orbit
from hil.loop import ClosedLoop
from hil.physics import array_power_w
from hil.profiles import SHIPPED, generate_profile, orbit_from_description
from hil.profiles.generate import SpacecraftParams, load_or_generate, regenerate
from hil.report import evaluate
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
    ({"array": {"pointing": "body_fixed", "attitude": "sunward"}}, "array.attitude"),
    ({"array": {"attitude": "sun"}}, "array.attitude"),  # sun_tracking: the attitude would be ignored
    ({"array": {"pointing": "body_fixed", "panels": [{"normal": [1, 0, 0]}]}}, "array.panels[0].area_m2"),
    ({"array": {"pointing": "body_fixed", "panels": [{"normal": [1, 0, 0], "area_m2": 0.1},
                                                     {"normal": [0, 0, 0], "area_m2": 0.1}]}}, "array.panels[1].normal"),
    ({"array": {"pointing": "body_fixed", "panels": [{"area_m2": 0.1}]}}, "array.panels[0].normal"),
    ({"array": {"pointing": "body_fixed", "panels": [{"normal": [1, 0, 0], "area_m2": 0}]}}, "array.panels[0].area_m2"),
    ({"array": {"pointing": "body_fixed", "panels": [{"normal": [1, 0], "area_m2": 0.1}]}}, "array.panels[0].normal"),
    ({"array": {"pointing": "body_fixed", "panels": [{"nromal": [1, 0, 0], "area_m2": 0.1}]}},
     "array.panels[0].nromal"),
    ({"array": {"pointing": "body_fixed", "panels": []}}, "array.panels"),
    ({"array": {"pointing": "body_fixed", "panels": [[1, 0, 0]]}}, "array.panels[0]"),
    ({"array": {"pointing": "body_fixed", "normal_orbit_frame": [1, 0, 0],
                "panels": [{"normal": [1, 0, 0], "area_m2": 0.1}]}}, "array.normal_orbit_frame"),
    ({"array": {"pointing": "body_fixed", "area_m2": 0.2,
                "panels": [{"normal": [1, 0, 0], "area_m2": 0.1}]}}, "array.area_m2"),
    ({"array": {"pointing": "body_fixed", "attitude": "sun", "normal_orbit_frame": [1, 0, 0]}},
     "array.normal_orbit_frame"),  # the orbit frame is the body frame only under nadir
    ({"array": {"normal_orbit_frame": [0, 0, 0]}}, "array.normal_orbit_frame"),
    ({"array": {"efficency": 0.3}}, "array.efficency"),
    ({"array": {}, "belief": {"efficiency_error_pct": 80}}, "belief.efficiency_error_pct"),
    # no [array]: no model for them to make wrong
    ({"belief": {"efficiency_error_pct": 8}}, "belief.efficiency_error_pct"),
    ({"belief": {"degradation_known": True}}, "belief.degradation_known"),
])
def test_array_and_belief_tables_are_strict(raw, key):
    base = {"orbit": {"alt_km": 550.0, "sun_synchronous": True, "ltan_h": 22.5}, "duration_s": 600}
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**base, **raw}, "t.toml")
    assert caught.value.key == key and str(caught.value).startswith(f"t.toml: {key}: "), str(caught.value)


def test_the_array_table_gives_the_generator_its_attitude_and_panels(tmp_path):
    base = {"orbit": {"alt_km": 550.0, "sun_synchronous": True, "ltan_h": 22.5}, "duration_s": 600}
    sc = parse_scenario({**base, "array": {"pointing": "body_fixed", "attitude": "inertial", "panels": [
        {"normal": [0, 0, 1], "area_m2": 0.1}, {"normal": [0, 1, 1], "area_m2": 0.2}]}})
    craft = SpacecraftParams(**sc.array)
    assert craft.array_attitude == "inertial"
    assert craft.panels == (((0.0, 0.0, 1.0), 0.1), ((0.0, 1.0, 1.0), 0.2))
    shorthand = SpacecraftParams(**parse_scenario({**base, "array": {"pointing": "body_fixed", "area_m2": 0.3,
                                                                     "normal_orbit_frame": [0, 1, 0]}}).array)
    assert shorthand.array_attitude == "nadir" and shorthand.panels == (((0.0, 1.0, 0.0), 0.3),)
    assert ClosedLoop(sc, tmp_path).believed_array()["panels"] == [{"normal": [0.0, 0.0, 1.0], "area_m2": 0.1},
                                                                   {"normal": [0.0, 1.0, 1.0], "area_m2": 0.2}]


@pytest.mark.parametrize("kwargs, field", [
    ({"array_attitude": "sunward"}, "array_attitude"),
    ({"array_panels": [((1.0, 0.0, 0.0), 0.0)]}, r"array_panels\[0\]\.area_m2"),
    ({"array_panels": [((1.0, 0.0, 0.0), 0.1), ((0.0, 0.0, 0.0), 0.1)]}, r"array_panels\[1\]\.normal"),
    ({"array_panels": [((1.0, 0.0), 0.1)]}, r"array_panels\[0\]\.normal"),
    ({"array_panels": [(1.0, 0.0, 0.0)]}, r"array_panels\[0\]"),
    ({"array_panels": [{"normal": (1.0, 0.0, 0.0)}]}, r"array_panels\[0\]"),
    ({"array_panels": [((1.0, 0.0, 0.0), 0.1)], "array_area_m2": 0.5}, "array_panels: give the panels or"),
    ({"array_normal_orbit_frame": (0.0, 0.0, 0.0)}, "array_normal_orbit_frame"),
])
def test_spacecraft_params_check_the_panels_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"SpacecraftParams\\.{field}"):
        SpacecraftParams(**kwargs)


def test_the_profile_records_the_attitude_and_panels_and_regenerates_from_them():
    orbit, start, description = orbit_from_description(SHIPPED["sso_550"])
    panels = (((1.0, 0.0, 0.0), 0.1), ((0.0, 1.0, 1.0), 0.05))
    craft = SpacecraftParams(array_pointing="body_fixed", array_attitude="sun", array_panels=panels)
    profile = generate_profile(orbit, start, 1200.0, 10.0, craft, stations=[], orbit_description=description)
    meta = profile.metadata["spacecraft"]
    assert meta["array_attitude"] == "sun"
    assert meta["array_panels"] == [{"normal": [1.0, 0.0, 0.0], "area_m2": 0.1},
                                    {"normal": [0.0, 1.0, 1.0], "area_m2": 0.05}]
    assert "array_area_m2" not in meta and "array_normal_orbit_frame" not in meta, "unused with panels: not recorded"
    longer = regenerate(profile, 2400.0)
    assert longer.metadata["spacecraft"] == meta
    np.testing.assert_array_equal(longer.columns["solar_power_w"][:121], profile.columns["solar_power_w"])
    # The old one-panel fields: recorded as they were, and as the one panel they make.
    old = generate_profile(orbit, start, 600.0, 10.0, SpacecraftParams(array_pointing="body_fixed", array_area_m2=0.3,
                           array_normal_orbit_frame=(0.0, 1.0, 0.0)), stations=[], orbit_description=description)
    meta = old.metadata["spacecraft"]
    assert meta["array_area_m2"] == 0.3 and meta["array_normal_orbit_frame"] == [0.0, 1.0, 0.0]
    assert meta["array_attitude"] == "nadir" and meta["array_panels"] == [{"normal": [0.0, 1.0, 0.0], "area_m2": 0.3}]
    np.testing.assert_array_equal(regenerate(old, 1200.0).columns["solar_power_w"][:61], old.columns["solar_power_w"])
    # A run not a whole number of the profile's steps: its end is covered (found in review: the last sample fell
    # short, and the run failed at its last step once Profile.at held to the profile's span)
    ragged = regenerate(old, 1203.0)
    assert ragged.duration_s == 1210.0 and ragged.at(1203.0)["time_s"] == ragged.start_s + 1203.0


@pytest.mark.req("HIL-007")
@pytest.mark.parametrize("edit, says", [
    (lambda m: {**m, "stations": [{"name": "x", "lat_deg": 0, "lon_deg": 0, "bogus": 1}]},
     "metadata.stations[0] cannot be made again"),
    (lambda m: {**m, "spacecraft": {**m["spacecraft"], "array_efficiency": 2.0}}, "metadata.spacecraft"),
    (lambda m: {**m, "step_s": "ten"}, "metadata.step_s"),
    (lambda m: {**m, "step_s": -10.0}, "metadata.step_s"),
])
def test_metadata_a_profile_cannot_be_made_again_from_is_refused_naming_it(edit, says):
    """Found in an audit: a hand-edited profile's metadata (a station's unknown key, an efficiency of 2, a
    step of "ten") raised TypeError or ValueError when the scenario asked for a longer run: an internal error
    (exit 3), naming nothing."""
    from hil.profiles import Profile, ProfileError

    orbit, start, description = orbit_from_description(SHIPPED["sso_550"])
    profile = generate_profile(orbit, start, 600.0, 10.0, SpacecraftParams(), stations=[],
                               orbit_description=description)
    edited = Profile(profile.columns, edit(dict(profile.metadata)))
    with pytest.raises(ProfileError, match=says.replace("[", r"\[").replace("]", r"\]")):
        regenerate(edited, 1200.0)
    assert Profile(profile.columns, {**profile.metadata, "orbit": ["a"]}).tle() is None  # not a table: no orbit


@pytest.mark.req("HIL-010", "AGT-060")
def test_two_scarce_orbits_on_the_forecast_keep_the_floor_and_the_same_seed_flies_the_same(tmp_path):
    """The shipped scenario's two orbits; the same seed flies the first orbit again (a run of that orbit alone, on
    the profile the first run flew, its power modes set on the forecast as they change), charge for charge."""
    import dataclasses

    from hil.profiles import write_profile

    sc = load_scenario(SCENARIOS / "body_fixed_scarce.toml")
    first = ClosedLoop(sc, tmp_path / "a")
    a = first.run()
    flown = write_profile(first.profile, tmp_path / "flown.parquet")
    b = ClosedLoop(dataclasses.replace(sc, profile=flown, orbit=None, duration_s=5760.0), tmp_path / "b").run()
    trace = a.trace.arrays()
    assert trace["soc_pct"].min() >= 30.0 and trace["work"][-1] > 0
    reasons = [e.get("args", {}).get("reason", "") for e in a.events if e["name"] == "ADMISSION_CHANGED"]
    assert any("(forecast)" in r for r in reasons), reasons
    again = b.trace.arrays()
    assert len(again["soc_pct"]) == 577 and len(set(again["power_mode"])) > 1
    np.testing.assert_array_equal(trace["soc_pct"][:577], again["soc_pct"])


@pytest.mark.req("HIL-010", "AGT-060")
def test_a_sun_pointing_spacecraft_with_three_panels_flies_on_its_forecast(tmp_path):
    sc = load_scenario(SCENARIOS / "sun_pointing_panels.toml")
    loop = ClosedLoop(sc, tmp_path)
    cols = loop.profile.columns
    meta = loop.profile.metadata["spacecraft"]
    assert meta["array_attitude"] == "sun" and len(meta["array_panels"]) == 3
    # The truth by hand: +X is on the Sun, so each panel sees n̂·x̂ = n_x/|n|, clipped at 0 (the
    # back-facing panel gives nothing), whatever the orbit does.
    base_w_m2 = 1361.0 * 0.30 * 0.98**2.0
    by_hand = base_w_m2 * np.clip(cols["shadow_factor"], 0, 1) * (0.12 * 1.0 + 0.08 / np.sqrt(2.0) + 0.05 * 0.0)
    np.testing.assert_allclose(cols["solar_power_w"], by_hand, rtol=1e-9, atol=1e-9)
    # And by the harness's geometry, with the velocity from the profile's own TLE.
    r, v = Orbit.from_tle(*loop.profile.tle()).propagate(np.asarray(cols["time_s"]))
    sun = np.stack([cols["sun_x"], cols["sun_y"], cols["sun_z"]], axis=-1)
    truth = array_power_w(cols["shadow_factor"], sun, r, v, SpacecraftParams(**sc.array).panels, 0.30, 0.02, 2.0,
                          "body_fixed", "sun")
    np.testing.assert_allclose(cols["solar_power_w"], truth, rtol=1e-9, atol=1e-9)

    believed = loop.agent_config()["array"]
    assert believed["pointing"] == "body_fixed" and believed["attitude"] == "sun"
    assert believed["panels"] == [{"normal": [1.0, 0.0, 0.0], "area_m2": 0.12},
                                  {"normal": [1.0, 1.0, 0.0], "area_m2": 0.08},
                                  {"normal": [-1.0, 0.0, 0.0], "area_m2": 0.05}]
    assert believed["efficiency"] == pytest.approx(0.30 * 0.94) and believed["degradation_per_year"] == 0.0

    result = loop.run()
    checks = evaluate(result)
    assert checks and all(c.passed for c in checks), [c for c in checks if not c.passed]
    reasons = [e.get("args", {}).get("reason", "") for e in result.events if e["name"] == "ADMISSION_CHANGED"]
    assert any("(forecast)" in r for r in reasons), reasons


def test_every_generated_power_case_is_a_scenario_the_harness_flies():
    """bench.hil flies bench.power's generated days through the closed loop: each must be a scenario the harness
    takes (a nameplate, efficiency error or array the scenario refuses would end the benchmark), with the case's
    truth and beliefs carried over."""
    from bench.hil import case_scenario
    from hil.power_cases import generate_case, platform_w

    for seed in range(2026, 2126):
        case = generate_case(seed)
        raw = {k: v for k, v in case_scenario(case).items() if v is not None}
        sc = parse_scenario(raw, "t.toml")
        assert sc.capacity_wh == case.capacity_wh and sc.platform_load_w == case.platform_w and sc.board == case.board
        for t_s in (0.0, 3600.0, 43200.0, 86399.0):  # the truth's load, with the steps the agent is not told of
            assert sc.platform_load_at_w(t_s) == pytest.approx(float(platform_w(case, np.array([t_s]))[0]))
        truth = SpacecraftParams(**sc.array)
        assert truth.array_efficiency == case.efficiency and truth.array_pointing == case.pointing
        believed = truth.array_efficiency * (1.0 + sc.efficiency_error_pct / 100.0)
        assert believed == pytest.approx(case.belief_efficiency)
        assert (sc.capacity_wh * (1.0 + sc.capacity_error_pct / 100.0) == pytest.approx(case.gauge_capacity_wh)
                if sc.gauge_capacity else case.gauge_capacity_wh is None)
        params = sc.thermal_params()  # the radiator sized for the case's board, as the harness flies it
        assert (params.radiator_area_m2, params.board_to_radiator_w_per_k, params.radiator_heat_capacity_j_per_k) == (
            case.radiator_area_m2, case.board_to_radiator_w_per_k, case.radiator_heat_capacity_j_per_k)
