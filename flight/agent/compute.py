"""The compute supervisor: the agent's side of the compute worker.

It starts the worker (flight/compute/worker.py, a process of its own so a hung ONNX Runtime
session cannot stall control), feeds it the power manager's admission every control tick,
watches it, restarts it, and owns the compute commands. Messages are the typed records of
:mod:`flight.compute.protocol`.

- **Watchdog on the agent's clock.** Every control tick sends a :class:`Ping`; the worker
  answers between two slices of work. A ping unanswered for ``compute_watchdog_s`` of agent
  time (or a worker that exited) is a hang: ``COMPUTE_HUNG``, a fault, kill, restart; jobs
  resume from their checkpoints. On a board that is real time; under the harness it is
  simulated time, so a hung worker is found within its watchdog period of simulated time. The
  worker answers while a session opens too (a TensorRT engine build), up to ``compute_open_s``,
  sent with each admission; past it the worker exits by itself, a fault as a hang is. One that
  gives an open up on purpose (told to stop, or nothing admitted for a job) exits with
  ``OPEN_ABANDONED_EXIT`` and is started again with no fault (flight/compute/opening.py). One whose
  code is not the agent's (the software updated under it) exits with ``CODE_CHANGED_EXIT``: said
  (``COMPUTE_CODE_CHANGED``), no fault, and none started again until the agent restarts.
- **Lockstep hold.** The worker runs in real time while the harness steps simulated time as
  fast as the agent answers; so under lockstep the agent answers a step only once the worker
  has answered the tick's ping, waiting up to ``compute_watchdog_s`` of wall time (at most
  :data:`MAX_HOLD_S`; :data:`STARTUP_HOLD_S` while it starts). A worker is thus given the
  same wall time to answer as on a board, however fast simulated time runs; one that has not
  answered by then is judged by the watchdog, in simulated time. This is the one wall-clock
  wait in the supervisor, and it stays below the harness's step timeout.
- **Commands complete when the worker has done it.** ``INFER_START``, ``TRAIN_START``,
  ``MODEL_INSTALL``, ``MODEL_ROLLBACK`` and ``JOB_CANCEL`` go to the worker as requests; the
  command completes (or fails with the worker's reason: no such input set, model, job or file;
  a full queue; a package that fails its signature, hash or reference check) when the worker
  replies: ``MODEL_INSTALL`` once the new version is active. A job queued but not admitted now raises ``JOB_WAITING`` with the
  reason and what to do about it.
- **The environment, as the agent predicts it.** Each admission carries the radiation estimate
  from the agent's own orbit (:func:`radiation_estimate`: the TLE propagated to now, the SAA
  ellipse model of flight/orbit/saa.py and the latitude; UNKNOWN without a TLE), never the
  harness's truth, and the result-check parameters: the worker's weight scrub period and its
  double runs follow them (flight/compute/scrub.py, flight/compute/checks.py).
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import zmq

from flight.agent.dispatcher import CommandFailed, Deferred, Handler, describe_error
from flight.agent.file_args import check_file_arguments
from flight.agent.ports import Component, EventPort, FaultLog
from flight.clock import Clock, backoff_s
from flight.compute import protocol as cp
from flight.compute.arithmetic import worker_environment
from flight.compute.scrub import flux_class
from flight.files.filestore import NameRefused
from flight.link.definitions import COMPUTE_CHANNELS, Admission, ComputeState, JobKind
from flight.link.dictionary import FailureCode
from flight.link.messages import CommandRequest
from flight.orbit import Orbit, PropagationError, geodetic_from_teme, tle_current
from flight.orbit.saa import SaaDrift, saa_ellipse_radius
from flight.records import ProtocolError
from flight.storage import DirectoryLock

WORKER_LOG = "logs/worker.log"  # the worker's stdout and stderr, under the compute directory (sent on command)
WORKER_LOG_MAX_BYTES = 4 * 1024 * 1024  # worker.log past this is rotated, at a start or a minute's look
OUTPUT_PIPE_BYTES = 1024 * 1024  # the worker's output pipe, widened so a slow turn of the loop does not hold it
OUTPUT_PER_TURN = 1024 * 1024  # most of the worker's output written to its log in one turn (the rest: the next)
STOP_DRAIN_S = 0.05  # at a stop, how often the output of a worker still stopping is read
WORKER_LOGS_KEPT = 2  # rotated logs (logs/worker-<seq>-<UTC>.log, each sent once by file_auto_downlink), the newest
LOG_LOOK_S = 60.0  # agent time between looks at a running worker's log size
LOG_LOOK_BYTES = WORKER_LOG_MAX_BYTES // 4  # and output written between two such looks, however soon
MAX_PENDING = 100  # requests held while the worker (re)starts
REQUEST_TIMEOUT_S = 60.0  # agent time a request may wait for the worker's answer
MAX_HOLD_S = 20.0  # lockstep: most wall seconds a step waits for a running worker (the harness gives up at 30)
STARTUP_HOLD_S = 20.0  # lockstep: wall seconds a step waits while the worker starts (imports, model load)
STOP_WAIT_S = 5.0  # a stopping worker checkpoints training first; then it is killed
START_BACKOFF_S = 10.0  # agent time before the second try at a worker that died or hung before its hello;
START_BACKOFF_MAX_S = 600.0  # doubled at each further such start, up to this (a hello resets it)
SHORT_LIFE_S = 60.0  # agent time after its hello within which a worker's death or hang is one more in a row
KILL_WAIT_S = 1.0  # a killed worker is gone in milliseconds; one stuck in a driver call is not waited for
WORKER_MESSAGE_MAX_BYTES = 16 << 20  # ZMQ_MAXMSGSIZE of the agent's socket to its workers
MAX_UNREAPED = 8  # killed workers not gone yet, looked at again (a stuck one goes when its driver call returns)
CLASS_NAMES = {"0": "infer_clear", "1": "infer_cloudy"}  # the shipped cloud-screening model's classes


def _rotation_seq(name: str) -> int:
    """The sequence number of a rotated log's name (``worker-000012-<UTC>.log``); 0 for the older names
    (``worker-<UTC>.log``)."""
    parts = name.split("-")
    return int(parts[1]) if len(parts) > 2 and len(parts[1]) == 6 and parts[1].isdigit() else 0


def _plain_names(req: CommandRequest) -> None:
    """Names of input sets, data sets, models and versions are words, never paths (SEC-006):
    refused here, naming the argument, before the worker or the disk sees them."""
    try:
        check_file_arguments(req.command.name, req.args)
    except NameRefused as exc:
        raise CommandFailed(str(exc), FailureCode.BAD_ARGUMENTS) from None


class ComputeSupervisor(Component):
    NAME = "compute supervisor"
    COMMANDS = ("INFER_START", "TRAIN_START", "MODEL_INSTALL", "MODEL_ROLLBACK", "JOB_CANCEL")
    # Its own events, and those of the worker it relays (checked here before they are published).
    EVENTS = ("COMPUTE_HUNG", "COMPUTE_STARTED", "COMPUTE_CODE_CHANGED", "JOB_WAITING",
              "JOB_QUEUED", "JOB_STARTED", "JOB_PAUSED", "JOB_RESUMED", "JOB_DONE", "JOB_FAILED", "JOB_CANCELLED",
              "MODEL_GOLDEN_USED", "MODEL_INSTALLED", "MODEL_REFUSED", "MODEL_REFERENCE_FAILED", "MODEL_ROLLED_BACK",
              "PROVIDER_FALLBACK", "TEMP_FILES_REMOVED", "WEIGHTS_REPAIRED", "SCRUB_BEHIND", "RESULT_CHECK_FAILED",
              "MODEL_UNCHECKED", "MODEL_RANGES_UNCHECKED", "TRAIN_STEP_REFUSED", "TRAIN_RESTORED", "TRAIN_SAA_CHECKPOINT",
              "TRAIN_CHECKPOINT_REFUSED", "INCOMING_REJECTED", "COMPUTE_WRITE_FAILED", "COMPUTE_STATE_CORRUPT",
              "PRODUCT_MARKED", "MODEL_OPEN_UNFINISHED")
    CHANNELS = tuple(c.name for c in COMPUTE_CHANNELS)

    def __init__(self, root: Path, enabled: bool, emit: EventPort, faults: FaultLog, clock: Clock,
                 params: Mapping[str, Any], allocate_job_id: Callable[[], int],
                 internal_error: Callable[[str, BaseException], None], lockstep: bool = False,
                 trusted_keys: Path | None = None, allow_unsigned: bool = False, upset_injection: bool = False,
                 gpu_tf32: bool = False,
                 disk_refusal: Callable[[], str | None] = lambda: None,
                 radiation: Callable[[], cp.Radiation] = lambda: cp.NO_RADIATION):
        """``internal_error(where, exc)``: the executive's, for what the worker sends that it should not.
        ``trusted_keys``, ``allow_unsigned``: the [models] configuration, handed to the worker;
        ``upset_injection``: [compute] upset_injection (HIL only), handed to the worker.
        ``gpu_tf32``: [compute] gpu_tf32; false: the worker starts with TF32 forbidden to NVIDIA's
        libraries (:func:`~flight.compute.arithmetic.worker_environment`), so its checks hold in FP32.
        ``disk_refusal``: why the disk cannot take a new job's products now (the file manager's
        reserve), or None. ``radiation``: the environment the agent predicts now from its own orbit
        (:func:`radiation_estimate` on the controller's orbit and the agent's clock)."""
        self._radiation = radiation
        self.radiation = cp.NO_RADIATION
        self.root = Path(root)
        self.trusted_keys = trusted_keys
        self.allow_unsigned = allow_unsigned
        self.upset_injection = upset_injection
        self.gpu_tf32 = gpu_tf32
        self._disk_refusal = disk_refusal
        self.enabled = enabled
        self.lockstep = lockstep
        self._emit = emit
        self._faults = faults
        self._clock = clock
        self._params = params
        self._allocate_job_id = allocate_job_id
        self._internal_error = internal_error
        self.state = ComputeState.OFF
        self.restarts = 0
        # Starts in a row whose worker died or hung before its hello, and the agent time of the next try (None:
        # none pending): a worker that cannot start (its store's manifest corrupt, a broken install) was started
        # again at each watchdog look, for good, its traceback in the log each time (found in audit)
        self.failed_starts = 0
        self._start_at_s: float | None = None
        # Workers in a row that died or hung within SHORT_LIFE_S of their hello, and the agent time of the last
        # hello (None: none since the last start): one that dies as it resumes its job (killed for memory, a crash
        # in a provider) said hello first, and was started again at each control tick, a fault each (found in audit)
        self.short_lives = 0
        self._hello_at_s: float | None = None
        self.code_changed: str | None = None  # why no worker is started again (CODE_CHANGED_EXIT), once seen
        self.proc: subprocess.Popen | None = None
        self._unreaped: list[subprocess.Popen] = []  # killed, not gone yet (KILL_WAIT_S)
        self._log_looked_s = -math.inf  # agent monotonic s of the last look at the worker's log size
        self._log_unlooked = 0  # bytes of the worker's output written to its log since the last look at its size
        self.status = cp.Status()
        self._status_at_s = (0.0, 0.0)  # (time.monotonic(), the agent's monotonic_s()) when the last Status came
        self._time_began = False  # the agent's clock is told to the worker only from its boot (time_began)
        self.threads = 1
        self.duty = 0.0
        self.admission = Admission.NONE
        self.admission_reason = "no control tick yet"
        self._rate = (0, clock.monotonic_s(), 0.0)  # (count, when, rate) on the agent's clock
        self._seq = itertools.count(1)  # pings
        self._last_ping = 0
        self._req_ids = itertools.count(1)  # requests
        self._have_status = False
        # The files jobs still to run need (Status.files_in_use), as the last worker said: kept through its death and
        # the next one's start (the jobs stay in its list); None until a worker of this run has said (file_in_use)
        self._files_in_use: dict[str, str] | None = None
        # Those of the jobs started since that Status (their start answered: the next Status says them too)
        self._files_started: dict[str, str] = {}
        # The oldest ping not answered yet: (seq, agent time, wall time) when it was sent, or None.
        self._waiting: tuple[int, float, float] | None = None
        self._requests: dict[int, tuple[float, Deferred, Callable[[cp.Reply], dict[str, Any]]]] = {}
        self._timeouts_s: dict[int, float] = {}  # each request's time allowed, for its failure's words
        self._held: list[Any] = []  # requests for a worker not yet connected
        # The job starts sent and not answered: sent again to the next worker where theirs died first (found in
        # audit: a worker that queued a job and died before its answer reached the agent had the command failed,
        # "send the command again", while the next worker ran the job from jobs.json: sent again, it ran twice)
        self._starts: dict[int, cp.StartJob] = {}
        self._resent: set[int] = set()  # of those, the ones a worker took and stopped before it answered
        self._sock: zmq.Socket | None = None
        self._lock: DirectoryLock | None = None
        # The workers' stdout and stderr, one pipe for all of them, read by the loop: the agent alone writes their
        # log, so its rotation is a rename and loses no line (found in audit: copied, then cut, the log lost the
        # lines a worker appended in between)
        self._out_r: int | None = None
        self._out_w: int | None = None
        self._log_fd: int | None = None  # the log as the agent writes it; None: opened again at the next output
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)
            # Before binding: a second agent would take the socket path over from the first.
            self._lock = DirectoryLock(self.root, ".supervisor.lock", "agent (as its compute directory)")
            self.endpoint = f"ipc://{self.root}/worker.sock"
            self._sock = zmq.Context.instance().socket(zmq.ROUTER)
            self._sock.linger = 0
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A worker's largest message (a Status of 64 jobs) is well under 1 MiB: one past this is dropped by libzmq
            # with its connection, never taken whole (found in audit: a 256 MiB frame was read into the agent)
            self._sock.setsockopt(zmq.MAXMSGSIZE, WORKER_MESSAGE_MAX_BYTES)
            self._sock.bind(self.endpoint)
            self._out_r, self._out_w = os.pipe()  # neither inherited: the worker gets the write end as fd 1 and 2
            os.set_blocking(self._out_r, False)
            try:
                fcntl.fcntl(self._out_w, fcntl.F_SETPIPE_SZ, OUTPUT_PIPE_BYTES)
            except OSError:  # above /proc/sys/fs/pipe-max-size: the kernel's default (64 KiB) serves
                pass

    def pollables(self) -> list[Any]:
        return [self._sock, self._out_r] if self._sock is not None else []

    # --- the process ---------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled:
            return
        # Under logs/, where FILE_DOWNLINK takes it (an audit: at the compute directory's top no command could
        # send it down, and logs/ stayed empty); its rotated copies go by themselves (file_auto_downlink).
        log_path = self.root / WORKER_LOG
        self._take_output(4 * OUTPUT_PIPE_BYTES)  # the last worker's last words, into the log they belong to
        self._close_log()
        try:
            log_path.parent.mkdir(exist_ok=True)
            for old in ("worker.log", "worker.log.1"):  # an older agent's, at the top (or this one's first form)
                for where in (self.root / old, log_path.parent / old):
                    if where.is_file() and where != log_path:
                        self._keep_rotated(where)
        except OSError:
            pass  # none yet, or the disk refuses: appended to as before
        self._rotate_log()
        self._open_log()  # there from the start, for FILE_DOWNLINK, even before the worker says anything
        try:
            # A session of its own: a terminal's Ctrl-C (SIGINT to the agent's process group) is the agent's to act on,
            # which stops its worker as a stop does (found in audit: it reached the worker too, a KeyboardInterrupt
            # with a traceback in its log, its training not checkpointed); its agent's death still ends it (PDEATHSIG)
            self.proc = subprocess.Popen(self._worker_argv(), stdout=self._out_w, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=worker_environment(os.environ, self.gpu_tf32),
                                         start_new_session=True)
        except OSError as exc:
            self._spawn_failed(exc)
            return
        self.state = ComputeState.STARTING
        self._waiting = None
        self._hello_at_s = None

    def _spawn_failed(self, exc: OSError) -> None:
        """No worker process could be made (the interpreter gone: the software replaced under the agent; no memory
        or pids left): a failed start, said (INTERNAL_ERROR, a fault) and in the worker's log, tried again later and
        later as one that died before its hello is. Found in audit: Popen's error went out of start(), so the agent
        did not boot, and, raised at each watchdog look, a COMPUTE_HUNG and a fault every control tick."""
        self._internal_error("compute worker start", exc)
        line = f"agent: the compute worker could not be started: {type(exc).__name__}: {exc}\n".encode()
        if self._log_fd is not None:
            try:
                os.write(self._log_fd, line)
            except OSError:
                pass  # said as INTERNAL_ERROR all the same
        self.proc = None
        self.state = ComputeState.DOWN
        self._waiting = None
        self.failed_starts += 1
        self._start_at_s = self._clock.monotonic_s() + backoff_s(START_BACKOFF_S, START_BACKOFF_MAX_S,
                                                                 self.failed_starts - 1)

    def _worker_argv(self) -> list[str]:
        models = [*(["--trusted-keys", str(Path(self.trusted_keys).resolve())] if self.trusted_keys else []),
                  *(["--allow-unsigned"] if self.allow_unsigned else []),
                  *(["--upset-injection"] if self.upset_injection else [])]
        return [sys.executable, "-m", "flight.compute.worker", "--endpoint", self.endpoint, "--root", str(self.root),
                "--parent-pid", str(os.getpid()), "--agent-code", cp.CODE_ID, *models]

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _rotate_log(self) -> None:
        """Past WORKER_LOG_MAX_BYTES the worker's log becomes ``logs/worker-<seq>-<UTC>.log`` and starts again, the
        newest WORKER_LOGS_KEPT such kept: bounded however long a worker runs (found in review: rotated only at
        a start, a worker running for weeks grew it without end), and each rotated one a new name, which the
        automatic downlink sends once. The worker writes to the agent's pipe, not the file: renamed whole, with
        nothing in flight to lose, and the next line starts the new one."""
        log_path = self.root / WORKER_LOG
        self._log_unlooked = 0
        try:
            if log_path.stat().st_size <= WORKER_LOG_MAX_BYTES:
                return
            reopen = self._log_fd is not None
            self._close_log()
            self._keep_rotated(log_path)
            if reopen:
                self._open_log()
        except OSError:
            pass  # none yet, or the disk refuses: looked at again later

    def _open_log(self) -> None:
        """Open the log to append the worker's output to; at the compute directory's top if logs/ cannot be
        made (a file of that name), and none if the disk refuses both (its output is then lost, not held)."""
        try:
            (self.root / WORKER_LOG).parent.mkdir(exist_ok=True)
        except OSError:
            pass  # said by the open that follows
        for path in (self.root / WORKER_LOG, self.root / "worker.log"):
            try:
                self._log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                return
            except OSError:
                continue

    def _close_log(self) -> None:
        if self._log_fd is not None:
            try:
                os.close(self._log_fd)
            except OSError:
                pass  # a write-back error said at close: what was written is what the disk kept
            self._log_fd = None

    def _take_output(self, limit: int = OUTPUT_PER_TURN) -> None:
        """What the workers wrote (stdout, stderr), into their log: at most ``limit`` bytes, the rest at the next
        turn; a full pipe holds a worker's next write, never the loop."""
        if self._out_r is None:
            return
        taken = 0
        while taken < limit:
            try:
                chunk = os.read(self._out_r, 65536)
            except BlockingIOError:
                return
            if not chunk:  # cannot be while the agent holds the write end; no loop on it if it were
                return
            taken += len(chunk)
            if self._log_fd is None:
                self._open_log()
            try:
                view = memoryview(chunk)
                while view and self._log_fd is not None:
                    view = view[os.write(self._log_fd, view):]
            except OSError:  # the disk is full or failing: this output is lost, the file opened again next time
                self._close_log()
            self._log_unlooked += len(chunk)
            # a worker whose output runs away (found in audit: looked at once a minute, its log grew by the pipe's
            # speed, 30 MiB in 2 s, past 4 MiB); at a line's end, so that no line is split between two files
            if self._log_unlooked >= LOG_LOOK_BYTES and chunk.endswith(b"\n"):
                self._rotate_log()

    def _keep_rotated(self, path: Path) -> None:
        """``path`` renamed ``logs/worker-<sequence>-<UTC of its last line>.log``, then the
        oldest of those past WORKER_LOGS_KEPT removed, oldest by their sequence, not their time: a board
        whose clock went back (a reset to 1970 before time is set) named the newest log as the oldest, and
        it was deleted as it was made (found in audit). Names without a sequence (before it) are older."""
        logs = self.root / WORKER_LOG
        kept = sorted((_rotation_seq(p.name), p.name, p) for p in logs.parent.glob("worker-*.log"))
        seq = (kept[-1][0] if kept else 0) + 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(path.stat().st_mtime))
        target = logs.with_name(f"worker-{seq:06d}-{stamp}.log")
        os.replace(path, target)
        kept.append((seq, target.name, target))
        for _seq, _name, stale in kept[:-WORKER_LOGS_KEPT]:
            stale.unlink(missing_ok=True)

    def _kill(self) -> None:
        """SIGKILL the worker and reap it, waiting at most KILL_WAIT_S: a process in an uninterruptible
        driver call (the hang the watchdog is for) dies only when the call returns, and the loop must not
        wait for it (an audit: an unbounded wait here froze the agent with its worker). One not gone is
        looked at again at each watchdog tick; the next worker waits for the compute directory's lock."""
        self._unreaped = [p for p in self._unreaped if p.poll() is None][-MAX_UNREAPED:]
        if self._alive():
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                self._unreaped.append(self.proc)

    def close(self) -> None:
        """Stop the worker cleanly (it checkpoints training first); kill it if it will not go."""
        if self._alive():
            if not (self.state is ComputeState.RUNNING and self._send(cp.Stop())):
                self.proc.send_signal(signal.SIGTERM)  # not connected yet: the signal says the same
            # Its output read while it stops (found in review: a stopping worker that wrote more than the pipe holds
            # waited on it until killed, its stop work, a training checkpoint among it, unfinished)
            deadline = time.monotonic() + STOP_WAIT_S
            while True:
                try:
                    self.proc.wait(STOP_DRAIN_S)
                    break
                except subprocess.TimeoutExpired:
                    self._take_output()
                    if time.monotonic() >= deadline:
                        self._kill()
                        break
        for _deadline, deferred, _ in self._requests.values():
            deferred.fail("the agent stopped before the compute worker answered")
        self._requests.clear()
        self._take_output(4 * OUTPUT_PIPE_BYTES)  # its last words; bounded, for a killed one not gone yet may write
        self._close_log()
        for fd in (self._out_r, self._out_w):
            if fd is not None:
                os.close(fd)
        self._out_r = self._out_w = None
        if self._sock is not None:
            self._sock.close(0)
        if self._lock is not None:
            self._lock.release()

    # --- from the worker -----------------------------------------------------------------

    def receive(self) -> None:
        self._take_output()
        if self._sock is None:
            return
        for _ in range(1000):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                continue
            try:
                msg = cp.decode(frames[1])
            except ProtocolError as exc:
                self._internal_error("compute message", exc)
                continue
            self._take(msg)

    def _take(self, msg: Any) -> None:
        if isinstance(msg, cp.Hello):
            self.state = ComputeState.RUNNING
            self.failed_starts = 0
            self._hello_at_s = self._clock.monotonic_s()
            self._emit("COMPUTE_STARTED", pid=msg.pid)
            held, self._held = self._held, []
            for request in held:
                self._deliver(request)
            # Pings sent while it started went nowhere: the hello answers them; ask again now.
            self._waiting = None
            self._ping()
        elif isinstance(msg, cp.Pong):
            if msg.seq >= self._last_ping:
                self._waiting = None
            elif self._waiting is not None and msg.seq >= self._waiting[0]:
                # It answered an older ping: alive now; count the rest from this answer.
                self._waiting = (msg.seq + 1, self._clock.monotonic_s(), time.monotonic())
        elif isinstance(msg, cp.Status):
            self.status = msg
            # When it came, on both clocks: the worker's scrub keeps the agent's time where it runs ahead (lockstep)
            self._status_at_s = (time.monotonic(), self._clock.monotonic_s())
            self._have_status = True
            self._files_in_use, self._files_started = dict(msg.files_in_use), {}
            self._update_rate(msg.infer_count)
        elif isinstance(msg, cp.Reply):
            entry = self._requests.pop(msg.req_id, None)
            if entry is not None:
                _deadline, deferred, on_ok = entry
                if msg.ok:
                    try:
                        value = on_ok(msg)
                    except Exception as exc:  # noqa: BLE001 - a reply this agent cannot read: the command ends
                        # failed, said, never left "running" for good (found in review: its entry was gone already)
                        deferred.fail(f"the compute worker's reply could not be read: {describe_error(exc)[:200]}",
                                      FailureCode.EXECUTION_ERROR)
                        self._internal_error("compute reply", exc)
                    else:
                        deferred.complete(value)
                else:
                    deferred.fail(msg.reason, FailureCode(msg.code) if msg.code in FailureCode._value2member_map_
                                  else FailureCode.EXECUTION_ERROR)
        elif isinstance(msg, cp.WorkerEvent):
            try:
                self._emit(msg.name, **msg.args)
            except (KeyError, ValueError, TypeError, RuntimeError) as exc:  # WiringError: not one of ours
                self._internal_error("compute event", exc)
        else:  # one the agent sends (Admit, Stop...): said, as the worker says one of its own (found in audit: dropped)
            self._internal_error("compute message", ProtocolError(f"{type(msg).__name__} is no message a worker sends"))

    def _update_rate(self, count: int) -> None:
        last_count, last_t, rate = self._rate
        now = self._clock.monotonic_s()
        if now > last_t and count >= last_count:
            rate = (count - last_count) / (now - last_t)
        self._rate = (count, now, rate)

    # --- to the worker -------------------------------------------------------------------

    def _send(self, msg: Any) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.send_multipart([b"compute", cp.encode(msg)], zmq.NOBLOCK)
            return True
        except (zmq.Again, zmq.ZMQError):
            return False  # not connected (starting or restarting)

    def admit(self, admission: Admission, mode_index: int, n_modes: int, power_w: float | None, reason: str) -> None:
        """Each control tick: what may run. Threads, batch and duty follow the power mode: the
        lowest mode gets one thread, small batches and a quarter duty; the highest all cores,
        large batches and full duty. Then the heartbeat and the watchdog."""
        self.admission, self.admission_reason = admission, reason
        try:  # also with compute off: flux_class in housekeeping is the agent's estimate all the same
            self.radiation = self._radiation()
        except Exception as exc:  # noqa: BLE001 - no estimate this tick: the worker scrubs as for UNKNOWN
            self._internal_error("radiation estimate", exc)
            self.radiation = cp.NO_RADIATION
        if not self.enabled:
            return
        share = (mode_index + 1) / max(1, n_modes)
        self.threads = max(1, round((os.cpu_count() or 1) * share))
        batch = 16 if share <= 0.34 else (32 if share <= 0.67 else cp.MAX_BATCH)
        self.duty = max(0.25, share) if admission is not Admission.NONE else 0.0
        p = self._params
        self._send(cp.Admit(admission, self.threads, batch, max(self.duty, 0.05), power_w, reason[:200],
                            radiation=self.radiation, double_run_fraction=float(p["double_run_fraction"]),
                            double_run_all_in_saa=bool(p["double_run_all_in_saa"]),
                            scrub_weights=bool(p["weights_scrub"]), abft_checks=bool(p["abft_checks"]),
                            range_checks=bool(p["range_checks"]),
                            clock_s=self._clock.monotonic_s() if self._time_began else None,
                            open_limit_s=float(p["compute_open_s"])))
        self._heartbeat()

    def _heartbeat(self) -> None:
        self._ping()
        self._watchdog()
        self._expire_requests()
        now_s = self._clock.monotonic_s()
        if not 0.0 <= now_s - self._log_looked_s < LOG_LOOK_S:
            self._log_looked_s = now_s
            self._rotate_log()

    def _ping(self) -> None:
        self._last_ping = next(self._seq)
        if self._waiting is None:
            self._waiting = (self._last_ping, self._clock.monotonic_s(), time.monotonic())
        self._send(cp.Ping(self._last_ping))

    def time_began(self) -> None:
        """The agent's clock jumped (lockstep boot): a ping sent before counts from now, and the worker is
        told the clock from now on (before, under the harness, it reads 0: the jump would read as time
        gone by, found in review)."""
        self._time_began = True
        self._status_at_s = (self._status_at_s[0], self._clock.monotonic_s())  # the jump is no age (found in review)
        if self._waiting is not None:
            self._waiting = (self._waiting[0], self._clock.monotonic_s(), time.monotonic())

    def _watchdog(self) -> None:
        if self._unreaped:  # killed workers that were stuck: reaped as they go (poll), never waited for
            self._unreaped = [p for p in self._unreaped if p.poll() is None]
        now = self._clock.monotonic_s()
        # From the oldest unanswered ping: a starting worker's first ping waits for its hello too.
        silent = now - self._waiting[1] if self._waiting is not None else 0.0
        dead = self.proc is not None and self.proc.poll() is not None
        if dead and self.proc.returncode == cp.CODE_CHANGED_EXIT and self.code_changed is None:
            # The software was updated under this agent: a worker of the new code would speak to the old. None is
            # started again until the agent restarts on the new code (no fault: nothing hung).
            self.code_changed = "the compute worker's code is not this agent's: the software was updated under it"
            self._emit("COMPUTE_CODE_CHANGED")
            self._kill()
            self.state = ComputeState.DOWN
            self.status, self._have_status = cp.Status(), False
            for _deadline, deferred, _ in self._requests.values():
                deferred.fail(f"{self.code_changed}; restart the agent")
            self._requests.clear()
            self._held.clear()
            return
        if self.code_changed is not None:
            return
        if self._start_at_s is not None:  # waiting to try again: nothing runs, nothing to watch
            self._waiting = None
            if now >= self._start_at_s:
                self._start_at_s = None
                self.start()
            return
        if self._hello_at_s is not None and now - self._hello_at_s >= SHORT_LIFE_S:
            self.short_lives, self._hello_at_s = 0, None  # it lived: the next death is not one more in a row
        if silent >= self._params["compute_watchdog_s"] or dead:
            starting = self.state is ComputeState.STARTING
            # A worker that gave up a model's open on purpose (nothing admitted: it said MODEL_OPEN_UNFINISHED)
            # exits as nothing else stops onnxruntime's call: started again, no hang and no fault.
            abandoned = dead and self.proc.returncode == cp.OPEN_ABANDONED_EXIT
            if not abandoned:
                self._emit("COMPUTE_HUNG", age_s=silent)
                self._faults.record("compute worker")
            self._kill()
            self.restarts += 1
            self.state = ComputeState.DOWN
            # The dead worker's figures (scrub age, protection, counts) are not the new one's: none until it says.
            self.status, self._have_status = cp.Status(), False
            for req_id, (_deadline, deferred, _) in list(self._requests.items()):
                if req_id in self._starts and req_id not in {r.req_id for r in self._held}:
                    self._held.append(self._starts[req_id])  # the next worker queues it, or has it already
                    self._resent.add(req_id)
                elif req_id not in {r.req_id for r in self._held}:
                    del self._requests[req_id]
                    deferred.fail("the compute worker was restarted before it answered; send the command again")
            if starting:
                self.failed_starts += 1
            elif self._hello_at_s is not None and not abandoned:  # (an open given up on purpose is no failure)
                self.short_lives += 1
            in_row = max(self.failed_starts, self.short_lives)
            if in_row >= 2:  # the first failed start is tried again at once, then later and later
                self._start_at_s = now + backoff_s(START_BACKOFF_S, START_BACKOFF_MAX_S, in_row - 2)
                self._waiting = None
                return
            self.start()

    def hold_s(self) -> float | None:
        """Lockstep: wall seconds to keep waiting for the worker's answer to the latest ping; None: none needed."""
        if not (self.enabled and self.lockstep and self._waiting is not None and self._alive()):
            return None
        limit = (STARTUP_HOLD_S if self.state is ComputeState.STARTING
                 else min(float(self._params["compute_watchdog_s"]), MAX_HOLD_S))
        left = self._waiting[2] + limit - time.monotonic()
        return left if left > 0 else None

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise CommandFailed("compute is off on this agent (lockstep HIL models it, or [compute] enabled = false)",
                                FailureCode.NOT_ALLOWED_IN_MODE)
        if self.code_changed is not None:
            raise CommandFailed(f"{self.code_changed}; restart the agent (systemctl restart sunlit-agent)",
                                FailureCode.NOT_ALLOWED_IN_MODE)

    def _request(self, msg: Any, on_ok: Callable[[cp.Reply], dict[str, Any]],
                 timeout_s: float = REQUEST_TIMEOUT_S) -> Deferred:
        """``timeout_s``: agent time the answer may take (an install opens the model: up to compute_open_s more)."""
        self._require_enabled()
        if self._start_at_s is not None:
            why = (f"the compute worker did not start (it died or hung before its hello, or could not be made), "
                   f"{self.failed_starts} times in a row" if self.failed_starts >= self.short_lives else
                   f"the compute worker died or hung within {SHORT_LIFE_S:.0f} s of its start, {self.short_lives} "
                   f"times in a row")
            raise CommandFailed(f"{why}; next try in {max(0.0, self._start_at_s - self._clock.monotonic_s()):.0f} s "
                                f"({WORKER_LOG} says why)", FailureCode.BUSY)
        if len(self._held) >= MAX_PENDING:
            raise CommandFailed(f"{MAX_PENDING} requests already wait for the compute worker to start; try again",
                                FailureCode.BUSY)
        deferred = Deferred()
        self._requests[msg.req_id] = (self._clock.monotonic_s() + timeout_s, deferred, on_ok)
        self._timeouts_s[msg.req_id] = timeout_s
        self._deliver(msg)
        return deferred

    def _deliver(self, msg: Any) -> None:
        """Send a request now, or hold it until the worker says hello."""
        if not (self.state is ComputeState.RUNNING and self._send(msg)):
            self._held.append(msg)

    def _expire_requests(self) -> None:
        now = self._clock.monotonic_s()
        for req_id, (deadline, deferred, _) in list(self._requests.items()):
            if now >= deadline:
                del self._requests[req_id]
                self._held = [r for r in self._held if r.req_id != req_id]
                # A start a stopped worker took may be in its jobs.json, run by the next (found in review: the
                # failure read as "not done", and sent again the job ran twice)
                taken = (f"; job {self._starts[req_id].job.job_id} may be queued yet (a worker took it, then "
                         f"stopped): JOB_QUEUED or JOB_CANCEL says, before it is sent again"
                         if req_id in self._resent and req_id in self._starts else "")
                deferred.fail(f"the compute worker did not answer within "
                              f"{self._timeouts_s.get(req_id, REQUEST_TIMEOUT_S):.0f} s (worker {self.state.value})"
                              f"{taken}", FailureCode.BUSY)
        self._timeouts_s = {k: v for k, v in self._timeouts_s.items() if k in self._requests}
        self._starts = {k: v for k, v in self._starts.items() if k in self._requests}
        self._resent &= self._requests.keys()

    def file_in_use(self, name: str) -> str | None:
        """Whose ``name`` (a file-area name: ``checkpoints/job00003.ck``) is, where a job still to run needs it,
        else None: the file manager's FILE_DELETE refuses such a file (BUSY). As the worker last said (each
        second), and those of the jobs started since (their start answered); before any worker of this run has said,
        a checkpoint is taken for one (at a start the worker deletes those of jobs no longer to run), a data set for
        none (the disk may need it freed, a worker not starting)."""
        if not self.enabled:
            return None
        if name in self._files_started:
            return self._files_started[name]
        if self._files_in_use is None:
            if name.startswith("checkpoints/"):
                return ("perhaps the checkpoint of a job still to run: the compute worker has not said yet "
                        f"({self.state.value})")
            return None
        return self._files_in_use.get(name)

    # --- commands ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"INFER_START": Handler(self._infer_start), "TRAIN_START": Handler(self._train_start),
                "MODEL_INSTALL": Handler(self._model_install), "MODEL_ROLLBACK": Handler(self._model_rollback),
                "JOB_CANCEL": Handler(self._job_cancel)}

    def _new_job(self, spec_args: dict[str, Any], kind: JobKind, name: str) -> Deferred:
        self._require_enabled()
        full = self._disk_refusal()
        if full is not None:  # refused here, with the reason, rather than failing on a write later
            raise CommandFailed(full, FailureCode.BUSY)
        job_id = self._allocate_job_id()
        job = cp.JobSpec(job_id=job_id, kind=kind, name=name, **spec_args)

        def queued(reply: cp.Reply) -> dict[str, Any]:
            for file, whose in cp.files_needed(job, "queued").items():  # at once, not at the next Status (a review)
                self._files_started.setdefault(file, whose)
            waits = self._waits(kind)
            if waits:
                self._emit("JOB_WAITING", job_id=job_id, reason=waits)
            return {"job_id": job_id, "kind": kind.value, "queued": reply.result.get("queued"),
                    "runs_now": not waits, **({"waits_for": waits[:200]} if waits else {})}

        start = cp.StartJob(next(self._req_ids), job)
        deferred = self._request(start, queued)
        self._starts[start.req_id] = start
        return deferred

    def _waits(self, kind: JobKind) -> str:
        """Why a job of ``kind`` would not run now, with what to do; "" if it runs."""
        if self.admission is Admission.ALL or (self.admission is Admission.INFERENCE and kind is JobKind.INFERENCE):
            return ""
        if self.admission is Admission.INFERENCE:
            return f"training is not admitted now: {self.admission_reason}"
        return self.admission_reason

    def _infer_start(self, req: CommandRequest) -> Deferred:
        a = req.args
        _plain_names(req)
        return self._new_job({"model": a["model"], "priority": a["priority"], "continuous": a["continuous"]},
                             JobKind.INFERENCE, a["input_set"])

    def _train_start(self, req: CommandRequest) -> Deferred:
        a = req.args
        _plain_names(req)
        return self._new_job({"steps": a["steps"], "batch_size": a["batch_size"],
                              "checkpoint_every": a["checkpoint_every"], "lr": a["lr"], "classes": a["classes"],
                              "priority": 9},
                             JobKind.TRAINING, a["dataset"])

    def _model_install(self, req: CommandRequest) -> Deferred:
        a = req.args
        if len(a["sha256"]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in a["sha256"]):
            raise CommandFailed("sha256 must be 64 hex digits", FailureCode.BAD_ARGUMENTS)
        _plain_names(req)
        # The worker opens the model to check it against its reference set (a TensorRT engine's build on a board:
        # minutes): the answer may take compute_open_s more (found in audit: failed at 60 s, then installed)
        return self._request(cp.InstallModel(next(self._req_ids), a["name"], a["version"], a["sha256"].lower(), a["golden"]),
                             lambda reply: {"name": a["name"], **reply.result},
                             REQUEST_TIMEOUT_S + float(self._params["compute_open_s"]))

    def _model_rollback(self, req: CommandRequest) -> Deferred:
        name = req.args["name"]
        _plain_names(req)
        return self._request(cp.RollbackModel(next(self._req_ids), name), lambda reply: {"name": name, **reply.result})

    def _job_cancel(self, req: CommandRequest) -> Deferred:
        job_id = req.args["job_id"]
        return self._request(cp.CancelJob(next(self._req_ids), job_id), lambda reply: {"job_id": job_id, **reply.result})

    # --- housekeeping --------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        st = self.status
        have = self._have_status
        out: dict[str, Any] = {
            "compute_state": self.state.value,
            "compute_provider": st.provider or None,
            "compute_restarts": self.restarts,
            "compute_pid": self.proc.pid if self._alive() else 0,
            "compute_threads": self.threads,
            "compute_duty": self.duty,
            "infer_rate_per_s": self._rate[2],
            "jobs_queued": st.jobs_queued if have else None,
            "job_id": st.job_id if have else None,
            "job_kind": st.job_kind.value if have else None,
            "infer_count": st.infer_count if have else None,
            "infer_confidence_mean": st.infer_confidence_mean,
            "train_step": st.train_step if have else None,
            "train_loss": st.train_loss,
            "train_accuracy": st.train_accuracy,
            "train_steps_per_s": st.train_steps_per_s if have else None,
            "train_energy_per_step_j": st.train_energy_per_step_j,
            "products": st.products if have else None,
            "model_name": st.model_name or None,
            "model_version": st.model_version or None,
            "model_sha256": st.model_sha256 or None,
            "model_uplinked_by": st.model_uplinked_by or None,
            "model_fallback_version": st.model_fallback_version if have and st.model_name else None,
            "model_probation": st.model_probation if have and st.model_name else None,
            "model_protection": st.model_protection or None,
            "flux_class": self.radiation.flux_class.value,
            # aged since the Status came (found in review: a silent worker's stayed fresh), as the worker counts
            # it: the agent's time where it runs ahead of the wall clock (lockstep), else the wall clock's
            "scrub_age_s": st.scrub_age_s + max(time.monotonic() - self._status_at_s[0],
                                                self._clock.monotonic_s() - self._status_at_s[1])
            if have and st.scrub_age_s is not None else None,
            "scrub_period_s": st.scrub_period_s,
            "scrub_passes": st.scrub_passes if have else None,
            "scrub_chunks": st.scrub_chunks if have else None,
            "scrub_repairs": st.scrub_repairs if have else None,
            "checks_failed": st.checks_failed if have else None,
            "reruns": st.reruns if have else None,
            "double_runs": st.double_runs if have else None,
            "results_marked": st.results_marked if have else None,
            "train_steps_refused": st.train_steps_refused if have else None,
            "train_restores": st.train_restores if have else None,
            "train_saa_checkpoints": st.train_saa_checkpoints if have else None,
            "train_checkpoints_refused": st.train_checkpoints_refused if have else None,
            "infer_files_rejected": st.infer_files_rejected if have else None,
            "compute_writes_failed": st.compute_writes_failed if have else None,
            "compute_state_corrupt": st.compute_state_corrupt if have else None,
        }
        for cls, channel in CLASS_NAMES.items():
            out[channel] = st.infer_classes.get(cls, 0) if have else None
        return out


