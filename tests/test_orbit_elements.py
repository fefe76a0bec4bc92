"""Orbit construction, TLE checks and propagation (flight/orbit/elements.py)."""

import math

import numpy as np
import pytest

from flight.orbit import Orbit, PropagationError, TleError, sun_synchronous_inc_deg, tle_checksum
from flight.orbit.elements import WGS72_MU_KM3_S2, WGS72_RADIUS_KM
from flight.orbit.frames import geodetic_from_teme

# The ISS element set printed on Wikipedia's "Two-line element set" page; its checksums
# (the final 7 on each line) were computed by NORAD, not by us.
ISS_LINE1 = "1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927"
ISS_LINE2 = "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537"

EPOCH_UNIX_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def test_tle_checksum_matches_published_digits():
    assert tle_checksum(ISS_LINE1) == int(ISS_LINE1[-1]) == 7
    assert tle_checksum(ISS_LINE2) == int(ISS_LINE2[-1]) == 7


def test_from_tle_reads_the_published_elements():
    orbit = Orbit.from_tle(ISS_LINE1, ISS_LINE2, name="ISS (ZARYA)")
    assert orbit.satnum == 25544
    assert orbit.inclination_deg == pytest.approx(51.6416, abs=1e-9)
    assert orbit.eccentricity == pytest.approx(0.0006703, abs=1e-12)
    # Epoch 08264.51782528 = 2008 day 264.51782528 = 2008-09-20 12:25:40.104 UTC; 1 ms is
    # the TLE epoch field's own resolution (1e-8 day = 0.86 ms).
    assert orbit.epoch_unix_s == pytest.approx(1221913540.104, abs=1e-3)
    # 15.72125391 rev/day -> 86400 / 15.72125391 s.
    assert orbit.period_s == pytest.approx(86400.0 / 15.72125391, abs=1e-3)


def test_trailing_newlines_and_spaces_are_tolerated():
    Orbit.from_tle(ISS_LINE1 + "\r\n", ISS_LINE2 + "  \n")


@pytest.mark.parametrize(
    "line1, line2, line_no, words",
    [
        (ISS_LINE1[:60], ISS_LINE2, 1, "expected 69 characters, got 60"),  # sgp4 itself accepts this one
        (ISS_LINE1, ISS_LINE2[:-1], 2, "expected 69 characters, got 68"),
        (ISS_LINE1[:-1] + "8", ISS_LINE2, 1, "checksum is 8, the line sums to 7"),
        (ISS_LINE1, ISS_LINE2[:20] + "9" + ISS_LINE2[21:], 2, "checksum is 7"),  # one digit corrupted
        (ISS_LINE2, ISS_LINE1, 1, "must start with '1 '"),  # lines swapped
        (ISS_LINE1, "2 25545" + ISS_LINE2[7:-1] + "8", 0, "catalogue numbers differ"),
        ("1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  292é", ISS_LINE2, 1, "non-ASCII"),
        (None, ISS_LINE2, 1, "expected a string"),
    ],
)
def test_malformed_tle_gives_a_clear_error(line1, line2, line_no, words):
    with pytest.raises(TleError) as info:
        Orbit.from_tle(line1, line2)
    assert info.value.line_no == line_no
    assert words in str(info.value)
    assert "ask the ground for a fresh element set" in str(info.value)  # says what to do
    assert isinstance(info.value, ValueError)


def _with_checksum(line68: str) -> str:
    return line68 + str(tle_checksum(line68))


@pytest.mark.parametrize(
    "line_no, first, text, words",
    [
        # sgp4's C++ parser silently reads "15.7212539X" as 15.7212539: we must catch it.
        (2, 53, "15.7212539X", "mean motion (columns 53-63) is not a number"),
        (1, 19, "08264.5178252O", "epoch (columns 19-32) is not a number"),
        (1, 54, "-11606+a", "BSTAR drag term (columns 54-61)"),
        (2, 27, "0006 03", "eccentricity (columns 27-33) must be digits"),
        # An audit: float() reads "nan" and "inf", and sgp4 then predicted NaN ("sunlit, no eclipse for a day")
        (2, 9, "     nan", "inclination (columns 9-16) is not a finite number"),
        (2, 44, "    -inf", "mean anomaly (columns 44-51) is not a finite number"),
        (1, 34, "       nan", "first derivative of mean motion (columns 34-43) is not a finite number"),
        (2, 9, "200.0000", "inclination (columns 9-16) is 200, outside 0 to 180 degrees"),
        (2, 18, "361.0000", "right ascension of the ascending node (columns 18-25) is 361, outside 0 to 360"),
        (1, 19, "08400.51782528", "epoch (columns 19-32): day of the year 400.518 is not from 1 to 366"),
        (1, 19, "08000.51782528", "day of the year 0.517825 is not from 1 to 366"),
    ],
)
def test_garbage_in_a_field_is_named(line_no, first, text, words):
    lines = {1: ISS_LINE1, 2: ISS_LINE2}
    line = lines[line_no]
    lines[line_no] = _with_checksum(line[: first - 1] + text + line[first - 1 + len(text) : 68])
    with pytest.raises(TleError) as info:
        Orbit.from_tle(lines[1], lines[2])
    assert info.value.line_no == line_no
    assert words in str(info.value)


