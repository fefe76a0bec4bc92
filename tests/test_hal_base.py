"""Backend-independent HAL values and the backend registry."""

from __future__ import annotations

import json
import math

import pytest

from flight.clock import RealClock
from flight.hal import BACKENDS, Board, BoardOptions, Hal, HalError, HalReading, PowerMode, RailReading, open_board, register_backend
from flight.hal.base import PowerControl, SensorSet
from flight.hal.base import order_power_modes
from flight.hal.procfs import CpuTimes, cpu_pct_between, parse_meminfo_pct, parse_proc_stat


def reading(**changes) -> HalReading:
    fields = dict(
        temps_c={"cpu-thermal": 50.0},
        rails={"VDD_IN": RailReading.from_mv_ma(5000, 1000)},
        board_power_w=5.0,
        cpu_pct=10.0,
        mem_pct=20.0,
    )
    fields.update(changes)
    return HalReading(**fields)


def test_rail_from_mv_ma_is_exact():
    rail = RailReading.from_mv_ma(5072, 921)
    assert (rail.voltage_v, rail.current_a, rail.power_w) == (5.072, 0.921, 4.671312)


def test_reading_copies_its_dicts_and_serialises():
    temps = {"cpu-thermal": 50.0}
    r = reading(temps_c=temps, missing=["tj-thermal: read empty"])
    temps["cpu-thermal"] = 99.0
    assert r.temps_c == {"cpu-thermal": 50.0}
    assert r.missing == ("tj-thermal: read empty",)
    out = json.loads(json.dumps(r.as_dict()))
    assert out["rails"]["VDD_IN"] == {"voltage_v": 5.0, "current_a": 1.0, "power_w": 5.0}
    assert out["missing"] == ["tj-thermal: read empty"]
    with pytest.raises(AttributeError):
        r.cpu_pct = 5.0  # frozen


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"temps_c": {"tj-thermal": math.nan}}, "put an unreadable zone in `missing`"),
        ({"cpu_pct": 120.0}, "cpu_pct must be None or within 0..100"),
        ({"mem_pct": -1.0}, "mem_pct must be None or within 0..100"),
        ({"board_power_w": math.inf}, "board_power_w must be a finite number"),
        ({"rails": {"VDD_IN": 4.6}}, "rails['VDD_IN'] must be a RailReading"),
        ({"missing": ("",)}, "non-empty strings"),
    ],
)
def test_reading_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        reading(**changes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="15 W", id=0, budget_w=15.0, budget_source="name"), "non-empty word"),
        (dict(name="15W", id=-1, budget_w=15.0, budget_source="name"), "id must be a whole number"),
        (dict(name="15W", id=0, budget_w=None, budget_source="name"), "no budget_w but budget_source 'name'"),
        (dict(name="15W", id=0, budget_w=15.0, budget_source="unknown"), "budget_source is 'unknown'"),
        (dict(name="15W", id=0, budget_w=0.0, budget_source="name"), "positive number of watts"),
        (dict(name="15W", id=0, budget_w=15.0, budget_source="guess"), "budget_source must be one of"),
        (dict(name="15W", id=0, budget_w=15.0, budget_source="name", online_cpus=0), "online_cpus"),
    ],
)
def test_power_mode_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PowerMode(**kwargs)


def test_budget_source_defaults():
    assert PowerMode("15W", 0, 15.0).budget_source == "given"
    assert PowerMode("MAXN", 1, None).budget_source == "unknown"


def test_modes_without_budget_go_last():
    modes = [
        PowerMode("MAXN", 0, None),
        PowerMode("25W", 3, 25.0, "name"),
        PowerMode("10W", 1, 10.0, "name"),
    ]
    assert [m.name for m in order_power_modes(modes)] == ["10W", "25W", "MAXN"]


def test_proc_parsers():
    before = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert before == CpuTimes(busy_ticks=200, total_ticks=1000)
    after = parse_proc_stat("cpu  150 0 150 800 100 0 0 0 0 0\n")
    assert cpu_pct_between(before, after) == 100.0 * 100 / 200
    assert cpu_pct_between(after, after) is None
    assert parse_meminfo_pct("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n") == 75.0
    # Before Linux 3.14 there is no MemAvailable: free + buffers + cached stands in.
    assert parse_meminfo_pct("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n") == 60.0
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        parse_proc_stat("intr 1 2 3\n")


class _DummyHal(Hal):
    backend = "dummy"

    def __init__(self, **options):
        self.options = options
        self.closed = False

    def read(self):
        return reading()

    def power_modes(self):
        return (PowerMode("ONLY", 0, 1.0, "software"),)

    def current_power_mode(self):
        return None

    def set_power_mode(self, name):
        return self.power_mode(name)

    def describe(self):
        return {"backend": self.backend}

    def close(self):
        self.closed = True


def _dummy_board(options: BoardOptions) -> Board:
    return Board("dummy", _DummyHal(board=options.board), RealClock(), SensorSet.DISCOVERED, PowerControl.SOFTWARE)


def test_registry_opens_registered_backends():
    assert {"jetson", "linux", "sim"} <= set(BACKENDS)
    with pytest.raises(HalError, match="unknown HAL backend 'no-such-board': choose one of") as err:
        open_board("no-such-board")
    assert "jetson" in str(err.value) and "linux" in str(err.value)
    register_backend("dummy-test", _dummy_board)
    try:
        with pytest.raises(HalError, match="already registered"):
            register_backend("dummy-test", _dummy_board)
        board = open_board("dummy-test", BoardOptions(board="x3"))
        with board.hal as hal:
            assert isinstance(hal, _DummyHal) and hal.options == {"board": "x3"}
            assert board.eps is None and board.stepper is None  # abilities are explicit, not probed
            with pytest.raises(HalError, match="this board offers ONLY"):
                hal.set_power_mode("MAX")
        assert hal.closed
        register_backend("dummy-test", "tests.test_hal_base:_dummy_board", replace=True)
        assert isinstance(open_board("dummy-test").hal, _DummyHal)
    finally:
        BACKENDS.pop("dummy-test", None)


def test_factory_must_return_a_board():
    register_backend("not-a-hal", lambda options: object())
    try:
        with pytest.raises(HalError, match="returned object, not a Board"):
            open_board("not-a-hal")
    finally:
        BACKENDS.pop("not-a-hal", None)


@pytest.mark.parametrize("module_name", ["flight.hal.jetson", "flight.hal.linux"])
def test_docstring_examples(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name))
    assert result.attempted > 0 and result.failed == 0
