#!/usr/bin/env python3
"""Fit the agent's South Atlantic Anomaly model (flight/orbit/saa.py) to the AP8 map the harness ships.

    python scripts/fit_saa_model.py           # print the table and how well it fits
    python scripts/fit_saa_model.py --write   # and write it into flight/orbit/saa.py

The agent carries a handful of numbers per altitude, not a flux map: a tilted ellipse in
geodetic latitude and longitude. This script chooses them, once, at build time, from the
trapped-flux map (hil/data/trapped_flux_map.npz, AP8 through IRBEM: scripts/build_radiation_map.py),
the same published model a mission would read its SAA contour from before launch. What the agent
then gets wrong is the ellipse's shape against the real tear-drop, and the solar cycle (fitted to
AP8-MIN, whose proton flux is the higher); see flight/orbit/saa.py.

The region, per altitude layer of the map: where AP8-MIN's integral flux of protons above 10 MeV
exceeds :data:`flight.orbit.saa.SAA_FLUX_CM2_S`, within ±:data:`FIT_LAT_DEG` of the equator (the
inner belt; the outer belt's horns, poleward of it, are the agent's "high latitude" class). The
ellipse minimises the area it gets wrong over the whole globe (every latitude a board flies over:
found in review, an ellipse fitted within ±50 deg alone reached past them unpenalised), on a
:data:`GRID_STEP_DEG` grid, weighted by cos(latitude) (area on the sphere), a point of the region
left out counting :data:`MISS_WEIGHT` times a point wrongly put in: a miss leaves upsets to the quiet
scrub period, a false entry only costs scrubs and double runs. Nelder-Mead on a smoothed count (each
point's membership a logistic of its distance, ``rho``, at a width of :data:`SOFT_RHO`), started
from the region's centroid and second moments: deterministic. A layer with no region (none in the
map shipped) is written with semi-axes 0 and the nearest fitted layer's centre and tilt, so that
interpolating towards it shrinks the ellipse in place.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from flight.orbit.saa import SAA_FLUX_CM2_S, tilted_rho  # noqa: E402
from hil.profiles.radiation import TrappedFluxMap  # noqa: E402

FIT_LAT_DEG = 50.0
GRID_LAT_DEG = 85.0  # the grid's extent: past every latitude a LEO board flies over (98.6 deg SSO: 81.4)
GRID_STEP_DEG = 0.5
MISS_WEIGHT = 10.0
"""A point of the region left out costs this many points wrongly put in. Left out, the board scrubs its
weights every 1500 s where the upset rate is tens of times the quiet one (flight/compute/scrub.py's
SCRUB_PERIOD_S); put in, it scrubs every 30 s (a thousandth of a percent of a core for the shipped model)
and, where configured, runs every batch twice. At 3 the fit left stretches above 100 /cm²/s out for up
to 110 s at 800 km; at 10 none from 300 to 800 km, for 1-4 % of the time put in wrongly."""
SOFT_RHO = 0.03
LAYER = "proton_min"
TABLE_BEGIN = "# -- fitted by scripts/fit_saa_model.py: begin"
TABLE_END = "# -- fitted by scripts/fit_saa_model.py: end"


def grid(step_deg: float = GRID_STEP_DEG) -> tuple[np.ndarray, np.ndarray]:
    lat = np.arange(-GRID_LAT_DEG, GRID_LAT_DEG + step_deg / 2, step_deg)
    lon = np.arange(-180.0, 180.0, step_deg)
    return np.meshgrid(lat, lon, indexing="ij")


def fit_layer(flux_map: TrappedFluxMap, alt_km: float,
              step_deg: float = GRID_STEP_DEG) -> tuple[tuple[float, ...], dict[str, float]]:
    """The ellipse ``(centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg)`` at
    ``alt_km`` (semi-axes 0 where there is no region) and how it fits: of the region's area, the
    share left out (``missed``) and the area wrongly put in (``extra``), and the share of the flux
    inside (``flux_inside``), each weighted by cos(latitude)."""
    lat, lon = grid(step_deg)
    weight = np.cos(np.radians(lat))
    flux = flux_map.flux_cm2_s(LAYER, lat, lon, np.full(lat.shape, float(alt_km)))
    region = (flux > SAA_FLUX_CM2_S) & (np.abs(lat) < FIT_LAT_DEG)
    if not region.any():
        return (0.0, 0.0, 0.0, 0.0, 0.0), {"missed": 0.0, "extra": 0.0, "flux_inside": 1.0}
    w = weight * region
    c_lat, c_lon = float((lat * w).sum() / w.sum()), float((lon * w).sum() / w.sum())
    cov = np.cov(np.stack([(lon - c_lon).ravel(), (lat - c_lat).ravel()]), aweights=w.ravel())
    values, vectors = np.linalg.eigh(cov)  # ascending: the last is the long axis
    tilt = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])))
    start = np.array([c_lat, c_lon, 2.0 * np.sqrt(values[1]), 2.0 * np.sqrt(values[0]), tilt])

    def smoothed(p: np.ndarray) -> float:
        rho = tilted_rho(lat, lon, *p)
        inside = 0.5 * (1.0 - np.tanh((rho - 1.0) / (2.0 * SOFT_RHO)))  # logistic, without overflow
        return float((weight * (MISS_WEIGHT * region * (1.0 - inside) + ~region * inside)).sum())

    best = minimize(smoothed, start, method="Nelder-Mead",
                    options={"maxiter": 4000, "xatol": 1e-3, "fatol": 1e-3}).x
    c_lat, c_lon, a, b, tilt = (float(v) for v in best)
    major, minor = (abs(a), abs(b)) if abs(a) >= abs(b) else (abs(b), abs(a))
    tilt = tilt if abs(a) >= abs(b) else tilt + 90.0
    tilt = (tilt + 90.0) % 180.0 - 90.0  # an ellipse turned half a turn is itself
    c_lon = (c_lon + 180.0) % 360.0 - 180.0
    params = tuple(round(v, 2) for v in (c_lat, c_lon, major, minor, tilt))
    inside = tilted_rho(lat, lon, *params) < 1.0
    area = float((weight * region).sum())
    belt = weight * flux * (np.abs(lat) < FIT_LAT_DEG)
    return params, {"missed": float((weight * (region & ~inside)).sum()) / area,
                    "extra": float((weight * (inside & ~region)).sum()) / area,
                    "flux_inside": float((belt * inside).sum() / belt.sum())}


def fit(flux_map: TrappedFluxMap) -> list[tuple[float, ...]]:
    """One row ``(alt_km, centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg)`` per
    altitude layer of the map."""
    return with_empty_layers_placed([(float(alt), *fit_layer(flux_map, float(alt))[0]) for alt in flux_map.alt_km])


def with_empty_layers_placed(rows: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """``rows`` with each layer that has no region (semi-axes 0) given the nearest fitted layer's centre and
    tilt: interpolated through (0, 0, 0), the ellipse between it and the next would slide towards 0 N 0 E
    (found in review)."""
    fitted = [row for row in rows if row[3] > 0.0]
    if not fitted:
        return rows
    return [row if row[3] > 0.0 else
            (row[0], *min(fitted, key=lambda f: abs(f[0] - row[0]))[1:3], 0.0, 0.0,
             min(fitted, key=lambda f: abs(f[0] - row[0]))[5]) for row in rows]


def map_digest(flux_map: TrappedFluxMap) -> str:
    """SHA-256 of what the fit reads from the map (its axes and the :data:`LAYER` layer, as little-endian
    float64): written beside the table, so a test can tell that the map has changed since the table was
    fitted without fitting every layer again, and a map rebuilt to the same numbers does not count."""
    digest = hashlib.sha256()
    for array in (flux_map.lat_deg, flux_map.lon_deg, flux_map.alt_km, flux_map.log10_flux[LAYER]):
        digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return digest.hexdigest()


def table_text(rows: list[tuple[float, ...]], digest: str) -> str:
    lines = [TABLE_BEGIN,
             f'SAA_TABLE_MAP_SHA256 = "{digest}"',
             "SAA_TABLE = (",
             "    # alt_km, centre_lat_deg, centre_lon_deg, semi_major_deg, semi_minor_deg, tilt_deg"]
    lines += ["    (" + ", ".join(f"{v:.2f}" if k else f"{v:.1f}" for k, v in enumerate(row)) + ")," for row in rows]
    lines += [")", TABLE_END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the table into flight/orbit/saa.py")
    args = parser.parse_args(argv)
    flux_map = TrappedFluxMap.load()
    rows = []
    for alt in flux_map.alt_km:
        params, quality = fit_layer(flux_map, float(alt))
        rows.append((float(alt), *params))
        print(f"{alt:6.0f} km  {params}  missed {quality['missed']:.3f}  extra {quality['extra']:.3f}  "
              f"flux inside {quality['flux_inside']:.4f}")
    text = table_text(with_empty_layers_placed(rows), map_digest(flux_map))
    print(text)
    if args.write:
        target = ROOT / "flight" / "orbit" / "saa.py"
        source = target.read_text()
        pattern = re.compile(re.escape(TABLE_BEGIN) + ".*?" + re.escape(TABLE_END), re.S)
        if not pattern.search(source):
            print(f"{target}: no table between {TABLE_BEGIN!r} and {TABLE_END!r}", file=sys.stderr)
            return 1
        target.write_text(pattern.sub(lambda _m: text, source))
        print(f"written into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
