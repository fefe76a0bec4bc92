"""The ground archive: what a real client received goes in, and comes out the same way.

Packets are real: encoded by flight.link.messages.Codec, sent by a real agent process or
decoded by a real GroundClient's intake (``_take``), never hand-built records.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sqlite3
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest

from flight.cli import jsonable as decode_tool_jsonable  # the decode tool's own JSON form
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Limits, Severity
from flight.link.messages import Codec, EventRecord, HkRecord, Stage, Verification
from flight.link.packets import pack_tc, pack_tm, unpack
from ground.archive import Archive, ArchiveError, ArchiveRecorder
from ground.archive_cli import add_archive_parser, parse_time_s
from ground.client import Received

T0_S = 1_794_830_400.0  # 2026-11-16T12:00:00Z, a whole second: windows below fall on packet times
AGENT_HK = DICTIONARY.packet_by_name["AGENT_HK"]
POWER_HK = DICTIONARY.packet_by_name["POWER_HK"]


def agent_hk_values(i: int) -> dict:
    """AGENT_HK values of the types the agent sends, varying with ``i``."""
    values = {name: float(i % 7) for name in AGENT_HK.channels}
    values.update(
        mode=("SAFE", "IDLE", "COMPUTE")[i % 3], boot_count=3, uptime_s=10.0 + i, dict_hash=DICTIONARY.version_hash,
        cmd_accepted=i, cmd_rejected=0, cmd_executed=i, cmd_failed=0, internal_errors=0, tc_received=i,
        tc_bad_packets=0, tc_duplicates=0, tm_sent=4 * i, tm_dropped=0, link_kind="ZMQ", cpu_pct=12.5 + (i % 50) / 4,
        mem_pct=41.0, hal_backend="linux", sensors_missing=2, control_late_p99_ms=None if i % 5 == 0 else 1.25,
    )
    return values


def decoded(codec: Codec, raw: bytes) -> Received:
    """What GroundClient's intake makes of one valid packet (without gap counting)."""
    packet = unpack(raw)
    return Received(raw, packet, codec.decode_tm(packet))


def same_values(got: np.ndarray, want: list) -> bool:
    """Archived values against received ones: numbers as floats (nil and NaN both NaN), text as text."""
    if got.dtype == object:
        return got.tolist() == want
    want_f = np.array([np.nan if v is None else float(v) for v in want])
    return np.array_equal(got, want_f, equal_nan=True)


def archive_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sunlit-ground")
    add_archive_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["archive", *argv])
    return args.func(args)


@pytest.fixture
def archive(tmp_path):
    with Archive(tmp_path / "ground.sqlite") as a:
        yield a


# --- against a real agent --------------------------------------------------------------------


