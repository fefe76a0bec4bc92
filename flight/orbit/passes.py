"""Ground-station passes: when each configured station sees the satellite above its mask.

Pure numpy + sgp4, no I/O. Times are UTC Unix seconds, as everywhere in flight/orbit.

Method (:func:`predict_passes`): propagate once on a coarse grid (``step_s``, 30 s), turn
TEME into Earth-fixed with :func:`flight.orbit.frames.teme_to_ecef` (GMST rotation, the
frame sgp4's TEME is defined against), and compute every station's elevation on it. Then:

1. every local maximum of elevation on the grid is refined by golden-section search and
   the peak added to the samples. A pass shorter than the step (a low one, its peak
   between two grid points that are both below the mask) shows up as a sample above the
   mask between two below it, so it cannot be missed;
2. every change "below / above the mask" between consecutive samples is refined by
   bisection on the elevation to ``tolerance_s``.

Both refinements run for all stations at once: one sgp4 call per round. This assumes
elevation has at most one extremum per step, true for a LEO satellite at steps up to a
minute or two (a pass lasts minutes, the gap between passes tens of minutes).

Elevation is geometric: the angle above the plane normal to the WGS-84 ellipsoid at the
station, no refraction (which lifts a 5 deg elevation by ~0.15 deg, a few seconds of pass).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from flight.orbit.elements import Orbit
from flight.orbit.frames import WGS84_A_KM, WGS84_E2, teme_to_ecef

DEFAULT_STEP_S = 30.0
"""Grid step. The refinements make the result independent of it (within ``tolerance_s``)
up to a minute or two; smaller only costs time."""

DEFAULT_TOLERANCE_S = 0.1
"""AOS, LOS and culmination are refined to a bracket this wide; the time reported is its middle."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# (low, high) of each numeric field. lon_deg takes 0..360 as well as -180..180 (both are in use).
_RANGES = {"lat_deg": (-90.0, 90.0), "lon_deg": (-180.0, 360.0), "alt_m": (-500.0, 9000.0),
           "min_elevation_deg": (0.0, 90.0)}
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class StationError(ValueError):
    """A station that cannot be used. ``key`` is where (``stations[1].lat_deg``), ``reason`` what."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def _shown(value: object) -> str:
    """repr of a value for an error message, cut short: a 300-character name is not echoed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Station:
    """A ground station: WGS-84 geodetic position and elevation mask (deg above the horizon).

    Checked here and only here; :class:`StationError` (a ValueError) names the field.

    >>> Station("svalbard", 78.2, 15.4, alt_m=500.0).min_elevation_deg
    5.0
    >>> Station("../x", 0.0, 0.0)
    Traceback (most recent call last):
    ...
    flight.orbit.passes.StationError: name: must be 1-32 of [A-Za-z0-9_.-], starting with a letter or digit, got '../x'
    """

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    min_elevation_deg: float = 5.0

    def __post_init__(self):
        # The name goes into telemetry and logs: a short, plain token (no path, no spaces).
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise StationError(
                "name", f"must be 1-32 of [A-Za-z0-9_.-], starting with a letter or digit, got {_shown(self.name)}"
            )
        for key, (low, high) in _RANGES.items():
            value = getattr(self, key)
            # bool is an int to Python, but `true` for a latitude is a mistake in the file.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StationError(key, f"must be a number, got {type(value).__name__} {_shown(value)}")
            if not math.isfinite(value):
                raise StationError(key, f"must be a finite number, got {value!r}")
            if not low <= value <= high:
                raise StationError(key, f"must be within {low:g}..{high:g}, got {value!r}")

    def ecef_km(self) -> np.ndarray:
        """Earth-fixed position, km: geodetic to ECEF on WGS-84 (NIMA TR8350.2 eq. 4-14),
        N = a / sqrt(1 - e^2 sin^2 lat); x, y = (N + h) cos lat (cos lon, sin lon); z = (N (1 - e^2) + h) sin lat."""
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        n_km = WGS84_A_KM / math.sqrt(1.0 - WGS84_E2 * math.sin(lat) ** 2)
        h_km = self.alt_m / 1000.0
        return np.array([(n_km + h_km) * math.cos(lat) * math.cos(lon), (n_km + h_km) * math.cos(lat) * math.sin(lon),
                         (n_km * (1.0 - WGS84_E2) + h_km) * math.sin(lat)])

    def up_ecef(self) -> np.ndarray:
        """Local vertical (normal to the ellipsoid), unit vector, Earth-fixed."""
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])


_KEYS = tuple(f.name for f in fields(Station))
_REQUIRED = ("name", "lat_deg", "lon_deg")


