"""The command, telemetry, event and parameter dictionary: types, validation, export.

The entries themselves live in :mod:`flight.link.definitions`; this module only says
what an entry is. Flight and ground both build their checks from the same objects, and
the version hash over the canonical JSON lets either side notice the other was built
from a different dictionary before a command is sent (F Prime does the same with its
dictionary's framework version and project hash).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping


class DictionaryError(ValueError):
    """The dictionary itself is inconsistent (duplicate opcode, bad range, ...)."""


class ArgumentError(ValueError):
    """A command argument or parameter value does not fit its declaration.

    ``code`` is the verification failure code the agent reports for it.
    """

    def __init__(self, message: str, code: "FailureCode"):
        super().__init__(message)
        self.code = code


class FailureCode(enum.IntEnum):
    """Why a command failed, carried in PUS service 1 failure reports.

    Mirrors F Prime's CmdDispatcher responses, plus the mode guard of our agent.
    """

    NONE = 0
    UNKNOWN_COMMAND = 1
    BAD_ARGUMENTS = 2
    OUT_OF_RANGE = 3
    NOT_ALLOWED_IN_MODE = 4
    EXECUTION_ERROR = 5
    BUSY = 6
    MALFORMED_PACKET = 7


class Severity(enum.IntEnum):
    """Event severities, as F Prime defines them; the value orders them."""

    DIAGNOSTIC = 0
    ACTIVITY_LO = 1
    ACTIVITY_HI = 2
    COMMAND = 3
    WARNING_LO = 4
    WARNING_HI = 5
    FATAL = 6


class ValueType(str, enum.Enum):
    """Wire-level value kinds. msgpack carries the value; the type says what to accept."""

    BOOL = "bool"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    I32 = "i32"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"
    STRING = "string"
    ENUM = "enum"
    BYTES = "bytes"


# Inclusive bounds of each integer type: for command arguments here, for HK values in messages.
INT_BOUNDS = {
    ValueType.U8: (0, 2**8 - 1),
    ValueType.U16: (0, 2**16 - 1),
    ValueType.U32: (0, 2**32 - 1),
    ValueType.U64: (0, 2**64 - 1),
    ValueType.I32: (-(2**31), 2**31 - 1),
    ValueType.I64: (-(2**63), 2**63 - 1),
}
_MAX_STRING_LEN = 256
_MAX_BYTES_LEN = 4096



def brief(value: Any) -> str:
    """A short, safe description of a wire value for an error message: never a huge or deep repr (found in
    audit: a command argument nested a thousand deep made repr raise RecursionError, an internal error)."""
    if isinstance(value, (list, tuple, dict)):
        return f"{'a map' if isinstance(value, dict) else 'an array'} of {len(value)}"
    if isinstance(value, int) and value.bit_length() > 100:  # JSON's integers are unbounded; repr refuses 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_NAME_SAID_CHARS = 40  # an unknown argument's name as said: cut past this (as brief cuts a value)
_NAMES_SAID = 5  # unknown argument names listed at most; the rest counted


def said_name(name: Any) -> str:
    """An unknown argument's name for a message: what is not printable escaped (``\\n``, ``\\x1b``), cut past
    _NAME_SAID_CHARS. The name comes off the wire or a command line: a newline in it would forge a line, an escape
    sequence drive a terminal, 10 kB of it push out what the command takes (found in audit)."""
    text = str(name)
    text = text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _NAME_SAID_CHARS else text[:_NAME_SAID_CHARS - 3] + "..."


@dataclass(frozen=True)
class ValueSpec:
    """Type, unit and allowed range of one value (a command argument or a parameter).

    ``coerce`` is the one place values are checked: the ground calls it before sending,
    the agent again on receipt, so a hand-made packet gets the same answer as the console.
    """

    type: ValueType
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.type is ValueType.ENUM and not self.choices:
            raise DictionaryError("an enum value needs choices")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise DictionaryError(f"min {self.min} above max {self.max}")

    def coerce(self, value: Any, name: str = "value") -> Any:
        """Return ``value`` converted to this spec's type, or raise :class:`ArgumentError`.

        Strings are accepted for every type, so ``key=value`` text from a console and
        native msgpack values go through the same check.
        """
        t = self.type
        try:
            if t is ValueType.BOOL:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low in ("1", "true", "yes", "on"):
                        return True
                    if low in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(value)
                if isinstance(value, (bool, int)) and value in (0, 1):
                    return bool(value)
                raise ValueError(value)
            if t in INT_BOUNDS:
                if isinstance(value, bool):
                    raise ValueError(value)
                if isinstance(value, str):
                    value = int(value.strip(), 0)
                elif isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError(value)
                    value = int(value)
                elif not isinstance(value, int):
                    raise ValueError(value)
                lo, hi = INT_BOUNDS[t]
                if not lo <= value <= hi:
                    raise ArgumentError(
                        f"{name}={brief(value)} does not fit {t.value} [{lo}, {hi}]", FailureCode.OUT_OF_RANGE
                    )
                return self._check_range(value, name)
            if t in (ValueType.F32, ValueType.F64):
                if isinstance(value, bool):
                    raise ValueError(value)
                value = float(value.strip()) if isinstance(value, str) else float(value)
                if not math.isfinite(value):
                    raise ArgumentError(f"{name}={value} is not a finite number", FailureCode.OUT_OF_RANGE)
                return self._check_range(value, name)
            if t is ValueType.STRING:
                if not isinstance(value, str):
                    raise ValueError(value)
                limit = self.max_len or _MAX_STRING_LEN
                if len(value) > limit:
                    raise ArgumentError(f"{name} is {len(value)} characters, at most {limit}", FailureCode.OUT_OF_RANGE)
                return value
            if t is ValueType.ENUM:
                if not isinstance(value, str):
                    raise ValueError(value)
                folded = value.strip().casefold()
                for choice in self.choices:  # case-insensitive, answered in the dictionary's spelling
                    if choice.casefold() == folded:
                        return choice
                raise ArgumentError(
                    f"{name}={brief(value)} is not one of {', '.join(self.choices)}", FailureCode.OUT_OF_RANGE
                )
            if t is ValueType.BYTES:
                if isinstance(value, str):
                    value = bytes.fromhex(value)
                if not isinstance(value, (bytes, bytearray)):
                    raise ValueError(value)
                limit = self.max_len or _MAX_BYTES_LEN
                if len(value) > limit:
                    raise ArgumentError(f"{name} is {len(value)} bytes, at most {limit}", FailureCode.OUT_OF_RANGE)
                return bytes(value)
        except ArgumentError:
            raise
        except (ValueError, TypeError, OverflowError):
            raise ArgumentError(f"{name}={brief(value)} is not a valid {t.value}", FailureCode.BAD_ARGUMENTS) from None
        raise AssertionError(f"unhandled value type {t}")

    def _check_range(self, value: float, name: str) -> float:
        if self.min is not None and value < self.min:
            raise ArgumentError(f"{name}={value} below minimum {self.min} {self.unit}".rstrip(), FailureCode.OUT_OF_RANGE)
        if self.max is not None and value > self.max:
            raise ArgumentError(f"{name}={value} above maximum {self.max} {self.unit}".rstrip(), FailureCode.OUT_OF_RANGE)
        return value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value}
        if self.unit:
            out["unit"] = self.unit
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        if self.max_len is not None:
            out["max_len"] = self.max_len
        return out


@dataclass(frozen=True)
class Argument:
    name: str
    spec: ValueSpec
    description: str
    default: Any = None

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, **self.spec.to_json(), "description": self.description}
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Command:
    """One telecommand. ``hazardous`` commands make the console ask before sending.

    ``read_only`` commands change nothing that outlives them but the command counters (they
    report): the agent does not journal them, since running one again on a retry after a restart
    does no harm, and a command path checked with NOOP or PING then costs no journal write and
    fsync. ``idempotent`` commands leave the same state however often they run (SET_MODE,
    FILE_DELETE...): where the journal cannot record one (a full disk), it runs unrecorded, and its
    completion report says so, rather than being refused, so that FILE_DELETE can free a full disk."""

    name: str
    opcode: int
    description: str
    args: tuple[Argument, ...] = ()
    hazardous: bool = False
    read_only: bool = False
    idempotent: bool = False

    def arg(self, name: str) -> Argument:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    def validate_args(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Check and convert every argument; fill defaults; refuse unknown or missing ones."""
        if not isinstance(raw, dict):
            raise ArgumentError(f"{self.name}: arguments must be a map, got {type(raw).__name__}", FailureCode.BAD_ARGUMENTS)
        known = {a.name for a in self.args}
        extra = sorted(str(k) for k in raw if k not in known)
        if extra:
            hint = f" (takes {', '.join(sorted(known))})" if known else " (takes no arguments)"
            said = ", ".join(said_name(k) for k in extra[:_NAMES_SAID])
            more = f" and {len(extra) - _NAMES_SAID} more" if len(extra) > _NAMES_SAID else ""
            raise ArgumentError(f"{self.name}: unknown argument {said}{more}{hint}", FailureCode.BAD_ARGUMENTS)
        out: dict[str, Any] = {}
        for a in self.args:
            if a.name in raw:
                out[a.name] = a.spec.coerce(raw[a.name], a.name)
            elif a.default is not None:
                out[a.name] = a.default
            else:
                raise ArgumentError(f"{self.name}: missing argument {a.name}", FailureCode.BAD_ARGUMENTS)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "opcode": self.opcode,
            "description": self.description,
            "hazardous": self.hazardous,
            "read_only": self.read_only,
            "idempotent": self.idempotent,
            "args": [a.to_json() for a in self.args],
        }


