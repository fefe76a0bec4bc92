"""South Atlantic Anomaly: a yes/no map good enough to decide "checkpoint and pause now".

Model: an ellipse in geodetic latitude/longitude centred at 30 deg S, 45 deg W (FACTS.md,
"Radiation") whose semi-axes scale with altitude. Inside the ellipse the >10 MeV proton
flux is taken to be high enough to upset the Jetson; outside it is taken as zero. The
real region is a lopsided tear-drop that drifts west (~0.3 deg/yr, uncertain); this is a stand-in
until the AP8 flux map lands, and the parameters below are the whole model.

Calibration (stated, approximate): FACTS.md says Hubble (540 km, 28.5 deg) spends ~15 %
of its time in the SAA. With semi-axes 31 deg (latitude) x 62 deg (longitude) at 540 km
a 28.5 deg orbit spends 14.8 % of the time inside, averaged over node longitudes
(tests/test_orbit_saa.py holds this). The 2:1 aspect and the extent agree roughly with
AP8 maps of >10 MeV protons at 500-550 km (about 100 W..20 E, 60 S..0, read off
published maps by eye: uncertain), the other constraint used. Then a 550 km orbit spends ~16 % inside at 51.6 deg and ~11 % when
sun-synchronous; a 420 km 51.6 deg one (ISS) ~7 % (uncertain: the growth law below is a
guess, linear in altitude).
"""

from __future__ import annotations

import numpy as np

SAA_CENTRE_LAT_DEG = -30.0
"""Centre latitude (FACTS.md: 'centre near 30 deg S, 45 deg W')."""
SAA_CENTRE_LON_DEG = -45.0
"""Centre longitude, east positive."""

SAA_REFERENCE_ALT_KM = 540.0
"""Altitude at which the semi-axes below apply: Hubble's, where the 15 % figure comes from."""
SAA_SEMI_AXIS_LAT_DEG = 31.0
"""North-south semi-axis at the reference altitude: calibrated, see module doc."""
SAA_SEMI_AXIS_LON_DEG = 62.0
"""East-west semi-axis at the reference altitude: twice the north-south one, as AP8 maps show."""

SAA_FLOOR_ALT_KM = 200.0
"""Below this the trapped protons are lost to the atmosphere: the ellipse shrinks to nothing.

The semi-axes scale by (alt - 200) / (540 - 200): 0 at 200 km, 1 at 540 km, 0.65 at the ISS's
420 km. A guess (uncertain) shaped only by "smaller below, larger above"; the AP8 map
replaces it.
"""
SAA_MAX_SCALE = 1.5
"""Cap on the growth (reached at 710 km): beyond that the ellipse would cover half the
southern hemisphere and the model should not be trusted at all."""


def saa_scale(alt_km) -> np.ndarray:
    """Factor (0 .. SAA_MAX_SCALE) on the semi-axes at ``alt_km``."""
    alt_km = np.asarray(alt_km, dtype=float)
    scale = (alt_km - SAA_FLOOR_ALT_KM) / (SAA_REFERENCE_ALT_KM - SAA_FLOOR_ALT_KM)
    return np.clip(scale, 0.0, SAA_MAX_SCALE)


def saa_ellipse_radius(lat_deg, lon_deg, alt_km) -> np.ndarray:
    """Normalised distance from the SAA centre: < 1 inside, 1 on the edge, inf where there is no SAA.

    ``sqrt((dlat/A_lat)^2 + (dlon/A_lon)^2)`` with the semi-axes scaled for altitude and
    dlon wrapped to -180..180. Useful for margins (e.g. treat < 1.1 as "about to enter").
    """
    lat_deg = np.asarray(lat_deg, dtype=float)
    lon_deg = np.asarray(lon_deg, dtype=float)
    scale = saa_scale(alt_km)
    dlat = lat_deg - SAA_CENTRE_LAT_DEG
    dlon = np.mod(lon_deg - SAA_CENTRE_LON_DEG + 180.0, 360.0) - 180.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.hypot(dlat / (SAA_SEMI_AXIS_LAT_DEG * scale), dlon / (SAA_SEMI_AXIS_LON_DEG * scale))
    return np.where(scale > 0.0, rho, np.inf)


def in_saa(lat_deg, lon_deg, alt_km) -> np.ndarray:
    """True where (geodetic lat, lon, altitude) is inside the SAA model. Broadcasts; returns a bool array.

    >>> in_saa([-30.0, 40.0], [-45.0, -45.0], 550.0).tolist()
    [True, False]
    """
    return np.asarray(saa_ellipse_radius(lat_deg, lon_deg, alt_km) < 1.0)
