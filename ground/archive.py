"""The ground archive: every packet the ground receives, and what it meant, in one SQLite file.

No server: stdlib :mod:`sqlite3` on one file (``var/ground.sqlite`` by default), in WAL mode so
a console can write while ``sunlit-ground archive ...`` or a web page reads. Every row carries
its spacecraft (a small id from the ``spacecraft`` table; :data:`DEFAULT_SPACECRAFT` where none
is named), and every query takes one. What it keeps:

- ``packets``: every packet as received, bytes included, with its header fields; a packet that
  failed its checks is kept too, ``valid = 0`` with the error (bad input is data, not a crash).
  Housekeeping packets land here first (``sid`` set: *unsealed*), so a commit is all it takes
  to keep them;
- ``hk_chunks``: housekeeping *sealed*. When a (spacecraft, SID) has ``chunk_packets``
  unsealed packets, or its oldest is ``chunk_age_s`` old (received time), they move in one
  transaction into one chunk row and leave ``packets``. A chunk holds two blobs, each with
  its CRC-32 (checked on every read, and by :meth:`Archive.check`):

  - ``vals``: packet times and each channel's values column-wise: numbers as float64,
    byte-shuffled (byte *k* of every value together) then zlib; text, enumerations, and any
    column holding a value that is not a number, as a msgpack list, zlib;
  - ``raw``: the packets byte for byte (byte-shuffled when their lengths allow, zlib), with
    their packet row ids and received times: the export is the same after sealing, and the
    header fields are in the bytes.

  A day at 1 Hz of one channel is then ~170 blob reads instead of 86 400 rows, and an
  AGENT_HK packet (116 bytes and 21 channels when this was measured) costs ~45 bytes of file instead of ~740;
- ``events``, ``verifications`` (PUS 1 reports), ``commands`` (who queued, approved and sent
  what, when, and how it ended), ``gaps`` (packets missing from a source's sequence);
- ``limit_overrides`` (limits the operator changed at run time, so they survive a restart)
  and ``alarm_acks``;
- ``packet_keys``: the key of every packet archived, (spacecraft, APID, sequence count, packet
  time in ms), so that each packet is archived once however often it arrives (the agent plays
  back what the ground did not acknowledge, and plays it again if the acknowledgement was lost;
  a restarted server no longer remembers what it had). A packet whose key is here is not
  recorded again (:meth:`Archive.record` returns None, ``duplicates`` counts it). Kept for
  ``key_horizon_days`` after the ground received the packet (7: far longer than the agent's store holds
  anything), by the ground's clock: a board whose clock fell back to 1970 sends keys that are "old" by
  packet time, and its store may play them back again (found in audit: such a key went at the next
  retention and its copy was archived twice);
- ``passes``: completeness per pass and APID (``ground.completeness``): when the pass began
  and ended (ground clock), the live packets' time span, packets received live, played back,
  duplicates dropped and sequence counts missing within the pass, as the ground server last
  counted them (:meth:`Archive.record_passes`, :meth:`Archive.passes`); a restarted server
  goes on with the last one (:meth:`Archive.last_pass`).

- ``file_transfers``: every file transfer (``ground.files``): who asked for it, which way,
  the agent's name and the ground's, size, SHA-256, class, how it ended and when
  (:meth:`Archive.record_file_transfer`, :meth:`Archive.file_transfers`); the PDUs themselves
  are not archived (CFDP is its own record). Kept under the ``commands`` retention.

The agent's energy plans (TM(140,1), :class:`~flight.link.messages.PlanRecord`) are not
housekeeping: each stays one row of ``packets`` as received (``service`` 140, ``subtype`` 1,
found through ``packets_by_kind``), decoded again when read (:meth:`Archive.latest_plan`,
:meth:`Archive.plans`), and ages out under their own retention kind, ``plans``. That needs no
table of its own, so schema 2 is unchanged and a file an older ground server wrote (which kept
these packets too, undecoded) gives its plans back the same way.

Times: telemetry (housekeeping, events, packets) is indexed by *packet time*, the agent's clock
as stamped in the packet (simulated time under lockstep HIL); ``received_s`` (a packet's, an
event's, a sealed chunk's newest: ``r_last``), command times and acknowledgements are the
ground's clock. Every time is Unix seconds (UTC).

Retention (:meth:`Archive.retain` with a :class:`RetentionPolicy`) deletes by age and by size
per kind of data and spacecraft, telemetry by when the ground received it (a board's clock may
be wrong); the file is ``auto_vacuum = INCREMENTAL`` so what is deleted is given back to the
file system.

Durability, honestly: WAL with ``synchronous = NORMAL``. A commit is in the WAL file when
``COMMIT`` returns, so a crash of this process (``kill -9`` included) loses only what was not
yet committed: with :class:`ArchiveRecorder` at most ``max_delay_s`` (0.5 s) of packets, and the
file reopens without a repair step. A power cut or kernel crash may also lose the last commits
since the WAL was last synced (at a checkpoint), because NORMAL does not fsync each commit (an
fsync per commit would cap intake far below the link's rate); the file stays consistent as long
as the disk honours fsync ordering. The recorder's batches are the exception: each commits with
``synchronous = FULL`` (``batch(durable=True)``: one fsync per batch), because the ground server
acknowledges to the agent's store, which then deletes them, only packets the archive has
committed, and a power cut must not take back a commit the agent has already acted on (found in
audit). What the agent still holds it plays back, so a packet lost before its commit comes again.

The schema version is ``PRAGMA user_version`` (2). A newer file than this code knows is
refused; a version-1 file (one row per sample) is refused with the command that converts it:
``sunlit-ground archive upgrade --db OLD --out NEW``. ``packet_keys`` and ``passes`` came later
within schema 2: they only add to it (a ground server that does not know them still reads and
writes the file, and ignores them), so a file without them gets them when it is opened, with
the keys of the packets of its last ``key_horizon_days`` (:meth:`Archive._add_key_tables`),
instead of a new version number and a conversion; ``packet_keys.received_s`` came later still, the
same way (:data:`_KEY_RECEIPTS`: a key an older ground server wrote, or one from before, has none and is
taken as received at the next retention, so it is kept for the horizon from then: never forgotten early).
``file_transfers`` came the same way
(:data:`_FILE_TABLES`): created with a new file, or when a file without it is opened; so did the
events' indexes by spacecraft and severity (:data:`_EVENT_INDEXES`, found in audit), and the
receptions of sealed chunks and events with their indexes (:data:`_RECEIPTS`, found in audit).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import heapq
import json
import math
import os
import re
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import weakref
import zlib
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import msgpack
import numpy as np

from flight.cli import jsonable
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary, HkPacket, Limits, Severity, ValueType
from flight.link.messages import Codec, EventRecord, HkRecord, ParamRecord, PlanRecord, Stage, Verification
from flight.link.packets import PacketError, Service, Subtype, Telemetry, unpack
from ground.completeness import HORIZON_S, MAX_KEYS, PassCounts, PassReport, packet_key

if TYPE_CHECKING:
    from ground.client import CommandResult, GroundClient, Received

SCHEMA_VERSION = 2
DEFAULT_PATH = Path("var/ground.sqlite")
DEFAULT_SPACECRAFT = "sunlit-1"
# 512 packets: a chunk of AGENT_HK is ~30 kB, a day at 1 Hz ~170 chunks; a query reads whole
# chunks, so much larger ones would make short windows slow and much smaller ones compress worse.
CHUNK_PACKETS = 512
# 600 s: a slow packet (one every 10 s) still leaves ``packets`` within minutes of arriving.
CHUNK_AGE_S = 600.0
SPACECRAFT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
# 7 days: the agent's store (64 MB) holds a day or two of packets, so nothing older comes again;
# ~20 bytes a key, a few MB a day.
KEY_HORIZON_DAYS = 7.0
# Samples one page of a windowed query reads at most (Archive.query_page): a day of one channel at 1 Hz is one
# page; a year is ~300, each read in a fraction of a second and a few MB, never the whole window at once.
PAGE_SAMPLES = 100_000
_PAGE_TOKEN = re.compile(r"^p1~([-+0-9a-fA-Fx.p]{1,40})~(\d{1,10})~(\d{1,19})$")
_ALL_ROWS = 2**63 - 1  # above every row id: "all those at that time were given"
# Rows one page of a listing (Archive.iter_events, iter_commands, iter_file_transfers; passes for iter_passes) reads:
# a few MB, each page a read of its own, so a long listing holds neither the whole window nor a snapshot of the file.
LIST_PAGE = 5000

_NUMERIC_TYPES = frozenset({
    ValueType.BOOL, ValueType.U8, ValueType.U16, ValueType.U32, ValueType.U64,
    ValueType.I32, ValueType.I64, ValueType.F32, ValueType.F64,
})
_INTEGER_TYPES = _NUMERIC_TYPES - {ValueType.BOOL, ValueType.F32, ValueType.F64}
_STAGE_ORDER = {Stage.ACCEPTED.value: 1, Stage.STARTED.value: 2, Stage.COMPLETED.value: 3}
_ROW_OVERHEAD_BYTES = 40  # retention's estimate of a row's cost beyond its text and blobs
_BLOB_VERSION = 1

_SCHEMA = (
    "CREATE TABLE spacecraft (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE packets (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: sealing empties this table, and
                                                       -- ids order packets by reception, sealed or not
        sc         INTEGER NOT NULL,
        received_s REAL NOT NULL,
        apid       INTEGER,
        seq_count  INTEGER,
        service    INTEGER,
        subtype    INTEGER,
        time_s     REAL,               -- packet time; NULL where the header could not be read
        sid        INTEGER,            -- an unsealed housekeeping packet's SID; NULL for every other packet
        valid      INTEGER NOT NULL,
        error      TEXT NOT NULL DEFAULT '',
        raw        BLOB NOT NULL)      -- last: reading the other columns never walks its overflow pages""",
    # Partial indexes: an unsealed housekeeping row touches one index, not three.
    "CREATE INDEX packets_unsealed ON packets(sc, sid, id) WHERE sid IS NOT NULL",
    "CREATE INDEX packets_by_time ON packets(sc, coalesce(time_s, received_s)) WHERE sid IS NULL",
    "CREATE INDEX packets_by_kind ON packets(sc, service, subtype, id) WHERE sid IS NULL",
    "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE sid_channels (           -- which housekeeping SIDs have carried which channels
        channel INTEGER NOT NULL,        -- columns in key order: SQLite 3.40's quick_check misreads the others
        sid     INTEGER NOT NULL,
        PRIMARY KEY (channel, sid)) WITHOUT ROWID""",
    """CREATE TABLE hk_chunks (
        id         INTEGER PRIMARY KEY,
        sc         INTEGER NOT NULL,
        sid        INTEGER NOT NULL,
        t_first    REAL NOT NULL,        -- packet time, lowest and highest in the chunk
        t_last     REAL NOT NULL,
        r_last     REAL,                 -- ground clock: its packets' newest reception, which retention ages it by;
                                         -- NULL (sealed before this column, see _RECEIPTS): read from raw as
                                         -- retention judges it (_fill_chunk_receptions), t_last until then
        n          INTEGER NOT NULL,     -- packets
        first_id   INTEGER NOT NULL,     -- their packet row ids (order of reception), lowest and highest
        last_id    INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,     -- length(vals) + length(raw)
        vals_crc   INTEGER NOT NULL,     -- zlib.crc32 of each blob
        raw_crc    INTEGER NOT NULL,
        vals       BLOB NOT NULL,        -- before raw: a query reads vals without walking raw's pages
        raw        BLOB NOT NULL)""",
    "CREATE INDEX hk_chunks_by_time ON hk_chunks(sc, sid, t_first, t_last)",
    """CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        sc       INTEGER NOT NULL,
        packet   INTEGER,
        time_s   REAL NOT NULL,
        event_id INTEGER NOT NULL,
        name     TEXT NOT NULL,
        severity INTEGER NOT NULL,
        text     TEXT NOT NULL,
        args     TEXT NOT NULL,
        received_s REAL)  -- ground clock, its packet's reception; NULL: written by an older ground server""",
    "CREATE INDEX events_by_time ON events(time_s)",
    """CREATE TABLE verifications (
        id         INTEGER PRIMARY KEY,
        sc         INTEGER NOT NULL,
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
        UNIQUE (sc, cmd_id, request_id, stage, success))""",
    """CREATE TABLE commands (
        id           INTEGER PRIMARY KEY,
        sc           INTEGER NOT NULL,
        cmd_id       INTEGER,             -- NULL until sent (queued, waiting for approval)
        queue_id,                         -- the server's queue entry; NULL for a command sent outside a queue
        name         TEXT NOT NULL,
        opcode       INTEGER,
        args         TEXT,                -- NULL: seen only in reports on the stream (another console)
        who          TEXT,
        approved_by  TEXT,
        state        TEXT,
        stages       TEXT,                -- JSON list of the queue's stages
        queued_s     REAL,
        sent_s       REAL,
        first_seen_s REAL NOT NULL,
        outcome      TEXT,
        UNIQUE (sc, cmd_id),
        UNIQUE (sc, queue_id))""",
    "CREATE INDEX commands_by_time ON commands(coalesce(sent_s, queued_s, first_seen_s))",
    """CREATE TABLE gaps (
        id         INTEGER PRIMARY KEY,
        sc         INTEGER NOT NULL,
        packet     INTEGER NOT NULL,
        received_s REAL NOT NULL,
        time_s     REAL,
        apid       INTEGER NOT NULL,
        seq_count  INTEGER NOT NULL,
        missing    INTEGER NOT NULL)""",
    """CREATE TABLE limit_overrides (
        sc      INTEGER NOT NULL,
        channel TEXT NOT NULL,
        limits  TEXT NOT NULL,
        set_s   REAL NOT NULL,
        who     TEXT NOT NULL,
        PRIMARY KEY (sc, channel))""",
    """CREATE TABLE alarm_acks (
        id       INTEGER PRIMARY KEY,
        sc       INTEGER NOT NULL,
        channel  TEXT NOT NULL,
        acked_s  REAL NOT NULL,
        who      TEXT NOT NULL,
        state    TEXT NOT NULL,
        value    TEXT)""",
    "CREATE INDEX alarm_acks_by_time ON alarm_acks(acked_s)",
)

# Added within schema 2 (see the module's docstring): created with a new file, or when a file
# without them is opened.
_KEY_TABLES = (
    """CREATE TABLE IF NOT EXISTS packet_keys (  -- one row per packet archived: each is archived once
        sc        INTEGER NOT NULL,
        apid      INTEGER NOT NULL,
        time_ms   INTEGER NOT NULL,      -- packet time, ms, rounded as the agent's store rounds it
        seq_count INTEGER NOT NULL,
        received_s REAL,                 -- ground clock, whole s, the key ages by it (see _KEY_RECEIPTS); NULL: written
                                         -- by an older ground server, taken as received at the next retention
        PRIMARY KEY (sc, apid, time_ms, seq_count)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS passes (       -- completeness per pass and APID (ground.completeness)
        sc          INTEGER NOT NULL,
        start_s     REAL NOT NULL,       -- ground clock: first packet of the pass received
        apid        INTEGER NOT NULL,
        end_s       REAL NOT NULL,       -- ground clock: last packet received (so far)
        first_ms    INTEGER,             -- packet time of the live packets received in it, lowest and highest
        last_ms     INTEGER,
        received    INTEGER NOT NULL,    -- new packets received live
        played_back INTEGER NOT NULL,    -- new packets taken out of playback containers
        duplicates  INTEGER NOT NULL,    -- copies dropped
        missing     INTEGER NOT NULL,    -- sequence counts missing within [first_ms, last_ms]
        PRIMARY KEY (sc, start_s, apid)) WITHOUT ROWID""",
)


# Added within schema 2 like the key tables: the indexes the event queries use (Archive.events: per
# spacecraft and severity level, newest first), created with a new file or when a file without them is
# opened. Found in audit: with events(time_s) alone, a query by spacecraft or severity read the whole
# table under the archive's lock.
_EVENT_INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_by_sc_severity ON events(sc, severity, time_s)",
    "CREATE INDEX IF NOT EXISTS events_by_severity ON events(severity, time_s)",
)
_EVENT_INDEX_NAMES = ("events_by_sc_severity", "events_by_severity")

# Added within schema 2 like the key tables: when the ground received its telemetry, which retention ages it by
# (found in audit: a sealed chunk kept only packet times, so the housekeeping of a board whose clock fell back to
# 1970 went at the first retention after sealing; and one dated far ahead was kept for ever). A file from before
# gets ``hk_chunks.r_last`` and ``events.received_s`` when opened (an earlier chunk's is read from its blob as
# retention judges it, an earlier event's is its packet's reception, else its time) and these indexes, which retention
# reads through.
_RECEIPTS = (
    "CREATE INDEX IF NOT EXISTS hk_chunks_by_received ON hk_chunks(sc, sid, coalesce(r_last, t_last), t_last)",
    "CREATE INDEX IF NOT EXISTS events_by_received ON events(sc, received_s, time_s)",
    "CREATE INDEX IF NOT EXISTS packets_by_received ON packets(sc, received_s, time_s) WHERE sid IS NULL",
)
_RECEIPT_INDEX_NAMES = ("hk_chunks_by_received", "events_by_received", "packets_by_received")
# Added within schema 2 like the receipts: when the ground received each packet whose key it keeps (whole seconds:
# an integer on disk), which the key ages by (found in audit: keys aged by packet time, so the key of a packet from a
# board whose clock fell back to 1970 went at the next retention and a playback of it was archived twice). A file
# from before gets the column when opened (NULL in its rows: see _retain_keys) and this index of the keys with none
# (empty once retention has filled them in; retention deletes by a walk of the spacecraft's keys, as it did by
# packet time: an index by reception would double what a key costs on disk).
_KEY_RECEIPTS = ("CREATE INDEX IF NOT EXISTS packet_keys_unreceived ON packet_keys(sc) WHERE received_s IS NULL",)
_KEY_RECEIPT_INDEX_NAMES = ("packet_keys_unreceived",)
# An event's reception where an older ground server left none: its packet's, else its own time.
_FILL_EVENTS_RECEIVED = ("UPDATE events SET received_s = coalesce((SELECT p.received_s FROM packets p "
                         "WHERE p.id = events.packet), time_s) WHERE received_s IS NULL")


def _key_received(received_s: float) -> float | None:
    """A key's reception as stored: whole seconds (SQLite keeps such a REAL as an integer), None where not finite."""
    return float(math.floor(received_s)) if math.isfinite(received_s) else None


def _aged(received: str, when: str) -> str:
    """SQL: telemetry old enough to go by age, given (the ground's cutoff, the spacecraft's): received before the
    first, and made before the second, its packet time taken as no later than its reception (nothing is made after
    it came: a clock far ahead ages by its reception; found in audit, a packet dated 2096 was kept for ever)."""
    return f"{received} < ? AND min({when}, {received}) < ?"

# Added within schema 2 like the key tables: file transfers (ground.files), one row per request.
_FILE_TABLES = (
    """CREATE TABLE IF NOT EXISTS file_transfers (
        sc          INTEGER NOT NULL,
        ref         TEXT NOT NULL,       -- the ground's id: out-N (put), get-N (get), in-SRC-SEQ (sent unasked)
        requested_s REAL NOT NULL,       -- ground clock; with ref, the key (ids start again with a new file area)
        direction   TEXT NOT NULL,       -- 'up' | 'down'
        who         TEXT NOT NULL,       -- '' for what the agent sent unasked
        remote_name TEXT NOT NULL,       -- the agent's name
        local_name  TEXT NOT NULL,       -- the ground's: downlink/..., or the file an operator put
        size        INTEGER,
        sha256      TEXT,
        cfdp_class  INTEGER NOT NULL,
        state       TEXT NOT NULL,       -- requested, queued, active, done, failed, cancelled
        outcome     TEXT NOT NULL,       -- the reason given with the state
        started_s   REAL,
        finished_s  REAL,
        restarts    INTEGER NOT NULL,
        transfer    TEXT,                -- the ground entity's transfer; a get's agent transfer in agent_transfer
        agent_transfer TEXT,
        PRIMARY KEY (sc, ref, requested_s))""",
    "CREATE INDEX IF NOT EXISTS file_transfers_by_time ON file_transfers(sc, requested_s)",
)


