"""flight/orbit against Skyfield, an independent implementation (JPL DE421 Sun, IAU 2000
precession-nutation, its own TEME -> GCRS -> ITRS chain), used fully offline through the
ephemeris that ``skyfield-data`` ships.

What Skyfield's ``is_sunlit`` models (positionlib.py, read from the installed package):
the satellite is sunlit unless the straight line from it to the *centre* of the Sun passes
through a sphere of radius ERAD (6378.1366 km) around the Earth's centre. That is a
point-Sun test: its switch falls where the Sun's centre crosses the Earth's limb, i.e.
about half way through the penumbra, and its shadow is the cylindrical one to within the
~0.1 km that rays from the Sun's centre converge over a few thousand km. So:

- our ``"cylindrical"`` eclipse edges must agree with it to within our own error budget:
  the AA Sun (<= 0.011 deg, measured below) moves an edge by <= 0.2 s at ~0.06 deg/s, the
  bisection reports to 0.05 s: 0.5 s in all;
- our ``"conical"`` umbra starts after its switch and ends before it, by about half a
  penumbra: 4-5 s at 550 km (the whole penumbra is 8.5 s at beta = 0 and lengthens with
  beta and at lower altitude), so 0 < difference < 10 s.
"""

import calendar
import warnings

import numpy as np
import pytest

from flight.orbit import (
    Orbit,
    PassKind,
    geodetic_from_teme,
    predict_passes,
    raan_deg_for_ltan,
    sun_position_teme_km,
    sun_synchronous_inc_deg,
)

skyfield_api = pytest.importorskip("skyfield.api")
searchlib = pytest.importorskip("skyfield.searchlib")
sgp4lib = pytest.importorskip("skyfield.sgp4lib")
skyfield_data = pytest.importorskip("skyfield_data")

ISS_LINE1 = "1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927"
ISS_LINE2 = "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537"
SSO_EPOCH_UNIX_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY_S = 86400.0


@pytest.fixture(scope="module")
def sky():
    with warnings.catch_warnings():
        # skyfield-data warns that its bundled finals2000A.all (Earth orientation) is past
        # its date; builtin=True below uses Skyfield's own table, and DE421 does not expire.
        warnings.filterwarnings("ignore", message=".*has expired", category=RuntimeWarning)
        path = skyfield_data.get_skyfield_data_path()
    load = skyfield_api.Loader(path, expire=False)
    ts = load.timescale(builtin=True)
    eph = load("de421.bsp")
    return ts, eph


def _sf_time(ts, time_unix_s):
    """Unix seconds (no leap seconds) -> Skyfield Time. ts.utc(1970, 1, 1, 0, 0, s) would be
    wrong: Skyfield counts those seconds as SI seconds, leap seconds included (27 s off)."""
    u = np.asarray(time_unix_s, dtype=float)
    days = np.floor(u / DAY_S)
    return ts.utc(1970, 1, 1 + days, 0, 0, u - days * DAY_S)


def _unix(t) -> np.ndarray:
    return np.array([d.timestamp() for d in t.utc_datetime()])


def _skyfield_edges(sky, satellite, start_unix_s, horizon_s):
    """(shadow entries, shadow exits) of Skyfield's is_sunlit, refined by find_discrete to 1 ms."""
    ts, eph = sky

    def sunlit(t):
        return satellite.at(t).is_sunlit(eph)

    sunlit.step_days = 60.0 / DAY_S  # shorter than any eclipse, so none is skipped
    t, lit = searchlib.find_discrete(_sf_time(ts, start_unix_s), _sf_time(ts, start_unix_s + horizon_s), sunlit)
    lit = np.asarray(lit).astype(bool)
    u = _unix(t)
    return u[~lit], u[lit]


def _our_edges(orbit, start_unix_s, horizon_s, model):
    passes = predict_passes(orbit, start_unix_s, horizon_s, kinds=(PassKind.ECLIPSE,), shadow_model=model)
    entries = np.array([p.start_unix_s for p in passes if not p.start_clipped])
    exits = np.array([p.end_unix_s for p in passes if not p.end_clipped])
    return entries, exits


def _cases(sky):
    ts, _ = sky
    iss = Orbit.from_tle(ISS_LINE1, ISS_LINE2)
    sso = Orbit.from_elements(
        550.0, sun_synchronous_inc_deg(550.0), raan_deg_for_ltan(22.5, SSO_EPOCH_UNIX_S), SSO_EPOCH_UNIX_S
    )
    return {
        "iss_tle": (iss, skyfield_api.EarthSatellite(ISS_LINE1, ISS_LINE2, "ISS", ts)),
        "sso_550km": (sso, skyfield_api.EarthSatellite.from_satrec(sso.satrec, ts)),
    }


