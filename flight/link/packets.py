"""CCSDS Space Packets with PUS-C secondary headers: the lean codec the link runs on.

Layout (CCSDS 133.0-B-2 primary header, ECSS-E-ST-70-41C secondary headers)::

    primary   (6)  version:3=0 type:1 sec_hdr:1=1 apid:11 | seq_flags:2=0b11 seq_count:14 | data_len:16
    TC sec    (5)  pus_version:4=2 ack_flags:4 | service:8 | subtype:8 | source_id:16
    TM sec   (14)  pus_version:4=2 time_ref:4 | service:8 | subtype:8 | msg_counter:16 | dest_id:16 | CDS short time:7
    data      (n)  msgpack (see flight.link.messages)
    CRC       (2)  CRC-16/CCITT-FALSE over everything before it

``spacepackets`` (``PusTc``, ``PusTm``, ``CdsShortTimestamp``) is the reference for
these bytes: ``tests/test_packets.py`` checks this codec against it byte for byte. This
module exists because the reference's object pipeline reaches about 0.07 of raw pyzmq
throughput, and housekeeping at 1000 points/s should not cost a core; it is one
``struct`` call and one CRC. The CRC comes from ``anycrc`` (slice-by-N tables, about twice
as fast as ``fastcrc``, which spacepackets uses, on a 222-byte packet); both compute
CRC-16/CCITT-FALSE and the tests hold them equal.
"""

from __future__ import annotations

import enum
import struct
from typing import Callable, NamedTuple

import anycrc

# PUS-C acknowledgement flags (ECSS-E-ST-70-41C, TC secondary header): which *successful*
# verification reports the sender asks for. ECSS numbers bits from the most significant, so
# bit 3, acceptance, is the least significant; a failure at any stage is reported whatever they say.
ACK_ACCEPTANCE = 0b0001
ACK_START = 0b0010
ACK_PROGRESS = 0b0100
ACK_COMPLETION = 0b1000
ACK_ALL = 0b1111

PRIMARY_HEADER_LEN = 6
TC_SEC_HEADER_LEN = 5
TM_SEC_HEADER_LEN = 14
CRC_LEN = 2
CDS_SHORT_LEN = 7
MAX_SEQ_COUNT = 0x3FFF
MAX_PACKET_LEN = PRIMARY_HEADER_LEN + 0x10000  # data_len is 16 bits and counts from one

PUS_VERSION_C = 2
SEQ_FLAGS_UNSEGMENTED = 0b11
TYPE_TM = 0
TYPE_TC = 1
CDS_PFIELD = 0x40  # CDS, agency epoch 1958-01-01, 16-bit day segment, no sub-millisecond field
DAYS_1958_TO_1970 = 4383
MS_PER_DAY = 86_400_000

# ">" big-endian, as CCSDS sends every field.
_TC_HEADER = struct.Struct(">HHHBBBH")  # 3 primary words + sec header (version|ack, svc, subtype, source)
_TM_HEADER = struct.Struct(">HHHBBBHHBHI")  # 3 primary words + sec header incl. CDS (pfield, days, ms)
assert _TC_HEADER.size == PRIMARY_HEADER_LEN + TC_SEC_HEADER_LEN
assert _TM_HEADER.size == PRIMARY_HEADER_LEN + TM_SEC_HEADER_LEN
# Bound once: unpack() runs per packet on the telemetry stream, where lookups show.
_crc = anycrc.Model("CRC16-IBM-3740").calc  # CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF
_tc_fields = _TC_HEADER.unpack_from
_tm_fields = _TM_HEADER.unpack_from
_MIN_PACKET_LEN = PRIMARY_HEADER_LEN + TC_SEC_HEADER_LEN + CRC_LEN
_MIN_TM_LEN = PRIMARY_HEADER_LEN + TM_SEC_HEADER_LEN + CRC_LEN
_EPOCH_OFFSET_S = DAYS_1958_TO_1970 * 86_400.0


class Service(enum.IntEnum):
    """PUS services this link uses."""

    VERIFICATION = 1
    HOUSEKEEPING = 3
    EVENT = 5
    FUNCTION = 8
    STORAGE = 15  # the on-board packet store: the ground's acknowledgements, playback containers
    TEST = 17
    PARAMETER = 20
    POWER_PLAN = 140  # mission-specific (PUS-C leaves 128..255 to the mission)
    FILE = 141  # mission-specific: one CFDP PDU, whole, as the packet's data (APID FILES)


