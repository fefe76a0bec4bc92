"""The harness's single-run path at its edges: a closed terminal, a summary strict parsers read, a restarted agent
that never speaks, a criterion with nothing to verify."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hil.cli
import hil.loop
from hil.loop import ClosedLoop
from hil.scenario import parse_scenario
from tests.test_hil_scenario import SOURCE, base, constructed_run

ROOT = Path(__file__).resolve().parent.parent
SSO = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"


def strict_loads(text: str):
    """json.loads as jq or a browser's JSON.parse reads: NaN, Infinity and -Infinity are no JSON."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def running_agent_pid(tmp: Path) -> int:
    """The pid of the agent a run under ``tmp`` (its $TMPDIR) started, once it runs: it holds its state
    directory's lock, its pid written in it."""
    lock = None
    for _ in range(1200):  # a bound (60 s and more), not a measure: a loaded machine starts a run's agent slowly
        lock = next(tmp.glob("sunlit-hil-*/state/.agent.lock"), None)
        if lock is not None and lock.read_text().strip():
            break
        time.sleep(0.05)
    assert lock is not None and lock.read_text().strip(), "the run never started its agent"
    return int(lock.read_text().split()[0])


# --- 1. SIGHUP: the terminal closed --------------------------------------------------------------


@pytest.mark.req("HIL-003")
def test_a_run_whose_terminal_hangs_up_stops_its_agent_says_why_and_leaves_no_files(tmp_path):
    """Found in review: SIGTERM and Ctrl-C unwound a run, but a SIGHUP (its terminal closed) killed the harness
    where it stood, its temporary directory left in /tmp and no verdict written."""
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))  # $TMPDIR, short enough for the run's sockets
    report = tmp_path / "r"
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hil", "run", str(ROOT / "hil/scenarios/sso_one_orbit.toml"),
                                 "--report", str(report)], env={**os.environ, "TMPDIR": str(short)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # as from a terminal: a test run under nohup would hand it SIGHUP ignored
                                preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
        agent_pid = running_agent_pid(short)
        proc.send_signal(signal.SIGHUP)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "sunlit-hil run: interrupted (SIGHUP)" in err, err
        assert not list(short.iterdir()), "its temporary directory removed"
        with pytest.raises(ProcessLookupError):
            os.kill(agent_pid, 0)
        saved = strict_loads((report / "summary.json").read_text())
        assert saved["passed"] is False and saved["error"] == "interrupted (SIGHUP)"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.req("HIL-003")
def test_a_hangup_ignored_when_the_harness_starts_stays_ignored(tmp_path, monkeypatch):
    """Under nohup a closed terminal must not stop the run: SIGHUP ignored at the start is left ignored (and put back
    as it was after), while SIGTERM unwinds the run as ever."""
    seen = {}

    def fly(scenario, report):
        seen.update(hup=signal.getsignal(signal.SIGHUP), term=signal.getsignal(signal.SIGTERM))
        return True, {}

    monkeypatch.setattr(hil.cli, "run_scenario", fly)
    monkeypatch.setattr(hil.cli, "one_screen", lambda body, report: "")
    argv = ["run", str(ROOT / "hil/scenarios/sso_one_orbit.toml"), "--report", str(tmp_path)]
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert hil.cli.main(argv) == 0
        assert seen == {"hup": signal.SIG_IGN, "term": hil.cli._terminated}
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert hil.cli.main(argv) == 0
        assert seen["hup"] is hil.cli._terminated and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


# --- 2. strict JSON ----------------------------------------------------------------------------------


@pytest.mark.req("HIL-003")
def test_the_summary_is_strict_json_a_non_finite_figure_written_as_null_and_named(tmp_path):
    """Found in review: summary.json was written with Python's default allow_nan=True, so a NaN charge or an
    infinite argument came out as the tokens NaN and Infinity, which jq and JSON.parse refuse."""
    from hil.report import json_text
    from hil.run import finish_report, one_screen

    run = constructed_run(False)
    run.trace.soc_pct[1] = float("nan")
    run.trace.temp_board_c[2] = float("inf")
    run.commands.append({"at_s": 0.0, "command": "SET_PARAM", "args": {"value": float("-inf")},
                         "outcome": "completed"})
    passed, body = finish_report(run, tmp_path)
    saved = strict_loads((tmp_path / "summary.json").read_text())
    assert not passed and saved["passed"] is False
    assert saved["soc_min_pct"] is None and saved["temp_max_c"] is None
    assert saved["commands"][0]["args"] == {"value": None}
    assert saved["non_finite_as_null"] == ["soc_min_pct", "temp_max_c", "commands[0].args.value"]
    assert math.isnan(body["soc_min_pct"]) and "charge min nan %" in one_screen(body, tmp_path)  # judged as it was
    checks = {c["name"]: c for c in saved["checks"]}
    floor = checks["charge_above_floor"]
    assert not floor["passed"] and "with no value (NaN)" in floor["detail"]
    # numpy's own scalars and arrays, which the default encoder wrote as NaN (float64) or as a string (float32)
    assert strict_loads(json_text({"a": np.float32("nan"), "b": np.array([1.5, np.inf]), "c": np.int64(3)})) == {
        "a": None, "b": [1.5, None], "c": 3}
    clean = constructed_run(False)
    finish_report(clean, tmp_path / "clean")
    assert strict_loads((tmp_path / "clean" / "summary.json").read_text())["non_finite_as_null"] == []


# --- 3. a restarted agent that never says hello -------------------------------------------------------


def _reboot_scenario(name: str):
    return parse_scenario({"name": name, "profile": str(SSO), "duration_s": 60, "step_s": 10, "seed": 1,
                           "faults": [{"at_s": 30, "kind": "reboot"}]})


@pytest.mark.req("HIL-023")
def test_a_restarted_agent_that_never_says_hello_fails_the_run_naming_it_not_an_internal_error(tmp_path, monkeypatch):
    """Found in review: the restart after a reboot waited 60 s for the new agent's hello, then raised, and the run
    ended as an internal error (exit 3) with no verdict of what the agent did. The new agent here is a real process
    stopped (SIGSTOP) as it starts: alive, and mute."""
    from hil.agent_process import AgentProcess
    from hil.report import evaluate

    real_start, started = AgentProcess.start, []

    def start(self):
        real_start(self)
        started.append(self.proc.pid)
        if len(started) == 2:  # the agent the reboot starts; the first kept its own wait (CI found 2 s short)
            monkeypatch.setattr(hil.loop, "HELLO_TIMEOUT_S", 1.0)  # stopped: any wait is waited out
            os.kill(self.proc.pid, signal.SIGSTOP)
        return self

    monkeypatch.setattr(AgentProcess, "start", start)
    loop = ClosedLoop(_reboot_scenario("mute"), tmp_path / "run")
    result = loop.run()
    assert len(started) == 2 and loop.agent.proc.pid == started[1] and loop.agent.proc.returncode == -9
    assert result.agent_died_at_s == 30.0
    assert result.agent_died_how.startswith("restarted by the reboot at 30 s, it never said hello within 1 s, and "
                                            "the harness killed it"), result.agent_died_how
    tr = result.trace.arrays()
    rel = tr["time_s"] - tr["time_s"][0]
    assert tr["agent_up"][rel < 30].all() and not tr["agent_up"][rel >= 30].any()
    [alive] = [c for c in evaluate(result) if c.name == "agent_alive"]
    assert not alive.passed and "died at 30 s (restarted by the reboot at 30 s, it never said hello" in alive.detail


@pytest.mark.req("HIL-023")
def test_a_restarted_agent_the_ground_never_hears_fails_the_run_naming_it(tmp_path, monkeypatch):
    """The same for a restarted agent that said hello to the harness's sim link, then answered no ping of the ground
    (no proxy between: nothing else to blame): it stops (SIGSTOP) right after its hello."""
    from hil.report import evaluate
    from hil.sim_env import SimEnvironment

    real_wait, waits = SimEnvironment.wait_for_agent, []

    def wait_for_agent(self, *args, **kwargs):
        hello = real_wait(self, *args, **kwargs)
        waits.append(loop.agent.proc.pid)
        if len(waits) == 2:
            monkeypatch.setattr(hil.loop, "PING_TIMEOUT_S", 1.0)  # the first connect kept its own
            os.kill(loop.agent.proc.pid, signal.SIGSTOP)
        return hello

    monkeypatch.setattr(SimEnvironment, "wait_for_agent", wait_for_agent)
    loop = ClosedLoop(_reboot_scenario("deaf"), tmp_path / "run")
    result = loop.run()
    assert len(waits) == 2 and loop.agent.proc.returncode == -9
    assert result.agent_died_at_s == 30.0
    assert result.agent_died_how.startswith("restarted by the reboot at 30 s, it never answered the ground's ping "
                                            "within 1 s, and the harness killed it"), result.agent_died_how
    [alive] = [c for c in evaluate(result) if c.name == "agent_alive"]
    assert not alive.passed and "never answered the ground's ping" in alive.detail


@pytest.mark.req("HIL-023")
def test_a_restarted_agent_that_dies_while_the_ground_pings_it_is_said_dead_with_its_exit_code(tmp_path, monkeypatch):
    """Found in review: a restarted agent that exited by itself while the ground's ping waited (the ground client
    does not watch the process) was said to have been killed by the harness, its exit code dropped."""
    from hil.sim_env import SimEnvironment

    real_wait, waits = SimEnvironment.wait_for_agent, []

    def wait_for_agent(self, *args, **kwargs):
        hello = real_wait(self, *args, **kwargs)
        waits.append(loop.agent.proc.pid)
        if len(waits) == 2:
            monkeypatch.setattr(hil.loop, "PING_TIMEOUT_S", 1.0)
            os.kill(loop.agent.proc.pid, signal.SIGKILL)  # dies by itself, as far as the harness knows
        return hello

    monkeypatch.setattr(SimEnvironment, "wait_for_agent", wait_for_agent)
    loop = ClosedLoop(_reboot_scenario("dies"), tmp_path / "run")
    result = loop.run()
    assert len(waits) == 2 and result.agent_died_at_s == 30.0
    assert result.agent_died_how.startswith("exit code -9"), result.agent_died_how
    assert "the harness killed it" not in result.agent_died_how


# --- 4. commands_verified with nothing to verify ----------------------------------------------------------


@pytest.mark.req("HIL-003")
def test_commands_verified_with_no_command_fails_where_asked_and_is_not_listed_where_left_at_its_default():
    """Found in review: commands_verified passed on "0 of 0 commands completed". A scenario that asks for it and
    sends none verified nothing: it fails, as no_unhandled_fault does with no event heard; left at its default on a
    scenario with no [[commands]] it is not applicable, and not listed, as a criterion not asked for."""
    from hil.report import evaluate

    run = constructed_run(False)
    run.scenario = parse_scenario(base(commands=[], criteria={"commands_verified": True}), SOURCE)
    asked = {c.name: c for c in evaluate(run)}["commands_verified"]
    assert not asked.passed and asked.detail.startswith("no commands were sent: nothing verified")
    run.scenario = parse_scenario(base(commands=[]), SOURCE)
    assert "commands_verified" not in {c.name for c in evaluate(run)}
    run.scenario = parse_scenario(base(), SOURCE)  # one command, by default verified
    run.commands.append({"at_s": 0.0, "command": "SET_MODE", "args": {"mode": "IDLE"}, "outcome": "completed"})
    sent = {c.name: c for c in evaluate(run)}["commands_verified"]
    assert sent.passed and sent.detail == "1 of 1 commands completed"


# --- 5. a report folder that cannot be made ------------------------------------------------------------------


@pytest.mark.req("HIL-007")
@pytest.mark.parametrize("blocker", ["reports", "reports/demo"])
def test_demo_with_its_report_folder_blocked_by_a_file_is_bad_input_not_an_internal_error(tmp_path, monkeypatch,
                                                                                         capsys, blocker):
    """Found in audit: `sunlit-hil demo` where reports/ or reports/demo is a file said "internal error:
    NotADirectoryError" (FileExistsError), exit 3; it is bad input, found before anything flies: exit 2, one line
    naming the folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    if blocker == "reports":
        (tmp_path / "reports").rmdir()
    (tmp_path / blocker).write_text("not a folder")
    assert hil.cli.main(["demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sunlit-hil demo: reports/demo: cannot make the report folder"), err
    assert (tmp_path / blocker).read_text() == "not a folder"  # nothing of it touched


# --- 6. `make demo`: python -m hil.demo is sunlit-hil demo ---------------------------------------------------------


@pytest.mark.req("HIL-003")
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_make_demo_stopped_by_ctrl_c_or_sigterm_says_so_in_one_line_and_leaves_nothing(tmp_path, how):
    """Found in audit: `make demo` runs ``python -m hil.demo``, which called the demo outside hil.cli: Ctrl-C was a
    traceback (KeyboardInterrupt in the loop's sleep) and SIGTERM killed it where it stood (exit 143), its temporary
    directory left in /tmp and no verdict written. Now both end as `sunlit-hil demo` ends them: exit 130, one line."""
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # $TMPDIR, short enough for the run's sockets
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hil.demo"], cwd=tmp_path, start_new_session=True,
                                env={**os.environ, "TMPDIR": str(short)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # as from a terminal: a pytest-xdist worker hands its children SIGINT ignored
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        agent_pid = running_agent_pid(short)
        if how == "ctrl-c":  # a terminal's Ctrl-C reaches its whole foreground process group, the agent too
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (proc.returncode, err)
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("sunlit-hil demo: interrupted"), err
        # the run's folder removed (onnxruntime, loaded by the real worker, leaves its own .ses in $TMPDIR)
        assert not list(short.glob("sunlit-hil-*")), "its temporary directory removed"
        with pytest.raises(ProcessLookupError):
            os.kill(agent_pid, 0)
        saved = strict_loads((tmp_path / "reports" / "demo" / "summary.json").read_text())
        assert saved["passed"] is False and saved["error"].startswith("interrupted")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.req("HIL-007")
@pytest.mark.parametrize("stdout", ["terminal", "closed"])
def test_make_demo_with_its_report_folder_blocked_is_one_line_exit_2_even_with_its_reader_gone(tmp_path, stdout):
    """Found in audit: ``python -m hil.demo`` (what `make demo` runs) with reports/demo a file (or a read-only
    checkout) printed a traceback of ScenarioError and exited 1, "a criterion failed"; with its stdout's reader gone
    (`| head`) the first line it printed was a traceback of BrokenPipeError. Bad input: one line naming it, exit 2."""
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "demo").write_text("not a folder")
    read, write = os.pipe()
    if stdout == "closed":
        os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "hil.demo"], cwd=tmp_path, stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(write)
        if stdout == "terminal":
            said = os.read(read, 65536).decode()
            os.close(read)
            assert said.startswith("Sunlit demo: flying one sun-synchronous orbit")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(err) == 1 and err[0].startswith("sunlit-hil demo: reports/demo: cannot make the report folder"), err
    assert (tmp_path / "reports" / "demo").read_text() == "not a folder"
