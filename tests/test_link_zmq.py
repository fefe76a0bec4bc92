"""The link over ZeroMQ against a real agent process: commands, telemetry, faults, restarts."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import msgpack
import pytest
import zmq

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, FailureCode
from flight.link.messages import EventRecord, HkRecord, Stage
from flight.link.packets import ACK_ALL, pack_tc, pack_tm, unpack
from flight.link.transport import LinkConfigError, open_flight_link, parse_link_url
from ground.client import CommandTimeout
from tests.samples import ORDERED, VALID_ARGS, sample_agent_args, sample_tc_keys, stage_sample_model


# A bound, never a measure: an agent's answer on a loaded CI machine (8 test workers on 2 cores) may take seconds.
WAIT_S = 30.0


def hk_where(client, predicate, timeout_s=WAIT_S):
    """The next agent housekeeping (AGENT_HK) values that satisfy ``predicate``."""
    item = client.wait_for(lambda i: isinstance(i.record, HkRecord) and i.record.packet.name == "AGENT_HK"
                           and predicate(i.record.values), timeout_s)
    return item.record.values


def event_named(client, name, timeout_s=WAIT_S):
    """The first event ``name`` the client has received, waiting for it if it has not come yet."""
    for rec in client.events:
        if rec.event.name == name:
            return rec
    return client.wait_for(lambda i: isinstance(i.record, EventRecord) and i.record.event.name == name, timeout_s).record


@pytest.mark.req("LNK-002", "AGT-040")
def test_every_command_completes_over_tcp(start_agent, make_client, tcp_url, tmp_path):
    stage_sample_model(start_agent(tcp_url, *sample_agent_args(tmp_path, tc_keys=True)).state_dir)
    client = make_client(tcp_url, tc_keys=sample_tc_keys(tmp_path))  # KEY_* need authentication on
    for name in ORDERED:
        result = client.send(name, VALID_ARGS[name])
        assert result.completed, f"{name}: {result.outcome}"
        assert [r.stage for r in result.reports] == [Stage.ACCEPTED, Stage.COMPLETED]  # as the default flags ask
        assert all(r.request_id == result.reports[0].request_id for r in result.reports)
        if name == "NOOP":  # other flags, other reports; a failure comes whatever they ask
            every = client.send(name, {}, ack_flags=ACK_ALL)
            assert [r.stage for r in every.reports] == [Stage.ACCEPTED, Stage.STARTED, Stage.COMPLETED]
            only = client.send(name, {}, ack_flags=0, retries=0)  # the stage waited for is asked all the same
            assert only.completed and [r.stage for r in only.reports] == [Stage.COMPLETED]
            retried = client.send(name, {}, ack_flags=0)  # ... and acceptance where it retries until a report
            assert [r.stage for r in retried.reports] == [Stage.ACCEPTED, Stage.COMPLETED]
            refused = client.send("SET_MODE", {"mode": "COMPUTE"}, ack_flags=0, retries=0)  # SAFE → COMPUTE
            assert [(r.stage, r.success) for r in refused.reports] == [(Stage.STARTED, False)]
    assert event_named(client, "AGENT_STOPPING").args["reason"] == "commanded: test; then STAY_DOWN"


@pytest.mark.req("SEC-012")
def test_ping_result_and_events_and_housekeeping_over_ipc_and_a_shutdown_that_asks_for_a_restart(
        start_agent, make_client, ipc_url):
    agent = start_agent(ipc_url)
    client = make_client(ipc_url)
    result = client.send("PING", {"token": 99})
    assert result.result["token"] == 99 and result.result["dict_hash"] == DICTIONARY.version_hash
    assert event_named(client, "PING_RECEIVED").args == {"token": 99}
    values = hk_where(client, lambda v: v["cmd_executed"] >= 1)
    assert set(values) == set(DICTIONARY.packet_by_name["AGENT_HK"].channels)
    assert values["link_kind"] == "ZMQ" and values["cmd_accepted"] == 1
    # SHUTDOWN's default is RESTART_SAFE: exit status 75, which the service restarts (deploy/systemd).
    result = client.send("SHUTDOWN", {"reason": "test"})
    assert result.completed and result.result == {"stopping": True, "then": "RESTART_SAFE", "exit_status": 75}
    assert event_named(client, "AGENT_STOPPING").args["reason"] == "commanded: test; then RESTART_SAFE"
    assert agent.proc.wait(30) == 75


@pytest.mark.req("LNK-002")
def test_refusals_carry_their_reason(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    with pytest.raises(ArgumentError):  # checked on the ground: nothing sent
        client.send("PING", {"token": -1})
    # The same mistakes made by hand reach the agent, which must refuse them itself.
    cases = {
        FailureCode.UNKNOWN_COMMAND: [0x7777, 11, {}],
        FailureCode.OUT_OF_RANGE: [0x0002, 12, {"token": 2**40}],
        FailureCode.BAD_ARGUMENTS: [0x0002, 13, {"tokn": 1}],
    }
    for i, (code, body) in enumerate(cases.items()):
        client.link.send(pack_tc(0x010, 100 + i, 8, 1, msgpack.packb(body)))
        report = client.wait_for(
            lambda it, cid=body[1]: getattr(it.record, "cmd_id", None) == cid and not it.record.success, WAIT_S
        ).record
        assert report.stage is Stage.ACCEPTED and report.code is code and report.reason
    rejected = event_named(client, "COMMAND_REJECTED")
    assert rejected.args["reason"]
    values = hk_where(client, lambda v: v["cmd_rejected"] == 3)
    assert values["cmd_executed"] == 0


@pytest.mark.req("LNK-007")
def test_corrupt_packets_are_counted_and_lose_nothing_else(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    good = pack_tc(0x010, 1, 8, 1, msgpack.packb([1, 5, {}]))
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    for junk in (bytes(bad_crc), pack_tm(0x10, 0, 3, 25, b"x"), b"", b"\x00" * 3, os.urandom(300), pack_tc(0x123, 0, 8, 1)):
        client.link.send(junk)
    result = client.send("NOOP")
    assert result.completed
    values = hk_where(client, lambda v: v["cmd_executed"] == 1)
    assert values["tc_bad_packets"] == 6 and values["internal_errors"] == 0
    # The first 4 of a housekeeping period said one by one, the rest in one more at its end
    def rest_said(*_: object) -> bool:
        return any(r.event.name == "BAD_PACKET" and r.args["reason"].startswith("2 more malformed packets refused")
                   for r in client.events)

    if not rest_said():  # hk_where may have read it already
        client.wait_for(rest_said, WAIT_S)
    reasons = [r.args["reason"] for r in client.events if r.event.name == "BAD_PACKET"]
    assert any("CRC mismatch" in r for r in reasons) and any("telemetry packet" in r for r in reasons)
    assert any(r.startswith("2 more malformed packets refused, last: ") and "APID 0x123" in r for r in reasons)


@pytest.mark.req("LNK-007")
def test_zeromq_messages_not_of_two_frames_are_said_and_lose_nothing_else(start_agent, make_client, ipc_url):
    """Found in audit: a message on the command socket of other than an identity and a packet was counted in
    tc_bad_packets (the link's rx_bad_frames) and never said, as a malformed packet is. Said now, how many frames."""
    start_agent(ipc_url)
    client = make_client(ipc_url)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(parse_link_url(ipc_url).cmd_endpoint)
    try:
        raw.send_multipart([b"two", b"frames"])  # the agent's ROUTER adds the identity: three
        raw.send_multipart([b"", b"a", pack_tc(0x010, 1, 8, 1, msgpack.packb([1, 5, {}]))])  # four
        assert client.send("NOOP").completed

        def said(*_: object) -> bool:
            reasons = [r.args["reason"] for r in client.events if r.event.name == "BAD_PACKET"]
            return {"ZeroMQ message of 3 frames, expected 2 (an identity and a packet)",
                    "ZeroMQ message of 4 frames, expected 2 (an identity and a packet)"} <= set(reasons)

        if not said():
            client.wait_for(said, WAIT_S)
        values = hk_where(client, lambda v: v["tc_bad_packets"] >= 2)
        assert values["tc_bad_packets"] == 2 and values["cmd_executed"] == 1 and values["internal_errors"] == 0
    finally:
        raw.close()


@pytest.mark.req("LNK-007", "AGT-013")
def test_frames_the_link_refused_stay_in_tc_bad_packets_across_a_restart(short_dir):
    """Found in audit: tc_bad_packets is the link service's malformed packets plus the link's refused frames, and
    only the packets were kept with the counters: after a clean restart of an agent the count fell from 2 to 0.
    The restart as the agent makes it: a new link, and a link service given the counters the last one saved."""
    from flight.agent.link_service import LinkService
    from flight.clock import SimClock
    from flight.link.messages import Codec

    def service(link, counters=None):
        return LinkService(link, Codec(DICTIONARY), SimClock(0.0), lambda name, **args: None,
                           lambda packet, peer: None, counters)

    first = open_flight_link(f"zmq+ipc://{short_dir}/b")
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(f"ipc://{short_dir}/b.cmd")
    try:
        raw.send_multipart([b"two", b"frames"])
        raw.send_multipart([b"", b"a", b"b"])
        raw.send(b"after")  # a packet (malformed too: counted by the link service itself)
        poller = zmq.Poller()
        for sock in first.pollables():
            poller.register(sock, zmq.POLLIN)
        before = service(first)
        deadline = time.monotonic() + 10
        while before.tc_received < 1 and time.monotonic() < deadline:
            poller.poll(10)
            for inbound in first.receive():
                before.handle(inbound)
        assert before.telemetry()["tc_bad_packets"] == 3 and first.stats.rx_bad_frames == 2
        saved = before.counters()
    finally:
        raw.close()
        first.close()
    second = open_flight_link(f"zmq+ipc://{short_dir}/b")
    try:
        assert service(second, saved).telemetry()["tc_bad_packets"] == 3
    finally:
        second.close()


@pytest.mark.req("LNK-003")
def test_a_retried_command_runs_once(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    packet, cmd_id = client.codec.encode_command("NOOP", {})
    for _ in range(3):  # the same packet three times, as retries after lost replies would send it
        client.link.send(packet)
    completions = []
    client.wait_for(lambda it: getattr(it.record, "cmd_id", None) == cmd_id and it.record.stage is Stage.COMPLETED
                    and completions.append(it) is None and len(completions) >= 3, WAIT_S)
    values = hk_where(client, lambda v: v["tc_duplicates"] == 2)
    assert values["cmd_executed"] == 1 and values["cmd_accepted"] == 1


@pytest.mark.req("LNK-003")
def test_lazy_pirate_retry_after_silence_executes_once(start_agent, make_client, ipc_url):
    agent = start_agent(ipc_url)
    client = make_client(ipc_url)
    os.kill(agent.proc.pid, signal.SIGSTOP)  # the agent hears nothing and answers nothing
    out = {}
    sender = threading.Thread(target=lambda: out.update(r=client.send("NOOP", timeout_s=30, attempt_timeout_s=0.3, retries=50)))
    sender.start()
    try:
        deadline = threading.Event()
        while not deadline.wait(0.05):
            pending = list(client._pending.values())  # noqa: SLF001 - observing the retry from the test
            if pending and pending[0].attempts >= 3:
                break
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    sender.join(30)
    result = out["r"]
    assert result.completed and result.attempts >= 3
    values = hk_where(client, lambda v: v["cmd_executed"] >= 1)
    assert values["cmd_executed"] == 1


@pytest.mark.req("LNK-006")
def test_agent_restart_and_ground_restart_recover_by_themselves(start_agent, make_client, tcp_url):
    agent = start_agent(tcp_url)
    client = make_client(tcp_url)
    assert client.send("NOOP").completed
    agent.kill()
    with pytest.raises(CommandTimeout):
        client.send("NOOP", timeout_s=1.0, attempt_timeout_s=0.3)
    start_agent(tcp_url)
    # the new agent's start is waited for as conftest's make_client does: 60 s, a loaded machine took over 20
    result = client.send("PING", {"token": 5}, timeout_s=60.0, attempt_timeout_s=0.5, retries=120)
    assert result.completed
    hk_where(client, lambda v: v["cmd_executed"] >= 1)
    hk_where(client, lambda v: v["uptime_s"] > 0.3)
    assert client.agent_restarts == 1  # the ground noticed the agent began again
    client.close()
    fresh = make_client(tcp_url)  # the ground restarts too
    assert fresh.send("NOOP").completed


@pytest.mark.req("LNK-005")
def test_full_telemetry_queue_is_counted_not_silent(short_dir):
    link = open_flight_link(f"zmq+ipc://{short_dir}/q?queue=4")
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.rcvhwm = 1
    stuck.subscribe(b"")
    stuck.connect(f"ipc://{short_dir}/q.tm")
    try:
        deadline = threading.Event()
        while link.subscribers == 0 and not deadline.wait(0.01):
            link.receive()
        packet = pack_tm(0x10, 0, 3, 25, bytes(60_000), 0.0)
        refused = next((i for i in range(200_000) if not link.publish(packet)), None)
        assert refused is not None, "the queue never filled"
        assert link.stats.tx_dropped == 1 and link.stats.tx_packets == refused
    finally:
        stuck.close(0)
        link.close()


@pytest.mark.req("LNK-005", "LNK-006")
def test_a_subscriber_that_stops_reading_does_not_stop_the_stream_to_the_others(short_dir):
    """Found in audit: XPUB_NODROP refuses a packet to every subscriber when one subscriber's queue is
    full, so one console that stopped reading (suspended, or paged into a pager) stopped the stream to
    every other, the ground's archive included. Now the full one loses its packets (a gap it counts), the
    refusal is counted, and a reading console gets every packet, each published as sent."""
    from flight.link.transport import open_ground_link

    link = open_flight_link(f"zmq+ipc://{short_dir}/s?queue=50")
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.rcvhwm = 1
    stuck.subscribe(b"")
    stuck.connect(f"ipc://{short_dir}/s.tm")
    ground = None
    try:
        for _ in range(1000):  # the stuck SUB joined, then the console's (10 s bound)
            link.receive()
            if ground is None and link.subscribers:
                ground = open_ground_link(f"zmq+ipc://{short_dir}/s")
            if ground is not None and link.stream_reaches(ground._identity):
                break
            time.sleep(0.01)
        got: list[bytes] = []
        published = []
        for i in range(300):  # 18 MB: far past what the stuck SUB's queues and the socket's buffer hold
            packet = pack_tm(0x10, i, 3, 25, bytes(60_000), 0.0)
            published.append(link.publish(packet))
            for _ in range(200):  # the reading console takes each before the next (2 s bound)
                got += ground.receive()
                if len(got) > i:
                    break
                zmq.select([ground._tm], [], [], 0.01)
            else:
                break  # the stream stopped reaching it
        assert link.stats.tx_dropped >= 1, "the stuck subscriber's queue never filled"
        assert all(published) and len(got) == 300
        assert [unpack(p).seq_count for p in got] == list(range(300))
        assert link.subscribers == 2  # each console's subscription counted, not the topic's first alone
    finally:
        stuck.close(0)
        if ground is not None:
            ground.close()
        link.close()


@pytest.mark.req("LNK-005")
def test_a_stopping_agents_last_packets_leave_before_its_process_exits(short_dir):
    """Found in audit: the agent's link closed its sockets with a linger of 500 ms on the process's shared
    ZeroMQ context, which nothing ends, so close() returned at once and the process exited with the
    stream's queue unsent (900 of 1500 packets arrived). The link's own context, ended in close(), waits
    the linger out: every packet the link took has left when close() returns."""
    import subprocess
    import sys

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.rcvhwm = 0  # no bound: this reader holds whatever comes
    sub.subscribe(b"")
    sub.connect(f"ipc://{short_dir}/x.tm")
    script = (
        "import os, time\n"
        "from flight.link.transport import open_flight_link\n"
        f"link = open_flight_link('zmq+ipc://{short_dir}/x')\n"
        "for _ in range(6000):\n"  # a bound (60 s at least): the subscription comes once the link is bound
        "    link.receive()\n"
        "    if link.subscribers:\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "print(sum(link.publish(bytes(5000)) for _ in range(1500)), flush=True)\n"  # 7.5 MB: drained in the linger
        "link.close()\n"
        "os._exit(0)\n"  # at once: what close() left unsent goes with the process
    )
    try:
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert child.returncode == 0, child.stderr
        published = int(child.stdout)
        got = 0
        while got < published and sub.poll(10_000):  # the child has gone: what it sent is on its way here
            sub.recv()
            got += 1
        assert published > 0 and got == published
    finally:
        sub.close(0)


@pytest.mark.req("LNK-009")
def test_the_subscriber_count_follows_each_console(short_dir):
    """Two consoles on the stream are two subscribers, and one when either goes: the XPUB hands the agent
    every SUB's subscription and withdrawal, not only a topic's first and last (it said 1 for two)."""
    link = open_flight_link(f"zmq+ipc://{short_dir}/c")
    ctx = zmq.Context.instance()
    subs = [ctx.socket(zmq.SUB) for _ in range(2)]

    def settle(count: int) -> int:
        for _ in range(1000):  # subscriptions travel like packets (10 s bound)
            link.receive()
            if link.subscribers == count:
                break
            time.sleep(0.01)
        return link.subscribers

    try:
        for sub in subs:
            sub.subscribe(b"")
            sub.connect(f"ipc://{short_dir}/c.tm")
        assert settle(2) == 2
        subs[0].close(0)
        assert settle(1) == 1
        subs[1].close(0)
        assert settle(0) == 0
    finally:
        for sub in subs:
            sub.close(0)
        link.close()


@pytest.mark.req("LNK-005")
def test_a_message_larger_than_any_packet_is_refused_before_it_is_queued(short_dir):
    """The command socket once queued messages of any size (four of 128 MiB grew the agent by 700
    MiB); now a message past the largest packet, or a subscription past any real one, is refused by
    libzmq with the connection that sent it, and the next sender is heard."""
    from flight.link.packets import MAX_PACKET_LEN
    from flight.link.zmq_link import MAX_COMMAND_MESSAGE, MAX_SUBSCRIPTION

    link = open_flight_link(f"zmq+ipc://{short_dir}/big")
    ctx = zmq.Context.instance()
    sockets = [ctx.socket(zmq.DEALER) for _ in range(2)] + [ctx.socket(zmq.SUB) for _ in range(2)]
    huge, fine, greedy, plain = sockets
    try:
        huge.connect(f"ipc://{short_dir}/big.cmd")
        huge.send(bytes(MAX_COMMAND_MESSAGE + 1))
        greedy.subscribe(b"x" * (MAX_SUBSCRIPTION + 1))
        greedy.connect(f"ipc://{short_dir}/big.tm")
        time.sleep(0.2)  # both have arrived, or were refused, before the next ones are sent
        fine.connect(f"ipc://{short_dir}/big.cmd")
        fine.send(bytes(MAX_PACKET_LEN))
        plain.subscribe(b"")
        plain.connect(f"ipc://{short_dir}/big.tm")
        got: list[bytes] = []
        for _ in range(500):
            got += [inbound.packet for inbound in link.receive()]
            if got and link.subscribers:
                break
            time.sleep(0.01)
        time.sleep(0.1)
        got += [inbound.packet for inbound in link.receive()]
        assert [len(p) for p in got] == [MAX_PACKET_LEN] and link.subscribers == 1
    finally:
        for sock in sockets:
            sock.close(0)
        link.close()


@pytest.mark.parametrize(
    "url,cmd,tm",
    [
        ("zmq://127.0.0.1:6000", "tcp://127.0.0.1:6000", "tcp://127.0.0.1:6001"),
        ("zmq+ipc:///run/sunlit/link", "ipc:///run/sunlit/link.cmd", "ipc:///run/sunlit/link.tm"),
    ],
)
def test_zmq_urls(url, cmd, tm):
    cfg = parse_link_url(url)
    assert (cfg.kind, cfg.cmd_endpoint, cfg.tm_endpoint) == ("ZMQ", cmd, tm)


def test_serial_url():
    cfg = parse_link_url("serial:///dev/ttyTHS1?baud=921600&queue=50")
    assert (cfg.kind, cfg.device, cfg.baud, cfg.queue_packets) == ("SERIAL", "/dev/ttyTHS1", 921600, 50)


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("zmq://host", "HOST:PORT"),
        ("zmq://host:65535", "PORT"),
        ("serial:///dev/ttyUSB0?baud=fast", "baud"),
        ("serial:///dev/ttyUSB0?parity=E", "unknown option parity"),
        ("udp://x:1", "unknown link scheme"),
        ("zmq://h:1?queue=0", "at least one"),
        ("serial://dev/ttyUSB0", "three slashes"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, fragment):
    with pytest.raises(LinkConfigError, match=fragment):
        parse_link_url(url)


@pytest.mark.req("LNK-005")
@pytest.mark.parametrize("url", ["zmq://127.0.0.1:47400?queue=2147483648", "serial:///dev/ttyUSB0?queue=10000001"])
def test_a_queue_no_link_can_hold_is_refused_as_the_url_is_read(url):
    """Found in audit: queue=N had no upper bound. Past a C int the ZeroMQ sockets' high-water mark raised
    OverflowError as the link opened (a traceback at start, after the configuration had passed), and a serial
    link's queue bounded nothing. Now the URL is refused, naming queue, where the configuration is checked."""
    with pytest.raises(LinkConfigError, match="queue must hold at most 1000000 packets"):
        parse_link_url(url)
    assert parse_link_url(url.rsplit("=", 1)[0] + "=1000000").queue_packets == 1_000_000


@pytest.mark.req("LNK-007")
def test_hostile_command_data_gets_a_final_report_and_no_fault(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    unhashable_key = b"\x93\x01\x2a\x81\x91\x01\x01"  # msgpack [1, 42, {[1]: 1}]
    cases = [
        (42, unhashable_key, FailureCode.MALFORMED_PACKET),
        (43, msgpack.packb([0x0010, 43, {"mode": "\x01" * 20_000}]), FailureCode.OUT_OF_RANGE),
    ]
    for i, (cmd_id, data, code) in enumerate(cases):
        client.link.send(pack_tc(0x010, 200 + i, 8, 1, data))
        report = client.wait_for(lambda it, c=cmd_id: getattr(it.record, "cmd_id", None) == c, WAIT_S).record
        assert (report.stage, report.success, report.code) == (Stage.ACCEPTED, False, code)
        assert len(report.reason) <= 240
    values = hk_where(client, lambda v: v["cmd_rejected"] == 2)
    assert values["internal_errors"] == 0 and values["mode"] == "SAFE"


@pytest.mark.req("LNK-003")
def test_a_reused_cmd_id_with_other_content_is_refused_not_answered_from_cache(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    assert client.send("NOOP", cmd_id=77).completed
    second = client.send("PING", {"token": 3}, cmd_id=77)
    assert second.failure is not None and "already used" in second.failure.reason
    values = hk_where(client, lambda v: v["cmd_rejected"] == 1)
    assert values["cmd_executed"] == 1


@pytest.mark.req("LNK-006")
def test_replies_do_not_count_as_gaps(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    for _ in range(10):
        assert client.send("NOOP").completed
    hk_where(client, lambda v: v["cmd_executed"] == 10)
    assert client.gaps.missing == 0 and client.gaps.restarts == 0 and client.agent_restarts == 0


def test_corrupt_state_files_do_not_stop_the_agent(start_agent, make_client, ipc_url, tmp_path):
    state = tmp_path / "hostile"
    state.mkdir()
    (state / "state.json").write_text("[" * 100_000)
    (state / "params.json").write_bytes(b"\xff\xfe garbage")
    start_agent(ipc_url, "--state-dir", str(state))
    client = make_client(ipc_url)
    assert client.send("NOOP").completed
    assert (state / "state.json.corrupt").exists() and (state / "params.json.corrupt").exists()


def _dealer_packets(client) -> int:
    """Packets the client took on its DEALER (replies), not on the telemetry stream."""
    return client.link.stats.rx_packets - client.link.stream_packets


def _stream_reaches(client) -> None:
    """NOOPs until two in a row have their reports on the stream alone: the agent has taken in
    this console's presence (its SUB joined, its DEALER's identity announced). Waited for, not
    assumed after a fixed time: on a loaded machine the subscription's two hops can take longer.
    Two: a report's direct copy, sent after its stream copy, may still be on its way when the
    first NOOP completes; it goes before the second's reports on the same socket."""
    deadline = time.monotonic() + 20.0
    clean = 0
    while clean < 2:
        before = _dealer_packets(client)
        assert client.send("NOOP").completed
        clean = clean + 1 if _dealer_packets(client) == before else 0
        assert time.monotonic() < deadline, "the agent never sent this console's reports on the stream alone"


@pytest.mark.req("LNK-009")
def test_a_subscribed_sender_gets_each_report_once_on_the_stream(start_agent, make_client, ipc_url):
    start_agent(ipc_url)
    client = make_client(ipc_url)
    _stream_reaches(client)  # the agent learns of this console's SUB as it joins (presence topic)
    before = _dealer_packets(client), client.duplicates
    for _ in range(5):
        result = client.send("NOOP")
        assert result.completed and [r.stage for r in result.reports] == [Stage.ACCEPTED, Stage.COMPLETED]
    assert (_dealer_packets(client), client.duplicates) == before  # no second copy of any report
    # A retry opens a new DEALER (Lazy Pirate): the new identity is announced, the old one withdrawn.
    client.link.reset_commands()
    _stream_reaches(client)
    before = _dealer_packets(client), client.duplicates
    for _ in range(3):
        assert client.send("NOOP").completed
    assert (_dealer_packets(client), client.duplicates) == before


@pytest.mark.req("LNK-009")
def test_a_sender_without_a_stream_gets_its_reports_directly(start_agent, make_client, ipc_url):
    """A tool with only a DEALER (or one whose SUB has not joined yet) still gets every report."""
    from flight.link.transport import parse_link_url

    start_agent(ipc_url)
    watcher = make_client(ipc_url)  # someone is subscribed: the stream is up, just not the sender's
    codec = watcher.codec
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(parse_link_url(ipc_url).cmd_endpoint)
    try:
        packet, cmd_id = codec.encode_command("NOOP", {}, None, 7)
        dealer.send(packet)
        stages = []
        while len(stages) < 3 and dealer.poll(int(WAIT_S * 1000)):
            report = codec.decode_tm(unpack(dealer.recv()))
            assert report.cmd_id == cmd_id
            stages.append(report.stage)
        assert stages == [Stage.ACCEPTED, Stage.STARTED, Stage.COMPLETED]
        # ... and the subscribed watcher saw them on the stream, once each.
        seen = watcher.wait_for(lambda i: getattr(i.record, "cmd_id", None) == cmd_id
                                and getattr(i.record, "stage", None) == Stage.COMPLETED, WAIT_S)
        assert not seen.duplicate
    finally:
        dealer.close(0)


@pytest.mark.req("LNK-009")
def test_the_agent_knows_which_senders_the_stream_reaches(short_dir):
    from flight.link.transport import open_ground_link

    flight = open_flight_link(f"zmq+ipc://{short_dir}/p")
    ground = open_ground_link(f"zmq+ipc://{short_dir}/p")

    def settle(done) -> None:  # subscriptions travel like packets: take them in until done (10 s bound)
        for _ in range(1000):
            flight.receive()
            if done():
                return
            threading.Event().wait(0.01)

    try:
        first = ground._identity
        settle(lambda: flight.stream_reaches(first))
        assert flight.stream_reaches(first) and not flight.stream_reaches(b"someone-else")
        ground.reset_commands()  # the retry's new DEALER: its identity in, the old one out
        second = ground._identity
        settle(lambda: flight.stream_reaches(second) and not flight.stream_reaches(first))
        assert flight.stream_reaches(second) and not flight.stream_reaches(first)
        ground.close()  # the console goes: its SUB's subscriptions are withdrawn
        settle(lambda: not flight.stream_reaches(second))
        assert not flight.stream_reaches(second)
    finally:
        ground.close()
        flight.close()


@pytest.mark.req("LNK-007", "SEC-013")
def test_a_message_the_link_refused_is_handed_on_with_why_through_telemetry_sealing(short_dir):
    """The frames a link refused reach the agent whatever wraps the link: with tm_auth its link is a
    TelemetrySealingLink, whose FlightLink default (nothing refused) would hide the wrapped link's."""
    from flight.link.interface import Refused
    from flight.link.sdls import KeySlot, TelemetrySealingLink

    inner = open_flight_link(f"zmq+ipc://{short_dir}/s")
    flight = TelemetrySealingLink(inner, KeySlot(7, bytes(range(120, 152)), "telemetry"), epoch=1)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(f"ipc://{short_dir}/s.cmd")
    try:
        raw.send_multipart([b"two", b"frames"])
        raw.send(b"after")
        poller = zmq.Poller()
        for sock in flight.pollables():
            poller.register(sock, zmq.POLLIN)
        got: list[bytes] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            poller.poll(10)
            got += [inbound.packet for inbound in flight.receive()]
        assert got == [b"after"]  # the next message taken
        assert flight.take_refused() == Refused(("ZeroMQ message of 3 frames, expected 2 (an identity and a packet)",),
                                                1, "ZeroMQ message of 3 frames, expected 2 (an identity and a packet)")
        assert flight.take_refused() == Refused() and inner.stats.rx_bad_frames == 1
    finally:
        raw.close()
        flight.close()


@pytest.mark.req("LNK-004")
def test_receive_takes_every_waiting_command_and_counts_a_badly_framed_one(short_dir):
    """The agent's end reads a socket only while it says a whole message waits: every command
    that came is taken, each sender's in order, a message of the wrong shape is counted without
    costing the ones around it, and a call with nothing waiting returns nothing; the ground's
    end likewise takes every packet waiting, in order."""
    from flight.link.transport import open_ground_link

    flight = open_flight_link(f"zmq+ipc://{short_dir}/r")
    ground = open_ground_link(f"zmq+ipc://{short_dir}/r")
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.connect(f"ipc://{short_dir}/r.cmd")
    try:
        raw.send(b"first")
        raw.send_multipart([b"two", b"frames"])  # the agent's ROUTER sees three: one too many
        raw.send(b"second")
        ground.send(b"third")
        poller = zmq.Poller()
        for sock in flight.pollables():
            poller.register(sock, zmq.POLLIN)
        got: list[bytes] = []
        calls = 0
        while len(got) < 3 and calls < 1000:  # 10 s at most
            poller.poll(10)
            got += [inbound.packet for inbound in flight.receive()]
            calls += 1
        # One sender's in its order (the ROUTER queues senders fairly, not in arrival order).
        assert [p for p in got if p != b"third"] == [b"first", b"second"] and b"third" in got
        assert len(got) == 3 and flight.stats.rx_bad_frames == 1
        assert flight.receive() == []  # nothing left, and asking again costs nothing
        while flight.subscribers == 0 and calls < 2000:  # the ground's SUB joins like a packet comes
            poller.poll(10)
            flight.receive()
            calls += 1
        for i in range(5):
            assert flight.publish(b"tm%d" % i)
        seen: list[bytes] = []
        for _ in range(1000):
            if len(seen) >= 5:
                break
            time.sleep(0.01)
            seen += ground.receive()
        assert seen == [b"tm%d" % i for i in range(5)] and ground.receive() == []
    finally:
        raw.close(0)
        ground.close()
        flight.close()


@pytest.mark.req("LNK-004", "SEC-008")
def test_an_ipv6_loopback_link_carries_commands_replies_and_telemetry():
    """Found in audit: zmq://[::1]:PORT (a loopback link SEC-008 names) became tcp://::1:PORT, which the
    agent could not bind ("No such device") and the ground connected to nothing, without a word. The
    brackets go back into the endpoint and the sockets take IPv6."""
    import socket

    from flight.link.transport import open_ground_link
    from hil.agent_process import free_tcp_port_pair

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:  # a host (or container) without IPv6 loopback: nothing here to carry it
        pytest.skip(f"no IPv6 loopback on this host: {exc}")
    url = f"zmq://[::1]:{free_tcp_port_pair()}"
    cfg = parse_link_url(url)
    assert cfg.cmd_endpoint.startswith("tcp://[::1]:") and cfg.tm_endpoint.startswith("tcp://[::1]:")
    flight = open_flight_link(url)
    ground = open_ground_link(url)
    try:
        ground.send(b"command")
        got = []
        for _ in range(1000):  # 10 s at most
            got += flight.receive()
            if got and flight.subscribers:
                break
            time.sleep(0.01)
        assert [inbound.packet for inbound in got] == [b"command"] and flight.subscribers == 1
        assert flight.reply(got[0].peer, b"reply") and flight.publish(b"stream")
        seen: list[tuple[bytes, bool]] = []
        for _ in range(1000):
            seen += ground.receive_tagged()
            if len(seen) == 2:
                break
            time.sleep(0.01)
        assert sorted(seen) == [(b"reply", False), (b"stream", True)]
    finally:
        ground.close()
        flight.close()


@pytest.mark.req("LNK-004")
@pytest.mark.parametrize("url,fragment", [
    ("zmq+ipc://tmp/sunlit/link", "three slashes and no host"),  # was the socket /sunlit/link, "tmp" dropped
    ("zmq+ipc:///run/sunlit/link?baud=9600", r"unknown option baud \(zmq\+ipc takes queue=N\)"),  # was ignored
    ("zmq+ipc:///" + "d/" * 50 + "link", "the path is 105 bytes; with its .cmd/.tm it must fit a Unix socket's 107"),
])
def test_an_ipc_url_is_refused_naming_what_would_be_lost_or_not_fit(url, fragment):
    """Found in audit: an ipc URL's host part and options were dropped without a word, and a path longer than
    a Unix socket takes was refused only by ZeroMQ as the link opened (on the ground's CLI, a traceback)."""
    with pytest.raises(LinkConfigError, match=fragment):
        parse_link_url(url)
    assert parse_link_url("zmq+ipc:///" + "d/" * 49 + "link").cmd_endpoint.endswith("/link.cmd")  # 103 + 4 fits


@pytest.mark.req("LNK-004")
@pytest.mark.parametrize("host", ["*", "-x"])
def test_a_ground_link_zeromq_cannot_connect_is_an_oserror_naming_the_url(host):
    """Found in audit: open_ground_link("zmq://*:5550"), the agent's bind address given to a console, raised
    ZeroMQ's own error, which the ground's CLI does not expect (a traceback); the flight end already said
    OSError naming the URL. Now both do, and the socket already made is closed."""
    from flight.link.transport import open_ground_link

    ctx = zmq.Context.instance()
    before = len(ctx._sockets)
    with pytest.raises(OSError, match=re.escape(f"cannot connect zmq://{host}:47500 (tcp://{host}:47500, ")):
        open_ground_link(f"zmq://{host}:47500")
    assert len(ctx._sockets) == before  # the SUB made before the failed connect is not left open
