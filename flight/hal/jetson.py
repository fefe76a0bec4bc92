"""The Jetson backend: thermal zones, INA3221 power rails and nvpmodel power modes.

Where things are on a Jetson (FACTS.md "Jetson interfaces"):

- temperatures: ``/sys/class/thermal/thermal_zone*/type`` and ``temp`` (millidegrees C);
- rails: ``/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon*/in[1-3]_label``,
  ``in[N]_input`` (mV), ``curr[N]_input`` (mA); the hwmon number varies, so it is globbed;
- power modes: ``/etc/nvpmodel.conf`` (``< POWER_MODEL ID=n NAME=... >`` blocks),
  ``nvpmodel -q`` for the current one, ``nvpmodel -m ID`` to set one. IDs differ between
  boards, so modes are looked up by name and the ID is taken from this board's conf;
- the board: ``/proc/device-tree/model``.

Every path sits under ``root`` (default "/"), and the nvpmodel executable is a parameter,
so the same code runs against a fake tree in tests. The text formats (nvpmodel.conf,
``nvpmodel -q`` output, tegrastats lines, the model string) are parsed by pure functions
that take text and return values.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from flight.clock import Clock, RealClock
from flight.hal.base import (
    Board,
    BoardOptions,
    Hal,
    HalError,
    HalReading,
    PowerControl,
    PowerMode,
    PowerModesUnavailable,
    RailReading,
    SensorSet,
    find_power_mode,
    order_power_modes,
)
from flight.hal.boards import BoardProfile, BoardProfileError, available_boards, load_board
from flight.hal.procfs import ProcSampler
from flight.hal.sysfs import (
    SENSOR_OFF_C,
    SearchSchedule,
    ZonesOff,
    describe_error,
    millidegrees_to_c,
    powered_off,
    read_int,
    under,
    unique_key,
)

NVPMODEL_CONF = "/etc/nvpmodel.conf"
INA3221_DRIVER_DIR = "/sys/bus/i2c/drivers/ina3221"
MODEL_PATHS = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")
DEFAULT_NVPMODEL = "nvpmodel"
DEFAULT_NVPMODEL_TIMEOUT_S = 10.0  # -q answers in well under a second; -m rewrites clocks, still < 2 s
RAIL_MAX_MV = 32_000  # an INA3221's bus input reads up to 26 V: past this a rail's voltage is garbage
RAIL_MIN_MA, RAIL_MAX_MA = -100, 20_000  # a little below zero is shunt offset at no load; past 20 A no Jetson rail
THERMAL_DIR = "/sys/class/thermal"
SEARCH_FIRST_S = 1.0  # the first search of sysfs after a failed read (a control tick), doubling while it fails
SEARCH_MAX_S = 64.0  # at most this long between searches: a sensor lost for good, or one that probes late
MAX_KNOWN_SENSORS = 256  # zones and rails remembered to say them lost; a Jetson has about 15

# --- board detection (pure) -----------------------------------------------------------------

# Substring of the normalised model string -> profile id. The model string does not say
# the memory size (the AGX Orin Developer Kit came with 32 GB and later 64 GB; the Orin NX
# carrier takes 8 GB and 16 GB modules), so each maps to the closest profile we ship.
# "orin nano" must not match the older, non-Orin "Jetson Nano".
_BOARD_RULES = (
    ("agx orin", "agx_orin_64gb"),
    ("orin nx", "orin_nx_16gb"),
    ("orin nano", "orin_nano"),
)


def detect_board(model: str) -> str | None:
    """Profile id for a device-tree model string, or None for anything that is not an Orin.

    >>> detect_board("NVIDIA Jetson Orin Nano Developer Kit\\x00")
    'orin_nano'
    >>> detect_board("NVIDIA Jetson Nano Developer Kit") is None
    True
    """
    text = " ".join(model.replace("\x00", " ").split()).lower()
    for needle, board in _BOARD_RULES:
        if needle in text:
            return board
    return None


# --- nvpmodel.conf and nvpmodel -q (pure) ---------------------------------------------------

_HEADER_RE = re.compile(r"^<\s*(\w+)(.*?)>\s*$")
_ATTR_RE = re.compile(r"(\w+)\s*=\s*(\S+)")
_BUDGET_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)W(?![A-Za-z])", re.IGNORECASE)


def budget_from_name(name: str) -> float | None:
    """Watts named in a mode name (``15W``, ``MODE_15W``, ``10W_DESKTOP``); None for MAXN.

    >>> budget_from_name("MODE_15W"), budget_from_name("MAXN_SUPER")
    (15.0, None)
    """
    m = _BUDGET_RE.search(name)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class NvpmodelConf:
    """What nvpmodel.conf defines: the modes (lowest budget first), the boot default, each
    line the parser did not understand (``"line 12: ..."``), and the sysfs files its PARAM
    blocks name, which ``nvpmodel -m`` writes (in order, without repeats)."""

    modes: tuple[PowerMode, ...]
    default_id: int | None
    skipped: tuple[str, ...] = ()
    param_paths: tuple[str, ...] = ()


@dataclass
class _ModeBlock:
    line_no: int
    name: str
    id: int
    cores: dict[int, bool] = field(default_factory=dict)
    cpu_max_khz: list[int] = field(default_factory=list)
    gpu_max_hz: int | None = None


def parse_nvpmodel_conf(text: str, profile_budgets_w: Mapping[str, float] | None = None) -> NvpmodelConf:
    """Parse nvpmodel.conf. A mode's budget comes from its name, else from
    ``profile_budgets_w`` (the board profile, for MAXN), else it is unknown.

    Within a POWER_MODEL block: ``CPU_ONLINE CORE_n 1`` lines give online CPUs;
    ``CPU_* MAX_FREQ`` (kHz, as cpufreq) and ``GPU MAX_FREQ`` (Hz) give the caps, ``-1``
    meaning none. Other settings (EMC, DLA, fan...) are valid and ignored. Two modes with one
    name or one ID make the conf unusable for lookup by name: :class:`HalError`.
    """
    profile_budgets_w = profile_budgets_w or {}
    blocks: list[_ModeBlock] = []
    skipped: list[str] = []
    param_paths: dict[str, None] = {}  # ordered, without repeats
    default_id: int | None = None
    section: str | None = None  # "POWER_MODEL", another header name, or None before any
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = _HEADER_RE.match(line)
        if header:
            kind = header.group(1).upper()
            attrs = {k.upper(): v for k, v in _ATTR_RE.findall(header.group(2))}
            section = kind
            if kind == "POWER_MODEL":
                try:
                    blocks.append(_ModeBlock(line_no, attrs["NAME"], int(attrs["ID"])))
                except (KeyError, ValueError):
                    skipped.append(f"line {line_no}: POWER_MODEL header without a NAME and integer ID: {raw.strip()!r}")
                    section = "SKIPPED_MODEL"
            elif kind == "PM_CONFIG":
                try:
                    default_id = int(attrs["DEFAULT"])
                except (KeyError, ValueError):
                    skipped.append(f"line {line_no}: PM_CONFIG without an integer DEFAULT: {raw.strip()!r}")
            elif kind not in ("PARAM", "FAN_CONFIG"):
                skipped.append(f"line {line_no}: unknown section {kind!r}, its lines are ignored")
            continue
        if section is None:
            skipped.append(f"line {line_no}: setting outside any section: {raw.strip()!r}")
            continue
        if section == "PARAM":
            # ``ARG /sys/...`` declares a file the mode settings write (deploy/libexec/
            # sunlit-power-access grants the service's group exactly these).
            fields = line.split()
            if len(fields) >= 2 and fields[1].startswith("/sys/"):
                param_paths[fields[1]] = None
            continue
        if section != "POWER_MODEL":
            continue  # PM_CONFIG, fan settings, skipped blocks
        block = blocks[-1]
        parts = line.split()
        if len(parts) != 3:
            skipped.append(f"line {line_no}: expected 'PARAM ARG VALUE' in mode {block.name}: {raw.strip()!r}")
            continue
        param, arg, value = parts[0].upper(), parts[1].upper(), parts[2]
        try:
            if param == "CPU_ONLINE" and arg.startswith("CORE_"):
                block.cores[int(arg[5:])] = value == "1"
            elif param.startswith("CPU") and arg == "MAX_FREQ":
                block.cpu_max_khz.append(int(value))
            elif param == "GPU" and arg == "MAX_FREQ":
                block.gpu_max_hz = int(value)
        except ValueError:
            skipped.append(f"line {line_no}: {param} {arg} is not an integer in mode {block.name}: {value!r}")

    names: dict[str, int] = {}
    ids: dict[int, int] = {}
    for b in blocks:
        if b.name in names:
            raise HalError(
                f"nvpmodel.conf defines mode {b.name!r} twice (lines {names[b.name]} and {b.line_no}); fix the conf"
            )
        if b.id in ids:
            raise HalError(f"nvpmodel.conf uses ID {b.id} twice (lines {ids[b.id]} and {b.line_no}); fix the conf")
        names[b.name], ids[b.id] = b.line_no, b.line_no

    modes = []
    for b in blocks:
        budget = budget_from_name(b.name)
        source = "name"
        if budget is None and b.name in profile_budgets_w:
            budget, source = float(profile_budgets_w[b.name]), "profile"
        elif budget is None:
            source = "unknown"
        cpu_uncapped = not b.cpu_max_khz or any(v < 0 for v in b.cpu_max_khz)
        try:
            modes.append(
                PowerMode(
                    name=b.name,
                    id=b.id,
                    budget_w=budget,
                    budget_source=source,
                    online_cpus=sum(b.cores.values()) if b.cores else None,
                    cpu_max_freq_mhz=None if cpu_uncapped else max(b.cpu_max_khz) / 1000.0,
                    gpu_max_freq_mhz=b.gpu_max_hz / 1e6 if b.gpu_max_hz is not None and b.gpu_max_hz > 0 else None,
                )
            )
        except ValueError as exc:  # e.g. every core offline, or a "0W" mode
            raise HalError(f"nvpmodel.conf line {b.line_no}: {exc}; fix the conf") from None
    return NvpmodelConf(order_power_modes(modes), default_id, tuple(skipped), tuple(param_paths))


def parse_nvpmodel_query(text: str) -> tuple[str, int | None]:
    """(name, id) from ``nvpmodel -q`` output: a ``NV Power Mode: NAME`` line, the ID on a
    line of its own after it. NVPM WARN/VERB lines around them are ignored.

    >>> parse_nvpmodel_query("NVPM WARN: fan mode is not set!\\nNV Power Mode: 15W\\n0\\n")
    ('15W', 0)
    """
    name: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if name is None:
            marker = stripped.find("NV Power Mode:")
            if marker >= 0:
                name = stripped[marker + len("NV Power Mode:") :].strip()
        elif stripped.isdigit():
            return name, int(stripped)
    if not name:
        raise ValueError(f"no 'NV Power Mode:' line in nvpmodel output: {text.strip()[:200]!r}")
    return name, None


# --- tegrastats (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class TegrastatsSample:
    """One tegrastats line. ``cpu_load_pct``/``cpu_freq_mhz`` per core, None for an offline
    core; rails in W, ``rails_w`` instantaneous and ``rails_avg_w`` tegrastats' running
    average (the two numbers of ``VDD_IN 4673mW/4673mW``)."""

    ram_used_mb: int | None
    ram_total_mb: int | None
    swap_used_mb: int | None
    swap_total_mb: int | None
    cpu_load_pct: tuple[float | None, ...]
    cpu_freq_mhz: tuple[int | None, ...]
    gpu_load_pct: float | None
    temps_c: dict[str, float]
    rails_w: dict[str, float]
    rails_avg_w: dict[str, float]
    skipped: tuple[str, ...] = ()

    @property
    def mem_pct(self) -> float | None:
        if not self.ram_total_mb or self.ram_used_mb is None:
            return None
        return 100.0 * self.ram_used_mb / self.ram_total_mb

    @property
    def cpu_pct(self) -> float | None:
        """Mean load of the online cores."""
        loads = [x for x in self.cpu_load_pct if x is not None]
        return sum(loads) / len(loads) if loads else None


_USED_TOTAL_RE = re.compile(r"^(\d+)/(\d+)MB$")
_TEMP_RE = re.compile(r"^([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C$")
_RAIL_VALUE_RE = re.compile(r"^(\d+)(?:mW)?/(\d+)(?:mW)?$")
_RAIL_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_CORE_RE = re.compile(r"^(\d+)%@(\d+)$")
_GPU_RE = re.compile(r"^(\d+)%")
_DATE_RE = re.compile(r"^\d\d-\d\d-\d{4}$|^\d\d:\d\d:\d\d$")
# Engine clocks tegrastats prints that the agent does not use: consumed with their value.
_IGNORED_FIELDS = {
    "EMC_FREQ", "VIC_FREQ", "APE", "NVENC", "NVDEC", "NVENC1", "NVDEC1", "NVJPG", "NVJPG1", "OFA",
    "NVDLA0_FREQ", "NVDLA1_FREQ", "PVA0_FREQ",
}


def parse_tegrastats(line: str) -> TegrastatsSample:
    """Parse one tegrastats line (format: FACTS.md "Jetson interfaces").

    Fields it does not know go into ``skipped`` instead of being dropped silently.
    """
    tokens = line.split()
    skipped: list[str] = []
    ram = swap = (None, None)
    loads: tuple[float | None, ...] = ()
    freqs: tuple[int | None, ...] = ()
    gpu: float | None = None
    temps: dict[str, float] = {}
    rails: dict[str, float] = {}
    rails_avg: dict[str, float] = {}
    i = 0

    def skip_paren(j: int) -> int:
        # "(lfb 4x4MB)", "(cached 0MB)": one parenthesised group after RAM/SWAP.
        if j < len(tokens) and tokens[j].startswith("("):
            while j < len(tokens) and not tokens[j].endswith(")"):
                j += 1
            j += 1
        return j

    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in ("RAM", "SWAP") and _USED_TOTAL_RE.match(nxt):
            m = _USED_TOTAL_RE.match(nxt)
            pair = (int(m.group(1)), int(m.group(2)))
            if tok == "RAM":
                ram = pair
            else:
                swap = pair
            i = skip_paren(i + 2)
        elif tok == "CPU" and nxt.startswith("[") and nxt.endswith("]"):
            cores_l, cores_f = [], []
            for core in nxt[1:-1].split(","):
                m = _CORE_RE.match(core)
                if m:
                    cores_l.append(float(m.group(1)))
                    cores_f.append(int(m.group(2)))
                else:
                    if core != "off":
                        skipped.append(f"CPU core {core!r}")
                    cores_l.append(None)
                    cores_f.append(None)
            loads, freqs = tuple(cores_l), tuple(cores_f)
            i += 2
        elif tok == "GR3D_FREQ" and _GPU_RE.match(nxt):
            gpu = float(_GPU_RE.match(nxt).group(1))
            i += 2
        elif tok in _IGNORED_FIELDS and nxt:
            i += 2
        elif _TEMP_RE.match(tok):
            m = _TEMP_RE.match(tok)
            value = float(m.group(2))
            if value == SENSOR_OFF_C:  # a powered-off sensor (e.g. "CV0@-256C" on idle CV domains)
                skipped.append(f"{tok} (sensor off)")
            else:
                temps[m.group(1)] = value
            i += 1
        elif _RAIL_NAME_RE.match(tok) and _RAIL_VALUE_RE.match(nxt):
            m = _RAIL_VALUE_RE.match(nxt)
            rails[tok] = int(m.group(1)) / 1000.0
            rails_avg[tok] = int(m.group(2)) / 1000.0
            i += 2
        elif _DATE_RE.match(tok):
            i += 1
        else:
            skipped.append(tok)
            i += 1
    return TegrastatsSample(
        ram_used_mb=ram[0],
        ram_total_mb=ram[1],
        swap_used_mb=swap[0],
        swap_total_mb=swap[1],
        cpu_load_pct=loads,
        cpu_freq_mhz=freqs,
        gpu_load_pct=gpu,
        temps_c=temps,
        rails_w=rails,
        rails_avg_w=rails_avg,
        skipped=tuple(skipped),
    )


# --- the backend ----------------------------------------------------------------------------


def _tail(text: str, limit: int = 300) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


def read_model(root: str | Path = "/") -> str | None:
    """The device-tree model string (NUL and whitespace stripped), or None where there is none."""
    for path in MODEL_PATHS:
        try:
            text = under(Path(root), path).read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        text = text.replace("\x00", "").strip()
        if text:
            return text
    return None


_NOT_A_PROGRAM = frozenset({errno.ENOEXEC, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EISDIR})
"""Errors of starting nvpmodel that say the file is no program this machine runs (ENOEXEC: a script with no #!
line, another architecture's binary) or no file at that path: power modes are unavailable until it changes."""


def nvpmodel_problem(nvpmodel: str) -> str | None:
    """Why ``nvpmodel`` (a name looked up on PATH, or a path) cannot be run, naming the key and the path; None
    where it can. Asked as the backend starts (found in audit: a wrong [hal] nvpmodel was found only when the
    first power mode query failed). Not a reason to stop: a dev board without nvpmodel still reads its
    sensors, and power modes work as soon as it is there (the agent says the outage once: POWER_MODES_UNAVAILABLE)."""
    if "\x00" in nvpmodel:
        why = "holds a NUL byte, which no file name does"
    elif os.sep not in nvpmodel:
        found = shutil.which(nvpmodel)
        why = None if found else f"not found on PATH ({os.environ.get('PATH', '')[:200]})"
    else:
        path = Path(nvpmodel)
        why = ("no such file" if not path.exists() else "not a file" if not path.is_file()
               else "not executable (check its mode bits)" if not os.access(path, os.X_OK) else None)
    if why is None:
        return None
    return (f"hal.nvpmodel: {nvpmodel!r} {why}: power modes can be neither read nor set until it is there; "
            "install nvidia-l4t-nvpmodel, or set [hal] nvpmodel to its path")


_ZONE_DIR_RE = re.compile(r"thermal_zone(\d+)$")
_HWMON_RE = re.compile(r"hwmon(\d+)$")


@dataclass(frozen=True)
class _Zone:
    path: Path  # .../thermal_zoneN
    type: str  # its type when found: read again with each temperature, as N may be another zone's by then


@dataclass(frozen=True)
class _Rail:
    device: str  # "1-0040"
    channel: int  # 1..3
    hwmon: Path  # .../1-0040/hwmon/hwmonN

    @property
    def where(self) -> str:
        return f"{self.device} in{self.channel}"


class _Moved(Exception):
    """A zone's directory now holds another zone (its number was freed and given again)."""


def _numbered(paths, pattern: re.Pattern) -> list[Path]:
    """The paths whose names match ``pattern``, in the order of their number (hwmon10 after hwmon9)."""
    found = [(int(m.group(1)), p) for p in paths if (m := pattern.search(p.name))]
    return [p for _, p in sorted(found)]


def zone_key(zone_type: str) -> str:
    """The name a zone is known by: its type as L4T 36 (JetPack 6) writes it, whichever release wrote it.

    L4T 35 (JetPack 5) names the same Orin zones ``CPU-therm``, ``SOC0-therm``, ``tj-therm``, ``Tboard_tegra``;
    L4T 36 ``cpu-thermal``, ``soc0-thermal``, ``tj-thermal``, and the profiles, telemetry and the harness use those
    (found in audit: on JetPack 5 every zone the profile names was missing for good and temp_cpu_c nil). Other
    names are kept as they are.

    >>> zone_key("CPU-therm"), zone_key("tj-therm"), zone_key("Tboard_tegra"), zone_key("cpu-thermal")
    ('cpu-thermal', 'tj-thermal', 'tboard_tegra', 'cpu-thermal')
    >>> zone_key("PMIC-Die")
    'PMIC-Die'
    """
    lowered = zone_type.lower()
    if lowered.endswith("-therm"):
        return lowered + "al"
    if lowered.endswith("_tegra"):
        return lowered
    return zone_type


def find_zones(thermal_dir: Path) -> tuple[dict[str, _Zone], list[str]]:
    """Every ``thermal_zoneN`` by its type (a second one of a type as ``type#2``), and what could not be taken.
    The type is taken as :func:`zone_key` names it: a JetPack 5 board's zones under the names a JetPack 6 one uses.
    A zone whose type cannot be read is not taken under its directory's name: a temperature under
    ``thermal_zone0`` is no sensor anyone expects, and its own name would be said missing besides."""
    zones: dict[str, _Zone] = {}
    problems: list[str] = []
    dirs = _numbered(thermal_dir.glob("thermal_zone*"), _ZONE_DIR_RE)
    if not dirs:
        problems.append(f"thermal zones: none under {thermal_dir}")
    for zone_dir in dirs:
        try:
            zone_type = (zone_dir / "type").read_text().strip() or zone_dir.name
        except (OSError, UnicodeDecodeError) as exc:  # found in audit: bytes not text raised out of read()
            problems.append(f"{zone_dir.name}: type {describe_error(exc)} ({zone_dir / 'type'})")
            continue
        zones[unique_key(zones, zone_key(zone_type))] = _Zone(zone_dir, zone_type)
    return zones, problems


def find_rails(driver_dir: Path) -> tuple[dict[str, _Rail], dict[str, Path | None], list[str]]:
    """Every labelled INA3221 channel under the driver's directory (``<bus>-<addr>/hwmon/hwmonN``: N is globbed,
    it changes when the driver binds again), each device's hwmon directory (None: it has none), and what could
    not be taken. An unlabelled channel (the driver hides the label) and an ``NC`` one are not wired."""
    rails: dict[str, _Rail] = {}
    devices: dict[str, Path | None] = {}
    problems: list[str] = []
    for dev in sorted(driver_dir.glob("*-*")):
        hwmons = _numbered(dev.glob("hwmon/hwmon*"), _HWMON_RE)
        devices[dev.name] = hwmons[0] if hwmons else None
        for ch in (1, 2, 3) if hwmons else ():
            label_path = hwmons[0] / f"in{ch}_label"
            try:
                label = label_path.read_text().strip()
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"ina3221 {dev.name} in{ch}: label {describe_error(exc)} ({label_path})")
                continue
            if label and label.upper() != "NC":  # "NC": not connected, as L4T labels unused channels
                rails[unique_key(rails, label)] = _Rail(dev.name, ch, hwmons[0])
    return rails, devices, problems


