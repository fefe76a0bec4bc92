"""The ground's end of file transfer: one CFDP entity per spacecraft on the ground client's link.

:class:`GroundFiles` wraps a :class:`~flight.files.entity.FileEntity` (entity 1; the agent is
entity 2, ``flight/agent/files.py``) over a file area on the ground::

    <area>/uplink/     copies of the files the operators send (one per transfer, removed once it ends)
    <area>/downlink/   what the agent sends: downlink/<its name>, e.g. downlink/products/job-3.json; a file
                       a later one of its name with other bytes would replace is kept beside it, as
                       downlink/products/job-3+2.json (:func:`aside_name`), its records following it
    <area>/.partial/   files coming in, until whole and checked (the entity's)

and feeds it from a :class:`~ground.client.GroundClient`: each TM(141,1) on APID FILES goes to
:meth:`FileEntity.receive <flight.files.entity.FileEntity.receive>` (the client's
``file_sink`` hook: a PDU is not a packet of the store, so it has no key, no gap count and no
listener), and the entity's PDUs go up as TC(141,1) under a byte-rate budget (a token bucket
of ``rate_bps``, so files never crowd out commands). Loss of signal is the ground's own
judgement: no telemetry heard for ``los_s`` suspends every transaction (timers stop) until the
next packet, as the agent does on its side.

Requests, as the operator sees them (:class:`FileRecord`), one id each:

- ``put``: a local file copied into ``uplink/`` and queued to the agent's ``staging/``,
  ``incoming/``, ``data/`` or ``sequences/`` (``sequences/NAME.toml``, NAME as SEQUENCE_START
  names it, at most 64 KiB: refused here before anything goes; the agent checks its steps as it
  arrives and says so, SEQUENCE_STORED): id ``out-N``, the entity's transfer; one the agent refuses
  fails with its reason (its FILE_FAILED for the agent's transfer ``in-1-SEQ``, ``agent_transfer``);
- ``get``: FILE_DOWNLINK asks the agent to send one of its files (id ``get-N``); the command's
  outcome (the agent queued it, or why not) and then the incoming transfer whose source is
  that name carry the request on to its end (or the agent's FILE_FAILED naming its transfer,
  should that end on board before any of it comes);
- anything else the agent sends (its automatic downlink of products, another console's
  FILE_DOWNLINK) is a record of its own, id ``in-2-SEQ``.

Names are checked here before anything is sent (:func:`flight.files.filestore.check_name`):
relative, plain components, no ``..``, nothing hidden, under the top directories the agent
takes or sends from (:data:`UPLINK_TOPS`, :data:`DOWNLINK_TOPS`, which mirror
``flight/agent/files.py``; a test holds them equal). The agent checks them again.

Threads: the entity is not thread-safe; its owner (the thread that polls the client and calls
:meth:`GroundFiles.service`: a spacecraft's link thread in the ground server) does all the
work. Other threads hand work over with :meth:`GroundFiles.call` (run at the next
:meth:`service`, a Future for the answer) and read :meth:`GroundFiles.snapshot`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import os
import queue
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from flight.agent.schedule import SEQUENCES_DIR, check_sequence_upload
from flight.files.entity import FILE_BACKLOG_S, EntityConfig, FileEntity, FileError, Transfer
from flight.files.filestore import MAX_DEPTH, MAX_NAME_LEN, PART_CHARS, PARTIAL_DIR, NameRefused, check_file_name, \
    check_name, resolve
from flight.link.messages import Codec, EventRecord
from flight.storage import CorruptFile, fsync_path, install_file, read_checked_json, write_checked_json
from ground.client import GroundClient
from ground.receipts import PRODUCTS_DIR, is_product_name, product_verdict

GROUND_ENTITY_ID = 1
AGENT_ENTITY_ID = 2
# Where the agent takes files from the ground, and sends from (flight/agent/files.py).
UPLINK_TOPS = frozenset({"staging", "incoming", "data", SEQUENCES_DIR})
DOWNLINK_TOPS = frozenset({"products", "checkpoints", "logs", "staging", "incoming", "data", SEQUENCES_DIR})
# A file the agent sends lands in downlink/<its name>: one level fewer than a name may have (the agent's
# MAX_NAME_DEPTH, flight/agent/files.py; a test holds them equal).
DOWNLINK_DEPTH = MAX_DEPTH - 1
UPLINK_DIR = "uplink"
DOWNLINK_DIR = "downlink"
DEFAULT_RATE_BPS = 100_000.0   # a bench figure; a real station's uplink is set in [files] rate_bps
DEFAULT_LOS_S = 30.0           # as the agent's file_los_s: housekeeping comes every second or so
BURST_S = 0.5                  # the token bucket holds this much of rate_bps (as the agent's)
PROGRESS_PERIOD_S = 0.5        # how often progress of active transfers is handed on (on_change)
EXPIRE_PERIOD_S = 5.0          # how often transfers interrupted by a ground restart are looked at
KEEP_SETTLED = 200             # settled records kept in memory (the archive keeps them all)
STATE_FILE = ".ground-files.json"
STATE_SCHEMA = 1
SETTLED = frozenset({"done", "failed", "cancelled"})
ASIDE_MAX = 1_000_000          # earlier files of one name kept beside it (aside_name's +2 ... +999999)
AGENT_SAYS = "; the agent says: "  # before the agent's reason on a put that failed (its FILE_FAILED)
RECEIVER_SAYS = "the receiver says "  # the Finished PDU's condition, a put the agent refused (flight/files/entity.py)
AGENT_REASON_WAIT_S = 3.0      # how long a client waits for the agent's reason on such a put before it shows it
# One upload to the ground server (its PUT body); the agent's disk reserve decides what it takes. Here, not in
# ground/server.py (aiohttp), so the CLI refuses a larger file before sending it (found in audit: it sent until the
# server cut it off, then said "cannot reach the ground server: Broken pipe").
MAX_UPLOAD_BYTES = 4 << 30


def reason_to_come(record: dict[str, Any]) -> bool:
    """A put the receiver refused whose record does not carry the agent's reason yet: its FILE_FAILED may come just
    after the Finished PDU, so a client that shows the outcome waits for it a moment (AGENT_REASON_WAIT_S)."""
    reason = str(record.get("reason") or "")
    return record.get("direction") == "up" and record.get("state") == "failed" and reason.startswith(RECEIVER_SAYS) \
        and AGENT_SAYS not in reason
KEEP_AGENT_ENDS = 256           # the agent's transfers heard ending (FILE_FAILED, FILE_SENT) kept for the gets
TRANSFERS_LOST = "file transfers"  # STATE_CORRUPT's ``what`` where the agent lost its transfers (flight/agent/files.py)


@dataclass(frozen=True)
class CommandOutcome:
    """What became of a command sent for a request (FILE_DOWNLINK, FILE_CANCEL) so far."""

    final: bool
    ok: bool
    result: dict[str, Any]
    text: str  # 'completed', the failure, or the stage reached


# send_command(name, args, who) -> a poller of its outcome (None: nothing known yet)
SendCommand = Callable[[str, dict[str, Any], str], Callable[[], CommandOutcome | None]]


@dataclass
class FileRecord:
    """One file transfer as the operators see it; ``state``: requested (a get whose
    FILE_DOWNLINK the agent has not yet answered), queued, active, done, failed, cancelled."""

    id: str                         # out-N (put), get-N (get), in-SRC-SEQ (sent by the agent unasked)
    direction: str                  # "up" | "down"
    remote: str                     # the agent's name for the file
    local: str = ""                 # the ground's: its place in the area (downlink/...), or what was put
    size: int | None = None
    progress: int = 0
    state: str = "queued"
    reason: str = ""
    who: str = ""
    sha256: str | None = None
    cfdp_class: int = 2
    priority: int = 5
    requested_s: float = 0.0        # Unix s (the ground's clock), as every time here
    started_s: float | None = None
    finished_s: float | None = None
    restarts: int = 0
    transfer: str | None = None     # the ground entity's transfer id
    agent_transfer: str | None = None  # the agent's transfer id (a get: FILE_DOWNLINK's result)
    rev: int = 0                    # one more at each change: a reader keeps the highest it has seen
    product: dict[str, Any] | None = None  # a product come down: {"vouched", "verdict"} (ground/receipts.py)
    stamp: list[int] | None = None  # a file come down: its (inode, size, mtime ns) as put in place (path_of)

    @property
    def settled(self) -> bool:
        return self.state in SETTLED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FileRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})


@dataclass
class _Pending:
    """A request's command on its way (not kept across a restart: its poller is this process's)."""

    poll: Callable[[], CommandOutcome | None]
    what: str  # "downlink" | "cancel"


class FileGone(FileError):
    """A file that came down is no longer on the ground as it came (changed or replaced in the file area
    other than by a transfer: a transfer of its name keeps it, :func:`aside_name`)."""


def aside_name(name: str, n: int) -> str:
    """``name`` with ``+n`` before its last suffix (``downlink/logs/agent.log``, 2: ``downlink/logs/agent+2.log``),
    the stem cut where the result would pass a name's limits: where the ground keeps a file that came down
    when a later one of its name with other bytes takes its place. Why keep it: the board names its products
    again once the first of a name is cleaned up after its downlink (flight/compute/worker.py ``_free_name``),
    and the ground's copy was then the only one left (found in audit)."""
    head, _, last = name.rpartition("/")
    stem, suffix = os.path.splitext(last)
    tag = f"+{n}"
    if not stem or len(suffix) > PART_CHARS // 2:
        stem, suffix = last, ""
    over = max(len(stem) + len(tag) + len(suffix) - PART_CHARS, len(name) + len(tag) - MAX_NAME_LEN, 0)
    part = stem[:max(1, len(stem) - over)] + tag + suffix
    return f"{head}/{part}" if head else part


