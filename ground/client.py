"""The ground's end of the link: send commands and follow their verification, take in telemetry.

One object for consoles, procedures, the archive and the HIL harness. Meanings, as
procedures rely on them:

- *sent*: the packet left this process (the link accepted it);
- *accepted*: the agent decoded it, found the command and its arguments valid (PUS 1,1);
- *started* / *completed*: the agent began and finished executing it (PUS 1,3 / 1,7);
- a *failure* at any stage (PUS 1,2 / 1,4 / 1,8) is final and carries a code and reason.

The success reports come as the TC's PUS-C acknowledgement flags ask: by default
(:data:`DEFAULT_ACK_FLAGS`) acceptance and completion. The agent sends its start report in the
same turn as the acceptance, so it says nothing the acceptance does not, and costs a packet
on the downlink and in the store per command; :meth:`GroundClient.send` and ``submit`` ask
for it where told (``ack_flags``; through the server, the queue entry's ``acks``; the CLI's
``--ack``). The stage waited for is always asked for, and acceptance wherever the client
retries: a retry stops at the first report. A failure report comes whatever the flags say.

Retries follow the zguide's Lazy Pirate: with no report within ``attempt_timeout_s`` the
client drops its command socket, opens a new one and sends the *same* packet (same
``cmd_id``), which the agent executes at most once.

When :meth:`GroundClient.send` stops waiting, what it says agrees with what happened:

- *timeout* (:class:`CommandTimeout`): it never ran: the link took none of its attempts, or the
  agent said it never received it (:meth:`GroundClient.status`, COMMAND_STATUS);
- *unknown* (:class:`CommandOutcomeUnknown`): it left the ground and its outcome has not come:
  the agent acknowledged it and the completion is late, or no report came at all (out of
  contact its reports wait in the agent's packet store and come later, played back). The
  client keeps listening: a late report, live or played back, settles the result
  (``settled_listeners``); :meth:`GroundClient.ask` sends the same packet again, which the agent
  answers from its retry cache or command journal without running it again (or runs now, if it
  never arrived); :meth:`GroundClient.status` asks with COMMAND_STATUS, which runs nothing.

Every packet is taken once (:mod:`ground.completeness`): a packet already here (a reply and
its stream copy, a packet played back again) is dropped before listeners, the archive or the
verification handling see it, and counted (``duplicates``); :meth:`GroundClient.poll` still
returns it, marked ``duplicate``, as what came off the link. Playback containers, TM(15,131),
are unwrapped: each packet in them is taken as if received on the stream, flagged
``played_back``, not fed to the live gap count (its count is old), and never made the
"latest" value over a newer one. :meth:`GroundClient.acknowledge_store` tells the agent what
arrived (TC(15,130)); the ground server calls it every second.

CFDP PDUs (TM(141,1) on APID FILES) go to ``file_sink`` when one is set (:mod:`ground.files`)
and nowhere else: not to listeners, the archive, the gap count or the store acknowledgements.
"""

from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary, FailureCode
from flight.link.messages import (
    MAX_ACK_RUNS,
    Codec,
    EventRecord,
    HkRecord,
    ParamRecord,
    PlanRecord,
    PlaybackRecord,
    Stage,
    Verification,
)
from flight.link.packets import (
    ACK_ACCEPTANCE,
    ACK_COMPLETION,
    GapCounter,
    PacketError,
    Service,
    Subtype,
    Telemetry,
    unpack,
)
from flight.link.sdls import KeyFileError, SealingLink
from flight.link.transport import GroundLink, LinkConfigError, open_ground_link
from ground.completeness import CompletenessTracker, packet_key


DEFAULT_ACK_FLAGS = ACK_ACCEPTANCE | ACK_COMPLETION  # the success reports asked for, unless told otherwise
RESTART_TOLERANCE_S = 1.0  # packet times resolve 1 ms; this absorbs clock adjustments, not a restart
KEEP_UNSETTLED = 256  # commands whose outcome is unknown, still listened for (the oldest go first)
MAX_POLL_MS = 3_600_000  # one wait of the poller at most: ZeroMQ takes no more than a C int of milliseconds


class CommandTimeout(TimeoutError):
    """The command never ran as far as the ground can tell: the link took none of its attempts,
    or the agent said it never received it. ``result``: the command as far as the ground knows
    it (None where the caller had none)."""

    def __init__(self, message: str, result: CommandResult | None = None):
        super().__init__(message)
        self.result = result


