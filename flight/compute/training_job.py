"""A training job that can be paused, killed and resumed exactly.

Exactly means: the same weights, the same optimizer state and the same data position as a
run that never stopped. The data order is a pure function of (seed, epoch) — a fresh
permutation per epoch — so a checkpoint only has to store the epoch and the index within
it. A checkpoint is written every ``checkpoint_every`` steps and on every pause; a kill
loses at most the steps since the last one.

Under radiation (issue 17):

- Before the SAA: :meth:`TrainingJob.radiation_tick` takes the environment the agent predicts
  from its own TLE (``Admit.radiation``) and writes a checkpoint once per pass when the entry
  is :data:`SAA_CHECKPOINT_LEAD_S` or less ahead, so a worker lost in the SAA resumes from
  no earlier than just before it, however far apart the periodic checkpoints are.
- Every step: the trainer refuses a step whose loss, gradient or update is not finite or out
  of range before it is committed (flight/compute/training/guard.py). The job then climbs a
  ladder: the same batch once more (an upset during the step leaves no trace: the run is bit
  for bit the one without it); then the next batch (the data may be what is wrong: later
  batches that share a sample with it are skipped too); at :data:`REFUSALS_BEFORE_RESTORE` in
  a row otherwise, the state itself is suspect and the last checkpoint is loaded; refused
  that often again from the same checkpoint, the job fails (:class:`TrainingRefusedError`:
  the training diverges, or its data is bad).
- Between steps: an upset in the state in memory is seen by no step check. Before each
  checkpoint is written, and at each refused step, the state is held to what the steps accepted
  since the last checkpoint can have made of it (``Trainer.state_fault``), and before the trained
  model is exported; one they cannot have made is not written (a checkpoint, or the trained
  model, never keeps it): the last checkpoint is loaded at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from flight.compute.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from flight.compute.checks import worse_flux
from flight.compute.protocol import Radiation
from flight.compute.training import StepRefusedError
from flight.compute.training.guard import not_finite
from flight.link.definitions import FluxClass
from flight.storage import CorruptFile, quarantine

SAA_CHECKPOINT_LEAD_S = 30.0
"""Checkpoint when the predicted SAA entry is this close. It must cover, with room to spare:
the prediction's error (flight/agent/compute.py: radiation_estimate, within 1.5 s of a 1 s
scan of the same TLE), its age when used (one control tick, 1 s), the wait for this
call (one work slice, ~50 ms, or a continuous job's file while one is run; the worker ticks
running jobs through its rests too, at least once a second; a training job that waits was
checkpointed when it paused) and writing it (20 ms with both fsyncs for the
worker's 1024-128-2 Adam job, 1.6 MB, on a PC's disk; allow a slow eMMC 50 times that). The
price of a longer lead: a worker lost before the first periodic checkpoint of the pass
loses up to the lead's worth of steps more."""

SAA_PASS_GAP_S = 600.0
"""Predicted entries (``Radiation.saa_entry_unix_s``, on the agent's clock) further apart than this
are different SAA passes: a spacecraft crosses the SAA at most once an orbit (about 95 min apart),
and the prediction of one entry moves by seconds from one tick to the next. So a job paused across
the end of a pass (no tick saw it end), or a worker restarted meanwhile (the entry is kept in the
checkpoint), is armed again for the next pass (found in review: it took no checkpoint for it)."""

SAA_RETRY_S = 5.0
"""After an SAA checkpoint that could not be written, the next try waits this long (on the job's
clock): a disk that refuses is not asked again every 50 ms slice of the lead (found in review: 600
full writes tried in one pass)."""

REFUSALS_BEFORE_RESTORE = 3
"""Refused steps in a row before the last checkpoint is loaded: the first is retried on the
same batch, the second skips it; a third, on a batch with none of its samples, means the
state is at fault. (A bad sample in memory can be in two batches in a row, the last of one
epoch and the first of the next: that is still the data, and is skipped.)"""


