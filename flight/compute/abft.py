"""Checked inference: an ONNX graph pass that adds checksums to Conv, Gemm and MatMul nodes.

Algorithm-based fault tolerance (Huang & Abraham, IEEE Trans. Computers C-33(6), 1984): a
linear operation commutes with a sum, so the sum of its outputs can be computed a second
way, from sums of its weights, at a fraction of the cost. NVIDIA's ABED (Hari et al.,
"Making convolutions resilient via algorithm-based error detection techniques", IEEE TDSC
2022) checks TensorRT convolutions this way. :func:`protect` rewrites a model so that, next
to its own outputs, it gives a per-sample flag :data:`OUTPUT` (bool ``[batch]``, true when
every check of that sample held), with standard ONNX operators only (Gemm, MatMul,
ReduceSum, Abs, Sub, Flatten, LessOrEqual, Cast, ReduceMin, Concat, Min; Conv where sizes
are unknown), so it runs on any execution provider. The model's own nodes, outputs and
names are untouched: the checks only read.

The checks, for a node whose weights are constants (initializers or Constant nodes):

- Conv ``Y = conv(X, W) + b``, ``W[K, C/g, k...]``: ABED's output-channel checksum,
  ``sum_k Y_k = conv(X, W_sum) + sum(b)`` with ``W_sum[c] = sum_k W[k, c]`` (per group),
  summed once more over each output row (the first spatial axis). Where shape inference
  gives the sizes, the right side is a matrix product ``X . G`` with ``G[c, i, h]`` (what
  input element (c, i) adds to row h, padding and strides included) computed here, once,
  and stored as an initializer: computing it at run time from ``W`` would follow a bit
  flip in ``W`` and miss it. Per row rather than per sample: a change that sums to about
  zero over a whole sample (a weight flip times a zero-mean input) shows in its rows, and
  a row's tolerance is a row's rounding, not a sample's. Rather than per pixel: the check
  reads X and Y once each and is a small Gemm, where a second convolution with one output
  channel costs as much as the layer on a CPU. Where sizes are unknown, or ``G`` would be
  larger than :data:`MAX_CHECK_WEIGHTS`, per pixel with two one-channel Convs.
- Gemm / MatMul ``Y = A B (+ C)``, ``B`` constant ``[K, N]``: the row sums ``Y e`` must
  equal ``A (B e) (+ C e)``, ``B e`` (K numbers) stored here. Row sums, not column sums: a
  row is one sample, so the flag is per sample, and the check costs ``2K`` multiply-adds a
  row against ``K N`` for the node. The column check ``e^T Y = (e^T A) B`` would need ``B``
  at run time (so it would miss flips in ``B`` unless ``B`` were stored twice), costs a
  ``K x N`` product per batch and mixes the samples; it adds coverage only for faults that
  leave every row sum unchanged (two compensating errors in one row), so it is left out.

Tolerance. Floating-point sums rounded in a different order differ; the bound used is the
textbook one for a sum of ``n`` terms (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., section 3.1: ``|fl(x.y) - x.y| <= n u sum |x_i y_i|``), whatever the
order. A check holds when ``|S - P| <= atol + rtol * M``, ``M`` the sum of the magnitudes
of every term behind it (``sum |W| |X| + sum |b|`` over the row), computed at run time by
the check from ``|X|`` (or from X itself where it cannot be negative: after Relu, Sigmoid,
pooling...). ``rtol`` per node is ``SAFETY * n_dot * u + 4 * u_operand + n_sum * u``: ``u``
the unit roundoff of the accumulation, ``u_operand`` that of the operands where the
provider rounds them first (TF32), ``n_dot`` the terms of one output of the node and
``n_sum`` those of the plain sums. :data:`SAFETY` is margin for convolution algorithms the
bound does not strictly cover (Winograd and FFT convolutions on GPUs). So a clean input
cannot raise the flag, and a fault that moves a checksum by more than the rounding any
correct computation could make is caught. NaN and infinities fail every check.

What is not checked (see docs/architecture.md): the other operators (Relu, pooling,
Softmax, the input's normalisation) and their constants; a fault in a checked node's input
(both sides see it); a fault in the check's own nodes (it can only raise the flag, or hide
a fault of the same sample by coinciding with one). Weights of unchecked operators are for
the scrubber's hashes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PASS_VERSION = 1
"""Bumped when the checks or the tolerance change, so a protected model says what made it."""

OUTPUT = "abft_ok"
"""The added output: bool ``[batch]``, true where every check of that sample held."""

CHECK_OUTPUT = OUTPUT  # the name flight/compute/checks.py looks for

PREFIX = "abft/"
"""Every name the pass adds starts with this; a model that already has one is refused."""

META_KEY = "abft"
"""``metadata_props`` key of the pass's record (JSON: version, precision, atol, checks, skipped)."""

