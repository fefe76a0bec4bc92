"""Board temperature: a lumped two-node model, board and radiator, after Basilisk's thermal plate.

Basilisk's ``sensorThermal`` plate (FACTS.md "Orbits, power, thermal") is one node that
absorbs sunlight × shadow factor, takes the electrical power as heat and radiates by
Stefan–Boltzmann. Here the board (the Jetson module, its heat spreader) is a second node
tied to the radiator by a conductance, because the board is what the thermal zones read
and it runs hotter than the radiator by P/G::

    C_b dT_b/dt = P − G (T_b − T_r)
    C_r dT_r/dt = G (T_b − T_r) + Q_env − σ ε A T_r⁴

    Q_env = α S f_sun A · shadow          direct sunlight on the radiator
          + α q_albedo F_e A              reflected sunlight (profile's albedo_w_m2)
          + ε q_IR F_e A                  Earth infrared (profile's earth_ir_w_m2; ε = α in the IR, Kirchhoff)

P is the board's dissipation (all its electrical power ends up as heat), S the solar
constant, f_sun the mean fraction of the radiator's area projected towards the Sun in
sunlight, F_e the fraction of a nadir plate's Earth flux the radiator sees (1 facing
nadir, 0 facing deep space). The radiator faces space on one side only; the 3 K sky is
taken as 0 K.

Integration: explicit (forward Euler). It is stable only for steps below 2/λ with λ the
fastest rate of the linearised system; :meth:`ThermalModel.step` splits a long ``dt_s``
into equal sub-steps no longer than ``STABILITY_FRACTION``/λ (a tenth of the fastest time
constant, so also accurate to a fraction of a kelvin), λ bounded by Gershgorin's theorem
from the present temperatures. With the defaults at 20 °C the bound is the radiator's row,
(2G + 4σεA T_r³)/C_r ≈ 1/80 s (the linearised system's fastest time constant is ~100 s), so
a 10 s step is two sub-steps and a 600 s step 74.

Energy: each sub-step changes the stored heat C_b ΔT_b + C_r ΔT_r by exactly
(P + Q_env − σεA T_r⁴) × dt (the radiator's emission is taken at the start of the
sub-step); :attr:`ThermalModel.last_energy` carries the terms of the last step so a test
can hold the books closed.

Defaults (:class:`ThermalParams`): a Jetson-class board on a 0.045 m² white-painted
radiator, numbers chosen (estimates, stated) so that, on the shipped 550 km 10:30
sun-synchronous orbit (β ≈ 24°, 64 % sunlit), the board settles at 48 °C orbit-average
(45–51 °C over the orbit) at 15 W, 92 °C at 25 W, and a 40 W load held in full sun
takes it to 147 °C at equilibrium (past 85 °C 11 min after starting from 48 °C: keeping
it below is the thermal governor's job). tests/test_hil_physics.py holds these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from hil.physics.environment import EARTH_ALBEDO, EARTH_IR_W_M2
from hil.physics.solar import SOLAR_CONSTANT_W_M2

STEFAN_BOLTZMANN_W_M2_K4 = 5.670374419e-8
"""σ, exact in the 2019 SI (CODATA 2018)."""

KELVIN_OFFSET = 273.15

STABILITY_FRACTION = 0.1
"""Sub-step = this / λ_max. Forward Euler needs < 2 for stability; 0.1 keeps it accurate too."""

_VIEW_FACTOR_550_KM = (6378.137 / (6378.137 + 550.0)) ** 2


@dataclass(frozen=True)
class ThermalParams:
    """Parameters of the two-node model (module doc). Validated here, once.

    Default numbers and why (all estimates unless a source is named):

    - ``board_heat_capacity_j_per_k`` 300: a Jetson module with its heat spreader and
      mounting plate, ~0.34 kg of aluminium at 890 J/kg/K (c_p from FACTS.md, Basilisk).
    - ``board_to_radiator_w_per_k`` 1.0: a bolted interface plus a copper strap or
      short heat pipe; the board sits 15 K above the radiator at 15 W.
    - ``radiator_area_m2`` 0.045 (about 21 × 21 cm, one face radiating);
      ``radiator_heat_capacity_j_per_k`` 180 (0.2 kg aluminium: 1.5 mm plate).
    - ``radiator_emissivity`` 0.85, ``radiator_absorptivity`` 0.20: white paint
      (Gilmore 2002 tables give ε 0.85–0.9, α 0.15–0.25 for white paints at beginning of life).
    - ``sun_projected_fraction`` 0.2: the radiator is mounted edge-on to the Sun as far as
      the attitude allows; a fifth of its area faces the Sun on average in sunlight.
    - ``earth_view_factor`` 0.3: side-mounted, it sees 30 % of what a nadir plate sees.
    - ``default_albedo_w_m2`` / ``default_earth_ir_w_m2``: used when :meth:`ThermalModel.step`
      is not given the profile's values: a nadir plate at 550 km sees 237 × 0.8475 = 201 W/m²
      of Earth IR, and 0.3 × 1361 × 0.8475 × 0.5 = 173 W/m² of albedo on average over the
      sunlit half orbit (mean cos ζ ≈ 0.5; applied × shadow factor, so 0 in eclipse).
    """

    board_heat_capacity_j_per_k: float = 300.0
    board_to_radiator_w_per_k: float = 1.0
    radiator_area_m2: float = 0.045
    radiator_emissivity: float = 0.85
    radiator_absorptivity: float = 0.20
    radiator_heat_capacity_j_per_k: float = 180.0
    sun_projected_fraction: float = 0.2
    earth_view_factor: float = 0.3
    default_albedo_w_m2: float = EARTH_ALBEDO * SOLAR_CONSTANT_W_M2 * _VIEW_FACTOR_550_KM * 0.5
    default_earth_ir_w_m2: float = EARTH_IR_W_M2 * _VIEW_FACTOR_550_KM

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ThermalParams.{f.name} must be a finite number, got {value!r}")
        for name in ("board_heat_capacity_j_per_k", "board_to_radiator_w_per_k", "radiator_area_m2",
                     "radiator_heat_capacity_j_per_k", "radiator_emissivity"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ThermalParams.{name} must be > 0, got {getattr(self, name)}")
        for name in ("radiator_emissivity", "radiator_absorptivity", "sun_projected_fraction", "earth_view_factor"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ThermalParams.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("default_albedo_w_m2", "default_earth_ir_w_m2"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"ThermalParams.{name} must be >= 0, got {getattr(self, name)}")

    def absorbed_w(self, shadow_factor, albedo_w_m2=None, earth_ir_w_m2=None,
                   solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2):
        """Q_env, W: heat the radiator absorbs from the Sun, albedo and Earth IR (module doc).

        ``albedo_w_m2`` / ``earth_ir_w_m2`` are nadir-plate fluxes (the profile's columns);
        None takes the defaults, the albedo one times the shadow factor. Broadcasts.
        """
        shadow = np.clip(np.asarray(shadow_factor, dtype=float), 0.0, 1.0)
        if albedo_w_m2 is None:
            albedo_w_m2 = self.default_albedo_w_m2 * shadow
        if earth_ir_w_m2 is None:
            earth_ir_w_m2 = self.default_earth_ir_w_m2
        a = self.radiator_area_m2
        return (
            self.radiator_absorptivity * solar_constant_w_m2 * self.sun_projected_fraction * a * shadow
            + self.radiator_absorptivity * np.asarray(albedo_w_m2, dtype=float) * self.earth_view_factor * a
            + self.radiator_emissivity * np.asarray(earth_ir_w_m2, dtype=float) * self.earth_view_factor * a
        )

    def steady_state_c(self, dissipation_w, shadow_factor=1.0, albedo_w_m2=None, earth_ir_w_m2=None,
                       solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2):
        """The analytic equilibrium for constant inputs: (board °C, radiator °C).

        Set both derivatives to 0: the radiator emits all that comes in,
        σεA T_r⁴ = P + Q_env, so T_r = ((P + Q_env)/(σεA))^¼, and the board sits P/G above it.
        """
        q_w = np.asarray(dissipation_w, dtype=float) + self.absorbed_w(
            shadow_factor, albedo_w_m2, earth_ir_w_m2, solar_constant_w_m2
        )
        t_r_k = (q_w / (STEFAN_BOLTZMANN_W_M2_K4 * self.radiator_emissivity * self.radiator_area_m2)) ** 0.25
        t_b_k = t_r_k + np.asarray(dissipation_w, dtype=float) / self.board_to_radiator_w_per_k
        return t_b_k - KELVIN_OFFSET, t_r_k - KELVIN_OFFSET

    def max_steady_dissipation_w(self, board_limit_c, shadow_factor=1.0, albedo_w_m2=None, earth_ir_w_m2=None,
                                 solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2):
        """The most the board may dissipate for its *steady state* to stay at or below ``board_limit_c``, W.

        The inverse of :meth:`steady_state_c` in P (the board temperature grows monotonically
        with P), found by bisection to 1e-9 W; 0 where even P = 0 is too hot. Broadcasts. A
        per-step cap for planners (e.g. the oracle's ``max_board_power_w``); it ignores the
        heat capacities, so a real schedule can exceed it for a while.
        """
        env = self.absorbed_w(shadow_factor, albedo_w_m2, earth_ir_w_m2, solar_constant_w_m2)
        limit_k = np.asarray(board_limit_c, dtype=float) + KELVIN_OFFSET
        sigma_e_a = STEFAN_BOLTZMANN_W_M2_K4 * self.radiator_emissivity * self.radiator_area_m2
        limit_k, env = np.broadcast_arrays(limit_k, env)

        def board_k(p):
            return ((p + env) / sigma_e_a) ** 0.25 + p / self.board_to_radiator_w_per_k

        lo = np.zeros(limit_k.shape)
        # At P = G·(T_lim) the board alone would be T_lim above a radiator at 0 K: an upper bound.
        hi = np.maximum(self.board_to_radiator_w_per_k * limit_k, 1.0)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            too_hot = board_k(mid) > limit_k
            hi = np.where(too_hot, mid, hi)
            lo = np.where(too_hot, lo, mid)
        return np.where(board_k(np.zeros(limit_k.shape)) > limit_k, 0.0, lo)

    def sized_for(self, dissipation_w: float, board_c: float, shadow_factor: float = 1.0,
                  gradient_k: float = 15.0, j_per_k_m2: float = 4000.0) -> ThermalParams:
        """These parameters with a radiator a designer would size for ``dissipation_w`` held at ``board_c`` in
        steady state (under ``shadow_factor``'s environment): the board-to-radiator conductance carries it
        ``gradient_k`` down (never below this one's), and the area radiates it and what the radiator absorbs
        (which grows with the area) at the radiator's temperature; its heat capacity ``j_per_k_m2`` per m².
        ValueError where the radiator would be too cold to radiate even its own absorbed heat."""
        g = max(self.board_to_radiator_w_per_k, dissipation_w / gradient_k)
        radiator_k = board_c + KELVIN_OFFSET - dissipation_w / g
        emitted_w_m2 = STEFAN_BOLTZMANN_W_M2_K4 * self.radiator_emissivity * radiator_k**4
        absorbed_w_m2 = float(replace(self, radiator_area_m2=1.0).absorbed_w(shadow_factor))
        if not emitted_w_m2 > absorbed_w_m2:
            raise ValueError(f"a radiator at {radiator_k - KELVIN_OFFSET:.1f} C absorbs more than it emits: no area "
                             f"holds {dissipation_w:g} W at {board_c:g} C")
        area_m2 = dissipation_w / (emitted_w_m2 - absorbed_w_m2)
        return replace(self, board_to_radiator_w_per_k=g, radiator_area_m2=area_m2,
                       radiator_heat_capacity_j_per_k=area_m2 * j_per_k_m2)


@dataclass(frozen=True)
class ThermalEnergy:
    """The heat books of one :meth:`ThermalModel.step`, J. ``stored_change_j`` = C_b ΔT_b + C_r ΔT_r.

    Closed when stored_change_j = dissipated_j + absorbed_j − radiated_j (to rounding).
    """

    dissipated_j: float
    absorbed_j: float
    radiated_j: float
    stored_change_j: float
    substeps: int

    @property
    def imbalance_j(self) -> float:
        return self.stored_change_j - (self.dissipated_j + self.absorbed_j - self.radiated_j)


class ThermalModel:
    """The board and radiator temperatures, stepped through time (module doc).

    Starts at ``board_temp_c`` (and ``radiator_temp_c``, default the same: a powered-off
    spacecraft at equilibrium). Mutable: it is the integrated state.

    >>> m = ThermalModel(ThermalParams(), board_temp_c=20.0)
    >>> board_c, radiator_c = m.step(dissipation_w=15.0, shadow_factor=1.0, dt_s=10.0)
    >>> board_c > 20.0 > radiator_c
    True
    """

    def __init__(self, params: ThermalParams | None = None, board_temp_c: float = 20.0,
                 radiator_temp_c: float | None = None):
        self.params = ThermalParams() if params is None else params
        if not isinstance(self.params, ThermalParams):
            raise TypeError(f"params must be a ThermalParams, got {type(self.params).__name__}")
        radiator_temp_c = board_temp_c if radiator_temp_c is None else radiator_temp_c
        for name, value in (("board_temp_c", board_temp_c), ("radiator_temp_c", radiator_temp_c)):
            if not -KELVIN_OFFSET < value < 1000.0:
                raise ValueError(f"{name} must be above absolute zero and below 1000 °C, got {value}")
        self._t_board_k = board_temp_c + KELVIN_OFFSET
        self._t_radiator_k = radiator_temp_c + KELVIN_OFFSET
        self.last_energy: ThermalEnergy | None = None

    @property
    def board_temp_c(self) -> float:
        return self._t_board_k - KELVIN_OFFSET

    @property
    def radiator_temp_c(self) -> float:
        return self._t_radiator_k - KELVIN_OFFSET

    def _max_rate_per_s(self) -> float:
        """Gershgorin bound on the largest eigenvalue of the linearised system, 1/s."""
        p = self.params
        g = p.board_to_radiator_w_per_k
        g_rad = 4.0 * STEFAN_BOLTZMANN_W_M2_K4 * p.radiator_emissivity * p.radiator_area_m2 * self._t_radiator_k**3
        return max(2.0 * g / p.board_heat_capacity_j_per_k, (2.0 * g + g_rad) / p.radiator_heat_capacity_j_per_k)

    def step(self, dissipation_w: float, shadow_factor: float, dt_s: float, *, albedo_w_m2: float | None = None,
             earth_ir_w_m2: float | None = None, solar_constant_w_m2: float = SOLAR_CONSTANT_W_M2
             ) -> tuple[float, float]:
        """Advance ``dt_s`` seconds with constant inputs; returns (board_temp_c, radiator_temp_c).

        ``albedo_w_m2`` and ``earth_ir_w_m2`` are the profile's nadir-plate fluxes; leave
        them out to use the parameters' defaults. Long steps are split (module doc).
        """
        # Checked here, naming the input (found in audit: an infinite dt_s raised OverflowError, a NaN shadow factor
        # or flux "thermal model diverged ... parameters out of range?", and a negative flux cooled the radiator).
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s}")
        if not math.isfinite(dissipation_w) or dissipation_w < 0.0:
            raise ValueError(f"dissipation_w must be finite and >= 0, got {dissipation_w}")
        if not math.isfinite(shadow_factor):
            raise ValueError(f"shadow_factor must be finite (0 umbra .. 1 full sun), got {shadow_factor}")
        for name, flux in (("albedo_w_m2", albedo_w_m2), ("earth_ir_w_m2", earth_ir_w_m2),
                           ("solar_constant_w_m2", solar_constant_w_m2)):
            if flux is not None and not (math.isfinite(flux) and flux >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {flux}")
        p = self.params
        q_env_w = float(p.absorbed_w(shadow_factor, albedo_w_m2, earth_ir_w_m2, solar_constant_w_m2))
        sigma_e_a = STEFAN_BOLTZMANN_W_M2_K4 * p.radiator_emissivity * p.radiator_area_m2
        g = p.board_to_radiator_w_per_k
        c_b, c_r = p.board_heat_capacity_j_per_k, p.radiator_heat_capacity_j_per_k
        n = max(1, math.ceil(dt_s * self._max_rate_per_s() / STABILITY_FRACTION)) if dt_s > 0 else 0
        h = dt_s / n if n else 0.0
        t_b, t_r = self._t_board_k, self._t_radiator_k
        stored_start_j = c_b * t_b + c_r * t_r
        radiated_j = 0.0
        for _ in range(n):
            flow_w = g * (t_b - t_r)
            emitted_w = sigma_e_a * t_r**4
            t_b, t_r = t_b + h * (dissipation_w - flow_w) / c_b, t_r + h * (flow_w + q_env_w - emitted_w) / c_r
            radiated_j += emitted_w * h
        if not (t_b > 0.0 and t_r > 0.0 and math.isfinite(t_b) and math.isfinite(t_r)):
            raise FloatingPointError(f"thermal model diverged (T_b={t_b} K, T_r={t_r} K); parameters out of range?")
        self._t_board_k, self._t_radiator_k = t_b, t_r
        self.last_energy = ThermalEnergy(
            dissipated_j=dissipation_w * dt_s,
            absorbed_j=q_env_w * dt_s,
            radiated_j=radiated_j,
            stored_change_j=(c_b * t_b + c_r * t_r) - stored_start_j,
            substeps=n,
        )
        return self.board_temp_c, self.radiator_temp_c
