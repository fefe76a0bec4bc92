"""Cloud screening of image tiles before downlink: procedural tiles and the screening helper.

ESA's Phi-sat-1 (launched 2020) ran a small CNN on board over HyperScout-2 images and
dropped the cloudy ones, so the downlink carried only images worth having; about two
thirds of Earth is under cloud at any time (Rossow & Schiffer, ISCCP, 1999). This module
does the same job on small multispectral tiles.

No data set is downloaded: :func:`generate_tiles` draws the tiles from a fixed-seed
numpy generator. A tile is ``BANDS`` x ``TILE_PX`` x ``TILE_PX`` top-of-atmosphere
reflectance, quantised the way Sentinel-2 L1C ships it (``DN = reflectance * 10000`` in
a uint16), so a test set stored as DNs is bit-exact. What goes into a tile:

- a surface: water, vegetation, soil, desert or snow, as a spectrum in the Sentinel-2
  B2/B3/B4/B8 bands (rounded typical values with the shapes of the USGS splib07
  spectra plus some atmosphere, not readings of any one sample),
  mixed with a second surface through a smoothed-noise field (coastlines, fields,
  patchy snow) and textured with a second field;
- thick cloud with soft edges: a smoothed-noise field thresholded to a drawn coverage,
  passed through a logistic so opacity ramps up over a few pixels; spectrally flat and
  bright, and it casts a shadow a few pixels away;
- thin cirrus on some tiles: streaky (anisotropic) and partly transparent, its peak
  opacity drawn on both sides of the 0.5 that counts a pixel as cloud;
- the Sun's elevation (one factor on the whole tile) and sensor noise.

Hard cases on purpose: snow and bright desert are as bright as thin cloud in these
four bands (a real instrument would use SWIR at 1.6 um or thermal bands to tell snow
from cloud; we have neither), a dim low-Sun cloud looks like bright sand, and cirrus
near opacity 0.5 is cloud for the label on one pixel and not on the next.

Label: a pixel is cloud when its cloud opacity is >= ``CLOUD_PIXEL_OPACITY``; a tile is
``CLOUDY`` when more than ``CLOUDY_FRACTION`` of its pixels are cloud, ``CLEAR``
otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BANDS = ("blue", "green", "red", "nir")
"""Band order of a tile: Sentinel-2 B2 (490 nm), B3 (560 nm), B4 (665 nm), B8 (842 nm)."""

TILE_PX = 16
"""Tile side in pixels. 16 keeps the held-out set that ships with the model under 2 MB."""

DN_PER_REFLECTANCE = 10000.0
"""Sentinel-2 L1C quantisation: reflectance 1.0 is DN 10000."""

CLASSES = ("CLEAR", "CLOUDY")
"""Class index -> name; index 1 is the one dropped from the downlink."""

CLOUDY_FRACTION = 0.3
"""A tile with more than this fraction of cloud pixels is CLOUDY."""

CLOUD_PIXEL_OPACITY = 0.5
"""A pixel whose cloud opacity (thick cloud and cirrus together) is at least this is cloud."""

SURFACES = ("water", "vegetation", "soil", "desert", "snow")

# Top-of-atmosphere reflectance per band (blue, green, red, nir) at high Sun. Water and
# vegetation include some path radiance in blue; snow's NIR dip at 842 nm is small,
# which is what makes it a cloud look-alike without SWIR.
_SPECTRA = np.array(
    [
        [0.075, 0.060, 0.040, 0.020],  # water: dark, lowest in NIR
        [0.050, 0.075, 0.045, 0.340],  # vegetation: red edge, NIR/red ~ 7
        [0.090, 0.120, 0.150, 0.230],  # soil / cropland
        [0.230, 0.310, 0.400, 0.460],  # desert sand: bright and reddish
        [0.800, 0.790, 0.760, 0.660],  # snow: nearly as bright and flat as cloud
    ],
    dtype=np.float64,
)
# Probability of each surface as the primary one, and which surface it is mixed with.
_SURFACE_P = np.array([0.22, 0.24, 0.20, 0.18, 0.16])
_SECONDARY = {0: (1, 2, 3), 1: (2, 0), 2: (1, 3), 3: (2, 4), 4: (2, 0, 1)}


@dataclass(frozen=True)
class TileSet:
    """What :func:`generate_tiles` draws, with the truth behind each label."""

    tiles: np.ndarray  # float32 [n, 4, H, W], reflectance (DN / 10000)
    cloud_fraction: np.ndarray  # float32 [n], fraction of pixels that are cloud
    labels: np.ndarray  # uint8 [n], index into CLASSES
    cloud_mask: np.ndarray  # bool [n, H, W], the per-pixel truth
    surface: np.ndarray  # uint8 [n], index into SURFACES (primary surface)
    cirrus: np.ndarray  # bool [n], tile has a cirrus layer


def generate_tiles(n: int, seed: int, size_px: int = TILE_PX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tiles, cloud_fraction, labels)`` for ``n`` tiles drawn from ``seed``.

    ``tiles`` is float32 ``[n, 4, size_px, size_px]`` reflectance, already on the DN grid;
    ``labels`` is uint8, ``1`` (CLOUDY) when ``cloud_fraction > CLOUDY_FRACTION``.
    The same ``(n, seed)`` gives the same arrays on every run.

    >>> tiles, fraction, labels = generate_tiles(3, seed=1)
    >>> tiles.shape, tiles.dtype, labels.tolist() == (fraction > 0.3).astype(int).tolist()
    ((3, 4, 16, 16), dtype('float32'), True)
    """
    ts = generate_tileset(n, seed, size_px)
    return ts.tiles, ts.cloud_fraction, ts.labels


