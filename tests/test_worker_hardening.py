"""The compute worker under what a board meets besides radiation: an idle camera, bad files and data
sets, a disk that refuses a write, a model that is slow to open or whose weights cannot be owned; and
weights no check covers, whose faults only the scrub finds."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from onnx import TensorProto, helper

import flight.compute.worker as worker_module
from flight.compute import abft
from flight.compute import protocol as cp
from flight.compute.checks import PASSED, rows_agree
from flight.compute.graphs import subgraph_reads
from flight.compute.scrub import WeightScrubber
from flight.compute.store import Provenance
from flight.compute.training import Adam, Dense, MlpSpec, Trainer
from flight.compute.training_job import SAA_PASS_GAP_S, SAA_RETRY_S, TrainingJob, TrainingPlan
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, load_held_out
from flight.compute.worker import KEEP_REJECTED_FILES, MAX_INCOMING_BYTES, MODELS_DIR, BadInput, checked_tiles
from flight.files.filestore import check_name
from flight.link.definitions import Admission, FluxClass, JobKind
from flight.link.dictionary import FailureCode
from flight.storage import read_checked_json, write_checked_json
from bench.radiation import SimClock
from hil.loop import MAX_DRAWN_FAULTS_PER_STEP, drawn_faults
from hil.report import evaluate
from tests.model_helpers import ALICE, ALICE_KEY, WorkerBench, pack, protect_as_version_6, tiny, trusted_file
from tests.test_hil_scenario import constructed_run

TILES = load_held_out().tiles.astype(np.float32)


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    yield b
    b.close()


def admit(bench, admission=Admission.ALL, radiation=cp.NO_RADIATION, abft_checks=True, scrub=True):
    bench.worker._handle(cp.Admit(admission, 1, 8, 1.0, None, "test", radiation, 0.0, False, scrub,  # noqa: SLF001
                                  abft_checks, False))


def toy_set(bench, name="toy", n=256, seed=0):
    rng = np.random.default_rng(seed)
    (bench.root / "data").mkdir(parents=True, exist_ok=True)
    np.savez(bench.root / "data" / f"{name}.npz", x=rng.normal(size=(n, 12)).astype(np.float32),
             y=rng.integers(0, 3, n))


def training(bench, job_id: int = 1, **spec):
    """A training job on the data set "toy", admitted and run until it has taken a step; the job."""
    toy_set(bench)
    admit(bench)
    start(bench, cp.JobSpec(job_id, JobKind.TRAINING, "toy", steps=100_000, batch_size=16, **spec))
    run_until(bench, lambda: bench.worker.jobs[job_id].progress > 0)
    return bench.worker.jobs[job_id]


def start(bench, spec: cp.JobSpec) -> None:
    reply = bench.request(lambda r: cp.StartJob(r, spec))
    assert reply.ok, reply.reason


def run_until(bench, done, slices=400):
    for _ in range(slices):
        if done():
            return
        bench.worker.work_slice()
    assert done(), "not done in time"


def put_incoming(bench, name: str, data: bytes) -> None:
    incoming = bench.root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (incoming / f".{name}").write_bytes(data)
    (incoming / f".{name}").rename(incoming / name)  # appears whole, as the camera writes


def npy(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# --- scheduling -----------------------------------------------------------------------------


@pytest.mark.req("CMP-014")
def test_a_continuous_job_waiting_for_files_lets_training_run_and_training_goes_on_between_files(bench):
    bench.worker.install_shipped_models()
    toy_set(bench)
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True, priority=9))
    start(bench, cp.JobSpec(2, JobKind.TRAINING, "toy", steps=200, batch_size=16, priority=0))
    jobs = bench.worker.jobs
    run_until(bench, lambda: jobs[2].state.value == "DONE")  # found in review: QUEUED at step 0 forever
    assert jobs[1].state.value == "RUNNING" and jobs[2].progress == 200

    start(bench, cp.JobSpec(3, JobKind.TRAINING, "toy", steps=100_000, batch_size=16, checkpoint_every=100_000))
    run_until(bench, lambda: jobs[3].progress > 0)
    status = bench.worker.status()
    assert (status.job_id, status.job_kind) == (3, JobKind.TRAINING)  # the job at work, not the one waiting
    bench.drain()
    bench.messages.clear()
    put_incoming(bench, "capture-000001.npy", npy(TILES[:32]))
    run_until(bench, lambda: (bench.root / "incoming" / "done" / "capture-000001.npy").exists())
    assert (bench.root / "products" / "job00001-capture-000001.npz").exists()
    step = jobs[3].progress
    bench.worker.work_slice()
    assert jobs[3].state.value == "RUNNING" and jobs[3].progress > step  # trains again after the file
    assert not bench.events("JOB_PAUSED")  # one file a slice: training is not paused (and checkpointed) for it

    for k in range(3):  # a backlog, and training no longer admitted: paused at once, not after the backlog
        put_incoming(bench, f"capture-{k + 2:06d}.npy", npy(TILES[:16]))
    admit(bench, Admission.INFERENCE)
    bench.worker.work_slice()
    assert jobs[3].state.value == "PAUSED" and (bench.root / "checkpoints" / "job00003.ck").exists()
    assert len(list((bench.root / "incoming").glob("*.npy"))) == 2  # found in review: ran on through the backlog


@pytest.mark.req("CMP-014")
def test_the_status_names_the_job_at_work_and_its_training_figures(bench):
    training(bench, priority=5)
    start(bench, cp.JobSpec(2, JobKind.TRAINING, "toy", steps=100_000, batch_size=16, priority=0))
    run_until(bench, lambda: bench.worker.jobs[2].progress > bench.worker.jobs[1].progress)
    status = bench.worker.status()  # job 1 stays RUNNING, not at work (found in review: its step, job 2's id)
    assert (status.job_id, status.train_step) == (2, bench.worker.jobs[2].progress)
    bench.worker.install_shipped_models()
    start(bench, cp.JobSpec(3, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    put_incoming(bench, "capture.npy", npy(TILES[:8]))
    bench.worker.work_slice()  # the file's slice: training figures still job 2's, the one that trained last
    status = bench.worker.status()
    assert (status.job_id, status.job_kind, status.train_step) == (3, JobKind.INFERENCE, bench.worker.jobs[2].progress)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.req("CMP-015")
def test_a_file_name_the_camera_gives_again_makes_a_product_of_its_own_and_the_same_file_again_replaces_its_own(
        bench):
    """Found in audit: scene.npy of the next pass overwrote the product of the first, not yet sent down, unsaid.
    Another file under a name taken: -2, -3...; the same file again (screened anew after a restart between its
    product and its move to done/): its own product replaced, as before. The input goes to done/ under its own
    name, as the agent's clean-up of uplinked inputs knows it."""
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    products, done = bench.root / "products", bench.root / "incoming" / "done"
    for n, tiles in ((8, TILES[:8]), (16, TILES[8:24])):
        put_incoming(bench, "scene.npy", npy(tiles))
        run_until(bench, lambda: not (bench.root / "incoming" / "scene.npy").exists())
    first, second = (json.loads((products / f"job00001-{s}.json").read_text()) for s in ("scene", "scene-2"))
    assert (first["tiles"], second["tiles"]) == (8, 16) and first["source_sha256"] != second["source_sha256"]
    assert (products / "job00001-scene-2.npz").exists()
    assert [p.name for p in done.iterdir()] == ["scene.npy"] and len(np.load(done / "scene.npy")) == 16
    put_incoming(bench, "scene.npy", npy(TILES[:8]))  # the first file again
    run_until(bench, lambda: not (bench.root / "incoming" / "scene.npy").exists())
    assert sorted(p.name for p in products.glob("job00001-*.json")) == ["job00001-scene-2.json", "job00001-scene.json"]
    assert json.loads((products / "job00001-scene.json").read_text())["tiles"] == 8
    assert bench.worker.jobs[1].progress == 8 + 16 + 8


@pytest.mark.req("CMP-015")
def test_bad_incoming_files_are_set_aside_said_and_counted_and_the_good_one_after_them_is_screened(bench):
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    nan = TILES[:4].copy()
    nan[2, 1, 3, 3] = np.nan
    bad = {
        "a-shape.npy": (npy(TILES[:4, :3]), "the model takes [N, 4, 16, 16]"),
        "b-nan.npy": (npy(nan), "1 of 4 tiles hold NaN or infinite values (the first: [2])"),
        "c-overflow.npy": (npy(TILES[:2].astype(np.float64) * 1e300), "NaN or infinite"),  # infinite as float32
        "d-empty.npy": (npy(TILES[:0]), "holds no tiles"),
        "e-archive.npy": (_npz_bytes(), "an archive"),
        "f-garbage.npy": (b"\x93NUMPY garbage" * 10, "not a .npy array numpy can read"),
        "g-strings.npy": (npy(np.array(["a", "b"])), "not an array of numbers"),
        "h-truncated.npy": (npy(TILES[:8])[:-100], "numpy can read"),
    }
    for name, (data, _why) in bad.items():
        put_incoming(bench, name, data)
    put_incoming(bench, "z-good.npy", npy(TILES[:16]))
    run_until(bench, lambda: (bench.root / "incoming" / "done" / "z-good.npy").exists())

    assert bench.worker.jobs[1].state.value == "RUNNING"  # found in review: FAILED, the good files held back
    said = {e.args["name"]: e.args["reason"] for e in bench.events("INCOMING_REJECTED")}
    for name, (_data, why) in bad.items():
        assert why in said[name], (name, said[name])
        assert (bench.root / "incoming" / "rejected" / name).exists()
    assert bench.worker.status().infer_files_rejected == len(bad)
    assert sorted(p.name for p in (bench.root / "incoming").glob("*.npy")) == []
    summary = json.loads((bench.root / "products" / "job00001-z-good.json").read_text())
    assert summary["tiles"] == 16 and summary["receipt"]["check_status"] == "passed"

    for k in range(KEEP_REJECTED_FILES + 4):  # the rejected are bounded: the newest kept
        put_incoming(bench, f"late-{k:02d}.npy", npy(TILES[:1, :2]))
        run_until(bench, lambda k=k: not (bench.root / "incoming" / f"late-{k:02d}.npy").exists())
    put_incoming(bench, "old-capture.npy", npy(TILES[:1, :2]))
    os.utime(bench.root / "incoming" / "old-capture.npy", (1e9, 1e9))  # written long ago, rejected last
    run_until(bench, lambda: not (bench.root / "incoming" / "old-capture.npy").exists())
    kept = sorted(p.name for p in (bench.root / "incoming" / "rejected").iterdir())
    assert len(kept) == KEEP_REJECTED_FILES and "old-capture.npy" in kept  # found in review: deleted at once
    assert f"late-{KEEP_REJECTED_FILES + 3:02d}.npy" in kept and "late-00.npy" not in kept


