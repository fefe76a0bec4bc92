"""``sunlit-ground archive ...``: read the ground archive from a terminal.

Subcommands (each takes ``--db PATH``, default ``var/ground.sqlite``; ``--from``/``--to`` take
ISO 8601, e.g. ``2026-11-16T12:00:00Z``, or Unix seconds; an ISO time without a zone is UTC):

- ``query CHANNEL...``: values in packet-time order, one line each (``--stats`` for a summary);
- ``export --csv OUT CHANNEL...``: channels side by side on packet time;
- ``export --raw OUT``: the packets as received, one hex line each (``sunlit-flight packet decode --file``);
- ``plot CHANNEL... --out FILE.png``;
- ``events [--severity S]``: events at or above a severity (name or number);
- ``commands``: who sent what, when, and how it ended.

Exit codes: 0 done, 1 nothing in the window, 2 bad input (no archive, unknown channel, bad time).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ground.archive import DEFAULT_PATH, Archive, ArchiveError, utc_iso


def parse_time_s(text: str) -> float:
    """Unix seconds from ``text``: a number, or ISO 8601 (``Z`` or an offset; none means UTC)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"time {text!r} is not finite")
        return value
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"time {text!r}: give ISO 8601 (2026-11-16T12:00:00Z) or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _open(args: argparse.Namespace) -> Archive:
    return Archive(args.db, create=False)


def _unit(archive: Archive, name: str) -> str:
    ch = archive.dictionary.channel_by_name.get(name)
    return ch.unit if ch is not None else ""


def _cmd_query(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        data = archive.query(args.channel, args.from_s, args.to_s)
    if args.stats:
        for name, (times, values) in data.items():
            line: dict[str, Any] = {"channel": name, "count": len(times)}
            if len(times):
                line.update(first=utc_iso(times[0]), last=utc_iso(times[-1]))
                known = values[~np.isnan(values)] if values.dtype != object else values[:0]
                if len(known):
                    line.update(min=float(known.min()), mean=float(known.mean()), max=float(known.max()),
                                unit=_unit(archive, name))
            print(json.dumps(line))
    else:
        merged = sorted(((t, name, v) for name, (times, values) in data.items()
                         for t, v in zip(times.tolist(), values.tolist())), key=lambda r: r[0])
        for t, name, v in merged:
            shown = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
            print(f"{utc_iso(t)}  {name:>24} = {shown} {_unit(archive, name)}".rstrip())
    return 0 if any(len(t) for t, _ in data.values()) else 1


def _cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        if args.csv:
            if not args.channel:
                print("archive export --csv needs at least one CHANNEL", file=sys.stderr)
                return 2
            rows = archive.export_csv(args.channel, args.csv, args.from_s, args.to_s)
            print(f"{rows} rows of {len(args.channel)} channel(s) written to {args.csv}", file=sys.stderr)
        else:
            if args.channel:
                print("archive export --raw takes no CHANNEL: it writes whole packets", file=sys.stderr)
                return 2
            rows = archive.export_raw(args.raw, args.from_s, args.to_s, valid_only=args.valid_only)
            print(f"{rows} packets written to {args.raw}", file=sys.stderr)
    return 0 if rows else 1


def _cmd_plot(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        archive.plot(args.channel, args.out, args.from_s, args.to_s)
    print(f"plot written to {args.out}", file=sys.stderr)
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        events = archive.events(args.from_s, args.to_s, args.severity)
    for e in events:
        print(f"{utc_iso(e.time_s)}  {e.severity.name:<11} {e.name}: {e.text}")
    return 0 if events else 1


def _cmd_commands(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        commands = archive.commands(args.from_s, args.to_s, args.name)
    for c in commands:
        when = utc_iso(c.sent_s if c.sent_s is not None else c.first_seen_s)
        shown_args = "(seen on the stream only)" if c.args is None else json.dumps(c.args)
        print(f"{when}  {c.who or '?':<10} {c.name} {shown_args} cmd_id={c.cmd_id}: {c.outcome}")
    return 0 if commands else 1


def _run_guarded(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ArchiveError, KeyError, ValueError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"sunlit-ground archive: {text}", file=sys.stderr)
            return 2
    return run


def add_archive_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``archive`` and its subcommands to a parser's subparsers; each sets ``func``."""
    archive = subparsers.add_parser("archive", help="query, export and plot the ground archive",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = archive.add_subparsers(dest="archive_cmd", required=True)

    def common(p: argparse.ArgumentParser, window: bool = True) -> None:
        p.add_argument("--db", default=str(DEFAULT_PATH), metavar="PATH", help=f"archive file (default {DEFAULT_PATH})")
        if window:
            p.add_argument("--from", dest="from_s", type=parse_time_s, metavar="T",
                           help="start, ISO 8601 or Unix seconds (packet time; ground time for commands)")
            p.add_argument("--to", dest="to_s", type=parse_time_s, metavar="T", help="end, inclusive")

    q = sub.add_parser("query", help="channel values over a time window")
    q.add_argument("channel", nargs="+")
    q.add_argument("--stats", action="store_true", help="count, first, last, min, mean, max per channel instead")
    common(q)
    q.set_defaults(func=_run_guarded(_cmd_query))

    ex = sub.add_parser("export", help="channels to CSV, or raw packets to a hex file")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--csv", metavar="OUT", help="channels side by side, one row per packet time")
    what.add_argument("--raw", metavar="OUT", help="packets as received, one hex line each")
    ex.add_argument("channel", nargs="*")
    ex.add_argument("--valid-only", action="store_true", help="--raw: leave out packets that were invalid")
    common(ex)
    ex.set_defaults(func=_run_guarded(_cmd_export))

    pl = sub.add_parser("plot", help="channels against time, to a PNG")
    pl.add_argument("channel", nargs="+")
    pl.add_argument("--out", required=True, metavar="FILE.png")
    common(pl)
    pl.set_defaults(func=_run_guarded(_cmd_plot))

    ev = sub.add_parser("events", help="events at or above a severity")
    ev.add_argument("--severity", default="DIAGNOSTIC", metavar="S",
                    help="lowest severity shown: DIAGNOSTIC, ACTIVITY_LO, ACTIVITY_HI, COMMAND, WARNING_LO, "
                         "WARNING_HI, FATAL (or 0..6)")
    common(ev)
    ev.set_defaults(func=_run_guarded(_cmd_events))

    cm = sub.add_parser("commands", help="command history: who, when, what, outcome")
    cm.add_argument("--name", help="only this command")
    common(cm)
    cm.set_defaults(func=_run_guarded(_cmd_commands))
    return archive
