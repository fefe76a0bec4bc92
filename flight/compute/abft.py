"""Checked inference: an ONNX graph pass that adds checksums to Conv, Gemm and MatMul nodes.

Algorithm-based fault tolerance (Huang & Abraham, IEEE Trans. Computers C-33(6), 1984): a
linear operation commutes with a sum, so a sum of its outputs can be computed a second way,
from sums of its input and weights, at a fraction of the cost. NVIDIA's ABED (Hari et al.,
"Making convolutions resilient via algorithm-based error detection techniques", IEEE TDSC
2022) checks TensorRT convolutions this way. :func:`protect` rewrites a model so that, next
to its own outputs, it gives a per-sample flag :data:`OUTPUT` (bool ``[batch]``, true when
every check of that sample held), with standard ONNX operators only (ReduceSum, Reshape,
GlobalAveragePool, Flatten, Abs, MatMul, Gemm, Concat, LessOrEqual, Cast, ReduceMin; Conv,
Sub, Add, Min where a check cannot take the common form), so it runs on any execution
provider. The model's own nodes, outputs and names are untouched: the checks only read.

The checks, for a node whose weights are constants (initializers or Constant nodes):

- Conv ``Y = conv(X, W) + b``, ``W[K, C/g, k...]``, sizes known: per sample and per output
  channel ``k``, the sum of ``Y[k]`` over its positions, ``S_k``, against
  ``P_k = sum_{c,i} G[c, i, k] X[c, i] + positions * b_k``, ``G[c, i, k]`` the sum of the
  weights ``W[k, c, t]`` over the taps ``t`` that read input position ``i`` (padding,
  strides, dilations and groups included): the input checksum of the convolution seen as a
  product over positions. ``G`` is computed here, once, and stored as an initializer: a bit
  flip in ``W`` afterwards breaks the equality (computing ``G`` from ``W`` at run time would
  follow the flip). Where every tap reads every input position once (1x1, stride 1, no
  padding) ``G`` does not change with the position and ``P`` needs only the sums of ``X``
  over its positions; else ``X`` is first summed over the columns each tap of the last axis
  reads (a MatMul with a 0/1 matrix), which leaves ``G`` a matrix of ``C * H * k_W`` rows.
  Where that ``G`` is large (:data:`WINDOW_FORM_MIN`) and the weights at most half its size,
  the columns' sums are summed again over the rows each tap reads (a Transpose and a second
  MatMul), which gives the sums of ``X`` over each tap's window, and ``P`` is read from the
  weights themselves (:meth:`_Pass._conv_windows`): a deep layer's check then reads a matrix
  of its weights' size at each batch, not one of ``H / k_H`` times theirs. Where ``X`` can be
  negative, the sums are over each of the smallest number (2 or more) of equal runs of whole
  output rows instead: a zero-mean input (normalised data) can cancel a weight flip's effect
  over the whole output, rarely over each half (a pointwise Conv with padding takes the general
  form for it: its border outputs read no input; where the check's matrices split would be
  larger than :data:`MAX_CHECK_WEIGHTS`, as for a wide layer on a prime number of rows, one sum
  is kept, and a zero-mean input can hide a fault there). Where sizes are unknown, or the
  matrices would be larger than :data:`MAX_CHECK_WEIGHTS` even in one run, or the input can be
  negative and there is nothing to split (a single output or input row, as a 1-D model exported
  as Conv2d has): ABED's output-channel checksum at every output position, with two one-channel
  Convs (slow; and its sum over every output channel has a tolerance in which one channel's
  fault hides where there are hundreds of them).
- Gemm / MatMul ``Y = A B (+ C)``, ``B`` constant ``[K, N]``: the row sums ``Y E`` over each
  group of columns (:func:`_column_groups`: at most :data:`GEMM_GROUP`, wider past
  :data:`GEMM_GROUPS` groups; ``E`` their ``[N, G]`` indicator) must equal
  ``A (B E) (+ C E)``, ``B E`` (``K G`` numbers) stored here. Row sums, not column sums: a
  row is one sample, so the flag is per sample, and the check costs ``2 K G`` multiply-adds a
  row against ``K N`` for the node. The column check ``e^T Y = (e^T A) B`` would need ``B``
  at run time (so it would miss flips in ``B`` unless ``B`` were stored twice), costs a
  ``K x N`` product per batch and mixes the samples; it adds coverage only for faults that
  leave every row sum unchanged (two compensating errors in one row), so it is left out.

Why these sums. On a CPU the checks cost what they read, not their multiply-adds: a pass
over a tensor costs about as much as a small layer, a node about a microsecond. So each
check reads its node's output once, with a ReduceSum over contiguous memory (the fastest
reduction onnxruntime has), and its input once (or not at all, where the model already
averages it: its GlobalAveragePool is reused). ABED's per-position checksum needs the sum
over channels at every position and a one-channel convolution for ``P``, which onnxruntime
runs at about the cost of the layer. Sums over the batch instead (one checksum per output
position for the whole batch, ``P`` from one image through the Conv; a flag per batch) cost
no less, measured on the shipped model: a ReduceSum over the batch axis strides through memory
(31 us against 20 over the positions of the same tensor), a Conv of one image still costs about
10 us, and the first two Convs' checks alone cost as much as every check here (+0.24 at
``extended``, +0.35 at ``all``). ReduceL1 is not used: over the same axis it cost ten times Abs
then ReduceSum (182 us against 17). Each check is then written as sums of products, two columns
per checksum, ``S - P - B`` and ``P - S - B`` (``B`` its tolerance), both <= 0 where
it holds: a chain of Gemms, ``Gemm(A_i, B_i, previous)``, adds its terms, with no Sub, Abs
or compare of its own. One LessOrEqual, Cast and ReduceMin over all the checks' columns
give the flag. The nodes are made so that onnxruntime runs each check right after the node
it checks (:meth:`_Pass._flag`). What no check can avoid: a checked node's output must
exist, so onnxruntime can no longer fuse the node with the activation after it (Conv+Relu,
Conv+Sigmoid), and the activation becomes a pass of its own; on x86 at optimisation ``all``
the output also leaves onnxruntime's NCHWc layout, a reorder of its own (``python -m
bench.radiation``: ``abft_overhead_floor``, 0.03 to 0.07 of the shipped model's time at
``extended``; ``abft_overhead_floor_all``, 0.15 to 0.22 at ``all``, in runs of 2026-12-05 on 2-vCPU
x86 VMs, one with AVX-512). Nor can a check avoid reading the output it vouches for and the input
it predicts it from: those reads alone, each tensor once as the checks read it and nothing else,
cost the shipped model 0.14 to 0.17 of its time at ``extended`` and 0.17 to 0.21 at ``all`` in
those runs (``abft_overhead_read_floor``, ``_all``), against 0.44 to 0.61 and 0.48 to 0.59 for the
checks whole (``abft_overhead_extended``, ``abft_overhead``; 0.28 to 0.32 at ``all`` without the
recomputed copies below, ``abft_overhead_without_recompute``). These figures move between runs on
a shared machine, and more between machines: the bench's own output is the reference, not these.

Tolerance. Floating-point sums rounded in a different order differ. The worst case for a sum
of ``n`` terms (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 3.1:
``|fl(x.y) - x.y| <= n u sum |x_i y_i|``) is reached only when every rounding goes the same
way; the bound used is the probabilistic one, ``sqrt(n) u sum |x_i y_i|`` times a constant
(Higham and Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci.
Comput. 41(5), 2019: with rounding errors independent and of mean zero it holds but with a
probability that falls as ``exp(-lambda^2 / 2)``). Why: under the worst case a wide layer's
checksum, the sum of many outputs, had a tolerance so large that a flipped weight's effect
on one output hid in it (a Gemm of 1024 inputs and 128 outputs: 0 of 403 flips that moved an
output by 1e-3 of its scale caught, found in review; with this bound and column groups,
:data:`GEMM_GROUP`, 382). Plain sums (a ReduceSum or a pooling over positions) keep the worst
case, ``n u``: over a constant frame their roundings all go one way (:meth:`_Pass._rtol`); a
large frame is summed in chunks of about its square root, then the chunks (:data:`TWO_STAGE_POSITIONS`).
Measured, not assumed: the largest ``|S - P|`` of a Gemm in units of ``u M`` stayed at or
below 2.4 for onnxruntime's CPU kernels on every kind of input tried (signed, non-negative,
constant, one-hot, a dynamic range of 1e12, weights all positive) for ``n`` from 64 to 4096,
and cuDNN's and cuBLAS's FP32 kernels on an H200 (both algorithm choices, Winograd among
them) flagged no clean tile of the shipped model in 3e5, nor of six wide layers (``python -m
bench.radiation``, ``python -m bench.abft_gpu``; the H200 run before plain sums were given back
their worst case, whose tolerance was tighter still).
A check holds when ``|S - P| <= atol + rtol * M (+ rtol_P * M')``, ``M`` the sum of
the magnitudes of every term behind it (``sum |W| |X| + |b|`` over the positions summed),
bounded at run time from the sums of ``|X|`` (or of X itself where it cannot be negative:
after Relu, Sigmoid, pooling...); for a Conv, ``M'`` is the magnitude of ``P``'s own
products (``sum |G| |X|``, where the taps of a filter may cancel in ``G``) and ``rtol_P``
their rounding. ``rtol`` per node is ``SAFETY * sqrt(n_dot) u + 8 u_operand + sqrt(n_sum + 2) u
+ n_plain u``: ``u`` the unit roundoff of the accumulation, ``u_operand`` that of the operands
where the provider rounds them first (TF32; the worst case, operands are rounded once),
``n_dot`` the terms of one output of the node, ``n_sum`` those of the check's own products
(:func:`_chain_terms`) and ``n_plain`` those of its plain sums; ``rtol_P`` is ``sqrt(n_P) u``
for P's products plus ``n u`` for the sums of X it reads. :data:`SAFETY` is the margin, on the node's
own products, for rounding that is not independent and for convolution algorithms that round
more (Winograd and FFT on GPUs). So a clean input does not raise the flag, and a fault that
moves a checksum by more than such rounding is caught. NaN and infinities fail every check (a NaN in a check's sums reaches that check's
columns in that sample's row: the flag of that sample only).

The other operators between checked nodes (Relu, pooling, Sigmoid, the input's normalisation)
and their constants are covered the other way: each check predicts from its node's input
recomputed apart, through copies of those operators from the last checked outputs or the graph's
input (``recompute_inputs``, pass version 6), so a fault in such a tensor or constant moves the
node's output and not its prediction. Before (``recompute_inputs`` off) both sides read the same
tensor, and such a fault passed: on the shipped model, about half of the flips over all its
activations that mattered (``python -m bench.radiation``: ``detect_rate_activations_all_sites``).
The copies cost a pass over each tensor copied.

The model's outputs that no check vouches for, made after the last checked nodes (the Softmax that
makes the probabilities), are recomputed the same way and compared with the model's
(``compare_outputs``, version 7): a copy of a small tail costs little (on the shipped model, a
Softmax of two numbers a tile), a large one (an upsampled map) a pass over each tensor in it.

What is not checked (see docs/architecture.md): operators not copied (:data:`_NOT_COPIED`, other
domains, a Conv, Gemm or MatMul the pass skipped) and what they feed, and an output that cannot be
recomputed (the record's ``uncompared``); a fault in the check's own nodes or copies (it can only
raise the flag, or hide a fault of the same sample by coinciding with one).
Weights no check covers are for the scrubber's hashes (``covered_initializers``).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flight.compute.arithmetic import PRECISIONS
from flight.compute.checks import CHECK_OUTPUT
from flight.compute.graphs import subgraph_reads

PASS_VERSION = 7
"""Bumped when the checks or the tolerance change, so a protected model says what made it. 5: a
large Conv's P is read from the sums over each tap's window (:data:`WINDOW_FORM_MIN`). 6: each
check predicts from its input recomputed apart (``protect``'s ``recompute_inputs``). 7: the model's
outputs made after the last checks are compared with their copies (``protect``'s ``compare_outputs``)."""

TRUSTED_PASS_VERSIONS = (4, 5, 6, PASS_VERSION)
"""The versions whose flag this build reads as a check (flight/compute/worker.py). Version 4 made
these checks but for large Convs, which it read from G or, where G was too large, checked per pixel
(weaker on wide layers, never unsound), and it let a wide check's matrices grow with its runs of
rows (to gigabytes, where a pass of this version refuses them): a model protected on the ground
with it is still trusted. Version 5 made them as this one does, but each check read its node's own
input, so a fault between two checked nodes passed (as it does here with ``recompute_inputs`` off).
Version 6 left the model's outputs made after the last checks (the Softmax's probabilities)
unchecked (as this one does with ``compare_outputs`` off)."""

OUTPUT = CHECK_OUTPUT
"""The added output: bool ``[batch]``, true where every check of that sample held (its name is the one the
readers of flags know: flight/compute/checks.py)."""

PREFIX = "abft/"
"""Every name the pass adds starts with this; a model that already has one is refused."""

META_KEY = "abft"
"""``metadata_props`` key of the pass's record (JSON: version, precision, atol, checks, skipped)."""

SAFETY = 8.0
"""Margin over the probabilistic bound on the node's own products: for roundings that are not
independent (sums of terms of one sign), and for transformation-based convolutions (Winograd,
FFT, which cuDNN may choose), which round more, by a factor that grows with the tile size.
With it the largest rounding measured (module docstring, "Tolerance") is below a fortieth of
the tolerance on the CPU."""

DEFAULT_ATOL = 1e-30
"""Absolute slack for products flushed to zero (subnormals, 2**-126 ~ 1.2e-38 each); every
other rounding error is relative to the magnitudes and covered by ``rtol``."""

CHECKED_OPS = ("Conv", "Gemm", "MatMul")

MAX_CHECK_WEIGHTS = 1 << 23
"""Most elements a Conv's check may store in all its matrices (32 MiB of float32): ``G``, of
``C * H_in * k_W`` rows for a 2-D Conv that is not pointwise (3x3...), or the weights' own
``C * taps`` where P is read by windows (:data:`WINDOW_FORM_MIN`), with as many columns as output
channels times runs of rows where the input is signed (twice that, P's and its bound's, where it
cannot be negative); the bound's; the 0/1 matrices that sum X; and S's and the chain's identities,
``2 (K * runs)^2`` each up to :data:`IDENTITY_GEMM_MAX` checksums. Past it the runs are dropped,
then the Conv is checked per pixel; a pointwise Conv on one run keeps its check whatever its size,
as its matrices are its own weights, two to four times (P's and, on a signed input, the bound's)."""

IDENTITY_GEMM_MAX = 64
"""Checksums of one check (output channels times runs) past which the parts of its chain that are
an identity, S's and a P computed apart, are added elementwise (:meth:`_Pass._sum_of_products`):
a Gemm by ``[I, -I]`` of 512 columns stores half a million numbers for a thousand additions. Up to
it one Gemm is faster than the three or four nodes that replace it (the shipped model's widest
check has 32)."""

WINDOW_FORM_MIN = 1 << 20
"""G's elements (4 MiB of float32) past which a Conv of 2 or more axes reads P from the sums of its
input over each tap's window (:meth:`_Pass._conv_windows`), where that matrix, the weights' own
size, is at most half of G. A check reads its matrix at every batch, and past the caches that read
sets its cost: after a Relu, a 3x3 Conv of 256 channels on 8 x 8 positions cost 0.25 of the
layer's time with G and 0.16 to 0.17 by windows, with owned weights here (``abft_wide_overhead``).
A 3x3 Conv of 512 channels on 7 x 7 positions, whose check with G is past
:data:`MAX_CHECK_WEIGHTS`, was checked per pixel and caught none of 280 flips that moved its
outputs; by windows it catches 274, at 0.12 to 0.14 of the layer's time against 0.09 per pixel.
Below it, G's form runs fewer nodes, and its tolerance is tighter: the taps of a filter partly
cancel in G, not in the weights, and the windows' sums over rows are plain sums of up to every
leading position a window reads (a 3-D input's ``D * H``), where G's are of the last axis alone."""

_NOT_COPIED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
               "Dropout", "If", "Loop", "Scan", "Constant", "ConstantOfShape",
               "ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "Einsum",
               "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention"}
"""Operators a check's input is never recomputed through (:meth:`_Pass._independent`): random, with a
subgraph, a constant of its own, or heavy work (weights and arithmetic) that a copy would do twice
(found in review: a ConvTranspose copied took the run from 10.3 to 12.9 ms)."""

_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)  # a copy's read: Min(v, +inf)

