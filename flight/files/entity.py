"""One CFDP entity (CCSDS 727.0-B-5): files out by priority, files in, both classes, over
whatever carries its PDUs, on the clock of the program that runs it.

The protocol is cfdp-py's (``cfdppy``): a :class:`~cfdppy.handler.source.SourceHandler` for the
transfer going out and one :class:`~cfdppy.handler.dest.DestHandler` per transaction coming in.
What this class adds, because cfdp-py leaves it to the user or does not have it (say so where
it matters):

- **Transport and pacing.** PDUs come in as bytes (:meth:`FileEntity.receive`) and go out as
  bytes, as many as the caller's byte budget allows (:meth:`FileEntity.pull`): the receiver's
  ACK, NAK and Finished PDUs first, then the transfer going out, one file-data PDU at a time,
  so a link shared with telemetry is never flooded.
- **A queue by priority** of files to send (0 first, then age), bounded; one goes at a time.
- **Time.** cfdp-py's timers run on this entity's clock (:mod:`flight.files.timebase`), which
  stops while the entity is **suspended** (loss of signal: :meth:`FileEntity.set_contact`) and
  resumes where it stopped, so a pass's end is not a timeout. cfdp-py has no suspend of its own.
- **Inactivity** (not in cfdp-py): a transaction that hears nothing from its peer for
  ``inactivity_s`` of unsuspended time is given up (coming in) or started again as a new
  transaction (going out, at most ``max_restarts`` times), as is one cancelled by a fault such
  as the positive-acknowledgement limit.
- **Persistence.** The queue, the transfers in progress and a short history survive a restart
  (one checked JSON file, written atomically at each change). A transfer that was going out
  starts again as a new transaction; one coming in continues under its transaction: its new
  handler asks for the metadata and every segment it lacks (CFDP's own lost-segment
  procedure), so the bytes received before the restart are sent again.
- **Files in place only when whole.** A transaction writes into its own partial file; when
  cfdp-py has verified the CRC-32 of a complete file, the file's SHA-256 is checked against the
  one the sender put in the Metadata PDU (a message to the user), fsynced and renamed to its
  name (:mod:`flight.files.filestore` confines names). A top directory kept elsewhere (``roots``:
  the agent's ``sequences/``, in its state directory, perhaps another file system) gets a copy
  written beside the file's place first, then renamed: atomic there too.
- **The owner's rules for a file** (:attr:`FileEntity.admit_file`): asked with the name and size
  the metadata declares, and again with the file whole and checked before it is put in place; a
  reason refuses it (the agent's sequences: their name, their size, their steps).
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import shutil
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from cfdppy import CfdpState, IndicationConfig, LocalEntityConfig, PutRequest, RemoteEntityConfig, RemoteEntityConfigTable
from cfdppy.handler.dest import DestHandler
from cfdppy.handler.source import SourceHandler
from cfdppy.mib import CheckTimerProvider, DefaultFaultHandlerBase, EntityType
from cfdppy.user import CfdpUserBase, TransactionFinishedParams, TransactionParams
from spacepackets.cfdp import (
    ChecksumType,
    ConditionCode,
    DeliveryCode,
    Direction,
    FaultHandlerCode,
    FileStatus,
    MessageToUserTlv,
    TransmissionMode,
)
from spacepackets.cfdp.pdu import AckPdu, DirectiveType, FinishedPdu, PduFactory, TransactionStatus
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.countdown import Countdown
from spacepackets.seqcount import ProvidesSeqCount
from spacepackets.util import ByteFieldU16

from flight.files import timebase
from flight.files.filestore import PARTIAL_DIR, ConfinedFilestore, NameRefused, ReceivingFilestore, check_file_name, \
    resolve
from flight.storage import CorruptFile, install_file, quarantine, read_checked_json, write_checked_json

def _own_lost_segment_trackers() -> None:
    """Give each incoming transaction a lost-segment tracker of its own. cfdp-py 0.7 (the newest on PyPI, and its
    main branch as read on 2026-12-06) declares ``_AckedModeParams.lost_seg_tracker`` with one tracker object as
    the dataclass default, so every transaction in the process shares it: the gaps of one that ended with data
    missing (cancelled, failed) were asked for again at the EOF of every later one, which ended
    NAK_LIMIT_REACHED after three restarts (found in audit, on both the agent and the ground). A patch of the
    library's class, not a copy of its code: drop it once cfdp-py makes the default a factory."""
    from cfdppy.handler import dest

    params = dest._AckedModeParams
    if getattr(params, "_sunlit_own_tracker", False):
        return
    made = params.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        if not args and "lost_seg_tracker" not in kwargs:
            self.lost_seg_tracker = dest.LostSegmentTracker()

    params.__init__ = init
    params._sunlit_own_tracker = True


_own_lost_segment_trackers()

SHA_PREFIX = b"sha256:"
FILE_BACKLOG_S = 0.25   # of a serial line the file PDUs may queue ahead of live data, either end (its owner's rule)
HISTORY = 32            # settled transfers kept for the record
STATE_SCHEMA = 1


class FileError(ValueError):
    """A request this entity refuses; the text says why and names the field."""


@dataclass(frozen=True)
class EntityConfig:
    """The protocol's settings for one link (both ends should agree on the timers)."""

    segment_len: int = 1024        # file bytes per file-data PDU
    ack_timer_s: float = 5.0       # positive acknowledgement (EOF, Finished) resent after this
    ack_limit: int = 20            # ... this many times, then the fault
    nak_timer_s: float = 5.0       # a NAK asked again after this
    nak_limit: int = 20
    check_timer_s: float = 10.0    # class 1: how long an incomplete file waits for late data
    inactivity_s: float = 120.0    # nothing heard from the peer about a transaction (unsuspended)
    max_restarts: int = 3          # a transfer going out started again at most this often
    max_incoming: int = 4          # transactions coming in at once
    max_queue: int = 64            # files waiting to go out

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise FileError(f"{f.name}: {value!r} must be a positive number")
        if not 64 <= self.segment_len <= 60_000:
            raise FileError(f"segment_len: {self.segment_len} must be in 64..60000")


@dataclass
class Transfer:
    """One file going out or coming in, as the operator sees it."""

    id: str                    # going out: "out-N" (stable across restarts); coming in: "in-SRC-SEQ"
    direction: str             # "out" | "in"
    peer: int
    source: str                # the name at the sender
    dest: str                  # the name at the receiver
    cls: int                   # CFDP class: 1 unacknowledged, 2 acknowledged
    priority: int = 5
    size: int | None = None
    progress: int = 0
    state: str = "queued"      # queued, active, done, failed, cancelled
    reason: str = ""
    sha256: str | None = None
    transaction: str | None = None   # the CFDP transaction in progress: "SRC-SEQ"
    created_s: float = 0.0
    started_s: float | None = None
    finished_s: float | None = None
    restarts: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    # Going out with a digest its owner took as it wrote the file (put's sha256), or once it has started, the one
    # sent: the file it was taken of (inode, size, modification ns); a digest given with the put is sent only while
    # the file is still that one, and the agent keeps it for a file the ground confirmed (flight/agent/files.py).
    hashed: list[int] | None = None

    @property
    def settled(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Transfer:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})


