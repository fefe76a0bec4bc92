"""Files to and from the ground: the agent's CFDP entity, its file area and its commands.

- **The file area** is the compute directory. The ground may send into ``staging/`` (models
  for MODEL_INSTALL), ``incoming/`` (inputs for continuous jobs), ``data/`` (data sets) and
  ``sequences/`` (stored sequences: the state directory's, where SEQUENCE_START finds them);
  the agent sends from those and from ``products/``, ``checkpoints/`` and ``logs/``. Every name
  is confined (:mod:`flight.files.filestore`); the model store (``models/``) is never listed,
  sent or deleted through here, and a file a compute job still to run needs (a training job's
  checkpoint, a job's data set) or the running sequence runs from (the ``in_use`` port) is not
  deleted until the job or the run has ended.
- **Sequences up**: only ``sequences/NAME.toml`` of a name SEQUENCE_START takes, at most 64 KiB
  (refused from the metadata), and only where the scheduler's checks pass once it is whole
  (``sequence_check``: SEQUENCE_START's, but for the reach of its waits) and it is not the running
  sequence's file; a refused file is not put in place and one there before is kept. Each is said
  (``SEQUENCE_STORED``, the step and key named), so the operator knows before starting it.
- **PDUs** come in as TC(141,1) on APID FILES (the link service hands them here; any valid
  packet is contact) and go out as TM(141,1), live only (CFDP is its own retransmission), at
  most ``file_rate_bps`` and never more than :data:`FILE_BACKLOG_S` of a serial line queued
  ahead of live telemetry.
- **Loss of signal**: nothing valid from the ground for ``file_los_s`` suspends every
  transaction (``FILES_SUSPENDED``); the next valid packet resumes them (``FILES_RESUMED``).
- **Products down**: FILE_DOWNLINK queues a file by priority; with ``file_auto_downlink`` each
  new file in products/, checkpoints/ and logs/ is queued by itself (products first). The
  stated clean-up rule: a file the ground has is deleted ``file_keep_done_s`` later: one in
  ``products/`` from when the ground confirmed its downlink (class 2), one in ``incoming/done/``
  (an input a job has taken) from when it came up from the ground.
- **Inputs made on board** (a camera's, in ``incoming/done/`` once a job took them; the ground
  never had them, their products keep their ``source_sha256``): deleted ``file_keep_done_s`` after
  they were taken (first seen there, agent time), and the oldest at once past :data:`DONE_KEEP`
  files or :data:`DONE_KEEP_BYTES`, never while a transfer sends one; each said (``FILE_DELETED``)
  and counted (``inputs_removed``).
- **Files no job takes**: a file in ``incoming/`` that no continuous job will ever take (a hidden name,
  a write never finished; a name not ``*.npy``; anything in a directory of its own but ``done/``, bounded
  above, and ``rejected/``, which the worker bounds) is deleted once it has been there unchanged for
  :data:`JUNK_AFTER_S`, never while a transfer sends or receives it or a job still to run needs it;
  each is said (``FILE_DELETED``) and counted (``incoming_removed``).
- **Disk**: below ``disk_reserve_mb`` free, new incoming files are refused (the sender is told:
  filestore rejection) and :meth:`FileManager.disk_refusal` gives the reason that the compute
  supervisor refuses new jobs with (``DISK_LOW``, once per crossing).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.file_args import DOWNLINK_TOPS, MAX_NAME_DEPTH, UPLINK_TOPS
from flight.agent.ports import Component, EventPort
from flight.agent.schedule import SEQUENCES_DIR, check_sequence_upload
from flight.clock import Clock
from flight.files.entity import FILE_BACKLOG_S, EntityConfig, FileEntity, FileError, Transfer
from flight.files.filestore import MAX_DEPTH, NameRefused, resolve
from flight.link.definitions import FILE_CHANNELS
from flight.link.dictionary import FailureCode
from flight.link.interface import FlightLink
from flight.link.messages import CommandRequest
from flight.storage import CorruptFile, printable, quarantine, read_checked_json, write_checked_json

AGENT_ENTITY_ID = 2
GROUND_ENTITY_ID = 1
assert SEQUENCES_DIR in UPLINK_TOPS  # the tops are kept with the file-name rules (file_args.py), by name
AUTO_DOWNLINK = {"products": 2, "checkpoints": 6, "logs": 8}   # top directory -> queue priority
CLEANED = ("products", "incoming/done")                          # deleted once the ground has them
BURST_S = 0.5           # the token bucket holds this much of file_rate_bps
TICK_S = 0.2            # how often an active transaction's timers are looked at
MAX_LIST = 100
LIST_NAME_CHARS = 256  # of a name FILE_LIST shows (escaped, a 255-byte name is longer): 100 of them fit a report
MAX_DELIVERED = 1024
RELIST_S = 60.0  # the automatic tops are walked again at least this often, their directories changed or not
RACY_NS = 2_000_000_000  # a directory changed this close to its walk may change again unseen in its times
INCOMING_OWN = ("done", "rejected")  # incoming/'s directories of taken and refused inputs: the worker's
JUNK_AFTER_S = 600.0  # a file in incoming/ that no job takes, unchanged this long (agent time), is deleted
JUNK_PER_LOOK = 16  # of those, deleted (each said) at most per housekeeping period: a flood goes over periods
DONE = "incoming/done"  # inputs a continuous job has taken (the worker moves them there)
DONE_KEEP = 256  # of those made on board, kept at most (files): a camera's file every 10 s is 8640 a day
DONE_KEEP_BYTES = 1 << 30  # ... and bytes: four of the largest input a job takes (worker.MAX_INCOMING_BYTES)
DONE_PER_LOOK = 16  # of those, deleted (each said) at most per housekeeping period


class FileManager(Component):
    NAME = "files"
    COMMANDS = ("FILE_DOWNLINK", "FILE_CANCEL", "FILE_LIST", "FILE_DELETE", "FILE_STATUS")
    EVENTS = ("FILE_STARTED", "FILE_RECEIVED", "FILE_SENT", "FILE_FAILED", "FILE_RESTARTED", "FILES_SUSPENDED",
              "FILES_RESUMED", "FILE_DELETED", "DISK_LOW", "SEQUENCE_STORED")
    CHANNELS = tuple(c.name for c in FILE_CHANNELS)

    def __init__(self, root: Path, state_dir: Path, link: FlightLink, encode_tm: Callable[[bytes, float], bytes],
                 clock: Clock, emit: EventPort, params: Any, contact_age_s: Callable[[], float],
                 config: EntityConfig | None = None, auto_skip: frozenset[str] = frozenset(),
                 in_use: Callable[[str], str | None] = lambda name: None,
                 sequence_check: Callable[[str, Path], tuple[bool, str]] | None = None,
                 transfers_expected: bool = False):
        """``in_use(name)``: whose a file of the area is where a job still to run needs it (the compute
        supervisor's: a training job's checkpoint, a job's data set) or the running sequence runs from it (the
        scheduler's), else None; FILE_DELETE refuses it, and so does an upload over the running sequence's file
        (an upload over a file a job needs is not refused: the operator's new data set or checkpoint goes in).
        ``sequence_check(sequence, path)``: the scheduler's check of a sequence file come up, before it is put in
        place ((ok, what or why)); without it no sequence is taken. ``transfers_expected``: the transfer state
        (files.json, written at every start) was written before, as the agent's state says: one missing is a loss,
        said as a damaged one is (``load_errors``), not a first start."""
        self.root = Path(root)
        self.link = link
        self._encode_tm = encode_tm
        self._clock = clock
        self._emit = emit
        self._params = params
        self._contact_age_s = contact_age_s
        self._delivered_path = Path(state_dir) / "files_delivered.json"
        # name -> (unix time the ground confirmed it, the (inode, size, mtime ns) of the file it has, None where
        # unknown: saved before stamps): a file there that is no longer that one is new (found in audit: a product
        # rewritten under a confirmed name was never sent, and deleted at its keep time)
        self._delivered: dict[str, tuple[float, tuple[int, int, int] | None]] = {}
        self._delivered_changed = False  # saved at the next housekeeping (flush): a save per file sent was 7 ms
        self._load_error: str | None = None
        transfers_path = Path(state_dir) / "files.json"
        transfers_lost = transfers_expected and not transfers_path.exists()
        self._load_delivered()
        self._suspended_at: float | None = None
        self._tokens = 0.0
        self._tokens_at = clock.monotonic_s()
        self._disk_low = False
        self._free_mb: float | None = None
        # sequences/ is the state directory's, where the scheduler runs them from: the file area's names for it
        self._roots = {SEQUENCES_DIR: Path(state_dir)}
        self.entity = FileEntity(AGENT_ENTITY_ID, GROUND_ENTITY_ID, self.root, clock.monotonic_s,
                                 read_tops=DOWNLINK_TOPS, write_tops=UPLINK_TOPS,
                                 state_path=Path(state_dir) / "files.json", config=config,
                                 on_change=self._changed, utc_s=clock.now_s, roots=self._roots)
        # Said as a damaged one is (found in audit: one missing at a restart was said nowhere, and a get the ground
        # had queued on board stayed queued there for ever); written now, so that from here on its absence is a loss
        self._transfers_missing = (f"{transfers_path.name} missing though one was written before; transfers queued "
                                   "or in progress forgotten") if transfers_lost else None
        if not transfers_path.exists():
            self.entity.save()
        self.entity.admit_incoming = self._admit_incoming
        self.entity.admit_file = self._admit_file
        self._sequence_check = sequence_check
        self._sequences_checked: dict[str, str] = {}  # sequences/NAME.toml -> what the check said, until in place
        self._known: set[str] = set()   # files the auto-downlink has queued, or refused, in this run
        self._in_use = in_use
        self._auto_skip = auto_skip  # files still being written (the worker's live log): sent on command only
        self._auto_refused = 0  # files the auto-downlink could not send (FILE_FAILED said each)
        self._queued_unsaved = False  # the automatic downlink queued files the entity's state has not saved
        # top -> (its directories' stamps, the names under it sorted, monotonic s of the walk): _names_under
        self._listings: dict[str, tuple[dict[str, tuple[int, int, int]], list[str], float]] = {}
        self._not_deleted: set[str] = set()  # files the clean-up could not delete (FILE_FAILED said each, once)
        self._delete_failures = 0  # of those, counted once each in files_failed
        # incoming/ files no job takes -> (inode, size, mtime ns) and the monotonic s since when they have been so
        self._junk_seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._junk_walk: tuple[dict[str, tuple[int, int, int]], float] | None = None  # its directories' stamps, when
        self._junk_removed = 0
        # board-made inputs in incoming/done/ -> (inode, size, mtime ns) and the monotonic s they were first seen there
        self._done_seen: dict[str, tuple[tuple[int, int, int], float]] = {}
        self._done_removed = 0

    # --- PDUs -----------------------------------------------------------------------------------

    def receive(self, pdu: bytes) -> None:
        """A CFDP PDU from the ground (the link service has counted the packet as contact)."""
        self._contact()
        self.entity.receive(pdu)

    def end_turn(self) -> None:
        """Send what the budget and the line allow; suspend at loss of signal."""
        self._contact()
        if self.entity.suspended or not self.entity.pending():
            return  # no transaction, nothing queued: no timer to run, nothing to send (the bucket fills meanwhile)
        now = self._clock.monotonic_s()
        rate = float(self._params["file_rate_bps"])
        self._tokens = min(rate * BURST_S + 2048, self._tokens + rate * max(0.0, now - self._tokens_at))
        self._tokens_at = now
        line = self.link.line_rate_bps()
        room = self._tokens if line is None else min(self._tokens, FILE_BACKLOG_S * line - self.link.backlog_bytes())
        sent = 0
        for pdu in self.entity.pull(max(0, int(room))):  # with no room the timers still run
            packet = self._encode_tm(pdu, self._clock.now_s())
            if not self.link.publish(packet):
                break  # the link's queue is full: CFDP asks again for what is lost
            sent += len(packet)
        self._tokens -= sent

    def next_due_s(self) -> float | None:
        """When the loop should come back for the files: soon while a transaction is active."""
        if not self.entity.pending() or self.entity.suspended:
            return None
        now = self._clock.monotonic_s()
        rate = float(self._params["file_rate_bps"])
        if self.entity.sending():
            wait = max(0.0, (1100 - self._tokens) / rate)
            return now + min(TICK_S, max(0.005, wait))
        return now + TICK_S

    def _contact(self) -> None:
        age = self._contact_age_s()
        los = float(self._params["file_los_s"])
        if age > los and not self.entity.suspended:
            self._suspended_at = self._clock.monotonic_s()
            self.entity.set_contact(False)
        elif age <= los and self.entity.suspended:
            self.entity.set_contact(True)

    # --- housekeeping ---------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Once per housekeeping period: disk, clean-up, automatic downlink, stale transactions."""
        self._check_disk()
        self.entity.expire_resumable()
        self._clean_delivered()
        self._sweep_incoming()
        self._bound_done()
        if self._params["file_auto_downlink"]:
            self._auto_downlink()
        self.flush()

    def flush(self) -> None:
        """Write the list of files the ground has, where it changed: once a housekeeping period, and as the
        agent stops (an audit: once for every file sent, 7 ms a save at 1024 files). Only where the automatic
        downlink sends again what a power cut lost of it (:meth:`_remember` saves at once otherwise)."""
        if self._delivered_changed:
            self._save_delivered()

    @property
    def load_errors(self) -> list[tuple[str, str]]:
        """(what, why) of each of its stored files found unreadable at start (counted by the agent's
        ``state_corrupt``, said as STATE_CORRUPT; an audit: said as FILE_FAILED only, and not counted)."""
        return [(what, why) for what, why in (("files delivered", self._load_error),
                                              ("file transfers", self.entity.load_error or self._transfers_missing))
                if why]

    def time_began(self) -> None:
        for why in (self._load_error, self.entity.load_error or self._transfers_missing):
            if why:
                self._emit("FILE_FAILED", transfer="-", name="state", reason=why[:200])
        self._check_disk()

    def disk_refusal(self) -> str | None:
        """Why new work must wait for space, or None (the compute supervisor asks before a job)."""
        if self._disk_low and self._free_mb is not None:
            return (f"disk low: {self._free_mb:.0f} MB free, disk_reserve_mb {self._params['disk_reserve_mb']:.0f}; "
                    "downlink and delete files (FILE_LIST, FILE_DELETE)")
        return None

    def _admit_incoming(self, size_bytes: int | None) -> str | None:
        """A file coming in: refused below the reserve, or if it would take the disk below it, counting what the
        files still coming in will write (found in audit: two uploads at once that each fitted filled the disk past
        the reserve together)."""
        self._check_disk()
        full = self.disk_refusal()
        if full is None and size_bytes and self._free_mb is not None:
            reserve = float(self._params["disk_reserve_mb"])
            promised_mb = self.entity.promised_in_bytes() / 1e6
            left_mb = self._free_mb - promised_mb - size_bytes / 1e6
            if left_mb < reserve:
                owed = f" once the files coming in have the {promised_mb:.1f} MB still owed them" if promised_mb else ""
                full = (f"a file of {size_bytes / 1e6:.1f} MB would leave {left_mb:.0f} MB free{owed}, under "
                        f"disk_reserve_mb {reserve:.0f}")
        return full

    def _admit_file(self, name: str, size_bytes: int, partial: Path | None) -> str | None:
        """The entity's ``admit_file``: a file coming in to ``sequences/`` (the others have no rule of their own here)
        is a sequence SEQUENCE_START could find, at most 64 KiB, not the running sequence's file, and, once whole
        (``partial``), one the scheduler's checks pass; a reason refuses it (the file there before is kept)."""
        if name.partition("/")[0] != SEQUENCES_DIR:
            return None
        try:
            sequence = check_sequence_upload(name, size_bytes, "destination")
        except NameRefused as exc:
            return str(exc)
        whose = self._in_use(name)
        if whose:
            return (f"destination: {name!r} is {whose[:120]}: SEQUENCE_ABORT it or let it end first; a resume needs "
                    "the file it started from")
        if partial is None:
            return None
        if self._sequence_check is None:
            return f"destination: {name!r}: this agent has no scheduler to check sequences"
        try:
            ok, said = self._sequence_check(sequence, partial)
        except Exception as exc:  # noqa: BLE001 - a check that breaks refuses the file, never the agent
            ok, said = False, f"{name}: not checked ({type(exc).__name__}: {exc})"
        if not ok:
            return said
        self._sequences_checked[name] = said  # said as it is put in place (SEQUENCE_STORED)
        return None

    def _check_disk(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free / 1e6
        except OSError:
            self._free_mb = None
            return
        self._free_mb = free
        low = free < float(self._params["disk_reserve_mb"])
        if low and not self._disk_low:
            self._emit("DISK_LOW", free_mb=free, reserve_mb=float(self._params["disk_reserve_mb"]),
                       refused="new jobs and incoming files refused")
        self._disk_low = low

    def _names_under(self, top: str) -> list[str]:
        """The files under ``top`` (no hidden names, no links), sorted. Walked again only where one of its
        directories changed (:func:`_stamp`: its inode, mtime and ctime; a ctime no program can set back, as
        ``rsync -a`` or ``touch -d`` set an mtime), and at least every RELIST_S: an audit measured the walk at
        every housekeeping period at 9 ms for 1000 products, 52 ms for 5000."""
        try:  # a top that a symbolic link leads out of the file area is not listed (SEC-006), nor one that is a link
            base = resolve(self.root, top, None, top)  # in it (logs -> ., found in audit: the model store was sent)
            if os.path.realpath(base) != os.path.join(os.path.realpath(self.root), top):
                raise NameRefused(f"{top}/ is a link")
        except NameRefused:
            self._listings.pop(top, None)
            return []
        mono_s = self._clock.monotonic_s()
        cached = self._listings.get(top)
        if cached is not None and 0.0 <= mono_s - cached[2] < RELIST_S and _unchanged(cached[0]):
            return cached[1]
        if not base.is_dir():
            self._listings.pop(top, None)
            return []
        walked_ns = time.time_ns()  # the file system's clock, not the agent's: ctimes are stamped with it
        stamps: dict[str, tuple[int, int, int]] = {}
        out: list[str] = []
        skip = len(str(base))  # names are top + the path under it (a root of "." once lost a letter: review)
        pending = [str(base)]
        while pending:  # never into a linked directory
            directory = pending.pop()
            try:
                stamps[directory] = _stamp(os.stat(directory))
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.name.startswith(".") or entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            out.append(top + entry.path[skip:].replace(os.sep, "/"))
            except OSError:  # gone while walked: the next look walks again
                stamps[directory] = (-1, -1, -1)
        out.sort()
        if all(0 <= ctime_ns < walked_ns - RACY_NS for _ino, _mtime_ns, ctime_ns in stamps.values()):
            self._listings[top] = (stamps, out, mono_s)
        else:  # changed just now (or unreadable): a change within its mtime's resolution could follow unseen
            self._listings.pop(top, None)
        return out

    def _auto_downlink(self) -> None:
        """Queue every file of the automatic tops that the ground does not have and that is not
        queued: new ones, and those left unsent by a reset. One that failed is not queued again
        by itself in this run (``_known``; FILE_DOWNLINK sends it again). One that cannot be sent (a
        name the file rules refuse, too deep for the ground to file) is said once (FILE_FAILED),
        counted (``files_failed``) and passed over: the files after it still go."""
        busy = {t.source for t in self.entity.transfers.values() if t.direction == "out"}
        present: set[str] = set()
        try:
            whole = self._queue_new(busy, present)
        finally:
            if self._queued_unsaved:  # one save for the look, not one a file (found again after a reset)
                self._queued_unsaved = False
                self.entity.save()
        if whole:
            self._known &= present | busy  # forget what is gone: bounded by the files there are

    def _queue_new(self, busy: set[str], present: set[str]) -> bool:
        """Queue what :meth:`_auto_downlink` says, adding each name seen to ``present``; False where a full
        queue stopped the look before the end."""
        for top, priority in AUTO_DOWNLINK.items():
            before = self._listings.get(top)
            names = self._names_under(top)
            after = self._listings.get(top)
            walked = after is None or after is not before  # a directory changed, or RELIST_S passed
            for name in names:
                present.add(name)
                if walked and name in self._delivered and not self._still_delivered(name):
                    self._forget_delivered(name)  # rewritten since the ground had it: new, sent again
                if name in self._known or name in busy or name in self._delivered or name in self._auto_skip:
                    continue
                if self.entity.queue_full():
                    return False  # the next look takes the rest
                self._known.add(name)
                if MAX_NAME_DEPTH < name.count("/") + 1:
                    self._not_sent(name, f"name: more than {MAX_NAME_DEPTH} levels deep, which the ground cannot "
                                         "file under downlink/")
                    continue
                try:
                    self.entity.put(name, f"downlink/{name}", 2, priority, {"by": "auto"}, save=False)
                    self._queued_unsaved = True
                except FileError as exc:
                    self._not_sent(name, str(exc))
        return True

    def _not_sent(self, name: str, why: str) -> None:
        self._auto_refused += 1
        self._emit("FILE_FAILED", transfer="-", name=printable(name)[:200], reason=f"not sent by itself: {why}"[:200])

    def _clean_delivered(self) -> None:
        keep_s = float(self._params["file_keep_done_s"])
        now = self._clock.now_s()
        changed = False
        busy = {n for t in self.entity.transfers.values() for n in (t.source, t.dest)}
        for name, (at, _stamp) in list(self._delivered.items()):
            if now - at < keep_s:
                continue
            if name.startswith("incoming/done/") and (self.root / "incoming" / name.rsplit("/", 1)[1]).exists():
                continue  # not taken by a job yet: kept until it is
            if name in busy:
                continue  # queued or going (found in audit: deleted under its transfer): the next clean-up
            if not self._still_delivered(name):
                self._forget_delivered(name)  # rewritten since the ground had it: not the ground's, kept
                continue
            if not any(name.startswith(top + "/") for top in CLEANED):  # never deleted here (checkpoints, logs):
                if not (self.root / name).exists():  # kept in the list while it is there, so that a restart does not
                    del self._delivered[name]  # send it again nor a rewrite go unseen (found in audit: dropped from
                    changed = True  # the list at once, they were sent again after every restart)
                continue
            if not self._clean_file(name, f"the ground confirmed it {now - at:.0f} s ago"):
                continue  # kept in the list: tried again at the next clean-up
            del self._delivered[name]
            self._known.discard(name)  # gone: a new file of its name is new (found in audit: never sent)
            changed = True
        if changed:
            self._delivered_changed = True

    def _junk_in_incoming(self) -> dict[str, tuple[int, int, int]] | None:
        """The files under incoming/ that no job will ever take, by name, each with its (inode, size, mtime ns):
        at its top a hidden one (a write never finished: a writer writes .NAME, then renames it) or one not named
        ``*.npy`` (a continuous job takes ``incoming/*.npy``); in a directory of its own other than done/ and
        rejected/ (the worker's, bounded by it), any file. Never through a link; none if incoming/ is one. None
        where no directory walked changed since the last walk (their stamps, as :meth:`_names_under` keeps them;
        walked again at least every RELIST_S): nothing came or went."""
        try:
            base = resolve(self.root, "incoming", None, "incoming")
            if os.path.realpath(base) != os.path.join(os.path.realpath(self.root), "incoming"):
                raise NameRefused("incoming/ is a link")
        except NameRefused:
            self._junk_walk = None
            return {}
        mono_s = self._clock.monotonic_s()
        cached = self._junk_walk
        if cached is not None and 0.0 <= mono_s - cached[1] < RELIST_S and _unchanged(cached[0]):
            return None
        walked_ns = time.time_ns()  # the file system's clock: ctimes are stamped with it
        stamps: dict[str, tuple[int, int, int]] = {}
        found: dict[str, tuple[int, int, int]] = {}
        pending = [(str(base), "incoming")]
        while pending:
            directory, under = pending.pop()
            top = under == "incoming"
            try:
                stamps[directory] = _stamp(os.stat(directory))
                with os.scandir(directory) as entries:
                    for entry in entries:
                        name = f"{under}/{entry.name}"
                        if entry.is_symlink():
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            if not (top and entry.name in INCOMING_OWN) and name.count("/") < MAX_DEPTH:
                                pending.append((entry.path, name))
                        elif entry.is_file(follow_symlinks=False) and not (
                                top and entry.name.endswith(".npy") and not entry.name.startswith(".")):
                            st = entry.stat(follow_symlinks=False)
                            found[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:  # gone, or unreadable: walked again next time
                stamps[directory] = (-1, -1, -1)
        racy = not all(0 <= ctime_ns < walked_ns - RACY_NS for _ino, _mtime_ns, ctime_ns in stamps.values())
        self._junk_walk = None if racy else (stamps, mono_s)
        return found

    def _sweep_incoming(self) -> None:
        """Delete the files in incoming/ that no job will ever take (:meth:`_junk_in_incoming`) once each has been
        there unchanged for JUNK_AFTER_S of agent time (a file found changed, still being written, is timed from
        then), never one a transfer sends or receives, nor one a job still to run needs (``in_use``); each said
        (FILE_DELETED) and counted (``incoming_removed``), at most JUNK_PER_LOOK a period, the longest there
        first. Why: nothing else ever took them (found in review: uplinked junk, a wrong extension or a write
        never finished, was kept for good and filled the disk)."""
        now = self._clock.monotonic_s()
        found = self._junk_in_incoming()
        if found is not None:  # only what is there: bounded by it
            before = self._junk_seen
            self._junk_seen = {name: (stamp, before[name][1] if name in before and before[name][0] == stamp else now)
                               for name, stamp in found.items()}
        removed = 0
        for name, (stamp, since) in sorted(self._junk_seen.items(), key=lambda item: item[1][1]):
            if removed >= JUNK_PER_LOOK or now - since < JUNK_AFTER_S:
                break
            if self._busy(name) or self._in_use(name):
                continue
            path = self.root / name
            try:
                st = os.lstat(path)
                if (st.st_ino, st.st_size, st.st_mtime_ns) != stamp:  # written to in place: no directory changed
                    self._junk_seen[name] = ((st.st_ino, st.st_size, st.st_mtime_ns), now)
                    continue
                path.unlink()
            except FileNotFoundError:
                del self._junk_seen[name]
                continue
            except OSError as exc:
                self._not_deleted_said(name, "no job takes it", exc)
                continue
            del self._junk_seen[name]
            self._not_deleted.discard(name)
            self._junk_removed += 1
            removed += 1
            self._emit("FILE_DELETED", name=printable(name)[:200],
                       reason=f"no job takes it (continuous jobs take incoming/*.npy; a hidden name is a write never "
                              f"finished), unchanged for {now - since:.0f} s")

    def _bound_done(self) -> None:
        """Delete the inputs made on board (not sent up: the ground never had them) that a continuous job took, in
        incoming/done/: ``file_keep_done_s`` after they were taken (first seen there, agent time: a restart times
        them again, so never sooner), and the oldest taken at once past DONE_KEEP files or DONE_KEEP_BYTES; never one
        a transfer sends or a job needs. Each said (FILE_DELETED) and counted (``inputs_removed``), at most
        DONE_PER_LOOK a period. Why: only those the ground sent were ever deleted, so a camera's filled the disk (found
        in review); their products keep their ``source_sha256``. One the ground sent goes by the list of files it
        has (:meth:`_clean_delivered`)."""
        before = self._listings.get(DONE)
        names = self._names_under(DONE)
        after = self._listings.get(DONE)
        now = self._clock.monotonic_s()
        if after is None or after is not before:  # walked: what is there now, each timed from when first seen
            seen: dict[str, tuple[tuple[int, int, int], float]] = {}
            for name in names:
                stamp = None if name in self._delivered else _stamp_of(self.root / name)
                if stamp is None:
                    continue
                old = self._done_seen.get(name)
                seen[name] = (stamp, old[1] if old is not None and old[0] == stamp else now)
            self._done_seen = seen
        count = len(self._done_seen)
        total = sum(stamp[1] for stamp, _since in self._done_seen.values())
        keep_s = float(self._params["file_keep_done_s"])
        busy = {n for t in self.entity.transfers.values() for n in (t.source, t.dest)}
        removed = 0
        for name, (stamp, since) in sorted(self._done_seen.items(), key=lambda item: (item[1][1], item[0])):
            over = count > DONE_KEEP or total > DONE_KEEP_BYTES
            if removed >= DONE_PER_LOOK or not (over or now - since >= keep_s):
                break  # the oldest first: none after it is due either
            if name in busy or name in self._delivered or self._in_use(name):
                continue
            path = self.root / name
            try:
                if _stamp_of(path) != stamp:  # another input of its name taken since: timed from now
                    del self._done_seen[name]
                    continue
                path.unlink()
            except FileNotFoundError:
                del self._done_seen[name]
                continue
            except OSError as exc:
                self._not_deleted_said(name, "an input made on board, taken", exc)
                continue
            del self._done_seen[name]
            self._not_deleted.discard(name)
            count, total = count - 1, total - stamp[1]
            removed += 1
            self._done_removed += 1
            why = (f"over {DONE_KEEP} files or {DONE_KEEP_BYTES >> 20} MiB of them are kept, the oldest taken goes "
                   "first" if over else f"taken by a job {now - since:.0f} s ago (file_keep_done_s)")
            self._emit("FILE_DELETED", name=printable(name)[:200],
                       reason=f"an input made on board: {why}; its product keeps its source_sha256")

    def _not_deleted_said(self, name: str, why: str, exc: OSError) -> None:
        """A clean-up's delete the disk refused: said once (FILE_FAILED) and counted once (``files_failed``); the
        clean-up tries again later."""
        if name not in self._not_deleted:
            self._not_deleted.add(name)
            self._delete_failures += 1
            self._emit("FILE_FAILED", transfer="-", name=printable(name)[:200],
                       reason=f"not deleted ({why}): {exc.strerror or exc}"[:200])

    def _still_delivered(self, name: str) -> bool:
        """Whether the file at ``name`` is still the one the ground has (as stamped when it went; one whose entry
        has no stamp, or that is gone, is taken to be)."""
        stamp = self._delivered[name][1]
        if stamp is None:
            return True
        try:
            st = (self.root / name).stat()
        except OSError:
            return True
        return (st.st_ino, st.st_size, st.st_mtime_ns) == stamp

    def _forget_delivered(self, name: str) -> None:
        """The file at ``name`` is not the one the ground has: no longer cleaned, and sent by the automatic
        downlink again as a new file."""
        del self._delivered[name]
        self._known.discard(name)
        self._delivered_changed = True

    def _busy(self, name: str) -> list[str]:
        """The transfers in progress or queued that send or receive ``name`` (FILE_DELETE refuses it then)."""
        return [t.id for t in self.entity.transfers.values() if name in (t.source, t.dest)]

    def _clean_file(self, name: str, reason: str) -> bool:
        """Delete a file the ground has, if it is one the clean-up may delete (``CLEANED``), and say so.
        False where the disk refused: said once (FILE_FAILED) and counted (``files_failed``), and the caller
        tries again later (an audit: it was dropped from the list unsaid, and stayed on the disk for good)."""
        try:
            path = resolve(self.root, name, None)
        except NameRefused:
            return True  # a link now leads it out of the file area: nothing is deleted through it
        if any(name.startswith(top + "/") for top in CLEANED) and path.is_file():
            try:
                path.unlink()
            except OSError as exc:
                self._not_deleted_said(name, reason, exc)
                return False
            self._emit("FILE_DELETED", name=name, reason=reason)
        self._not_deleted.discard(name)
        return True

    # --- the entity's news ----------------------------------------------------------------------

    def _changed(self, what: str, t: Transfer | None) -> None:
        if what == "suspended":
            self._emit("FILES_SUSPENDED", reason=f"no valid packet from the ground for {self._contact_age_s():.0f} s")
            return
        if what == "resumed" and t is None:
            gap = self._clock.monotonic_s() - self._suspended_at if self._suspended_at is not None else 0.0
            self._emit("FILES_RESUMED", gap_s=gap)
            return
        if t is None:
            return
        name = t.source if t.direction == "out" else (t.dest or t.transaction or t.id)
        sequence_in = t.direction == "in" and name.startswith(SEQUENCES_DIR + "/")
        if what in ("started", "resumed"):
            self._emit("FILE_STARTED", transfer=t.id, direction=t.direction, name=name[:200])
        elif what == "restarted":
            self._emit("FILE_RESTARTED", transfer=t.id, name=name[:200], reason=t.reason[:200])
        elif what == "done" and t.direction == "in":
            self._emit("FILE_RECEIVED", transfer=t.id, name=name[:200], bytes=int(t.size or 0), sha256=(t.sha256 or "")[:16])
            if name.startswith("incoming/") and name.count("/") == 1:
                # The ground sent it, so the ground has it: once a job has taken it (moved to
                # incoming/done/), it goes by the same rule as a product the ground confirmed.
                self._remember("incoming/done/" + name.split("/", 1)[1], _stamp_of(self.root / name))
            if sequence_in:
                self._emit("SEQUENCE_STORED", name=name[:200], ok=True,
                           reason=self._sequences_checked.pop(name, "stored")[:200])
        elif what == "done":
            self._emit("FILE_SENT", transfer=t.id, name=name[:200], bytes=int(t.size or 0), reason=t.reason[:200])
            if t.cls == 2:
                self._remember(t.source, t.hashed)  # the file as it was when it went (the entity's)
        elif what in ("failed", "cancelled"):
            self._emit("FILE_FAILED", transfer=t.id, name=name[:200], reason=(t.reason or what)[:200])
            if sequence_in:
                self._sequences_checked.pop(name, None)
                self._emit("SEQUENCE_STORED", name=name[:200], ok=False,
                           reason=f"not stored: {t.reason or what}"[:200])

    def _remember(self, name: str, stamp: list[int] | tuple[int, int, int] | None = None) -> None:
        """The ground has ``name`` from now, the file ``stamp`` says (inode, size, mtime ns): it may be cleaned
        ``file_keep_done_s`` later, while it is still that file."""
        self._delivered.pop(name, None)
        self._delivered[name] = (self._clock.now_s(), None if stamp is None else (int(stamp[0]), int(stamp[1]),
                                                                                  int(stamp[2])))
        while len(self._delivered) > MAX_DELIVERED:  # the oldest, cleaned now: dropped from the list, it was kept
            # for ever (an audit: past 512 products a day, 76 of 1100 left in products/ and never deleted)
            oldest = next(iter(self._delivered))
            fresh = self._still_delivered(oldest)
            del self._delivered[oldest]
            if not fresh:  # rewritten since it went: new, sent again by itself (found in audit: it stayed known,
                self._known.discard(oldest)  # so neither sent nor cleaned for the rest of the run)
            if self._busy(oldest) or not fresh:
                continue  # being sent again: confirmed anew when it has gone, else kept
            self._clean_file(oldest, f"the ground has it, and over {MAX_DELIVERED} files it has are held: the "
                                     "oldest cleaned before file_keep_done_s")
            self._not_deleted.discard(oldest)  # not in the list any more: said (FILE_FAILED) and left
        self._delivered_changed = True
        if not self._params["file_auto_downlink"] or name.startswith("incoming/"):
            self._save_delivered()  # nothing would send it again: a mark lost to a power cut kept the file for good

    def _load_delivered(self) -> None:
        if not self._delivered_path.exists():
            return
        try:
            body = read_checked_json(self._delivered_path)
            self._delivered = {str(k): _delivered_entry(v) for k, v in body.items()}
        except (CorruptFile, OSError, AttributeError, TypeError, ValueError) as exc:
            moved = quarantine(self._delivered_path)  # kept as found, not overwritten by the next save (an audit)
            aside = f"; moved aside ({moved.name})" if moved else ""
            self._load_error = (f"{self._delivered_path.name} unreadable ({exc}){aside}; nothing cleaned until sent "
                                "again")

    def _save_delivered(self) -> None:
        try:
            write_checked_json(self._delivered_path, {name: at if stamp is None else [at, *stamp]
                                                      for name, (at, stamp) in self._delivered.items()})
            self._delivered_changed = False
        except OSError:
            pass  # worst case a product is kept longer: tried again at the next housekeeping

    # --- commands -------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"FILE_DOWNLINK": Handler(self._downlink), "FILE_CANCEL": Handler(self._cancel),
                "FILE_LIST": Handler(self._list), "FILE_DELETE": Handler(self._delete),
                "FILE_STATUS": Handler(self._status)}

    def _downlink(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        try:  # checked here too, so that the reason names the argument
            resolve(self.root, name, DOWNLINK_TOPS, "name", self._roots)
        except NameRefused as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        if name.count("/") + 1 > MAX_NAME_DEPTH:
            raise CommandFailed(f"name: {name!r} is {name.count('/') + 1} levels deep, at most {MAX_NAME_DEPTH} "
                                "(the ground files it under downlink/)", FailureCode.BAD_ARGUMENTS)
        try:
            t = self.entity.put(name, f"downlink/{name}", int(req.args["cfdp_class"]), int(req.args["priority"]),
                                {"cmd_id": req.cmd_id})
        except FileError as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        if t.cls == 2:  # a class-1 copy is never confirmed: the automatic downlink still sends it acknowledged (an
            self._known.add(name)  # audit: it was never sent so, nor cleaned, a damaged copy never made good)
        return {"transfer": t.id, "bytes": int(t.size or 0)}

    def _cancel(self, req: CommandRequest) -> dict[str, Any]:
        try:
            t = self.entity.cancel(req.args["transfer"])
        except FileError as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        return {"transfer": t.id, "state": t.state}

    def _list(self, req: CommandRequest) -> dict[str, Any]:
        directory = req.args["directory"]
        directory = directory[:-1] if directory.endswith("/") else directory  # "products/"; "/products" is absolute
        try:
            path = resolve(self.root, directory, DOWNLINK_TOPS | UPLINK_TOPS, "directory", self._roots)
        except NameRefused as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        if not path.is_dir():
            raise CommandFailed(f"directory: no directory {directory!r}", FailureCode.BAD_ARGUMENTS)
        entries = []
        with os.scandir(path) as it:
            items = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        for e in items[:MAX_LIST]:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            # printable: a name not UTF-8 (an on-board writer's) made the whole result unsendable, the listing lost
            # for one name (found in audit); one with a control character would reach the operator's terminal raw
            shown = printable(e.name)[:LIST_NAME_CHARS] + ("/" if e.is_dir(follow_symlinks=False) else "")
            entries.append([shown, st.st_size, round(st.st_mtime, 3)])
        self._check_disk()
        return {"directory": directory, "count": len(items), "entries": entries,
                "free_mb": None if self._free_mb is None else round(self._free_mb, 1)}

    def _delete(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        try:
            path = resolve(self.root, name, DOWNLINK_TOPS | UPLINK_TOPS, "name", self._roots)
        except NameRefused as exc:
            raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None
        busy = self._busy(name)
        if busy:
            raise CommandFailed(f"name: {name!r} is being transferred ({', '.join(busy)}); FILE_CANCEL first",
                                FailureCode.BUSY)
        if name in self._auto_skip:  # the worker's live log: deleted, it went on writing to the file unlinked, held
            raise CommandFailed(f"name: {name!r} is being written (the compute worker's live log); it is rotated "
                                "and its rotated copies may be deleted", FailureCode.BUSY)  # and unbounded (an audit)
        if not path.is_file():
            raise CommandFailed(f"name: no file {name!r}", FailureCode.BAD_ARGUMENTS)
        whose = self._in_use(name)
        if whose:  # a running training job's checkpoint, deleted, lost its resume (found in audit); so would a run
            run = name.startswith(SEQUENCES_DIR + "/")
            ends = "the run ends (SEQUENCE_ABORT" if run else "the job ends (JOB_CANCEL"
            raise CommandFailed(f"name: {name!r} is {whose[:120]}: kept until {ends} ends it)", FailureCode.BUSY)
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError as exc:
            raise CommandFailed(f"cannot delete {name!r}: {exc.strerror or exc}") from None
        self._delivered.pop(name, None)
        self._known.discard(name)  # a new file of its name is new (found in audit: never sent by itself)
        self._emit("FILE_DELETED", name=name, reason="FILE_DELETE")
        return {"name": name, "bytes": size}

    def _status(self, req: CommandRequest) -> dict[str, Any]:
        rows = [[t.id, t.direction, (t.source if t.direction == "out" else t.dest)[:80], int(t.size or 0),
                 int(t.progress), t.state, t.reason[:80]] for t in self.entity.list()[:40]]
        return {"transfers": rows, **{k: int(v) for k, v in self.entity.counts().items()}}

    # --- telemetry ------------------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        c = self.entity.counts()
        return {
            "files_in_active": c["active_in"],
            "files_out_active": c["active_out"],
            "files_queued": c["queued"],
            "files_done": c["done"],
            "files_failed": c["failed"] + self._auto_refused + self._delete_failures,
            "file_bad_pdus": c["bad_pdus"],
            "file_bytes_in": c["bytes_in"],
            "file_bytes_out": c["bytes_out"],
            "files_suspended": self.entity.suspended,
            "incoming_removed": self._junk_removed,
            "inputs_removed": self._done_removed,
            "disk_free_mb": None if self._free_mb is None or not math.isfinite(self._free_mb) else round(self._free_mb, 1),
        }


def _stamp_of(path: Path) -> tuple[int, int, int] | None:
    """A file's (inode, size, mtime ns): what says it is still the one the ground has; None if it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _delivered_entry(value: Any) -> tuple[float, tuple[int, int, int] | None]:
    """One saved entry of the files the ground has: its time (as saved before stamps) or [time, inode, size,
    mtime ns]; ValueError for anything else (the file is then set aside as damaged)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    if (isinstance(value, list) and len(value) == 4 and isinstance(value[0], (int, float))
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[1:])):
        return float(value[0]), (value[1], value[2], value[3])
    raise ValueError(f"an entry {str(value)[:60]!r} is neither a time nor [time, inode, size, mtime ns]")


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    """What says a directory changed: its inode (one put in its place), its mtime, and its ctime, which
    the kernel sets at every change, an mtime put back by ``rsync -a`` or ``touch -d`` included."""
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def _unchanged(stamps: dict[str, tuple[int, int, int]]) -> bool:
    """Whether every directory of a listing is still the one walked, as it was then."""
    try:
        return all(_stamp(os.stat(directory)) == stamp for directory, stamp in stamps.items())
    except OSError:
        return False
