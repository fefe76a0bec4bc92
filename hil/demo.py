"""``make demo``: one orbit of the sun-synchronous profile with the agent doing real inference.

Runs hil/scenarios/demo_sso_real_inference.toml through the closed loop (the agent and its
compute worker as real processes, commanded over the real ground link), writes the report to
reports/demo/ and prints a one-screen summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hil.run import one_screen, print_out, run_scenario

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "demo_sso_real_inference.toml"


def main(report_dir: str = "reports/demo") -> int:
    print(f"Sunlit demo: flying one sun-synchronous orbit ({SCENARIO.name}), about a minute...", flush=True)
    passed, body = run_scenario(SCENARIO, Path(report_dir))
    print_out(one_screen(body, Path(report_dir)))  # a reader gone (| head) leaves the verdict's exit code
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