@pytest.mark.req("GND-001")
def test_archive_holds_what_a_live_client_received(start_agent, make_client, ipc_url, tmp_path):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    archive = Archive(tmp_path / "ground.sqlite")
    recorder = ArchiveRecorder(archive, batch_packets=7).attach(client)  # small batches: several flushes
    seen: list[Received] = []
    client.listeners.append(seen.append)

    for name, args in (("NOOP", {}), ("PING", {"token": 5}), ("SET_MODE", {"mode": "COMPUTE"})):
        recorder.record_command(client.send(name, args), who="test")
    agent_hk = lambda: sum(isinstance(i.record, HkRecord) and i.record.packet is AGENT_HK for i in seen)  # noqa: E731
    client.wait_for(lambda _: agent_hk() >= 6, 20.0)
    recorder.close()
    assert recorder.statistics().pending == 0 and recorder.statistics().errors == 0

    # Every packet, in order, byte for byte.
    assert archive.counts()["packets"] == len(seen) and archive.counts()["invalid_packets"] == 0
    # Every housekeeping value, per channel, with its packet time.
    expected: dict[str, tuple[list, list]] = {}
    for item in seen:
        if isinstance(item.record, HkRecord):
            for name, value in item.record.values.items():
                times, values = expected.setdefault(name, ([], []))
                times.append(item.record.time_s)
                values.append(value)
    got = archive.query(list(expected))
    for name, (times, values) in expected.items():
        order = np.argsort(times, kind="stable")
        assert got[name][0].tolist() == [times[i] for i in order], name
        assert same_values(got[name][1], [values[i] for i in order]), name

    # The CSV export carries the same values, aligned on packet time.
    out = tmp_path / "hk.csv"
    names = ["cmd_executed", "mode", "battery_soc_pct", "temp_max_c"]
    rows = archive.export_csv(names, out)
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == rows == len({t for n in names for t in expected[n][0]})
    by_time = {float(r["time_s"]): r for r in table}
    for name in names:
        for t, v in zip(*expected[name]):
            cell = by_time[t][name]
            assert cell == ("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)), (name, t)

    # Events and command history.
    pings = [e for e in archive.events() if e.name == "PING_RECEIVED"]
    assert len(pings) == 1 and pings[0].args == {"token": 5} and pings[0].text == "Ping 5"
    assert all(e.severity >= Severity.WARNING_LO for e in archive.events(min_severity="WARNING_LO"))
    commands = {c.name: c for c in archive.commands()}
    assert set(commands) == {"NOOP", "PING", "SET_MODE"}
    assert commands["PING"].args == {"token": 5} and commands["PING"].who == "test"
    assert commands["NOOP"].outcome == "completed" and commands["NOOP"].final
    assert [r.stage for r in commands["NOOP"].reports] == ["accepted", "started", "completed"]
    assert commands["SET_MODE"].outcome.startswith("failed at started: NOT_ALLOWED_IN_MODE")  # SAFE → COMPUTE skips IDLE

    # The raw export is what `sunlit-flight packet decode --file` reads, and decodes to the same packets.
    raw_out = tmp_path / "packets.hex"
    assert archive.export_raw(raw_out) == len(seen)
    proc = subprocess.run([sys.executable, "-m", "flight", "packet", "decode", "--file", str(raw_out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    codec = Codec(DICTIONARY)
    assert proc.stdout.splitlines() == [json.dumps(decode_tool_jsonable(codec.describe(i.raw))) for i in seen]
    archive.close()


# --- query, CSV, raw export ------------------------------------------------------------------


def test_query_by_channel_and_time_window(archive):
    codec = Codec(DICTIONARY)
    for i in range(100):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i + 0.3)
    got = archive.query(["cpu_pct", "mode", "control_late_p99_ms"], T0_S + 10, T0_S + 19)
    times, cpu = got["cpu_pct"]
    assert times.tolist() == [T0_S + i for i in range(10, 20)]  # both ends inclusive
    assert cpu.dtype == float and cpu.tolist() == [12.5 + i / 4 for i in range(10, 20)]
    assert got["mode"][1].tolist() == [("SAFE", "IDLE", "COMPUTE")[i % 3] for i in range(10, 20)]
    late = got["control_late_p99_ms"][1]  # nil in the packet: NaN here
    assert np.isnan(late[[0, 5]]).all() and (late[[1, 2, 3, 4, 6]] == 1.25).all()
    assert len(archive.query("cpu_pct", to_s=T0_S + 4.5)["cpu_pct"][0]) == 5
    assert len(archive.query("cpu_pct", from_s=T0_S + 95)["cpu_pct"][0]) == 5
    assert archive.query("battery_soc_pct")["battery_soc_pct"][0].size == 0  # known, never received
    with pytest.raises(KeyError, match="cpu_pcent"):
        archive.query("cpu_pcent")
    with pytest.raises(ValueError, match="backwards"):
        archive.query("cpu_pct", T0_S + 5, T0_S)


def test_csv_aligns_channels_from_different_packets(archive, tmp_path):
    codec = Codec(DICTIONARY)
    for i in range(10):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
        if i % 2 == 0:  # POWER_HK every other second, half a second later, battery sometimes nil
            power = {**dict.fromkeys(POWER_HK.channels), "battery_soc_pct": None if i == 4 else 80.0 - i,
                         "in_eclipse": i >= 6, "power_mode": "15W"}
            archive.record(decoded(codec, codec.encode_hk(POWER_HK.sid, power, T0_S + i + 0.5)), T0_S + i + 0.5)
    out = tmp_path / "side_by_side.csv"
    assert archive.export_csv(["cmd_executed", "battery_soc_pct", "in_eclipse", "mode"], out) == 15
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_s", "time_utc", "cmd_executed", "battery_soc_pct", "in_eclipse", "mode"]
    assert rows[1] == [repr(T0_S), "2026-11-16T12:00:00.000Z", "0", "", "", "SAFE"]
    assert rows[2] == [repr(T0_S + 0.5), "2026-11-16T12:00:00.500Z", "", "80.0", "0", ""]
    assert rows[3][2:] == ["1", "", "", "IDLE"]
    assert rows[8][2:] == ["", "", "0", ""]  # 4.5 s: battery nil, eclipse flag present
    assert rows[14][2:] == ["", "72.0", "1", ""]  # 8.5 s: in eclipse, written as an integer
    assert archive.export_csv(["cmd_executed", "battery_soc_pct"], out, T0_S + 2, T0_S + 3) == 3


def test_raw_export_window_and_framing(archive, tmp_path):
    codec = Codec(DICTIONARY)
    raws = [codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i) for i in range(5)]
    raws.append(codec.encode_event("PING_RECEIVED", {"token": 1}, T0_S + 5))
    for i, raw in enumerate(raws):
        archive.record(decoded(codec, raw), T0_S + i)
    out = tmp_path / "window.hex"
    assert archive.export_raw(out, T0_S + 1, T0_S + 5) == 5
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert [bytes.fromhex(ln) for ln in lines] == raws[1:]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.req("GND-001")
def test_corrupt_packets_are_stored_as_invalid_and_never_raise(make_client, ipc_url, tmp_path):
    client = make_client(ipc_url, wait_for_agent=False)  # no agent: packets go in through the real intake
    archive = Archive(tmp_path / "ground.sqlite")
    recorder = ArchiveRecorder(archive).attach(client)
    codec = Codec(DICTIONARY)
    good = codec.encode_hk(AGENT_HK.sid, agent_hk_values(1), T0_S)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    junk = [
        bytes(bad_crc),
        good[:30],
        b"",
        pack_tm(Apid.AGENT, 7, 3, 25, b"\xc1", T0_S + 1),  # CRC fine, data not msgpack
        pack_tm(Apid.AGENT, 8, 3, 25, msgpack.packb([99, 1, 2]), T0_S + 2),  # unknown SID
        pack_tc(Apid.AGENT, 0, 8, 1, msgpack.packb([1, 5, {}])),  # a telecommand on the telemetry path
    ]
    for raw in [*junk, good]:
        client._take(raw)  # noqa: SLF001 - the client's own intake, without a socket
    recorder.close()
    assert archive.counts()["packets"] == 7 and archive.counts()["invalid_packets"] == 6
    rows = archive._db.execute("SELECT valid, error, apid, seq_count, time_s FROM packets ORDER BY id").fetchall()  # noqa: SLF001
    assert "CRC mismatch" in rows[0][1] and rows[0][2] is None
    assert "msgpack" in rows[3][1] and rows[3][2:] == (Apid.AGENT, 7, T0_S + 1)  # header kept where readable
    assert "SID 99" in rows[4][1]
    assert rows[6][0] == 1 and archive.query("mode")["mode"][1].tolist() == ["IDLE"]

    out = tmp_path / "all.hex"
    assert archive.export_raw(out) == 7  # invalid ones too, each after a comment naming its error
    text = out.read_text()
    assert text.count("# invalid when received:") == 6
    proc = subprocess.run([sys.executable, "-m", "flight", "packet", "decode", "--file", str(out)],
                          capture_output=True, text=True, timeout=60)
    decoded_lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert proc.returncode == 1 and len(decoded_lines) == 6  # b"" makes an empty line: nothing to decode
    assert [d["valid"] for d in decoded_lines] == [False, False, True, True, True, True]
    assert archive.export_raw(out, valid_only=True) == 1
    archive.close()


def test_odd_records_are_kept(archive):
    codec = Codec(DICTIONARY)
    # An event whose argument breaks its format ({age_s:.1f} of nil): archived with the raw format.
    hung = decoded(codec, codec.encode_event("COMPUTE_HUNG", {"age_s": None}, T0_S))
    assert isinstance(hung.record, EventRecord)
    archive.record(hung, T0_S)
    [event] = archive.events()
    assert event.name == "COMPUTE_HUNG" and event.args == {"age_s": None} and "{age_s:.1f}" in event.text
    # A verification for a command another console sent: filed under its cmd_id, arguments unknown.
    report = Verification(stage=Stage.ACCEPTED,
                          success=True, request_id=0x1810_0001, cmd_id=2**64 - 5, opcode=0x0001)
    archive.record(decoded(codec, codec.encode_verification(report, T0_S + 1)), T0_S + 2)
    [cmd] = archive.commands()
    assert (cmd.cmd_id, cmd.name, cmd.args, cmd.who, cmd.outcome, cmd.final) == (
        2**64 - 5, "NOOP", None, None, "accepted", False)
    assert cmd.first_seen_s == T0_S + 2 and cmd.reports[0].time_s == T0_S + 1


# --- limits and acknowledgements -------------------------------------------------------------


@pytest.mark.req("GND-002")
def test_limits_survive_reopening(tmp_path):
    path = tmp_path / "ground.sqlite"
    with Archive(path) as archive:
        # The dictionary's: they follow battery_floor_pct and battery_safe_pct, at their defaults until
        # the agent reports its values.
        assert archive.limits("battery_soc_pct") == Limits(warn_low=30.0, crit_low=20.0)
        archive.set_limits("battery_soc_pct", Limits(warn_low=50, crit_low=40), who="ops")
        archive.set_limits("cpu_pct", Limits(warn_high=80))
        archive.set_limits("cpu_pct", Limits(warn_high=70, crit_high=95))  # the latest wins
        archive.record_ack("temp_max_c", "ops", T0_S, "warning", 86.5)
        with pytest.raises(KeyError):
            archive.set_limits("no_such_channel", Limits())
    with Archive(path) as archive:
        assert archive.limits("battery_soc_pct") == Limits(warn_low=50, crit_low=40)
        assert archive.limits("cpu_pct") == Limits(warn_high=70, crit_high=95)
        assert archive.limits("mem_pct") == Limits(warn_high=85, crit_high=95)
        store = archive.limit_store()  # the shape ground.alarms.LimitStore has
        assert store.overrides["cpu_pct"] == Limits(warn_high=70, crit_high=95)
        store.set("mem_pct", Limits(warn_high=60))
        archive.clear_limits("cpu_pct")
        [ack] = archive.acks()
        assert (ack.channel, ack.who, ack.state, ack.value) == ("temp_max_c", "ops", "warning", 86.5)
    with Archive(path) as archive:
        assert archive.limits("cpu_pct") == Limits(warn_high=90)
        assert archive.limits("mem_pct") == Limits(warn_high=60)


# --- a day at 1 Hz ---------------------------------------------------------------------------


def test_a_day_of_1hz_housekeeping(archive):
    codec = Codec(DICTIONARY)
    n = 86_400
    with archive.batch():
        for i in range(n):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    times, cpu = archive.query("cpu_pct", T0_S, T0_S + n - 1)["cpu_pct"]
    assert len(times) == n and times[0] == T0_S and times[-1] == T0_S + n - 1
    assert np.all(np.diff(times) == 1.0)
    assert np.array_equal(cpu, 12.5 + (np.arange(n) % 50) / 4)
    hour = archive.query(["uptime_s", "mode"], T0_S + 3600, T0_S + 7200)
    assert hour["uptime_s"][1].tolist() == [10.0 + i for i in range(3600, 7201)]
    assert hour["mode"][1][:3].tolist() == ["SAFE", "IDLE", "COMPUTE"]
    assert archive.counts()["samples"] == n * len(AGENT_HK.channels)


# --- the recorder ----------------------------------------------------------------------------


def test_recorder_commits_within_its_delay_and_flushes_on_close(tmp_path):
    path = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    archive = Archive(path)
    recorder = ArchiveRecorder(archive, batch_packets=10_000, max_delay_s=0.1)
    for i in range(3):
        recorder(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)))
    reader = sqlite3.connect(path)  # another connection sees only what was committed
    deadline = time.monotonic() + 10.0
    while reader.execute("SELECT count(*) FROM packets").fetchone()[0] < 3:
        assert time.monotonic() < deadline, "the recorder did not commit on its own"
        time.sleep(0.02)
    slow = ArchiveRecorder(archive, batch_packets=10_000, max_delay_s=3600.0)
    for i in range(3, 8):
        slow(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)))
    assert slow.statistics().pending == 5
    archive.close()  # closes its recorders first: nothing queued is lost
    assert reader.execute("SELECT count(*) FROM packets").fetchone()[0] == 8
    reader.close()


