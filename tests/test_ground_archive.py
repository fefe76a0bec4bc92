"""The ground archive: what a real client received goes in, and comes out the same way.

Packets are real: encoded by flight.link.messages.Codec, sent by a real agent process or
decoded by a real GroundClient's intake (``_take``), never hand-built records.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import json
import math
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from flight.cli import jsonable as decode_tool_jsonable  # the decode tool's own JSON form
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import FailureCode, Limits, Severity, ValueType
from flight.link.messages import Codec, EventRecord, HkRecord, Stage, Verification
from flight.link.packets import PacketError, Service, Subtype, pack_tc, pack_tm, unpack
from ground.archive import (
    DEFAULT_SPACECRAFT,
    PAGE_SAMPLES,
    Archive,
    ArchiveError,
    ArchiveRecorder,
    Retention,
    RetentionPolicy,
    decimate,
    utc_iso,
)
from ground.archive_cli import add_archive_parser, parse_time_s
from ground.client import Received

ROOT = Path(__file__).resolve().parent.parent

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
        tc_auth="OFF", tc_auth_rejected=0, tc_keys_active=0, zmq_auth_refused=0,
        mem_pct=41.0, hal_backend="linux", sensors_missing=2, control_late_p99_ms=None if i % 5 == 0 else 1.25,
    )
    return values


def decoded(codec: Codec, raw: bytes) -> Received:
    """What GroundClient's intake makes of one valid packet (without gap counting)."""
    packet = unpack(raw)
    return Received(raw, packet, codec.decode_tm(packet))


def intake(codec: Codec, raw: bytes) -> Received:
    """What GroundClient's intake makes of any packet: decoded, or kept with its error."""
    try:
        return decoded(codec, raw)
    except PacketError as exc:
        return Received(raw, None, None, error=str(exc))


def hk_values(packet, i: int) -> dict:
    """Values of any HK packet of the types the agent sends, varying with ``i``."""
    out = {}
    for k, name in enumerate(packet.channels):
        ch = DICTIONARY.channel_by_name[name]
        if ch.type is ValueType.BOOL:
            out[name] = (i + k) % 2 == 0
        elif ch.type in (ValueType.F32, ValueType.F64):
            out[name] = None if (i + k) % 11 == 0 else (i * 0.5 + k) % 97.0
        elif ch.type in (ValueType.STRING, ValueType.ENUM, ValueType.BYTES):
            out[name] = ch.choices[(i + k) % len(ch.choices)] if ch.choices else f"text-{(i + k) % 3}"
        else:
            out[name] = (i + k) % 250
    return out


def archived_file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


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


@pytest.fixture
def small_chunks(tmp_path):
    """An archive that seals every 16 packets: tests cross chunk boundaries with few packets."""
    with Archive(tmp_path / "ground.sqlite", chunk_packets=16) as a:
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
    client.wait_for(lambda _: agent_hk() >= 6, 60.0)  # a bound, not a measure: a loaded machine is slow
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
    assert [r.stage for r in commands["NOOP"].reports] == ["accepted", "completed"]  # the default flags
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


@pytest.mark.req("GND-010", "GND-007")
def test_event_queries_read_their_spacecraft_and_severity_through_indexes_an_older_file_gets_too(tmp_path):
    """Found in audit: the only events index was on time, so a query by spacecraft or severity read the whole
    table under the archive's lock (200 ms at a million events). Each severity level of each query is one
    index range now, and an archive from before gets the indexes when opened (once)."""
    path = tmp_path / "ground.sqlite"
    archive = Archive(path)
    one, two = archive._sc_id("sunlit-1"), archive._sc_id("sunlit-2")  # noqa: SLF001
    rows = [((one, two)[i % 3 == 0], None, T0_S + i // 2, 1, "E", (0, 1, 4, 6)[i % 4], f"t{i}", "{}")
            for i in range(400)]
    db = archive._db  # noqa: SLF001
    with archive.batch():
        db.executemany("INSERT INTO events(sc, packet, time_s, event_id, name, severity, text, args) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    archive.close()
    with sqlite3.connect(path) as old:  # as a file written before the indexes
        old.execute("DROP INDEX events_by_sc_severity")
        old.execute("DROP INDEX events_by_severity")
    for _ in range(2):  # made when opened, and opening again changes nothing
        archive = Archive(path)
        assert {"events_by_sc_severity", "events_by_severity"} <= {n for (n,) in archive._db.execute(  # noqa: SLF001
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        archive.close()
    archive = Archive(path)
    for spacecraft in ("sunlit-1", "sunlit-2", None, "sunlit-9"):
        for floor in (Severity.DIAGNOSTIC, Severity.WARNING_LO, Severity.FATAL):
            want = [(t, text) for sc, _p, t, _e, _n, sev, text, _a in rows if sev >= floor
                    and (spacecraft is None or sc == {"sunlit-1": one, "sunlit-2": two}.get(spacecraft))]
            for limit in (None, 0, 7):
                got = [(e.time_s, e.text) for e in archive.events(T0_S + 20, T0_S + 150, floor, spacecraft, limit)]
                window = [w for w in want if T0_S + 20 <= w[0] <= T0_S + 150]
                assert got == (window if limit is None else window[len(window) - limit:] if limit else [])
                sql, params = archive._events_sql(None, None, floor, spacecraft, limit)  # noqa: SLF001
                plan = [r[3] for r in archive._db.execute("EXPLAIN QUERY PLAN " + sql, params)]  # noqa: SLF001
                reads = [line for line in plan if " events " in f" {line} "]
                index = "events_by_severity" if spacecraft is None else "events_by_sc_severity"
                assert reads and all(line.startswith(f"SEARCH events USING INDEX {index} (") and "severity=?" in line
                                     for line in reads), plan
    assert {e.spacecraft for e in archive.events(spacecraft=None)} == {"sunlit-1", "sunlit-2"}
    archive.close()


@pytest.mark.req("GND-010", "GND-008")
def test_retention_walks_a_kinds_rows_only_when_it_is_over_its_size(tmp_path):
    """Found in audit: every retention period read and sorted every row of each kind (2 s under the write lock
    at a million rows) to delete nothing. Under its size a kind is summed, not walked; over it the oldest go."""
    codec = Codec(DICTIONARY)
    archive = Archive(tmp_path / "ground.sqlite")
    with archive.batch():
        for i in range(200):
            archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, T0_S + i)), T0_S + i)
            archive.record(decoded(codec, codec.encode_verification(
                Verification(Stage.ACCEPTED, True, 0, i + 1, 1), T0_S + i)), T0_S + i)
    statements: list[str] = []
    archive._db.set_trace_callback(statements.append)  # noqa: SLF001
    assert archive.retain(RetentionPolicy(), now_s=T0_S + 200)["events"]["deleted"] == 0
    walks = [s for s in statements if "ORDER BY" in s and ("FROM events" in s or "FROM packets" in s)]
    assert walks == [], "nothing over its size: no row walked in order"
    statements.clear()
    db = archive._db  # noqa: SLF001
    one_event = db.execute("SELECT max(length(text) + length(args) + length(name)) + 40 FROM events").fetchone()[0]
    deleted = archive.retain(RetentionPolicy(events=Retention(max_mb=50 * one_event / 1e6)), now_s=T0_S + 200)
    archive._db.set_trace_callback(None)  # noqa: SLF001
    assert any("ORDER BY" in s and "FROM events" in s for s in statements)
    kept = [e.args["token"] for e in archive.events()]
    assert 45 <= len(kept) <= 50 and kept == list(range(200 - len(kept), 200)), "the newest kept"
    assert deleted["events"]["deleted"] == 200 - len(kept) and deleted["packets"]["deleted"] == 0
    archive.close()


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


@pytest.mark.req("GND-006")
def test_a_day_of_1hz_housekeeping(tmp_path):
    path = tmp_path / "ground.sqlite"
    archive = Archive(path)
    codec = Codec(DICTIONARY)
    n = 86_400
    with archive.batch():
        for i in range(n):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    counts = archive.counts()
    assert counts["packets"] == n and counts["hk_sealed"] == n - n % archive.chunk_packets  # sealed as it came
    times, cpu = archive.query("cpu_pct", T0_S, T0_S + n - 1)["cpu_pct"]
    assert len(times) == n and times[0] == T0_S and times[-1] == T0_S + n - 1
    assert np.all(np.diff(times) == 1.0)
    assert np.array_equal(cpu, 12.5 + (np.arange(n) % 50) / 4)
    hour = archive.query(["uptime_s", "mode"], T0_S + 3600, T0_S + 7200)
    assert hour["uptime_s"][1].tolist() == [10.0 + i for i in range(3600, 7201)]
    assert hour["mode"][1][:3].tolist() == ["SAFE", "IDLE", "COMPUTE"]
    overview_t, overview = archive.query("cpu_pct", max_points=2000)["cpu_pct"]
    assert len(overview) <= 2000 and overview.min() == cpu.min() and overview.max() == cpu.max()
    archive.close()
    # What a day costs on disk (the WAL is checkpointed into the file at close): GND-006's 200 bytes.
    assert archived_file_bytes(path) / n <= 200


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
        assert archive._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # noqa: SLF001 - incremental


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
    assert archive_cli("query", "cpu_pct", "--max-points", "4", "--db", db) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert archive_cli("check", "--db", db) == 0 and capsys.readouterr().out.strip().endswith(": ok")
    policy = tmp_path / "retention.toml"
    policy.write_text("[retention.AGENT_HK]\nmax_age_days = 0.0001\n[retention.events]\nmax_mb = inf\n")
    assert archive_cli("retain", "--db", db, "--policy", str(policy), "--now", str(T0_S + 19)) == 0
    assert "AGENT_HK     deleted        11" in capsys.readouterr().out  # older than 8.64 s before the 19th
    # A --now a digit too long (found in audit: it deleted the whole command history, exit 0) is refused.
    assert archive_cli("retain", "--db", db, "--now", "17965848600") == 2
    assert "days ahead of this computer's clock" in capsys.readouterr().err
    assert archive_cli("commands", "--db", db) == 0 and "NOOP {} cmd_id=42" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # a count below 1: said, not "nothing in the window" (an audit)
        archive_cli("events", "--limit", "-1", "--db", db)
    assert refused.value.code == 2 and "-1 is not from 1" in capsys.readouterr().err
    policy.write_text("[AGENT_HK]\nmax_age = 1\n")
    assert archive_cli("retain", "--db", db, "--policy", str(policy)) == 2
    assert "retention.AGENT_HK.max_age: unknown key" in capsys.readouterr().err
    # A spacecraft the archive never heard of (a typing error) is named, not an empty answer or file.
    assert archive_cli("query", "cpu_pct", "--db", db, "--spacecraft", "sunlit-2") == 2
    assert "--spacecraft sunlit-2: not in" in capsys.readouterr().err
    assert archive_cli("export", "--csv", str(tmp_path / "b.csv"), "cpu_pct", "--db", db, "--spacecraft", "nope") == 2
    assert "(it has sunlit-1)" in capsys.readouterr().err and not (tmp_path / "b.csv").exists()
    # A folder given for the file is named as such (once the temporary file's name was said).
    assert archive_cli("export", "--csv", str(tmp_path), "cpu_pct", "--db", db) == 2
    assert f"{tmp_path}: a folder; give the name of the file to write" in capsys.readouterr().err
    old_umask = os.umask(0o022)
    try:  # an export is for sharing: the mode a new file gets (mkstemp's 600 once stuck)
        assert archive_cli("export", "--csv", str(tmp_path / "c.csv"), "cpu_pct", "--db", db) == 0
    finally:
        os.umask(old_umask)
    assert (tmp_path / "c.csv").stat().st_mode & 0o777 == 0o644
    with pytest.raises(SystemExit):
        archive_cli("query", "cpu_pct", "--db", db, "--spacecraft", "no spaces")
    assert archive_cli("query", "cpu_pct", "--db", db, "--from", str(T0_S + 1000)) == 1  # nothing there
    assert archive_cli("query", "nope", "--db", db) == 2
    assert archive_cli("query", "cpu_pct", "--db", str(tmp_path / "missing.sqlite")) == 2
    assert "no archive at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        archive_cli("query", "cpu_pct", "--db", db, "--from", "yesterday")


def test_a_damaged_or_empty_archive_is_said_never_a_traceback_and_an_empty_file_stays_empty(tmp_path, capsys):
    """A file damaged past its header once gave a raw sqlite3 traceback; an empty file (a typing error,
    a copy cut short) was made into an empty archive by a command that only reads, and said "ok"."""
    db = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    with Archive(db) as archive:
        for i in range(3000):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i % 20), T0_S + i)), T0_S + i)
    data = bytearray(db.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 2000):
        data[k] ^= 0xFF
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert archive_cli("check", "--db", str(bad)) == 1
    said = capsys.readouterr()  # how many lines quick_check gives depends on the pages the damage hits
    assert "sqlite" in said.out and "problem(s)" in said.err and ": 0 problem" not in said.err
    with sqlite3.connect(db) as conn:  # the spacecraft table's own page: `check` must still check the file
        root_page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'spacecraft'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    for k in range((root_page - 1) * page_size, root_page * page_size):
        data[k] ^= 0xFF
    names = tmp_path / "names.sqlite"
    names.write_bytes(bytes(data))
    assert archive_cli("check", "--db", str(names)) == 1
    said = capsys.readouterr()
    assert "sqlite" in said.out and "problem(s)" in said.err and "unreadable" not in said.err, said
    for argv in (("query", "cpu_pct"), ("export", "--csv", str(tmp_path / "x.csv"), "cpu_pct")):
        assert archive_cli(*argv, "--db", str(bad)) == 1
        err = capsys.readouterr().err
        assert "unreadable (database disk image is malformed)" in err and "archive check" in err, err
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for argv in (("check",), ("export", "--csv", str(tmp_path / "y.csv"), "cpu_pct")):
        assert archive_cli(*argv, "--db", str(empty)) == 2
        assert "is empty, not an archive the ground server has written" in capsys.readouterr().err
    assert empty.stat().st_size == 0 and not (tmp_path / "y.csv").exists()


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


