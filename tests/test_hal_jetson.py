"""Jetson backend against fake Orin trees laid out as the real boards are (tests/fakeboard.py).

Numbers are the ones written into the trees; float tolerances are 1e-9 W or C, i.e. only
binary rounding of values that are exact in decimal.
"""

from __future__ import annotations

import shutil

import pytest

from flight.agent.control import zone_channels
from flight.agent.control_core import report_sensors, sensor_key
from flight.clock import SimClock
from flight.hal import BoardOptions, HalError, HalReading, open_board
from flight.hal.base import PowerModesUnavailable, RailReading
from flight.hal.jetson import (
    SEARCH_MAX_S,
    JetsonHal,
    budget_from_name,
    detect_board,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
    parse_tegrastats,
)
from flight.hal.sysfs import SearchSchedule
from tests.fakeboard import BOARDS, CPU_PCT_BETWEEN, PROC_STAT_2, make_board

ROUNDING = 1e-9  # W or C: values are exact in decimal; only binary rounding is allowed

EXPECTED_TEMPS_C = {
    "orin_nano": {
        "cpu-thermal": 54.937,
        "gpu-thermal": 55.468,
        "soc0-thermal": 56.156,
        "soc1-thermal": 56.656,
        "soc2-thermal": 55.562,
        "tj-thermal": 56.656,
    },
    "orin_nx_16gb": {
        "cpu-thermal": 48.5,
        "gpu-thermal": 47.25,
        "soc0-thermal": 47.0,
        "soc1-thermal": 46.75,
        "soc2-thermal": 46.5,
        "tj-thermal": 48.5,
    },
    "agx_orin_64gb": {
        "cpu-thermal": 51.0,
        "gpu-thermal": 49.5,
        "cv0-thermal": 48.25,
        "cv1-thermal": 48.0,
        "cv2-thermal": 47.75,
        "soc0-thermal": 48.75,
        "soc1-thermal": 48.5,
        "soc2-thermal": 48.25,
        "tj-thermal": 51.0,
        "tboard_tegra": 40.0,
        "tdiode_tegra": 42.25,
    },
}

# (voltage_v, current_a, power_w) from the mV and mA written into the trees.
EXPECTED_RAILS = {
    "orin_nano": {
        "VDD_IN": (5.072, 0.921, 4.671312),
        "VDD_CPU_GPU_CV": (5.064, 0.104, 0.526656),
        "VDD_SOC": (5.056, 0.265, 1.33984),
    },
    "orin_nx_16gb": {
        "VDD_IN": (5.080, 1.450, 7.366),
        "VDD_CPU_GPU_CV": (5.072, 0.300, 1.5216),
        "VDD_SOC": (5.072, 0.340, 1.72448),
    },
    "agx_orin_64gb": {
        "VDD_GPU_SOC": (4.976, 0.640, 3.18464),
        "VDD_CPU_CV": (4.976, 0.880, 4.37888),
        "VIN_SYS_5V0": (4.968, 1.000, 4.968),
        "VDDQ_VDD2_1V8AO": (4.984, 0.219, 1.091496),
    },
}

EXPECTED_BOARD_POWER_W = {
    "orin_nano": 4.671312,  # VDD_IN
    "orin_nx_16gb": 7.366,  # VDD_IN
    "agx_orin_64gb": 3.18464 + 4.37888 + 4.968 + 1.091496,  # sum: AGX Orin has no input rail
}


def open_fake(fake) -> JetsonHal:
    hal = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel))).hal
    assert isinstance(hal, JetsonHal)
    return hal


@pytest.fixture(params=sorted(BOARDS))
def board(request, tmp_path):
    return make_board(tmp_path, request.param)


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.req("DEP-004")
def test_every_zone_is_read_in_celsius(board):
    reading = open_fake(board).read()
    assert isinstance(reading, HalReading)
    expected = EXPECTED_TEMPS_C[board.spec.board]
    assert set(reading.temps_c) == set(expected)
    for zone, temp_c in expected.items():
        assert reading.temps_c[zone] == pytest.approx(temp_c, abs=ROUNDING), zone


@pytest.mark.req("DEP-004")
def test_every_zone_the_board_has_fills_its_telemetry_channel(board):
    """Found in audit: temp_board_c was nil on an AGX Orin, whose board zone is `tboard_tegra`, not `board-thermal`."""
    channels = zone_channels(open_fake(board).read().temps_c)
    expected = EXPECTED_TEMPS_C[board.spec.board]
    filled = {channel: value for channel, value in channels.items() if value is not None}
    assert len(filled) == len(expected) - ("tdiode_tegra" in expected)  # the diode zone has no channel
    assert filled["temp_cpu_c"] == pytest.approx(expected["cpu-thermal"], abs=ROUNDING)
    if "tboard_tegra" in expected:
        assert filled["temp_board_c"] == pytest.approx(expected["tboard_tegra"], abs=ROUNDING)


@pytest.mark.req("DEP-004")
def test_every_rail_is_read_in_volts_amps_watts(board):
    reading = open_fake(board).read()
    expected = EXPECTED_RAILS[board.spec.board]
    # AGX Orin's 1-0041 has an "NC" channel and an unlabelled one: neither is a rail.
    assert set(reading.rails) == set(expected)
    for rail, (voltage_v, current_a, power_w) in expected.items():
        got = reading.rails[rail]
        assert got.voltage_v == pytest.approx(voltage_v, abs=ROUNDING), rail
        assert got.current_a == pytest.approx(current_a, abs=ROUNDING), rail
        assert got.power_w == pytest.approx(power_w, abs=ROUNDING), rail


def test_board_power_comes_from_the_input_rail_or_the_sum(board):
    reading = open_fake(board).read()
    assert reading.board_power_w == pytest.approx(EXPECTED_BOARD_POWER_W[board.spec.board], abs=ROUNDING)
    summed = any("sum of" in note for note in reading.notes)
    assert summed == (board.spec.board == "agx_orin_64gb")


def test_a_clean_board_misses_nothing_and_notes_the_first_cpu_sample(board):
    """Found in audit: the first /proc/stat sample went into missing, and every boot of a healthy board said
    SENSOR_MISSING for cpu_pct (and SENSOR_RESTORED a minute later): it is a note."""
    reading = open_fake(board).read()
    assert reading.missing == ()
    assert "cpu_pct: first /proc/stat sample; load needs a second read" in reading.notes
    assert reading.cpu_pct is None
    assert reading.mem_pct == pytest.approx(25.0, abs=ROUNDING)


def test_cpu_load_from_two_proc_stat_samples(tmp_path):
    fake = make_board(tmp_path, "orin_nano")
    hal = open_fake(fake)
    assert hal.read().cpu_pct is None
    fake.write_proc_stat(PROC_STAT_2)
    second = hal.read()
    assert second.cpu_pct == pytest.approx(CPU_PCT_BETWEEN, abs=ROUNDING)
    assert not any(m.startswith("cpu_pct") for m in second.missing)
    # No tick between the second and third read: no load figure, and it says why.
    third = hal.read()
    assert third.cpu_pct is None
    assert any(m.startswith("cpu_pct: no CPU ticks passed") for m in third.missing)