SAA_LOOKAHEAD_S = 900.0
"""How far ahead radiation_estimate looks for the next SAA entry: 15 min, far more than a training
job's checkpoint lead (flight/compute/training_job.py: SAA_CHECKPOINT_LEAD_S, 30 s) and less than
the shortest time from one pass's exit to the next entry (an orbit minus the pass, ~70 min)."""
SAA_LOOKAHEAD_STEP_S = 30.0
"""Sampling step of the look-ahead, flight/orbit/predict.py's: the track moves ~2 deg in it, against
semi-axes of 21 x 53 deg at 400 km (7 x 25 at 200 km, the smallest: flight/orbit/saa.py). The crossing, and any dip of the radius between samples, is then looked
at again second by second (:data:`SAA_GRAZE_RHO`)."""

SAA_GRAZE_RHO = 1.3
"""A sampled ellipse radius at a local minimum below this may hide a pass that clips the ellipse's
edge between two samples (found in audit: a 24 s pass was missed on one tick in five, and a crossing
placed by a straight line between samples 30 s apart was up to 11 s late): the two steps around it
are sampled again every second."""


def radiation_estimate(orbit: Orbit | None, now_unix_s: float, saa_drift: SaaDrift) -> cp.Radiation:
    """The environment at ``now_unix_s`` as the agent predicts it from ``orbit`` (its TLE): inside the
    SAA ellipse model (moved by ``saa_drift``, the operators' estimate: no default, so that no caller
    falls back on the build's unseen) or not, the geodetic latitude,
    the class the worker's checks follow (:func:`flight.compute.scrub.flux_class`), the orbital period,
    and the time to the next SAA entry. UNKNOWN without an orbit, where sgp4 cannot propagate it (a
    decayed TLE), or where the clock is outside the TLE's validity (:func:`flight.orbit.tle_current`);
    the orbital period is kept there.

    The entry: one sgp4 call over now and the next :data:`SAA_LOOKAHEAD_S` every
    :data:`SAA_LOOKAHEAD_STEP_S`; then, in time order, each step around a dip of the ellipse radius
    (:func:`flight.orbit.saa.saa_ellipse_radius`, 1 on the edge) below :data:`SAA_GRAZE_RHO` and the
    step before the first sample inside, sampled again every second (one sgp4 call each), the first
    crossing found placed by linear interpolation of the radius between the two seconds around it.
    0.0 while inside; None when no entry is in the look-ahead, or the look-ahead cannot be propagated
    (the TLE decays within it). Against a 1 s scan of ``in_saa`` over the same TLE it is within the
    scan's own second (tests/test_training_radiation.py), grazing passes of a few seconds included.
    Cost: a few tenths of a millisecond a call on a shared 2-core x86 (numpy's per-call overhead, not
    the samples), a few times that on a Jetson's CPU, well under 0.1 % of its 1 s control tick, so it
    is not cached."""
    if orbit is None:
        return cp.NO_RADIATION
    now_unix_s = float(now_unix_s)
    if not tle_current(orbit.epoch_unix_s, now_unix_s):
        period_s = float(orbit.period_s)
        return dataclasses.replace(cp.NO_RADIATION, orbit_period_s=period_s if math.isfinite(period_s) else None)
    n = round(SAA_LOOKAHEAD_S / SAA_LOOKAHEAD_STEP_S)
    t = now_unix_s + SAA_LOOKAHEAD_STEP_S * np.arange(n + 1, dtype=float)
    try:
        r_teme_km, _ = orbit.propagate(t)
    except PropagationError:
        t = t[:1]  # the look-ahead reaches past the decay: now alone, no entry
        try:
            r_teme_km, _ = orbit.propagate(t)
        except PropagationError:
            return cp.NO_RADIATION
    lat_deg, lon_deg, alt_km = geodetic_from_teme(r_teme_km, t)
    lat = float(np.asarray(lat_deg).reshape(-1)[0])
    rho = np.asarray(saa_ellipse_radius(lat_deg, lon_deg, alt_km, t, saa_drift)).reshape(-1)
    inside_at = rho < 1.0  # in_saa's own test, on the radius already at hand (in_saa would compute it again)
    inside = bool(inside_at[0])
    entry_s = _saa_entry_in_s(orbit, t, rho, inside_at, saa_drift) if len(t) > 1 else None
    return cp.Radiation(flux_class(inside, lat), inside, round(lat, 3), float(orbit.period_s), entry_s,
                        now_unix_s + entry_s if entry_s is not None and not inside else None)


