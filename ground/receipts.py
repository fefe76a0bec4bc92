"""A product's receipt, read on the ground: what the board vouches for in a product it downlinked (pure).

Every inference product is two files (flight/compute/worker.py, ``_write_product``): the ``.npz``
(per tile: class, confidence, check status 1 passed, 0 unchecked, -1 failed; the receipt as JSON;
the model's name, version, SHA-256 and who uplinked it) and a ``.json`` summary carrying the same
header and receipt. :func:`read_product` reads either and checks it whole: the fields the receipt
must have and their types, and, for the ``.npz``, that its per-tile statuses add up to the receipt's
counts. A product is vouched for (:attr:`ProductReceipt.vouched`) when every tile was checked and
passed, by checks that see a fault in the weights too (the checksum pass, or weights scrubbed:
double runs and range checks alone do not); one with a failed, unchecked or partly checked tile is
not, nor is one whose receipt contradicts itself (a status its counts do not give, a checksum
precision without the checksum pass or the pass without one), its header (another model's SHA-256)
or its tiles, nor one whose ``receipt_version`` is newer than this build's (what it adds is not read
here). Text the product carries (the provider, the flux source, the header's names) must be
printable: a newline or an escape in it could forge a line of the output. What the receipt says of
the environment (flux class, scrub age) is the board's own prediction from its TLE, not a
measurement (docs/architecture.md, "Radiation").

A training product is the model the board trained and its ``.json`` summary (:class:`TrainingReceipt`):
vouched for when the model file beside the summary is the one its receipt names. A training checkpoint
(``checkpoints/jobNNNNN.ck``, the state a running job resumes from, downlinked as products are) carries its
receipt in its header (:class:`CheckpointReceipt`): vouched for when its digests hold and its receipt
names the state it holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flight.compute.arithmetic import PRECISIONS
from flight.compute.checkpoint import MAGIC as CHECKPOINT_MAGIC
from flight.compute.checkpoint import MAGIC_V1 as CHECKPOINT_MAGIC_V1
from flight.compute.checkpoint import checkpoint_header
from flight.storage import CorruptFile
from flight.compute.checks import FAILED, PASSED, RECEIPT_VERSION, UNCHECKED, check_status_of
from flight.link.definitions import FluxClass, Protection

MAX_PRODUCT_BYTES = 64 * 1024 * 1024
"""A file past this, or an .npz whose arrays unpack past it, is refused before it is read: a product
is 13 bytes a tile (class, confidence, status), a few MB for the largest data set the board takes."""
MAX_NPZ_MEMBERS = 16
"""An .npz with more arrays than this is refused before they are opened: the board writes 8 (classes,
confidence, check, receipt and the header's 4). Found in review: 270,000 empty arrays in 61 MB took
10 s to look through, in the ground server's link thread."""
MAX_SUMMARY_BYTES = 1024 * 1024
"""A .json summary past this is refused before it is parsed: the board's are a few kB. Found in review:
a 53 MB JSON of empty objects took 6 s and 900 MB to parse."""

STATUSES = ("passed", "partial", "failed", "unchecked")

# The receipt's fields (flight/compute/checks.py, ProductChecks.receipt) and what each must be.
_FIELDS = ("model_sha256", "protection", "provider", "abft_precision", "check_status", "tiles_checked", "tiles_passed",
           "tiles_failed", "tiles_unchecked", "batches", "double_runs", "double_run_mismatches", "abft_failures",
           "range_failures", "reruns", "results_changed", "weights_repaired", "scrub_age_s", "scrub_period_s",
           "flux_class", "in_saa", "lat_deg", "flux_source")
_COUNTS = ("tiles_checked", "tiles_passed", "tiles_failed", "tiles_unchecked", "batches", "double_runs",
           "double_run_mismatches", "abft_failures", "range_failures", "reruns", "results_changed",
           "weights_repaired")
_HEADER = ("model", "model_version", "model_sha256", "model_uplinked_by")
SHOWN_TILES = 20
"""Tile indices (failed, unchecked) a text line names before "and N more"; ``--json`` gives them all."""
SHOWN_FIELDS = 5
"""Fields a newer receipt has that this ground does not know, named in its verdict before "and N more"."""


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
    disagreements: tuple[str, ...] = field(default=())  # the receipt against itself, its header, its tiles
    status: np.ndarray | None = field(default=None, compare=False, repr=False)  # per tile (.npz); None: a summary
    unknown_fields: tuple[str, ...] = field(default=())  # a newer receipt's fields this ground does not know

    @property
    def newer(self) -> bool:
        """Its receipt is of a version this ground does not know: what it adds is not read, so it is not
        vouched for."""
        return self.receipt["receipt_version"] > RECEIPT_VERSION

    @property
    def failed_tiles(self) -> list[int] | None:
        """The indices of the tiles marked failed; None for a summary (no per-tile statuses)."""
        return None if self.status is None else np.flatnonzero(self.status == FAILED).tolist()

    @property
    def unchecked_tiles(self) -> list[int] | None:
        """The indices of the tiles marked unchecked; None for a summary (no per-tile statuses)."""
        return None if self.status is None else np.flatnonzero(self.status == UNCHECKED).tolist()

    @property
    def check_status(self) -> str:
        return str(self.receipt["check_status"])

    @property
    def weights_vouched(self) -> bool:
        """Whether something vouches for the weights the tiles were made with: the checksum pass's flags
        (over the weights it checks), or weights the board scrubbed and, from receipt version 2
        (flight/compute/checks.py, ``RECEIPT_VERSION``), checked whole before any tile a check passed was
        released. Without either, a tile "passed" only double runs (which repeat a fault in a weight) or
        range checks (which miss one that stays in range)."""
        parts = str(self.receipt["protection"]).split("+")
        return "abft" in parts or ("scrubbed" in parts and self.receipt["receipt_version"] >= 2)

    @property
    def vouched(self) -> bool:
        """Every tile checked and passed by checks that see its weights too, and the receipt agrees with
        itself, its header and its tiles."""
        return self.check_status == "passed" and self.weights_vouched and not self.disagreements and not self.newer

    def verdict(self) -> str:
        if self.newer:
            return _newer_verdict(self.receipt["receipt_version"], self.unknown_fields, self.disagreements)
        if self.disagreements:
            return "NOT VOUCHED: the product contradicts itself (" + "; ".join(self.disagreements) + ")"
        r = self.receipt
        if self.check_status == "passed" and not self.weights_vouched:
            scrubbed = "scrubbed" in str(r["protection"]).split("+")
            return (f"NOT VOUCHED: every tile passed its checks, but with protection {r['protection']} none of them "
                    "sees a fault in the weights (double runs repeat it, range checks miss one in range) and the "
                    + ("weights were scrubbed but not checked whole before release (receipt version "
                       f"{r['receipt_version']}, made before the board did)" if scrubbed else
                       "weights were not scrubbed"))
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
            *self._tile_lines(),
            f"  reruns       {r['reruns']} (results changed {r['results_changed']}); weights repaired "
            f"{r['weights_repaired']}; double runs {r['double_runs']} ({r['double_run_mismatches']} disagreed)",
            f"  scrub age    {scrub}{period}",
            f"  environment  {r['flux_class']}{where}{lat}: {r['flux_source']}",
            f"  {self.verdict()}",
        ]

    def _tile_lines(self) -> list[str]:
        """Which tiles failed, and which went unchecked where others were checked (the .npz's statuses);
        for a summary, that those are in the .npz."""
        if self.status is None:
            return ["  per tile     statuses in the .npz, not read from this summary"]
        failed, unchecked = self.failed_tiles, self.unchecked_tiles
        out = [f"  failed       tiles {_first(failed, SHOWN_TILES)}"] if failed else []
        if unchecked and len(unchecked) < self.tiles:
            out.append(f"  unchecked    tiles {_first(unchecked, SHOWN_TILES)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "model": self.model, "model_version": self.model_version,
                "model_sha256": self.model_sha256, "model_uplinked_by": self.uplinked_by, "tiles": self.tiles,
                "vouched": self.vouched, "verdict": self.verdict(), "disagreements": list(self.disagreements),
                "failed_tiles": self.failed_tiles, "unchecked_tiles": self.unchecked_tiles,
                "unknown_fields": list(self.unknown_fields), "receipt": self.receipt}


