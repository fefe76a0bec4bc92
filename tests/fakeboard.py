"""Fake board root filesystems for the HAL tests: three Orins and a PC.

Each Orin tree is laid out as the real board's is (FACTS.md "Jetson interfaces"): thermal
zones with the real type names, INA3221 hwmon directories at 1-0040 (and 1-0041 on the
AGX Orin) with the real channel labels and a board-specific hwmon number, an
``/etc/nvpmodel.conf`` copied from ``tests/fixtures/boards/``, ``/proc/device-tree/model``
with its trailing NUL, ``/proc/stat`` and ``/proc/meminfo``. A fake ``nvpmodel`` (a Python
script written into ``<root>/usr/sbin/``) answers ``-q`` and ``-m N`` and keeps its state in
``<root>/var/lib/nvpmodel/status`` as the real tool does, so ``set_power_mode`` runs a real
subprocess.

The layouts here are written from FACTS.md independently of the board profiles in
``flight/hal/boards/``, so a test that reads a fake tree through a profile checks the
profile too.

Every number is chosen so the expected value can be written out exactly in a test:
54937 millidegrees is 54.937 C; 5072 mV x 921 mA is 4.671312 W.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "boards"


@dataclass(frozen=True)
class RailSpec:
    device: str  # I2C directory name, bus-address: "1-0040"
    channel: int  # 1..3
    label: str  # "" writes no label file (mainline hides it), "NC" is L4T's "not connected"
    voltage_mv: int
    current_ma: int


@dataclass(frozen=True)
class BoardSpec:
    board: str
    model: str  # /proc/device-tree/model without its NUL
    zones: tuple[tuple[str, int], ...]  # (type, millidegrees C) in thermal_zone order
    rails: tuple[RailSpec, ...]
    hwmon_index: dict[str, int]  # device -> N of hwmon/hwmonN
    nvpmodel_conf: str  # file in tests/fixtures/boards/
    mode_ids: dict[str, int]  # name -> ID in that conf, written out for the tests
    mem_total_kb: int
    mem_available_kb: int


# Temperatures of the Orin Nano tree are those of the tegrastats line in FACTS.md.
ORIN_NANO = BoardSpec(
    board="orin_nano",
    model="NVIDIA Jetson Orin Nano Developer Kit",
    zones=(
        ("cpu-thermal", 54937),
        ("gpu-thermal", 55468),
        ("soc0-thermal", 56156),
        ("soc1-thermal", 56656),
        ("soc2-thermal", 55562),
        ("tj-thermal", 56656),
    ),
    rails=(
        RailSpec("1-0040", 1, "VDD_IN", 5072, 921),  # 4.671312 W
        RailSpec("1-0040", 2, "VDD_CPU_GPU_CV", 5064, 104),  # 0.526656 W
        RailSpec("1-0040", 3, "VDD_SOC", 5056, 265),  # 1.33984 W
    ),
    hwmon_index={"1-0040": 1},
    nvpmodel_conf="nvpmodel_orin_nano.conf",
    mode_ids={"15W": 0, "25W": 1, "MAXN_SUPER": 2, "7W": 3},
    mem_total_kb=7_802_880,  # 7620 MB, as tegrastats reports the Orin Nano's RAM (FACTS.md)
    mem_available_kb=5_852_160,  # exactly 25 % used
)

ORIN_NX_16GB = BoardSpec(
    board="orin_nx_16gb",
    model="NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
    zones=(
        ("cpu-thermal", 48500),
        ("gpu-thermal", 47250),
        ("soc0-thermal", 47000),
        ("soc1-thermal", 46750),
        ("soc2-thermal", 46500),
        ("tj-thermal", 48500),
    ),
    rails=(
        RailSpec("1-0040", 1, "VDD_IN", 5080, 1450),  # 7.366 W
        RailSpec("1-0040", 2, "VDD_CPU_GPU_CV", 5072, 300),  # 1.5216 W
        RailSpec("1-0040", 3, "VDD_SOC", 5072, 340),  # 1.72448 W
    ),
    hwmon_index={"1-0040": 3},
    nvpmodel_conf="nvpmodel_orin_nx_16gb.conf",
    mode_ids={"MAXN": 0, "10W": 1, "15W": 2, "25W": 3},
    mem_total_kb=15_928_000,
    mem_available_kb=11_946_000,  # exactly 25 % used
)

AGX_ORIN_64GB = BoardSpec(
    board="agx_orin_64gb",
    model="Jetson AGX Orin Developer Kit",
    zones=(
        ("cpu-thermal", 51000),
        ("gpu-thermal", 49500),
        ("cv0-thermal", 48250),
        ("cv1-thermal", 48000),
        ("cv2-thermal", 47750),
        ("soc0-thermal", 48750),
        ("soc1-thermal", 48500),
        ("soc2-thermal", 48250),
        ("tj-thermal", 51000),
        ("tboard_tegra", 40000),
        ("tdiode_tegra", 42250),
    ),
    rails=(
        RailSpec("1-0040", 1, "VDD_GPU_SOC", 4976, 640),  # 3.18464 W
        RailSpec("1-0040", 2, "VDD_CPU_CV", 4976, 880),  # 4.37888 W
        RailSpec("1-0040", 3, "VIN_SYS_5V0", 4968, 1000),  # 4.968 W
        RailSpec("1-0041", 1, "NC", 0, 0),
        RailSpec("1-0041", 2, "VDDQ_VDD2_1V8AO", 4984, 219),  # 1.091496 W
        RailSpec("1-0041", 3, "", 0, 0),
    ),
    hwmon_index={"1-0040": 2, "1-0041": 4},
    nvpmodel_conf="nvpmodel_agx_orin_64gb.conf",
    mode_ids={"MAXN": 0, "15W": 1, "30W": 2, "50W": 3},
    mem_total_kb=64_000_000,
    mem_available_kb=48_000_000,  # exactly 25 % used
)

BOARDS = {spec.board: spec for spec in (ORIN_NANO, ORIN_NX_16GB, AGX_ORIN_64GB)}

# What the zone of a powered-off domain reads, in millidegrees: public AGX Orin tegrastats lines show
# "CV0@-256C" for the CV domains of an idle board (the source of the agx_orin_64gb zone names too).
POWERED_OFF_MILLIDEG = -256000

# /proc/stat aggregate lines: user nice system idle iowait irq softirq steal guest guest_nice.
# Between the two: 200 user + 100 system + 50 softirq busy, 600 idle + 50 iowait idle =
# 35.0 % busy. guest (30) is already inside user, so a parser that added it would get 36.9 %.
PROC_STAT_1 = (1000, 0, 500, 8000, 100, 0, 50, 0, 0, 0)
PROC_STAT_2 = (1200, 0, 600, 8600, 150, 0, 100, 0, 30, 0)
CPU_PCT_BETWEEN = 35.0


FAKE_NVPMODEL = '''#!@PYTHON@
"""Fake nvpmodel written by tests/fakeboard.py: answers -q and -m N.