# --- sealing: compact, and the same values ---------------------------------------------------


@pytest.mark.req("GND-006")
def test_values_are_the_same_sealed_or_not(small_chunks, tmp_path):
    """Two HK packets and events interleaved; some sealed, the last ones not: every channel comes
    back as decoding the packets gives it, in time order, and the raw export is byte for byte
    the packets in order of reception, before and after everything is sealed."""
    archive = small_chunks
    codec = Codec(DICTIONARY)
    items = []
    for i in range(70):
        items.append(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)))
        if i % 3 == 0:
            items.append(decoded(codec, codec.encode_hk(POWER_HK.sid, hk_values(POWER_HK, i), T0_S + i + 0.25)))
        if i % 10 == 0:
            items.append(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, T0_S + i)))
    items.append(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(99), T0_S + 5)))  # out of time order
    with archive.batch():
        for k, item in enumerate(items):
            archive.record(item, T0_S + k * 0.1)
    counts = archive.counts()
    assert counts["hk_sealed"] and counts["hk_unsealed"] and counts["packets"] == len(items)

    expected: dict[str, tuple[list, list]] = {}
    for item in items:
        if isinstance(item.record, HkRecord):
            for name, value in item.record.values.items():
                expected.setdefault(name, ([], []))[0].append(item.record.time_s)
                expected[name][1].append(value)

    def holds_what_was_received() -> None:
        got = archive.query(list(expected))
        for name, (times, values) in expected.items():
            order = np.argsort(times, kind="stable")  # time order; same time: order of reception
            assert got[name][0].tolist() == [times[i] for i in order], name
            assert same_values(got[name][1], [values[i] for i in order]), name
        window = archive.query(["cpu_pct", "battery_soc_pct"], T0_S + 10, T0_S + 40)
        assert window["cpu_pct"][0].tolist() == [T0_S + i for i in range(10, 41)]
        assert window["battery_soc_pct"][0].tolist() == [T0_S + i + 0.25 for i in range(12, 40, 3)]
        out = tmp_path / "raw.hex"
        assert archive.export_raw(out) == len(items)
        assert [bytes.fromhex(ln) for ln in out.read_text().splitlines() if not ln.startswith("#")] == [
            i.raw for i in items]
        latest = archive.latest()
        assert latest["uptime_s"] == (10.0 + 69, T0_S + 69) and latest["mode"] == ("SAFE", T0_S + 69)
        assert latest["cmd_executed"] == (69, T0_S + 69) and isinstance(latest["cmd_executed"][0], int)
        assert latest["in_eclipse"][0] is hk_values(POWER_HK, 69)["in_eclipse"]
        assert archive.check() == []

    holds_what_was_received()
    assert archive.seal(force=True) == counts["hk_unsealed"]
    assert archive.counts()["hk_unsealed"] == 0
    holds_what_was_received()


def test_sealing_is_due_by_count_or_by_age(tmp_path):
    codec = Codec(DICTIONARY)
    with Archive(tmp_path / "ground.sqlite", chunk_packets=10, chunk_age_s=60.0) as archive:
        for i in range(25):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
        assert archive.counts()["hk_chunks"] == 2 and archive.counts()["hk_unsealed"] == 5  # whole chunks only
        assert archive.seal(now_s=T0_S + 24) == 0  # the oldest unsealed (20 s) is 4 s old
        assert archive.seal(now_s=T0_S + 20 + 60) == 5  # now 60 s old: all of them, though fewer than 10
        assert archive.counts()["hk_chunks"] == 3 and archive.counts()["hk_sealed"] == 25


def test_decimation_keeps_extremes_and_changes():
    rng = np.random.default_rng(7)
    n = 50_000
    times = T0_S + np.arange(n, dtype=float)
    values = rng.normal(20.0, 1.0, n)
    values[12_345] = 95.0  # a spike one sample wide
    values[40_001] = -40.0
    values[20_000:20_300] = np.nan  # a bucket and more of nothing
    t, v = decimate(times, values, 1000)
    assert len(t) <= 1000 and np.all(np.diff(t) > 0)
    assert (T0_S + 12_345, 95.0) in zip(t.tolist(), v.tolist())
    assert (T0_S + 40_001, -40.0) in zip(t.tolist(), v.tolist())
    assert not np.isnan(v).any()
    modes = np.empty(n, dtype=object)
    modes[:] = ["IDLE"] * n
    modes[100:105] = "COMPUTE"
    modes[30_000:] = "SAFE"
    t, m = decimate(times, modes, 1000)
    assert len(t) <= 1000 and {T0_S + 100, T0_S + 105, T0_S + 30_000} <= set(t.tolist())
    chatty = np.empty(n, dtype=object)
    chatty[:] = [str(i % 2) for i in range(n)]  # changes every sample: bounded all the same
    assert len(decimate(times, chatty, 1000)[0]) <= 1000
    assert decimate(times[:10], values[:10], 1000)[0].tolist() == times[:10].tolist()  # few: as they are
    with pytest.raises(ValueError, match="max_points"):
        decimate(times, values, 1)


@pytest.mark.req("GND-006")
def test_query_with_max_points_keeps_the_global_extremes(small_chunks):
    codec = Codec(DICTIONARY)
    n = 3000
    cpu = 40.0 + 10.0 * np.sin(np.arange(n) / 50.0)
    cpu[1777] = 99.5
    cpu[222] = 0.5
    with small_chunks.batch():
        for i in range(n):
            values = agent_hk_values(i) | {"cpu_pct": float(cpu[i])}
            small_chunks.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, values, T0_S + i)), T0_S + i)
    got = small_chunks.query(["cpu_pct", "mode"], max_points=100)
    t, v = got["cpu_pct"]
    assert len(t) <= 100 and np.all(np.diff(t) >= 0)
    assert (T0_S + 1777, 99.5) in zip(t.tolist(), v.tolist()) and (T0_S + 222, 0.5) in zip(t.tolist(), v.tolist())
    # mode changes every packet: each bucket's first value and its first change
    assert len(got["mode"][0]) <= 100 and set(got["mode"][1].tolist()) <= {"SAFE", "IDLE", "COMPUTE"}
    t, v = small_chunks.query("cpu_pct", T0_S + 1000, T0_S + 1999, max_points=50)["cpu_pct"]
    assert len(t) <= 50 and t[0] >= T0_S + 1000 and t[-1] <= T0_S + 1999 and v.max() == 99.5


def _same_series(got_t: list, got_v: list, want: tuple[np.ndarray, np.ndarray]) -> bool:
    want_v = want[1].tolist()
    return got_t == want[0].tolist() and len(got_v) == len(want_v) and all(
        a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        for a, b in zip(got_v, want_v))


