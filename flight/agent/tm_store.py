"""The on-board packet store, in the style of PUS service 15: every packet the agent sends is
kept on disk until the ground says it has it (pure file I/O, no agent, no link).

Why: a spacecraft in low orbit sees the ground a few minutes per pass. Telemetry sent while
nobody listens went nowhere (a 20-s outage lost every packet of it); now each packet is
appended here first, and what the ground has not acknowledged is played back later.

Three stores, one per priority class (PUS 15 keeps packet stores per kind of data; F Prime's
DpCatalog orders data products by priority, then age):

========  ==========================================  =====================================
class     what                                        when the store is full
========  ==========================================  =====================================
REPORTS   verification reports (PUS 1), events (5)     dropped last
OTHER     parameter reports, plans, pongs, the rest   dropped second
HK        housekeeping (PUS 3)                        dropped first, oldest first
========  ==========================================  =====================================

On disk (``DIR/``): each class is a chain of segment files ``CLASS-FIRSTID.seg`` (FIRSTID, the
store id of its first record, 16 hex digits). A record is ``MAGIC (2) | length (u32 BE) |
payload | CRC-32 of payload (u32 BE)``, the payload ``store_id (u64) | time_ms (i64) | apid
(u16) | seq_count (u16) | packet``. Store ids rise across restarts. What the ground
acknowledged goes to ``acks.log`` (ranges of store ids, same framing); a segment all of whose
records are acknowledged is deleted. Reading a segment checks every CRC: a bad record is
skipped and counted (``corrupt_records``), framing resumes at the next MAGIC, and a torn last
record (a power cut in mid-append) is cut off so that appends frame again.

Bounded: past ``max_bytes`` the oldest segment of the lowest class that has data is deleted,
its records not yet acknowledged counted in ``dropped`` (per class). The newest data of the
highest class is the last thing to go.

fsync policy, stated (``bench.reliability`` measures it): every record is handed to the kernel
with one ``os.write`` as it is appended, so a ``kill -9`` of the agent loses nothing appended.
The segments written since the last sync are synced (``fdatasync``: the data and the size, not
the file's times) after every loop turn that stored a report or an event, and at least every
``SYNC_PERIOD_S`` otherwise, in the loop (:meth:`PacketStore.sync`) or by a
:class:`BackgroundSync` thread (:meth:`PacketStore.take_dirty`; ``[store] fsync``,
:func:`sync_in_thread`): a power cut loses no report or event the agent had sent a fsync before,
and at most the last ``SYNC_PERIOD_S`` of housekeeping, parameter reports and plans.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from flight.link.packets import MAX_SEQ_COUNT, PacketError, Telemetry, unpack
from flight.storage import quarantine, write_atomic

_datasync = getattr(os, "fdatasync", os.fsync)
"""How an active segment's appends are made durable: ``fdatasync`` where the OS has it (Linux, the
boards). An append changes the file's size, which fdatasync flushes with the data (the size is
needed to read them back); what it skips, the times, no reader needs. On this project's 2-CPU VM
(ext4): p50 110 us against fsync's 158 us for a 300-byte append. A segment's creation is made
durable by its directory's fsync, its sealing and the other files by fsync."""

MAGIC = b"\xa5\x5a"
_FRAME = struct.Struct(">2sI")  # magic, payload length
_CRC = struct.Struct(">I")
_META = struct.Struct(">QqHH")  # store_id, time_ms, apid, seq_count
# Read errors that say these bytes are lost (the medium, or a filesystem checksum: ext4 and f2fs
# say EBADMSG or EUCLEAN), not that the disk is busy or out of descriptors.
_UNREADABLE = frozenset(e for e in (errno.EIO, errno.EBADMSG, errno.ENODATA, getattr(errno, "EUCLEAN", None))
                        if e is not None)
_RANGE = struct.Struct(">QQ")  # an acknowledged range of store ids, inclusive
_HIGHEST = struct.Struct(">Q")  # in acks.log too: the highest store id ever given
MAX_PACKET = 65_542 + 64  # the longest Space Packet, with room to spare: a longer length is corrupt
SEGMENT_BYTES = 256 * 1024  # a segment: small enough that dropping one loses little, large
#                             enough that a day of housekeeping is a few hundred files
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the whole store; eMMC has room, a pass cannot drain more
SYNC_PERIOD_S = 5.0
_ACK_SCAN_MAX = 64  # records of the segment being written an acknowledgement's run walks; past it, sorted by key
_NAME = re.compile(r"^(REPORTS|OTHER|HK)-([0-9a-f]{16})\.seg$")

# Record states, one byte each (``Segment.state``).
UNSENT = 0     # not yet on the link
SENT = 1       # on the link (live or played back), waiting for the ground's acknowledgement
ACKED = 2      # the ground has it (or it was deleted by command): never played back again


class StoreClass(enum.IntEnum):
    """Priority classes; a lower value is played back first and dropped last."""

    REPORTS = 0
    OTHER = 1
    HK = 2


