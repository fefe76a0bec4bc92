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

Format: one record after another, each ``length (u32 BE) | msgpack [cmd_id, kind, digest,
opcode, ok, code, reason] | CRC-32 (u32 BE)``. At start the file is read to its end; a record
whose CRC fails is skipped (counted in ``bad_records``) and a torn last record (the power cut
mid-append) is dropped, the file rewritten without it so that appends frame again. Bounded: past ``2 × window`` records the file is rewritten
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

from flight.storage import fsync_path, write_atomic

_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync where the OS has it (Linux: the boards)
JOURNAL_COMMANDS = 4096  # commands remembered: far longer than any retry, across restarts
_HEADER = struct.Struct(">I")
MAX_RECORD = 1024  # bytes of payload: a reason is cut to 200 characters


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
        self.bad_records = 0
        self._records = 0
        self._unsynced = False  # a finished record written since the last fsync
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
        self._append(JournalEntry(cmd_id, started.digest, started.opcode, True, bool(ok), int(code), reason[:200]),
                     "F", durable=False)

    def sync(self) -> None:
        """Sync what :meth:`finished` appended since the last sync (nothing when nothing was)."""
        if not self._unsynced:
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

    def close(self) -> None:
        """Sync and close the file (the agent's clean end; appending again reopens it)."""
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
        return _HEADER.pack(len(payload)) + payload + _HEADER.pack(zlib.crc32(payload))

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
        if self._records > 2 * self.window:
            self._compact()

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
        at = 0
        while at + _HEADER.size <= len(data):
            (length,) = _HEADER.unpack_from(data, at)
            end = at + _HEADER.size + length + _HEADER.size
            if length > MAX_RECORD or end > len(data):
                if end > len(data) and length <= MAX_RECORD:
                    break  # the last record, torn by a power cut mid-append: it never counted
                self.bad_records += 1  # a length no record has: nothing after it can be framed
                break
            payload = data[at + _HEADER.size: at + _HEADER.size + length]
            (crc,) = _HEADER.unpack_from(data, end - _HEADER.size)
            at = end
            self._records += 1
            if zlib.crc32(payload) != crc:
                self.bad_records += 1
                continue
            try:
                cmd_id, kind, digest, opcode, ok, code, reason = msgpack.unpackb(payload, raw=False)
                entry = JournalEntry(int(cmd_id), bytes(digest), int(opcode), kind == "F", bool(ok), int(code),
                                     str(reason))
            except (ValueError, TypeError, msgpack.UnpackException):
                self.bad_records += 1
                continue
            self._remember(entry)
        if at < len(data):  # a torn or unframeable tail: rewrite what was read, so appends frame again
            self._compact()