@pytest.mark.parametrize("alt_km", [400.0, 500.0, 550.0, 600.0, 800.0])
def test_period_is_keplerian_for_circular_orbits(alt_km):
    orbit = Orbit.from_elements(alt_km, 51.6, 0.0, EPOCH_UNIX_S)
    a_km = WGS72_RADIUS_KM + alt_km
    # Exact up to float rounding: period_s is 2*pi/n and n was set from Kepler's third law.
    assert orbit.period_s == pytest.approx(2.0 * math.pi * math.sqrt(a_km**3 / WGS72_MU_KM3_S2), rel=1e-12)
    assert orbit.semi_major_axis_km == pytest.approx(a_km, abs=1e-6)


@pytest.mark.parametrize("alt_km, facts_min", [(500.0, 94.6), (550.0, 95.7), (600.0, 96.7)])
def test_period_matches_facts(alt_km, facts_min):
    """FACTS.md, "Orbits, power, thermal": 500 km 94.6 min, 550 km 95.7 min, 600 km 96.7 min.

    Tolerance 0.06 min (3.6 s): the figures are given to 0.1 min, and the 550 km one is
    95.650 min (WGS-72 or WGS-84 constants alike) rounded up from the rounding boundary.
    """
    orbit = Orbit.from_elements(alt_km, 51.6, 0.0, EPOCH_UNIX_S)
    assert orbit.period_s / 60.0 == pytest.approx(facts_min, abs=0.06)


def _nodal_period_s(orbit: Orbit, start_unix_s: float, n_orbits: int = 5) -> float:
    t = start_unix_s + np.arange(0.0, (n_orbits + 1) * orbit.period_s, 1.0)
    r_km, _ = orbit.propagate(t)
    z = r_km[:, 2]
    up = np.flatnonzero((z[:-1] < 0.0) & (z[1:] >= 0.0))
    # Linear interpolation between 1 s samples: error << 1 ms at 7.6 km/s.
    t_node = t[up] - z[up] * (t[up + 1] - t[up]) / (z[up + 1] - z[up])
    return float(np.mean(np.diff(t_node)))


@pytest.mark.parametrize("inc_deg", [28.5, 51.6, 97.6])
def test_propagated_nodal_period_is_keplerian_to_within_j2(inc_deg):
    """The time between ascending nodes seen in sgp4 output vs 2*pi*sqrt(a^3/mu).

    They differ by J2's secular terms, of order 1.5 * J2 * (R/a)^2 = 0.14 % at 550 km, times
    a factor of a few depending on inclination: 0.5 % (29 s) bounds it. A unit slip in the
    mean motion (rev/day vs rad/min) would be off by orders of magnitude.
    """
    orbit = Orbit.from_elements(550.0, inc_deg, 0.0, EPOCH_UNIX_S)
    assert _nodal_period_s(orbit, EPOCH_UNIX_S) == pytest.approx(orbit.period_s, rel=5e-3)


def test_circular_orbit_stays_near_its_altitude():
    # sgp4's J2 short-period terms move a "circular" orbit by ~+-7 km; 15 km bounds that.
    orbit = Orbit.from_elements(550.0, 51.6, 10.0, EPOCH_UNIX_S)
    t = EPOCH_UNIX_S + np.arange(0.0, 86400.0, 60.0)
    r_km, v_km_s = orbit.propagate(t)
    radius_km = np.linalg.norm(r_km, axis=-1)
    assert np.all(np.abs(radius_km - (WGS72_RADIUS_KM + 550.0)) < 15.0)
    # Vis-viva for a circle: v = sqrt(mu / r), 7.59 km/s at 550 km; J2 again explains < 0.5 %.
    assert np.linalg.norm(v_km_s, axis=-1) == pytest.approx(np.sqrt(WGS72_MU_KM3_S2 / radius_km), rel=5e-3)
    _, _, alt_km = geodetic_from_teme(r_km, t)
    # Geodetic altitude adds the ellipsoid's flattening (up to 21 km at the poles).
    assert np.all((alt_km > 530.0) & (alt_km < 580.0))


def test_propagate_is_vectorised_and_keeps_shape():
    orbit = Orbit.from_elements(550.0, 51.6, 0.0, EPOCH_UNIX_S)
    t = EPOCH_UNIX_S + np.arange(12.0).reshape(3, 4) * 60.0
    r_km, v_km_s = orbit.propagate(t)
    assert r_km.shape == v_km_s.shape == (3, 4, 3)
    r_one, _ = orbit.propagate(t[1, 2])
    assert r_one.shape == (3,)
    np.testing.assert_allclose(r_one, r_km[1, 2], atol=1e-9)


