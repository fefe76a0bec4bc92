"""Linux PC backend: on this very machine, and on a fake PC tree with hwmon and RAPL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flight.hal import BoardOptions, HalError, HalReading, open_board
from flight.hal.linux import LinuxHal, rapl_power_w
from tests.fakeboard import CPU_PCT_BETWEEN, PROC_STAT_2, RAPL_MAX_RANGE_UJ, StepClock, make_pc

ROUNDING = 1e-9  # W or C: only binary rounding of decimal-exact values


# --- this machine -----------------------------------------------------------------------------


def test_this_machine_gives_a_valid_reading_and_names_what_is_missing():
    board = open_board("linux")
    hal = board.hal
    assert isinstance(hal, LinuxHal)
    assert board.eps is None and board.stepper is None and board.sensors.value == "discovered"
    first = hal.read()
    second = hal.read()
    for reading in (first, second):
        assert isinstance(reading, HalReading)
        json.dumps(reading.as_dict())  # telemetry can carry it as it is
    # Whatever this machine lacks must be named, never silently absent.
    if not list(Path("/sys/class/thermal").glob("thermal_zone*")):
        assert any(m.startswith("thermal zones: none") for m in first.missing)
    if not list(Path("/sys/class/hwmon").glob("hwmon*")):
        assert any(m.startswith("hwmon temperatures:") for m in first.missing)
    if not list(Path("/sys/class/powercap").glob("intel-rapl:*")):
        assert any(m.startswith("rapl: no intel-rapl") for m in first.missing)
        assert first.rails == {}
    if first.board_power_w is None:  # missing, or a note where psys needs its second read
        assert any(m.startswith("board_power_w:") for m in first.missing + first.notes)
    # /proc is there on any Linux: memory use on the first read, load needs a second.
    assert first.mem_pct is not None and 0.0 < first.mem_pct < 100.0
    assert first.cpu_pct is None and any(m.startswith("cpu_pct: first") for m in first.notes)
    assert (second.cpu_pct is None) == any(m.startswith("cpu_pct:") for m in second.missing)


def test_software_power_modes():
    hal = open_board("linux", BoardOptions()).hal
    assert [(m.name, m.budget_w, m.budget_source) for m in hal.power_modes()] == [
        ("LOW", 15.0, "software"),
        ("MEDIUM", 35.0, "software"),
        ("MAX", 65.0, "software"),
    ]
    assert hal.current_power_mode().name == "MAX"
    assert hal.set_power_mode("LOW").name == "LOW"
    assert hal.current_power_mode().name == "LOW"
    with pytest.raises(HalError, match="unknown power mode '15W': this board offers LOW, MEDIUM, MAX"):
        hal.set_power_mode("15W")
    assert hal.current_power_mode().name == "LOW"
    assert "software only" in hal.describe()["power_modes"]
    assert hal.describe()["backend"] == "linux"


def test_custom_software_modes_and_bad_initial_mode():
    hal = LinuxHal(modes_w={"ECO": 10.0, "FULL": 100.0}, initial_mode="ECO")
    assert [m.name for m in hal.power_modes()] == ["ECO", "FULL"]
    with pytest.raises(HalError, match="unknown power mode 'MAX'"):
        LinuxHal(modes_w={"ECO": 10.0})


# --- a fake PC --------------------------------------------------------------------------------


def test_fake_pc_temperatures_from_zones_and_hwmon(tmp_path):
    pc = make_pc(tmp_path)
    reading = LinuxHal(root=pc.root, monotonic_s=StepClock(0.0)).read()
    assert reading.temps_c == pytest.approx(
        {
            "acpitz": 27.8,
            "x86_pkg_temp": 45.0,
            "acpitz/temp1": 27.8,  # no label file: the input's own name
            "coretemp/Package id 0": 45.0,
            "coretemp/Core 0": 43.0,
            "coretemp/Core 1": 44.0,
            "nvme/Composite": 38.85,
        },
        abs=ROUNDING,
    )
    empty = [m for m in reading.missing if m.startswith("nvme/Sensor 1:")]
    assert len(empty) == 1 and "read empty" in empty[0] and "hwmon3/temp2_input" in empty[0]


def test_a_zone_that_reads_powered_off_is_a_note_on_a_pc_too(tmp_path):
    """The zone reader is the Jetson's: a zone at exactly -256 C is a powered-off domain (a note, once), not a
    missing sensor; any other implausible value still is one."""
    pc = make_pc(tmp_path)
    (pc.root / "sys" / "class" / "thermal" / "thermal_zone0" / "temp").write_text("-256000\n")
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(0.0))
    reading = hal.read()
    assert "acpitz" not in reading.temps_c and not any(m.startswith("acpitz:") for m in reading.missing)
    assert [n for n in reading.notes if n.startswith("acpitz: powered off")]
    assert not any("powered off" in n for n in hal.read().notes)
    (pc.root / "sys" / "class" / "thermal" / "thermal_zone0" / "temp").write_text("-300000\n")
    assert any(m.startswith("acpitz: -300.0 C is outside") for m in hal.read().missing)

def test_rapl_power_from_two_energy_reads(tmp_path):
    pc = make_pc(tmp_path)
    clock = StepClock(100.0, 100.5)
    hal = LinuxHal(root=pc.root, monotonic_s=clock)
    before_uj = {"intel-rapl:0": 1_000_000, "intel-rapl:0:0": 500_000, "intel-rapl:0:1": 0, "intel-rapl:1": 2_000_000}
    for zone, uj in before_uj.items():
        pc.set_energy_uj(zone, uj)
    first = hal.read()
    assert first.rails == {} and first.board_power_w is None
    for key in ("package-0", "package-0/core", "package-0/uncore", "psys"):
        assert f"{key}: first energy sample; power needs a second read" in first.notes

    # 0.5 s later: 12.5 J, 7.5 J, 0.25 J and 20 J more.
    after_uj = {"intel-rapl:0": 13_500_000, "intel-rapl:0:0": 8_000_000, "intel-rapl:0:1": 250_000, "intel-rapl:1": 22_000_000}
    for zone, uj in after_uj.items():
        pc.set_energy_uj(zone, uj)
    pc.write_proc_stat(PROC_STAT_2)
    second = hal.read()
    assert {k: r.power_w for k, r in second.rails.items()} == pytest.approx(
        {"package-0": 25.0, "package-0/core": 15.0, "package-0/uncore": 0.5, "psys": 40.0}, abs=ROUNDING
    )
    assert all(r.voltage_v is None and r.current_a is None for r in second.rails.values())
    assert second.board_power_w == pytest.approx(40.0, abs=ROUNDING)  # psys: the whole platform
    assert second.cpu_pct == pytest.approx(CPU_PCT_BETWEEN, abs=ROUNDING)
    assert second.mem_pct == pytest.approx(25.0, abs=ROUNDING)
    assert not any("energy" in m or m.startswith("board_power_w") for m in second.missing)
    assert clock.calls == 2  # one time stamp per read, shared by every zone


def test_rapl_counter_wrap(tmp_path):
    pc = make_pc(tmp_path, psys=False)
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(10.0, 12.0))
    pc.set_energy_uj("intel-rapl:0", RAPL_MAX_RANGE_UJ - 1_000_000)
    hal.read()
    pc.set_energy_uj("intel-rapl:0", 3_000_000)  # wrapped: 1 J to the top, 3 J after it
    reading = hal.read()
    assert reading.rails["package-0"].power_w == pytest.approx(2.0, abs=ROUNDING)  # 4 J over 2 s
    assert reading.board_power_w is None
    assert any(m.startswith("board_power_w: no RAPL psys domain") for m in reading.missing)


def test_rapl_clock_that_did_not_move(tmp_path):
    pc = make_pc(tmp_path)
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(5.0, 5.0))
    hal.read()
    reading = hal.read()
    assert "package-0" not in reading.rails
    assert any(m.startswith("package-0: no time passed between energy reads") for m in reading.missing)


def test_unreadable_energy_counter(tmp_path):
    pc = make_pc(tmp_path)
    energy = pc.rapl_dir("intel-rapl:0:0") / "energy_uj"
    energy.unlink()
    energy.mkdir()  # an OSError on read, whoever runs the test (root ignores file modes)
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(1.0, 2.0))
    hal.read()
    reading = hal.read()
    assert "package-0/core" not in reading.rails and "package-0" in reading.rails
    assert any(m.startswith("package-0/core: is a directory") for m in reading.missing)


def test_rapl_power_pure():
    assert rapl_power_w(1_000_000, 13_500_000, 0.5, None) == 25.0
    assert rapl_power_w(900, 100, 1.0, 1000) == pytest.approx(0.0002, abs=ROUNDING)
    with pytest.raises(ValueError, match="went back"):
        rapl_power_w(900, 100, 1.0, None)
    with pytest.raises(ValueError, match="no time passed"):
        rapl_power_w(0, 100, 0.0, None)


def test_describe_paths_follow_root(tmp_path):
    pc = make_pc(tmp_path)
    info = LinuxHal(root=pc.root).describe()
    assert info["paths"]["powercap"] == str(pc.root / "sys" / "class" / "powercap")
    assert info["root"] == str(pc.root)


def test_rapl_counter_reset_is_not_a_wrap(tmp_path):
    """Found in audit: a counter set back to near 0 (a resume from suspend, a driver reloaded) read as a wrap, a
    262 kW package and board power for one sample. A reset is missing for that sample, named; the next is read."""
    pc = make_pc(tmp_path)
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(10.0, 11.0, 12.0))
    pc.set_energy_uj("intel-rapl:0", 50_000_000)
    pc.set_energy_uj("intel-rapl:1", 80_000_000)
    hal.read()
    pc.set_energy_uj("intel-rapl:0", 1_000_000)  # reset low in the range: as a wrap, nearly the whole range in 1 s
    pc.set_energy_uj("intel-rapl:1", 2_000_000)
    reset = hal.read()
    assert "package-0" not in reset.rails and "psys" not in reset.rails and reset.board_power_w is None
    assert any(m.startswith("package-0: energy counter reset (50000000 -> 1000000 uJ") for m in reset.missing)
    assert any(m.startswith("board_power_w: the RAPL psys domain gave no power") for m in reset.missing)
    pc.set_energy_uj("intel-rapl:0", 21_000_000)
    pc.set_energy_uj("intel-rapl:1", 32_000_000)
    after = hal.read()
    assert after.rails["package-0"].power_w == pytest.approx(20.0, abs=ROUNDING)
    assert after.board_power_w == pytest.approx(30.0, abs=ROUNDING)


def test_rapl_reset_high_in_the_range_is_told_by_the_power_it_would_mean():
    """A reset from high in the range is under half the range as a wrap, but more power than any domain draws."""
    high_uj = RAPL_MAX_RANGE_UJ - 60_000_000_000  # 60 kJ short of the top: as a wrap, 60 kJ in a second
    with pytest.raises(ValueError, match="energy counter reset"):
        rapl_power_w(high_uj, 1_000_000, 1.0, RAPL_MAX_RANGE_UJ)
    assert rapl_power_w(RAPL_MAX_RANGE_UJ - 30_000_000, 10_000_000, 1.0, RAPL_MAX_RANGE_UJ) == pytest.approx(40.0)


def test_a_healthy_pc_misses_nothing_at_its_first_read(tmp_path):
    """Found in audit: each RAPL zone's first energy sample, and board_power_w with it, went into missing, so every
    start of a healthy PC said SENSOR_MISSING five times and SENSOR_RESTORED a tick later. A first sample is a
    note, as cpu_pct's is; a zone that fails to read is still missing."""
    pc = make_pc(tmp_path)
    (pc.root / "sys" / "class" / "hwmon" / "hwmon3" / "temp2_input").write_text("30000\n")  # every sensor good
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(1.0, 2.0))
    first = hal.read()
    assert first.missing == ()
    assert first.board_power_w is None and first.rails == {}
    assert "board_power_w: from the RAPL psys domain once it has a second energy read" in first.notes
    assert "psys: first energy sample; power needs a second read" in first.notes
    energy = pc.rapl_dir("intel-rapl:1") / "energy_uj"
    energy.unlink()
    energy.mkdir()  # psys fails to read: missing, and board power with it
    pc.write_proc_stat(PROC_STAT_2)
    second = hal.read()
    assert [m.split(":")[0] for m in second.missing] == ["psys", "board_power_w"]
    assert second.board_power_w is None and "package-0" in second.rails
