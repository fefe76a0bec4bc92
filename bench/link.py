"""Link throughput and latency. Prints one JSON object as its last line.

- ``zmq_tm_per_s``: telemetry packets per second, encode → XPUB → SUB → decode, 200-byte data,
  sender and receiver in separate processes as the agent and the ground are.
- ``zmq_raw_per_s``: the same sockets and processes carrying plain bytes of the same size.
- ``zmq_ratio``: the first over the second, the median over ``ZMQ_PAIRS`` (5) interleaved pairs of
  streams, the order swapped each pair (medians for the two rates too) (target >= 0.25).
- ``tc_rtt_p50_us``/``tc_rtt_p99_us``: NOOP from send to completion report, agent in its own
  process on TCP loopback (target p99 < 1000). ``tc_agent_cpu_us``/``tc_client_cpu_us``: the CPU
  time (user + system, all threads: ZeroMQ's I/O thread too) each process spent per command over
  the same run, the agent's read from /proc: what a command costs, which a loaded or shared
  machine's scheduling moves far less than it moves the latency. ``tc_floor_p50_us``/
  ``tc_floor_p99_us``: the same message pattern in bare pyzmq (a DEALER/ROUTER request, three
  replies and four stream packets back, no Sunlit code), just before: the machine's own floor.
- ``serial_efficiency_256B``: packet bytes over wire bytes for a 256-byte packet (target >= 0.97).
- ``serial_pty_per_s``: packets per second through a pseudo-terminal pair, COBS framed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import msgpack
import zmq

from flight.link.packets import pack_tm, unpack
from flight.link.zmq_link import _common

N_TM = int(os.environ.get("BENCH_LINK_TM", "200000"))
N_RTT = int(os.environ.get("BENCH_LINK_RTT", "2000"))
N_SERIAL = int(os.environ.get("BENCH_LINK_SERIAL", "5000"))


_DATA = msgpack.packb([1, *[1.0 + i / 7 for i in range(21)], "x" * 6])  # 200 bytes of housekeeping values
assert len(_DATA) == 200, len(_DATA)


def _make_tm(i: int, t_now: float) -> bytes:
    return pack_tm(0x010, i & 0x3FFF, 3, 25, _DATA, t_now)


def _sender(port: int, n: int, encode: bool) -> None:
    """The agent's side, in its own process as on a board: encode (or not) and publish."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    _common(pub, 1000)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.bind(f"tcp://127.0.0.1:{port}")
    pub.recv()  # the subscription: the pipe is up, nothing sent is lost to a slow join
    t_now = time.time()
    raw = _make_tm(0, t_now)
    for i in range(n):
        pub.send(_make_tm(i, t_now) if encode else raw)  # blocking: XPUB_NODROP pushes back
    pub.close(linger=-1)
    ctx.term()  # returns once every packet has left: a process that exits before loses the tail


def _stream(port: int, n: int, encode: bool) -> float:
    """Packets/s from a sender process through XPUB/SUB to this process, decoding each if ``encode``."""
    sender = multiprocessing.get_context("spawn").Process(target=_sender, args=(port, n, encode))
    sender.start()
    sub = zmq.Context.instance().socket(zmq.SUB)
    _common(sub, 1000)
    sub.setsockopt(zmq.RCVTIMEO, 60_000)  # a sender that died says so instead of a wait without end
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        first = sub.recv()
        t0 = time.perf_counter()
        if encode:
            msgpack.unpackb(unpack(first).source_data)
            for _ in range(n - 1):
                msgpack.unpackb(unpack(sub.recv()).source_data)
        else:
            for _ in range(n - 1):
                sub.recv()
        elapsed = time.perf_counter() - t0
    except zmq.Again:
        raise RuntimeError(f"the sender stopped short of {n} packets (exit code {sender.exitcode})") from None
    finally:
        sub.close(0)
        sender.join(10)
        if sender.is_alive():
            sender.kill()
            sender.join()
    return (n - 1) / elapsed


ZMQ_PAIRS = 5  # tm and raw streams alternated, the order swapped each pair (a review: one run of each)


