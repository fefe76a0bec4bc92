"""Typed records between processes: frozen dataclasses, one msgpack encoding, checked decoding.

The agent talks to two other processes on the same board or rig: its compute worker and,
under HIL, the harness. Each protocol is a module of frozen dataclasses (the messages) and
a :class:`RecordCodec` over them, used by both ends, so a field renamed on one side fails
to import or to decode at once instead of reading as a missing key somewhere else.

Wire form: ``[tag, {field: value, ...}]`` in msgpack, where ``tag`` is the record's class
name. Decoding checks every field against the dataclass's annotation and names the field
that is wrong (``Status.infer_count: expected int, got str``). Supported field types: bool,
int, float (ints accepted), str, a ``str`` Enum (sent as its value), ``X | None``,
``dict[str, X]``, ``tuple[X, ...]`` and nested records.

:meth:`RecordCodec.decode_lenient` keeps what is good of a message whose fields are partly
wrong: a bad field that has a default takes it, a bad entry of a map is left out, and each is
listed. A harness that sends one broken sensor value must not take the other sensors with it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any, Iterable

import msgpack

from flight.storage import printable


class ProtocolError(ValueError):
    """A message that is not one of the protocol's records; the text names the field."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class RecordCodec:
    """Encode and decode the records of one protocol (a tuple of frozen dataclasses)."""

    def __init__(self, name: str, records: Iterable[type]):
        self.name = name
        self._by_tag: dict[str, type] = {}
        self._hints: dict[type, dict[str, Any]] = {}
        for cls in records:
            if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
                raise TypeError(f"{name}: {cls.__name__} must be a frozen dataclass")
            if cls.__name__ in self._by_tag:
                raise TypeError(f"{name}: two records named {cls.__name__}")
            self._by_tag[cls.__name__] = cls
            self._hint(cls)

    @property
    def records(self) -> tuple[type, ...]:
        return tuple(self._by_tag.values())

    def _hint(self, cls: type) -> dict[str, Any]:
        if cls not in self._hints:
            self._hints[cls] = typing.get_type_hints(cls)
            for tp in self._hints[cls].values():  # nested records are checked the same way
                for inner in _walk(tp):
                    if dataclasses.is_dataclass(inner):
                        self._hint(inner)
        return self._hints[cls]

    # --- encode ----------------------------------------------------------------------------

    def encode(self, record: Any) -> bytes:
        cls = type(record)
        if self._by_tag.get(cls.__name__) is not cls:
            raise ProtocolError(f"{self.name}: {cls.__name__} is not a record of this protocol")
        return msgpack.packb([cls.__name__, _plain(record)], use_bin_type=True)

    # --- decode ----------------------------------------------------------------------------

    def decode(self, raw: bytes) -> Any:
        """The record ``raw`` holds; :class:`ProtocolError` naming what is wrong otherwise."""
        return self._decode(raw, None)

    def decode_lenient(self, raw: bytes) -> tuple[Any, list[str]]:
        """The record with its bad fields at their defaults and bad map entries left out, and
        what was wrong with each; :class:`ProtocolError` if even that is not possible (not a
        message of this protocol, or a bad field without a default)."""
        problems: list[str] = []
        return self._decode(raw, problems), problems

    def _decode(self, raw: bytes, problems: list[str] | None) -> Any:
        try:
            body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception as exc:  # noqa: BLE001 - msgpack raises several types
            raise ProtocolError(f"{self.name}: not msgpack ({type(exc).__name__})") from None
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str) and isinstance(body[1], dict)):
            raise ProtocolError(f"{self.name}: a message is [tag, {{fields}}]")
        cls = self._by_tag.get(body[0])
        if cls is None:
            raise ProtocolError(f"{self.name}: unknown message {body[0][:40]!r}")
        return self._record(cls, body[1], cls.__name__, problems)

    def _record(self, cls: type, fields: Any, where: str, problems: list[str] | None) -> Any:
        """``problems``: None to refuse any bad field; a list to collect them (lenient)."""
        if not isinstance(fields, dict):
            raise ProtocolError(f"{where}: expected a map of fields, got {type(fields).__name__}")
        hints = self._hint(cls)
        # escaped (found in audit: a name with a newline made the error, said as an event or a log line, two lines)
        unknown = sorted(printable(str(k)) for k in fields if k not in hints)
        if unknown:
            raise ProtocolError(f"{where}: unknown field {', '.join(unknown)[:80]}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in fields:
                try:
                    values[f.name] = self._value(hints[f.name], fields[f.name], f"{where}.{f.name}", problems)
                except ProtocolError as exc:
                    has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                    if problems is None or not has_default:
                        raise
                    problems.append(str(exc))  # lenient: the field keeps its default
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}.{f.name}: missing")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:  # a record's own __post_init__ check
            raise ProtocolError(f"{where}: {exc}") from None

    def _value(self, tp: Any, value: Any, where: str, problems: list[str] | None = None) -> Any:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            options = typing.get_args(tp)
            if value is None and type(None) in options:
                return None
            errors = []
            for option in options:
                if option is type(None):
                    continue
                try:
                    return self._value(option, value, where)  # strict: a failed option must not leave problems
                except ProtocolError as exc:
                    errors.append(str(exc))
            raise ProtocolError(errors[0] if len(errors) == 1 else f"{where}: expected {_type_name(tp)}, got {value!r:.40}")
        if origin is dict:
            key_tp, value_tp = typing.get_args(tp)
            if not isinstance(value, dict):
                raise ProtocolError(f"{where}: expected a map, got {type(value).__name__}")
            out = {}
            for k, v in value.items():
                try:
                    out[self._value(key_tp, k, f"{where} key")] = self._value(value_tp, v, f"{where}[{k!r:.30}]",
                                                                             problems)
                except ProtocolError as exc:
                    if problems is None:
                        raise
                    problems.append(str(exc))  # lenient: this entry is left out
            return out
        if origin is tuple:
            (item_tp, _ellipsis) = typing.get_args(tp)
            if not isinstance(value, (list, tuple)):
                raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
            return tuple(self._value(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
        if dataclasses.is_dataclass(tp):
            return self._record(tp, value, where, problems)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise ProtocolError(f"{where}: {value!r:.40} is not one of {', '.join(m.value for m in tp)}") from None
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        elif tp is Any:
            return value
        else:
            raise TypeError(f"{where}: field type {tp!r} is not supported by RecordCodec")
        raise ProtocolError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__}")


def _walk(tp: Any) -> Iterable[Any]:
    yield tp
    for arg in typing.get_args(tp):
        yield from _walk(arg)


def _plain(value: Any) -> Any:
    """A record as msgpack can carry it: enums by value, tuples as lists, nested records as maps."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities as None: what a reading that cannot be trusted becomes."""
    return value if value is not None and math.isfinite(value) else None