SAFETY = 8.0
"""Margin over the rounding bound. The bound holds for every summation order, blocked and
FMA included; transformation-based convolutions (Winograd, FFT, which cuDNN may choose)
can exceed it by a small factor that grows with the tile size. 8 keeps the tolerance
below 1e-4 of the magnitudes for the shipped model's layers in float32."""

DEFAULT_ATOL = 1e-30
"""Absolute slack for products flushed to zero (subnormals, 2**-126 ~ 1.2e-38 each); every
other rounding error is relative to the magnitudes and covered by ``rtol``."""

PRECISIONS = {"fp32": (2.0**-24, 0.0), "tf32": (2.0**-24, 2.0**-11)}
"""Arithmetic the provider uses: (unit roundoff of the accumulation, of the operands).
``tf32``: Ampere and later GPUs (Jetson Orin) round Conv and MatMul operands to a 10-bit
mantissa where allowed (the CUDA provider's ``use_tf32``, on by default; TensorRT's TF32
builder flag, on by default). fp16 is not offered: accumulating in half precision leaves
a bound too loose to catch anything."""

CHECKED_OPS = ("Conv", "Gemm", "MatMul")

MAX_CHECK_WEIGHTS = 1 << 22
"""Largest ``G`` (elements) a row check may store: ``C * H_in * W_in * H_out`` for a Conv that
mixes positions within a row (3x3...), 16 MiB of float32. Past it the Conv is checked per pixel."""

_MIN_OPSET = 13  # LessOrEqual (12) and ReduceSum taking its axes as an input (13)

# Operators whose output is >= 0 (or NaN) whatever their input, and those whose output is
# >= 0 when all their data inputs are: a check on a non-negative input needs no |X|.
_NONNEG_ALWAYS = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid", "Sqrt"}
_NONNEG_IF_INPUTS = {
    "GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze",
    "Unsqueeze", "Transpose", "Identity", "Concat", "Mul", "Add", "Max", "Min", "Resize", "Slice",
    "Gather", "Tile", "Expand", "Pad", "DepthToSpace", "SpaceToDepth", "Split", "Upsample",
}
_DATA_INPUTS = {"Reshape": 1, "Squeeze": 1, "Unsqueeze": 1, "Resize": 1, "Slice": 1, "Gather": 1,
                "Tile": 1, "Expand": 1, "Pad": 1, "Split": 1, "Upsample": 1}  # the rest are shapes/indices


@dataclass(frozen=True)
class Check:
    """One node the pass checks, as recorded in the model's metadata."""

    node: str  # the node's name, or "Op#index" for an unnamed one
    op: str
    output: str  # the tensor whose sum is checked
    rtol: float
    per_sample: bool  # False: the output has no batch axis the pass could prove; a fault flags the whole batch
    form: str  # "conv-rows" (per output row), "conv-pixel" (per output pixel: sizes unknown), "rows" (Gemm, MatMul)


@dataclass(frozen=True)
class _Outcome:
    residual: str  # [N, w]: <= 0 where the check holds
    per_sample: bool


@dataclass(frozen=True)
class Skipped:
    node: str
    op: str
    reason: str


