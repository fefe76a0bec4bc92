"""Each training step's gradient and update, checked before the update is committed (pure).

Why: an upset during a step (a flipped exponent bit in an activation, a gradient or an update,
most likely in the SAA) makes one value 2^16 to 2^128 times larger, or NaN. Committed, it
poisons the weights, or, under Adam, the second moment ``v``: a gradient of 1e20 freezes
that weight for ~10^5 steps without the update ever looking large, since Adam divides the
step by ``√v``. So the gradient and the update are both checked.

The step graph (``build_training_step(..., emit_checks=True)``) gives the squared norms of
the whole gradient and the whole update; :class:`StepGuard` judges their square roots:

- not finite (a NaN or inf anywhere, or a norm whose square overflows float32, ~1.8e19): refused;
- above :attr:`StepLimits.max_norm`: refused whatever the history (the first steps have none);
- above :attr:`StepLimits.ratio` times the largest norm of the last :attr:`StepLimits.window`
  accepted steps, once :attr:`StepLimits.min_history` steps have been accepted, and above
  :attr:`StepLimits.ever_factor` times the largest norm of any step the job accepted: refused.

The peak follows ordinary training (norms shrink as the loss falls, grow after the learning
rate is raised) and a refused step never enters it. The trainer keeps the state from before
a refused step (trainer.py), so refusing costs that step and nothing else.

Between steps the state sits in memory, where no step check sees it: :func:`state_fault` holds a
state to what the steps accepted since an anchor (the last checkpoint) can have made of it, before
it is written to a checkpoint, whenever a step is refused, and before the trained model is exported
(training_job.py).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAX_RATIO = 100.0
"""A step's gradient or update norm may be this many times the largest of the recent ones.

Measured on real data, 3e5 clean steps in all (10,000 per run, 30 runs: the digits with a
64-128-10 relu MLP and a 64-32-10 sigmoid one, the shipped cloud tiles with 1024-128-2, the
12-16-3 tanh set of tests/test_compute_jobs.py; Adam 1e-3 and 1e-2, SGD 0.01 to 0.5 with and
without momentum; batches of 1 to 64; two seeds each): the largest ratio of a clean step's
norm to the peak of the 256 accepted before it was 3.05 (plain SGD, batch 8, digits), so 100
leaves a margin of 30 (tests/test_training_radiation.py holds a short run of it).

What it catches: a flipped exponent bit multiplies one float32 value by 2^(2^k) where that
bit was 0. For a value of ordinary size (3e-5 to 2) the bits that can go up are the low
ones (x2 to x256) and the top one (x2^128, to 1e34 and beyond): the top one is always
refused. x2^16 to x2^64 happen only to values so small that they stay small, or to values
above 2, which they take past 1e5: refused wherever that raises the gradient (an input
that only saturates or silences its units leaves the gradient as it was, and passes). What passes, the low bits, moves one weight by
at most 256 of its steps (injected into every element of a real digits gradient, SGD at lr
0.1: every x2^128 refused, the largest change let through 0.2), which training absorbs.