def generate_tileset(n: int, seed: int, size_px: int = TILE_PX) -> TileSet:
    """:func:`generate_tiles` with the per-pixel truth, surface types and cirrus flags."""
    if n < 0 or size_px < 4:
        raise ValueError(f"need n >= 0 and size_px >= 4, got n={n}, size_px={size_px}")
    rng = np.random.default_rng(seed)
    hw = (size_px, size_px)

    # -- surface ------------------------------------------------------------------
    primary = rng.choice(len(SURFACES), size=n, p=_SURFACE_P)
    secondary = np.array([rng.choice(_SECONDARY[int(s)]) for s in primary], dtype=np.int64)
    # share of the tile the second surface takes: none on ~40 % of tiles
    mix_share = np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0.1, 0.6, n))
    mix_field = _smooth_noise(rng, n, hw, rng.uniform(1.5, 4.0, n))
    mix = _logistic((mix_field - _quantile_per_tile(mix_field, 1.0 - mix_share)) / 0.3)
    mix[mix_share == 0.0] = 0.0
    # each tile's spectra vary: overall brightness +-20 %, each band another +-6 %
    jitter = rng.uniform(0.8, 1.2, (n, 1)) * rng.uniform(0.94, 1.06, (n, 4))
    spec_a = _SPECTRA[primary] * jitter
    spec_b = _SPECTRA[secondary] * jitter
    surface = (
        spec_a[:, :, None, None] * (1.0 - mix[:, None]) + spec_b[:, :, None, None] * mix[:, None]
    )
    texture = _smooth_noise(rng, n, hw, rng.uniform(0.6, 2.5, n))
    surface *= np.exp(rng.uniform(0.03, 0.18, n)[:, None, None, None] * texture[:, None])

    # -- thick cloud ----------------------------------------------------------------
    # coverage: no thick cloud on 35 % of tiles, 0.15-0.45 (around the decision line,
    # where screening is hardest) on 15 %, anything from 0.02 to 1 on the other 50 %
    u = rng.random(n)
    coverage = np.where(u < 0.35, 0.0, np.where(u < 0.5, rng.uniform(0.15, 0.45, n), rng.uniform(0.02, 1.0, n)))
    cloud_field = _smooth_noise(rng, n, hw, rng.uniform(1.5, 4.0, n))
    edge_softness = rng.uniform(0.15, 0.7, n)[:, None, None]  # field std units per logistic unit
    thick = _logistic((cloud_field - _quantile_per_tile(cloud_field, 1.0 - coverage)) / edge_softness)
    thick *= rng.uniform(0.75, 1.0, n)[:, None, None]  # peak opacity of the thickest part
    thick[coverage == 0.0] = 0.0

    # -- cirrus -----------------------------------------------------------------------
    has_cirrus = rng.random(n) < 0.3
    cirrus_peak = rng.uniform(0.15, 0.75, n)
    streaks = _streak_noise(rng, n, hw)
    cirrus = cirrus_peak[:, None, None] * _logistic(1.5 * streaks + rng.uniform(-1.0, 1.5, n)[:, None, None])
    cirrus[~has_cirrus] = 0.0

    opacity = 1.0 - (1.0 - thick) * (1.0 - cirrus)
    cloud_mask = opacity >= CLOUD_PIXEL_OPACITY
    cloud_fraction = cloud_mask.mean(axis=(1, 2)).astype(np.float32)
    labels = (cloud_fraction > CLOUDY_FRACTION).astype(np.uint8)

    # -- shadow, radiative mix, Sun, sensor ---------------------------------------------
    shift = rng.integers(-4, 5, (n, 2))
    shadow = np.stack([np.roll(t, tuple(s), axis=(0, 1)) for t, s in zip(thick, shift)]) if n else thick
    surface *= (1.0 - 0.6 * shadow)[:, None]
    cloud_top = rng.uniform(0.45, 0.9, n)[:, None] * np.array([1.03, 1.0, 0.98, 0.95])  # nearly white
    cirrus_top = rng.uniform(0.45, 0.75, n)[:, None] * np.array([1.05, 1.0, 0.97, 0.93])
    toa = surface * (1.0 - opacity[:, None])
    # thick and cirrus light in proportion to their share of the opacity
    share_thick = np.divide(thick, thick + cirrus, out=np.zeros_like(thick), where=(thick + cirrus) > 0)
    toa += opacity[:, None] * (
        share_thick[:, None] * cloud_top[:, :, None, None] + (1.0 - share_thick[:, None]) * cirrus_top[:, :, None, None]
    )
    sun = rng.uniform(0.55, 1.0, n)[:, None, None, None]  # sin(solar elevation), roughly
    toa *= sun
    toa += rng.normal(0.0, 0.004, toa.shape) + rng.normal(0.0, 1.0, toa.shape) * 0.01 * np.sqrt(np.clip(toa, 0, None))

    dn = np.clip(np.round(toa * DN_PER_REFLECTANCE), 0, 65535)
    tiles = (dn.astype(np.float32) / np.float32(DN_PER_REFLECTANCE)).astype(np.float32)
    return TileSet(
        tiles=tiles,
        cloud_fraction=cloud_fraction,
        labels=labels,
        cloud_mask=cloud_mask,
        surface=primary.astype(np.uint8),
        cirrus=has_cirrus,
    )