@dataclass(frozen=True)
class TrainingReceipt:
    """A training product's summary, as checked by :func:`read_product`: the model the board trained
    (``<job>-trained.onnx`` beside the summary), its steps and what the step checks refused. Its weights
    change every step, so nothing scrubs them and no tile is checked: the step checks (a non-finite or
    out-of-range update is refused, the last checkpoint loaded after refusals in a row) guard them. It
    is vouched for when the model file beside it is the one its receipt names and the receipt agrees
    with itself."""

    path: str
    job_id: int
    source: str
    steps: int
    loss: float | None
    steps_refused: int
    restores: int
    saa_checkpoints: int
    receipt: dict[str, Any]
    model_file: str
    model_file_sha256: str | None  # None: no such file beside the summary
    disagreements: tuple[str, ...] = field(default=())
    unknown_fields: tuple[str, ...] = field(default=())  # a newer receipt's fields this ground does not know

    @property
    def newer(self) -> bool:
        return self.receipt["receipt_version"] > RECEIPT_VERSION

    @property
    def vouched(self) -> bool:
        return not self.disagreements and not self.newer and self.model_file_sha256 == self.receipt["model_sha256"]

    def verdict(self) -> str:
        if self.newer:
            return _newer_verdict(self.receipt["receipt_version"], self.unknown_fields, self.disagreements)
        if self.disagreements:
            return "NOT VOUCHED: the product contradicts itself (" + "; ".join(self.disagreements) + ")"
        if self.model_file_sha256 is None:
            return f"NOT VOUCHED: its model file {Path(self.model_file).name} is not beside it (fetch it too)"
        return (f"VOUCHED: {Path(self.model_file).name} is the model trained on board, its steps guarded by the "
                "step checks")

    def lines(self) -> list[str]:
        """The summary for an operator, one fact a line."""
        r = self.receipt
        loss = "not finite" if self.loss is None else f"{self.loss:.4f}"
        return [
            f"{self.path}",
            f"  training     job {self.job_id} on {self.source}: {self.steps} steps, last loss {loss}",
            _step_checks_line(self.steps_refused, self.restores, self.saa_checkpoints),
            f"  model        sha256 {r['model_sha256'][:16]}..., {r['provider']}, protection {r['protection']}",
            _training_environment_line(r, "at the end"),
            f"  {self.verdict()}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": "training", "job_id": self.job_id, "source": self.source,
                "steps": self.steps, "loss": self.loss, "steps_refused": self.steps_refused,
                "restores": self.restores, "saa_checkpoints": self.saa_checkpoints, "model_file": self.model_file,
                "model_file_sha256": self.model_file_sha256, "vouched": self.vouched, "verdict": self.verdict(),
                "disagreements": list(self.disagreements), "unknown_fields": list(self.unknown_fields),
                "receipt": self.receipt}