@pytest.mark.req("CMP-015")
def test_incoming_files_the_file_rules_refuse_the_names_of_are_screened_into_names_they_take(bench):
    """Found in audit: a file the camera named with a space, a colon, a newline or an escape gave products (and a
    file in done/) whose names the file rules refuse: never sent down, never deleted by FILE_DELETE nor cleaned,
    for good; and one whose name is not UTF-8 failed the continuous job itself (its INCOMING_REJECTED could not be
    encoded), the file left first in line for the next job."""
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    incoming = os.fsencode(bench.root / "incoming")
    nan = TILES[:4].copy()
    nan[1, 0, 0, 0] = np.nan
    names = [b"scene 01.npy", b"2026-11-16T12:00:00Z.npy", b"a\nb.npy", b"\x1b[2Jx.npy", b"-rf.npy", b"\xffcam.npy",
             b"z" * 200 + b".npy", b"scene_01.npy"]
    for k, name in enumerate([*names, b"\xfe night.npy"]):
        with open(os.path.join(incoming, b"." + name), "wb") as f:
            f.write(npy(nan if name == b"\xfe night.npy" else TILES[4 * k:4 * k + 4]))
        os.rename(os.path.join(incoming, b"." + name), os.path.join(incoming, name))
    run_until(bench, lambda: not [n for n in os.listdir(incoming) if n.endswith(b".npy")])

    assert bench.worker.jobs[1].state.value == "RUNNING" and bench.worker.jobs[1].progress == 4 * len(names)
    kept = {top: os.listdir(os.fsencode(bench.root / top))
            for top in ("products", "incoming/done", "incoming/rejected")}
    for top, files in kept.items():  # each one a name FILE_DOWNLINK, FILE_DELETE and the clean-up can reach
        for name in files:
            check_name(f"{top}/{os.fsdecode(name)}", None)
    assert len(kept["products"]) == 2 * len(names) and len(kept["incoming/done"]) == len(names)
    sources = {json.loads((bench.root / "products" / os.fsdecode(p)).read_text())["source"]
               for p in kept["products"] if p.endswith(b".json")}
    assert sources == {os.fsdecode(n) for n in names}  # each product says which file it screened
    assert b"job00001-scene_01.npz" in kept["products"]  # a name the rules take is kept as it is
    [said] = bench.events("INCOMING_REJECTED")
    assert said.args["name"] == "\\udcfe night.npy" and len(kept["incoming/rejected"]) == 1


@pytest.mark.req("CMP-015")
def test_an_incoming_file_over_its_limit_is_set_aside_unread_and_the_job_goes_on(bench):
    """Found in review: an incoming file was mapped and copied whole, its size never looked at: a huge one failed
    the continuous job (MemoryError) or took the board's memory. Its size is now looked at before anything is
    read; a header that says more data than the file holds is refused before numpy makes an array of it."""
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    incoming = bench.root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tiles = MAX_INCOMING_BYTES // TILES[0].nbytes + 1
    np.lib.format.open_memmap(incoming / ".huge.npy", "w+", np.float32, (tiles, 4, 16, 16))  # sparse: valid tiles
    os.rename(incoming / ".huge.npy", incoming / "a-huge.npy")
    size = (incoming / "a-huge.npy").stat().st_size
    header = npy(TILES[:1])  # one tile's data behind a header that says 2^28 tiles
    lying = header.replace(b"(1, 4, 16, 16)", b"(268435456, 4, 16, 16)")
    put_incoming(bench, "b-lying.npy", lying)
    put_incoming(bench, "z-good.npy", npy(TILES[:8]))
    run_until(bench, lambda: (incoming / "done" / "z-good.npy").exists())

    assert bench.worker.jobs[1].state.value == "RUNNING", bench.worker.jobs[1].detail
    said = {e.args["name"]: e.args["reason"] for e in bench.events("INCOMING_REJECTED")}
    assert said["a-huge.npy"] == (f"a-huge.npy: {size} bytes, over the limit of {MAX_INCOMING_BYTES} bytes; nothing "
                                  "of it was read (MAX_INCOMING_BYTES)")
    assert "not a .npy array numpy can read" in said["b-lying.npy"] and "its header says" in said["b-lying.npy"]
    assert sorted(p.name for p in (incoming / "rejected").iterdir()) == ["a-huge.npy", "b-lying.npy"]
    assert bench.worker.status().infer_files_rejected == 2 and bench.worker.jobs[1].progress == 8


@pytest.mark.req("CMP-015")
def test_a_file_written_again_in_place_or_on_a_reused_inode_is_not_the_file_screened(tmp_path):
    """Found in review: the file screened was known by (device, inode) alone, and ext4 hands a freed inode straight
    to the next file made, so a new scene.npy written after a delete passed as the one read and went to done/
    unscreened. Its size and times tell them apart; written in place keeps the inode and is told apart too."""
    path = tmp_path / "scene.npy"
    np.save(path, TILES[:2])
    taken = os.lstat(path)
    assert worker_module._same_file(path, taken)
    with open(path, "ab") as f:  # the same inode, other bytes: what a reused inode looks like to the check
        f.write(b"\0" * 64)
    assert os.lstat(path).st_ino == taken.st_ino
    assert not worker_module._same_file(path, taken)
    path.unlink()
    assert not worker_module._same_file(path, taken)


@pytest.mark.req("CMP-015")
def test_an_incoming_file_gone_or_replaced_while_it_is_screened_loses_nothing_and_fails_nothing(bench, monkeypatch):
    """Found in review: a file gone between the listing and its opening (FILE_DELETE, its writer's clean-up) was said
    and counted as rejected; one deleted once screened failed the continuous job as it was moved to done/; and one
    put under its name meanwhile (the camera's next scene.npy) went to done/ unscreened, its tiles never run."""
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    worker, incoming, done = bench.worker, bench.root / "incoming", bench.root / "incoming" / "done"
    listed = worker._incoming_files  # noqa: SLF001

    def listed_then_deleted():  # FILE_DELETE comes in between the listing and the opening
        files = listed()
        for path in files:
            path.unlink()
        return files

    put_incoming(bench, "gone.npy", npy(TILES[:4]))
    monkeypatch.setattr(worker, "_incoming_files", listed_then_deleted)
    worker.work_slice()
    monkeypatch.setattr(worker, "_incoming_files", listed)
    assert not bench.events("INCOMING_REJECTED") and worker.status().infer_files_rejected == 0
    assert worker.jobs[1].state.value == "RUNNING" and worker.jobs[1].progress == 0

    written = worker._write_product  # noqa: SLF001
    meanwhile = []  # what happens to the input as its product is written

    def write_product(*args, **kwargs):
        out = written(*args, **kwargs)
        if meanwhile:
            meanwhile.pop(0)()
        return out

    monkeypatch.setattr(worker, "_write_product", write_product)
    meanwhile.append(lambda: put_incoming(bench, "scene.npy", npy(TILES[8:24])))  # the camera's next scene.npy
    put_incoming(bench, "scene.npy", npy(TILES[:8]))
    run_until(bench, lambda: not (incoming / "scene.npy").exists())
    products = bench.root / "products"
    first, second = (json.loads((products / f"job00001-{s}.json").read_text()) for s in ("scene", "scene-2"))
    assert (first["tiles"], second["tiles"]) == (8, 16)  # each file screened, each its own product
    assert len(np.load(done / "scene.npy")) == 16 and worker.jobs[1].progress == 8 + 16

    meanwhile.append(lambda: (incoming / "late.npy").unlink())  # deleted once screened (FILE_DELETE)
    put_incoming(bench, "late.npy", npy(TILES[:4]))
    run_until(bench, lambda: (products / "job00001-late.json").exists())
    worker.work_slice()
    assert worker.jobs[1].state.value == "RUNNING", worker.jobs[1].detail
    assert not (done / "late.npy").exists() and worker.jobs[1].progress == 8 + 16 + 4
    assert not bench.events("INCOMING_REJECTED") and not bench.events("JOB_FAILED")


def _npz_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, x=TILES[:2])
    return buf.getvalue()


@pytest.mark.req("CMP-015")
def test_checked_tiles_names_what_is_wrong_and_copies_what_is_right():
    shape = ["N", 4, 16, 16]
    good = checked_tiles(TILES[:3].astype(np.float64), shape, "f")
    assert good.dtype == np.float32 and good.flags.owndata and good.shape == (3, 4, 16, 16)
    for tiles, why in ((TILES[:3, :, :8], r"has shape \[3, 4, 8, 16\], the model takes \[N, 4, 16, 16\]"),
                       (TILES[0], "has shape"), (np.array([[1 + 2j]]), "complex128, not an array of numbers"),
                       (TILES[:0], "holds no tiles"), ("tiles", "holds str")):
        with pytest.raises(BadInput, match=why):
            checked_tiles(tiles, shape, "f")
    assert rows_agree(np.zeros((0, 2)), np.zeros((0, 2)), exact=True).shape == (0,)  # an empty batch: no crash


@pytest.mark.req("CMP-015")
def test_a_data_set_with_a_nan_fails_its_job_alone_and_a_version_on_probation_is_kept(tmp_path):
    b = WorkerBench(tmp_path / "compute", trusted_file(tmp_path, (ALICE, ALICE_KEY)))
    try:
        for model, version in ((tiny(2.0), "1"), (tiny(3.0), "2")):
            reply = b.install(version, pack(b.staging, model, version).manifest.sha256)
            assert reply.ok, reply.reason
        assert b.worker.store.state("tiny").probation
        tiles = np.random.default_rng(3).uniform(0.1, 1.0, size=(10, 2)).astype(np.float32)
        tiles[4, 1] = np.nan  # a camera glitch: nothing wrong with version 2
        b.data_set("day", tiles)
        job = b.infer(1, "day")
        assert job.state.value == "FAILED" and "data set day: 1 of 10 tiles hold NaN" in job.detail
        assert b.worker.store.state("tiny").active.version == "2"  # found in review: rolled back to 1
        assert not b.events("MODEL_ROLLED_BACK")
    finally:
        b.close()