@pytest.mark.req("GND-006")
def test_a_window_is_read_in_bounded_pages_nothing_lost_or_repeated_while_packets_come_and_are_sealed(small_chunks):
    """Found in audit: a windowed query read the whole window into memory, all of history if asked. A page reads at
    most its samples; following the tokens gives what the whole-window query gives, each sample once, across
    packets of one time split between pages, a clock fallen back to 1970, other SIDs, and packets received and
    sealed between pages (packets of the time a page ended at sealed before the next page)."""
    archive = small_chunks
    codec = Codec(DICTIONARY)
    names = ["uptime_s", "mode", "cpu_pct", POWER_HK.channels[0]]
    with archive.batch():
        for i in range(300):
            t = T0_S + i if i % 40 else 200.0 + i  # every 40th dated 1970: after a power cut
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), t)), T0_S + i)
            if i % 3 == 0:
                archive.record(decoded(codec, codec.encode_hk(POWER_HK.sid, hk_values(POWER_HK, i), t)), T0_S + i)
        for i in range(300, 312):  # a stuck clock: 12 packets of one time, the first of all; the last 8 unsealed
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 100.0)), T0_S + i)
    limit = 7  # samples: two AGENT_HK packets (3 channels each) or seven POWER_HK ones a page
    got: dict[str, tuple[list, list]] = {name: ([], []) for name in names}
    token, pages, samples, live = None, 0, 0, 0
    while True:
        page = archive.query_page(names, max_samples=limit, after=token)
        pages += 1
        assert page.samples <= limit and (page.complete or page.samples > limit - 3)
        samples += page.samples
        for name in names:
            got[name][0].extend(page.channels[name][0].tolist())
            got[name][1].extend(page.channels[name][1].tolist())
        if page.complete:
            assert page.next is None
            break
        assert page.next and any(page.page_end_s in got[name][0] for name in names)
        token = page.next
        if pages == 3:  # the page ended inside the stuck clock's packets, at one still unsealed: seal it now
            assert got["uptime_s"][0].count(100.0) == 6 and page.page_end_s == 100.0
            unsealed = archive.counts()["hk_unsealed"]
            while archive.counts()["hk_unsealed"] >= unsealed:
                live += 1  # received later than any, dated later than any
                archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(live),
                                                              T0_S + 1000 + live)), T0_S + 1000 + live)
    want = archive.query(names)
    assert live >= 8 and samples == sum(len(want[name][0]) for name in names)
    for name in names:
        assert _same_series(*got[name], want[name]), name
    assert pages > 100
    # Decimated, a page keeps its own extremes; the last page is whole to the window's end.
    page = archive.query_page("cpu_pct", T0_S, T0_S + 299, max_samples=100, max_points=10)
    assert not page.complete and len(page.channels["cpu_pct"][0]) <= 10 and page.samples == 100
    last = archive.query_page("cpu_pct", T0_S, T0_S + 299, max_samples=100_000, after=page.next)
    assert last.complete and last.page_end_s == T0_S + 299 and last.samples == 300 - 8 - 100  # 1970's 8 not in it
    with pytest.raises(ValueError, match="next: 'p1~nope' is not a page token"):
        archive.query_page("cpu_pct", after="p1~nope")
    with pytest.raises(ValueError, match="max_samples 1: at least the 2 channels"):
        archive.query_page(["cpu_pct", "mode"], max_samples=1)


# --- spacecraft ------------------------------------------------------------------------------


@pytest.mark.req("GND-007")
def test_two_spacecraft_never_mix(small_chunks, tmp_path):
    archive = small_chunks
    codec = Codec(DICTIONARY)
    with archive.batch():
        for i in range(40):
            for sc, offset in (("sunlit-1", 0.0), ("sunlit-2", 100.0)):
                values = agent_hk_values(i) | {"cpu_pct": offset + i}
                archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, values, T0_S + i)), T0_S + i, sc)
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 2}, T0_S)), T0_S, "sunlit-2")
    archive.record_command("NOOP", {}, 42, "alice", T0_S, "completed", spacecraft="sunlit-2")
    archive.record_command("NOOP", {}, 42, "bob", T0_S + 1, "completed")  # the same cmd_id, another spacecraft
    archive.set_limits("cpu_pct", Limits(warn_high=50.0), spacecraft="sunlit-2")
    archive.record_ack("cpu_pct", "carol", T0_S, "warning", 120.0, spacecraft="sunlit-2")

    assert archive.spacecraft() == ["sunlit-1", "sunlit-2"]
    one, two = (archive.query("cpu_pct", spacecraft=sc)["cpu_pct"] for sc in ("sunlit-1", "sunlit-2"))
    assert one[1].tolist() == [float(i) for i in range(40)] and two[1].tolist() == [100.0 + i for i in range(40)]
    assert one[0].tolist() == two[0].tolist()
    assert archive.latest("sunlit-2")["cpu_pct"] == (139.0, T0_S + 39)
    assert archive.query("cpu_pct", spacecraft="sunlit-3")["cpu_pct"][0].size == 0  # never heard of
    assert archive.events(spacecraft="sunlit-1") == [] and len(archive.events()) == 1
    [event] = archive.events(spacecraft="sunlit-2")
    assert event.spacecraft == "sunlit-2"
    assert [(c.spacecraft, c.who) for c in archive.commands()] == [("sunlit-2", "alice"), ("sunlit-1", "bob")]
    assert [c.who for c in archive.commands(spacecraft="sunlit-1")] == ["bob"]
    assert archive.limits("cpu_pct", spacecraft="sunlit-2") == Limits(warn_high=50.0)
    assert archive.limits("cpu_pct") == Limits(warn_high=90.0)  # the dictionary's, on sunlit-1
    assert archive.limit_store("sunlit-2").overrides == {"cpu_pct": Limits(warn_high=50.0)}
    assert [a.spacecraft for a in archive.acks()] == ["sunlit-2"] and archive.acks(spacecraft="sunlit-1") == []
    assert archive.counts("sunlit-1")["packets"] == 40 and archive.counts("sunlit-2")["packets"] == 41
    assert archive.channel_names("sunlit-2")[:2] == ["mode", "boot_count"] and archive.channel_names("sunlit-3") == []
    out = tmp_path / "two.hex"
    assert archive.export_raw(out, spacecraft="sunlit-2") == 41
    for bad in ("", "sunlit 1", "-x", "a" * 33, "sunlit/1"):
        with pytest.raises(ValueError, match="spacecraft"):
            archive.query("cpu_pct", spacecraft=bad)
    before = archive.counts()["packets"]
    with archive.batch():
        archive.record(decoded(codec, codec.encode_pong(T0_S)), T0_S)
        with pytest.raises(ValueError, match="spacecraft 'bad name'"):
            archive.record(decoded(codec, codec.encode_pong(T0_S)), T0_S, "bad name")
        with pytest.raises(ValueError, match="spacecraft"):
            archive.record_command("NOOP", {}, 7, "x", T0_S, spacecraft="bad name")
    assert archive.counts()["packets"] == before + 1  # the rest of the batch is kept
    with pytest.raises(ValueError, match="spacecraft"):
        ArchiveRecorder(archive, spacecraft="x y")


def test_a_recorder_files_under_its_spacecraft(tmp_path):
    codec = Codec(DICTIONARY)
    archive = Archive(tmp_path / "ground.sqlite")
    recorder = ArchiveRecorder(archive, spacecraft="sunlit-7")
    recorder(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(1), T0_S)))
    recorder.close()
    assert archive.spacecraft() == ["sunlit-7"] and archive.query("mode", spacecraft="sunlit-7")["mode"][1].tolist() == [
        "IDLE"]
    assert archive.query("mode")["mode"][1].size == 0  # nothing on DEFAULT_SPACECRAFT
    archive.close()


# --- command history and events ---------------------------------------------------------------


def test_command_history_follows_the_server_queue(archive):
    codec = Codec(DICTIONARY)
    stages = [{"stage": "queued", "ok": True, "at_s": T0_S}]
    archive.record_command("SET_MODE", {"mode": "IDLE"}, None, "alice", None, queue_id=7,
                           state="pending_approval", queued_s=T0_S, stages=stages)
    stages.append({"stage": "approved", "ok": True, "at_s": T0_S + 2, "by": "bob"})
    archive.record_command("SET_MODE", {"mode": "IDLE"}, None, "alice", None, queue_id=7, state="queued",
                           approved_by="bob", stages=stages)
    [queued] = archive.commands()
    assert (queued.cmd_id, queued.queue_id, queued.state, queued.approved_by, queued.outcome, queued.final) == (
        None, 7, "queued", "bob", "queued", False)
    assert queued.queued_s == T0_S and queued.first_seen_s == T0_S and len(queued.stages) == 2
    # The agent's report on the stream comes before the server files the command as sent.
    cmd_id = 2**64 - 9
    report = Verification(stage=Stage.ACCEPTED, success=True, request_id=1, cmd_id=cmd_id, opcode=0x0003)
    archive.record(decoded(codec, codec.encode_verification(report, T0_S + 3)), T0_S + 3.5)
    assert len(archive.commands()) == 2
    stages.append({"stage": "sent", "ok": True, "at_s": T0_S + 3, "code": "", "reason": ""})
    archive.record_command("SET_MODE", {"mode": "IDLE"}, cmd_id, "alice", T0_S + 3, queue_id=7, state="sent",
                           stages=stages)
    [sent] = archive.commands()  # one row: the queue's, with the report
    assert (sent.cmd_id, sent.queue_id, sent.approved_by, sent.sent_s) == (cmd_id, 7, "bob", T0_S + 3)
    assert [r.stage for r in sent.reports] == ["accepted"] and sent.outcome == "accepted" and not sent.final
    assert [s["stage"] for s in sent.stages] == ["queued", "approved", "sent"]
    archive.record_command("SET_MODE", {"mode": "IDLE"}, cmd_id, "alice", T0_S + 3, "timeout at completed",
                           queue_id=7, state="timeout")
    [done] = archive.commands()
    assert (done.outcome, done.final, done.state) == ("timeout at completed", True, "timeout")
    archive.record_command("NOOP", {}, None, "carol", None, queue_id=8, state="cancelled", queued_s=T0_S + 10)
    assert archive.next_queue_id() == 9 and archive.next_queue_id("sunlit-2") == 1
    assert [c.queue_id for c in archive.commands(limit=1)] == [8]
    assert [c.name for c in archive.commands(name="NOOP")] == ["NOOP"]
    with pytest.raises(ValueError, match="cmd_id or a queue_id"):
        archive.record_command("NOOP", {}, 0, "x", T0_S)


