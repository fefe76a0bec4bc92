"""Small real models and a compute worker on a real socket, for the model lifecycle tests."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import zmq
from onnx import TensorProto, helper, numpy_helper

from flight.agent.compute import ComputeSupervisor
from flight.compute import protocol as cp
from flight.compute.package import Delta, Manifest, StagedFiles, sha256_hex
from flight.compute.worker import ACTIVE, Worker
from flight.link.definitions import Admission, JobKind
from ground.model_package import key_from_seed, pack_full, public_line

ALICE, BOB = "alice", "bob"
ALICE_KEY = key_from_seed(bytes(range(1, 33)))  # fixed test keys, never an operator's
BOB_KEY = key_from_seed(bytes(range(2, 34)))
RNG = np.random.default_rng(7)
REF_X = RNG.uniform(0.1, 1.0, size=(8, 2)).astype(np.float32)  # positive: Sqrt is finite on them


def tiny(scale: float, op: str = "Abs", offset: tuple[float, ...] | None = None, features: int = 2) -> bytes:
    """probabilities = op(x * scale) + offset, x float32 [N, features] (2): a real model onnxruntime runs.

    ``op="Sqrt"`` gives NaN for negative inputs: a model that passes a reference check on
    positive inputs and then fails its first job on negative ones.
    """
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["xs"]), helper.make_node(op, ["xs"], ["y"]),
         helper.make_node("Add", ["y", "offset"], ["probabilities"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", features])],
        initializer=[numpy_helper.from_array(np.array([scale], np.float32), "scale"),
                     numpy_helper.from_array(np.array(offset or (0.0,) * features, np.float32), "offset")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def trusted_file(directory: Path, *operators: tuple[str, object]) -> Path:
    path = Path(directory) / "operators.keys"
    path.write_text("".join(public_line(name, key) + "\n" for name, key in operators))
    return path


def pack(staging: Path, model: bytes, version: str, name: str = "tiny", operator: str = ALICE,
         key: object = ALICE_KEY, tolerance: float = 1e-5):
    return pack_full(model, name, version, operator, key, staging, REF_X, tolerance)


def resign(staging: Path, name: str, key: object = ALICE_KEY, **changes) -> Manifest:
    """Change fields of a staged manifest and sign it again (an operator's honest mistake, signed)."""
    path = staging / StagedFiles.of(name).manifest
    manifest = replace(Manifest.from_bytes(path.read_bytes()), **changes).sign(key)
    path.write_bytes(manifest.to_bytes())
    return manifest


def stage_delta(staging: Path, name: str, delta: Delta, version: str, base_manifest: Manifest,
                key: object = ALICE_KEY) -> Manifest:
    """A signed delta package made by hand (for deltas the ground tool would refuse to make)."""
    files = StagedFiles.of(name)
    data = delta.to_bytes()
    (staging / files.delta).write_bytes(data)
    (staging / files.model).unlink(missing_ok=True)
    manifest = replace(base_manifest, version=version, kind="delta", sha256=delta.result_sha256,
                       base_sha256=delta.base_sha256, delta_sha256=sha256_hex(data)).sign(key)
    (staging / files.manifest).write_bytes(manifest.to_bytes())
    return manifest


def with_external_weights(model: bytes, directory: Path, file_name: str, weights: str = "tiny.weights") -> bytes:
    """``model`` written to ``directory/file_name`` with its initializers in the external file ``weights`` beside
    it (ONNX external data, by onnx's own helpers); the bytes of the .onnx, which hold no weights."""
    import onnx
    from onnx import external_data_helper

    proto = onnx.load_from_string(model)
    external_data_helper.convert_model_to_external_data(proto, all_tensors_to_one_file=True, location=weights,
                                                        size_threshold=0)
    Path(directory).mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(Path(directory) / file_name))
    assert (Path(directory) / weights).is_file()
    return (Path(directory) / file_name).read_bytes()


def stage_by_hand(staging: Path, name: str, version: str, data: bytes, outputs_of: bytes,
                  key: object = ALICE_KEY) -> Manifest:
    """A signed full package of ``data``, its reference outputs those of ``outputs_of`` over REF_X: made by
    hand, for a model the ground tool refuses to pack (the board must refuse it on its own)."""
    from flight.compute.package import ReferenceSet, array_digest, expected_outputs

    files = StagedFiles.of(name)
    reference = ReferenceSet(REF_X, expected_outputs(outputs_of, REF_X)).to_bytes()
    manifest = Manifest(name, version, "full", sha256_hex(data), len(data), ALICE, "2026-11-18T00:00:00Z",
                        sha256_hex(reference), array_digest(REF_X), 1e-5).sign(key)
    Path(staging).mkdir(parents=True, exist_ok=True)
    (staging / files.model).write_bytes(data)
    (staging / files.reference).write_bytes(reference)
    (staging / files.manifest).write_bytes(manifest.to_bytes())
    return manifest