@pytest.mark.req("CMP-015")
def test_a_data_set_whose_archive_is_corrupt_or_lies_fails_its_job_naming_the_set_and_the_array(bench):
    """Found in audit: an inference data set with a bit flipped on the disk failed its job with "BadZipFile: Bad
    CRC-32 for file 'x.npy'", one holding objects with numpy's words alone, and one whose x header says terabytes
    (a few bytes of data) with a MemoryError of 3.73 TiB: none named the set. Each now fails its job alone, naming
    the set and the array, and the header is held to the archive's size before any array is made of it."""
    import io
    import zipfile

    bench.worker.install_shipped_models()
    admit(bench)
    data = bench.root / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.savez(data / "flipped.npz", x=TILES[:8])  # stored, not deflated: the byte below is in x's data
    raw = bytearray((data / "flipped.npz").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (data / "flipped.npz").write_bytes(bytes(raw))
    np.savez(data / "objects.npz", x=np.array([1, "a"], dtype=object))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**9, 4, 16, 16)})
    with zipfile.ZipFile(data / "liar.npz", "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(1000))
    bench.data_set("fine", TILES[:8])
    for job_id, name, why in ((1, "flipped", "data set 'flipped': x is unreadable (BadZipFile: Bad CRC-32"),
                              (2, "objects", "data set 'objects': x is unreadable (ValueError: Object arrays"),
                              (3, "liar", "data set 'liar': x is unreadable (ValueError: its header says "
                                          "4096000000000 bytes of data, the archive holds 1000)")):
        job = bench.infer(job_id, name, model=MODEL_NAME, max_slices=5)
        assert job.state.value == "FAILED" and why in job.detail, job.detail
    assert bench.infer(4, "fine", model=MODEL_NAME).state.value == "DONE"  # the worker goes on


@pytest.mark.req("CMP-015")
def test_a_broken_data_set_is_refused_or_fails_its_job_naming_the_set_and_what_is_wrong(bench):
    """Found in audit: a data set cut short or a .npy under an .npz name failed TRAIN_START as an execution error
    (BadZipFile, TypeError); a y shorter than x failed the job at a random step with an IndexError, and an empty
    set with a reshape error. Later audit: such sets, and sets with a NaN or a value past float32 (each batch
    holding one was refused as an upset, and the job ended DONE), with no features, larger batches than samples,
    or tiles without labels, were accepted at TRAIN_START: all are refused there, naming the set and the fault."""
    data = bench.root / "data"
    data.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).normal(size=(64, 12)).astype(np.float32)
    np.savez(data / "good.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    raw = (data / "good.npz").read_bytes()
    (data / "cut.npz").write_bytes(raw[:len(raw) // 2])
    np.save(data / "plain.npy", x)
    (data / "plain.npy").rename(data / "plain.npz")
    np.savez(data / "short.npz", x=x, y=(x[:50, 0] > 0).astype(np.int64))
    np.savez(data / "empty.npz", x=np.zeros((0, 12), np.float32), y=np.zeros(0, np.int64))
    np.savez(data / "negative.npz", x=x, y=np.full(64, -1))
    nan, big = x.copy(), x.astype(np.float64)
    nan[7, 3], big[9, 0] = np.nan, 1e39
    np.savez(data / "nan.npz", x=nan, y=np.zeros(64, np.int64))
    np.savez(data / "big.npz", x=big, y=np.zeros(64, np.int64))
    np.savez(data / "nofeatures.npz", x=np.zeros((64, 0), np.float32), y=np.zeros(64, np.int64))
    np.savez(data / "unlabelled.npz", tiles_dn=np.zeros((8, 4, 16, 16), np.uint16))
    np.savez(data / "floatdn.npz", tiles_dn=np.zeros((8, 4, 16, 16), np.float32), labels=np.zeros(8, np.int64))
    admit(bench)
    for job_id, name, why, batch in (
            (1, "cut", "data set 'cut' is unreadable: BadZipFile", 16),
            (2, "plain", "data set 'plain' is one array, not an .npz archive", 16),
            (3, "short", "data set 'short': y must hold one label per sample of x (64); it is int64 of shape [50]", 16),
            (4, "empty", "data set 'empty': x must be an array of numbers, one row of at least one value", 16),
            (5, "negative", "data set 'negative': y holds a negative label (-1)", 16),
            (8, "nofeatures", "it is float32 of shape [64, 0]", 16),
            (9, "unlabelled", "data set 'unlabelled' has no labels to train on", 4),
            (10, "good", "batch_size 65 is larger than data set 'good', 64 samples", 65),
            (13, "floatdn", "data set 'floatdn': tiles_dn must be integer DN (reflectance x 10000), it is float32", 4)):
        reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(job_id, JobKind.TRAINING, name, steps=10,
                                                                  batch_size=batch)))
        assert not reply.ok and reply.code == FailureCode.BAD_ARGUMENTS and why in reply.reason, reply
        assert bench.worker.jobs.get(job_id) is None
    # The samples' values are the job's to check (TRAIN_START reads only the arrays' shapes and the labels): a
    # value not finite in float32 fails the job naming the first sample, never a run of batches refused as upsets.
    for job_id, name, why in ((6, "nan", "data set 'nan': x holds values that are not finite numbers in float32 (NaN, "
                                         "infinite, or past 3.4e38) in 1 samples, the first [7]"),
                              (7, "big", "data set 'big': x holds values that are not finite numbers in float32")):
        start(bench, cp.JobSpec(job_id, JobKind.TRAINING, name, steps=10, batch_size=16, classes=2))
        job = bench.worker.jobs[job_id]
        run_until(bench, lambda: job.state.value == "FAILED")
        assert why in job.detail, job.detail
    start(bench, cp.JobSpec(11, JobKind.TRAINING, "good", steps=10, batch_size=16, classes=2))
    np.savez(data / "good.npz", x=nan, y=np.zeros(64, np.int64))  # replaced after the start: the job fails saying so
    job = bench.worker.jobs[11]
    run_until(bench, lambda: job.state.value == "FAILED")
    assert "data set 'good': x holds values that are not finite numbers" in job.detail, job.detail
    tiles = load_held_out()  # a tile set with its tiles and labels alone trains: no masks needed
    np.savez(data / "labelled.npz", tiles_dn=np.round(tiles.tiles[:32] * 10000).astype(np.uint16),
             labels=tiles.labels[:32])
    start(bench, cp.JobSpec(12, JobKind.TRAINING, "labelled", steps=4, batch_size=8, classes=2))
    job = bench.worker.jobs[12]
    run_until(bench, lambda: job.state.value in ("DONE", "FAILED"))
    assert job.state.value == "DONE", job.detail


# --- writes that fail -----------------------------------------------------------------------


@pytest.mark.req("CMP-016")
def test_a_checkpoint_or_job_list_that_cannot_be_written_is_said_and_counted_and_the_worker_goes_on(bench):
    training(bench, checkpoint_every=100_000)
    admit(bench, Admission.NONE)
    bench.worker.work_slice()  # paused: a checkpoint written
    admit(bench)
    step = bench.worker.jobs[1].progress
    run_until(bench, lambda: bench.worker.jobs[1].progress > step)  # steps no checkpoint holds
    ck = bench.root / "checkpoints" / "job00001.ck"
    kept = ck.read_bytes()
    # A rename over a directory that is not empty fails, as a write on a full or failing disk does.
    ck.unlink()
    (ck / "held").mkdir(parents=True)
    admit(bench, Admission.NONE)
    bench.worker.work_slice()  # pauses the job: its checkpoint cannot be written (found in review: the worker died)
    assert bench.worker.jobs[1].state.value == "PAUSED"
    (said,) = bench.events("COMPUTE_WRITE_FAILED")
    assert said.args["what"].startswith("job 1's checkpoint at step") and "pausing" in said.args["reason"]
    shutil.rmtree(ck)
    ck.write_bytes(kept)  # the last one written stays whole

    jobs = bench.root / "jobs.json"
    jobs.unlink()
    (jobs / "held").mkdir(parents=True)
    # A command completes only when it did what it says (AGT-040): found in audit, a start and a cancel the list
    # on disk did not hold were answered OK, and a restarted worker lost the job or ran the cancelled one again.
    reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(2, JobKind.TRAINING, "toy", steps=10, batch_size=16)))
    assert not reply.ok and reply.code == FailureCode.EXECUTION_ERROR and "jobs.json" in reply.reason, reply
    assert 2 not in bench.worker.jobs  # not queued: memory holds what the disk does
    reply = bench.request(lambda r: cp.CancelJob(r, 1))
    assert not reply.ok and reply.code == FailureCode.EXECUTION_ERROR and "jobs.json" in reply.reason, reply
    assert reply.reason.startswith("job 1 not cancelled") and bench.worker.jobs[1].state.value == "PAUSED"
    assert ck.exists()  # the list on disk still says job 1 runs: its checkpoint stays
    assert bench.worker.status().compute_writes_failed >= 3
    assert len(bench.events("COMPUTE_WRITE_FAILED")) == 1  # said at most every 10 s; counted every time
    admit(bench)
    bench.worker.work_slice()  # and goes on working
    assert bench.worker.jobs[1].state.value == "RUNNING"
    shutil.rmtree(jobs)  # the disk takes writes again: the cancel sent again completes
    assert bench.request(lambda r: cp.CancelJob(r, 1)).ok
    bench.restart()
    assert not ck.exists() and bench.worker.jobs[1].state.value == "CANCELLED"


