"""The record of commands the agent started, kept on disk so that exactly-once survives a
restart (pure file I/O, no agent).

The dispatcher's retry cache lives in memory: a ``kill -9`` or a power cut forgot it, and a
retry that arrived after the restart ran the command a second time, while a command cut off
half-way was never answered. The journal closes both holes:

- read-only commands (``Command.read_only``: NOOP, PING, GET_PARAM...) are not recorded: they
  change nothing that outlives them but the command counters, so running one again on a retry
  after a restart does no harm, and the command path's checks cost no journal write and fsync;
- before a command's handler runs, a *started* record (cmd_id, a digest of the TC's data,
  opcode) is appended and synced: a command that may have run is known after any crash;
- when it ends, a *finished* record (success or the failure code and reason) is appended, and
  synced at the end of that loop turn (:meth:`CommandJournal.sync`), with the packet store's
  segments that hold its completion report, so the report goes out a fsync sooner;
- a TC whose cmd_id the journal knows is never run again: a finished one is answered with
  its outcome (without the result map, which is not kept); a started one that never
  finished was cut off by a reset, and is answered as failed, saying so.

Format: one record after another, each ``marker (4 bytes) | length (u32 BE) | msgpack [cmd_id,
kind, digest, opcode, ok, code, reason] | CRC-32 (u32 BE)``. At start the file is read to its end. A
record that fails (its marker, a length no record has, its CRC or its contents) is skipped, and
reading goes on at the next marker: one damaged byte loses the records it touches, not every one
after it. Each damaged stretch is counted (``bad_records``); the file is then moved aside
(``commands.journal.corrupt``) and said at start (``load_error``, STATE_CORRUPT), and the commands
read are kept. A torn last record (the power cut mid-append: a part of a marker, or a marker and
a length that runs past the end) is dropped unsaid, as it never counted; any other failure of the
last record is damage. Where records were dropped the file is rewritten without them, so that
appends frame again; where the disk refuses that, a damaged file moved aside is put back, and
read again at the next start (appends resume after its damage at the next marker). A journal
written before records had a marker is read as it was written, then rewritten with them; where
that rewrite failed and marked records followed, both parts are read at the next start. A
journal that cannot be read (a directory in its place, no permission) is moved aside where it
can be, and said; where it cannot, appends fail and commands that change something are refused
(the dispatcher), never run twice. Bounded: past ``2 × window`` records the file is rewritten
atomically with the newest ``window`` commands (``flight.storage.write_atomic``).

fsync policy, stated: every record is made durable with ``fdatasync`` on the descriptor the
journal keeps open (an append's data and its size, not its times; fsync where the OS has no
fdatasync). The *started* record is synced before the command runs (the guarantee that nothing
runs twice rests on it); *finished* records at the end of the loop turn (or by the next
*started* record's sync, whichever is first). A power cut in between loses a *finished* record,
not the command: a retry after the restart is answered as cut off by a reset, as it would be had
the cut come a moment earlier, and the completion report went to the store under the same
policy.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import msgpack

from flight.storage import fsync_path, quarantine, write_atomic

_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync where the OS has it (Linux: the boards)
JOURNAL_COMMANDS = 4096  # commands remembered: far longer than any retry, across restarts
_HEADER = struct.Struct(">I")
MAX_RECORD = 1024  # bytes of payload: a reason is cut to 200 characters
MARKER = b"\xa5CJ\x01"  # starts every record: reading finds the next record after a damaged one
_HEAD = len(MARKER) + _HEADER.size


def _torn(data: bytes, at: int) -> bool:
    """``data[at:]`` is the start of a record whose append a power cut stopped: a part of the marker, or the
    marker and a length that fits the record and runs past the end. Anything else there is damage."""
    rest = data[at:]
    if len(rest) < len(MARKER):
        return MARKER.startswith(rest)
    if not rest.startswith(MARKER):
        return False
    if len(rest) < _HEAD:
        return True
    (length,) = _HEADER.unpack_from(rest, len(MARKER))
    return length <= MAX_RECORD and _HEAD + length + _HEADER.size > len(rest)


@dataclass(frozen=True)
class JournalEntry:
    cmd_id: int
    digest: bytes
    opcode: int
    finished: bool = False
    ok: bool = False
    code: int = 0
    reason: str = ""


class CommandJournal:
    """Commands started and how they ended, by cmd_id, newest ``window`` kept."""

    def __init__(self, path: Path | str, window: int = JOURNAL_COMMANDS):
        self.path = Path(path)
        self.window = window
        self.entries: OrderedDict[int, JournalEntry] = OrderedDict()
        self.bad_records = 0  # damaged stretches skipped at start
        self.load_error: str | None = None  # what was wrong with the file at start, and what is in force
        self._records = 0
        self._compact_at = 0  # records from which a rewrite is tried (past 2 * window; later after one failed)
        self._unsynced = False  # a finished record written since the last fsync
        self._rewrite_due = False  # an outcome memory alone holds (its record refused): the file written anew
        self._fd: int | None = None  # kept open for appends (O_APPEND): no open and close a command
        self._load()

    def get(self, cmd_id: int) -> JournalEntry | None:
        return self.entries.get(cmd_id)

    def started(self, cmd_id: int, digest: bytes, opcode: int) -> None:
        """Record that the command is about to run; raises OSError if that cannot be made durable."""
        entry = JournalEntry(cmd_id, bytes(digest), int(opcode))
        self._append(entry, "S")

    def finished(self, cmd_id: int, ok: bool, code: int, reason: str) -> None:
        """Record the outcome; made durable by :meth:`sync` at the end of the loop turn."""
        started = self.entries.get(cmd_id)
        if started is None:
            return
        entry = JournalEntry(cmd_id, started.digest, started.opcode, True, bool(ok), int(code), reason[:200])
        try:
            self._append(entry, "F", durable=False)
        except OSError:
            # Known this boot all the same, and written with the whole journal once the disk takes a record again
            # (:meth:`sync`, :meth:`close`): found in audit, a command whose record the full disk refused was
            # answered, at a retry past the retry cache, "interrupted by a reset" and COMMAND_STATUS turned from
            # completed to failed, with no reset (and, in review, after a clean restart too)
            self._remember(entry)
            self._rewrite_due = True
            raise

    def sync(self) -> None:
        """Sync what :meth:`finished` appended since the last sync (nothing when nothing was). Where an outcome
        memory alone holds, and the disk has taken a record since, the journal is written anew instead."""
        if not self._unsynced:
            return
        if self._rewrite_due and self._rewritten():
            return
        self._sync(self._open(), _datasync)
        self._unsynced = False

    def _sync(self, fd: int, how) -> None:
        """``how(fd)``; on failure the file is written anew from memory before the error goes on.

        After a failed fsync the kernel may have dropped the pages it could not write, and a later
        fsync on the same descriptor reports success: so the descriptor is closed and the journal
        rewritten atomically (every command this agent knows, one record each); if that fails too,
        the next append tries again on a fresh descriptor."""
        try:
            how(fd)
        except OSError:
            self._drop_fd()
            try:
                self._compact()
            except OSError:
                pass
            raise

    def _rewritten(self) -> bool:
        """The journal written anew from memory (atomically, synced), an outcome it alone held among it."""
        try:
            self._compact()
        except OSError:
            return False  # the disk still refuses: tried again when it takes a record
        self._rewrite_due = self._unsynced = False
        return True

    def close(self) -> None:
        """Sync and close the file (the agent's clean end; appending again reopens it)."""
        if self._rewrite_due:
            self._rewritten()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._unsynced:
                    _datasync(fd)
                    self._unsynced = False
            finally:
                os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    # --- the file -----------------------------------------------------------------------------

    @staticmethod
    def _encode(entry: JournalEntry, kind: str) -> bytes:
        payload = msgpack.packb([entry.cmd_id, kind, entry.digest, entry.opcode, entry.ok, entry.code, entry.reason],
                                use_bin_type=True)
        return MARKER + _HEADER.pack(len(payload)) + payload + _HEADER.pack(zlib.crc32(payload))

    def _open(self) -> int:
        """The descriptor appends go to; a file made here has its directory entry synced too (a
        record's fdatasync makes its data durable, not the name that finds it)."""
        if self._fd is None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fsync_path(self.path.parent)
                except OSError:  # not made: the next append makes it again, and syncs its name
                    os.close(fd)
                    try:
                        os.unlink(self.path)
                    except OSError:
                        pass
                    raise
            self._fd = fd
        return self._fd

    def _drop_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _append(self, entry: JournalEntry, kind: str, durable: bool = True) -> None:
        record = self._encode(entry, kind)
        fd = self._open()
        view = memoryview(record)
        try:
            while view:  # a short write goes on where it stopped
                view = view[os.write(fd, view):]
        except OSError:
            try:  # no torn record left for the next append to frame after: cut what this one wrote
                os.ftruncate(fd, os.fstat(fd).st_size - (len(record) - len(view)))
            except OSError:
                self._drop_fd()
            raise
        if durable:  # the data and the new size: all a reader after a power cut needs
            self._sync(fd, _datasync)
        self._unsynced = not durable
        self._remember(entry)
        self._records += 1
        if self._records > 2 * self.window and self._records >= self._compact_at:
            try:
                self._compact()
            except OSError:  # the record is kept (appended, synced): the file only grows a while longer (found in
                # audit: raised, every later command that changes something was refused, recorded all the same)
                self._compact_at = self._records + self.window  # tried again a window of records later

    def _remember(self, entry: JournalEntry) -> None:
        self.entries[entry.cmd_id] = entry
        self.entries.move_to_end(entry.cmd_id)
        while len(self.entries) > self.window:
            self.entries.popitem(last=False)

    def _compact(self) -> None:
        """The newest ``window`` commands, one record each, written atomically."""
        data = b"".join(self._encode(e, "F" if e.finished else "S") for e in self.entries.values())
        write_atomic(self.path, data)
        self._drop_fd()  # the old file's descriptor: appends go to the new one
        self._records = len(self.entries)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:  # a directory in its place, no permission: the agent starts all the same
            moved = quarantine(self.path)
            self.load_error = (f"unreadable ({exc.strerror or type(exc).__name__}); " + (
                f"moved aside ({moved.name}), an empty journal in force: a command from before this start, "
                "retried, may run again" if moved else
                "could not be moved aside: commands that change something are refused until it can be written"))
            return
        legacy = bool(data) and not data.startswith(MARKER)
        if legacy:  # written before the markers, or its first marker damaged: the old format first
            end = self._read_legacy(data)
            resume = data.find(MARKER, end)  # records appended since (its rewrite failed), or the rest
            end = self._read(data, resume) if resume >= 0 else end
        else:
            end = self._read(data, 0)
        moved = quarantine(self.path) if self.bad_records else None
        where = f"moved aside ({moved.name})" if moved else "could not be moved aside"
        if legacy or self.bad_records or end < len(data):
            try:  # without what was dropped, so that appends frame again
                self._compact()
            except OSError as exc:  # appends go on after it: the old part, then the markers, are read at the next start
                if moved is not None:  # put back: moved aside and not rewritten, the commands read were in no file
                    try:  # the next start read none of them (found in audit: a full disk at a damaged journal's start)
                        os.replace(moved, self.path)
                        where = (f"not rewritten ({exc.strerror or type(exc).__name__}), so kept in place and read "
                                 "again at the next start")
                    except OSError:
                        pass
        if self.bad_records:
            self.load_error = (f"{self.bad_records} damaged stretch(es) of records skipped (marker, length, CRC or "
                               f"contents), {len(self.entries)} commands read and kept; {where}"
                               ": a command whose record was damaged, retried, may run again")

    def _read(self, data: bytes, at: int) -> int:
        """Records from ``data[at:]``; returns where the last one read ends (before a torn tail)."""
        damaged = False
        while at < len(data):
            entry, end = self._frame(data, at)
            if entry is not None:
                damaged = False
                self._records += 1
                self._remember(entry)
                at = end
                continue
            found = data.find(MARKER, at + 1)
            if found < 0 and not damaged and _torn(data, at):
                return at  # the last record, torn by a power cut mid-append: it never counted
            if not damaged:
                self.bad_records += 1
                damaged = True
            if found < 0:
                break
            at = found
        return len(data)

    def _frame(self, data: bytes, at: int) -> tuple[JournalEntry | None, int]:
        """The record at ``at`` and where it ends; None for one that fails (its marker, its length, its CRC,
        its contents)."""
        if not data.startswith(MARKER, at) or at + _HEAD > len(data):
            return None, at
        (length,) = _HEADER.unpack_from(data, at + len(MARKER))
        end = at + _HEAD + length + _HEADER.size
        if length > MAX_RECORD or end > len(data):
            return None, at
        return self._entry(data[at + _HEAD: end - _HEADER.size], data, end), end

    @staticmethod
    def _entry(payload: bytes, data: bytes, end: int) -> JournalEntry | None:
        (crc,) = _HEADER.unpack_from(data, end - _HEADER.size)
        if zlib.crc32(payload) != crc:
            return None
        try:
            cmd_id, kind, digest, opcode, ok, code, reason = msgpack.unpackb(payload, raw=False)
            return JournalEntry(int(cmd_id), bytes(digest), int(opcode), kind == "F", bool(ok), int(code), str(reason))
        except (ValueError, TypeError, msgpack.UnpackException):
            return None

    def _read_legacy(self, data: bytes) -> int:
        """A journal from before the markers, ``length | msgpack | CRC-32`` records, up to the first marked
        record (appended after a rewrite that failed) or the first that fails; returns where it stopped.
        Where marked records follow, a failure stops it (the markers read on from there: the first marker
        of a new journal damaged reads as this format, and its garbage must not be taken for lengths);
        where none do, a record whose CRC fails is skipped, as this format was always read."""
        at, damaged = 0, False
        # Whether a marker follows ``at``, in constant time (found in audit: ``MARKER in data[at:]`` at each
        # failed record made a zero-filled journal of 1 MB, 131,072 empty "records", take 49 s to read at boot).
        last_marker = data.rfind(MARKER)
        while at + _HEADER.size <= len(data) and not data.startswith(MARKER, at):
            (length,) = _HEADER.unpack_from(data, at)
            end = at + _HEADER.size + length + _HEADER.size
            if length > MAX_RECORD or end > len(data):
                if end > len(data) and length <= MAX_RECORD and last_marker < at:
                    return at  # torn by a power cut mid-append
                self.bad_records += not damaged  # nothing after it can be framed this way
                return at
            entry = self._entry(data[at + _HEADER.size: end - _HEADER.size], data, end)
            if entry is None:
                self.bad_records += not damaged  # one damaged stretch, however many records it holds
                damaged = True
                if last_marker >= at:
                    return at
                at = end
                continue
            damaged = False
            at = end
            self._records += 1
            self._remember(entry)
        return at