@dataclass(frozen=True)
class FromParam:
    """A limit that follows a parameter: ``Limits(warn_high=FromParam("thermal_soft_limit_c"))``.

    The agent acts on its parameters; a limit typed in twice would drift from them after the
    first ``SET_PARAM``. The ground resolves it with the values the agent reports (PUS 20).
    """

    param: str

    def to_json(self) -> dict[str, str]:
        return {"param": self.param}


_BOUNDS = ("warn_low", "warn_high", "crit_low", "crit_high")


@dataclass(frozen=True)
class Limits:
    """Limit bands of a telemetry point; any bound may be absent, or follow a parameter."""

    warn_low: float | FromParam | None = None
    warn_high: float | FromParam | None = None
    crit_low: float | FromParam | None = None
    crit_high: float | FromParam | None = None

    def params(self) -> tuple[str, ...]:
        """Names of the parameters these limits follow."""
        return tuple(b.param for b in self.bounds().values() if isinstance(b, FromParam))

    def bounds(self) -> dict[str, float | FromParam]:
        return {k: getattr(self, k) for k in _BOUNDS if getattr(self, k) is not None}

    def resolve(self, param_values: Mapping[str, Any]) -> "Limits":
        """Numbers only: each :class:`FromParam` replaced by the parameter's value in ``param_values``."""
        if not self.params():
            return self
        out = {}
        for k, bound in self.bounds().items():
            if isinstance(bound, FromParam):
                value = param_values.get(bound.param)
                bound = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            out[k] = bound
        return Limits(**out)

    def state(self, value: Any) -> str:
        """'nominal', 'warning' or 'critical' for a numeric value (others are nominal).

        Limits that follow parameters must be resolved first (:meth:`Dictionary.limits`).
        """
        if self.params():
            raise ValueError(f"limits follow parameters {', '.join(self.params())}: resolve them first")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "nominal"
        if (self.crit_low is not None and value <= self.crit_low) or (
            self.crit_high is not None and value >= self.crit_high
        ):
            return "critical"
        if (self.warn_low is not None and value <= self.warn_low) or (
            self.warn_high is not None and value >= self.warn_high
        ):
            return "warning"
        return "nominal"

    def to_json(self) -> dict[str, Any]:
        return {k: (v.to_json() if isinstance(v, FromParam) else v) for k, v in self.bounds().items()}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Limits":
        """What :meth:`to_json` wrote: a bound that follows a parameter (``{"param": name}``) follows it again."""
        return cls(**{k: FromParam(v["param"]) if isinstance(v, dict) else v for k, v in body.items()})

    def merged(self, bounds: Mapping[str, float | None]) -> "Limits":
        """These limits with ``bounds`` set (None: that bound removed), the others as they are, a bound that
        follows a parameter included: an operator's change to one bound leaves the rest following theirs."""
        return Limits(**{**self.__dict__, **bounds})