def parse_stations(raw: object, where: str = "stations") -> tuple[Station, ...]:
    """Stations from what TOML's ``[[stations]]`` gives: a list of tables (dicts).

    Keys: name, lat_deg, lon_deg, alt_m (default 0), min_elevation_deg (default 5).
    An empty list is fine (no stations, no passes). :class:`StationError` names the key:

    >>> parse_stations([{"name": "kiruna", "lat_deg": 67.9, "lon_deg": 21.1}])[0].alt_m
    0.0
    >>> parse_stations([{"name": "a", "lat_deg": 1, "lon_deg": 2}, {"name": "b", "lat_deg": 123, "lon_deg": 2}])
    Traceback (most recent call last):
    ...
    flight.orbit.passes.StationError: stations[1].lat_deg: must be within -90..90, got 123
    """
    if not isinstance(raw, (list, tuple)):
        raise StationError(where, f"expected an array of tables ([[{where}]]), got {type(raw).__name__}")
    stations: list[Station] = []
    first_index: dict[str, int] = {}
    for i, entry in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise StationError(here, f"expected a table with keys {', '.join(_KEYS)}, got {type(entry).__name__}")
        for key in entry:
            if key not in _KEYS:
                raise StationError(f"{here}.{key}", f"unknown key; expected one of {', '.join(_KEYS)}")
        for key in _REQUIRED:
            if key not in entry:
                raise StationError(f"{here}.{key}", "missing; name, lat_deg and lon_deg are required")
        try:
            station = Station(**entry)
        except StationError as exc:
            raise StationError(f"{here}.{exc.key}", exc.reason) from None
        if station.name in first_index:
            raise StationError(f"{here}.name", f"{station.name!r} is already {where}[{first_index[station.name]}]'s")
        first_index[station.name] = i
        stations.append(station)
    return tuple(stations)


@dataclass(frozen=True)
class Pass:
    """One pass over one station, UTC Unix seconds; the satellite is above the mask in [AOS, LOS).

    ``aos_clipped``: the pass was already in progress at the start of the prediction, so
    ``aos_unix_s`` is that start, not the true AOS. ``los_clipped``: still in progress at
    the end, so ``los_unix_s`` is the end. The maximum is then the highest within the window.
    """

    station: str
    aos_unix_s: float
    los_unix_s: float
    max_elevation_deg: float
    max_unix_s: float
    aos_clipped: bool = False
    los_clipped: bool = False

    def __post_init__(self):
        if not self.aos_unix_s <= self.max_unix_s <= self.los_unix_s:
            raise ValueError(f"pass over {self.station}: expected AOS <= max <= LOS, got "
                             f"{self.aos_unix_s}, {self.max_unix_s}, {self.los_unix_s}")

    @property
    def duration_s(self) -> float:
        return self.los_unix_s - self.aos_unix_s


