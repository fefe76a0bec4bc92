"""Board profiles: what each Jetson offers and tolerates, as data in this folder's .toml files.

A profile gives the power modes with their budgets and our estimates of idle and loaded
power and inference throughput, the thermal limits, the INA3221 rail layout and which rail
is the board's input, the thermal zone names, and the sources of every number. The HAL
uses it to fill in what nvpmodel.conf does not say (the budget of a MAXN mode) and to
notice sensors that should be there but are not; planners use the numbers.

This module lives in ``boards/__init__.py`` rather than ``boards.py`` because the .toml
files must sit in a package of their own to ship as package data (pyproject's
``package-data "*" = ["*.toml"]``), and a ``boards/`` package would hide a ``boards.py``.

Parsing (:func:`parse_board_profile`, dict in, profile out) is kept apart from reading
files (:func:`load_board`, :func:`load_board_file`). Every error names the file and key.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10 (FACTS.md 'Jetson interfaces')
    import tomli as tomllib


class BoardProfileError(ValueError):
    """A profile that is missing a key, has a wrong type or breaks an invariant; the
    message starts with the file and the key."""


@dataclass(frozen=True)
class ModeProfile:
    """One power mode's numbers. ``inference_rel_maxn``: throughput relative to the
    board's fastest mode (1.0)."""

    name: str
    budget_w: float
    idle_power_w: float
    loaded_power_w: float
    inference_rel_maxn: float

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"name: must be a non-empty word, got {self.name!r}")
        for key in ("budget_w", "idle_power_w", "loaded_power_w"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be > 0 W, got {getattr(self, key)}")
        if self.idle_power_w > self.loaded_power_w:
            raise ValueError(
                f"idle_power_w: {self.idle_power_w} W is above loaded_power_w {self.loaded_power_w} W"
            )
        if not 0.0 < self.inference_rel_maxn <= 1.0:
            raise ValueError(f"inference_rel_maxn: must be within (0, 1], got {self.inference_rel_maxn}")


@dataclass(frozen=True)
class ThermalLimits:
    """``soft_temp_c``: where the board starts throttling (passive trip); the agent should
    back off before it. ``hard_temp_c``: where the board shuts itself down (critical trip)."""

    soft_temp_c: float
    hard_temp_c: float

    def __post_init__(self) -> None:
        if not self.soft_temp_c < self.hard_temp_c:
            raise ValueError(
                f"soft_temp_c: {self.soft_temp_c} C must be below hard_temp_c {self.hard_temp_c} C"
            )


@dataclass(frozen=True)
class RailChannel:
    """One INA3221 channel: ``device`` is the I2C directory name (bus-address, ``1-0040``)."""

    device: str
    channel: int
    rail: str


@dataclass(frozen=True)
class BoardProfile:
    id: str
    name: str
    modes: tuple[ModeProfile, ...]  # lowest budget first
    thermal: ThermalLimits
    thermal_zones: tuple[str, ...]
    rail_channels: tuple[RailChannel, ...]
    total_input_rail: str | None  # the rail that measures the board's input power
    board_power_is_sum: bool  # no such rail: board power is the sum of all rails
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError("modes: a board needs at least one power mode")
        names = [m.name for m in self.modes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"modes: duplicate mode name(s) {dupes}")
        budgets = [m.budget_w for m in self.modes]
        if budgets != sorted(budgets):
            raise ValueError(f"modes: list them lowest budget first, got budgets {budgets}")
        top = max(m.inference_rel_maxn for m in self.modes)
        if top != 1.0:
            raise ValueError(f"modes: the fastest mode must have inference_rel_maxn = 1.0, highest is {top}")
        rails = [c.rail for c in self.rail_channels]
        dupes = sorted({r for r in rails if rails.count(r) > 1})
        if dupes:
            raise ValueError(f"power.ina3221: rail name(s) {dupes} used on more than one channel")
        if self.board_power_is_sum == (self.total_input_rail is not None):
            raise ValueError(
                "power: give exactly one of total_input_rail (a rail that measures the input) "
                "or board_power_is_sum = true"
            )
        if self.total_input_rail is not None and self.total_input_rail not in rails:
            raise ValueError(
                f"power.total_input_rail: {self.total_input_rail!r} is not one of the rails {rails}"
            )
        if not self.sources:
            raise ValueError("sources: cite where the numbers came from")

    @property
    def rails(self) -> tuple[str, ...]:
        return tuple(c.rail for c in self.rail_channels)

    def mode(self, name: str) -> ModeProfile | None:
        for m in self.modes:
            if m.name == name:
                return m
        return None


# --- parsing (pure) -------------------------------------------------------------------------

_TOP_KEYS = {"id", "name", "sources", "thermal_zones", "thermal", "power", "modes"}
_THERMAL_KEYS = {"soft_temp_c", "hard_temp_c"}
_POWER_KEYS = {"total_input_rail", "board_power_is_sum", "ina3221"}
_MODE_KEYS = {"name", "budget_w", "idle_power_w", "loaded_power_w", "inference_rel_maxn"}
_CHANNEL_KEYS = {"in1": 1, "in2": 2, "in3": 3}


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> BoardProfileError:
        return BoardProfileError(f"{self.source}: {key}: {message}")

    def table(self, data: Any, key: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key or "(top level)", f"expected a table, got {type(data).__name__}")
        prefix = f"{key}." if key else ""
        for k in sorted(set(data) - allowed):
            raise self.fail(f"{prefix}{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in sorted(required - set(data)):
            raise self.fail(f"{prefix}{k}", "missing")
        return data

    def number(self, data: dict[str, Any], key: str, path: str) -> float:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(path, f"expected a number, got {value!r}")
        return float(value)

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list of strings, got {type(value).__name__}")
        return tuple(self.string(v, f"{path}[{i}]") for i, v in enumerate(value))


def parse_board_profile(data: dict[str, Any], source: str = "<profile>") -> BoardProfile:
    """A validated profile from parsed TOML; :class:`BoardProfileError` naming ``source``
    and the key for anything missing, mistyped, unknown or inconsistent."""
    c = _Checker(source)
    top = c.table(data, "", _TOP_KEYS, _TOP_KEYS - {"thermal_zones"})
    board_id = c.string(top["id"], "id")
    name = c.string(top["name"], "name")
    sources = c.strings(top["sources"], "sources")
    zones = c.strings(top.get("thermal_zones", []), "thermal_zones")

    thermal_t = c.table(top["thermal"], "thermal", _THERMAL_KEYS, _THERMAL_KEYS)
    try:
        thermal = ThermalLimits(
            c.number(thermal_t, "soft_temp_c", "thermal.soft_temp_c"),
            c.number(thermal_t, "hard_temp_c", "thermal.hard_temp_c"),
        )
    except ValueError as exc:
        if isinstance(exc, BoardProfileError):
            raise
        raise BoardProfileError(f"{source}: thermal.{exc}") from None

    power_t = c.table(top["power"], "power", _POWER_KEYS, {"ina3221"})
    total_rail = power_t.get("total_input_rail")
    if total_rail is not None:
        total_rail = c.string(total_rail, "power.total_input_rail")
    is_sum = power_t.get("board_power_is_sum", False)
    if not isinstance(is_sum, bool):
        raise c.fail("power.board_power_is_sum", f"expected true or false, got {is_sum!r}")
    devices = power_t["ina3221"]
    if not isinstance(devices, dict) or not devices:
        raise c.fail("power.ina3221", "expected a table of devices like [power.ina3221.\"1-0040\"]")
    channels: list[RailChannel] = []
    for device, chans in devices.items():
        path = f"power.ina3221.{device}"
        c.table(chans, path, set(_CHANNEL_KEYS), set())
        if not chans:
            raise c.fail(path, "no channels (in1, in2, in3)")
        for key, rail in sorted(chans.items()):
            channels.append(RailChannel(device, _CHANNEL_KEYS[key], c.string(rail, f"{path}.{key}")))

    modes_raw = top["modes"]
    if not isinstance(modes_raw, list):
        raise c.fail("modes", "expected an array of tables ([[modes]])")
    modes: list[ModeProfile] = []
    for i, m in enumerate(modes_raw):
        path = f"modes[{i}]"
        c.table(m, path, _MODE_KEYS, _MODE_KEYS)
        mode_name = c.string(m["name"], f"{path}.name")
        label = f"{path} ({mode_name})"
        numbers = {k: c.number(m, k, f"{label}.{k}") for k in sorted(_MODE_KEYS - {"name"})}
        try:
            modes.append(ModeProfile(name=mode_name, **numbers))
        except ValueError as exc:
            raise BoardProfileError(f"{source}: {label}.{exc}") from None

    try:
        return BoardProfile(
            id=board_id,
            name=name,
            modes=tuple(modes),
            thermal=thermal,
            thermal_zones=zones,
            rail_channels=tuple(channels),
            total_input_rail=total_rail,
            board_power_is_sum=is_sum,
            sources=sources,
        )
    except ValueError as exc:
        raise BoardProfileError(f"{source}: {exc}") from None


# --- files ----------------------------------------------------------------------------------


def available_boards() -> tuple[str, ...]:
    """Board ids with a profile shipped in this package."""
    folder = resources.files(__name__)
    return tuple(sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml")))


def load_board_file(path: str | Path) -> BoardProfile:
    """A profile from any .toml file (a board not shipped with us, a test's broken copy)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BoardProfileError(f"{path.name}: not valid TOML: {exc}") from None
    return parse_board_profile(data, path.name)


def load_board(board_id: str) -> BoardProfile:
    """The shipped profile ``board_id`` (see :func:`available_boards`)."""
    resource = resources.files(__name__) / f"{board_id}.toml"
    if not resource.is_file():
        raise BoardProfileError(
            f"no board profile {board_id!r}: shipped profiles are {', '.join(available_boards())}"
        )
    try:
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BoardProfileError(f"{board_id}.toml: not valid TOML: {exc}") from None
    profile = parse_board_profile(data, f"{board_id}.toml")
    if profile.id != board_id:
        raise BoardProfileError(f"{board_id}.toml: id: says {profile.id!r}; the file name and id must agree")
    return profile


__all__ = [
    "BoardProfile",
    "BoardProfileError",
    "ModeProfile",
    "RailChannel",
    "ThermalLimits",
    "available_boards",
    "load_board",
    "load_board_file",
    "parse_board_profile",
]