@pytest.mark.req("HIL-006")
@pytest.mark.parametrize("case", ["iss_tle", "sso_550km"])
def test_eclipse_edges_match_skyfield_is_sunlit(sky, case):
    orbit, satellite = _cases(sky)[case]
    start_unix_s = orbit.epoch_unix_s
    sf_entries, sf_exits = _skyfield_edges(sky, satellite, start_unix_s, DAY_S)
    assert len(sf_entries) >= 14  # about one per orbit, ~15 a day

    entries, exits = _our_edges(orbit, start_unix_s, DAY_S, "cylindrical")
    assert len(entries) == len(sf_entries) and len(exits) == len(sf_exits)
    # 0.5 s: see the module docstring. Measured max 0.10 s (ISS) and 0.11 s (SSO).
    assert np.max(np.abs(entries - sf_entries)) < 0.5
    assert np.max(np.abs(exits - sf_exits)) < 0.5

    entries, exits = _our_edges(orbit, start_unix_s, DAY_S, "conical")
    assert len(entries) == len(sf_entries) and len(exits) == len(sf_exits)
    # Umbra lies inside Skyfield's shadow by about half a penumbra (module docstring).
    # Measured: ISS (350 km) 6.1-6.5 s, SSO 550 km beta 24 deg 4.7-4.8 s.
    assert np.all((entries - sf_entries > 0.0) & (entries - sf_entries < 10.0))
    assert np.all((sf_exits - exits > 0.0) & (sf_exits - exits < 10.0))


@pytest.mark.req("HIL-006")
def test_sun_direction_matches_skyfield(sky):
    """AA low-precision Sun vs DE421 apparent Sun in Skyfield's TEME frame, 1950-2050.

    The AA states 0.01 deg in right ascension and in declination, so up to 0.014 deg in
    direction; tolerance 0.015 deg. Measured max 0.011 deg (39.5 arcsec).
    Distance within 1e-4 AU (0.01 %; shadows depend on it only through the Sun's
    apparent radius). Measured max 8.7e-5 AU.
    """
    ts, eph = sky
    u = np.arange(calendar.timegm((1950, 1, 1, 0, 0, 0)), calendar.timegm((2050, 1, 1, 0, 0, 0)), 3.7 * DAY_S)
    apparent = eph["earth"].at(_sf_time(ts, u)).observe(eph["sun"]).apparent()
    theirs_km = apparent.frame_xyz(sgp4lib.TEME).km.T
    ours_km = sun_position_teme_km(u)
    cos_angle = np.sum(theirs_km * ours_km, axis=-1) / (
        np.linalg.norm(theirs_km, axis=-1) * np.linalg.norm(ours_km, axis=-1)
    )
    assert np.max(np.degrees(np.arccos(np.clip(cos_angle, -1.0, 1.0)))) < 0.015
    au_km = 149597870.7
    assert np.max(np.abs(np.linalg.norm(ours_km, axis=-1) - apparent.distance().km)) / au_km < 1e-4


@pytest.mark.parametrize("case", ["iss_tle", "sso_550km"])
def test_subpoint_matches_skyfield_wgs84(sky, case):
    """Geodetic latitude/longitude/altitude vs ``wgs84.subpoint_of`` over a day.

    Skyfield uses UT1 and polar motion; we take UT1 = UTC (|DUT1| < 0.9 s: <= 0.42 km of
    Earth rotation at the equator) and ignore polar motion (~15 m). Tolerance 0.5 km on
    the ground. Measured 0.22 km (DUT1 was -0.48 s in 2008). Altitude agrees to 1 m:
    both sides solve the same WGS-84 geometry and the rotation does not change it.
    """
    ts, _ = sky
    orbit, satellite = _cases(sky)[case]
    u = orbit.epoch_unix_s + np.arange(0.0, DAY_S, 60.0)
    position = satellite.at(_sf_time(ts, u))
    subpoint = skyfield_api.wgs84.subpoint_of(position)
    lat, lon, alt = geodetic_from_teme(orbit.propagate(u)[0], u)
    lat_sf, lon_sf = np.radians(subpoint.latitude.degrees), np.radians(subpoint.longitude.degrees)
    lat_r, lon_r = np.radians(lat), np.radians(lon)
    haversine = np.sin((lat_r - lat_sf) / 2) ** 2 + np.cos(lat_r) * np.cos(lat_sf) * np.sin((lon_r - lon_sf) / 2) ** 2
    ground_km = 2.0 * 6371.0 * np.arcsin(np.sqrt(haversine))
    assert np.max(ground_km) < 0.5
    assert np.max(np.abs(alt - skyfield_api.wgs84.height_of(position).km)) < 1e-3


@pytest.mark.req("HIL-006")
def test_tle_propagation_matches_skyfield(sky):
    # Same sgp4 underneath, different time plumbing: agreement to 1 mm shows our Unix ->
    # Julian date split and Skyfield's UTC handling agree (a leap-second slip would be 7 km/s).
    ts, _ = sky
    orbit, satellite = _cases(sky)["iss_tle"]
    u = orbit.epoch_unix_s + np.arange(0.0, DAY_S, 600.0)
    r_ours, _ = orbit.propagate(u)
    r_sf = satellite.at(_sf_time(ts, u)).frame_xyz(sgp4lib.TEME).km.T
    assert np.max(np.linalg.norm(r_ours - r_sf, axis=-1)) < 1e-3