def class_of(service: int) -> StoreClass:
    """Which store a telemetry packet of PUS ``service`` goes to."""
    if service in (1, 5):
        return StoreClass.REPORTS
    if service == 3:
        return StoreClass.HK
    return StoreClass.OTHER


@dataclass(frozen=True)
class StoredPacket:
    store_id: int
    store: StoreClass
    time_ms: int
    apid: int
    seq_count: int
    packet: bytes


class Segment:
    """One segment file's index in memory: parallel compact arrays, one entry per record."""

    __slots__ = ("cls", "path", "first_id", "ids", "offsets", "lengths", "times", "apids", "seqs", "state",
                 "sent_at", "size", "unacked", "ordered", "first_open", "unsent", "min_sent_at", "keyed")

    def __init__(self, cls: StoreClass, path: Path, first_id: int):
        self.cls = cls
        self.path = path
        self.first_id = first_id
        self.ids = array("Q")
        self.offsets = array("Q")   # of the packet bytes in the file
        self.lengths = array("I")
        self.times = array("q")
        self.apids = array("H")
        self.seqs = array("H")
        self.state = bytearray()
        self.sent_at = array("d")   # monotonic seconds of the last send (SENT only)
        self.size = 0               # bytes in the file
        self.unacked = 0
        self.ordered = True         # times non-decreasing (a clock step back breaks it: then scan)
        self.first_open = 0         # every record before this index is acknowledged
        self.unsent = 0             # records never sent
        self.min_sent_at = float("inf")  # no SENT record was sent earlier than this (a bound)
        self.keyed: tuple[array, array] | None = None  # (indexes, their APID << 14 | count) by key: :meth:`by_key`

    def add(self, store_id: int, offset: int, length: int, time_ms: int, apid: int, seq: int, state: int,
            sent_at: float) -> None:
        if self.times and time_ms < self.times[-1]:
            self.ordered = False
        self.ids.append(store_id)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.times.append(time_ms)
        self.apids.append(apid)
        self.seqs.append(seq)
        self.state.append(state)
        self.sent_at.append(sent_at)
        self.keyed = None
        if state != ACKED:
            self.unacked += 1
        if state == UNSENT:
            self.unsent += 1
        elif state == SENT:
            self.min_sent_at = min(self.min_sent_at, sent_at)

    def index_of(self, store_id: int) -> int | None:
        i = bisect_left(self.ids, store_id)
        return i if i < len(self.ids) and self.ids[i] == store_id else None

    def by_key(self) -> array:
        """Record indexes sorted by (APID, sequence count): an acknowledgement's run finds its records in a
        sealed segment by two bisections, not by walking every record of its times (found in audit: a run
        over all times walked the whole store, and 512 of them held the loop for seconds). 8 bytes a record."""
        if self.keyed is None:
            apids, seqs = self.apids, self.seqs
            order = sorted(range(len(self.ids)), key=lambda i: (apids[i] << 14 | seqs[i], i))
            self.keyed = (array("I", order), array("I", (apids[i] << 14 | seqs[i] for i in order)))
        return self.keyed[0]

    def with_counts(self, apid: int, seq_lo: int, seq_hi: int) -> Iterator[int]:
        """Indexes of the records of ``apid`` whose count lies in seq_lo..seq_hi (modulo 2**14, as a run's)."""
        order = self.by_key()
        keys = self.keyed[1]
        spans = ((seq_lo, seq_hi),) if seq_lo <= seq_hi else ((seq_lo, MAX_SEQ_COUNT), (0, seq_hi))
        for lo, hi in spans:
            for k in range(bisect_left(keys, apid << 14 | lo), bisect_right(keys, apid << 14 | hi)):
                yield order[k]

    def span(self, lo_ms: int, hi_ms: int) -> range:
        """Indexes whose time may lie in [lo_ms, hi_ms]."""
        if not self.ordered:
            return range(len(self.ids))
        return range(bisect_left(self.times, lo_ms), bisect_right(self.times, hi_ms))


@dataclass
class StoreStats:
    records: int = 0            # held and not yet acknowledged
    bytes: int = 0              # of segment files
    dropped: dict[StoreClass, int] = field(default_factory=lambda: {c: 0 for c in StoreClass})
    corrupt_records: int = 0    # failed their CRC when read (since start)
    torn_tails: int = 0         # records cut short by a crash, dropped at start
    acks_ambiguous: int = 0     # times an acknowledgement run named a record with another of its count: kept
    ack_visited: int = 0        # records acknowledgements looked at (since start): their cost, bounded per run


class StoreError(OSError):
    """The store's directory cannot be used."""


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(MAGIC, len(payload)) + payload + _CRC.pack(zlib.crc32(payload))


