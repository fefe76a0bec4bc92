"""``sunlit-ground archive ...``: read and look after the ground archive from a terminal.

Subcommands (each takes ``--db PATH``, default ``var/ground.sqlite``, and ``--spacecraft ID``,
default ``sunlit-1``; ``--from``/``--to`` take ISO 8601, e.g. ``2026-11-16T12:00:00Z``, or Unix
seconds; an ISO time without a zone is UTC):

- ``query CHANNEL...``: values in packet-time order, one line each (``--stats`` for a summary,
  ``--max-points N`` for a min/max-decimated overview);
- ``export --csv OUT CHANNEL...``: channels side by side on packet time;
- ``export --raw OUT``: the packets as received, one hex line each (``sunlit-flight packet decode --file``);
- ``plot CHANNEL... --out FILE.png``; each of these writes its file whole beside OUT and renames it into place,
  never over an existing file (one made while it was written too) unless ``--force``, nor into a folder that is
  not there (none is made): exit 2;
- ``events [--severity S] [--limit N]``: events at or above a severity (name or number);
- ``commands [--limit N]``: who queued, approved and sent what, when, and how it ended;
- ``passes [--limit N]``: completeness per pass (``--from``/``--to`` on the pass's start, ground
  clock): packets received live, played back from the agent's store, still missing, and
  copies dropped, in total and per APID;
- ``files [--limit N]``: file transfers (``--from``/``--to`` on when each was asked for, ground
  clock): who, which way, the agent's name, size, how it ended, SHA-256;
- ``retain [--policy FILE.toml]``: delete what the retention policy no longer keeps (the
  defaults, or the file's tables: ``[AGENT_HK] max_age_days = 7  max_mb = 100``, ``[events]``...;
  a ``[retention]`` table is read if the file has one) and print what went; ``--now T`` ages against T
  instead of the clock, refused more than a day ahead of it without ``--force`` (a digit too many
  would make every record old);
- ``check``: the file's integrity (SQLite's own check, every chunk's CRC and counts);
- ``upgrade --db OLD --out NEW``: convert a schema-1 archive into a new schema-2 file.

Output piped into ``head`` ends quietly. Exit codes: 0 done, 1 nothing in the window (said on stderr with
the window; an export of nothing writes no file), ``check`` found problems, or nothing to plot; 2 bad input
(no archive, unknown channel, bad time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from flight.cli import quiet_stdout
from flight.link.dictionary import ArgumentError
from ground.cli_args import count as _count, install_output, printable as _printable, temp_beside
from ground.archive import (
    DEFAULT_PATH,
    DEFAULT_SPACECRAFT,
    PAGE_SAMPLES,
    Archive,
    ArchiveError,
    RetentionPolicy,
    check_spacecraft,
    upgrade_v1,
    utc_iso,
)


def parse_time_s(text: str) -> float:
    """Unix seconds from ``text``: a number, or ISO 8601 (``Z`` or an offset; none means UTC)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"time {text!r} is not finite")
        try:  # found in audit: milliseconds given as seconds said "year 58846 is out of range", 1e20 a traceback
            utc_iso(value)
        except (OverflowError, OSError, ValueError):
            raise argparse.ArgumentTypeError(f"time {text!r} is out of range: Unix seconds from year 1 to 9999 "
                                             "(milliseconds given as seconds?)") from None
        return value
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"time {text!r}: give ISO 8601 (2026-11-16T12:00:00Z) or Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    value = when.timestamp()
    try:  # an offset past year 9999 or before year 1 (found in review: "year 10000 is out of range", no flag named)
        utc_iso(value)
    except (OverflowError, OSError, ValueError):
        raise argparse.ArgumentTypeError(f"time {text!r} is out of range in UTC: from year 1 to 9999") from None
    return value