def tiles_to_dn(tiles: np.ndarray) -> np.ndarray:
    """Reflectance on the DN grid -> uint16 DN, exactly (what the held-out set stores)."""
    dn = np.round(np.asarray(tiles, dtype=np.float64) * DN_PER_REFLECTANCE)
    if not np.isfinite(dn).all():  # NaN passes both bounds below and casts to DN 0 (found in audit)
        raise ValueError(f"reflectance not finite: {int(np.size(dn) - np.isfinite(dn).sum())} values NaN or infinite, "
                         f"the first at index {tuple(int(i) for i in np.argwhere(~np.isfinite(dn))[0])}")
    if dn.min(initial=0) < 0 or dn.max(initial=0) > 65535:
        raise ValueError("reflectance outside what a uint16 DN can hold (0 .. 6.5535)")
    return dn.astype(np.uint16)


def dn_to_tiles(dn: np.ndarray) -> np.ndarray:
    """uint16 DN -> float32 reflectance, the inverse of :func:`tiles_to_dn`."""
    return (np.asarray(dn).astype(np.float32) / np.float32(DN_PER_REFLECTANCE)).astype(np.float32)


# -- screening ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreenResult:
    """One tile's verdict. ``downlink`` is False only for a tile confidently CLOUDY."""

    index: int
    label: str  # "CLEAR" or "CLOUDY"
    confidence: float  # probability of ``label``, 0.5 .. 1
    p_cloudy: float
    cloud_fraction_est: float | None  # the model's own estimate, if it has that output
    downlink: bool


