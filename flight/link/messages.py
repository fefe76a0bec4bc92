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
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

import msgpack

from flight.link.apid import Apid
from flight.link.dictionary import (
    ArgumentError,
    Command,
    Dictionary,
    Event,
    FailureCode,
    HkPacket,
    Severity,
)
from flight.link.packets import (
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


def new_cmd_id() -> int:
    """A fresh command identity; 63 random bits make a collision across sessions negligible."""
    return secrets.randbits(63) or 1


def _unpackb(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types (TypeError for an unhashable key)
        raise PacketError("encoding", f"application data is not valid msgpack: {type(exc).__name__}: {exc}"[:200]) from None


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
        return self.event.render(self.args)


@dataclass(frozen=True)
class HkRecord:
    packet: HkPacket
    values: dict[str, Any]
    time_s: float


@dataclass(frozen=True)
class ParamRecord:
    """The agent's parameter values (TM(20,2)), by name."""

    values: dict[str, Any]
    time_s: float


class TelemetryError(ValueError):
    """The agent tried to send telemetry that does not match the dictionary (a bug, never a nil on the wire)."""


class Codec:
    """Encodes and decodes messages for one dictionary, with per-APID sequence counters."""

    def __init__(self, dictionary: Dictionary, apid: int = Apid.AGENT):
        self.dictionary = dictionary
        self.apid = apid
        self.seq = SequenceCounters()
        self._packers = {p.sid: p for p in dictionary.packets}

    # --- commands (ground side builds, agent side decodes) ---------------------------------

    def encode_command(
        self, name: str, args: dict[str, Any], cmd_id: int | None = None, source_id: int = 0, dest_apid: int = Apid.AGENT
    ) -> tuple[bytes, int]:
        """Validate ``args`` against the dictionary and build the TC; return (packet, cmd_id)."""
        command = self.dictionary.command(name)
        checked = command.validate_args(args)
        cmd_id = new_cmd_id() if cmd_id is None else cmd_id
        data = msgpack.packb([command.opcode, cmd_id, checked], use_bin_type=True)
        return pack_tc(dest_apid, self.seq.next(dest_apid), Service.FUNCTION, Subtype.PERFORM_FUNCTION, data, source_id), cmd_id

    def decode_command(self, tc: Telecommand) -> CommandRequest:
        """Decode a TC(8,1). Raises PacketError for a broken envelope, ArgumentError for the rest."""
        body = _unpackb(tc.app_data)
        if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], int) and isinstance(body[1], int)):
            raise PacketError("encoding", "command data must be [opcode, cmd_id, {args}]")
        opcode, cmd_id, args = body
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
                if isinstance(opcode, int) and isinstance(cmd_id, int) and 0 <= cmd_id < 2**64 and 0 <= opcode < 2**16:
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

    def encode_event(self, name: str, args: dict[str, Any], time_s: float, apid: int | None = None) -> bytes:
        event = self.dictionary.event_by_name[name]
        if set(args) != set(event.args):
            raise ValueError(f"event {name} takes {sorted(event.args)}, got {sorted(args)}")
        data = msgpack.packb([event.id, args], use_bin_type=True)
        return self._tm(self.apid if apid is None else apid, Service.EVENT, _EVENT_SUBTYPE[event.severity], data, time_s)

    def encode_pong(self, time_s: float) -> bytes:
        return self._tm(self.apid, Service.TEST, Subtype.PONG, b"", time_s)

    # --- telemetry (ground side decodes) -----------------------------------------------------

    def decode_tm(self, tm: Telemetry) -> Verification | HkRecord | EventRecord | ParamRecord | None:
        """Decode a TM packet's data; None for a service this dictionary has nothing to say about.

        Anything malformed inside valid msgpack (wrong shapes, wrong types) is a PacketError too.
        """
        try:
            return self._decode_tm(tm)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            if isinstance(exc, PacketError):
                raise
            raise PacketError("encoding", f"service {tm.service},{tm.subtype} data malformed: {exc}") from None

    def _decode_tm(self, tm: Telemetry) -> Verification | HkRecord | EventRecord | ParamRecord | None:
        if tm.service == Service.VERIFICATION and tm.subtype in _SUBTYPE_STAGE:
            stage, ok = _SUBTYPE_STAGE[tm.subtype]
            body = _unpackb(tm.source_data)
            if not isinstance(body, dict):
                raise PacketError("encoding", "verification data must be a map")
            try:
                code = FailureCode(body.get("code", 0))
            except ValueError:
                code = FailureCode.EXECUTION_ERROR
            return Verification(
                stage, ok, int(body.get("req", 0)), int(body.get("cmd_id", 0)), int(body.get("op", 0)),
                code, str(body.get("reason", "")), dict(body.get("result") or {}),
            )
        if tm.service == Service.HOUSEKEEPING and tm.subtype == Subtype.HK_REPORT:
            row = _unpackb(tm.source_data)
            if not (isinstance(row, list) and row and isinstance(row[0], int) and row[0] in self._packers):
                raise PacketError("encoding", f"housekeeping data names unknown SID {row[0] if isinstance(row, list) and row else row!r}")
            packet = self._packers[row[0]]
            if len(row) - 1 != len(packet.channels):
                raise PacketError(
                    "dictionary", f"{packet.name} carries {len(row) - 1} values, this dictionary expects {len(packet.channels)}"
                )
            return HkRecord(packet, dict(zip(packet.channels, row[1:])), tm.time_s)
        if tm.service == Service.EVENT:
            body = _unpackb(tm.source_data)
            if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], int)
                    and body[0] in self.dictionary.event_by_id and isinstance(body[1], (dict, type(None)))):
                raise PacketError("encoding", "event data must be [known event id, {args}]")
            return EventRecord(self.dictionary.event_by_id[body[0]], dict(body[1] or {}), tm.time_s)
        if tm.service == Service.PARAMETER and tm.subtype == Subtype.PARAM_REPORT:
            body = _unpackb(tm.source_data)
            if not isinstance(body, dict):
                raise PacketError("encoding", "parameter report data must be a map")
            values = {}
            for pid, value in body.items():
                param = self.dictionary.parameter_by_id.get(pid) if isinstance(pid, int) else None
                if param is None:
                    continue  # a parameter of another dictionary version: the hash check says so
                try:
                    values[param.name] = param.spec.coerce(value, param.name)
                except ArgumentError:
                    continue  # out of this dictionary's range: not a value the ground can use
            return ParamRecord(values, tm.time_s)
        return None

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
        elif pkt.service == Service.TEST:
            out.update(kind="pong")
        return out
