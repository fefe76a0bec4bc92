"""``sunlit-hil``: the hardware-in-the-loop harness.

    sunlit-hil generate --alt-km 550 --inc-deg 97.6 --duration-s 86400 --out sso.parquet
    sunlit-hil replay PROFILE            # validate a profile (recorded anywhere) and summarise it
    sunlit-hil run SCENARIO.toml --report DIR
    sunlit-hil demo                      # one orbit, sun-synchronous, real inference

``run`` exits 0 when every pass/fail criterion holds, 1 when one fails, 2 for a bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from hil.demo import main as demo_main
from hil.run import one_screen, progress_bar, run_scenario


def _cmd_run(args: argparse.Namespace) -> int:
    from hil.scenario import ScenarioError

    try:
        passed, body = run_scenario(Path(args.scenario), Path(args.report))
    except ScenarioError as exc:
        print(f"sunlit-hil: {exc}", file=sys.stderr)
        return 2
    print(one_screen(body, Path(args.report)))
    return 0 if passed else 1


def _cmd_generate(args: argparse.Namespace) -> int:
    from hil.profiles import generate_cli

    return generate_cli(args)


def _cmd_replay(args: argparse.Namespace) -> int:
    from hil.profiles import ProfileError, replay_check

    try:
        profile = replay_check(args.profile)
    except (ProfileError, OSError) as exc:
        print(f"sunlit-hil replay: {exc}", file=sys.stderr)
        return 2
    cols = profile.columns
    t = cols["time_s"]
    info = {"samples": len(t), "start_s": float(t[0]), "duration_s": float(t[-1] - t[0]),
            "columns": sorted(cols), "sunlit_fraction": float((cols["shadow_factor"] > 0.5).mean()),
            "metadata": profile.metadata}
    print(json.dumps(info, indent=1, default=str))
    if args.report is None:
        return 0
    # Fly it: the Sunlit agent in lockstep over the whole profile, default battery, computing.
    from hil.loop import ClosedLoop
    from hil.report import write_report
    from hil.scenario import parse_scenario

    step = float(args.step_s or max(1.0, float(t[1] - t[0])))
    scenario = parse_scenario({
        "name": f"replay-{Path(args.profile).stem}", "profile": str(Path(args.profile).resolve()),
        "duration_s": float(t[-1] - t[0]) - step, "step_s": step, "board": args.board,
        "commands": [{"at_s": 0, "command": "SET_MODE", "args": {"mode": "IDLE"}},
                     {"at_s": 0, "command": "SET_MODE", "args": {"mode": "COMPUTE"}}],
        "criteria": {"charge_floor_pct": 30.0, "temp_max_c": 95.0},
    }, f"replay of {args.profile}")
    with tempfile.TemporaryDirectory(prefix="sunlit-hil-", dir="/tmp") as tmp:
        result = ClosedLoop(scenario, Path(tmp), progress=progress_bar(scenario.name)).run()
    passed, body = write_report(result, Path(args.report))
    print(one_screen(body, Path(args.report)))
    return 0 if passed else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    return demo_main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sunlit-hil", description=__doc__.split("\n")[0])
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
    rep.add_argument("--board", default="orin_nx_16gb")
    rep.add_argument("--step-s", type=float, help="simulation step (default: the profile's)")
    rep.set_defaults(func=_cmd_replay)
    demo = sub.add_parser("demo", help="one orbit of the sun-synchronous profile with real inference")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