@dataclass(frozen=True)
class CheckpointReceipt:
    """A training checkpoint, as checked by :func:`read_product`: the state (weights and optimizer) a running
    job last wrote, with the receipt the worker gave it. Like a trained model's, its weights are guarded by
    the step checks, not scrubbed; it is vouched for when its digests hold (it is the state as written), its
    receipt names that state and agrees with itself."""

    path: str
    step: int
    data_set: str
    steps_refused: int
    restores: int
    saa_checkpoints: int
    receipt: dict[str, Any]
    state_sha256: str
    disagreements: tuple[str, ...] = field(default=())
    unknown_fields: tuple[str, ...] = field(default=())

    @property
    def newer(self) -> bool:
        return self.receipt["receipt_version"] > RECEIPT_VERSION

    @property
    def vouched(self) -> bool:
        return not self.disagreements and not self.newer

    def verdict(self) -> str:
        if self.newer:
            return _newer_verdict(self.receipt["receipt_version"], self.unknown_fields, self.disagreements)
        if self.disagreements:
            return "NOT VOUCHED: the checkpoint contradicts itself (" + "; ".join(self.disagreements) + ")"
        return (f"VOUCHED: the training state as the board wrote it at step {self.step}, its steps guarded by the "
                "step checks")

    def lines(self) -> list[str]:
        r = self.receipt
        return [
            f"{self.path}",
            f"  checkpoint   training on {self.data_set}: the state at step {self.step} (weights, optimizer)",
            _step_checks_line(self.steps_refused, self.restores, self.saa_checkpoints),
            f"  state        sha256 {self.state_sha256[:16]}..., {r['provider']}, protection {r['protection']}",
            _training_environment_line(r, "when written"),
            f"  {self.verdict()}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": "checkpoint", "step": self.step, "data_set": self.data_set,
                "steps_refused": self.steps_refused, "restores": self.restores,
                "saa_checkpoints": self.saa_checkpoints, "state_sha256": self.state_sha256, "vouched": self.vouched,
                "verdict": self.verdict(), "disagreements": list(self.disagreements),
                "unknown_fields": list(self.unknown_fields), "receipt": self.receipt}


