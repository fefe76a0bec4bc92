"""Board profiles: the shipped ones load and agree with the real layouts; broken ones say
which key is wrong."""

from __future__ import annotations

import copy
import sys
from importlib import resources

import pytest

from flight.hal.boards import (
    BoardProfileError,
    available_boards,
    load_board,
    load_board_file,
    parse_board_profile,
)
from tests.fakeboard import BOARDS

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SHIPPED = ("agx_orin_64gb", "orin_nano", "orin_nx_16gb")


def raw(board_id: str) -> dict:
    return tomllib.loads((resources.files("flight.hal.boards") / f"{board_id}.toml").read_text(encoding="utf-8"))


def test_profiles_are_package_resources():
    assert available_boards() == SHIPPED
    for board_id in SHIPPED:
        assert (resources.files("flight.hal.boards") / f"{board_id}.toml").is_file()


@pytest.mark.parametrize("board_id", SHIPPED)
def test_profile_loads_and_holds_its_invariants(board_id):
    p = load_board(board_id)
    assert p.id == board_id
    assert p.sources and all(s.strip() for s in p.sources)
    budgets = [m.budget_w for m in p.modes]
    assert budgets == sorted(budgets)
    assert max(m.inference_rel_maxn for m in p.modes) == 1.0
    assert all(m.idle_power_w <= m.loaded_power_w for m in p.modes)
    assert p.thermal.soft_temp_c < p.thermal.hard_temp_c


def test_agx_orin_limits_and_rails_from_facts():
    p = load_board("agx_orin_64gb")
    # FACTS.md "Throttling": software throttle 99.0 C (passive trip), shutdown 104.5 C (critical).
    assert (p.thermal.soft_temp_c, p.thermal.hard_temp_c) == (99.0, 104.5)
    assert p.board_power_is_sum and p.total_input_rail is None
    assert p.mode("MAXN").budget_w == 60.0  # FACTS.md: module up to 60 W for 64 GB
    assert [m.name for m in p.modes] == ["15W", "30W", "50W", "MAXN"]


@pytest.mark.parametrize("board_id", ["orin_nano", "orin_nx_16gb"])
def test_orin_nano_nx_input_rail(board_id):
    p = load_board(board_id)
    assert p.total_input_rail == "VDD_IN" and not p.board_power_is_sum
    assert p.rails == ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")


@pytest.mark.parametrize("board_id", SHIPPED)
def test_profile_matches_the_fake_board_layout(board_id):
    """The fake trees are written from FACTS.md independently of the profiles."""
    p = load_board(board_id)
    spec = BOARDS[board_id]
    wired = {(r.device, r.channel, r.label) for r in spec.rails if r.label not in ("", "NC")}
    assert {(c.device, c.channel, c.rail) for c in p.rail_channels} == wired
    assert set(p.thermal_zones) <= {zone for zone, _ in spec.zones}
    assert set(spec.mode_ids) <= {m.name for m in p.modes}


# --- broken profiles --------------------------------------------------------------------------


def broken(mutate) -> dict:
    data = copy.deepcopy(raw("orin_nano"))
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["thermal"].pop("hard_temp_c"), "bad.toml: thermal.hard_temp_c: missing"),
        (lambda d: d.pop("sources"), "bad.toml: sources: missing"),
        (lambda d: d["thermal"].update(soft_temp_c="hot"), "bad.toml: thermal.soft_temp_c: expected a number, got 'hot'"),
        (lambda d: d["modes"][1].update(budget_w="15"), "bad.toml: modes[1] (15W).budget_w: expected a number, got '15'"),
        (lambda d: d["modes"][0].update(idle_power_w=True), "modes[0] (7W).idle_power_w: expected a number, got True"),
        (lambda d: d.update(thermal_zones="tj-thermal"), "bad.toml: thermal_zones: expected a list of strings"),
        (lambda d: d["thermal"].update(soft_temp_c=100.0), "bad.toml: thermal.soft_temp_c: 100.0 C must be below hard_temp_c 97.0 C"),
        (lambda d: d["modes"][2].update(idle_power_w=30.0), "modes[2] (25W).idle_power_w: 30.0 W is above loaded_power_w 20.0 W"),
        (lambda d: d["modes"][0].update(inference_rel_maxn=1.5), "modes[0] (7W).inference_rel_maxn: must be within (0, 1]"),
        (lambda d: d["modes"][0].update(idle_power=1.0), "modes[0].idle_power: unknown key"),
        (lambda d: d["thermal"].update(shutdown_c=1.0), "thermal.shutdown_c: unknown key"),
        (lambda d: d["power"].update(total_input_rail="VDD_XX"), "power.total_input_rail: 'VDD_XX' is not one of the rails"),
        (lambda d: d["power"].update(board_power_is_sum=True), "power: give exactly one of total_input_rail"),
        (lambda d: d["power"]["ina3221"]["1-0040"].update(in4="VDD_X"), "power.ina3221.1-0040.in4: unknown key"),
        (lambda d: d["modes"][1].update(name="7W"), "modes: duplicate mode name(s) ['7W']"),
        (lambda d: d["modes"].reverse(), "modes: list them lowest budget first"),
    ],
)
def test_broken_profile_names_the_key(mutate, expected):
    with pytest.raises(BoardProfileError) as err:
        parse_board_profile(broken(mutate), "bad.toml")
    assert expected in str(err.value)


def test_broken_file_on_disk(tmp_path):
    good = (resources.files("flight.hal.boards") / "agx_orin_64gb.toml").read_text(encoding="utf-8")
    path = tmp_path / "agx_orin_64gb.toml"
    path.write_text(good.replace("hard_temp_c = 104.5", "hard_temp_c = 95.0"))
    with pytest.raises(BoardProfileError, match=r"agx_orin_64gb.toml: thermal.soft_temp_c: 99.0 C must be below hard_temp_c 95.0 C"):
        load_board_file(path)
    path.write_text(good.replace('name = "15W"', 'name = "15W'))
    with pytest.raises(BoardProfileError, match="agx_orin_64gb.toml: not valid TOML"):
        load_board_file(path)
    path.write_text(good)
    assert load_board_file(path) == load_board("agx_orin_64gb")


def test_unknown_board_lists_the_shipped_ones():
    shipped = "agx_orin_64gb, orin_nano, orin_nx_16gb"
    with pytest.raises(BoardProfileError, match=f"no board profile 'xavier_nx': shipped profiles are {shipped}"):
        load_board("xavier_nx")
