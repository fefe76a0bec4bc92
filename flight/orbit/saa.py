"""South Atlantic Anomaly: a yes/no map good enough to decide "checkpoint and pause now".

Model: per altitude, a tilted ellipse in geodetic latitude and longitude (:data:`SAA_TABLE`),
fitted at build time by scripts/fit_saa_model.py to AP8 (hil/data/trapped_flux_map.npz, built
with IRBEM by scripts/build_radiation_map.py): the region where AP8-MIN's integral flux of
protons above 10 MeV exceeds :data:`SAA_FLUX_CM2_S` within 50 deg of the equator. Inside the
ellipse the flux is taken to be high enough to upset the Jetson; outside it is taken as zero.
Between the map's layers the ellipse's numbers are interpolated linearly in altitude; beyond the
map's layers (below 200 km, above 1200 km) the nearest one is kept, as the harness's map keeps its
own (a board below 200 km re-enters within days).

What the agent gets wrong, stated. The real region is a lopsided tear-drop with a lobe towards
Africa: the ellipse, tilted to follow it, leaves out little of its ragged edges and takes in sea
around them (scripts/fit_saa_model.py prints both per layer; a point left out costs ten times one
wrongly put in). It is fitted to solar minimum, whose proton flux is the higher; at solar
maximum the region is a little smaller.

Drift. AP8 places the anomaly where the geomagnetic field it is evaluated in put it (AP8-MIN's:
Jensen and Cain's of 1960, :data:`SAA_TABLE_EPOCH_YEAR`); it has drifted west since, with the field.
The agent moves the table by its own estimate of that drift to the date it is asked about
(:func:`saa_drift_deg`): :data:`SAA_DRIFT_WEST_DEG_PER_YR`, 0.30 deg/yr, RXTE's mean over 1996-2007
(Fürst et al., "Temporal variations of strength and location of the South Atlantic Anomaly as
measured by RXTE", Earth Planet. Sci. Lett. 281, 2009), and none north, unless the operators set a
better one (:class:`SaaDrift`: the parameters ``saa_drift_west_deg_per_yr`` and
``saa_drift_north_deg_per_yr``, which every prediction of the agent's takes). The harness's truth
drifts at Insight-HXMT's rates over 2017-2024 (0.343 deg/yr west, 0.028 north), and it is the truth
the agent is flown against (hil/profiles/radiation.py): by late 2026 the agent's ellipse lies about
2.9 deg east and 1.9 deg south of the region it models, an error that grows by 0.05 deg a year.
Measured against that truth over a day of 300, 420, 540, 550 and 800 km orbits (16 node longitudes
each, 10 s steps): the ellipse took in 98.97 % or more of the belt's >10 MeV fluence at solar minimum
(99.8 % above 300 km), left out no stretch above 100 /cm²/s and none above 10 /cm²/s for over 130 s;
left where AP8 put it, it would have taken in 57 to 70 % at 300 km, 78 to 88 % at 420 km. At 1 s
steps (420 km 51.6 deg, 540 km 28.5 deg, 550 km sun-synchronous, 8 nodes) the truth's edge
(10 /cm²/s) came up to about a minute before the entry the agent predicts, a flux above 100 /cm²/s
never less than 28 s after it. tests/test_orbit_saa.py holds the fluence and stretch figures at 4
nodes (RAD-116). Neither the agent nor the truth follows the drift's irregularities (the jerks where
the anomaly stepped east for a while, which both papers report).

Fit to the map, at the table's epoch (tests/test_orbit_saa.py holds these, RAD-115): along 300 km,
ISS-like (420 km, 51.6 deg), Hubble's (540 km, 28.5 deg), sun-synchronous (550 km) and 800 km orbits
the ellipse takes in over 99 % of the inner belt's >10 MeV proton fluence, leaves no stretch where the
flux exceeds 100 /cm²/s out, none above the edge for over 3 minutes, and puts the board in the SAA
wrongly for 1.5-4 % of the time. It is loosest at 1000 km (stretches above 100 /cm²/s left out for up
to 100 s, 9.5 % of the time put in wrongly). The earlier stand-in (one ellipse, 31 x 62 deg at 540 km,
centred at 30 S 45 W, scaled linearly with altitude) took in 84 % of it at 420 km (41 % at 300 km),
leaving out stretches above 100 /cm²/s of up to ~10 minutes, and put the board in the SAA wrongly for
up to 10 % of the time at 800 km. FACTS.md's "Hubble spends ~15 % of its time in it" is Hubble's own,
wider operational contour; AP8's >10 MeV region holds 9 % of a 540 km, 28.5 deg orbit's time, the
ellipse 12 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAA_FLUX_CM2_S = 10.0
"""The SAA's edge: integral flux of protons above 10 MeV, /cm²/s (AP8-MIN), under 1 % of its
peak at 550 km (2.9e3 in the map; FACTS.md gives ~1.6e3 at 30 S 45 W). Inside it lies over 99 % of
the inner belt's fluence along the orbits the tests fly; outside it a part is upset at under a
hundredth of the peak rate."""

# -- fitted by scripts/fit_saa_model.py: begin
SAA_TABLE_MAP_SHA256 = "531fc293f81a75cdfa21e67044036830022c069f38642126ca8074f55f8e1577"
SAA_TABLE = (
    # alt_km, centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg
    (200.0, -38.95, -21.25, 29.49, 7.93, -15.09),
    (250.0, -37.99, -20.86, 34.99, 11.64, -11.12),
    (300.0, -36.60, -21.97, 41.94, 14.66, -12.35),
    (350.0, -35.27, -20.98, 46.82, 17.62, -10.67),
    (400.0, -34.34, -20.70, 50.68, 19.88, -10.01),
    (450.0, -33.03, -20.55, 54.71, 22.13, -8.99),
    (500.0, -31.85, -20.50, 58.38, 24.41, -8.53),
    (550.0, -30.69, -20.39, 61.25, 26.65, -7.69),
    (600.0, -29.45, -20.32, 64.23, 28.69, -6.29),
    (650.0, -28.08, -20.51, 67.67, 30.48, -5.18),
    (700.0, -26.74, -20.80, 71.69, 32.18, -4.45),
    (800.0, -23.55, -23.18, 80.35, 35.53, -3.63),
    (900.0, -18.92, -29.75, 94.55, 38.50, -3.89),
    (1000.0, -13.02, -42.72, 118.54, 41.75, -4.74),
    (1200.0, 0.33, -64.37, 155.39, 55.14, -6.10),
)
# -- fitted by scripts/fit_saa_model.py: end
"""Per altitude layer of the map: (alt_km, centre_lat_deg, centre_lon_deg, semi_major_deg,
semi_minor_deg, tilt_deg); the semi-axes in degrees of latitude and longitude, the major axis
``tilt_deg`` from east towards north (negative: its east end further south); semi-axes 0 where the
layer has no region (none has: the fit then gives it the nearest layer's centre and tilt). Written
by ``python scripts/fit_saa_model.py --write``, with ``SAA_TABLE_MAP_SHA256``, the digest of what the
fit read from the map (its axes and AP8-MIN's proton layer): a test checks the digest against the map
shipped and fits three layers again."""

_TABLE = np.asarray(SAA_TABLE, dtype=float).reshape(-1, 6)

SAA_TABLE_EPOCH_YEAR = 1960.0
"""Where in time the table places the anomaly: the epoch of the field AP8-MIN is evaluated in (Jensen
and Cain's, 1960; not the model's data epoch, 1964), which the map it was fitted to keeps
(scripts/build_radiation_map.py)."""

SAA_DRIFT_WEST_DEG_PER_YR = 0.30
"""The agent's estimate of the anomaly's westward drift, deg of longitude a year (RXTE, 1996-2007:
the module doc). An estimate, not the truth: the harness drifts its map at another published rate.
The default of the parameter ``saa_drift_west_deg_per_yr`` (tests/test_agent_inprocess.py holds the
dictionary's and this one equal, and the northward one's too)."""

SAA_DRIFT_NORTH_DEG_PER_YR = 0.0
"""And of its northward drift: none (Insight-HXMT measured 0.028 deg/yr, RXTE none it reported)."""

_SECONDS_PER_YEAR = 365.25 * 86400.0
_UNIX_EPOCH_YEAR = 1970.0


@dataclass(frozen=True)
class SaaDrift:
    """The agent's estimate of the anomaly's drift from the table's epoch, deg/yr: by default
    :data:`SAA_DRIFT_WEST_DEG_PER_YR` and :data:`SAA_DRIFT_NORTH_DEG_PER_YR`; in flight the operators'
    parameters ``saa_drift_west_deg_per_yr`` and ``saa_drift_north_deg_per_yr`` set it (a better
    estimate, from where upsets were seen or from a newer model's map)."""

    west_deg_per_yr: float = SAA_DRIFT_WEST_DEG_PER_YR
    north_deg_per_yr: float = SAA_DRIFT_NORTH_DEG_PER_YR


ESTIMATE = SaaDrift()
"""The estimate this build carries."""


def saa_drift_deg(at_unix_s, drift: SaaDrift = ESTIMATE) -> tuple[np.ndarray, np.ndarray]:
    """``(north_deg, west_deg)``: how far ``drift`` takes the anomaly to have moved from the table's
    epoch to ``at_unix_s`` (None: not at all, the table as fitted, for the fit and its tests).
    Broadcasts."""
    if at_unix_s is None:
        return np.zeros(()), np.zeros(())
    years = _UNIX_EPOCH_YEAR + np.asarray(at_unix_s, dtype=float) / _SECONDS_PER_YEAR - SAA_TABLE_EPOCH_YEAR
    return drift.north_deg_per_yr * years, drift.west_deg_per_yr * years


def tilted_rho(lat_deg, lon_deg, centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg,
               tilt_deg) -> np.ndarray:
    """Normalised distance from a tilted ellipse's centre (< 1 inside, 1 on its edge, inf where a
    semi-axis is 0 or not a number), longitude differences wrapped to -180..180. Broadcasts over every
    argument."""
    dlat = np.asarray(lat_deg, dtype=float) - centre_lat_deg
    dlon = np.mod(np.asarray(lon_deg, dtype=float) - centre_lon_deg + 180.0, 360.0) - 180.0
    tilt = np.radians(tilt_deg)
    along = np.cos(tilt) * dlon + np.sin(tilt) * dlat
    across = -np.sin(tilt) * dlon + np.cos(tilt) * dlat
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.hypot(along / semi_major_deg, across / semi_minor_deg)
    return np.where((np.asarray(semi_major_deg) > 0.0) & (np.asarray(semi_minor_deg) > 0.0), rho, np.inf)


def saa_ellipse(alt_km, at_unix_s, drift: SaaDrift = ESTIMATE) -> tuple[np.ndarray, ...]:
    """``(centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg)`` at ``alt_km``:
    :data:`SAA_TABLE` interpolated linearly in altitude, the nearest layer's beyond the table (a
    non-finite altitude gives semi-axes that are not numbers: outside everywhere), its centre moved by
    ``drift`` to ``at_unix_s`` (:func:`saa_drift_deg`; None: the table's epoch, as fitted). The time
    has no default: a prediction that forgot it would be some 20 deg off."""
    alt_km = np.asarray(alt_km, dtype=float)
    lat, lon, major, minor, tilt = (np.interp(alt_km, _TABLE[:, 0], _TABLE[:, k]) for k in range(1, 6))
    north, west = saa_drift_deg(at_unix_s, drift)
    return lat + north, lon - west, major, minor, tilt


def saa_ellipse_radius(lat_deg, lon_deg, alt_km, at_unix_s, drift: SaaDrift = ESTIMATE) -> np.ndarray:
    """Normalised distance from the SAA's centre at that altitude and time (:func:`saa_ellipse`): < 1
    inside, 1 on the edge, inf where there is no SAA. Useful for margins (e.g. treat < 1.1 as "about to
    enter")."""
    return tilted_rho(lat_deg, lon_deg, *saa_ellipse(alt_km, at_unix_s, drift))


def in_saa(lat_deg, lon_deg, alt_km, at_unix_s, drift: SaaDrift = ESTIMATE) -> np.ndarray:
    """True where (geodetic lat, lon, altitude) is inside the SAA model at ``at_unix_s``
    (:func:`saa_ellipse`). Broadcasts; returns a bool array.

    >>> in_saa([-30.0, 40.0, -30.0, -30.0], [-45.0, -45.0, -90.0, 30.0], 550.0, None).tolist()  # as fitted
    [True, False, False, True]
    >>> in_saa([-30.0, 40.0, -30.0, -30.0], [-45.0, -45.0, -90.0, 30.0], 550.0, 1_795_046_400.0).tolist()  # 2026
    [True, False, True, False]
    """
    return np.asarray(saa_ellipse_radius(lat_deg, lon_deg, alt_km, at_unix_s, drift) < 1.0)
