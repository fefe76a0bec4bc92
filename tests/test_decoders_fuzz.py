"""The ground's decoders survive anything the link delivers (LNK-008): property-based fuzzing.

The contract (``flight.link.packets.unpack``, ``flight.link.messages.Codec.decode_tm``): any
bytes give a packet or a ``PacketError``; any telemetry data gives a record (or None) or a
``PacketError`` naming the field at fault; and whatever comes back renders (event text,
verification outcome, limit states, JSON through ``flight.cli.jsonable``). A refusal with no
field is the decoder's safety net catching its own bug, so these tests count it as a failure.

Every property runs derandomized (the same examples on every run, so CI is repeatable) with
a fixed number of examples sized to keep this file under about 30 s.
"""

from __future__ import annotations

import json
import math
import struct

import msgpack
import pytest
from fastcrc import crc16
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.cli import jsonable
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import INT_BOUNDS, FailureCode, ValueType
from flight.link.messages import (
    MAX_NESTING,
    Codec,
    EventRecord,
    HkRecord,
    ParamRecord,
    PlanRecord,
    Stage,
    Verification,
)
from flight.link.packets import PRIMARY_HEADER_LEN, PacketError, Telecommand, Telemetry, pack_tm, unpack

CODEC = Codec(DICTIONARY)


def fuzz(n: int):
    """Repeatable settings: ``n`` examples, no per-example deadline (CI machines stall)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- what the ground does with a record: it must never raise ------------------------------

def render(rec) -> None:
    """What the ground's tools do with a record (print it, check limits, archive it as JSON)."""
    if rec is None:
        return
    if isinstance(rec, Verification):
        outcome = f"{rec.stage.value} {'ok' if rec.success else rec.code.name} {rec.reason!s}"
        assert isinstance(outcome, str) and isinstance(rec.final, bool)
        json.dumps(jsonable({"req": rec.request_id, "cmd_id": rec.cmd_id, "op": rec.opcode, "result": rec.result}))
    elif isinstance(rec, HkRecord):
        for name, value in rec.values.items():
            assert DICTIONARY.limits(name).state(value) in ("nominal", "warning", "critical")
        json.dumps(jsonable(rec.values))
    elif isinstance(rec, EventRecord):
        assert isinstance(rec.text, str)
        json.dumps(jsonable(rec.args))
    elif isinstance(rec, ParamRecord):
        json.dumps(jsonable(rec.values))
        assert all(isinstance(s, str) for s in rec.skipped)
    elif isinstance(rec, PlanRecord):
        json.dumps(rec.to_json())
        assert len(rec.soc_pct) == len(rec.mode) + 1 and all(-1 <= m < len(rec.mode_names) for m in rec.mode)
    else:
        raise AssertionError(f"decode_tm returned {type(rec).__name__}")


def decoded_or_refused(tm: Telemetry):
    """decode_tm's contract for one packet: a rendered record, None, or a PacketError with a field."""
    try:
        rec = CODEC.decode_tm(tm)
    except PacketError as exc:
        assert exc.field, f"refused without naming a field (the safety net caught a decoder bug): {exc}"
        assert str(exc)
        return None
    render(rec)
    return rec


def described(raw: bytes) -> dict:
    """The packet tool's view of ``raw``: never raises, always JSON."""
    info = CODEC.describe(raw)
    json.dumps(jsonable(info))
    return info


# --- msgpack values, including what the agent never sends ---------------------------------

class Raw:
    """msgpack bytes put into a payload as they are (not UTF-8, not msgpack, nested too deep).

    Not a bytes subclass: msgpack would pack that as a bin value without asking ``default``.
    """

    def __init__(self, data: bytes):
        self.data = data

    def __repr__(self) -> str:
        return f"Raw({self.data[:12]!r}{'...' if len(self.data) > 12 else ''} {len(self.data)} bytes)"


def deep(levels: int, as_map: bool, leaf: bytes = b"\x01") -> Raw:
    """``levels`` nested one-element arrays (or one-entry maps) around ``leaf``, past what packb nests."""
    return Raw((b"\x81\xa1k" if as_map else b"\x91") * levels + leaf)


INT_EDGES = [0, 1, -1, 2**7, 2**8 - 1, 2**8, 2**15, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 2**32,
             2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**31) - 1, -(2**63)]
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**63), 2**64 - 1))  # all msgpack can carry
exts = st.one_of(
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)),
)
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), st.sampled_from([math.inf, -math.inf, math.nan]),
                    st.text(max_size=20), st.binary(max_size=20), exts)
