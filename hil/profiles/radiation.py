"""Trapped-particle radiation along a ground track: flux, single-event upset rate, dose.

Flux: a precomputed map of the AP8 (protons) and AE8 (electrons) trapped-radiation models,
``hil/data/trapped_flux_map.npz``, built by ``scripts/build_radiation_map.py`` with IRBEM
through ``spacepy.irbempy`` (an optional, build-time-only dependency; the map's metadata
names the source that built it, :attr:`TrappedFluxMap.source`). It holds, on a grid of
geodetic latitude × longitude × altitude, the integral flux of protons above 10 MeV and of
electrons above 1 MeV, /cm²/s, for solar minimum and maximum. IRBEM evaluates AP8/AE8 in
the geomagnetic field the models were built with (1960's for all but AP8-MAX, 1970's for it:
:data:`FIELD_EPOCH_YEAR`), so in the map the South Atlantic Anomaly sits where it was then,
near 30° S 45° W (FACTS.md).

Drift: the truth moves the map with the field, from its epoch to each sample's date, at
:attr:`RadiationParams.saa_drift_west_deg_per_yr` and ``saa_drift_north_deg_per_yr``
(default Insight-HXMT's rates, from its particle monitors over June 2017 to March 2024:
0.343 ± 0.002 deg/yr west and 0.028 ± 0.002 north, about 22.9° west and 1.9° north of the
1960 field's place by late 2026; RXTE measured about 0.3 west over 1996-2007, Fürst et al.,
EPSL 2009). The whole map moves, the anomaly being the field's feature; so do the outer belt's
electron horns, which have moved less (no effect on upsets, and on dose only where the electron
weight is set). The agent estimates the drift with a rate of its own (flight/orbit/saa.py), so
its SAA is off by the difference, as it would be in flight; neither follows the drift's
irregularities.

Interpolation: trilinear in (latitude, longitude, altitude) on log10(1 + flux), the
layers stored that way. Flux grows roughly exponentially with altitude through LEO, so
interpolating its logarithm follows it between 50 km layers; the "1 +" keeps the
zero-flux regions (outside the belts AP8 gives nothing) exactly zero. Longitude wraps;
altitudes outside the map are clamped to its top or bottom layer (the generator records
how many samples were, and the profile's notes say so).

Upsets: rate = proton flux (>10 MeV) × σ (cm² per bit) × bits, the usual
"saturated cross-section × integral flux" estimate for proton-induced SEU (electrons
do not upset modern parts through direct ionisation; heavy ions are left out).

Dose: dose rate = k_p × proton flux + k_e × electron flux (rad/s), accumulated along the
track. The method is a calibration, stated: k_p is chosen so that a 550 km sun-synchronous
orbit collects 160 rad/yr (FACTS.md, "Radiation": ~150–170 rad/yr in LEO behind a few mm
of Al; secondary sources), with the electron share folded into it (k_e = 0 by default).
What k_p means physically: 1 rad = 6.24e7 MeV/g, so k_p = S_eff / 6.24e7 with S_eff the
energy a proton (>10 MeV) leaves per g/cm²; the calibrated value is given with
:data:`DOSE_RAD_PER_PROTON_CM2`. Checked against the other FACTS.md figure it implies
(~1 krad/yr at 780 km) in tests/test_hil_profiles_fidelity.py.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_MAP_PATH = DATA_DIR / "trapped_flux_map.npz"

MAP_FORMAT = "sunlit-trapped-flux-map"
MAP_FORMAT_VERSION = 1
LAYERS = ("proton_min", "proton_max", "electron_min", "electron_max")
"""The flux layers a map holds: particle × solar-cycle phase of AP8/AE8 (MIN, MAX)."""

SOLAR_CYCLE = ("min", "max")

FIELD_EPOCH_YEAR = {"proton_min": 1960.0, "proton_max": 1970.0, "electron_min": 1960.0, "electron_max": 1960.0}
"""The epoch of the geomagnetic field each layer is evaluated in, which places its anomaly (IRBEM's
AP8/AE8: Jensen and Cain's 1960 field for AP8-MIN, AE8-MIN and AE8-MAX; GSFC 12/66 carried to 1970
for AP8-MAX); the drift runs from there. Not the models' data epochs (AP8-MIN's 1964)."""

SAA_DRIFT_WEST_DEG_PER_YR = 0.343
SAA_DRIFT_NORTH_DEG_PER_YR = 0.028
"""The truth's drift of the anomaly, deg/yr (Insight-HXMT's particle monitors, June 2017 to March
2024: 0.343 ± 0.002 west, 0.028 ± 0.002 north). Defaults of :class:`RadiationParams`."""

MAX_DRIFT_DEG_PER_YR = 5.0
"""The largest drift rate a profile takes, either way: ten times any measured."""

_UNIX_EPOCH_YEAR = 1970.0

SECONDS_PER_YEAR = 365.25 * 86400.0

DOSE_RAD_PER_PROTON_CM2 = 1.361e-7
"""k_p, rad per (>10 MeV proton / cm²); the calibration in the module doc.

