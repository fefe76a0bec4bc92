"""HIL scenario files (TOML): what to fly, how fast, what to break, what to send, what passes.

Every key of every table is known: a key the format does not have (``capacity = 5.0`` for
``capacity_wh``) or a value it cannot fly (``soc_initial_pct = 150``, an unknown board or
thermal zone, ``alt_km = -100``, a profile file that is missing or corrupt) is a
:class:`ScenarioError` naming the file and the key, with the closest known key suggested::

    sso.toml: battery.capacity: unknown key (did you mean capacity_wh?)
    sso.toml: battery.soc_initial_pct: 150 is outside [0, 100]

A typo that is ignored flies a different scenario than the one written and may still pass;
hence strict. ``sunlit-hil run`` exits 2 for such a file (0: every criterion held, 1: one failed).

Example, every key (the defaults are shown where a key may be left out)::

    name = "sso-one-orbit"                          # default: the file's stem
    profile = "hil/data/profiles/sso_550.parquet"   # a profile file (relative to the working directory
                                                    #   or to this file: a name found both ways, two files,
                                                    #   is refused), or [orbit] below to generate one
    duration_s = 5760
    step_s = 10
    time_mode = "lockstep"        # lockstep (as fast as the agent keeps up) | realtime
    speed = 0                     # lockstep only: at most this many simulated s per wall s (0: no limit)
    seed = 1                      # a whole number >= 0
    board = "orin_nx_16gb"        # a shipped board profile: flight/hal/boards/*.toml
    agent = "sunlit"              # sunlit | naive (always COMPUTE at the top mode, no power manager)

    [orbit]                       # instead of profile: tle = [line1, line2] (and start), or alt_km with
    alt_km = 550.0                #   inc_deg or sun_synchronous = true, raan_deg or ltan_h, epoch, ecc,
    sun_synchronous = true        #   argp_deg, mean_anomaly_deg, start, name
    ltan_h = 22.5                 #   (hil/profiles/generate.py, orbit_from_description)
    epoch = "2026-11-24T00:00:00Z"  # epoch and start: 1957 to 2056, the years a TLE's two digits can say

    [array]                       # only with [orbit]: the truth the profile is generated with; with it
    pointing = "body_fixed"       #   the agent is given its own model of the arrays ([belief]) and plans
                                  #   on a forecast of their output; sun_tracking (default) | body_fixed
    attitude = "nadir"            # body_fixed only: nadir | sun | inertial (hil/physics/solar.py)
    normal_orbit_frame = [1.0, 0.0, 0.0]   # one panel: radial, along-track, orbit normal (nadir only)
    area_m2 = 0.2                 #   and its area
    efficiency = 0.30             # 30 % cells, losing 1 %/yr, new
    degradation_per_year = 0.01
    years_in_orbit = 0.0

    [[array.panels]]              # instead of normal_orbit_frame and area_m2: several panels, each
    normal = [1.0, 0.0, 0.0]      #   its normal in the body frame (nadir: the orbit frame; sun: +X at
    area_m2 = 0.1                 #   the Sun, +Z toward the orbit normal; inertial: TEME) and area

    [belief]                      # how the agent's own models are wrong (the scenario is the truth)
    efficiency_error_pct = 8.0    # only with [array]: its configured efficiency is the truth's x (1 + this/100)
    degradation_known = false     # only with [array]; false: it believes a new array (no degradation)
    platform_load_error_pct = 10.0  # its configured platform_load_w is the truth's x (1 + this/100): a
                                  #   power budget with margin; it learns the rest from its gauge
    tle_along_track_km = 3.0      # its TLE puts the spacecraft this far ahead along track of the truth's
                                  #   orbit (a TLE a day or two old; lockstep only: the agent gets no TLE in
                                  #   real time)

    [sensors]                     # how the agent's instruments read the truth (seeded by seed)
    soc_step_pct = 1.0            # the fuel gauge's resolution: whole percent, as a smart battery's
                                  #   RelativeStateOfCharge (0: exact)
    power_noise_pct = 1.0         # each solar and board power reading's noise, one standard
                                  #   deviation of the value (0: exact)
    gauge_capacity = true         # the gauge reports the capacity it has learnt (SBS FullChargeCapacity):
    capacity_error_pct = 2.0      #   the truth's capacity_wh x (1 + this/100); false: the agent has only
                                  #   the nameplate_wh of its configuration
    temp_noise_c = 0.5            # each thermal zone reading's noise, one standard deviation (0: exact)
    bus_voltage_noise_v = 0.02    # the bus voltage reading's noise, one standard deviation (0: exact)

    [battery]
    capacity_wh = 60.0            # > 0: the truth (a battery that faded: below its nameplate)
    nameplate_wh = 60.0           # what the agent's configuration says (default: capacity_wh, a new battery;
                                  #   the gauge's capacity must be within 0.3 to 1.2 of it)
    soc_initial_pct = 80.0        # 0 to 100
    charge_efficiency = 0.94      # the truth's (the agent assumes 0.95 each way, flight/power/lp.py)
    discharge_efficiency = 0.95

    [power]
    platform_load_w = 12.0        # the rest of the spacecraft, always on
    load_steps = [[3600, 4.0], [7200, -4.0]]   # from at_s (0 to duration_s), this many W more (or less: the
                                  #   load never below 0) that nobody announces: the agent learns them from its
                                  #   gauge, as a heater or a payload switching on (default: none)

    [thermal]                     # the board's cooling: the truth hil/physics/thermal.py flies (two nodes)
    radiator_area_m2 = 0.045      # one face radiating, white paint: size it to the board's heat (this one
                                  #   holds a board at 15 W near 48 °C over an orbit, at 25 W near 92 °C)
    board_to_radiator_w_per_k = 1.0   # the board's interface and strap (or heat pipe) to the radiator
    radiator_heat_capacity_j_per_k = 180.0  # default: 4000 J/K per m² of radiator (1.5 mm of aluminium)

    [compute]
    real = false                  # false: modelled, true: the real compute worker (see below)
    tiles_per_s_at_maxn = 2000    # modelled throughput at the top mode (calibrate from bench.compute)
    capture_every_s = 60          # real only: the harness plays the camera, dropping a file of
    tiles_per_capture = 256       #   tiles into the agent's incoming/ directory every capture_every_s

    [radiation]
    fault_rate_scale = 0.0        # > 0 (real compute only): also draw upsets from the profile's upset
                                  #   rate x this scale (seu_weights nine in ten, reboots)
    memory_upset_scale = 0.0      # > 0 (real compute only): upsets into the worker's memory at the
                                  #   profile's upset rate x this scale (see below)
    memory_targets = ["weights", "activations", "outputs"]   # where they land, one drawn per upset
                                  #   (also "golden": the scrubber's golden copies of the weights)

    [parameters]                  # start-up values of the agent's dictionary parameters
    battery_floor_pct = 30.0

    [[commands]]                  # sent over the real ground link at at_s (0 to duration_s)
    at_s = 60
    command = "SET_MODE"          # a dictionary command; args checked against it
    args = { mode = "IDLE" }

    [[faults]]                    # at_s and kind always; the other keys only where the kind uses them
    at_s = 1200
    kind = "sensor_dropout"       # see FAULT_KINDS and FAULT_KEYS
    duration_s = 120
    zone = "tj-thermal"           # a zone the board has and the harness feeds (HARNESS_ZONES)

    [link]                        # the ground link through a proxy with faults (hil/link_proxy.py); either
    drop = 0.0                    #   one value for both directions here, or per direction in [link.up]
    corrupt = 0.0                 #   (commands) and [link.down] (replies, telemetry), not both for one key;
    duplicate = 0.0               #   probabilities 0 to 1 per packet; corrupt flips one bit (the CRC catches it)
    reorder = 0.0                 # hold a packet and release it after the next one
    delay_s = 0.0                 # wall-clock s (0 to 10), as the ground's command timeouts are
    jitter_s = 0.0                # + uniform(0, jitter_s), wall-clock s (0 to 10)
    gate_by_contact = false       # true: nothing passes either way while the profile's in_contact is false
    seed = 1                      # the faults' random sequence; default: the scenario's seed

    [link.up]                     # the same six keys, for one direction only
    drop = 0.1

    [criteria]
    charge_floor_pct = 30.0       # state of charge never below
    temp_max_c = 95.0             # board temperature never above
    min_work = 1000               # at least this much work done (what it counts: below)
    commands_verified = true      # every command completed (written here with no [[commands]]: fails)
    no_unhandled_fault = true     # no INTERNAL_ERROR, agent never silent

The array's attitude moves body-fixed panels only: with ``pointing = "sun_tracking"`` every
panel faces the Sun whatever the attitude, so ``attitude`` there is an error (it would be
ignored), and the panels' normals do not matter (their areas add). ``normal_orbit_frame``
names the orbit frame, which is the body frame only under ``attitude = "nadir"``; under
another attitude give ``[[array.panels]]``.

Faults, with the keys each kind takes besides at_s and kind (``FAULT_KINDS``, ``FAULT_KEYS``);
duration_s is required (> 0) where marked, value (°C) for a stuck sensor::

    reboot                                       kill -9 the agent and start it again (SEFI, watchdog)
    brownout        duration_s energy_wh         the agent is down for duration_s, the battery loses energy_wh
    sensor_dropout  duration_s* zone             the zone reads nothing
    sensor_stuck    duration_s* zone value*      the zone reads value
    compute_hang    duration_s                   SIGSTOP of the compute worker for duration_s, then SIGCONT
                                                 (0: hung until the watchdog replaces it; real compute only)
    seu_weights                                  one bit flips in a model file on the board's store
                                                 (real compute only; before the worker has put its
                                                 model there it flips nothing, and the run fails)
    packet_corrupt                               the next telecommand no other fault hit has one bit flipped
    packet_drop                                  the next telecommand no other fault hit is lost
    los             duration_s*                  loss of signal: nothing goes up, nothing comes down

A sensor_dropout or compute_hang may not begin while a brownout holds the agent down (it could not be seen).

The link, ``[link]``. Without the table the harness's ground client talks to the agent
directly; with it (even empty) a :class:`hil.link_proxy.LinkProxy` sits between them and
``summary.json`` counts, per direction, the packets passed, dropped, corrupted, duplicated,
reordered and lost to loss of signal (``link``). ``gate_by_contact = true`` is loss of signal as
physics: the link is down while the profile's ``in_contact`` is false at the harness's simulated
time, commands wait for the next contact (one still waiting at the end is logged "not sent"),
and telemetry sent out of contact never reaches the ground. The default is false because the
shipped sun-synchronous profile sees no station above its mask (every scenario flying it would
send nothing); ``dawn_dusk.parquet`` has contacts. The harness's console joins before time
starts on a clean, open link; the faults and the gate apply from the first step. The ``los``
fault kind shuts the same gate for its duration, with or without ``[link]`` (a scenario with one
flies through a proxy, faultless without the table): commands are held, the packet store is not
acknowledged, and the agent's telemetry is lost until it plays it back (found in audit: it only
held commands, so the agent never lost contact).

Compute, modelled or real. With ``real = false`` (modelled) the agent runs no compute worker:
the work figure is tile-equivalents of the board's modelled throughput
(``tiles_per_s_at_maxn`` x the mode's ``inference_rel_maxn`` x the duty the agent chose), and the
agent refuses the compute commands (INFER_START, MODEL_INSTALL...: NOT_ALLOWED_IN_MODE), so a
scenario that sends one with ``commands_verified = true`` is refused here, as is a
``compute_hang`` fault (there is no worker to hang). With ``real = true`` the worker screens the
camera's tiles with ONNX Runtime and the work figure counts those tiles; the model's figure is
kept in the summary as a reference only. The summary says which (hil/run.py).

Upsets into the worker's memory, ``[radiation] memory_upset_scale`` (real compute only). Each
step the harness draws ``Poisson(upset_rate_per_s x memory_upset_scale x step_s)`` upsets from
the profile (the truth), each into one of ``memory_targets`` drawn uniformly, and asks the worker
for it (a file in ``compute/hil-upsets/``; the agent runs with ``[compute] upset_injection``,
flight/compute/inject.py): a bit of the weights it owns, of an activation through a hook in the
graph, or of a result it holds; with ``golden`` in the list, of one of the scrubber's three golden
copies of the weights (no result reads them: what it tests is the scrub's vote, and a run of golden
upsets alone needs no batch to judge, but the scrub to find one: it checks one copy a pass). The worker follows each to its end and keeps a ledger; the
summary (``memory_upsets``) and the report count per target the upsets asked for, applied,
detected (and by what), corrected, and the tiles whose product said passed while corrupt
(``corrupt_reported_good``) or unchecked (``corrupt_results_unchecked``: checks off). A run that
asked for upsets and has none to judge (none drawn, no ledger, none applied, no batch run on
one) fails ``no_corrupt_result_reported_good`` too: it tested nothing. The profile's rate is for the whole
board; all of it is aimed at the worker's few megabytes, which is why the scale is a stress
factor, not a physical one.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from flight import toml_text
from flight.agent.compute import ComputeSupervisor
from flight.compute.inject import DEFAULT_TARGETS as DEFAULT_MEMORY_TARGETS
from flight.compute.inject import TARGETS as MEMORY_TARGETS
from flight.config import board_limit_problem
from flight.hal.boards import BoardProfileError, available_boards, load_board
from flight.link.definitions import DICTIONARY, ORDERED_PARAMETERS
from flight.link.dictionary import ArgumentError
from flight.storage import ReadRefused, printable, read_limited
from hil.link_proxy import DURATIONS, PROBABILITIES, DirectionFaults, LinkFaults
from hil.physics.solar import ATTITUDES, POINTINGS
from hil.profiles.generate import GENERATOR, ORBIT_KEYS, orbit_from_description, parse_epoch, replay_check
from hil.profiles.generate import MAX_STEPS as PROFILE_MAX_STEPS
from hil.profiles.format import ProfileError

FAULT_KINDS = {
    "reboot": "kill -9 the agent and start it again (a SEFI or watchdog reset)",
    "brownout": "bus voltage collapses: the agent is killed, restarted after duration_s, the battery loses energy_wh",
    "sensor_dropout": "a thermal zone reads nothing for duration_s",
    "sensor_stuck": "a thermal zone reads a stuck value for duration_s",
    "compute_hang": "the compute worker stops (SIGSTOP) for duration_s: a functional interrupt",
    "seu_weights": "one bit flips in the working copy of a model file on the board's store",
    "packet_corrupt": "the next telecommand no other fault hit is sent with one bit flipped",
    "packet_drop": "the next telecommand no other fault hit is lost",
    "los": "loss of signal for duration_s: nothing reaches the agent and nothing it sends reaches the ground",
}
FAULT_KEYS: dict[str, tuple[str, ...]] = {
    # Beyond at_s and kind, the keys each kind uses; any other is an error, since the harness
    # would ignore it (a zone on a reboot, a value on a dropout).
    "reboot": (),
    "brownout": ("duration_s", "energy_wh"),
    "sensor_dropout": ("duration_s", "zone"),
    "sensor_stuck": ("duration_s", "zone", "value"),
    "compute_hang": ("duration_s",),
    "seu_weights": (),
    "packet_corrupt": (),
    "packet_drop": (),
    "los": ("duration_s",),
}
MAX_DURATION_S = 30 * 86400.0  # a run's length
MAX_STEPS = PROFILE_MAX_STEPS  # steps of a run: its trace holds every one, and its profile is generated in one
MAX_PLATFORM_LOAD_W = 5000.0
MAX_TILES_PER_S = 1e7  # modelled throughput at the top mode
NEEDS_DURATION = ("sensor_dropout", "sensor_stuck", "los")  # with duration_s = 0 they would do nothing
HARNESS_ZONES = ("tj-thermal", "cpu-thermal", "gpu-thermal", "soc0-thermal")
"""The thermal zones the harness feeds (hil/loop.py ZONE_OFFSETS_C; a test keeps the two equal).
A sensor fault on another zone would change nothing the agent reads."""
TIME_MODES = ("lockstep", "realtime")
AGENTS = ("sunlit", "naive")
COMPUTE_COMMANDS = tuple(ComputeSupervisor.COMMANDS)
"""Commands the compute worker carries out: refused by the agent when compute is modelled."""

LINK_FAULT_KEYS = PROBABILITIES + DURATIONS
LINK_DELAY_MAX_S = 10.0
# Found in audit: 1e8 was accepted, a capture of 400 GB (float32, 4 bands of 16 x 16 px) made in memory at the
# first step. 65,536 tiles is 256 MiB a capture, 256 times the default.
MAX_TILES_PER_CAPTURE = 65_536
MAX_RATE_SCALE = 1e9  # [radiation] scales of the profile's upset rate: beyond it a step's Poisson mean overflows
"""The most delay_s and jitter_s may each be: the harness waits 20 s of wall time for a command's reports."""

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "": ("name", "profile", "duration_s", "step_s", "time_mode", "speed", "seed", "board", "agent", "battery",
         "power", "compute", "orbit", "faults", "commands", "criteria", "parameters", "radiation", "array",
         "belief", "link", "sensors", "thermal"),
    "array": ("pointing", "attitude", "normal_orbit_frame", "area_m2", "panels", "efficiency", "degradation_per_year",
              "years_in_orbit"),
    "array.panels": ("normal", "area_m2"),
    "belief": ("efficiency_error_pct", "degradation_known", "platform_load_error_pct", "tle_along_track_km"),
    "sensors": ("soc_step_pct", "power_noise_pct", "gauge_capacity", "capacity_error_pct", "temp_noise_c",
                "bus_voltage_noise_v"),
    "battery": ("capacity_wh", "nameplate_wh", "soc_initial_pct", "charge_efficiency", "discharge_efficiency"),
    "power": ("platform_load_w", "load_steps"),
    "thermal": ("radiator_area_m2", "board_to_radiator_w_per_k", "radiator_heat_capacity_j_per_k"),
    "compute": ("real", "tiles_per_s_at_maxn", "capture_every_s", "tiles_per_capture"),
    "radiation": ("fault_rate_scale", "memory_upset_scale", "memory_targets"),
    "criteria": ("charge_floor_pct", "temp_max_c", "min_work", "commands_verified", "no_unhandled_fault"),
    "orbit": tuple(ORBIT_KEYS),
    "commands": ("at_s", "command", "args"),
    "faults": ("at_s", "kind", "duration_s", "zone", "value", "energy_wh"),
    "link": LINK_FAULT_KEYS + ("gate_by_contact", "seed", "up", "down"),
    "link.up": LINK_FAULT_KEYS,
    "link.down": LINK_FAULT_KEYS,
}
"""Every key of every table ([parameters] takes the dictionary's parameter names)."""
_TOP = set(TABLE_KEYS[""])  # kept for code that read the old name


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the key.

    ``source`` (the file) and ``key`` (its dotted path, ``battery.capacity_wh``,
    ``faults[2].zone``) are kept as attributes too, None where the whole file is at fault.
    """

    def __init__(self, message: str, source: str | None = None, key: str | None = None):
        super().__init__(message)
        self.source = source
        self.key = key


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
    # The keys [criteria] gave, the rest defaults: commands_verified given with no command to verify fails, at its
    # default it is not applicable (hil/report.py).
    stated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LinkSpec:
    """[link]: the faults of the proxy between the harness's ground client and the agent."""

    faults: LinkFaults = field(default_factory=LinkFaults)
    gate_by_contact: bool = False
    seed: int = 0


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
    charge_efficiency: float = 0.94  # [battery]: the truth's; the agent assumes 0.95 each way
    discharge_efficiency: float = 0.95
    platform_load_w: float = 12.0
    load_steps: tuple[tuple[float, float], ...] = ()  # [power]: (from run-relative s, W more) nobody announces
    # [thermal]: the board's cooling (hil.physics.thermal.ThermalParams; the rest of it as there)
    radiator_area_m2: float = 0.045
    board_to_radiator_w_per_k: float = 1.0
    radiator_heat_capacity_j_per_k: float = 180.0
    compute_real: bool = False
    tiles_per_s_at_maxn: float = 2000.0
    capture_every_s: float = 60.0
    tiles_per_capture: int = 256
    fault_rate_scale: float = 0.0  # > 0: also draw upsets from the profile's upset rate (x this scale)
    memory_upset_scale: float = 0.0  # > 0: upsets into the worker's memory at the profile's rate x this
    memory_targets: tuple[str, ...] = DEFAULT_MEMORY_TARGETS
    tle: tuple[str, str] | None = None
    faults: tuple[FaultSpec, ...] = ()
    commands: tuple[CommandSpec, ...] = ()
    criteria: Criteria = field(default_factory=Criteria)
    agent_parameters: dict[str, Any] = field(default_factory=dict)
    # [array]: the truth the profile is generated with (hil.profiles.generate.SpacecraftParams
    # fields), None: the generator's defaults and no array model for the agent.
    array: dict[str, Any] | None = None
    # [belief]: how the agent's own array model is wrong (it gets one only with [array]).
    efficiency_error_pct: float = 8.0
    degradation_known: bool = False
    platform_load_error_pct: float = 10.0  # [belief]: its configured platform load is the truth's x (1 + this/100)
    tle_along_track_km: float = 3.0  # [belief]: its TLE is this far ahead of the truth's orbit along track
    # [sensors]: what the agent reads of the truth (the harness's battery and power are the truth).
    soc_step_pct: float = 1.0
    power_noise_pct: float = 1.0
    gauge_capacity: bool = True
    capacity_error_pct: float = 2.0
    temp_noise_c: float = 0.5
    bus_voltage_noise_v: float = 0.02
    nameplate_wh: float | None = None  # [battery]: what the agent is configured with (None: capacity_wh)
    # [link]: a proxy with faults between the ground client and the agent; None: no proxy.
    link: LinkSpec | None = None

    def platform_load_at_w(self, rel_s: float) -> float:
        """The truth's platform load at ``rel_s`` into the run: the constant part and every step begun by then."""
        return self.platform_load_w + sum(extra for at_s, extra in self.load_steps if at_s <= rel_s)

    def thermal_params(self) -> Any:
        """The two-node model's parameters this scenario flies (hil.physics.thermal.ThermalParams)."""
        from hil.physics.thermal import ThermalParams

        return ThermalParams(board_to_radiator_w_per_k=self.board_to_radiator_w_per_k,
                             radiator_area_m2=self.radiator_area_m2,
                             radiator_heat_capacity_j_per_k=self.radiator_heat_capacity_j_per_k)


