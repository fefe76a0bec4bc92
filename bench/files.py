"""File transfer and the model lifecycle, measured. Prints one JSON object as its last line.

- ``cfdp_serial_efficiency``: 1 MiB goes up by CFDP class 2 to a real agent (a process) over a
  pseudo-terminal cable carrying at most what a UART at 115200 baud carries
  (``hil.ptyline.PtyLine(rate_bps=11520)``, 8N1: 11 520 bytes a second): file bytes per second,
  from the put to the Finished PDU confirming the file whole, over the line's byte rate. The up
  direction carries the file's PDUs (and the ground's store acknowledgements); the agent's
  telemetry shares the down direction with the ACK, NAK and Finished PDUs.
  ``cfdp_serial_down_efficiency``: the same 1 MiB down (FILE_DOWNLINK), sharing the line with
  the agent's housekeeping (1 s period), from the command to the file whole on the ground.
- ``cfdp_loss10_complete``: 1 MiB goes up to a real agent on a ZeroMQ link through
  ``hil.link_proxy.LinkProxy`` dropping 10 % and corrupting 1 % of the packets both ways (a
  corrupted packet fails its CRC and is dropped by the receiver), at ``file_rate_bps`` 60 000 so
  the transfer spans: a loss of signal (nothing passes either way) for ``BENCH_LOS_S`` (15) s,
  the agent killed with SIGKILL and started again on the same state directory, and a second
  loss of signal. True when the file on board has the SHA-256 of the file sent.
  ``cfdp_loss10_time_ratio``: its wall time over the same transfer's with no loss, no gaps and no
  restart (the gaps' own time included: 2 x ``BENCH_LOS_S``).
- ``delta_vs_full_bytes`` and ``model_swap_s``: see bench/model_lifecycle.py (a fine-tuned
  head sent as the tensors that changed, over the full signed package; uplinked files in
  staging to the new model active after its checks).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from flight.files.entity import FileEntity, Transfer
from flight.link.messages import Codec
from flight.link.transport import open_ground_link
from ground.client import GroundClient
from hil.agent_process import AgentProcess, free_tcp_port_pair
from hil.link_proxy import LinkFaults, LinkProxy
from hil.ptyline import PtyLine

MIB = 1 << 20
LINE_BPS = 11520.0
LOS_S = float(os.environ.get("BENCH_LOS_S", "15"))
RATE_BPS = 60000.0  # both ends: 1 MiB takes some 18 s, long enough to span the gaps and the reset


class GroundSide:
    """A ground client and the ground's CFDP entity, pumped by hand: the bench's ground station."""

    def __init__(self, link_url: str, root: Path, los_s: float = 3.0, rate_bps: float | None = None):
        self.client = GroundClient(open_ground_link(link_url))
        self.root = root
        (root / "uplink").mkdir(parents=True, exist_ok=True)
        self.settled: dict[str, Transfer] = {}
        self.entity = FileEntity(1, 2, root, time.monotonic, read_tops=frozenset({"uplink"}),
                                 write_tops=frozenset({"downlink"}), on_change=self._changed)
        self.heard_s = time.monotonic()
        self.los_s = los_s
        self.client.listeners.append(self._heard)
        self._acked_s = 0.0
        self.rate_bps = rate_bps
        self._tokens, self._tokens_at = 0.0, time.monotonic()
        self.log: list[tuple[float, str, str]] = []

    def _changed(self, what: str, t: Transfer | None) -> None:
        self.log.append((round(time.monotonic(), 1), what, t.reason if t is not None else ""))
        if t is not None and t.settled:
            self.settled[t.id] = t

    def _heard(self, item) -> None:
        self.heard_s = time.monotonic()
        pdu = Codec.file_pdu(item.packet) if item.packet is not None else None
        if pdu is not None:
            self.entity.receive(pdu)

    def pump(self, line_bps: float | None = None, budget: int = 8192) -> None:
        self.client.poll(0.005)
        now = time.monotonic()
        self.entity.set_contact(now - self.heard_s <= self.los_s)
        if now - self._acked_s >= 1.0:  # as the ground server does: the agent's store, and contact
            self._acked_s = now
            self.client.acknowledge_store()
        if line_bps is not None:  # a serial line: at most a quarter second of it queued
            budget = int(0.25 * line_bps - self.client.link.backlog_bytes())
        elif self.rate_bps is not None:  # a token bucket
            self._tokens = min(self.rate_bps * 0.5, self._tokens + self.rate_bps * (now - self._tokens_at))
            self._tokens_at = now
            budget = int(self._tokens)
        for pdu in self.entity.pull(max(0, budget)):
            self.client.link.send(self.client.codec.encode_file_pdu_tc(pdu))
            self._tokens -= len(pdu)
        self.client.link.flush()

    def wait(self, done: Callable[[], bool], timeout_s: float, line_bps: float | None = None,
             budget: int = 8192) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.pump(line_bps, budget)
            if done():
                return True
        return False

    def close(self) -> None:
        self.client.close()


def _agent(link_url: str, state: Path, params: dict[str, float] | None = None) -> AgentProcess:
    lines = [f'[paths]\nstate_dir = "{state}"\n', "[compute]\nenabled = false\n"]
    if params:
        lines.append("[parameters]\n" + "".join(f"{k} = {v}\n" for k, v in params.items()))
    config = state.parent / f"{state.name}.toml"
    config.write_text("\n".join(lines))
    return AgentProcess(link_url, state.parent / f"{state.name}.log", ["--config", str(config)]).start()


def serial_efficiency(tmp: Path) -> tuple[float, float]:
    data = os.urandom(MIB)
    with PtyLine(rate_bps=LINE_BPS) as line:
        agent = _agent(f"serial://{line.a_path}?baud=115200", tmp / "serial-agent")
        ground = GroundSide(f"serial://{line.b_path}?baud=115200", tmp / "serial-ground")
        try:
            assert ground.client.send("NOOP", timeout_s=20).completed, "the agent did not answer"
            (ground.root / "uplink/up.bin").write_bytes(data)
            t0 = time.monotonic()
            t = ground.entity.put("uplink/up.bin", "staging/up.bin", cls=2)
            ok = ground.wait(lambda: t.id in ground.settled, 600, LINE_BPS)
            up_s = time.monotonic() - t0
            assert ok and ground.settled[t.id].state == "done", f"uplink: {ground.settled.get(t.id)}"
            on_board = tmp / "serial-agent/compute/staging/up.bin"
            assert hashlib.sha256(on_board.read_bytes()).digest() == hashlib.sha256(data).digest()
            products = tmp / "serial-agent/compute/products"
            products.mkdir(parents=True, exist_ok=True)
            (products / "down.bin").write_bytes(data)
            t0 = time.monotonic()
            res = ground.client.send("FILE_DOWNLINK", {"name": "products/down.bin"}, timeout_s=30)
            assert res.completed, res.outcome
            got = ground.root / "downlink/products/down.bin"
            ok = ground.wait(lambda: got.exists(), 900, LINE_BPS)
            down_s = time.monotonic() - t0
            assert ok and got.read_bytes() == data, "downlink did not complete"
        finally:
            ground.close()
            agent.stop()
    return MIB / up_s / LINE_BPS, MIB / down_s / LINE_BPS


def loss10(tmp: Path, faulty: bool) -> tuple[bool, float]:
    data = os.urandom(MIB)
    port = free_tcp_port_pair()
    back = f"tcp://127.0.0.1:{port}"
    port2 = free_tcp_port_pair()
    front = f"tcp://127.0.0.1:{port2}"
    state = tmp / ("lossy-agent" if faulty else "clean-agent")
    params = {"file_rate_bps": RATE_BPS, "file_los_s": 3.0}
    agent = _agent(back, state, params)
    open_gate = [True]
    faults = LinkFaults.both(drop=0.1, corrupt=0.01) if faulty else LinkFaults()
    proxy = LinkProxy(front, back, faults, gate=lambda: open_gate[0], seed=7).start()
    ground = GroundSide(front, tmp / ("lossy-ground" if faulty else "clean-ground"), rate_bps=RATE_BPS)
    target = state / "compute/staging/up.bin"
    try:
        ground.client.send("NOOP", timeout_s=30, retries=10)
        (ground.root / "uplink/up.bin").write_bytes(data)
        t0 = time.monotonic()
        t = ground.entity.put("uplink/up.bin", "staging/up.bin", cls=2)
        done = lambda: t.id in ground.settled  # noqa: E731
        if faulty:
            ground.wait(lambda: done() or ground.entity.counts()["bytes_out"] > MIB * 0.2, 120)
            open_gate[0] = False                 # loss of signal
            ground.wait(done, LOS_S)
            open_gate[0] = True
            ground.wait(lambda: done() or ground.entity.counts()["bytes_out"] > MIB * 0.5, 120)
            agent.kill()                         # a reset mid-file
            agent = _agent(back, state, params)
            ground.wait(lambda: done() or ground.entity.counts()["bytes_out"] > MIB * 0.8, 120)
            open_gate[0] = False                 # a second loss of signal
            ground.wait(done, LOS_S)
            open_gate[0] = True
        ground.wait(done, 600)
        elapsed = time.monotonic() - t0
        if os.environ.get("BENCH_VERBOSE"):
            print(t0, ground.log, ground.entity.counts(), file=sys.stderr)
        ok = done() and ground.settled[t.id].state == "done" and target.exists() \
            and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    finally:
        ground.close()
        proxy.close()
        agent.stop()
    return ok, elapsed


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-files-") as d:
        tmp = Path(d)
        up_eff, down_eff = serial_efficiency(tmp)
        clean_ok, clean_s = loss10(tmp, faulty=False)
        lossy_ok, lossy_s = loss10(tmp, faulty=True)
    out = {
        "cfdp_serial_efficiency": round(up_eff, 3),
        "cfdp_serial_down_efficiency": round(down_eff, 3),
        "cfdp_loss10_complete": bool(lossy_ok and clean_ok),
        "cfdp_loss10_s": round(lossy_s, 1),
        "cfdp_lossless_s": round(clean_s, 1),
        "cfdp_loss10_time_ratio": round(lossy_s / clean_s, 2),
    }
    try:
        from bench import model_lifecycle
        out["delta_vs_full_bytes"] = round(model_lifecycle.delta_vs_full_bytes(), 4)
        out["model_swap_s"] = round(model_lifecycle.model_swap_s(), 3)
    except ImportError as exc:
        print(f"model lifecycle figures skipped: {exc}", file=sys.stderr)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