raws = st.one_of(
    # Around the decoder's limit, and past Python's recursion limit (1000) where msgpack still nests (1024).
    st.builds(deep, st.sampled_from([MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, 600, 1000, 1020]), st.booleans()),
    # Text not UTF-8, a bin shorter than it says, a byte msgpack never uses, headers cut short.
    st.sampled_from([Raw(b"\xa2\xff\xfe"), Raw(b"\xc4\x05ab"), Raw(b"\xc1"), Raw(b"\xd9"),
                     Raw(b"\xdb\xff\xff\xff\xff")]),
    st.floats(width=32).map(lambda f: Raw(b"\xca" + struct.pack(">f", f))),  # a float32 on the wire
)
# Any msgpack value: arrays and maps of scalars (keys hashable), with raw fragments among the leaves.
values = st.recursive(st.one_of(scalars, raws),
                      lambda kids: st.lists(kids, max_size=4) | st.dictionaries(scalars, kids, max_size=4),
                      max_leaves=16)
# Any value a decoder can hand on (what msgpack builds, no raw fragments).
python_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(scalars, kids, max_size=4),
                             max_leaves=16)
# What the agent itself puts into results and event arguments: plain data, shallow.
plain = st.recursive(st.one_of(st.none(), st.booleans(), ints, st.floats(), st.text(max_size=12),
                               st.binary(max_size=8)),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                     max_leaves=6)


def packb(value, use_bin_type: bool = True) -> bytes:
    """msgpack of ``value`` with each :class:`Raw` spliced in as it is."""
    fragments: list[Raw] = []

    def mark(obj):
        if isinstance(obj, Raw):
            fragments.append(obj)
            return f"\x00raw{len(fragments) - 1}\x00"
        raise TypeError(type(obj).__name__)

    out = msgpack.packb(value, use_bin_type=use_bin_type, default=mark)
    for i, fragment in enumerate(fragments):
        out = out.replace(msgpack.packb(f"\x00raw{i}\x00"), fragment.data, 1)
    return out


# use_bin_type=False sends bytes as msgpack str: text that is not UTF-8.
packings = st.booleans()


def tm(service: int, subtype: int, data: bytes) -> Telemetry:
    raw = pack_tm(0x010, 5, service, subtype, data, 1_800_000_000.25)
    packet = unpack(raw)
    assert isinstance(packet, Telemetry) and packet.source_data == data
    return packet


# The telemetry the ground decodes, and a few it has nothing to say about.
DECODED = [(1, s) for s in (1, 2, 3, 4, 7, 8)] + [(3, 25)] + [(5, s) for s in (1, 2, 3, 4)] + [(20, 2), (17, 2), (140, 1)]
services = st.one_of(st.sampled_from(DECODED), st.sampled_from(DECODED),
                     st.tuples(st.integers(0, 255), st.integers(0, 255)))


# --- shaped payloads: right, then damaged a little, so the checks past the shape get exercised

def channel_values(channel):
    """What the agent may send in ``channel``: nil or a value of its type (NaN, infinities in floats)."""
    t = channel.type
    if t in INT_BOUNDS:
        right = st.integers(*INT_BOUNDS[t])
    elif t in (ValueType.F32, ValueType.F64):
        right = st.floats() | st.integers(-(2**63), 2**64 - 1)
    elif t is ValueType.BOOL:
        right = st.booleans()
    elif t is ValueType.ENUM:
        right = st.sampled_from(channel.choices)
    elif t is ValueType.BYTES:
        right = st.binary(max_size=16)
    else:
        right = st.text(max_size=16)
    return st.none() | right


u32, u64, u16 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1)
right_verifications = st.fixed_dictionaries(
    {"req": u32, "cmd_id": u64, "op": u16},
    optional={"code": st.integers(0, 300), "reason": st.text(max_size=40),
              "result": st.dictionaries(st.text(max_size=8), plain, max_size=3)},
)
right_hk = st.sampled_from(DICTIONARY.packets).flatmap(lambda p: st.tuples(
    st.just(p.sid), *(channel_values(DICTIONARY.channel_by_name[c]) for c in p.channels)).map(list))
right_events = st.sampled_from(DICTIONARY.events).flatmap(lambda e: st.tuples(
    st.just(e.id), st.fixed_dictionaries({a: plain for a in e.args})).map(list))