MAX_SCENARIO_BYTES = 1 << 20  # a scenario is a few kilobytes of TOML


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file; raises :class:`ScenarioError` naming the file and the key."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(path)
        # bounded, no FIFO waited on (found in audit: /dev/zero grew the harness to a MemoryError, exit 3)
        raw = toml_text.loads(read_limited(path, MAX_SCENARIO_BYTES)[0].decode("utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file", str(path)) from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a scenario file", str(path)) from None
    except ReadRefused as exc:
        raise ScenarioError(f"{path}: no scenario file: {exc}", str(path)) from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc.strerror or exc}", str(path)) from None
    except (toml_text.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}", str(path)) from None
    return parse_scenario(raw, str(path), base_dir=path.parent)


_CLOSE = 0.65
"""difflib's similarity for a suggestion: 'capacity' finds capacity_wh (0.84), 'alt' alt_km (0.67),
while 'duraton_s' does not find at_s (0.62)."""


def unknown_key_message(key: str, known: Iterable[str], what: str) -> str:
    """'unknown key (did you mean X?)', or the known keys when none is close."""
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=_CLOSE)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key; {what} takes {', '.join(known) if known else 'no keys'}"


def _choice_message(value: Any, choices: Iterable[str], what: str) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=_CLOSE)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{value!r} is not {what}{hint}; one of {', '.join(choices)}"