def _step_checks_line(refused: int, restores: int, saa_checkpoints: int) -> str:
    return (f"  step checks  {refused} steps refused, {restores} checkpoints loaded again, {saa_checkpoints} "
            "checkpoints before the SAA")


def _training_environment_line(r: dict[str, Any], latitude_when: str) -> str:
    """The environment the agent predicted while a job trained, and the latitude ``latitude_when``."""
    lat = " unknown" if r["lat_deg"] is None else f" {r['lat_deg']:.1f} deg"
    where = " (some of it in the SAA)" if r["in_saa"] and r["flux_class"] != FluxClass.SAA.value else ""
    return f"  environment  {r['flux_class']} while it trained{where}, latitude {latitude_when}{lat}: {r['flux_source']}"


def _read_checkpoint(data: bytes, where: str) -> CheckpointReceipt:
    """A training checkpoint (flight/compute/checkpoint.py): its header read, its digests checked, its arrays
    not unpacked."""
    try:
        header, _payload = checkpoint_header(data, where)
    except CorruptFile as exc:
        raise ProductError(f"{exc}: damaged, or not as the board wrote it") from None
    if "receipt" not in header:
        raise ProductError(f"{where}: the checkpoint has no receipt (written before checkpoints carried one)")
    receipt = check_receipt(header["receipt"], where)
    meta, step = header.get("meta"), header.get("step")
    if not isinstance(meta, dict) or not _is_count(step):
        raise ProductError(f"{where}: header 'meta' or 'step' is not what the board writes")

    def count(key: str) -> int:
        v = meta.get(key)
        if not _is_count(v):
            raise ProductError(f"{where}: header meta {key!r} is {'missing' if v is None else repr(v)[:60]}, "
                               "not a count")
        return v

    job = meta.get("job")
    data_set = job.get("data_set") if isinstance(job, dict) else None
    if not isinstance(data_set, str) or len(data_set) > 200:
        raise ProductError(f"{where}: header meta 'job' names no data set")
    _printable(data_set, where, "header meta 'job.data_set'")
    found = list(_disagreements(receipt, header["sha256"], 0))  # no tile: every count 0, status unchecked
    return CheckpointReceipt(where, step, data_set, count("steps_refused"), count("restores"),
                             count("saa_checkpoints"), receipt, header["sha256"], tuple(found),
                             _unknown_fields(header["receipt"]))


def _first(values: list[Any], shown: int) -> str:
    """``values`` for a line: the first ``shown`` of them, then how many more."""
    more = f" and {len(values) - shown} more" if len(values) > shown else ""
    return ", ".join(str(v) for v in values[:shown]) + more


