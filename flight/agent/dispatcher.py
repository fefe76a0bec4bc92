"""Command dispatch with PUS service 1 verification and execute-once retries.

Every telecommand gets an answer (F Prime's rule): acceptance success or failure, then
start, then completion success or failure, each with the failure code and reason. A success
report goes out only if the TC's PUS-C acknowledgement flags ask for it (the ground asks for
acceptance and completion unless told otherwise: a start report that leaves in the same turn
as the acceptance tells it nothing); a failure report always goes out.
Reports for each ``cmd_id`` are cached, so a console retrying after a lost reply gets
the same reports again and the command does not run twice (the successes its own flags ask
for: a retry may ask for a report the first attempt did not); across a restart the command
journal (``flight.agent.journal``) keeps that promise: a command it knows is answered with
its outcome, or as cut off by the reset, and never run again (a read-only command is not
journaled: it changes nothing, and a retry after a restart runs it again).

A handler returns its result map, raises :class:`CommandFailed`, or returns a
:class:`Deferred` when the work finishes later (a job handed to the compute worker): the
completion report then goes out when the deferred is completed or failed, and not before,
so ``completed`` always means the thing was done.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable

from flight.agent.journal import CommandJournal, JournalEntry
from flight.agent.ports import Component, EventPort
from flight.link.dictionary import ArgumentError, Command, FailureCode
from flight.link.messages import STAGE_ACK, Codec, CommandRequest, Stage, Verification
from flight.link.packets import PacketError, Telecommand
from flight.storage import printable, redact_paths


def describe_error(exc: BaseException) -> str:
    """An exception as a command's failure reason; a file error names its file, not the board's
    absolute path to it (SEC-006)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{type(exc).__name__}: {exc.strerror or 'error'} ({os.path.basename(str(exc.filename))})"
    return f"{type(exc).__name__}: {exc}"


# A word of a refusal past this many characters is a name off the wire (an unknown argument's), not ours: cut to
# it, as dictionary.brief cuts a value, so a 4 KiB name does not push out what the command takes
_LONG_WORD = re.compile(r"\S{41,}")


def said_refusal(reason: str) -> str:
    """A refusal's text as it goes to the ground: nothing unprintable (a newline forges no line, an escape
    sequence drives no terminal) and no word past 40 characters (found in audit: an unknown argument's 4 KiB
    name filled the report and the COMMAND_REJECTED event, its hint of what the command takes cut off)."""
    return _LONG_WORD.sub(lambda m: m.group()[:37] + "...", printable(reason))


RETRY_CACHE_COMMANDS = 512  # commands remembered for retries; far more than a console has in flight
# Final outcomes remembered this boot, for COMMAND_STATUS: more than the retry cache holds, and
# touched with it, so a command the cache still holds is never answered as running once it ended.
FINALS_KEPT = 2 * RETRY_CACHE_COMMANDS


class CommandFailed(Exception):
    """Raised by a guard or handler: the command fails with this code and reason."""

    def __init__(self, reason: str, code: FailureCode = FailureCode.EXECUTION_ERROR):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Unreportable(Exception):
    """A verification report that cannot be made, even with a success's result left out for a note: raised by
    the report before anything went out, so the command can still end, failed, in a report that can be."""


class ReportNotSent(Exception):
    """The link refused a verification report (its send raised). The command went on as if the report had been
    lost on the line, ended and kept for a retry; this is given after to the dispatcher's ``report_error`` port
    (the executive's internal error: counted and said), or raised where it has none."""