class _Checker:
    """Reads one scenario's tables; every error it raises names the source and the key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {key}: {message}", self.source, key)

    @staticmethod
    def path(where: str, key: str) -> str:
        return f"{where}.{key}" if where else key

    def only(self, data: dict[str, Any], where: str, known: Iterable[str], what: str) -> None:
        """Refuse the first key (in file order) that is not in ``known``."""
        known = tuple(known)
        for key in data:
            if key not in known:
                raise self.fail(self.path(where, str(key)), unknown_key_message(key, known, what))

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {_kind(value)}")
        self.only(value, key, TABLE_KEYS[key], f"[{key}]")
        return value

    def tables(self, data: dict[str, Any], key: str, name: str | None = None) -> list[dict[str, Any]]:
        """An array of tables; ``name``: its dotted path where it is not at the top (array.panels)."""
        name = name or key
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(name, f"must be an array of tables ([[{name}]]), got {_kind(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{name}[{i}]", f"must be a table, got {_kind(item)}")
        return value

    def number(self, data: dict[str, Any], key: str, where: str, default: float | None, *,
               lo: float | None = None, hi: float | None = None, above: float | None = None,
               integer: bool = False, why: str = "") -> float | None:
        """A finite number in range; ``default`` when absent (a missing key with no default is an error)."""
        name = self.path(where, key)
        if key not in data:
            if default is None:
                raise self.fail(name, "missing")
            return default
        value = data[key]
        wanted = "a whole number" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's numbers too (campaigns)
            raise self.fail(name, f"expected {wanted}, got {value!r}")
        if not _finite(value):
            raise self.fail(name, f"expected a finite number, got {value!r}"[:200])
        if integer and value != int(value):
            raise self.fail(name, f"expected a whole number, got {value!r}")
        note = f" ({why})" if why else ""
        if above is not None and not value > above:
            raise self.fail(name, f"{value:g} must be above {above:g}{note}")
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise self.fail(name, f"{value:g} is outside [{lo:g}, {hi:g}]{note}")
        if lo is not None and value < lo:
            raise self.fail(name, f"{value:g} is below {lo:g}{note}")
        if hi is not None and value > hi:
            raise self.fail(name, f"{value:g} is above {hi:g}{note}")
        return int(value) if integer else float(value)  # a whole number stays exact (a seed past 2**53)

    def optional(self, data: dict[str, Any], key: str, where: str, **limits: Any) -> float | None:
        return self.number(data, key, where, None, **limits) if key in data else None

    def boolean(self, data: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(self.path(where, key), f"expected true or false, got {value!r}")
        return value

    def string(self, data: dict[str, Any], key: str, where: str, default: str | None) -> str:
        if key not in data and default is not None:
            return default
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(self.path(where, key), f"expected a non-empty string, got {value!r}"
                            if key in data else "missing")
        return value

    def choice(self, data: dict[str, Any], key: str, where: str, default: str, choices: Iterable[str],
               what: str) -> str:
        value = data.get(key, default)
        choices = tuple(choices)
        if not isinstance(value, str) or value not in choices:
            raise self.fail(self.path(where, key), _choice_message(value, choices, what))
        return value


def _finite(value: Any) -> bool:
    """math.isfinite that answers False for a whole number past a float's range: TOML's integers have no bound
    in the parser (found in audit: a 400-digit at_s or duration_s raised OverflowError, an internal error)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def parse_scenario(raw: dict[str, Any], source: str = "(scenario)", base_dir: Path | None = None) -> Scenario:
    """A :class:`Scenario` from a parsed TOML dict; ``source`` names it in errors, ``base_dir``
    is where a relative ``profile`` path may also be found. Raises :class:`ScenarioError`."""
    c = _Checker(source)
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario is a table of keys, got {_kind(raw)}", source)
    c.only(raw, "", TABLE_KEYS[""], "a scenario")

    name = c.string(raw, "name", "", Path(source).stem)
    if not name.isprintable():  # found in audit: a control character made junit.xml no CI reads, and reached the tty
        raise c.fail("name", f"{name!r}: has a character that is not printable (a control character or a line "
                             "break)"[:300])
    time_mode = c.choice(raw, "time_mode", "", "lockstep", TIME_MODES, "a time mode")
    agent = c.choice(raw, "agent", "", "sunlit", AGENTS, "an agent")
    board_id = c.choice(raw, "board", "", "orin_nx_16gb", available_boards(), "a shipped board profile")
    try:
        board = load_board(board_id)
    except BoardProfileError as exc:  # a shipped profile that does not load: say so, naming the key
        raise c.fail("board", str(exc)) from None
    duration = c.number(raw, "duration_s", "", 5760.0, above=0, hi=MAX_DURATION_S,
                        why=f"a run of at most {MAX_DURATION_S / 86400:g} days")
    step = c.number(raw, "step_s", "", 10.0, lo=0.01)
    if step > duration:
        raise c.fail("step_s", f"{step:g} s is longer than duration_s {duration:g} s")
    steps = duration / step
    if steps > MAX_STEPS:  # the trace holds every step (found in audit: 1e12 s asked for 745 GiB, an internal error)
        raise c.fail("step_s", f"{steps:.3g} steps of {step:g} s in duration_s {duration:g} s: at most {MAX_STEPS:,}; "
                               "a longer step or a shorter run")
    if abs(steps - round(steps)) > 1e-9 * steps:  # the loop flies whole steps; a profile made for it stops short
        below, above = math.floor(steps) * step, math.ceil(steps) * step
        raise c.fail("duration_s", f"{duration:g} s is not a whole number of steps of step_s = {step:g} s "
                                   f"(make it {below:g} or {above:g})")
    speed = c.number(raw, "speed", "", 0.0, lo=0)
    if speed and time_mode != "lockstep":
        raise c.fail("speed", f"only for time_mode = \"lockstep\" (a {time_mode} run follows the wall clock)")
    seed = int(c.number(raw, "seed", "", 0, lo=0, integer=True))

    array = _array(c, raw)
    if array is not None and "orbit" not in raw:
        raise c.fail("array", "only with [orbit]: a profile file already holds its array (its metadata)")
    belief = c.table(raw, "belief")
    for key in ("efficiency_error_pct", "degradation_known"):
        if key in belief and array is None:  # an audit: taken and ignored, a different scenario flown
            raise c.fail(f"belief.{key}", "only with [array]: the agent gets its own model of the arrays (which "
                                          "[belief] makes wrong) from the scenario's [array] table")
    profile, orbit, tle = _profile_or_orbit(c, raw, base_dir, duration)

    battery, power, compute = c.table(raw, "battery"), c.table(raw, "power"), c.table(raw, "compute")
    sensors = c.table(raw, "sensors")
    capacity_wh, nameplate_wh, gauge_capacity, capacity_error_pct = _battery_belief(c, battery, sensors)
    radiation, crit = c.table(raw, "radiation"), c.table(raw, "criteria")
    real = c.boolean(compute, "real", "compute", False)
    if real and agent == "naive":
        raise c.fail("compute.real", "the naive agent runs no compute worker; real = true needs agent = \"sunlit\"")
    if not real:
        for key in ("capture_every_s", "tiles_per_capture"):
            if key in compute:
                raise c.fail(f"compute.{key}", "only used when real = true (the harness plays the camera for the "
                                               "real worker); modelled compute takes tiles_per_s_at_maxn")

    memory_scale = c.number(radiation, "memory_upset_scale", "radiation", 0.0, lo=0, hi=MAX_RATE_SCALE,
                            why="past it the draws overflow; a run follows 1000 upsets a step at most")
    if memory_scale > 0 and not real:
        raise c.fail("radiation.memory_upset_scale", "upsets into the worker's memory need the real worker "
                                                     "([compute] real = true)")
    targets = radiation.get("memory_targets", list(DEFAULT_MEMORY_TARGETS))
    if not isinstance(targets, list) or not targets or any(t not in MEMORY_TARGETS for t in targets):
        raise c.fail("radiation.memory_targets", f"a non-empty list of {', '.join(MEMORY_TARGETS)}; got {targets!r}")

    commands_verified = c.boolean(crit, "commands_verified", "criteria", True)
    faults = [_fault(c, f, i, duration, board.thermal_zones, real) for i, f in enumerate(c.tables(raw, "faults"))]
    commands = [_command(c, cmd, i, duration, real, agent == "sunlit" and commands_verified)
                for i, cmd in enumerate(c.tables(raw, "commands"))]
    _packet_faults_hit_commands(c, faults, commands, step)
    _sensor_faults_apart(c, faults)
    _faults_begin_with_the_agent_up(c, faults)

    return Scenario(
        name=name,
        source=source,
        profile=profile,
        orbit=orbit,
        duration_s=duration,
        step_s=step,
        time_mode=time_mode,
        speed=speed,
        seed=seed,
        board=board_id,
        agent=agent,
        capacity_wh=capacity_wh,
        soc_initial_pct=c.number(battery, "soc_initial_pct", "battery", 80.0, lo=0, hi=100),
        charge_efficiency=c.number(battery, "charge_efficiency", "battery", 0.94, lo=0.5, hi=1.0),
        discharge_efficiency=c.number(battery, "discharge_efficiency", "battery", 0.95, lo=0.5, hi=1.0),
        platform_load_w=c.number(power, "platform_load_w", "power", 12.0, lo=0, hi=MAX_PLATFORM_LOAD_W,
                                 why="the rest of a small spacecraft, W"),
        load_steps=_load_steps(c, power, duration),
        compute_real=real,
        tiles_per_s_at_maxn=c.number(compute, "tiles_per_s_at_maxn", "compute", 2000.0, lo=0, hi=MAX_TILES_PER_S,
                                     why="a board's throughput (1e308 made infinite work, and a summary JSON "
                                         "parsers refuse: an audit)"),
        capture_every_s=c.number(compute, "capture_every_s", "compute", 60.0, lo=1),
        tiles_per_capture=int(c.number(compute, "tiles_per_capture", "compute", 256, lo=1, hi=MAX_TILES_PER_CAPTURE,
                                       integer=True, why="a capture is made in the harness's memory, 4 KiB a tile")),
        fault_rate_scale=_fault_rate_scale(c, radiation, real),
        memory_upset_scale=memory_scale,
        memory_targets=tuple(dict.fromkeys(targets)),
        tle=tle,
        faults=tuple(sorted(faults, key=lambda f: f.at_s)),
        commands=tuple(sorted(commands, key=lambda cmd: cmd.at_s)),
        criteria=Criteria(
            charge_floor_pct=c.optional(crit, "charge_floor_pct", "criteria", lo=0, hi=100),
            temp_max_c=c.optional(crit, "temp_max_c", "criteria", lo=-100, hi=200),
            min_work=c.optional(crit, "min_work", "criteria", lo=0),
            commands_verified=commands_verified,
            no_unhandled_fault=c.boolean(crit, "no_unhandled_fault", "criteria", True),
            stated=frozenset(crit),
        ),
        agent_parameters=_parameters(c, raw, board),
        array=array,
        efficiency_error_pct=c.number(belief, "efficiency_error_pct", "belief", 8.0, lo=-50, hi=50),
        degradation_known=c.boolean(belief, "degradation_known", "belief", False),
        platform_load_error_pct=c.number(belief, "platform_load_error_pct", "belief", 10.0, lo=-50, hi=100),
        tle_along_track_km=c.number(belief, "tle_along_track_km", "belief", 3.0, lo=-1000, hi=1000,
                                    why="a TLE off by more is no TLE of this spacecraft"),
        soc_step_pct=_soc_step_pct(c, sensors),
        power_noise_pct=c.number(sensors, "power_noise_pct", "sensors", 1.0, lo=0, hi=20),
        temp_noise_c=c.number(sensors, "temp_noise_c", "sensors", 0.5, lo=0, hi=10),
        bus_voltage_noise_v=c.number(sensors, "bus_voltage_noise_v", "sensors", 0.02, lo=0, hi=1),
        gauge_capacity=gauge_capacity,
        capacity_error_pct=capacity_error_pct,
        nameplate_wh=nameplate_wh,
        link=_link(c, raw, seed, agent),
        **_thermal(c, raw),
    )


