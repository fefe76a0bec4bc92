"""The ground's end of the link: send commands and follow their verification, take in telemetry.

One object for consoles, procedures, the archive and the HIL harness. Meanings, as
procedures rely on them:

- *sent*: the packet left this process (the link accepted it);
- *accepted*: the agent decoded it, found the command and its arguments valid (PUS 1,1);
- *started* / *completed*: the agent began and finished executing it (PUS 1,3 / 1,7);
- a *failure* at any stage (PUS 1,2 / 1,4 / 1,8) is final and carries a code and reason.

Retries follow the zguide's Lazy Pirate: with no report within ``attempt_timeout_s`` the
client drops its command socket, opens a new one and sends the *same* packet (same
``cmd_id``), which the agent executes at most once.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary
from flight.link.messages import Codec, EventRecord, HkRecord, ParamRecord, PlanRecord, Stage, Verification
from flight.link.packets import GapCounter, PacketError, Telemetry, unpack
from flight.link.transport import GroundLink, open_ground_link


RESTART_TOLERANCE_S = 1.0  # packet times resolve 1 ms; this absorbs clock adjustments, not a restart


class CommandTimeout(TimeoutError):
    """No final verification report arrived in time; the command may or may not have run."""


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
    def outcome(self) -> str:
        """'completed', 'failed at <stage>: CODE reason', or the last stage reached."""
        fail = self.failure
        if fail is not None:
            return f"failed at {fail.stage.value}: {fail.code.name} {fail.reason}"
        if self.refused:
            return self.refused
        for stage in (Stage.COMPLETED, Stage.STARTED, Stage.ACCEPTED):
            if self.stage_reached(stage):
                return stage.value
        return "sent" if self.attempts else "not sent"


@dataclass(frozen=True)
class Received:
    """One telemetry packet as the ground took it in."""

    raw: bytes
    packet: Telemetry | None
    record: Verification | HkRecord | EventRecord | ParamRecord | PlanRecord | None
    gap: int = 0
    error: str = ""


class GroundClient:
    def __init__(
        self,
        link: str | GroundLink,
        dictionary: Dictionary = DICTIONARY,
        source_id: int = 1,
        keep_events: int = 1000,
    ):
        self.link = open_ground_link(link) if isinstance(link, str) else link
        self.dictionary = dictionary
        self.codec = Codec(dictionary)
        self.source_id = source_id
        self.gaps = GapCounter()
        self.bad_packets = 0
        self.latest: dict[str, tuple[Any, float]] = {}  # channel -> (value, packet time)
        self.events: deque[EventRecord] = deque(maxlen=keep_events)
        self.parameters: dict[str, Any] = {}  # the agent's parameter values, as it last reported them
        self.listeners: list[Callable[[Received], None]] = []
        self.agent_dict_hash: str | None = None
        self.agent_restarts = 0
        self._agent_started_s: float | None = None
        self._pending: dict[int, CommandResult] = {}
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
        """Wait up to ``timeout_s`` for telemetry, take in all that came, return it decoded."""
        self.link.flush()
        self._register()
        if timeout_s > 0:
            if self._items:
                self._poller.poll(int(timeout_s * 1000) + 1)
            else:  # the link has nothing to wait on (a serial port being reopened)
                time.sleep(min(timeout_s, 0.1))
        out = [self._take(raw, stream) for raw, stream in self.link.receive_tagged()]
        self.link.flush()
        return out

    def _take(self, raw: bytes, stream: bool = True) -> Received:
        try:
            packet = unpack(raw)
            if not isinstance(packet, Telemetry):
                raise PacketError("type", "a telecommand arrived on the telemetry path")
            gap = self.gaps.observe(packet.apid, packet.seq_count) if stream else 0
            record = self.codec.decode_tm(packet)
        except PacketError as exc:
            self.bad_packets += 1
            item = Received(raw, None, None, error=str(exc))
        else:
            item = Received(raw, packet, record, gap)
            if isinstance(record, Verification):
                pending = self._pending.get(record.cmd_id)
                # The same report can come twice (reply and stream, or a retry): keep one.
                if pending is not None and record.opcode == pending.opcode and not any(
                    r.stage is record.stage and r.success == record.success for r in pending.reports
                ):
                    pending.reports.append(record)
                    pending.request_id = record.request_id
            elif isinstance(record, HkRecord):
                self._notice_restart(packet.apid, record.values, record.time_s)
                for name, value in record.values.items():
                    self.latest[name] = (value, record.time_s)
                if "dict_hash" in record.values:
                    self.agent_dict_hash = record.values["dict_hash"]
            elif isinstance(record, EventRecord):
                self.events.append(record)
            elif isinstance(record, ParamRecord):
                self.parameters.update(record.values)
        for listener in self.listeners:
            listener(item)
        return item

    def _notice_restart(self, apid: int, values: dict[str, Any], time_s: float) -> None:
        """An agent restart shows as a new boot count or a new start time (packet time minus
        uptime); sequence counts alone cannot tell when the first packets after it were missed."""
        boot, uptime = values.get("boot_count"), values.get("uptime_s")
        old_boot = self.latest.get("boot_count", (None, 0))[0]
        started_s = time_s - uptime if isinstance(uptime, (int, float)) else None
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
        from flight.link.apid import Apid
        from flight.link.packets import Service, Subtype, pack_tc

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
        timeout_s: float = 5.0,
        retries: int = 3,
        attempt_timeout_s: float = 1.0,
        on_report: Callable[[Verification], None] | None = None,
        cmd_id: int | None = None,
    ) -> CommandResult:
        """Send a command and wait for ``wait`` ('sent', 'accepted', 'completed').

        Arguments are checked against the dictionary first (ArgumentError, nothing sent).
        Returns the result, failed or not; raises :class:`CommandTimeout` only when the
        wanted stage and no failure arrived within ``timeout_s``.
        """
        if wait not in ("sent", "accepted", "completed"):
            raise ValueError(f"wait must be sent, accepted or completed, not {wait!r}")
        packet, cmd_id = self.codec.encode_command(name, args or {}, cmd_id, self.source_id)
        command = self.dictionary.command(name)
        result = CommandResult(command.name, command.validate_args(args or {}), cmd_id, command.opcode,
                               sent_at_s=time.time())
        self._pending[cmd_id] = result
        try:
            self._send_attempt(result, packet)
            if wait == "sent":
                return result
            target = Stage.ACCEPTED if wait == "accepted" else Stage.COMPLETED
            deadline = time.monotonic() + timeout_s
            next_retry = time.monotonic() + attempt_timeout_s
            shown = 0
            while True:
                now = time.monotonic()
                if result.final or result.stage_reached(target):
                    return result
                if now >= deadline:
                    raise CommandTimeout(
                        f"{command.name}: no {target.value} report within {timeout_s} s "
                        f"after {result.attempts} attempt(s); last stage: {result.outcome}"
                    )
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

    # --- commanding without waiting (the ground server keeps many in flight) -----------------

    def submit(self, name: str, args: dict[str, Any], retries: int = 3, attempt_timeout_s: float = 1.0,
               cmd_id: int | None = None) -> CommandResult:
        """Send a command and return at once; its reports collect on the result as :meth:`poll`
        takes them in, and :meth:`retry_due` resends it (same ``cmd_id``) while none has come.
        Call :meth:`forget` once it is final."""
        packet, cmd_id = self.codec.encode_command(name, args, cmd_id, self.source_id)
        command = self.dictionary.command(name)
        result = CommandResult(command.name, command.validate_args(args), cmd_id, command.opcode,
                               sent_at_s=time.time())
        self._pending[cmd_id] = result
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

    def _send_attempt(self, result: CommandResult, packet: bytes) -> None:
        result.attempts += 1
        if not self.link.send(packet):
            print(f"warning: command queue full, {result.name} attempt {result.attempts} dropped", file=sys.stderr)

    def close(self) -> None:
        self.link.close()
