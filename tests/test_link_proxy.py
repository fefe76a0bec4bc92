"""The link proxy (hil/link_proxy.py): faults both ways on the ZeroMQ link, and loss of signal
as physics, the HIL's link gated by the profile's in_contact (HIL-020, HIL-021).

Three layers: the fault model as a pure function (seeded, repeatable); the proxy on real
sockets, between a scripted agent (a bare ROUTER and XPUB, when exact packet sequences are
wanted) or the real agent (when the agent's own checks are the point) and the ground; and a
short lockstep HIL run on a generated profile with one contact. The scenario's ``[link]`` table
is checked here in the manner of tests/test_hil_scenario.py.

Waits are deadlines that only keep a broken test from hanging; nothing asserts on wall time.
"""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from flight.link.apid import Apid
from flight.link.interface import LinkConfigError, parse_link_url
from flight.link.messages import EventRecord, HkRecord
from flight.link.packets import Service, Subtype, pack_tc
from ground.client import CommandTimeout
from hil.link_proxy import (DirectionFaults, LinkFaultError, LinkFaults, LinkProxy, decide, flip_bit, path_rng)
from hil.loop import ClosedLoop
from hil.scenario import LINK_DELAY_MAX_S, ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SSO = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"
SOURCE = "link.toml"
WAIT_S = 20.0  # generous: only so that a broken proxy fails the test instead of hanging it


def until(predicate, what: str, timeout_s: float = WAIT_S):
    """Wait for ``predicate()`` to be true, on a deadline; each check waits on an Event, not a sleep loop."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        pause.wait(0.02)


# --- the fault model (pure) ---------------------------------------------------------------------


def decisions(seed: int, faults: DirectionFaults, sizes: list[int]) -> list:
    rng = path_rng(seed, "commands")
    return [decide(rng, faults, n) for n in sizes]


SIZES = [random.Random(0).randrange(1, 200) for _ in range(500)]
NOISY = DirectionFaults(drop=0.2, corrupt=0.2, duplicate=0.2, reorder=0.2, delay_s=0.01, jitter_s=0.02)


@pytest.mark.req("HIL-020")
def test_the_same_seed_gives_the_same_faults_on_the_same_packets():
    a, b = decisions(7, NOISY, SIZES), decisions(7, NOISY, SIZES)
    assert a == b
    assert decisions(8, NOISY, SIZES) != a  # the seed matters
    # Every kind of fault happened, at about its rate (500 packets, p = 0.2: 100 ± 4.5 sigma).
    for kind in ("drop", "duplicate", "hold"):
        assert 55 < sum(getattr(d, kind) for d in a) < 145, kind
    flips = [d.corrupt_bit for d in a if d.corrupt_bit is not None]
    assert 55 < len(flips) < 145 and all(0 <= bit < 8 * n for bit, n in zip(flips, SIZES))
    assert all(0.01 <= d.delay_s <= 0.03 for d in a)


@pytest.mark.req("HIL-020")
def test_packet_n_is_decided_by_the_seed_and_n_alone():
    """Each call draws the same count whatever it decides: raising one probability only adds packets
    to that fault, and moves no other packet's faults."""
    low = decisions(3, DirectionFaults(drop=0.1, duplicate=0.3), SIZES)
    high = decisions(3, DirectionFaults(drop=0.4, duplicate=0.3), SIZES)
    assert {i for i, d in enumerate(low) if d.drop} < {i for i, d in enumerate(high) if d.drop}
    assert [d.duplicate for d in low] == [d.duplicate for d in high]
    assert not any(d.drop or d.duplicate or d.hold or d.corrupt_bit is not None or d.delay_s
                   for d in decisions(3, DirectionFaults(), SIZES))
    assert all(d.drop and d.duplicate and d.hold and d.corrupt_bit is not None
               for d in decisions(3, DirectionFaults(drop=1, corrupt=1, duplicate=1, reorder=1), SIZES))
    assert decide(path_rng(1, "stream"), DirectionFaults(corrupt=1.0), 0).corrupt_bit is None  # nothing to flip


