"""``sunlit-flight packet encode|decode``: the tool people use to debug a link."""

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from spacepackets.ecss.tc import PusTc

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec, Stage, Verification
from flight.link.packets import pack_tm

ROOT = Path(__file__).resolve().parent.parent


def flight(*args, check=True):
    return subprocess.run([sys.executable, "-m", "flight", *args], capture_output=True, text=True, check=check,
                          cwd=ROOT)


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
    # Once: a source id wrapped to 16 bits, a cmd_id the agent refuses, a traceback (an audit).
    for flag, value in (("--source-id", "99999"), ("--cmd-id", "-5"), ("--cmd-id", "99999999999999999999999")):
        res = flight("packet", "encode", "PING", "token=1", flag, value, check=False)
        assert res.returncode == 2 and f"{flag} {value}: give a whole number from" in res.stderr, res.stderr


def test_decode_file_gives_one_json_line_per_packet(tmp_path):
    codec = Codec(DICTIONARY)
    hk = codec.encode_hk(1, dict.fromkeys(DICTIONARY.packets[0].channels), 1000.0)  # nil: not available now
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


@pytest.mark.req("LNK-008")
def test_decode_reports_an_infinite_counter_and_goes_on():
    # A valid CRC around a verification report whose cmd_id is a float infinity: this ended in
    # an OverflowError traceback. Now it is one line saying why, and the next packet is read.
    inf = pack_tm(0x10, 0, 1, 7, msgpack.packb({"req": 1, "cmd_id": math.inf, "op": 2}), 0.0)
    pong = Codec(DICTIONARY).encode_pong(0.0)
    res = flight("packet", "decode", inf.hex(), pong.hex(), "c0ffee", check=False)
    assert "Traceback" not in res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0]["valid"] is True and "cmd_id: inf is not an integer" in lines[0]["decode_error"]
    assert lines[1]["kind"] == "pong" and lines[2] == {**lines[2], "valid": False, "error": "short"}
    assert res.returncode == 1  # the short packet is bad; data the dictionary cannot read is not


def test_decode_of_a_file_that_cannot_be_read_says_so(tmp_path):
    res = flight("packet", "decode", "--file", str(tmp_path / "missing.hex"), check=False)
    assert res.returncode == 2 and "missing.hex: No such file" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.req("LNK-008")
def test_output_into_head_ends_quietly():
    # The pipe closes after the first line while the JSON (about 40 kB) is still being written.
    command = f"{shlex.quote(sys.executable)} -m flight dictionary --json | head -n 1"
    res = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT, check=True)
    assert res.stdout == "{\n"
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr


@pytest.mark.req("LNK-008")
@pytest.mark.parametrize("args", [("dictionary", "--json"), ("dictionary", "--markdown"), ("dictionary", "--compact"),
                                  ("packet", "encode", "NOOP"), ("packet", "decode", "00"), ("--help",)],
                         ids=" ".join)
def test_every_writer_survives_a_pipe_closed_before_it_writes(args):
    # A pipe whose reader is already gone: each write fails at once (EPIPE), whatever the timing.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run([sys.executable, "-m", "flight", *args], stdout=write_end, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, check=False)
    finally:
        os.close(write_end)
    assert res.stderr == ""
    assert res.returncode == (0 if args == ("--help",) else 1)  # argparse's help ignores a failed write