def test_events_limit_gives_the_newest_oldest_first(archive):
    codec = Codec(DICTIONARY)
    with archive.batch():
        for i in range(10):
            archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, T0_S + i)), T0_S + i)
    assert [e.args["token"] for e in archive.events(limit=3)] == [7, 8, 9]
    assert [e.args["token"] for e in archive.events(to_s=T0_S + 5, limit=2)] == [4, 5]
    assert len(archive.events()) == 10 and archive.events(limit=0) == []


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.req("GND-001")
def test_hostile_packets_are_kept_and_the_batch_goes_on(small_chunks):
    """Valid CRC, strange contents: infinities and NaN, integers at the edge of 64 bits, maps,
    lists and bytes where numbers or text belong, integers no field can hold. Whatever the
    client's decoder makes of each (refused with its reason, or decoded), the archive keeps it
    raw, counts it, stores what it can and goes on with the batch."""
    archive = small_chunks
    codec = Codec(DICTIONARY)
    edges = agent_hk_values(1) | {"uptime_s": 2**64 - 1, "cpu_pct": math.inf, "mem_pct": math.nan,
                                  "contact_age_s": -math.inf, "boot_count": 2**32 - 1}
    wrong = agent_hk_values(2) | {"mode": {"a": [1, 2]}, "boot_count": math.inf, "dict_hash": b"\x00\xff",
                                  "cmd_accepted": [1, 2], "cpu_pct": "hot"}

    def hk(values: dict, seq: int, t: float) -> bytes:
        row = [AGENT_HK.sid, *(values[c] for c in AGENT_HK.channels)]
        return pack_tm(Apid.AGENT, seq, Service.HOUSEKEEPING, Subtype.HK_REPORT, msgpack.packb(row), t)

    hostile = [
        hk(edges, 1, T0_S + 1),
        hk(wrong, 2, T0_S + 2),
        pack_tm(Apid.AGENT, 3, Service.VERIFICATION, 1, msgpack.packb({"req": 2**64 - 1, "cmd_id": 5, "op": 1}),
                T0_S + 3),  # a request id no field holds
        pack_tm(Apid.AGENT, 4, Service.EVENT, 1, msgpack.packb([DICTIONARY.event_by_name["PING_RECEIVED"].id,
                                                                 {"token": [math.inf, {"x": b"\x01"}]}]), T0_S + 4),
        pack_tm(Apid.AGENT, 5, Service.PARAMETER, Subtype.PARAM_REPORT, msgpack.packb({1: math.inf, "x": 2}), T0_S + 5),
        pack_tm(Apid.AGENT, 6, Service.HOUSEKEEPING, Subtype.HK_REPORT, msgpack.packb([AGENT_HK.sid, 1]), T0_S + 6),
    ]
    good = [decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)) for i in (0, 7, 8)]
    batch = [good[0], *(intake(codec, raw) for raw in hostile), *good[1:]]
    with archive.batch():
        for k, item in enumerate(batch):
            archive.record(item, T0_S + k)
    counts = archive.counts()
    assert counts["packets"] == len(batch)
    assert counts["invalid_packets"] == sum(item.packet is None for item in batch) >= 1  # the short HK row at least
    rows = dict(archive._db.execute("SELECT seq_count, valid || ' ' || error FROM packets WHERE sid IS NULL"))  # noqa: SLF001
    for seq in (3, 6):
        assert rows[seq].split(" ", 1)[1], f"packet {seq} kept without its reason"
    assert archive.commands() == []  # the report that could not be stored filed no command either
    archive.agent_parameters()  # an odd parameter report is read back without harm

    def values_hold() -> None:
        got = archive.query(["uptime_s", "cpu_pct", "mem_pct", "contact_age_s", "boot_count"], T0_S + 1, T0_S + 1)
        assert got["uptime_s"][1].tolist() == [float(2**64 - 1)] and got["cpu_pct"][1].tolist() == [math.inf]
        assert np.isnan(got["mem_pct"][1]).all() and got["contact_age_s"][1].tolist() == [-math.inf]
        assert got["boot_count"][1].tolist() == [float(2**32 - 1)]
        assert archive.query("uptime_s", T0_S + 7)["uptime_s"][1].tolist() == [17.0, 18.0]  # the batch went on
        if batch[2].packet is not None:  # this decoder let the wrong types through: stored as text
            odd = archive.query(["mode", "dict_hash", "cmd_accepted", "cpu_pct"], T0_S + 2, T0_S + 2)
            assert [odd[c][1].tolist() for c in odd] == [['{"a":[1,2]}'], ["00ff"], ["[1,2]"], ["hot"]]
        [event] = archive.events()
        assert event.args == {"token": [math.inf, {"x": "01"}]}

    values_hold()
    archive.seal(force=True)
    values_hold()
    assert archive.check() == []


# --- retention -------------------------------------------------------------------------------


@pytest.mark.req("GND-008")
def test_retention_by_age_and_by_size_deletes_and_shrinks_the_file(tmp_path):
    path = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    n = 6000
    archive = Archive(path, chunk_packets=64)
    with archive.batch():
        for i in range(n):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
            if i % 100 == 0:
                archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, T0_S + i)), T0_S + i)
    archive.record_command("NOOP", {}, 1, "alice", T0_S)
    archive.seal(force=True)
    archive.retain(RetentionPolicy(), now_s=T0_S + n)  # the defaults keep all of this
    size_full = archived_file_bytes(path)

    # By age: housekeeping older than 3000 s, events older than 1000 s. A chunk goes whole, when
    # its newest packet is older; commands are kept.
    policy = RetentionPolicy.from_mapping({"AGENT_HK": {"max_age_days": 3000 / 86_400},
                                           "events": {"max_age_days": 1000 / 86_400}})
    deleted = archive.retain(policy, now_s=T0_S + n)
    cutoff = T0_S + n - 3000
    times = archive.query("uptime_s")["uptime_s"][0]
    assert times[0] <= cutoff < times[0] + 64 and times[-1] == T0_S + n - 1
    assert deleted["AGENT_HK"]["deleted"] == n - len(times) and deleted["AGENT_HK"]["bytes"] > 0
    assert [e.time_s for e in archive.events()] == [T0_S + i for i in range(5000, n, 100)]
    assert deleted["events"]["deleted"] == 50 and deleted["commands"]["deleted"] == 0
    assert len(archive.commands()) == 1 and archive.check() == []
    size_aged = archived_file_bytes(path)
    assert size_aged < 0.75 * size_full

    # By size: the newest chunks that fit in 20 kB.
    deleted = archive.retain(RetentionPolicy(hk=Retention(max_mb=0.02)), now_s=T0_S + n)
    stored = archive._db.execute("SELECT sum(bytes) FROM hk_chunks").fetchone()[0]  # noqa: SLF001
    assert stored <= 20_000 and deleted["AGENT_HK"]["deleted"] > 0
    times = archive.query("uptime_s")["uptime_s"][0]
    assert times[-1] == T0_S + n - 1 and np.all(np.diff(times) == 1.0)  # the newest, contiguous
    assert archived_file_bytes(path) < size_aged and archive.check() == []
    archive.close()


@pytest.mark.req("GND-008")
def test_telemetry_ages_by_the_spacecrafts_own_time_and_a_packet_dated_ahead_moves_nothing(tmp_path):
    """Found in an audit: retention aged packets by their time against the ground's clock, so a board whose
    clock was unset (1970), or a simulation dated a month back, had its telemetry deleted minutes after it
    came; and the packet keys were kept relative to the newest packet time, so one packet dated 2096 emptied
    them and every packet played back after was archived twice."""
    codec = Codec(DICTIONARY)
    now = T0_S + 400 * 86_400.0
    archive = Archive(tmp_path / "ground.sqlite", chunk_packets=8)
    for i in range(20):  # a board at 1970: its packets' time, received now
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 1000.0 + i)), now + i)
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, 1000.0 + i)), now + i)
    archive.seal(force=True)
    deleted = archive.retain(RetentionPolicy(), now_s=now + 30)
    assert all(d["deleted"] == 0 for d in deleted.values()), deleted
    assert len(archive.events()) == 20 and len(archive.query("uptime_s")["uptime_s"][0]) == 20
    # What is old by the spacecraft's own time and by its reception goes: a week of events, by its clock
    archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 99}, 1000.0 + 8 * 86_400.0)),
                   now + 60)
    week = RetentionPolicy.from_mapping({"events": {"max_age_days": 7}})
    archive.retain(week, now_s=now + 90)
    assert len(archive.events()) == 21, "received minutes ago: kept"
    archive.retain(week, now_s=now + 8 * 86_400.0)
    assert [e.args["token"] for e in archive.events()] == [99]
    # A review: a frame with no time (kept at its reception) made the spacecraft's time the ground's; and a
    # board that falls back to 1970 after sending real time keeps what it sends since, old only by its clock
    archive.record(intake(codec, b"\x00" * 9), now + 8 * 86_400.0)
    archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 100}, now + 8 * 86_400.0)),
                   now + 8 * 86_400.0)
    archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 101}, 2000.0)), now + 8 * 86_400.0)
    archive.retain(RetentionPolicy(), now_s=now + 8 * 86_400.0 + 60)
    assert sorted(e.args["token"] for e in archive.events()) == [99, 100, 101]
    archive.close()

    second = Archive(tmp_path / "keys.sqlite")
    second.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 1}, 4.0e9)), now)  # 2096
    raws = [codec.encode_event("PING_RECEIVED", {"token": i}, now + i) for i in range(10)]
    for raw in raws:
        second.record(decoded(codec, raw), now + 20)
    second.retain(RetentionPolicy(), now_s=now + 30)
    assert [second.record(decoded(codec, raw), now + 60) for raw in raws] == [None] * 10  # known: not again
    assert len(second.events()) == 11
    second.close()


