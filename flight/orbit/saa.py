"""South Atlantic Anomaly: a yes/no map good enough to decide "checkpoint and pause now".

Model: per altitude, a tilted ellipse in geodetic latitude and longitude (:data:`SAA_TABLE`),
fitted at build time by scripts/fit_saa_model.py to AP8 (hil/data/trapped_flux_map.npz, built
with IRBEM by scripts/build_radiation_map.py): the region where AP8-MIN's integral flux of
protons above 10 MeV exceeds :data:`SAA_FLUX_CM2_S` within 50 deg of the equator. Inside the
ellipse the flux is taken to be high enough to upset the Jetson; outside it is taken as zero.
Between the map's layers the ellipse's numbers are interpolated linearly in altitude; below the
lowest layer with a region none is (the ellipse shrinks to nothing there), above the top layer
(1200 km) the top one is kept.

What the agent gets wrong, stated. The real region is a lopsided tear-drop with a lobe towards
Africa: the ellipse, tilted to follow it, leaves out its ragged edges and takes in some sea
around them (scripts/fit_saa_model.py prints both per layer; a point left out costs three times
one wrongly put in). It is fitted to solar minimum, whose proton flux is the higher; at solar
maximum the region is a little smaller. AP8 places the anomaly where the geomagnetic field put it
in the 1960s; in flight it has drifted ~0.3 deg/yr west since (FACTS.md, uncertain), which this
table does not follow, and neither does the harness's truth (the same AP8 map), so under the
harness the agent is right more often than it would be in orbit.

Fit to the map (tests/test_orbit_saa.py holds these): along ISS-like (420 km, 51.6 deg), Hubble's
(540 km, 28.5 deg), sun-synchronous (550 km) and 800 km orbits the ellipse takes in over 99 % of the
inner belt's >10 MeV proton fluence, leaves no stretch where the flux exceeds 100 /cm²/s out, and
none above the edge for over 3 minutes. The earlier stand-in (one ellipse, 31 x 62 deg at 540 km,
centred at 30 S 45 W, scaled linearly with altitude) took in 77 % of it at 420 km, leaving out
stretches above 100 /cm²/s of up to ~9 minutes, and at 800 km put the board in the SAA over one and
a half times as long as the map does. FACTS.md's "Hubble spends ~15 % of its time in it" is
Hubble's own, wider operational contour; AP8's >10 MeV region holds 9-10 % of a 540 km, 28.5 deg
orbit's time, the ellipse 10-11 %.
"""

from __future__ import annotations

import numpy as np

SAA_FLUX_CM2_S = 10.0
"""The SAA's edge: integral flux of protons above 10 MeV, /cm²/s (AP8-MIN), under 1 % of its
peak at 550 km (~1.6e3, FACTS.md). Inside it lies over 99 % of the inner belt's fluence along the
orbits the tests fly; what lies outside upsets a part at most at a few hundredths of the peak rate."""

# -- fitted by scripts/fit_saa_model.py: begin
SAA_TABLE = (
    # alt_km, centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg
    (200.0, -38.67, -24.92, 25.33, 6.83, -18.49),
    (250.0, -38.97, -21.63, 33.44, 10.85, -15.44),
    (300.0, -40.01, -18.81, 43.23, 14.40, -18.64),
    (350.0, -40.49, -16.72, 49.34, 17.91, -19.35),
    (400.0, -40.33, -16.15, 53.10, 20.97, -19.37),
    (450.0, -39.45, -16.07, 56.32, 23.99, -18.85),
    (500.0, -38.83, -16.01, 59.55, 27.06, -18.71),
    (550.0, -37.17, -17.22, 60.97, 29.60, -17.06),
    (600.0, -35.12, -18.43, 62.50, 31.57, -14.07),
    (650.0, -33.26, -19.33, 64.98, 33.23, -11.72),
    (700.0, -31.72, -20.07, 68.21, 35.02, -10.23),
    (800.0, -27.44, -23.03, 75.06, 37.96, -6.99),
    (900.0, -21.53, -28.15, 86.77, 39.32, -4.69),
    (1000.0, -16.05, -35.57, 103.74, 41.03, -3.73),
    (1200.0, 3.12, -66.38, 147.66, 58.28, -10.01),
)
# -- fitted by scripts/fit_saa_model.py: end
"""Per altitude layer of the map: (alt_km, centre_lat_deg, centre_lon_deg, semi_major_deg,
semi_minor_deg, tilt_deg); the semi-axes in degrees of latitude and longitude, the major axis
``tilt_deg`` from east towards north (negative: its east end further south); semi-axes 0 where the
layer has no region. Written by ``python scripts/fit_saa_model.py --write``; a test fits the map
again and compares."""

_TABLE = np.asarray(SAA_TABLE, dtype=float).reshape(-1, 6)


def tilted_rho(lat_deg, lon_deg, centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg,
               tilt_deg) -> np.ndarray:
    """Normalised distance from a tilted ellipse's centre (< 1 inside, 1 on its edge, inf where a
    semi-axis is 0), longitude differences wrapped to -180..180. Broadcasts over every argument."""
    dlat = np.asarray(lat_deg, dtype=float) - centre_lat_deg
    dlon = np.mod(np.asarray(lon_deg, dtype=float) - centre_lon_deg + 180.0, 360.0) - 180.0
    tilt = np.radians(tilt_deg)
    along = np.cos(tilt) * dlon + np.sin(tilt) * dlat
    across = -np.sin(tilt) * dlon + np.cos(tilt) * dlat
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.hypot(along / semi_major_deg, across / semi_minor_deg)
    return np.where((np.asarray(semi_major_deg) > 0.0) & (np.asarray(semi_minor_deg) > 0.0), rho, np.inf)


def saa_ellipse(alt_km) -> tuple[np.ndarray, ...]:
    """``(centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg)`` at ``alt_km``:
    :data:`SAA_TABLE` interpolated linearly in altitude, the top layer's above it, semi-axes 0 below
    the lowest layer."""
    alt_km = np.asarray(alt_km, dtype=float)
    alts = _TABLE[:, 0]
    params = [np.interp(alt_km, alts, _TABLE[:, k]) for k in range(1, 6)]
    below = alt_km < alts[0]
    params[2], params[3] = np.where(below, 0.0, params[2]), np.where(below, 0.0, params[3])
    return tuple(params)


def saa_ellipse_radius(lat_deg, lon_deg, alt_km) -> np.ndarray:
    """Normalised distance from the SAA's centre at that altitude: < 1 inside, 1 on the edge, inf
    where there is no SAA. Useful for margins (e.g. treat < 1.1 as "about to enter")."""
    return tilted_rho(lat_deg, lon_deg, *saa_ellipse(alt_km))


def in_saa(lat_deg, lon_deg, alt_km) -> np.ndarray:
    """True where (geodetic lat, lon, altitude) is inside the SAA model. Broadcasts; returns a bool array.

    >>> in_saa([-30.0, 40.0], [-45.0, -45.0], 550.0).tolist()
    [True, False]
    """
    return np.asarray(saa_ellipse_radius(lat_deg, lon_deg, alt_km) < 1.0)
