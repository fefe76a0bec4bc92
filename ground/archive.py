"""The ground archive: every packet the ground receives, and what it meant, in one SQLite file.

No server: stdlib :mod:`sqlite3` on one file (``var/ground.sqlite`` by default), in WAL mode so
a console can write while ``sunlit-ground archive ...`` or a web page reads. What it keeps:

- ``packets``: every packet as received, bytes included, with its header fields; a packet that
  failed its checks is kept too, ``valid = 0`` with the error (bad input is data, not a crash);
- ``samples``: one row per channel per housekeeping packet: packet time, channel (a small id
  from ``channels``), value. Numbers and booleans are REAL, everything else TEXT; a nil value
  ("not available now") and a NaN are both NULL, and come back from :meth:`Archive.query` as NaN;
- ``events``, ``verifications`` (PUS 1 reports), ``commands`` (who sent what, when, and how
  it ended), ``gaps`` (packets missing from a source's sequence);
- ``limit_overrides`` (limits the operator changed at run time, so they survive a restart)
  and ``alarm_acks``.

Times: telemetry (samples, events, packets) is indexed by *packet time*, the agent's clock as
stamped in the packet (simulated time under lockstep HIL); ``received_s``, command ``sent_s``
and acknowledgements are the ground's clock. Every time is Unix seconds (UTC).

Why the table shapes: ``samples`` is ``WITHOUT ROWID`` with primary key (channel, time_s, packet):
the rows of one channel lie together in time order, so one channel over a day at 1 Hz
(86 400 rows out of millions) is a single range scan, and there is no second B-tree for an
index. ``packet`` in the key keeps two packets with the same time stamp (a repeat, a restarted
source) from overwriting each other.

Durability: ``synchronous = NORMAL`` in WAL mode survives a crash of this process; a power cut
may lose the last commits (an fsync per commit would cap intake far below the link's rate).
The schema version is ``PRAGMA user_version``; a newer file than this code knows is refused.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import math
import os
import sqlite3
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from flight.cli import jsonable

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary, Limits, Severity, ValueType
from flight.link.messages import Codec, EventRecord, HkRecord, ParamRecord, Stage, Verification
from flight.link.packets import PacketError, Service, Subtype, Telemetry, unpack

if TYPE_CHECKING:
    from ground.client import CommandResult, GroundClient, Received

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("var/ground.sqlite")

_NUMERIC_TYPES = frozenset({
    ValueType.BOOL, ValueType.U8, ValueType.U16, ValueType.U32, ValueType.U64,
    ValueType.I32, ValueType.I64, ValueType.F32, ValueType.F64,
})
_INTEGER_TYPES = _NUMERIC_TYPES - {ValueType.BOOL, ValueType.F32, ValueType.F64}
_STAGE_ORDER = {Stage.ACCEPTED.value: 1, Stage.STARTED.value: 2, Stage.COMPLETED.value: 3}

_SCHEMA = (
    """CREATE TABLE packets (
        id         INTEGER PRIMARY KEY,
        received_s REAL NOT NULL,
        apid       INTEGER,
        seq_count  INTEGER,
        service    INTEGER,
        subtype    INTEGER,
        time_s     REAL,               -- packet time; NULL where the header could not be read
        raw        BLOB NOT NULL,
        valid      INTEGER NOT NULL,
        error      TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX packets_by_time ON packets(time_s)",
    "CREATE INDEX packets_by_received ON packets(received_s)",
    "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE samples (
        channel INTEGER NOT NULL,
        time_s  REAL NOT NULL,
        packet  INTEGER NOT NULL,
        value,                          -- no affinity: REAL for numbers, TEXT otherwise, NULL for nil
        PRIMARY KEY (channel, time_s, packet)) WITHOUT ROWID""",
    """CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        packet   INTEGER,
        time_s   REAL NOT NULL,
        event_id INTEGER NOT NULL,
        name     TEXT NOT NULL,
        severity INTEGER NOT NULL,
        text     TEXT NOT NULL,
        args     TEXT NOT NULL)""",
    "CREATE INDEX events_by_time ON events(time_s)",
    """CREATE TABLE verifications (
        id         INTEGER PRIMARY KEY,
        packet     INTEGER,
        time_s     REAL,
        received_s REAL,
        cmd_id     INTEGER NOT NULL,      -- two's complement above 2**63 - 1 (see _to_i64)
        opcode     INTEGER NOT NULL,
        request_id INTEGER NOT NULL,
        stage      TEXT NOT NULL,
        success    INTEGER NOT NULL,
        code       TEXT NOT NULL,
        reason     TEXT NOT NULL,
        result     TEXT NOT NULL,
        UNIQUE (cmd_id, request_id, stage, success))""",
    """CREATE TABLE commands (
        cmd_id       INTEGER PRIMARY KEY,
        name         TEXT NOT NULL,
        opcode       INTEGER,
        args         TEXT,                -- NULL: seen only in reports on the stream (another console)
        who          TEXT,
        sent_s       REAL,
        first_seen_s REAL NOT NULL,
        outcome      TEXT)""",
    """CREATE TABLE gaps (
        id         INTEGER PRIMARY KEY,
        packet     INTEGER NOT NULL,
        received_s REAL NOT NULL,
        time_s     REAL,
        apid       INTEGER NOT NULL,
        seq_count  INTEGER NOT NULL,
        missing    INTEGER NOT NULL)""",
    """CREATE TABLE limit_overrides (
        channel TEXT PRIMARY KEY,
        limits  TEXT NOT NULL,
        set_s   REAL NOT NULL,
        who     TEXT NOT NULL)""",
    """CREATE TABLE alarm_acks (
        id       INTEGER PRIMARY KEY,
        channel  TEXT NOT NULL,
        acked_s  REAL NOT NULL,
        who      TEXT NOT NULL,
        state    TEXT NOT NULL,
        value    TEXT)""",
    "CREATE INDEX alarm_acks_by_time ON alarm_acks(acked_s)",
)


class ArchiveError(RuntimeError):
    """The archive file cannot be used (missing, not an archive, a newer schema); says what to do."""


# --- value objects returned by queries ------------------------------------------------------


@dataclass(frozen=True)
class ArchivedEvent:
    time_s: float
    name: str
    severity: Severity
    text: str
    args: dict[str, Any]
    event_id: int


@dataclass(frozen=True)
class ArchivedReport:
    """One PUS 1 report as archived; ``time_s`` is None for a report handed over by the sender."""

    stage: str
    success: bool
    code: str
    reason: str
    result: dict[str, Any]
    time_s: float | None


@dataclass(frozen=True)
class ArchivedCommand:
    cmd_id: int
    name: str
    args: dict[str, Any] | None  # None: seen only through reports (sent by another console)
    who: str | None
    sent_s: float | None
    first_seen_s: float
    outcome: str  # 'completed', 'failed at <stage>: CODE reason', the last stage reached, or the sender's word
    final: bool
    reports: tuple[ArchivedReport, ...]


@dataclass(frozen=True)
class ArchivedAck:
    channel: str
    acked_s: float
    who: str
    state: str
    value: Any


# --- pure helpers ---------------------------------------------------------------------------


def _to_i64(n: int) -> int:
    """SQLite integers are signed 64-bit; a cmd_id from a hand-made packet may use all 64 bits."""
    return n - 2**64 if n >= 2**63 else n


def _from_i64(n: int) -> int:
    return n + 2**64 if n < 0 else n



def _json(value: Any) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"))


def _sql_value(value: Any) -> float | str | None:
    """REAL for numbers and booleans, TEXT for the rest; SQLite itself turns NaN into NULL."""
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, (bool, int)):
        return float(value)  # U64 counters beyond 2**53 lose their last digits, as REAL must
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return _json(value)


def utc_iso(time_s: float) -> str:
    return datetime.fromtimestamp(time_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bounds(from_s: float | None, to_s: float | None) -> tuple[float, float]:
    lo = -math.inf if from_s is None else float(from_s)
    hi = math.inf if to_s is None else float(to_s)
    if lo > hi:
        raise ValueError(f"time window runs backwards: from {lo} is after to {hi}")
    return lo, hi


def _severity(value: Severity | int | str) -> Severity:
    if isinstance(value, str):
        try:
            return Severity[value.strip().upper()]
        except KeyError:
            try:
                return Severity(int(value))
            except ValueError:
                raise ValueError(f"severity {value!r}: use one of {', '.join(s.name for s in Severity)}") from None
    return Severity(value)


def _event_text(rec: EventRecord) -> str:
    # Event.render catches a missing argument but not every bad value (None under a format
    # spec raises TypeError); a malformed event must still be archived.
    try:
        return rec.text
    except Exception:  # noqa: BLE001 - any rendering failure falls back to the raw format
        return f"{rec.event.format} {rec.args}"


@contextlib.contextmanager
def _replacing(path: Path | str, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it over: no half-written export."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- the archive ----------------------------------------------------------------------------


class Archive:
    """One archive file. Safe to share between threads (one connection behind a lock).

    ``Archive(path)`` creates the file (and its directory) if it does not exist; with
    ``create=False`` a missing file is an :class:`ArchiveError` (what the query commands want).
    Several processes may open one file: readers never wait (WAL); a writer waits up to
    ``busy_timeout_s`` for another writer's transaction, then gets ``sqlite3.OperationalError``.
    """

    def __init__(self, path: Path | str = DEFAULT_PATH, dictionary: Dictionary = DICTIONARY, create: bool = True,
                 busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.dictionary = dictionary
        if not create and not self.path.exists():
            raise ArchiveError(f"no archive at {self.path}; give --db PATH of an archive a console has written")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._recorders: weakref.WeakSet[ArchiveRecorder] = weakref.WeakSet()
        self._channel_ids: dict[str, int] = {}  # name -> id, a cache of the channels table
        # isolation_level=None: no implicit transactions; _write() opens and closes them.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_s)
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ArchiveError(f"{self.path} is not a usable archive: {exc}") from None
        except BaseException:
            self._db.close()
            raise
        self._channel_ids.update(self._db.execute("SELECT name, id FROM channels"))

    def _open_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # new: create it under the write lock, checking again (another process may be first)
            with self._write():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                        raise ArchiveError(f"{self.path} is an SQLite file but not a Sunlit archive; give another --db")
                    for statement in _SCHEMA:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise ArchiveError(
                f"{self.path} has archive schema {version}, newer than this ground software's {SCHEMA_VERSION}; "
                "open it with a newer sunlit-ground"
            )
        # Older versions would migrate here, one step at a time, under the write lock; there are none yet.

    # --- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, or part of the enclosing one (see :meth:`batch`)."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")  # the write lock now, so busy waits happen here
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                    self._channel_ids.clear()  # ids inserted in the rolled-back transaction are gone
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group writes into one transaction: ``with archive.batch(): archive.record(...)``.

        Each :meth:`record` outside a batch is its own commit; inside, they commit together
        at the end, which is what makes bulk intake fast. Other threads wait for the batch.
        """
        return self._write()

    # --- recording ---------------------------------------------------------------------------

    def _channel_id(self, name: str) -> int:
        cid = self._channel_ids.get(name)
        if cid is None:
            self._db.execute("INSERT OR IGNORE INTO channels(name) VALUES (?)", (name,))
            cid = self._db.execute("SELECT id FROM channels WHERE name = ?", (name,)).fetchone()[0]
            self._channel_ids[name] = cid
        return cid

    def record(self, item: Received, received_s: float) -> int:
        """Archive one received packet and what it meant; return its packet row id.

        Never raises for what the packet holds: a packet the client could not decode is kept
        with ``valid = 0`` and its error (header fields filled in where they can be read), and
        a decoded record this code cannot store is kept as raw bytes with the reason. Raises
        only when the database itself fails (``sqlite3.Error``: disk full, locked too long).
        """
        packet = item.packet
        error = item.error
        if packet is None:
            try:  # the CRC and header may be fine and only the data malformed: keep what is readable
                header = unpack(bytes(item.raw))
            except (PacketError, ValueError, TypeError):
                header = None
            if not error:
                error = "not decoded"
        else:
            header = packet
        fields: tuple[Any, ...] = (None, None, None, None, None)
        if header is not None:
            fields = (header.apid, header.seq_count, header.service, header.subtype,
                      header.time_s if isinstance(header, Telemetry) else None)
        with self._write():
            cur = self._db.execute(
                "INSERT INTO packets(received_s, apid, seq_count, service, subtype, time_s, raw, valid, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (received_s, *fields, bytes(item.raw), int(packet is not None), error),
            )
            packet_id = cur.lastrowid
            if packet is None:
                return packet_id
            try:
                self._record_meaning(item, packet_id, received_s)
            except (TypeError, ValueError, OverflowError, AttributeError, sqlite3.InterfaceError) as exc:
                self._db.execute("UPDATE packets SET error = ? WHERE id = ?",
                                 (f"archive could not store its content: {type(exc).__name__}: {exc}"[:400], packet_id))
        return packet_id

    def _record_meaning(self, item: Received, packet_id: int, received_s: float) -> None:
        rec = item.record
        if isinstance(rec, HkRecord):
            t = rec.time_s
            rows = [(self._channel_id(name), t, packet_id, _sql_value(value)) for name, value in rec.values.items()]
            self._db.executemany("INSERT INTO samples(channel, time_s, packet, value) VALUES (?, ?, ?, ?)", rows)
        elif isinstance(rec, EventRecord):
            self._db.execute(
                "INSERT INTO events(packet, time_s, event_id, name, severity, text, args) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (packet_id, rec.time_s, rec.event.id, rec.event.name, int(rec.event.severity), _event_text(rec),
                 _json(rec.args)),
            )
        elif isinstance(rec, Verification):
            self._record_report(rec, packet_id, item.packet.time_s, received_s)
        if item.gap:
            self._db.execute(
                "INSERT INTO gaps(packet, received_s, time_s, apid, seq_count, missing) VALUES (?, ?, ?, ?, ?, ?)",
                (packet_id, received_s, item.packet.time_s, item.packet.apid, item.packet.seq_count, item.gap),
            )

    def _record_report(self, rep: Verification, packet_id: int | None, time_s: float | None,
                       received_s: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO verifications(packet, time_s, received_s, cmd_id, opcode, request_id, stage, "
            "success, code, reason, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (packet_id, time_s, received_s, _to_i64(rep.cmd_id), rep.opcode, rep.request_id, rep.stage.value,
             int(rep.success), rep.code.name, rep.reason, _json(rep.result)),
        )
        if rep.cmd_id == 0:  # the agent could not read who sent it: no command to file it under
            return
        command = self.dictionary.command_by_opcode.get(rep.opcode)
        name = command.name if command else f"opcode {rep.opcode:#06x}"
        # A report on the stream may be the first we hear of a command another console sent.
        self._db.execute(
            "INSERT OR IGNORE INTO commands(cmd_id, name, opcode, first_seen_s) VALUES (?, ?, ?, ?)",
            (_to_i64(rep.cmd_id), name, rep.opcode, received_s),
        )

    def record_command(
        self,
        name: str,
        args: dict[str, Any],
        cmd_id: int,
        who: str,
        sent_s: float,
        outcome: str = "",
        reports: Iterable[Verification] = (),
    ) -> None:
        """File a command this console sent: who, when (ground clock), arguments, outcome, reports.

        May come before or after its reports arrive on the stream; both end up on one row.
        """
        command = self.dictionary.command_by_name.get(name)
        with self._write():
            self._db.execute(
                "INSERT INTO commands(cmd_id, name, opcode, args, who, sent_s, first_seen_s, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cmd_id) DO UPDATE SET name = excluded.name, "
                "opcode = excluded.opcode, args = excluded.args, who = excluded.who, sent_s = excluded.sent_s, "
                "first_seen_s = min(first_seen_s, excluded.first_seen_s), outcome = excluded.outcome",
                (_to_i64(cmd_id), name, command.opcode if command else None, _json(args), who, sent_s, sent_s,
                 outcome or None),
            )
            for rep in reports:
                self._record_report(rep, None, None, sent_s)

    def record_ack(self, channel: str, who: str, acked_s: float, state: str = "", value: Any = None) -> None:
        """File an operator's acknowledgement of an alarm on ``channel``."""
        with self._write():
            self._db.execute("INSERT INTO alarm_acks(channel, acked_s, who, state, value) VALUES (?, ?, ?, ?, ?)",
                             (channel, acked_s, who, state, _json(value)))

    # --- limits ------------------------------------------------------------------------------

    def set_limits(self, channel: str, limits: Limits, who: str = "operator", set_s: float | None = None) -> None:
        """Override a channel's limits, for good (until :meth:`clear_limits`)."""
        if channel not in self.dictionary.channel_by_name:
            raise KeyError(f"no channel {channel!r} in the dictionary")
        with self._write():
            self._db.execute(
                "INSERT INTO limit_overrides(channel, limits, set_s, who) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(channel) DO UPDATE SET limits = excluded.limits, set_s = excluded.set_s, who = excluded.who",
                (channel, _json(limits.to_json()), time.time() if set_s is None else set_s, who),
            )

    def clear_limits(self, channel: str) -> None:
        """Back to the dictionary's limits."""
        with self._write():
            self._db.execute("DELETE FROM limit_overrides WHERE channel = ?", (channel,))

    def limit_overrides(self) -> dict[str, Limits]:
        with self._lock:
            rows = self._db.execute("SELECT channel, limits FROM limit_overrides").fetchall()
        return {channel: Limits(**json.loads(text)) for channel, text in rows}

    def limits(self, channel: str) -> Limits:
        """The operator's override if there is one, else the dictionary's limits, those that
        follow a parameter taken from the agent's latest parameter report in the archive."""
        with self._lock:
            row = self._db.execute("SELECT limits FROM limit_overrides WHERE channel = ?", (channel,)).fetchone()
        if row is not None:
            return Limits(**json.loads(row[0]))
        ch = self.dictionary.channel_by_name.get(channel)
        if ch is None:
            raise KeyError(f"no channel {channel!r} in the dictionary")
        return self.dictionary.limits(channel, self.agent_parameters() if ch.limits.params() else None)

    def agent_parameters(self) -> dict[str, Any]:
        """The parameter values of the latest PUS 20 report archived (empty if none is)."""
        with self._lock:
            row = self._db.execute("SELECT raw FROM packets WHERE service = ? AND subtype = ? AND valid = 1 "
                                   "ORDER BY id DESC LIMIT 1", (Service.PARAMETER, Subtype.PARAM_REPORT)).fetchone()
        if row is None:
            return {}
        try:
            rec = Codec(self.dictionary).decode_tm(unpack(bytes(row[0])))
        except PacketError:
            return {}
        return rec.values if isinstance(rec, ParamRecord) else {}

    def limit_store(self) -> ArchiveLimitStore:
        """The overrides as a ``ground.alarms.LimitStore`` look-alike, for ``AlarmManager(limit_store=...)``."""
        return ArchiveLimitStore(self)

    # --- reading -----------------------------------------------------------------------------

    def channel_names(self) -> list[str]:
        """Channels that have samples in the archive, in the order first seen."""
        with self._lock:
            return [name for (name,) in self._db.execute("SELECT name FROM channels ORDER BY id")]

    def _is_numeric(self, name: str, values: Sequence[Any]) -> bool:
        ch = self.dictionary.channel_by_name.get(name)
        if ch is not None:
            return ch.type in _NUMERIC_TYPES
        return all(v is None or isinstance(v, float) for v in values)  # archived under another dictionary

    def query(self, channels: str | Iterable[str], from_s: float | None = None,
              to_s: float | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{channel: (times_s, values)}`` between ``from_s`` and ``to_s`` (packet time, inclusive).

        Times are float64 Unix seconds in time order. Values are float64 for numeric and
        boolean channels (NaN where the packet carried nil or NaN) and an object array of
        str/None otherwise. A channel the dictionary knows but the archive has no samples of
        gives empty arrays; a name neither knows is a KeyError.
        """
        names = [channels] if isinstance(channels, str) else list(channels)
        lo, hi = _bounds(from_s, to_s)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with self._lock:
            for name in names:
                row = self._db.execute("SELECT id FROM channels WHERE name = ?", (name,)).fetchone()
                if row is None:
                    if name not in self.dictionary.channel_by_name:
                        raise KeyError(f"no channel {name!r} in the archive or the dictionary")
                    rows: list[tuple[float, Any]] = []
                else:
                    rows = self._db.execute(
                        "SELECT time_s, value FROM samples WHERE channel = ? AND time_s BETWEEN ? AND ? "
                        "ORDER BY time_s, packet",
                        (row[0], lo, hi),
                    ).fetchall()
                out[name] = self._arrays(name, rows)
        return out

    def _arrays(self, name: str, rows: list[tuple[float, Any]]) -> tuple[np.ndarray, np.ndarray]:
        if not rows:
            numeric = self._is_numeric(name, ())
            return np.empty(0), np.empty(0, dtype=float if numeric else object)
        times = np.fromiter((r[0] for r in rows), dtype=float, count=len(rows))
        values = [r[1] for r in rows]
        if self._is_numeric(name, values) and all(v is None or isinstance(v, float) for v in values):
            return times, np.array(values, dtype=float)  # None becomes NaN
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return times, arr

    def _format_cell(self, name: str, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            ch = self.dictionary.channel_by_name.get(name)
            if ch is not None and (ch.type in _INTEGER_TYPES or ch.type is ValueType.BOOL) and value.is_integer():
                return str(int(value))
            return repr(value)
        return str(value)

    def export_csv(self, channels: str | Iterable[str], out_path: Path | str,
                   from_s: float | None = None, to_s: float | None = None) -> int:
        """Channels side by side, one row per packet time seen in any of them; return the rows.

        Columns: ``time_s`` (Unix seconds), ``time_utc`` (ISO 8601), then one per channel. A cell
        is empty where that channel has no value at that time (another packet's time, nil, NaN).
        If one channel has two values at the same time (a repeated packet), the later one wins.
        Integer and boolean channels are written as integers, floats with full precision.
        """
        names = [channels] if isinstance(channels, str) else list(channels)
        data = self.query(names, from_s, to_s)
        all_times = np.unique(np.concatenate([t for t, _ in data.values()])) if names else np.empty(0)
        columns = []
        for name in names:
            times, values = data[name]
            column = np.full(len(all_times), "", dtype=object)
            column[np.searchsorted(all_times, times)] = [self._format_cell(name, v) for v in values.tolist()]
            columns.append(column)
        with _replacing(out_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["time_s", "time_utc", *names])
            for i, t in enumerate(all_times.tolist()):
                writer.writerow([repr(t), utc_iso(t), *(c[i] for c in columns)])
        return len(all_times)

    def _packet_rows(self, from_s: float | None, to_s: float | None, valid_only: bool) -> list[tuple[bytes, int, str]]:
        lo, hi = _bounds(from_s, to_s)
        where = "((time_s BETWEEN ? AND ?) OR (time_s IS NULL AND received_s BETWEEN ? AND ?))"
        if valid_only:
            where += " AND valid = 1"
        with self._lock:
            return self._db.execute(f"SELECT raw, valid, error FROM packets WHERE {where} ORDER BY id",
                                    (lo, hi, lo, hi)).fetchall()

    def export_raw(self, out_path: Path | str, from_s: float | None = None, to_s: float | None = None,
                   valid_only: bool = False) -> int:
        """Write the packets as received, one per line as hex, in order of reception; return the count.

        The format is what ``sunlit-flight packet decode --file`` reads: one packet per line,
        lowercase hex of its bytes, lines starting with ``#`` are comments (a header, and a note
        before each packet that was invalid when received, naming its error). The window is on
        packet time; a packet whose header was unreadable is placed by its received time.
        """
        rows = self._packet_rows(from_s, to_s, valid_only)
        with _replacing(out_path, "w", encoding="ascii") as f:
            f.write("# sunlit raw packets: one CCSDS/PUS packet per line as hex, in order of reception\n")
            f.write("# read with: sunlit-flight packet decode --file THIS_FILE\n")
            f.write(f"# from {self.path}, packet time {from_s} .. {to_s}, {len(rows)} packets, "
                    f"exported {utc_iso(time.time())}\n")
            for raw, valid, error in rows:
                if not valid:
                    f.write(f"# invalid when received: {' '.join(error.split())}\n")
                f.write(bytes(raw).hex())
                f.write("\n")
        return len(rows)

    def plot(self, channels: str | Iterable[str], out_png: Path | str,
             from_s: float | None = None, to_s: float | None = None) -> Path:
        """One panel per channel on a shared UTC time axis, limits drawn (warning orange, critical
        red); text and enum channels as steps between their values. Returns the PNG's path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = [channels] if isinstance(channels, str) else list(channels)
        if not names:
            raise ValueError("plot needs at least one channel")
        data = self.query(names, from_s, to_s)
        fig = Figure(figsize=(11, 1.2 + 2.0 * len(names)))
        FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global backend switch
        axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
        for ax, name in zip(axes, names):
            times, values = data[name]
            when = (times * 1000.0).astype("int64").astype("datetime64[ms]")
            ch = self.dictionary.channel_by_name.get(name)
            unit = f" [{ch.unit}]" if ch is not None and ch.unit else ""
            ax.set_ylabel(f"{name}{unit}", fontsize=8)
            if len(times) == 0:
                ax.text(0.5, 0.5, "no data in this window", transform=ax.transAxes, ha="center", va="center")
                continue
            if values.dtype == object:
                seen = (v for v in values.tolist() if v is not None)
                levels = list(dict.fromkeys([*(ch.choices if ch is not None else ()), *seen]))  # enum order first
                y = np.array([levels.index(v) if v is not None else np.nan for v in values.tolist()], dtype=float)
                ax.plot(when, y, drawstyle="steps-post", lw=1.2)
                ax.set_yticks(range(len(levels)), levels, fontsize=7)
            else:
                ax.plot(when, values, lw=1.0, marker="." if len(times) < 200 else None)
                try:
                    limits = self.limits(name)
                except KeyError:
                    limits = Limits()
                for bound, colour in (("warn_low", "orange"), ("warn_high", "orange"),
                                      ("crit_low", "red"), ("crit_high", "red")):
                    if getattr(limits, bound) is not None:
                        ax.axhline(getattr(limits, bound), color=colour, ls="--", lw=0.8)
            ax.grid(True, alpha=0.3)
        axes[-1].set_xlabel("packet time (UTC)")
        fig.autofmt_xdate()
        fig.tight_layout()
        out = Path(out_png)
        with _replacing(out, "wb") as f:
            fig.savefig(f, format="png", dpi=90)
        return out

    def events(self, from_s: float | None = None, to_s: float | None = None,
               min_severity: Severity | int | str = Severity.DIAGNOSTIC) -> list[ArchivedEvent]:
        """Events in packet-time order at or above ``min_severity`` (a Severity, its value or its name)."""
        lo, hi = _bounds(from_s, to_s)
        floor = _severity(min_severity)
        with self._lock:
            rows = self._db.execute(
                "SELECT time_s, name, severity, text, args, event_id FROM events "
                "WHERE time_s BETWEEN ? AND ? AND severity >= ? ORDER BY time_s, id",
                (lo, hi, int(floor)),
            ).fetchall()
        return [ArchivedEvent(t, name, Severity(sev), text, json.loads(args), eid)
                for t, name, sev, text, args, eid in rows]

    def commands(self, from_s: float | None = None, to_s: float | None = None,
                 name: str | None = None) -> list[ArchivedCommand]:
        """Commands sent (ground clock) or first seen between ``from_s`` and ``to_s``, oldest first."""
        lo, hi = _bounds(from_s, to_s)
        sql = ("SELECT cmd_id, name, args, who, sent_s, first_seen_s, outcome FROM commands "
               "WHERE coalesce(sent_s, first_seen_s) BETWEEN ? AND ?")
        params: list[Any] = [lo, hi]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY coalesce(sent_s, first_seen_s), cmd_id", params).fetchall()
            out = []
            for cmd_id, cname, args, who, sent_s, first_s, said in rows:
                reps = self._db.execute(
                    "SELECT stage, success, code, reason, result, time_s FROM verifications WHERE cmd_id = ? "
                    "ORDER BY id", (cmd_id,)).fetchall()
                reports = tuple(ArchivedReport(stage, bool(ok), code, reason, json.loads(result), t)
                                for stage, ok, code, reason, result, t in reps)
                outcome, final = _outcome(reports, said)
                out.append(ArchivedCommand(_from_i64(cmd_id), cname, None if args is None else json.loads(args), who,
                                           sent_s, first_s, outcome, final, reports))
        return out

    def acks(self, from_s: float | None = None, to_s: float | None = None) -> list[ArchivedAck]:
        """Alarm acknowledgements (ground clock), oldest first."""
        lo, hi = _bounds(from_s, to_s)
        with self._lock:
            rows = self._db.execute("SELECT channel, acked_s, who, state, value FROM alarm_acks "
                                    "WHERE acked_s BETWEEN ? AND ? ORDER BY acked_s, id", (lo, hi)).fetchall()
        return [ArchivedAck(ch, t, who, state, json.loads(value)) for ch, t, who, state, value in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table, and invalid packets: a quick look at what the archive holds."""
        with self._lock:
            out = {table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
                   for table in ("packets", "samples", "events", "commands", "verifications", "gaps")}
            out["invalid_packets"] = self._db.execute("SELECT count(*) FROM packets WHERE valid = 0").fetchone()[0]
        return out

    # --- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush every recorder still attached, then close the file. Safe to call twice."""
        for recorder in list(self._recorders):
            recorder.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _outcome(reports: Sequence[ArchivedReport], said: str | None) -> tuple[str, bool]:
    """The final word on a command: a failure, else completion, else the sender's word or the last stage."""
    fail = next((r for r in reports if not r.success), None)
    if fail is not None:
        return f"failed at {fail.stage}: {fail.code} {fail.reason}".rstrip(), True
    if any(r.stage == Stage.COMPLETED.value for r in reports):
        return Stage.COMPLETED.value, True
    if said:
        return said, False
    if reports:
        return max(reports, key=lambda r: _STAGE_ORDER.get(r.stage, 0)).stage, False
    return "unknown", False


class ArchiveLimitStore:
    """Limit overrides kept in the archive, shaped like ``ground.alarms.LimitStore``
    (``overrides`` and ``set``), so ``AlarmManager(limit_store=archive.limit_store())`` keeps
    the operator's limits across restarts in the same file as the telemetry."""

    def __init__(self, archive: Archive):
        self.archive = archive
        self.overrides: dict[str, Limits] = archive.limit_overrides()

    def set(self, channel: str, limits: Limits) -> None:
        self.archive.set_limits(channel, limits)
        self.overrides[channel] = limits


# --- the recorder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecorderStatistics:
    recorded: int
    pending: int
    dropped: int
    flushes: int
    errors: int
    last_error: str


class ArchiveRecorder:
    """Archives everything a :class:`~ground.client.GroundClient` receives, in batches.

    The client calls it for each packet (``client.listeners``); it only queues the packet with
    its received time, so intake never waits on the disk. A writer thread commits the queue
    when ``batch_packets`` are waiting or the oldest has waited ``max_delay_s``. :meth:`close`
    (or :meth:`flush`, or closing the archive, or the interpreter exiting) writes what is
    queued. A batch the database refuses (locked, disk full) stays queued and is retried every
    ``max_delay_s``; only beyond ``max_pending`` packets are the oldest dropped, and counted
    (``dropped``).
    """

    def __init__(self, archive: Archive, batch_packets: int = 500, max_delay_s: float = 0.5,
                 clock: Callable[[], float] = time.time, max_pending: int = 200_000):
        if batch_packets < 1 or max_delay_s <= 0:
            raise ValueError("batch_packets must be at least 1 and max_delay_s above 0")
        self.archive = archive
        self.batch_packets = batch_packets
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.max_pending = max_pending
        self.recorded = 0
        self.dropped = 0
        self.flushes = 0
        self.errors = 0
        self.last_error = ""
        self._failing = False
        self._pending: list[tuple[Received, float]] = []
        self._oldest_mono = 0.0
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._clients: list[GroundClient] = []
        self._thread = threading.Thread(target=self._run, name="archive-recorder", daemon=True)
        self._thread.start()
        archive._recorders.add(self)  # noqa: SLF001 - the archive flushes its recorders when closed
        atexit.register(self.close)

    def attach(self, client: GroundClient) -> ArchiveRecorder:
        """Archive every packet ``client`` takes in from now on."""
        client.listeners.append(self)
        self._clients.append(client)
        return self

    def __call__(self, item: Received) -> None:
        if self._closed:
            return
        received_s = self.clock()
        with self._queue_lock:
            if not self._pending:
                self._oldest_mono = time.monotonic()
            self._pending.append((item, received_s))
            full = len(self._pending) >= self.batch_packets
        if full:
            self._wake.set()

    def record_command(self, result: CommandResult, who: str) -> None:
        """File a command sent with ``client.send`` (its result, failed or not)."""
        self.archive.record_command(result.name, result.args, result.cmd_id, who, result.sent_at_s,
                                    result.outcome, result.reports)

    def _run(self) -> None:
        while not self._closed:
            with self._queue_lock:
                waited = time.monotonic() - self._oldest_mono if self._pending else 0.0
                due = len(self._pending) >= self.batch_packets or (self._pending and waited >= self.max_delay_s)
            if due:
                if self.flush() or not self._failing:
                    continue
                self._wake.wait(self.max_delay_s)  # the database refused: retry later, not in a spin
                self._wake.clear()
                continue
            self._wake.wait(self.max_delay_s - waited if self._pending else self.max_delay_s)
            self._wake.clear()

    def flush(self) -> int:
        """Write everything queued now, in one transaction; return how many packets were written."""
        with self._flush_lock:
            with self._queue_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                with self.archive.batch():
                    for item, received_s in batch:
                        self.archive.record(item, received_s)
            except Exception as exc:  # noqa: BLE001 - sqlite3.Error (locked, disk full) or a closed archive
                with self._queue_lock:
                    self._pending[:0] = batch  # back to the front, in order, for the next try
                    excess = len(self._pending) - self.max_pending
                    if excess > 0:
                        del self._pending[:excess]
                        self.dropped += excess
                if not self.errors or str(exc) != self.last_error:
                    print(f"archive: cannot write {len(batch)} packets, keeping them queued: {exc}", file=sys.stderr)
                self.errors += 1
                self.last_error = str(exc)
                self._failing = True
                return 0
            if self._failing:
                print(f"archive: writing again after {self.errors} failed attempt(s)", file=sys.stderr)
                self._failing = False
            self.recorded += len(batch)
            self.flushes += 1
            return len(batch)

    def statistics(self) -> RecorderStatistics:
        with self._queue_lock:
            pending = len(self._pending)
        return RecorderStatistics(self.recorded, pending, self.dropped, self.flushes, self.errors, self.last_error)

    def close(self) -> None:
        """Stop listening, stop the writer thread, write what is queued. Safe to call twice.

        If the database still refuses, the queued packets go to ``<db>.unwritten-<time>.hex``
        beside it (the raw export's format), and stderr says so.
        """
        if self._closed:
            return
        for client in self._clients:
            with contextlib.suppress(ValueError):
                client.listeners.remove(self)
        self._clients.clear()
        self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        if getattr(self.archive, "_db", None) is not None:
            self.flush()
        with self._queue_lock:
            left, self._pending = self._pending, []
        if left:
            self._spill(left)
        atexit.unregister(self.close)

    def _spill(self, items: list[tuple[Received, float]]) -> None:
        """The database refused to the end: keep the packets beside it, in the raw export's format."""
        path = self.archive.path.with_name(f"{self.archive.path.name}.unwritten-{int(self.clock())}.hex")
        try:
            with open(path, "a", encoding="ascii") as f:
                f.write(f"# sunlit raw packets the archive {self.archive.path} could not take ({self.last_error}); "
                        "one per line as hex, in order of reception\n")
                for item, received_s in items:
                    f.write(f"# received {utc_iso(received_s)}\n{bytes(item.raw).hex()}\n")
        except OSError as exc:
            print(f"archive: {len(items)} packets lost: cannot write {path} either: {exc}", file=sys.stderr)
            return
        print(f"archive: {len(items)} packets the database refused are in {path}", file=sys.stderr)