def test_a_corruption_flips_exactly_one_bit():
    packet = bytes(range(16))
    for bit in (0, 7, 8, 127):
        bad = flip_bit(packet, bit)
        assert sum(bin(x ^ y).count("1") for x, y in zip(packet, bad)) == 1
        assert bad[bit // 8] == packet[bit // 8] ^ (0x80 >> (bit % 8))  # 0: the first byte's top bit
    with pytest.raises(ValueError, match="outside a packet of 16 bytes"):
        flip_bit(packet, 128)


@pytest.mark.req("HIL-020")
@pytest.mark.parametrize("settings,field,says", [
    ({"drop": 1.5}, "drop", "1.5 is outside [0, 1]"),
    ({"corrupt": -0.1}, "corrupt", "outside [0, 1]"),
    ({"duplicate": True}, "duplicate", "expected a finite number"),
    ({"reorder": float("nan")}, "reorder", "finite"),
    ({"delay_s": -1}, "delay_s", "below 0"),
    ({"jitter_s": "1"}, "jitter_s", "expected a finite number, got '1'"),
])
def test_a_bad_fault_setting_names_its_field(settings, field, says):
    with pytest.raises(LinkFaultError) as caught:
        LinkFaults.both(**settings)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ") and says in str(caught.value)
    with pytest.raises(LinkFaultError, match="up: expected DirectionFaults"):
        LinkFaults(up={"drop": 0.5})


# --- the [link] table of a scenario ---------------------------------------------------------------


def scenario(**over) -> dict:
    raw = {"name": "t", "profile": str(SSO), "duration_s": 600, "step_s": 10, "seed": 4,
           "commands": [{"at_s": 0, "command": "SET_MODE", "args": {"mode": "IDLE"}}]}
    raw.update(over)
    return raw


@pytest.mark.req("HIL-020", "HIL-021")
def test_the_link_table_reads_as_written():
    assert parse_scenario(scenario(), SOURCE).link is None  # no table: no proxy, as before
    empty = parse_scenario(scenario(link={}), SOURCE).link
    assert empty.faults == LinkFaults() and not empty.gate_by_contact and empty.seed == 4  # the scenario's seed
    both = parse_scenario(scenario(link={"drop": 0.1, "corrupt": 0.02, "duplicate": 0.03, "reorder": 0.04,
                                         "delay_s": 0.5, "jitter_s": 0.25, "gate_by_contact": True, "seed": 9}),
                          SOURCE).link
    assert both.faults == LinkFaults.both(drop=0.1, corrupt=0.02, duplicate=0.03, reorder=0.04, delay_s=0.5,
                                          jitter_s=0.25)
    assert both.gate_by_contact and both.seed == 9
    split = parse_scenario(scenario(link={"delay_s": 0.2, "up": {"drop": 0.5}, "down": {"duplicate": 1}}),
                           SOURCE).link
    assert split.faults == LinkFaults(DirectionFaults(drop=0.5, delay_s=0.2),
                                      DirectionFaults(duplicate=1.0, delay_s=0.2))


LINK_BAD = [
    (scenario(link={"dorp": 0.1}), "link.dorp", "did you mean drop?"),
    (scenario(link={"gate_by_contacts": True}), "link.gate_by_contacts", "did you mean gate_by_contact?"),
    (scenario(link={"meteor": {}}), "link.meteor", "[link] takes drop, corrupt"),
    (scenario(link={"up": {"dealy_s": 1}}), "link.up.dealy_s", "did you mean delay_s?"),
    (scenario(link={"down": {"gate_by_contact": True}}), "link.down.gate_by_contact", "unknown key"),
    (scenario(link={"drop": 1.5}), "link.drop", "1.5 is outside [0, 1]"),
    (scenario(link={"up": {"corrupt": -0.1}}), "link.up.corrupt", "outside [0, 1]"),
    (scenario(link={"reorder": "often"}), "link.reorder", "expected a number, got 'often'"),
    (scenario(link={"duplicate": True}), "link.duplicate", "expected a number"),
    (scenario(link={"delay_s": -1}), "link.delay_s", "outside"),
    (scenario(link={"down": {"jitter_s": LINK_DELAY_MAX_S + 1}}), "link.down.jitter_s", "wall-clock s"),
    (scenario(link={"gate_by_contact": "yes"}), "link.gate_by_contact", "true or false"),
    (scenario(link={"seed": -1}), "link.seed", "below 0"),
    (scenario(link={"seed": 1.5}), "link.seed", "whole number"),
    (scenario(link={"drop": 0.1, "up": {"drop": 0.2}}), "link.up.drop", "also given in [link]"),
    (scenario(link={"up": 0.1}), "link.up", "must be a table"),
    (scenario(link=0.1), "link", "must be a table"),
    (scenario(agent="naive", link={"drop": 0.1}), "link", "naive agent has no link"),
]


@pytest.mark.req("HIL-020", "HIL-021")
@pytest.mark.parametrize("raw,key,says", LINK_BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(LINK_BAD)])
def test_a_bad_link_key_or_value_is_an_error_naming_the_file_and_the_key(raw, key, says):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(raw, SOURCE)
    err = caught.value
    assert err.key == key and err.source == SOURCE, str(err)
    assert str(err).startswith(f"{SOURCE}: {key}: "), str(err)
    assert says in str(err), str(err)


