"""The downlink: every packet the agent sends goes through here, into the on-board packet store
(:mod:`flight.agent.tm_store`) and, as far as the link takes it, out live; what the ground has
not acknowledged is played back while it listens (the role of PUS service 15).

- **Live first.** A packet goes out live at once unless the link's own queue already holds
  more than :data:`LIVE_BACKLOG_S` of the line (a serial line after an outage) or it is
  housekeeping decimated by ``hk_live_every``; either way it is in the store, unsent, and
  comes down in playback. Live data never waits behind a backlog of old data: playback keeps
  no more than :data:`PLAYBACK_BACKLOG_S` of the line queued ahead of it. Nor on the disk: a
  packet is written to the store after it went, and the reports and events of a command from
  the ground once the command has been handled (:meth:`Downlink.hold`), so a round trip costs
  no write.
- **The ground acknowledges** (TC(15,130), a few times a second while it hears us): runs of
  each APID's sequence it received. An acknowledgement is also how the agent knows the ground
  listens: for ``ground_window_s`` after one, stored packets not yet acknowledged are played
  back, reports and events first, then by class and age, in TM(15,131) containers, at most
  ``playback_rate_bps`` and what the line drains. A packet sent and not acknowledged within
  ``playback_resend_s`` is played back again: a loss on the link costs a resend, not the data;
  one that went out while the ground was silent goes again ``playback_grace_s`` into the pass
  unless acknowledged by then (the ground acknowledges about once a second, a HIL harness once
  a step; what sat in a line's buffers or was on its way is acknowledged first).
- **Commands** keep or stop keeping a class (kept across restarts), dump a time range
  (completed when every packet of it is on the link), and delete up to a time.
- **Bounded**: the store drops its oldest housekeeping first when full, and says so
  (``STORE_DROPPED``, ``store_dropped``). A disk that refuses writes costs the store, never
  the live stream (``STORE_ERROR``, ``store_errors``); one that refuses a playback read for now
  (no descriptor, no memory) rests playback a second, a dump it refuses for a minute fails, and
  a record it cannot read (EIO, a checksum the filesystem refuses) is counted and skipped.
- **fsync**: the store's segments are synced after each loop turn that stored a report or an
  event (:meth:`Downlink.end_turn`), and every :data:`flight.agent.tm_store.SYNC_PERIOD_S`
  otherwise, in the loop or, with ``[store] fsync`` (by default where there are CPUs for it), in a
  thread of their own (:class:`flight.agent.tm_store.BackgroundSync`): the loop hands them over and
  goes back to its sockets, never waiting for their flush; each write to the store then comes
  after the command journal's sync of what finished (no report on the disk ahead of its record).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Callable, Literal

import msgpack

from flight.agent.dispatcher import CommandFailed, Deferred, Handler
from flight.agent.ports import Component, EventPort
from flight.agent.tm_store import (
    ACKED,
    SYNC_PERIOD_S,
    BackgroundSync,
    PacketStore,
    Segment,
    StoreClass,
    class_of,
    sync_in_thread,
)
from flight.clock import Clock
from flight.link.definitions import STORE_CHANNELS, StoreName
from flight.link.interface import FlightLink
from flight.link.dictionary import FailureCode
from flight.link.messages import MAX_PLAYBACK_BYTES, MAX_PLAYBACK_PACKETS, AckRun, CommandRequest
from flight.link.packets import (
    CRC_LEN,
    PRIMARY_HEADER_LEN,
    TM_SEC_HEADER_LEN,
    PacketError,
    Service,
    Telemetry,
    unpack,
)
from flight.storage import CorruptFile, read_checked_json, write_checked_json

LIVE_BACKLOG_S = 2.0       # of the line queued already: past it, live packets wait in the store
PLAYBACK_BACKLOG_S = 0.25  # of the line playback may queue: the most a live packet waits behind it
PLAYBACK_BURST_S = 0.5     # the token bucket holds this much of playback_rate_bps
SCAN_EVERY_S = 0.05        # the least time between two looks for packets to play back
READ_REST_S = 1.0          # after a read the disk refused for now (no descriptor, no memory): the next try
DUMP_REFUSED_S = 60.0      # a dump whose reads the disk refuses this long fails; its records stay stored
STORE_ERROR_EVERY_S = 60.0  # a refused append is said at most this often (store_errors counts every one)
_TM_HEADERS = PRIMARY_HEADER_LEN + TM_SEC_HEADER_LEN  # a TM packet's source data starts here


def _hk_sid(data: bytes) -> int:
    """The SID at the head of an HK report's data (``[sid, ...]``), 0 if unreadable."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) + 1)
        unpacker.feed(data)
        if unpacker.read_array_header() >= 1:
            sid = unpacker.unpack()
            return sid if isinstance(sid, int) else 0
    except Exception:  # noqa: BLE001 - decimation must never stop a packet
        pass
    return 0


