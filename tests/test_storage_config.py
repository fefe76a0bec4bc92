"""Crash-safe files, parameters, and the configuration file's errors."""

import json

import pytest

from flight.agent.params import ParameterStore
from flight.config import ConfigError, load_config, parse_config
from flight.hal.boards import available_boards
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError
from flight.storage import CorruptFile, read_checked_json, redact_paths, write_checked_json


@pytest.mark.req("AGT-013")
def test_checked_json_round_trip_and_corruption(tmp_path):
    path = tmp_path / "x.json"
    write_checked_json(path, {"a": 1.5, "b": [1, 2]})
    assert read_checked_json(path) == {"a": 1.5, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
    env = json.loads(path.read_text())
    env["body"] = env["body"].replace("1.5", "2.5")
    path.write_text(json.dumps(env))
    with pytest.raises(CorruptFile, match="SHA-256 mismatch"):
        read_checked_json(path)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CorruptFile, match="unreadable"):
        read_checked_json(path)
    path.write_text('{"a": 1}')
    with pytest.raises(CorruptFile, match="not a Sunlit checked file"):
        read_checked_json(path)


@pytest.mark.req("SEC-006")
@pytest.mark.parametrize("text, said", [
    ("/var/lib/sunlit/state/tc_keys_state.bak: not a Sunlit checked file", "tc_keys_state.bak: not a Sunlit checked file"),
    ("state.json unreadable (/home/ubuntu/.sunlit/state.json: SHA-256 mismatch)", "state.json unreadable (state.json: SHA-256 mismatch)"),
    ("'/opt/sunlit/models/a.onnx', '/opt/sunlit/models/b.onnx'", "'a.onnx', 'b.onnx'"),
    ("zmq://127.0.0.1:5000 and ipc:///run/sunlit/link", "zmq://127.0.0.1:5000 and ipc:///run/sunlit/link"),  # links
    ("3 km/s, 1/2 done, models/a.onnx, ./x/y, ~/x/y, /dev", "3 km/s, 1/2 done, models/a.onnx, ./x/y, ~/x/y, /dev"),
])
def test_texts_for_the_ground_name_files_never_where_the_board_keeps_them(text, said):
    assert redact_paths(text) == said


@pytest.mark.req("AGT-013")
def test_parameters_layers_and_persistence(tmp_path):
    path = tmp_path / "params.json"
    store = ParameterStore(DICTIONARY, path, {"battery_floor_pct": 40.0})
    assert store["battery_floor_pct"] == 40.0 and store["hk_period_s"] == 1.0
    assert store.set("hk_period_s", "2.5") == (1.0, 2.5)
    with pytest.raises(ArgumentError, match="above maximum"):
        store.set("battery_floor_pct", 99)
    store.save()
    again = ParameterStore(DICTIONARY, path, {"hk_period_s": 7.0})
    assert again["hk_period_s"] == 2.5  # saved beats config
    path.write_text(path.read_text().replace("2.5", "3.5"))
    broken = ParameterStore(DICTIONARY, path)
    assert broken.load_error and "SHA-256" in broken.load_error
    assert broken["hk_period_s"] == 1.0 and not path.exists() and (tmp_path / "params.json.corrupt").exists()
    assert broken.in_force() == "moved aside (params.json.corrupt), defaults in force"


@pytest.mark.req("AGT-013")
def test_a_saved_file_that_fails_its_check_says_what_is_in_force_and_whether_it_was_moved(tmp_path):
    """Found in audit: boot said "moved aside (params.json.corrupt), defaults in force" where the config's
    values were in force, and where the disk had refused to move it (it is read, and refused, again)."""
    (tmp_path / "ro").mkdir()
    path = tmp_path / "ro" / "params.json"
    path.write_text("{}")  # no checksum: fails its check
    (tmp_path / "ro" / "params.json.corrupt").mkdir()
    (tmp_path / "ro" / "params.json.corrupt" / "x").write_text("")  # a folder in the way: the rename is refused
    store = ParameterStore(DICTIONARY, path, {"battery_floor_pct": 40.0})
    assert store.load_error and store["battery_floor_pct"] == 40.0 and path.exists()
    assert store.in_force() == ("not moved aside (the disk refused: it is read again at the next start), "
                                "the config's values (defaults for the rest) in force")


