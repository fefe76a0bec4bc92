"""The lean packet codec against spacepackets, the reference, byte for byte."""

import os
import struct

import pytest
from fastcrc import crc16
from spacepackets.ccsds.time import CdsShortTimestamp
from spacepackets.ecss.tc import PusTc
from spacepackets.ecss.tm import PusTm

from flight.link import packets as P
from flight.link.packets import GapCounter, PacketError, SequenceCounters, Telecommand, Telemetry


def test_tc_bytes_written_out_field_by_field():
    raw = P.pack_tc(apid=0x010, seq_count=5, service=8, subtype=1, app_data=b"\xc0", source_id=0x0102)
    assert raw[:-2] == bytes(
        [
            0x18, 0x10,  # version 0, type TC, sec header flag, APID 0x010
            0xC0, 0x05,  # unsegmented, sequence count 5
            0x00, 0x07,  # data length: 5 sec header + 1 data + 2 CRC - 1
            0x2F,        # PUS-C (2), ack flags 0b1111
            0x08, 0x01,  # service 8, subtype 1
            0x01, 0x02,  # source id
            0xC0,        # application data
        ]
    )
    assert raw == PusTc(service=8, message_subtype=1, apid=0x010, seq_count=5, app_data=b"\xc0", source_id=0x0102).pack()


def test_reference_example_from_protocol_notes():
    # FACTS.md: PusTc(service=17, message_subtype=1, apid=1).pack() -> 18 01 c0 00 00 06 2f 11 01 00 00 16 1d
    assert P.pack_tc(1, 0, 17, 1).hex() == "1801c00000062f11010000161d"


@pytest.mark.req("LNK-001")
@pytest.mark.parametrize("data_len", [0, 1, 200, 1000, 65_000])
@pytest.mark.parametrize("apid,seq", [(0x010, 0), (0x011, 16383), (0x7FF, 1234)])
def test_tc_matches_spacepackets(data_len, apid, seq):
    data = bytes((i * 7) & 0xFF for i in range(data_len))
    ours = P.pack_tc(apid, seq, 8, 1, data, source_id=77, ack_flags=0b1001)
    ref = PusTc(service=8, message_subtype=1, apid=apid, seq_count=seq, app_data=data, source_id=77, ack_flags=0b1001)
    assert ours == ref.pack()
    back = P.unpack(ours)
    assert back == Telecommand(apid, seq, 8, 1, 77, 0b1001, data)
    parsed = PusTc.unpack(ours)
    assert (parsed.apid, parsed.seq_count, parsed.app_data) == (apid, seq, data)


@pytest.mark.req("LNK-001")
@pytest.mark.parametrize("time_s", [0.0, 1_795_000_000.123, 1_700_000_000.999, 86_399.999])
@pytest.mark.parametrize("service,subtype,data", [(3, 25, b"\x92\x01\x02"), (1, 8, b""), (5, 4, bytes(200))])
def test_tm_matches_spacepackets(time_s, service, subtype, data):
    stamp = CdsShortTimestamp.from_unix_days(*_unix_days_ms(time_s)).pack()
    ref = PusTm(service=service, message_subtype=subtype, timestamp=stamp, source_data=data, apid=0x010,
                seq_count=42, message_counter=9, destination_id=3)
    ours = P.pack_tm(0x010, 42, service, subtype, data, time_s, msg_counter=9, dest_id=3)
    assert ours == ref.pack()
    back = P.unpack(ours)
    assert isinstance(back, Telemetry)
    assert (back.apid, back.seq_count, back.service, back.subtype, back.msg_counter, back.dest_id, back.source_data) == (
        0x010, 42, service, subtype, 9, 3, data)
    assert back.time_s == pytest.approx(time_s, abs=0.0005)  # CDS short resolves 1 ms
    ref_back = PusTm.unpack(ours, timestamp_len=7)
    assert ref_back.source_data == data and ref_back.timestamp == stamp


def _unix_days_ms(time_s):
    total_ms = int(round(time_s * 1000))
    return total_ms // 86_400_000, total_ms % 86_400_000


def test_cds_conversion_agrees_with_spacepackets():
    for t in (0.0, 1.5, 1_795_518_790.265):
        days, ms = P.cds_from_unix(t)
        stamp = CdsShortTimestamp(days, ms)
        assert stamp.as_unix_seconds() == pytest.approx(t, abs=0.0005)