def _tid_text(source_id: int, seq: int) -> str:
    return f"{source_id}-{seq}"


SEQ_BLOCK = 64  # transaction numbers written down as taken at a time (the state saved once per block)


class _SeqCounter(ProvidesSeqCount):
    """Transaction sequence numbers, 32 bits, never reused across restarts: the state records the first
    number not yet reserved, a block of SEQ_BLOCK ahead, so one save covers that many transactions (an
    audit: a save per number, one of four state writes per file sent); a restart skips what was left."""

    def __init__(self, start: int, on_reserve: Callable[[], None]):
        self.value = start
        self._left = 0  # numbers still reserved on disk past ``value``
        self._on_reserve = on_reserve

    @property
    def saved(self) -> int:
        """What the state records: where a restart starts."""
        return (self.value + self._left) % 2**32

    def restart_at(self, value: int) -> None:
        self.value, self._left = value % 2**32, 0

    @property
    def max_bit_width(self) -> int:
        return 32

    @max_bit_width.setter
    def max_bit_width(self, width: int) -> None:
        raise ValueError("fixed at 32 bits")

    def get_and_increment(self) -> int:
        if self._left == 0:
            self._left = SEQ_BLOCK
            self._on_reserve()  # written down before the first number of the block is used
        value = self.value
        self.value = (self.value + 1) % 2**32
        self._left -= 1
        return value


class _Faults(DefaultFaultHandlerBase):
    """Every fault is noted for the transfer; the protocol's response is cfdp-py's (cancel)."""

    def __init__(self, entity: FileEntity):
        super().__init__()
        # A file whose checksum fails is not a file: cancel (cfdp-py ignores it by default for
        # class 1's check limit; class 1 still uses the check timer before declaring it).
        self.set_handler(ConditionCode.FILE_CHECKSUM_FAILURE, FaultHandlerCode.NOTICE_OF_CANCELLATION)
        self._entity = entity

    def _note(self, transaction_id, cond: ConditionCode, progress: int) -> None:
        self._entity._fault(_tid_text(transaction_id.source_id.value, transaction_id.seq_num.value), cond)

    notice_of_suspension_cb = notice_of_cancellation_cb = abandoned_cb = ignore_cb = _note


class _CheckTimers(CheckTimerProvider):
    def __init__(self, seconds: float):
        self._seconds = seconds

    def provide_check_timer(self, local_entity_id, remote_entity_id, entity_type: EntityType) -> Countdown:
        return Countdown.from_seconds(self._seconds)


class _User(CfdpUserBase):
    """cfdp-py's indications, handed to the entity (one per handler: it carries the filestore)."""

    def __init__(self, entity: FileEntity, vfs):
        super().__init__(vfs)
        self._entity = entity
        self.expected_sha256: str | None = None
        self.source_name: str | None = None

    def transaction_indication(self, transaction_indication_params: TransactionParams) -> None:
        pass

    def eof_sent_indication(self, transaction_id) -> None:
        pass

    def transaction_finished_indication(self, params: TransactionFinishedParams) -> None:
        self._entity._finished(self, params)

    def metadata_recv_indication(self, params) -> None:
        self.source_name = params.source_file_name
        for msg in params.msgs_to_user or []:
            value = bytes(msg.tlv.value)
            if value.startswith(SHA_PREFIX):
                self.expected_sha256 = value[len(SHA_PREFIX):].decode("ascii", "replace")[:64]

    def file_segment_recv_indication(self, params) -> None:
        pass

    def report_indication(self, transaction_id, status_report: Any) -> None:
        pass

    def suspended_indication(self, transaction_id, cond_code) -> None:
        pass

    def resumed_indication(self, transaction_id, progress: int) -> None:
        pass

    def fault_indication(self, transaction_id, cond_code, progress: int) -> None:
        pass

    def abandoned_indication(self, transaction_id, cond_code, progress: int) -> None:
        pass

    def eof_recv_indication(self, transaction_id) -> None:
        pass


class _Incoming:
    def __init__(self, handler: DestHandler, user: _User, vfs: ReceivingFilestore, transfer: Transfer, now: float):
        self.handler, self.user, self.vfs, self.transfer = handler, user, vfs, transfer
        self.heard_s = now
        self.announced = False   # started (or resumed) reported, once its metadata came
        self.declared: int | None = None  # the size its metadata declared, once admitted: bytes promised to it


