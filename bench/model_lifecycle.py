"""Model uplink figures. Prints one JSON object as its last line.

- ``delta_vs_full_bytes``: the bytes of a signed delta package over those of the signed full
  package of the model it makes (what would be uplinked otherwise), for the shipped cloud-screening
  model with its head (the last Gemm, 13 -> 2)
  fine-tuned on board-like data: 40 Adam steps of the repository's own trainer
  (flight.compute.training) on the body's features of the first held-out tiles. Both
  packages are what ``sunlit-ground model pack`` / ``delta`` write: model or delta,
  reference set (16 tiles; the delta's leaves its inputs to the base's, which the board
  keeps) and signed manifest. Target <= 0.1.
- ``model_swap_s``: from "the uplinked files are in staging/" to "the new version is active
  after its checks", through the real worker path (``MODEL_INSTALL`` handled by a compute
  worker on a real socket: signature, hashes, the delta applied to the active version, the
  reference check in an onnxruntime session, the store's atomic writes with fsync), the
  median of ``SWAPS`` swaps.
- ``full_package_bytes``, ``delta_package_bytes``: the two sizes; ``delta_tensors``: what changed.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import zmq

from flight.compute import protocol as cp
from flight.compute.training import Adam, Trainer, from_inference_head
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_held_out
from flight.compute.worker import Worker
from ground.model_package import key_from_seed, load_inputs, pack_delta, pack_full, public_line

OPERATOR = "bench-operator"
KEY = key_from_seed(bytes(range(100, 132)))  # a fixed key for the bench: never an operator's
FINE_TUNE_STEPS = 40
FINE_TUNE_TILES = 256
SWAPS = 5


def fine_tuned_head(base: bytes, steps: int = FINE_TUNE_STEPS, seed: int = 0) -> bytes:
    """The shipped model with only its last layer trained a little more: deterministic for a seed."""
    head = from_inference_head(onnx.load_from_string(base), 1)
    tiles = load_held_out()
    x = tiles.tiles[:FINE_TUNE_TILES].astype(np.float32)
    y = tiles.labels[:FINE_TUNE_TILES].astype(np.int64)
    body = ort.InferenceSession(head.body.SerializeToString(), providers=["CPUExecutionProvider"])
    features = body.run(None, {body.get_inputs()[0].name: x})[0]
    trainer = Trainer(head.spec, Adam(1e-3), 64, weights=head.weights, seed=seed)
    order = np.random.default_rng(seed).permutation(len(features))
    for step in range(steps):
        batch = order[(step * 64) % len(order):][:64]
        trainer.step(features[batch], y[batch])
    return head.export(trainer.weights()).SerializeToString()


def _packages(directory: Path) -> tuple[Any, Any]:
    base = (MODELS_DIR / MODEL_FILE).read_bytes()
    inputs = load_inputs(None)
    tuned = fine_tuned_head(base)
    # The full package of the model the delta makes: what would be uplinked otherwise (a review: the base's)
    full = pack_full(tuned, MODEL_NAME, "2", OPERATOR, KEY, directory / "full", inputs)
    delta = pack_delta(base, tuned, MODEL_NAME, "3", OPERATOR, KEY, directory / "delta", inputs)
    return full, delta


def delta_vs_full_bytes() -> float:
    """Delta package bytes over full package bytes for a fine-tuned head of the shipped model."""
    with tempfile.TemporaryDirectory() as tmp:
        full, delta = _packages(Path(tmp))
    return delta.total_bytes / full.total_bytes


def _swap_once(root: Path, package: Path, version: str, sha256: str) -> float:
    """Stage the package, then time MODEL_INSTALL in a worker until its reply says the version is active."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"inproc://bench-model-{uuid.uuid4().hex}"
    router.bind(endpoint)
    root.mkdir(parents=True, exist_ok=True)
    keys = root / "operators.keys"
    keys.write_text(public_line(OPERATOR, KEY) + "\n")
    worker = Worker(endpoint, root / "compute", trusted_keys=keys)
    try:
        worker.install_shipped_models()
        staging = root / "compute" / "staging"
        for f in package.iterdir():
            (staging / f.name).write_bytes(f.read_bytes())
        t0 = time.perf_counter()
        worker._handle(cp.InstallModel(1, MODEL_NAME, version, sha256))  # noqa: SLF001 - the worker's own path
        while True:
            msg = cp.decode(router.recv_multipart()[1])
            if isinstance(msg, cp.Reply):
                break
        elapsed = time.perf_counter() - t0
        if not msg.ok:
            raise RuntimeError(f"the swap failed: {msg.reason}")
        return elapsed
    finally:
        worker._sock.close(0)  # noqa: SLF001
        router.close(0)


def model_swap_s(swaps: int = SWAPS) -> float:
    """Seconds from the files in staging/ to the new version active after its checks (median; a delta)."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        _full, delta = _packages(Path(tmp))
        for i in range(swaps):
            times.append(_swap_once(Path(tmp) / f"board{i}", delta.directory, "3", delta.manifest.sha256))
    return statistics.median(times)


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        full, delta = _packages(Path(tmp))
        from flight.compute.package import Delta

        changed = sorted(Delta.from_bytes((delta.directory / f"{MODEL_NAME}.delta.npz").read_bytes()).tensors)
    return {
        "delta_vs_full_bytes": round(delta.total_bytes / full.total_bytes, 4),
        "model_swap_s": round(model_swap_s(), 4),
        "full_package_bytes": full.total_bytes,
        "delta_package_bytes": delta.total_bytes,
        "delta_tensors": changed,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
    sys.exit(0)
