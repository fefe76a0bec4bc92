"""Scripted operations: a small API for procedures and integration tests (after F Prime's GDS test API).

Meanings procedures rely on:

- ``send(...)`` returns once the telecommand is *sent* (left this console); nothing is known yet.
- ``send_and_wait(..., wait="accepted")`` returns once the agent *accepted* it: decoded, found
  in its dictionary, arguments valid (PUS 1,1). It has not necessarily run.
- ``send_and_wait(...)`` (``wait="completed"``) returns once it *completed* (PUS 1,7). A failure
  report at any stage, or no report in time, raises :class:`ProcedureFailed` — unless
  ``expect="failed"``, for steps that check a refusal.

A procedure file defines ``run(proc)``; ``sunlit-ground run FILE`` gives it a connected
:class:`Procedure`, logs every step with its time and outcome, and exits 0 if it returned (``return False``
fails it: that is what its writer meant).

What a check sees: ``wait_for_telemetry`` and ``assert_event`` take only what arrived since the
procedure's last command was sent (or since it began) and was made since (a packet played back counts
where the agent made it at or after its time at the command): a value the ground held from before (the
server's snapshot, history played back from the agent's store, a copy) cannot pass a check that the
command was meant to bring about. A hazardous command asks ``confirm`` (``sunlit-ground run`` asks on its
terminal, or takes ``--yes``); one not confirmed fails its step, unsent.

What an assertion sees: ``assert_telemetry`` checks the board's state *now*, so it takes the newest value of the
point made no more than ``max_age_s`` ago (unless given, ten of the housekeeping periods the agent reports,
``hk_period_s``, and at least :data:`DEFAULT_MAX_AGE_S`), aged on the ground's clock from
when it came (a value played back, by the agent's own clock, from when it was made); where the ground holds none that
fresh it waits ``max_age_s`` for the next, and fails naming the point and the age of the newest it has (a value held
from before the procedure began, such as the server's snapshot, has no age it can vouch for). A value from before the
link was lost never passes it (as COSMOS and Yamcs treat stale telemetry). To check what a command brought about,
wait for it (``wait_for_telemetry``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

from flight.link.dictionary import ArgumentError, date_for_seconds
from flight.link.messages import EventRecord, HkRecord
from ground.cli_args import named, printable
from ground.client import CommandOutcomeUnknown, CommandResult, CommandTimeout, GroundClient, Received

MAX_TIMEOUT_S = 86400.0  # a procedure's longest wait: past it (or not a number) a typing error, refused
DEFAULT_MAX_AGE_S = 10.0  # assert_telemetry's freshness at least: ten housekeeping periods at the default 1 s
FRESH_PERIODS = 10  # ... or ten of the agent's own (hk_period_s as it reported it), where that is longer
EXPECTS = ("completed", "failed")
WAITS = ("sent", "accepted", "completed")  # how far send_and_wait follows a command (GroundClient.send's wait)
WAIT_SLICE_S = 0.5  # a wait looks at the server's connection this often


class ProcedureFailed(AssertionError):
    """A step did not go as the procedure said it must; the message says what was seen."""


class ProcedureInterrupted(RuntimeError):
    """The procedure stopped before its end for a reason not its own (Ctrl-C, the server gone): said with the
    step and the commands sent, whose outcome may be unknown. ``sent``: how many commands it had sent."""

    def __init__(self, message: str, sent: int):
        super().__init__(message)
        self.sent = sent


class ProcedureUnreadable(ValueError):
    """The procedure file could not be loaded (missing, not Python, an error as it loads, no
    ``run``): bad input, said with the file and line, before anything is sent."""


# --- predicates, as F Prime's GDS offers them -------------------------------------------------

def within_range(lo: float, hi: float) -> Callable[[Any], bool]:
    pred = lambda v: isinstance(v, (int, float)) and lo <= v <= hi  # noqa: E731
    pred.__doc__ = f"within [{lo}, {hi}]"
    return pred


def equals(expected: Any) -> Callable[[Any], bool]:
    pred = lambda v: v == expected  # noqa: E731
    pred.__doc__ = f"== {expected!r}"
    return pred


def greater_than(limit: float) -> Callable[[Any], bool]:
    pred = lambda v: isinstance(v, (int, float)) and v > limit  # noqa: E731
    pred.__doc__ = f"> {limit}"
    return pred


def less_than(limit: float) -> Callable[[Any], bool]:
    pred = lambda v: isinstance(v, (int, float)) and v < limit  # noqa: E731
    pred.__doc__ = f"< {limit}"
    return pred


def unmeasured_or(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """``pred``, or no value (a channel the board does not measure: a PC has no battery)."""
    out = lambda v: v is None or pred(v)  # noqa: E731
    out.__doc__ = f"unmeasured or {_describe(pred)}"
    return out


def _describe(pred: Callable[[Any], bool]) -> str:
    """What a condition asks, for a failure's message: its ``__doc__`` (the helpers above set it), its
    name, or, for a lambda, where it is written (found in use: "not <lambda>" said nothing)."""
    if pred.__doc__:
        return pred.__doc__
    name = getattr(pred, "__name__", "")
    code = getattr(pred, "__code__", None)
    if (not name or name == "<lambda>") and code is not None:
        return f"the condition at {Path(code.co_filename).name}:{code.co_firstlineno}"
    return name or "the condition"


class Procedure:
    def __init__(self, client: GroundClient, log: Callable[[str], None] = print, who: str = "procedure",
                 confirm: Callable[[Any], bool] | None = None, clock: Callable[[], float] = time.monotonic):
        """``confirm(command)``: asked before each hazardous command (the dictionary's entry), True to send it;
        None: the caller answers for them (a test, a script that was itself confirmed). ``clock``: the ground's
        monotonic clock (s) that times the log and ages telemetry for ``assert_telemetry``."""
        self.client = client
        self.log = log
        self.who = who
        self.confirm = confirm
        self.clock = clock
        self.steps = 0
        self.sent: list[str] = []  # each command sent, as logged (the record an interruption leaves)
        self.on_command: list[Callable[[CommandResult], None]] = []  # e.g. the archive's history
        self._t0 = clock()
        self._step_title = ""
        # What arrived and counts (_counts), in order: checks look only past the mark, the arrival count at the
        # last send (found in audit: a value from before, played back or the server's snapshot, passed a check)
        self._arrivals = 0
        self._mark = 0
        # The agent's time as of the newest live packet, and as of the mark: a packet played back (resent after a
        # loss, housekeeping thinned by hk_live_every) counts where it was made at or after the mark (found in
        # review: refusing every played-back one failed waits on packets made after the command).
        self._agent_now_s = -math.inf
        self._mark_agent_s = math.inf  # nothing played back counts before a live packet has said the agent's time
        self._fresh: dict[str, tuple[Any, int]] = {}  # channel -> (value, arrival)
        # channel -> (value, when it was made, on self.clock): what assert_telemetry ages (found in audit: it took the
        # ground's newest value whenever it came, so one from an hour before the link was lost passed)
        self._made: dict[str, tuple[Any, float]] = {}
        self._events: deque[tuple[int, EventRecord]] = deque(maxlen=1000)
        client.listeners.append(self._heard)

    def close(self) -> None:
        """Stop listening on the client (found in review: each procedure run on one client left a listener)."""
        with contextlib.suppress(ValueError):
            self.client.listeners.remove(self._heard)

    def _counts(self, item: Received) -> bool:
        """Whether ``item`` is something that can have come of the last command: live, or played back but made
        at or after the agent's time at the mark; never a copy the ground already had."""
        if item.record is None or item.duplicate:
            return False
        return not item.played_back or getattr(item.record, "time_s", -math.inf) >= self._mark_agent_s

    def _heard(self, item: Received) -> None:
        if item.record is not None and not item.played_back:
            self._agent_now_s = max(self._agent_now_s, getattr(item.record, "time_s", -math.inf))
        if isinstance(item.record, HkRecord) and not item.duplicate:
            self._made_at(item.record, item.played_back)
        if not self._counts(item):
            return
        self._arrivals += 1
        if isinstance(item.record, HkRecord):
            for name, value in item.record.values.items():
                self._fresh[name] = (value, self._arrivals)
        elif isinstance(item.record, EventRecord):
            self._events.append((self._arrivals, item.record))

    def _made_at(self, record: HkRecord, played_back: bool) -> None:
        """Keep each value with when it was made on this clock: a live one as it came; a played-back one as long
        before as the agent's own clock says it was made before the newest live packet (none yet: its age is
        unknown, and it is not kept). Only a value made later than the one held replaces it."""
        made = self.clock()
        if played_back:
            if not math.isfinite(self._agent_now_s):
                return
            made -= max(0.0, self._agent_now_s - record.time_s)
        for name, value in record.values.items():
            if made >= self._made.get(name, (None, -math.inf))[1]:
                self._made[name] = (value, made)

    def _say(self, text: str) -> None:
        """A log line, printable: it carries the agent's text (an event's, a failure's reason), whose escape sequence
        or line break would reach the operator's terminal (found in audit: as `events` once printed it)."""
        self.log(printable(f"[{self.clock() - self._t0:8.2f} s] {text}"))

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        """Group what follows under a numbered, timed step in the log."""
        self.steps += 1
        number = self.steps
        self._step_title = title
        self._say(f"step {number}: {title}")
        started = self.clock()
        try:
            yield
        except Exception as exc:
            from ground.api import ServerError

            # The server lost (not reached, or its connection ended): the procedure stops in this step, which did not
            # fail; a refusal it answered (a 4xx) fails the step as any other (found in review)
            if isinstance(exc, ServerError) and (not exc.status or self._lost_reason()):
                raise
            self._say(f"step {number} FAILED after {self.clock() - started:.2f} s: {exc}")
            self._step_title = ""
            raise
        self._step_title = ""
        self._say(f"step {number} done in {self.clock() - started:.2f} s")

    # --- commanding --------------------------------------------------------------------

    def _before_send(self, name: str, args: dict[str, Any]) -> None:
        """Check the name and arguments, ask for a hazardous one, log it and set the mark: before anything
        leaves (found in review: bad arguments were asked for, and counted as sent)."""
        self._server_lost()
        try:
            command = self.client.dictionary.command(name)
        except ArgumentError as exc:
            raise ProcedureFailed(f"{name}: {exc}; not sent") from None
        try:
            command.validate_args(args)
        except ArgumentError as exc:  # a date for a time in seconds: said as its number, as the CLIs say it
            hint = date_for_seconds(command, args) if isinstance(args, dict) else ""
            raise ProcedureFailed(f"{name}: {exc}{hint}; not sent") from None
        if command.hazardous and self.confirm is not None and not self.confirm(command):
            raise ProcedureFailed(f"{name} is hazardous and was not confirmed: not sent")
        self._mark = self._arrivals
        self._mark_agent_s = self._agent_now_s if math.isfinite(self._agent_now_s) else math.inf
        self._say(f"sending {name} {args}")

    def _send(self, name: str, args: dict[str, Any], **kwargs: Any) -> CommandResult:
        """``client.send``, the command recorded as sent once it is on its way (queued on the server, or handed
        to the link); a server that refuses to queue it fails the step, unsent. Through the server, one still
        waiting for a second operator as the step gives up, or at Ctrl-C, is withdrawn (found in audit: approved
        later, it ran out of the procedure's order, after the procedure had failed)."""
        from ground.api import CommandLost, ServerClient, ServerError

        entry: dict[str, Any] = {}
        if isinstance(self.client, ServerClient):
            kwargs.update(withdraw_unapproved=True, on_entry=entry.update)
        else:
            entry["id"] = None  # a direct link: on its way once send is called
        try:
            result = self.client.send(name, args, **kwargs)
        except ServerError as exc:
            # The answer lost after the server read it (CommandLost before any entry): it may be queued (found in
            # audit: said "did not queue it ... not sent", exit 1). The server not reached (status 0): a lost server.
            if not entry and not isinstance(exc, CommandLost) and exc.status:
                raise ProcedureFailed(f"{name}: the server did not queue it: {exc}; not sent") from None
            if entry or isinstance(exc, CommandLost):
                self.sent.append(f"{name} {args}")
            raise
        except KeyboardInterrupt:
            if entry.get("id") is not None and entry.get("state") in ("pending_approval", "queued"):
                with contextlib.suppress(Exception):
                    entry.update(self.client.take_back(entry["id"], dict(entry)))
            if entry and entry.get("state") != "cancelled":
                self.sent.append(f"{name} {args}")
            raise
        except CommandTimeout as exc:  # an unknown outcome left the ground; a plain timeout never ran
            if isinstance(exc, CommandOutcomeUnknown):
                self.sent.append(f"{name} {args}")
            raise ProcedureFailed(named(name, exc)) from None  # its message names it already
        if result.refused and not result.attempts:  # ended on the ground (another dictionary, cancelled, rejected):
            # never "sent" (found in audit: `send` logged it sent and its step passed)
            raise ProcedureFailed(f"{name}: {result.refused}; not sent")
        self.sent.append(f"{name} {args}")
        return result

    def send(self, name: str, /, **args: Any) -> CommandResult:
        """``name`` positional-only: a command's own argument may be called ``name`` (SET_PARAM, FILE_DELETE)."""
        self._before_send(name, args)
        result = self._send(name, args, wait="sent")
        self._say(f"{name} {args} sent")
        return result

    def send_and_wait(self, name: str, args: dict[str, Any] | None = None, wait: str = "completed",
                      timeout_s: float = 10.0, expect: str = "completed") -> CommandResult:
        """``expect="failed"``: the step passes only where the agent itself refused or failed the command (a
        refusal on the ground, or no answer, is not the refusal the step checks)."""
        if expect not in EXPECTS:  # found in audit: a typo ("refused") passed a command that completed
            raise ProcedureFailed(f"expect: {expect!r} is not one of {', '.join(EXPECTS)}")
        if wait not in WAITS:  # found in audit: "sending NOOP" was logged, then a ValueError's traceback
            raise ProcedureFailed(f"wait: {wait!r} is not one of {', '.join(WAITS)}")
        timeout_s = _timeout(timeout_s)
        self._before_send(name, args or {})
        result = self._send(name, args or {}, wait=wait, timeout_s=timeout_s,
                            on_report=lambda r: self._say(
                                f"  {name}: {r.stage.value}" if r.success else
                                f"  {name}: FAILED at {r.stage.value}: {r.code.name} {r.reason}"))
        for hook in self.on_command:
            hook(result)
        failed = result.failed
        if expect == "failed":
            if not any(not r.success for r in result.reports):
                raise ProcedureFailed(f"{name} was expected to be refused by the agent but reached {result.outcome}")
            return result
        if failed:
            raise ProcedureFailed(f"{name}: {result.outcome}")
        return result

    # --- telemetry and events ------------------------------------------------------------

    def _server_lost(self) -> None:
        """Raise :class:`ServerError` once the client's connection to the server has ended: nothing more will come on
        it, so the procedure is stopped as Ctrl-C stops it, with the step and the commands sent (found in audit: a
        wait ran its whole timeout, then failed its step as if the telemetry were wrong; exit 1)."""
        from ground.api import ServerError

        reason = self._lost_reason()
        if reason:
            raise ServerError(f"the connection to the server ended ({reason})")

    def fresh_s(self) -> float:
        """How old a value ``assert_telemetry`` takes may be, unless told: ten live housekeeping periods as the agent
        reports them (``hk_period_s`` times ``hk_live_every``: the rest is played back later), at least
        DEFAULT_MAX_AGE_S (found in audit: a fixed 10 s failed every assertion on a board told to send housekeeping
        every 30 s; in review: or live every 20th of 1 s)."""
        def number(name: str, default: float) -> float:
            value = self.client.parameters.get(name)
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            return float(value) if ok else default

        live_s = number("hk_period_s", 1.0) * number("hk_live_every", 1.0)
        return min(max(DEFAULT_MAX_AGE_S, FRESH_PERIODS * live_s), MAX_TIMEOUT_S)

    def _lost_reason(self) -> str:
        return self.client.lost_reason()

    def _wait_for(self, predicate: Callable[[Received], bool], timeout_s: float) -> Received:
        """``client.wait_for``, in slices of at most WAIT_SLICE_S, the server's connection looked at after each: what
        came before it ended (its last telemetry) is looked at first (found in review: a wait it met was "lost")."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                return self.client.wait_for(predicate, max(0.0, min(left, WAIT_SLICE_S)))
            except TimeoutError:
                self._server_lost()
                if left <= WAIT_SLICE_S:
                    raise

    def _channel(self, name: str) -> None:
        if name not in self.client.dictionary.channel_by_name:
            raise ProcedureFailed(f"no channel {name} in the dictionary")

    @staticmethod
    def _condition(name: str, predicate: Any, event: bool = False) -> None:
        """A condition must be one: a value given for it (``"IDLE"`` for ``equals("IDLE")``) is said so, naming the
        point or event (found in audit: "TypeError: 'str' object is not callable", and only once a value came)."""
        if callable(predicate):
            return
        how = (f"a function of the event, e.g. lambda e: e.args['NAME'] == {predicate!r}" if event else
               f"equals({predicate!r}) (or within_range(LO, HI), greater_than(X), less_than(X), a function of the "
               "value)")
        raise ProcedureFailed(f"{name}: the condition {predicate!r} is a value, not a condition: write {how}")

    def latest(self, name: str) -> Any:
        """The latest value the ground holds, whenever it came (however stale: assert_telemetry ages what it
        takes, a wait looks past the mark)."""
        self._channel(name)
        self.client.poll(0)
        if name not in self.client.latest:
            raise ProcedureFailed(f"no value of {name} received yet")
        return self.client.latest[name][0]

    def wait_for_telemetry(self, name: str, predicate: Callable[[Any], bool], timeout_s: float | None = None) -> Any:
        """The first value of ``name`` that arrived live since the last command sent (the latest such one
        included) satisfying ``predicate``. ``timeout_s`` unless given: :meth:`fresh_s` (found in audit: a fixed
        10 s failed the health check on a board sending housekeeping every 15 s, as "dict_hash not == ...")."""
        self._channel(name)
        self._condition(name, predicate)
        timeout_s = _timeout(self.fresh_s() if timeout_s is None else timeout_s)
        self.client.poll(0)
        current = self._fresh.get(name)
        if current is not None and current[1] > self._mark and predicate(current[0]):
            # logged as a value waited for is (found in audit: a passed health check's log named none of these)
            self._say(f"  {name} = {current[0]!r} ({_describe(predicate)})")
            return current[0]
        try:
            item = self._wait_for(
                lambda i: (self._counts(i) and isinstance(i.record, HkRecord) and name in i.record.values
                           and predicate(i.record.values[name])), timeout_s)
        except TimeoutError:
            last = self.client.latest.get(name, ("never received",))[0]
            if name in self._fresh and self._fresh[name][1] > self._mark:
                # with its age (found in audit: a link lost mid-step read "admission not == 'ALL' ... (last: 'NONE')",
                # the power manager blamed for what was a silent link)
                age = f", made {self._age(name):.1f} s ago" if name in self._made else ""
                seen = f"(last: {last!r}{age})"
            else:  # found in audit: "dict_hash not == 'cb9c...' within 10.0 s (last: 'cb9c...')", where none had come
                seen = (f"(none came since the last command; the last before it: {last!r}): the link may be lost, or "
                        "housekeeping comes less often than that (give timeout_s)")
            raise ProcedureFailed(f"{name} not {_describe(predicate)} within {timeout_s} s {seen}") from None
        value = item.record.values[name]
        self._say(f"  {name} = {value!r} ({_describe(predicate)})")
        return value

    def assert_telemetry(self, name: str, predicate: Callable[[Any], bool],
                         max_age_s: float | None = None) -> Any:
        """The newest value of ``name`` made within ``max_age_s``, which must satisfy ``predicate`` (checked
        once, not waited for); where the ground holds none that fresh, the next one within ``max_age_s``. A
        stale value fails, naming its age: the board's state now is what is asserted. ``max_age_s`` unless given:
        :meth:`fresh_s`."""
        self._channel(name)
        self._condition(name, predicate)
        max_age_s = _timeout(self.fresh_s() if max_age_s is None else max_age_s, "max_age_s")
        self.client.poll(0)
        if self._age(name) > max_age_s:
            try:
                self._wait_for(lambda i: self._age(name) <= max_age_s, max_age_s)
            except TimeoutError:
                raise ProcedureFailed(self._stale(name, max_age_s)) from None
        value = self._made[name][0]
        if not predicate(value):
            raise ProcedureFailed(f"{name} = {value!r}, expected {_describe(predicate)}")
        return value

    def _age(self, name: str) -> float:
        """Seconds since the newest value of ``name`` this procedure heard was made (inf: none heard)."""
        made = self._made.get(name)
        return math.inf if made is None else self.clock() - made[1]

    def _stale(self, name: str, max_age_s: float) -> str:
        """Why no value of ``name`` passes for now: the age of the newest, or that none came."""
        if name in self._made:
            value = self._made[name][0]
            newest = f"the newest, {value!r}, is {self._age(name):.1f} s old"
        elif name in self.client.latest:
            newest = (f"the newest, {self.client.latest[name][0]!r}, came before this procedure began "
                      "(its age is unknown)")
        else:
            newest = "none was ever received"
        return (f"{name}: no value made in the last {max_age_s:g} s ({newest}): the link may be lost, or "
                f"housekeeping comes less often than that (give max_age_s)")

    def assert_event(self, name: str, predicate: Callable[[EventRecord], bool] | None = None,
                     timeout_s: float = 5.0, since_s: float | None = None, unless: tuple[str, ...] = ()) -> EventRecord:
        """An event ``name`` that arrived live since the last command sent (and, with ``since_s``, of packet
        time at or after it) satisfying ``predicate``. ``unless``: events that, satisfying the same, fail it at once
        with their text (a job's JOB_FAILED and JOB_CANCELLED, for its JOB_DONE: found in audit, a training job
        cancelled at once was waited for 120 s, then said as "no event JOB_DONE")."""
        unless = (unless,) if isinstance(unless, str) else tuple(unless)
        for each in (name, *unless):
            if each not in self.client.dictionary.event_by_name:
                raise ProcedureFailed(f"no event {each} in the dictionary")
        if predicate is not None:
            self._condition(name, predicate, event=True)
        timeout_s = _timeout(timeout_s)
        ok = lambda rec: (rec.event.name in (name, *unless)  # noqa: E731
                          and (since_s is None or rec.time_s >= since_s) and (predicate is None or predicate(rec)))
        self.client.poll(0)
        for arrival, rec in self._events:
            if arrival > self._mark and ok(rec):
                return self._event_is(name, rec)
        try:
            item = self._wait_for(lambda i: self._counts(i) and isinstance(i.record, EventRecord)
                                  and ok(i.record), timeout_s)
        except TimeoutError:
            raise ProcedureFailed(f"no event {name} within {timeout_s} s") from None
        self._say(f"  event {item.record.event.name}: {item.record.text}")
        return self._event_is(name, item.record)

    @staticmethod
    def _event_is(name: str, rec: EventRecord) -> EventRecord:
        if rec.event.name != name:
            raise ProcedureFailed(f"{rec.event.name}, not {name}: {rec.text}")
        return rec

    def interrupted(self, why: str) -> ProcedureInterrupted:
        """What an interruption leaves: the step it was in and the commands sent (the last one's outcome
        may be unknown), logged and returned to raise."""
        last = f"; the last command sent, {self.sent[-1]}, may have run (its outcome is unknown)" if self.sent else \
            "; no command was sent"
        where = (f"in step {self.steps} ({self._step_title})" if self._step_title else
                 f"after step {self.steps}" if self.steps else "before its first step")
        text = f"{why} {where}, after sending {len(self.sent)} commands{last}"
        return ProcedureInterrupted(text, len(self.sent))


def _timeout(timeout_s: Any, key: str = "timeout_s") -> float:
    """A wait a procedure asked for (``key`` names it): a number of seconds, 0 to MAX_TIMEOUT_S (found in audit:
    inf crashed the wait with an OverflowError once the command had left, and NaN waited for ever)."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) \
            or not 0.0 <= timeout_s <= MAX_TIMEOUT_S:
        raise ProcedureFailed(f"{key}: {timeout_s!r} is not a number of seconds from 0 to {MAX_TIMEOUT_S:g}")
    return float(timeout_s)


def load_procedure(path: Path | str) -> Any:
    """The procedure module at ``path``, loaded (its top level run); :class:`ProcedureUnreadable` where
    it cannot be: missing, not Python, an error as it loads (with the file and line it came from), or
    no ``run``. Loaded before anything is connected or sent."""
    path = Path(path)
    if not path.is_file():
        raise ProcedureUnreadable(f"{path}: no such procedure file")
    spec = importlib.util.spec_from_file_location(f"sunlit_procedure_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ProcedureUnreadable(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:  # in the procedure, or in a module it imports: that module's file
        where = path if exc.filename is None or _same_file(exc.filename, path) else Path(exc.filename)
        raise ProcedureUnreadable(f"{where}:{exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the procedure's own code, as it loads: said, not a traceback
        raise ProcedureUnreadable(f"{path}{_where_in(exc, path)}: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:  # found in audit: `sys.exit(3)` at its top level ended the CLI silently with status 3,
        # "not confirmed"; a file that cannot load is bad input, said with its line
        raise ProcedureUnreadable(f"{path}{_where_in(exc, path)}: it called sys.exit({exc.code!r}) as it loaded; a "
                                  "procedure file defines run(proc), and nothing at its top level ends the program") \
            from None
    if not callable(getattr(module, "run", None)):
        raise ProcedureUnreadable(f"{path}: defines no run(proc)")
    module.__sunlit_path__ = path
    return module


def run_procedure(module: Any, client: GroundClient, log: Callable[[str], None] = print,
                  setup: Callable[[Procedure], None] | None = None,
                  confirm: Callable[[Any], bool] | None = None) -> bool:
    """Call a loaded procedure's ``run(proc)``; True if it returned, False if a step failed (or the
    procedure's own code raised: said with its line). Ctrl-C or the server failing a request (a lost
    session, the server gone) is not the procedure's fault: said with the step and the commands sent, and
    raised as :class:`ProcedureInterrupted` (found in audit: nothing said what had been sent)."""
    from ground.api import ServerError

    path: Path = module.__sunlit_path__
    proc = Procedure(client, log, who=f"procedure:{path.name}", confirm=confirm)
    if setup is not None:
        setup(proc)
    log(f"procedure {path.name}: {((module.__doc__ or '').strip().splitlines() or [''])[0]}")  # a blank one: ''
    try:
        returned = module.run(proc)
    except (ProcedureFailed, AssertionError) as exc:
        log(f"procedure {path.name}: FAILED: {printable(exc)}")  # the agent's reason may be in it: see _say
        return False
    except (ServerError, KeyboardInterrupt) as exc:
        why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"stopped: {exc};"
        stopped = proc.interrupted(why)
        log(f"procedure {path.name}: NOT FINISHED: {printable(stopped)}")
        raise stopped from None
    except Exception as exc:  # noqa: BLE001 - a fault in the procedure's code fails it, with its line
        log(f"procedure {path.name}: FAILED: {type(exc).__name__}: {printable(exc)} (raised at "
            f"{path.name}{_where_in(exc, path)})")
        return False
    except SystemExit as exc:  # sys.exit() in a step: it did not run to its end (found in audit: exit 0, no verdict)
        log(f"procedure {path.name}: FAILED: it called sys.exit({exc.code!r}) at {path.name}{_where_in(exc, path)}, "
            "before its end; a procedure ends by returning, or fails by raising ProcedureFailed")
        return False
    finally:
        proc.close()
    if returned is False:  # found in audit: `return False` from a check of its own passed, exit 0
        log(f"procedure {path.name}: FAILED: its run(proc) returned False")
        return False
    log(f"procedure {path.name}: PASSED ({proc.steps} steps)")
    return True


def run_procedure_file(path: Path | str, client: GroundClient, log: Callable[[str], None] = print,
                       setup: Callable[[Procedure], None] | None = None) -> bool:
    """:func:`load_procedure` then :func:`run_procedure`."""
    return run_procedure(load_procedure(path), client, log, setup)


__all__ = ["Procedure", "ProcedureFailed", "ProcedureInterrupted", "ProcedureUnreadable", "equals",
           "greater_than", "less_than", "load_procedure", "run_procedure", "run_procedure_file", "unmeasured_or",
           "within_range"]


def _same_file(name: str, path: Path) -> bool:
    """Whether a code object's file name is ``path`` (absolute in a traceback; ``path`` may be relative)."""
    return os.path.abspath(name) == os.path.abspath(path)


def _where_in(exc: BaseException, path: Path) -> str:
    """``:LINE`` of the last frame of ``exc``'s traceback in ``path``, "" where none is."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if _same_file(tb.tb_frame.f_code.co_filename, path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line is not None else ""
