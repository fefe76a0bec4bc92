"""Solar array output: pure numpy, vectorised over time.

Model (Basilisk ``simpleSolarPanel``, FACTS.md "Orbits, power, thermal")::

    W = W_base · C_eclipse · (n̂·ŝ) · A          W_base = S · η · (1 − d)^years

with S the solar constant (1361 W/m², FACTS.md), η the cell efficiency, d the fractional
loss of output per year in orbit (radiation damage, compounding), C_eclipse the shadow
factor (0 umbra … 1 full sun, ``flight.orbit.shadow_factor``), n̂ the panel normal and ŝ
the unit vector to the Sun. A panel facing away from the Sun (n̂·ŝ < 0) gives nothing, so
the incidence is clipped at 0; the back of the panel is not a cell.

What it leaves out, on purpose: the ±3.4 % change of the solar flux over the year (the
Earth–Sun distance; 1361 W/m² is the value at 1 AU), cell temperature, string and MPPT
losses. Put those into ``efficiency`` if they matter for a study.

Which way the array points is a separate question, answered by :func:`array_incidence_cos`:

- ``"sun_tracking"`` (the default): the array turns to the Sun, cos = 1 whenever there is
  sunlight to use (the shadow factor still takes it to 0 in umbra). That is the best case
  and what a spacecraft built for compute would fly.
- ``"body_fixed"``: the panel is fixed to a nadir-pointing spacecraft, its normal given in
  the orbit frame (radial out, along-track, orbit normal); the default normal is radial
  out, a panel on the top deck facing zenith. Then cos = n̂·ŝ with the Sun vector and the
  satellite's position (and velocity) from the orbit.
"""

from __future__ import annotations

import numpy as np

SOLAR_CONSTANT_W_M2 = 1361.0
"""Total solar irradiance at 1 AU (FACTS.md "Orbits, power, thermal": ≈ 1361 W/m²)."""

POINTINGS = ("sun_tracking", "body_fixed")


def solar_array_power_w(
    shadow_factor,
    incidence_cos,
    area_m2: float,
    efficiency: float,
    degradation_per_year: float,
    years: float,
    solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2,
) -> np.ndarray:
    """Electrical output of the array, W (Basilisk panel model, see module doc).

    ``shadow_factor`` and ``incidence_cos`` broadcast against each other; the incidence is
    clipped at 0 and the shadow factor to 0..1. Full sun, facing the Sun, 0.2 m² of 30 %
    cells at the beginning of life:

    >>> round(float(solar_array_power_w(1.0, 1.0, 0.2, 0.30, 0.01, 0.0)), 6)
    81.66
    >>> solar_array_power_w([0.0, 0.5, 1.0], [1.0, 1.0, -0.3], 0.2, 0.30, 0.0, 0.0).round(6).tolist()
    [0.0, 40.83, 0.0]
    """
    if not area_m2 >= 0.0:
        raise ValueError(f"area_m2 must be >= 0, got {area_m2}")
    if not 0.0 <= efficiency <= 1.0:
        raise ValueError(f"efficiency must be in [0, 1], got {efficiency}")
    if not 0.0 <= degradation_per_year < 1.0:
        raise ValueError(f"degradation_per_year must be in [0, 1) (0.01 is 1 %/yr), got {degradation_per_year}")
    if not years >= 0.0:
        raise ValueError(f"years must be >= 0, got {years}")
    base_w_m2 = solar_constant_w_m2 * efficiency * (1.0 - degradation_per_year) ** years
    shadow = np.clip(np.asarray(shadow_factor, dtype=float), 0.0, 1.0)
    cos = np.clip(np.asarray(incidence_cos, dtype=float), 0.0, 1.0)
    return base_w_m2 * shadow * cos * area_m2


def orbit_frame_to_teme(r_km, v_km_s, vector_orbit_frame) -> np.ndarray:
    """Turn a vector given in the orbit frame (radial out, along-track, orbit normal) into TEME.

    The frame: x̂ = r̂ (radial, zenith), ẑ = (r × v)/|r × v| (orbit normal), ŷ = ẑ × x̂
    (along-track, the velocity direction for a circular orbit). Shapes (..., 3).
    """
    r_km = np.asarray(r_km, dtype=float)
    v_km_s = np.asarray(v_km_s, dtype=float)
    x_hat = r_km / np.linalg.norm(r_km, axis=-1, keepdims=True)
    h = np.cross(r_km, v_km_s)
    z_hat = h / np.linalg.norm(h, axis=-1, keepdims=True)
    y_hat = np.cross(z_hat, x_hat)
    n = np.asarray(vector_orbit_frame, dtype=float)
    return n[..., 0:1] * x_hat + n[..., 1:2] * y_hat + n[..., 2:3] * z_hat


def array_incidence_cos(
    sun_dir,
    r_km=None,
    v_km_s=None,
    pointing: str = "sun_tracking",
    normal_orbit_frame=(1.0, 0.0, 0.0),
) -> np.ndarray:
    """Cosine of the angle between the array normal and the Sun, unclipped (the power model clips).

    ``sun_dir``: vectors towards the Sun (any length), TEME, shape (..., 3). ``pointing``:

    - ``"sun_tracking"``: 1 everywhere (the array follows the Sun; eclipses are the shadow
      factor's business). ``r_km`` and ``v_km_s`` are not needed.
    - ``"body_fixed"``: n̂·ŝ, with n̂ = ``normal_orbit_frame`` (radial, along-track, orbit
      normal; default radial out, a zenith-facing panel) turned into TEME with the
      satellite's position ``r_km`` and velocity ``v_km_s``.

    >>> r = np.array([[7000.0, 0.0, 0.0]]); v = np.array([[0.0, 7.5, 0.0]])
    >>> array_incidence_cos(np.array([[1.0, 0.0, 0.0]]), r, v, "body_fixed").tolist()
    [1.0]
    >>> array_incidence_cos(np.array([[0.0, 1.0, 0.0]]), r, v, "body_fixed", (0.0, 1.0, 0.0)).tolist()
    [1.0]
    """
    sun_dir = np.asarray(sun_dir, dtype=float)
    if pointing == "sun_tracking":
        return np.ones(sun_dir.shape[:-1])
    if pointing != "body_fixed":
        raise ValueError(f"unknown pointing {pointing!r}; use one of {POINTINGS}")
    if r_km is None or v_km_s is None:
        raise ValueError("a body_fixed array needs the satellite's r_km and v_km_s to know where its normal points")
    normal = np.asarray(normal_orbit_frame, dtype=float)
    if normal.shape != (3,) or not np.linalg.norm(normal) > 0.0:
        raise ValueError(f"normal_orbit_frame must be a non-zero 3-vector, got {normal_orbit_frame!r}")
    n_teme = orbit_frame_to_teme(r_km, v_km_s, normal / np.linalg.norm(normal))
    s_hat = sun_dir / np.linalg.norm(sun_dir, axis=-1, keepdims=True)
    return np.einsum("...i,...i->...", n_teme, s_hat)