def _classes(name: str) -> tuple[StoreClass, ...]:
    return tuple(StoreClass) if name == StoreName.ALL.value else (StoreClass[name],)


class _Session:
    """The ground listening: since when, what has been played back, whether it has caught up."""

    def __init__(self, start: float, first_id: int):
        self.start = start
        self.first_id = first_id  # the store's first record kept after the ground was heard
        self.sent = 0
        self.done = False


class _Dump:
    """A STORE_DUMP being sent: the store's records in its range, walked lazily (a whole store's
    range costs no list), with those a full link handed back first."""

    def __init__(self, items, deferred: Deferred):
        self._items = items
        self.retry: deque[tuple[Segment, int]] = deque()
        self.deferred = deferred
        self.sent = 0
        self.gone = 0
        self.unreadable = 0
        self._next = next(items, None)

    @property
    def finished(self) -> bool:
        return not self.retry and self._next is None

    def peek(self) -> tuple[Segment, int]:
        return self.retry[0] if self.retry else self._next

    def take(self) -> None:
        if self.retry:
            self.retry.popleft()
        else:
            self._next = next(self._items, None)


class Downlink(Component):
    NAME = "downlink"
    COMMANDS = ("STORE_ENABLE", "STORE_DISABLE", "STORE_DUMP", "STORE_DELETE")
    EVENTS = ("STORE_DROPPED", "STORE_CORRUPT", "STORE_ERROR", "STORE_CHANGED", "PLAYBACK_STARTED", "PLAYBACK_DONE")
    CHANNELS = tuple(c.name for c in STORE_CHANNELS)

    def __init__(self, link: FlightLink, store: PacketStore | None, encode_playback: Callable[[list[bytes], float], bytes],
                 clock: Clock, emit: EventPort, params: Any, store_error: str | None = None, fsync: str = "auto",
                 sync_journal: Callable[[], None] = lambda: None):
        """``store``: None when its directory could not be opened (``store_error`` says why):
        packets then go out live only, and telemetry says so. ``fsync``: [store] fsync, where the
        store's segments are synced (:func:`~flight.agent.tm_store.sync_in_thread`).
        ``sync_journal``: the command journal's sync of its finished records; with the fsync in a
        thread it runs before each write to the store, so that no report reaches the disk ahead of
        its command's journal record (the thread's fsync may be under way while the loop writes)."""
        self.link = link
        self.store = store
        self._encode_playback = encode_playback
        self._clock = clock
        self._emit = emit
        self._params = params
        self._store_error = store_error
        self._enabled_path = store.dir / "enabled.json" if store is not None else None
        self.enabled: set[StoreClass] = set(StoreClass)
        self._enabled_error: str | None = None
        self._load_enabled()
        self.store_errors = 0
        self._error_reported = False
        self._error_said_s = -math.inf  # when a refused append was last said
        self._ack_error_reported = False  # STORE_ERROR said for the acknowledgements, until one is kept
        self._link_refused = False  # the last publish was refused by the link's queue (not held back by the backlog)
        self._sync_error_reported = False
        self._read_error_reported = False
        self._read_refused = False  # a playback read refused during this look
        self._read_error = ""
        self._refused_until = -math.inf  # playback rests until then after a refused read
        self._refused_since: float | None = None  # the first of the refusals since the last read that worked
        self.playback_sent = 0
        self.live_deferred = 0
        self._hk_count: dict[int, int] = {}
        self._ack_at: float | None = None
        self._session: _Session | None = None  # while the ground listens
        self._tokens = 0.0
        self._tokens_at = clock.monotonic_s()
        self._idle_until = -math.inf  # nothing to play back before then (nothing new stored meanwhile)
        self._dump: _Dump | None = None  # one STORE_DUMP at a time
        self._sync_at = clock.monotonic_s()
        self.syncer = BackgroundSync() if store is not None and sync_in_thread(fsync) else None
        self._sync_journal = sync_journal
        self._sync_ms: float | None = None  # the last fsync made in the loop (no syncer)
        self._held: list[tuple[bytes, float | None]] | None = None  # published, kept at release()
        self._reported_dropped = 0  # what opening the store dropped (a smaller store.max_mb) is said too (an audit)
        self._rate_bytes = 0
        self._rate_since = clock.monotonic_s()
        self._rate_bps = 0.0

    # --- what the agent sends ---------------------------------------------------------------

    def publish(self, packet: bytes) -> bool:
        """One packet of the agent's telemetry: kept, and sent live as the link allows (True if it
        went). While :meth:`hold` is in force it is written to the store at :meth:`release`."""
        now = self._clock.monotonic_s()
        live = True
        # The service from the header (the packet is the agent's own: unpacked, and its CRC
        # checked, when it is kept, after it went out).
        if len(packet) > _TM_HEADERS and not packet[0] & 0x10 and packet[7] == Service.HOUSEKEEPING:
            every = int(self._params["hk_live_every"])
            if every > 1:
                sid = _hk_sid(packet[_TM_HEADERS:-CRC_LEN])
                n = self._hk_count.get(sid, 0)
                self._hk_count[sid] = n + 1
                live = n % every == 0
        rate = self.link.line_rate_bps()
        if live and rate is not None and self.link.backlog_bytes() > LIVE_BACKLOG_S * rate:
            live = False
        self._link_refused = False
        if live:
            live = self.link.publish(packet)
            self._link_refused = not live
        if not live:
            self.live_deferred += 1
        if self._held is not None:
            self._held.append((packet, now if live else None))
        else:
            self._keep(packet, now if live else None)
        return live

    def hold(self) -> None:
        """Write what is published from now on to the store at :meth:`release`, not at once: the
        agent holds while it handles a command, so that the command's reports go out live
        without waiting on the disk, and are written (in order) once its completion went."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Stop holding, and write what was held."""
        held, self._held = self._held, None
        self._keep_all(held or ())

    def _keep_held(self) -> None:
        """Write what is held so far, and go on holding."""
        if self._held:
            held, self._held = self._held, []
            self._keep_all(held)

    def _keep_all(self, held: list[tuple[bytes, float | None]]) -> None:
        """Write each; a packet that cannot be (a fault in the store's code, not a refusal of the
        disk, which ``_keep`` counts itself) costs that packet only, counted, and the first such
        fault is raised once the rest are written (the agent counts it as an internal error)."""
        fault: Exception | None = None
        for packet, sent_at in held:
            try:
                self._keep(packet, sent_at)
            except Exception as exc:  # noqa: BLE001 - the rest of the command's reports still get written
                self.store_errors += 1
                fault = fault or exc
        if fault is not None:
            raise fault

    def reply(self, peer: Any, packet: bytes) -> None:
        """A report on the stream (and into the store), and to the command's sender directly
        unless the stream is known to reach it and took the report: one copy, not two."""
        live = self.publish(packet)
        if self._link_refused and self.link.reply_shares_queue:
            return  # the queue that refused it, refusing again: one drop counted, not two (an audit); it is stored
        if peer is not None and not (live and self.link.stream_reaches(peer)):
            self.link.reply(peer, packet)

    def _keep(self, packet: bytes, sent_at: float | None) -> None:
        if self.store is None:
            return
        try:
            tm = unpack(packet)
        except PacketError:
            return  # not a packet the store could index (the agent makes none such)
        if not isinstance(tm, Telemetry) or class_of(tm.service) not in self.enabled:
            return
        if self.syncer is not None:
            try:
                self._sync_journal()  # nothing to do unless a command finished since its last sync
            except OSError:
                pass  # the journal's own sync at the end of the turn says so; the report is still kept
        try:
            self.store.append(packet, sent_at, tm=tm)
        except (OSError, PacketError) as exc:
            self.store_errors += 1
            now = self._clock.monotonic_s()
            # Once an outage, and at most once a STORE_ERROR_EVERY_S: a disk all but full takes one record and
            # refuses the next (found in audit: 20 events in 5 s); store_errors counts each.
            if not self._error_reported and now - self._error_said_s >= STORE_ERROR_EVERY_S:
                self._error_reported = True  # before emitting: the event itself comes back here
                self._error_said_s = now
                self._emit("STORE_ERROR", reason=f"{type(exc).__name__}: {exc}")
            return
        self._error_reported = False
        if sent_at is None:
            self._idle_until = -math.inf  # something new to play back

    # --- what the ground says ---------------------------------------------------------------

    def acknowledged(self, runs: list[AckRun]) -> None:
        """The ground's TC(15,130): what it has, and that it listens."""
        now = self._clock.monotonic_s()
        listening = self.listening(now)
        self._ack_at = now
        if self.store is not None and runs:
            try:
                self.store.acknowledge(r.as_tuple() for r in runs)
            except OSError as exc:
                self.store_errors += 1
                if not self._ack_error_reported:  # once until one is kept again (an audit: an event a second)
                    self._ack_error_reported = True
                    self._emit("STORE_ERROR", reason=f"acknowledgement not kept: {exc}")
            else:
                self._ack_error_reported = False
        if not listening and self.store is not None:
            self._session = _Session(now, self.store.next_id)
            self._idle_until = -math.inf
            self._tokens, self._tokens_at = 0.0, now
            self._emit("PLAYBACK_STARTED", records=self.store.records_held())

    def listening(self, now_s: float | None = None) -> bool:
        now = self._clock.monotonic_s() if now_s is None else now_s
        return self._ack_at is not None and now - self._ack_at <= float(self._params["ground_window_s"])

    # --- the loop's hooks -------------------------------------------------------------------

    def play(self) -> None:
        """Play back what the budget allows. The agent calls it before the command journal's
        sync: a STORE_DUMP completed here writes its journal record, which must be on disk before
        its completion report is (:meth:`end_turn`)."""
        now = self._clock.monotonic_s()
        if self.store is None:
            return
        if self.listening(now):
            self._play(now)
        elif self._session is not None:
            self._session = None

    def end_turn(self) -> None:
        """Sync the store as the policy says, after the journal's sync of this turn: here, or handed
        to its thread (so it starts after that sync ended), taking what the thread's syncs finished
        since gave. A refused fsync is counted, and said once until one works again: the event is a
        report too, and said at every failure it would fail the next fsync and be said again."""
        now = self._clock.monotonic_s()
        if self.store is None:
            return
        for outcome in self.syncer.outcomes() if self.syncer is not None else ():
            self._sync_outcome(outcome)
        dirty = self.store.dirty
        if dirty and (StoreClass.REPORTS in dirty or now - self._sync_at >= SYNC_PERIOD_S):
            if self.syncer is not None and not self.syncer.idle:
                return  # one batch at a time: what is dirty goes with the next, once this one is done
            t0 = time.perf_counter()
            try:
                if self.syncer is not None:
                    self.syncer.submit(self.store.take_dirty())
                else:
                    self.store.sync()
                    self._sync_outcome(None)
            except OSError as exc:  # the fsync refused, or (thread) no descriptor left to duplicate
                self._sync_outcome(exc)
            if self.syncer is None:
                self._sync_ms = (time.perf_counter() - t0) * 1000.0
            self._sync_at = now

    def _sync_outcome(self, outcome: OSError | None) -> None:
        """Count a refused fsync, and say it once until one works again."""
        if outcome is None:
            self._sync_error_reported = False
            return
        self.store_errors += 1
        if not self._sync_error_reported:
            self._sync_error_reported = True
            self._emit("STORE_ERROR", reason=f"fsync: {outcome}")

    def next_due_s(self) -> float | None:
        """When playback can next put a container on the link (monotonic), None when there is
        nothing to play back or nobody listens: the loop then need not wake for it."""
        if self.store is None or not self.listening():
            return None
        now = self._clock.monotonic_s()
        if now < self._refused_until:
            return self._refused_until
        if self._dump is None and now < self._idle_until:
            return self._idle_until
        rate = float(self._params["playback_rate_bps"])
        missing = max(0.0, min(MAX_PLAYBACK_BYTES, rate * PLAYBACK_BURST_S) - self._tokens)
        return max(now + SCAN_EVERY_S, now + missing / rate)

    def report(self) -> None:
        """Once per housekeeping period: drops since the last report, as one event."""
        total = self._dropped_total()
        if total > self._reported_dropped:
            dropped = self.store.stats.dropped if self.store is not None else {}
            which = ", ".join(f"{c.name} {n}" for c, n in dropped.items() if n)
            self._emit("STORE_DROPPED", count=total - self._reported_dropped, store=which)
            self._reported_dropped = total
        now = self._clock.monotonic_s()
        if now > self._rate_since:
            self._rate_bps = self._rate_bytes / (now - self._rate_since)
        self._rate_bytes, self._rate_since = 0, now

    def time_began(self) -> None:
        """Boot: say what start-up found wrong with the store."""
        if self._store_error is not None:
            self._emit("STORE_ERROR", reason=self._store_error)
        if self.store is not None and self.store.acks_error is not None:
            self._emit("STORE_ERROR", reason=self.store.acks_error)
        if self.store is not None and (self.store.stats.corrupt_records or self.store.stats.torn_tails):
            self._emit("STORE_CORRUPT", count=self.store.stats.corrupt_records + self.store.stats.torn_tails,
                       where=f"{self.store.stats.torn_tails} torn by a crash, at start")
        if self._enabled_error is not None:
            self._emit("STORE_ERROR", reason=self._enabled_error)

    # --- playback ---------------------------------------------------------------------------

    def _play(self, now: float) -> None:
        rate = float(self._params["playback_rate_bps"])
        self._tokens = min(max(MAX_PLAYBACK_BYTES, rate * PLAYBACK_BURST_S),
                           self._tokens + rate * max(0.0, now - self._tokens_at))
        self._tokens_at = now
        if now < self._refused_until:
            return
        if self._dump is None and now < self._idle_until:
            return
        line = self.link.line_rate_bps()
        room = self._tokens if line is None else min(self._tokens, PLAYBACK_BACKLOG_S * line - self.link.backlog_bytes())
        if room < MAX_PLAYBACK_BYTES / 4:
            return
        resend_s = float(self._params["playback_resend_s"])
        session = self._session
        if session is not None and now - session.start >= float(self._params["playback_grace_s"]):
            routine = self.store.pending(now, resend_s, session.start, session.first_id)
        else:
            routine = self.store.pending(now, resend_s)
        carry: list[tuple[Segment, int]] = []  # taken from the routine order for the next container of this look
        self._read_refused = False
        while room > 0:
            batch, records, dumped = self._batch(routine, carry)
            if not batch:
                if self._read_refused:
                    self._refused(now)
                else:
                    self._caught_up(now, resend_s)
                return
            container = self._encode_playback(batch, self._clock.now_s())
            if not self.link.publish(container):
                if dumped:
                    self._dump.retry.extendleft(reversed(records[:dumped]))  # the dump's come again, first
                return  # the link's queue is full: the rest stays unsent and comes next time
            for seg, i in records:
                self.store.mark_sent(seg, i, now)
            if dumped:
                self._dump.sent += dumped
            self.playback_sent += len(batch)
            self._rate_bytes += len(container)
            if self._session is not None:
                self._session.sent += len(batch)
            self._tokens -= len(container)
            room -= len(container)
            self._settle_dump()
            if self._read_refused:
                self._refused(now)
                return

    def _batch(self, routine, carry: list[tuple[Segment, int]]) -> tuple[list[bytes], list[tuple[Segment, int]], int]:
        """Up to a container's worth: the dump's packets first (how many: the third value), then
        the routine playback."""
        batch: list[bytes] = []
        records: list[tuple[Segment, int]] = []
        size, dumped = 0, 0
        dump = self._dump
        while len(batch) < MAX_PLAYBACK_PACKETS and dump is not None and not dump.finished:
            seg, i = dump.peek()
            if batch and size + seg.lengths[i] > MAX_PLAYBACK_BYTES:
                return batch, records, dumped
            corrupt = self.store.stats.corrupt_records
            packet = self._read(seg, i)
            if packet is False:
                return batch, records, dumped  # the disk refused: this record leads next time
            dump.take()
            if packet is None:
                if self.store.stats.corrupt_records > corrupt:
                    dump.unreadable += 1  # counted by the store; it can never come down
                    self._forget(seg, i)
                else:
                    dump.gone += 1  # deleted (acknowledged, dropped) since the dump was asked for
                continue
            batch.append(packet)
            records.append((seg, i))
            size += len(packet)
            dumped += 1
        in_dump = set(records[:dumped])
        while len(batch) < MAX_PLAYBACK_PACKETS:
            item = carry.pop() if carry else next(routine, None)
            if item is None:
                break
            seg, i = item
            if seg.state[i] == ACKED:
                continue  # acknowledged while it waited
            if (seg, i) in in_dump:
                continue  # in this container already, for the dump (found in audit: each unsent one twice)
            if batch and size + seg.lengths[i] > MAX_PLAYBACK_BYTES:
                carry.append(item)  # it leads the next container
                break
            packet = self._read(seg, i)
            if packet is False:
                break  # the disk refused: unsent, so it comes again
            if packet is None:
                self._forget(seg, i)  # unreadable (counted by the store): it can never come down
                continue
            batch.append(packet)
            records.append((seg, i))
            size += len(packet)
        return batch, records, dumped

    def _read(self, seg: Segment, i: int) -> bytes | None | Literal[False]:
        """A stored packet for playback; None if it is gone or unreadable for good (counted by the
        store), False if the disk refused for now: counted, said once until a read works again,
        and playback rests :data:`READ_REST_S` (:meth:`_refused`), not a refusal every look."""
        try:
            packet = self.store.read(seg, i)
        except OSError as exc:
            self.store_errors += 1
            self._read_error = exc.strerror or str(exc)
            self._say_once(f"playback read: {self._read_error}")
            self._read_refused = True
            return False
        self._read_error_reported = False
        self._refused_since = None
        return packet

    def _say_once(self, reason: str) -> None:
        if not self._read_error_reported:
            self._read_error_reported = True
            self._emit("STORE_ERROR", reason=reason)

    def _forget(self, seg: Segment, i: int) -> None:
        """A record that can never come down: acknowledged, so that nothing looks for it again."""
        try:
            self.store.acknowledge_ids([seg.ids[i]])
        except OSError as exc:
            self.store_errors += 1
            self._say_once(f"unreadable record not acknowledged: {exc.strerror or exc}")

    def _refused(self, now: float) -> None:
        """A read refused in this look: rest; a dump refused for :data:`DUMP_REFUSED_S` fails (its
        records stay stored, and routine playback sends them once the disk reads again)."""
        self._refused_until = now + READ_REST_S
        if self._refused_since is None:
            self._refused_since = now
        dump = self._dump
        if dump is not None and now - self._refused_since >= DUMP_REFUSED_S:
            self._dump = None
            dump.deferred.fail(f"the disk refused reads for {DUMP_REFUSED_S:g} s ({self._read_error}) after "
                               f"{dump.sent} packets; the rest stay stored")

    def _settle_dump(self) -> None:
        dump = self._dump
        if dump is not None and dump.finished:
            self._dump = None
            dump.deferred.complete({"packets": dump.sent, "gone": dump.gone, "unreadable": dump.unreadable})

    def _caught_up(self, now: float, resend_s: float) -> None:
        """Nothing to send: sleep until the oldest unacknowledged packet can be due for a resend
        (the segments' bounds: waking early costs one look, never a packet)."""
        self._settle_dump()
        oldest = min((seg.min_sent_at for segs in self.store.segments.values() for seg in segs if seg.unacked),
                     default=math.inf)
        self._idle_until = now + resend_s if not math.isfinite(oldest) else max(now + SCAN_EVERY_S, oldest + resend_s)
        session = self._session
        grace_s = float(self._params["playback_grace_s"])
        if session is not None and now < session.start + grace_s:
            self._idle_until = min(self._idle_until, session.start + grace_s)  # the silence's packets
        if session is not None and session.sent > 0 and not session.done:
            session.done = True  # once a pass: what was waiting when the ground began to listen is down
            self._emit("PLAYBACK_DONE", sent=session.sent, duration_s=now - session.start)

    # --- commands ---------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "STORE_ENABLE": Handler(lambda req: self._set_enabled(req.args["store"], True)),
            "STORE_DISABLE": Handler(lambda req: self._set_enabled(req.args["store"], False)),
            "STORE_DUMP": Handler(self._dump_range),
            "STORE_DELETE": Handler(self._delete),
        }

    def _need_store(self) -> PacketStore:
        """The store, with what is held written first: a store command sees (and its setting
        applies to) exactly what was published before it."""
        if self.store is None:
            raise CommandFailed(f"no packet store: {self._store_error}")
        self._keep_held()
        return self.store

    def _set_enabled(self, name: str, on: bool) -> dict[str, Any]:
        store = self._need_store()
        wanted = set(self.enabled)
        for cls in _classes(name):
            (wanted.add if on else wanted.discard)(cls)
        try:
            write_checked_json(store.dir / "enabled.json", sorted(c.name for c in wanted))
        except OSError as exc:
            raise CommandFailed(f"cannot keep the setting: {exc.strerror or exc}") from None
        self.enabled = wanted
        text = self._enabled_text()
        self._emit("STORE_CHANGED", enabled=text)
        return {"enabled": text}

    def _dump_range(self, req: CommandRequest) -> dict[str, Any] | Deferred:
        store = self._need_store()
        lo, hi = req.args["from_unix_s"], req.args["to_unix_s"]
        if hi < lo:
            raise CommandFailed(f"to_unix_s {hi} is before from_unix_s {lo}", FailureCode.BAD_ARGUMENTS)
        if self._dump is not None:
            raise CommandFailed(f"a dump is being sent ({self._dump.sent} packets so far); one at a time",
                                FailureCode.BUSY)
        items = store.iter_range(int(math.floor(lo * 1000.0)), int(math.ceil(hi * 1000.0)),
                                 _classes(req.args["store"]))
        dump = _Dump(items, Deferred())
        if dump.finished:
            return {"packets": 0, "gone": 0, "unreadable": 0}
        self._dump = dump
        return dump.deferred

    def _delete(self, req: CommandRequest) -> dict[str, Any]:
        store = self._need_store()
        try:
            n = store.delete_until(int(math.floor(req.args["to_unix_s"] * 1000.0)), _classes(req.args["store"]))
        except OSError as exc:
            raise CommandFailed(f"cannot record the deletion: {exc.strerror or exc}; the packets are not played back, "
                                "but a restart brings them back unless a retry records it") from None
        return {"deleted": n}

    def _load_enabled(self) -> None:
        if self._enabled_path is None or not self._enabled_path.exists():
            return
        try:
            names = read_checked_json(self._enabled_path)
            self.enabled = {StoreClass[n] for n in names}
        except (CorruptFile, OSError, KeyError, TypeError) as exc:
            self._enabled_error = f"{self._enabled_path.name} unreadable ({exc}); keeping every class"

    def _enabled_text(self) -> str:
        return ",".join(c.name for c in StoreClass if c in self.enabled) or "none"

    def _dropped_total(self) -> int:
        return sum(self.store.stats.dropped.values()) if self.store is not None else 0

    # --- telemetry --------------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        s = self.store.stats if self.store is not None else None
        now = self._clock.monotonic_s()
        return {
            "store_records": s.records if s else 0,
            "store_bytes": s.bytes if s else 0,
            "store_fill_pct": round(self.store.fill_pct(), 3) if self.store is not None else None,
            "store_dropped": self._dropped_total(),
            "store_dropped_reports": s.dropped[StoreClass.REPORTS] if s else 0,
            "store_corrupt": (s.corrupt_records + s.torn_tails) if s else 0,
            "store_errors": self.store_errors,
            "store_acks_ambiguous": s.acks_ambiguous if s else 0,
            "store_enabled": self._enabled_text() if self.store is not None else "none",
            "store_sync_ms": _ms(self.syncer.last_ms if self.syncer is not None else self._sync_ms),
            "playback_sent": self.playback_sent,
            "playback_rate_bps": round(self._rate_bps, 1),
            "live_deferred": self.live_deferred,
            "ground_ack_age_s": None if self._ack_at is None else round(now - self._ack_at, 3),
        }

    def close(self) -> None:
        if self._dump is not None and not self._dump.deferred.settled:
            self._dump.deferred.fail(f"the agent stopped with the dump part sent ({self._dump.sent} packets)")
        self._dump = None
        if self.syncer is not None:
            self.syncer.close()  # what was handed over is synced first
            for outcome in self.syncer.outcomes():  # the last batches: counted (nothing is said any more)
                self.store_errors += outcome is not None
        if self.store is not None:
            self.store.close()


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

