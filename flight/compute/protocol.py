"""Messages between the agent and its compute worker: typed records, one codec for both ends.

The worker is a separate process (a hung ONNX Runtime session must not stall control), on a
ZeroMQ DEALER with identity ``compute`` connected to the agent's ROUTER on a Unix socket in
the compute directory. Every message is one record below, encoded by :data:`CODEC`.

agent → worker

- :class:`Admit` every control tick: what may run, with threads, batch and duty for the power
  mode in force, and why (the reason is what an operator reads when a job waits); the radiation
  environment the agent predicts from its own orbit (:class:`Radiation`: the weight scrubbing
  period and the double runs follow it) and the result-check parameters.
- :class:`Ping` every control tick, on the agent's clock: the worker answers :class:`Pong`
  between two slices of work (and while it waits on a long native call: opening a session,
  which on a Jetson builds a TensorRT engine, within ``open_limit_s``), so a worker that stops
  answering is a hung worker whatever the agent's clock is (real time on a board, simulated time
  under the harness).
- :class:`StartJob`, :class:`CancelJob`, :class:`InstallModel`, :class:`RollbackModel`, each
  with a ``req_id``: the worker answers each with one :class:`Reply`, and the telecommand
  completes (or fails, with the worker's reason) only then.
- :class:`Stop`: checkpoint and exit.

worker → agent

- :class:`Hello` once connected; :class:`Pong`; :class:`Reply`; :class:`Status` every second
  and as each job ends (its files free before its end is said)
  (it becomes ``COMPUTE_HK``, and says the files its jobs still need, which FILE_DELETE refuses);
  :class:`WorkerEvent` with an event from the dictionary, which
  the agent checks and publishes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from flight import records
from flight.link.definitions import DICTIONARY, Admission, FluxClass, JobKind
from flight.records import RecordCodec

MAX_BATCH = 64
"""The largest batch an admission carries (the agent's fullest power mode; the worker takes no more):
TensorRT's engines are built for batches up to it while a session opens (flight/compute/opening.py)."""
OPEN_LIMIT_EXIT = 75
"""The worker's exit status when a session's open went past ``Admit.open_limit_s``: a fault, as a hang is."""
OPEN_ABANDONED_EXIT = 76
"""The worker's exit status when it gave up a session's open on purpose (told to stop, or nothing admitted),
as nothing else stops onnxruntime's call: the agent starts another, and counts no fault."""
CODE_CHANGED_EXIT = 77
"""The worker's exit status when its code is not its agent's (:data:`CODE_ID`): the software was updated under
a running agent, whose next worker would be the new code speaking to the old (found in audit). The agent starts
no other until it is itself restarted on the new code."""


def _code_id() -> str:
    """What the two ends must share, as this process read it at import: the records below (this file), the codec
    that carries them (flight/records.py: found in audit, an update of the codec alone left the id as it was, and
    a new worker passed its check against an old agent) and the dictionary the worker's events are checked against."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(records.__file__)):
        digest.update(hashlib.sha256(source.read_bytes()).digest())
    return f"{digest.hexdigest()[:12]}-{DICTIONARY.version_hash}"


CODE_ID = _code_id()


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
    classes: int = 0  # training: the model's outputs (labels outside are bad samples); 0: the data's largest + 1

    def __post_init__(self) -> None:
        if self.kind is JobKind.NONE:
            raise ValueError("a job is INFERENCE or TRAINING")


def checkpoint_file(job_id: int) -> str:
    """A training job's checkpoint, under checkpoints/ (the worker writes it)."""
    return f"job{job_id:05d}.ck"


def files_needed(job: JobSpec, state: str) -> dict[str, str]:
    """The file-area files ``job`` needs while it is still to run (``state``: queued, running, paused), each with
    whose it is, which FILE_DELETE refuses: a training job's checkpoint (deleted, a job resumed or gone back to it
    starts again from step 0) and the data set a job that is not continuous reads (deleted, the job fails when it
    reads it next). A continuous job takes ``incoming/`` files, each its own once. The worker's Status says them
    each second; the agent adds a job's as its start is answered, before that Status (found in review)."""
    whose = f"{job.kind.value.lower()} job {job.job_id} ({state})"
    needed = {}
    if job.kind is JobKind.TRAINING:
        needed[f"checkpoints/{checkpoint_file(job.job_id)}"] = f"the checkpoint of {whose}"
    if not job.continuous:
        needed[f"data/{job.name}.npz"] = f"the data set of {whose}"
    return needed


# --- agent -> worker -------------------------------------------------------------------------


@dataclass(frozen=True)
class Radiation:
    """The environment as the agent predicts it now from its TLE (flight/agent/compute.py:
    radiation_estimate), never the harness's truth: UNKNOWN with no orbit.

    ``saa_entry_in_s``: seconds from when the agent computed it to the next SAA entry; 0.0
    while inside (the entry has happened); None with no orbit, or no entry within the
    look-ahead (flight/agent/compute.py: SAA_LOOKAHEAD_S). A training job checkpoints on it
    before the entry (flight/compute/training_job.py: TrainingJob.radiation_tick).
    ``saa_entry_unix_s``: that entry on the agent's clock (simulated time under a harness), while
    outside and one is ahead; None otherwise: it tells one pass from the next."""

    flux_class: FluxClass
    in_saa: bool
    lat_deg: float | None  # geodetic, at the sub-satellite point
    orbit_period_s: float | None  # the scrubber's full pass never takes longer than one orbit
    saa_entry_in_s: float | None = None
    saa_entry_unix_s: float | None = None


NO_RADIATION = Radiation(FluxClass.UNKNOWN, False, None, None, None)


@dataclass(frozen=True)
class Admit:
    admission: Admission
    threads: int
    batch: int
    duty: float  # 0.05..1: the share of time the worker may compute
    power_w: float | None  # board power now, for energy per training step
    reason: str
    radiation: Radiation
    double_run_fraction: float  # 0..1 of the inference batches run twice and compared
    double_run_all_in_saa: bool  # every batch run twice while radiation.in_saa
    scrub_weights: bool  # sessions on weights the worker owns and scrubs (flight/compute/scrub.py)
    # Models run with the checksum pass's checks (flight/compute/abft.py). The agent always sends its
    # parameter abft_checks; a sender that does not says nothing about checks, and gets none.
    abft_checks: bool = False
    # And with range checks on their activations (flight/compute/ranges.py): the parameter range_checks.
    range_checks: bool = False
    # The agent's monotonic clock when it sent this (simulated time under the harness): the worker's
    # scrub schedule and countdowns follow it where it runs ahead of the worker's own (Worker.clock_s).
    clock_s: float | None = None
    # The parameter compute_open_s: the longest a session may take to open (a TensorRT engine build) before
    # the worker gives up on it and exits (flight/compute/opening.py). None: the worker's default.
    open_limit_s: float | None = None


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


REQUESTS = (StartJob, CancelJob, InstallModel, RollbackModel)
"""The records that carry a ``req_id``: each is answered by one :class:`Reply`."""


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
    # Weights and results (flight/compute/scrub.py, flight/compute/checks.py); counts since the worker started.
    model_protection: str = ""  # flight.link.definitions.Protection's value; "": no session open
    scrub_age_s: float | None = None  # None: no scrubbed session open
    scrub_period_s: float | None = None
    scrub_passes: int = 0
    scrub_chunks: int = 0
    scrub_repairs: int = 0
    checks_failed: int = 0
    reruns: int = 0
    double_runs: int = 0
    results_marked: int = 0
    # Training under radiation (flight/compute/training/guard.py, training_job.py); counts since the worker started.
    train_steps_refused: int = 0
    train_restores: int = 0
    train_saa_checkpoints: int = 0
    train_checkpoints_refused: int = 0
    infer_files_rejected: int = 0
    compute_writes_failed: int = 0
    compute_state_corrupt: int = 0
    # The compute directory's files a job still to run needs (queued, running or paused), by their file-area name
    # (``checkpoints/job00003.ck``), each with whose it is: the agent's FILE_DELETE refuses them (BUSY).
    files_in_use: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerEvent:
    name: str
    args: dict[str, str | int | float | bool | None] = field(default_factory=dict)


TO_WORKER = (Admit, Ping, StartJob, CancelJob, InstallModel, RollbackModel, Stop)
TO_AGENT = (Hello, Pong, Reply, Status, WorkerEvent)
CODEC = RecordCodec("compute protocol", TO_WORKER + TO_AGENT)
encode = CODEC.encode
decode = CODEC.decode