@pytest.mark.req("GND-008")
def test_telemetry_ages_by_its_reception_sealed_or_not_and_a_clock_far_ahead_ages_too(tmp_path):
    """Found in audit: a sealed chunk kept only its packet times, so the housekeeping of a board whose clock fell
    back to 1970 (no RTC at boot) went at the first retention after it was sealed, minutes after it came; and
    telemetry dated far ahead (2096) was never old, kept for ever. Retention ages telemetry by its reception."""
    codec = Codec(DICTIONARY)
    now = T0_S + 400 * 86_400.0
    archive = Archive(tmp_path / "ground.sqlite", chunk_packets=8)
    for i in range(8):  # the board's clock right, then fallen back to 1970
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), now + i)), now + i)
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 100 + i}, now + i)), now + i)
    for i in range(16):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 1000.0 + i)), now + 100 + i)
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, 1000.0 + i)), now + 100 + i)
    archive.seal(force=True)
    assert archive.counts()["hk_chunks"] == 3
    deleted = archive.retain(RetentionPolicy(), now_s=now + 200)
    assert all(d["deleted"] == 0 for d in deleted.values()), deleted
    assert len(archive.query("uptime_s")["uptime_s"][0]) == 24 and len(archive.events()) == 24
    # Over its size, what was received first goes first, whatever the board's clock said
    one_event = archive._db.execute(  # noqa: SLF001
        "SELECT max(length(text) + length(args) + length(name)) + 40 FROM events").fetchone()[0]
    archive.retain(RetentionPolicy(events=Retention(max_mb=16 * one_event / 1e6)), now_s=now + 200)
    kept = sorted(e.args["token"] for e in archive.events())
    assert 14 <= len(kept) <= 16 and kept == list(range(16 - len(kept), 16)), kept

    # Received long ago (by the ground's clock) goes: dated 1970 or 2096, sealed or not
    ahead = Archive(tmp_path / "ahead.sqlite", chunk_packets=8)
    for t in (1000.0, 4.0e9):
        for i in range(8):
            ahead.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), t + i)), T0_S + i)
            ahead.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, t + i)), T0_S + i)
    ahead.seal(force=True)
    ahead.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 99}, 4.0e9 + 99)), now)  # received now
    deleted = ahead.retain(RetentionPolicy(), now_s=now)
    assert deleted["AGENT_HK"]["deleted"] == 16 and deleted["events"]["deleted"] == 16
    assert len(ahead.query("uptime_s")["uptime_s"][0]) == 0 and [e.args["token"] for e in ahead.events()] == [99]
    assert ahead.check() == []
    archive.close()
    ahead.close()


@pytest.mark.req("GND-008", "GND-010")
def test_an_archive_from_before_receptions_were_kept_gets_them_when_opened(tmp_path):
    """A file written before chunks and events kept their reception: the columns and indexes are added when it is
    opened (once); an event takes its packet's reception, a chunk sealed before its newest packet time."""
    codec = Codec(DICTIONARY)
    now = T0_S + 400 * 86_400.0
    path = tmp_path / "old.sqlite"
    archive = Archive(path, chunk_packets=8)
    for i in range(8):  # 1970, received long ago
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 500.0 + i)), T0_S + i)
    for i in range(8):  # 2096, received long ago
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 4e9 + i)), T0_S + 10 + i)
    archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 0}, now)), now)  # the right time
    for i in range(8):  # then 1970, received now
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 1000.0 + i)), now + i)
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 1 + i}, 1000.0 + i)), now + i)
    archive.close()
    with sqlite3.connect(path) as old:  # as a file written before them
        for index in ("hk_chunks_by_received", "events_by_received", "packets_by_received"):
            old.execute(f"DROP INDEX {index}")
        old.execute("ALTER TABLE hk_chunks DROP COLUMN r_last")
        old.execute("ALTER TABLE events DROP COLUMN received_s")
    for _ in range(2):  # made when opened, and opening again changes nothing
        archive = Archive(path, chunk_packets=8)
        db = archive._db  # noqa: SLF001
        assert db.execute("SELECT count(*) FROM events WHERE received_s IS NULL").fetchone()[0] == 0
        assert archive.check() == []
        archive.close()
    archive = Archive(path, chunk_packets=8)
    for i in range(8):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), 2000.0 + i)), now + 50 + i)
    assert db_nulls(archive) == 3  # the chunks sealed before: no reception kept in their row
    deleted = archive.retain(RetentionPolicy(), now_s=now + 100)
    # Of the chunks sealed before, those received long ago go (1970 and 2096) and the one received now stays, their
    # receptions read from their blobs (found in reviews: their packet times stood in, so the 1970 ones both went and
    # the 2096 one was kept for ever); the one sealed since stays
    assert deleted["AGENT_HK"]["deleted"] == 16 and deleted["events"]["deleted"] == 0
    assert list(archive.query("uptime_s")["uptime_s"][0]) == [1000.0 + i for i in range(8)] + [2000.0 + i
                                                                                                for i in range(8)]
    assert db_nulls(archive) == 0
    assert len(archive.events()) == 9, "their packets' reception: received now, kept"
    assert archive.check() == []
    archive.close()


def db_nulls(archive: Archive) -> int:
    return archive._db.execute("SELECT count(*) FROM hk_chunks WHERE r_last IS NULL").fetchone()[0]  # noqa: SLF001


@pytest.mark.req("GND-008")
def test_a_failure_sqlite_rolled_back_itself_is_raised_as_itself(tmp_path):
    """Found in an audit: on a full disk SQLite rolls the transaction back itself, and the archive's own
    ROLLBACK then raised "cannot rollback - no transaction is active" over the cause, which the server's
    status showed as the retention error."""
    import sqlite3

    codec = Codec(DICTIONARY)
    archive = Archive(tmp_path / "ground.sqlite")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        with archive._write():  # noqa: SLF001
            archive._db.execute("ROLLBACK")  # noqa: SLF001 - what SQLite does on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")
    assert archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 1}, T0_S)), T0_S)
    assert len(archive.events()) == 1
    archive.close()


def test_retention_policy_from_toml_tables():
    policy = RetentionPolicy.from_mapping({"hk": {"max_mb": 100}, "AGENT_HK": {"max_age_days": 7},
                                           "commands": {"max_mb": math.inf}})
    assert policy.rule("AGENT_HK") == Retention(7.0, 100.0)  # from hk, then its own
    assert policy.rule("POWER_HK") == Retention(30.0, 100.0)
    assert policy.rule("commands") == Retention(3650.0, math.inf)
    assert policy.rule("events") == RetentionPolicy().events
    for bad, named in (({"AGENT_HKK": {}}, "retention.AGENT_HKK"),
                       ({"events": {"max_days": 1}}, "retention.events.max_days"),
                       ({"packets": {"max_mb": -1}}, "retention.packets.max_mb"),
                       ({"packets": {"max_age_days": "7"}}, "retention.packets.max_age_days"),
                       ({"packets": {"max_age_days": True}}, "retention.packets.max_age_days"),
                       ({"events": 3}, "retention.events")):
        with pytest.raises(ValueError, match=named.replace(".", r"\.")):
            RetentionPolicy.from_mapping(bad)


# --- integrity and crash safety --------------------------------------------------------------


