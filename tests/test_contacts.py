"""Contacts in a whole agent (flight/agent/contacts.py): passes over the configured stations,
predicted from the TLE, in telemetry and announced once each."""

from __future__ import annotations

import pytest

from flight.config import ConfigError, parse_config
from flight.orbit import Orbit
from flight.orbit.passes import Station, predict_passes
from tests.inproc import InProcessAgent
from tests.samples import ISS_TLE

WALLOPS = Station("wallops", 37.94, -75.46, 10.0, 5.0)
SVALBARD = Station("svalbard", 78.23, 15.39, 500.0, 5.0)


@pytest.mark.req("AGT-070")
def test_the_next_pass_is_in_telemetry_and_each_pass_is_announced_once(tmp_path):
    rig = InProcessAgent(tmp_path, tle=ISS_TLE, stations=(WALLOPS,))
    try:
        now = rig.clock.now_s()
        truth = predict_passes(Orbit.from_tle(*ISS_TLE), (WALLOPS,), now, 86400.0)
        assert truth, "the ISS passes over Wallops within a day"
        hk = rig.hk()
        first = truth[0]
        if first.aos_unix_s > rig.clock.now_s():
            assert hk["next_aos_in_s"] == pytest.approx(first.aos_unix_s - rig.clock.now_s(), abs=2.0)
        else:
            assert hk["next_aos_in_s"] == 0.0
        assert hk["next_los_in_s"] == pytest.approx(first.los_unix_s - rig.clock.now_s(), abs=2.0)
        assert hk["next_pass_station"] == "wallops"
        rig.advance(120, step_s=10.0)
        announced = [e.args for e in rig.events("CONTACT_PREDICTED")]
        soon = [p for p in truth if p.aos_unix_s - now <= 3 * 3600]
        assert len(announced) == len(soon)
        assert all(a["station"] == "wallops" for a in announced)
    finally:
        rig.close()


@pytest.mark.req("AGT-070")
def test_without_stations_or_orbit_nothing_is_guessed(tmp_path):
    rig = InProcessAgent(tmp_path, stations=(WALLOPS,))  # no TLE
    try:
        hk = rig.hk()
        assert hk["next_aos_in_s"] is None and hk["next_los_in_s"] is None and hk["next_pass_station"] == ""
        assert not rig.events("CONTACT_PREDICTED")
    finally:
        rig.close()


@pytest.mark.req("AGT-070")
def test_stations_in_the_configuration_are_checked_naming_the_key():
    config = parse_config({"stations": [{"name": "svalbard", "lat_deg": 78.23, "lon_deg": 15.39}]})
    assert config.stations[0].name == "svalbard" and config.stations[0].min_elevation_deg == 5.0
    with pytest.raises(ConfigError) as info:
        parse_config({"stations": [{"name": "x", "lat_deg": 123.0, "lon_deg": 0.0}]}, "agent.toml")
    assert "agent.toml" in str(info.value) and "stations[0].lat_deg" in str(info.value)


@pytest.mark.req("AGT-070")
def test_a_pass_under_way_when_predicted_again_is_not_announced_again():
    """Found in audit: predicted from now, a pass under way had AOS now, so the prediction every ten minutes
    during a long pass, or a SET_TLE during one, announced it again with a truncated duration."""
    from flight.agent.contacts import REPREDICT_S, Contacts
    from flight.clock import SimClock

    t0 = 1_795_000_000.0
    orbit = Orbit.from_elements(1000.0, 60.0, 0.0, t0)  # 1000 km: passes over Kiruna of 15 to 20 min
    kiruna = Station("kiruna", 67.86, 20.96, 400.0, 5.0)
    long = next(p for p in predict_passes(orbit, [kiruna], t0, 86400.0) if p.duration_s > REPREDICT_S + 120)
    clock = SimClock(long.aos_unix_s - 3.5 * 3600)
    said: list[tuple[float, dict]] = []
    current = [orbit]
    contacts = Contacts((kiruna,), lambda: current[0], clock, lambda name, **args: said.append((clock.now_s(), args)),
                        lambda where, exc: pytest.fail(f"internal error: {where}: {exc}"))
    while clock.now_s() < long.los_unix_s:
        contacts.tick()
        if abs(clock.now_s() - (long.aos_unix_s + 120)) < 5:
            current[0] = Orbit.from_elements(1000.0, 60.0, 0.0, t0)  # SET_TLE mid-pass: a new orbit object
        clock.advance(10.0)
    ends = [t + args["aos_in_s"] + args["duration_s"] for t, args in said]  # a pass is known by its LOS too
    this_pass = [args for (t, args), los in zip(said, ends) if abs(los - long.los_unix_s) < 5]
    assert len(this_pass) == 1 and this_pass[0]["duration_s"] == pytest.approx(long.duration_s, abs=2.0)
    assert all(abs(a - b) > 60 for i, a in enumerate(ends) for b in ends[i + 1:])  # no pass said twice


