"""The ground's schedule file: time tags built on the ground, checked here against the dictionary,
then uplinked as one SCHEDULE_AT each (``sunlit-ground schedule upload FILE``; pure).

Format (TOML)::

    [[entry]]
    at = "2026-12-03T10:00:00Z"      # UTC (or at_unix_s = 1796292000.0)
    command = "SET_MODE"
    args = { mode = "IDLE" }

    [[entry]]
    after_s = 600                    # from the moment it is sent instead
    command = "INFER_START"
    args = { input_set = "tiles" }

Every entry is checked before anything is sent (an unknown command, a bad argument, a time in
the past or past the board's 30-day horizon, both ``at`` and ``after_s``, an entry given twice (the
same command, arguments and time: it would run twice), and the SCHEDULE_AT it becomes), each error
naming ``entry[K].KEY``, with the board's own check of what may be time-tagged
(``flight.agent.schedule.check_command``: a SET_PARAM value its parameter refuses, a file name that leads
out of its area), so the board refuses none for what could be known here: a
schedule goes up whole or not at all from the ground's side. The agent checks again when each arrives.
What only the board knows is not checked here: a SET_POWER_MODE's mode (the ground has no board; ``check_command``
without its ``power_modes`` takes any name) is refused by the agent when its SCHEDULE_AT arrives, after those
before it have gone up.
An ``after_s`` is counted from when its SCHEDULE_AT is sent (found in audit: from when the file was read,
so the confirmation's question ate into it); still SCHEDULE_AT, so a two-person rule on it holds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flight import toml_text
from flight.agent.schedule import CommandRefused, check_command
from flight.link.definitions import DICTIONARY
from flight.link.definitions import SCHEDULE_MAX_AHEAD_S as MAX_AHEAD_S
from flight.link.dictionary import ArgumentError, Dictionary

MAX_ENTRIES = 256  # the on-board schedule's capacity
MAX_FILE_BYTES = 1 << 20  # 256 entries of a few hundred bytes each, many times over
_KEYS = {"at", "at_unix_s", "after_s", "command", "args"}


class ScheduleFileError(ValueError):
    """A schedule file that cannot go up; the message names the entry and key."""


@dataclass(frozen=True)
class TimeTag:
    release_unix_s: float  # as of the file's reading (after_s: its order among the others)
    command: str
    args: dict[str, Any]
    entry: int = 0  # its place in the file (entry[K]): messages name it so, whatever the release order
    delay_s: float | None = None  # after_s: counted from when it is sent

    def scheduler_args(self, now_unix_s: float | None = None) -> dict[str, Any]:
        """SCHEDULE_AT's arguments for this entry; an ``after_s`` one released ``delay_s`` after ``now_unix_s``
        (when it is sent; None: the file's reading)."""
        release = self.release_unix_s if self.delay_s is None or now_unix_s is None else now_unix_s + self.delay_s
        return {"release_unix_s": release, "command": self.command,
                "args": json.dumps(self.args, separators=(",", ":"))}


def parse_schedule(text: str, now_unix_s: float, source: str = "(schedule)",
                   dictionary: Dictionary = DICTIONARY) -> list[TimeTag]:
    """The time tags of a schedule file, in release order; :class:`ScheduleFileError` otherwise."""
    def fail(where: str, why: str) -> ScheduleFileError:
        return ScheduleFileError(f"{source}: {where}: {why}")

    try:
        raw = toml_text.loads(text)
    except toml_text.TOMLDecodeError as exc:  # an integer past 4300 digits too (found in audit: a traceback)
        raise ScheduleFileError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"entry"})
    if unknown:
        raise fail(unknown[0], "unknown key; a schedule file is [[entry]] tables only")
    entries = raw.get("entry", [])
    if not isinstance(entries, list) or not entries:
        raise fail("entry", "no [[entry]] tables")
    if len(entries) > MAX_ENTRIES:
        raise fail("entry", f"{len(entries)} entries; the on-board schedule holds {MAX_ENTRIES}")
    tags = []
    seen: dict[tuple, int] = {}  # (when, command, its arguments) -> the first entry that gave it
    for k, entry in enumerate(entries):
        where = f"entry[{k}]"
        if not isinstance(entry, dict):
            raise fail(where, "must be a table")
        extra = sorted(set(entry) - _KEYS)
        if extra:
            raise fail(f"{where}.{extra[0]}", f"unknown key; an entry takes {', '.join(sorted(_KEYS))}")
        given = [key for key in ("at", "at_unix_s", "after_s") if key in entry]
        if len(given) != 1:
            raise fail(where, "give exactly one of at (UTC text), at_unix_s or after_s")
        key = given[0]
        value = entry[key]
        if key == "at":
            if isinstance(value, datetime):
                if value.tzinfo is None:
                    raise fail(f"{where}.at", "a time without a zone; write it in UTC with a Z")
                release = value.timestamp()
            elif isinstance(value, str):
                try:
                    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise fail(f"{where}.at", f"{value[:40]!r} is not an ISO 8601 time") from None
                if stamp.tzinfo is None:
                    raise fail(f"{where}.at", "a time without a zone; write it in UTC with a Z")
                release = stamp.timestamp()
            else:
                raise fail(f"{where}.at", "a UTC time, e.g. \"2026-12-03T10:00:00Z\"")
        else:
            # a 400-digit integer raised OverflowError out of isfinite (found in audit: a traceback)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) > 1e15 \
                    or not math.isfinite(value):
                raise fail(f"{where}.{key}", f"a finite number of seconds, got {str(value)[:40]}")
            release = float(value) + (now_unix_s if key == "after_s" else 0.0)
            if key == "after_s" and value < 0:
                raise fail(f"{where}.after_s", "must not be negative")
        if release < now_unix_s:
            raise fail(f"{where}.{key}", f"{release - now_unix_s:.0f} s in the past")
        if release > now_unix_s + MAX_AHEAD_S:  # the agent's own horizon: refused there, after those before it
            raise fail(f"{where}.{key}", f"{(release - now_unix_s) / 86400:.1f} days ahead, at most "
                                         f"{MAX_AHEAD_S / 86400:.0f} (the board's horizon; milliseconds for seconds?)")
        name = entry.get("command")
        if not isinstance(name, str):
            raise fail(f"{where}.command", f"{str(name)[:40]!r} is not a dictionary command")
        try:  # in any case, as the console and `send` take it (found in audit: "set_mode" refused, no hint)
            name = dictionary.command(name).name
        except ArgumentError as exc:
            raise fail(f"{where}.command", f"{str(name)[:40]!r} is not a dictionary command ({exc})") from None
        if name.startswith(("SCHEDULE_", "SEQUENCE_")):
            raise fail(f"{where}.command", f"{name} manages the schedule itself: send it directly")
        args = entry.get("args", {})
        if not isinstance(args, dict):
            raise fail(f"{where}.args", "a table of the command's arguments")
        try:  # the board's own check (found in audit: a SET_PARAM value the board refuses went up after those
            name, checked = check_command(dictionary, name, args)  # before it, half a schedule on board)
        except CommandRefused as exc:
            raise fail(f"{where}.{exc.field}", exc.reason) from None
        tag = TimeTag(release, name, checked, k, float(value) if key == "after_s" else None)
        try:  # what goes up is one SCHEDULE_AT: checked as it will be sent
            dictionary.command("SCHEDULE_AT").validate_args(tag.scheduler_args())
        except ArgumentError as exc:
            raise fail(where, f"as SCHEDULE_AT: {exc}") from None
        # the same command at the same moment twice is an entry pasted twice: both went up, to run twice on board
        # (found in audit)
        same = (key == "after_s", tag.delay_s if key == "after_s" else release, name,
                json.dumps(checked, sort_keys=True))
        if same in seen:
            raise fail(where, f"the same {name} at the same time as entry[{seen[same]}]: it would run twice; "
                              "remove one")
        seen[same] = k
        tags.append(tag)
    return sorted(tags, key=lambda t: t.release_unix_s)
