"""The serial link end to end over a real pseudo-terminal cable (hil/ptyline.py).

The flight end is on ``a``, the ground end on ``b``. Waiting is a loop with a deadline on
the links' own descriptors, never a sleep standing in for "long enough".
"""

from __future__ import annotations

import select
import time

import pytest
import serial
import zmq

from flight.link import serial_link
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import FailureCode, ValueSpec, ValueType
from flight.link.framing import encode_frame
from flight.link.messages import Codec, EventRecord, HkRecord, Stage, Verification
from flight.link.packets import PacketError, Telecommand, Telemetry, unpack
from flight.link.serial_link import SerialFlightLink, SerialGroundLink
from flight.link.transport import FlightLink, GroundLink, open_flight_link, open_ground_link, parse_link_url
from hil.ptyline import B_TO_A, PtyLine, RandomNoise, StreamFaults

DEADLINE_S = 5.0
T0_S = 1_700_000_000.125


@pytest.fixture
def line():
    with PtyLine() as cable:
        yield cable


def ends(line: PtyLine, queue: int = 1000, a: str | None = None) -> tuple[SerialFlightLink, SerialGroundLink]:
    flight = SerialFlightLink(parse_link_url(f"serial://{a or line.a_path}?baud=115200&queue={queue}"))
    ground = SerialGroundLink(parse_link_url(f"serial://{line.b_path}?queue={queue}"))
    return flight, ground


def pump(flight, ground, want_flight: int = 0, want_ground: int = 0, timeout_s: float = DEADLINE_S, until=None):
    """Flush and receive on both ends until each has what is wanted (or ``until(got_flight,
    got_ground)`` holds) or the deadline passes."""
    got_flight: list[bytes] = []
    got_ground: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for link in (flight, ground):
            if link is not None:
                link.flush()
        if flight is not None:
            got_flight += [inbound.packet for inbound in flight.receive()]
        if ground is not None:
            got_ground += ground.receive()
        if len(got_flight) >= want_flight and len(got_ground) >= want_ground:
            if until is None or until(got_flight, got_ground):
                break
        fds = [fd for link in (flight, ground) if link is not None for fd in link.pollables()]
        select.select(fds, [], [], 0.01)
    return got_flight, got_ground


def valid_value(spec: ValueSpec):
    """A value far from zero that the spec accepts: large ints, text with a NUL, bytes with 0x00."""
    if spec.type is ValueType.ENUM:
        return spec.coerce(spec.choices[-1].lower())  # the console may type it in any case
    typical = {
        ValueType.BOOL: True,
        ValueType.U8: 200,
        ValueType.U16: 60_000,
        ValueType.U32: 4_000_000_000,
        ValueType.U64: 2**63 + 5,
        ValueType.I32: -2_000_000_000,
        ValueType.I64: -(2**62),
        ValueType.F32: 12.5,
        ValueType.F64: -1234.0625,
        ValueType.STRING: "héllo\x00wörld",
        ValueType.BYTES: bytes(range(256)),
    }
    value = typical[spec.type]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.max is not None:
            value = min(value, type(value)(spec.max))
        if spec.min is not None:
            value = max(value, type(value)(spec.min))
    if isinstance(value, (str, bytes)) and spec.max_len is not None:
        value = value[: spec.max_len]
    return spec.coerce(value)


def channel_value(channel):
    if channel.type is ValueType.ENUM:
        return channel.choices[-1]
    return valid_value(ValueSpec(channel.type))


def test_links_are_what_transport_opens(line):
    flight = open_flight_link(f"serial://{line.a_path}")
    ground = open_ground_link(f"serial://{line.b_path}")
    try:
        assert isinstance(flight, SerialFlightLink) and isinstance(flight, FlightLink) and flight.kind == "SERIAL"
        assert isinstance(ground, SerialGroundLink) and isinstance(ground, GroundLink) and ground.kind == "SERIAL"
        with pytest.raises(serial.SerialException):  # exclusive: a second program cannot share the port
            SerialFlightLink(parse_link_url(f"serial://{line.a_path}"))
    finally:
        flight.close()
        ground.close()