def test_hwmon_number_is_globbed(tmp_path):
    fake = make_board(tmp_path, "orin_nx_16gb", hwmon_index={"1-0040": 17})
    assert fake.hwmon_dir("1-0040").name == "hwmon17"
    hal = open_fake(fake)
    reading = hal.read()
    assert reading.rails["VDD_IN"].power_w == pytest.approx(7.366, abs=ROUNDING)
    assert hal.describe()["paths"]["ina3221"]["1-0040"].endswith("hwmon17")


# --- degrading cleanly ------------------------------------------------------------------------


def test_empty_tj_zone_goes_into_missing(tmp_path):
    fake = make_board(tmp_path, "orin_nano", empty_zones=("tj-thermal",))
    reading = open_fake(fake).read()
    assert "tj-thermal" not in reading.temps_c
    tj = [m for m in reading.missing if m.startswith("tj-thermal:")]
    assert len(tj) == 1 and "read empty" in tj[0] and str(fake.zone_dir("tj-thermal") / "temp") in tj[0]
    assert reading.temps_c["cpu-thermal"] == pytest.approx(54.937, abs=ROUNDING)


# The zone types L4T 35 (JetPack 5) writes for the zones L4T 36 (JetPack 6) names as the fake trees do.
L4T35_ZONE_TYPES = {
    "cpu-thermal": "CPU-therm", "gpu-thermal": "GPU-therm", "cv0-thermal": "CV0-therm", "cv1-thermal": "CV1-therm",
    "cv2-thermal": "CV2-therm", "soc0-thermal": "SOC0-therm", "soc1-thermal": "SOC1-therm",
    "soc2-thermal": "SOC2-therm", "tj-thermal": "tj-therm", "tboard_tegra": "Tboard_tegra",
    "tdiode_tegra": "Tdiode_tegra",
}


@pytest.mark.req("DEP-004")
def test_a_jetpack5_board_reads_its_zones_under_the_names_the_profile_uses(board):
    """Found in audit: on L4T 35 the zones are `CPU-therm`, `tj-therm`, `Tboard_tegra`...; every zone the profile
    names was missing for good (sensors_missing 6 on a healthy Orin Nano, temp_cpu_c nil) and each was read
    under a name nothing else knows."""
    for zone_type, _ in board.spec.zones:
        (board.zone_dir(zone_type) / "type").write_text(L4T35_ZONE_TYPES[zone_type] + "\n")
    reading = open_fake(board).read()
    assert reading.missing == ()
    expected = EXPECTED_TEMPS_C[board.spec.board]
    assert set(reading.temps_c) == set(expected)
    for zone, temp_c in expected.items():
        assert reading.temps_c[zone] == pytest.approx(temp_c, abs=ROUNDING), zone


@pytest.mark.req("DEP-004")
def test_zone_that_errors_goes_into_missing(tmp_path):
    fake = make_board(tmp_path, "agx_orin_64gb")
    fake.break_zone("gpu-thermal")
    fake.set_zone_text("cv0-thermal", "-255000\n")  # implausible, and not what a powered-off zone reads
    reading = open_fake(fake).read()
    assert "gpu-thermal" not in reading.temps_c and "cv0-thermal" not in reading.temps_c
    assert any(m.startswith("gpu-thermal: is a directory") for m in reading.missing)
    assert any(m.startswith("cv0-thermal: -255.0 C is outside") for m in reading.missing)
    assert len(reading.temps_c) == len(EXPECTED_TEMPS_C["agx_orin_64gb"]) - 2


@pytest.mark.req("DEP-004", "AGT-022")
def test_a_powered_off_zone_is_a_note_said_once_not_a_missing_sensor(tmp_path):
    """Found in audit: the CV zones of an idle AGX Orin read -256 C, their domains powered off, and each was a
    missing sensor on a healthy board (sensors_missing, SENSOR_MISSING) for as long as it idled."""
    cv = ("cv0-thermal", "cv1-thermal", "cv2-thermal")
    fake = make_board(tmp_path, "agx_orin_64gb", off_zones=cv)
    hal = open_fake(fake)
    first = hal.read()
    assert first.missing == () and not set(cv) & set(first.temps_c)
    assert len(first.temps_c) == len(EXPECTED_TEMPS_C["agx_orin_64gb"]) - 3
    said_off = [n for n in first.notes if "powered off" in n]
    assert [n.split(": ", 1)[0] for n in said_off] == list(cv)
    assert "reads -256 C" in said_off[0]
    # The agent follows sensors by what is missing: none, so nothing to say.
    assert report_sensors(first.missing, (), 0.0, 60.0) == ((), [])

    def zones_missing(reading):  # /proc/stat does not move between these reads: cpu_pct is missing, rightly
        return [m for m in reading.missing if not m.startswith("cpu_pct: ")]

    second = hal.read()  # still off: said once, not at every read
    assert zones_missing(second) == [] and not any("powered off" in n for n in second.notes)
    fake.set_zone_text("cv1-thermal", "48000\n")  # CV1 powers on: a temperature again
    third = hal.read()
    assert third.temps_c["cv1-thermal"] == pytest.approx(48.0, abs=ROUNDING) and zones_missing(third) == []
    fake.set_zone_text("cv1-thermal", "-256000\n")  # and off again: said again
    fourth = hal.read()
    assert zones_missing(fourth) == [] and [n for n in fourth.notes if "powered off" in n] == [said_off[1]]


@pytest.mark.req("DEP-004")
@pytest.mark.parametrize("kind, text", [("curr", "-921"), ("in", "-5072"), ("in", "4294967"),
                                        ("curr", "9" * 400)], ids=["negative-current", "negative-voltage",
                                                                   "absurd-voltage", "400-digits"])
def test_a_garbage_rail_value_is_no_reading_and_goes_into_missing(tmp_path, kind, text):
    """Found in audit: a negative or absurd INA3221 value was taken as a reading (-4.7 W, 3956 W of board power
    fed to the thermal model and to admission), and a 400-digit one raised OverflowError out of the whole read."""
    fake = make_board(tmp_path, "orin_nano")
    fake.set_rail_file("VDD_IN", kind, text + "\n")
    fake.set_zone_text("tj-thermal", "9" * 400 + "\n")
    reading = open_fake(fake).read()
    assert "VDD_IN" not in reading.rails and reading.board_power_w is None
    assert any(m.startswith("VDD_IN: ") for m in reading.missing)
    assert "tj-thermal" not in reading.temps_c and any("past any sensor's range" in m for m in reading.missing)
    assert reading.temps_c["cpu-thermal"] == pytest.approx(54.937, abs=ROUNDING)  # the rest still read


@pytest.mark.req("DEP-004")
def test_missing_rail_goes_into_missing(tmp_path):
    fake = make_board(tmp_path, "orin_nano", omit_rails=("VDD_SOC",))
    reading = open_fake(fake).read()
    assert set(reading.rails) == {"VDD_IN", "VDD_CPU_GPU_CV"}
    soc = [m for m in reading.missing if m.startswith("VDD_SOC:")]
    assert len(soc) == 1 and "1-0040 in3" in soc[0]
    assert reading.board_power_w == pytest.approx(4.671312, abs=ROUNDING)  # VDD_IN still there


