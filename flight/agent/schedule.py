"""Time-tagged commands and stored sequences, in the manner of ECSS PUS service 11: the pure
logic and its one file, no agent (the agent wires them to the dispatcher and the loop).

Two things live here.

:class:`TimeSchedule` is the on-board time-based schedule: commands the ground has given a
release time (UTC), kept until that time comes and then handed back by :meth:`TimeSchedule.due`
for the agent to dispatch like any other command. Every change is on disk before the call
returns.

:class:`Sequence` is a stored sequence (a TOML file, ``docs/sequences.md``) and
:class:`SequenceRun` the pure state machine that steps through one: it says which command
to send and when the run is finished; the caller sends, feeds back the verification
outcome and calls again. Time and telemetry are passed in, never read here.

Persistence, stated. The schedule is a small set (at most ``capacity`` entries, 256 by
default: some 50 KB at worst) that shrinks as often as it grows, so it is written whole
on each change with :func:`flight.storage.write_checked_json` (temporary file, fsync,
rename, SHA-256 over the body) rather than appended to like the command journal
(``journal.py``), whose records are a stream read back in order. A snapshot is all or
nothing: a reader sees the old schedule or the new one, a flipped bit fails the SHA-256
as a whole, there is no replay to get wrong, and a write that failed (disk full) is made
good by the next one, which carries the whole state again. The cost, two fsyncs and a
rename per change, is nothing beside the rate of changes: operator commands and releases,
a few per pass.

Delivery is *at most once*: :meth:`TimeSchedule.due` removes the entries from the file
before it returns them, so a reset between the release and the dispatch loses the command
(the command journal never saw it start) rather than running it twice. The same rule as the
journal and :class:`SequenceRun`: never run blindly again what may have run.

Entry ids are never reused, a corrupt schedule file included: the next id is kept in the
schedule file, and ids are also reserved ahead in blocks of :data:`ID_BLOCK` in a second
small file (``NAME.ids``), so a schedule that had to be quarantined restarts its ids above
every id it can have handed out. A ground that deletes "entry 7" can never delete a newer
entry by mistake.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from flight import toml_text
from flight.agent.file_args import SEQUENCE, check_file_arguments, check_value
from flight.files.filestore import NameRefused
from flight.link.definitions import DICTIONARY, SCHEDULE_MAX_AHEAD_S
from flight.link.dictionary import (
    INT_BOUNDS,
    ArgumentError,
    Command,
    Dictionary,
    FailureCode,
    ValueType,
    said_name,
)
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json

# --- limits, and why they are what they are ----------------------------------------------------

SCHEDULE_CAPACITY = 256  # entries: a day of one command every six minutes; the file stays ~50 KB
MAX_AHEAD_S = SCHEDULE_MAX_AHEAD_S  # a time tag further ahead than the TLE and the plans are trusted is a typo
PAST_TOLERANCE_S = 1.0  # a release "now" sent over a link with a second of delay is still accepted
JUMP_TOLERANCE_S = 5.0  # UTC may be slewed or stepped by NTP/GNSS by this much between looks unnoticed
ID_BLOCK = 64  # entry ids reserved on disk at a time: one extra write per 64 insertions

# Commands that manage the schedule or the sequences themselves, by name prefix, so that a command
# added later under the same naming rule is covered without editing this list. Neither a time tag
# nor a sequence step may be one: a schedule that refills itself or a sequence that starts itself
# (or another) would run with no operator in the loop and no bound on how long. Send them directly.
NOT_SCHEDULABLE_PREFIXES = ("SCHEDULE_", "SEQUENCE_")

MAX_STEPS = 256  # steps in one sequence: more is a procedure for the ground, not a stored sequence
MAX_SEQUENCE_BYTES = 64 * 1024  # a sequence file's text, uplinked: 256 steps fit many times over
SEQUENCES_DIR = "sequences"  # STATE_DIR/sequences/NAME.toml; the name a file sent up there goes by too
SEQUENCE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_WAIT_S = MAX_AHEAD_S  # a relative wait: no longer than a time tag may reach ahead
MAX_TIMEOUT_S = 86400.0  # a command's completion or a telemetry condition: a day at most
DEFAULT_COMMAND_TIMEOUT_S = 60.0  # most commands complete in milliseconds; jobs report when queued
ON_FAILURE = ("abort", "continue")

# Comparisons a wait_for step may make; ordering ones only on numeric channels.
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_NUMERIC = frozenset(INT_BOUNDS) | {ValueType.F32, ValueType.F64}

_FORMAT = 1  # of the schedule file's body and of a run's exported state


def not_schedulable(name: str) -> str | None:
    """Why ``name`` may be neither time-tagged nor a sequence step, or None if it may."""
    upper = name.upper()
    if any(upper.startswith(prefix) for prefix in NOT_SCHEDULABLE_PREFIXES):
        return (f"{name} manages the schedule or the sequences themselves and may not be time-tagged or a "
                f"sequence step (a schedule that refills itself, a sequence that starts one, would run with no "
                f"operator in the loop); send it directly")
    if upper == "KEY_REVOKE":  # found in audit: taken, to fail at every release
        return ("KEY_REVOKE runs only as the ground sends it: released from a time tag or a sequence, no slot "
                "sealed it, and the board cannot tell whether it would revoke the ground's own key; send it directly")
    return None


def stateless_refusal(dictionary: Dictionary, name: str, values: Mapping[str, Any]) -> "CommandRefused | None":
    """What the command's handler would refuse in arguments the dictionary took, with no state to look at
    (SET_PARAM's value against its parameter, a file name leading out of its directory, a TLE that is none), or
    None: checked before sending by every ground path (`sunlit-ground send`, the console, the server's queue) as
    ``schedule upload`` checks it (found in audit: SET_PARAM value=nan was queued and sent, to fail on board a pass
    later). The schedule's own commands are left to the schedule."""
    if not_schedulable(name):
        return None
    try:
        check_command(dictionary, name, dict(values))
    except CommandRefused as exc:
        return exc
    return None


class CommandRefused(Exception):
    """A command or its arguments refused: ``field`` relative to the command ("command", "args.mode")."""

    def __init__(self, field: str, reason: str, code: FailureCode):
        super().__init__(reason)
        self.field, self.reason, self.code = field, reason, code


PowerModes = Callable[[], Iterable[str] | None]
"""The board's power-mode names now, or None where it cannot say (a port the agent wires to its hardware layer);
never raises."""


def check_command(dictionary: Dictionary, name: Any, args: Any,
                  power_modes: PowerModes | None = None) -> tuple[str, dict[str, Any]]:
    """(dictionary name, checked arguments) of a command that may be scheduled, or :class:`CommandRefused`.

    The arguments go through the dictionary's own checker (``Command.validate_args``), so a
    time tag or a step is refused for exactly what a direct command would be refused for.
    ``power_modes``: the board's mode names, so that a SET_POWER_MODE naming one it lacks is refused now, as the
    command refuses it (found in review: taken, and failed at release, out of contact). Without it, or where it
    gives None (the board cannot say), any name is taken and judged at release: the ground's check of a schedule
    file has no board.
    """
    if not isinstance(name, str):
        raise CommandRefused("command", f"must be a command name, got {type(name).__name__}", FailureCode.BAD_ARGUMENTS)
    why = not_schedulable(name)
    if why:
        raise CommandRefused("command", why, FailureCode.NOT_ALLOWED_IN_MODE)
    try:
        command = dictionary.command(name)
    except ArgumentError as exc:
        raise CommandRefused("command", str(exc), exc.code) from None
    if not isinstance(args, Mapping):
        raise CommandRefused("args", f"must be a map of arguments, got {type(args).__name__}",
                             FailureCode.BAD_ARGUMENTS)
    raw = dict(args)
    try:
        checked = command.validate_args(raw)
    except ArgumentError as exc:
        raise CommandRefused(_bad_argument(command, raw), str(exc), exc.code) from None
    try:  # a name that would lead out of its directory is refused now, as the command itself would be
        check_file_arguments(command.name, checked)
    except NameRefused as exc:
        field, _, why = str(exc).partition(": ")
        raise CommandRefused(f"args.{field}", why, FailureCode.BAD_ARGUMENTS) from None
    static = _STATIC_CHECKS.get(command.name)
    if static is not None:
        static(dictionary, checked)
    if command.name == "SET_POWER_MODE" and power_modes is not None:
        _check_power_mode(checked, power_modes())
    return command.name, checked


def _check_power_mode(args: dict[str, Any], modes: Iterable[str] | None) -> None:
    """SET_POWER_MODE's name among the board's modes, in the words of its handler's refusal (the hardware layer's
    ``find_power_mode``); AUTO in any case, as the handler takes it. ``modes`` None: not known, taken."""
    name = args.get("name")
    if modes is None or not isinstance(name, str) or name.upper() == "AUTO":
        return
    known = [str(m) for m in modes]
    if name in known:
        return
    folded = [m for m in known if m.lower() == name.lower()]
    hint = f"; names are case-sensitive, did you mean {folded[0]!r}?" if folded else ""
    raise CommandRefused("args.name", f"unknown power mode {name!r}: this board offers {', '.join(known) or 'none'}"
                                      f"{hint}", FailureCode.OUT_OF_RANGE)


def _check_set_param(dictionary: Dictionary, args: dict[str, Any]) -> None:
    """SET_PARAM's value is text to the dictionary's argument check; its parameter's own spec checks it as the
    handler will (found in audit: a time tag of hk_period_s = -1 or "banana" was taken, and failed at release,
    out of contact, or aborted a sequence). What depends on other values at release (an ordered pair's other
    half) is left to the handler then."""
    param = dictionary.parameter_by_name.get(args.get("name"))
    if param is None:
        raise CommandRefused("args.name", f"no parameter {args.get('name')!r}", FailureCode.BAD_ARGUMENTS)
    try:
        param.spec.coerce(args.get("value"), param.name)
    except ArgumentError as exc:
        raise CommandRefused("args.value", str(exc), exc.code) from None


def _check_tle(dictionary: Dictionary, args: dict[str, Any]) -> None:
    """SET_TLE's lines, as its handler reads them (found in audit: a time tag of a TLE that is no TLE was taken,
    and failed at release, out of contact). Whether it predicts now is for the handler at release."""
    from flight.orbit import Orbit, TleError

    try:
        Orbit.from_tle(args.get("line1", ""), args.get("line2", ""))
    except TleError as exc:
        raise CommandRefused("args.line1", str(exc), FailureCode.BAD_ARGUMENTS) from None


def _check_dump_range(dictionary: Dictionary, args: dict[str, Any]) -> None:
    """STORE_DUMP's range in order, as its handler wants it (found in audit: taken reversed, failed at release)."""
    lo, hi = args.get("from_unix_s"), args.get("to_unix_s")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi < lo:
        raise CommandRefused("args.to_unix_s", f"{hi} is before from_unix_s {lo}", FailureCode.BAD_ARGUMENTS)


def _check_model_digest(dictionary: Dictionary, args: dict[str, Any]) -> None:
    """MODEL_INSTALL's sha256 as its handler reads it, 64 hex digits (found in audit: a time tag of a digest cut
    short was taken, and failed at release, out of contact). Whether the file has it is for the handler then."""
    digest = args.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise CommandRefused("args.sha256", "must be 64 hex digits", FailureCode.BAD_ARGUMENTS)


def _check_wrapped_key(dictionary: Dictionary, args: dict[str, Any]) -> None:
    """KEY_LOAD's wrapped key as its handler reads it, hex of a key wrapped by RFC 3394 (found in audit: a time tag
    of one that was not hex, or cut short, was taken, and failed at release). Whether it unwraps under its master
    is for the handler then: the master key is the board's."""
    from flight.link.sdls import WRAPPED_LEN

    text = str(args.get("wrapped", "")).strip()
    try:
        size = len(bytes.fromhex(text))
    except ValueError:
        size = None
    if size != WRAPPED_LEN:
        raise CommandRefused("args.wrapped", f"must be {2 * WRAPPED_LEN} hex digits, the key wrapped under its master "
                                             f"(sunlit-ground key new prints it)", FailureCode.BAD_ARGUMENTS)


# Checks a command's handler makes that need no state: made when it is scheduled or stored as a step, so it is
# refused then, as it would be if sent now, not at its release.
_STATIC_CHECKS: dict[str, Callable[[Dictionary, dict[str, Any]], None]] = {
    "SET_PARAM": _check_set_param, "SET_TLE": _check_tle, "STORE_DUMP": _check_dump_range,
    "MODEL_INSTALL": _check_model_digest, "KEY_LOAD": _check_wrapped_key}


def _bad_argument(command: Command, raw: dict[str, Any]) -> str:
    """The field of the argument ``validate_args`` refused (it says so only in its message)."""
    known = {a.name for a in command.args}
    extra = sorted(str(k) for k in raw if k not in known)
    if extra:  # escaped and cut as the message says it (found in review: raw here, it led every refusal)
        return f"args.{said_name(extra[0])}"
    for a in command.args:
        if a.name not in raw:
            if a.default is None:
                return f"args.{a.name}"
            continue
        try:
            a.spec.coerce(raw[a.name], a.name)
        except ArgumentError:
            return f"args.{a.name}"
    return "args"


def _iso(t_s: float) -> str:
    try:
        return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{t_s:.0f} (Unix s)"


def _number(value: Any) -> float | None:
    """A finite number as float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int past a float's range (found in review: raised out of a resume, no agent started)
        return None
    return value if math.isfinite(value) else None


# --- the time-based schedule -------------------------------------------------------------------


class ScheduleError(ValueError):
    """A schedule request refused. The message names the field and says what to do instead.

    ``code`` is the verification failure code the agent reports for it (an unknown command
    stays UNKNOWN_COMMAND, a bad argument keeps the dictionary's code).
    """

    def __init__(self, reason: str, field: str, code: FailureCode = FailureCode.OUT_OF_RANGE):
        super().__init__(reason if reason.startswith(f"{field} ") else f"{field}: {reason}")
        self.reason, self.field, self.code = reason, field, code


@dataclass(frozen=True)
class ScheduleEntry:
    """One time-tagged command. ``held``: kept, not released until the operator says so."""

    entry_id: int
    release_unix_s: float
    command: str
    args: dict[str, Any]
    source: str
    inserted_unix_s: float
    held: bool = False

    def to_json(self) -> dict[str, Any]:
        args = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in self.args.items()}  # BYTES: hex, as coerce reads it
        return {"entry_id": self.entry_id, "release_unix_s": self.release_unix_s, "command": self.command, "args": args,
                "source": self.source, "inserted_unix_s": self.inserted_unix_s, "held": self.held}


def _order(entry: ScheduleEntry) -> tuple[float, int]:
    return entry.release_unix_s, entry.entry_id


@dataclass(frozen=True)
class ClockJump:
    """UTC moved differently from the monotonic clock between two looks, or there was nothing to
    compare with and entries were already late (``delta_s`` 0: the first look after a start).

    ``delta_s``: UTC's movement minus the monotonic clock's, positive forward. ``overdue``: the
    entries this made due, now held (in release order); empty for a backward jump.
    """

    delta_s: float
    overdue: tuple[ScheduleEntry, ...]
    reason: str


class TimeSchedule:
    """The on-board time-based schedule, kept in ``path`` (and ``path.ids``); see the module's notes.

    Loading never raises for what is in the files: a corrupt schedule is reported in
    ``load_error``, moved aside (``NAME.corrupt``) and the schedule starts empty; an entry
    that no longer passes the dictionary or the board (a command removed by a software update,
    a power mode the board no longer has) is left out and named in ``dropped_at_load``.

    Changes the ground asks for (insert, delete, reset, release_held) raise ``OSError`` and
    change nothing if they cannot be made durable. Changes of the schedule's own (due,
    holds) go ahead in memory and leave the reason in ``persist_error`` (None again after the
    next good write): refusing to release because the disk is full would stop every time tag.

    Clock jumps, the choice: :meth:`check_clock` is given UTC and the monotonic clock at each
    look. When UTC jumps forward by more than ``jump_tolerance_s`` beyond the monotonic time
    elapsed, the entries the jump made due (release after where UTC should have been, up to
    now) are *held*, not released: a clock corrected by hours must not fire hours of commands
    at once, each late and out of its context (a pass, an eclipse). They stay in the schedule
    with ``held`` set until :meth:`release_held` or :meth:`delete`. A backward jump only
    delays: entries keep their absolute release times. On the first look after a start there
    is no reference; entries already late by more than ``jump_tolerance_s`` (they fell due
    while the agent was not running) are held by the same rule. Call :meth:`check_clock`
    before :meth:`due` on every look.

    ``power_modes``: the board's power-mode names (:func:`check_command`), for insertions and at load.
    """

    def __init__(self, path: Path | str, dictionary: Dictionary = DICTIONARY, *, capacity: int = SCHEDULE_CAPACITY,
                 max_ahead_s: float = MAX_AHEAD_S, tolerance_s: float = PAST_TOLERANCE_S,
                 jump_tolerance_s: float = JUMP_TOLERANCE_S, power_modes: PowerModes | None = None):
        if capacity < 1 or max_ahead_s <= 0 or tolerance_s < 0 or jump_tolerance_s <= 0:
            raise ValueError("capacity and max_ahead_s must be positive, tolerances not negative")
        self.path = Path(path)
        self.ids_path = self.path.with_name(self.path.name + ".ids")
        self.dictionary = dictionary
        self.power_modes = power_modes
        self.capacity = capacity
        self.max_ahead_s = float(max_ahead_s)
        self.tolerance_s = float(tolerance_s)
        self.jump_tolerance_s = float(jump_tolerance_s)
        self.load_error: str | None = None
        self.dropped_at_load: tuple[str, ...] = ()
        self.persist_error: str | None = None
        self._entries: dict[int, ScheduleEntry] = {}
        # The entries by release time then id, and the earliest release not held: made when the schedule
        # changes, not at each look of the loop (an audit: a sort of 256 entries every loop turn)
        self._order_cache: tuple[list[ScheduleEntry], float | None] | None = None
        self._next_id = 1
        self._reserved_below = 0  # ids from here on were never handed out, as far as the ids file says
        self._look: tuple[float, float] | None = None  # (UTC, monotonic) at the last check_clock
        self._load()

    # --- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[ScheduleEntry]:
        """Every entry, held ones included, by release time then id."""
        return list(self._ordered()[0])

    def held(self) -> list[ScheduleEntry]:
        return [e for e in self._ordered()[0] if e.held]

    def next_release_s(self) -> float | None:
        """The earliest release time of an entry not held, or None."""
        return self._ordered()[1]

    def _ordered(self) -> tuple[list[ScheduleEntry], float | None]:
        if self._order_cache is None:
            ordered = sorted(self._entries.values(), key=_order)
            self._order_cache = (ordered, next((e.release_unix_s for e in ordered if not e.held), None))
        return self._order_cache

    @property
    def next_id(self) -> int:
        return self._next_id

    # --- changes the ground asks for ------------------------------------------------------------

    def insert_at(self, release_unix_s: float, command: str, args: Mapping[str, Any], now_unix_s: float,
                  source: str = "timetag") -> ScheduleEntry:
        """Schedule ``command`` for ``release_unix_s`` (UTC); :class:`ScheduleError` names what is refused."""
        try:
            name, checked = check_command(self.dictionary, command, args, self.power_modes)
        except CommandRefused as bad:
            raise ScheduleError(bad.reason, bad.field, bad.code) from None
        release = _number(release_unix_s)
        if release is None:
            raise ScheduleError(f"must be a finite number of Unix seconds, got {release_unix_s!r}", "release_unix_s",
                                FailureCode.BAD_ARGUMENTS)
        now = float(now_unix_s)
        if release < now - self.tolerance_s:
            raise ScheduleError(f"{_iso(release)} is {now - release:.1f} s in the past (on-board UTC is {_iso(now)}); "
                                f"a time tag may be at most {self.tolerance_s:g} s old: send the command directly, or "
                                f"check the ground's and the board's clocks", "release_unix_s")
        if release > now + self.max_ahead_s:
            # on-board UTC said, as for a time in the past (found in audit: a board whose clock was lost was told
            # only "uplink it closer to its time" of a tag an hour ahead)
            raise ScheduleError(f"{_iso(release)} is {(release - now) / 86400:.1f} days ahead, at most "
                                f"{self.max_ahead_s / 86400:g} (on-board UTC is {_iso(now)}): uplink it closer to its "
                                f"time, or check the ground's and the board's clocks", "release_unix_s")
        if len(self._entries) >= self.capacity:
            raise ScheduleError(f"schedule full ({self.capacity} entries); delete or reset first", "schedule",
                                FailureCode.BUSY)
        entry = ScheduleEntry(self._next_id, release, name, checked, str(source), now)
        self._reserve(entry.entry_id)
        self._commit({**self._entries, entry.entry_id: entry}, entry.entry_id + 1, durable=True)
        return entry

    def insert_after(self, delay_s: float, command: str, args: Mapping[str, Any], now_unix_s: float,
                     source: str = "timetag") -> ScheduleEntry:
        """Schedule ``command`` ``delay_s`` seconds from ``now_unix_s``."""
        delay = _number(delay_s)
        if delay is None or delay < 0:
            raise ScheduleError(f"must be a finite number of seconds, 0 or more, got {delay_s!r}", "delay_s",
                                FailureCode.BAD_ARGUMENTS)
        if delay > self.max_ahead_s:
            raise ScheduleError(f"{delay:.0f} s is {delay / 86400:.1f} days, at most {self.max_ahead_s / 86400:g}: "
                                f"uplink it closer to its time", "delay_s")
        return self.insert_at(float(now_unix_s) + delay, command, args, now_unix_s, source)

    def delete(self, entry_id: int) -> ScheduleEntry:
        """Remove one entry (held or not) and return it."""
        entry = self._entries.get(entry_id)
        if entry is None:
            ids = ", ".join(str(e.entry_id) for e in self.entries()[:10]) or "none"
            raise ScheduleError(f"no entry {entry_id} in the schedule (it holds {ids}"
                                f"{', ...' if len(self._entries) > 10 else ''})", "entry_id")
        self._commit({k: e for k, e in self._entries.items() if k != entry_id}, self._next_id, durable=True)
        return entry

    def reset(self) -> int:
        """Delete every entry; return how many there were. Ids go on counting."""
        count = len(self._entries)
        self._commit({}, self._next_id, durable=True)
        return count

    def release_held(self, entry_id: int | None = None) -> list[ScheduleEntry]:
        """Clear the hold of one entry (or of all): the next :meth:`due` releases them if their
        time has passed. Returns the entries as they are now."""
        if entry_id is not None:
            entry = self._entries.get(entry_id)
            if entry is None or not entry.held:
                held = ", ".join(str(e.entry_id) for e in self.held()) or "none"
                raise ScheduleError(f"entry {entry_id} is not held (held: {held})", "entry_id")
            targets = [entry]
        else:
            targets = self.held()
        freed = [replace(e, held=False) for e in targets]
        if freed:
            self._commit({**self._entries, **{e.entry_id: e for e in freed}}, self._next_id, durable=True)
        return sorted(freed, key=_order)

    # --- the loop's calls -----------------------------------------------------------------------

    def due(self, now_unix_s: float) -> list[ScheduleEntry]:
        """Remove and return the entries due at ``now_unix_s`` (not held), by release time then id.

        Written before it returns: at most once (see the module's notes). RuntimeError before the
        first :meth:`check_clock`.
        """
        if self._look is None:
            raise RuntimeError("call check_clock before due: the first look holds what fell due while the agent "
                               "was not running, and due would release it")
        now = float(now_unix_s)
        first = self.next_release_s()
        if first is None or first > now:
            return []  # the common look: nothing due, nothing walked
        out = [e for e in self._ordered()[0] if not e.held and e.release_unix_s <= now]
        if out:
            gone = {e.entry_id for e in out}
            self._commit({k: e for k, e in self._entries.items() if k not in gone}, self._next_id, durable=False)
        return out

    def check_clock(self, now_unix_s: float, monotonic_s: float) -> ClockJump | None:
        """Compare this look's (UTC, monotonic) with the last; hold what a forward jump made due.

        See the class's notes for the choice. None when nothing is to be reported.
        """
        now, mono = float(now_unix_s), float(monotonic_s)
        last, self._look = self._look, (now, mono)
        if last is not None and abs(now - (last[0] + (mono - last[1]))) <= self.jump_tolerance_s:
            return None  # the common look: no jump (the test below, before any entry is walked)
        active = [e for e in self._ordered()[0] if not e.held]
        if last is None:
            late = tuple(e for e in active if e.release_unix_s < now - self.jump_tolerance_s)
            if not late:
                return None
            late = self._hold(late)
            return ClockJump(0.0, late, f"{len(late)} entries fell due while the agent was not running (the oldest "
                                        f"{now - late[0].release_unix_s:.0f} s ago): held for the operator")
        expected = last[0] + (mono - last[1])  # where UTC would be had it moved with the monotonic clock
        delta = now - expected
        if abs(delta) <= self.jump_tolerance_s:
            return None
        if delta < 0:
            return ClockJump(delta, (), f"UTC stepped back {-delta:.1f} s against the monotonic clock: entries keep "
                                        f"their release times and fall due that much later")
        overdue = tuple(e for e in active if expected < e.release_unix_s <= now)
        overdue = self._hold(overdue)
        return ClockJump(delta, overdue, f"UTC jumped {delta:.1f} s ahead of the monotonic clock: {len(overdue)} "
                                         f"entries it made due are held for the operator, not released")

    def _hold(self, entries: Iterable[ScheduleEntry]) -> tuple[ScheduleEntry, ...]:
        held = {e.entry_id: replace(e, held=True) for e in entries}
        if held:
            self._commit({**self._entries, **held}, self._next_id, durable=False)
        return tuple(sorted(held.values(), key=_order))

    # --- the files ------------------------------------------------------------------------------

    def _commit(self, entries: dict[int, ScheduleEntry], next_id: int, durable: bool) -> None:
        """Write the whole schedule, then take it as the state; ``durable``: raise OSError if the
        write fails (nothing changes), else go on in memory and say so in ``persist_error``."""
        body = {"format": _FORMAT, "next_id": next_id,
                "entries": [e.to_json() for e in sorted(entries.values(), key=_order)]}
        try:
            write_checked_json(self.path, body)
            self.persist_error = None
        except OSError as exc:
            if durable:
                raise
            self.persist_error = f"{self.path}: not written ({exc.strerror or exc}); the schedule runs from memory"
        self._entries, self._next_id = entries, next_id
        self._order_cache = None

    def _reserve(self, entry_id: int) -> None:
        if entry_id < self._reserved_below:
            return
        mark = entry_id + ID_BLOCK
        write_checked_json(self.ids_path, {"format": _FORMAT, "reserved_below": mark})
        self._reserved_below = mark

    def _load(self) -> None:
        reserved = self._load_ids()
        if not self.path.exists():
            self._next_id = max(1, reserved)
            return
        try:
            next_id, raw_entries = _parse_schedule_body(read_checked_json(self.path), self.path)
        except CorruptFile as exc:
            moved = quarantine(self.path)
            self.load_error = (f"{exc}; moved to {moved.name if moved else '(could not be moved)'}, the schedule "
                               f"starts empty")
            self._next_id = max(1, reserved)
            if reserved == 0:
                self.load_error += " and entry ids start again at 1 (no id reservation file)"
            return
        dropped = []
        for raw in raw_entries:
            try:
                name, checked = check_command(self.dictionary, raw["command"], raw["args"], self.power_modes)
            except CommandRefused as bad:
                dropped.append(f"entry {raw['entry_id']} ({raw['command']}): {bad.field}: {bad.reason}")
                continue
            entry = ScheduleEntry(raw["entry_id"], raw["release_unix_s"], name, checked, raw["source"],
                                  raw["inserted_unix_s"], raw["held"])
            self._entries[entry.entry_id] = entry
        self._order_cache = None
        self.dropped_at_load = tuple(dropped)
        self._next_id = next_id

    def _load_ids(self) -> int:
        if not self.ids_path.exists():
            return 0
        try:
            body = read_checked_json(self.ids_path)
            mark = body.get("reserved_below") if isinstance(body, dict) else None
            if isinstance(mark, bool) or not isinstance(mark, int) or mark < 1:
                raise CorruptFile(f"{self.ids_path}: no reserved_below")
        except CorruptFile as exc:
            moved = quarantine(self.ids_path)  # the schedule file's next_id still holds; a new mark at the next insert
            said = (f"{exc}; moved to {moved.name if moved else '(could not be moved)'}, entry ids go on from the "
                    "schedule file's")  # said and counted (an audit: moved aside unsaid)
            self.load_error = said if self.load_error is None else f"{self.load_error}; {said}"
            return 0
        self._reserved_below = mark
        return mark


def _parse_schedule_body(body: Any, path: Path) -> tuple[int, list[dict[str, Any]]]:
    """The schedule file's body, its shape checked (CorruptFile otherwise); the commands are not."""
    def bad(what: str) -> CorruptFile:
        return CorruptFile(f"{path}: {what}")

    if not isinstance(body, dict) or body.get("format") != _FORMAT:
        raise bad(f"not a schedule of format {_FORMAT}")
    next_id, entries = body.get("next_id"), body.get("entries")
    if isinstance(next_id, bool) or not isinstance(next_id, int) or next_id < 1 or not isinstance(entries, list):
        raise bad("next_id or entries missing or of the wrong type")
    out = []
    for i, e in enumerate(entries):
        ok = (isinstance(e, dict)
              and set(e) == {"entry_id", "release_unix_s", "command", "args", "source", "inserted_unix_s", "held"}
              and isinstance(e["entry_id"], int) and not isinstance(e["entry_id"], bool) and 1 <= e["entry_id"] < next_id
              and _number(e["release_unix_s"]) is not None and _number(e["inserted_unix_s"]) is not None
              and isinstance(e["command"], str) and isinstance(e["args"], dict) and isinstance(e["source"], str)
              and isinstance(e["held"], bool))
        if not ok:
            raise bad(f"entries[{i}] is not a schedule entry")
        out.append({**e, "release_unix_s": float(e["release_unix_s"]), "inserted_unix_s": float(e["inserted_unix_s"])})
    if len({e["entry_id"] for e in out}) != len(out):
        raise bad("an entry id appears twice")
    return next_id, out


# --- stored sequences: the file format ---------------------------------------------------------


class SequenceError(ValueError):
    """A sequence file (or a run's saved state) refused; the message names the source and the key
    path, e.g. ``downlink.toml: step[2].args.mode: ...``. Steps are counted from 0."""

    def __init__(self, source: str, path: str, reason: str):
        super().__init__(f"{source}: {path}: {reason}" if path else f"{source}: {reason}")
        self.source, self.path, self.reason = source, path, reason


@dataclass(frozen=True)
class CommandStep:
    """Send a command and wait for its completion report (PUS 1,7 or 1,8)."""

    command: str
    args: dict[str, Any]
    on_failure: str = "abort"
    timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S


@dataclass(frozen=True)
class WaitStep:
    """Wait ``wait_s`` seconds from when the step is reached."""

    wait_s: float


@dataclass(frozen=True)
class WaitUntilStep:
    """Wait until UTC ``unix_s``; a time already past goes straight on."""

    unix_s: float


@dataclass(frozen=True)
class WaitForStep:
    """Wait until telemetry ``channel`` compares true with ``value``, for at most ``timeout_s``."""

    channel: str
    op: str
    value: Any
    timeout_s: float
    on_failure: str = "abort"

    def met(self, telemetry: Mapping[str, Any]) -> bool:
        """Whether the latest value satisfies the condition; absent, nil, NaN or of another type: not."""
        value = telemetry.get(self.channel)
        if isinstance(self.value, bool):
            ok_type = isinstance(value, bool)
        elif isinstance(self.value, str):
            ok_type = isinstance(value, str)
        else:
            ok_type = _number(value) is not None
        return ok_type and bool(OPS[self.op](value, self.value))

    def describe(self) -> str:
        return f"{self.channel} {self.op} {self.value!r}"


Step = CommandStep | WaitStep | WaitUntilStep | WaitForStep
_KINDS = ("command", "wait_s", "wait_until", "wait_for")
_STEP_KEYS = {
    "command": ("command", "args", "on_failure", "timeout_s"),
    "wait_s": ("wait_s",),
    "wait_until": ("wait_until",),
    "wait_for": ("wait_for", "on_failure"),
}
_WAIT_FOR_KEYS = ("channel", "op", "value", "timeout_s")


@dataclass(frozen=True)
class Sequence:
    """A parsed, checked stored sequence. ``digest``: of the file's text, so that a run saved
    across a restart is resumed only against the sequence it was started from."""

    name: str
    steps: tuple[Step, ...]
    source: str
    digest: str
    description: str = ""


def check_sequence_upload(name: str, size_bytes: int | None, field: str = "name") -> str:
    """The sequence a file sent up as ``name`` (``sequences/NAME.toml``) of ``size_bytes`` (None: not known) would be:
    NAME one SEQUENCE_START takes, the file at most :data:`MAX_SEQUENCE_BYTES`. Checked by the ground before it sends
    and by the agent from the file's metadata, so that nothing SEQUENCE_START could never find or read lands in
    sequences/ nor goes up for nothing. :class:`NameRefused` naming ``field`` and the rule."""
    top, _, rest = name.partition("/")
    if top != SEQUENCES_DIR or "/" in rest or not rest.endswith(".toml"):
        raise NameRefused(f"{field}: {name!r}: a sequence goes up as {SEQUENCES_DIR}/NAME.toml, NAME as "
                          "SEQUENCE_START names it")
    sequence = rest[:-len(".toml")]
    try:
        check_value(SEQUENCE, field, sequence)
    except NameRefused:
        raise NameRefused(f"{field}: {name!r}: {sequence!r} is not a sequence name (1 to 32 letters, digits, "
                          "'_', '.' or '-', starting with a letter or digit)") from None
    if size_bytes is not None and size_bytes > MAX_SEQUENCE_BYTES:
        raise NameRefused(f"{field}: {name!r} is {size_bytes} bytes; a sequence file is at most {MAX_SEQUENCE_BYTES} "
                          f"bytes ({MAX_SEQUENCE_BYTES // 1024} KiB): split the sequence")
    return sequence


def load_sequence(path: Path | str, dictionary: Dictionary = DICTIONARY, *, power_modes: PowerModes | None = None,
                  start_unix_s: float | None = None) -> Sequence:
    """Read and parse a sequence file; every problem is a :class:`SequenceError` (see :func:`parse_sequence`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SequenceError(str(path), "", f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SequenceError(str(path), "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_sequence(text, str(path), dictionary, power_modes=power_modes, start_unix_s=start_unix_s)


def parse_sequence(text: str, source: str = "(sequence)", dictionary: Dictionary = DICTIONARY, *,
                   power_modes: PowerModes | None = None, start_unix_s: float | None = None) -> Sequence:
    """Check a sequence file's text (TOML, ``docs/sequences.md``) against the format and the dictionary.

    ``power_modes``: the board's, as for a time tag (:func:`check_command`). Its waits may reach no further than a
    time tag may (:data:`MAX_AHEAD_S`), so that a run ends and frees the one slot for sequences: the ``wait_s``
    always, a ``wait_until`` with the waits around it where ``start_unix_s``, the run's start, is given.
    """
    def fail(path: str, reason: str) -> SequenceError:
        return SequenceError(source, path, reason)

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SEQUENCE_BYTES:
        raise fail("", f"{size} bytes, at most {MAX_SEQUENCE_BYTES}: split the sequence")
    try:
        raw = toml_text.loads(text)
    except toml_text.TOMLDecodeError as exc:
        raise fail("", f"not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"name", "description", "step"})
    if unknown:
        raise fail(unknown[0], "unknown key; a sequence takes name, description and [[step]] tables")
    if "name" not in raw:
        raise fail("name", "missing: a sequence has a name of 1 to 32 characters A-Z a-z 0-9 _ . -")
    name = raw["name"]
    if not isinstance(name, str) or not SEQUENCE_NAME_RE.fullmatch(name):
        raise fail("name", f"{name!r} is not 1 to 32 characters A-Z a-z 0-9 _ . -")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 256:
        raise fail("description", "must be text of at most 256 characters")
    if "step" not in raw:
        raise fail("step", "missing: a sequence has at least one [[step]]")
    steps = raw["step"]
    if not isinstance(steps, list) or not steps:
        raise fail("step", "must be one or more [[step]] tables")
    if len(steps) > MAX_STEPS:
        raise fail("step", f"{len(steps)} steps, at most {MAX_STEPS}: split the sequence")
    parsed = tuple(_parse_step(s, f"step[{i}]", dictionary, fail, power_modes) for i, s in enumerate(steps))
    _check_waits(parsed, start_unix_s, fail)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Sequence(name, parsed, source, digest, description)


def _check_waits(steps: tuple[Step, ...], start_unix_s: float | None,
                 fail: Callable[[str, str], SequenceError], *, first: int = 0, reach_s: float = 0.0,
                 resumed: bool = False) -> None:
    """The time the waits reach, from the start, within :data:`MAX_AHEAD_S` (found in review: a ``wait_until`` in
    the year 9999 was taken, and the run held the slot for good). Counted as the run would: a ``wait_s`` from where
    the waits before it end, a ``wait_until`` where it is later; without a start the ``wait_s`` alone (their sum is
    never more than the reach). Timeouts bound how long a step may fail to end, not a plan: not counted.
    ``first``, ``reach_s``, ``resumed``: a run resumed at step ``first``, the step before it ending ``reach_s`` after
    ``start_unix_s``, now (:meth:`SequenceRun.check_reach`)."""
    start = _number(start_unix_s)
    reach = reach_s  # seconds after the start
    for i in range(first, len(steps)):
        step = steps[i]
        if isinstance(step, WaitStep):
            reach, key = reach + step.wait_s, "wait_s"
        elif isinstance(step, WaitUntilStep) and start is not None:
            reach, key = max(reach, step.unix_s - start), "wait_until"
        else:
            continue
        if reach > MAX_AHEAD_S:
            raise _too_far(fail, f"step[{i}].{key}", start, reach, resumed)


def _too_far(fail: Callable[[str, str], SequenceError], where: str, start: float | None, reach: float,
             resumed: bool) -> SequenceError:
    """The refusal of waits reaching ``reach`` seconds past ``start``; a resumed run's says what to look at."""
    until = f" until {_iso(start + reach)}" if start is not None else ""
    if resumed:  # short: said in an event, whose text is cut at 200 characters
        return fail(where, f"would wait{until}, {reach / 86400:.1f} days from now, at most {MAX_AHEAD_S / 86400:g}: "
                           f"check the board's clock, then start it again")
    return fail(where, f"the sequence would wait{until}, {reach / 86400:.1f} days after it starts; at most "
                       f"{MAX_AHEAD_S / 86400:g}, as far ahead as a time tag may be: split it, or start it closer to "
                       f"its time")


def _parse_step(raw: Any, where: str, dictionary: Dictionary, fail: Callable[[str, str], SequenceError],
                power_modes: PowerModes | None = None) -> Step:
    if not isinstance(raw, dict):
        raise fail(where, "must be a table ([[step]])")
    kinds = [k for k in _KINDS if k in raw]
    if not kinds:
        raise fail(where, f"a step is one of {', '.join(_KINDS)}; this one has none (it has "
                          f"{', '.join(sorted(raw)) or 'no keys'})")
    if len(kinds) > 1:
        raise fail(f"{where}.{kinds[1]}", f"a step is exactly one of {', '.join(_KINDS)}, and this one is also "
                                          f"{kinds[0]}: make them two steps")
    kind = kinds[0]
    for key in raw:
        if key not in _STEP_KEYS[kind]:
            inside = (f"; a wait_for's {key} goes inside it: wait_for = {{ channel, op, value, timeout_s }}"
                      if kind == "wait_for" and key in _WAIT_FOR_KEYS else "")  # found in audit: beside it, unsaid
            raise fail(f"{where}.{key}", f"unknown key for a {kind} step; it takes {', '.join(_STEP_KEYS[kind])}"
                                         f"{inside}")
    on_failure = raw.get("on_failure", "abort")
    if on_failure not in ON_FAILURE:
        raise fail(f"{where}.on_failure", f"{on_failure!r} is not one of {', '.join(ON_FAILURE)}")

    if kind == "command":
        try:
            name, args = check_command(dictionary, raw["command"], raw.get("args", {}), power_modes)
        except CommandRefused as bad:
            raise fail(f"{where}.{bad.field}", bad.reason) from None
        timeout = _seconds(raw.get("timeout_s", DEFAULT_COMMAND_TIMEOUT_S), f"{where}.timeout_s", MAX_TIMEOUT_S, fail,
                           positive=True)
        return CommandStep(name, args, on_failure, timeout)
    if kind == "wait_s":
        return WaitStep(_seconds(raw["wait_s"], f"{where}.wait_s", MAX_WAIT_S, fail, positive=False))
    if kind == "wait_until":
        return WaitUntilStep(_utc(raw["wait_until"], f"{where}.wait_until", fail))
    return _parse_wait_for(raw["wait_for"], f"{where}.wait_for", on_failure, dictionary, fail)


def _seconds(value: Any, where: str, limit: float, fail: Callable[[str, str], SequenceError], positive: bool) -> float:
    seconds = _number(value)
    if seconds is None:
        raise fail(where, f"must be a number of seconds, got {value!r}")
    if seconds < 0 or (positive and seconds == 0) or seconds > limit:
        low = "above 0" if positive else "0 or more"
        raise fail(where, f"{seconds:g} s: must be {low} and at most {limit:g} s")
    return seconds


def _utc(value: Any, where: str, fail: Callable[[str, str], SequenceError]) -> float:
    """An absolute time with its zone: a TOML offset date-time, or the same as a string."""
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"  # Python 3.10's fromisoformat does not read "Z"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise fail(where, f"{value!r} is not an ISO 8601 date and time, e.g. 2026-12-03T10:00:00Z") from None
    if not isinstance(value, datetime):
        kind = "a date without a time" if isinstance(value, date) else type(value).__name__
        raise fail(where, f"must be a date and time in UTC, e.g. 2026-12-03T10:00:00Z, got {kind}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise fail(where, f"{value.isoformat()} has no time zone: write UTC with Z, e.g. 2026-12-03T10:00:00Z")
    return value.timestamp()


def _parse_wait_for(raw: Any, where: str, on_failure: str, dictionary: Dictionary,
                    fail: Callable[[str, str], SequenceError]) -> WaitForStep:
    if not isinstance(raw, dict):
        raise fail(where, 'must be a table: { channel = "...", op = ">=", value = ..., timeout_s = ... }')
    for key in raw:
        if key not in _WAIT_FOR_KEYS:
            raise fail(f"{where}.{key}", f"unknown key; wait_for takes {', '.join(_WAIT_FOR_KEYS)}")
    for key in _WAIT_FOR_KEYS:
        if key not in raw:
            raise fail(f"{where}.{key}", "missing" + (": say how long to wait at most" if key == "timeout_s" else ""))
    name = raw["channel"]
    channel = dictionary.channel_by_name.get(name) if isinstance(name, str) else None
    if channel is None:
        close = [c for c in dictionary.channel_by_name if isinstance(name, str) and name[:4].lower() in c][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise fail(f"{where}.channel", f"{name!r} is not a telemetry channel of the dictionary{hint}")
    op = raw["op"]
    if not isinstance(op, str) or op not in OPS:  # a TOML array or table is no key of OPS (found in audit: TypeError)
        raise fail(f"{where}.op", f"{op!r} is not one of {' '.join(OPS)}")
    value = raw["value"]
    if channel.type in _NUMERIC:
        checked = _number(value)
        if checked is None:
            raise fail(f"{where}.value", f"{channel.name} is a number ({channel.type.value}), got {value!r}")
        value = checked
    else:
        if op not in ("==", "!="):
            raise fail(f"{where}.op", f"{channel.name} is {channel.type.value}: only == and != compare it")
        if channel.type is ValueType.BOOL:
            if not isinstance(value, bool):
                raise fail(f"{where}.value", f"{channel.name} is a bool: true or false, got {value!r}")
        elif channel.type is ValueType.ENUM:
            match = [c for c in channel.choices if isinstance(value, str) and c.casefold() == value.strip().casefold()]
            if not match:
                raise fail(f"{where}.value", f"{value!r} is not one of {', '.join(channel.choices)}")
            value = match[0]
        elif channel.type is ValueType.STRING:
            if not isinstance(value, str):
                raise fail(f"{where}.value", f"{channel.name} is text, got {value!r}")
        else:
            raise fail(f"{where}.channel", f"{channel.name} is {channel.type.value}: a sequence cannot wait on it")
    timeout = _seconds(raw["timeout_s"], f"{where}.timeout_s", MAX_TIMEOUT_S, fail, positive=True)
    return WaitForStep(channel.name, op, value, timeout, on_failure)


# --- stored sequences: running one -------------------------------------------------------------


@dataclass(frozen=True)
class SendCommand:
    """Send this command now, then feed its completion to :meth:`SequenceRun.command_done`."""

    step_index: int
    command: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    """The run is over: ``ok`` when every step passed or was allowed to fail (``on_failure = "continue"``)."""

    ok: bool
    reason: str


Action = SendCommand | Finished

_START, _WAITING, _SENT = "start", "waiting", "sent"  # the current step: not begun, waiting, command sent
INTERRUPTED = "interrupted by a reset"


class SequenceRun:
    """One run of a :class:`Sequence`: a pure state machine, time and telemetry passed in.

    Call :meth:`poll` at :meth:`next_wake_s`, whenever telemetry changes while
    :attr:`waiting_on` is ``"telemetry"``, and after :meth:`command_done`. A command step
    sends once and waits for its verification: success goes on; failure aborts the run unless
    the step says ``on_failure = "continue"``; no completion within ``timeout_s`` always
    aborts (the command may still be running: another step could act on a state nobody
    knows). Waits are counted in UTC, so that a run resumes across a restart where it was; on a
    UTC jump the caller moves them with it (:meth:`shift`, on a :class:`ClockJump`), so a wait,
    a timeout and a ``wait_for`` keep their length. A ``wait_until`` is a UTC time and keeps it.

    Steps are counted from 0. :meth:`to_state` / :meth:`from_state` carry a run across a
    restart; a command that was sent but not answered then is never sent again: it counts as
    failed, :data:`INTERRUPTED` (the command journal's rule).
    """

    def __init__(self, sequence: Sequence, started_unix_s: float):
        self.sequence = sequence
        self.started_unix_s = float(started_unix_s)
        self.index = 0
        self._phase = _START
        self._t0 = self.started_unix_s  # when the current step began: wait start, command sent
        self._outcome: tuple[bool, str] | None = None  # the sent command's completion, not acted on yet
        self.continued: list[str] = []  # failures the sequence said to continue past
        self.result: Finished | None = None

    @property
    def waiting_on(self) -> str:
        """What the run waits for: "start", "time", "telemetry", "command", "poll" (an outcome to act
        on) or "finished"."""
        if self.result is not None:
            return "finished"
        if self._phase == _START:
            return "start"
        step = self.sequence.steps[self.index]
        if isinstance(step, CommandStep):
            return "poll" if self._outcome is not None else "command"
        return "telemetry" if isinstance(step, WaitForStep) else "time"

    def next_wake_s(self) -> float | None:
        """UTC by which :meth:`poll` must be called even if nothing else happens: a wait's end, a
        timeout; a time already past (0.0) means now. None when finished."""
        if self.result is not None:
            return None
        if self._phase == _START:
            return 0.0
        step = self.sequence.steps[self.index]
        if isinstance(step, CommandStep):
            return 0.0 if self._outcome is not None else self._t0 + step.timeout_s
        if isinstance(step, WaitStep):
            return self._t0 + step.wait_s
        if isinstance(step, WaitUntilStep):
            return step.unix_s
        return self._t0 + step.timeout_s

    def shift(self, delta_s: float) -> None:
        """UTC jumped ``delta_s`` (forward positive) while the monotonic clock did not: the current
        step's start moves with it, so its wait or timeout keeps its length (a step of NTP or GNSS
        once cut a 600 s wait to nothing, or stretched it by the step)."""
        if self.result is None and self._phase != _START and math.isfinite(delta_s):
            self._t0 += float(delta_s)

    def command_done(self, step_index: int, ok: bool, reason: str = "") -> bool:
        """Feed the completion of the command sent for ``step_index``. False (ignored) when that
        step is not waiting for one: a late or repeated report."""
        if self.result is not None or step_index != self.index or self._phase != _SENT or self._outcome is not None:
            return False
        self._outcome = (bool(ok), str(reason))
        return True

    def poll(self, now_unix_s: float, telemetry: Mapping[str, Any]) -> Action | None:
        """Advance as far as time, telemetry and outcomes allow; the next thing to do, or None.

        :class:`Finished` is returned once; afterwards None (it stays in :attr:`result`).
        """
        if self.result is not None:
            return None
        now = float(now_unix_s)
        steps = self.sequence.steps
        for _ in range(len(steps) - self.index + 1):  # each turn returns or moves to the next step
            if self.index >= len(steps):
                return self._finish(True, f"{len(steps)} steps done" + (
                    f"; {len(self.continued)} failed and were continued past: {self._continued_said()}"
                    if self.continued else ""))
            step = steps[self.index]
            where = f"step[{self.index}]"
            if self._phase == _START:
                self._phase, self._t0, self._outcome = _WAITING, now, None
                if isinstance(step, CommandStep):
                    self._phase = _SENT
                    return SendCommand(self.index, step.command, dict(step.args))
            if isinstance(step, CommandStep):
                if self._outcome is not None:
                    ok, reason = self._outcome
                    if not ok:
                        failure = f"{where} {step.command} failed: {reason or 'no reason given'}"
                        if step.on_failure != "continue":
                            return self._finish(False, failure)
                        self.continued.append(failure)
                elif now >= self._t0 + step.timeout_s:
                    return self._finish(False, f"{where} {step.command}: no completion within {step.timeout_s:g} s; "
                                               f"aborted (the command may still be running: check before sending "
                                               f"it again)")
                else:
                    return None
            elif isinstance(step, WaitStep):
                if now < self._t0 + step.wait_s:
                    return None
            elif isinstance(step, WaitUntilStep):
                if now < step.unix_s:
                    return None
            elif not step.met(telemetry):
                if now < self._t0 + step.timeout_s:
                    return None
                failure = (f"{where} wait_for {step.describe()}: not met within {step.timeout_s:g} s "
                           f"(last value {telemetry.get(step.channel)!r})")
                if step.on_failure != "continue":
                    return self._finish(False, failure)
                self.continued.append(failure)
            self.index += 1
            self._phase, self._outcome = _START, None
        raise AssertionError("a poll moved past every step without finishing")

    def check_reach(self, now_unix_s: float) -> None:
        """The waits left reach at most :data:`MAX_AHEAD_S` from ``now_unix_s``, else :class:`SequenceError` naming
        the step and key: for a new run, every wait from its start; for a resumed one, the end of the step it is in
        (its wait or timeout, counted from when that step began) and the waits after it (found in review: a board
        whose clock went back 40 days over a restart resumed a 10-minute wait as 40 days, holding the slot)."""
        steps = self.sequence.steps
        if self.result is not None or self.index >= len(steps):
            return

        def fail(path: str, reason: str) -> SequenceError:
            return SequenceError(self.sequence.source, path, reason)

        now = float(now_unix_s)
        resumed = self.index > 0 or self._phase != _START
        first, reach = self.index, 0.0
        if self._phase != _START:
            step = steps[self.index]
            left = max(0.0, (self.next_wake_s() or 0.0) - now)
            if not left <= MAX_AHEAD_S:
                key = {WaitStep: "wait_s", WaitUntilStep: "wait_until", WaitForStep: "wait_for.timeout_s",
                       CommandStep: "timeout_s"}[type(step)]
                raise _too_far(fail, f"step[{self.index}].{key}", now, left, resumed)
            first, reach = self.index + 1, left if isinstance(step, (WaitStep, WaitUntilStep)) else 0.0
        _check_waits(steps, now, fail, first=first, reach_s=reach, resumed=resumed)

    def _continued_said(self) -> str:
        """The failures continued past, each step and command first where there are several: the end report is an
        event's text, cut at 200 characters, and the first failure's reason once hid which steps failed after it
        (found in audit)."""
        said = "; ".join(self.continued)
        if len(self.continued) < 2:
            return said
        return ", ".join(" ".join(f.split(" ", 2)[:2]) for f in self.continued) + " (" + said + ")"

    def _finish(self, ok: bool, reason: str) -> Finished:
        self.result = Finished(ok, f"sequence {self.sequence.name}: {reason}")
        return self.result

    # --- across a restart -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A small JSON-able dict; keep it with :func:`flight.storage.write_checked_json` at each change."""
        return {"format": _FORMAT, "sequence": self.sequence.name, "digest": self.sequence.digest,
                "started_unix_s": self.started_unix_s, "index": self.index, "phase": self._phase, "t0": self._t0,
                "outcome": list(self._outcome) if self._outcome is not None else None,
                "continued": list(self.continued),
                "result": [self.result.ok, self.result.reason] if self.result is not None else None}

    @classmethod
    def from_state(cls, sequence: Sequence, state: Mapping[str, Any]) -> SequenceRun:
        """The run ``to_state`` saved, on the same sequence; :class:`SequenceError` (path ``state...``)
        if it does not fit. A command sent and not answered resumes as failed, :data:`INTERRUPTED`."""
        def fail(key: str, reason: str) -> SequenceError:
            return SequenceError(sequence.source, f"state.{key}" if key else "state", reason)

        if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
            raise fail("format", f"not a sequence run's state of format {_FORMAT}")
        if state.get("sequence") != sequence.name or state.get("digest") != sequence.digest:
            # What to do first, the digests last: said in an event, cut at 200 characters (found in audit: a long
            # name's digests pushed "the file changed" out of it)
            raise fail("digest", f"saved for {state.get('sequence')!r}: the file changed since the run started; "
                                 f"start it again (the run's digest {state.get('digest')}, this "
                                 f"{sequence.name!r}'s {sequence.digest})")
        index, phase = state.get("index"), state.get("phase")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(sequence.steps):
            raise fail("index", f"{index!r} is not a step of {sequence.name} (0..{len(sequence.steps)})")
        is_command = index < len(sequence.steps) and isinstance(sequence.steps[index], CommandStep)
        fits = {_START: True, _SENT: is_command, _WAITING: index < len(sequence.steps) and not is_command}
        if not fits.get(phase, False):
            raise fail("phase", f"{phase!r} does not fit step[{index}]")
        started, t0 = _number(state.get("started_unix_s")), _number(state.get("t0"))
        if started is None or t0 is None:
            raise fail("t0", "started_unix_s and t0 must be numbers")
        outcome, continued, result = state.get("outcome"), state.get("continued"), state.get("result")
        for key, value in (("outcome", outcome), ("result", result)):
            if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 2
                                          and isinstance(value[0], bool) and isinstance(value[1], str)):
                raise fail(key, "must be [ok, reason] or nil")
        if not isinstance(continued, list) or not all(isinstance(c, str) for c in continued):
            raise fail("continued", "must be a list of text")
        run = cls(sequence, started)
        run.index, run._phase, run._t0 = index, phase, t0
        run._outcome = (outcome[0], outcome[1]) if outcome is not None else None
        run.continued = list(continued)
        run.result = Finished(result[0], result[1]) if result is not None else None
        if run.result is None and phase == _SENT and run._outcome is None:
            run._outcome = (False, INTERRUPTED)  # may have run, may not: never sent blindly again
        return run