# --- the proxy on real sockets, against a scripted agent --------------------------------------------


class ScriptedAgent:
    """The agent's two sockets and nothing else: a ROUTER that answers b"re:" + packet to its
    sender, and an XPUB the test publishes numbered packets on."""

    def __init__(self, url: str):
        config = parse_link_url(url)
        ctx = zmq.Context.instance()
        self.cmd = ctx.socket(zmq.ROUTER)
        self.tm = ctx.socket(zmq.XPUB)
        for sock in (self.cmd, self.tm):
            sock.linger = 0
        self.cmd.bind(config.cmd_endpoint)
        self.tm.bind(config.tm_endpoint)

    def answer(self, timeout_s: float = WAIT_S) -> bytes:
        if not self.cmd.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no command reached the agent within {timeout_s} s")
        peer, packet = self.cmd.recv_multipart()
        self.cmd.send_multipart([peer, b"re:" + packet])
        return packet

    def close(self) -> None:
        self.cmd.close()
        self.tm.close()


@pytest.fixture
def scripted(short_dir):
    agent = ScriptedAgent(f"zmq+ipc://{short_dir}/agent")
    proxies: list[LinkProxy] = []

    def proxy(faults: LinkFaults | None = None, gate=None, seed: int = 0) -> LinkProxy:
        p = LinkProxy(f"zmq+ipc://{short_dir}/front", f"zmq+ipc://{short_dir}/agent", faults, gate, seed).start()
        proxies.append(p)
        return p

    yield agent, proxy
    for p in proxies:
        p.close()
    agent.close()


