"""Heat from the Earth: albedo (reflected sunlight) and Earth infrared, at the spacecraft.

Both are given as the flux on a flat plate facing nadir (W/m²), the profile's
``albedo_w_m2`` and ``earth_ir_w_m2`` columns; a surface that sees less of the Earth
takes a fraction of them (``ThermalParams.earth_view_factor``).

Numbers: the design averages of Gilmore (ed.), "Spacecraft Thermal Control Handbook",
vol. I, 2nd ed. (2002), ch. 2: outgoing long-wave radiation 237 W/m² at the top of the
atmosphere and a Bond albedo of 0.30 (both vary by tens of percent with latitude,
clouds and season; hot/cold cases are the thermal engineer's job, not the harness's).

Geometry: a flat plate facing nadir at distance r from the centre of a spherical Earth
of radius R sees it with view factor F = (R/r)² (the plate-to-sphere view factor for a
plate whose normal passes through the centre; e.g. Gilmore ch. 2, or any table of
view factors). 0.8475 at 550 km.

Albedo: ``albedo · S · F · max(0, cos ζ)`` with ζ the Sun's zenith angle at the point
under the satellite, the usual first-order formula (it ignores the sunlit crescent seen
from beyond the terminator). The satellite at 550 km goes into the Earth's shadow only
when the point under it is ~23° past the terminator, so this is 0 in umbra: "albedo in
sunlight only" holds by geometry.
"""

from __future__ import annotations

import numpy as np

from flight.orbit.frames import WGS84_A_KM
from hil.physics.solar import SOLAR_CONSTANT_W_M2

EARTH_IR_W_M2 = 237.0
"""Outgoing long-wave radiation at the top of the atmosphere, orbit-average (Gilmore 2002, ch. 2)."""

EARTH_ALBEDO = 0.30
"""Bond albedo, orbit-average design value (Gilmore 2002, ch. 2)."""

EARTH_RADIUS_KM = WGS84_A_KM
"""Spherical Earth for the view factor; the 21 km of flattening changes F by < 0.6 %."""


def nadir_plate_view_factor(r_km) -> np.ndarray:
    """View factor (R/r)² from a nadir-facing plate to the Earth; ``r_km`` positions (..., 3).

    >>> round(float(nadir_plate_view_factor(np.array([6378.137 + 550.0, 0.0, 0.0]))), 4)
    0.8475
    """
    r = np.linalg.norm(np.asarray(r_km, dtype=float), axis=-1)
    return np.minimum(EARTH_RADIUS_KM / r, 1.0) ** 2


def earth_ir_flux_w_m2(r_km, earth_ir_w_m2: float = EARTH_IR_W_M2) -> np.ndarray:
    """Earth infrared on a nadir-facing plate, W/m²: OLR × (R/r)²."""
    return earth_ir_w_m2 * nadir_plate_view_factor(r_km)


def albedo_flux_w_m2(
    r_km, sun_dir, albedo: float = EARTH_ALBEDO, solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2
) -> np.ndarray:
    """Reflected sunlight on a nadir-facing plate, W/m²: a · S · (R/r)² · max(0, r̂·ŝ).

    ``sun_dir`` points to the Sun (any length), same frame as ``r_km``.
    """
    r_km = np.asarray(r_km, dtype=float)
    sun_dir = np.asarray(sun_dir, dtype=float)
    r_hat = r_km / np.linalg.norm(r_km, axis=-1, keepdims=True)
    s_hat = sun_dir / np.linalg.norm(sun_dir, axis=-1, keepdims=True)
    cos_zenith = np.einsum("...i,...i->...", r_hat, s_hat)
    return albedo * solar_constant_w_m2 * nadir_plate_view_factor(r_km) * np.maximum(cos_zenith, 0.0)
