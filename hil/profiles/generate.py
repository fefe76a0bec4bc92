"""Generate orbit profiles: one vectorised pass over a time grid, orbit math from ``flight.orbit``.

For every sample of ``start + k·step`` (k = 0 … duration/step):

1. TEME position and velocity from sgp4 (:meth:`flight.orbit.Orbit.propagate`), the Sun
   (``sun_position_teme_km``), the conical shadow factor (``shadow_factor``), beta
   (``beta_angle_deg``), the point under the satellite (``teme_to_ecef`` →
   ``geodetic_from_ecef``);
2. solar array power (:mod:`hil.physics.solar`, panel by panel under the attitude), albedo and Earth IR
   (:mod:`hil.physics.environment`);
3. ground contacts: each station's WGS-84 position and local vertical against the
   satellite's Earth-fixed position, elevation = asin(ρ·û/|ρ|); in contact when at or
   above the station's mask; the best station is the highest one in contact;
4. radiation (:mod:`hil.profiles.radiation`): AP8/AE8 map lookup, upset rate, dose.

The orbit goes through its TLE first (``sgp4.exporter.export_tle`` and back through
:meth:`Orbit.from_tle`): the profile is then exactly what the TLE in its metadata gives,
the same TLE the agent is configured with, and a longer profile can be regenerated from a
file's metadata alone. For an orbit made from elements this moves it by metres (the TLE
format rounds the elements; measured < 10 m over a day).

Speed: a day at 1 s (86 400 samples, three stations) takes well under a second on one
core (``python -m bench.hil`` measures ``profile_samples_per_s``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from sgp4.api import WGS72, Satrec
from sgp4.exporter import export_tle

from flight.orbit import (
    Orbit,
    TleError,
    beta_angle_deg,
    geodetic_from_ecef,
    raan_deg_for_ltan,
    shadow_factor,
    sun_position_teme_km,
    sun_synchronous_inc_deg,
    teme_to_ecef,
)
from flight.orbit.elements import SGP4_EPOCH_JD
from flight.orbit.frames import WGS84_A_KM, WGS84_E2
from hil.physics.environment import albedo_flux_w_m2, earth_ir_flux_w_m2
from hil.physics.solar import ATTITUDES, POINTINGS, SOLAR_CONSTANT_W_M2, array_power_w, solar_array_power_w
from hil.profiles.format import Profile, ProfileError, read_profile, validate_profile, write_profile
from hil.profiles.radiation import RadiationParams, load_flux_map, radiation_along_track

GENERATOR = "hil.profiles.generate"
GENERATOR_VERSION = "2"  # 2: the truth's SAA drifts (RadiationParams.saa_drift_*)

EPOCH_SHIPPED_ISO = "2026-11-24T00:00:00Z"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHIPPED_DIR = DATA_DIR / "profiles"
MAX_STEPS = 1_000_000
"""Steps of a generated profile: a million (11.6 days at 1 s, 116 at 10 s) take about 0.6 GB while they are
built, and a scenario's run (:data:`hil.scenario.MAX_STEPS`) fits in one (found in audit: ``sunlit-hil generate
--duration-s 1e12`` asked for 745 GiB, an internal error)."""


_DEFAULT_NORMAL = (1.0, 0.0, 0.0)
_DEFAULT_AREA_M2 = 0.2
# Upper bounds of a spacecraft's figures, past anything flown (found in audit: --array-area-m2 1e300 made a profile
# of 4e302 W, flown in silence; 1e308 overflowed to inf, refused naming the column solar_power_w, not the option).
MAX_ARRAY_AREA_M2 = 1.0e4  # the array, all panels (the ISS's eight wings: about 2 500 m²); the agent's model of
MAX_YEARS_IN_ORBIT = 100.0  # its array (flight/power/array.py) takes a panel, and years, up to these too
MAX_SOLAR_CONSTANT_W_M2 = 2.0 * SOLAR_CONSTANT_W_M2  # the orbit is the Earth's: 1 361 W/m², ±3.4 % over the year


@dataclass(frozen=True)
class SpacecraftParams:
    """The spacecraft as the profile sees it: its solar array. Validated here, once.

    Defaults (estimates): 0.2 m² of triple-junction cells at 30 % (beginning of life),
    losing 1 %/yr; a sun-tracking array. That is 81.7 W in full sun, ~52 W orbit-average
    on the 10:30 sun-synchronous orbit: a small spacecraft able to carry a Jetson at its
    middle power modes plus a 12 W platform.

    Geometry (used when ``array_pointing`` is "body_fixed"; a sun-tracking array only adds
    its panels' areas): ``array_panels``, a tuple of (normal in the body frame, area_m2)
    (a mapping ``{"normal", "area_m2"}`` is read too: a profile's metadata), under
    ``array_attitude`` (nadir | sun | inertial, :mod:`hil.physics.solar`). With no panels,
    one panel from ``array_normal_orbit_frame`` and ``array_area_m2`` (the old one-panel
    fields, kept for callers and profiles that predate panels). Giving panels and a
    non-default single panel that differs from them is an error: which would be flown?
    """

    array_area_m2: float = _DEFAULT_AREA_M2
    array_efficiency: float = 0.30
    degradation_per_year: float = 0.01
    years_in_orbit: float = 0.0
    array_pointing: str = "sun_tracking"
    array_normal_orbit_frame: tuple[float, float, float] = _DEFAULT_NORMAL
    solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2
    array_attitude: str = "nadir"
    array_panels: tuple[tuple[tuple[float, float, float], float], ...] = ()

    def __post_init__(self):
        for name in ("array_area_m2", "array_efficiency", "degradation_per_year", "years_in_orbit",
                     "solar_constant_w_m2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"SpacecraftParams.{name} must be a finite number >= 0, got {value!r}")
        if not self.array_efficiency <= 1.0:
            raise ValueError(f"SpacecraftParams.array_efficiency must be <= 1, got {self.array_efficiency}")
        for name, most in (("array_area_m2", MAX_ARRAY_AREA_M2), ("years_in_orbit", MAX_YEARS_IN_ORBIT),
                           ("solar_constant_w_m2", MAX_SOLAR_CONSTANT_W_M2)):
            if not getattr(self, name) <= most:
                raise ValueError(f"SpacecraftParams.{name} must be at most {most:g}, got {getattr(self, name)!r}")
        if not self.degradation_per_year < 1.0:
            raise ValueError(
                "SpacecraftParams.degradation_per_year is a fraction per year (0.01 = 1 %/yr), "
                f"got {self.degradation_per_year}"
            )
        if self.array_pointing not in POINTINGS:
            raise ValueError(f"SpacecraftParams.array_pointing must be one of {POINTINGS}, got {self.array_pointing!r}")
        if self.array_attitude not in ATTITUDES:
            raise ValueError(f"SpacecraftParams.array_attitude must be one of {ATTITUDES}, got {self.array_attitude!r}")
        normal = _vector3(self.array_normal_orbit_frame, "array_normal_orbit_frame")
        object.__setattr__(self, "array_normal_orbit_frame", normal)
        if isinstance(self.array_panels, (str, bytes)) or not isinstance(self.array_panels, Sequence):
            raise ValueError(f"SpacecraftParams.array_panels must be a sequence of (normal, area_m2), "
                             f"got {self.array_panels!r}")
        panels = tuple(_panel(p, i) for i, p in enumerate(self.array_panels))
        object.__setattr__(self, "array_panels", panels)
        if not sum(area for _, area in panels) <= MAX_ARRAY_AREA_M2:  # each panel's finite, their sum may not be
            raise ValueError(f"SpacecraftParams.array_panels: their area_m2 add up to more than {MAX_ARRAY_AREA_M2:g}, "
                             f"got {sum(area for _, area in panels):g}")
        single = ((normal, float(self.array_area_m2)),)
        if panels and panels != single and (normal != _DEFAULT_NORMAL or self.array_area_m2 != _DEFAULT_AREA_M2):
            raise ValueError("SpacecraftParams.array_panels: give the panels or the one-panel array_normal_orbit_frame "
                             "and array_area_m2, not both")

    @property
    def panels(self) -> tuple[tuple[tuple[float, float, float], float], ...]:
        """The array flown: ``array_panels``, or the one panel of the old fields."""
        return self.array_panels or ((self.array_normal_orbit_frame, float(self.array_area_m2)),)

    @property
    def total_area_m2(self) -> float:
        return float(sum(area for _, area in self.panels))

    def full_sun_power_w(self) -> float:
        """Output with every panel facing the Sun in full sunlight, W: S·ΣA·η·(1 − d)^years."""
        return float(solar_array_power_w(1.0, 1.0, self.total_area_m2, self.array_efficiency,
                                         self.degradation_per_year, self.years_in_orbit, self.solar_constant_w_m2))

    def metadata(self) -> dict[str, Any]:
        """JSON-able, and read back by the constructor (:func:`regenerate`). ``array_panels`` is
        the array flown; the one-panel fields are left out when panels were given (unused there)."""
        meta = {**asdict(self), "array_normal_orbit_frame": list(self.array_normal_orbit_frame),
                "array_panels": [{"normal": list(n), "area_m2": a} for n, a in self.panels]}
        if self.array_panels:
            del meta["array_area_m2"], meta["array_normal_orbit_frame"]
        return meta


def _vector3(value: Any, field_name: str) -> tuple[float, float, float]:
    try:
        vec = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        vec = ()
    if len(vec) != 3 or not all(math.isfinite(x) for x in vec) or not math.hypot(*vec) > 0:
        raise ValueError(f"SpacecraftParams.{field_name} must be three finite numbers, not all zero, got {value!r}")
    return vec  # type: ignore[return-value]


def _panel(panel: Any, i: int) -> tuple[tuple[float, float, float], float]:
    where = f"array_panels[{i}]"
    if isinstance(panel, dict):
        if set(panel) != {"normal", "area_m2"}:
            raise ValueError(f"SpacecraftParams.{where} must have normal and area_m2 only, got {sorted(panel)}")
        normal, area = panel["normal"], panel["area_m2"]
    elif isinstance(panel, Sequence) and not isinstance(panel, (str, bytes)) and len(panel) == 2:
        normal, area = panel
    else:
        raise ValueError(f"SpacecraftParams.{where} must be (normal, area_m2), got {panel!r}")
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not (math.isfinite(area) and area > 0):
        raise ValueError(f"SpacecraftParams.{where}.area_m2 must be a finite number > 0, got {area!r}")
    return _vector3(normal, f"{where}.normal"), float(area)


@dataclass(frozen=True)
class GroundStation:
    """A ground station: WGS-84 geodetic position and elevation mask."""

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    min_elevation_deg: float = 10.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "," in self.name or "\n" in self.name:
            raise ValueError(
                f"GroundStation.name must be a non-empty string without commas or newlines, got {self.name!r}"
            )
        if not -90.0 <= self.lat_deg <= 90.0:
            raise ValueError(f"GroundStation {self.name}: lat_deg must be in [-90, 90], got {self.lat_deg}")
        if not -180.0 <= self.lon_deg <= 360.0:
            raise ValueError(f"GroundStation {self.name}: lon_deg must be in [-180, 360], got {self.lon_deg}")
        if not -500.0 <= self.alt_m <= 9000.0:
            raise ValueError(f"GroundStation {self.name}: alt_m must be a ground altitude in metres, got {self.alt_m}")
        if not -90.0 <= self.min_elevation_deg < 90.0:
            raise ValueError(
                f"GroundStation {self.name}: min_elevation_deg must be in [-90, 90), got {self.min_elevation_deg}"
            )

    def ecef_km(self) -> np.ndarray:
        """Earth-fixed position, km: the standard geodetic → ECEF formula on WGS-84
        (NIMA TR8350.2 eq. 4-14): N = a/√(1 − e² sin²φ); x, y = (N + h) cos φ (cos λ, sin λ);
        z = (N (1 − e²) + h) sin φ."""
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        n_km = WGS84_A_KM / math.sqrt(1.0 - WGS84_E2 * math.sin(lat) ** 2)
        h_km = self.alt_m / 1000.0
        return np.array([
            (n_km + h_km) * math.cos(lat) * math.cos(lon),
            (n_km + h_km) * math.cos(lat) * math.sin(lon),
            (n_km * (1.0 - WGS84_E2) + h_km) * math.sin(lat),
        ])

    def up(self) -> np.ndarray:
        """Local vertical (the ellipsoid normal), unit vector in ECEF."""
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])


DEFAULT_STATIONS: tuple[GroundStation, ...] = (
    GroundStation("svalbard", 78.2, 15.4, 500.0, 10.0),
    GroundStation("fairbanks", 64.8, -147.7, 300.0, 10.0),
    GroundStation("midlat_40n", 40.0, -105.0, 1600.0, 10.0),
)
"""A small polar-heavy network with a 10° mask: Svalbard (KSAT SvalSat) and Fairbanks, the
two high-latitude stations FACTS.md gives contact times for, and a mid-latitude one at
40° N (105° W). Station altitudes are rough (estimates); they change elevations by < 0.1°."""


def elevation_deg(r_ecef_km: np.ndarray, stations: Sequence[GroundStation]) -> np.ndarray:
    """Elevation of the satellite above each station's horizon, deg, shape (len(stations), N).

    ρ = r_sat − r_station (ECEF), elevation = asin(ρ·û / |ρ|) with û the station's local
    vertical. No refraction (it lifts a 10° elevation by ~0.1°).
    """
    r_ecef_km = np.asarray(r_ecef_km, dtype=float)
    out = np.empty((len(stations), r_ecef_km.shape[0]))
    for i, st in enumerate(stations):
        rho = r_ecef_km - st.ecef_km()
        sin_el = (rho @ st.up()) / np.linalg.norm(rho, axis=-1)
        out[i] = np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))
    return out


def _tle_orbit(orbit: Orbit) -> tuple[Orbit, tuple[str, str]]:
    line1, line2 = export_tle(orbit.satrec)
    return Orbit.from_tle(line1, line2, orbit.name), (line1, line2)


def _orbit_metadata(orbit: Orbit, tle: tuple[str, str], description: dict[str, Any] | None) -> dict[str, Any]:
    sat = orbit.satrec
    return {
        "name": orbit.name,
        "tle": list(tle),
        "epoch_unix_s": orbit.epoch_unix_s,
        "inc_deg": math.degrees(sat.inclo),
        "raan_deg": math.degrees(sat.nodeo),
        "ecc": float(sat.ecco),
        "argp_deg": math.degrees(sat.argpo),
        "mean_anomaly_deg": math.degrees(sat.mo),
        "mean_motion_rev_per_day": sat.no_kozai * 1440.0 / (2.0 * math.pi),
        "period_s": orbit.period_s,
        "semi_major_axis_km": orbit.semi_major_axis_km,
        "description": dict(description or {}),
    }


def generate_profile(
    orbit: Orbit,
    start_unix_s: float,
    duration_s: float,
    step_s: float,
    spacecraft: SpacecraftParams = SpacecraftParams(),
    stations: Sequence[GroundStation] = DEFAULT_STATIONS,
    radiation: RadiationParams = RadiationParams(),
    *,
    orbit_description: dict[str, Any] | None = None,
) -> Profile:
    """A profile from ``start_unix_s`` for ``duration_s`` (inclusive) every ``step_s`` seconds.

    ``orbit_description`` (optional) records how the orbit was chosen (e.g. ``{"alt_km":
    550, "ltan_h": 22.5}``) in the metadata. See the module doc for what each column is
    computed from; :mod:`hil.profiles.format` for the columns and their units.
    """
    if not isinstance(orbit, Orbit):
        raise TypeError(
            f"orbit must be a flight.orbit.Orbit (Orbit.from_tle / from_elements), got {type(orbit).__name__}"
        )
    if not (math.isfinite(step_s) and step_s > 0.0):
        raise ValueError(f"step_s must be > 0, got {step_s}")
    if not (math.isfinite(duration_s) and duration_s >= step_s):
        raise ValueError(f"duration_s must be at least one step ({step_s} s), got {duration_s}")
    if duration_s / step_s > MAX_STEPS:
        raise ValueError(f"duration_s {duration_s:g} is {duration_s / step_s:.3g} steps of {step_s:g} s: at most "
                         f"{MAX_STEPS:,} (a longer step_s, or a shorter duration_s)")
    if len({s.name for s in stations}) != len(stations):
        raise ValueError(f"station names must be unique, got {[s.name for s in stations]}")
    steps = duration_s / step_s
    if abs(steps - round(steps)) > 1e-9 * steps:  # as a scenario's duration_s (found in audit: sunlit-hil generate
        # --duration-s 105 --step-s 10 wrote a profile of 100 s, and said nothing of the 5 s it left out)
        below, above = math.floor(steps) * step_s, math.ceil(steps) * step_s
        raise ValueError(f"duration_s {duration_s:g} s is not a whole number of steps of step_s = {step_s:g} s "
                         f"(make it {below:g} or {above:g})")
    orbit, tle = _tle_orbit(orbit)
    n = round(steps) + 1
    t = float(start_unix_s) + step_s * np.arange(n, dtype=float)

    r_km, v_km_s = orbit.propagate(t)
    r_sun_km = sun_position_teme_km(t)
    shadow = shadow_factor(r_km, r_sun_km, "conical")
    to_sun = r_sun_km - r_km
    sun_hat = to_sun / np.linalg.norm(to_sun, axis=-1, keepdims=True)
    r_ecef_km = teme_to_ecef(r_km, t)
    lat_deg, lon_deg, alt_km = geodetic_from_ecef(r_ecef_km)
    solar_w = array_power_w(shadow, sun_hat, r_km, v_km_s, spacecraft.panels, spacecraft.array_efficiency,
                            spacecraft.degradation_per_year, spacecraft.years_in_orbit, spacecraft.array_pointing,
                            spacecraft.array_attitude, spacecraft.solar_constant_w_m2)

    if stations:
        elev = elevation_deg(r_ecef_km, stations)
        masks = np.array([s.min_elevation_deg for s in stations])[:, None]
        visible = elev >= masks
        in_contact = visible.any(axis=0)
        best_visible = np.argmax(np.where(visible, elev, -np.inf), axis=0)
        best_any = np.argmax(elev, axis=0)
        best = np.where(in_contact, best_visible, best_any)
        best_elev = elev[best, np.arange(n)]
        names = np.array([s.name for s in stations], dtype=object)
        station = np.where(in_contact, names[best], "")
    else:
        in_contact = np.zeros(n, dtype=bool)
        station = np.full(n, "", dtype=object)
        best_elev = np.full(n, np.nan)

    flux_map = load_flux_map(radiation.map_path)
    rad = radiation_along_track(t, lat_deg, lon_deg, alt_km, radiation, flux_map)

    columns = {
        "time_s": t,
        "lat_deg": lat_deg,
        "lon_deg": lon_deg,
        "alt_km": alt_km,
        "r_x_km": r_km[:, 0],
        "r_y_km": r_km[:, 1],
        "r_z_km": r_km[:, 2],
        "sun_x": sun_hat[:, 0],
        "sun_y": sun_hat[:, 1],
        "sun_z": sun_hat[:, 2],
        "shadow_factor": shadow,
        "in_umbra": shadow <= 0.0,
        "beta_deg": beta_angle_deg(r_km, v_km_s, r_sun_km),
        "solar_power_w": solar_w,
        "albedo_w_m2": albedo_flux_w_m2(r_km, sun_hat),
        "earth_ir_w_m2": earth_ir_flux_w_m2(r_km),
        "in_contact": in_contact,
        "station": station,
        "elevation_deg": best_elev,
        "proton_flux_cm2_s": rad.proton_flux_cm2_s,
        "electron_flux_cm2_s": rad.electron_flux_cm2_s,
        "upset_rate_per_s": rad.upset_rate_per_s,
        "dose_rad": rad.dose_rad,
    }
    metadata = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "start_unix_s": float(start_unix_s),
        "start_utc": _iso(float(start_unix_s)),
        "duration_s": float(t[-1] - t[0]),
        "step_s": float(step_s),
        "samples": n,
        "orbit": _orbit_metadata(orbit, tle, orbit_description),
        "spacecraft": spacecraft.metadata(),
        "stations": [asdict(s) for s in stations],
        "radiation": {
            **asdict(radiation),
            "map_source": flux_map.source,
            "map_alt_km": [float(flux_map.alt_km[0]), float(flux_map.alt_km[-1])],
            "saa_drift_at_start_deg": dict(zip(("north", "west"), (round(float(d), 3) for d in
                                                                   radiation.drift_deg(float(start_unix_s))))),
            "clamped_alt_samples": rad.clamped_alt_samples,
        },
        "shadow_model": "conical (Montenbruck & Gill 3.4.2), flight.orbit.shadow_factor",
    }
    return validate_profile(columns, metadata)


def _iso(unix_s: float) -> str:
    return _dt.datetime.fromtimestamp(unix_s, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The years a TLE's epoch can say: two digits, 57-99 for 1957-1999 and 00-56 for 2000-2056 (Space-Track's
# convention, sgp4's twoline2rv). A time outside them would be handed to the agent as a TLE 100 years off.
TLE_FIRST_YEAR, TLE_LAST_YEAR = 1957, 2056
_TLE_FIRST_S = _dt.datetime(TLE_FIRST_YEAR, 1, 1, tzinfo=_dt.timezone.utc).timestamp()
_TLE_END_S = _dt.datetime(TLE_LAST_YEAR + 1, 1, 1, tzinfo=_dt.timezone.utc).timestamp()


def parse_epoch(value: str | float | int) -> float:
    """UTC Unix seconds from an ISO 8601 string ('2026-11-24T00:00:00Z'; no zone means UTC) or a number,
    within the years a TLE encodes (:data:`TLE_FIRST_YEAR` to :data:`TLE_LAST_YEAR`). Found in audit: 1e20
    passed here and failed later as a TleError (exit 3); 1900 was flown with a TLE saying 2000."""
    if isinstance(value, bool):
        raise ValueError(f"epoch must be an ISO 8601 time or Unix seconds, got {value!r}")
    if isinstance(value, (int, float)):
        unix_s = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.nan  # no OverflowError
    else:
        try:
            when = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"epoch {value!r} is not ISO 8601, e.g. 2026-11-24T00:00:00Z") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        unix_s = when.timestamp()
    if not _TLE_FIRST_S <= unix_s < _TLE_END_S:  # nan too
        raise ValueError(f"{value!r} is outside the years a TLE's epoch can say, {TLE_FIRST_YEAR} to {TLE_LAST_YEAR} "
                         f"(Unix s {_TLE_FIRST_S:.0f} to {_TLE_END_S:.0f})")
    return unix_s


# ------------------------------------------------------------------------------ orbits by description
ORBIT_KEYS = ("tle", "name", "alt_km", "inc_deg", "sun_synchronous", "raan_deg", "ltan_h", "epoch", "ecc",
              "argp_deg", "mean_anomaly_deg", "start")


_ANGLE_KEYS = ("raan_deg", "argp_deg", "mean_anomaly_deg")
_NUMBER_KEYS = ("alt_km", "inc_deg", "ecc", "ltan_h") + _ANGLE_KEYS


def _finite_elements(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with each element a finite number (ProfileError naming the key) and the angles a TLE holds in
    [0, 360) taken there: -30 is 330 (found in audit: a RAAN of -30, which a scenario takes, failed when the
    TLE was written, exit 3 with sgp4's unformatted message; a NaN altitude failed as a bad TLE)."""
    out = dict(spec)
    for key in _NUMBER_KEYS:
        if key not in spec:
            continue
        value = spec[key]
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError, OverflowError):  # a whole number past a float's range: not finite
            number = math.nan
        if not math.isfinite(number):
            raise ProfileError(f"orbit: {key} must be a finite number, got {value!r}")
        out[key] = number % 360.0 if key in _ANGLE_KEYS else number
    return out


def orbit_from_description(spec: dict[str, Any]) -> tuple[Orbit, float, dict[str, Any]]:
    """(orbit, start Unix s, description) from a dict, as in a scenario's ``[orbit]`` table.

    Either ``tle = [line1, line2]`` (starts at the TLE epoch unless ``start`` is given), or
    ``alt_km`` with ``inc_deg`` (or ``sun_synchronous = true``), ``raan_deg`` or ``ltan_h``
    (local time of the ascending node, hours; 22.5 for a 10:30 descending node), ``epoch``
    (ISO 8601 or Unix s; default 2026-11-24T00:00:00Z), and optionally ``ecc``,
    ``argp_deg``, ``mean_anomaly_deg``, ``start``. Raises ProfileError naming the key.
    """
    unknown = sorted(set(spec) - set(ORBIT_KEYS))
    if unknown:
        raise ProfileError(f"orbit: unknown key {unknown[0]!r}; an orbit takes {', '.join(ORBIT_KEYS)}")
    description = dict(spec)
    spec = _finite_elements(spec)
    try:
        if "tle" in spec:
            both = sorted(set(spec) & {"alt_km", "inc_deg", "sun_synchronous", "raan_deg", "ltan_h", "epoch", "ecc",
                                        "argp_deg", "mean_anomaly_deg"})
            if both:
                raise ProfileError(f"orbit: give tle or elements, not both (also got {', '.join(both)})")
            tle = spec["tle"]
            if not isinstance(tle, (list, tuple)) or len(tle) != 2:
                raise ProfileError("orbit: tle must be two lines, [line1, line2]")
            orbit = Orbit.from_tle(str(tle[0]), str(tle[1]), str(spec.get("name", "")))
            start = parse_epoch(spec["start"]) if "start" in spec else orbit.epoch_unix_s
            return orbit, start, description
        if "alt_km" not in spec:
            raise ProfileError("orbit: give tle = [line1, line2], or alt_km with inc_deg (or sun_synchronous = true)")
        alt_km = float(spec["alt_km"])
        if spec.get("sun_synchronous"):
            if "inc_deg" in spec:
                raise ProfileError("orbit: give inc_deg or sun_synchronous = true, not both")
            inc_deg = sun_synchronous_inc_deg(alt_km, float(spec.get("ecc", 0.0)))
            description["inc_deg"] = inc_deg
        elif "inc_deg" in spec:
            inc_deg = float(spec["inc_deg"])
        else:
            raise ProfileError(
                f"orbit: inc_deg is missing (or set sun_synchronous = true: {sun_synchronous_inc_deg(alt_km):.2f} deg "
                f"at {alt_km:g} km)"
            )
        epoch = parse_epoch(spec.get("epoch", EPOCH_SHIPPED_ISO))
        if "raan_deg" in spec and "ltan_h" in spec:
            raise ProfileError("orbit: give raan_deg or ltan_h, not both")
        if "ltan_h" in spec:
            ltan_h = float(spec["ltan_h"])
            if not 0.0 <= ltan_h <= 24.0:  # as a scenario's [orbit] takes it (found in use: 30 h was flown)
                raise ProfileError(f"orbit: ltan_h {ltan_h:g} is not a local time of 0 to 24 h")
            raan_deg = raan_deg_for_ltan(ltan_h, epoch)
            description["raan_deg"] = raan_deg
        else:
            raan_deg = float(spec.get("raan_deg", 0.0))
        orbit = Orbit.from_elements(
            alt_km, inc_deg, raan_deg, epoch, float(spec.get("ecc", 0.0)), float(spec.get("argp_deg", 0.0)),
            float(spec.get("mean_anomaly_deg", 0.0)), name=str(spec.get("name", "")),
        )
        start = parse_epoch(spec["start"]) if "start" in spec else epoch
        return orbit, start, description
    except (TleError, ValueError, TypeError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"orbit: {exc}") from None


# ------------------------------------------------------------------------------ shipped profiles
SHIPPED_DURATION_S = 10800.0
"""Three hours (about two orbits) per shipped file: enough for a one-orbit scenario with
room to spare; the harness regenerates longer ones from the file's metadata."""
SHIPPED_STEP_S = 10.0

SHIPPED: dict[str, dict[str, Any]] = {
    # 10:30 descending node (the usual Earth-observation choice) = 22:30 ascending node; β ≈ 24° at the epoch.
    "sso_550": {"name": "sso_550", "alt_km": 550.0, "sun_synchronous": True, "ltan_h": 22.5,
                "epoch": EPOCH_SHIPPED_ISO},
    # ISS-like: 51.6°, ~420 km; the RAAN is arbitrary (β ≈ 25° at the epoch with 0).
    "iss_51_6": {"name": "iss_51_6", "alt_km": 420.0, "inc_deg": 51.6, "raan_deg": 0.0, "epoch": EPOCH_SHIPPED_ISO},
    # Dawn-dusk: ascending node at 18:00. In late November (Sun at declination -20.6°) this
    # puts β ≈ +77°, above the ~67° no-eclipse limit at 550 km: no umbra at all. (06:00
    # would give β ≈ -62° at this time of year, with short eclipses.)
    "dawn_dusk": {"name": "dawn_dusk", "alt_km": 550.0, "sun_synchronous": True, "ltan_h": 18.0,
                  "epoch": EPOCH_SHIPPED_ISO},
}


def build_shipped_profiles(out_dir: str | Path = SHIPPED_DIR, suffix: str = ".parquet") -> list[Path]:
    """(Re)write the shipped profiles: default spacecraft, stations and radiation, 3 h at 10 s."""
    paths = []
    for name, spec in SHIPPED.items():
        orbit, start, description = orbit_from_description(spec)
        profile = generate_profile(orbit, start, SHIPPED_DURATION_S, SHIPPED_STEP_S, orbit_description=description)
        paths.append(write_profile(profile, Path(out_dir) / f"{name}{suffix}"))
    return paths


# ------------------------------------------------------------------------------ harness and CLI helpers
def replay_check(path: str | Path) -> Profile:
    """Read and validate a profile file; raises ProfileError (or OSError) saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"{path}: no such profile file")
    return read_profile(path)


def regenerate(profile: Profile, duration_s: float, step_s: float | None = None) -> Profile:
    """The same profile (orbit, start, spacecraft, stations, radiation) over ``duration_s``, from its metadata."""
    meta = profile.metadata
    if meta.get("generator") != GENERATOR or not profile.tle():
        raise ProfileError(
            f"this profile covers {profile.duration_s:.0f} s and was not made by {GENERATOR} (no orbit in its "
            "metadata), so it cannot be extended; supply a longer one"
        )
    def made(what: str, make: Callable[[], Any]) -> Any:
        """``make()``, or ProfileError naming the metadata it came from: a hand-edited file is bad input, not an
        internal error (an audit: a station's unknown key, an efficiency of 2, a step of "ten" each raised)."""
        try:
            return make()
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ProfileError(f"the profile's metadata.{what} cannot be made again: {exc}") from None

    orbit = made("orbit", lambda: Orbit.from_tle(*profile.tle(), name=str(meta["orbit"].get("name", ""))))
    craft_fields = {f.name for f in fields(SpacecraftParams)}
    spacecraft = made("spacecraft", lambda: SpacecraftParams(
        **{k: v for k, v in meta.get("spacecraft", {}).items() if k in craft_fields}))
    listed = made("stations", lambda: list(meta.get("stations", [])))  # found in audit: null or 5 a TypeError
    stations = [made(f"stations[{i}]", lambda s=s: GroundStation(**s)) for i, s in enumerate(listed)]
    radiation = made("radiation", lambda: RadiationParams.from_metadata(meta.get("radiation", {})))
    step = made("step_s", lambda: step_s or float(meta.get("step_s", profile.step_s)))
    description = made("orbit.description", lambda: dict(meta["orbit"].get("description") or {}))  # [1, 2] too
    if not (math.isfinite(step) and step > 0):
        raise ProfileError(f"the profile's metadata.step_s cannot be made again: {step} is not a step above 0")
    # Whole steps of the profile's own that reach the run's end: a run of 11521 s on a profile of 30 s steps
    # ends past its last sample of 11520 s otherwise (found in review: the run failed at its last step)
    covering_s = math.ceil(duration_s / step - 1e-9) * step
    try:
        return generate_profile(orbit, profile.start_s, covering_s, step, spacecraft, stations, radiation,
                                orbit_description=description)
    except ValueError as exc:  # past MAX_STEPS at the profile's step: bad input (found in review: an internal error)
        raise ProfileError(f"this profile cannot be extended to {duration_s:g} s: {exc}") from None


def load_or_generate(scenario: Any) -> Profile:
    """The profile a scenario flies: its ``profile`` file, or one generated from its ``[orbit]`` table.

    Reads ``scenario.profile`` (a path or None), ``scenario.orbit`` (a dict or None),
    ``scenario.duration_s`` and ``scenario.step_s``. A file shorter than the run is
    regenerated, longer, from its own metadata (the result's notes say so); a generated
    profile uses the scenario's step.
    """
    duration_s = float(scenario.duration_s)
    path = getattr(scenario, "profile", None)
    if path is not None:
        profile = replay_check(path)
        if profile.duration_s + 1e-6 < duration_s:
            try:
                longer = regenerate(profile, duration_s)
            except ProfileError as exc:  # which file's metadata (found in audit: the run's error named none)
                raise ProfileError(f"{path}: {exc}", column=exc.column, row=exc.row) from None
            note = (f"{path} covers {profile.duration_s:.0f} s, the run {duration_s:.0f} s: regenerated from its "
                    "metadata for the whole run")
            return Profile(longer.columns, longer.metadata, longer.notes + (note,))
        return profile
    spec = getattr(scenario, "orbit", None)
    if not spec:
        raise ProfileError("the scenario gives neither a profile file nor an [orbit] to generate one from")
    orbit, start, description = orbit_from_description(dict(spec))
    array = getattr(scenario, "array", None)
    try:
        spacecraft = SpacecraftParams(**array) if array else SpacecraftParams()
    except (TypeError, ValueError) as exc:  # a bound the scenario does not check (an area past MAX_ARRAY_AREA_M2)
        raise ProfileError(f"array: {exc}") from None
    return generate_profile(orbit, start, duration_s, float(scenario.step_s), spacecraft, orbit_description=description)


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options :func:`generate_cli` understands (``sunlit-hil generate`` can adopt them)."""
    parser.add_argument("--tle", nargs=2, metavar=("LINE1", "LINE2"), help="two-line element set")
    parser.add_argument("--alt-km", type=float, help="circular orbit altitude (instead of --tle)")
    parser.add_argument("--inc-deg", type=float, help="inclination; --sun-synchronous to compute it")
    parser.add_argument("--sun-synchronous", action="store_true", help="sun-synchronous inclination for --alt-km")
    parser.add_argument("--raan-deg", type=float, default=None, help="right ascension of the ascending node")
    parser.add_argument("--ltan-h", type=float, default=None, help="local time of the ascending node, hours")
    parser.add_argument("--epoch", default=EPOCH_SHIPPED_ISO, help="elements epoch (ISO 8601), default %(default)s")
    parser.add_argument("--start", default=None, help="profile start (ISO 8601); default the orbit's epoch")
    parser.add_argument("--duration-s", type=float, default=86400.0)
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--out", required=True, help="output .parquet or .csv")
    parser.add_argument("--array-area-m2", type=float, default=None)
    parser.add_argument("--array-efficiency", type=float, default=None)
    parser.add_argument("--degradation-per-year", type=float, default=None)
    parser.add_argument("--years-in-orbit", type=float, default=None)
    parser.add_argument("--array-pointing", choices=POINTINGS, default=None)
    parser.add_argument("--array-attitude", choices=ATTITUDES, default=None, help="body_fixed only (default nadir)")
    parser.add_argument("--saa-drift-west-deg-per-yr", type=float, default=None,
                        help="the truth's westward drift of the SAA from AP8's epoch (default 0.343)")
    parser.add_argument("--saa-drift-north-deg-per-yr", type=float, default=None,
                        help="and its northward drift (default 0.028)")
    return parser


def generate_cli(args: argparse.Namespace | Sequence[str]) -> int:
    """``sunlit-hil generate``: build a profile from ``--tle`` or ``--alt-km/--inc-deg/...`` and write it.

    Takes the parsed namespace (attributes missing from it take their defaults) or a list
    of command-line words. Prints one JSON line (samples, seconds, samples/s, path);
    returns 0, or 2 with the reason on stderr for bad input.
    """
    import json

    if not isinstance(args, argparse.Namespace):
        args = add_generate_arguments(argparse.ArgumentParser(prog="sunlit-hil generate")).parse_args(list(args))
    defaults = vars(add_generate_arguments(argparse.ArgumentParser()).parse_args(["--out", "-"]))
    opt = {k: getattr(args, k, v) for k, v in defaults.items()}
    try:
        if opt["tle"]:
            spec: dict[str, Any] = {"tle": list(opt["tle"])}
        elif opt["alt_km"] is not None:
            spec = {"alt_km": opt["alt_km"], "epoch": opt["epoch"]}
            if opt["sun_synchronous"]:
                spec["sun_synchronous"] = True
            if opt["inc_deg"] is not None:
                spec["inc_deg"] = opt["inc_deg"]
            if opt["ltan_h"] is not None:
                spec["ltan_h"] = opt["ltan_h"]
            if opt["raan_deg"] is not None:
                spec["raan_deg"] = opt["raan_deg"]
        else:
            raise ProfileError("give --tle LINE1 LINE2, or --alt-km with --inc-deg (or --sun-synchronous)")
        if opt["start"]:
            spec["start"] = opt["start"]
        orbit, start, description = orbit_from_description(spec)
        craft = {k: opt[k] for k in ("array_area_m2", "array_efficiency", "degradation_per_year", "years_in_orbit",
                                     "array_pointing", "array_attitude") if opt[k] is not None}
        spacecraft = SpacecraftParams(**craft)
        radiation = RadiationParams(**{k: opt[k] for k in ("saa_drift_west_deg_per_yr", "saa_drift_north_deg_per_yr")
                                       if opt[k] is not None})
        wall0 = time.perf_counter()
        profile = generate_profile(orbit, start, float(opt["duration_s"]), float(opt["step_s"]), spacecraft,
                                   radiation=radiation, orbit_description=description)
        seconds = time.perf_counter() - wall0
        path = write_profile(profile, opt["out"])
    except (ProfileError, ValueError, OSError) as exc:
        print(f"sunlit-hil generate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(path), "samples": len(profile), "generate_s": round(seconds, 3),
                      "profile_samples_per_s": round(len(profile) / max(seconds, 1e-9)),
                      "sunlit_fraction": round(float(np.mean(profile.columns["shadow_factor"] > 0)), 4),
                      "tle": list(profile.tle() or ()), "notes": list(profile.notes)}))
    return 0


def believed_tle(tle: tuple[str, str], along_track_km: float) -> tuple[str, str]:
    """The TLE the agent is given: the truth's, its spacecraft ``along_track_km`` ahead along its track at
    epoch (the mean anomaly moved by s / a). A TLE a day or two old is a few km off, mostly along track
    (drag the fit did not foresee); the profile is flown on the truth's, so the agent never gets the answer."""
    truth = Orbit.from_tle(tle[0], tle[1])
    sat = truth.satrec
    shifted = Satrec()
    shifted.sgp4init(WGS72, "i", sat.satnum, sat.jdsatepoch + sat.jdsatepochF - SGP4_EPOCH_JD, sat.bstar,
                     sat.ndot, sat.nddot, sat.ecco, sat.argpo, sat.inclo,
                     (sat.mo + along_track_km / truth.semi_major_axis_km) % (2.0 * math.pi), sat.no_kozai, sat.nodeo)
    shifted.classification, shifted.intldesg = sat.classification, sat.intldesg
    shifted.elnum, shifted.revnum, shifted.ephtype = sat.elnum, sat.revnum, sat.ephtype
    line1, line2 = export_tle(shifted)
    Orbit.from_tle(line1, line2)  # the lines as the agent will parse them: a shift no TLE can say fails here
    return line1, line2