def _newer_verdict(version: int, unknown: tuple[str, ...], disagreements: tuple[str, ...]) -> str:
    """Why a receipt of a version this ground does not know is not vouched for, naming (a few of) the
    fields it does not know (repr: a hostile name prints no escape)."""
    names = _first([repr(k)[:40] for k in unknown], SHOWN_FIELDS)
    return (f"NOT VOUCHED: receipt version {version} is newer than this ground reads ({RECEIPT_VERSION}): update the "
            "ground software" + (f" (fields it does not know: {names})" if unknown else "")
            + ("; it also contradicts itself (" + "; ".join(disagreements) + ")" if disagreements else ""))


def _unknown_fields(receipt: dict[str, Any]) -> tuple[str, ...]:
    """The fields of a newer receipt this ground does not read (none for a receipt of a version it knows:
    those are read as before)."""
    if receipt.get("receipt_version", 1) <= RECEIPT_VERSION:
        return ()
    return tuple(str(k) for k in receipt if k not in _FIELDS and k != "receipt_version")


def _printable(value: str, where: str, what: str) -> str:
    """``value`` if it is printable text (no newline, escape or control character: in the output, one
    could forge a line, a "VOUCHED" above the real verdict); else :class:`ProductError` naming ``what``."""
    if not value.isprintable():
        raise ProductError(f"{where}: {what} is {repr(value)[:60]}, not printable text")
    return value


def _read_training(summary: dict[str, Any], path: Path, where: str) -> TrainingReceipt:
    """A training product's summary (flight/compute/worker.py writes it beside the trained model)."""
    def count(key: str) -> int:
        v = summary.get(key)
        if not _is_count(v):
            raise ProductError(f"{where}: summary {key!r} is {'missing' if v is None else repr(v)[:60]}, not a count")
        return v

    source, loss = summary.get("source"), summary.get("loss")
    if not isinstance(source, str) or len(source) > 200:
        raise ProductError(f"{where}: summary 'source' is {repr(source)[:60]}, not a data set's name")
    _printable(source, where, "summary 'source'")
    if not _is_number(loss):
        raise ProductError(f"{where}: summary 'loss' is {repr(loss)[:60]}, not a finite number or null")
    receipt = check_receipt(summary.get("receipt"), where)
    model = path.with_suffix(".onnx")
    digest = None
    try:
        with open(model, "rb") as f:
            sha = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):  # hashlib.file_digest is Python 3.11's
                sha.update(chunk)
            digest = sha.hexdigest()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ProductError(f"{where}: its model file {model.name}: {exc.strerror or exc}") from None
    found = list(_disagreements(receipt, receipt["model_sha256"], 0))  # no tile: every count 0, status unchecked
    if digest is not None and digest != receipt["model_sha256"]:
        found.append(f"{model.name} has sha256 {digest[:16]}... against the receipt's {receipt['model_sha256'][:16]}...")
    return TrainingReceipt(where, count("job_id"), source, count("steps"), None if loss is None else float(loss),
                           count("steps_refused"), count("restores"), count("saa_checkpoints"), receipt, str(model),
                           digest, tuple(found), _unknown_fields(summary["receipt"]))


