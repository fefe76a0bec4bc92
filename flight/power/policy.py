"""Power budgeting (pure logic): how hard may the board work without the battery going below its floor?

The plan looks ahead to the end of the next power deficit: with a forecast of the arrays'
output (``flight.power.array``), the next stretch where the arrays give less than the
spacecraft and the idling board draw; without one, the next eclipse, taken as no power at
all and full power outside it. In sunlight, energy in the battery
above what the eclipse will need (the floor, a margin, and the whole spacecraft plus the
board idling through the shadow) can be spent; as the eclipse comes nearer the same rule
makes the agent bank energy, instead of finding out inside the shadow. In eclipse, it
spends only what is left above the floor until sunrise. Without a prediction it assumes
an eclipse could start now and last ``default_eclipse_s``.

Energy balance (NOS3 EPS style): the arrays feed the load directly and only the net goes through
the battery: with net = P_solar − P_load, stored Wh += dt·net·η_charge/3600 when net > 0 and
−= dt·|net|/η_discharge/3600 when net < 0; the battery saturates at full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flight.link.definitions import Admission


@dataclass(frozen=True)
class ModePower:
    """A board power mode as the budget sees it (from the board profile).

    ``throughput_rel`` is its work rate relative to the fastest mode; None means "assume
    the order of the modes": a later mode does more.
    """

    name: str
    idle_w: float
    loaded_w: float
    throughput_rel: float | None = None


@dataclass(frozen=True)
class Battery:
    capacity_wh: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95


@dataclass(frozen=True)
class PowerInputs:
    soc_pct: float | None
    solar_power_w: float | None
    platform_load_w: float  # everything on the bus but the board
    in_eclipse: bool | None
    time_to_eclipse_s: float | None  # in sunlight: until the next umbra entry
    eclipse_duration_s: float | None  # of the next (or current) eclipse
    time_to_sun_s: float | None  # in eclipse: until exit
    # The arrays' predicted output from now on, one sample per ``forecast_step_s`` (already
    # scaled by the calibration); ``forecast_margin_w`` is taken off every sample (the
    # prediction's observed error).
    solar_forecast_w: tuple[float, ...] | None = None
    forecast_step_s: float = 60.0
    forecast_margin_w: float = 0.0


@dataclass(frozen=True)
class PowerSettings:
    floor_pct: float
    margin_pct: float = 5.0
    training_reserve_pct: float = 15.0  # training also needs this much above the floor
    default_eclipse_s: float = 36 * 60.0  # 550 km, β = 0 (FACTS.md: 35.6 min)


@dataclass(frozen=True)
class PowerDecision:
    mode: str  # power mode name to run in
    mode_index: int  # index into the modes, lowest first
    admission: Admission
    budget_w: float  # board power the plan allows now
    reason: str
    headroom_wh: float  # energy above what the plan must keep at its tightest point


def _end_energy_wh(e_now: float, e_full: float, net_w: float, dt_s: float, bat: Battery) -> float:
    if net_w >= 0:
        return min(e_full, e_now + net_w * bat.charge_efficiency * dt_s / 3600.0)
    return e_now + net_w / bat.discharge_efficiency * dt_s / 3600.0


def deficit_window(solar_w, demand_w: float) -> tuple[int, int] | None:
    """The first run of samples where the arrays give less than ``demand_w``: (start, end)
    indices, end exclusive (the forecast's length if it runs to the end); None if there is none.

    >>> deficit_window([50, 40, 0, 0, 40, 60], 35.0)
    (2, 4)
    >>> deficit_window([0, 10, 50], 20.0)
    (0, 2)
    >>> deficit_window([50, 60], 20.0) is None
    True
    """
    start = next((i for i, w in enumerate(solar_w) if w < demand_w), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(solar_w)) if solar_w[i] >= demand_w), len(solar_w))
    return start, end


def _forecast_plan(inputs: PowerInputs, e_now: float, e_full: float, base: float, lowest: ModePower,
                   battery: Battery):
    """The eclipse rule with the forecast in place of the eclipse: a candidate mode runs loaded
    until the next deficit (arrays below the spacecraft plus the idling board), then the board
    idles through it (if the deficit has begun, the candidate runs through it); the tightest
    point is the lowest energy up to the deficit's end."""
    step = inputs.forecast_step_s
    solar = [max(0.0, w - inputs.forecast_margin_w) for w in inputs.solar_forecast_w]
    window = deficit_window(solar, base + lowest.idle_w)
    start, end = window if window is not None else (len(solar), len(solar))
    stop_loaded = end if start == 0 else start

    def worst_energy(mode: ModePower) -> float:
        e, low = e_now, e_now
        for i in range(max(end, 1) if window is not None else len(solar)):
            board = mode.loaded_w if i < stop_loaded else lowest.idle_w
            e = _end_energy_wh(e, e_full, solar[i] - base - board, step, battery)
            low = min(low, e)
        return low

    if window is None:
        phase = f"arrays cover the load for the next {len(solar) * step / 60:.0f} min (forecast)"
    elif start == 0:
        phase = f"in a power deficit for {end * step / 60:.0f} more min (forecast)"
    else:
        phase = f"power deficit in {start * step / 60:.0f} min for {(end - start) * step / 60:.0f} min (forecast)"
    return worst_energy, phase


def decide(
    inputs: PowerInputs,
    modes: tuple[ModePower, ...],
    battery: Battery,
    settings: PowerSettings,
    cap_index: int | None = None,
) -> PowerDecision:
    """Pick the highest power mode (not above ``cap_index``) whose plan keeps the floor.

    ``modes`` are ordered lowest power first. The plan for a candidate runs the board
    loaded in that mode until the eclipse, then idles the lowest mode through it.
    """
    if not modes:
        raise ValueError("no power modes to choose from")
    top = len(modes) - 1 if cap_index is None else max(0, min(cap_index, len(modes) - 1))
    lowest = modes[0]
    # A charge that is no number is unknown (found in audit: NaN ran 25W with training, as a charging step's
    # min(full, NaN) reads full); one above 100 % is a full battery's, as the planner takes it (150 % ran MAX
    # with training through a 100-min eclipse on energy no battery holds, where a full one allows 15W).
    if inputs.soc_pct is None or not math.isfinite(inputs.soc_pct):
        return PowerDecision(lowest.name, 0, Admission.NONE, lowest.idle_w,
                             "battery state unknown: lowest mode, no compute", 0.0)
    e_full = battery.capacity_wh
    e_now = min(100.0, inputs.soc_pct) / 100.0 * e_full
    e_keep = (settings.floor_pct + settings.margin_pct) / 100.0 * e_full
    e_train = e_keep + settings.training_reserve_pct / 100.0 * e_full
    solar = max(0.0, inputs.solar_power_w or 0.0)
    base = inputs.platform_load_w

    in_eclipse = inputs.in_eclipse if inputs.in_eclipse is not None else solar <= 0.0
    if inputs.solar_forecast_w is not None and len(inputs.solar_forecast_w) >= 2:
        worst_energy, phase = _forecast_plan(inputs, e_now, e_full, base, lowest, battery)
    elif in_eclipse:
        remaining = inputs.time_to_sun_s if inputs.time_to_sun_s is not None else settings.default_eclipse_s

        def worst_energy(mode: ModePower) -> float:
            return min(e_now, _end_energy_wh(e_now, e_full, solar - base - mode.loaded_w, remaining, battery))

        phase = f"in eclipse, {remaining / 60:.0f} min to sunrise"
    else:
        to_eclipse = inputs.time_to_eclipse_s if inputs.time_to_eclipse_s is not None else 0.0
        shadow = inputs.eclipse_duration_s if inputs.eclipse_duration_s is not None else settings.default_eclipse_s

        def worst_energy(mode: ModePower) -> float:
            e_entry = _end_energy_wh(e_now, e_full, solar - base - mode.loaded_w, to_eclipse, battery)
            # Whatever the plan, the shadow is crossed idling in the lowest mode. The tightest point may be now, as
            # the forecast's plan counts it (found in audit: at 25 % with a 30 % floor, sunlit, 25W ran "keeping
            # 39.3 % at the tightest point" on the charge the arrays would make up before the shadow).
            return min(e_now, _end_energy_wh(e_entry, e_full, -(base + lowest.idle_w), shadow, battery))

        phase = (f"sunlit, eclipse in {to_eclipse / 60:.0f} min for {shadow / 60:.0f} min"
                 if inputs.time_to_eclipse_s is not None else "sunlit, no eclipse prediction: assuming one now")

    # Of the modes whose plan keeps the floor, the one that does the most work; on a tie the one
    # that draws less (a MAXN_SUPER that computes no faster than MAXN only costs energy and heat).
    feasible = [(i, modes[i], worst_energy(modes[i])) for i in range(top + 1)]
    feasible = [(i, m, end) for i, m, end in feasible if end >= e_keep]
    if feasible:
        def rank(entry):
            i, m, _end = entry
            rate = m.throughput_rel if m.throughput_rel is not None else float(i)
            return (rate, -m.loaded_w)

        index, mode, end = max(feasible, key=rank)
        admission = Admission.ALL if end >= e_train else Admission.INFERENCE
        reason = (f"{phase}: {mode.name} keeps {100 * end / e_full:.1f} % at the tightest point "
                  f"(floor {settings.floor_pct:.0f} % + margin {settings.margin_pct:.0f} %)")
        if admission is Admission.INFERENCE:
            reason += f"; training needs {100 * e_train / e_full:.0f} %"
        if index < top:
            above = [m.name for m in modes[index + 1 : top + 1]]
            reason += f"; {', '.join(above)} would not" if len(feasible) <= index + 1 else f"; {', '.join(above)} no faster"
        return PowerDecision(mode.name, index, admission, mode.loaded_w, reason, end - e_keep)
    end = worst_energy(ModePower(lowest.name, lowest.idle_w, lowest.idle_w))
    # the charge now where it is the tightest point (a review: "would end at 25 %" with the arrays refilling it)
    why = (f"the charge now, {100 * e_now / e_full:.1f} %, is" if e_now < e_keep else
           f"even {lowest.name} loaded would end at {100 * worst_energy(lowest) / e_full:.1f} %,")
    return PowerDecision(
        lowest.name, 0, Admission.NONE, lowest.idle_w,
        f"{phase}: {why} below floor {settings.floor_pct:.0f} % + margin: no compute",
        end - e_keep,
    )