MAX_LOAD_STEPS = 1000


def _load_steps(c: _Checker, power: dict[str, Any], duration_s: float) -> tuple[tuple[float, float], ...]:
    """[power] load_steps: [at_s, extra_w] pairs, in time order, the load they leave never below 0 nor past
    MAX_PLATFORM_LOAD_W (found in audit: the HIL flew a constant load, so the agent's load learning was judged on
    a load that never moved)."""
    steps = power.get("load_steps", [])
    if not isinstance(steps, list) or len(steps) > MAX_LOAD_STEPS:
        raise c.fail("power.load_steps", f"a list of at most {MAX_LOAD_STEPS} [at_s, extra_w] pairs, got "
                                         f"{_kind(steps)}")
    out: list[tuple[float, float]] = []
    load_w = c.number(power, "platform_load_w", "power", 12.0, lo=0, hi=MAX_PLATFORM_LOAD_W)
    for i, step in enumerate(steps):
        key = f"power.load_steps[{i}]"
        if not (isinstance(step, list) and len(step) == 2 and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and _finite(v) for v in step)):
            raise c.fail(key, f"an [at_s, extra_w] pair of numbers, got {step!r}"[:200])
        at_s, extra_w = float(step[0]), float(step[1])
        if not 0.0 <= at_s <= duration_s:
            raise c.fail(key, f"at_s {at_s:g} is outside the run (0 to {duration_s:g} s)")
        if out and at_s < out[-1][0]:
            raise c.fail(key, f"at_s {at_s:g} is before the step before it ({out[-1][0]:g} s): give them in time order")
        load_w += extra_w
        if not 0.0 <= load_w <= MAX_PLATFORM_LOAD_W:
            raise c.fail(key, f"leaves a platform load of {load_w:g} W, outside [0, {MAX_PLATFORM_LOAD_W:g}]")
        out.append((at_s, extra_w))
    return tuple(out)