def check_receipt(receipt: Any, where: str) -> dict[str, Any]:
    """``receipt`` if it has every field the board writes, each of its type and range; else
    :class:`ProductError` naming the field."""
    if not isinstance(receipt, dict):
        raise ProductError(f"{where}: no receipt (a summary written without one, or not a product's)" if receipt is None
                           else f"{where}: receipt is {type(receipt).__name__}, not an object")
    version = receipt.get("receipt_version", 1)  # none: written before receipts had one
    if not _is_count(version) or version < 1:
        raise ProductError(f"{where}: receipt 'receipt_version' is {repr(version)[:60]}, not a version (1 or more)")
    # A newer receipt's fields are checked as this ground knows them; if one is not, it may be why.
    newer = f" (receipt version {version}, newer than this ground reads: {RECEIPT_VERSION})" \
        if version > RECEIPT_VERSION else ""

    def need(key: str, ok: Any, what: str) -> None:
        if key not in receipt:
            raise ProductError(f"{where}: receipt has no {key!r}{newer}")
        if not ok(receipt[key]):
            raise ProductError(f"{where}: receipt {key!r} is {repr(receipt[key])[:60]}, not {what}{newer}")

    def one_of(values: Any) -> Any:
        return lambda v: isinstance(v, str) and v in values

    need("model_sha256", lambda v: isinstance(v, str) and _is_sha256(v), "a SHA-256 in hex")
    need("protection", one_of({p.value for p in Protection}), "a protection level")
    need("provider", lambda v: isinstance(v, str) and 0 < len(v) <= 100, "a provider's name")
    _printable(receipt["provider"], where, "receipt 'provider'")
    need("abft_precision", lambda v: v is None or one_of(PRECISIONS)(v), f"null or one of {', '.join(PRECISIONS)}")
    need("check_status", one_of(STATUSES), f"one of {', '.join(STATUSES)}")
    for key in _COUNTS:
        need(key, _is_count, "a count")
    need("scrub_age_s", lambda v: _is_number(v, 0.0, MAX_SECONDS), f"seconds (at most {MAX_SECONDS:.0f}) or null")
    need("scrub_period_s", lambda v: _is_number(v, 0.0, MAX_SECONDS) and v != 0,
         f"seconds (at most {MAX_SECONDS:.0f}) or null")
    need("flux_class", one_of({f.value for f in FluxClass}), "a flux class")
    need("in_saa", lambda v: isinstance(v, bool), "true or false")
    need("lat_deg", lambda v: _is_number(v, -90.0, 90.0), "degrees or null")
    need("flux_source", lambda v: isinstance(v, str) and len(v) <= 200, "text")
    _printable(receipt["flux_source"], where, "receipt 'flux_source'")
    if receipt["tiles_passed"] + receipt["tiles_failed"] != receipt["tiles_checked"]:
        raise ProductError(f"{where}: receipt 'tiles_passed' + 'tiles_failed' is not 'tiles_checked'")
    # what it vouches for; anything else is not read (a newer receipt's: named, and not vouched for)
    return {**{key: receipt[key] for key in _FIELDS}, "receipt_version": version}


MAX_SECONDS = 1e9
"""The longest scrub age or period a receipt can state, over 31 years: no board runs that long, so a
larger one is a corrupt or forged receipt (found in audit: 1e300 was read as a number)."""


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _is_number(v: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    """``v`` null, or a finite number within [low, high] (JSON's: not a bool)."""
    if v is None:
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v)) and low <= float(v) <= high
    except OverflowError:  # an integer past a float's range
        return False


def _is_sha256(v: str) -> bool:
    return len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _header(values: dict[str, Any], where: str) -> tuple[str, str, str, str]:
    """The header's model, version, SHA-256 and who uplinked it from ``values`` (the summary, or the
    .npz's 0-d text arrays as str); :class:`ProductError` naming the field that is not such text."""
    out = []
    for key in _HEADER:
        if key not in values:
            raise ProductError(f"{where}: header {key!r} is missing")
        v = values[key]
        if not isinstance(v, str):
            raise ProductError(f"{where}: header {key!r} is {repr(v)[:60]}, not text")
        if len(v) > 200:
            raise ProductError(f"{where}: header {key!r} is {repr(v)[:60]}, more than 200 characters")
        if key == "model_sha256" and not _is_sha256(v):
            raise ProductError(f"{where}: header {key!r} is {repr(v)[:60]}, not a SHA-256 in hex")
        out.append(_printable(v, where, f"header {key!r}"))
    return out[0], out[1], out[2], out[3]