@pytest.mark.req("GND-009")
def test_a_damaged_chunk_is_reported_and_never_returned(tmp_path):
    path = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    archive = Archive(path, chunk_packets=32)
    with archive.batch():
        for i in range(100):
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    archive.seal(force=True)
    assert archive.check() == []
    first, second = archive._db.execute("SELECT id FROM hk_chunks ORDER BY first_id LIMIT 2").fetchall()  # noqa: SLF001
    with sqlite3.connect(path) as db:  # one bit flipped in the middle of each blob, as a bad sector would
        for chunk_id, column in ((first[0], "vals"), (second[0], "raw")):
            blob = bytearray(db.execute(f"SELECT {column} FROM hk_chunks WHERE id = ?", (chunk_id,)).fetchone()[0])
            blob[len(blob) // 2] ^= 0x10
            db.execute(f"UPDATE hk_chunks SET {column} = ? WHERE id = ?", (bytes(blob), chunk_id))
    problems = archive.check()
    assert len(problems) == 2
    assert f"hk chunk {first[0]}" in problems[0] and "values blob fails its CRC-32" in problems[0]
    assert f"hk chunk {second[0]}" in problems[1] and "raw blob fails its CRC-32" in problems[1]
    with pytest.raises(ArchiveError, match=f"hk chunk {first[0]}: values blob fails its CRC-32"):
        archive.query("cpu_pct")
    assert len(archive.query("cpu_pct", T0_S + 40)["cpu_pct"][0]) == 60  # the chunks that are sound still serve
    with pytest.raises(ArchiveError, match=f"hk chunk {second[0]}: raw blob fails its CRC-32"):
        archive.export_raw(tmp_path / "out.hex", T0_S + 40)
    assert not (tmp_path / "out.hex").exists()  # no half-written export
    assert archive_cli("check", "--db", str(path)) == 1
    archive.close()


KILL9_CHILD = r"""
import os, sys, time
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from flight.link.packets import unpack
from ground.archive import Archive, ArchiveRecorder
from ground.client import Received

db, rate = sys.argv[1], float(sys.argv[2])
codec = Codec(DICTIONARY)
archive = Archive(db, chunk_packets=8)  # small chunks: seals happen all through the run
recorder = ArchiveRecorder(archive)  # the server's path and defaults: a commit at least every 0.5 s
side = sys.stdout.fileno()
os.write(side, b"ready\n")
start, i = time.time(), 0
while True:
    packet = DICTIONARY.packets[i % len(DICTIONARY.packets)]
    kinds = {c: DICTIONARY.channel_by_name[c].type.value for c in packet.channels}
    values = {c: None if k in ("string", "enum", "bytes") else (i % 2 == 0) if k == "bool"
              else float(i) if k.startswith("f") else i % 200 for c, k in kinds.items()}
    raw = codec.encode_hk(packet.sid, values, time.time())  # packet time = wall time
    tm = unpack(raw)
    recorder(Received(raw, tm, codec.decode_tm(tm)))
    os.write(side, f"{packet.sid} {tm.time_s!r}\n".encode())  # unbuffered: what is written survives the kill
    i += 1
    time.sleep(max(0.0, start + i / rate - time.time()))
"""


@pytest.mark.system
@pytest.mark.req("GND-009")
def test_kill_9_during_intake_loses_at_most_a_second(tmp_path):
    """A real child process ingests 20 HK packets/s through ArchiveRecorder and is killed by
    its pid with SIGKILL mid-ingest; the file reopens as it is, passes its check, and what was
    handed to the recorder but is missing is only the last moments, under a second of packet time."""
    path = tmp_path / "ground.sqlite"
    rate = 20.0
    child = subprocess.Popen([sys.executable, "-c", KILL9_CHILD, str(path), str(rate)], stdout=subprocess.PIPE,
                             cwd=ROOT, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        handed = []
        while len(handed) < 3.2 * rate:  # a little over 3 s: several commits and seals
            sid, t = child.stdout.readline().split()
            handed.append((int(sid), float(t)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        for line in child.stdout.read().splitlines():  # what it wrote before it died
            sid, t = line.split()
            handed.append((int(sid), float(t)))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with Archive(path, create=False) as archive:  # no repair step
        assert archive.check() == []
        assert archive.counts()["hk_sealed"] > 0  # it was killed among sealed chunks, not before any
        archived = set()
        for packet in DICTIONARY.packets:
            times = archive.query(packet.channels[0])[packet.channels[0]][0]
            archived |= {(packet.sid, t) for t in times.tolist()}
    missing = sorted((t, sid) for sid, t in set(handed) - archived)
    assert len(archived - set(handed)) <= 1  # at most one handed over but killed before it was logged
    if missing:
        assert missing[0][0] > max(t for _, t in archived)  # only the tail is lost, no holes
        lost_s = max(t for _, t in handed) - missing[0][0] + 1.0 / rate
        assert lost_s <= 1.0, f"{len(missing)} packets, {lost_s:.2f} s of packet time lost"


# --- the file, and schema 1 ------------------------------------------------------------------

# ground/archive.py's schema 1, as it wrote it (one row per sample), the part an upgrade reads.
V1_SCHEMA = (
    """CREATE TABLE packets (id INTEGER PRIMARY KEY, received_s REAL NOT NULL, apid INTEGER, seq_count INTEGER,
        service INTEGER, subtype INTEGER, time_s REAL, raw BLOB NOT NULL, valid INTEGER NOT NULL,
        error TEXT NOT NULL DEFAULT '')""",
    "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE samples (channel INTEGER NOT NULL, time_s REAL NOT NULL, packet INTEGER NOT NULL, value,
        PRIMARY KEY (channel, time_s, packet)) WITHOUT ROWID""",
    """CREATE TABLE events (id INTEGER PRIMARY KEY, packet INTEGER, time_s REAL NOT NULL, event_id INTEGER NOT NULL,
        name TEXT NOT NULL, severity INTEGER NOT NULL, text TEXT NOT NULL, args TEXT NOT NULL)""",
    """CREATE TABLE verifications (id INTEGER PRIMARY KEY, packet INTEGER, time_s REAL, received_s REAL,
        cmd_id INTEGER NOT NULL, opcode INTEGER NOT NULL, request_id INTEGER NOT NULL, stage TEXT NOT NULL,
        success INTEGER NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, result TEXT NOT NULL,
        UNIQUE (cmd_id, request_id, stage, success))""",
    """CREATE TABLE commands (cmd_id INTEGER PRIMARY KEY, name TEXT NOT NULL, opcode INTEGER, args TEXT, who TEXT,
        sent_s REAL, first_seen_s REAL NOT NULL, outcome TEXT)""",
    """CREATE TABLE gaps (id INTEGER PRIMARY KEY, packet INTEGER NOT NULL, received_s REAL NOT NULL, time_s REAL,
        apid INTEGER NOT NULL, seq_count INTEGER NOT NULL, missing INTEGER NOT NULL)""",
    "CREATE TABLE limit_overrides (channel TEXT PRIMARY KEY, limits TEXT NOT NULL, set_s REAL NOT NULL, who TEXT NOT NULL)",
    """CREATE TABLE alarm_acks (id INTEGER PRIMARY KEY, channel TEXT NOT NULL, acked_s REAL NOT NULL, who TEXT NOT NULL,
        state TEXT NOT NULL, value TEXT)""",
    "PRAGMA user_version = 1",
)


def test_a_schema_1_file_is_refused_with_the_way_to_convert_it(tmp_path, capsys):
    codec = Codec(DICTIONARY)
    old = tmp_path / "old.sqlite"
    raws = [codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i) for i in range(40)]
    raws.insert(5, codec.encode_event("PING_RECEIVED", {"token": 3}, T0_S + 5))
    raws.insert(9, b"\x00\x01garbage")
    with sqlite3.connect(old) as db:
        for statement in V1_SCHEMA:
            db.execute(statement)
        for k, raw in enumerate(raws):
            db.execute("INSERT INTO packets(received_s, raw, valid, error) VALUES (?, ?, ?, ?)",
                       (T0_S + k + 0.5, raw, int(k != 9), "" if k != 9 else "short"))
        db.execute("INSERT INTO gaps(packet, received_s, apid, seq_count, missing) VALUES (3, 0, 16, 2, 4)")
        db.execute("INSERT INTO commands VALUES (42, 'NOOP', 1, '{}', 'alice', ?, ?, 'completed')", (T0_S, T0_S))
        db.execute("INSERT INTO limit_overrides VALUES ('cpu_pct', '{\"warn_high\": 60.0}', 1.0, 'ops')")
        db.execute("INSERT INTO alarm_acks(channel, acked_s, who, state, value) VALUES ('cpu_pct', 2.0, 'ops', "
                   "'warning', '61.0')")
    with pytest.raises(ArchiveError, match=r"schema 1 .*sunlit-ground archive upgrade --db .*old.sqlite --out"):
        Archive(old)
    new = tmp_path / "new.sqlite"
    assert archive_cli("upgrade", "--db", str(old), "--out", str(new)) == 0
    assert archive_cli("upgrade", "--db", str(old), "--out", str(new)) == 2  # never over an existing file
    assert "exists" in capsys.readouterr().err
    with Archive(new, create=False) as archive:
        assert archive.check() == [] and archive.spacecraft() == [DEFAULT_SPACECRAFT]
        got = archive.query(["uptime_s", "mode"])
        assert got["uptime_s"][1].tolist() == [10.0 + i for i in range(40)]
        assert got["mode"][1].tolist() == [("SAFE", "IDLE", "COMPUTE")[i % 3] for i in range(40)]
        assert [e.args for e in archive.events()] == [{"token": 3}]
        assert archive.counts()["packets"] == len(raws) and archive.counts()["invalid_packets"] == 1
        assert archive.counts()["gaps"] == 1
        [cmd] = archive.commands()
        assert (cmd.cmd_id, cmd.who, cmd.outcome) == (42, "alice", "completed")
        assert archive.limits("cpu_pct") == Limits(warn_high=60.0) and archive.acks()[0].value == 61.0
        out = tmp_path / "again.hex"
        archive.export_raw(out)
        assert [bytes.fromhex(ln) for ln in out.read_text().splitlines() if not ln.startswith("#")] == raws


@pytest.mark.req("GND-025")
def test_an_upgrade_leaves_the_old_files_folder_as_it_was(tmp_path, capsys):
    """Found in audit: `archive upgrade` read --db with a read-only connection, which made a -wal and -shm beside a WAL
    file and left them (it cannot remove them): a schema-2 archive it refused, or the schema-1 file it converted, then
    had files beside it that stop a read-only copy being read as immutable. Refused or converted, nothing is added."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    Archive(v2 / "ground.sqlite").close()
    assert sorted(p.name for p in v2.iterdir()) == ["ground.sqlite"]
    before = (v2 / "ground.sqlite").read_bytes()
    assert archive_cli("upgrade", "--db", str(v2 / "ground.sqlite"), "--out", str(tmp_path / "new.sqlite")) == 2
    assert "has archive schema 2; upgrade converts schema 1 only" in capsys.readouterr().err
    assert sorted(p.name for p in v2.iterdir()) == ["ground.sqlite"]
    assert (v2 / "ground.sqlite").read_bytes() == before
    (v2 / "junk").write_bytes(b"x" * 200)
    assert archive_cli("upgrade", "--db", str(v2 / "junk"), "--out", str(tmp_path / "new.sqlite")) == 2
    assert "is not a usable archive" in capsys.readouterr().err
    v1 = tmp_path / "v1"
    v1.mkdir()
    codec = Codec(DICTIONARY)
    with contextlib.closing(sqlite3.connect(v1 / "old.sqlite")) as db:  # schema 1 in WAL, as the archive kept it
        db.execute("PRAGMA journal_mode = WAL")
        for statement in V1_SCHEMA:
            db.execute(statement)
        for i in range(5):
            db.execute("INSERT INTO packets(received_s, raw, valid) VALUES (?, ?, 1)",
                       (T0_S + i, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)))
        db.commit()
    before = (v1 / "old.sqlite").read_bytes()
    assert sorted(p.name for p in v1.iterdir()) == ["old.sqlite"]
    assert archive_cli("upgrade", "--db", str(v1 / "old.sqlite"), "--out", str(tmp_path / "new.sqlite")) == 0
    assert sorted(p.name for p in v1.iterdir()) == ["old.sqlite"]
    assert (v1 / "old.sqlite").read_bytes() == before
    with Archive(tmp_path / "new.sqlite", create=False) as archive:
        assert archive.counts()["packets"] == 5


# --- plots and pipes -------------------------------------------------------------------------


def test_plot_of_nothing_is_refused(archive, tmp_path, capsys):
    codec = Codec(DICTIONARY)
    for i in range(6):  # control_late_p99_ms is nil in packets 0 and 5
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    out = tmp_path / "p.png"
    with pytest.raises(ValueError, match="no data for control_late_p99_ms in 2026-11-16T12:00:00.000Z"):
        archive.plot(["cpu_pct", "control_late_p99_ms"], out, T0_S, T0_S)
    with pytest.raises(ValueError, match="no data for cpu_pct"):
        archive.plot("cpu_pct", out, T0_S + 100, T0_S + 200)
    with pytest.raises(ValueError, match="no data for battery_soc_pct"):
        archive.plot("battery_soc_pct", out)
    assert not out.exists()
    db = str(archive.path)
    assert archive_cli("plot", "control_late_p99_ms", "--out", str(out), "--db", db, "--to", str(T0_S)) == 1
    assert "no data for control_late_p99_ms" in capsys.readouterr().err and not out.exists()
    assert archive_cli("plot", "control_late_p99_ms", "--out", str(out), "--db", db) == 0 and out.exists()


@pytest.mark.req("GND-025")
@pytest.mark.parametrize("no_link", [errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS])
def test_an_output_goes_in_place_where_the_file_system_has_no_hard_links(tmp_path, monkeypatch, no_link):
    """FAT and some network file systems refuse hard links; a FUSE one without link answers ENOSYS (libfuse, passed
    on by 5.15 kernels: found in review, the output was lost). The file is then looked at and renamed."""
    from ground.cli_args import install_output, temp_beside

    def refuse(src, dst):
        raise OSError(no_link, os.strerror(no_link))

    monkeypatch.setattr(os, "link", refuse)
    final = tmp_path / "out.csv"
    written = temp_beside(final)
    written.write_text("a,b\n")
    install_output(written, final)
    assert final.read_text() == "a,b\n" and not written.exists()
    again = temp_beside(final)
    again.write_text("other")
    with pytest.raises(FileExistsError):
        install_output(again, final)
    assert final.read_text() == "a,b\n"


@pytest.mark.req("GND-025")
def test_an_export_or_plot_never_writes_over_an_existing_file_unless_forced(archive, tmp_path, capsys):
    """Found in audit: `archive export --csv hk.csv` (and --raw, and plot --out) replaced whatever hk.csv held,
    silently, exit 0: a file kept by hand, yesterday's export. Refused now, the file as it was; --force writes it."""
    codec = Codec(DICTIONARY)
    for i in range(6):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    (tmp_path / "out").mkdir()
    db = str(archive.path)
    for out, argv in ((tmp_path / "out" / "hk.csv", ("export", "--csv", "{out}", "cpu_pct")),
                      (tmp_path / "out" / "hk.hex", ("export", "--raw", "{out}")),
                      (tmp_path / "out" / "cpu.png", ("plot", "cpu_pct", "--out", "{out}"))):
        out.write_text("kept by hand")
        argv = [a.format(out=out) for a in argv] + ["--db", db]
        capsys.readouterr()
        assert archive_cli(*argv) == 2
        assert f"{out} exists: give another name, or --force to write over it" in capsys.readouterr().err
        assert out.read_text() == "kept by hand"
        assert archive_cli(*argv, "--force") == 0
        assert out.read_bytes() != b"kept by hand" and out.stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cpu.png", "hk.csv", "hk.hex"]  # no temporary


@pytest.mark.req("GND-025")
def test_an_empty_window_is_said_and_its_export_writes_no_file_that_blocks_the_one_meant(archive, tmp_path, capsys):
    """Found in audit: a window with nothing in it was exit 1 and not a word (query, events, commands), a command
    name in lower case (as the console takes it) found nothing, and an export of it left a file of headers ("0 rows
    written") so that the export of the window meant, run again, was refused as writing over it."""
    codec = Codec(DICTIONARY)
    for i in range(6):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    archive.record_command("NOOP", {}, 42, "alice", T0_S, "completed")
    db, out = str(archive.path), tmp_path / "hk.csv"
    later = ["--db", db, "--from", "2026-11-17T00:00:00Z"]
    capsys.readouterr()
    assert archive_cli("export", "--csv", str(out), "cpu_pct", *later) == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "no cpu_pct in" in err and "(--from 2026-11-17T00:00:00.000Z); " in err and "hk.csv not written" in err
    assert archive_cli("export", "--raw", str(tmp_path / "hk.hex"), *later) == 1 and not (tmp_path / "hk.hex").exists()
    assert archive_cli("export", "--csv", str(out), "cpu_pct", "--db", db) == 0  # the window meant: no --force
    assert len(out.read_text().splitlines()) == 7
    before = out.read_bytes()  # an empty window with --force leaves the file there as it was, and says so
    assert archive_cli("export", "--csv", str(out), "cpu_pct", "--force", *later) == 1 and out.read_bytes() == before
    assert "hk.csv not written (the one there, from before, left as it was)" in capsys.readouterr().err
    for argv, said in ((("query", "cpu_pct", "mode"), "no cpu_pct, mode in"),
                       (("events",), "no events at or above DIAGNOSTIC in"),
                       (("commands",), "no commands in")):
        capsys.readouterr()
        assert archive_cli(*argv, *later) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"sunlit-ground archive: {said}") and "widen --from/--to, or check --spacecraft" in err
    assert archive_cli("commands", "--name", "noop", "--db", db) == 0
    assert "alice      NOOP {} cmd_id=42: completed" in capsys.readouterr().out
    assert archive_cli("commands", "--name", "NOOOP", "--db", db) == 1
    assert "no commands named NOOOP (--name: unknown command 'NOOOP'; did you mean NOOP?)" in capsys.readouterr().err


@pytest.mark.system
def test_cli_output_piped_into_head_ends_quietly(tmp_path):
    db = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY)
    with Archive(db) as archive, archive.batch():  # ~200 kB of output: more than a pipe holds
        for i in range(3000):
            archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, T0_S + i)), T0_S + i)
            archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    cli = f"{shlex.quote(sys.executable)} -m ground.archive_cli"
    for command in (f"events --db {db}", f"query cpu_pct mode --db {db}"):
        proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cli} {command} | head -n 3"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", (command, proc.stderr)
        assert len(proc.stdout.splitlines()) == 3


