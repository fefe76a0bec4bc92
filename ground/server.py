"""``sunlit-ground server``: the one process that owns the spacecraft links, the archive and
the command history; every operator tool is its client (docs/ground-api.md).

Threads:

- one *link thread per spacecraft* (:class:`SpacecraftLink`) owns that spacecraft's
  :class:`~ground.client.GroundClient` (ZeroMQ sockets belong to one thread): it takes in
  telemetry, hands each packet once to the archive recorder (so the archive holds one copy
  of each packet however many operators watch, and however often the agent plays it back),
  keeps the latest values, events and alarms, and sends what the spacecraft's
  :class:`~ground.queue.CommandQueue` releases, following each command's PUS 1 reports and
  the queue's time windows;
- the same thread keeps the ground's side of the agent's packet store (``ground.completeness``):
  every ``STORE_ACK_PERIOD_S`` once the agent has been heard it acknowledges what arrived and,
  with an archive, the archive has committed (TC(15,130); with nothing new, an empty one says the
  ground listens and starts playback; none while the archive refuses to write),
  and every ``PASS_WRITE_PERIOD_S`` (and at the stop) it files each pass's completeness in the
  archive; started again, it goes on with the pass the archive recorded last. A
  command whose outcome is unknown (acknowledged, its completion not come in its window)
  stays in the queue, ``unknown``: its report, live or played back, settles it, and at the
  next contact (a new pass) the ground asks the agent again with the same cmd_id, which the
  agent answers from its command journal without running it twice; one no longer followed
  (``FOLLOW_UNKNOWN_S``, ``MAX_FOLLOWED``) ends ``unresolved``, final;
- the same thread runs the spacecraft's file transfer (:class:`~ground.files.GroundFiles`, a
  CFDP entity on the link: PDUs in from the telemetry, out under ``[files] rate_bps``; requests
  from the web thread handed over to it), every transfer filed in the archive;
- the *web thread* runs aiohttp: the HTTP API, the WebSocket that pushes to pages and
  programs, the web console's files, login, and the retention schedule;
- the archive's recorder thread writes in batches (ground.archive.ArchiveRecorder).

The link threads never wait for a page: each page has a bounded queue
(:mod:`ground.web.hub`) that drops its oldest points and says so.

Every request but the login page is refused without a session (``Authorization: Bearer``
for programs, a ``SameSite=Strict`` cookie plus an ``X-CSRF-Token`` header for pages); the
``Host`` header must name this server (DNS rebinding) and an ``Origin``, when given, must
be this server's. Roles: :mod:`ground.auth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from flight.agent.schedule import MAX_SEQUENCE_BYTES, SEQUENCES_DIR, stateless_refusal
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, Dictionary, FailureCode, Limits, Severity
from flight.link.messages import EventRecord, HkRecord, ParamRecord, PlanRecord, ack_flags_for, ack_stages
from flight.link.packets import ACK_ACCEPTANCE, ACK_COMPLETION, SequenceCounters, Service, Subtype, pack_tm
from flight.link.sdls import SealingLink
from flight.link.transport import GroundLink, open_ground_link
from flight.storage import install_file
from ground.alarms import Alarm, AlarmManager, LimitStore, ladder_error, not_a_number
from ground.auth import PARALLEL_CHECKS, AuthError, Role, Session, Sessions, UserStore, csrf_ok
from ground.client import GroundClient, Received
from ground.completeness import PASS_GAP_S, CompletenessTracker
from ground.files import MAX_UPLOAD_BYTES, CommandOutcome, FileError, FileGone, FileRecord, GroundFiles, check_remote
from ground.queue import CommandQueue, Entry, QueueError, State, Timeouts
from ground.server_config import DEFAULT_SPACECRAFT, ServerConfig, SpacecraftConfig, check_spacecraft_id
from ground.web.hub import (
    DEFAULT_QUEUE_POINTS,
    LAG_WINDOW_MS,
    Batch,
    ClientQueue,
    LagTracker,
    Sample,
    batch_message,
    json_safe,
    weighted_percentile,
)

STATIC_DIR = Path(__file__).with_name("web") / "static"
DEFAULT_BATCH_INTERVAL_S = 0.05  # 20 pushes/s: a few frames' worth per push, well under what an operator notices
LINK_POLL_S = 0.02  # how long a link thread waits for telemetry before looking at its queue
STATUS_PERIOD_S = 1.0
STALE_PERIODS = 3.0  # a value is stale once no packet carried it for this many housekeeping periods
KEEP_EVENTS = 500
FOLLOW_AFTER_SEND_S = 3600.0  # the longest a command's reports are waited for (long jobs complete late)
# Commands followed for their outcome at most: the queue's bound (500), so that entries sent and not
# final stay within it too; the oldest beyond ends 'unresolved' (found in audit: the queue grew past it).
MAX_FOLLOWED = 500
RECENT_PACKETS = 4096  # a reply and its stream copy arrive well within this many packets of each other
REFUSED_SAY_S = 1.0  # frames a noisy line drops are said at most this often, each time with how many
# The agent plans again at least every plan step (120 s) and reports at most every 60 s, so a plan
# this much older than the newest housekeeping means it stopped planning or its reports are lost.
PLAN_STALE_S = 300.0
PLAN_HISTORY_MAX = 500  # plans one /api/plan?since= answer may hold (~2.5 kB each)
# The agent plays back while an acknowledgement came within its ground_window_s (10 s by default):
# one a second keeps it playing through a lost one or two, for ~40 bytes a second of uplink.
STORE_ACK_PERIOD_S = 1.0
PASS_WRITE_PERIOD_S = 10.0  # how often changed passes go to the archive (and /api/passes without one)
# A command whose outcome is unknown is followed this long after it was sent: its report comes
# with the store's playback at a later pass; the agent's journal remembers 4096 commands.
FOLLOW_UNKNOWN_S = 2 * 86_400.0
STATUS_ASK_S = 60.0  # a COMMAND_STATUS question unanswered this long is forgotten (asked again next pass)
HEARD_LATELY_S = 5.0  # the agent was heard this recently: a question asked now is answered now
KEEP_PASS_VIEWS = 200  # passes /api/passes answers from memory when the server keeps no archive
FILE_CALL_TIMEOUT_S = 10.0  # a request handed to a link thread that does not answer in this long: 503
UPLOAD_BLOCK_BYTES = 1 << 20  # an upload is handed to a worker to write and hash this much at a time
# Logins check their password (argon2: tens of ms and MiB on purpose) in workers of their own, as many as auth
# lets run at once, and uploads write and sync in theirs (found in audit: both shared the event loop's default
# executor, so a few large uploads held every operator's login behind them). Both end with the server.
LOGIN_THREADS = PARALLEL_CHECKS
UPLOAD_THREADS = 4
MAX_MOVES_UNWRITTEN = 1000  # files kept aside whose archive records wait for a write the archive refused
# Stopping: each WebSocket has this long to take its close frame, then its connection is cut (found in audit:
# one client that stopped reading held stop() 10 s and left the port open); requests still running after the
# sockets have this long more.
WS_CLOSE_S = 2.0
SHUTDOWN_GRACE_S = 5.0
# What WebSockets may cost (found in audit: 100 sockets of one viewer that never read held 732 MB of page
# queues, and the link thread copied each packet to every one): at most this many per session and in all,
# more refused (429); a page whose queue has dropped for this long without being taken is closed (1008).
MAX_SOCKETS_PER_SESSION = 8
MAX_SOCKETS = 64
# A user's sessions together (found in review: a viewer logged in 8 times held all 64, and every operator's
# console got 429), and the last of MAX_SOCKETS kept for operators and admins: no viewer takes those.
MAX_SOCKETS_PER_USER = 16
SOCKETS_FOR_OPERATORS = 16
PAGE_STALL_S = 5.0
# Packet bytes in one push to a program (?raw=1; hex doubles them): well within the 16 MiB its client takes
# (ground.api). A larger batch goes as several pushes (found in audit: a burst, or a backlog behind a slow network,
# went as one message of 17 MB and the program's connection was closed, 1009 "message too big", all after it lost).
MAX_PUSH_RAW_BYTES = 4 << 20
SESSION_COOKIE = "sunlit_session"
ARCHIVE_LOCK = ".ground-server.lock"  # in the archive's directory: one server on an archive (and its SN state)
CSRF_HEADER = "X-CSRF-Token"
# Routes open without a session: the login page, its script and style, and the login itself.
PUBLIC_ROUTES = frozenset({("GET", "/login"), ("GET", "/static/login.js"), ("GET", "/static/style.css"),
                           ("GET", "/favicon.ico"), ("POST", "/api/login")})


# The request's session, put there by the guard (a typed key where aiohttp has them).
SESSION_KEY: Any = web.RequestKey("session", Session) if hasattr(web, "RequestKey") else "session"


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass(frozen=True)
class RawSample:
    """One packet for a program's WebSocket: the raw bytes, so a program decodes exactly what the
    server decoded (one codec) and keeps its own gap and restart checks. A packet that came
    played back goes in a playback container of the server's own (APID GROUND), so the
    program takes it as played back too, and its live gap count stays the agent's."""

    spacecraft: str
    received_s: float
    raw: bytes
    recv_ms: float

    points = 1
    sid = -1


# --- one spacecraft --------------------------------------------------------------------------


