"""What the packets mean: commands, verification reports, housekeeping and events.

Packets (flight.link.packets) carry bytes; this module turns dictionary objects into
msgpack application data and back. Formats, all msgpack:

- command, TC(8,1) to the agent's APID: ``[opcode, cmd_id, {arg: value}]``. ``cmd_id``
  is a 64-bit number the sender draws once per command and keeps across retries; the
  agent executes each ``cmd_id`` once and answers retries from its cache.
- verification, TM(1,1|2|3|4|7|8): ``{"req", "cmd_id", "op", "code", "reason", "result"}``
  (``req`` is the PUS request ID of the TC: packet ID and sequence control).
- housekeeping, TM(3,25): ``[sid, value, ...]`` in the packet's channel order.
- event, TM(5,1..4): ``[event_id, {arg: value}]``; the subtype follows the severity.
- ping, TC(17,1) answered by TM(17,2), empty: the PUS connection test, for third-party tools.
- parameter report, TM(20,2): ``{param_id: value, ...}`` for every parameter, so the ground
  knows the values the agent acts on (limits that follow parameters are resolved with them).
- store acknowledgement, TC(15,130) (mission-specific, no verification reports: it is part of
  the link, like a ping): ``[[apid, first seq, last seq, first time ms, last time ms], ...]``,
  one run per unbroken stretch of one APID's sequence the ground received since its last
  acknowledgement (at most :data:`MAX_ACK_RUNS`); empty, it says only "the ground is listening".
- playback, TM(15,131) (mission-specific) on APID PLAYBACK: ``[packet, ...]``, stored packets
  played back from the on-board store (``flight.agent.tm_store``), each whole, bytes as they were
  first sent (their own APID, sequence count, time and CRC), oldest first within a priority.
- power plan, TM(140,1) (mission-specific): the receding-horizon energy plan in force
  (:class:`PlanRecord`), a few hundred bytes: a map of ``t0`` (s), ``dt`` (step, s),
  ``keep`` (%), ``ms`` (solve time), ``names`` (the board's power modes, lowest first) and
  byte strings of one byte a step: ``soc`` (predicted charge at now and each step's end,
  0.5 % a count), ``mode`` (0 idle, k + 1 for ``names[k]``), ``solar`` (the forecast the
  plan used, ``lsb`` W a count) and ``umbra`` (1 where the orbit is predicted in shadow).

The ground decodes whatever the link delivers, so its decoders have one error contract:
:func:`flight.link.packets.unpack` and :meth:`Codec.decode_tm` raise :class:`PacketError`
and nothing else, whatever the bytes (see :meth:`Codec.decode_tm` for what is checked), and a
decoded record can always be rendered. ``tests/test_decoders_fuzz.py`` holds them to it.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgpack

from flight.link.apid import Apid
from flight.link.dictionary import (
    INT_BOUNDS,
    ArgumentError,
    Channel,
    Command,
    Dictionary,
    Event,
    FailureCode,
    HkPacket,
    Severity,
    ValueType,
    brief,
)
from flight.link.packets import (
    ACK_ACCEPTANCE,
    ACK_ALL,
    ACK_COMPLETION,
    ACK_START,
    MAX_SEQ_COUNT,
    PacketError,
    SequenceCounters,
    Service,
    Subtype,
    Telecommand,
    Telemetry,
    pack_tc,
    pack_tm,
    unpack,
)


class Stage(enum.Enum):
    """Verification stages, in the order they arrive; each maps to a PUS 1 subtype pair."""

    ACCEPTED = "accepted"
    STARTED = "started"
    COMPLETED = "completed"


_STAGE_SUBTYPES = {
    Stage.ACCEPTED: (Subtype.ACCEPTANCE_SUCCESS, Subtype.ACCEPTANCE_FAILURE),
    Stage.STARTED: (Subtype.START_SUCCESS, Subtype.START_FAILURE),
    Stage.COMPLETED: (Subtype.COMPLETION_SUCCESS, Subtype.COMPLETION_FAILURE),
}
_SUBTYPE_STAGE = {sub: (stage, ok) for stage, pair in _STAGE_SUBTYPES.items() for sub, ok in zip(pair, (True, False))}
# The acknowledgement flag that asks for each stage's success report (packets.ACK_*).
STAGE_ACK = {Stage.ACCEPTED: ACK_ACCEPTANCE, Stage.STARTED: ACK_START, Stage.COMPLETED: ACK_COMPLETION}


def ack_stages(ack_flags: int) -> list[Stage]:
    """The stages whose success reports ``ack_flags`` ask for, in order."""
    return [stage for stage, flag in STAGE_ACK.items() if ack_flags & flag]


def ack_flags_for(stages: Iterable[str]) -> int:
    """The flags that ask for the success reports of ``stages`` (their names: an operator's
    choice); ValueError naming the first that is not a stage."""
    flags = 0
    for name in stages:
        stage = next((s for s in STAGE_ACK if s.value == name), None)
        if stage is None:
            raise ValueError(f"{str(name)[:40]!r} is not a stage: {', '.join(s.value for s in STAGE_ACK)}")
        flags |= STAGE_ACK[stage]
    return flags


_EVENT_SUBTYPE = {
    Severity.DIAGNOSTIC: Subtype.EVENT_INFO,
    Severity.ACTIVITY_LO: Subtype.EVENT_INFO,
    Severity.ACTIVITY_HI: Subtype.EVENT_INFO,
    Severity.COMMAND: Subtype.EVENT_INFO,
    Severity.WARNING_LO: Subtype.EVENT_LOW,
    Severity.WARNING_HI: Subtype.EVENT_MEDIUM,
    Severity.FATAL: Subtype.EVENT_HIGH,
}


MAX_REASON_LEN = 240
# Levels of arrays and maps the ground accepts inside a report's free-form values (a
# verification result, event arguments). The agent sends flat maps of scalars; msgpack itself
# nests up to 1024 levels, past Python's recursion limit of 1000, where rendering (repr,
# jsonable, json.dumps) would fail. 16 leaves room for any result the agent might grow.
MAX_NESTING = 16
_REQUEST_ID_MAX = 2**32 - 1  # packet ID and sequence control, 16 bits each
_CMD_ID_MAX = 2**64 - 1
_OPCODE_MAX = 2**16 - 1
_CODE_MAX = 2**8 - 1  # failure codes are small numbers; one above FailureCode's is a newer agent's
_VERIFICATION_KEYS = frozenset({"req", "cmd_id", "op", "code", "reason", "result"})


def new_cmd_id() -> int:
    """A fresh command identity; 63 random bits make a collision across sessions negligible."""
    return secrets.randbits(63) or 1


def _whole(value: Any, low: int, end: int) -> bool:
    """``value`` is an integer (not a boolean) in ``low..end-1``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < end


