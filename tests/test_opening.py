"""Opening a session on a board (flight/compute/opening.py, Worker._open_session): the worker answers its
watchdog while onnxruntime opens a model (where TensorRT builds its engine), gives up past compute_open_s,
and skips a provider whose opens of a version never end; TensorRT's engine caches are sealed and checked.

No GPU here: the provider other than the CPU that these tests skip is onnxruntime's Azure provider, which
this build has and which opens a session as any other does; an open that never ends (a TensorRT build of a
large model, as a watchdog sees it) is onnxruntime's call made to wait for good in a worker process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import zmq
from onnx import TensorProto, helper

import flight.compute.worker as worker_module
from flight.compute import protocol as cp
from flight.compute.opening import (
    KEEP_ENGINES,
    MAX_SKIPS,
    UNFINISHED_LIMIT,
    EngineCache,
    OpenRecord,
    tensorrt_options,
    warm_up,
    warm_up_shapes,
)
from flight.compute.providers import CPU, CUDA, TENSORRT
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME
from flight.compute.worker import MODELS_DIR, OPEN_LIMIT_EXIT
from flight.link.definitions import DICTIONARY, Admission, JobKind
from flight.storage import read_checked_json, write_checked_json
from tests.model_helpers import WorkerBench
from tests.test_scrub import admissions

REPO = Path(__file__).resolve().parent.parent
AZURE = "AzureExecutionProvider"  # not the CPU, in this onnxruntime build, and it opens a session
SHA = "ab" * 32
OTHER = "cd" * 32
SHIPPED = (MODELS_DIR / MODEL_FILE).read_bytes()


def another_version() -> bytes:
    model = onnx.load_from_string(SHIPPED)
    model.doc_string = "another version of the same graph"
    return model.SerializeToString()


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    yield b
    b.close()


# --- the record of opens ----------------------------------------------------------------------------


@pytest.mark.req("CMP-018")
def test_two_opens_in_a_row_left_unfinished_skip_that_provider_for_that_version_never_the_cpu(tmp_path):
    record = OpenRecord(tmp_path / "opening.json")
    assert record.begin(SHA, "m", TENSORRT) == (None, False)  # a worker begins, and is lost
    before, skip = record.begin(SHA, "m", TENSORRT)  # the next one finds it
    assert before.tries == 1 and not skip and record.skipped(SHA) == []
    before, skip = record.begin(SHA, "m", TENSORRT)  # lost again: the third skips it
    assert before.tries == UNFINISHED_LIMIT and skip and record.skipped(SHA) == [TENSORRT]
    assert record.skipped(OTHER) == []  # another version is not touched
    # The next provider: an open that ends is struck off, and the count starts again.
    assert record.begin(SHA, "m", CUDA) == (None, False)
    record.end(SHA, CUDA)
    assert record.begin(SHA, "m", CUDA) == (None, False)
    assert record.skipped(SHA) == [TENSORRT]  # for good
    # Nothing is left after the CPU: its opens that never end are counted, never skipped.
    for _ in range(UNFINISHED_LIMIT + 2):
        before, skip = record.begin(OTHER, "m", CPU)
        assert not skip
    assert before.tries == UNFINISHED_LIMIT + 1 and record.skipped(OTHER) == []


@pytest.mark.req("CMP-018")
def test_the_record_of_opens_is_bounded_and_one_that_fails_its_check_is_moved_aside_and_said(tmp_path):
    path = tmp_path / "opening.json"
    said: list[str] = []
    record = OpenRecord(path, said.append)
    versions = [f"{i:064x}" for i in range(MAX_SKIPS + 5)]
    for sha in versions:
        for _ in range(UNFINISHED_LIMIT + 1):
            record.begin(sha, "m", TENSORRT)
    body = read_checked_json(path)
    assert len(body["skip"]) == MAX_SKIPS and len(body["unfinished"]) <= MAX_SKIPS
    assert record.skipped(versions[-1]) == [TENSORRT] and record.skipped(versions[0]) == []  # the oldest dropped
    assert not said
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"Tensorrt")] ^= 0x20  # a bit flipped on flash
    path.write_bytes(bytes(raw))
    assert record.skipped(versions[-1]) == []  # every provider tried again
    assert len(said) == 1 and "SHA-256 mismatch" in said[0] and str(tmp_path) not in said[0]
    assert (tmp_path / "opening.json.corrupt").exists() and not path.exists()
    # Well formed, its entries not: each refused, naming why.
    for hostile in ({"unfinished": [["../../etc/passwd", "m", TENSORRT, 5]], "skip": []},
                    {"unfinished": [[SHA, "m", TENSORRT, 0]], "skip": []},
                    {"unfinished": "everything", "skip": 3}, {"skip": []}, ["not", "a", "table"],
                    {"unfinished": [], "skip": [[SHA, ["x" * 10_000]]]}):
        write_checked_json(path, hostile)
        assert record.begin(SHA, "m", TENSORRT) == (None, False)  # read as empty, begun afresh
    assert len(said) == 7 and "out of range" in said[1] and "out of range" in said[-1]


# --- TensorRT: its options, its warm-up, its engine cache -------------------------------------------


@pytest.mark.req("CMP-018")
def test_tensorrt_caches_each_version_apart_and_the_warm_up_covers_every_batch_a_job_runs(tmp_path):
    assert tensorrt_options(tmp_path / SHA) == {"trt_engine_cache_enable": "True",
                                                "trt_engine_cache_path": str(tmp_path / SHA)}
    assert warm_up_shapes(["N", 4, 16, 16], cp.MAX_BATCH) == [[1, 4, 16, 16], [cp.MAX_BATCH, 4, 16, 16]]
    assert warm_up_shapes([8, 12], cp.MAX_BATCH) == [[8, 12]]  # static: built at creation anyway
    assert warm_up_shapes(["N", "H", 16], cp.MAX_BATCH) == []  # an unknown size past the batch: not guessed
    assert warm_up_shapes([], cp.MAX_BATCH) == []
    session = ort.InferenceSession(SHIPPED, providers=[CPU])
    assert warm_up(session, cp.MAX_BATCH) == 2  # a real session, run on both shapes
    two = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "two_inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 2])]), opset_imports=[helper.make_opsetid("", 17)])
    assert warm_up(ort.InferenceSession(two.SerializeToString(), providers=[CPU]), cp.MAX_BATCH) == 0  # not guessed


@pytest.mark.req("CMP-018")
def test_an_engine_cache_that_differs_from_its_seal_is_deleted_and_built_again(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    directory = cache.directory(SHA)
    assert cache.check(SHA) is None  # none yet

    def engine_written() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "TensorrtExecutionProvider_TRTKernel_graph_0_sm87.engine").write_bytes(bytes(range(256)) * 64)
        (directory / "TensorrtExecutionProvider_TRTKernel_graph_0_sm87.profile").write_bytes(b"1 64")

    engine_written()  # and the power cut before the open ended
    assert "never sealed" in cache.check(SHA) and not directory.exists()
    engine_written()
    cache.seal(SHA)
    assert cache.check(SHA) is None and directory.is_dir()  # reused as it is
    engine = next(directory.glob("*.engine"))
    raw = bytearray(engine.read_bytes())
    raw[1000] ^= 0x04  # one bit of a weight in the engine, on flash
    engine.write_bytes(bytes(raw))
    why = cache.check(SHA)
    assert engine.name in why and not directory.exists()
    for change in (lambda: next(directory.glob("*.profile")).unlink(), lambda: (directory / "extra").write_bytes(b"x"),
                   lambda: (directory / "sealed.json").write_text("{}")):
        engine_written()
        cache.seal(SHA)
        change()
        assert cache.check(SHA) is not None and not directory.exists()
    for hostile in ("../" * 3 + "etc", "AB" * 32, ""):
        with pytest.raises(ValueError):
            cache.directory(hostile)


@pytest.mark.req("CMP-018")
def test_engine_caches_are_kept_to_the_newest_few_and_unsealed_ones_of_other_versions_go(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    versions = [f"{i:064x}" for i in range(KEEP_ENGINES + 2)]
    for age, sha in enumerate(versions):
        cache.directory(sha).mkdir(parents=True)
        (cache.directory(sha) / "e.engine").write_bytes(sha.encode())
        cache.seal(sha)
        os.utime(cache.directory(sha) / "sealed.json", (1e9 + age, 1e9 + age))  # sealed in this order
    stray = cache.directory("ef" * 32)
    stray.mkdir()
    (stray / "e.engine").write_bytes(b"half")  # an open of another version that never ended
    cache.directory(SHA).mkdir()
    (cache.directory(SHA) / "e.engine").write_bytes(b"new")
    cache.seal(SHA)
    kept = sorted(p.name for p in (tmp_path / "trt").iterdir())
    assert kept == sorted([SHA, *versions[-(KEEP_ENGINES - 1):]])


# --- the worker ---------------------------------------------------------------------------------------


@pytest.mark.req("CMP-012", "CMP-018")
def test_the_worker_answers_pings_while_a_session_opens_and_keeps_other_messages_for_its_loop(bench, monkeypatch):
    real = worker_module.open_session
    answered: list = []

    def opening(*args, **kwargs):  # on the open's own thread: the worker's must answer meanwhile
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(71))])
        bench.router.send_multipart([b"compute", cp.encode(cp.CancelJob(71, 99))])
        deadline = time.monotonic() + 30.0
        while not any(isinstance(m, cp.Pong) for m in answered) and time.monotonic() < deadline:
            if bench.router.poll(100):
                answered.append(cp.decode(bench.router.recv_multipart()[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "open_session", opening)
    opened = bench.worker._open_session(SHIPPED, MODEL_NAME)  # noqa: SLF001
    assert opened.provider == CPU
    assert [m.seq for m in answered if isinstance(m, cp.Pong)] == [71]  # answered while the open went on
    assert [type(m).__name__ for m in bench.worker._deferred] == ["CancelJob"]  # noqa: SLF001 - for the loop
    assert read_checked_json(bench.root / "opening.json")["unfinished"] == []  # written down, struck off


@pytest.mark.req("CMP-018")
def test_a_provider_whose_opens_of_a_version_never_ended_is_skipped_for_it_and_said(bench):
    sha = hashlib.sha256(SHIPPED).hexdigest()
    record = OpenRecord(bench.root / "opening.json")
    record.begin(sha, MODEL_NAME, AZURE)  # as a worker lost mid-open leaves it
    bench.worker.providers = (AZURE, CPU)
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == AZURE  # noqa: SLF001 - once: tried again
    [again] = bench.events("MODEL_OPEN_UNFINISHED")
    assert again.args["tries"] == 1 and again.args["provider"] == AZURE and "again" in again.args["outcome"]
    for _ in range(UNFINISHED_LIMIT):
        record.begin(sha, MODEL_NAME, AZURE)  # two more lost in a row
    opened = bench.worker._open_session(SHIPPED, MODEL_NAME)  # noqa: SLF001
    assert opened.provider == CPU and opened.fallbacks[0].startswith(f"{AZURE}: skipped for this version")
    skipped = bench.events("MODEL_OPEN_UNFINISHED")[-1]
    assert skipped.args["tries"] == UNFINISHED_LIMIT and "skipped for this version" in skipped.args["outcome"]
    bench.restart()  # for good, in the next worker too; another version is not touched
    bench.worker.providers = (AZURE, CPU)
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == CPU  # noqa: SLF001
    assert bench.worker._open_session(another_version(), MODEL_NAME).provider == AZURE  # noqa: SLF001


@pytest.mark.req("CMP-016", "CMP-018")
def test_a_record_of_opens_the_disk_will_not_take_leaves_the_open_to_go_on_said_and_counted(bench):
    for name in ("opening.json", "opening.json.corrupt"):
        (bench.root / name / "held").mkdir(parents=True)  # a rename over either fails, as on a failing disk
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == CPU  # noqa: SLF001
    [said] = bench.events("COMPUTE_WRITE_FAILED")
    assert said.args["what"] == "the record of its opens"
    assert bench.worker.status().compute_writes_failed == 1  # not written down, so nothing to strike off


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-018")
def test_a_worker_past_compute_open_s_says_so_and_exits_and_the_next_one_opens_again(tmp_path):
    root = tmp_path / "compute"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"ipc://{tmp_path}/compute.sock"
    router.bind(endpoint)
    got: list = []
    procs = []

    def start(hanging: bool) -> subprocess.Popen:
        # The first worker's open never ends, as a TensorRT build of a large model seems to a watchdog: a
        # build no CPU here can make last, stood in for by onnxruntime's call waiting for good.
        hang = "w.open_session = lambda *args, **kwargs: threading.Event().wait()\n" if hanging else ""
        code = f"import sys, threading\nimport flight.compute.worker as w\n{hang}sys.exit(w.main(sys.argv[1:]))"
        proc = subprocess.Popen([sys.executable, "-c", code, "--endpoint", endpoint, "--root", str(root),
                                 "--parent-pid", str(os.getpid())], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=(tmp_path / f"worker{len(procs)}.log").open("wb"))
        procs.append(proc)
        return proc

    def wait_for(found, proc, timeout_s=60.0):
        """The first message from now on that ``found`` accepts; None once ``proc`` has exited and said all."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if router.poll(200):
                got.append(cp.decode(router.recv_multipart()[1]))
                if found(got[-1]):
                    return got[-1]
            elif proc.poll() is not None:
                return None
        return None

    def event(name):
        return lambda m: isinstance(m, cp.WorkerEvent) and m.name == name

    def admit(limit_s):
        router.send_multipart([b"compute", cp.encode(cp.Admit(
            Admission.ALL, 1, 8, 1.0, None, "test", cp.NO_RADIATION, 0.0, False, True, False, False,
            open_limit_s=limit_s))])

    try:
        first = start(hanging=True)
        assert wait_for(lambda m: isinstance(m, cp.Hello), first)
        admit(0.5)
        router.send_multipart([b"compute", cp.encode(cp.StartJob(1, cp.JobSpec(1, JobKind.INFERENCE,
                                                                               "cloud_tiles_test")))])
        said = wait_for(event("MODEL_OPEN_UNFINISHED"), first)
        assert said is not None and said.args["tries"] == 1 and "compute_open_s (0.5 s)" in said.args["outcome"]
        assert first.wait(timeout=30) == OPEN_LIMIT_EXIT
        [left] = read_checked_json(root / "opening.json")["unfinished"]
        assert left[1:] == [MODEL_NAME, CPU, 1]
        second = start(hanging=False)  # as the agent starts another
        assert wait_for(lambda m: isinstance(m, cp.Hello), second)
        admit(DICTIONARY.parameter_by_name["compute_open_s"].default)
        again = wait_for(event("MODEL_OPEN_UNFINISHED"), second)
        assert again.args["tries"] == 1 and "opening it again" in again.args["outcome"]
        done = wait_for(lambda m: isinstance(m, cp.WorkerEvent) and m.name in ("JOB_DONE", "JOB_FAILED"), second)
        assert done is not None and done.name == "JOB_DONE", done
        assert read_checked_json(root / "opening.json")["unfinished"] == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        router.close(0)


@pytest.mark.system  # a real ZeroMQ socket pair
@pytest.mark.req("CMP-018")
def test_every_admission_carries_the_parameter_compute_open_s(tmp_path):
    admits, _ = admissions(tmp_path / "compute", dict(DICTIONARY.parameter_defaults, compute_open_s=42.0))
    assert admits and admits[0].open_limit_s == 42.0