STATE_FAULTS_BEFORE_FAILING = 3
"""States found changed in memory (``Trainer.state_fault``) after going back to one checkpoint before
the job fails: each is an upset put right by loading it, but this many from one checkpoint say the
state is not what upsets do to it (a fault in the board, or in the check itself)."""


MOVED = "moved aside"
NOT_MOVED = "left in place (the disk refused the move)"
"""How TRAIN_CHECKPOINT_REFUSED's outcome begins: a refused checkpoint is moved aside (``NAME.corrupt``)
where the disk lets it (storage.quarantine)."""


class TrainingRefusedError(ArithmeticError):
    """Steps keep being refused even from the last checkpoint: the job cannot go on as it is."""


class StateFaultError(ArithmeticError):
    """The trainer's state in memory is not one the steps it accepted can have made: not written."""


class SteppableTrainer(Protocol):
    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]: ...
    def state_arrays(self) -> dict[str, np.ndarray]: ...
    def load_state(self, arrays: dict[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class TrainingPlan:
    total_steps: int
    batch_size: int
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        """Each field a whole number, named where it is not (found in audit: one message for three fields, and a
        NaN, a float or a bool taken: checkpoint_every=nan wrote no periodic checkpoint, batch_size=2.5 failed
        at the first step)."""
        for name, least in (("total_steps", 1), ("batch_size", 1), ("checkpoint_every", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
                raise ValueError(f"TrainingPlan {name} must be a whole number of at least {least}, got {value!r}")


class DataCursor:
    """Where the job is in its data: epoch and index, and the batches that follow from them."""

    def __init__(self, n_samples: int, batch_size: int, seed: int, epoch: int = 0, index: int = 0):
        if batch_size > n_samples:
            raise ValueError(f"batch of {batch_size} is larger than the {n_samples} samples")
        self.n, self.batch_size, self.seed = n_samples, batch_size, seed
        self.epoch, self.index = epoch, index
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next_indices(self) -> np.ndarray:
        if self.index + self.batch_size > self.n:  # drop the ragged tail: every batch the same shape
            self.epoch += 1
            self.index = 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return idx

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, index): where the next batch starts; :meth:`seek` goes back there."""
        return self.epoch, self.index

    def seek(self, epoch: int, index: int) -> None:
        if epoch != self.epoch:
            self._order = self._permutation(epoch)
        self.epoch, self.index = epoch, index


@dataclass
class TrainingStatus:
    step: int = 0
    loss: float = float("nan")
    accuracy: float = float("nan")  # over the batches since the job (re)started
    steps_per_s: float = 0.0
    last_checkpoint_step: int = -1
    resumed_from: int | None = None
    # Under radiation; counts for the whole job: kept in each checkpoint, and taken back from the one a
    # restarted worker resumes from (what happened after that checkpoint and before the restart is lost).
    saa_checkpoints: int = 0  # passes for which the state was checkpointed before the SAA entry
    steps_refused: int = 0  # steps the checks refused (none of them was committed)
    restores: int = 0  # times the last checkpoint was loaded: steps kept being refused, or the state changed
    last_refusal: str = ""  # why the last refused step was refused, with the numbers
    checkpoints_failed: int = 0  # writes that failed in this worker's run (a failed write keeps no count)
    # The environment the agent predicted while the job ran (each radiation_tick): the worst flux class and
    # whether any tick was in the SAA, for the trained model's receipt; kept in each checkpoint too.
    worst_flux: FluxClass | None = None
    in_saa: bool = False


_COUNTS = ("saa_checkpoints", "steps_refused", "restores")  # TrainingStatus counts a checkpoint keeps


def _count(value: Any) -> bool:
    """Whether ``value`` is a whole number of at least 0 as JSON gives one back (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def job_identity(x: np.ndarray, y: np.ndarray, plan: TrainingPlan, extra: Mapping[str, Any] | None = None) -> dict:
    """What a checkpoint must match to be resumed by a job: its plan, a SHA-256 of its data, ``extra``.
    As JSON gives it back (a checkpoint's header is JSON), so the two compare equal."""
    digest = hashlib.sha256()
    for a in (x, y):
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return json.loads(json.dumps({"steps": plan.total_steps, "batch_size": plan.batch_size, "seed": plan.seed,
                                  "data_sha256": digest.hexdigest(), **dict(extra or {})}, sort_keys=True))


class TrainingJob:
    def __init__(
        self,
        trainer: SteppableTrainer,
        x: np.ndarray,
        y: np.ndarray,
        plan: TrainingPlan,
        checkpoint_path: Path | str,
        on_event: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        identity: Mapping[str, Any] | None = None,
        receipt: Callable[[str, TrainingStatus], dict[str, Any]] | None = None,
    ):
        """``identity``: what else makes this job the one it is (the worker's: data set name, learning
        rate, layers), JSON-able; with the plan and a digest of ``x`` and ``y`` it is kept in each
        checkpoint, and a checkpoint of another job under the same path is not resumed. ``receipt``:
        each checkpoint's receipt, from its state's SHA-256 and the job's status then (the worker's: a
        checkpoint goes down as a product does)."""
        self.trainer, self.x, self.y, self.plan = trainer, x, y, plan
        self.identity = job_identity(x, y, plan, identity)
        self.checkpoint_path = Path(checkpoint_path)
        self.cursor = DataCursor(len(x), plan.batch_size, plan.seed)
        self.status = TrainingStatus()
        self._receipt = receipt
        self._event = on_event or (lambda *a, **k: None)
        self._clock = clock
        self._correct = 0.0
        self._seen = 0
        self._tally_at_checkpoint = (0.0, 0)  # (_correct, _seen) when the file's state was written, or loaded
        self._saa_armed = True  # False from the pre-entry checkpoint until the entry is no longer near
        self._saa_entry_at: float | None = None  # the entry the last SAA checkpoint was for (agent's clock)
        self._saa_retry_at = -float("inf")  # on the job's clock: no SAA checkpoint tried again before
        self._refused_in_row = 0
        self._suspects: np.ndarray | None = None  # samples of the batch skipped in this run of refusals
        self._restored_from: int | None = None  # checkpoint step loaded since the last new checkpoint
        self._state_faults: tuple[int, int] = (-1, 0)  # (checkpoint step, state faults put right from it)
        self._saved_counts: dict[str, int] = {}  # the counts the checkpoint file holds (_COUNTS)

    @property
    def done(self) -> bool:
        return self.status.step >= self.plan.total_steps

    def resume(self) -> bool:
        """Load the last checkpoint if there is one; True if the job continues from it.

        A checkpoint that fails its check, or that another job left under this path (its
        :func:`job_identity` differs: a job id given again after the agent's state was lost), is
        moved aside (``NAME.corrupt``, said as ``checkpoint_refused``) and the job starts over:
        wrong weights are worse than lost steps. So does one the disk cannot read (an I/O error: found
        in audit, it failed the job unsaid and uncounted), moved aside where the disk lets it; where it
        does not, the event says so, and the next checkpoint replaces the file where the disk lets that.
        """
        if not self.checkpoint_path.exists():
            return False
        try:
            ck = load_checkpoint(self.checkpoint_path)
            if "job" not in ck.meta:
                raise CorruptFile(f"{self.checkpoint_path.name}: written before checkpoints named their job, so it "
                                  "cannot be shown to be this job's")
            if ck.meta["job"] != self.identity:  # which, named (a data set replaced under its name reads so)
                theirs = ck.meta["job"] if isinstance(ck.meta["job"], dict) else {}
                differ = sorted(str(k) for k in {*theirs, *self.identity} if theirs.get(k) != self.identity.get(k))
                raise CorruptFile(f"{self.checkpoint_path.name}: another job's (its data, plan or settings differ: "
                                  f"{', '.join(differ)[:120]})")
            self._load(ck)
        except OSError as exc:
            self._set_aside(f"{self.checkpoint_path.name}: cannot be read ({exc.strerror or exc or type(exc).__name__})",
                            "the job starts from step 0")
            return False
        except (CorruptFile, ValueError, KeyError, TypeError, OverflowError) as exc:  # arrays or a position that do not fit
            self._set_aside(self._refused_because(exc), "the job starts from step 0")
            return False
        self.status.resumed_from = ck.step
        # A worker restarted between this pass's SAA checkpoint and the entry takes it as taken (not twice).
        self._saa_armed = ck.meta.get("saa_armed", True) is not False
        entry = ck.meta.get("saa_entry_unix_s")
        self._saa_entry_at = float(entry) if isinstance(entry, (int, float)) and not isinstance(entry, bool) else None
        for key in _COUNTS:  # not a count a checkpoint could hold: counted from here
            value = ck.meta.get(key, 0)
            setattr(self.status, key, value if isinstance(value, int) and not isinstance(value, bool) and value >= 0
                    else 0)
        flux = ck.meta.get("worst_flux")
        if flux in {f.value for f in FluxClass}:  # else none, or written before: what comes from here on only
            self.status.worst_flux = worse_flux(self.status.worst_flux, FluxClass(flux))
        self.status.in_saa = self.status.in_saa or ck.meta.get("in_saa") is True
        self._saved_counts = {key: getattr(self.status, key) for key in _COUNTS}
        return True

    def _load(self, ck: Checkpoint) -> None:
        """Take ``ck``'s state, refusing one with a value that is not a number (``CorruptFile``, the trainer
        left as it was): a state this build writes never has one (its state check), an older build's may
        (found in review: Adam's ``v`` x 2^128 was written, and a state the check refused went back to it)."""
        bad = not_finite(ck.arrays)
        if bad is not None:
            raise CorruptFile(f"{self.checkpoint_path.name}: {bad} holds a value that is not finite")
        # The step and data position checked before the trainer takes the state (found in audit: a position that
        # did not fit left the refused checkpoint's weights in a job said to start from step 0; a negative step
        # or index was resumed, the steps run again or the next batch empty)
        epoch, index = ck.meta.get("epoch"), ck.meta.get("index")
        if not (_count(ck.step) and ck.step <= self.plan.total_steps and _count(epoch) and _count(index)
                and index <= len(self.x)):
            raise CorruptFile(f"{self.checkpoint_path.name}: step {ck.step!r}, epoch {epoch!r}, index {index!r} is no "
                              f"place in this job (steps 0 to {self.plan.total_steps}, index 0 to {len(self.x)})")
        cursor = DataCursor(len(self.x), self.plan.batch_size, self.plan.seed, epoch, index)
        self.trainer.load_state(ck.arrays)
        self.cursor = cursor
        self.status.step = self.status.last_checkpoint_step = ck.step
        # The accuracy as it was at that step (found in audit: the batches of the steps given up stayed in it, and
        # those run again were counted twice, so a job gone back said another accuracy than one that never had to)
        self._correct, self._seen = self._tally_at_checkpoint
        self.status.accuracy = self._correct / self._seen if self._seen else float("nan")
        # The loss of the step it holds: a job resumed at its end still says it (found in audit: nan), and one gone
        # back says its step's, not a loss of steps given up (found in a later audit); none kept: not known
        loss = ck.meta.get("loss")
        known = isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss)
        self.status.loss = float(loss) if known else float("nan")

    def _state_fault(self, arrays: dict[str, np.ndarray] | None = None) -> str:
        """Why the trainer's state is not one its accepted steps can have made, or empty (a trainer
        with no such check: empty)."""
        check = getattr(self.trainer, "state_fault", None)
        return check(arrays) if check is not None else ""

    def checkpoint(self) -> None:
        """Write the state; :class:`StateFaultError` (nothing written) where it is not one the steps
        accepted since the last checkpoint can have made."""
        arrays = self.trainer.state_arrays()
        fault = self._state_fault(arrays)
        if fault:
            raise StateFaultError(fault)
        moved = self.status.step != self.status.last_checkpoint_step
        counts = {key: getattr(self.status, key) for key in _COUNTS}
        meta: dict[str, Any] = {"epoch": self.cursor.epoch, "index": self.cursor.index, "seed": self.plan.seed,
                                "batch_size": self.plan.batch_size, "job": self.identity, "saa_armed": self._saa_armed,
                                "saa_entry_unix_s": self._saa_entry_at,
                                "worst_flux": self.status.worst_flux.value if self.status.worst_flux else None,
                                "in_saa": self.status.in_saa, **counts,
                                # the last step's loss: a job resumed at its end still says it (found in audit: nan)
                                "loss": self.status.loss if math.isfinite(self.status.loss) else None}
        receipt = self._receipt
        save_checkpoint(self.checkpoint_path, Checkpoint(self.status.step, arrays, meta),
                        None if receipt is None else lambda sha256: receipt(sha256, self.status))
        mark = getattr(self.trainer, "mark", None)
        if mark is not None:
            mark(arrays)  # the state written is what the next one is held to
        self.status.last_checkpoint_step = self.status.step
        self._saved_counts = counts
        self._tally_at_checkpoint = (self._correct, self._seen)
        if moved:  # a new state: going back to it is a first time (the same one rewritten with its counts is not)
            self._restored_from = None

    def _unsaved(self) -> bool:
        """Whether the file lacks this state and may take it: a step since, or counts that went up
        since (refused steps, a restore, the SAA checkpoint being counted), and no run of refusals
        open. While one is open the state in memory is suspect (a third refusal loads the file back),
        so the file keeps the last state known good; the counts reach it with the next checkpoint."""
        if self._refused_in_row:
            return False
        return self.status.last_checkpoint_step != self.status.step or \
            self._saved_counts != {key: getattr(self.status, key) for key in _COUNTS}

    def radiation_tick(self, radiation: Radiation) -> bool:
        """Checkpoint now if the SAA entry the agent predicts is within :data:`SAA_CHECKPOINT_LEAD_S`;
        once per pass. True if it did (the state was saved before this pass's entry). Every call also
        adds ``radiation`` to the environment the job ran in (``status.worst_flux``, ``status.in_saa``).

        Pure apart from the checkpoint: call it between slices with the last ``Admit.radiation``.
        Armed while no entry is near (none predicted, or further than the lead); fires on the first
        call that finds one near while still outside; then waits until the entry is no longer near,
        i.e. the pass is over (inside, ``saa_entry_in_s`` is 0), or until an entry near is another
        pass's (:data:`SAA_PASS_GAP_S`: the job was paused while the last one ended), or one whose pass
        it cannot tell (it was inside when it last looked). A checkpoint that cannot be written is tried
        again, :data:`SAA_RETRY_S` later, while the entry is still ahead. Inside already
        (a job started or resumed in the SAA), it does nothing: a checkpoint now would not be one
        from before it.
        """
        self.status.worst_flux = worse_flux(self.status.worst_flux, radiation.flux_class)
        self.status.in_saa = self.status.in_saa or radiation.in_saa
        entry_s = radiation.saa_entry_in_s
        if entry_s is None or entry_s > SAA_CHECKPOINT_LEAD_S:
            self._saa_armed = True
            return False
        entry_at, before = radiation.saa_entry_unix_s, self._saa_entry_at
        if entry_at is not None and not self._saa_armed and (before is None or abs(entry_at - before) > SAA_PASS_GAP_S):
            # Not the pass the last SAA checkpoint was for, or none is known (the job was in the SAA when
            # it last looked, or its checkpoint is older than the entry it keeps): found in review.
            self._saa_armed, self._saa_entry_at = True, None
        if not self._saa_armed or radiation.in_saa or self.done:
            self._saa_armed = False
            return False
        if self._clock() < self._saa_retry_at:
            return False  # the last try failed just now: armed still, tried again shortly
        if self._refused_in_row and self.status.last_checkpoint_step < 0:
            # Refusals open and no checkpoint yet: no state known good to keep now; armed still, so the next tick
            # takes one if they close before the entry (found in audit: a step retried once lost the pass's)
            return False
        self._saa_armed, self._saa_entry_at = False, entry_at
        self.status.saa_checkpoints += 1  # before the checkpoint, which keeps the count
        if self._unsaved() and not self._try_checkpoint("before the SAA"):
            self.status.saa_checkpoints -= 1  # not taken: not counted, and tried again in SAA_RETRY_S
            self._saa_armed, self._saa_entry_at = True, before
            self._saa_retry_at = self._clock() + SAA_RETRY_S
            return False
        # The step the file holds: this one, or (refusals open) the last one known good.
        self._event("saa_checkpoint", step=self.status.last_checkpoint_step, entry_in_s=round(entry_s, 1))
        return True

    def run(self, max_steps: int) -> int:
        """Run up to ``max_steps`` steps (fewer at the end of the plan); return how many ran."""
        ran = tried = 0
        t0 = self._clock()
        while tried < max_steps and not self.done:
            tried += 1
            position = self.cursor.position
            idx = self.cursor.next_indices()
            try:
                loss, correct = self.trainer.step(self.x[idx], self.y[idx])
            except StepRefusedError as exc:
                self._refused(exc, position, idx)
                continue
            self._refused_in_row = 0
            self._suspects = None
            self.status.step += 1
            self.status.loss = float(loss)
            self._correct += float(correct)
            self._seen += len(idx)
            ran += 1
            if self.status.step % self.plan.checkpoint_every == 0 or self.done:
                self._try_checkpoint(f"step {self.status.step}")
        elapsed = self._clock() - t0
        if ran and elapsed > 0:
            self.status.steps_per_s = ran / elapsed
        if self._seen:
            self.status.accuracy = self._correct / self._seen
        return ran

    def _refused(self, exc: StepRefusedError, position: tuple[int, int], idx: np.ndarray) -> None:
        """A step the trainer refused (its state is as before it): count it and climb the ladder, unless
        the state itself was changed in memory, which a step from it can only repeat: then go back at once
        (found in review: a weight upset that only some batches reach was skipped as bad data, and written
        into the checkpoints)."""
        self.status.steps_refused += 1
        self.status.last_refusal = exc.reason[:200]
        self._refused_in_row += 1
        self._event("step_refused", step=self.status.step + 1, reason=exc.reason, in_row=self._refused_in_row)
        fault = self._state_fault()
        if fault:
            self._go_back(fault)
            return
        if self._refused_in_row == 1:
            self.cursor.seek(*position)  # the same batch again: an upset during the step does not recur
        elif self._refused_in_row == 2:
            self._suspects = idx  # refused twice: this batch's data may be what is wrong; go on to the next
        elif self._suspects is not None and np.intersect1d(self._suspects, idx).size:
            self._suspects = np.intersect1d(self._suspects, idx)  # the same sample again: still the data
            if self._refused_in_row > 2 * REFUSALS_BEFORE_RESTORE:  # in every batch: batches near the whole set
                if self.status.last_checkpoint_step >= 0 and self._restored_from != self.status.last_checkpoint_step:
                    # The data is not shown to be at fault until the checkpoint's state is refused on it too: with
                    # batches near the whole set, a fault in the state is in every batch as well (found in review).
                    self._restore(exc)
                    return
                raise TrainingRefusedError(
                    f"{self._refused_in_row} steps refused in a row, the last: {exc.reason}; every batch holds "
                    f"sample(s) {self._suspects[:8].tolist()} of the data set (check the data set, or use smaller batches)")
        elif self._refused_in_row >= REFUSALS_BEFORE_RESTORE:
            self._restore(exc)

    def _restore(self, exc: StepRefusedError) -> None:
        ck_step = self.status.last_checkpoint_step
        why = f"{self._refused_in_row} steps refused in a row, the last: {exc.reason}"
        if ck_step < 0:
            raise TrainingRefusedError(f"{why}; no checkpoint yet to go back to (start the job again)")
        if self._restored_from == ck_step:
            raise TrainingRefusedError(
                f"{why}, again after going back to the checkpoint of step {ck_step}: the training diverges or "
                "its data is bad (lower the learning rate, or check the data set)")
        ck = self._load_again(why)
        self._restored_from = ck.step
        self._refused_in_row = 0
        self._suspects = None
        self.status.restores += 1
        self._event("restored", step=ck.step, reason=why)

    def _load_again(self, why: str) -> Checkpoint:
        """Load the last checkpoint (going back to it, for ``why``); one that cannot be loaded fails the job.
        One that fails its check is moved aside and said, as :meth:`resume` does (found in audit: it was
        deleted with the job, neither said nor counted); one the disk cannot read stays."""
        try:
            ck = load_checkpoint(self.checkpoint_path)
            self._load(ck)
        except OSError as exc_ck:
            raise TrainingRefusedError(f"{why}; the checkpoint to go back to is unreadable: {exc_ck}") from None
        except (CorruptFile, ValueError, KeyError, TypeError, OverflowError) as exc_ck:
            reason = self._refused_because(exc_ck)
            where = self._set_aside(reason, "the job fails: it was going back to it")
            raise TrainingRefusedError(f"{why}; the checkpoint to go back to is corrupt ({where}): {reason}") from None
        return ck

    def _refused_because(self, exc: Exception) -> str:
        """Why a checkpoint read whole was refused: a :class:`CorruptFile` says it; anything else is arrays
        or a position that do not fit this job."""
        return str(exc) if isinstance(exc, CorruptFile) else \
            f"{self.checkpoint_path.name}: does not fit this job ({type(exc).__name__}: {exc})"

    def _set_aside(self, reason: str, then: str) -> str:
        """Move the refused checkpoint aside where the disk lets it, and say so (``checkpoint_refused``, its
        outcome ``then``); returns where it is now (:data:`MOVED` or :data:`NOT_MOVED`)."""
        where = MOVED if quarantine(self.checkpoint_path) else NOT_MOVED
        self._event("checkpoint_refused", reason=reason, outcome=f"{where}, {then}")
        return where

    def state_checked(self) -> bool:
        """Check the state now (before its trained model is exported, say): True if it is one the steps
        accepted since the last checkpoint can have made; else go back to that checkpoint (as between
        steps) and return False. Raises :class:`TrainingRefusedError` where it cannot go back."""
        fault = self._state_fault()
        if fault:
            self._go_back(fault)
        return not fault

    def _go_back(self, fault: str) -> None:
        """The state was changed in memory between steps (``fault``): load the last checkpoint, whose
        state was checked before it was written and whose SHA-256 is checked now."""
        ck_step = self.status.last_checkpoint_step
        why = f"the state changed in memory between steps: {fault}"
        if ck_step < 0:
            raise TrainingRefusedError(f"{why}; no checkpoint yet to go back to (start the job again)")
        at, count = self._state_faults
        count = count + 1 if at == ck_step else 1
        if count > STATE_FAULTS_BEFORE_FAILING:
            raise TrainingRefusedError(f"{why}; {count} times since going back to the checkpoint of step {ck_step}")
        ck = self._load_again(why)
        self._state_faults = (ck.step, count)
        self._refused_in_row = 0
        self._suspects = None
        self.status.restores += 1
        self._event("restored", step=ck.step, reason=why)

    def pause(self, reason: str) -> None:
        """Stop here: checkpoint now, so nothing is lost whatever happens next (but a state under
        suspicion, :meth:`_unsaved`)."""
        if self._unsaved():
            self._try_checkpoint("pausing")
        self._event("paused", reason=reason, step=self.status.step)

    def _try_checkpoint(self, when: str) -> bool:
        """:meth:`checkpoint`, but a write that fails (a full or failing disk) is said
        (``checkpoint_failed``), not raised: the file keeps the last checkpoint written, whole, and
        the job goes on, losing at most the steps since it if the worker is lost (found in review: a
        pause that could not write ended the worker, and again at every restart). True if written."""
        try:
            self.checkpoint()
        except StateFaultError as exc:
            self._go_back(str(exc))  # not written: the file keeps the last state known good
            return False
        except OSError as exc:
            self.status.checkpoints_failed += 1
            self._event("checkpoint_failed", step=self.status.step,
                        reason=f"{when}: {type(exc).__name__}: {exc}")
            return False
        return True
