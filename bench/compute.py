"""On-board compute figures. Prints one JSON object as its last line.

Inference: the shipped cloud-screening model, CPU provider, batch ``BATCH``, ``THREADS``
intra-op thread, over ``BENCH_COMPUTE_REPEAT`` (default 100) x the 800 held-out tiles
(80 000 tiles, about 2 s per side on one core). It is measured in ``BENCH_COMPUTE_PAIRS``
pairs (default 10: an even number, so that each side goes first as often; found in audit, 7 split
the orders 4:3). In a pair both sides go over the same tiles (one array in memory, the
job's own read of its input set), interleaved: each slice of the job (one ``work_slice``,
about ``flight.compute.worker.SLICE_S`` of work) alternates with a bare run over the same
tiles, the bare side first in pairs 0, 2, ... and second in pairs 1, 3, ... So a slow spell
of this machine (shared cores here swing by +-20 % for a second or two) lands on both sides
of a pair alike.

- ``infer_bare_per_s``: median over the pairs of the tiles per second of bare
  ``InferenceSession.run`` calls, batch after batch, their outputs dropped.
- ``infer_agent_per_s``: median over the pairs of the tiles per second through the compute
  worker's job path, one INFERENCE job per pair driven by ``Worker.work_slice`` until DONE,
  the worker as it starts (no double runs) with ``abft_checks`` off: the unchecked path. Timed: all that each
  ``work_slice`` call does (the weight-scrub step it starts with, choosing the job, batching,
  the runs, the non-finite check, class and confidence per tile, the receipt's bookkeeping,
  the running totals, events), so also the product written at the end (.npz and .json
  summary, each atomic and fsync'd) and the job-list saves (``jobs.json`` on start and on
  finish, fsync'd). Not timed, as in a worker that has been running: opening the session
  (with the model store's SHA-256 check), done once before the first pair, and reading the
  input set from disk, done once: ``infer_input_load_ms``.
- The bare session copies the worker's session options (``infer_optimization`` is their
  graph optimisation level): see :class:`Bare`.
- ``infer_ratio``: the median of the per-pair ratios job / bare (target >= 0.95);
  ``infer_ratio_min`` and ``infer_ratio_max`` are their extremes, ``infer_pairs`` their count.
  That is one job of 80 000 tiles: each job also costs a fixed time (its product, .npz and .json,
  each written and fsync'd, and the job list saved when it ends), ``infer_job_fixed_ms`` (one
  batch's job less a bare run of that batch, median of 21 interleaved pairs), which smaller jobs
  share among fewer tiles: ``infer_ratio_by_job_tiles``, the same pairing over the first 800 and
  8000 tiles, ``SIZE_PAIRS`` pairs each (found in review: the figure holds only for large jobs).
- ``infer_ratio_checked``: the same with ``abft_checks`` on (the checked path: the model as the
  checksum pass rewrites it, every batch's ``abft_ok`` flags read and put in the receipt), against
  the same bare session on the model as shipped, so it is what the checks cost;
  ``BENCH_COMPUTE_CHECKED_PAIRS`` pairs (default 4; 0 leaves these figures out),
  ``infer_ratio_checked_min``/``_max``.
- ``infer_open_ms`` and ``infer_checked_open_ms``: opening the job's session (the store's SHA-256
  check, the owned weights and their golden copies, onnxruntime's session), unchecked and checked:
  the difference is mostly the checksum pass, run once per model version. Not in the ratios.
- Warm-up is the same on both sides before each pair: ``BENCH_COMPUTE_WARMUP`` batches
  (default 3) of the same tiles, run bare on the bare session and as a small job of that many
  batches (product included) on the worker's; ``infer_warmup_batches`` says how many.
- ``train_step_us``, ``torch_step_us``, ``train_speedup_vs_torch``, ``train_final_accuracy``:
  from bench.train_graph (64-128-10 MLP, batch 64, one thread; see there).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.train_graph import figures as training_figures
from flight.compute.protocol import JobSpec
from flight.compute.providers import DISABLE_PREPACKING, open_session
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_held_out
from flight.compute.worker import Job, JobState, Worker
from flight.link.definitions import Admission, JobKind

BATCH = 64
THREADS = 1
REPEAT = int(os.environ.get("BENCH_COMPUTE_REPEAT", "100"))  # 800 tiles x 100 = 80 000 tiles per measurement
PAIRS = max(1, int(os.environ.get("BENCH_COMPUTE_PAIRS", "10")))
CHECKED_PAIRS = max(0, int(os.environ.get("BENCH_COMPUTE_CHECKED_PAIRS", "4")))
WARMUP_BATCHES = max(1, int(os.environ.get("BENCH_COMPUTE_WARMUP", "3")))
INPUT_SET = "bench_tiles"
JOB_SIZES = (800, 8000)  # smaller jobs: their fixed cost is shared among fewer tiles (infer_ratio_by_job_tiles)
SIZE_PAIRS = 6  # even, as PAIRS: each side first as often (found in audit: 5 split the orders 3:2)


def _settings(session: Any) -> tuple:
    """What a session's speed depends on besides the model: level, threads, mode, providers."""
    o = session.get_session_options()
    return (o.graph_optimization_level.name, o.intra_op_num_threads, o.inter_op_num_threads, o.execution_mode.name,
            tuple(session.get_providers()))


