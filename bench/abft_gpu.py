"""The checksum pass's checks under a GPU's arithmetic. Prints one JSON object as its last line.

Why this exists: the checks' tolerance is the rounding bound of the arithmetic they are made
for (flight/compute/abft.py), and a GPU may compute Conv and GEMM differently from the CPU
(cuDNN's Winograd and FFT algorithms, TF32 operands). The protected graph is run here node by
node with PyTorch's own cuDNN and cuBLAS calls (:class:`TorchGraph`, the 17 operators the
protected cloud model uses), each algorithm choice and batch size forced: the arithmetic
question. bench/abft_ort_gpu.py runs the same model through onnxruntime's CUDA provider and
the kernels it chooses, as a Jetson's worker does, where onnxruntime-gpu is installed.
Needs ``torch`` (``pip install .[bench]``). Without a CUDA device it runs on the CPU, where the
TF32 and cuDNN switches change nothing: one pass at batch 64 (``make bench`` runs it so), and the
keys that would say TF32 say ``tf32_cpu_fp32`` (``flips/tf32_model/tf32_cpu_fp32``: the TF32
tolerance under FP32 arithmetic) and ``tf32_vs_fp32_prob_max_abs_cpu_fp32_both``.

- ``false_alarms/PRECISION_model/tf32_on|off/cudnn_benchmark_B/batchN``: [tiles flagged, tiles]
  over bench/radiation.py's clean tiles (held-out, procedural (each its own draw), uniform random,
  flat; a twentieth of them at batch 1), for the model protected for ``fp32`` with TF32 off,
  for ``tf32`` with it on, and for ``fp32`` with it on (the FP32 tolerance under TF32
  arithmetic: what the pass must not be given), with cuDNN's heuristic and its benchmarked choice.
- ``flips/PRECISION_model/tf32_on|off``: ``FLIPS`` single-bit flips, half in a checked node's
  weights, half in its output, each on a batch of 16 held-out tiles, judged as bench/radiation.py
  judges them (a probability or the cloud fraction moved by > 1e-3, the class changed, or an
  output not finite): consequential, detected (every tile that mattered flagged), ``rate``.
- ``tf32_vs_fp32_prob_max_abs``: how far TF32 moves the model's probabilities (256 tiles).

Run with ``NVIDIA_TF32_OVERRIDE=0`` in the environment (as the agent starts its compute worker,
flight/compute/arithmetic.py) and the ``tf32_on`` cases run in FP32: the variable overrides what
PyTorch asks of cuBLAS and cuDNN. ``--quick``: a fortieth of the tiles and 200 flips (a check
that it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bench import radiation as r
from flight.compute import abft
from flight.compute.inject import flip_bit

FLIPS = 3000
BATCHES = (1024, 64, 16, 1)


class TorchGraph:
    """An ONNX graph run node by node with torch on ``device``; a weight can be swapped and one
    element of one node's output flipped (before its consumers and its check read it)."""

    UNSUPPORTED = {"auto_pad": {"NOTSET", b"NOTSET"}, "noop_with_empty_axes": {0}, "allowzero": {0}}
    """Attributes whose other values this interpreter does not implement: refused, not guessed."""

    def __init__(self, model: onnx.ModelProto, torch, device: str):
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if not 13 <= opset <= 17:  # ReduceSum's axes an input (13), ReduceMin's an attribute (until 18)
            raise NotImplementedError(f"opset {opset}: this interpreter follows opsets 13 to 17")
        self.torch, self.device = torch, device
        self.nodes = list(model.graph.node)
        self.init = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
        self.consts = {k: self._tensor(v) for k, v in self.init.items()}
        self.outputs = [o.name for o in model.graph.output]

    def _tensor(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def run(self, tiles: np.ndarray, weights: dict[str, np.ndarray] | None = None,
            flip: tuple[str, int, int] | None = None) -> dict[str, np.ndarray]:
        torch, fn = self.torch, self.torch.nn.functional
        env = dict(self.consts)
        env.update({k: self._tensor(v) for k, v in (weights or {}).items()})
        env["tiles"] = self._tensor(tiles)
        for node in self.nodes:
            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            for name, allowed in self.UNSUPPORTED.items():
                if name in a and a[name] not in allowed:
                    raise NotImplementedError(f"{node.op_type} {node.name}: {name}={a[name]!r}")
            x = [env[name] if name else None for name in node.input]
            op = node.op_type
            if op == "Sub":
                y = x[0] - x[1]
            elif op == "Add":
                y = x[0] + x[1]
            elif op == "Max":
                y = torch.maximum(x[0], x[1].to(x[0].dtype).expand_as(x[0]))
            elif op == "Clip":  # a Relu's copy (abft.protect's recompute_inputs): Clip(v, 0)
                y = x[0]
                if len(x) > 1 and x[1] is not None:
                    y = torch.maximum(y, x[1].to(y.dtype).expand_as(y))
                if len(x) > 2 and x[2] is not None:
                    y = torch.minimum(y, x[2].to(y.dtype).expand_as(y))
            elif op == "Min":  # a copy's read of the model's tensor: Min(v, +inf)
                y = torch.minimum(x[0], x[1].to(x[0].dtype).expand_as(x[0]))
            elif op == "Div":
                y = x[0] / x[1]
            elif op == "Mul":
                y = x[0] * x[1]
            elif op == "Equal":  # an output's compare with its copy (abft.protect's compare_outputs)
                y = x[0] == x[1]
            elif op == "IsInf":
                y = torch.isinf(x[0])
            elif op == "Where":
                y = torch.where(x[0], x[1], x[2])
            elif op == "Abs":
                y = x[0].abs()
            elif op == "Relu":
                y = torch.relu(x[0])
            elif op == "Sigmoid":
                y = torch.sigmoid(x[0])
            elif op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                if pads[:2] != pads[2:]:
                    raise NotImplementedError("Conv with asymmetric padding")
                y = fn.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, stride=tuple(a.get("strides", [1, 1])),
                              padding=tuple(pads[:2]), dilation=tuple(a.get("dilations", [1, 1])),
                              groups=a.get("group", 1))
            elif op == "GlobalAveragePool":
                y = x[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                axis = a.get("axis", 1)
                y = x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)
            elif op == "Concat":
                y = torch.cat(x, dim=a["axis"])
            elif op == "Gemm":
                lhs = x[0].T if a.get("transA", 0) else x[0]
                rhs = x[1].T if a.get("transB", 0) else x[1]
                y = a.get("alpha", 1.0) * (lhs @ rhs)
                if len(x) > 2 and x[2] is not None:
                    y = y + a.get("beta", 1.0) * x[2]
            elif op == "MatMul":
                y = x[0] @ x[1]
            elif op == "Softmax":
                y = torch.softmax(x[0], dim=a.get("axis", -1))
            elif op == "ReduceSum":
                axes = [int(v) for v in x[1].cpu().tolist()] if len(x) > 1 and x[1] is not None else list(range(x[0].dim()))
                y = x[0].sum(dim=axes, keepdim=bool(a.get("keepdims", 1)))
            elif op == "ReduceMax":  # the compare of the outputs' scale per row (compare_outputs)
                axes = [int(v) for v in x[1].cpu().tolist()] if len(x) > 1 and x[1] is not None else (
                    a.get("axes") or list(range(x[0].dim())))
                y = x[0]
                for axis in sorted(axes, reverse=True):
                    y = y.amax(dim=axis, keepdim=bool(a.get("keepdims", 1)))
            elif op == "ReduceMin":
                y = x[0]
                for axis in sorted(a.get("axes") or range(x[0].dim()), reverse=True):
                    y = y.amin(dim=axis, keepdim=bool(a.get("keepdims", 1)))
            elif op == "Reshape":
                shape = [int(v) for v in x[1].cpu().tolist()]
                y = x[0].reshape([x[0].shape[k] if s == 0 else s for k, s in enumerate(shape)])
            elif op == "LessOrEqual":
                y = x[0] <= x[1]
            elif op == "Cast":
                y = x[0].to({1: torch.float32, 9: torch.bool}[a["to"]])
            else:
                raise NotImplementedError(f"operator {op} (node {node.name})")
            out = node.output[0]
            if flip is not None and flip[0] == out:
                flat = y.reshape(-1).clone()
                flat[flip[1] % flat.numel()] = float(flip_bit(np.float32(flat[flip[1] % flat.numel()].item()), flip[2]))
                y = flat.reshape(y.shape)
            env[out] = y
        return {name: env[name].cpu().numpy() for name in self.outputs}