@pytest.mark.req("AGT-070")
def test_a_step_of_utc_predicts_again_at_once():
    """Found in audit: the passes are in UTC, the re-prediction on the monotonic clock; after UTC stepped (NTP, GNSS,
    a time set) the channels said no pass (a step ahead past the day predicted) or one a day off (a step back) for up
    to REPREDICT_S."""
    from flight.agent.contacts import Contacts
    from flight.clock import Clock
    from flight.orbit.passes import contact_times

    class SteppedClock(Clock):  # UTC = monotonic + offset; a step changes the offset only
        def __init__(self, utc_s: float):
            self.mono_s, self.offset_s = 0.0, utc_s

        def now_s(self) -> float:
            return self.mono_s + self.offset_s

        def monotonic_s(self) -> float:
            return self.mono_s

        def timeout_until(self, deadline_s: float) -> float | None:
            return 0.0

    t0 = 1_795_000_000.0
    orbit = Orbit.from_elements(550.0, 53.0, 0.0, t0)
    clock = SteppedClock(t0)
    contacts = Contacts((WALLOPS,), lambda: orbit, clock, lambda name, **args: None,
                        lambda where, exc: pytest.fail(f"internal error: {where}: {exc}"))
    contacts.tick()
    for step_s in (2 * 86400.0, -(2 * 86400.0 + 6 * 3600.0)):  # two days ahead, then back past the start
        clock.mono_s += 10.0
        clock.offset_s += step_s
        contacts.tick()
        now = clock.now_s()
        truth = contact_times(predict_passes(orbit, (WALLOPS,), now - 1800.0, 86400.0 + 1800.0), now)
        hk = contacts.telemetry()
        assert truth.aos_in_s is not None
        assert hk["next_aos_in_s"] == pytest.approx(truth.aos_in_s, abs=2.0)
        assert hk["next_los_in_s"] == pytest.approx(truth.los_in_s, abs=2.0)


@pytest.mark.req("AGT-070")
def test_the_first_housekeeping_after_set_tle_gives_the_new_orbits_passes(tmp_path):
    """Found in audit: housekeeping runs before the control tick in a turn, so the first HK packet after a SET_TLE
    (or a step of UTC) gave the old prediction's next AOS, an hour off, for a period."""
    from tests.samples import tle_with_epoch

    new = tle_with_epoch(ISS_TLE, Orbit.from_tle(*ISS_TLE).epoch_unix_s + 0.3 * 86400.0)  # a fifth of an orbit on
    rig = InProcessAgent(tmp_path, tle=ISS_TLE, stations=(WALLOPS,))
    try:
        assert rig.send("SET_TLE", line1=new[0], line2=new[1]).completed
        hk = rig.hk()
        now = rig.clock.now_s()
        truth = [p for p in predict_passes(Orbit.from_tle(*new), (WALLOPS,), now, 86400.0) if p.aos_unix_s > now][0]
        old = [p for p in predict_passes(Orbit.from_tle(*ISS_TLE), (WALLOPS,), now, 86400.0) if p.aos_unix_s > now][0]
        assert abs(truth.aos_unix_s - old.aos_unix_s) > 600.0  # the two orbits disagree: the test can tell them
        assert hk["next_aos_in_s"] == pytest.approx(truth.aos_unix_s - now, abs=2.0)
    finally:
        rig.close()


@pytest.mark.req("AGT-070")
def test_telemetry_read_before_the_tick_after_a_step_of_utc_gives_the_new_prediction():
    """The housekeeping of a turn runs before its control tick: after a step of UTC two days ahead, that packet
    said no pass at all (found in audit), the old day's passes being behind the new time."""
    from flight.agent.contacts import Contacts
    from flight.clock import SimClock
    from flight.orbit.passes import contact_times

    class SteppedClock(SimClock):  # UTC = monotonic + offset; a step changes the offset only
        offset_s = 0.0

        def now_s(self) -> float:
            return super().now_s() + self.offset_s

    t0 = 1_795_000_000.0
    orbit = Orbit.from_elements(550.0, 53.0, 0.0, t0)
    clock = SteppedClock(t0)
    contacts = Contacts((WALLOPS,), lambda: orbit, clock, lambda name, **args: None,
                        lambda where, exc: pytest.fail(f"internal error: {where}: {exc}"))
    contacts.tick()
    clock.advance(1.0)
    clock.offset_s = 2 * 86400.0
    hk = contacts.telemetry()  # no tick since the step
    now = clock.now_s()
    truth = contact_times(predict_passes(orbit, (WALLOPS,), now - 1800.0, 86400.0 + 1800.0), now)
    assert truth.aos_in_s is not None
    assert hk["next_aos_in_s"] == pytest.approx(truth.aos_in_s, abs=2.0)
