"""Command dispatch with PUS service 1 verification and execute-once retries.

Every telecommand gets an answer (F Prime's rule): acceptance success or failure, then
start, then completion success or failure, each with the failure code and reason.
Reports for each ``cmd_id`` are cached, so a console retrying after a lost reply gets
the same reports again and the command does not run twice.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from flight.link.dictionary import ArgumentError, Command, FailureCode
from flight.link.messages import Codec, CommandRequest, Stage, Verification
from flight.link.packets import PacketError, Telecommand

RETRY_CACHE_COMMANDS = 512  # commands remembered for retries; far more than a console has in flight


class CommandFailed(Exception):
    """Raised by a guard or handler: the command fails with this code and reason."""

    def __init__(self, reason: str, code: FailureCode = FailureCode.EXECUTION_ERROR):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Handler:
    """How to run one command. ``guard`` decides whether it may start now (e.g. in this mode)."""

    run: Callable[[CommandRequest], dict[str, Any] | None]
    guard: Callable[[CommandRequest], None] | None = None


@dataclass
class DispatchCounters:
    accepted: int = 0
    rejected: int = 0
    executed: int = 0
    failed: int = 0
    duplicates: int = 0


class Dispatcher:
    def __init__(
        self,
        codec: Codec,
        send_report: Callable[[Any, bytes], None],
        now_s: Callable[[], float],
        on_event: Callable[..., None],
    ):
        self.codec = codec
        self.handlers: dict[str, Handler] = {}
        self.counters = DispatchCounters()
        self._send_report = send_report
        self._now_s = now_s
        self._event = on_event
        # cmd_id -> (digest of the TC's data, the reports sent): a retry must be the same command.
        self._cache: OrderedDict[int, tuple[bytes, list[bytes]]] = OrderedDict()

    def register(self, name: str, run: Callable[[CommandRequest], dict[str, Any] | None], guard=None) -> None:
        if name not in self.codec.dictionary.command_by_name:
            raise KeyError(f"no command {name} in the dictionary")
        self.handlers[name] = Handler(run, guard)

    def missing_handlers(self) -> list[str]:
        return [c.name for c in self.codec.dictionary.commands if c.name not in self.handlers]

    def handle(self, tc: Telecommand, peer: Any) -> None:
        """Run one TC(8,1) through acceptance, start and completion; every command gets a final report."""
        opcode, cmd_id = Codec.peek_cmd_id(tc)
        digest = hashlib.sha256(tc.app_data).digest()[:16]
        if cmd_id and cmd_id in self._cache:
            cached_digest, reports = self._cache[cmd_id]
            self._cache.move_to_end(cmd_id)
            if cached_digest == digest and reports:
                self.counters.duplicates += 1
                for report in reports:
                    self._send_report(peer, report)
                return
        sent: list[bytes] = []
        final = False

        def report(stage: Stage, ok: bool, code: FailureCode = FailureCode.NONE, reason: str = "", result=None) -> None:
            nonlocal final
            v = Verification(stage, ok, tc.request_id, cmd_id, opcode, code, reason, result or {})
            packet = self.codec.encode_verification(v, self._now_s())
            sent.append(packet)
            final = v.final
            self._send_report(peer, packet)

        try:
            if cmd_id and cmd_id in self._cache:  # same id, different content: refuse, keep the first
                self._reject(report, None, FailureCode.BAD_ARGUMENTS,
                             f"cmd_id {cmd_id} was already used for a different command; draw a new one")
                return
            self._run(tc, opcode, report)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the sender gets a final answer
            if not final:
                try:
                    self.counters.failed += 1
                    report(Stage.COMPLETED, False, FailureCode.EXECUTION_ERROR, f"{type(exc).__name__}: {exc}"[:200])
                except Exception:  # noqa: BLE001 - nothing more can be said about this command
                    pass
            raise
        finally:
            if cmd_id and sent and cmd_id not in self._cache:
                self._cache[cmd_id] = (digest, sent)
                while len(self._cache) > RETRY_CACHE_COMMANDS:
                    self._cache.popitem(last=False)

    def _run(self, tc: Telecommand, opcode: int, report) -> None:
        try:
            request = self.codec.decode_command(tc)
        except PacketError as exc:
            self._reject(report, None, FailureCode.MALFORMED_PACKET, str(exc))
            return
        except ArgumentError as exc:
            self._reject(report, self.codec.dictionary.command_by_opcode.get(opcode), exc.code, str(exc))
            return
        handler = self.handlers.get(request.command.name)
        if handler is None:
            self._reject(report, request.command, FailureCode.UNKNOWN_COMMAND, "no handler in this agent build")
            return
        self.counters.accepted += 1
        report(Stage.ACCEPTED, True)
        name = request.command.name
        if handler.guard is not None:
            try:
                handler.guard(request)
            except CommandFailed as exc:
                self.counters.failed += 1
                report(Stage.STARTED, False, exc.code, exc.reason)
                self._event("COMMAND_FAILED", name=name, reason=exc.reason[:200])
                return
        report(Stage.STARTED, True)
        self._event("COMMAND_DISPATCHED", name=name)
        try:
            result = handler.run(request)
        except CommandFailed as exc:
            self.counters.failed += 1
            report(Stage.COMPLETED, False, exc.code, exc.reason)
            self._event("COMMAND_FAILED", name=name, reason=exc.reason[:200])
            return
        except Exception as exc:  # noqa: BLE001 - a handler bug fails the command, never the agent
            self.counters.failed += 1
            reason = f"{type(exc).__name__}: {exc}"[:200]
            report(Stage.COMPLETED, False, FailureCode.EXECUTION_ERROR, reason)
            self._event("COMMAND_FAILED", name=name, reason=reason)
            return
        self.counters.executed += 1
        report(Stage.COMPLETED, True, result=result)

    def _reject(self, report, command: Command | None, code: FailureCode, reason: str) -> None:
        self.counters.rejected += 1
        report(Stage.ACCEPTED, False, code, reason)
        self._event("COMMAND_REJECTED", name=command.name if command else "?", reason=reason[:200])
