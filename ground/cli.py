"""``sunlit-ground``: the ground server and the operators' tools, its clients.

``sunlit-ground server`` owns the spacecraft links, the archive and the command queue; every
other subcommand talks to it (``--server URL``, after ``sunlit-ground login``), so any number
of operators see one state and the archive holds one copy of each packet. ``--direct LINK``
talks to an agent's link itself, for debugging on the bench: nothing goes to the server's
archive or history, and other operators do not see it.

Exit codes: 0 done; 1 the command failed, or nothing arrived in time; 2 bad input or no
server; 3 a hazardous command not confirmed; 4 a command timed out (it never ran: it never left
the ground, or the agent said it never received it; one still in the server's queue when the wait
ends is cancelled, so give a long ``--timeout`` to queue one ahead of a pass); 5 a command waits for a second operator's
approval; 6 a command's outcome is unknown (no final report in time, or the connection to the server
lost once it had the command: it may have run; the server keeps following it and asks the agent,
``sunlit-ground queue`` shows how it ends; on a direct
link, ``sunlit-ground send COMMAND_STATUS cmd_id=N`` asks without running anything).
"""

from __future__ import annotations

import argparse
import errno
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from flight.cli import parse_assignments, quiet_stdout
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, FailureCode, Severity, date_for_seconds
from flight.link.messages import EventRecord, HkRecord, ParamRecord, PlanRecord, ack_flags_for
from flight.link.transport import LinkConfigError
from ground.api import (
    DEFAULT_SERVER,
    TOKEN_ENV,
    ApiClient,
    CommandLost,
    ServerClient,
    ServerError,
    load_token,
    save_token,
)
from ground.cli_args import count as _count, printable as _printable, seconds as _seconds
from ground.client import CommandOutcomeUnknown, CommandTimeout, GroundClient, direct_client

EXIT_FAILED, EXIT_INPUT, EXIT_NOT_CONFIRMED, EXIT_TIMEOUT, EXIT_AWAITING_APPROVAL, EXIT_UNKNOWN = 1, 2, 3, 4, 5, 6


class _AwaitingApproval(Exception):
    """A command the server holds for a second operator's approval (the two-person rule), not waited for."""

    def __init__(self, entry_id: int):
        super().__init__(f"queue entry {entry_id} waits for approval")
        self.entry_id = entry_id