@pytest.mark.req("CMP-016")
def test_a_trained_model_that_cannot_be_written_is_said_and_written_later_the_job_and_checkpoint_kept(bench,
                                                                                                     monkeypatch):
    """Found in audit: a full disk as the trained model was written failed the finished job, and its checkpoint
    went with it: every step lost, and no COMPUTE_WRITE_FAILED."""
    monkeypatch.setattr(worker_module, "EXPORT_RETRY_S", 0.0)
    toy_set(bench)
    admit(bench)
    out = bench.root / "products" / "job00001-toy-trained.onnx"
    (out / "held").mkdir(parents=True)  # a rename over a directory that is not empty fails, as on a full disk
    start(bench, cp.JobSpec(1, JobKind.TRAINING, "toy", steps=40, batch_size=16, checkpoint_every=10))
    job = bench.worker.jobs[1]
    run_until(bench, lambda: bool(bench.events("COMPUTE_WRITE_FAILED")))
    (said,) = bench.events("COMPUTE_WRITE_FAILED")
    assert said.args["what"] == "job 1's trained model"
    assert job.state.value == "RUNNING" and "the model could not be written" in job.detail, job.detail
    assert (bench.root / "checkpoints" / "job00001.ck").exists()
    # While its write waits it does no work, so the loop waits too, and another job goes first (found in review:
    # chosen each turn, a slice of microseconds, it spun the loop and starved the jobs after it)
    bench.worker._export_retry_at[1] = time.monotonic() + 3600.0  # noqa: SLF001
    assert bench.worker.work_slice() == 0.0 and job.state.value == "RUNNING"
    start(bench, cp.JobSpec(2, JobKind.TRAINING, "toy", steps=100_000, batch_size=16, checkpoint_every=1000))
    assert bench.worker._next_job().job_id == 2 and bench.worker.work_slice() > 0.0  # noqa: SLF001
    bench.request(lambda r: cp.CancelJob(r, 2))
    bench.worker._export_retry_at[1] = 0.0  # noqa: SLF001
    shutil.rmtree(out)  # room again
    run_until(bench, lambda: job.state.value != "RUNNING")
    assert job.state.value == "DONE" and out.is_file() and out.with_suffix(".json").is_file(), job.detail
    assert not (bench.root / "checkpoints" / "job00001.ck").exists()



@pytest.mark.req("CMP-016", "CMP-015")
def test_a_screened_file_that_cannot_be_moved_to_done_leaves_its_product_and_the_job_goes_on(bench):
    """Found in audit: a file named "done" in incoming/ (an uplink under that name) made the move of the first file
    screened fail (FileExistsError): the continuous job failed for good with its product written, and the files
    after it waited unscreened. Now the product stands, the file stays where it is, screened once, the move's
    failure is said and counted, and the job screens the next file."""
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    put_incoming(bench, "done", b"an uplinked file of that name")
    put_incoming(bench, "a.npy", npy(TILES[:8]))
    put_incoming(bench, "b.npy", npy(TILES[8:16]))
    for _ in range(6):
        bench.worker.work_slice()
    job = bench.worker.jobs[1]
    assert job.state.value == "RUNNING" and not bench.events("JOB_FAILED"), job.detail
    assert sorted(p.name for p in (bench.root / "products").iterdir()) == [
        "job00001-a.json", "job00001-a.npz", "job00001-b.json", "job00001-b.npz"]  # each once: no -2 from a rescreen
    assert job.progress == 16 and bench.worker.status().compute_writes_failed == 2
    (said,) = bench.events("COMPUTE_WRITE_FAILED")  # at most one every 10 s; counted every time
    assert said.args["what"] == "the move of a.npy to incoming/done/" and "FileExistsError" in said.args["reason"]
    assert (bench.root / "incoming" / "a.npy").is_file()  # left where it was
    # The camera writes a.npy again (found in review: the name alone was kept, every later a.npy skipped for good)
    (bench.root / "incoming" / "a.npy").unlink()
    put_incoming(bench, "a.npy", npy(TILES[16:32]))
    for _ in range(4):
        bench.worker.work_slice()
    assert job.progress == 32 and job.state.value == "RUNNING"  # the new one screened, its 16 tiles counted


@pytest.mark.req("CMP-016", "CMP-015")
def test_a_continuous_jobs_product_that_cannot_be_written_keeps_the_job_and_file_and_leaves_no_half_product(
        bench, monkeypatch):
    """Found in audit: a full disk as a camera file's product was written failed the continuous job for good (the
    files after it waited unscreened until the ground started another), said only as JOB_FAILED and not counted;
    a summary refused after its .npz left the .npz alone in products/, and the product written later went to
    another name (-2) beside it. Now: said, counted, the file kept in incoming/ and screened again, nothing
    half-written left, and its tiles counted once."""
    monkeypatch.setattr(worker_module, "EXPORT_RETRY_S", 0.0)
    bench.worker.install_shipped_models()
    admit(bench)
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME, continuous=True))
    real = worker_module.write_atomic
    refused = []

    def full_at_the_summary(path, data, **kwargs):
        if Path(path).suffix == ".json" and Path(path).parent.name == "products" and not refused:
            refused.append(Path(path).name)
            raise OSError(28, "No space left on device")
        return real(path, data, **kwargs)

    monkeypatch.setattr(worker_module, "write_atomic", full_at_the_summary)
    put_incoming(bench, "a.npy", npy(TILES[:8]))
    bench.worker.work_slice()
    assert refused == ["job00001-a.json"]
    job = bench.worker.jobs[1]
    assert job.state.value == "RUNNING" and "could not be written" in job.detail, job.detail
    (said,) = bench.events("COMPUTE_WRITE_FAILED")
    assert said.args["what"] == "job 1's product of a.npy" and "No space" in said.args["reason"]
    assert bench.worker.status().compute_writes_failed == 1 and not bench.events("JOB_FAILED")
    assert list((bench.root / "products").iterdir()) == []  # no .npz without its summary
    assert (bench.root / "incoming" / "a.npy").is_file() and bench.worker.totals.count == 0
    run_until(bench, lambda: not (bench.root / "incoming" / "a.npy").exists(), slices=10)
    assert sorted(p.name for p in (bench.root / "products").iterdir()) == ["job00001-a.json", "job00001-a.npz"]
    assert (bench.root / "incoming" / "done" / "a.npy").is_file() and job.state.value == "RUNNING"
    assert bench.worker.totals.count == 8  # the file's tiles once, not once per try


@pytest.mark.req("CMP-016")
def test_a_data_set_jobs_product_that_cannot_be_written_is_written_later_from_the_results_kept(bench, monkeypatch):
    """Found in audit: a full disk as a data set's product was written failed the job, its results lost, and no
    COMPUTE_WRITE_FAILED. Now the job waits and writes the product once the disk takes it, its tiles not run or
    counted again."""
    monkeypatch.setattr(worker_module, "EXPORT_RETRY_S", 0.0)
    bench.worker.install_shipped_models()
    admit(bench)
    bench.data_set("tiles", TILES[:24])
    product = bench.root / "products" / "job00001-tiles.npz"
    (product / "held").mkdir(parents=True)  # a rename over a directory that is not empty fails, as on a full disk
    start(bench, cp.JobSpec(1, JobKind.INFERENCE, "tiles", model=MODEL_NAME))
    job = bench.worker.jobs[1]
    run_until(bench, lambda: bool(bench.events("COMPUTE_WRITE_FAILED")), slices=50)
    assert job.state.value == "RUNNING" and "could not be written" in job.detail, job.detail
    assert bench.worker.status().compute_writes_failed >= 1 and not bench.events("JOB_FAILED")
    runs = bench.worker.totals.batches
    shutil.rmtree(product)  # room again
    run_until(bench, lambda: job.state.value != "RUNNING", slices=10)
    assert job.state.value == "DONE" and product.is_file() and product.with_suffix(".json").is_file(), job.detail
    assert bench.worker.totals.count == 24 and bench.worker.totals.batches == runs  # written, not run again
    assert len(np.load(product)["classes"]) == 24

@pytest.mark.req("RAD-108")
def test_a_jobs_checkpoint_gone_when_it_resumes_is_said_not_a_silent_start_from_step_0(bench):
    """Found in audit: a checkpoint removed (FILE_DELETE after a DISK_LOW) made a resumed job train from step 0,
    unsaid: the job list said step 300, the job went on from 0."""
    job = training(bench, checkpoint_every=50)
    run_until(bench, lambda: job.progress >= 120)
    admit(bench, Admission.NONE)
    bench.worker.work_slice()
    (bench.root / "checkpoints" / "job00001.ck").unlink()
    bench.restart()
    admit(bench)
    bench.worker.work_slice()
    (said,) = bench.events("TRAIN_CHECKPOINT_REFUSED")
    assert said.args["reason"].startswith("job00001.ck: none, though the job list says step ")
    assert said.args["outcome"] == "the job starts from step 0"
    assert bench.worker.status().train_checkpoints_refused == 1
    # One there but refused (torn by a power cut) is said once, as refused, not also as none (found in review)
    job = bench.worker.jobs[1]
    run_until(bench, lambda: job.progress >= 120)
    admit(bench, Admission.NONE)
    bench.worker.work_slice()
    (bench.root / "checkpoints" / "job00001.ck").write_bytes(b"SUNLITC2 torn by a power cut")
    before = len(bench.events("TRAIN_CHECKPOINT_REFUSED"))
    bench.restart()
    admit(bench)
    bench.worker.work_slice()
    (refused,) = bench.events("TRAIN_CHECKPOINT_REFUSED")[before:]
    assert "none, though" not in refused.args["reason"] and bench.worker.status().train_checkpoints_refused == 1


@pytest.mark.req("CMP-016", "RAD-108")
def test_a_training_job_whose_checkpoint_fails_goes_on_and_counts_no_saa_checkpoint(tmp_path):
    x, y = np.zeros((64, 12), np.float32), np.zeros(64, np.int64)
    events = []
    path = tmp_path / "j.ck"
    job = TrainingJob(Trainer(MlpSpec(12, (Dense(8), Dense(3))), Adam(1e-3), 8), x, y,
                      TrainingPlan(1000, 8, checkpoint_every=5), path, on_event=lambda kind, **a: events.append(kind))
    job.run(5)
    assert path.exists()
    path.unlink()
    (path / "held").mkdir(parents=True)
    assert job.run(10) == 10  # the periodic checkpoint fails: said, and the job goes on
    ahead = cp.Radiation(FluxClass.QUIET, False, -20.0, 5700.0, saa_entry_in_s=10.0)
    assert not job.radiation_tick(ahead)  # not written: not counted as taken
    job.pause("test")
    assert events.count("checkpoint_failed") == 4 and job.status.checkpoints_failed == 4  # steps 10, 15, SAA, pause
    assert job.status.saa_checkpoints == 0


# --- state read back --------------------------------------------------------------------------