def ground_sub(proxy: LinkProxy, agent: ScriptedAgent) -> zmq.Socket:
    """A plain SUB on the proxy's front, returned once a probe published by the agent reaches it
    (a subscriber joins some time after it connects), with nothing left unread."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(proxy.front.tm_endpoint)
    faults = proxy.faults
    proxy.set_faults(LinkFaults())
    deadline = time.monotonic() + WAIT_S
    while not sub.poll(50):
        assert time.monotonic() < deadline, "the front SUB never joined through the proxy"
        agent.tm.send(b"probe")
    agent.tm.send(b"marker")  # one path keeps its order without faults: after the marker, no probe is left
    while sub.recv() != b"marker":
        assert sub.poll(int(WAIT_S * 1000)), "the marker never came"
    proxy.set_faults(faults)  # its random sequences start again from the seed, at the test's first packet
    return sub


def receive(sub: zmq.Socket, count: int) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < count:
        assert sub.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"only {len(out)} of {count} arrived"
        out.append(sub.recv())
    return out


NUMBERED = [b"tm-%03d" % i for i in range(40)]


@pytest.mark.req("HIL-002", "HIL-020")
def test_what_the_proxy_handed_on_is_read_once_it_took_in_what_was_sent(scripted):
    """The harness tells a lockstep agent how many ground packets went before each step: read
    straight after a send, the proxy's count has not moved yet (its thread has not taken the
    packet). ``handed_on`` waits until it has; a packet it delays is not counted until it goes,
    and once its thread has stopped nothing is waited for."""
    agent, make = scripted
    proxy = make()
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(proxy.front.cmd_endpoint)
    try:
        for i in range(5):
            dealer.send(b"cmd-%d" % i)
        assert proxy.handed_on("up", 5, WAIT_S) == (5, 5)  # (handed on, taken in)
        proxy.set_faults(LinkFaults(up=DirectionFaults(delay_s=30.0)))
        dealer.send(b"late")
        assert proxy.handed_on("up", 6, WAIT_S) == (5, 6)  # taken in, on its way: not handed on yet
        assert proxy.handed_on("up", 8, 0.2) == (5, 6)  # two the sender counted never came
        assert [agent.answer() for _ in range(5)] == [b"cmd-%d" % i for i in range(5)]
        proxy._stopping = True  # its thread stops, as one that failed does
        proxy._wake()
        proxy._thread.join(timeout=WAIT_S)
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(proxy.handed_on("up", 9, 3600.0)), daemon=True)
        waiter.start()
        waiter.join(timeout=WAIT_S)
        assert got == [(5, 6)]  # at once, not after the hour asked for
    finally:
        dealer.close()


@pytest.mark.req("HIL-020")
def test_duplicated_telemetry_arrives_twice_in_order(scripted):
    agent, make = scripted
    proxy = make(LinkFaults(down=DirectionFaults(duplicate=1.0)))
    sub = ground_sub(proxy, agent)
    for packet in NUMBERED:
        agent.tm.send(packet)
    got = receive(sub, 2 * len(NUMBERED))
    assert got == [p for p in NUMBERED for _ in range(2)]
    assert proxy.stats().down.duplicated == len(NUMBERED)  # counted before they went out
    # A packet is counted as passed just after the socket took it: the last may still be on its way.
    until(lambda: proxy.stats().down.passed >= 2 * len(NUMBERED), "every copy counted")


@pytest.mark.req("HIL-020")
def test_reordered_telemetry_arrives_after_the_next_packet(scripted):
    agent, make = scripted
    proxy = make(LinkFaults(down=DirectionFaults(reorder=1.0)))
    sub = ground_sub(proxy, agent)
    for packet in NUMBERED:
        agent.tm.send(packet)
    got = receive(sub, len(NUMBERED))
    # Every packet is held; the next one, finding one held, overtakes it: 1 0 3 2 5 4 ...
    assert got == [NUMBERED[i ^ 1] for i in range(len(NUMBERED))]
    assert proxy.stats().down.reordered == len(NUMBERED) // 2
    # A held packet that nothing overtakes is late, never lost.
    agent.tm.send(b"last")
    assert receive(sub, 1) == [b"last"]
    assert proxy.stats().down.reordered == len(NUMBERED) // 2 and proxy.stats().down.dropped == 0


@pytest.mark.req("HIL-020")
def test_seeded_drops_at_a_plain_sub_are_the_ones_the_fault_model_gives(scripted):
    agent, make = scripted
    faults = LinkFaults(down=DirectionFaults(drop=0.3))
    proxy = make(faults, seed=11)
    sub = ground_sub(proxy, agent)
    for packet in NUMBERED:
        agent.tm.send(packet)
    rng = path_rng(11, "stream")
    expected = [p for p in NUMBERED if not decide(rng, faults.down, len(p)).drop]
    agent.tm.send(b"end")  # decided after them: its own draw says whether it passes
    kept = expected + ([b"end"] if not decide(rng, faults.down, 3).drop else [])
    assert receive(sub, len(kept)) == kept
    # The last one may be dropped, so the proxy may still be at it when the others have arrived.
    until(lambda: proxy.stats().down.dropped == len(NUMBERED) + 1 - len(kept), "every drop counted")


@pytest.mark.req("HIL-020")
def test_replies_go_back_to_the_console_that_asked(scripted):
    agent, make = scripted
    proxy = make()
    consoles = []
    for name in (b"a", b"b", b"c"):
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(proxy.front.cmd_endpoint)
        consoles.append((name, dealer))
    for name, dealer in consoles:
        dealer.send(b"cmd-" + name)
    assert sorted(agent.answer() for _ in consoles) == [b"cmd-a", b"cmd-b", b"cmd-c"]
    for name, dealer in consoles:
        assert dealer.poll(int(WAIT_S * 1000)), name
        assert dealer.recv() == b"re:cmd-" + name and not dealer.poll(50)
        dealer.close()
    until(lambda: proxy.stats().up.passed == 3 and proxy.stats().down.passed == 3, "three each way counted")



@pytest.mark.req("HIL-020", "LNK-005")
def test_one_console_that_stops_reading_does_not_stop_the_stream_to_another(scripted):
    """The front stands for the agent, so a ground server and a console may both subscribe there.
    libzmq's XPUB_NODROP refuses a packet to every subscriber once one's queue is full (found in
    audit: the reading console got nothing after the first 1000 or so packets). The others get it;
    the full one's loss is counted undeliverable."""
    agent, make = scripted
    proxy = make()
    reader = ground_sub(proxy, agent)
    stalled = zmq.Context.instance().socket(zmq.SUB)  # subscribes, then never reads
    stalled.linger = 0
    stalled.rcvhwm = 1
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(proxy.front.tm_endpoint)
    try:
        until(lambda: stalled.poll(0) or (agent.tm.send(b"probe") and False), "the second SUB joined")
        agent.tm.send(b"marker")
        while reader.recv() != b"marker":
            assert reader.poll(int(WAIT_S * 1000)), "the marker never came"
        batch = 100  # well under the proxy's queues, so only the stalled console's queue can fill
        # More than the front's queue (1000 packets) and the kernel's socket buffers hold for the stalled one
        sent = [b"tm-%05d" % i + bytes(1000) for i in range(2500)]
        for start in range(0, len(sent), batch):
            for packet in sent[start:start + batch]:
                agent.tm.send(packet)
            assert receive(reader, batch) == sent[start:start + batch]
        until(lambda: proxy.stats().down.undeliverable >= 1, "the stalled console's loss counted")
        assert proxy.stats().down.passed >= len(sent)
    finally:
        stalled.close()
        reader.close()

