"""Ground archive and console figures. Prints one JSON object as its last line.

The archive figures use a day (``BENCH_GROUND_N`` packets, default 86 400) of AGENT_HK at 1 Hz
packet time: packets from ``Codec.encode_hk`` with values of the types the agent sends, decoded
as the client decodes them before the archive sees them (decoding is not timed).

- ``archive_insert_per_s``: AGENT_HK packets per second through ``Archive.record()`` in batches
  of 500 (the recorder's default), each batch followed by ``Archive.seal()`` as the recorder
  does (the ground clock taken as the packet time): sealing is timed too.
- ``archive_insert_commit_each_per_s``: the same through ``record()`` outside a batch, one
  commit per packet (``BENCH_GROUND_N_COMMIT`` packets): what a caller without a recorder gets.
- ``archive_query_day_ms``: ``query()`` of one channel over the whole day at full resolution
  (86 400 points at the default N), median of 7 (``archive_query_day_first_ms``: the first).
- ``archive_query_day_decimated_ms``: the same with ``max_points=2000`` (min/max decimation),
  median of 7; ``archive_query_day_decimated_points``: how many came back.
- ``archive_bytes_per_hk_packet``: the file's size (with its ``-wal``/``-shm`` if any; closing
  checkpoints the WAL into the file) over the packets stored, after the day went in as above:
  the last partial chunk is still unsealed. ``archive_bytes_per_hk_packet_sealed``: the same
  after ``seal(force=True)``.
- ``kill9_archive_lost_s``, ``kill9_archive_check``: a child process (``--kill9-child``, this
  module) takes in HK packets at ``KILL9_RATE`` (20) packets/s, cycling through the dictionary's
  HK packets (seven), packet time = wall time, through ``ArchiveRecorder`` with its defaults (a commit
  at least every 0.5 s, sealing after each flush) into an archive sealing every
  ``KILL9_CHUNK_PACKETS`` (2) packets of a kind (so seals happen all through the run: at 16, about
  eleven packets of each kind in 4 s sealed nothing, and the check said nothing of a kill during a
  seal; found in audit). ``kill9_archive_hk_sealed``: the chunks sealed when it was killed. It writes
  to a pipe the packet time of each packet once ``recorder(item)`` returned. After
  ``KILL9_AFTER_S`` (4) seconds it is killed with SIGKILL by its pid. The archive is then
  reopened as it is (no repair step) and ``Archive.check()`` run ("ok", or its problems);
  ``kill9_archive_lost_s`` is the packet time from the first packet handed to the recorder but
  missing from the archive to the last one handed, plus one packet interval (0 if none is
  missing); ``kill9_archive_missing``: how many; ``kill9_archive_holes``: missing packets
  older than the newest archived one (should be 0: only the tail may be lost). This is the
  recorder's path in a child process, not the full server: no link, no web, no client.
- ``web_push_lag_ms_p99``: push lag (server receipt → painted in a real headless Chromium page),
  p99 over five logged-in pages at 10 000 samples/s, through the ground server
  (``ground.web.benchlag.measure_push_lag``; ``web_push_lag_points_dropped``: what pages lost);
  ``web_push_lag_1page_1000_ms_p99``: one page at 1000 samples/s, the figure kept from before.
- ``kill9_server_lost_s``, ``kill9_server_check``: the same question for the real ``sunlit-ground
  server`` (a subprocess on a synthetic source's link, 20 HK packets/s, packet time = wall time),
  killed with SIGKILL during ingest: the seconds from the kill back to the newest packet time in
  the reopened archive (the link's own latency included), and ``Archive.check()``
  (``bench/_ingest.py``).
- ``ingest_samples_per_s``: agent link → ground server (decode, alarms) → archive → one
  logged-in WebSocket client, end to end, at the highest offered rate with nothing lost
  (``bench/_ingest.py`` says how; ``ingest_runs``: every rate tried).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ValueType
from flight.link.messages import Codec
from flight.link.packets import unpack
from ground.archive import Archive, ArchiveRecorder
from ground.client import Received

N = int(os.environ.get("BENCH_GROUND_N", "86400"))
N_COMMIT = int(os.environ.get("BENCH_GROUND_N_COMMIT", "3000"))
BATCH = 500
T0_S = 1_794_830_400.0  # 2026-11-16T12:00:00Z
AGENT_HK = DICTIONARY.packet_by_name["AGENT_HK"]
KILL9_RATE = 20.0
KILL9_AFTER_S = 4.0
KILL9_CHUNK_PACKETS = 2  # per packet kind: seals within the 4 s run (at 16, none)
ROOT = Path(__file__).resolve().parent.parent


def _agent_hk(codec: Codec, n: int, seed: int = 1) -> list[Received]:
    """``n`` AGENT_HK packets at 1 Hz as the client hands them to its listeners."""
    rng = np.random.default_rng(seed)
    cpu = rng.uniform(5.0, 95.0, n)
    late = rng.gamma(2.0, 0.4, n)
    out = []
    for i in range(n):
        values = {
            **_hk_values(AGENT_HK, i),  # every channel the packet has (found: a channel added since broke this bench)
            "mode": "IDLE", "boot_count": 12, "uptime_s": 3600.0 + i, "dict_hash": DICTIONARY.version_hash,
            "cmd_accepted": i // 60, "cmd_rejected": 0, "cmd_executed": i // 60, "cmd_failed": 0,
            "internal_errors": 0, "tc_received": i // 60, "tc_bad_packets": 0, "tc_duplicates": 0,
            "tm_sent": 4 * i, "tm_dropped": 0, "link_kind": "ZMQ", "contact_age_s": float(i % 60),
            "cpu_pct": float(cpu[i]), "mem_pct": 41.3, "hal_backend": "jetson", "sensors_missing": 0,
            "control_late_p99_ms": float(late[i]), "tc_auth": "HMAC-SHA256", "tc_auth_rejected": 0, "tc_keys_active": 1, "zmq_auth_refused": 0,
        }
        raw = codec.encode_hk(AGENT_HK.sid, values, T0_S + i)
        packet = unpack(raw)
        out.append(Received(raw, packet, codec.decode_tm(packet)))
    return out


def _web_push_lag() -> tuple[float | None, str]:
    try:
        from ground.web.benchlag import measure_push_lag_ms_p99
    except ImportError as exc:
        return None, f"ground.web.benchlag not available ({exc})"
    try:
        return float(measure_push_lag_ms_p99()), ""
    except Exception as exc:  # noqa: BLE001 - another module's failure is reported, not fatal here
        return None, f"measure_push_lag_ms_p99 failed: {type(exc).__name__}: {exc}"


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def _median_ms(run: Any, times: int = 7) -> tuple[float, float]:
    runs = []
    for _ in range(times):
        t0 = time.perf_counter()
        run()
        runs.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(runs), 1), round(runs[0], 1)


# --- kill -9 -----------------------------------------------------------------------------------


def _hk_values(packet: Any, i: int) -> dict[str, Any]:
    """Values of the types the agent sends for any HK packet (text and enums nil: allowed)."""
    out: dict[str, Any] = {}
    for name in packet.channels:
        t = DICTIONARY.channel_by_name[name].type
        if t in (ValueType.STRING, ValueType.ENUM, ValueType.BYTES):
            out[name] = None
        elif t is ValueType.BOOL:
            out[name] = i % 2 == 0
        elif t in (ValueType.F32, ValueType.F64):
            out[name] = float(i)
        else:
            out[name] = i % 200
    return out


def kill9_child(db: str, rate: float) -> None:
    """Take in HK packets at ``rate`` per second through ArchiveRecorder until killed; write
    ``SID packet_time`` to stdout (unbuffered) for each packet once the recorder has it."""
    codec = Codec(DICTIONARY)
    archive = Archive(db, chunk_packets=KILL9_CHUNK_PACKETS)
    recorder = ArchiveRecorder(archive)
    side = sys.stdout.fileno()
    os.write(side, b"ready\n")
    start, i = time.time(), 0
    while True:
        packet = DICTIONARY.packets[i % len(DICTIONARY.packets)]
        raw = codec.encode_hk(packet.sid, _hk_values(packet, i), time.time())
        tm = unpack(raw)
        recorder(Received(raw, tm, codec.decode_tm(tm)))
        os.write(side, f"{packet.sid} {tm.time_s!r}\n".encode())
        i += 1
        time.sleep(max(0.0, start + i / rate - time.time()))


def kill9(tmp: Path) -> dict[str, Any]:
    path = tmp / "kill9.sqlite"
    child = subprocess.Popen([sys.executable, "-m", "bench.ground", "--kill9-child", str(path), str(KILL9_RATE)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    handed: list[tuple[int, float]] = []
    try:
        if child.stdout.readline() != "ready\n":
            raise RuntimeError("the ingest child did not start")
        deadline = time.monotonic() + KILL9_AFTER_S
        while time.monotonic() < deadline:
            sid, t = child.stdout.readline().split()
            handed.append((int(sid), float(t)))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        for line in child.stdout.read().splitlines():
            sid, t = line.split()
            handed.append((int(sid), float(t)))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    with Archive(path, create=False) as archive:
        problems = archive.check()
        sealed = archive.counts()["hk_sealed"]
        archived: set[tuple[int, float]] = set()
        for packet in DICTIONARY.packets:
            times = archive.query(packet.channels[0])[packet.channels[0]][0]
            archived |= {(packet.sid, t) for t in times.tolist()}
    missing = sorted(t for sid, t in set(handed) - archived)
    newest_archived = max((t for _, t in archived), default=-np.inf)
    lost_s = (max(t for _, t in handed) - missing[0] + 1.0 / KILL9_RATE) if missing else 0.0
    return {"kill9_archive_lost_s": round(lost_s, 3), "kill9_archive_check": "ok" if not problems else "; ".join(problems),
            "kill9_archive_handed": len(handed), "kill9_archive_missing": len(missing),
            "kill9_archive_holes": sum(t < newest_archived for t in missing), "kill9_archive_hk_sealed": sealed}


# --- main --------------------------------------------------------------------------------------


def main() -> dict[str, Any]:
    codec = Codec(DICTIONARY)
    items = _agent_hk(codec, N)
    out: dict[str, Any] = {"hk_packet": AGENT_HK.name, "hk_channels": len(AGENT_HK.channels),
                           "hk_packet_bytes": len(items[0].raw), "n_packets": N}
    with tempfile.TemporaryDirectory(prefix="bench-ground-") as tmp:
        path = Path(tmp) / "ground.sqlite"
        with Archive(path) as archive:
            t0 = time.perf_counter()
            for start in range(0, N, BATCH):
                end = min(start + BATCH, N)
                with archive.batch():
                    for i in range(start, end):
                        archive.record(items[i], T0_S + i + 0.05)
                archive.seal(now_s=T0_S + end)
            out["archive_insert_per_s"] = round(N / (time.perf_counter() - t0))

            def full() -> None:
                times, values = archive.query("cpu_pct", T0_S, T0_S + N - 1)["cpu_pct"]
                assert len(times) == N and values.dtype == float

            def decimated() -> None:
                times, _ = archive.query("cpu_pct", T0_S, T0_S + N - 1, max_points=2000)["cpu_pct"]
                out["archive_query_day_decimated_points"] = len(times)

            out["archive_query_day_ms"], out["archive_query_day_first_ms"] = _median_ms(full)
            out["archive_query_day_points"] = N
            out["archive_query_day_decimated_ms"], _ = _median_ms(decimated)
        out["archive_bytes_per_hk_packet"] = round(_file_bytes(path) / N, 1)
        with Archive(path) as archive:
            archive.seal(force=True)
        out["archive_bytes_per_hk_packet_sealed"] = round(_file_bytes(path) / N, 1)

        with Archive(Path(tmp) / "each.sqlite") as archive:
            t0 = time.perf_counter()
            for i in range(N_COMMIT):
                archive.record(items[i], T0_S + i)
            out["archive_insert_commit_each_per_s"] = round(N_COMMIT / (time.perf_counter() - t0))

        out.update(kill9(Path(tmp)))

    from bench._ingest import kill9_server, measure as measure_ingest

    out.update(kill9_server())
    out.update(measure_ingest())
    from ground.web.benchlag import measure_push_lag

    five = measure_push_lag(points_per_s=10_000.0, pages=5)
    out["web_push_lag_ms_p99"] = five["web_push_lag_ms_p99"]
    out["web_push_lag_points_dropped"] = five.get("points_dropped")
    lag, note = _web_push_lag()
    out["web_push_lag_1page_1000_ms_p99"] = lag
    if note:
        out["web_push_lag_note"] = note
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--kill9-child":
        kill9_child(sys.argv[2], float(sys.argv[3]))
    else:
        print(json.dumps(main()))