def _tiles() -> np.ndarray:
    return np.concatenate([load_held_out().tiles.astype(np.float32)] * REPEAT)


class Bare:
    """A bare onnxruntime session on the shipped model (the file's bytes, no worker around it),
    with the session options of ``like`` (the worker's session): threads, execution mode,
    graph optimisation level and whether weights are pre-packed. The level alone matters: on a
    2-core x86 VM ORT_ENABLE_ALL (NCHWc layout) ran this model 1.14x to 1.35x slower than the worker's
    ORT_ENABLE_EXTENDED, so bare and job share it for the ratio to be the job path's alone."""

    def __init__(self, like: Any) -> None:
        worker_options = like.get_session_options()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = worker_options.intra_op_num_threads
        options.inter_op_num_threads = worker_options.inter_op_num_threads
        options.execution_mode = worker_options.execution_mode
        options.graph_optimization_level = worker_options.graph_optimization_level
        for key in (DISABLE_PREPACKING,):
            try:
                options.add_session_config_entry(key, worker_options.get_session_config_entry(key))
            except RuntimeError:  # not set on the worker's session: onnxruntime's default
                pass
        self.optimization = options.graph_optimization_level.name
        # The worker's provider too (a review: with no list, a GPU build could open the bare side on TensorRT)
        self.session = open_session((MODELS_DIR / MODEL_FILE).read_bytes(), list(like.get_providers()),
                                    options=options).session
        self.input_name = self.session.get_inputs()[0].name
        self.like = _settings(like)

    def matches(self, other: Any) -> None:
        """Refuse to compare with a session whose options this one does not share: the ratio would hold the
        difference (a review: the checked worker's session was taken to match the unchecked one's)."""
        if _settings(other) != self.like:
            raise RuntimeError(f"the job's session {_settings(other)} is not the bare one's {self.like}")

    def run(self, tiles: np.ndarray) -> float:
        """Seconds for ``tiles`` in batches of ``BATCH``, outputs dropped."""
        run, name = self.session.run, self.input_name
        t0 = time.perf_counter()
        for start in range(0, len(tiles), BATCH):
            run(["probabilities"], {name: tiles[start : start + BATCH]})
        return time.perf_counter() - t0


