"""End-to-end intake of the ground server, for ``bench.ground``: ``ingest_samples_per_s``.

Set-up, all real: a synthetic source publishes the dictionary's four housekeeping packets in
turn on a real flight link (ZeroMQ over a Unix socket, the agent's own link code) at an
offered rate; a :class:`~ground.server.GroundServer` takes them in through its
SpacecraftLink (decode, latest values, alarms), records each packet in its archive (SQLite,
through the recorder) and pushes them to one logged-in WebSocket client that speaks the web
page's protocol (a Python client here: the browser's own drawing time is what
``web_push_lag_ms_p99`` measures).

A *sample* is one channel value. ``ingest_samples_per_s`` is the samples that reached both
the archive and the client over the run's wall time, at the highest offered rate (of
``RATES``) at which neither the server's page queue nor the link lost any; the figures at
every rate tried are reported too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flight.link.definitions import DICTIONARY
from ground.auth import Role, UserStore
from ground.server import GroundServer, quick_config

RATES = (50_000.0, 100_000.0)


def _client(server: GroundServer, token: str, counts: dict[str, int], stop: threading.Event) -> threading.Thread:
    from websockets.sync.client import connect

    def run() -> None:
        with connect(server.url.replace("http", "ws") + "ws", additional_headers={"Authorization": f"Bearer {token}"},
                     open_timeout=10, max_size=1 << 26) as ws:
            counts["connected"] = 1
            while not stop.is_set():
                try:
                    message = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                counts["points"] += sum(len(row[3]) for row in message.get("hk", []))
                counts["dropped"] += (message.get("dropped") or {}).get("points", 0)

    thread = threading.Thread(target=run, name="ingest-client", daemon=True)
    thread.start()
    return thread


def run_rate(points_per_s: float, duration_s: float = 6.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sl-ing-", dir="/tmp"))  # short: Unix socket paths
    try:
        return _run_rate(tmp, points_per_s, duration_s)
    finally:  # the archive, the users and the sockets (found in audit: every run left its folder in /tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _run_rate(tmp: Path, points_per_s: float, duration_s: float) -> dict[str, Any]:
    from ground.web.benchlag import SyntheticTelemetry

    url = f"zmq+ipc://{tmp}/link"
    users = UserStore(tmp / "users.toml")
    users.set("bench", Role.VIEWER, "bench-password")
    users.save()
    server = GroundServer(quick_config(url, port=0, archive=tmp / "ground.sqlite", users=tmp / "users.toml"),
                          UserStore.load(tmp / "users.toml"), connect_timeout_s=0).start()
    counts = {"points": 0, "dropped": 0, "connected": 0}
    stop = threading.Event()
    try:
        token = server.sessions.login("bench", "bench-password")[0]
        reader = _client(server, token, counts, stop)
        deadline = time.monotonic() + 10
        while not counts["connected"] and time.monotonic() < deadline:
            time.sleep(0.01)
        source = SyntheticTelemetry(url, points_per_s).start()
        time.sleep(1.0)  # the subscription joins; what came before is not counted
        link = server.links["sunlit-1"]
        start_points, start_packets = counts["points"], link.packets
        t0 = time.perf_counter()
        time.sleep(duration_s)
        source.stop()
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)  # what is in flight arrives
        delivered = counts["points"] - start_points
        taken = link.packets - start_packets
        link.recorder.flush()
        counts_now = server.archive.counts()
        archived_packets = counts_now["hk_sealed"] + counts_now["hk_unsealed"]
        stop.set()
        reader.join(5)
    finally:
        stop.set()
        server.stop()
    sizes = [len(p.channels) for p in DICTIONARY.packets]
    per_packet = sum(sizes) / len(sizes)
    archived_points = None if archived_packets is None else archived_packets * per_packet
    return {
        "offered_points_per_s": points_per_s,
        "published_points": source.published_points,
        "delivered_points_per_s": round(delivered / elapsed),
        "taken_packets_per_s": round(taken / elapsed),
        "archived_points": None if archived_points is None else round(archived_points),
        # Every packet the server took in (the link's first ~0.1 s, before its subscription
        # joined, never reaches it) should be in the archive.
        "archive_missing_packets": link.packets - archived_packets,
        "client_dropped_points": counts["dropped"],
        "source_dropped_packets": source.dropped_packets,
        "recorder_dropped": link.recorder.statistics().dropped if link.recorder else None,
    }


def measure(rates: tuple[float, ...] = RATES, duration_s: float = 6.0) -> dict[str, Any]:
    runs = [run_rate(rate, duration_s) for rate in rates]
    lossless = [r for r in runs if r["client_dropped_points"] == 0 and r["source_dropped_packets"] == 0
                and not r["recorder_dropped"] and r["archive_missing_packets"] == 0
                and r["delivered_points_per_s"] >= 0.95 * r["offered_points_per_s"]]
    best = max(lossless, key=lambda r: r["delivered_points_per_s"]) if lossless else None
    return {"ingest_samples_per_s": best["delivered_points_per_s"] if best else None, "ingest_runs": runs}


def kill9_server(rate_packets_per_s: float = 20.0, ingest_s: float = 4.0) -> dict[str, Any]:
    """``kill9_server_lost_s``: the real ``sunlit-ground server`` (a subprocess) takes in
    housekeeping from the synthetic source (packet time = wall time) for ``ingest_s``, is
    killed with SIGKILL by its pid, and the archive is reopened as it is (no repair): the
    seconds between the kill and the newest packet time archived, and ``Archive.check()``."""
    tmp = Path(tempfile.mkdtemp(prefix="sl-k9-", dir="/tmp"))
    try:
        return _kill9_server(tmp, rate_packets_per_s, ingest_s)
    finally:  # as run_rate's: nothing of the run left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)


def _kill9_server(tmp: Path, rate_packets_per_s: float, ingest_s: float) -> dict[str, Any]:
    import os
    import signal
    import subprocess
    import sys

    from ground.archive import Archive
    from ground.web.benchlag import SyntheticTelemetry

    url = f"zmq+ipc://{tmp}/link"
    users = UserStore(tmp / "users.toml")
    users.set("bench", Role.VIEWER, "bench-password")
    users.save()
    sizes = [len(p.channels) for p in DICTIONARY.packets]
    source = SyntheticTelemetry(url, rate_packets_per_s * sum(sizes) / len(sizes)).start()
    proc = subprocess.Popen([sys.executable, "-m", "ground.cli", "server", "--link", url, "--port", "0",
                             "--archive", str(tmp / "ground.sqlite"), "--users", str(tmp / "users.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()  # "sunlit-ground server: http://...": serving, its link open
        time.sleep(ingest_s)
        proc.send_signal(signal.SIGKILL)
        killed_s = time.time()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        source.stop()
    with Archive(tmp / "ground.sqlite", create=False) as archive:
        problems = archive.check()
        newest = max((t for _, t in archive.latest("sunlit-1").values() if t is not None), default=None)
        stored = archive.counts()
    return {
        "kill9_server_lost_s": None if newest is None else round(killed_s - newest, 3),
        "kill9_server_check": "ok" if not problems else "; ".join(problems)[:300],
        "kill9_server_hk_packets": stored["hk_sealed"] + stored["hk_unsealed"],
    }
