"""A product's receipt, read on the ground: what the board vouches for in a product it downlinked (pure).

Every inference product is two files (flight/compute/worker.py, ``_write_product``): the ``.npz``
(per tile: class, confidence, check status 1 passed, 0 unchecked, -1 failed; the receipt as JSON; the
model's name, version, SHA-256 and who uplinked it) and a ``.json`` summary carrying the same header
and receipt. :func:`read_product` reads either and checks it whole: the fields the receipt must have
and their types, and, for the ``.npz``, that its per-tile statuses add up to the receipt's counts. A
product is vouched for (:attr:`ProductReceipt.vouched`) when every tile was checked and passed; one
with a failed, unchecked or partly checked tile is not, nor is one whose receipt disagrees with its
tiles. What the receipt says of the environment (flux class, scrub age) is the board's own
prediction from its TLE, not a measurement (docs/architecture.md, "Radiation").
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flight.compute.checks import FAILED, PASSED, UNCHECKED
from flight.link.definitions import FluxClass, Protection

MAX_PRODUCT_BYTES = 256 * 1024 * 1024
"""A file past this is refused before it is read: a product of the largest data set the board takes
is a few MB; a bigger file is not one."""

STATUSES = ("passed", "partial", "failed", "unchecked")

# The receipt's fields (flight/compute/checks.py, ProductChecks.receipt) and what each must be.
_COUNTS = ("tiles_checked", "tiles_passed", "tiles_failed", "tiles_unchecked", "batches", "double_runs",
           "double_run_mismatches", "abft_failures", "range_failures", "reruns", "results_changed",
           "weights_repaired")
_HEADER = ("model", "model_version", "model_sha256", "model_uplinked_by")


class ProductError(ValueError):
    """A file that is not a readable product, or whose receipt is missing or malformed: the message
    names the file and the field."""


@dataclass(frozen=True)
class ProductReceipt:
    """One product's header and receipt, as checked by :func:`read_product`."""

    path: str
    model: str
    model_version: str
    model_sha256: str
    uplinked_by: str
    receipt: dict[str, Any]
    tiles: int
    disagreements: tuple[str, ...] = field(default=())  # the .npz's tiles against the receipt's counts

    @property
    def check_status(self) -> str:
        return str(self.receipt["check_status"])

    @property
    def vouched(self) -> bool:
        """Every tile checked and passed, and the tiles agree with the receipt."""
        return self.check_status == "passed" and not self.disagreements

    def verdict(self) -> str:
        if self.disagreements:
            return "NOT VOUCHED: the receipt disagrees with the tiles (" + "; ".join(self.disagreements) + ")"
        r = self.receipt
        return {
            "passed": "VOUCHED: every tile checked and passed",
            "partial": f"NOT VOUCHED: {r['tiles_unchecked']} of {self.tiles} tiles unchecked",
            "failed": f"NOT VOUCHED: {r['tiles_failed']} of {self.tiles} tiles failed their checks (marked in the "
                      "product)",
            "unchecked": "NOT VOUCHED: no tile was checked",
        }[self.check_status]

    def lines(self) -> list[str]:
        """The receipt for an operator, one fact a line."""
        r = self.receipt
        scrub = "never scrubbed" if r["scrub_age_s"] is None else f"{r['scrub_age_s']:.0f} s"
        period = "" if r["scrub_period_s"] is None else f" (period {r['scrub_period_s']:.0f} s)"
        where = " (batches in the SAA)" if r["in_saa"] and r["flux_class"] != FluxClass.SAA.value else ""
        lat = "" if r["lat_deg"] is None else f", latitude {r['lat_deg']:.1f} deg"
        return [
            f"{self.path}",
            f"  model        {self.model} version {self.model_version}, sha256 {self.model_sha256[:16]}..., "
            f"uplinked by {self.uplinked_by}",
            f"  protection   {r['protection']} on {r['provider']}"
            + (f" ({r['abft_precision']} tolerance)" if r.get("abft_precision") else ""),
            f"  checks       {self.check_status}: {r['tiles_passed']} passed, {r['tiles_failed']} failed, "
            f"{r['tiles_unchecked']} unchecked of {self.tiles} tiles in {r['batches']} batches",
            f"  reruns       {r['reruns']} (results changed {r['results_changed']}); weights repaired "
            f"{r['weights_repaired']}; double runs {r['double_runs']} ({r['double_run_mismatches']} disagreed)",
            f"  scrub age    {scrub}{period}",
            f"  environment  {r['flux_class']}{where}{lat}: {r['flux_source']}",
            f"  {self.verdict()}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "model": self.model, "model_version": self.model_version,
                "model_sha256": self.model_sha256, "model_uplinked_by": self.uplinked_by, "tiles": self.tiles,
                "vouched": self.vouched, "verdict": self.verdict(), "disagreements": list(self.disagreements),
                "receipt": self.receipt}