@pytest.mark.req("GND-004", "GND-002")
def test_a_bound_an_operator_changes_leaves_the_others_following_their_parameters(tmp_path):
    """Found in review: an override was made from the limits in numbers, so changing crit_high of contact_age_s
    froze its warn_high at contact_timeout_s's value then, for every operator and across restarts."""
    from ground.alarms import AlarmManager, LimitStore
    from ground.archive import Archive

    for store in (lambda: Archive(tmp_path / "a.sqlite").limit_store(), lambda: LimitStore(tmp_path / "limits.json")):
        alarms = AlarmManager(DICTIONARY, store())
        alarms.set_limits("contact_age_s", crit_high=1e6)
        alarms.observe_parameters({"contact_timeout_s": 3600.0})
        assert (alarms.limits("contact_age_s").warn_high, alarms.limits("contact_age_s").crit_high) == (3600.0, 1e6)
        assert alarms.state("contact_age_s", 5000.0) == "warning"
        again = AlarmManager(DICTIONARY, store())  # kept across a restart, still following
        again.observe_parameters({"contact_timeout_s": 7200.0})
        assert (again.limits("contact_age_s").warn_high, again.limits("contact_age_s").crit_high) == (7200.0, 1e6)
    archive = Archive(tmp_path / "a.sqlite")
    limits = archive.limits("contact_age_s")  # the archive's own reading: the parameter's default, no report kept
    assert limits.crit_high == 1e6 and limits.warn_high == DICTIONARY.parameter_defaults["contact_timeout_s"]


@pytest.mark.req("GND-006", "GND-009")
def test_the_benchmarks_synthetic_housekeeping_is_whole_packets_of_the_dictionary_as_it_is():
    """bench.ground builds AGENT_HK packets of its own: a channel added to the dictionary since broke it (a
    TelemetryError, found running it). What it makes must encode as the packet now stands."""
    from bench.ground import _agent_hk

    items = _agent_hk(Codec(DICTIONARY), 2)
    assert len(items) == 2 and set(items[0].record.values) == set(DICTIONARY.packet_by_name["AGENT_HK"].channels)


@pytest.mark.req("GND-025")
def test_a_time_out_of_range_is_refused_naming_its_flag_never_a_traceback(archive, tmp_path, capsys):
    """Milliseconds given as seconds once said only "year 58846 is out of range", and 1e20 gave an OverflowError
    traceback as the empty window was said."""
    codec = Codec(DICTIONARY)
    archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(0), T0_S)), T0_S)
    db = str(archive.path)
    for flag, value in (("--from", "1794830400000"), ("--from", "99999999999999999999"), ("--to", "-1e15")):
        with pytest.raises(SystemExit) as refused:
            archive_cli("query", "cpu_pct", "--db", db, f"{flag}={value}")
        err = capsys.readouterr().err
        assert refused.value.code == 2 and f"argument {flag}: time {value!r} is out of range" in err, err
        assert "milliseconds given as seconds?" in err and "Traceback" not in err
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time_s("1e20")
    assert parse_time_s("-1") == -1.0 and parse_time_s("253402300799") == 253402300799.0  # 9999-12-31T23:59:59Z
    for text in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):  # ISO, its offset past the range
        with pytest.raises(argparse.ArgumentTypeError, match="is out of range in UTC: from year 1 to 9999"):
            parse_time_s(text)
    assert parse_time_s("9999-12-31T23:59:59Z") == 253402300799.0


@pytest.mark.req("GND-006", "GND-025")
def test_query_stats_are_of_every_value_never_of_a_decimated_overview(archive, capsys):
    """Found in audit: `query --stats --max-points 2` gave the statistics of the two decimated points (count 2 of 200
    values, their mean, a last time 2 min 30 s early) as the window's, exit 0; the two together are refused, exit 2."""
    codec = Codec(DICTIONARY)
    for i in range(200):
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)), T0_S + i)
    db = str(archive.path)
    capsys.readouterr()
    assert archive_cli("query", "cpu_pct", "--stats", "--max-points", "2", "--db", db) == 2
    out, err = capsys.readouterr()
    assert not out and err == ("sunlit-ground archive: --stats counts every value in the window: give --stats or "
                               "--max-points, not both\n")
    assert archive_cli("query", "cpu_pct", "--stats", "--db", db) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["count"] == 200 and stats["last"] == utc_iso(T0_S + 199)


@pytest.mark.req("GND-025")
def test_the_agents_text_in_query_and_events_is_printed_printable(archive, capsys):
    """An escape or a line break in the agent's text (an event's argument, a power mode's name from the board)
    reached the operator's terminal through `archive events` and `archive query`, which `sunlit-ground events`
    already prints printable."""
    codec = Codec(DICTIONARY)
    archive.record(decoded(codec, codec.encode_event("COMMAND_REJECTED", {"name": "X\x1b[2J\nFORGED", "reason": "r"},
                                                     T0_S)), T0_S)
    values = hk_values(POWER_HK, 1)
    values["power_mode"] = "MAXN\x1b[31m\nFORGED"
    archive.record(decoded(codec, codec.encode_hk(POWER_HK.sid, values, T0_S)), T0_S)
    db = str(archive.path)
    capsys.readouterr()
    assert archive_cli("events", "--db", db) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "2026-11-16T12:00:00.000Z  WARNING_LO  COMMAND_REJECTED: Command X?[2J?FORGED refused: r"]
    assert archive_cli("query", "power_mode", "--db", db) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["2026-11-16T12:00:00.000Z                power_mode = MAXN?[31m?FORGED"]
    assert archive_cli("query", "power_mode", "--stats", "--db", db) == 0  # JSON: escaped already
    assert "\x1b" not in capsys.readouterr().out


@pytest.mark.req("GND-025")
def test_an_output_that_cannot_be_written_is_named_as_given_not_as_its_temporary_file(archive, tmp_path, capsys):
    """A folder the export cannot write in once named the hidden temporary file beside the output (a disk full, no
    file at all); and `--csv ''` was told it had given --raw."""
    codec = Codec(DICTIONARY)
    archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(0), T0_S)), T0_S)
    db = str(archive.path)
    for argv, out in ((("export", "--csv", "/proc/sunlit.csv", "cpu_pct"), "/proc/sunlit.csv"),
                      (("export", "--raw", "/proc/sunlit.hex"), "/proc/sunlit.hex"),
                      (("plot", "cpu_pct", "--out", "/proc/sunlit.png"), "/proc/sunlit.png")):
        capsys.readouterr()
        assert archive_cli(*argv, "--db", db) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"sunlit-ground archive: {out}: ") and ".part" not in err, err
    assert archive_cli("export", "--csv", "", "cpu_pct", "--db", db) == 2
    err = capsys.readouterr().err
    assert "--raw" not in err and "a folder; give the name of the file to write" in err, err


