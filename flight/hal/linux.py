"""The Linux PC backend: whatever sensors a PC has, and power modes kept in software.

Reads, where present:

- ``/sys/class/thermal/thermal_zone*`` (``temp`` in millidegrees C);
- ``/sys/class/hwmon/hwmon*/temp*_input`` (millidegrees C), named ``chip/label``
  (``coretemp/Package id 0``, ``nvme/Composite``);
- RAPL energy counters, ``/sys/class/powercap/intel-rapl:*/energy_uj`` (AMD CPUs expose
  theirs under the same name). A counter gives energy, so power is the difference of two
  reads over the time between them, from an injectable monotonic clock; the counter wraps
  at ``max_energy_range_uj``, and goes back to near 0 when reset (a resume from suspend, a
  driver reloaded): a fall that, taken as a wrap, would mean more than half the range or
  more than :data:`RAPL_MAX_POWER_W` is a reset, that sample missing.

A PC has no nvpmodel: ``LOW``/``MEDIUM``/``MAX`` are names the agent can set and read back,
recorded here and changing nothing on the machine (``describe()`` says so). That keeps
the agent's power logic runnable on a developer's PC and in CI.

In a container most of this is absent; ``read()`` still returns a valid reading, with each
absent sensor named in ``missing``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from flight.hal.base import (
    Board,
    BoardOptions,
    Hal,
    HalError,
    HalReading,
    PowerControl,
    PowerMode,
    RailReading,
    SensorSet,
    find_power_mode,
    order_power_modes,
)
from flight.hal.procfs import ProcSampler
from flight.hal.sysfs import (
    ZonesOff,
    describe_error,
    millidegrees_to_c,
    read_int,
    read_thermal_zones,
    under,
    unique_key,
)

# Budgets for the software-only modes: round numbers for the agent's own planning; the PC
# enforces none of them.
DEFAULT_SOFTWARE_MODES_W: Mapping[str, float] = {"LOW": 15.0, "MEDIUM": 35.0, "MAX": 65.0}
DEFAULT_INITIAL_MODE = "MAX"  # a PC runs unconstrained until told otherwise
# No RAPL domain draws this: more than any PC's power supply gives. A counter that went back by an amount that, as a
# wrap, means more is a reset (found in audit: a reset after a resume read as a wrap, 262 kW for one sample).
RAPL_MAX_POWER_W = 5000.0

_INDEX_RE = re.compile(r"(\d+)")
_RAPL_ZONE_RE = re.compile(r"^intel-rapl(:\d+)+$")


def _index(path: Path) -> tuple[int, ...]:
    """Numeric sort key for hwmon10 after hwmon9, temp10_input after temp9_input."""
    return tuple(int(n) for n in _INDEX_RE.findall(path.name))


def rapl_power_w(energy_before_uj: int, energy_after_uj: int, dt_s: float, max_range_uj: int | None,
                 max_power_w: float = RAPL_MAX_POWER_W) -> float:
    """Mean power between two RAPL energy reads. A counter that went back has wrapped at
    ``max_range_uj``; ValueError if it did and the range is unknown, if no time passed, or if
    as a wrap it would mean more than half the range or more than ``max_power_w``: a reset,
    which says nothing of the energy used between the reads.

    >>> rapl_power_w(1_000_000, 13_500_000, 0.5, None)
    25.0
    """
    if dt_s <= 0:
        raise ValueError(f"no time passed between energy reads ({dt_s} s)")
    delta_uj = energy_after_uj - energy_before_uj
    if delta_uj < 0:
        if not max_range_uj:
            raise ValueError(
                f"energy counter went back ({energy_before_uj} -> {energy_after_uj} uJ) "
                "and max_energy_range_uj is unknown"
            )
        delta_uj += max_range_uj
        if delta_uj > max_range_uj / 2 or delta_uj / 1e6 / dt_s > max_power_w:
            raise ValueError(
                f"energy counter reset ({energy_before_uj} -> {energy_after_uj} uJ; as a wrap at {max_range_uj} uJ, "
                f"{delta_uj / 1e6 / dt_s:.0f} W over {dt_s:g} s): sample discarded"
            )
    return delta_uj / 1e6 / dt_s


class LinuxHal(Hal):
    """Any Linux machine. ``monotonic_s`` is the clock RAPL power is computed against."""

    backend = "linux"

    def __init__(
        self,
        *,
        root: str | Path = "/",
        monotonic_s: Callable[[], float] = time.monotonic,
        modes_w: Mapping[str, float] = DEFAULT_SOFTWARE_MODES_W,
        initial_mode: str = DEFAULT_INITIAL_MODE,
    ):
        self.root = Path(root)
        self.monotonic_s = monotonic_s
        self._modes = order_power_modes(
            [PowerMode(name, i, float(budget_w), "software") for i, (name, budget_w) in enumerate(modes_w.items())]
        )
        self._current = find_power_mode(self._modes, initial_mode)
        self._proc = ProcSampler(under(self.root, "/proc"))
        self._zones_off = ZonesOff()
        self._energy_before: dict[str, tuple[int, float]] = {}  # zone dir -> (energy_uj, t_s)
        self.hwmon_dir = under(self.root, "/sys/class/hwmon")
        self.powercap_dir = under(self.root, "/sys/class/powercap")

    # --- reading ----------------------------------------------------------------------------

    def read(self) -> HalReading:
        temps_c, missing, off = read_thermal_zones(self.root)
        missing += self._read_hwmon_temps(temps_c)
        rails, rapl_missing, rapl_notes = self._read_rapl()
        missing += rapl_missing
        notes = self._zones_off.notes(off) + rapl_notes
        board_power_w: float | None = None
        if "psys" in rails:
            board_power_w = rails["psys"].power_w
            notes.append("board_power_w from the RAPL psys domain (whole platform, as the firmware estimates it)")
        elif any(m.startswith("psys: ") for m in rapl_missing):  # the domain is there, this sample is not
            missing.append("board_power_w: the RAPL psys domain gave no power this sample (see psys)")
        elif any(n.startswith("psys: ") for n in rapl_notes):  # its first sample: no power yet, and no fault
            notes.append("board_power_w: from the RAPL psys domain once it has a second energy read")
        else:
            missing.append("board_power_w: no RAPL psys domain; a PC has no input-power sensor otherwise")
        cpu_pct, mem_pct, proc_missing = self._proc.sample()
        missing += proc_missing
        if self._proc.first_note:
            notes.append(self._proc.first_note)
        return HalReading(temps_c, rails, board_power_w, cpu_pct, mem_pct, tuple(missing), tuple(notes))

    def _read_hwmon_temps(self, temps_c: dict[str, float]) -> list[str]:
        missing: list[str] = []
        chips = sorted(self.hwmon_dir.glob("hwmon*"), key=_index)
        if not chips:
            return [f"hwmon temperatures: no hwmon devices under {self.hwmon_dir}"]
        inputs = 0
        for chip in chips:
            try:
                chip_name = (chip / "name").read_text().strip() or chip.name
            except (OSError, UnicodeDecodeError):  # found in audit: bytes not text raised out of read()
                chip_name = chip.name
            for temp_path in sorted(chip.glob("temp*_input"), key=_index):
                inputs += 1
                n = temp_path.name[len("temp") : -len("_input")]
                try:
                    label = (chip / f"temp{n}_label").read_text().strip() or f"temp{n}"
                except (OSError, UnicodeDecodeError):
                    label = f"temp{n}"
                key = unique_key(temps_c, f"{chip_name}/{label}")
                try:
                    temps_c[key] = millidegrees_to_c(temp_path.read_text())
                except (OSError, ValueError) as exc:
                    missing.append(f"{key}: {describe_error(exc)} ({temp_path})")
        if inputs == 0:
            missing.append(f"hwmon temperatures: no temp*_input under {self.hwmon_dir}")
        return missing

    def _rapl_zones(self) -> list[tuple[str, Path]]:
        """(rail key, zone dir): ``package-0``, ``psys``; sub-zones as ``package-0/core``."""
        zones = sorted((p for p in self.powercap_dir.glob("intel-rapl:*") if _RAPL_ZONE_RE.match(p.name)), key=_index)
        names: dict[str, str] = {}
        for zone in zones:
            try:
                names[zone.name] = (zone / "name").read_text().strip() or zone.name
            except (OSError, UnicodeDecodeError):
                names[zone.name] = zone.name
        keyed: list[tuple[str, Path]] = []
        for zone in zones:
            parent = zone.name.rsplit(":", 1)[0]
            key = names[zone.name]
            if parent != "intel-rapl":  # a sub-zone: its name (core, dram) repeats per package
                key = f"{names.get(parent, parent)}/{key}"
            keyed.append((key, zone))
        return keyed

    def _read_rapl(self) -> tuple[dict[str, RailReading], list[str], list[str]]:
        """(rails, missing, notes). A zone's first energy sample gives no power yet: a note, not a missing sensor
        (found in audit: every start of a healthy PC said SENSOR_MISSING for each RAPL zone and board_power_w, and
        SENSOR_RESTORED for each a tick later, as cpu_pct's first sample once did)."""
        rails: dict[str, RailReading] = {}
        missing: list[str] = []
        notes: list[str] = []
        zones = self._rapl_zones()
        if not zones:
            return rails, [f"rapl: no intel-rapl:* zones under {self.powercap_dir}"], notes
        t_s = self.monotonic_s()  # one time stamp for all zones: they are read microseconds apart
        for key, zone in zones:
            energy_path = zone / "energy_uj"
            try:
                energy_uj = read_int(energy_path)
            except (OSError, ValueError) as exc:
                why = describe_error(exc)
                if isinstance(exc, PermissionError):
                    why += " (energy_uj is root-only on kernels with the PLATYPUS fix, CVE-2020-8694)"
                missing.append(f"{key}: {why} ({energy_path})")
                self._energy_before.pop(str(zone), None)
                continue
            before = self._energy_before.get(str(zone))
            self._energy_before[str(zone)] = (energy_uj, t_s)
            if before is None:
                notes.append(f"{key}: first energy sample; power needs a second read")
                continue
            try:
                max_range: int | None = read_int(zone / "max_energy_range_uj")
            except (OSError, ValueError):
                max_range = None
            try:
                power_w = rapl_power_w(before[0], energy_uj, t_s - before[1], max_range)
            except ValueError as exc:
                missing.append(f"{key}: {exc}")
                continue
            rails[key] = RailReading(None, None, power_w)
        return rails, missing, notes

    # --- power modes (software only) --------------------------------------------------------

    def power_modes(self) -> tuple[PowerMode, ...]:
        return self._modes

    def current_power_mode(self) -> PowerMode | None:
        return self._current

    def set_power_mode(self, name: str) -> PowerMode:
        self._current = find_power_mode(self._modes, name)
        return self._current

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "board": "linux-pc",
            "root": str(self.root),
            "paths": {
                "thermal": str(under(self.root, "/sys/class/thermal")),
                "hwmon": str(self.hwmon_dir),
                "powercap": str(self.powercap_dir),
                "proc": str(under(self.root, "/proc")),
            },
            "power_modes": (
                "software only: a PC has no nvpmodel, so set_power_mode records the name "
                "for the agent and changes nothing on the machine"
            ),
        }


def open_board(options: BoardOptions) -> Board:
    """The ``linux`` backend: whatever sensors this PC has, power modes kept in software, real time.

    A board profile named in the options is checked (so a typo fails at start) and kept for
    reference; its modes are not the PC's.
    """
    from flight.clock import RealClock
    from flight.hal.boards import BoardProfileError, load_board

    profile = None
    if options.board:
        try:
            profile = load_board(options.board)
        except BoardProfileError as exc:
            raise HalError(str(exc)) from None
    return Board("linux", LinuxHal(root=options.root), RealClock(), SensorSet.DISCOVERED, PowerControl.SOFTWARE,
                 profile=profile)


__all__ = ["DEFAULT_SOFTWARE_MODES_W", "RAPL_MAX_POWER_W", "LinuxHal", "open_board", "rapl_power_w"]
