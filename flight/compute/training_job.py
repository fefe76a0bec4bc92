"""A training job that can be paused, killed and resumed exactly.

Exactly means: the same weights, the same optimizer state and the same data position as a
run that never stopped. The data order is a pure function of (seed, epoch) — a fresh
permutation per epoch — so a checkpoint only has to store the epoch and the index within
it. A checkpoint is written every ``checkpoint_every`` steps and on every pause; a kill
loses at most the steps since the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from flight.compute.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from flight.storage import CorruptFile, quarantine


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
        if self.total_steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("total_steps, batch_size and checkpoint_every must be at least 1")


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


@dataclass
class TrainingStatus:
    step: int = 0
    loss: float = float("nan")
    accuracy: float = float("nan")  # over the batches since the last status read-out
    steps_per_s: float = 0.0
    last_checkpoint_step: int = -1
    resumed_from: int | None = None


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
    ):
        self.trainer, self.x, self.y, self.plan = trainer, x, y, plan
        self.checkpoint_path = Path(checkpoint_path)
        self.cursor = DataCursor(len(x), plan.batch_size, plan.seed)
        self.status = TrainingStatus()
        self._event = on_event or (lambda *a, **k: None)
        self._clock = clock
        self._correct = 0.0
        self._seen = 0

    @property
    def done(self) -> bool:
        return self.status.step >= self.plan.total_steps

    def resume(self) -> bool:
        """Load the last checkpoint if there is one; True if the job continues from it.

        A checkpoint that fails its check is moved aside and the job starts over: wrong
        weights are worse than lost steps.
        """
        if not self.checkpoint_path.exists():
            return False
        try:
            ck = load_checkpoint(self.checkpoint_path)
        except CorruptFile as exc:
            quarantine(self.checkpoint_path)
            self._event("checkpoint_corrupt", reason=str(exc))
            return False
        self.trainer.load_state(ck.arrays)
        self.cursor = DataCursor(len(self.x), self.plan.batch_size, self.plan.seed,
                                 int(ck.meta["epoch"]), int(ck.meta["index"]))
        self.status.step = self.status.last_checkpoint_step = ck.step
        self.status.resumed_from = ck.step
        return True

    def checkpoint(self) -> None:
        meta: dict[str, Any] = {"epoch": self.cursor.epoch, "index": self.cursor.index, "seed": self.plan.seed,
                                "batch_size": self.plan.batch_size}
        save_checkpoint(self.checkpoint_path, Checkpoint(self.status.step, self.trainer.state_arrays(), meta))
        self.status.last_checkpoint_step = self.status.step

    def run(self, max_steps: int) -> int:
        """Run up to ``max_steps`` steps (fewer at the end of the plan); return how many ran."""
        ran = 0
        t0 = self._clock()
        while ran < max_steps and not self.done:
            idx = self.cursor.next_indices()
            loss, correct = self.trainer.step(self.x[idx], self.y[idx])
            self.status.step += 1
            self.status.loss = float(loss)
            self._correct += float(correct)
            self._seen += len(idx)
            ran += 1
            if self.status.step % self.plan.checkpoint_every == 0 or self.done:
                self.checkpoint()
        elapsed = self._clock() - t0
        if ran and elapsed > 0:
            self.status.steps_per_s = ran / elapsed
        if self._seen:
            self.status.accuracy = self._correct / self._seen
        return ran

    def pause(self, reason: str) -> None:
        """Stop here: checkpoint now, so nothing is lost whatever happens next."""
        if self.status.last_checkpoint_step != self.status.step:
            self.checkpoint()
        self._event("paused", reason=reason, step=self.status.step)
