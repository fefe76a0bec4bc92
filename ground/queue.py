"""The ground server's command queue for one spacecraft, as Yamcs keeps one (pure: no I/O).

An entry's life::

    pending_approval ──approve──► queued ──(queue not held)──► released ──► sent
          │ reject/expire            │ cancel                                 │
          ▼                          ▼                                        ▼
       rejected                  cancelled               accepted ► started ► completed
                                                         (started: where its report was asked for)
                                                         (or failed at a stage, or timeout,
                                                          or unknown ──late report──► completed/failed
                                                                     ──no longer followed──► unresolved)

- A command that needs a second operator (the two-person rule, per command in the server's
  configuration; a time tag that runs such a command on board too) waits in ``pending_approval``
  until an operator other than its sender approves it; a rejection, or no approval within
  ``approval_s``, ends it.
- A *held* queue keeps its ``queued`` entries; releasing the queue lets them go, oldest first.
- Each stage has a time window, as Yamcs' verifiers do: released → sent, sent → accepted,
  accepted → completed (per command, for long jobs). A window that passes ends the entry in
  ``timeout`` naming the stage it waited for, and a report that arrives later is still
  recorded on the entry.
- A command the agent reported started (or accepted, or only sent: ``unknown_after``) whose
  window passes is not timed out: it may have run. It is ``unknown``, not final: the link
  keeps listening, and its report, late or played back from the agent's store, settles it
  (``completed`` or ``failed``). :meth:`CommandQueue.asked` records that the ground asked the
  agent again (the same cmd_id, answered without running it twice, or COMMAND_STATUS, which
  runs nothing; a read-only command, which the agent does not journal, is always sent again);
  :meth:`CommandQueue.settle_from_status` applies the agent's answer, a command it never
  received ending in ``timeout``: it never ran. One the link stops following (2 days without
  its outcome, or the oldest beyond the link's bound) ends ``unresolved`` (:meth:`CommandQueue.let_go`):
  final, its outcome unknown, it may have run (found in audit: it stayed ``unknown`` for ever,
  never asked again and never trimmed).

Every method takes ``now_s`` (the server's clock) and returns the entries it changed, so the
server can push and archive exactly those. Thread-safe (one lock).

Bounded: final entries past ``keep`` are forgotten (the archive has them), and past ``keep``
entries still to go (waiting for approval, queued while the link is down or the queue held) a
new command is refused (``refused_full``), naming how many wait: 20,000 commands submitted with
no agent once all waited in memory, to go out stale at the next contact. Entries sent and not
final are not refused for: each left the ground, one at a time, and ends by the agent's answer,
or ``unresolved`` when the link lets it go (the ground server follows at most ``keep``), and is
then forgotten like any final entry.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Iterable


class State(str, enum.Enum):
    PENDING_APPROVAL = "pending_approval"
    QUEUED = "queued"
    RELEASED = "released"
    SENT = "sent"
    ACCEPTED = "accepted"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"  # acknowledged by the agent, outcome not come in time: it may have run; not final
    UNRESOLVED = "unresolved"  # final: no longer followed and its outcome never came; it may have run
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {State.COMPLETED, State.FAILED, State.TIMEOUT, State.REJECTED, State.CANCELLED, State.UNRESOLVED}
_ORDER = {State.SENT: 1, State.ACCEPTED: 2, State.STARTED: 3, State.UNKNOWN: 3, State.COMPLETED: 4}


def _reached(entry: Entry) -> int:
    """How far the agent said the entry got; accepted counts as started where no start report was
    asked for (the agent would have said a start failure, which comes whatever the flags)."""
    if entry.state is State.ACCEPTED and State.STARTED.value not in entry.acks:
        return _ORDER[State.STARTED]
    return _ORDER.get(entry.state, 0)


_TO_GO = frozenset({State.PENDING_APPROVAL, State.QUEUED, State.RELEASED})
"""Entries not sent yet, which the bound on the queue counts: each can be cancelled, rejected or released. A
sent one (its report awaited, or ``unknown``) ends by the agent's word, not the operator's: counting those
could leave the queue refusing every command, a recovery command too, while the downlink is lost."""


class QueueError(ValueError):
    """A queue operation that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Timeouts:
    """Each stage's window in seconds; ``completed_s`` per command name overrides the default."""

    approval_s: float = 600.0
    release_s: float = 30.0  # released → sent: the link took it
    accepted_s: float = 10.0
    completed_s: float = 60.0
    completed_by_command_s: dict[str, float] = field(default_factory=dict)

    def completed_for(self, name: str) -> float:
        return self.completed_by_command_s.get(name, self.completed_s)


