"""Fly one scenario and say how it went: what ``sunlit-hil run`` and ``make demo`` share.

The exit codes every ``sunlit-hil`` subcommand uses are declared here (and not in hil/cli.py)
so that modules the CLI imports can use them without importing the CLI.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.loop import RunResult
    from hil.scenario import Scenario

EXIT_PASS = 0
"""Every pass/fail criterion held (or, for a subcommand without criteria, it did its job)."""
EXIT_FAILED = 1
"""The run completed and a criterion failed: the report says which."""
EXIT_BAD_INPUT = 2
"""Bad input: a scenario, profile, board or argument that cannot be flown; nothing was run."""
EXIT_INTERNAL = 3
"""A bug in the harness (or the agent's start-up): one line on stderr, the traceback with SUNLIT_DEBUG=1."""

# What the work figure counts, in the words the summary and the one-screen report use. Modelled
# and real figures count different things and must never be printed side by side unexplained.
WORK_COUNTS = {
    "real": "real: tiles screened by ONNX Runtime in the worker",
    "modelled": ("modelled: tile-equivalents of the board's modelled throughput; "
                 "INFER_START is refused in modelled mode"),
}
COMPUTE_SAYS = {
    "real": ("real: the agent's compute worker ran ONNX Runtime on the tiles the harness dropped into its "
             "incoming/ directory as the camera would"),
    "modelled": ("modelled: no compute worker ran; the harness counted the board's throughput per power mode "
                 "(tiles_per_s_at_maxn x inference_rel_maxn x the agent's duty)"),
}
MODEL_REFERENCE = ("tile-equivalents: what the board's throughput model gives for the same power modes and duty, "
                   "had it unlimited input (a reference, not work done)")


def run_tmp_dir() -> str:
    """Where a run's state directory and sockets go: $TMPDIR where its path is short, else /tmp (a Unix
    socket's path has 108 bytes at most, and the agent's link and the worker's are made in it)."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 40 else "/tmp"


def progress_bar(label: str):
    """A progress callback drawing on stderr (only when it is a terminal, to keep CI logs clean)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=label, unit="‰", leave=False, file=sys.stderr)

    def update(fraction: float) -> None:
        target = int(fraction * 1000)
        if target > bar.n:
            bar.update(target - bar.n)
            if target >= 1000:
                bar.close()

    return update


def compute_account(scenario: "Scenario", body: dict[str, Any]) -> dict[str, Any]:
    """The summary's keys that say whether compute was modelled or real and what the work counts.

    ``compute_mode`` is "real" or "modelled" (from the scenario's ``[compute] real``, whatever
    the time mode); ``compute`` and ``work_counts`` say it in words; with real compute the
    model's figure stays as ``modelled_capacity_tiles``, explained by ``modelled_capacity_counts``.
    """
    mode = "real" if scenario.compute_real else "modelled"
    account: dict[str, Any] = {"compute_mode": mode, "compute": COMPUTE_SAYS[mode], "work_counts": WORK_COUNTS[mode]}
    if mode == "real":
        account["modelled_capacity_counts"] = MODEL_REFERENCE
    else:  # the same number as work_tiles: one figure, said once
        account["modelled_capacity_counts"] = "the same figure as work_tiles (compute was modelled)"
    return account


def finish_report(result: "RunResult", report_dir: Path) -> tuple[bool, dict[str, Any]]:
    """Write the report (hil/report.py) and add to summary.json what compute was and what the work counts."""
    from hil.report import write_report

    passed, body = write_report(result, report_dir)
    body.update(compute_account(result.scenario, body))
    (Path(report_dir) / "summary.json").write_text(json.dumps(body, indent=1, default=str))
    return passed, body


def run_scenario(scenario: "Path | str | Scenario", report_dir: Path, quiet: bool = False) -> tuple[bool, dict]:
    """Fly a scenario (a file, or one already parsed) and write its report; (passed, summary).

    Raises ScenarioError (hil.scenario) or ProfileError (hil.profiles) for bad input.
    """
    from hil.loop import ClosedLoop
    from hil.scenario import Scenario, load_scenario

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    with tempfile.TemporaryDirectory(prefix="sunlit-hil-", dir=run_tmp_dir()) as tmp:
        loop = ClosedLoop(scenario, Path(tmp), progress=None if quiet else progress_bar(scenario.name))
        result = loop.run()
        passed, body = finish_report(result, report_dir)
        log = Path(tmp) / "agent.log"
        if log.exists():
            (Path(report_dir) / "agent.log").write_text(log.read_text(errors="replace"))
    return passed, body


def one_screen(body: dict, report_dir: Path) -> str:
    mode = body.get("compute_mode") or ("real" if body.get("real_tiles") is not None else "modelled")
    if mode == "real":
        work = [f"  work {body['work_tiles']:.0f} tiles ({WORK_COUNTS['real']})",
                f"    for reference, {body['modelled_capacity_tiles']:.0f} {MODEL_REFERENCE}"]
    else:
        work = [f"  work {body['work_tiles']:.0f} tile-equivalents ({WORK_COUNTS['modelled']})"]
    lines = [
        f"{body['scenario']}: {'PASS' if body['passed'] else 'FAIL'}   ({body['time_mode']}, compute {mode})",
        f"  {body['sim_s']:.0f} simulated s in {body['wall_s']:.1f} wall s (x{body['speedup']})",
        f"  charge min {body['soc_min_pct']:.1f} %, end {body['soc_end_pct']:.1f} %; hottest {body['temp_max_c']:.1f} °C",
        *work,
        f"  {len(body['faults'])} faults, {len(body['commands'])} commands, {body['events']} events",
    ]
    for c in body["checks"]:
        lines.append(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
    lines.append(f"  report: {Path(report_dir).resolve() / 'report.html'}")
    return "\n".join(lines)