RADIATOR_J_PER_K_M2 = 4000.0
"""A radiator's heat capacity per m² when [thermal] does not give it: 1.5 mm of aluminium (2700 kg/m³, 890 J/kg/K
gives 3600; with its paint and fixings 4000), so the default radiator's 180 J/K at 0.045 m²."""


def _thermal(c: _Checker, raw: dict[str, Any]) -> dict[str, float]:
    """[thermal]: the radiator a rig sizes to its board (found in audit: every board flew one radiator, sized for
    15 W, so an AGX Orin spent its days held to its lowest modes by heat)."""
    t = c.table(raw, "thermal")
    area_m2 = c.number(t, "radiator_area_m2", "thermal", 0.045, lo=0.005, hi=2.0,
                       why="5 cm² to 2 m² of radiator for one board")
    return {"radiator_area_m2": area_m2,
            "board_to_radiator_w_per_k": c.number(t, "board_to_radiator_w_per_k", "thermal", 1.0, lo=0.05, hi=20.0,
                                                  why="a bolted joint (0.05 W/K) to heat pipes (20 W/K)"),
            "radiator_heat_capacity_j_per_k": c.number(t, "radiator_heat_capacity_j_per_k", "thermal",
                                                       area_m2 * RADIATOR_J_PER_K_M2, lo=20.0, hi=1e5)}


