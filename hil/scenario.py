"""HIL scenario files (TOML): what to fly, how fast, what to break, what to send, what passes.

Example::

    name = "sso-one-orbit"
    profile = "hil/data/profiles/sso_550.parquet"   # or [orbit] below to generate one
    duration_s = 5760
    step_s = 10
    time_mode = "lockstep"        # lockstep (as fast as the agent keeps up) | realtime
    speed = 0                     # lockstep only: at most this many simulated s per wall s (0: no limit)
    seed = 1
    board = "orin_nx_16gb"
    agent = "sunlit"              # sunlit | naive (always COMPUTE at the top mode, no power manager)

    [battery]
    capacity_wh = 60.0
    soc_initial_pct = 80.0

    [power]
    platform_load_w = 12.0

    [compute]
    real = false                  # true: run the real compute worker (real inference), false: modelled
    tiles_per_s_at_maxn = 2000    # modelled throughput at the top mode (calibrate from bench.compute)
    capture_every_s = 60          # real: the harness plays the camera, dropping a file of tiles into
    tiles_per_capture = 256       #   the agent's incoming/ directory every capture_every_s

    [[commands]]
    at_s = 60
    command = "SET_MODE"
    args = { mode = "IDLE" }

    [[faults]]
    at_s = 1200
    kind = "sensor_dropout"       # see FAULT_KINDS
    duration_s = 120
    zone = "tj-thermal"

    [criteria]
    charge_floor_pct = 30.0       # state of charge never below
    temp_max_c = 95.0             # board temperature never above
    min_work = 1000               # at least this much work (tiles) done
    commands_verified = true      # every command completed
    no_unhandled_fault = true     # no INTERNAL_ERROR, agent never silent
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError

FAULT_KINDS = {
    "reboot": "kill -9 the agent and start it again (a SEFI or watchdog reset)",
    "brownout": "bus voltage collapses: the agent is killed, restarted after duration_s, the battery loses energy_wh",
    "sensor_dropout": "a thermal zone reads nothing for duration_s",
    "sensor_stuck": "a thermal zone reads a stuck value for duration_s",
    "compute_hang": "the compute worker stops (SIGSTOP) for duration_s: a functional interrupt",
    "seu_weights": "one bit flips in the working copy of a model file on the board's store",
    "packet_corrupt": "the next telecommand is sent with one bit flipped",
    "packet_drop": "the next telecommand is lost",
    "los": "loss of signal for duration_s: no command reaches the agent",
}
TIME_MODES = ("lockstep", "realtime")
AGENTS = ("sunlit", "naive")


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the key."""


@dataclass(frozen=True)
class FaultSpec:
    at_s: float
    kind: str
    duration_s: float = 0.0
    zone: str = "tj-thermal"
    value: float = 0.0
    energy_wh: float = 0.0


@dataclass(frozen=True)
class CommandSpec:
    at_s: float
    command: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Criteria:
    charge_floor_pct: float | None = None
    temp_max_c: float | None = None
    min_work: float | None = None
    commands_verified: bool = True
    no_unhandled_fault: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    profile: Path | None
    orbit: dict[str, Any] | None
    duration_s: float
    step_s: float
    time_mode: str = "lockstep"
    speed: float = 0.0
    seed: int = 0
    board: str = "orin_nx_16gb"
    agent: str = "sunlit"
    capacity_wh: float = 60.0
    soc_initial_pct: float = 80.0
    platform_load_w: float = 12.0
    compute_real: bool = False
    tiles_per_s_at_maxn: float = 2000.0
    capture_every_s: float = 60.0
    tiles_per_capture: int = 256
    fault_rate_scale: float = 0.0  # > 0: also draw upsets from the profile's upset rate (x this scale)
    tle: tuple[str, str] | None = None
    faults: tuple[FaultSpec, ...] = ()
    commands: tuple[CommandSpec, ...] = ()
    criteria: Criteria = field(default_factory=Criteria)
    agent_parameters: dict[str, Any] = field(default_factory=dict)


_TOP = {"name", "profile", "duration_s", "step_s", "time_mode", "speed", "seed", "board", "agent", "battery", "power",
        "compute", "orbit", "faults", "commands", "criteria", "parameters", "radiation"}


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(raw, str(path), base_dir=path.parent)


