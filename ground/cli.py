"""``sunlit-ground``: the operators' console: commands with verification, telemetry, events,
an interactive console, procedures, the archive and the web console."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from flight.cli import DEFAULT_LINK, parse_assignments
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, Severity
from flight.link.messages import EventRecord, HkRecord, ParamRecord, Verification
from flight.link.transport import LinkConfigError
from ground.client import CommandTimeout, GroundClient


def _open(args: argparse.Namespace) -> GroundClient:
    """A client on the link; with an archive, everything it receives is kept there too."""
    client = GroundClient(args.link)
    if getattr(args, "archive", None) and not getattr(args, "no_archive", False):
        from ground.archive import Archive, ArchiveRecorder

        archive = Archive(args.archive)
        client.recorder = ArchiveRecorder(archive).attach(client)
        close = client.close

        def close_both() -> None:
            close()
            archive.close()  # flushes the recorder

        client.close = close_both
    return client


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _record_command(client: GroundClient, result) -> None:
    recorder = getattr(client, "recorder", None)
    if recorder is not None:
        recorder.record_command(result, who=_who())


def _cmd_send(args: argparse.Namespace) -> int:
    try:
        command = DICTIONARY.command(args.command)
        values = command.validate_args(parse_assignments(args.args))
    except (ArgumentError, ValueError) as exc:
        print(f"refused before sending: {exc}", file=sys.stderr)
        return 2
    if command.hazardous and not args.yes:
        answer = input(f"{command.name} is hazardous: {command.description}\nSend it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not sent", file=sys.stderr)
            return 3
    client = _open(args)
    try:
        match = client.dictionary_matches(timeout_s=min(args.timeout, 3.0))
        if match is False:
            print(
                f"warning: agent dictionary {client.agent_dict_hash} differs from this console's "
                f"{DICTIONARY.version_hash}; arguments may be read differently",
                file=sys.stderr,
            )
        elif match is None:
            print("warning: no housekeeping from the agent yet; dictionary not checked", file=sys.stderr)

        def show(report: Verification) -> None:
            text = f"{report.stage.value}" if report.success else f"FAILED at {report.stage.value}: {report.code.name} {report.reason}"
            print(f"  {time.strftime('%H:%M:%S')} {command.name}: {text}")

        print(f"  {time.strftime('%H:%M:%S')} {command.name}: sent {json.dumps(values)}")
        try:
            result = client.send(command.name, values, wait=args.wait, timeout_s=args.timeout, on_report=show)
        except CommandTimeout as exc:
            print(f"timeout: {exc}", file=sys.stderr)
            return 4
        _record_command(client, result)
        if result.result:
            print(f"  result: {json.dumps(result.result)}")
        return 1 if result.failure else 0
    finally:
        client.close()


def _cmd_tm(args: argparse.Namespace) -> int:
    """Current values with units, coloured by limit state (nominal, warning, critical, stale)."""
    from ground.alarms import AlarmManager, LimitStore
    from ground.console import COLOURS, RESET

    client = _open(args)
    alarms = AlarmManager(DICTIONARY, LimitStore(Path(args.limits) if args.limits else None))
    colour = sys.stdout.isatty()
    wanted = set(args.channel or [])
    for name in wanted - set(DICTIONARY.channel_by_name):
        print(f"no channel {name}", file=sys.stderr)
        return 2
    deadline = None if args.follow else time.monotonic() + args.timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            for item in client.poll(0.5):
                rec = item.record
                if item.gap:
                    print(f"GAP: {item.gap} packet(s) missing before APID {item.packet.apid:#05x} "
                          f"seq {item.packet.seq_count} ({client.gaps.missing} missing so far)", flush=True)
                if isinstance(rec, ParamRecord):
                    alarms.observe_parameters(rec.values)  # limits that follow a parameter move with it
                if isinstance(rec, HkRecord):
                    for name, value in rec.values.items():
                        if wanted and name not in wanted:
                            continue
                        state = alarms.observe(name, value, rec.time_s)
                        ch = DICTIONARY.channel_by_name[name]
                        line = f"{name:>24} = {value} {ch.unit} [{state}]"
                        print(f"{COLOURS[state]}{line}{RESET}" if colour else line, flush=True)
                    if not args.follow and (not wanted or wanted <= set(client.latest)):
                        return 0
                elif isinstance(rec, EventRecord) and args.follow:
                    print(f"EVENT {rec.event.severity.name:<11} {rec.event.name}: {rec.text}", flush=True)
            if args.follow:
                for name in sorted(wanted or []):
                    if alarms.stale(name) and name in client.latest:
                        line = f"{name:>24} = {client.latest[name][0]} [stale]"
                        print(f"{COLOURS['stale']}{line}{RESET}" if colour else line, flush=True)
        print("no housekeeping received", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def _cmd_events(args: argparse.Namespace) -> int:
    client = _open(args)
    floor = Severity[args.severity] if args.severity else Severity.DIAGNOSTIC
    deadline = None if args.follow else time.monotonic() + args.timeout
    shown = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            for item in client.poll(0.5):
                rec = item.record
                if isinstance(rec, EventRecord) and rec.event.severity >= floor:
                    stamp = time.strftime("%H:%M:%S", time.gmtime(rec.time_s))
                    print(f"{stamp} {rec.event.severity.name:<11} {rec.event.name}: {rec.text}", flush=True)
                    shown += 1
        return 0 if shown or args.follow else 1
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def _cmd_console(args: argparse.Namespace) -> int:
    from ground.console import Console

    client = _open(args)
    try:
        console = Console(client, limits_path=Path(args.limits) if args.limits else None)
        console.on_command.append(lambda r: _record_command(client, r))
        console.run()
    finally:
        client.close()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ground.procedure import run_procedure_file

    client = _open(args)
    try:
        try:
            client.connect(timeout_s=args.timeout)
        except TimeoutError as exc:
            print(f"sunlit-ground run: {exc}", file=sys.stderr)
            return 2
        ok = run_procedure_file(args.procedure, client, log=lambda line: print(line, flush=True),
                                setup=lambda proc: proc.on_command.append(lambda r: _record_command(client, r)))
    finally:
        client.close()
    return 0 if ok else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from ground.web.server import serve

    archive = None if args.no_archive else args.archive
    return serve(args.link, host=args.host, port=args.port, archive_path=archive,
                 record=archive is not None, limits_path=args.limits or None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sunlit-ground", description=__doc__)
    parser.add_argument("--link", default=DEFAULT_LINK, help=f"link URL (default {DEFAULT_LINK})")
    parser.add_argument("--archive", default="var/ground.sqlite",
                        help="keep every packet, event and command here (SQLite; default var/ground.sqlite)")
    parser.add_argument("--no-archive", action="store_true", help="keep nothing")
    sub = parser.add_subparsers(dest="cmd", required=True)
    send = sub.add_parser("send", help="send one command and show its verification")
    send.add_argument("command")
    send.add_argument("args", nargs="*", metavar="key=value")
    send.add_argument("--wait", choices=("sent", "accepted", "completed"), default="completed")
    send.add_argument("--timeout", type=float, default=10.0, metavar="S")
    send.add_argument("--yes", action="store_true", help="do not ask before hazardous commands")
    send.set_defaults(func=_cmd_send)
    tm = sub.add_parser("tm", help="show current telemetry")
    tm.add_argument("--follow", action="store_true")
    tm.add_argument("--channel", action="append")
    tm.add_argument("--timeout", type=float, default=5.0, metavar="S")
    tm.add_argument("--limits", default="var/ground-limits.json", help="run-time limit changes (see console)")
    tm.set_defaults(func=_cmd_tm)
    ev = sub.add_parser("events", help="show events")
    ev.add_argument("--follow", action="store_true")
    ev.add_argument("--severity", choices=[s.name for s in Severity], help="show this severity and above")
    ev.add_argument("--timeout", type=float, default=5.0, metavar="S")
    ev.set_defaults(func=_cmd_events)
    con = sub.add_parser("console", help="interactive console with completion, help and a status line")
    con.add_argument("--limits", default="var/ground-limits.json", help="where run-time limit changes are kept")
    con.set_defaults(func=_cmd_console)
    run = sub.add_parser("run", help="run a procedure file (ground/procedures/*.py) and log each step")
    run.add_argument("procedure")
    run.add_argument("--timeout", type=float, default=20.0, metavar="S", help="to wait for the agent")
    run.set_defaults(func=_cmd_run)
    srv = sub.add_parser("serve", help="web console: live telemetry, plots, alarms, commands, archive")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (no login: keep it loopback)")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--limits", default="var/ground-limits.json", help="run-time limit changes (shared with console)")
    srv.set_defaults(func=_cmd_serve)
    from ground.archive_cli import add_archive_parser

    add_archive_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LinkConfigError as exc:
        print(f"sunlit-ground: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