@pytest.mark.req("AGT-013")
def test_saved_values_this_dictionary_refuses_are_left_out_and_listed(tmp_path):
    """Found in review: a saved value out of range (one saved under a wider range), or one of a parameter
    since renamed, was dropped silently at load. Each is listed with why; the rest are kept; a pair saved
    apart that breaks its rule against the config's other half gives way to the layer under it."""
    path = tmp_path / "params.json"
    write_checked_json(path, {"hk_period_s": 2.5, "saa_drift_west_deg_per_yr": 1.5, "floor_pct_old": 30,
                              "thermal_min_dwell_s": "soon", "thermal_soft_limit_c": 92.0})
    store = ParameterStore(DICTIONARY, path, {"thermal_hard_limit_c": 90.0})
    assert store["hk_period_s"] == 2.5 and store.saved == {"hk_period_s": 2.5}
    assert store["saa_drift_west_deg_per_yr"] == 0.3 and store["thermal_soft_limit_c"] == 85.0
    assert store["thermal_hard_limit_c"] == 90.0
    why = {name: (value, reason) for name, value, reason in store.refused}
    assert set(why) == {"saa_drift_west_deg_per_yr", "floor_pct_old", "thermal_min_dwell_s", "thermal_soft_limit_c"}
    assert "above maximum" in why["saa_drift_west_deg_per_yr"][1]
    assert why["floor_pct_old"][1] == "no such parameter in this dictionary"
    assert "thermal_min_dwell_s" in why["thermal_min_dwell_s"][1]
    assert why["saa_drift_west_deg_per_yr"][0] == "1.5" and why["floor_pct_old"][0] == "30"  # as text
    assert why["thermal_soft_limit_c"] == ("92.0", "the soft thermal limit must stay below the hard one")
    assert store.save() == 1 and read_checked_json(path) == {"hk_period_s": 2.5}  # what was refused is gone
    # Both halves saved, in the wrong order: both give way to the layers under them.
    write_checked_json(path, {"thermal_soft_limit_c": 99.0, "thermal_hard_limit_c": 98.0, "x" * 5000: "y" * 5000})
    both = ParameterStore(DICTIONARY, path)
    assert (both["thermal_soft_limit_c"], both["thermal_hard_limit_c"], both.saved) == (85.0, 95.0, {})
    assert sorted((n, v) for n, v, _ in both.refused) == [("thermal_hard_limit_c", "98.0"),
                                                          ("thermal_soft_limit_c", "99.0"),
                                                          ("x" * 200, repr("y" * 5000)[:200])]  # kept short
    both.forget_refused()
    assert both.refused == []


def test_config_defaults_and_a_full_file(tmp_path):
    assert load_config(None).hal_backend == "linux"
    path = tmp_path / "agent.toml"
    path.write_text(
        '[link]\nurl = "serial:///dev/ttyTHS1?baud=921600"\n'
        '[hal]\nbackend = "sim"\nboard = "orin_nano"\n'
        '[rates]\nhk_period_s = 2\n'
        '[parameters]\nbattery_floor_pct = 35\n'
    )
    cfg = load_config(path, {"rates.control_period_s": 0.5})
    assert (cfg.link_url, cfg.hal_backend, cfg.board, cfg.hk_period_s, cfg.control_period_s) == (
        "serial:///dev/ttyTHS1?baud=921600", "sim", "orin_nano", 2.0, 0.5)
    assert cfg.parameters == {"battery_floor_pct": 35.0}