def test_missing_input_rail_leaves_board_power_unknown(tmp_path):
    fake = make_board(tmp_path, "orin_nx_16gb")
    fake.remove_rail("VDD_IN")
    reading = open_fake(fake).read()
    assert reading.board_power_w is None
    assert any(m.startswith("board_power_w: input rail VDD_IN not read") for m in reading.missing)
    assert reading.rails["VDD_SOC"].power_w == pytest.approx(1.72448, abs=ROUNDING)


def test_agx_sum_needs_every_rail(tmp_path):
    fake = make_board(tmp_path, "agx_orin_64gb", omit_rails=("VDDQ_VDD2_1V8AO",))
    reading = open_fake(fake).read()
    assert reading.board_power_w is None
    assert any(m.startswith("board_power_w:") and "VDDQ_VDD2_1V8AO" in m for m in reading.missing)
    assert len(reading.rails) == 3


def test_unreadable_rail_value_names_the_file(tmp_path):
    fake = make_board(tmp_path, "orin_nano")
    fake.set_rail_file("VDD_CPU_GPU_CV", "curr", "garbage\n")
    fake.set_rail_file("VDD_SOC", "in", "")
    reading = open_fake(fake).read()
    assert set(reading.rails) == {"VDD_IN"}
    cv = next(m for m in reading.missing if m.startswith("VDD_CPU_GPU_CV:"))
    assert "not an integer" in cv and cv.endswith("curr2_input)")
    soc = next(m for m in reading.missing if m.startswith("VDD_SOC:"))
    assert "read empty" in soc and soc.endswith("in3_input)")


def test_empty_root_still_gives_a_reading(tmp_path):
    hal = open_board("jetson", BoardOptions(root=str(tmp_path), nvpmodel=str(tmp_path / "no-nvpmodel"))).hal
    reading = hal.read()
    assert reading.temps_c == {} and reading.rails == {} and reading.board_power_w is None
    assert reading.mem_pct is None
    for prefix in ("thermal zones:", "rails:", "board_power_w:", "cpu_pct:", "mem_pct:"):
        assert any(m.startswith(prefix) for m in reading.missing), prefix
    assert hal.describe()["board"] is None


def test_unknown_board_reads_without_a_profile(tmp_path):
    fake = make_board(tmp_path, "orin_nano", model="Some Carrier With An Orin Module")
    hal = open_fake(fake)
    assert hal.board is None
    reading = hal.read()
    assert reading.board_power_w == pytest.approx(4.671312, abs=ROUNDING)
    assert any("board unknown" in n for n in reading.notes)
    modes = hal.power_modes()
    # Without a profile nothing says what MAXN_SUPER allows: unknown budget, ordered last.
    assert modes[-1].name == "MAXN_SUPER" and modes[-1].budget_w is None and modes[-1].budget_source == "unknown"


def test_board_override_and_unknown_board(tmp_path):
    fake = make_board(tmp_path, "orin_nano", model="Custom carrier")
    hal = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel), board="orin_nano")).hal
    assert hal.board == "orin_nano"
    with pytest.raises(HalError, match="no board profile 'orin_tx9'.*agx_orin_64gb"):
        open_board("jetson", BoardOptions(root=str(fake.root), board="orin_tx9")).hal


# --- sensors that move, appear and fail under a running backend -----------------------------------


def open_clocked(fake, clock: SimClock) -> JetsonHal:
    return JetsonHal.open(fake.root, nvpmodel=str(fake.nvpmodel), clock=clock)


def sensor_events(readings: list[tuple[float, HalReading]]) -> list[tuple[str, str]]:
    """(event, sensor) the agent says over these readings, a sensor restored as soon as it reads
    (sensor_restore_s 0); cpu_pct is left out (/proc/stat does not move between these reads)."""
    down: tuple = ()
    said = []
    for mono_s, reading in readings:
        missing = tuple(m for m in reading.missing if not m.startswith("cpu_pct: "))
        down, events = report_sensors(missing, down, mono_s, 0.0)
        said += [(e.name, sensor_key(e.args["what"])) for e in events]
    return said


@pytest.mark.req("DEP-006", "AGT-022")
@pytest.mark.parametrize("model", [None, "Custom carrier"], ids=["profile", "unknown-board"])
def test_an_ina3221_bound_again_at_another_hwmon_number_is_found_there(tmp_path, model):
    """An I2C error recovery or a module reload binds the INA3221 again, and its hwmon number changes. Before:
    on a board without a profile its rails vanished from the reading without a word in `missing`, and with
    one the outage was said as `rails` besides each rail; sysfs was globbed at every read."""
    fake = make_board(tmp_path, "orin_nano", model=model)
    clock = SimClock()
    hal = open_clocked(fake, clock)
    rails = sorted(EXPECTED_RAILS["orin_nano"])
    readings: list[tuple[float, HalReading]] = []

    def tick() -> HalReading:
        reading = hal.read()
        readings.append((clock.monotonic_s(), reading))
        clock.advance(1.0)
        return reading

    assert sorted(tick().rails) == rails
    fake.unbind_ina3221("1-0040")
    while clock.monotonic_s() <= 20:
        lost = tick()
        assert lost.rails == {} and lost.board_power_w is None
        assert sorted(sensor_key(m) for m in lost.missing if m.startswith("VDD_")) == rails
    # Searched at the start, then 1, 2, 4 and 8 s after the reads kept failing (t = 2, 4, 8, 16), not at each read;
    # only the first read after the unbind read the old paths (3 rails), later ones know the rails are not found.
    assert (hal.searches, hal.describe()["search"]["read_failures"]) == (5, 3)
    fake.bind_ina3221("1-0040", 7)
    while clock.monotonic_s() < 32:  # the next search is 16 s after the last: until then still missing, not stale
        assert tick().rails == {}
    back = tick()
    for rail, (voltage_v, current_a, power_w) in EXPECTED_RAILS["orin_nano"].items():
        assert back.rails[rail] == RailReading(voltage_v, current_a, power_w)
    assert back.board_power_w == pytest.approx(4.671312, abs=ROUNDING)
    assert hal.describe()["paths"]["ina3221"]["1-0040"].endswith("hwmon7")
    lost_and_found = sorted([*rails, "board_power_w"])
    assert sensor_events(readings) == ([("SENSOR_MISSING", key) for key in lost_and_found]
                                       + [("SENSOR_RESTORED", key) for key in lost_and_found])