def check_receipt(receipt: Any, where: str) -> dict[str, Any]:
    """``receipt`` if it has every field the board writes, each of its type and range; else
    :class:`ProductError` naming the field."""
    if not isinstance(receipt, dict):
        raise ProductError(f"{where}: receipt is {type(receipt).__name__}, not an object")

    def need(key: str, ok: Any, what: str) -> None:
        if key not in receipt:
            raise ProductError(f"{where}: receipt has no {key!r}")
        if not ok(receipt[key]):
            raise ProductError(f"{where}: receipt {key!r} is {receipt[key]!r}, not {what}")

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def number_or_none(v: Any) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v))

    need("model_sha256", lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
         "a SHA-256 in hex")
    need("protection", lambda v: v in {p.value for p in Protection}, "a protection level")
    need("provider", lambda v: isinstance(v, str) and 0 < len(v) <= 100, "a provider's name")
    need("check_status", lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}")
    for key in _COUNTS:
        need(key, count, "a count")
    need("scrub_age_s", lambda v: number_or_none(v) and (v is None or v >= 0), "seconds or null")
    need("scrub_period_s", lambda v: number_or_none(v) and (v is None or v > 0), "seconds or null")
    need("flux_class", lambda v: v in {f.value for f in FluxClass}, "a flux class")
    need("in_saa", lambda v: isinstance(v, bool), "true or false")
    need("lat_deg", lambda v: number_or_none(v) and (v is None or -90 <= v <= 90), "degrees or null")
    need("flux_source", lambda v: isinstance(v, str) and len(v) <= 200, "text")
    if receipt["tiles_passed"] + receipt["tiles_failed"] != receipt["tiles_checked"]:
        raise ProductError(f"{where}: receipt 'tiles_passed' + 'tiles_failed' is not 'tiles_checked'")
    return receipt


def _header(values: dict[str, Any], where: str) -> tuple[str, str, str, str]:
    out = []
    for key in _HEADER:
        v = values.get(key)
        if not isinstance(v, str) or len(v) > 200:
            raise ProductError(f"{where}: header {key!r} is {'missing' if v is None else repr(v)[:60]}")
        out.append(v)
    return out[0], out[1], out[2], out[3]


def _status_disagreements(status: np.ndarray, receipt: dict[str, Any]) -> tuple[str, ...]:
    said = {"tiles_passed": PASSED, "tiles_failed": FAILED, "tiles_unchecked": UNCHECKED}
    out = [f"{key} {receipt[key]} against {int((status == value).sum())} tiles so marked"
           for key, value in said.items() if int((status == value).sum()) != receipt[key]]
    other = int((~np.isin(status, list(said.values()))).sum())
    if other:
        out.append(f"{other} tiles with a status that is none of passed, failed, unchecked")
    return tuple(out)


def read_product(path: str | Path) -> ProductReceipt:
    """The product at ``path`` (its ``.npz``, or its ``.json`` summary) with its receipt checked;
    :class:`ProductError` for a file that is not one."""
    p = Path(path)
    where = str(p)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ProductError(f"{where}: not a file")
        if size > MAX_PRODUCT_BYTES:
            raise ProductError(f"{where}: {size} bytes, more than a product's {MAX_PRODUCT_BYTES}")
        data = p.read_bytes()
    except OSError as exc:
        raise ProductError(f"{where}: {exc.strerror or exc}") from None
    if data[:4] == b"PK\x03\x04":
        return _read_npz(data, where)
    try:
        summary = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProductError(f"{where}: neither a product's .npz nor its .json summary") from None
    if not isinstance(summary, dict):
        raise ProductError(f"{where}: the summary is {type(summary).__name__}, not an object")
    if "steps" in summary and "tiles" not in summary:
        raise ProductError(f"{where}: a training product's summary (its model trained on board, guarded by the "
                           "step checks it counts): this reads inference products")
    receipt = check_receipt(summary.get("receipt"), where)
    tiles = summary.get("tiles")
    if not isinstance(tiles, int) or isinstance(tiles, bool) or tiles < 0:
        raise ProductError(f"{where}: summary 'tiles' is {tiles!r}, not a count")
    disagreements = () if receipt["tiles_checked"] + receipt["tiles_unchecked"] == tiles else (
        f"tiles {tiles} against {receipt['tiles_checked']} checked and {receipt['tiles_unchecked']} unchecked",)
    return ProductReceipt(where, *_header(summary, where), receipt, tiles, disagreements)


def _read_npz(data: bytes, where: str) -> ProductReceipt:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("classes", "confidence", "check", "receipt", *_HEADER) if k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ProductError(f"{where}: not a readable .npz ({type(exc).__name__}: {str(exc)[:120]})") from None
    for key in ("classes", "confidence", "check", "receipt"):
        if key not in arrays:
            raise ProductError(f"{where}: the product has no {key!r}")
    try:
        receipt = json.loads(str(arrays["receipt"]))
    except ValueError:
        raise ProductError(f"{where}: 'receipt' is not JSON") from None
    receipt = check_receipt(receipt, where)
    header = {k: str(arrays[k]) if k in arrays and arrays[k].ndim == 0 else None for k in _HEADER}
    classes, confidence, status = arrays["classes"], arrays["confidence"], arrays["check"]
    if classes.ndim != 1 or confidence.shape != classes.shape or status.shape != classes.shape:
        raise ProductError(f"{where}: 'classes' {classes.shape}, 'confidence' {confidence.shape} and 'check' "
                           f"{status.shape} are not one value a tile")
    if status.dtype.kind not in "iu":
        raise ProductError(f"{where}: 'check' is {status.dtype}, not integers")
    return ProductReceipt(where, *_header(header, where), receipt, int(len(classes)),
                          _status_disagreements(status, receipt))