def _battery_belief(c: _Checker, battery: dict[str, Any], sensors: dict[str, Any]
                    ) -> tuple[float, float | None, bool, float]:
    """[battery] capacity_wh (the truth) and nameplate_wh (the agent's configuration), [sensors] gauge_capacity
    and capacity_error_pct (what its gauge says of the truth). The agent takes its gauge's capacity only within
    0.3 to 1.2 of its nameplate (flight.agent.control.GAUGE_CAPACITY_RANGE): a scenario outside it is refused,
    as the gauge would never be heard (found in review: a nameplate of 0.1 Wh for 60 was flown)."""
    from flight.agent.control import GAUGE_CAPACITY_RANGE

    capacity_wh = c.number(battery, "capacity_wh", "battery", 60.0, lo=0.1, hi=1e6,  # the agent's own bound (found in
                           why="0.1 to 1e6 Wh, as the agent's power.battery_capacity_wh")  # audit: an internal error)
    nameplate_wh = c.number(battery, "nameplate_wh", "battery", None, lo=0.1, hi=1e6) if "nameplate_wh" in battery \
        else None
    gauge_capacity = c.boolean(sensors, "gauge_capacity", "sensors", True)
    if not gauge_capacity and "capacity_error_pct" in sensors:
        raise c.fail("sensors.capacity_error_pct", "only with gauge_capacity = true: a gauge that reports no capacity "
                                                   "has no error in it")
    error_pct = c.number(sensors, "capacity_error_pct", "sensors", 2.0, lo=-20, hi=20)
    reported_wh = capacity_wh * (1.0 + error_pct / 100.0)
    low, high = GAUGE_CAPACITY_RANGE
    if gauge_capacity and nameplate_wh is not None and not low <= reported_wh / nameplate_wh <= high:
        raise c.fail("battery.nameplate_wh", f"{nameplate_wh:g} Wh against a gauge that reports {reported_wh:g} Wh "
                                             f"({reported_wh / nameplate_wh:.2f} of it): the agent takes its gauge's "
                                             f"capacity only within {low:g} to {high:g} of its nameplate")
    return capacity_wh, nameplate_wh, gauge_capacity, error_pct


def _soc_step_pct(c: _Checker, sensors: dict[str, Any]) -> float:
    """[sensors] soc_step_pct: 0 (the truth), or a step that divides 100, so full reads 100 (found in review:
    at 1.5 a full battery read 100.5, which the agent's HAL refuses, and at 3 the gauge topped out at 99)."""
    step = c.number(sensors, "soc_step_pct", "sensors", 1.0, lo=0, hi=10)
    steps = 100.0 / step if step > 0 else 0.0  # found in audit: 1e-320 made inf steps, an internal error
    if step > 0 and not (math.isfinite(steps) and abs(steps - round(steps)) <= 1e-9):
        raise c.fail("sensors.soc_step_pct", f"{step:g} does not divide 100: a gauge's full reading is 100 % "
                                             "(1, 0.5, 0.1, 2, 5...)")
    return step


def _fault_rate_scale(c: _Checker, radiation: dict[str, Any], real: bool) -> float:
    scale = c.number(radiation, "fault_rate_scale", "radiation", 0.0, lo=0, hi=MAX_RATE_SCALE,
                     why="past it the draws overflow")
    if scale > 0 and not real:  # nine draws in ten are seu_weights, which modelled compute cannot judge
        raise c.fail("radiation.fault_rate_scale", "draws upsets into the model store (seu_weights, nine in ten) "
                                                   "and reboots: it needs the real compute worker ([compute] real = "
                                                   "true), or there is no model for them to hit")
    return scale


def _link(c: _Checker, raw: dict[str, Any], seed: int, agent: str) -> LinkSpec | None:
    """[link] with its [link.up] and [link.down]: each fault key given once per direction."""
    if "link" not in raw:
        return None
    t = c.table(raw, "link")
    if agent == "naive":
        raise c.fail("link", "the naive agent has no link to break; [link] needs agent = \"sunlit\"")
    per_direction = {}
    for direction in ("up", "down"):
        where = f"link.{direction}"
        sub = t.get(direction, {})
        if not isinstance(sub, dict):
            raise c.fail(where, f"must be a table ([{where}]), got {_kind(sub)}")
        c.only(sub, where, TABLE_KEYS[where], f"[{where}]")
        values = {}
        for key in LINK_FAULT_KEYS:
            if key in sub and key in t:
                raise c.fail(f"{where}.{key}", f"also given in [link]: give {key} once for both directions there, "
                                               "or per direction in [link.up] and [link.down]")
            source, table_where = (sub, where) if key in sub else (t, "link")
            if key in PROBABILITIES:
                values[key] = c.number(source, key, table_where, 0.0, lo=0, hi=1, why="a probability per packet")
            else:
                values[key] = c.number(source, key, table_where, 0.0, lo=0, hi=LINK_DELAY_MAX_S,
                                       why="wall-clock s; the harness waits 20 s for a command's reports")
        per_direction[direction] = DirectionFaults(**values)
    return LinkSpec(
        faults=LinkFaults(per_direction["up"], per_direction["down"]),
        gate_by_contact=c.boolean(t, "gate_by_contact", "link", False),
        seed=int(c.number(t, "seed", "link", seed, lo=0, integer=True)),
    )


def _array(c: _Checker, raw: dict[str, Any]) -> dict[str, Any] | None:
    """[array] as SpacecraftParams fields (the profile generator checks them again): the
    panels as ``array_panels``, or the one-panel shorthand's ``array_normal_orbit_frame``
    and ``array_area_m2``."""
    if "array" not in raw:
        return None
    t = c.table(raw, "array")
    pointing = c.choice(t, "pointing", "array", "sun_tracking", POINTINGS, "a pointing")
    if "attitude" in t and pointing != "body_fixed":
        raise c.fail("array.attitude", f"only for pointing = \"body_fixed\": a {pointing} array faces the Sun "
                                       "whatever the attitude")
    attitude = c.choice(t, "attitude", "array", "nadir", ATTITUDES, "an attitude")
    out: dict[str, Any] = {
        "array_pointing": pointing,
        "array_attitude": attitude,
        "array_efficiency": c.number(t, "efficiency", "array", 0.30, above=0, hi=1),
        "degradation_per_year": c.number(t, "degradation_per_year", "array", 0.01, lo=0, hi=0.5),
        "years_in_orbit": c.number(t, "years_in_orbit", "array", 0.0, lo=0, hi=30),
    }
    if "panels" in t:
        for key in ("normal_orbit_frame", "area_m2"):
            if key in t:
                raise c.fail(f"array.{key}", "give [[array.panels]] (each with its normal and area_m2) or the "
                                             "one-panel normal_orbit_frame and area_m2, not both")
        panels = c.tables(t, "panels", "array.panels")
        if not panels:
            raise c.fail("array.panels", "at least one panel ([[array.panels]] with normal and area_m2)")
        out["array_panels"] = [_panel(c, p, f"array.panels[{i}]") for i, p in enumerate(panels)]
        return out
    if "normal_orbit_frame" in t and attitude != "nadir":
        raise c.fail("array.normal_orbit_frame", f"the orbit frame is the body frame only under attitude = "
                                                 f"\"nadir\", not {attitude!r}: give [[array.panels]] with "
                                                 "normal in the body frame")
    out["array_area_m2"] = c.number(t, "area_m2", "array", 0.2, above=0)
    out["array_normal_orbit_frame"] = _normal(c, t.get("normal_orbit_frame", [1.0, 0.0, 0.0]),
                                              "array.normal_orbit_frame", "radial, along-track, normal")
    return out