class JobPath:
    """A compute worker with the shipped model installed and its session open (SHA-256 checked),
    whose socket leads nowhere (its messages are dropped); one inference job per measurement.
    ``abft_checks``: the worker's parameter of that name (what the agent would send)."""

    def __init__(self, root: Path, tiles: np.ndarray, abft_checks: bool = False, same_data: Path | None = None) -> None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        if same_data is None:
            np.savez(root / "data" / f"{INPUT_SET}.npz", x=tiles)
        else:  # another JobPath's input set (a hard link: 330 MB not written twice)
            os.link(same_data / "data" / f"{INPUT_SET}.npz", root / "data" / f"{INPUT_SET}.npz")
        # Nothing listens on the socket: the worker's messages (events, status) go nowhere.
        worker = self.worker = Worker("ipc://" + str(root / "unused.sock"), root)
        worker.install_shipped_models()
        worker.admission, worker.threads, worker.batch, worker.duty = Admission.ALL, THREADS, BATCH, 1.0
        worker.abft_checks = abft_checks  # set here either way: the figure must not follow the worker's default
        # Open (and verify) the session before timing, as a running worker has; the bare side copies its options.
        t_open = time.perf_counter()
        model = worker._session(MODEL_NAME)  # noqa: SLF001
        self.open_ms = (time.perf_counter() - t_open) * 1000.0
        assert (model.check_output is not None) == abft_checks, model.protection
        self.session = model.session
        t_load = time.perf_counter()
        # The job's own read of its input set; the same array where it is the other JobPath's set.
        self.tiles = worker._input_set(INPUT_SET) if same_data is None else tiles  # noqa: SLF001
        self.load_ms = (time.perf_counter() - t_load) * 1000.0
        self._next_id = 1

    def start(self, tiles: np.ndarray) -> Job:
        """A new job over ``tiles``, handed to it in memory (its read from disk is timed apart)."""
        job_id = self._next_id
        self._next_id += 1
        job = self.worker.jobs[job_id] = Job(JobSpec(job_id, JobKind.INFERENCE, INPUT_SET, model=MODEL_NAME))
        self.worker._inputs[job_id] = tiles  # noqa: SLF001
        return job

    def slice(self) -> float:
        """Seconds for one ``work_slice`` (the job's last one writes its product and finishes it)."""
        t0 = time.perf_counter()
        self.worker.work_slice()
        return time.perf_counter() - t0

    def run(self, tiles: np.ndarray) -> float:
        """Seconds for a whole job over ``tiles``, slice after slice."""
        job, elapsed = self.start(tiles), 0.0
        while not _ended(job):
            elapsed += self.slice()
        _check(job)
        return elapsed

    def close(self) -> None:
        self.worker._sock.close(0)  # noqa: SLF001


def _ended(job: Job) -> bool:
    return job.state in (JobState.DONE, JobState.FAILED)


def _check(job: Job) -> None:
    assert job.state is JobState.DONE, job.detail


def pair(bare: Bare, agent: JobPath, tiles: np.ndarray, bare_first: bool) -> tuple[float, float]:
    """(bare seconds, job seconds) over the same ``tiles``, interleaved: each of the job's slices
    (about ``SLICE_S`` of work) alternates with a bare run over the same number of tiles, the side
    that goes first fixed by ``bare_first``; both start warmed up alike."""
    bare.run(tiles[: WARMUP_BATCHES * BATCH])
    agent.run(tiles[: WARMUP_BATCHES * BATCH])
    job = agent.start(tiles)
    bare_s = job_s = 0.0
    done = 0  # tiles the bare side has done
    chunk = 32 * BATCH  # until the job's first slice says how many tiles a slice takes
    while not _ended(job) or done < len(tiles):
        if bare_first and done < len(tiles):
            bare_s += bare.run(tiles[done : done + chunk])
            done = min(len(tiles), done + chunk)
        if not _ended(job):
            before = job.progress
            job_s += agent.slice()
            chunk = max(BATCH, job.progress - before) if not _ended(job) else chunk
        if not bare_first and done < len(tiles):
            target = len(tiles) if _ended(job) else job.progress  # the tiles the job just did
            bare_s += bare.run(tiles[done:target])
            done = target
    _check(job)
    return bare_s, job_s