Calibrated on the map shipped here: the shipped 550 km sun-synchronous orbit (10:30,
AP8-min) averages 37.25 /cm²/s above 10 MeV over 3 days (10 s steps), and
160 rad/yr / (37.25 × 3.156e7 s/yr) = 1.361e-7 rad·cm². As an effective stopping power that
is 1.361e-7 × 6.24e7 = 8.5 MeV·cm²/g, what a ~60 MeV proton leaves in silicon (NIST PSTAR):
plausible for the >10 MeV trapped spectrum behind a few mm of aluminium, which is why one
constant can carry it. Consequences, measured with it: 780 km sun-synchronous gets
~630 rad/yr (FACTS.md: ~1 krad/yr, secondary; within a factor 2), and the ISS-like 420 km
51.6° orbit ~85 rad/yr, below the 150–170 rad/yr FACTS.md quotes for 400–500 km: the
calibration point was set at 550 km, and AP8 falls steeply below it."""

MEV_PER_G_PER_RAD = 6.2415e7
"""1 rad = 0.01 J/kg = 100 erg/g = 6.2415e7 MeV/g."""


class FluxMapError(ValueError):
    """A flux map file that cannot be used; the message says what is wrong and how to rebuild it."""


@dataclass(frozen=True, eq=False)
class TrappedFluxMap:
    """AP8/AE8 integral flux on a (lat, lon, alt) grid; see the module doc.

    Build with :meth:`load` (a file) or directly from arrays (tests, the build script).
    ``log10_flux`` maps each of :data:`LAYERS` to an array of shape
    (len(lat_deg), len(lon_deg), len(alt_km)) of log10(1 + flux [/cm²/s]).
    ``lon_deg`` covers one turn without repeating its first value (it wraps).
    """

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    alt_km: np.ndarray
    log10_flux: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("lat_deg", "lon_deg", "alt_km"):
            axis = np.asarray(getattr(self, name), dtype=float)
            if axis.ndim != 1 or axis.size < 2 or not np.all(np.diff(axis) > 0):
                raise FluxMapError(f"flux map axis {name} must be 1-D, increasing, with at least 2 values")
            object.__setattr__(self, name, axis)
        if self.lat_deg[0] < -90.0 or self.lat_deg[-1] > 90.0:
            raise FluxMapError("flux map lat_deg must lie within -90..90")
        if self.lon_deg[-1] - self.lon_deg[0] >= 360.0:
            raise FluxMapError("flux map lon_deg must span less than 360 deg (it wraps; do not repeat the first)")
        shape = (self.lat_deg.size, self.lon_deg.size, self.alt_km.size)
        missing = [k for k in LAYERS if k not in self.log10_flux]
        if missing:
            raise FluxMapError(f"flux map lacks layers {missing}; rebuild it with scripts/build_radiation_map.py")
        layers = {}
        for key in LAYERS:
            layer = np.asarray(self.log10_flux[key], dtype=float)
            if layer.shape != shape:
                raise FluxMapError(f"flux map layer {key} has shape {layer.shape}, expected {shape}")
            if not np.all(np.isfinite(layer)) or np.any(layer < 0.0):
                raise FluxMapError(f"flux map layer {key} must be finite log10(1 + flux) >= 0")
            layers[key] = layer
        object.__setattr__(self, "log10_flux", layers)

    @property
    def source(self) -> str:
        """Which model and code built the map (from its metadata), e.g. 'AP8/AE8 via IRBEM (spacepy 0.7.0)'."""
        return str(self.metadata.get("source", "unknown"))

    # ------------------------------------------------------------------------ file I/O
    @classmethod
    def load(cls, path: str | Path = DEFAULT_MAP_PATH) -> "TrappedFluxMap":
        path = Path(path)
        try:
            if path.is_file() and not zipfile.is_zipfile(path):  # else np.load takes it for a pickle, and says so
                raise FluxMapError(f"{path}: not a flux map (an .npz, a zip file: it is not one, or it is cut short); "
                                   "rebuild it with scripts/build_radiation_map.py")
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["metadata_json"]))
                kind = meta.get("format") if isinstance(meta, dict) else None  # a list there: no AttributeError
                if kind != MAP_FORMAT:
                    raise FluxMapError(f"{path}: not a {MAP_FORMAT} file (format {kind!r})")
                if meta.get("format_version") != MAP_FORMAT_VERSION:
                    raise FluxMapError(
                        f"{path}: map format version {meta.get('format_version')}, this code reads "
                        f"{MAP_FORMAT_VERSION}; rebuild it with scripts/build_radiation_map.py"
                    )
                return cls(z["lat_deg"], z["lon_deg"], z["alt_km"],
                           {k: z[f"log10_1p_{k}"] for k in LAYERS}, meta)
        except FileNotFoundError:
            raise FluxMapError(f"{path}: no flux map there; build one with scripts/build_radiation_map.py") from None
        except KeyError as exc:
            raise FluxMapError(f"{path}: missing array {exc}; rebuild it with scripts/build_radiation_map.py") from None
        except FluxMapError:
            raise
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # found in audit: a truncated or corrupt
            # map (BadZipFile, a bad CRC) or a folder was an internal error
            raise FluxMapError(f"{path}: not a readable flux map ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                               "rebuild it with scripts/build_radiation_map.py") from None

    def save(self, path: str | Path) -> None:
        """Write the map (float32 layers, zip-compressed), with the metadata as JSON inside."""
        meta = {**self.metadata, "format": MAP_FORMAT, "format_version": MAP_FORMAT_VERSION}
        arrays = {f"log10_1p_{k}": self.log10_flux[k].astype(np.float32) for k in LAYERS}
        with open(path, "wb") as fh:  # np.savez would append .npz to a name without it
            np.savez_compressed(
                fh,
                lat_deg=self.lat_deg,
                lon_deg=self.lon_deg,
                alt_km=self.alt_km,
                metadata_json=np.array(json.dumps(meta, sort_keys=True)),
                **arrays,
            )

    # ------------------------------------------------------------------------ lookup
    def flux_cm2_s(self, layer: str, lat_deg, lon_deg, alt_km) -> np.ndarray:
        """Integral flux, /cm²/s, of ``layer`` (one of :data:`LAYERS`) at geodetic points. Broadcasts.

        >>> m = TrappedFluxMap.load()
        >>> float(m.flux_cm2_s("proton_min", -30.0, -45.0, 550.0)) > 1000.0
        True
        """
        if layer not in self.log10_flux:
            raise ValueError(f"unknown layer {layer!r}; use one of {LAYERS}")
        lat, lon, alt = np.broadcast_arrays(
            np.asarray(lat_deg, dtype=float), np.asarray(lon_deg, dtype=float), np.asarray(alt_km, dtype=float)
        )
        table = self.log10_flux[layer]
        i0, fi = _bracket(self.lat_deg, np.clip(lat, self.lat_deg[0], self.lat_deg[-1]))
        k0, fk = _bracket(self.alt_km, np.clip(alt, self.alt_km[0], self.alt_km[-1]))
        # Longitude: the grid is periodic; index from the first node in units of the (uniform) step.
        n_lon = self.lon_deg.size
        step = 360.0 / n_lon
        u = np.mod(lon - self.lon_deg[0], 360.0) / step
        j0 = np.minimum(np.floor(u).astype(np.intp), n_lon - 1)
        fj = u - j0
        j1 = (j0 + 1) % n_lon
        i1 = np.minimum(i0 + 1, self.lat_deg.size - 1)
        k1 = np.minimum(k0 + 1, self.alt_km.size - 1)
        value = np.zeros(lat.shape)
        for ii, wi in ((i0, 1.0 - fi), (i1, fi)):
            for jj, wj in ((j0, 1.0 - fj), (j1, fj)):
                for kk, wk in ((k0, 1.0 - fk), (k1, fk)):
                    value = value + wi * wj * wk * table[ii, jj, kk]
        return np.power(10.0, value) - 1.0

    def covers_alt_km(self, alt_km) -> np.ndarray:
        alt_km = np.asarray(alt_km, dtype=float)
        return (alt_km >= self.alt_km[0]) & (alt_km <= self.alt_km[-1])


def _bracket(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower node index and fraction (0..1) of ``x`` on an increasing ``axis`` (x already clipped to it)."""
    i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, axis.size - 2)
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])