def set_tf32(torch, on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def false_alarms(graph: TorchGraph, tiles: np.ndarray, batch: int) -> list[int]:
    flagged = sum(int((~graph.run(tiles[i:i + batch])[abft.OUTPUT].astype(bool)).sum())
                  for i in range(0, len(tiles), batch))
    return [flagged, len(tiles)]


def flips(graph: TorchGraph, pool: np.ndarray, rng: np.random.Generator, n: int) -> dict[str, object]:
    """``n`` flips, alternately in a checked node's weight and in its output, judged by r.Tally."""
    tally = {"weights": r.Tally(), "activations": r.Tally()}
    for j in range(n):
        tiles = pool[rng.choice(len(pool), r.FLIP_BATCH, replace=False)]
        clean = graph.run(tiles)
        bit = int(rng.integers(32))
        if j % 2 == 0:
            site = r.CHECKED_WEIGHTS[rng.integers(len(r.CHECKED_WEIGHTS))]
            w = graph.init[site]
            k = int(rng.integers(w.size))
            bad = w.copy()
            bad.flat[k] = flip_bit(w.flat[k], bit)
            tally["weights"].add(clean, graph.run(tiles, weights={site: bad}), f"{site}[{k}] bit {bit}")
        else:
            site = r.CHECKED_ACTIVATIONS[rng.integers(len(r.CHECKED_ACTIVATIONS))]
            k = int(rng.integers(2**31))  # an element of the site's tensor (modulo its size)
            tally["activations"].add(clean, graph.run(tiles, flip=(site, k, bit)), f"{site}[{k}] bit {bit}")
    both = tally["weights"].merge(tally["activations"])
    return {"injected": both.injected, "consequential": both.consequential[0], "detected": both.detected[0],
            "rate": both.rate(), "rate_weights": tally["weights"].rate(),
            "rate_activations": tally["activations"].rate(), "clean_flags": both.clean_flags,
            "clean_tiles": both.clean_tiles, "missed": both.missed}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fortieth of the tiles, 200 flips")
    parser.add_argument("--seed", type=r.non_negative_int, default=r.SEED)
    args = parser.parse_args(argv)
    import torch  # the bench extra; not a dependency of the agent

    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    out: dict[str, object] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                              "torch": torch.__version__,
                              "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
                              "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE")}
    bare = onnx.load(str(r.MODELS_DIR / r.MODEL_FILE))
    graphs = {p: TorchGraph(abft.protect(bare, precision=p), torch, device) for p in ("fp32", "tf32")}
    tiles = r.clean_tiles(args.seed)[:: 40 if args.quick else 1]
    held = r.load_held_out().tiles.astype(np.float32)
    out["tiles"] = len(tiles)
    gpu = device == "cuda"
    with torch.no_grad():
        for benchmark in (False, True) if gpu else (False,):
            torch.backends.cudnn.benchmark = benchmark
            for precision, tf32 in (("fp32", False), ("tf32", True), ("fp32", True)) if gpu else (("fp32", False),):
                set_tf32(torch, tf32)
                for batch in (64,) if args.quick or not gpu else BATCHES:
                    some = tiles if batch >= 16 else tiles[:: 20]
                    key = f"false_alarms/{precision}_model/tf32_{'on' if tf32 else 'off'}/cudnn_benchmark_{benchmark}/batch{batch}"
                    out[key] = false_alarms(graphs[precision], some, batch)
        torch.backends.cudnn.benchmark = False
        for precision, tf32 in (("tf32", True), ("fp32", False)):
            set_tf32(torch, tf32)
            # On the CPU TF32 changes nothing: the model with the TF32 tolerance is run in FP32, and named so (found
            # in audit: "tf32_on" there was plain FP32)
            arithmetic = ("on" if tf32 else "off") if gpu else "cpu_fp32"
            out[f"flips/{precision}_model/tf32_{arithmetic}"] = flips(
                graphs[precision], held, np.random.default_rng(args.seed + 7), 200 if args.quick else FLIPS)
        set_tf32(torch, False)
        reference = graphs["fp32"].run(held[:256])["probabilities"]
        set_tf32(torch, True)
        moved = float(np.abs(graphs["tf32"].run(held[:256])["probabilities"] - reference).max())
        out["tf32_vs_fp32_prob_max_abs" if gpu else "tf32_vs_fp32_prob_max_abs_cpu_fp32_both"] = moved
    out["bench_s"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
