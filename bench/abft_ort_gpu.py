"""The checksum pass through onnxruntime's own CUDA provider. Prints one JSON object as its last line.

bench/abft_gpu.py answers the arithmetic question with PyTorch's cuDNN and cuBLAS calls; this one
runs the protected shipped model as the compute worker would on a GPU, through onnxruntime's CUDA
provider and the kernels it chooses, with bench/radiation.py's tiles, flips and overhead pairs.
It needs an onnxruntime with ``CUDAExecutionProvider`` (the ``onnxruntime-gpu`` wheel, built for
the CUDA of the machine) and a GPU; anywhere else it says why and stops.

Run it as the agent starts its compute worker, with ``NVIDIA_TF32_OVERRIDE=0`` (TF32 forbidden:
flight/compute/arithmetic.py), and again without it: onnxruntime's CUDA provider asks for TF32 by
default (its ``use_tf32`` option, left at its default here as the worker leaves it).

- ``worker_precision``: the precision the worker would protect models for in this environment
  (``providers.abft_precision``).
- ``false_alarms/PRECISION_model/ALGO/batchN``: [tiles flagged, tiles] over bench/radiation.py's
  clean tiles, for the model protected for ``fp32`` and for ``tf32``, with each of cuDNN's
  algorithm searches onnxruntime offers (``cudnn_conv_algo_search``).
- ``flips/PRECISION_model``: ``--flips`` single-bit flips in checked weights and activations,
  judged as bench/radiation.py judges them; ``rate`` is detected over consequential.
- ``overhead/batchN``: protected over bare through ``session.run`` (tiles copied to the GPU and
  the outputs back, as the worker runs them), bench/radiation.py's interleaved pairs, minus 1;
  ``overhead_on_device/batchN``: the same with the tiles already on the GPU and the outputs left
  there (I/O binding): the checks' cost against the model's own kernels alone.
- ``bare_run_us/batchN``: one bare run through ``session.run``, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

from bench import radiation as r
from flight.compute import abft, providers

CUDA = "CUDAExecutionProvider"
ALGOS = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
BATCHES = (64, 1024)
OVERHEAD_BATCHES = (64, 256, 1024, 2048, 4096, 8192, 16384)
ON_DEVICE_BATCHES = (1024, 8192)


def cuda(algo: str | None = None) -> list:
    """The provider list: CUDA (with ``algo`` as its cuDNN search, else its defaults), then the CPU."""
    return [(CUDA, {"cudnn_conv_algo_search": algo} if algo else {}), "CPUExecutionProvider"]


def on_cuda(data: bytes, algo: str | None = None) -> ort.InferenceSession:
    session = ort.InferenceSession(data, r.session_options_for(1), providers=cuda(algo))
    if session.get_providers()[0] != CUDA:
        raise RuntimeError(f"onnxruntime did not take {CUDA}: {session.get_providers()}")
    return session


def on_device_overhead(bare: bytes, protected: bytes, tiles: np.ndarray, batch: int, pairs: int = 15,
                       runs: int = 30) -> float:
    """Median over interleaved pairs of (protected / bare) with the batch on the GPU and every
    output left there, minus 1."""
    x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tiles[:batch]), "cuda", 0)
    bindings = []
    for data in (bare, protected):
        session = on_cuda(data)
        binding = session.io_binding()
        binding.bind_ortvalue_input("tiles", x)
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda")
        for _ in range(5):
            session.run_with_iobinding(binding)
        bindings.append((session, binding))

    def timed(i: int) -> float:
        session, binding = bindings[i]
        t0 = time.perf_counter()
        for _ in range(runs):
            session.run_with_iobinding(binding)
        return time.perf_counter() - t0

    ratios = []
    for i in range(pairs):
        if i % 2:  # which goes first alternates
            p = timed(1)
            b = timed(0)
        else:
            b = timed(0)
            p = timed(1)
        ratios.append(p / b)
    return float(np.median(ratios)) - 1.0


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=r.non_negative_int, default=3000)
    parser.add_argument("--tiles", type=r.non_negative_int, default=None,
                        help="at most this many clean tiles (default: all)")
    args = parser.parse_args(argv)
    if CUDA not in ort.get_available_providers():
        return {"skipped": f"this onnxruntime ({ort.__version__}) has no {CUDA}: install onnxruntime-gpu on a "
                           "machine with a GPU"}
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels where the system has none
    t0 = time.perf_counter()
    bare = (r.MODELS_DIR / r.MODEL_FILE).read_bytes()
    model = onnx.load_from_string(bare)
    models = {"fp32_model": abft.protect(model), "tf32_model": abft.protect(model, precision="tf32")}
    held = r.load_held_out().tiles.astype(np.float32)
    tiles = r.clean_tiles(r.SEED)[:args.tiles]
    out: dict[str, object] = {
        "onnxruntime": ort.__version__,
        "tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE"),
        "worker_precision": providers.abft_precision([CUDA], ort.get_available_providers()),
    }
    for name, protected in models.items():
        data = protected.SerializeToString()
        for algo in ALGOS:
            session = on_cuda(data, algo)
            for batch in BATCHES:
                out[f"false_alarms/{name}/{algo}/batch{batch}"] = [r.count_false_alarms(session, tiles, batch),
                                                                   len(tiles)]
    for (name, protected), seed in zip(models.items(), (r.SEED, r.SEED + 1)):
        tally = r.flip_campaigns(protected, held, seed, args.flips, 0, providers=cuda())
        both = tally["weights"].merge(tally["activations"])
        out[f"flips/{name}"] = {"injected": both.injected, "consequential": both.consequential[0],
                                "detected": both.detected[0], "rate": both.rate(), "clean_flags": both.clean_flags,
                                "missed": both.missed[:3]}
    data = models["fp32_model"].SerializeToString()
    many = np.concatenate([held] * (max(OVERHEAD_BATCHES) // len(held) + 1))
    for batch in OVERHEAD_BATCHES:
        out[f"overhead/batch{batch}"] = round(r.overhead(bare, data, many, "all", 1, batch, providers=cuda()), 4)
        session, x = on_cuda(bare), many[:batch]
        for _ in range(10):
            session.run(None, {"tiles": x})
        t1 = time.perf_counter()
        for _ in range(50):
            session.run(None, {"tiles": x})
        out[f"bare_run_us/batch{batch}"] = round((time.perf_counter() - t1) / 50 * 1e6, 1)
    for batch in ON_DEVICE_BATCHES:
        out[f"overhead_on_device/batch{batch}"] = round(on_device_overhead(bare, data, many, batch), 4)
    out["bench_s"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result))
