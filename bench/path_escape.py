"""File names in commands, attacked. Prints one JSON object as its last line.

- ``path_escape_accepted``: of every command argument that names a file on board (the table of
  ``tests/test_path_escape.py``) times every escape pattern (absolute path, ``..``, hidden name,
  NUL, trailing newline, backslashes, a long name, a symbolic link planted inside that leads out,
  one that leads to another directory of the same file area, the allowed directory itself a link out), sent directly and as a time tag's command to an
  in-process agent whose compute worker runs: how many were accepted (completed). Target 0.
- ``path_escape_tried``: how many were tried; ``path_escape_not_bad_arguments``: refused, but
  not with BAD_ARGUMENTS naming the argument; ``path_escape_paths_given_away``: failure reasons
  quoting the board's absolute paths; ``path_escape_outside_touched``: tries after which
  something outside the agent's directories had been read or written.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from flight.link.dictionary import FailureCode
from tests.test_path_escape import EscapeRig, scheduled_tries, tries


def run() -> dict[str, int]:
    counts = {"accepted": 0, "tried": 0, "not_bad_arguments": 0, "paths_given_away": 0, "outside_touched": 0}
    with tempfile.TemporaryDirectory(prefix="bench-path-escape-") as d:
        rig = EscapeRig(Path(d))
        try:
            plan = [(c, p, False) for c, p in tries()] + [(c, p, True) for c, p in scheduled_tries()]
            for case, pattern, scheduled in plan:
                result = rig.attempt(case, pattern, scheduled)
                counts["tried"] += 1
                counts["accepted"] += result.completed
                failure = result.failure
                if failure is not None and (failure.code is not FailureCode.BAD_ARGUMENTS
                                            or case.argument not in failure.reason):
                    counts["not_bad_arguments"] += 1
                if failure is not None and any(s in failure.reason for s in rig.secrets()):
                    counts["paths_given_away"] += 1
                if rig.look() != rig.before:
                    counts["outside_touched"] += 1
                    rig.before = rig.look()
        finally:
            rig.close()
    return counts


def path_escape_accepted() -> tuple[int, int]:
    """(accepted, tried): the issue's figure ``path_escape_accepted`` (target 0) and its denominator."""
    counts = run()
    return counts["accepted"], counts["tried"]


def main() -> int:
    counts = run()
    print(json.dumps({f"path_escape_{k}": v for k, v in counts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
