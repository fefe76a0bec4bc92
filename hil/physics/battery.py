"""The spacecraft battery: energy bookkeeping with charge/discharge efficiencies, clamped at full and empty.

Energy balance (the NOS3 EPS and Basilisk battery models, FACTS.md "Orbits, power,
thermal"; the same rule as the agent's ``flight.power.policy``): the arrays feed the loads
directly and only the net power P = P_solar − P_loads goes through the battery. Over a
step of dt seconds, with E = P·dt/3600 Wh on the bus side,

- P > 0: the bus offers E; the battery takes ``charged_wh`` ≤ E of it and stores
  η_c·charged_wh. What does not fit once it is full is ``clipped_wh``: solar power that
  was there but had nowhere to go (the array is shunted, or its tracker backs off the
  maximum power point). The arrays then deliver only what the bus takes:
  :func:`delivered_solar_w`, which is what an EPS's telemetry of its solar input reads.
- P < 0: the bus asks for |E|; the battery delivers ``discharged_wh`` ≤ |E| of it and
  loses discharged_wh/η_d from storage. What it cannot deliver once empty is
  ``unserved_wh``: a brownout, the loads did not get their power.

So, at every step and summed over any run, exactly (to float rounding)::

    stored_end − stored_start = η_c · Σ charged_wh − Σ discharged_wh / η_d
    Σ charged_wh + Σ clipped_wh  = Σ E⁺        (energy offered)
    Σ discharged_wh + Σ unserved_wh = Σ |E⁻|   (energy asked for)

:meth:`Battery.step` asserts the first at every step; tests/test_hil_physics.py sums it
over a simulated day.

Voltage: the open-circuit voltage of a 2S Li-ion pack from the state of charge, with the
shape of Chen & Rincón-Mora's fitted OCV curve for a Li-ion cell (M. Chen and G. A.
Rincón-Mora, "Accurate electrical battery model capable of predicting runtime and I–V
performance", IEEE Trans. Energy Conversion 21(2), 2006, eq. for V_OC(SOC))::

    V_cell(s) = −1.031·e^(−35 s) + 3.685 + 0.2156 s − 0.1178 s² + 0.3201 s³      (s = SOC, 0..1)

a steep knee below ~10 %, a gentle plateau, a rise to full. The pack voltage is that
shape scaled so it reads ``voltage_empty_v`` at 0 % and ``voltage_full_v`` at 100 %
(2 × 3.0 V and 2 × 4.2 V by default). The scaling keeps the shape, not the absolute
plateau: 7.90 V at 50 % (3.95 V a cell, where a typical NMC cell reads ~3.7 V) and
7.69 V already at 10 %. Good enough for a bus-voltage telemetry channel; nothing in the
agent decides on this voltage (it uses the state of charge), and a measured table for
the real cells should replace it when there is one. No internal resistance: the terminal voltage
under load is not modelled (a sag of ~0.1 V at 2 A for a small pack; not what the agent
decides on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

SECONDS_PER_HOUR = 3600.0


def _ocv_shape(soc_frac):
    """Chen & Rincón-Mora (2006) cell OCV, V, for SOC in 0..1 (see module doc)."""
    s = np.asarray(soc_frac, dtype=float)
    return -1.031 * np.exp(-35.0 * s) + 3.685 + 0.2156 * s - 0.1178 * s**2 + 0.3201 * s**3


_OCV_0 = float(_ocv_shape(0.0))
_OCV_1 = float(_ocv_shape(1.0))


@dataclass(frozen=True)
class BatteryParams:
    """A battery pack. Validated here, once; every field has its unit in its name.

    Defaults: a 2S Li-ion pack (two cells in series: 6.0 V empty, 8.4 V full, 2 × 3.0 /
    4.2 V per cell) with 95 % charge and discharge efficiency (round trip 90 %, typical of
    Li-ion at low rates; estimate). ``capacity_wh`` has no default: size it for the mission
    (the HIL scenarios use 60 Wh).
    """

    capacity_wh: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    voltage_empty_v: float = 6.0
    voltage_full_v: float = 8.4

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"BatteryParams.{f.name} must be a finite number, got {value!r}")
        if not self.capacity_wh > 0.0:
            raise ValueError(f"BatteryParams.capacity_wh must be > 0, got {self.capacity_wh}")
        for name in ("charge_efficiency", "discharge_efficiency"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"BatteryParams.{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 < self.voltage_empty_v < self.voltage_full_v:
            raise ValueError(
                f"BatteryParams needs 0 < voltage_empty_v < voltage_full_v, got {self.voltage_empty_v} "
                f"and {self.voltage_full_v}"
            )

    def open_circuit_voltage_v(self, soc_pct):
        """Pack open-circuit voltage at ``soc_pct`` (0..100), V (module doc: shape and source).

        >>> p = BatteryParams(capacity_wh=60.0)
        >>> [round(float(p.open_circuit_voltage_v(s)), 3) for s in (0, 10, 50, 100)]
        [6.0, 7.69, 7.904, 8.4]
        """
        shape = (_ocv_shape(np.clip(np.asarray(soc_pct, dtype=float), 0.0, 100.0) / 100.0) - _OCV_0) / (_OCV_1 - _OCV_0)
        return self.voltage_empty_v + (self.voltage_full_v - self.voltage_empty_v) * shape


@dataclass(frozen=True)
class BatteryStep:
    """What one :meth:`Battery.step` did. Energies in Wh over the step, bus side unless said.

    ``stored_wh`` is the energy in the battery after the step (storage side).
    """

    soc_pct: float
    voltage_v: float
    stored_wh: float
    charged_wh: float
    discharged_wh: float
    clipped_wh: float
    unserved_wh: float

    @property
    def brownout(self) -> bool:
        """The loads asked for more than an empty battery could give during this step."""
        return self.unserved_wh > 0.0


class Battery:
    """A battery's state: stored energy, and the running totals that prove the balance.

    Mutable on purpose (it is the state being integrated); its parameters are a frozen
    :class:`BatteryParams`. Pass ``soc_pct`` (0..100) to start from.

    >>> b = Battery(BatteryParams(capacity_wh=10.0), soc_pct=50.0)
    >>> s = b.step(net_power_w=36.0, dt_s=100.0)   # 1 Wh offered, 0.95 Wh stored
    >>> round(s.stored_wh, 6), s.charged_wh, s.clipped_wh
    (5.95, 1.0, 0.0)
    """

    def __init__(self, params: BatteryParams, soc_pct: float = 100.0):
        if not isinstance(params, BatteryParams):
            raise TypeError(f"params must be a BatteryParams, got {type(params).__name__}")
        if not 0.0 <= soc_pct <= 100.0:
            raise ValueError(f"soc_pct must be in [0, 100], got {soc_pct}")
        self.params = params
        self.stored_wh = params.capacity_wh * soc_pct / 100.0
        self.initial_stored_wh = self.stored_wh
        self.total_charged_wh = 0.0
        self.total_discharged_wh = 0.0
        self.total_clipped_wh = 0.0
        self.total_unserved_wh = 0.0

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.stored_wh / self.params.capacity_wh

    @property
    def voltage_v(self) -> float:
        """Open-circuit pack voltage at the present charge, V."""
        return float(self.params.open_circuit_voltage_v(self.soc_pct))

    def room_w(self, dt_s: float) -> float:
        """The most the battery takes from the bus over ``dt_s`` seconds, W (bus side): what fits before it is full,
        0 once it is (a Li-ion charger's taper near full is not modelled)."""
        room_bus_wh = (self.params.capacity_wh - self.stored_wh) / self.params.charge_efficiency
        return room_bus_wh * SECONDS_PER_HOUR / dt_s if dt_s > 0 else (math.inf if room_bus_wh > 0 else 0.0)

    def balance_error_wh(self) -> float:
        """(stored now − stored at start) − (η_c·Σcharged − Σdischarged/η_d): 0 up to float rounding."""
        p = self.params
        expected = p.charge_efficiency * self.total_charged_wh - self.total_discharged_wh / p.discharge_efficiency
        return (self.stored_wh - self.initial_stored_wh) - expected

    def step(self, net_power_w: float, dt_s: float) -> BatteryStep:
        """Integrate ``net_power_w`` (solar in − loads out, W) over ``dt_s`` seconds (see module doc)."""
        if not (math.isfinite(dt_s) and dt_s >= 0.0):  # an infinite step made clipped_wh or unserved_wh inf (audit)
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s}")
        if not math.isfinite(net_power_w):
            raise ValueError(f"net_power_w must be finite, got {net_power_w}")
        p = self.params
        energy_wh = net_power_w * dt_s / SECONDS_PER_HOUR
        start_wh = self.stored_wh
        charged = discharged = clipped = unserved = 0.0
        if energy_wh > 0.0:
            room_bus_wh = (p.capacity_wh - start_wh) / p.charge_efficiency
            if energy_wh <= room_bus_wh:
                charged = energy_wh
                self.stored_wh = start_wh + p.charge_efficiency * charged
            else:  # full: exactly at capacity, the rest is shunted
                charged = room_bus_wh
                clipped = energy_wh - charged
                self.stored_wh = p.capacity_wh
        elif energy_wh < 0.0:
            demand_wh = -energy_wh
            available_bus_wh = start_wh * p.discharge_efficiency
            if demand_wh <= available_bus_wh:
                discharged = demand_wh
                self.stored_wh = start_wh - discharged / p.discharge_efficiency
            else:  # empty: a brownout for the part that could not be served
                discharged = available_bus_wh
                unserved = demand_wh - discharged
                self.stored_wh = 0.0
        # Rounding can leave -1e-16 or capacity + 1e-15; keep the invariant 0 <= stored <= capacity.
        self.stored_wh = min(max(self.stored_wh, 0.0), p.capacity_wh)
        self.total_charged_wh += charged
        self.total_discharged_wh += discharged
        self.total_clipped_wh += clipped
        self.total_unserved_wh += unserved
        step_error = (self.stored_wh - start_wh) - (
            p.charge_efficiency * charged - discharged / p.discharge_efficiency
        )
        assert abs(step_error) <= 1e-9 * max(p.capacity_wh, 1.0), (
            f"battery step broke the energy balance by {step_error} Wh"
        )
        return BatteryStep(
            soc_pct=self.soc_pct,
            voltage_v=self.voltage_v,
            stored_wh=self.stored_wh,
            charged_wh=charged,
            discharged_wh=discharged,
            clipped_wh=clipped,
            unserved_wh=unserved,
        )