It finds its tree from its own path (<root>/usr/sbin/nvpmodel). State: the mode ID in
<root>/var/lib/nvpmodel/status ("pmode:0002 ...", as the real tool keeps it), else the
PM_CONFIG default. Every call is appended to <root>/var/log/fake-nvpmodel.log; switches for
failure tests are in <root>/var/lib/nvpmodel/fake-behaviour.json.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "etc" / "nvpmodel.conf"
STATUS = ROOT / "var" / "lib" / "nvpmodel" / "status"
LOG = ROOT / "var" / "log" / "fake-nvpmodel.log"
BEHAVIOUR = ROOT / "var" / "lib" / "nvpmodel" / "fake-behaviour.json"


def conf_modes():
    modes, default = {}, None
    for line in CONF.read_text().splitlines():
        m = re.match(r"<\\s*POWER_MODEL\\s+ID=(\\d+)\\s+NAME=(\\S+)\\s*>", line)
        if m:
            modes[int(m.group(1))] = m.group(2)
        m = re.match(r"<\\s*PM_CONFIG\\s+DEFAULT=(\\d+)\\s*>", line)
        if m:
            default = int(m.group(1))
    return modes, default


def current_id(default):
    if STATUS.exists():
        m = re.match(r"pmode:(\\d+)", STATUS.read_text())
        if m:
            return int(m.group(1))
    return default


