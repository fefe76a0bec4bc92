"""deploy/dump_board.py: a board's sysfs as a fixture, and the fixture loaded back.

Two kinds of test:

- round trip: a fake Orin tree (tests/fakeboard.py) dumped with ``dump_board.py --root`` and
  restored must give the Jetson HAL identical readings, power modes and board;
- recorded boards: every fixture a user added under tests/fixtures/boards/ (a directory
  with meta.json, or a .tar.gz; see deploy/README.md) is restored and read through the
  HAL, which must see the values the board showed when it was dumped (expected.json holds
  them raw, so this does not check the HAL against itself).
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from flight.hal.base import RailReading
from flight.hal.jetson import JetsonHal, detect_board, parse_tegrastats
from tests.fakeboard import BOARDS, FIXTURES, make_board

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DUMP = DEPLOY / "dump_board.py"
# The tegrastats line of an Orin Nano, FACTS.md "Jetson interfaces".
TEGRASTATS_LINE = (
    "RAM 2272/7620MB (lfb 4x4MB) SWAP 221/3810MB (cached 0MB) CPU [0%@729,0%@1036,0%@729,0%@729,0%@729,0%@729] "
    "GR3D_FREQ 0% cpu@54.937C soc2@55.562C soc0@56.156C gpu@55.468C tj@56.656C soc1@56.656C "
    "VDD_IN 4673mW/4673mW VDD_CPU_GPU_CV 527mW/527mW VDD_SOC 1339mW/1339mW"
)


def _load_dump_board():
    spec = importlib.util.spec_from_file_location("dump_board", DUMP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dump_board = _load_dump_board()


def run_dump(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DUMP), *args], capture_output=True, text=True, timeout=60)


def hal_for(root: Path, nvpmodel: Path | None) -> JetsonHal:
    return JetsonHal.open(root, nvpmodel=str(nvpmodel) if nvpmodel else "nvpmodel")


def comparable(reading, root: Path) -> dict:
    """A reading with the tree's own path taken out of the `missing` texts."""
    body = reading.as_dict()
    body["missing"] = [m.replace(str(root), "<root>") for m in body["missing"]]
    body["notes"] = [n.replace(str(root), "<root>") for n in body["notes"]]
    return body


# --- round trip through dump_board.py --------------------------------------------------------------


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_a_dumped_fake_board_reads_back_identically(tmp_path, board):
    fake = make_board(tmp_path / "board", board)
    out = tmp_path / f"{board}.tar.gz"
    proc = run_dump("--root", str(fake.root), "--nvpmodel", str(fake.nvpmodel), "--no-tegrastats", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"model {BOARDS[board].model!r}" in proc.stdout

    loaded = dump_board.restore(out, tmp_path / "restored")
    assert loaded["meta"]["model"] == BOARDS[board].model and loaded["meta"]["skipped"] == []
    original = hal_for(fake.root, fake.nvpmodel)
    restored = hal_for(loaded["root"], loaded["nvpmodel"])
    assert (restored.board, restored.model) == (original.board, original.model) == (board, BOARDS[board].model)
    for _ in range(2):  # the second read has a CPU load too
        assert comparable(restored.read(), loaded["root"]) == comparable(original.read(), fake.root)
    assert restored.power_modes() == original.power_modes()
    assert restored.current_power_mode() == original.current_power_mode()
    check_expected(loaded)


def test_a_live_board_whose_readings_move_during_the_dump_still_matches(tmp_path, monkeypatch):
    """On a real board a current changes between any two reads: the fixture's expected
    values must be the bytes it copied, not a later read of the live file."""
    fake = make_board(tmp_path / "board", "orin_nx_16gb")
    real_copy = dump_board.Dumper.copy

    def copy_then_move(self, rel):
        data = real_copy(self, rel)
        if data is not None and rel.endswith(("_input", "/temp")):
            (self.root / rel).write_text(str(int(data.decode()) + 37) + "\n")  # the sensor moves on
        return data

    monkeypatch.setattr(dump_board.Dumper, "copy", copy_then_move)
    out = tmp_path / "live"
    dump_board.dump(fake.root, out, nvpmodel=str(fake.nvpmodel), tegrastats=None)
    loaded = dump_board.restore(out, tmp_path / "restored")
    check_expected(loaded)  # expected.json agrees with the copied files the HAL reads


def test_a_broken_board_stays_broken_in_the_same_way(tmp_path):
    fake = make_board(tmp_path / "board", "orin_nano", omit_rails=("VDD_SOC",), empty_zones=("tj-thermal",))
    fake.break_zone("gpu-thermal")  # reading it fails (an I/O error on the board)
    out = tmp_path / "broken"  # a directory this time, not a tarball
    assert run_dump("--root", str(fake.root), "--nvpmodel", str(fake.nvpmodel), "--no-tegrastats",
                    "--out", str(out)).returncode == 0
    loaded = dump_board.restore(out, tmp_path / "restored")
    assert [s.split(":")[0] for s in loaded["meta"]["skipped"]] == ["sys/class/thermal/thermal_zone1/temp"]
    original = comparable(hal_for(fake.root, fake.nvpmodel).read(), fake.root)
    restored = comparable(hal_for(loaded["root"], loaded["nvpmodel"]).read(), loaded["root"])
    assert restored == original
    assert {m.split(":")[0] for m in restored["missing"]} >= {"gpu-thermal", "tj-thermal", "VDD_SOC"}


def test_tegrastats_and_nvpmodel_are_recorded(tmp_path):
    fake = make_board(tmp_path / "board", "orin_nano")
    tegrastats = tmp_path / "tegrastats"
    tegrastats.write_text(
        f"#!{sys.executable}\nimport sys, time\n"
        f"while True:\n    print({TEGRASTATS_LINE!r}, flush=True)\n    time.sleep(0.1)\n"
    )
    tegrastats.chmod(0o755)
    out = tmp_path / "nano.tar.gz"
    assert run_dump("--root", str(fake.root), "--nvpmodel", str(fake.nvpmodel), "--tegrastats", str(tegrastats),
                    "--out", str(out)).returncode == 0
    loaded = dump_board.restore(out, tmp_path / "restored")
    assert loaded["tegrastats"] == TEGRASTATS_LINE
    assert parse_tegrastats(loaded["tegrastats"]).temps_c["cpu"] == 54.937
    assert "NV Power Mode: 25W" in (loaded["fixture"] / "nvpmodel-q.txt").read_text()  # the conf's default


def test_missing_tools_are_notes_not_failures(tmp_path):
    fake = make_board(tmp_path / "board", "orin_nx_16gb")
    out = tmp_path / "nx"
    proc = run_dump("--root", str(fake.root), "--nvpmodel", str(tmp_path / "no-nvpmodel"),
                    "--tegrastats", str(tmp_path / "no-tegrastats"), "--out", str(out))
    assert proc.returncode == 0
    notes = json.loads((out / "meta.json").read_text())["notes"]
    assert len(notes) == 2 and all("No such file" in n for n in notes)
    assert dump_board.restore(out, tmp_path / "restored")["nvpmodel"] is None


def test_dump_refuses_to_overwrite_and_restore_refuses_escapes(tmp_path):
    fake = make_board(tmp_path / "board", "orin_nx_16gb")
    out = tmp_path / "exists"
    out.mkdir()
    proc = run_dump("--root", str(fake.root), "--no-nvpmodel", "--no-tegrastats", "--out", str(out))
    assert proc.returncode == 2 and "exists" in proc.stderr
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="only relative files"):
        dump_board.restore(evil, tmp_path / "r")
    assert not (tmp_path / "outside").exists()