class CommandOutcomeUnknown(CommandTimeout):
    """The command left the ground but its outcome did not come in time (acknowledged with no
    completion, or no report at all): it may have run. Not a timeout in meaning; a :class:`CommandTimeout` in type, so
    callers that only know timeouts still stop. The client keeps listening for the late report
    (``GroundClient.unsettled``) and can ask the agent again (``GroundClient.ask``)."""


@dataclass
class CommandResult:
    name: str
    args: dict[str, Any]
    cmd_id: int
    opcode: int = 0
    request_id: int = 0
    attempts: int = 0
    reports: list[Verification] = field(default_factory=list)
    sent_at_s: float = 0.0
    refused: str = ""  # refused or ended on the ground (not approved, cancelled, timed out at the server)
    gave_up: bool = False  # the sender stopped waiting before a final report: "unknown" or "timeout"
    never_received: bool = False  # the agent said so (COMMAND_STATUS), or no attempt left the ground
    handed: int = 0  # attempts the link took (a full queue refuses one)
    ack_flags: int = DEFAULT_ACK_FLAGS  # the success reports the command asked for (packets.ACK_*)

    def stage_reached(self, stage: Stage) -> bool:
        return any(r.stage is stage and r.success for r in self.reports)

    @property
    def failure(self) -> Verification | None:
        return next((r for r in self.reports if not r.success), None)

    @property
    def completed(self) -> bool:
        return self.stage_reached(Stage.COMPLETED)

    @property
    def final(self) -> bool:
        return bool(self.refused) or any(r.final for r in self.reports)

    @property
    def failed(self) -> bool:
        return bool(self.refused) or self.failure is not None

    @property
    def result(self) -> dict[str, Any]:
        done = next((r for r in self.reports if r.stage is Stage.COMPLETED and r.success), None)
        return done.result if done else {}

    @property
    def acknowledged(self) -> bool:
        """The agent said it has the command (any report that is not a failure)."""
        return any(r.success for r in self.reports)

    @property
    def outcome(self) -> str:
        """'completed', 'failed at <stage>: CODE reason', the ground's refusal; once the sender
        gave up waiting, 'unknown' (no final report: it may have run, its reports may be on
        board) or 'timeout' (the agent said it never received it, COMMAND_STATUS, or it never
        left the ground); else the last stage reached."""
        fail = self.failure
        if fail is not None:
            return f"failed at {fail.stage.value}: {fail.code.name} {fail.reason}"
        if self.refused:
            return self.refused
        if self.completed:
            return Stage.COMPLETED.value
        if self.gave_up:
            return "timeout" if self.never_received else "unknown"
        for stage in (Stage.STARTED, Stage.ACCEPTED):
            if self.stage_reached(stage):
                return stage.value
        return "sent" if self.attempts else "not sent"


@dataclass(frozen=True)
class Received:
    """One telemetry packet as the ground took it in; ``played_back``: it came inside a playback
    container (TM(15,131)), late, with its own old sequence count and time; ``duplicate``: a
    copy of a packet already taken in (only :meth:`GroundClient.poll` returns those)."""

    raw: bytes
    packet: Telemetry | None
    record: Verification | HkRecord | EventRecord | ParamRecord | PlanRecord | None
    gap: int = 0
    error: str = ""
    played_back: bool = False
    duplicate: bool = False  # the ground had it already: poll() returns it, listeners never see it


_WAIT_ACK = {"sent": 0, "accepted": ACK_ACCEPTANCE, "completed": ACK_COMPLETION}


MAX_UPTIME_S = 1e10  # three centuries: an uptime past it is a hostile or corrupt value, not a board's


def _started_s(time_s: float, uptime: Any) -> float | None:
    """When the agent started (its packet's time less its uptime), or None where the uptime is no
    number a board could report (a hostile 1e308 overflowed the arithmetic after it)."""
    if isinstance(uptime, (int, float)) and not isinstance(uptime, bool) and 0 <= uptime <= MAX_UPTIME_S:
        started = time_s - uptime
        return started if math.isfinite(started) else None
    return None


