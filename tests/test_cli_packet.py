"""``sunlit-flight packet encode|decode``: the tool people use to debug a link."""

import json
import subprocess
import sys

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec, Verification, Stage
from flight.link.packets import pack_tm
from spacepackets.ecss.tc import PusTc


def flight(*args, check=True):
    return subprocess.run([sys.executable, "-m", "flight", *args], capture_output=True, text=True, check=check)


def test_encode_prints_a_telecommand_spacepackets_can_read():
    out = flight("packet", "encode", "PING", "token=7", "--seq", "3", "--cmd-id", "42").stdout.strip()
    tc = PusTc.unpack(bytes.fromhex(out))
    assert (tc.apid, tc.seq_count, tc.service, tc.message_subtype) == (0x010, 3, 8, 1)
    decoded = json.loads(flight("packet", "decode", out).stdout)
    assert decoded["command"] == "PING" and decoded["args"] == {"token": 7} and decoded["cmd_id"] == 42
    assert decoded["crc"] == "ok"


def test_encode_refuses_bad_arguments_clearly():
    res = flight("packet", "encode", "PING", "token=-4", check=False)
    assert res.returncode == 2 and "does not fit u32" in res.stderr
    res = flight("packet", "encode", "PONG", check=False)
    assert res.returncode == 2 and "unknown command" in res.stderr
    res = flight("packet", "encode", "PING", "token", check=False)
    assert res.returncode == 2 and "key=value" in res.stderr


def test_decode_file_gives_one_json_line_per_packet(tmp_path):
    codec = Codec(DICTIONARY)
    hk = codec.encode_hk(1, {c: 0 for c in DICTIONARY.packets[0].channels}, 1000.0)
    fail = codec.encode_verification(Verification(Stage.ACCEPTED, False, 1, 2, 2, reason="nope"), 1000.0)
    bad = bytearray(hk)
    bad[-1] ^= 1
    path = tmp_path / "capture.hex"
    path.write_text("# a capture\n" + "\n".join(p.hex() for p in (hk, fail, bytes(bad))) + "\nzz\n")
    res = flight("packet", "decode", "--file", str(path), check=False)
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.returncode == 1  # some packets were bad
    assert [line.get("kind") for line in lines[:2]] == ["housekeeping", "verification"]
    assert lines[1]["success"] is False and lines[1]["reason"] == "nope" and lines[1]["command"] == "PING"
    assert lines[2] == {**lines[2], "valid": False, "error": "crc"}
    assert lines[3]["error"] == "hex"
    assert len(lines) == 4


def test_decode_reports_data_the_dictionary_cannot_read():
    raw = pack_tm(0x10, 0, 3, 25, b"\xc1", 0.0)  # 0xc1 is never valid msgpack
    line = json.loads(flight("packet", "decode", raw.hex()).stdout)
    assert line["valid"] is True and "msgpack" in line["decode_error"]