def _normal(c: _Checker, normal: Any, key: str, frame: str) -> list[float]:
    if (not isinstance(normal, list) or len(normal) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and _finite(x) for x in normal)
            or not any(normal)):
        raise c.fail(key, f"three finite numbers, not all zero ({frame}), got {normal!r}"[:300])
    return [float(x) for x in normal]


def _panel(c: _Checker, panel: dict[str, Any], where: str) -> tuple[list[float], float]:
    """One [[array.panels]] entry: (normal in the body frame, area_m2), both required."""
    c.only(panel, where, TABLE_KEYS["array.panels"], "a panel")
    if "normal" not in panel:
        raise c.fail(f"{where}.normal", "missing (the panel's normal in the body frame, [x, y, z])")
    normal = _normal(c, panel["normal"], f"{where}.normal", "in the body frame")
    return normal, float(c.number(panel, "area_m2", where, None, above=0))


def _profile_or_orbit(c: _Checker, raw: dict[str, Any], base_dir: Path | None,
                      duration_s: float) -> tuple[Path | None, dict[str, Any] | None, tuple[str, str] | None]:
    """The profile file (read and validated now, so a corrupt one is named here) or the [orbit] table."""
    if ("profile" in raw) == ("orbit" in raw):
        raise c.fail("profile", "give exactly one of profile (a file) or [orbit] (to generate one)")
    if "profile" in raw:
        text = c.string(raw, "profile", "", None)
        profile = Path(text)
        try:  # a name too long for the file system, or a NUL in it (found in audit: OSError, an internal error)
            if not profile.is_absolute():
                candidates = [Path.cwd() / profile] + ([base_dir / profile] if base_dir else [])
                found = [p for p in candidates if p.exists()]
                if len(found) == 2 and not _same_file(*found):  # found in audit: the run flew the one the working
                    # directory gave, another profile from another folder, and its report said neither
                    raise c.fail("profile", f"{text!r} names two files, {found[0]} (from the working directory) and "
                                            f"{found[1]} (from the scenario's folder): give an absolute path or rename "
                                            "one")
                profile = found[0] if found else candidates[0]
            if not profile.exists():
                raise c.fail("profile", f"{printable(str(profile))[:300]} does not exist")
        except (OSError, ValueError) as exc:
            if isinstance(exc, ScenarioError):
                raise
            shown = printable(text)
            shown = shown if len(shown) <= 100 else shown[:100] + "..."
            raise c.fail("profile", f"{shown!r}: cannot look for it: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            data = replay_check(profile)
        except ProfileError as exc:
            raise c.fail("profile", str(exc)) from None
        except OSError as exc:
            raise c.fail("profile", f"{profile}: cannot read it: {exc.strerror or exc}") from None
        extendable = data.metadata.get("generator") == GENERATOR and data.tle()
        if data.duration_s + 1e-6 < duration_s and not extendable:
            raise c.fail("duration_s", f"{duration_s:g} s is longer than the profile ({data.duration_s:g} s), which "
                                       "has no orbit in its metadata to extend it from; fly less or supply a longer one")
        if data.duration_s + 1e-6 < duration_s and duration_s / data.step_s > PROFILE_MAX_STEPS:  # at the file's
            # step it is made again (found in review: taken here, then an internal error as the run began)
            raise c.fail("duration_s", f"{duration_s:g} s is longer than the profile ({data.duration_s:g} s), and "
                                       f"extending it at its step of {data.step_s:g} s would take "
                                       f"{duration_s / data.step_s:.3g} steps, at most {PROFILE_MAX_STEPS:,}: fly "
                                       "less or supply a longer profile (or one at a longer step)")
        return profile, None, None
    orbit = c.table(raw, "orbit")
    return None, _orbit(c, orbit), (tuple(orbit["tle"]) if "tle" in orbit else None)  # type: ignore[return-value]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _orbit(c: _Checker, orbit: dict[str, Any]) -> dict[str, Any]:
    out = dict(orbit)
    if "tle" in orbit:
        tle = orbit["tle"]
        if not (isinstance(tle, list) and len(tle) == 2 and all(isinstance(line, str) for line in tle)):
            raise c.fail("orbit.tle", "must be two strings, [line1, line2]")
    for key in ("epoch", "start"):
        if key in orbit:
            value = orbit[key]
            if isinstance(value, _dt.datetime):  # an unquoted TOML date-time
                value = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
                out[key] = value.isoformat()
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise c.fail(f"orbit.{key}", f"expected an ISO 8601 time or Unix seconds, got {value!r}")
            try:
                parse_epoch(out[key])
            except ValueError as exc:
                raise c.fail(f"orbit.{key}", str(exc)) from None
    if "name" in orbit and not isinstance(orbit["name"], str):
        raise c.fail("orbit.name", f"expected a string, got {orbit['name']!r}")
    if "sun_synchronous" in orbit:
        c.boolean(orbit, "sun_synchronous", "orbit", False)
    # 100 km: the generator's floor for sgp4 (a perigee lower than that does not propagate).
    c.optional(orbit, "alt_km", "orbit", above=100, hi=100_000, why="an altitude above the Earth's surface, km; "
                                                                   "sgp4 cannot propagate below 100 km")
    c.optional(orbit, "inc_deg", "orbit", lo=0, hi=180)
    c.optional(orbit, "ecc", "orbit", lo=0, hi=0.99)
    c.optional(orbit, "ltan_h", "orbit", lo=0, hi=24)
    for key in ("raan_deg", "argp_deg", "mean_anomaly_deg"):
        c.optional(orbit, key, "orbit", lo=-360, hi=360)
    try:
        orbit_from_description(dict(out))  # the combinations: tle or elements, inc_deg or sun_synchronous, ...
    except ProfileError as exc:
        raise c.fail("orbit", str(exc).removeprefix("orbit: ")) from None
    return out


def _fault(c: _Checker, f: dict[str, Any], i: int, duration_s: float, board_zones: Iterable[str],
           real: bool) -> FaultSpec:
    where = f"faults[{i}]"
    kind = c.choice(f, "kind", where, "", FAULT_KINDS, "a fault kind") if "kind" in f else None
    if kind is None:
        raise c.fail(f"{where}.kind", f"missing; one of {', '.join(FAULT_KINDS)}")
    uses = ("at_s", "kind") + FAULT_KEYS[kind]
    for key in f:
        if key not in uses:
            close = difflib.get_close_matches(str(key), TABLE_KEYS["faults"], n=1, cutoff=_CLOSE)
            if key in TABLE_KEYS["faults"] or (close and close[0] not in uses):
                named = key if key in TABLE_KEYS["faults"] else close[0]
                typo = "" if named == key else f"unknown key (did you mean {named}?); "
                raise c.fail(f"{where}.{key}", f"{typo}a {kind} fault takes no {named} (it takes {', '.join(uses)})")
            raise c.fail(f"{where}.{key}", unknown_key_message(key, uses, f"a {kind} fault"))
    at_s = c.number(f, "at_s", where, None, lo=0, hi=duration_s, why="within the run, 0 to duration_s")
    if kind == "compute_hang" and not real:
        raise c.fail(f"{where}.kind", "compute_hang needs the real compute worker ([compute] real = true); "
                                      "modelled compute has no worker to hang")
    if kind == "seu_weights" and not real:  # an audit: judged N/A, "no model on the store", and the run passed
        raise c.fail(f"{where}.kind", "seu_weights needs the real compute worker ([compute] real = true); "
                                      "modelled compute has no model on the board's store to flip a bit in")
    duration = c.number(f, "duration_s", where, 0.0, lo=0, hi=MAX_DURATION_S, why="at most a run's length")
    if kind in NEEDS_DURATION and not duration > 0:
        raise c.fail(f"{where}.duration_s", f"a {kind} fault needs duration_s > 0 (how long it lasts)")
    zone = "tj-thermal"
    if "zone" in FAULT_KEYS[kind]:
        zones = [z for z in board_zones if z in HARNESS_ZONES]
        zone = c.choice(f, "zone", where, "tj-thermal", zones, "a thermal zone the harness feeds on this board")
    value = c.number(f, "value", where, 0.0, lo=-100, hi=200, why="a temperature, °C")
    if kind == "sensor_stuck" and "value" not in f:
        raise c.fail(f"{where}.value", "missing: the temperature the stuck sensor reads, °C")
    energy = c.number(f, "energy_wh", where, 0.0, lo=0, hi=1e6,  # found in audit: 1e306 overflowed the battery's power
                      why="at most a battery's worth, 1e6 Wh")
    return FaultSpec(at_s, kind, duration, zone, value, energy)


def _packet_faults_hit_commands(c: _Checker, faults: list[FaultSpec], commands: list[CommandSpec],
                                step_s: float) -> None:
    """Each packet fault hits the next telecommand not hit already (hil/loop.py): one with none left to hit
    would never happen, and was judged N/A while the run passed (found in audit). The loop flies whole steps,
    a step's faults before its commands: a command a step takes is hit by a fault that step takes too."""
    def step_of(at_s: float) -> int:
        return math.ceil(at_s / step_s - 1e-9)

    free = sorted(step_of(cmd.at_s) for cmd in commands)
    for i, f in sorted(enumerate(faults), key=lambda item: item[1].at_s):
        if f.kind not in ("packet_corrupt", "packet_drop"):
            continue
        hit = next((k for k, at in enumerate(free) if at >= step_of(f.at_s)), None)
        if hit is None:
            raise c.fail(f"faults[{i}]", f"a {f.kind} at {f.at_s:g} s hits the next telecommand not hit already, "
                                         "and [[commands]] has none left at or after it: add one, or drop the fault")
        del free[hit]


def _sensor_faults_apart(c: _Checker, faults: list[FaultSpec]) -> None:
    """A zone takes one sensor fault at a time: the harness keeps one per zone, and a second that began before the
    first ended replaced it, cut short and then judged on its full length (found in audit)."""
    ends: dict[str, tuple[int, float]] = {}
    for i, f in sorted(enumerate(faults), key=lambda item: item[1].at_s):
        if f.kind not in ("sensor_dropout", "sensor_stuck"):
            continue
        before = ends.get(f.zone)
        if before is not None and f.at_s < before[1]:
            raise c.fail(f"faults[{i}]", f"a {f.kind} of {f.zone} at {f.at_s:g} s begins before faults[{before[0]}] "
                                         f"on that zone ends ({before[1]:g} s): one sensor fault a zone at a time")
        ends[f.zone] = (i, f.at_s + f.duration_s)


SEEN_AS_THEY_BEGIN = ("sensor_dropout", "compute_hang")
"""Fault kinds the agent must notice within a tick, or its watchdog, of their start (hil/faults.py)."""


def _faults_begin_with_the_agent_up(c: _Checker, faults: list[FaultSpec]) -> None:
    """A fault the agent owes a detection from its start cannot begin while a brownout holds the agent down: it would
    be failed as the agent's miss, though the harness kept it from seeing anything (found in audit: a sensor_dropout
    inside a brownout failed "no SENSOR_MISSING within 20 s")."""
    down = [(i, f.at_s, f.at_s + f.duration_s) for i, f in enumerate(faults)
            if f.kind == "brownout" and f.duration_s > 0]
    for i, f in enumerate(faults):
        if f.kind not in SEEN_AS_THEY_BEGIN:
            continue
        for j, start_s, end_s in down:
            if start_s <= f.at_s < end_s:
                raise c.fail(f"faults[{i}].at_s", f"a {f.kind} at {f.at_s:g} s begins while the brownout of "
                                                  f"faults[{j}] holds the agent down ({start_s:g} to {end_s:g} s): it "
                                                  "could not be seen; move it out of the brownout")


def _command(c: _Checker, cmd: dict[str, Any], i: int, duration_s: float, real: bool,
             must_complete: bool) -> CommandSpec:
    where = f"commands[{i}]"
    c.only(cmd, where, TABLE_KEYS["commands"], "a command")
    name = c.string(cmd, "command", where, None)
    if name.upper() not in DICTIONARY.command_by_name:
        raise c.fail(f"{where}.command", _choice_message(name, DICTIONARY.command_by_name, "a dictionary command"))
    command = DICTIONARY.command(name)
    args = cmd.get("args", {})
    if not isinstance(args, dict):
        raise c.fail(f"{where}.args", f"must be a table, e.g. args = {{ mode = \"IDLE\" }}, got {_kind(args)}")
    try:
        checked = command.validate_args(dict(args))
    except ArgumentError as exc:
        raise c.fail(f"{where}.args", f"{exc} (checked against {where}.command = {command.name})") from None
    at_s = c.number(cmd, "at_s", where, None, lo=0, hi=duration_s, why="within the run, 0 to duration_s")
    if command.name in COMPUTE_COMMANDS and not real and must_complete:
        raise c.fail(f"{where}.command", f"{command.name} is refused in modelled mode (no compute worker runs); "
                                         "set [compute] real = true, or criteria.commands_verified = false to fly "
                                         "the refusal")
    return CommandSpec(at_s, command.name, checked)


def _parameters(c: _Checker, raw: dict[str, Any], board: Any) -> dict[str, Any]:
    value = raw.get("parameters", {})
    if not isinstance(value, dict):
        raise c.fail("parameters", f"must be a table ([parameters]), got {_kind(value)}")
    known = DICTIONARY.parameter_by_name
    out: dict[str, Any] = {}
    for name, v in value.items():
        if name not in known:
            raise c.fail(f"parameters.{name}", unknown_key_message(name, known, "[parameters] (the dictionary)"))
        try:
            out[name] = known[name].spec.coerce(v, name)
        except ArgumentError as exc:
            raise c.fail(f"parameters.{name}", str(exc)) from None
    for lower, upper, why in ORDERED_PARAMETERS:  # as the agent's configuration checks them, here by key (a review:
        # a pair it refuses parsed, and the run failed at the agent's start)
        low, high = (out.get(n, known[n].default) for n in (lower, upper))
        if (lower in out or upper in out) and not low < high:
            raise c.fail(f"parameters.{lower if lower in out else upper}", f"{why} ({lower} {low:g}, {upper} {high:g})")
    problem = board_limit_problem(out, board, "named by board")  # as the agent checks it (found in review: the run
    if problem is not None:  # ended in an internal error, the agent refusing its configuration at start)
        raise c.fail(f"parameters.{problem[0]}", problem[1])
    return out