class Deferred:
    """A command that completes later: exactly one of :meth:`complete` or :meth:`fail`."""

    def __init__(self) -> None:
        self.outcome: tuple[bool, Any, FailureCode] | None = None
        self._then: Callable[[bool, Any, FailureCode], None] | None = None

    def complete(self, result: dict[str, Any] | None = None) -> None:
        self._settle(True, result or {}, FailureCode.NONE)

    def fail(self, reason: str, code: FailureCode = FailureCode.EXECUTION_ERROR) -> None:
        self._settle(False, reason, code)

    @property
    def settled(self) -> bool:
        return self.outcome is not None

    def _settle(self, ok: bool, value: Any, code: FailureCode) -> None:
        if self.outcome is not None:
            raise RuntimeError("a deferred command completes once")
        self.outcome = (ok, value, code)
        if self._then is not None:
            self._then(ok, value, code)

    def then(self, callback: Callable[[bool, Any, FailureCode], None]) -> None:
        self._then = callback
        if self.outcome is not None:
            callback(*self.outcome)


@dataclass(frozen=True)
class Handler:
    """How to run one command. ``guard`` decides whether it may start now (e.g. in this mode)."""

    run: Callable[[CommandRequest], dict[str, Any] | Deferred | None]
    guard: Callable[[CommandRequest], None] | None = None


@dataclass
class DispatchCounters:
    accepted: int = 0
    rejected: int = 0
    executed: int = 0
    failed: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class _Told:
    """One report a command was given, for a retry: ``packet`` as sent, or None where the
    command's flags did not ask for this success (made from ``verification`` if a retry does)."""

    verification: Verification
    time_s: float
    packet: bytes | None

    def packet_for(self, ack_flags: int, codec: Codec) -> bytes | None:
        """The report a retry with ``ack_flags`` gets (failures always), or None."""
        v = self.verification
        if v.success and not ack_flags & STAGE_ACK[v.stage]:
            return None
        if self.packet is not None:
            return self.packet
        try:
            return codec.encode_verification(v, self.time_s)
        except Exception:  # noqa: BLE001 - a result no report can carry: the success, without it
            return codec.encode_verification(replace(v, result={"note": "its result does not fit a report"}),
                                             self.time_s)