OUTPUT_RTOL = 2.0**-12
"""How far a model's output may be from its copy (:meth:`_Pass._compare_outputs`) before the flag is
raised, relative to the largest magnitude in the copy's row (the sample's values of that output).
Where onnxruntime runs the copy as it runs the model the two are equal bit for bit (the shipped
model on its CPU kernels: no clean tile of the bench's 1e5 differed); where it does not, they differ
by rounding: a pooling the model reads in onnxruntime's blocked NCHWc layout and its copy in the
plain one sums in another order (6.7e-5 of an element's own value over 1024 positions, found in
review), and a provider may sum in another order from one run to the next. 2.4e-4 of the row's
scale allows a sum of 4096 terms its worst case, and is a quarter of what moves a result (the
bench's consequence threshold: 1e-3 of a probability)."""

FLAG_RECORDS = ("ranges",)
"""``metadata_props`` keys of other graph passes whose record names, under ``"output"``, a flag the
pass added (flight/compute/ranges.py: ``META_KEY``): not a result, so never compared with a copy.
Any other entry naming an output (a model card's) is no reason to leave that output unchecked."""

OWN_WATCHED_MAX = 4096
"""The checks' own float constants of at most this many elements (the flag's threshold, the slack,
the copies' constants) are watched (:func:`covered_initializers`): a fault in one can loosen every
check at once. Their large matrices are left to the periodic scrub: watching them after every slice
would read megabytes on a large model."""

NCHWC_BLOCKS = (8, 16, 32)
"""The channel blocks of onnxruntime's NCHWc layout that ``protect(nchwc=...)`` reads for: 8 on AVX2, 16
on AVX-512 (flight/compute/providers.py asks onnxruntime which); ``nchwc=True`` means 8. See
:meth:`_Pass._kept_blocked`."""

_KEEP_LAYOUT = {"AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Sigmoid", "Tanh", "HardSigmoid",
                "BatchNormalization"}
"""Operators that onnxruntime runs on a blocked NCHWc tensor without reordering it (a BatchNormalization
as a Conv of its own); a Clip or a LeakyRelu has it reordered (found in review)."""

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


def _keeps_sign(node: onnx.NodeProto) -> bool:
    """Whether ``node`` (of :data:`_NONNEG_IF_INPUTS`, its data inputs non-negative) keeps its
    output non-negative: a cubic Resize, whose weights below zero overshoot, does not. (A Pad's
    fill value is one of its data inputs: :meth:`_Pass._nonneg_tensors`.)"""
    if node.op_type == "Resize":
        mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"nearest")
        return (mode.decode() if isinstance(mode, bytes) else str(mode)) != "cubic"
    return True


@dataclass(frozen=True)
class Check:
    """One node the pass checks, as recorded in the model's metadata."""

    node: str  # the node's name, or "Op#index" for an unnamed one
    op: str
    output: str  # the tensor whose sum is checked
    rtol: float
    per_sample: bool  # False: the output has no batch axis the pass could prove; a fault flags the whole batch
    form: str  # "conv-channels" (per output channel, runs of rows; "conv-windows", P by windows), "conv-pixel"
    # (per output pixel), "rows" (Gemm, MatMul)
    rtol_p: float = 0.0  # a Conv's "conv-channels" or "-windows": the rounding of P's own products, on their magnitudes


@dataclass(frozen=True)
class _Outcome:
    residual: str  # [N, ...]: <= 0 where the check holds
    per_sample: bool


