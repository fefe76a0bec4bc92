"""Every dictionary message encodes and decodes to the same thing."""

import msgpack
import pytest

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, FailureCode, ValueType as T
from flight.link.messages import Codec, EventRecord, HkRecord, ParamRecord, Stage, TelemetryError, Verification
from flight.link.packets import PacketError, pack_tc, pack_tm, unpack

SAMPLE = {
    T.BOOL: True, T.U8: 7, T.U16: 700, T.U32: 70_000, T.U64: 2**40, T.I32: -3, T.I64: -(2**40),
    T.F32: 1.5, T.F64: 2.25, T.STRING: "text", T.BYTES: b"\x00\x01",
}


def sample_args(command):
    args = {}
    for a in command.args:
        spec = a.spec
        if spec.type is T.ENUM:
            args[a.name] = spec.choices[-1]
        elif spec.min is not None:
            args[a.name] = spec.min
        else:
            args[a.name] = SAMPLE[spec.type]
    return args


def sample_value(channel):
    return channel.choices[0] if channel.type is T.ENUM else SAMPLE.get(channel.type, "x")


@pytest.mark.parametrize("command", DICTIONARY.commands, ids=lambda c: c.name)
def test_every_command_round_trips(command):
    codec = Codec(DICTIONARY)
    args = sample_args(command)
    raw, cmd_id = codec.encode_command(command.name, args, source_id=5)
    req = codec.decode_command(unpack(raw))
    assert (req.command, req.args, req.cmd_id, req.tc.source_id) == (command, command.validate_args(args), cmd_id, 5)


@pytest.mark.parametrize("packet", DICTIONARY.packets, ids=lambda p: p.name)
def test_every_hk_packet_round_trips(packet):
    codec = Codec(DICTIONARY)
    values = {name: sample_value(DICTIONARY.channel_by_name[name]) for name in packet.channels}
    rec = codec.decode_tm(unpack(codec.encode_hk(packet.sid, values, 1_795_000_000.5)))
    assert isinstance(rec, HkRecord) and rec.values == values and rec.time_s == 1_795_000_000.5


@pytest.mark.req("AGT-010")
def test_a_missing_or_extra_hk_key_is_an_error_not_a_nil():
    codec = Codec(DICTIONARY)
    packet = DICTIONARY.packet_by_name["THERMAL_HK"]
    values = {name: None for name in packet.channels}  # None is a value: "not available now"
    assert isinstance(codec.decode_tm(unpack(codec.encode_hk(packet.sid, values, 1.0))), HkRecord)
    with pytest.raises(TelemetryError, match="THERMAL_HK: missing temp_max_c; not in the packet none"):
        codec.encode_hk(packet.sid, {k: v for k, v in values.items() if k != "temp_max_c"}, 1.0)
    with pytest.raises(TelemetryError, match="not in the packet temp_maximum_c"):
        codec.encode_hk(packet.sid, {**values, "temp_maximum_c": 1.0}, 1.0)


@pytest.mark.req("AGT-006")
def test_parameter_reports_round_trip_and_skip_what_this_dictionary_cannot_use():
    codec = Codec(DICTIONARY)
    values = {p.name: p.default for p in DICTIONARY.parameters}
    rec = codec.decode_tm(unpack(codec.encode_param_report(values, 5.0)))
    assert isinstance(rec, ParamRecord) and rec.values == values and rec.time_s == 5.0
    raw = pack_tm(0x010, 1, 20, 2, msgpack.packb({0x0020: 70.0, 0x7777: 1, 0x0021: 500.0}), 6.0)
    assert codec.decode_tm(unpack(raw)).values == {"thermal_soft_limit_c": 70.0}  # unknown id, out of range: left out
    with pytest.raises(TelemetryError, match="no parameter nope"):
        codec.encode_param_report({"nope": 1}, 5.0)


@pytest.mark.parametrize("event", DICTIONARY.events, ids=lambda e: e.name)
def test_every_event_round_trips(event):
    codec = Codec(DICTIONARY)
    args = {name: i + 0.5 for i, name in enumerate(event.args)}  # numbers fit every format spec
    rec = codec.decode_tm(unpack(codec.encode_event(event.name, args, 10.0)))
    assert isinstance(rec, EventRecord) and rec.event is event and rec.args == args
    assert "{" not in rec.text  # every placeholder filled


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("ok", [True, False])
def test_every_verification_report_round_trips(stage, ok):
    codec = Codec(DICTIONARY)
    v = Verification(stage, ok, 0x1810C005, 99, 2, FailureCode.NONE if ok else FailureCode.OUT_OF_RANGE,
                     "" if ok else "token above maximum", {"token": 1} if ok and stage is Stage.COMPLETED else {})
    back = codec.decode_tm(unpack(codec.encode_verification(v, 5.0)))
    assert back == v
    assert back.final == (stage is Stage.COMPLETED or not ok)


