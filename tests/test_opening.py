"""Opening a session on a board (flight/compute/opening.py, Worker._open_session): the worker answers its
watchdog while onnxruntime opens a model (where TensorRT builds its engine), gives up past compute_open_s,
and skips a provider whose opens of a version never end; TensorRT's engine caches are sealed and checked.

No GPU here: the provider other than the CPU that these tests skip is onnxruntime's Azure provider, which
this build has and which opens a session as any other does; an open that never ends (a TensorRT build of a
large model, as a watchdog sees it) is onnxruntime's call made to wait for good in a worker process."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zmq
from onnx import TensorProto, helper

from flight.agent.compute import ComputeSupervisor
from flight.agent.dispatcher import CommandFailed
import flight.compute.opening as opening_module
import flight.compute.worker as worker_module
from flight.compute import protocol as cp
from flight.compute.opening import (
    KEEP_ENGINES,
    MAX_SKIPS,
    UNFINISHED_LIMIT,
    EngineCache,
    OpenRecord,
    Undeletable,
    tensorrt_options,
    warm_up,
    warm_up_plan,
    warm_up_shapes,
)
from flight.compute.providers import CPU, CUDA, TENSORRT
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, load_held_out
from flight.compute.worker import MODELS_DIR
from flight.link.definitions import DICTIONARY, Admission, JobKind
from flight.link.dictionary import FailureCode
from flight.storage import read_checked_json, write_checked_json
from tests.model_helpers import FixedClock, WorkerBench
from tests.test_scrub import admissions

REPO = Path(__file__).resolve().parent.parent
AZURE = "AzureExecutionProvider"  # not the CPU, in this onnxruntime build, and it opens a session
SHA = "ab" * 32
OTHER = "cd" * 32
SHIPPED = (MODELS_DIR / MODEL_FILE).read_bytes()
TILES = load_held_out().tiles.astype(np.float32)


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
def test_attempts_that_never_returned_are_counted_in_a_row_per_version_and_provider_and_kept(tmp_path):
    path = tmp_path / "opening.json"
    record = OpenRecord(path)
    assert record.begin(SHA, TENSORRT) == 1  # written down before it begins; the worker is lost
    record = OpenRecord(path)  # the next worker reads it
    assert record.unfinished(SHA) == {TENSORRT: 1} and record.unfinished(OTHER) == {}
    assert record.begin(SHA, TENSORRT) == 2
    record.withdraw(SHA, TENSORRT)  # given up on purpose (stopped, nothing admitted): not held against it
    assert OpenRecord(path).unfinished(SHA) == {TENSORRT: 1}
    record.begin(SHA, CUDA)
    record.end(SHA, CUDA)  # returned: struck off, the count starts again
    assert OpenRecord(path).unfinished(SHA) == {TENSORRT: 1}
    record.skip(SHA, TENSORRT)
    record = OpenRecord(path)
    assert record.skipped(SHA) == [TENSORRT] and record.unfinished(SHA) == {} and record.skipped(OTHER) == []
    record.skip(SHA, CPU)
    assert OpenRecord(path).skipped(SHA) == [TENSORRT, CPU]


@pytest.mark.req("CMP-018")
def test_the_record_of_opens_is_bounded_and_one_that_fails_its_check_is_moved_aside_and_said_once(tmp_path):
    path = tmp_path / "opening.json"
    said: list[tuple[str, bool]] = []
    record = OpenRecord(path, lambda reason, moved: said.append((reason, moved)))
    versions = [f"{i:064x}" for i in range(MAX_SKIPS + 5)]
    for sha in versions:
        record.begin(sha, TENSORRT)
        record.skip(sha, TENSORRT)
        record.begin(sha, CUDA)
    body = read_checked_json(path)
    assert len(body["skip"]) == MAX_SKIPS and len(body["unfinished"]) == MAX_SKIPS
    record = OpenRecord(path)
    assert record.skipped(versions[-1]) == [TENSORRT] and record.skipped(versions[0]) == []  # the oldest dropped
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"Tensorrt")] ^= 0x20  # a bit flipped on flash
    path.write_bytes(bytes(raw))
    record = OpenRecord(path, lambda reason, moved: said.append((reason, moved)))
    assert record.skipped(versions[-1]) == [] and record.unfinished(versions[-1]) == {}  # every provider again
    record.skipped(versions[-1])
    assert len(said) == 1 and "SHA-256 mismatch" in said[0][0] and said[0][1] and str(tmp_path) not in said[0][0]
    assert (tmp_path / "opening.json.corrupt").exists() and not path.exists()
    # Well formed, its entries not: each refused, naming why.
    for hostile in ({"unfinished": [["../../etc/passwd", TENSORRT, 5]], "skip": []},
                    {"unfinished": [[SHA, TENSORRT, 0]], "skip": []},
                    {"unfinished": [[SHA, TENSORRT, float("inf")]], "skip": []},
                    {"unfinished": [[SHA, TENSORRT, 10**12]], "skip": []},
                    {"unfinished": "everything", "skip": 3}, {"skip": []}, ["not", "a", "table"],
                    {"unfinished": [], "skip": [[SHA, ["x" * 10_000]]]}):
        write_checked_json(path, hostile)
        record = OpenRecord(path, lambda reason, moved: said.append((reason, moved)))
        assert record.unfinished(SHA) == {} and record.begin(SHA, TENSORRT) == 1  # read as empty, begun afresh
        path.unlink()
    assert len(said) == 9 and all("out of range" in said[i][0] for i in (1, 2, 4, 8))
    # One that cannot be moved aside either: said so.
    for name in ("opening.json", "opening.json.corrupt"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)
        (tmp_path / name).unlink(missing_ok=True)
        (tmp_path / name / "held").mkdir(parents=True)
    OpenRecord(path, lambda reason, moved: said.append((reason, moved)))
    assert len(said) == 10 and said[-1][1] is False


# --- TensorRT: its options, its warm-up, its engine cache -------------------------------------------


@pytest.mark.req("CMP-018")
def test_tensorrt_caches_each_version_apart_and_the_warm_up_covers_every_batch_a_job_runs(tmp_path):
    assert tensorrt_options(tmp_path / SHA) == {"trt_engine_cache_enable": "True",
                                                "trt_engine_cache_path": str(tmp_path / SHA)}
    assert warm_up_shapes([None, 4, 16, 16], cp.MAX_BATCH) == [[1, 4, 16, 16], [cp.MAX_BATCH, 4, 16, 16]]
    assert warm_up_shapes([8, 12], cp.MAX_BATCH) == [[8, 12]]  # static: built at creation anyway
    assert warm_up_shapes([None, None, 16], cp.MAX_BATCH) == []  # an unknown size past the batch: not guessed
    assert warm_up_shapes([], cp.MAX_BATCH) == []
    plan = warm_up_plan(SHIPPED, cp.MAX_BATCH)
    assert plan is not None and plan[0] == "tiles" and plan[2] == [[1, 4, 16, 16], [cp.MAX_BATCH, 4, 16, 16]]
    assert warm_up(ort.InferenceSession(SHIPPED, providers=[CPU]), plan)  # a real session, run on both
    two = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "two_inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 2])]), opset_imports=[helper.make_opsetid("", 17)])
    assert warm_up_plan(two.SerializeToString(), cp.MAX_BATCH) is None  # not guessed: no cache for it
    sized = onnx.load_from_string(SHIPPED)
    sized.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    assert warm_up_plan(sized.SerializeToString(), cp.MAX_BATCH) is None
    wrong = (plan[0], plan[1], [[1, 3, 16, 16]])  # a run that fails stops the warm-up, and says so
    assert not warm_up(ort.InferenceSession(SHIPPED, providers=[CPU]), wrong)


def engine_written(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "TensorrtExecutionProvider_TRTKernel_graph_0_sm87.engine").write_bytes(bytes(range(256)) * 64)
    (directory / "TensorrtExecutionProvider_TRTKernel_graph_0_sm87.profile").write_bytes(b"1 64")


@pytest.mark.req("CMP-018")
def test_an_engine_cache_that_differs_from_its_seal_is_deleted_and_built_again(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    directory = cache.directory(SHA)
    assert cache.check(SHA) is None  # none yet
    engine_written(directory)  # and the open never ended (a power cut, or given up): nothing vouches for it
    assert cache.check(SHA) is None and not directory.exists()  # deleted, but no fault of the files: not said
    engine_written(directory)
    cache.seal(SHA)
    assert cache.check(SHA) is None and directory.is_dir()  # used as it is
    engine = next(directory.glob("*.engine"))
    raw = bytearray(engine.read_bytes())
    raw[1000] ^= 0x04  # one bit of a weight in the engine, on flash
    engine.write_bytes(bytes(raw))
    why = cache.check(SHA)
    assert engine.name in why and not directory.exists()
    elsewhere = tmp_path / "elsewhere"
    engine_written(elsewhere)
    for change in (lambda: next(directory.glob("*.profile")).unlink(), lambda: (directory / "extra").write_bytes(b"x"),
                   lambda: (directory / "sealed.json").write_text("{}"),
                   lambda: (directory / "x.engine").symlink_to(next(elsewhere.glob("*.engine")))):
        engine_written(directory)
        cache.seal(SHA)
        change()
        assert cache.check(SHA) is not None and not directory.exists()
    directory.symlink_to(elsewhere)  # a link where the cache should be: not followed, removed
    assert "not a directory of its own" in cache.check(SHA) and not directory.is_symlink() and elsewhere.is_dir()
    for hostile in ("../" * 3 + "etc", "AB" * 32, ""):
        with pytest.raises(ValueError):
            cache.directory(hostile)


@pytest.mark.req("CMP-018")
def test_engines_tensorrt_writes_after_the_seal_are_sealed_again_a_flipped_bit_is_not(tmp_path):
    """Found in review: a continuous job's file of hundreds of tiles makes TensorRT build an engine at a run,
    after the seal, and every next open called the cache corrupt."""
    cache = EngineCache(tmp_path / "trt")
    directory = cache.directory(SHA)
    engine_written(directory)
    cache.seal(SHA)
    assert not cache.reseal_if_changed(SHA)  # nothing written since
    (directory / "TensorrtExecutionProvider_TRTKernel_graph_0_sm87_300.engine").write_bytes(b"built at a run")
    assert cache.reseal_if_changed(SHA) and cache.check(SHA) is None  # sealed again: used as it is
    engine = next(directory.glob("*sm87.engine"))
    before = engine.stat()
    raw = bytearray(engine.read_bytes())
    raw[7] ^= 0x80  # a bit flipped on flash: neither its size nor its time changes
    engine.write_bytes(bytes(raw))
    os.utime(engine, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not cache.reseal_if_changed(SHA)
    (directory / "TensorrtExecutionProvider_TRTKernel_graph_0_sm87_500.engine").write_bytes(b"another, later")
    assert cache.reseal_if_changed(SHA)  # a new file: sealed; the flipped one keeps the digest it was sealed with
    assert engine.name in cache.check(SHA) and not directory.exists()  # found (in review: it was sealed again)


@pytest.mark.req("CMP-018")
def test_an_engine_cache_that_cannot_be_deleted_is_refused(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path / "trt")
    engine_written(cache.directory(SHA))  # never sealed, on a filesystem that refuses to let it go
    monkeypatch.setattr(opening_module.shutil, "rmtree", lambda path, ignore_errors=False: None)
    with pytest.raises(Undeletable, match="could not be deleted") as never_sealed:
        cache.check(SHA)
    assert "never sealed" in never_sealed.value.why
    monkeypatch.undo()
    cache.check(SHA)
    engine_written(cache.directory(SHA))
    cache.seal(SHA)
    (cache.directory(SHA) / "extra.engine").write_bytes(b"x")
    monkeypatch.setattr(opening_module.shutil, "rmtree", lambda path, ignore_errors=False: None)
    with pytest.raises(Undeletable) as differs:
        cache.check(SHA)
    assert "extra.engine" in differs.value.why  # the reason it failed, for the event that says so


@pytest.mark.req("CMP-018")
def test_engine_caches_are_kept_to_the_most_recently_used_and_nothing_else_there_is_touched(tmp_path):
    cache = EngineCache(tmp_path / "trt")
    versions = [f"{i:064x}" for i in range(KEEP_ENGINES)]
    for age, sha in enumerate(versions):
        engine_written(cache.directory(sha))
        cache.seal(sha)
        os.utime(cache.directory(sha) / "sealed.json", (1e9 + age, 1e9 + age))  # sealed in this order, long ago
    assert cache.check(versions[0]) is None  # the oldest, used again: now the most recent
    stray = cache.directory("ef" * 32)
    engine_written(stray)  # an open of another version that never ended
    (tmp_path / "trt" / "datasets").mkdir()  # not a cache: never touched
    engine_written(cache.directory(SHA))
    cache.seal(SHA)
    kept = sorted(p.name for p in (tmp_path / "trt").iterdir())
    assert kept == sorted(["datasets", SHA, versions[0], *versions[-(KEEP_ENGINES - 2):]])  # the least used went


# --- the worker ---------------------------------------------------------------------------------------


@pytest.mark.req("CMP-012", "CMP-018")
def test_the_worker_answers_pings_while_a_session_opens_and_keeps_other_messages_for_its_loop(bench, monkeypatch):
    real = worker_module.open_session
    answered: list = []

    def opening(*args, **kwargs):  # on the open's own thread: the worker's must answer meanwhile
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(71))])
        bench.router.send_multipart([b"compute", cp.encode(cp.CancelJob(71, 99))])
        deadline = time.monotonic() + 30.0
        while not (any(isinstance(m, cp.Pong) for m in answered) and any(isinstance(m, cp.Status) for m in answered)) \
                and time.monotonic() < deadline:
            if bench.router.poll(100):
                answered.append(cp.decode(bench.router.recv_multipart()[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "open_session", opening)
    opened = bench.worker._open_session(SHIPPED, MODEL_NAME)  # noqa: SLF001
    assert opened.provider == CPU
    assert [m.seq for m in answered if isinstance(m, cp.Pong)] == [71]  # answered while the open went on
    assert any(isinstance(m, cp.Status) for m in answered)  # and the status each second, as the loop sends it
    assert [type(m).__name__ for m in bench.worker._deferred] == ["CancelJob"]  # noqa: SLF001 - for the loop
    assert read_checked_json(bench.root / "opening.json")["unfinished"] == []  # written down, struck off


@pytest.mark.req("CMP-018", "MDL-004")
def test_requests_during_a_long_open_are_answered_busy_at_once_and_an_install_is_not_given_up_outside_compute(
        bench, monkeypatch):
    """Found in review: a request kept through a half-hour build was answered after the agent had given up on it
    (an install reported failed, then done); and an install's reference check, in IDLE or SAFE (admission NONE
    at every tick), was given up as a job's open is."""
    real = worker_module.open_session
    monkeypatch.setattr(worker_module, "OPEN_BUSY_S", 0.0)  # as past ten seconds of a TensorRT build
    got: list = []

    def opening(*args, **kwargs):
        bench.router.send_multipart([b"compute", cp.encode(cp.Admit(Admission.NONE, 1, 128, 1.0, None, "IDLE",
                                                                      cp.NO_RADIATION, 0.0, False, True))])
        bench.router.send_multipart([b"compute", cp.encode(cp.CancelJob(72, 99))])
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(72))])  # answered after the two above were taken
        deadline = time.monotonic() + 30.0
        while not any(isinstance(m, cp.Pong) for m in got) and time.monotonic() < deadline:
            if bench.router.poll(100):
                got.append(cp.decode(bench.router.recv_multipart()[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "open_session", opening)
    opened = bench.worker._open_session(SHIPPED, MODEL_NAME, for_job=False)  # noqa: SLF001 - as an install's check
    assert opened.provider == CPU  # still here: nothing admitted does not give an install's open up
    [busy] = [m for m in got if isinstance(m, cp.Reply)]
    assert busy.req_id == 72 and not busy.ok and busy.code == int(FailureCode.BUSY) and "opening model" in busy.reason
    assert [type(m).__name__ for m in bench.worker._deferred] == ["Admit"]  # noqa: SLF001 - the newest only
    bench.worker._handle(bench.worker._deferred.pop())  # noqa: SLF001
    assert bench.worker.batch == cp.MAX_BATCH  # 128 asked: no more than TensorRT's engines are built for


@pytest.mark.req("CMP-018", "CMP-014")
def test_a_continuous_jobs_file_of_more_than_64_tiles_runs_in_parts_no_bigger(bench):
    """Found in review: a camera file of 300 tiles ran as one batch, past what TensorRT built its engines for
    at the open, and built one in the slice, where no ping is answered."""
    bench.worker.install_shipped_models()
    admitted = cp.Admit(Admission.ALL, 1, cp.MAX_BATCH, 1.0, None, "test", cp.NO_RADIATION, 0.0, False, True)
    bench.worker._handle(admitted)  # noqa: SLF001
    reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME,
                                                              continuous=True)))
    assert reply.ok, reply.reason
    tiles = np.concatenate([TILES] * 2)[:150]
    (bench.root / "incoming" / ".c.npy").parent.mkdir(parents=True, exist_ok=True)
    np.save(bench.root / "incoming" / ".c.npy", tiles)
    (bench.root / "incoming" / ".c.npy").rename(bench.root / "incoming" / "c.npy")
    bench.worker._session(MODEL_NAME)  # noqa: SLF001 - opened before, so that its runs can be watched
    sizes: list[int] = []
    for session in bench.worker._sessions.values():  # noqa: SLF001
        real = session.session.run
        session.session.run = lambda names, feed, *more, real=real: (sizes.append(len(next(iter(feed.values())))),
                                                                     real(names, feed, *more))[1]
    for _ in range(50):
        if (bench.root / "incoming" / "done" / "c.npy").exists():
            break
        bench.worker.work_slice()
    product = np.load(bench.root / "products" / "job00001-c.npz")
    assert len(product["classes"]) == 150 and sizes and max(sizes) <= cp.MAX_BATCH, sizes
    assert sum(sizes) >= 150 and bench.worker.totals.batches == 3  # 64, 64 and 22 (and any run twice)