def test_the_proxy_refuses_what_it_cannot_carry_and_stops_cleanly(short_dir, tcp_url):
    with pytest.raises(LinkConfigError, match="hil/ptyline.py"):
        LinkProxy(f"zmq+ipc://{short_dir}/front", "serial:///dev/ttyUSB0")
    with LinkProxy(tcp_url, f"zmq+ipc://{short_dir}/agent") as proxy:
        thread = proxy._thread
        assert thread.is_alive()
        with pytest.raises(OSError, match=f"cannot bind {tcp_url}"):  # a TCP port in use (ipc would take the path over)
            LinkProxy(tcp_url, f"zmq+ipc://{short_dir}/agent")
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        proxy.start()
    proxy.close()  # twice is fine


def test_a_proxy_carries_an_ipv6_loopback_front(short_dir):
    """Found in review: the proxy's sockets never took IPv6, so zmq://[::1]:PORT, which the agent's and the ground's
    links take, could not be its front ("No such device")."""
    import socket

    from flight.link.transport import open_flight_link, open_ground_link
    from hil.agent_process import free_tcp_port_pair

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this host: {exc}")
    front = f"zmq://[::1]:{free_tcp_port_pair()}"
    flight = open_flight_link(f"zmq+ipc://{short_dir}/agent")
    try:
        with LinkProxy(front, f"zmq+ipc://{short_dir}/agent").start() as proxy:
            ground = open_ground_link(front)
            try:
                ground.send(b"over-v6")
                got = []
                until(lambda: got.extend(flight.receive()) or got, "the command through the proxy")
                assert [inbound.packet for inbound in got] == [b"over-v6"] and proxy.stats().up.passed == 1
            finally:
                ground.close()
    finally:
        flight.close()


def test_a_gate_that_raises_fails_the_proxy_loudly_at_close(scripted):
    agent, make = scripted

    def broken() -> bool:
        raise ValueError("no profile here")

    proxy = make(gate=broken)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(proxy.front.cmd_endpoint)
    dealer.send(b"cmd")
    until(lambda: not proxy._thread.is_alive(), "the proxy's thread ended")
    dealer.close()
    with pytest.raises(RuntimeError, match="no profile here"):
        proxy.close()


# --- the proxy in front of the real agent ---------------------------------------------------------


@pytest.fixture
def proxied(start_agent, make_client, short_dir):
    """The real agent on its own URL, a proxy in front of it, and a factory of ground clients on the front."""
    agent_url, front_url = f"zmq+ipc://{short_dir}/agent", f"zmq+ipc://{short_dir}/front"
    start_agent(agent_url)
    contact = threading.Event()
    contact.set()
    proxy = LinkProxy(front_url, agent_url, gate=contact.is_set, seed=1).start()
    yield proxy, contact, lambda: make_client(front_url)
    proxy.close()


