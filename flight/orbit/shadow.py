"""Earth's shadow: how much of the Sun a satellite sees, and the beta angle.

Two models, both with a spherical Earth of WGS-84 equatorial radius:

- ``"conical"``: Montenbruck & Gill, "Satellite Orbits" (2000), section 3.4.2, the
  fraction of the solar disc not hidden by the Earth's disc, 0 in umbra, 1 in full sun,
  in between in penumbra (and annular eclipse, which LEO never sees). Basilisk's
  ``eclipse`` module implements the same geometry.
- ``"cylindrical"``: the satellite is dark when it is behind the Earth and within one
  Earth radius of the Earth-Sun line, as NASA 42 does (and as the "37.2 % at 550 km"
  figures in FACTS.md assume). Only 0 or 1.

What both leave out: Earth's oblateness (the polar radius is 21 km smaller, moving a
boundary by up to ~3 s) and the atmosphere, which dims and refracts sunlight ~50 km
above the surface and so widens the real shadow by a few seconds each side. For the
agent's purpose (start banking energy a few minutes before the shadow) both are small;
margins belong in the policy, not here.
"""

from __future__ import annotations

import numpy as np

from flight.orbit.frames import WGS84_A_KM
from flight.orbit.sun import SUN_RADIUS_KM

EARTH_RADIUS_KM = WGS84_A_KM
"""Radius of the spherical Earth casting the shadow (WGS-84 equatorial), km."""

SHADOW_MODELS = ("conical", "cylindrical")


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def shadow_factor(r_sat_km, r_sun_km, model: str = "conical") -> np.ndarray:
    """Fraction of sunlight reaching the satellite: 0 (umbra) ... 1 (full sun).

    ``r_sat_km`` and ``r_sun_km`` are geocentric positions in the same inertial frame,
    shape (..., 3), broadcast against each other. Returns shape (...).

    Conical model (Montenbruck & Gill section 3.4.2), with s = r_sun - r_sat:
    apparent radii a = asin(R_sun/|s|) of the Sun and b = asin(R_E/|r_sat|) of the
    Earth, and their apparent separation c = acos(-r_sat.s / (|r_sat||s|)). Then full
    sun if c >= a + b, umbra if c <= b - a, otherwise the overlap area A of two
    discs, x = (c^2 + a^2 - b^2)/(2c), y = sqrt(a^2 - x^2),
    A = a^2 acos(x/a) + b^2 acos((c - x)/b) - c y, and the factor is 1 - A/(pi a^2).

    >>> r_sun = np.array([1.496e8, 0.0, 0.0])
    >>> shadow_factor(np.array([[7000.0, 0, 0], [-7000.0, 0, 0]]), r_sun).tolist()
    [1.0, 0.0]
    """
    r_sat_km = np.asarray(r_sat_km, dtype=float)
    r_sun_km = np.asarray(r_sun_km, dtype=float)
    if model == "cylindrical":
        return _cylindrical(r_sat_km, r_sun_km)
    if model != "conical":
        raise ValueError(f"unknown shadow model {model!r}; use one of {SHADOW_MODELS}")

    s_km = r_sun_km - r_sat_km
    r_norm = _norm(r_sat_km)
    s_norm = _norm(s_km)
    a = np.arcsin(SUN_RADIUS_KM / s_norm)
    b = np.arcsin(np.clip(EARTH_RADIUS_KM / r_norm, -1.0, 1.0))
    cos_c = -np.einsum("...i,...i->...", r_sat_km, s_km) / (r_norm * s_norm)
    c = np.arccos(np.clip(cos_c, -1.0, 1.0))
    a, b, c = np.broadcast_arrays(a, b, c)

    factor = np.ones(c.shape)
    umbra = c <= b - a
    annular = (c < a - b) & ~umbra
    partial = (c < a + b) & ~umbra & ~annular
    factor[umbra] = 0.0
    factor[annular] = 1.0 - (b[annular] / a[annular]) ** 2
    if np.any(partial):
        ap, bp, cp = a[partial], b[partial], c[partial]
        x = (cp**2 + ap**2 - bp**2) / (2.0 * cp)
        y = np.sqrt(np.maximum(ap**2 - x**2, 0.0))
        area = (
            ap**2 * np.arccos(np.clip(x / ap, -1.0, 1.0))
            + bp**2 * np.arccos(np.clip((cp - x) / bp, -1.0, 1.0))
            - cp * y
        )
        factor[partial] = np.clip(1.0 - area / (np.pi * ap**2), 0.0, 1.0)
    return factor


def _cylindrical(r_sat_km: np.ndarray, r_sun_km: np.ndarray) -> np.ndarray:
    """1 unless behind the Earth (r.s_hat < 0) and within R_E of the Earth-Sun line."""
    s_hat = r_sun_km / _norm(r_sun_km)[..., None]
    along_km = np.einsum("...i,...i->...", r_sat_km, s_hat)
    perp_km = _norm(r_sat_km - along_km[..., None] * s_hat)
    dark = (along_km < 0.0) & (perp_km < EARTH_RADIUS_KM)
    return np.where(dark, 0.0, 1.0)


def beta_angle_deg(r_km, v_km_s, sun_dir) -> np.ndarray:
    """Beta angle: elevation of the Sun above the orbit plane, degrees (-90..90).

    beta = asin(s_hat . h_hat) with h = r x v the orbit normal (the usual definition:
    the complement of the angle between the Sun and the orbit normal). Positive when the Sun is on the
    side the orbit normal points to. ``sun_dir`` need not be a unit vector; all inputs
    in the same inertial frame, shape (..., 3).
    """
    r_km = np.asarray(r_km, dtype=float)
    v_km_s = np.asarray(v_km_s, dtype=float)
    sun_dir = np.asarray(sun_dir, dtype=float)
    h = np.cross(r_km, v_km_s)
    sin_beta = np.einsum("...i,...i->...", h, sun_dir) / (_norm(h) * _norm(sun_dir))
    return np.degrees(np.arcsin(np.clip(sin_beta, -1.0, 1.0)))


def max_eclipse_free_beta_deg(alt_km) -> np.ndarray:
    """Beta above which a circular orbit at ``alt_km`` sees no (cylindrical) shadow, deg.

    beta* = asin(R_E / (R_E + h)): the orbit circle clears the shadow cylinder.
    550 km gives 67.0 deg (FACTS.md: "no eclipse above beta ~ 67 deg").
    """
    return np.degrees(np.arcsin(EARTH_RADIUS_KM / (EARTH_RADIUS_KM + np.asarray(alt_km, dtype=float))))


def eclipse_fraction_cylindrical(alt_km, beta_deg=0.0) -> np.ndarray:
    """Fraction of a circular orbit spent in the cylindrical shadow (0..1).

    f = acos( sqrt(h^2 + 2 R h) / ((R + h) cos beta) ) / pi, 0 when the argument
    exceeds 1. Derivation: at orbit angle u from the anti-sun point the distance from
    the shadow axis is r sqrt(1 - cos^2 u cos^2 beta); setting it to R gives
    cos u* cos beta = sqrt(r^2 - R^2)/r, and the shadow spans 2 u* of 2 pi.
    550 km, beta 0 gives 0.372 (FACTS.md).
    """
    alt_km = np.asarray(alt_km, dtype=float)
    r_km = EARTH_RADIUS_KM + alt_km
    arg = np.sqrt(alt_km**2 + 2.0 * EARTH_RADIUS_KM * alt_km) / (r_km * np.cos(np.radians(beta_deg)))
    return np.where(arg >= 1.0, 0.0, np.arccos(np.clip(arg, -1.0, 1.0)) / np.pi)