class Refused(Exception):
    """Said to the user on stderr, with an exit code; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def _stamp(t_s: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(time.time() if t_s is None else t_s))


def _api(args: argparse.Namespace) -> ApiClient:
    token = load_token(args.server)
    if token is None:
        raise Refused(f"not logged in to {args.server}: run `sunlit-ground --server {args.server} login`")
    return ApiClient(args.server, token)


def _open(args: argparse.Namespace) -> GroundClient:
    """A client of the server, or with ``--direct`` of the link itself (bench debugging)."""
    if args.direct:
        print(f"direct link {args.direct}: for debugging on the bench; the ground server does not archive "
              "this session and other operators do not see it", file=sys.stderr)
        return direct_client(args.direct, args.tc_keys, args.zmq_server_public, args.zmq_client_secret, args.tm_auth)
    return ServerClient(_api(args), args.spacecraft)





def _confirm(command: Any, yes: bool) -> None:
    if not command.hazardous or yes:
        return
    if not sys.stdin.isatty():
        raise Refused(f"{command.name} is hazardous and there is no terminal to confirm it on: "
                      "give --yes to send it", EXIT_NOT_CONFIRMED)
    try:
        answer = input(f"{command.name} is hazardous: {command.description}\nSend it? [y/N] ")
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the question: a no
        print(file=sys.stderr)
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("not sent", EXIT_NOT_CONFIRMED)


# --- commanding ------------------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    try:
        command = DICTIONARY.command(args.command)
        assignments = parse_assignments(args.args)
        values = command.validate_args(assignments)
    except ArgumentError as exc:  # a date for a time in seconds: said as its number, as sunlit-flight says it
        hint = date_for_seconds(command, assignments) if exc.code is not FailureCode.UNKNOWN_COMMAND else ""
        raise Refused(f"refused before sending: {exc}{hint}") from None
    except ValueError as exc:
        raise Refused(f"refused before sending: {exc}") from None
    _check_as_the_board(command.name, values)
    try:
        ack_flags = None if args.ack is None else ack_flags_for(s.strip() for s in args.ack.split(",") if s.strip())
    except ValueError as exc:
        raise Refused(f"refused before sending: --ack: {exc}") from None
    _confirm(command, args.yes)
    client = _open(args)
    try:
        match = client.dictionary_matches(timeout_s=min(args.timeout, 3.0))
        if match is False:
            print(f"warning: agent dictionary {client.agent_dict_hash} differs from this console's "
                  f"{DICTIONARY.version_hash}; arguments may be read differently", file=sys.stderr)
        elif match is None:
            print("warning: no housekeeping from the agent yet; dictionary not checked", file=sys.stderr)

        def show(report: Any) -> None:
            text = report.stage.value if report.success else \
                f"FAILED at {report.stage.value}: {report.code.name} {report.reason}"
            print(f"  {_stamp()} {command.name}: {text}", flush=True)

        pending: list[dict] = []
        said_queued: set[int] = set()

        def entry(e: dict) -> None:
            # The server took it (a viewer's it refuses): said once, at the first state seen, maybe past queued.
            if e["state"] != "pending_approval" and e["id"] not in said_queued:
                said_queued.add(e["id"])
                print(f"  {_stamp()} {command.name}: queued (entry {e['id']})", flush=True)
            if e["state"] == "pending_approval":
                pending.append(e)
                print(f"  {_stamp()} {command.name}: waiting for a second operator's approval "
                      f"(queue entry {e['id']}: sunlit-ground approve {e['id']})", flush=True)

        kwargs: dict[str, Any] = {"on_entry": entry} if isinstance(client, ServerClient) else {}
        try:
            # Said inside: a Ctrl-C once "sent" is on the screen is an unknown outcome, never "interrupted" with
            # exit 1 (seen in CI: it landed between this line and the send)
            print(f"  {_stamp()} {command.name}: {'to the server' if not args.direct else 'sent'} "
                  f"{json.dumps(values)}", flush=True)
            result = client.send(command.name, values, wait=args.wait, timeout_s=args.timeout, on_report=show,
                                 ack_flags=ack_flags, **kwargs)
        except CommandOutcomeUnknown as exc:
            print(f"unknown: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
        except KeyboardInterrupt:  # it may have gone out: never a failure that invites sending it again (review)
            print(f"\ninterrupted: {command.name} may have been sent; its outcome is unknown (see "
                  f"`sunlit-ground queue` and `sunlit-ground events` before sending it again)", file=sys.stderr)
            return EXIT_UNKNOWN
        except CommandTimeout as exc:
            if pending and "pending_approval" in str(exc):
                print(f"  still waiting for approval after {args.timeout:g} s; it stays queued on the server",
                      file=sys.stderr)
                return EXIT_AWAITING_APPROVAL
            print(f"timeout: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
        except OSError as exc:  # its progress could not be written (a full disk under `> log`): as Ctrl-C, unknown
            # (after CommandTimeout, which is an OSError too)
            print(f"{command.name}: its output cannot be written ({exc.strerror or exc}); it may have been sent and "
                  "its outcome is unknown (see `sunlit-ground queue` and `sunlit-ground events` before sending it "
                  "again)", file=sys.stderr)
            quiet_stdout()  # what is left in the buffer cannot be written either: no second error at exit
            return EXIT_UNKNOWN
        if result.refused:
            print(f"  {_stamp()} {command.name}: {result.refused}", flush=True)
        if result.result:
            print(f"  result: {json.dumps(result.result)}")
        return EXIT_FAILED if result.failed else 0
    finally:
        client.close()


def _check_as_the_board(name: str, values: dict[str, Any]) -> None:
    """The checks the command's handler makes that need no state, made before sending
    (:func:`flight.agent.schedule.stateless_refusal`)."""
    from flight.agent.schedule import stateless_refusal

    refused = stateless_refusal(DICTIONARY, name, values)
    if refused is not None:
        raise Refused(f"refused before sending: {name} {refused.field}: {refused.reason}")


_NUMBER = (int, float)


_MAY_BE_DONE = "; the server may have done it: `sunlit-ground queue` shows"  # a POST's answer unread


def _field(api: ApiClient, path: str, answer: Any, field: str, kind: Any, where: str = "", then: str = "") -> Any:
    """``answer[field]`` where it is a ``kind``: an answer without it (a server of another version, another JSON
    service on --server's URL) is said naming the route and the field, exit 2, never a KeyError's or a TypeError's
    traceback (found in audit: `queue`, `approve`, `events` with --spacecraft given ended in one)."""
    value = answer.get(field, _field) if isinstance(answer, dict) else _field  # _field: none there
    if value is _field or not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, _NUMBER)):
        raise ServerError(f"{api.server}{path}: the answer has no {where}{field} (or not as this CLI reads it); is "
                          f"{api.server} a Sunlit ground server of this version? (--server URL){then}")
    return value


def _entry(api: ApiClient, path: str, entry: Any, where: str = "", then: str = "") -> dict[str, Any]:
    """A queue entry of the server's answer, with each field this CLI prints (:func:`_field`)."""
    for field, kind in (("id", int), ("name", str), ("args", dict), ("state", str), ("who", str),
                        ("queued_s", _NUMBER)):
        _field(api, path, entry, field, kind, where, then)
    if entry.get("approved_by") is not None:
        _field(api, path, entry, "approved_by", str, where, then)
    return entry


def _queue_action(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        api = _api(args)
        spacecraft = args.spacecraft or api.default_spacecraft()
        body: dict[str, Any] = {"spacecraft": spacecraft}
        if action == "reject" and args.reason:
            body["reason"] = args.reason
        path = f"/api/commands/{args.id}/{action}"
        entry = _entry(api, path, api.post(path, body), then=_MAY_BE_DONE)
        print(f"{entry['id']} {entry['name']} {json.dumps(entry['args'])}: {entry['state']} "
              f"(sent by {entry['who']}{', approved by ' + entry['approved_by'] if entry.get('approved_by') else ''})")
        return 0
    return run


def _cmd_queue(args: argparse.Namespace) -> int:
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    if args.action in ("hold", "release"):
        path = f"/api/queue/{args.action}"
        status = api.post(path, {"spacecraft": spacecraft})
        held = _field(api, path, status, "held", bool, then=_MAY_BE_DONE)
        held_by = _field(api, path, status, "held_by", str, then=_MAY_BE_DONE) if held else ""
        print(f"{spacecraft} queue: {'HELD by ' + held_by if held else 'released'}")
        return 0
    path = "/api/commands"
    answer = api.get(path, spacecraft=spacecraft)
    # each field checked before a line is printed (:func:`_field`)
    queue = _field(api, path, answer, "queue", dict)
    held = _field(api, path, queue, "held", bool, "queue.")
    held_by = _field(api, path, queue, "held_by", str, "queue.") if held else ""
    counts = _field(api, path, queue, "counts", dict, "queue.")
    listed = _field(api, path, answer, "commands", list)
    first = max(0, len(listed) - args.last)
    shown = [_entry(api, path, e, f"commands[{first + k}].") for k, e in enumerate(listed[first:])]
    print(f"{spacecraft} queue: {'HELD by ' + held_by if held else 'released'}; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for e in shown:
        print(f"{e['id']:>6} {_stamp(e['queued_s'])} {e['who']:<10} {e['name']:<16} {e['state']:<17} "
              f"{json.dumps(e['args'])}{'  approved by ' + e['approved_by'] if e.get('approved_by') else ''}")
    held = sum(n for n in counts.values() if isinstance(n, int))
    if args.last > len(listed) and held > len(listed):  # found in audit: --last 500 showed the newest 200, unsaid
        print(f"{held - len(listed)} older entries not shown: the server lists its newest {len(listed)} (the counts "
              "above are of all; `sunlit-ground archive commands` has every command)", file=sys.stderr)
    return 0


# --- telemetry -------------------------------------------------------------------------------


def _format(value: Any) -> str:
    """A channel's value for the terminal: a text channel (the power mode, a station's name) is the board's, and
    printable only (found in audit: an escape in one reached the operator's terminal)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return _printable(value)


def _cmd_tm(args: argparse.Namespace) -> int:
    """Current values with units and limit state; ``--follow`` one time-stamped block per packet."""
    from ground.alarms import AlarmManager, LimitStore
    from ground.console import COLOURS, RESET

    wanted = list(dict.fromkeys(args.channel or []))
    unknown = [n for n in wanted if n not in DICTIONARY.channel_by_name]
    if unknown:
        raise Refused(f"no channel {', '.join(unknown)} in the dictionary (sunlit-flight dictionary lists them)")
    client = _open(args)
    alarms = AlarmManager(DICTIONARY, LimitStore(Path(args.limits) if args.limits and args.direct else None))
    colour = sys.stdout.isatty()
    stale_after_s = 3.0
    seen_wall: dict[str, float] = {}

    def line(name: str, value: Any, state: str) -> str:
        ch = DICTIONARY.channel_by_name[name]
        text = f"{name:>24} = {_format(value)} {ch.unit} [{state}]"
        return f"{COLOURS.get(state, '')}{text}{RESET}" if colour else text

    try:
        if isinstance(client, ServerClient):
            client.connect(timeout_s=args.timeout)
            state = (client.server_link.hello.get("states") or {}).get(client.spacecraft, {})
            stale_after_s = (state.get("status") or {}).get("stale_after_s") or stale_after_s
            alarms.observe_parameters(state.get("parameters") or {})
            now = time.time()
            for name, snap in (state.get("latest") or {}).items():
                if name in DICTIONARY.channel_by_name:  # each field checked (:func:`_field`)
                    where = f"greeting's latest.{name}."
                    value = _field(client.api, "/ws", snap, "value", object, where)
                    at = _field(client.api, "/ws", snap, "time_s", _NUMBER, where)
                    age = _field(client.api, "/ws", snap, "age_s", _NUMBER, where) if snap.get("age_s") else 0.0
                    client.latest[name] = (value, at)
                    seen_wall[name] = now - float(age)
        if not args.follow:
            names = wanted or [ch.name for ch in DICTIONARY.channels]
            deadline = time.monotonic() + args.timeout
            while not (set(wanted or ["mode"]) <= set(client.latest)) and time.monotonic() < deadline:
                for item in client.poll(min(0.5, max(0.0, deadline - time.monotonic()))):
                    if isinstance(item.record, HkRecord):
                        for name in item.record.values:
                            seen_wall[name] = time.time()
                    if isinstance(item.record, ParamRecord):
                        alarms.observe_parameters(item.record.values)
            missing = [n for n in (wanted or []) if n not in client.latest]
            if not client.latest:
                print(f"no housekeeping received in {args.timeout:g} s", file=sys.stderr)
                return EXIT_FAILED
            now = time.time()
            for name in names:
                if name not in client.latest:
                    continue
                value = client.latest[name][0]
                stale = now - seen_wall.get(name, now) > stale_after_s
                print(line(name, value, "stale" if stale else alarms.observe(name, value)))
            if missing:
                print(f"no value yet for {', '.join(missing)} within {args.timeout:g} s", file=sys.stderr)
                return EXIT_FAILED
            return 0
        # --follow: one block per packet that carries a wanted channel, with its times.
        last_quiet_notice = time.monotonic()
        while True:
            if isinstance(client, ServerClient) and client.server_link.closed_reason:
                raise Refused(f"the server closed the connection: {client.server_link.closed_reason}", EXIT_FAILED)
            got = client.poll(1.0)
            for item in got:
                rec = item.record
                if item.gap:
                    print(f"{_stamp()} GAP: {item.gap} packet(s) missing before APID {item.packet.apid:#05x} "
                          f"seq {item.packet.seq_count}", flush=True)
                if item.error:
                    print(f"{_stamp()} BAD PACKET (archived raw): {item.error}", flush=True)
                if isinstance(rec, ParamRecord):
                    alarms.observe_parameters(rec.values)
                elif isinstance(rec, HkRecord):
                    names = [n for n in rec.values if not wanted or n in wanted]
                    if not names:
                        continue
                    print(f"--- {_stamp()} {rec.packet.name} (packet time "
                          f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(rec.time_s))}Z)", flush=False)
                    for name in names:
                        print(line(name, rec.values[name], alarms.observe(name, rec.values[name], rec.time_s)))
                    sys.stdout.flush()
                elif isinstance(rec, EventRecord):
                    print(f"{_stamp(rec.time_s)} EVENT {rec.event.severity.name:<11} {rec.event.name}: "
                          f"{_printable(rec.text)}", flush=True)  # as `events` prints it (found in audit: raw here)
                elif isinstance(rec, PlanRecord) and not wanted:
                    print(f"{_stamp(rec.time_s)} PLAN  {plan_summary(rec.to_json())} (sunlit-ground plan shows it)",
                          flush=True)
            if got:
                last_quiet_notice = time.monotonic()
            elif time.monotonic() - last_quiet_notice > stale_after_s:
                print(f"--- {_stamp()} no telemetry for {time.monotonic() - last_quiet_notice:.0f} s: values above "
                      "are STALE", flush=True)
                last_quiet_notice = time.monotonic()
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def _event_line(time_s: float, severity: str, name: str, text: str) -> str:
    """One event, its text from the agent made printable: an escape or a line break in an argument (a file's
    name) would otherwise drive the operator's terminal or forge a line (an audit)."""
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(time_s))} UTC {severity:<11} {_printable(name)}: "
            f"{_printable(text)}")


