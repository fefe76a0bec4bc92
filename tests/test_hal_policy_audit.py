"""Audit of the hardware backends and the power policy: what one bad sysfs file, or a battery reading no
gauge gives, does to a reading or a decision. Fake trees from tests/fakeboard.py, as the backend tests use."""

from __future__ import annotations

import pytest

from flight.hal import BoardOptions, open_board
from flight.hal.linux import LinuxHal
from flight.hal.sysfs import read_thermal_zones
from flight.power.policy import Admission, Battery, ModePower, PowerInputs, PowerSettings, decide
from tests.fakeboard import StepClock, make_board, make_pc
from tests.test_selftest import install_store, jetson_config, write_key

NOT_TEXT = b"\xff\xfe4\n"  # what a corrupted sysfs value reads as: no UTF-8 at its first byte


@pytest.mark.req("DEP-004", "AGT-022")
def test_a_jetson_sysfs_file_that_is_not_text_costs_its_sensor_only(tmp_path):
    """Found in audit: bytes that are not UTF-8 in one zone's temp or type, or one INA3221 label, raised
    UnicodeDecodeError out of read(): the agent lost every sensor at every tick (an internal error and a fault
    each, SAFE for repeated faults)."""
    fake = make_board(tmp_path, "orin_nano")
    (fake.zone_dir("gpu-thermal") / "temp").write_bytes(NOT_TEXT)
    (fake.zone_dir("soc1-thermal") / "type").write_bytes(b"soc1-\xfftherm\n")
    (fake.hwmon_dir("1-0040") / "in2_label").write_bytes(b"VDD_\xff\n")
    hal = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel))).hal

    reading = hal.read()

    assert set(reading.temps_c) == {"cpu-thermal", "soc0-thermal", "soc2-thermal", "tj-thermal"}
    assert set(reading.rails) == {"VDD_IN", "VDD_SOC"} and reading.board_power_w is not None
    missing = "\n".join(reading.missing)
    assert "gpu-thermal: not text (byte ff at 0)" in missing
    assert "thermal_zone3: type not text (byte ff at 5)" in missing
    assert "ina3221 1-0040 in2: label not text (byte ff at 4)" in missing
    assert "soc1-thermal: no thermal zone of this type" in missing  # the profile's zone, said by its name
    assert "VDD_CPU_GPU_CV: no INA3221 channel with this label" in missing


@pytest.mark.req("AGT-022")
def test_a_pc_sysfs_name_that_is_not_text_costs_its_name_only(tmp_path):
    """The same on the linux backend: a zone's type, a hwmon chip's name or label, a RAPL zone's name that is not
    text raised out of read(); now the sensor is read under its directory's name."""
    pc = make_pc(tmp_path)
    hwmon = pc.root / "sys" / "class" / "hwmon"
    (pc.root / "sys" / "class" / "thermal" / "thermal_zone0" / "type").write_bytes(b"acpi\xff\n")
    (hwmon / "hwmon1" / "name").write_bytes(b"core\xfftemp\n")
    (hwmon / "hwmon3" / "temp1_label").write_bytes(b"Comp\xffosite\n")
    (pc.rapl_dir("intel-rapl:0") / "name").write_bytes(b"pack\xffage-0\n")
    (hwmon / "hwmon0" / "temp1_input").write_bytes(NOT_TEXT)
    pc.set_energy_uj("intel-rapl:1", 1_000_000)
    hal = LinuxHal(root=pc.root, monotonic_s=StepClock(0.0, 2.0))
    hal.read()
    pc.set_energy_uj("intel-rapl:1", 21_000_000)

    reading = hal.read()

    assert reading.temps_c["thermal_zone0"] == 27.8 and reading.temps_c["x86_pkg_temp"] == 45.0
    assert reading.temps_c["hwmon1/Package id 0"] == 45.0 and reading.temps_c["nvme/temp1"] == 38.85
    assert "intel-rapl:0" in reading.rails and reading.board_power_w == pytest.approx(10.0)  # psys: 20 J in 2 s
    assert any(m.startswith("acpitz/temp1: not text (byte ff at 0)") for m in reading.missing), reading.missing
    temps_c, missing, _off = read_thermal_zones(pc.root)
    assert set(temps_c) == {"thermal_zone0", "x86_pkg_temp"} and missing == []


@pytest.mark.req("DEP-003")
def test_selftest_names_the_sensor_whose_file_is_not_text(tmp_path):
    """Before: one "sensors" row, "reading the jetson HAL failed: 'utf-8' codec can't decode...", and no
    temperature or rail checked at all."""
    state = tmp_path / "state"
    state.mkdir()
    install_store(state)
    key = write_key(tmp_path / "keys" / "tc.keys")
    fake = make_board(tmp_path, "orin_nx_16gb")
    (fake.zone_dir("gpu-thermal") / "temp").write_bytes(NOT_TEXT)
    from flight.selftest import Status, run_selftest

    report = run_selftest(jetson_config(fake, state), key_path=key, check_link=False)

    failed = {r.name: r.detail for r in report.failures}
    assert set(failed) == {"sensor gpu-thermal"}, report.table()
    assert failed["sensor gpu-thermal"].startswith("gpu-thermal: not text (byte ff at 0)")
    assert {r.name: r.status for r in report.rows}["rails"] is Status.PASS


# --- the power rule fed a charge no gauge gives -------------------------------------------------------

MODES = (ModePower("10W", 5.0, 10.5), ModePower("15W", 5.2, 14.5), ModePower("25W", 5.5, 22.0),
         ModePower("MAXN", 6.0, 30.0))
BAT = Battery(capacity_wh=100.0, charge_efficiency=1.0, discharge_efficiency=1.0)
SET = PowerSettings(floor_pct=30, margin_pct=5, training_reserve_pct=15)


@pytest.mark.req("AGT-020")
@pytest.mark.parametrize("soc_pct", [float("nan"), float("inf"), float("-inf")])
def test_a_charge_that_is_no_number_is_unknown_lowest_mode_no_compute(soc_pct):
    """Found in audit: NaN in sunlight ran 25W with training (a charging step's min(full, NaN) read full)."""
    d = decide(PowerInputs(soc_pct, 60.0, 10.0, False, 50 * 60.0, 36 * 60.0, None), MODES, BAT, SET)
    assert (d.mode, d.admission, d.headroom_wh) == ("10W", Admission.NONE, 0.0)
    assert "battery state unknown" in d.reason


@pytest.mark.req("AGT-020")
def test_a_charge_above_full_plans_on_a_full_battery():
    """Found in audit: 150 % in a 100-min eclipse ran MAXN with training on energy no battery holds."""
    eclipse = [PowerInputs(soc, 0.0, 10.0, True, None, None, 100 * 60.0) for soc in (100.0, 150.0)]
    full, over = (decide(inputs, MODES, BAT, SET) for inputs in eclipse)
    assert (over.mode, over.admission, over.headroom_wh) == (full.mode, full.admission, full.headroom_wh)
    assert over.mode != "MAXN" and over.headroom_wh <= 65.0  # a full 100 Wh battery less floor and margin