class Dispatcher(Component):
    """F Prime's CmdDispatcher: decode, check, route to the owning component, verify."""

    NAME = "dispatcher"
    COMMANDS = ("COMMAND_STATUS",)
    EVENTS = ("COMMAND_DISPATCHED", "COMMAND_REJECTED", "COMMAND_FAILED")
    CHANNELS = ("cmd_accepted", "cmd_rejected", "cmd_executed", "cmd_failed", "tc_duplicates")

    def __init__(self, codec: Codec, send_report: Callable[[Any, bytes], None], now_s: Callable[[], float],
                 emit: EventPort, counters: DispatchCounters | None = None, journal: CommandJournal | None = None,
                 report_error: Callable[[str, BaseException], None] | None = None):
        """``journal``: the on-disk record of commands started (flight.agent.journal), so that a
        command is never run twice, nor left unanswered, across a restart. ``report_error(where, exc)``: told of
        the reports the link refused (:class:`ReportNotSent`), never raised into whoever handed the dispatcher a
        command or completed one (found in review: raised into the scheduler, a time tag that ran was said "not
        released"; into the watchdog, a dead worker was restarted only after every waiting request had failed)."""
        self._report_error = report_error
        self.codec = codec
        self.journal = journal
        self.handlers_by_name: dict[str, Handler] = {}
        self.counters = counters or DispatchCounters()
        self._send_report = send_report
        self._now_s = now_s
        self._emit = emit
        # cmd_id -> (digest of the TC's data, the reports so far): a retry must be the same command.
        self._cache: OrderedDict[int, tuple[bytes, list[_Told]]] = OrderedDict()
        # Told of every command's final report (cmd_id, ok, reason): a sequence waits on its steps.
        self.on_final: list[Callable[[int, bool, str], None]] = []
        # cmd_id -> (ok, code, reason) of the final report, this boot: COMMAND_STATUS for what the
        # journal does not hold (refused at acceptance or start, before it was recorded; read-only).
        self._finals: OrderedDict[int, tuple[bool, int, str]] = OrderedDict()
        # Count changes the state file keeps at once (a power cut must not lose them): a command that is not
        # read-only starting and ending (its end may come later: a deferred one), and a refusal. A read-only
        # command's counts wait for the periodic save.
        self.changes = 0
        # The link's errors sending reports, since they were last said (the end of handle(), of a completion)
        self._unsent: list[tuple[int, Exception]] = []
        self._in_handler = 0  # handlers running now (a RESET_COUNTERS zeroing the counts is one)

    def register(self, name: str, handler: Handler) -> None:
        if name not in self.codec.dictionary.command_by_name:
            raise KeyError(f"no command {name} in the dictionary")
        if name in self.handlers_by_name:
            raise KeyError(f"command {name} has a handler already")
        self.handlers_by_name[name] = handler

    def handlers(self) -> dict[str, Handler]:
        return {"COMMAND_STATUS": Handler(self._status)}

    def _status(self, req: CommandRequest) -> dict[str, Any]:
        """What became of a command, from this boot's reports and the journal; runs nothing."""
        cmd_id = req.args["cmd_id"]
        known = self.journal.get(cmd_id) if self.journal is not None else None
        final = self._finals.get(cmd_id)
        if final is not None:
            ok, code, reason = final
        elif known is not None and known.finished:
            ok, code, reason = known.ok, known.code, known.reason
        elif known is not None or cmd_id in self._cache:
            state = "running" if cmd_id in self._cache else "interrupted"
            return {"state": state, "code": "NONE", "reason": "" if state == "running" else
                    "cut off by a reset before it finished: it may have done part of its work"}
        else:
            kept = self.journal.window if self.journal else FINALS_KEPT
            return {"state": "not_received", "code": "NONE",
                    "reason": f"not among the last {kept} commands this agent kept: it never arrived, or is older "
                              f"than that; or it was a read-only command, which is not journaled (kept only among "
                              f"the last {FINALS_KEPT}, and not across a restart): send it again"}
        try:
            name = FailureCode(code).name
        except ValueError:
            name = "EXECUTION_ERROR"
        return {"state": "completed" if ok else "failed", "code": name, "reason": reason}

    def telemetry(self) -> dict[str, Any]:
        c = self.counters
        return {"cmd_accepted": c.accepted, "cmd_rejected": c.rejected, "cmd_executed": c.executed,
                "cmd_failed": c.failed, "tc_duplicates": c.duplicates}

    def reset_counters(self) -> None:
        """Zero the counts. A command accepted and not ended yet (the RESET_COUNTERS running now, a deferred one
        still at work) stays counted as accepted, so its end never outnumbers the acceptances (found in audit: after
        the reset, cmd_executed 1 and cmd_accepted 0)."""
        running = sum(1 for _digest, told in self._cache.values() if not any(t.verification.final for t in told))
        self.counters = DispatchCounters(accepted=self._in_handler + running)

    def handle(self, tc: Telecommand, peer: Any) -> None:
        """Run one TC(8,1) through acceptance, start and completion; every command gets a final answer
        (its failure report always, its completion report where its flags ask for it)."""
        opcode, cmd_id = Codec.peek_cmd_id(tc)
        digest = hashlib.sha256(tc.app_data).digest()[:16]
        if cmd_id and cmd_id in self._cache:
            cached_digest, reports = self._cache[cmd_id]
            self._cache.move_to_end(cmd_id)
            if cmd_id in self._finals:
                self._finals.move_to_end(cmd_id)
            if cached_digest == digest:  # the same command again: what it was told, never a second run
                self.counters.duplicates += 1
                for told in reports:
                    packet = told.packet_for(tc.ack_flags, self.codec)
                    if packet is not None:
                        self._send_report(peer, packet)
                return
        sent: list[_Told] = []
        final = answered = False
        known = self.journal.get(cmd_id) if cmd_id and self.journal is not None and cmd_id not in self._cache else None
        # Same id, different content: refused to its sender alone. The id's first command keeps its final report,
        # its listeners (a sequence waiting on that step) and its retry cache (found in audit: the refusal was
        # taken for the first command's outcome, and a sequence step still running failed).
        collision = bool(cmd_id) and (cmd_id in self._cache or (known is not None and known.digest != digest))

        def report(stage: Stage, ok: bool, code: FailureCode = FailureCode.NONE, reason: str = "", result=None) -> None:
            nonlocal final, answered
            v = Verification(stage, ok, tc.request_id, cmd_id, opcode, code, redact_paths(reason), result or {})
            time_s, packet = self._now_s(), None
            if not ok or tc.ack_flags & STAGE_ACK[stage]:  # PUS-C: successes as asked for, failures always
                try:
                    packet = self.codec.encode_verification(v, time_s)  # may raise: then not yet final
                except Exception as exc:  # noqa: BLE001 - told apart from a listener's error after it went out
                    if not (ok and v.result):
                        raise Unreportable(describe_error(exc)[:160]) from exc
                    # A success whose result no report can carry (too big, not plain data): the work was done, so
                    # the success, with a note, as a retry gets it (_Told.packet_for), whatever its flags asked for
                    # (found in review: failed with ACK_ALL, completed with acceptance acks only)
                    v = replace(v, result={"note": f"its result does not fit a report: {describe_error(exc)[:120]}"})
                    try:
                        packet = self.codec.encode_verification(v, time_s)
                    except Exception as again:  # noqa: BLE001
                        raise Unreportable(describe_error(again)[:160]) from again
                try:
                    self._send_report(peer, packet)
                except Exception as exc:  # noqa: BLE001 - lost as on the line: the command goes on and ends, a retry
                    # gets the report from the cache, and the error is raised once it has (found in audit: a send
                    # raising in a deferred completion left the command "running" for good, its listeners untold)
                    self._unsent.append((cmd_id, exc))
            sent.append(_Told(v, time_s, packet))  # the others made only if a retry asks for them
            final, answered = v.final, True
            if final and cmd_id and not collision:
                self._finals[cmd_id] = (ok, int(code), v.reason)  # as the report said it: paths cut
                while len(self._finals) > FINALS_KEPT:
                    self._finals.popitem(last=False)
                for listener in self.on_final:
                    listener(cmd_id, ok, reason)

        try:
            if collision:
                self._reject(report, None, FailureCode.BAD_ARGUMENTS,
                             f"cmd_id {cmd_id} was already used for a different command; draw a new one")
            elif known is not None:  # run before a restart: answered from the journal, never run again
                self.counters.duplicates += 1
                self._answer_from_journal(known, report)
            else:
                self._run(tc, opcode, report, cmd_id, digest)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the sender gets a final answer
            if not final:
                try:
                    self.counters.failed += 1
                    report(Stage.COMPLETED, False, FailureCode.EXECUTION_ERROR, describe_error(exc)[:200])
                except Exception:  # noqa: BLE001 - nothing more can be said about this command
                    pass
            self._unsent.clear()  # the error going on says this command's trouble
            raise
        finally:
            # Cached by reference: a deferred completion appends to ``sent`` later, and a retry
            # arriving meanwhile gets the reports so far (none, if its flags asked for none yet).
            if cmd_id and answered and not collision and cmd_id not in self._cache:
                self._cache[cmd_id] = (digest, sent)
                self._trim_cache()
        self._say_unsent()

    def _say_unsent(self) -> None:
        """The reports the link refused since the last look, as one :class:`ReportNotSent` to ``report_error``
        (raised to the caller where there is none)."""
        if self._unsent:
            unsent, self._unsent = self._unsent, []
            ids = sorted({cmd_id for cmd_id, _exc in unsent})
            error = ReportNotSent(f"{len(unsent)} verification report(s) of cmd_id {', '.join(map(str, ids))} not "
                                  f"sent (kept for a retry): {describe_error(unsent[0][1])[:160]}")
            error.__cause__ = unsent[0][1]
            if self._report_error is None:
                raise error
            self._report_error("verification report", error)

    def _trim_cache(self) -> None:
        """Past RETRY_CACHE_COMMANDS the oldest command that has ended goes first: one still running (a deferred
        STORE_DUMP, a compute request) stays, so a retry or COMMAND_STATUS finds it running (found in audit: 512
        commands later, PINGs and the ground's own COMMAND_STATUS polls among them, it was said "interrupted by a
        reset" and the ground settled it failed, then its completion came). Bounded still: past twice as many,
        the oldest goes whatever it is."""
        while len(self._cache) > RETRY_CACHE_COMMANDS:
            oldest = next((k for k, (_digest, told) in self._cache.items() if any(t.verification.final for t in told)),
                          None)
            if oldest is None or len(self._cache) > 2 * RETRY_CACHE_COMMANDS:
                oldest = next(iter(self._cache))
            del self._cache[oldest]

    @staticmethod
    def _answer_from_journal(known: JournalEntry, report) -> None:
        report(Stage.ACCEPTED, True)
        report(Stage.STARTED, True)
        if not known.finished:
            report(Stage.COMPLETED, False, FailureCode.EXECUTION_ERROR,
                   "interrupted by a reset before it finished; not run again (it may have done part of its work: "
                   "check the state it changes, then send it anew)")
        elif known.ok:
            report(Stage.COMPLETED, True, result={"note": "completed earlier (before a restart, or longer ago than the "
                                                          "retries this agent keeps): its result was not kept"})
        else:
            try:
                code = FailureCode(known.code)
            except ValueError:
                code = FailureCode.EXECUTION_ERROR
            report(Stage.COMPLETED, False, code, known.reason)

    def _run(self, tc: Telecommand, opcode: int, report, cmd_id: int = 0, digest: bytes = b"") -> None:
        try:
            request = self.codec.decode_command(tc)
        except PacketError as exc:
            self._reject(report, None, FailureCode.MALFORMED_PACKET, str(exc))
            return
        except ArgumentError as exc:
            self._reject(report, self.codec.dictionary.command_by_opcode.get(opcode), exc.code, str(exc))
            return
        handler = self.handlers_by_name.get(request.command.name)
        if handler is None:
            self._reject(report, request.command, FailureCode.UNKNOWN_COMMAND, "no handler in this agent build")
            return
        self.counters.accepted += 1
        name = request.command.name
        # The guard and the journal's fsync come before the acceptance report, so that the
        # reports a command gets before it runs leave together: one wake of the link's I/O, not
        # one a report (the sender sees the same reports, in the same order, a fsync later).
        refused: tuple[FailureCode, str, str] | None = None
        unrecorded = ""  # why an idempotent command runs without its journal record
        if handler.guard is not None:
            try:
                handler.guard(request)
            except CommandFailed as exc:
                refused = (exc.code, exc.reason, exc.reason)
        if refused is None and cmd_id and self.journal is not None and not request.command.read_only:
            # A read-only command is not journaled: run again on a retry after a restart, it does no
            # harm, and the command path's own checks (NOOP, PING) cost no journal write and fsync.
            try:  # durable before it runs: after any crash, a command that may have run is known
                self.journal.started(cmd_id, digest, opcode)
            except OSError as exc:
                if request.command.idempotent:  # the same end however often it runs: FILE_DELETE frees a full disk
                    unrecorded = (f"run without its command journal record ({exc.strerror or exc}): idempotent, so a "
                                  "retry after a restart runs it again, to the same end")
                else:
                    refused = (FailureCode.EXECUTION_ERROR,
                               f"not run: the command journal could not record it ({exc.strerror or exc}), so it "
                               "could not be kept from running twice", "command journal not writable")
        report(Stage.ACCEPTED, True)
        if refused is not None:
            code, reason, said = refused
            self.counters.failed += 1
            self.changes += 1
            report(Stage.STARTED, False, code, reason)
            self._emit("COMMAND_FAILED", name=name, reason=said)
            return
        report(Stage.STARTED, True)
        if not request.command.read_only:
            self.changes += 1
        self._emit("COMMAND_DISPATCHED", name=name)
        self._in_handler += 1
        try:
            result = handler.run(request)
        except CommandFailed as exc:
            self._finish(report, name, False, exc.reason, exc.code, cmd_id, unrecorded)
            return
        except Exception as exc:  # noqa: BLE001 - a handler bug fails the command, never the agent
            self._finish(report, name, False, describe_error(exc)[:200], FailureCode.EXECUTION_ERROR,
                         cmd_id, unrecorded)
            return
        finally:
            self._in_handler -= 1
        if isinstance(result, Deferred):
            result.then(lambda ok, value, code: self._finish(report, name, ok, value, code, cmd_id, unrecorded))
        else:
            self._finish(report, name, True, result, FailureCode.NONE, cmd_id, unrecorded)

    def end_turn(self) -> None:
        """From the agent's loop, once a turn: fsync the journal's finished records (journal.py says why then)."""
        if self.journal is not None:
            self.journal.sync()

    def _finish(self, report, name: str, ok: bool, value: Any, code: FailureCode, cmd_id: int = 0,
                unrecorded: str = "") -> None:
        """The completion report: ``value`` is the result map on success, the reason on failure; ``unrecorded``:
        why the journal has no record of it, said in the report either way."""
        if unrecorded:
            if ok and (value is None or isinstance(value, dict)):
                value = {**(value or {}), "journal": unrecorded}
            elif not ok:
                value = f"{value} ({unrecorded})"
        self._journal_finished(cmd_id, ok, code, value)  # before the report: a kill -9 after it keeps the record
        command = self.codec.dictionary.command_by_name.get(name)
        if command is None or not command.read_only:
            self.changes += 1
        if ok:
            try:
                report(Stage.COMPLETED, True, result=value)
            except Unreportable as exc:  # no success report could be made; nothing went out (a listener's error did)
                # Ended failed, saying its work was done, in its report and its journal record, and the error goes
                # on to the caller, which counts it (found in audit: a deferred one's completion raised into the
                # compute supervisor, no final report went out, COMMAND_STATUS said "running" for good, and the
                # journal "completed"; in review: a listener's error after the success was taken for this). A
                # result too big is not this: the success goes with a note instead (report()).
                reason = f"done, but its report could not be made: {exc}"
                self._journal_finished(cmd_id, False, FailureCode.EXECUTION_ERROR, reason)
                self.counters.failed += 1
                report(Stage.COMPLETED, False, FailureCode.EXECUTION_ERROR, reason)
                self._emit("COMMAND_FAILED", name=name, reason=reason)
                raise
            except Exception:
                self.counters.executed += 1  # its success went out; a listener's error after it goes on, counted there
                raise
            self.counters.executed += 1
        else:
            self.counters.failed += 1
            report(Stage.COMPLETED, False, code, value)
            self._emit("COMMAND_FAILED", name=name, reason=value)
        self._say_unsent()  # a deferred one's completion (in handle(), handle says them)

    def _journal_finished(self, cmd_id: int, ok: bool, code: FailureCode, value: Any) -> None:
        if cmd_id and self.journal is not None:
            try:
                self.journal.finished(cmd_id, ok, int(code), "" if ok else redact_paths(str(value)))
            except OSError:
                pass  # the outcome still goes out now; a retry after a restart reads it as interrupted

    def _reject(self, report, command: Command | None, code: FailureCode, reason: str) -> None:
        reason = said_refusal(reason)
        self.counters.rejected += 1
        self.changes += 1
        report(Stage.ACCEPTED, False, code, reason)
        self._emit("COMMAND_REJECTED", name=command.name if command else "?", reason=reason)