def test_decode_command_errors_are_typed():
    codec = Codec(DICTIONARY)
    with pytest.raises(PacketError, match="msgpack"):
        codec.decode_command(unpack(pack_tc(0x10, 0, 8, 1, b"\xc1")))
    with pytest.raises(PacketError, match="opcode, cmd_id"):
        codec.decode_command(unpack(pack_tc(0x10, 0, 8, 1, msgpack.packb({"op": 1}))))
    with pytest.raises(ArgumentError) as e:
        codec.decode_command(unpack(pack_tc(0x10, 0, 8, 1, msgpack.packb([0x7777, 1, {}]))))
    assert e.value.code is FailureCode.UNKNOWN_COMMAND
    with pytest.raises(ArgumentError) as e:
        codec.decode_command(unpack(pack_tc(0x10, 0, 8, 1, msgpack.packb([2, 1, {"token": -1}]))))
    assert e.value.code is FailureCode.OUT_OF_RANGE
    # A boolean is no opcode (true once ran NOOP); a cmd_id of 0 or below was run, neither journaled
    # nor cached, so a retry ran it again.
    for body, field in (([True, 5, {}], "opcode"), ([1, True, {}], "cmd_id"), ([1, 0, {}], "cmd_id"),
                        ([1, -5, {}], "cmd_id"), ([1, 2**64 - 1, {}], None), ([0x10000, 5, {}], "opcode")):
        tc = unpack(pack_tc(0x10, 0, 8, 1, msgpack.packb(body)))
        if field is None:
            assert codec.decode_command(tc).cmd_id == 2**64 - 1
            continue
        with pytest.raises(PacketError, match=f"{field}: "):
            codec.decode_command(tc)
    assert Codec.peek_cmd_id(unpack(pack_tc(0x10, 0, 8, 1, msgpack.packb([True, True, {}])))) == (0, 0)
    # Found in audit: an argument nested a thousand deep (msgpack takes 1024) made the error's repr raise
    # RecursionError, an internal error; and a long one was quoted whole. Both said briefly, as bad arguments.
    key_revoke = DICTIONARY.command("KEY_REVOKE").opcode
    nested = b"\x93" + msgpack.packb(key_revoke) + msgpack.packb(7) + b"\x81" + msgpack.packb("spi") + b"\x91" * 1000 + b"\x01"
    with pytest.raises(ArgumentError, match=r"^spi=an array of 1 is not a valid u16$") as e:
        codec.decode_command(unpack(pack_tc(0x10, 0, 8, 1, nested)))
    assert e.value.code is FailureCode.BAD_ARGUMENTS
    with pytest.raises(ArgumentError, match=r"^spi='x{36}\.\.\. is not a valid u16$"):
        codec.decode_command(unpack(pack_tc(0x10, 0, 8, 1, msgpack.packb([key_revoke, 8, {"spi": "x" * 10_000}]))))


def test_hk_from_another_dictionary_is_refused_not_misread():
    codec = Codec(DICTIONARY)
    raw = pack_tm(0x10, 0, 3, 25, msgpack.packb([1, 1, 2]), 0.0)
    with pytest.raises(PacketError, match="expects"):
        codec.decode_tm(unpack(raw))


def test_describe_reports_bad_packets_without_raising():
    info = Codec(DICTIONARY).describe(b"\x18\x10\xc0")
    assert info["valid"] is False and info["error"] == "short"


@pytest.mark.parametrize(
    "service,subtype,body",
    [
        (5, 1, [0x0020, [1, 2]]),  # event args not a map
        (5, 1, ["PING_RECEIVED", {}]),  # event id not a number
        (3, 25, [[1], 2]),  # SID not a number
        (1, 1, {"req": "x", "cmd_id": 1}),  # request id not a number
        (1, 7, [1, 2, 3]),  # verification data not a map
    ],
)
def test_malformed_telemetry_data_is_a_packet_error(service, subtype, body):
    with pytest.raises(PacketError):
        Codec(DICTIONARY).decode_tm(unpack(pack_tm(0x10, 0, service, subtype, msgpack.packb(body), 0.0)))


def test_events_must_carry_exactly_their_arguments():
    with pytest.raises(ValueError, match="takes"):
        Codec(DICTIONARY).encode_event("PING_RECEIVED", {}, 0.0)


@pytest.mark.req("LNK-007")
@pytest.mark.parametrize("field", ["opcode", "cmd_id"])
def test_an_opcode_or_cmd_id_nested_a_thousand_deep_is_a_malformed_command_said_briefly(field):
    """Found in audit: the arguments' deep values were said briefly, the envelope's were not. An opcode or
    cmd_id nested a thousand arrays deep (msgpack takes 1024) made the error's str() raise RecursionError:
    the agent counted an internal error and a fault, and the sender got no report at all."""
    codec = Codec(DICTIONARY)
    deep = b"\x91" * 1000 + b"\x01"
    head = {"opcode": deep + msgpack.packb(5), "cmd_id": msgpack.packb(1) + deep}[field]
    tc = unpack(pack_tc(0x10, 0, 8, 1, b"\x93" + head + b"\x80"))
    with pytest.raises(PacketError, match=rf"^{field}: an array of 1 must be a whole number in ") as e:
        codec.decode_command(tc)
    assert e.value.field == field and e.value.kind == "encoding"
    assert codec.describe(pack_tc(0x10, 0, 8, 1, b"\x93" + head + b"\x80"))["decode_error"].startswith(field)
