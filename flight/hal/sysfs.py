"""Small sysfs readers shared by the backends: thermal zones and value files.

Everything takes a ``root`` so tests (and a board image mounted elsewhere) can point the
same code at a fake tree. Nothing here raises for one bad file: each reader returns what it
could read and a list of ``"what: why"`` strings for what it could not.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from flight.clock import backoff_s

# A reading outside this range is a sensor fault, not a temperature: nothing on a board that
# still runs is above 200 C (AGX Orin shuts down at 104.5 C, FACTS.md "Throttling").
PLAUSIBLE_TEMP_C = (-100.0, 200.0)

# What a Jetson zone of a powered-off domain reads (tegrastats shows e.g. "CV0@-256C" for the idle
# CV/DLA domains of an AGX Orin): no temperature, and no fault either. Only this exact value: any
# other reading outside PLAUSIBLE_TEMP_C is still a fault.
SENSOR_OFF_MILLIDEG = -256_000
SENSOR_OFF_C = SENSOR_OFF_MILLIDEG / 1000.0

_ZONE_RE = re.compile(r"thermal_zone(\d+)$")


def under(root: Path, path: str) -> Path:
    """``path`` (absolute, as on the board) inside ``root``."""
    return Path(root) / path.lstrip("/")


MAX_SYSFS_INT = 10 ** 12  # no sensor reads past this (in its milli-units); a value past it is garbage


def millidegrees_to_c(text: str) -> float:
    """sysfs temperature (integer millidegrees Celsius) to degrees C; ValueError if the text
    is empty, not an integer, or outside :data:`PLAUSIBLE_TEMP_C`."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("read empty")
    try:
        millideg = int(stripped)
    except ValueError:
        raise ValueError(f"not an integer: {stripped[:40]!r}") from None
    if abs(millideg) > MAX_SYSFS_INT:  # past float's range it raised OverflowError, and the whole read failed (an audit)
        raise ValueError(f"{stripped[:20]!r}...: past any sensor's range")
    temp_c = millideg / 1000.0
    low, high = PLAUSIBLE_TEMP_C
    if not low <= temp_c <= high:
        raise ValueError(f"{temp_c} C is outside the plausible {low}..{high} C (sensor off or faulty)")
    return temp_c


def read_int(path: Path) -> int:
    """An integer sysfs value; ValueError for an empty or non-integer file, OSError as raised."""
    text = path.read_text().strip()
    if not text:
        raise ValueError("read empty")
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text[:40]!r}") from None
    if abs(value) > MAX_SYSFS_INT:  # past float's range later: OverflowError out of the whole read (found in audit)
        raise ValueError(f"{text[:20]!r}...: past any sensor's range")
    return value


def describe_error(exc: BaseException) -> str:
    """Short reason for a failed read: 'read empty', 'permission denied', ..."""
    if isinstance(exc, UnicodeDecodeError):  # a ValueError, and no OSError: say what it is, not the codec's words
        return f"not text (byte {exc.object[exc.start:exc.start + 1].hex()} at {exc.start})"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def unique_key(existing: dict, key: str) -> str:
    """``key``, or ``key#2``, ``key#3``... if taken (two zones of one type on some PCs)."""
    if key not in existing:
        return key
    n = 2
    while f"{key}#{n}" in existing:
        n += 1
    return f"{key}#{n}"


def powered_off(text: str) -> bool:
    """Whether a zone's ``temp`` text is :data:`SENSOR_OFF_MILLIDEG`: its domain is powered off."""
    try:
        return int(text.strip()) == SENSOR_OFF_MILLIDEG
    except ValueError:
        return False


