"""The files that ship with the cloud-screening model, and reading and writing the held-out set.

``flight/compute/models/``:

- ``cloud_screen.onnx``: the model (input ``tiles`` float32 [N,4,16,16] reflectance);
- ``cloud_screen.json``: its model card (classes, held-out accuracy, seed, SHA-256 of
  the other two files, how to rebuild); plain JSON so a person can read it;
- ``cloud_tiles_test.npz``: the held-out tiles as uint16 DNs with their truth.

All three are written by ``scripts/build_cloud_model.py``; edit that, not them.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from flight.compute.usecase.cloud import TileSet, dn_to_tiles, tiles_to_dn
from flight.storage import write_atomic

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODEL_NAME = "cloud_screen"
MODEL_FILE = "cloud_screen.onnx"
CARD_FILE = "cloud_screen.json"
HELD_OUT_FILE = "cloud_tiles_test.npz"

# A fixed timestamp for every member of the .npz: numpy's own savez stamps the current
# time, which would give the same arrays a different SHA-256 on every build.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_card(models_dir: Path | str = MODELS_DIR) -> dict[str, Any]:
    return json.loads((Path(models_dir) / CARD_FILE).read_text())


def held_out_bytes(ts: TileSet) -> bytes:
    """The held-out set as a reproducible ``.npz`` (same arrays -> same bytes with the same zlib)."""
    n, h, w = ts.cloud_mask.shape
    arrays = {
        "tiles_dn": tiles_to_dn(ts.tiles),
        "cloud_fraction": ts.cloud_fraction.astype(np.float32),
        "labels": ts.labels.astype(np.uint8),
        "cloud_mask_bits": np.packbits(ts.cloud_mask.reshape(n, h * w), axis=1),
        "surface": ts.surface.astype(np.uint8),
        "cirrus": ts.cirrus.astype(bool),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)
    return buf.getvalue()


def write_held_out(path: Path | str, ts: TileSet) -> None:
    write_atomic(path, held_out_bytes(ts))


def load_held_out(source: Path | str | BinaryIO | None = None) -> TileSet:
    """Read what :func:`write_held_out` wrote (a path or an open file; default the shipped set).

    Tiles come back as float32 reflectance, bit-exact with what the generator drew.
    """
    if source is None:
        source = MODELS_DIR / HELD_OUT_FILE
    with np.load(source, allow_pickle=False) as z:
        dn = z["tiles_dn"]
        n, _, h, w = dn.shape
        mask = np.unpackbits(z["cloud_mask_bits"], axis=1, count=h * w).reshape(n, h, w).astype(bool)
        return TileSet(
            tiles=dn_to_tiles(dn),
            cloud_fraction=z["cloud_fraction"],
            labels=z["labels"],
            cloud_mask=mask,
            surface=z["surface"],
            cirrus=z["cirrus"],
        )
