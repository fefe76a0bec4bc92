"""Time, GMST, Earth-fixed rotation and geodetic coordinates (flight/orbit/frames.py)."""

import calendar

import numpy as np
import pytest
from sgp4.propagation import gstime

from flight.orbit.frames import (
    WGS84_A_KM,
    WGS84_E2,
    geodetic_from_ecef,
    gmst_rad,
    jd_utc_from_unix,
    teme_to_ecef,
    unix_from_jd_utc,
)

ONE_MM_KM = 1e-6


def test_julian_date_split_round_trips_without_losing_microseconds():
    t = np.array([0.0, 946728000.0, 1_700_000_000.123456, 2_000_000_000.999999])
    jd, fr = jd_utc_from_unix(t)
    assert np.all(np.mod(jd, 1.0) == 0.5) and np.all((fr >= 0.0) & (fr < 1.0))
    # The reason for the split: 1 microsecond survives the round trip.
    np.testing.assert_allclose(unix_from_jd_utc(jd, fr), t, atol=1e-6, rtol=0)


def test_gmst_vallado_example_3_5():
    """Vallado, Fundamentals of Astrodynamics and Applications, 4th ed., Example 3-5:
    1992-08-20 12:14:00 UT1 -> GMST 152.578787886 deg.

    Tolerance 1e-6 deg (3.6 mas, ~0.1 m at LEO radius): the example's own last digits
    differ between editions at the 1e-7 deg level.
    """
    t = calendar.timegm((1992, 8, 20, 12, 14, 0))
    assert np.degrees(gmst_rad(t)) == pytest.approx(152.578787886, abs=1e-6)


def test_gmst_matches_sgp4s_own_gstime():
    # sgp4 defines TEME against this exact formula, so the only difference is precision:
    # gstime takes one float64 Julian date, which resolves ~40 us, i.e. ~3e-9 rad of Earth
    # rotation. 1e-8 rad is 7 cm at LEO radius.
    t = np.linspace(0.0, 2.5e9, 101)
    jd, fr = jd_utc_from_unix(t)
    expected = np.array([gstime(a + b) for a, b in zip(jd, fr)])
    diff = np.mod(gmst_rad(t) - expected + np.pi, 2.0 * np.pi) - np.pi
    assert np.max(np.abs(diff)) < 1e-8


def _ecef_from_geodetic(lat_deg, lon_deg, alt_km):
    """Closed-form forward transform (exact), to test the iterative inverse against."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    n_km = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    return np.stack(
        (
            (n_km + alt_km) * np.cos(lat) * np.cos(lon),
            (n_km + alt_km) * np.cos(lat) * np.sin(lon),
            (n_km * (1.0 - WGS84_E2) + alt_km) * np.sin(lat),
        ),
        axis=-1,
    )


def test_geodetic_round_trip_to_a_millimetre():
    rng = np.random.default_rng(1)
    lat = np.concatenate((rng.uniform(-90.0, 90.0, 2000), [90.0, -90.0, 0.0, 89.9999]))
    lon = np.concatenate((rng.uniform(-180.0, 180.0, 2000), [0.0, 45.0, -179.0, 10.0]))
    alt = np.concatenate((rng.uniform(0.0, 36000.0, 2000), [550.0, 550.0, 0.0, 400.0]))
    lat2, lon2, alt2 = geodetic_from_ecef(_ecef_from_geodetic(lat, lon, alt))
    # Bowring's three iterations converge far below 1 mm; 1e-8 deg is ~1 mm on the ground.
    assert np.max(np.abs(alt2 - alt)) < ONE_MM_KM
    assert np.max(np.abs(lat2 - lat)) < 1e-8
    not_pole = np.abs(lat) < 89.0
    assert np.max(np.abs(np.mod(lon2 - lon + 180.0, 360.0) - 180.0)[not_pole]) < 1e-8


def test_teme_to_ecef_is_a_rotation_about_z():
    t = 1_700_000_000.0 + np.arange(5) * 1000.0
    r = np.array([[7000.0, 100.0, 300.0]] * 5)
    r_ecef = teme_to_ecef(r, t)
    np.testing.assert_allclose(np.linalg.norm(r_ecef, axis=-1), np.linalg.norm(r, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(r_ecef[:, 2], r[:, 2])
    # Earth turns at 7.292e-5 rad/s: the Earth-fixed longitude of a fixed inertial vector
    # falls by that rate (sidereal, not solar, day).
    lon = np.unwrap(np.arctan2(r_ecef[:, 1], r_ecef[:, 0]))
    np.testing.assert_allclose(np.diff(lon) / 1000.0, -7.2921158e-5, rtol=1e-6)
