"""Alarms: a telemetry point crossing its limits raises an alarm the operator acknowledges.

States per channel follow the dictionary's limits (warning and critical, low and high) —
those that follow an agent parameter (``temp_max_c`` warns at ``thermal_soft_limit_c``) take
the value the agent last reported (PUS 20), so a ``SET_PARAM`` moves the alarm with it —
overridden at run time by the operator; overrides survive a restart (they are saved in a
small checked JSON file, or in the archive when one is attached). An alarm is raised on the
first sample outside nominal, escalates from warning to critical, stays until acknowledged
*and* back in limits (a Yamcs/COSMOS-style latch: an operator never misses a transient), and a
channel with no sample for ``stale_s`` is shown stale.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary, FromParam, Limits, ValueType, brief
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json

SEVERITY = {"nominal": 0, "warning": 1, "critical": 2}
NOT_NUMBERS = (ValueType.BOOL, ValueType.STRING, ValueType.ENUM, ValueType.BYTES)  # Limits.state: always nominal
LADDER = ("crit_low", "warn_low", "warn_high", "crit_high")


def not_a_number(dictionary: Dictionary, channel: str) -> str:
    """Why ``channel`` takes no limits (a state is always nominal), or "" where it does (the server's rule too)."""
    kind = dictionary.channel_by_name[channel].type
    return f"{channel} is not a number ({kind.value}): limits apply to numbers only" if kind in NOT_NUMBERS else ""


def ladder_error(numbers: Limits, changed: set[str]) -> str:
    """Why resolved limits are out of order (crit_low <= warn_low < warn_high <= crit_high) where a bound in
    ``changed`` is one of the pair, naming it; "" where they are in order (the server's rule, POST /api/limits)."""
    ladder = [(k, float(v)) for k in LADDER
              if isinstance(v := getattr(numbers, k), (int, float)) and not isinstance(v, bool)]
    for i, (low_key, low) in enumerate(ladder):
        for high_key, high in ladder[i + 1:]:
            strict = (low_key, high_key) == ("warn_low", "warn_high")
            if (low_key in changed or high_key in changed) and (high < low or (strict and high == low)):
                return (f"{high_key if high_key in changed else low_key}: {high_key} {high:g} is "
                        f"{'not above' if strict else 'below'} {low_key} {low:g} "
                        "(crit_low <= warn_low < warn_high <= crit_high)")
    return ""


@dataclass
class Alarm:
    channel: str
    state: str  # warning | critical: the worst seen since raised
    value: Any
    raised_s: float
    last_value: Any = None
    last_state: str = "nominal"
    acknowledged: bool = False
    acknowledged_by: str = ""
    cleared: bool = False
    rev: int = 0  # one more at each change said: a page keeps the highest it has seen of this alarm

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checked(channel: str, limits: Limits) -> Limits:
    """``limits`` as read from a file, each bound a finite number or a parameter's name, or TypeError naming it (found
    in review: a bound of "abc" was taken, and the next sample of its channel raised out of the alarm check)."""
    for name, bound in limits.bounds().items():
        try:  # an int past a float's range raises (found in review: 10**400, a traceback out of the constructor)
            number = isinstance(bound, (int, float)) and not isinstance(bound, bool) and math.isfinite(bound)
        except OverflowError:
            number = False
        if not number and not (isinstance(bound, FromParam) and isinstance(bound.param, str)):
            raise TypeError(f"bound {channel}.{name} is {brief(bound)}, not a number or a parameter's name")
    return limits


def _taken_at(item: Any, time_s: float, before_s: float) -> float:
    """The packet time a channel's next played-back value is held to: a live value's own, even behind the one
    before (the board's clock stepped back, as the server takes it; found in review: the highest ever kept every
    sample played back since the step as history), a played-back one's where it is newer."""
    return max(time_s, before_s) if item.played_back else time_s


class LimitsNotSaved(ValueError):
    """A limit change the limits file could not keep, so not made (a ValueError: a console says it as it says
    a refused bound)."""


class LimitStore:
    """Operator limit overrides that survive a restart (atomic, checksummed file).

    A file that fails its check, or does not hold limits per channel, is moved aside (``NAME.corrupt``) and said
    once on stderr (``error`` keeps the line): found in audit, it was dropped without a word and the next change
    wrote over it, every override in it lost with nothing left to look at. A path that cannot be read at all (a
    folder, no permission) is no damaged file: said, left where it is and never written over (found in audit: a
    folder given as the limits file was renamed ``.corrupt``)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.overrides: dict[str, Limits] = {}
        self.error = ""  # why the file was not read ("" where it was, or there was none)
        self._unreadable = False  # the path is there and cannot be read: not written over
        if self.path is not None and self.path.exists():
            try:
                with open(self.path, "rb"):
                    pass
            except OSError as exc:
                self._unreadable = True
                self.error = (f"limits file {self.path} cannot be read ({exc.strerror or exc}); left as it is and "
                              "not written over; the dictionary's limits apply")
                print(f"sunlit-ground: {self.error}", file=sys.stderr)
                return
            try:
                body = read_checked_json(self.path)
                self.overrides = {k: _checked(k, Limits.from_json(v)) for k, v in body.items()}
            except (CorruptFile, TypeError, AttributeError, KeyError) as exc:
                self.overrides = {}
                why = str(exc) if isinstance(exc, CorruptFile) else f"{self.path}: not limits per channel" + (
                    f" ({exc})" if isinstance(exc, TypeError) and str(exc).startswith("bound ") else "")
                moved = quarantine(self.path)
                kept = f"moved aside to {moved}" if moved else "not moved aside (the next change writes over it)"
                self.error = f"limits file {why}; {kept}; the dictionary's limits apply"
                print(f"sunlit-ground: {self.error}", file=sys.stderr)

    def set(self, channel: str, limits: Limits) -> None:
        """Keep ``limits`` for ``channel``: the file written first, so a change it could not keep is not made but
        refused (LimitsNotSaved). Found in audit: a limits file that could not be written raised out of a direct
        console, a traceback, and the change stood in memory alone, gone at the next start."""
        if self.path is not None:
            if self._unreadable:
                raise LimitsNotSaved(f"limits file {self.path} could not be read at start: not written over; "
                                     "not changed")
            try:
                write_checked_json(self.path, {k: v.to_json() for k, v in {**self.overrides, channel: limits}.items()})
            except OSError as exc:
                raise LimitsNotSaved(f"limits file {self.path} cannot be written ({exc}); "
                                     "not changed") from None
        self.overrides[channel] = limits


@dataclass
class AlarmManager:
    dictionary: Dictionary = DICTIONARY
    limit_store: LimitStore = field(default_factory=lambda: LimitStore(None))
    stale_s: float = 10.0
    clock: Callable[[], float] = time.time
    alarms: dict[str, Alarm] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)
    listeners: list[Callable[[str, Alarm], None]] = field(default_factory=list)
    agent_parameters: dict[str, Any] = field(default_factory=dict)  # as the agent last reported them

    def limits(self, channel: str) -> Limits:
        """The operator's override, else the dictionary's limits, resolved with the agent's parameters (an
        override keeps the bounds it did not change following theirs)."""
        override = self.limit_store.overrides.get(channel)
        if override is None:
            return self.dictionary.limits(channel, self.agent_parameters)
        return override.resolve({**self.dictionary.parameter_defaults, **self.agent_parameters})

    def unresolved(self, channel: str) -> Limits:
        """The override, else the dictionary's limits, as declared: a bound may follow a parameter."""
        return self.limit_store.overrides.get(channel) or self.dictionary.channel_by_name[channel].limits

    def observe_parameters(self, values: dict[str, Any]) -> None:
        """The agent's parameter report: limits that follow a parameter move with it."""
        self.agent_parameters.update(values)

    def set_limits(self, channel: str, **bounds: float | None) -> Limits:
        """Change a channel's limits now (and for good); re-evaluates its alarm on the next sample. Refused, naming
        the bound, as the server refuses it (found in audit: a console on a direct link took NaN, which never
        alarms, a band upside down, which always does, and limits on a text channel, which never apply)."""
        if channel not in self.dictionary.channel_by_name:
            raise KeyError(f"no channel {channel!r}")
        refused = not_a_number(self.dictionary, channel)
        if refused:
            raise ValueError(refused)
        current = self.unresolved(channel)  # found in review: the resolved limits froze those following a parameter
        unknown = set(bounds) - set(current.__dict__)
        if unknown:
            raise ValueError(f"unknown limit {', '.join(sorted(unknown))}; use warn_low, warn_high, crit_low, crit_high")
        for key, value in bounds.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{key}={value!r} is not a finite number (or none, to clear it)")
        limits = current.merged(bounds)
        out_of_order = ladder_error(limits.resolve({**self.dictionary.parameter_defaults, **self.agent_parameters}),
                                    set(bounds))
        if out_of_order:
            raise ValueError(out_of_order)
        self.limit_store.set(channel, limits)
        return limits

    def state(self, channel: str, value: Any) -> str:
        """'nominal', 'warning' or 'critical'; 'missing' for no reading (nil, NaN) on a channel with limits,
        which says nothing of them."""
        if channel not in self.dictionary.channel_by_name:
            return "nominal"
        limits = self.limits(channel)
        if (value is None or (isinstance(value, float) and math.isnan(value))) and limits.bounds():
            return "missing"
        return limits.state(value)

    def observe(self, channel: str, value: Any, t_s: float | None = None) -> str:
        """Take one sample; raise, escalate or clear the channel's alarm; return its limit state."""
        now = self.clock() if t_s is None else t_s
        self.last_seen[channel] = self.clock()
        state = self.state(channel, value)
        if state == "missing":  # a sensor that stopped reading neither raises nor clears (an audit: a hot board
            return state  # whose sensor then failed showed its alarm cleared and the channel nominal)
        alarm = self.alarms.get(channel)
        if state != "nominal":
            if alarm is None or alarm.cleared:
                alarm = Alarm(channel, state, value, now, last_value=value, last_state=state)
                self.alarms[channel] = alarm
                self._notify("raised", alarm)
            elif SEVERITY[state] > SEVERITY[alarm.state]:
                alarm.state, alarm.value = state, value
                alarm.acknowledged = False  # worse than what was acknowledged: ask again
                self._notify("escalated", alarm)
        if alarm is not None and not alarm.cleared:
            alarm.last_value, alarm.last_state = value, state
            if state == "nominal" and alarm.acknowledged:
                alarm.cleared = True
                self._notify("cleared", alarm)
        return state

    def acknowledge(self, channel: str, who: str = "operator") -> Alarm:
        alarm = self.alarms.get(channel)
        if alarm is None or alarm.cleared:
            raise KeyError(f"no active alarm on {channel}")
        alarm.acknowledged, alarm.acknowledged_by = True, who
        self._notify("acknowledged", alarm)
        if alarm.last_state == "nominal":  # already back in limits: acknowledging clears it
            alarm.cleared = True
            self._notify("cleared", alarm)
        return alarm

    def active(self) -> list[Alarm]:
        return [a for a in self.alarms.values() if not a.cleared]

    def stale(self, channel: str) -> bool:
        seen = self.last_seen.get(channel)
        return seen is None or self.clock() - seen > self.stale_s

    def attach(self, client: Any) -> None:
        """Feed every housekeeping value and parameter report a GroundClient receives into the alarms; a played-back
        one only where nothing newer of it was taken (history: the server drops it too)."""
        from flight.link.messages import HkRecord, ParamRecord

        newest: dict[str, float] = {}  # packet time of the newest value taken, per channel ("" for parameters)

        def take(item: Any) -> None:
            # A played-back record older than what was taken is history, as the server takes it (found in audit: an
            # hour-old sample in limits, played back, cleared the acknowledged alarm of a board still over them)
            time_s = item.record.time_s if isinstance(item.record, (HkRecord, ParamRecord)) else None
            if isinstance(item.record, HkRecord):
                for name, value in item.record.values.items():
                    if item.played_back and time_s < newest.get(name, -math.inf):
                        continue
                    newest[name] = _taken_at(item, time_s, newest.get(name, -math.inf))
                    self.observe(name, value, time_s)
            elif isinstance(item.record, ParamRecord):
                if item.played_back and time_s < newest.get("", -math.inf):
                    return
                newest[""] = _taken_at(item, time_s, newest.get("", -math.inf))
                self.observe_parameters(item.record.values)

        client.listeners.append(take)

    def _notify(self, what: str, alarm: Alarm) -> None:
        alarm.rev += 1
        for listener in self.listeners:
            listener(what, alarm)