JS_SAFE_INT = 2**53 - 1  # Number.MAX_SAFE_INTEGER: a larger whole number comes out of JSON.parse rounded


def _exact_in_js(value: Any) -> Any:
    """An argument as a browser reads it exactly: a whole number past JavaScript's safe range as its digits (found
    in audit: COMMAND_STATUS's 64-bit cmd_id showed rounded in the web console's history); others as they are."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > JS_SAFE_INT:
        return str(value)
    return value


@dataclass
class Entry:
    id: int
    spacecraft: str
    name: str
    args: dict[str, Any]
    who: str
    hazardous: bool
    needs_approval: bool
    state: State
    queued_s: float
    approved_by: str | None = None
    cmd_id: int | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    deadline_s: float | None = None  # when the current stage's window closes
    waiting_for: str = ""  # the stage the window is for
    # The success reports asked of the agent: the ground client's default (acceptance, completion),
    # or what its operator chose (submit), until sent() records what the command went with.
    acks: tuple[str, ...] = ("accepted", "completed")
    ask_flags: int | None = None  # the operator's choice of them (PUS-C flags), None: the client's default

    def stage(self, stage: str, at_s: float, ok: bool = True, code: str = "", reason: str = "",
              by: str = "", agent: bool = False) -> None:
        entry: dict[str, Any] = {"stage": stage, "ok": ok, "at_s": at_s}
        if agent:
            entry["agent"] = True  # a PUS 1 report, not the ground's own record
        if code:
            entry["code"] = code
        if reason:
            entry["reason"] = reason
        if by:
            entry["by"] = by
        self.stages.append(entry)

    @property
    def outcome(self) -> str:
        fail = next((s for s in self.stages if not s["ok"]), None)
        if fail is not None:
            return f"{self.state.value} at {fail['stage']}: {fail.get('code', '')} {fail.get('reason', '')}".strip()
        return self.state.value

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "spacecraft": self.spacecraft, "name": self.name,
            "args": {k: _exact_in_js(v) for k, v in self.args.items()}, "who": self.who,
            "hazardous": self.hazardous, "needs_approval": self.needs_approval, "approved_by": self.approved_by,
            "state": self.state.value, "final": self.state.final, "queued_s": self.queued_s,
            "cmd_id": None if self.cmd_id is None else str(self.cmd_id),  # 64 bits: beyond a JS number
            "stages": [dict(s) for s in self.stages], "result": self.result, "attempts": self.attempts,
            "waiting_for": self.waiting_for, "deadline_s": self.deadline_s, "outcome": self.outcome,
            "acks": list(self.acks),
        }


class CommandQueue:
    """One spacecraft's queue. ``approval``: names of commands that need a second operator;
    ``unknown_after``: the stage ("started", "accepted" or "sent") from which a window that
    passes leaves the command ``unknown`` rather than ``timeout``. The ground server uses
    "sent": a command that left the ground with no report back may have run (its reports may
    wait in the agent's store); the server then asks the agent (COMMAND_STATUS) and only the
    agent's "not received" makes it a timeout."""

    def __init__(self, spacecraft: str, timeouts: Timeouts = Timeouts(), approval: frozenset[str] = frozenset(),
                 keep: int = 500, first_id: int = 1, unknown_after: str = "started"):
        if unknown_after not in ("started", "accepted", "sent"):
            raise ValueError(f"unknown_after {unknown_after!r}: 'started', 'accepted' or 'sent'")
        self.unknown_from = _ORDER[State(unknown_after)]
        self.spacecraft = spacecraft
        self.timeouts = timeouts
        self.approval = approval
        self.keep = keep
        self.refused_full = 0  # commands refused because ``keep`` were waiting
        self.held = False
        self.held_by = ""
        self._ids = count(first_id)
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._by_cmd_id: dict[int, int] = {}

    # --- operators ------------------------------------------------------------------------

    def submit(self, name: str, args: dict[str, Any], who: str, hazardous: bool, now_s: float,
               ask_flags: int | None = None, acks: Iterable[str] | None = None, carries: str | None = None) -> Entry:
        """Queue a command already checked against the dictionary; ``ask_flags``: the success
        reports to ask the agent for (PUS-C acknowledgement flags; None: the client's default),
        ``acks`` the stages they will come for (with what the client adds to them); ``carries``: the
        dictionary name of the command a time tag runs on board (SCHEDULE_AT's ``command``), which
        needs a second operator as that command sent directly does (found in audit: SCHEDULE_AFTER
        delay_s=0 command=SHUTDOWN ran SHUTDOWN with one operator where SHUTDOWN needed two)."""
        needs = name in self.approval or (carries is not None and carries in self.approval)
        with self._lock:
            waiting = sum(1 for e in self._entries.values() if e.state in _TO_GO)
            if waiting >= self.keep:
                self.refused_full += 1
                raise QueueError(f"the queue of {self.spacecraft} is full: {waiting} of {self.keep} places taken by "
                                 "commands still to go (waiting for approval, the link or a held queue); cancel "
                                 "some, release the queue or wait for the link", 429)
            entry = Entry(next(self._ids), self.spacecraft, name, dict(args), who, hazardous, needs,
                          State.PENDING_APPROVAL if needs else State.QUEUED, now_s, ask_flags=ask_flags)
            if acks is not None:  # shown from now on: an approver sees what the command will ask for
                entry.acks = tuple(acks)
            entry.stage("queued", now_s, by=who)
            if needs:
                self._window(entry, "approval", now_s + self.timeouts.approval_s)
            self._entries[entry.id] = entry
            self._trim()
            return entry

    def approve(self, entry_id: int, who: str, now_s: float) -> Entry:
        with self._lock:
            entry = self._get(entry_id)
            if entry.state is not State.PENDING_APPROVAL:
                raise QueueError(f"command {entry_id} ({entry.name}) is {entry.state.value}, not waiting for approval")
            if entry.deadline_s is not None and now_s >= entry.deadline_s:
                raise QueueError(f"command {entry_id} ({entry.name}) waited longer than "
                                 f"{self.timeouts.approval_s:g} s for approval and has expired")
            if who == entry.who:
                raise QueueError(f"{entry.name} needs a second operator: {who} sent it and cannot approve it", 403)
            entry.approved_by = who
            entry.state = State.QUEUED
            entry.stage("approved", now_s, by=who)
            self._window(entry, "", None)
            return entry

    def reject(self, entry_id: int, who: str, now_s: float, reason: str = "") -> Entry:
        with self._lock:
            entry = self._get(entry_id)
            if entry.state is not State.PENDING_APPROVAL:
                raise QueueError(f"command {entry_id} ({entry.name}) is {entry.state.value}, not waiting for approval")
            entry.state = State.REJECTED
            entry.stage("rejected", now_s, ok=False, code="REJECTED", reason=reason or f"rejected by {who}", by=who)
            self._window(entry, "", None)
            return entry

    def cancel(self, entry_id: int, who: str, now_s: float, admin: bool = False) -> Entry:
        """Take a command out before it is sent: its sender, or an admin."""
        with self._lock:
            entry = self._get(entry_id)
            if entry.state not in (State.PENDING_APPROVAL, State.QUEUED):
                raise QueueError(f"command {entry_id} ({entry.name}) is {entry.state.value}: only a command not yet "
                                 "released can be cancelled")
            if who != entry.who and not admin:
                raise QueueError(f"only {entry.who} or an admin can cancel command {entry_id}", 403)
            entry.state = State.CANCELLED
            entry.stage("cancelled", now_s, ok=False, code="CANCELLED", reason=f"cancelled by {who}", by=who)
            self._window(entry, "", None)
            return entry

    def hold(self, who: str) -> None:
        with self._lock:
            self.held, self.held_by = True, who

    def release(self) -> None:
        with self._lock:
            self.held, self.held_by = False, ""

    # --- the link -------------------------------------------------------------------------

    def next_to_send(self, now_s: float) -> Entry | None:
        """The oldest queued entry, now released; None when the queue is held or empty."""
        with self._lock:
            if self.held:
                return None
            for entry in self._entries.values():
                if entry.state is State.QUEUED:
                    entry.state = State.RELEASED
                    entry.stage("released", now_s)
                    self._window(entry, "sent", now_s + self.timeouts.release_s)
                    return entry
            return None

    def sent(self, entry_id: int, cmd_id: int, attempts: int, now_s: float, acks: Iterable[str] | None = None) -> Entry:
        """The link took the command; ``acks``: the stages whose success reports it asked for."""
        with self._lock:
            entry = self._get(entry_id)
            entry.cmd_id = cmd_id
            entry.attempts = attempts
            if acks is not None:
                entry.acks = tuple(acks)
            self._by_cmd_id[cmd_id] = entry_id
            if entry.state is State.RELEASED:
                entry.state = State.SENT
                entry.stage("sent", now_s)
                self._window(entry, "accepted", now_s + self.timeouts.accepted_s)
            return entry

    def send_failed(self, entry_id: int, code: str, reason: str, now_s: float) -> Entry:
        with self._lock:
            entry = self._get(entry_id)
            entry.state = State.FAILED
            entry.stage("sent", now_s, ok=False, code=code, reason=reason)
            self._window(entry, "", None)
            return entry

    def report(self, cmd_id: int, stage: str, ok: bool, code: str, reason: str, result: dict[str, Any],
               now_s: float) -> Entry | None:
        """A PUS 1 report for a command of this queue (None if it is not one)."""
        with self._lock:
            entry = self._entries.get(self._by_cmd_id.get(cmd_id, -1))
            if entry is None:
                return None
            if any(s.get("agent") and s["stage"] == stage and s["ok"] == ok for s in entry.stages):
                return None  # the same report twice (a retry, the reply and the stream)
            entry.stage(stage, now_s, ok, code, reason, agent=True)
            if result:
                entry.result = dict(result)
            if entry.state.final:  # late news (after a timeout): kept on the entry, the state stays final
                return entry
            if not ok:
                entry.state = State.FAILED
                self._window(entry, "", None)
            else:
                new = State(stage)
                if _ORDER.get(new, 0) > _ORDER.get(entry.state, 0) and not entry.state.final:
                    entry.state = new
                if entry.state is State.COMPLETED:
                    self._window(entry, "", None)
                elif entry.state in (State.ACCEPTED, State.STARTED) and entry.waiting_for != "completed":
                    self._window(entry, "completed", now_s + self.timeouts.completed_for(entry.name))
            return entry

    def asked(self, entry_id: int, now_s: float, read_only: bool = False) -> Entry:
        """The ground asked the agent again about an entry whose outcome is unknown."""
        with self._lock:
            entry = self._get(entry_id)
            entry.attempts += 1
            entry.stage("asked", now_s, reason="outcome unknown: the same cmd_id sent again; " + (
                "a read-only command: answered from the agent's retry cache, or run again (it changes nothing)"
                if read_only else "the agent answers from its command journal without running it again"))
            return entry

    def settle_from_status(self, entry_id: int, answer: dict[str, Any], now_s: float) -> Entry | None:
        """The agent's COMMAND_STATUS answer about an ``unknown`` entry: ``not_received`` ends it
        in ``timeout`` (it never ran), ``completed``/``failed``/``interrupted`` settle it; None
        when it changed nothing (still running, or not unknown any more)."""
        with self._lock:
            entry = self._get(entry_id)
            state = answer.get("state")
            if entry.state is not State.UNKNOWN or state not in ("completed", "failed", "interrupted", "not_received"):
                return None
            by = "COMMAND_STATUS: "
            if state == "not_received":
                entry.state = State.TIMEOUT
                entry.stage("accepted", now_s, ok=False, code="TIMEOUT",
                            reason=by + str(answer.get("reason") or "the agent never received it: it never ran"))
            elif state == "completed":
                entry.state = State.COMPLETED
                entry.stage("completed", now_s, reason=by + "completed (its reports did not reach the ground)")
            else:
                entry.state = State.FAILED
                entry.stage("completed", now_s, ok=False, code=str(answer.get("code") or "EXECUTION_ERROR"),
                            reason=by + str(answer.get("reason") or state))
            self._window(entry, "", None)
            return entry

    def let_go(self, entry_id: int, now_s: float, reason: str) -> Entry | None:
        """The link stopped following a sent entry that is not final: it ends ``unresolved`` (its
        outcome never came; it may have run), and can be forgotten like any final entry. None if
        it changed nothing (final already, never sent, or forgotten)."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None or entry.state.final or entry.cmd_id is None:
                return None
            was, entry.state = entry.state.value, State.UNRESOLVED
            entry.stage("unresolved", now_s, code="UNRESOLVED", reason=f"{was}, and no longer followed: {reason}; "
                        "its outcome is unknown and it may have run: check before sending it again")
            self._window(entry, "", None)
            self._trim()
            return entry

    def close(self, now_s: float) -> list[Entry]:
        """The server stops, and nothing keeps its queue: every entry not final ends, and is returned to be
        archived. One still to go never left the ground: ``cancelled`` (it never ran; queue it again). One
        released or sent is no longer followed: ``unresolved`` (it may have run). Found in audit: they stayed
        ``queued``, ``pending_approval`` or ``unknown`` in the archive's history for good, and the restarted
        server's queue had never heard of them."""
        out = []
        with self._lock:
            for entry in self._entries.values():
                if entry.state.final:
                    continue
                if entry.state in (State.PENDING_APPROVAL, State.QUEUED):
                    before = "approved and sent" if entry.state is State.PENDING_APPROVAL else "sent"
                    entry.state = State.CANCELLED
                    entry.stage("cancelled", now_s, ok=False, code="SERVER_STOPPED",
                                reason=f"the ground server stopped before it was {before}: it never ran; "
                                       "queue it again")
                else:
                    was, entry.state = entry.state.value, State.UNRESOLVED
                    entry.stage("unresolved", now_s, code="UNRESOLVED",
                                reason=f"{was} when the ground server stopped, and no longer followed: its outcome "
                                       "is unknown and it may have run: check before sending it again")
                self._window(entry, "", None)
                out.append(entry)
        return out

    def tick(self, now_s: float) -> list[Entry]:
        """End every entry whose window has passed (an acknowledged command waiting for its
        completion becomes ``unknown`` instead); return them."""
        out = []
        with self._lock:
            for entry in self._entries.values():
                if entry.deadline_s is None or now_s < entry.deadline_s or entry.state.final:
                    continue
                if entry.state is State.PENDING_APPROVAL:
                    entry.state = State.REJECTED
                    entry.stage("approval", now_s, ok=False, code="EXPIRED",
                                reason=f"no second operator approved within {self.timeouts.approval_s:g} s")
                elif (entry.waiting_for in ("accepted", "completed") and entry.state is not State.UNKNOWN
                      and _reached(entry) >= self.unknown_from):
                    reached, entry.state = entry.state.value, State.UNKNOWN
                    if reached == State.SENT.value:
                        entry.stage("unknown", now_s, reason=f"sent, no report in {self.timeouts.accepted_s:g} s: "
                                    "it may not have reached the agent, or it ran and its reports wait on board; "
                                    "the agent is asked (COMMAND_STATUS), and its reports are listened for")
                    else:
                        entry.stage("unknown", now_s, reason=f"acknowledged ({reached}), no completion "
                                    f"report in {self.timeouts.completed_for(entry.name):g} s: it may have run; its "
                                    "report is still listened for (live or played back)")
                else:
                    entry.state = State.TIMEOUT
                    entry.stage(entry.waiting_for, now_s, ok=False, code="TIMEOUT",
                                reason=f"no {entry.waiting_for} report in time; it may still have run")
                self._window(entry, "", None)
                out.append(entry)
        return out

    # --- reading --------------------------------------------------------------------------

    def snapshot(self, entry: Entry) -> dict[str, Any]:
        """The entry as JSON, taken under the lock: never half of one change."""
        with self._lock:
            return entry.to_json()

    def get(self, entry_id: int) -> Entry:
        with self._lock:
            return self._get(entry_id)

    def entries(self, last: int | None = None) -> list[Entry]:
        with self._lock:
            items = list(self._entries.values())
        return items[-last:] if last else items

    def in_flight(self) -> list[Entry]:
        """Entries sent and not final (``unknown`` ones included): the link keeps listening for
        their reports."""
        with self._lock:
            return [e for e in self._entries.values() if e.cmd_id is not None and not e.state.final]

    def status(self) -> dict[str, Any]:
        with self._lock:
            counts: dict[str, int] = {}
            for e in self._entries.values():
                counts[e.state.value] = counts.get(e.state.value, 0) + 1
            return {"held": self.held, "held_by": self.held_by, "counts": counts, "refused_full": self.refused_full}

    # --- inside the lock ------------------------------------------------------------------

    def _get(self, entry_id: int) -> Entry:
        entry = self._entries.get(entry_id)
        if entry is None:
            raise QueueError(f"no command {entry_id} in the queue of {self.spacecraft}", 404)
        return entry

    @staticmethod
    def _window(entry: Entry, waiting_for: str, deadline_s: float | None) -> None:
        entry.waiting_for, entry.deadline_s = waiting_for, deadline_s

    def _trim(self) -> None:
        """Forget the oldest *final* entries beyond ``keep`` (the archive has them all); those still
        to go are refused beyond ``keep`` and those sent end by the agent's word or :meth:`let_go`."""
        while len(self._entries) > self.keep:
            oldest = next((k for k, e in self._entries.items() if e.state.final), None)
            if oldest is None:
                return
            entry = self._entries.pop(oldest)
            self._by_cmd_id.pop(entry.cmd_id or -1, None)