def date_for_seconds(command: Command, assignments: Mapping[str, Any]) -> str:
    """What to write instead where a date was given for an argument in seconds, for a refusal to end with (found in
    audit: ``SCHEDULE_AT release_unix_s=2026-12-03T10:00:00Z`` was only "not a valid f64"): the dictionary takes
    numbers, so a ``*_unix_s`` time is said as the number it would be; empty if no argument is such a date. Every
    console that reads ``key=value`` text says it (``sunlit-flight packet encode``, ``sunlit-ground send``)."""
    spec_of = {a.name: a.spec for a in command.args}
    for name, value in assignments.items():
        if name not in spec_of or spec_of[name].unit != "s" or not isinstance(value, str):
            continue
        try:
            stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if not name.endswith("_unix_s"):
            return f" ({name} is a number of seconds, not a date)"
        if stamp.tzinfo is None:
            return (f" ({name} is seconds since 1970-01-01 UTC, not a date; a date and time with its zone, "
                    "e.g. 2026-12-03T10:00:00Z, is said here as its number)")
        return (f" ({name} is seconds since 1970-01-01 UTC, not a date: {value.strip()} is "
                f"{name}={stamp.timestamp():.0f})")
    return ""


def choices_of(values: Iterable[enum.Enum] | type[enum.Enum]) -> tuple[str, ...]:
    """An enumeration's values as the dictionary's choices: declared once, as an Enum."""
    return tuple(v.value for v in values)