right_params = st.fixed_dictionaries({}, optional={
    p.id: st.just(p.default) | st.floats() | ints | st.text(max_size=8) for p in DICTIONARY.parameters})
right_plans = st.integers(1, 80).flatmap(lambda n: st.fixed_dictionaries({
    "t0": st.floats(), "dt": st.floats(), "keep": st.floats(), "ms": st.floats(), "lsb": st.floats(),
    "names": st.lists(st.text(max_size=12), min_size=0, max_size=17),
    "soc": st.binary(min_size=n, max_size=n + 2), "mode": st.binary(min_size=n - 1, max_size=n + 1),
    "solar": st.binary(min_size=n - 1, max_size=n + 1), "umbra": st.binary(min_size=n - 1, max_size=n + 1)}))
RIGHT = {1: right_verifications, 3: right_hk, 5: right_events, 20: right_params, 17: values, 140: right_plans}
# (what, which, a value, a key): set an item to anything, drop one, add one.
damages = st.lists(st.tuples(st.sampled_from(["set", "drop", "add"]), st.integers(0, 64), values | raws, scalars),
                   max_size=2)


def damage(body, ops):
    """``body`` (a map or an array, and the map inside an event) with ``ops`` applied."""
    if isinstance(body, list):
        body = list(body)
        for what, i, value, _key in ops:
            if what == "add" or not body:
                body.append(value)
            elif what == "set":
                body[i % len(body)] = value
            else:
                del body[i % len(body)]
    elif isinstance(body, dict):
        body = dict(body)
        for what, i, value, key in ops:
            keys = list(body)
            if what == "add" or not keys:
                body[key] = value
            elif what == "set":
                body[keys[i % len(keys)]] = value
            else:
                del body[keys[i % len(keys)]]
    return body


# --- (a) bytes ------------------------------------------------------------------------------

@pytest.mark.req("LNK-008")
@fuzz(3000)
@given(st.binary(max_size=300))
def test_any_bytes_unpack_to_a_packet_or_a_packet_error(raw):
    try:
        unpack(raw)
    except PacketError as exc:
        assert exc.kind and str(exc)
    described(raw)


def with_length_and_crc(body: bytes) -> bytes:
    """``body`` made to pass the length and CRC checks: what survives to the later ones."""
    body = bytearray(body)
    n = len(body) + 2
    body[4:6] = (n - PRIMARY_HEADER_LEN - 1).to_bytes(2, "big")
    return bytes(body) + crc16.ibm_3740(bytes(body)).to_bytes(2, "big")


@pytest.mark.req("LNK-008")
@fuzz(1500)
@given(st.binary(min_size=11, max_size=200), st.sampled_from([0x00, 0x08, 0x10, 0x18]),
       st.sampled_from([0x20, 0x2F, 0x10]), st.integers(0, 3), st.none() | st.sampled_from(DECODED))
def test_bytes_with_a_valid_length_and_crc_unpack_to_a_packet_or_a_packet_error(body, type_bits, pus, pfield, service):
    body = bytearray(body)
    body[0] = type_bits | (body[0] & 0x07)  # version 0; TC or TM; secondary header flag on or off
    body[6] = pus  # mostly PUS-C, so the time code and the data get read
    if len(body) > 13 and pfield:
        body[13] = 0x40  # mostly a CDS short time code, so the data of a TM gets decoded
    if service:
        body[7:9] = bytes(service)
    raw = with_length_and_crc(bytes(body))
    try:
        packet = unpack(raw)
    except PacketError:
        described(raw)
        return
    if isinstance(packet, Telemetry):
        decoded_or_refused(packet)
    else:
        assert isinstance(packet, Telecommand)
    described(raw)


# --- (b) valid headers and CRC around any msgpack -------------------------------------------

@pytest.mark.req("LNK-008")
@fuzz(1500)
@given(services, values, packings)
def test_any_msgpack_in_any_telemetry_service_decodes_or_is_refused(service, body, packing):
    data = packb(body, packing)
    if len(data) > 60_000:
        return
    raw = pack_tm(0x010, 5, *service, data, 1_800_000_000.25)
    decoded_or_refused(unpack(raw))
    described(raw)