@pytest.mark.req("DEP-006", "AGT-022")
@pytest.mark.parametrize("model", [None, "Custom carrier"], ids=["profile", "unknown-board"])
def test_a_zone_that_probes_late_is_read_from_the_next_search(tmp_path, model):
    """A zone the profile names is searched for with the backoff; on a board without a profile, whose zones
    nobody lists, a new one is seen at the search every SEARCH_MAX_S."""
    fake = make_board(tmp_path, "orin_nano", model=model)
    shutil.rmtree(fake.zone_dir("tj-thermal"))  # its driver has not probed yet
    clock = SimClock()
    hal = open_clocked(fake, clock)
    readings = [(0.0, hal.read())]
    assert "tj-thermal" not in readings[0][1].temps_c
    tj_said = [m for m in readings[0][1].missing if sensor_key(m) == "tj-thermal"]
    assert tj_said == (["tj-thermal: no thermal zone of this type (the orin_nano profile expects one)"] if model is None
                       else [])
    clock.advance(0.5)
    fake.add_zone("tj-thermal", 57_250)
    found_at_s = 1.0 if model is None else SEARCH_MAX_S
    readings.append((0.5, hal.read()))
    clock.set(found_at_s - 0.5)
    readings.append((found_at_s - 0.5, hal.read()))
    assert all("tj-thermal" not in r.temps_c for _, r in readings) and hal.searches == 1
    clock.set(found_at_s)
    readings.append((found_at_s, hal.read()))
    assert readings[-1][1].temps_c["tj-thermal"] == pytest.approx(57.25, abs=ROUNDING) and hal.searches == 2
    assert sensor_events(readings) == ([("SENSOR_MISSING", "tj-thermal"), ("SENSOR_RESTORED", "tj-thermal")]
                                       if model is None else [])


@pytest.mark.req("DEP-006", "DEP-004")
def test_a_read_that_fails_is_missing_for_that_sample_counted_and_read_again(tmp_path):
    """EIO from a rail, a zone's temperature and a zone's type: each is missing under its own name for that sample,
    never an older value, counted, the rest read. Before: a zone whose type failed was read as `thermal_zone0`."""
    fake = make_board(tmp_path, "agx_orin_64gb")
    clock = SimClock()
    hal = open_clocked(fake, clock)
    before = hal.read()
    curr = fake.hwmon_dir("1-0041") / "curr2_input"
    gpu_temp = fake.zone_dir("gpu-thermal") / "temp"
    cpu_type = fake.zone_dir("cpu-thermal") / "type"
    for path in (curr, gpu_temp, cpu_type):
        fake.fail_reads(path)
    clock.advance(1.0)
    glitch = hal.read()
    assert set(glitch.rails) == set(before.rails) - {"VDDQ_VDD2_1V8AO"}
    assert set(glitch.temps_c) == set(before.temps_c) - {"gpu-thermal", "cpu-thermal"}
    for sensor, path in (("VDDQ_VDD2_1V8AO", curr), ("gpu-thermal", gpu_temp), ("cpu-thermal", cpu_type)):
        (said,) = [m for m in glitch.missing if sensor_key(m) == sensor]
        assert said.endswith(f"({path})"), said
    assert glitch.board_power_w is None  # the AGX Orin's sum needs every rail: no sum of three
    assert glitch.temps_c["tj-thermal"] == before.temps_c["tj-thermal"]  # the rest still read
    assert hal.describe()["search"]["read_failures"] == 3
    fake.heal(curr, "219\n")
    fake.heal(gpu_temp, "49500\n")
    fake.heal(cpu_type, "cpu-thermal\n")
    clock.advance(1.0)
    after = hal.read()
    assert (after.temps_c, after.rails, after.board_power_w) == (before.temps_c, before.rails, before.board_power_w)
    assert not [m for m in after.missing if not m.startswith("cpu_pct: ")]


@pytest.mark.req("DEP-006")
def test_a_zone_number_given_to_another_zone_is_not_read_as_the_old_one(tmp_path):
    """A zone unregistered frees its number, and a zone that probes next takes it: the old name must not read
    the new sensor."""
    fake = make_board(tmp_path, "orin_nano")
    clock = SimClock()
    hal = open_clocked(fake, clock)
    hal.read()
    zone = fake.zone_dir("gpu-thermal")
    (zone / "type").write_text("cv0-thermal\n")
    (zone / "temp").write_text("61000\n")
    clock.advance(0.5)
    moved = hal.read()
    assert "gpu-thermal" not in moved.temps_c and "cv0-thermal" not in moved.temps_c  # found by the next search
    (said,) = [m for m in moved.missing if sensor_key(m) == "gpu-thermal"]
    assert "is now a zone of type 'cv0-thermal'" in said
    clock.advance(1.0)  # SEARCH_FIRST_S after the failed read
    searched = hal.read()
    assert searched.temps_c["cv0-thermal"] == pytest.approx(61.0, abs=ROUNDING)
    assert "gpu-thermal: no thermal zone of this type" in "\n".join(searched.missing)


def test_searches_back_off_while_trouble_lasts_and_come_quickly_after_calm():
    schedule = SearchSchedule(first_s=1.0, max_s=8.0)
    assert schedule.due(0.0)
    schedule.searched(0.0)
    assert schedule.due_s == 8.0  # no trouble: the periodic search
    due = []
    for t in range(40):  # trouble at every read: searches at 1, 3, 7, 15, 23, 31, 39 (the wait capped at 8 s)
        if schedule.due(t):
            schedule.searched(t)
            due.append(t)
        schedule.sample(t, trouble={"soc2-thermal"})
    assert due == [1, 3, 7, 15, 23, 31, 39]
    schedule.searched(47.0)  # the periodic search, after calm since the trouble at 39
    schedule.sample(48.0, trouble={"soc2-thermal"})  # trouble again 9 s after the last (> max_s): the first wait again
    assert schedule.due_s == 49.0
    with pytest.raises(ValueError, match="first_s"):
        SearchSchedule(first_s=0.0, max_s=8.0)


@pytest.mark.req("DEP-006")
def test_a_sensor_newly_in_trouble_is_searched_for_soon_whatever_one_lost_for_good_made_the_backoff():
    """Found in review: the backoff was one for all sensors, so a zone lost for good (an expected one a carrier
    never shows) kept it at the cap, and a rail bound again elsewhere was found up to 64 s late."""
    schedule = SearchSchedule(first_s=1.0, max_s=8.0)
    schedule.searched(0.0)
    lost = {"soc2-thermal"}
    for t in range(40):  # the lost zone at every read: the backoff at its cap
        if schedule.due(t):
            schedule.searched(t)
        schedule.sample(t, trouble=lost)
    assert schedule.due_s == 47.0
    schedule.sample(40.0, trouble=lost | {"VDD_IN"})  # a rail newly lost: searched for a second later
    assert schedule.due_s == 41.0
    schedule.searched(41.0)
    schedule.sample(41.0, trouble=lost | {"VDD_IN"})  # still lost after that search: backing off again
    assert schedule.due_s == 43.0


@pytest.mark.req("DEP-006")
def test_a_sensor_that_flaps_beside_one_lost_for_good_does_not_undo_the_backoff():
    """Found in review: trouble was new where it had not been in the last search's window, so a rail failing every
    10 s beside a zone lost for good reset the backoff at each failure: a search every 3 s for good, not every
    64 s. A sensor is new to trouble only where it had none within max_s."""

    def searches(trouble_at) -> int:
        schedule, n = SearchSchedule(first_s=1.0, max_s=64.0), 0
        for t in range(600):
            if schedule.due(t):
                schedule.searched(t)
                n += 1
            schedule.sample(t, trouble=trouble_at(t))
        return n

    lost_alone = searches(lambda t: {"soc2-thermal"})
    with_flapping = searches(lambda t: {"soc2-thermal"} | ({"VDD_IN"} if t % 10 == 0 else set()))
    assert lost_alone <= 16 and with_flapping <= lost_alone + 1, (lost_alone, with_flapping)


