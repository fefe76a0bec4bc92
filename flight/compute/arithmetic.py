"""What arithmetic the compute worker's GPU libraries may use: FP32, or TF32 where allowed.

Apart from flight/compute/providers.py so that the agent, which starts the worker with this
environment, need not import onnxruntime.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"
"""NVIDIA's process-wide switch: "0" keeps every FP32 Conv and GEMM of cuBLAS, cuDNN and TensorRT in
FP32, overriding their defaults and any programmatic setting (onnxruntime's CUDA provider turns TF32
on unless told ``use_tf32=0``, TensorRT's builder by default, and onnxruntime's TensorRT provider has
no option for it). Read when the libraries make their handles, so it is set in the compute worker's
environment before it starts (:func:`worker_environment`)."""

PRECISIONS = {"fp32": (2.0**-24, 0.0), "tf32": (2.0**-24, 2.0**-11)}
"""Arithmetic the provider uses: (unit roundoff of the accumulation, of the operands).
``tf32``: Ampere and later GPUs (Jetson Orin) round Conv and MatMul operands to a 10-bit
mantissa where allowed (the CUDA provider's ``use_tf32``, on by default; TensorRT's TF32
builder flag, on by default). fp16 is not offered: accumulating in half precision leaves
a bound too loose to catch anything.
(Here, not in flight/compute/abft.py, which imports onnx: the ground reads these names in a receipt, and
every ground command paid onnx's import, about a second; found in audit.)"""


def worker_environment(base: Mapping[str, str], tf32: bool) -> dict[str, str]:
    """The compute worker's environment: ``base`` with TF32 forbidden (:data:`TF32_OVERRIDE` "0")
    unless ``tf32`` ([compute] gpu_tf32), in which case ``base`` is left as it is.

    Why FP32 by default: under TF32 the checksum pass must allow for operands rounded to 10 bits and
    misses errors of that size. ``python -m bench.abft_ort_gpu`` on an H200 (onnxruntime's CUDA
    provider, its options at their defaults, which ask for TF32: docs/architecture.md): with this
    variable set the FP32 tolerance held (no clean tile of 102,051 flagged) and caught 676 of 676
    consequential bit flips; without it every tile failed that tolerance, and the TF32 one caught
    273 of 361 (``bench.abft_gpu``, through PyTorch's cuDNN and cuBLAS: 531 of 678); no clean tile
    was flagged at the tolerance the worker chose (``abft_detect_rate_tf32_tolerance`` in ``python -m
    bench.radiation`` is the TF32 figure on the CPU). The price: FP32 Conv and GEMM on the GPU run
    slower than TF32, for every model the worker runs, training included. TensorRT reads the
    variable when it builds an engine: an engine cache built while TF32 was allowed would keep it
    (the worker enables no cache)."""
    env = dict(base)
    if not tf32:
        env[TF32_OVERRIDE] = "0"
    return env


def tf32_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether NVIDIA's libraries in this process may round FP32 operands to TF32 (default: yes)."""
    return (os.environ if environ is None else environ).get(TF32_OVERRIDE, "").strip() != "0"