@pytest.mark.req("LNK-001")
def test_unpack_refuses_with_the_reason():
    good = P.pack_tm(0x010, 1, 3, 25, b"abc", 1.0)
    with pytest.raises(PacketError) as e:
        P.unpack(good[:5])
    assert e.value.kind == "short"
    with pytest.raises(PacketError) as e:
        P.unpack(good + b"\x00")
    assert e.value.kind == "length" and f"got {len(good) + 1}" in str(e.value)
    flipped = bytearray(good)
    flipped[22] ^= 0x01
    with pytest.raises(PacketError) as e:
        P.unpack(bytes(flipped))
    assert e.value.kind == "crc"
    v1 = bytearray(good)
    v1[0] |= 0x20  # CCSDS version 1
    with pytest.raises(PacketError) as e:
        P.unpack(bytes(v1))
    assert e.value.kind == "version"
    pus_a = bytearray(good[:-2])
    pus_a[6] = 0x10  # PUS-A
    pus_a += crc16.ibm_3740(bytes(pus_a)).to_bytes(2, "big")
    with pytest.raises(PacketError) as e:
        P.unpack(bytes(pus_a))
    assert e.value.kind == "pus_version"


@pytest.mark.req("LNK-001")
def test_every_single_bit_flip_is_caught():
    good = P.pack_tc(0x010, 3, 8, 1, b"\x93\x01\x02\x80")
    for bit in range(len(good) * 8):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(PacketError):
            P.unpack(bytes(bad))


def test_builders_refuse_out_of_range_fields():
    with pytest.raises(ValueError, match="APID"):
        P.pack_tc(0x800, 0, 8, 1)
    with pytest.raises(ValueError, match="sequence count"):
        P.pack_tm(1, 0x4000, 3, 25)
    with pytest.raises(ValueError, match="does not fit"):
        P.pack_tm(1, 0, 3, 25, bytes(70_000))


def test_request_id_is_packet_id_and_sequence_control():
    tc = P.unpack(P.pack_tc(0x010, 77, 8, 1))
    packet_id, psc = struct.unpack(">HH", P.pack_tc(0x010, 77, 8, 1)[:4])
    assert tc.request_id == (packet_id << 16) | psc


def test_sequence_counters_are_per_apid_and_wrap():
    seq = SequenceCounters()
    assert [seq.next(1), seq.next(1), seq.next(2)] == [0, 1, 0]
    seq.set(1, 16383)
    assert [seq.next(1), seq.next(1)] == [16383, 0]


@pytest.mark.req("LNK-006")
def test_gap_counter_counts_missing_and_restarts():
    g = GapCounter()
    assert [g.observe(1, s) for s in (10, 11, 14)] == [0, 0, 2]
    assert g.observe(2, 0) == 0  # another APID has its own sequence
    assert g.observe(1, 14) == 0 and g.repeats == 1
    assert [g.observe(1, s) for s in (16382, 16383, 0, 2)] == [16367, 0, 0, 1]  # wrap is not a restart
    assert g.restarts == 0 and g.missing == 2 + 16367 + 1
    g2 = GapCounter()
    assert [g2.observe(1, s) for s in (50, 51, 3, 4, 6)] == [0, 0, 0, 0, 1]  # restarted, first packets missed
    assert g2.restarts == 1 and g2.missing == 1


@pytest.mark.req("LNK-006")
def test_gap_counter_asks_the_boots_where_counts_alone_cannot_tell_a_wrap_from_a_restart():
    """Found in audit: 16000 then 400 (783 lost across the wrap over a loss of signal) was a restart, nothing
    counted. ``boots(from_ms, to_ms)`` (the ground's tracker, from housekeeping) says: True restarted, False one
    boot spans them, None unknown; a count gone back while unknown is settled by a later packet of its APID."""
    known: dict = {}
    g = GapCounter(lambda a, b: known.get((a, b)))
    known[(1000, 9000)] = False
    assert [g.observe(1, s, t) for s, t in ((16000, 1000), (400, 9000), (401, 9001))] == [0, 783, 0]
    known[(9001, 20000)] = True  # a new boot between: not 98 lost
    assert g.observe(1, 500, 20000) == 0 and g.restarts == 1 and g.missing == 783
    assert g.observe(1, 100, 30000) == 0 and g.restarts == 2  # back, nothing known: a restart for now
    assert g.observe(1, 101, 30001) == 0
    known[(20000, 30000)] = False  # housekeeping now says one boot spanned it: a wrap, counted here
    assert g.observe(1, 103, 30003) == 15983 + 1 and g.restarts == 1 and g.missing == 783 + 15983 + 1
    assert g.observe(1, 104, 30004) == 0, "counted once"
    assert g.observe(1, 50, 40000) == 0 and g.restarts == 2
    known[(30004, 40000)] = True  # it was a restart after all
    assert g.observe(1, 51, 40001) == 0 and g.restarts == 2
    assert g.observe(2, 7) == 0 and g.observe(2, 3) == 0 and g.restarts == 3, "no times: counts alone"


def test_crc_is_the_one_spacepackets_uses():
    # spacepackets computes CRC-16/CCITT-FALSE with fastcrc; the link's faster CRC must agree everywhere.
    for n in (0, 1, 2, 7, 64, 222, 1000, 65_000):
        data = os.urandom(n)
        assert P._crc(data) == crc16.ibm_3740(data)  # noqa: SLF001