class Subtype(enum.IntEnum):
    """PUS message subtypes used with the services above (ECSS-E-ST-70-41C numbering)."""

    ACCEPTANCE_SUCCESS = 1
    ACCEPTANCE_FAILURE = 2
    START_SUCCESS = 3
    START_FAILURE = 4
    COMPLETION_SUCCESS = 7
    COMPLETION_FAILURE = 8
    HK_REPORT = 25
    EVENT_INFO = 1  # service 5 subtypes: informative, low, medium, high severity
    EVENT_LOW = 2
    EVENT_MEDIUM = 3
    EVENT_HIGH = 4
    PERFORM_FUNCTION = 1  # service 8
    PING = 1  # service 17
    PONG = 2
    PARAM_REPORT = 2  # service 20: parameter value report
    PLAN_REPORT = 1  # service 140: the energy plan in force
    STORE_ACK = 130  # service 15, mission-specific: the ground says which packets it has (TC)
    PLAYBACK = 131  # service 15, mission-specific: stored packets played back, whole, in one container (TM)
    FILE_PDU = 1  # service 141: a CFDP PDU (TC up, TM down)


class PacketError(ValueError):
    """A packet failed its checks. ``kind`` names which, for counting; the text has the numbers.

    ``field`` names the part of the packet at fault where one part is to blame: a key of a
    verification report (``cmd_id``), an HK channel (``tm_sent``), ``sid``, ``event_id``,
    ``data`` for the application data as a whole. It is None for header and CRC failures.
    """

    def __init__(self, kind: str, message: str, field: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.field = field


class Telecommand(NamedTuple):
    """A decoded telecommand (immutable; a NamedTuple because the link builds one per packet)."""

    apid: int
    seq_count: int
    service: int
    subtype: int
    source_id: int
    ack_flags: int
    app_data: bytes

    @property
    def request_id(self) -> int:
        """PUS request ID: the TC's packet ID and sequence control, as verification reports name it."""
        packet_id = (TYPE_TC << 12) | (1 << 11) | self.apid
        return (packet_id << 16) | (SEQ_FLAGS_UNSEGMENTED << 14) | self.seq_count


class Telemetry(NamedTuple):
    """A decoded telemetry packet (immutable; a NamedTuple because the link builds one per packet)."""

    apid: int
    seq_count: int
    service: int
    subtype: int
    msg_counter: int
    dest_id: int
    time_s: float  # Unix seconds, millisecond resolution (CDS short)
    source_data: bytes


def cds_from_unix(time_s: float) -> tuple[int, int]:
    """CDS short (days since 1958-01-01, ms of day) for a Unix time; spacepackets agrees."""
    total_ms = int(round(time_s * 1000.0))
    days, ms = divmod(total_ms, MS_PER_DAY)
    return days + DAYS_1958_TO_1970, ms


def unix_from_cds(days: int, ms_of_day: int) -> float:
    return (days - DAYS_1958_TO_1970) * 86_400.0 + ms_of_day / 1000.0


def _check_common(apid: int, seq_count: int, service: int, subtype: int) -> None:
    if not 0 <= apid <= 0x7FF:
        raise ValueError(f"APID {apid} outside 0..2047")
    if not 0 <= seq_count <= MAX_SEQ_COUNT:
        raise ValueError(f"sequence count {seq_count} outside 0..{MAX_SEQ_COUNT}")
    if not (0 <= service <= 255 and 0 <= subtype <= 255):
        raise ValueError(f"service {service}/{subtype} outside 0..255")


def pack_tc(
    apid: int,
    seq_count: int,
    service: int,
    subtype: int,
    app_data: bytes = b"",
    source_id: int = 0,
    ack_flags: int = ACK_ALL,
) -> bytes:
    """Build a PUS-C telecommand with CRC."""
    _check_common(apid, seq_count, service, subtype)
    data_len = TC_SEC_HEADER_LEN + len(app_data) + CRC_LEN - 1
    if data_len > 0xFFFF:
        raise ValueError(f"application data of {len(app_data)} bytes does not fit one packet")
    body = (
        _TC_HEADER.pack(
            (TYPE_TC << 12) | 0x0800 | apid,
            (SEQ_FLAGS_UNSEGMENTED << 14) | seq_count,
            data_len,
            (PUS_VERSION_C << 4) | (ack_flags & 0xF),
            service,
            subtype,
            source_id & 0xFFFF,
        )
        + app_data
    )
    return body + _crc(body).to_bytes(2, "big")


def pack_tm(
    apid: int,
    seq_count: int,
    service: int,
    subtype: int,
    source_data: bytes = b"",
    time_s: float = 0.0,
    msg_counter: int = 0,
    dest_id: int = 0,
) -> bytes:
    """Build a PUS-C telemetry packet with a CDS short time stamp and CRC.

    This is the hot path of the telemetry stream, so the checks are folded: ``struct``
    refuses a service, subtype or length outside its field, the masks below the rest.
    """
    if apid & ~0x7FF or seq_count & ~MAX_SEQ_COUNT:
        _check_common(apid, seq_count, service, subtype)  # raises with the numbers
    data_len = TM_SEC_HEADER_LEN + len(source_data) + CRC_LEN - 1
    if data_len > 0xFFFF:
        raise ValueError(f"source data of {len(source_data)} bytes does not fit one packet")
    days, ms = divmod(int(time_s * 1000.0 + 0.5), MS_PER_DAY)
    try:
        body = _TM_HEADER.pack(
            0x0800 | apid, 0xC000 | seq_count, data_len, 0x20, service, subtype,
            msg_counter & 0xFFFF, dest_id & 0xFFFF, CDS_PFIELD, days + DAYS_1958_TO_1970, ms,
        ) + source_data
    except struct.error:
        _check_common(apid, seq_count, service, subtype)
        raise
    return body + _crc(body).to_bytes(2, "big")


def packet_length(header: bytes) -> int:
    """Total length of the packet whose primary header starts ``header`` (the length-field rule)."""
    if len(header) < PRIMARY_HEADER_LEN:
        raise PacketError("short", f"{len(header)} bytes, a primary header needs {PRIMARY_HEADER_LEN}")
    return PRIMARY_HEADER_LEN + ((header[4] << 8) | header[5]) + 1


def unpack(raw: bytes) -> Telecommand | Telemetry:
    """Check and decode one packet; raise :class:`PacketError` saying what is wrong.

    Checks, in order: length against the header's length field, CCSDS version 0, secondary
    header present, CRC, PUS-C, and for telemetry a CDS short time code.

    Error contract: for any ``bytes`` whatever (any length, any content) this returns a
    :class:`Telecommand` or :class:`Telemetry`, or raises :class:`PacketError`; nothing else.
    It reads only the headers; what the data means is :mod:`flight.link.messages`' business,
    with the same contract. ``tests/test_decoders_fuzz.py`` holds both to it.
    """
    n = len(raw)
    if n < _MIN_PACKET_LEN:
        raise PacketError("short", f"packet of {n} bytes is shorter than the smallest PUS packet")
    expected = PRIMARY_HEADER_LEN + ((raw[4] << 8) | raw[5]) + 1
    if expected != n:
        raise PacketError("length", f"header says {expected} bytes, got {n}")
    b0 = raw[0]
    if b0 >> 5:
        raise PacketError("version", f"CCSDS version {b0 >> 5}, expected 0")
    if not b0 & 0x08:
        raise PacketError("header", "secondary header flag not set; every Sunlit packet has a PUS header")
    if _crc(raw):  # CRC over data and its own CRC leaves no remainder
        got = int.from_bytes(raw[-2:], "big")
        raise PacketError("crc", f"CRC mismatch: packet carries {got:#06x}, computed {_crc(raw[:-2]):#06x}")
    if (raw[6] >> 4) != PUS_VERSION_C:
        raise PacketError("pus_version", f"PUS version {raw[6] >> 4}, expected {PUS_VERSION_C} (PUS-C)")
    if b0 & 0x10:
        _w0, w1, _w2, vf, svc, sub, src = _tc_fields(raw)
        return Telecommand(((b0 & 0x07) << 8) | raw[1], w1 & 0x3FFF, svc, sub, src, vf & 0xF, raw[11:-2])
    if n < _MIN_TM_LEN:
        raise PacketError("short", f"telemetry packet of {n} bytes is shorter than its headers")
    _w0, w1, _w2, _vf, svc, sub, cnt, dest, pfield, days, ms = _tm_fields(raw)
    if pfield != CDS_PFIELD:
        raise PacketError("time", f"time code p-field {pfield:#04x}, expected CDS short {CDS_PFIELD:#04x}")
    return Telemetry(
        ((b0 & 0x07) << 8) | raw[1], w1 & 0x3FFF, svc, sub, cnt, dest,
        days * 86_400.0 - _EPOCH_OFFSET_S + ms / 1000.0, raw[20:-2],
    )


class SequenceCounters:
    """One 14-bit source sequence counter per APID, wrapping as CCSDS requires."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def next(self, apid: int) -> int:
        value = self._next.get(apid, 0)
        self._next[apid] = (value + 1) & MAX_SEQ_COUNT
        return value

    def set(self, apid: int, value: int) -> None:
        """Make ``value`` the next count for ``apid`` (a debugging tool picks its own)."""
        if not 0 <= value <= MAX_SEQ_COUNT:
            raise ValueError(f"sequence count {value} outside 0..{MAX_SEQ_COUNT}")
        self._next[apid] = value


class GapCounter:
    """Counts packets missing from each APID's sequence, as the receiving end sees them.

    Neither ZeroMQ nor a serial line reorders packets, so a count that goes back is the
    source restarting (its counter began again at 0, and a late subscriber may have
    missed the first few), not 16 000 lost packets. The same count twice is a repeat.

    Counts alone cannot tell a restart from a wrap past many lost packets (16000, then 400:
    783 lost over a loss of signal; found in audit: counted as none, a restart). ``boots``
    (``boots(from_ms, to_ms)``, the ground's completeness tracker's ``boot_between``) says
    what is known of the source's boots between two packet times: True, it restarted (nothing
    missing); False, one boot spans them (a count gone back is a wrap); None, not known. Where
    it is not known yet (the packet after the silence is not housekeeping), the count is taken
    as a restart until a later packet of that APID finds it known: then the loss is counted
    with that packet.
    """

    def __init__(self, boots: Callable[[int, int], bool | None] | None = None) -> None:
        self._last: dict[int, tuple[int, int | None]] = {}  # apid -> (count, packet time ms)
        self._unsure: dict[int, tuple[int, int, int]] = {}  # apid -> (missing if a wrap, from_ms, to_ms)
        self.boots = boots
        self.missing = 0
        self.restarts = 0
        self.repeats = 0

    def forget(self, apid: int) -> None:
        """Start ``apid``'s sequence afresh (its source is known to have restarted)."""
        self._last.pop(apid, None)
        self._unsure.pop(apid, None)

    def _known(self, from_ms: int | None, to_ms: int | None) -> bool | None:
        if self.boots is None or from_ms is None or to_ms is None:
            return None
        return self.boots(from_ms, to_ms)

    def observe(self, apid: int, seq_count: int, time_ms: int | None = None) -> int:
        """Record one packet (``time_ms``: its packet time, for ``boots``); return how many were
        missing right before it."""
        last, last_ms = self._last.get(apid, (None, None))
        self._last[apid] = (seq_count, time_ms)
        settled = 0
        unsure = self._unsure.get(apid)
        if unsure is not None:  # a count gone back earlier, taken as a restart: is its boot known now?
            lost, from_ms, to_ms = unsure
            known = self._known(from_ms, to_ms)
            if known is not None:
                del self._unsure[apid]
                if not known:  # one boot spanned it: a wrap past ``lost``, counted with this packet
                    self.restarts -= 1
                    self.missing += lost
                    settled = lost
        if last is None:
            return settled
        if seq_count == last:
            self.repeats += 1
            return settled
        gap = (seq_count - last - 1) & MAX_SEQ_COUNT
        known = self._known(last_ms, time_ms)
        if known:  # restarted between them: its counts began again at 0
            self.restarts += 1
            return settled
        if seq_count < last and known is None and not (last > MAX_SEQ_COUNT - 256 and seq_count < 256):
            self.restarts += 1  # back, no wrap, and no boot known to span it
            if last_ms is not None and time_ms is not None and self.boots is not None:
                self._unsure[apid] = (gap, last_ms, time_ms)
            return settled
        self.missing += gap
        return settled + gap
