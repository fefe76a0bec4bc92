"""Range checks on activations: the values a model's tensors take on reference data, enforced.

The checksum pass (flight/compute/abft.py) checks the Conv, Gemm and MatMul outputs; a bit flip in a
tensor between them (the normalised input, a Relu or Sigmoid output, a pooled feature, the head's
input, the probabilities) is computed on consistently by every check after it and passes. Ranger
(Chen et al., "A low-cost fault corrector for deep neural networks through range restriction",
DSN 2021) observes that such flips matter mostly when they land in a high exponent bit, which puts
the value far outside anything the model produces on real data, and clips activations to the
bounds seen on training data. Here the bounds flag instead of clip: a flagged sample goes the way
of a failed checksum (scrub, rerun, marked), so a result is never silently altered.

:func:`learn` runs the model over reference inputs and records per tensor the smallest and largest
element; :func:`protect` adds an output :data:`OUTPUT` (bool ``[batch]``), true where every element
of that sample of every ranged tensor lies in ``[lo, hi]``, with standard ONNX operators only
(GreaterOrEqual, LessOrEqual, And, Cast, ReduceMin, Identity), so it runs on any execution
provider. ``lo <= x and x <= hi``: a comparison with NaN is false, so NaN fails. Every intermediate
is bool or uint8: the HIL's activation hooks (flight/compute/inject.py), which follow float
tensors, never land in a check. The model's own nodes, outputs and names are untouched.

What a range cannot see: a flip that leaves the value inside the bounds (a low mantissa bit, or an
exponent bit that halves a value); such a flip moves the result less than an out-of-range one, and
often not beyond the consequence threshold (``python -m bench.radiation``:
``range_detect_rate_activations``). What it can wrongly flag: an input unlike the reference data
(``range_false_alarms``): hence off by default (the parameter ``range_checks``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flight.compute.abft import _MIN_OPSET as ABFT_MIN_OPSET
from flight.compute.abft import CHECKED_OPS, checkable, is_protected as abft_protected, marked, record
from flight.compute.abft import PREFIX as ABFT_PREFIX

PASS_VERSION = 1
"""Bumped when the checks change, so a protected model says what made it."""

OUTPUT = "range_ok"
"""The added output: bool ``[batch]``, true where every ranged tensor of that sample was in its bounds."""

PREFIX = "ranger/"
"""Every name :func:`protect` adds starts with this."""

META_KEY = "ranges"
"""``metadata_props`` key of the record (JSON: version, margin, output, ranges)."""

DEFAULT_MARGIN = 1.0
"""Each bound moves out by this times the observed width (max - min): the range learned is tripled.
The reference sets are small (the shipped model's: 16 tiles), and the extreme of a new sample lies
beyond the extreme of ``n`` earlier ones with probability ``1/(n+1)`` (6 % for 16), by an amount
the set cannot tell; on the shipped model the held-out tiles went up to 0.98 of a width past the
16 reference tiles' bounds (the first Relu's output), procedural tiles up to 1.24 (1 tile in
12 400). A flip that matters is mostly one of the top exponent bits (a factor 2**16 and more), far
outside any such margin; a wider margin costs few detections, a narrower one false alarms."""

MIN_REFERENCE_INPUTS = 8
"""Fewer distinct reference inputs than this learn no ranges: on the shipped model, bounds from 1
tile flagged every one of 784 clean held-out tiles, from 2 tiles 69, from 4 tiles 17, from 8 and
16 none (found in review). A reference set is signed with the model to verify it at install, where
one tile is enough; ranges need more."""

FLAT_WIDENING = 1e-6
"""A tensor constant over the reference data (max == min) gets ``FLAT_WIDENING * max(1, |value|)``
on each side: a width of zero would leave no room for a summation order another provider takes."""

_MIN_OPSET = 12  # GreaterOrEqual, LessOrEqual (12); ReduceMin on uint8 (12)
_LEARN_BATCH = 64


def candidates(model: onnx.ModelProto, checked: bool | None = None) -> list[str]:
    """The tensors :func:`learn` ranges, in graph order: float with a leading batch axis, made by a node
    the checksum pass does not check, plus the graph's float outputs; never a name either pass added.
    A Conv, Gemm or MatMul output is left to that pass only where it checks the model: ``checked``, as
    the caller ran it (the worker: the pass applied or not), else as :func:`_checked_by_pass` guesses."""
    shapes, types = _shapes_and_types(model)
    batch = _batch_param(model)
    if batch is None:
        return []
    outputs = {o.name for o in model.graph.output}
    checked = _checked_by_pass(model) if checked is None else checked
    out: list[str] = []
    for node in model.graph.node:
        if node.name.startswith((ABFT_PREFIX, PREFIX)):
            continue
        for name in node.output:
            if not name or name in out or name.startswith((ABFT_PREFIX, PREFIX)):
                continue
            # The checksum pass checks these (CHECKED_OPS); an output is ranged all the same.
            if checked and node.op_type in CHECKED_OPS and node.domain in ("", "ai.onnx") and name not in outputs:
                continue
            shape = shapes.get(name)
            if types.get(name) == TensorProto.FLOAT and shape and shape[0] == batch:
                out.append(name)
    return out


def _checked_by_pass(model: onnx.ModelProto) -> bool:
    """Whether the checksum pass checks ``model``'s Conv, Gemm and MatMul nodes: it made the model, or it
    would check every one of them. The worker's pass is strict: a model with one it cannot check (a weight
    that is not a constant, as a quantised model's DequantizeLinear makes it) is refused whole and runs
    without it, and its Conv, Gemm and MatMul outputs are then ranged like any tensor (found in audit: a
    flipped logit before the Softmax changed a tile's class, every check passed)."""
    if abft_protected(model):
        return True
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < ABFT_MIN_OPSET:
        return False
    try:
        labels, skipped = checkable(model)
    except Exception:  # noqa: BLE001 - a model the pass cannot read is one it does not check
        return False
    return bool(labels) and not skipped


def learn(model_bytes: bytes, inputs: np.ndarray, margin: float = DEFAULT_MARGIN,
          keepalive: Callable[[], None] | None = None, checked: bool | None = None) -> dict[str, tuple[float, float]]:
    """Bounds per tensor of :func:`candidates`: min and max over every element and sample of ``inputs``
    (run on the CPU provider, one thread: deterministic), each widened by ``margin`` times the width.
    ``keepalive`` is called after each batch of them is run: a large model on a board's CPU takes
    seconds over a reference set, and the compute worker answers its watchdog's pings meanwhile.
    ``checked``: whether the checksum pass checks the model as it runs (:func:`candidates`).

    Bounds are float32 values rounded outwards, so every reference value lies within them as float32.
    Raises ValueError with fewer than :data:`MIN_REFERENCE_INPUTS` distinct inputs, a non-finite
    reference value, or nothing to range.
    """
    import onnxruntime as ort

    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
    inputs = np.asarray(inputs)
    if inputs.ndim < 1 or len(inputs) == 0:
        raise ValueError("no reference inputs to learn ranges from")
    model = onnx.load_from_string(model_bytes)
    names = candidates(model, checked)
    if not names:
        raise ValueError("nothing to range: no float tensor with a batch axis outside the checked nodes"
                         + (" (the input's batch size is fixed above 1: no axis can be shown to be the batch's)"
                            if _fixed_batch(model) else ""))
    distinct = len(np.unique(inputs.reshape(len(inputs), -1), axis=0))
    if distinct < MIN_REFERENCE_INPUTS:
        raise ValueError(f"{distinct} distinct reference inputs, fewer than the {MIN_REFERENCE_INPUTS} ranges are "
                         "learned from: bounds from so few would flag clean inputs")
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    step = 1 if _batch_param(model) == 1 else _LEARN_BATCH  # a model whose batch is fixed at 1: one at a time
    for start in range(0, len(inputs), step):
        batch = inputs[start:start + step]
        values = session.run(names, {feed: batch})
        if keepalive is not None:
            keepalive()
        for name, value in zip(names, values):
            if value.ndim == 0 or value.shape[0] != len(batch):
                raise ValueError(f"{name} has shape {value.shape}, no batch axis of {len(batch)}")
            if not np.isfinite(value).all():
                raise ValueError(f"{name} is not finite on the reference inputs: no range can hold it")
            lo[name] = min(lo[name], float(value.min()))
            hi[name] = max(hi[name], float(value.max()))
    return {name: _widened(lo[name], hi[name], margin) for name in names}


def _widened(lo: float, hi: float, margin: float) -> tuple[float, float]:
    pad = margin * (hi - lo) if hi > lo else FLAT_WIDENING * max(1.0, abs(lo), abs(hi))
    a, b = np.float32(lo - pad), np.float32(hi + pad)
    if float(a) > lo - pad:  # rounded inwards: one float32 step out
        a = np.nextafter(a, np.float32(-np.inf))
    if float(b) < hi + pad:
        b = np.nextafter(b, np.float32(np.inf))
    return float(a), float(b)


def protect(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], *,
            margin: float | None = None) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs :data:`OUTPUT`, false for a sample with any element of a
    ranged tensor outside ``[lo, hi]`` (or NaN). ``margin``: what the ranges were learned with, for the
    record. Composes with :func:`flight.compute.abft.protect` (either order; the worker ranges the
    checked model). Refuses a model already range-protected, and a tensor it cannot range per sample."""
    if is_protected(model) or any(o.name == OUTPUT for o in model.graph.output):
        raise ValueError("model is already range-protected; protect the original instead")
    if not ranges:
        raise ValueError("no ranges to enforce")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        raise ValueError(f"opset {opset} is below {_MIN_OPSET}: convert the model first")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for name in _all_names(g):
        if name.startswith(PREFIX):
            raise ValueError(f"the model already has a name starting with {PREFIX!r} ({name!r})")
        if name == OUTPUT:  # found in audit: an inner tensor so named made a graph onnxruntime refused
            raise ValueError(f"the model already has a tensor or node named {OUTPUT!r}, the name of the range "
                             "checks' flag")
    shapes, types = _shapes_and_types(out)
    batch = _batch_param(out)
    order = {name: i for i, name in enumerate(_tensor_order(g))}
    clean: dict[str, tuple[float, float]] = {}
    for name, bounds in ranges.items():
        lo, hi = (float(v) for v in bounds)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"range of {name!r} must be finite with lo <= hi, got {bounds!r}")
        if name not in order:
            raise ValueError(f"no node of the model makes {name!r}")
        shape = shapes.get(name)
        if types.get(name) != TensorProto.FLOAT or batch is None or not shape or shape[0] != batch:
            raise ValueError(f"{name!r} is not a float tensor with the input's batch axis: "
                             "it cannot be ranged per sample")
        clean[name] = (lo, hi)
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []

    def node(op: str, inputs: list[str], output: str, **attrs: object) -> str:
        name = output if output.startswith(PREFIX) else PREFIX + output
        nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    ok = ""
    for i, name in enumerate(sorted(clean, key=order.__getitem__)):
        lo, hi = clean[name]
        p = f"{PREFIX}{i}/"
        inits += [numpy_helper.from_array(np.array(lo, np.float32), p + "lo"),
                  numpy_helper.from_array(np.array(hi, np.float32), p + "hi")]
        above = node("GreaterOrEqual", [name, p + "lo"], p + "above")
        below = node("LessOrEqual", [name, p + "hi"], p + "below")
        # ReduceMin takes no bool before opset 20: uint8 (never float, which the HIL's hooks would follow).
        inside = node("Cast", [node("And", [above, below], p + "inside")], p + "inside_u8", to=TensorProto.UINT8)
        rank = len(shapes[name])
        if rank > 1:  # [N, ...] -> [N]; rank 1 is one value per sample already
            inside = _reduce_min(node, inits, opset, inside, p + "min", list(range(1, rank)))
        sample = node("Cast", [inside], p + "ok", to=TensorProto.BOOL)  # [N]
        ok = sample if not ok else node("And", [ok, sample], p + "and")
    node("Identity", [ok], OUTPUT)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.BOOL, [batch]))
    entry = {"version": PASS_VERSION, "margin": margin, "output": OUTPUT, "flat_widening": FLAT_WIDENING,
             "ranges": {name: list(clean[name]) for name in sorted(clean, key=order.__getitem__)}}
    out.metadata_props.append(onnx.StringStringEntryProto(key=META_KEY, value=json.dumps(entry)))
    return out


def protect_bytes(data: bytes, ranges: dict[str, tuple[float, float]], *, margin: float | None = None) -> bytes:
    """:func:`protect` on serialized ONNX: same bytes and ranges in, same bytes out (a stable SHA-256)."""
    return protect(onnx.load_from_string(data), ranges, margin=margin).SerializeToString(deterministic=True)


def is_protected(model: onnx.ModelProto) -> bool:
    """Whether :func:`protect` made ``model``: it has the :data:`OUTPUT` output and the record."""
    return marked(model, OUTPUT, META_KEY)


def describe(model: onnx.ModelProto) -> dict[str, object]:
    """The record in a range-protected model: version, margin, output, flat_widening, ranges (name: [lo, hi])."""
    return record(model, META_KEY, "range-protected")


def _reduce_min(node, inits: list[TensorProto], opset: int, x: str, output: str, axes: list[int]) -> str:
    if opset >= 18:  # axes an input from opset 18
        name = f"{PREFIX}axes{''.join(str(a) for a in axes)}"
        if not any(t.name == name for t in inits):
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), name))
        return node("ReduceMin", [x, name], output, keepdims=0)
    return node("ReduceMin", [x], output, axes=axes, keepdims=0)


def _shapes_and_types(model: onnx.ModelProto) -> tuple[dict[str, list[str | int | None]], dict[str, int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a model shape inference cannot follow has nothing to range per sample
        return {}, {}
    shapes: dict[str, list[str | int | None]] = {}
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        types[vi.name] = t.elem_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
    return shapes, types


def _leading_size(model: onnx.ModelProto) -> str | int | None:
    """The first graph input's leading dimension (a name or a number), None if it has none."""
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        if not dims:
            return None
        return dims[0].dim_param or (dims[0].dim_value if dims[0].HasField("dim_value") else None)
    return None


def _fixed_batch(model: onnx.ModelProto) -> bool:
    """Whether the first graph input's leading size is a number above 1 (:func:`_batch_param` says None)."""
    size = _leading_size(model)
    return isinstance(size, int) and size > 1


def _batch_param(model: onnx.ModelProto) -> str | int | None:
    """The first graph input's leading dimension (a name, or the number 1), None if it has none, or a
    fixed size above 1: another axis of that size could not be told from the batch's (a sequence-first
    layout), and a range failure would be put on the wrong sample."""
    size = _leading_size(model)
    return None if isinstance(size, int) and size != 1 else size


def _tensor_order(g: onnx.GraphProto) -> list[str]:
    return [name for n in g.node for name in n.output if name]


def _all_names(g: onnx.GraphProto):
    yield from (t.name for t in g.initializer)
    yield from (v.name for v in list(g.input) + list(g.output) + list(g.value_info))
    for n in g.node:
        yield from n.output
        yield n.name