def test_recorder_keeps_what_a_locked_database_refuses_and_writes_it_later(tmp_path, capsys):
    path = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    archive = Archive(path, busy_timeout_s=0.05)
    recorder = ArchiveRecorder(archive, batch_packets=10_000, max_delay_s=3600.0)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file
    for i in range(4):
        recorder(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)))
    assert recorder.flush() == 0
    stats = recorder.statistics()
    assert stats.pending == 4 and stats.errors == 1 and "locked" in stats.last_error
    assert "keeping them queued" in capsys.readouterr().err
    blocker.execute("COMMIT")
    assert recorder.flush() == 4 and archive.query("mode")["mode"][1].tolist() == ["SAFE", "IDLE", "COMPUTE", "SAFE"]
    # Still refused when closing: the packets are kept beside the archive, in the raw export's format.
    raw = codec.encode_hk(AGENT_HK.sid, agent_hk_values(9), T0_S + 9)
    recorder(decoded(codec, raw))
    blocker.execute("BEGIN IMMEDIATE")
    recorder.close()
    [spilled] = tmp_path.glob("ground.sqlite.unwritten-*.hex")
    assert [ln for ln in spilled.read_text().splitlines() if not ln.startswith("#")] == [raw.hex()]
    blocker.execute("COMMIT")
    blocker.close()
    archive.close()