@pytest.mark.req("CMP-016")
@pytest.mark.parametrize("spoil", ["bit", "entry"])
def test_a_corrupt_job_list_is_moved_aside_said_and_counted_and_its_checkpoints_kept(bench, spoil):
    """Found in audit: one flipped bit in jobs.json started the worker with no jobs, said as JOB_FAILED of
    job 0, wrote the list over and deleted every training checkpoint; an entry it could not read went
    without a word."""
    training(bench, job_id=1)
    start(bench, cp.JobSpec(2, JobKind.TRAINING, "toy", steps=10, batch_size=16))  # queued behind it
    admit(bench, Admission.NONE)
    bench.worker.work_slice()  # job 1 paused: its checkpoint written
    checkpoints = sorted(p.name for p in (bench.root / "checkpoints").iterdir())
    assert checkpoints == ["job00001.ck"]
    jobs = bench.root / "jobs.json"
    if spoil == "bit":
        raw = bytearray(jobs.read_bytes())
        raw[len(raw) // 2] ^= 0x04
        jobs.write_bytes(bytes(raw))
    else:  # whole, but job 1's entry is not one this build reads (a key it does not know)
        body = read_checked_json(jobs)
        body[0]["colour"] = "blue"
        write_checked_json(jobs, body)
    bench.messages.clear()
    bench.restart()
    (said,) = bench.events("COMPUTE_STATE_CORRUPT")
    assert bench.worker.status().compute_state_corrupt == 1
    assert not bench.events("JOB_FAILED")
    if spoil == "bit":
        assert said.args["what"] == "the job list" and "jobs.json.corrupt" in said.args["outcome"]
        assert bench.worker.jobs == {} and (bench.root / "jobs.json.corrupt").exists()
    else:
        assert said.args["what"] == "job 1's entry in the job list" and "colour" in said.args["reason"]
        assert list(bench.worker.jobs) == [2] and (bench.root / "jobs.json.corrupt").exists()
    assert sorted(p.name for p in (bench.root / "checkpoints").iterdir()) == checkpoints  # kept, this start
    bench.messages.clear()
    bench.restart()  # a list read whole: what no job owns goes now
    assert not bench.events("COMPUTE_STATE_CORRUPT")
    assert not list((bench.root / "checkpoints").iterdir())


@pytest.mark.req("CMP-016")
def test_a_job_list_entry_dropped_on_a_full_disk_leaves_the_list_as_read(bench, monkeypatch):
    """Found in review: the list as read was moved aside before the list without the entry was written; a
    write that then failed left no list, and the next start took every checkpoint for a lost job's."""
    training(bench, job_id=1)
    admit(bench, Admission.NONE)
    bench.worker.work_slice()  # paused: its checkpoint written
    jobs = bench.root / "jobs.json"
    body = read_checked_json(jobs)
    write_checked_json(jobs, [*body, {"job_id": 7, "colour": "blue"}])
    kept = jobs.read_bytes()

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(worker_module, "write_checked_json", full)
    bench.messages.clear()
    bench.restart()
    (said,) = bench.events("COMPUTE_STATE_CORRUPT")
    assert said.args["what"] == "job 7's entry in the job list" and "stays as read" in said.args["outcome"]
    assert jobs.read_bytes() == kept and not (bench.root / "jobs.json.corrupt").exists()
    monkeypatch.undo()
    bench.restart()  # the disk takes writes again: job 1 and its checkpoint are still there
    assert bench.worker.jobs[1].state.value == "PAUSED" and (bench.root / "checkpoints" / "job00001.ck").exists()


@pytest.mark.req("MDL-006")
def test_the_worker_removes_at_its_start_the_files_an_install_cut_short_left_in_the_store(bench):
    bench.worker.install_shipped_models()
    models = bench.root / "models"
    (models / f"{MODEL_NAME}@9.onnx").write_bytes(b"an install's file, its manifest never written")
    (models / f"{MODEL_NAME}@9.ref.npz").write_bytes(b"and its reference set")
    bench.restart()
    assert bench.worker.removed_store_files == 2  # said by run() as TEMP_FILES_REMOVED, with the temporary files
    assert not list(models.glob("*@9.*")) and bench.worker.store.verify_all() == []


def _admit_at(bench, radiation: cp.Radiation, agent_s: float) -> None:
    bench.worker._handle(cp.Admit(Admission.ALL, 1, 8, 1.0, None, "test", radiation, 0.0, True, True,  # noqa: SLF001
                                  True, False, clock_s=agent_s))


@pytest.mark.req("RAD-103", "RAD-105", "RAD-107")
def test_once_the_predicted_entry_has_come_the_worker_scrubs_and_double_runs_as_in_the_saa(bench, monkeypatch):
    """Found in audit: between two admissions the worker counted the entry down for training alone; the
    scrub kept the quiet period and batches ran once through a pass the agent had predicted."""
    clock = SimClock(1000.0)  # the worker's time module, its monotonic clock set here
    monkeypatch.setattr(worker_module, "time", clock)
    worker = bench.worker
    _admit_at(bench, cp.Radiation(FluxClass.QUIET, False, -20.0, 5700.0, saa_entry_in_s=10.0), 5000.0)
    assert worker._scrub_period_s() == 1500.0 and not worker._every_batch_twice()  # noqa: SLF001
    clock.now_s += 9.0
    assert worker._radiation_now().saa_entry_in_s == pytest.approx(1.0, abs=0.6)  # noqa: SLF001 - slack: 0.5 s
    assert worker._scrub_period_s() == 1500.0  # noqa: SLF001
    clock.now_s += 2.0  # the entry has come: in the SAA until an admission says otherwise
    now = worker._radiation_now()  # noqa: SLF001
    assert (now.in_saa, now.flux_class, now.saa_entry_in_s) == (True, FluxClass.SAA, 0.0)
    assert worker._scrub_period_s() == 30.0 and worker._every_batch_twice()  # noqa: SLF001
    _admit_at(bench, cp.Radiation(FluxClass.QUIET, False, -5.0, 5700.0), 5011.0)  # the pass is over
    assert worker._scrub_period_s() == 1500.0 and not worker._every_batch_twice()  # noqa: SLF001


# --- training under radiation -----------------------------------------------------------------


@pytest.mark.req("RAD-108")
@pytest.mark.parametrize("restarted", [False, True], ids=["paused", "worker-restarted"])
def test_a_job_paused_across_the_end_of_an_saa_pass_checkpoints_before_the_next(tmp_path, restarted):
    now = [1.8e9]  # the agent's clock, as the admission carries it (simulated under a harness)
    x, y = np.zeros((64, 12), np.float32), np.zeros(64, np.int64)

    def job_on(path):
        return TrainingJob(Trainer(MlpSpec(12, (Dense(8), Dense(3))), Adam(1e-3), 8, seed=1), x, y,
                           TrainingPlan(10_000, 8, checkpoint_every=1000), path)

    def entry_in(seconds):
        return cp.Radiation(FluxClass.QUIET, False, -20.0, 5700.0, seconds, now[0] + seconds)

    job = job_on(tmp_path / "j.ck")
    job.run(10)
    assert job.radiation_tick(entry_in(25.0))
    now[0] += 10.0
    assert not job.radiation_tick(entry_in(15.0))  # the same pass: once
    job.pause("eclipse ahead")  # paused before the entry: no tick sees the pass end
    if restarted:
        job = job_on(tmp_path / "j.ck")
        assert job.resume() and job.status.saa_checkpoints == 1
        assert not job.radiation_tick(entry_in(5.0))  # still that pass after the restart: not again
    now[0] += 5700.0  # an orbit later, admitted again 20 s before the next entry (found in review: no checkpoint)
    job.run(10)
    assert job.radiation_tick(entry_in(20.0)) and job.status.saa_checkpoints == 2
    assert job.status.last_checkpoint_step == 20
    now[0] += SAA_PASS_GAP_S  # inside that pass now: nothing more
    assert not job.radiation_tick(cp.Radiation(FluxClass.SAA, True, -20.0, 5700.0, 0.0, None))


@pytest.mark.req("RAD-108")
def test_a_job_that_saw_only_the_inside_of_a_pass_and_a_write_that_failed_still_checkpoint_before_the_next(tmp_path):
    now = [1.8e9]
    x, y = np.zeros((64, 12), np.float32), np.zeros(64, np.int64)
    path = tmp_path / "j.ck"
    job = TrainingJob(Trainer(MlpSpec(12, (Dense(8), Dense(3))), Adam(1e-3), 8, seed=1), x, y,
                      TrainingPlan(10_000, 8, checkpoint_every=1000), path, clock=lambda: now[0])

    def entry_in(seconds):
        return cp.Radiation(FluxClass.QUIET, False, -20.0, 5700.0, seconds, now[0] + seconds)

    assert not job.radiation_tick(cp.Radiation(FluxClass.SAA, True, -25.0, 5700.0, 0.0, None))  # started inside
    job.run(10)
    job.pause("eclipse ahead")  # inside still: no tick sees the pass end (found in review: no checkpoint next)
    now[0] += 5700.0
    job.run(5)
    path.unlink()
    (path / "held").mkdir(parents=True)  # the disk refuses the write
    assert not job.radiation_tick(entry_in(25.0)) and job.status.saa_checkpoints == 0
    shutil.rmtree(path)
    now[0] += 1.0
    assert not job.radiation_tick(entry_in(24.0))  # not at every slice (found in review: 600 tries a pass)
    now[0] += SAA_RETRY_S
    assert job.radiation_tick(entry_in(19.0))  # tried again while the entry is ahead (found in review: never)
    assert job.status.saa_checkpoints == 1 and job.status.last_checkpoint_step == 15 and path.is_file()


@pytest.mark.req("RAD-109")
def test_a_label_flipped_in_memory_is_refused_as_a_bad_sample_and_the_job_finishes(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(512, 12)).astype(np.float32), rng.integers(0, 3, 512)
    job = TrainingJob(Trainer(MlpSpec(12, (Dense(32, "relu"), Dense(3))), Adam(1e-3), 16, seed=1), x, y,
                      TrainingPlan(200, 16, checkpoint_every=50), tmp_path / "y.ck")
    job.run(60)
    job.y = y.copy()
    job.y.view(np.uint64)[5] ^= np.uint64(1 << 40)  # one bit of sample 5's label
    job.run(10_000)  # found in review: ValueError, the job failed
    assert job.done and job.status.steps_refused > 0 and "labels must be in [0, 3)" in job.status.last_refusal


# --- opening a model ------------------------------------------------------------------------------


@pytest.mark.req("CMP-012")
def test_the_worker_answers_pings_while_it_probes_a_model_and_keeps_other_messages_for_later(bench):
    bench.worker.install_shipped_models()
    admit(bench)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    bench.router.send_multipart([b"compute", cp.encode(cp.Ping(41))])
    bench.router.send_multipart([b"compute", cp.encode(cp.CancelJob(7, 99))])
    bench.router.send_multipart([b"compute", cp.encode(cp.Ping(42))])
    time.sleep(0.05)  # inproc delivery before the work starts; the assertion below waits for nothing
    bench.worker._session(MODEL_NAME)  # noqa: SLF001 - probes each owned buffer: one run or two each
    pongs = [m.seq for m in bench.drain() if isinstance(m, cp.Pong)]
    assert pongs == [41, 42]  # answered within the work, not after it: the loop never ran here
    assert [type(m).__name__ for m in bench.worker._deferred] == ["CancelJob"]  # noqa: SLF001 - for the loop
    assert not [m for m in bench.messages if isinstance(m, cp.Reply)]


@pytest.mark.req("CMP-012")
def test_the_worker_answers_pings_while_it_makes_a_models_checks_and_learns_its_ranges(bench):
    """Found in audit: the checksum pass and the range learning ran inside the loop and answered no ping;
    a model of tens of thousands of nodes, or a large one over its reference set, on a board's CPU
    could pass the watchdog, be killed and start again, for good."""
    bench.worker.install_shipped_models()
    admit(bench)
    model = bench.worker.store.load(MODEL_NAME)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    for seq, work in ((61, lambda: bench.worker._abft_bytes(MODEL_NAME, model.bytes, model.sha256, "fp32")),  # noqa: SLF001
                      (62, lambda: bench.worker._learned_ranges(MODEL_NAME, model.version, model.bytes,  # noqa: SLF001
                                                                model.sha256))):
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(seq))])
        bench.router.send_multipart([b"compute", cp.encode(cp.CancelJob(seq, 99))])
        time.sleep(0.05)  # inproc delivery before the work starts; the assertion below waits for nothing
        made = work()
        assert made is not None  # the checks made, the ranges learned
        assert [m.seq for m in bench.drain() if isinstance(m, cp.Pong)][-1:] == [seq]  # within the work
        assert [m.req_id for m in bench.worker._deferred][-1:] == [seq]  # noqa: SLF001 - kept for the loop
        if seq == 61:  # what the pass makes is what it makes without a keepalive, byte for byte
            assert made == abft.protect_bytes(model.bytes, precision="fp32")
    assert not [m for m in bench.messages if isinstance(m, cp.Reply)]


