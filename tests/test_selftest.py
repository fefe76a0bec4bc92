"""flight/selftest.py: passes on the linux backend with a prepared state directory, fails
clearly on a fake Orin with a missing rail, and each check fails for its own reason."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.fakeboard import make_board, make_pc
from flight.compute.store import ModelStore
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR
from flight.config import parse_config
from flight.selftest import Status, add_arguments, main, run_from_args, run_selftest, tiny_model_bytes
from hil.agent_process import free_tcp_port_pair


def install_store(state_dir: Path) -> ModelStore:
    """What the compute worker (and deploy/install.sh) do on a first start."""
    store = ModelStore(state_dir / "compute" / "models")
    store.install(MODEL_NAME, "1.0", MODELS_DIR / MODEL_FILE, golden=True)
    return store


def write_key(path: Path, data: bytes | None = None, mode: int = 0o600) -> Path:
    """A telecommand key file as install.sh writes it (an active slot and a master), or ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = f"1 {os.urandom(32).hex()}\n100 {os.urandom(32).hex()} master\n".encode()
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def prepared(tmp_path):
    """A state directory with the store installed and a key: what install.sh leaves behind."""
    state = tmp_path / "state"
    state.mkdir()
    install_store(state)
    return {"state": state, "key": write_key(tmp_path / "keys" / "tc.keys")}


def config_for(state: Path, **hal) -> object:
    raw = {
        "link": {"url": f"zmq://127.0.0.1:{free_tcp_port_pair()}"},
        "hal": {"backend": "linux", **hal},
        "paths": {"state_dir": str(state)},
    }
    return parse_config(raw, "test.toml")


def rows_named(report, name):
    return [r for r in report.rows if r.name == name]


def status_of(report, name):
    (row,) = rows_named(report, name)
    return row.status


# --- the two cases the brief names --------------------------------------------------------------


@pytest.mark.req("DEP-003")
def test_passes_on_the_linux_backend_of_this_machine(prepared):
    report = run_selftest(config_for(prepared["state"]), key_path=prepared["key"])
    assert report.passed, report.table()
    assert status_of(report, "onnxruntime") is Status.PASS
    assert status_of(report, "model store") is Status.PASS
    assert status_of(report, "telecommand keys") is Status.PASS
    assert status_of(report, "link") is Status.PASS
    assert "selftest PASS" in report.table()


def test_passes_on_a_fake_pc_with_every_sensor(prepared, tmp_path):
    pc = make_pc(tmp_path)
    report = run_selftest(config_for(prepared["state"], root=str(pc.root)), key_path=prepared["key"])
    assert report.passed, report.table()
    temps = rows_named(report, "temperatures")[0]
    assert temps.status is Status.PASS and temps.data["temps_c"]["coretemp/Package id 0"] == 45.0
    assert status_of(report, "rails") is Status.PASS  # RAPL: two reads, power from the difference
    assert status_of(report, "power modes") is Status.PASS


def jetson_config(board, state: Path, **extra):
    raw = {
        "link": {"url": f"zmq://127.0.0.1:{free_tcp_port_pair()}"},
        "hal": {"backend": "jetson", "root": str(board.root), "nvpmodel": str(board.nvpmodel)},
        "paths": {"state_dir": str(state)},
        **extra,
    }
    return parse_config(raw, "orin.toml")


def cpu_only_onnxruntime(monkeypatch):
    """Make this machine's onnxruntime list no GPU provider, whatever build is installed."""
    import onnxruntime as ort

    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: [p for p in real() if p not in ("CUDAExecutionProvider", "TensorrtExecutionProvider")])


def test_a_complete_fake_orin_nx_passes(prepared, tmp_path, monkeypatch):
    cpu_only_onnxruntime(monkeypatch)
    board = make_board(tmp_path, "orin_nx_16gb")
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"])
    assert report.passed, report.table()
    assert rows_named(report, "board")[0].data["board"] == "orin_nx_16gb"
    rails = rows_named(report, "rails")[0]
    assert rails.status is Status.PASS and rails.data["rails"]["VDD_IN"]["power_w"] == pytest.approx(7.366)
    modes = rows_named(report, "power modes")[0]
    assert modes.status is Status.PASS and modes.data["current"] == "15W"  # the conf's PM_CONFIG default
    # a CPU-only onnxruntime on a Jetson is a warning, not a failure
    assert status_of(report, "cuda") is Status.WARN