def _pairs(bare: Bare, agent: JobPath, tiles: np.ndarray, n: int) -> tuple[list[float], list[float], list[float]]:
    """(job tiles/s, bare tiles/s, job/bare ratio) of ``n`` pairs, which side goes first alternating."""
    agent_rates, bare_rates, ratios = [], [], []
    for i in range(n):
        bare_s, job_s = pair(bare, agent, tiles, bare_first=i % 2 == 0)
        agent_rates.append(len(tiles) / job_s)
        bare_rates.append(len(tiles) / bare_s)
        ratios.append(bare_s / job_s)
    return agent_rates, bare_rates, ratios


def _fixed_ms(bare: Bare, agent: JobPath, tiles: np.ndarray, n: int = 21) -> float:
    """What a job costs beyond its runs: the median over ``n`` interleaved pairs of a one-batch job's
    time less a bare run of that batch (its product written, the job list saved, its events)."""
    gaps = []
    for i in range(n):
        if i % 2:
            gaps.append(agent.run(tiles) - bare.run(tiles))
        else:
            b = bare.run(tiles)
            gaps.append(agent.run(tiles) - b)
    return statistics.median(gaps) * 1000.0


def inference_figures() -> dict[str, object]:
    checked: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        agent = JobPath(Path(tmp) / "worker", _tiles())
        try:
            tiles = agent.tiles  # one array for both sides: the tiles as the job read them
            bare = Bare(like=agent.session)
            agent_rates, bare_rates, ratios = _pairs(bare, agent, tiles, PAIRS)
            by_size = {str(n): round(statistics.median(_pairs(bare, agent, tiles[:n], SIZE_PAIRS)[2]), 3)
                       for n in JOB_SIZES}
            fixed_ms = _fixed_ms(bare, agent, tiles[:BATCH])
        finally:
            agent.close()
        load_ms, open_ms = agent.load_ms, agent.open_ms
        if CHECKED_PAIRS:
            # Its own worker and directory (the first one's session, products and jobs left alone);
            # its session's options are the unchecked one's, so the same bare session is the reference.
            agent = JobPath(Path(tmp) / "worker_checked", tiles, abft_checks=True, same_data=Path(tmp) / "worker")
            try:
                bare.matches(agent.session)
                _, _, checked_ratios = _pairs(bare, agent, tiles, CHECKED_PAIRS)
                checked = {"infer_ratio_checked": round(statistics.median(checked_ratios), 3),
                           "infer_ratio_checked_min": round(min(checked_ratios), 3),
                           "infer_ratio_checked_max": round(max(checked_ratios), 3),
                           "infer_checked_pairs": CHECKED_PAIRS,
                           "infer_checked_open_ms": round(agent.open_ms, 1)}
            finally:
                agent.close()
    return {
        "infer_agent_per_s": round(statistics.median(agent_rates)),
        "infer_bare_per_s": round(statistics.median(bare_rates)),
        "infer_ratio": round(statistics.median(ratios), 3),
        "infer_ratio_min": round(min(ratios), 3),
        "infer_ratio_max": round(max(ratios), 3),
        "infer_pairs": PAIRS,
        "infer_ratio_by_job_tiles": by_size,
        "infer_job_fixed_ms": round(fixed_ms, 2),
        "infer_warmup_batches": WARMUP_BATCHES,
        "infer_optimization": bare.optimization,
        "infer_batch": BATCH,
        "infer_threads": THREADS,
        "infer_tiles": len(tiles),
        "infer_input_load_ms": round(load_ms, 1),
        "infer_open_ms": round(open_ms, 1),
        **checked,
    }


def main() -> int:
    out = inference_figures()
    train = training_figures()
    for key in ("train_step_us", "torch_step_us", "train_speedup_vs_torch", "train_final_accuracy"):
        out[key] = train[key]
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