def _elevation_deg(orbit: Orbit, time_unix_s: np.ndarray, r_station_km: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Elevation (deg) at times (K,) from stations (K, 3), or at times (N,) from stations (S, 1, 3): (S, N).

    rho = r_sat - r_station (Earth-fixed), elevation = asin(rho . up / |rho|).
    """
    r_teme_km, _ = orbit.propagate(time_unix_s)
    rho_km = teme_to_ecef(r_teme_km, time_unix_s) - r_station_km
    sin_el = np.sum(rho_km * up, axis=-1) / np.linalg.norm(rho_km, axis=-1)
    return np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))


def station_elevation_deg(orbit: Orbit, station: Station, time_unix_s) -> np.ndarray:
    """Geometric elevation (deg, -90..90) of the satellite seen from ``station``, same shape as the times."""
    t = np.asarray(time_unix_s, dtype=float)
    return _elevation_deg(orbit, t.reshape(-1), station.ecef_km(), station.up_ecef()).reshape(t.shape)


def _maximise(f, a: np.ndarray, b: np.ndarray, tolerance_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Golden-section search for the maximum of f in each [a, b] at once: (argmax, max).

    Every round keeps one interior point and its value and evaluates one new one, so a
    round is one call of f on all brackets.
    """
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    rounds = max(0, math.ceil(math.log(float(np.max(b - a)) / tolerance_s) / -math.log(_GOLDEN)))
    for _ in range(rounds):
        left = fc >= fd  # the maximum is in [a, d]: c becomes the new d
        a, b = np.where(left, a, c), np.where(left, d, b)
        kept_x, kept_f = np.where(left, c, d), np.where(left, fc, fd)
        new_x = np.where(left, b - _GOLDEN * (b - a), a + _GOLDEN * (b - a))
        new_f = f(new_x)
        c, fc = np.where(left, new_x, kept_x), np.where(left, new_f, kept_f)
        d, fd = np.where(left, kept_x, new_x), np.where(left, kept_f, new_f)
    return np.where(fc >= fd, c, d), np.maximum(fc, fd)


def _bisect(above, lo: np.ndarray, hi: np.ndarray, above_lo: np.ndarray, tolerance_s: float) -> np.ndarray:
    """Where ``above`` switches in each [lo, hi] (above(lo) == above_lo != above(hi)), to tolerance_s / 2."""
    if lo.size == 0:
        return lo
    rounds = max(0, math.ceil(math.log2(float(np.max(hi - lo)) / tolerance_s)))
    for _ in range(rounds):
        mid = 0.5 * (lo + hi)
        same = above(mid) == above_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return 0.5 * (lo + hi)


def predict_passes(
    orbit: Orbit,
    stations: Sequence[Station],
    start_unix_s: float,
    span_s: float,
    step_s: float = DEFAULT_STEP_S,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> list[Pass]:
    """Passes over ``stations`` in [start, start + span], sorted by AOS (then station).

    AOS and LOS are where the elevation crosses each station's mask, to within
    ``tolerance_s`` / 2. A pass in progress at ``start_unix_s`` has AOS = the start and
    ``aos_clipped``; one still in progress at the end has LOS = start + span and
    ``los_clipped`` (kept, not dropped: the agent is told it is in contact). To know a
    current pass's true AOS, start the prediction a pass length (~15 min) earlier.

    >>> orbit = Orbit.from_elements(550.0, 97.6, 0.0, 1_700_000_000.0)
    >>> passes = predict_passes(orbit, [Station("svalbard", 78.2, 15.4)], 1_700_000_000.0, 86400.0)
    >>> len(passes), round(max(p.duration_s for p in passes) / 60.0, 1)
    (13, 9.9)
    """
    if not (math.isfinite(start_unix_s) and span_s > 0.0 and math.isfinite(span_s)):
        raise ValueError(f"start_unix_s must be finite and span_s positive, got {start_unix_s}, {span_s}")
    if not (step_s > 0.0 and tolerance_s > 0.0 and math.isfinite(step_s) and math.isfinite(tolerance_s)):
        # Finite too: an infinite one ended in "math domain error" from the refinements.
        raise ValueError(f"step_s and tolerance_s must be positive and finite, got {step_s}, {tolerance_s}")
    if not stations:
        return []
    r_sta_km = np.array([s.ecef_km() for s in stations])
    up = np.array([s.up_ecef() for s in stations])
    mask_deg = np.array([s.min_elevation_deg for s in stations])

    def elevation(t: np.ndarray, which: np.ndarray) -> np.ndarray:
        return _elevation_deg(orbit, t, r_sta_km[which], up[which])

    t = float(start_unix_s) + step_s * np.arange(math.ceil(span_s / step_s) + 1, dtype=float)
    t[-1] = float(start_unix_s) + span_s  # end on the span even if the step does not divide it
    el = _elevation_deg(orbit, t, r_sta_km[:, None, :], up[:, None, :])  # (stations, times)

    # 1. Local maxima on the grid (the ends count when elevation falls away from them); the true
    # peak lies within one step either side of the grid's. Refine and add them to the samples.
    change = np.diff(el, axis=1)
    is_peak = np.ones_like(el, dtype=bool)
    is_peak[:, 1:] &= change >= 0.0  # not lower than the sample before
    is_peak[:, :-1] &= change <= 0.0  # nor than the one after
    s_peak, i_peak = np.nonzero(is_peak)
    lo, hi = t[np.maximum(i_peak - 1, 0)], t[np.minimum(i_peak + 1, t.size - 1)]
    t_peak, el_peak = _maximise(lambda x: elevation(x, s_peak), lo, hi, tolerance_s)

    # All samples, grid and peaks, of all stations in one array ordered by station, then time.
    n_sta = len(stations)
    s_all = np.concatenate((np.repeat(np.arange(n_sta), t.size), s_peak))
    t_all = np.concatenate((np.tile(t, n_sta), t_peak))
    e_all = np.concatenate((el.reshape(-1), el_peak))
    order = np.lexsort((t_all, s_all))
    s_all, t_all, e_all = s_all[order], t_all[order], e_all[order]
    above = e_all >= mask_deg[s_all]

    # 2. Crossings of the mask between consecutive samples of a station, bisected all together.
    i = np.flatnonzero((above[1:] != above[:-1]) & (s_all[1:] == s_all[:-1]))
    s_cross = s_all[i]
    t_cross = _bisect(lambda x: elevation(x, s_cross) >= mask_deg[s_cross], t_all[i], t_all[i + 1], above[i],
                      tolerance_s)

    passes: list[Pass] = []
    for s in range(n_sta):
        ts, es, in_view = t_all[s_all == s], e_all[s_all == s], above[s_all == s]
        edges = [(float(ts[0]), True)] if in_view[0] else []  # in progress at the start
        edges += [(float(x), False) for x in t_cross[s_cross == s]]
        if in_view[-1]:
            edges.append((float(ts[-1]), True))  # in progress at the end
        # Crossings alternate (rise, set, rise, ...) once a pass in progress at the start counts as a rise.
        assert len(edges) % 2 == 0, "mask crossings do not alternate"
        for (aos, aos_clipped), (los, los_clipped) in zip(edges[::2], edges[1::2]):
            inside = np.flatnonzero((ts >= aos) & (ts <= los))
            best = inside[np.argmax(es[inside])]
            passes.append(Pass(stations[s].name, aos, los, float(es[best]), float(ts[best]), aos_clipped, los_clipped))
    passes.sort(key=lambda p: (p.aos_unix_s, p.station))
    return passes


def _current_or_next(passes: Sequence[Pass], now_unix_s: float) -> Pass | None:
    """The pass in progress at ``now`` that ends last, else the next to start (the longer if two start together)."""

    def los_key(p: Pass) -> float:
        return math.inf if p.los_clipped else p.los_unix_s

    current = [p for p in passes if p.aos_unix_s <= now_unix_s < p.los_unix_s]
    if current:
        return max(current, key=los_key)
    upcoming = [p for p in passes if p.aos_unix_s > now_unix_s]
    return min(upcoming, key=lambda p: (p.aos_unix_s, -los_key(p))) if upcoming else None


def next_contact(passes: Sequence[Pass], now_unix_s: float) -> tuple[float | None, float | None]:
    """(AOS, LOS) in Unix seconds of the pass in progress at ``now_unix_s``, else of the next one.

    In a pass, AOS is that pass's (<= now: the past; the prediction's start if it began
    before). (None, None): no pass left in the prediction. LOS is None when the pass runs
    past the end of the prediction (``los_clipped``): its LOS is not known.
    With overlapping stations, the current pass that ends last is the one reported; a
    hand-over to a station whose pass starts before that LOS is not merged into it.
    """
    p = _current_or_next(passes, now_unix_s)
    if p is None:
        return None, None
    return p.aos_unix_s, (None if p.los_clipped else p.los_unix_s)


@dataclass(frozen=True)
class ContactTimes:
    """What telemetry says about contact at one time (channels ``next_aos_in_s``, ``next_los_in_s``).

    In contact: ``aos_in_s`` is 0 and ``los_in_s`` the time left in the current pass.
    Out of contact: both count to the next pass's AOS and LOS. ``station`` is that pass's.
    ``None``: not known from the prediction (no pass left in it; or, for ``los_in_s``
    alone, the pass runs past its end). Chosen so ``aos_in_s`` is never negative and
    ``los_in_s - aos_in_s`` is always the contact time still to come in that pass.
    """

    in_contact: bool
    aos_in_s: float | None
    los_in_s: float | None
    station: str | None


def contact_times(passes: Sequence[Pass], now_unix_s: float) -> ContactTimes:
    """:class:`ContactTimes` at ``now_unix_s`` from a prediction that covers it (see :func:`next_contact`).

    >>> p = Pass("kiruna", aos_unix_s=1000.0, los_unix_s=1600.0, max_elevation_deg=40.0, max_unix_s=1300.0)
    >>> contact_times([p], 400.0)
    ContactTimes(in_contact=False, aos_in_s=600.0, los_in_s=1200.0, station='kiruna')
    >>> contact_times([p], 1450.0)
    ContactTimes(in_contact=True, aos_in_s=0.0, los_in_s=150.0, station='kiruna')
    >>> contact_times([p], 1600.0)
    ContactTimes(in_contact=False, aos_in_s=None, los_in_s=None, station=None)
    """
    p = _current_or_next(passes, now_unix_s)
    if p is None:
        return ContactTimes(False, None, None, None)
    in_contact = p.aos_unix_s <= now_unix_s
    los_in_s = None if p.los_clipped else p.los_unix_s - now_unix_s
    return ContactTimes(in_contact, 0.0 if in_contact else p.aos_unix_s - now_unix_s, los_in_s, p.station)
