"""``sunlit-hil``: the hardware-in-the-loop harness (profiles, closed-loop replay, faults, reports).

Only the demo exists so far; profile generation, replay and scenarios come with the
harness's own work.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sunlit-hil", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="start an agent and a console, ping, show telemetry")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        from hil.demo import main as demo

        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