def delivered_solar_w(available_w: float, loads_w: float, room_w: float) -> float:
    """The power the EPS takes from its arrays, W: what they give (``available_w``) up to what the bus draws
    (``loads_w``) plus what the battery takes (``room_w``, :meth:`Battery.room_w`). With the battery full and the
    loads under what the arrays could give, the charge regulator backs off the maximum power point (or a shunt
    dumps the rest), and the delivered power, the one an EPS measures and reports, is the loads'. Over a step with
    the same loads it is exactly ``available_w`` less the step's ``clipped_wh`` as power.

    >>> delivered_solar_w(80.0, 20.0, 0.0), delivered_solar_w(80.0, 20.0, 100.0), delivered_solar_w(0.0, 20.0, 0.0)
    (20.0, 80.0, 0.0)
    """
    return float(min(available_w, max(0.0, loads_w) + max(0.0, room_w)))


def gauge_pct(soc_pct: float, step_pct: float) -> float:
    """What a fuel gauge of ``step_pct`` resolution reads of the true charge: the nearest step, within
    0 to 100 % (0: the truth itself). A smart battery reports whole percent (SBS ``RelativeStateOfCharge``):
    0.6 Wh a step on 60 Wh, which the agent must allow for (flight.power.load). ``step_pct`` divides 100
    (hil/scenario.py checks it), so full reads 100."""
    if step_pct <= 0:
        return float(soc_pct)
    return float(min(100.0, max(0.0, round(soc_pct / step_pct) * step_pct)))
