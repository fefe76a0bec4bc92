"""Agent modes and the rules for moving between them (pure logic, no I/O).

    BOOT ──auto──► SAFE ◄──────── any mode (commanded, or automatic on a fault)
                    │ ▲
            command │ │ command / auto
                    ▼ │
                   IDLE ◄──► COMPUTE   (command; COMPUTE also leaves automatically)

SAFE is where the agent starts (after a crash as after a clean stop) and where it falls
back to; leaving it takes a command. COMPUTE is only reached from IDLE, so an operator
always passes through a mode where nothing runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from flight.link.definitions import MODES_COMMANDABLE as COMMANDABLE, Mode

__all__ = ["COMMANDABLE", "Conditions", "Mode", "commanded_refusal"]

# (from, to) pairs a command may ask for; automatic transitions have their own rule below.
_COMMANDED = {
    (Mode.SAFE, Mode.IDLE),
    (Mode.IDLE, Mode.COMPUTE),
    (Mode.COMPUTE, Mode.IDLE),
    (Mode.IDLE, Mode.SAFE),
    (Mode.COMPUTE, Mode.SAFE),
}


@dataclass(frozen=True)
class Conditions:
    """What the guards look at; the agent fills it from its latest readings."""

    battery_soc_pct: float | None
    battery_floor_pct: float
    temp_max_c: float | None
    thermal_soft_limit_c: float
    thermal_hard_limit_c: float


def commanded_refusal(current: Mode, target: Mode, c: Conditions) -> str | None:
    """Why a commanded change from ``current`` to ``target`` is not allowed now, or None."""
    if target == current:
        return None
    if (current, target) not in _COMMANDED:
        if current is Mode.SAFE and target is Mode.COMPUTE:
            return "SAFE → COMPUTE is not allowed: command IDLE first"
        return f"{current.value} → {target.value} is not a commandable transition"
    if target in (Mode.IDLE, Mode.COMPUTE):
        if c.battery_soc_pct is not None and c.battery_soc_pct < c.battery_floor_pct:
            return f"battery {c.battery_soc_pct:.1f} % is below the floor {c.battery_floor_pct:.1f} %"
        if c.temp_max_c is not None and c.temp_max_c >= c.thermal_hard_limit_c:
            return f"temperature {c.temp_max_c:.1f} °C is at or above the hard limit {c.thermal_hard_limit_c:.1f} °C"
    if target is Mode.COMPUTE and c.temp_max_c is not None and c.temp_max_c >= c.thermal_soft_limit_c:
        return f"temperature {c.temp_max_c:.1f} °C is at or above the soft limit {c.thermal_soft_limit_c:.1f} °C"
    return None
