"""A training job as the worker runs it, from TRAIN_START to its trained model: what the command is refused for,
and what the trained model's summary says it was trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flight.compute import protocol as cp
from flight.compute.training_job import TrainingPlan, job_identity
from flight.link.definitions import JobKind
from flight.link.dictionary import FailureCode
from ground.receipts import read_product
from tests.model_helpers import WorkerBench
from tests.test_worker_hardening import admit, run_until, start, toy_set


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    yield b
    b.close()


@pytest.mark.req("CMP-015")
@pytest.mark.req("RAD-109")
def test_classes_no_model_can_have_are_refused_at_train_start_naming_the_argument(bench):
    """Found in audit: classes=1, or a data set whose labels make 1 class or 5001 (classes=0), was queued and
    TRAIN_START completed; the job then failed at its start (for classes=1 saying its largest label "makes 1
    classes"); and classes=2 on labels all past it was queued to refuse every batch."""
    toy_set(bench)  # labels 0 to 2
    data = bench.root / "data"
    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    np.savez(data / "one.npz", x=x, y=np.zeros(32, np.int64))
    np.savez(data / "wide.npz", x=x, y=np.full(32, 5000))
    np.savez(data / "high.npz", x=x, y=np.full(32, 5))
    admit(bench)
    for job_id, name, classes, why in (
            (1, "toy", 1, "classes=1: a model has 2 to 1024 classes"),
            (2, "one", 0, "data set 'one': its largest label 0 makes 1 classes (classes=0), not 2 to 1024"),
            (3, "wide", 0, "data set 'wide': its largest label 5000 makes 5001 classes (classes=0), not 2 to 1024"),
            (4, "high", 2, "classes=2: no label of data set 'high' is below it (the smallest is 5)")):
        reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(job_id, JobKind.TRAINING, name, steps=10,
                                                                  batch_size=8, classes=classes)))
        assert not reply.ok and reply.code == FailureCode.BAD_ARGUMENTS and why in reply.reason, reply
        assert bench.worker.jobs.get(job_id) is None
    start(bench, cp.JobSpec(5, JobKind.TRAINING, "toy", steps=10, batch_size=8, classes=3))  # one it can have
    # A set that changes after TRAIN_START so fails its job at its start, with the same reason
    np.savez(data / "changes.npz", x=x, y=np.arange(32) % 2)
    start(bench, cp.JobSpec(6, JobKind.TRAINING, "changes", steps=10, batch_size=8, classes=0, priority=0))
    np.savez(data / "changes.npz", x=x, y=np.full(32, 5000))
    job = bench.worker.jobs[6]
    run_until(bench, lambda: job.state.value == "FAILED")
    assert "data set 'changes': its largest label 5000 makes 5001 classes (classes=0), not 2 to 1024" in job.detail
    run_until(bench, lambda: bench.worker.jobs[5].state.value == "DONE")


@pytest.mark.req("RAD-109")
def test_a_trained_models_summary_names_the_data_and_settings_it_was_trained_on(bench):
    """Found in audit: the summary named the data set alone; a set replaced under its name between two restarts
    (its checkpoint refused, the job trained again from step 0 on the new data) made a model whose summary read
    as the first one's. It now gives the job's identity as its checkpoints keep it: the SHA-256 of the data as
    trained on, the plan, the learning rate and the layers; the ground still vouches for it."""
    toy_set(bench)
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.TRAINING, "toy", steps=30, batch_size=16, checkpoint_every=10, lr=0.002))
    run_until(bench, lambda: bench.worker.jobs[1].state.value == "DONE")
    with np.load(bench.root / "data" / "toy.npz") as data:
        x, y = data["x"], data["y"]
    summary_path = bench.root / "products" / "job00001-toy-trained.json"
    summary = json.loads(summary_path.read_text())
    assert summary["job"] == job_identity(x.astype(np.float32), y.astype(np.int64), TrainingPlan(30, 16, 10, seed=1),
                                          {"data_set": "toy", "lr": 0.002, "layers": [128, 3]})
    toy_set(bench, seed=1)  # another set under the same name: another digest
    start(bench, cp.JobSpec(2, JobKind.TRAINING, "toy", steps=30, batch_size=16, checkpoint_every=10, lr=0.002))
    run_until(bench, lambda: bench.worker.jobs[2].state.value == "DONE")
    other = json.loads((bench.root / "products" / "job00002-toy-trained.json").read_text())
    assert other["source"] == summary["source"] and other["job"]["data_sha256"] != summary["job"]["data_sha256"]
    receipt = read_product(summary_path)
    assert receipt.vouched and receipt.steps == 30, receipt.verdict()
