"""COBS framing: round trips, efficiency, and resynchronisation after every kind of damage."""

from __future__ import annotations

import random

import pytest
from cobs import cobs

from flight.link.framing import DEFAULT_MAX_FRAME_LEN, Deframer, encode_frame, max_encoded_len
from flight.link.packets import MAX_PACKET_LEN, PacketError, pack_tc, pack_tm, unpack

TM_OVERHEAD = 22  # TM primary + secondary header + CRC
MAX_TM_DATA = MAX_PACKET_LEN - TM_OVERHEAD


def tm(data: bytes, seq: int = 0) -> bytes:
    return pack_tm(0x010, seq, 3, 25, data, time_s=1_700_000_000.25)


def pattern(kind: str, n: int) -> bytes:
    if kind == "zeros":
        return bytes(n)
    if kind == "ones":
        return b"\xff" * n
    if kind == "ramp":
        return bytes(i % 256 for i in range(n))
    if kind == "sparse_zeros":
        return bytes(0 if i % 253 == 0 else 0x55 for i in range(n))
    if kind == "random":
        return random.Random(n).randbytes(n)
    raise AssertionError(kind)


SIZES = (0, 1, 2, 231, 232, 233, 234, 253, 254, 255, 300, 508, 509, 1000, 4096, MAX_TM_DATA)
PATTERNS = ("zeros", "ones", "ramp", "sparse_zeros", "random")


@pytest.mark.parametrize("kind", PATTERNS)
def test_round_trip_every_size(kind):
    deframer = Deframer()
    for n in SIZES:
        packet = tm(pattern(kind, n))
        frame = encode_frame(packet)
        assert frame[0] == 0 and frame[-1] == 0 and 0 not in frame[1:-1], "0x00 may only delimit"
        assert len(frame) - 2 <= max_encoded_len(len(packet))
        assert deframer.feed(frame) == [packet]
        assert unpack(packet).source_data == pattern(kind, n)
    assert (deframer.bad_frames, deframer.skipped_bytes, deframer.pending_bytes) == (0, 0, 0)


def test_many_frames_in_one_chunk_and_byte_by_byte():
    packets = [tm(pattern(k, n), seq) for seq, (k, n) in enumerate((k, n) for k in PATTERNS for n in SIZES[:-1])]
    stream = b"".join(encode_frame(p) for p in packets)
    assert Deframer().feed(stream) == packets
    deframer = Deframer()
    got = []
    for i in range(len(stream)):
        got += deframer.feed(stream[i : i + 1])
    assert got == packets
    assert deframer.bad_frames == 0


def test_efficiency_of_a_256_byte_packet_is_at_least_097():
    for kind in PATTERNS:
        packet = tm(pattern(kind, 256 - TM_OVERHEAD))
        assert len(packet) == 256
        efficiency = len(packet) / len(encode_frame(packet))
        assert efficiency >= 0.97, f"{kind}: {efficiency:.4f}"
    # Worst case for any 256 bytes (no 0x00 at all): 2 delimiters + 2 COBS code bytes.
    assert len(encode_frame(b"\xff" * 256)) == 260
    assert 256 / 260 >= 0.98


def test_plain_cobs_frames_without_leading_delimiter_are_accepted():
    packets = [tm(b"a"), tm(bytes(40), 1)]
    stream = b"".join(cobs.encode(p) + b"\x00" for p in packets)
    assert Deframer().feed(stream) == packets


def test_idle_delimiters_are_not_errors():
    deframer = Deframer()
    assert deframer.feed(b"\x00" * 100 + encode_frame(tm(b"x")) + b"\x00" * 100) == [tm(b"x")]
    assert (deframer.bad_frames, deframer.skipped_bytes) == (0, 0)


def test_garbage_before_inside_and_after_frames():
    a, b, c = tm(b"first", 0), tm(bytes(300), 1), tm(b"third", 2)
    garbage = b"\x13\x37\xff\x00\xfe\x00\x00\x01\x02\x03"
    fb = encode_frame(b)
    stream = garbage + encode_frame(a) + fb[:150] + garbage + fb[150:] + encode_frame(c) + garbage
    deframer = Deframer()
    assert deframer.feed(stream) == [a, c], "b was hit inside its frame; a and c are intact"
    assert deframer.bad_frames >= 3
    assert deframer.skipped_bytes >= 2 * len(garbage.replace(b"\x00", b""))
    assert deframer.feed(encode_frame(a)) == [a]


def test_joining_mid_frame_loses_only_the_fragment():
    a, b = tm(bytes(range(200)), 0), tm(b"next", 1)
    fa = encode_frame(a)
    for cut in range(1, len(fa)):
        deframer = Deframer()
        got = deframer.feed(fa[cut:] + encode_frame(b))
        assert got[-1] == b
        if cut == 1:
            assert got == [a, b], "missing only the leading 0x00, a is still a whole frame"
        for fragment in got[:-1]:
            with pytest.raises(PacketError):
                unpack(fragment) if fragment != a else unpack(b"")


