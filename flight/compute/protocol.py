"""Messages between the agent and its compute worker: typed records, one codec for both ends.

The worker is a separate process (a hung ONNX Runtime session must not stall control), on a
ZeroMQ DEALER with identity ``compute`` connected to the agent's ROUTER on a Unix socket in
the compute directory. Every message is one record below, encoded by :data:`CODEC`.

agent → worker

- :class:`Admit` every control tick: what may run, with threads, batch and duty for the power
  mode in force, and why (the reason is what an operator reads when a job waits).
- :class:`Ping` every control tick, on the agent's clock: the worker answers :class:`Pong`
  between two slices of work, so a worker that stops answering is a hung worker whatever the
  agent's clock is (real time on a board, simulated time under the harness).
- :class:`StartJob`, :class:`CancelJob`, :class:`InstallModel`, :class:`RollbackModel`, each
  with a ``req_id``: the worker answers each with one :class:`Reply`, and the telecommand
  completes (or fails, with the worker's reason) only then.
- :class:`Stop`: checkpoint and exit.

worker → agent

- :class:`Hello` once connected; :class:`Pong`; :class:`Reply`; :class:`Status` every second
  (it becomes ``COMPUTE_HK``); :class:`WorkerEvent` with an event from the dictionary, which
  the agent checks and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flight.link.definitions import Admission, JobKind
from flight.records import RecordCodec


@dataclass(frozen=True)
class JobSpec:
    """A compute job as the command described it (the worker adds its state and progress)."""

    job_id: int
    kind: JobKind
    name: str  # input set (inference), data set (training), or "incoming" for a continuous job
    model: str = "cloud_screen"
    priority: int = 5
    continuous: bool = False
    steps: int = 1000
    batch_size: int = 64
    checkpoint_every: int = 50
    lr: float = 0.001

    def __post_init__(self) -> None:
        if self.kind is JobKind.NONE:
            raise ValueError("a job is INFERENCE or TRAINING")


# --- agent -> worker -------------------------------------------------------------------------


@dataclass(frozen=True)
class Admit:
    admission: Admission
    threads: int
    batch: int
    duty: float  # 0.05..1: the share of time the worker may compute
    power_w: float | None  # board power now, for energy per training step
    reason: str


@dataclass(frozen=True)
class Ping:
    seq: int


@dataclass(frozen=True)
class StartJob:
    req_id: int
    job: JobSpec


@dataclass(frozen=True)
class CancelJob:
    req_id: int
    job_id: int


@dataclass(frozen=True)
class InstallModel:
    req_id: int
    name: str
    version: str
    sha256: str
    golden: bool = False


@dataclass(frozen=True)
class RollbackModel:
    req_id: int
    name: str


@dataclass(frozen=True)
class Stop:
    reason: str = "agent stopping"


# --- worker -> agent -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    pid: int


@dataclass(frozen=True)
class Pong:
    seq: int


@dataclass(frozen=True)
class Reply:
    """The answer to one request: done (``ok``) or refused with a reason an operator can act on."""

    req_id: int
    ok: bool
    reason: str = ""
    code: int = 0  # flight.link.dictionary.FailureCode when refused (BAD_ARGUMENTS, BUSY, ...)
    result: dict[str, str | int | float | bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    provider: str = ""
    admission: Admission = Admission.NONE
    jobs_queued: int = 0
    job_id: int = 0
    job_kind: JobKind = JobKind.NONE
    infer_count: int = 0
    infer_classes: dict[str, int] = field(default_factory=dict)
    infer_confidence_mean: float | None = None
    infer_busy_s: float = 0.0
    train_step: int = 0
    train_loss: float | None = None
    train_accuracy: float | None = None
    train_steps_per_s: float = 0.0
    train_energy_per_step_j: float | None = None
    products: int = 0
    # Provenance of the model the worker last activated, rolled back or ran (flight.compute.store.ModelState).
    model_name: str = ""
    model_version: str = ""
    model_sha256: str = ""
    model_uplinked_by: str = ""
    model_fallback_version: str = ""  # "": none
    model_probation: bool = False


@dataclass(frozen=True)
class WorkerEvent:
    name: str
    args: dict[str, str | int | float | bool | None] = field(default_factory=dict)


TO_WORKER = (Admit, Ping, StartJob, CancelJob, InstallModel, RollbackModel, Stop)
TO_AGENT = (Hello, Pong, Reply, Status, WorkerEvent)
CODEC = RecordCodec("compute protocol", TO_WORKER + TO_AGENT)
encode = CODEC.encode
decode = CODEC.decode