def screen(session: Any, tiles: np.ndarray, drop_threshold: float = 0.5) -> list[ScreenResult]:
    """Run the cloud-screening model over ``tiles`` and decide which to downlink.

    ``session`` is an onnxruntime ``InferenceSession`` (or anything with the same
    ``get_inputs``/``get_outputs``/``run``) over ``cloud_screen.onnx``; ``tiles`` is
    float32 ``[n, 4, H, W]`` reflectance, or ``[4, H, W]`` for one tile.

    A tile is dropped (kept on board, not downlinked) only when P(CLOUDY) >=
    ``drop_threshold``. Raise it above 0.5 to be conservative: a wrongly dropped clear
    image is lost for good, a wrongly downlinked cloudy one costs only link time. So a
    tile whose probability is not a number (a NaN pixel in it) goes down.

    Integer tiles are refused: they are DNs (:func:`tiles_to_dn`), which the model would
    read as reflectances 10000 times too bright; :func:`dn_to_tiles` converts them.
    """
    if not 0.0 < drop_threshold <= 1.0:
        raise ValueError(f"drop_threshold must be in (0, 1], got {drop_threshold}")
    raw = np.asarray(tiles)
    if raw.dtype.kind not in "f":  # found in audit: uint16 DNs were screened as reflectance, verdicts wrong
        raise ValueError(f"tiles must be float reflectance, got dtype {raw.dtype} (DNs? convert with dn_to_tiles)")
    x = raw.astype(np.float32, copy=False)
    if x.ndim == 3:
        x = x[None]
    expected = session.get_inputs()[0]
    # every size the model fixes, not the bands alone (found in audit: 8x8 tiles got onnxruntime's error of lines)
    fixed = [(axis, d) for axis, d in enumerate(expected.shape) if axis and isinstance(d, int) and d > 0] \
        if len(expected.shape) == 4 else []
    if x.ndim != 4 or any(x.shape[axis] != d for axis, d in fixed):
        raise ValueError(
            f"tiles must be [n, {len(BANDS)}, H, W] float32 reflectance (bands {', '.join(BANDS)}), got shape {x.shape}"
            + (f"; the model takes {list(expected.shape)}" if fixed else "")
        )
    if len(x) == 0:
        return []
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {expected.name: x})))
    probs = np.asarray(outputs["probabilities"], dtype=np.float64)
    fraction = outputs.get("cloud_fraction")
    results = []
    for i, p in enumerate(probs):
        k = int(np.argmax(p))
        results.append(
            ScreenResult(
                index=i,
                label=CLASSES[k],
                confidence=float(p[k]),
                p_cloudy=float(p[1]),
                cloud_fraction_est=None if fraction is None else float(np.ravel(fraction[i])[0]),
                downlink=not bool(p[1] >= drop_threshold),  # NaN: not confidently CLOUDY, so it goes down
            )
        )
    return results