@pytest.mark.req("GND-025")
def test_the_agents_text_in_commands_and_files_is_printed_printable(archive, capsys):
    """A command's failure reason and a file transfer's outcome quote the agent (its PUS 1 report, its FILE_FAILED):
    an escape or a line break in them reached the operator's terminal through `archive commands` and `archive files`
    and forged a line, which `archive events` already prints printable."""
    codec = Codec(DICTIONARY)
    archive.record_command("NOOP", {}, 42, "alice", T0_S)
    failed = Verification(Stage.STARTED, False, 7, 42, DICTIONARY.command_by_name["NOOP"].opcode,
                          FailureCode.BAD_ARGUMENTS, "bad\x1b[2J\nFORGED")
    archive.record(decoded(codec, codec.encode_verification(failed, T0_S + 1)), T0_S + 1)
    archive.record_file_transfer({"id": "out-1", "requested_s": T0_S, "direction": "up", "who": "alice",
                                  "remote": "data/a.bin", "local": "a.bin", "state": "failed",
                                  "reason": "the agent says: no\x1b[31m\nFORGED"})
    db = str(archive.path)
    capsys.readouterr()
    assert archive_cli("commands", "--db", db) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-16T12:00:00.000Z  alice      NOOP {} cmd_id=42: failed at started: BAD_ARGUMENTS bad?[2J?FORGED"]
    assert archive_cli("files", "--db", db) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-16T12:00:00.000Z  out-1      alice      up   a.bin -> data/a.bin  ?  failed: the agent says: "
        "no?[31m?FORGED"]


@pytest.mark.req("GND-006")
def test_export_and_query_read_a_window_a_page_at_a_time_and_give_what_one_read_gives(small_chunks, tmp_path,
                                                                                      capsys, monkeypatch):
    """`archive export --csv` and `archive query` read the whole window before writing a line (found in audit:
    memory grew with the window, gigabytes for a year of a few channels); they go a page at a time now, and a time
    split between two pages (two packets of one time, two SIDs at one time) is still one CSV row, its lines in
    order, as one read of the whole window gives them."""
    codec = Codec(DICTIONARY)
    archive = small_chunks
    for i in range(90):  # two AGENT_HK packets at each time, POWER_HK at the same times: pages end inside a time
        t = T0_S + i // 2
        archive.record(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), t)), t)
        if i % 2:
            archive.record(decoded(codec, codec.encode_hk(POWER_HK.sid, hk_values(POWER_HK, i), t)), t)
    assert archive.counts()["hk_unsealed"]  # sealed and unsealed both in the window
    names = ["mode", "battery_soc_pct", "cpu_pct"]
    whole = archive.query(names)
    archive.export_csv(names, tmp_path / "one.csv", page_samples=10**6)
    for page_samples in (3, 5, 8):
        assert archive.export_csv(names, tmp_path / "paged.csv", page_samples=page_samples) == 45
        assert (tmp_path / "paged.csv").read_text() == (tmp_path / "one.csv").read_text()
    rows = list(csv.DictReader((tmp_path / "one.csv").open()))
    assert len(rows) == 45 and rows[-1]["cpu_pct"] == str(whole["cpu_pct"][1][-1])  # the later packet's value

    want = sorted(((t, k, name, v) for k, name in enumerate(names)
                   for t, v in zip(whole[name][0].tolist(), whole[name][1].tolist())), key=lambda r: (r[0], r[1]))
    db = str(archive.path)
    for page_samples in (3, 7, PAGE_SAMPLES):
        monkeypatch.setattr("ground.archive_cli.PAGE_SAMPLES", page_samples)
        capsys.readouterr()
        assert archive_cli("query", *names, "--db", db) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines == [f"{utc_iso(t)}  {name:>24} = {'' if v is None or v != v else v} "
                         f"{DICTIONARY.channel_by_name[name].unit}".rstrip() for t, _k, name, v in want]
        assert archive_cli("query", *names, "--stats", "--db", db) == 0
        stats = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [s["count"] for s in stats] == [len(whole[name][0]) for name in names]
        assert stats[2]["min"] == float(np.nanmin(whole["cpu_pct"][1])) and stats[2]["max"] == float(
            np.nanmax(whole["cpu_pct"][1]))
        assert stats[2]["mean"] == pytest.approx(float(np.nanmean(whole["cpu_pct"][1])))
        assert stats[0]["first"] == utc_iso(T0_S) and stats[0]["last"] == utc_iso(T0_S + 44) and "min" not in stats[0]


@pytest.mark.req("GND-010")
def test_the_listings_read_a_page_at_a_time_and_print_what_one_read_prints(archive, capsys, monkeypatch):
    """Found in audit: `archive events|commands|passes|files` without --limit read the whole window into a list before
    printing a line (events keep up to 256 MB: 1.7 GB of memory for two million events). They read a page at a time
    now, each page as the file is when it is read, and print what one read of the window printed: lines at one time
    split between pages (events of several severities, commands, transfers, one pass's APIDs) in order, once."""
    from ground.completeness import PassCounts, PassReport

    codec = Codec(DICTIONARY)
    with archive.batch():
        for i in range(23):  # three at each time, of severities merged from three index ranges
            t = T0_S + i // 3
            name = ("PING_RECEIVED", "MODE_CHANGED", "SAFE_ENTERED")[i % 3]
            args = {"token": i} if name == "PING_RECEIVED" else {"reason": f"r{i}"} | (
                {"old": "IDLE", "new": "SAFE"} if name == "MODE_CHANGED" else {})
            archive.record(decoded(codec, codec.encode_event(name, args, t)), t)
    for i in range(11):
        archive.record_command("NOOP", {"i": i}, 100 + i, "alice", T0_S + i // 3)
        archive.record_file_transfer({"id": f"out-{i}", "requested_s": T0_S + i // 4, "direction": "up",
                                      "who": "alice", "remote": f"data/{i}.bin", "local": f"{i}.bin", "state": "done"})
    archive.record_passes([PassReport(1, T0_S + 600 * k, T0_S + 600 * k + 300, None, None, False,
                                      ((0x10, PassCounts(k)), (0x11, PassCounts(1, k)))) for k in range(7)])
    db = str(archive.path)
    listings = ("events", "commands", "passes", "files")
    whole = {}
    for what in listings:  # one read of the whole window: --limit
        assert archive_cli(what, "--db", db, "--limit", "1000") == 0
        whole[what] = capsys.readouterr().out
    assert len(whole["events"].splitlines()) == 23 and len(whole["passes"].splitlines()) == 1 + 7 * 3
    for page in (1, 2, 4, 5000):
        monkeypatch.setattr("ground.archive.LIST_PAGE", page)
        for what in listings:
            assert archive_cli(what, "--db", db) == 0
            assert capsys.readouterr().out == whole[what], (what, page)
        window = ("events", "--db", db, "--severity", "ACTIVITY_HI", "--from", str(T0_S + 1), "--to", str(T0_S + 5))
        assert archive_cli(*window) == 0
        paged = capsys.readouterr().out
        assert archive_cli(*window, "--limit", "1000") == 0
        assert paged == capsys.readouterr().out and len(paged.splitlines()) == 10
    monkeypatch.setattr("ground.archive.LIST_PAGE", 2)
    listing = archive.iter_events()  # read as it is taken: a page, not the whole window, read at a time
    first = [next(listing).args for _ in range(2)]
    archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 99}, T0_S + 100)), T0_S + 100)
    assert first[0] == {"token": 0} and first[1]["reason"] == "r1" and [e.args for e in listing][-1] == {"token": 99}
    assert [c.cmd_id for c in archive.iter_commands(name="NOOP")] == list(range(100, 111))
    assert list(archive.iter_commands(spacecraft="sunlit-9")) == [] and list(archive.iter_passes(to_s=T0_S - 1)) == []
    assert [t.ref for t in archive.iter_file_transfers(T0_S + 1, T0_S + 1)] == [f"out-{i}" for i in range(4, 8)]
    for what in listings:  # nothing in the window: said, exit 1
        assert archive_cli(what, "--db", db, "--from", str(T0_S + 10**6)) == 1
        assert capsys.readouterr().out == ""


@pytest.mark.req("GND-010")
def test_archive_events_prints_as_it_reads_while_the_archive_is_written(archive):
    """The same, through a real `sunlit-ground archive events` process: its output blocks in a pipe inside its first
    page (a page is far more than a pipe holds), an event is recorded meanwhile (WAL: the reader is not in the writer's
    way), and the listing, read on, ends with it. Read whole before printing (as it was), it never showed."""
    from ground.archive import LIST_PAGE

    codec = Codec(DICTIONARY)
    with archive.batch():
        for i in range(LIST_PAGE + 10):
            t = T0_S + i / 8
            archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": i}, t)), t)
    child = subprocess.Popen([sys.executable, "-m", "ground.archive_cli", "events", "--db", str(archive.path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert child.stdout.readline().endswith("PING_RECEIVED: Ping 0\n")
        t = T0_S + 10_000
        archive.record(decoded(codec, codec.encode_event("PING_RECEIVED", {"token": 99999}, t)), t)
        rest = child.stdout.read().splitlines()
        assert child.wait(timeout=60) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert len(rest) == LIST_PAGE + 10 and rest[-1].endswith("PING_RECEIVED: Ping 99999")


@pytest.mark.system
def test_the_benchmarks_server_runs_leave_nothing_in_tmp(monkeypatch):
    """bench._ingest makes a folder in /tmp per run (its archive, users and Unix sockets: short paths); each
    was left there after the run, one per ``make bench`` of bench.ground and rate tried (found in audit)."""
    import tempfile

    from bench import _ingest

    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(Path(real_mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(_ingest.tempfile, "mkdtemp", mkdtemp)
    out = _ingest.kill9_server(ingest_s=1.5)
    assert out["kill9_server_check"] == "ok" and out["kill9_server_hk_packets"] > 0, out
    run = _ingest.run_rate(2000.0, duration_s=0.2)
    assert run["offered_points_per_s"] == 2000.0
    assert len(made) == 2 and not any(path.exists() for path in made), made