def _unpackb(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types (TypeError for an unhashable key)
        raise PacketError("encoding", f"application data is not valid msgpack: {type(exc).__name__}: {exc}"[:200],
                          "data") from None


_show = brief  # a short, safe description of a wire value for an error message


def _integer(value: Any, hi: int, where: str) -> int:
    """``value`` if it is an integer in 0..hi (not a bool, not a float, not text), else PacketError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PacketError("encoding", f"verification report {where}: {_show(value)} is not an integer", where)
    if not 0 <= value <= hi:
        raise PacketError("value", f"verification report {where}: {value} outside 0..{hi}", where)
    return value


def _plain(value: Any, field: str, label: str, depth: int = 0) -> Any:
    """``value`` if it is plain msgpack data nested at most :data:`MAX_NESTING` deep, else PacketError.

    Plain: nil, bool, int, float (NaN and infinities included), str, bytes, and arrays and maps
    of them. msgpack extension types (a timestamp among them) are not: the agent never sends
    one, and a renderer would not know what to make of it. ``label`` starts the message,
    ``field`` is the error's field.
    """
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if depth >= MAX_NESTING:
        raise PacketError("encoding", f"{label}: nested more than {MAX_NESTING} levels deep", field)
    if isinstance(value, dict):
        for key, item in value.items():
            _plain(key, field, label, depth + 1)
            _plain(item, field, label, depth + 1)
        return value
    if isinstance(value, list):  # not tuple: msgpack.ExtType is a namedtuple
        for item in value:
            _plain(item, field, label, depth + 1)
        return value
    raise PacketError("encoding", f"{label}: {type(value).__name__} {_show(value)} is not plain data "
                                  "(nil, bool, number, text, bytes, array, map)", field)


def _text_map(value: Any, field: str, label: str) -> dict[str, Any]:
    """A map with text keys and plain values (nil is an empty map), else PacketError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PacketError("encoding", f"{label}: {_show(value)} is not a map", field)
    for key in value:
        if not isinstance(key, str):
            raise PacketError("encoding", f"{label}: key {_show(key)} is not text", field)
    return _plain(value, field, label)


def _channel_value(packet: HkPacket, channel: Channel, value: Any) -> Any:
    """An HK value checked against its channel's declared type, else PacketError naming the channel.

    nil is "not available now" for every channel. Integer channels take integers within their
    type, and whole floats as :meth:`ValueSpec.coerce` does (3.0 reads as 3; 2.5, NaN or an
    infinity in a u32 counter is an error); float channels take any number, NaN and infinities
    included (``eclipse_in_s`` is NaN when no eclipse is in sight); enum channels take one of
    their choices, in the dictionary's spelling; bool, string and bytes channels their type.
    """
    if value is None:
        return None
    t = channel.type
    bounds = INT_BOUNDS.get(t)
    where = channel.name
    if bounds is not None:
        if isinstance(value, float) and value.is_integer():  # False for NaN and the infinities
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if bounds[0] <= value <= bounds[1]:
                return value
            raise PacketError("value", f"{packet.name} {where}: {_show(value)} outside {t.value} "
                                       f"{bounds[0]}..{bounds[1]}", where)
    elif t is ValueType.F64 or t is ValueType.F32:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif t is ValueType.BOOL:
        if isinstance(value, bool):
            return value
    elif t is ValueType.STRING:
        if isinstance(value, str):
            return value
    elif t is ValueType.ENUM and isinstance(value, str):
        if value in channel.choices:
            return value
        raise PacketError("value", f"{packet.name} {where}: {_show(value)} is not one of "
                                   f"{', '.join(channel.choices)}", where)
    elif t is ValueType.BYTES:
        if isinstance(value, bytes):
            return value
    raise PacketError("encoding", f"{packet.name} {where}: {_show(value)} is not a {t.value}", where)


@dataclass(frozen=True)
class CommandRequest:
    """A decoded and validated telecommand."""

    command: Command
    args: dict[str, Any]
    cmd_id: int
    tc: Telecommand


@dataclass(frozen=True)
class Verification:
    """One PUS service 1 report about one command."""

    stage: Stage
    success: bool
    request_id: int
    cmd_id: int
    opcode: int
    code: FailureCode = FailureCode.NONE
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """No further report follows this one."""
        return self.stage is Stage.COMPLETED or not self.success


@dataclass(frozen=True)
class EventRecord:
    event: Event
    args: dict[str, Any]
    time_s: float

    @property
    def text(self) -> str:
        """The event's message. Never raises: arguments that do not fit the format (nil under
        ``{:.1f}``, text under ``{:d}``) give the format followed by the arguments."""
        try:
            return self.event.render(self.args)
        except Exception:  # noqa: BLE001 - a value's __format__ may raise anything; a message must still show
            return f"{self.event.format} {self.args!r}"


@dataclass(frozen=True)
class HkRecord:
    packet: HkPacket
    values: dict[str, Any]
    time_s: float


@dataclass(frozen=True)
class ParamRecord:
    """The agent's parameter values (TM(20,2)), by name.

    ``skipped`` says what the report carried that this dictionary cannot use (an unknown id,
    a value its declaration refuses), one line each; those values are not in ``values``.
    """

    values: dict[str, Any]
    time_s: float
    skipped: tuple[str, ...] = ()


PLAN_MAX_STEPS = 1024  # a plan over a day at 90-s steps; the agent's are ~70
PLAN_MAX_MODES = 16
PLAN_MAX_NAME = 32  # characters of a power mode's name
PLAN_MAX_STEP_S = 86_400.0
PLAN_MAX_SPAN_S = 7 * 86_400.0  # steps × step: no plan looks further ahead than a week
PLAN_MAX_SKEW_S = 86_400.0  # a plan starts within a day of its packet's time


@dataclass(frozen=True)
class PlanRecord:
    """The energy plan in force (TM(140,1)): from ``start_unix_s`` every ``step_s``, the charge
    it predicts (N + 1 values: now, then each step's end), the mode it runs most of each step
    (an index into ``mode_names``, -1 idle), the array output it forecast and where it
    predicts shadow. Quantised on the wire: charge to 0.5 %, solar to 1/255 of its peak."""

    start_unix_s: float
    step_s: float
    soc_pct: tuple[float, ...]
    mode: tuple[int, ...]
    mode_names: tuple[str, ...]
    solar_w: tuple[float, ...]
    umbra: tuple[bool, ...]
    keep_pct: float
    solve_ms: float
    time_s: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.mode)
        if not 1 <= n <= PLAN_MAX_STEPS:
            raise ValueError(f"a plan has 1..{PLAN_MAX_STEPS} steps, got {n}")
        if len(self.soc_pct) != n + 1 or len(self.solar_w) != n or len(self.umbra) != n:
            raise ValueError(f"a plan of {n} steps needs {n + 1} soc_pct and {n} solar_w and umbra values, got "
                             f"{len(self.soc_pct)}, {len(self.solar_w)}, {len(self.umbra)}")
        if not 1 <= len(self.mode_names) <= PLAN_MAX_MODES:
            raise ValueError(f"a plan names 1..{PLAN_MAX_MODES} modes, got {len(self.mode_names)}")
        if any(not isinstance(m, str) or len(m) > PLAN_MAX_NAME for m in self.mode_names):
            raise ValueError(f"a plan's mode names are text of at most {PLAN_MAX_NAME} characters")
        if not (math.isfinite(self.step_s) and 0.0 < self.step_s <= PLAN_MAX_STEP_S
                and n * self.step_s <= PLAN_MAX_SPAN_S):
            raise ValueError(f"a plan's step is in (0, {PLAN_MAX_STEP_S:.0f}] s and its span at most "
                             f"{PLAN_MAX_SPAN_S:.0f} s, got {n} steps of {self.step_s} s")
        if not math.isfinite(self.start_unix_s):
            raise ValueError("a plan's start is a finite time")
        if any(not -1 <= m < len(self.mode_names) for m in self.mode):
            raise ValueError(f"a plan's modes index its {len(self.mode_names)} mode names or are -1 (idle)")

    @property
    def end_unix_s(self) -> float:
        return self.start_unix_s + self.step_s * len(self.mode)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the archive, the API and the web console."""
        return {"start_unix_s": self.start_unix_s, "step_s": self.step_s, "soc_pct": list(self.soc_pct),
                "mode": list(self.mode), "mode_names": list(self.mode_names), "solar_w": list(self.solar_w),
                "umbra": list(self.umbra), "keep_pct": self.keep_pct, "solve_ms": self.solve_ms, "time_s": self.time_s}


_PLAN_KEYS = {"t0": float, "dt": float, "keep": float, "ms": float, "lsb": float, "names": list, "soc": bytes,
              "mode": bytes, "solar": bytes, "umbra": bytes}


MAX_ACK_RUNS = 512  # runs in one acknowledgement: 512 * 5 numbers stay under 16 KiB of msgpack
MAX_PLAYBACK_PACKETS = 64  # packets in one playback container
MAX_PLAYBACK_BYTES = 4096  # bytes of packets in one playback container (a serial frame stays short)


@dataclass(frozen=True)
class AckRun:
    """An unbroken stretch of one APID's sequence the ground received: the store acknowledges
    the packets of ``apid`` whose time lies in [first_ms, last_ms] and whose sequence count lies
    in first_seq..last_seq (modulo 2**14)."""

    apid: int
    first_seq: int
    last_seq: int
    first_ms: int
    last_ms: int

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.apid, self.first_seq, self.last_seq, self.first_ms, self.last_ms)


@dataclass(frozen=True)
class PlaybackRecord:
    """A playback container: stored packets, each whole."""

    packets: tuple[bytes, ...]
    time_s: float = 0.0


class TelemetryError(ValueError):
    """The agent tried to send telemetry that does not match the dictionary (a bug, never a nil on the wire)."""


class Codec:
    """Encodes and decodes messages for one dictionary, with per-APID sequence counters."""

    def __init__(self, dictionary: Dictionary, apid: int = Apid.AGENT):
        self.dictionary = dictionary
        self.apid = apid
        self.seq = SequenceCounters()
        self._packers = {p.sid: p for p in dictionary.packets}
        self._hk_channels = {p.sid: tuple(dictionary.channel_by_name[n] for n in p.channels) for p in dictionary.packets}

    # --- commands (ground side builds, agent side decodes) ---------------------------------

    def encode_command(
        self, name: str, args: dict[str, Any], cmd_id: int | None = None, source_id: int = 0, dest_apid: int = Apid.AGENT,
        ack_flags: int = ACK_ALL,
    ) -> tuple[bytes, int]:
        """Validate ``args`` against the dictionary and build the TC; return (packet, cmd_id).
        ``ack_flags``: the success reports asked for (packets.ACK_*; failures always come)."""
        command = self.dictionary.command(name)
        return self.encode_checked(command, command.validate_args(args), cmd_id, source_id, dest_apid, ack_flags)

    def encode_checked(
        self, command: Command, checked: dict[str, Any], cmd_id: int | None = None, source_id: int = 0,
        dest_apid: int = Apid.AGENT, ack_flags: int = ACK_ALL,
    ) -> tuple[bytes, int]:
        """:meth:`encode_command` for arguments ``command.validate_args`` returned already (the
        ground client keeps them on the command's result: checked once, not twice)."""
        cmd_id = new_cmd_id() if cmd_id is None else cmd_id
        data = msgpack.packb([command.opcode, cmd_id, checked], use_bin_type=True)
        return pack_tc(dest_apid, self.seq.next(dest_apid), Service.FUNCTION, Subtype.PERFORM_FUNCTION, data, source_id,
                       ack_flags), cmd_id

    def decode_command(self, tc: Telecommand) -> CommandRequest:
        """Decode a TC(8,1). Raises PacketError for a broken envelope, ArgumentError for the rest."""
        body = _unpackb(tc.app_data)
        if not (isinstance(body, list) and len(body) == 3):
            raise PacketError("encoding", "command data must be [opcode, cmd_id, {args}]")
        opcode, cmd_id, args = body
        # Said briefly (found in audit: an opcode or cmd_id nested a thousand deep made str() raise RecursionError,
        # an internal error and no report, as an argument's once did)
        if not _whole(opcode, 0, 2**16):  # a boolean is an int to Python, not to msgpack's sender
            raise PacketError("encoding", f"opcode: {_show(opcode)} must be a whole number in 0..65535", "opcode")
        if not _whole(cmd_id, 1, 2**64):  # 0 would be neither journaled nor cached: a retry would run it again
            raise PacketError("encoding", f"cmd_id: {_show(cmd_id)} must be a whole number in 1..2^64-1", "cmd_id")
        if isinstance(args, dict) and not all(isinstance(k, str) for k in args):
            raise PacketError("encoding", "argument names must be strings")
        command = self.dictionary.command_by_opcode.get(opcode)
        if command is None:
            raise ArgumentError(f"unknown opcode {opcode:#06x}", FailureCode.UNKNOWN_COMMAND)
        return CommandRequest(command, command.validate_args(args), cmd_id, tc)

    @staticmethod
    def peek_cmd_id(tc: Telecommand) -> tuple[int, int]:
        """(opcode, cmd_id) of a command, 0 where unreadable: enough to address a failure report.

        Reads only the array header and its first two items, so a broken argument map
        further on cannot hide who sent the command.
        """
        try:
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(tc.app_data) + 1)
            unpacker.feed(tc.app_data)
            if unpacker.read_array_header() >= 2:
                opcode, cmd_id = unpacker.unpack(), unpacker.unpack()
                if _whole(opcode, 0, 2**16) and _whole(cmd_id, 0, 2**64):
                    return opcode, cmd_id
        except Exception:  # noqa: BLE001 - a failure report must go out whatever the data holds
            pass
        return 0, 0

    # --- telemetry (agent side builds) ------------------------------------------------------

    def _tm(self, apid: int, service: int, subtype: int, data: bytes, time_s: float) -> bytes:
        return pack_tm(apid, self.seq.next(apid), service, subtype, data, time_s)

    def encode_verification(self, v: Verification, time_s: float, apid: int | None = None) -> bytes:
        ok, fail = _STAGE_SUBTYPES[v.stage]
        body: dict[str, Any] = {"req": v.request_id, "cmd_id": v.cmd_id, "op": v.opcode}
        if not v.success:
            body["code"] = int(v.code)
            body["reason"] = v.reason[:MAX_REASON_LEN]  # a reason quoting a huge argument must still fit
        if v.result:
            body["result"] = v.result
        data = msgpack.packb(body, use_bin_type=True)
        return self._tm(self.apid if apid is None else apid, Service.VERIFICATION, ok if v.success else fail, data, time_s)

    def encode_hk(self, sid: int, values: dict[str, Any], time_s: float) -> bytes:
        """Build an HK report from exactly the packet's channels.

        A missing or extra key is a :class:`TelemetryError`: a renamed channel must fail where
        it is built, not travel as nil. None is a value ("not available now"), given explicitly.
        """
        packet = self._packers[sid]
        if values.keys() != set(packet.channels):
            missing = sorted(set(packet.channels) - values.keys())
            extra = sorted(values.keys() - set(packet.channels))
            raise TelemetryError(f"{packet.name}: missing {', '.join(missing) or 'none'}; "
                                 f"not in the packet {', '.join(map(str, extra)) or 'none'}")
        row = [sid, *(values[name] for name in packet.channels)]
        return self._tm(packet.apid, Service.HOUSEKEEPING, Subtype.HK_REPORT, msgpack.packb(row, use_bin_type=True), time_s)

    def encode_param_report(self, values: dict[str, Any], time_s: float) -> bytes:
        """TM(20,2) with the value of every parameter, keyed by parameter id."""
        by_name = self.dictionary.parameter_by_name
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise TelemetryError(f"no parameter {', '.join(unknown)} in the dictionary")
        body = {by_name[name].id: value for name, value in values.items()}
        return self._tm(self.apid, Service.PARAMETER, Subtype.PARAM_REPORT, msgpack.packb(body, use_bin_type=True), time_s)

    def encode_plan(self, plan: PlanRecord, time_s: float) -> bytes:
        """TM(140,1): the plan, one byte a step for each series (see the module doc)."""
        peak = max(plan.solar_w, default=0.0)
        lsb = max(peak / 255.0, 0.01)
        body = {
            "t0": float(plan.start_unix_s), "dt": float(plan.step_s), "keep": float(plan.keep_pct),
            "ms": float(plan.solve_ms), "lsb": lsb, "names": list(plan.mode_names),
            "soc": bytes(min(200, max(0, round(2.0 * v))) for v in plan.soc_pct),
            "mode": bytes(m + 1 for m in plan.mode),
            "solar": bytes(min(255, max(0, round(w / lsb))) for w in plan.solar_w),
            "umbra": bytes(int(bool(u)) for u in plan.umbra),
        }
        return self._tm(self.apid, Service.POWER_PLAN, Subtype.PLAN_REPORT, msgpack.packb(body, use_bin_type=True),
                        time_s)

    def encode_event(self, name: str, args: dict[str, Any], time_s: float, apid: int | None = None) -> bytes:
        event = self.dictionary.event_by_name[name]
        if set(args) != set(event.args):
            raise ValueError(f"event {name} takes {sorted(event.args)}, got {sorted(args)}")
        data = msgpack.packb([event.id, args], use_bin_type=True)
        return self._tm(self.apid if apid is None else apid, Service.EVENT, _EVENT_SUBTYPE[event.severity], data, time_s)

    def encode_playback(self, packets: list[bytes], time_s: float) -> bytes:
        """TM(15,131) on APID PLAYBACK: stored packets, whole (at most MAX_PLAYBACK_PACKETS)."""
        if not 1 <= len(packets) <= MAX_PLAYBACK_PACKETS:
            raise ValueError(f"a playback container holds 1..{MAX_PLAYBACK_PACKETS} packets, got {len(packets)}")
        return self._tm(Apid.PLAYBACK, Service.STORAGE, Subtype.PLAYBACK,
                        msgpack.packb([bytes(p) for p in packets], use_bin_type=True), time_s)

    def encode_store_ack(self, runs: list[AckRun], dest_apid: int = Apid.AGENT) -> bytes:
        """TC(15,130): what the ground received since its last acknowledgement (empty: listening)."""
        if len(runs) > MAX_ACK_RUNS:
            raise ValueError(f"an acknowledgement carries at most {MAX_ACK_RUNS} runs, got {len(runs)}")
        data = msgpack.packb([list(r.as_tuple()) for r in runs], use_bin_type=True)
        return pack_tc(dest_apid, self.seq.next(dest_apid), Service.STORAGE, Subtype.STORE_ACK, data)

    @staticmethod
    def decode_store_ack(tc: Telecommand) -> list[AckRun]:
        """The runs of a TC(15,130); PacketError naming the field for anything else."""
        body = _unpackb(tc.app_data)
        if not isinstance(body, list):
            raise PacketError("encoding", f"store acknowledgement data must be an array of runs, got {_show(body)}",
                              "data")
        if len(body) > MAX_ACK_RUNS:
            raise PacketError("value", f"store acknowledgement: {len(body)} runs, at most {MAX_ACK_RUNS}", "data")
        runs = []
        for k, run in enumerate(body):
            where = f"runs[{k}]"
            if not (isinstance(run, list) and len(run) == 5):
                raise PacketError("encoding", f"store acknowledgement {where}: [apid, first seq, last seq, first "
                                              f"time ms, last time ms] expected, got {_show(run)}", where)
            for value, name, lo, hi in zip(run, ("apid", "first_seq", "last_seq", "first_ms", "last_ms"),
                                           (0, 0, 0, 0, 0), (0x7FF, MAX_SEQ_COUNT, MAX_SEQ_COUNT, 2**53, 2**53)):
                if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                    raise PacketError("value", f"store acknowledgement {where}.{name}: {_show(value)} is not an "
                                               f"integer in {lo}..{hi}", f"{where}.{name}")
            if run[3] > run[4]:
                raise PacketError("value", f"store acknowledgement {where}: first time {run[3]} ms after last "
                                           f"{run[4]} ms", f"{where}.first_ms")
            runs.append(AckRun(*run))
        return runs

    def encode_file_pdu_tm(self, pdu: bytes, time_s: float) -> bytes:
        """TM(141,1) on APID FILES: one CFDP PDU from the agent, whole (flight/files)."""
        return self._tm(Apid.FILES, Service.FILE, Subtype.FILE_PDU, bytes(pdu), time_s)

    def encode_file_pdu_tc(self, pdu: bytes) -> bytes:
        """TC(141,1) on APID FILES: one CFDP PDU from the ground, whole; no verification reports
        (CFDP acknowledges by itself)."""
        return pack_tc(Apid.FILES, self.seq.next(Apid.FILES), Service.FILE, Subtype.FILE_PDU, bytes(pdu),
                       ack_flags=0)

    @staticmethod
    def file_pdu(packet: Telecommand | Telemetry) -> bytes | None:
        """The CFDP PDU a packet carries, None if it is not a file packet."""
        if packet.apid == Apid.FILES and packet.service == Service.FILE and packet.subtype == Subtype.FILE_PDU:
            return packet.app_data if isinstance(packet, Telecommand) else packet.source_data
        return None

    def encode_pong(self, time_s: float) -> bytes:
        return self._tm(self.apid, Service.TEST, Subtype.PONG, b"", time_s)

    # --- telemetry (ground side decodes) -----------------------------------------------------

    def decode_tm(self, tm: Telemetry) -> (Verification | HkRecord | EventRecord | ParamRecord | PlanRecord | PlaybackRecord
                                           | None):
        """Decode a TM packet's data; None for a service this dictionary has nothing to say about.

        Error contract: whatever ``tm.source_data`` holds, this returns a record (or None) or
        raises :class:`PacketError` with ``field`` naming the part at fault and the text saying
        why; never anything else, so the ground survives any packet with a valid CRC. Refused:

        - data that is not msgpack (``field`` "data"), or not the shape of its service: a map
          for verification and parameters, ``[sid, value, ...]`` for HK, ``[event id, {args}]``;
        - a verification report with a key it does not define, or without ``req``, ``cmd_id``
          and ``op`` (and ``code`` and ``reason`` on a failure); ``req``, ``cmd_id``, ``op`` and
          ``code`` that are not integers in their ranges (u32, u64, u16, u8: a float, NaN or
          infinity, a bool, text, a number out of range); a ``reason`` that is not text; a
          ``result`` that is not a map with text keys. An unknown opcode is not refused (the
          agent reports on commands it does not know); an unknown failure code in 0..255 reads
          as EXECUTION_ERROR (a newer agent's code is still a failure);
        - an SID or event id that is not an integer in this dictionary; an HK packet with
          another number of values than its channels; an event without exactly its arguments;
        - an HK value that does not fit its channel's type (see :func:`_channel_value`);
        - in results and event arguments: msgpack extension types, non-text keys at the top,
          nesting deeper than :data:`MAX_NESTING`.

        Strings that are not UTF-8 and maps with unhashable keys fail as "not msgpack". A
        parameter report is read value by value: an unknown id or a value its declaration
        refuses is left out and listed in :attr:`ParamRecord.skipped`, not an error (it is a
        parameter of another dictionary version, which the hash check reports).

        Anything else raised while decoding would be a bug here; it is still turned into a
        PacketError (kind "malformed", no ``field``) so the ground goes on, and the fuzz
        tests fail on it.
        """
        try:
            return self._decode_tm(tm)
        except PacketError:
            raise
        except Exception as exc:  # noqa: BLE001 - the contract above: the ground must survive its own decoder
            raise PacketError("malformed", f"service {tm.service},{tm.subtype} data could not be decoded: "
                                           f"{type(exc).__name__}: {exc}"[:240]) from None

    def _decode_tm(self, tm: Telemetry) -> (Verification | HkRecord | EventRecord | ParamRecord | PlanRecord
                                            | PlaybackRecord | None):
        service = tm.service
        if service == Service.VERIFICATION:
            if tm.subtype not in _SUBTYPE_STAGE:
                return None
            return self._decode_verification(tm, *_SUBTYPE_STAGE[tm.subtype])
        if service == Service.HOUSEKEEPING and tm.subtype == Subtype.HK_REPORT:
            return self._decode_hk(tm)
        if service == Service.EVENT:
            return self._decode_event(tm)
        if service == Service.PARAMETER and tm.subtype == Subtype.PARAM_REPORT:
            return self._decode_params(tm)
        if service == Service.POWER_PLAN and tm.subtype == Subtype.PLAN_REPORT:
            return self._decode_plan(tm)
        if service == Service.STORAGE and tm.subtype == Subtype.PLAYBACK:
            return self._decode_playback(tm)
        return None

    @staticmethod
    def _decode_playback(tm: Telemetry) -> PlaybackRecord:
        body = _unpackb(tm.source_data)
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_PLAYBACK_PACKETS:
            raise PacketError("encoding", f"playback data must be an array of 1..{MAX_PLAYBACK_PACKETS} packets, "
                                          f"got {_show(body)}", "data")
        for k, item in enumerate(body):
            if not isinstance(item, bytes):
                raise PacketError("encoding", f"playback packets[{k}]: {_show(item)} is not bytes", f"packets[{k}]")
        return PlaybackRecord(tuple(body), tm.time_s)

    @staticmethod
    def _decode_plan(tm: Telemetry) -> PlanRecord:
        body = _unpackb(tm.source_data)
        if not isinstance(body, dict):
            raise PacketError("encoding", f"plan data must be a map, got {_show(body)}", "data")
        if body.keys() != _PLAN_KEYS.keys():
            missing = sorted(_PLAN_KEYS.keys() - body.keys())
            extra = sorted(_show(k) for k in body.keys() - _PLAN_KEYS.keys())
            raise PacketError("encoding", f"plan data: missing {', '.join(missing) or 'none'}; unknown "
                                          f"{', '.join(extra[:5]) or 'none'}"[:240], "data")
        for key, kind in _PLAN_KEYS.items():
            value = body[key]
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)) \
                if kind is float else isinstance(value, kind)
            if not ok:
                raise PacketError("encoding", f"plan {key}: {_show(value)} is not {kind.__name__}", key)
        names = body["names"]
        if not all(isinstance(n, str) and len(n) <= PLAN_MAX_NAME for n in names):
            raise PacketError("encoding", f"plan names: power mode names must be text of at most {PLAN_MAX_NAME} "
                                          "characters", "names")
        if abs(float(body["t0"]) - tm.time_s) > PLAN_MAX_SKEW_S:
            raise PacketError("value", f"plan t0: {float(body['t0'])} is more than a day from the packet's time "
                                       f"{tm.time_s}", "t0")
        try:
            return PlanRecord(
                float(body["t0"]), float(body["dt"]), tuple(c / 2.0 for c in body["soc"]),
                tuple(c - 1 for c in body["mode"]), tuple(names), tuple(c * float(body["lsb"]) for c in body["solar"]),
                tuple(bool(c) for c in body["umbra"]), float(body["keep"]), float(body["ms"]), tm.time_s)
        except ValueError as exc:
            raise PacketError("value", f"plan: {exc}", "data") from None

    @staticmethod
    def _decode_verification(tm: Telemetry, stage: Stage, ok: bool) -> Verification:
        body = _unpackb(tm.source_data)
        if not isinstance(body, dict):
            raise PacketError("encoding", f"verification data must be a map, got {_show(body)}", "data")
        for key in body:
            if key not in _VERIFICATION_KEYS:
                raise PacketError("encoding", f"verification data has unknown key {_show(key)} "
                                              f"(defined: {', '.join(sorted(_VERIFICATION_KEYS))})", "data")
        for key in ("req", "cmd_id", "op") if ok else ("req", "cmd_id", "op", "code", "reason"):
            if key not in body:
                raise PacketError("encoding", f"verification {'success' if ok else 'failure'} report without {key}", key)
        request_id = _integer(body["req"], _REQUEST_ID_MAX, "req")
        cmd_id = _integer(body["cmd_id"], _CMD_ID_MAX, "cmd_id")
        opcode = _integer(body["op"], _OPCODE_MAX, "op")
        code = FailureCode.NONE
        if "code" in body:
            number = _integer(body["code"], _CODE_MAX, "code")
            try:
                code = FailureCode(number)
            except ValueError:
                code = FailureCode.EXECUTION_ERROR
            if ok and code is not FailureCode.NONE:
                raise PacketError("value", f"verification report code: {number} in a success report", "code")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise PacketError("encoding", f"verification report reason: {_show(reason)} is not text", "reason")
        result = _text_map(body.get("result"), "result", "verification report result")
        return Verification(stage, ok, request_id, cmd_id, opcode, code, reason, result)

    def _decode_hk(self, tm: Telemetry) -> HkRecord:
        row = _unpackb(tm.source_data)
        if not (isinstance(row, list) and row):
            raise PacketError("encoding", f"housekeeping data must be [sid, value, ...], got {_show(row)}", "data")
        sid = row[0]
        if isinstance(sid, bool) or not isinstance(sid, int) or sid not in self._packers:
            raise PacketError("dictionary", f"housekeeping data names unknown SID {_show(sid)}", "sid")
        packet = self._packers[sid]
        channels = self._hk_channels[sid]
        if len(row) - 1 != len(channels):
            raise PacketError(
                "dictionary", f"{packet.name} carries {len(row) - 1} values, this dictionary expects {len(channels)}", "sid"
            )
        values = {ch.name: _channel_value(packet, ch, value) for ch, value in zip(channels, row[1:])}
        return HkRecord(packet, values, tm.time_s)

    def _decode_event(self, tm: Telemetry) -> EventRecord:
        body = _unpackb(tm.source_data)
        if not (isinstance(body, list) and len(body) == 2):
            raise PacketError("encoding", f"event data must be [event id, {{args}}], got {_show(body)}", "data")
        event_id, raw_args = body
        event = None
        if isinstance(event_id, int) and not isinstance(event_id, bool):
            event = self.dictionary.event_by_id.get(event_id)
        if event is None:
            raise PacketError("dictionary", f"event data names unknown event id {_show(event_id)}", "event_id")
        args = _text_map(raw_args, "args", f"{event.name} arguments")
        if args.keys() != set(event.args):
            missing = sorted(set(event.args) - args.keys())
            extra = sorted(args.keys() - set(event.args))
            raise PacketError("dictionary", f"{event.name}: missing argument {', '.join(missing) or 'none'}; "
                                            f"unknown {', '.join(_show(k) for k in extra[:5]) or 'none'}"[:240], "args")
        return EventRecord(event, args, tm.time_s)

    def _decode_params(self, tm: Telemetry) -> ParamRecord:
        body = _unpackb(tm.source_data)
        if not isinstance(body, dict):
            raise PacketError("encoding", f"parameter report data must be a map, got {_show(body)}", "data")
        values: dict[str, Any] = {}
        skipped: list[str] = []
        for pid, value in body.items():
            param = None
            if isinstance(pid, int) and not isinstance(pid, bool):
                param = self.dictionary.parameter_by_id.get(pid)
            if param is None:  # a parameter of another dictionary version: the hash check says so
                skipped.append(f"{_show(pid)}: no such parameter id")
                continue
            if isinstance(value, (list, dict)):  # no parameter is a collection (and its repr could be deep)
                skipped.append(f"{param.name}: {_show(value)} is not a single value")
                continue
            try:
                values[param.name] = param.spec.coerce(value, param.name)
            except ArgumentError as exc:  # out of this dictionary's range: not a value the ground can use
                skipped.append(str(exc)[:120])
        return ParamRecord(values, tm.time_s, tuple(skipped))

    def describe(self, raw: bytes) -> dict[str, Any]:
        """Everything known about one packet, as plain data: for the packet tool and the archive."""
        out: dict[str, Any] = {"len": len(raw)}
        try:
            pkt = unpack(raw)
        except PacketError as exc:
            out.update(valid=False, error=exc.kind, detail=str(exc), hex=raw.hex())
            return out
        out["valid"] = True
        out["crc"] = "ok"
        out["apid"] = pkt.apid
        out["seq_count"] = pkt.seq_count
        out["service"] = pkt.service
        out["subtype"] = pkt.subtype
        if isinstance(pkt, Telecommand):
            out.update(type="TC", source_id=pkt.source_id, ack_flags=pkt.ack_flags)
            if pkt.service == Service.FUNCTION:
                try:
                    req = self.decode_command(pkt)
                    out.update(command=req.command.name, cmd_id=req.cmd_id, args=req.args)
                except (PacketError, ArgumentError) as exc:
                    out.update(decode_error=str(exc))
            return out
        out.update(type="TM", msg_counter=pkt.msg_counter, time_s=pkt.time_s)
        try:
            rec = self.decode_tm(pkt)
        except PacketError as exc:
            out.update(decode_error=str(exc))
            return out
        if isinstance(rec, Verification):
            out.update(kind="verification", stage=rec.stage.value, success=rec.success, request_id=rec.request_id,
                       cmd_id=rec.cmd_id, opcode=rec.opcode)
            cmd = self.dictionary.command_by_opcode.get(rec.opcode)
            if cmd:
                out["command"] = cmd.name
            if not rec.success:
                out.update(code=rec.code.name, reason=rec.reason)
            if rec.result:
                out["result"] = rec.result
        elif isinstance(rec, HkRecord):
            out.update(kind="housekeeping", packet=rec.packet.name, values=rec.values)
        elif isinstance(rec, EventRecord):
            out.update(kind="event", event=rec.event.name, severity=rec.event.severity.name, text=rec.text, args=rec.args)
        elif isinstance(rec, ParamRecord):
            out.update(kind="parameters", values=rec.values)
        elif isinstance(rec, PlanRecord):
            out.update(kind="plan", plan=rec.to_json())
        elif pkt.service == Service.TEST:
            out.update(kind="pong")
        return out