def _cmd_events(args: argparse.Namespace) -> int:
    """Recent events from the server's archive, then (``--follow``) new ones as they come."""
    floor = Severity[args.severity] if args.severity else Severity.DIAGNOSTIC
    if args.direct:
        client = _open(args)
        shown = 0
        deadline = None if args.follow else time.monotonic() + args.timeout
        try:
            while deadline is None or time.monotonic() < deadline:
                for item in client.poll(0.5):
                    rec = item.record
                    if isinstance(rec, EventRecord) and rec.event.severity >= floor:
                        print(_event_line(rec.time_s, rec.event.severity.name, rec.event.name, rec.text), flush=True)
                        shown += 1
        except KeyboardInterrupt:
            pass
        finally:
            client.close()
        if not shown and not args.follow:
            print(f"no events in {args.timeout:g} s (a direct link has no history; the server keeps it)",
                  file=sys.stderr)
        return 0
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    # Follow first, then read the history: nothing falls between the two, and what both
    # hold is shown once.
    client = ServerClient(api, spacecraft) if args.follow else None
    try:
        answer = api.get("/api/events", spacecraft=spacecraft, limit=args.last, severity=floor.name)
        events = _field(api, "/api/events", answer, "events", list)
        for k, e in enumerate(events):  # each checked before a line is printed (:func:`_field`)
            for field, kind in (("time_s", _NUMBER), ("severity", str), ("name", str), ("text", str)):
                _field(api, "/api/events", e, field, kind, f"events[{k}].")
        shown = set()
        for e in events:
            print(_event_line(e["time_s"], e["severity"], e["name"], e["text"]))
            shown.add((round(e["time_s"], 3), e["name"], e["text"]))
        if not events:
            print(f"no events at {floor.name} or above for {spacecraft} yet", file=sys.stderr)
        sys.stdout.flush()
        if client is None:
            return 0
        while True:
            for item in client.poll(1.0):
                rec = item.record
                if isinstance(rec, EventRecord) and rec.event.severity >= floor:
                    key = (round(rec.time_s, 3), rec.event.name, rec.text)
                    if key in shown:
                        continue
                    print(_event_line(rec.time_s, rec.event.severity.name, rec.event.name, rec.text), flush=True)
            if client.server_link.closed_reason:
                raise Refused(f"the server closed the connection: {client.server_link.closed_reason}", EXIT_FAILED)
    except KeyboardInterrupt:
        return 0
    finally:
        if client is not None:
            client.close()