@pytest.mark.req("LNK-008")
@fuzz(1500)
@given(st.sampled_from(DECODED), st.data(), packings)
def test_nearly_right_telemetry_decodes_or_is_refused(service, data, packing):
    body = damage(data.draw(RIGHT[service[0]]), data.draw(damages))
    if service[0] == 5 and isinstance(body, list) and len(body) == 2:
        body[1] = damage(body[1], data.draw(damages))  # the arguments too
    decoded_or_refused(tm(*service, packb(body, packing)))


# --- (c) valid packets from the agent's encoders, mutated, CRC recomputed -------------------

verifications = st.builds(
    lambda stage, ok, req, cmd_id, op, code, reason, result: Verification(
        stage, ok, req, cmd_id, op, FailureCode.NONE if ok else code, "" if ok else reason, result),
    st.sampled_from(Stage), st.booleans(), u32, u64, u16, st.sampled_from(FailureCode), st.text(max_size=60),
    st.dictionaries(st.text(max_size=8), plain, max_size=3),
)
hk_packets = st.sampled_from(DICTIONARY.packets).flatmap(lambda p: st.tuples(
    st.just(p.sid), st.fixed_dictionaries({c: channel_values(DICTIONARY.channel_by_name[c]) for c in p.channels})))
events = st.sampled_from(DICTIONARY.events).flatmap(lambda e: st.tuples(
    st.just(e.name), st.fixed_dictionaries({a: plain for a in e.args})))
params = st.fixed_dictionaries({}, optional={
    p.name: st.just(p.default) | st.floats() | ints for p in DICTIONARY.parameters})

valid_packets = st.one_of(
    verifications.map(lambda v: ("verification", v, CODEC.encode_verification(v, 1_800_000_000.0))),
    hk_packets.map(lambda h: ("hk", h[1], CODEC.encode_hk(h[0], h[1], 1_800_000_000.0))),
    events.map(lambda e: ("event", e[1], CODEC.encode_event(e[0], e[1], 1_800_000_000.0))),
    params.map(lambda p: ("params", p, CODEC.encode_param_report(p, 1_800_000_000.0))),
    st.just(("pong", None, CODEC.encode_pong(1_800_000_000.0))),
    st.integers(1, 80).flatmap(lambda n: st.builds(
        lambda soc, mode, solar, umbra, names: PlanRecord(
            1_800_000_000.0, 120.0, tuple(soc), tuple(m % (len(names) + 1) - 1 for m in mode), tuple(names),
            tuple(solar), tuple(umbra), 35.0, 4.5),
        st.lists(st.floats(0.0, 100.0), min_size=n + 1, max_size=n + 1),
        st.lists(st.integers(0, 20), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 500.0), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.text(max_size=12), min_size=1, max_size=16))).map(
        lambda plan: ("plan", plan, CODEC.encode_plan(plan, 1_800_000_000.0))),
)
# (what, where as a fraction of the data, a byte): flip bits, set, insert, delete, truncate, duplicate.
mutations = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]),
                               st.integers(0, 2**16), st.integers(0, 255)), max_size=4)


def same(a: dict, b: dict) -> bool:
    """Equal maps, whatever their order, a NaN equal to itself."""
    return a.keys() == b.keys() and all(repr(a[k]) == repr(b[k]) for k in a)