# --- power modes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "board_id, mode",
    [(b, m) for b in sorted(BOARDS) for m in BOARDS[b].mode_ids],
)
def test_set_power_mode_by_name_runs_nvpmodel(tmp_path, board_id, mode):
    fake = make_board(tmp_path, board_id)
    hal = open_fake(fake)
    mode_id = fake.spec.mode_ids[mode]
    got = hal.set_power_mode(mode)
    assert (got.name, got.id) == (mode, mode_id)
    assert ["-m", str(mode_id)] in fake.nvpmodel_calls()
    assert fake.nvpmodel_status_id() == mode_id
    current = hal.current_power_mode()
    assert current is not None and (current.name, current.id) == (mode, mode_id)


def test_same_name_different_ids_across_boards(tmp_path):
    sent = {}
    for board_id in sorted(BOARDS):
        fake = make_board(tmp_path, board_id)
        open_fake(fake).set_power_mode("15W")
        sent[board_id] = [call for call in fake.nvpmodel_calls() if call[0] == "-m"]
    # FACTS.md "Jetson interfaces": IDs differ between boards, names do not.
    assert sent == {"orin_nano": [["-m", "0"]], "orin_nx_16gb": [["-m", "2"]], "agx_orin_64gb": [["-m", "1"]]}


def test_unknown_mode_name_is_a_clear_error(tmp_path):
    fake = make_board(tmp_path, "agx_orin_64gb")
    hal = open_fake(fake)
    with pytest.raises(HalError) as err:
        hal.set_power_mode("7W")  # an Orin Nano mode: not on this board
    assert "unknown power mode '7W'" in str(err.value)
    assert "15W, 30W, 50W, MAXN" in str(err.value)
    with pytest.raises(HalError, match="did you mean 'MAXN'"):
        hal.set_power_mode("maxn")
    assert not any(call[0] == "-m" for call in fake.nvpmodel_calls())


def test_power_modes_lowest_budget_first_with_conf_details(tmp_path):
    modes = open_fake(make_board(tmp_path, "orin_nano")).power_modes()
    assert [(m.name, m.id, m.budget_w, m.budget_source) for m in modes] == [
        ("7W", 3, 7.0, "name"),
        ("15W", 0, 15.0, "name"),
        ("25W", 1, 25.0, "name"),
        ("MAXN_SUPER", 2, 30.0, "profile"),  # no number in the name: the board profile's budget
    ]
    seven, fifteen, _, maxn = modes
    assert (seven.online_cpus, seven.cpu_max_freq_mhz, seven.gpu_max_freq_mhz) == (4, 960.0, 408.0)
    assert (fifteen.online_cpus, fifteen.cpu_max_freq_mhz, fifteen.gpu_max_freq_mhz) == (6, 1510.4, 624.75)
    assert (maxn.online_cpus, maxn.cpu_max_freq_mhz, maxn.gpu_max_freq_mhz) == (6, None, None)  # -1: uncapped


def test_agx_maxn_budget_from_profile(tmp_path):
    modes = open_fake(make_board(tmp_path, "agx_orin_64gb")).power_modes()
    assert [m.name for m in modes] == ["15W", "30W", "50W", "MAXN"]
    assert (modes[-1].budget_w, modes[-1].budget_source) == (60.0, "profile")
    assert [m.online_cpus for m in modes] == [4, 8, 12, 12]


def test_current_power_mode_starts_at_conf_default_or_status(tmp_path):
    assert open_fake(make_board(tmp_path / "a", "orin_nx_16gb")).current_power_mode().name == "15W"  # PM_CONFIG DEFAULT=2
    assert open_fake(make_board(tmp_path / "b", "orin_nx_16gb", mode_id=0)).current_power_mode().name == "MAXN"


def test_failed_set_is_a_clear_error(tmp_path):
    fake = make_board(tmp_path, "orin_nano", mode_id=0)
    fake.set_nvpmodel_behaviour(fail_set=True)
    hal = open_fake(fake)
    with pytest.raises(HalError) as err:
        hal.set_power_mode("7W")
    text = str(err.value)
    assert "-m 3" in text and "status 1" in text and "Permission denied" in text and "needs root" in text
    assert hal.current_power_mode().name == "15W"


def test_set_that_needs_a_reboot_is_refused_not_hung(tmp_path):
    fake = make_board(tmp_path, "orin_nano", mode_id=0)
    fake.set_nvpmodel_behaviour(reboot_ids=(2,))
    hal = open_fake(fake)
    with pytest.raises(HalError) as err:
        hal.set_power_mode("MAXN_SUPER")
    assert "reports 15W (ID 0)" in str(err.value) and "reboot" in str(err.value)
    assert fake.nvpmodel_status_id() == 0


def test_nvpmodel_missing_or_unparseable(tmp_path, monkeypatch):
    fake = make_board(tmp_path, "orin_nano")
    hal = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(tmp_path / "nowhere" / "nvpmodel"))).hal
    with pytest.raises(PowerModesUnavailable, match="nvpmodel not found"):  # one condition, not a failure a try
        hal.current_power_mode()
    assert [m.name for m in hal.power_modes()] == ["7W", "15W", "25W", "MAXN_SUPER"]  # the conf alone still works
    # Found in audit: a file this machine cannot run (no #! line: ENOEXEC) raised OSError out of the HAL.
    script = tmp_path / "nvpmodel-no-interpreter"
    script.write_bytes(b"\x7fELF\x02\x01\x01garbage")
    script.chmod(0o755)
    odd = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(script))).hal
    with pytest.raises(PowerModesUnavailable, match=r"hal\.nvpmodel\) cannot be run: Exec format error"):
        odd.set_power_mode("7W")
    # Found in review: any OSError was taken for a tool that cannot run; one of the machine's state (no file
    # descriptors left, no memory) is a failure like another, tried again.
    import subprocess

    def out_of_descriptors(*args, **kwargs):
        raise OSError(24, "Too many open files")

    with monkeypatch.context() as m, pytest.raises(HalError, match="Too many open files") as caught:
        m.setattr(subprocess, "run", out_of_descriptors)
        odd.current_power_mode()
    assert not isinstance(caught.value, PowerModesUnavailable)
    fake.set_nvpmodel_behaviour(query_garbage=True)
    with pytest.raises(HalError, match="no 'NV Power Mode:' line"):
        open_fake(fake).current_power_mode()


@pytest.mark.req("DEP-004", "AGT-008")
def test_an_nvpmodel_name_with_a_nul_byte_is_power_modes_unavailable_not_a_value_error(tmp_path):
    """Found in audit: a [hal] nvpmodel holding a NUL byte (TOML's \\u0000) raised ValueError out of every mode
    query and set, which the HAL's callers take only as HalError: an internal error each tick. It is one condition,
    said as the backend starts, naming the key."""
    fake = make_board(tmp_path, "orin_nano")
    nvpmodel = str(fake.nvpmodel) + "\x00"
    board = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=nvpmodel))
    (note,) = board.notes
    assert note.startswith(f"hal.nvpmodel: {nvpmodel!r} holds a NUL byte")
    for call in (board.hal.current_power_mode, lambda: board.hal.set_power_mode("7W")):
        with pytest.raises(PowerModesUnavailable, match=r"\(hal\.nvpmodel\) holds a NUL byte"):
            call()
    assert fake.nvpmodel_calls() == []  # nothing ran