def check_remote(name: Any, direction: str, size_bytes: int | None = None) -> str:
    """The agent's file name for a put ("up", of ``size_bytes`` where known) or a get ("down"), or FileError saying
    why not. A put to sequences/ keeps to the agent's rule for it (its name and size: refused here, not after the
    upload)."""
    tops = UPLINK_TOPS if direction == "up" else DOWNLINK_TOPS
    try:
        checked = check_file_name(name, tops, "name")
        if direction == "up" and checked.partition("/")[0] == SEQUENCES_DIR:
            check_sequence_upload(checked, size_bytes, "name")
    except NameRefused as exc:
        raise FileError(str(exc)) from None
    depth = checked.count("/") + 1
    if direction == "down" and depth > DOWNLINK_DEPTH:  # found in audit: sent, then refused by the agent
        raise FileError(f"name: {checked!r} is {depth} levels deep, at most {DOWNLINK_DEPTH} for a get "
                        "(the ground files it under downlink/)")
    return checked


def client_sender(client: GroundClient) -> SendCommand:
    """Commands straight onto a client's link (``--direct``, tests): submitted, retried by
    :meth:`GroundClient.retry_due`, forgotten once final."""

    def send(name: str, args: dict[str, Any], who: str) -> Callable[[], CommandOutcome | None]:
        result = client.submit(name, args)

        def poll() -> CommandOutcome | None:
            client.retry_due()
            if result.final:
                client.forget(result.cmd_id)
            return CommandOutcome(result.final, result.completed, dict(result.result), result.outcome)

        return poll

    return send


