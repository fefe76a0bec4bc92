"""The compute supervisor and worker against what an audit found them to mishandle: a worker that cannot even be
made, and what the worker is asked and sent that it took badly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
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


# A stand-in worker that says its hello and dies at once (as one killed for memory each time it resumes its job)
_HELLO_THEN_DIE = ("import os, sys, msgpack, zmq; s = zmq.Context.instance().socket(zmq.DEALER); "
                   "s.setsockopt(zmq.IDENTITY, b'compute'); s.linger = 5000; s.connect(sys.argv[1]); "
                   "s.send(msgpack.packb(['Hello', {'pid': os.getpid()}])); s.close(); "
                   "zmq.Context.instance().term(); sys.exit(1)")  # term: the hello sent before it goes


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-012")
def test_a_worker_that_dies_just_after_its_hello_is_started_again_later_and_later_not_at_every_tick(tmp_path):
    """Found in audit: a worker that said hello and died (killed for memory, or a crash in a provider, each time it
    resumed its job) was started again at every control tick, for good, a COMPUTE_HUNG and a fault each, since a
    hello reset the count of failed starts. Two such in a row now wait 10 s, then 20 s...; one that lived a minute
    past its hello starts the count again."""
    from flight.agent.compute import SHORT_LIFE_S

    said, faults, clock = [], _Faults(), _MovingClock()
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: said.append(name), faults, clock,
                            dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)
    sup._worker_argv = lambda: [sys.executable, "-c", _HELLO_THEN_DIE, sup.endpoint]  # noqa: SLF001

    def says_hello() -> None:
        while sup.state is not ComputeState.RUNNING:
            assert sup._sock.poll(60_000), "no hello"  # noqa: SLF001 - a bound: a Python start, slow on a loaded machine
            sup.receive()

    def lives_then_dies() -> subprocess.Popen:
        says_hello()
        sup.proc.wait(60)  # a bound: it exits once its hello is sent
        clock.t += 1.0
        dead = sup.proc
        sup._watchdog()  # noqa: SLF001 - the supervisor's tick
        return dead

    try:
        sup.start()
        first = lives_then_dies()
        assert sup.proc is not first and sup._start_at_s is None  # noqa: SLF001 - the first: again at once
        second = lives_then_dies()
        assert sup.proc is second and sup._start_at_s == clock.t + START_BACKOFF_S  # noqa: SLF001 - then later
        with pytest.raises(CommandFailed, match="died or hung within 60 s of its start, 2 times in a row; next try "
                                                "in 10 s") as refused:
            sup._request(cp.RollbackModel(1, MODEL_NAME), lambda reply: {})  # noqa: SLF001
        assert refused.value.code is FailureCode.BUSY
        for _ in range(int(START_BACKOFF_S) - 1):
            clock.t += 1.0
            sup.admit(Admission.ALL, 2, 3, None, "test")
        assert sup.proc is second and said.count("COMPUTE_HUNG") == 2 and len(faults.recorded) == 2
        clock.t += 1.0
        sup._watchdog()  # noqa: SLF001 - its wait is over
        third = lives_then_dies()
        assert sup.proc is third and sup._start_at_s == clock.t + 2 * START_BACKOFF_S  # noqa: SLF001
        # One that lives past SHORT_LIFE_S: the next death is tried again at once
        sup._worker_argv = lambda: [sys.executable, "-c", "import sys, time; exec(sys.argv[2]); time.sleep(60)",  # noqa: SLF001
                                    sup.endpoint, _HELLO_THEN_DIE.replace("sys.exit(1)", "pass")]
        clock.t += 2 * START_BACKOFF_S
        sup._watchdog()  # noqa: SLF001
        says_hello()
        clock.t += SHORT_LIFE_S
        sup._waiting = None  # noqa: SLF001 - it answered its pings meanwhile
        sup._watchdog()  # noqa: SLF001
        assert sup.short_lives == 0 and sup.proc.poll() is None
        sup._worker_argv = lambda: [sys.executable, "-c", _HELLO_THEN_DIE, sup.endpoint]  # noqa: SLF001
        lived = sup.proc
        lived.kill()  # the test's own child
        lived.wait(10)
        sup._watchdog()  # noqa: SLF001
        assert sup.proc is not lived and sup._start_at_s is None  # noqa: SLF001
    finally:
        sup.close()


_AGENT_AT_A_TERMINAL = """
import signal, sys
from pathlib import Path
from flight.agent.compute import WORKER_LOG, ComputeSupervisor
from flight.link.definitions import DICTIONARY


class Clock:
    def monotonic_s(self):
        return 0.0

    def now_s(self):
        return 1_794_830_400.0


class Faults:
    def record(self, what):
        pass


stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))  # as the agent's run(): Ctrl-C is a clean stop
sup = ComputeSupervisor(Path(sys.argv[1]), True, lambda name, **args: None, Faults(), Clock(),
                        dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)
