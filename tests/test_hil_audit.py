"""The harness's run, faults and report, audited: a report folder two runs share, one whose earlier report cannot
be removed, and what a fault's record says of a worker the agent's watchdog replaced.

Real parts: a second process holding a report folder's lock (flock), the CLI in this process, a ``sleep`` child
standing in for the compute worker. The waits are deadlines that only keep a broken test from hanging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil.cli import main
from hil.faults import judge
from hil.run import REPORT_LOCK, report_lock, run_scenario
from hil.scenario import ScenarioError, parse_scenario
from tests.test_hil_faults import _wait_state
from tests.test_hil_hang_overlap import _loop_hanging, _timeline

ROOT = Path(__file__).resolve().parent.parent
SSO = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"
SCENARIO = f'name = "audit"\nprofile = "{SSO}"\nduration_s = 60\nstep_s = 10\n'

HOLDER = """
import sys, time
from pathlib import Path
from hil.run import report_lock
with report_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin, or kills us
"""


@pytest.fixture
def holder(tmp_path):
    """Another run's process holding ``tmp_path / 'report'`` (its lock taken as a run takes it)."""
    out = tmp_path / "report"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, out
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


@pytest.mark.req("HIL-003", "HIL-007")
def test_a_run_into_a_folder_another_run_holds_is_refused_naming_it_and_touches_nothing(holder, tmp_path, capsys):
    """Found in audit: two `sunlit-hil run --report DIR` at once both exited 0 saying their report was in DIR, which
    held one run's report (the other's lost, or the two mixed). The second is refused now: exit 2, one line naming
    the folder and the process that holds it, and the first run's files left as they were."""
    proc, out = holder
    (out / "summary.json").write_text('{"scenario": "the other run"}')
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    assert main(["run", str(scenario), "--report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{out}: in use by another run (pid {proc.pid})" in err and "pick another folder" in err
    assert json.loads((out / "summary.json").read_text()) == {"scenario": "the other run"}
    assert sorted(p.name for p in out.iterdir()) == [REPORT_LOCK, "summary.json"]
    with pytest.raises(ScenarioError, match="in use by another run"):  # the campaign's and the demo's path too
        run_scenario(parse_scenario({"name": "x", "profile": str(SSO), "duration_s": 60, "step_s": 10}), out,
                     quiet=True)
    # The lock dies with its holder, however it ends: a run killed -9 leaves no folder locked for ever.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with report_lock(out):
        assert (out / REPORT_LOCK).read_text() == str(os.getpid())


def test_a_report_folder_not_there_yet_is_made_and_held(tmp_path):
    """Found in review: the lock wanted its folder made first, and `make demo` on a fresh clone (no reports/ yet)
    was refused; the folder is made, as the report would make it, then held."""
    out = tmp_path / "reports" / "demo"
    with report_lock(out):
        assert (out / REPORT_LOCK).read_text() == str(os.getpid())


@pytest.mark.req("HIL-003", "HIL-007")
def test_a_report_folder_whose_earlier_report_cannot_be_removed_is_bad_input_not_an_internal_error(tmp_path, capsys):
    """Found in audit: a folder where summary.json was a directory (an earlier report that cannot be removed, so none
    could be written) ended `sunlit-hil run` as "internal error: IsADirectoryError" (exit 3, a bug of the harness)
    before anything flew. It is the user's folder: exit 2, one line naming the file."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "report"
    (out / "summary.json" / "kept").mkdir(parents=True)
    assert main(["run", str(scenario), "--report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err
    assert f"{out / 'summary.json'}: Is a directory" in err and "an earlier run's report cannot be removed" in err
    assert (out / "summary.json" / "kept").is_dir()  # nothing of the user's touched



# --- compute_hang: what its record says of the worker ------------------------------------------------------------


@pytest.mark.req("HIL-008")
def test_a_hang_until_the_watchdog_acts_records_its_worker_replaced_as_a_hang_of_positive_duration_does(
        tmp_path, worker):
    """Found in audit: a compute_hang of duration_s 0 (hung until the agent's watchdog replaces the worker) never
    said its worker was replaced, where one of positive duration did ("not resumed at ...: already replaced"), and
    stayed in the harness's list of hangs to the end of the run."""
    loop, (hang,) = _loop_hanging(tmp_path, worker, [{"at_s": 100, "kind": "compute_hang", "duration_s": 0}])
    loop._apply_fault(hang, 0.0, 100.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "T")
    loop._end_hangs(110.0)  # noqa: SLF001  (still the stopped process: nothing to say yet)
    [entry] = loop.fault_log
    assert "resumed" not in entry and len(loop._hung) == 1  # noqa: SLF001
    worker.kill()  # as the agent's watchdog does
    worker.wait()
    loop._end_hangs(130.0)  # noqa: SLF001
    assert entry["resumed"] == f"not resumed: worker {worker.pid} was replaced by 130 s"
    assert entry["replaced_by_s"] == 130.0 and not loop._hung  # noqa: SLF001


@pytest.mark.req("HIL-008")
def test_a_hang_a_reboot_cut_short_says_the_harness_resumed_it_and_is_not_failed_as_the_watchdogs_miss(
        tmp_path, worker):
    """Found in audit: a hang whose agent a reboot killed before the watchdog could act was resumed by the harness
    in silence, and failed as "no COMPUTE_HUNG within compute_watchdog_s", blaming the agent for what the harness
    did. It still fails (it tested nothing), saying why and what to do."""
    loop, faults = _loop_hanging(tmp_path, worker, [{"at_s": 100, "kind": "compute_hang"},
                                                 {"at_s": 100, "kind": "reboot"}])
    hang = next(f for f in faults if f.kind == "compute_hang")
    loop._rel_s = 100.0  # noqa: SLF001
    loop._apply_fault(hang, 0.0, 100.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "T")
    loop._resume_hung("its agent was killed for the reboot")  # noqa: SLF001  (what the reboot does first)
    assert _wait_state(worker.pid, "S")
    [entry] = loop.fault_log
    assert entry["resumed"] == "resumed (SIGCONT) at 100 s: its agent was killed for the reboot"
    assert entry["cut_at_s"] == 100.0 and "resumed_at_s" not in entry
    [verdict] = judge([entry], _timeline())
    assert verdict.verdict == "FAIL" and "the hang tested nothing" in verdict.why
    assert verdict.why.startswith("resumed (SIGCONT) at 100 s: its agent was killed for the reboot")
    # A COMPUTE_HUNG the agent did say in time is judged as ever, cut or not
    said = _timeline(events=[{"rel_s": 110.0, "name": "COMPUTE_HUNG", "text": "", "args": {}},
                             {"rel_s": 112.0, "name": "COMPUTE_STARTED", "text": "", "args": {}}])
    assert judge([entry], said)[0].verdict == "PASS"


# --- faults the agent could not see ---------------------------------------------------------------------------


@pytest.mark.req("HIL-007", "HIL-008")
def test_a_fault_the_agent_must_notice_cannot_begin_while_a_brownout_holds_it_down(tmp_path, capsys):
    """Found in audit: a sensor_dropout beginning inside a brownout was flown and failed "no SENSOR_MISSING naming
    tj-thermal within 20 s", the agent blamed for what the harness kept it from seeing (so was a compute_hang).
    Refused now naming the key; a fault judged otherwise (a stuck sensor, a reboot) may overlap, and one beginning
    as the agent is back may follow."""
    def scenario(*faults: dict) -> dict:
        return {"name": "overlap", "profile": str(SSO), "duration_s": 600, "step_s": 10, "compute": {"real": True},
                "faults": [{"at_s": 100, "kind": "brownout", "duration_s": 120}, *faults]}

    for kind, more in (("sensor_dropout", {"duration_s": 200}), ("compute_hang", {})):
        with pytest.raises(ScenarioError) as refused:
            parse_scenario(scenario({"at_s": 150, "kind": kind, **more}), "s.toml")
        assert refused.value.key == "faults[1].at_s"
        assert str(refused.value) == (f"s.toml: faults[1].at_s: a {kind} at 150 s begins while the brownout of "
                                      "faults[0] holds the agent down (100 to 220 s): it could not be seen; move it "
                                      "out of the brownout")
    sc = parse_scenario(scenario({"at_s": 100, "kind": "sensor_stuck", "duration_s": 50, "value": 40},
                                 {"at_s": 150, "kind": "reboot"},
                                 {"at_s": 220, "kind": "sensor_dropout", "duration_s": 60},
                                 {"at_s": 90, "kind": "compute_hang"}), "s.toml")
    assert [f.kind for f in sc.faults] == ["compute_hang", "brownout", "sensor_stuck", "reboot", "sensor_dropout"]
    # From the CLI: one line, exit 2, nothing flown
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO + '[[faults]]\nat_s = 10\nkind = "brownout"\nduration_s = 30\n'
                    '[[faults]]\nat_s = 20\nkind = "sensor_dropout"\nduration_s = 20\n')
    assert main(["run", str(path), "--report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"sunlit-hil run: {path}: faults[1].at_s: a sensor_dropout at 20 s begins while the brownout of "
                   "faults[0] holds the agent down (10 to 40 s): it could not be seen; move it out of the brownout")
    assert not (tmp_path / "out").exists()