@pytest.mark.req("CMP-018")
def test_a_provider_whose_attempts_on_a_version_never_returned_is_skipped_for_it_the_cpu_last(bench):
    sha = hashlib.sha256(SHIPPED).hexdigest()
    OpenRecord(bench.root / "opening.json").begin(sha, AZURE)  # as a worker lost mid-open leaves it
    bench.restart()
    bench.worker.providers = (AZURE, CPU)
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == AZURE  # noqa: SLF001 - once: tried again
    [again] = bench.events("MODEL_OPEN_UNFINISHED")
    assert again.args["tries"] == 1 and again.args["provider"] == AZURE and "again" in again.args["outcome"]
    for _ in range(UNFINISHED_LIMIT):
        OpenRecord(bench.root / "opening.json").begin(sha, AZURE)  # two more lost in a row
    bench.restart()
    bench.worker.providers = (AZURE, CPU)
    opened = bench.worker._open_session(SHIPPED, MODEL_NAME)  # noqa: SLF001
    assert opened.provider == CPU and opened.fallbacks[0].startswith(f"{AZURE}: skipped for this version")
    skipped = bench.events("MODEL_OPEN_UNFINISHED")[-1]
    assert skipped.args["tries"] == UNFINISHED_LIMIT and "skipped for this version" in skipped.args["outcome"]
    bench.restart()  # for good, in the next worker too; another version is not touched
    bench.worker.providers = (AZURE, CPU)
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == CPU  # noqa: SLF001
    assert bench.worker._open_session(another_version(), MODEL_NAME).provider == AZURE  # noqa: SLF001
    # The CPU is the last: a version whose attempts never returned there either is not opened again.
    for _ in range(UNFINISHED_LIMIT):
        OpenRecord(bench.root / "opening.json").begin(sha, CPU)
    bench.restart()
    bench.worker.providers = (AZURE, CPU)
    with pytest.raises(worker_module.OpenNeverEnded, match="install another version, or roll back"):
        bench.worker._open_session(SHIPPED, MODEL_NAME)  # noqa: SLF001