def _spacecraft(text: str) -> str:
    try:
        return check_spacecraft(text, "--spacecraft")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _open(args: argparse.Namespace, spacecraft: bool = False) -> Archive:
    """The archive ``--db`` names; with ``spacecraft``, one that has heard of ``--spacecraft`` (a typing
    error in it once gave an empty CSV of '0 rows', with nothing said of why)."""
    archive = Archive(args.db, create=False)
    if not spacecraft:  # check, retain: the whole file, which may be too damaged to list its spacecraft
        return archive
    try:
        known = archive.spacecraft()
    except BaseException:
        archive.close()
        raise
    if known and args.spacecraft not in known:
        archive.close()
        raise ArchiveError(f"--spacecraft {args.spacecraft}: not in {args.db} (it has {', '.join(known)})")
    return archive


def _output(args: argparse.Namespace, out: str, write: Callable[[Path], Any],
            empty: Callable[[Any], bool] = lambda result: False) -> Any:
    """What ``write`` returns, having written the output to a file of its own beside ``out`` and put it in place
    whole: never over an existing file unless ``--force`` (found in audit: an export replaced the file it was
    given, silently, a CSV kept by hand too), looked at first (before a long export) and again as it goes in.
    Where ``empty(result)``, nothing is put in place (found in audit: an export of an empty window left a file of
    headers, and the export of the window meant, run again, was refused as writing over it)."""
    final = Path(out)
    if final.is_dir():  # named as such, not as the temporary file
        raise ArchiveError(f"{final}: a folder; give the name of the file to write")
    if os.path.lexists(final) and not args.force:
        raise ArchiveError(f"{final} exists: give another name, or --force to write over it")
    if not final.parent.is_dir():  # as `file get --out` (found in audit: a typing error in it made a tree, silently)
        raise ArchiveError(f"{final}: no folder {final.parent} to write it in")
    try:
        tmp = temp_beside(final)
    except OSError as exc:  # named as the file asked for (found in audit: a folder it cannot write in named the
        # temporary file)
        raise OSError(exc.errno, exc.strerror, str(final)) from None
    try:  # Ctrl-C, a full disk, a damaged chunk: the temporary file goes, nothing is left under the name
        result = write(tmp)
        if not empty(result):
            install_output(tmp, final, replace=args.force)
    except FileExistsError:
        raise ArchiveError(f"{final} exists (made while this was written): not written over; give another name, "
                           "or --force") from None
    except OSError as exc:  # the same as it is written (found in audit: a full disk named no file at all)
        if exc.filename is not None and not Path(exc.filename).name.startswith(f".{final.name}."):
            raise
        raise OSError(exc.errno, exc.strerror, str(final)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _nothing(args: argparse.Namespace, what: str, done: str = "") -> None:
    """Say on stderr that the window held nothing (exit 1), with the window and spacecraft it was (found in audit:
    an empty answer said nothing at all, and an empty export still said "0 rows written")."""
    window = " ".join(f"{flag} {utc_iso(t)}" for flag, t in (("--from", args.from_s), ("--to", args.to_s))
                      if t is not None) or "no --from/--to"
    print(f"sunlit-ground archive: no {what} in {args.db} for {args.spacecraft} ({window}){'; ' + done if done else ''}"
          "; widen --from/--to, or check --spacecraft", file=sys.stderr)


def _unit(archive: Archive, name: str) -> str:
    ch = archive.dictionary.channel_by_name.get(name)
    return ch.unit if ch is not None else ""


def _query_pages(archive: Archive, args: argparse.Namespace) -> Any:
    """The window a page at a time (``Archive.query_page``), each page's ``(channels, complete, page_end_s)``: found in
    audit, `query` read the whole window before printing a line (gigabytes for a year of a few channels). With
    ``--max-points`` it is one answer, whole: the decimation's buckets span the whole window."""
    if args.max_points is not None:
        data = archive.query(args.channel, args.from_s, args.to_s, args.spacecraft, max_points=args.max_points)
        yield data, True, math.inf
        return
    after = None
    while True:
        page = archive.query_page(args.channel, args.from_s, args.to_s, args.spacecraft,
                                  max(PAGE_SAMPLES, len(args.channel)), after)
        yield page.channels, page.complete, page.page_end_s
        if page.complete:
            return
        after = page.next


def _cmd_query(args: argparse.Namespace) -> int:
    if args.stats and args.max_points is not None:  # found in audit: the statistics were of the decimated points (a
        # count of 2 of 200 values, their mean, the last time a bucket kept), said as the window's, exit 0
        raise ValueError("--stats counts every value in the window: give --stats or --max-points, not both")
    order: dict[str, int] = {}  # the order the channels were named
    for k, name in enumerate(args.channel):
        order.setdefault(name, k)
    stats: dict[str, dict[str, Any]] = {name: {"count": 0, "numbers": True, "n": 0, "sum": 0.0} for name in order}
    held: list[tuple[float, int, str, Any]] = []  # lines at the page's last time: it may go on in the next page
    found = 0
    with _open(args, spacecraft=True) as archive:
        for data, complete, end_s in _query_pages(archive, args):
            if args.stats:
                for name, (times, values) in data.items():
                    st = stats[name]
                    if not len(times):
                        continue
                    st["count"] += len(times)
                    st.setdefault("first", times[0])
                    st["last"] = times[-1]
                    if values.dtype == object:  # text, or a number channel that received something else: no min/max
                        st["numbers"] = False
                        continue
                    known = values[~np.isnan(values)]
                    if len(known):
                        st["min"] = min(st.get("min", math.inf), float(known.min()))
                        st["max"] = max(st.get("max", -math.inf), float(known.max()))
                        st["n"] += len(known)
                        st["sum"] += float(known.sum())
                continue
            lines = held + [(t, order[name], name, v) for name, (times, values) in data.items()
                            for t, v in zip(times.tolist(), values.tolist())]
            lines.sort(key=lambda r: (r[0], r[1]))  # stable: one channel's values at one time in their order
            cut = len(lines) if complete else next((k for k, r in enumerate(lines) if r[0] >= end_s), len(lines))
            lines, held = lines[:cut], lines[cut:]
            for t, _k, name, v in lines:
                found += 1
                shown = "" if v is None or (isinstance(v, float) and math.isnan(v)) else _printable(v)
                # the agent's text printable, as `sunlit-ground events` shows it: an escape or a line break in a text
                # channel (a power mode's name from the board) drove the terminal or forged a line (found in audit)
                print(f"{utc_iso(t)}  {name:>24} = {shown} {_unit(archive, name)}".rstrip())
    if args.stats:
        for name, st in stats.items():
            line: dict[str, Any] = {"channel": name, "count": st["count"]}
            if st["count"]:
                line.update(first=utc_iso(st["first"]), last=utc_iso(st["last"]))
                if st["numbers"] and st["n"]:
                    line.update(min=st["min"], mean=st["sum"] / st["n"], max=st["max"], unit=_unit(archive, name))
            print(json.dumps(line))
            found += st["count"]
    if not found:
        _nothing(args, ", ".join(args.channel))
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    with _open(args, spacecraft=True) as archive:
        if args.csv is not None:  # given, if empty (found in audit: `--csv ''` was told it took no CHANNEL as --raw)
            if not args.channel:
                print("archive export --csv needs at least one CHANNEL", file=sys.stderr)
                return 2
            rows = _output(args, args.csv, lambda tmp: archive.export_csv(args.channel, tmp, args.from_s, args.to_s,
                                                                          args.spacecraft), empty=lambda n: not n)
            if rows:
                print(f"{rows} rows of {len(args.channel)} channel(s) written to {args.csv}", file=sys.stderr)
        else:
            if args.channel:
                print("archive export --raw takes no CHANNEL: it writes whole packets", file=sys.stderr)
                return 2
            rows = _output(args, args.raw, lambda tmp: archive.export_raw(tmp, args.from_s, args.to_s,
                                                                          valid_only=args.valid_only,
                                                                          spacecraft=args.spacecraft),
                           empty=lambda n: not n)
            if rows:
                print(f"{rows} packets written to {args.raw}", file=sys.stderr)
    if not rows:  # one there before (--force) is left as it was, and said so (found in review: read as replaced)
        out = args.csv if args.csv is not None else args.raw
        _nothing(args, ", ".join(args.channel) if args.csv is not None else "packets",
                 f"{out} not written" + (" (the one there, from before, left as it was)" if Path(out).exists() else ""))
    return 0 if rows else 1


def _cmd_plot(args: argparse.Namespace) -> int:
    with _open(args, spacecraft=True) as archive:
        try:
            _output(args, args.out, lambda tmp: archive.plot(args.channel, tmp, args.from_s, args.to_s,
                                                             args.spacecraft))
        except ValueError as exc:
            if not str(exc).startswith("no data for "):
                raise
            print(f"sunlit-ground archive plot: {exc}; nothing written (widen --from/--to, or check "
                  f"--spacecraft)", file=sys.stderr)
            return 1
    print(f"plot written to {args.out}", file=sys.stderr)
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    found = 0
    with _open(args, spacecraft=True) as archive:
        # without --limit a page at a time, printed as read (found in audit: the whole window was read into a list
        # first, gigabytes for the 256 MB of events kept)
        events = (archive.events(args.from_s, args.to_s, args.severity, spacecraft=args.spacecraft, limit=args.limit)
                  if args.limit is not None else archive.iter_events(args.from_s, args.to_s, args.severity,
                                                                     spacecraft=args.spacecraft))
        for e in events:
            found += 1
            # printable, as `sunlit-ground events` prints it (found in audit: an argument's escape reached the terminal)
            print(f"{utc_iso(e.time_s)}  {e.severity.name:<11} {_printable(e.name)}: {_printable(e.text)}")
    if not found:
        _nothing(args, f"events at or above {args.severity}")
    return 0 if found else 1


def _cmd_commands(args: argparse.Namespace) -> int:
    with _open(args, spacecraft=True) as archive:
        name, unknown = args.name, ""
        if name is not None:  # as the console takes it, in any case (found in audit: `--name noop` found nothing)
            try:
                name = archive.dictionary.command(name).name
            except ArgumentError as exc:  # kept as typed: an older dictionary's command may be in the archive
                unknown = f" (--name: {exc})"
        found = 0
        commands = (archive.commands(args.from_s, args.to_s, name, spacecraft=args.spacecraft, limit=args.limit)
                    if args.limit is not None else  # a page at a time, as `events`
                    archive.iter_commands(args.from_s, args.to_s, name, spacecraft=args.spacecraft))
        for c in commands:
            found += 1
            when = utc_iso(next(t for t in (c.sent_s, c.queued_s, c.first_seen_s) if t is not None))
            shown_args = "(seen on the stream only)" if c.args is None else json.dumps(c.args)
            ident = f"cmd_id={c.cmd_id}" if c.cmd_id is not None else f"queue_id={c.queue_id}"
            approved = f" approved by {_printable(c.approved_by)}" if c.approved_by else ""
            # printable, as `events` (found in audit: a failure's reason from the agent, an escape and a line break in
            # it, drove the terminal and forged a line)
            print(f"{when}  {_printable(c.who or '?'):<10} {_printable(c.name)} {shown_args} {ident}{approved}: "
                  f"{_printable(c.outcome)}")
    if not found:
        _nothing(args, f"commands{' named ' + _printable(name) if name else ''}{unknown}")
    return 0 if found else 1


def _duration(seconds: float) -> str:
    """
    >>> _duration(75.2), _duration(3723.0)
    ('1 min 15 s', '1 h 02 min')
    """
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{seconds:.0f} s"


def _cmd_passes(args: argparse.Namespace) -> int:
    found = 0
    with _open(args, spacecraft=True) as archive:
        passes = (archive.passes(args.from_s, args.to_s, spacecraft=args.spacecraft, limit=args.limit)
                  if args.limit is not None else  # a page at a time, as `events`
                  archive.iter_passes(args.from_s, args.to_s, spacecraft=args.spacecraft))
        for p in passes:
            if not found:
                print(f"{'pass start (UTC)':<24}  {'duration':>11}  {'APID':>6}  {'received':>9}  {'played back':>11}  "
                      f"{'missing':>8}  {'duplicates':>10}")
            found += 1
            t = p.totals
            print(f"{utc_iso(p.start_s):<24}  {_duration(p.end_s - p.start_s):>11}  {'all':>6}  {t.received:>9}  "
                  f"{t.played_back:>11}  {t.missing:>8}  {t.duplicates:>10}")
            for apid, c in p.apids:
                print(f"{'':<24}  {'':>11}  {apid:#06x}  {c.received:>9}  {c.played_back:>11}  {c.missing:>8}  "
                      f"{c.duplicates:>10}")
    if not found:
        _nothing(args, "passes")
    return 0 if found else 1


def _size(n: int | None) -> str:
    """
    >>> _size(None), _size(999), _size(1_500_000)
    ('?', '999 B', '1.5 MB')
    """
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _cmd_files(args: argparse.Namespace) -> int:
    found = 0
    with _open(args, spacecraft=True) as archive:
        transfers = (archive.file_transfers(args.from_s, args.to_s, spacecraft=args.spacecraft, limit=args.limit)
                     if args.limit is not None else  # a page at a time, as `events`
                     archive.iter_file_transfers(args.from_s, args.to_s, spacecraft=args.spacecraft))
        for t in transfers:
            found += 1
            # From where to where, as `file status` draws it (found in audit: a download's arrow pointed back), the
            # names printable only (an operator's local name can hold an escape sequence)
            local, remote = _printable(t.local_name or "?"), _printable(t.remote_name)
            where = f"{local} -> {remote}" if t.direction == "up" else f"{remote} -> {local}"
            # the outcome printable too: it quotes the agent's reason (its FILE_FAILED; found in audit)
            print(f"{utc_iso(t.requested_s)}  {_printable(t.ref):<10} {_printable(t.who or '(agent)'):<10} "
                  f"{t.direction:<4} {where}  {_size(t.size)}  {_printable(t.state)}: {_printable(t.outcome)}"
                  f"{'  sha256 ' + _printable(t.sha256) if t.sha256 else ''}")
    if not found:
        _nothing(args, "file transfers")
    return 0 if found else 1


POLICY_MAX_BYTES = 1 << 16  # a retention policy is a few lines


def _load_policy(path: str | None) -> RetentionPolicy:
    if path is None:
        return RetentionPolicy()
    from flight import toml_text

    try:
        with open(path, "rb") as f:
            body = f.read(POLICY_MAX_BYTES + 1)  # bounded: a device or a huge file is no policy (found in audit)
        if len(body) > POLICY_MAX_BYTES:
            raise ValueError(f"--policy {path}: larger than {POLICY_MAX_BYTES} bytes: no retention policy is")
        data = toml_text.loads(body.decode("utf-8"))
    except OSError as exc:
        raise ValueError(f"--policy {path}: {exc.strerror or exc}") from None
    except (toml_text.TOMLDecodeError, UnicodeDecodeError) as exc:  # bytes not UTF-8 named the file too (audit)
        raise ValueError(f"--policy {path}: not TOML: {exc}") from None
    table = data.get("retention", data) if isinstance(data.get("retention"), dict) else data
    try:
        return RetentionPolicy.from_mapping(table)
    except ValueError as exc:
        raise ValueError(f"--policy {path}: {exc}") from None


RETAIN_AHEAD_MAX_S = 86400.0  # a --now further ahead of this computer's clock is refused without --force


def _cmd_retain(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    if args.now_s is not None and args.now_s - time.time() > RETAIN_AHEAD_MAX_S and not args.force:
        # A digit too many made everything old: the command history went whole, with exit 0 (found in audit)
        raise ValueError(f"--now {utc_iso(args.now_s)} is {(args.now_s - time.time()) / 86400:.0f} days ahead of this "
                         "computer's clock: every record would be older than its rule; check it (seconds, not "
                         "milliseconds?), or give --force")
    with _open(args) as archive:
        before = archive.path.stat().st_size
        try:
            deleted = archive.retain(policy, args.now_s)
        except sqlite3.OperationalError as exc:  # found in audit: said only "attempt to write a readonly database"
            if "readonly" not in str(exc):
                raise
            raise ArchiveError(f"{args.db} is read-only here (a copy kept read-only, a read-only mount, or no write "
                               "permission): retain deletes from the archive; run it on the archive the server "
                               "writes, or on a copy you may write") from None
        after = archive.path.stat().st_size
    for kind, what in deleted.items():
        rule = policy.rule(kind) if not kind.startswith("SID ") else policy.hk
        print(f"{kind:<12} deleted {what['deleted']:>9}  ({what['bytes'] / 1e6:.1f} MB)   "
              f"keeps {rule.max_age_days:g} days, {rule.max_mb:g} MB per spacecraft")
    print(f"file: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    with _open(args) as archive:
        problems = archive.check()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.db}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.db}: ok")
    return 0


def _cmd_upgrade(args: argparse.Namespace) -> int:
    done = upgrade_v1(args.db, args.out, args.spacecraft)
    print(f"{args.db} -> {args.out} (spacecraft {args.spacecraft}): "
          + ", ".join(f"{n} {what}" for what, n in done.items()), file=sys.stderr)
    return 0


def _run_guarded(func):
    def run(args: argparse.Namespace) -> int:
        try:
            code = func(args)
            sys.stdout.flush()  # here, where a closed pipe can still be caught
            return code
        except BrokenPipeError:
            quiet_stdout()
            return 0
        except (ArchiveError, KeyError, ValueError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"sunlit-ground archive: {text}", file=sys.stderr)
            return 2
        except sqlite3.OperationalError as exc:  # busy (the server writing), read-only: not damage
            print(f"sunlit-ground archive: {args.db}: {exc}", file=sys.stderr)
            return 1
        except sqlite3.DatabaseError as exc:  # damaged past its header (the header is checked at open)
            print(f"sunlit-ground archive: {args.db}: unreadable ({exc}); `sunlit-ground archive check --db "
                  f"{args.db}` says what is damaged", file=sys.stderr)
            return 1
        except OSError as exc:  # an output file it cannot write, a disk full
            print(f"sunlit-ground archive: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
                  file=sys.stderr)
            return 1
    return run


def add_archive_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``archive`` and its subcommands to a parser's subparsers; each sets ``func``."""
    archive = subparsers.add_parser("archive", help="query, export and plot the ground archive",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = archive.add_subparsers(dest="archive_cmd", required=True)

    def common(p: argparse.ArgumentParser, window: bool = True) -> None:
        p.add_argument("--db", default=str(DEFAULT_PATH), metavar="PATH", help=f"archive file (default {DEFAULT_PATH})")
        p.add_argument("--spacecraft", default=DEFAULT_SPACECRAFT, type=_spacecraft, metavar="ID",
                       help=f"spacecraft (default {DEFAULT_SPACECRAFT})")
        if window:
            p.add_argument("--from", dest="from_s", type=parse_time_s, metavar="T",
                           help="start, ISO 8601 or Unix seconds (packet time; ground time for commands)")
            p.add_argument("--to", dest="to_s", type=parse_time_s, metavar="T", help="end, inclusive")

    q = sub.add_parser("query", help="channel values over a time window")
    q.add_argument("channel", nargs="+")
    q.add_argument("--stats", action="store_true", help="count, first, last, min, mean, max per channel instead")
    q.add_argument("--max-points", type=int, metavar="N", help="at most N points per channel (min/max per time bucket)")
    common(q)
    q.set_defaults(func=_run_guarded(_cmd_query))

    ex = sub.add_parser("export", help="channels to CSV, or raw packets to a hex file")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--csv", metavar="OUT", help="channels side by side, one row per packet time")
    what.add_argument("--raw", metavar="OUT", help="packets as received, one hex line each")
    ex.add_argument("channel", nargs="*")
    ex.add_argument("--valid-only", action="store_true", help="--raw: leave out packets that were invalid")
    ex.add_argument("--force", action="store_true", help="write over an existing OUT")
    common(ex)
    ex.set_defaults(func=_run_guarded(_cmd_export))

    pl = sub.add_parser("plot", help="channels against time, to a PNG")
    pl.add_argument("channel", nargs="+")
    pl.add_argument("--out", required=True, metavar="FILE.png")
    pl.add_argument("--force", action="store_true", help="write over an existing FILE.png")
    common(pl)
    pl.set_defaults(func=_run_guarded(_cmd_plot))

    ev = sub.add_parser("events", help="events at or above a severity")
    ev.add_argument("--severity", default="DIAGNOSTIC", metavar="S",
                    help="lowest severity shown: DIAGNOSTIC, ACTIVITY_LO, ACTIVITY_HI, COMMAND, WARNING_LO, "
                         "WARNING_HI, FATAL (or 0..6)")
    ev.add_argument("--limit", type=_count(1, 10**9), metavar="N", help="only the newest N")
    common(ev)
    ev.set_defaults(func=_run_guarded(_cmd_events))

    cm = sub.add_parser("commands", help="command history: who, when, what, outcome")
    cm.add_argument("--name", help="only this command")
    cm.add_argument("--limit", type=_count(1, 10**9), metavar="N", help="only the newest N")
    common(cm)
    cm.set_defaults(func=_run_guarded(_cmd_commands))

    ps = sub.add_parser("passes", help="completeness per pass: received, played back, missing, duplicates")
    ps.add_argument("--limit", type=_count(1, 10**9), metavar="N", help="only the newest N passes")
    common(ps)
    ps.set_defaults(func=_run_guarded(_cmd_passes))

    fl = sub.add_parser("files", help="file transfers: who, which way, which file, how it ended, SHA-256")
    fl.add_argument("--limit", type=_count(1, 10**9), metavar="N", help="only the newest N")
    common(fl)
    fl.set_defaults(func=_run_guarded(_cmd_files))

    rt = sub.add_parser("retain", help="delete what the retention policy no longer keeps")
    rt.add_argument("--policy", metavar="FILE.toml", help="per kind max_age_days and max_mb (default: the defaults)")
    rt.add_argument("--now", dest="now_s", type=parse_time_s, metavar="T", help="the ground's clock for the ages (default now): telemetry "
                    "ages against each spacecraft's newest packet time, never past this, and by reception against it")
    rt.add_argument("--force", action="store_true", help="take a --now more than a day ahead of this computer's clock")
    common(rt, window=False)
    rt.set_defaults(func=_run_guarded(_cmd_retain))

    ck = sub.add_parser("check", help="integrity: SQLite's check, every chunk's CRC and counts (exit 1 if not ok)")
    common(ck, window=False)
    ck.set_defaults(func=_run_guarded(_cmd_check))

    up = sub.add_parser("upgrade", help="convert a schema-1 archive (--db) into a new file (--out)")
    up.add_argument("--out", required=True, metavar="NEW", help="the new archive file (must not exist)")
    common(up, window=False)
    up.set_defaults(func=_run_guarded(_cmd_upgrade))
    return archive


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ground.archive_cli ...``: the archive commands on their own."""
    parser = argparse.ArgumentParser(prog="sunlit-ground")
    add_archive_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["archive", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