class FileEntity:
    """A CFDP entity; see the module's text. Not thread-safe: one owner calls it."""

    def __init__(self, local_id: int, peer_id: int, root: Path | str, clock_s: Callable[[], float],
                 read_tops: frozenset[str] | None = None, write_tops: frozenset[str] | None = None,
                 state_path: Path | str | None = None, config: EntityConfig | None = None,
                 on_change: Callable[[str, Transfer | None], None] | None = None,
                 utc_s: Callable[[], float] = time.time,
                 before_install: Callable[[str, str], Callable[[], None] | None] | None = None,
                 roots: Mapping[str, Path] | None = None):
        """``clock_s``: the owner's monotonic seconds; ``utc_s``: its UTC, for the record. ``read_tops``/``write_tops``: the top
        directories under ``root`` it may send from / receive into (None: any). ``before_install(name, sha256)``:
        called when a file received whole and checked is about to replace whatever ``name`` holds, so the owner
        can keep that (the ground keeps every file that came down: ground/files.py); it may return how to undo
        that, called where the file then cannot be put in place. An OSError from it refuses the file, said to the
        sender. None: the new file replaces the old (the agent's uploads). ``roots``: top directories kept under
        another directory than ``root`` (the agent's ``sequences/``, in its state directory), names in them confined
        there (:func:`~flight.files.filestore.resolve`)."""
        self.local_id, self.peer_id = int(local_id), int(peer_id)
        self.root = Path(root)
        self.read_tops, self.write_tops = read_tops, write_tops
        self.roots = {top: Path(where) for top, where in (roots or {}).items()}
        self.config = config or EntityConfig()
        self._clock_s = clock_s
        self._utc_s = utc_s
        self._on_change = on_change or (lambda what, transfer: None)
        self._before_install = before_install
        self._state_path = Path(state_path) if state_path is not None else None
        self.suspended = False
        self._suspended_total = 0.0
        self._frozen_at = 0.0
        self._control: deque[bytes] = deque()   # ACK, NAK, Finished: before file data
        self._data: deque[bytes] = deque()      # the outgoing transfer's PDUs
        self._data_offsets: deque[tuple[int, int] | None] = deque()  # each one's (offset, length); None: a directive
        self._queued_offsets: set[int] = set()
        self._queue: list[tuple[int, int, str]] = []     # (priority, order, id)
        self._order = itertools.count()
        self.transfers: dict[str, Transfer] = {}
        self.history: deque[Transfer] = deque(maxlen=HISTORY)
        self._incoming: dict[str, _Incoming] = {}
        self._resumable: dict[str, Transfer] = {}   # coming in when we restarted
        self._resume_since_s: float | None = None  # entity time the wait for their senders began
        self._done_in: deque[str] = deque(maxlen=256)
        self._cancelled_in: deque[str] = deque(maxlen=64)
        self._out: Transfer | None = None
        self._out_heard_s = 0.0
        self._faults: dict[str, ConditionCode] = {}
        self.counters = {"pdus_in": 0, "pdus_out": 0, "bad_pdus": 0, "bytes_in": 0, "bytes_out": 0,
                         "done": 0, "failed": 0}
        self.last_error = ""
        self.load_error: str | None = None
        # Asked when a transaction comes in (size None) and when its metadata says its size: a
        # reason refuses it (a full disk), None admits.
        self.admit_incoming: Callable[[int | None], str | None] = lambda size_bytes: None
        # The owner's rules for a file by its name: asked with the destination and the size its metadata declares
        # (``partial`` None), then once the file is whole and checked with its data (``partial``), before it is put
        # in place. A reason refuses it (a filestore rejection, said to the sender); the file there before is kept.
        self.admit_file: Callable[[str, int, Path | None], str | None] = lambda name, size_bytes, partial: None
        self._next_request = 1
        self._seq = _SeqCounter(1, self._save)
        self._load()
        self._local = LocalEntityConfig(ByteFieldU16(self.local_id), IndicationConfig(), _Faults(self))
        self._remotes = RemoteEntityConfigTable([RemoteEntityConfig(
            entity_id=ByteFieldU16(self.peer_id), max_file_segment_len=self.config.segment_len,
            max_packet_len=self.config.segment_len + 64, closure_requested=True, crc_on_transmission=False,
            default_transmission_mode=TransmissionMode.ACKNOWLEDGED, crc_type=ChecksumType.CRC_32,
            positive_ack_timer_interval_seconds=self.config.ack_timer_s,
            positive_ack_timer_expiration_limit=self.config.ack_limit, check_limit=2,
            disposition_on_cancellation=True, immediate_nak_mode=True,
            nak_timer_interval_seconds=self.config.nak_timer_s, nak_timer_expiration_limit=self.config.nak_limit)])
        self._send_store = ConfinedFilestore(self.root, self.read_tops, self.roots)
        self._held_for: str | None = None  # the transfer whose file the send store holds a snapshot of
        self._source = SourceHandler(self._local, _User(self, self._send_store),
                                     self._remotes, _CheckTimers(self.config.check_timer_s), self._seq)
        self._source_user: _User = self._source.user  # type: ignore[assignment]

    # --- time -----------------------------------------------------------------------------------

    def now_s(self) -> float:
        """The entity's time: the owner's clock less every suspension."""
        return (self._frozen_at if self.suspended else self._clock_s()) - self._suspended_total

    def _time(self):
        return timebase.timebase(lambda: int(self.now_s() * 1000.0))

    def set_contact(self, in_contact: bool) -> None:
        """Loss of signal suspends every transaction (timers stop); the next contact resumes them."""
        if in_contact and self.suspended:
            self._suspended_total += self._clock_s() - self._frozen_at
            self.suspended = False
            self._on_change("resumed", None)
        elif not in_contact and not self.suspended:
            self._frozen_at = self._clock_s()
            self.suspended = True
            self._on_change("suspended", None)

    # --- requests -------------------------------------------------------------------------------

    def put(self, source: str, dest: str, cls: int = 2, priority: int = 5,
            meta: dict[str, Any] | None = None, save: bool = True, sha256: str | None = None) -> Transfer:
        """Queue ``root/source`` to go to the peer as ``dest``. FileError naming the field. ``save=False``
        leaves the state's save to the caller (:meth:`save`), who queues many at once and can find them
        again after a reset (the automatic downlink). ``sha256``: the file's digest where the caller took it
        as it wrote the file (the ground's uploads), so that none is read whole in the owner's loop when the
        transfer starts (found in audit: seconds for a GiB, the link stalled); sent only if the file is then
        still the one it was taken of (inode, size, modification time), else the file is hashed as without."""
        try:
            path = resolve(self.root, source, self.read_tops, "source", self.roots)
        except NameRefused as exc:
            raise FileError(str(exc)) from None
        if not path.is_file():
            raise FileError(f"source: no file {source!r}")
        if cls not in (1, 2):
            raise FileError(f"class: {cls!r} must be 1 (unacknowledged) or 2 (acknowledged)")
        if not 0 <= priority <= 255:
            raise FileError(f"priority: {priority!r} must be in 0..255 (0 first)")
        if not dest or len(dest) > 200:
            raise FileError(f"dest: {dest!r} must be 1..200 characters (the receiver checks the rest)")
        if sha256 is not None and not (isinstance(sha256, str) and len(sha256) == 64
                                       and all(c in "0123456789abcdef" for c in sha256)):
            raise FileError(f"sha256: {str(sha256)[:80]!r} is not a SHA-256 in lower-case hex")
        if self.queue_full():
            raise FileError(f"the queue holds {self.config.max_queue} files already; cancel or wait")
        st = path.stat()
        transfer = Transfer(id=f"out-{self._next_request}", direction="out", peer=self.peer_id, source=source,
                            dest=dest, cls=cls, priority=priority, size=st.st_size,
                            created_s=self._utc_s(), meta=dict(meta or {}), sha256=sha256,
                            hashed=None if sha256 is None else [st.st_ino, st.st_size, st.st_mtime_ns])
        self._next_request += 1
        self.transfers[transfer.id] = transfer
        heapq.heappush(self._queue, (priority, next(self._order), transfer.id))
        if save:
            self._save()
        self._on_change("queued", transfer)
        return transfer

    def save(self) -> None:
        """Write the transfers' state now (after puts with ``save=False``)."""
        self._save()

    def queue_full(self) -> bool:
        """No room for one more file going out (:meth:`put` refuses it)."""
        return sum(1 for t in self.transfers.values() if t.direction == "out") >= self.config.max_queue

    def cancel(self, transfer_id: str, reason: str = "cancelled by the operator") -> Transfer:
        """Stop a transfer: one queued is removed; one in progress is cancelled (the peer is told
        where the protocol can: an EOF(cancel) going out, a Finished(cancel) coming in)."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            raise FileError(f"transfer: no transfer {transfer_id!r} in progress")
        with self._time():
            if transfer is self._out:
                self._out = None  # an idle source below is this cancel, not a fault to start again for
                if self._source.transaction_id is not None:
                    try:
                        self._source.cancel_request(self._source.transaction_id)  # an EOF(cancel)
                    except Exception as exc:  # noqa: BLE001 - the file went: the peer times out instead
                        self._bad(f"{type(exc).__name__}: {exc}")
                    self._drain(self._source, self._data)
                if self._source.state != CfdpState.IDLE:
                    self._source.reset()  # its EOF(cancel) is queued; no ACK is waited for
                self._settle(transfer, "cancelled", reason)
            elif transfer.direction == "in":
                self._settle(transfer, "cancelled", reason)  # first: the handler's indication finds it settled
                tid = transfer.transaction or ""
                self._resumable.pop(tid, None)
                self._done_in.append(tid)
                self._cancelled_in.append(tid)
                entry = self._incoming.pop(tid, None)
                if entry is not None and entry.handler.transaction_id is not None:
                    self._drain(entry.handler, self._control)
                    entry.handler.cancel_request(entry.handler.transaction_id)
                    try:
                        entry.handler.state_machine()  # the Finished(cancel)
                    except Exception as exc:  # noqa: BLE001
                        self._bad(f"{type(exc).__name__}: {exc}")
                    self._drain(entry.handler, self._control)
                    if entry.handler.state != CfdpState.IDLE:
                        entry.handler.reset()
                self._discard_partial(self.root / PARTIAL_DIR / f"{tid}.part")
            else:
                self._settle(transfer, "cancelled", reason)  # queued: nothing sent yet
        return transfer

    # --- PDUs in --------------------------------------------------------------------------------

    def receive(self, raw: bytes) -> None:
        """One PDU from the peer. A bad one is counted (``bad_pdus``, ``last_error``), never raised."""
        self.counters["pdus_in"] += 1
        try:
            pdu = PduFactory.from_raw(bytes(raw))
        except Exception as exc:  # noqa: BLE001 - spacepackets raises several kinds on bad bytes
            pdu, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = "not a CFDP PDU"
        if pdu is None:
            self._bad(why)
            return
        if pdu.dest_entity_id.value != self.local_id and pdu.direction == Direction.TOWARDS_RECEIVER:
            self._bad(f"PDU for entity {pdu.dest_entity_id.value}, this is {self.local_id}")
            return
        if _is_directive(pdu, DirectiveType.EOF_PDU) and int(pdu.condition_code) > 0x0F:
            # spacepackets 0.32 reads an EOF's condition code without shifting it down (data &
            # 0xF0): put it right before cfdp-py echoes it into an ACK or a Finished PDU.
            try:
                pdu.condition_code = ConditionCode(int(pdu.condition_code) >> 4)
            except ValueError:
                self._bad(f"EOF with condition code {int(pdu.condition_code) >> 4}, which CFDP does not define")
                return
        with self._time():
            try:
                if pdu.direction == Direction.TOWARDS_RECEIVER:
                    self._to_dest(pdu)
                else:
                    self._to_source(pdu)
            except Exception as exc:  # noqa: BLE001 - cfdp-py raises on PDUs it will not take
                self._bad(f"{type(exc).__name__}: {exc}")

    def _bad(self, why: str) -> None:
        self.counters["bad_pdus"] += 1
        self.last_error = why[:200]

    def _to_dest(self, pdu) -> None:
        tid = _tid_text(pdu.source_entity_id.value, pdu.transaction_seq_num.value)
        entry = self._incoming.get(tid)
        if entry is None:
            if tid in self._done_in:
                self._answer_settled(pdu)
                return
            why = _cannot_open(pdu, self.peer_id)
            if why is not None:  # counted, no transfer made (found in audit: a stray ACK made one, failed "abandoned")
                self._bad(f"transaction {tid}: {why}")
                return
            if len(self._incoming) >= self.config.max_incoming:
                self._bad(f"transaction {tid}: {self.config.max_incoming} files coming in already")
                return
            entry = self._open_incoming(tid, pdu)
        entry.heard_s = self.now_s()
        if _is_directive(pdu, DirectiveType.METADATA_PDU) and entry.vfs.refuse is None:
            self._admit(entry, pdu.dest_file_name, int(pdu.file_size))
        if _is_directive(pdu, DirectiveType.EOF_PDU) and pdu.transmission_mode == TransmissionMode.ACKNOWLEDGED \
                and entry.handler.step.name not in _TAKES_EOF:
            # An EOF sent again because our ACK was lost, after the handler has moved on to asking
            # for missing data: cfdp-py drops it there, the standard acknowledges it again.
            self._ack_eof(pdu, TransactionStatus.ACTIVE)
            if pdu.condition_code != ConditionCode.NO_ERROR and entry.handler.transaction_id is not None:
                # The sender cancelled (EOF(cancel)) while we asked for missing data: cfdp-py drops that EOF too,
                # and the transfer asked on until NAK_LIMIT_REACHED, holding its slot and partial file (an audit).
                # Cancelled here as the sender asked.
                entry.handler.cancel_request(entry.handler.transaction_id)
                self._step_incoming(tid, entry)
            return
        if pdu.pdu_type.name == "FILE_DATA":
            self.counters["bytes_in"] += len(pdu.file_data)
        entry.handler.state_machine(pdu)
        self._step_incoming(tid, entry)

    def _admit(self, entry: _Incoming, dest: str | None, size_bytes: int) -> None:
        """A file's metadata: room for it, and the owner's rules for its name and size; a refusal is set for its
        first write, and names the file in the reports where its name is a plain one (a refused file had none)."""
        entry.declared = None  # its own promise is not held against it (its metadata asked for again)
        refuse = self.admit_incoming(size_bytes)
        if refuse is None and dest:
            refuse = self.admit_file(dest, size_bytes, None)
        entry.vfs.refuse = refuse
        if refuse is None:
            entry.declared = size_bytes
        if refuse is not None and dest and not entry.transfer.dest:
            try:
                entry.transfer.dest = check_file_name(dest, self.write_tops, "destination")
            except NameRefused:
                pass

    def promised_in_bytes(self) -> int:
        """The bytes the files coming in have still to write: each admitted one's declared size less what its
        partial file holds, and so for those that were coming in before a restart and whose sender may continue.
        The owner's admission of the next file counts them as taken (found in audit: each upload was admitted
        against the free space alone, so two at once that each fitted took the disk past its reserve together)."""
        promised = [(entry.declared, entry.vfs.partial) for entry in self._incoming.values()
                    if entry.declared is not None and not entry.transfer.settled]  # a file in place is on the disk
                    # already (found in review: counted again while its Finished waited for its ACK)
        promised += [(t.size, self.root / PARTIAL_DIR / f"{tid}.part") for tid, t in self._resumable.items()
                     if t.size is not None]
        total = 0
        for declared, partial in promised:
            try:
                written = partial.stat().st_size
            except OSError:
                written = 0
            total += max(0, int(declared) - written)
        return total

    def _open_incoming(self, tid: str, pdu) -> _Incoming:
        partial = self.root / PARTIAL_DIR / f"{tid}.part"
        vfs = ReceivingFilestore(self.root, self.write_tops, partial, self.roots)
        vfs.refuse = self.admit_incoming(None)
        user = _User(self, vfs)
        handler = DestHandler(self._local, user, self._remotes, _CheckTimers(self.config.check_timer_s))
        transfer = self._resumable.pop(tid, None)
        if transfer is None:
            transfer = Transfer(id=f"in-{tid}", direction="in", peer=pdu.source_entity_id.value, source="",
                                dest="", cls=2 if pdu.transmission_mode == TransmissionMode.ACKNOWLEDGED else 1,
                                state="active", created_s=self._utc_s(), started_s=self._utc_s(), transaction=tid)
            self.transfers[transfer.id] = transfer
        else:
            transfer.restarts += 1
        entry = _Incoming(handler, user, vfs, transfer, self.now_s())
        self._incoming[tid] = entry
        self._save()
        return entry

    def _step_incoming(self, tid: str, entry: _Incoming) -> None:
        t = entry.transfer
        if entry.vfs.dest_name and not entry.announced:
            entry.announced = True
            t.dest = entry.vfs.dest_name
            t.source = entry.user.source_name or ""
            t.size = entry.handler.file_size
            self._save()
            self._on_change("resumed" if t.restarts else "started", t)
            for other_tid, other in list(self._incoming.items()):
                if other is not entry and other.transfer.peer == t.peer and other.transfer.dest == t.dest:
                    # The sender started this file again as a new transaction (it restarted), or sent the
                    # next file of that name: the old one will never finish, or has (done, its Finished not
                    # yet acknowledged).
                    self._drop_incoming(other_tid, other, f"superseded by transaction {tid} (the sender restarted)")
        t.progress = entry.handler.progress or t.progress
        self._drain(entry.handler, self._control)
        if entry.handler.state == CfdpState.IDLE:
            self._incoming.pop(tid, None)
            self._done_in.append(tid)
            # Popped for one settled too (its Finished never acknowledged): kept, one a file for good (found in audit)
            fault = self._faults.pop(tid, None)
            if not t.settled:
                self._settle(t, "failed", entry.vfs.refusal or (fault.name if fault else "abandoned"))
                self._discard_partial(entry.vfs.partial)

    def _answer_settled(self, pdu) -> None:
        """A late PDU of a transaction already over: an EOF is acknowledged again (its ACK was
        lost) and, for one cancelled here, the Finished(cancel) sent again so that the sender
        stops too; anything else is dropped."""
        if _is_directive(pdu, DirectiveType.EOF_PDU) and pdu.transmission_mode == TransmissionMode.ACKNOWLEDGED:
            self._ack_eof(pdu, TransactionStatus.TERMINATED)
            tid = _tid_text(pdu.source_entity_id.value, pdu.transaction_seq_num.value)
            if tid in self._cancelled_in:
                conf = copy.copy(pdu.pdu_header.pdu_conf)
                conf.direction = Direction.TOWARDS_SENDER
                params = FinishedParams(ConditionCode.CANCEL_REQUEST_RECEIVED, DeliveryCode.DATA_INCOMPLETE,
                                        FileStatus.DISCARDED_DELIBERATELY)
                self._control.append(bytes(FinishedPdu(params=params, pdu_conf=conf).pack()))

    def _ack_eof(self, eof, status: TransactionStatus) -> None:
        conf = copy.copy(eof.pdu_header.pdu_conf)
        conf.direction = Direction.TOWARDS_SENDER
        self._control.append(bytes(AckPdu(conf, DirectiveType.EOF_PDU, eof.condition_code, status).pack()))

    def _to_source(self, pdu) -> None:
        tid = _tid_text(pdu.source_entity_id.value, pdu.transaction_seq_num.value)
        current = self._source.transaction_id
        if self._out is None or current is None or _tid_text(current.source_id.value, current.seq_num.value) != tid:
            if _is_directive(pdu, DirectiveType.FINISHED_PDU) and pdu.transmission_mode == TransmissionMode.ACKNOWLEDGED:
                # A transaction of ours that is over (restarted, cancelled): acknowledge its
                # Finished so the receiver stops asking.
                finished: FinishedPdu = pdu
                conf = copy.copy(pdu.pdu_header.pdu_conf)
                conf.direction = Direction.TOWARDS_RECEIVER
                self._control.append(bytes(AckPdu(conf, DirectiveType.FINISHED_PDU, finished.condition_code,
                                                  TransactionStatus.TERMINATED).pack()))
                return
            # Anything else of a transaction not going out now (an ACK, a NAK, a class-1 Finished of one closed or
            # restarted, perhaps before a reset) is dropped, and counted as the receiver counts its strays (found in
            # audit: dropped unseen); a Finished above is answered, as the receiver answers a late EOF.
            kind = "file data" if pdu.pdu_type.name == "FILE_DATA" else pdu.directive_type.name
            self._bad(f"transaction {tid}: {kind} of no transfer going out here")
            return
        if _is_directive(pdu, DirectiveType.NAK_PDU):
            try:  # the file held for the transfer: its size without a look at the disk
                size: int | None = self._send_store.file_size(Path(self._out.source))
            except (OSError, ValueError):  # not held, and gone: cfdp-py's own handling of the NAK says so
                size = None
            why = None if size is None else _nak_past_end(pdu, size)
            if why is not None:
                self._bad(f"transaction {tid}: {why}")
                return
        self._out_heard_s = self.now_s()
        self._source.state_machine(pdu)
        self._drain_source()

    # --- PDUs out -------------------------------------------------------------------------------

    def pull(self, budget_bytes: int) -> list[bytes]:
        """The PDUs to send now, at most about ``budget_bytes`` (at least one if any is due)."""
        out: list[bytes] = []
        if self.suspended:
            return out
        with self._time():
            self._tick()
            while budget_bytes > 0:
                if self._control:
                    pdu = self._control.popleft()
                elif self._data:
                    pdu = self._data.popleft()
                    segment = self._data_offsets.popleft()
                    if segment is not None:
                        self._queued_offsets.discard(segment[0])
                        self.counters["bytes_out"] += segment[1]
                elif not self._advance():
                    break
                else:
                    continue
                out.append(pdu)
                budget_bytes -= len(pdu)
        self.counters["pdus_out"] += len(out)
        return out

    def sending(self) -> bool:
        """PDUs waiting or a file going out: the owner should come back as soon as its budget allows."""
        return bool(self._control or self._data or self._out is not None)

    def pending(self) -> bool:
        """Something to send or a transaction in progress (the owner's loop should come back)."""
        return bool(self._control or self._data or self._out is not None or self._incoming
                    or (self._queue and not self.suspended))

    def _advance(self) -> bool:
        """One more step of the transfer going out; False when it has nothing to send now."""
        if self._out is None and not self._start_next():
            return False
        before = len(self._data)
        try:
            self._source.state_machine()
        except Exception as exc:  # noqa: BLE001 - a file vanished, a filestore refused
            self._abort_out(f"{type(exc).__name__}: {exc}")
            return False
        self._drain_source()
        return len(self._data) > before

    def _start_next(self) -> bool:
        self._let_go()  # no transfer goes out now: none holds a snapshot
        while self._queue:
            _, _, tid = heapq.heappop(self._queue)
            transfer = self.transfers.get(tid)
            if transfer is None or transfer.settled:
                continue
            try:  # the version sent, held as it is now: a file replaced while it goes is sent whole as it was
                held = self._send_store.snapshot(transfer.source)
                self._held_for = transfer.id
                size = self._send_store.file_size(Path(transfer.source))
                sha = _known_sha256(transfer, held, size) or _sha256_file(held, size)
            except (OSError, NameRefused) as exc:
                self._send_store.release()
                self._settle(transfer, "failed", f"source {transfer.source!r}: {exc}")
                continue
            request = PutRequest(
                destination_id=ByteFieldU16(self.peer_id), source_file=Path(transfer.source),
                dest_file=Path(transfer.dest),
                trans_mode=TransmissionMode.ACKNOWLEDGED if transfer.cls == 2 else TransmissionMode.UNACKNOWLEDGED,
                closure_requested=transfer.cls == 2,
                msgs_to_user=[MessageToUserTlv(SHA_PREFIX + sha.encode("ascii"))])
            try:
                taken = self._source.put_request(request)
            except Exception as exc:  # noqa: BLE001
                self._settle(transfer, "failed", f"{type(exc).__name__}: {exc}")
                continue
            if not taken:  # the handler is still busy (cannot happen: one transfer at a time)
                heapq.heappush(self._queue, (transfer.priority, next(self._order), transfer.id))
                return False
            transfer.sha256 = sha
            st = held.stat()  # the file that digest is of (its owner keeps it: found in audit, a product rewritten
            transfer.hashed = [st.st_ino, size, st.st_mtime_ns]  # under a name the ground had was never sent)
            transfer.state = "active"
            transfer.started_s = transfer.started_s or self._utc_s()
            transfer.progress = 0
            self._out = transfer
            self._out_heard_s = self.now_s()
            # The transaction id is assigned at the handler's first step.
            self._source.state_machine()
            tid_now = self._source.transaction_id
            transfer.transaction = None if tid_now is None else _tid_text(tid_now.source_id.value, tid_now.seq_num.value)
            self._drain_source()
            self._save()
            self._on_change("started", transfer)
            return True
        return False

    def _drain_source(self) -> None:
        self._drain(self._source, self._data)
        out = self._out
        if out is None:
            return
        out.progress = max(out.progress, int(self._source.progress or 0))
        if self._source.state == CfdpState.IDLE and not out.settled:
            fault = self._faults.pop(out.transaction or "", None)
            self._restart_or_fail(out, fault.name if fault else "abandoned")

    def _drain(self, handler, into: deque[bytes]) -> None:
        while handler.packets_ready:
            holder = handler.get_next_packet()
            if holder is None or holder.pdu is None:
                break
            if holder.pdu_type.name == "FILE_DATA":
                # Every NAK asks for its whole range again, and a receiver that lost its state asks
                # for everything up to each segment it gets: a segment already waiting to go is not
                # queued twice (cfdp-py would).
                offset = holder.pdu.offset
                if into is self._data and offset in self._queued_offsets:
                    continue
                self._queued_offsets.add(offset)
                raw = bytes(holder.pdu.pack())
                into.append(raw)
                self._data_offsets.append((offset, len(holder.pdu.file_data)))
            else:
                into.append(bytes(holder.pdu.pack()))
                if into is self._data:
                    self._data_offsets.append(None)

    # --- timers and settling --------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.now_s()
        limit = self.config.inactivity_s
        for tid, entry in list(self._incoming.items()):
            try:
                entry.handler.state_machine()
            except Exception as exc:  # noqa: BLE001
                self._bad(f"{type(exc).__name__}: {exc}")
            self._step_incoming(tid, entry)
            if tid in self._incoming and now - entry.heard_s > limit:
                self._drop_incoming(tid, entry, f"nothing from entity {entry.transfer.peer} for {limit:g} s")
        out = self._out
        if out is not None and self._source.state != CfdpState.IDLE and not self._data:
            waiting = self._source.step.name in ("WAITING_FOR_EOF_ACK", "WAITING_FOR_FINISHED")
            if waiting and now - self._out_heard_s > limit:
                self._source.reset()
                self._restart_or_fail(out, f"nothing from entity {self.peer_id} for {limit:g} s")

    def _drop_incoming(self, tid: str, entry: _Incoming, reason: str) -> None:
        """Stop a transaction coming in; one not settled fails with ``reason``. One already settled (its file
        in place, its Finished not acknowledged) only loses its handler: found in audit, a lost ACK(Finished)
        and the next file of the name settled a done transfer again as failed (counted, said, listed twice)."""
        self._incoming.pop(tid, None)
        self._faults.pop(tid, None)
        entry.handler.reset()
        self._done_in.append(tid)
        if entry.transfer.settled:
            return
        self._discard_partial(entry.vfs.partial)
        self._settle(entry.transfer, "failed", reason)

    def _restart_or_fail(self, transfer: Transfer, reason: str) -> None:
        self._out = None
        self._let_go(transfer)  # a restart takes a new one as it starts
        self._clear_data()
        if self._source.state != CfdpState.IDLE:
            self._source.reset()
        if transfer.restarts < self.config.max_restarts:
            transfer.restarts += 1
            transfer.state, transfer.reason = "queued", reason
            heapq.heappush(self._queue, (-1, next(self._order), transfer.id))  # before anything new
            self._save()
            self._on_change("restarted", transfer)
        else:
            self._settle(transfer, "failed", f"{reason} (after {transfer.restarts} restarts)")

    def _clear_data(self) -> None:
        self._data.clear()
        self._data_offsets.clear()
        self._queued_offsets.clear()

    def _abort_out(self, reason: str) -> None:
        out = self._out
        self._out = None
        self._clear_data()
        if self._source.state != CfdpState.IDLE:
            self._source.reset()
        if out is not None:
            self._settle(out, "failed", reason)

    def _fault(self, tid: str, cond: ConditionCode) -> None:
        self._faults[tid] = cond

    def _finished(self, user: _User, params: TransactionFinishedParams) -> None:
        """cfdp-py's Transaction-Finished.indication, from either handler."""
        tid_obj = params.transaction_id
        tid = _tid_text(tid_obj.source_id.value, tid_obj.seq_num.value)
        fp = params.finished_params
        if user is self._source_user:
            out = self._out
            if out is None or out.transaction != tid or out.settled:
                return
            ok = fp.condition_code == ConditionCode.NO_ERROR and fp.delivery_code == DeliveryCode.DATA_COMPLETE
            self._out = None
            out.progress = out.size or out.progress
            if ok:
                self._settle(out, "done", "delivered" if out.cls == 2 else "sent (class 1: not confirmed)")
            elif fp.condition_code in (ConditionCode.POSITIVE_ACK_LIMIT_REACHED, ConditionCode.INACTIVITY_DETECTED,
                                       ConditionCode.NAK_LIMIT_REACHED):
                self._restart_or_fail(out, fp.condition_code.name)
            else:
                self._settle(out, "failed", f"the receiver says {fp.condition_code.name}, {fp.file_status.name}")
            return
        entry = self._incoming.get(tid)
        if entry is None or entry.transfer.settled:
            return
        t = entry.transfer
        if fp.condition_code != ConditionCode.NO_ERROR or fp.delivery_code != DeliveryCode.DATA_COMPLETE:
            self._settle(t, "failed", entry.vfs.refusal or fp.condition_code.name)
            self._discard_partial(entry.vfs.partial)
            return
        try:
            dest = entry.vfs.dest_name or ""
            final = resolve(self.root, dest, self.write_tops, "destination", self.roots)
            size = entry.vfs.partial.stat().st_size
            sha = _sha256_file(entry.vfs.partial, size)
            if entry.user.expected_sha256 is not None and sha != entry.user.expected_sha256:
                self._refuse_received(entry, fp, ConditionCode.FILE_CHECKSUM_FAILURE, FileStatus.DISCARDED_DELIBERATELY,
                                      f"SHA-256 {sha[:16]}… is not the sender's {entry.user.expected_sha256[:16]}…")
                return
            refused = self.admit_file(dest, size, entry.vfs.partial)
            if refused is not None:
                self._refuse_received(entry, fp, ConditionCode.FILESTORE_REJECTION,
                                      FileStatus.DISCARDED_FILESTORE_REJECTION, refused)
                return
            undo = self._before_install(dest, sha) if self._before_install is not None else None
            try:
                self._install(entry.vfs.partial, final, dest)
            except OSError:
                if undo is not None:  # what it did for a file that did not come to be put in place
                    undo()
                raise
        except (OSError, NameRefused) as exc:
            self._refuse_received(entry, fp, ConditionCode.FILESTORE_REJECTION,
                                  FileStatus.DISCARDED_FILESTORE_REJECTION, f"cannot put the file in place: {exc}")
            return
        t.sha256, t.progress = sha, t.size or t.progress
        self._settle(t, "done", "received, CRC-32 and SHA-256 checked")

    def _install(self, partial: Path, final: Path, dest: str) -> None:
        """The whole, checked file put at ``final`` atomically (fsync, rename). In a top directory kept elsewhere
        (``roots``), perhaps on another file system, where no rename reaches: copied beside its place first, under a
        hidden name the next file of that name writes over, then renamed."""
        if dest.partition("/")[0] not in self.roots:
            install_file(partial, final)
            return
        beside = final.parent / f".{final.name}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(partial, beside)
            install_file(beside, final)
        finally:
            beside.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)

    def _refuse_received(self, entry: _Incoming, fp, condition: ConditionCode, status: FileStatus,
                         reason: str) -> None:
        """A whole file that cannot be kept: discarded, and said in the Finished PDU (cfdp-py builds
        it from these same parameters, after this indication), so the sender hears it too."""
        fp.condition_code, fp.delivery_code, fp.file_status = condition, DeliveryCode.DATA_INCOMPLETE, status
        self._discard_partial(entry.vfs.partial)
        self._settle(entry.transfer, "failed", reason)

    def _settle(self, transfer: Transfer, state: str, reason: str) -> None:
        self._let_go(transfer)
        self._faults.pop(transfer.transaction or "", None)
        transfer.state, transfer.reason = state, reason
        transfer.finished_s = self._utc_s()
        if state == "done":
            self.counters["done"] += 1
        elif state == "failed":
            self.counters["failed"] += 1
        self.transfers.pop(transfer.id, None)
        self.history.append(transfer)
        self._save()
        self._on_change(state, transfer)

    def _let_go(self, transfer: Transfer | None = None) -> None:
        """The snapshot held to send ``transfer`` (None: whichever) goes as its transaction ends, however it ends:
        done, failed, cancelled, abandoned or restarted. It went only as the next file started (found in audit):
        a transfer that ended with nothing to send after it (its last PDU the budget's last, a cancel during loss
        of signal, a fault as it started) kept the hard link, and the disk of a file replaced or deleted since,
        until the next downlink, if ever. One left by a restart goes at the next start (:meth:`_load`)."""
        if transfer is None or transfer.id == self._held_for:
            self._send_store.release()
            self._held_for = None

    @staticmethod
    def _discard_partial(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    # --- status ---------------------------------------------------------------------------------

    def list(self) -> list[Transfer]:
        """Transfers in progress and queued, then the newest settled ones."""
        for tid, entry in self._incoming.items():
            entry.transfer.progress = int(entry.handler.progress or entry.transfer.progress)
        return [*self.transfers.values(), *reversed(self.history)]

    def find(self, transfer_id: str) -> Transfer | None:
        return self.transfers.get(transfer_id) or next((t for t in self.history if t.id == transfer_id), None)

    def counts(self) -> dict[str, int]:
        return {"active_in": len(self._incoming), "active_out": int(self._out is not None),
                "queued": sum(1 for t in self.transfers.values() if t.state == "queued"), **self.counters}

    # --- persistence ----------------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_path is None:
            return
        body = {"schema": STATE_SCHEMA, "next_request": self._next_request, "seq": self._seq.saved,
                "transfers": [t.to_json() for t in self.transfers.values()],
                "history": [t.to_json() for t in self.history]}
        try:
            write_checked_json(self._state_path, body)
        except OSError as exc:
            self.last_error = f"transfer state not kept: {exc}"

    def _load(self) -> None:
        self._load_state()
        # Partial files of transactions nobody continues are removed when they time out; those
        # left from before are removed now, a state file missing or damaged too (an audit: whole uplinks kept),
        # and the snapshot of a file that was going out: no transfer holds one yet (each takes its own as it starts).
        keep = {f"{tid}.part" for tid in self._resumable}
        partial_dir = self.root / PARTIAL_DIR
        if partial_dir.is_dir():
            for p in partial_dir.iterdir():
                if p.name not in keep:
                    self._discard_partial(p)

    def _load_state(self) -> None:
        if self._state_path is None or not self._state_path.exists():  # numbers from UTC, as below
            self._seq.restart_at(self._seq_from_utc())  # (found in review: a file missing began at 1 too)
            return
        try:
            body = read_checked_json(self._state_path)
            if body.get("schema") != STATE_SCHEMA:
                raise CorruptFile(f"schema {body.get('schema')!r}, expected {STATE_SCHEMA}")
            self._next_request = int(body["next_request"])
            self._seq.restart_at(int(body["seq"]))
            transfers = [Transfer.from_json(t) for t in body["transfers"]]
            history = [Transfer.from_json(t) for t in body["history"]]
        except (CorruptFile, OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.load_error = f"{self._state_path.name}: {exc}; transfers in progress forgotten"
            quarantine(self._state_path)
            # The numbers used are lost with it: taken again from 1, they were the ones the peer had just seen end,
            # and it dropped the next files' PDUs as of those (found in audit: each upload failed after its restarts).
            # From UTC instead (as where there is no file): past an earlier start's numbers (:meth:`_seq_from_utc`).
            self._seq.restart_at(self._seq_from_utc())
            return
        self.history.extend(history)
        for t in transfers:
            if t.direction == "out":
                if t.state == "active":
                    t.state, t.restarts, t.reason = "queued", t.restarts + 1, "restarted after a reset"
                self.transfers[t.id] = t
                heapq.heappush(self._queue, (-1 if t.restarts else t.priority, next(self._order), t.id))
            elif t.transaction:
                self.transfers[t.id] = t
                self._resumable[t.transaction] = t

    def number_sends_past(self, taken: int) -> None:
        """The next send's id past ``out-<taken>``: an owner that keeps records of its sends by id (the ground's)
        gives the highest it holds, as a lost state numbers sends from out-1 again (found in audit: the ground's
        next put took over an earlier put's record, another operator's)."""
        self._next_request = max(self._next_request, taken + 1)

    def _seq_from_utc(self) -> int:
        """Where transaction numbers begin with no saved state: UTC in milliseconds (mod 2**32), past the numbers an
        earlier start took unless it took more than one a millisecond. From the UTC second (as it was), an earlier
        start that sent files faster than one a second ran ahead of the clock, and a start a second later took
        again numbers the peer had just seen end: it answered them as settled, and the upload failed after its
        restarts (found in audit). It wraps every 49.7 days; a start lands on a number the peer still holds
        only where the clock reads within a few milliseconds of when that number was taken."""
        return max(1, int(self._utc_s() * 1000.0) % 2**32)

    def expire_resumable(self) -> list[Transfer]:
        """Transfers that were coming in before a restart and whose sender never came back
        within ``inactivity_s`` of entity time, counted from the first call (the owner's first
        housekeeping, once its time has begun): failed (called by the owner's housekeeping). Not
        from the clock's zero: a monotonic clock counts from the machine's boot, and every such
        transfer failed at the first housekeeping of an entity up for over two minutes (an audit)."""
        gone: list[Transfer] = []
        if not self._resumable:
            return gone
        if self._resume_since_s is None:
            self._resume_since_s = self.now_s()
        if self.now_s() - self._resume_since_s < self.config.inactivity_s:
            return gone
        for tid, t in list(self._resumable.items()):
            del self._resumable[tid]
            self._discard_partial(self.root / PARTIAL_DIR / f"{tid}.part")
            self._settle(t, "failed", "its sender did not continue after the restart")
            gone.append(t)
        return gone


_TAKES_EOF = ("IDLE", "RECEIVING_FILE_DATA", "RECV_FILE_DATA_WITH_CHECK_LIMIT_HANDLING", "WAITING_FOR_METADATA")


def _is_directive(pdu, directive: DirectiveType) -> bool:
    return pdu.pdu_type.name == "FILE_DIRECTIVE" and pdu.directive_type == directive


def _cannot_open(pdu, peer_id: int) -> str | None:
    """Why a PDU of no transaction here cannot begin one, or None: it comes from an entity that is not the peer, or
    it is not what cfdp-py takes as a transaction's first PDU (``DestHandler._check_inserted_packet``: the metadata,
    or in class 2 a file-data or EOF PDU, whose lost metadata is then asked for). Opened anyway, such a PDU (a late
    ACK of a Finished sent before a restart, a Prompt, a class-1 segment whose metadata was lost) left a transfer
    that no file was ever sent for, said and counted as failed "abandoned" at the next tick."""
    source = pdu.source_entity_id.value
    if source != peer_id:
        return f"from entity {source}; this entity takes files from entity {peer_id} only"
    if _is_directive(pdu, DirectiveType.METADATA_PDU):
        return None
    if pdu.transmission_mode == TransmissionMode.ACKNOWLEDGED and (
            pdu.pdu_type.name == "FILE_DATA" or _is_directive(pdu, DirectiveType.EOF_PDU)):
        return None
    kind = "file data" if pdu.pdu_type.name == "FILE_DATA" else f"{pdu.directive_type.name}"
    mode = "class 2" if pdu.transmission_mode == TransmissionMode.ACKNOWLEDGED else "class 1"
    return f"{kind} ({mode}) of no transaction in progress here, and it cannot begin one"


def _nak_past_end(nak, size_bytes: int) -> str | None:
    """Why a NAK cannot be of a file of ``size_bytes``, or None. cfdp-py queues a file-data PDU for every segment of
    what a NAK asks for, past the file's end too (empty ones): found in audit, one NAK of (0, 50 MB) for a 20 kB file
    queued 48,829 PDUs in the agent's loop, one of (0, 4 GiB) over four million."""
    for start, end in nak.segment_requests or []:
        if end > size_bytes and not start == end == 0:  # (0, 0): the metadata asked again
            return f"NAK segment_requests ({start}, {end}) go past the file's {size_bytes} bytes"
    return None


def _known_sha256(transfer: Transfer, held: Path, size: int) -> str | None:
    """The digest given with the put, if the file held to send is still the one it was taken of (a hard link
    shares its inode and times; a file replaced or written since is not), and as long as it was then."""
    if transfer.sha256 is None or transfer.hashed is None:
        return None
    st = held.stat()
    return transfer.sha256 if [st.st_ino, size, st.st_mtime_ns] == list(transfer.hashed) else None


def _sha256_file(path: Path, size: int) -> str:
    """The SHA-256 of the first ``size`` bytes of ``path``: what a transaction sends of it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while size > 0:
            chunk = f.read(min(size, 1 << 20))
            if not chunk:
                raise OSError(f"{path.name}: shorter than the {size} bytes held to send (truncated as it went)")
            h.update(chunk)
            size -= len(chunk)
    return h.hexdigest()


__all__ = ["EntityConfig", "FileEntity", "FileError", "Transfer"]