def zmq_throughput() -> dict[str, float]:
    """Medians over :data:`ZMQ_PAIRS` interleaved pairs of streams of N_TM / ZMQ_PAIRS packets (a fresh port
    each); the ratio the median of the pairs' ratios."""
    from hil.agent_process import free_tcp_port_pair

    n = max(1000, N_TM // ZMQ_PAIRS)
    tms: list[float] = []
    raws: list[float] = []
    for i in range(ZMQ_PAIRS):
        for encode in ((False, True) if i % 2 else (True, False)):
            (tms if encode else raws).append(_stream(free_tcp_port_pair(), n, encode=encode))
    ratios = [t / r for t, r in zip(tms, raws)]
    return {"zmq_tm_per_s": round(statistics.median(tms)), "zmq_raw_per_s": round(statistics.median(raws)),
            "zmq_ratio": round(statistics.median(ratios), 3), "zmq_pairs": ZMQ_PAIRS,
            "zmq_packet_bytes": len(_make_tm(0, 0.0))}


def tc_rtt(port: int, agent_args: Sequence[str] = ()) -> dict[str, float]:
    """``agent_args``: the agent's command line after its link (bench.security gives the config
    of its own agent, keys left out, to compare like with like)."""
    from ground.client import GroundClient
    from hil.agent_process import AgentProcess

    url = f"zmq://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProcess(url, Path(tmp) / "agent.log", agent_args).start()
        client = GroundClient(url)
        try:
            if not client.dictionary_matches(timeout_s=20):
                raise RuntimeError("agent did not come up:\n" + agent.log())
            for _ in range(100):  # warm up both processes
                client.send("NOOP")
            samples = []
            agent_cpu0, client_cpu0 = _process_cpu_s(agent.proc.pid), time.process_time()
            for _ in range(N_RTT):
                t0 = time.perf_counter()
                result = client.send("NOOP")
                samples.append((time.perf_counter() - t0) * 1e6)
                assert result.completed
            agent_cpu, client_cpu = _process_cpu_s(agent.proc.pid) - agent_cpu0, time.process_time() - client_cpu0
        finally:
            client.close()
            agent.stop()
    samples.sort()
    return {
        "tc_rtt_p50_us": round(statistics.median(samples), 1),
        "tc_rtt_p99_us": round(samples[int(len(samples) * 0.99) - 1], 1),
        "tc_agent_cpu_us": round(agent_cpu / N_RTT * 1e6, 1),
        "tc_client_cpu_us": round(client_cpu / N_RTT * 1e6, 1),
    }


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _floor_server(port: int) -> None:
    ctx = zmq.Context()
    router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB)
    router.bind(f"tcp://127.0.0.1:{port}")
    pub.bind(f"tcp://127.0.0.1:{port + 1}")
    while True:
        ident, msg = router.recv_multipart()
        if msg == b"stop":
            break
        for _ in range(3):
            router.send_multipart([ident, b"r" * 40])
            pub.send(b"s" * 40)
        pub.send(b"e" * 40)
    router.close(0)
    pub.close(0)
    ctx.term()


def tc_floor(port: int) -> dict[str, float]:
    """The round trip of tc_rtt's message pattern in bare pyzmq: what this machine gives any
    Python code before Sunlit does anything (the server in its own process, as the agent is)."""
    server = multiprocessing.get_context("spawn").Process(target=_floor_server, args=(port,), daemon=True)
    server.start()
    ctx = zmq.Context()
    dealer, sub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    sub.connect(f"tcp://127.0.0.1:{port + 1}")
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    poller.register(sub, zmq.POLLIN)
    try:
        samples = []
        for i in range(N_RTT + 200):
            t0 = time.perf_counter()
            dealer.send(b"c")
            got = 0
            while got < 3:
                if not poller.poll(5000):
                    raise RuntimeError("the floor server did not answer")
                while dealer.poll(0):
                    dealer.recv()
                    got += 1
                while sub.poll(0):
                    sub.recv()
            if i >= 200:  # the first ones warm up (and let the SUB join)
                samples.append((time.perf_counter() - t0) * 1e6)
        dealer.send(b"stop")
    finally:
        server.join(5)
        if server.is_alive():
            server.kill()
            server.join()
        dealer.close(0)
        sub.close(0)
        ctx.term()
    samples.sort()
    return {"tc_floor_p50_us": round(statistics.median(samples), 1),
            "tc_floor_p99_us": round(samples[int(len(samples) * 0.99) - 1], 1)}


def serial_figures() -> dict[str, float]:
    from flight.link.framing import encode_frame
    from flight.link.serial_link import SerialFlightLink, SerialGroundLink
    from flight.link.transport import parse_link_url
    from hil.ptyline import PtyLine

    packet = pack_tm(0x010, 0, 3, 25, bytes(256 - 22), 0.0)
    assert len(packet) == 256
    efficiency = len(packet) / len(encode_frame(packet))
    with PtyLine() as line:
        flight = SerialFlightLink(parse_link_url(f"serial://{line.a_path}?baud=4000000&queue=100000"))
        ground = SerialGroundLink(parse_link_url(f"serial://{line.b_path}?baud=4000000&queue=100000"))
        try:
            got = 0
            t0 = time.perf_counter()
            sent = 0
            deadline = time.monotonic() + 60
            while got < N_SERIAL and time.monotonic() < deadline:
                while sent < N_SERIAL and sent - got < 64:  # keep a window in flight, as a real link does
                    flight.publish(packet)
                    sent += 1
                flight.flush()
                got += len(ground.receive())
            elapsed = time.perf_counter() - t0
        finally:
            flight.close()
            ground.close()
    return {"serial_efficiency_256B": round(efficiency, 4), "serial_pty_per_s": round(got / elapsed)}


def main() -> int:
    from hil.agent_process import free_tcp_port_pair

    out: dict[str, float] = {}
    out.update(zmq_throughput())
    out.update(tc_floor(free_tcp_port_pair()))
    out.update(tc_rtt(free_tcp_port_pair()))
    try:
        out.update(serial_figures())
    except ImportError as exc:
        out['serial_error'] = str(exc)
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
