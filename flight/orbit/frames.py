"""Time scales, Earth rotation and geodetic coordinates: pure numpy, vectorised over time.

Times at every boundary are UTC as Unix seconds (``time_unix_s``), the agent's clock
(``flight.clock.Clock.now_s``). sgp4 wants a two-part Julian date, so the split lives
in one helper, :func:`jd_utc_from_unix`, and everything else uses it.

Frames:

- TEME: True Equator, Mean Equinox of date, sgp4's output frame (Vallado et al. 2006,
  "Revisiting Spacetrack Report #3", AIAA 2006-6753, section on coordinate frames).
- PEF ("ECEF" here): pseudo-Earth-fixed, TEME rotated about z by GMST (IAU 1982).
  Polar motion (< 0.5 arcsec, ~15 m at the surface) is ignored and UT1 is taken as UTC
  (|UT1 - UTC| < 0.9 s by IERS rule, <= 0.42 km of Earth rotation at the equator);
  both are far below what the SAA decision needs.
"""

from __future__ import annotations

import numpy as np

UNIX_EPOCH_JD = 2440587.5
"""Julian date of 1970-01-01T00:00:00 UTC."""

J2000_JD = 2451545.0
"""Julian date of J2000.0 (2000-01-01T12:00 TT); formulas count days or centuries from it."""

SECONDS_PER_DAY = 86400.0

TT_MINUS_UTC_S = 69.184
"""TT - UTC since 2017-01-01: 32.184 s + 37 leap seconds (IERS Bulletin C).

Only the sun's position uses TT; an error of a leap second or two moves the sun by
~0.00001 deg, so this constant does not need updating when a leap second is added.
"""

# WGS-84 ellipsoid (NIMA TR8350.2, table 3.1).
WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
WGS84_B_KM = WGS84_A_KM * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  # first eccentricity squared
WGS84_EP2 = WGS84_E2 / (1.0 - WGS84_E2)  # second eccentricity squared


def jd_utc_from_unix(time_unix_s) -> tuple[np.ndarray, np.ndarray]:
    """Split Unix seconds into sgp4's two-part UTC Julian date ``(jd, fr)``.

    ``jd`` is the Julian date of the preceding midnight (ends in .5) and ``fr`` the
    fraction of the day, so no precision is lost to the ~2.4e6 offset: one float64 JD
    resolves only ~40 microseconds, the split keeps nanoseconds.

    Unix time has no leap seconds, like UTC Julian dates as sgp4 uses them.

    >>> jd, fr = jd_utc_from_unix(0.0)
    >>> float(jd), float(fr)
    (2440587.5, 0.0)
    """
    time_unix_s = np.asarray(time_unix_s, dtype=float)
    days = np.floor(time_unix_s / SECONDS_PER_DAY)
    jd = UNIX_EPOCH_JD + days
    fr = (time_unix_s - days * SECONDS_PER_DAY) / SECONDS_PER_DAY
    return jd, fr


def unix_from_jd_utc(jd, fr=0.0) -> np.ndarray:
    """Inverse of :func:`jd_utc_from_unix`: Unix seconds from a (two-part) UTC Julian date."""
    jd = np.asarray(jd, dtype=float)
    fr = np.asarray(fr, dtype=float)
    return ((jd - UNIX_EPOCH_JD) + fr) * SECONDS_PER_DAY


def gmst_rad(time_unix_s) -> np.ndarray:
    """Greenwich mean sidereal time, IAU 1982 model, in radians in [0, 2*pi).

    Formula: Aoki et al. 1982, as given in Vallado, "Fundamentals of Astrodynamics and
    Applications", 4th ed., eq. 3-47 (and sgp4's own ``gstime``)::

        GMST[s] = 67310.54841 + (876600 h + 8640184.812866 s) T + 0.093104 T^2 - 6.2e-6 T^3

    with T in Julian centuries of UT1 from J2000. UT1 is taken as UTC (see module doc).
    This is the rotation sgp4's TEME frame is defined against, so TEME -> PEF with it
    is consistent with sgp4 by construction.

    >>> round(float(np.degrees(gmst_rad(946728000.0))), 6)  # 2000-01-01T12:00 UTC
    280.460618
    """
    jd, fr = jd_utc_from_unix(time_unix_s)
    t_cent = ((jd - J2000_JD) + fr) / 36525.0
    gmst_s = (
        67310.54841
        + (876600.0 * 3600.0 + 8640184.812866) * t_cent
        + 0.093104 * t_cent**2
        - 6.2e-6 * t_cent**3
    )
    # 240 s of sidereal time per degree.
    return np.mod(np.radians(gmst_s / 240.0), 2.0 * np.pi)


def teme_to_ecef(r_teme_km, time_unix_s) -> np.ndarray:
    """Rotate TEME vectors (..., 3) into the pseudo-Earth-fixed frame (km in, km out).

    ``r_ecef = R3(GMST) r_teme`` (Vallado 4th ed., eq. 3-90, polar motion omitted).
    ``time_unix_s`` broadcasts against the leading axes of ``r_teme_km``.
    """
    r_teme_km = np.asarray(r_teme_km, dtype=float)
    theta = gmst_rad(time_unix_s)
    c, s = np.cos(theta), np.sin(theta)
    x, y, z = r_teme_km[..., 0], r_teme_km[..., 1], r_teme_km[..., 2]
    return np.stack(np.broadcast_arrays(c * x + s * y, -s * x + c * y, z), axis=-1)


def geodetic_from_ecef(r_ecef_km) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WGS-84 geodetic latitude (deg), longitude (deg, -180..180) and altitude (km).

    Bowring's method (Bowring 1976, "Transformation from spatial to geographical
    coordinates", Survey Review 23(181)): iterate the parametric latitude. Each pass
    cuts the error by a factor ~e^2 ~ 1/150; three passes are below 1 mm for anything
    from the surface to GEO. Valid at the poles (the altitude formula has no 1/cos).
    """
    r_ecef_km = np.asarray(r_ecef_km, dtype=float)
    x, y, z = r_ecef_km[..., 0], r_ecef_km[..., 1], r_ecef_km[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    beta = np.arctan2(z, (1.0 - WGS84_F) * p)
    for _ in range(3):
        lat = np.arctan2(
            z + WGS84_EP2 * WGS84_B_KM * np.sin(beta) ** 3,
            p - WGS84_E2 * WGS84_A_KM * np.cos(beta) ** 3,
        )
        beta = np.arctan2((1.0 - WGS84_F) * np.sin(lat), np.cos(lat))
    sin_lat = np.sin(lat)
    n_km = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
    alt_km = p * np.cos(lat) + z * sin_lat - WGS84_A_KM**2 / n_km
    return np.degrees(lat), np.degrees(lon), alt_km


def geodetic_from_teme(r_teme_km, time_unix_s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-satellite point: (lat_deg, lon_deg, alt_km) of TEME positions at ``time_unix_s``."""
    return geodetic_from_ecef(teme_to_ecef(r_teme_km, time_unix_s))