@pytest.mark.req("DEP-004", "AGT-008")
@pytest.mark.parametrize("what", ["absent", "not-executable", "a-directory", "not-on-path"])
def test_an_nvpmodel_that_cannot_run_is_said_as_the_backend_starts(tmp_path, what):
    """Found in audit: a [hal] nvpmodel that is not there or not executable was found only when the first power
    mode query failed. The backend says it as it opens, naming the key and the path, and the board still opens:
    a dev board without nvpmodel reads its sensors, its power modes unavailable until nvpmodel is there."""
    fake = make_board(tmp_path, "orin_nano")
    good = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel)))
    assert good.notes == ()
    nvpmodel, why = {
        "absent": (str(tmp_path / "nowhere" / "nvpmodel"), "no such file"),
        "not-executable": (str(fake.nvpmodel), "not executable"),
        "a-directory": (str(fake.root / "usr" / "sbin"), "not a file"),
        "not-on-path": ("sunlit-no-such-nvpmodel", "not found on PATH"),
    }[what]
    if what == "not-executable":
        fake.nvpmodel.chmod(0o644)
    board = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=nvpmodel))
    (note,) = board.notes
    assert note.startswith(f"hal.nvpmodel: {nvpmodel!r} {why}") and "power modes can be neither read nor set" in note
    assert board.hal.read().temps_c["cpu-thermal"] == pytest.approx(54.937, abs=ROUNDING)  # the rest still works
    assert [m.name for m in board.hal.power_modes()] == ["7W", "15W", "25W", "MAXN_SUPER"]
    with pytest.raises(HalError, match=r"hal\.nvpmodel"):  # and each try says it again
        board.hal.current_power_mode()


@pytest.mark.req("AGT-008")
def test_the_agent_starts_without_nvpmodel_and_says_so(tmp_path, short_dir):
    """The agent on a Jetson without nvpmodel starts, as on a dev board, and its console says that power modes
    are unavailable, naming hal.nvpmodel and the path, before its first tick finds it."""
    from tests.console import start_lines

    fake = make_board(tmp_path, "orin_nano")
    nvpmodel = tmp_path / "nowhere" / "nvpmodel"
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[link]\nurl = "zmq+ipc://{short_dir}/link"\n[hal]\nbackend = "jetson"\nroot = "{fake.root}"\n'
                    f'nvpmodel = "{nvpmodel}"\n[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                    '[compute]\nenabled = false\n')
    said, running = start_lines(["--config", str(toml)])
    assert running and "agent up" in said, said
    assert f"sunlit-flight: warning: hal.nvpmodel: '{nvpmodel}' no such file: power modes can be neither read nor " \
           "set" in said, said

@pytest.mark.req("AGT-008")
@pytest.mark.parametrize("model", ["NVIDIA Jetson Orin Nano Developer Kit", "Custom carrier, no model we know"])
def test_sunlit_flight_run_starts_without_nvpmodel_conf_and_says_so(tmp_path, short_dir, model):
    """Found in audit: without /etc/nvpmodel.conf `sunlit-flight run` exited at once (systemd restarted it for
    ever). It runs, its console naming the conf and what to do; only where no board profile says what the modes
    cost either (an unknown board) does it refuse, saying both."""
    from tests.console import start_lines

    fake = make_board(tmp_path, "orin_nano", model=model)
    conf = fake.root / "etc" / "nvpmodel.conf"
    conf.unlink()
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[link]\nurl = "zmq+ipc://{short_dir}/link"\n[hal]\nbackend = "jetson"\nroot = "{fake.root}"\n'
                    f'nvpmodel = "{fake.nvpmodel}"\n[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                    '[compute]\nenabled = false\n')
    said, running = start_lines(["--config", str(toml)])
    if model.startswith("NVIDIA"):
        assert running and "agent up" in said, said
        assert f"sunlit-flight: warning: nvpmodel.conf: cannot read {conf}: file not found; power modes can be " \
               "neither read nor set until it is there: reinstall nvidia-l4t-nvpmodel" in said, said
    else:
        assert "agent up" not in said and f"sunlit-flight: cannot read {conf}" in said, said  # refused, saying:
        assert said.rstrip().endswith("and no board profile gives the modes' power meanwhile: set [hal] board"), said


def test_missing_conf_is_a_clear_error(tmp_path):
    fake = make_board(tmp_path, "orin_nano")
    (fake.root / "etc" / "nvpmodel.conf").unlink()
    with pytest.raises(HalError, match="cannot read .*nvpmodel.conf: file not found"):
        open_fake(fake).power_modes()


@pytest.mark.req("DEP-004", "AGT-008")
@pytest.mark.parametrize("what", ["absent", "unreadable", "no-modes", "same-name-twice", "not-text"])
def test_a_conf_that_cannot_be_used_makes_power_modes_unavailable_not_a_refusal(tmp_path, what):
    """Found in audit: a Jetson whose nvpmodel.conf was missing or unreadable (or listed no mode) raised a plain
    HalError from power_modes(), and the agent refused to start, restarted by systemd for ever. It is the
    condition PowerModesUnavailable, said as the backend opens (naming the conf and what to do), and the board
    opens; a query reads the conf before it runs nvpmodel, which fails as a tool without it."""
    fake = make_board(tmp_path, "orin_nano")
    conf = fake.root / "etc" / "nvpmodel.conf"
    if what == "absent":
        conf.unlink()
    elif what == "unreadable":
        conf.unlink()
        conf.mkdir()  # EISDIR: unreadable for root too, where the tests may run
    elif what == "no-modes":
        conf.write_text("# emptied by a failed upgrade\n")
    elif what == "same-name-twice":
        conf.write_text("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=15W >\n")
    else:
        conf.write_bytes(b"< POWER_MODEL ID=0 NAME=15W >\n\xff\xfe\n")
    board = open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel)))
    (note,) = board.notes
    assert note.startswith("nvpmodel.conf: ") and str(conf) in note, note
    for call in (board.hal.power_modes, board.hal.current_power_mode, lambda: board.hal.set_power_mode("15W")):
        with pytest.raises(PowerModesUnavailable, match=str(conf)):
            call()
    assert fake.nvpmodel_calls() == []  # nvpmodel never ran: no ID to give it
    if what in ("absent", "no-modes"):
        assert "reinstall nvidia-l4t-nvpmodel" in note
    assert board.hal.read().temps_c["cpu-thermal"] == pytest.approx(54.937, abs=ROUNDING)  # the rest still works


def _orin_nano_without_conf(tmp_path):
    """A fake Orin Nano whose nvpmodel.conf is gone: (its tree, the conf's path, a board factory on a test clock)."""
    from dataclasses import replace

    fake = make_board(tmp_path, "orin_nano")
    conf = fake.root / "etc" / "nvpmodel.conf"
    conf.unlink()

    def jetson(clock):
        return replace(open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel))),
                       clock=clock)

    return fake, conf, jetson


