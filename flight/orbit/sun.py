"""Where the Sun is, seen from the Earth's centre: low-precision, vectorised, no files.

The formula is the Astronomical Almanac's "low-precision formulas for the Sun"
(section C, e.g. AA 2019 p. C5; also Meeus, "Astronomical Algorithms", ch. 25 in
reduced form). For 1950-2050 it gives the apparent right ascension and declination to
about 0.01 deg and the distance to ~1e-4 AU.

Frame, and why TEME vs mean-of-date does not matter here: the AA formula has no
nutation terms, so it cannot tell the mean equator and equinox of date from the true
ones; its 0.01 deg error is larger than the nutation itself (17 arcsec = 0.005 deg in
longitude, 9 arcsec in obliquity). sgp4's TEME (true equator, mean equinox) sits between
the two, 1 arcsec (equation of the equinoxes) from true-of-date. So the vector can be
used as TEME directly; measured against Skyfield's DE421 apparent Sun rotated into TEME,
the direction is within 0.011 deg over 1950-2050 (tests/test_orbit_skyfield.py).
For shadows, a 0.011 deg error in the Sun's direction moves a shadow edge by
0.011 deg / (360 deg / 5700 s) ~ 0.2 s in LEO, and by the same reasoning the 20 arcsec
between the apparent (aberrated) and geometric Sun is 0.1 s: nothing the agent could notice.
"""

from __future__ import annotations

import numpy as np

from flight.orbit.frames import J2000_JD, SECONDS_PER_DAY, TT_MINUS_UTC_S, jd_utc_from_unix

AU_KM = 149597870.7
"""Astronomical unit (IAU 2012 resolution B2), km."""

SUN_RADIUS_KM = 696000.0
"""Solar radius, km, the value Montenbruck & Gill, "Satellite Orbits" (2000) use in section 3.4.2."""


def _days_since_j2000_tt(time_unix_s) -> np.ndarray:
    jd, fr = jd_utc_from_unix(time_unix_s)
    return (jd - J2000_JD) + fr + TT_MINUS_UTC_S / SECONDS_PER_DAY


def sun_ecliptic_of_date(time_unix_s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ecliptic longitude deg, obliquity deg, distance AU) from the AA low-precision formula.

    With n days of TT from J2000.0::

        L = 280.460 + 0.9856474 n          mean longitude, deg
        g = 357.528 + 0.9856003 n          mean anomaly, deg
        lambda = L + 1.915 sin g + 0.020 sin 2g    (ecliptic latitude taken as 0)
        epsilon = 23.439 - 0.0000004 n
        R = 1.00014 - 0.01671 cos g - 0.00014 cos 2g   AU
    """
    n = _days_since_j2000_tt(time_unix_s)
    mean_lon_deg = np.mod(280.460 + 0.9856474 * n, 360.0)
    g = np.radians(np.mod(357.528 + 0.9856003 * n, 360.0))
    lon_deg = mean_lon_deg + 1.915 * np.sin(g) + 0.020 * np.sin(2.0 * g)
    obliquity_deg = 23.439 - 0.0000004 * n
    dist_au = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2.0 * g)
    return lon_deg, obliquity_deg, dist_au


def sun_position_teme_km(time_unix_s) -> np.ndarray:
    """Geocentric position of the Sun, shape ``time.shape + (3,)``, km, in TEME (see module doc).

    >>> r = sun_position_teme_km(np.array([0.0, 1.0e9]))
    >>> r.shape
    (2, 3)
    """
    lon_deg, obliquity_deg, dist_au = sun_ecliptic_of_date(time_unix_s)
    lam = np.radians(lon_deg)
    eps = np.radians(obliquity_deg)
    dist_km = dist_au * AU_KM
    return np.stack(
        (
            dist_km * np.cos(lam),
            dist_km * np.cos(eps) * np.sin(lam),
            dist_km * np.sin(eps) * np.sin(lam),
        ),
        axis=-1,
    )


def sun_direction_teme(time_unix_s) -> np.ndarray:
    """Unit vector from the Earth's centre to the Sun, TEME, shape ``time.shape + (3,)``."""
    r = sun_position_teme_km(time_unix_s)
    return r / np.linalg.norm(r, axis=-1, keepdims=True)


def sun_ra_dec_deg(time_unix_s) -> tuple[np.ndarray, np.ndarray]:
    """Apparent right ascension (0..360) and declination of the Sun, degrees, of date."""
    r = sun_position_teme_km(time_unix_s)
    ra = np.mod(np.degrees(np.arctan2(r[..., 1], r[..., 0])), 360.0)
    dec = np.degrees(np.arcsin(r[..., 2] / np.linalg.norm(r, axis=-1)))
    return ra, dec


def raan_deg_for_ltan(ltan_h: float, epoch_unix_s: float) -> float:
    """RAAN (deg, TEME) that puts the ascending node at local time ``ltan_h`` at the epoch.

    Mean local solar time is approximated by the Sun's apparent right ascension: the
    node is ``(ltan_h - 12) * 15`` deg east of the Sun. Ignoring the equation of time
    (<= 16 min, 4 deg) is fine for picking an orbit; for a sun-synchronous orbit the
    LTAN then stays put (the point of the orbit), apart from that seasonal wobble.
    A 10:30 descending-node orbit (usual Earth-observation choice) has LTAN 22:30.
    """
    ra_deg, _ = sun_ra_dec_deg(epoch_unix_s)
    return float(np.mod(ra_deg + (ltan_h - 12.0) * 15.0, 360.0))
