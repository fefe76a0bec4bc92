"""Training jobs resume exactly; the compute worker runs real jobs for a real agent, and survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flight.compute.checkpoint import load_checkpoint
from flight.hal.sim_protocol import EpsValues
from flight.compute.training import Adam, Dense, MlpSpec, Sgd, Trainer
from flight.compute.training_job import TrainingJob, TrainingPlan
from flight.compute.usecase.shipped import load_held_out
from flight.link.dictionary import FailureCode
from flight.link.messages import EventRecord, HkRecord, Stage
from flight.storage import CorruptFile, read_checked_json

SPEC = MlpSpec(12, (Dense(16, "tanh"), Dense(3)))


def _data(n=96, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y


@pytest.mark.req("CMP-005")
@pytest.mark.parametrize("optimizer", [Sgd(0.05, momentum=0.9), Adam(0.01)], ids=["sgd", "adam"])
def test_paused_and_resumed_training_equals_a_straight_run(tmp_path, optimizer):
    x, y = _data()
    plan = TrainingPlan(total_steps=40, batch_size=16, checkpoint_every=7, seed=5)
    straight = TrainingJob(Trainer(SPEC, optimizer, 16, seed=1), x, y, plan, tmp_path / "a.ck")
    straight.run(1000)
    interrupted = TrainingJob(Trainer(SPEC, optimizer, 16, seed=1), x, y, plan, tmp_path / "b.ck")
    interrupted.run(17)  # past an epoch boundary (6 batches per epoch) and between checkpoints
    interrupted.pause("eclipse in 2 min")
    fresh = TrainingJob(Trainer(SPEC, optimizer, 16, seed=99), x, y, plan, tmp_path / "b.ck")  # other init: must not matter
    assert fresh.resume() and fresh.status.step == 17
    fresh.run(1000)
    a, b = straight.trainer.state_arrays(), fresh.trainer.state_arrays()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # bit for bit


def test_a_corrupt_checkpoint_is_refused_and_the_job_starts_over(tmp_path):
    x, y = _data()
    plan = TrainingPlan(total_steps=20, batch_size=16, checkpoint_every=5)
    job = TrainingJob(Trainer(SPEC, Sgd(0.1), 16), x, y, plan, tmp_path / "c.ck")
    job.run(10)
    raw = bytearray((tmp_path / "c.ck").read_bytes())
    raw[-10] ^= 0xFF
    (tmp_path / "c.ck").write_bytes(bytes(raw))
    with pytest.raises(CorruptFile, match="SHA-256"):
        load_checkpoint(tmp_path / "c.ck")
    events = []
    again = TrainingJob(Trainer(SPEC, Sgd(0.1), 16), x, y, plan, tmp_path / "c.ck", on_event=lambda *a, **k: events.append(k))
    assert again.resume() is False and events and (tmp_path / "c.ck.corrupt").exists()


def test_a_flip_in_a_checkpoints_header_is_refused_and_so_is_the_first_layout():
    """The header holds the step and the data position: a flip there must not resume a job at
    the wrong place. Every byte of a checkpoint is under its digest; files of the first
    layout (the payload's digest only) are refused, since a flip in their header would load."""
    import hashlib
    import io
    import struct

    from flight.compute.checkpoint import MAGIC_V1, Checkpoint, decode_checkpoint, encode_checkpoint

    ck = Checkpoint(1200, {"w": np.arange(6, dtype=np.float32)}, {"epoch": 3, "index": 64})
    raw = encode_checkpoint(ck)
    assert decode_checkpoint(raw).step == 1200
    header_at = raw.index(b'"step"')
    for where in range(12, len(raw), max(1, len(raw) // 97)):  # header, payload and the digest itself
        bad = bytearray(raw)
        bad[where] ^= 0x02
        with pytest.raises(CorruptFile, match="SHA-256|unreadable|magic"):
            decode_checkpoint(bytes(bad))
    bad = bytearray(raw)
    bad[header_at + 8] ^= 0x02  # "step": 1200 -> 1202, as the review found it loaded
    with pytest.raises(CorruptFile, match="SHA-256"):
        decode_checkpoint(bytes(bad))

    buf = io.BytesIO()
    np.savez(buf, **ck.arrays)
    payload = buf.getvalue()
    header = json.dumps({"step": 7, "meta": {}, "sha256": hashlib.sha256(payload).hexdigest(),
                         "payload_len": len(payload)}, sort_keys=True).encode()
    with pytest.raises(CorruptFile, match="first layout"):  # its header has no digest: a flipped step would load
        decode_checkpoint(MAGIC_V1 + struct.pack(">I", len(header)) + header + payload)


def hk_values(client, predicate, timeout_s=60.0):
    item = client.wait_for(lambda i: isinstance(i.record, HkRecord) and i.record.packet.name == "COMPUTE_HK"
                           and predicate(i.record.values), timeout_s)
    return item.record.values


def events(client, name):
    return [e for e in client.events if e.event.name == name]


def wait_event(client, name, predicate=lambda e: True, timeout_s=60.0):
    for e in events(client, name):
        if predicate(e):
            return e
    return client.wait_for(lambda i: isinstance(i.record, EventRecord) and i.record.event.name == name
                           and predicate(i.record), timeout_s).record


@pytest.fixture
def compute_agent(start_agent, make_client, ipc_url, tmp_path):
    state = tmp_path / "state"
    agent = start_agent(ipc_url, "--bench-supply", "--state-dir", str(state), "--hk-period", "0.5",
                        "--control-period", "0.5")
    client = make_client(ipc_url)
    assert client.send("SET_MODE", {"mode": "IDLE"}).completed
    assert client.send("SET_MODE", {"mode": "COMPUTE"}).completed
    hk_values(client, lambda v: v["compute_state"] == "RUNNING")
    return agent, client, state


@pytest.mark.req("CMP-004")
def test_inference_job_screens_the_shipped_tiles_into_a_product(compute_agent):
    _agent, client, state = compute_agent
    result = client.send("INFER_START", {"input_set": "cloud_tiles_test", "priority": 1})
    job_id = result.result["job_id"]
    done = wait_event(client, "JOB_DONE", lambda e: e.args["job_id"] == job_id)
    assert "800 tiles" in done.args["summary"]
    values = hk_values(client, lambda v: v["infer_count"] >= 800)
    assert values["infer_cloudy"] + values["infer_clear"] == 800 and values["compute_provider"] == "CPUExecutionProvider"
    product = next((state / "compute" / "products").glob(f"job{job_id:05d}-*.npz"))
    classes = np.load(product)["classes"]
    assert classes.dtype == np.int16  # two bytes a tile on the link, not numpy's default eight
    truth = load_held_out().labels
    accuracy = float((classes == truth).mean())
    assert accuracy > 0.9  # the model card states 0.919 on this held-out set
    summary = json.loads(product.with_suffix(".json").read_text())
    assert summary["tiles"] == 800 and sum(summary["classes"].values()) == 800


@pytest.mark.req("CMP-005", "CMP-012")
def test_kill_9_of_the_worker_loses_at_most_the_steps_since_the_last_checkpoint(compute_agent):
    _agent, client, state = compute_agent
    pid = hk_values(client, lambda v: v["compute_pid"] > 0)["compute_pid"]
    result = client.send("TRAIN_START", {"dataset": "cloud_tiles_test", "steps": 100000, "batch_size": 32,
                                         "checkpoint_every": 25})
    job_id = result.result["job_id"]
    seen = hk_values(client, lambda v: v["job_kind"] == "TRAINING" and (v["train_step"] or 0) >= 120)["train_step"]
    os.kill(pid, signal.SIGKILL)
    hung = wait_event(client, "COMPUTE_HUNG")
    assert hung.args["age_s"] >= 0
    resumed = wait_event(client, "JOB_RESUMED", lambda e: e.args["job_id"] == job_id and "from step" in e.args["name"])
    from_step = int(resumed.args["name"].rsplit(" ", 1)[1])
    assert from_step % 25 == 0 and from_step >= seen - 25
    ck = load_checkpoint(state / "compute" / "checkpoints" / f"job{job_id:05d}.ck")  # it always loads
    assert ck.step >= from_step
    after = hk_values(client, lambda v: (v["train_step"] or 0) > from_step and v["compute_restarts"] == 1)
    assert after["compute_state"] == "RUNNING"
    assert client.send("JOB_CANCEL", {"job_id": job_id}).completed
    wait_event(client, "JOB_CANCELLED", lambda e: e.args["job_id"] == job_id)
    assert not (state / "compute" / "checkpoints" / f"job{job_id:05d}.ck").exists()  # over: nothing to resume


@pytest.mark.req("FIL-007", "CMP-005")
def test_file_delete_refuses_what_a_job_still_to_run_needs_and_takes_it_once_the_job_has_ended(compute_agent):
    """Found in audit: FILE_DELETE took a running training job's checkpoint, so the job could no longer resume
    (a worker restart began it again from step 0; a delete racing its atomic write left things as they fell).
    The worker says which files its jobs still to run need (its status, each second); FILE_DELETE refuses
    them (BUSY), naming the file and the job, until the job has ended."""
    _agent, client, state = compute_agent
    x, y = _data()
    data = state / "compute" / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.savez(data / "mine.npz", x=x, y=y)
    job_id = client.send("TRAIN_START", {"dataset": "mine", "steps": 10_000_000, "batch_size": 16,
                                         "checkpoint_every": 5}).result["job_id"]
    hk_values(client, lambda v: v["job_id"] == job_id and (v["train_step"] or 0) >= 10)
    checkpoint = f"checkpoints/job{job_id:05d}.ck"
    assert (state / "compute" / checkpoint).exists()
    for name, whose in ((checkpoint, f"the checkpoint of training job {job_id}"),
                        ("data/mine.npz", f"the data set of training job {job_id}")):
        refused = client.send("FILE_DELETE", {"name": name})
        assert refused.failure.code is FailureCode.BUSY, refused.outcome
        assert name in refused.outcome and whose in refused.outcome, refused.outcome
        assert (state / "compute" / name).exists()
    assert client.send("JOB_CANCEL", {"job_id": job_id}).completed
    wait_event(client, "JOB_CANCELLED", lambda e: e.args["job_id"] == job_id)
    hk_values(client, lambda v: v["job_id"] == 0 and v["jobs_queued"] == 0)  # a status from after its end
    assert not (state / "compute" / checkpoint).exists()  # the worker's own, as a job ends
    assert client.send("FILE_DELETE", {"name": "data/mine.npz"}).completed
    assert not (data / "mine.npz").exists()


def test_training_pauses_on_low_charge_and_resumes_after(start_agent, make_client, ipc_url, short_dir, tmp_path):
    from hil.sim_env import SimEnvironment

    sim = f"ipc://{short_dir}/sim"
    config = tmp_path / "agent.toml"
    config.write_text(f'[hal]\nbackend = "sim"\nlockstep = false\nsim_endpoint = "{sim}"\n'
                      f'[rates]\ncontrol_period_s = 0.3\nhk_period_s = 0.3\n[compute]\nenabled = true\n'
                      f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    env = SimEnvironment(sim)
    start_agent(ipc_url, "--config", str(config), "--state-dir", str(tmp_path / "state"))
    env.wait_for_agent()
    client = make_client(ipc_url, wait_for_agent=False)
    battery = {"soc_pct": 90.0, "bus_voltage_v": 8.2, "solar_power_w": 80.0}

    def until(predicate, timeout_s=60.0):
        """Feed the environment (real time: no simulated clock) until ``predicate()`` holds."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            env.step(None, temps_c={"tj-thermal": 50.0}, eps=EpsValues(**battery), board_power_w=12.0)
            client.poll(0.1)

    until(lambda: client.latest.get("compute_state", (None,))[0] == "RUNNING")
    assert client.send("SET_MODE", {"mode": "IDLE"}).completed
    assert client.send("SET_MODE", {"mode": "COMPUTE"}).completed
    job_id = client.send("TRAIN_START", {"dataset": "cloud_tiles_test", "steps": 1_000_000,
                                         "checkpoint_every": 1000}).result["job_id"]
    until(lambda: events(client, "JOB_STARTED"))
    # No TLE: the plan assumes an eclipse could start now; crossing it idle costs (12 + 5) W x 36 min
    # / 0.95 = 10.7 % of 100 Wh. From 55 % that leaves 44.3 %: above floor + margin (35 %), so
    # inference may run, below floor + margin + training reserve (50 %), so training may not.
    battery["soc_pct"] = 55.0
    until(lambda: events(client, "JOB_PAUSED"))
    paused = events(client, "JOB_PAUSED")[-1]
    assert paused.args["job_id"] == job_id and "training needs" in paused.args["reason"]
    until(lambda: client.latest["admission"][0] == "INFERENCE")  # and housekeeping shows why
    ck = load_checkpoint(tmp_path / "state" / "compute" / "checkpoints" / f"job{job_id:05d}.ck")
    assert ck.step == paused.args["step"]  # the pause wrote a checkpoint at the step it stopped
    battery["soc_pct"] = 90.0
    until(lambda: events(client, "JOB_RESUMED"))
    assert events(client, "JOB_RESUMED")[-1].args["job_id"] == job_id
    changes = [(e.args["old"], e.args["new"]) for e in events(client, "ADMISSION_CHANGED")]
    assert ("ALL", "INFERENCE") in changes and ("INFERENCE", "ALL") in changes
    env.close()


@pytest.mark.req("CMP-004")
def test_a_corrupted_model_is_refused_and_the_golden_copy_runs(compute_agent):
    _agent, client, state = compute_agent
    working = next((state / "compute" / "models").glob("cloud_screen@*.onnx"))
    raw = bytearray(working.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # one flipped bit, as a proton would leave it
    working.write_bytes(bytes(raw))
    job_id = client.send("INFER_START", {"input_set": "cloud_tiles_test"}).result["job_id"]
    golden = wait_event(client, "MODEL_GOLDEN_USED")
    assert golden.args["name"] == "cloud_screen" and "sha" in golden.args["reason"].lower()
    done = wait_event(client, "JOB_DONE", lambda e: e.args["job_id"] == job_id)
    assert "800 tiles" in done.args["summary"]


def test_continuous_inference_screens_files_as_they_arrive(compute_agent):
    _agent, client, state = compute_agent
    job_id = client.send("INFER_START", {"input_set": "incoming", "continuous": True}).result["job_id"]
    tiles = load_held_out().tiles[:50].astype(np.float32)
    incoming = state / "compute" / "incoming"
    np.save(incoming / ".pass-0417.npy.tmp.npy", tiles)  # written under a temporary name first...
    os.replace(incoming / ".pass-0417.npy.tmp.npy", incoming / "pass-0417.npy")  # ...then renamed in
    values = hk_values(client, lambda v: (v["infer_count"] or 0) >= 50)
    assert values["job_kind"] == "INFERENCE"
    deadline = time.monotonic() + 30
    while not list((state / "compute" / "products").glob(f"job{job_id:05d}-pass-0417.json")):
        assert time.monotonic() < deadline
        client.poll(0.2)
    summary = json.loads(next((state / "compute" / "products").glob(f"job{job_id:05d}-pass-0417.json")).read_text())
    assert summary["tiles"] == 50 and (incoming / "done" / "pass-0417.npy").exists()


@pytest.mark.req("FIL-009")
def test_a_product_of_the_longest_file_name_the_ground_may_upload_can_be_sent(compute_agent):
    """The product's name is the job's and the file's: from a 124-character name it once passed the
    128 characters a name's part may have, and could be neither sent nor deleted."""
    from flight.files.filestore import PART_CHARS, check_name

    _agent, client, state = compute_agent
    job_id = client.send("INFER_START", {"input_set": "incoming", "continuous": True}).result["job_id"]
    incoming = state / "compute" / "incoming"
    # Two of them, the same but for their last letter: cut alike, they would give one product (review).
    for stem in ("p" * (PART_CHARS - len(".npy")), "p" * (PART_CHARS - len(".npy") - 1) + "q"):
        check_name(f"incoming/{stem}.npy", None)  # what the ground may upload
        np.save(incoming / ".long.tmp.npy", load_held_out().tiles[:8].astype(np.float32))
        os.replace(incoming / ".long.tmp.npy", incoming / f"{stem}.npy")
    products = state / "compute" / "products"
    deadline = time.monotonic() + 30
    while len(list(products.glob(f"job{job_id:05d}-p*.json"))) < 2:
        assert time.monotonic() < deadline
        client.poll(0.2)
    made = sorted(p.name for p in products.glob(f"job{job_id:05d}-p*"))
    assert len(made) == 4 and all(check_name(f"products/{name}", None) for name in made), made
    assert made[0].startswith(f"job{job_id:05d}-ppp") and max(map(len, made)) == PART_CHARS, made


@pytest.mark.req("CMP-010")
def test_the_worker_never_outlives_its_agent(compute_agent):
    agent, client, _state = compute_agent
    pid = hk_values(client, lambda v: v["compute_pid"] > 0)["compute_pid"]
    agent.kill()  # kill -9: the agent cannot stop its worker itself
    deadline = time.monotonic() + 60  # a bound, not a measure: a loaded machine (8 test workers on 2 cores) is slow
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the compute worker outlived its agent"
        time.sleep(0.05)


@pytest.mark.req("CMP-001")
def test_commands_naming_what_does_not_exist_fail_with_a_reason(compute_agent):
    _agent, client, state = compute_agent
    (state / "compute" / "data").mkdir(exist_ok=True)
    np.savez(state / "compute" / "data" / "unlabelled.npz", x=np.zeros((4, 3), np.float32))

    def refusal(name, args):
        result = client.send(name, args)  # the client's bound (conftest's COMMAND_BOUND_S): the worker answers
        assert result.failure is not None and result.failure.stage is Stage.COMPLETED, result.outcome
        return result.failure

    no_set = refusal("INFER_START", {"input_set": "no_such_set"})
    assert no_set.code is FailureCode.BAD_ARGUMENTS and "no input set 'no_such_set'" in no_set.reason
    assert "cloud_tiles_test" in no_set.reason  # and what there is
    no_model = refusal("INFER_START", {"input_set": "cloud_tiles_test", "model": "nope"})
    assert "no model 'nope' in the store (installed: cloud_screen)" in no_model.reason
    no_labels = refusal("TRAIN_START", {"dataset": "unlabelled", "steps": 10})
    assert "has no labels to train on" in no_labels.reason
    no_job = refusal("JOB_CANCEL", {"job_id": 4242})
    assert no_job.code is FailureCode.BAD_ARGUMENTS and no_job.reason == "no job 4242 on this board"
    path_like = client.send("INFER_START", {"input_set": "../../etc/passwd"}).failure
    assert path_like.stage is Stage.COMPLETED and "names are letters, digits" in path_like.reason
    no_file = refusal("MODEL_INSTALL", {"name": "ghost", "version": "1", "sha256": "ab" * 32})
    assert "no uplinked file staging/ghost.onnx" in no_file.reason
    # What was refused left nothing behind: no job was queued.
    assert hk_values(client, lambda v: True)["jobs_queued"] == 0
    done = client.send("INFER_START", {"input_set": "cloud_tiles_test"})
    assert done.completed and done.result["runs_now"] is True
    ended = wait_event(client, "JOB_DONE", lambda e: e.args["job_id"] == done.result["job_id"])
    assert ended and refusal("JOB_CANCEL", {"job_id": done.result["job_id"]}).reason.endswith("has already ended (DONE)")


@pytest.mark.req("CMP-002")
def test_a_job_queued_where_it_cannot_run_says_why_and_what_to_do(start_agent, make_client, ipc_url, tmp_path):
    start_agent(ipc_url, "--state-dir", str(tmp_path / "pc"))  # a PC as the README starts it: no EPS
    client = make_client(ipc_url)
    hk_values(client, lambda v: v["compute_state"] == "RUNNING")
    queued = client.send("INFER_START", {"input_set": "cloud_tiles_test"})
    assert queued.completed and queued.result["runs_now"] is False
    assert "SET_MODE mode=IDLE, then mode=COMPUTE" in queued.result["waits_for"]
    waiting = wait_event(client, "JOB_WAITING", lambda e: e.args["job_id"] == queued.result["job_id"])
    assert "SET_MODE" in waiting.args["reason"]
    assert client.send("SET_MODE", {"mode": "IDLE"}).completed
    assert client.send("SET_MODE", {"mode": "COMPUTE"}).completed
    second = client.send("INFER_START", {"input_set": "cloud_tiles_test"})
    assert second.result["runs_now"] is False and "--bench-supply" in second.result["waits_for"]


@pytest.mark.req("CMP-003")
def test_the_queue_is_bounded_and_an_idle_worker_stays_idle(start_agent, make_client, ipc_url, tmp_path):
    from flight.compute.worker import MAX_ACTIVE_JOBS

    state = tmp_path / "state"
    start_agent(ipc_url, "--state-dir", str(state))  # SAFE: nothing may run
    client = make_client(ipc_url)
    pid = hk_values(client, lambda v: v["compute_state"] == "RUNNING" and v["compute_pid"])["compute_pid"]
    for _ in range(MAX_ACTIVE_JOBS):
        assert client.send("INFER_START", {"input_set": "cloud_tiles_test"}).completed
    full = client.send("INFER_START", {"input_set": "cloud_tiles_test"}).failure
    assert full.code is FailureCode.BUSY and f"the job queue is full ({MAX_ACTIVE_JOBS} jobs" in full.reason
    jobs = state / "compute" / "jobs.json"
    before = jobs.stat().st_mtime_ns
    cpu_before = _cpu_s(pid)
    hk_values(client, lambda v: v["jobs_queued"] == MAX_ACTIVE_JOBS)
    time.sleep(3.0)  # a few status periods of a worker with a full queue and nothing admitted
    assert jobs.stat().st_mtime_ns == before  # never rewritten while idle
    # Generous: a busy loop would use ~3 s of CPU here; an idle worker a few hundredths.
    assert _cpu_s(pid) - cpu_before < 0.5


def _cpu_s(pid: int) -> float:
    """User and system CPU time of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.req("CMP-003")
def test_finished_jobs_are_pruned_and_leftovers_cleaned_by_the_worker(tmp_path):
    """The worker's own rules, on a Worker object with nobody at the other end of its socket."""
    from flight.compute import protocol as cp
    from flight.compute.worker import KEEP_FINISHED_JOBS, JobState, Worker
    from flight.link.definitions import JobKind

    root = tmp_path / "compute"
    (root / "products").mkdir(parents=True)
    (root / "products" / ".job00001-x.npz.a1b2c3d4.tmp").write_bytes(b"cut short")
    worker = Worker(f"ipc://{tmp_path}/nobody.sock", root)
    try:
        assert worker.removed_temp_files == 1 and not list(root.rglob("*.tmp"))
        worker.install_shipped_models()  # what run() does first
        for job_id in range(1, KEEP_FINISHED_JOBS + 11):
            worker._start_job(cp.StartJob(job_id, cp.JobSpec(job_id, JobKind.INFERENCE, "cloud_tiles_test")))
            worker._finish(worker.jobs[job_id], JobState.DONE, "done")
        worker._start_job(cp.StartJob(999, cp.JobSpec(999, JobKind.INFERENCE, "cloud_tiles_test")))
    finally:
        worker._sock.close(0)
    kept = read_checked_json(root / "jobs.json")
    finished = sorted(j["job_id"] for j in kept if j["state"] == "DONE")
    assert finished == list(range(11, KEEP_FINISHED_JOBS + 11))  # the newest, oldest forgotten first
    assert [j["job_id"] for j in kept if j["state"] == "QUEUED"] == [999]  # unfinished jobs are never pruned


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-003", "CMP-012")
def test_a_job_queued_by_a_worker_that_died_before_its_answer_came_completes_its_start_and_runs_once(tmp_path):
    """Found in audit: a worker that queued a job (jobs.json written) and died before its answer reached the agent
    had INFER_START failed, "send the command again", while the next worker ran the job from jobs.json: sent
    again, the same screening ran twice. The agent sends the start again to the next worker, which has the job
    already: the command completes, the job runs once. A start of another job under its id is still refused."""
    from dataclasses import replace

    import zmq

    from flight.agent.compute import ComputeState, ComputeSupervisor
    from flight.compute import protocol as cp
    from flight.compute.worker import Worker
    from flight.link.definitions import DICTIONARY, Admission, JobKind
    from tests.model_helpers import FixedClock, NoFaults

    said = []
    root = tmp_path / "compute"
    sup = ComputeSupervisor(root, True, lambda event, **args: said.append((event, args.get("job_id"))), NoFaults(),
                            FixedClock(), {**DICTIONARY.parameter_defaults, "compute_watchdog_s": 30.0}, lambda: 1,
                            lambda where, exc: None)

    def until(done, what: str) -> None:
        deadline = time.monotonic() + 60.0  # a bound on the wait, never an assertion on its time
        while not done():
            assert time.monotonic() < deadline, f"not {what} in 60 s"
            sup.receive()  # a turn of the agent's loop
            time.sleep(0.002)

    try:
        sup.start()
        until(lambda: sup.state is ComputeState.RUNNING, "started")
        first = sup.proc
        started = sup._new_job({"model": "cloud_screen", "priority": 1, "continuous": False},  # noqa: SLF001
                               JobKind.INFERENCE, "cloud_tiles_test")
        deadline = time.monotonic() + 60.0
        while not any(j["job_id"] == 1 for j in _jobs_on_disk(root)):  # queued; its answer not read
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.002)
        first.kill()
        first.wait()
        sup._watchdog()  # noqa: SLF001 - the control tick finds it dead and starts another
        assert started.outcome is None  # not failed: sent again to the next worker
        until(lambda: sup.state is ComputeState.RUNNING and sup.proc is not first, "started again")
        sup.admit(Admission.ALL, 2, 3, None, "test")
        until(lambda: started.settled, "answered")
        assert started.outcome[0] and started.outcome[1]["job_id"] == 1
        until(lambda: ("JOB_DONE", 1) in said, "done")
    finally:
        sup.close()
    assert said.count(("JOB_QUEUED", 1)) <= 1 and said.count(("JOB_DONE", 1)) == 1  # (the first may die unsaid)
    assert [j["job_id"] for j in _jobs_on_disk(root)] == [1]
    assert len(list((root / "products").glob("job00001-*.npz"))) == 1

    agent = zmq.Context.instance().socket(zmq.ROUTER)  # the worker's rule on its own, its answers read here
    agent.linger = 0
    agent.bind(f"ipc://{tmp_path}/agent.sock")
    worker = Worker(f"ipc://{tmp_path}/agent.sock", root)
    try:
        spec = cp.JobSpec(1, JobKind.INFERENCE, "cloud_tiles_test", priority=1)
        worker._start_job(cp.StartJob(7, spec))  # noqa: SLF001 - the same start once more: as queued, nothing new
        worker._start_job(cp.StartJob(8, replace(spec, name="other")))  # noqa: SLF001 - another under its id
        replies = []
        while len(replies) < 2 and agent.poll(10_000):
            replies += [m for m in [cp.decode(agent.recv_multipart()[-1])] if isinstance(m, cp.Reply)]
    finally:
        worker._sock.close(0)
        agent.close(0)
    assert [(r.req_id, r.ok) for r in replies] == [(7, True), (8, False)] and "exists already" in replies[1].reason
    assert [j["job_id"] for j in _jobs_on_disk(root)] == [1]


def _jobs_on_disk(root: Path) -> list[dict]:
    try:
        return read_checked_json(root / "jobs.json")
    except (FileNotFoundError, CorruptFile):  # not written yet
        return []


@pytest.mark.req("FIL-007")
def test_the_worker_says_the_files_its_jobs_still_to_run_need(tmp_path):
    """A training job's checkpoint and the data set a job reads, named as FILE_DELETE names them, while the job
    is still to run (queued, running, paused); neither once it has ended; a continuous job's inputs are its own."""
    from flight.compute import protocol as cp
    from flight.compute.worker import JobState, Worker
    from flight.link.definitions import JobKind

    root = tmp_path / "compute"
    worker = Worker(f"ipc://{tmp_path}/nobody.sock", root)
    try:
        worker.install_shipped_models()
        worker._start_job(cp.StartJob(1, cp.JobSpec(1, JobKind.TRAINING, "cloud_tiles_test", steps=10)))
        worker._start_job(cp.StartJob(2, cp.JobSpec(2, JobKind.INFERENCE, "cloud_tiles_test")))
        worker._start_job(cp.StartJob(3, cp.JobSpec(3, JobKind.INFERENCE, "camera", continuous=True)))
        worker.jobs[1].state = JobState.PAUSED  # as a lost admission leaves it
        assert worker.status().files_in_use == {"checkpoints/job00001.ck": "the checkpoint of training job 1 (paused)",
                                                "data/cloud_tiles_test.npz": "the data set of training job 1 (paused)"}
        worker._finish(worker.jobs[1], JobState.CANCELLED, "cancelled")
        assert worker.status().files_in_use == {"data/cloud_tiles_test.npz": "the data set of inference job 2 (queued)"}
        worker._finish(worker.jobs[2], JobState.DONE, "done")
        assert worker.status().files_in_use == {}
    finally:
        worker._sock.close(0)


@pytest.mark.req("FIL-007")
def test_the_agent_keeps_what_the_worker_said_its_jobs_need_through_its_restart(tmp_path):
    """The jobs stay in the worker's list through its death: what it said they need holds until the next worker
    says otherwise. Before any worker of this run has said, a checkpoint is taken for one a job needs (the worker
    deletes the others at its start); a data set is not (a worker that cannot start must not keep the disk full)."""
    import subprocess
    import sys

    from flight.compute import protocol as cp
    from tests.model_helpers import supervisor

    sup = supervisor(tmp_path / "compute", {"compute_watchdog_s": 30.0})
    try:
        assert "has not said yet" in sup.file_in_use("checkpoints/job00004.ck")
        assert sup.file_in_use("data/mine.npz") is None and sup.file_in_use("products/a.npz") is None
        sup._take(cp.Status(files_in_use={"data/mine.npz": "the data set of training job 4 (running)"}))  # noqa: SLF001
        assert sup.file_in_use("data/mine.npz") == "the data set of training job 4 (running)"
        assert sup.file_in_use("checkpoints/job00004.ck") is None  # as said: none written yet
        sup.proc = subprocess.Popen([sys.executable, "-c", "pass"])  # a worker that has died
        sup.proc.wait()
        sup._watchdog()  # noqa: SLF001 - found dead, another started
        assert sup.telemetry()["compute_restarts"] == 1
        assert sup.file_in_use("data/mine.npz") == "the data set of training job 4 (running)"
        sup._take(cp.Status())  # noqa: SLF001 - the new worker: the job has ended
        assert sup.file_in_use("data/mine.npz") is None
    finally:
        sup.close()


@pytest.mark.req("FIL-007")
def test_a_jobs_files_are_refused_from_its_start_not_from_the_next_status(tmp_path):
    """Found in review: between a job's start (TRAIN_START completed) and the worker's next status (up to a
    second), FILE_DELETE took its data set. The supervisor takes the job's files as its start is answered; the
    next status says them again, or that the job has ended."""
    from flight.compute import protocol as cp
    from flight.link.definitions import JobKind
    from tests.model_helpers import supervisor

    sup = supervisor(tmp_path / "compute", {"compute_watchdog_s": 30.0})
    try:
        sup._take(cp.Status())  # noqa: SLF001 - a worker said: no job
        assert sup.file_in_use("data/mine.npz") is None and sup.file_in_use("checkpoints/job00001.ck") is None
        started = sup._new_job({"steps": 10}, JobKind.TRAINING, "mine")  # noqa: SLF001 - held: no worker yet
        continuous = sup._new_job({"continuous": True}, JobKind.INFERENCE, "incoming")  # noqa: SLF001
        assert sup.file_in_use("data/mine.npz") is None  # not started yet: the worker may refuse it
        [train_req, infer_req] = list(sup._requests)  # noqa: SLF001
        sup._take(cp.Reply(train_req, True, result={"queued": 1}))  # noqa: SLF001
        sup._take(cp.Reply(infer_req, True, result={"queued": 2}))  # noqa: SLF001
        assert started.outcome[0] and continuous.outcome[0]
        assert sup.file_in_use("data/mine.npz") == "the data set of training job 1 (queued)"
        assert sup.file_in_use("checkpoints/job00001.ck") == "the checkpoint of training job 1 (queued)"
        assert sup.file_in_use("data/incoming.npz") is None  # a continuous job's inputs are its own
        sup._take(cp.Status())  # noqa: SLF001 - the next status: the job has ended already
        assert sup.file_in_use("data/mine.npz") is None
    finally:
        sup.close()


@pytest.mark.req("CMP-005")
def test_a_label_past_the_classes_is_a_refused_sample_never_a_wider_model(compute_agent):
    """Found in an audit: the model's outputs were the data's largest label plus one, so one label of 7 in a
    two-class set trained a model of 8 outputs, with no step refused, and the ground vouched for it (a label
    of 100000 grew the worker to 950 MB). Given (TRAIN_START classes), the classes are the command's and a
    sample labelled past them is refused as a bad one, JOB_DONE counting the steps refused; not given, the
    data's largest label plus one, at most 1024: past it TRAIN_START is refused, naming the label and the
    argument (found in a later audit: it was queued, completed, and the job failed when it started)."""
    import onnx

    _agent, client, state = compute_agent
    rng = np.random.default_rng(5)
    x = rng.normal(size=(160, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    y[3] = 7
    (state / "compute" / "data").mkdir(exist_ok=True)
    np.savez(state / "compute" / "data" / "badlabel.npz", x=x, y=y)
    refusing = []
    for classes, outputs in ((2, 2), (2, 2), (None, 8)):
        args = {"dataset": "badlabel", "steps": 120, "batch_size": 8, **({"classes": classes} if classes else {})}
        job_id = client.send("TRAIN_START", args).result["job_id"]
        done = wait_event(client, "JOB_DONE", lambda e, j=job_id: e.args["job_id"] == j)
        model = onnx.load(state / "compute" / "products" / f"job{job_id:05d}-badlabel-trained.onnx")
        assert model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value == outputs
        summary = json.loads((state / "compute" / "products" / f"job{job_id:05d}-badlabel-trained.json").read_text())
        if classes == 2:  # label 7 of 2 classes: every batch holding sample 3 refused, and said
            assert summary["steps_refused"] >= 1 and f"{summary['steps_refused']} steps refused" in done.args["summary"]
            refusing.append(job_id)
        else:
            assert summary["steps_refused"] == 0 and "refused" not in done.args["summary"]
    # Each job says its own refusals, however soon after another's (the events were one per 10 s per worker)
    assert {e.args["job_id"] for e in events(client, "TRAIN_STEP_REFUSED")} >= set(refusing)
    y[3] = 100_000
    np.savez(state / "compute" / "data" / "huge.npz", x=x, y=y)
    refused = client.send("TRAIN_START", {"dataset": "huge", "steps": 10}).failure  # the client's bound, 30 s
    assert refused is not None and refused.code is FailureCode.BAD_ARGUMENTS, refused
    assert "largest label 100000 makes 100001 classes (classes=0), not 2 to 1024: give TRAIN_START classes=N" \
        in refused.reason


@pytest.mark.req("CMP-010")
@pytest.mark.req("FIL-009")
def test_the_workers_log_is_rotated_at_a_start_past_its_bound_and_can_be_sent_down(start_agent, make_client,
                                                                                   ipc_url, tmp_path):
    """Found in an audit: worker.log was appended to at every worker start and never trimmed. Found in a
    later one: it sat at the compute directory's top, where FILE_DOWNLINK refused it, and logs/ (the top
    the files area sends logs from) stayed empty. An older agent's logs at the top are kept in logs/ as
    rotated ones; the live log goes on command."""
    state = tmp_path / "state"
    (state / "compute").mkdir(parents=True)
    (state / "compute" / "worker.log").write_bytes(b"an older agent's worker said this\n")
    (state / "compute" / "worker.log.1").write_bytes(b"and this before\n")
    start_agent(ipc_url, "--bench-supply", "--state-dir", str(state))
    client = make_client(ipc_url)
    hk_values(client, lambda v: v["compute_pid"] > 0)
    logs = state / "compute" / "logs"
    rotated = sorted(logs.glob("worker-*.log"))
    assert {p.read_bytes() for p in rotated} == {b"an older agent's worker said this\n", b"and this before\n"}
    assert (logs / "worker.log").exists() and not list((state / "compute").glob("worker.log*"))
    for name in ("logs/worker.log", f"logs/{rotated[0].name}"):
        sent = client.send("FILE_DOWNLINK", {"name": name})
        assert sent.completed, sent


def _worker_says(sup, data: bytes) -> None:
    """``data`` as the worker writes it (its stdout: the supervisor's pipe), taken as the agent's loop does."""
    for at in range(0, len(data), 65536):  # a piece at a time: within the pipe, never blocking this test
        os.write(sup._out_w, data[at:at + 65536])  # noqa: SLF001 - the write end the worker is given
        sup.receive()


@pytest.mark.req("CMP-010", "FIL-009")
def test_a_running_workers_log_is_bounded_and_its_rotated_copies_go_down_by_themselves(short_dir):
    """Found in review: the log was rotated only at a worker's start, so a worker running for weeks grew it
    without end, and the automatic downlink sent the live log once, with its first lines, and never again.
    A running worker's log is renamed past its bound and started again, the newest WORKER_LOGS_KEPT kept;
    each rotated one is a new name, sent once by itself; the live one is not."""
    from flight.agent.compute import WORKER_LOG, WORKER_LOG_MAX_BYTES, WORKER_LOGS_KEPT
    from tests.inproc import InProcessAgent

    with InProcessAgent(short_dir / "state", compute_enabled=True, start=False) as rig:
        sup = rig.agent.compute
        live = sup.root / WORKER_LOG
        for i in range(WORKER_LOGS_KEPT + 2):
            _worker_says(sup, f"line {i}\n".encode() + b"x" * WORKER_LOG_MAX_BYTES)
            os.utime(live, (1_800_000_000 + i, 1_800_000_000 + i))
            sup._log_looked_s = -1e9  # noqa: SLF001 - the minute's look is due
            sup._heartbeat()  # noqa: SLF001
            assert live.stat().st_size == 0  # started again, there for FILE_DOWNLINK; the next line goes at its start
        _worker_says(sup, b"after\n")
        assert live.read_bytes() == b"after\n"
        rotated = sorted(live.parent.glob("worker-*.log"))
        assert len(rotated) == WORKER_LOGS_KEPT and rotated[-1].read_bytes().startswith(b"line 3\n")
        files = rig.agent.files
        queued = []
        files.entity.put = lambda source, *a, **k: queued.append(source)
        assert rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
        files._auto_downlink()  # noqa: SLF001
        assert sorted(queued) == [f"logs/{p.name}" for p in rotated]  # the copies, not the live log


@pytest.mark.req("CMP-010")
def test_no_line_a_running_worker_writes_is_lost_as_its_log_is_rotated(short_dir, monkeypatch):
    """Found in audit: a running worker's log was copied, then cut to nothing, while the worker appended to
    it: what it wrote between the copy and the cut was lost (thousands of 300 000 lines over 80 rotations).
    A real process in the worker's place writes numbered lines as fast as it can while its log is rotated
    at every turn: each line is kept, once, in order."""
    import flight.agent.compute as compute
    from tests.inproc import InProcessAgent

    monkeypatch.setattr(compute, "WORKER_LOG_MAX_BYTES", 20_000)
    monkeypatch.setattr(compute, "WORKER_LOGS_KEPT", 1_000_000)  # every rotated one kept, to read its lines
    lines = 200_000
    with InProcessAgent(short_dir / "state", compute_enabled=True, start=False) as rig:
        sup = rig.agent.compute
        sup._worker_argv = lambda: [sys.executable, "-c", f"for i in range({lines}): print(i, flush=True)"]
        sup.start()  # the worker's output and log as for the real one
        while sup.proc.poll() is None:
            sup.receive()  # a turn of the agent's loop
            sup._rotate_log()  # noqa: SLF001 - the minute's look, at every turn
        logs = sup.root / compute.WORKER_LOG
    # The agent closed: what was still on the way is in the log.
    rotated = sorted(logs.parent.glob("worker-*.log"))
    assert len(rotated) >= 2  # rotated under it more than once (how often rides on the machine's timing)
    said = [int(word) for path in (*rotated, logs) for word in path.read_text().split()]
    assert said == list(range(lines))


@pytest.mark.req("CMP-010")
def test_a_stopping_worker_that_says_more_than_its_pipe_holds_finishes_its_stop(short_dir):
    """Found in review: at the agent's stop the worker's output was read only after it had gone, so a worker that
    wrote more than the pipe holds as it stopped waited on the pipe until it was killed, its stop work (a training
    checkpoint) unfinished. A real process in the worker's place writes 3 MiB at SIGTERM, then marks its stop done."""
    from flight.agent.compute import WORKER_LOG
    from tests.inproc import InProcessAgent

    ready, finished = short_dir / "ready", short_dir / "finished"
    child = ("import os, signal, sys, time\n"
             "def stop(*_):\n"
             "    os.write(2, b'x' * (3 * 1024 * 1024))\n"
             "    with open(sys.argv[2], 'w') as f:\n"
             "        f.write('done')\n"
             "    os._exit(0)\n"  # not sys.exit: raised in a finalizer the handler ran in, it was swallowed
             "signal.signal(signal.SIGTERM, stop)\n"
             "open(sys.argv[1], 'w').write('ready')\n"
             "while True:\n"
             "    time.sleep(1)\n")
    with InProcessAgent(short_dir / "state", compute_enabled=True, start=False) as rig:
        sup = rig.agent.compute
        sup._worker_argv = lambda: [sys.executable, "-c", child, str(ready), str(finished)]
        sup.start()
        while not ready.exists():
            assert sup.proc.poll() is None, "the stand-in worker died before it was ready"
            sup.receive()
        sup.close()
        assert sup.proc.returncode == 0 and finished.read_text() == "done"
        assert (sup.root / WORKER_LOG).stat().st_size >= 3 * 1024 * 1024


@pytest.mark.req("CMP-010")
def test_a_log_rotated_after_the_clock_went_back_is_kept_and_the_oldest_goes(tmp_path):
    """Found in audit: rotated logs were named by their time and the oldest name deleted, so a log written
    after a reset with the clock at 1970 was deleted as it was made. They go by the order they were made."""
    from flight.agent.compute import WORKER_LOG, WORKER_LOG_MAX_BYTES, WORKER_LOGS_KEPT
    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state") as rig:
        sup = rig.agent.compute
        live = sup.root / WORKER_LOG
        live.parent.mkdir(parents=True, exist_ok=True)
        older = live.parent / "worker-20261116T100000Z.log"  # a name of the earlier form: older than any new one
        older.write_bytes(b"before\n")
        for i, mtime in enumerate((1_800_000_000, 1_800_000_100, 100)):  # the last after a reset to 1970
            live.write_bytes(f"log {i}\n".encode() + b"x" * WORKER_LOG_MAX_BYTES)
            os.utime(live, (mtime, mtime))
            sup._log_looked_s = -1e9  # noqa: SLF001 - the minute's look is due
            sup._heartbeat()  # noqa: SLF001
        rotated = sorted(live.parent.glob("worker-*.log"))
        assert len(rotated) == WORKER_LOGS_KEPT and not older.exists()
        assert [p.read_bytes()[:6] for p in rotated][-2:] == [b"log 1\n", b"log 2\n"]
        assert rotated[-1].name.endswith("-19700101T000140Z.log")


@pytest.mark.req("CMP-004", "CMP-016")
@pytest.mark.parametrize("damage", ["model", "card"])
def test_a_shipped_model_changed_on_flash_is_not_made_the_golden_copy(tmp_path, monkeypatch, damage):
    """Found in audit: the shipped model was read as it was and installed as the golden copy (a weight flipped on
    flash then trusted for good), and a damaged card stopped the worker before its hello at every start. Now it
    is checked against its card's SHA-256: a mismatch is said and counted, nothing installed, the worker goes on."""
    import shutil

    from flight.compute import worker as worker_module
    from flight.compute.usecase.shipped import CARD_FILE, MODEL_FILE, MODELS_DIR
    from flight.compute.worker import Worker

    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    if damage == "model":
        data = bytearray((models / MODEL_FILE).read_bytes())
        data[-100] ^= 0x01  # one bit of a weight
        (models / MODEL_FILE).write_bytes(bytes(data))
    else:
        (models / CARD_FILE).write_text("{ cut short")
    monkeypatch.setattr(worker_module, "MODELS_DIR", models)
    worker = Worker(f"ipc://{tmp_path}/nobody.sock", tmp_path / "compute")
    try:
        worker.install_shipped_models()
        assert worker.compute_state_corrupt == 1
        assert worker.store.list() == []  # no golden copy made of it
    finally:
        worker._sock.close(0)


def test_a_resent_start_that_times_out_says_its_job_may_be_queued_yet(tmp_path):
    """Found in review: a start a worker took before it stopped, sent to the next worker which did not answer in
    time (a start-up backoff), failed as BUSY "did not answer", read as not done: sent again, with a new id, the job
    in the stopped worker's jobs.json ran twice. Its failure says the job may be queued yet, and how to see."""
    from flight.agent.compute import ComputeSupervisor
    from flight.compute import protocol as cp
    from flight.link.definitions import DICTIONARY, JobKind
    from tests.model_helpers import NoFaults

    class Clock:
        now = 0.0

        def monotonic_s(self):
            return self.now

        def now_s(self):
            return 1_794_830_400.0 + self.now

    clock = Clock()
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda *a, **k: None, NoFaults(), clock,
                            dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)
    try:
        started = sup._new_job({"model": "cloud_screen", "priority": 1, "continuous": False},  # noqa: SLF001
                               JobKind.INFERENCE, "cloud_tiles_test")
        other = sup._request(cp.StartJob(999, cp.JobSpec(99, JobKind.INFERENCE, "cloud_tiles_test")),  # noqa: SLF001
                             lambda reply: {})
        (req_id,) = [r for r in sup._starts]  # noqa: SLF001 - the one start made by the job command
        sup._resent.add(req_id)  # noqa: SLF001 - as the restart of the worker that took it does
        clock.now = 3600.0
        sup._expire_requests()  # noqa: SLF001
        assert started.settled and not started.outcome[0]
        reason = started.outcome[1]
        assert "did not answer within" in reason and "job 1 may be queued yet" in reason, reason
        assert other.settled and "may be queued" not in other.outcome[1]  # one never taken: not said
    finally:
        sup.close()