@pytest.mark.req("CMP-012")
def test_the_loop_takes_deferred_messages_first_in_order_and_refuses_a_bad_one_as_from_the_socket(bench, monkeypatch):
    import signal

    monkeypatch.setattr(signal, "signal", lambda *a: None)  # run() would set this process's SIGTERM handler
    bench.worker._deferred = [cp.Pong(5), cp.CancelJob(8, 99)]  # noqa: SLF001 - as _keepalive leaves them
    bench.router.send_multipart([b"compute", cp.encode(cp.CancelJob(9, 98))])
    bench.router.send_multipart([b"compute", cp.encode(cp.Stop())])
    time.sleep(0.05)  # inproc delivery; nothing below waits on time
    bench.worker.run()  # returns at the Stop (found in review: a deferred Pong ended the worker)
    replies = [m.req_id for m in bench.drain() if isinstance(m, cp.Reply)]
    assert replies == [8, 9]  # the deferred one first
    (refused,) = bench.events("JOB_FAILED")
    assert "does not take Pong" in refused.args["reason"]


@pytest.mark.req("CMP-012", "MDL-002")
def test_a_fault_in_handling_one_request_fails_it_alone_and_the_worker_goes_on(tmp_path, monkeypatch):
    """A staged manifest whose tolerance is past a float's range (JSON's integers have no bound) once
    raised OverflowError out of the worker: every job interrupted, and the command failed as 'worker
    restarted', naming nothing. Now the field is named; and any other fault in handling a request
    fails that request alone, with what it was."""
    from flight.compute.package import StagedFiles

    bench = WorkerBench(tmp_path / "compute", trusted_file(tmp_path, (ALICE, ALICE_KEY)))
    try:
        manifest = pack(bench.staging, tiny(1.0), "2").manifest
        path = bench.staging / StagedFiles.of("tiny").manifest
        doc = json.loads(path.read_text())
        doc["body"]["tolerance"] = "HUGE"
        path.write_text(json.dumps(doc).replace('"HUGE"', "1" + "0" * 400))
        huge = bench.install("2", manifest.sha256)
        assert not huge.ok and "tolerance" in huge.reason, huge

        monkeypatch.setattr(bench.worker, "_install_model", lambda msg: {}["no such key"])
        broken = bench.install("2", manifest.sha256)
        assert not broken.ok and broken.code == int(FailureCode.EXECUTION_ERROR), broken
        assert "could not handle InstallModel (KeyError" in broken.reason
        monkeypatch.setattr(bench.worker, "_follow", lambda clock_s: 1 / 0)
        admit(bench)  # no request to answer: said as a job failure of no job
        (said,) = bench.events("JOB_FAILED")
        assert "could not handle Admit (ZeroDivisionError" in said.args["reason"]
        assert "no job 77" in bench.request(lambda r: cp.CancelJob(r, 77)).reason, "the worker goes on"
    finally:
        bench.close()


@pytest.mark.req("RAD-101")
def test_a_model_whose_weights_cannot_be_owned_runs_unscrubbed_and_says_so(bench):
    w = helper.make_tensor("w", TensorProto.BFLOAT16, [2], [1.5, 2.0])
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "wf"], ["probabilities"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    store = bench.worker.store
    store.install("bf", "1", tiny(1.0), golden=True, provenance=Provenance("test", False, "", time.time()))
    store.activate("bf", "2", model.SerializeToString(), Provenance("test", False, "", time.time()))  # on probation
    bench.data_set("xs", np.random.default_rng(0).uniform(0.1, 1, (8, 2)))
    admit(bench, abft_checks=False)
    job = bench.infer(1, "xs", model="bf")
    assert job.state.value == "DONE", job.detail  # found in review: failed, and version 2 rolled back
    assert store.state("bf").active.version == "2"
    assert any("not scrubbed" in e.args["reason"] for e in bench.events("PROVIDER_FALLBACK"))
    summary = json.loads((bench.root / "products" / "job00001-xs.json").read_text())
    assert summary["receipt"]["protection"] == "none"
    np.testing.assert_array_equal(np.load(bench.root / "products" / "job00001-xs.npz")["classes"],
                                  (np.random.default_rng(0).uniform(0.1, 1, (8, 2)) * [1.5, 2.0]).argmax(axis=1))


# --- weights no check covers --------------------------------------------------------------------


@pytest.mark.req("RAD-114")
def test_the_shipped_models_checks_cover_all_its_weights_and_their_own_large_matrices():
    """With each check predicting from its input recomputed, the input's normalisation is covered too:
    its constants are copied for conv1's prediction. Without, it is not. The checks' own small
    constants (the threshold, the slack, the copies' constants, integer shapes) are left to be watched:
    a fault in one can loosen every check, or refuse the run (found in review)."""
    shipped = __import__("onnx").load(str(MODELS_DIR / MODEL_FILE))
    for recompute, uncovered in ((True, set()), (False, {"band_mean", "band_std"})):
        model = abft.protect(shipped, recompute_inputs=recompute)
        sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
        left = set(sizes) - abft.covered_initializers(model)
        assert {n for n in left if not n.startswith(abft.PREFIX)} == uncovered
        own = {n for n in left if n.startswith(abft.PREFIX)}
        assert {"abft/zero", "abft/runs32"} <= own and all(sizes[n] <= abft.OWN_WATCHED_MAX for n in own)
        assert any(n.startswith(abft.PREFIX) and sizes[n] > abft.OWN_WATCHED_MAX for n in set(sizes) - left)


@pytest.mark.req("RAD-114")
def test_a_weight_read_inside_a_subgraph_is_not_covered_by_the_checks():
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["probabilities"]),
             helper.make_node("If", ["flag"], ["branch"], then_branch=_branch("w2"), else_branch=_branch("w2"))]
    inits = [helper.make_tensor("w1", TensorProto.FLOAT, [2, 2], [1, 0, 0, 1]),
             helper.make_tensor("w2", TensorProto.FLOAT, [2], [1, 1]),
             helper.make_tensor("flag", TensorProto.BOOL, [], [True]),
             helper.make_tensor("unread", TensorProto.FLOAT, [1], [0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
                               helper.make_tensor_value_info("branch", TensorProto.FLOAT, [2])], inits)
    model = abft.protect(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert subgraph_reads(model.graph) == {"w2"}
    uncovered = {t.name for t in model.graph.initializer} - abft.covered_initializers(model)
    # found in review: w2, read in a branch only, counted as read by nothing (the checks' own left to watch)
    assert {n for n in uncovered if not n.startswith(abft.PREFIX)} == {"w2", "flag"}


def _branch(weight: str) -> "onnx.GraphProto":
    return helper.make_graph([helper.make_node("Identity", [weight], ["out"])], "branch", [],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])])


@pytest.mark.req("RAD-114")
def test_watched_tensors_are_checked_whole_and_repaired_from_the_vote():
    scrubber = WeightScrubber({"a": np.arange(40_000, dtype=np.float32), "b": np.ones(8, np.float32)}, 0.0,
                              chunk_bytes=64 * 1024)
    scrubber.watch(["a", "not a tensor"])
    assert scrubber.watched == {"a"} and scrubber.watched_bytes == 160_000
    scrubber.owned_bytes("a")[150_001] ^= 4  # the third chunk
    scrubber.owned_bytes("b")[0] ^= 4  # not watched: left to the passes
    (repair,) = scrubber.check_watched(1.0)
    assert (repair.tensor, repair.chunk, repair.bytes_differing, repair.source) == ("a", 2, 1, "vote")
    assert scrubber.owned["a"][37_500] == 37_500 and scrubber.owned["b"][0] != 1.0


TEMPERED = "tempered"


def tempered_model() -> bytes:
    """The shipped model with its logits scaled by a constant ``temperature`` (0.5) before the Softmax:
    a weight after the last checked node, which only the compare of the outputs with their copies
    covers (``abft.protect``'s ``compare_outputs``; with it off, as pass version 6 made them, none)."""
    import onnx

    model = onnx.load(str(MODELS_DIR / MODEL_FILE))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    scaled = helper.make_node("Mul", [softmax.input[0], "temperature"], ["logits_scaled"], name="temperature")
    softmax.input[0] = "logits_scaled"
    model.graph.node.insert(list(model.graph.node).index(softmax), scaled)
    model.graph.initializer.append(__import__("onnx").numpy_helper.from_array(np.array(0.5, np.float32), "temperature"))
    return model.SerializeToString()


