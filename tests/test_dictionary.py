"""The dictionary: consistent, validating, exported, and the generated docs current."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import (
    ArgumentError,
    Argument,
    Channel,
    Command,
    Dictionary,
    DictionaryError,
    FailureCode,
    FromParam,
    HkPacket,
    Limits,
    ValueSpec,
    ValueType as T,
)
from flight.link.docgen import dictionary_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_every_packet_channel_and_every_channel_in_a_packet():
    in_packets = {name for p in DICTIONARY.packets for name in p.channels}
    assert in_packets == set(DICTIONARY.channel_by_name)


def test_duplicates_are_refused():
    noop = Command("NOOP", 1, "x")
    with pytest.raises(DictionaryError, match="duplicate command opcode 1"):
        Dictionary([noop, Command("OTHER", 1, "y")], [], [], [], [])
    with pytest.raises(DictionaryError, match="unknown channel nope"):
        Dictionary([], [], [HkPacket(1, "HK", 16, ("nope",), "")], [], [])
    with pytest.raises(DictionaryError, match="command WIPE is read-only and hazardous"):
        Dictionary([Command("WIPE", 2, "z", hazardous=True, read_only=True)], [], [], [], [])


@pytest.mark.parametrize(
    "spec,raw,expected",
    [
        (ValueSpec(T.U8), "255", 255),
        (ValueSpec(T.U32), "0x10", 16),
        (ValueSpec(T.I32), -5, -5),
        (ValueSpec(T.F64, "W", 0, 50), "12.5", 12.5),
        (ValueSpec(T.BOOL), "on", True),
        (ValueSpec(T.ENUM, choices=("SAFE", "IDLE")), "idle", "IDLE"),
        (ValueSpec(T.STRING), "hello", "hello"),
        (ValueSpec(T.BYTES), "00ff", b"\x00\xff"),
        (ValueSpec(T.U16), 3.0, 3),
    ],
)
def test_values_coerce(spec, raw, expected):
    assert spec.coerce(raw) == expected


@pytest.mark.parametrize(
    "spec,raw,code",
    [
        (ValueSpec(T.U8), 256, FailureCode.OUT_OF_RANGE),
        (ValueSpec(T.U8), -1, FailureCode.OUT_OF_RANGE),
        (ValueSpec(T.U8), "abc", FailureCode.BAD_ARGUMENTS),
        (ValueSpec(T.U8), 1.5, FailureCode.BAD_ARGUMENTS),
        (ValueSpec(T.U8), True, FailureCode.BAD_ARGUMENTS),
        (ValueSpec(T.F64, "W", 0, 50), 50.1, FailureCode.OUT_OF_RANGE),
        (ValueSpec(T.F64), float("nan"), FailureCode.OUT_OF_RANGE),
        (ValueSpec(T.ENUM, choices=("SAFE",)), "BOOT", FailureCode.OUT_OF_RANGE),
        (ValueSpec(T.STRING, max_len=3), "abcd", FailureCode.OUT_OF_RANGE),
        (ValueSpec(T.BOOL), "maybe", FailureCode.BAD_ARGUMENTS),
    ],
)
def test_bad_values_are_refused_with_a_code(spec, raw, code):
    with pytest.raises(ArgumentError) as e:
        spec.coerce(raw, "x")
    assert e.value.code is code
    assert "x" in str(e.value)


def test_command_arguments_checked_as_a_whole():
    cmd = Command("SET", 9, "d", (Argument("a", ValueSpec(T.U8), "a"), Argument("b", ValueSpec(T.U8), "b", default=4)))
    assert cmd.validate_args({"a": "1"}) == {"a": 1, "b": 4}
    with pytest.raises(ArgumentError, match="missing argument a"):
        cmd.validate_args({})
    with pytest.raises(ArgumentError, match="unknown argument c"):
        cmd.validate_args({"a": 1, "c": 2})
    with pytest.raises(ArgumentError) as e:
        DICTIONARY.command("PIGN")
    assert e.value.code is FailureCode.UNKNOWN_COMMAND


def test_limits_states():
    lim = Limits(warn_low=10, warn_high=80, crit_low=5, crit_high=95)
    assert [lim.state(v) for v in (50, 9, 81, 4, 96, "text", None)] == [
        "nominal", "warning", "warning", "critical", "critical", "nominal", "nominal"]


@pytest.mark.req("AGT-006")
def test_limits_that_follow_parameters_resolve_with_the_values_given():
    assert DICTIONARY.limits("temp_max_c") == Limits(warn_high=85.0, crit_high=95.0)  # the defaults
    assert DICTIONARY.limits("temp_max_c", {"thermal_soft_limit_c": 70.0}) == Limits(warn_high=70.0, crit_high=95.0)
    with pytest.raises(ValueError, match="resolve them first"):
        DICTIONARY.channel_by_name["temp_max_c"].limits.state(90.0)
    with pytest.raises(DictionaryError, match="limits follow unknown parameter no_such_param"):
        Dictionary((), (Channel("x", T.F64, "", "x", Limits(warn_high=FromParam("no_such_param"))),), (), (), ())
    json_limits = {c["name"]: c.get("limits") for c in DICTIONARY.to_json()["channels"]}
    assert json_limits["battery_soc_pct"] == {"warn_low": {"param": "battery_floor_pct"},
                                             "crit_low": {"param": "battery_safe_pct"}}


def test_hash_changes_with_content_and_not_otherwise():
    ch = Channel("x", T.U8, "count", "d")
    a = Dictionary([Command("A", 1, "d")], [ch], [HkPacket(1, "HK", 16, ("x",), "")], [], [])
    b = Dictionary([Command("A", 1, "d")], [ch], [HkPacket(1, "HK", 16, ("x",), "")], [], [])
    c = Dictionary([Command("A", 2, "d")], [ch], [HkPacket(1, "HK", 16, ("x",), "")], [], [])
    assert a.version_hash == b.version_hash != c.version_hash


def test_json_export_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "flight", "dictionary", "--json"], capture_output=True, text=True, check=True)
    exported = json.loads(out.stdout)
    assert exported["version_hash"] == DICTIONARY.version_hash
    assert [c["name"] for c in exported["commands"]] == [c.name for c in DICTIONARY.commands]
    assert {e["severity"] for e in exported["events"]} <= {
        "FATAL", "WARNING_HI", "WARNING_LO", "COMMAND", "ACTIVITY_HI", "ACTIVITY_LO", "DIAGNOSTIC"}


def test_generated_reference_in_docs_is_current():
    committed = (ROOT / "docs" / "dictionary.md").read_text()
    assert committed == dictionary_markdown(DICTIONARY), "run `make docs` and commit docs/dictionary.md"
