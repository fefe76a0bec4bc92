"""The compute worker: a process of its own that runs the agent's inference and training jobs.

Why a separate process: an ONNX Runtime session that hangs (a radiation-induced
functional interrupt, a driver fault) must not take the control loop with it. The agent
supervises this process (flight/agent/compute.py), feeds it admission (what may run,
threads, batch, duty) from its power manager, pings it every control tick and restarts it
when the answers stop. Messages are the typed records of :mod:`flight.compute.protocol`.

Jobs run in slices of about ``SLICE_S`` between socket polls; a duty cycle below 1 waits
(on the socket, not asleep) so the board's average load follows the power plan. Inference
jobs run before training jobs; a training job that loses its admission checkpoints and
pauses, and resumes where it was when admitted again. Jobs and their progress survive a
worker restart (``jobs.json``, checkpoints), so a killed worker loses at most the steps
since the last checkpoint.

The queue is bounded: at most :data:`MAX_ACTIVE_JOBS` unfinished jobs (a further one is
refused with a reason), and of the finished ones only the newest :data:`KEEP_FINISHED_JOBS`
are kept in ``jobs.json`` (their products stay in ``products/``). ``jobs.json`` is written
when a job is added or changes state, never while idle, so an idle worker stays idle
whatever the queue holds.

Models: ``MODEL_INSTALL`` verifies the uplinked package (signature by a trusted operator key,
SHA-256 of each file; :mod:`flight.compute.package`), builds the model from a delta where one
was sent, runs it over its reference set with a real session and compares with the outputs
the ground expects, and only then makes it active, the version it replaces kept as the
fallback. A newly active version is on probation until it has run an inference job: if it
fails to load or its first job fails or gives non-finite outputs, the worker rolls back to the
fallback on its own (``MODEL_ROLLED_BACK``) and runs the job again. Every product names the
model version it came from (name, version, SHA-256, who uplinked it).

Weights and results under radiation: a session's initializers live in numpy buffers the worker
owns (flight/compute/providers.py: owned_weights_options), which a :class:`WeightScrubber`
(flight/compute/scrub.py) checks against three voted golden copies from the loop, a full pass per
period that follows the flux the agent predicts (``Admit.radiation``). With ``abft_checks`` the
session runs the model as the checksum pass (flight/compute/abft.py) rewrites it, made once per
model version from the store's verified bytes for the arithmetic of the providers it may run on
(tf32 where a GPU provider may and TF32 is allowed: providers.abft_precision), its check weights owned and scrubbed
with the rest; a model the pass refuses runs unchecked, said once. With ``range_checks`` the model
also gets range checks on its activations (flight/compute/ranges.py), learned once per version from
the reference inputs the store keeps with it (a version with none runs without them). A batch whose
check fails (the checksum pass's or the range checks' per-sample flag, flight/compute/checks.py, or a
double run that disagrees) makes the worker scrub at once and run it again; tiles that still fail
are marked in the product. Every product carries a receipt: model SHA-256 (the store's, as
uplinked), protection level and the checksum pass's precision, check status with counts, scrub
age, the predicted environment.

A worker never outlives its agent and never shares its directory: it asks Linux to signal
it when the agent dies (PR_SET_PDEATHSIG), then checks that the agent whose pid it was given
is still its parent (the agent may have died before the request took), and it holds the
compute directory's lock for as long as it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import io
import json
import math
import os
import re
import signal
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import zmq

from flight.compute import protocol as cp
from flight.compute import ranges as range_pass
from flight.compute.abft import PREFIX as CHECKS_PREFIX
from flight.compute.abft import (DEFAULT_ATOL, PASS_VERSION, SAFETY, TRUSTED_PASS_VERSIONS, covered_initializers,
                                 describe, is_protected, protect_bytes)
from flight.compute.checks import (
    CHECK_OUTPUT,
    FAILED,
    PASSED,
    RANGE_OUTPUT,
    UNCHECKED,
    DoubleRunSchedule,
    ProductChecks,
    check_flags,
    protection_of,
    rows_agree,
)
from flight.compute.package import PackageError, ReferenceSet, expected_outputs, shipped_reference_inputs
from flight.compute.graphs import subgraph_reads
from flight.compute.inject import Batch, UpsetInjector
from flight.compute.opening import (
    RECORD_FILE,
    UNFINISHED_LIMIT,
    EngineCache,
    OpenRecord,
    Undeletable,
    tensorrt_options,
    warm_up,
    warm_up_plan,
)
from flight.compute.providers import (
    CPU,
    OWNED_WEIGHTS_OPTIMIZATION,
    PREFERENCE,
    RUN_REFUSED,
    TENSORRT,
    OpenedSession,
    SessionError,
    abft_precision,
    checksum_layout_nchwc,
    open_session,
    owned_weights_options,
    providers_to_try,
    unread_buffers,
)
from flight.compute.scrub import (
    BEHIND_FACTOR,
    STEP_BYTES,
    Repair,
    WeightScrubber,
    WeightsUnrepairable,
    constants_as_initializers,
    unowned_weights,
    scrub_period_s,
)
from flight.compute.store import (
    Copy,
    ModelIntegrityError,
    ModelNotFound,
    ModelState,
    ModelStore,
    NoFallback,
    Provenance,
)
from flight.compute.store import CORRUPT_SUFFIX, MANIFEST
from flight.compute.training import Adam, Dense, MlpSpec, Trainer
from flight.compute.training_job import TrainingJob, TrainingPlan, TrainingStatus
from flight.compute.uplink import Refusal, UplinkChecks
from flight.compute.usecase.cloud import DN_PER_REFLECTANCE, dn_to_tiles
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, load_card, read_checked
from flight.files.filestore import PART_CHARS as PRODUCT_NAME_CHARS
from flight.files.filestore import NameRefused, check_name, resolve
from flight.lifetime import die_with_parent
from flight.link.definitions import DICTIONARY, Admission, FluxClass, JobKind, Protection
from flight.link.dictionary import FailureCode
from flight.records import ProtocolError
from flight.storage import (
    CorruptFile,
    DirectoryBusy,
    DirectoryLock,
    ReadRefused,
    printable,
    quarantine,
    read_checked_json,
    read_limited,
    remove_interrupted_writes,
    write_atomic,
    write_checked_json,
)

T = TypeVar("T")

SLICE_S = 0.05  # one slice of work between polls: commands and admission changes act within this
STATUS_PERIOD_S = 1.0
IDLE_WAIT_S = 1.0  # nothing runnable: wait on the socket this long (status goes out at this rate)
INCOMING_WAIT_S = 0.2  # a continuous job with no file yet: look again this often
MAX_ACTIVE_JOBS = 64  # queued, running or paused; more is refused (BUSY) with a reason
KEEP_FINISHED_JOBS = 32  # finished jobs kept in jobs.json, newest first; products are not touched
KEEP_REJECTED_FILES = 16  # incoming/rejected/ keeps the newest files a continuous job refused
# An incoming file, at most: a 4096 x 4096 scene of 4 bands in 16 x 16 float32 tiles (256 MiB) and its .npy header
# (found in review: 256 MiB alone refused that very scene by its 128-byte header).
MAX_INCOMING_BYTES = 256 * 1024 * 1024 + 64 * 1024
# Bytes of one file's checks between two keep-alives (Worker._keepalive): a tenth of a second of a busy CPU, where the
# largest file whole is seconds (found in audit: past a short compute_watchdog_s, a healthy worker was restarted).
KEEPALIVE_BYTES = 16 * 1024 * 1024
CLOCK_SLACK_S = 0.5  # the agent's clock gaining less than this on the worker's is the messages' delay
MAX_CLOCK_GAIN_S = 86_400.0  # more between two Admits, either way, is a clock set anew or a bad value, not time
MAX_DEFERRED = 256  # messages _keepalive holds for the loop at most
INSTALL_GRACE_S = 30.0  # an install past compute_open_s by this falls silent (_kept_alive): the agent waits 60 s more
OPEN_POLL_S = 0.02  # while a session opens on its own thread: the pings' answer comes within this
OPEN_BUSY_S = 10.0  # an open this long (a TensorRT build): requests are answered BUSY, not kept for minutes
LOCK_WAIT_S = 10.0  # a worker of a dead agent may still be checkpointing: wait this long for its lock
MODELS_DIR = Path(__file__).resolve().parent / "models"  # shipped models and data sets
RESCRUB_MIN_S = 1.0  # a failed check within this of a full scrub runs again without scrubbing again
REBUILD_AFTER_FAILED_AGAIN = 2  # batches in a row failing again after a scrub before the session is rebuilt
EXPORT_RETRY_S = 10.0  # a trained model or a product whose write failed (a full disk) is written again this often
CHECK_EVENT_MIN_S = 10.0  # RESULT_CHECK_FAILED at most this often (the counters count every one)
REPAIR_EVENTS_PER_STEP = 8  # WEIGHTS_REPAIRED events per scrub step at most, the last one for the rest


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED)

_CHECKPOINT_NAME = re.compile(r"job(\d{5,10})\.ck(?:\.corrupt)?")  # Worker._checkpoint_path, and moved aside


@dataclass
class Job:
    """A job as the worker keeps it: the command's spec (read through, ``job.name``), its state
    and progress. In ``jobs.json`` one flat map per job."""

    spec: cp.JobSpec
    state: JobState = JobState.QUEUED
    progress: int = 0
    detail: str = ""

    def __getattr__(self, name: str) -> Any:
        if name == "spec":  # not set yet (copy, unpickle): never recurse
            raise AttributeError(name)
        return getattr(self.spec, name)

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self.spec, f.name) for f in fields(self.spec)}
        body.update(kind=self.spec.kind.value, state=self.state.value, progress=self.progress, detail=self.detail)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Job":
        body = dict(body)
        state, progress, detail = JobState(body.pop("state")), int(body.pop("progress")), str(body.pop("detail"))
        return cls(cp.JobSpec(**{**body, "kind": JobKind(body["kind"])}), state, progress, detail)


class NonFiniteOutput(ArithmeticError):
    """A model gave NaN or infinite outputs that no check flagged: no product is written from them."""


NO_CLASS = -1  # a product's class for a tile whose checks failed and whose output is not a number
CLASS_DTYPE = np.int16
"""A product's classes: a model's outputs past its range (32767) are written as int32. Two bytes a
tile, not numpy's eight: the classes were 5/8 of a product's bytes on the link."""
MAX_CLASSES = 1024  # a training job's outputs, at most (TRAIN_START classes' range)


class BadInput(ValueError):
    """Input tiles a model cannot take or must not be run on: the sender's fault, not the model's (a
    version on probation is not rolled back for them)."""


def npy_array(data: bytes, what: str) -> np.ndarray:
    """The one array of a .npy file's ``data``, a read-only view of them (nothing copied), or :class:`BadInput`
    naming ``what``: an archive, a pickle, a header numpy cannot read, or data of another length than the header
    says (a file cut short). The header is held to the bytes there before anything is made of it: numpy makes
    an array as long as a header says before it reads (a header of a terabyte on a file of a kilobyte)."""
    if data.startswith(b"PK\x03\x04"):  # an .npz under a .npy name
        raise BadInput(f"{what}: an archive, not one .npy array")
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise ValueError(f".npy format version {version[0]}.{version[1]}")
        shape, fortran, dtype = read[version](f)
        if dtype.hasobject:
            raise ValueError("it holds Python objects (a pickle)")
        count, have = math.prod(shape), len(data) - f.tell()
        if have != count * dtype.itemsize:
            raise ValueError(f"{have} bytes of data where its header says {count * dtype.itemsize}")
        return np.frombuffer(data, dtype, count, f.tell()).reshape(shape, order="F" if fortran else "C")
    except (ValueError, EOFError) as exc:
        raise BadInput(f"{what}: not a .npy array numpy can read ({type(exc).__name__}: {exc})") from None


def checked_tiles(tiles: object, shape: Sequence[object], what: str,
                  keepalive: Callable[[], None] | None = None) -> np.ndarray:
    """``tiles`` as float32 for a model input of ``shape`` (its dims, a name or None where free), or
    :class:`BadInput` naming ``what`` and the fault: not an array of numbers, the wrong rank or size,
    no tiles, or NaN or infinite values (after the cast: 1e300 is infinite in float32). Checked before
    the model runs, so a NaN tile is not taken for a model that gives non-finite outputs (found in
    review: it rolled back a good version on probation). Cast and checked :data:`KEEPALIVE_BYTES` at a
    time, ``keepalive`` called after each part: a camera's largest file is seconds of it."""
    if not isinstance(tiles, np.ndarray) or tiles.dtype.kind not in "biuf":
        kind = tiles.dtype if isinstance(tiles, np.ndarray) else type(tiles).__name__
        raise BadInput(f"{what}: holds {kind}, not an array of numbers")
    want = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if tiles.ndim != len(want) or any(w is not None and w != got for w, got in zip(want, tiles.shape)):
        taken = ", ".join("N" if w is None else str(w) for w in want)
        raise BadInput(f"{what}: has shape {list(tiles.shape)}, the model takes [{taken}]")
    if len(tiles) == 0:
        raise BadInput(f"{what}: holds no tiles")
    out = np.empty(tiles.shape, np.float32)  # a copy: never a view of a file's map, nor of the caller's array
    bad = np.empty(len(out), bool)
    step = max(1, KEEPALIVE_BYTES // max(1, out[0].nbytes))
    for at in range(0, len(out), step):
        part = out[at:at + step]
        with np.errstate(over="ignore"):  # past float32's range: infinite, and said so below
            part[...] = tiles[at:at + step]
        bad[at:at + step] = ~np.isfinite(part.reshape(len(part), -1)).all(axis=1)
        if keepalive is not None:
            keepalive()
    if bad.any():
        raise BadInput(f"{what}: {int(bad.sum())} of {len(out)} tiles hold NaN or infinite values "
                       f"(the first: {np.flatnonzero(bad)[:8].tolist()})")
    return out


class ModelLoadFailed(RuntimeError):
    """The model would not load into a session (not the job's data, not the disk): its fault.
    ``rollback_refused``: a version on probation whose automatic rollback was refused as it failed, said then."""

    def __init__(self, reason: str, rollback_refused: bool = False):
        super().__init__(reason)
        self.rollback_refused = rollback_refused


class OpenNeverEnded(Exception):
    """Every provider is skipped for these bytes: attempts to open them never returned, two in a row on each
    (flight/compute/opening.py). Not a RuntimeError: no other way of opening the same bytes is tried."""


class _Session(NamedTuple):
    session: Any
    input_name: str
    version: str
    sha256: str
    from_golden: bool
    provider: str = CPU
    scrubber: WeightScrubber | None = None  # None: the weights are not scrubbed (off, or not the CPU provider)
    owned: Any = None  # the OrtValues over the scrubber's arrays: alive as long as the session
    check_output: str | None = None  # the checksum pass's per-sample output, where the model has one
    protection: Protection = Protection.NONE
    name: str = ""
    outputs: tuple[str, ...] = ()  # what a run asks for: the model's own result, then check_output, range_output
    data: bytes = b""  # the model as this session runs it (HIL upset injection hooks and judges it; else unused)
    abft_precision: str = ""  # the checksum pass's record of the arithmetic it checks for: "fp32", "tf32"; "" unchecked
    range_output: str | None = None  # the range checks' per-sample output, where the model has them
    optimization: str = OWNED_WEIGHTS_OPTIMIZATION  # owned weights: the level that computes from every buffer

    @property
    def checked(self) -> bool:
        """Whether a run gives per-sample flags (the checksum pass's, the range checks', or both)."""
        return len(self.outputs) > 1

    @property
    def input_shape(self) -> list[Any]:
        """The model input's dims: a number, or a name or None where free (the batch)."""
        return list(self.session.get_inputs()[0].shape)


class _CheckedModel(NamedTuple):
    """One model version as the worker runs it with ``abft_checks`` or ``range_checks``: made once, kept
    while it is the one and the parameters are those it was made for."""

    source_sha256: str  # the store's bytes it was made from
    data: bytes | None  # the protected model; None: run the store's bytes (their own check output, or refused)
    sha256: str  # of ``data``, checked at each reuse ("" with no data)
    precision: str  # the arithmetic it was made for (providers.abft_precision): made again when that changes
    abft: bool = True  # the parameters it was made for: made again when either changes
    ranges: bool = False
    version: str = ""  # the store's version: the same bytes installed again may come with other reference inputs
    nchwc: int | None = None  # the NCHWc block its sums read for, 0 plain (abft.protect's nchwc): made again
    # when the session's changes; None where its bytes do not depend on it (no checksum pass, refused, no such sum)
    ranged: bool = False  # its range checks are this worker's, learned from the version's reference inputs


class _KeptAlive:
    """A session whose runs are followed by ``keepalive`` (at most every :data:`OPEN_POLL_S`): the reference check
    (flight/compute/uplink.py) runs an uplink's reference inputs a batch at a time, seconds for a large set (found
    in audit: a set of 2 million rows ran 8.5 s answering no ping, past a short compute_watchdog_s); anything else
    is the session's own."""

    def __init__(self, session: Any, keepalive: Callable[[], None]):
        self._session, self._keepalive = session, keepalive
        self._kept_at = -math.inf

    def run(self, *args: Any, **kwargs: Any) -> Any:
        out = self._session.run(*args, **kwargs)
        now = time.monotonic()
        if now - self._kept_at >= OPEN_POLL_S:  # not after every run: a poll costs more than a small model's batch
            self._kept_at = now
            self._keepalive()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class _ModelChanged(Exception):
    """A session rebuilt in the middle of a batch came from another model version than the
    product's first batches (:meth:`Worker._restart_job`)."""

    def __init__(self, model: Any):
        super().__init__(f"{model.name} is now {model.version}")
        self.model = model


def _node_inputs(data: bytes) -> tuple[set[str], set[str]]:
    """The tensors the nodes of the ONNX model ``data`` read: (in its main graph, only inside subgraphs)."""
    graph = onnx.load_from_string(data).graph
    main = {name for node in graph.node for name in node.input}
    return main, subgraph_reads(graph) - main


def _check_output_of(data: bytes, precision: str = "fp32") -> tuple[str, str, str]:
    """What the ONNX model ``data`` says of the checksum pass's per-sample output: "ours" (this
    build's pass made it, or one whose checks it vouches for (``TRUSTED_PASS_VERSIONS``), every node
    checked at its own tolerance, for arithmetic no finer than the session's ``precision``: its flag is
    trusted, as far as the model's signature is),
    "foreign" (an output of that name the pass of this
    build did not make as the worker would: never read as a check), or "" (none); with the precision
    the pass's record gives where it is ours ("" otherwise), and why it is foreign ("" otherwise)."""
    model = onnx.load_from_string(data)
    if not any(o.name == CHECK_OUTPUT for o in model.graph.output):
        return "", "", ""
    try:
        record = describe(model) if is_protected(model) else {}
    except ValueError:  # a record that does not parse
        return "foreign", "", "its checksum record does not parse"
    if record.get("version") not in TRUSTED_PASS_VERSIONS:
        trusted = ", ".join(str(v) for v in TRUSTED_PASS_VERSIONS)
        return "foreign", "", f"the checksum pass of this build (version {PASS_VERSION}) did not make it, nor one it " \
                              f"vouches for (versions {trusted})"
    # Made with strict=False (nodes left unchecked) or a tolerance of its own: it checks less than its
    # receipt would say (found in review: a skipped MatMul's fault was reported passed).
    skipped = record.get("skipped") or []
    if skipped:
        first = skipped[0] if isinstance(skipped[0], dict) else {}
        return "foreign", "", f"its checks leave {len(skipped)} node(s) unchecked ({first.get('node', '?')})"
    if record.get("rtol") is not None or record.get("atol") != DEFAULT_ATOL or record.get("safety") != SAFETY:
        return "foreign", "", "it was protected with a tolerance other than the pass's own"
    if precision == "tf32" and record.get("precision") != "tf32":
        # fp32's tolerance, on a session that may round Conv and MatMul operands to TF32: past it on every
        # tile (found in review: a model protected on the ground was read all the same).
        return "foreign", "", f"it was protected for {record.get('precision') or 'fp32'} arithmetic, and this " \
                              "session may run in tf32"
    return "ours", str(record.get("precision", "")), ""


def _refusal(exc: Exception) -> str:
    """Why a pass refused a model: its ValueError names the node or tensor; anything else is the pass's fault."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def _refusal_text(exc: BaseException) -> str:
    """What onnxruntime said when it refused a run, short: the node and the condition, not its source path."""
    text = str(exc)
    node = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
    said = text.split("Status Message:")[-1]
    said = said.split("was false.")[-1] if "was false." in said else said
    return (f"{node.group(1)} {node.group(2)}: " if node else "") + " ".join(said.split())[:80]


def _has_range_output(data: bytes) -> bool:
    """Whether ``data`` has the range checks' output: one the store's bytes bring is never read."""
    return any(o.name == RANGE_OUTPUT for o in onnx.load_from_string(data).graph.output)


@dataclass
class InferenceTotals:
    count: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    confidence_sum: float = 0.0
    batches: int = 0
    busy_s: float = 0.0


class Worker:
    def __init__(self, endpoint: str, root: Path, store: ModelStore | None = None,
                 trusted_keys: Path | None = None, allow_unsigned: bool = False, upset_injection: bool = False):
        """``trusted_keys``: the operators' public keys ([models] trusted_keys; read at each install);
        ``allow_unsigned``: take a model with no signed manifest on its SHA-256 alone;
        ``upset_injection``: HIL only, take the harness's upsets into memory (flight/compute/inject.py)."""
        self.root = Path(root)
        self.trusted_keys = Path(trusted_keys) if trusted_keys is not None else None
        self.allow_unsigned = allow_unsigned
        self.removed_temp_files = len(remove_interrupted_writes(self.root, recursive=True))
        self.store = store or ModelStore(self.root / "models")
        # a version's files no manifest names: an install a power cut cut short (found in audit: kept for good)
        self.removed_store_files = len(self.store.remove_unreferenced())
        self.products = self.root / "products"
        self.incoming = self.root / "incoming"
        for d in (self.products, self.incoming, self.root / "checkpoints", self.root / "staging"):
            d.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[int, Job] = {}
        self.admission = Admission.NONE
        self.threads = 1
        self.batch = 32
        self.duty = 1.0
        self.power_w: float | None = None
        self.reason = "waiting for the agent"
        self.provider = ""
        # What every session is opened with, fastest first; the checksum pass's precision follows it.
        self.providers: tuple[str, ...] = PREFERENCE
        self.totals = InferenceTotals()
        self._sessions: dict[tuple[Any, ...], _Session] = {}
        self._states: dict[str, ModelState | None] = {}  # the store's, cached until a model changes
        self._current_model = self._latest_model()  # whose provenance goes into the status
        self._training: dict[int, TrainingJob] = {}
        self._results: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._checks: dict[int, ProductChecks] = {}  # per inference job: what its product's receipt says
        # The environment and the check parameters, as the agent last sent them (Admit); until then
        # nothing is known and nothing is run twice.
        self.radiation = cp.NO_RADIATION
        self._radiation_at = 0.0  # clock_s() when it came
        # How far the agent's clock (Admit.clock_s) has run ahead of this process's monotonic clock: under the
        # harness it is simulated time, steps of a minute in tens of milliseconds (found in audit: the scrub
        # kept wall time, and a simulated orbit had 0.4 of a pass where a board has 4). See clock_s.
        self._ahead_s = 0.0
        self._agent_base: float | None = None  # the first Admit's clock_s less time.monotonic() when it came
        self.double_run_fraction = 0.0
        self.double_run_all_in_saa = False
        self.scrub_weights = True
        # Off until the agent says (its parameter abft_checks is on by default, sent with every
        # admission, and nothing runs before the first): a harness that drives the worker without
        # an agent gets the model as uplinked.
        self.abft_checks = False
        self.range_checks = False  # the parameter range_checks (off by default, as the agent's)
        self._checked_models: dict[str, _CheckedModel] = {}  # model name -> its version as the pass made it
        # model name -> (SHA-256, precision) of its version whose running unchecked was said (MODEL_UNCHECKED):
        # said once per version, whatever is made again around it (found in audit: each range_checks change
        # ran the pass again, and said it again)
        self._unchecked_said: dict[str, set[tuple[str, str]]] = {}
        # model name -> why its current version runs without range checks (MODEL_RANGES_UNCHECKED says it)
        self.range_notes: dict[str, str] = {}
        # model name -> (SHA-256, version, checksum pass runs on it, ranges learned or None): once per version
        self._ranges_learned: dict[str, tuple[str, str, bool, dict[str, tuple[float, float]] | None]] = {}
        self._failed_flags = ""  # which flags failed in the last _run_model: "checksum", "range", both, or ""
        self._double = DoubleRunSchedule()
        self.scrub_passes = 0
        self.scrub_chunks = 0
        self.scrub_repairs = 0
        self.checks_failed = 0
        self.reruns = 0
        self.double_runs = 0
        self.results_marked = 0
        self.last_check_failed = ""  # what failed in the last checked batch's first run ("" if nothing)
        self._check_event_at = -math.inf
        self._failed_in_row: tuple[Any, int] = (None, 0)  # (session, batches failing again after a scrub in a row)
        self._rebuilt_failing: set[str] = set()  # models rebuilt for failing again, no batch of theirs passed since
        self.train_steps_refused = 0  # training under radiation (training/guard.py), since the worker started
        self.train_restores = 0
        self.train_saa_checkpoints = 0
        self.train_checkpoints_refused = 0
        self._refusal_event_at: dict[int, float] = {}  # job id -> when its last TRAIN_STEP_REFUSED was said
        self._export_retry_at: dict[int, float] = {}  # job id -> when a model or product not written is tried again
        self._slice_idle = False  # the slice's job had nothing to do (a trained model's write waits): no busy time
        self.infer_files_rejected = 0  # bad files in incoming/, moved to incoming/rejected/
        self.compute_writes_failed = 0  # the job list or a checkpoint not written (a full or failing disk)
        self._write_event_at = -math.inf
        self.compute_state_corrupt = 0  # state read back that failed its check (COMPUTE_STATE_CORRUPT)
        self._corrupt_event_at: dict[str, float] = {}  # what -> when last said (those of the last 10 s)
        self._corrupt_said: dict[str, tuple[str, str]] = {}  # model name -> its reference set said corrupt
        self._marked_event_at, self._marked_unsaid = -math.inf, 0  # PRODUCT_MARKED: when last said, how many since
        # Incoming files that could not be moved (refused, or screened) -> what they were (_file_stamp): skipped
        # while the same file is there; another written under the name is screened (found in review: a camera
        # writing scene.npy again had every later scene skipped for good)
        self._unmovable: dict[str, tuple[int, ...] | None] = {}
        self._last_job_id = 0  # the job the last slice ran (status: job_id, job_kind)
        self._last_train_job_id = 0  # the training job that ran last (status: train_*)
        self._watched_repairs: dict[str, int] = {}  # per model name: repairs of a tensor no check covers, so far
        self._run_repairs: dict[str, int] = {}  # per model name: _watched_repairs as its last run began
        self._drops = 0  # sessions dropped for weights nothing could repair
        # scrubber -> when scrub_all last ran; weak: an entry goes with its scrubber (found in audit: keyed by
        # id(), a session built again after a drop often got the dropped scrubber's id, and its first full
        # scrub after a failed check, within RESCRUB_MIN_S, did not run)
        self._last_full_scrub: weakref.WeakKeyDictionary[WeightScrubber, float] = weakref.WeakKeyDictionary()
        self.scrub_step_bytes = STEP_BYTES  # owned bytes a scrub step checks at most (tests make it small)
        self._period_since: tuple[float, float] | None = None  # (scrub period, since when it has been in force)
        # those said behind (SCRUB_BEHIND) and not caught up since; weak, as _last_full_scrub (a new scrubber
        # on a recycled id was taken as said already)
        self._behind: weakref.WeakSet[WeightScrubber] = weakref.WeakSet()
        self._cursor: dict[int, int] = {}
        self._inputs: dict[int, np.ndarray] = {}
        self._stop = False
        self._last_status = 0.0
        self._train_rate = (0.0, 0.0)  # (steps, seconds) over the last slice
        self._injector = UpsetInjector(self.root, self._reference_session, self._hooked_session) \
            if upset_injection else None
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.IDENTITY, b"compute")
        self._sock.linger = 500
        self._sock.connect(endpoint)
        self._deferred: list[Any] = []  # messages taken in by _keepalive, for the loop
        self._busy = ""  # why requests are answered BUSY now (a long open), or ""
        # Opening sessions (flight/compute/opening.py): the longest an open may take, the parameter
        # compute_open_s as the agent last sent it; the opens begun and not ended; TensorRT's engines.
        self.open_limit_s = float(DICTIONARY.parameter_by_name["compute_open_s"].default)
        self._opens = OpenRecord(self.root / RECORD_FILE, on_corrupt=lambda reason, moved: self._state_corrupt(
            "the record of its opens", reason, ("moved aside as opening.json.corrupt" if moved else "left in place, "
                                                "not read") + ": every provider is tried again"))
        self._pending_write_failures: list[OSError] = []  # of the record, in the open's thread: said after it
        self._engines = EngineCache(self.root / "trt", self._keepalive)
        self._sealed_engines: set[str] = set()  # the caches this worker sealed or found sealed: sealed again
        self._load_jobs()

    # --- messages ------------------------------------------------------------------------

    def _send(self, msg: Any) -> None:
        try:
            self._sock.send(cp.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass  # the agent is gone or slow; status goes again within a second

    def _keepalive(self) -> None:
        """Within a long piece of work (the checksum pass over a model of thousands of nodes, learning its
        ranges, probing a deep model's buffers, a session's open): answer the agent's pings now, so
        its watchdog sees a worker at work, not a hung one; anything else waits, in order, for the loop
        (:meth:`run`), as nothing else may change under the work. An admission replaces the one that
        waits (one comes every control tick: an open of half an hour would fill the list, and the newest
        is the one in force); a Stop is never dropped. While :attr:`_busy` says why (an open past
        :data:`OPEN_BUSY_S`), a request is answered BUSY at once instead of minutes later, after the
        agent has given up on it (found in review: an install reported failed, then done)."""
        while self._sock.poll(0):
            try:
                msg = cp.decode(self._sock.recv())
            except ProtocolError as exc:
                self.event("JOB_FAILED", job_id=0, reason=f"bad message from the agent: {exc}")
                continue
            if isinstance(msg, cp.Ping):
                self._send(cp.Pong(msg.seq))
            elif self._busy and isinstance(msg, cp.REQUESTS):
                self._reply(msg.req_id, False, self._busy, FailureCode.BUSY)
            elif isinstance(msg, cp.Admit):
                self._deferred = [m for m in self._deferred if not isinstance(m, cp.Admit)] + [msg]
            elif len(self._deferred) < MAX_DEFERRED or isinstance(msg, cp.Stop):
                self._deferred.append(msg)
            else:  # never on a board (the agent waits for replies); bounded all the same
                self.event("JOB_FAILED", job_id=0, reason=f"{type(msg).__name__} from the agent dropped: "
                                                          f"{MAX_DEFERRED} messages waiting already")

    def _in_background(self, call: Callable[[], T], name: str, under_way: Callable[[], tuple[str, int] | None],
                       give_up: Callable[[bool], tuple[str, int] | None], for_job: bool = True) -> T:
        """``call`` (a session's open: one call into onnxruntime, where TensorRT builds its engine, minutes
        for a large model on a Jetson) on a thread of its own, while this one answers the agent's pings,
        keeps anything else for the loop (:meth:`_keepalive`; past :data:`OPEN_BUSY_S`, requests are
        answered BUSY at once, those waiting first) and sends the status every second. Nothing can cancel
        the call, so the worker exits (:meth:`_exit_mid_open`) where it must not wait for it: past
        :attr:`open_limit_s` of :meth:`clock_s` (OPEN_LIMIT_EXIT: held against the provider being tried,
        ``give_up(False)``, which freezes the record and returns the attempt under way: its name and attempts
        in a row; ``under_way()`` reads it while the open goes on); told to stop (Stop, SIGTERM); or, opening
        for a job (``for_job``; an install's reference check is the ground's command, whatever the mode),
        told that nothing may run (the newest
        admission NONE: not COMPUTE mode, SAFE, the battery floor, the thermal limit), for which the worker
        does not go on computing for up to ``compute_open_s`` (OPEN_ABANDONED_EXIT: ``give_up(True)`` first,
        so it is not held against the provider). Each said (MODEL_OPEN_UNFINISHED). Raises what ``call``
        raised."""
        began = status_at = self.clock_s()
        thread, outcome = _started(call, "sunlit-open")
        try:
            while thread.is_alive():
                stop = "told to stop" if self._stop or any(isinstance(m, cp.Stop) for m in self._deferred) else ""
                admits = [m for m in self._deferred if isinstance(m, cp.Admit)]
                if not stop and for_job and admits and admits[-1].admission is Admission.NONE:
                    stop = f"nothing admitted ({admits[-1].reason[:80]})"
                elapsed_s = self.clock_s() - began
                if stop or elapsed_s >= self.open_limit_s:
                    trying = give_up(bool(stop))  # no other attempt written down after this (found in review)
                    provider, tries = trying if trying else ("(no provider tried yet)", 0)
                    self.event("MODEL_OPEN_UNFINISHED", name=name, provider=provider, tries=0 if stop else tries,
                               outcome=f"given up, {stop}: the worker exits, as nothing else stops onnxruntime's "
                                       "call; not held against the provider" if stop else
                                       f"still opening after compute_open_s ({self.open_limit_s:g} s): the worker "
                                       "exits and is started again")
                    self._exit_mid_open(cp.OPEN_ABANDONED_EXIT if stop else cp.OPEN_LIMIT_EXIT)
                if elapsed_s >= OPEN_BUSY_S and not self._busy:
                    trying = under_way()
                    self._answer_busy(f"the worker is opening model {name}" + (f" on {trying[0]}" if trying else "")
                                      + " (TensorRT builds its engine then): send it again once it has opened")
                if self.clock_s() - status_at >= STATUS_PERIOD_S:
                    status_at = self.clock_s()
                    self._send(self.status())
                thread.join(OPEN_POLL_S)
                self._keepalive()
        finally:
            self._busy = ""
        return _ended(outcome)

    def _answer_busy(self, why: str) -> None:
        """From now until the long work ends, requests are answered BUSY, ``why``, at once (:meth:`_keepalive`),
        those waiting already among them."""
        self._busy = why
        waiting = [m for m in self._deferred if isinstance(m, cp.REQUESTS)]
        self._deferred = [m for m in self._deferred if not isinstance(m, cp.REQUESTS)]
        for msg in waiting:
            self._reply(msg.req_id, False, self._busy, FailureCode.BUSY)

    def _kept_alive(self, call: Callable[[], T], began: float) -> T:
        """``call`` on a thread of its own while this one answers the agent's pings (:meth:`_keepalive`): for the
        calls of an install that cannot be cut into parts, its checks before any session (the files read and hashed,
        the model parsed: found in audit, 7.5 s here for a model of 1.8 GiB, answering no ping, past a short
        compute_watchdog_s) and the store's activation (a CPU open, hashes, writes with fsync and the read-back:
        3.1 s for one of 381 MiB). Past :data:`OPEN_BUSY_S` a request is answered BUSY, as during a long open; past
        ``compute_open_s`` and :data:`INSTALL_GRACE_S` since the install ``began`` (:meth:`clock_s`: the whole
        install, its reference check's open among it, as the agent waits 60 s past ``compute_open_s`` for the whole)
        the pings go unanswered, so that the agent's watchdog (at its default 10 s) replaces a worker stuck in it (a
        wedged read or fsync) before that wait ends (found in review: answered for ever, the hang hidden, and a late
        end activated a model whose install was said failed; then one limit a step; then, past compute_open_s alone,
        an install whose reference open had taken a TensorRT build's time was cut in its last seconds). A watchdog
        longer than the grace lets the agent's wait end first: the install is said failed, and may still end. Raises
        what ``call`` raised."""
        thread, outcome = _started(call, "sunlit-install")
        try:
            while thread.is_alive():
                thread.join(OPEN_POLL_S)
                elapsed_s = self.clock_s() - began
                if elapsed_s >= self.open_limit_s + INSTALL_GRACE_S:
                    continue  # silent: the watchdog's to judge
                if elapsed_s >= OPEN_BUSY_S and not self._busy:
                    self._answer_busy("the worker is installing a model: send it again once it has been installed")
                self._keepalive()
        finally:
            self._busy = ""
        return _ended(outcome)

    def _exit_mid_open(self, code: int) -> None:
        """Leave while a session's open goes on in its thread: training checkpointed, HIL's ledger saved and
        the status sent, as a stop does, then out, the messages sent first (up to a second)."""
        self._pause_training("the worker exits while a model opens")
        if self._injector is not None:
            self._injector.save()
        self._send(self.status())
        zmq.Context.instance().destroy(linger=1000)
        os._exit(code)

    def _open_session(self, data: bytes, name: str, options: Any = None, for_job: bool = True) -> OpenedSession:
        """:func:`~flight.compute.providers.open_session` on ``data`` for model ``name``, as the worker opens
        every session of a job or an install (the HIL's injection sessions apart: a rig's CPU, opened as any
        test opens one) (flight/compute/opening.py), on a thread of its own
        (:meth:`_in_background`). Each provider's attempt is written down in the record of opens before it
        begins and struck off when it returns; one on which :data:`~flight.compute.opening.UNFINISHED_LIMIT`
        attempts in a row on these bytes never returned is skipped for them from now on (said, and in the
        session's fallbacks), the CPU too: where no provider is left, :class:`OpenNeverEnded`. On TensorRT,
        where the model's input lets it be warmed up, its engines are cached per version: the cache checked
        against its seal first, the session run over the batches a job runs, then the cache sealed. Raises
        what open_session raises (SessionError where even the CPU refused the model)."""
        hashed = hashlib.sha256()  # seconds for a model near 2 GiB (found in audit): pings answered between parts
        for at in range(0, len(data), KEEPALIVE_BYTES):
            hashed.update(memoryview(data)[at:at + KEEPALIVE_BYTES])
            self._keepalive()
        sha = hashed.hexdigest()
        have = set(ort.get_available_providers())
        skipped = self._opens.skipped(sha)
        left = self._opens.unfinished(sha)
        for provider in [p for p in providers_to_try(self.providers) if p in have and p not in skipped]:
            tries = left.get(provider, 0)
            if tries >= UNFINISHED_LIMIT:
                skipped.append(provider)
                try:
                    self._opens.skip(sha, provider)
                except OSError as exc:  # the disk refuses: skipped by this worker all the same
                    self._write_failed("the record of its opens", exc)
            if tries:
                self.event("MODEL_OPEN_UNFINISHED", name=name, provider=provider, tries=tries,
                           outcome=f"{provider} skipped for this version from now on" if tries >= UNFINISHED_LIMIT
                           else "the worker that began it was lost: opening it again")
        preferred = [p for p in providers_to_try(self.providers) if p not in skipped]
        if not any(p in have for p in preferred):
            raise OpenNeverEnded(f"not opened again (install another version, or roll back): {UNFINISHED_LIMIT} "
                                 f"attempts in a row never returned on each of {', '.join(skipped)}")
        provider_options: dict[str, dict[str, str]] = {}
        plan = None
        if TENSORRT in preferred and TENSORRT in have:
            plan = self._engine_cache(sha, name, data)
            if plan is not None:
                provider_options[TENSORRT] = tensorrt_options(self._engines.directory(sha))
        trying: list[Any] = []  # [provider, attempts in a row] of the attempt under way, the open's thread's

        guard = threading.Lock()  # the open's thread and this one, over ``trying`` and ``frozen``
        frozen: list[bool] = []  # the worker is leaving mid-open: no attempt is written down or struck off now

        def attempt(provider: str) -> None:  # before each provider's attempt, in the open's thread
            with guard:
                if frozen:
                    return  # found in review: a provider written down after the give-up, as the worker left
                self._struck_off(sha, trying)
                try:
                    tries = self._opens.begin(sha, provider)
                except OSError as exc:
                    self._pending_write_failures.append(exc)  # said by the worker's thread once the open returns
                    tries = left.get(provider, 0) + 1
                trying[:] = [provider, tries]

        def give_up(on_purpose: bool) -> tuple[str, int] | None:  # leaving mid-open: the record as it stands,
            with guard:  # or the attempt withdrawn; the attempt under way as it was frozen
                frozen.append(True)
                froze = (trying[0], trying[1]) if trying else None
                if on_purpose:
                    self._struck_off(sha, trying, given_up=True)
            for exc in self._pending_write_failures:
                self._write_failed("the record of its opens", exc)
            return froze

        def under_way() -> tuple[str, int] | None:
            with guard:
                return (trying[0], trying[1]) if trying else None

        def opening() -> tuple[OpenedSession, bool]:
            opened = open_session(data, preferred, self.threads, options=options, provider_options=provider_options,
                                  attempt=attempt)
            return opened, opened.provider == TENSORRT and plan is not None and warm_up(opened.session, plan)

        try:
            opened, warmed = self._in_background(opening, name, under_way, give_up, for_job)
        finally:  # the call came back, opened or refused (the exits above never get here)
            with guard:
                self._struck_off(sha, trying)
            for exc in self._pending_write_failures:
                self._write_failed("the record of its opens", exc)
            self._pending_write_failures.clear()
        if plan is not None:
            try:
                (self._engines.seal if warmed else self._engines.wipe)(sha)
                if warmed:
                    kept = {s for s in self._sealed_engines if self._engines.directory(s).is_dir()}
                    self._sealed_engines = kept | {sha}
            except (OSError, CorruptFile) as exc:  # unsealed: deleted and built again at the next open, never unchecked
                self._write_failed("the seal of a TensorRT engine cache", exc if isinstance(exc, OSError) else str(exc))
        opened.fallbacks[:0] = [f"{p}: skipped for this version: {UNFINISHED_LIMIT} attempts in a row to open it "
                                "never returned" for p in skipped if p in have]
        return opened

    def _engines_resealed(self) -> None:
        """After an inference slice: the TensorRT engine caches sealed by this worker sealed again where
        TensorRT wrote to them in the slice (:meth:`EngineCache.reseal_if_changed`)."""
        for sha in list(self._sealed_engines):
            try:
                self._engines.reseal_if_changed(sha)
            except (OSError, CorruptFile) as exc:  # a file gone or unreadable now: it is found at the next check
                self._sealed_engines.discard(sha)
                self._write_failed("the seal of a TensorRT engine cache", exc if isinstance(exc, OSError) else str(exc))

    def _fallbacks_said(self, opened: OpenedSession) -> OpenedSession:
        for line in opened.fallbacks:
            self.event("PROVIDER_FALLBACK", provider=opened.provider, reason=line[:200])
        return opened

    def _struck_off(self, sha: str, trying: list[Any], given_up: bool = False) -> None:
        """The attempt under way (``trying``) returned: struck off the record; or is ``given_up`` on purpose:
        its count back to what it was before it began."""
        if trying:
            provider = trying[0]
            trying.clear()
            try:
                (self._opens.withdraw if given_up else self._opens.end)(sha, provider)
            except OSError as exc:
                self._pending_write_failures.append(exc)

    def _engine_cache(self, sha: str, name: str, data: bytes) -> tuple[str, Any, list[list[int]]] | None:
        """The warm-up plan of ``data`` (:func:`~flight.compute.opening.warm_up_plan`) where TensorRT may
        cache its engines: the model lets it be warmed up, the cache directory is the worker's own, and this
        version's cache, if any, matches its seal (else it is deleted, said, and built again); None where
        TensorRT is to build them as onnxruntime sets it up, uncached."""
        try:
            plan = warm_up_plan(data, cp.MAX_BATCH)
        except Exception:  # noqa: BLE001 - onnx refuses what onnxruntime may still open: no cache then
            return None
        if plan is None:
            return None
        try:
            self._dir("trt").mkdir(exist_ok=True)  # refused where a link leads it out of the compute directory
            why = self._engines.check(sha)
            if why is not None:
                self._state_corrupt(f"the TensorRT engine cache of {name}", why, "deleted: TensorRT builds it again")
            self._engines.directory(sha).mkdir(exist_ok=True)
        except Undeletable as exc:
            self._state_corrupt(f"the TensorRT engine cache of {name}", exc.why,
                                "it could not be deleted: TensorRT builds its engines uncached")
            return None
        except (OSError, NameRefused) as exc:
            self._write_failed("a TensorRT engine cache", exc if isinstance(exc, OSError) else str(exc))
            return None
        return plan

    def event(self, event: str, /, **args: Any) -> None:
        """Said to the agent; text printable (a file name the camera gave, a line of onnxruntime's, escaped: found
        in audit, a name not UTF-8 could not be encoded, and the continuous job that named it failed)."""
        self._send(cp.WorkerEvent(event, {k: printable(self._relative(v)) if isinstance(v, str) else v
                                          for k, v in args.items()}))

    def _reply(self, req_id: int, ok: bool, reason: str = "", code: FailureCode = FailureCode.NONE,
               **result: Any) -> None:
        self._send(cp.Reply(req_id, ok, self._relative(reason)[:200], int(code), result))

    def _relative(self, text: str) -> str:
        """``text`` with the compute directory's absolute path taken out (an OSError or a store
        error names the file it failed on): events and reasons never give away the board's paths."""
        for root in {str(self.root.absolute()), os.path.realpath(self.root)}:
            text = text.replace(root + os.sep, "").replace(root, ".")
        return text.replace(str(MODELS_DIR) + os.sep, "shipped:")

    def _dir(self, name: str) -> Path:
        """One of the worker's directories (products, checkpoints, incoming), refused (NameRefused)
        if a symbolic link leads it outside the compute directory: nothing is written through it."""
        return resolve(self.root, name, None, name)

    def _handle(self, msg: Any) -> None:
        """One message from the agent. A fault in handling it fails that request alone, said with what
        it was (its reply, or JOB_FAILED where it has none); the worker goes on (a crash would interrupt
        every job, and the agent would only learn that the worker was restarted)."""
        try:
            self._dispatch(msg)
        except ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for one request
            why = f"the worker could not handle {type(msg).__name__} ({type(exc).__name__}: {str(exc)[:120]})"
            req_id = getattr(msg, "req_id", None)
            if isinstance(req_id, int):
                self._reply(req_id, False, why, FailureCode.EXECUTION_ERROR)
            else:
                self.event("JOB_FAILED", job_id=0, reason=self._relative(why)[:200])

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, cp.Ping):
            self._send(cp.Pong(msg.seq))
        elif isinstance(msg, cp.Admit):
            self.admission = msg.admission
            self.threads = max(1, msg.threads)
            self.batch = min(cp.MAX_BATCH, max(1, msg.batch))  # TensorRT's engines are built up to it
            if msg.open_limit_s is not None and math.isfinite(msg.open_limit_s):
                self.open_limit_s = max(0.0, msg.open_limit_s)
            self.duty = min(1.0, max(0.05, msg.duty))
            self.power_w = msg.power_w
            self.reason = msg.reason[:200]
            self._follow(msg.clock_s)
            self.radiation = msg.radiation
            self._radiation_at = self.clock_s()
            self.double_run_fraction = min(1.0, max(0.0, msg.double_run_fraction))
            self.double_run_all_in_saa = msg.double_run_all_in_saa
            wanted = (msg.scrub_weights, msg.abft_checks, msg.range_checks)
            if wanted != (self.scrub_weights, self.abft_checks, self.range_checks):
                self.scrub_weights, self.abft_checks, self.range_checks = wanted
                self._sessions.clear()  # opened again, with or without owned weights and checks, at the next slice
        elif isinstance(msg, cp.StartJob):
            self._start_job(msg)
        elif isinstance(msg, cp.CancelJob):
            job = self.jobs.get(msg.job_id)
            if job is None:
                self._reply(msg.req_id, False, f"no job {msg.job_id} on this board", FailureCode.BAD_ARGUMENTS)
            elif job.state not in ACTIVE:
                self._reply(msg.req_id, False, f"job {msg.job_id} has already ended ({job.state.value})",
                            FailureCode.NOT_ALLOWED_IN_MODE)
            else:
                # Written down before anything is undone (found in audit: answered OK with the list unwritten, a
                # restarted worker ran the job again). Not written, the job goes on as the list on disk says and
                # the command fails: it can be sent again, and what stops compute at once is the admission.
                before = job.state, job.detail
                job.state, job.detail = JobState.CANCELLED, "cancelled by command"
                why = self._jobs_unsaved()
                if why:
                    job.state, job.detail = before
                    self._reply(msg.req_id, False, f"job {msg.job_id} not cancelled, it goes on: the job list "
                                f"(jobs.json) could not be written; cancel it again once the disk takes writes "
                                f"({why})", FailureCode.EXECUTION_ERROR)
                    return
                self._finish(job, JobState.CANCELLED, "cancelled by command")
                self._reply(msg.req_id, True, state=JobState.CANCELLED.value)
        elif isinstance(msg, cp.InstallModel):
            self._install_model(msg)
        elif isinstance(msg, cp.RollbackModel):
            self._rollback_model(msg)
        elif isinstance(msg, cp.Stop):
            self._stop = True
        else:
            raise ProtocolError(f"compute protocol: the worker does not take {type(msg).__name__}")

    def clock_s(self) -> float:
        """The worker's clock for what follows the agent's time (the scrub schedule and ages, the
        countdown to the SAA entry, a training job's clock): this process's monotonic clock, moved on
        wherever the agent's has run ahead of it (:meth:`_follow`). On a board the two run together; under
        the harness the agent's is simulated, and the worker keeps its pace. Never goes back. The work
        itself (slices, the duty cycle's rests, how often events are said) stays on the wall clock: the
        CPU is real."""
        return time.monotonic() + self._ahead_s

    def _follow(self, agent_s: float | None) -> None:
        """Take the agent's clock from an Admit: how far it has gained on this process's clock since the
        first Admit, less :data:`CLOCK_SLACK_S`, is how far :meth:`clock_s` runs ahead, if that is further
        than it does. A high-water mark, not a sum of gains: an Admit that waited in the queue (the worker
        busy for seconds with one file) reads as the agent's clock losing, never gaining (found in review:
        summed, each queued Admit after a stall counted as a second gained, and the scrub age grew by the
        stall twice over)."""
        if agent_s is None or not math.isfinite(agent_s):
            return
        offset = agent_s - time.monotonic()
        if self._agent_base is None:
            self._agent_base = offset
            return
        gain = offset - self._agent_base - CLOCK_SLACK_S - self._ahead_s
        if abs(gain) > MAX_CLOCK_GAIN_S:  # not time gone by: counted from here, the worker's clock where it is
            self._agent_base = offset - CLOCK_SLACK_S - self._ahead_s  # (found in review: 1e300 stopped the scrub)
        elif gain > 0.0:
            self._ahead_s += gain

    def _start_job(self, msg: cp.StartJob) -> None:
        spec = msg.job
        active = sum(j.state in ACTIVE for j in self.jobs.values())
        known = self.jobs.get(spec.job_id)
        if known is not None and known.spec == spec:
            # The agent's start sent again: the worker it went to queued it and died before its answer reached
            # the agent. It is the same command, queued once: answered as queued (ids are never reused)
            self._reply(msg.req_id, True, queued=active)
            return
        if active >= MAX_ACTIVE_JOBS:
            self._reply(msg.req_id, False, f"the job queue is full ({active} jobs not finished, at most "
                        f"{MAX_ACTIVE_JOBS}); cancel one or wait", FailureCode.BUSY)
            return
        problem = self._check_job(spec)
        if problem:
            self._reply(msg.req_id, False, problem, FailureCode.BAD_ARGUMENTS)
            return
        job = Job(spec)
        before = dict(self.jobs)
        self.jobs[job.job_id] = job
        self._prune()
        why = self._jobs_unsaved()
        if why:  # a job a restarted worker would not know is not queued (found in audit: answered OK, then lost)
            self.jobs = before  # the list as on disk, the finished jobs the prune let go included
            self._reply(msg.req_id, False, f"job {job.job_id} not queued: the job list (jobs.json) could not be "
                        f"written; start it again once the disk takes writes ({why})", FailureCode.EXECUTION_ERROR)
            return
        self.event("JOB_QUEUED", job_id=job.job_id, kind=job.kind.value, name=job.name)
        self._reply(msg.req_id, True, queued=active + 1)

    def _check_job(self, spec: cp.JobSpec) -> str:
        """Why this job cannot run at all (no such model, input set or data set), or ""."""
        if spec.job_id in self.jobs:
            return f"job {spec.job_id} exists already"
        if spec.kind is JobKind.INFERENCE and not self._has_model(spec.model):
            try:
                known = sorted({e.name for e in self.store.list()})
            except ModelIntegrityError as exc:
                return f"no model {spec.model!r}: {exc}"
            return f"no model {spec.model!r} in the store (installed: {', '.join(known) or 'none'})"
        if spec.continuous:
            return ""  # tiles arrive in incoming/ as the camera writes them
        try:
            path = self._set_path(spec.name, "input_set" if spec.kind is JobKind.INFERENCE else "dataset")
        except NameRefused as exc:
            return str(exc)
        if path is None:
            return (f"no {'input' if spec.kind is JobKind.INFERENCE else 'data'} set {spec.name!r} "
                    f"(looked in data/ and the shipped sets: {', '.join(self._known_sets()) or 'none'})")
        if spec.kind is JobKind.TRAINING:  # its shapes and labels checked now (found in audit: sets it could not
            try:                           # train on were accepted, then the job failed); its values by the job
                samples, labels = _training_set_samples(path, spec.name)  # (read whole: not in the reply's time)
            except (ValueError, OSError) as exc:
                return str(exc)
            # The classes now too (found in audit: classes=1, or labels making 1 or 5001, were queued, then failed)
            problem = _classes_problem(spec.name, spec.classes, labels)
            if problem:
                return problem
            if spec.batch_size > samples:
                return (f"batch_size {spec.batch_size} is larger than data set {spec.name!r}, {samples} samples: "
                        f"give TRAIN_START batch_size={samples} or less")
        return ""

    def _has_model(self, name: str) -> bool:
        """In either copy; a copy whose manifest is corrupt holds none (the other may)."""
        for copy in Copy:
            try:
                if any(e.name == name for e in self.store.list(copy)):
                    return True
            except ModelIntegrityError:
                continue
        return False

    # --- persistence -----------------------------------------------------------------------

    def _jobs_path(self) -> Path:
        return self.root / "jobs.json"

    def _save_jobs(self) -> bool:
        """The job list to disk; True if written. A write that fails (a full or failing disk) is said and
        counted, not raised: the file keeps the last list written, whole, and the worker goes on with the
        list in memory (found in review: raised out of the loop, it ended the worker)."""
        return not self._jobs_unsaved()

    def _jobs_unsaved(self) -> str:
        """:meth:`_save_jobs`, giving why the list was not written ("" when it was), for a command's reply."""
        try:
            write_checked_json(self._jobs_path(), [j.to_json() for j in self.jobs.values()])
        except OSError as exc:
            self._write_failed("the job list", exc)
            return f"{type(exc).__name__}: {exc}"
        return ""

    def _write_failed(self, what: str, exc: OSError | str) -> None:
        """A write of the worker's own state failed: counted, said at most every CHECK_EVENT_MIN_S."""
        self.compute_writes_failed += 1
        now = time.monotonic()
        if now - self._write_event_at >= CHECK_EVENT_MIN_S:
            self._write_event_at = now
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else exc
            self.event("COMPUTE_WRITE_FAILED", what=what, reason=reason[:200])

    def _state_corrupt(self, what: str, reason: str, outcome: str) -> None:
        """State read back failed its check: counted, and said at most every CHECK_EVENT_MIN_S for each
        ``what`` (found in audit: a corrupt job list, reference set or kept protected model went by
        unsaid; in review, one limit for all hid the second of two within 10 s for good)."""
        self.compute_state_corrupt += 1
        now = time.monotonic()
        said = self._corrupt_event_at
        for old in [w for w, at in said.items() if now - at >= CHECK_EVENT_MIN_S]:
            del said[old]  # kept only while they hold back an event: bounded by what 10 s can bring
        if what not in said:
            said[what] = now
            self.event("COMPUTE_STATE_CORRUPT", what=what[:100], reason=reason[:200], outcome=outcome[:200])

    def _prune(self) -> None:
        """Keep the newest :data:`KEEP_FINISHED_JOBS` finished jobs; forget older ones."""
        finished = sorted((j.job_id for j in self.jobs.values() if j.state not in ACTIVE), reverse=True)
        for job_id in finished[KEEP_FINISHED_JOBS:]:
            del self.jobs[job_id]

    def _load_jobs(self) -> None:
        """The job list the last worker left; a corrupt one is moved aside and said (found in audit: it was
        written over, unsaid, and every checkpoint deleted with it): the checkpoints stay until the next
        start, beside it, for whoever looks into it."""
        lost = False
        try:
            body = read_checked_json(self._jobs_path()) if self._jobs_path().exists() else []
        except CorruptFile as exc:
            moved = quarantine(self._jobs_path())
            aside = moved.name if moved else "nothing (it could not be moved)"
            self._state_corrupt("the job list", str(exc), f"moved aside as {aside}; no job is resumed, their "
                                                          "checkpoints kept until the next start")
            body, lost = [], True
        if not isinstance(body, list):
            moved = quarantine(self._jobs_path())
            self._state_corrupt("the job list", f"a {type(body).__name__}, not a list",
                                f"moved aside as {moved.name if moved else 'nothing'}; no job is resumed, their "
                                "checkpoints kept until the next start")
            body, lost = [], True
        dropped = []
        for item in body:
            try:
                job = Job.from_json(item)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                # an entry this version cannot read: the rest of the list still loads
                dropped.append((item.get("job_id") if isinstance(item, dict) else None, f"{type(exc).__name__}: {exc}"))
                continue
            if job.state is JobState.RUNNING:
                job.state = JobState.PAUSED  # it was interrupted: resume from its checkpoint when admitted
                job.detail = "worker restarted"
            self.jobs[job.job_id] = job
        self._prune()
        if dropped:  # written again with the entries read, the list as read kept aside
            aside = self._jobs_path().with_name(self._jobs_path().name + ".corrupt")
            try:
                raw = self._jobs_path().read_bytes()
            except OSError:
                raw = None
            # The list is written whole first: were the list as read moved aside and the write then failed,
            # the next start would find no list, and take every checkpoint for a lost job's (found in review).
            outcome = "dropped; the list could not be written again and stays as read"
            if self._save_jobs():
                outcome = "dropped; the list as read could not be kept aside"
                if raw is not None:
                    try:
                        write_atomic(aside, raw)
                        outcome = f"dropped; the list as read kept as {aside.name}"
                    except OSError:
                        pass
            for job_id, reason in dropped:
                self._state_corrupt(f"job {job_id}'s entry in the job list", reason,
                                    f"{outcome}; its checkpoint kept until the next start")
            lost = True
        if lost:  # a job nothing lists now may have been lost with the list: its checkpoint is kept, once
            self._remove_checkpoints(lambda job_id: job_id in self.jobs and self.jobs[job_id].state not in ACTIVE)
        else:
            self._remove_checkpoints(lambda job_id: job_id not in self.jobs or self.jobs[job_id].state not in ACTIVE)

    def _checkpoint_path(self, job_id: int) -> Path:
        return self._dir("checkpoints") / cp.checkpoint_file(job_id)

    def _files_in_use(self) -> dict[str, str]:
        """The files a job still to run needs (:func:`flight.compute.protocol.files_needed`), by their file-area name,
        for Status every second (found in audit: FILE_DELETE took a running job's checkpoint). The agent's
        FILE_DELETE refuses them until the job has ended (a finished job's checkpoint the worker deletes itself)."""
        used: dict[str, str] = {}
        for job in self.jobs.values():
            if job.state in ACTIVE:
                for name, whose in cp.files_needed(job.spec, job.state.value.lower()).items():
                    used.setdefault(name, whose)
        return used

    def _remove_checkpoints(self, ended: Any) -> None:
        """Delete the checkpoints (and those moved aside) of the jobs ``ended(job_id)`` says are over:
        a finished job's, or at start one no job in the list owns (the list was lost, or pruned).
        Bounds checkpoints/ by the jobs still to run."""
        try:
            files = list(self._dir("checkpoints").iterdir())
        except (NameRefused, OSError):
            return
        for path in files:
            match = _CHECKPOINT_NAME.fullmatch(path.name)
            if match and ended(int(match.group(1))) and not path.is_symlink() and path.is_file():
                try:
                    path.unlink()
                except OSError:
                    pass  # read-only: tried again at the next start

    # --- work ------------------------------------------------------------------------------

    def _session(self, model: str) -> _Session:
        key = (model, self.threads, self.scrub_weights, self.abft_checks, self.range_checks, self.providers)
        if key not in self._sessions:
            state = self._state(model)
            opened = None
            # Its automatic rollback refused here (said): a failure to load from here on says so, and the job
            # failing does not try the rollback again (found in audit: MODEL_REFUSED said twice for one refusal).
            refused = False
            if state is not None and state.probation and state.fallback is not None:
                # A version on probation that will not load is rolled back, not replaced by the golden copy.
                try:
                    loaded = self.store.load(model)
                    opened = self._open(model, loaded.bytes, loaded.version, loaded.sha256, False)
                except Exception as exc:  # noqa: BLE001 - integrity, onnxruntime: either way it failed to load
                    if self._auto_rollback(model, f"version {state.active.version} failed to load: {exc}"):
                        return self._session(model)
                    if not isinstance(exc, ModelIntegrityError):
                        raise ModelLoadFailed(f"{type(exc).__name__}: {exc}", rollback_refused=True) from exc
                    refused = True
                    # Its fallback no good either: the golden copy, as for any version (found in audit: every job
                    # failed, the golden copy intact and never used)
            if opened is None:
                loaded = self.store.load_or_golden(model)
                if loaded.from_golden:
                    self.event("MODEL_GOLDEN_USED", name=model, reason=loaded.fallback_reason[:200])
                try:
                    opened = self._open(model, loaded.bytes, loaded.version, loaded.sha256, loaded.from_golden)
                except Exception as exc:  # noqa: BLE001 - onnxruntime raises several kinds
                    if refused:
                        raise ModelLoadFailed(f"{type(exc).__name__}: {exc}", rollback_refused=True) from exc
                    raise
            self._sessions = {k: v for k, v in self._sessions.items() if k[0] != model}  # threads changed
            self._sessions[key] = opened
            self._current_model = model
        return self._sessions[key]

    def _open(self, name: str, data: bytes, version: str, sha256: str, from_golden: bool) -> _Session:
        """A session on ``data`` (the store's verified bytes, SHA-256 ``sha256``). With ``abft_checks``
        it runs the model as the checksum pass rewrites it (:meth:`_checked_bytes`); a protected model
        onnxruntime will not open runs as uplinked, said once. The session keeps the store's
        ``sha256``: the receipt names the model the ground uplinked, whatever the pass added to it.
        The pass checks for the arithmetic of the providers the session may run on (tf32 where a GPU
        may and this process allows TF32, :func:`~flight.compute.providers.abft_precision`: the agent
        starts the worker with it forbidden unless [compute] gpu_tf32). With ``range_checks`` the range checks
        learned from the version's reference inputs are added to it (:meth:`_ranged_bytes`)."""
        precision = abft_precision(self.providers)
        checked = self._checked_bytes(name, data, sha256, precision, version) \
            if self.abft_checks or self.range_checks else None
        if checked is not None:
            try:
                return self._open_bytes(name, checked, version, sha256, from_golden,
                                        ranged=self._checked_models[name].ranged)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's kinds: the pass's graph is at fault, not the model
                self._checks_refused(name, sha256, f"onnxruntime will not open it protected ({type(exc).__name__}: "
                                                   f"{exc})", precision, version)
        return self._open_bytes(name, data, version, sha256, from_golden)

    def _checked_bytes(self, name: str, data: bytes, sha256: str, precision: str, version: str = "") -> bytes | None:
        """``data`` (the store's verified bytes of ``name``, SHA-256 ``sha256``, version ``version``) with
        the checksum pass's checks added for the arithmetic ``precision`` ("fp32", "tf32") while
        ``abft_checks`` is on, and the range checks while ``range_checks`` is; or None to run ``data``
        as it is: it has its own check outputs already, or neither pass could add any (the checksum
        pass refusing it is said once per version: MODEL_UNCHECKED, naming the node).

        Made once per version, precision and parameters and kept, one per model name (a session opens
        again whenever the threads or the parameters change). Both passes are deterministic, so the kept
        bytes have a SHA-256 of their own, checked at each reuse like the store's: a flip in them while
        kept would otherwise become the scrubber's golden copy; on a mismatch they are made again."""
        kept = self._checked_models.get(name)
        nchwc = self._checks_nchwc() if self.abft_checks else 0
        if kept is not None and kept.source_sha256 == sha256 and kept.precision == precision and (
                kept.abft, kept.ranges, kept.version) == (self.abft_checks, self.range_checks, version) and (
                kept.nchwc is None or kept.nchwc == nchwc):
            if kept.data is None:
                return None
            digest = hashlib.sha256(kept.data).hexdigest()
            if digest == kept.sha256:
                return kept.data
            self._state_corrupt(f"the protected model of {name} version {version or '?'} kept in memory",
                                f"SHA-256 {digest[:16]}..., made as {kept.sha256[:16]}...",
                                "made again from the store's checked bytes")
        protected = self._abft_bytes(name, data, sha256, precision, nchwc) if self.abft_checks else None
        layout = nchwc if protected is not None and describe(onnx.load_from_string(protected)).get("layout_sums") \
            else None
        ranged = self._ranged_bytes(name, version, data, protected, sha256) if self.range_checks else None
        # (``protected`` None: the checksum pass did not run on it, off or refused, so the ranges cover the Conv,
        # Gemm and MatMul outputs too; found in review: they were left to a pass that never ran)
        protected = ranged or protected
        digest = hashlib.sha256(protected).hexdigest() if protected is not None else ""
        self._checked_models[name] = _CheckedModel(sha256, protected, digest, precision, self.abft_checks,
                                                   self.range_checks, version, layout, ranged is not None)
        return protected

    def _checks_nchwc(self) -> int:
        """The block of onnxruntime's NCHWc layout the checksum pass reads for, 0 for none: CPU sessions at
        level ``all``, which the worker opens without ``scrub_weights`` (owned weights run at ``extended``;
        where onnxruntime refuses them, the session runs at ``all`` on sums made for ``extended``: slower,
        never wrong)."""
        return checksum_layout_nchwc(OWNED_WEIGHTS_OPTIMIZATION if self.scrub_weights else "all")

    def _abft_bytes(self, name: str, data: bytes, sha256: str, precision: str, nchwc: int = 0) -> bytes | None:
        """``data`` with the checksum pass's checks, or None: it has ours already, or the pass refused it (said)."""
        try:
            made_by, _, why = _check_output_of(data, precision)
            if made_by == "foreign":
                self._checks_refused(name, sha256, f"its output {CHECK_OUTPUT} is not read as a check: {why}", precision)
                return None
            return None if made_by == "ours" else protect_bytes(data, precision=precision, nchwc=nchwc,
                                                                 keepalive=self._keepalive)
        except Exception as exc:  # noqa: BLE001 - ValueError naming the node; anything else: the pass's fault
            self._checks_refused(name, sha256, f"the checksum pass refused it ({_refusal(exc)})", precision)
            return None

    def _ranged_bytes(self, name: str, version: str, data: bytes, checked: bytes | None,
                      sha256: str = "") -> bytes | None:
        """``checked`` (else ``data``) with range checks learned from the reference inputs the store keeps
        with ``version`` of ``name``, or None to leave them out: the model has range checks of its own, or
        none can be learned (no reference inputs, or the pass refused it: :meth:`_ranges_refused`)."""
        learned = self._learned_ranges(name, version, data, sha256, checked is not None)
        if learned is None:
            return None
        try:
            return range_pass.protect_bytes(checked if checked is not None else data, learned,
                                            margin=range_pass.DEFAULT_MARGIN)
        except Exception as exc:  # noqa: BLE001 - ValueError naming the tensor; anything else: the pass's fault
            self._ranges_refused(name, f"the range checks refused it ({_refusal(exc)})")
            return None

    def _learned_ranges(self, name: str, version: str, data: bytes, sha256: str,
                        checked: bool = True) -> dict[str, tuple[float, float]] | None:
        """The ranges learned for this version of ``name`` (SHA-256 ``sha256``), or None (said once: the
        model has range checks of its own, or none can be learned). Learned once per version: a model made
        again for another layout (abft.protect's ``nchwc``) neither learns again nor says it again."""
        kept = self._ranges_learned.get(name)
        if kept is not None and kept[:3] == (sha256, version, checked):  # ``checked``: the checksum pass runs on it
            return kept[3]
        self.range_notes.pop(name, None)
        learned = None
        try:
            if _has_range_output(data):  # bounds are data, not a check: an uplinked model's are never read
                self._ranges_refused(name, f"it has an output {RANGE_OUTPUT} of its own: its bounds were not learned "
                                           "here from this version's reference inputs")
            else:
                inputs = self._reference_inputs(name, version)
                if inputs is None and self._corrupt_said.get(name, ("",))[0] == version:
                    self._ranges_refused(name, f"the reference set kept with version {version} is corrupt "
                                               "(COMPUTE_STATE_CORRUPT): no ranges to learn")
                elif inputs is None:
                    self._ranges_refused(name, f"no reference inputs kept with version {version or '?'}: no ranges "
                                               "to learn")
                else:
                    learned = range_pass.learn(data, inputs, keepalive=self._keepalive, checked=checked)
        except Exception as exc:  # noqa: BLE001 - ValueError naming the tensor; anything else: the pass's fault
            self._ranges_refused(name, f"the range checks refused it ({_refusal(exc)})")
        self._ranges_learned[name] = (sha256, version, checked, learned)
        return learned

    def _ranges_refused(self, name: str, reason: str) -> None:
        """``name`` runs without range checks though ``range_checks`` is on: noted, and said."""
        self.range_notes[name] = reason[:200]
        self.event("MODEL_RANGES_UNCHECKED", name=name, reason=reason[:200])

    def _reference_inputs(self, name: str, version: str) -> np.ndarray | None:
        """The reference inputs the store keeps with ``version`` of ``name`` (checked), None if none. One
        kept but corrupt is said, once per version and file (found in audit: taken for none kept, it took
        the range checks and the owned weights' probe away, the events blaming something else); it is
        not repaired here (the store keeps no second copy, and takes no version it has again: the
        model installed under a new version brings its own)."""
        if not version:
            return None
        try:
            kept = self.store.load_reference(name, version)
            inputs = ReferenceSet.from_bytes(kept).x if kept is not None else None
        except ModelNotFound:
            return None
        except (ModelIntegrityError, PackageError) as exc:
            said = (version, str(exc)[:200])
            if self._corrupt_said.get(name) != said:
                self._corrupt_said[name] = said
                self._state_corrupt(f"{name} version {version}'s reference set", str(exc),
                                    "its range checks and the probe of its owned weights go without it "
                                    "(MODEL_INSTALL the model under a new version to have one again)")
            return None
        return None if inputs is None or not len(inputs) else np.ascontiguousarray(inputs, np.float32)

    def _checks_refused(self, name: str, sha256: str, reason: str, precision: str, version: str = "") -> None:
        """Version ``sha256`` of ``name`` runs without the checksum pass's checks: remember it, say why."""
        self._checked_models[name] = _CheckedModel(sha256, None, "", precision, self.abft_checks, self.range_checks,
                                                   version)
        said = self._unchecked_said.get(name, set())
        if not any(sha == sha256 for sha, _ in said):
            said = set()  # another version: what was said of the last one is over
        if (sha256, precision) not in said:
            self._unchecked_said[name] = said | {(sha256, precision)}
            self.event("MODEL_UNCHECKED", name=name, reason=reason[:200])

    def _open_bytes(self, name: str, data: bytes, version: str, sha256: str, from_golden: bool,
                    ranged: bool = False) -> _Session:
        """A session on ``data``, as it is (``ranged``: its range checks are this worker's, to read). With
        ``scrub_weights`` its initializers are buffers a :class:`WeightScrubber` owns, golden copies made
        from these same bytes (the checksum pass's weights included, where it protected them); the
        weights count as scrubbed only on the CPU provider, the one that computes from them."""
        scrubber = owned = None
        opened = None
        if self.scrub_weights:
            data = constants_as_initializers(data)  # weights in Constant nodes: owned and scrubbed too
            try:
                scrubber = WeightScrubber.from_onnx(data, self.clock_s(), period_s=self._scrub_period_s())
                options, owned = owned_weights_options(scrubber.owned, self.threads)
                opened = self._open_session(data, name, options)
            except (SessionError, RuntimeError, TypeError) as exc:
                # onnxruntime refused the owned buffers (an OrtValue cannot be made over bfloat16 or float8
                # numpy arrays, found in review): run it as it builds it, and say so.
                refused = f"{name}: no session on owned weights, its weights are not scrubbed ({exc})"
                scrubber = owned = None
        if opened is None:
            opened = self._open_session(data, name)
            if self.scrub_weights:
                self.event("PROVIDER_FALLBACK", provider=opened.provider, reason=refused[:200])
        self._fallbacks_said(opened)
        self.provider = opened.provider
        session = opened.session
        names = [o.name for o in session.get_outputs()]
        made_by, precision, _ = _check_output_of(data, abft_precision(self.providers)) if CHECK_OUTPUT in names \
            else ("", "", "")
        check = CHECK_OUTPUT if made_by == "ours" and self.abft_checks else None  # the parameter off: not read
        ranged = RANGE_OUTPUT if ranged and RANGE_OUTPUT in names else None
        # The model's own result, never an output a pass added: "probabilities", else the first.
        own = [n for n in names if n not in (CHECK_OUTPUT, RANGE_OUTPUT)]
        outputs = ("probabilities" if "probabilities" in own else own[0],) + tuple(c for c in (check, ranged) if c)
        # On a GPU provider the session computes from device copies: keep the buffers alive (it was
        # built on them) but do not scrub what nothing reads, nor claim it.
        scrubbed = scrubber is not None and opened.provider == CPU
        optimization = OWNED_WEIGHTS_OPTIMIZATION
        hidden = unowned_weights(data) if scrubbed else []
        if hidden:
            scrubbed = False
            self.event("PROVIDER_FALLBACK", provider=opened.provider,
                       reason=f"{name}: weights inside subgraphs or sparse ({', '.join(hidden[:3])}"
                              f"{' ...' if len(hidden) > 3 else ''}) are onnxruntime's own copies: its weights are "
                              "not scrubbed"[:200])
        if scrubbed:
            reference = self._reference_inputs(name, version)
            probe = None if reference is None else {session.get_inputs()[0].name: reference[:1]}
            reopened = self._computing_from_owned(name, data, opened, owned, scrubber, probe)
            if reopened is None:
                scrubbed = False
            elif reopened[0] is not opened:
                opened, owned, optimization = reopened[0], reopened[1], "disable"
            session = opened.session
        if scrubbed and check is not None:  # what the checks do not cover is checked after every slice
            # The range checks' bounds too: a flip that widens one raises no flag (found in review).
            scrubber.watch(set(scrubber.names) - covered_initializers(onnx.load_from_string(data), (CHECKS_PREFIX,),
                                                                      (CHECKS_PREFIX, range_pass.PREFIX)))
        elif scrubbed:  # no checksum flags: a double run repeats a weight's fault, and ranges miss one
            # that stays in range (found in review: a weight 2^20 times too large gave 27 wrong classes in 64,
            # every tile "passed" by its double run); so every weight is checked before a result they
            # pass is released (:meth:`_claims_checked`), the range checks' bounds with them.
            scrubber.watch(set(scrubber.names))
        # The OrtValues and the arrays under them stay alive with the session; the golden copies only
        # where they are scrubbed.
        kept = (owned, scrubber if scrubbed else (scrubber.owned if scrubber is not None else None))
        return _Session(session, session.get_inputs()[0].name, version, sha256, from_golden, opened.provider,
                        scrubber if scrubbed else None, kept, check,
                        protection_of(scrubbed, check is not None, ranged is not None), name, outputs,
                        data if self._injector is not None else b"", precision if check else "", ranged,
                        optimization)

    def _computing_from_owned(self, name: str, data: bytes, opened: Any, owned: Any, scrubber: WeightScrubber,
                              probe: dict[str, np.ndarray] | None) -> tuple[Any, Any] | None:
        """The owned-weight session ``opened``, or one opened anew with no graph optimisation, whichever
        computes from every buffer the scrubber owns, with its OrtValues; None where neither does: its
        weights are not claimed scrubbed. Said where it is not ``opened`` (PROVIDER_FALLBACK).
        ``probe``: the model's reference input, where the store keeps one (providers.unread_buffers)."""
        main, inner = _node_inputs(data)  # an initializer no node reads is nothing the session computes from
        # The copies' constants (abft.protect's recompute_inputs) feed only the checks' side: onnxruntime
        # may fold a scalar one into a check's product (found in review: x/255 before a Conv), and then a
        # fault in its own copy reaches only the check; the model's weights are what the probe is for.
        # The compare of the outputs with their copies (compare_outputs) weighs its slack and its "failed"
        # only where the two differ, which on clean data they do not: no move of them need show (found in
        # review: a model with an integer output lost its "scrubbed"). They are watched with the checks'
        # other small constants.
        copies = (f"{CHECKS_PREFIX}copy/", f"{CHECKS_PREFIX}inf_", f"{CHECKS_PREFIX}out/")
        owned_used = {k: v for k, v in scrubber.owned.items() if (k in main or k in inner) and not k.startswith(copies)}
        unread = unread_buffers(opened.session, owned_used, probe, self._keepalive)
        if unread == []:
            return opened, owned
        # None: no probe could run, so nothing shows what the optimised session reads. With no graph
        # optimisation onnxruntime folds nothing, so there the claim rests on that (and on a probe where
        # one runs).
        folded = f"{name}: onnxruntime folds {', '.join(unread[:3])}{' ...' if len(unread) > 3 else ''} into " \
                 "constants of its own" if unread else f"{name}: no probe input runs it, so what it folds is unknown"
        options, owned_plain = owned_weights_options(scrubber.owned, self.threads, optimization="disable")
        try:
            plain = self._open_session(data, name, options)
        except SessionError:
            plain = None
        unread_plain = unread_buffers(plain.session, owned_used, probe, self._keepalive) \
            if plain is not None and plain.provider == CPU else ["?"]
        if unread_plain in ([], None):
            self.event("PROVIDER_FALLBACK", provider=plain.provider,
                       reason=f"{folded}: opened with no graph optimisation, so the scrub checks what runs"[:200])
            return plain, owned_plain
        # A weight read only inside a subgraph that changed nothing may be in a branch the probe did not
        # take, or a copy a kernel keeps even with no optimisation (Resize's scales): which, nothing here
        # shows, so it is not claimed (found in review, both ways); said as such, not as folded.
        inside = [n for n in (unread_plain or []) if n in inner]
        if inside and len(inside) == len(unread_plain):
            folded = f"{name}: {', '.join(inside[:3])}{' ...' if len(inside) > 3 else ''}, read only inside " \
                     "subgraphs, changed nothing on the probe (a branch it did not take, or a copy onnxruntime keeps)"
            self.event("PROVIDER_FALLBACK", provider=opened.provider, reason=f"{folded}: its weights are not scrubbed"[:200])
            return None
        self.event("PROVIDER_FALLBACK", provider=opened.provider,
                   reason=f"{folded}, even with no graph optimisation: its weights are not scrubbed"[:200])
        return None

    # --- weights and results under radiation ------------------------------------------------

    def _reference_session(self, data: bytes) -> Any:
        """HIL upset injection: a plain session on ``data``, its weights onnxruntime's own copy."""
        return open_session(data, self.providers, self.threads).session

    def _hooked_session(self, data: bytes, model: _Session) -> Any:
        """HIL upset injection: a session on the hooked graph ``data`` over ``model``'s owned weights."""
        if model.scrubber is None:
            return open_session(data, self.providers, self.threads).session
        options, owned = owned_weights_options(model.scrubber.owned, self.threads, optimization=model.optimization)
        session = open_session(data, self.providers, self.threads, options=options).session
        session._sunlit_owned = owned  # the OrtValues live as long as the session
        return session

    def _scrub_period_s(self) -> float:
        r = self._radiation_now()
        return scrub_period_s(r.flux_class, r.orbit_period_s)

    def _scrubbers(self) -> list[tuple[str, WeightScrubber]]:
        seen: dict[int, tuple[str, WeightScrubber]] = {}
        for s in self._sessions.values():
            if s.scrubber is not None:
                seen.setdefault(id(s.scrubber), (s.name, s.scrubber))
        return list(seen.values())

    def scrub_tick(self, now_s: float | None = None) -> None:
        """From the loop: the scrub owed now on every scrubbed session, at the period the flux asks for."""
        now_s = self.clock_s() if now_s is None else now_s
        if self._injector is not None:  # HIL only: weight upsets land whether or not a job runs
            self._injector.poll()
            self._injector.settle(list(self._sessions.values()))  # a session dropped since ends its upsets
            owned = [s for s in self._sessions.values() if s.scrubber is not None]
            if owned:  # any scrubbed session, as its bytes are hit (found in audit: all went into the first)
                self._injector.strike_weights(*owned)
        period = self._scrub_period_s()
        if self._period_since is None or self._period_since[0] != period:
            self._period_since = (period, now_s)
        settled = now_s - self._period_since[1] > BEHIND_FACTOR * period  # a shorter period is caught up within one
        live = set()
        for name, scrubber in self._scrubbers():
            scrubber.period_s = period
            self._scrub(name, scrubber, lambda sc: sc.step(now_s, self.scrub_step_bytes))
            live.add(scrubber)
            age_s = scrubber.age_s(now_s)
            if age_s <= BEHIND_FACTOR * period:  # ScrubStats.behind, without making the whole record
                self._behind.discard(scrubber)
            elif settled and scrubber not in self._behind:
                self._behind.add(scrubber)
                self.event("SCRUB_BEHIND", name=name, age_s=round(age_s, 1), period_s=period,
                           bytes=scrubber.bytes_total)
        if self._behind:
            self._behind &= live
        if self._injector is not None:
            self._injector.save()

    def _scrub_now(self, model: _Session) -> bool:
        """A full pass over ``model``'s weights now (a result check failed), unless one ran just before.
        False where its weights are not scrubbed (a GPU provider, ``weights_scrub`` off): nothing ran."""
        scrubber = model.scrubber
        if scrubber is None:
            return False
        now = time.monotonic()  # how often: the CPU's time
        if now - self._last_full_scrub.get(scrubber, -math.inf) < RESCRUB_MIN_S:
            return True
        self._last_full_scrub[scrubber] = now
        at = self.clock_s()
        self._scrub(model.name, scrubber, lambda sc: sc.scrub_all(at))
        return True

    def _scrub(self, name: str, scrubber: WeightScrubber, run: Any) -> None:
        passes, chunks = scrubber.passes, scrubber.chunks_checked
        lost: WeightsUnrepairable | None = None
        try:
            repairs: list[Repair] = run(scrubber)
        except WeightsUnrepairable as exc:
            # Nothing in memory settles it: drop the session; the next slice loads the model from the
            # store again (SHA-256 checked, golden copy if need be) and builds a new one. The chunks the
            # call put right before it are counted and said as any (found in audit: they were lost).
            lost, repairs = exc, exc.repairs
            if self._injector is not None:
                self._injector.rebuilt([v for v in self._sessions.values() if v.scrubber is scrubber])
            self._sessions = {k: v for k, v in self._sessions.items() if v.scrubber is not scrubber}
            self._drops += 1
        finally:
            self.scrub_passes += scrubber.passes - passes
            self.scrub_chunks += scrubber.chunks_checked - chunks
            if self._injector is not None:
                self._injector.settle(list(self._sessions.values()))
                self._injector.save()
        self.scrub_repairs += len(repairs) + (lost is not None)
        # A golden copy or a CRC entry alone: results were right; the chunk nothing settles: they may not be.
        wrong = sum(r.bytes_differing > 0 for r in repairs) + (lost is not None)
        if wrong:
            self._repaired(name, wrong)
            if (lost is not None and scrubber.watched) or any(r.bytes_differing > 0 and r.tensor in scrubber.watched
                                                             for r in repairs):
                # results made before this repair may be wrong, and passed: those not yet released are made again
                self._watched_repairs[name] = self._watched_repairs.get(name, 0) + 1
        cap = REPAIR_EVENTS_PER_STEP - (lost is not None)  # the reload is always said on its own
        each = repairs if len(repairs) <= cap else repairs[:cap - 1]
        for r in each:
            self.event("WEIGHTS_REPAIRED", name=name, tensor=r.tensor[:64], chunk=r.chunk, bytes=r.bytes_differing,
                       golden=r.golden_fixed, source=r.source)
        if lost is not None:
            self.event("WEIGHTS_REPAIRED", name=name, tensor=lost.tensor[:64], chunk=lost.chunk, bytes=0, golden=0,
                       source="model store")
        rest = repairs[len(each):]
        if rest:  # the rest in one (found in review: a full scrub's repairs past the cap were said nowhere)
            tensors = sorted({r.tensor for r in rest})
            self.event("WEIGHTS_REPAIRED", name=name, tensor=f"{len(rest)} more chunks: {', '.join(tensors)}"[:64],
                       chunk=-1, bytes=sum(r.bytes_differing for r in rest),
                       golden=sum(r.golden_fixed for r in rest), source="more")

    def _repaired(self, name: str, count: int = 1) -> None:
        """Products being computed on model ``name`` saw ``count`` repairs of the bytes the session computes
        from (or a chunk nothing could repair): results since its previous check may be wrong, and their
        receipts say so."""
        for job_id, checks in self._checks.items():
            job = self.jobs.get(job_id)
            if job is None or job.model == name:
                checks.weights_repaired += count

    def _watched_count(self, name: str, model: _Session | None = None) -> int:
        """Repairs so far of the weights of model ``name`` that no check covers (``WeightScrubber.watch``:
        the input's normalisation...), having checked them now where ``model`` is given. A result made
        before the latest such repair was made with a wrong weight and passed its checks all the same:
        it is made again before it is released (found in review: a flipped ``band_std`` gave 32 wrong
        tiles reported passed). Checked before each release of results a check passed (:meth:`_claims_checked`),
        so a fault that lands after it changes no result released before it as passed."""
        if model is not None and model.scrubber is not None and model.scrubber.watched \
                and not self._session_dropped(model):
            self._scrub(name, model.scrubber, lambda sc: sc.check_watched(self.clock_s()))
        return self._watched_repairs.get(name, 0)

    @staticmethod
    def _claims_checked(model: _Session, checks: ProductChecks, passed_before: int) -> bool:
        """Whether the weights no check covers are checked before the tiles ``checks`` took since it counted
        ``passed_before`` passed tiles are released: always where the model has checksum flags (a few small
        tensors: the input's normalisation...); where it has none, its every weight is watched, and checked
        only where one of those tiles passed a check (a double run, a range check) that rests on them: a
        tile left unchecked claims nothing, and a pass over every weight after each slice is what a model of
        hundreds of megabytes cannot afford."""
        return model.check_output is not None or checks.tiles_checked - checks.tiles_failed > passed_before

    def _product_checks(self, model: _Session) -> ProductChecks:
        return ProductChecks(model.sha256, model.protection, model.provider, model.abft_precision)

    # --- the model lifecycle ---------------------------------------------------------------

    def _state(self, name: str) -> ModelState | None:
        """The store's view of ``name`` (cached until it changes); None if it has no working copy."""
        if name not in self._states:
            try:
                self._states[name] = self.store.state(name)
            except (ModelNotFound, ModelIntegrityError):
                self._states[name] = None
        return self._states[name]

    def _latest_model(self) -> str:
        """The model activated last (at start: the one an operator cares about), else the shipped one."""
        try:
            states = [self.store.state(e.name) for e in self.store.list()]
        except (ModelIntegrityError, ModelNotFound):
            return MODEL_NAME
        latest = max(states, key=lambda st: st.active_provenance.activated_unix_s, default=None)
        return latest.name if latest is not None else MODEL_NAME

    def _forget(self, name: str) -> None:
        """``name`` changed in the store: drop its sessions and its cached state."""
        self._sessions = {k: v for k, v in self._sessions.items() if k[0] != name}
        self._states.pop(name, None)
        self._rebuilt_failing.discard(name)  # another version: a reload may cure it again
        self._current_model = name

    def _provenance(self, name: str, session: _Session) -> dict[str, str]:
        """What a product says of the model it came from."""
        state = self._state(name)
        by = state.provenance_of(session.version).uplinked_by if state is not None else "unknown"
        return {"model": name, "model_version": session.version, "model_sha256": session.sha256,
                "model_uplinked_by": by}

    def _auto_rollback(self, name: str, reason: str) -> bool:
        """Roll ``name`` back to its fallback after its new version failed; False if there is none to go to."""
        try:
            state = self.store.rollback(name, reason, automatic=True, now_unix_s=time.time())
        except (NoFallback, ModelNotFound, ModelIntegrityError) as exc:
            self.event("MODEL_REFUSED", name=name, reason=f"{reason[:100]}; no rollback: {exc}"[:200])
            return False
        self._forget(name)
        self.event("MODEL_ROLLED_BACK", name=name, from_version=state.fallback.version if state.fallback else "",
                   to_version=state.active.version, automatic=True, reason=reason[:200])
        return True

    def _probation_failed(self, job: Job, exc: Exception) -> bool:
        """An inference job failed on a version on probation: roll back and run the job again on the
        restored version (its partial results dropped). False when the job should simply fail."""
        state = self._state(job.model)
        if job.kind is not JobKind.INFERENCE or state is None or not state.probation or state.fallback is None:
            return False
        if not isinstance(exc, (NonFiniteOutput, ModelLoadFailed)):
            return False  # bad input data or a full disk is not the model's fault: the job fails alone
        if isinstance(exc, ModelLoadFailed) and exc.rollback_refused:
            return False  # refused as it failed to load, and said then: one refusal, one MODEL_REFUSED
        if state.active.version in state.ran:  # on probation again by a commanded rollback, it has run before: not
            return False  # swapped automatically (MDL-005); the job fails alone (a review: a MODEL_REFUSED per job,
            # each saying "on its first job")
        ran = [s for key, s in self._sessions.items() if key[0] == job.model]
        if ran and (ran[-1].from_golden or ran[-1].sha256 != state.active.sha256):
            return False  # the version on probation did not run (its rollback refused as it would not load, the
            # golden copy ran): what failed is not its to roll back (found in review: MODEL_REFUSED twice, the
            # second blaming it for the golden copy's NaN)
        why = "gave non-finite outputs" if isinstance(exc, NonFiniteOutput) else f"failed ({type(exc).__name__}: {exc})"
        if not self._auto_rollback(job.model, f"version {state.active.version} {why} on its first job, "
                                              f"{job.job_id}"[:200]):
            return False
        for table in (self._cursor, self._results, self._checks):
            table.pop(job.job_id, None)
        job.progress, job.detail = 0, f"restarted after the rollback of {job.model}"[:120]
        self._save_jobs()
        return True

    def _proven(self, name: str, session: _Session) -> None:
        """A job on ``name`` wrote its product: a version on probation has proven itself."""
        state = self._state(name)
        if state is not None and state.probation and not session.from_golden and session.sha256 == state.active.sha256:
            try:
                self.store.end_probation(name)
            except OSError as exc:  # the job's product is written: it is done, its model proven at a later
                self._write_failed(f"model {name}'s end of probation", exc)  # job (found in audit: each job
                return  # failed on it, with its product written)
            except ModelIntegrityError as exc:  # what it read back failed its check: corrupt state, not a write
                self._state_corrupt(f"model {name}'s state", str(exc), "probation not ended; the job's product stands")
                return
            self._states.pop(name, None)

    def _rollback_model(self, msg: cp.RollbackModel) -> None:
        """MODEL_ROLLBACK: the fallback version becomes active; the active one becomes the fallback."""
        try:
            state = self.store.rollback(msg.name, "commanded", automatic=False, now_unix_s=time.time())
        except ModelNotFound as exc:
            self._reply(msg.req_id, False, str(exc), FailureCode.BAD_ARGUMENTS)
            return
        except NoFallback as exc:
            self._reply(msg.req_id, False, str(exc), FailureCode.NOT_ALLOWED_IN_MODE)
            return
        except ModelIntegrityError as exc:
            self._reply(msg.req_id, False, f"the fallback version failed its check, nothing changed: {exc}",
                        FailureCode.EXECUTION_ERROR)
            return
        self._forget(msg.name)
        previous = state.fallback.version if state.fallback else ""
        self.event("MODEL_ROLLED_BACK", name=msg.name, from_version=previous, to_version=state.active.version,
                   automatic=False, reason="commanded")
        self._reply(msg.req_id, True, version=state.active.version, sha256=state.active.sha256,
                    from_version=previous, uplinked_by=state.active_provenance.uplinked_by)

    def _input_set(self, name: str) -> np.ndarray:
        return self._load_set(name)[0]

    def _set_path(self, name: str, field: str = "input_set") -> Path | None:
        """Where the set called ``name`` is: the board's data/, then the shipped sets. A name that
        is not plain, or a data/ file a symbolic link leads out of the compute directory, is refused
        (:class:`NameRefused`, naming ``field``): never read."""
        board = resolve(self.root, f"data/{name}.npz", None, field)
        for path in (board, MODELS_DIR / f"{name}.npz"):
            if path.is_file():
                return path
        return None

    def _known_sets(self) -> list[str]:
        return sorted({p.stem for d in (self.root / "data", MODELS_DIR) if d.is_dir() for p in d.glob("*.npz")})

    def _load_set(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(inputs, labels or None) of a named set: a tile set as the use case ships it (uint16
        reflectance x 10000, read through its own reader), or any .npz with ``x`` (and ``y``)."""
        path = self._set_path(name)
        if path is None:
            raise FileNotFoundError(f"no data set {name!r} in data/ or the shipped sets")
        with _open_set(path, name) as data:
            files = set(data.files)
            if "x" in files:
                return _checked_set(name, _set_array(data, "x", name),
                                    _set_array(data, "y", name) if "y" in files else None)
            if "tiles_dn" in files:  # its tiles and labels alone (found in audit: the whole shipped layout was
                dn = _set_array(data, "tiles_dn", name)  # required, and a set without its masks failed with a KeyError)
                if dn.dtype.kind not in "biu":
                    raise ValueError(f"data set {name!r}: tiles_dn must be integer DN (reflectance x "
                                     f"{DN_PER_REFLECTANCE:g}), it is {dn.dtype}")
                return _checked_set(name, dn_to_tiles(dn), _set_array(data, "labels", name) if "labels" in files
                                    else None)
        raise ValueError(f"data set {name!r} holds neither x (and y) nor tiles_dn (and labels)")

    def _install_model(self, msg: cp.InstallModel) -> None:
        """MODEL_INSTALL: verify (signature, hashes) → reference check → activate, keeping the version
        it replaces as the fallback. Replies only when the new version is active, or with the reason
        it is not; the uplinked files stay in staging/ either way."""
        name = msg.name
        began = self.clock_s()  # the install's steps kept alive within one limit (_kept_alive)
        checks = UplinkChecks(self.store, self.root / "staging", self.trusted_keys, self.allow_unsigned)
        try:
            candidate = self._kept_alive(lambda: checks.candidate(name, msg.version, msg.sha256), began)
        except Refusal as refusal:
            self.event("MODEL_REFUSED", name=name, reason=refusal.reason[:200])
            self._reply(msg.req_id, False, refusal.reason, refusal.code)
            return
        max_error: float | None = None
        if candidate.reference is not None:
            def opener(data: bytes) -> OpenedSession:
                opened = self._fallbacks_said(self._open_session(data, name, for_job=False))
                return opened._replace(session=_KeptAlive(opened.session, self._keepalive))

            check = checks.reference_check(candidate.data, candidate.reference, candidate.tolerance, self.threads,
                                           self.batch, opener)
            if not check.ok:
                self.event("MODEL_REFERENCE_FAILED", name=name, version=msg.version, max_error=check.max_error,
                           tolerance=check.tolerance, reason=check.describe()[:200])
                self._reply(msg.req_id, False, f"reference check failed, not activated: {check.describe()}",
                            FailureCode.EXECUTION_ERROR)
                return
            max_error = check.max_error
        # Deflated again, seconds for a large set: pings answered between its parts, as in the reference runs
        stored_reference = candidate.reference.to_bytes(self._keepalive) if candidate.reference is not None else None
        try:
            state = self._kept_alive(lambda: self.store.activate(name, msg.version, candidate.data,
                                                                 candidate.provenance, stored_reference,
                                                                 golden=msg.golden), began)
        except Exception as exc:  # noqa: BLE001 - a bad model is refused, the worker goes on
            reason = f"{type(exc).__name__}: {exc}"
            self.event("MODEL_REFUSED", name=name, reason=reason[:200])
            self._reply(msg.req_id, False, reason, FailureCode.EXECUTION_ERROR)
            return
        self._forget(name)
        fallback = state.fallback.version if state.fallback else ""
        self.event("MODEL_INSTALLED", name=name, version=msg.version, sha256=state.active.sha256[:16],
                   uplinked_by=candidate.provenance.uplinked_by, fallback=fallback or "none")
        self._reply(msg.req_id, True, sha256=state.active.sha256, version=msg.version, golden=msg.golden,
                    uplinked_by=candidate.provenance.uplinked_by, fallback_version=fallback, max_error=max_error)

    def install_shipped_models(self) -> None:
        """First start on a board: the shipped model becomes the working and the golden copy, with its
        reference set (its first held-out tiles, run here), whose inputs deltas for it reuse. A working
        manifest that fails its check is rebuilt from the golden copy first (:meth:`ModelStore.rebuild_working`),
        said; one that cannot be (the golden manifest corrupt too) is said, and the worker runs on without
        a model (found in audit: it died before its hello at every start, and the agent restarted it
        for good)."""
        try:
            rebuilt = self.store.rebuild_working()
            entries = self.store.list()
        except (ModelIntegrityError, OSError) as exc:
            self._state_corrupt("model store", str(exc), "no model can run until the golden copy is repaired")
            return
        if rebuilt is not None:
            error, names = rebuilt
            self._state_corrupt("model store's working manifest", str(error),
                                f"moved aside as {MANIFEST}{CORRUPT_SUFFIX}; rebuilt from the golden copy ("
                                f"{', '.join(names) or 'no model'}): versions uplinked since must be installed again")
        shipped = next((e for e in entries if e.name == MODEL_NAME), None)
        if shipped is not None and rebuilt is None:
            return
        try:
            # Checked against its card: a bit flipped in the shipped file on flash would otherwise become the golden
            # copy, hashed as it is (found in audit); a damaged card or held-out set stopped the worker at every start.
            data = read_checked(MODEL_FILE, MODELS_DIR)
            # Rebuilt: the shipped model's reference set went with the manifest that named it; made again where the
            # golden copy holds the shipped bytes (another version's is the ground's to send)
            if shipped is None or hashlib.sha256(data).hexdigest() == shipped.sha256:
                inputs = shipped_reference_inputs()
                reference = ReferenceSet(inputs, expected_outputs(data, inputs)).to_bytes()
                version = shipped.version if shipped is not None else str(load_card(MODELS_DIR).get("version", "1"))
                self.store.install(MODEL_NAME, version, data, golden=shipped is None,
                                   provenance=Provenance("shipped", False, "", time.time()), reference=reference)
        except CorruptFile as exc:
            self._state_corrupt("shipped model", str(exc),
                                "not installed: the worker runs on without it; install the software again")

    def _next_job(self) -> Job | None:
        if self.admission is Admission.NONE:
            return None
        now = time.monotonic()
        allowed = [j for j in self.jobs.values() if j.state in ACTIVE
                   and (j.kind is JobKind.INFERENCE or self.admission is Admission.ALL)
                   and not self._waiting_for_files(j)]
        # A trained model whose write waits gives way to the others (found in review: chosen every turn, its slice
        # of microseconds starved the jobs after it); with none, it is chosen and its slice says it did nothing.
        waiting = [j for j in allowed if now < self._export_retry_at.get(j.job_id, -math.inf)]
        allowed = [j for j in allowed if j not in waiting] or waiting
        # Inference before training, then priority (0 first), then age.
        return min(allowed, key=lambda j: (j.kind is not JobKind.INFERENCE, j.priority, j.job_id), default=None)

    def _waiting_for_files(self, job: Job) -> bool:
        """A continuous job, started, with no file in incoming/ to screen: it gives way to the jobs after
        it until one comes (found in review: always first, it kept every training job paused while
        the camera was off). A directory that cannot be read does not wait: the job runs and says why."""
        if not job.continuous or job.state is not JobState.RUNNING:
            return False
        try:
            return not self._incoming_files()
        except (NameRefused, OSError):
            return False

    def _incoming_files(self) -> list[Path]:
        """The files a continuous job takes, oldest name first. Hidden names are files still being
        written (write as .NAME, then rename): left alone. A symbolic link is not a tile the ground
        sent: left where it is, never read. Nor is a file refused already that could not be moved."""
        files = sorted(p for p in self._dir("incoming").glob("*.npy") if not p.name.startswith(".") and not p.is_symlink())
        names = {p.name for p in files}
        # forget what is gone or replaced: bounded by the files there are
        self._unmovable = {name: stamp for name, stamp in self._unmovable.items()
                           if name in names and _file_stamp(self._dir("incoming") / name) == stamp}
        return [p for p in files if p.name not in self._unmovable]

    def _read_incoming(self, job: Job, path: Path) -> tuple[bytes, os.stat_result] | None:
        """One incoming file's bytes and status, read once (its tiles, its SHA-256 and its move are of that one
        file), its size looked at before anything is read (:func:`flight.compute.uplink.read_limited`). None where
        it is gone since it was listed (FILE_DELETE, its writer), nothing said; or refused: set aside, said and
        counted (:meth:`_reject_incoming`). Found in review: read whole with no limit, a huge file failed the
        job (MemoryError); one gone between the listing and its opening was said and counted as rejected."""
        try:
            return read_limited(path, MAX_INCOMING_BYTES)
        except FileNotFoundError:
            return None
        except ReadRefused as exc:
            limit = " (MAX_INCOMING_BYTES)" if exc.kind == "limit" else ""
            self._reject_incoming(job, path, f"{path.name}: {exc}{limit}")
        except OSError as exc:
            self._reject_incoming(job, path, f"{path.name}: unreadable ({exc.strerror or exc})")
        return None

    def _reject_incoming(self, job: Job, path: Path, reason: str, taken: os.stat_result | None = None) -> None:
        """A file the job cannot screen: moved to incoming/rejected/ (the newest :data:`KEEP_REJECTED_FILES`
        kept), said and counted; the job goes on with the next file (found in review: the job failed,
        and the file, first in order, held back every good one after it). ``taken``: the status of the file
        read; one no longer at ``path`` (gone, or another file under its name since) is not moved."""
        self.infer_files_rejected += 1
        self.event("INCOMING_REJECTED", job_id=job.job_id, name=path.name, reason=reason[:200])
        if taken is not None and not _same_file(path, taken):
            return  # the file now under its name is screened in its turn
        try:
            rejected = self._dir("incoming/rejected")
            rejected.mkdir(exist_ok=True)
            kept_as = _plain_name(path.name)  # one the file rules take: FILE_DOWNLINK and FILE_DELETE reach it
            os.replace(path, rejected / kept_as)
            # When it was rejected, strictly after the last (a kernel's file clock may tick coarsely, and
            # ties would be broken by directory order): the newest kept are the last rejected.
            newest = max((p.stat().st_mtime_ns for p in rejected.iterdir() if p.name != kept_as), default=0)
            at = max(time.time_ns(), newest + 1)  # after any kept, whatever the clock did across a restart
            os.utime(rejected / kept_as, ns=(at, at))
            kept = sorted(rejected.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            for old in kept[KEEP_REJECTED_FILES:]:
                old.unlink()
        except (NameRefused, OSError):
            self._unmovable[path.name] = _file_stamp(path)  # left in place, not read again while it is there

    def _pause_training(self, reason: str) -> None:
        for job_id, tjob in list(self._training.items()):
            job = self.jobs[job_id]
            if job.state is JobState.RUNNING:
                try:
                    tjob.pause(reason)
                except Exception as exc:  # noqa: BLE001 - its state failed its check with nothing to go back to
                    self._finish(job, JobState.FAILED, f"{type(exc).__name__}: {exc}")
                    continue
                job.state, job.detail = JobState.PAUSED, reason[:120]
                job.progress = tjob.status.step
                self._save_jobs()
                self.event("JOB_PAUSED", job_id=job_id, step=job.progress, reason=reason)

    def _tick_training(self) -> None:
        """Running training jobs see each SAA pass coming whichever job has the slice (a continuous job's
        slice is one file: training goes on between files, not paused, and checkpointed, at each), at each
        slice and through the duty cycle's rests (:meth:`run`: found in review, behind files of seconds a
        rest of three times as long let the checkpoint's lead pass unseen)."""
        for job_id, tjob in list(self._training.items()):
            if (known := self.jobs.get(job_id)) is not None and known.state is JobState.RUNNING:
                try:
                    tjob.radiation_tick(self._radiation_now())  # once per SAA pass, just before the entry predicted
                except Exception as exc:  # noqa: BLE001 - a job that breaks fails alone; the worker goes on
                    self._finish(known, JobState.FAILED, f"{type(exc).__name__}: {exc}")

    def work_slice(self) -> float:
        """Run one slice of the best job; return the seconds spent working."""
        self.scrub_tick()  # before the job's clock starts: scrubbing is not the job's busy time
        job = self._next_job()
        admitted = self.admission is Admission.ALL
        if not admitted or job is None or (job.kind is not JobKind.TRAINING and not job.continuous):
            self._pause_training("not admitted: " + (self.reason or self.admission.value) if not admitted or job is None
                                 else "inference goes first")
        self._tick_training()
        if job is None:
            return 0.0
        if job.state is not JobState.RUNNING:
            was_paused = job.state is JobState.PAUSED
            job.state, job.detail = JobState.RUNNING, ""
            self._save_jobs()
            self.event("JOB_RESUMED" if was_paused else "JOB_STARTED", job_id=job.job_id, kind=job.kind.value,
                       name=job.name)
        self._last_job_id = job.job_id
        t0 = time.monotonic()
        self._slice_idle = False
        try:
            if job.kind is JobKind.INFERENCE:
                try:
                    self._infer_slice(job)
                finally:
                    if self._injector is not None:  # HIL only: what the slice left, ended and written down
                        self._injector.end_unreleased()
                        self._injector.save()
                    self._engines_resealed()
            else:
                self._train_slice(job)
        except ModelIntegrityError as exc:  # both copies bad: nothing to run this job on
            self._finish(job, JobState.FAILED, f"model refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - a job that breaks fails alone; the worker goes on
            if not self._probation_failed(job, exc):
                self._finish(job, JobState.FAILED, f"{type(exc).__name__}: {exc}")
        return 0.0 if self._slice_idle else time.monotonic() - t0

    def _infer_slice(self, job: Job) -> None:
        if time.monotonic() < self._export_retry_at.get(job.job_id, -math.inf):
            self._slice_idle = True  # its product's write waits (_product_unwritten): no work, so the loop waits too
            return
        try:
            model = self._session(job.model)
        except (ModelIntegrityError, ModelLoadFailed):
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several kinds for a model it cannot run
            raise ModelLoadFailed(f"{type(exc).__name__}: {exc}") from exc
        injector = self._injector
        if injector is not None:  # HIL only: the harness's upsets, weights struck now, in any open model
            injector.poll()
            injector.strike_weights(*self._sessions.values())
        if job.continuous:
            files = self._incoming_files()
            if not files:
                return
            path = files[0]
            read = self._read_incoming(job, path)
            if read is None:
                return
            data, taken = read
            # One file is seconds of work at its largest (found in audit: 2.3 to 7.8 s, past a short
            # compute_watchdog_s, and the healthy worker was restarted): the agent's pings are answered between its
            # parts (checks, hash, model runs), as within an open.
            self._keepalive()
            try:
                tiles = checked_tiles(npy_array(data, path.name), model.input_shape, path.name, self._keepalive)
            except BadInput as exc:
                self._reject_incoming(job, path, str(exc), taken)
                return
            hashed = hashlib.sha256()  # a name the camera gives again is not it
            for at in range(0, len(data), KEEPALIVE_BYTES):
                hashed.update(memoryview(data)[at:at + KEEPALIVE_BYTES])
                self._keepalive()
            digest = hashed.hexdigest()
            del data, read  # the tiles are a copy of their own
            checks = self._checks[job.job_id] = self._product_checks(model)  # one product per file
            try:
                # A file of more than MAX_BATCH tiles runs in parts of that many: no run bigger than TensorRT's
                # engines are built for at the open (found in review: a camera file of 300 tiles built one in
                # the slice, where no ping is answered); a smaller one, as before, in one run. Each part keeps
                # the repairs of unchecked weights as it was made, as a data set's batches do (found in audit: one
                # count for the file, read after its last part, released earlier parts made before a later
                # part's scrub repaired a weight as passed).
                held, drops = [], self._drops
                for at in range(0, len(tiles), cp.MAX_BATCH):
                    part, batch = tiles[at:at + cp.MAX_BATCH], None
                    before = self._watched_repairs.get(job.model, 0)
                    if injector is not None and injector.live():
                        probs, batch = self._judged_probs(job, model, part, checks, self._double_due())
                    else:
                        probs = self._checked_probs(job, model, part, checks, self._double_due())
                    held.append((self._hold(probs, batch), at, max(before, self._run_repairs.get(job.model, 0))))
                    if self._drops != drops:  # weights nothing could repair: the session was dropped (found in
                        return  # audit: the later parts ran on it); the file is made again, whole, on one built anew
                    self._keepalive()
                claims = self._claims_checked(model, checks, 0)
                latest = self._watched_count(job.model, model if claims else None)
                got = [self._released(job, model, tiles[at:at + len(h[0])], h, checks, at, made < latest)
                       for h, at, made in held]
                probs = got[0] if len(got) == 1 else np.concatenate(got)
                totals = dataclasses.replace(self.totals, classes=dict(self.totals.classes))
                classes, conf = self._classify(probs, len(held), checks.tile_status(), job.model)
                try:
                    written = self._write_product(job, classes, conf, source=path.name, model=model, checks=checks,
                                                  source_sha256=digest)
                except OSError as exc:  # the file stays in incoming/: screened again, and counted, once written
                    self.totals = totals
                    self._product_unwritten(job, path.name, exc)
                    return
                self._export_retry_at.pop(job.job_id, None)
                if checks.tiles_failed:  # no JOB_DONE for a continuous job: such products are said (found in audit)
                    self._product_marked(job, written, checks.tiles_failed, len(classes), checks.protection)
            except _ModelChanged:
                return  # the file stays: the next slice makes its product on the new version, whole
            finally:
                self._checks.pop(job.job_id, None)
            self._proven(job.model, model)
            # Under its own name, an earlier input of that name replaced: the agent's clean-up of uplinked inputs
            # (flight/agent/files.py) knows it by that name (a review: under a name of its own it was never cleaned);
            # one the file rules refuse (a camera's), under a name they take, which FILE_DELETE can reach. Only the
            # file screened: one gone since (FILE_DELETE) leaves its product, and another put under its name since
            # (the camera's next scene.npy) stays to be screened (found in review: the job failed on the first, and
            # the second went to done/ unscreened).
            # Not moved (done/ refused: a file of that name in incoming/, a link out; a failing disk): its product
            # stands and the job goes on, the file left where it is and not screened again in this run (found in
            # audit: the job failed for good, its product written, and the camera's next files waited unscreened).
            if _same_file(path, taken):
                try:
                    done = self._dir("incoming/done")
                    done.mkdir(exist_ok=True)
                    os.replace(path, done / _plain_name(path.name))
                except FileNotFoundError:
                    pass
                except OSError as exc:  # NameRefused too
                    self._unmovable[path.name] = _file_stamp(path)
                    self._write_failed(f"the move of {path.name} to incoming/done/"[:100], exc)
            job.progress += len(tiles)
            return
        data = self._inputs.get(job.job_id)
        if data is None:  # read once per job, not once per slice
            data = self._inputs[job.job_id] = checked_tiles(self._input_set(job.name), model.input_shape,
                                                            f"data set {job.name}", self._keepalive)
        checks = self._checks.get(job.job_id)
        if checks is not None and checks.model_sha256 != model.sha256:
            # Another version became active between two slices (MODEL_INSTALL, a rollback): one
            # product comes from one model, as its receipt says, so the job starts again on this one.
            self._restart_job(job, model)
            checks = None
        if checks is None:
            checks = self._checks[job.job_id] = self._product_checks(model)
        start = self._cursor.get(job.job_id, 0)
        passed_before = checks.tiles_checked - checks.tiles_failed  # _claims_checked: did this slice pass any
        t_end = time.monotonic() + SLICE_S
        drops = self._drops
        # (held result, its first tile, the repairs of weights no check covers when it was made) per batch
        parts: list[tuple[tuple[np.ndarray, int, Any], int, int]] = []
        hold = self._hold
        # The common batches are one session.run and nothing else: with no double run due, one with no
        # check output (unchecked), or one whose flags all held (passed). A run of such batches of one
        # kind goes into the receipt in one call (their order kept); anything else (a double run, a
        # flag that failed) goes through _checked_probs, the first run's result with it.
        lean = not model.checked
        run, feed, wanted = model.session.run, model.input_name, model.outputs
        repairs, ran_at = self._watched_repairs, self._run_repairs
        every = self._every_batch_twice()
        run_kind, run_tiles, run_batches = UNCHECKED, 0, 0  # the batches not yet in the receipt
        fraction = self.double_run_fraction
        try:
            if lean and injector is None and not every and not (math.isfinite(fraction) and fraction > 0.0):
                # Nothing to decide per batch (unchecked, no double runs, no HIL): each batch is a run and
                # its CRC, the loop below without its choices (bench.compute: infer_ratio).
                start = self._lean_batches(job.model, model, data, start, t_end, checks, parts)
            while start < len(data) and time.monotonic() < t_end:
                batch = data[start : start + self.batch]
                before = repairs.get(job.model, 0)  # made, for _released: as its last run began (_run_model)
                double = self._double.due(self.double_run_fraction, every)
                kind = first = batch_upsets = None
                judged = injector is not None and injector.live()
                if judged:
                    kind = None  # through _judged_probs below
                elif not double:
                    if lean:
                        try:
                            probs, kind = run(wanted, {feed: batch})[0], UNCHECKED
                        except RUN_REFUSED as exc:
                            probs, kind = self._run_after_refusal(model, batch, exc)[0], UNCHECKED
                    else:
                        first = self._run_model(model, batch)
                        probs, kind = first[0], (PASSED if first[1].all() else None)
                        if kind == PASSED and (self._failed_in_row[1] or self._rebuilt_failing):
                            self._passed(model)
                if run_batches and kind != run_kind:  # the run ends here: into the receipt before this batch
                    self._add_run(checks, model, run_kind, run_tiles, run_batches)
                    run_tiles = run_batches = 0
                if judged:
                    probs, batch_upsets = self._judged_probs(job, model, batch, checks, double)
                elif kind is None:
                    probs = self._checked_probs(job, model, batch, checks, double, first)
                else:
                    run_kind, run_tiles, run_batches = kind, run_tiles + len(batch), run_batches + 1
                parts.append((hold(probs, batch_upsets), start, max(before, ran_at.get(job.model, 0))))
                start += len(batch)
                if self._drops != drops:
                    break  # weights nothing could repair: the next slice runs on a session built anew
            if run_batches:
                self._add_run(checks, model, run_kind, run_tiles, run_batches)
        except _ModelChanged as changed:  # a session rebuilt mid-batch came from another version
            self._restart_job(job, changed.model)
            return
        if parts:  # classes and totals once per slice: numpy's per-call cost paid once, not per batch
            latest = self._watched_count(job.model, model if self._claims_checked(model, checks, passed_before)
                                         else None)
            try:
                got = [self._released(job, model, data[at:at + len(held[0])], held, checks, at, made < latest)
                       for held, at, made in parts]
            except _ModelChanged as changed:
                self._restart_job(job, changed.model)
                return
            probs = got[0] if len(got) == 1 else np.concatenate(got)
            status = checks.tile_status()[parts[0][1]:start]
            self._results.setdefault(job.job_id, []).append(self._classify(probs, len(parts), status, job.model))
        self._cursor[job.job_id] = start
        job.progress = start
        if start >= len(data):
            parts = self._results.get(job.job_id, [])
            classes = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, CLASS_DTYPE)
            conf = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
            try:
                path = self._write_product(job, classes, conf, source=job.name, model=model, checks=checks)
            except OSError as exc:  # its results kept: written again, not computed again
                self._product_unwritten(job, job.name, exc)
                return
            self._results.pop(job.job_id, None)
            self._export_retry_at.pop(job.job_id, None)
            self._proven(job.model, model)
            # The receipt's gist goes down with the event: a product checks failed on is seen without fetching it.
            self._finish(job, JobState.DONE, f"{len(classes)} tiles, product {path.name}; checks {checks.check_status}"
                                             f" ({checks.tiles_failed} failed), {checks.protection.value}")

    def _lean_batches(self, name: str, model: _Session, data: np.ndarray, start: int, t_end: float,
                      checks: ProductChecks, parts: list[tuple[tuple[np.ndarray, int, Any], int, int]]) -> int:
        """Unchecked batches of ``data`` from tile ``start`` until ``t_end``, each run once, held
        (:meth:`_hold`) into ``parts`` and put in the receipt as one run; the next tile to do. No session is
        dropped here but in :meth:`_run_after_refusal`, which then raises (the job fails, as in the loop of
        :meth:`_infer_slice`), so there is no :attr:`_drops` to watch."""
        run, feed, wanted, size = model.session.run, model.input_name, model.outputs, self.batch
        repairs, ran_at = self._watched_repairs, self._run_repairs
        monotonic, hold = time.monotonic, self._hold
        tiles = batches = 0
        while start < len(data) and monotonic() < t_end:
            batch = data[start : start + size]
            before = repairs.get(name, 0)
            try:
                probs = run(wanted, {feed: batch})[0]
            except RUN_REFUSED as exc:
                probs = self._run_after_refusal(model, batch, exc)[0]
            parts.append((hold(probs), start, max(before, ran_at.get(name, 0))))
            start += len(batch)
            tiles, batches = tiles + len(batch), batches + 1
        if batches:
            self._add_run(checks, model, UNCHECKED, tiles, batches)
        return start

    def _product_unwritten(self, job: Job, source: str, exc: OSError) -> None:
        """Job ``job``'s product of ``source`` could not be written (a full disk, a directory gone read-only): said
        and counted as the worker's own writes are (COMPUTE_WRITE_FAILED), the job kept running and the write tried
        again every :data:`EXPORT_RETRY_S`, as a trained model's is. Found in audit: one full disk failed a
        continuous job for good, said only as its JOB_FAILED, and every file the camera wrote after it waited
        unscreened until the ground started another."""
        self._write_failed(f"job {job.job_id}'s product of {source}"[:100], exc)
        self._export_retry_at[job.job_id] = time.monotonic() + EXPORT_RETRY_S
        job.detail = (f"the product of {source} could not be written ({exc.strerror or exc}): tried again every "
                      f"{EXPORT_RETRY_S:.0f} s")[:200]

    def _product_marked(self, job: Job, product: Path, failed: int, tiles: int, protection: Protection) -> None:
        """A continuous job's product written with failed tiles: said at most every CHECK_EVENT_MIN_S, as
        RESULT_CHECK_FAILED is (a fault nothing cures would otherwise say it for every file), with the
        number of such products not said before it."""
        now = time.monotonic()
        if now - self._marked_event_at < CHECK_EVENT_MIN_S:
            self._marked_unsaid += 1
            return
        self._marked_event_at = now
        self.event("PRODUCT_MARKED", job_id=job.job_id, name=product.name[:100], failed=failed, tiles=tiles,
                   protection=protection.value, unsaid=self._marked_unsaid)
        self._marked_unsaid = 0

    def _restart_job(self, job: Job, model: _Session) -> None:
        """Start a data-set job again on ``model``: one product comes from one model version, as its
        receipt says, and the version changed (MODEL_INSTALL or a rollback between two slices, or a
        session rebuilt from the store's golden copy mid-batch)."""
        for table in (self._cursor, self._results, self._checks):
            table.pop(job.job_id, None)
        job.progress, job.detail = 0, f"restarted on {job.model} {model.version}: the model changed"[:120]
        self._save_jobs()

    def _session_dropped(self, model: _Session) -> bool:
        return all(s is not model for s in self._sessions.values())

    def _double_due(self) -> bool:
        """Whether the next batch runs twice (the schedule's credit is spent: ask once per batch)."""
        return self._double.due(self.double_run_fraction, self._every_batch_twice())

    def _radiation_now(self) -> cp.Radiation:
        """The last admission's prediction, its time to the SAA entry counted down on this process's clock
        since it came (found in review: with a control period of a minute or more, the entry went from
        more than a checkpoint's lead ahead to passed between two admissions, and no checkpoint was taken).
        Once the countdown is over the board is taken to be in the SAA until an admission says otherwise
        (found in audit: the scrub kept the quiet period and batches ran once through a pass the agent had
        predicted): the scrub period, the double runs, the receipts and a training job's SAA checkpoint and
        environment follow this, not the last admission."""
        r = self.radiation
        if r.saa_entry_in_s is None or r.saa_entry_in_s <= 0.0:
            return r
        left_s = r.saa_entry_in_s - (self.clock_s() - self._radiation_at)
        if left_s > 0.0:
            return dataclasses.replace(r, saa_entry_in_s=left_s)
        return dataclasses.replace(r, saa_entry_in_s=0.0, in_saa=True, flux_class=FluxClass.SAA)

    def _every_batch_twice(self) -> bool:
        """``double_run_all_in_saa`` and the agent predicts the SAA, or predicts nothing (no orbit, or a TLE
        too old: the board may be in it, found in review: such batches ran once). Every batch runs twice
        for as long as no orbit is known."""
        r = self._radiation_now()
        return self.double_run_all_in_saa and (r.in_saa or r.flux_class is FluxClass.UNKNOWN)

    def _add_run(self, checks: ProductChecks, model: _Session, kind: int, tiles: int, batches: int) -> None:
        """``batches`` consecutive batches, ``tiles`` in all, each run once, into the receipt: UNCHECKED
        (nothing checked them) or PASSED (every flag held) per ``kind``."""
        checks.ran_on(model.sha256, model.protection, model.provider, model.abft_precision)
        if kind == PASSED:
            self._failed_in_row = (None, 0)  # "in a row": a batch whose checks held ends the run
        rad, scrubber = self._radiation_now(), model.scrubber
        status = None if kind == UNCHECKED else np.full(tiles, kind, np.int8)
        checks.add_batch(tiles, status, batches=batches,
                         scrub_age_s=scrubber.age_s(self.clock_s()) if scrubber is not None else None,
                         scrub_period_s=scrubber.period_s if scrubber is not None else None,
                         flux=rad.flux_class, in_saa=rad.in_saa, lat_deg=rad.lat_deg)

    def _checked_probs(self, job: Job, model: _Session, tiles: np.ndarray, checks: ProductChecks,
                       double: bool, first: tuple[np.ndarray, np.ndarray | None] | None = None) -> np.ndarray:
        """The probabilities of one batch, checked: the checksum flags where the model has them, a
        double run where one is ``double`` (due). A failed check scrubs the weights and runs the batch
        again; tiles failing again are marked FAILED in ``checks`` (the product's receipt). ``first``:
        the batch's first run (:meth:`_run_model`) where the caller has made it already."""
        checked = double or model.checked
        if checked:
            self.double_runs += double
            probs, ok, failed = self._checked_run(model, tiles, double, first)
        else:  # the common case, kept to one run and no per-tile bookkeeping
            probs, ok, failed = (first[0] if first is not None else self._run_model(model, tiles)[0]), None, ""
        self.last_check_failed = failed
        mismatch, abft_failed, range_failed = "double run" in failed, "checksum" in failed, "range" in failed
        rerun = bool(failed)
        if failed:
            self.checks_failed += 1
            bad = int(np.count_nonzero(~ok))
            scrubbed = self._scrub_now(model)
            if self._session_dropped(model):  # its weights could not be repaired: a session built anew
                model = self._session(job.model)
                if model.sha256 != checks.model_sha256:  # from another version (the golden copy, a rollback)
                    raise _ModelChanged(model)
            self.reruns += 1
            # Run twice again where a double run disagreed: the comparison is the check.
            probs, ok, again = self._checked_run(model, tiles, double)
            self.results_marked += bool(again)
            rebuilt = self._failing_again(model, bool(again))
            self._check_failed(job, failed, int(np.count_nonzero(~ok)) if again else bad, again, rebuilt, scrubbed=scrubbed)
        elif checked:
            self._passed(model)
        status = np.where(ok, PASSED, FAILED).astype(np.int8) if checked else None
        checks.ran_on(model.sha256, model.protection, model.provider, model.abft_precision)
        rad, scrubber = self._radiation_now(), model.scrubber
        checks.add_batch(len(tiles), status, double_run=double, mismatch=mismatch, abft_failed=abft_failed,
                         range_failed=range_failed, rerun=rerun,
                         scrub_age_s=scrubber.age_s(self.clock_s()) if scrubber is not None else None,
                         scrub_period_s=scrubber.period_s if scrubber is not None else None,
                         flux=rad.flux_class, in_saa=rad.in_saa, lat_deg=rad.lat_deg)
        return probs

    def _hold(self, probs: np.ndarray, batch: Batch | None = None) -> tuple[np.ndarray, int, Batch | None]:
        """A batch's probabilities as they wait in memory to be classified, with the CRC-32 they had
        as they came out of the run (checked again by :meth:`_released`). ``batch``: HIL upset
        injection's account of the batch (:meth:`_judged_probs`), None otherwise."""
        crc = zlib.crc32(probs)
        if self._injector is not None:  # HIL only: an upset in the result while it is held
            probs, batch = self._injector.strike_output(probs, batch)
        return probs, crc, batch

    def _released(self, job: Job, model: _Session, tiles: np.ndarray, held: tuple[np.ndarray, int, Batch | None],
                  checks: ProductChecks, first_tile: int, remake: bool = False) -> np.ndarray:
        """A held result, checked against the CRC-32 it had when made. One changed while it waited
        (an upset in memory that no check in the graph can see), or made while a weight no check
        covers was wrong (``remake``: :meth:`_watched_count`), is made again on the model's current
        session, checked as the model allows (its checksum flags; a double run where it has none), and
        the receipt restates those tiles (``results_changed``, ``reruns``)."""
        probs, crc, batch = held
        crc_changed = zlib.crc32(probs) != crc
        changed = crc_changed or remake
        if changed:
            self.checks_failed += 1
            self.reruns += 1
            current = self._session(job.model)
            if current.check_output is None:  # its tiles pass on a double run or ranges: the weights first (found
                self._watched_count(job.model, current)  # in review: a weight's fault passed twice, and was vouched)
                current = self._session(job.model)  # built anew where nothing could repair them
            if current.sha256 != checks.model_sha256:  # rebuilt from another version since: not this product's
                raise _ModelChanged(current)
            double = not current.checked  # no checksum flags: a double run checks it (counted as any, found in audit)
            probs, ok, failed = self._checked_run(current, tiles, double=double)
            self.double_runs += double
            self.results_marked += bool(failed)
            checks.restate(first_tile, np.where(ok, PASSED, FAILED).astype(np.int8), double_run=double,
                           mismatch="double run" in failed)
            self._check_failed(job, "output CRC" if crc_changed else "unchecked weights", len(tiles), failed,
                               outcome=("made again: " + (f"{failed} failed on the new run, tiles marked failed"
                                                          if failed else "the new run passed its checks")))
        if batch is not None:
            status = checks.tile_status()[first_tile:first_tile + len(tiles)]
            self._injector.release(batch, model, tiles, probs, status, crc_changed)
        return probs

    def _judged_probs(self, job: Job, model: _Session, tiles: np.ndarray, checks: ProductChecks,
                      double: bool) -> tuple[np.ndarray, Batch]:
        """HIL upset injection: one batch with the upsets that wait for it (its first run through
        the injector), checked as any batch is; judged when its result is released."""
        self._failed_flags = ""
        first, batch = self._injector.first_run(model, tiles, self._run_model)
        if self._injector.failed_flags is not None:  # the first run went through the hooked graph
            self._failed_flags = self._injector.failed_flags
        self.last_check_failed = ""
        try:
            probs = self._checked_probs(job, model, tiles, checks, double, first)
        finally:
            self._injector.checked(batch, self.last_check_failed)
        return probs, batch

    def _classify(self, probs: np.ndarray, batches: int, status: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Class and confidence per tile of ``probs`` (``batches`` runs' worth) of model ``name``, added to
        the totals. A tile whose checks failed (``status``, its receipt's) and whose output is NaN or
        infinite is written as class :data:`NO_CLASS` with a NaN confidence and left out of the totals:
        the checks caught what made it (an upset the scrub could not settle), and the product says so.
        A non-finite output is :class:`NonFiniteOutput`, the model's fault, and no product is written
        from it, where no check flagged it, or where the version is on probation (a new version that
        gives NaN is rolled back, found in review: its flagged NaNs proved it instead)."""
        bad = ~np.isfinite(probs).all(axis=1)
        if bad.any():
            marked = np.asarray(status, np.int8) == FAILED if len(status) == len(probs) else np.zeros(len(probs), bool)
            state = self._state(name)
            if state is not None and state.probation:
                marked = np.zeros(len(probs), bool)
            if (bad & ~marked).any():
                raise NonFiniteOutput(f"the model gave non-finite outputs for {int((bad & ~marked).sum())} tiles "
                                      f"of {len(probs)}; no product written from them")
            classes = np.where(bad, 0, np.nan_to_num(probs, nan=0.0, posinf=0.0, neginf=0.0).argmax(axis=1))
            conf = probs[np.arange(len(classes)), classes].astype(np.float32)
            classes[bad], conf[bad] = NO_CLASS, np.nan
        else:
            classes = probs.argmax(axis=1)
            conf = probs[np.arange(len(classes)), classes]
        classes = classes.astype(CLASS_DTYPE if probs.shape[1] <= np.iinfo(CLASS_DTYPE).max else np.int32)
        good = classes[~bad]
        t = self.totals
        t.count += len(good)
        t.batches += batches
        t.confidence_sum += float(conf[~bad].sum())
        for c, n in enumerate(np.bincount(good, minlength=probs.shape[1]).tolist()):
            if n:
                t.classes[str(c)] = t.classes.get(str(c), 0) + n
        return classes, conf

    def _checked_run(self, model: _Session, tiles: np.ndarray, double: bool,
                     first: tuple[np.ndarray, np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """One run of ``tiles`` (two with ``double``; ``first`` is the first where it was made already, by
        :meth:`_run_model` just before): (probabilities, per-tile ok, what failed: "" when nothing did,
        else "checksum", "range", "double run" or several joined by "+")."""
        probs, flags = first if first is not None else self._run_model(model, tiles)
        ok = np.ones(len(tiles), bool)
        failed = []
        if flags is not None and not flags.all():
            ok &= flags
            failed.append(self._failed_flags)  # which flag failed, as the run that made them found it
        if double:
            again, _ = self._run_model(model, tiles)
            same = rows_agree(probs, again, exact=model.provider == CPU)
            if not same.all():
                ok &= same
                failed.append("double run")
        return probs, ok, "+".join(failed)

    def _run_model(self, model: _Session, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, per-tile flags or None) of one session run: a tile passes where every flag the
        model has (the checksum pass's, the range checks') is true. Which failed: :attr:`_failed_flags`."""
        # The repairs of its weights no check covers so far: a result is made again at its release if one
        # came after the run that made it (found in review: a rerun before a rebuild's check was not).
        self._run_repairs[model.name] = self._watched_repairs.get(model.name, 0)
        try:
            outputs = model.session.run(model.outputs, {model.input_name: tiles})
        except RUN_REFUSED as exc:
            outputs = self._run_after_refusal(model, tiles, exc)
        self._failed_flags = ""
        if len(outputs) == 1:
            return outputs[0], None
        ok, self._failed_flags = check_flags(model.outputs[1:], outputs[1:], len(tiles))
        return outputs[0], ok

    def _run_after_refusal(self, model: _Session, tiles: np.ndarray, exc: BaseException) -> list[np.ndarray]:
        """onnxruntime refused a batch of a session that ran before: an upset in one of its integer weights
        (a shape or an axis the checks keep) does that, and no flag can say so (found in review: every job
        failed until the periodic scrub came round, with no check failed). With scrubbed weights: a full
        scrub now, then the batch once more, said and counted as a failed check; refused again, or with
        nothing scrubbed, the error stands and the job fails as before."""
        if model.scrubber is None or not self._scrub_now(model) or self._session_dropped(model):
            raise exc
        self._run_repairs[model.name] = self._watched_repairs.get(model.name, 0)
        outputs = model.session.run(model.outputs, {model.input_name: tiles})  # refused again: the error stands
        self.checks_failed += 1
        self.reruns += 1
        job = self.jobs.get(self._last_job_id)
        if job is not None:
            if (checks := self._checks.get(job.job_id)) is not None:
                checks.reruns += 1
            self._check_failed(job, "run refused", len(tiles), "",
                               outcome=f"onnxruntime refused it ({_refusal_text(exc)}); ran after a scrub")
        return outputs

    def _passed(self, model: _Session) -> None:
        """A batch of ``model`` whose checks held: it ends a run of batches failing again, and lets a
        rebuild happen again."""
        self._failed_in_row = (None, 0)
        self._rebuilt_failing.discard(model.name)

    def _failing_again(self, model: _Session, again: bool) -> bool:
        """Count batches of ``model`` failing again after a scrub, in a row; at
        :data:`REBUILD_AFTER_FAILED_AGAIN` drop its session (the next slice builds it anew from the
        store's SHA-256-checked bytes) and return True. A fault the scrub cannot see (all four copies
        agreeing on a flipped bit, a constant onnxruntime derived from a weight) is cured that way."""
        if not again:
            self._failed_in_row = (None, 0)
            return False
        seen, n = self._failed_in_row
        n = n + 1 if seen is model.session else 1
        self._failed_in_row = (model.session, n)
        if n < REBUILD_AFTER_FAILED_AGAIN or model.name in self._rebuilt_failing:
            # Built anew from the store and failing again before any batch passed: not what a reload
            # cures (out-of-range data, most often), so not rebuilt again until one passes.
            return False
        self._rebuilt_failing.add(model.name)
        if model.scrubber is not None and model.scrubber.watched:  # checked now: not again before release
            self._scrub(model.name, model.scrubber, lambda sc: sc.check_watched(self.clock_s()))
        if self._injector is not None:
            self._injector.rebuilt([model])
        self._sessions = {k: v for k, v in self._sessions.items() if v is not model}
        self._checked_models.pop(model.name, None)  # the protected bytes are made again too
        self._drops += 1
        self._failed_in_row = (None, 0)
        return True

    def _check_failed(self, job: Job, check: str, tiles: int, again: str, rebuilt: bool = False,
                      outcome: str | None = None, scrubbed: bool = True) -> None:
        now = time.monotonic()
        if now - self._check_event_at < CHECK_EVENT_MIN_S and not rebuilt:
            return
        self._check_event_at = now
        after = "after a scrub" if scrubbed else "on a rerun, with no scrub (the weights of this session are not scrubbed)"
        outcome = outcome or (f"failed again {after} ({again}): tiles marked failed in the product" if again
                              else "passed after a scrub and a rerun" if scrubbed else f"passed {after}")
        if rebuilt:
            outcome += f"; {REBUILD_AFTER_FAILED_AGAIN} batches in a row: the model is loaded again from the store"
        self.event("RESULT_CHECK_FAILED", job_id=job.job_id, check=check, tiles=tiles, outcome=outcome)

    def _write_product(self, job: Job, classes: np.ndarray, conf: np.ndarray, source: str, model: _Session,
                       checks: ProductChecks | None = None, source_sha256: str = "") -> Path:
        """A product for downlink: per-tile class and confidence, atomic, with a JSON summary. Both
        carry the model's provenance (name, version, SHA-256, who uplinked it) as their header and
        the receipt of the checks (:class:`~flight.compute.checks.ProductChecks`); the .npz has the
        per-tile check status (``check``: 1 passed, 0 unchecked, -1 failed)."""
        products = self._dir("products")

        def product_of(stem: str) -> str | None:
            if not (products / f"{stem}.json").exists() and not (products / f"{stem}.npz").exists():
                return None
            try:
                return str(json.loads((products / f"{stem}.json").read_text()).get("source_sha256") or "")
            except (OSError, ValueError, AttributeError):
                return ""

        plain = Path(_plain_name(source)).stem  # a name the file rules take, as the product's must be
        stem = _free_name(product_of, lambda suffix: _product_stem(job.job_id, plain, suffix),
                          source_sha256) if source_sha256 else _product_stem(job.job_id, plain)
        header = self._provenance(job.model, model)
        checks = checks if checks is not None else self._product_checks(model)
        receipt = checks.receipt()
        status = checks.tile_status()
        if len(status) != len(classes):  # never: every batch adds its status; but a receipt must not lie
            status = np.full(len(classes), UNCHECKED, np.int8)
        buf = _npz_bytes(classes=classes, confidence=conf, check=status, receipt=np.array(json.dumps(receipt)),
                         **{k: np.array(v) for k, v in header.items()})
        write_atomic(products / f"{stem}.npz", buf, sync_dir=False)  # the directory once, for both files
        known = np.isfinite(conf)  # a tile whose checks failed on a non-number has none (NO_CLASS)
        summary = {"job_id": job.job_id, **header, "source": source,
                   **({"source_sha256": source_sha256} if source_sha256 else {}), "tiles": int(len(classes)),
                   "classes": {str(int(c)): int(n) for c, n in zip(*np.unique(classes, return_counts=True))},
                   "confidence_mean": float(conf[known].mean()) if known.any() else None, "receipt": receipt}
        try:
            write_atomic(products / f"{stem}.json", json.dumps(summary, indent=1).encode())  # syncs both renames
        except OSError:  # no product without its summary: downlinked alone, it vouches for nothing, and its name
            (products / f"{stem}.npz").unlink(missing_ok=True)  # held the retry to another (-2)
            raise
        return products / f"{stem}.npz"

    def _train_slice(self, job: Job) -> None:
        self._last_train_job_id = job.job_id
        tjob = self._training.get(job.job_id)
        if tjob is None:
            x, y = self._load_set(job.name)
            if y is None:
                raise ValueError(f"data set {job.name} has no labels (y) to train on")
            x = x.reshape(len(x), -1)
            # The classes the command gave (an audit: one label of 7 in a two-class set made a model of 8 outputs,
            # vouched for): a label past them is a bad sample, refused. Not given (0, and jobs queued before it
            # was), the data's largest label plus one, at most MAX_CLASSES (a label of 100000 grew the worker to
            # 950 MB): the job fails naming the label and the argument.
            problem = _classes_problem(job.name, job.classes, y)  # as at TRAIN_START: the set may have changed since
            if problem:
                raise ValueError(problem)
            classes = job.classes or int(y.max()) + 1
            spec = MlpSpec(x.shape[1], (Dense(128, "relu"), Dense(classes)))
            trainer = Trainer(spec, Adam(job.lr), job.batch_size, seed=job.job_id, intra_op_num_threads=self.threads)
            plan = TrainingPlan(job.steps, job.batch_size, job.checkpoint_every, seed=job.job_id)
            tjob = TrainingJob(trainer, x, y, plan, self._checkpoint_path(job.job_id),
                               on_event=lambda kind, _id=job.job_id, **args: self._training_event(_id, kind, args),
                               clock=self.clock_s,
                               identity={"data_set": job.name, "lr": job.lr, "layers": [128, classes]},
                               receipt=self._training_receipt)
            there = tjob.checkpoint_path.exists()  # resume() says itself why it refused one that is there
            if tjob.resume():
                self.event("JOB_RESUMED", job_id=job.job_id, kind=job.kind.value,
                           name=f"{job.name} from step {tjob.status.step}")
            elif not there and job.progress >= job.checkpoint_every:  # gone (FILE_DELETE, a disk), or never written
                self._training_event(job.job_id, "checkpoint_refused",  # (its writes failed): said (an audit)
                                     {"reason": f"{tjob.checkpoint_path.name}: none, though the job list says step "
                                                f"{job.progress} (a checkpoint every {job.checkpoint_every}): removed, "
                                                "or never written",
                                      "outcome": "the job starts from step 0"})
            self._training[job.job_id] = tjob
            tjob.radiation_tick(self._radiation_now())  # as work_slice ticks running jobs: before its first step
        if tjob.done and time.monotonic() < self._export_retry_at.get(job.job_id, -math.inf):
            self._slice_idle = True  # its model's write waits: no work, so the loop waits too (not a spin)
            return
        t0 = time.monotonic()
        steps = 0
        while time.monotonic() - t0 < SLICE_S and not tjob.done:
            steps += tjob.run(8)
        self._train_rate = (steps, time.monotonic() - t0)
        job.progress = tjob.status.step
        if tjob.done and tjob.state_checked():  # else it went back to its last checkpoint: trained on next slice
            model = tjob.trainer.inference_model()
            out = self._dir("products") / f"job{job.job_id:05d}-{job.name}-trained.onnx"
            data = model.SerializeToString()
            # "job": what it trained on and how, as its checkpoints name it (found in audit: the data set's name
            # alone, which a set replaced under it keeps): the SHA-256 of the data (training_job.job_identity), the
            # steps, batch size, seed, learning rate and layers
            summary = {"job_id": job.job_id, "source": job.name, "steps": tjob.status.step,
                       "loss": tjob.status.loss if math.isfinite(tjob.status.loss) else None,
                       "receipt": self._training_receipt(hashlib.sha256(data).hexdigest(), tjob.status),
                       "steps_refused": tjob.status.steps_refused,
                       "restores": tjob.status.restores, "saa_checkpoints": tjob.status.saa_checkpoints,
                       "job": tjob.identity}
            try:
                write_atomic(out, data)
                write_atomic(out.with_suffix(".json"), json.dumps(summary, indent=1).encode())
            except OSError as exc:  # a full disk: found in audit, the job failed and its checkpoint went with it
                self._write_failed(f"job {job.job_id}'s trained model", exc)
                self._export_retry_at[job.job_id] = time.monotonic() + EXPORT_RETRY_S
                job.detail = (f"trained ({tjob.status.step} steps); the model could not be written "
                              f"({exc.strerror or exc}): tried again every {EXPORT_RETRY_S:.0f} s")[:200]
                return
            self._export_retry_at.pop(job.job_id, None)
            refused = f", {tjob.status.steps_refused} steps refused" if tjob.status.steps_refused else ""
            self._finish(job, JobState.DONE, f"{tjob.status.step} steps, loss {tjob.status.loss:.4f}{refused}, "
                                             f"model {out.name}")

    def _training_receipt(self, sha256: str, status: TrainingStatus) -> dict[str, Any]:
        """The receipt of a trained model or a checkpoint (the state of SHA-256 ``sha256``): training weights
        change every step, so nothing scrubs them; the step checks (training/guard.py) guard them instead,
        and the summary or the checkpoint counts what they refused. The trainer's sessions run on the CPU
        provider. Its environment: the worst the agent predicted while the job ran (TrainingJob.radiation_tick,
        kept with its checkpoints), as an inference product's is over its batches; the latitude now."""
        receipt = ProductChecks(sha256, Protection.NONE, CPU)
        receipt.add_batch(0, None, flux=status.worst_flux or FluxClass.UNKNOWN, in_saa=status.in_saa,
                          lat_deg=self.radiation.lat_deg)
        return receipt.receipt()

    def _finish(self, job: Job, state: JobState, detail: str) -> None:
        job.state, job.detail = state, detail[:200]
        self._training.pop(job.job_id, None)
        self._export_retry_at.pop(job.job_id, None)
        self._refusal_event_at.pop(job.job_id, None)
        self._cursor.pop(job.job_id, None)
        self._inputs.pop(job.job_id, None)
        self._results.pop(job.job_id, None)
        self._checks.pop(job.job_id, None)
        self._prune()
        # Over, the list says so first: its checkpoint would only be resumed by mistake. A list not written
        # still says it runs, so the checkpoint stays (found in review: a restart retrained it from step 0),
        # until a list that says it ended is read at a start (_load_jobs).
        if self._save_jobs() and job.kind is JobKind.TRAINING:
            self._remove_checkpoints(lambda job_id: job_id == job.job_id)
        # The files it needed are free now, said before its end is (its event, JOB_CANCEL's reply): found in audit,
        # FILE_DELETE of its data set right after JOB_CANCEL completed was refused BUSY until the next status
        self._send(self.status())
        self._last_status = time.monotonic()
        if state is JobState.DONE:
            self.event("JOB_DONE", job_id=job.job_id, summary=detail)
        else:
            self.event("JOB_FAILED" if state is JobState.FAILED else "JOB_CANCELLED", job_id=job.job_id, reason=detail)

    # --- status ------------------------------------------------------------------------------

    def status(self) -> cp.Status:
        t = self.totals
        # The job of the last slice: a continuous job waiting for files is RUNNING too, while training runs,
        # and a training job another preempted stays RUNNING: job_* and train_* name the one at work.
        last = self.jobs.get(self._last_job_id)
        running = last if last is not None and last.state is JobState.RUNNING else \
            next((j for j in self.jobs.values() if j.state is JobState.RUNNING), None)
        last_training = self.jobs.get(self._last_train_job_id)  # the one the rate is of (_train_rate)
        training = self._training.get(self._last_train_job_id) \
            if last_training is not None and last_training.state is JobState.RUNNING else None
        steps, secs = self._train_rate
        rate = steps / secs if secs > 0 else 0.0
        model = self._state(self._current_model)
        return cp.Status(
            provider=self.provider,
            admission=self.admission,
            jobs_queued=sum(j.state in (JobState.QUEUED, JobState.PAUSED) for j in self.jobs.values()),
            job_id=running.job_id if running else 0,
            job_kind=running.kind if running else JobKind.NONE,
            infer_count=t.count,
            infer_classes=dict(t.classes),
            infer_confidence_mean=t.confidence_sum / t.count if t.count else None,
            infer_busy_s=t.busy_s,
            train_step=training.status.step if training else 0,
            train_loss=training.status.loss if training else None,
            train_accuracy=training.status.accuracy if training else None,
            train_steps_per_s=rate if training else 0.0,
            train_energy_per_step_j=(self.power_w / rate) if training and rate > 0 and self.power_w else None,
            # Summaries (.json) travel with their product; count the products themselves.
            products=self._product_count(),
            model_name=self._current_model if model else "",
            model_version=model.active.version if model else "",
            model_sha256=model.active.sha256 if model else "",
            model_uplinked_by=model.active_provenance.uplinked_by if model else "",
            model_fallback_version=model.fallback.version if model and model.fallback else "",
            model_probation=model.probation if model else False,
            **self._check_status(),
            files_in_use=self._files_in_use(),
        )

    def _check_status(self) -> dict[str, Any]:
        """The weights' and results' part of the status: the current model's session, the worker's counts."""
        current = next((s for k, s in self._sessions.items() if k[0] == self._current_model), None)
        ages = [sc.age_s(self.clock_s()) for _name, sc in self._scrubbers()]
        return {"model_protection": current.protection.value if current is not None else "",
                "scrub_age_s": max(ages) if ages else None,
                "scrub_period_s": self._scrub_period_s() if ages else None,
                "scrub_passes": self.scrub_passes, "scrub_chunks": self.scrub_chunks,
                "scrub_repairs": self.scrub_repairs, "checks_failed": self.checks_failed, "reruns": self.reruns,
                "double_runs": self.double_runs, "results_marked": self.results_marked,
                "train_steps_refused": self.train_steps_refused, "train_restores": self.train_restores,
                "train_saa_checkpoints": self.train_saa_checkpoints,
                "train_checkpoints_refused": self.train_checkpoints_refused,
                "infer_files_rejected": self.infer_files_rejected, "compute_writes_failed": self.compute_writes_failed,
                "compute_state_corrupt": self.compute_state_corrupt}

    def _training_event(self, job_id: int, kind: str, args: dict[str, Any]) -> None:
        """A training job's word (training_job.py): counted, and said as the dictionary's event."""
        if kind == "step_refused":
            self.train_steps_refused += 1
            now = time.monotonic()
            # A bad sample is refused twice an epoch: at most one event each CHECK_EVENT_MIN_S, per job (an audit: one
            # job's events silenced another's), and JOB_DONE counts them all
            if now - self._refusal_event_at.get(job_id, -math.inf) >= CHECK_EVENT_MIN_S:
                self._refusal_event_at[job_id] = now
                self.event("TRAIN_STEP_REFUSED", job_id=job_id, step=args["step"], reason=str(args["reason"])[:200],
                           in_row=args["in_row"])
        elif kind == "restored":
            self.train_restores += 1
            self.event("TRAIN_RESTORED", job_id=job_id, step=args["step"], reason=str(args["reason"])[:200])
        elif kind == "saa_checkpoint":
            self.train_saa_checkpoints += 1
            self.event("TRAIN_SAA_CHECKPOINT", job_id=job_id, step=args["step"], entry_in_s=args["entry_in_s"])
        elif kind == "checkpoint_refused":  # moved aside (where it could be): the job starts from step 0, or fails
            self.train_checkpoints_refused += 1
            self.event("TRAIN_CHECKPOINT_REFUSED", job_id=job_id, reason=str(args["reason"])[:200],
                       outcome=str(args.get("outcome", "moved aside, the job starts from step 0"))[:100])
        elif kind == "checkpoint_failed":  # not written: the file keeps the last checkpoint, the job goes on
            self._write_failed(f"job {job_id}'s checkpoint at step {args['step']}", str(args["reason"]))
        # "paused": the worker says JOB_PAUSED itself.

    def _product_count(self) -> int:
        """Products in products/; 0 while a symbolic link leads it out (nothing is listed through it)."""
        try:
            return sum(1 for p in self._dir("products").iterdir() if p.suffix in (".npz", ".onnx"))
        except (NameRefused, OSError):
            return 0

    # --- loop --------------------------------------------------------------------------------

    def _idle_wait_s(self) -> float:
        """How long to wait on the socket when the last slice did no work."""
        if self.admission is not Admission.NONE and any(j.continuous and j.state in ACTIVE for j in self.jobs.values()):
            return INCOMING_WAIT_S  # waiting for the camera's next file
        return IDLE_WAIT_S

    def run(self, parent_pid: int | None = None) -> None:
        """Work until told to stop, or until the agent ``parent_pid`` is no longer the parent."""
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        self.install_shipped_models()
        self._send(cp.Hello(os.getpid()))
        if self.removed_temp_files:
            self.event("TEMP_FILES_REMOVED", count=self.removed_temp_files, where="compute directory")
        if self.removed_store_files:
            self.event("TEMP_FILES_REMOVED", count=self.removed_store_files,
                       where="model store (a version's files no manifest names)")
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        idle_s = 0.0  # with nothing to do: a message ends the wait
        rest_until = 0.0  # the duty cycle's rest: messages are taken during it, work waits for its end

        def going_on() -> bool:  # not told to stop, and the agent still there: the loop ends mid-rest too
            return not self._stop and (parent_pid is None or os.getppid() == parent_pid)

        while going_on():
            handled = 0
            while going_on():
                deferred = bool(self._deferred)  # taken in while work went on (_keepalive): before anything newer
                wait_s = min(max(idle_s, rest_until - time.monotonic(), 0.0), 1.0)  # the parent looked at each s
                if time.monotonic() < rest_until:
                    self._tick_training()  # resting: each time round, at least once a second
                if not deferred and not poller.poll(math.ceil(wait_s * 1000)):
                    if time.monotonic() >= rest_until:
                        break
                    continue
                idle_s = 0.0
                try:
                    self._handle(self._deferred.pop(0) if deferred else cp.decode(self._sock.recv()))
                except ProtocolError as exc:
                    self.event("JOB_FAILED", job_id=0, reason=f"bad message from the agent: {exc}")
                handled += 1
                if handled >= 100 and time.monotonic() >= rest_until:  # a flood of messages: work goes on
                    break
            if not going_on():
                break
            busy = self.work_slice()
            self.totals.busy_s += busy
            now = time.monotonic()
            if now - self._last_status >= STATUS_PERIOD_S:
                self._send(self.status())
                self._last_status = now
            # Duty cycle: rest long enough that busy / (busy + rest) = duty, however many messages come
            # meanwhile (found in review: the agent's Admit and Ping every tick cut each rest short, and a
            # 0.25 duty ran at 0.48); idle when nothing ran.
            rest_until = now + busy * (1.0 - self.duty) / self.duty if busy else 0.0
            idle_s = 0.0 if busy else self._idle_wait_s()
        self._pause_training("worker stopping")
        if self._injector is not None:  # HIL only: the requests taken in are in the ledger before it goes
            self._injector.save()
        self._send(self.status())
        self._sock.close()


def _started(call: Callable[[], T], name: str) -> tuple[threading.Thread, dict[str, Any]]:
    """``call`` begun on a daemon thread of its own; what it returned (``value``) or raised (``error``) in the dict
    once the thread ends (:func:`_ended`), for the worker's thread to keep answering the agent meanwhile."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread, outcome


def _ended(outcome: dict[str, Any]) -> Any:
    """What a call begun by :func:`_started` returned, or raise what it raised."""
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _product_stem(job_id: int, source: str, suffix: str = "") -> str:
    """``jobNNNNN-SOURCE`` (then ``suffix``), within the file rules' 128 characters (with .json): a source
    name too long for it is cut and given 8 hex digits of its SHA-256, so two long names that share their
    start (one continuous job, many files) never give one product name, the second overwriting the first."""
    prefix = f"job{job_id:05d}-"
    room = PRODUCT_NAME_CHARS - len(prefix) - len(".json") - len(suffix)
    if len(source) <= room:
        return prefix + source + suffix
    return f"{prefix}{source[:room - 9]}-{hashlib.sha256(source.encode()).hexdigest()[:8]}{suffix}"


def _file_stamp(path: Path) -> tuple[int, ...] | None:
    """What tells one file under ``path``'s name from another put there since (as :func:`_same_file` judges), or
    None where there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _same_file(path: Path, taken: os.stat_result) -> bool:
    """Whether ``path`` is still the file ``taken`` is the status of (not gone, nor another put under its name)."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    # An inode freed by a delete is handed straight to the next file made (ext4, found in review): the size and
    # the times say whether it is the same file, as the file manager's stamps do.
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns) == \
        (taken.st_dev, taken.st_ino, taken.st_size, taken.st_mtime_ns, taken.st_ctime_ns)


_NOT_PLAIN = re.compile(r"[^A-Za-z0-9_.+-]")


def _plain_name(name: str) -> str:
    """``name`` where the file rules take it (:func:`flight.files.filestore.check_name`: letters, digits and
    _ . + -, beginning with a letter or a digit, at most 128 characters), else a name they take made from it:
    each character they refuse made ``_``, ``x`` before one that does not begin so, cut to fit, and 8 hex
    digits of the SHA-256 of the name as it was, so that two names made alike stay apart.
    Why: an incoming file the camera named with a space, a colon, a newline or bytes not UTF-8 gave products
    (and a file in done/) that could never be sent down, deleted or cleaned (found in audit)."""
    if "/" not in name:
        try:
            return check_name(name, None)
        except NameRefused:
            pass
    stem, suffix = os.path.splitext(name)
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem, suffix = _NOT_PLAIN.sub("_", stem), _NOT_PLAIN.sub("_", suffix)[:16]
    stem = stem if re.match(r"[A-Za-z0-9]", stem) else "x" + stem
    return f"{stem[:PRODUCT_NAME_CHARS - len(suffix) - 9]}-{digest}{suffix}"


def _open_set(path: Path, name: str) -> Any:
    """The .npz archive of data set ``name``; ValueError naming it for anything else (a file cut short, a
    .npy under an .npz name, a pickle): found in audit, a BadZipFile or a TypeError failed TRAIN_START as an
    execution error, not a bad argument."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever numpy makes of a file that is not an archive
        raise ValueError(f"data set {name!r} is unreadable: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"data set {name!r} is one array, not an .npz archive of x (and y for training)")
    return data


def _set_array(data: Any, key: str, name: str) -> np.ndarray:
    """Array ``key`` of data set ``name``'s archive ``data`` (:func:`_open_set`), or ValueError naming both: a
    member that fails its CRC-32 (a bit flipped on the disk), is cut short, holds Python objects, or whose header
    says more data than the archive holds for it. The header is held to the member's size first: numpy makes an
    array as long as a header says before it reads. Found in audit: such sets failed their job with
    "BadZipFile: Bad CRC-32 for file 'x.npy'", or a MemoryError of terabytes, naming no set."""
    try:
        info = data.zip.getinfo(f"{key}.npy")
        with data.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            shape, _fortran, dtype = read[version](f)
            want, have = math.prod(shape) * dtype.itemsize, info.file_size - f.tell()
        if not dtype.hasobject and want > have:
            raise ValueError(f"its header says {want} bytes of data, the archive holds {have}")
        return data[key]
    except Exception as exc:  # noqa: BLE001 - whatever numpy and zipfile make of a member that is not an array
        raise ValueError(f"data set {name!r}: {key} is unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


def _training_set_samples(path: Path, name: str) -> tuple[int, np.ndarray]:
    """The samples of training set ``name`` at ``path`` and its labels (int64), from the arrays' headers and the
    labels (small) alone: the samples themselves (x, or tiles_dn) are not read, as they can be large and this runs
    as TRAIN_START is answered; their values are the job's to check (:func:`_checked_set`). ValueError naming the
    set and what is wrong with its shapes or labels."""
    with _open_set(path, name) as data:
        files = set(data.files)
        key, labels = ("x", "y") if "x" in files else ("tiles_dn", "labels")
        if key not in files or labels not in files:
            raise ValueError(f"data set {name!r} has no labels to train on (needs x and y, or tiles_dn and labels)")
        try:
            with data.zip.open(f"{key}.npy") as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read:
                    raise ValueError(f".npy format version {version}")
                shape, _fortran, dtype = read[version](f)
            y = data[labels]
        except Exception as exc:  # noqa: BLE001 - whatever numpy makes of a member that is not an array
            raise ValueError(f"data set {name!r} is unreadable: {type(exc).__name__}: {str(exc)[:120]}") from None
    if key == "tiles_dn" and dtype.kind not in "biu":  # as the job reads it (:meth:`_load_set`): refused now
        raise ValueError(f"data set {name!r}: tiles_dn must be integer DN (reflectance x "
                         f"{DN_PER_REFLECTANCE:g}), it is {dtype}")
    if dtype.kind not in "biuf" or len(shape) < 2 or shape[0] == 0 or math.prod(shape[1:]) == 0:
        raise ValueError(f"data set {name!r}: {key} must be an array of numbers, one row of at least one value per "
                         f"sample, with at least one (it is {dtype} of shape {list(shape)})")
    _checked_set(name, np.zeros((shape[0], 1), np.float32), y)  # the labels against the samples' count
    return int(shape[0]), y.astype(np.int64)


def _classes_problem(name: str, classes: int, labels: np.ndarray) -> str:
    """Why a training job on data set ``name`` (its ``labels``, checked: whole numbers from 0) cannot have a model
    of ``classes`` outputs (TRAIN_START's; 0: the largest label plus one), or "". A label at or past ``classes``
    is a bad sample the job refuses, never a wider model; but a set with none below it has nothing to train on."""
    largest = int(labels.max())
    if classes == 0 and not 2 <= largest + 1 <= MAX_CLASSES:
        return (f"data set {name!r}: its largest label {largest} makes {largest + 1} classes (classes=0), not 2 to "
                f"{MAX_CLASSES}: give TRAIN_START classes=N, and a sample labelled past it is refused as a bad one")
    if classes and not 2 <= classes <= MAX_CLASSES:
        return f"classes={classes}: a model has 2 to {MAX_CLASSES} classes (0: the data set's largest label plus one)"
    if classes and int(labels.min()) >= classes:
        return (f"classes={classes}: no label of data set {name!r} is below it (the smallest is {int(labels.min())}): "
                "every sample would be refused as a bad one")
    return ""


def _checked_set(name: str, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` as float32 and ``y`` as int64, or ValueError naming the data set and the array: no samples,
    numbers that are not, labels that are not whole numbers from 0, or one per sample (found in audit: a
    y shorter than x failed the job at a random step with an IndexError)."""
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0 or x[0].size == 0:
        raise ValueError(f"data set {name!r}: x must be an array of numbers, one row of at least one value per "
                         f"sample, with at least one (it is {x.dtype} of shape {list(x.shape)})")
    if y is None:
        return x.astype(np.float32), None
    with np.errstate(over="ignore"):  # training only (inference marks a tile that is not a number itself)
        xf = x.astype(np.float32)
    bad = ~np.isfinite(xf.reshape(len(xf), -1)).all(axis=1)
    if bad.any():  # found in audit: each batch holding one was refused as an upset, every epoch, and the job ended DONE
        raise ValueError(f"data set {name!r}: x holds values that are not finite numbers in float32 (NaN, infinite, "
                         f"or past 3.4e38) in {int(bad.sum())} samples, the first [{int(np.flatnonzero(bad)[0])}]")
    if y.dtype.kind not in "biuf" or y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"data set {name!r}: y must hold one label per sample of x ({len(x)}); it is {y.dtype} "
                         f"of shape {list(y.shape)}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"data set {name!r}: y holds labels that are not whole numbers")
    if (y < 0).any():
        raise ValueError(f"data set {name!r}: y holds a negative label ({int(y.min())}); labels count from 0")
    return xf, y.astype(np.int64)


SAME_NAME_MAX = 1000  # names tried with -2, -3...; past them, the input's SHA-256 makes the name


def _free_name(taken: Callable[[str], str | None], name_for: Callable[[str], str], sha256: str) -> str:
    """The first of ``name_for("")``, ``name_for("-2")``... not taken by another input: ``taken(name)`` says
    the SHA-256 of the input behind a name in use ("" unknown), None for a free one. One whose input has
    ``sha256`` is this input's again (screened anew after a restart between its product and its move to
    done/): replaced, as before. Why: a camera that names its files again (scene.npy each pass) had each
    product overwrite the one before, unsaid (found in audit)."""
    for n in range(1, SAME_NAME_MAX + 1):
        name = name_for("" if n == 1 else f"-{n}")
        held = taken(name)
        if held is None or held == sha256:
            return name
    return name_for(f"-{sha256[:12]}")


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _lock(root: Path, wait_s: float) -> DirectoryLock:
    """The compute directory's lock. The worker of an agent that just died may still be
    checkpointing (it was told by PR_SET_PDEATHSIG): wait for it a little, then refuse."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return DirectoryLock(root, ".worker.lock", "compute worker")
        except DirectoryBusy:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.1)  # a process of its own, before its loop: nothing else to wait on here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flight.compute.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", required=True, help="the agent's compute ROUTER endpoint")
    parser.add_argument("--root", required=True, help="compute directory: models, data, products, checkpoints")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="the agent's pid: the worker stops when that process is no longer its parent")
    parser.add_argument("--trusted-keys", default=None,
                        help="the operators' public keys for signed models ([models] trusted_keys)")
    parser.add_argument("--allow-unsigned", action="store_true",
                        help="install a model with no signed manifest on its SHA-256 alone ([models] allow_unsigned)")
    parser.add_argument("--upset-injection", action="store_true",
                        help="HIL only: take the harness's upsets into memory (flight/compute/inject.py)")
    parser.add_argument("--lock-wait-s", type=float, default=LOCK_WAIT_S,
                        help=f"how long to wait for another worker to leave the directory (default {LOCK_WAIT_S:g} s)")
    parser.add_argument("--agent-code", default=None,
                        help="the agent's protocol.CODE_ID: a worker of other code exits (CODE_CHANGED_EXIT)")
    args = parser.parse_args(argv)
    if args.agent_code is not None and args.agent_code != cp.CODE_ID:
        print(f"compute worker: this code ({cp.CODE_ID}) is not the agent's ({args.agent_code}): the software was "
              "updated under the running agent; restart the agent", file=sys.stderr)
        return cp.CODE_CHANGED_EXIT
    # A worker never outlives its agent; the agent may have died before that took.
    if not die_with_parent(args.parent_pid):
        print(f"compute worker: agent {args.parent_pid} is gone; not starting", file=sys.stderr)
        return 1
    try:
        lock = _lock(Path(args.root), args.lock_wait_s)
    except DirectoryBusy as exc:
        print(f"compute worker: {exc}", file=sys.stderr)
        return 3
    try:
        Worker(args.endpoint, Path(args.root), trusted_keys=Path(args.trusted_keys) if args.trusted_keys else None,
               allow_unsigned=args.allow_unsigned, upset_injection=args.upset_injection).run(args.parent_pid)
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