def clean_product(bench, monkeypatch=None) -> tuple[np.ndarray, np.ndarray, WeightScrubber]:
    """The tempered model's product of 48 tiles (job 1, the data set "tiles"), made clean: (tiles,
    confidences, the scrubber of the session that made it). With ``monkeypatch``, protected as
    version 6 did: the temperature is then a weight no check covers."""
    if monkeypatch is not None:
        protect_as_version_6(monkeypatch)
    bench.worker.store.install(TEMPERED, "1", tempered_model(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    tiles = TILES[:48]
    bench.data_set("tiles", tiles)
    admit(bench, radiation=cp.Radiation(FluxClass.QUIET, False, 10.0, 5700.0))
    assert bench.infer(1, "tiles", model=TEMPERED).state.value == "DONE"
    clean = np.load(bench.root / "products" / "job00001-tiles.npz")["confidence"]
    return tiles, clean, bench.worker._session(TEMPERED).scrubber  # noqa: SLF001


@pytest.mark.req("RAD-114")
def test_results_made_while_a_weight_no_check_covers_was_wrong_are_made_again_before_release(bench, monkeypatch):
    tiles, clean, scrubber = clean_product(bench, monkeypatch)
    assert {n for n in scrubber.watched if not n.startswith(abft.PREFIX)} == {"temperature"}

    monkeypatch.setattr(worker_module, "SLICE_S", 1e-4)  # a batch a slice: the flip lands between two
    start(bench, cp.JobSpec(2, JobKind.INFERENCE, "tiles", model=TEMPERED))
    bench.worker.work_slice()
    scrubber.owned_bytes("temperature")[3] ^= np.uint8(1)  # 0.5 becomes 0.125: wrong confidences
    run_until(bench, lambda: bench.worker.jobs[2].state.value == "DONE")
    with np.load(bench.root / "products" / "job00002-tiles.npz") as npz:
        np.testing.assert_array_equal(npz["confidence"], clean)  # found in review: 32 tiles wrong and passed
        assert npz["check"].tolist() == [PASSED] * len(tiles)
    receipt = json.loads((bench.root / "products" / "job00002-tiles.json").read_text())["receipt"]
    # the batches of the slice after the flip (one, unless a batch runs in under SLICE_S) made again
    assert receipt["weights_repaired"] == 1 and receipt["reruns"] >= 1 and receipt["check_status"] == "passed"
    (said,) = bench.events("RESULT_CHECK_FAILED")
    assert said.args["check"] == "unchecked weights" and said.args["tiles"] == 8


@pytest.mark.req("RAD-003", "RAD-114")
def test_a_weight_after_the_last_checked_node_is_covered_by_the_compare_of_the_outputs(bench, monkeypatch):
    """Pass version 7 compares the model's outputs with their copies: the temperature, past the last
    checked node, is covered (not watched), and a flip in it fails that batch's flags; the batch is
    scrubbed and made again, and the product is the clean one (before, only the watch after each slice
    saw it)."""
    tiles, clean, scrubber = clean_product(bench)
    assert not {n for n in scrubber.watched if not n.startswith(abft.PREFIX)}  # the temperature is covered
    monkeypatch.setattr(worker_module, "SLICE_S", 100.0)  # the whole set in one slice
    run_model, calls = bench.worker._run_model, [0]  # noqa: SLF001

    def upset_then_run(model, batch):
        calls[0] += 1
        if calls[0] == 2:
            scrubber.owned_bytes("temperature")[3] ^= np.uint8(1)  # 0.5 becomes 0.125
        return run_model(model, batch)

    monkeypatch.setattr(bench.worker, "_run_model", upset_then_run)
    start(bench, cp.JobSpec(2, JobKind.INFERENCE, "tiles", model=TEMPERED))
    run_until(bench, lambda: bench.worker.jobs[2].state.value == "DONE")
    with np.load(bench.root / "products" / "job00002-tiles.npz") as npz:
        np.testing.assert_array_equal(npz["confidence"], clean)
        assert npz["check"].tolist() == [PASSED] * len(tiles)
    (said,) = bench.events("RESULT_CHECK_FAILED")
    assert said.args["check"] == "checksum"
    assert [e.args["source"] for e in bench.events("WEIGHTS_REPAIRED")] == ["vote"]


@pytest.mark.req("RAD-114")
def test_results_made_on_a_session_dropped_as_unrepairable_are_made_again_if_anything_was_watched(bench, monkeypatch):
    """Two upsets in one slice: a watched tensor (the temperature) flipped after batch 1, then a checked weight hit in every
    copy before batch 3: its scrub drops the session, and the watched repair with it (found in review)."""
    tiles, clean, scrubber = clean_product(bench, monkeypatch)
    monkeypatch.setattr(worker_module, "SLICE_S", 100.0)  # the whole set in one slice
    run_model, calls = bench.worker._run_model, [0]  # noqa: SLF001

    def upset_then_run(model, batch):
        calls[0] += 1
        if calls[0] == 2:
            scrubber.owned_bytes("temperature")[3] ^= np.uint8(1)
        if calls[0] == 3:  # no copy matches the CRC, and they differ: nothing settles it
            scrubber.owned_bytes("w1")[3] ^= np.uint8(1 << 6)
            scrubber.golden_bytes(0, "w1")[7] ^= np.uint8(1 << 6)
            scrubber.golden_bytes(1, "w1")[7] ^= np.uint8(1 << 6)
            scrubber.golden_bytes(2, "w1")[11] ^= np.uint8(1 << 6)
        return run_model(model, batch)

    monkeypatch.setattr(bench.worker, "_run_model", upset_then_run)
    start(bench, cp.JobSpec(2, JobKind.INFERENCE, "tiles", model=TEMPERED))
    run_until(bench, lambda: bench.worker.jobs[2].state.value == "DONE")
    assert [e.args["source"] for e in bench.events("WEIGHTS_REPAIRED")] == ["model store"]
    with np.load(bench.root / "products" / "job00002-tiles.npz") as npz:
        np.testing.assert_allclose(npz["confidence"], clean, rtol=0, atol=1e-6)
        assert npz["check"].tolist() == [PASSED] * len(tiles)


@pytest.mark.req("RAD-114")
def test_results_made_before_a_rebuild_are_made_again_if_anything_was_watched(bench, monkeypatch):
    """Batch 1 fails its flags once (passes on the rerun, after a scrub), the temperature is flipped, batch 2
    passes, batches 3 and 4 fail again (no scrub: one ran within RESCRUB_MIN_S): the session is built
    anew, its watched weights checked as it is dropped. Batch 2, and batch 4's rerun, were made with the
    flip (found in review, each in turn: released as passed, wrong)."""
    tiles, clean, scrubber = clean_product(bench, monkeypatch)
    monkeypatch.setattr(worker_module, "SLICE_S", 100.0)  # the whole set in one slice
    run_model, calls = bench.worker._run_model, [0]  # noqa: SLF001

    def faulty(model, batch):
        calls[0] += 1
        if calls[0] == 3:  # before batch 2
            scrubber.owned_bytes("temperature")[3] ^= np.uint8(1)
        probs, ok = run_model(model, batch)
        if calls[0] in (1, 4, 5, 6, 7) and model.scrubber is scrubber:  # the flags of batches 1, 3 and 4 fail
            bench.worker._failed_flags = "checksum"  # noqa: SLF001
            ok = np.zeros_like(ok)
        return probs, ok

    monkeypatch.setattr(bench.worker, "_run_model", faulty)
    start(bench, cp.JobSpec(2, JobKind.INFERENCE, "tiles", model=TEMPERED))
    run_until(bench, lambda: bench.worker.jobs[2].state.value == "DONE")
    with np.load(bench.root / "products" / "job00002-tiles.npz") as npz:
        np.testing.assert_allclose(npz["confidence"], clean, rtol=0, atol=1e-6)  # made again on the new session
        assert npz["check"].tolist() == [PASSED] * len(tiles)


@pytest.mark.req("RAD-101")
def test_a_weight_read_only_in_a_branch_the_probe_does_not_take_is_not_claimed_and_not_said_folded(bench):
    def branch(w, out):
        return helper.make_graph([helper.make_node("MatMul", ["x", w], [out])], "b" + w, [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 2])])

    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["pos"]),
             helper.make_node("If", ["pos"], ["probabilities"], then_branch=branch("wa", "ta"),
                              else_branch=branch("wb", "tb"))]
    inits = [helper.make_tensor("wa", TensorProto.FLOAT, [2, 2], [1, 2, 3, 4]),
             helper.make_tensor("wb", TensorProto.FLOAT, [2, 2], [5, 6, 7, 8]),
             helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bench.worker.store.install("iff", "1", model.SerializeToString(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    bench.data_set("xs", x)
    admit(bench, abft_checks=False)
    assert bench.infer(1, "xs", model="iff").state.value == "DONE"
    receipt = json.loads((bench.root / "products" / "job00001-xs.json").read_text())["receipt"]
    # The probe took one branch: the other's weight changed nothing on it, as a kernel's own copy would too
    # (Resize's scales, even with no graph optimisation): not claimed, and said as what is known (found
    # in review: said folded; then claimed scrubbed where a kernel kept a copy).
    assert receipt["protection"] == "none"
    (said,) = [e.args["reason"] for e in bench.events("PROVIDER_FALLBACK") if e.args["reason"].startswith("iff:")]
    assert "read only inside subgraphs, changed nothing on the probe" in said and "folds" not in said


# --- the harness ----------------------------------------------------------------------------------


@pytest.mark.req("HIL-015")
def test_upsets_drawn_from_a_huge_rate_are_bounded_per_step_and_fail_the_run():
    faults, past = drawn_faults(lambda rel_s: 1e3, 50, 10.0, random.Random(1))
    assert len(faults) == 50 * MAX_DRAWN_FAULTS_PER_STEP and past > 400_000
    few, none_past = drawn_faults(lambda rel_s: 1e-3, 50, 10.0, random.Random(1))
    assert none_past == 0 and 0 < len(few) < 50 * MAX_DRAWN_FAULTS_PER_STEP
    assert {f.kind for f in faults} == {"reboot", "seu_weights"}
    run = dataclasses.replace(constructed_run(False), faults=[{"at_s": 10.0, "kind": "seu_weights", "duration_s": 0.0,
                                                               "drawn": True}])  # drawn, hit nothing: N/A
    (handled,) = [c for c in evaluate(run) if c.name == "faults_handled"]
    assert handled.passed
    (handled,) = [c for c in evaluate(dataclasses.replace(run, faults_not_drawn=7)) if c.name == "faults_handled"]
    assert not handled.passed and "7 upsets drawn past 10 a step were not applied" in handled.detail


def at_duty(bench, slice_of_work) -> None:
    """The bench's worker at duty 0.25, its slices ``slice_of_work``, its identity known to the router
    (a Hello read), ready to ``run``."""
    worker = bench.worker
    worker.install_shipped_models = lambda: None
    worker.duty = 0.25
    worker.work_slice = slice_of_work
    worker._send(cp.Hello(os.getpid()))  # noqa: SLF001
    assert bench.router.poll(5000)
    bench.router.recv_multipart()


@pytest.mark.req("CMP-017")
def test_the_worker_rests_as_its_duty_says_and_answers_messages_meanwhile(bench):
    """Found in review: the agent's Admit and Ping each tick cut the rest short: a 0.25 duty ran at 0.48.
    A slice that reports 0.1 s of work at duty 0.25 is followed by 0.3 s of rest, pings answered in it."""
    import threading

    worker = bench.worker
    starts: list[float] = []

    def slice_of_work() -> float:
        starts.append(time.monotonic())
        if len(starts) == 4:
            worker._stop = True  # noqa: SLF001
        return 0.1

    at_duty(bench, slice_of_work)
    stop = threading.Event()

    def agent() -> None:  # a ping every 20 ms; the router's only user while the worker runs
        seq = 0
        while not stop.is_set():
            seq += 1
            bench.router.send_multipart([b"compute", cp.encode(cp.Ping(seq))], zmq.NOBLOCK)
            stop.wait(0.02)

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    try:
        worker.run()
    finally:
        stop.set()
        thread.join()
    gaps = np.diff(starts)
    assert len(starts) == 4 and (gaps >= 0.3).all(), gaps  # each rest whole, whatever came meanwhile
    pongs = [m for m in bench.drain() if isinstance(m, cp.Pong)]
    assert len(pongs) >= 5  # taken in during the rests, not held until the next slice


@pytest.mark.req("RAD-108")
def test_the_worker_counts_down_to_the_saa_entry_between_admissions(bench):
    """Found in review: with a control period of a minute or more, the entry went from beyond the
    checkpoint's lead to passed between two admissions, and no checkpoint was taken."""
    job = training(bench)
    admit(bench, radiation=cp.Radiation(FluxClass.QUIET, False, -20.0, 5700.0, 100.0, 1.8e9 + 100.0))
    bench.worker.work_slice()
    tjob = bench.worker._training[job.job_id]  # noqa: SLF001
    assert tjob.status.saa_checkpoints == 0  # 100 s ahead: not yet
    bench.worker._radiation_at -= 75.0  # noqa: SLF001 - as if 75 s went by with no admission
    bench.worker.work_slice()
    assert tjob.status.saa_checkpoints == 1


@pytest.mark.req("RAD-108")
def test_a_running_training_job_is_ticked_through_the_rest_and_checkpoints_before_the_entry(bench):
    """Found in review: a training job kept running beside a continuous job was ticked once a slice;
    behind a file of seconds at duty 0.25 the rest of three times as long let the whole 30 s lead pass
    unseen. Here a slice of 100 s of work is followed by its rest, during which the entry comes near."""
    job = training(bench)
    admit(bench, radiation=cp.Radiation(FluxClass.QUIET, False, -20.0, 5700.0, 100.0, 1.8e9 + 100.0))
    tjob = bench.worker._training[job.job_id]  # noqa: SLF001
    bench.worker.work_slice()
    assert tjob.status.saa_checkpoints == 0  # 100 s ahead: not yet
    slices: list[float] = []

    def slice_of_work() -> float:  # a long one: the entry comes within the lead during the rest after it
        slices.append(time.monotonic())
        bench.worker._radiation_at -= 75.0  # noqa: SLF001 - as if the slice took 75 s
        bench.router.send_multipart([b"compute", cp.encode(cp.Stop())])  # taken in the rest, after its first tick
        return 100.0

    at_duty(bench, slice_of_work)
    bench.worker.run()
    assert len(slices) == 1 and tjob.status.saa_checkpoints == 1
    assert [e.args["job_id"] for e in bench.events("TRAIN_SAA_CHECKPOINT")] == [job.job_id]


@pytest.mark.req("CMP-017")
def test_a_stop_ends_the_worker_in_the_middle_of_its_rest(bench):
    """Found in review: during a rest only its end was looked for: after a long slice at a low duty the
    agent's Stop waited out the rest, and the agent killed the worker before it could checkpoint."""
    import threading

    worker = bench.worker
    slices: list[float] = []

    def slice_of_work() -> float:
        slices.append(time.monotonic())
        return 1e3  # a rest of 3000 s follows: only the Stop can end it (the suite's timeout would say if not)

    at_duty(bench, slice_of_work)
    threading.Timer(0.2, lambda: bench.router.send_multipart([b"compute", cp.encode(cp.Stop())])).start()
    worker.run()
    assert len(slices) == 1 and worker._stop  # noqa: SLF001


# --- products ------------------------------------------------------------------------------------


@pytest.mark.req("CMP-004")
@pytest.mark.parametrize("outputs, dtype", [(2, np.int16), (40000, np.int32)])
def test_a_products_classes_take_two_bytes_a_tile_unless_the_model_has_more_outputs(bench, outputs, dtype):
    """Classes were numpy's int64, 5/8 of a product's bytes on the link; int16 holds any class of a model
    of up to 32767 outputs, and a wider model's are int32, never wrapped."""
    w = np.zeros((2, outputs), np.float32)
    w[0, -1] = w[1, outputs // 2] = 1.0  # the last class for one kind of tile, a middle one for the other
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["probabilities"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", outputs])],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bench.worker.store.install("wide", "1", model.SerializeToString(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    bench.data_set("xs", np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.5]], np.float32))
    admit(bench, abft_checks=False)
    job = bench.infer(1, "xs", model="wide")
    assert job.state.value == "DONE", job.detail
    classes = np.load(bench.root / "products" / "job00001-xs.npz")["classes"]
    assert classes.dtype == dtype
    assert classes.tolist() == [outputs - 1, outputs // 2, outputs - 1]


@pytest.mark.req("CMP-004")
def test_a_rebuild_cut_short_or_a_working_manifest_gone_never_replaces_the_grounds_golden_version(tmp_path,
                                                                                               monkeypatch):
    """Found in audit: the rebuild moved the corrupt manifest aside before writing the new one; cut there (a power
    cut, a full disk), the next start found no working manifest, took it for a first start, and installed the
    shipped model as golden, deleting the ground's golden version. The corrupt one is copied aside, not moved, and
    a missing working manifest beside a golden copy is rebuilt from it."""
    import flight.compute.store as store_module
    from flight.compute.store import Copy, Provenance

    first = WorkerBench(tmp_path)
    first.worker.install_shipped_models()
    import onnx

    ground = onnx.load_from_string((MODELS_DIR / MODEL_FILE).read_bytes())  # the ground's version: the shipped model's
    ground.doc_string = "version 2"  # inputs and result (a model its jobs can use), other bytes
    first.worker.store.activate(MODEL_NAME, "2", ground.SerializeToString(), Provenance("alice", True), golden=True)
    first.close()
    manifest = tmp_path / "models" / "manifest.json"
    raw = bytearray(manifest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    manifest.write_bytes(bytes(raw))
    real = store_module.write_checked_json

    def full(path, body):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "write_checked_json", full)
    b = WorkerBench(tmp_path)
    b.worker.install_shipped_models()  # cut: the corrupt manifest stays where it was
    b.close()
    monkeypatch.setattr(store_module, "write_checked_json", real)
    assert manifest.exists()
    for gone in (False, True):
        if gone:
            manifest.unlink()
        b = WorkerBench(tmp_path)
        try:
            b.worker.install_shipped_models()
            assert [(e.name, e.version) for e in b.worker.store.list(Copy.GOLDEN)] == [(MODEL_NAME, "2")]
            assert b.worker.store.state(MODEL_NAME).active.version == "2"
        finally:
            b.close()


@pytest.mark.req("CMP-004")
def test_a_worker_whose_working_manifest_is_corrupt_starts_rebuilds_it_and_runs_the_shipped_model(tmp_path):
    """Found in audit: one flipped bit in models/manifest.json and the worker died before its hello at every
    start (install_shipped_models read it unguarded), restarted by the agent for good, no model run, while
    the golden copy was intact. Now it is moved aside, rebuilt from the golden copy, and said."""
    first = WorkerBench(tmp_path)
    first.worker.install_shipped_models()
    first.close()
    manifest = tmp_path / "models" / "manifest.json"
    raw = bytearray(manifest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    manifest.write_bytes(bytes(raw))
    b = WorkerBench(tmp_path)
    try:
        b.worker.install_shipped_models()  # what run() does first, before its hello
        [said] = b.events("COMPUTE_STATE_CORRUPT")
        assert said.args["what"] == "model store's working manifest" and "manifest corrupt" in said.args["reason"]
        assert "rebuilt from the golden copy (" + MODEL_NAME in said.args["outcome"]
        assert b.worker.compute_state_corrupt == 1 and (tmp_path / "models" / "manifest.json.corrupt").exists()
        loaded = b.worker.store.load(MODEL_NAME)
        assert not loaded.from_golden and loaded.bytes == (MODELS_DIR / MODEL_FILE).read_bytes()
        assert b.worker.store.load_reference(MODEL_NAME, loaded.version) is not None  # made again
        b.worker._states.clear()
        spec = cp.JobSpec(1, JobKind.INFERENCE, "cloud_tiles_test", model=MODEL_NAME)
        job = b.request(lambda r: cp.StartJob(r, spec))
        assert job.ok, job.reason
    finally:
        b.close()
    # Both manifests corrupt: said, and the worker still starts (no model to run, each job refused saying why).
    manifest.write_bytes(bytes(raw))
    golden = tmp_path / "models" / "golden" / "manifest.json"
    os.chmod(golden, 0o644)
    golden.write_bytes(b"\x00 not json")
    b = WorkerBench(tmp_path)
    try:
        b.worker.install_shipped_models()
        [said] = b.events("COMPUTE_STATE_CORRUPT")
        assert said.args["what"] == "model store" and "golden copy is repaired" in said.args["outcome"]
        job = b.request(lambda r: cp.StartJob(r, cp.JobSpec(2, JobKind.INFERENCE, "cloud_tiles_test",
                                                                        model=MODEL_NAME)))
        assert not job.ok and "manifest corrupt" in job.reason
    finally:
        b.close()