class JetsonHal(Hal):
    """A Jetson board. Build it with :meth:`open` (reads the model string and picks the
    profile) or directly with a profile already loaded.

    Zones and rails are read at the paths a search of sysfs found (:func:`find_zones`, :func:`find_rails`);
    :class:`SearchSchedule` times the next search on ``clock``: soon after a read fails (a driver bound again is
    at another hwmonN), backing off while it keeps failing, and every :data:`SEARCH_MAX_S` anyway (a zone that
    probes late). A zone or rail once found, or named by the profile, is in ``missing`` under its own name while
    it is not found, so the agent says it lost and found once each (SENSOR_MISSING, SENSOR_RESTORED). A failed
    read is that sample's loss, never an older value, and counted (``read_failures``, in :meth:`describe`)."""

    backend = "jetson"

    def __init__(
        self,
        *,
        root: str | Path = "/",
        nvpmodel: str = DEFAULT_NVPMODEL,
        profile: BoardProfile | None = None,
        model: str | None = None,
        nvpmodel_timeout_s: float = DEFAULT_NVPMODEL_TIMEOUT_S,
        clock: Clock | None = None,
    ):
        self.root = Path(root)
        self.nvpmodel = str(nvpmodel)
        self.profile = profile
        self.model = model
        self.nvpmodel_timeout_s = nvpmodel_timeout_s
        self.conf_path = under(self.root, NVPMODEL_CONF)
        self.ina3221_dir = under(self.root, INA3221_DRIVER_DIR)
        self._proc = ProcSampler(under(self.root, "/proc"))
        self._zones_off = ZonesOff()
        self._clock = clock if clock is not None else RealClock()
        self._schedule = SearchSchedule(SEARCH_FIRST_S, SEARCH_MAX_S)
        self._zones: dict[str, _Zone] = {}
        self._rails: dict[str, _Rail] = {}
        self._devices: dict[str, Path | None] = {}
        self._zone_problems: list[str] = []
        self._rail_problems: list[str] = []
        # Sensors to say missing while not found: each one found (where it was) and each the profile names ("").
        self._known_zones: dict[str, str] = dict.fromkeys(profile.thermal_zones if profile else (), "")
        self._known_rails: dict[str, str] = {c.rail: f"{c.device} in{c.channel}" for c in
                                             (profile.rail_channels if profile else ())}
        self._expected_rails = frozenset(self._known_rails)
        self.searches = 0  # of sysfs, the first included
        self.read_failures = 0  # reads of a zone or rail that failed (OSError, or a zone's number taken by another)

    @classmethod
    def open(
        cls,
        root: str | Path = "/",
        nvpmodel: str = DEFAULT_NVPMODEL,
        board: str | None = None,
        nvpmodel_timeout_s: float = DEFAULT_NVPMODEL_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> "JetsonHal":
        """Read the model string under ``root``, pick the board profile (``board`` overrides
        detection) and build the HAL. An unrecognised board still works, without a profile."""
        model = read_model(root)
        board_id = board or (detect_board(model) if model else None)
        profile = None
        if board_id is not None:
            try:
                profile = load_board(board_id)
            except BoardProfileError as exc:
                raise HalError(f"board {board_id!r}: {exc}; known boards: {', '.join(available_boards())}") from None
        return cls(root=root, nvpmodel=nvpmodel, profile=profile, model=model, nvpmodel_timeout_s=nvpmodel_timeout_s,
                   clock=clock)

    @property
    def board(self) -> str | None:
        return self.profile.id if self.profile else None

    # --- reading ----------------------------------------------------------------------------

    def read(self) -> HalReading:
        now_s = self._clock.monotonic_s()
        if self._schedule.due(now_s):
            self._search()
            self._schedule.searched(now_s)
        missing: list[str] = []
        temps_c: dict[str, float] = {}
        off: list[str] = []
        rails: dict[str, RailReading] = {}
        trouble = self._read_zones(missing, temps_c, off)
        notes = self._zones_off.notes(off)  # a powered-off zone is there, and no fault: a note, said once
        trouble |= self._read_rails(missing, rails)
        self._schedule.sample(now_s, trouble)
        board_power_w = self._board_power_w(rails, missing, notes)
        cpu_pct, mem_pct, proc_missing = self._proc.sample()
        missing += proc_missing
        if self._proc.first_note:
            notes.append(self._proc.first_note)
        if self.profile is None:
            notes.append(f"board unknown (model {self.model!r}): no profile, so no list of expected sensors")
        return HalReading(temps_c, rails, board_power_w, cpu_pct, mem_pct, tuple(missing), tuple(notes))

    def _search(self) -> None:
        """Glob sysfs for the zones and rails again and remember each one found (to say it lost if it goes)."""
        self.searches += 1
        thermal_dir = under(self.root, THERMAL_DIR)
        try:
            self._zones, self._zone_problems = find_zones(thermal_dir)
        except OSError as exc:  # the old paths are kept: each still reads or says why
            self._zone_problems = [f"thermal zones: searching {thermal_dir}: {describe_error(exc)}"]
        try:
            self._rails, self._devices, self._rail_problems = find_rails(self.ina3221_dir)
        except OSError as exc:
            self._rail_problems = [f"rails: searching {self.ina3221_dir}: {describe_error(exc)}"]
        for key, zone in self._zones.items():
            if key in self._known_zones or len(self._known_zones) < MAX_KNOWN_SENSORS:
                self._known_zones[key] = str(zone.path)
        for key, rail in self._rails.items():
            if key in self._known_rails or len(self._known_rails) < MAX_KNOWN_SENSORS:
                self._known_rails[key] = rail.where
        # A device without its hwmon directory, or no device at all, is said by each rail known on it; said
        # itself only where no rail is known (an unknown board's first search).
        known_devices = {where.split()[0] for where in self._known_rails.values()}
        if not self._devices and not self._known_rails:
            self._rail_problems.append(f"rails: no INA3221 devices under {self.ina3221_dir}")
        for device, hwmon in self._devices.items():
            if hwmon is None and device not in known_devices:
                self._rail_problems.append(
                    f"ina3221 {device}: no hwmon directory under {self.ina3221_dir / device / 'hwmon'}")

    def _read_zones(self, missing: list[str], temps_c: dict[str, float], off: list[str]) -> set[str]:
        """Each zone found, into ``temps_c``, ``off`` or ``missing``; the zones (or problems) a search might help
        (a read that failed, a zone whose number another zone now has, one known and not found)."""
        trouble = set(self._zone_problems)
        missing += self._zone_problems
        for key, zone in self._zones.items():
            path = zone.path / "type"
            try:
                zone_type = path.read_text().strip() or zone.path.name
                if zone_type != zone.type:  # the number was freed and given to another zone: not this sensor
                    raise _Moved(f"{zone.path.name} is now a zone of type {zone_type!r}")
                path = zone.path / "temp"
                text = path.read_text()
            except (OSError, UnicodeDecodeError, _Moved) as exc:  # bytes not text: this zone's loss, not every sensor's
                missing.append(f"{key}: {describe_error(exc)} ({path})")
                self.read_failures += 1
                trouble.add(key)
                continue
            if powered_off(text):
                off.append(key)
                continue
            try:
                temps_c[key] = millidegrees_to_c(text)
            except ValueError as exc:  # a value no sensor gives: the path is right, a search would not help
                missing.append(f"{key}: {describe_error(exc)} ({path})")
        for key, where in self._known_zones.items():
            if key not in self._zones:
                why = f"it was {where}" if where else f"the {self.profile.id} profile expects one"
                missing.append(f"{key}: no thermal zone of this type ({why})")
                trouble.add(key)
        return trouble

    def _read_rails(self, missing: list[str], rails: dict[str, RailReading]) -> set[str]:
        """Each rail found, into ``rails`` or ``missing``; the rails (or problems) a search might help (as for
        zones)."""
        trouble = set(self._rail_problems)
        missing += self._rail_problems
        for label, rail in self._rails.items():
            path = rail.hwmon / f"in{rail.channel}_input"
            try:
                voltage_mv = read_int(path)
                path = rail.hwmon / f"curr{rail.channel}_input"
                current_ma = read_int(path)
            except OSError as exc:  # gone with its hwmon directory (the driver bound again), or the bus failed
                missing.append(f"{label}: {describe_error(exc)} ({path})")
                self.read_failures += 1
                trouble.add(label)
                continue
            except ValueError as exc:
                missing.append(f"{label}: {describe_error(exc)} ({path})")
                continue
            if not (0 <= voltage_mv <= RAIL_MAX_MV and RAIL_MIN_MA <= current_ma <= RAIL_MAX_MA):
                # an INA3221 reads 0..26 V and a few amps; garbage is no reading (found in audit: -4.7 W and
                # 3956 W went to the thermal model and to admission as board power)
                missing.append(f"{label}: {voltage_mv} mV, {current_ma} mA is no reading of an INA3221 rail "
                               f"(0..{RAIL_MAX_MV} mV, {RAIL_MIN_MA}..{RAIL_MAX_MA} mA)")
                continue
            rails[label] = RailReading.from_mv_ma(voltage_mv, current_ma)
        for label, where in self._known_rails.items():
            if label in self._rails:
                continue
            device = where.split()[0]
            if label in self._expected_rails:
                why = f"the {self.profile.id} profile expects it at {where}"
            else:
                why = f"it was at {where}"
            if device not in self._devices:
                why += f"; no device {device} under {self.ina3221_dir}"
            elif self._devices[device] is None:
                why += f"; {device} has no hwmon directory (its driver unbound, or binding again)"
            missing.append(f"{label}: no INA3221 channel with this label ({why})")
            trouble.add(label)
        return trouble

    def _board_power_w(self, rails: dict[str, RailReading], missing: list[str], notes: list[str]) -> float | None:
        profile = self.profile
        if profile is not None and profile.board_power_is_sum:
            absent = [r for r in profile.rails if r not in rails]
            if absent:
                missing.append(
                    f"board_power_w: the sum of {', '.join(profile.rails)} needs every rail; {', '.join(absent)} not read"
                )
                return None
            notes.append(
                f"board_power_w is the sum of {' + '.join(profile.rails)}: {profile.name} has no rail that "
                "measures its input, so this reads below a meter at the supply"
            )
            return sum(rails[r].power_w for r in profile.rails)
        rail = profile.total_input_rail if profile is not None else "VDD_IN"
        if rail in rails:
            if profile is None:
                notes.append(f"board_power_w from {rail}: board unknown, {rail} taken as the input rail")
            return rails[rail].power_w
        why = f"input rail {rail} not read" if profile is not None else "board unknown and no VDD_IN rail"
        missing.append(f"board_power_w: {why}")
        return None

    # --- power modes ------------------------------------------------------------------------

    def nvpmodel_conf(self) -> NvpmodelConf:
        """The parsed nvpmodel.conf, with what the parser skipped. One that cannot be read or used (two modes of
        one name) is :class:`PowerModesUnavailable`: without it no mode's ID is known, so none can be read or set
        until someone mends the file (found in audit: a plain HalError, and the agent refused to start)."""
        try:
            text = self.conf_path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = describe_error(exc) if isinstance(exc, OSError) else f"not text ({exc.reason})"
            raise PowerModesUnavailable(
                f"cannot read {self.conf_path}: {why}; power modes can be neither read nor set until it is there: "
                "reinstall nvidia-l4t-nvpmodel, which ships it (or check [hal] root)"
            ) from None
        budgets = {m.name: m.budget_w for m in self.profile.modes} if self.profile else {}
        try:
            return parse_nvpmodel_conf(text, budgets)
        except HalError as exc:
            raise PowerModesUnavailable(f"{self.conf_path}: {exc}") from None

    def power_modes(self) -> tuple[PowerMode, ...]:
        conf = self.nvpmodel_conf()
        if not conf.modes:
            detail = f" (skipped: {'; '.join(conf.skipped)})" if conf.skipped else ""
            raise PowerModesUnavailable(
                f"{self.conf_path} defines no POWER_MODEL blocks{detail}; power modes can be neither read nor set "
                "until it does: reinstall nvidia-l4t-nvpmodel, which ships it"
            )
        return conf.modes

    def _run_nvpmodel(self, *args: str, answer: str = "") -> str:
        # stdin always gets an answer: nvpmodel asks "DO YOU WANT TO REBOOT NOW?" for some
        # mode changes, and the HAL must neither hang on that nor reboot the board itself.
        cmd = [self.nvpmodel, *args]
        try:
            proc = subprocess.run(cmd, input=answer, capture_output=True, text=True, timeout=self.nvpmodel_timeout_s)
        except FileNotFoundError:
            raise PowerModesUnavailable(
                f"nvpmodel not found at {self.nvpmodel!r} (hal.nvpmodel): install nvidia-l4t-nvpmodel, or set "
                "[hal] nvpmodel to its path"
            ) from None
        except PermissionError:
            raise PowerModesUnavailable(f"{self.nvpmodel!r} (hal.nvpmodel) is not executable; check its mode bits") \
                from None
        except ValueError:  # a NUL byte in the name (found in audit: ValueError out of each tick's mode query)
            raise PowerModesUnavailable(
                f"{self.nvpmodel!r} (hal.nvpmodel) holds a NUL byte: no program has that name; set [hal] nvpmodel to "
                "nvpmodel's path") from None
        except OSError as exc:
            why = f"{self.nvpmodel!r} (hal.nvpmodel) cannot be run: {exc.strerror or exc}"
            if exc.errno in _NOT_A_PROGRAM:  # until someone changes the file or the config
                raise PowerModesUnavailable(why) from None
            raise HalError(why) from None  # the machine's state (no memory, no file descriptors): tried again
        except subprocess.TimeoutExpired:
            raise HalError(f"`{' '.join(cmd)}` did not finish within {self.nvpmodel_timeout_s} s") from None
        if proc.returncode != 0:
            hint = "; setting a mode needs root" if "-m" in args else ""
            raise HalError(
                f"`{' '.join(cmd)}` exited with status {proc.returncode}: {_tail(proc.stderr or proc.stdout)}{hint}"
            )
        return proc.stdout

    def _query(self) -> tuple[str, int | None]:
        out = self._run_nvpmodel("-q")
        try:
            return parse_nvpmodel_query(out)
        except ValueError as exc:
            raise HalError(f"`{self.nvpmodel} -q`: {exc}") from None

    def current_power_mode(self) -> PowerMode | None:
        modes = self.power_modes()  # first: nvpmodel -q without its conf fails as a tool, a fault at each try
        name, mode_id = self._query()
        for mode in modes:
            if mode.name == name:
                return mode
        raise HalError(
            f"nvpmodel reports mode {name!r} (ID {mode_id}), which {self.conf_path} does not define "
            f"(it has {', '.join(m.name for m in modes)}); nvpmodel and the conf disagree"
        )

    def set_power_mode(self, name: str) -> PowerMode:
        mode = find_power_mode(self.power_modes(), name)
        out = self._run_nvpmodel("-m", str(mode.id), answer="NO\n")
        now_name, now_id = self._query()
        if now_name != mode.name:
            if "reboot" in out.lower():
                why = (
                    "nvpmodel wants a reboot for this change, which the HAL declined; "
                    "reboot to finish it, or choose another mode"
                )
            else:
                why = f"nvpmodel said: {_tail(out) or '(nothing)'}"
            raise HalError(
                f"asked nvpmodel for {mode.name} (ID {mode.id}) but it reports {now_name} (ID {now_id}) afterwards; {why}"
            )
        return mode

    # --- description ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        now_s = self._clock.monotonic_s()
        if self._schedule.due_s is None:  # asked before any read: the paths a read would use
            self._search()
            self._schedule.searched(now_s)
        return {
            "backend": self.backend,
            "board": self.board,
            "board_name": self.profile.name if self.profile else None,
            "model": self.model,
            "root": str(self.root),
            "paths": {
                "thermal": str(under(self.root, THERMAL_DIR)),
                "ina3221": {dev: str(hw) for dev, hw in self._devices.items() if hw is not None},
                "nvpmodel_conf": str(self.conf_path),
                "nvpmodel": shutil.which(self.nvpmodel) or self.nvpmodel,
                "proc": str(under(self.root, "/proc")),
            },
            "power_modes": "nvpmodel: set with -m <ID>, IDs looked up by name in nvpmodel.conf",
            "search": {"searches": self.searches, "read_failures": self.read_failures,
                       "next_in_s": max(0.0, self._schedule.due_s - now_s)},
        }


def open_board(options: BoardOptions) -> Board:
    """The ``jetson`` backend: sysfs sensors the profile names, nvpmodel power modes, real time.

    A Jetson on its own measures no battery: ``eps`` is None (a satellite's EPS would be read
    by a backend of its own). An nvpmodel that cannot be run (:func:`nvpmodel_problem`), or an
    nvpmodel.conf that cannot be read or used, is in ``notes``, not a refusal.
    """
    clock = RealClock()
    hal = JetsonHal.open(root=options.root, nvpmodel=options.nvpmodel, board=options.board, clock=clock)
    notes = [nvpmodel_problem(hal.nvpmodel)]
    try:
        hal.power_modes()
    except PowerModesUnavailable as exc:
        notes.append(f"nvpmodel.conf: {exc}")
    return Board("jetson", hal, clock, SensorSet.KNOWN, PowerControl.NVPMODEL, profile=hal.profile,
                 nvpmodel=hal, notes=tuple(n for n in notes if n))


__all__ = [
    "JetsonHal",
    "open_board",
    "NvpmodelConf",
    "TegrastatsSample",
    "budget_from_name",
    "detect_board",
    "nvpmodel_problem",
    "parse_nvpmodel_conf",
    "parse_nvpmodel_query",
    "parse_tegrastats",
    "read_model",
    "zone_key",
]
