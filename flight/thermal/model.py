"""The board's temperature as the plan sees it: a second-order linear model the agent learns
from its own readings (pure).

The board heats its radiator through a conductance and the radiator sheds heat to space and
takes it from the Sun (``hil/physics/thermal.py`` is the harness's truth: two nodes, a T⁴
radiator). Linearised about where it flies, two coupled first-order nodes sampled every
``period_s`` with the inputs held over each sample are exactly a second-order difference
equation in the board temperature alone (an ARX(2) model)::

    T[k+1] = a1·T[k] + a2·T[k-1] + b1·P[k] + b2·P[k-1] + c·sun[k] + d

with P the board's mean power over sample k and sun the mean shadow factor (1 in full Sun).
The radiator, which the agent cannot read, lives in the second lag. The agent fits the six
coefficients by recursive least squares with forgetting (the orbit, the season and the
radiator's ageing move them), from the hottest zone it reads, the board power it reads and
the shadow it predicts. Until the fit has seen enough and is physical (stable, hotter with
more power) the plan has no thermal limit and the governor alone protects the board, as
before. The fit's residual is the plan's thermal margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

N_COEF = 6
FORGET = 0.998  # per sample: at 120-s samples, evidence halves in about 11 h
MIN_SAMPLES = 45  # 90 min at 120 s: about an orbit of Sun and shadow before the fit is trusted
WARMUP_SAMPLES = 12  # six unknowns: twice that before its errors are the model's
MAX_RMS_C = 3.0  # a fit worse than this one-step error is not used
MAX_COV_TRACE = 6e4  # the starting uncertainty: forgetting never makes it less sure than at the start


@dataclass(frozen=True)
class ThermalFit:
    """Recursive least squares over (T[k], T[k-1], P[k], P[k-1], sun[k], 1) → T[k+1]."""

    theta: tuple[float, ...] = (0.0,) * N_COEF
    cov: tuple[float, ...] = tuple((np.eye(N_COEF) * 1e4).ravel().tolist())
    samples: int = 0
    sq_error: float = 0.0  # exponentially weighted mean squared one-step error (prior, °C²)

    def update(self, t_now_c: float, t_prev_c: float, p_now_w: float, p_prev_w: float, sun: float,
               t_next_c: float) -> ThermalFit:
        """One sample (pure: a new record); non-finite input is ignored."""
        phi = np.array([t_now_c, t_prev_c, p_now_w, p_prev_w, sun, 1.0])
        if not (np.all(np.isfinite(phi)) and math.isfinite(t_next_c)):
            return self
        theta = np.array(self.theta)
        cov = np.array(self.cov).reshape(N_COEF, N_COEF)
        error = t_next_c - float(phi @ theta)
        gain = cov @ phi / (FORGET + float(phi @ cov @ phi))
        theta = theta + gain * error
        cov = (cov - np.outer(gain, phi @ cov)) / FORGET
        cov = (cov + cov.T) / 2.0
        trace = float(np.trace(cov))
        if trace > MAX_COV_TRACE:  # inputs that stopped varying: forgetting would blow it up (wind-up)
            cov *= MAX_COV_TRACE / trace
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(cov))):
            return ThermalFit()  # numerically lost: start again rather than plan on garbage
        # The error is counted once the fit has settled (the first samples' errors are the
        # empty fit's, not the model's); an average over the first, then exponentially weighted.
        settled = self.samples - WARMUP_SAMPLES
        sq_error = self.sq_error
        if settled >= 0:
            w = max(0.05, 1.0 / (settled + 1))
            sq_error = (1.0 - w) * sq_error + w * error * error
        return replace(self, theta=tuple(theta.tolist()), cov=tuple(cov.ravel().tolist()), samples=self.samples + 1,
                       sq_error=sq_error)

    @property
    def rms_c(self) -> float:
        return math.sqrt(self.sq_error)

    @property
    def usable(self) -> bool:
        """Seen enough, predicts well, and physical: stable, and more power makes it hotter."""
        a1, a2, b1, b2, _c, _d = self.theta
        roots = np.roots([1.0, -a1, -a2])
        return (self.samples >= MIN_SAMPLES and self.rms_c <= MAX_RMS_C and bool(np.all(np.abs(roots) < 0.999))
                and b1 + b2 > 0.0)

    def predict_c(self, t_now_c: float, t_prev_c: float, p_prev_w: float, power_w, sun) -> np.ndarray:
        """Temperatures at the end of each sample for a power and a sun per sample (N values).

        >>> fit = ThermalFit(theta=(0.5, 0.0, 1.0, 0.0, 0.0, 10.0))
        >>> fit.predict_c(40.0, 40.0, 0.0, [10.0, 10.0], [1.0, 1.0]).tolist()
        [40.0, 40.0]
        """
        a1, a2, b1, b2, c, d = self.theta
        power = np.asarray(power_w, dtype=float)
        sun = np.asarray(sun, dtype=float)
        out = np.empty(power.size)
        t1, t0, p0 = t_now_c, t_prev_c, p_prev_w
        for k in range(power.size):
            t_next = a1 * t1 + a2 * t0 + b1 * power[k] + b2 * p0 + c * sun[k] + d
            out[k] = t_next
            t0, t1, p0 = t1, t_next, power[k]
        return out


OPEN_LOOP_STEPS = 15  # 30 min at 120 s: how far ahead the plan's margin is measured


def open_loop_error_c(fit: ThermalFit, history, t_now_c: float) -> float | None:
    """How far the model, run open loop from ``len(history) - 1`` samples ago on the powers
    and sun that then came, misses the temperature now: the error a plan's prediction that
    far ahead carries (the one-step error understates it many times). ``history``: (T at the
    sample's start, its mean power, its mean sun), oldest first, the last ending now.

    >>> open_loop_error_c(ThermalFit(theta=(0.5, 0.0, 1.0, 0.0, 0.0, 0.0)), [(0.0, 0.0, 1.0), (0.0, 4.0, 1.0)], 5.0)
    1.0
    """
    if len(history) < 2:
        return None
    (t_before, p_before, _), (t_start, _, _) = history[0], history[1]
    ahead = fit.predict_c(t_start, t_before, p_before, [h[1] for h in history[1:]], [h[2] for h in history[1:]])
    return float(t_now_c - ahead[-1])


@dataclass(frozen=True)
class ThermalPlanInputs:
    """What the plan needs for its thermal limit: the fit, the last two samples' temperatures
    and the last sample's power, the sun per plan step, and the limit with its margin."""

    fit: ThermalFit
    t_now_c: float
    t_prev_c: float
    p_prev_w: float
    sun: tuple[float, ...]
    limit_c: float