def _records(data: bytes | memoryview, max_payload: int) -> tuple[list[tuple[int, int, bytes | None]], int]:
    """Walk the records framed in ``data``: ([(start, end, payload or None if damaged)], the end
    of the last good record). Damage is skipped by looking for the next MAGIC from one byte
    on (a corrupt length must not swallow good records after it); what follows the last good
    record is the torn tail of a crash, for the caller to cut."""
    out: list[tuple[int, int, bytes | None]] = []
    at, n, good_end = 0, len(data), 0
    while at + _FRAME.size <= n:
        magic, length = _FRAME.unpack_from(data, at)
        end = at + _FRAME.size + length + _CRC.size
        payload = None
        if magic == MAGIC and length <= max_payload and end <= n:
            candidate = bytes(data[at + _FRAME.size: at + _FRAME.size + length])
            (crc,) = _CRC.unpack_from(data, end - _CRC.size)
            if zlib.crc32(candidate) == crc:
                payload = candidate
        if payload is not None:
            out.append((at, end, payload))
            at = good_end = end
            continue
        nxt = bytes(data[at + 1:]).find(MAGIC)
        stop = n if nxt < 0 else at + 1 + nxt
        out.append((at, stop, None))
        at = stop
    if at < n:
        out.append((at, n, None))
    # Damage after the last good record is the torn tail, not a corrupt record.
    while out and out[-1][2] is None and out[-1][0] >= good_end:
        out.pop()
    return out, good_end


