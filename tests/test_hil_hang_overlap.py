"""Overlapping compute_hang faults on one worker (hil/loop.py, hil/faults.py): the worker stays stopped until
the last of them ends, as overlapping los faults keep the signal off (HIL-021), each record says what really
happened to the process, and the judge takes them as the one hang the agent saw.

Found in audit: a shorter hang inside a longer one resumed the worker (SIGCONT) while the longer one was meant
to hold it, the longer one's record then said it had resumed it, and a hang shorter than the watchdog was
passed as "resumed by itself" though the worker's whole hang outlasted the watchdog with no COMPUTE_HUNG.

Real processes: a ``sleep`` child of the test, stopped and continued by the loop; the test process plays the
agent (the worker's parent), which is all the loop asks of it to apply a hang. The waits are deadlines that only
keep a broken test from hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hil.faults import Timeline, agent_parameters, judge
from hil.loop import ClosedLoop, _process_start_tag
from hil.scenario import parse_scenario
from tests.test_hil_faults import _state, _wait_state

ROOT = Path(__file__).resolve().parent.parent
SSO = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"


def _timeline(n: int = 40, step_s: float = 10.0, events: list | None = None, **params) -> Timeline:
    """A run computing throughout in which the agent said ``events`` (none: no COMPUTE_HUNG)."""
    t = np.arange(n) * step_s
    return Timeline(time_s=t, mode=["COMPUTE"] * n, work=t * 100.0, agent_up=np.ones(n, bool),
                    soc_pct=np.full(n, 80.0), temp_board_c=np.full(n, 50.0), shadow_factor=np.ones(n),
                    events=events or [], params=agent_parameters(params), step_s=step_s)


def _loop_hanging(tmp_path: Path, worker: subprocess.Popen, faults: list[dict]) -> tuple[ClosedLoop, list]:
    """The loop of a scenario with ``faults``, each applied to ``worker`` as the run applies it (the test
    process standing in as the agent whose worker it is)."""
    sc = parse_scenario({"name": "overlap", "profile": str(SSO), "duration_s": 400, "step_s": 10,
                         "compute": {"real": True}, "faults": faults})
    loop = ClosedLoop(sc, tmp_path)
    loop.agent = SimpleNamespace(proc=SimpleNamespace(pid=os.getpid()), running=True)
    loop.client = SimpleNamespace(latest={"compute_pid": (worker.pid,)})
    return loop, list(sc.faults)


@pytest.mark.req("HIL-008", "HIL-021")
def test_a_shorter_hang_inside_a_longer_one_leaves_the_worker_stopped_until_the_longer_one_ends(tmp_path, worker):
    loop, (long, short) = _loop_hanging(tmp_path, worker, [{"at_s": 100, "kind": "compute_hang", "duration_s": 120},
                                                           {"at_s": 150, "kind": "compute_hang", "duration_s": 10}])
    loop._apply_fault(long, 0.0, 100.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "T")
    loop._apply_fault(short, 0.0, 150.0)  # noqa: SLF001
    a, b = loop.fault_log
    assert a["pid"] == b["pid"] == worker.pid and b["stopped_since_s"] == 100.0 and "stopped_since_s" not in a
    loop._end_hangs(160.0)  # noqa: SLF001
    time.sleep(0.2)  # a SIGCONT sent would have let it run by now
    assert _state(worker.pid) == "T", "the shorter hang resumed the worker the longer one still holds"
    assert "resumed_at_s" not in b and b["held_until_s"] == 220.0
    assert b["resumed"] == "held on at 160 s by the compute_hang at 100 s to 220 s"
    loop._end_hangs(220.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "S")
    assert a["resumed"] == "resumed (SIGCONT) at 220 s" and a["resumed_at_s"] == 220.0
    assert b["resumed"].endswith("; resumed (SIGCONT) at 220 s") and b["resumed_at_s"] == 220.0
    assert not loop._hung  # noqa: SLF001

    # The worker was hung 120 s: with no COMPUTE_HUNG the shorter one may not pass as "resumed by itself" under a
    # watchdog of 100 s (its own 10 s would have), and under one of 200 s both did end by themselves, at 220 s.
    assert [v.verdict for v in judge(loop.fault_log, _timeline(compute_watchdog_s=100.0))] == ["FAIL", "FAIL"]
    longer, inner = judge(loop.fault_log, _timeline(compute_watchdog_s=200.0))
    assert longer.verdict == inner.verdict == "PASS" and inner.recovered_at_s == 220.0
    assert "after 120 s with the hangs overlapping it" in inner.why


@pytest.mark.req("HIL-008", "HIL-021")
def test_a_later_hang_that_ends_later_holds_the_earlier_ones_worker_on_to_its_own_end(tmp_path, worker):
    loop, (first, second) = _loop_hanging(tmp_path, worker, [{"at_s": 100, "kind": "compute_hang", "duration_s": 60},
                                                             {"at_s": 150, "kind": "compute_hang", "duration_s": 70}])
    loop._apply_fault(first, 0.0, 100.0)  # noqa: SLF001
    loop._apply_fault(second, 0.0, 150.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "T")
    loop._end_hangs(160.0)  # noqa: SLF001
    time.sleep(0.2)
    assert _state(worker.pid) == "T", "the first hang's end resumed the worker the second still holds"
    a, b = loop.fault_log
    assert a["resumed"] == "held on at 160 s by the compute_hang at 150 s to 220 s" and "resumed_at_s" not in a
    loop._end_hangs(220.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "S") and a["resumed_at_s"] == b["resumed_at_s"] == 220.0
    # 60 s and 70 s each, 120 s together: past a watchdog of 100 s with nothing said, both fail
    assert [v.verdict for v in judge(loop.fault_log, _timeline(compute_watchdog_s=100.0))] == ["FAIL", "FAIL"]


@pytest.mark.req("HIL-008")
def test_a_hang_until_the_watchdog_holds_a_shorter_one_to_the_end_and_the_end_of_the_run_resumes_it(tmp_path, worker):
    loop, (forever, short) = _loop_hanging(tmp_path, worker, [{"at_s": 100, "kind": "compute_hang"},
                                                              {"at_s": 110, "kind": "compute_hang", "duration_s": 10}])
    loop._apply_fault(forever, 0.0, 100.0)  # noqa: SLF001
    loop._apply_fault(short, 0.0, 110.0)  # noqa: SLF001
    loop._end_hangs(120.0)  # noqa: SLF001
    time.sleep(0.2)
    assert _state(worker.pid) == "T"
    _, b = loop.fault_log
    assert b["held_until_s"] is None and "hung until replaced" in b["resumed"] and "resumed_at_s" not in b
    assert judge(loop.fault_log, _timeline(compute_watchdog_s=100.0))[1].verdict == "FAIL"
    loop._resume_hung()  # noqa: SLF001  (before the agent is killed, and at the end: never a stopped process left)
    assert _wait_state(worker.pid, "S")


@pytest.mark.req("HIL-008")
def test_a_hang_of_an_earlier_process_under_the_same_pid_holds_nothing(tmp_path, worker):
    """The worker replaced while hung and its pid given again: the old hang's entry names the old process (its
    start time), so it neither holds the new process stopped nor is resumed on it."""
    loop = ClosedLoop(parse_scenario({"name": "reuse", "profile": str(SSO), "duration_s": 400, "step_s": 10}),
                      tmp_path)
    os.kill(worker.pid, signal.SIGSTOP)
    assert _wait_state(worker.pid, "T")
    old: dict = {"at_s": 100.0}
    new: dict = {"at_s": 150.0}
    loop._hung.append((220.0, worker.pid, "not-its-start-time", old))  # noqa: SLF001
    loop._hung.append((160.0, worker.pid, _process_start_tag(worker.pid), new))  # noqa: SLF001
    loop._end_hangs(160.0)  # noqa: SLF001
    assert _wait_state(worker.pid, "S") and new["resumed_at_s"] == 160.0 and "held" not in new
    loop._end_hangs(220.0)  # noqa: SLF001
    assert "already replaced" in old["resumed"] and "resumed_at_s" not in old