_ARRAY = "[array]\nefficiency = 0.28\npanels = [{normal = [1.0, 0.0, 0.0], area_m2 = 0.3}]\n"


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("[lnk]\nurl='x'", "[lnk] unknown section"),
        ("[link]\nadress = 'x'", "link.adress: unknown key"),
        ("[rates]\nhk_period_s = 'fast'", "rates.hk_period_s: expected int or float"),
        ("[rates]\nhk_period_s = 0", "rates.hk_period_s: 0 s is outside"),
        ("[hal]\nbackend = 'fpga'", "hal.backend: 'fpga' is not one of"),
        ("[hal]\nlockstep = 1", "hal.lockstep: expected bool"),
        ("[link]\nurl = 'udp://x:1'", "link.url: udp://x:1: unknown link scheme"),
        ("[hal]\nboard = 'nope'", "hal.board: no board profile 'nope': shipped profiles are"),
        ("[parameters]\nbattery_floor_pct = 200", "parameters.battery_floor_pct"),
        ("[parameters]\nfloor = 2", "parameters.floor: no such parameter"),
        ("[parameters]\nthermal_soft_limit_c = 100", "parameters.thermal_soft_limit_c: the soft thermal limit "
                                                     "must stay below the hard one (thermal_soft_limit_c 100, "
                                                     "thermal_hard_limit_c 95)"),
        ("[parameters]\nthermal_soft_limit_c = 80\nthermal_hard_limit_c = 80", "parameters.thermal_soft_limit_c"),
        ("[orbit]\ntle = ['1 bad', '2 bad']", "orbit.tle"),
        # An audit: TOML reads inf, and a battery of inf Wh admitted everything ("keeps nan %")
        ("[power]\nbattery_capacity_wh = inf", "power.battery_capacity_wh: inf Wh is outside 0.1..1e6 Wh"),
        ("[power]\nbattery_capacity_wh = 1e-300", "power.battery_capacity_wh"),
        ("[power]\nplatform_load_w = nan", "power.platform_load_w: nan W is outside 0..1e5 W"),
        # An audit: [array] took temp_coeff_per_c = nan (and inf, and -0.2: the datasheet's %/°C as a fraction),
        # years = 365 (days: the arrays at 3 %, every measured sample then dropped by the calibration for good)
        # and a panel of 1e300 m² (an infinite forecast, read as power to spare)
        (_ARRAY + "temp_coeff_per_c = nan", "array.temp_coeff_per_c: within +-0.02 per C, a fraction"),
        (_ARRAY + "temp_coeff_per_c = -inf", "array.temp_coeff_per_c: within +-0.02 per C"),
        (_ARRAY + "temp_coeff_per_c = -0.2", "array.temp_coeff_per_c: within +-0.02 per C, a fraction "
                                             "(-0.002 is -0.2 %/C), got -0.2"),
        (_ARRAY + "degradation_per_year = 0.01\nyears = 365", "array.years: in 0..100 (years in orbit: a count of "
                                                              "days?), got 365"),
        (_ARRAY.replace("0.3}", "1e300}"), "array.panels[0].area_m2: must be > 0 and at most 10000 m2, got 1e+300"),
        ("[parameters]\nbattery_safe_pct = 40", "parameters.battery_safe_pct: the SAFE charge (battery_safe_pct) "
                                                "must stay below the floor the plan keeps (battery_floor_pct) "
                                                "(battery_safe_pct 40, battery_floor_pct 30)"),
        ("[link\nurl=", "not valid TOML"),
        # An audit: an edit cut short ran the agent on defaults (the linux backend, no keys) as the file's choice
        ("", "empty or comments only (an edit or a copy cut short?)"),
        (" \n\t\n", "empty or comments only"),
        ("# Sunlit agent configuration for orin_nx_16gb\n# made by", "empty or comments only"),
        # An audit: an OverflowError traceback, and a ZMQError one at start
        ("[rates]\nhk_period_s = " + "9" * 30, "rates.hk_period_s: 99999999999999999999...: past any value it takes"),
        ("[hal]\nbackend = 'sim'\nsim_endpoint = '10.0.0.2:5560'", "hal.sim_endpoint: '10.0.0.2:5560' is no ZeroMQ "
                                                                   "endpoint"),
        ("[[stations]]\nname = 'x'\nlat_deg = " + "9" * 400 + "\nlon_deg = 0", "stations[0].lat_deg: 9999"),
    ],
)
@pytest.mark.req("AGT-018")
def test_config_errors_name_the_key(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert fragment in str(e.value) and str(path) in str(e.value)


@pytest.mark.req("AGT-018")
def test_the_board_is_said_as_the_backend_takes_it():
    """Found in use: the start line said "board None" on a PC."""
    said = {backend: parse_config({"hal": {"backend": backend}}).board_said for backend in ("linux", "jetson", "sim")}
    assert said == {"linux": "none (this computer's own sensors)", "jetson": "detect from the device tree",
                    "sim": "the sim backend's default"}
    assert parse_config({"hal": {"backend": "linux", "board": "orin_nano"}}).board_said == "orin_nano"
    assert parse_config({"hal": {"backend": "linux", "board": ""}}).board_said.startswith("none")  # "" is none


@pytest.mark.req("AGT-018")
def test_the_thermal_hard_limit_must_be_below_the_boards_shutdown_temperature(tmp_path):
    """Found in audit: a thermal_hard_limit_c above the board profile's hard_temp_c (where the board shuts
    itself down) was accepted, so the agent would never go SAFE before the board switched off."""
    path = tmp_path / "agent.toml"
    for limit in (110, 97):  # at it too: the agent would act on the reading the board switches off at
        path.write_text(f"[hal]\nboard = 'orin_nano'\n[parameters]\nthermal_hard_limit_c = {limit}\n")
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert str(e.value).startswith(f"{path}: parameters.thermal_hard_limit_c: {limit} C is not below the "
                                       "orin_nano profile's hard_temp_c 97 C (profile named by hal.board)")
    path.write_text("[hal]\nboard = 'orin_nano'\n[parameters]\nthermal_hard_limit_c = 96.5\n")
    assert load_config(path).parameters["thermal_hard_limit_c"] == 96.5
    # the dictionary's default is below every shipped profile's
    for board in available_boards():
        assert parse_config({"hal": {"backend": "linux", "board": board}}).board == board
    # AGX Orin shuts down at 104.5 C: 100 C is a limit it can keep
    assert parse_config({"hal": {"board": "agx_orin_64gb"}, "parameters": {"thermal_hard_limit_c": 100.0}}).board


@pytest.mark.req("AGT-018")
def test_a_detected_boards_shutdown_temperature_bounds_the_thermal_hard_limit_at_start(tmp_path):
    """The jetson backend detects its board as it starts: its profile's hard_temp_c is checked then, before
    the agent does anything (the configuration could not know it)."""
    from flight.agent.agent import Agent
    from tests.fakeboard import make_board

    fake = make_board(tmp_path, "orin_nano")  # no board named: detected from the device tree's model
    config = parse_config({"hal": {"backend": "jetson", "root": str(fake.root), "nvpmodel": str(fake.nvpmodel)},
                           "paths": {"state_dir": str(tmp_path / "state")},
                           "parameters": {"thermal_hard_limit_c": 99.0}}, "agent.toml")
    with pytest.raises(ConfigError, match=r"^agent.toml: parameters.thermal_hard_limit_c: 99 C is not below the "
                                          r"orin_nano profile's hard_temp_c 97 C \(profile chosen by the jetson "
                                          r"backend\)"):
        Agent(config)
    assert not (tmp_path / "state" / "state.json").exists()  # refused before it wrote anything

@pytest.mark.req("AGT-018")
def test_a_bad_value_in_the_file_is_the_files_even_where_a_flag_sets_the_key(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text("[rates]\nhk_period_s = 'fast'\n")
    with pytest.raises(ConfigError, match=rf"^{path}: rates.hk_period_s: expected int or float, got str 'fast'"):
        load_config(path, {"rates.hk_period_s": 2.0}, {"rates.hk_period_s": "--hk-period"})
    path.write_text("[rates]\nhk_period_s = 2\n")
    with pytest.raises(ConfigError, match=r"^--hk-period \(rates.hk_period_s\): 0.0 s is outside"):
        load_config(path, {"rates.hk_period_s": 0.0}, {"rates.hk_period_s": "--hk-period"})


def test_missing_config_file():
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config("/nonexistent/agent.toml")
    assert parse_config({}).link_url.startswith("zmq://")


def test_only_commanded_parameters_are_saved(tmp_path):
    path = tmp_path / "params.json"
    store = ParameterStore(DICTIONARY, path, {"battery_floor_pct": 40.0})
    store.set("thermal_min_dwell_s", 12)
    assert store.save() == 1
    assert read_checked_json(path) == {"thermal_min_dwell_s": 12.0}
    later = ParameterStore(DICTIONARY, path, {"battery_floor_pct": 45.0})  # config changed since
    assert later["battery_floor_pct"] == 45.0 and later["thermal_min_dwell_s"] == 12.0


@pytest.mark.req("AGT-018")
@pytest.mark.parametrize("endpoint", ["tcp://10.0.0.2", "tcp://10.0.0.2:", "tcp://harness:0", "tcp://harness:65536",
                                      "tcp://*:5560", "tcp://harness:5560/x", "ipc:///tmp/" + "s" * 103])
def test_a_sim_endpoint_a_dealer_cannot_connect_to_is_refused_naming_the_key(tmp_path, endpoint):
    """Found in audit: sim_endpoint = "tcp://10.0.0.2" (its port forgotten) passed the check and the agent's start
    ended in a ZMQError traceback from the harness link's connect; so did a wildcard host, a path after the port
    and an ipc path past a Unix socket's 107 bytes."""
    path = tmp_path / "agent.toml"
    path.write_text(f'[hal]\nbackend = "sim"\nsim_endpoint = "{endpoint}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: hal.sim_endpoint: {endpoint[:80]!r} is no ZeroMQ endpoint (tcp://HOST:PORT, " \
                           "ipc://PATH)"


@pytest.mark.req("AGT-018")
def test_the_sim_endpoints_edge_values_are_taken_and_connect(tmp_path):
    """What the check leaves alone: port 65535, an IPv6 host bracketed or not, an ipc path of exactly 107 bytes
    and inproc; each opens the harness link's real DEALER socket."""
    from flight.hal.sim import open_board

    ipc = "/tmp/" + "e" * (107 - len("/tmp/"))
    for endpoint in ("tcp://127.0.0.1:65535", "tcp://[::1]:5560", "tcp://::1:5560", f"ipc://{ipc}", "inproc://sim"):
        config = parse_config({"hal": {"backend": "sim", "sim_endpoint": endpoint}})
        board = open_board(config.board_options())
        try:
            assert [sock.closed for sock in board.stepper.pollables()] == [False]
            assert board.stepper.endpoint == endpoint
        finally:
            board.stepper.close()


@pytest.mark.req("AGT-018")
def test_the_housekeeping_period_is_held_to_the_dictionarys_range_of_hk_period_s(tmp_path):
    """Found in audit: [rates] hk_period_s (and --hk-period) took 0.01..3600 s and went into the parameter store
    as hk_period_s's start-up value unchecked, so --hk-period 0.05 flew a period SET_PARAM and [parameters] refuse
    (the dictionary's range is 0.1..3600 s). Its bounds themselves are taken."""
    spec = DICTIONARY.parameter_by_name["hk_period_s"].spec
    for period_s in (0.05, 0.0999):
        with pytest.raises(ArgumentError):
            spec.coerce(period_s, "hk_period_s")  # the dictionary refuses it ...
        with pytest.raises(ConfigError) as e:
            load_config(None, {"rates.hk_period_s": period_s}, {"rates.hk_period_s": "--hk-period"})  # ... so here
        assert str(e.value) == (f"--hk-period (rates.hk_period_s): hk_period_s={period_s} below minimum 0.1 s "
                                "(the dictionary's range of the parameter it starts)")
    for period_s in (spec.min, spec.max):
        config = parse_config({"rates": {"hk_period_s": period_s}})
        store = ParameterStore(DICTIONARY, tmp_path / "params.json", {"hk_period_s": config.hk_period_s})
        assert store["hk_period_s"] == period_s
    assert parse_config({"rates": {"control_period_s": 0.05}}).control_period_s == 0.05  # its own range, unchanged


@pytest.mark.req("AGT-018")
def test_a_configuration_that_begins_with_a_byte_order_mark_is_read(tmp_path):
    """Found in audit: a file saved with a UTF-8 byte-order mark (Notepad) was refused as "not valid TOML: Invalid
    statement (at line 1, column 1)", nothing to be seen wrong in it. The mark is no part of the TOML; a file that
    is not UTF-8 is still refused."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b"\xef\xbb\xbf[rates]\nhk_period_s = 2.0\n")
    assert load_config(path).hk_period_s == 2.0
    path.write_bytes(b"\xef\xbb\xbf# only a comment\n")
    with pytest.raises(ConfigError, match="empty or comments only"):
        load_config(path)
    path.write_bytes(b"[rates]\nhk_period_s = 2.0 # \xff\n")
    with pytest.raises(ConfigError, match="not valid TOML: 'utf-8' codec can't decode byte 0xff"):
        load_config(path)