class WorkerBench:
    """A :class:`Worker` in this process, its messages read from a real ROUTER socket (inproc)."""

    def __init__(self, root: Path, trusted_keys: Path | None = None, allow_unsigned: bool = False,
                 upset_injection: bool = False):
        self.root = Path(root)
        self.trusted_keys, self.allow_unsigned = trusted_keys, allow_unsigned
        self.upset_injection = upset_injection
        self.messages: list = []
        self._req = 0
        self.worker = self._start()

    def _start(self) -> Worker:
        endpoint = f"inproc://worker-{uuid.uuid4().hex}"  # a fresh pair each time, as a restarted agent's
        self.router = zmq.Context.instance().socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(endpoint)
        worker = Worker(endpoint, self.root, trusted_keys=self.trusted_keys, allow_unsigned=self.allow_unsigned,
                        upset_injection=self.upset_injection)
        worker.admission, worker.threads, worker.batch, worker.duty = Admission.ALL, 1, 4, 1.0
        return worker

    def restart(self) -> None:
        """A new worker on the same directory, as after a crash (the old one's sockets closed)."""
        self.close()
        self.worker = self._start()

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    def drain(self, wait_s: float = 0.0) -> list:
        deadline = time.monotonic() + wait_s
        while True:
            if self.router.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                _ident, raw = self.router.recv_multipart()
                self.messages.append(cp.decode(raw))
                continue
            return self.messages

    def events(self, name: str) -> list[cp.WorkerEvent]:
        self.drain()
        return [m for m in self.messages if isinstance(m, cp.WorkerEvent) and m.name == name]

    def request(self, make) -> cp.Reply:
        """Hand the worker a request (``make(req_id)``) and return its reply."""
        self._req += 1
        self.worker._handle(make(self._req))
        # a bound, not a measure: an install builds ONNX sessions, seconds on a loaded machine (8 test workers, 2 cores)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            self.drain(0.05)
            for m in self.messages:
                if isinstance(m, cp.Reply) and m.req_id == self._req:
                    return m
        raise AssertionError(f"no reply to request {self._req}")

    def install(self, version: str, sha256: str, name: str = "tiny", golden: bool = False) -> cp.Reply:
        return self.request(lambda r: cp.InstallModel(r, name, version, sha256, golden))

    def rollback(self, name: str = "tiny") -> cp.Reply:
        return self.request(lambda r: cp.RollbackModel(r, name))

    def infer(self, job_id: int, input_set: str, model: str = "tiny", max_slices: int = 200):
        """Queue an inference job and run slices until it has ended; the job."""
        data = self.root / "data"
        assert (data / f"{input_set}.npz").exists(), input_set
        reply = self.request(lambda r: cp.StartJob(r, cp.JobSpec(job_id, JobKind.INFERENCE, input_set, model=model)))
        assert reply.ok, reply.reason
        job = self.worker.jobs[job_id]
        for _ in range(max_slices):
            if job.state not in ACTIVE:
                break
            self.worker.work_slice()
        self.drain()
        return job

    def data_set(self, name: str, x: np.ndarray) -> None:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        np.savez(self.root / "data" / f"{name}.npz", x=x.astype(np.float32))

    def close(self) -> None:
        self.worker._sock.close(0)
        self.router.close(0)


def protect_as_version_6(monkeypatch) -> None:
    """The worker protects its models as pass version 6 did (``abft.protect``'s ``compare_outputs``
    off): the model's outputs made after the last checked node (the Softmax's probabilities), and the
    constants there, are seen by no check, as in a model protected on the ground by version 6, which
    the worker still trusts. For tests of what happens to an upset or a weight no check covers."""
    import functools

    from flight.compute import abft
    from flight.compute import worker as worker_module

    monkeypatch.setattr(worker_module, "protect_bytes", functools.partial(abft.protect_bytes, compare_outputs=False))


class NoFaults:
    """A fault log port that keeps nothing (a supervisor on its own)."""

    def record(self, what):
        pass


class FixedClock:
    """A clock port that stands still."""

    def monotonic_s(self):
        return 0.0

    def now_s(self):
        return 1_794_830_400.0  # 2026-11-16T12:00:00Z


def supervisor(root: Path, params: dict, **more) -> ComputeSupervisor:
    """An agent's :class:`ComputeSupervisor` on its own: its ports discard, its clock stands still."""
    return ComputeSupervisor(root, True, lambda *a, **k: None, NoFaults(), FixedClock(), params, lambda: 1,
                             lambda where, exc: None, **more)


def admissions(root: Path, params: dict, radiation=None, began: bool = False) -> tuple[list[cp.Admit], dict]:
    """What an agent's :class:`ComputeSupervisor` (no worker started) sends with one admission,
    read from a real DEALER socket that connects as its worker, and its telemetry then. ``began``:
    after the agent's boot (``time_began``)."""
    sup = supervisor(root, params, **({} if radiation is None else {"radiation": radiation}))
    if began:
        sup.time_began()
    peer = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.IDENTITY, b"compute")
    peer.linger = 0
    peer.connect(sup.endpoint)
    try:
        admits: list[cp.Admit] = []
        deadline = time.monotonic() + 30.0  # a bound: it ends as the first Admit comes
        while not admits and time.monotonic() < deadline:  # until the ROUTER knows the peer
            sup.admit(Admission.INFERENCE, 1, 3, 5.0, "test")
            while peer.poll(50):
                admits += [m for m in [cp.decode(peer.recv())] if isinstance(m, cp.Admit)]
        return admits, sup.telemetry()
    finally:
        peer.close(0)
        sup.close()