@dataclass(frozen=True)
class _Linear:
    """A check as a sum of products, ``sum_i A_i B_i + const``: ``[rows, 2 n]``, for each of its ``n``
    checksums the columns S - P - B and P - S - B, both <= 0 where it holds."""

    parts: tuple[tuple[str, np.ndarray, int, str], ...]  # (A [rows, m], or [m, rows] if transA; B [m, 2 n]; transA; name)
    const: np.ndarray  # [1, 2 n]
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
    nchwc: bool | int = False,
    recompute_inputs: bool = True,
    compare_outputs: bool | None = None,
    keepalive: Callable[[], None] | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs :data:`OUTPUT`, with a checksum on each Conv, Gemm, MatMul.

    ``precision`` is the arithmetic of the provider that will run it (:data:`PRECISIONS`);
    ``rtol`` overrides the per-node tolerance it gives (one number for every node);
    ``atol`` is the absolute slack in the units of each checked output;
    ``nchwc``: the session will keep Conv outputs in onnxruntime's blocked NCHWc layout (its CPU
    provider at level ``all`` on x86), in blocks of this many channels
    (:func:`flight.compute.providers.checksum_layout_nchwc`: 8 on AVX2, 16 on AVX-512; ``True`` is 8;
    0 or ``False``, the plain layout). A 2-D output of whole blocks of a Conv onnxruntime blocks is
    then read where that layout keeps it: its sums over every position with a GlobalAveragePool, over
    runs of rows with an AveragePool, rather than a ReduceSum, which needs the tensor reordered first
    but is the faster read everywhere else, and the copy of a Relu after it from a 1x1 MaxPool of it,
    where nothing else has either reordered (a reader onnxruntime runs plain, a graph output: the
    pass is then run again with such tensors read plain from the start; the same checks either way;
    the record's ``layout_sums`` counts the reads some block size makes otherwise, the same for every
    layout, 0 where the bytes are the same for all; ``nchwc_block`` the block).
    ``recompute_inputs``: each check predicts from a copy of its node's input recomputed from the
    last checked outputs (or the graph's input) through copies of the unchecked nodes between, their
    constants copied too (:meth:`_Pass._independent`), so a fault in a tensor between two checked
    nodes (a Relu's output, pooled features, the normalised input) or in those constants moves the
    checked node's output and not its prediction, and its check fails; off, each check reads the
    tensor its node reads, and such a fault passes (the record's ``recomputed``).
    ``compare_outputs`` (default: as ``recompute_inputs``): each of the model's outputs that no check
    vouches for (made after the last checked nodes: the Softmax's probabilities) is recomputed the same
    way and compared with the model's, within :data:`OUTPUT_RTOL`, so a fault there raises the flag too
    (the record's ``compared``; an output that cannot be recomputed is listed under ``uncompared``).
    ``keepalive``: called at each node the pass checks and makes, so that a caller with a watchdog
    to answer (the compute worker's pings) can answer it while a model of thousands of nodes is
    made (seconds on a board's CPU); it changes nothing the pass makes.

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
    if isinstance(nchwc, (bool, np.bool_)):
        block = NCHWC_BLOCKS[0] if nchwc else 0
    elif isinstance(nchwc, numbers.Integral) and int(nchwc) in (0, *NCHWC_BLOCKS):
        block = int(nchwc)
    else:
        raise ValueError(f"nchwc must be a bool, 0 or a block of {', '.join(map(str, NCHWC_BLOCKS))} channels, "
                         f"got {nchwc!r}")
    if is_protected(model):
        raise ValueError("model is already protected (is_protected() is true); protect the original instead")
    compare = bool(recompute_inputs) if compare_outputs is None else bool(compare_outputs)
    plain: set[str] = set()
    while True:  # again, reading plain the tensors read plain anyway (_Pass.read_plain_anyway)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        made = _Pass(out, precision, rtol, atol, strict, block, bool(recompute_inputs), compare, frozenset(plain),
                     keepalive)
        made.run()
        if not made.unblock:
            return out
        plain |= made.unblock


def protect_bytes(data: bytes, **options: object) -> bytes:
    """:func:`protect` on serialized ONNX: same bytes and options in, same bytes out (a stable SHA-256)."""
    return protect(onnx.load_from_string(data), **options).SerializeToString(deterministic=True)  # type: ignore[arg-type]


def is_protected(model: onnx.ModelProto) -> bool:
    """Whether :func:`protect` made ``model``: it has the :data:`OUTPUT` output and the pass's record."""
    return marked(model, OUTPUT, META_KEY)


def describe(model: onnx.ModelProto) -> dict[str, object]:
    """The pass's record in a protected model: version, precision, atol, checks, skipped (as dicts)."""
    return record(model, META_KEY, "protected")


def covered_initializers(model: onnx.ModelProto, own_prefixes: tuple[str, ...] = (PREFIX,),
                         check_prefixes: tuple[str, ...] = (PREFIX,)) -> set[str]:
    """The initializers of a protected ``model`` a fault in which its checks see, or that nothing reads:
    the weights and biases (inputs 1 and 2) of the nodes it checks, and the constants of the nodes it
    copied for a check's prediction (``recompute_inputs``: the input's normalisation), where no other
    node reads them and what those nodes make reaches the model's result only through checked nodes
    or outputs compared with their copies (``compare_outputs``; found in review: a normalised band
    that went on to the logits past every check was claimed);
    and the checks' own large matrices (``G`` and the bounds, names starting with one of
    ``own_prefixes``, float, over :data:`OWN_WATCHED_MAX` elements: a fault in ``G`` raises the
    flag; one in a bound loosens that check's column until the scrub comes round). The rest (an
    unchecked node's constants, the checks' small constants: the flag's threshold, the slack, the
    copies' constants, their integer shapes and axes, a fault in which makes onnxruntime refuse the
    run) the checks do not cover: the worker checks them against their CRC after each slice
    (flight/compute/scrub.py: ``WeightScrubber.watch``). ``check_prefixes``: nodes so named are
    checks (they make flags, not results): the range checks' too, where the model has them."""
    checked = {c["output"] for c in describe(model)["checks"]}
    names = {t.name for t in model.graph.initializer}
    covered = {t.name for t in model.graph.initializer if t.name.startswith(own_prefixes)
               and t.data_type in _FLOAT_TYPES and int(np.prod(t.dims)) > OWN_WATCHED_MAX}
    made = {o for node in model.graph.node for o in node.output}
    # An output compared with its copy (compare_outputs) ends a copied path as a check does.
    outputs = {o.name for o in model.graph.output} - {c["output"] for c in describe(model).get("compared", [])}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))

    def copied(node: onnx.NodeProto) -> bool:
        return bool(node.output) and not node.name.startswith(PREFIX) and f"{PREFIX}copy/{node.output[0]}" in made

    contained: dict[str, bool] = {}

    def readers_of(node: onnx.NodeProto) -> list[tuple[onnx.NodeProto, int]]:
        return [(reader, i) for o in node.output if o for reader, i in consumers.get(o, [])
                if not reader.name.startswith(check_prefixes)]

    def reaches_only_checks(start: onnx.NodeProto) -> bool:
        """Everything ``start`` (copied) makes goes on only into checked nodes' data input or other
        such copied nodes, and is no output of the model's. With a stack of its own, its readers
        first (found in audit: recursing down a chain of a few hundred copied nodes ran out of
        Python's stack, and the model ran with no checks)."""
        stack = [(start, False)]
        while stack:
            node, ready = stack.pop()
            key = node.output[0]
            if key in contained and not ready:
                continue
            readers = readers_of(node)
            if not ready:
                contained[key] = False  # until known: a cycle cannot happen in a valid graph; this guards it
                stack.append((node, True))
                stack.extend((r, False) for r, _ in readers if copied(r) and r.output[0] not in contained)
                continue
            contained[key] = all(o not in outputs for o in node.output if o) and all(
                (reader.op_type in CHECKED_OPS and reader.output and reader.output[0] in checked and i == 0)
                or (copied(reader) and contained.get(reader.output[0], False))
                for reader, i in readers)
        return contained[start.output[0]]

    readers: dict[str, list[bool]] = {n: [False] for n in subgraph_reads(model.graph) if n in names}
    for node in model.graph.node:
        as_weight = node.op_type in CHECKED_OPS and bool(node.output) and node.output[0] in checked
        # A node the pass copied for a check to predict from (its constants copied too): a fault in one
        # of its constants moves the model's path and not the check's, so the check sees it.
        through_copy = copied(node) and reaches_only_checks(node)
        for i, name in enumerate(node.input):
            if name in names and not name.startswith(own_prefixes):
                readers.setdefault(name, []).append((as_weight and i in (1, 2)) or through_copy)
            elif name in names:
                readers.setdefault(name, []).append(False)
    covered |= {n for n, by in readers.items() if all(by) and not n.startswith(own_prefixes)}
    covered |= names - set(readers)  # unread: changes nothing
    return covered


def marked(model: onnx.ModelProto, output: str, key: str) -> bool:
    """Whether a graph pass left its ``output`` and its record under ``key`` in ``model`` (this one, ranges.py)."""
    return any(o.name == output for o in model.graph.output) and any(p.key == key for p in model.metadata_props)


def record(model: onnx.ModelProto, key: str, what: str) -> dict[str, object]:
    """The JSON record a graph pass left under ``key`` in ``metadata_props``; ValueError (``what``) if none."""
    for prop in model.metadata_props:
        if prop.key == key:
            return json.loads(prop.value)
    raise ValueError(f"model is not {what}: no {key!r} entry in its metadata_props")


def checkable(model: onnx.ModelProto) -> tuple[list[str], list[Skipped]]:
    """Which nodes :func:`protect` would check (labels), and which it would skip and why."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    p = _Pass(probe, "fp32", None, DEFAULT_ATOL, strict=False)
    return [label for label, _node, _i in p.candidates()], p.skipped


GEMM_GROUP = 16
"""Output columns per checksum of a Gemm or MatMul at most, up to :data:`GEMM_GROUPS` groups: a
row's sum over all of a wide layer's columns has magnitudes (and so a tolerance) so large that a
flipped weight's effect on one output hides in it; per group of 16 the tolerance is that of 16
columns. The check costs ``2 K`` multiply-adds a row per group and per column it keeps (two, S - P
- B and P - S - B; two more for a signed input's bound) against the node's ``K N``."""

TWO_STAGE_POSITIONS = 256
"""Positions a run of a Conv's output (or input) past which its checksums sum it in chunks, then
the chunks: the worst case of a plain sum grows with its terms (:meth:`_Pass._position_sums`). The
shipped model's 16 x 16 tiles stay at one stage."""

GEMM_GROUPS = 8
"""Groups per Gemm or MatMul at most: past 128 columns the groups widen instead, so that the check
of a wide signed layer costs at most ``4 x 8 x 2 K`` multiply-adds a row (a sixteenth of a
1024-by-1024 layer's; 64 groups of 16 cost it 0.4 of the layer's time, found in review)."""


def _identity_scale(coefficients: np.ndarray) -> float | None:
    """``c`` where ``coefficients`` is ``c [I, -I]`` (``c`` not 0), else None."""
    m = coefficients.shape[0]
    if coefficients.ndim != 2 or coefficients.shape[1] != 2 * m or m == 0:
        return None
    left = coefficients[:, :m]
    c = float(left[0, 0])
    if c == 0.0 or np.count_nonzero(left) != m or not (np.diagonal(left) == c).all():  # no m x m eye made to compare
        return None
    return c if np.array_equal(coefficients[:, m:], -left) else None


@dataclass(frozen=True)
class _ConvAxis:
    """One spatial axis of a Conv: tap ``t`` reads input ``o * stride + t * dilation - begin`` for
    output ``o`` (padding where that is outside ``[0, n_in)``). What the check needs of it is computed
    from that index arithmetic alone, never as an array over both input and output positions (found
    in audit: such an array, ``[taps, n_in, n_out]``, took 6 GB and 12 s for a 1-D Conv of 16000
    positions, before any size limit was looked at, even where the check ended up per pixel)."""

    n_in: int
    n_out: int
    kernel: int
    stride: int
    dilation: int
    begin: int

    def _reads(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, the inputs they read) for tap ``t``, those that read an input, not padding."""
        outputs = np.arange(self.n_out)
        index = outputs * self.stride + t * self.dilation - self.begin
        inside = (index >= 0) & (index < self.n_in)
        return outputs[inside], index[inside]

    def taps(self) -> np.ndarray:
        """[tap, input]: how many outputs read that input with that tap (0 or 1)."""
        out = np.zeros((self.kernel, self.n_in))
        for t in range(self.kernel):
            out[t] = np.bincount(self._reads(t)[1], minlength=self.n_in)
        return out

    def runs(self, blocks: int) -> np.ndarray:
        """[tap, input, run]: how many outputs of each of ``blocks`` equal runs of outputs, in order,
        read that input with that tap: ``k * n_in * blocks`` numbers."""
        length = self.n_out // blocks
        out = np.zeros((self.kernel, self.n_in, blocks))
        for t in range(self.kernel):
            outputs, index = self._reads(t)
            out[t] = np.bincount(index * blocks + outputs // length, minlength=self.n_in * blocks).reshape(
                self.n_in, blocks)
        return out

    def identity(self) -> bool:
        """Whether output ``o`` reads input ``o`` alone (one tap, no stride, no padding read)."""
        outputs = np.arange(self.n_out)
        return self.kernel == 1 and self.n_in == self.n_out and np.array_equal(
            outputs * self.stride - self.begin, outputs)


def _chunk(n: int) -> int:
    """The divisor of ``n`` nearest its square root from below (1 where ``n`` is prime): the length
    of the chunks a two-stage sum cuts ``n`` terms into, ``chunk + n / chunk`` terms in the worst case."""
    for d in range(math.isqrt(n), 1, -1):
        if n % d == 0:
            return d
    return 1


def _column_groups(n_out: int) -> np.ndarray:
    """[N, G] indicator of ``n_out`` columns in G groups as equal as can be: the fewest of at most
    :data:`GEMM_GROUP` columns, but no more than :data:`GEMM_GROUPS` (wider groups past that)."""
    g = min(-(-n_out // GEMM_GROUP), GEMM_GROUPS)
    return (np.arange(n_out)[:, None] * g // n_out == np.arange(g)[None, :]).astype(np.float64)


def _terms(n: int) -> float:
    """The rounding of a sum of ``n`` terms, in units of ``u`` times the sum of their magnitudes:
    ``sqrt(n)``, the probabilistic bound (module docstring, "Tolerance"), not the worst case ``n``."""
    return math.sqrt(n)


def _chain_terms(terms: list[int]) -> int:
    """The rounding of a chain of Gemms in units of ``u M``, its parts' terms per column given largest first.

    Part ``j`` (from 0) rounds ``A_j B_j + C``, ``n_j`` products and ``C``, the constant row and
    the parts before it, each at most ``M`` (the check's magnitudes, S's, P's and the bias's
    alike; the bound's ``r M`` below it): at most ``(n_j + 1) u (j + 2) M``. Hence the largest
    parts first.
    """
    return sum((n + 1) * (j + 2) for j, n in enumerate(terms))


class _Pass:
    def __init__(self, model: onnx.ModelProto, precision: str, rtol: float | None, atol: float, strict: bool,
                 block: int = 0, recompute: bool = True, compare: bool = False,
                 plain: frozenset[str] = frozenset(), keepalive: Callable[[], None] | None = None):
        self.model = model
        self._keepalive = keepalive if keepalive is not None else (lambda: None)
        self.recompute = recompute
        self.compare = compare
        self.compared: list[dict[str, object]] = []  # outputs compared with their copies
        self.uncompared: list[str] = []  # and those no check vouches for that could not be
        self.flags: list[str] = []  # other passes' flags among the outputs, not compared
        self._flat: set[str] = set()  # residuals already [N, k]
        self.recomputed = 0  # checks that read a recomputed input
        self._copies: dict[str, str] = {}  # model tensor -> its recomputed copy (itself where none is made)
        self._copy_of: dict[str, str] = {}  # and back
        self._producers = {o: n for n in model.graph.node for o in n.output if o}
        self.block = block  # channels of one block of the session's NCHWc layout; 0: the plain layout
        self.nchwc = block > 0
        self.layout_sums = 0  # reads some NCHWc layout makes another way (_layout_dependent)
        self._read_of: dict[str, str] = {}  # a copies' read (_read) -> the tensor it reads
        self._reads: dict[str, str] = {}  # and back: a model's tensor -> its read
        self._negated: dict[str, str] = {}  # a constant a Sub's copy adds negated -> that negation
        self._blocked_reads: list[tuple[str, str]] = []  # (tensor read blocked, model tensor behind it)
        self._blocked_relus: dict[str, str] = {}  # a Relu's copy made from a blocked read -> the Relu's input
        self.plain = plain  # model tensors read plain whatever the layout (read_plain_anyway)
        self.unblock: set[str] = set()  # found by run(): to be made again with these in plain too
        self.graph = model.graph
        self._model_names = set(self._all_names())  # what no read or negation of the pass's may copy (_unclaimed)
        self.precision = precision
        self.u_acc, self.u_op = PRECISIONS[precision]
        self.rtol = rtol
        self.atol = atol
        self.strict = strict
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.new_nodes: list[onnx.NodeProto] = []
        self.new_inits: list[TensorProto] = []
        # Indexes of the two lists (_add): looked up at each node made, they kept the pass's time linear in
        # the model's size (found in audit: scanning the lists took a chain of 5000 MatMuls 25 s).
        self._new_by_output: dict[str, onnx.NodeProto] = {}
        self._new_first_outputs: set[str] = set()
        self._new_init_names: set[str] = set()
        self._first: str | None = None  # _first_input, once known
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
        self.types: dict[str, int] = {}  # element types, as shape inference finds them (filled below)
        self.shapes = self._inferred_shapes()
        # the model's own means over positions: tensor -> [N, C] (its Flatten where it has one) or [N, C, 1...]
        self._global_means: dict[str, str] = {}
        for n in self.graph.node:
            if n.op_type == "GlobalAveragePool" and n.domain in ("", "ai.onnx"):
                flat = [f.output[0] for f in self.graph.node if f.op_type == "Flatten" and f.input[0] == n.output[0]
                        and all(a.name != "axis" or a.i == 1 for a in f.attribute)]
                self._global_means[n.input[0]] = flat[0] if flat else n.output[0]

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
            if name == OUTPUT:  # found in audit: an inner tensor so named made a graph onnxruntime refused
                raise ValueError(f"the model already has a tensor or node named {OUTPUT!r}, the name of the checks' "
                                 "flag")
        results = [self._check(label, node, i) for label, node, i in list(self.candidates())]
        if self.skipped and self.strict:
            s = self.skipped[0]
            more = f" (and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ""
            raise ValueError(f"cannot check {s.op} node {s.node!r}: {s.reason}{more}; "
                             "protect(..., strict=False) leaves such nodes unchecked and lists them")
        if not results:
            raise ValueError("nothing to check: the model has no Conv, Gemm or MatMul node with constant weights")
        outcomes = [r for r in results if isinstance(r, _Outcome)]
        if self.compare:
            outcomes += self._compare_outputs()
        self._read_copies_alike()
        self.unblock = self.read_plain_anyway()
        if self.unblock:
            return  # protect() makes it again
        self._flag([r for r in results if isinstance(r, _Linear)], outcomes)
        self.graph.node.extend(self.new_nodes)
        self.graph.initializer.extend(self.new_inits)
        record = {
            "version": PASS_VERSION,
            "precision": self.precision,
            "rtol": self.rtol,  # null: per node, in checks
            "atol": self.atol,
            "safety": SAFETY,
            "nchwc": self.nchwc,
            "nchwc_block": self.block,
            "layout_sums": self.layout_sums,  # 0: the same bytes for any layout but for this record
            "recomputed": self.recomputed,  # checks whose prediction reads a recomputed input
            "compared": self.compared,  # outputs compared with their copies (compare_outputs)
            "uncompared": self.uncompared,
            "flags": self.flags,  # other passes' flags among the outputs (FLAG_RECORDS): not compared
            "output": OUTPUT,
            "checks": [asdict(c) for c in self.checks],
            "skipped": [asdict(s) for s in self.skipped],
        }
        self.model.metadata_props.append(onnx.StringStringEntryProto(key=META_KEY, value=json.dumps(record, sort_keys=True)))

    # -- one check -------------------------------------------------------------------------
    #
    # A check is S, the checksum of what the node computed, against P, the same sum predicted
    # from the node's input and constants computed here, within B, the tolerance (atol + rtol
    # * M, M the magnitudes of every term behind S and P). Most are written as a _Linear (the
    # columns S - P - B and P - S - B, each a sum of products, <= 0 where the check holds);
    # the rest as an _Outcome (a residual |S - P| - B, <= 0 where it holds).

    def _check(self, label: str, node: onnx.NodeProto, i: int) -> _Linear | _Outcome:
        self._keepalive()
        p = f"{PREFIX}{i}/"
        x = self._independent(node.input[0]) if self.recompute else node.input[0]
        if x != node.input[0]:  # the check reads the copy; S, the node's own output, is the node's
            proxy = onnx.NodeProto()
            proxy.CopyFrom(node)
            proxy.input[0] = x
            node = proxy
            self.recomputed += 1
        signed = node.input[0] not in self.nonneg
        per_sample = self._batch_dim(node.output[0])
        if node.op_type == "Conv":
            result, r, r_p, form = self._conv(node, p, signed, per_sample)
        else:
            result, r, r_p, form = self._gemm_or_matmul(node, p, signed, per_sample)
        self.checks.append(Check(label, node.op_type, node.output[0], float(r), per_sample, form, float(r_p)))
        return result

    def _independent(self, x: str) -> str:
        """A copy of ``x`` for a check's prediction to read, recomputed apart from the model's own tensor:
        through a copy of each node between it and the last checked outputs or the graph's inputs, their
        constants copied (a flip in the model's own then moves only the model's path). ``x`` itself
        where it is a graph input, a constant, a checked node's output (its own check covers it) or made
        by a node not copied (:data:`_NOT_COPIED`: random, with a subgraph, or heavy work of its own that
        would be done twice; another domain; a Conv, Gemm or MatMul the pass skipped), or by one whose
        inputs are all constants.

        The copies compute what the model does, bit for bit where onnxruntime runs them as it runs the
        model (on the shipped model's CPU kernels), but for the sign of a zero out of a Relu (every sum
        the checks take is the same) and a +inf, which ``Clip`` makes the largest float (every check
        fails on an infinity anyway), so the tolerance is unchanged. Every copy that reads a model's
        tensor another copy reads through its read takes it through that read too
        (:meth:`_read_copies_alike`), so onnxruntime fuses the copies as it fuses the model's nodes. It
        need not run them alike (a pooling it reads in its blocked layout for the model, its copy in
        the plain one, sums in another order): the compare of the outputs allows for that
        (:data:`OUTPUT_RTOL`), a check's prediction from such a copy does not. None may be merged
        back into the model by onnxruntime's common-subexpression elimination (same operator, same
        inputs; it also merges initializers of equal value where the session does not own them): a copy
        whose inputs are all the model's reads one of them through ``Min(v, +inf)``, an identity for
        every number, NaN and infinities included (a Relu becomes ``Clip(v, 0)``, a quarter cheaper
        than ``Max(v, 0)``: 33 us against 45 on h1 of the shipped model in onnxruntime's profile; for a
        session that keeps a Conv's output blocked (:meth:`_kept_blocked`), a Relu of its 1x1 MaxPool read,
        as both keep that layout where a Clip has it reordered first; a
        Sub of a constant an Add of its negation); where no such input is floating point, the node
        is not copied. The cost is a pass over each copied tensor, and those first reads.

        The tensors to copy are found first, walking up with a stack of its own, then copied from the
        inputs down, each finding its inputs' copies made (found in audit: recursing up a chain of a few
        hundred uncopied nodes ran out of Python's stack, and the model ran with no checks); the order
        of the copies is the recursion's, so the protected model is the same."""
        if x in self._copies:
            return self._copies[x]
        for t in self._to_copy(x):
            self._copy_one(t)
        return self._copies[x]

    def _copy_source(self, x: str) -> tuple[onnx.NodeProto, list[int]] | None:
        """The node that makes ``x`` and its data inputs to copy through, or None where ``x`` is taken as
        it is (see :meth:`_independent`)."""
        node = self._producers.get(x)
        owned = [k for k, name in enumerate(node.input) if name and name not in self.consts] if node else []
        if node is None or x in self.consts or not owned or node.op_type in CHECKED_OPS or node.op_type in _NOT_COPIED \
                or node.domain not in ("", "ai.onnx") or any(a.g.node or a.graphs for a in node.attribute):
            return None
        return node, owned

    def _to_copy(self, x: str) -> list[str]:
        """The tensors :meth:`_copy_one` must see, ``x``'s uncopied ancestors first, in the order a
        recursion from ``x`` through each copied node's data inputs (in their order) would reach them."""
        order: list[str] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(x, False)]
        while stack:
            t, expanded = stack.pop()
            if expanded:
                order.append(t)
                continue
            if t in seen or t in self._copies:
                continue
            seen.add(t)
            stack.append((t, True))
            source = self._copy_source(t)
            if source is not None:
                node, owned = source
                stack.extend((node.input[k], False) for k in reversed(owned))
        return order

    def _copy_one(self, x: str) -> str:
        """:meth:`_independent` of ``x``, its inputs' copies made already (:meth:`_to_copy`)."""
        if x in self._copies:
            return self._copies[x]
        source = self._copy_source(x)
        if source is None:
            self._copies[x] = x
            return x
        node, owned = source
        inputs = list(node.input)
        fresh = False
        for k in owned:
            inputs[k] = self._independent(node.input[k])
            fresh |= inputs[k] != node.input[k]
        node_op, negated = node.op_type, None
        if not fresh:  # every data input the model's own: an operator or a read of its own, so never merged
            c = self.consts.get(node.input[1]) if len(node.input) > 1 else None
            blocked = node.op_type == "Relu" and self._layout_dependent(node.input[0])
            self.layout_sums += blocked
            if blocked and self._kept_blocked(node.input[0], self.block):
                inputs = [self._read(node.input[0], counted=False)]  # blocked, as the model's Relu is
                self._blocked_relus[f"{PREFIX}copy/{node.output[0]}"] = node.input[0]
            elif node.op_type == "Relu" and self.types.get(node.input[0]) == TensorProto.FLOAT:
                node_op, inputs = "Clip", [inputs[0], self._init(f"{PREFIX}zero", np.zeros((), np.float32))]
            elif node.op_type == "Sub" and c is not None and c.dtype.kind == "f" and node.input[0] not in self.consts:
                # a - b is a + (-b), exactly: an input's normalisation copied with no read of its own
                negated = self._negated.get(node.input[1])
                if negated is None:
                    negated = self._init(self._unclaimed(f"{PREFIX}copy/-{node.input[1]}"), -c, c.dtype)
                    self._negated[node.input[1]] = negated
                node_op = "Add"
            else:
                k = next((k for k in owned if self.types.get(node.input[k]) in _FLOAT_TYPES), None)
                if k is None:  # no floating-point input to read through Min(v, +inf): left uncopied
                    self._copies[x] = x
                    return x
                inputs[k] = self._read(node.input[k])
        for k, name in enumerate(node.input):  # constants: copies of their own (but the negated one)
            if name and name in self.consts and k < len(inputs) and inputs[k] == name:
                value = self.consts[name]
                inputs[k] = negated if negated is not None and k == 1 else self._init(f"{PREFIX}copy/{name}", value,
                                                                                       value.dtype)
        outputs = [f"{PREFIX}copy/{o}" if o else "" for o in node.output]
        copy = helper.make_node(node_op, inputs, outputs, name=outputs[0] or f"{PREFIX}copy/{node.name}")
        if node_op == node.op_type:
            copy.attribute.extend(node.attribute)
        self._add(copy)
        for o, made in zip(node.output, outputs):
            if o:
                self._copies[o], self._copy_of[made] = made, o
                if o in self.shapes:
                    self.shapes[made] = self.shapes[o]
                if o in self.types:
                    self.types[made] = self.types[o]
                if o in self.nonneg:
                    self.nonneg.add(made)
        return self._copies[x]

    def _compare_outputs(self) -> list[_Outcome]:
        """Each graph output that is not a checked node's (made after the last checks, as the Softmax
        that makes the probabilities), recomputed apart (:meth:`_independent`) and compared with the
        model's: held where the two are equal (an infinity included: a clean ``-inf``, the log of a
        probability that underflowed), or, for floating point, within :data:`OUTPUT_RTOL` of the
        largest finite magnitude in the copy's row of that output (1 for an output within [0, 1],
        :meth:`_unit_bounded`); NaN fails. Per sample where the output's first axis is provably the
        batch's. Each output on its own scale: joined, a large output's scale (or a clean -inf's,
        infinite) gave a small one its slack, and probabilities swapped beside log-probabilities
        passed (found in review). Flags other passes added (:data:`FLAG_RECORDS`) are not results and
        are left (the record's ``flags``); an output no copy can be made of (a graph input, made by a
        node :meth:`_independent` does not copy) is listed in the record's ``uncompared``."""
        checked = {c.output for c in self.checks}
        flags = {OUTPUT}
        for prop in self.model.metadata_props:
            if prop.key not in FLAG_RECORDS:
                continue
            try:
                entry = json.loads(prop.value)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("output"), str):
                flags.add(entry["output"])
                self.flags.append(entry["output"])
        compares = []
        for j, vi in enumerate(list(self.graph.output)):
            name = vi.name
            if name in checked or name in flags:
                continue
            kind = self.types.get(name)
            copy = self._independent(name) if kind is not None and kind != TensorProto.STRING else name
            if copy == name:
                self.uncompared.append(name)
                continue
            floating = kind in (*_FLOAT_TYPES, TensorProto.BFLOAT16)
            rank = len(self.shapes.get(name) or [])
            per_sample = rank > 0 and self._batch_dim(name)
            unit = floating and kind == TensorProto.FLOAT and self._unit_bounded(name)
            self.compared.append({"output": name, "copy": copy, "per_sample": per_sample,
                                  "rtol": OUTPUT_RTOL if floating else 0.0,  # of the scale: 1, or the row's largest
                                  "scale": "1" if unit else "row" if floating else "equal"})
            if unit:
                # Within [0, 1] or NaN (probabilities, a cloud fraction): the scale is 1, no infinity to allow
                # for; three nodes where the general compare takes ten.
                residual = self._node("Sub", [self._node("Abs", [self._node("Sub", [name, copy], f"{PREFIX}out{j}/d")],
                                                         f"{PREFIX}out{j}/abs_d"),
                                              self._init(f"{PREFIX}out/rtol", np.array(OUTPUT_RTOL, np.float32))],
                                      f"{PREFIX}out{j}/residual")
            else:
                residual = self._output_residual(name, copy, f"{PREFIX}out{j}/", floating and kind != TensorProto.FLOAT,
                                                 floating, list(range(1, rank)) if per_sample else list(range(rank)))
            if per_sample and rank == 2:
                self._flat.add(residual)  # [N, k] already: no Flatten in _flag
            compares.append(_Outcome(residual, per_sample))
        return compares

    def _unit_bounded(self, tensor: str) -> bool:
        """Whether the model's ``tensor`` is within [0, 1] (or NaN) whatever its input: made by a Softmax
        or Sigmoid, or from such tensors alone by a mean or a rearrangement."""
        node = self._producers.get(tensor)
        if node is None or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type in ("Softmax", "Sigmoid", "HardSigmoid"):
            return True
        # Means and rearrangements only: a maximum or minimum over nothing is an infinity (a Slice to an empty
        # axis, then ReduceMax), and a MaxPool's window in its padding the lowest float (found in review).
        if node.op_type in ("GlobalAveragePool", "ReduceMean", "AveragePool", "Flatten", "Reshape", "Squeeze",
                            "Unsqueeze", "Transpose", "Identity", "Slice"):
            return self._unit_bounded(node.input[0])
        if node.op_type == "Concat":
            return all(self._unit_bounded(i) for i in node.input)
        return False

    def _output_residual(self, y: str, c: str, p: str, cast: bool, floating: bool, axes: list[int]) -> str:
        """``y`` against its copy ``c``: -0.5 where equal, else for floating point ``|y - c| - rtol s``,
        ``s`` the largest finite ``|c|`` over ``axes`` (the sample's row, or the whole tensor), NaN where
        either is NaN; else 0.5. <= 0 where the compare holds. ``cast``: float16, double or bfloat16,
        compared as float32."""
        held = self._init(f"{PREFIX}out/held", np.array(-0.5, np.float32))
        same = self._node("Equal", [y, c], p + "equal")
        if not floating:
            return self._node("Where", [same, held, self._init(f"{PREFIX}out/failed", np.array(0.5, np.float32))],
                              p + "residual")
        if cast:
            y, c = (self._node("Cast", [t], p + side, to=TensorProto.FLOAT) for t, side in ((y, "model_f"), (c, "copy_f")))
        magnitude = self._node("Abs", [c], p + "abs_copy")
        finite = self._node("Where", [self._node("IsInf", [magnitude], p + "inf"),
                                      self._init(f"{PREFIX}zero", np.zeros((), np.float32)), magnitude],
                            p + "finite")
        scale = self._reduce("ReduceMax", finite, axes, p + "scale") if axes else finite
        slack = self._node("Mul", [scale, self._init(f"{PREFIX}out/rtol", np.array(OUTPUT_RTOL, np.float32))],
                           p + "slack")
        beyond = self._node("Sub", [self._node("Abs", [self._node("Sub", [y, c], p + "d")], p + "abs_d"), slack],
                            p + "beyond")
        return self._node("Where", [same, held, beyond], p + "residual")

    def _read_copies_alike(self) -> None:
        """Every copy that reads a model's tensor another copy reads through its read (:meth:`_read`)
        reads it through that read too, so the copied operators see one input, as the model's do: where
        two of them read it one way each (a LayerNorm's ReduceMean through the read, its Sub directly),
        onnxruntime fused the model's and not the copy's, which then rounded otherwise (found in
        review: 10 clean tiles of 256 flagged). No pass is added: the read is there already."""
        reads = dict(self._reads)
        for n in self.new_nodes:
            if not n.name.startswith(f"{PREFIX}copy/") or n.output[0] in reads.values():
                continue
            for k, name in enumerate(n.input):
                if name in reads:
                    n.input[k] = reads[name]
        # The reads first (they read only the model's tensors and constants): a copy made before a read
        # now reads it, and the graph's nodes must stay in topological order (found in review).
        first = [n for n in self.new_nodes if n.output[0] in reads.values()]
        self.new_nodes[:] = first + [n for n in self.new_nodes if n.output[0] not in reads.values()]

    def read_plain_anyway(self) -> set[str]:
        """The model's tensors read blocked here (a pooling of one, a Relu's copy from a 1x1 MaxPool of
        it, ``Relu(MaxPool1x1(v))``, and a pooling of that copy) that something also reads in the plain
        layout (a check's sums in two stages, a MatMul, a Clip, a graph output): onnxruntime reorders them
        anyway, and their blocked reads cost a reorder and a pass more than the plain ones (found in
        review: a 32 x 32 tile's sums; a pooling chosen for a copy that was then made a Clip).
        :func:`protect` makes the model again with them read plain (``plain``), until none is left.
        Readers that keep a blocked tensor blocked (onnxruntime 1.32 on x86, found in review): poolings
        of whole blocks (but a MaxPool with Indices), the operators of :data:`_KEEP_LAYOUT`, an Add, Mul,
        Sum or Concat of channels whose inputs are all blocked, and a Conv of the model's that
        onnxruntime blocks."""
        outputs = {o.name for o in self.graph.output}
        nodes = [*self.graph.node, *self.new_nodes]

        def kept(n: onnx.NodeProto, t: str) -> bool:  # reads t without having it reordered
            if n.domain not in ("", "ai.onnx"):
                return False
            if n.op_type == "MaxPool":
                return len([o for o in n.output if o]) == 1  # with Indices, onnxruntime runs it plain
            if n.op_type in _KEEP_LAYOUT:
                return n.input[0] == t
            if n.op_type in ("Add", "Mul", "Sum") or (n.op_type == "Concat" and any(
                    a.name == "axis" and helper.get_attribute_value(a) in (1, -3) for a in n.attribute)):
                return all(self._kept_blocked(i, self.block, honour_plain=False) for i in n.input)
            return (n.op_type == "Conv" and n.input[0] == t and n.output[0] in self._producers
                    and self._conv_blocked(n, self.block))

        def read_plain(t: str, but: str = "") -> bool:
            return t in outputs or any(not kept(n, t) for n in nodes if t in n.input and n.output[0] != but)

        found = {v for made, v in self._blocked_relus.items()
                 if read_plain(v, self._reads.get(v, "")) or read_plain(made)}
        return found | {behind for t, behind in self._blocked_reads if read_plain(t)}

    def _read(self, v: str, counted: bool = True) -> str:
        """``v`` through ``Min(v, +inf)`` of its type, once per tensor: a read of the copies' own. For a
        session in onnxruntime's NCHWc layout (``nchwc``) a 2-D image tensor is read through a 1x1
        MaxPool instead, an identity too, which keeps a blocked tensor blocked: through the Min, the copy
        of a pooling after a Conv read the plain layout and summed in another order than the model's
        (found in review: where a pooled output's channel means nearly cancel, clean tiles failed the
        compare). It does so for every image tensor, as which ones onnxruntime keeps blocked is not
        known here past Convs and activations: one it keeps plain is reordered in for the read (a cost
        of 2 to 5 % of such a model's time, found in review), never a wrong sum.
        Each such read of an image tensor counts in ``layout_sums`` (``counted``: but where the caller
        counted its own, as a blocked Relu's copy does)."""
        name = self._reads.get(v)
        image = self.types.get(v) == TensorProto.FLOAT and len(self.shapes.get(v) or []) == 4
        self.layout_sums += counted and image
        if name is None:
            name = self._reads[v] = self._unclaimed(f"{PREFIX}copy/{v}/read")
            for known, value in ((self.shapes, self.shapes.get(v)), (self.types, self.types.get(v))):
                if value is not None:
                    known[name] = value  # the read is v: its layout is read off it (_kept_blocked)
            self._read_of[name] = v
            if self.nchwc and image:
                self._node("MaxPool", [v], name, kernel_shape=[1, 1])
                return name
            dtype = helper.tensor_dtype_to_np_dtype(self.types[v])
            inf = self._init(f"{PREFIX}inf_{np.dtype(dtype).name}", np.array(np.inf, dtype), dtype)
            self._node("Min", [v, inf], name)
        return name

    def _unclaimed(self, name: str) -> str:
        """``name`` (a read's or a negated constant's, a model's name and more after ``abft/copy/``), with
        ``'`` added until no copy of the model's own can have it (``abft/copy/`` and that name) nor has
        the pass made it: found in audit, a model with tensors ``v`` and ``v/read`` had the read of ``v``
        and the copy of ``v/read`` under one name (a graph onnxruntime refused), and one with constants
        ``c`` and ``-c`` had the copy of ``-c`` take the negation of ``c`` (every clean sample flagged)."""
        copy = f"{PREFIX}copy/"
        while name[len(copy):] in self._model_names or name in self._new_first_outputs or name in self._new_init_names:
            name += "'"
        return name

    def _residual(self, p: str, d: str, bound: str) -> str:
        return self._node("Sub", [self._node("Abs", [d], p + "abs_d"), bound], p + "residual")

    def _conv(self, node: onnx.NodeProto, p: str, signed: bool,
              per_sample: bool) -> tuple[_Linear | _Outcome, float, float, str]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        w = self.consts[node.input[1]].astype(np.float64)
        k_out, c_per_group = w.shape[0], w.shape[1]
        if k_out % group:
            raise ValueError(f"Conv node {node.name!r}: {k_out} output channels do not divide into {group} groups")
        kg = k_out // group
        b = self.consts[node.input[2]].astype(np.float64).reshape(k_out) if len(node.input) > 2 and node.input[2] \
            else np.zeros(k_out)
        n_dot = c_per_group * int(np.prod(w.shape[2:])) + 1  # each output element: its dot product and its bias
        # w_ck[c, k, taps...]: the weight input channel c has in output channel k (zero across groups)
        channels = c_per_group * group
        w_ck = np.zeros((channels, k_out, *w.shape[2:]))
        for g in range(group):
            w_ck[g * c_per_group:(g + 1) * c_per_group, g * kg:(g + 1) * kg] = np.swapaxes(w[g * kg:(g + 1) * kg], 0, 1)
        sizes = self._sizes(node, w.shape[2:], attrs)
        if sizes is None:
            return self._conv_per_pixel(node, p, signed, w_ck, b, n_dot, attrs, per_sample)
        in_dims, out_dims, axes = sizes  # the limits below are read off the sizes: nothing large is made first
        taps = [axis.taps() for axis in axes]  # [tap, input]: 1 where the tap reads that input for some output
        pointwise = all(np.array_equal(t, np.ones_like(t)) for t in taps)
        g_size = channels * int(np.prod(in_dims[:-1])) * taps[-1].shape[0] * k_out if len(in_dims) > 1 \
            else channels * in_dims[0] * k_out  # G's elements, a run of rows

        taps_all = int(np.prod(w.shape[2:]))

        def stored(blocks: int, by_position: bool = False) -> tuple[int, bool]:
            """(elements of every matrix the check stores, whether P is read by windows) for ``blocks``
            runs of rows; ``by_position``: P from the sums of X over positions (a pointwise Conv).
            The bound's and P's grow with ``K * blocks``, the chain's identities as its square up to
            :data:`IDENTITY_GEMM_MAX`: that is what limits the runs of a wide layer (found in review: a
            signed 512-channel Conv on 7 rows, in 7 runs, stored 300 MiB)."""
            kb = k_out * blocks
            identities = 2 * kb * kb if kb <= IDENTITY_GEMM_MAX else 0  # S's sums; a P computed apart
            windows = not by_position and len(in_dims) > 1 and g_size * blocks > WINDOW_FORM_MIN \
                and 2 * channels * taps_all * k_out <= g_size * blocks
            sums = 0 if by_position or len(in_dims) < 2 else in_dims[-1] * w.shape[-1]  # X's columns' 0/1 matrix
            if by_position:
                p_rows, p_cols = channels * blocks, kb
            elif windows:
                p_rows, p_cols = channels * taps_all, k_out  # the weights, once whatever the runs
                sums += int(np.prod(in_dims[:-1])) * blocks * (taps_all // w.shape[-1])  # and the rows' (select)
            else:
                p_rows, p_cols = g_size // k_out, kb
            if not signed:  # one run; P and its bound in one product
                return identities + sums + 2 * p_rows * p_cols, windows
            own_product = not by_position  # P a product of its own, then added to the chain
            bound_rows = channels * (blocks if by_position else in_dims[0])
            return (identities + sums + p_rows * p_cols * (1 if own_product else 2)
                    + (identities if own_product else 0) + 2 * bound_rows * kb), windows

        if not pointwise and stored(1)[0] > MAX_CHECK_WEIGHTS:
            return self._conv_per_pixel(node, p, signed, w_ck, b, n_dot, attrs, per_sample)
        identity = all(axis.identity() for axis in axes)  # output position o reads input position o alone
        several = int(np.prod(out_dims)) > 1
        if signed and several and pointwise and not identity:
            # A pointwise Conv with padding: its border outputs read no input, so runs of output rows are
            # not runs of input rows, and the split below needs G per position (found in review: with no
            # split, a zero-mean input hid a weight's fault whole).
            pointwise = False
            if stored(1)[0] > MAX_CHECK_WEIGHTS:
                return self._conv_per_pixel(node, p, signed, w_ck, b, n_dot, attrs, per_sample)
        if signed and several and (out_dims[0] == 1 or in_dims[0] == 1):
            # One output row, or one input row (padding makes more output rows, all reading it): no split
            # into runs of rows reads apart, and a zero-mean input (a 1-D signal normalised per sample)
            # cancels a weight's fault over the whole output (found in review), so the check is per position.
            return self._conv_per_pixel(node, p, signed, w_ck, b, n_dot, attrs, per_sample)
        blocks = 1
        if signed and (identity or not pointwise):  # the smallest split into equal runs of whole rows
            blocks = next(d for d in range(2, out_dims[0] + 1) if out_dims[0] % d == 0) if out_dims[0] > 1 else 1
            if stored(blocks, pointwise)[0] > MAX_CHECK_WEIGHTS:
                blocks = 1  # too large to split: one sum (per pixel costs more than such a layer; see above)
        windows = not pointwise and stored(blocks)[1]
        operand_roundings = 0  # products of the check's, past the three _rtol counts, that round their operands
        # For each block j of output rows: S_kj, the sum of Y[k] over the block's positions, against
        # P_kj = sum_{c,i} G[c, i, k, j] X[c, i] + positions * b_k, G[c, i, k, j] the sum of W[k, c, t]
        # over the taps t that read input position i for an output in the block. Arrays below are
        # [C, input rows or blocks, K, output blocks] before they are flattened to rows c * ... + b and
        # columns k * blocks + j: the order of a Reshape of [N, C, positions] to [N, C * runs, -1].
        positions, rank_x = int(np.prod(out_dims)) // blocks, 2 + len(in_dims)
        if pointwise:  # G does not change with the position: P from the sums of X over positions
            diagonal = np.eye(blocks)[None, :, None, :]
            g_sum = w_ck.reshape(channels, k_out, -1).sum(axis=2)[:, None, :, None] * diagonal
            g_abs = np.abs(w_ck).reshape(channels, k_out, -1).sum(axis=2)[:, None, :, None] * diagonal
            predicted, p_scale, x_plain = self._position_sums(node.input[0], rank_x, blocks, p + "x_sums", channels)
            x_plain = x_plain or int(np.prod(in_dims)) // blocks  # shapes as _sizes read them
            p_coefficients, g_sum_max = p_scale * g_sum.reshape(channels * blocks, -1), np.abs(g_sum)
            n_predict = 0  # P's products are the chain's; x_plain: each sum of X, a plain sum
            in_runs = blocks
        else:
            # [tap, input row, run]: equal runs of whole output rows, in order; made once stored() has
            # set the runs (k * H_in * runs numbers, never H_in * H_out)
            reach_rows = axes[0].runs(blocks)
        if windows:
            predicted, p_coefficients, g_abs, g_sum_max, x_plain, n_predict = self._conv_windows(
                node.input[0], p, signed, w_ck, taps, reach_rows, in_dims, blocks)
            in_runs, p_scale, operand_roundings = in_dims[0], 1.0, 1
        elif not pointwise:
            letters_t, letters_i = "abdefgh"[: len(in_dims)], "lmnopqr"[: len(in_dims)]
            inputs = [letters_t[0] + letters_i[0] + "z"] + [t + i for t, i in zip(letters_t[1:], letters_i[1:])]
            x_in = node.input[0]
            if len(in_dims) > 1:  # the last axis first: X1[..., t] = sum of X over the columns tap t reads
                columns = self._init(p + "columns", taps[-1].T)
                inputs, x_in = inputs[:-1], self._node("MatMul", [x_in, columns], p + "x_columns")
                kept = letters_i[:-1] + letters_t[-1]  # G[c, i..., t_last, k, j]
                x_plain, n_predict = in_dims[-1], 0  # each sum of the last axis, a plain sum
            else:
                kept, x_plain, n_predict = letters_i, 0, 0
            spec = ",".join(["ck" + letters_t] + inputs) + "->c" + kept + "kz"
            g_full = np.einsum(spec, w_ck, reach_rows, *taps[1:-1] if len(in_dims) > 1 else []).reshape(
                channels, in_dims[0], -1, k_out, blocks)
            g_full_abs = np.einsum(spec, np.abs(w_ck), reach_rows, *taps[1:-1] if len(in_dims) > 1 else []).reshape(
                g_full.shape)
            flat = self._node("Flatten", [x_in], p + "x", axis=1)
            if signed:
                predicted = self._node("Gemm", [flat, self._init(p + "g", g_full.reshape(-1, k_out * blocks))], p + "p")
                p_coefficients, p_scale = np.eye(k_out * blocks), 1.0
                n_predict += int((g_full != 0).sum(axis=(0, 1, 2)).max())  # and the terms of P's dot product

                def per_row(g: np.ndarray) -> np.ndarray:  # the largest in each input row, the last axis' taps summed
                    return g.reshape(channels, in_dims[0], -1, taps[-1].shape[0] if len(in_dims) > 1 else 1,
                                     k_out, blocks).sum(axis=3).max(axis=2)

                g_abs, g_sum_max = per_row(g_full_abs), per_row(np.abs(g_full))
                in_runs = in_dims[0]
            else:  # |G| times X's sums are M's own terms: one product gives P and B
                predicted, p_coefficients, p_scale = flat, g_full.reshape(-1, k_out * blocks), 1.0
                g_abs, g_sum_max = g_full_abs.reshape(p_coefficients.shape), np.abs(p_coefficients)
        # Tolerance B_kj = atol + r M_kj + r_p M'_kj. M_kj = sum_{c,i} |G|[c,i,k,j] |X[c,i]| + positions |b_k|
        # (|G| made from |W|) is the magnitude of every term behind S and P. For a non-negative X it is
        # computed from the same sums of X as P, in the same product; else it is bounded by
        # sum_{c,b} max_{i in b} |G|[c,i,k,j] L1[c,b], L1 the sums of |X| over each input row (each run,
        # for a pointwise Conv): a little above M, as fewer taps read the edges. r covers the node's
        # own rounding, S's sum and the chain's. M'_kj: the same with G's entries instead of |G|'s (the
        # taps of a 3x3 filter partly cancel), the magnitude of P's products; r_p, the rounding of the
        # sums of X that P reads and of P's dot product where it is a product of its own.
        merged = not signed
        p_terms = int((p_coefficients != 0).sum(axis=0).max())
        bound_terms = 0 if merged else int((g_abs.reshape(channels * in_runs, -1) != 0).sum(axis=0).max())
        chain = sorted([1, p_terms] if merged else [1, p_terms, bound_terms], reverse=True)
        s_plain = self._sum_terms(node.output[0], 2 + len(out_dims), blocks)[1] or positions  # S: plain sums
        r = self._rtol(n_dot, _chain_terms(chain) + 4, s_plain) + (0.0 if self.rtol is not None
                                                                   else 2 * operand_roundings * self.u_op)
        r_p = 0.0 if self.rtol is not None else (x_plain + _terms(n_predict + 1)) * self.u_acc
        g_bound = (r * g_abs + r_p * g_sum_max).reshape(-1, k_out * blocks)
        s, s_scale, _ = self._position_sums(node.output[0], 2 + len(out_dims), blocks, p + "y_sums", k_out)
        eye = np.eye(k_out * blocks)
        parts = [(1, (s, s_scale * np.hstack([eye, -eye]), 0, p + "s"))]
        if merged:
            parts.append((p_terms, (predicted, np.hstack([-p_coefficients - p_scale * g_bound,
                                                          p_coefficients - p_scale * g_bound]), 0, p + "p_term")))
        else:  # L1: the sums of |X| over each input row (or run of rows)
            absolute = self._node("Abs", [node.input[0]], p + "abs_x")
            magnitudes, m_scale, _ = self._position_sums(absolute, rank_x, in_runs, p + "l1", channels)
            parts += [(p_terms, (predicted, np.hstack([-p_coefficients, p_coefficients]), 0, p + "p_term")),
                      (bound_terms, (magnitudes, -m_scale * np.hstack([g_bound, g_bound]), 0, p + "bound"))]
        parts = [part for _terms, part in sorted(parts, key=lambda tp: -tp[0])]  # largest first, as _chain_terms counts
        bias = np.repeat(b, blocks)
        slack = r * positions * np.abs(bias) + self.atol
        const = np.concatenate([-positions * bias - slack, positions * bias - slack])[None]
        return _Linear(tuple(parts), const, per_sample), r, r_p, "conv-windows" if windows else "conv-channels"

    def _conv_windows(self, x: str, p: str, signed: bool, w_ck: np.ndarray, taps: list[np.ndarray],
                      reach_rows: np.ndarray, in_dims: list[int], blocks: int
                      ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """P of a Conv of 2 or more axes from the sums of X over each tap's window, in two stages.

        ``R[c, j, t]``, the sum of ``X[c]`` over the input positions tap ``t`` reads for the outputs
        of run ``j`` (runs of whole rows, so the count factorises by axis), gives ``P_kj = sum_{c,t}
        W[k, c, t] R[c, j, t]``: the matrix P is read from is the weights themselves, ``C * taps * K``
        numbers whatever the runs, where G holds ``C * H_in * k_W * K`` a run (a 3x3 Conv of 256
        channels on 8 x 8 positions: 2304 rows against 6144). Stage one sums the last axis (a MatMul,
        as G's form does); stage two the others, a Transpose then a MatMul with a 0/1 matrix. Each of
        R's sums is a plain sum, ``W`` terms then those of the leading positions a window reads (its
        rows; a 3-D input's planes times rows), ``x_plain``. Returns (P, or R where X cannot be
        negative and P is the chain's own product; the coefficients that take it to the chain's
        columns; the bound's coefficients on |W|, and on P's products, per input row or per row of R;
        ``x_plain``; the terms of P's dot product where it is a product of its own)."""
        channels, k_out = w_ck.shape[0], w_ck.shape[1]
        kernel, lead = w_ck.shape[2:], in_dims[:-1]
        rank_x = 2 + len(in_dims)
        columns = self._init(p + "columns", taps[-1].T)
        x_columns = self._node("MatMul", [x, columns], p + "x_columns")  # [N, C, lead..., k_W]
        moved = self._node("Transpose", [x_columns], p + "x_columns_t", perm=[0, 1, rank_x - 1, *range(2, rank_x - 1)])
        if len(lead) > 1:
            shape = self._init(f"{PREFIX}windows{channels}x{kernel[-1]}", np.array([0, channels, kernel[-1], -1]),
                               np.int64)
            moved = self._node("Reshape", [moved, shape], p + "x_columns_flat")  # [N, C, k_W, prod(lead)]
        # select[i_lead..., j, t_lead...]: how many outputs of run j read input i_lead with tap t_lead (0 or 1)
        letters_t, letters_i = "abdefgh"[: len(lead)], "lmnopqr"[: len(lead)]
        spec = ",".join([letters_t[0] + letters_i[0] + "z"] + [t + i for t, i in zip(letters_t[1:], letters_i[1:])])
        select = np.einsum(spec + "->" + letters_i + "z" + letters_t, reach_rows, *taps[1:-1]).reshape(
            int(np.prod(lead)), -1)
        windows = self._node("MatMul", [moved, self._init(p + "windows", select)], p + "x_windows")
        # weights[c, t_W, t_lead..., k]: W[k, c, t_lead..., t_W], the order of R's rows (c, t_W, j, t_lead...)
        weights = np.moveaxis(np.moveaxis(w_ck, 1, -1), -2, 1).reshape(-1, k_out)
        x_plain = in_dims[-1] + int(select.sum(axis=0).max())
        if not signed:  # R >= 0: |W| R is M itself, in P's product; one run (runs are for signed inputs)
            assert blocks == 1, "a non-negative input is summed over all its positions"
            flat = self._node("Flatten", [windows], p + "x", axis=1)
            return flat, weights, np.abs(weights), np.abs(weights), x_plain, 0
        # A signed X: P is a product of its own, by run [N, runs, K] where there are several (the weights
        # once, not once a run), then transposed to the chain's columns (k, j); M (and M',
        # P's products' magnitude) is bounded by the sums of |X| over each input row, each with the sum
        # of |W| over the taps that read that row for run j.
        if blocks == 1:
            predicted = self._node("Gemm", [self._node("Flatten", [windows], p + "x", axis=1),
                                            self._init(p + "g", weights)], p + "p")
        else:
            split = self._init(f"{PREFIX}runs{channels * kernel[-1]}x{blocks}",
                               np.array([0, channels * kernel[-1], blocks, -1]), np.int64)
            by_run = self._node("Transpose", [self._node("Reshape", [windows, split], p + "x_runs")], p + "x_runs_t",
                                perm=[0, 2, 1, 3])  # [N, runs, C * k_W, taps_lead]
            flat = self._init(f"{PREFIX}rows{blocks}", np.array([0, blocks, -1]), np.int64)
            per_run = self._node("MatMul", [self._node("Reshape", [by_run, flat], p + "x"),
                                            self._init(p + "g", weights)], p + "p_runs")  # [N, runs, K]
            by_channel = self._node("Transpose", [per_run], p + "p_runs_t", perm=[0, 2, 1])  # [N, K, runs]
            predicted = self._node("Flatten", [by_channel], p + "p", axis=1)  # the chain's order (k, j)
        per_row = np.einsum("ckt,tiz->cikz", np.abs(w_ck).reshape(channels, k_out, kernel[0], -1).sum(axis=3),
                            reach_rows).reshape(channels * in_dims[0], k_out * blocks)
        n_predict = int((weights != 0).sum(axis=0).max())
        return predicted, np.eye(k_out * blocks), per_row, per_row, x_plain, n_predict

    def _position_sums(self, x: str, rank: int, blocks: int, name: str, channels: int) -> tuple[str, float, int]:
        """``x`` [N, C, positions...] summed over each of ``blocks`` equal runs of its positions (whole
        rows): ([N, C * blocks] tensor, a scale to multiply it by, the terms of the plain sums behind
        each of its values, whose rounding the tolerance must allow as ``n u``).

        Over all positions: the model's own GlobalAveragePool of ``x`` where it has one (no second
        pass over ``x``); else, for a session in onnxruntime's NCHWc layout (``block``), a
        GlobalAveragePool where that layout keeps ``x`` blocked (:meth:`_kept_blocked`: 2-D, whole
        blocks, made by a Conv the transformer blocks), as it reorders such a tensor for any other
        reader (on the shipped model, a reorder of h1 cost a fifth of the model's time); else a
        ReduceSum over the trailing axes: on a tensor in the plain layout a GlobalAveragePool took
        twice as long (h1 of the shipped model at ``extended``: 40 us against 21 in onnxruntime's
        profile; in runs here the checks cost 0.28 to 0.29 of the model's time against 0.25 to
        0.28, ``abft_overhead_by_layout``; at ``all`` 0.32 to 0.33 against 0.36 to 0.37). Over runs: a
        Reshape to [N, C * blocks, -1] and a ReduceSum over the last, contiguous axis (a ReduceSum over
        one axis of several, or an AveragePool, is several times slower on a plain tensor); for a
        session that keeps ``x`` blocked, an AveragePool, which reads it there (:meth:`_blocked_runs`).

        More than :data:`TWO_STAGE_POSITIONS` positions a run (a large frame, a long signal): the
        run is cut into chunks of about its square root (:func:`_chunk`, a Reshape of contiguous
        memory, whatever the rank), each chunk summed, then the chunks, so that the worst case of
        the sums is ``2 sqrt(n)`` terms rather than ``n`` (a constant frame rounds every term the
        same way, and a single sum over 256 x 256 positions would need a tolerance that hides a
        flipped weight). A run of a prime number of positions stays one sum.
        """
        shape = self.shapes.get(x)
        known = bool(shape) and len(shape) == rank and all(isinstance(d, int) for d in shape[2:])
        per_run, terms = self._sum_terms(x, rank, blocks)
        if terms < per_run:  # two stages: each run cut into chunks, each chunk summed, then the chunks
            chunk = _chunk(per_run)
            chunks_shape = self._init(f"{PREFIX}chunks{channels * blocks}x{per_run // chunk}x{chunk}",
                                      np.array([0, channels * blocks, per_run // chunk, chunk]), np.int64)
            chunks = self._node("Reshape", [x, chunks_shape], name + "_chunks")  # [N, C * blocks, chunks, chunk]
            partial = self._reduce("ReduceSum", chunks, [3], name + "_partial", keepdims=0)
            return self._reduce("ReduceSum", partial, [2], name, keepdims=0), 1.0, terms
        if blocks > 1:
            pooled = self._blocked_runs(x, shape, rank, blocks, name) if known else None
            if pooled is not None:
                return pooled, float(per_run), per_run
            runs_shape = self._init(f"{PREFIX}runs{channels * blocks}", np.array([0, channels * blocks, -1]), np.int64)
            runs = self._node("Reshape", [x, runs_shape], name + "_runs")  # [N, C * blocks, positions / blocks]
            return self._reduce("ReduceSum", runs, [2], name, keepdims=0), 1.0, per_run
        mean = self._global_means.get(x) if known else None
        if mean is None and known and self._copy_of.get(x) in self._global_means:  # the model's mean, recomputed
            mean = self._independent(self._global_means[self._copy_of[x]])
        if mean is None and known and rank == 4 and self._layout_dependent(x):
            self.layout_sums += 1  # read another way in a blocked layout
            if self._kept_blocked(x, self.block):
                mean = self._node("GlobalAveragePool", [x], name + "_mean")
                self._blocked_reads.append((x, self._blocked_relus.get(x, x)))
        if mean is not None:
            flat = mean if len(self.shapes.get(mean) or []) == 2 else self._node("Flatten", [mean], name, axis=1)
            return flat, float(np.prod(shape[2:])), per_run
        return self._reduce("ReduceSum", x, list(range(2, rank)), name, keepdims=0), 1.0, per_run

    def _conv_blocked(self, node: onnx.NodeProto, block: int) -> bool:
        """Whether onnxruntime's NCHWc transformer, in blocks of ``block`` channels, rewrites the model's
        Conv ``node`` to its blocked form: 2-D with constant weights, and of one group whose input
        channels are fewer than a block (read plain) or a multiple of 4, or depthwise, or of groups whose
        input and output channels are whole blocks each (what onnxruntime 1.32 does on x86: checked
        against it by tests/test_abft.py, for the block of the machine that runs them; 2,233 Convs in
        review at 16). Its output is then blocked, padded to whole blocks."""
        w = self.consts.get(node.input[1]) if len(node.input) > 1 else None
        if w is None or w.ndim != 4 or (len(node.input) > 2 and node.input[2] and node.input[2] not in self.consts):
            return False
        group = next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "group"), 1)
        if group == 1:
            return w.shape[1] < block or w.shape[1] % 4 == 0
        if w.shape[1] == 1 and w.shape[0] == group:
            return True
        return w.shape[1] % block == 0 and (w.shape[0] // group) % block == 0

    def _kept_blocked(self, x: str, block: int, honour_plain: bool = True) -> bool:
        """Whether a session in onnxruntime's NCHWc layout of ``block`` channels (0: none) has ``x``
        blocked where a pooling reads it: a 2-D float image of whole blocks made by a Conv the transformer
        blocks (:meth:`_conv_blocked`), or by a Relu, a Sigmoid or a 1x1 MaxPool of one output (a copy's
        read) of such a tensor, which keep the layout. A pooling of a tensor of other channels, or not
        blocked, has it reordered first (onnxruntime pools a blocked tensor only where its channels are
        whole blocks; a Relu or a Sigmoid keeps a blocked tensor blocked). ``honour_plain``: not where the
        chain passes a tensor of ``plain`` (read plain anyway: :meth:`read_plain_anyway`)."""
        shape = self.shapes.get(x)
        if not (block and self.types.get(x) == TensorProto.FLOAT and shape and len(shape) == 4
                and isinstance(shape[1], int) and shape[1] % block == 0):
            return False
        t = x
        for _ in range(len(self.new_nodes) + len(self._producers)):  # a chain back to the Conv
            if honour_plain and t in self.plain:
                return False
            model_node = self._producers.get(t)
            node = model_node or self._new_by_output.get(t)
            if node is None or node.domain not in ("", "ai.onnx"):
                return False
            if node.op_type == "Conv":
                return node is model_node and self._conv_blocked(node, block)
            kernel = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "kernel_shape"),
                          None)
            single = len([o for o in node.output if o]) == 1  # a MaxPool with Indices stays plain
            if not (node.op_type in ("Relu", "Sigmoid") or (node.op_type == "MaxPool" and kernel == [1, 1] and single)):
                return False
            t = node.input[0]
        return False

    def _layout_dependent(self, x: str) -> bool:
        """Whether some block size of that layout keeps ``x`` (a copy: the model's tensor it copies)
        blocked, so that a read of it is made another way there: counted in ``layout_sums`` whatever
        the layout the pass reads for, so the record of either says whether the bytes depend on it."""
        source = self._read_of.get(x) or self._copy_of.get(x, x)
        return any(self._kept_blocked(source, b, honour_plain=False) for b in NCHWC_BLOCKS)

    def _blocked_runs(self, x: str, shape: list, rank: int, blocks: int, name: str) -> str | None:
        """``x``'s sums over ``blocks`` runs of whole rows as their means, an AveragePool of one run a
        window, where this session's layout keeps ``x`` blocked (:meth:`_kept_blocked`): the Reshape and
        ReduceSum of the plain form read it plain, so it was reordered first (on the shipped model, a
        reorder of a1 cost more than its sums). The mean's division and the check's product by the
        run's positions round twice more, well within the worst case of the plain sum the tolerance
        allows (``n u``, ``n`` the positions)."""
        if rank != 4 or not self._layout_dependent(x):
            return None
        self.layout_sums += 1
        if not self._kept_blocked(x, self.block):
            return None
        self._blocked_reads.append((x, self._blocked_relus.get(x, x)))
        rows = shape[2] // blocks
        pooled = self._node("AveragePool", [x], name + "_pool", kernel_shape=[rows, shape[3]], strides=[rows, shape[3]])
        return self._node("Flatten", [pooled], name, axis=1)  # [N, C * blocks]: channel, then run

    def _sum_terms(self, x: str, rank: int, blocks: int) -> tuple[int, int]:
        """(positions a run of ``x``, terms of the plain sums :meth:`_position_sums` makes of it)."""
        shape = self.shapes.get(x)
        if not (shape and len(shape) == rank and all(isinstance(d, int) for d in shape[2:])):
            return 0, 0
        per_run = int(np.prod(shape[2:])) // blocks
        chunk = _chunk(per_run) if per_run > TWO_STAGE_POSITIONS else 1
        return per_run, (chunk + per_run // chunk if chunk > 1 else per_run)

    def _sizes(self, node: onnx.NodeProto, kernel: tuple[int, ...], attrs: dict[str, object]):
        """Static spatial sizes of a Conv's input and output, and per axis which input each tap reads:
        a :class:`_ConvAxis` of each axis, its sizes, stride, dilation and padding before, from which
        the arrays the check needs are computed where it needs them (nothing over input and output
        positions both). ``None`` when shape inference did not give every size as a number: the
        check is then per output pixel (:meth:`_conv_per_pixel`), which needs none.
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
        axes = []
        for a in range(rank):
            n_in, n_out, k, s, d = in_dims[a], out_dims[a], kernel[a], strides[a], dilations[a]
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                total = max((n_out - 1) * s + (k - 1) * d + 1 - n_in, 0)
                begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            elif auto_pad == "VALID":
                begin = 0
            else:
                begin = pads[a]
            axes.append(_ConvAxis(n_in, n_out, k, s, d, begin))
        return in_dims, out_dims, axes

    def _conv_per_pixel(self, node: onnx.NodeProto, p: str, signed: bool, w_ck: np.ndarray, b: np.ndarray, n_dot: int,
                        attrs: dict[str, object], per_sample: bool) -> tuple[_Outcome, float, float, str]:
        """For a Conv of unknown sizes (or a G too large): two one-channel Convs give P and B at every
        output position (slower: onnxruntime runs a one-channel Conv at about the cost of the layer)."""
        w_sum, w_abs = w_ck.sum(axis=1), np.abs(w_ck).sum(axis=1)  # [C, taps...]: ABED's filter checksum
        n_dot += w_sum.shape[0] * int(np.prod(w_sum.shape[1:])) + 1  # the check Conv is a convolution too
        r = self._rtol(n_dot, 0, len(b) + 2)  # S: a plain sum over the output channels
        kept = [helper.make_attribute(k, v) for k, v in attrs.items() if k != "group"]

        def conv(x: str, weight: np.ndarray, bias: float, name: str) -> str:
            node_ = helper.make_node("Conv", [x, self._init(name + "_w", weight[None]),
                                              self._init(name + "_b", np.array([bias]))], [name], name=name)
            node_.attribute.extend(kept)
            self._add(node_)
            return name

        x = node.input[0]
        predicted = conv(x, w_sum, b.sum(), p + "p")
        magnitudes = self._node("Abs", [x], p + "abs_x") if signed else x
        bound = conv(magnitudes, r * w_abs, r * np.abs(b).sum() + self.atol, p + "bound")
        s = self._reduce("ReduceSum", node.output[0], [1], p + "sum")  # [N, 1, ...]
        residual = self._residual(p, self._node("Sub", [s, predicted], p + "d"), bound)
        return _Outcome(residual, per_sample), r, 0.0, "conv-pixel"

    def _gemm_or_matmul(self, node: onnx.NodeProto, p: str, signed: bool,
                        per_sample: bool) -> tuple[_Linear | _Outcome, float, float, str]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = self.consts[node.input[1]].astype(np.float64)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        trans_a = int(attrs.get("transA", 0))
        if node.op_type == "Gemm" and int(attrs.get("transB", 0)):
            b = b.T
        k_in, n_out = b.shape
        groups = _column_groups(n_out)  # E: [N, G], each column in one group
        width = int(groups.sum(axis=0).max())
        v = alpha * b @ groups  # B E: [K, G]
        m = abs(alpha) * np.abs(b) @ groups
        c_sum, c_abs = np.zeros((1, groups.shape[1])), np.zeros((1, groups.shape[1]))
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            c = self.consts[node.input[2]].astype(np.float64)
            rows = c.shape[0] if c.ndim == 2 else 1
            full = np.broadcast_to(c.reshape(rows, -1), (rows, n_out))
            c_sum = beta * full @ groups  # [1 or M, G]
            c_abs = abs(beta) * np.abs(full) @ groups
        a, y = node.input[0], node.output[0]
        a_shape = self.shapes.get(a)
        if node.op_type == "Gemm" or (a_shape is not None and len(a_shape) == 2):  # [M, N]: into the chain
            # S = Y e, P = A (B e) + C e, B = atol + r (|A| (|B| e) + |C| e); columns S - P - B, P - S - B
            slack_terms = [k_in] + ([k_in] if signed else []) + [width] + ([2] if c_sum.shape[0] > 1 else [])
            r = self._rtol(k_in + 2, _chain_terms(sorted(slack_terms, reverse=True)) + 4, width)
            e, g = groups, groups.shape[1]
            parts = []
            if signed:
                magnitudes = self._node("Abs", [a], p + "abs_a")
                parts += [(k_in, (a, np.hstack([-v, v]), trans_a, p + "p_term")),
                          (k_in, (magnitudes, np.hstack([-r * m, -r * m]), trans_a, p + "bound"))]
            else:
                parts += [(k_in, (a, np.hstack([-v - r * m, v - r * m]), trans_a, p + "p_term"))]
            parts.append((width, (y, np.hstack([e, -e]), 0, p + "s")))
            slack = r * c_abs + self.atol
            rows_const = np.hstack([-c_sum - slack, c_sum - slack])  # [1 or M, 2]
            if rows_const.shape[0] > 1:  # C differs per row: a constant term of its own
                parts.append((2, (self._init(p + "c_rows", rows_const), np.eye(2 * g), 0, p + "c_term")))
                rows_const = np.zeros((1, 2 * g))
            parts = [part for _terms, part in sorted(parts, key=lambda tp: -tp[0])]
            return _Linear(tuple(parts), rows_const, per_sample), r, 0.0, "rows"
        # a batched MatMul, [..., M, K] x [K, N]: S - P with MatMul and Sub, per row
        r = self._rtol(k_in + 2, k_in + 4, width)
        columns = self._init(p + "groups", groups)
        magnitudes = self._node("Abs", [a], p + "abs_a") if signed else a
        s = self._node("MatMul", [y, columns], p + "sum")
        predicted = self._node("MatMul", [a, self._init(p + "v", v)], p + "p")
        d = self._node("Sub", [s, predicted], p + "d")
        scaled = self._node("MatMul", [magnitudes, self._init(p + "m", r * m)], p + "m_r")
        bound = self._node("Add", [scaled, self._init(p + "slack", np.array([self.atol]))], p + "bound")
        return _Outcome(self._residual(p, d, bound), per_sample), r, 0.0, "rows"

    def _rtol(self, n_dot: int, n_sum: int, n_plain: int = 0) -> float:
        """Relative tolerance: ``n_dot`` terms in each of the node's own products, ``n_sum`` in the
        check's own products (its chain of Gemms), ``n_plain`` in plain sums (a ReduceSum or a
        pooling over positions, a row's sum over a group of columns).

        Products get the probabilistic bound, ``sqrt(n) u``: their terms differ and their roundings
        go both ways. Plain sums keep the worst case, ``n u``: over a constant frame every term is
        the same and every rounding goes the same way, and the error grows as ``n`` (a 3x3 Conv's
        sums over 256 x 256 positions flagged flat frames under ``sqrt(n)``, found in review). The
        node's products get :data:`SAFETY`. Operands rounded before multiplying (TF32) cost
        ``2 u_operand`` in each product: the node's, the check's prediction, and its chain, whose
        Gemms round S, P and the bound.
        """
        if self.rtol is not None:
            return self.rtol
        return SAFETY * _terms(n_dot) * self.u_acc + 8 * self.u_op + (_terms(n_sum + 2) + n_plain) * self.u_acc

    # -- the flag --------------------------------------------------------------------------

    def _flag(self, linear: list[_Linear], outcomes: list[_Outcome]) -> None:
        """``abft_ok[n]``: every check of sample ``n`` held; NaN fails (LessOrEqual is false for it).

        Each check's residual columns side by side, one LessOrEqual, Cast and ReduceMin for all.
        Checks whose rows are not provably the samples decide for the whole batch.

        The sums of products are made last check first: onnxruntime (1.32) orders nodes by a
        depth-first walk back from the outputs, newest input first, so made in that order each
        check runs right after the node it checks, while the node's output is in cache, and
        before the activation after it, which can then overwrite that output in place (on the
        shipped model, made in graph order, the checks all ran last and cost 1.6 times as much).
        """
        oks = []
        for per_sample, name in ((True, "sample"), (False, "batch")):
            chained = [(j, c) for j, c in enumerate(linear) if c.per_sample == per_sample]
            sums = {j: self._sum_of_products(c, f"{PREFIX}{name}{j}/") for j, c in reversed(chained)}
            columns = [sums[j] for j, _ in chained] + [o.residual for o in outcomes if o.per_sample == per_sample]
            if not columns:
                continue
            if per_sample:
                columns = [c if c in sums.values() or c in self._flat else self._node("Flatten", [c], c + "/flat", axis=1)
                           for c in columns]
            else:  # one row: the whole batch
                row = self._init(f"{PREFIX}row", np.array([1, -1]), np.int64)
                columns = [self._node("Reshape", [c, row], c + "/row") for c in columns]
            joined = columns[0] if len(columns) == 1 else self._node("Concat", columns, f"{PREFIX}{name}/all", axis=1)
            held = self._node("LessOrEqual", [joined, self._init(f"{PREFIX}zero", np.array(0.0))], f"{PREFIX}{name}/held")
            as_float = self._node("Cast", [held], f"{PREFIX}{name}/held_f", to=TensorProto.FLOAT)
            oks.append(self._reduce("ReduceMin", as_float, [1], f"{PREFIX}{name}/ok", keepdims=0))  # [N] or [1]
        if not any(c.per_sample for c in linear) and not any(o.per_sample for o in outcomes):
            shape = self._node("Shape", [self._first_input()], f"{PREFIX}input_shape")
            n = self._node("Slice", [shape, self._init(f"{PREFIX}s0", np.array([0]), np.int64),
                                     self._init(f"{PREFIX}s1", np.array([1]), np.int64)], f"{PREFIX}batch_size")
            oks.append(self._node("Expand", [self._init(f"{PREFIX}one", np.array([1.0])), n], f"{PREFIX}ones"))
        ok = oks[0] if len(oks) == 1 else self._node("Min", oks, f"{PREFIX}ok")
        self._node("Cast", [ok], OUTPUT, to=TensorProto.BOOL)
        self.graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.BOOL, [self._batch_param()]))

    def _sum_of_products(self, check: _Linear, p: str) -> str:
        """A check's residual ``sum_i A_i B_i + const``: a chain of Gemms, ``Gemm(A_i, B_i, previous)``,
        the first from the constant row; no Sub, Abs or compare of its own. A part whose ``B`` is
        ``c [I, -I]`` wider than :data:`IDENTITY_GEMM_MAX` (S's sums, a P computed apart) is added as
        ``c [A, -A]`` instead, the same one term a column: a Gemm by that identity would store and
        read ``2 m^2`` numbers for ``2 m`` additions."""
        acc = self._init(p + "const", check.const)
        for tensor, coefficients, trans_a, name in check.parts:
            scale = None if trans_a else _identity_scale(coefficients)
            if scale is not None and coefficients.shape[0] > IDENTITY_GEMM_MAX:
                negated = self._node("Neg", [tensor], name + "_neg")
                pair = [tensor, negated] if scale > 0 else [negated, tensor]
                both = self._node("Concat", pair, name + "_both", axis=1)
                if abs(scale) != 1.0:
                    factor = self._init(name + "_scale", np.array([abs(scale)]))
                    both = self._node("Mul", [both, factor], name + "_scaled")
                acc = self._node("Add", [acc, both], name)
                continue
            acc = self._node("Gemm", [tensor, self._init(name + "_b", coefficients), acc], name, transA=trans_a)
        return acc

    # -- helpers ---------------------------------------------------------------------------

    def _node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self._keepalive()
        self._add(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def _add(self, node: onnx.NodeProto) -> None:
        """A node of the pass's own, listed and indexed by its outputs (the first one made keeps a name)."""
        self.new_nodes.append(node)
        if node.output:
            self._new_first_outputs.add(node.output[0])
        for o in node.output:
            self._new_by_output.setdefault(o, node)

    def _init(self, name: str, value: np.ndarray, dtype: type = np.float32) -> str:
        if name not in self._new_init_names:
            self._new_init_names.add(name)
            self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def _reduce(self, op: str, x: str, axes: list[int], output: str, keepdims: int = 1) -> str:
        axes_as_input = self.opset >= (13 if op == "ReduceSum" else 18)  # ReduceL1, ReduceMin, ReduceProd: 18
        if axes_as_input:
            name = self._init(f"{PREFIX}axes{'_'.join(str(a) for a in axes)}", np.array(axes), np.int64)
            return self._node(op, [x, name], output, keepdims=keepdims)
        return self._node(op, [x], output, axes=axes, keepdims=keepdims)

    def _first_input(self) -> str:
        if self._first is None:  # asked at each check: the model's initializers gathered once
            inits = {t.name for t in self.graph.initializer}
            self._first = next((i.name for i in self.graph.input if i.name not in inits), "")
        if not self._first:
            raise ValueError("the model has no input to take the batch size from")
        return self._first

    def _batch_param(self) -> str | int | None:
        first = self._first_input()
        for i in self.graph.input:
            if i.name == first and i.type.tensor_type.shape.dim:
                d = i.type.tensor_type.shape.dim[0]
                return d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
        return None

    def _batch_dim(self, tensor: str) -> bool:
        """Whether ``tensor``'s first axis is provably the first input's (then a flag per sample): the
        same symbolic size, or a batch of 1. A fixed batch of more (found in review) proves nothing: an
        axis of the same size (a sequence-first layout) would take the flag to the wrong sample."""
        want = self._batch_param()
        got = self.shapes.get(tensor)
        if want is None or not got or (isinstance(want, int) and want != 1):
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
            if t.elem_type:
                self.types[vi.name] = t.elem_type
            if t.HasField("shape"):
                shapes[vi.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        return shapes

    def _nonneg_tensors(self) -> set[str]:
        known = {name for name, v in self.consts.items() if v.dtype.kind == "f" and v.size and bool((v >= 0).all())}
        for node in self.graph.node:  # graph order is topological
            if node.domain not in ("", "ai.onnx"):
                continue
            data = list(node.input[: _DATA_INPUTS.get(node.op_type, len(node.input))])
            if node.op_type == "Pad" and len(node.input) > 2:
                data.append(node.input[2])  # the fill value must be >= 0 too
            if node.op_type in _NONNEG_ALWAYS or (
                node.op_type in _NONNEG_IF_INPUTS and all(i in known for i in data if i)
                and _keeps_sign(node)
            ) or self._clip_nonneg(node):
                known.update(o for o in node.output if o)
        return known

    def _clip_nonneg(self, node: onnx.NodeProto) -> bool:
        """A Clip whose lower bound is a constant >= 0 (ReLU6, as MobileNets export it), and whose upper
        bound is none or a constant not below it (with max < min every output is max): its output is >= 0."""
        if node.op_type != "Clip":
            return False

        def bound(k: int) -> float | None:  # None: no bound; nan: one not known here (opset >= 13: inputs)
            if len(node.input) <= k or not node.input[k]:
                return None
            const = self.consts.get(node.input[k])
            return float(const.reshape(-1)[0]) if const is not None and const.size == 1 else math.nan

        low, high = bound(1), bound(2)
        return low is not None and math.isfinite(low) and low >= 0.0 and (high is None or high >= low)

    def _all_names(self) -> Iterable[str]:
        g = self.graph
        yield from (t.name for t in g.initializer)
        yield from (v.name for v in list(g.input) + list(g.output) + list(g.value_info))
        for n in g.node:
            yield from n.output
            yield n.name