def read_thermal_zones(root: Path) -> tuple[dict[str, float], list[str], list[str]]:
    """Every ``/sys/class/thermal/thermal_zone*``: (temps_c by zone type, missing, zone types off).

    A zone whose ``temp`` reads empty or fails (tj-thermal on some Orin Nano/NX carrier
    boards, FACTS.md "Jetson interfaces") goes into ``missing`` with its path. A zone that
    reads :data:`SENSOR_OFF_MILLIDEG` goes into neither ``temps_c`` nor ``missing`` but into
    the third list: its domain is powered off, which a healthy board does (found in audit: the
    CV zones of an idle AGX Orin were missing sensors, SENSOR_MISSING for as long as it idled).
    """
    base = under(root, "/sys/class/thermal")
    zones = sorted(
        (int(m.group(1)), p) for p in base.glob("thermal_zone*") if (m := _ZONE_RE.search(p.name))
    )
    temps_c: dict[str, float] = {}
    missing: list[str] = []
    off: list[str] = []
    if not zones:
        missing.append(f"thermal zones: none under {base}")
    for _, zone_dir in zones:
        try:
            zone_type = (zone_dir / "type").read_text().strip() or zone_dir.name
        except (OSError, UnicodeDecodeError):  # bytes that are not text: one zone's name lost, not every sensor
            zone_type = zone_dir.name
        temp_path = zone_dir / "temp"
        try:
            text = temp_path.read_text()
            if powered_off(text):
                off.append(zone_type)
                continue
            temp_c = millidegrees_to_c(text)
        except (OSError, ValueError) as exc:
            missing.append(f"{zone_type}: {describe_error(exc)} ({temp_path})")
            continue
        temps_c[unique_key(temps_c, zone_type)] = temp_c
    return temps_c, missing, off


class ZonesOff:
    """Says each powered-off zone once, as a note: when it goes off (or is off at the first read), not at
    every read; a zone that reads a temperature again is said again the next time it goes off."""

    def __init__(self) -> None:
        self._off: frozenset[str] = frozenset()

    def notes(self, off: list[str]) -> list[str]:
        """The notes for this read's ``off`` (from :func:`read_thermal_zones`)."""
        new = [zone for zone in dict.fromkeys(off) if zone not in self._off]
        self._off = frozenset(off)
        return [f"{zone}: powered off (reads {SENSOR_OFF_C:g} C, as an idle domain does); no temperature until "
                "it powers on" for zone in new]


class SearchSchedule:
    """When a backend searches sysfs again (pure: times in, answers out).

    Paths found once go stale under a running agent (a driver bound again at another ``hwmonN``, a zone that
    probes late, a zone number given to another zone), and a glob at every read searches sysfs each tick forever.
    So: a search at the first read, ``max_s`` after each (a new sensor on a board without a profile), and
    ``first_s`` after trouble (a failed read, a sensor known and not found), doubling (``clock.backoff_s``) while
    trouble recurs within ``max_s``: a sensor that flaps or stays lost is searched for at most every ``max_s``.
    Trouble is told by sensor: one in trouble for the first time in ``max_s`` is searched for ``first_s`` after,
    whatever another lost for good has made the backoff (found in review: an expected zone a carrier never shows
    held every other sensor's recovery to the 64 s cap), and one that flaps is not new each time it fails."""

    def __init__(self, first_s: float, max_s: float):
        if not 0 < first_s <= max_s:
            raise ValueError(f"search backoff: need 0 < first_s <= max_s, got {first_s}, {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self.due_s: float | None = None  # None: never searched, due at once
        self.retries = 0  # searches after trouble in a row (capped: it only picks the doubling)
        self._asked = False  # trouble since the last search has already brought it forward
        self._last: dict[str, float] = {}  # each sensor (or problem) in trouble within max_s: when it last was

    def due(self, now_s: float) -> bool:
        return self.due_s is None or now_s >= self.due_s

    def searched(self, now_s: float) -> None:
        self.due_s = now_s + self.max_s
        self._asked = False

    def sample(self, now_s: float, trouble: Collection[str]) -> None:
        """What the read after the search (or without one) saw: the sensors (or problems) in trouble, which bring
        the next search forward."""
        if not trouble:
            return
        self._last = {key: t for key, t in self._last.items() if now_s - t < self.max_s}  # bounded: recent only
        fresh = any(key not in self._last for key in trouble)  # none of its trouble within max_s
        self._last.update(dict.fromkeys(trouble, now_s))
        if self._asked and not fresh:
            return
        if fresh:
            self.retries = 0  # new trouble: searched for quickly again
        wait_s = backoff_s(self.first_s, self.max_s, self.retries)
        self.due_s = now_s + wait_s if self.due_s is None else min(self.due_s, now_s + wait_s)
        self.retries = min(self.retries + 1, 64)
        self._asked = True
