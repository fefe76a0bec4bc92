#!/usr/bin/env python3
"""Build the trapped-radiation map the HIL profiles read: AP8/AE8 integral flux on a lat × lon × alt grid.

    python scripts/build_radiation_map.py                        # into hil/data/trapped_flux_map.npz
    python scripts/build_radiation_map.py --out /tmp/map.npz     # somewhere else, e.g. to compare

Needs ``spacepy`` (``pip install spacepy``; its ``irbempy`` wraps the IRBEM library, whose
``fly_in_nasa_aeap1`` evaluates the NASA AP8/AE8 models). Only this script does: the
harness reads the finished map with numpy alone. Without spacepy it stops and says so;
there is no stand-in model in here, so a map in the repository was built by AP8/AE8
(its metadata's ``source`` says which code and version).

What is computed, per grid point and for solar minimum and maximum: the integral flux of
protons above 10 MeV and of electrons above 1 MeV, /cm²/s, at a geodetic (WGS-84)
altitude, latitude and longitude. AP8/AE8 return "no flux" (NaN through spacepy) outside
the belts; that is stored as 0.

Speed: spacepy's public ``get_AEP8`` takes one point per call and spends ~15 ms preparing
arrays, which for ~120 000 points × 4 layers would be two hours. So the points go to
IRBEM's ``fly_in_nasa_aeap1`` in batches of up to 100 000 through spacepy's own
``prep_irbem`` / ``prep_ctypes`` (what ``get_AEP8`` does for its one point); ~0.1 ms a
point, about a minute in all. Before the grid, a sample of points is checked against the
public ``get_AEP8``: the build stops if any differs (it agreed exactly when written).

Deterministic: the same spacepy version gives the same file, byte for byte, apart from
the zip container's time stamps (numpy writes none that vary).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from hil.profiles.radiation import DEFAULT_MAP_PATH, LAYERS, TrappedFluxMap  # noqa: E402

LAT_STEP_DEG = 2.0
LON_STEP_DEG = 4.0
ALT_KM = (200.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0, 550.0, 600.0, 650.0, 700.0, 800.0, 900.0, 1000.0, 1200.0)
"""Altitude layers: every 50 km through 200-700 km where the profiles fly, coarser above
(up to 1200 km, for 'what if' orbits). Below 200 km the belts are gone into the atmosphere."""

PROTON_MEV = 10.0
ELECTRON_MEV = 1.0
# IRBEM's model switch (whichm) for fly_in_nasa_aeap1, as spacepy's get_AEP8 sets it.
WHICHM = {"electron_min": 1, "electron_max": 2, "proton_min": 3, "proton_max": 4}
ENERGY_MEV = {"electron_min": ELECTRON_MEV, "electron_max": ELECTRON_MEV, "proton_min": PROTON_MEV,
              "proton_max": PROTON_MEV}
INTEGRAL_FLUX = 3  # IRBEM whatf: 1 differential, 2 range, 3 integral
# The date only matters to IRBEM's bookkeeping: AP8/AE8 run in their own 1960s field models.
DATE_ISO = "2026-11-24T00:00:00"


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lat = np.arange(-90.0, 90.0 + LAT_STEP_DEG / 2, LAT_STEP_DEG)
    lon = np.arange(-180.0, 180.0 - LON_STEP_DEG / 2, LON_STEP_DEG)
    return lat, lon, np.array(ALT_KM)


class IrbemAep8:
    """Batch AP8/AE8 integral flux through spacepy's IRBEM binding (see module doc)."""

    def __init__(self):
        import spacepy
        import spacepy.coordinates as spc
        import spacepy.irbempy as irbempy
        import spacepy.time as spt

        self.spacepy_version = spacepy.__version__
        self.irbempy = irbempy
        self.spc, self.spt = spc, spt
        self.ticks = spt.Ticktock([DATE_ISO], "ISO")

    def _prepared(self):
        c = self.spc.Coords([[550.0, 0.0, 0.0]], "GDZ", "sph", use_irbem=True)
        c.ticks = self.ticks
        dummy_omni = {k: [0] for k in ("Kp", "Dst", "dens", "velo", "Pdyn", "ByIMF", "BzIMF", "G1", "G2", "G3",
                                       "W1", "W2", "W3", "W4", "W5", "W6")}
        return self.irbempy.prep_irbem(ticks=self.ticks, loci=c, omnivals=dummy_omni)

    def flux(self, layer: str, alt_km: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """Integral flux /cm²/s at geodetic points (NaN outside the belts, as get_AEP8)."""
        int4, real8 = ctypes.c_int, ctypes.c_double
        d = self._prepared()
        ntime_max, nene_max = d["ntime_max"], d["nalp_max"]
        out = []
        for s in range(0, alt_km.size, ntime_max):
            n = min(ntime_max, alt_km.size - s)
            for key, values in (("xin1", alt_km), ("xin2", lat_deg), ("xin3", lon_deg)):
                d[key][:] = 0.0
                d[key][:n] = values[s : s + n]
            for key in ("iyearsat", "idoysat", "utsat"):
                d[key][:n] = d[key][0]
            d_c = self.irbempy.prep_ctypes(d)
            energy = np.zeros((2, nene_max))
            energy[:, 0] = ENERGY_MEV[layer]
            flux = np.empty((ntime_max, nene_max), np.float64)
            self.irbempy.irbemlib.fly_in_nasa_aeap1(
                int4(n), d_c["sysaxes"], int4(WHICHM[layer]), int4(INTEGRAL_FLUX), int4(1),
                energy.ctypes.data_as(ctypes.POINTER((real8 * 2) * nene_max)),
                d_c["iyearsat"], d_c["idoysat"], d_c["utsat"], d_c["xin1"], d_c["xin2"], d_c["xin3"],
                flux.ctypes.data_as(ctypes.POINTER((real8 * ntime_max) * nene_max)),
            )
            # Fortran flux(ntime_max, nene): energy 1 is the first ntime_max values in memory.
            f = flux.ravel()[:n].copy()
            f[np.isclose(f, d["badval"])] = np.nan
            out.append(f)
        return np.concatenate(out)

    def flux_public(self, layer: str, alt_km: float, lat_deg: float, lon_deg: float) -> float:
        """One point through spacepy's public get_AEP8: the reference the batch path is checked against."""
        c = self.spc.Coords([[alt_km, lat_deg, lon_deg]], "GDZ", "sph", use_irbem=True)
        c.ticks = self.ticks
        particles = "p" if layer.startswith("proton") else "e"
        return float(self.irbempy.get_AEP8(ENERGY_MEV[layer], c, model=layer.split("_")[1], fluxtype="int",
                                          particles=particles))

    def self_check(self, n: int = 24, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        alt = rng.uniform(300.0, 1000.0, n)
        lat = rng.uniform(-60.0, 60.0, n)
        lon = rng.uniform(-180.0, 180.0, n)
        alt[0], lat[0], lon[0] = 550.0, -30.0, -45.0  # the FACTS.md point
        for layer in LAYERS:
            batch = self.flux(layer, alt, lat, lon)
            public = np.array([self.flux_public(layer, a, la, lo) for a, la, lo in zip(alt, lat, lon)])
            same_nan = np.array_equal(np.isnan(batch), np.isnan(public))
            ok = np.isnan(public) | np.isclose(batch, public, rtol=1e-12, atol=0.0)
            if not (same_nan and ok.all()):
                raise SystemExit(f"batch IRBEM call disagrees with spacepy get_AEP8 for {layer}: {batch} vs {public}")


def build_map(flux_fn, source: str, extra_metadata: dict | None = None) -> TrappedFluxMap:
    """Evaluate ``flux_fn(layer, alt_km, lat_deg, lon_deg) -> flux (NaN = none)`` on the grid."""
    lat, lon, alt = grid()
    la, lo, al = np.meshgrid(lat, lon, alt, indexing="ij")
    layers = {}
    for layer in LAYERS:
        flux = np.asarray(flux_fn(layer, al.ravel(), la.ravel(), lo.ravel()), dtype=float).reshape(la.shape)
        flux = np.where(np.isfinite(flux) & (flux > 0.0), flux, 0.0)
        layers[layer] = np.log10(1.0 + flux)
    metadata = {
        "source": source,
        "quantity": "integral flux, /cm2/s: protons above 10 MeV, electrons above 1 MeV",
        "layers": {k: f"log10(1 + flux) of {k.split('_')[0]}s above {ENERGY_MEV[k]:g} MeV, AP8/AE8 solar "
                      f"{k.split('_')[1].upper()}" for k in LAYERS},
        "grid": {"lat_step_deg": LAT_STEP_DEG, "lon_step_deg": LON_STEP_DEG, "alt_km": list(ALT_KM),
                 "coordinates": "geodetic WGS-84 (IRBEM GDZ)"},
        "built_by": "scripts/build_radiation_map.py",
        **(extra_metadata or {}),
    }
    return TrappedFluxMap(lat, lon, alt, layers, metadata)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_MAP_PATH, help="output file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        model = IrbemAep8()
    except ImportError as exc:
        print(f"build_radiation_map: spacepy (with irbempy) is needed to build the map: {exc}. "
              "Install it with `pip install spacepy`; the shipped map needs nothing to be read.", file=sys.stderr)
        return 2
    start = time.perf_counter()
    model.self_check()
    source = f"AP8/AE8 (NASA trapped radiation models) via IRBEM fly_in_nasa_aeap1, spacepy {model.spacepy_version}"
    flux_map = build_map(model.flux, source, {"irbem_date": DATE_ISO})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    flux_map.save(args.out)
    peak = flux_map.flux_cm2_s("proton_min", -30.0, -45.0, 550.0)
    print(json.dumps({
        "out": str(args.out), "bytes": args.out.stat().st_size, "seconds": round(time.perf_counter() - start, 1),
        "source": source, "proton_min_gt10MeV_at_30S_45W_550km_cm2_s": round(float(peak), 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
