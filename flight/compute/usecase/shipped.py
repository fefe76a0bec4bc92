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
from flight.storage import CorruptFile, write_atomic

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


def load_card(models_dir: Path | str | None = None) -> dict[str, Any]:
    """The model card (default the shipped one); :class:`~flight.storage.CorruptFile` naming it where it
    cannot be read or is not a JSON object (found in audit: a raw JSONDecodeError)."""
    path = Path(MODELS_DIR if models_dir is None else models_dir) / CARD_FILE
    try:
        card = json.loads(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - OSError, UnicodeDecodeError, JSONDecodeError, RecursionError
        raise CorruptFile(f"{path.name}: unreadable ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(card, dict):
        raise CorruptFile(f"{path.name}: not a JSON object")
    return card


def read_checked(name: str, models_dir: Path | str | None = None) -> bytes:
    """The bytes of the shipped file ``name`` (:data:`MODEL_FILE`, :data:`HELD_OUT_FILE`), checked against the
    SHA-256 its card gives; :class:`~flight.storage.CorruptFile` naming the file where they differ or cannot be
    read. The files sit on the board's flash as the software does, and what a bit flipped there would change
    (a weight, a reference tile) no other check sees: the store hashes what it is given (found in audit)."""
    models_dir = Path(MODELS_DIR if models_dir is None else models_dir)
    try:
        want = load_card(models_dir)["files"][name]["sha256"]
        data = (models_dir / name).read_bytes()
    except (KeyError, TypeError) as exc:
        raise CorruptFile(f"{CARD_FILE}: no SHA-256 for {name} ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise CorruptFile(f"{name}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise CorruptFile(f"{name}: SHA-256 mismatch (the card says {str(want)[:12]}…, computed {got[:12]}…)")
    return data


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
    """Read what :func:`write_held_out` wrote (a path or an open file; default the shipped set, checked
    against its card's SHA-256: :func:`read_checked`).

    Tiles come back as float32 reflectance, bit-exact with what the generator drew.
    :class:`~flight.storage.CorruptFile` naming the file and the fault where it cannot be read as such
    (found in audit: BadZipFile, KeyError or zlib.error as the damage fell, which the worker did not catch).
    """
    name = Path(str(source if isinstance(source, (str, Path)) else getattr(source, "name", None) or HELD_OUT_FILE)).name
    try:
        if source is None:
            source = io.BytesIO(read_checked(HELD_OUT_FILE))
        with np.load(source, allow_pickle=False) as z:
            dn = z["tiles_dn"]
            n, _, h, w = dn.shape
            mask = np.unpackbits(z["cloud_mask_bits"], axis=1, count=h * w).reshape(n, h, w).astype(bool)
            ts = TileSet(
                tiles=dn_to_tiles(dn),
                cloud_fraction=z["cloud_fraction"],
                labels=z["labels"],
                cloud_mask=mask,
                surface=z["surface"],
                cirrus=z["cirrus"],
            )
    except CorruptFile:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, zlib, numpy and the unpacking raise many kinds
        raise CorruptFile(f"{name}: not a held-out set ({type(exc).__name__}: {str(exc)[:100]})") from None
    if any(np.shape(a)[:1] != (n,) for a in (ts.cloud_fraction, ts.labels, ts.surface, ts.cirrus)):
        raise CorruptFile(f"{name}: its arrays are not one per tile ({n} tiles)")
    return ts