@dataclass(frozen=True)
class Channel:
    """One telemetry point."""

    name: str
    type: ValueType
    unit: str
    description: str
    limits: Limits = field(default_factory=Limits)
    choices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.value, "unit": self.unit, "description": self.description}
        if self.limits.to_json():
            out["limits"] = self.limits.to_json()
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class HkPacket:
    """A housekeeping packet: the channels it carries, in wire order (PUS 3,25 with this SID)."""

    sid: int
    name: str
    apid: int
    channels: tuple[str, ...]
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"sid": self.sid, "name": self.name, "apid": self.apid, "channels": list(self.channels), "description": self.description}


@dataclass(frozen=True)
class Event:
    """One event: an id, a severity and a message format filled from named arguments."""

    name: str
    id: int
    severity: Severity
    format: str
    description: str
    args: tuple[str, ...] = ()

    def render(self, values: dict[str, Any]) -> str:
        try:
            return self.format.format(**values)
        except (KeyError, IndexError, ValueError, TypeError):  # a missing or nil argument: show it raw
            return f"{self.format} {values}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "severity": self.severity.name,
            "format": self.format,
            "args": list(self.args),
            "description": self.description,
        }


@dataclass(frozen=True)
class Parameter:
    """A value the agent uses that the ground can get, set and save across restarts."""

    name: str
    id: int
    spec: ValueSpec
    default: Any
    description: str

    def __post_init__(self) -> None:
        self.spec.coerce(self.default, self.name)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, **self.spec.to_json(), "default": self.default, "description": self.description}