def test_truncated_frame_then_good_frame():
    a, b = tm(pattern("ramp", 600), 0), tm(b"after", 1)
    fa = encode_frame(a)
    for keep in (2, 10, 255, 256, len(fa) - 3, len(fa) - 2):  # len(fa) - 1 is a whole frame
        deframer = Deframer()
        assert deframer.feed(fa[:keep] + encode_frame(b)) == [b]
        assert deframer.bad_frames == 1
        assert deframer.skipped_bytes == keep - 1


@pytest.mark.req("LNK-004")
@pytest.mark.parametrize("damage", ["flip", "drop"])
def test_any_single_damaged_byte_loses_at_most_that_packet(damage):
    """Every offset, every bit: the damaged packet is dropped here or by the CRC; the next arrives."""
    victim = pack_tc(0x010, 5, 8, 1, bytes([0, 1, 0, 0, 0x80, 0xFF, 0]) * 3)
    good = tm(b"still here", 6)
    frame = encode_frame(victim)
    cases = (
        [frame[:i] + bytes([frame[i] ^ (1 << bit)]) + frame[i + 1 :] for i in range(len(frame)) for bit in range(8)]
        if damage == "flip"
        else [frame[:i] + frame[i + 1 :] for i in range(len(frame))]
    )
    for damaged in cases:
        deframer = Deframer()
        got = deframer.feed(damaged + encode_frame(good))
        assert got[-1] == good
        for packet in got[:-1]:
            if packet == victim:
                continue  # only a delimiter was hit (leading 0x00 becoming part of nothing)
            with pytest.raises(PacketError):
                unpack(packet)


def test_wrong_length_field_and_short_frames_are_dropped_with_numbers():
    packet = bytearray(tm(b"abc"))
    packet[5] += 1  # header claims one byte more than there is
    deframer = Deframer()
    assert deframer.feed(encode_frame(bytes(packet))) == []
    assert deframer.bad_frames == 1
    assert "CCSDS header says" in deframer.last_error and str(len(packet) + 1) in deframer.last_error
    assert deframer.feed(b"\x00" + cobs.encode(b"\x08\x10") + b"\x00") == []
    assert deframer.bad_frames == 2 and "primary header" in deframer.last_error
    assert deframer.feed(b"\x00\x05\x01\x00") == []  # code byte promises 4 bytes, 1 follows
    assert deframer.bad_frames == 3 and "COBS" in deframer.last_error


def test_oversize_noise_without_delimiter_stays_bounded():
    limit = 1000
    deframer = Deframer(max_frame_len=limit)
    noise = random.Random(7).randbytes(1 << 20).replace(b"\x00", b"\x01")
    for i in range(0, len(noise), 4096):
        assert deframer.feed(noise[i : i + 4096]) == []
        assert deframer.pending_bytes <= limit
    assert deframer.bad_frames == 1
    assert deframer.skipped_bytes == len(noise)
    good = tm(b"after the storm")
    assert deframer.feed(encode_frame(good)) == [good]
    assert deframer.bad_frames == 1

    deframer = Deframer(max_frame_len=limit)  # the same in one feed, and a long run closed by 0x00
    assert deframer.feed(noise + b"\x00" + noise[:2000] + encode_frame(good)) == [good]
    assert deframer.bad_frames == 2 and deframer.pending_bytes == 0


def test_default_limit_takes_the_largest_packet():
    packet = tm(pattern("ones", MAX_TM_DATA))
    assert len(packet) == MAX_PACKET_LEN
    assert len(encode_frame(packet)) - 2 <= DEFAULT_MAX_FRAME_LEN
    assert Deframer().feed(encode_frame(packet)) == [packet]


def test_reset_abandons_a_partial_frame():
    deframer = Deframer()
    frame = encode_frame(tm(b"cut"))
    assert deframer.feed(frame[:8]) == []
    deframer.reset()
    assert (deframer.bad_frames, deframer.skipped_bytes, deframer.pending_bytes) == (1, 7, 0)
    assert deframer.feed(frame[8:] + frame) == [tm(b"cut")]


def test_encode_refuses_what_no_receiver_could_take():
    with pytest.raises(ValueError, match="0 bytes"):
        encode_frame(b"")
    with pytest.raises(ValueError, match=str(MAX_PACKET_LEN + 1)):
        encode_frame(b"\x01" * (MAX_PACKET_LEN + 1))
    with pytest.raises(ValueError):
        Deframer(max_frame_len=3)