@pytest.mark.req("DEP-003")
def test_fails_clearly_on_a_fake_orin_with_a_missing_rail(prepared, tmp_path, capsys):
    board = make_board(tmp_path, "orin_nx_16gb", omit_rails=("VDD_SOC",))
    config = jetson_config(board, prepared["state"])
    report = run_selftest(config, key_path=prepared["key"])
    assert not report.passed
    failed = {r.name: r for r in report.failures}
    assert set(failed) == {"sensor VDD_SOC"}, report.table()
    assert "the orin_nx_16gb profile expects it at 1-0040 in3" in failed["sensor VDD_SOC"].detail
    table = report.table()
    assert "sensor VDD_SOC" in table and "FAIL" in table and "selftest FAIL: " in table

    # The same through main(): exit status 1 and one JSON object for machines.
    toml = tmp_path / "orin.toml"
    toml.write_text(
        f'[link]\nurl = "{config.link_url}"\n[hal]\nbackend = "jetson"\nroot = "{board.root}"\n'
        f'nvpmodel = "{board.nvpmodel}"\n[paths]\nstate_dir = "{prepared["state"]}"\n'
    )
    capsys.readouterr()
    assert main(["--config", str(toml), "--json", "--key", str(prepared["key"])]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["passed"] is False and body["counts"]["FAIL"] == 1
    (row,) = [r for r in body["rows"] if r["status"] == "FAIL"]
    assert row["check"] == "sensor VDD_SOC" and row["data"]["missing"].startswith("VDD_SOC: no INA3221 channel")


def test_tj_thermal_reading_empty_is_a_warning_not_a_failure(prepared, tmp_path):
    # FACTS.md: tj-thermal may read empty on Orin Nano/NX carrier boards.
    board = make_board(tmp_path, "orin_nano", empty_zones=("tj-thermal",))
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"])
    assert report.passed, report.table()
    assert status_of(report, "sensor tj-thermal") is Status.WARN


def test_implausible_values_fail(prepared, tmp_path):
    board = make_board(tmp_path, "orin_nx_16gb")
    board.set_zone_text("gpu-thermal", "130000\n")  # 130 C: a broken sensor, not a hot board
    board.set_rail_file("VDD_SOC", "in", "0\n")  # 0 V: a dead channel
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"])
    failed = {r.name: r.detail for r in report.failures}
    assert "gpu-thermal 130.0 C" in failed["temperatures"]
    assert "VDD_SOC 0.000 V" in failed["rails"]


@pytest.mark.req("DEP-003")
@pytest.mark.parametrize("board_id, millideg, why", [
    ("agx_orin_64gb", 125000, "below 125 C: at either end a sensor saturates"),
    ("agx_orin_64gb", -40000, "above -40 and below 125 C"),
    ("agx_orin_64gb", 105000, "at or above 104.5 C, the agx_orin_64gb profile's shutdown"),
    ("orin_nano", 97000, "at or above 97 C, the orin_nano profile's shutdown"),
], ids=["125C", "-40C", "105C-agx", "97C-nano"])
def test_a_zone_stuck_at_a_saturation_value_fails(prepared, tmp_path, board_id, millideg, why):
    """Found in audit: zones stuck at the bounds (125 and -40 C, and 105 C on an AGX Orin that shuts down at
    104.5 C), the classic stuck readings, passed: the bounds were inclusive and knew no profile."""
    board = make_board(tmp_path, board_id)
    board.set_zone_text("gpu-thermal", f"{millideg}\n")
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"], check_link=False)
    failed = {r.name: r.detail for r in report.failures}
    assert f"gpu-thermal {millideg / 1000:.1f} C (" in failed["temperatures"] and why in failed["temperatures"]
    assert "cpu-thermal" not in failed["temperatures"]  # the zones within the bounds are not named

@pytest.mark.req("DEP-003", "AGT-018")
def test_a_thermal_limit_above_a_detected_boards_shutdown_fails_the_board_check(prepared, tmp_path):
    """Found in review: a board found by the backend (no hal.board) whose shutdown temperature is below the agent's
    hard limit passed selftest, and the agent then refused to start."""
    board = make_board(tmp_path, "orin_nano")
    report = run_selftest(jetson_config(board, prepared["state"], parameters={"thermal_hard_limit_c": 99.0}),
                          key_path=prepared["key"], check_link=False)
    failed = {r.name: r.detail for r in report.failures}
    assert failed["board"].startswith("parameters.thermal_hard_limit_c: 99 C is not below the orin_nano profile's "
                                      "hard_temp_c 97 C (profile chosen by the jetson backend)"), failed
    ok = run_selftest(jetson_config(board, prepared["state"], parameters={"thermal_hard_limit_c": 92.0}),
                      key_path=prepared["key"], check_link=False)
    assert "board" not in {r.name for r in ok.failures}


@pytest.mark.req("DEP-003", "DEP-004")
def test_zones_powered_off_pass_and_are_named(prepared, tmp_path, monkeypatch):
    """Found in review: an idle AGX Orin's CV zones, powered off (-256 C), were in no row: the HAL says them at the
    first read only, and selftest showed the second."""
    cpu_only_onnxruntime(monkeypatch)
    board = make_board(tmp_path, "agx_orin_64gb", off_zones=("cv0-thermal", "cv2-thermal"))
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"], check_link=False)
    temps = rows_named(report, "temperatures")[0]
    assert temps.status is Status.PASS and temps.data["zones_off"] == ["cv0-thermal", "cv2-thermal"], temps
    assert temps.detail.endswith("; powered off (no temperature): cv0-thermal, cv2-thermal"), temps.detail


def test_an_unknown_board_fails_the_board_check(prepared, tmp_path):
    board = make_board(tmp_path, "orin_nx_16gb", model="Some Carrier With A Xavier")
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"])
    assert "not a known Orin" in {r.name: r.detail for r in report.failures}["board"]


def test_nvpmodel_that_cannot_answer_fails_power_modes(prepared, tmp_path):
    board = make_board(tmp_path, "agx_orin_64gb")
    board.set_nvpmodel_behaviour(query_garbage=True)
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"])
    assert "current one is unknown" in {r.name: r.detail for r in report.failures}["power modes"]


@pytest.mark.req("DEP-003", "AGT-008")
def test_a_missing_nvpmodel_conf_fails_power_modes_naming_it_and_what_to_do(prepared, tmp_path):
    """The agent runs without nvpmodel.conf (its power modes unavailable); selftest, which checks a board before
    it flies, fails the power modes check with why and what to do, and checks the rest."""
    board = make_board(tmp_path, "orin_nano")
    conf = board.root / "etc" / "nvpmodel.conf"
    conf.unlink()
    report = run_selftest(jetson_config(board, prepared["state"]), key_path=prepared["key"])
    assert {r.name: r.detail for r in report.failures}["power modes"] == (
        f"cannot read {conf}: file not found; power modes can be neither read nor set until it is there: "
        "reinstall nvidia-l4t-nvpmodel, which ships it (or check [hal] root)")
    assert status_of(report, "temperatures") is Status.PASS


# --- each check on its own --------------------------------------------------------------------


def test_store_problems_fail(prepared):
    store = ModelStore(prepared["state"] / "compute" / "models")
    entry = store.list()[0]
    path = store.root / entry.file
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01  # one bit flipped: an SEU in the working copy
    path.write_bytes(bytes(data))
    report = run_selftest(config_for(prepared["state"]), key_path=prepared["key"], check_link=False)
    failed = {r.name: r for r in report.failures}
    assert failed["model store working"].data["problem"] == "hash_mismatch"


def test_a_missing_golden_copy_fails_unless_compute_is_off(tmp_path, prepared):
    empty_state = tmp_path / "empty"
    empty_state.mkdir()
    report = run_selftest(config_for(empty_state), key_path=prepared["key"], check_link=False)
    assert "no golden copy" in {r.name: r.detail for r in report.failures}["model store"]
    off = parse_config({"paths": {"state_dir": str(empty_state)}, "compute": {"enabled": False}}, "off.toml")
    report = run_selftest(off, key_path=prepared["key"], check_link=False)
    assert status_of(report, "model store") is Status.SKIP


@pytest.mark.parametrize(
    ("data", "mode", "why"),
    [
        (None, 0o644, "mode 0644, must be 0600"),
        (b"short", 0o600, ":1: expected"),
        (b"1 " + b"0" * 64 + b"\n", 0o600, "all zeros"),
        (b"1 " + b"1" * 64 + b" revoked\n", 0o600, "no active key"),
    ],
)
def test_bad_keys_fail(prepared, tmp_path, data, mode, why):
    key = write_key(tmp_path / "bad.key", data, mode)
    report = run_selftest(config_for(prepared["state"]), key_path=key, check_link=False)
    assert why in {r.name: r.detail for r in report.failures}["telecommand keys"]


def test_a_missing_key_or_none_configured_fails_and_no_master_warns(prepared, tmp_path):
    report = run_selftest(config_for(prepared["state"]), key_path=tmp_path / "none.key", check_link=False)
    assert "missing" in {r.name: r.detail for r in report.failures}["telecommand keys"]
    report = run_selftest(config_for(prepared["state"]), check_link=False)  # no [security] tc_keys, no --key
    assert "not authenticated" in {r.name: r.detail for r in report.failures}["telecommand keys"]
    key = write_key(tmp_path / "solo.keys", f"1 {os.urandom(32).hex()}\n".encode())
    report = run_selftest(config_for(prepared["state"]), key_path=key, check_link=False)
    assert status_of(report, "telecommand keys") is Status.WARN


def test_disk_below_the_threshold_fails(prepared):
    report = run_selftest(config_for(prepared["state"]), key_path=prepared["key"], check_link=False,
                          min_free_mb=1e12)
    assert "below 1e+12 MB" in {r.name: r.detail for r in report.failures}["disk"]


def test_a_port_held_by_something_else_fails_the_link(prepared):
    config = config_for(prepared["state"])
    port = int(config.link_url.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        report = run_selftest(config, key_path=prepared["key"], ping_timeout_s=0.5)
    detail = {r.name: r.detail for r in report.failures}["link"]
    assert "cannot bind" in detail and "nothing there answered a PUS ping" in detail


def test_a_running_agent_on_the_link_passes(prepared, start_agent, make_client, tcp_url):
    start_agent(tcp_url)
    make_client(tcp_url)  # waits until the agent is up
    config = parse_config({"link": {"url": tcp_url}, "paths": {"state_dir": str(prepared["state"])}}, "t.toml")
    report = run_selftest(config, key_path=prepared["key"], ping_timeout_s=20)  # a loaded machine
    (row,) = rows_named(report, "link")
    assert row.status is Status.PASS and "answers a PUS ping" in row.detail, row.detail


def test_an_agent_on_an_ipc_link_is_pinged_not_bound_over(prepared, start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    make_client(ipc_url)
    config = parse_config({"link": {"url": ipc_url}, "paths": {"state_dir": str(prepared["state"])}}, "t.toml")
    report = run_selftest(config, key_path=prepared["key"], ping_timeout_s=20)
    (row,) = rows_named(report, "link")
    assert row.status is Status.PASS and "answers a PUS ping" in row.detail, row.detail
    make_client(ipc_url)  # a new console still reaches the agent: its socket paths are intact


def test_ipc_link_with_stale_files_or_no_directory(prepared, short_dir):
    (short_dir / "link.cmd").write_text("")  # left behind by an agent that was killed
    config = parse_config({"link": {"url": f"zmq+ipc://{short_dir}/link"},
                           "paths": {"state_dir": str(prepared["state"])}}, "t.toml")
    (row,) = rows_named(run_selftest(config, key_path=prepared["key"]), "link")
    assert row.status is Status.PASS and "can bind ipc://" in row.detail
    config = parse_config({"link": {"url": f"zmq+ipc://{short_dir}/none/link"},
                           "paths": {"state_dir": str(prepared["state"])}}, "t.toml")
    (row,) = rows_named(run_selftest(config, key_path=prepared["key"]), "link")
    assert row.status is Status.WARN and "does not exist" in row.detail


def test_serial_link_device_opens_or_is_missing(prepared, tmp_path):
    master, slave = os.openpty()
    try:
        device = os.ttyname(slave)
        config = parse_config({"link": {"url": f"serial://{device}?baud=115200"},
                               "paths": {"state_dir": str(prepared["state"])}}, "s.toml")
        report = run_selftest(config, key_path=prepared["key"])
        (row,) = rows_named(report, "link")
        assert row.status is Status.PASS and "opens at 115200 baud" in row.detail
    finally:
        os.close(master)
        os.close(slave)
    config = parse_config({"link": {"url": f"serial://{tmp_path}/ttyNONE"},
                           "paths": {"state_dir": str(prepared["state"])}}, "s.toml")
    report = run_selftest(config, key_path=prepared["key"])
    assert "no such device" in {r.name: r.detail for r in report.failures}["link"]


def test_cuda_listed_but_not_working_fails(prepared, monkeypatch):
    """An onnxruntime that lists CUDA must run the test model on it; here it cannot."""
    import onnxruntime as ort

    real = ort.get_available_providers
    if "CUDAExecutionProvider" in real():
        pytest.skip("this onnxruntime really has CUDA: the test needs one that cannot run it")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    report = run_selftest(config_for(prepared["state"]), key_path=prepared["key"], check_link=False)
    assert "CUDA is listed but did not run the test model" in {r.name: r.detail for r in report.failures}["cuda"]


def test_the_test_model_is_valid_onnx():
    import onnx

    model = onnx.load_from_string(tiny_model_bytes())
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Relu"] and model.ir_version == 8


@pytest.mark.req("DEP-003")
def test_sim_backend_skips_the_sensor_checks(prepared):
    config = parse_config({"hal": {"backend": "sim"}, "paths": {"state_dir": str(prepared["state"])}}, "sim.toml")
    report = run_selftest(config, key_path=prepared["key"], check_link=False)
    assert status_of(report, "sensors") is Status.SKIP and report.passed, report.table()


# --- command line -----------------------------------------------------------------------------


def test_main_prints_a_table_and_exits_0(prepared, tmp_path, capsys):
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[link]\nurl = "zmq://127.0.0.1:{free_tcp_port_pair()}"\n'
                    f'[paths]\nstate_dir = "{prepared["state"]}"\n')
    assert main(["--config", str(toml), "--key", str(prepared["key"])]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"sunlit selftest: {toml}"
    assert "CHECK" in out and "RESULT" in out and "selftest PASS" in out


def test_a_bad_config_exits_2(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("[hal]\nbackend = 'vax'\n")
    assert main(["--config", str(toml)]) == 2
    assert "hal.backend" in capsys.readouterr().err
    assert main(["--config", str(toml), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["passed"] is False


def test_wiring_as_a_subcommand(prepared, tmp_path, capsys):
    """What flight/cli.py does: add_arguments on the `selftest` subparser, run_from_args as its func."""
    parser = argparse.ArgumentParser(prog="sunlit-flight")
    sub = parser.add_subparsers(dest="cmd", required=True)
    selftest = sub.add_parser("selftest", help="check the board, the install and the link")
    add_arguments(selftest)
    selftest.set_defaults(func=run_from_args)
    toml = tmp_path / "agent.toml"
    toml.write_text(f'[paths]\nstate_dir = "{prepared["state"]}"\n')
    args = parser.parse_args(["selftest", "--config", str(toml), "--no-link", "--json", "--key", str(prepared["key"])])
    assert args.func(args) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["passed"] is True
    assert [r["status"] for r in body["rows"] if r["check"] == "link"] == ["SKIP"]


def test_doctests():
    import doctest

    import flight.selftest

    assert doctest.testmod(flight.selftest).failed == 0


def test_sunlit_flight_selftest_command(prepared, tmp_path, capsys):
    """`sunlit-flight selftest` (flight/cli.py) runs the same checks and exits 0 / 1 / 2."""
    from flight.cli import main as flight_main

    board = make_board(tmp_path, "orin_nx_16gb", omit_rails=("VDD_SOC",))
    toml = tmp_path / "orin.toml"
    toml.write_text(
        f'[link]\nurl = "zmq://127.0.0.1:{free_tcp_port_pair()}"\n[hal]\nbackend = "jetson"\n'
        f'root = "{board.root}"\nnvpmodel = "{board.nvpmodel}"\n[paths]\nstate_dir = "{prepared["state"]}"\n'
    )
    assert flight_main(["selftest", "--config", str(toml), "--key", str(prepared["key"])]) == 1
    out = capsys.readouterr().out
    assert "sensor VDD_SOC" in out and "selftest FAIL: " in out

    pc = tmp_path / "pc.toml"
    pc.write_text(f'[hal]\nbackend = "linux"\n[paths]\nstate_dir = "{prepared["state"]}"\n')
    assert flight_main(["selftest", "--config", str(pc), "--key", str(prepared["key"]), "--no-link"]) == 0
    assert "selftest PASS" in capsys.readouterr().out


def test_a_config_it_cannot_read_exits_2_with_the_reason(tmp_path, capsys):
    """A directory where the file should be (or, as a user outside group sunlit, a config in
    /etc/sunlit it may not open): a message and exit status 2, no traceback."""
    (tmp_path / "agent.toml").mkdir()
    assert main(["--config", str(tmp_path / "agent.toml")]) == 2
    err = capsys.readouterr().err
    assert "agent.toml: cannot read it as uid" in err and "Traceback" not in err


@pytest.mark.req("DEP-003")
@pytest.mark.parametrize("below", [False, True])
def test_a_file_where_the_state_directory_should_be_fails_naming_it(prepared, tmp_path, below):
    """Found in audit: a file at [paths] state_dir (an executable one, as root: os.access says it is writable)
    passed with compute off, and one above it was "does not exist yet", while the agent refuses to start on
    either; a 0644 file was "not writable: run the selftest as the service user", the wrong fix."""
    squatter = tmp_path / "squatter"
    squatter.write_text("a log, not a directory")
    squatter.chmod(0o755)
    state = squatter / "state" if below else squatter
    config = parse_config({"paths": {"state_dir": str(state)}, "compute": {"enabled": False}}, "file.toml")
    report = run_selftest(config, key_path=prepared["key"], check_link=False)
    assert not report.passed
    assert {r.name: r.detail for r in report.failures}["state dir"].startswith(
        f"{squatter} is a file, not a directory: the agent cannot keep its state in {state}; move the file away")


@pytest.mark.req("DEP-003")
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_python_m_flight_selftest_says_an_unwritable_output_and_ctrl_c_in_one_line(prepared, monkeypatch, capsys):
    """Found in audit: ``python -m flight.selftest --json``, the form deploy/README.md gives machines, ended in a
    traceback on a full disk, a reader gone (``| head``) or a Ctrl-C, where ``sunlit-flight selftest`` says each
    in one line: it now runs as that command."""
    import flight.selftest

    args = ["--no-link", "--json", "--key", str(prepared["key"])]
    with open("/dev/full", "w", buffering=1) as full, monkeypatch.context() as patch:  # every line written fails,
        patch.setattr(sys, "stdout", full)  # as on a full disk
        assert main(args) == 1
    assert capsys.readouterr().err == "sunlit-flight selftest: No space left on device (writing its output)\n"

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flight.selftest, "run_selftest", interrupted)
    assert main(args) == 130
    assert capsys.readouterr().err == "sunlit-flight: interrupted\n"


def test_names_read_from_sysfs_reach_the_table_escaped(prepared, tmp_path):
    """Found in audit: a thermal zone's type and a hwmon label went into the table as read, so an escape sequence
    in one reached the terminal as one (and a newline forged a line); now escaped, one row a line, as the agent
    says what it read from files (flight/storage.py printable)."""
    pc = make_pc(tmp_path)
    (pc.root / "sys/class/thermal/thermal_zone0/type").write_text("acpi\x1b[2Jtz\nselftest PASS\n")
    (pc.root / "sys/class/hwmon/hwmon3/temp2_label").write_text("Sen\x07sor\n")  # reads empty: a row of its own
    report = run_selftest(config_for(prepared["state"], root=str(pc.root)), key_path=prepared["key"],
                          check_link=False)
    table = report.table()
    assert "\x1b" not in table and "\x07" not in table
    assert "acpi\\x1b[2Jtz\\nselftest PASS" in table and "sensor nvme/Sen\\x07sor " in table
    assert [line for line in table.splitlines() if line.startswith("selftest ")] == [table.splitlines()[-1]]
    assert len(table.splitlines()) == len(report.rows) + 5  # source, blank, header, the rows, blank, verdict
