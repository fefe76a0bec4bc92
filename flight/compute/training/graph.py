"""Training steps and inference models as standard ONNX graphs (pure: specs in, ModelProto out).

One step graph holds the forward pass, the loss, the backward pass written out by hand and
the optimizer update, so plain ``onnxruntime`` runs it with any execution provider; the
``onnxruntime-training`` package is not needed (FACTS.md, "ONNX Runtime training": it
stopped at 1.19, has no aarch64 wheel and imports torch).

Backward pass. Write ``G_i = B · ∂L/∂z_i`` for the pre-activation ``z_i = h_{i-1} W_i + b_i``
of layer ``i`` (``h_{-1} = x``). The graph carries ``G`` rather than ``∂L/∂z``: every later
quantity is linear in it, so the ``1/B`` of the batch mean is applied once per parameter,
where the update needs it, instead of once per layer on the way back.

- softmax cross-entropy: ``L = −(1/B) Σ onehot·log_softmax(z_L)``, ``G_L = softmax(z_L) − onehot``
  (the softmax is ``exp`` of the log-softmax, which is the numerically stable form).
- mse: ``L = (1/(B·D)) Σ (a_L − y)²``, ``G_L = (2/D) (a_L − y) · act'(a_L)``.
- ``∂L/∂W_i = h_{i-1}ᵀ G_i / B``; ``∂L/∂b_i = Σ_rows G_i / B``; ``G_{i-1} = (G_i W_iᵀ) · act'``
  with ``act'`` from the activation's output ``a``: relu ``sign(a)`` (``= [a > 0]`` since
  ``a ≥ 0``), sigmoid ``a(1−a)``, tanh ``1 − a²``, linear 1.

Plain SGD folds ``lr/B`` into ``G`` (a ``[B, out]`` multiply) and lets one ``Gemm`` do
``W − h_{i-1}ᵀ (lr/B · G)``; that is the path the 64-128-10 benchmark measures. Constants
other than ±1 go in as tensors of the graph's dtype, never as ``Gemm``'s ``alpha``/``beta``:
those attributes are float32, which would cost a float64 graph its precision.

Opset 17 and IR version 8, so that the onnxruntime builds on JetPack (1.16 and later) load
these graphs. Only default-domain ONNX ops are used; a provider that lacks a kernel for one
leaves that node to the CPU provider (onnxruntime's usual partitioning). The tests run the
CPU provider in float32 and float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flight.compute.training.spec import (
    ADAM_T,
    Adam,
    MlpSpec,
    Sgd,
    SpecError,
    check_batch_size,
    check_constants,
    check_dtype,
    check_optimizer,
    next_name,
    step_signature,
)

OPSET = 17
IR_VERSION = 8  # onnxruntime 1.16 reads IR <= 9; onnx's default for new models is newer
_ACT_OP = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


class _Builder:
    """Collects nodes and constant initializers; every intermediate gets a fresh, readable name."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.elem = helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._consts: dict[tuple, str] = {}
        self._used: set[str] = set()

    def _fresh(self, hint: str) -> str:
        name, n = hint, 1
        while name in self._used:
            n += 1
            name = f"{hint}_{n}"
        self._used.add(name)
        return name

    def reserve(self, *names: str) -> None:
        self._used.update(names)

    def op(self, op_type: str, inputs: list[str], hint: str, *, out: str | None = None, **attrs) -> str:
        name = out if out is not None else self._fresh(hint)
        if out is not None:
            self._used.add(out)
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=f"{name}/{op_type}", **attrs))
        return name

    def const(self, value, dtype: np.dtype | None = None, hint: str = "const") -> str:
        arr = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self._fresh(hint)
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def scalar(self, value: float, hint: str = "c") -> str:
        return self.const(value, hint=hint)


def _activation(b: _Builder, z: str, activation: str, hint: str) -> str:
    if activation == "linear":
        return z
    return b.op(_ACT_OP[activation], [z], hint)


def _activation_backward(b: _Builder, grad: str, a: str, activation: str, hint: str) -> str:
    """``grad · act'`` where ``a`` is the activation's output."""
    if activation == "linear":
        return grad
    if activation == "relu":
        # a = max(z, 0) >= 0, so Sign(a) is exactly the 0/1 mask [z > 0]. One op: a
        # Greater+Where pair did the same at a third of the speed (Where's broadcast path).
        return b.op("Mul", [grad, b.op("Sign", [a], f"{hint}.mask")], hint)
    if activation == "sigmoid":
        one_minus = b.op("Sub", [b.scalar(1.0, "one"), a], f"{hint}.1ma")
        deriv = b.op("Mul", [a, one_minus], f"{hint}.dsig")
        return b.op("Mul", [grad, deriv], hint)
    if activation == "tanh":
        sq = b.op("Mul", [a, a], f"{hint}.a2")
        deriv = b.op("Sub", [b.scalar(1.0, "one"), sq], f"{hint}.dtanh")
        return b.op("Mul", [grad, deriv], hint)
    raise AssertionError(activation)  # MlpSpec admits no other activation