# --- recorded boards ---------------------------------------------------------------------------------


def check_expected(loaded: dict) -> None:
    """The HAL on the restored tree reads what the board showed (expected.json, raw values)."""
    expected = loaded["expected"]
    hal = hal_for(loaded["root"], loaded["nvpmodel"])
    reading = hal.read()
    for zone in expected["thermal_zones"].values():
        try:
            temp_c = int(zone["temp"]) / 1000.0
        except (TypeError, ValueError):
            continue  # read empty or failed on the board: the HAL must call it missing
        if zone["type"] in reading.temps_c:
            assert reading.temps_c[zone["type"]] == temp_c, zone
        else:  # a second zone of the same type gets a "#2" key
            assert temp_c in reading.temps_c.values(), zone
    for channel, rail in expected["ina3221"].items():
        if not rail["label"] or rail["label"].upper() == "NC":
            continue
        try:
            want = RailReading.from_mv_ma(int(rail["voltage_mv"]), int(rail["current_ma"]))
        except (TypeError, ValueError):
            continue
        assert reading.rails[rail["label"]] == want, channel
    model = loaded["meta"]["model"]
    if model and detect_board(model):
        assert hal.profile is not None and hal.profile.id == detect_board(model)
    if loaded["nvpmodel"] is not None:
        current = hal.current_power_mode()
        assert current is not None and current in hal.power_modes()
    if loaded["tegrastats"]:
        parse_tegrastats(loaded["tegrastats"])  # must not raise; fields it skips are reported, not fatal


def recorded_fixtures() -> list:
    found = sorted([*(p for p in FIXTURES.iterdir() if p.is_dir() and (p / "meta.json").exists()),
                    *FIXTURES.glob("*.tar.gz"), *FIXTURES.glob("*.tgz")])
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="no recorded board in tests/fixtures/boards/ yet: run deploy/dump_board.py on one (deploy/README.md)"))]
    return [pytest.param(p, id=p.name) for p in found]


@pytest.mark.parametrize("fixture", recorded_fixtures())
def test_a_recorded_board_reads_as_it_did(tmp_path, fixture):
    loaded = dump_board.restore(fixture, tmp_path / "restored")
    assert loaded["meta"]["format"] == dump_board.FORMAT
    check_expected(loaded)