@pytest.mark.req("LNK-004")
def test_every_command_reaches_the_flight_end_intact(line):
    flight, ground = ends(line)
    ground_codec, flight_codec = Codec(DICTIONARY), Codec(DICTIONARY)
    sent = []
    for command in DICTIONARY.commands:
        args = {a.name: valid_value(a.spec) for a in command.args}
        packet, cmd_id = ground_codec.encode_command(command.name, args, source_id=7)
        assert ground.send(packet)
        sent.append((command.name, command.validate_args(args), cmd_id))
    got, _ = pump(flight, ground, want_flight=len(sent))
    decoded = []
    for raw in got:
        tc = unpack(raw)
        assert isinstance(tc, Telecommand) and tc.source_id == 7
        request = flight_codec.decode_command(tc)
        decoded.append((request.command.name, request.args, request.cmd_id))
    assert decoded == sent
    assert ground.stats.tx_packets == len(sent) and flight.stats.rx_packets == len(sent)
    assert flight.stats.rx_bad_frames == flight.stats.rx_skipped_bytes == 0
    flight.close()
    ground.close()


def test_every_telemetry_kind_reaches_the_ground_intact(line):
    flight, ground = ends(line)
    codec = Codec(DICTIONARY)
    expected = []
    packets = []
    for hk in DICTIONARY.packets:
        values = {name: channel_value(DICTIONARY.channel_by_name[name]) for name in hk.channels}
        packets.append(codec.encode_hk(hk.sid, values, T0_S))
        expected.append(("hk", hk.name, values))
    for event in DICTIONARY.events:
        args = {name: f"{name} \x00 value" for name in event.args}
        packets.append(codec.encode_event(event.name, args, T0_S))
        expected.append(("event", event.name, args))
    for stage in Stage:
        for success in (True, False):
            v = Verification(
                stage, success, request_id=0x18100005, cmd_id=2**62 + 3, opcode=0x0002,
                code=FailureCode.NONE if success else FailureCode.EXECUTION_ERROR,
                reason="" if success else "bus fault at 0x00ff",
                result={"token": 4_000_000_000, "blob": bytes(8)} if success else {},
            )
            packets.append(codec.encode_verification(v, T0_S))
            expected.append(("verification", v))
    packets.append(codec.encode_pong(T0_S))
    expected.append(("pong",))
    for i, packet in enumerate(packets):
        assert (flight.reply(object(), packet) if i % 2 else flight.publish(packet)) is True
    _, got = pump(flight, ground, want_ground=len(packets))
    assert got == packets
    decoded = []
    for raw in got:
        tm = unpack(raw)
        assert isinstance(tm, Telemetry) and tm.time_s == pytest.approx(T0_S, abs=1e-3)
        record = codec.decode_tm(tm)
        if isinstance(record, HkRecord):
            decoded.append(("hk", record.packet.name, record.values))
        elif isinstance(record, EventRecord):
            decoded.append(("event", record.event.name, record.args))
        elif isinstance(record, Verification):
            decoded.append(("verification", record))
        else:
            decoded.append(("pong",))
    assert decoded == expected
    assert flight.stats.tx_packets == ground.stats.rx_packets == len(packets)
    assert flight.stats.tx_bytes == ground.stats.rx_bytes == sum(map(len, packets))
    flight.close()
    ground.close()


def test_serial_efficiency_of_256_byte_packets(line):
    flight, ground = ends(line)
    codec = Codec(DICTIONARY)
    pad = next(n for n in range(300) if len(codec.encode_event("BAD_PACKET", {"reason": "x" * n}, T0_S)) == 256)
    packets = [codec.encode_event("BAD_PACKET", {"reason": "x" * pad}, T0_S) for _ in range(50)]
    assert {len(p) for p in packets} == {256}
    for packet in packets:
        assert flight.publish(packet)
    _, got = pump(flight, ground, want_ground=len(packets))
    assert got == packets
    efficiency = ground.stats.rx_bytes / ground.rx_wire_bytes
    assert flight.tx_wire_bytes == ground.rx_wire_bytes
    assert efficiency >= 0.97, f"{efficiency:.4f} packet bytes per wire byte"
    flight.close()
    ground.close()


