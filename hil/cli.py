"""``sunlit-hil``: the hardware-in-the-loop harness.

    sunlit-hil generate --alt-km 550 --inc-deg 97.6 --duration-s 86400 --out sso.parquet
    sunlit-hil replay PROFILE            # validate a profile (recorded anywhere) and summarise it
    sunlit-hil run SCENARIO.toml --report DIR
    sunlit-hil demo                      # one orbit, sun-synchronous, real inference

Exit codes, for every subcommand (hil/run.py declares them): 0 pass, 1 a criterion failed,
2 bad input (a scenario, profile, board or argument that cannot be flown: one line naming the
file and the key, never a traceback), 3 an internal error (one line; set SUNLIT_DEBUG=1 for
the traceback).

A subcommand's function returns its exit code and raises ScenarioError, ProfileError or
BoardProfileError for bad input: :func:`main` turns those into 2, so each subcommand (and
one added later through ``add_campaign_parser(sub)`` in hil/campaign.py) gets the same rules.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Sequence

from hil.run import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERNAL, EXIT_PASS, one_screen, print_out, run_scenario

DEBUG_ENV = "SUNLIT_DEBUG"


def bad_input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (exit 2): each names the file and the key."""
    from flight.hal.boards import BoardProfileError
    from hil.profiles import ProfileError
    from hil.scenario import ScenarioError

    return (ScenarioError, ProfileError, BoardProfileError)


def _report_dir(path: str) -> Path:
    """--report DIR, created now: a directory that cannot be written is bad input, found before the flight."""
    from hil.scenario import ScenarioError

    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".sunlit-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ScenarioError(f"--report {path}: cannot write there: {exc.strerror or exc}") from None
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from hil.scenario import load_scenario

    scenario = load_scenario(args.scenario)  # bad input is found before anything starts
    report = _report_dir(args.report)
    passed, body = run_scenario(scenario, report)
    print_out(one_screen(body, report))
    return EXIT_PASS if passed else EXIT_FAILED


def _cmd_generate(args: argparse.Namespace) -> int:
    from hil.profiles import generate_cli

    return generate_cli(args)


