"""The agent's console as it starts: what whoever started ``sunlit-flight run`` sees before the first tick."""

from __future__ import annotations

import subprocess
import sys


def start_lines(args: list[str]) -> tuple[str, bool]:
    """Start ``python -m flight run ARGS``, read its stderr up to the last line of the start (the one naming
    telecommands), stop it: (what it said, whether it was still running then)."""
    proc = subprocess.Popen([sys.executable, "-m", "flight", "run", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "telecommands" in line:  # the last line of the start
                break
        running = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return "".join(lines), running


def end(proc: subprocess.Popen) -> None:
    """A process the test started, killed if it still runs (the test failed before it ended) and reaped: none
    outlives its test."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
