"""What the agent asks of the orbit: when is the next shadow, when is the next SAA pass.

Method: sample the orbit on a fixed grid (``step_s``, 30 s by default), mark each sample
"in umbra" and "in SAA", and refine every change of state by bisection on the same
yes/no test until the bracket is below ``tolerance_s``. All samples of one bisection
round go through sgp4 in one vectorised call, so the cost is about
``horizon_s / step_s + rounds * crossings`` propagations.

A pass shorter than ``step_s`` that starts and ends between two samples is missed.
For eclipses that happens only at grazing geometry (beta within ~1 deg of the
no-eclipse limit, where the shadow lasts under a minute); for the SAA, when the ground
track clips the edge of the ellipse. Both are passes the agent would not act on anyway;
lower ``step_s`` if that matters.

"Eclipse" here means umbra (shadow factor 0 in the conical model): that is when the
solar array gives nothing. The penumbra adds ~8-10 s at each end (see shadow.py).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flight.orbit.elements import Orbit
from flight.orbit.frames import geodetic_from_teme
from flight.orbit.saa import ESTIMATE, SaaDrift, in_saa
from flight.orbit.shadow import SHADOW_MODELS, beta_angle_deg, shadow_factor
from flight.orbit.sun import sun_position_teme_km

DEFAULT_STEP_S = 30.0
"""Sampling step. Shortest eclipse at 550 km worth acting on lasts minutes; SAA passes ~10-25 min."""

DEFAULT_TOLERANCE_S = 0.1
"""Bisection stops when the bracket is this narrow; the reported time is its middle (error <= 0.05 s)."""

DEFAULT_SUMMARY_HORIZON_S = 86400.0
"""How far :func:`predict_summary` looks by default. With this SAA model, at 550 km, SAA passes
come in runs on ~10-11 orbits a day with gaps of up to ~10 h between runs (measured: 10.3 h at
28.5 deg, 8.8 h at 51.6 deg, 6.7 h sun-synchronous), so a day ahead always finds the next one.
A shorter horizon is fine for eclipses (one per orbit) and leaves the SAA fields NaN in the gaps."""


class PassKind(enum.Enum):
    ECLIPSE = "eclipse"
    SAA = "saa"


@dataclass(frozen=True)
class Pass:
    """One eclipse (umbra) or SAA pass, UTC Unix seconds.

    ``start_clipped`` / ``end_clipped``: the pass was already under way at the start of the
    searched window, or still under way at its end, so that end is the window's edge, not
    the pass's.
    """

    kind: PassKind
    start_unix_s: float
    end_unix_s: float
    start_clipped: bool = False
    end_clipped: bool = False

    def __post_init__(self):
        if not self.end_unix_s >= self.start_unix_s:
            raise ValueError(f"pass ends ({self.end_unix_s}) before it starts ({self.start_unix_s})")

    @property
    def duration_s(self) -> float:
        return self.end_unix_s - self.start_unix_s

    def contains(self, time_unix_s: float) -> bool:
        return self.start_unix_s <= time_unix_s < self.end_unix_s


def eclipse_mask(orbit: Orbit, time_unix_s, shadow_model: str = "conical") -> np.ndarray:
    """True where the satellite is in umbra (shadow factor 0) at ``time_unix_s`` (array)."""
    r_teme_km, _ = orbit.propagate(time_unix_s)
    return _in_umbra(r_teme_km, time_unix_s, shadow_model)


def saa_mask(orbit: Orbit, time_unix_s, saa_drift: SaaDrift = ESTIMATE) -> np.ndarray:
    """True where the satellite is inside the SAA model (moved by ``saa_drift``) at ``time_unix_s`` (array)."""
    r_teme_km, _ = orbit.propagate(time_unix_s)
    return _in_saa(r_teme_km, time_unix_s, saa_drift)


def _in_umbra(r_teme_km, time_unix_s, shadow_model: str) -> np.ndarray:
    return shadow_factor(r_teme_km, sun_position_teme_km(time_unix_s), shadow_model) <= 0.0


def _in_saa(r_teme_km, time_unix_s, saa_drift: SaaDrift) -> np.ndarray:
    lat_deg, lon_deg, alt_km = geodetic_from_teme(r_teme_km, time_unix_s)
    return in_saa(lat_deg, lon_deg, alt_km, time_unix_s, saa_drift)


def _grid(start_unix_s: float, horizon_s: float, step_s: float) -> np.ndarray:
    # Finite too: an infinite step made a grid of one sample at the horizon's end, and a pass there, both clipped.
    if not (horizon_s > 0.0 and math.isfinite(horizon_s)):
        raise ValueError(f"horizon_s must be positive and finite, got {horizon_s}")
    if not (step_s > 0.0 and math.isfinite(step_s)):
        raise ValueError(f"step_s must be positive and finite, got {step_s}")
    n = int(math.ceil(horizon_s / step_s))
    t = start_unix_s + step_s * np.arange(n + 1, dtype=float)
    t[-1] = start_unix_s + horizon_s  # end exactly on the horizon, even if the step does not divide it
    return t


def _refine(
    state: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, tolerance_s: float
) -> np.ndarray:
    """Bisect all brackets [lo, hi] at once; state(lo) != state(hi) holds throughout."""
    if lo.size == 0:
        return lo
    lo, hi = lo.copy(), hi.copy()
    state_lo = state(lo)
    rounds = max(0, int(math.ceil(math.log2(float(np.max(hi - lo)) / tolerance_s))))
    for _ in range(rounds):
        mid = 0.5 * (lo + hi)
        state_mid = state(mid)
        same = state_mid == state_lo
        lo = np.where(same, mid, lo)
        hi = np.where(same, hi, mid)
    return 0.5 * (lo + hi)


def _passes_from_samples(
    kind: PassKind,
    t: np.ndarray,
    inside: np.ndarray,
    state: Callable[[np.ndarray], np.ndarray],
    tolerance_s: float,
) -> list[Pass]:
    change = np.flatnonzero(inside[1:] != inside[:-1])
    crossings = _refine(state, t[change], t[change + 1], tolerance_s)
    entering = inside[change + 1]
    passes: list[Pass] = []
    start, start_clipped = (float(t[0]), True) if inside[0] else (None, False)
    for time_s, enters in zip(crossings.tolist(), entering.tolist()):
        if enters:
            start, start_clipped = time_s, False
        else:
            # An exit always follows an entry or the window start, because states alternate.
            assert start is not None
            passes.append(Pass(kind, start, time_s, start_clipped, False))
            start = None
    if start is not None:
        passes.append(Pass(kind, start, float(t[-1]), start_clipped, True))
    return passes


def predict_passes(
    orbit: Orbit,
    start_unix_s: float,
    horizon_s: float,
    step_s: float = DEFAULT_STEP_S,
    *,
    kinds: tuple[PassKind, ...] = (PassKind.ECLIPSE, PassKind.SAA),
    shadow_model: str = "conical",
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    saa_drift: SaaDrift = ESTIMATE,
) -> list[Pass]:
    """Eclipse (umbra) and SAA passes in [start, start + horizon], sorted by start time; the SAA model
    moved by ``saa_drift`` (flight.orbit.saa).

    Entry and exit times are refined by bisection to within ``tolerance_s`` / 2 of where
    the models switch (the models' own errors, e.g. the atmosphere ignored, are larger;
    see shadow.py and saa.py). Passes under way at either end of the window are
    clipped to it and flagged.

    >>> orbit = Orbit.from_elements(550.0, 51.6, 30.0, 1_700_000_000.0)
    >>> passes = predict_passes(orbit, 1_700_000_000.0, 86400.0)
    >>> sum(p.kind is PassKind.ECLIPSE for p in passes)  # 15 orbits; the first is under way
    16
    >>> passes[0].kind, passes[0].start_clipped
    (<PassKind.ECLIPSE: 'eclipse'>, True)
    >>> passes[1].kind, round(passes[1].duration_s / 60.0, 1)
    (<PassKind.SAA: 'saa'>, 16.9)
    """
    if shadow_model not in SHADOW_MODELS:
        raise ValueError(f"unknown shadow model {shadow_model!r}; use one of {SHADOW_MODELS}")
    if not (tolerance_s > 0.0 and math.isfinite(tolerance_s)):
        raise ValueError(f"tolerance_s must be positive and finite, got {tolerance_s}")
    t = _grid(float(start_unix_s), float(horizon_s), float(step_s))
    r_teme_km, _ = orbit.propagate(t)
    passes: list[Pass] = []
    if PassKind.ECLIPSE in kinds:
        passes += _passes_from_samples(
            PassKind.ECLIPSE,
            t,
            _in_umbra(r_teme_km, t, shadow_model),
            lambda ts: eclipse_mask(orbit, ts, shadow_model),
            tolerance_s,
        )
    if PassKind.SAA in kinds:
        passes += _passes_from_samples(
            PassKind.SAA, t, _in_saa(r_teme_km, t, saa_drift), lambda ts: saa_mask(orbit, ts, saa_drift), tolerance_s
        )
    passes.sort(key=lambda p: (p.start_unix_s, p.kind.value))
    return passes


def _lookback_s(orbit: Orbit, step_s: float) -> float:
    """One orbit back from now in whole steps of ``step_s``, so that now is a sample of the search. ValueError
    naming ``step_s`` where it is not a positive number (not a ZeroDivisionError from the division)."""
    if not (step_s > 0.0 and math.isfinite(step_s)):
        raise ValueError(f"step_s must be a positive number of seconds, got {step_s}")
    return step_s * math.ceil(orbit.period_s / step_s)


def _current_or_next(
    orbit: Orbit, kind: PassKind, now_unix_s: float, horizon_s: float, step_s: float, shadow_model: str,
    saa_drift: SaaDrift = ESTIMATE,
) -> Pass | None:
    # Look back one orbit so a pass under way now comes back with its true start; a whole number of steps, so that
    # now is a sample and a pass shorter than a step that holds now is found (found in audit: in a 15 s grazing
    # shadow, next_eclipse gave the next orbit's, as predict_summary did before it looked back the same way).
    lookback_s = _lookback_s(orbit, step_s)
    passes = predict_passes(
        orbit, now_unix_s - lookback_s, lookback_s + horizon_s, step_s, kinds=(kind,), shadow_model=shadow_model,
        saa_drift=saa_drift,
    )
    for p in passes:
        if p.end_unix_s > now_unix_s:
            return p
    return None


def next_eclipse(
    orbit: Orbit,
    now_unix_s: float,
    horizon_s: float | None = None,
    *,
    step_s: float = DEFAULT_STEP_S,
    shadow_model: str = "conical",
) -> Pass | None:
    """The eclipse under way at ``now_unix_s``, or else the next one to start; None if none within the horizon.

    ``horizon_s`` defaults to two orbital periods: if there is no eclipse in two orbits,
    beta is above the no-eclipse limit and there will be none for days.
    """
    horizon_s = 2.0 * orbit.period_s if horizon_s is None else horizon_s
    return _current_or_next(orbit, PassKind.ECLIPSE, now_unix_s, horizon_s, step_s, shadow_model)


def next_saa(
    orbit: Orbit, now_unix_s: float, horizon_s: float = DEFAULT_SUMMARY_HORIZON_S, *, step_s: float = DEFAULT_STEP_S,
    saa_drift: SaaDrift = ESTIMATE,
) -> Pass | None:
    """The SAA pass under way at ``now_unix_s``, or else the next one to start; None if none within the horizon."""
    return _current_or_next(orbit, PassKind.SAA, now_unix_s, horizon_s, step_s, "conical", saa_drift)


def in_eclipse_now(orbit: Orbit, now_unix_s: float, shadow_model: str = "conical") -> bool:
    """Whether the satellite is in umbra at ``now_unix_s``."""
    return bool(eclipse_mask(orbit, np.array([float(now_unix_s)]), shadow_model)[0])


def in_saa_now(orbit: Orbit, now_unix_s: float, saa_drift: SaaDrift = ESTIMATE) -> bool:
    """Whether the satellite is inside the SAA model (moved by ``saa_drift``) at ``now_unix_s``."""
    return bool(saa_mask(orbit, np.array([float(now_unix_s)]), saa_drift)[0])


@dataclass(frozen=True)
class OrbitPrediction:
    """Orbit summary for telemetry and for the agent's power/radiation policies.

    Times are seconds from ``time_unix_s``. NaN means "not within the horizon": it fits
    an F64 telemetry channel, and any comparison with it (``to_eclipse_entry_s < 120``)
    is False, the safe reading of "no eclipse coming". When in eclipse,
    ``to_eclipse_entry_s`` is the *next* eclipse's entry and ``to_eclipse_exit_s`` the
    current one's exit; ``eclipse_duration_s`` is the current eclipse's (else the next
    one's) full duration; ``next_eclipse_duration_s`` is the duration of the eclipse
    ``to_eclipse_entry_s`` points at (what announcing that entry must give: found in audit,
    SAA_PREDICTED gave the pass under way's). Likewise for the SAA.
    """

    time_unix_s: float
    horizon_s: float
    in_eclipse: bool
    in_saa: bool
    shadow_factor: float
    beta_deg: float
    to_eclipse_entry_s: float
    to_eclipse_exit_s: float
    eclipse_duration_s: float
    to_saa_entry_s: float
    to_saa_exit_s: float
    saa_duration_s: float
    tle_age_s: float
    next_eclipse_duration_s: float = math.nan
    next_saa_duration_s: float = math.nan


def _timings(passes: list[Pass], now_unix_s: float) -> tuple[float, float, float, float]:
    """(to next entry, to exit of current-or-next, duration of current-or-next, duration of the next entry's
    pass), NaN where unknown."""
    upcoming = [p for p in passes if p.end_unix_s > now_unix_s]
    nan = math.nan
    entry = next((p for p in upcoming if p.start_unix_s > now_unix_s and not p.start_clipped), None)
    first = upcoming[0] if upcoming else None
    to_entry = entry.start_unix_s - now_unix_s if entry else nan
    next_duration = entry.duration_s if entry is not None and not entry.end_clipped else nan
    if first is None:
        return to_entry, nan, nan, next_duration
    to_exit = nan if first.end_clipped else first.end_unix_s - now_unix_s
    duration = nan if (first.start_clipped or first.end_clipped) else first.duration_s
    return to_entry, to_exit, duration, next_duration


def predict_summary(
    orbit: Orbit,
    now_unix_s: float,
    horizon_s: float = DEFAULT_SUMMARY_HORIZON_S,
    *,
    step_s: float = DEFAULT_STEP_S,
    shadow_model: str = "conical",
    saa_drift: SaaDrift,
) -> OrbitPrediction:
    """Everything the agent needs from the orbit at ``now_unix_s``, in one frozen record.

    Searches from one orbit before now (so a pass under way has its true start and
    duration) to ``horizon_s`` after; the SAA model moved by ``saa_drift`` (no default: the agent's is
    the operators' parameters, flight.agent.control).
    """
    now_unix_s = float(now_unix_s)
    # A whole number of steps back, so that now is a sample: a pass shorter than a step that holds now (a grazing
    # shadow) is then found, as the state at now is (found in audit: in eclipse now, with the next orbit's exit).
    lookback_s = _lookback_s(orbit, step_s)
    passes = predict_passes(
        orbit, now_unix_s - lookback_s, lookback_s + horizon_s, step_s, shadow_model=shadow_model,
        saa_drift=saa_drift,
    )
    eclipses = [p for p in passes if p.kind is PassKind.ECLIPSE]
    saas = [p for p in passes if p.kind is PassKind.SAA]

    t_now = np.array([now_unix_s])
    r_teme_km, v_teme_km_s = orbit.propagate(t_now)
    r_sun_km = sun_position_teme_km(t_now)
    factor = float(shadow_factor(r_teme_km, r_sun_km, shadow_model)[0])
    beta = float(beta_angle_deg(r_teme_km, v_teme_km_s, r_sun_km)[0])

    ecl_entry, ecl_exit, ecl_duration, ecl_next = _timings(eclipses, now_unix_s)
    saa_entry, saa_exit, saa_duration, saa_next = _timings(saas, now_unix_s)
    return OrbitPrediction(
        time_unix_s=now_unix_s,
        horizon_s=float(horizon_s),
        in_eclipse=factor <= 0.0,
        in_saa=bool(_in_saa(r_teme_km, t_now, saa_drift)[0]),
        shadow_factor=factor,
        beta_deg=beta,
        to_eclipse_entry_s=ecl_entry,
        to_eclipse_exit_s=ecl_exit,
        eclipse_duration_s=ecl_duration,
        to_saa_entry_s=saa_entry,
        to_saa_exit_s=saa_exit,
        saa_duration_s=saa_duration,
        tle_age_s=now_unix_s - orbit.epoch_unix_s,
        next_eclipse_duration_s=ecl_next,
        next_saa_duration_s=saa_next,
    )