def main(argv):
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as log:
        log.write(json.dumps(argv) + "\\n")
    behaviour = json.loads(BEHAVIOUR.read_text()) if BEHAVIOUR.exists() else {}
    modes, default = conf_modes()
    if argv == ["-q"]:
        mode_id = current_id(default)
        if behaviour.get("query_garbage"):
            print("NVPM ERROR: something went wrong")
            return 0
        print("NVPM WARN: fan mode is not set!")
        print("NV Power Mode: " + modes[mode_id])
        print(mode_id)
        return 0
    if len(argv) == 2 and argv[0] == "-m":
        try:
            mode_id = int(argv[1])
        except ValueError:
            print("NVPM ERROR: invalid mode " + repr(argv[1]), file=sys.stderr)
            return 1
        if mode_id not in modes:
            print("NVPM ERROR: Invalid power mode ID %d" % mode_id, file=sys.stderr)
            return 1
        if behaviour.get("fail_set"):
            print("NVPM ERROR: failed to write /sys/devices/system/cpu/cpu4/online: Permission denied", file=sys.stderr)
            return 1
        if mode_id in behaviour.get("reboot_ids", []) and mode_id != current_id(default):
            print("NVPM WARN: Reboot required for changing to this power mode: %d" % mode_id)
            print("NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:")
            if sys.stdin.readline().strip().lower() != "yes":
                print("NVPM WARN: power mode is not changed")
                return 0
        STATUS.parent.mkdir(parents=True, exist_ok=True)
        STATUS.write_text("pmode:%04d fmode:quiet\\n" % mode_id)
        return 0
    print("usage: nvpmodel [-q] [-m MODE]", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
'''


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def proc_stat_text(aggregate: tuple[int, ...], cores: int) -> str:
    """A /proc/stat with the aggregate line, per-core lines (aggregate split evenly) and the
    lines after them, as the kernel writes it."""
    lines = ["cpu  " + " ".join(str(v) for v in aggregate)]
    for n in range(cores):
        lines.append(f"cpu{n} " + " ".join(str(v // cores) for v in aggregate))
    lines += ["intr 123456 0 0", "ctxt 987654", "btime 1700000000", "processes 4321", "procs_running 1", "procs_blocked 0"]
    return "\n".join(lines) + "\n"


def meminfo_text(total_kb: int, available_kb: int) -> str:
    return (
        f"MemTotal:       {total_kb} kB\n"
        f"MemFree:        {available_kb // 2} kB\n"
        f"MemAvailable:   {available_kb} kB\n"
        "Buffers:           12345 kB\n"
        "Cached:          1234567 kB\n"
        "SwapTotal:       3901440 kB\n"
        "SwapFree:        3901440 kB\n"
    )


class FakeBoard:
    """A fake Orin root. Use :func:`make_board`; the methods break it for failure tests."""

    def __init__(self, root: Path, spec: BoardSpec):
        self.root = root
        self.spec = spec
        self.nvpmodel = root / "usr" / "sbin" / "nvpmodel"

    # --- where things are ---

    def zone_dir(self, zone_type: str) -> Path:
        for n, (name, _) in enumerate(self.spec.zones):
            if name == zone_type:
                return self.root / "sys" / "class" / "thermal" / f"thermal_zone{n}"
        raise KeyError(zone_type)

    def hwmon_dir(self, device: str) -> Path:
        base = self.root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / device / "hwmon"
        (found,) = base.glob("hwmon*")
        return found

    def rail(self, label: str) -> RailSpec:
        for r in self.spec.rails:
            if r.label == label:
                return r
        raise KeyError(label)

    # --- breaking it ---

    def set_zone_text(self, zone_type: str, text: str) -> None:
        """Write raw text into a zone's ``temp`` ("" reads empty, as tj-thermal on some carriers)."""
        (self.zone_dir(zone_type) / "temp").write_text(text)

    def break_zone(self, zone_type: str) -> None:
        """Make reading the zone's ``temp`` fail with an OSError (EISDIR), whoever runs the test."""
        temp = self.zone_dir(zone_type) / "temp"
        temp.unlink()
        temp.mkdir()

    def remove_rail(self, label: str) -> None:
        """The channel disappears: no label, input or current file (driver not bound, DT change)."""
        r = self.rail(label)
        hw = self.hwmon_dir(r.device)
        for name in (f"in{r.channel}_label", f"in{r.channel}_input", f"curr{r.channel}_input"):
            (hw / name).unlink(missing_ok=True)

    def unbind_ina3221(self, device: str) -> None:
        """The driver lets go of ``device`` (an I2C error recovery, a module unloaded): its entry under the driver's
        directory goes, its hwmon directory with it (kept aside for :meth:`bind_ina3221`)."""
        aside = self.root / "unbound" / device
        aside.parent.mkdir(parents=True, exist_ok=True)
        (self.root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / device).rename(aside)

    def bind_ina3221(self, device: str, hwmon_index: int) -> None:
        """The driver binds ``device`` again, and its hwmon device gets the number ``hwmon_index`` this time."""
        entry = self.root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / device
        (self.root / "unbound" / device).rename(entry)
        (old,) = (entry / "hwmon").glob("hwmon*")
        old.rename(entry / "hwmon" / f"hwmon{hwmon_index}")

    def add_zone(self, zone_type: str, millideg: int) -> Path:
        """A zone whose driver probes after the start: the number after the highest ``thermal_zoneN`` (as the
        kernel gives a new one; a count of them wrote over a zone once a lower one was removed), returned."""
        base = self.root / "sys" / "class" / "thermal"
        n = 1 + max((int(p.name.removeprefix("thermal_zone")) for p in base.glob("thermal_zone*")
                     if p.name.removeprefix("thermal_zone").isdigit()), default=-1)
        _write(base / f"thermal_zone{n}" / "type", zone_type + "\n")
        _write(base / f"thermal_zone{n}" / "temp", f"{millideg}\n")
        return base / f"thermal_zone{n}"

    def fail_reads(self, path: Path) -> None:
        """Reading ``path`` fails as a sensor's read does after an I2C bus glitch (EIO): it becomes a link to
        /proc/self/mem, which the kernel refuses to read at offset 0. :meth:`heal` puts a value back."""
        path.unlink()
        path.symlink_to("/proc/self/mem")

    def heal(self, path: Path, text: str) -> None:
        path.unlink()
        path.write_text(text)

    def set_rail_file(self, label: str, kind: str, text: str) -> None:
        """Raw text into ``in{N}_input`` (kind "in") or ``curr{N}_input`` (kind "curr")."""
        r = self.rail(label)
        (self.hwmon_dir(r.device) / f"{kind}{r.channel}_input").write_text(text)

    def write_proc_stat(self, aggregate: tuple[int, ...]) -> None:
        _write(self.root / "proc" / "stat", proc_stat_text(aggregate, cores=6))

    def set_nvpmodel_behaviour(
        self, *, fail_set: bool = False, reboot_ids: tuple[int, ...] = (), query_garbage: bool = False
    ) -> None:
        _write(
            self.root / "var" / "lib" / "nvpmodel" / "fake-behaviour.json",
            json.dumps({"fail_set": fail_set, "reboot_ids": list(reboot_ids), "query_garbage": query_garbage}),
        )

    # --- what happened ---

    def nvpmodel_calls(self) -> list[list[str]]:
        log = self.root / "var" / "log" / "fake-nvpmodel.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def nvpmodel_status_id(self) -> int | None:
        status = self.root / "var" / "lib" / "nvpmodel" / "status"
        if not status.exists():
            return None
        return int(status.read_text().split()[0].split(":")[1])


def make_board(
    tmp_path: Path,
    board: str,
    *,
    hwmon_index: dict[str, int] | None = None,
    omit_rails: tuple[str, ...] = (),
    empty_zones: tuple[str, ...] = (),
    off_zones: tuple[str, ...] = (),
    mode_id: int | None = None,
    model: str | None = None,
) -> FakeBoard:
    """Build the fake tree of ``board`` (a key of :data:`BOARDS`) under ``tmp_path/board``.

    ``hwmon_index`` overrides the hwmon numbers; ``omit_rails`` leaves channels out;
    ``empty_zones`` makes zones read empty; ``off_zones`` read as a powered-off domain's
    (:data:`POWERED_OFF_MILLIDEG`); ``mode_id`` sets the mode nvpmodel starts in
    (default: the conf's PM_CONFIG default); ``model`` replaces the model string.
    """
    spec = BOARDS[board]
    root = tmp_path / board
    root.mkdir(parents=True)
    fake = FakeBoard(root, spec)

    for n, (zone_type, millideg) in enumerate(spec.zones):
        zone = root / "sys" / "class" / "thermal" / f"thermal_zone{n}"
        _write(zone / "type", zone_type + "\n")
        if zone_type in off_zones:
            millideg = POWERED_OFF_MILLIDEG
        _write(zone / "temp", "" if zone_type in empty_zones else f"{millideg}\n")
        _write(zone / "mode", "enabled\n")
    # The cooling devices sit beside the zones in the real tree; the HAL must skip them.
    _write(root / "sys" / "class" / "thermal" / "cooling_device0" / "type", "pwm-fan\n")

    hwmon_index = {**spec.hwmon_index, **(hwmon_index or {})}
    for device, n in hwmon_index.items():
        hw = root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / device / "hwmon" / f"hwmon{n}"
        _write(hw / "name", "ina3221\n")
        _write(hw / "update_interval", "1100\n")
        _write(root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / device / "name", "ina3221\n")
    # The driver directory also holds bind/unbind/uevent files, which are not devices.
    _write(root / "sys" / "bus" / "i2c" / "drivers" / "ina3221" / "uevent", "")
    for r in spec.rails:
        if r.label in omit_rails:
            continue
        hw = fake.hwmon_dir(r.device)
        if r.label:
            _write(hw / f"in{r.channel}_label", r.label + "\n")
        _write(hw / f"in{r.channel}_input", f"{r.voltage_mv}\n")
        _write(hw / f"curr{r.channel}_input", f"{r.current_ma}\n")
        _write(hw / f"curr{r.channel}_crit", "32760\n")
        _write(hw / f"curr{r.channel}_max", "32760\n")
        _write(hw / f"curr{r.channel}_crit_alarm", "0\n")
        # in4..in6 are the shunt voltages (mV) of channels 1..3; the HAL must not take them for rails.
        _write(hw / f"in{r.channel + 3}_input", "4\n")

    shutil.copyfile(FIXTURES / spec.nvpmodel_conf, _write(root / "etc" / "nvpmodel.conf", ""))
    script = _write(fake.nvpmodel, FAKE_NVPMODEL.replace("@PYTHON@", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if mode_id is not None:
        _write(root / "var" / "lib" / "nvpmodel" / "status", f"pmode:{mode_id:04d} fmode:quiet\n")

    _write(root / "proc" / "device-tree" / "model", (model if model is not None else spec.model) + "\x00")
    fake.write_proc_stat(PROC_STAT_1)
    _write(root / "proc" / "meminfo", meminfo_text(spec.mem_total_kb, spec.mem_available_kb))
    return fake


# --- a PC -------------------------------------------------------------------------------------

# RAPL counter range of a typical Intel package domain; the counter wraps past it.
RAPL_MAX_RANGE_UJ = 262_143_328_850


class FakePC:
    """A fake Linux PC root with thermal zones, hwmon chips and RAPL powercap zones."""

    def __init__(self, root: Path):
        self.root = root

    def rapl_dir(self, zone: str) -> Path:
        return self.root / "sys" / "class" / "powercap" / zone

    def set_energy_uj(self, zone: str, energy_uj: int) -> None:
        (self.rapl_dir(zone) / "energy_uj").write_text(f"{energy_uj}\n")

    def write_proc_stat(self, aggregate: tuple[int, ...]) -> None:
        _write(self.root / "proc" / "stat", proc_stat_text(aggregate, cores=4))


def make_pc(tmp_path: Path, *, psys: bool = True) -> FakePC:
    """A desktop: ACPI and package thermal zones, coretemp and nvme hwmon chips (hwmon
    numbers with a gap), RAPL package-0 with core/uncore sub-zones, and psys if asked."""
    root = tmp_path / "pc"
    root.mkdir(parents=True)
    pc = FakePC(root)
    thermal = root / "sys" / "class" / "thermal"
    for n, (zone_type, millideg) in enumerate((("acpitz", 27800), ("x86_pkg_temp", 45000))):
        _write(thermal / f"thermal_zone{n}" / "type", zone_type + "\n")
        _write(thermal / f"thermal_zone{n}" / "temp", f"{millideg}\n")
    hwmon = root / "sys" / "class" / "hwmon"
    _write(hwmon / "hwmon0" / "name", "acpitz\n")
    _write(hwmon / "hwmon0" / "temp1_input", "27800\n")
    _write(hwmon / "hwmon1" / "name", "coretemp\n")
    for n, (label, millideg) in enumerate((("Package id 0", 45000), ("Core 0", 43000), ("Core 1", 44000)), start=1):
        _write(hwmon / "hwmon1" / f"temp{n}_label", label + "\n")
        _write(hwmon / "hwmon1" / f"temp{n}_input", f"{millideg}\n")
    _write(hwmon / "hwmon3" / "name", "nvme\n")
    _write(hwmon / "hwmon3" / "temp1_label", "Composite\n")
    _write(hwmon / "hwmon3" / "temp1_input", "38850\n")
    _write(hwmon / "hwmon3" / "temp2_label", "Sensor 1\n")
    _write(hwmon / "hwmon3" / "temp2_input", "\n")  # a sensor that reads empty

    # /sys/class/powercap holds the control type "intel-rapl" (not a zone) and the zones.
    _write(root / "sys" / "class" / "powercap" / "intel-rapl" / "enabled", "1\n")
    zones = {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core", "intel-rapl:0:1": "uncore"}
    if psys:
        zones["intel-rapl:1"] = "psys"
    for zone, name in zones.items():
        _write(pc.rapl_dir(zone) / "name", name + "\n")
        _write(pc.rapl_dir(zone) / "energy_uj", "0\n")
        _write(pc.rapl_dir(zone) / "max_energy_range_uj", f"{RAPL_MAX_RANGE_UJ}\n")

    pc.write_proc_stat(PROC_STAT_1)
    _write(root / "proc" / "meminfo", meminfo_text(16_000_000, 12_000_000))
    return pc


class StepClock:
    """A monotonic clock for tests: returns the given times in order, then keeps the last."""

    def __init__(self, *times_s: float):
        self.times_s = list(times_s)
        self.calls = 0

    def __call__(self) -> float:
        t = self.times_s[min(self.calls, len(self.times_s) - 1)]
        self.calls += 1
        return t
