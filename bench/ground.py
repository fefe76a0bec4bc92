"""Ground archive and console figures. Prints one JSON object as its last line.

- ``archive_insert_per_s``: AGENT_HK packets per second through ``Archive.record()`` in batches
  of 500 (the recorder's default), a day of them (``BENCH_GROUND_N`` packets, 1 Hz packet
  times); packets from ``Codec.encode_hk`` with values of the types the agent sends, decoded
  as the client decodes them before the archive sees them (decoding is not timed).
- ``archive_insert_commit_each_per_s``: the same through ``record()`` outside a batch, one
  commit per packet (``BENCH_GROUND_N_COMMIT`` packets): what a caller without a recorder gets.
- ``archive_query_day_ms``: ``query()`` of one channel over the whole day (86 400 points at
  the default N), median of 7 (``archive_query_day_first_ms``: the first of them).
- ``archive_bytes_per_hk_packet``: file size over packets stored (raw bytes plus one sample
  row per channel): what a day of housekeeping costs on disk.
- ``web_push_lag_ms_p99``: from ``ground.web.benchlag.measure_push_lag_ms_p99`` when the web
  console is present; null with a note when it is not.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from flight.link.packets import unpack
from ground.archive import Archive
from ground.client import Received

N = int(os.environ.get("BENCH_GROUND_N", "86400"))
N_COMMIT = int(os.environ.get("BENCH_GROUND_N_COMMIT", "3000"))
BATCH = 500
T0_S = 1_794_830_400.0  # 2026-11-16T12:00:00Z
AGENT_HK = DICTIONARY.packet_by_name["AGENT_HK"]


def _agent_hk(codec: Codec, n: int, seed: int = 1) -> list[Received]:
    """``n`` AGENT_HK packets at 1 Hz as the client hands them to its listeners."""
    rng = np.random.default_rng(seed)
    cpu = rng.uniform(5.0, 95.0, n)
    late = rng.gamma(2.0, 0.4, n)
    out = []
    for i in range(n):
        values = {
            "mode": "IDLE", "boot_count": 12, "uptime_s": 3600.0 + i, "dict_hash": DICTIONARY.version_hash,
            "cmd_accepted": i // 60, "cmd_rejected": 0, "cmd_executed": i // 60, "cmd_failed": 0,
            "internal_errors": 0, "tc_received": i // 60, "tc_bad_packets": 0, "tc_duplicates": 0,
            "tm_sent": 4 * i, "tm_dropped": 0, "link_kind": "ZMQ", "contact_age_s": float(i % 60),
            "cpu_pct": float(cpu[i]), "mem_pct": 41.3, "hal_backend": "jetson", "sensors_missing": 0,
            "control_late_p99_ms": float(late[i]),
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
                with archive.batch():
                    for i in range(start, min(start + BATCH, N)):
                        archive.record(items[i], T0_S + i + 0.05)
            out["archive_insert_per_s"] = round(N / (time.perf_counter() - t0))

            runs = []
            for _ in range(7):
                t0 = time.perf_counter()
                times, values = archive.query("cpu_pct", T0_S, T0_S + N - 1)["cpu_pct"]
                runs.append((time.perf_counter() - t0) * 1000.0)
                assert len(times) == N and values.dtype == float
            out["archive_query_day_ms"] = round(statistics.median(runs), 1)
            out["archive_query_day_first_ms"] = round(runs[0], 1)
            out["archive_query_day_points"] = N
        out["archive_bytes_per_hk_packet"] = round(
            sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.startswith("ground.sqlite")) / N)

        with Archive(Path(tmp) / "each.sqlite") as archive:
            t0 = time.perf_counter()
            for i in range(N_COMMIT):
                archive.record(items[i], T0_S + i)
            out["archive_insert_commit_each_per_s"] = round(N_COMMIT / (time.perf_counter() - t0))

    lag, note = _web_push_lag()
    out["web_push_lag_ms_p99"] = lag
    if note:
        out["web_push_lag_note"] = note
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