def agent_hk(client, predicate, timeout_s: float = WAIT_S) -> dict:
    item = client.wait_for(lambda i: isinstance(i.record, HkRecord) and i.record.packet.name == "AGENT_HK"
                           and predicate(i.record.values), timeout_s)
    return item.record.values


@pytest.mark.req("HIL-020")
def test_with_every_command_dropped_a_command_times_out(proxied):
    proxy, _contact, client_on_front = proxied
    client = client_on_front()  # telemetry comes down: the agent is there
    before = proxy.stats().up
    proxy.set_faults(LinkFaults(up=DirectionFaults(drop=1.0)))
    with pytest.raises(CommandTimeout):
        client.send("NOOP", timeout_s=3.0, attempt_timeout_s=0.5, retries=2)
    up = proxy.stats().up
    assert up.dropped > before.dropped and up.passed == before.passed  # every attempt lost, none through
    proxy.set_faults(LinkFaults())
    assert client.send("NOOP", timeout_s=WAIT_S).completed


@pytest.mark.req("HIL-021")
def test_out_of_contact_nothing_passes_either_way_and_contact_restores_it(proxied):
    proxy, contact, client_on_front = proxied
    client = client_on_front()
    assert client.send("PING", {"token": 1}, timeout_s=WAIT_S).completed
    contact.clear()  # loss of signal
    before = proxy.stats()
    until(lambda: proxy.stats().down.los_dropped > before.down.los_dropped, "telemetry lost out of contact")
    closed = proxy.stats()
    with pytest.raises(CommandTimeout):
        client.send("PING", {"token": 2}, timeout_s=2.0, attempt_timeout_s=0.5, retries=2)
    after = proxy.stats()
    assert after.up.passed == closed.up.passed and after.down.passed == closed.down.passed  # nothing, either way
    assert after.up.los_dropped > closed.up.los_dropped  # the attempts, lost
    assert after.down.los_dropped > closed.down.los_dropped  # the agent's housekeeping went on, unheard
    contact.set()
    result = client.send("PING", {"token": 3}, timeout_s=WAIT_S)
    assert result.completed and result.result["token"] == 3
    assert proxy.stats().down.passed > after.down.passed and proxy.stats().up.passed > after.up.passed


@pytest.mark.req("HIL-020")
def test_corrupted_commands_reach_the_agent_and_its_crc_refuses_them(proxied):
    proxy, _contact, client_on_front = proxied
    client = client_on_front()
    start = agent_hk(client, lambda v: True)["tc_bad_packets"]
    proxy.set_faults(LinkFaults(up=DirectionFaults(corrupt=1.0)))
    for seq in range(5):
        client.link.send(pack_tc(Apid.AGENT, 100 + seq, Service.TEST, Subtype.PING, source_id=1))
    until(lambda: proxy.stats().up.corrupted >= 5 and proxy.stats().up.passed >= 5, "five corrupted and passed")
    agent_hk(client, lambda v: v["tc_bad_packets"] >= start + 5)  # each one refused by the agent, none taken
    bad = [e for e in client.events if isinstance(e, EventRecord) and e.event.name == "BAD_PACKET"]
    assert bad, "the agent said BAD_PACKET"
    proxy.set_faults(LinkFaults())
    assert client.send("NOOP", timeout_s=WAIT_S).completed  # the link itself is fine


@pytest.mark.req("HIL-020")
def test_a_duplicated_command_is_executed_once(proxied):
    proxy, _contact, client_on_front = proxied
    client = client_on_front()
    proxy.set_faults(LinkFaults(up=DirectionFaults(duplicate=1.0)))
    assert client.send("NOOP", timeout_s=WAIT_S).completed
    values = agent_hk(client, lambda v: v["tc_duplicates"] >= 1)
    assert values["cmd_executed"] == 1 and proxy.stats().up.duplicated >= 1


# --- loss of signal in a lockstep HIL run ----------------------------------------------------------

CONTACT = (300.0, 600.0)  # in contact from 300 s to 600 s of a 900 s run (sample times, relative)