# --- the energy plan ---------------------------------------------------------------------------


def plan_summary(plan: dict[str, Any]) -> str:
    """One line: when the plan was made, its horizon, its solve time, its lowest predicted charge."""
    n, step_s = len(plan["mode"]), float(plan["step_s"])
    return (f"made {_stamp(plan['time_s'])} UTC, {n} steps of {step_s:g} s ({n * step_s / 60:.0f} min), "
            f"solve {float(plan['solve_ms']):.1f} ms, charge {float(plan['soc_pct'][0]):.1f} % now, "
            f"lowest {min(map(float, plan['soc_pct'])):.1f} %, keeps {float(plan['keep_pct']):.1f} %")


def plan_table(plan: dict[str, Any], every_step: bool = False) -> list[str]:
    """The plan as text rows: minutes from its start, predicted charge, mode, umbra. Steps with
    the same mode and shadow are one row (charge at its start and end) unless ``every_step``."""
    names = [_printable(n) for n in plan["mode_names"]]
    modes, umbra, soc = plan["mode"], plan["umbra"], [float(v) for v in plan["soc_pct"]]
    step_min = float(plan["step_s"]) / 60.0
    rows = [f"{'from min':>8} {'to min':>7} {'SoC start %':>11} {'SoC end %':>9}  {'mode':<16} umbra"]
    i = 0
    while i < len(modes):
        j = i + 1
        while not every_step and j < len(modes) and modes[j] == modes[i] and bool(umbra[j]) == bool(umbra[i]):
            j += 1
        mode = "idle" if modes[i] < 0 else names[modes[i]] if modes[i] < len(names) else f"#{modes[i]}"
        rows.append(f"{i * step_min:>8.1f} {j * step_min:>7.1f} {soc[i]:>11.1f} {soc[j]:>9.1f}  {mode:<16} "
                    f"{'UMBRA' if umbra[i] else '-'}")
        i = j
    return rows


