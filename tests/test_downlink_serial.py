"""The downlink on a real serial line at 115200 baud (a pseudo-terminal cable that carries
what a UART would): after the ground stops reading, live telemetry queues behind at most
LIVE_BACKLOG_S of the line, the rest waits in the store, and all of it comes down in playback
once the ground acknowledges."""

from __future__ import annotations

import time

import pytest

from flight.agent.downlink import LIVE_BACKLOG_S
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import AckRun, Codec, PlaybackRecord
from flight.link.packets import Service, Telemetry, unpack
from hil.ptyline import PtyLine

BAUD = 115_200
RATE_BPS = BAUD / 10


@pytest.fixture
def line():
    with PtyLine(rate_bps=RATE_BPS) as cable:
        yield cable


def key(tm: Telemetry) -> tuple[int, int, int]:
    return (tm.apid, tm.seq_count, int(round(tm.time_s * 1000)))


@pytest.mark.system
@pytest.mark.req("AGT-094", "AGT-093")
def test_after_a_stall_live_data_waits_behind_at_most_two_seconds_of_line_and_the_rest_is_played_back(
        line, start_agent, make_client):
    start_agent(f"serial://{line.a_path}?baud={BAUD}", "--hk-period", "0.25")
    client = make_client(f"serial://{line.b_path}?baud={BAUD}")
    codec = Codec(DICTIONARY, Apid.AGENT)
    live: dict[tuple, Telemetry] = {}
    played: dict[tuple, Telemetry] = {}
    arrivals: list[tuple[bool, Telemetry, int]] = []  # (after the resume?, packet, its size)
    resumed = False

    def take(item) -> None:
        if item.packet is None:
            return
        if item.packet.service == Service.STORAGE and isinstance(item.record, PlaybackRecord):
            for raw in item.record.packets:  # a client that hands over containers whole
                tm = unpack(raw)
                played[key(tm)] = tm
            return
        if getattr(item, "played_back", False):  # a client that unwraps them
            played[key(item.packet)] = item.packet
            return
        live[key(item.packet)] = item.packet
        arrivals.append((resumed, item.packet, len(item.raw)))

    client.listeners.append(take)
    deadline = time.monotonic() + 20.0  # a bound against hanging, not a measure
    while not any(tm.apid == Apid.AGENT for _, tm, _ in arrivals):  # the agent's housekeeping comes live
        assert time.monotonic() < deadline, "no housekeeping came live before the stall"
        client.poll(0.1)
    line.pause()  # the ground stops reading: the agent's output backs up
    paused_at = time.time()
    time.sleep(20.0)  # some 100 KB made: past the pty's own 18 KB and the agent's 2 s of line
    resumed_at = time.time()
    resumed = True
    line.resume()
    # The line carries what queued, in order, then live data again: once a packet made after the resume
    # arrives live, all that had queued for the line has.
    deadline = time.monotonic() + 40.0  # a bound against hanging, not a measure
    while not any(after and tm.time_s >= resumed_at for after, tm, _ in arrivals):
        assert time.monotonic() < deadline, "no live packet made after the resume arrived"
        client.poll(0.1)
    # What arrived after the resume but was made before it: what had queued for the line.
    stale_bytes = sum(size for after, tm, size in arrivals if after and tm.time_s < resumed_at)
    # What can sit between the agent's queue and the ground: the agent's pty (18 KB raw, measured
    # on Linux 6; a UART's transmit buffer is 4 KB), the cable's 4 KB, and frames cut in two.
    between_bytes = 18 * 1024 + 4096 + 2048
    assert 0 < stale_bytes <= LIVE_BACKLOG_S * RATE_BPS + between_bytes
    live_in_pause = [k for k in live if k[0] == Apid.AGENT and paused_at < k[2] / 1000 < resumed_at]
    # Now the ground acknowledges what it has: the rest of the pause comes down in playback.
    def pause_seen() -> list[tuple]:
        return sorted(k for k in {**live, **played} if k[0] == Apid.AGENT and paused_at < k[2] / 1000 < resumed_at)

    def whole(keys: list[tuple]) -> bool:
        seqs = sorted({k[1] for k in keys})
        return bool(seqs) and seqs[-1] - seqs[0] + 1 == len(seqs)

    deadline = time.monotonic() + 40.0  # a bound against hanging, not a measure
    while time.monotonic() < deadline and not (played and whole(pause_seen())):
        runs = [AckRun(*k[:2], k[1], k[2], k[2]) for k in list(live) + list(played)]
        for start in range(0, len(runs), 512):
            client.link.send(codec.encode_store_ack(runs[start:start + 512]))
        client.poll(0.5)
    hk_seen = pause_seen()
    assert played, "nothing was played back"
    assert client.latest["live_deferred"][0] > 0  # the stall pushed live packets into the store
    assert whole(hk_seen)  # every packet of the agent's APID made in the pause arrived, live or played back
    assert len(hk_seen) > len(live_in_pause)  # some of the pause came down only in playback


@pytest.mark.req("LNK-005")
@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "tm_auth"])
def test_a_report_the_line_queue_refuses_is_counted_once_and_kept(line, tmp_path, sealed):
    """Found in an audit: a command's report refused by a full serial queue was counted as two drops (the
    stream's publish, then the reply through the same queue), though the store keeps it for playback. Found
    again with telemetry sealed: the sealing link hid that its serial line's replies share the queue."""
    from flight.agent.agent import Agent
    from flight.clock import SimClock
    from flight.config import Config
    from flight.link.interface import parse_link_url
    from flight.link.sdls import KeySlot, TelemetrySealingLink
    from flight.link.serial_link import SerialFlightLink
    from tests.inproc import T0_S, scripted_board

    codec = Codec(DICTIONARY)
    serial = SerialFlightLink(parse_link_url(f"serial://{line.a_path}?queue=5"))
    flight = TelemetrySealingLink(serial, KeySlot(9, bytes(range(32)), "telemetry"), epoch=1) if sealed else serial
    agent = Agent(Config(state_dir=tmp_path / "state", hk_period_s=1.0, control_period_s=1.0, compute_enabled=False,
                         store_fsync="loop"), link=flight, board=scripted_board(SimClock(T0_S)))
    try:
        agent.start()
        agent.step(0)
        line.pause()  # nobody reads: the pty's buffers fill, then the link's queue
        for _ in range(50):  # the kernel moves a pty's bytes on in its own time: room may open after a full queue
            while serial.queued_packets < 5:
                agent.downlink.publish(codec.encode_event("COUNTERS_RESET", {}, T0_S))
            dropped, held = flight.stats.tx_dropped, agent.downlink.store.stats.records
            agent.downlink.reply("the sender", codec.encode_event("COUNTERS_RESET", {}, T0_S))
            if flight.stats.tx_dropped != dropped:
                break
        assert flight.stats.tx_dropped == dropped + 1
        assert agent.downlink.store.stats.records == held + 1  # kept, to be played back
    finally:
        line.resume()
        agent.close()