class PacketStore:
    """The packet store: append, acknowledge, play back, drop when full, survive crashes."""

    def __init__(self, directory: Path | str, max_bytes: int = DEFAULT_MAX_BYTES, segment_bytes: int = SEGMENT_BYTES):
        if max_bytes < 4 * segment_bytes:
            raise ValueError(f"max_bytes: {max_bytes} is less than four segments of {segment_bytes} bytes")
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes)
        self.stats = StoreStats()
        self.segments: dict[StoreClass, list[Segment]] = {c: [] for c in StoreClass}
        self._fds: dict[Path, int] = {}
        self._reader: tuple[Path, int] | None = None  # the segment being read (playback), its descriptor kept open
        self._dirty: set[StoreClass] = set()
        self._acks_path = self.dir / "acks.log"
        self._ack_records = 0
        self._ack_compacted = 0
        self._unlogged: list[tuple[int, int]] = []  # acknowledged in memory, their write to acks.log refused
        self._next_id = 1
        self.unreadable_segments: list[str] = []  # segment files the disk could not give back at start
        self.acks_error: str | None = None  # acks.log could not be read at start: why, and what was done
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"packet store {self.dir}: {exc.strerror or exc}") from exc
        self._load()

    # --- writing ------------------------------------------------------------------------------

    @property
    def next_id(self) -> int:
        """The id the next record kept will have: ids grow in the order records are kept."""
        return self._next_id

    def append(self, packet: bytes, sent_at: float | None = None, *, tm: Telemetry | None = None) -> StoredPacket:
        """Keep one telemetry packet; ``sent_at`` (monotonic s) if it already went out live; ``tm``
        is ``unpack(packet)`` where the caller has it already (the downlink: not unpacked twice).

        Raises :class:`PacketError` if ``packet`` is not a telemetry packet (the agent only
        stores what it made), OSError if the disk refuses (the caller counts it)."""
        if tm is None:
            tm = unpack(packet)
        if not isinstance(tm, Telemetry):
            raise PacketError("type", "the packet store keeps telemetry packets only")
        cls = class_of(tm.service)
        time_ms = int(round(tm.time_s * 1000.0))
        store_id = self._next_id
        payload = _META.pack(store_id, time_ms, tm.apid, tm.seq_count) + bytes(packet)
        seg = self._active(cls, len(payload))
        record = _frame(payload)
        fd = self._fd(seg.path)
        view = memoryview(record)
        try:
            while view:  # a full disk writes part of a record and says how much: the rest, or an error
                view = view[os.write(fd, view):]
        except OSError:
            try:  # no part of a record left in front of the next one, whose offset seg.size gives
                os.ftruncate(fd, seg.size)
            except OSError:  # then the next goes after it, where the file ends; reading skips the part (its CRC)
                with contextlib.suppress(OSError):
                    seg.size = os.fstat(fd).st_size
            raise
        self._next_id += 1
        seg.add(store_id, seg.size + _FRAME.size + _META.size, len(packet), time_ms, tm.apid, tm.seq_count,
                UNSENT if sent_at is None else SENT, 0.0 if sent_at is None else sent_at)
        seg.size += len(record)
        self.stats.bytes += len(record)
        self.stats.records += 1
        self._dirty.add(cls)
        self._make_room()
        return StoredPacket(store_id, cls, time_ms, tm.apid, tm.seq_count, bytes(packet))

    def sync(self, classes: Iterable[StoreClass] | None = None) -> int:
        """fsync the active segments written since the last sync (of ``classes``, or all), here
        and now; returns how many files were synced."""
        done = 0
        for cls in list(self._dirty if classes is None else set(classes) & self._dirty):
            segs = self.segments[cls]
            if segs and segs[-1].path in self._fds:
                _datasync(self._fds[segs[-1].path])
                done += 1
            self._dirty.discard(cls)
        return done

    def take_dirty(self, classes: Iterable[StoreClass] | None = None) -> list[int]:
        """For a sync made elsewhere (:class:`BackgroundSync`): a duplicate descriptor of each active
        segment written since the last sync (of ``classes``, or all), which then count as synced.
        The caller fsyncs and closes each; a duplicate stays valid when the store closes its own
        (a segment sealed or deleted meanwhile), so it never syncs a descriptor reused for another file."""
        fds: list[int] = []
        taken = list(self._dirty if classes is None else set(classes) & self._dirty)
        try:
            for cls in taken:
                segs = self.segments[cls]
                if segs and segs[-1].path in self._fds:
                    fds.append(os.dup(self._fds[segs[-1].path]))
        except OSError:  # no descriptor left: none handed over, none leaked, all still to sync
            for fd in fds:
                os.close(fd)
            raise
        self._dirty.difference_update(taken)
        return fds

    @property
    def dirty(self) -> frozenset[StoreClass]:
        return frozenset(self._dirty)

    def _active(self, cls: StoreClass, payload_len: int) -> Segment:
        segs = self.segments[cls]
        if not segs or segs[-1].size + payload_len > self.segment_bytes and segs[-1].ids:
            sealed = segs[-1] if segs else None
            if sealed is not None:
                self._seal(sealed)
            seg = Segment(cls, self.dir / f"{cls.name}-{self._next_id:016x}.seg", self._next_id)
            fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                self._fsync_dir()
            except OSError:  # the next append opens it again (found in audit: a descriptor leaked at each)
                os.close(fd)
                raise
            self._fds[seg.path] = fd
            segs.append(seg)
            if sealed is not None:
                # Wholly acknowledged while it was written (the ground in contact acknowledges as it goes): no
                # acknowledgement comes to delete it now (found in audit: such segments stayed until a restart, the
                # fill read 90 % with nothing held, and a full store dropped unacknowledged housekeeping for them).
                with contextlib.suppress(OSError):  # a file that will not go costs its room, not this record
                    self._release_acked(sealed)
        return segs[-1]

    def _seal(self, seg: Segment) -> None:
        seg.by_key()  # no more appends: its key index is made once, here, not by the next acknowledgement
        fd = self._fds.pop(seg.path, None)
        if fd is not None:
            try:
                os.fsync(fd)
            finally:  # closed whatever the fsync says: it is out of _fds, nothing else would close it
                os.close(fd)
            self._dirty.discard(seg.cls)

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND)
        return fd

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- dropping and deleting ----------------------------------------------------------------

    def _make_room(self) -> None:
        """Past ``max_bytes``: delete the oldest segment of the lowest class that has one, the one being
        written included: the class decides, then the age (found in audit: the oldest sealed segment of any
        class went first, so reports were dropped while housekeeping, all in its segment being written, was
        kept)."""
        while self.stats.bytes > self.max_bytes:
            victim = next(self.segments[c][0] for c in reversed(StoreClass) if self.segments[c])
            self.stats.dropped[victim.cls] += victim.unacked
            self._delete_segment(victim)

    def _delete_segment(self, seg: Segment) -> None:
        segs = self.segments[seg.cls]
        self._close_reader(seg.path)
        fd = self._fds.pop(seg.path, None)
        if fd is not None:
            os.close(fd)
            self._dirty.discard(seg.cls)
        try:
            os.unlink(seg.path)
        except FileNotFoundError:
            pass
        segs.remove(seg)
        self.stats.bytes -= seg.size
        self.stats.records -= seg.unacked

    def _release_acked(self, seg: Segment) -> None:
        """A segment whose every record the ground has goes, unless it is the one being written."""
        segs = self.segments[seg.cls]
        if seg.unacked == 0 and seg is not segs[-1]:
            self._delete_segment(seg)

    def delete_until(self, to_ms: int, classes: Iterable[StoreClass] = tuple(StoreClass)) -> int:
        """Forget every record of ``classes`` with time up to ``to_ms`` (PUS 15's delete up to a
        time); returns how many unacknowledged records went."""
        ids: list[int] = []
        for cls in classes:
            for seg in list(self.segments[cls]):
                for i in seg.span(-(2 ** 63), to_ms):
                    if seg.times[i] <= to_ms and seg.state[i] != ACKED:
                        ids.append(seg.ids[i])
        return self.acknowledge_ids(ids)

    # --- the ground's acknowledgements ------------------------------------------------------

    def acknowledge(self, runs: Iterable[tuple[int, int, int, int, int]]) -> int:
        """Mark as received what the ground says it has: runs of (apid, first seq, last seq, first
        time ms, last time ms), one per unbroken stretch of one APID's sequence. A record is
        acknowledged when its APID matches, its time lies within the run's and its sequence
        count within the run's (modulo 2**14), and no other record within the run, acknowledged or
        not, has its count at another time: two such are the counts of two boots, or of two turns of
        the counter, and the run names only one of them (found in audit: a run the ground joined
        across a reboot, the last counts of one boot and the next live count of the other, acknowledged
        the new boot's first packets, which the ground never had; both are played back, and the runs
        of what comes then are one boot's each). An acknowledged rival counts too (a second copy of an
        acknowledged packet joined with another boot's count freed a record never received, found in
        review); it stops counting once its segment, wholly acknowledged, is deleted. Records of one
        count at one time are one packet to the ground (a board clock that starts at the same value
        each boot): they go together. Returns how many records that newly covered."""
        ids: list[int] = []
        for apid, seq_lo, seq_hi, t_lo, t_hi in runs:
            width = (seq_hi - seq_lo) & MAX_SEQ_COUNT
            seq_hi = (seq_lo + width) & MAX_SEQ_COUNT
            by_count: dict[int, list[tuple[int, int, bool]]] = {}  # count -> (time ms, id, acknowledged already)
            for segs in self.segments.values():
                for seg in segs:
                    if not seg.times or seg.ordered and (seg.times[0] > t_hi or seg.times[-1] < t_lo):
                        continue
                    # A run looks up its counts in a segment's key index: it costs what it names, not the store.
                    # The segment being written walks a short span of times instead (its index is sorted again
                    # after each append), and sorts it for a long one, which the rest of this acknowledgement reuses.
                    found = seg.span(t_lo, t_hi)
                    if seg.keyed is not None or len(found) > _ACK_SCAN_MAX:
                        if seg.keyed is None:
                            self.stats.ack_visited += len(seg.ids)  # the sort: once per append, not per run
                        found = seg.with_counts(apid, seq_lo, seq_hi)
                    for i in found:
                        self.stats.ack_visited += 1
                        if (seg.apids[i] == apid and t_lo <= seg.times[i] <= t_hi
                                and (seg.seqs[i] - seq_lo) & MAX_SEQ_COUNT <= width):
                            by_count.setdefault(seg.seqs[i], []).append((seg.times[i], seg.ids[i],
                                                                          seg.state[i] == ACKED))
            for found in by_count.values():
                waiting = [record_id for _t, record_id, acked in found if not acked]
                if len({t for t, _id, _acked in found}) == 1:
                    ids += waiting
                else:
                    self.stats.acks_ambiguous += len(waiting)
        return self.acknowledge_ids(ids)

    def acknowledge_ids(self, ids: Iterable[int]) -> int:
        """Mark these store ids received, durably (``acks.log``, fsynced); returns how many were
        newly acknowledged. In memory whatever the disk says (the ground has them: they are not played
        back again); ranges whose write the disk refused are written with those of the next call, and
        it raises until they are (found in audit: a STORE_DELETE whose write failed freed its records in
        memory only, its retry found none to write and completed, and they came back at the next start)."""
        wanted = sorted(set(ids))
        done = self._mark_acked(wanted)
        if done:
            self._unlogged = _merge(self._unlogged + _ranges(wanted))
        if self._unlogged:
            self._log_acks(self._unlogged)  # raises: kept for the next call
            self._unlogged = []
            if self._ack_records > 2 * self._ack_compacted + 4096:  # amortised: the log at most doubles
                try:
                    self._compact_acks()
                except OSError:  # acks.log is whole as it is, only longer: what was asked is kept (found in
                    # review: a refused compaction failed a STORE_DELETE already recorded, said undone); tried
                    # again once the log has doubled once more, not at every acknowledgement of a full disk
                    self._ack_compacted = self._ack_records
        return done

    def _mark_acked(self, ids: list[int]) -> int:
        done = 0
        touched: list[Segment] = []
        for seg in self._segments_for(ids):
            hit = False
            lo, hi = bisect_left(ids, seg.first_id), bisect_right(ids, seg.ids[-1] if seg.ids else seg.first_id)
            for store_id in ids[lo:hi]:
                i = seg.index_of(store_id)
                if i is not None and seg.state[i] != ACKED:
                    if seg.state[i] == UNSENT:
                        seg.unsent -= 1
                    seg.state[i] = ACKED
                    seg.unacked -= 1
                    done += 1
                    hit = True
            if hit:
                touched.append(seg)
        self.stats.records -= done
        for seg in touched:
            self._release_acked(seg)
        return done

    def _segments_for(self, ids: list[int]) -> list[Segment]:
        if not ids:
            return []
        return [s for segs in self.segments.values() for s in segs
                if s.ids and s.ids[0] <= ids[-1] and s.ids[-1] >= ids[0]]

    def _log_acks(self, ranges: list[tuple[int, int]]) -> None:
        data = b"".join(_frame(_RANGE.pack(lo, hi)) for lo, hi in ranges)
        fd = os.open(self._acks_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(data)
            while view:  # a short write (a full disk) goes on where it stopped, or raises
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._ack_records += len(ranges)

    def _compact_acks(self) -> None:
        """Rewrite acks.log with the acknowledgements of records still held, and the highest id
        ever given (so ids keep rising if every segment is gone)."""
        ids = [seg.ids[i] for segs in self.segments.values() for seg in segs for i in range(len(seg.ids))
               if seg.state[i] == ACKED]
        ids.sort()
        ranges = _ranges(ids)
        write_atomic(self._acks_path, b"".join(_frame(_RANGE.pack(lo, hi)) for lo, hi in ranges)
                     + _frame(_HIGHEST.pack(self._next_id - 1)))
        self._ack_records = self._ack_compacted = len(ranges) + 1

    # --- playback -----------------------------------------------------------------------------

    def pending(self, now_s: float, resend_after_s: float, sent_before_s: float = -float("inf"),
                ids_before: int = 0) -> Iterator[tuple[Segment, int]]:
        """Records to play back, in order: by class (reports first), then oldest first; those
        never sent, those sent more than ``resend_after_s`` ago without an acknowledgement, and
        those sent before the ground's silence ended (what went out during it most likely went
        nowhere): before ``sent_before_s``, or at that instant and stored before record
        ``ids_before`` (:attr:`next_id` when the silence ended). Why the order too: under a
        simulated clock the packets just before the ground was heard and those just after (its
        own PLAYBACK_STARTED, sent to a ground listening) carry the same time, and only the
        latter went to a ground that listened. A segment with nothing unsent and nothing sent
        early enough is skipped without a look at its records: a pass of live data awaiting its
        acknowledgements costs no scan."""
        resend_before = now_s - resend_after_s
        due_before = max(resend_before, sent_before_s)
        for cls in StoreClass:
            for seg in list(self.segments[cls]):
                if not seg.unacked or (not seg.unsent and seg.min_sent_at > due_before):
                    continue
                state, sent_at = seg.state, seg.sent_at
                while seg.first_open < len(state) and state[seg.first_open] == ACKED:
                    seg.first_open += 1
                lowest, end, fresh = float("inf"), len(seg.ids), False
                for i in range(seg.first_open, end):
                    s = state[i]
                    if s == UNSENT:
                        fresh = True
                        yield seg, i
                    elif s == SENT:
                        t = sent_at[i]
                        lowest = min(lowest, t)  # yielded or not: a bound whatever the caller sends
                        if t <= resend_before or t < sent_before_s or (t == sent_before_s and seg.ids[i] < ids_before):
                            yield seg, i
                # Exact as of this walk (a send since only raises a sent_at); records appended
                # meanwhile are not walked, so then the old bound is kept with it. So is it where an unsent
                # record was yielded: the caller may have sent it (mark_sent lowered the bound) before the walk
                # ended here (found in audit: a segment ending a full container was never resent, its bound inf).
                exact = end == len(seg.ids) and not fresh
                seg.min_sent_at = lowest if exact else min(lowest, seg.min_sent_at)

    def iter_range(self, lo_ms: int, hi_ms: int, classes: Iterable[StoreClass] = tuple(StoreClass)
                   ) -> Iterator[tuple[Segment, int]]:
        """Every record still held (acknowledged or not) with time in [lo_ms, hi_ms], by class
        then age, walked lazily: a dump."""
        for cls in classes:
            for seg in list(self.segments[cls]):
                for i in seg.span(lo_ms, hi_ms):
                    if lo_ms <= seg.times[i] <= hi_ms:
                        yield seg, i

    def in_range(self, lo_ms: int, hi_ms: int, classes: Iterable[StoreClass] = tuple(StoreClass)
                 ) -> list[tuple[Segment, int]]:
        return list(self.iter_range(lo_ms, hi_ms, classes))

    def read(self, seg: Segment, i: int) -> bytes | None:
        """The packet of record ``i`` of ``seg``, checked again; None if the segment is gone or
        the bytes no longer match their CRC or cannot be read (:data:`_UNREADABLE`; both counted). Raises
        OSError for a refusal that may pass (no file descriptor, no memory)."""
        try:
            start = seg.offsets[i] - _META.size - _FRAME.size
            raw = os.pread(self._read_fd(seg.path), _FRAME.size + _META.size + seg.lengths[i] + _CRC.size, start)
        except (FileNotFoundError, IndexError):
            return None
        except OSError as exc:
            if exc.errno not in _UNREADABLE:
                raise  # the disk may answer later (no descriptors, no memory): the caller waits and asks again
            self.stats.corrupt_records += 1  # the medium cannot give these bytes back: as a failed CRC
            return None
        walked = _records(raw, MAX_PACKET)[0]
        if len(walked) != 1 or walked[0][2] is None:
            self.stats.corrupt_records += 1
            return None
        return walked[0][2][_META.size:]

    def _read_fd(self, path: Path) -> int:
        """A read descriptor of segment ``path``, kept open while reads stay in it (an audit: playback opened
        the segment for every record, 100,000 opens in a pass); closed when another is read, or it is deleted."""
        if self._reader is not None and self._reader[0] == path:
            return self._reader[1]
        self._close_reader()
        fd = os.open(path, os.O_RDONLY)
        self._reader = (path, fd)
        return fd

    def _close_reader(self, path: Path | None = None) -> None:
        """Close the read descriptor (of ``path`` only, where given)."""
        if self._reader is not None and (path is None or self._reader[0] == path):
            fd, self._reader = self._reader[1], None
            os.close(fd)

    def mark_sent(self, seg: Segment, i: int, now_s: float) -> None:
        if seg.state[i] != ACKED:
            if seg.state[i] == UNSENT:
                seg.unsent -= 1
            seg.state[i] = SENT
            seg.sent_at[i] = now_s
            seg.min_sent_at = min(seg.min_sent_at, now_s)

    def records_held(self) -> int:
        return self.stats.records

    def fill_pct(self) -> float:
        return 100.0 * self.stats.bytes / self.max_bytes

    # --- start-up -------------------------------------------------------------------------------

    def _load(self) -> None:
        acked, highest = self._read_acks()
        found = sorted((StoreClass[m.group(1)], int(m.group(2), 16), p) for p in self.dir.iterdir()
                       if (m := _NAME.match(p.name)))
        for cls, first_id, path in sorted(found, key=lambda f: f[1]):
            seg = Segment(cls, path, first_id)
            try:
                data = path.read_bytes()
            except OSError:  # one segment the disk cannot give back costs its records, not the store
                self.stats.corrupt_records += 1
                self.unreadable_segments.append(path.name)
                # Its ids are never given again, each of its records a byte at least: left in place, a later start
                # that reads it plays its records back (found in audit: the next ids were those in it, and once the
                # disk read it again the ground's acknowledgements of the new records freed its old ones).
                try:
                    size = path.stat().st_size
                except OSError:
                    size = 0
                highest = max(highest, first_id + max(size, self.segment_bytes + MAX_PACKET))
                continue
            walked, good_end = _records(data, MAX_PACKET)
            for start, _end, payload in walked:
                if payload is None or len(payload) < _META.size:
                    self.stats.corrupt_records += 1
                    continue
                store_id, time_ms, apid, seq = _META.unpack_from(payload)
                if seg.ids and store_id <= seg.ids[-1]:
                    self.stats.corrupt_records += 1  # ids rise within a segment: this one cannot be right
                    continue
                state = ACKED if _covered(acked, store_id) else UNSENT
                seg.add(store_id, start + _FRAME.size + _META.size, len(payload) - _META.size, time_ms, apid, seq,
                        state, 0.0)
                highest = max(highest, store_id)
            seg.size = good_end
            if good_end < len(data):  # torn tail: cut it so the next append frames
                self.stats.torn_tails += 1
                try:
                    with open(path, "r+b") as f:
                        f.truncate(good_end)
                        os.fsync(f.fileno())
                except OSError:  # appends go after it then, where the file ends; reading skips it (its CRC)
                    seg.size = len(data)
            self.segments[cls].append(seg)
            self.stats.bytes += seg.size
            self.stats.records += seg.unacked
        self._next_id = highest + 1
        for cls in StoreClass:  # whole-acknowledged sealed segments are not needed (the others' key index is made by
            for seg in list(self.segments[cls][:-1]):  # the first acknowledgement that reaches them: not at start)
                self._release_acked(seg)
        try:
            self._compact_acks()
        except OSError:  # a full disk at start: acks.log is whole as it is, only longer
            pass
        self._make_room()

    def _read_acks(self) -> tuple[list[tuple[int, int]], int]:
        """(acknowledged ranges, the highest store id ever given as far as acks.log knows)."""
        try:
            data = self._acks_path.read_bytes()
        except FileNotFoundError:
            return [], 0
        except OSError as exc:
            # It costs its acknowledgements (played back again), not the store (found in audit: EIO, or a
            # directory in its place, and the agent flew without a store, its stored packets never played back).
            # Moved aside so that no later start reads its ranges against ids given again; where it cannot be,
            # the store is not opened, as before.
            why = exc.strerror or str(exc)
            if quarantine(self._acks_path) is None:
                raise StoreError(f"{self._acks_path.name} unreadable ({why}) and cannot be moved aside") from exc
            self.stats.corrupt_records += 1
            self.acks_error = (f"{self._acks_path.name} unreadable ({why}): moved aside, the packets it acknowledged "
                               "are played back again")
            return [], 0
        ranges, highest = [], 0
        for _start, _end, payload in _records(data, _RANGE.size)[0]:
            if payload is not None and len(payload) == _RANGE.size:
                ranges.append(_RANGE.unpack(payload))
            elif payload is not None and len(payload) == _HIGHEST.size:
                highest = max(highest, _HIGHEST.unpack(payload)[0])
            else:
                self.stats.corrupt_records += 1
        ranges = _merge(ranges)
        return ranges, max([highest] + [hi for _, hi in ranges])

    def close(self) -> None:
        self._close_reader()
        for fd in self._fds.values():
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.close(fd)
        self._fds.clear()
        self._dirty.clear()


def _ranges(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as inclusive ranges.

    >>> _ranges([1, 2, 3, 7, 9, 10])
    [(1, 3), (7, 7), (9, 10)]
    """
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _covered(ranges: list[tuple[int, int]], store_id: int) -> bool:
    i = bisect_right(ranges, (store_id, 2 ** 64)) - 1
    return i >= 0 and ranges[i][0] <= store_id <= ranges[i][1]


BACKGROUND_SYNC_MIN_CPUS = 4
"""``[store] fsync = "auto"`` syncs in a thread from this many CPUs the agent may run on. On a
2-vCPU PC the thread made the round trip slower (p99 median 1230 against 1028 us over 3 pairs:
the agent, the ground and their ZeroMQ threads already share two CPUs); on 16 cores faster (p99
median 379 against 1095 us over 6 pairs); a Jetson Orin has 6 to 12."""


def sync_in_thread(mode: str, cpus: int | None = None) -> bool:
    """Whether ``[store] fsync`` (thread, loop, auto) puts the store's fsync in a thread of its own;
    auto decides by ``cpus`` (default: the CPUs this process may run on)."""
    if mode == "auto":
        if cpus is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return cpus >= BACKGROUND_SYNC_MIN_CPUS
    if mode not in ("thread", "loop"):
        raise ValueError(f"fsync: {mode!r} is not one of auto, thread, loop")
    return mode == "thread"


class BackgroundSync:
    """fsyncs the store's segments in a thread of its own, so that the agent's loop never waits for
    their flush: it hands over descriptors (:meth:`PacketStore.take_dirty`) at the end of a turn and
    goes back to its sockets, and the next telecommand is not held behind the fsync (the command
    journal's own fsyncs, a segment's when it is sealed or made, and the acknowledgement log's stay
    in the loop: they are rarer, or the guarantee against running a command twice rests on them).
    Measured with
    ``python -m bench.security``'s round trip (2000 NOOPs) on a 16-core machine, 6 interleaved
    pairs, with this thread's first version (a batch every turn, no journal sync before a write):
    p99 328-525 us with the thread, 793-2246 us with the fsync in the loop, 317-419 us with no fsync
    at all (fsync there: p50 65 us, p99 323 us; an eMMC's is longer). The policy stays what
    the module docstring says, a fsync later: every report is on the disk about one fsync after the
    turn that stored it ended. Where: :func:`sync_in_thread`.

    One batch at a time: the loop hands over a batch only when the last is done (:attr:`idle`),
    so a disk that stalls costs at most one duplicate descriptor per store class, and the classes
    written meanwhile stay dirty for the next batch, at the loop's first turn after (at most a
    housekeeping period later). Outcomes come back per batch, in order,
    through :meth:`outcomes` (None: every fsync of the batch worked; else the first OSError), for
    the loop to count and say. The thread starts with the first batch. ``fsync`` is injectable for
    tests."""

    def __init__(self, fsync=_datasync, name: str = "store-fsync"):
        self._fsync = fsync
        self._cv = threading.Condition()
        self._queue: list[int] = []
        self._busy = False
        self._closed = False
        self._outcomes: list[OSError | None] = []
        self.last_ms: float | None = None  # the last batch's fsyncs, in ms
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def idle(self) -> bool:
        """Nothing handed over is waiting or being synced."""
        with self._cv:
            return not self._queue and not self._busy

    def submit(self, fds: list[int]) -> None:
        """Sync and close ``fds``, one batch (this object owns them from now on)."""
        if not fds:
            return
        with self._cv:
            if self._closed:
                for fd in fds:
                    os.close(fd)
                raise RuntimeError("the store's background sync is closed")
            if not self._thread.is_alive():
                self._thread.start()
            self._queue.extend(fds)
            self._cv.notify()

    def outcomes(self) -> list[OSError | None]:
        """What each batch finished since the last call gave, in order (None: all its fsyncs worked)."""
        with self._cv:
            out, self._outcomes = self._outcomes, []
        return out

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until everything handed over is synced (False: ``timeout_s`` passed first)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Sync what was handed over, then stop the thread; False if it had not stopped within
        ``timeout_s`` (a disk that does not answer: the thread is a daemon, the process exits)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed, and nothing left
                fds, self._queue = self._queue, []
                self._busy = True
            t0 = time.perf_counter()
            first: OSError | None = None
            for fd in fds:
                try:
                    self._fsync(fd)
                except Exception as exc:  # noqa: BLE001 - a thread that died would leave the store unsynced
                    if first is None:
                        first = exc if isinstance(exc, OSError) else OSError(f"{type(exc).__name__}: {exc}")
                finally:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            with self._cv:
                self.last_ms = (time.perf_counter() - t0) * 1000.0
                self._outcomes.append(first)
                if len(self._outcomes) > 1024:  # nobody has collected them for a long while: keep the newest
                    del self._outcomes[:-1024]
                self._busy = False
                self._cv.notify_all()