def evaluate(probabilities: np.ndarray, truth: TileSet, cloud_fraction_est: np.ndarray | None = None) -> dict[str, Any]:
    """Held-out metrics of a model's ``probabilities`` [n,2] against ``truth``; plain JSON types.

    ``confusion[i][j]`` counts tiles of true class i predicted as class j. Accuracy is also
    broken down by primary surface and for tiles with cirrus, where the hard cases are.
    """
    probs = np.asarray(probabilities)
    if probs.shape != (len(truth.labels), len(CLASSES)):
        raise ValueError(f"probabilities shape {probs.shape}, expected ({len(truth.labels)}, {len(CLASSES)})")
    pred = probs.argmax(axis=1)
    y = truth.labels.astype(np.int64)
    right = pred == y
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    metrics: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": round(float(right.mean()), 4) if len(y) else None,
        "confusion": confusion.tolist(),
        "cloudy_share": round(float(y.mean()), 4) if len(y) else None,
        "accuracy_by_surface": {
            name: round(float(right[truth.surface == k].mean()), 4)
            for k, name in enumerate(SURFACES)
            if np.any(truth.surface == k)
        },
        "accuracy_with_cirrus": round(float(right[truth.cirrus].mean()), 4) if truth.cirrus.any() else None,
    }
    if cloud_fraction_est is not None:
        err = np.abs(np.ravel(cloud_fraction_est) - truth.cloud_fraction)
        metrics["cloud_fraction_mae"] = round(float(err.mean()), 4)
    return metrics


# -- fields ---------------------------------------------------------------------------


def _logistic(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1/(1+exp(-z)) without overflow warnings


def _smooth_noise(rng: np.random.Generator, n: int, hw: tuple[int, int], sigma_px: np.ndarray) -> np.ndarray:
    """White noise low-passed with a Gaussian of ``sigma_px`` (one per tile), zero mean, unit std.

    Filtered in the Fourier domain, so the field wraps around at the edges (a tile is a
    window on a larger texture, which is all the texture has to look like).
    """
    white = rng.normal(size=(n, *hw))
    ky = np.fft.fftfreq(hw[0])[:, None]
    kx = np.fft.rfftfreq(hw[1])[None, :]
    k2 = (ky**2 + kx**2)[None]
    gain = np.exp(-2.0 * (np.pi**2) * np.asarray(sigma_px)[:, None, None] ** 2 * k2)
    field = np.fft.irfft2(np.fft.rfft2(white) * gain, s=hw)
    return _standardise(field)


def _streak_noise(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> np.ndarray:
    """Anisotropic smoothed noise: long along a random direction, like cirrus streaks."""
    white = rng.normal(size=(n, *hw))
    angle = rng.uniform(0.0, np.pi, n)[:, None, None]
    ky = np.fft.fftfreq(hw[0])[None, :, None]
    kx = np.fft.rfftfreq(hw[1])[None, None, :]
    k_along = kx * np.cos(angle) + ky * np.sin(angle)
    k_across = -kx * np.sin(angle) + ky * np.cos(angle)
    s_along, s_across = 5.0, 1.0
    gain = np.exp(-2.0 * np.pi**2 * (s_along**2 * k_along**2 + s_across**2 * k_across**2))
    return _standardise(np.fft.irfft2(np.fft.rfft2(white) * gain, s=hw))


def _standardise(field: np.ndarray) -> np.ndarray:
    mean = field.mean(axis=(1, 2), keepdims=True)
    std = field.std(axis=(1, 2), keepdims=True)
    return (field - mean) / np.where(std > 0, std, 1.0)


def _quantile_per_tile(field: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-tile threshold with a fraction ``q`` of the pixels below it, shape [n, 1, 1]."""
    flat = np.sort(field.reshape(len(field), -1), axis=1)
    idx = np.clip(np.round(np.asarray(q) * (flat.shape[1] - 1)).astype(int), 0, flat.shape[1] - 1)
    return flat[np.arange(len(field)), idx][:, None, None]