def _unwritable(path: Path) -> bool:
    """Nothing can write ``path``: it lies on a read-only mount, or no one has write permission on it."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
        return os.stat(path).st_mode & 0o222 == 0
    except OSError:
        return False


FULL_DISK_BYTES = 1 << 20  # less free than this where SQLite fails to open: the disk is full (its -shm is 32 KiB)


def _full_disk(path: Path, exc: sqlite3.Error) -> str:
    """What to say where SQLite could not open ``path`` for want of space ("database or disk is full", or "disk I/O
    error" making its -shm on a full disk); "" where that is not why. Found in audit: an archive whole on a full disk
    was said "not a usable archive: disk I/O error", as if damaged."""
    if "disk is full" not in str(exc) and "disk I/O error" not in str(exc):
        return ""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free >= FULL_DISK_BYTES:
        return ""
    return (f"{path} cannot be opened: the disk holding it is full ({free} bytes free in {path.parent}); free some "
            "space there and try again (the archive is as it was)")


class ArchiveError(RuntimeError):
    """The archive file cannot be used (missing, not an archive, another schema, a damaged
    chunk); says what to do."""


def check_spacecraft(name: Any, field_name: str = "spacecraft") -> str:
    """``name`` if it is a valid spacecraft id (``^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$``), else ValueError."""
    if not isinstance(name, str) or not SPACECRAFT_PATTERN.match(name):
        raise ValueError(f"{field_name} {name!r}: 1 to 32 of A-Z a-z 0-9 _ . -, starting with a letter or digit")
    return name


# --- value objects returned by queries ------------------------------------------------------


@dataclass(frozen=True)
class ArchivePage:
    """One page of a windowed query (:meth:`Archive.query_page`): ``channels`` as :meth:`Archive.query` gives them,
    from ``samples`` samples read. ``complete``: the window holds nothing after this page; else ``next`` is the
    token that asks for the following page and ``page_end_s`` the packet time this page ends at (the next page
    starts there: packets of one time may be split between two pages, never repeated)."""

    channels: dict[str, tuple[np.ndarray, np.ndarray]]
    samples: int
    complete: bool
    next: str | None
    page_end_s: float


def page_token(time_s: float, sid: int, packet_id: int) -> str:
    """The continuation token after a packet: its time (exact, as float.hex), SID and row id, the order pages
    follow; nothing in it needs quoting in a URL."""
    return f"p1~{float(time_s).hex().replace('+', '')}~{int(sid)}~{int(packet_id)}"


def parse_page_token(text: str, field_name: str = "next") -> tuple[float, int, int]:
    """(time_s, sid, packet_id) of a token :func:`page_token` made, or ValueError naming ``field_name``."""
    m = _PAGE_TOKEN.match(text) if isinstance(text, str) else None
    try:
        time_s = float.fromhex(m.group(1)) if m else math.nan
    except ValueError:
        time_s = math.nan
    if m is None or not math.isfinite(time_s) or int(m.group(2)) >= 2**31 or int(m.group(3)) >= _ALL_ROWS:
        raise ValueError(f"{field_name}: {str(text)[:60]!r} is not a page token; pass the previous answer's "
                         f"{field_name} as it is")
    return time_s, int(m.group(2)), int(m.group(3))


@dataclass(frozen=True)
class ArchivedEvent:
    time_s: float
    name: str
    severity: Severity
    text: str
    args: dict[str, Any]
    event_id: int
    spacecraft: str = DEFAULT_SPACECRAFT


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
    cmd_id: int | None  # None: queued, not sent (yet)
    name: str
    args: dict[str, Any] | None  # None: seen only through reports (sent by another console)
    who: str | None
    sent_s: float | None
    first_seen_s: float
    outcome: str  # 'completed', 'failed at <stage>: CODE reason', the last stage reached, or the sender's word
    final: bool
    reports: tuple[ArchivedReport, ...]
    spacecraft: str = DEFAULT_SPACECRAFT
    queue_id: Any = None
    approved_by: str | None = None
    state: str | None = None  # the server queue's state, as last recorded
    stages: tuple[dict[str, Any], ...] = ()
    queued_s: float | None = None


@dataclass(frozen=True)
class ArchivedPlan:
    """One energy plan as archived: the plan (its ``time_s`` the packet time) and when the
    ground received it (ground clock)."""

    plan: PlanRecord
    received_s: float
    spacecraft: str = DEFAULT_SPACECRAFT

    @property
    def time_s(self) -> float:
        return self.plan.time_s


@dataclass(frozen=True)
class ArchivedPass:
    """One pass as the archive holds it: reception from ``start_s`` to ``end_s`` (ground clock),
    the live packets' packet-time span (``first_s``, ``last_s``; None if only played-back ones
    came), and per APID what arrived, was dropped and is missing (``ground.completeness``)."""

    start_s: float
    end_s: float
    first_s: float | None
    last_s: float | None
    apids: tuple[tuple[int, PassCounts], ...]
    spacecraft: str = DEFAULT_SPACECRAFT

    @property
    def totals(self) -> PassCounts:
        return PassCounts.total(self.apids)

    def to_json(self) -> dict[str, Any]:
        t = self.totals
        return {"spacecraft": self.spacecraft, "start_s": self.start_s, "end_s": self.end_s,
                "first_s": self.first_s, "last_s": self.last_s, "received": t.received,
                "played_back": t.played_back, "duplicates": t.duplicates, "missing": t.missing,
                "apids": [{"apid": apid, "received": c.received, "played_back": c.played_back,
                           "duplicates": c.duplicates, "missing": c.missing} for apid, c in self.apids]}


@dataclass(frozen=True)
class ArchivedFileTransfer:
    """One file transfer as archived (``ground.files.FileRecord``'s fields); times are the ground's."""

    ref: str
    direction: str
    who: str
    remote_name: str
    local_name: str
    size: int | None
    sha256: str | None
    cfdp_class: int
    state: str
    outcome: str
    requested_s: float
    started_s: float | None
    finished_s: float | None
    restarts: int
    transfer: str | None
    agent_transfer: str | None
    spacecraft: str = DEFAULT_SPACECRAFT

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ArchivedAck:
    channel: str
    acked_s: float
    who: str
    state: str
    value: Any
    spacecraft: str = DEFAULT_SPACECRAFT


# --- retention ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """How long and how much of one kind of data to keep, per spacecraft. ``inf``: no limit."""

    max_age_days: float = math.inf
    max_mb: float = math.inf

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # past a float's range (a whole number of 400 digits) is refused too, not an OverflowError (found in review)
            number = float(value) if isinstance(value, float) or (
                isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1023) else math.nan
            if math.isnan(number) or number < 0:
                shown = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:20]}... ({len(repr(value))} digits)"
                raise ValueError(f"{f.name} {shown}: a number of at least 0 (inf for no limit)")


_HK_DEFAULT = Retention(30.0, 512.0)
_OTHER_KINDS = ("events", "packets", "commands", "plans")
# A valid energy plan packet (TM(140,1)) among the rows of ``packets``: the ``plans`` kind of
# retention; every other row that is not housekeeping is the ``packets`` kind.
_PLAN_ROW = f"(valid = 1 AND service = {int(Service.POWER_PLAN)} AND subtype = {int(Subtype.PLAN_REPORT)})"


@dataclass(frozen=True)
class RetentionPolicy:
    """What :meth:`Archive.retain` keeps, per kind of data; each limit applies per spacecraft.

    Kinds: each housekeeping packet by name (``AGENT_HK``, ``POWER_HK``...; ``hk`` sets them all
    at once), ``events`` (the events table), ``packets`` (the raw rows of every packet that is
    not housekeeping nor a plan, and the gap records), ``commands`` (command history with its
    reports, and alarm acknowledgements: kept long) and ``plans`` (the agent's energy plans,
    TM(140,1): one every minute or two, each superseded within minutes, so a week by default,
    ~4 MB; the size limit bounds an agent that sends far more). Telemetry ages by its reception
    against the ground's clock, and by its packet time against the spacecraft's newest
    (:meth:`Archive.retain`); commands by the ground's clock. Size is the stored payload (blobs
    and text, plus ~40 bytes a row), which the file exceeds somewhat; over it, the telemetry
    received first goes first.
    """

    hk: Retention = _HK_DEFAULT
    events: Retention = Retention(365.0, 256.0)
    packets: Retention = Retention(90.0, 1024.0)
    commands: Retention = Retention(3650.0)
    plans: Retention = Retention(7.0, 64.0)
    per_packet: tuple[tuple[str, Retention], ...] = ()  # (HK packet name, its rule) overriding ``hk``

    def rule(self, kind: str) -> Retention:
        if kind in _OTHER_KINDS:
            return getattr(self, kind)
        return dict(self.per_packet).get(kind, self.hk)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], dictionary: Dictionary = DICTIONARY) -> RetentionPolicy:
        """From a TOML table: ``{"AGENT_HK": {"max_age_days": 7, "max_mb": 100}, "events": {...}}``.

        A key left out keeps the default; ``inf`` means no limit. An unknown kind or key, or a
        negative value, is a ValueError naming it.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"retention policy: a table of kinds, not {type(data).__name__}")
        kinds = ("hk", *_OTHER_KINDS, *(p.name for p in dictionary.packets))
        out: dict[str, Retention] = {}
        per_packet: dict[str, Retention] = {}
        # ``hk`` first: a packet named on its own starts from it, and changes only what it says.
        for kind, table in sorted(data.items(), key=lambda item: item[0] != "hk"):
            if kind not in kinds:
                raise ValueError(f"retention.{kind}: unknown kind; use one of {', '.join(kinds)}")
            if not isinstance(table, Mapping):
                raise ValueError(f"retention.{kind}: a table with max_age_days and/or max_mb")
            unknown = sorted(set(table) - {"max_age_days", "max_mb"})
            if unknown:
                raise ValueError(f"retention.{kind}.{unknown[0]}: unknown key; use max_age_days or max_mb")
            base = getattr(cls(), kind) if kind in _OTHER_KINDS else out.get("hk", _HK_DEFAULT)
            values = {"max_age_days": base.max_age_days, "max_mb": base.max_mb}
            for key, value in table.items():
                try:
                    Retention(**{key: value})
                except ValueError as exc:
                    raise ValueError(f"retention.{kind}.{exc}") from None
                values[key] = float(value)
            rule = Retention(**values)
            (out.__setitem__ if kind in ("hk", *_OTHER_KINDS) else per_packet.__setitem__)(kind, rule)
        # A packet not named follows ``hk``, also when only ``hk`` was given.
        return cls(**out, per_packet=tuple(sorted(per_packet.items())))


# --- pure helpers ---------------------------------------------------------------------------


def _to_i64(n: int) -> int:
    """SQLite integers are signed 64-bit; a cmd_id from a hand-made packet may use all 64 bits."""
    return n - 2**64 if n >= 2**63 else n


def _from_i64(n: int | None) -> int | None:
    return None if n is None else (n + 2**64 if n < 0 else n)


def _json(value: Any) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"))