@dataclass(frozen=True)
class RadiationParams:
    """What turns flux into upsets and dose. Validated here, once.

    - ``solar_cycle``: "min" or "max", which AP8/AE8 layer. Default "min": more protons in
      LEO (the atmosphere is thinner at solar minimum), the conservative choice, and the
      one FACTS.md quotes (AP8-min ≈ 1.6e3 /cm²/s above 10 MeV at 550 km in the SAA).
    - ``cross_section_cm2_per_bit`` 1e-14 and ``bits`` 2**26 (64 Mbit, 8 MiB: the state
      whose corruption the harness models, e.g. resident model weights). A typical order of
      magnitude for the proton SEU saturation cross-section of SRAM (uncertain). With the
      shipped map, a 550 km sun-synchronous orbit then sees 3.2e-8 upsets/bit/day, inside
      the 1e-9…1e-7 range FACTS.md gives, about 2 upsets a day on the 64 Mbit, nearly all
      in the SAA.
    - ``dose_rad_per_proton_cm2`` / ``dose_rad_per_electron_cm2``: the dose calibration of
      the module doc.
    - ``saa_drift_west_deg_per_yr`` / ``saa_drift_north_deg_per_yr``: how fast the truth's
      map moves from its epoch (the module doc), either sign, up to
      :data:`MAX_DRIFT_DEG_PER_YR`; 0 and 0 keep the map where AP8 put it.
    - ``map_path``: None for the shipped map.
    """

    solar_cycle: str = "min"
    cross_section_cm2_per_bit: float = 1e-14
    bits: float = float(2**26)
    dose_rad_per_proton_cm2: float = DOSE_RAD_PER_PROTON_CM2
    dose_rad_per_electron_cm2: float = 0.0
    saa_drift_west_deg_per_yr: float = SAA_DRIFT_WEST_DEG_PER_YR
    saa_drift_north_deg_per_yr: float = SAA_DRIFT_NORTH_DEG_PER_YR
    map_path: str | None = None

    def __post_init__(self):
        if self.solar_cycle not in SOLAR_CYCLE:
            raise ValueError(f"RadiationParams.solar_cycle must be one of {SOLAR_CYCLE}, got {self.solar_cycle!r}")
        for f in fields(self):
            if f.name in ("solar_cycle", "map_path"):
                continue
            value = getattr(self, f.name)
            drift = f.name.startswith("saa_drift_")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                abs(value) > MAX_DRIFT_DEG_PER_YR if drift else value < 0
            ):
                within = f"within ±{MAX_DRIFT_DEG_PER_YR:g}" if drift else ">= 0"
                raise ValueError(f"RadiationParams.{f.name} must be a finite number {within}, got {value!r}")
        if self.map_path is not None and not isinstance(self.map_path, str):
            raise ValueError(f"RadiationParams.map_path must be a string path or None, got {self.map_path!r}")

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "RadiationParams":
        """The parameters a profile's metadata (its ``radiation`` table) records. A profile made before
        the truth drifted records no drift and is made again without one, as it was."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in meta.items() if k in known}
        given.setdefault("saa_drift_west_deg_per_yr", 0.0)
        given.setdefault("saa_drift_north_deg_per_yr", 0.0)
        return cls(**given)

    def drift_deg(self, time_s, particle: str = "proton") -> tuple[np.ndarray, np.ndarray]:
        """``(north_deg, west_deg)``: how far the truth's anomaly has moved at ``time_s`` (Unix seconds)
        from where the ``particle`` layer of this solar cycle places it (:data:`FIELD_EPOCH_YEAR`).
        Broadcasts."""
        epoch = FIELD_EPOCH_YEAR[f"{particle}_{self.solar_cycle}"]
        years = _UNIX_EPOCH_YEAR + np.asarray(time_s, dtype=float) / SECONDS_PER_YEAR - epoch
        return self.saa_drift_north_deg_per_yr * years, self.saa_drift_west_deg_per_yr * years


@dataclass(frozen=True)
class RadiationTrack:
    """Radiation along a track: arrays of the same shape as the inputs."""

    proton_flux_cm2_s: np.ndarray
    electron_flux_cm2_s: np.ndarray
    upset_rate_per_s: np.ndarray
    dose_rad: np.ndarray
    clamped_alt_samples: int


_MAP_CACHE: dict[str, TrappedFluxMap] = {}


def load_flux_map(path: str | Path | None = None) -> TrappedFluxMap:
    """The map at ``path`` (default: the shipped one), loaded once per process and path."""
    key = str(Path(path).resolve()) if path is not None else str(DEFAULT_MAP_PATH)
    if key not in _MAP_CACHE:
        _MAP_CACHE[key] = TrappedFluxMap.load(key)
    return _MAP_CACHE[key]


def radiation_along_track(
    time_s, lat_deg, lon_deg, alt_km, params: RadiationParams, flux_map: TrappedFluxMap | None = None
) -> RadiationTrack:
    """Flux, upset rate and cumulative dose (trapezoidal in time, 0 at the first sample) along a track,
    ``time_s`` in Unix seconds: each sample reads the map where the drift (:meth:`RadiationParams.drift_deg`)
    has moved what is now above it from."""
    flux_map = load_flux_map(params.map_path) if flux_map is None else flux_map
    time_s = np.asarray(time_s, dtype=float)
    lat_deg, lon_deg = np.asarray(lat_deg, dtype=float), np.asarray(lon_deg, dtype=float)
    flux = {}
    for particle in ("proton", "electron"):
        north, west = params.drift_deg(time_s, particle)
        layer = f"{particle}_{params.solar_cycle}"
        flux[particle] = flux_map.flux_cm2_s(layer, lat_deg - north, lon_deg + west, alt_km)
    proton, electron = flux["proton"], flux["electron"]
    upset = proton * params.cross_section_cm2_per_bit * params.bits
    dose_rate = params.dose_rad_per_proton_cm2 * proton + params.dose_rad_per_electron_cm2 * electron
    dose = np.zeros(time_s.shape)
    if time_s.size > 1:
        dose[1:] = np.cumsum(0.5 * (dose_rate[1:] + dose_rate[:-1]) * np.diff(time_s))
    clamped = int(np.count_nonzero(~flux_map.covers_alt_km(alt_km)))
    return RadiationTrack(proton, electron, upset, dose, clamped)
