"""On-board compute figures. Prints one JSON object as its last line.

- ``infer_agent_per_s``: tiles per second through the compute worker's job path (an
  INFER_START job on the shipped cloud-screening model: session from the model store with
  its SHA-256 check, batching, per-tile results, product written), in this process.
- ``infer_bare_per_s``: tiles per second from a bare ``InferenceSession.run`` loop on the
  same model, same batch and threads, same input, same run.
- ``infer_ratio``: the first over the second (target >= 0.95). Both get the tiles in memory;
  the job's read of its input set from disk is ``infer_input_load_ms``, apart. The job path's
  time includes writing its product (atomic, fsync'd) and its job-list updates.
- ``train_step_us``, ``torch_step_us``, ``train_speedup_vs_torch``, ``train_final_accuracy``:
  from bench.train_graph (64-128-10 MLP, batch 64, one thread; see there).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.train_graph import figures as training_figures
from flight.compute.providers import open_session
from flight.compute.usecase.shipped import MODELS_DIR, MODEL_FILE, load_held_out
from flight.compute.protocol import JobSpec
from flight.compute.worker import Job, JobState, Worker
from flight.link.definitions import Admission, JobKind

BATCH = 64
THREADS = 1
REPEAT = int(os.environ.get("BENCH_COMPUTE_REPEAT", "100"))  # 800 tiles x 100 = 80 000 tiles per measurement
LOAD_MS: list[float] = []


def _tiles() -> np.ndarray:
    return np.concatenate([load_held_out().tiles.astype(np.float32)] * REPEAT)


def infer_bare(tiles: np.ndarray) -> float:
    session = open_session((MODELS_DIR / MODEL_FILE).read_bytes(), threads=THREADS).session
    name = session.get_inputs()[0].name
    session.run(["probabilities"], {name: tiles[:BATCH]})  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(tiles), BATCH):
        session.run(["probabilities"], {name: tiles[start : start + BATCH]})
    return len(tiles) / (time.perf_counter() - t0)


def infer_agent(tiles: np.ndarray, root: Path) -> float:
    (root / "data").mkdir(parents=True, exist_ok=True)
    np.savez(root / "data" / "bench_tiles.npz", x=tiles)
    worker = Worker("ipc://" + str(root / "unused.sock"), root)  # nothing listens: messages go nowhere
    worker.install_shipped_models()
    worker.admission, worker.threads, worker.batch, worker.duty = Admission.ALL, THREADS, BATCH, 1.0
    worker._session("cloud_screen")  # noqa: SLF001 - open (and verify) before timing, as a running worker has
    worker.jobs[1] = Job(JobSpec(1, JobKind.INFERENCE, "bench_tiles"))
    # The bare loop is handed its tiles in memory; so is the job (its read from disk is timed apart).
    t_load = time.perf_counter()
    worker._inputs[1] = worker._input_set("bench_tiles")  # noqa: SLF001
    LOAD_MS.append((time.perf_counter() - t_load) * 1000.0)
    t0 = time.perf_counter()
    while worker.jobs[1].state not in (JobState.DONE, JobState.FAILED):
        worker.work_slice()
    elapsed = time.perf_counter() - t0
    worker._sock.close(0)  # noqa: SLF001
    assert worker.jobs[1].state is JobState.DONE, worker.jobs[1].detail
    return len(tiles) / elapsed


def main() -> int:
    tiles = _tiles()
    with tempfile.TemporaryDirectory() as tmp:
        agent_rates, bare_rates = [], []
        for i in range(3):  # interleaved, best of three each: the same conditions for both
            bare_rates.append(infer_bare(tiles))
            agent_rates.append(infer_agent(tiles, Path(tmp) / f"w{i}"))
    out: dict[str, object] = {
        "infer_agent_per_s": round(max(agent_rates)),
        "infer_bare_per_s": round(max(bare_rates)),
        "infer_ratio": round(max(agent_rates) / max(bare_rates), 3),
        "infer_batch": BATCH,
        "infer_threads": THREADS,
        "infer_tiles": len(tiles),
        "infer_input_load_ms": round(min(LOAD_MS), 1),
    }
    train = training_figures()
    for key in ("train_step_us", "torch_step_us", "train_speedup_vs_torch", "train_final_accuracy"):
        out[key] = train[key]
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