class GroundClient:
    def __init__(
        self,
        link: str | GroundLink,
        dictionary: Dictionary = DICTIONARY,
        source_id: int = 1,
        keep_events: int = 1000,
        tracker: CompletenessTracker | None = None,
        clock: Callable[[], float] = time.time,
    ):
        """``tracker``: what the ground has of each source's sequence (a new one by default);
        ``clock``: the ground's clock (Unix s) that times reception, hence passes."""
        self.link = open_ground_link(link) if isinstance(link, str) else link
        self.dictionary = dictionary
        self.codec = Codec(dictionary)
        self.source_id = source_id
        self.clock = clock
        self.command_timeout_s = 5.0  # send()'s wait for the final report when the caller names none
        self.ack_flags = DEFAULT_ACK_FLAGS  # the success reports a command asks for when the caller names none
        self.tracker = tracker if tracker is not None else CompletenessTracker()
        # live packets only: played-back ones carry old counts. The tracker's boots (housekeeping's uptime) tell a
        # wrap past many lost packets from a restart (found in audit: 783 lost across the wrap counted as none)
        self.gaps = GapCounter(self.tracker.boot_between)
        self.bad_packets = 0
        self.internal_errors = 0  # failures taking a packet in, or in a listener: each costs that packet only
        self.last_internal_error = ""
        self.duplicates = 0  # packets dropped because the ground already had them
        self.played_back = 0  # new packets taken out of playback containers
        self.store_acks = 0  # acknowledgements sent to the agent's packet store
        self.store_acks_refused = 0  # ... that the link's queue refused
        self.latest: dict[str, tuple[Any, float]] = {}  # channel -> (value, packet time)
        self.events: deque[EventRecord] = deque(maxlen=keep_events)
        self.parameters: dict[str, Any] = {}  # the agent's parameter values, as it last reported them
        self.listeners: list[Callable[[Received], None]] = []
        # CFDP PDUs (TM(141,1) on APID FILES) go here, not to the listeners: the file service's
        # (ground.files). CFDP is its own retransmission: no key, no gap count, no archive row.
        self.file_sink: Callable[[bytes], None] | None = None
        self.file_pdus = 0
        self.settled_listeners: list[Callable[[CommandResult], None]] = []  # an unknown outcome came
        self.agent_dict_hash: str | None = None
        self.agent_restarts = 0
        self._agent_started_s: float | None = None
        self._params_time_s = -float("inf")
        self._pending: dict[int, CommandResult] = {}
        self._unsettled: OrderedDict[int, CommandResult] = OrderedDict()  # given up on, still listened for
        self._packets: dict[int, bytes] = {}  # cmd_id -> its TC, while pending or unsettled: to ask again
        self._resend: dict[int, tuple[bytes, float, int]] = {}  # submitted: cmd_id -> (packet, next try, tries left)
        self._poller = zmq.Poller()
        self._items: list[Any] = []
        self._register()

    def _register(self) -> None:
        """(Re-)register the link's sockets or fds: a retry's new DEALER, a reopened serial port."""
        items = self.link.pollables()
        if items != self._items:
            self._poller = zmq.Poller()
            for item in items:
                self._poller.register(item, zmq.POLLIN)
            self._items = items

    # --- receiving -----------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> list[Received]:
        """Wait up to ``timeout_s`` for telemetry, take in all that came, return it decoded: the
        packets of playback containers unwrapped, copies of packets already here included but
        marked ``duplicate`` (listeners, values and command results never see those). One wait is at most
        :data:`MAX_POLL_MS` (found in audit: ``send --timeout 3e6`` on a direct link ended in an OverflowError
        traceback once the command was accepted); callers wait in a loop."""
        self.link.flush()
        self._register()
        if self._items:
            if timeout_s > 0:
                self._poller.poll(min(int(timeout_s * 1000) + 1, MAX_POLL_MS))
            got = self.link.receive_tagged()
        else:  # nothing to wait on (a serial port being reopened, a memory link): what is there, else a nap
            got = self.link.receive_tagged()
            if not got and timeout_s > 0:
                time.sleep(min(timeout_s, 0.1))
                got = self.link.receive_tagged()
        out = [item for raw, stream in got for item in self._take(raw, stream)]
        self.link.flush()
        return out

    def _take(self, raw: bytes, stream: bool = True) -> list[Received]:
        """One packet off the link: the packets it holds (itself, or those of a playback
        container), each handed to every listener unless the ground already had it."""
        items: list[Received] = []
        self._intake(raw, stream, False, items)
        for item in items:
            if not item.duplicate:
                for listener in self.listeners:
                    try:
                        listener(item)
                    except Exception as exc:  # noqa: BLE001 - one listener's failure costs it this packet, no more
                        self.internal_errors += 1
                        self.last_internal_error = f"a listener: {type(exc).__name__}: {exc}"[:200]
        return items

    def _intake(self, raw: bytes, stream: bool, played_back: bool, out: list[Received]) -> None:
        """One packet (a playback container's inner ones each on their own): what it holds into
        ``out``. A failure no code here foresaw (a bug, a value no check thought of) costs this
        packet only, counted in :attr:`internal_errors`, which the server's status shows: one that
        failed before it was taken in goes to the listeners as a bad packet (archived raw), one
        that failed after (in what it sets here) is archived as it was taken; the packets around
        it go on."""
        before = len(out)
        try:
            self._intake_one(raw, stream, played_back, out)
        except Exception as exc:  # noqa: BLE001 - said, counted, and the next packet is taken in
            self.internal_errors += 1
            self.last_internal_error = f"{type(exc).__name__}: {exc}"[:200]
            if len(out) == before:  # failed before it was taken in: kept raw, as a bad packet
                self.bad_packets += 1
                out.append(Received(raw, None, None, error=f"not taken in: {self.last_internal_error}",
                                    played_back=played_back))
            # else taken in (archived with what it meant) and failed in what it sets here: counted

    def _intake_one(self, raw: bytes, stream: bool, played_back: bool, out: list[Received]) -> None:
        try:
            packet = unpack(raw)
            if not isinstance(packet, Telemetry):
                raise PacketError("type", "a telecommand arrived on the telemetry path")
        except PacketError as exc:
            self.bad_packets += 1
            out.append(Received(raw, None, None, error=str(exc), played_back=played_back))
            return
        if self.file_sink is not None and packet.apid == Apid.FILES:
            pdu = Codec.file_pdu(packet)
            if pdu is not None:
                self.file_pdus += 1
                self.file_sink(pdu)
                return
        container = packet.service == Service.STORAGE and packet.subtype == Subtype.PLAYBACK
        # A container is made for the link and never stored on board: no key of its own to keep.
        key = packet_key(packet.apid, packet.seq_count, packet.time_s)
        new = container or self.tracker.add(*key, self.clock(), played_back)
        try:
            record = self.codec.decode_tm(packet)
            if isinstance(record, PlaybackRecord) and played_back:
                raise PacketError("nested", "a playback container inside a playback container")
        except PacketError as exc:
            record, error = None, exc
        else:
            error = None
        if isinstance(record, HkRecord):
            try:
                started_s = _started_s(record.time_s, record.values.get("uptime_s"))
                if started_s is not None:
                    # counts restart there; the boot still ran at this packet's time. Told before its count is
                    # judged: housekeeping after a silence says whether the count that went back is a wrap
                    self.tracker.boot_at(int(round(started_s * 1000.0)), int(round(record.time_s * 1000.0)))
            except Exception as exc:  # noqa: BLE001 - costs the boot it tells of, not the packet (taken in below)
                self.internal_errors += 1
                self.last_internal_error = f"{type(exc).__name__}: {exc}"[:200]
        # The live sequence as the stream carries it, copies included (a reply's stream copy
        # keeps the count going); a played-back packet's count is old.
        # Judged by the agent's boots for the agent's packets only: the ground's own (APID GROUND, the server's
        # playback containers) are numbered by the server, which has boots of its own (found in review)
        at_ms = None if packet.apid == Apid.GROUND else key[2]
        gap = self.gaps.observe(packet.apid, packet.seq_count, at_ms) if stream and not played_back else 0
        if error is not None:
            if new:
                self.bad_packets += 1
            else:
                self.duplicates += 1
            out.append(Received(raw, None, None, error=str(error), played_back=played_back, duplicate=not new))
            return
        if not new:  # returned by poll() as what came, marked; nothing else sees it
            self.duplicates += 1
            out.append(Received(raw, packet, record, gap, played_back=played_back, duplicate=True))
            return
        if isinstance(record, PlaybackRecord):
            for inner in record.packets:
                self._intake(inner, False, True, out)
            return
        if played_back:
            self.played_back += 1
        out.append(Received(raw, packet, record, gap, played_back=played_back))
        if isinstance(record, Verification):
            self._report(record)
        elif isinstance(record, HkRecord):
            if not played_back:
                self._notice_restart(packet.apid, record.values, record.time_s)
                if "dict_hash" in record.values:
                    self.agent_dict_hash = record.values["dict_hash"]
            for name, value in record.values.items():
                # A played-back value is history: it is the latest only if nothing newer came.
                if not played_back or record.time_s >= self.latest.get(name, (None, -float("inf")))[1]:
                    self.latest[name] = (value, record.time_s)
        elif isinstance(record, EventRecord):
            self.events.append(record)
        elif isinstance(record, ParamRecord):
            if record.time_s >= self._params_time_s or not played_back:
                self.parameters.update(record.values)
                self._params_time_s = max(self._params_time_s, record.time_s)

    def _report(self, record: Verification) -> None:
        """A PUS 1 report: onto its command's result, once per stage, pending or unsettled."""
        pending = self._pending.get(record.cmd_id)
        unsettled = pending is None
        if unsettled:
            pending = self._unsettled.get(record.cmd_id)
        # The same report can come twice (reply and stream, a retry, a journal's answer): keep one.
        if pending is None or record.opcode != pending.opcode or any(
            r.stage is record.stage and r.success == record.success for r in pending.reports
        ):
            return
        pending.reports.append(record)
        pending.request_id = record.request_id
        if unsettled and pending.final:
            del self._unsettled[record.cmd_id]
            self._packets.pop(record.cmd_id, None)
            for listener in self.settled_listeners:
                listener(pending)

    def _notice_restart(self, apid: int, values: dict[str, Any], time_s: float) -> None:
        """An agent restart shows as a new boot count or a new start time (packet time minus
        uptime); sequence counts alone cannot tell when the first packets after it were missed."""
        boot = values.get("boot_count")
        old_boot = self.latest.get("boot_count", (None, 0))[0]
        started_s = _started_s(time_s, values.get("uptime_s"))
        moved = (started_s is not None and self._agent_started_s is not None
                 and abs(started_s - self._agent_started_s) > RESTART_TOLERANCE_S)
        if (boot is not None and old_boot is not None and boot != old_boot) or moved:
            self.agent_restarts += 1
            self.gaps.forget(apid)
        if started_s is not None:
            self._agent_started_s = started_s

    def wait_for(self, predicate: Callable[[Received], bool], timeout_s: float) -> Received:
        """Poll until a packet satisfies ``predicate``; raise TimeoutError with what was seen."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching telemetry within {timeout_s} s ({seen} packets seen)")
            for item in self.poll(min(remaining, 0.2)):
                seen += 1
                if predicate(item):
                    return item

    # --- commanding ----------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0, interval_s: float = 0.2) -> None:
        """Wait until the agent answers a PUS ping (17,1) on the telemetry stream itself.

        A ZeroMQ subscriber joins some time after it connects and misses what was published
        before; a pong seen on the stream proves it will miss nothing from now on.
        """
        from flight.link.packets import pack_tc

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = getattr(self.link, "stream_packets", None)
            self.link.send(pack_tc(Apid.AGENT, self.codec.seq.next(Apid.AGENT), Service.TEST, Subtype.PING,
                                   source_id=self.source_id))
            end = min(deadline, time.monotonic() + interval_s)
            while time.monotonic() < end:
                for item in self.poll(end - time.monotonic()):
                    if item.packet is not None and item.packet.service == Service.TEST and (
                        before is None or self.link.stream_packets > before
                    ):
                        return
        raise TimeoutError(f"no answer to a PUS ping on the telemetry stream within {timeout_s} s")

    def dictionary_matches(self, timeout_s: float = 3.0) -> bool | None:
        """Compare the agent's dictionary hash with ours; None if the agent said nothing in time."""
        if self.agent_dict_hash is None:
            try:
                self.wait_for(lambda item: self.agent_dict_hash is not None, timeout_s)
            except TimeoutError:
                return None
        return self.agent_dict_hash == self.dictionary.version_hash

    def send(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        wait: str = "completed",
        timeout_s: float | None = None,
        retries: int = 3,
        attempt_timeout_s: float = 1.0,
        on_report: Callable[[Verification], None] | None = None,
        cmd_id: int | None = None,
        ack_flags: int | None = None,
    ) -> CommandResult:
        """Send a command and wait for ``wait`` ('sent', 'accepted', 'completed'), at most
        ``timeout_s`` (default :attr:`command_timeout_s`, 5 s). ``ack_flags``: the success reports
        to ask for (default :attr:`ack_flags`); the stage waited for is always among them, and
        acceptance where ``retries`` > 0.

        Arguments are checked against the dictionary first (ArgumentError, nothing sent).
        Returns the result, failed or not. When the wanted stage and no failure arrived within
        ``timeout_s``: :class:`CommandOutcomeUnknown` if the agent acknowledged the command (the
        client goes on listening for its outcome: :meth:`unsettled`, ``settled_listeners``,
        :meth:`ask`), else :class:`CommandTimeout`; either carries the result (``gave_up``). With
        ``wait="sent"``, :class:`CommandTimeout` where the link took no attempt (a full queue).
        """
        if wait not in ("sent", "accepted", "completed"):
            raise ValueError(f"wait must be sent, accepted or completed, not {wait!r}")
        timeout_s = self.command_timeout_s if timeout_s is None else timeout_s
        flags = self._flags(ack_flags, _WAIT_ACK[wait], retries)
        command = self.dictionary.command(name)
        checked = command.validate_args(args or {})
        packet, cmd_id = self.codec.encode_checked(command, checked, cmd_id, self.source_id, ack_flags=flags)
        result = CommandResult(command.name, checked, cmd_id, command.opcode, sent_at_s=time.time(), ack_flags=flags)
        self._pending[cmd_id] = result
        self._packets[cmd_id] = packet
        try:
            self._send_attempt(result, packet)
            if wait == "sent":  # the link took it (found in audit: a full queue's refusal was "sent", exit 0)
                if result.handed:
                    return result
                result.gave_up = result.never_received = True
                raise CommandTimeout(f"{command.name}: timeout: the link took none of {result.attempts} attempt(s): "
                                     "it never left the ground", result)
            target = Stage.ACCEPTED if wait == "accepted" else Stage.COMPLETED
            deadline = time.monotonic() + timeout_s
            next_retry = time.monotonic() + attempt_timeout_s
            shown = 0
            while True:
                now = time.monotonic()
                if result.final or result.stage_reached(target):
                    return result
                if now >= deadline:
                    last = result.outcome
                    result.gave_up = True
                    if result.acknowledged:
                        self._unsettle(result)
                        raise CommandOutcomeUnknown(
                            f"{command.name}: outcome unknown: the agent reported it {last}, and no {target.value} "
                            f"report came within {timeout_s} s after {result.attempts} attempt(s); it may have run. "
                            "Its report can still come (played back from the agent's store); asking again "
                            f"with the same cmd_id ({cmd_id}) is answered without running it twice", result)
                    if result.handed:
                        self._unsettle(result)
                        raise CommandOutcomeUnknown(
                            f"{command.name}: outcome unknown: no report at all within {timeout_s} s after "
                            f"{result.attempts} attempt(s). It may never have reached the agent, or it ran and "
                            "its reports wait on board (played back at the next pass); COMMAND_STATUS "
                            f"cmd_id={cmd_id} asks the agent without running anything", result)
                    result.never_received = True
                    raise CommandTimeout(
                        f"{command.name}: timeout: the link took none of {result.attempts} attempt(s) in "
                        f"{timeout_s} s: it never left the ground", result)
                retrying = not result.reports and result.attempts <= retries
                if retrying and now >= next_retry:
                    self.link.reset_commands()
                    self._send_attempt(result, packet)
                    next_retry = now + attempt_timeout_s
                self.poll(max(0.0, (min(deadline, next_retry) if retrying else deadline) - now))
                if on_report is not None:
                    for report in result.reports[shown:]:
                        on_report(report)
                    shown = len(result.reports)
        finally:
            self._pending.pop(cmd_id, None)
            if cmd_id not in self._unsettled:
                self._packets.pop(cmd_id, None)

    def _flags(self, ack_flags: int | None, waited: int, retries: int) -> int:
        """The flags a command goes with: the caller's (else :attr:`ack_flags`), the stage waited
        for, and acceptance where it is retried (Lazy Pirate resends until the first report)."""
        flags = (self.ack_flags if ack_flags is None else ack_flags) | waited
        return flags | ACK_ACCEPTANCE if retries > 0 else flags

    def _unsettle(self, result: CommandResult) -> None:
        """Keep listening for a command given up on while its outcome is unknown."""
        self._unsettled[result.cmd_id] = result
        self._unsettled.move_to_end(result.cmd_id)
        while len(self._unsettled) > KEEP_UNSETTLED:
            old, _ = self._unsettled.popitem(last=False)
            self._packets.pop(old, None)

    def unsettled(self) -> list[CommandResult]:
        """Commands :meth:`send` gave up on whose outcome is unknown, oldest first, still listened for."""
        return list(self._unsettled.values())

    def ask(self, cmd_id: int) -> bool:
        """Send command ``cmd_id`` again, the same packet: the agent answers a cmd_id it knows
        from its retry cache or command journal and never runs it twice; the answer settles an
        unknown outcome. False if the client no longer has the command."""
        packet = self._packets.get(cmd_id)
        result = self._pending.get(cmd_id) or self._unsettled.get(cmd_id)
        if packet is None or result is None:
            return False
        self._send_attempt(result, packet)
        return True

    def status(self, cmd_id: int, timeout_s: float = 5.0) -> dict[str, Any]:
        """Ask the agent what became of ``cmd_id`` (COMMAND_STATUS: it runs nothing) and settle
        the command if this client follows it: ``not_received`` makes its outcome 'timeout' (it
        never ran), ``completed``/``failed``/``interrupted`` its final report. Returns the
        agent's answer; raises :class:`CommandTimeout` if none came."""
        asked = self.send("COMMAND_STATUS", {"cmd_id": cmd_id}, timeout_s=timeout_s)
        if not asked.completed:
            raise CommandTimeout(f"COMMAND_STATUS for {cmd_id}: {asked.outcome}", asked)
        answer = asked.result
        self.settle_from_status(cmd_id, answer)
        return answer

    def settle_from_status(self, cmd_id: int, answer: dict[str, Any]) -> CommandResult | None:
        """Apply the agent's COMMAND_STATUS answer to a command this client follows."""
        result = self._pending.get(cmd_id) or self._unsettled.get(cmd_id)
        state = answer.get("state")
        if result is None or result.final or state not in ("completed", "failed", "interrupted", "not_received"):
            return result
        if state == "not_received":
            result.gave_up = result.never_received = True
        else:
            code = FailureCode.__members__.get(str(answer.get("code")), FailureCode.EXECUTION_ERROR)
            reason = str(answer.get("reason", "")) or state
            ok = state == "completed"
            result.reports.append(Verification(Stage.COMPLETED, ok, result.request_id, cmd_id, result.opcode,
                                               FailureCode.NONE if ok else code, "" if ok else reason,
                                               {"note": "from the agent's COMMAND_STATUS"} if ok else {}))
        self._unsettled.pop(cmd_id, None)
        self._packets.pop(cmd_id, None)
        for listener in self.settled_listeners:
            listener(result)
        return result

    def acknowledge_store(self, max_runs: int = MAX_ACK_RUNS) -> int:
        """Tell the agent's packet store what arrived since the last acknowledgement (TC(15,130));
        with nothing new, an empty one: "the ground is listening", which starts its playback.
        Returns how many runs went. What one TC cannot carry goes with the next; an
        acknowledgement lost on the way up costs a playback the tracker then acknowledges again."""
        runs = self.tracker.take_runs(max_runs)
        if self.link.send(self.codec.encode_store_ack(runs)):
            self.store_acks += 1
        else:
            self.store_acks_refused += 1
        return len(runs)

    # --- commanding without waiting (the ground server keeps many in flight) -----------------

    def submit(self, name: str, args: dict[str, Any], retries: int = 3, attempt_timeout_s: float = 1.0,
               cmd_id: int | None = None, ack_flags: int | None = None) -> CommandResult:
        """Send a command and return at once; its reports collect on the result as :meth:`poll`
        takes them in, and :meth:`retry_due` resends it (same ``cmd_id``) while none has come.
        Call :meth:`forget` once it is final. ``ack_flags`` as :meth:`send` (completion is always
        asked for, and acceptance where ``retries`` > 0)."""
        flags = self._flags(ack_flags, ACK_COMPLETION, retries)
        command = self.dictionary.command(name)
        checked = command.validate_args(args)
        packet, cmd_id = self.codec.encode_checked(command, checked, cmd_id, self.source_id, ack_flags=flags)
        result = CommandResult(command.name, checked, cmd_id, command.opcode, sent_at_s=time.time(), ack_flags=flags)
        self._pending[cmd_id] = result
        self._packets[cmd_id] = packet
        self._send_attempt(result, packet)
        self._resend[cmd_id] = (packet, time.monotonic() + attempt_timeout_s, retries)
        self._attempt_timeout_s = attempt_timeout_s
        return result

    def retry_due(self) -> None:
        """Lazy Pirate for submitted commands: resend those with no report after their attempt time."""
        now = time.monotonic()
        due = [cmd_id for cmd_id, (_, at, left) in self._resend.items() if at <= now]
        if not due:
            return
        reset = False
        for cmd_id in due:
            packet, _, left = self._resend[cmd_id]
            result = self._pending.get(cmd_id)
            if result is None or result.reports or left <= 0:
                del self._resend[cmd_id]
                continue
            if not reset:
                self.link.reset_commands()
                reset = True
            self._send_attempt(result, packet)
            self._resend[cmd_id] = (packet, now + self._attempt_timeout_s, left - 1)

    def forget(self, cmd_id: int) -> None:
        self._pending.pop(cmd_id, None)
        self._resend.pop(cmd_id, None)
        self._unsettled.pop(cmd_id, None)
        self._packets.pop(cmd_id, None)

    def _send_attempt(self, result: CommandResult, packet: bytes) -> None:
        result.attempts += 1
        if self.link.send(packet):
            result.handed += 1
        else:
            print(f"warning: command queue full, {result.name} attempt {result.attempts} dropped", file=sys.stderr)

    def lost_reason(self) -> str:
        """Why the connection that brings this client everything has ended for good ("" while it stands). A direct
        link has none to lose: the agent going silent is the link's staleness, not this."""
        return ""

    def close(self) -> None:
        self.link.close()