def _cmd_plan(args: argparse.Namespace) -> int:
    """The agent's latest energy plan, from the server (which keeps the newest it received)."""
    if args.direct:
        raise Refused("sunlit-ground plan asks the ground server (it keeps the newest plan); --direct has none to ask")
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    answer = api.get("/api/plan", spacecraft=spacecraft)
    if not answer.get("available"):
        print(f"{spacecraft}: no power plan: {answer.get('reason') or 'the server gave no reason'}", file=sys.stderr)
        return EXIT_FAILED
    plan = answer.get("plan")
    try:
        if not isinstance(plan, dict):  # named (found in audit: "'NoneType' object is not subscriptable")
            raise KeyError("plan")
        head = f"{spacecraft} power plan {plan_summary(plan)}"
        rows = plan_table(plan, args.steps)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise Refused(f"the server's plan answer is not one this CLI reads ({type(exc).__name__}: {exc}); "
                      "is the server a newer version?", EXIT_FAILED) from None
    print(head)
    print("\n".join(rows))
    if answer.get("stale"):
        age = answer.get("age_s")
        print(f"STALE: this plan was made {age:.0f} s before {spacecraft}'s newest housekeeping" if
              isinstance(age, (int, float)) else f"STALE: no housekeeping from {spacecraft} since this server started "
              "to judge this plan by", file=sys.stderr)
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    """The agent's on-board schedule: upload a file of time tags, or list what it holds."""
    from flight.storage import ReadRefused, read_file_or_pipe
    from ground.schedule_file import MAX_FILE_BYTES, ScheduleFileError, parse_schedule

    tags = []
    if args.action == "upload":
        if not args.file:
            raise Refused("schedule upload FILE: which schedule file?")
        try:
            # Bounded, and a FIFO no one writes never waited on (found in audit: it hung, a huge file was read whole);
            # a pipe with its writer (`<(...)`, /dev/stdin) is read as a file is (found in review)
            text = read_file_or_pipe(args.file, MAX_FILE_BYTES).decode("utf-8")
        except ReadRefused as exc:
            raise Refused(f"{args.file}: {exc}") from None
        except OSError as exc:
            raise Refused(f"{args.file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise Refused(f"{args.file}: not UTF-8 text (byte {exc.start}); a schedule file is TOML") from None
        try:
            tags = parse_schedule(text, time.time(), args.file)
        except ScheduleFileError as exc:
            raise Refused(f"refused before sending: {exc}") from None
        _confirm(DICTIONARY.command("SCHEDULE_AT"), args.yes)
    client = _open(args)
    awaiting: list[tuple[Any, int]] = []  # (the file's entry, its queue entry) held for a second operator

    def held(e: dict[str, Any]) -> None:  # the two-person rule: not waited for, entry by entry (found in audit)
        if e["state"] == "pending_approval":
            raise _AwaitingApproval(e["id"])

    on_entry: dict[str, Any] = {"on_entry": held} if isinstance(client, ServerClient) else {}
    sending = "SCHEDULE_LIST"
    try:
        for tag in tags:  # in release order; each named by its place in the file
            sending = f"entry[{tag.entry}] {tag.command} (its SCHEDULE_AT)"
            try:
                result = client.send("SCHEDULE_AT", tag.scheduler_args(time.time()), timeout_s=args.timeout,
                                     **on_entry)
            except _AwaitingApproval as exc:
                awaiting.append((tag, exc.entry_id))
                print(f"  entry[{tag.entry}] {_iso(tag.release_unix_s)} {tag.command} {json.dumps(tag.args)}: waits "
                      f"for a second operator's approval (queue entry {exc.entry_id}: sunlit-ground approve "
                      f"{exc.entry_id})")
                continue
            if not result.completed:
                print(f"entry[{tag.entry}] {tag.command}: {result.outcome}; the entries released before it are on "
                      "board (sunlit-ground schedule list)", file=sys.stderr)
                return EXIT_FAILED
            print(f"  entry[{tag.entry}] {_iso(tag.release_unix_s)} {tag.command} {json.dumps(tag.args)}: on board "
                  f"as entry {result.result.get('entry_id')}")
        sending = "SCHEDULE_LIST"
        listed = client.send("SCHEDULE_LIST", {}, timeout_s=args.timeout)
        if not listed.completed:
            print(f"SCHEDULE_LIST: {listed.outcome}", file=sys.stderr)
            return EXIT_FAILED
        found = listed.result
        print(f"on-board schedule: {found.get('count', 0)} entries")
        for e in found.get("entries", []):
            print(f"  {e.get('id'):>6}  {_iso(float(e.get('at', 0.0)))}  {e.get('command')}"
                  f"{'  HELD' if e.get('held') else ''}")
        if found.get("count", 0) > len(found.get("entries", [])):
            print(f"  ... and {found['count'] - len(found['entries'])} more")
        latest = getattr(client, "latest", {})
        aos, los = latest.get("next_aos_in_s", (None,))[0], latest.get("next_los_in_s", (None,))[0]
        station = latest.get("next_pass_station", ("",))[0]
        if isinstance(los, (int, float)):
            when = "in contact now" if aos == 0 else f"next pass in {aos:.0f} s"
            print(f"passes: {when} over {station or '?'}, LOS in {los:.0f} s")
        if awaiting:  # queued on the server: each goes on board once approved (not a failure, nor "never ran")
            print(f"{len(awaiting)} of {len(tags)} entries wait for a second operator's approval (queue entries "
                  f"{', '.join(str(q) for _tag, q in awaiting)}); each goes on board once approved", file=sys.stderr)
            return EXIT_AWAITING_APPROVAL
        return 0
    except CommandOutcomeUnknown as exc:
        print(f"unknown: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except CommandTimeout as exc:
        print(f"timeout: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except KeyboardInterrupt:  # what was being sent may be on board (found in audit: exit 1, "interrupted")
        print(f"\ninterrupted: {sending} may have been sent; its outcome is unknown (the entries said on board "
              "above are; `sunlit-ground schedule list` before sending it again)", file=sys.stderr)
        return EXIT_UNKNOWN
    finally:
        client.close()


def _iso(t_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_s))


def _cmd_console(args: argparse.Namespace) -> int:
    from ground.console import Console

    client = _open(args)
    try:
        if isinstance(client, ServerClient):
            client.connect(timeout_s=10.0)
        console = Console(client, limits_path=Path(args.limits) if args.limits and args.direct else None)
        console.run()
    finally:
        client.close()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ground.procedure import ProcedureInterrupted, ProcedureUnreadable, load_procedure, run_procedure

    try:  # before connecting: a file that cannot run is said as such, whether or not the link is up
        module = load_procedure(args.procedure)
    except ProcedureUnreadable as exc:
        raise Refused(f"sunlit-ground run: {exc}") from None
    client = _open(args)
    try:
        try:
            client.connect(timeout_s=args.timeout)
        except TimeoutError as exc:
            raise Refused(f"sunlit-ground run: {exc}") from None
        ok = run_procedure(module, client, log=lambda text: print(text, flush=True),
                           confirm=lambda command: _confirm_in_procedure(command, args.yes))
    except ProcedureInterrupted as exc:  # said with the step and what was sent; its outcome may be unknown
        return EXIT_UNKNOWN if exc.sent else EXIT_FAILED
    finally:
        client.close()
    return 0 if ok else EXIT_FAILED


def _confirm_in_procedure(command: Any, yes: bool) -> bool:
    """A hazardous command in a procedure, asked as ``send`` asks (found in audit: a procedure sent them
    unasked): ``--yes``, or a yes on the terminal; else not sent, and its step fails saying so."""
    try:
        _confirm(command, yes)
    except Refused as exc:
        print(f"sunlit-ground run: {exc}", file=sys.stderr, flush=True)
        return False
    return True


# --- the server and its users ----------------------------------------------------------------


def _cmd_server(args: argparse.Namespace) -> int:
    from ground.server import quick_config, serve
    from ground.server_config import ServerConfigError, load_server_config, parse_two_person

    try:
        if args.config:
            config = load_server_config(args.config, DICTIONARY)
        else:
            if not args.link:
                raise Refused("give --config FILE, or --link URL for one spacecraft")
            two = parse_two_person(args.two_person.split(",") if args.two_person and args.two_person != "hazardous"
                                   else (args.two_person or []), DICTIONARY, "--two-person")
            config = quick_config(args.link, spacecraft=args.spacecraft or "sunlit-1", host=args.host,
                                  port=args.port, archive=None if args.no_archive else args.archive,
                                  users=args.users, two_person=two)
    except ServerConfigError as exc:
        raise Refused(f"sunlit-ground server: {exc}") from None
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.cookie_secure:
        print(f"sunlit-ground server: warning: listening on {config.host} without TLS; put a TLS proxy in front "
              "and set server.cookie_secure = true", file=sys.stderr)
    return serve(config)


def _read_password(args: argparse.Namespace, confirm: bool) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise Refused("no terminal to ask the password on: give --password-stdin and pipe it in")
    first = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise Refused("the two passwords differ")
    return first


def _user_change(store: Any, args: argparse.Namespace) -> Any:
    """The role ``args`` gives its user (None: removed), refused if it cannot be made to ``store`` as it stands."""
    from ground.auth import Role

    known = store.users.get(args.name)
    if args.action == "remove":
        if known is None:
            raise Refused(f"no user {args.name!r} in {store.path}")
        return None
    if args.action == "passwd" and known is None:
        raise Refused(f"no user {args.name!r} in {store.path}")
    if args.action == "add" and known is not None:  # once replaced silently: password and role
        raise Refused(f"user {args.name!r} is in {store.path} already ({known.role.name.lower()}); "
                      f"`sunlit-ground user passwd {args.name}` sets a new password (with --role, a new role)")
    role = Role.parse(args.role) if args.role else (known.role if known is not None else None)
    if role is None:
        raise Refused("a new user needs --role viewer|operator|admin")
    return role


def _cmd_user(args: argparse.Namespace) -> int:
    from ground.auth import Role, User, UserFileError, UserStore, check_user_name, hash_password

    path = Path(args.users)

    def read() -> UserStore:
        return UserStore.load(path) if path.exists() else UserStore(path)

    try:
        if args.action == "list":
            for user in sorted(read().users.values(), key=lambda u: u.name):
                print(f"{user.name:<20} {user.role.name.lower()}")
            return 0
        check_user_name(args.name)
        _user_change(read(), args)  # refused before a password is asked
        digest = None if args.action == "remove" else hash_password(_read_password(args, confirm=True))
        try:
            with UserStore.locked(path):  # read again under the lock: what another admin did meanwhile stays
                store = read()
                admins = {u.name for u in store.users.values() if u.role is Role.ADMIN}
                role = _user_change(store, args)
                if role is None:
                    store.remove(args.name)
                else:
                    store.users[args.name] = User(args.name, role, digest)
                store.save()
        except OSError as exc:
            raise Refused(f"{path}: cannot write the users file: {exc.strerror or exc}") from None
    except (UserFileError, ValueError) as exc:
        raise Refused(str(exc)) from None
    print(f"{path}: {args.action} {args.name}: done (a running server reads the change within a second)")
    if admins and not any(u.role is Role.ADMIN for u in store.users.values()):
        print(f"warning: {path} has no admin now: nobody can cancel another operator's command "
              "(sunlit-ground user add NAME --role admin)", file=sys.stderr)
    return 0


def _cmd_login(args: argparse.Namespace) -> int:
    user = args.user or os.environ.get("USER") or ""
    if not user:
        raise Refused("give --user NAME")
    password = _read_password(args, confirm=False)
    api = ApiClient(args.server)
    answer = api.login(user, password)
    path = save_token(args.server, answer["user"], answer["token"])
    print(f"logged in to {api.server} as {answer['user']} ({answer['role']}); session kept in {path}")
    if os.environ.get(TOKEN_ENV):  # found in audit: it went on using an ended session, as if the login had failed
        print(f"warning: ${TOKEN_ENV} is set and overrides this session for every other subcommand: unset it to "
              "use this one", file=sys.stderr)
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    token = load_token(args.server)
    if token:
        try:
            ApiClient(args.server, token).post("/api/logout")
        except ServerError:
            pass  # the session is forgotten here whatever the server says
    save_token(args.server, "", "")
    print(f"logged out of {args.server}")
    return 0


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sunlit-ground", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("SUNLIT_GROUND_SERVER", DEFAULT_SERVER),
                        help=f"the ground server (default {DEFAULT_SERVER}, or $SUNLIT_GROUND_SERVER)")
    parser.add_argument("--spacecraft", help="which spacecraft (default: the server's only one)")
    parser.add_argument("--direct", metavar="LINK",
                        help="talk to an agent's link directly, without the server (bench debugging only)")
    parser.add_argument("--tc-keys", metavar="FILE",
                        help="with --direct: seal telecommands with this key file (an agent with [security] tc_keys)")
    parser.add_argument("--tm-auth", action="store_true",
                        help="with --direct and --tc-keys: take only telemetry sealed with the key file's telemetry "
                             "slot (an agent with [security] tm_auth)")
    parser.add_argument("--zmq-server-public", metavar="FILE",
                        help="with --direct: the agent's CurveZMQ public certificate (NAME.key), for an agent "
                             "with CURVE on (by default on any link off loopback)")
    parser.add_argument("--zmq-client-secret", metavar="FILE",
                        help="with --direct: this ground's CurveZMQ secret certificate (NAME.key_secret, mode 600), "
                             "its NAME.key in the agent's [security] zmq_clients")
    sub = parser.add_subparsers(dest="cmd", required=True)

    srv = sub.add_parser("server", help="the ground server: links, archive, command queue, web console, API")
    srv.add_argument("--config", help="server configuration (TOML; see docs/ground-api.md)")
    srv.add_argument("--link", help="one spacecraft's link URL (instead of --config)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=_port, default=8080)
    srv.add_argument("--archive", default="var/ground.sqlite")
    srv.add_argument("--no-archive", action="store_true", help="keep nothing (tests, demos)")
    srv.add_argument("--users", default="etc/ground-users.toml", help="the operators file (sunlit-ground user ...)")
    srv.add_argument("--two-person", help="commands that need a second operator: NAME,NAME or 'hazardous'")
    srv.set_defaults(func=_cmd_server)

    user = sub.add_parser("user", help="add, change or remove the server's operators (the users file)")
    user.add_argument("action", choices=("add", "passwd", "remove", "list"))
    user.add_argument("name", nargs="?", default="")
    user.add_argument("--role", choices=("viewer", "operator", "admin"))
    user.add_argument("--users", default="etc/ground-users.toml")
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.set_defaults(func=_cmd_user)

    login = sub.add_parser("login", help="log in to the server; the session is kept for the other subcommands")
    login.add_argument("--user")
    login.add_argument("--password-stdin", action="store_true")
    login.set_defaults(func=_cmd_login)
    sub.add_parser("logout", help="end the session").set_defaults(func=_cmd_logout)

    send = sub.add_parser("send", help="queue one command on the server and follow it to its end")
    send.add_argument("command")
    send.add_argument("args", nargs="*", metavar="key=value")
    send.add_argument("--wait", choices=("sent", "accepted", "completed"), default="completed")
    send.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    send.add_argument("--yes", action="store_true", help="send a hazardous command without asking")
    send.add_argument("--ack", metavar="STAGES", help="the success reports to ask the agent for, comma-separated "
                      "(accepted, started, completed); completion, and acceptance where it is retried, always come. "
                      "Default: accepted,completed")
    send.set_defaults(func=_cmd_send)
    for action in ("approve", "reject", "cancel"):
        p = sub.add_parser(action, help=f"{action} a queued command (by its queue id)")
        p.add_argument("id", type=int)
        if action == "reject":
            p.add_argument("--reason", default="")
        p.set_defaults(func=_queue_action(action))
    queue = sub.add_parser("queue", help="the command queue: list it, hold it, release it")
    queue.add_argument("action", nargs="?", choices=("list", "hold", "release"), default="list")
    queue.add_argument("--last", type=_count(1, 10_000), default=20, help="how many of the newest entries (of those "
                       "the server lists: its newest 200; it says how many older ones it holds)")
    queue.set_defaults(func=_cmd_queue)

    tm = sub.add_parser("tm", help="current telemetry; --follow for each packet as it comes")
    tm.add_argument("--follow", action="store_true")
    tm.add_argument("--channel", action="append", help="only this channel (repeat for more); waits for it")
    tm.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    tm.add_argument("--limits", default="var/ground-limits.json", help="run-time limit changes (--direct only)")
    tm.set_defaults(func=_cmd_tm)
    ev = sub.add_parser("events", help="recent events from the archive; --follow for new ones")
    ev.add_argument("--follow", action="store_true")
    ev.add_argument("--severity", choices=[s.name for s in Severity], help="this severity and above")
    ev.add_argument("--last", type=_count(1, 10_000), default=50, help="how many recent events to show first "
                                                                      "(1 to 10000)")
    ev.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="--direct: how long to listen")
    ev.set_defaults(func=_cmd_events)
    plan = sub.add_parser("plan", help="the agent's latest energy plan: charge, mode and shadow over its horizon")
    plan.add_argument("--spacecraft", default=argparse.SUPPRESS, help="which spacecraft (as before the subcommand)")
    plan.add_argument("--steps", action="store_true", help="one row per plan step (default: a row per run of steps "
                      "with the same mode and shadow)")
    plan.set_defaults(func=_cmd_plan)
    sched = sub.add_parser("schedule", help="the on-board schedule: upload a file of time tags (docs/sequences.md), "
                           "or list it with the next pass")
    sched.add_argument("action", choices=("list", "upload"))
    sched.add_argument("file", nargs="?", help="upload: the schedule file ([[entry]] at/after_s, command, args)")
    sched.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    sched.add_argument("--yes", action="store_true", help="upload without asking (SCHEDULE_AT is hazardous)")
    sched.set_defaults(func=_cmd_schedule)
    con = sub.add_parser("console", help="interactive console with completion, help and a live status line")
    con.add_argument("--limits", default="var/ground-limits.json", help="run-time limit changes (--direct only)")
    con.set_defaults(func=_cmd_console)
    run = sub.add_parser("run", help="run a procedure file (ground/procedures/*.py) and log each step")
    run.add_argument("procedure")
    run.add_argument("--timeout", type=_seconds, default=20.0, metavar="S", help="to wait for the agent")
    run.add_argument("--yes", action="store_true", help="send the procedure's hazardous commands without asking")
    run.set_defaults(func=_cmd_run)
    from ground.archive_cli import add_archive_parser

    add_archive_parser(sub)
    from ground.file_cli import add_file_parser

    add_file_parser(sub)
    from ground.model_cli import add_model_parser

    add_model_parser(sub)
    from ground.product_cli import add_product_parser

    add_product_parser(sub)
    from ground.key_cli import add_key_parser

    add_key_parser(sub)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    except CommandLost as exc:  # the server had the command: never "no server" (send, schedule, file rm|list)
        print(f"unknown: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except ServerError as exc:
        print(f"sunlit-ground: {exc}", file=sys.stderr)
        return EXIT_INPUT if exc.status in (0, 400, 401, 403, 404, 421) else EXIT_FAILED
    except LinkConfigError as exc:
        print(f"sunlit-ground: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:
        quiet_stdout()  # the reader went away (`... | head`): say nothing more
        return EXIT_FAILED
    except TimeoutError as exc:  # the server never greeted a live view (an audit: a traceback)
        print(f"sunlit-ground: {exc or 'no answer in time'}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # found in audit: `tm > /dev/full` (a full disk under a redirect) ended in a traceback
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
        what = f": {exc.filename}" if exc.filename else " (writing its output)" if full else ""
        print(f"sunlit-ground {args.cmd}: {exc.strerror or exc}{what}", file=sys.stderr)
        try:  # output that can still go (the error was not stdout's) goes; else none is tried again at exit
            sys.stdout.flush()
        except OSError:
            quiet_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C anywhere else (a password prompt, a request under way): no traceback
        print("\nsunlit-ground: interrupted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
