"""The agent's model of its solar arrays: predicted input power over the orbit ahead (pure numpy).

The eclipse is not the whole story: a body-fixed panel on a nadir-pointing satellite gives
nothing long before the umbra and long after it, so a plan that treats sunlight as power
saves for a 30-minute shadow and meets 50 minutes without power. This model predicts the
array's output from the orbit (sgp4), the Sun, the conical shadow and the array's geometry,
as the Basilisk ``simpleSolarPanel`` does (FACTS.md "Orbits, power, thermal")::

    P = S · η · (1 − d)^years · (1 + γ·(T − T_ref)) · C_shadow · Σ_panels A_i · max(0, n̂_i·ŝ)

with S the solar constant, η the cell efficiency, d the loss per year, γ the temperature
coefficient (about −0.2 %/°C for triple-junction GaAs cells), C_shadow the shadow factor,
n̂_i each panel's normal and ŝ the unit vector to the Sun.

Pointing and attitude:

- ``sun_tracking``: every panel turns to the Sun (drives on the wings): n̂·ŝ = 1 in sunlight.
- ``body_fixed``: panel normals are fixed in the body frame, which the attitude places:
  - ``nadir``: the body frame is the orbit frame: +X radial out (zenith), +Y along-track,
    +Z orbit normal (r × v). A top-deck panel is (1, 0, 0).
  - ``sun``: +X points at the Sun; +Z is the orbit normal made perpendicular to it (a
    sun-pointing safe mode). A panel (1, 0, 0) then sees the Sun square on.
  - ``inertial``: the body frame is the TEME frame (a star-tracker hold).

The configuration is the agent's belief; the truth differs (efficiency off, degradation
unknown). :class:`SolarCalibration` scales the model to what the solar power channel
measures, and keeps the prediction error that the plan's margins and telemetry use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

SOLAR_CONSTANT_W_M2 = 1361.0
"""Total solar irradiance at 1 AU (FACTS.md)."""

POINTINGS = ("sun_tracking", "body_fixed")
ATTITUDES = ("nadir", "sun", "inertial")

MAX_YEARS = 100.0
"""The most years in orbit the model takes (found in audit: ``years = 365``, days written for years, put the
arrays at 3 % of their output; every measured sample was then above twice the model's peak, dropped, and the
forecast stayed there for good)."""

MAX_TEMP_COEFF_PER_C = 0.02
"""The largest temperature coefficient taken, either sign: ten times a cell's (found in audit: nan and inf were
taken, and −0.2, the −0.2 %/°C of a datasheet written as a fraction, puts the arrays at nothing 5 °C above the
reference)."""

MAX_PANEL_AREA_M2 = 1.0e4
"""The largest panel taken: past any spacecraft's, and where the forecast stays finite (found in audit: 1e300
squared to inf in the calibration, and two such panels summed to an infinite forecast, read as power to spare)."""


@dataclass(frozen=True)
class Panel:
    normal_body: tuple[float, float, float]
    area_m2: float


@dataclass(frozen=True)
class ArrayModel:
    """What the agent believes its arrays are (checked at construction)."""

    panels: tuple[Panel, ...]
    efficiency: float
    pointing: str = "sun_tracking"
    attitude: str = "nadir"
    degradation_per_year: float = 0.0
    years: float = 0.0
    temp_coeff_per_c: float = -0.002
    ref_temp_c: float = 28.0

    def __post_init__(self) -> None:
        if self.pointing not in POINTINGS:
            raise ValueError(f"pointing: {self.pointing!r} is not one of {', '.join(POINTINGS)}")
        if self.attitude not in ATTITUDES:
            raise ValueError(f"attitude: {self.attitude!r} is not one of {', '.join(ATTITUDES)}")
        if not self.panels:
            raise ValueError("panels: at least one")
        for i, p in enumerate(self.panels):
            n = np.asarray(p.normal_body, dtype=float)
            if n.shape != (3,) or not np.all(np.isfinite(n)) or np.linalg.norm(n) == 0:
                raise ValueError(f"panels[{i}].normal_body: three finite numbers, not all zero")
            if not (math.isfinite(p.area_m2) and 0 < p.area_m2 <= MAX_PANEL_AREA_M2):
                raise ValueError(f"panels[{i}].area_m2: must be > 0 and at most {MAX_PANEL_AREA_M2:g} m2, "
                                 f"got {p.area_m2}")
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"efficiency: in (0, 1], got {self.efficiency}")
        if not 0.0 <= self.degradation_per_year < 1.0:
            raise ValueError(f"degradation_per_year: in [0, 1), got {self.degradation_per_year}")
        if not 0.0 <= self.years <= MAX_YEARS:  # nan fails both
            raise ValueError(f"years: in 0..{MAX_YEARS:g} (years in orbit: a count of days?), got {self.years}")
        if not abs(self.temp_coeff_per_c) <= MAX_TEMP_COEFF_PER_C:
            raise ValueError(f"temp_coeff_per_c: within +-{MAX_TEMP_COEFF_PER_C:g} per C, a fraction "
                             f"(-0.002 is -0.2 %/C), got {self.temp_coeff_per_c}")

    @property
    def peak_w(self) -> float:
        """Output with every panel square to the Sun at the reference temperature."""
        area = sum(p.area_m2 for p in self.panels)
        return SOLAR_CONSTANT_W_M2 * self.efficiency * (1.0 - self.degradation_per_year) ** self.years * area

    def incidence_area_m2(self, r_teme_km, v_teme_km_s, sun_dir_teme) -> np.ndarray:
        """Σ A_i·max(0, n̂_i·ŝ) for each time (shapes (..., 3) in, (...) out)."""
        sun = np.asarray(sun_dir_teme, dtype=float)
        if self.pointing == "sun_tracking":
            return np.full(sun.shape[:-1], sum(p.area_m2 for p in self.panels))
        axes = body_axes_teme(self.attitude, r_teme_km, v_teme_km_s, sun)  # (..., 3 body axes, 3)
        total = np.zeros(sun.shape[:-1])
        for p in self.panels:
            n_body = np.asarray(p.normal_body, dtype=float) / np.linalg.norm(p.normal_body)
            n_teme = np.einsum("i,...ij->...j", n_body, axes)
            total = total + p.area_m2 * np.clip(np.sum(n_teme * sun, axis=-1), 0.0, None)
        return total

    def power_w(self, r_teme_km, v_teme_km_s, sun_dir_teme, shadow_factor, panel_temp_c=None) -> np.ndarray:
        """Predicted array output, W, for each time."""
        base = SOLAR_CONSTANT_W_M2 * self.efficiency * (1.0 - self.degradation_per_year) ** self.years
        temp = 1.0 if panel_temp_c is None else 1.0 + self.temp_coeff_per_c * (np.asarray(panel_temp_c) - self.ref_temp_c)
        shadow = np.clip(np.asarray(shadow_factor, dtype=float), 0.0, 1.0)
        return base * np.clip(temp, 0.0, None) * shadow * self.incidence_area_m2(r_teme_km, v_teme_km_s, sun_dir_teme)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def body_axes_teme(attitude: str, r_km, v_km_s, sun_dir) -> np.ndarray:
    """The body axes (+X, +Y, +Z) as unit vectors in TEME, shape (..., 3, 3): row k is axis k.

    >>> r = np.array([7000.0, 0.0, 0.0]); v = np.array([0.0, 7.5, 0.0]); s = np.array([0.0, 1.0, 0.0])
    >>> body_axes_teme("nadir", r, v, s).round(6).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> body_axes_teme("sun", r, v, s)[0].round(6).tolist()
    [0.0, 1.0, 0.0]
    """
    sun = _unit(np.asarray(sun_dir, dtype=float))
    if attitude == "inertial":
        return np.broadcast_to(np.eye(3), sun.shape[:-1] + (3, 3)).copy()
    r = _unit(np.asarray(r_km, dtype=float))
    h = _unit(np.cross(np.asarray(r_km, dtype=float), np.asarray(v_km_s, dtype=float)))
    if attitude == "nadir":
        x = r
        z = h
        y = np.cross(z, x)
    elif attitude == "sun":
        x = sun
        z_raw = h - np.sum(h * x, axis=-1, keepdims=True) * x
        bad = np.linalg.norm(z_raw, axis=-1, keepdims=True) < 1e-9  # Sun along the orbit normal: any z will do
        z_raw = np.where(bad, np.cross(x, r), z_raw)
        z = _unit(z_raw)
        y = np.cross(z, x)
    else:
        raise ValueError(f"attitude: {attitude!r} is not one of {', '.join(ATTITUDES)}")
    return np.stack([x, y, z], axis=-2)


@dataclass(frozen=True)
class SolarForecast:
    """Predicted array output from ``start_unix_s`` every ``step_s`` (unscaled: the caller
    applies the calibration's scale) and the shadow it was predicted with."""

    start_unix_s: float
    step_s: float
    power_w: tuple[float, ...]
    shadow: tuple[float, ...] = ()  # the shadow factor at each sample (0 umbra .. 1 full sun)

    def from_now(self, now_unix_s: float) -> tuple[float, ...]:
        """The samples from ``now`` on (the forecast ages between predictions)."""
        skip = max(0, int((now_unix_s - self.start_unix_s) // self.step_s))
        return self.power_w[skip:]

    def umbra_from_now(self, now_unix_s: float) -> tuple[bool, ...]:
        """Where the samples from ``now`` on are in the Earth's shadow (mostly: factor below ½)."""
        skip = max(0, int((now_unix_s - self.start_unix_s) // self.step_s))
        return tuple(f < 0.5 for f in self.shadow[skip:])

    def at(self, now_unix_s: float) -> tuple[float, bool] | None:
        """The output at ``now``, interpolated between samples, and whether ``now`` lies at a
        shadow edge: the shadow factor is not the same full value at both samples (umbra,
        penumbra or their crossing). There the prediction's error is the orbit's timing
        (seconds of a minutes-long step), not the array's; calibrating on it read a 120-s
        step's edge as a tenth of the output wrong all orbit. Without shadow samples, a dark
        and a lit sample mark the edge. None past the end.

        >>> f = SolarForecast(0.0, 120.0, (0.0, 90.0, 90.0), (0.0, 1.0, 1.0))
        >>> f.at(60.0), f.at(180.0), f.at(300.0)
        ((45.0, True), (90.0, False), None)
        >>> SolarForecast(0.0, 120.0, (0.0, 0.0), (1.0, 1.0)).at(60.0)  # lit, the panel turned away
        (0.0, False)
        """
        offset = (now_unix_s - self.start_unix_s) / self.step_s
        k = int(math.floor(offset))
        if k < 0 or k + 1 >= len(self.power_w):
            return None
        a, b = self.power_w[k], self.power_w[k + 1]
        if len(self.shadow) > k + 1:
            fa, fb = self.shadow[k], self.shadow[k + 1]
            edge = not (fa == fb and fa in (0.0, 1.0))
        else:
            edge = (a > 0.0) != (b > 0.0)
        return a + (b - a) * (offset - k), edge


def forecast_solar(orbit, model: ArrayModel, now_unix_s: float, horizon_s: float, step_s: float = 60.0,
                   scale: float = 1.0, shadow_model: str = "conical") -> SolarForecast:
    """The array's predicted output over ``horizon_s`` (one vectorised sgp4 call)."""
    from flight.orbit.shadow import shadow_factor
    from flight.orbit.sun import sun_position_teme_km

    times = now_unix_s + np.arange(0.0, horizon_s, step_s)
    r, v = orbit.propagate(times)
    sun_km = sun_position_teme_km(times)
    shadow = shadow_factor(r, sun_km, shadow_model)
    sun_dir = _unit(sun_km - r)
    power = model.power_w(r, v, sun_dir, shadow) * scale
    return SolarForecast(float(now_unix_s), float(step_s), tuple(float(p) for p in power),
                         tuple(float(f) for f in shadow))


@dataclass(frozen=True)
class SolarCalibration:
    """The model's scale and error, learnt from the measured solar power (exponentially weighted).

    ``scale`` is the weighted least-squares factor measured ≈ scale·predicted, over samples
    where the model predicts real output (above ``min_fraction`` of its peak): the
    efficiency and degradation the configuration got wrong. ``error_w`` is the weighted RMS
    of measured − scale·predicted over all samples: what the plan's margin allows for.
    """

    scale: float = 1.0
    error_w: float = 0.0
    samples: int = 0
    sum_pm: float = 0.0
    sum_pp: float = 0.0
    sum_e2: float = 0.0
    weight: float = 0.0

    def update(self, predicted_w: float, measured_w: float, peak_w: float, half_life: float = 200.0,
               min_fraction: float = 0.1) -> SolarCalibration:
        """One more sample (pure: a new record). ``half_life`` in samples."""
        if (not (math.isfinite(predicted_w) and math.isfinite(measured_w)) or predicted_w < 0 or measured_w < 0
                or measured_w > 2.0 * peak_w):  # more than the arrays can give is no reading: one once held the
            return self                         # error at inf, and the forecast at nothing, until a restart
        keep = 0.5 ** (1.0 / half_life)
        sum_pm, sum_pp = self.sum_pm * keep, self.sum_pp * keep
        if predicted_w > min_fraction * peak_w:
            sum_pm += predicted_w * measured_w
            sum_pp += predicted_w * predicted_w
        scale = min(2.0, max(0.2, sum_pm / sum_pp)) if sum_pp > 0 else self.scale
        residual = measured_w - scale * predicted_w
        weight = self.weight * keep + 1.0
        sum_e2 = self.sum_e2 * keep + residual * residual
        return replace(self, scale=scale, error_w=math.sqrt(sum_e2 / weight), samples=self.samples + 1,
                       sum_pm=sum_pm, sum_pp=sum_pp, sum_e2=sum_e2, weight=weight)
