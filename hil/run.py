"""Fly one scenario and say how it went: what ``sunlit-hil run`` and ``make demo`` share.

The exit codes every ``sunlit-hil`` subcommand uses are declared here (and not in hil/cli.py)
so that modules the CLI imports can use them without importing the CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

# The words for compute and the work figure live in hil/accounting.py, which hil/report.py reads too (one source);
# named here as well for the callers that have always taken them from here.
from hil.accounting import COMPUTE_SAYS, MODEL_REFERENCE, WORK_COUNTS, compute_account  # noqa: F401

if TYPE_CHECKING:
    from hil.loop import RunResult
    from hil.scenario import Scenario

CAMPAIGN_MANIFEST = "manifest.json"
"""What marks a campaign's folder (hil/campaign.py writes it as the campaign starts): no run's report goes there."""
REPORT_LOCK = ".sunlit-hil.lock"
"""The lock file a run holds in its report folder while it flies and writes there (:func:`report_lock`)."""

EXIT_PASS = 0
"""Every pass/fail criterion held (or, for a subcommand without criteria, it did its job)."""
EXIT_FAILED = 1
"""The run completed and a criterion failed: the report says which."""
EXIT_BAD_INPUT = 2
"""Bad input: a scenario, profile, board or argument that cannot be flown; nothing was run."""
EXIT_INTERNAL = 3
"""A bug in the harness (or the agent's start-up): one line on stderr, the traceback with SUNLIT_DEBUG=1."""


def run_tmp_dir() -> str:
    """Where a run's state directory and sockets go: $TMPDIR where its path is short, else /tmp (a Unix
    socket's path has 108 bytes at most, and the agent's link and the worker's are made in it)."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 40 else "/tmp"


def print_out(text: str) -> None:
    """``text`` on stdout; where its reader went away (``| head``) nothing more is written, and the run's verdict,
    in its report and its exit code, stands (found in audit: a run that passed exited 3, an internal error)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        from flight.cli import quiet_stdout

        quiet_stdout()


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


def finish_report(result: "RunResult", report_dir: Path) -> tuple[bool, dict[str, Any]]:
    """Write the report (hil/report.py): summary.json and report.html say what compute was and what the work
    counts from :func:`hil.accounting.compute_account`, one source (found in audit: report.html said a modelled
    real-time run's compute was real, corrected in summary.json alone)."""
    from hil.report import write_report

    return write_report(result, report_dir)


def run_scenario(scenario: "Path | str | Scenario", report_dir: Path, quiet: bool = False) -> tuple[bool, dict]:
    """Fly a scenario (a file, or one already parsed) and write its report; (passed, summary).

    Raises ScenarioError (hil.scenario) or ProfileError (hil.profiles) for bad input, a ``report_dir`` holding a
    campaign's results, one another run holds (:func:`report_lock`) or one whose earlier report cannot be removed
    among it. An earlier run's report in ``report_dir`` is removed first; a run that raises (a
    bug in the harness, a report it could not write, Ctrl-C) leaves a summary.json and junit.xml that say it failed
    and why, and the agent's log, then raises.
    """
    from hil.report import clear_report
    from hil.scenario import Scenario, ScenarioError, load_scenario

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    report_dir = Path(report_dir)
    try:  # found in audit: `sunlit-hil demo` with reports/demo a file said an internal error (exit 3)
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScenarioError(f"{report_dir}: cannot make the report folder there: {exc.strerror or exc}; pick another "
                            "folder", str(report_dir)) from None
    if (report_dir / CAMPAIGN_MANIFEST).exists():  # found in audit: its report.html replaced by this run's
        raise ScenarioError(f"{report_dir}: holds a campaign's results ({CAMPAIGN_MANIFEST}): a run's report there "
                            "would replace the campaign's report.html and stand beside its results; pick another "
                            "folder", str(report_dir))
    with report_lock(report_dir):  # found in audit: two runs into one folder, each said its report was there
        try:  # one that cannot be removed could not be written either: bad input, found before the flight (found in
            clear_report(report_dir)  # audit: said an internal error of the harness, exit 3)
        except OSError as exc:
            raise ScenarioError(f"{report_dir}: an earlier run's report cannot be removed from it: "
                                f"{exc.filename or report_dir}: {exc.strerror or exc}; remove it, or pick another "
                                "folder", str(report_dir)) from None
        return _fly(scenario, report_dir, quiet)


def _fly(scenario: "Scenario", report_dir: Path, quiet: bool) -> tuple[bool, dict]:
    from hil.loop import ClosedLoop
    from hil.report import write_unfinished_report

    with tempfile.TemporaryDirectory(prefix="sunlit-hil-", dir=run_tmp_dir()) as tmp:
        try:
            loop = ClosedLoop(scenario, Path(tmp), progress=None if quiet else progress_bar(scenario.name))
            result = loop.run()
            _keep_agent_log(Path(tmp), report_dir)  # before the verdict: nothing after it can fail the run
            passed, body = finish_report(result, report_dir)
        except BaseException as exc:
            write_unfinished_report(scenario, report_dir, exc)
            try:
                _keep_agent_log(Path(tmp), report_dir)
            except OSError:
                pass
            raise
    return passed, body


@contextlib.contextmanager
def report_lock(report_dir: Path) -> Iterator[None]:
    """Hold ``report_dir`` for one run: an advisory lock (flock) on :data:`REPORT_LOCK` in it, which the kernel
    lets go when the process ends, however it ends (found in audit: two runs into one folder at once both said
    their report was there, and the folder held one run's summary beside the other's agent.log). A folder another
    run holds is refused (ScenarioError, naming it): bad input, and nothing of the other run's is touched. The
    file stays (removing it would let a third run lock a new file while the second holds the old)."""
    from hil.scenario import ScenarioError

    path = Path(report_dir) / REPORT_LOCK
    try:  # made here, as the report would make it (found in review: `make demo` on a fresh clone has no reports/)
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ScenarioError(f"{report_dir}: cannot make its lock file {REPORT_LOCK}: {exc.strerror or exc}",
                            str(report_dir)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise ScenarioError(f"{report_dir}: in use by another run{f' (pid {holder})' if holder.isdigit() else ''}"
                                f" that holds its {REPORT_LOCK}: wait for it to end, or pick another folder",
                                str(report_dir)) from None
        with contextlib.suppress(OSError):  # who holds it, for the refusal's words: a nicety, never a failure
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _keep_agent_log(run_dir: Path, report_dir: Path) -> None:
    log = run_dir / "agent.log"
    if log.exists():
        (report_dir / "agent.log").write_text(log.read_text(errors="replace"))


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
        f"  charge min {body['soc_min_pct']:.1f} %, end {body['soc_end_pct']:.1f} %; hottest {body['temp_max_c']:.1f} °C"
        " (modelled: battery, temperatures and the board's power are the harness's, not measured)",
        *work,
        f"  {len(body['faults'])} faults, {len(body['commands'])} commands, {body['events']} events",
    ]
    for c in body["checks"]:
        lines.append(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
    lines += [f"  [N/A] {line}" for line in body.get("not_judged", ())]
    lines.append(f"  report: {Path(report_dir).resolve() / 'report.html'}")
    return "\n".join(lines)