The ratio alone held only while the norms do not fall far (found in review: runs of 150,000
steps failed near 85,000). Once Adam has fitted its data the norms fall by decades, and a clean
step on a sample it still gets wrong is then up to 387,527 times the peak of the 256 before it
(the digits, 7 runs of 150,000 steps: batches of 1, 8, 16 and 64, Adam 1e-3 and 1e-2, SGD 0.1
with and without momentum 0.9, and the synthetic set, batch 16, Adam), but never more than 4.3
times the largest norm accepted before it. So a step is refused by the ratio only when it is
also above :data:`EVER_FACTOR` times that largest (kept with the checkpoint): a step within
what training itself has taken does no harm training has not survived."""

EVER_FACTOR = 10.0
"""See :data:`MAX_RATIO`: a step is refused by the ratio only when it is also this many times the
largest norm the job has accepted. Clean training went up to 4.3 times it."""

MAX_NORM = 1e10
"""Absolute bound on either norm, the only bound before there is a history. Ordinary training
in float32 is nowhere near it (the digits and the cloud tiles: gradient norms below 25,
updates below 5), and the top exponent bit of any value above 3e-29 lands beyond it."""

WINDOW = 256
"""Accepted steps the peak is taken over. The peak, not the median: with small batches the
norm of one batch spans decades (with batch 1 on the digits, once most samples are fitted,
a step on a sample not yet fitted is 4.6e6 times the median of the 64 before it), but a
sample like it has come by within the last 256 steps (largest ratio to that peak 2.8; to the
peak of the last 64 only, 99)."""

MIN_HISTORY = 1
"""Accepted steps before the ratio applies; until then only finiteness and MAX_NORM. One: the ratio
applies from a job's second step. Why not more: a step accepted before it applies raises the peak and,
for good, the largest norm ever accepted (:data:`EVER_FACTOR`, kept with the checkpoint), so an upset
among those first steps switched the ratio off for the whole job (found in audit: with 8, a x2^20 upset at
step 3 was accepted, and the same upset at step 250 then too, Adam's ``v`` grown to 2.4e7). Measured:
over the first 16 steps of 270 clean runs (the digits with the relu and the sigmoid MLP of the sweep
above; Adam 1e-3 and 1e-2, SGD 0.01 and 0.5, SGD 0.1 with momentum 0.9; batches 1, 8 and 64; three
seeds), no step's gradient or update norm was more than 2.56 times the largest before it, against a
ratio of 100."""


@dataclass(frozen=True)
class StepLimits:
    """What a step may do; validated here only."""

    ratio: float = MAX_RATIO
    max_norm: float = MAX_NORM
    window: int = WINDOW
    min_history: int = MIN_HISTORY
    ever_factor: float = EVER_FACTOR

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ratio) and self.ratio > 1.0):
            raise ValueError(f"StepLimits.ratio must be finite and > 1, got {self.ratio!r}")
        if not (math.isfinite(self.ever_factor) and self.ever_factor >= 1.0):
            raise ValueError(f"StepLimits.ever_factor must be finite and >= 1, got {self.ever_factor!r}")
        if not (self.max_norm > 0.0):
            raise ValueError(f"StepLimits.max_norm must be > 0, got {self.max_norm!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"StepLimits.window must be an integer >= 1, got {self.window!r}")
        if isinstance(self.min_history, bool) or not isinstance(self.min_history, int) \
                or not 1 <= self.min_history <= self.window:
            raise ValueError(f"StepLimits.min_history must be an integer in [1, window={self.window}], "
                             f"got {self.min_history!r}")


DEFAULT_LIMITS = StepLimits()

STATE_KEYS = ("guard.accepted", "guard.grad_peaks", "guard.update_peaks")
""":meth:`StepGuard.state`'s arrays: the steps accepted, then for the gradient and the update the
monotonic queue of (index, norm) the peak is taken from (``[k, 2]`` float64)."""

EVER_KEY = "guard.ever_peaks"
""":meth:`StepGuard.state`'s largest (gradient, update) norms of any step accepted (``[2]`` float64).
Optional when loading: a checkpoint written before it has none, and the window's peaks stand in."""


class StepGuard:
    """Judges one step's gradient and update norms against :class:`StepLimits` and the history.

    ``verdict`` first, then ``accept`` only for a step that was committed: a refused step never
    enters the history, so it cannot raise the bar for the next one. The peak over the window
    is a monotonic queue: O(1) a step (amortised), a few hundred nanoseconds.

    >>> guard = StepGuard(StepLimits(min_history=2))
    >>> for norm in (1.0, 2.0):
    ...     guard.accept(norm, 0.01)
    >>> guard.verdict(150.0, 0.02)
    ''
    >>> guard.verdict(65536.0, 0.02)  # one value x 2^16
    'gradient norm 6.55e+04 is 3.28e+04 times the largest of the last 2 accepted steps (limit 100), 3.28e+04 times the largest of any (limit 10)'
    >>> guard.verdict(1e17, 0.02)
    'gradient norm 1e+17 above the absolute bound 1e+10'
    >>> guard.verdict(float("nan"), 0.02)
    'gradient not finite (norm nan)'
    """

    def __init__(self, limits: StepLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._accepted = 0
        # (index, norm), norms strictly decreasing: the first is the peak of the window.
        self._peaks: tuple[deque[tuple[int, float]], deque[tuple[int, float]]] = (deque(), deque())
        self.ever = [0.0, 0.0]  # the largest (gradient, update) norms of any step accepted
        # Since the anchor (:meth:`mark`: the last checkpoint, or the state loaded): steps accepted and
        # the sum of their update norms, the furthest the parameters can have moved (state_fault).
        self.since_anchor = 0
        self.travel = 0.0

    def verdict(self, grad_norm: float, update_norm: float) -> str:
        """Empty if the step may be committed, else why not (with the numbers)."""
        lim = self.limits
        grad_ref, update_ref = self.peaks
        for what, norm, ref in (("gradient", grad_norm, grad_ref), ("update", update_norm, update_ref)):
            if not math.isfinite(norm):
                return f"{what} not finite (norm {norm})"
            if norm > lim.max_norm:
                return f"{what} norm {norm:.3g} above the absolute bound {lim.max_norm:.3g}"
            # A peak of exactly 0 (nothing moved for a whole window) makes any motion look infinitely
            # large: the ratio is not applied then; finiteness and max_norm still are.
            ever = self.ever[what == "update"]
            if ref > 0.0 and norm > lim.ratio * ref and norm > lim.ever_factor * ever:
                return (f"{what} norm {norm:.3g} is {norm / ref:.3g} times the largest of the last "
                        f"{min(self._accepted, lim.window)} accepted steps (limit {lim.ratio:.4g}), "
                        f"{norm / ever:.3g} times the largest of any (limit {lim.ever_factor:.4g})")
        return ""

    def accept(self, grad_norm: float, update_norm: float) -> None:
        """Record a committed step's norms."""
        k = self._accepted
        self._accepted += 1
        oldest = k - self.limits.window  # indices up to this one have left the window
        for i, (queue, norm) in enumerate(zip(self._peaks, (grad_norm, update_norm))):
            while queue and queue[-1][1] <= norm:
                queue.pop()
            queue.append((k, norm))
            while queue[0][0] <= oldest:
                queue.popleft()
            self.ever[i] = max(self.ever[i], float(norm))
        self.since_anchor += 1
        self.travel += update_norm

    def mark(self) -> None:
        """The state as it is now is the anchor (it was checked and written, or loaded): count from here."""
        self.since_anchor, self.travel = 0, 0.0

    def reset(self) -> None:
        """Forget the history (a state from elsewhere, with none of its own, was loaded)."""
        self._accepted = 0
        for queue in self._peaks:
            queue.clear()
        self.ever = [0.0, 0.0]
        self.mark()

    def state(self) -> dict[str, np.ndarray]:
        """The history as arrays (:data:`STATE_KEYS`, :data:`EVER_KEY`), kept with the weights in a
        checkpoint: a job that goes back to one, or a worker that resumes from it, must not start with no
        history, when the ratio does not apply (:attr:`StepLimits.min_history` steps) just where upsets
        are likely."""
        return {STATE_KEYS[0]: np.asarray(self._accepted, np.int64),
                **{key: np.array(queue, np.float64).reshape(-1, 2) for key, queue in zip(STATE_KEYS[1:], self._peaks)},
                EVER_KEY: np.array(self.ever, np.float64)}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Take the history :meth:`state` gave; ``ValueError`` naming the key if it is not one it could have
        given (the guard is left as it was). The anchor is the state loaded with it."""
        accepted = np.asarray(arrays[STATE_KEYS[0]])
        if accepted.shape != () or accepted.dtype.kind not in "iu" or int(accepted) < 0:
            raise ValueError(f"{STATE_KEYS[0]} must be an integer >= 0, got {accepted!r}")
        n = int(accepted)
        queues = []
        for key in STATE_KEYS[1:]:
            q = np.asarray(arrays[key], np.float64)
            idx = q[:, 0] if q.ndim == 2 and q.shape[1] == 2 else np.zeros(0)
            if q.ndim != 2 or q.shape[1] != 2 or (n and not 1 <= len(q) <= self.limits.window) or (not n and len(q)) \
                    or not np.isfinite(q).all() or (q[:, 1] < 0).any() or (idx != np.round(idx)).any() \
                    or (len(q) and not (n - self.limits.window <= idx[0] and idx[-1] == n - 1)) \
                    or (np.diff(idx) <= 0).any() or (np.diff(q[:, 1]) >= 0).any():
                raise ValueError(f"{key} is not a window of accepted norms (of {n} steps)")
            queues.append(deque((int(i), float(v)) for i, v in q))
        window = [q[0][1] if q else 0.0 for q in queues]
        if EVER_KEY in arrays:
            given = np.asarray(arrays[EVER_KEY])
            ever = given.astype(np.float64) if given.dtype.kind == "f" else np.full(2, np.nan)
            if ever.shape != (2,) or not np.isfinite(ever).all() or (ever < np.array(window)).any() \
                    or (ever > self.limits.max_norm).any() or (not n and ever.any()):
                # Above max_norm no step was accepted (found in review: 1e300 switched the ratio off)
                raise ValueError(f"{EVER_KEY} must be the 2 largest norms accepted, floats from the window's peaks "
                                 f"{window} to {self.limits.max_norm:g} (0 with none accepted), got {arrays[EVER_KEY]!r}")
        else:  # written before it was kept: what the window shows
            ever = np.array(window)
        self._accepted = n
        self._peaks = (queues[0], queues[1])
        self.ever = [float(ever[0]), float(ever[1])]
        self.mark()

    @property
    def peaks(self) -> tuple[float, float]:
        """(gradient, update) peaks the ratio is taken against; NaN before ``min_history`` accepted steps."""
        if self._accepted < self.limits.min_history:
            return (math.nan, math.nan)
        return (self._peaks[0][0][1], self._peaks[1][0][1])


# -- the state between steps ---------------------------------------------------------------------


def not_finite(arrays: Mapping[str, np.ndarray]) -> str | None:
    """The name of the first floating-point array of ``arrays`` holding a NaN or an infinity, else None."""
    return next((name for name, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()), None)

ROUNDING = 2.0 ** -22
"""Per step, what float32 rounding may add to a bound, relative to it: a parameter's ``w - step``
and a moment's convex combination each round by at most half an ulp (2^-24), doubled twice over."""


@dataclass(frozen=True)
class Anchor:
    """What a checked state was (the last checkpoint written, or the state loaded): its parameters,
    their norm, the largest magnitude of each optimizer-state array, and Adam's step count."""

    params: dict[str, np.ndarray]
    norm: float
    largest: dict[str, float]
    adam_t: int | None


def anchor_of(arrays: Mapping[str, np.ndarray], params: tuple[str, ...], moments: tuple[str, ...],
              adam_t: str | None) -> Anchor:
    """The :class:`Anchor` of ``arrays`` (copies of the parameters; ``moments``: the optimizer's float state)."""
    kept = {n: np.array(arrays[n], copy=True) for n in params}
    norm = math.sqrt(sum(float(np.square(a, dtype=np.float64).sum()) for a in kept.values()))
    largest = {n: float(np.abs(arrays[n]).max(initial=0.0)) for n in moments}
    return Anchor(kept, norm, largest, int(arrays[adam_t]) if adam_t else None)


def state_fault(arrays: Mapping[str, np.ndarray], anchor: Anchor, guard: StepGuard, momentum: float | None,
                adam_t: str | None) -> str:
    """Empty if ``arrays`` (the trainer's state now) is one the steps ``guard`` accepted since ``anchor``
    can have made; else what is not, with the numbers: an upset in memory between two steps.

    Pure. What the accepted steps allow, from the update rules (training/graph.py) and the norms the
    guard recorded, each widened for float32 rounding:

    - the parameters moved by at most the sum of the update norms since the anchor (the triangle
      inequality), plus rounding;
    - Adam's ``m`` is a running convex combination of gradients: no element above the larger of the
      anchor's largest and the largest gradient norm accepted (an element of a gradient is at most
      its norm); ``v`` likewise of squared gradients, and never negative; SGD's velocity ``μ v + g``
      stays within the larger of the anchor's largest and that norm over ``1 - μ``;
    - every value finite, and Adam's ``t`` the anchor's plus the steps accepted.

    An upset that moves a value less than training itself moves it (the low bits of an exponent, a
    mantissa bit) passes: training absorbs it (:data:`MAX_RATIO`). ``momentum``: SGD's (``None``
    for Adam; 0 for plain SGD, which has no velocity)."""
    steps = guard.since_anchor
    slack = 1.0 + 1e-5 + steps * ROUNDING
    bad = not_finite(arrays)
    if bad is not None:
        return f"{bad} is not finite in memory between steps"
    drift2 = sum(float(np.square(np.asarray(arrays[n], np.float64) - ref).sum()) for n, ref in anchor.params.items())
    drift = math.sqrt(drift2)
    allowed = 1.01 * guard.travel + steps * ROUNDING * (anchor.norm + guard.travel) + 1e-30
    if drift > allowed:
        return (f"the parameters moved {drift:.3g} from the last checkpoint's, where the {steps} steps accepted "
                f"since can move them {allowed:.3g} at most")
    grad = guard.ever[0]
    for name, before in anchor.largest.items():
        a = arrays[name]
        if name.endswith(".adam_v"):
            bound = max(before, grad * grad) * slack
            if (a < 0).any():
                return f"{name} has a negative element in memory between steps"
        elif name.endswith(".velocity"):
            bound = max(before, grad / (1.0 - momentum) if momentum is not None and momentum < 1.0 else math.inf) * slack
        else:
            bound = max(before, grad) * slack
        largest = float(np.abs(a).max(initial=0.0))
        if largest > bound:
            return f"{name} holds {largest:.3g} in memory between steps, where the steps accepted allow {bound:.3g}"
    if adam_t is not None and anchor.adam_t is not None and int(arrays[adam_t]) != anchor.adam_t + steps:
        return (f"{adam_t} is {int(arrays[adam_t])} in memory between steps, where the checkpoint's "
                f"{anchor.adam_t} and {steps} steps accepted make {anchor.adam_t + steps}")
    return ""