class SpacecraftLink:
    """One spacecraft: its link thread, command queue, latest values, events and alarms."""

    def __init__(self, config: SpacecraftConfig, server: GroundServer, link: str | GroundLink | None = None):
        self.id = config.id
        self.link_url = config.link
        self._link = link if link is not None else config.link
        self.tc_keys = config.tc_keys
        self.tm_auth = config.tm_auth
        self.sealing: SealingLink | None = None
        self._link_curve = config.link_curve  # CurveZMQ keys, loaded when the link opens (None: plain)
        self._curve_configured = config.zmq_server_public is not None
        self.server = server
        self.dictionary = server.dictionary
        self.queue = CommandQueue(self.id, server.config.timeouts, server.config.two_person,
                                  first_id=server.next_queue_id(self.id), unknown_after="sent")
        # Limits the operators changed for this spacecraft live in the archive (kept across restarts).
        limits = server.archive.limit_store(self.id) if server.archive is not None else LimitStore(None)
        self.alarms = AlarmManager(self.dictionary, limits)
        self.alarms.listeners.append(self._on_alarm)
        self.alarm_lock = threading.Lock()  # the alarms: observed by the link thread, acknowledged by the web
        self.client: GroundClient | None = None
        self.files: GroundFiles | None = None  # made and run by the link thread
        self.recorder: Any = None
        self.lock = threading.Lock()  # latest, events, params: written here, read by the web thread
        self.latest: dict[str, tuple[Any, float, float]] = {}  # name -> (value, packet time, received wall s)
        self.events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self.event_seq = 0  # the newest event's seq: each event is numbered, so a page takes each once
        self.params: dict[str, Any] = {}
        self.plan: dict[str, Any] | None = None  # the energy plan received last (plan_json), or None
        self.hk_time_s: float | None = None  # packet time of the newest housekeeping (played back: never older)
        self.packets = 0
        self.bad_packets = 0
        self.last_packet_wall_s: float | None = None
        self.connected = False
        self.link_error = ""
        self.internal_errors = 0
        # Files kept aside whose archived records the archive has not re-pointed yet: a failed move is written
        # again before the next file write (found in review: records the server no longer holds are not written
        # again, so one refused move left them naming the newer file); bounded, the oldest forgotten and said.
        self._moves: deque[tuple[str, str, str]] = deque()
        self._moves_lock = threading.Lock()
        self._limits_sent: dict[str, Any] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()  # packets taken in lately, to take each once
        self._recent_duplicates = 0
        self._next_refused_s = 0.0  # monotonic s: when the frames the link dropped may next be said
        self._params_time_s = -math.inf  # packet time of the parameter report taken last
        self._raw_seq = SequenceCounters()  # the server's own playback containers for programs (APID GROUND)
        self._next_ack_s = 0.0
        self.store_acks_held = 0  # acknowledgements not sent because the archive refused to write
        self.gaps_open = 0  # sequence counts still missing over the keys held (_completeness, each pass write)
        self._next_pass_write_s = 0.0
        self._pass_index = 0
        self._pass_views: OrderedDict[int, dict[str, Any]] = OrderedDict()  # pass index -> its last report
        self._inflight: dict[int, tuple[int, Any, int]] = {}  # cmd_id -> (entry id, CommandResult, reports shown)
        self._status_asks: dict[int, tuple[int, Any]] = {}  # COMMAND_STATUS cmd_id -> (entry id, CommandResult)
        self._thread: threading.Thread | None = None
        if server.archive is not None:  # a restarted server shows the last plan (stale) until the next comes
            try:
                kept = server.archive.latest_plan(self.id)
            except Exception as exc:  # noqa: BLE001 - the plan is news, not a reason not to start
                self.internal_errors += 1
                self.link_error = f"archive: last power plan not read: {type(exc).__name__}: {exc}"
            else:
                if kept is not None:
                    self.plan = plan_json(kept.plan, kept.received_s)

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        error: list[BaseException] = []
        self._thread = threading.Thread(target=self._main, args=(ready, error), name=f"sunlit-link-{self.id}",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            raise error[0]

    def _device_error(self) -> str:
        """A serial link's device that is not open now, and why (an audit: an unplugged adapter showed no error)."""
        link = self.client.link if self.client is not None else None
        link = link.inner if isinstance(link, SealingLink) else link
        if getattr(link, "is_open", True) is False:
            return f"serial device not open, tried again each second: {getattr(link, 'last_error', '')}"
        return ""

    def _curve_hint(self) -> str:
        """Why an agent may stay silent: one off loopback runs CurveZMQ by default (flight/link/curve.py)."""
        from flight.link.curve import curve_wanted

        if isinstance(self._link, str) and curve_wanted(self._link) and not self._curve_configured:
            return ("; an agent off loopback takes CurveZMQ clients only by default: set this spacecraft's "
                    "zmq_server_public and zmq_client_secret")
        return ""

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def close_queue(self) -> None:
        """At the server's stop, once the link thread has ended (nothing more can be sent): each entry not final
        ends (:meth:`CommandQueue.close`) and is filed, so the archive's history says what became of it."""
        if self._thread is not None and self._thread.is_alive():
            return  # still sending, perhaps: left as it is
        for entry in self.queue.close(time.time()):
            self.server.command_changed(entry)

    def _main(self, ready: threading.Event, error: list[BaseException]) -> None:
        try:
            link = self._link
            if isinstance(link, str):  # a serial adapter not there is tried again and shown, not fatal: the other
                # spacecraft's links go on (an audit: one unplugged adapter stopped the whole server starting)
                link = open_ground_link(link, curve=self._link_curve(), wait_for_device=True)
            if self.tc_keys is not None:  # the server seals: operators and their programs never hold keys
                archive = self.server.config.archive
                # The SNs used, and the highest telemetry SNs taken, in the server's own state (beside
                # the archive: writable under systemd, where the key file is not), else beside the key file.
                state = None if archive is None else Path(archive).parent
                link = self.sealing = SealingLink.from_key_file(
                    open_ground_link(link) if isinstance(link, str) else link, self.tc_keys, tm_auth=self.tm_auth,
                    sn_path=None if state is None else state / f"{self.id}.tc_sn",
                    tm_sn_path=None if state is None else state / f"{self.id}.tm_sn")
            # With an archive, a packet is acknowledged to the agent's store (which then deletes it) only
            # once the archive has committed it (found in audit: acknowledged from memory, lost in a crash).
            tracker = CompletenessTracker(pass_gap_s=self.server.pass_gap_s, hold_acks=self.server.archive is not None)
            self._resume_pass(tracker)
            client = GroundClient(link, self.dictionary, tracker=tracker)
            files_config = self.server.config.files
            self.files = GroundFiles(client, self.server.files_dir / self.id, rate_bps=files_config.rate_bps,
                                     los_s=files_config.los_s, send_command=self._file_command,
                                     on_change=self._file_changed, on_record=self._file_record,
                                     on_aside=self._file_aside)
        except Exception as exc:  # noqa: BLE001 - handed to start()'s caller
            if isinstance(link, GroundLink) and link is not self._link:  # opened here: not left open (a review)
                link.close()
            error.append(exc)
            ready.set()
            return
        client.listeners.append(self._take)
        if self.server.archive is not None:
            from ground.archive import ArchiveRecorder

            self.recorder = ArchiveRecorder(self.server.archive, spacecraft=self.id, collect_keys=True)
        self.client = client
        ready.set()
        stop = self.server.stopping
        try:
            deadline = time.monotonic() + self.server.connect_timeout_s
            while not self.connected and not stop.is_set() and time.monotonic() < deadline:
                try:  # in short tries, so that stopping need not wait for a silent agent
                    client.connect(timeout_s=min(0.5, self.server.connect_timeout_s))
                    self.connected = True
                except TimeoutError:
                    self.link_error = f"agent not answering a PUS ping yet (link {self.link_url}){self._curve_hint()}"
                except Exception as exc:  # noqa: BLE001 - a link that fails is shown, not fatal
                    self.link_error = f"{type(exc).__name__}: {exc}"
                    stop.wait(0.5)
                self._tick()  # approval and release windows run whether or not the agent answers
            while not stop.is_set():
                try:
                    self._service_queue(client)
                    client.poll(LINK_POLL_S)
                    self._line_refused(client)
                    self.files.service()
                    self._follow_reports(client)
                    self._follow_status(client)
                    self._completeness(client)
                except Exception as exc:  # noqa: BLE001 - the server keeps running; status shows why
                    self.internal_errors += 1
                    self.link_error = f"{type(exc).__name__}: {exc}"
                    stop.wait(0.5)
                    self._tick()
        finally:
            try:
                if self.recorder is not None:  # what the archive had already is counted before the last write
                    self.recorder.flush()
                    self._settle_keys(client)
                self._write_passes(client)
            except Exception as exc:  # noqa: BLE001 - stopping goes on; the rows are as last written
                print(f"sunlit-ground server: {self.id}: passes not archived at stop: {exc}", file=sys.stderr)
            if self.recorder is not None:
                self.recorder.close()
            self.files.close()
            client.close()

    @property
    def duplicates(self) -> int:
        """Packets dropped because the ground had them: by the client (played back again, a
        reply's stream copy, a resend), here (the same bytes again), and by the archive (had
        before a restart of this server)."""
        client = self.client
        if client is None:
            return self._recent_duplicates
        return self._recent_duplicates + client.duplicates + client.tracker.archived_copies

    @property
    def played_back(self) -> int:
        """New packets taken out of playback containers: not those the archive already had."""
        client = self.client
        return client.played_back - client.tracker.archived_copies_played_back if client is not None else 0

    # --- file transfer (ground.files): its commands through the queue, its news out -------

    def _file_command(self, name: str, args: dict[str, Any], who: str) -> Callable[[], CommandOutcome | None]:
        """A request's command (FILE_DOWNLINK, FILE_CANCEL) through the queue, as the operator's."""
        entry = self.server.submit(self.id, name, args, who or "ground", confirm=True)

        def poll() -> CommandOutcome | None:
            now = self.queue.get(entry.id)
            return CommandOutcome(now.state.final, now.state is State.COMPLETED, dict(now.result or {}),
                                  now.outcome)

        return poll

    def _file_changed(self, record: dict[str, Any]) -> None:
        self.server.publish({"kind": "file", "spacecraft": self.id, "transfer": json_safe(record)})

    def _file_record(self, record: dict[str, Any]) -> None:
        def write(archive: Any) -> None:
            try:
                self._write_moves(archive)  # the moves before it first: its row may be the file's new place
            finally:  # written whatever became of them (a refused move is said, and tried again)
                archive.record_file_transfer(record, spacecraft=self.id)

        self._archive_write(write, f"file transfer {record.get('id')}")

    def _file_aside(self, name: str, new_name: str, sha256: str) -> None:
        if self.server.archive is None:
            return  # no archive: no records to follow the file (found in review: held, and said forgotten)
        with self._moves_lock:
            if len(self._moves) >= MAX_MOVES_UNWRITTEN:
                lost = self._moves.popleft()
                self.link_error = f"archive: file {lost[0]} kept as {lost[1]} forgotten, not written"
            self._moves.append((name, new_name, sha256))
        self._archive_write(self._write_moves, f"file {name} kept as {new_name}")

    def _write_moves(self, archive: Any) -> None:
        """The moves not written yet, in order (on the archive's worker); one refused stays, with those after it."""
        while True:
            with self._moves_lock:
                if not self._moves:
                    return
                move = self._moves[0]
            archive.move_file_transfers(*move, spacecraft=self.id)
            with self._moves_lock:
                if self._moves and self._moves[0] is move:  # not forgotten meanwhile at the bound (a review)
                    self._moves.popleft()

    def flush_moves(self) -> None:
        """At the server's stop: the moves still unwritten, tried once more; those refused again are said (stderr),
        since nothing keeps them after the stop."""
        def flush(archive: Any) -> None:
            try:
                self._write_moves(archive)
            except Exception as exc:  # noqa: BLE001 - said: the stop goes on
                with self._moves_lock:
                    lost = list(self._moves)
                print(f"sunlit-ground server: {self.id}: the archive refused to re-point the records of "
                      f"{len(lost)} files kept aside ({', '.join(f'{a} as {b}' for a, b, _ in lost[:5])}): "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)

        if self.server.archive is not None and self._moves:
            self._archive_write(flush, "files kept aside")

    def _archive_write(self, write: Callable[[Any], None], what: str) -> None:
        """Run ``write(archive)`` on the archive's worker, in order with the rest; a failure is
        shown (``link_error``) and counted, and the next change writes the row again."""
        archive = self.server.archive
        if archive is None:
            return

        def run() -> None:
            try:
                write(archive)
            except Exception as exc:  # noqa: BLE001 - shown; the next change writes it again
                self.internal_errors += 1
                self.link_error = f"archive: {what} not written: {type(exc).__name__}: {exc}"

        try:
            self.server.archive_pool.submit(run)
        except RuntimeError:  # stopping: the pool is closed
            pass

    # --- the agent's packet store: acknowledgements, passes ------------------------------

    def _completeness(self, client: GroundClient) -> None:
        """Acknowledge what the archive holds, file the passes, and at a new pass ask about unknown
        outcomes. While the archive refuses to write nothing is acknowledged, not even "listening"
        (found in audit): its playback would only pile up in memory; the agent keeps it all."""
        now = time.monotonic()
        self._settle_keys(client)
        if self.connected and now >= self._next_ack_s:
            self._next_ack_s = now + STORE_ACK_PERIOD_S
            if self.recorder is not None and self.recorder.failing:
                self.store_acks_held += 1
            else:
                client.acknowledge_store()
        index = client.tracker.pass_index
        if index != self._pass_index:
            self._pass_index = index
            self._ask_unknown(client)  # contact again after a silence: what became of them?
            self._next_pass_write_s = 0.0
        if now >= self._next_pass_write_s:
            self._next_pass_write_s = now + PASS_WRITE_PERIOD_S
            self._write_passes(client)
            # Still missing, not lost once: playback fills gaps (found in audit: the live link's count of losses was
            # shown as missing, and the console warned for ever after any loss of signal). Past the keys held, unknown.
            tracker = client.tracker
            self.gaps_open = tracker.missing(from_ms=tracker.known_from_ms)

    def _settle_keys(self, client: GroundClient) -> None:
        """Tell the tracker what the archive committed (to acknowledge), had already (a duplicate, not
        new) and dropped (new again when played back)."""
        if self.recorder is not None:
            committed, lost, copies = self.recorder.take_keys()
            client.tracker.committed(committed, copies)
            client.tracker.lost(lost)

    def _resume_pass(self, tracker: CompletenessTracker) -> None:
        """Go on with the pass the archive recorded last (``CompletenessTracker.resume``): a server
        restarted mid-pass (an upgrade, a crash) that hears the link within ``pass_gap_s`` of that
        pass's last reception continues it, not a second pass (found in review). One that cannot
        be read or does not hold together is said and counted, and counting starts afresh."""
        archive = self.server.archive
        if archive is None:
            return
        try:
            found = archive.last_pass(self.id, max_keys=tracker.max_keys, horizon_s=tracker.horizon_ms / 1000.0)
            if found is not None:
                tracker.resume(*found)
        except Exception as exc:  # noqa: BLE001 - the passes are bookkeeping, not a reason not to start
            self.internal_errors += 1
            self.link_error = f"archive: last pass not resumed: {type(exc).__name__}: {exc}"
            return
        self._pass_index = tracker.pass_index  # the same pass, not contact after a silence

    def _write_passes(self, client: GroundClient) -> None:
        changed = client.tracker.take_changed(time.time())
        if not changed:
            return
        with self.lock:
            for report in changed:
                self._pass_views[report.index] = report.to_json()
                self._pass_views.move_to_end(report.index)
            while len(self._pass_views) > KEEP_PASS_VIEWS:
                self._pass_views.popitem(last=False)
        self._archive_write(lambda archive: archive.record_passes(changed, spacecraft=self.id), "passes")

    def pass_views(self) -> list[dict[str, Any]]:
        """The passes this server counted since it started, oldest first (``open``: still going)."""
        with self.lock:
            views = [dict(v) for v in self._pass_views.values()]
        gap = self.client.tracker.pass_gap_s if self.client is not None else 0.0
        now = time.time()
        for v in views:
            v["spacecraft"] = self.id
            v["open"] = v["index"] == self._pass_index and now - v["end_s"] <= gap
        return views

    def _ask_unknown(self, client: GroundClient) -> None:
        """Ask the agent about each command whose outcome is unknown (see :meth:`_ask`)."""
        for entry in self.queue.in_flight():
            if entry.state is State.UNKNOWN and entry.cmd_id is not None:
                self._ask(client, entry)

    def _ask(self, client: GroundClient, entry: Any) -> None:
        """One the agent acknowledged: the same cmd_id again (answered from its cache or journal,
        never run twice). One with no report at all: COMMAND_STATUS, which runs nothing (the same
        packet would run it now, late, if it never arrived); its answer settles the entry. A
        read-only command (NOOP, GET_PARAM...): the same cmd_id again either way. The agent does
        not journal it, so after a restart COMMAND_STATUS would say it never arrived when it may
        have run; sent again, it is answered from the cache or run, which changes nothing."""
        now = time.time()
        command = self.dictionary.command_by_name.get(entry.name)
        read_only = command is not None and command.read_only
        if read_only or any(s.get("agent") for s in entry.stages):
            if client.ask(entry.cmd_id):
                self.server.command_changed(self.queue.asked(entry.id, now, read_only=read_only))
            return
        if any(e == entry.id for e, _r in self._status_asks.values()):
            return  # asked already; the answer is on its way
        try:
            query = client.submit("COMMAND_STATUS", {"cmd_id": entry.cmd_id})
        except (ArgumentError, ValueError):
            return
        self._status_asks[query.cmd_id] = (entry.id, query)
        self.server.command_changed(self.queue.asked(entry.id, now))

    def _follow_status(self, client: GroundClient) -> None:
        """Apply the agent's COMMAND_STATUS answers; forget a question unanswered for long."""
        now = time.time()
        for query_id, (entry_id, query) in list(self._status_asks.items()):
            if query.completed:
                try:
                    changed = self.queue.settle_from_status(entry_id, query.result, now)
                except QueueError:
                    changed = None
                if changed is not None:
                    self.server.command_changed(changed)
            if query.final or now - query.sent_at_s > STATUS_ASK_S:
                client.forget(query_id)
                del self._status_asks[query_id]

    def _heard_lately(self) -> bool:
        return self.last_packet_wall_s is not None and time.time() - self.last_packet_wall_s <= HEARD_LATELY_S

    # --- commands -------------------------------------------------------------------------

    def _service_queue(self, client: GroundClient) -> None:
        """Send what the queue releases, once the agent has said which dictionary it speaks (its
        housekeeping carries the hash within a period); until then commands wait in the queue."""
        now = time.time()
        entry = self.queue.next_to_send(now) if client.agent_dict_hash is not None else None
        if entry is not None:
            self.server.command_changed(entry)
            agent_hash = client.agent_dict_hash
            if agent_hash != self.dictionary.version_hash:
                self.server.command_changed(self.queue.send_failed(
                    entry.id, "DICTIONARY_MISMATCH",
                    f"the agent's dictionary {agent_hash} is not the server's {self.dictionary.version_hash}", now))
            else:
                try:
                    result = client.submit(entry.name, entry.args, ack_flags=entry.ask_flags)
                except (ArgumentError, ValueError) as exc:  # checked at submit: only a dictionary change gets here
                    self.server.command_changed(self.queue.send_failed(entry.id, "BAD_ARGUMENTS", str(exc), now))
                else:
                    self._inflight[result.cmd_id] = (entry.id, result, 0)
                    self.server.command_changed(self.queue.sent(entry.id, result.cmd_id, result.attempts, now,
                                                                [s.value for s in ack_stages(result.ack_flags)]))
        client.retry_due()
        self._tick()

    def _tick(self) -> None:
        now = time.time()
        for ended in self.queue.tick(now):
            self.server.command_changed(ended)
            client = self.client
            if ended.state is State.UNKNOWN and client is not None and ended.cmd_id is not None and self._heard_lately():
                self._ask(client, ended)

    def _follow_reports(self, client: GroundClient) -> None:
        """Hand each new PUS 1 report to the queue. A command is followed until its last report
        (a completion or a failure), even after its entry timed out: a late report is news; one
        whose outcome is unknown, for ``FOLLOW_UNKNOWN_S`` (its report may come played back); then,
        or beyond ``MAX_FOLLOWED``, it is let go and its entry, if not final, ends ``unresolved``."""
        now = time.time()
        for cmd_id, (entry_id, result, shown) in list(self._inflight.items()):
            for rep in result.reports[shown:]:
                changed = self.queue.report(cmd_id, rep.stage.value, rep.success,
                                            "" if rep.success else rep.code.name, rep.reason, rep.result, now)
                if changed is not None:
                    self.server.command_changed(changed)
            self._inflight[cmd_id] = (entry_id, result, len(result.reports))
            try:
                entry = self.queue.get(entry_id)
                unknown = entry.state is State.UNKNOWN
                # Its stage window still open (a completion window configured past FOLLOW_AFTER_SEND_S, for a long
                # job): followed till it passes (found in audit: let go `unresolved` at 3600 s, its window 7200 s)
                waiting = not entry.state.final and entry.deadline_s is not None and now < entry.deadline_s
            except QueueError:
                unknown = waiting = False
            limit_s = FOLLOW_UNKNOWN_S if unknown else FOLLOW_AFTER_SEND_S
            if result.final or (now - result.sent_at_s > limit_s and not waiting):
                self._let_go(client, cmd_id, now, f"no outcome in {limit_s:g} s")
        while len(self._inflight) > MAX_FOLLOWED:  # a bound, whatever the agent does not answer
            self._let_go(client, next(iter(self._inflight)), now,
                         f"the oldest of more than {MAX_FOLLOWED} commands awaiting their outcome")

    def _let_go(self, client: GroundClient, cmd_id: int, now: float, reason: str) -> None:
        """Stop following a command; an entry that is not final then ends ``unresolved`` (found in
        audit: it stayed ``unknown`` for ever, in memory and the archive, never asked again or trimmed)."""
        entry_id, _result, _shown = self._inflight.pop(cmd_id)
        client.forget(cmd_id)
        changed = self.queue.let_go(entry_id, now, reason)
        if changed is not None:
            self.server.command_changed(changed)

    # --- telemetry ------------------------------------------------------------------------

    def _take(self, item: Received) -> None:
        """Every packet the client takes in (in the link thread), once: a verification report
        arrives both as the reply to a command and on the telemetry stream, byte for byte the
        same, and is archived and pushed once. Never raises."""
        raw = bytes(item.raw)
        if raw in self._recent:
            self._recent_duplicates += 1
            return
        self._recent[raw] = None
        if len(self._recent) > RECENT_PACKETS:
            self._recent.popitem(last=False)
        if self.recorder is not None:
            self.recorder(item)
        try:
            self._fan_out(item)
        except Exception as exc:  # noqa: BLE001 - counted and shown on every page's status line
            self.internal_errors += 1
            self.link_error = f"server error on a packet: {type(exc).__name__}: {exc}"

    def _line_refused(self, client: GroundClient) -> None:
        """Frames the link dropped before the packet codec (a serial line's noise, a frame cut short): counted in
        ``bad_packets`` and said as a bad packet is, with how many, at most once per ``REFUSED_SAY_S``. Found in
        audit: a serial line dropping frames showed ``bad_packets`` 0 and said nothing; only the link counted them."""
        take = getattr(client.link, "take_refused", None)  # links that drop no frames have none
        now = time.monotonic()
        if take is None or now < self._next_refused_s:
            return
        refused = take()
        if refused.count:
            self._next_refused_s = now + REFUSED_SAY_S
            self.bad_packets += refused.count
            self._ground_event("GROUND_BAD_PACKET", "WARNING_LO",
                               f"{refused.count} frame(s) dropped by the link before decoding, not archived: "
                               f"{refused.last}")

    def _fan_out(self, item: Received) -> None:
        now_ms = monotonic_ms()
        wall = time.time()
        self.packets += 1
        self.last_packet_wall_s = wall
        raw = bytes(item.raw)
        if item.played_back:
            raw = pack_tm(Apid.GROUND, self._raw_seq.next(Apid.GROUND), Service.STORAGE, Subtype.PLAYBACK,
                          msgpack.packb([raw], use_bin_type=True), wall)
        self.server.publish_raw(RawSample(self.id, wall, raw, now_ms))
        if item.packet is not None:
            self.connected = True
            if self.link_error.startswith("agent not answering"):
                self.link_error = ""
        if item.error:
            self.bad_packets += 1
            self._ground_event("GROUND_BAD_PACKET", "WARNING_LO", f"undecodable packet, archived raw: {item.error}")
        if item.gap:
            self._ground_event("GROUND_GAP", "WARNING_LO",
                               f"{item.gap} packet(s) missing before APID {item.packet.apid} seq {item.packet.seq_count}")
        record = item.record
        if isinstance(record, HkRecord):
            channels = record.packet.channels
            values = tuple(json_safe(record.values.get(name)) for name in channels)
            with self.lock:
                # A played-back packet is history (archived); it is news only if nothing newer came.
                if item.played_back and any(self.latest.get(name, (None, -math.inf))[1] > record.time_s
                                            for name in channels):
                    return
                for name, value in zip(channels, values):
                    self.latest[name] = (value, record.time_s, wall)
                # Found in audit: one played back of a type not heard live since set it back to its own older
                # time (a plan's staleness goes by it); a live one is the agent's present, whatever its clock did.
                if not item.played_back or self.hk_time_s is None or record.time_s > self.hk_time_s:
                    self.hk_time_s = record.time_s
            self.server.publish_sample(self.id, Sample(record.packet.sid, record.time_s, values, now_ms))
            with self.alarm_lock:
                for name in channels:
                    self.alarms.observe(name, record.values.get(name), record.time_s)
        elif isinstance(record, EventRecord):
            try:
                text = record.text
            except Exception:  # noqa: BLE001 - a malformed event is still shown
                text = f"{record.event.format} {record.args}"
            message = {"kind": "event", "time_s": record.time_s, "name": record.event.name,
                       "severity": record.event.severity.name, "text": text, "args": json_safe(record.args)}
            if item.played_back:
                message["played_back"] = True  # late news: it happened at time_s, out of contact
            self._event(message)
        elif isinstance(record, ParamRecord):
            if item.played_back and record.time_s < self._params_time_s:
                return
            self._params_time_s = max(self._params_time_s, record.time_s)
            with self.lock:
                self.params.update(record.values)
            with self.alarm_lock:
                self.alarms.observe_parameters(record.values)
                following = {ch.name: self.alarms.limits(ch.name).to_json() for ch in self.dictionary.channels
                             if ch.limits.params()}
            if following != self._limits_sent:  # the report comes every few seconds; changes are rare
                self._limits_sent = following
                self.server.publish({"kind": "limits", "spacecraft": self.id, "limits": following})
        elif isinstance(record, PlanRecord):
            plan = plan_json(record, wall)
            with self.lock:
                if item.played_back and self.plan is not None and self.plan["time_s"] > record.time_s:
                    return
                self.plan = plan
            self.server.publish({"kind": "plan", "spacecraft": self.id, "plan": plan})

    def _ground_event(self, name: str, severity: str, text: str) -> None:
        self._event({"kind": "event", "time_s": time.time(), "name": name, "severity": severity, "text": text,
                     "args": {}, "ground": True})

    def _event(self, message: dict[str, Any]) -> None:
        """Number the event (``seq``, per spacecraft and server run), keep it and push it, all under the lock the
        snapshot is read under: an event numbered at or below a snapshot's ``events_seq`` is one it holds (or one
        older than its 200), so a page registered before its snapshot was read drops those pushes (GND-020)."""
        message["spacecraft"] = self.id
        with self.lock:
            self.event_seq += 1
            message["seq"] = self.event_seq
            self.events.append(message)
            self.server.publish(message)  # in the lock: every page's queue takes this spacecraft's events in seq order

    def _on_alarm(self, what: str, alarm: Alarm) -> None:
        self.server.publish({"kind": "alarm", "spacecraft": self.id, "what": what, "alarm": alarm_json(alarm)})

    # --- views ----------------------------------------------------------------------------

    def stale_after_s(self) -> float:
        """How old a value may be before it is shown stale: a few of the agent's housekeeping
        periods, as it last reported ``hk_period_s`` (the dictionary's default until then)."""
        with self.lock:
            period = self.params.get("hk_period_s")
        if not isinstance(period, (int, float)) or not math.isfinite(period) or period <= 0:
            period = self.dictionary.parameter_by_name["hk_period_s"].default
        return max(STALE_PERIODS * float(period), 2.0)

    def plan_view(self) -> dict[str, Any]:
        """The latest plan and whether it is stale: made more than ``PLAN_STALE_S`` before the
        newest housekeeping's packet time (both on the agent's clock, so a ground clock that is
        off, or simulated time, does not matter), or no housekeeping yet to judge it by (a plan
        kept from before a restart); ``available`` false, with the reason, if none came."""
        with self.lock:
            plan, hk_time = self.plan, self.hk_time_s
        if plan is None:
            return {"spacecraft": self.id, "available": False,
                    "reason": f"no power plan received from {self.id} yet: the agent sends one each time it plans, "
                              "which takes an orbit (TLE), an [array] model in its configuration and a battery "
                              "charge reading"}
        age = None if hk_time is None else hk_time - plan["time_s"]
        return json_safe({"spacecraft": self.id, "available": True, "plan": plan, "telemetry_time_s": hk_time,
                          "age_s": age, "stale_after_s": PLAN_STALE_S,
                          "stale": age is None or age > PLAN_STALE_S})

    def status(self) -> dict[str, Any]:
        client = self.client
        now = time.time()
        agent_hash = client.agent_dict_hash if client else None
        silent = None if self.last_packet_wall_s is None else now - self.last_packet_wall_s
        return {
            "spacecraft": self.id,
            "link": self.link_url,
            "connected": self.connected,
            "silent_s": silent,
            "stale_after_s": self.stale_after_s(),
            "link_silent": silent is None or silent > self.stale_after_s(),
            "link_error": self._device_error() or self.link_error or (
                f"a packet not taken in: {client.last_internal_error}"
                if client is not None and client.last_internal_error else ""),
            "packets": self.packets,
            # sealed telemetry's line damage too (SealingLink counts it: never decoded here)
            "bad_packets": self.bad_packets + (self.sealing.tm_line_damaged if self.sealing else 0),
            "tm_auth": self.tm_auth,
            "tm_auth_failed": self.sealing.tm_auth_failed if self.sealing else 0,
            "tm_replayed": self.sealing.tm_replayed if self.sealing else 0,
            "key_error": self.sealing.key_error if self.sealing else None,
            "sn_error": self.sealing.sn_error if self.sealing else None,
            "tm_sn_error": self.sealing.tm_sn_error if self.sealing else None,
            "key_warning": self.sealing.key_warning if self.sealing else None,
            "duplicates": self.duplicates,
            "gaps_missing": self.gaps_open,  # sequence counts still missing, as of the last pass write
            "lost_live": client.gaps.missing if client else 0,  # counts the live link skipped (playback may fill them)
            "played_back": self.played_back,
            "store_acks": client.store_acks if client else 0,
            # counted where nobody saw them (an audit): acknowledgements the link refused, and the completeness
            # tracker's keys never acknowledged or let go (the agent plays those again; gaps before known_from_ms
            # are not counted)
            "store_acks_refused": client.store_acks_refused if client else 0,
            "store_acks_held": self.store_acks_held,
            "acks_dropped": client.tracker.acks_dropped if client else 0,
            "keys_forgotten": client.tracker.forgotten if client else 0,
            "pass": self._pass_summary(),
            "agent_restarts": client.agent_restarts if client else 0,
            "agent_dict_hash": agent_hash,
            "dict_match": None if agent_hash is None else agent_hash == self.dictionary.version_hash,
            "internal_errors": self.internal_errors + (client.internal_errors if client is not None else 0),
            "archive": self.recorder.statistics().__dict__ if self.recorder is not None else None,
            "queue": self.queue.status(),
            "files": self.files.status() if self.files is not None else None,
        }

    def _pass_summary(self) -> dict[str, Any] | None:
        """The current pass as last counted (``PASS_WRITE_PERIOD_S``): received, played back,
        duplicates, missing."""
        with self.lock:
            last = next(reversed(self._pass_views.values()), None)
        if last is None:
            return None
        return {k: last[k] for k in ("index", "start_s", "end_s", "received", "played_back", "duplicates", "missing")}

    def snapshot(self) -> dict[str, Any]:
        """Everything a page or program needs about this spacecraft when it (re)connects."""
        now = time.time()
        stale_after = self.stale_after_s()
        with self.lock:
            latest = {name: {"value": v, "time_s": t, "age_s": now - seen, "stale": now - seen > stale_after}
                      for name, (v, t, seen) in self.latest.items()}
            events = list(self.events)[-200:]
            events_seq = self.event_seq
            params = dict(self.params)
            plan = self.plan
        with self.alarm_lock:
            alarms = [alarm_json(a) for a in list(self.alarms.alarms.values())]
        return json_safe({
            "spacecraft": self.id,
            "latest": latest,
            "events": events,
            "events_seq": events_seq,  # every event numbered up to this is in the snapshot, or older than its 200
            "alarms": alarms,
            "commands": [self.queue.snapshot(e) for e in self.queue.entries(last=100)],
            "parameters": params,
            "plan": plan,
            "plan_stale_after_s": PLAN_STALE_S,
            "files": self.files.snapshot() if self.files is not None else [],
            "status": self.status(),
        })


def plan_json(plan: PlanRecord, received_s: float) -> dict[str, Any]:
    """A plan as the API and pages see it: the record's plain data (``time_s`` its packet time)
    and when the ground received it."""
    return json_safe({**plan.to_json(), "received_s": received_s})


def alarm_json(alarm: Alarm) -> dict[str, Any]:
    out = json_safe(alarm.as_dict())
    out["status"] = "cleared" if alarm.cleared else ("acknowledged" if alarm.acknowledged else "active")
    return out


# --- the server ------------------------------------------------------------------------------


class GroundServer:
    """The ground server; ``start()`` runs it in background threads, ``stop()`` ends it.

    ``links`` may hand a spacecraft an already open link (a memory link in tests) instead of
    its URL.
    """

    def __init__(
        self,
        config: ServerConfig,
        users: UserStore,
        *,
        dictionary: Dictionary = DICTIONARY,
        links: dict[str, GroundLink] | None = None,
        batch_interval_s: float = DEFAULT_BATCH_INTERVAL_S,
        queue_points: int = DEFAULT_QUEUE_POINTS,
        connect_timeout_s: float = 3.0,
        pass_gap_s: float = PASS_GAP_S,
        max_sockets: int = MAX_SOCKETS,
        max_sockets_per_session: int = MAX_SOCKETS_PER_SESSION,
        page_stall_s: float = PAGE_STALL_S,
    ):
        """``pass_gap_s``: a silence this long on a link ends a pass (``ground.completeness``);
        ``max_sockets``, ``max_sockets_per_session``, ``page_stall_s``: what WebSockets may cost (above)."""
        if batch_interval_s < 0:
            raise ValueError(f"batch_interval_s must be >= 0, got {batch_interval_s}")
        self.config = config
        self.dictionary = dictionary
        self.users = users
        self.sessions = Sessions(users, idle_s=config.session_idle_s)
        self.batch_interval_s = batch_interval_s
        self.queue_points = queue_points
        self.connect_timeout_s = connect_timeout_s
        self.pass_gap_s = float(pass_gap_s)
        self.max_sockets = max_sockets
        self.max_sockets_per_session = max_sockets_per_session
        self.page_stall_s = page_stall_s
        self.host = config.host
        self.port = config.port
        self.lag = LagTracker()
        self.wall_minus_mono_ms = time.time() * 1000.0 - monotonic_ms()
        self.stopping = threading.Event()
        self.archive: Any = None
        self._archive_lock: Any = None  # the archive directory's DirectoryLock, held from start to stop
        self.retention: Any = None
        self.retention_result: dict[str, Any] = {}
        self._links_given = links or {}
        self.files_dir = Path(".")  # set at start: [files] dir, beside the archive, or a temporary one
        self._files_temp: str | None = None
        self.links: dict[str, SpacecraftLink] = {}
        self._pages: tuple[tuple[ClientQueue, str | None, bool], ...] = ()  # (queue, spacecraft or all, raw)
        self._pages_lock = threading.Lock()
        self._changed_lock = threading.Lock()
        self._archive_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sunlit-archive")
        self.archive_pool = self._archive_pool  # the link threads file passes through it too
        self._login_pool = ThreadPoolExecutor(max_workers=LOGIN_THREADS, thread_name_prefix="sunlit-login")
        self._upload_pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="sunlit-upload")
        self._web_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: dict[web.WebSocketResponse, _Socket] = {}  # each open WebSocket (the web thread's)
        self._socket_counts: dict[int, int] = {}  # id of a session -> its WebSockets open (or opening)
        self._socket_users: dict[str, int] = {}  # a user -> the WebSockets of all their sessions
        self._limits_lock = asyncio.Lock()  # one limits change at a time: each merges with the one before
        self._closing: set[asyncio.Task] = set()  # stalled pages being closed (a reference keeps each task)
        self.sockets_refused = 0  # WebSockets refused: too many for their session or the server
        self.pages_closed_stalled = 0  # WebSockets closed because their client stopped reading
        self._tasks: list[asyncio.Task] = []
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.internal_errors = 0
        self.page_messages_refused = 0  # a page's reports that were not a drawn report the server reads
        self.url = ""
        self.allowed_hosts: frozenset[str] = frozenset()
        self.route_roles: dict[tuple[str, str], Role | None] = {}  # (method, path) -> least role; None: public

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> GroundServer:
        """Open the archive, bind the port, start every spacecraft's link; return once serving."""
        if self._web_thread is not None:
            raise RuntimeError("GroundServer already started; make a new one to serve again")
        try:
            if self.config.archive is not None:
                from ground.archive import Archive, RetentionPolicy

                self._open_archive_dir(Path(self.config.archive))
                self.archive = Archive(self.config.archive, self.dictionary)
                self.retention = RetentionPolicy.from_mapping(self.config.retention)
            self._web_thread = threading.Thread(target=self._web_main, name="sunlit-web", daemon=True)
            self._web_thread.start()
            self._started.wait()
            if self._start_error is not None:
                raise self._start_error
            if self.config.files.dir is not None:
                self.files_dir = self.config.files.dir
            elif self.config.archive is not None:
                self.files_dir = Path(self.config.archive).parent / "files"
            else:  # keeping nothing: the file areas go when the server stops
                self._files_temp = tempfile.mkdtemp(prefix="sunlit-files-")
                self.files_dir = Path(self._files_temp)
            try:  # here, so the error names the key (an audit: "[Errno 2] No such file or directory", nothing more)
                self.files_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                from ground.server_config import ServerConfigError

                key = "files.dir" if self.config.files.dir is not None else "files.dir (default: files/ beside the archive)"
                raise ServerConfigError(f"{key}: {self.files_dir}: {exc.strerror or exc}") from None
            for sc in self.config.spacecraft:
                link = SpacecraftLink(sc, self, self._links_given.get(sc.id))
                self.links[sc.id] = link
                link.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _open_archive_dir(self, archive: Path) -> None:
        """Hold the archive's directory for this server alone (``ARCHIVE_LOCK``): beside the archive are the
        telecommand SNs used (``ID.tc_sn``) and the file areas, and queue ids go on from the archive's history.
        Found in audit: a second server on the same archive started, numbered its commands from the same id and
        wrote over the first's history (alice's NOOP filed as bob's), and would have sealed with the same SNs.
        A directory that cannot be made is said naming the key (an audit: "[Errno 17] File exists", nothing more)."""
        from flight.storage import DirectoryBusy, DirectoryLock
        from ground.server_config import ServerConfigError

        try:
            self._archive_lock = DirectoryLock(archive.parent, ARCHIVE_LOCK, "ground server")
        except DirectoryBusy as exc:
            raise DirectoryBusy(f"server.archive: {archive}: {exc}") from None
        except OSError as exc:
            raise ServerConfigError(f"server.archive: {archive}: its directory cannot be used: "
                                    f"{exc.strerror or exc}") from None

    def stop(self) -> None:
        """Close every page, stop serving, stop the links, write what the archive still holds."""
        self.stopping.set()
        if self._loop is not None and self._web_thread is not None and self._web_thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(
                    WS_CLOSE_S + SHUTDOWN_GRACE_S + 5.0)
            except Exception as exc:  # noqa: BLE001 - stopping must go on whatever the web side does
                with contextlib.suppress(OSError):  # its terminal closed: the stop goes on unsaid
                    print(f"sunlit-ground server: web shutdown: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._web_thread.join(10.0)
        for link in self.links.values():
            link.join(10.0)
            link.close_queue()
        for pool in (self._login_pool, self._upload_pool):  # what is queued has no request left to answer
            pool.shutdown(wait=True, cancel_futures=True)
        for link in self.links.values():  # a refused move is tried once more: nothing holds it after the stop
            link.flush_moves()
        self._archive_pool.shutdown(wait=True, cancel_futures=False)
        if self.archive is not None:
            self.archive.close()
            self.archive = None
        if self._archive_lock is not None:  # after the last write: the next server may start now
            self._archive_lock.release()
            self._archive_lock = None
        if self._files_temp is not None:
            shutil.rmtree(self._files_temp, ignore_errors=True)
            self._files_temp = None

    def __enter__(self) -> GroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_queue_id(self, spacecraft: str) -> int:
        """Queue ids go on from the archive's command history, so they stay unique across restarts."""
        return self.archive.next_queue_id(spacecraft=spacecraft) if self.archive is not None else 1

    # --- fan-out (called from link threads; never blocks on a page) ----------------------

    def publish(self, message: dict[str, Any]) -> None:
        sc = message.get("spacecraft")
        for page, wants, _raw in self._pages:
            if wants is None or sc is None or wants == sc:
                page.put_control(message)

    def publish_sample(self, spacecraft: str, sample: Sample) -> None:
        for page, wants, raw in self._pages:
            if not raw and (wants is None or wants == spacecraft):
                page.put_sample(_Tagged(spacecraft, sample))

    def publish_raw(self, sample: RawSample) -> None:
        for page, wants, raw in self._pages:
            if raw and (wants is None or wants == sample.spacecraft):
                page.put_sample(sample)

    def command_changed(self, entry: Entry) -> None:
        """A queue entry moved: tell every page, and file it in the archive's history.

        Both threads change entries (the web thread: submit, approve; the link thread: sent,
        reports); one lock around snapshot, push and archive hand-over keeps every client and
        the history in the order the changes happened, each seeing a whole state."""
        with self._changed_lock:
            snap = self.links[entry.spacecraft].queue.snapshot(entry)
            self.publish({"kind": "command", "spacecraft": entry.spacecraft, "command": json_safe(snap)})
            if self.archive is not None:
                self._archive_command(snap, dict(entry.args))

    def _archive_command(self, snap: dict[str, Any], args: dict[str, Any]) -> None:
        """``args`` as given: the snapshot's carry a number past JavaScript's range as text (Entry.to_json)."""
        archive = self.archive
        row = dict(name=snap["name"], args=args,
                   cmd_id=None if snap["cmd_id"] is None else int(snap["cmd_id"]), who=snap["who"],
                   sent_s=next((s["at_s"] for s in snap["stages"] if s["stage"] == "sent"), None),
                   outcome=snap["outcome"], spacecraft=snap["spacecraft"], queue_id=snap["id"],
                   approved_by=snap["approved_by"], stages=snap["stages"], state=snap["state"],
                   queued_s=snap["queued_s"])

        def write() -> None:
            try:
                archive.record_command(row.pop("name"), row.pop("args"), row.pop("cmd_id"), row.pop("who"),
                                       row.pop("sent_s"), row.pop("outcome"), (), **row)
            except Exception as exc:  # noqa: BLE001 - the command went; failing to file it is shown
                self.internal_errors += 1
                print(f"sunlit-ground server: command {snap['id']} not archived: {exc}", file=sys.stderr)

        try:
            self._archive_pool.submit(write)
        except RuntimeError:  # stopping: the pool is closed
            pass

    # --- views ---------------------------------------------------------------------------

    def link_for(self, spacecraft: Any) -> SpacecraftLink:
        if spacecraft is not None and not isinstance(spacecraft, str):
            raise web.HTTPBadRequest(text=_text({"error": "spacecraft: a spacecraft id (text)"}),
                                     content_type="application/json")
        if spacecraft is None or spacecraft == "":
            if len(self.links) == 1:
                return next(iter(self.links.values()))
            raise web.HTTPBadRequest(text=_text({"error": f"name the spacecraft: one of {', '.join(self.links)}"}),
                                     content_type="application/json")
        link = self.links.get(spacecraft)
        if link is None:
            shown = repr(spacecraft[:64]) + ("..." if len(spacecraft) > 64 else "")  # not a long one echoed whole
            raise web.HTTPNotFound(text=_text({"error": f"no spacecraft {shown} on this server "
                                                        f"(known: {', '.join(self.links)})"}),
                                   content_type="application/json")
        return link

    def status(self) -> dict[str, Any]:
        lags = self.lag.window(monotonic_ms() - LAG_WINDOW_MS)
        p99 = weighted_percentile([s.lag_ms for s in lags], [s.points for s in lags], 99) if lags else None
        return json_safe({
            "kind": "status",
            "spacecraft": {sc: link.status() for sc, link in self.links.items()},
            "push_lag_p99_ms": p99,
            "pages": len(self._pages),
            "sessions": self.sessions.active(),
            "failed_logins": self.sessions.failed_logins,
            "refused_requests": self.sessions.refused_requests,
            "users_file_error": self.users.reload_error or None,  # a change to it refused: the users it had stay
            "internal_errors": self.internal_errors,
            "page_messages_refused": self.page_messages_refused,
            "sockets_refused": self.sockets_refused,
            "pages_closed_stalled": self.pages_closed_stalled,
            "dict_hash": self.dictionary.version_hash,
            "retention": self.retention_result,
        })

    def dropped_points_total(self) -> int:
        return sum(q.dropped_points_total for q, _, _ in self._pages)

    # --- the web thread ------------------------------------------------------------------

    def _web_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            loop.run_until_complete(loop.shutdown_default_executor())  # resolving the host may have used it
            self._started.set()
            loop.close()
            return
        self._loop = loop
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())  # its threads end here, not after the server
            loop.close()

    def app(self) -> web.Application:
        """The routes, each with the least role that may use it (``ROLE`` in the route's info)."""
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        r = app.router
        viewer, operator = Role.VIEWER, Role.OPERATOR
        routes: list[tuple[str, str, Callable, Role | None]] = [
            ("GET", "/login", self._login_page, None),
            ("POST", "/api/login", self._api_login, None),
            ("POST", "/api/logout", self._api_logout, viewer),
            ("GET", "/api/session", self._api_session, viewer),
            ("GET", "/", self._index, viewer),
            ("GET", "/ws", self._ws, viewer),
            ("GET", "/api/spacecraft", self._api_spacecraft, viewer),
            ("GET", "/api/dictionary", self._api_dictionary, viewer),
            ("GET", "/api/state", self._api_state, viewer),
            ("GET", "/api/status", self._api_status, viewer),
            ("GET", "/api/events", self._api_events, viewer),
            ("GET", "/api/commands", self._api_commands, viewer),
            ("POST", "/api/commands", self._api_submit, operator),
            ("POST", "/api/commands/{id:\\d+}/approve", self._api_approve, operator),
            ("POST", "/api/commands/{id:\\d+}/reject", self._api_reject, operator),
            ("POST", "/api/commands/{id:\\d+}/cancel", self._api_cancel, operator),
            ("POST", "/api/queue/hold", self._api_hold, operator),
            ("POST", "/api/queue/release", self._api_release, operator),
            ("POST", "/api/alarms/ack", self._api_ack, operator),
            ("POST", "/api/limits", self._api_limits, operator),
            ("GET", "/api/archive", self._api_archive, viewer),
            ("GET", "/api/plan", self._api_plan, viewer),
            ("GET", "/api/passes", self._api_passes, viewer),
            ("GET", "/api/files", self._api_files, viewer),
            ("POST", "/api/files/put", self._api_file_put, operator),
            ("POST", "/api/files/get", self._api_file_get, operator),
            ("POST", "/api/files/{id:[a-z0-9-]+}/cancel", self._api_file_cancel, operator),
            ("GET", "/api/files/{id:[a-z0-9-]+}/content", self._api_file_content, viewer),
        ]
        for name in sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file()):
            routes.append(("GET", f"/static/{name}", self._static, viewer))
        routes.append(("GET", "/favicon.ico", self._favicon, None))
        self.route_roles = {}
        for method, path, handler, role in routes:
            if role is None and (method, path) not in PUBLIC_ROUTES:
                raise AssertionError(f"{method} {path} open without a session but not in PUBLIC_ROUTES")
            if role is not None and (method, path) in PUBLIC_ROUTES:
                role = None
            route = r.add_route(method, path, handler)
            self.route_roles[(method, route.resource.canonical)] = role
        return app

    async def _startup(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_GRACE_S, logger=_HttpLog(self))
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            hint = "choose another port with --port" if exc.errno == errno.EADDRINUSE else \
                "check the address ([server] host, --host)"  # an audit: a bad host was told to change the port
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; {hint}") from exc
        host, port = self._runner.addresses[0][:2]
        self.port = port
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        self.url = f"http://{shown}:{port}/"
        self.allowed_hosts = allowed_hosts(self.config.allowed_hosts, self.host, port)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._status_task()), loop.create_task(self._retention_task()),
                       loop.create_task(self._stall_task())]

    async def _shutdown(self) -> None:
        """Close every WebSocket at once, then stop serving, whatever the sockets did (found in audit: one
        by one, a client that stopped reading held the rest, and the port stayed open)."""
        for task in self._tasks:
            task.cancel()
        try:
            await asyncio.gather(*(self._close_socket(ws, sock.transport, 1001, b"server stopping")
                                   for ws, sock in list(self._sockets.items())), return_exceptions=True)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()

    @staticmethod
    async def _close_socket(ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, code: int,
                            message: bytes) -> None:
        """Close one WebSocket, giving its client ``WS_CLOSE_S`` to take the close frame; a client that does
        not read never will (the frame waits behind what it left), so its connection is cut (aborted)."""
        try:
            await asyncio.wait_for(ws.close(code=code, message=message), WS_CLOSE_S)
            return
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        if transport is not None:
            transport.abort()  # a close() would wait for the unread bytes to leave first

    async def _status_task(self) -> None:
        said = ""
        while not self.stopping.is_set():
            await asyncio.sleep(STATUS_PERIOD_S)
            said = self._say_users_file(said)
            self.publish(self.status())

    def _say_users_file(self, said: str) -> str:
        """Read the users file again if it changed, and say on stderr, once, a change it refused (it keeps the users it
        had: ``users_file_error`` in status). Found in audit: an operator removed from a file that no longer passed
        its checks (mode 644 once edited) went on commanding, and nothing anywhere said the change was not taken."""
        self.users.refresh()
        error = self.users.reload_error
        if error != said:
            try:
                print(f"sunlit-ground server: users file not read again, the users it had stay: {error}" if error
                      else f"sunlit-ground server: users file {self.users.path} read again", file=sys.stderr,
                      flush=True)
            except OSError:  # stderr's reader gone (found in review: it ended the status task, no pushes after)
                pass  # said in status all the same
        return error

    async def _stall_task(self) -> None:
        """Close each page whose queue has dropped for ``page_stall_s`` without its sender taking it: its
        client stopped reading, and the link thread would go on copying every packet to it (found in audit)."""
        while not self.stopping.is_set():
            await asyncio.sleep(min(1.0, self.page_stall_s / 2))
            now = time.monotonic()
            for ws, sock in list(self._sockets.items()):
                stalled_s = sock.queue.overflowing_s(now)
                if stalled_s < self.page_stall_s or sock.closing:
                    continue
                sock.closing = True  # closed once; the handler's end takes the page out
                self.pages_closed_stalled += 1
                reason = f"not reading: dropping for {stalled_s:.0f} s; reconnect to catch up".encode()
                self._closing.add(asyncio.get_running_loop().create_task(
                    self._close_socket(ws, sock.transport, 1008, reason)))
                self._closing = {t for t in self._closing if not t.done()}

    async def _retention_task(self) -> None:
        """Apply the retention policy now and then, off the web thread (it deletes and vacuums)."""
        if self.archive is None:
            return
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            try:
                done = await loop.run_in_executor(self._archive_pool, self.archive.retain, self.retention)
                self.retention_result = {"at_s": time.time(), "deleted": json_safe(done)}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - shown in status; tried again next period
                self.internal_errors += 1
                self.retention_result = {"at_s": time.time(), "error": f"{type(exc).__name__}: {exc}"}
            await asyncio.sleep(self.config.retention_period_s)

    # --- the guard: host, origin, session, CSRF, role ------------------------------------

    async def _counted(self, handler: Callable, request: web.Request) -> web.StreamResponse:
        """The handler's answer; a request it refuses as malformed (a 4xx it raises: not JSON, too
        large, the wrong content type) is counted with the others refused. A fault no handler foresaw
        (a full disk under an upload) is answered as JSON saying what failed (507 for a full disk),
        counted in ``internal_errors`` and logged on one line: no traceback, and the server goes on."""
        try:
            response = await handler(request)
            if response.status in _MALFORMED:  # the same refused as an answer (found in audit: a bad field, 400,
                self.sessions.refused_requests += 1  # was counted nowhere)
            return response
        except web.HTTPClientError:
            self.sessions.refused_requests += 1
            raise
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise  # a client gone mid-request (an upload stopped) is no fault of the server's: aiohttp drops it
        except Exception as exc:  # noqa: BLE001 - the last line of defence for one request
            self.internal_errors += 1
            full = isinstance(exc, OSError) and exc.errno in _DISK_FULL
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:200]
            print(f"sunlit-ground server: {request.method} {request.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return _error(507 if full else 500, f"{request.method} {request.path} failed: {type(exc).__name__}: {why} "
                          "(counted in the server's internal_errors)", "DISK_FULL" if full else "INTERNAL_ERROR")

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.host not in self.allowed_hosts:
            self.sessions.refused_requests += 1
            return _error(421, f"this server does not answer to host {request.host!r}; add it to "
                               "server.allowed_hosts if that is how operators reach it", "BAD_HOST")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_ok(origin):
            self.sessions.refused_requests += 1
            return _error(403, "request from another site refused", "BAD_ORIGIN")
        resource = request.match_info.route.resource
        key = (request.method if request.method != "HEAD" else "GET", resource.canonical if resource else "")
        if key not in self.route_roles:
            missing = request.match_info.http_exception
            if missing is not None:  # no such route (404/405): said as every answer is, in JSON (an audit: plain text)
                self.sessions.refused_requests += 1
                response = _error(missing.status, f"{request.method} {request.path[:200]}: {missing.reason.lower()}",
                                  "NOT_FOUND" if missing.status == 404 else "METHOD_NOT_ALLOWED")
                for name in ("Allow",):
                    if name in missing.headers:
                        response.headers[name] = missing.headers[name]
                return response
            return _error(403, f"{request.method} {request.path} has no role assigned", "FORBIDDEN")  # fail closed
        need: Role | None = self.route_roles[key]
        if need is None:
            response = await self._counted(handler, request)
        else:
            session, by_cookie = self._session(request)
            if session is None:
                self.sessions.refused_requests += 1
                if request.method == "GET" and request.path == "/":
                    raise web.HTTPSeeOther("/login")
                return _error(401, "log in first (sunlit-ground login, or the web console's login page)",
                              "NOT_LOGGED_IN")
            if by_cookie and request.method not in ("GET", "HEAD") and not csrf_ok(
                    session, request.headers.get(CSRF_HEADER)):
                self.sessions.refused_requests += 1
                return _error(403, f"missing or wrong {CSRF_HEADER} header", "CSRF")
            if session.role < need:
                self.sessions.refused_requests += 1
                return _error(403, f"{session.user} is a {session.role.name.lower()}; this needs "
                                   f"{need.name.lower()}", "FORBIDDEN")
            request[SESSION_KEY] = session
            response = await self._counted(handler, request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                    "frame-ancestors 'none'")
        return response

    def _origin_ok(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc in self.allowed_hosts

    def _session(self, request: web.Request) -> tuple[Session | None, bool]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.sessions.get(header[7:].strip()), False
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.sessions.get(cookie), True

    # --- routes: login -------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "login.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / request.path.rsplit("/", 1)[1])

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml"})

    async def _api_login(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        loop = asyncio.get_running_loop()
        try:  # argon2 takes tens of ms on purpose: off the event loop, never behind an upload
            token, session = await loop.run_in_executor(self._login_pool, self.sessions.login, body.get("user"),
                                                        body.get("password"), request.remote or "")
        except AuthError as exc:
            return _error(exc.status, str(exc), "LOGIN_FAILED")
        response = _json({"user": session.user, "role": session.role.name.lower(), "csrf": session.csrf,
                          "token": token, "idle_s": self.sessions.idle_s})
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", path="/",
                            secure=self.config.cookie_secure, max_age=int(self.sessions.max_s))
        return response

    async def _api_logout(self, request: web.Request) -> web.Response:
        # The session the request was taken for, read as _session reads it (found in audit: any Authorization,
        # a proxy's Basic among them, was taken for a token, and the cookie's session was never ended)
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else request.cookies.get(SESSION_COOKIE)
        self.sessions.logout(token)
        response = _json({"logged_out": True})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def _api_session(self, request: web.Request) -> web.Response:
        s: Session = request[SESSION_KEY]
        return _json({"user": s.user, "role": s.role.name.lower(), "csrf": s.csrf})

    # --- routes: views -------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _api_spacecraft(self, request: web.Request) -> web.Response:
        return _json({"spacecraft": [link.status() for link in self.links.values()]})

    async def _api_dictionary(self, request: web.Request) -> web.Response:
        link = self.link_for(request.query.get("spacecraft") or next(iter(self.links), None))
        body = self.dictionary.to_json()
        for ch in body["channels"]:
            with link.alarm_lock:
                limits = link.alarms.limits(ch["name"]).to_json()
            if limits:
                ch["limits"] = limits
            else:
                ch.pop("limits", None)
        return _json(body)

    async def _api_state(self, request: web.Request) -> web.Response:
        return _json(self.link_for(request.query.get("spacecraft")).snapshot())

    async def _api_status(self, request: web.Request) -> web.Response:
        return _json(self.status())

    async def _api_events(self, request: web.Request) -> web.Response:
        """Recent events: from the archive (they outlive the server) or, without one, from memory."""
        link = self.link_for(request.query.get("spacecraft"))
        try:
            limit = int(request.query.get("limit", "100"))
            if not 1 <= limit <= 10_000:
                raise ValueError
        except ValueError:
            return _error(400, f"limit: {request.query.get('limit', '')[:40]!r} is not a count of 1 to 10000")
        try:
            floor = Severity[request.query.get("severity", "DIAGNOSTIC").upper()]
        except KeyError:
            return _error(400, f"severity: {request.query.get('severity', '')[:40]!r} is not one of "
                               + ", ".join(s.name for s in Severity))
        if self.archive is None:
            with link.lock:
                events = [e for e in link.events if Severity[e["severity"]] >= floor][-limit:]
            return _json({"spacecraft": link.id, "events": events, "source": "memory"})
        archive = self.archive

        def read() -> list[dict[str, Any]]:
            return [{"kind": "event", "spacecraft": link.id, "time_s": e.time_s, "name": e.name,
                     "severity": e.severity.name, "text": e.text, "args": e.args}
                    for e in archive.events(min_severity=floor, spacecraft=link.id, limit=limit)]

        events = await asyncio.get_running_loop().run_in_executor(self._archive_pool, read)
        return _json({"spacecraft": link.id, "events": events, "source": "archive"})

    async def _api_commands(self, request: web.Request) -> web.Response:
        link = self.link_for(request.query.get("spacecraft"))
        return _json({"spacecraft": link.id, "queue": link.queue.status(),
                      "commands": [e.to_json() for e in link.queue.entries(last=200)]})

    async def _api_plan(self, request: web.Request) -> web.Response:
        """The latest plan (from memory: the link thread keeps it); with ``since`` the plans made
        from then on, from the archive."""
        link = self.link_for(request.query.get("spacecraft"))
        if "since" not in request.query and "until" not in request.query and "limit" not in request.query:
            return _json(link.plan_view())
        try:
            from_s = parse_time_s(request.query.get("since", ""), "since")
            to_s = parse_time_s(request.query["until"], "until") if "until" in request.query else math.inf
            text = request.query.get("limit", "100")
            try:
                limit = int(text)
            except ValueError:
                raise ValueError(f"limit {_shown(text)}: a whole number, 1..{PLAN_HISTORY_MAX}") from None
            if not 1 <= limit <= PLAN_HISTORY_MAX:
                raise ValueError(f"limit {_shown(limit)}: 1..{PLAN_HISTORY_MAX}")
            if to_s < from_s:
                raise ValueError(f"until ({to_s}) is before since ({from_s})")
        except ValueError as exc:
            return _error(400, str(exc))
        if self.archive is None:
            return _error(501, "this server keeps no archive (started with --no-archive): no plan history",
                          "NO_ARCHIVE")
        archive = self.archive
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._archive_pool, lambda: archive.plans(from_s, to_s, spacecraft=link.id, limit=limit))
        except Exception as exc:  # noqa: BLE001 - the archive's own errors go to the client as they are
            return _error(500, f"archive query failed: {type(exc).__name__}: {exc}", "ARCHIVE_ERROR")
        return _json({"spacecraft": link.id, "since_s": from_s, "until_s": to_s, "limit": limit,
                      "plans": [plan_json(p.plan, p.received_s) for p in found], "source": "archive"})

    async def _api_passes(self, request: web.Request) -> web.Response:
        """Completeness per pass (newest ``limit``, oldest first): from the archive, which keeps
        them across restarts, or without one from the link's memory; the pass going on now is
        ``open`` (memory) and counted every ``PASS_WRITE_PERIOD_S``."""
        link = self.link_for(request.query.get("spacecraft"))
        try:
            text = request.query.get("limit", "50")
            try:
                limit = int(text)
            except ValueError:
                raise ValueError(f"limit {_shown(text)}: a whole number, 1..{KEEP_PASS_VIEWS}") from None
            if not 1 <= limit <= KEEP_PASS_VIEWS:
                raise ValueError(f"limit {_shown(limit)}: 1..{KEEP_PASS_VIEWS}")
            from_s = parse_time_s(request.query["since"], "since") if "since" in request.query else None
        except ValueError as exc:
            return _error(400, str(exc))
        live = {round(v["start_s"], 6): v for v in link.pass_views()}
        if self.archive is None:
            views = [v for v in live.values() if from_s is None or v["start_s"] >= from_s][-limit:]
            return _json({"spacecraft": link.id, "passes": views, "source": "memory"})
        archive = self.archive
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._archive_pool, lambda: archive.passes(from_s, None, spacecraft=link.id, limit=limit))
        except Exception as exc:  # noqa: BLE001 - the archive's own errors go to the client as they are
            return _error(500, f"archive query failed: {type(exc).__name__}: {exc}", "ARCHIVE_ERROR")
        views = []
        for p in found:
            view = p.to_json()
            mine = live.get(round(p.start_s, 6))
            view["open"] = bool(mine and mine["open"])
            views.append(view)
        return _json({"spacecraft": link.id, "passes": views, "source": "archive"})

    async def _api_archive(self, request: web.Request) -> web.Response:
        """Archived samples of a window, a page at a time: at most ``limit`` samples read per answer (found in
        audit: the whole window was read into the server's memory, all of history if asked), each channel
        decimated to ``max_points`` over the page; ``next`` asks for the following page until ``complete``."""
        from ground.archive import PAGE_SAMPLES, parse_page_token

        link = self.link_for(request.query.get("spacecraft"))
        channels = list(dict.fromkeys(c for value in request.query.getall("channel", []) for c in value.split(",")
                                      if c))
        try:  # each error names its field (found in audit: "invalid literal for int()", a bad time unnamed)
            from_s = parse_time_s(request.query.get("from", ""), "from")
            to_s = parse_time_s(request.query.get("to", ""), "to")
            max_points = _int_arg(request.query.get("max_points", "2000")[:40], "max_points")
            if not 2 <= max_points <= 100_000:
                raise ValueError(f"max_points: {max_points} is not in 2..100000")
            limit = _int_arg(request.query.get("limit", str(PAGE_SAMPLES))[:40], "limit")
            if not max(1, len(channels)) <= limit <= PAGE_SAMPLES:
                raise ValueError(f"limit: {limit} is not in {max(1, len(channels))}..{PAGE_SAMPLES} (samples read "
                                 "per page, at least one per channel named)")
            after = request.query.get("next")
            if after is not None:
                parse_page_token(after, "next")
        except ValueError as exc:
            return _error(400, str(exc), "BAD_ARGUMENTS")
        unknown = [c for c in channels if c not in self.dictionary.channel_by_name]
        if not channels or unknown:
            return _error(400, f"channel: unknown channel {', '.join(c[:60] for c in unknown[:10])}" if unknown
                          else "channel: name at least one: ?channel=NAME&from=T&to=T", "BAD_ARGUMENTS")
        if to_s <= from_s:
            return _error(400, f"to: {to_s} must be after from ({from_s})", "BAD_ARGUMENTS")
        if self.archive is None:
            return _error(501, "this server keeps no archive (started with --no-archive)", "NO_ARCHIVE")
        archive = self.archive
        try:
            page = await asyncio.get_running_loop().run_in_executor(
                self._archive_pool, lambda: archive.query_page(channels, from_s, to_s, spacecraft=link.id,
                                                               max_samples=limit, after=after,
                                                               max_points=max_points))
        except Exception as exc:  # noqa: BLE001 - the archive's own errors go to the page as they are
            return _error(500, f"archive query failed: {type(exc).__name__}: {exc}", "ARCHIVE_ERROR")
        out = {name: {"times": json_safe(times), "values": json_safe(values)}
               for name, (times, values) in page.channels.items()}
        return _json({"spacecraft": link.id, "from_s": from_s, "to_s": to_s, "channels": out,
                      "samples": page.samples, "complete": page.complete, "next": page.next,
                      "page_end_s": page.page_end_s})

    # --- routes: files ------------------------------------------------------------------

    def _files_of(self, link: SpacecraftLink) -> GroundFiles:
        if link.files is None:
            raise web.HTTPServiceUnavailable(text=_text({"error": f"{link.id}: file transfer not started (its link "
                                                                  f"failed to open: {link.link_error})"}),
                                             content_type="application/json")
        return link.files

    async def _on_link(self, files: GroundFiles, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the spacecraft's link thread (the CFDP entity's owner) and wait for it."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(files.call(fn)), FILE_CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise web.HTTPServiceUnavailable(text=_text({"error": f"the link thread did not take the request within "
                                                                  f"{FILE_CALL_TIMEOUT_S:g} s; try again"}),
                                             content_type="application/json") from None

    async def _api_files(self, request: web.Request) -> web.Response:
        """Every transfer in progress and queued, then the newest settled ones, with progress."""
        link = self.link_for(request.query.get("spacecraft"))
        files = self._files_of(link)
        return _json({"spacecraft": link.id, "transfers": files.snapshot(), "status": files.status()})

    async def _api_file_put(self, request: web.Request) -> web.Response:
        """The body (application/octet-stream) goes to the agent as ``name``; 202 with the transfer."""
        q = request.query
        link = self.link_for(q.get("spacecraft"))
        files = self._files_of(link)
        if request.content_type != "application/octet-stream":
            return _error(415, "send the file as application/octet-stream, with ?name=staging/... "
                               "(&cfdp_class=2&priority=5&filename=...)")
        try:  # the size said (Content-Length): a sequence past its 64 KiB refused before a byte is read (review)
            name = check_remote(q.get("name", ""), "up", request.content_length)
            cls, priority = _int_arg(q.get("cfdp_class", "2"), "cfdp_class"), _int_arg(q.get("priority", "5"), "priority")
        except (FileError, ValueError) as exc:
            return _error(400, str(exc), "BAD_NAME" if isinstance(exc, FileError) else "")
        # A sequence sent without its length stops at its limit, not the general one
        limit = MAX_SEQUENCE_BYTES if name.partition("/")[0] == SEQUENCES_DIR else MAX_UPLOAD_BYTES
        if request.content_length is not None and request.content_length > limit:
            # found in audit: read to the limit (4 GiB), then a bare "HTTP 413"; the size said is refused unread
            raise _too_large(name, limit, request.content_length)
        who = request[SESSION_KEY].user
        staged, tmp = files.upload_path(name)
        size = 0
        digest = hashlib.sha256()  # as it arrives: the link thread need not read the file whole when it starts
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        try:
            # Written, hashed and installed (fsync) by a worker, a block at a time: found in audit, on the event
            # loop they froze every request and WebSocket (510 ms at once for a GiB's fsync).
            with open(tmp, "wb") as f:
                block: list[bytes] = []
                held = 0
                while True:
                    chunk = await request.content.read(1 << 16)
                    size += len(chunk)
                    if size > limit:  # sent without its length (chunked): said in JSON too, not aiohttp's text
                        raise _too_large(name, limit)
                    if chunk:
                        block.append(chunk)
                        held += len(chunk)
                    if block and (held >= UPLOAD_BLOCK_BYTES or not chunk):
                        await loop.run_in_executor(self._upload_pool, _write_hashed, f, digest, b"".join(block))
                        block, held = [], 0
                    if not chunk:
                        break
            # synced before its transfer is saved: a power cut keeps both
            await loop.run_in_executor(self._upload_pool, _install_upload, tmp, files.area / staged, abandoned)
        except BaseException:
            abandoned.set()  # an install still running removes what it put in place (found in review: an orphan)
            for path in (tmp, files.area / staged):  # the worker may have installed it as the client went
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
        label = str(q.get("filename", ""))[:200]
        try:
            sha256 = digest.hexdigest()
            record: FileRecord = await self._on_link(
                files, lambda: files.queue_put(staged, name, cls, priority, who, local=label, sha256=sha256))
        except FileError as exc:
            return _error(400, str(exc), "FILE")
        except web.HTTPServiceUnavailable:  # not queued (the hand-over was withdrawn): the copy goes
            try:
                os.unlink(files.area / staged)
            except OSError:
                pass
            raise
        return _json(record.to_json(), status=202)

    async def _api_file_get(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        files = self._files_of(link)
        name = body.get("name")
        who = request[SESSION_KEY].user
        try:
            cls, priority = _int_arg(body.get("cfdp_class", 2), "cfdp_class"), _int_arg(body.get("priority", 5),
                                                                                            "priority")
            check_remote(name, "down")
            record: FileRecord = await self._on_link(files, lambda: files.get(name, cls, priority, who))
        except ArgumentError as exc:
            return _error(400, str(exc), exc.code.name)
        except QueueError as exc:  # its FILE_DOWNLINK: the queue is full
            return _error(exc.status, str(exc), "QUEUE")
        except (FileError, ValueError) as exc:
            return _error(400, str(exc), "FILE")
        return _json(record.to_json(), status=202)

    async def _api_file_cancel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        files = self._files_of(link)
        record_id, who = request.match_info["id"], request[SESSION_KEY].user
        try:
            record: FileRecord = await self._on_link(files, lambda: files.cancel(record_id, who))
        except FileError as exc:
            return _error(409, str(exc), "FILE")
        except QueueError as exc:  # its FILE_CANCEL: the queue is full
            return _error(exc.status, str(exc), "QUEUE")
        return _json(record.to_json())

    async def _api_file_content(self, request: web.Request) -> web.StreamResponse:
        """A file that came down whole (its SHA-256 checked), as received."""
        link = self.link_for(request.query.get("spacecraft"))
        files = self._files_of(link)
        record_id = request.match_info["id"]
        found = next((r for r in files.snapshot() if r["id"] == record_id), None)
        if found is None:
            return _error(404, f"no transfer {_shown(record_id)} among {link.id}'s recent ones")
        try:  # in a thread: a file whose stamp moved is hashed (ground/files.py, path_of)
            path = await asyncio.to_thread(files.path_of, FileRecord.from_json(found))
        except FileGone as exc:
            return _error(410, str(exc), "FILE_GONE")
        except FileError as exc:
            return _error(409, str(exc), "FILE")
        return web.FileResponse(path, headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "X-Sunlit-SHA256": found.get("sha256") or ""})

    # --- routes: commanding --------------------------------------------------------------

    def submit(self, spacecraft: str | None, name: str, args: dict[str, Any], who: str,
               confirm: bool = False, acks: list[str] | None = None) -> Entry:
        """Check a command against the dictionary and queue it. ArgumentError: nothing queued;
        PermissionError: a hazardous command without ``confirm``. ``acks``: the stages whose
        success reports to ask for (the client adds the ones it needs: completion, and acceptance
        where it retries); None: its default."""
        link = self.link_for(spacecraft)
        command = self.dictionary.command(name)
        values = command.validate_args(args)
        # The handler's stateless checks, as `sunlit-ground send` makes them (found in audit: SET_PARAM value=nan or
        # FILE_DELETE name=../x from the page or the API was queued, to fail on board a pass later)
        refused = stateless_refusal(self.dictionary, command.name, values)
        if refused is not None:
            raise ArgumentError(f"{command.name} {refused.field}: {refused.reason}", refused.code)
        try:
            ask = None if acks is None else ack_flags_for(acks)
        except ValueError as exc:
            raise ArgumentError(f"acks: {exc}", FailureCode.BAD_ARGUMENTS) from None
        if command.hazardous and not confirm:
            raise PermissionError(f"{command.name} is hazardous: confirm it to send it")
        # What the server's client adds to them: completion always, acceptance as it retries.
        expected = None if ask is None else [s.value for s in ack_stages(ask | ACK_ACCEPTANCE | ACK_COMPLETION)]
        carried = values.get("command") if command.name in _TIME_TAGS else None  # its name as the agent takes it
        carries = self.dictionary.command_by_name.get(carried.upper()) if isinstance(carried, str) else None
        entry = link.queue.submit(command.name, values, who, command.hazardous, time.time(), ask_flags=ask,
                                  acks=expected, carries=None if carries is None else carries.name)
        self.command_changed(entry)
        return entry

    async def _api_submit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = sorted(str(k) for k in body if k not in _SUBMIT_KEYS)
        if unknown:  # found in audit: {"name": "PING", "arg": {...}} queued PING with its defaults, the typo unsaid
            return _error(400, f"{_shown(unknown[0])}: not a field of a command (takes {', '.join(_SUBMIT_KEYS)})",
                          "BAD_ARGUMENTS")
        name, args, acks = body.get("name"), body.get("args", {}), body.get("acks")
        args = {} if args is None else args
        if not isinstance(name, str) or not isinstance(args, dict) or not (
                acks is None or (isinstance(acks, list) and len(acks) <= 8 and all(isinstance(a, str) for a in acks))):
            return _error(400, 'expected {"spacecraft": ID, "name": COMMAND, "args": {...}, "confirm": bool, '
                               '"acks": [STAGE, ...] (optional)}')
        session: Session = request[SESSION_KEY]
        try:
            entry = self.submit(body.get("spacecraft"), name, args, session.user, confirm=body.get("confirm") is True,
                                acks=acks)
        except ArgumentError as exc:
            return _error(400, str(exc), exc.code.name)
        except PermissionError as exc:
            return _error(400, str(exc), "NOT_CONFIRMED")
        except QueueError as exc:  # the queue is full
            return _error(exc.status, str(exc), "QUEUE")
        return _json(entry.to_json(), status=202)

    async def _queue_action(self, request: web.Request, action: str) -> web.Response:
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        session: Session = request[SESSION_KEY]
        given = request.match_info["id"]
        if not (given.isascii() and given.isdigit() and len(given) <= 20):  # found in audit: 5000 digits answered
            return _error(400, f"id: {given[:24]!r} is not a command id", "BAD_ARGUMENTS")  # Python's own error
        try:
            entry_id = int(given)
            now = time.time()
            if action == "approve":
                entry = link.queue.approve(entry_id, session.user, now)
            elif action == "reject":
                reason = body.get("reason") if isinstance(body.get("reason"), str) else ""
                entry = link.queue.reject(entry_id, session.user, now, reason[:200])
            else:
                entry = link.queue.cancel(entry_id, session.user, now, admin=session.role >= Role.ADMIN)
        except ValueError as exc:
            status = exc.status if isinstance(exc, QueueError) else 400
            return _error(status, str(exc), "QUEUE")
        self.command_changed(entry)
        return _json(entry.to_json())

    async def _api_approve(self, request: web.Request) -> web.Response:
        return await self._queue_action(request, "approve")

    async def _api_reject(self, request: web.Request) -> web.Response:
        return await self._queue_action(request, "reject")

    async def _api_cancel(self, request: web.Request) -> web.Response:
        return await self._queue_action(request, "cancel")

    async def _api_hold(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        link.queue.hold(request[SESSION_KEY].user)
        self.publish({"kind": "queue", "spacecraft": link.id, **link.queue.status()})
        return _json(link.queue.status())

    async def _api_release(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        link.queue.release()
        self.publish({"kind": "queue", "spacecraft": link.id, **link.queue.status()})
        return _json(link.queue.status())

    async def _api_ack(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        channel = body.get("channel")
        if not isinstance(channel, str):
            return _error(400, 'expected {"spacecraft": ID, "channel": NAME}')
        who = request[SESSION_KEY].user
        try:
            with link.alarm_lock:
                alarm = link.alarms.acknowledge(channel, who=who)
                out = alarm_json(alarm)
        except KeyError as exc:
            return _error(404, str(exc.args[0]) if exc.args else f"no active alarm on {channel}")
        if self.archive is not None:
            archive = self.archive
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._archive_pool,
                    lambda: archive.record_ack(channel, who, time.time(), alarm.state, alarm.value, spacecraft=link.id))
            except Exception as exc:  # noqa: BLE001 - acknowledged all the same; the page says it was not filed
                out["archive_error"] = f"{type(exc).__name__}: {exc}"
        return _json(out)

    async def _api_limits(self, request: web.Request) -> web.Response:
        """Change a channel's limits on the server: filed in the archive (kept across restarts), then applied
        to the spacecraft's alarms and pushed to every page. Found in audit: the console changed its own copy
        alone and said it was done; the server's alarms and every other operator kept the old limits."""
        body = await _json_body(request)
        link = self.link_for(body.get("spacecraft"))
        channel, given = body.get("channel"), body.get("limits")
        if not isinstance(channel, str) or channel not in self.dictionary.channel_by_name:
            return _error(400, "channel: a channel of the dictionary" if not isinstance(channel, str)
                          else f"channel: no channel {channel[:60]!r} in the dictionary", "BAD_ARGUMENTS")
        refused = not_a_number(self.dictionary, channel)  # found in audit: taken and said set, and never applied
        if refused:
            return _error(400, f"channel: {refused}", "BAD_ARGUMENTS")
        names = tuple(Limits.__dataclass_fields__)
        if not isinstance(given, dict) or not given:
            return _error(400, f"limits: an object of {', '.join(names)}, each a number or null (none)",
                          "BAD_ARGUMENTS")
        bounds: dict[str, float | None] = {}
        for key, value in given.items():
            if key not in names:
                return _error(400, f"limits.{str(key)[:40]}: not a limit; use {', '.join(names)}", "BAD_ARGUMENTS")
            try:  # float() of an integer past float's range raises OverflowError (found in audit: a 500)
                number = None if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    else float(value)
            except OverflowError:
                number = None
            if value is not None and (number is None or not math.isfinite(number)):
                return _error(400, f"limits.{key}: {str(value)[:40]!r} is not a number (null: none)", "BAD_ARGUMENTS")
            bounds[key] = number
        who = request[SESSION_KEY].user
        async with self._limits_lock:
            with link.alarm_lock:  # the bounds left alone still follow their parameters (found in review)
                limits = link.alarms.unresolved(channel).merged(bounds)
                numbers = limits.resolve({**self.dictionary.parameter_defaults, **link.alarms.agent_parameters})
            # In order, crit_low <= warn_low < warn_high <= crit_high, where a bound given is one of the pair (found in
            # audit: a crit_high under warn_high was taken, and the channel's alarms then said critical for warning)
            out_of_order = ladder_error(numbers, set(bounds))
            if out_of_order:
                return _error(400, f"limits.{out_of_order}", "BAD_ARGUMENTS")
            if self.archive is not None:  # filed first: a change the archive refused is not made (500/507)
                archive = self.archive
                await asyncio.get_running_loop().run_in_executor(
                    self._archive_pool, lambda: archive.set_limits(channel, limits, who=who, spacecraft=link.id))
            with link.alarm_lock:
                link.alarms.limit_store.overrides[channel] = limits
                shown = json_safe(link.alarms.limits(channel).to_json())  # in numbers, as the agent set them
        self.publish({"kind": "limits", "spacecraft": link.id, "limits": {channel: shown}, "by": who})
        return _json({"spacecraft": link.id, "channel": channel, "limits": shown, "by": who})

    # --- the WebSocket -------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        """Pages get decoded batches; programs (``?raw=1``) get the packets as received."""
        wants = request.query.get("spacecraft") or None
        if wants is not None and wants not in self.links:
            return _error(404, f"no spacecraft {_shown(wants)} on this server")  # cut (found in review)
        raw = request.query.get("raw") == "1"
        session: Session = request[SESSION_KEY]
        mine = self._socket_counts.get(id(session), 0)
        users = self._socket_users.get(session.user, 0)
        total = sum(self._socket_counts.values())
        room = self.max_sockets - (0 if session.role >= Role.OPERATOR else min(SOCKETS_FOR_OPERATORS,
                                                                              self.max_sockets // 4))
        whose = (f"this session has {mine} open, at most {self.max_sockets_per_session}"
                 if mine >= self.max_sockets_per_session else
                 f"{session.user}'s sessions have {users} open, at most {MAX_SOCKETS_PER_USER}"
                 if users >= MAX_SOCKETS_PER_USER else
                 f"the server has {total} open, {room} at most to {session.role.name.lower()}s"
                 if total >= room else "")
        probe = request.headers.get("Upgrade", "").lower() != "websocket"
        if whose:
            if not probe:  # found in audit: the page's probe after a refused socket counted it twice (and each retry)
                self.sockets_refused += 1
            return _error(429, f"too many WebSockets: {whose}; close one first"
                          + ("" if probe else " (counted in sockets_refused)"), "TOO_MANY_SOCKETS")
        if probe:  # a page whose socket closed unopened asks,
            return web.Response(status=204)  # as a plain GET, whether it may open one (app.js): it may
        # Taken before the first await: no two get past the bound.
        self._socket_counts[id(session)] = mine + 1
        self._socket_users[session.user] = users + 1
        try:
            return await self._ws_open(request, session, wants, raw)
        finally:
            left = self._socket_counts.pop(id(session)) - 1
            if left:
                self._socket_counts[id(session)] = left
            left = self._socket_users.pop(session.user) - 1
            if left:
                self._socket_users[session.user] = left

    async def _ws_open(self, request: web.Request, session: Session, wants: str | None,
                       raw: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        page_queue = ClientQueue(lambda: loop.call_soon_threadsafe(ready.set), self.queue_points)
        page = object()  # the lag tracker's key for this page's batches
        # The page's queue first, then the snapshot: what comes in between is in both, never in neither (found in
        # audit: built the other way round, it was in neither); the page drops events the snapshot holds (seq).
        with self._pages_lock:
            self._pages = (*self._pages, (page_queue, wants, raw))
        self._sockets[ws] = _Socket(request.transport, page_queue)
        try:
            hello = {"kind": "hello", "user": session.user, "role": session.role.name.lower(),
                     "spacecraft": list(self.links), "dict_hash": self.dictionary.version_hash,
                     "two_person": sorted(self.config.two_person),
                     "batch_interval_ms": self.batch_interval_s * 1000.0,
                     "states": {sc: link.snapshot() for sc, link in self.links.items() if wants in (None, sc)},
                     "status": self.status()}
            await ws.send_str(json.dumps({"type": "batch", "seq": 0, "hk": [], "control": [hello], "dropped": {}},
                                         allow_nan=False))
            sender = asyncio.create_task(self._sender(ws, page_queue, ready, page, raw, session))
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        self._page_message(msg.data, page)
                    elif msg.type == WSMsgType.ERROR:
                        break
                    elif msg.type == WSMsgType.BINARY:  # a page sends text: refused and counted (an audit: unsaid)
                        self.page_messages_refused += 1
            finally:
                sender.cancel()
        finally:
            with self._pages_lock:
                self._pages = tuple(p for p in self._pages if p[0] is not page_queue)
            self._sockets.pop(ws, None)
        return ws

    async def _sender(self, ws: web.WebSocketResponse, page_queue: ClientQueue, ready: asyncio.Event,
                      page: object, raw: bool, session: Session) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        last_s = -math.inf
        while not ws.closed:
            await ready.wait()
            ready.clear()
            delay = last_s + self.batch_interval_s - loop.time()
            if delay > 0:  # coalesce: at most one push per interval, whatever the packet rate
                await asyncio.sleep(delay)
            if not self.sessions.alive(session):  # logged out or expired while watching
                await ws.close(code=4001, message=b"session ended")
                break
            batch = page_queue.take()
            if batch.empty:
                continue
            if raw:
                messages = _raw_pushes(batch, seq, page_queue)
            else:
                message = batch_message(batch, seq + 1, page_queue)
                message["hk"] = [[s.spacecraft, *row] for s, row in zip(batch.samples, message["hk"])]
                messages = [message]
            gone = False
            for message in messages:
                seq = message["seq"]
                try:
                    text = json.dumps(message, separators=(",", ":"), allow_nan=False)
                except ValueError:  # a NaN that escaped json_safe: the push must still be valid JSON
                    text = json.dumps(json_safe(message), separators=(",", ":"), allow_nan=False)
                if not raw:
                    self.lag.sent((page, seq), monotonic_ms(), batch.samples)
                try:
                    await ws.send_str(text)  # waits while the page's socket is full; the queue drops meanwhile
                except (ConnectionError, RuntimeError):
                    gone = True
                    break
            if gone:
                break
            last_s = loop.time()

    def _page_message(self, data: str, page: object) -> None:
        """A page's "drawn" report (its draw and echo times per pushed item: push_lag_p99_ms). Anything else
        is refused and counted (``page_messages_refused`` in /api/status); the page's socket goes on."""
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            self.page_messages_refused += 1
            return
        if not isinstance(msg, dict) or msg.get("type") != "drawn":
            self.page_messages_refused += 1
            return
        at_ms = monotonic_ms()
        try:
            draw_ms, echo_ms = float(msg["draw"]), float(msg["echo"])
            origin = float(msg["origin"]) if msg.get("origin") is not None else None
            raf_ms = float(msg["raf"]) if msg.get("raf") is not None else None
            if not all(math.isfinite(t) for t in (draw_ms, echo_ms, origin or 0.0, raf_ms or 0.0)):
                raise ValueError("a time that is not a number")  # JSON's 1e999: no lag can be made of it
            for seq, recv_ms in msg["items"]:
                self.lag.drawn((page, int(seq)), float(recv_ms), draw_ms, echo_ms, at_ms, origin,
                               self.wall_minus_mono_ms, raf_ms)
        except (KeyError, TypeError, ValueError, OverflowError):  # int(1e999): JSON's infinity
            self.page_messages_refused += 1  # the items before the bad one were taken


def _raw_pushes(batch: Batch, seq: int, page_queue: ClientQueue) -> list[dict[str, Any]]:
    """A program's batch as pushes numbered from ``seq + 1``, each of at most ``MAX_PUSH_RAW_BYTES`` of packets (one
    larger packet alone); the control messages and what was dropped go in the first."""
    parts: list[list[RawSample]] = [[]]
    size = 0
    for sample in batch.samples:
        if parts[-1] and size + len(sample.raw) > MAX_PUSH_RAW_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(sample)
        size += len(sample.raw)
    pushes = []
    for i, part in enumerate(parts):
        head = Batch([], batch.control, batch.dropped_points, batch.dropped_control) if i == 0 else Batch()
        message = batch_message(head, seq + 1 + i, page_queue)
        message["raw"] = [[s.spacecraft, s.received_s, s.raw.hex()] for s in part]
        pushes.append(message)
    return pushes


@dataclass
class _Socket:
    """An open WebSocket's connection (cut when a close frame cannot get through) and its page queue."""

    transport: asyncio.BaseTransport | None
    queue: ClientQueue
    closing: bool = False


class _Tagged:
    """A housekeeping sample with the spacecraft it came from (the page queue counts its points)."""

    __slots__ = ("spacecraft", "sample")

    def __init__(self, spacecraft: str, sample: Sample):
        self.spacecraft = spacecraft
        self.sample = sample

    @property
    def points(self) -> int:
        return self.sample.points

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sample, name)


def allowed_hosts(extra: tuple[str, ...], host: str, port: int) -> frozenset[str]:
    """The Host header values this server answers, and the origins' host:port it accepts:
    loopback names and the configured ones, each *with this server's port* (another service on
    the same machine is another origin), and without it only where the port is the scheme's
    default (80, 443), which browsers leave out; configured names also as given (a TLS proxy in
    front). Anything else is a DNS-rebinding attempt or a misconfiguration."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host not in ("0.0.0.0", "::", ""):
        names.add(f"[{host}]" if ":" in host else host)
    out = set()
    for name in names:
        out.add(f"{name}:{port}")
        if port in (80, 443):
            out.add(name)
    for name in extra:  # configured names: as given (a TLS proxy in front forwards its own), and with our port
        out.add(name)
        if not (name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]")):
            out.add(f"{name}:{port}")
    return frozenset(out)


def _text(body: Any) -> str:
    return json.dumps(json_safe(body), allow_nan=False)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=_text(body), status=status, content_type="application/json")


class _HttpLog:
    """aiohttp's log of what it answers before any route sees a request, or after the project's own guard: one line on
    stderr, never a traceback. A request its HTTP parser refuses (a bad header line, a Content-Length that is no
    number, a method that is none: 400) is counted in ``refused_requests`` with the others (found in review: each
    printed aiohttp's traceback, counted nowhere, and anyone who can reach the port may send them); what aiohttp
    keeps at debug (bytes that are no HTTP at all: a TLS hello) is counted unsaid. Anything else is the server's
    fault past its guard (a response that failed as it was sent): counted in ``internal_errors``, said with where
    it was raised."""

    def __init__(self, server: Any):
        self._server = server

    def debug(self, message: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._server.sessions.refused_requests += 1

    def exception(self, message: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            self._server.sessions.refused_requests += 1
            said = " ".join(str(exc.message).split())[:200]
        elif exc is not None:
            self._server.internal_errors += 1
            where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ is not None else []
            said = f"{type(exc).__name__}: {exc}" + "".join(f" ({f.filename}:{f.lineno} in {f.name})" for f in where)
        else:
            said = ""
        text = (message % args) if args and isinstance(message, str) and "%" in message else str(message)
        print(f"sunlit-ground server: {text}: {said}".rstrip(": "), file=sys.stderr)

    error = warning = info = exception


MAX_BODY_BYTES = 256 * 1024  # a request body read whole, at most (a file upload is streamed: not bounded by it)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # an upload or a write the disk refused
_MALFORMED = frozenset({400, 413, 415})  # a request refused as malformed: counted in refused_requests
_SUBMIT_KEYS = ("spacecraft", "name", "args", "confirm", "acks")  # a command's POST body: any other key is refused
_TIME_TAGS = frozenset({"SCHEDULE_AT", "SCHEDULE_AFTER"})  # their `command` runs on board: its two-person rule holds


def _error(status: int, message: str, code: str = "") -> web.Response:
    body = {"error": message}
    if code:
        body["code"] = code
    return _json(body, status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The POST body as a JSON object; a form post (which another site could make) is refused."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=_text({"error": "send application/json"}),
                                           content_type="application/json")
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:  # said in JSON, as every answer (found in audit: aiohttp's plain text)
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, text=_text(
            {"error": f"body over {MAX_BODY_BYTES} bytes", "code": "TOO_LARGE"}), content_type="application/json") from None
    except (ValueError, LookupError, RecursionError):  # not JSON, a charset nobody knows, nested past the parser
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=_text({"error": "body must be a JSON object in UTF-8"}),
                                 content_type="application/json")
    return body


def _too_large(name: str, limit: int, said: int | None = None) -> web.HTTPRequestEntityTooLarge:
    """A put past its limit (``said``: its Content-Length; None, sent without one), refused in JSON naming the limit."""
    what = "a sequence file" if limit == MAX_SEQUENCE_BYTES else "a file put through the server"
    shown = f"{limit / (1 << 30):g} GiB" if limit >= 1 << 30 else f"{limit / 1024:g} KiB"
    size = f"over {limit} bytes" if said is None else f"{said} bytes"
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=said or limit + 1, text=_text(
        {"error": f"name: {name!r} is {size}; {what} is at most {limit} bytes ({shown})", "code": "TOO_LARGE"}),
        content_type="application/json")


def _install_upload(tmp: Path, final: Path, abandoned: threading.Event) -> None:
    """An upload put in place (fsync, rename, directory fsync) in a worker thread; removed again where the
    request was given up meanwhile (the client gone, the server stopping): the handler's own clean-up ran
    before this rename, or runs after this look, so no file is left without its transfer."""
    install_file(tmp, final)
    if abandoned.is_set():
        try:
            os.unlink(final)
        except OSError:
            pass


def _write_hashed(f: Any, digest: Any, block: bytes) -> None:
    """One block of an upload, in a worker thread: hashed (hashlib lets go of the GIL) and written."""
    digest.update(block)
    f.write(block)


def _shown(value: Any, most: int = 40) -> str:
    """``value`` as an error quotes it: text as its repr, cut at ``most`` characters with "..." (found in audit: a
    hostile query value of 6 KB came back whole in its 400, as in the page's and the CLI's one-line error)."""
    if isinstance(value, str):
        return repr(value[:most]) + ("..." if len(value) > most else "")
    text = repr(value)
    return text[:most] + ("..." if len(text) > most else "")


def _int_arg(value: Any, name: str) -> int:
    """A whole-number argument from a query or a JSON body, or ValueError naming it."""
    try:
        if isinstance(value, (bool, float)):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {_shown(value)} is not a whole number") from None


def parse_time_s(text: str, name: str = "") -> float:
    """A time as UTC seconds: a number (Unix seconds) or ISO 8601 (UTC when no offset is given);
    ``name``, the query field, begins the error.

    >>> parse_time_s("1700000000.5")
    1700000000.5
    >>> parse_time_s("2024-01-01T00:00:00")
    1704067200.0
    """
    field = f"{name}: " if name else ""
    text = text.strip()
    if not text:
        raise ValueError(f"{field}give a time (Unix seconds or ISO 8601, UTC)" if name
                         else "give both 'from' and 'to' (Unix seconds or ISO 8601, UTC)")
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{field}{_shown(text)} is neither Unix seconds nor an ISO 8601 time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"{field}{_shown(text)} is not a finite time")
    return value


def quick_config(link: str, *, spacecraft: str = DEFAULT_SPACECRAFT, host: str = "127.0.0.1", port: int = 8080,
                 archive: str | Path | None = "var/ground.sqlite", users: str | Path = "etc/ground-users.toml",
                 two_person: frozenset[str] = frozenset(), timeouts: Timeouts = Timeouts()) -> ServerConfig:
    """One spacecraft on one link: what ``sunlit-ground server --link URL`` runs."""
    check_spacecraft_id(spacecraft, "--spacecraft")
    return ServerConfig(spacecraft=(SpacecraftConfig(spacecraft, link),), host=host, port=port,
                        archive=None if archive is None else Path(archive), users=Path(users),
                        two_person=two_person, timeouts=timeouts)


# Signals that stop the server as Ctrl-C does: kill PID (systemd), and its terminal closed (SIGHUP, found in audit: it
# killed the server, the commands it had taken missing from the archive's history). A SIGHUP ignored (nohup) stays so.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def serve(config: ServerConfig) -> int:
    """Run the server until Ctrl-C, SIGTERM or SIGHUP; return an exit code for the CLI."""
    from ground.auth import UserFileError

    # Before the start (found in audit: a SIGTERM while it opened the archive, a `systemctl stop` just after a start,
    # killed it outright, no orderly stop): one that comes during the start stops the server once it has started.
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in STOP_SIGNALS
                if not (sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN)}
    started = False
    try:
        users = UserStore.load(config.users)
        server = GroundServer(config, users).start()
        started = True
    except (OSError, ValueError, RuntimeError, UserFileError) as exc:  # RuntimeError: ArchiveError
        print(f"sunlit-ground server: {exc}", file=sys.stderr)
        return 2
    finally:
        if not started:  # the handlers as they were
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)
    if not users.users:
        print(f"sunlit-ground server: warning: {config.users} has no users; nobody can log in "
              "(sunlit-ground user add NAME --role admin)", file=sys.stderr)
    crafts = ", ".join(f"{sc.id} on {sc.link}" for sc in config.spacecraft)
    print(f"sunlit-ground server: {server.url} ({crafts}; archive {config.archive}); Ctrl-C stops", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        # Stopping files what the link threads hold (passes, the queue's last word) and closes the archive: a second
        # Ctrl-C or SIGTERM is said and waited out (found in audit: the second Ctrl-C ended it "interrupted", exit 1,
        # and the second SIGTERM killed it, both mid-stop, commands left `queued` in the archive for good).
        def again(*_: object) -> None:
            # Its terminal may be gone (a SIGHUP comes twice as a shell exits): a write to it that fails must not
            # break the stop it is said in (found in review: EIO raised in the middle of server.stop(), exit 1)
            with contextlib.suppress(OSError):
                os.write(2, b"sunlit-ground server: stopping already (writing the archive); SIGKILL to abandon that\n")

        previous_int = signal.signal(signal.SIGINT, again)
        for sig in previous:
            signal.signal(sig, again)
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                if handler is not None:  # None: one not set from Python, which cannot be put back from it
                    signal.signal(sig, handler)
            signal.signal(signal.SIGINT, previous_int)
    return 0
