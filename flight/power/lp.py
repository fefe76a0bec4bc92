"""The energy linear program shared by the agent's planner and the harness's oracle (pure).

Maximise the work of a schedule of power modes over a solar and load profile, within the
battery's floor and capacity, an optional per-step cap on the board's power, and a minimum
energy at the end. ``hil/oracle.py`` explains the formulation and why it is the true optimum
of the battery model (its points 1-5); :mod:`flight.power.planner` solves it over the next
orbit or two with the agent's forecast, :mod:`hil.oracle` over a whole day with the truth.
Column layout: x[k, m] at k*M + m (the fraction of step k loaded in mode m), then charge
c[k], discharge d[k], spill[k], and the energy E[0..N].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class BatterySpec:
    """The battery as the LP sees it; the conventions of ``flight.power.policy.Battery``."""

    capacity_wh: float
    initial_soc_pct: float
    floor_pct: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95

    def __post_init__(self) -> None:
        if not self.capacity_wh > 0:
            raise ValueError(f"capacity_wh: must be > 0 Wh, got {self.capacity_wh}")
        for key in ("charge_efficiency", "discharge_efficiency"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ValueError(f"{key}: must be within (0, 1], got {getattr(self, key)}")
        if not 0.0 <= self.floor_pct <= 100.0:
            raise ValueError(f"floor_pct: must be within [0, 100] %, got {self.floor_pct}")
        if not self.floor_pct <= self.initial_soc_pct <= 100.0:
            raise ValueError(
                f"initial_soc_pct: must be within [floor_pct {self.floor_pct}, 100] %, got {self.initial_soc_pct}"
            )


@dataclass(frozen=True)
class ComputeMode:
    """A board power mode: power idle and loaded, and work per second when loaded (0 idle)."""

    name: str
    idle_power_w: float
    loaded_power_w: float
    throughput_per_s: float  # work units (e.g. tiles) per second, loaded

    def __post_init__(self) -> None:
        if not 0.0 <= self.idle_power_w <= self.loaded_power_w:
            raise ValueError(
                f"{self.name}: need 0 ≤ idle_power_w ≤ loaded_power_w, got {self.idle_power_w} W "
                f"and {self.loaded_power_w} W"
            )
        if not self.throughput_per_s >= 0.0:
            raise ValueError(f"{self.name}: throughput_per_s must be ≥ 0, got {self.throughput_per_s}")

    @classmethod
    def from_profile(cls, mode: Any, work_per_s_at_maxn: float) -> ComputeMode:
        """From a board profile's mode (``flight.hal.boards.ModeProfile``): throughput is
        ``inference_rel_maxn`` × ``work_per_s_at_maxn``, as the HIL loop models it."""
        return cls(mode.name, mode.idle_power_w, mode.loaded_power_w, mode.inference_rel_maxn * work_per_s_at_maxn)



def stored_power_w(net_power_w, charge_efficiency: float, discharge_efficiency: float) -> np.ndarray:
    """What a net power does to the stored energy (W): a surplus goes in at the charge
    efficiency, a deficit comes out divided by the discharge efficiency.

    >>> stored_power_w([10.0, -9.0], 0.5, 0.9).tolist()
    [5.0, -10.0]
    """
    net = np.asarray(net_power_w, dtype=float)
    return np.where(net >= 0, net * charge_efficiency, net / discharge_efficiency)


def simulate_energy_wh(net_power_w: ArrayLike, dt_s: float, battery: BatterySpec) -> np.ndarray:
    """Stored energy (Wh) at the N+1 step boundaries for a net power (solar − all loads) per
    step, with the agent's battery model: saturating at full, held at empty.

    >>> bat = BatterySpec(capacity_wh=10.0, initial_soc_pct=50.0, floor_pct=0.0, charge_efficiency=0.5)
    >>> simulate_energy_wh([4.0, 20.0, -10.0], 3600.0, bat)   # +2 Wh, saturates, −10.5 Wh: empty
    array([ 5.,  7., 10.,  0.])
    """
    gain = stored_power_w(net_power_w, battery.charge_efficiency, battery.discharge_efficiency) * (dt_s / 3600.0)
    energy = np.empty(gain.size + 1)
    energy[0] = battery.initial_soc_pct / 100.0 * battery.capacity_wh
    e = energy[0]
    for k, g in enumerate(gain.tolist()):  # saturation makes this a scan, not a cumsum
        e = min(battery.capacity_wh, max(0.0, e + g))
        energy[k + 1] = e
    return energy


@dataclass(frozen=True)
class ThermalRows:
    """A board-temperature limit for the LP: T[k+1] = a1·T[k] + a2·T[k-1] + b1·P[k] +
    b2·P[k-1] + c·sun[k] + d (``flight.thermal.model``) with P the board's power in step k,
    T[0] = ``t_now_c``, T[-1] = ``t_prev_c``, P[-1] = ``p_prev_w``; T[k+1] ≤ ``t_max_c[k]``."""

    coefficients: tuple[float, float, float, float, float, float]
    t_now_c: float
    t_prev_c: float
    p_prev_w: float
    sun: np.ndarray
    t_max_c: np.ndarray


@dataclass(frozen=True)
class EnergyLp:
    """The LP in linprog's form, and where each variable block starts (columns)."""

    c: np.ndarray
    a_ub: sp.csr_array | None
    b_ub: np.ndarray | None
    a_eq: sp.csr_array
    b_eq: np.ndarray
    bounds: np.ndarray  # (n_variables, 2)
    n: int
    m: int

    # Column layout: x[k, m] at k*M + m, then c[k], d[k], spill[k], E[0..N].
    @property
    def col_c(self) -> int:
        return self.n * self.m

    @property
    def col_d(self) -> int:
        return self.n * self.m + self.n

    @property
    def col_spill(self) -> int:
        return self.n * self.m + 2 * self.n

    @property
    def col_e(self) -> int:
        return self.n * self.m + 3 * self.n

    @property
    def col_t(self) -> int:
        """T[1..N] when the LP has a thermal limit (the predicted board temperature)."""
        return self.n * self.m + 4 * self.n + 1