def _disagreements(receipt: dict[str, Any], header_sha256: str, tiles: int,
                   status: np.ndarray | None = None) -> tuple[str, ...]:
    """Where the receipt contradicts itself, its header or (``status``, the .npz's) its tiles."""
    out = []
    if receipt["tiles_checked"] + receipt["tiles_unchecked"] != tiles:
        out.append(f"tiles {tiles} against {receipt['tiles_checked']} checked and {receipt['tiles_unchecked']} "
                   "unchecked")
    said = check_status_of(tiles, receipt["tiles_checked"], receipt["tiles_failed"])
    if said != receipt["check_status"]:
        out.append(f"check_status {receipt['check_status']} against counts that say {said}")
    # The checksum pass's precision is given exactly where the pass ran (flight/compute/checks.py,
    # ProductChecks.ran_on: dropped with the pass; a training receipt: protection none, no precision).
    if "abft" in str(receipt["protection"]).split("+"):
        if receipt["abft_precision"] is None:
            out.append(f"protection {receipt['protection']} without an abft_precision")
    elif receipt["abft_precision"] is not None:
        out.append(f"abft_precision {receipt['abft_precision']} under protection {receipt['protection']}, which has "
                   "no checksum pass")
    if header_sha256 != receipt["model_sha256"]:
        out.append(f"the header's model {header_sha256[:16]}... against the receipt's {receipt['model_sha256'][:16]}...")
    if status is not None:
        said = {"tiles_passed": PASSED, "tiles_failed": FAILED, "tiles_unchecked": UNCHECKED}
        out += [f"{key} {receipt[key]} against {int((status == value).sum())} tiles so marked"
                for key, value in said.items() if int((status == value).sum()) != receipt[key]]
        other = int((~np.isin(status, list(said.values()))).sum())
        if other:
            out.append(f"{other} tiles with a status that is none of passed, failed, unchecked")
    return tuple(out)


def read_product(path: str | Path) -> ProductReceipt | TrainingReceipt | CheckpointReceipt:
    """The product at ``path`` (its ``.npz``, or its ``.json`` summary; a training product's summary,
    with the trained model beside it; a training checkpoint) with its receipt checked; :class:`ProductError`
    for a file that is not one."""
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
    if data[:8] in (CHECKPOINT_MAGIC, CHECKPOINT_MAGIC_V1):
        return _read_checkpoint(data, where)
    if len(data) > MAX_SUMMARY_BYTES:
        raise ProductError(f"{where}: {len(data)} bytes, more than a summary's {MAX_SUMMARY_BYTES} (and not an .npz)")
    try:
        summary = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if data.lstrip()[:1] in (b"{", b"["):
            raise ProductError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
        raise ProductError(f"{where}: neither a product's .npz nor its .json summary") from None
    if not isinstance(summary, dict):
        raise ProductError(f"{where}: the summary is {type(summary).__name__}, not an object")
    if "steps" in summary and "tiles" not in summary:
        return _read_training(summary, p, where)
    receipt = check_receipt(summary.get("receipt"), where)
    tiles = summary.get("tiles")
    if not _is_count(tiles):
        raise ProductError(f"{where}: summary 'tiles' is {repr(tiles)[:60]}, not a count")
    header = _header(summary, where)
    return ProductReceipt(where, *header, receipt, tiles, _disagreements(receipt, header[2], tiles),
                          unknown_fields=_unknown_fields(summary["receipt"]))


PRODUCTS_DIR = "products/"
"""Where the agent keeps its products (flight/compute/worker.py): a file that comes down from there named
``.npz`` or ``.json`` is read as one (:func:`product_verdict`)."""
CHECKPOINTS_DIR = "checkpoints/"
"""Where its training jobs keep their checkpoints: a ``.ck`` from there is read as one."""


def is_product_name(remote: str) -> bool:
    """Whether the agent's name for a file is a product's, its summary's or a training checkpoint's."""
    return (remote.startswith(PRODUCTS_DIR) and remote.endswith((".npz", ".json"))) or \
        (remote.startswith(CHECKPOINTS_DIR) and remote.endswith(".ck"))


def product_verdict(path: str | Path, shown_as: str) -> dict[str, Any]:
    """What the ground makes of a product as it arrives (ground/files.py: every file from the agent's
    products/ read as it comes down, so the operators see the verdict in the file list, the web console
    and the archive without fetching it): ``{"vouched": bool, "verdict": text}``. A file that is not a
    readable product is not vouched for, the verdict saying why, with ``shown_as`` (the agent's name for
    it) for the ground's own path. Never raises: it runs in a link's thread."""
    try:
        product = read_product(path)
        return {"vouched": bool(product.vouched), "verdict": product.verdict()}
    except ProductError as exc:
        why = str(exc).replace(str(path), shown_as)
        return {"vouched": False, "verdict": f"NOT VOUCHED: not read as a product ({why[:300]})"}
    except Exception as exc:  # noqa: BLE001 - read_product says ProductError of what it knows; the link lives on
        return {"vouched": False, "verdict": f"NOT VOUCHED: {shown_as} could not be read ({type(exc).__name__})"}


