"""The compute supervisor and worker against what an audit found them to mishandle: a worker that cannot even be
made, and what the worker is asked and sent that it took badly."""

from __future__ import annotations

import sys

import pytest

from flight.agent.compute import START_BACKOFF_S, WORKER_LOG, ComputeSupervisor
from flight.agent.dispatcher import CommandFailed
from flight.compute import protocol as cp
from flight.compute.usecase.shipped import MODEL_NAME
from flight.link.definitions import DICTIONARY, Admission, ComputeState, JobKind
from flight.link.dictionary import FailureCode
from tests.model_helpers import WorkerBench, supervisor
from tests.test_opening import _Faults, _MovingClock
from tests.test_worker_hardening import run_until, start, toy_set, training


@pytest.mark.system  # a worker process, once it can be made again
@pytest.mark.req("CMP-012")
def test_a_worker_that_cannot_be_made_is_said_and_tried_again_later_and_the_agent_runs_on(tmp_path, monkeypatch):
    """Found in audit: Popen's error (the interpreter gone: the software replaced under the running agent) went out of
    the supervisor's start, so the agent did not boot at all; raised again at each watchdog look, it was a COMPUTE_HUNG
    and a fault every control tick, never backing off. Now it is said (INTERNAL_ERROR, with the reason, and in the
    worker's log), commands say why, and it is tried again later and later."""
    said, errors, clock = [], [], _MovingClock()
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: said.append(name), _Faults(), clock,
                            dict(DICTIONARY.parameter_defaults), lambda: 1,
                            lambda where, exc: errors.append((where, exc)))
    real = sys.executable
    monkeypatch.setattr(sys, "executable", str(tmp_path / "replaced" / "python3"))
    try:
        sup.start()  # the agent's boot: no exception
        assert sup.state is ComputeState.DOWN and sup.proc is None and sup.failed_starts == 1
        assert [where for where, _ in errors] == ["compute worker start"]
        assert isinstance(errors[0][1], FileNotFoundError)
        assert "could not be started: FileNotFoundError" in (tmp_path / "compute" / WORKER_LOG).read_text()
        with pytest.raises(CommandFailed, match="could not be made\\), 1 times in a row; next try in 10 s") as refused:
            sup._request(cp.RollbackModel(1, MODEL_NAME), lambda reply: {})  # noqa: SLF001
        assert refused.value.code is FailureCode.BUSY
        for _ in range(int(START_BACKOFF_S) - 1):  # control ticks before the next try: nothing raised, nothing said
            clock.t += 1.0
            sup.admit(Admission.ALL, 2, 3, None, "test")
        assert len(errors) == 1 and "COMPUTE_HUNG" not in said
        clock.t += 1.0
        sup.admit(Admission.ALL, 2, 3, None, "test")  # tried again: still no interpreter, a longer wait
        assert len(errors) == 2 and sup.failed_starts == 2 and sup._start_at_s == clock.t + 2 * START_BACKOFF_S  # noqa: SLF001
        monkeypatch.setattr(sys, "executable", real)  # put right: the next try makes a worker
        clock.t += 2 * START_BACKOFF_S
        sup.admit(Admission.ALL, 2, 3, None, "test")
        assert sup.state is ComputeState.STARTING and sup.proc is not None and sup.proc.poll() is None
    finally:
        monkeypatch.setattr(sys, "executable", real)
        sup.close()


def _said_up_to(bench, sup, taken: int, last) -> int:
    """Hand the supervisor what the worker said after the first ``taken`` messages, up to the first that
    ``last(message)`` holds for, in order, as the agent's loop takes them; returns how many it has taken."""
    messages = bench.drain()
    for i in range(taken, len(messages)):
        sup._take(messages[i])  # noqa: SLF001 - the agent's intake of one worker message
        if last(messages[i]):
            return i + 1
    raise AssertionError("not said")


@pytest.mark.req("FIL-007")
def test_a_jobs_files_are_free_as_soon_as_its_cancel_or_its_end_is_said(tmp_path):
    """Found in audit: FILE_DELETE of a training job's data set right after JOB_CANCEL completed was refused BUSY
    ("kept until the job ends (JOB_CANCEL ends it)") until the worker's next status, up to a second later; a
    sequence that cancels a job and then deletes its data failed. The worker now says its files before the job's
    end (the cancel's reply, JOB_DONE)."""
    bench = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    sup = supervisor(tmp_path / "agent", {"compute_watchdog_s": 30.0})
    try:
        training(bench)  # job 1 on data set "toy", running
        toy_set(bench, "short")
        start(bench, cp.JobSpec(2, JobKind.TRAINING, "short", steps=5, batch_size=16, priority=9))
        bench.worker._send(bench.worker.status())  # noqa: SLF001 - the status each second
        taken = _said_up_to(bench, sup, 0, lambda m: isinstance(m, cp.Status))
        assert sup.file_in_use("data/toy.npz") == "the data set of training job 1 (running)"
        assert sup.file_in_use("data/short.npz") == "the data set of training job 2 (queued)"
        cancel = bench.request(lambda r: cp.CancelJob(r, 1))
        taken = _said_up_to(bench, sup, taken, lambda m: m == cancel)  # JOB_CANCEL completes here
        assert sup.file_in_use("data/toy.npz") is None and sup.file_in_use("checkpoints/job00001.ck") is None
        assert sup.file_in_use("data/short.npz") == "the data set of training job 2 (queued)"  # still to run
        run_until(bench, lambda: bench.worker.jobs[2].state.value == "DONE")
        _said_up_to(bench, sup, taken, lambda m: isinstance(m, cp.WorkerEvent) and m.name == "JOB_DONE")
        assert sup.file_in_use("data/short.npz") is None
    finally:
        sup.close()
        bench.close()


@pytest.mark.req("CMP-012")
def test_a_reply_the_agent_cannot_read_ends_its_command_failed_never_running_for_good(tmp_path):
    """Found in review: a reply whose result the request's reader raised on (its entry already taken from the table)
    left the command's completion unsettled: COMMAND_STATUS said "running" for good, a sequence waited on it."""
    said, errors, clock = [], [], _MovingClock()
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: said.append(name), _Faults(), clock,
                            dict(DICTIONARY.parameter_defaults), lambda: 1,
                            lambda where, exc: errors.append((where, exc)))
    from flight.agent.dispatcher import Deferred

    deferred, ended = Deferred(), []
    deferred.then(lambda ok, value, code: ended.append((ok, value, code)))
    sup._requests[7] = (clock.monotonic_s() + 10.0, deferred, lambda reply: {**reply.result["missing"]})  # noqa: SLF001
    sup._take(cp.Reply(7, True, result={"name": "x"}))  # noqa: SLF001
    assert deferred.settled and ended[0][0] is False and ended[0][2] is FailureCode.EXECUTION_ERROR
    assert ended[0][1].startswith("the compute worker's reply could not be read: KeyError")
    assert [where for where, _ in errors] == ["compute reply"] and 7 not in sup._requests  # noqa: SLF001
    sup._take(cp.Reply(8, True, result={"name": "x"}))  # one nobody waits for: nothing
    assert len(errors) == 1