@pytest.mark.req("LNK-004")
def test_damage_on_the_line_loses_only_the_damaged_packets():
    codec = Codec(DICTIONARY)
    packets = [codec.encode_event("PING_RECEIVED", {"token": "t" * (i * 7 % 300)}, T0_S) for i in range(40)]
    frames = [encode_frame(p) for p in packets]
    starts = [sum(map(len, frames[:i])) for i in range(len(frames))]
    mid = [starts[i] + len(frames[i]) // 2 for i in range(len(frames))]
    end = [starts[i] + len(frames[i]) - 1 for i in range(len(frames))]  # the closing 0x00
    garbage = b"\x13\x37\x00\xfe\xff\x00\x42"
    faults = StreamFaults(
        flip={mid[3]: 0x10, end[15]: 0x01},  # a bit in the body; the closing delimiter itself
        drop=[mid[7], *range(mid[19], end[19])],  # one byte; the back half of a frame (truncated)
        insert={mid[11]: garbage, starts[25]: garbage, starts[30]: b"\xaa" * 600},  # inside, between, between
    )
    damaged = {3, 7, 11, 15, 19}
    with PtyLine(a_to_b=faults) as line:
        flight, ground = ends(line)
        for packet in packets:
            assert flight.publish(packet)
        _, got = pump(flight, ground, until=lambda _, got_ground: packets[-1] in got_ground)  # never damaged
        # Whatever else the deframer let through must fail the CRC one layer up.
        good, crc_failures = [], 0
        for raw in got:
            try:
                unpack(raw)
                good.append(raw)
            except PacketError:
                crc_failures += 1
        assert good == [p for i, p in enumerate(packets) if i not in damaged]
        assert len(faults.damaged) >= 5
        stats = ground.stats
        assert stats.rx_bad_frames + crc_failures >= len(damaged) + 2  # + the two garbage runs between frames
        assert stats.rx_skipped_bytes >= 600 + 2 * 5
        flight.close()
        ground.close()


@pytest.mark.req("LNK-007")
def test_frames_refused_are_kept_with_why_for_the_agent_and_a_flood_keeps_only_a_few(line):
    """Found in audit: a frame the line refused (not COBS, too long, too short for a header) was counted in
    rx_bad_frames, so in tc_bad_packets, and said by nothing. The link keeps why, until the agent takes it; a flood
    keeps the first few reasons and the last, and counts the rest, so it grows no memory; the next frame is taken."""
    from flight.link.framing import DEFAULT_MAX_FRAME_LEN
    from flight.link.interface import REFUSED_KEPT, Refused

    flight, _ground = ends(line)
    good = Codec(DICTIONARY).encode_command("NOOP", {})[0]
    not_cobs, headless = b"\x00\x05\x01\x00", b"\x00\x02\x17\x00"  # a code byte past the end; one byte
    too_long = b"\x00" + b"\x01" * (DEFAULT_MAX_FRAME_LEN + 1) + b"\x00"
    line.inject(B_TO_A, not_cobs + headless + too_long + encode_frame(good))
    got, _ = pump(flight, None, want_flight=1)
    assert got == [good]
    refused = flight.take_refused()
    assert refused.count == flight.stats.rx_bad_frames == 3 and len(refused.reasons) == 3
    assert all(r.startswith("serial frame ") for r in refused.reasons)
    assert "not valid COBS" in refused.reasons[0] and "a primary header needs 6" in refused.reasons[1]
    assert f"over {DEFAULT_MAX_FRAME_LEN} bytes" in refused.reasons[2] == refused.last
    assert flight.take_refused() == Refused()  # taken once
    line.inject(B_TO_A, not_cobs * 3000 + headless + encode_frame(good))  # a flood, never taken meanwhile
    got, _ = pump(flight, None, want_flight=1)
    assert got == [good]
    flood = flight.take_refused()
    assert flood.count == 3001 and flight.stats.rx_bad_frames == 3004 and len(flood.reasons) == REFUSED_KEPT
    assert all("not valid COBS" in r for r in flood.reasons) and "a primary header needs 6" in flood.last
    flight.close()


def test_random_noise_never_delivers_a_wrong_command():
    noise = RandomNoise(rate=1 / 400, seed=4)  # about 27 flipped bytes in 10.7 kB
    codec_g, codec_f = Codec(DICTIONARY), Codec(DICTIONARY)
    sent = [codec_g.encode_command("PING", {"token": i}) for i in range(300)]
    frames = [encode_frame(packet) for packet, _ in sent]
    with PtyLine(b_to_a=noise) as line:
        flight, ground = ends(line)
        for packet, _ in sent:
            assert ground.send(packet)
        total_wire = sum(map(len, frames))
        got, _ = pump(flight, ground, until=lambda *_: noise.position >= total_wire)  # all went through the noise
        line.set_fault(B_TO_A, None)
        sentinel, _ = codec_g.encode_command("NOOP", {})
        assert ground.send(sentinel)
        got += pump(flight, ground, until=lambda got_flight, _: sentinel in got + got_flight)[0]
        assert got[-1] == sentinel, "the line is in order: everything sent before the sentinel is in"
        got.pop()
        hit, offset = set(), 0
        for i, frame in enumerate(frames):
            hit |= {i for d in noise.damaged if offset <= d < offset + len(frame)}
            offset += len(frame)
        assert len(hit) >= 10, f"the seed should damage many frames, hit {sorted(hit)}"
        tokens, crc_failures = [], 0
        for raw in got:
            try:
                tokens.append(codec_f.decode_command(unpack(raw)).args["token"])
            except PacketError:
                crc_failures += 1
        assert tokens == [i for i in range(len(sent)) if i not in hit]
        assert flight.stats.rx_bad_frames + crc_failures >= len(hit)
        flight.close()
        ground.close()


@pytest.mark.req("LNK-005")
def test_full_queue_drops_and_counts_then_drains_in_order(line):
    flight, ground = ends(line, queue=8)
    codec = Codec(DICTIONARY)
    line.pause()  # the cable stops: kernel buffers fill, then the link's queue, then drops
    accepted, refused = [], 0
    for i in range(20_000):
        packet = codec.encode_event("AGENT_STOPPING", {"reason": f"{i:06d}" * 40}, T0_S)
        if flight.publish(packet):
            accepted.append(packet)
        else:
            refused += 1
            if refused == 25:
                break
    assert refused == 25 == flight.stats.tx_dropped
    assert flight.queued_packets == 8 and flight.wants_write()
    assert flight.write_pollables() == flight.pollables() == [flight._ser.fileno()]
    line.resume()
    _, got = pump(flight, ground, want_ground=len(accepted))
    assert got == accepted, "every accepted packet arrives once, in order, despite partial writes"
    assert not flight.wants_write()
    assert flight.stats.tx_packets == len(accepted)
    flight.close()
    ground.close()


def test_reset_commands_forgets_unsent_commands(line):
    flight, ground = ends(line, queue=5)
    codec = Codec(DICTIONARY)
    line.pause()
    sent = 0
    while ground.queued_packets < 5:
        assert ground.send(codec.encode_command("NOOP", {})[0])
        sent += 1
    ground.reset_commands()
    assert ground.queued_packets <= 1 and ground.stats.tx_dropped >= 4
    line.resume()
    got, _ = pump(flight, ground, want_flight=sent - ground.stats.tx_dropped)
    assert len(got) == sent - ground.stats.tx_dropped
    assert all(unpack(raw) for raw in got)
    flight.close()
    ground.close()


def test_poller_wakes_on_the_serial_descriptors(line):
    flight, ground = ends(line)
    poller = zmq.Poller()
    for fd in flight.pollables():
        poller.register(fd, zmq.POLLIN)
    packet, _ = Codec(DICTIONARY).encode_command("NOOP", {})
    assert ground.send(packet)
    got: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    while not got and time.monotonic() < deadline:
        if dict(poller.poll(100)).get(flight.pollables()[0], 0) & zmq.POLLIN:
            got += [inbound.packet for inbound in flight.receive()]
    assert got == [packet]
    out = zmq.Poller()
    out.register(flight.write_pollables()[0], zmq.POLLOUT)
    assert dict(out.poll(1000)).get(flight.write_pollables()[0], 0) & zmq.POLLOUT
    flight.close()
    ground.close()


def test_restarting_either_end_and_the_link_works_again(line):
    flight, ground = ends(line)
    codec = Codec(DICTIONARY)
    for round_ in range(3):
        flight.close()
        flight.close()  # idempotent
        assert flight.pollables() == [] and flight.receive() == []
        ground.send(codec.encode_command("PING", {"token": 100 + round_})[0])  # sent into a closed port
        pump(None, ground, timeout_s=0.05)
        flight = SerialFlightLink(parse_link_url(f"serial://{line.a_path}"))
        command, cmd_id = codec.encode_command("PING", {"token": round_})
        assert ground.send(command)
        # The command sent while closed may still arrive (it was in the cable), or be lost; the new one must.
        got, _ = pump(flight, ground, until=lambda got_flight, _: command in got_flight)
        assert command in got and all(isinstance(unpack(raw), Telecommand) for raw in got)
        ground.close()
        ground = SerialGroundLink(parse_link_url(f"serial://{line.b_path}"))
        tm = codec.encode_event("AGENT_STARTED", {"dict_hash": DICTIONARY.version_hash, "link": "serial", "boot_count": 2, "previous_stop": "clean", "hal": "sim"}, T0_S)
        assert flight.publish(tm)
        _, got = pump(flight, ground, want_ground=1)
        assert got == [tm]
    flight.close()
    ground.close()


def test_unplugged_device_is_counted_and_reopened_with_back_off(line, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(serial_link, "monotonic", lambda: clock[0])
    flight, ground = ends(line, queue=4, a=line.a_link)  # a stable name, like /dev/serial/by-id/...
    codec = Codec(DICTIONARY)
    hello = codec.encode_event("COUNTERS_RESET", {}, T0_S)
    assert flight.publish(hello)
    assert pump(flight, ground, want_ground=1)[1] == [hello]

    line.unplug("a")
    assert flight.receive() == []  # EIO or hang-up: counted, closed, no exception
    assert flight.device_errors == 1 and not flight.is_open and flight.pollables() == []
    assert "read" in flight.last_error
    queued = [codec.encode_event("TM_DROPPED", {"count": i}, T0_S) for i in range(6)]
    results = [flight.publish(p) for p in queued]
    assert results == [True] * 4 + [False] * 2 and flight.stats.tx_dropped == 2  # queued while lost, then refused

    clock[0] += 0.5
    flight.receive()
    assert flight.device_errors == 1, "no reopen attempt within the back-off"
    clock[0] += 0.5
    flight.flush()
    assert flight.device_errors == 2 and not flight.is_open, "one attempt, device still absent"
    clock[0] += 0.9
    line.replug("a")
    flight.receive()
    assert not flight.is_open and flight.device_errors == 2
    clock[0] += 0.1
    flight.receive()
    assert flight.is_open and flight.reopens == 1

    _, got = pump(flight, ground, want_ground=4)
    assert got == queued[:4]
    flight.close()
    assert not flight.is_open
    clock[0] += 10
    flight.receive()
    assert not flight.is_open, "close() is final: no reopen"
    ground.close()


def test_write_to_an_unplugged_device_is_counted_and_the_frame_resent_whole(line, monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(serial_link, "monotonic", lambda: clock[0])
    flight, ground = ends(line, a=line.a_link)
    codec = Codec(DICTIONARY)
    line.unplug("a")
    packet = codec.encode_event("AGENT_STOPPING", {"reason": "power"}, T0_S)
    assert flight.publish(packet)  # the write fails: counted, kept for later
    assert flight.device_errors == 1 and "write" in flight.last_error and flight.wants_write()
    line.replug("a")
    clock[0] += 1.0
    _, got = pump(flight, ground, want_ground=1)
    assert got == [packet]
    assert flight.stats.tx_packets == 1 and flight.stats.tx_dropped == 0
    flight.close()
    ground.close()


@pytest.mark.req("LNK-004")
@pytest.mark.parametrize("baud", ["0", "1", "99999999999"])
def test_a_baud_rate_no_line_runs_at_is_refused_naming_it(baud):
    """Found in an audit: baud=99999999999 overflowed inside pyserial (a traceback at start), and baud=1 was
    taken, a line of 0.1 byte/s that sends nothing live."""
    from flight.link.interface import LinkConfigError

    with pytest.raises(LinkConfigError, match=rf"baud {baud} is outside 300\.\.12000000"):
        parse_link_url(f"serial:///dev/ttyUSB0?baud={baud}")


@pytest.mark.req("LNK-004")
def test_a_device_absent_at_start_is_waited_for_where_asked_and_refused_where_not(line, monkeypatch):
    """Found in an audit: the agent and the ground server did not start while a USB adapter was absent (still
    enumerating, or one of several spacecraft's unplugged). An end that waits counts the failure and opens the
    device when it comes, as after a loss; one that does not (a console, the self-test) says so at once."""
    clock = [100.0]
    monkeypatch.setattr(serial_link, "monotonic", lambda: clock[0])
    line.unplug("a")
    with pytest.raises(serial.SerialException):
        SerialFlightLink(parse_link_url(f"serial://{line.a_link}"))
    flight = open_flight_link(f"serial://{line.a_link}", wait_for_device=True)
    assert not flight.is_open and flight.device_errors == 1 and flight.last_error.startswith("open ")
    assert flight.stats.device_errors == 1 and flight.receive() == []  # within the back-off: no try
    line.replug("a")
    clock[0] += 1.0
    ground = SerialGroundLink(parse_link_url(f"serial://{line.b_path}"))
    packet = Codec(DICTIONARY).encode_event("COUNTERS_RESET", {}, T0_S)
    assert flight.publish(packet)  # opens the device, and writes
    assert flight.is_open and flight.reopens == 1 and flight.stats.reopens == 1
    assert pump(flight, ground, want_ground=1)[1] == [packet]
    flight.close()
    ground.close()


@pytest.mark.req("LNK-004")
def test_a_termios_error_while_reopening_is_a_device_error_not_an_exception(line, monkeypatch):
    """Found in an audit: pyserial lets termios.error (not an OSError) through from tcflush, as an adapter that
    drops off the bus during a reopen gives, and it escaped the agent's loop."""
    import termios

    import serial.serialposix

    clock = [100.0]
    monkeypatch.setattr(serial_link, "monotonic", lambda: clock[0])
    flight, ground = ends(line, a=line.a_link)
    line.unplug("a")
    assert flight.receive() == [] and not flight.is_open and flight.device_errors == 1
    line.replug("a")

    def bouncing(fd: int, queue: int) -> None:
        raise termios.error(5, "Input/output error")

    monkeypatch.setattr(serial.serialposix.termios, "tcflush", bouncing)
    clock[0] += 1.0
    assert flight.receive() == [] and not flight.is_open and flight.device_errors == 2
    assert "Input/output error" in flight.last_error
    monkeypatch.undo()
    monkeypatch.setattr(serial_link, "monotonic", lambda: clock[0])
    clock[0] += 1.0
    flight.receive()
    assert flight.is_open and flight.reopens == 1
    flight.close()
    ground.close()


@pytest.mark.req("LNK-004")
def test_a_device_that_is_no_serial_port_is_refused_naming_it(tmp_path):
    """Found in audit: a path that opens but is no tty (a regular file, /dev/null, a wrong device node) was refused
    as pyserial's "Could not configure port: (25, 'Inappropriate ioctl for device')", which names no device."""
    not_a_tty = tmp_path / "ttyUSB0"
    not_a_tty.write_bytes(b"")
    with pytest.raises(serial.SerialException) as info:
        open_flight_link(f"serial://{not_a_tty}")
    assert str(info.value).startswith(f"{not_a_tty}: ") and "configure" in str(info.value)
    with pytest.raises(serial.SerialException, match=f"could not open port {tmp_path / 'absent'}"):
        open_ground_link(f"serial://{tmp_path / 'absent'}")  # pyserial's own words where they name it
    flight = open_flight_link(f"serial://{not_a_tty}", wait_for_device=True)
    assert not flight.is_open and flight.device_errors == 1 and flight.last_error.startswith(f"open {not_a_tty}: ")
    flight.close()


@pytest.mark.req("LNK-004")
def test_a_port_opened_above_descriptor_1023_still_receives(line):
    """Found in audit: reads went through pyserial's read(), whose select() refuses a descriptor above 1023; in a
    process with many files open (a ground server and its clients) every read was a device error, the port
    closed and reopened for ever, and nothing was received."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open {hard} files, not the 1200 the test needs")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        flight, ground = ends(line)
        assert flight.pollables()[0] > 1023
        packet, _ = Codec(DICTIONARY).encode_command("PING", {"token": 7})
        assert ground.send(packet)
        waiter = select.poll()  # pump()'s select() cannot wait on these descriptors either
        waiter.register(flight.pollables()[0], select.POLLIN)
        got: list[bytes] = []
        deadline = time.monotonic() + DEADLINE_S
        while not got and time.monotonic() < deadline:
            ground.flush()
            waiter.poll(10)
            got += [inbound.packet for inbound in flight.receive()]
        assert got == [packet]
        assert flight.device_errors == 0 and flight.is_open
        flight.close()
        ground.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.req("LNK-007")
def test_a_frame_a_reopen_abandons_is_counted_in_bad_frames_and_its_bytes_in_skipped_bytes(line, monkeypatch):
    """Found in audit: a frame begun before the device was lost, abandoned at the reopen, was counted a bad frame
    but its bytes were in no ``rx_skipped_bytes`` (housekeeping's noise on the line): the two disagreed."""
    clock = [100.0]
    monkeypatch.setattr(serial_link, "monotonic", lambda: clock[0])
    flight, ground = ends(line, a=line.a_link)
    line.inject(B_TO_A, b"\x00" + b"\x11" * 40)  # a frame begun; its end never comes
    deadline = time.monotonic() + DEADLINE_S
    while flight.deframer.pending_bytes < 40 and time.monotonic() < deadline:
        flight.receive()
        select.select(flight.pollables(), [], [], 0.01)
    assert flight.deframer.pending_bytes == 40 and flight.stats.rx_skipped_bytes == 0
    line.unplug("a")
    flight.receive()
    line.replug("a")
    clock[0] += 1.0
    flight.receive()
    assert flight.reopens == 1 and flight.deframer.pending_bytes == 0
    assert flight.stats.rx_bad_frames == 1 and flight.stats.rx_skipped_bytes == 40
    assert flight.take_refused().reasons == ("serial partial frame of 40 bytes abandoned",)
    packet, _ = Codec(DICTIONARY).encode_command("PING", {"token": 3})
    assert ground.send(packet)
    assert pump(flight, ground, want_flight=1)[0] == [packet]  # and the next frame is whole
    flight.close()
    ground.close()