def contact_profile(path: Path) -> Path:
    rows = "".join(f"{1_795_000_000 + t},1,60,{'true' if CONTACT[0] <= t < CONTACT[1] else 'false'}\n"
                   for t in range(0, 910, 10))
    path.write_text("time_s,shadow_factor,solar_power_w,in_contact\n" + rows)
    return path


class Listening(ClosedLoop):
    """The loop, noting for every packet its ground client hears once time has started the step
    being flown then, and for housekeeping the simulated time it was made at."""

    heard_at_s: list[float]  # the step (relative s) at which each packet reached the ground
    hk_made_s: list[float]  # the agent's time stamp of each housekeeping packet heard (relative s)

    def _on_packet(self, item) -> None:
        super()._on_packet(item)
        if self._flying:
            self.heard_at_s.append(self._rel_s)
            if isinstance(item.record, HkRecord):
                self.hk_made_s.append(item.record.time_s - self._t0_s)


@pytest.mark.system
@pytest.mark.req("HIL-021")
def test_in_lockstep_telemetry_reaches_the_ground_only_in_contact(tmp_path):
    sc = parse_scenario({"name": "contact", "profile": str(contact_profile(tmp_path / "contact.csv")),
                         "duration_s": 900, "step_s": 10, "seed": 2, "link": {"gate_by_contact": True},
                         "commands": [{"at_s": 0, "command": "SET_MODE", "args": {"mode": "IDLE"}}]}, "contact.toml")
    loop = Listening(sc, tmp_path / "run")
    loop.heard_at_s, loop.hk_made_s = [], []
    result = loop.run()
    step = sc.step_s
    # Nothing reaches the ground out of contact: the gate reads the step being flown, and a packet
    # let through in the contact's last step may be taken in by the client at the next step's end.
    assert loop.heard_at_s and min(loop.heard_at_s) >= CONTACT[0], loop.heard_at_s
    assert max(loop.heard_at_s) <= CONTACT[1], loop.heard_at_s
    # In contact it flows: housekeeping every 10 s of simulated time (the proxy may take a packet
    # in its own step or a later one, so the contact's last steps are left out).
    made_in_contact = [t for t in loop.hk_made_s if CONTACT[0] <= t < CONTACT[1] - 2 * step]
    assert len(made_in_contact) >= 10, loop.hk_made_s
    assert result.link["gate_by_contact"] and result.link["down"]["los_dropped"] > 0
    # The command waited for the contact, then went through.
    (command,) = result.commands
    assert CONTACT[0] <= command["at_s"] < CONTACT[1] and command["outcome"] == "completed"
    from hil.report import summary

    assert summary(result, [])["link"]["down"]["los_dropped"] == result.link["down"]["los_dropped"]


@pytest.mark.req("HIL-020")
def test_the_bench_tool_carries_a_real_agent_and_prints_its_counters(start_agent, make_client, short_dir):
    agent_url, front_url = f"zmq+ipc://{short_dir}/agent", f"zmq+ipc://{short_dir}/front"
    start_agent(agent_url)
    tool = subprocess.Popen([sys.executable, "-m", "hil.link_proxy", "--front", front_url, "--back", agent_url,
                             "--duplicate", "1", "--direction", "up", "--seed", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        ready, _, _ = select.select([tool.stderr], [], [], WAIT_S)
        assert ready, "the bench tool said nothing"
        banner = tool.stderr.readline()  # printed once the proxy is bound and running
        assert "Ctrl-C stops it" in banner, banner + tool.stderr.read()
        client = make_client(front_url)
        assert client.send("NOOP", timeout_s=WAIT_S).completed
        tool.send_signal(signal.SIGINT)
        out, err = tool.communicate(timeout=WAIT_S)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert tool.returncode == 0, out + err
    stats = json.loads(out.strip().splitlines()[-1])  # one JSON object, the last line
    assert stats["up"]["duplicated"] >= 1 and stats["up"]["passed"] >= 2 and stats["down"]["duplicated"] == 0, out
    bad = subprocess.run([sys.executable, "-m", "hil.link_proxy", "--front", front_url, "--back", agent_url,
                          "--drop", "2"], capture_output=True, text=True, cwd=ROOT, timeout=WAIT_S)
    assert bad.returncode == 2 and "drop: 2 is outside [0, 1]" in bad.stderr and "Traceback" not in bad.stderr