@pytest.mark.req("AGT-005", "AGT-008")
def test_the_agent_runs_without_nvpmodel_conf_and_takes_the_modes_once_it_is_back(tmp_path):
    """Found in audit: without /etc/nvpmodel.conf the agent refused to start (the Controller asked the board for
    its modes), so systemd restarted it for ever and the board was silent for one file. It starts, says once
    that power modes are unavailable (naming the conf), counts one fault, plans on the board profile's modes
    (compute as the limits allow) with no mode in force known and none settable, tries again, and once the
    conf is back takes the board's modes (POWER_MODES_RESTORED) and SET_POWER_MODE sets one."""
    import shutil

    from flight.link.dictionary import FailureCode
    from tests.fakeboard import FIXTURES
    from tests.inproc import InProcessAgent

    fake, conf, jetson = _orin_nano_without_conf(tmp_path)
    rig = InProcessAgent(tmp_path / "state", board=jetson, start=False, bench_supply=True)  # built: it starts
    try:
        faults, record = [], rig.agent.faults.record
        rig.agent.faults.record = lambda what: (faults.append(what), record(what))
        rig.start()
        values = rig.hk()  # running: telemetry flows
        assert values["mode"] == "SAFE" and values["power_mode"] is None  # the mode in force is not known
        (said,) = rig.events("POWER_MODES_UNAVAILABLE")  # the ground is told the file's name, not where (SEC-006)
        assert said.args["reason"].startswith("cannot read nvpmodel.conf: file not found") and \
            "reinstall nvidia-l4t-nvpmodel" in said.args["reason"], said.args
        assert rig.agent.board.notes == (f"nvpmodel.conf: cannot read {conf}: file not found; power modes can be "
                                         "neither read nor set until it is there: reinstall nvidia-l4t-nvpmodel, "
                                         "which ships it (or check [hal] root)",)  # on the console, whole
        refused = rig.send("SET_POWER_MODE", name="15W")
        assert refused.failure.code is FailureCode.EXECUTION_ERROR, refused.failure
        assert refused.failure.reason.startswith("power modes unavailable: cannot read nvpmodel.conf"), refused.failure
        assert rig.send("SET_MODE", mode="IDLE").completed and rig.send("SET_MODE", mode="COMPUTE").completed
        rig.advance(1800.0, step_s=5.0)
        values = rig.hk()
        # The profile's modes model the plan: compute admitted as the limits allow (a bench supply: all).
        assert values["mode"] == "COMPUTE" and values["admission"] == "ALL", values
        assert [m.name for m in rig.agent.controller.mode_powers] == ["7W", "15W", "25W", "MAXN_SUPER"]
        assert len(rig.events("POWER_MODES_UNAVAILABLE")) == 1 and faults == ["power modes"]
        assert not rig.events("INTERNAL_ERROR") and not rig.events("FAULTS_REPEATED")
        assert fake.nvpmodel_calls() == []  # no mode set (nor asked) without the conf's IDs

        shutil.copyfile(FIXTURES / "nvpmodel_orin_nano.conf", conf)  # mended
        rig.advance(700.0, step_s=5.0)  # within the longest wait between tries
        restored = rig.events("POWER_MODES_RESTORED")
        assert [e.args["mode"] for e in restored] == ["25W"], restored  # as the board said: the conf's default
        assert rig.agent.controller.modes_from_board
        changed = rig.events("POWER_MODE_CHANGED")  # then the plan's mode set: the top one, with a bench supply
        assert [(e.args["old"], e.args["new"]) for e in changed] == [("25W", "MAXN_SUPER")], changed
        assert rig.send("SET_POWER_MODE", name="15W").completed
        assert fake.nvpmodel_status_id() == 0 and ["-m", "0"] in fake.nvpmodel_calls()  # 15W is ID 0 here
        assert rig.hk()["power_mode"] == "15W" and len(rig.events("POWER_MODES_UNAVAILABLE")) == 1
    finally:
        rig.close()


@pytest.mark.req("AGT-008")
@pytest.mark.parametrize("hk_period_s", [1.0, 3600.0])
def test_the_modes_of_a_conf_back_replace_the_profiles_in_the_plan(tmp_path, hk_period_s):
    """The profile's modes stand in while the conf is unreadable; the conf that comes back may offer fewer (an
    older JetPack's: 7W and 15W). The plan then runs on the board's modes, not on a MAXN_SUPER nvpmodel would
    refuse at each try (POWER_MODE_FAILED, a fault each time). Taken before a tick's decision, whoever asks the
    board first (found in review: with housekeeping rare, the tick's own query took them mid-tick, and that
    tick's decision over the profile's modes was applied over the board's: a mode index past them admitted)."""

    from tests.inproc import InProcessAgent

    fake, conf, jetson = _orin_nano_without_conf(tmp_path)
    with InProcessAgent(tmp_path / "state", board=jetson, bench_supply=True,
                        parameters={"hk_period_s": hk_period_s}) as rig:
        controller, admitted = rig.agent.controller, []
        real_admit = controller._admit  # noqa: SLF001 - the port the tick admits compute through

        def admit(admission, index, n_modes, *more):
            admitted.append((index, n_modes))
            return real_admit(admission, index, n_modes, *more)

        controller._admit = admit  # noqa: SLF001
        assert rig.send("SET_MODE", mode="IDLE").completed and rig.send("SET_MODE", mode="COMPUTE").completed
        rig.advance(60.0, step_s=5.0)
        assert rig.agent.controller.decision.mode == "MAXN_SUPER"  # the profile's top mode, planned, not set
        conf.write_text("< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=3 NAME=7W >\n"
                        "CPU_ONLINE CORE_0 1\n< PM_CONFIG DEFAULT=3 >\n")
        rig.advance(700.0, step_s=5.0)
        assert [e.args["mode"] for e in rig.events("POWER_MODES_RESTORED")] == ["7W"]
        assert [m.name for m in rig.agent.controller.mode_powers] == ["7W", "15W"]
        assert not rig.events("POWER_MODE_FAILED") and fake.nvpmodel_status_id() == 0  # 15W, the top, set
        assert rig.agent.housekeeping.values()["power_mode"] == "15W"  # as the next housekeeping will say
        assert admitted and all(index is None or index < n_modes for index, n_modes in admitted), admitted


# --- pure parsers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, board",
    [
        ("NVIDIA Jetson Orin Nano Developer Kit", "orin_nano"),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "orin_nx_16gb"),
        ("Jetson AGX Orin Developer Kit", "agx_orin_64gb"),
        ("NVIDIA Jetson Orin Nano Developer Kit\x00", "orin_nano"),  # as /proc/device-tree/model has it
        ("NVIDIA Jetson Orin Nano Super Developer Kit", "orin_nano"),
        ("NVIDIA Jetson Nano Developer Kit", None),  # the older Maxwell Nano, not an Orin
        ("NVIDIA Jetson Xavier NX Developer Kit", None),
        ("Raspberry Pi 4 Model B Rev 1.4", None),
        ("", None),
    ],
)
def test_detect_board(model, board):
    assert detect_board(model) == board


