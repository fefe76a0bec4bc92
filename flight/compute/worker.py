"""The compute worker: a process of its own that runs the agent's inference and training jobs.

Why a separate process: an ONNX Runtime session that hangs (a radiation-induced
functional interrupt, a driver fault) must not take the control loop with it. The agent
supervises this process, feeds it admission (what may run, threads, batch, duty) from its
power manager, and restarts it when its status stops coming.

Messages (msgpack) on a DEALER with identity ``compute`` connected to the agent's ROUTER:

- agent → worker: ``{"type": "admit", "admission": "NONE|INFERENCE|ALL", "threads": N,
  "batch": N, "duty": 0..1, "power_w": W|None, "reason": str}``; ``{"type": "job", "op":
  "start", "job": {...}}``; ``{"type": "job", "op": "cancel", "job_id": N}``; ``{"type": "stop"}``.
- worker → agent: ``{"type": "status", ...}`` every second and on change, and ``{"type":
  "event", "name": EVENT, "args": {...}}`` with events from the dictionary.

Jobs run in slices of about ``SLICE_S`` between socket polls; a duty cycle below 1 waits
(on the socket, not asleep) so the board's average load follows the power plan. Inference
jobs run before training jobs; a training job that loses its admission checkpoints and
pauses, and resumes where it was when admitted again. Jobs and their progress survive a
worker restart (``jobs.json``, checkpoints), so a killed worker loses at most the steps
since the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from flight.compute.providers import open_session
from flight.compute.store import ModelIntegrityError, ModelStore
from flight.compute.training import Adam, Dense, MlpSpec, Trainer
from flight.compute.training_job import TrainingJob, TrainingPlan
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, load_card, load_held_out
from flight.storage import CorruptFile, read_checked_json, write_atomic, write_checked_json

SLICE_S = 0.05  # one slice of work between polls: commands and admission changes act within this
STATUS_PERIOD_S = 1.0
MODELS_DIR = Path(__file__).resolve().parent / "models"  # shipped models and data sets


@dataclass
class Job:
    job_id: int
    kind: str  # INFERENCE | TRAINING
    name: str  # input set (inference) or data set (training)
    model: str = "cloud_screen"
    priority: int = 5
    continuous: bool = False
    steps: int = 1000
    batch_size: int = 64
    checkpoint_every: int = 50
    lr: float = 0.001
    state: str = "QUEUED"  # QUEUED RUNNING PAUSED DONE FAILED CANCELLED
    progress: int = 0
    detail: str = ""


@dataclass
class InferenceTotals:
    count: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    confidence_sum: float = 0.0
    batches: int = 0
    busy_s: float = 0.0


class Worker:
    def __init__(self, endpoint: str, root: Path, store: ModelStore | None = None):
        self.root = Path(root)
        self.store = store or ModelStore(self.root / "models")
        self.products = self.root / "products"
        self.incoming = self.root / "incoming"
        for d in (self.products, self.incoming, self.root / "checkpoints", self.root / "staging"):
            d.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[int, Job] = {}
        self.admission = "NONE"
        self.threads = 1
        self.batch = 32
        self.duty = 1.0
        self.power_w: float | None = None
        self.reason = "waiting for the agent"
        self.provider = ""
        self.totals = InferenceTotals()
        self._sessions: dict[tuple[str, int], tuple[Any, str, str]] = {}
        self._training: dict[int, TrainingJob] = {}
        self._results: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._cursor: dict[int, int] = {}
        self._inputs: dict[int, np.ndarray] = {}
        self._output_names: dict[int, list[str]] = {}
        self._stop = False
        self._last_status = 0.0
        self._train_rate = (0.0, 0.0)  # (steps, seconds) over the last slice
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.IDENTITY, b"compute")
        self._sock.linger = 500
        self._sock.connect(endpoint)
        self._load_jobs()

    # --- messages ------------------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self._sock.send(msgpack.packb(msg, use_bin_type=True), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the agent is gone or slow; status goes again within a second

    def event(self, event: str, /, **args: Any) -> None:
        self._send({"type": "event", "name": event, "args": args})

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "admit":
            self.admission = str(msg.get("admission", "NONE"))
            self.threads = max(1, int(msg.get("threads", 1)))
            self.batch = max(1, int(msg.get("batch", 32)))
            self.duty = min(1.0, max(0.05, float(msg.get("duty", 1.0))))
            self.power_w = msg.get("power_w")
            self.reason = str(msg.get("reason", ""))[:200]
        elif kind == "job" and msg.get("op") == "start":
            spec = dict(msg.get("job") or {})
            job = Job(**{k: v for k, v in spec.items() if k in Job.__dataclass_fields__})
            self.jobs[job.job_id] = job
            self._save_jobs()
            self.event("JOB_QUEUED", job_id=job.job_id, kind=job.kind, name=job.name)
        elif kind == "job" and msg.get("op") == "cancel":
            job = self.jobs.get(int(msg.get("job_id", -1)))
            if job is not None and job.state not in ("DONE", "FAILED", "CANCELLED"):
                self._finish(job, "CANCELLED", "cancelled by command")
        elif kind == "model" and msg.get("op") == "install":
            self._install_model(str(msg.get("name", "")), str(msg.get("version", "")),
                                str(msg.get("sha256", "")).lower(), bool(msg.get("golden", False)))
        elif kind == "stop":
            self._stop = True

    # --- persistence -----------------------------------------------------------------------

    def _jobs_path(self) -> Path:
        return self.root / "jobs.json"

    def _save_jobs(self) -> None:
        write_checked_json(self._jobs_path(), [asdict(j) for j in self.jobs.values()])

    def _load_jobs(self) -> None:
        try:
            body = read_checked_json(self._jobs_path()) if self._jobs_path().exists() else []
        except CorruptFile as exc:
            self.event("JOB_FAILED", job_id=0, reason=f"job list unreadable, starting empty: {exc}"[:200])
            body = []
        for item in body if isinstance(body, list) else []:
            try:
                job = Job(**item)
            except TypeError:
                continue
            if job.state == "RUNNING":
                job.state = "PAUSED"  # it was interrupted: resume from its checkpoint when admitted
                job.detail = "worker restarted"
            self.jobs[job.job_id] = job

    # --- work ------------------------------------------------------------------------------

    def _session(self, model: str) -> tuple[Any, str, str]:
        key = (model, self.threads)
        if key not in self._sessions:
            loaded = self.store.load_or_golden(model)
            if loaded.from_golden:
                self.event("MODEL_GOLDEN_USED", name=model, reason=loaded.fallback_reason[:200])
            opened = open_session(loaded.bytes, threads=self.threads)
            for line in opened.fallbacks:
                self.event("PROVIDER_FALLBACK", provider=opened.provider, reason=line[:200])
            self.provider = opened.provider
            self._sessions = {k: v for k, v in self._sessions.items() if k[0] != model}  # threads changed
            self._sessions[key] = (opened.session, opened.session.get_inputs()[0].name, loaded.version)
        return self._sessions[key]

    def _input_set(self, name: str) -> np.ndarray:
        return self._load_set(name)[0]

    def _load_set(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(inputs, labels or None) of a named set: a tile set as the use case ships it (uint16
        reflectance x 10000, read through its own reader), or any .npz with ``x`` (and ``y``)."""
        for path in (self.root / "data" / f"{name}.npz", MODELS_DIR / f"{name}.npz"):
            if not path.exists():
                continue
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
                if "x" in files:
                    return data["x"].astype(np.float32), (data["y"].astype(np.int64) if "y" in files else None)
            if "tiles_dn" in files:
                tiles = load_held_out(path)
                return tiles.tiles.astype(np.float32), tiles.labels.astype(np.int64)
            raise ValueError(f"{path}: neither x/y nor a tile set")
        raise FileNotFoundError(f"no data set {name!r} in {self.root / 'data'} or the shipped models")

    def _install_model(self, name: str, version: str, sha256: str, golden: bool) -> None:
        """Install staging/NAME.onnx if its SHA-256 is the one the ground computed; drop cached sessions."""
        import hashlib

        path = self.root / "staging" / f"{name}.onnx"
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.event("MODEL_REFUSED", name=name, reason=f"no uplinked file {path.name}: {exc.strerror}")
            return
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            self.event("MODEL_REFUSED", name=name, reason=f"SHA-256 {actual[:16]}… is not the expected {sha256[:16]}…")
            return
        try:
            self.store.install(name, version, data, golden=golden)
        except Exception as exc:  # noqa: BLE001 - a bad model is refused, the worker goes on
            self.event("MODEL_REFUSED", name=name, reason=f"{type(exc).__name__}: {exc}"[:200])
            return
        self._sessions = {k: v for k, v in self._sessions.items() if k[0] != name}
        self.event("MODEL_INSTALLED", name=name, version=version, sha256=actual[:16])

    def install_shipped_models(self) -> None:
        """First start on a board: the shipped model becomes the working and the golden copy."""
        if not any(e.name == MODEL_NAME for e in self.store.list()):
            self.store.install(MODEL_NAME, str(load_card().get("version", "1")), MODELS_DIR / MODEL_FILE, golden=True)

    def _next_job(self) -> Job | None:
        if self.admission == "NONE":
            return None
        runnable = [j for j in self.jobs.values() if j.state in ("QUEUED", "RUNNING", "PAUSED")]
        allowed = [j for j in runnable if j.kind == "INFERENCE" or self.admission == "ALL"]
        # Inference before training, then priority (0 first), then age.
        allowed.sort(key=lambda j: (j.kind != "INFERENCE", j.priority, j.job_id))
        return allowed[0] if allowed else None

    def _pause_training(self, reason: str) -> None:
        for job_id, tjob in list(self._training.items()):
            job = self.jobs[job_id]
            if job.state == "RUNNING":
                tjob.pause(reason)
                job.state, job.detail = "PAUSED", reason[:120]
                job.progress = tjob.status.step
                self._save_jobs()
                self.event("JOB_PAUSED", job_id=job_id, step=job.progress, reason=reason[:200])

    def work_slice(self) -> float:
        """Run one slice of the best job; return the seconds spent working."""
        job = self._next_job()
        if job is None or job.kind != "TRAINING":
            self._pause_training("not admitted: " + (self.reason or self.admission) if job is None
                                 else "inference goes first")
        if job is None:
            return 0.0
        if job.state != "RUNNING":
            was_paused = job.state == "PAUSED"
            job.state, job.detail = "RUNNING", ""
            self._save_jobs()
            self.event("JOB_RESUMED" if was_paused else "JOB_STARTED", job_id=job.job_id, kind=job.kind, name=job.name)
        t0 = time.monotonic()
        try:
            if job.kind == "INFERENCE":
                self._infer_slice(job)
            else:
                self._train_slice(job)
        except ModelIntegrityError as exc:  # both copies bad: nothing to run this job on
            self._finish(job, "FAILED", f"model refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - a job that breaks fails alone; the worker goes on
            self._finish(job, "FAILED", f"{type(exc).__name__}: {exc}")
        return time.monotonic() - t0

    def _infer_slice(self, job: Job) -> None:
        session, input_name, _version = self._session(job.model)
        if job.continuous:
            # Hidden names are files still being written (write as .NAME, then rename): leave them.
            files = sorted(p for p in self.incoming.glob("*.npy") if not p.name.startswith("."))
            if not files:
                return
            path = files[0]
            tiles = np.load(path, allow_pickle=False).astype(np.float32)
            classes, conf = self._run_batches(session, input_name, tiles)
            self._write_product(job, classes, conf, source=path.name)
            (self.incoming / "done").mkdir(exist_ok=True)
            os.replace(path, self.incoming / "done" / path.name)
            job.progress += len(tiles)
            return
        data = self._inputs.get(job.job_id)
        if data is None:  # read once per job, not once per slice
            data = self._inputs[job.job_id] = self._input_set(job.name)
        start = self._cursor.get(job.job_id, 0)
        t_end = time.monotonic() + SLICE_S
        while start < len(data) and time.monotonic() < t_end:
            batch = data[start : start + self.batch]
            classes, conf = self._run_batches(session, input_name, batch)
            self._results.setdefault(job.job_id, []).append((classes, conf))
            start += len(batch)
        self._cursor[job.job_id] = start
        job.progress = start
        if start >= len(data):
            parts = self._results.pop(job.job_id, [])
            classes = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            conf = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
            path = self._write_product(job, classes, conf, source=job.name)
            self._finish(job, "DONE", f"{len(classes)} tiles, product {path.name}")

    def _run_batches(self, session: Any, input_name: str, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = self._output_names.get(id(session))
        if wanted is None:
            names = [o.name for o in session.get_outputs()]
            wanted = self._output_names[id(session)] = ["probabilities" if "probabilities" in names else names[0]]
        (probs,) = session.run(wanted, {input_name: tiles})
        classes = probs.argmax(axis=1)
        conf = probs[np.arange(len(classes)), classes]
        t = self.totals
        t.count += len(classes)
        t.batches += 1
        t.confidence_sum += float(conf.sum())
        for c, n in enumerate(np.bincount(classes, minlength=probs.shape[1]).tolist()):
            if n:
                t.classes[str(c)] = t.classes.get(str(c), 0) + n
        return classes, conf

    def _write_product(self, job: Job, classes: np.ndarray, conf: np.ndarray, source: str) -> Path:
        """A product for downlink: per-tile class and confidence, atomic, with a JSON summary."""
        stem = f"job{job.job_id:05d}-{Path(source).stem}"
        buf = _npz_bytes(classes=classes, confidence=conf)
        write_atomic(self.products / f"{stem}.npz", buf)
        summary = {"job_id": job.job_id, "model": job.model, "source": source, "tiles": int(len(classes)),
                   "classes": {str(int(c)): int(n) for c, n in zip(*np.unique(classes, return_counts=True))},
                   "confidence_mean": float(conf.mean()) if len(conf) else None}
        write_atomic(self.products / f"{stem}.json", json.dumps(summary, indent=1).encode())
        return self.products / f"{stem}.npz"

    def _train_slice(self, job: Job) -> None:
        tjob = self._training.get(job.job_id)
        if tjob is None:
            x, y = self._load_set(job.name)
            if y is None:
                raise ValueError(f"data set {job.name} has no labels (y) to train on")
            x = x.reshape(len(x), -1)
            spec = MlpSpec(x.shape[1], (Dense(128, "relu"), Dense(int(y.max()) + 1)))
            trainer = Trainer(spec, Adam(job.lr), job.batch_size, seed=job.job_id, intra_op_num_threads=self.threads)
            plan = TrainingPlan(job.steps, job.batch_size, job.checkpoint_every, seed=job.job_id)
            tjob = TrainingJob(trainer, x, y, plan, self.root / "checkpoints" / f"job{job.job_id:05d}.ck")
            if tjob.resume():
                self.event("JOB_RESUMED", job_id=job.job_id, kind=job.kind, name=f"{job.name} from step {tjob.status.step}")
            self._training[job.job_id] = tjob
        t0 = time.monotonic()
        steps = 0
        while time.monotonic() - t0 < SLICE_S and not tjob.done:
            steps += tjob.run(8)
        self._train_rate = (steps, time.monotonic() - t0)
        job.progress = tjob.status.step
        if tjob.done:
            model = tjob.trainer.inference_model()
            out = self.products / f"job{job.job_id:05d}-{job.name}-trained.onnx"
            write_atomic(out, model.SerializeToString())
            self._finish(job, "DONE", f"{tjob.status.step} steps, loss {tjob.status.loss:.4f}, model {out.name}")

    def _finish(self, job: Job, state: str, detail: str) -> None:
        job.state, job.detail = state, detail[:200]
        self._training.pop(job.job_id, None)
        self._cursor.pop(job.job_id, None)
        self._inputs.pop(job.job_id, None)
        self._save_jobs()
        name = {"DONE": "JOB_DONE", "FAILED": "JOB_FAILED", "CANCELLED": "JOB_CANCELLED"}[state]
        self.event(name, job_id=job.job_id, **({"summary": detail[:200]} if state == "DONE" else {"reason": detail[:200]}))

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        t = self.totals
        training = next((self._training[j] for j, job in self.jobs.items()
                         if job.state == "RUNNING" and j in self._training), None)
        steps, secs = self._train_rate
        rate = steps / secs if secs > 0 else 0.0
        running = next((j for j in self.jobs.values() if j.state == "RUNNING"), None)
        return {
            "type": "status",
            "provider": self.provider,
            "admission": self.admission,
            "jobs_queued": sum(j.state in ("QUEUED", "PAUSED") for j in self.jobs.values()),
            "job_id": running.job_id if running else 0,
            "job_kind": running.kind if running else "NONE",
            "infer_count": t.count,
            "infer_classes": t.classes,
            "infer_confidence_mean": t.confidence_sum / t.count if t.count else None,
            "infer_busy_s": t.busy_s,
            "train_step": training.status.step if training else 0,
            "train_loss": training.status.loss if training else None,
            "train_accuracy": training.status.accuracy if training else None,
            "train_steps_per_s": rate if training else 0.0,
            "train_energy_per_step_j": (self.power_w / rate) if training and rate > 0 and self.power_w else None,
            # Summaries (.json) travel with their product; count the products themselves.
            "products": sum(1 for p in self.products.iterdir() if p.suffix in (".npz", ".onnx")),
        }

    # --- loop --------------------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        self.install_shipped_models()
        self._send({"type": "hello", "pid": os.getpid()})
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        idle_s = 0.0
        parent = os.getppid()
        while not self._stop:
            if os.getppid() != parent:  # the agent is gone (reparented to init): stop with it
                break
            for _ in range(100):
                if not poller.poll(int(idle_s * 1000)):
                    break
                idle_s = 0.0
                try:
                    self._handle(msgpack.unpackb(self._sock.recv(), raw=False))
                except (ValueError, TypeError, KeyError, msgpack.ExtraData) as exc:
                    self.event("JOB_FAILED", job_id=0, reason=f"bad message from the agent: {exc}"[:200])
            busy = self.work_slice()
            self.totals.busy_s += busy
            now = time.monotonic()
            if now - self._last_status >= STATUS_PERIOD_S:
                self._send(self.status())
                self._last_status = now
            # Duty cycle: rest long enough that busy / (busy + rest) = duty; idle when nothing ran.
            idle_s = busy * (1.0 - self.duty) / self.duty if busy else min(STATUS_PERIOD_S, 0.2)
        self._pause_training("worker stopping")
        self._send(self.status())
        self._sock.close()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the agent dies (PR_SET_PDEATHSIG): a worker must
    never outlive its agent, or a restarted agent would find two workers on one directory."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check in the loop still ends the worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flight.compute.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True, help="the agent's compute ROUTER endpoint")
    parser.add_argument("--root", required=True, help="compute directory: models, data, products, checkpoints")
    args = parser.parse_args(argv)
    _die_with_parent()
    Worker(args.endpoint, Path(args.root)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
