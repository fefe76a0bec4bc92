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

Which way the array points is a separate question, answered by :func:`array_incidence_cos`
(one panel, nadir) and :func:`array_power_w` (several panels, any attitude):

- ``"sun_tracking"`` (the default): the array turns to the Sun, cos = 1 whenever there is
  sunlight to use (the shadow factor still takes it to 0 in umbra). That is the best case
  and what a spacecraft built for compute would fly.
- ``"body_fixed"``: each panel's normal is fixed in the body frame, which the attitude
  places (:func:`body_axes_teme`; the same conventions as the agent's
  ``flight.power.array.body_axes_teme``, implemented again here because the harness is the
  truth and must not borrow the agent's code):

  - ``"nadir"``: +X radial out (zenith), +Z the orbit normal r × v, +Y = Z × X (along-track
    on a circular orbit): the orbit frame. A top-deck panel is (1, 0, 0).
  - ``"sun"``: +X at the Sun, +Z the orbit normal made perpendicular to X (X × r̂ when the
    Sun lies along the orbit normal), +Y = Z × X.
  - ``"inertial"``: the TEME axes (a star-tracker hold).

  Then cos = n̂·ŝ per panel. Several panels (:func:`array_power_w`): each is clipped at 0
  on its own, since one panel's back does not cancel another's front, and the powers add.
"""

from __future__ import annotations

import numpy as np

SOLAR_CONSTANT_W_M2 = 1361.0
"""Total solar irradiance at 1 AU (FACTS.md "Orbits, power, thermal": ≈ 1361 W/m²)."""

POINTINGS = ("sun_tracking", "body_fixed")
ATTITUDES = ("nadir", "sun", "inertial")


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
    (along-track, the velocity direction for a circular orbit): the nadir attitude's body
    frame. Shapes (..., 3).
    """
    axes = _nadir_axes(np.asarray(r_km, dtype=float), np.asarray(v_km_s, dtype=float))
    n = np.asarray(vector_orbit_frame, dtype=float)
    return n[..., 0:1] * axes[..., 0, :] + n[..., 1:2] * axes[..., 1, :] + n[..., 2:3] * axes[..., 2, :]


def _normalised(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _nadir_axes(r_km: np.ndarray, v_km_s: np.ndarray) -> np.ndarray:
    x_hat = _normalised(r_km)
    z_hat = _normalised(np.cross(r_km, v_km_s))
    return np.stack([x_hat, np.cross(z_hat, x_hat), z_hat], axis=-2)


_SUN_ALONG_NORMAL = 1e-9
"""Below this |ĥ − (ĥ·ŝ)ŝ| the Sun lies along the orbit normal and any +Z ⟂ +X would do; the
agent uses the same threshold, so the two frames agree there too."""


def body_axes_teme(attitude: str, r_km, v_km_s, sun_dir) -> np.ndarray:
    """The body axes (+X, +Y, +Z) in TEME, shape (..., 3, 3): row k is axis k (see module doc).

    The agent's function's signature; ``sun_dir`` points at the Sun (any length); ``r_km``
    and ``v_km_s`` place the orbit normal (nadir and sun; inertial takes None).

    >>> r = np.array([7000.0, 0.0, 0.0]); v = np.array([0.0, 7.5, 0.0]); s = np.array([0.0, 2.0, 0.0])
    >>> body_axes_teme("nadir", r, v, s).round(6).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> body_axes_teme("sun", r, v, s).round(6).tolist()
    [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    sun_hat = _normalised(np.asarray(sun_dir, dtype=float))
    if attitude == "inertial":
        return np.broadcast_to(np.eye(3), sun_hat.shape[:-1] + (3, 3)).copy()
    if attitude not in ATTITUDES:
        raise ValueError(f"unknown attitude {attitude!r}; use one of {ATTITUDES}")
    if r_km is None or v_km_s is None:
        raise ValueError(f"a {attitude}-pointing body needs the satellite's r_km and v_km_s (its orbit normal)")
    r_km = np.asarray(r_km, dtype=float)
    v_km_s = np.asarray(v_km_s, dtype=float)
    if attitude == "nadir":
        return _nadir_axes(r_km, v_km_s)
    # Sun-pointing: Gram-Schmidt of the orbit normal against the Sun line.
    x_hat, h_hat = np.broadcast_arrays(sun_hat, _normalised(np.cross(r_km, v_km_s)))
    z_perp = h_hat - np.einsum("...i,...i->...", h_hat, x_hat)[..., None] * x_hat
    along_normal = np.linalg.norm(z_perp, axis=-1, keepdims=True) < _SUN_ALONG_NORMAL
    z_hat = _normalised(np.where(along_normal, np.cross(x_hat, _normalised(r_km)), z_perp))
    return np.stack([x_hat, np.cross(z_hat, x_hat), z_hat], axis=-2)


def panel_incidence_cos(sun_dir, r_km, v_km_s, attitude: str, normal_body) -> np.ndarray:
    """n̂·ŝ for one body-fixed panel, unclipped: ``normal_body`` (any length, not zero) in the
    body frame that ``attitude`` places. Shapes (..., 3) in, (...) out.

    >>> r = np.array([[7000.0, 0.0, 0.0]]); v = np.array([[0.0, 7.5, 0.0]]); s = np.array([[0.0, 0.6, 0.8]])
    >>> [round(float(panel_incidence_cos(s, r, v, a, (1.0, 0.0, 0.0))[0]), 6) for a in ATTITUDES]
    [0.0, 1.0, 0.0]
    """
    normal = np.asarray(normal_body, dtype=float)
    if normal.shape != (3,) or not np.all(np.isfinite(normal)) or not np.linalg.norm(normal) > 0.0:
        raise ValueError(f"a panel normal must be three finite numbers, not all zero, got {normal_body!r}")
    axes = body_axes_teme(attitude, r_km, v_km_s, sun_dir)
    n_teme = np.einsum("i,...ij->...j", normal / np.linalg.norm(normal), axes)
    return np.einsum("...i,...i->...", n_teme, _normalised(np.asarray(sun_dir, dtype=float)))


def array_power_w(
    shadow_factor,
    sun_dir,
    r_km,
    v_km_s,
    panels,
    efficiency: float,
    degradation_per_year: float,
    years: float,
    pointing: str = "body_fixed",
    attitude: str = "nadir",
    solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2,
) -> np.ndarray:
    """The whole array's output, W: Σ over ``panels`` ((normal_body, area_m2) pairs) of the
    Basilisk product, each panel's incidence clipped at 0 on its own (its back is no cell).

    Sun-tracking: every panel faces the Sun (the normals do not matter, the areas add).

    >>> r = np.array([[7000.0, 0.0, 0.0]]); v = np.array([[0.0, 7.5, 0.0]]); s = np.array([[1.0, 0.0, 0.0]])
    >>> two = [((1.0, 0.0, 0.0), 0.1), ((-1.0, 0.0, 0.0), 0.1)]   # back to back: one lit, one dark
    >>> round(float(array_power_w(1.0, s, r, v, two, 0.30, 0.0, 0.0)[0]), 6)
    40.83
    """
    if pointing not in POINTINGS:
        raise ValueError(f"unknown pointing {pointing!r}; use one of {POINTINGS}")
    if attitude not in ATTITUDES:
        raise ValueError(f"unknown attitude {attitude!r}; use one of {ATTITUDES}")
    panels = tuple(panels)
    if not panels:
        raise ValueError("an array needs at least one panel")
    sun_dir = np.asarray(sun_dir, dtype=float)
    total = np.zeros(np.broadcast_shapes(np.shape(shadow_factor), sun_dir.shape[:-1]))
    for normal, area_m2 in panels:
        cos = (np.ones(sun_dir.shape[:-1]) if pointing == "sun_tracking"
               else panel_incidence_cos(sun_dir, r_km, v_km_s, attitude, normal))
        total = total + solar_array_power_w(shadow_factor, cos, area_m2, efficiency, degradation_per_year, years,
                                            solar_constant_w_m2)
    return total


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
    return panel_incidence_cos(sun_dir, r_km, v_km_s, "nadir", normal)  # the orbit frame is the nadir body frame
