"""``sunlit-flight``: run the agent, export the dictionary, encode and decode packets.

Output to a pipe that closes early (``sunlit-flight dictionary --json | head``) ends the
program quietly with status 1, as the Python documentation's "Note on SIGPIPE" does.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from flight import selftest
from flight.entry import EXIT_INTERRUPTED
from flight.hal.base import BACKENDS
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, date_for_seconds
from flight.link.docgen import dictionary_markdown
from flight.link.messages import Codec
from flight.link.packets import PacketError
from flight.link.transport import LinkConfigError

if TYPE_CHECKING:
    from flight.agent.agent import Agent
    from flight.config import Config

DEFAULT_LINK = "zmq://127.0.0.1:5550"


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``key=value`` words from a command line; values stay text for the dictionary to check. A key given twice is
    refused, naming it (found in audit: `PING token=1 token=2` sent 2, the first dropped without a word)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        if key in out:
            raise ValueError(f"{key} given twice ({key}={out[key]}, {item}): give it once")
        out[key] = value
    return out


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 sends nothing; 0 and below name process groups, not a process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # there, and someone else's
        return True
    except (OSError, OverflowError):  # ProcessLookupError: gone; a number no pid can be
        return False
    return True


def _cmd_run(args: argparse.Namespace) -> int:
    # Before the agent's imports (seconds on a board): a parent that dies meanwhile ends it too (a review)
    if args.parent_pid is not None:
        from flight.lifetime import die_with_parent

        if not die_with_parent(args.parent_pid):  # found in audit: a live pid not its parent was said "gone"
            why = (f"is not this process's parent ({os.getppid()} is): give the pid of the process that starts it"
                   if _pid_alive(args.parent_pid) else "is gone" if args.parent_pid > 0 else "is no process id")
            print(f"sunlit-flight: --parent-pid {args.parent_pid} {why}; not starting", file=sys.stderr)
            return 2
    from flight.agent.agent import Agent
    from flight.config import ConfigError, load_config
    from flight.hal.base import HalError
    from flight.storage import DirectoryBusy

    overrides = {
        "link.url": args.link,
        "hal.backend": args.hal,
        "hal.board": args.board,
        "hal.sim_endpoint": args.sim_endpoint,
        "rates.hk_period_s": args.hk_period,
        "rates.control_period_s": args.control_period,
        "paths.state_dir": args.state_dir,
        "power.bench_supply": True if args.bench_supply else None,
    }
    flags = {"link.url": "--link", "hal.backend": "--hal", "hal.board": "--board", "hal.sim_endpoint": "--sim-endpoint",
             "rates.hk_period_s": "--hk-period", "rates.control_period_s": "--control-period",
             "paths.state_dir": "--state-dir"}
    try:
        config = load_config(args.config, overrides, flags)
    except (ConfigError, LinkConfigError, OSError) as exc:
        print(f"sunlit-flight: {exc}", file=sys.stderr)
        return 2
    try:
        agent = Agent(config)
    except (ConfigError, LinkConfigError, HalError, DirectoryBusy) as exc:
        print(f"sunlit-flight: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the state directory, most often: say which path, and what it is for
        where = Path(exc.filename) if exc.filename else None
        what = " (the state directory: --state-dir, [paths] state_dir)" if where == Path(config.state_dir) else ""
        made_on_a_file = exc.errno in (errno.EEXIST, errno.ENOTDIR) and where is not None \
            and os.path.lexists(where) and not os.path.isdir(where)  # neither raises
        why = "a file, not a directory" if made_on_a_file else (exc.strerror or str(exc))
        print(f"sunlit-flight: {where or 'start'}{what}: {why}", file=sys.stderr)
        return 2
    try:  # closed however the start ends: a Ctrl-C before the loop's own handler is in place included
        reason = _run_agent(agent, config)
    finally:
        agent.close()
    try:  # its terminal may be gone (SIGHUP): the exit status still says how the run ended
        print(f"sunlit-flight: stopped ({reason}), exit status {agent.exit_status}", file=sys.stderr)
    except OSError:
        pass
    return agent.exit_status


def _run_agent(agent: Agent, config: Config) -> str:
    """Say what the agent starts with, run it; why it stopped."""
    from flight.agent.params import REFUSED_SAID
    from flight.link.curve import plain_off_board
    from flight.storage import printable

    print(f"sunlit-flight: agent up on {config.link_url}, hal {config.hal_backend}, board {config.board_said}, "
          f"state in {config.state_dir} (dictionary {DICTIONARY.version_hash})", file=sys.stderr, flush=True)
    if getattr(agent.link, "is_open", True) is False:  # a serial device not there (yet): tried again each second
        print(f"sunlit-flight: warning: link {config.link_url}: {printable(agent.link.last_error)}; the agent runs "
              "without it and tries again each second (link_device_errors, LINK_DEVICE_ERROR)", file=sys.stderr,
              flush=True)
    for note in agent.board.notes:  # what the board lacks and the agent runs without (nvpmodel: power modes)
        print(f"sunlit-flight: warning: {printable(note)}", file=sys.stderr, flush=True)
    for what, why in agent.start_problems():  # sent down as STATE_CORRUPT too; said here for whoever started it
        print(f"sunlit-flight: warning: {what}: {printable(why)}", file=sys.stderr, flush=True)
    refused = agent.params.store.refused
    for name, value, why in refused[:REFUSED_SAID]:  # names and values from a file: shown escaped
        now = agent.params.store.get(name) if name in DICTIONARY.parameter_by_name else "nothing (no such parameter)"
        print(f"sunlit-flight: warning: saved parameter {printable(name)} = {printable(value)} refused "
              f"({printable(why)}); in force: {now}", file=sys.stderr, flush=True)
    if len(refused) > REFUSED_SAID:
        print(f"sunlit-flight: warning: {len(refused) - REFUSED_SAID} more saved parameters refused",
              file=sys.stderr, flush=True)
    if plain_off_board(config.link_url, config.zmq_curve):  # allowed (a bench), but never without a word
        reach = ("can command this agent (no [security] tc_keys either)" if config.tc_keys is None else
                 "can send to it (telecommands still need a MAC from [security] tc_keys)")
        print(f"sunlit-flight: warning: link {config.link_url} is plain ZeroMQ (zmq_curve = \"off\") on an address "
              f"other hosts may reach: any host that reaches its ports reads the telemetry and {reach}; set "
              "zmq_curve = \"auto\" with zmq_server_secret and zmq_clients, or bind to 127.0.0.1",
              file=sys.stderr, flush=True)
    if config.tc_keys is None:  # a bench or a test may run so; a board never should (install.sh provisions keys)
        print("sunlit-flight: warning: telecommands are NOT authenticated (no [security] tc_keys): any process "
              "that reaches the link can command this agent", file=sys.stderr, flush=True)
    else:
        print(f"sunlit-flight: telecommands authenticated (HMAC-SHA256, key slots {config.tc_keys})",
              file=sys.stderr, flush=True)
    return agent.run()


def _cmd_dictionary(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(dictionary_markdown(DICTIONARY))
    else:
        json.dump(DICTIONARY.to_json(), sys.stdout, indent=None if args.compact else 2)
        sys.stdout.write("\n")
    return 0


def _cmd_zmq_keys(args: argparse.Namespace) -> int:
    from flight.link.curve import make_certificate

    try:
        public, secret = make_certificate(args.dir, args.name)
    except (OSError, ValueError) as exc:
        print(f"sunlit-flight zmq-keys: {exc}", file=sys.stderr)
        return 2
    print(f"{public}  public: give it to the peer (the agent's to the ground; a ground's into the agent's "
          f"[security] zmq_clients)\n{secret}  secret (mode 600): stays here")
    return 0


def _date_for_seconds(command: str, assignments: dict[str, str]) -> str:
    """:func:`flight.link.dictionary.date_for_seconds` for a command named on the command line; empty if there is
    no such command."""
    try:
        return date_for_seconds(DICTIONARY.command(command), assignments)
    except ArgumentError:
        return ""


def _cmd_packet_encode(args: argparse.Namespace) -> int:
    for flag, value, low, high in (("--cmd-id", args.cmd_id, 1, 2**64 - 1), ("--source-id", args.source_id, 0, 0xFFFF)):
        if value is not None and not low <= value <= high:  # once wrapped to 16 bits, or a packet the agent refuses
            print(f"sunlit-flight packet encode: {flag} {value}: give a whole number from {low} to {high}",
                  file=sys.stderr)
            return 2
    codec = Codec(DICTIONARY)
    codec.seq.set(args.apid, args.seq)
    try:
        assignments = parse_assignments(args.args)
        packet, cmd_id = codec.encode_command(args.command, assignments, args.cmd_id, args.source_id, args.apid)
    except (ArgumentError, ValueError) as exc:
        hint = _date_for_seconds(args.command, assignments) if isinstance(exc, ArgumentError) else ""
        print(f"sunlit-flight packet encode: {exc}{hint}", file=sys.stderr)
        return 2
    print(packet.hex())
    return 0


def jsonable(value: Any) -> Any:
    """Packet contents as JSON can carry them: bytes as hex, keys as strings, anything else as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _cmd_packet_decode(args: argparse.Namespace) -> int:
    """Decode hex packets, one per argument or per line of the file; exit 1 if any is bad.

    One JSON line per packet, whatever it holds: a packet that fails its checks (hex, length,
    CRC, headers) is ``{"valid": false, "error": KIND, "detail": ...}`` and counts as bad; a
    valid packet whose data this dictionary cannot read is ``"valid": true`` with
    ``decode_error`` saying why. Exit status 0, or 1 if any packet was bad, or 2 when there is
    nothing to decode (no arguments, a file that cannot be read).
    """
    if args.file:
        try:
            with open(args.file, encoding="ascii", errors="replace") as f:
                words = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as exc:
            print(f"sunlit-flight packet decode: {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        words = list(args.hex)
    if not words:
        print("sunlit-flight packet decode: give HEX arguments or --file F", file=sys.stderr)
        return 2
    codec = Codec(DICTIONARY)
    bad = 0
    for word in words:
        try:
            raw = bytes.fromhex(word.replace(" ", "").replace(":", ""))
        except ValueError:
            print(json.dumps({"valid": False, "error": "hex", "detail": f"not hex: {word[:40]!r}"}))
            bad += 1
            continue
        try:
            info = codec.describe(raw)
            line = json.dumps(jsonable(info))
        except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one packet's line, not the rest
            info = {"len": len(raw), "valid": False, "error": "internal",
                    "detail": f"decoder failed: {type(exc).__name__}: {exc}"[:240], "hex": raw.hex()}
            line = json.dumps(info)
        bad += not info["valid"]
        print(line)
    return 1 if bad else 0


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit cannot fail on a closed pipe again (the
    reader went away: ``... | head``; Python docs, "Note on SIGPIPE"). Every CLI uses it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file (a test's capture): nothing will flush there
        pass


def hold_closed_stdio() -> None:
    """Open /dev/null on whichever of file descriptors 0, 1 and 2 the program was started without (``>&-``), so
    that no file opened later takes one of those numbers (found in audit: the state directory's lock file became
    the agent's fd 1, where anything written to stdout would land)."""
    while True:  # os.open takes the lowest free number: past 2, all three are held
        try:
            fd = os.open(os.devnull, os.O_RDWR)
        except OSError:
            return
        if fd > 2:
            os.close(fd)
            return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sunlit-flight", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the flight agent")
    run.add_argument("--config", help="TOML configuration file (see flight/config.py); flags below override it")
    run.add_argument("--link", help=f"link URL (default {DEFAULT_LINK})")
    run.add_argument("--hal", choices=sorted(BACKENDS), help="hardware backend")
    run.add_argument("--board", help="board profile (orin_nano, orin_nx_16gb, agx_orin_64gb)")
    run.add_argument("--sim-endpoint", help="sim backend: the harness's ZeroMQ endpoint")
    run.add_argument("--state-dir", help="where parameters and state survive restarts")
    run.add_argument("--hk-period", type=float, metavar="S", help="housekeeping period in seconds")
    run.add_argument("--control-period", type=float, metavar="S", help="control loop period in seconds")
    run.add_argument("--bench-supply", action="store_true",
                     help="a board on a desk: no EPS or battery; admit compute in full (telemetry says so)")
    run.add_argument("--parent-pid", type=int, metavar="PID",
                     help="stop (SIGTERM) when this process dies: for harnesses and tests, never under systemd")
    run.set_defaults(func=_cmd_run)

    st = sub.add_parser("selftest", help="check providers, sensors, power modes, link, disk, store and key; "
                                         "a pass/fail table, exit status 1 on failure")
    selftest.add_arguments(st)
    st.set_defaults(func=selftest.run_from_args)

    dic = sub.add_parser("dictionary", help="print the command/telemetry dictionary")
    fmt = dic.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON (the default)")
    fmt.add_argument("--markdown", action="store_true", help="the Markdown reference in docs/")
    dic.add_argument("--compact", action="store_true", help="JSON on one line")
    dic.set_defaults(func=_cmd_dictionary)

    zk = sub.add_parser("zmq-keys", help="make a CurveZMQ certificate pair: DIR/NAME.key (public) and "
                                         "DIR/NAME.key_secret (mode 600); never overwrites")
    zk.add_argument("dir")
    zk.add_argument("name", help="e.g. agent, or the ground station's name")
    zk.set_defaults(func=_cmd_zmq_keys)

    pkt = sub.add_parser("packet", help="encode or decode packets, for debugging a link")
    psub = pkt.add_subparsers(dest="packet_cmd", required=True)
    enc = psub.add_parser("encode", help="print the hex of a telecommand")
    enc.add_argument("command")
    enc.add_argument("args", nargs="*", metavar="key=value")
    enc.add_argument("--seq", type=int, default=0, help="sequence count (default 0)")
    enc.add_argument("--cmd-id", type=int, default=None, help="command id (default: a fresh random one)")
    enc.add_argument("--source-id", type=int, default=1)
    enc.add_argument("--apid", type=lambda s: int(s, 0), default=0x010)
    enc.set_defaults(func=_cmd_packet_encode)
    dec = psub.add_parser("decode", help="print each packet as a JSON line")
    dec.add_argument("hex", nargs="*")
    dec.add_argument("--file", help="a file of hex packets, one per line")
    dec.set_defaults(func=_cmd_packet_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = None
    no_stdout = sys.stdout is None  # started with it closed (``>&-``): Python gives None
    hold_closed_stdio()
    try:
        try:
            args = build_parser().parse_args(argv)  # --help prints here and exits
            if no_stdout and args.cmd != "run":  # the agent writes nothing there; the others would lose their output
                print(f"sunlit-flight {args.cmd}: standard output is closed, so its output would be lost: redirect "
                      "it (to /dev/null if it is not wanted)", file=sys.stderr)
                return 1
            status = args.func(args)
        except (PacketError, ValueError) as exc:
            print(f"sunlit-flight: {exc}", file=sys.stderr)
            status = 2
        finally:
            if sys.stdout is not None:  # a closed pipe shows here, in the try, not at exit where it cannot be caught
                sys.stdout.flush()
    except BrokenPipeError:
        if args is not None and args.cmd == "run":  # the agent writes nothing to stdout: a broken pipe is its own
            raise
        quiet_stdout()  # the reader went away (``| head``): stop quietly
        return 1
    except OSError as exc:  # found in audit: `dictionary --markdown > docs/dictionary.md` on a full disk, a traceback
        if args is None or args.cmd == "run":  # the agent's own failures are its start's to say, not an output's
            raise
        print(f"sunlit-flight {args.cmd}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else
              " (writing its output)"), file=sys.stderr)
        quiet_stdout()  # what is left in the buffer cannot be written either: no second error at exit
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the agent's own handler is in place (its start-up): no traceback
        print("sunlit-flight: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED  # as flight/entry.py says one while the modules load
    return status


if __name__ == "__main__":
    sys.exit(main())