def build_energy_lp(solar: np.ndarray, platform: np.ndarray, dt_s: float, battery: BatterySpec,
              modes: Sequence[ComputeMode], cap: np.ndarray | None, final_wh: float,
              final_value_per_wh: float = 0.0, thermal: ThermalRows | None = None) -> EnergyLp:
    """The LP (see the module doc). ``final_value_per_wh``: what each stored Wh left at the
    horizon's end is worth, in work units (throughput × s) per Wh: 0 for the oracle, whose
    horizon is the whole profile; the planner's terminal value (``flight.power.planner``)."""
    n, m = solar.size, len(modes)
    idle_w = min(md.idle_power_w for md in modes)
    extra_w = np.array([md.loaded_power_w - idle_w for md in modes])  # ≥ 0: loaded ≥ idle_m ≥ idle_0
    thr = np.array([md.throughput_per_s for md in modes])
    h = dt_s / 3600.0
    n_var = n * m + 3 * n + (n + 1) + (n if thermal is not None else 0)
    k = np.arange(n)
    col_x = (k[:, None] * m + np.arange(m)[None, :])  # (n, m)
    col_c, col_d, col_s, col_e = n * m, n * m + n, n * m + 2 * n, n * m + 3 * n

    # Equalities: balance rows 0..n-1, battery rows n..2n-1.
    rows = [np.repeat(k, m), k, k, k,
            n + k, n + k, n + k, n + k]
    cols = [col_x.ravel(), col_c + k, col_d + k, col_s + k,
            col_e + k + 1, col_e + k, col_c + k, col_d + k]
    vals = [np.tile(extra_w, n), np.ones(n), -np.ones(n), np.ones(n),
            np.ones(n), -np.ones(n), np.full(n, -h * battery.charge_efficiency),
            np.full(n, h / battery.discharge_efficiency)]
    b_eq = [solar - platform - idle_w, np.zeros(n)]
    n_eq = 2 * n
    if thermal is not None:
        t_rows, t_rhs = _thermal_rows(thermal, n, m, col_x, n * m + 4 * n + 1, extra_w, idle_w)
        rows.append(t_rows[0] + n_eq)
        cols.append(t_rows[1])
        vals.append(t_rows[2])
        b_eq.append(t_rhs)
        n_eq += n
    a_eq = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n_eq, n_var)).tocsr()
    b_eq = np.concatenate(b_eq)

    # Inequalities: Σ_m x ≤ 1, then the thermal cap on the board's power above idle_0.
    ub_rows, ub_cols, ub_vals, b_ub = [np.repeat(k, m)], [col_x.ravel()], [np.ones(n * m)], [np.ones(n)]
    if cap is not None:
        ub_rows.append(n + np.repeat(k, m))
        ub_cols.append(col_x.ravel())
        ub_vals.append(np.tile(extra_w, n))
        b_ub.append(cap - idle_w)
    n_ub = n * (2 if cap is not None else 1)
    a_ub = sp.coo_array((np.concatenate(ub_vals), (np.concatenate(ub_rows), np.concatenate(ub_cols))),
                        shape=(n_ub, n_var)).tocsr()

    full = battery.capacity_wh
    bounds = np.empty((n_var, 2))
    bounds[: n * m] = (0.0, 1.0)
    bounds[n * m: col_e] = (0.0, np.inf)
    bounds[col_e: col_e + n + 1] = (battery.floor_pct / 100.0 * full, full)
    if thermal is not None:
        bounds[col_e + n + 1:, 0] = -np.inf
        bounds[col_e + n + 1:, 1] = thermal.t_max_c
    e0 = battery.initial_soc_pct / 100.0 * full
    bounds[col_e] = (e0, e0)
    bounds[col_e + n, 0] = max(bounds[col_e + n, 0], min(final_wh, full))

    # Objective scaled to the fastest mode (HiGHS prefers costs of order 1); the work itself
    # is recomputed from x in physical units afterwards.
    top = thr.max() if thr.max() > 0 else 1.0
    cost = np.zeros(n_var)
    cost[: n * m] = -np.tile(thr / top, n)
    cost[col_e + n] = -final_value_per_wh / (top * dt_s)  # x's unit of work is top · dt_s
    return EnergyLp(cost, a_ub, np.concatenate(b_ub), a_eq, b_eq, bounds, n, m)