def mutate(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for what, where, byte in ops:
        i = where % (len(out) + 1)
        if what == "insert":
            out[i:i] = bytes([byte])
        elif what == "truncate":
            del out[i:]
        elif what == "repeat":
            out[i:i] = out[i:i + 1 + byte % 8]
        elif i < len(out):
            if what == "flip":
                out[i] ^= byte or 1
            elif what == "set":
                out[i] = byte
            else:
                del out[i]
    return bytes(out)


@pytest.mark.req("LNK-008")
@fuzz(1500)
@given(valid_packets, mutations)
def test_mutated_agent_telemetry_decodes_or_is_refused(packet, ops):
    kind, sent, raw = packet
    original = unpack(raw)
    data = mutate(original.source_data, ops)
    rec = decoded_or_refused(tm(original.service, original.subtype, data))
    if ops:
        return
    # Unmutated: what the agent's encoder builds always decodes, to what it was built from.
    if kind == "verification":
        assert repr(rec) == repr(sent)  # repr: a NaN in a result compares equal to itself
    elif kind == "hk":
        assert isinstance(rec, HkRecord) and same(rec.values, sent)
    elif kind == "event":
        assert isinstance(rec, EventRecord) and same(rec.args, sent)
    elif kind == "params":
        assert isinstance(rec, ParamRecord) and set(rec.values) <= set(sent)
    elif kind == "plan":  # quantised on the wire: 0.5 % and 1/255 of the peak
        assert isinstance(rec, PlanRecord) and rec.mode == sent.mode and rec.mode_names == sent.mode_names
        assert rec.umbra == sent.umbra and max(abs(a - b) for a, b in zip(rec.soc_pct, sent.soc_pct)) <= 0.25 + 1e-9
        assert max(abs(a - b) for a, b in zip(rec.solar_w, sent.solar_w)) <= max(sent.solar_w) / 255.0 + 0.01
    else:
        assert rec is None


# --- (d) rendering, and the regressions found ----------------------------------------------

@pytest.mark.req("LNK-008")
@fuzz(800)
@given(st.sampled_from(DICTIONARY.events), st.data())
def test_event_text_never_raises_whatever_the_arguments(event, data):
    args = data.draw(st.fixed_dictionaries({a: python_values for a in event.args}))
    rec = EventRecord(event, args, 0.0)
    assert isinstance(rec.text, str)


@pytest.mark.req("LNK-008")
def test_a_verification_report_with_an_infinite_counter_is_a_packet_error():
    # Issue 12: `sunlit-ground tm --follow` and `sunlit-flight packet decode` ended in an
    # OverflowError traceback (int(inf)) on this packet, whose CRC is valid.
    for key in ("cmd_id", "req", "op"):
        body = {"req": 0x1810C005, "cmd_id": 7, "op": 2, key: math.inf}
        with pytest.raises(PacketError, match=f"{key}: inf is not an integer") as exc:
            CODEC.decode_tm(tm(1, 7, msgpack.packb(body)))
        assert exc.value.field == key
    with pytest.raises(PacketError) as exc:
        CODEC.decode_tm(tm(1, 8, msgpack.packb({"req": 1, "cmd_id": 7, "op": 2, "code": math.nan, "reason": "x"})))
    assert exc.value.field == "code"


@pytest.mark.req("LNK-008")
def test_hk_values_are_checked_against_their_channel_types():
    packet = DICTIONARY.packet_by_name["AGENT_HK"]
    row = {name: None for name in packet.channels}  # nil: "not available now", everywhere
    assert isinstance(CODEC.decode_tm(tm(3, 25, msgpack.packb([packet.sid, *row.values()]))), HkRecord)
    eclipse = DICTIONARY.packet_by_name["POWER_HK"]
    floats = [math.nan if name == "eclipse_in_s" else math.inf if DICTIONARY.channel_by_name[name].type is ValueType.F64
              else None for name in eclipse.channels]
    rec = CODEC.decode_tm(tm(3, 25, msgpack.packb([eclipse.sid, *floats])))  # NaN and infinities fit a float channel
    assert math.isnan(rec.values["eclipse_in_s"]) and rec.values["bus_voltage_v"] == math.inf
    whole = [3.0 if name == "boot_count" else None for name in packet.channels]  # as ValueSpec.coerce reads it
    assert CODEC.decode_tm(tm(3, 25, msgpack.packb([packet.sid, *whole]))).values["boot_count"] == 3
    for name, bad, why in [("tm_sent", math.inf, "is not a u32"), ("tm_sent", 2**32, "outside u32"),
                           ("tm_sent", -1, "outside u32"), ("tm_sent", True, "is not a u32"),
                           ("sensors_missing", 1.5, "is not a u16"), ("sensors_missing", 65536.0, "outside u16"),
                           ("mode", "LOUD", "is not one of"),
                           ("dict_hash", b"\x00", "is not a string"), ("cpu_pct", "12", "is not a f64")]:
        values = [bad if n == name else None for n in packet.channels]
        with pytest.raises(PacketError, match=f"AGENT_HK {name}: .*{why}") as exc:
            CODEC.decode_tm(tm(3, 25, msgpack.packb([packet.sid, *values])))
        assert exc.value.field == name


STOPPING = DICTIONARY.event_by_name["AGENT_STOPPING"]  # one argument: reason
OK = {"req": 1, "cmd_id": 1, "op": 1}


@pytest.mark.req("LNK-008")
@pytest.mark.parametrize("service,data,field,why", [
    # Rendering this one (jsonable, json.dumps) passed Python's recursion limit; the fuzzer found it.
    ((5, 1), packb([STOPPING.id, {"reason": deep(900, False)}]), "args", "nested more than 16 levels"),
    ((5, 1), packb([STOPPING.id, {"reason": msgpack.ExtType(5, b"")}]), "args", "ExtType .* is not plain data"),
    ((1, 7), packb({**OK, "result": {"t": msgpack.Timestamp(1, 0)}}), "result", "Timestamp .* is not plain"),
    ((1, 7), packb({**OK, "result": {1: 2}}), "result", "key 1 is not text"),
    ((1, 7), packb({**OK, "result": [[1, 2]]}), "result", "an array of 1 is not a map"),
    ((1, 7), packb({**OK, "extra": 0}), "data", "unknown key 'extra'"),
    ((1, 7), packb({"req": 1, "cmd_id": 1}), "op", "without op"),
    ((1, 8), packb({**OK, "code": 3}), "reason", "without reason"),
    ((1, 7), packb({**OK, "reason": Raw(b"\xa1\xff")}), "data", "not valid msgpack.*UnicodeDecodeError"),
    ((1, 7), packb({**OK, "cmd_id": -1}), "cmd_id", "-1 outside 0..18446744073709551615"),
    ((1, 7), packb({**OK, "cmd_id": "12"}), "cmd_id", "'12' is not an integer"),
    ((1, 7), packb({**OK, "cmd_id": 2.0}), "cmd_id", "2.0 is not an integer"),
    ((1, 7), packb({**OK, "req": 2**32}), "req", "outside 0..4294967295"),
    ((1, 7), packb({**OK, "op": True}), "op", "True is not an integer"),
    ((1, 7), packb({**OK, "code": 3}), "code", "3 in a success report"),
    ((1, 8), packb({**OK, "code": 256, "reason": ""}), "code", "256 outside 0..255"),
    ((1, 8), packb({**OK, "code": 1, "reason": 5}), "reason", "5 is not text"),
    ((3, 25), packb([True, 1]), "sid", "unknown SID True"),
    ((3, 25), packb([]), "data", "must be \\[sid, value, ...\\]"),
], ids=["deep", "ext", "timestamp", "int-key", "pairs", "extra-key", "missing-op", "missing-reason", "not-utf8",
        "negative", "text-number", "float-integer", "too-big", "bool", "success-code", "code-range", "reason-type",
        "bool-sid", "empty-hk"])
def test_garbage_is_refused_naming_the_field(service, data, field, why):
    with pytest.raises(PacketError, match=why) as exc:
        CODEC.decode_tm(tm(*service, data))
    assert exc.value.field == field


@pytest.mark.req("LNK-008")
def test_a_failure_code_from_a_newer_agent_is_still_a_failure():
    rec = CODEC.decode_tm(tm(1, 8, msgpack.packb({**OK, "code": 99, "reason": "new"})))
    assert rec.code is FailureCode.EXECUTION_ERROR and rec.reason == "new" and not rec.success
    # Nor is an unknown opcode refused: the agent reports on commands it does not know.
    rec = CODEC.decode_tm(tm(1, 2, msgpack.packb({**OK, "op": 0x7777, "code": 1, "reason": "unknown opcode"})))
    assert rec.opcode == 0x7777 and rec.code is FailureCode.UNKNOWN_COMMAND


@pytest.mark.req("LNK-008")
def test_events_need_exactly_their_arguments_and_a_known_id():
    with pytest.raises(PacketError, match="missing argument reason") as exc:
        CODEC.decode_tm(tm(5, 1, msgpack.packb([STOPPING.id, {}])))
    assert exc.value.field == "args"
    with pytest.raises(PacketError, match="unknown 'why'"):
        CODEC.decode_tm(tm(5, 1, msgpack.packb([STOPPING.id, {"reason": "x", "why": 1}])))
    with pytest.raises(PacketError, match="unknown event id True") as exc:
        CODEC.decode_tm(tm(5, 1, msgpack.packb([True, {}])))
    assert exc.value.field == "event_id"


@pytest.mark.req("LNK-008")
def test_parameter_reports_list_what_they_leave_out():
    rec = CODEC.decode_tm(tm(20, 2, msgpack.packb({0x0020: 70.0, 0x7777: 1, 0x0021: [1.0], True: 3})))
    assert rec.values == {"thermal_soft_limit_c": 70.0}
    assert len(rec.skipped) == 3 and "30583: no such parameter id" in rec.skipped  # 0x7777