def _saa_entry_in_s(orbit: Orbit, t: np.ndarray, rho: np.ndarray, inside_at: np.ndarray,
                    saa_drift: SaaDrift) -> float | None:
    """Seconds from the first sample (``t[0]``) to the first entry, from the samples' ellipse radius and
    in_saa, each step where it may lie sampled again every second (:func:`radiation_estimate`)."""
    if inside_at[0]:
        return 0.0
    after = np.flatnonzero(inside_at)
    n = len(rho)
    first = int(after[0]) if after.size else n
    # A dip at the first or the last sample too (found in review: a pass clipping the edge just after
    # the first sample, or just past the last, was missed): its one neighbour with it.
    dips = [i for i in range(min(first, n)) if rho[i] < SAA_GRAZE_RHO
            and (i == 0 or rho[i] <= rho[i - 1]) and (i == n - 1 or rho[i] <= rho[i + 1])]
    windows = [(max(0, i - 1), min(n - 1, i + 1)) for i in dips]
    if after.size:
        windows.append((first - 1, first))
    for a, b in windows:
        fine_t = float(t[a]) + np.arange(0.0, float(t[b] - t[a]) + 0.5, 1.0)
        try:
            r_teme_km, _ = orbit.propagate(fine_t)
        except PropagationError:
            fine_rho = rho[[a, b]]
            fine_t = t[[a, b]]
        else:
            fine_rho = np.asarray(saa_ellipse_radius(*geodetic_from_teme(r_teme_km, fine_t), fine_t,
                                                     saa_drift)).reshape(-1)
        inside = np.flatnonzero(fine_rho < 1.0)
        if (inside.size == 0 or inside[0] == 0) and b == first:  # the sample inside, in float noise on the edge
            fine_rho, fine_t, inside = rho[[a, b]], t[[a, b]], np.array([1])
        if inside.size == 0 or inside[0] == 0:
            continue  # a dip that stays outside (or, never, one that starts inside)
        k = int(inside[0])
        before, at = float(fine_rho[k - 1]), float(fine_rho[k])
        frac = (before - 1.0) / (before - at) if math.isfinite(before) and before > at else 1.0
        entry = float(fine_t[k - 1]) + (float(fine_t[k]) - float(fine_t[k - 1])) * min(1.0, max(0.0, frac))
        return round(entry - float(t[0]), 1)
    return None