def direct_client(link_url: str, tc_keys: str | None = None, zmq_server_public: str | None = None,
                  zmq_client_secret: str | None = None, tm_auth: bool = False) -> GroundClient:
    """A client on a link URL (``--direct``), sealing its telecommands with the key file
    ``tc_keys`` when the agent authenticates them (flight/link/sdls.py), and a CurveZMQ client
    of the agent with ``zmq_server_public`` (its public certificate) and ``zmq_client_secret``
    (this ground's secret one, listed in the agent's allow-list; flight/link/curve.py). ``tm_auth``:
    take only telemetry sealed with the key file's telemetry slot (an agent with ``tm_auth``). Options that do
    not go together, or a key file that cannot be used, are :class:`LinkConfigError`: bad input, exit 2 at the
    command line (found in audit: SystemExit with a message, exit 1, "the command failed")."""
    from flight.link.curve import CurveKeyError, client_keys

    curve = None
    if zmq_server_public or zmq_client_secret:
        if not (zmq_server_public and zmq_client_secret):
            raise LinkConfigError("--zmq-server-public and --zmq-client-secret go together")
        try:
            curve = client_keys(zmq_server_public, zmq_client_secret)
        except CurveKeyError as exc:
            raise LinkConfigError(f"CurveZMQ keys: {exc}") from None
    if tm_auth and not tc_keys:
        raise LinkConfigError("--tm-auth needs --tc-keys (its telemetry slot checks the telemetry)")
    try:
        if not tc_keys and curve is None:
            return GroundClient(link_url)
        link = open_ground_link(link_url, curve=curve)
    except OSError as exc:  # a serial port that is not there, or busy (pyserial's SerialException)
        raise LinkConfigError(f"{link_url}: the link cannot be opened: {exc.strerror or exc}") from None
    if not tc_keys:
        return GroundClient(link)
    try:
        return GroundClient(SealingLink.from_key_file(link, tc_keys, tm_auth=tm_auth))
    except KeyFileError as exc:
        link.close()
        raise LinkConfigError(f"--tc-keys: {exc}") from None