def test_a_reader_is_not_blocked_by_a_writer(tmp_path):
    path = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    writer = Archive(path)
    writer.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(0), T0_S)), T0_S)
    with writer.batch():  # a recorder's batch in progress, write lock held
        writer.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(1), T0_S + 1)), T0_S + 1)
        with Archive(path, create=False, busy_timeout_s=0.05) as reader:  # as `sunlit-ground archive` opens it
            assert reader.query("cpu_pct")["cpu_pct"][0].tolist() == [T0_S]  # committed data only
    writer.close()


# --- the file --------------------------------------------------------------------------------


def test_archive_file_checks(tmp_path):
    with pytest.raises(ArchiveError, match="no archive"):
        Archive(tmp_path / "missing.sqlite", create=False)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ArchiveError, match="not a Sunlit archive"):
        Archive(other)
    newer = tmp_path / "newer.sqlite"
    Archive(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ArchiveError, match="newer"):
        Archive(newer)
    (tmp_path / "text.sqlite").write_text("not a database at all, just some text that is long enough" * 20)
    with pytest.raises(ArchiveError, match="not a usable archive"):
        Archive(tmp_path / "text.sqlite")
    with Archive(tmp_path / "wal.sqlite") as archive:
        assert archive._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # noqa: SLF001


# --- the command line ------------------------------------------------------------------------