def protect(
    model: onnx.ModelProto,
    *,
    precision: str = "fp32",
    rtol: float | None = None,
    atol: float = DEFAULT_ATOL,
    strict: bool = True,
) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs :data:`OUTPUT`, with a checksum on each Conv, Gemm, MatMul.

    ``precision`` is the arithmetic of the provider that will run it (:data:`PRECISIONS`);
    ``rtol`` overrides the per-node tolerance it gives (one number for every node);
    ``atol`` is the absolute slack in the units of each checked output.

    A node whose weight is not a constant, or that the pass cannot check for another reason,
    raises ``ValueError`` naming the node and the reason when ``strict``; with
    ``strict=False`` it is left unchecked and listed under ``skipped`` in the record that
    :func:`describe` reads. A model with nothing to check raises either way, as does one
    already protected (ask :func:`is_protected` first).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if rtol is not None and not (np.isfinite(rtol) and 0 < rtol < 1):
        raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
    if not (np.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be finite and >= 0, got {atol!r}")
    if is_protected(model):
        raise ValueError("model is already protected (is_protected() is true); protect the original instead")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _Pass(out, precision, rtol, atol, strict).run()
    return out


def protect_bytes(data: bytes, **options: object) -> bytes:
    """:func:`protect` on serialized ONNX: same bytes and options in, same bytes out (a stable SHA-256)."""
    return protect(onnx.load_from_string(data), **options).SerializeToString(deterministic=True)  # type: ignore[arg-type]


def is_protected(model: onnx.ModelProto) -> bool:
    """Whether :func:`protect` made ``model``: it has the :data:`OUTPUT` output and the pass's record."""
    return any(o.name == OUTPUT for o in model.graph.output) and any(p.key == META_KEY for p in model.metadata_props)


def describe(model: onnx.ModelProto) -> dict[str, object]:
    """The pass's record in a protected model: version, precision, atol, checks, skipped (as dicts)."""
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            return json.loads(prop.value)
    raise ValueError("model is not protected: no 'abft' entry in its metadata_props")


def checkable(model: onnx.ModelProto) -> tuple[list[str], list[Skipped]]:
    """Which nodes :func:`protect` would check (labels), and which it would skip and why."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    p = _Pass(probe, "fp32", None, DEFAULT_ATOL, strict=False)
    return [label for label, _node, _i in p.candidates()], p.skipped


class _Pass:
    def __init__(self, model: onnx.ModelProto, precision: str, rtol: float | None, atol: float, strict: bool):
        self.model = model
        self.graph = model.graph
        self.precision = precision
        self.u_acc, self.u_op = PRECISIONS[precision]
        self.rtol = rtol
        self.atol = atol
        self.strict = strict
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.new_nodes: list[onnx.NodeProto] = []
        self.new_inits: list[TensorProto] = []
        self.checks: list[Check] = []
        self.skipped: list[Skipped] = []
        overridable = {i.name for i in self.graph.input}
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in self.graph.initializer if t.name not in overridable
        }
        for node in self.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for a in node.attribute:
                    if a.name == "value":
                        self.consts[node.output[0]] = numpy_helper.to_array(a.t)
        self.nonneg = self._nonneg_tensors()
        self.shapes = self._inferred_shapes()

    # -- what to check ---------------------------------------------------------------------

    def candidates(self) -> Iterable[tuple[str, onnx.NodeProto, int]]:
        for i, node in enumerate(self.graph.node):
            if node.op_type not in CHECKED_OPS or node.domain not in ("", "ai.onnx"):
                continue
            label = node.name or f"{node.op_type}#{i}"
            why = self._why_not(node)
            if why is None:
                yield label, node, i
            else:
                self.skipped.append(Skipped(label, node.op_type, why))

    def _why_not(self, node: onnx.NodeProto) -> str | None:
        weight = node.input[1] if len(node.input) > 1 else ""
        if weight not in self.consts:
            return f"weight {weight!r} is not a constant (an initializer no graph input overrides, or a Constant node)"
        w = self.consts[weight]
        if w.dtype != np.float32:
            return f"weight {weight!r} is {w.dtype}; the tolerance is worked out for float32 only"
        if len(node.input) > 2 and node.input[2] and node.input[2] not in self.consts:
            return f"{'bias' if node.op_type == 'Conv' else 'C'} {node.input[2]!r} is not a constant"
        if node.op_type == "Conv" and w.ndim < 3:
            return f"Conv weight {weight!r} has rank {w.ndim}, need >= 3"
        if node.op_type == "MatMul" and w.ndim != 2:
            return f"MatMul weight {weight!r} has rank {w.ndim}; only a 2-D right operand is checked"
        if node.op_type == "Gemm" and w.ndim != 2:
            return f"Gemm B {weight!r} has rank {w.ndim}, need 2"
        return None

    def run(self) -> None:
        if self.opset < _MIN_OPSET:
            raise ValueError(f"opset {self.opset} is below {_MIN_OPSET}: convert the model first "
                             "(onnx.version_converter.convert_version)")
        for name in self._all_names():
            if name.startswith(PREFIX):
                raise ValueError(f"the model already has a name starting with {PREFIX!r} ({name!r})")
        outcomes = [self._check(label, node, i) for label, node, i in list(self.candidates())]
        if self.skipped and self.strict:
            s = self.skipped[0]
            more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
            raise ValueError(f"cannot check {s.op} node {s.node!r}: {s.reason}{more}; "
                             "protect(..., strict=False) leaves such nodes unchecked and lists them")
        if not outcomes:
            raise ValueError("nothing to check: the model has no Conv, Gemm or MatMul node with constant weights")
        self._flag(outcomes)
        self.graph.node.extend(self.new_nodes)
        self.graph.initializer.extend(self.new_inits)
        record = {
            "version": PASS_VERSION,
            "precision": self.precision,
            "rtol": self.rtol,  # null: per node, in checks
            "atol": self.atol,
            "safety": SAFETY,
            "output": OUTPUT,
            "checks": [asdict(c) for c in self.checks],
            "skipped": [asdict(s) for s in self.skipped],
        }
        self.model.metadata_props.append(onnx.StringStringEntryProto(key=META_KEY, value=json.dumps(record, sort_keys=True)))

    # -- one check -------------------------------------------------------------------------
    #
    # Every check ends in a residual |S - P| - B, [N, ...]: S the checksum of what the node
    # computed, P the same sum predicted from the input and the constants computed here, B
    # the tolerance (atol + rtol * M, M the magnitudes of every term behind S and P). It
    # holds where the residual is <= 0; NaN and infinities fail it.

    def _check(self, label: str, node: onnx.NodeProto, i: int) -> _Outcome:
        p = f"{PREFIX}{i}/"
        signed = node.input[0] not in self.nonneg
        if node.op_type == "Conv":
            residual, two_d, r, form = self._conv(node, p, signed)
        else:
            residual, two_d, r, form = self._gemm_or_matmul(node, p, signed)
        per_sample = self._batch_dim(node.output[0])
        self.checks.append(Check(label, node.op_type, node.output[0], float(r), per_sample, form))
        if not two_d:
            residual = self._node("Flatten", [residual], p + "flat", axis=1)
        return _Outcome(residual, per_sample)

    def _residual(self, p: str, d: str, bound: str) -> str:
        return self._node("Sub", [self._node("Abs", [d], p + "abs_d"), bound], p + "residual")

    def _conv(self, node: onnx.NodeProto, p: str, signed: bool) -> tuple[str, bool, float, str]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        w = self.consts[node.input[1]].astype(np.float64)
        k_out, c_per_group = w.shape[0], w.shape[1]
        if k_out % group:
            raise ValueError(f"Conv node {node.name!r}: {k_out} output channels do not divide into {group} groups")
        kg = k_out // group
        w_sum = np.concatenate([w[g * kg:(g + 1) * kg].sum(axis=0) for g in range(group)])  # [C, k...]
        w_abs = np.concatenate([np.abs(w[g * kg:(g + 1) * kg]).sum(axis=0) for g in range(group)])
        b = self.consts[node.input[2]].astype(np.float64).reshape(k_out) if len(node.input) > 2 and node.input[2] \
            else np.zeros(k_out)
        n_dot = c_per_group * int(np.prod(w.shape[2:])) + 1  # each output element: its dot product and its bias
        sizes = self._sizes(node, w.shape[2:], attrs)
        if sizes is None:
            return self._conv_per_pixel(node, p, signed, w_sum, w_abs, b, n_dot, attrs)
        in_dims, out_dims, reach = sizes
        rest_pointwise = all(reach[a].shape[0] == 1 and np.array_equal(reach[a][0].sum(axis=1), np.ones(in_dims[a]))
                             for a in range(1, len(in_dims)))
        g_size = w_sum.shape[0] * (in_dims[0] if rest_pointwise else int(np.prod(in_dims))) * out_dims[0]
        if g_size > MAX_CHECK_WEIGHTS:
            return self._conv_per_pixel(node, p, signed, w_sum, w_abs, b, n_dot, attrs)
        # One check per output row (the first spatial axis): the sum of Y over channels and
        # over the row's positions against P_h = sum_{c,i} G[c, i, h] X[c, i] + (positions) sum(b),
        # G computed here from W_sum (what input element (c, i) adds to row h). Per row rather
        # than over the whole sample: a change that sums to about zero over a sample of signed
        # input (a weight flip times a zero-mean input) shows in its rows, and a row's
        # tolerance is a row's rounding, not a sample's.
        rows, per_row, channels = out_dims[0], int(np.prod(out_dims[1:])), w_sum.shape[0]
        taps_rest = [t.sum(axis=2) for t in reach[1:]]  # [taps, inputs]: which input a tap reads, for any output
        letters = "abcdefg"[: len(in_dims) - 1]
        spec = ",".join(["zy" + letters, "yIH"] + [f"{t}{t.upper()}" for t in letters]) + "->zI" + letters.upper() + "H"
        g_sum = np.einsum(spec, w_sum, reach[0], *taps_rest)  # [C, H_in, rest..., H_out]
        g_abs = np.einsum(spec, w_abs, reach[0], *taps_rest)
        g_max = g_abs.reshape(channels, in_dims[0], -1, rows).max(axis=2)  # [C, H_in, H_out]
        if rest_pointwise:  # G does not change along an input row: sum the rows first
            x = self._row_sums(node.input[0], in_dims, p + "x_rows")
            g_sum = g_sum.reshape(channels, in_dims[0], -1, rows)[:, :, 0]
            terms = int(np.prod(in_dims[1:])) + int((g_sum != 0).reshape(-1, rows).sum(axis=0).max())
        else:
            x = node.input[0]
            terms = int((g_sum != 0).reshape(-1, rows).sum(axis=0).max())
        r = self._rtol(n_dot, k_out * per_row + terms + 4)
        # B_h = atol + r (M_h + positions * sum |b|), M_h = sum_{c,i} G_abs[c, i, h] |X[c, i]| (where G_abs
        # does not change along a row, with the row sums of |X|: the same number, fewer terms)
        if not signed and rest_pointwise:
            magnitudes, g_bound = x, g_max  # the row sums of a non-negative X are its L1 norms
        elif rest_pointwise:
            absolute = self._node("Abs", [node.input[0]], p + "abs_x")
            magnitudes = self._row_sums(absolute, in_dims, p + "l1_rows")
            g_bound = g_max
        else:  # the Gemm reads all of X for P already: the exact bound costs another like it
            magnitudes = self._node("Abs", [node.input[0]], p + "abs_x") if signed else node.input[0]
            g_bound = g_abs
        bound = self._node("Gemm", [self._node("Flatten", [magnitudes], p + "m", axis=1),
                                    self._init(p + "g_abs", r * g_bound.reshape(-1, rows)),
                                    self._init(p + "slack", np.full((1, rows), r * np.abs(b).sum() * per_row + self.atol))],
                           p + "bound")
        # d_h = sum_k sum_row Y - P_h, as one Gemm chain: (row sums of Y) . E + (X . -G - P0)
        x = self._node("Flatten", [x], p + "x", axis=1)
        p0 = self._init(p + "p0", np.full((1, rows), -b.sum() * per_row))
        predicted = self._node("Gemm", [x, self._init(p + "g", -g_sum.reshape(-1, rows)), p0], p + "minus_p")
        y = self._node("Flatten", [self._row_sums(node.output[0], out_dims, p + "y_rows")], p + "y", axis=1)
        e = self._init(p + "e", np.tile(np.eye(rows), (k_out, 1)))  # [K * H_out, H_out]: the sum over channels
        d = self._node("Gemm", [y, e, predicted], p + "d")
        return self._residual(p, d, bound), True, r, "conv-rows"

    def _row_sums(self, x: str, dims: list[int], name: str) -> str:
        """Sums of ``x`` over all but its first spatial axis: [N, C, H]. (AveragePool would let
        onnxruntime keep its blocked NCHWc layout for 8- or 16-channel tensors, but it is ten
        times slower than ReduceSum on the others.)"""
        if len(dims) == 1:
            return x
        return self._reduce("ReduceSum", x, list(range(3, 2 + len(dims))), name, keepdims=0)

    def _sizes(self, node: onnx.NodeProto, kernel: tuple[int, ...], attrs: dict[str, object]):
        """Static spatial sizes of a Conv's input and output, and per axis which input each tap reads.

        ``reach[a][t, i, o]`` is 1 where tap ``t`` of axis ``a`` reads input index ``i`` for
        output index ``o``. ``None`` when shape inference did not give every size as a
        number: the check is then per output pixel (:meth:`_conv_per_pixel`), which needs none.
        """
        x_shape, y_shape = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        if x_shape is None or y_shape is None:
            return None
        in_dims, out_dims = x_shape[2:], y_shape[2:]
        if not in_dims or len(in_dims) != len(kernel) or len(in_dims) > 7 or \
                not all(isinstance(d, int) and d > 0 for d in in_dims + out_dims):
            return None
        rank = len(kernel)
        strides = list(attrs.get("strides", [1] * rank))
        dilations = list(attrs.get("dilations", [1] * rank))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        pads = list(attrs.get("pads", [0] * 2 * rank))
        reach = []
        for a in range(rank):
            n_in, n_out, k, s, d = in_dims[a], out_dims[a], kernel[a], strides[a], dilations[a]
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                total = max((n_out - 1) * s + (k - 1) * d + 1 - n_in, 0)
                begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            elif auto_pad == "VALID":
                begin = 0
            else:
                begin = pads[a]
            hits = np.zeros((k, n_in, n_out))
            for t in range(k):
                idx = np.arange(n_out) * s + t * d - begin
                inside = (idx >= 0) & (idx < n_in)  # the others read padding (zeros)
                hits[t, idx[inside], np.arange(n_out)[inside]] = 1.0
            reach.append(hits)
        return in_dims, out_dims, reach

    def _conv_per_pixel(self, node: onnx.NodeProto, p: str, signed: bool, w_sum: np.ndarray, w_abs: np.ndarray,
                        b: np.ndarray, n_dot: int, attrs: dict[str, object]) -> tuple[str, bool, float, str]:
        """For a Conv of unknown sizes: two one-channel Convs give P and B at every output pixel (slower)."""
        n_dot += w_sum.shape[0] * int(np.prod(w_sum.shape[1:])) + 1  # the check Conv is a convolution too
        r = self._rtol(n_dot, len(b) + 2)
        kept = [helper.make_attribute(k, v) for k, v in attrs.items() if k != "group"]

        def conv(x: str, weight: np.ndarray, bias: float, name: str) -> str:
            node_ = helper.make_node("Conv", [x, self._init(name + "_w", weight[None]),
                                              self._init(name + "_b", np.array([bias]))], [name], name=name)
            node_.attribute.extend(kept)
            self.new_nodes.append(node_)
            return name

        x = node.input[0]
        predicted = conv(x, w_sum, b.sum(), p + "p")
        magnitudes = self._node("Abs", [x], p + "abs_x") if signed else x
        bound = conv(magnitudes, r * w_abs, r * np.abs(b).sum() + self.atol, p + "bound")
        s = self._reduce("ReduceSum", node.output[0], [1], p + "sum")  # [N, 1, ...]
        return self._residual(p, self._node("Sub", [s, predicted], p + "d"), bound), False, r, "conv-pixel"

    def _gemm_or_matmul(self, node: onnx.NodeProto, p: str, signed: bool) -> tuple[str, bool, float, str]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = self.consts[node.input[1]].astype(np.float64)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        trans_a = int(attrs.get("transA", 0))
        if node.op_type == "Gemm" and int(attrs.get("transB", 0)):
            b = b.T
        k_in, n_out = b.shape
        v = alpha * b.sum(axis=1, keepdims=True)  # B e: [K, 1]
        m = abs(alpha) * np.abs(b).sum(axis=1, keepdims=True)
        c_sum, c_abs = np.zeros((1, 1)), np.zeros((1, 1))
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            c = self.consts[node.input[2]].astype(np.float64)
            rows = c.shape[0] if c.ndim == 2 else 1
            full = np.broadcast_to(c.reshape(rows, -1), (rows, n_out))
            c_sum = beta * full.sum(axis=1, keepdims=True)  # [1 or M, 1]
            c_abs = abs(beta) * np.abs(full).sum(axis=1, keepdims=True)
        r = self._rtol(k_in + 2, n_out + k_in + 4)  # dot product, alpha, C; the row sum; the check's dot product
        a, y = node.input[0], node.output[0]
        ones = self._init(p + "ones", np.ones((n_out, 1)))
        magnitudes = self._node("Abs", [a], p + "abs_a") if signed else a
        a_shape = self.shapes.get(a)
        if node.op_type == "Gemm" or (a_shape is not None and len(a_shape) == 2):  # [M, N]: Gemm chains
            predicted = self._node("Gemm", [a, self._init(p + "v", -v), self._init(p + "c", -c_sum)], p + "minus_p",
                                   transA=trans_a)
            d = self._node("Gemm", [y, ones, predicted], p + "d")  # [M, 1]
            bound = self._node("Gemm", [magnitudes, self._init(p + "m", r * m),
                                        self._init(p + "slack", r * c_abs + self.atol)], p + "bound", transA=trans_a)
            return self._residual(p, d, bound), True, r, "rows"
        # a batched MatMul, [..., M, K] x [K, N]: the same with MatMul and Add
        s = self._node("MatMul", [y, ones], p + "sum")
        predicted = self._node("MatMul", [a, self._init(p + "v", v)], p + "p")
        d = self._node("Sub", [s, predicted], p + "d")
        scaled = self._node("MatMul", [magnitudes, self._init(p + "m", r * m)], p + "m_r")
        bound = self._node("Add", [scaled, self._init(p + "slack", np.array([self.atol]))], p + "bound")
        return self._residual(p, d, bound), False, r, "rows"

    def _rtol(self, n_dot: int, n_sum: int) -> float:
        """Relative tolerance: ``n_dot`` terms in each of the node's own products, ``n_sum`` in plain sums.

        The node's products get :data:`SAFETY` (a GPU may compute a convolution by a
        transform whose error exceeds the dot-product bound); sums (ReduceSum, the check's
        Gemm) are held to the bound itself, ``n u``, which no summation order exceeds.
        Operands rounded before multiplying (TF32) cost ``2 u_operand`` on each side.
        """
        if self.rtol is not None:
            return self.rtol
        return SAFETY * n_dot * self.u_acc + 4 * self.u_op + (n_sum + 2) * self.u_acc

    # -- the flag --------------------------------------------------------------------------

    def _flag(self, outcomes: list[_Outcome]) -> None:
        """``abft_ok[n]``: every check of sample ``n`` held; NaN fails (LessOrEqual is false for it)."""
        oks = []
        for per_sample, name in ((True, "sample"), (False, "batch")):
            columns = [o.residual for o in outcomes if o.per_sample == per_sample]
            if not columns:
                continue
            if not per_sample:  # one row: the whole batch
                row = self._init(f"{PREFIX}row", np.array([1, -1]), np.int64)
                columns = [self._node("Reshape", [c, row], c + "/row") for c in columns]
            joined = columns[0] if len(columns) == 1 else self._node("Concat", columns, f"{PREFIX}{name}/all", axis=1)
            held = self._node("LessOrEqual", [joined, self._init(f"{PREFIX}zero", np.array(0.0))], f"{PREFIX}{name}/held")
            as_float = self._node("Cast", [held], f"{PREFIX}{name}/held_f", to=TensorProto.FLOAT)
            oks.append(self._reduce("ReduceMin", as_float, [1], f"{PREFIX}{name}/ok", keepdims=0))  # [N] or [1]
        if not any(o.per_sample for o in outcomes):  # spread the batch-wide verdict over the batch
            shape = self._node("Shape", [self._first_input()], f"{PREFIX}input_shape")
            n = self._node("Slice", [shape, self._init(f"{PREFIX}s0", np.array([0]), np.int64),
                                     self._init(f"{PREFIX}s1", np.array([1]), np.int64)], f"{PREFIX}batch_size")
            oks.append(self._node("Expand", [self._init(f"{PREFIX}one", np.array([1.0])), n], f"{PREFIX}ones"))
        ok = oks[0] if len(oks) == 1 else self._node("Min", oks, f"{PREFIX}ok")
        self._node("Cast", [ok], OUTPUT, to=TensorProto.BOOL)
        self.graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.BOOL, [self._batch_param()]))

    # -- helpers ---------------------------------------------------------------------------

    def _node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.new_nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def _init(self, name: str, value: np.ndarray, dtype: type = np.float32) -> str:
        if not any(t.name == name for t in self.new_inits):
            self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def _reduce(self, op: str, x: str, axes: list[int], output: str, keepdims: int = 1) -> str:
        axes_as_input = self.opset >= (13 if op == "ReduceSum" else 18)  # ReduceL1, ReduceMin, ReduceProd: 18
        if axes_as_input:
            name = self._init(f"{PREFIX}axes{'_'.join(str(a) for a in axes)}", np.array(axes), np.int64)
            return self._node(op, [x, name], output, keepdims=keepdims)
        return self._node(op, [x], output, axes=axes, keepdims=keepdims)

    def _first_input(self) -> str:
        inits = {t.name for t in self.graph.initializer}
        for i in self.graph.input:
            if i.name not in inits:
                return i.name
        raise ValueError("the model has no input to take the batch size from")

    def _batch_param(self) -> str | int | None:
        first = self._first_input()
        for i in self.graph.input:
            if i.name == first and i.type.tensor_type.shape.dim:
                d = i.type.tensor_type.shape.dim[0]
                return d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
        return None

    def _batch_dim(self, tensor: str) -> bool:
        """Whether ``tensor``'s first axis is provably the first input's (then a flag per sample)."""
        want = self._batch_param()
        got = self.shapes.get(tensor)
        if want is None or not got:
            return False
        return got[0] == want

    def _inferred_shapes(self) -> dict[str, list[str | int | None]]:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:  # noqa: BLE001 - a model shape inference cannot follow is checked batch-wide
            return {}
        shapes: dict[str, list[str | int | None]] = {}
        for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        return shapes

    def _nonneg_tensors(self) -> set[str]:
        known = {name for name, v in self.consts.items() if v.dtype.kind == "f" and v.size and bool((v >= 0).all())}
        for node in self.graph.node:  # graph order is topological
            if node.domain not in ("", "ai.onnx"):
                continue
            data = node.input[: _DATA_INPUTS.get(node.op_type, len(node.input))]
            if node.op_type in _NONNEG_ALWAYS or (
                node.op_type in _NONNEG_IF_INPUTS and all(i in known for i in data if i)
            ):
                known.update(o for o in node.output if o)
        return known

    def _all_names(self) -> Iterable[str]:
        g = self.graph
        yield from (t.name for t in g.initializer)
        yield from (v.name for v in list(g.input) + list(g.output) + list(g.value_info))
        for n in g.node:
            yield from n.output
            yield n.name