# What a damaged archive raises while it is read: a bad CRC or header (BadZipFile), a member that does not
# inflate (zlib.error, lzma.LZMAError; found in review), one cut short (EOFError).
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, zlib.error, lzma.LZMAError)

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _members_fit(data: bytes, where: str) -> None:
    """Refuse an archive whose members would unpack past :data:`MAX_PRODUCT_BYTES` in all, or whose
    array headers claim more than their member holds, before numpy allocates any of it (found in
    review: 3 MB that unpacked to 3 GiB)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_MEMBERS:
                raise ProductError(f"{where}: {len(members)} arrays, more than a product's {MAX_NPZ_MEMBERS}")
            if sum(m.file_size for m in members) > MAX_PRODUCT_BYTES:
                raise ProductError(f"{where}: its arrays unpack to more than a product's {MAX_PRODUCT_BYTES} bytes")
            for m in members:
                with archive.open(m) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = _HEADER_READERS.get(version)
                    if read_header is None:
                        raise ProductError(f"{where}: array {m.filename!r} is in .npy format {version}, not 1.0 "
                                           "or 2.0 (what the board writes)")
                    shape, _order, dtype = read_header(f)
                    if dtype.hasobject or math.prod(shape) * dtype.itemsize > m.file_size:
                        raise ProductError(f"{where}: array {m.filename!r} claims {shape} of {dtype}, more than it "
                                           "holds or of objects")
    except ProductError:
        raise
    except _UNREADABLE as exc:
        raise ProductError(f"{where}: not a readable .npz ({type(exc).__name__}: {str(exc)[:120]})") from None


def _read_npz(data: bytes, where: str) -> ProductReceipt:
    _members_fit(data, where)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("classes", "confidence", "check", "receipt", *_HEADER) if k in npz.files}
    except (*_UNREADABLE, MemoryError) as exc:
        raise ProductError(f"{where}: not a readable .npz ({type(exc).__name__}: {str(exc)[:120]})") from None
    for key in ("classes", "confidence", "check", "receipt"):
        if key not in arrays:
            raise ProductError(f"{where}: the product has no {key!r}")
    if arrays["receipt"].dtype.kind != "U" or arrays["receipt"].ndim != 0:
        raise ProductError(f"{where}: 'receipt' is {arrays['receipt'].dtype} of shape {arrays['receipt'].shape}, "
                           "not one string")
    try:
        raw = json.loads(str(arrays["receipt"]))
    except (ValueError, RecursionError):
        raise ProductError(f"{where}: 'receipt' is not JSON") from None
    receipt = check_receipt(raw, where)
    classes, confidence, status = arrays["classes"], arrays["confidence"], arrays["check"]
    if classes.ndim != 1 or confidence.shape != classes.shape or status.shape != classes.shape:
        raise ProductError(f"{where}: 'classes' {classes.shape}, 'confidence' {confidence.shape} and 'check' "
                           f"{status.shape} are not one value a tile")
    if status.dtype.kind not in "iu":
        raise ProductError(f"{where}: 'check' is {status.dtype}, not integers")
    for key in _HEADER:  # the board writes each as one string (0-d); else say what it is, not "missing"
        if key in arrays and (arrays[key].ndim != 0 or arrays[key].dtype.kind != "U"):
            raise ProductError(f"{where}: header {key!r} is {arrays[key].dtype} of shape {arrays[key].shape}, "
                               "not text")
    fields = _header({k: str(arrays[k]) for k in _HEADER if k in arrays}, where)
    return ProductReceipt(where, *fields, receipt, int(len(classes)),
                          _disagreements(receipt, fields[2], int(len(classes)), status), status,
                          _unknown_fields(raw))
