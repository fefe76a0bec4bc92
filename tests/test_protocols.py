"""Typed protocols between processes: every field of every record round-trips; bad input is named."""

from __future__ import annotations

import dataclasses
import enum
import typing

import msgpack
import pytest

from flight.compute import protocol as cp
from flight.hal import sim_protocol as sp
from flight.records import ProtocolError, RecordCodec


def sample(tp, k: int):
    """A value of type ``tp`` that differs from every default (k varies it per field)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return sample(next(a for a in typing.get_args(tp) if a is not type(None)), k)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return {f"key{k}": sample(value_tp, k + 1)}
    if origin is tuple:
        return (sample(typing.get_args(tp)[0], k), sample(typing.get_args(tp)[0], k + 1))
    if dataclasses.is_dataclass(tp):
        return build(tp, k)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = list(tp)
        return members[-1 - (k % max(1, len(members) - 1))]  # never the first (often the default)
    return {bool: True, int: 1000 + k, float: 0.5 + k, str: f"text{k}"}[tp]


def build(cls, k: int = 0):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name], k + i) for i, f in enumerate(dataclasses.fields(cls))})


@pytest.mark.req("AGT-030")
@pytest.mark.parametrize("codec", [cp.CODEC, sp.CODEC], ids=["compute", "sim"])
def test_every_field_of_every_record_round_trips(codec: RecordCodec):
    for cls in codec.records:
        record = build(cls)
        for f in dataclasses.fields(cls):  # every field carries a value of its own, not its default
            if f.default is not dataclasses.MISSING:
                assert getattr(record, f.name) != f.default, (cls.__name__, f.name)
        back = codec.decode(codec.encode(record))
        assert back == record and type(back) is cls


@pytest.mark.req("AGT-030")
def test_bad_messages_name_what_is_wrong():
    raw = cp.encode(cp.Status(infer_count=3))
    tag, fields = msgpack.unpackb(raw)
    with pytest.raises(ProtocolError, match=r"Status.infer_count: expected int, got str"):
        cp.decode(msgpack.packb([tag, {**fields, "infer_count": "three"}]))
    with pytest.raises(ProtocolError, match=r"Status.admission: 'SOME' is not one of NONE, INFERENCE, ALL"):
        cp.decode(msgpack.packb([tag, {**fields, "admission": "SOME"}]))
    with pytest.raises(ProtocolError, match="unknown field bogus"):
        cp.decode(msgpack.packb([tag, {**fields, "bogus": 1}]))
    with pytest.raises(ProtocolError, match="unknown message 'Shutdown'"):
        cp.decode(msgpack.packb(["Shutdown", {}]))
    with pytest.raises(ProtocolError, match=r"StartJob.job: a job is INFERENCE or TRAINING"):
        cp.decode(msgpack.packb(["StartJob", {"req_id": 1, "job": {"job_id": 1, "kind": "NONE", "name": "x"}}]))
    with pytest.raises(ProtocolError, match="not msgpack"):
        sp.decode(b"\xc1")
    with pytest.raises(ProtocolError, match=r"a message is \[tag, \{fields\}\]"):
        sp.decode(msgpack.packb({"type": "env"}))  # the old untyped form is refused, not half-read
    with pytest.raises(ProtocolError, match="Env.seq: missing"):
        sp.decode(msgpack.packb(["Env", {"t_s": 1.0}]))


@pytest.mark.req("AGT-031")
def test_a_lenient_decode_keeps_the_good_values_and_names_the_bad():
    raw = msgpack.packb(["Env", {"seq": 4, "t_s": 10.0,
                                 "temps_c": {"tj-thermal": 130.0, "cpu-thermal": "hot", "gpu-thermal": None},
                                 "eps": {"soc_pct": "full", "solar_power_w": 12.5}, "board_power_w": [1]}])
    env, problems = sp.CODEC.decode_lenient(raw)
    assert env.seq == 4 and env.temps_c == {"tj-thermal": 130.0, "gpu-thermal": None}
    assert env.eps == sp.EpsValues(soc_pct=None, solar_power_w=12.5) and env.board_power_w is None
    assert sorted(problems) == sorted([
        "Env.temps_c['cpu-thermal']: expected float, got str",
        "Env.eps.soc_pct: expected float, got str",
        "Env.board_power_w: expected float, got list",
    ])
    with pytest.raises(ProtocolError):
        sp.CODEC.decode(raw)  # the strict decode refuses the same message


def test_a_codec_takes_frozen_records_only():
    @dataclasses.dataclass
    class Loose:
        x: int

    with pytest.raises(TypeError, match="frozen"):
        RecordCodec("test", (Loose,))


@pytest.mark.req("AGT-030")
def test_an_unknown_field_with_a_hostile_name_is_named_on_one_line():
    """A field name with a newline and an escape sequence is named escaped: the error, said as an event or a log
    line, stays one line and forges nothing (found in audit: the name went into it as it came)."""
    raw = msgpack.packb(["Ping", {"seq": 1, "x\nINTERNAL_ERROR forged\x1b[2J": 1}])
    for decode in (cp.CODEC.decode, cp.CODEC.decode_lenient):
        with pytest.raises(ProtocolError) as err:
            decode(raw)
        text = str(err.value)
        assert text.isprintable() and "\n" not in text, text
        assert text == "Ping: unknown field x\\nINTERNAL_ERROR forged\\x1b[2J"