# The FACTS.md "Jetson interfaces" line, with the CPU list it elides ("...") written out.
FACTS_TEGRASTATS = (
    "RAM 2272/7620MB (lfb 4x4MB) SWAP 221/3810MB (cached 0MB) "
    "CPU [0%@729,0%@1036,0%@1036,0%@729,0%@729,0%@729] GR3D_FREQ 0% "
    "cpu@54.937C soc2@55.562C soc0@56.156C gpu@55.468C tj@56.656C soc1@56.656C "
    "VDD_IN 4673mW/4673mW VDD_CPU_GPU_CV 527mW/527mW VDD_SOC 1339mW/1339mW"
)


def test_tegrastats_facts_line():
    s = parse_tegrastats(FACTS_TEGRASTATS)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (2272, 7620, 221, 3810)
    assert s.cpu_load_pct == (0.0,) * 6
    assert s.cpu_freq_mhz == (729, 1036, 1036, 729, 729, 729)
    assert s.gpu_load_pct == 0.0
    assert s.temps_c == {"cpu": 54.937, "soc2": 55.562, "soc0": 56.156, "gpu": 55.468, "tj": 56.656, "soc1": 56.656}
    assert s.rails_w == {"VDD_IN": 4.673, "VDD_CPU_GPU_CV": 0.527, "VDD_SOC": 1.339}
    assert s.rails_avg_w == s.rails_w
    assert s.skipped == ()
    assert s.mem_pct == pytest.approx(100.0 * 2272 / 7620, abs=ROUNDING)


def test_tegrastats_offline_cores_dead_sensors_and_unknown_fields():
    line = (
        "09-17-2026 02:10:03 RAM 5000/62800MB (lfb 120x4MB) SWAP 0/31400MB (cached 0MB) "
        "CPU [50%@2201,30%@2201,off,off] EMC_FREQ 1%@2133 GR3D_FREQ 14%@[407,407] "
        "CV0@-256C CPU@77.281C Tboard@62C WIDGET 12 "
        "VDD_GPU_SOC 3150mW/2971mW VDD_CPU_CV 14312/12415"
    )
    s = parse_tegrastats(line)
    assert s.cpu_load_pct == (50.0, 30.0, None, None)
    assert s.cpu_pct == pytest.approx(40.0, abs=ROUNDING)  # mean of the online cores
    assert s.gpu_load_pct == 14.0
    assert s.temps_c == {"CPU": 77.281, "Tboard": 62.0}
    assert s.rails_w == {"VDD_GPU_SOC": 3.150, "VDD_CPU_CV": 14.312}  # older lines have no "mW"
    assert s.rails_avg_w == {"VDD_GPU_SOC": 2.971, "VDD_CPU_CV": 12.415}
    assert s.skipped == ("CV0@-256C (sensor off)", "WIDGET", "12")


def test_nvpmodel_query_parsing():
    assert parse_nvpmodel_query("NV Power Mode: MAXN_SUPER\n2\n") == ("MAXN_SUPER", 2)
    verbose = (
        "NVPM VERB: Config file: /etc/nvpmodel.conf\n"
        "NVPM VERB: Current mode: NV Power Mode: 25W\n"
        "1\n"
        "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: REAL_VAL: 1 CONF_VAL: 1\n"
    )
    assert parse_nvpmodel_query(verbose) == ("25W", 1)
    with pytest.raises(ValueError, match="no 'NV Power Mode:' line"):
        parse_nvpmodel_query("NVPM ERROR: failed\n")


def test_nvpmodel_conf_reports_what_it_skipped_and_rejects_ambiguity():
    conf = parse_nvpmodel_conf(
        "# comment\n"
        "stray line\n"
        "< POWER_MODEL NAME=MODE_10W ID=4 >\n"  # attributes in the other order
        "CPU_ONLINE CORE_0 1\n"
        "GPU MAX_FREQ fast\n"
        "CPU_ONLINE CORE_1\n"
        "< POWER_MODEL ID=x NAME=BROKEN >\n"
        "CPU_ONLINE CORE_0 1\n"
        "< POWER_MODEL ID=5 NAME=MAXN >\n"
        "< PM_CONFIG DEFAULT=4 >\n",
        {"MAXN": 20.0},
    )
    assert [(m.name, m.id, m.budget_w, m.budget_source) for m in conf.modes] == [
        ("MODE_10W", 4, 10.0, "name"),
        ("MAXN", 5, 20.0, "profile"),
    ]
    assert conf.modes[0].online_cpus == 1 and conf.modes[0].gpu_max_freq_mhz is None
    assert conf.default_id == 4
    assert [s.split(":")[0] for s in conf.skipped] == ["line 2", "line 5", "line 6", "line 7"]
    with pytest.raises(HalError, match="defines mode '15W' twice"):
        parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=15W >\n")
    with pytest.raises(HalError, match="uses ID 0 twice"):
        parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=0 NAME=7W >\n")
    with pytest.raises(HalError, match="line 1: power mode 15W: online_cpus must be >= 1"):
        parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 0\n")


@pytest.mark.parametrize(
    "name, budget_w",
    [("15W", 15.0), ("7W", 7.0), ("MODE_15W", 15.0), ("10W_DESKTOP", 10.0), ("MAXN", None), ("MAXN_SUPER", None)],
)
def test_budget_from_name(name, budget_w):
    assert budget_from_name(name) == budget_w


def test_describe_names_board_and_paths(tmp_path):
    fake = make_board(tmp_path, "agx_orin_64gb")
    info = open_fake(fake).describe()
    assert (info["backend"], info["board"], info["model"]) == ("jetson", "agx_orin_64gb", "Jetson AGX Orin Developer Kit")
    assert set(info["paths"]["ina3221"]) == {"1-0040", "1-0041"}
    assert info["paths"]["nvpmodel_conf"] == str(fake.root / "etc" / "nvpmodel.conf")
    assert info["paths"]["nvpmodel"] == str(fake.nvpmodel)


def test_nvpmodel_conf_lists_the_sysfs_files_its_param_blocks_name():
    """What `nvpmodel -m` writes, in order and once each: the selftest and the service's
    sunlit-power-access check and grant exactly these."""
    from flight.hal.jetson import parse_nvpmodel_conf

    conf = parse_nvpmodel_conf(
        "< PARAM TYPE=FILE NAME=CPU_ONLINE >\n"
        "CORE_0 /sys/devices/system/cpu/cpu0/online  # a comment\n"
        "CORE_1 /sys/devices/system/cpu/cpu1/online\n"
        "< PARAM TYPE=CLOCK NAME=GPU >\n"
        "MAX_FREQ /sys/devices/gpu.0/devfreq/17000000.ga10b/max_freq\n"
        "FREQ_TABLE not-a-sys-path\n"
        "CORE_0 /sys/devices/system/cpu/cpu0/online\n"
        "< POWER_MODEL ID=0 NAME=15W >\n"
        "CPU_ONLINE CORE_0 1\n"
    )
    assert conf.param_paths == (
        "/sys/devices/system/cpu/cpu0/online",
        "/sys/devices/system/cpu/cpu1/online",
        "/sys/devices/gpu.0/devfreq/17000000.ga10b/max_freq",
    )
    assert [m.name for m in conf.modes] == ["15W"]
