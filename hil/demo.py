"""``make demo``: one orbit of the sun-synchronous profile with the agent doing real inference.

Runs hil/scenarios/demo_sso_real_inference.toml through the closed loop (the agent and its
compute worker as real processes, commanded over the real ground link), writes the report to
reports/demo/ and prints a one-screen summary.

``python -m hil.demo`` (what ``make demo`` runs) is ``sunlit-hil demo``: hil.cli's main under the
Ctrl-C guard (flight/entry.py), so bad input, Ctrl-C and SIGTERM end as the CLI ends them (found in
audit: run as a module, a report folder that could not be made was a traceback, Ctrl-C a traceback
and SIGTERM left the run's temporary directory in /tmp). No ``from __future__`` import and nothing
but the stdlib at module level: run as ``__main__``, a module loaded here is outside the guard.
"""

import sys
from pathlib import Path

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "demo_sso_real_inference.toml"


def main(report_dir: str = "reports/demo") -> int:
    from hil.run import one_screen, print_out, run_scenario

    print_out(f"Sunlit demo: flying one sun-synchronous orbit ({SCENARIO.name}), about a minute...")
    passed, body = run_scenario(SCENARIO, Path(report_dir))
    print_out(one_screen(body, Path(report_dir)))  # a reader gone (| head) leaves the verdict's exit code
    return 0 if passed else 1


if __name__ == "__main__":
    from flight.entry import launch

    sys.exit(launch("hil.cli:main", "sunlit-hil", args=(["demo", *sys.argv[1:]],)))