@pytest.mark.req("CMP-018")
def test_the_attempt_that_never_returns_is_the_one_written_down_not_the_first_tried(bench, monkeypatch):
    """Found in review: TensorRT refused at once, CUDA hung, and TensorRT was blamed and skipped."""
    sha = hashlib.sha256(SHIPPED).hexdigest()
    real = worker_module.open_session
    seen = []

    def opening(data, preferred, threads, *, attempt, **kwargs):  # as open_session goes down its list
        attempt(AZURE)  # refused at once, as TensorRT short of memory is
        attempt(CPU)  # the next: while it runs, the record says it is the one under way
        seen.append(OpenRecord(bench.root / "opening.json").unfinished(sha))
        return real(data, [CPU], threads, **kwargs)

    monkeypatch.setattr(worker_module, "open_session", opening)
    bench.worker.providers = (AZURE, CPU)
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == CPU  # noqa: SLF001
    assert seen == [{CPU: 1}] and OpenRecord(bench.root / "opening.json").unfinished(sha) == {}


@pytest.mark.req("CMP-016", "CMP-018")
def test_a_record_of_opens_the_disk_will_not_take_leaves_the_open_to_go_on_said_and_counted(bench):
    (bench.root / "opening.json" / "held").mkdir(parents=True)  # a rename over it fails, as on a failing disk
    assert bench.worker._open_session(SHIPPED, MODEL_NAME).provider == CPU  # noqa: SLF001
    [said] = bench.events("COMPUTE_WRITE_FAILED")
    assert said.args["what"] == "the record of its opens"
    assert bench.worker.status().compute_writes_failed == 2  # neither written down nor struck off


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-018")
def test_a_worker_past_compute_open_s_exits_and_one_told_to_stop_gives_up_not_held_against_it(tmp_path):
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
        hang = ("def hang(*args, attempt, **kwargs):\n    attempt('CPUExecutionProvider')\n"
                "    threading.Event().wait()\nw.open_session = hang\n") if hanging else ""
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

    def admit(limit_s, admission=Admission.ALL):
        router.send_multipart([b"compute", cp.encode(cp.Admit(
            admission, 1, 8, 1.0, None, "test", cp.NO_RADIATION, 0.0, False, True, False, False,
            open_limit_s=limit_s))])

    try:
        first = start(hanging=True)
        assert wait_for(lambda m: isinstance(m, cp.Hello), first)
        admit(0.5)
        router.send_multipart([b"compute", cp.encode(cp.StartJob(1, cp.JobSpec(1, JobKind.INFERENCE,
                                                                               "cloud_tiles_test")))])
        said = wait_for(event("MODEL_OPEN_UNFINISHED"), first)
        assert said is not None and said.args["tries"] == 1 and "compute_open_s (0.5 s)" in said.args["outcome"]
        assert first.wait(timeout=30) == cp.OPEN_LIMIT_EXIT
        [left] = read_checked_json(root / "opening.json")["unfinished"]
        assert left[1:] == [CPU, 1]  # held against the CPU: the provider it was on
        # Given up on purpose, twice: nothing admitted (SAFE, the battery floor), then told to stop. The worker
        # exits at once rather than compute on, and neither is held against the provider.
        for give_up in (lambda: admit(3600.0, Admission.NONE),
                        lambda: router.send_multipart([b"compute", cp.encode(cp.Stop())]),
                        lambda: hanging.send_signal(signal.SIGTERM)):  # as when the agent dies
            hanging = start(hanging=True)
            assert wait_for(lambda m: isinstance(m, cp.Hello), hanging)
            admit(3600.0)
            lost = wait_for(event("MODEL_OPEN_UNFINISHED"), hanging)  # the job resumed; the open before counted
            assert lost.args["tries"] == 1 and "opening it again" in lost.args["outcome"]
            deadline = time.monotonic() + 30.0  # the hanging attempt written down (in the open's thread) first
            while read_checked_json(root / "opening.json")["unfinished"] != [[*left[:2], 2]]:
                assert time.monotonic() < deadline, read_checked_json(root / "opening.json")
                time.sleep(0.02)  # a file another process writes: nothing to wait on but the time
            give_up()
            gone = wait_for(event("MODEL_OPEN_UNFINISHED"), hanging)
            assert gone is not None and "given up" in gone.args["outcome"], gone
            assert gone.args["provider"] == CPU and gone.args["tries"] == 0  # the one under way, not held against it
            assert hanging.wait(timeout=30) == cp.OPEN_ABANDONED_EXIT
            assert read_checked_json(root / "opening.json")["unfinished"] == [left]  # as before it began
        last = start(hanging=False)  # as the agent starts another
        assert wait_for(lambda m: isinstance(m, cp.Hello), last)
        admit(DICTIONARY.parameter_by_name["compute_open_s"].default)
        again = wait_for(event("MODEL_OPEN_UNFINISHED"), last)
        assert again.args["tries"] == 1 and "opening it again" in again.args["outcome"]
        done = wait_for(lambda m: isinstance(m, cp.WorkerEvent) and m.name in ("JOB_DONE", "JOB_FAILED"), last)
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