sup.start()
while sup.state.value != "RUNNING":
    sup._sock.poll(200)
    sup.receive()
print("ready", flush=True)
while not stop:
    signal.pause()
sup.close()
print(sup.proc.returncode, "Traceback" in (Path(sys.argv[1]) / WORKER_LOG).read_text(), flush=True)
"""


@pytest.mark.system  # an agent's stand-in and its real worker
@pytest.mark.req("CMP-005")
def test_ctrl_c_at_the_agents_terminal_stops_the_worker_through_its_agent_not_with_a_traceback(tmp_path):
    """Found in audit: the worker was in the agent's process group, so a Ctrl-C at the terminal of ``sunlit-flight
    run`` (SIGINT to the group) reached it too: a KeyboardInterrupt, its traceback in logs/worker.log, and none of its
    stop work (a training job's checkpoint, its last status) done, while the agent stopped cleanly. The worker now has
    a session of its own, and stops when its agent tells it."""
    agent = subprocess.Popen([sys.executable, "-c", _AGENT_AT_A_TERMINAL, str(tmp_path / "compute")],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)  # a terminal's group of its own
    try:
        assert agent.stdout.readline().strip() == "ready"
        os.killpg(agent.pid, signal.SIGINT)  # the terminal's Ctrl-C, to the foreground process group
        out, _ = agent.communicate(timeout=60)
        assert agent.returncode == 0 and out.split() == ["0", "False"]  # stopped by its agent, no traceback
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


@pytest.mark.system  # a worker process
@pytest.mark.req("CMP-012")
def test_a_worker_whose_output_runs_away_has_its_log_rotated_as_it_grows_not_a_minute_later(tmp_path):
    """Found in audit: the log's size was looked at once a minute of agent time (and at a start), so a worker whose
    output ran away (a warning printed in a loop) grew logs/worker.log at the pipe's speed, 30 MiB in 2 s against a
    cap of 4 MiB, toward a full disk. Its size is now looked at after each quarter of the cap written too: the log
    stays near the cap, the newest lines in it."""
    from flight.agent.compute import LOG_LOOK_BYTES, OUTPUT_PER_TURN, WORKER_LOG_MAX_BYTES, WORKER_LOGS_KEPT

    sup = supervisor(tmp_path / "compute", dict(DICTIONARY.parameter_defaults))  # its clock stands still: no look
    lines = 3 * WORKER_LOG_MAX_BYTES // 64
    sup._worker_argv = lambda: [sys.executable, "-c", "import sys\n"  # noqa: SLF001 - 64 bytes a line, 12 MiB
                                f"for i in range({lines}): sys.stdout.write('W a warning printed by a loop gone wrong:"
                                " %020d\\n' % i)"]
    try:
        sup.start()
        while sup.proc.poll() is None:
            select.select([sup._out_r], [], [], 0.2)  # noqa: SLF001 - the agent's loop wakes on its output
            sup.receive()
        sup.receive()  # what it wrote last
        logs = tmp_path / "compute" / "logs"
        log = (logs / "worker.log").read_bytes()
        assert len(log) <= WORKER_LOG_MAX_BYTES + LOG_LOOK_BYTES + OUTPUT_PER_TURN
        assert log.endswith(b"wrong: %020d\n" % (lines - 1))  # the newest line, whole, where it belongs
        assert len(list(logs.glob("worker-*.log"))) == WORKER_LOGS_KEPT
    finally:
        sup.close()


@pytest.mark.req("CMP-012")
def test_a_message_only_the_agent_sends_is_said_and_the_workers_socket_bounds_a_message(tmp_path):
    """Found in audit: a record only the agent sends (Stop, Admit) arriving from a worker was dropped unsaid, where
    the worker says the same fault of its own; and the agent's socket to its workers took a frame of any size
    (256 MiB read whole). Now said as an internal error, and libzmq drops a message past the bound unread."""
    import time

    import zmq

    from flight.agent.compute import WORKER_MESSAGE_MAX_BYTES

    errors: list = []
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: None, _Faults(), _MovingClock(),
                            dict(DICTIONARY.parameter_defaults), lambda: 1,
                            lambda where, exc: errors.append((where, str(exc))))
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, b"compute")
    dealer.linger = 0
    dealer.connect(sup.endpoint)
    try:
        dealer.send(cp.encode(cp.Stop("from the wrong side")))
        for _ in range(500):
            sup.receive()
            if errors:
                break
            time.sleep(0.01)
        assert errors == [("compute message", "Stop is no message a worker sends")]
        assert sup._sock.getsockopt(zmq.MAXMSGSIZE) == WORKER_MESSAGE_MAX_BYTES  # noqa: SLF001
    finally:
        dealer.close()
        sup.close()