def _thermal_rows(th: ThermalRows, n: int, m: int, col_x: np.ndarray, col_t: int, extra_w: np.ndarray,
                  idle_w: float) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Row k: T[k+1] − a1·T[k] − a2·T[k-1] − b1·ΣxP[k] − b2·ΣxP[k-1] = the known rest; T[0],
    T[-1] and P[-1] are data, P[k] = idle + Σ_m x[k,m]·extra_m."""
    a1, a2, b1, b2, c, d = th.coefficients
    k = np.arange(n)
    rows, cols, vals = [k], [col_t + k], [np.ones(n)]
    rows.append(k[1:])
    cols.append(col_t + k[1:] - 1)
    vals.append(np.full(n - 1, -a1))
    rows.append(k[2:])
    cols.append(col_t + k[2:] - 2)
    vals.append(np.full(max(0, n - 2), -a2))
    rows.append(np.repeat(k, m))
    cols.append(col_x.ravel())
    vals.append(np.tile(-b1 * extra_w, n))
    rows.append(np.repeat(k[1:], m))
    cols.append(col_x[:-1].ravel())
    vals.append(np.tile(-b2 * extra_w, n - 1))
    rhs = c * np.asarray(th.sun, dtype=float)[:n] + d + b1 * idle_w + np.where(k >= 1, b2 * idle_w, b2 * th.p_prev_w)
    rhs[0] += a1 * th.t_now_c + a2 * th.t_prev_c
    if n > 1:
        rhs[1] += a2 * th.t_now_c
    return (np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)), rhs