class _Faults:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    def record(self, what: str) -> None:
        self.recorded.append(what)


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-012", "CMP-018")
def test_the_agent_starts_again_without_a_fault_a_worker_that_gave_up_an_open_and_counts_one_past_the_limit(tmp_path):
    said: list[str] = []
    faults = _Faults()
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: said.append(name), faults, FixedClock(),
                            dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)
    try:
        for code, fault in ((cp.OPEN_ABANDONED_EXIT, False), (cp.OPEN_LIMIT_EXIT, True)):
            sup._kill()  # noqa: SLF001 - the worker the last round started, by its pid
            sup.proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
            sup.proc.wait()  # the worker that exited mid-open
            said.clear()
            faults.recorded.clear()
            sup._watchdog()  # noqa: SLF001 - the supervisor's tick
            assert ("COMPUTE_HUNG" in said) is fault and bool(faults.recorded) is fault
            assert sup.proc.poll() is None  # another worker started either way
    finally:
        sup.close()


class _StuckInTheDriver(subprocess.Popen):
    """A worker in an uninterruptible driver call: SIGKILL is pending until the call returns, so a wait
    for it does not end (a real process; only its wait is the stuck one's)."""

    stuck = True

    def wait(self, timeout=None):
        if not self.stuck:
            return super().wait(timeout)
        if timeout is None:
            raise AssertionError("the agent's loop waited for a killed worker with no bound")
        raise subprocess.TimeoutExpired(self.args, timeout)


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-012")
def test_the_watchdog_starts_a_new_worker_without_waiting_for_one_stuck_in_a_driver_call(tmp_path):
    """Found in an audit: the watchdog SIGKILLed a hung worker and waited for it with no bound; one stuck in
    the GPU driver (the hang the watchdog is for) dies only when the call returns, and the agent froze with it."""
    said: list[str] = []
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: said.append(name), _Faults(), FixedClock(),
                            dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)
    stuck = sup.proc = _StuckInTheDriver([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sup._waiting = (0, -1e9, 0.0)  # noqa: SLF001 - its last ping unanswered for ever
        sup._watchdog()  # noqa: SLF001 - the supervisor's tick
        assert "COMPUTE_HUNG" in said and sup.proc is not stuck and sup.proc.poll() is None, said
        assert sup.restarts == 1 and sup._unreaped == [stuck]  # noqa: SLF001 - looked at again, never waited for
        stuck.stuck = False  # the driver call returns: the kill lands, and the next tick reaps it
        stuck.wait(10)
        sup._watchdog()  # noqa: SLF001
        assert sup._unreaped == []  # noqa: SLF001
    finally:
        stuck.stuck = False
        stuck.kill()
        stuck.wait(10)
        sup.close()


class _MovingClock:
    """The agent's clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic_s(self) -> float:
        return self.t

    def now_s(self) -> float:
        return 1_794_830_400.0 + self.t


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-012")
def test_a_week_of_failed_worker_starts_waits_the_cap_not_an_overflow(tmp_path):
    """Found in audit: the wait was 10 s * 2 ** (n - 2), and past about 1026 failed starts (a week at the cap) the
    product raised OverflowError at every watchdog look."""
    root = tmp_path / "compute"
    root.mkdir()
    (root / "products").write_text("a file where the worker makes its directory: it dies at its start")
    clock = _MovingClock()
    sup = ComputeSupervisor(root, True, lambda name, **args: None, _Faults(), clock,
                            dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)
    try:
        sup.start()
        sup.failed_starts = 1100
        sup.proc.wait(60)
        sup._watchdog()  # noqa: SLF001 - the supervisor's tick
        assert sup.failed_starts == 1101 and sup._start_at_s == clock.t + 600.0  # noqa: SLF001
    finally:
        sup.close()


@pytest.mark.system  # worker processes
@pytest.mark.req("CMP-012")
def test_a_worker_that_dies_before_its_hello_is_started_again_later_and_later_and_commands_say_so(tmp_path):
    """Found in audit: a worker that could not start (its model store's manifest corrupt) was started again at
    every watchdog look, for good, a traceback in its log each time. The first failed start is tried again at
    once, then after 10 s, 20 s... (agent time); commands meanwhile fail at once saying why; a hello resets it."""
    root = tmp_path / "compute"
    root.mkdir()
    (root / "products").write_text("a file where the worker makes its directory: it dies at its start")
    clock, said = _MovingClock(), []
    sup = ComputeSupervisor(root, True, lambda name, **args: said.append(name), _Faults(), clock,
                            dict(DICTIONARY.parameter_defaults), lambda: 1, lambda where, exc: None)

    def dies() -> None:
        sup.proc.wait(60)
        sup._watchdog()  # noqa: SLF001 - the supervisor's tick

    try:
        sup.start()
        dies()
        assert sup.failed_starts == 1 and sup._start_at_s is None and sup.proc.returncode is None  # noqa: SLF001
        for n, wait_s in ((2, 10.0), (3, 20.0)):
            dies()
            assert sup.failed_starts == n and sup._start_at_s == clock.t + wait_s  # noqa: SLF001
            started = sup.proc
            with pytest.raises(CommandFailed, match=f"{n} times in a row; next try in {wait_s:.0f} s") as refused:
                sup._request(cp.RollbackModel(n, MODEL_NAME), lambda reply: {})  # noqa: SLF001
            assert refused.value.code is FailureCode.BUSY
            clock.t += wait_s - 1.0
            sup._watchdog()  # noqa: SLF001
            assert sup.proc is started  # not yet
            if n == 3:
                (root / "products").unlink()  # put right: the next worker starts and says hello
            clock.t += 1.0
            sup._watchdog()  # noqa: SLF001
            assert sup.proc is not started and sup._start_at_s is None  # noqa: SLF001
        assert said.count("COMPUTE_HUNG") == 3 and sup.restarts == 3
        deadline = time.monotonic() + 60
        while sup.state.value != "RUNNING":
            assert time.monotonic() < deadline and sup.proc.poll() is None, "no hello"
            sup._sock.poll(200)  # noqa: SLF001
            sup.receive()
        assert sup.failed_starts == 0 and "COMPUTE_STARTED" in said
    finally:
        sup.close()


@pytest.mark.req("MDL-004", "CMP-018")
def test_an_install_may_take_compute_open_s_before_the_agent_gives_up_on_its_answer(tmp_path):
    """Found in audit: MODEL_INSTALL failed BUSY after the agent's 60 s for any answer while the worker was still
    opening the model to check it (a TensorRT engine's build on a board takes minutes, compute_open_s allows 1800 s),
    then installed it: failed said, done meant, and sent again refused. Other requests keep the 60 s."""
    from flight.agent.compute import REQUEST_TIMEOUT_S
    from flight.link.messages import CommandRequest

    clock = _MovingClock()
    params = dict(DICTIONARY.parameter_defaults)
    sup = ComputeSupervisor(tmp_path / "compute", True, lambda name, **args: None, _Faults(), clock, params,
                            lambda: 1, lambda where, exc: None)
    try:
        install = CommandRequest(DICTIONARY.command_by_name["MODEL_INSTALL"],
                                 {"name": "tiny", "version": "2", "sha256": "ab" * 32, "golden": False}, 1, None)
        rollback = CommandRequest(DICTIONARY.command_by_name["MODEL_ROLLBACK"], {"name": "tiny"}, 2, None)
        installing, rolling_back = sup._model_install(install), sup._model_rollback(rollback)  # noqa: SLF001
        clock.t = REQUEST_TIMEOUT_S
        sup._expire_requests()  # noqa: SLF001
        assert not installing.settled and rolling_back.settled
        clock.t = REQUEST_TIMEOUT_S + params["compute_open_s"]
        sup._expire_requests()  # noqa: SLF001
        assert installing.settled and f"within {REQUEST_TIMEOUT_S + params['compute_open_s']:.0f} s" in \
            installing.outcome[1]
    finally:
        sup.close()