def _cmd_replay(args: argparse.Namespace) -> int:
    from hil.profiles import ProfileError, replay_check

    try:
        profile = replay_check(args.profile)
    except (ProfileError, OSError) as exc:
        print(f"sunlit-hil replay: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cols = profile.columns
    t = cols["time_s"]
    info = {"samples": len(t), "start_s": float(t[0]), "duration_s": float(t[-1] - t[0]),
            # sunlit as generate says it (found in review: > 0.5 here, > 0 there: one file 0.6382 and 0.6402)
            "columns": sorted(cols), "sunlit_fraction": round(float((cols["shadow_factor"] > 0).mean()), 4),
            "metadata": profile.metadata,
            "notes": list(profile.notes)}  # what reading it filled in or found doubtful (found in audit: unsaid here)
    from hil.report import json_text

    span_s = float(t[-1] - t[0])
    if args.step_s is not None and not 0 < args.step_s <= span_s / 2:  # once: nan, inf an internal error; 0 the
        # profile's own step; -10 blamed on duration_s; past the profile a regenerated orbit flown in silence.
        # Checked before the summary is printed: a refused flight prints nothing a script could take for a result.
        print(f"sunlit-hil replay: --step-s {args.step_s:g}: give a step above 0 s and at most half the profile "
              f"({span_s:g} s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = None if args.report is None else _report_dir(args.report)
    print_out(json_text(info))  # strict JSON: a figure that is not finite is null (jq refuses NaN)
    if report is None:
        return EXIT_PASS
    # Fly it: the Sunlit agent in lockstep over the whole profile, default battery, computing.
    from hil.scenario import parse_scenario

    step = float(args.step_s or max(1.0, float(t[1] - t[0])))
    steps = max(1, math.floor((span_s - step) / step + 1e-9))  # whole steps, one short of its end if it can
    scenario = parse_scenario({
        "name": f"replay-{Path(args.profile).stem}", "profile": str(Path(args.profile).resolve()),
        "duration_s": steps * step, "step_s": step, "board": args.board,
        "commands": [{"at_s": 0, "command": "SET_MODE", "args": {"mode": "IDLE"}},
                     {"at_s": 0, "command": "SET_MODE", "args": {"mode": "COMPUTE"}}],
        "criteria": {"charge_floor_pct": 30.0, "temp_max_c": 95.0},
    }, f"replay of {args.profile}")
    passed, body = run_scenario(scenario, report)  # as `sunlit-hil run` flies one: its report written the same way
    print_out(one_screen(body, report))
    return EXIT_PASS if passed else EXIT_FAILED


def _cmd_demo(args: argparse.Namespace) -> int:
    from hil.demo import main as demo_main

    return demo_main()


def build_parser() -> argparse.ArgumentParser:
    from flight.hal.boards import available_boards

    parser = argparse.ArgumentParser(prog="sunlit-hil", description=__doc__.split("\n")[0],
                                     epilog="exit codes: 0 pass, 1 a criterion failed, 2 bad input, 3 internal error "
                                            f"({DEBUG_ENV}=1 for its traceback)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="fly a scenario and write its report")
    run.add_argument("scenario")
    run.add_argument("--report", required=True, metavar="DIR")
    run.set_defaults(func=_cmd_run)
    from hil.profiles import add_generate_arguments

    gen = sub.add_parser("generate", help="build a profile from an orbit")
    add_generate_arguments(gen)
    gen.set_defaults(func=_cmd_generate)
    rep = sub.add_parser("replay", help="validate a profile (recorded anywhere); with --report, fly the agent through it")
    rep.add_argument("profile")
    rep.add_argument("--report", metavar="DIR", help="fly the Sunlit agent through the profile and write a report here")
    rep.add_argument("--board", default="orin_nx_16gb", choices=available_boards())
    rep.add_argument("--step-s", type=float, help="simulation step (default: the profile's)")
    rep.set_defaults(func=_cmd_replay)
    demo = sub.add_parser("demo", help="one orbit of the sun-synchronous profile with real inference")
    demo.set_defaults(func=_cmd_demo)
    _add_optional_subcommands(sub)
    return parser


def _add_optional_subcommands(sub: argparse._SubParsersAction) -> None:
    """Subcommands whose modules may not be there yet: ``campaign`` (hil/campaign.py, add_campaign_parser)."""
    try:
        from hil.campaign import add_campaign_parser  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name != "hil.campaign":  # the module is there and something it needs is not: say so
            raise
        return
    add_campaign_parser(sub)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a run as Ctrl-C does: kill PID, and its terminal closed (found in review: a SIGHUP left the
run's temporary directory in /tmp). A SIGHUP ignored when the harness starts (``nohup``) stays ignored."""


def _terminated(signum: int, frame: Any) -> None:
    # kill PID (or a closed terminal) stops a run as Ctrl-C does: its agent stopped, its files removed
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _say(text: str) -> None:
    """One line on stderr, lost rather than raised where it cannot be written (a terminal that hung up: EIO)."""
    try:
        print(text, file=sys.stderr)
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # bad arguments: argparse prints usage and exits 2
    debug = bool(os.environ.get(DEBUG_ENV))
    name = f"sunlit-hil {args.cmd}"
    main_thread = threading.current_thread() is threading.main_thread()
    # once: killed silent, its temporary directory left in /tmp (SIGTERM; SIGHUP until found in review)
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if main_thread else {}
    previous = {s: h for s, h in previous.items() if not (s == signal.SIGHUP and h is signal.SIG_IGN)}  # nohup
    for signum in previous:
        signal.signal(signum, _terminated)
    try:
        return args.func(args)
    except bad_input_errors() as exc:
        if debug:
            traceback.print_exc()
        _say(f"{name}: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        _say(f"{name}: interrupted" + (f" ({exc})" if str(exc) else ""))
        return 130
    except Exception as exc:  # a bug, not the user's input: one line unless asked
        if debug:
            traceback.print_exc()
        hint = "" if debug else f" (set {DEBUG_ENV}=1 for the traceback)"
        _say(f"{name}: internal error: {type(exc).__name__}: {_one_line(exc)}{hint}")
        return EXIT_INTERNAL
    finally:
        for signum, handler in previous.items():  # None: not set from Python, cannot be put back; the default then
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