def _forward(b: _Builder, spec: MlpSpec, x: str) -> list[str]:
    """Activations ``[x, a_0, …, a_{L-1}]``; for softmax CE the last one is the logits."""
    acts = [x]
    for i, layer in enumerate(spec.layers):
        z = b.op("Gemm", [acts[-1], f"W{i}", f"b{i}"], f"z{i}")
        acts.append(_activation(b, z, layer.activation, f"a{i}"))
    return acts


def _value_info(name: str, elem: int, shape: tuple[int | str, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def _model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sunlit.training", doc_string=doc
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build_training_step(
    spec: MlpSpec,
    optimizer: Sgd | Adam,
    batch_size: int,
    *,
    dtype: str = "float32",
    emit_outputs: bool = False,
    emit_checks: bool = False,
) -> onnx.ModelProto:
    """One training step as one ONNX graph: forward, loss, backward, optimizer update.

    Inputs: ``x [B, in]``; ``y`` (int64 labels ``[B]`` for softmax CE, ``[B, out]`` floats for
    mse); ``lr`` (a scalar, so it can change without rebuilding); then every name in
    ``step_signature(spec, optimizer).carried`` (parameters, then optimizer state).
    Outputs: ``loss`` (scalar, the batch mean, computed before the update), ``correct``
    (int64 scalar: rows whose argmax is the label; always 0 for mse), then ``next_name(n)``
    for every carried ``n``, and with ``emit_outputs`` the forward output ``logits [B, out]``
    (the logits for CE, the activated output for mse).

    With ``emit_checks`` two more scalar outputs, what a step check needs to refuse an update
    before it is committed (:mod:`flight.compute.training.guard`): ``grad_sq``, the sum over all
    parameters of the squared batch-mean gradient, and ``update_sq``, the sum of the squared
    updates ``θ − θ.next`` taken from the update tensors themselves (no cancellation against
    ``θ``). A non-finite gradient or update makes them non-finite (a square that overflows
    float32 gives inf). For plain SGD the update is ``lr·g``, so ``grad_sq = update_sq / lr²``,
    and the weight update is a ``Gemm`` then a ``Sub`` instead of one fused ``Gemm``; with
    momentum the gradient ``Gemm`` is not fused with the velocity either. Not covered: an
    upset in the optimizer state's own arithmetic (Adam's ``m``, ``v``; a velocity) after the
    gradient, which shows only if it moves the update.

    The batch size is fixed in the graph (static shapes suit TensorRT and the memory planner);
    ``dtype`` ``"float64"`` is for gradient checks.
    """
    check_optimizer(optimizer)
    batch = check_batch_size(batch_size)
    dt = check_dtype(dtype)
    check_constants(optimizer, dt)  # as the graph holds them: a beta of 0.99999999 is 1.0 in float32
    sig = step_signature(spec, optimizer)
    b = _Builder(dt)
    b.reserve(sig.x, sig.y, sig.lr, sig.loss, sig.correct, sig.logits, sig.grad_sq, sig.update_sq,
              *sig.carried, *map(next_name, sig.carried))
    grad_terms: list[str] = []  # per-parameter sums of squares, for emit_checks
    update_terms: list[str] = []
    ce = spec.loss == "softmax_cross_entropy"
    n_out = spec.output_dim

    acts = _forward(b, spec, sig.x)
    out = acts[-1]

    # Loss, the number correct, and G_L = B · ∂L/∂z_L.
    if ce:
        logp = b.op("LogSoftmax", [out], "logp", axis=1)
        labels = b.op("Unsqueeze", [sig.y, b.const([1], np.int64, "axis1")], "labels_col")
        classes = b.const(np.arange(n_out, dtype=np.int64)[None, :], np.int64, "classes")
        onehot = b.op("Cast", [b.op("Equal", [labels, classes], "is_label")], "onehot", to=b.elem)
        picked = b.op("ReduceSum", [b.op("Mul", [onehot, logp], "label_logp")], "sum_label_logp", keepdims=0)
        b.op("Mul", [picked, b.scalar(-1.0 / batch, "minus_inv_b")], "", out=sig.loss)
        pred = b.op("ArgMax", [out], "pred", axis=1, keepdims=0)
        hits = b.op("Cast", [b.op("Equal", [pred, sig.y], "hit")], "hit_i64", to=TensorProto.INT64)
        b.op("ReduceSum", [hits], "", out=sig.correct, keepdims=0)
        grad = b.op("Sub", [b.op("Exp", [logp], "prob"), onehot], "G_out")
    else:
        diff = b.op("Sub", [out, sig.y], "diff")
        sq = b.op("ReduceSum", [b.op("Mul", [diff, diff], "diff2")], "sum_diff2", keepdims=0)
        b.op("Mul", [sq, b.scalar(1.0 / (batch * n_out), "inv_bd")], "", out=sig.loss)
        b.op("Identity", [b.const(0, np.int64, "zero_i64")], "", out=sig.correct)
        g_a = b.op("Mul", [diff, b.scalar(2.0 / n_out, "two_over_d")], "dL_da_out")
        grad = _activation_backward(b, g_a, out, spec.layers[-1].activation, "G_out")
    if emit_outputs:
        b.op("Identity", [out], "", out=sig.logits)

    inv_b = 1.0 / batch
    lr = sig.lr
    plain_sgd = isinstance(optimizer, Sgd) and optimizer.momentum == 0.0
    if plain_sgd:
        lr_over_b = b.op("Mul", [lr, b.scalar(inv_b, "inv_b")], "lr_over_b")
    if isinstance(optimizer, Adam):
        t_next = b.op("Add", [ADAM_T, b.const(1, np.int64, "one_i64")], "", out=next_name(ADAM_T))
        t_f = b.op("Cast", [t_next], "t_float", to=b.elem)
        bc1 = b.op("Sub", [b.scalar(1.0, "one"), b.op("Pow", [b.scalar(optimizer.beta1, "beta1"), t_f], "b1_t")], "bc1")
        bc2 = b.op("Sub", [b.scalar(1.0, "one"), b.op("Pow", [b.scalar(optimizer.beta2, "beta2"), t_f], "b2_t")], "bc2")
        step_size = b.op("Div", [lr, bc1], "step_size")
        sqrt_bc2 = b.op("Sqrt", [bc2], "sqrt_bc2")

    # Backward, last layer first; each layer's update uses G_i and the (old) W_i.
    for i in reversed(range(len(spec.layers))):
        h_in = acts[i]
        w, bias = f"W{i}", f"b{i}"
        if i > 0:  # the gradient for the layer below is taken before W_i changes
            dh = b.op("Gemm", [grad, w], f"dA{i - 1}", transB=1)
            grad_below = _activation_backward(b, dh, acts[i], spec.layers[i - 1].activation, f"G{i - 1}")
        if plain_sgd:
            gs = b.op("Mul", [grad, lr_over_b], f"G{i}.scaled")
            if emit_checks:
                step_w = b.op("Gemm", [h_in, gs], f"step_W{i}", transA=1)
                b.op("Sub", [w, step_w], "", out=next_name(w))
                update_terms.append(b.op("ReduceSumSquare", [step_w], f"step_W{i}.sq", keepdims=0))
            else:
                b.op("Gemm", [h_in, gs, w], "", out=next_name(w), transA=1, alpha=-1.0, beta=1.0)
            db = b.op("ReduceSum", [gs, b.const([0], np.int64, "axis0")], f"step_b{i}", keepdims=0)
            b.op("Sub", [bias, db], "", out=next_name(bias))
            if emit_checks:
                update_terms.append(b.op("ReduceSumSquare", [db], f"step_b{i}.sq", keepdims=0))
        elif isinstance(optimizer, Sgd):  # momentum: v ← μ v + g, θ ← θ − lr v
            mu = b.scalar(optimizer.momentum, "momentum")
            g_mean = b.op("Mul", [grad, b.scalar(inv_b, "inv_b")], f"G{i}.mean")
            mu_v_w = b.op("Mul", [f"{w}.velocity", mu], f"mu_vW{i}")
            if emit_checks:
                g_w = b.op("Gemm", [h_in, g_mean], f"grad_W{i}", transA=1)
                v_w = b.op("Add", [mu_v_w, g_w], "", out=next_name(f"{w}.velocity"))
                grad_terms.append(b.op("ReduceSumSquare", [g_w], f"grad_W{i}.sq", keepdims=0))
            else:
                v_w = b.op("Gemm", [h_in, g_mean, mu_v_w], "", out=next_name(f"{w}.velocity"), transA=1)
            step_w = b.op("Mul", [v_w, lr], f"step_W{i}")
            b.op("Sub", [w, step_w], "", out=next_name(w))
            g_b = b.op("ReduceSum", [g_mean, b.const([0], np.int64, "axis0")], f"grad_b{i}", keepdims=0)
            v_b = b.op("Add", [b.op("Mul", [f"{bias}.velocity", mu], f"mu_vb{i}"), g_b],
                       "", out=next_name(f"{bias}.velocity"))
            step_b = b.op("Mul", [v_b, lr], f"step_b{i}")
            b.op("Sub", [bias, step_b], "", out=next_name(bias))
            if emit_checks:
                grad_terms.append(b.op("ReduceSumSquare", [g_b], f"grad_b{i}.sq", keepdims=0))
                update_terms += [b.op("ReduceSumSquare", [s], f"{s}.sq", keepdims=0) for s in (step_w, step_b)]
        else:
            g_mean = b.op("Mul", [grad, b.scalar(inv_b, "inv_b")], f"G{i}.mean")
            g_w = b.op("Gemm", [h_in, g_mean], f"grad_W{i}", transA=1)
            g_b = b.op("ReduceSum", [g_mean, b.const([0], np.int64, "axis0")], f"grad_b{i}", keepdims=0)
            for p, g in ((w, g_w), (bias, g_b)):
                m = b.op("Add", [b.op("Mul", [f"{p}.adam_m", b.scalar(optimizer.beta1, "beta1")], f"{p}.b1m"),
                                 b.op("Mul", [g, b.scalar(1.0 - optimizer.beta1, "one_m_beta1")], f"{p}.g1")],
                         "", out=next_name(f"{p}.adam_m"))
                g2 = b.op("Mul", [g, g], f"{p}.g2")
                v = b.op("Add", [b.op("Mul", [f"{p}.adam_v", b.scalar(optimizer.beta2, "beta2")], f"{p}.b2v"),
                                 b.op("Mul", [g2, b.scalar(1.0 - optimizer.beta2, "one_m_beta2")], f"{p}.g2s")],
                         "", out=next_name(f"{p}.adam_v"))
                denom = b.op("Add", [b.op("Div", [b.op("Sqrt", [v], f"{p}.sqrt_v"), sqrt_bc2], f"{p}.vhat_sqrt"),
                                     b.scalar(optimizer.eps, "eps")], f"{p}.denom")
                upd = b.op("Mul", [b.op("Div", [m, denom], f"{p}.ratio"), step_size], f"{p}.step")
                b.op("Sub", [p, upd], "", out=next_name(p))
                if emit_checks:
                    grad_terms.append(b.op("ReduceSumSquare", [g], f"{p}.grad.sq", keepdims=0))
                    update_terms.append(b.op("ReduceSumSquare", [upd], f"{p}.step.sq", keepdims=0))
        if i > 0:
            grad = grad_below
    if emit_checks:
        b.op("Sum", update_terms, "", out=sig.update_sq)
        if plain_sgd:  # the update is lr·g: no gradient tensor of its own to sum
            b.op("Div", [sig.update_sq, b.op("Mul", [lr, lr], "lr2")], "", out=sig.grad_sq)
        else:
            b.op("Sum", grad_terms, "", out=sig.grad_sq)

    elem = b.elem
    y_info = (_value_info(sig.y, TensorProto.INT64, (batch,)) if ce
              else _value_info(sig.y, elem, (batch, n_out)))
    inputs = [_value_info(sig.x, elem, (batch, spec.input_dim)), y_info, _value_info(sig.lr, elem, ())]
    outputs = [_value_info(sig.loss, elem, ()), _value_info(sig.correct, TensorProto.INT64, ())]
    for name in sig.carried:
        e = TensorProto.INT64 if name == ADAM_T else elem
        inputs.append(_value_info(name, e, sig.shapes[name]))
        outputs.append(_value_info(next_name(name), e, sig.shapes[name]))
    if emit_outputs:
        outputs.append(_value_info(sig.logits, elem, (batch, n_out)))
    if emit_checks:
        outputs += [_value_info(sig.grad_sq, elem, ()), _value_info(sig.update_sq, elem, ())]
    graph = helper.make_graph(b.nodes, "training_step", inputs, outputs, initializer=b.initializers)
    return _model(graph, f"training step: {spec!r}, {optimizer!r}, batch {batch}, {dt.name}")


def init_weights(spec: MlpSpec, *, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Fresh parameters: He-uniform ``W`` under relu (He et al. 2015), Glorot-uniform otherwise
    (Glorot & Bengio 2010); zero biases. Deterministic for a given ``seed``."""
    dt = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for i, ((n_in, n_out), layer) in enumerate(zip(spec.layer_dims(), spec.layers)):
        limit = np.sqrt(6.0 / n_in) if layer.activation == "relu" else np.sqrt(6.0 / (n_in + n_out))
        weights[f"W{i}"] = rng.uniform(-limit, limit, size=(n_in, n_out)).astype(dt)
        weights[f"b{i}"] = np.zeros(n_out, dtype=dt)
    return weights


def init_state(spec: MlpSpec, optimizer: Sgd | Adam, *, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Optimizer state at step 0: zero velocities and moments, ``adam.t = 0``."""
    dt = check_dtype(dtype)
    sig = step_signature(spec, optimizer)
    return {
        n: (np.zeros((), np.int64) if n == ADAM_T else np.zeros(sig.shapes[n], dt)) for n in sig.states
    }


def check_weights(spec: MlpSpec, weights: Mapping[str, np.ndarray]) -> None:
    """Every parameter of ``spec`` present with its shape, and nothing else."""
    shapes = spec.param_shapes()
    missing = [n for n in shapes if n not in weights]
    extra = [n for n in weights if n not in shapes]
    if missing or extra:
        raise SpecError(f"weights do not match the spec: missing {missing}, unexpected {extra}")
    for n, shape in shapes.items():
        got = np.shape(weights[n])
        if got != shape:
            raise SpecError(f"weights[{n!r}] has shape {got}, the spec needs {shape}")


def build_inference_model(spec: MlpSpec, weights: Mapping[str, np.ndarray], *, dtype: str = "float32") -> onnx.ModelProto:
    """The forward pass alone, weights as initializers, a dynamic batch dimension.

    A chain of ``Gemm`` (``transB=0``, initializers ``W{i}``, ``b{i}``) and activation nodes
    named ``dense{i}`` and ``dense{i}.{activation}``. Input ``x [batch, in]``; outputs
    ``logits`` and ``probabilities`` (softmax over axis 1) for softmax CE, ``output`` for mse.
    ``from_inference_head`` reads such a model back.
    """
    dt = check_dtype(dtype)
    check_weights(spec, weights)
    elem = helper.np_dtype_to_tensor_dtype(dt)
    nodes: list[onnx.NodeProto] = []
    h = "x"
    for i, layer in enumerate(spec.layers):
        last = i == len(spec.layers) - 1
        out_name = "logits" if spec.loss == "softmax_cross_entropy" else "output"
        z = out_name if last and layer.activation == "linear" else f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [z], name=f"dense{i}"))
        h = z
        if layer.activation != "linear":
            a = "output" if last else f"a{i}"
            nodes.append(helper.make_node(_ACT_OP[layer.activation], [z], [a], name=f"dense{i}.{layer.activation}"))
            h = a
    outputs = []
    if spec.loss == "softmax_cross_entropy":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))
        outputs = [_value_info("logits", elem, ("batch", spec.output_dim)),
                   _value_info("probabilities", elem, ("batch", spec.output_dim))]
    else:
        outputs = [_value_info("output", elem, ("batch", spec.output_dim))]
    inits = [numpy_helper.from_array(np.asarray(weights[n], dtype=dt), n) for n in spec.param_shapes()]
    x_info = _value_info("x", elem, ("batch", spec.input_dim))
    graph = helper.make_graph(nodes, "mlp", [x_info], outputs, initializer=inits)
    return _model(graph, f"inference: {spec!r}")


def export_weights(model: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with the named initializers replaced by ``weights``.

    Each name must be an initializer of ``model`` and each array its shape; values are cast
    to the initializer's element type (so float64 checkpoints can go into a float32 model).
    For a model whose trainable layers were read with ``from_inference_head`` use
    ``TrainableHead.export``, which maps names and layouts back first.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {init.name: init for init in out.graph.initializer}
    unknown = [n for n in weights if n not in by_name]
    if unknown:
        raise SpecError(f"no initializer named {unknown} in the model; it has {sorted(by_name)}")
    for name, value in weights.items():
        init = by_name[name]
        old = numpy_helper.to_array(init)
        arr = np.asarray(value)
        if arr.shape != old.shape:
            raise SpecError(f"weights[{name!r}] has shape {arr.shape}, the model's initializer has {old.shape}")
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=old.dtype), name))
    return out
