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
  accepted steps, once :attr:`StepLimits.min_history` steps have been accepted: refused.

The peak follows ordinary training (norms shrink as the loss falls, grow after the learning
rate is raised) and a refused step never enters it. The trainer keeps the state from before
a refused step (trainer.py), so refusing costs that step and nothing else.
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
0.1: every x2^128 refused, the largest change let through 0.2), which training absorbs."""

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

MIN_HISTORY = 8
"""Accepted steps before the ratio applies; until then only finiteness and MAX_NORM."""


@dataclass(frozen=True)
class StepLimits:
    """What a step may do; validated here only."""

    ratio: float = MAX_RATIO
    max_norm: float = MAX_NORM
    window: int = WINDOW
    min_history: int = MIN_HISTORY

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ratio) and self.ratio > 1.0):
            raise ValueError(f"StepLimits.ratio must be finite and > 1, got {self.ratio!r}")
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
    'gradient norm 6.55e+04 is 3.28e+04 times the largest of the last 2 accepted steps (limit 100)'
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
            if ref > 0.0 and norm > lim.ratio * ref:
                return (f"{what} norm {norm:.3g} is {norm / ref:.3g} times the largest of the last "
                        f"{min(self._accepted, lim.window)} accepted steps (limit {lim.ratio:.4g})")
        return ""

    def accept(self, grad_norm: float, update_norm: float) -> None:
        """Record a committed step's norms."""
        k = self._accepted
        self._accepted += 1
        oldest = k - self.limits.window  # indices up to this one have left the window
        for queue, norm in zip(self._peaks, (grad_norm, update_norm)):
            while queue and queue[-1][1] <= norm:
                queue.pop()
            queue.append((k, norm))
            while queue[0][0] <= oldest:
                queue.popleft()

    def reset(self) -> None:
        """Forget the history (a state from elsewhere, with none of its own, was loaded)."""
        self._accepted = 0
        for queue in self._peaks:
            queue.clear()

    def state(self) -> dict[str, np.ndarray]:
        """The history as arrays (:data:`STATE_KEYS`), kept with the weights in a checkpoint: a job that
        goes back to one, or a worker that resumes from it, must not start with no history, when the
        ratio does not apply (:attr:`StepLimits.min_history` steps) just where upsets are likely."""
        return {STATE_KEYS[0]: np.asarray(self._accepted, np.int64),
                **{key: np.array(queue, np.float64).reshape(-1, 2) for key, queue in zip(STATE_KEYS[1:], self._peaks)}}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Take the history :meth:`state` gave; ``ValueError`` naming the key if it is not one it could have
        given (the guard is left as it was)."""
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
        self._accepted = n
        self._peaks = (queues[0], queues[1])

    @property
    def peaks(self) -> tuple[float, float]:
        """(gradient, update) peaks the ratio is taken against; NaN before ``min_history`` accepted steps."""
        if self._accepted < self.limits.min_history:
            return (math.nan, math.nan)
        return (self._peaks[0][0][1], self._peaks[1][0][1])
