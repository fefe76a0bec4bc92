"""The compute worker's long work and its watchdog, as an audit left them: a camera file of seconds and an uplink's
reference check answered no ping, so a short compute_watchdog_s restarted a healthy worker at work."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from flight.agent.compute import ComputeSupervisor
from flight.compute import protocol as cp
from flight.compute.usecase.shipped import MODEL_NAME, load_held_out
from flight.link.definitions import DICTIONARY, Admission, ComputeState, JobKind
from ground.model_package import pack_full
from tests.model_helpers import ALICE, ALICE_KEY, REF_X, WorkerBench, tiny, trusted_file
from tests.test_opening import _Faults, _MovingClock
from tests.test_worker_hardening import admit, npy, put_incoming

WAIT_S = 60.0  # a bound on the waits below, never an assertion: a loaded machine starts a worker slowly


def _until(done, sup: ComputeSupervisor, what: str) -> None:
    """Take the worker's messages, as the agent's loop does, until ``done()``."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"not {what} in {WAIT_S:.0f} s"
        sup.receive()
        time.sleep(0.002)


class _Root:
    """What put_incoming needs of a bench: its compute directory."""

    def __init__(self, root: Path):
        self.root = root


def _bytes_read(pid: int) -> int:
    """The bytes a process has read by read() so far (/proc/PID/io's rchar)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


@pytest.mark.system  # a worker process
@pytest.mark.req("CMP-012")
def test_a_worker_screening_a_large_camera_file_answers_each_ping_within_it_and_is_not_called_hung(tmp_path):
    """Found in audit: one camera file is seconds of work (256 MiB, the largest taken: 6.7 s here) and the worker
    answered no ping until it was done, so a compute_watchdog_s shorter than that (2 s is allowed) killed and
    restarted a healthy worker, a fault each time, and the file was screened from the start again. Long by its
    size: each tick of the agent's clock is a whole watchdog period, and each ping sent once the file has been
    read must be answered while the file is still being screened."""
    said, faults, clock = [], _Faults(), _MovingClock()
    params = {**DICTIONARY.parameter_defaults, "compute_watchdog_s": 2.0}
    root = tmp_path / "compute"
    sup = ComputeSupervisor(root, True, lambda name, **args: said.append(name), faults, clock, params, lambda: 1,
                            lambda where, exc: None)
    scene = root / "incoming" / "scene.npy"
    try:
        sup.start()
        _until(lambda: sup.state is ComputeState.RUNNING, sup, "started")
        sup.admit(Admission.ALL, 2, 3, None, "test")
        spec = cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True)
        queued = sup._request(cp.StartJob(next(sup._req_ids), spec), lambda reply: {})  # noqa: SLF001
        _until(lambda: queued.settled, sup, "queued")
        data = npy(np.resize(load_held_out().tiles.astype(np.float32), (8192, 4, 16, 16)))  # 32 MiB: ~1 s here
        read_before = _bytes_read(sup.proc.pid)
        put_incoming(_Root(root), "scene.npy", data)
        _until(lambda: _bytes_read(sup.proc.pid) - read_before >= len(data), sup, "read")  # its screening began
        answered_within = 0
        while scene.exists():
            clock.t += params["compute_watchdog_s"]  # a whole watchdog period of the agent's time each tick
            sup.admit(Admission.ALL, 2, 3, None, "test")  # the watchdog's look, then a ping
            _until(lambda: sup._waiting is None or not scene.exists(), sup, "answered")  # noqa: SLF001
            answered_within += scene.exists()
        assert answered_within >= 1  # answered while the file was screened, not once it was done
        assert "COMPUTE_HUNG" not in said and not faults.recorded and sup.restarts == 0
        assert (root / "products" / "job00001-scene.npz").is_file()
        assert (root / "incoming" / "done" / "scene.npy").is_file()
    finally:
        sup.close()


@pytest.mark.req("CMP-012", "MDL-002")
def test_an_install_answers_pings_while_it_runs_its_reference_inputs(tmp_path, monkeypatch):
    """Found in audit: after the session's open (which answers pings on its own), MODEL_INSTALL ran the uplink's
    reference inputs answering none (a set of 2 million rows: 8.5 s here), past a short compute_watchdog_s. A ping
    that comes once the session is open is answered within the runs, before the install's reply."""
    bench = WorkerBench(tmp_path / "compute", trusted_file(tmp_path, (ALICE, ALICE_KEY)))
    try:
        admit(bench)
        manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
        opened_by_worker = bench.worker._open_session

        def open_then_ping(*args, **kwargs):
            opened = opened_by_worker(*args, **kwargs)
            bench.router.send_multipart([b"compute", cp.encode(cp.Ping(71))])  # after the open: for the runs
            time.sleep(0.05)  # inproc delivery before the runs start; the assertion below waits for nothing
            return opened

        monkeypatch.setattr(bench.worker, "_open_session", open_then_ping)
        bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        reply = bench.install("1", manifest.sha256)
        assert reply.ok, reply.reason
        said = [m for m in bench.drain() if isinstance(m, (cp.Pong, cp.Reply))]
        assert said == [cp.Pong(71), reply]  # within the work, not after it: the loop never ran here
    finally:
        bench.close()