def _cell(value: Any) -> float | str | None:
    """A value as a text/enum column keeps it: None and str as they are, numbers as float,
    bytes as hex, anything else as JSON text (what a hostile packet may hold)."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, (bool, int)):
        return float(value)  # U64 counters beyond 2**53 lose their last digits, as float64 must
    if isinstance(value, bytes):
        return value.hex()
    try:
        return _json(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)[:400]


def utc_iso(time_s: float) -> str:
    return datetime.fromtimestamp(time_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bounds(from_s: float | None, to_s: float | None) -> tuple[float, float]:
    lo = -math.inf if from_s is None else float(from_s)
    hi = math.inf if to_s is None else float(to_s)
    if lo > hi:
        raise ValueError(f"time window runs backwards: from {lo} is after to {hi}")
    return lo, hi


def _window_text(from_s: float | None, to_s: float | None) -> str:
    a = "the beginning" if from_s is None else utc_iso(from_s)
    b = "the end" if to_s is None else utc_iso(to_s)
    return f"{a} .. {b}"


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
    """Write to a temporary file beside ``path`` and rename it over: no half-written export. The file
    gets the mode the user's umask gives a new file (mkstemp's own is 600: an export is for sharing)."""
    path = Path(path)
    if path.is_dir():  # else the rename's error would name the temporary file
        raise ArchiveError(f"{path}: a folder; give the name of the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- chunk blobs (pure) ---------------------------------------------------------------------
#
# A blob is: u32 little-endian header length, a msgpack header (with "sizes", the length of
# each segment), then the segments back to back. Numbers are byte-shuffled before zlib: the
# sign/exponent bytes of slowly varying values repeat, and zlib finds them once they are
# together (the idea of Blosc's and HDF5's shuffle filters).

_ZLIB_LEVEL = 6


def _shuffle_zip(a: np.ndarray, dtype: str) -> bytes:
    b = np.ascontiguousarray(a, dtype=dtype)
    return zlib.compress(b.view(np.uint8).reshape(-1, b.itemsize).T.tobytes(), _ZLIB_LEVEL)


def _unshuffle_unzip(data: bytes | memoryview, dtype: str, n: int) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    b = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
    if b.size != width * n:
        raise ValueError(f"column of {b.size} bytes, expected {width * n}")
    return b.reshape(width, n).T.copy().view(dtype).ravel()


def _pack_blob(header: dict[str, Any], segments: Sequence[bytes]) -> bytes:
    header = {**header, "v": _BLOB_VERSION, "sizes": [len(s) for s in segments]}
    head = msgpack.packb(header, use_bin_type=True)
    return b"".join((struct.pack("<I", len(head)), head, *segments))


def _unpack_blob(blob: bytes) -> tuple[dict[str, Any], list[memoryview]]:
    view = memoryview(blob)
    (head_len,) = struct.unpack_from("<I", view, 0)
    header = msgpack.unpackb(view[4:4 + head_len], raw=False, strict_map_key=False)
    if not isinstance(header, dict) or header.get("v") != _BLOB_VERSION:
        raise ValueError(f"blob header {str(header)[:80]} is not version {_BLOB_VERSION}")
    segments, at = [], 4 + head_len
    for size in header["sizes"]:
        segments.append(view[at:at + size])
        at += size
    if at != len(view):
        raise ValueError(f"blob of {len(view)} bytes, its header accounts for {at}")
    return header, segments


def _columns(channels: Sequence[str], kinds: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[np.ndarray]:
    """Rows of values (wire order) → one array per channel: float64 where every value is a
    number or nil (nil → NaN), else an object array of :func:`_cell` values."""
    out = []
    for j, kind in enumerate(kinds):
        col = [r[j] for r in rows]
        if kind == "f8":
            try:
                if all(v is None or (type(v) in (float, int, bool)) for v in col):
                    out.append(np.array([math.nan if v is None else float(v) for v in col], dtype=float))
                    continue
            except OverflowError:  # an int beyond float64 (not from msgpack, but never crash)
                pass
        arr = np.empty(len(col), dtype=object)
        arr[:] = [_cell(v) for v in col]
        out.append(arr)
    return out


def _pack_values(channels: Sequence[str], times: np.ndarray, columns: Sequence[np.ndarray]) -> bytes:
    kinds, segments = [], [_shuffle_zip(times, "<f8")]
    for col in columns:
        if col.dtype == object:
            kinds.append("obj")
            segments.append(zlib.compress(msgpack.packb(col.tolist(), use_bin_type=True), _ZLIB_LEVEL))
        else:
            kinds.append("f8")
            segments.append(_shuffle_zip(col, "<f8"))
    return _pack_blob({"n": len(times), "channels": list(channels), "kinds": kinds}, segments)


def _pack_raw(ids: Sequence[int], received_s: Sequence[float], raws: Sequence[bytes]) -> bytes:
    n = len(raws)
    lengths = np.array([len(r) for r in raws], dtype="<u4")
    width = int(lengths.max()) if n else 0
    # Byte-shuffled (byte k of every packet together) when padding to the longest costs little:
    # a housekeeping packet repeats its header and most values, byte for byte, column by column.
    if n and width * n <= 2 * int(lengths.sum()) + 1024:
        matrix = np.zeros((n, width), dtype=np.uint8)
        for i, r in enumerate(raws):
            matrix[i, :len(r)] = np.frombuffer(r, dtype=np.uint8)
        layout, body = "columns", zlib.compress(matrix.T.tobytes(), _ZLIB_LEVEL)
    else:
        layout, body = "rows", zlib.compress(b"".join(raws), _ZLIB_LEVEL)
    ids_a = np.asarray(ids, dtype="<i8")
    deltas = np.diff(ids_a, prepend=0)  # ids rise by small steps: deltas compress to almost nothing
    return _pack_blob({"n": n, "layout": layout, "width": width}, [
        _shuffle_zip(deltas, "<i8"), _shuffle_zip(np.asarray(received_s, dtype=float), "<f8"),
        zlib.compress(lengths.tobytes(), _ZLIB_LEVEL), body])


def _unpack_raw(blob: bytes) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    header, (ids_z, rec_z, len_z, body_z) = _unpack_blob(blob)
    n = int(header["n"])
    ids = np.cumsum(_unshuffle_unzip(ids_z, "<i8", n))
    received = _unshuffle_unzip(rec_z, "<f8", n)
    lengths = np.frombuffer(zlib.decompress(len_z), dtype="<u4")
    body = zlib.decompress(body_z)
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} packet lengths for {n} packets")
    raws: list[bytes] = []
    if header["layout"] == "columns":
        width = int(header["width"])
        if len(body) != width * n:
            raise ValueError(f"packet matrix of {len(body)} bytes, expected {width * n}")
        matrix = np.frombuffer(body, dtype=np.uint8).reshape(width, n).T
        raws = [matrix[i, :int(k)].tobytes() for i, k in enumerate(lengths)]
    else:
        if len(body) != int(lengths.sum()):
            raise ValueError(f"packets of {len(body)} bytes, lengths say {int(lengths.sum())}")
        at = 0
        for k in lengths.tolist():
            raws.append(body[at:at + k])
            at += k
    return ids, received, raws


def decimate(times: np.ndarray, values: np.ndarray, max_points: int,
             lo_s: float | None = None, hi_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of a time series, for a plot: the window is cut into
    ``max_points // 2`` buckets of equal time; numbers keep each bucket's minimum and maximum
    sample (in time order, with their own times), so a spike one sample wide survives; text
    keeps each bucket's first value and the samples where the value changes (only the first
    change in each bucket if that is still too many). NaN never wins a bucket; a bucket with
    nothing but NaN yields nothing. ``times`` must be sorted."""
    if max_points < 2:
        raise ValueError(f"max_points {max_points}: at least 2 (a minimum and a maximum)")
    n = len(times)
    if n <= max_points:
        return times, values
    lo = float(times[0]) if lo_s is None or not math.isfinite(lo_s) else float(lo_s)
    hi = float(times[-1]) if hi_s is None or not math.isfinite(hi_s) else float(hi_s)
    n_buckets = max_points // 2
    width = (hi - lo) / n_buckets
    if width > 0:
        bucket = np.clip(((times - lo) / width).astype(np.int64), 0, n_buckets - 1)
    else:
        bucket = np.zeros(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    counts = np.diff(np.r_[starts, n])
    which = np.repeat(np.arange(len(starts)), counts)  # the bucket (by rank) of every sample
    if values.dtype != object:
        picks = []
        for reduce in (np.fmin, np.fmax):
            extreme = np.repeat(reduce.reduceat(values, starts), counts)
            hit = np.flatnonzero(values == extreme)  # NaN never equals: an all-NaN bucket has no hit
            first = np.r_[True, which[hit][1:] != which[hit][:-1]] if len(hit) else np.zeros(0, dtype=bool)
            picks.append(hit[first])
        keep = np.union1d(picks[0], picks[1])
    else:
        listed = values.tolist()
        changed = np.array([False] + [a != b for a, b in zip(listed[1:], listed[:-1])], dtype=bool)
        keep = np.union1d(starts, np.flatnonzero(changed))
        if len(keep) > max_points:
            hit = np.flatnonzero(changed)
            first = np.r_[True, which[hit][1:] != which[hit][:-1]] if len(hit) else np.zeros(0, dtype=bool)
            keep = np.union1d(starts, hit[first])
    return times[keep], values[keep]


def _concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two value columns end to end: float64 where both are, else an object array (text, odd values)."""
    if a.dtype != object and b.dtype != object:
        return np.concatenate([a, b])
    out = np.empty(len(a) + len(b), dtype=object)
    out[:] = a.tolist() + b.tolist()
    return out


class _PagePart:
    """One SID's packets for a page of :meth:`Archive.query_page` (pure): packet times, places in reception (a
    row id, or a sealed packet's stand-in), where each came from (its chunk, -1 unsealed; its row id, -1 not
    read), and per channel its values and whether the packet carries it. What comes is kept in pieces and cut
    to the first ``want`` once twice that many wait; ``bound``: the time of the ``want``-th packet at the last
    cut (no later packet can be among the first ``want``), inf until one."""

    def __init__(self, sid: int, names: Sequence[str]):
        self.sid = sid
        self.names = list(names)
        self.bound = math.inf
        self.t = np.empty(0)
        self.rank = np.empty(0, dtype=np.int64)
        self.chunk = np.empty(0, dtype=np.int64)
        self.row = np.empty(0, dtype=np.int64)
        self.vals: dict[str, np.ndarray] = {name: np.empty(0) for name in self.names}
        self.has: dict[str, np.ndarray] = {name: np.empty(0, dtype=bool) for name in self.names}
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray],
                                 dict[str, np.ndarray]]] = []
        self._waiting = 0

    def __len__(self) -> int:
        return len(self.t)

    def add(self, t: np.ndarray, rank: np.ndarray, chunk: int, rows: np.ndarray, cols: Mapping[str, np.ndarray],
            want: int) -> bool:
        """Take packets (``cols``: the columns they carry); True if some were dropped as beyond the first ``want``."""
        n = len(t)
        if not n:
            return False
        vals = {name: cols[name] if name in cols else np.full(n, math.nan) for name in self.names}
        has = {name: np.full(n, name in cols) for name in self.names}
        self._pieces.append((t, np.asarray(rank, dtype=np.int64), np.full(n, chunk, dtype=np.int64),
                             np.asarray(rows, dtype=np.int64), vals, has))
        self._waiting += n
        if len(self.t) + self._waiting >= 2 * want or (len(self.t) + self._waiting >= want
                                                        and math.isinf(self.bound)):
            return self.finish(want)
        return False

    def finish(self, want: int) -> bool:
        """Everything taken so far in (time, reception) order, cut to the first ``want``; True if any was dropped."""
        pieces = [(self.t, self.rank, self.chunk, self.row, self.vals, self.has), *self._pieces]
        self._pieces, self._waiting = [], 0
        t = np.concatenate([p[0] for p in pieces])
        rank = np.concatenate([p[1] for p in pieces])
        order = np.lexsort((rank, t))
        dropped = len(order) > want
        order = order[:want]
        self.t, self.rank = t[order], rank[order]
        self.chunk = np.concatenate([p[2] for p in pieces])[order]
        self.row = np.concatenate([p[3] for p in pieces])[order]
        for name in self.names:
            v = pieces[0][4][name]
            for piece in pieces[1:]:
                v = _concat(v, piece[4][name])
            self.vals[name] = v[order]
            self.has[name] = np.concatenate([p[5][name] for p in pieces])[order]
        if len(self.t) >= want:
            self.bound = float(self.t[-1])
        return dropped


# --- the archive ----------------------------------------------------------------------------


class Archive:
    """One archive file. Safe to share between threads (one connection behind a lock: calls
    run one at a time; :meth:`export_raw` and :meth:`check`, the long reads, use a read-only
    connection of their own and hold no lock while they read).

    ``Archive(path)`` creates the file (and its directory) if it does not exist; with
    ``create=False`` a missing or empty file is an :class:`ArchiveError` (what the query commands want).
    Several processes may open one file: readers never wait (WAL); a writer waits up to
    ``busy_timeout_s`` for another writer's transaction, then gets ``sqlite3.OperationalError``.
    ``chunk_packets`` and ``chunk_age_s`` say when housekeeping is sealed (see :meth:`seal`).
    """

    def __init__(self, path: Path | str = DEFAULT_PATH, dictionary: Dictionary = DICTIONARY, create: bool = True,
                 busy_timeout_s: float = 10.0, chunk_packets: int = CHUNK_PACKETS, chunk_age_s: float = CHUNK_AGE_S,
                 key_horizon_days: float = KEY_HORIZON_DAYS):
        if chunk_packets < 1 or not chunk_age_s >= 0:
            raise ValueError(f"chunk_packets {chunk_packets} must be at least 1 and chunk_age_s {chunk_age_s} at least 0")
        if not key_horizon_days > 0:
            raise ValueError(f"key_horizon_days {key_horizon_days} must be above 0")
        self.path = Path(path)
        self.dictionary = dictionary
        self.chunk_packets = int(chunk_packets)
        self.chunk_age_s = float(chunk_age_s)
        self.key_horizon_s = float(key_horizon_days) * 86_400.0
        self.duplicates = 0  # packets not recorded because their key was archived already (this process)
        self._key_tables = True  # False: an older file opened read-only, without packet_keys and passes
        self._file_table = True  # False: an older file opened read-only, without file_transfers
        self.keys_added = 0  # keys of packets archived before the key table existed, added when opened
        if not create and not self.path.exists():
            raise ArchiveError(f"no archive at {self.path}; give --db PATH of an archive the ground server has written")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._recorders: weakref.WeakSet[ArchiveRecorder] = weakref.WeakSet()
        self._codec = Codec(dictionary)
        self._kinds = {p.sid: tuple("f8" if dictionary.channel_by_name[c].type in _NUMERIC_TYPES else "obj"
                                    for c in p.channels) for p in dictionary.packets}
        # Caches of rows this connection has seen; cleared when a transaction rolls back.
        self._sc_ids: dict[str, int] = {}
        self._sc_names: dict[int, str] = {}
        self._sids_noted: set[int] = set()
        self._unsealed_hint: dict[tuple[int, int], int] = {}  # (sc, sid) -> rows recorded since last counted
        self._read_uri = f"{self.path.resolve().as_uri()}?mode=ro"  # what _reading() opens
        # isolation_level=None: no implicit transactions; _write() opens and closes them.
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_s)
            if not create:
                self._db = self._readable(self._db)
        except sqlite3.Error as exc:  # a folder, a file it may not open, a full disk
            raise ArchiveError(_full_disk(self.path, exc)
                               or f"{self.path} cannot be opened as an archive: {exc}") from None
        try:
            if not self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                if not create:  # a reader never makes an archive of an empty file (a typing error, a copy cut short)
                    raise ArchiveError(f"{self.path} is empty, not an archive the ground server has written; "
                                       "give --db PATH of one")
                # A new file: before any table and before WAL, or it cannot be changed any more.
                # Lets retain() give deleted space back to the file system.
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ArchiveError(_full_disk(self.path, exc) or f"{self.path} is not a usable archive: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def _readable(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """``db``, or where it cannot read the file, the file opened read-only as immutable: a WAL file needs its
        ``-shm`` beside it, which SQLite cannot make in a folder this process may not write (a read-only mount, a
        copy kept read-only: found in audit, every query said "attempt to write a readonly database").
        Immutable only with no ``-wal`` or ``-shm`` there: no writer has it open and nothing waits outside the file
        (SQLite would ignore a ``-wal``: those changes would be missing, so that is refused, saying what to do), and
        only where nothing can write the file: on a read-only mount, or with no write permission for anyone (found in
        review: a server starting under an immutable read overwrote pages beneath it, "malformed")."""
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as exc:  # a folder 555: "readonly"; a read-only mount: "unable to open"
            if ("readonly" not in str(exc) and "unable to open" not in str(exc)) or not os.access(self.path, os.R_OK):
                raise
        db.close()
        beside = [f"{self.path}{suffix}" for suffix in ("-wal", "-shm", "-journal")
                  if os.path.lexists(f"{self.path}{suffix}")]
        if beside or not _unwritable(self.path):
            why = (f"{', '.join(beside)} beside it" if beside else
                   "a server may still write it (immutable, SQLite would read it torn)")
            raise ArchiveError(f"{self.path} cannot be read here: {why} and SQLite may not write in "
                               f"{self.path.parent}; copy the file{' with them' if beside else ''} into a folder "
                               "you may write in, and give that --db")
        self._read_uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
        return sqlite3.connect(self._read_uri, uri=True, isolation_level=None, check_same_thread=False)

    def _open_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # new: create it under the write lock, checking again (another process may be first)
            with self._write():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                        raise ArchiveError(f"{self.path} is an SQLite file but not a Sunlit archive; give another --db")
                    for statement in (*_SCHEMA, *_KEY_TABLES, *_FILE_TABLES, *_EVENT_INDEXES, *_RECEIPTS,
                                      *_KEY_RECEIPTS):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise ArchiveError(
                f"{self.path} has archive schema {version}, newer than this ground software's {SCHEMA_VERSION}; "
                "open it with a newer sunlit-ground"
            )
        if version == 1:
            raise ArchiveError(
                f"{self.path} has archive schema 1 (one row per sample, no spacecraft); this ground software "
                f"reads schema {SCHEMA_VERSION}. Convert it into a new file (the old one is left as it is): "
                f"sunlit-ground archive upgrade --db {self.path} --out NEW.sqlite"
            )
        if version != SCHEMA_VERSION:
            raise ArchiveError(f"{self.path} has archive schema {version}, which this ground software does not know")
        if self._db.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('packet_keys', 'passes')"
                            ).fetchone()[0] < len(_KEY_TABLES):
            try:
                self._add_key_tables()
            except sqlite3.OperationalError as exc:  # a file this process may only read: read it as it is
                if "readonly" not in str(exc):
                    raise
                self._key_tables = False
        if self._db.execute(f"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                            f"({','.join('?' * len(_EVENT_INDEX_NAMES))})", _EVENT_INDEX_NAMES
                            ).fetchone()[0] < len(_EVENT_INDEX_NAMES):
            try:  # a file from before them: made once (seconds for millions of events), then found
                with self._write():
                    for statement in _EVENT_INDEXES:
                        self._db.execute(statement)
            except sqlite3.OperationalError as exc:  # read-only: its queries read more, and work
                if "readonly" not in str(exc):
                    raise
        self._upgrade_where_missing(_RECEIPT_INDEX_NAMES, self._add_receipts)
        if self._key_tables:
            self._upgrade_where_missing(_KEY_RECEIPT_INDEX_NAMES, self._add_key_receipts)
        if not self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'file_transfers'").fetchone()[0]:
            try:
                with self._write():
                    for statement in _FILE_TABLES:
                        self._db.execute(statement)
            except sqlite3.OperationalError as exc:  # read-only: no transfers to show
                if "readonly" not in str(exc):
                    raise
                self._file_table = False

    def _add_key_tables(self) -> None:
        """A schema-2 file from before ``packet_keys`` and ``passes``: add them (one transaction,
        checking again under the write lock: another process may be first), with the keys of
        the packets of the last ``key_horizon_s`` of packet time the file holds (those a
        playback could bring again): the unsealed rows, and the sealed chunks' packets, each with
        its reception, which it ages by from then on."""
        with self._write():
            if self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'packet_keys'").fetchone()[0]:
                for statement in _KEY_TABLES:
                    self._db.execute(statement)
                return
            for statement in _KEY_TABLES:
                self._db.execute(statement)
            newest = self._db.execute("SELECT max(t) FROM (SELECT max(time_s) AS t FROM packets UNION ALL "
                                      "SELECT max(t_last) FROM hk_chunks)").fetchone()[0]
            if newest is None:
                return
            since = min(newest, time.time()) - self.key_horizon_s  # a packet dated ahead moves nothing
            added = 0
            rows = self._db.execute("SELECT sc, apid, seq_count, time_s, received_s FROM packets WHERE time_s >= ? "
                                    "AND apid IS NOT NULL AND seq_count IS NOT NULL", (since,)).fetchall()
            for sc, apid, seq, time_s, received_s in rows:
                added += self._db.execute(
                    "INSERT OR IGNORE INTO packet_keys(sc, apid, time_ms, seq_count, received_s) "
                    "VALUES (?, ?, ?, ?, ?)", (sc, apid, packet_key(apid, seq, time_s)[2], seq,
                                               _key_received(received_s))).rowcount
            chunks = self._db.execute("SELECT id, sc, raw_crc, raw FROM hk_chunks WHERE t_last >= ?",
                                      (since,)).fetchall()
            for chunk_id, sc, crc, blob in chunks:
                try:
                    _ids, received, raws = self._chunk_raw(chunk_id, crc, bytes(blob))
                except ArchiveError:
                    continue  # damaged: `archive check` names it; its packets cannot come back as keys
                for raw, received_s in zip(raws, received.tolist()):
                    try:
                        tm = unpack(raw)
                    except PacketError:
                        continue
                    if isinstance(tm, Telemetry) and tm.time_s >= since:
                        added += self._db.execute(
                            "INSERT OR IGNORE INTO packet_keys(sc, apid, time_ms, seq_count, received_s) "
                            "VALUES (?, ?, ?, ?, ?)", (sc, tm.apid, packet_key(tm.apid, tm.seq_count, tm.time_s)[2],
                                                       tm.seq_count, _key_received(received_s))).rowcount
            self.keys_added = added

    def _upgrade_where_missing(self, index_names: tuple[str, ...], add: Callable[[], None]) -> None:
        """``add`` (an upgrade in place) where a file lacks one of the indexes it makes; a read-only file is read
        as it is (only retention and intake use what the upgrades add)."""
        have = self._db.execute(f"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                                f"({','.join('?' * len(index_names))})", index_names).fetchone()[0]
        if have >= len(index_names):
            return
        try:
            add()
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise

    def _add_key_receipts(self) -> None:
        """A schema-2 file from before keys kept their reception: the column (added at the end, so instant; NULL in
        the rows there, each taken as received at the next retention, :meth:`_retain_keys`) and its index; once,
        under the write lock, checking again (another process may be first)."""
        with self._write():
            if "received_s" not in {row[1] for row in self._db.execute("PRAGMA table_info(packet_keys)")}:
                self._db.execute("ALTER TABLE packet_keys ADD COLUMN received_s REAL")
            for statement in _KEY_RECEIPTS:
                self._db.execute(statement)

    def _add_receipts(self) -> None:
        """A schema-2 file from before receptions were kept per chunk and event: the columns (added at the end, so
        instant; a chunk's r_last left NULL, read from its blob when retention judges it), each event's reception,
        and the indexes; once, under the write lock, checking again (another process may be first)."""
        with self._write():
            for table, column in (("hk_chunks", "r_last"), ("events", "received_s")):
                if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} REAL")
            self._db.execute(_FILL_EVENTS_RECEIVED)
            for statement in _RECEIPTS:
                self._db.execute(statement)

    # --- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, or part of the enclosing one (see :meth:`batch`)."""
        with self._lock:
            if self._db is None:
                raise ArchiveError(f"archive {self.path} is closed")
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")  # the write lock now, so busy waits happen here
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    if self._db.in_transaction:  # SQLite rolls back itself on a full disk: ROLLBACK would then
                        self._db.execute("ROLLBACK")  # raise "no transaction is active" over the cause (an audit)
                    self._forget_caches()  # rows inserted in the rolled-back transaction are gone
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def _forget_caches(self) -> None:
        self._sc_ids.clear()
        self._sc_names.clear()
        self._sids_noted.clear()
        self._unsealed_hint.clear()

    def batch(self, durable: bool = False) -> contextlib.AbstractContextManager[None]:
        """Group writes into one transaction: ``with archive.batch(): archive.record(...)``.

        Each :meth:`record` outside a batch is its own commit; inside, they commit together
        at the end, which is what makes bulk intake fast. Other threads wait for the batch.
        ``durable``: the commit is synced to disk before this returns (``synchronous = FULL`` for
        this transaction alone), so a power cut cannot take it back: what the ground acknowledges
        to the agent's store, which then deletes it, depends on it (found in audit). Inside an
        enclosing batch the enclosing one's commit decides.
        """
        return self._durable_write() if durable else self._write()

    @contextlib.contextmanager
    def _durable_write(self) -> Iterator[None]:
        with self._lock:
            if self._db is None:
                raise ArchiveError(f"archive {self.path} is closed")
            if self._depth:
                with self._write():
                    yield
                return
            # WAL with FULL syncs the WAL at this commit (and so every commit before it); NORMAL,
            # kept for the rest, syncs only at checkpoints. One fsync per recorder batch (at most
            # about two a second) costs little; one per packet would not (see the module's docstring).
            self._db.execute("PRAGMA synchronous = FULL")
            try:
                with self._write():
                    yield
            finally:
                if self._db is not None:
                    self._db.execute("PRAGMA synchronous = NORMAL")

    # --- spacecraft --------------------------------------------------------------------------

    def _sc_id(self, name: str) -> int:
        """The spacecraft's id, created if new (inside a write transaction)."""
        sc = self._sc_ids.get(name)
        if sc is None:
            check_spacecraft(name)
            self._db.execute("INSERT OR IGNORE INTO spacecraft(name) VALUES (?)", (name,))
            sc = self._db.execute("SELECT id FROM spacecraft WHERE name = ?", (name,)).fetchone()[0]
            self._sc_ids[name] = sc
            self._sc_names[sc] = name
        return sc

    def _sc_lookup(self, name: str) -> int:
        """The spacecraft's id for reading; -1 (matches nothing) for one never seen."""
        sc = self._sc_ids.get(name)
        if sc is None:
            check_spacecraft(name)
            row = self._db.execute("SELECT id FROM spacecraft WHERE name = ?", (name,)).fetchone()
            if row is None:
                return -1
            sc = self._sc_ids[name] = row[0]
            self._sc_names[sc] = name
        return sc

    def _sc_name(self, sc: int) -> str:
        name = self._sc_names.get(sc)
        if name is None:
            row = self._db.execute("SELECT name FROM spacecraft WHERE id = ?", (sc,)).fetchone()
            name = row[0] if row else f"#{sc}"
            self._sc_names[sc] = name
        return name

    def spacecraft(self) -> list[str]:
        """Every spacecraft the archive has heard of, in the order first seen."""
        with self._lock:
            return [name for (name,) in self._db.execute("SELECT name FROM spacecraft ORDER BY id")]

    def next_queue_id(self, spacecraft: str = DEFAULT_SPACECRAFT) -> int:
        """One above the highest integer ``queue_id`` archived for ``spacecraft`` (1 if none):
        where a restarted server's queue should start numbering, so ids never repeat."""
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            row = self._db.execute("SELECT max(queue_id) FROM commands WHERE sc = ? AND typeof(queue_id) = 'integer'",
                                   (sc,)).fetchone()
        return (row[0] or 0) + 1

    # --- recording ---------------------------------------------------------------------------

    def _hk_layout(self, rec: HkRecord) -> HkPacket | None:
        """The archive dictionary's packet for this record, if it is laid out the same."""
        mine = self.dictionary.packet_by_sid.get(rec.packet.sid)
        if mine is None or (mine is not rec.packet and mine.channels != rec.packet.channels):
            return None
        return mine

    def _note_sid(self, packet: HkPacket) -> None:
        if packet.sid in self._sids_noted:
            return
        for name in packet.channels:
            self._db.execute("INSERT OR IGNORE INTO channels(name) VALUES (?)", (name,))
        self._db.execute(
            "INSERT OR IGNORE INTO sid_channels(sid, channel) SELECT ?, id FROM channels WHERE name IN "
            f"({','.join('?' * len(packet.channels))})", (packet.sid, *packet.channels))
        self._sids_noted.add(packet.sid)

    def record(self, item: Received, received_s: float, spacecraft: str = DEFAULT_SPACECRAFT) -> int | None:
        """Archive one received packet and what it meant; return its packet row id, or None if
        the archive has it already (its key, see ``packet_keys``: counted in ``duplicates``).

        Never raises for what the packet holds: a packet the client could not decode is kept
        with ``valid = 0`` and its error (header fields filled in where they can be read), and
        a decoded record this code cannot store is kept as raw bytes with the reason. Raises
        only when the database itself fails (``sqlite3.Error``: disk full, locked too long) or
        ``spacecraft`` is not a valid id (ValueError).

        A housekeeping packet goes in unsealed; once its (spacecraft, SID) has ``chunk_packets``
        of them, they are sealed here, in the same transaction (:meth:`seal` does the rest).
        """
        if spacecraft not in self._sc_ids:
            check_spacecraft(spacecraft)  # before the transaction: a bad name must not undo a whole batch
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
        fields_: tuple[Any, ...] = (None, None, None, None, None)
        if header is not None:
            fields_ = (header.apid, header.seq_count, header.service, header.subtype,
                       header.time_s if isinstance(header, Telemetry) else None)
        hk = None
        if packet is not None and isinstance(item.record, HkRecord):
            hk = self._hk_layout(item.record)
            if hk is None:
                error = (f"housekeeping SID {item.record.packet.sid} laid out otherwise than in this archive's "
                         "dictionary: kept as a raw packet only")
        with self._write():
            sc = self._sc_id(spacecraft)
            if isinstance(header, Telemetry):  # a packet whose header reads has a key, its data valid or not
                key = packet_key(header.apid, header.seq_count, header.time_s)
                if not self._db.execute("INSERT OR IGNORE INTO packet_keys(sc, apid, time_ms, seq_count, received_s) "
                                        "VALUES (?, ?, ?, ?, ?)",
                                        (sc, key[0], key[2], key[1], _key_received(received_s))).rowcount:
                    self.duplicates += 1
                    return None
            cur = self._db.execute(
                "INSERT INTO packets(sc, received_s, apid, seq_count, service, subtype, time_s, sid, valid, error, raw) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sc, received_s, *fields_, None if hk is None else hk.sid, int(packet is not None), error,
                 bytes(item.raw)),
            )
            packet_id = cur.lastrowid
            if packet is None:
                return packet_id
            if hk is not None:
                self._note_sid(hk)
            self._db.execute("SAVEPOINT meaning")
            try:
                self._record_meaning(item, packet_id, received_s, sc)
            except sqlite3.IntegrityError as exc:
                self._content_error(packet_id, exc)
            except sqlite3.DatabaseError:
                self._db.execute("ROLLBACK TO meaning")
                self._db.execute("RELEASE meaning")
                raise
            except Exception as exc:  # noqa: BLE001 - whatever a hostile packet makes of our code: keep it raw
                self._content_error(packet_id, exc)
            else:
                self._db.execute("RELEASE meaning")
            if hk is not None:
                key = (sc, hk.sid)
                hint = self._unsealed_hint.get(key, 0) + 1
                self._unsealed_hint[key] = hint
                if hint >= self.chunk_packets:
                    self._seal_due(sc, hk.sid, force=False, now_s=None)
        return packet_id

    def _content_error(self, packet_id: int, exc: BaseException) -> None:
        """Undo what a packet's meaning half-wrote and say why on its row (the raw bytes stay)."""
        self._db.execute("ROLLBACK TO meaning")
        self._db.execute("RELEASE meaning")
        self._db.execute("UPDATE packets SET error = ? WHERE id = ?",
                         (f"archive could not store its content: {type(exc).__name__}: {exc}"[:400], packet_id))

    def _record_meaning(self, item: Received, packet_id: int, received_s: float, sc: int) -> None:
        rec = item.record
        if isinstance(rec, EventRecord):
            self._db.execute(
                "INSERT INTO events(sc, packet, time_s, event_id, name, severity, text, args, received_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sc, packet_id, rec.time_s, rec.event.id, rec.event.name, int(rec.event.severity), _event_text(rec),
                 _json(rec.args), received_s),
            )
        elif isinstance(rec, Verification):
            self._record_report(rec, packet_id, item.packet.time_s, received_s, sc)
        if item.gap:
            self._db.execute(
                "INSERT INTO gaps(sc, packet, received_s, time_s, apid, seq_count, missing) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sc, packet_id, received_s, item.packet.time_s, item.packet.apid, item.packet.seq_count, item.gap),
            )

    def _record_report(self, rep: Verification, packet_id: int | None, time_s: float | None,
                       received_s: float, sc: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO verifications(sc, packet, time_s, received_s, cmd_id, opcode, request_id, stage, "
            "success, code, reason, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sc, packet_id, time_s, received_s, _to_i64(rep.cmd_id), rep.opcode, rep.request_id, rep.stage.value,
             int(rep.success), rep.code.name, rep.reason, _json(rep.result)),
        )
        if rep.cmd_id == 0:  # the agent could not read who sent it: no command to file it under
            return
        command = self.dictionary.command_by_opcode.get(rep.opcode)
        name = command.name if command else f"opcode {rep.opcode:#06x}"
        # A report on the stream may be the first we hear of a command another console sent.
        self._db.execute(
            "INSERT OR IGNORE INTO commands(sc, cmd_id, name, opcode, first_seen_s) VALUES (?, ?, ?, ?, ?)",
            (sc, _to_i64(rep.cmd_id), name, rep.opcode, received_s),
        )

    def record_command(
        self,
        name: str,
        args: dict[str, Any] | None,
        cmd_id: int | None,
        who: str | None,
        sent_s: float | None,
        outcome: str = "",
        reports: Iterable[Verification] = (),
        *,
        spacecraft: str = DEFAULT_SPACECRAFT,
        queue_id: Any = None,
        approved_by: str | None = None,
        stages: Sequence[Mapping[str, Any]] | None = None,
        state: str | None = None,
        queued_s: float | None = None,
    ) -> None:
        """File a command: who, when (ground clock), arguments, and as it moves on, its state.

        One row per command: found by (spacecraft, ``cmd_id``) when ``cmd_id`` is given (not
        None or 0), else by (spacecraft, ``queue_id``). The server's queue files a command when
        queued (no ``cmd_id`` yet, ``state`` "queued" or "pending_approval") and again as it
        moves (released, sent with its ``cmd_id``, its outcome); reports on the stream may
        come before or after, and end up on the same row. What a later call leaves as None
        (or ``outcome`` "") keeps its earlier value. ``stages``: the queue's list of
        ``{"stage": "sent", "ok": True, "at_s": 1.0, ...}``, stored as given (JSON).
        """
        check_spacecraft(spacecraft)
        cmd = _to_i64(cmd_id) if cmd_id else None
        if cmd is None and queue_id is None:
            raise ValueError(f"command {name}: record_command needs a cmd_id or a queue_id to file it under")
        if queue_id is not None and (isinstance(queue_id, bool) or not isinstance(queue_id, (int, str))):
            raise ValueError(f"queue_id {queue_id!r}: an int or a str")
        command = self.dictionary.command_by_name.get(name)
        times = [t for t in (queued_s, sent_s) if t is not None]
        seen_s = min(times) if times else time.time()
        values = (name, command.opcode if command else None, None if args is None else _json(args), who,
                  cmd, queue_id, sent_s, queued_s, seen_s, outcome or None, approved_by, state,
                  None if stages is None else _json(list(stages)))
        with self._write():
            sc = self._sc_id(spacecraft)
            by_queue = by_cmd = None
            if queue_id is not None:
                by_queue = self._db.execute("SELECT id, first_seen_s FROM commands WHERE sc = ? AND queue_id = ?",
                                            (sc, queue_id)).fetchone()
            if cmd is not None:
                by_cmd = self._db.execute("SELECT id, first_seen_s FROM commands WHERE sc = ? AND cmd_id = ?",
                                          (sc, cmd)).fetchone()
            if by_queue is not None and by_cmd is not None and by_queue[0] != by_cmd[0]:
                # Reports on the stream came first and filed the command under its cmd_id: one row, the queue's.
                self._db.execute("DELETE FROM commands WHERE id = ?", (by_cmd[0],))
                self._db.execute("UPDATE commands SET first_seen_s = min(first_seen_s, ?) WHERE id = ?",
                                 (by_cmd[1], by_queue[0]))
                by_cmd = None
            target = by_queue or by_cmd
            if target is None:
                self._db.execute(
                    "INSERT INTO commands(sc, name, opcode, args, who, cmd_id, queue_id, sent_s, queued_s, first_seen_s, "
                    "outcome, approved_by, state, stages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sc, *values))
            else:
                self._db.execute(
                    "UPDATE commands SET name = ?, opcode = coalesce(?, opcode), args = coalesce(?, args), "
                    "who = coalesce(?, who), cmd_id = coalesce(?, cmd_id), queue_id = coalesce(?, queue_id), "
                    "sent_s = coalesce(?, sent_s), queued_s = coalesce(queued_s, ?), "
                    "first_seen_s = min(first_seen_s, ?), outcome = coalesce(?, outcome), "
                    "approved_by = coalesce(?, approved_by), state = coalesce(?, state), stages = coalesce(?, stages) "
                    "WHERE id = ?", (*values, target[0]))
            for rep in reports:
                self._record_report(rep, None, None, seen_s if sent_s is None else sent_s, sc)

    def record_ack(self, channel: str, who: str, acked_s: float, state: str = "", value: Any = None,
                   spacecraft: str = DEFAULT_SPACECRAFT) -> None:
        """File an operator's acknowledgement of an alarm on ``channel``."""
        check_spacecraft(spacecraft)
        with self._write():
            self._db.execute(
                "INSERT INTO alarm_acks(sc, channel, acked_s, who, state, value) VALUES (?, ?, ?, ?, ?, ?)",
                (self._sc_id(spacecraft), channel, acked_s, who, state, _json(value)))

    # --- sealing -----------------------------------------------------------------------------

    def seal(self, force: bool = False, now_s: float | None = None) -> int:
        """Seal the housekeeping that is due; return how many packets were sealed.

        Due: a (spacecraft, SID) with ``chunk_packets`` unsealed packets (whole chunks of them),
        or whose oldest unsealed packet was received ``chunk_age_s`` before ``now_s`` (the
        ground's clock; now by default) — then all of them. ``force``: everything unsealed.
        Each chunk is one transaction: the chunk row in, its packets out of ``packets``.
        :class:`ArchiveRecorder` calls this after each flush.
        """
        now = time.time() if now_s is None else now_s
        sealed = 0
        with self._lock:
            keys = self._db.execute("SELECT DISTINCT sc, sid FROM packets WHERE sid IS NOT NULL").fetchall()
            for sc, sid in keys:
                sealed += self._seal_due(sc, sid, force, now)
        return sealed

    def _due(self, sc: int, sid: int, force: bool, now_s: float | None) -> tuple[bool, int]:
        n, oldest = self._db.execute(
            "SELECT count(*), min(received_s) FROM packets WHERE sc = ? AND sid = ?", (sc, sid)).fetchone()
        aged = now_s is not None and n > 0 and oldest <= now_s - self.chunk_age_s
        return n >= self.chunk_packets or (n > 0 and (force or aged)), n

    def _seal_due(self, sc: int, sid: int, force: bool, now_s: float | None) -> int:
        sealed = 0
        while True:
            with self._lock:
                if self._depth == 0 and not self._due(sc, sid, force, now_s)[0]:
                    return sealed  # found by a read: no write lock taken for nothing
                with self._write():
                    due, n = self._due(sc, sid, force, now_s)  # again, under the write lock
                    self._unsealed_hint[(sc, sid)] = n
                    if not due:
                        return sealed
                    done = self._seal_one(sc, sid)
                    self._unsealed_hint[(sc, sid)] = n - done
            sealed += done
            if not done:
                return sealed

    def _seal_one(self, sc: int, sid: int) -> int:
        """The oldest ``chunk_packets`` unsealed packets of (sc, sid) into one chunk (in a transaction)."""
        rows = self._db.execute("SELECT id, received_s, raw FROM packets WHERE sc = ? AND sid = ? ORDER BY id LIMIT ?",
                                (sc, sid, self.chunk_packets)).fetchall()
        layout = self.dictionary.packet_by_sid.get(sid)
        good: list[tuple[int, float, bytes, float, list[Any]]] = []
        for pid, received_s, raw in rows:
            raw = bytes(raw)
            try:
                tm = unpack(raw)
                rec = self._codec.decode_tm(tm) if isinstance(tm, Telemetry) else None
                if not isinstance(rec, HkRecord) or layout is None or rec.packet.channels != layout.channels:
                    raise PacketError("dictionary", f"not housekeeping SID {sid} as this archive's dictionary has it")
            except PacketError as exc:  # recorded under another dictionary: keep it, as a raw packet
                self._db.execute("UPDATE packets SET sid = NULL, error = ? WHERE id = ?",
                                 (f"could not be sealed: {exc}"[:400], pid))
                continue
            good.append((pid, received_s, raw, rec.time_s, [rec.values[c] for c in layout.channels]))
        if not good:
            return len(rows)
        ids = [g[0] for g in good]
        times = np.array([g[3] for g in good], dtype=float)
        columns = _columns(layout.channels, self._kinds[sid], [g[4] for g in good])
        vals = _pack_values(layout.channels, times, columns)
        raw_blob = _pack_raw(ids, [g[1] for g in good], [g[2] for g in good])
        self._db.execute(
            "INSERT INTO hk_chunks(sc, sid, t_first, t_last, r_last, n, first_id, last_id, bytes, vals_crc, raw_crc, "
            "vals, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sc, sid, float(times.min()), float(times.max()), max(float(g[1]) for g in good), len(good), ids[0],
             ids[-1], len(vals) + len(raw_blob), zlib.crc32(vals), zlib.crc32(raw_blob), vals, raw_blob))
        self._db.execute("DELETE FROM packets WHERE sc = ? AND sid = ? AND id <= ?", (sc, sid, ids[-1]))
        return len(rows)

    # --- reading chunks ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own, for a long read (an export, a check): one snapshot
        of the file from its first read on (WAL), and this archive's lock is not held, so
        recording and queries go on meanwhile."""
        db = sqlite3.connect(self._read_uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("BEGIN")
            yield db
        finally:
            db.close()

    def _chunk_error(self, chunk_id: int, what: str) -> ArchiveError:
        return ArchiveError(f"{self.path}: hk chunk {chunk_id}: {what}; the file is damaged there "
                            f"(sunlit-ground archive check --db {self.path} lists every damaged chunk)")

    def _checked(self, chunk_id: int, which: str, blob: bytes, crc: int) -> bytes:
        got = zlib.crc32(blob)
        if got != crc:
            raise self._chunk_error(chunk_id, f"{which} blob fails its CRC-32 check (stored {crc:#010x}, "
                                              f"computed {got:#010x})")
        return blob

    def _chunk_values(self, chunk_id: int, crc: int, blob: bytes,
                      names: Iterable[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Packet times, and the columns of ``names`` the chunk holds, CRC checked."""
        self._checked(chunk_id, "values", blob, crc)
        try:
            header, segments = _unpack_blob(blob)
            n = int(header["n"])
            times = _unshuffle_unzip(segments[0], "<f8", n)
            index = {c: i for i, c in enumerate(header["channels"])}
            out = {}
            for name in names:
                i = index.get(name)
                if i is None:
                    continue
                if header["kinds"][i] == "f8":
                    out[name] = _unshuffle_unzip(segments[i + 1], "<f8", n)
                else:
                    listed = msgpack.unpackb(zlib.decompress(segments[i + 1]), raw=False, strict_map_key=False)
                    if len(listed) != n:
                        raise ValueError(f"column {name} has {len(listed)} values for {n} packets")
                    arr = np.empty(n, dtype=object)
                    arr[:] = listed
                    out[name] = arr
        except (ValueError, KeyError, IndexError, TypeError, zlib.error, struct.error, msgpack.UnpackException) as exc:
            raise self._chunk_error(chunk_id, f"values blob does not decode: {type(exc).__name__}: {exc}") from None
        return times, out

    def _chunk_raw(self, chunk_id: int, crc: int, blob: bytes) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        self._checked(chunk_id, "raw", blob, crc)
        try:
            return _unpack_raw(blob)
        except (ValueError, KeyError, IndexError, TypeError, zlib.error, struct.error, msgpack.UnpackException) as exc:
            raise self._chunk_error(chunk_id, f"raw blob does not decode: {type(exc).__name__}: {exc}") from None

    def _unsealed_values(self, sc: int, sid: int, names: Sequence[str], lo: float,
                         hi: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Unsealed packets of (sc, sid) in the window, decoded as the client decodes them."""
        layout = self.dictionary.packet_by_sid.get(sid)
        rows = self._db.execute("SELECT raw FROM packets WHERE sc = ? AND sid = ? AND time_s BETWEEN ? AND ? "
                                "ORDER BY id", (sc, sid, lo, hi)).fetchall()
        times, values = [], []
        for (raw,) in rows:
            try:
                rec = self._codec.decode_tm(unpack(bytes(raw)))
            except PacketError:
                continue  # recorded under another dictionary; sealing will set it aside
            if isinstance(rec, HkRecord) and layout is not None and rec.packet.channels == layout.channels:
                times.append(rec.time_s)
                values.append([rec.values[c] for c in layout.channels])
        if layout is None or not times:
            return np.empty(0), {}
        index = {c: i for i, c in enumerate(layout.channels)}
        wanted = [n for n in names if n in index]
        cols = _columns(wanted, [self._kinds[sid][index[n]] for n in wanted],
                        [[row[index[n]] for n in wanted] for row in values])
        return np.array(times, dtype=float), dict(zip(wanted, cols))

    def _gather(self, sc: int, sid: int, names: Sequence[str], lo: float,
                hi: float) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """Pieces of each channel of (sc, sid) in the window: sealed chunks, then unsealed, in
        order of reception."""
        pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
        chunks = self._db.execute(
            "SELECT id, vals_crc, vals FROM hk_chunks WHERE sc = ? AND sid = ? AND t_first <= ? AND t_last >= ? "
            "ORDER BY first_id", (sc, sid, hi, lo))
        for chunk_id, crc, blob in chunks:
            times, cols = self._chunk_values(chunk_id, crc, blob, names)
            inside = (times >= lo) & (times <= hi)
            every = bool(inside.all())
            for name, col in cols.items():
                pieces[name].append((times, col) if every else (times[inside], col[inside]))
        times, cols = self._unsealed_values(sc, sid, names, lo, hi)
        for name, col in cols.items():
            pieces[name].append((times, col))
        return pieces

    def _sids_of(self, name: str) -> list[int] | None:
        """SIDs that have carried ``name``; None if neither the archive nor the dictionary knows it."""
        sids = [sid for (sid,) in self._db.execute(
            "SELECT sid FROM sid_channels JOIN channels ON channels.id = sid_channels.channel WHERE name = ? "
            "ORDER BY sid", (name,))]
        if not sids and name not in self.dictionary.channel_by_name:
            return None
        return sids

    # --- limits ------------------------------------------------------------------------------

    def set_limits(self, channel: str, limits: Limits, who: str = "operator", set_s: float | None = None,
                   spacecraft: str = DEFAULT_SPACECRAFT) -> None:
        """Override a channel's limits on one spacecraft, for good (until :meth:`clear_limits`)."""
        if channel not in self.dictionary.channel_by_name:
            raise KeyError(f"no channel {channel!r} in the dictionary")
        check_spacecraft(spacecraft)
        with self._write():
            self._db.execute(
                "INSERT INTO limit_overrides(sc, channel, limits, set_s, who) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(sc, channel) DO UPDATE SET limits = excluded.limits, set_s = excluded.set_s, "
                "who = excluded.who",
                (self._sc_id(spacecraft), channel, _json(limits.to_json()), time.time() if set_s is None else set_s,
                 who),
            )

    def clear_limits(self, channel: str, spacecraft: str = DEFAULT_SPACECRAFT) -> None:
        """Back to the dictionary's limits."""
        with self._write():
            self._db.execute("DELETE FROM limit_overrides WHERE sc = ? AND channel = ?",
                             (self._sc_lookup(spacecraft), channel))

    def limit_overrides(self, spacecraft: str = DEFAULT_SPACECRAFT) -> dict[str, Limits]:
        with self._lock:
            rows = self._db.execute("SELECT channel, limits FROM limit_overrides WHERE sc = ?",
                                    (self._sc_lookup(spacecraft),)).fetchall()
        return {channel: Limits.from_json(json.loads(text)) for channel, text in rows}

    def limits(self, channel: str, spacecraft: str = DEFAULT_SPACECRAFT) -> Limits:
        """The operator's override if there is one, else the dictionary's limits, those that
        follow a parameter taken from the spacecraft's latest parameter report in the archive."""
        with self._lock:
            row = self._db.execute("SELECT limits FROM limit_overrides WHERE sc = ? AND channel = ?",
                                   (self._sc_lookup(spacecraft), channel)).fetchone()
        ch = self.dictionary.channel_by_name.get(channel)
        if ch is None:
            raise KeyError(f"no channel {channel!r} in the dictionary")
        limits = Limits.from_json(json.loads(row[0])) if row is not None else ch.limits
        if not limits.params():
            return limits
        return limits.resolve({**self.dictionary.parameter_defaults, **self.agent_parameters(spacecraft)})

    def agent_parameters(self, spacecraft: str = DEFAULT_SPACECRAFT) -> dict[str, Any]:
        """The parameter values of the spacecraft's latest PUS 20 report archived (empty if none is)."""
        with self._lock:
            row = self._db.execute(
                "SELECT raw FROM packets WHERE sc = ? AND service = ? AND subtype = ? AND sid IS NULL AND valid = 1 "
                "ORDER BY id DESC LIMIT 1",
                (self._sc_lookup(spacecraft), Service.PARAMETER, Subtype.PARAM_REPORT)).fetchone()
        if row is None:
            return {}
        try:
            rec = self._codec.decode_tm(unpack(bytes(row[0])))
        except PacketError:
            return {}
        return rec.values if isinstance(rec, ParamRecord) else {}

    def limit_store(self, spacecraft: str = DEFAULT_SPACECRAFT) -> ArchiveLimitStore:
        """The overrides as a ``ground.alarms.LimitStore`` look-alike, for ``AlarmManager(limit_store=...)``."""
        return ArchiveLimitStore(self, spacecraft)

    # --- reading -----------------------------------------------------------------------------

    def channel_names(self, spacecraft: str = DEFAULT_SPACECRAFT) -> list[str]:
        """Channels the spacecraft has housekeeping of in the archive, in the order first seen."""
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            return [name for (name,) in self._db.execute(
                "SELECT name FROM channels WHERE id IN (SELECT channel FROM sid_channels WHERE sid IN "
                "(SELECT DISTINCT sid FROM hk_chunks WHERE sc = ?1 UNION "
                " SELECT DISTINCT sid FROM packets WHERE sc = ?1 AND sid IS NOT NULL)) ORDER BY id", (sc,))]

    def _is_numeric(self, name: str) -> bool:
        ch = self.dictionary.channel_by_name.get(name)
        return ch is None or ch.type in _NUMERIC_TYPES

    def query(self, channels: str | Iterable[str], from_s: float | None = None, to_s: float | None = None,
              spacecraft: str = DEFAULT_SPACECRAFT,
              max_points: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{channel: (times_s, values)}`` between ``from_s`` and ``to_s`` (packet time, inclusive).

        Times are float64 Unix seconds in time order (packets with the same time in order of
        reception). Values are float64 for numeric and boolean channels (NaN where the packet
        carried nil or NaN) and an object array of str/None otherwise; a numeric channel that
        received something else than a number (a hostile packet) comes back as an object array.
        A channel the dictionary knows but the archive has no samples of gives empty arrays; a
        name neither knows is a KeyError. ``max_points``: at most that many points per channel,
        by :func:`decimate` (min/max per time bucket; what a plot needs).
        """
        names = [channels] if isinstance(channels, str) else list(channels)
        lo, hi = _bounds(from_s, to_s)
        if max_points is not None and max_points < 2:
            raise ValueError(f"max_points {max_points}: at least 2 (a minimum and a maximum)")
        pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in names}
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            by_sid = self._channels_by_sid(names)
            if sc != -1:
                for sid, wanted in by_sid.items():
                    for name, found in self._gather(sc, sid, wanted, lo, hi).items():
                        pieces[name].extend(found)
        out = {}
        for name in names:
            times, values = self._merge(name, pieces[name])
            if max_points is not None:
                times, values = decimate(times, values, max_points, lo, hi)
            out[name] = (times, values)
        return out

    def _channels_by_sid(self, names: list[str]) -> dict[int, list[str]]:
        """The channels asked for, by the housekeeping SIDs that carry them; KeyError naming one no SID carries.
        Under the lock."""
        by_sid: dict[int, list[str]] = {}
        for name in names:
            sids = self._sids_of(name)
            if sids is None:
                raise KeyError(f"no channel {name!r} in the archive or the dictionary")
            for sid in sids:
                by_sid.setdefault(sid, []).append(name)
        return by_sid

    def query_page(self, channels: str | Iterable[str], from_s: float | None = None, to_s: float | None = None,
                   spacecraft: str = DEFAULT_SPACECRAFT, max_samples: int = PAGE_SAMPLES, after: str | None = None,
                   max_points: int | None = None) -> ArchivePage:
        """What :meth:`query` gives, a page of at most ``max_samples`` samples at a time (a packet's samples are
        never split), so that a window of any length is read in bounded memory and time (found in audit: the
        server's ``/api/archive`` read the whole window, all of history if asked, before decimating it).

        Packets come in order of packet time, then SID, then reception; ``after`` is the previous page's ``next``:
        following the tokens gives every sample of the window once (one received meanwhile, in its place if that
        is after the page read). ``max_points`` decimates each channel of the page over the page's own span.
        ``max_samples`` must be at least the number of channels named, so that one packet always fits."""
        names = list(dict.fromkeys([channels] if isinstance(channels, str) else channels))
        if not names:
            raise ValueError("channels: name at least one")
        if max_samples < len(names):
            raise ValueError(f"max_samples {max_samples}: at least the {len(names)} channels named")
        if max_points is not None and max_points < 2:
            raise ValueError(f"max_points {max_points}: at least 2 (a minimum and a maximum)")
        lo, hi = _bounds(from_s, to_s)
        cursor = None if after is None else parse_page_token(after)
        parts: list[_PagePart] = []
        more = False
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            by_sid = self._channels_by_sid(names)
            for sid in sorted(by_sid) if sc != -1 else ():
                # from (time, the last row id already given at that time: None none, _ALL_ROWS all)
                start: tuple[float, int | None] = (lo, None)
                if cursor is not None and cursor[0] >= lo:
                    t0, sid0, id0 = cursor
                    start = (t0, None if sid > sid0 else _ALL_ROWS if sid < sid0 else id0)
                part = _PagePart(sid, by_sid[sid])
                more |= self._read_page_part(sc, part, start, hi, -(-max_samples // len(by_sid[sid])))
                parts.append(part)
            times = np.concatenate([p.t for p in parts]) if parts else np.empty(0)
            sid_of = np.concatenate([np.full(len(p), p.sid) for p in parts]) if parts else np.empty(0, np.int64)
            ranks = np.concatenate([p.rank for p in parts]) if parts else np.empty(0, np.int64)
            weights = np.concatenate([np.full(len(p), len(p.names)) for p in parts]) if parts else np.empty(0, int)
            order = np.lexsort((ranks, sid_of, times))
            taken = int(np.searchsorted(np.cumsum(weights[order]), max_samples, side="right"))
            complete = not more and taken == len(order)
            token, end_s = None, hi
            if not complete:  # the page ends at its last packet; the token says which it was
                last = int(order[taken - 1])
                for part in parts:
                    if last < len(part):
                        break
                    last -= len(part)
                end_s = float(part.t[last])
                token = page_token(end_s, part.sid, self._page_row_id(part, last))
        position = np.empty(len(order), dtype=np.int64)  # each packet's place in the page
        position[order] = np.arange(len(order))
        pieces: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {name: [] for name in names}
        at = 0
        for part in parts:
            mine = position[at:at + len(part)]
            at += len(part)
            for name in part.names:
                keep = (mine < taken) & part.has[name]
                pieces[name].append((mine[keep], part.t[keep], part.vals[name][keep]))
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in names:
            found = pieces[name]
            if not found:
                out[name] = self._merge(name, [])
                continue
            place = np.concatenate([p for p, _, _ in found])
            t = np.concatenate([t for _, t, _ in found])
            v = found[0][2]
            for _, _, more_v in found[1:]:
                v = _concat(v, more_v)
            if len(found) > 1:
                sort = np.argsort(place, kind="stable")
                t, v = t[sort], v[sort]
            if max_points is not None:
                t, v = decimate(t, v, max_points, lo if cursor is None else max(lo, cursor[0]), end_s)
            out[name] = (t, v)
        return ArchivePage(out, int(weights[order][:taken].sum()), complete, token, end_s)

    def _read_page_part(self, sc: int, part: _PagePart, start: tuple[float, int | None], hi: float,
                        want: int) -> bool:
        """Fill ``part`` with the first ``want`` packets of its SID in (packet time, reception) order from
        ``start`` = (time, row id: those at that time up to it were given already) to ``hi``; return whether the
        window holds more. Chunks are read in order of their first packet time until none can hold one of the
        first ``want``, and what is read beyond is dropped as it comes: memory stays at twice ``want`` packets
        and one chunk, however long the window. A packet's place in reception is its row id, a sealed one's its
        chunk's first row id plus its index (the same order: ids rise within a chunk, and a SID's chunks hold
        older rows than its unsealed ones); a sealed packet's own row id is read only where a token needs it."""
        t0, id0 = start
        cut = False
        chunks = self._db.execute("SELECT id, first_id, t_first FROM hk_chunks WHERE sc = ? AND sid = ? "
                                  "AND t_last >= ? AND t_first <= ? ORDER BY t_first", (sc, part.sid, t0, hi))
        for chunk_id, first_id, t_first in chunks:
            if t_first > part.bound:  # every packet in it and after it comes later than the first ``want``
                cut = True
                break
            crc, blob = self._db.execute("SELECT vals_crc, vals FROM hk_chunks WHERE id = ?", (chunk_id,)).fetchone()
            times, cols = self._chunk_values(chunk_id, crc, blob, part.names)
            inside = (times >= t0) & (times <= hi)
            rows = np.full(len(times), -1, dtype=np.int64)
            if id0 is not None and np.any(inside & (times == t0)):
                if id0 != _ALL_ROWS:
                    rows = self._chunk_ids(chunk_id)
                inside &= ~((times == t0) & (rows <= id0))
            index = np.flatnonzero(inside)
            cut |= part.add(times[index], first_id + index, chunk_id, rows[index],
                            {name: col[index] for name, col in cols.items()}, want)
        times, cols, ids = self._unsealed_page(sc, part, start, hi, want + 1)
        cut |= part.add(times, ids, -1, ids, cols, want)
        return part.finish(want) or cut

    def _page_row_id(self, part: _PagePart, at: int) -> int:
        """The row id of a page's packet: its own where it was unsealed, else read from its chunk's raw blob."""
        if part.row[at] >= 0:
            return int(part.row[at])
        chunk = int(part.chunk[at])
        first_id = self._db.execute("SELECT first_id FROM hk_chunks WHERE id = ?", (chunk,)).fetchone()[0]
        return int(self._chunk_ids(chunk)[int(part.rank[at]) - first_id])

    def _chunk_ids(self, chunk_id: int) -> np.ndarray:
        """The row ids of a chunk's packets, from its raw blob (CRC checked; only the ids are unpacked)."""
        crc, blob = self._db.execute("SELECT raw_crc, raw FROM hk_chunks WHERE id = ?", (chunk_id,)).fetchone()
        self._checked(chunk_id, "raw", blob, crc)
        try:
            header, segments = _unpack_blob(blob)
            return np.cumsum(_unshuffle_unzip(segments[0], "<i8", int(header["n"])))
        except (ValueError, KeyError, IndexError, TypeError, zlib.error, struct.error, msgpack.UnpackException) as exc:
            raise self._chunk_error(chunk_id, f"raw blob does not decode: {type(exc).__name__}: {exc}") from None

    def _unsealed_page(self, sc: int, part: _PagePart, start: tuple[float, int | None], hi: float,
                       limit: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """The first ``limit`` unsealed packets of the part's SID from ``start`` (as :meth:`_read_page_part`'s) to
        ``hi`` in (time, row id) order, decoded as :meth:`_unsealed_values` decodes them: times, the columns they
        carry, row ids."""
        layout = self.dictionary.packet_by_sid.get(part.sid)
        if layout is None:
            return np.empty(0), {}, np.empty(0, dtype=np.int64)
        t0, id0 = start
        after_id = -1 if id0 is None else id0
        rows = self._db.execute("SELECT id, raw FROM packets WHERE sc = ? AND sid = ? AND time_s BETWEEN ? AND ? "
                                "AND (time_s > ? OR id > ?) ORDER BY time_s, id", (sc, part.sid, t0, hi, t0, after_id))
        times, values, ids = [], [], []
        for row_id, raw in rows:
            if len(times) >= limit:
                break
            try:
                rec = self._codec.decode_tm(unpack(bytes(raw)))
            except PacketError:
                continue  # recorded under another dictionary; sealing will set it aside
            if isinstance(rec, HkRecord) and rec.packet.channels == layout.channels:  # as the chunks hold them
                times.append(rec.time_s)
                values.append([rec.values[c] for c in layout.channels])
                ids.append(row_id)
        if not times:
            return np.empty(0), {}, np.empty(0, dtype=np.int64)
        index = {c: i for i, c in enumerate(layout.channels)}
        wanted = [n for n in part.names if n in index]
        cols = _columns(wanted, [self._kinds[part.sid][index[n]] for n in wanted],
                        [[row[index[n]] for n in wanted] for row in values])
        return np.array(times, dtype=float), dict(zip(wanted, cols)), np.array(ids, dtype=np.int64)

    def _merge(self, name: str, found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        if not found:
            return np.empty(0), np.empty(0, dtype=float if self._is_numeric(name) else object)
        times = np.concatenate([t for t, _ in found])
        if all(v.dtype != object for _, v in found):
            values = np.concatenate([v for _, v in found])
        else:
            values = np.empty(len(times), dtype=object)
            values[:] = [x for _, v in found for x in v.tolist()]
        if len(times) > 1 and np.any(times[1:] < times[:-1]):
            order = np.argsort(times, kind="stable")
            times, values = times[order], values[order]
        return times, values

    def _typed(self, name: str, value: Any) -> Any:
        """A value as the live client shows it: nil as None, integers and booleans as such."""
        if isinstance(value, float):
            if math.isnan(value):
                return None
            ch = self.dictionary.channel_by_name.get(name)
            if ch is not None and ch.type is ValueType.BOOL:
                return bool(value)
            if ch is not None and ch.type in _INTEGER_TYPES and value.is_integer():
                return int(value)
        return value

    def latest(self, spacecraft: str = DEFAULT_SPACECRAFT) -> dict[str, tuple[Any, float]]:
        """``{channel: (value, packet time)}``: each channel's value in the spacecraft's newest
        packet carrying it (what a restarted server shows, marked stale, until telemetry comes)."""
        out: dict[str, tuple[Any, float]] = {}
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            sids = [sid for (sid,) in self._db.execute(
                "SELECT DISTINCT sid FROM hk_chunks WHERE sc = ?1 UNION "
                "SELECT DISTINCT sid FROM packets WHERE sc = ?1 AND sid IS NOT NULL", (sc,))]
            for sid in sids:
                t_sealed = self._db.execute("SELECT max(t_last) FROM hk_chunks WHERE sc = ? AND sid = ?",
                                            (sc, sid)).fetchone()[0]
                t_open = self._db.execute("SELECT max(time_s) FROM packets WHERE sc = ? AND sid = ?",
                                          (sc, sid)).fetchone()[0]
                newest = max(t for t in (t_sealed, t_open) if t is not None)
                names = [name for (name,) in self._db.execute(
                    "SELECT name FROM channels JOIN sid_channels ON channels.id = sid_channels.channel "
                    "WHERE sid = ?", (sid,))]
                for name, found in self._gather(sc, sid, names, newest, newest).items():
                    if found and (name not in out or out[name][1] <= newest):
                        out[name] = (self._typed(name, found[-1][1].tolist()[-1]), float(newest))
        return out

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

    def export_csv(self, channels: str | Iterable[str], out_path: Path | str, from_s: float | None = None,
                   to_s: float | None = None, spacecraft: str = DEFAULT_SPACECRAFT,
                   page_samples: int = PAGE_SAMPLES) -> int:
        """Channels side by side, one row per packet time seen in any of them; return the rows.

        Columns: ``time_s`` (Unix seconds), ``time_utc`` (ISO 8601), then one per channel. A cell
        is empty where that channel has no value at that time (another packet's time, nil, NaN).
        If one channel has two values at the same time (a repeated packet), the later one wins.
        Integer and boolean channels are written as integers, floats with full precision.
        The window is read a page at a time (:meth:`query_page`, ``page_samples`` samples), so an export of any
        length holds one page in memory (found in audit: the whole window was read first, gigabytes for a year of
        a few channels); a row whose time goes on in the next page is written once, with both pages' values.
        """
        names = [channels] if isinstance(channels, str) else list(channels)
        rows = 0
        with _replacing(out_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["time_s", "time_utc", *names])
            held: tuple[float, list[str]] | None = None  # the page's last row: its time may go on in the next page
            after: str | None = None
            while names:
                page = self.query_page(names, from_s, to_s, spacecraft, max(page_samples, len(names)), after)
                all_times = np.unique(np.concatenate([t for t, _ in page.channels.values()]))
                columns = []
                for name in names:
                    times, values = page.channels[name]
                    column = np.full(len(all_times), "", dtype=object)
                    column[np.searchsorted(all_times, times)] = [self._format_cell(name, v) for v in values.tolist()]
                    columns.append(column)
                for i, t in enumerate(all_times.tolist()):
                    cells = [c[i] for c in columns]
                    if held is not None:
                        if held[0] == t:  # one time on both sides of the page's end: one row, the later value wins
                            cells = [new or old for new, old in zip(cells, held[1])]
                        else:
                            writer.writerow([repr(held[0]), utc_iso(held[0]), *held[1]])
                            rows += 1
                    held = (t, cells)
                if page.complete:
                    break
                after = page.next
            if held is not None:
                writer.writerow([repr(held[0]), utc_iso(held[0]), *held[1]])
                rows += 1
        return rows

    def _packets_in(self, db: sqlite3.Connection, sc: int, lo: float, hi: float,
                    valid_only: bool) -> Iterator[tuple[int, bytes, int, str]]:
        """(id, raw, valid, error) of every packet of ``sc`` in the window, in order of reception:
        the rows of ``packets`` and the sealed chunks' packets, merged on their row ids."""
        def loose() -> Iterator[tuple[int, bytes, int, str]]:
            sql = ("SELECT id, raw, valid, error FROM packets WHERE sc = ? AND sid IS NULL "
                   "AND coalesce(time_s, received_s) BETWEEN ? AND ?")
            yield from db.execute(sql + (" AND valid = 1" if valid_only else "") + " ORDER BY id", (sc, lo, hi))

        def sealed(sid: int) -> Iterator[tuple[int, bytes, int, str]]:
            chunks = db.execute(
                "SELECT id, vals_crc, vals, raw_crc, raw FROM hk_chunks WHERE sc = ? AND sid = ? AND t_first <= ? "
                "AND t_last >= ? ORDER BY first_id", (sc, sid, hi, lo)).fetchall()
            for chunk_id, vals_crc, vals, raw_crc, raw in chunks:
                times, _ = self._chunk_values(chunk_id, vals_crc, vals, ())
                ids, _received, raws = self._chunk_raw(chunk_id, raw_crc, raw)
                if len(ids) != len(times):
                    raise self._chunk_error(chunk_id, f"{len(ids)} packets but {len(times)} packet times")
                for pid, t, packet in zip(ids.tolist(), times.tolist(), raws):
                    if lo <= t <= hi:
                        yield pid, packet, 1, ""
            yield from db.execute(
                "SELECT id, raw, valid, error FROM packets WHERE sc = ? AND sid = ? AND time_s BETWEEN ? AND ? "
                "ORDER BY id", (sc, sid, lo, hi))

        sids = [sid for (sid,) in db.execute(
            "SELECT DISTINCT sid FROM hk_chunks WHERE sc = ?1 UNION "
            "SELECT DISTINCT sid FROM packets WHERE sc = ?1 AND sid IS NOT NULL", (sc,))]
        yield from heapq.merge(loose(), *(sealed(sid) for sid in sids), key=lambda row: row[0])

    def export_raw(self, out_path: Path | str, from_s: float | None = None, to_s: float | None = None,
                   valid_only: bool = False, spacecraft: str = DEFAULT_SPACECRAFT) -> int:
        """Write the packets as received, one per line as hex, in order of reception; return the count.

        The format is what ``sunlit-flight packet decode --file`` reads: one packet per line,
        lowercase hex of its bytes, lines starting with ``#`` are comments (a header, a note
        before each packet that was invalid when received, naming its error, and a last line
        with the count). The window is on packet time; a packet whose header was unreadable is
        placed by its received time. Sealed housekeeping comes out byte for byte as received.
        """
        lo, hi = _bounds(from_s, to_s)
        count = 0
        with self._lock:
            sc = self._sc_lookup(spacecraft)
        with self._reading() as db, _replacing(out_path, "w", encoding="ascii") as f:
            f.write("# sunlit raw packets: one CCSDS/PUS packet per line as hex, in order of reception\n")
            f.write("# read with: sunlit-flight packet decode --file THIS_FILE\n")
            f.write(f"# from {self.path}, spacecraft {spacecraft}, packet time {from_s} .. {to_s}, "
                    f"exported {utc_iso(time.time())}\n")
            for _pid, raw, valid, error in self._packets_in(db, sc, lo, hi, valid_only):
                if not valid:
                    f.write(f"# invalid when received: {' '.join(error.split())}\n")
                f.write(bytes(raw).hex())
                f.write("\n")
                count += 1
            f.write(f"# {count} packets\n")
        return count

    def plot(self, channels: str | Iterable[str], out_png: Path | str, from_s: float | None = None,
             to_s: float | None = None, spacecraft: str = DEFAULT_SPACECRAFT, max_points: int = 4000) -> Path:
        """One panel per channel on a shared UTC time axis, limits drawn (warning orange, critical
        red); text and enum channels as steps between their values; at most ``max_points`` per
        channel (min/max decimated, so spikes stay). Returns the PNG's path.

        A channel with no value in the window (no samples, or only nil/NaN) is a ValueError
        naming it: an empty chart would show a 1970 axis and look like data."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = [channels] if isinstance(channels, str) else list(channels)
        if not names:
            raise ValueError("plot needs at least one channel")
        data = self.query(names, from_s, to_s, spacecraft, max_points=max_points)
        for name in names:
            values = data[name][1]
            known = (~np.isnan(values)).any() if values.dtype != object else any(v is not None for v in values.tolist())
            if not len(values) or not known:
                raise ValueError(f"no data for {name} in {_window_text(from_s, to_s)} (spacecraft {spacecraft})")
        fig = Figure(figsize=(11, 1.2 + 2.0 * len(names)))
        FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global backend switch
        axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
        for ax, name in zip(axes, names):
            times, values = data[name]
            when = (times * 1000.0).astype("int64").astype("datetime64[ms]")
            ch = self.dictionary.channel_by_name.get(name)
            unit = f" [{ch.unit}]" if ch is not None and ch.unit else ""
            ax.set_ylabel(f"{name}{unit}", fontsize=8)
            if values.dtype == object:
                seen = (str(v) for v in values.tolist() if v is not None)
                levels = list(dict.fromkeys([*(ch.choices if ch is not None else ()), *seen]))  # enum order first
                y = np.array([levels.index(str(v)) if v is not None else np.nan for v in values.tolist()], dtype=float)
                ax.plot(when, y, drawstyle="steps-post", lw=1.2)
                ax.set_yticks(range(len(levels)), levels, fontsize=7)
            else:
                ax.plot(when, values, lw=1.0, marker="." if len(times) < 200 else None)
                try:
                    limits = self.limits(name, spacecraft)
                except KeyError:
                    limits = Limits()
                for bound, colour in (("warn_low", "orange"), ("warn_high", "orange"),
                                      ("crit_low", "red"), ("crit_high", "red")):
                    if isinstance(getattr(limits, bound), (int, float)):
                        ax.axhline(getattr(limits, bound), color=colour, ls="--", lw=0.8)
            ax.grid(True, alpha=0.3)
        axes[-1].set_xlabel(f"packet time (UTC), {spacecraft}")
        fig.autofmt_xdate()
        fig.tight_layout()
        out = Path(out_png)
        with _replacing(out, "wb") as f:
            fig.savefig(f, format="png", dpi=90)
        return out

    def events(self, from_s: float | None = None, to_s: float | None = None,
               min_severity: Severity | int | str = Severity.DIAGNOSTIC, spacecraft: str | None = None,
               limit: int | None = None) -> list[ArchivedEvent]:
        """Events in packet-time order at or above ``min_severity`` (a Severity, its value or its
        name), of one spacecraft or (None) all; ``limit``: only the newest that many (still
        oldest first)."""
        with self._lock:
            sql, params = self._events_sql(from_s, to_s, min_severity, spacecraft, limit)
            rows = self._db.execute(sql, params).fetchall()
            names = {sc: self._sc_name(sc) for sc in {row[6] for row in rows}}
        if limit is not None:
            rows.reverse()
        return [ArchivedEvent(t, name, Severity(sev), text, json.loads(args), eid, names[sc])
                for t, name, sev, text, args, eid, sc, _id in rows]

    def iter_events(self, from_s: float | None = None, to_s: float | None = None,
                    min_severity: Severity | int | str = Severity.DIAGNOSTIC,
                    spacecraft: str | None = None) -> Iterator[ArchivedEvent]:
        """What :meth:`events` gives without ``limit``, oldest first, read :data:`LIST_PAGE` at a time as it is taken
        (each page as the file is then, the lock not held in between). Found in audit: `archive events` without
        --limit read the whole window into a list before printing a line (events keep up to 256 MB: gigabytes)."""
        after = (-math.inf, -1)
        while True:
            with self._lock:
                # the page's events by their keys first, from the indexes alone: each level's range is read a page
                # ahead, and what the merge leaves is read again with the next page
                sql, params = self._events_sql(from_s, to_s, min_severity, spacecraft, LIST_PAGE, after, "time_s, id")
                keys = self._db.execute(sql, params).fetchall()
                rows = []
                for start in range(0, len(keys), 500):  # 500 a statement: SQLite before 3.32 takes 999 variables
                    part = [k for _t, k in keys[start:start + 500]]
                    rows += self._db.execute(
                        "SELECT time_s, name, severity, text, args, event_id, sc, id FROM events WHERE id IN "  # noqa: S608
                        f"({','.join('?' * len(part))}) ORDER BY time_s, id", part).fetchall()
                names = {sc: self._sc_name(sc) for sc in {row[6] for row in rows}}
            for t, name, sev, text, args, eid, sc, _id in rows:
                yield ArchivedEvent(t, name, Severity(sev), text, json.loads(args), eid, names[sc])
            if len(keys) < LIST_PAGE:
                return
            after = keys[-1]

    def _events_sql(self, from_s: float | None, to_s: float | None, min_severity: Severity | int | str,
                    spacecraft: str | None, limit: int | None, after: tuple[float, int] | None = None,
                    cols: str = "time_s, name, severity, text, args, event_id, sc, id") -> tuple[str, list[Any]]:
        """The query :meth:`events` runs: one index range per severity level at or above the floor
        (and per spacecraft), each in time order and cut at ``limit``, merged. So a rare severity, or a
        spacecraft with few events, reads only its own rows, and a full listing its newest ``limit``
        of each (found in audit: a filter read the whole table, 200 ms at a million events). With ``after``
        (time, row id), the ``limit`` oldest after that event instead (:meth:`iter_events`); ``cols``, the columns
        selected (``time_s`` and ``id`` among them)."""
        lo, hi = _bounds(from_s, to_s)
        floor = _severity(min_severity)
        levels = [int(s) for s in Severity if s >= floor]
        # events_by_sc_severity, events_by_severity (_EVENT_INDEXES): equality, equality, range
        sc = None if spacecraft is None else self._sc_lookup(spacecraft)
        where = "severity = ?" if sc is None else "sc = ? AND severity = ?"
        order = " ORDER BY time_s DESC, id DESC" if limit is not None and after is None else " ORDER BY time_s, id"
        cut = " LIMIT ?" if limit is not None else ""
        past = ""
        if after is not None:  # the range from the last one given on, still in the index's order
            lo, past = max(lo, after[0]), " AND (time_s > ? OR id > ?)"
        parts, params = [], []
        for level in levels:
            parts.append(f"SELECT * FROM (SELECT {cols} FROM events WHERE {where} "  # noqa: S608 - fixed text
                         f"AND time_s BETWEEN ? AND ?{past}{order}{cut})")
            params += [*(() if sc is None else (sc,)), level, lo, hi, *(() if after is None else after),
                       *(() if limit is None else (max(0, int(limit)),))]
        sql = " UNION ALL ".join(parts) + order + cut
        if limit is not None:
            params.append(max(0, int(limit)))
        return sql, params

    def commands(self, from_s: float | None = None, to_s: float | None = None, name: str | None = None,
                 spacecraft: str | None = None, limit: int | None = None) -> list[ArchivedCommand]:
        """Commands queued, sent (ground clock) or first seen between ``from_s`` and ``to_s``,
        oldest first, of one spacecraft or (None) all; ``limit``: only the newest that many."""
        lo, hi = _bounds(from_s, to_s)
        sql = ("SELECT c.sc, cmd_id, queue_id, c.name, args, who, approved_by, state, stages, queued_s, sent_s, "
               "first_seen_s, outcome, coalesce(sent_s, queued_s, first_seen_s) AS at_s, c.id FROM commands c "
               "WHERE coalesce(sent_s, queued_s, first_seen_s) BETWEEN ? AND ?")
        params: list[Any] = [lo, hi]
        with self._lock:
            if name is not None:
                sql += " AND c.name = ?"
                params.append(name)
            if spacecraft is not None:
                sql += " AND c.sc = ?"
                params.append(self._sc_lookup(spacecraft))
            if limit is not None:
                rows = self._db.execute(sql + " ORDER BY at_s DESC, c.id DESC LIMIT ?",
                                        (*params, max(0, int(limit)))).fetchall()[::-1]
            else:
                rows = self._db.execute(sql + " ORDER BY at_s, c.id", params).fetchall()
            return self._commands_of(rows)

    def iter_commands(self, from_s: float | None = None, to_s: float | None = None, name: str | None = None,
                      spacecraft: str | None = None) -> Iterator[ArchivedCommand]:
        """What :meth:`commands` gives without ``limit``, oldest first, read :data:`LIST_PAGE` at a time as it is
        taken, as :meth:`iter_events` (found in audit: `archive commands` read ten years of them into a list first);
        a command sent while it is read may come again, as sent."""
        lo, hi = _bounds(from_s, to_s)
        at = "coalesce(sent_s, queued_s, first_seen_s)"
        sql = ("SELECT c.sc, cmd_id, queue_id, c.name, args, who, approved_by, state, stages, queued_s, sent_s, "
               f"first_seen_s, outcome, {at} AS at_s, c.id FROM commands c "
               f"WHERE {at} BETWEEN ? AND ? AND ({at} > ? OR c.id > ?)")
        after: tuple[float, int] = (-math.inf, -1)
        while True:
            params: list[Any] = [max(lo, after[0]), hi, *after]
            with self._lock:
                where = ""
                if name is not None:
                    where += " AND c.name = ?"
                    params.append(name)
                if spacecraft is not None:  # "+": through commands_by_time, in order (by sc, each page sorted them all)
                    where += " AND +c.sc = ?"
                    params.append(self._sc_lookup(spacecraft))
                rows = self._db.execute(sql + where + " ORDER BY at_s, c.id LIMIT ?", (*params, LIST_PAGE)).fetchall()
                commands = self._commands_of(rows)
            yield from commands
            if len(rows) < LIST_PAGE:
                return
            after = (rows[-1][13], rows[-1][14])

    def _commands_of(self, rows: Sequence[Sequence[Any]]) -> list[ArchivedCommand]:
        """Rows of the commands table as :meth:`commands` selects them, with their reports. Under the lock."""
        out = []
        for (sc, cmd_id, queue_id, cname, args, who, approved_by, state, stages, queued_s, sent_s, first_s,
             said, _at, _id) in rows:
            reps = [] if cmd_id is None else self._db.execute(
                "SELECT stage, success, code, reason, result, time_s FROM verifications WHERE sc = ? AND cmd_id = ? "
                "ORDER BY id", (sc, cmd_id)).fetchall()
            reports = tuple(ArchivedReport(stage, bool(ok), code, reason, json.loads(result), t)
                            for stage, ok, code, reason, result, t in reps)
            outcome, final = _outcome(reports, said, state)
            out.append(ArchivedCommand(
                _from_i64(cmd_id), cname, None if args is None else json.loads(args), who, sent_s, first_s,
                outcome, final, reports, self._sc_name(sc), queue_id, approved_by, state,
                tuple(json.loads(stages)) if stages else (), queued_s))
        return out

    # --- completeness per pass ----------------------------------------------------------

    def record_passes(self, reports: Iterable[PassReport], spacecraft: str = DEFAULT_SPACECRAFT) -> int:
        """Keep the ground server's count of each pass (``ground.completeness``): one row per
        pass and APID, replaced as the numbers change (playback fills a pass's gaps later).
        Returns the rows written."""
        check_spacecraft(spacecraft)
        rows = 0
        with self._write():
            sc = self._sc_id(spacecraft)
            for p in reports:
                for apid, c in p.apids:
                    self._db.execute(
                        "INSERT INTO passes(sc, start_s, apid, end_s, first_ms, last_ms, received, played_back, "
                        "duplicates, missing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sc, start_s, apid) "
                        "DO UPDATE SET end_s = excluded.end_s, first_ms = excluded.first_ms, "
                        "last_ms = excluded.last_ms, received = excluded.received, "
                        "played_back = excluded.played_back, duplicates = excluded.duplicates, "
                        "missing = excluded.missing",
                        (sc, p.start_s, apid, p.end_s, p.first_ms, p.last_ms, c.received, c.played_back,
                         c.duplicates, c.missing))
                    rows += 1
        return rows

    def passes(self, from_s: float | None = None, to_s: float | None = None, spacecraft: str = DEFAULT_SPACECRAFT,
               limit: int | None = None) -> list[ArchivedPass]:
        """Passes (ground clock) that began between ``from_s`` and ``to_s``, oldest first, with
        their completeness per APID; ``limit``: only the newest that many."""
        lo, hi = _bounds(from_s, to_s)
        if limit is not None and limit < 0:
            raise ValueError(f"limit {limit}: at least 0")
        if not self._key_tables:
            return []
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            starts = [t for (t,) in self._db.execute(
                "SELECT DISTINCT start_s FROM passes WHERE sc = ? AND start_s BETWEEN ? AND ? ORDER BY start_s DESC"
                + ("" if limit is None else " LIMIT ?"), (sc, lo, hi) + (() if limit is None else (int(limit),)))]
            return [self._pass(sc, start, spacecraft) for start in reversed(starts)]

    def iter_passes(self, from_s: float | None = None, to_s: float | None = None,
                    spacecraft: str = DEFAULT_SPACECRAFT) -> Iterator[ArchivedPass]:
        """What :meth:`passes` gives without ``limit``, oldest first, :data:`LIST_PAGE` passes read at a time as they
        are taken, as :meth:`iter_events`."""
        lo, hi = _bounds(from_s, to_s)
        if not self._key_tables:
            return
        after = -math.inf
        while True:
            with self._lock:
                sc = self._sc_lookup(spacecraft)
                starts = [t for (t,) in self._db.execute(
                    "SELECT DISTINCT start_s FROM passes WHERE sc = ? AND start_s BETWEEN ? AND ? AND start_s > ? "
                    "ORDER BY start_s LIMIT ?", (sc, lo, hi, after, LIST_PAGE))]
                passes = [self._pass(sc, start, spacecraft) for start in starts]
            yield from passes
            if len(starts) < LIST_PAGE:
                return
            after = starts[-1]

    def _pass(self, sc: int, start: float, spacecraft: str) -> ArchivedPass:
        """The pass of ``sc`` that began at ``start``, from its rows per APID. Under the lock."""
        rows = self._db.execute(
            "SELECT apid, end_s, first_ms, last_ms, received, played_back, duplicates, missing FROM passes "
            "WHERE sc = ? AND start_s = ? ORDER BY apid", (sc, start)).fetchall()
        first = [r[2] for r in rows if r[2] is not None]
        last = [r[3] for r in rows if r[3] is not None]
        return ArchivedPass(
            start, max(r[1] for r in rows), min(first) / 1000.0 if first else None,
            max(last) / 1000.0 if last else None,
            tuple((apid, PassCounts(rec, played, dups, missing))
                  for apid, _e, _f, _l, rec, played, dups, missing in rows), spacecraft)

    def last_pass(self, spacecraft: str = DEFAULT_SPACECRAFT, max_keys: int = MAX_KEYS,
                  horizon_s: float = HORIZON_S) -> tuple[PassReport, list[tuple[int, int, int]]] | None:
        """The newest pass as last written (every few seconds and at the server's stop), and the keys
        ((apid, seq_count, time_ms)) of the packets archived within its live packet-time span: the newest
        ``max_keys``, none more than ``horizon_s`` before its last. What a restarted ground server needs to go
        on counting it (``CompletenessTracker.resume``); None if there is none."""
        if max_keys < 0 or not horizon_s >= 0:
            raise ValueError(f"max_keys {max_keys} and horizon_s {horizon_s}: at least 0")
        if not self._key_tables:
            return None
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            (start,) = self._db.execute("SELECT max(start_s) FROM passes WHERE sc = ?", (sc,)).fetchone()
            if start is None:
                return None
            rows = self._db.execute(
                "SELECT apid, end_s, first_ms, last_ms, received, played_back, duplicates, missing FROM passes "
                "WHERE sc = ? AND start_s = ? ORDER BY apid", (sc, start)).fetchall()
            first = min((r[2] for r in rows if r[2] is not None), default=None)
            last = max((r[3] for r in rows if r[3] is not None), default=None)
            keys: list[tuple[int, int, int]] = []
            if first is not None and last is not None:
                lo = max(first, last - int(horizon_s * 1000.0))
                for (apid, *_rest) in rows:
                    keys += [(apid, seq, t) for t, seq in self._db.execute(
                        "SELECT time_ms, seq_count FROM packet_keys WHERE sc = ? AND apid = ? AND time_ms BETWEEN ? "
                        "AND ? ORDER BY time_ms DESC LIMIT ?", (sc, apid, lo, last, max_keys - len(keys)))]
        report = PassReport(1, start, max(r[1] for r in rows), first, last, False,
                            tuple((apid, PassCounts(rec, played, dups, missing))
                                  for apid, _e, _f, _l, rec, played, dups, missing in rows))
        return report, keys

    # --- file transfers ------------------------------------------------------------------------

    def record_file_transfer(self, record: Mapping[str, Any], spacecraft: str = DEFAULT_SPACECRAFT) -> None:
        """Keep a file transfer as it stands now (``ground.files.FileRecord.to_json()``): one row
        per request, replaced as it moves on. KeyError/ValueError for a record without its fields."""
        check_spacecraft(spacecraft)
        if not self._file_table:
            raise ArchiveError(f"{self.path} was opened read-only without a file_transfers table")
        size = record.get("size")
        row = (str(record["id"]), float(record["requested_s"]), str(record["direction"]), str(record.get("who") or ""),
               str(record["remote"]), str(record.get("local") or ""), None if size is None else int(size),
               record.get("sha256"), int(record.get("cfdp_class") or 2), str(record["state"]),
               str(record.get("reason") or ""), record.get("started_s"), record.get("finished_s"),
               int(record.get("restarts") or 0), record.get("transfer"), record.get("agent_transfer"))
        with self._write():
            sc = self._sc_id(spacecraft)
            self._db.execute(
                "INSERT INTO file_transfers(sc, ref, requested_s, direction, who, remote_name, local_name, size, sha256, "
                "cfdp_class, state, outcome, started_s, finished_s, restarts, transfer, agent_transfer) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sc, ref, requested_s) DO UPDATE SET "
                "direction = excluded.direction, who = excluded.who, remote_name = excluded.remote_name, "
                "local_name = excluded.local_name, size = excluded.size, sha256 = excluded.sha256, "
                "cfdp_class = excluded.cfdp_class, state = excluded.state, outcome = excluded.outcome, "
                "started_s = excluded.started_s, finished_s = excluded.finished_s, restarts = excluded.restarts, "
                "transfer = excluded.transfer, agent_transfer = excluded.agent_transfer", (sc, *row))

    def move_file_transfers(self, name: str, new_name: str, sha256: str,
                            spacecraft: str = DEFAULT_SPACECRAFT) -> int:
        """A file that came down moved in the ground's file area (``ground.files``: kept aside for a later file of
        its name, or put back): each transfer whose file it is (done, down, at ``name``, with its SHA-256) names
        ``new_name`` now, also those the server no longer holds in memory; returns how many."""
        check_spacecraft(spacecraft)
        if not self._file_table:
            raise ArchiveError(f"{self.path} was opened read-only without a file_transfers table")
        with self._write():
            return self._db.execute(
                "UPDATE file_transfers SET local_name = ? WHERE sc = ? AND direction = 'down' AND state = 'done' "
                "AND local_name = ? AND sha256 = ?", (str(new_name), self._sc_id(spacecraft), str(name), str(sha256))
            ).rowcount

    def file_transfers(self, from_s: float | None = None, to_s: float | None = None,
                       spacecraft: str = DEFAULT_SPACECRAFT, limit: int | None = None) -> list[ArchivedFileTransfer]:
        """File transfers requested between ``from_s`` and ``to_s`` (ground clock), oldest first;
        ``limit``: only the newest that many."""
        lo, hi = _bounds(from_s, to_s)
        if limit is not None and limit < 0:
            raise ValueError(f"limit {limit}: at least 0")
        if not self._file_table:
            return []
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            rows = self._db.execute(
                "SELECT ref, direction, who, remote_name, local_name, size, sha256, cfdp_class, state, outcome, "
                "requested_s, started_s, finished_s, restarts, transfer, agent_transfer FROM file_transfers "
                "WHERE sc = ? AND requested_s BETWEEN ? AND ? ORDER BY requested_s DESC, ref DESC"
                + ("" if limit is None else " LIMIT ?"), (sc, lo, hi) + (() if limit is None else (int(limit),))
            ).fetchall()
        return [ArchivedFileTransfer(*row, spacecraft=spacecraft) for row in reversed(rows)]

    def iter_file_transfers(self, from_s: float | None = None, to_s: float | None = None,
                            spacecraft: str = DEFAULT_SPACECRAFT) -> Iterator[ArchivedFileTransfer]:
        """What :meth:`file_transfers` gives without ``limit``, oldest first, read :data:`LIST_PAGE` at a time as it
        is taken, as :meth:`iter_events`."""
        lo, hi = _bounds(from_s, to_s)
        if not self._file_table:
            return
        after: tuple[float, str] = (-math.inf, "")
        while True:
            with self._lock:
                sc = self._sc_lookup(spacecraft)
                rows = self._db.execute(
                    "SELECT ref, direction, who, remote_name, local_name, size, sha256, cfdp_class, state, outcome, "
                    "requested_s, started_s, finished_s, restarts, transfer, agent_transfer FROM file_transfers "
                    "WHERE sc = ? AND requested_s BETWEEN ? AND ? AND (requested_s > ? OR ref > ?) "
                    "ORDER BY requested_s, ref LIMIT ?", (sc, max(lo, after[0]), hi, *after, LIST_PAGE)).fetchall()
            for row in rows:
                yield ArchivedFileTransfer(*row, spacecraft=spacecraft)
            if len(rows) < LIST_PAGE:
                return
            after = (rows[-1][10], rows[-1][0])

    def acks(self, from_s: float | None = None, to_s: float | None = None,
             spacecraft: str | None = None) -> list[ArchivedAck]:
        """Alarm acknowledgements (ground clock), oldest first."""
        lo, hi = _bounds(from_s, to_s)
        sql = "SELECT sc, channel, acked_s, who, state, value FROM alarm_acks WHERE acked_s BETWEEN ? AND ?"
        params: list[Any] = [lo, hi]
        with self._lock:
            if spacecraft is not None:
                sql += " AND sc = ?"
                params.append(self._sc_lookup(spacecraft))
            rows = self._db.execute(sql + " ORDER BY acked_s, id", params).fetchall()
            return [ArchivedAck(ch, t, who, state, json.loads(value), self._sc_name(sc))
                    for sc, ch, t, who, state, value in rows]

    # --- energy plans ---------------------------------------------------------------------

    _PLAN_SQL = ("SELECT received_s, raw FROM packets WHERE sc = ? AND sid IS NULL AND service = ? AND subtype = ? "
                 "AND valid = 1")

    def _plan(self, received_s: float, raw: bytes, spacecraft: str) -> ArchivedPlan | None:
        """A plan packet's row decoded as the client decodes it; None if it is not a plan (a
        packet another ground software wrote): never raises."""
        try:
            rec = self._codec.decode_tm(unpack(bytes(raw)))
        except PacketError:
            return None
        return ArchivedPlan(rec, float(received_s), spacecraft) if isinstance(rec, PlanRecord) else None

    def latest_plan(self, spacecraft: str = DEFAULT_SPACECRAFT) -> ArchivedPlan | None:
        """The spacecraft's energy plan received last (what a restarted server shows, stale,
        until the agent sends its next), or None if the archive holds none."""
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            rows = self._db.execute(self._PLAN_SQL + " ORDER BY id DESC",
                                    (sc, int(Service.POWER_PLAN), int(Subtype.PLAN_REPORT)))
            for received_s, raw in rows:  # newest first; one that does not decode is passed over
                plan = self._plan(received_s, raw, spacecraft)
                if plan is not None:
                    return plan
        return None

    def plans(self, from_s: float | None = None, to_s: float | None = None, spacecraft: str = DEFAULT_SPACECRAFT,
              limit: int | None = None) -> list[ArchivedPlan]:
        """The spacecraft's energy plans made (packet time) between ``from_s`` and ``to_s``,
        inclusive, oldest first; ``limit``: only the newest that many."""
        lo, hi = _bounds(from_s, to_s)
        if limit is not None and limit < 0:
            raise ValueError(f"limit {limit}: at least 0")
        with self._lock:
            sc = self._sc_lookup(spacecraft)
            sql = self._PLAN_SQL + " AND coalesce(time_s, received_s) BETWEEN ? AND ? " \
                "ORDER BY coalesce(time_s, received_s) DESC, id DESC"
            rows = self._db.execute(sql, (sc, int(Service.POWER_PLAN), int(Subtype.PLAN_REPORT), lo, hi))
            out: list[ArchivedPlan] = []
            for received_s, raw in rows:
                if limit is not None and len(out) >= limit:
                    break
                plan = self._plan(received_s, raw, spacecraft)
                if plan is not None:
                    out.append(plan)
        return out[::-1]

    def counts(self, spacecraft: str | None = None) -> dict[str, int]:
        """What the archive holds: ``packets`` (every packet, sealed or not), ``hk_sealed``,
        ``hk_unsealed``, ``hk_chunks``, ``invalid_packets``, ``events``, ``commands``,
        ``verifications``, ``gaps``, ``plans`` (energy plan packets, also counted in
        ``other_packets``); of one spacecraft or (None) all."""
        with self._lock:
            # "sc = sc" is true for every row: one form of each statement for one or all spacecraft.
            sc: Any = "sc" if spacecraft is None else self._sc_lookup(spacecraft)

            def one(sql: str) -> int:
                return self._db.execute(sql.replace("SC", str(sc))).fetchone()[0] or 0  # an int or "sc": no injection

            out = {
                "hk_sealed": one("SELECT sum(n) FROM hk_chunks WHERE sc = SC"),
                "hk_chunks": one("SELECT count(*) FROM hk_chunks WHERE sc = SC"),
                "hk_unsealed": one("SELECT count(*) FROM packets WHERE sc = SC AND sid IS NOT NULL"),
                "other_packets": one("SELECT count(*) FROM packets WHERE sc = SC AND sid IS NULL"),
                "invalid_packets": one("SELECT count(*) FROM packets WHERE sc = SC AND valid = 0"),
                "plans": one(f"SELECT count(*) FROM packets WHERE sc = SC AND sid IS NULL AND {_PLAN_ROW}"),
            }
            for table in ("events", "commands", "verifications", "gaps"):
                out[table] = one(f"SELECT count(*) FROM {table} WHERE sc = SC")  # noqa: S608 - fixed names
        out["packets"] = out["hk_sealed"] + out["hk_unsealed"] + out["other_packets"]
        return out

    # --- retention and checks ----------------------------------------------------------------

    def _hk_kinds(self) -> dict[int, str]:
        """SID -> kind name: the dictionary's packets, and any other SID the archive holds."""
        kinds = {p.sid: p.name for p in self.dictionary.packets}
        for (sid,) in self._db.execute("SELECT DISTINCT sid FROM hk_chunks UNION "
                                       "SELECT DISTINCT sid FROM packets WHERE sid IS NOT NULL"):
            kinds.setdefault(sid, f"SID {sid}")
        return kinds

    def _over_size(self, rows: Iterable[tuple[Any, int]], max_bytes: float) -> tuple[list[Any], int]:
        """Given (key, bytes) newest first, the keys beyond ``max_bytes`` and their bytes."""
        total, gone, gone_bytes = 0, [], 0
        for key, size in rows:
            total += size
            if total > max_bytes:
                gone.append(key)
                gone_bytes += size
        return gone, gone_bytes

    def _delete_ids(self, table: str, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            self._db.execute(f"DELETE FROM {table} WHERE id IN ({','.join('?' * len(part))})", part)  # noqa: S608

    def retain(self, policy: RetentionPolicy | None = None, now_s: float | None = None) -> dict[str, dict[str, int]]:
        """Delete what ``policy`` no longer keeps; return ``{kind: {"deleted": n, "bytes": b}}``.

        Per spacecraft and kind: first everything older than ``max_age_days`` (a sealed chunk goes
        when its newest packet is older), then the oldest until the kind's stored bytes are under
        ``max_mb`` (10^6 bytes). Telemetry ages by its reception (a packet's, an event's, a sealed
        chunk's newest) against ``now_s``, the ground's clock: nothing goes before it was received
        ``max_age_days`` ago; and by its packet time against the spacecraft's own (its newest packet
        time, never past ``now_s``), a packet time taken as no later than its reception. So a board
        whose clock is behind (unset at 1970, or fallen back to it after a reboot) or a simulation
        dated in the past keeps what it sends, sealed or not; one packet dated in the future moves
        nothing, and ages by its reception (audits: telemetry of a board at 1970 was deleted minutes
        after it came, once sealed too; a packet of 2096 emptied the keys below, and was kept for
        ever). Over its size, the telemetry received first goes first. Commands age by the ground's
        clock. ``deleted`` counts packets for housekeeping, ``packets`` and ``plans``, events, and
        commands (their reports go with them; alarm acknowledgements age out with ``commands``, gap
        records with ``packets``, pass rows by the ground's clock). Packet keys received more than
        ``key_horizon_days`` before ``now_s`` go too (by reception only: :meth:`_retain_keys`). Then the
        freed pages go back to the file system (incremental vacuum, WAL checkpoint), unless
        called inside :meth:`batch`. Deleting a month of chunks takes a fraction of a second;
        readers are not blocked, writers wait.
        """
        policy = RetentionPolicy() if policy is None else policy
        now = time.time() if now_s is None else now_s
        result: dict[str, dict[str, int]] = {}

        def add(kind: str, n: int, size: int) -> None:
            entry = result.setdefault(kind, {"deleted": 0, "bytes": 0})
            entry["deleted"] += int(n)
            entry["bytes"] += int(size)

        with self._write():
            kinds = self._hk_kinds()
            for kind in (*kinds.values(), *_OTHER_KINDS):
                add(kind, 0, 0)
            for (sc,) in self._db.execute("SELECT id FROM spacecraft").fetchall():
                sc_now = self._spacecraft_now(sc, now)
                for sid, kind in kinds.items():
                    self._retain_hk(sc, sid, kind, policy.rule(kind), sc_now, now, add)
                self._retain_rows(sc, policy, now, sc_now, add)
                self._retain_keys(sc, policy, now)
        with self._lock:
            self._unsealed_hint.clear()
            if self._depth == 0:
                # executescript steps a statement to its end; execute() would stop after one
                # step of this pragma, which frees one page.
                self._db.executescript("PRAGMA incremental_vacuum;")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return result

    def _spacecraft_now(self, sc: int, ground_now_s: float) -> float:
        """The spacecraft's own time for ageing its telemetry: its newest packet time, never past the ground's
        clock; the ground's clock where it has sent nothing with a time."""
        newest = self._db.execute(  # packet times only: a frame with none, kept at its reception, would be the
            # ground's clock (a review)
            "SELECT max(t) FROM (SELECT max(t_last) AS t FROM hk_chunks WHERE sc = ?1 "
            "UNION ALL SELECT max(time_s) FROM packets WHERE sc = ?1 "
            "UNION ALL SELECT max(time_s) FROM events WHERE sc = ?1)", (sc,)).fetchone()[0]
        return ground_now_s if newest is None or not math.isfinite(newest) else min(float(newest), ground_now_s)

    def _retain_hk(self, sc: int, sid: int, kind: str, rule: Retention, now: float, ground_now: float,
                   add: Callable[[str, int, int], None]) -> None:
        if math.isfinite(rule.max_age_days):
            cutoff = now - rule.max_age_days * 86_400.0
            received_cutoff = ground_now - rule.max_age_days * 86_400.0  # old by reception first (see retain)
            old = _aged("received_s", "time_s")
            n, size = self._db.execute("SELECT count(*), coalesce(sum(length(raw)), 0) FROM packets WHERE sc = ? "
                                       f"AND sid = ? AND {old}", (sc, sid, received_cutoff, cutoff)).fetchone()
            self._db.execute(f"DELETE FROM packets WHERE sc = ? AND sid = ? AND {old}",  # noqa: S608 - fixed text
                             (sc, sid, received_cutoff, cutoff))
            add(kind, n, size)
            self._fill_chunk_receptions(sc, sid, min(cutoff, received_cutoff), ground_now)
            old = _aged("coalesce(r_last, t_last)", "t_last")
            n, size = self._db.execute("SELECT coalesce(sum(n), 0), coalesce(sum(bytes), 0) FROM hk_chunks "
                                       f"WHERE sc = ? AND sid = ? AND {old}", (sc, sid, received_cutoff, cutoff)
                                       ).fetchone()
            self._db.execute(f"DELETE FROM hk_chunks WHERE sc = ? AND sid = ? AND {old}",  # noqa: S608 - fixed text
                             (sc, sid, received_cutoff, cutoff))
            add(kind, n, size)
        if math.isfinite(rule.max_mb) and self._db.execute(  # listed only when over its size (found in audit)
                "SELECT (SELECT coalesce(sum(length(raw)), 0) FROM packets WHERE sc = ?1 AND sid = ?2) + "
                "(SELECT coalesce(sum(bytes), 0) FROM hk_chunks WHERE sc = ?1 AND sid = ?2)",
                (sc, sid)).fetchone()[0] > rule.max_mb * 1e6:
            self._fill_chunk_receptions(sc, sid)
            unsealed = self._db.execute("SELECT coalesce(sum(length(raw)), 0) FROM packets WHERE sc = ? AND sid = ?",
                                        (sc, sid)).fetchone()[0]
            chunks = self._db.execute("SELECT id, bytes, n FROM hk_chunks WHERE sc = ? AND sid = ? "
                                      "ORDER BY coalesce(r_last, t_last) DESC, id DESC", (sc, sid)).fetchall()
            of = {cid: (size, n) for cid, size, n in chunks}
            gone, _ = self._over_size([(None, unsealed)] + [(cid, size) for cid, size, _ in chunks],
                                      rule.max_mb * 1e6)
            gone = [cid for cid in gone if cid is not None]  # the unsealed packets are the newest: kept
            self._delete_ids("hk_chunks", gone)
            add(kind, sum(of[cid][1] for cid in gone), sum(of[cid][0] for cid in gone))

    def _fill_chunk_receptions(self, sc: int, sid: int, below_s: float | None = None,
                               ahead_s: float | None = None) -> None:
        """Chunks sealed before ``r_last`` was kept (NULL) get it from their own raw blob, which holds every
        packet's reception, before retention judges them (found in review: until then their packet time stood in,
        and the housekeeping of a board at 1970 sealed before the upgrade went at the first pass after it, while
        one dated ahead never went). Only those retention would misjudge now: with a packet time below
        ``below_s`` or above ``ahead_s`` (the ground's clock), or all of them (None: over its size); the others'
        packet times age as their receptions would, and are read once they are old. A chunk whose blob does not
        decode keeps its packet time (``archive check`` names it)."""
        where, args = "", [sc, sid]
        if below_s is not None:
            where, args = " AND (t_last < ? OR t_last > ?)", args + [below_s, math.inf if ahead_s is None else ahead_s]
        rows = self._db.execute("SELECT id, raw_crc, raw FROM hk_chunks WHERE sc = ? AND sid = ? AND r_last IS NULL"
                                + where, args).fetchall()
        for chunk_id, crc, blob in rows:
            try:
                _, received, _ = self._chunk_raw(chunk_id, crc, bytes(blob))
            except ArchiveError:
                continue
            if len(received) and np.isfinite(received).all():
                self._db.execute("UPDATE hk_chunks SET r_last = ? WHERE id = ?", (float(received.max()), chunk_id))

    def _retain_keys(self, sc: int, policy: RetentionPolicy, now: float) -> None:
        """Keys go ``key_horizon_s`` after their packet was received, by the ground's clock: only then can no store
        play it back again, whatever the board's clock stamped on it (found in audit: aged by packet time, a key
        from a board fallen back to 1970 went at once and its playback was archived twice). A key with no
        reception (an older ground server wrote it) is taken as received now: kept the horizon from here."""
        if not self._key_tables:
            return
        self._db.execute("UPDATE packet_keys SET received_s = ? WHERE sc = ? AND received_s IS NULL",
                         (_key_received(now), sc))
        self._db.execute("DELETE FROM packet_keys WHERE sc = ? AND received_s < ?", (sc, now - self.key_horizon_s))
        if math.isfinite(policy.packets.max_age_days):
            self._db.execute("DELETE FROM passes WHERE sc = ? AND end_s < ?",
                             (sc, now - policy.packets.max_age_days * 86_400.0))

    def _retain_rows(self, sc: int, policy: RetentionPolicy, now: float, sc_now: float,
                     add: Callable[[str, int, int], None]) -> None:
        o = _ROW_OVERHEAD_BYTES
        # kind, table, time expression, size expression, extra condition, reception. Telemetry goes by age only when
        # old by its reception (against the ground's clock) and by its packet time (against the spacecraft's): a
        # board whose clock fell back to 1970 after a reboot keeps what it sends since (a review); and over its size
        # the first received go first
        self._db.execute(_FILL_EVENTS_RECEIVED + " AND sc = ?", (sc,))  # rows an older ground server wrote
        plans = (
            ("events", "events", "time_s", f"length(text) + length(args) + length(name) + {o}", "", "received_s"),
            ("packets", "packets", "coalesce(time_s, received_s)", f"length(raw) + length(error) + {o}",
             f" AND sid IS NULL AND NOT {_PLAN_ROW}", "received_s"),
            ("plans", "packets", "coalesce(time_s, received_s)", f"length(raw) + length(error) + {o}",
             f" AND sid IS NULL AND {_PLAN_ROW}", "received_s"),
            ("commands", "commands", "coalesce(sent_s, queued_s, first_seen_s)",
             f"length(name) + coalesce(length(args), 0) + coalesce(length(stages), 0) + {o} + "
             f"(SELECT coalesce(sum(length(result) + length(reason) + {o}), 0) FROM verifications v "
             "WHERE v.sc = t.sc AND v.cmd_id = t.cmd_id)", "", ""),
        )
        for kind, table, when, size, extra, received in plans:
            rule = policy.rule(kind)
            gone: list[int] = []
            gone_bytes = 0
            if math.isfinite(rule.max_age_days):
                cutoff = (now if kind == "commands" else sc_now) - rule.max_age_days * 86_400.0
                received_cutoff = now - rule.max_age_days * 86_400.0
                old, params = (_aged(received, when), (received_cutoff, cutoff)) if received else (f"{when} < ?",
                                                                                                 (cutoff,))
                rows = self._db.execute(f"SELECT id, {size} FROM {table} t WHERE sc = ? AND {old}{extra}",  # noqa: S608
                                        (sc, *params)).fetchall()
                gone = [r[0] for r in rows]
                gone_bytes = sum(r[1] for r in rows)
                if kind == "packets":
                    gaps_old = _aged("received_s", "coalesce(time_s, received_s)")
                    self._db.execute(f"DELETE FROM gaps WHERE sc = ? AND {gaps_old}", (sc, received_cutoff, cutoff))
                if kind == "commands":
                    self._db.execute("DELETE FROM alarm_acks WHERE sc = ? AND acked_s < ?", (sc, cutoff))
                    if self._file_table:
                        self._db.execute("DELETE FROM file_transfers WHERE sc = ? AND requested_s < ?", (sc, cutoff))
                    self._db.execute("DELETE FROM verifications WHERE sc = ? AND cmd_id = 0 "
                                     "AND coalesce(received_s, time_s) < ?", (sc, cutoff))
            # The ordered walk, newest first, only when the kind is over its size: found in audit, it read and
            # sorted every row each retention period (2 s under the write lock at a million) to delete nothing.
            if math.isfinite(rule.max_mb) and self._db.execute(
                    f"SELECT coalesce(sum({size}), 0) FROM {table} t WHERE sc = ?{extra}",  # noqa: S608
                    (sc,)).fetchone()[0] - gone_bytes > rule.max_mb * 1e6:
                skip = set(gone)
                rows = self._db.execute(f"SELECT id, {size} FROM {table} t WHERE sc = ?{extra} "  # noqa: S608
                                        f"ORDER BY {received or when} DESC, id DESC", (sc,)).fetchall()
                more, more_bytes = self._over_size([r for r in rows if r[0] not in skip], rule.max_mb * 1e6)
                gone += more
                gone_bytes += more_bytes
            if kind == "commands" and gone:
                for start in range(0, len(gone), 500):
                    part = gone[start:start + 500]
                    self._db.execute(
                        "DELETE FROM verifications WHERE sc = ? AND cmd_id IN (SELECT cmd_id FROM commands WHERE id IN "
                        f"({','.join('?' * len(part))}) AND cmd_id IS NOT NULL)", (sc, *part))
            self._delete_ids(table, gone)
            add(kind, len(gone), gone_bytes)

    def check(self) -> list[str]:
        """What is wrong with the file; empty when it is sound.

        SQLite's ``quick_check``; every chunk's two CRCs, and its contents against its row (packet
        count, first and last ids, time range, size); no packet both sealed and unsealed; every
        row's spacecraft known. Reads the whole file (seconds per GB) on a connection of its own:
        recording goes on meanwhile.
        """
        problems: list[str] = []
        with self._reading() as db:
            try:
                for (line,) in db.execute("PRAGMA quick_check"):
                    if line != "ok":
                        problems.append(f"sqlite quick_check: {line}")
                chunks = db.execute("SELECT id, sc, sid, t_first, t_last, n, first_id, last_id, bytes, vals_crc, "
                                          "raw_crc, vals, raw FROM hk_chunks ORDER BY id")
                for cid, sc, sid, t_first, t_last, n, first_id, last_id, size, vals_crc, raw_crc, vals, raw in chunks:
                    try:
                        times, _ = self._chunk_values(cid, vals_crc, vals, ())
                        ids, received, raws = self._chunk_raw(cid, raw_crc, raw)
                    except ArchiveError as exc:
                        problems.append(str(exc))
                        continue
                    wrong = []
                    if not (len(times) == len(ids) == len(raws) == n):
                        wrong.append(f"{n} packets in its row, {len(times)} times, {len(ids)} ids, {len(raws)} packets")
                    elif n and (ids[0] != first_id or ids[-1] != last_id or np.any(np.diff(ids) <= 0)):
                        wrong.append(f"packet ids {ids[0]}..{ids[-1]} (in order: {bool(np.all(np.diff(ids) > 0))}), "
                                     f"its row says {first_id}..{last_id}")
                    elif n and (times.min() != t_first or times.max() != t_last):
                        wrong.append(f"packet times {times.min()}..{times.max()}, its row says {t_first}..{t_last}")
                    if size != len(vals) + len(raw):
                        wrong.append(f"{len(vals) + len(raw)} bytes, its row says {size}")
                    doubled = db.execute("SELECT count(*) FROM packets WHERE sc = ? AND sid = ? AND id BETWEEN ? AND ?",
                                               (sc, sid, first_id, last_id)).fetchone()[0]
                    if doubled:
                        wrong.append(f"{doubled} of its packets are also unsealed in packets")
                    if wrong:
                        problems.append(f"hk chunk {cid} (spacecraft #{sc}, SID {sid}): " + "; ".join(wrong))
                for table in ("packets", "hk_chunks", "events", "commands", "verifications", "gaps", "limit_overrides",
                              "alarm_acks", *(("packet_keys", "passes") if self._key_tables else ()),
                              *(("file_transfers",) if self._file_table else ())):
                    orphans = db.execute(f"SELECT count(*) FROM {table} WHERE sc NOT IN "  # noqa: S608 - fixed names
                                               "(SELECT id FROM spacecraft)").fetchone()[0]
                    if orphans:
                        problems.append(f"{table}: {orphans} rows of an unknown spacecraft")
            except sqlite3.DatabaseError as exc:  # damaged where SQLite reads it: said, not raised
                problems.append(f"sqlite: {exc}: the file is damaged; what comes after this was not checked")
        return problems

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


_FINAL_STATES = frozenset({"completed", "failed", "timeout", "rejected", "cancelled", "unresolved"})


def _outcome(reports: Sequence[ArchivedReport], said: str | None, state: str | None = None) -> tuple[str, bool]:
    """The final word on a command: a failure, else completion, else the sender's word, a final
    queue state, the last stage the agent reported, or the queue's state."""
    fail = next((r for r in reports if not r.success), None)
    if fail is not None:
        return f"failed at {fail.stage}: {fail.code} {fail.reason}".rstrip(), True
    if any(r.stage == Stage.COMPLETED.value for r in reports):
        return Stage.COMPLETED.value, True
    final = state in _FINAL_STATES
    if said:
        return said, final
    if final:
        return state, True
    if reports:  # the agent's word is newer than a queue state that is not final
        return max(reports, key=lambda r: _STAGE_ORDER.get(r.stage, 0)).stage, False
    return state or "unknown", False


class ArchiveLimitStore:
    """Limit overrides kept in the archive, shaped like ``ground.alarms.LimitStore``
    (``overrides`` and ``set``), so ``AlarmManager(limit_store=archive.limit_store())`` keeps
    the operator's limits across restarts in the same file as the telemetry."""

    def __init__(self, archive: Archive, spacecraft: str = DEFAULT_SPACECRAFT):
        self.archive = archive
        self.spacecraft = check_spacecraft(spacecraft)
        self.overrides: dict[str, Limits] = archive.limit_overrides(spacecraft)

    def set(self, channel: str, limits: Limits) -> None:
        self.archive.set_limits(channel, limits, spacecraft=self.spacecraft)
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
    sealed: int = 0
    duplicates: int = 0  # packets the archive had already (each packet is archived once)


class ArchiveRecorder:
    """Archives everything a :class:`~ground.client.GroundClient` receives, in batches.

    The client calls it for each packet (``client.listeners``); it only queues the packet with
    its received time, so intake never waits on the disk. A writer thread commits the queue
    when ``batch_packets`` are waiting or the oldest has waited ``max_delay_s`` — so a crash
    of the process loses at most about ``max_delay_s`` of packets — then seals what is due
    (:meth:`Archive.seal`). :meth:`close` (or :meth:`flush`, or closing the archive, or the
    interpreter exiting) writes what is queued. A batch the database refuses (locked, disk
    full) stays queued and is retried every ``max_delay_s``; only beyond ``max_pending``
    packets are the oldest dropped, and counted (``dropped``); :attr:`failing` says so meanwhile.

    Each batch commits durably (``batch(durable=True)``). With ``collect_keys`` the keys
    (:func:`~ground.completeness.packet_key`) of the packets committed, of those dropped, and of
    those the archive already had, wait for :meth:`take_keys`: the ground server acknowledges to
    the agent's store only what the archive holds (found in audit: it acknowledged packets held
    only in memory), and counts a packet archived before its restart as a duplicate, not as new.
    """

    def __init__(self, archive: Archive, batch_packets: int = 500, max_delay_s: float = 0.5,
                 clock: Callable[[], float] = time.time, max_pending: int = 200_000,
                 spacecraft: str = DEFAULT_SPACECRAFT, collect_keys: bool = False):
        if batch_packets < 1 or max_delay_s <= 0:
            raise ValueError("batch_packets must be at least 1 and max_delay_s above 0")
        self.archive = archive
        self.spacecraft = check_spacecraft(spacecraft)
        self.batch_packets = batch_packets
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.max_pending = max_pending
        self.recorded = 0
        self.dropped = 0
        self.flushes = 0
        self.errors = 0
        self.sealed = 0
        self.duplicates = 0
        self.last_error = ""
        self._failing = False
        self._pending: list[tuple[Received, float]] = []
        self.collect_keys = collect_keys
        self._committed_keys: list[tuple[int, int, int]] = []  # for take_keys (collect_keys)
        self._lost_keys: list[tuple[int, int, int]] = []
        self._copy_keys: list[tuple[int, int, int]] = []  # committed ones the archive had already
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
                                    result.outcome, result.reports, spacecraft=self.spacecraft)

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
        """Write everything queued now, in one transaction, then seal what is due; return how
        many packets were written (a packet the archive had already is not written again)."""
        with self._flush_lock:
            with self._queue_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                dups = 0
                copies: list[Received] = []
                with self.archive.batch(durable=True):
                    for item, received_s in batch:
                        if self.archive.record(item, received_s, self.spacecraft) is None:
                            dups += 1
                            copies.append(item)
            except Exception as exc:  # noqa: BLE001 - sqlite3.Error (locked, disk full) or a closed archive
                with self._queue_lock:
                    self._pending[:0] = batch  # back to the front, in order, for the next try
                    excess = len(self._pending) - self.max_pending
                    if excess > 0:
                        if self.collect_keys:
                            self._lost_keys.extend(k for k in map(_item_key, (i for i, _ in self._pending[:excess]))
                                                   if k is not None)
                        del self._pending[:excess]
                        self.dropped += excess
                self._failed(f"cannot write {len(batch)} packets, keeping them queued", exc)
                return 0
            if self.collect_keys:  # committed, on disk: now the agent may delete them (found in audit)
                keys = [k for k in (_item_key(item) for item, _ in batch) if k is not None]
                had = [k for k in map(_item_key, copies) if k is not None]
                with self._queue_lock:
                    self._committed_keys.extend(keys)
                    self._copy_keys.extend(had)
            if self._failing:
                print(f"archive: writing again after {self.errors} failed attempt(s)", file=sys.stderr)
                self._failing = False
            self.recorded += len(batch) - dups
            self.duplicates += dups
            self.flushes += 1
            try:
                self.sealed += self.archive.seal()
            except Exception as exc:  # noqa: BLE001 - the packets are committed; sealing is tried again next flush
                self._failed("cannot seal housekeeping (the packets are kept unsealed)", exc)
                self._failing = False
            return len(batch) - dups

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self.errors or str(exc) != self.last_error:
            print(f"archive: {what}: {exc}", file=sys.stderr)
        self.errors += 1
        self.last_error = str(exc)
        self._failing = True

    @property
    def failing(self) -> bool:
        """The last write the database refused, and packets wait for the next try."""
        return self._failing

    def take_keys(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """The keys of the packets committed, of those dropped, and of those among the committed that
        the archive already had (``CompletenessTracker.committed``'s ``copies``), since the last call
        (``collect_keys``); taken together, so that a copy is never told apart from its commit."""
        with self._queue_lock:
            committed, self._committed_keys = self._committed_keys, []
            lost, self._lost_keys = self._lost_keys, []
            copies, self._copy_keys = self._copy_keys, []
        return committed, lost, copies

    def statistics(self) -> RecorderStatistics:
        with self._queue_lock:
            pending = len(self._pending)
        return RecorderStatistics(self.recorded, pending, self.dropped, self.flushes, self.errors, self.last_error,
                                  self.sealed, self.duplicates)

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


def _item_key(item: Received) -> tuple[int, int, int] | None:
    """A received packet's key, as the client's tracker made it; None for one whose header does not read."""
    packet = item.packet
    if packet is None:
        try:
            packet = unpack(bytes(item.raw))
        except (PacketError, ValueError, TypeError):
            return None
    if not isinstance(packet, Telemetry):
        return None
    return packet_key(packet.apid, packet.seq_count, packet.time_s)


# --- schema 1 → 2 ---------------------------------------------------------------------------


def _received_from_raw(raw: bytes, codec: Codec, gap: int = 0) -> Received:
    """What the client's intake makes of one packet (``GroundClient._take``, without its state)."""
    from ground.client import Received

    try:
        packet = unpack(raw)
        if not isinstance(packet, Telemetry):
            raise PacketError("type", "a telecommand arrived on the telemetry path")
        record = codec.decode_tm(packet)
    except PacketError as exc:
        return Received(raw, None, None, error=str(exc))
    return Received(raw, packet, record, gap)


def upgrade_v1(old_path: Path | str, new_path: Path | str, spacecraft: str = DEFAULT_SPACECRAFT,
               dictionary: Dictionary = DICTIONARY, batch_packets: int = 5000) -> dict[str, int]:
    """Convert a schema-1 archive into a new schema-2 file; return what was carried over.

    The old file is only read. Its packets go through :meth:`Archive.record` again (decoded as
    the client decodes them, their received times and gap counts kept), all under
    ``spacecraft``; command history (with the reports the sender handed over), limit
    overrides and alarm acknowledgements are copied. The new file is written beside
    ``new_path`` and renamed into place when complete; an existing ``new_path`` is refused.
    """
    old_path, new_path = Path(old_path), Path(new_path)
    check_spacecraft(spacecraft)
    if not old_path.exists():
        raise ArchiveError(f"no archive at {old_path}")
    if new_path.exists():
        raise ArchiveError(f"{new_path} exists; give --out a new file (the upgrade never writes over one)")
    # Found in audit: reading a WAL file with mode=ro made a -wal and -shm beside it and left them (a read-only
    # connection cannot remove them), so a refused schema-2 archive, or the old file once converted, could no longer be
    # read as immutable from a read-only copy. With nothing beside it the file's header is all there is: its version
    # is read from there, and what the reading makes is removed after it.
    beside = [suffix for suffix in ("-wal", "-shm", "-journal") if os.path.lexists(f"{old_path}{suffix}")]
    if not beside:
        version = _header_version(old_path)
        if version != 1:
            raise ArchiveError(f"{old_path} has archive schema {version}; upgrade converts schema 1 only")
    try:
        old = sqlite3.connect(f"{old_path.resolve().as_uri()}?mode=ro", uri=True)
        version = old.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if not beside:
            _leave_alone(old_path)
        raise ArchiveError(f"{old_path} is not a usable archive: {exc}") from None
    if version != 1:
        old.close()
        raise ArchiveError(f"{old_path} has archive schema {version}; upgrade converts schema 1 only")
    partial = new_path.with_name(f".{new_path.name}.upgrading")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{partial}{suffix}")
    codec = Codec(dictionary)
    done = {"packets": 0, "commands": 0, "reports": 0, "limit_overrides": 0, "alarm_acks": 0}
    try:
        gaps = dict(old.execute("SELECT packet, missing FROM gaps"))
        with Archive(partial, dictionary) as new:
            rows = old.execute("SELECT id, received_s, raw FROM packets ORDER BY id")
            while True:
                part = rows.fetchmany(batch_packets)
                if not part:
                    break
                with new.batch():
                    for pid, received_s, raw in part:
                        new.record(_received_from_raw(bytes(raw), codec, gaps.get(pid, 0)), received_s, spacecraft)
                done["packets"] += len(part)
            with new.batch():
                sc = new._sc_id(spacecraft)  # noqa: SLF001 - the upgrade writes rows record_command has no say in
                for cmd_id, name, opcode, args, who, sent_s, first_s, outcome in old.execute(
                        "SELECT cmd_id, name, opcode, args, who, sent_s, first_seen_s, outcome FROM commands"):
                    new._db.execute(  # noqa: SLF001
                        "INSERT INTO commands(sc, cmd_id, name, opcode, args, who, sent_s, first_seen_s, outcome) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sc, cmd_id) DO UPDATE SET name = excluded.name, "
                        "opcode = excluded.opcode, args = excluded.args, who = excluded.who, sent_s = excluded.sent_s, "
                        "first_seen_s = min(first_seen_s, excluded.first_seen_s), outcome = excluded.outcome",
                        (sc, cmd_id, name, opcode, args, who, sent_s, first_s, outcome))
                    done["commands"] += 1
                for row in old.execute("SELECT time_s, received_s, cmd_id, opcode, request_id, stage, success, code, "
                                       "reason, result FROM verifications WHERE packet IS NULL"):
                    new._db.execute(  # noqa: SLF001
                        "INSERT OR IGNORE INTO verifications(sc, packet, time_s, received_s, cmd_id, opcode, request_id, "
                        "stage, success, code, reason, result) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sc, *row))
                    done["reports"] += 1
                for row in old.execute("SELECT channel, limits, set_s, who FROM limit_overrides"):
                    new._db.execute("INSERT OR REPLACE INTO limit_overrides(sc, channel, limits, set_s, who) "  # noqa: SLF001
                                    "VALUES (?, ?, ?, ?, ?)", (sc, *row))
                    done["limit_overrides"] += 1
                for row in old.execute("SELECT channel, acked_s, who, state, value FROM alarm_acks ORDER BY id"):
                    new._db.execute("INSERT INTO alarm_acks(sc, channel, acked_s, who, state, value) "  # noqa: SLF001
                                    "VALUES (?, ?, ?, ?, ?, ?)", (sc, *row))
                    done["alarm_acks"] += 1
            new.seal(force=True)
            problems = new.check()
            if problems:
                raise ArchiveError(f"the upgraded archive fails its check: {'; '.join(problems)}")
        os.replace(partial, new_path)  # closed above: the WAL is checkpointed into it and gone
    except BaseException:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{partial}{suffix}")
        raise
    finally:
        old.close()
        if not beside:
            _leave_alone(old_path)
    return done


def _header_version(path: Path) -> int:
    """``PRAGMA user_version`` of an SQLite file with nothing beside it (no -wal: its header is current), read from the
    header without opening it (an empty file is SQLite's empty database, version 0); ArchiveError if not SQLite."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise ArchiveError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not header:
        return 0
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise ArchiveError(f"{path} is not a usable archive: file is not a database")
    return int.from_bytes(header[60:64], "big", signed=True)


def _leave_alone(path: Path) -> None:
    """Remove the -wal and -shm a read-only connection made beside ``path`` (it cannot): a connection that may write
    removes them as it closes, where it is the last one (another's are left to it), writing nothing to the file."""
    if not any(os.path.lexists(f"{path}{suffix}") for suffix in ("-wal", "-shm")):
        return
    try:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA query_only = 1")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
    except sqlite3.Error:  # may not write there: they stay, as SQLite left them
        pass