class Dictionary:
    """The whole dictionary, indexed for lookup, checked for consistency at construction."""

    def __init__(
        self,
        commands: Iterable[Command],
        channels: Iterable[Channel],
        packets: Iterable[HkPacket],
        events: Iterable[Event],
        parameters: Iterable[Parameter],
        enumerations: Iterable[type[enum.Enum]] = (),
    ):
        self.commands = tuple(commands)
        self.enumerations = {e.__name__: choices_of(e) for e in enumerations}
        self.channels = tuple(channels)
        self.packets = tuple(packets)
        self.events = tuple(events)
        self.parameters = tuple(parameters)
        self.command_by_name = _index(self.commands, "name", "command")
        self.command_by_opcode = _index(self.commands, "opcode", "command opcode")
        self.channel_by_name = _index(self.channels, "name", "channel")
        self.packet_by_sid = _index(self.packets, "sid", "packet SID")
        self.packet_by_name = _index(self.packets, "name", "packet")
        self.event_by_name = _index(self.events, "name", "event")
        self.event_by_id = _index(self.events, "id", "event id")
        self.parameter_by_name = _index(self.parameters, "name", "parameter")
        self.parameter_by_id = _index(self.parameters, "id", "parameter id")
        for p in self.packets:
            for ch in p.channels:
                if ch not in self.channel_by_name:
                    raise DictionaryError(f"packet {p.name} names unknown channel {ch}")
        for c in self.commands:
            if len({a.name for a in c.args}) != len(c.args):
                raise DictionaryError(f"command {c.name} repeats an argument name")
            if c.read_only and c.hazardous:
                raise DictionaryError(f"command {c.name} is read-only and hazardous: a command that changes nothing "
                                      "is not hazardous")
            if c.read_only and c.idempotent:
                raise DictionaryError(f"command {c.name} is read-only and idempotent: a read-only command is never "
                                      "journaled, so idempotent says nothing more")
        for ch in self.channels:
            for name in ch.limits.params():
                if name not in self.parameter_by_name:
                    raise DictionaryError(f"channel {ch.name}: limits follow unknown parameter {name}")
        self.parameter_defaults = {p.name: p.default for p in self.parameters}
        self.version_hash = hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def canonical_json(self) -> str:
        body = {
            "commands": [c.to_json() for c in self.commands],
            "channels": [c.to_json() for c in self.channels],
            "packets": [p.to_json() for p in self.packets],
            "events": [e.to_json() for e in self.events],
            "parameters": [p.to_json() for p in self.parameters],
            "enumerations": {name: list(values) for name, values in self.enumerations.items()},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        return {"version_hash": self.version_hash, **json.loads(self.canonical_json())}

    def limits(self, channel: str, param_values: Mapping[str, Any] | None = None) -> Limits:
        """A channel's limits in numbers: bounds that follow a parameter take its value from
        ``param_values`` (what the agent reported), else the parameter's default."""
        limits = self.channel_by_name[channel].limits
        if not limits.params():
            return limits
        return limits.resolve({**self.parameter_defaults, **(param_values or {})})

    def command(self, name: str) -> Command:
        """Look a command up by name, case-insensitively; the error lists close names."""
        try:
            return self.command_by_name[name.upper()]
        except KeyError:
            close = [c for c in self.command_by_name if c.startswith(name.upper()[:3])]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            # quoted cut (found in audit: a 100 kB name came back whole in the server's 400)
            raise ArgumentError(f"unknown command {brief(name)}{hint}", FailureCode.UNKNOWN_COMMAND) from None


def _index(items: tuple, attr: str, what: str) -> dict:
    out: dict = {}
    for item in items:
        key = getattr(item, attr)
        if key in out:
            raise DictionaryError(f"duplicate {what} {key!r}")
        out[key] = item
    return out