def test_from_elements_epoch_round_trips():
    orbit = Orbit.from_elements(550.0, 51.6, 0.0, EPOCH_UNIX_S + 0.25)
    # sgp4init keeps the epoch as days since 1949 in one float64: ~1e-7 s resolution.
    assert orbit.epoch_unix_s == pytest.approx(EPOCH_UNIX_S + 0.25, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(ecc=1.2), "eccentricity"),
        (dict(inc_deg=200.0), "inclination"),
        (dict(alt_km=50.0), "below 100 km"),
        (dict(alt_km=500.0, ecc=0.1), "perigee altitude"),
    ],
)
def test_from_elements_refuses_impossible_orbits(kwargs, words):
    args = dict(alt_km=550.0, inc_deg=51.6, raan_deg=0.0, epoch_unix_s=EPOCH_UNIX_S) | kwargs
    with pytest.raises(ValueError, match=words):
        Orbit.from_elements(**args)


@pytest.mark.parametrize("key", ["alt_km", "raan_deg", "epoch_unix_s", "argp_deg", "mean_anomaly_deg",
                                 "bstar_per_earth_radius"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_from_elements_refuses_elements_that_are_not_finite_naming_them(key, value):
    """Found in audit: sgp4init took raan_deg=nan (and alt_km, the epoch, ...) without an error, and every
    position came out NaN, read downstream as sunlit, outside the SAA, with no pass."""
    args = dict(alt_km=550.0, inc_deg=51.6, raan_deg=0.0, epoch_unix_s=EPOCH_UNIX_S) | {key: value}
    with pytest.raises(ValueError, match=f"^{key} must be a finite number"):
        Orbit.from_elements(**args)


def test_decay_is_reported_with_the_time_and_sgp4_code():
    # 300 km with a large drag term re-enters within days; sgp4 says error 6 (decayed) at
    # 10 days (further on its equations break down in other ways: error 4 at 30 days).
    orbit = Orbit.from_elements(300.0, 51.6, 0.0, EPOCH_UNIX_S, bstar_per_earth_radius=5e-3)
    orbit.propagate(EPOCH_UNIX_S + 86400.0)  # still fine a day later
    with pytest.raises(PropagationError) as info:
        orbit.propagate(EPOCH_UNIX_S + np.array([0.0, 86400.0, 10 * 86400.0]))
    assert info.value.code == 6
    assert info.value.time_unix_s == EPOCH_UNIX_S + 10 * 86400.0
    assert "decayed" in str(info.value) and "+10.00 days from epoch" in str(info.value)
    assert "uplink a newer TLE" in str(info.value)


def test_sun_synchronous_inclination_matches_facts():
    # FACTS.md gives 97.6 deg for a 550 km sun-synchronous orbit; rounded to 0.1 deg.
    assert sun_synchronous_inc_deg(550.0) == pytest.approx(97.6, abs=0.05)


def test_orbit_is_frozen():
    orbit = Orbit.from_elements(550.0, 51.6, 0.0, EPOCH_UNIX_S)
    with pytest.raises(AttributeError):
        orbit.name = "other"


@pytest.mark.parametrize(
    "ecc, line_no, words",
    [
        ("9000000", 2, "below the Earth's surface"),  # perigee 5705 km under the surface
        ("0500000", 0, "sgp4 cannot propagate it through its first orbit: error 6"),  # perigee 16 km: decays at once
    ],
)
def test_a_tle_that_cannot_fly_its_first_orbit_is_refused(ecc, line_no, words):
    """Found in audit: sgp4init checks the epoch's position only, so these were taken (by the configuration and by
    SET_TLE) and every prediction then failed minutes after the epoch, said as "this far from the epoch"."""
    line2 = _with_checksum(ISS_LINE2[:26] + ecc + ISS_LINE2[33:68])
    with pytest.raises(TleError) as info:
        Orbit.from_tle(ISS_LINE1, line2)
    assert info.value.line_no == line_no and words in str(info.value)
    assert "ask the ground for a fresh element set" in str(info.value)


def test_a_low_perigee_that_sgp4_can_fly_is_kept():
    """A perigee of 151 km (eccentricity 0.03 at 15.7 rev/day) is low, but propagates: a TLE near re-entry is
    still the best knowledge of the orbit, and is taken."""
    orbit = Orbit.from_tle(ISS_LINE1, _with_checksum(ISS_LINE2[:26] + "0300000" + ISS_LINE2[33:68]))
    assert orbit.semi_major_axis_km * (1.0 - orbit.eccentricity) - WGS72_RADIUS_KM == pytest.approx(151.0, abs=1.0)
    orbit.propagate(orbit.epoch_unix_s + np.linspace(0.0, orbit.period_s, 50))