def test_cli(tmp_path, capsys):
    db = str(tmp_path / "ground.sqlite")
    codec = Codec(DICTIONARY)
    with Archive(db) as archive:
        for i in range(20):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
        archive.record(decoded(codec, codec.encode_event("COMMAND_REJECTED", {"name": "X", "reason": "r"}, T0_S)),
                       T0_S)
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 1}, T0_S)), T0_S)
        archive.record_command("NOOP", {}, 42, "alice", T0_S, "completed")
    capsys.readouterr()

    assert archive_cli("query", "cpu_pct", "mode", "--db", db, "--from", "2026-11-16T12:00:05Z", "--to",
                       str(T0_S + 6)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["2026-11-16T12:00:05.000Z                   cpu_pct = 13.75 %",
                     "2026-11-16T12:00:05.000Z                      mode = COMPUTE",
                     "2026-11-16T12:00:06.000Z                   cpu_pct = 14.0 %",
                     "2026-11-16T12:00:06.000Z                      mode = SAFE"]
    assert archive_cli("query", "cpu_pct", "--stats", "--db", db) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["count"] == 20 and stats["max"] == 17.25
    assert archive_cli("export", "--csv", str(tmp_path / "a.csv"), "cpu_pct", "mode", "--db", db) == 0
    assert len((tmp_path / "a.csv").read_text().splitlines()) == 21
    assert archive_cli("export", "--raw", str(tmp_path / "a.hex"), "--db", db, "--to", "2026-11-16T12:00:01") == 0
    assert len([ln for ln in (tmp_path / "a.hex").read_text().splitlines() if not ln.startswith("#")]) == 4
    assert archive_cli("plot", "cpu_pct", "mode", "--out", str(tmp_path / "p.png"), "--db", db) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert archive_cli("events", "--severity", "warning_lo", "--db", db) == 0
    out = capsys.readouterr().out
    assert "COMMAND_REJECTED" in out and "PING_RECEIVED" not in out
    assert archive_cli("commands", "--db", db) == 0
    assert "alice" in (out := capsys.readouterr().out) and "NOOP {} cmd_id=42: completed" in out
    assert archive_cli("query", "cpu_pct", "--db", db, "--from", str(T0_S + 1000)) == 1  # nothing there
    assert archive_cli("query", "nope", "--db", db) == 2
    assert archive_cli("query", "cpu_pct", "--db", str(tmp_path / "missing.sqlite")) == 2
    assert "no archive at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        archive_cli("query", "cpu_pct", "--db", db, "--from", "yesterday")


def test_time_parsing():
    assert parse_time_s("1794830400") == T0_S
    assert parse_time_s("2026-11-16T12:00:00Z") == T0_S
    assert parse_time_s("2026-11-16T12:00:00") == T0_S  # no zone: UTC
    assert parse_time_s("2026-11-16T13:00:00+01:00") == T0_S
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time_s("nan")


@pytest.mark.req("GND-004")
def test_archived_limits_follow_the_agents_latest_parameter_report(archive):
    codec = Codec(DICTIONARY)
    assert archive.limits("temp_max_c") == Limits(warn_high=85.0, crit_high=95.0)  # nothing reported yet
    for soft_c in (80.0, 72.5):
        values = {p.name: p.default for p in DICTIONARY.parameters} | {"thermal_soft_limit_c": soft_c}
        archive.record(decoded(codec, codec.encode_param_report(values, T0_S)), T0_S)
    assert archive.agent_parameters()["thermal_soft_limit_c"] == 72.5
    assert archive.limits("temp_max_c") == Limits(warn_high=72.5, crit_high=95.0)  # the latest report
    archive.set_limits("temp_max_c", Limits(warn_high=60.0))
    assert archive.limits("temp_max_c") == Limits(warn_high=60.0)  # an operator's override still wins