class GroundFiles:
    """The ground's CFDP entity for one spacecraft, on ``client``'s link; see the module's text."""

    def __init__(self, client: GroundClient, area: Path | str, *, rate_bps: float = DEFAULT_RATE_BPS,
                 los_s: float = DEFAULT_LOS_S, local_id: int = GROUND_ENTITY_ID, peer_id: int = AGENT_ENTITY_ID,
                 config: EntityConfig | None = None, clock_s: Callable[[], float] = time.monotonic,
                 send_command: SendCommand | None = None,
                 on_change: Callable[[dict[str, Any]], None] | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 on_aside: Callable[[str, str, str], None] | None = None):
        """``area``: the file area (made if missing). ``clock_s``: monotonic seconds (the
        entity's timers and the rate). ``send_command``: how a request's command reaches the
        agent (default: :func:`client_sender`; the server's goes through its queue).
        ``on_change``: every change of a record, progress included (pushed to pages);
        ``on_record``: every change of a record's state (archived). Both get the record as JSON.
        ``on_aside``: a file that came down moved in the area, ``(its name, its new name, its SHA-256)``
        (kept aside for a later file of its name, or put back): the archive's records of it follow it,
        those no longer in memory too (found in audit: past :data:`KEEP_SETTLED` they named the new file)."""
        if not rate_bps > 0 or not los_s > 0:
            raise ValueError(f"rate_bps {rate_bps!r} and los_s {los_s!r} must be above 0")
        self.client = client
        self.area = Path(area)
        self.rate_bps = float(rate_bps)
        self.los_s = float(los_s)
        self._clock_s = clock_s
        self._send_command = send_command or client_sender(client)
        self._on_change = on_change or (lambda record: None)
        self._on_record = on_record or (lambda record: None)
        self._on_aside = on_aside or (lambda name, aside, sha256: None)
        for sub in (UPLINK_DIR, DOWNLINK_DIR):
            (self.area / sub).mkdir(parents=True, exist_ok=True)
        self._codec = Codec(client.dictionary)
        self.records: OrderedDict[str, FileRecord] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._gets = itertools.count(1)
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the views other threads read
        self._view: list[dict[str, Any]] = []
        self._status: dict[str, Any] = {}
        self._dirty = True
        self._heard_s: float | None = None
        self._tokens = 0.0
        self._tokens_at = clock_s()
        self._next_progress_s = 0.0
        self._next_expire_s = 0.0
        self._shown: dict[str, int] = {}  # record id -> progress last handed on
        # The agent's transfer id -> (event, name, reason, heard) of its FILE_FAILED or FILE_SENT, the newest
        # KEEP_AGENT_ENDS: a get whose transfer ends on board with nothing of it come here is settled by it.
        # ``heard``: the count of ends heard so far (_ends_heard) as it came; a get matches only an end heard
        # after it was asked for (_asked_at, by record id; none: any), as the board numbers its transfers from
        # out-1 again once its transfer state is lost (:meth:`_end_of`).
        self._agent_ends: OrderedDict[str, tuple[str, str, str, int]] = OrderedDict()
        self._ends_heard = 0
        self._asked_at: dict[str, int] = {}
        # The agent's STATE_CORRUPT for its transfers, (_ends_heard, reason): every get it had queued went with them;
        # those whose transfer id came before (_queued_at, by record id; none: any) are settled by it.
        self._transfers_lost: tuple[int, str, float | None] | None = None  # (..., its time where played back)
        self._queued_at: dict[str, int] = {}
        self._ends_to_match = False  # an end heard, or a get's transfer id learnt, since the last match
        self.tc_refused = 0   # PDUs the link's queue refused (CFDP sends them again)
        self.pdus_up = 0
        self.pdus_down = 0
        self.load_error: str | None = None
        self._load()
        self.entity = FileEntity(local_id, peer_id, self.area, clock_s, read_tops=frozenset({UPLINK_DIR}),
                                 write_tops=frozenset({DOWNLINK_DIR}), state_path=self.area / ".transfers.json",
                                 config=config, on_change=self._entity_changed, before_install=self._set_aside)
        # Its puts numbered past every out-N the records hold: with its state lost (damaged, missing) it numbers
        # from out-1 again, and the next put took over the record of that id, settled long since, the archive's
        # row too (found in audit: another operator's file, its SHA-256 and size, under the first one's put).
        taken = [int(r.id[4:]) for r in self.records.values() if r.id.startswith("out-") and r.id[4:].isdigit()]
        self.entity.number_sends_past(max(taken, default=0))
        self._reconcile()
        client.file_sink = self._pdu_in
        client.listeners.append(self._heard)
        self._publish_views()

    # --- requests (the owner's thread) ----------------------------------------------------------

    def put(self, local_path: Path | str, remote_name: str, cfdp_class: int = 2, priority: int = 5,
            who: str = "") -> FileRecord:
        """Copy ``local_path`` into the area's uplink/ and queue it for the agent as
        ``remote_name`` (under staging/, incoming/, data/ or sequences/). FileError naming the field."""
        remote = check_remote(remote_name, "up")
        source = Path(local_path)
        if not source.is_file():
            raise FileError(f"local file: {str(source)!r} is not a readable file")
        check_remote(remote, "up", source.stat().st_size)  # before it is copied
        staged, tmp = self.upload_path(remote)
        digest = hashlib.sha256()  # as it is copied: the entity need not read it whole again when it starts
        try:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
            install_file(tmp, self.area / staged)  # synced before its transfer is saved: a power cut keeps both
        except OSError as exc:
            _unlink(tmp)
            raise FileError(f"local file: {source}: {exc.strerror or exc}") from None
        return self.queue_put(staged, remote, cfdp_class, priority, who, local=str(source),
                              sha256=digest.hexdigest())

    def upload_path(self, remote_name: str) -> tuple[str, Path]:
        """A new place in uplink/ for a file that will go as ``remote_name``: (its name in the
        area, a temporary path to write it to first). Any thread (names are random)."""
        remote = check_remote(remote_name, "up")
        base = remote.rsplit("/", 1)[-1]
        staged = f"{UPLINK_DIR}/{secrets.token_hex(4)}-{base}"[:len(UPLINK_DIR) + 1 + 128]
        return staged, self.area / UPLINK_DIR / f".{staged.rsplit('/', 1)[-1]}.tmp"

    def queue_put(self, staged: str, remote_name: str, cfdp_class: int = 2, priority: int = 5, who: str = "",
                  local: str = "", sha256: str | None = None) -> FileRecord:
        """Queue a file already in uplink/ (:meth:`upload_path`) for the agent; ``sha256``, its digest taken
        as it was written, spares the link thread reading it whole when its transfer starts."""
        try:
            size: int | None = (self.area / staged).stat().st_size
        except OSError:
            size = None  # the entity says what is wrong with it
        try:
            remote = check_remote(remote_name, "up", size)  # a sequence over its limit: not left in uplink/ either
        except FileError:
            _unlink(self.area / staged)
            raise
        try:
            t = self.entity.put(staged, remote, int(cfdp_class), int(priority), {"who": who, "local": local},
                                sha256=sha256)
        except FileError:
            _unlink(self.area / staged)
            raise
        return self.records[t.meta["record"]]

    def get(self, remote_name: str, cfdp_class: int = 2, priority: int = 5, who: str = "") -> FileRecord:
        """Ask the agent to send ``remote_name`` (FILE_DOWNLINK); the file lands in
        ``downlink/<remote_name>``. FileError naming the field; the command's refusal
        (dictionary) as ArgumentError."""
        remote = check_remote(remote_name, "down")
        asked = self._ends_heard  # what the agent says of its transfers from now on may be this one's end
        if cfdp_class not in (1, 2):
            raise FileError(f"class: {cfdp_class!r} must be 1 (unacknowledged) or 2 (acknowledged)")
        if not 0 <= int(priority) <= 255:
            raise FileError(f"priority: {priority!r} must be in 0..255 (0 first)")
        poll = self._send_command("FILE_DOWNLINK", {"name": remote, "cfdp_class": int(cfdp_class),
                                                    "priority": int(priority)}, who)
        record = FileRecord(id=self._next_get_id(), direction="down", remote=remote, local=f"{DOWNLINK_DIR}/{remote}",
                            state="requested", reason="FILE_DOWNLINK sent", who=who, cfdp_class=int(cfdp_class),
                            priority=int(priority), requested_s=time.time())
        self._pending[record.id] = _Pending(poll, "downlink")
        self._asked_at[record.id] = asked
        self._store(record, state_changed=True)
        return record

    def cancel(self, record_id: str, who: str = "", reason: str = "") -> FileRecord:
        """Stop a transfer (the agent is told: by the protocol for one in progress, by
        FILE_CANCEL for a get it has only queued). FileError if there is none to stop."""
        record = self.records.get(record_id)
        if record is None or record.settled:
            raise FileError(f"transfer: no transfer {record_id!r} in progress"
                            + (f" ({record.state})" if record is not None else ""))
        why = reason or (f"cancelled by {who}" if who else "cancelled by the operator")
        if record.transfer is not None and record.transfer in self.entity.transfers:
            self.entity.cancel(record.transfer, why)  # the callback settles the record
            return self.records[record_id]
        # A get not started here: the agent may have queued it (FILE_CANCEL takes it out); one
        # it has not answered yet is forgotten (should it come all the same, it is a record of its own).
        cancel = None if record.agent_transfer is None else _Pending(  # first: a full queue refuses it, nothing lost
            self._send_command("FILE_CANCEL", {"transfer": record.agent_transfer}, who), "cancel")
        self._pending.pop(record.id, None)
        if cancel is not None:
            self._pending[record.id] = cancel
        record.state, record.reason, record.finished_s = "cancelled", why, time.time()
        self._store(record, state_changed=True)
        return record

    def find(self, record_id: str) -> FileRecord | None:
        return self.records.get(record_id)

    def path_of(self, record: FileRecord) -> Path:
        """Where a file that came down is, confined to the area's downlink/ (FileError if not there)."""
        if record.direction != "down" or record.state != "done":
            raise FileError(f"transfer {record.id}: no file here ({record.direction}, {record.state})")
        try:
            path = resolve(self.area, record.local, frozenset({DOWNLINK_DIR}), "local")
        except NameRefused as exc:
            raise FileError(str(exc)) from None
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or not path.is_file():
            raise FileError(f"transfer {record.id}: {record.local} is no longer in the file area")
        if not _holds(record, path, st):
            raise FileGone(f"transfer {record.id}: {record.local} no longer holds the file this transfer brought down "
                           "(changed in the file area since; get the file again)")
        return path

    # --- other threads --------------------------------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` in the owner's thread at its next :meth:`service`; its result or exception
        comes back through the Future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, future))
        return future

    def snapshot(self) -> list[dict[str, Any]]:
        """Every record (in progress and queued first, then the newest settled), as JSON; any thread."""
        with self._lock:
            return [dict(r) for r in self._view]

    def status(self) -> dict[str, Any]:
        """Counters and contact as of the last :meth:`service`; any thread."""
        with self._lock:
            return dict(self._status)

    # --- the owner's loop -----------------------------------------------------------------------

    def service(self) -> None:
        """Run the hand-overs, judge contact, follow the requests' commands, send what the
        budget allows, and hand on progress. Call it every loop turn, after polling the client."""
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                try:
                    result = fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    future.set_exception(exc)
                else:
                    if self._dirty:  # what the caller reads next shows what it just did
                        self._publish_views()
                    future.set_result(result)
        now = self._clock_s()
        self._contact(now)
        self._follow_commands()
        self._match_agent_ends()
        self._pump(now)
        if now >= self._next_expire_s:
            self._next_expire_s = now + EXPIRE_PERIOD_S
            self.entity.expire_resumable()
        if now >= self._next_progress_s:
            self._next_progress_s = now + PROGRESS_PERIOD_S
            self._progress()
            self._dirty = True  # the status's ages move on
        if self._dirty:
            self._publish_views()

    def pending(self) -> bool:
        """A transfer or a request in progress."""
        return self.entity.pending() or any(not r.settled for r in self.records.values())

    def close(self) -> None:
        self._save()
        if self.client.file_sink == self._pdu_in:
            self.client.file_sink = None
        if self._heard in self.client.listeners:
            self.client.listeners.remove(self._heard)

    # --- PDUs and contact -----------------------------------------------------------------------

    def _heard(self, item: Any) -> None:
        self._heard_s = self._clock_s()
        record = getattr(item, "record", None)
        if isinstance(record, EventRecord) and record.event.name == "STATE_CORRUPT" \
                and record.args.get("what") == TRANSFERS_LOST:
            self._ends_heard += 1
            # played back (the ground away as the agent started): the gets asked for after it are the new agent's
            self._transfers_lost = (self._ends_heard, str(record.args.get("reason", "")),
                                    record.time_s if getattr(item, "played_back", False) else None)
            self._ends_to_match = True
        if isinstance(record, EventRecord) and record.event.name in ("FILE_FAILED", "FILE_SENT"):
            transfer = record.args.get("transfer")
            if isinstance(transfer, str) and transfer != "-":
                self._ends_heard += 1
                self._agent_ends[transfer] = (record.event.name, str(record.args.get("name", "")),
                                              str(record.args.get("reason", "")), self._ends_heard)
                self._agent_ends.move_to_end(transfer)
                self._ends_to_match = True
                while len(self._agent_ends) > KEEP_AGENT_ENDS:
                    self._agent_ends.popitem(last=False)

    def _pdu_in(self, pdu: bytes) -> None:
        self._heard_s = self._clock_s()
        self.pdus_down += 1
        if self.entity.suspended:
            self.entity.set_contact(True)
        self.entity.receive(pdu)

    def _contact(self, now: float) -> None:
        heard = self._heard_s is not None and now - self._heard_s <= self.los_s
        if heard == self.entity.suspended:
            self.entity.set_contact(heard)

    def _pump(self, now: float) -> None:
        if self.entity.suspended:
            self._tokens_at = now
            return
        self._tokens = min(self.rate_bps * BURST_S + 2048, self._tokens + self.rate_bps * max(0.0, now - self._tokens_at))
        self._tokens_at = now
        # As the agent sends: never more than FILE_BACKLOG_S of a serial line queued ahead of the commands (found in
        # audit: at rate_bps 100 kB/s a 115200-baud line held 92 s of file data before the next command)
        link = self.client.link
        line = link.line_rate_bps()
        room = self._tokens if line is None else min(self._tokens, FILE_BACKLOG_S * line - link.backlog_bytes())
        for pdu in self.entity.pull(int(room) if room > 0 else 0):
            packet = self._codec.encode_file_pdu_tc(pdu)
            self._tokens -= len(packet)
            if self.client.link.send(packet):
                self.pdus_up += 1
            else:
                self.tc_refused += 1  # lost like a PDU on the air: CFDP asks for it again

    # --- records --------------------------------------------------------------------------------

    def _next_get_id(self) -> str:
        while True:
            rid = f"get-{next(self._gets)}"
            if rid not in self.records:
                return rid

    def _set_aside(self, name: str, sha256: str) -> Callable[[], None] | None:
        """The entity's ``before_install``: a file that came down, ``sha256``, is about to be put at ``name``. What
        ``name`` holds, if other bytes, is kept at the first free :func:`aside_name` (a hard link: the old bytes
        stay reachable at every moment, a power cut included) and the records whose file it is follow it; returns
        how to undo that, should the new file not be put in place after all (no copy left behind). OSError (no
        free name, the link refused): the new file is refused, and the sender told."""
        path = resolve(self.area, name, frozenset({DOWNLINK_DIR}), "destination")
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        if not path.is_file() or path.is_symlink():
            return None  # nothing kept there
        kept_sha256 = sha256_file(path)
        if kept_sha256 == sha256:
            return None  # the same bytes again
        # From past the highest kept already (one look at the directory, not a try a number: found in review)
        taken = [int(m.group(1)) for entry in os.listdir(path.parent)
                 if (m := re.fullmatch(r".*\+([0-9]{1,9})" + re.escape(os.path.splitext(path.name)[1]), entry))
                 and aside_name(name, int(m.group(1))).rsplit("/", 1)[-1] == entry]
        for n in range(max(taken, default=1) + 1, ASIDE_MAX):
            aside = aside_name(name, n)
            try:
                check_name(aside, frozenset({DOWNLINK_DIR}), "destination")
                os.link(path, self.area / aside)  # fails where the name is taken: never one kept before
            except FileExistsError:
                continue
            except NameRefused as exc:
                raise OSError(f"{name}: cannot keep the file there beside it ({exc})") from None
            break
        else:
            raise OSError(f"{name}: {ASIDE_MAX - 2} earlier files of that name are kept already")
        fsync_path(path.parent)
        self._on_aside(name, aside, kept_sha256)  # its records the server no longer holds (past KEEP_SETTLED)
        moved = [r for r in self.records.values() if r.direction == "down" and r.state == "done" and r.local == name
                 and _holds(r, path, st)]
        for record in moved:
            record.local = aside  # same inode, size and mtime: its stamp holds
            self._store(record, state_changed=True, keep_place=True)

        def undo() -> None:
            try:
                still = path.stat().st_ino == st.st_ino
            except OSError:
                still = False
            if not still:  # the new file went in after all (an fsync after the rename failed): the aside stays
                return  # the earlier file's only copy (found in review)
            for record in moved:
                record.local = name
                self._store(record, state_changed=True, keep_place=True)
            self._on_aside(aside, name, kept_sha256)
            _unlink(self.area / aside)

        return undo

    def _entity_changed(self, what: str, t: Transfer | None) -> None:
        if t is not None:
            self._sync(t, what)

    def _record_for(self, t: Transfer) -> FileRecord | None:
        """The record a transfer belongs to: its own, or for one coming in, the oldest get
        waiting for that name (which then follows it)."""
        rid = t.meta.get("record") if isinstance(t.meta.get("record"), str) else None
        if rid is None:
            rid = t.id if t.id in self.records else None
        if rid is None and t.direction == "in" and t.source:
            rid = next((r.id for r in self.records.values() if r.direction == "down" and r.transfer is None
                        and r.state in ("requested", "queued") and r.remote == t.source
                        and self._end_of(r) is None), None)  # not one ended on board
        if rid is not None:
            t.meta["record"] = rid
        return self.records.get(rid) if rid is not None else None

    def _sync(self, t: Transfer, what: str) -> FileRecord:
        """A transfer's news onto its record (made for one the agent sent unasked)."""
        record = self._record_for(t)
        before = record.state if record is not None else None
        if record is None:
            if t.direction == "out":
                record = FileRecord(id=t.id, direction="up", remote=t.dest, local=str(t.meta.get("local", "")),
                                    who=str(t.meta.get("who", "")), requested_s=t.created_s)
            else:
                record = FileRecord(id=t.id, direction="down", remote=t.source, who="",
                                    reason="sent by the agent unasked", requested_s=t.created_s)
            t.meta["record"] = record.id
        record.transfer = t.id
        if t.direction == "out" and t.transaction:  # the agent's name for it, which its FILE_* events carry
            record.agent_transfer = f"in-{t.transaction}"
        record.size, record.progress = t.size, int(t.progress)
        record.cfdp_class, record.restarts = t.cls, t.restarts
        record.started_s = record.started_s or t.started_s
        if t.direction == "out":
            record.priority = t.priority
            record.sha256 = t.sha256 or record.sha256
        else:
            record.remote = t.source or record.remote
            record.local = t.dest or record.local
            if t.sha256:
                record.sha256 = t.sha256
        record.state = t.state
        if t.reason or what in ("restarted", "failed", "cancelled", "done"):
            record.reason = t.reason
        elif what in ("started", "resumed"):
            record.reason = what
        if record.direction == "down" and record.state == "done" and before != "done":
            try:  # what path_of serves as this record's file while it is still the one put in place
                st = (self.area / record.local).stat()
                record.stamp = [st.st_ino, st.st_size, st.st_mtime_ns]
            except OSError:
                record.stamp = None
            self._judge(record)
        if t.settled:
            record.finished_s = t.finished_s
            record.progress = int(t.progress if t.state != "done" else (t.size or t.progress))
            if t.direction == "out":
                _unlink(self.area / t.source)  # the copy in uplink/ has served
                if t.state == "failed" and not self._told_why(record):  # its FILE_FAILED, heard first or later
                    self._ends_to_match = True
        self._store(record, state_changed=record.state != before or what in ("restarted", "resumed"))
        return record

    def _judge(self, record: FileRecord) -> None:
        """A file come down from the agent's products/ (or a training checkpoint from its checkpoints/) is read
        as a product at once (ground/receipts.py):
        its verdict is the record's ``product`` and its reason, so the file list, the web console and the
        archive (the reason is its outcome) say whether the board vouches for it, without the operator
        fetching it. It runs in the link's thread: ground/receipts.py bounds what it reads (a product's
        size, its arrays, a summary's size). A trained model that comes down has its training summary
        (the same name, ``.json``) read again, the newest transfer of it the server still holds (the last
        :data:`KEEP_SETTLED`; an older one's stays as it was read, and ``product show`` reads the file):
        found without its model, it said to fetch it; with another model beside it, it says so."""
        if is_product_name(record.remote):
            record.product = self._verdict(record)
            record.reason = record.product["verdict"]
        if not (record.remote.startswith(PRODUCTS_DIR) and record.remote.endswith(".onnx")):
            return
        summary = Path(record.local).with_suffix(".json")
        other = next((r for r in reversed(self.records.values()) if r.direction == "down" and r.state == "done"
                      and r.product is not None and Path(r.local) == summary), None)
        if other is not None:
            other.product = self._verdict(other)
            other.reason = other.product["verdict"]
            self._store(other, state_changed=True)

    def _verdict(self, record: FileRecord) -> dict[str, Any]:
        try:
            path = self.path_of(record)
        except FileError:
            return {"vouched": False, "verdict": f"NOT VOUCHED: {record.remote} is no longer on the ground"}
        return product_verdict(path, record.remote)

    def _store(self, record: FileRecord, state_changed: bool, keep_place: bool = False) -> None:
        """``keep_place``: a record changed by something else than its transfer (its file kept aside) keeps its
        place among the records (the newest last)."""
        record.rev += 1
        self.records[record.id] = record
        if not keep_place:
            self.records.move_to_end(record.id)
        settled = [rid for rid, r in self.records.items() if r.settled]
        for rid in settled[:max(0, len(settled) - KEEP_SETTLED)]:
            del self.records[rid]
            self._shown.pop(rid, None)
        self._dirty = True
        body = record.to_json()
        if record.settled:
            self._shown.pop(record.id, None)  # no more progress to hand on
            self._asked_at.pop(record.id, None)  # no end of the agent's to match any more
            self._queued_at.pop(record.id, None)
        else:
            self._shown[record.id] = record.progress
        if state_changed:
            self._save()
            self._on_record(body)
        self._on_change(body)

    def _follow_commands(self) -> None:
        for rid, pending in list(self._pending.items()):
            record = self.records.get(rid)
            try:
                outcome = pending.poll()
            except Exception as exc:  # noqa: BLE001 - a queue entry gone: the request says so
                outcome = CommandOutcome(True, False, {}, f"{type(exc).__name__}: {exc}")
            if record is None:  # left memory (past KEEP_SETTLED): followed to its end, then dropped (an audit)
                if outcome is not None and outcome.final:
                    del self._pending[rid]
                continue
            if outcome is None:
                continue
            if pending.what == "cancel":
                if outcome.final:
                    del self._pending[rid]
                    if not outcome.ok:
                        record.reason += f"; FILE_CANCEL: {outcome.text}"
                        self._store(record, state_changed=True)
                continue
            if not outcome.final:
                text = f"FILE_DOWNLINK {outcome.text}"
                if record.reason != text and record.state == "requested":
                    record.reason = text
                    self._store(record, state_changed=False)
                continue
            del self._pending[rid]
            if outcome.ok and outcome.result.get("transfer"):
                record.agent_transfer = str(outcome.result["transfer"])
                self._queued_at[rid] = self._ends_heard
                self._ends_to_match = True
            if record.settled or record.transfer is not None:  # the file came before the answer (a fast link)
                if record.agent_transfer is not None:
                    self._store(record, state_changed=True)
                continue
            if outcome.ok:
                record.state = "queued"
                size = outcome.result.get("bytes")
                record.size = size if isinstance(size, int) else record.size
                record.reason = f"queued on board as {record.agent_transfer}"
            else:
                record.state, record.finished_s = "failed", time.time()
                record.reason = f"FILE_DOWNLINK {outcome.text}"
            self._store(record, state_changed=True)

    def _told_why(self, record: FileRecord) -> bool:
        """A put that failed, with the agent's reason added where its FILE_FAILED for that transfer was heard (not
        stored: the caller does); False where it was not, or the reason is there already."""
        end = self._end_of(record)
        if end is None or end[0] != "FILE_FAILED" or end[1] != record.remote or AGENT_SAYS in record.reason:
            return False
        why = f"{AGENT_SAYS}{end[2]}"[:300]  # the ground's part is cut, never the marker (it would be added again)
        record.reason = record.reason[:400 - len(why)] + why
        return True

    def _end_of(self, record: FileRecord) -> tuple[str, str, str, int] | None:
        """The agent's end heard for ``record``'s transfer on board, where one was heard after the record was asked
        for. The board numbers its transfers from out-1 again once its transfer state is lost: an end of that id
        heard before is another transfer's (found in audit: a get queued on board as an earlier get's number failed
        at once, "ended (delivered) with none of it come here", and its file came as a record of its own).
        Ordered by when the ground heard them, not by the board's clock (a board clock behind the ground's would
        settle nothing): an old end played back after the new get was asked, or an answer read in the same batch as
        the agent's loss of its transfers, is not told apart (a review; left to the operator's ``file cancel``)."""
        end = self._agent_ends.get(record.agent_transfer or "")
        if end is None or end[3] <= self._asked_at.get(record.id, 0):
            return None
        return end

    def _match_agent_ends(self) -> None:
        """The agent's word on transfers that ended on board (its FILE_FAILED, FILE_SENT), matched to their records
        by its transfer id: a put that failed gets the agent's reason (found in use: a sequence the agent refused
        said only "the receiver says FILESTORE_REJECTION" on the ground, the step and key in an event alone), and
        a get queued on board whose transfer there ended before any of it came is settled failed with it (found
        in audit: one whose source went, or that another console cancelled, stayed queued for ever); so is one
        queued there when the agent said it lost its transfers (its STATE_CORRUPT at a start: found in audit, such
        a get stayed queued for ever, the board's queue starting empty and numbering from out-1 again)."""
        if not self._ends_to_match:  # the records are walked only when something new may match: not each turn
            return
        self._ends_to_match = False
        for record in [r for r in self.records.values() if r.direction == "up" and r.state == "failed"]:
            if self._told_why(record):
                self._store(record, state_changed=True, keep_place=True)
        lost = self._transfers_lost
        for record in [r for r in self.records.values() if not r.settled]:
            if lost is not None and record.direction == "down" and record.transfer is None \
                    and record.agent_transfer is not None and self._queued_at.get(record.id, 0) < lost[0] \
                    and (lost[2] is None or record.requested_s < lost[2]):
                record.state, record.finished_s = "failed", time.time()
                record.reason = (f"the agent lost its file transfers at a restart, its {record.agent_transfer} with "
                                 f"them ({lost[1]}); ask again")[:400]
                self._store(record, state_changed=True)
                continue
            end = self._end_of(record)
            if record.direction != "down" or record.transfer is not None or end is None or end[1] != record.remote:
                continue
            del self._agent_ends[record.agent_transfer or ""]
            event, _name, reason, _heard = end
            record.state, record.finished_s = "failed", time.time()
            record.reason = (f"the agent's {record.agent_transfer} failed: {reason}" if event == "FILE_FAILED" else
                             f"the agent's {record.agent_transfer} ended ({reason}) with none of it come here; "
                             "ask again")[:400]
            self._store(record, state_changed=True)

    def _progress(self) -> None:
        """Progress of what is moving, to ``on_change`` (twice a second at most)."""
        for t in self.entity.list():
            if t.settled:
                break
            if t.direction == "in" and not t.source:
                continue  # its metadata has not come: nothing to show yet
            record = self._record_for(t)
            if record is None:
                continue
            if int(t.progress) != self._shown.get(record.id) or (t.size or None) != record.size:
                record.progress, record.size = int(t.progress), t.size
                self._store(record, state_changed=False)

    def _publish_views(self) -> None:
        live = [r for r in self.records.values() if not r.settled]
        done = [r for r in reversed(self.records.values()) if r.settled]
        counts = self.entity.counts()
        with self._lock:
            self._view = [r.to_json() for r in (*live, *done)]
            self._status = {"suspended": self.entity.suspended, "rate_bps": self.rate_bps, "los_s": self.los_s,
                            "heard_age_s": None if self._heard_s is None else self._clock_s() - self._heard_s,
                            "pdus_up": self.pdus_up, "pdus_down": self.pdus_down, "tc_refused": self.tc_refused,
                            "last_error": self.entity.last_error, "area": str(self.area),
                            "load_error": self.load_error or self.entity.load_error, **counts}
        self._dirty = False

    # --- persistence ----------------------------------------------------------------------------

    def _save(self) -> None:
        body = {"schema": STATE_SCHEMA, "records": [r.to_json() for r in self.records.values()]}
        try:
            write_checked_json(self.area / STATE_FILE, body)
        except OSError as exc:
            self.load_error = f"{STATE_FILE} not written: {exc}"

    def _load(self) -> None:
        path = self.area / STATE_FILE
        if not path.exists():
            return
        try:
            body = read_checked_json(path)
            if body.get("schema") != STATE_SCHEMA:
                raise CorruptFile(f"schema {body.get('schema')!r}, expected {STATE_SCHEMA}")
            records = [FileRecord.from_json(r) for r in body["records"]]
        except (CorruptFile, OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.load_error = f"{STATE_FILE}: {exc}; the list starts empty (the archive has the history)"
            return
        for r in records:
            self.records[r.id] = r
        numbers = [int(r.id[4:]) for r in records if r.id.startswith("get-") and r.id[4:].isdigit()]
        self._gets = itertools.count(max(numbers, default=0) + 1)

    def _reconcile(self) -> None:
        """After a restart: each unsettled record against the entity's transfers. A get the
        agent had not yet answered fails, saying to ask again (its command's outcome is in the
        queue's history); a transfer the entity no longer knows has failed."""
        for record in list(self.records.values()):
            if record.settled:
                continue
            t = self.entity.find(record.transfer) if record.transfer is not None else None
            if t is not None:
                t.meta["record"] = record.id
                self._sync(t, "resumed" if not t.settled else t.state)
            elif record.transfer is not None:
                record.state, record.finished_s = "failed", time.time()
                record.reason = "the ground restarted and its CFDP entity no longer knows this transfer"
                self._store(record, state_changed=True)
            elif record.state == "requested":
                # Its command's answer is lost with the ground's memory: it may never come. Said so;
                # should the file come all the same, it is a record of its own.
                record.state, record.finished_s = "failed", time.time()
                record.reason = "the ground restarted before the agent answered FILE_DOWNLINK; ask again (file get)"
                self._store(record, state_changed=True)
        for t in self.entity.transfers.values():
            if t.direction == "out" or t.source:
                self._record_for(t) or self._sync(t, t.state)
        for leftover in (self.area / PARTIAL_DIR).glob("*.tmp") if (self.area / PARTIAL_DIR).is_dir() else ():
            _unlink(leftover)
        going = {t.source for t in self.entity.transfers.values() if t.direction == "out"}
        for leftover in (self.area / UPLINK_DIR).iterdir():
            if f"{UPLINK_DIR}/{leftover.name}" not in going:
                _unlink(leftover)  # an upload cut off by a restart, a copy whose transfer ended meanwhile


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _holds(record: FileRecord, path: Path, st: os.stat_result) -> bool:
    """Whether ``path`` (``st``: its stat) is the file ``record`` brought down: the one put in place (inode, size,
    mtime), or, where it is not (or a record from before stamps), one with the record's SHA-256 (found in audit:
    an older record served a newer file of its name under its own SHA-256)."""
    if record.stamp is not None and [st.st_ino, st.st_size, st.st_mtime_ns] == list(record.stamp):
        return True
    return not (record.size is not None and st.st_size != record.size) and bool(record.sha256) \
        and sha256_file(path) == record.sha256


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["AGENT_ENTITY_ID", "DOWNLINK_DEPTH", "DOWNLINK_TOPS",
           "GROUND_ENTITY_ID", "MAX_UPLOAD_BYTES", "UPLINK_TOPS", "CommandOutcome", "FileError", "FileGone",
           "FileRecord", "GroundFiles", "aside_name", "check_remote", "client_sender", "sha256_file"]