def parse_scenario(raw: dict[str, Any], source: str = "(scenario)", base_dir: Path | None = None) -> Scenario:
    def fail(key: str, message: str) -> ScenarioError:
        return ScenarioError(f"{source}: {key}: {message}")

    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise fail(unknown[0], f"unknown key; a scenario takes {', '.join(sorted(_TOP))}")

    def number(table: dict[str, Any], key: str, default: float, where: str, lo: float | None = None) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"{where}{key}", f"expected a number, got {value!r}")
        if lo is not None and value < lo:
            raise fail(f"{where}{key}", f"{value} is below {lo}")
        return float(value)

    def table(key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise fail(key, "must be a table")
        return value

    profile = raw.get("profile")
    orbit = raw.get("orbit")
    if (profile is None) == (orbit is None):
        raise fail("profile", "give exactly one of profile (a file) or [orbit] (to generate one)")
    if profile is not None:
        profile = Path(profile)
        if not profile.is_absolute():
            candidates = [Path.cwd() / profile] + ([base_dir / profile] if base_dir else [])
            profile = next((c for c in candidates if c.exists()), candidates[0])
        if not profile.exists():
            raise fail("profile", f"{profile} does not exist")
    if orbit is not None and not isinstance(orbit, dict):
        raise fail("orbit", "must be a table (tle = [l1, l2], or alt_km / inc_deg / raan_deg / epoch)")
    time_mode = raw.get("time_mode", "lockstep")
    if time_mode not in TIME_MODES:
        raise fail("time_mode", f"{time_mode!r} is not one of {', '.join(TIME_MODES)}")
    agent = raw.get("agent", "sunlit")
    if agent not in AGENTS:
        raise fail("agent", f"{agent!r} is not one of {', '.join(AGENTS)}")
    battery, power, compute, crit = table("battery"), table("power"), table("compute"), table("criteria")
    faults = []
    for i, f in enumerate(raw.get("faults", [])):
        where = f"faults[{i}]."
        if not isinstance(f, dict) or f.get("kind") not in FAULT_KINDS:
            raise fail(f"faults[{i}].kind", f"must be one of {', '.join(FAULT_KINDS)}")
        extra = set(f) - {"at_s", "kind", "duration_s", "zone", "value", "energy_wh"}
        if extra:
            raise fail(f"{where}{sorted(extra)[0]}", "unknown key")
        faults.append(FaultSpec(number(f, "at_s", 0, where, 0), f["kind"], number(f, "duration_s", 0, where, 0),
                                str(f.get("zone", "tj-thermal")), number(f, "value", 0, where),
                                number(f, "energy_wh", 0, where, 0)))
    commands = []
    for i, c in enumerate(raw.get("commands", [])):
        where = f"commands[{i}]."
        if not isinstance(c, dict) or "command" not in c:
            raise fail(f"commands[{i}]", "needs at_s, command and args")
        try:
            cmd = DICTIONARY.command(str(c["command"]))
            args = cmd.validate_args(dict(c.get("args", {})))
        except ArgumentError as exc:
            raise fail(f"{where}command", str(exc)) from None
        commands.append(CommandSpec(number(c, "at_s", 0, where, 0), cmd.name, args))
    tle = None
    if isinstance(orbit, dict) and "tle" in orbit:
        tle = tuple(orbit["tle"])
    duration = number(raw, "duration_s", 5760, "", 1)
    step = number(raw, "step_s", 10, "", 0.01)
    if step > duration:
        raise fail("step_s", f"{step} s is longer than duration_s {duration} s")
    return Scenario(
        name=str(raw.get("name", Path(source).stem)),
        source=source,
        profile=profile,
        orbit=orbit,
        duration_s=duration,
        step_s=step,
        time_mode=time_mode,
        speed=number(raw, "speed", 0, "", 0),
        seed=int(number(raw, "seed", 0, "")),
        board=str(raw.get("board", "orin_nx_16gb")),
        agent=agent,
        capacity_wh=number(battery, "capacity_wh", 60.0, "battery.", 0.1),
        soc_initial_pct=number(battery, "soc_initial_pct", 80.0, "battery.", 0),
        platform_load_w=number(power, "platform_load_w", 12.0, "power.", 0),
        compute_real=bool(compute.get("real", False)),
        tiles_per_s_at_maxn=number(compute, "tiles_per_s_at_maxn", 2000.0, "compute.", 0),
        capture_every_s=number(compute, "capture_every_s", 60.0, "compute.", 1),
        tiles_per_capture=int(number(compute, "tiles_per_capture", 256, "compute.", 1)),
        fault_rate_scale=number(table("radiation"), "fault_rate_scale", 0.0, "radiation.", 0),
        tle=tle,  # type: ignore[arg-type]
        faults=tuple(sorted(faults, key=lambda f: f.at_s)),
        commands=tuple(sorted(commands, key=lambda c: c.at_s)),
        criteria=Criteria(
            charge_floor_pct=crit.get("charge_floor_pct"),
            temp_max_c=crit.get("temp_max_c"),
            min_work=crit.get("min_work"),
            commands_verified=bool(crit.get("commands_verified", True)),
            no_unhandled_fault=bool(crit.get("no_unhandled_fault", True)),
        ),
        agent_parameters=dict(table("parameters")),
    )
