"""Checks of results and the receipt on every product (pure: arrays and counts in, records out).

A result can be wrong without any weight being wrong: an upset in a register, a cache line or
the GPU's logic corrupts one run and not the next. Two checks catch that, and the receipt says
what was checked:

- **The checksum pass (ABFT).** A protected model (flight/compute/abft.py) has an extra
  per-sample output, :data:`CHECK_OUTPUT`: true (non-zero) where the sample's checksums held.
- **Range checks.** With ``range_checks``, also :data:`RANGE_OUTPUT` (flight/compute/ranges.py): true
  where every ranged activation of the sample stayed within the bounds learned from the model's
  reference inputs. A sample passes only where every flag the model has is true (:func:`check_flags`).
- **Double runs.** A share of the batches (the parameter ``double_run_fraction``; all of them
  inside the SAA with ``double_run_all_in_saa``) run twice and are compared: bit for bit on the
  CPU, which is deterministic for the same input, threads and batch; within a tolerance on a GPU
  (its reductions may add in another order from one run to the next).

When a check fails the worker scrubs the weights at once (flight/compute/scrub.py) and runs the
batch again; tiles that still fail are marked failed in the product. Per tile, in the product's
``check`` array: :data:`UNCHECKED` (0), :data:`PASSED` (1), :data:`FAILED` (-1).

The receipt (:meth:`ProductChecks.receipt`) is in every product's summary: the model's SHA-256,
its protection level (with the arithmetic the checksum pass checked for: ``abft_precision``), the
check status with counts, the scrub age, and the environment the agent predicted while it was computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from flight.link.definitions import FluxClass, Protection

CHECK_OUTPUT = "abft_ok"
"""The per-sample output of a model protected by the checksum pass (flight/compute/abft.py takes its name from
here: a reader of flags needs neither that pass nor onnx, whose import costs a harness process 0.6 s)."""

RANGE_OUTPUT = "range_ok"
"""The per-sample output of the range checks (flight/compute/ranges.py: OUTPUT)."""

UNCHECKED, PASSED, FAILED = 0, 1, -1

GPU_RTOL = 1e-4
GPU_ATOL = 1e-6
"""Two runs of the same batch on a GPU agree within these (relative, absolute) on outputs of
order 1 (probabilities): float32 sums added in another order differ in the last few bits, ~1e-7
relative per operation, a few hundred operations deep. A flipped exponent or high mantissa bit is
far outside it; a flip in the lowest bits of one output is not caught (and changes no class)."""

FLUX_SOURCE = "predicted by the agent from its TLE: SAA ellipse model (flight/orbit/saa.py) and latitude; no flux value on board"

RECEIPT_VERSION = 2
"""What the receipt's "passed" rests on, for the ground to read (ground/receipts.py): 2, with scrubbed
weights every weight no check covers was checked against its CRC before a tile a check passed was
released (all of them where there are no checksum flags: a double run repeats a weight's fault, and a
range check misses one in range); 1 (no such field: made before), only those the checksum pass left
uncovered, and only where it ran."""

# Worst first: a product partly computed with the orbit unknown says unknown (in_saa still says
# whether any batch ran inside the SAA): found in review, QUIET hid such batches.
_FLUX_RANK = {FluxClass.QUIET: 0, FluxClass.HIGH_LATITUDE: 1, FluxClass.SAA: 2, FluxClass.UNKNOWN: 3}


def worse_flux(seen: FluxClass | None, flux: FluxClass) -> FluxClass:
    """The worse of two predicted flux classes (UNKNOWN worst of all, then SAA, high latitude, quiet):
    what a receipt says of work done under both; ``seen`` None where there was none before."""
    return flux if seen is None or _FLUX_RANK[flux] > _FLUX_RANK[seen] else seen


def protection_of(scrubbed: bool, abft: bool, ranges: bool = False) -> Protection:
    """The protection level of a session: the checksum pass, range checks, scrubbed weights (on the CPU
    provider), named in that order and joined by "+"; none without any."""
    name = "+".join(part for part, on in (("abft", abft), ("ranges", ranges), ("scrubbed", scrubbed)) if on)
    return Protection(name or Protection.NONE.value)


def abft_flags(values: Any, samples: int) -> np.ndarray:
    """The checksum pass's output as one bool per sample (true, or a number that is exactly 1: passed;
    a NaN, found in review, is not).

    Raises ValueError when it does not have one value per sample: a model whose check cannot be
    read counts as not checked by the caller, never as passed.
    """
    flags = np.asarray(values)
    if flags.ndim == 0 or flags.shape[0] != samples or flags.size != samples:
        raise ValueError(f"{CHECK_OUTPUT} has shape {flags.shape}, not one value per sample ({samples})")
    return flags.reshape(samples) == 1


def check_flags(outputs: Sequence[str], values: Sequence[Any], samples: int) -> tuple[np.ndarray, str]:
    """A run's per-sample flags (the checksum pass's, the range checks'; ``outputs`` their names) as
    one, true where all are, and which failed: "checksum", "range", both joined by "+", or "". A flag
    that cannot be read (not one value per sample) has not passed."""
    ok, failed = np.ones(samples, bool), []
    values = list(values) + [None] * (len(outputs) - len(values))  # a flag the run did not give has not passed
    for name, v in zip(outputs, values):
        try:
            flags = abft_flags(v, samples)
        except ValueError:
            flags = np.zeros(samples, bool)
        if not flags.all():
            failed.append("checksum" if name == CHECK_OUTPUT else "range")
        ok &= flags
    return ok, "+".join(failed)


def rows_agree(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """Per sample (first axis): do two runs' outputs agree? Bit for bit when ``exact`` (NaN agrees
    with NaN: a model that gives NaN gives it both times), else within GPU_RTOL/GPU_ATOL."""
    if a.shape != b.shape:
        return np.zeros(a.shape[0] if a.ndim else 1, bool)
    if a.ndim and not len(a):  # no rows: nothing to disagree (a reshape to [0, -1] raises: found in review)
        return np.ones(0, bool)
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if exact:
        same = (a2.view(np.uint8) == b2.view(np.uint8)) if a2.dtype == b2.dtype else (a2 == b2)
        return same.all(axis=1)
    return np.isclose(a2, b2, rtol=GPU_RTOL, atol=GPU_ATOL, equal_nan=True).all(axis=1)


class DoubleRunSchedule:
    """Which batches run twice: ``fraction`` of them, spread evenly and deterministically (the
    credit of each batch adds up; a batch runs twice each time it reaches one), or every batch
    while ``every`` is True (inside the SAA with double_run_all_in_saa)."""

    def __init__(self) -> None:
        self._credit = 0.0

    def due(self, fraction: float, every: bool = False) -> bool:
        if every:
            return True
        fraction = min(1.0, max(0.0, fraction)) if math.isfinite(fraction) else 0.0
        self._credit += fraction
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False


def check_status_of(tiles: int, checked: int, failed: int) -> str:
    """A product's check status from its counts (the receipt's ``check_status``; ground/receipts.py
    holds a receipt to it): failed (some tile failed, even after a scrub and a rerun), passed (every
    tile was checked and passed), partial (those checked passed, others were not checked: a sample
    of double runs without the checksum pass; the counts say how many), unchecked (none was)."""
    if failed:
        return "failed"
    if not checked:
        return "unchecked"
    return "passed" if checked == tiles else "partial"


@dataclass
class ProductChecks:
    """What was checked while one product was computed, batch by batch; :meth:`receipt` at the end."""

    model_sha256: str
    protection: Protection
    provider: str
    abft_precision: str = ""  # the arithmetic the checksum pass checks for ("fp32", "tf32"); "": no checksum pass
    batches: int = 0
    tiles: int = 0
    tiles_checked: int = 0
    tiles_failed: int = 0
    double_runs: int = 0
    double_run_mismatches: int = 0
    abft_failures: int = 0
    range_failures: int = 0  # batches whose range flags failed on their first run
    reruns: int = 0
    results_changed: int = 0  # held results made again: changed (their CRC-32), or made with a weight no check covers wrong
    weights_repaired: int = 0
    scrub_age_s: float | None = None  # the largest seen
    scrub_period_s: float | None = None  # the longest in force: what held for every batch
    flux_class: FluxClass | None = None  # the worst seen (unknown the worst of all); None before any batch
    in_saa: bool = False  # any batch inside the SAA
    lat_deg: float | None = None  # at the last batch
    status: list[tuple[int, np.ndarray | None]] = field(default_factory=list)  # (tiles, status; None: unchecked)

    def ran_on(self, model_sha256: str, protection: Protection, provider: str, abft_precision: str) -> None:
        """The session the next batches run on. One product may run on several (its parameters
        changed between two slices, a session rebuilt after failing again): the receipt then claims
        only what held for every batch, the protections' common parts, every provider, and the
        looser precision; a model's SHA-256 never changes within a product (the worker starts
        the job again)."""
        if self.batches == 0:
            self.model_sha256, self.protection, self.provider = model_sha256, protection, provider
            self.abft_precision = abft_precision
            return
        if model_sha256 != self.model_sha256:
            raise ValueError(f"a product's batches ran on two models ({self.model_sha256[:12]}, {model_sha256[:12]})")
        if protection != self.protection:
            ours, theirs = self.protection.value.split("+"), protection.value.split("+")
            self.protection = Protection("+".join(p for p in ours if p in theirs) or Protection.NONE.value)
        if provider not in self.provider.split("+"):
            self.provider = f"{self.provider}+{provider}"
        if "abft" not in self.protection.value:
            self.abft_precision = ""
        elif abft_precision != self.abft_precision:
            self.abft_precision = "tf32" if "tf32" in (abft_precision, self.abft_precision) else abft_precision

    def add_batch(self, tiles: int, status: np.ndarray | None, *, batches: int = 1, double_run: bool = False,
                  mismatch: bool = False, abft_failed: bool = False, range_failed: bool = False, rerun: bool = False,
                  scrub_age_s: float | None = None, scrub_period_s: float | None = None,
                  flux: FluxClass = FluxClass.UNKNOWN, in_saa: bool = False, lat_deg: float | None = None) -> None:
        """One batch of ``tiles``: its per-tile status (PASSED/FAILED/UNCHECKED), or None when none
        of it was checked (the common case, kept cheap: no array per batch).

        ``batches`` > 1 adds that many consecutive batches at once, ``tiles`` being their total and
        ``status`` (if any) theirs end to end: the worker records each run of unchecked, or of passed,
        batches of a slice in one call, not one per batch (on the shipped model a batch of 64 tiles
        runs in ~1.7 ms; bench.compute's ``infer_ratio`` went from 0.967 to 0.981 without the per-batch
        bookkeeping of the unchecked path). The
        flags then describe all of them (such runs: none set); the scrub age is the largest of theirs."""
        if batches < 1:
            raise ValueError(f"batches must be at least 1, got {batches} (for {tiles} tiles)")
        if status is not None:
            status = np.asarray(status, np.int8)
            if len(status) != tiles:
                raise ValueError(f"{len(status)} statuses for {tiles} tiles")
            self.tiles_checked += int(np.count_nonzero(status != UNCHECKED))
            self.tiles_failed += int(np.count_nonzero(status == FAILED))
        self.status.append((tiles, status))
        self.batches += batches
        self.tiles += tiles
        self.double_runs += int(double_run)
        self.double_run_mismatches += int(mismatch)
        self.abft_failures += int(abft_failed)
        self.range_failures += int(range_failed)
        self.reruns += int(rerun)
        if scrub_age_s is not None:
            self.scrub_age_s = max(scrub_age_s, self.scrub_age_s or 0.0)
        if scrub_period_s is not None:
            self.scrub_period_s = max(scrub_period_s, self.scrub_period_s or 0.0)
        self.flux_class = worse_flux(self.flux_class, flux)
        self.in_saa = self.in_saa or in_saa
        self.lat_deg = lat_deg

    def restate(self, first_tile: int, status: np.ndarray | None, double_run: bool = False,
                mismatch: bool = False) -> None:
        """Tiles ``first_tile`` onwards (``len(status)`` of them) were made again: their result
        changed while it was held (its CRC-32). Their status becomes the new run's (None: unchecked);
        ``double_run``: the new run was checked by running it twice (``mismatch``: and they differed)."""
        whole = self.tile_status()
        n = len(status) if status is not None else 0
        if status is None or first_tile < 0 or first_tile + n > len(whole):
            raise ValueError(f"tiles {first_tile}..{first_tile + n} are not in this product's {len(whole)}")
        whole[first_tile:first_tile + n] = np.asarray(status, np.int8)
        self.status = [(len(whole), whole)]
        self.tiles_checked = int(np.count_nonzero(whole != UNCHECKED))
        self.tiles_failed = int(np.count_nonzero(whole == FAILED))
        self.reruns += 1
        self.results_changed += 1
        self.double_runs += int(double_run)
        self.double_run_mismatches += int(mismatch)

    def tile_status(self) -> np.ndarray:
        parts = [s if s is not None else np.full(n, UNCHECKED, np.int8) for n, s in self.status]
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)

    @property
    def check_status(self) -> str:
        return check_status_of(self.tiles, self.tiles_checked, self.tiles_failed)

    def receipt(self) -> dict[str, Any]:
        """The receipt (JSON-able): model, protection, checks and their counts, scrub age, environment."""
        return {
            "model_sha256": self.model_sha256,
            "protection": self.protection.value,
            "provider": self.provider,
            "abft_precision": self.abft_precision or None,
            "check_status": self.check_status,
            "tiles_checked": self.tiles_checked,
            "tiles_passed": self.tiles_checked - self.tiles_failed,
            "tiles_failed": self.tiles_failed,
            "tiles_unchecked": self.tiles - self.tiles_checked,
            "batches": self.batches,
            "double_runs": self.double_runs,
            "double_run_mismatches": self.double_run_mismatches,
            "abft_failures": self.abft_failures,
            "range_failures": self.range_failures,
            "reruns": self.reruns,
            "results_changed": self.results_changed,
            "weights_repaired": self.weights_repaired,
            "scrub_age_s": None if self.scrub_age_s is None else round(self.scrub_age_s, 3),
            "scrub_period_s": self.scrub_period_s,
            "flux_class": (self.flux_class or FluxClass.UNKNOWN).value,
            "in_saa": self.in_saa,
            "lat_deg": None if self.lat_deg is None else round(self.lat_deg, 3),
            "flux_source": FLUX_SOURCE,
            "receipt_version": RECEIPT_VERSION,
        }
