"""Retrain the last dense layers of an inference model on board, the rest frozen.

``from_inference_head`` reads an inference MLP: a chain of dense layers, each a ``Gemm``
(``transA=0``, ``alpha=beta=1``, weight and bias initializers, ``transB`` 0 or 1) or a
``MatMul`` by a weight initializer followed by an ``Add`` of a bias initializer, each
optionally followed by ``Relu``, ``Sigmoid`` or ``Tanh``. The last ``K`` layers become the
trainable head; everything before them is the frozen ``body``, cut out as its own model, whose
output is the head's input. Train the head on features the body computed (once per sample,
not once per step), then write the weights back with :meth:`TrainableHead.export`.

The head's parameters use this package's layout (``W{i}: [in, out]``, ``b{i}: [out]``);
``transB=1`` weights (as PyTorch exports them) are transposed on the way in and back out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from flight.compute.training.graph import export_weights
from flight.compute.training.spec import Dense, MlpSpec, SpecError

_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
_OUTPUT_OPS = ("Softmax", "LogSoftmax", "ArgMax")  # may read the head's output: the model's own outputs of it


@dataclass(frozen=True)
class DenseNode:
    """One dense layer found in a graph."""

    name: str  # the Gemm or MatMul node's name
    input: str  # tensor it reads
    output: str  # tensor after its activation (or after the affine part if linear)
    weight: str  # initializer names
    bias: str
    transposed: bool  # weight stored [out, in] (Gemm transB=1)
    activation: str
    nodes: tuple[str, ...]  # every node that belongs to the layer (by output name)


@dataclass(frozen=True, eq=False)
class TrainableHead:
    """The trainable tail of an inference model (see the module docstring).

    ``spec`` describes the head alone (its ``input_dim`` is the body's feature width);
    ``weights`` are its starting parameters; ``body`` is the frozen part as a model from the
    original inputs to ``feature`` (``None`` when every dense layer is in the head, and the
    head reads the model's input directly).
    """

    source: onnx.ModelProto
    spec: MlpSpec
    weights: dict[str, np.ndarray]
    layers: tuple[DenseNode, ...]
    feature: str
    body: onnx.ModelProto | None

    def export(self, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        """``source`` with the head's initializers replaced by ``weights`` (this package's names)."""
        missing = [n for n in self.spec.param_shapes() if n not in weights]
        if missing:
            raise SpecError(f"weights lack {missing}; pass every head parameter (Trainer.weights() gives them)")
        bias_dims = {t.name: tuple(t.dims) for t in self.source.graph.initializer}
        mapped: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            w = np.asarray(weights[f"W{i}"])
            mapped[layer.weight] = w.T if layer.transposed else w
            mapped[layer.bias] = np.asarray(weights[f"b{i}"]).reshape(bias_dims[layer.bias])  # [out] or [1, out]
        return export_weights(self.source, mapped)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def dense_layers(model: onnx.ModelProto) -> list[DenseNode]:
    """The dense layers of ``model`` in graph order (see the module docstring for the patterns)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    def only_consumer(tensor: str) -> onnx.NodeProto | None:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in graph_outputs else None

    layers: list[DenseNode] = []
    for node in graph.node:
        if node.op_type == "Gemm":
            if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
                continue
            if _attr(node, "transA", 0) != 0 or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
                raise SpecError(f"Gemm {node.name!r}: only transA=0, alpha=1, beta=1 can be trained here")
            transposed = bool(_attr(node, "transB", 0))
            weight, bias, out, parts = node.input[1], node.input[2], node.output[0], [node.output[0]]
        elif node.op_type == "MatMul" and node.input[1] in inits:
            add = only_consumer(node.output[0])
            if add is None or add.op_type != "Add":
                continue
            others = [t for t in add.input if t != node.output[0]]
            if len(others) != 1 or others[0] not in inits:
                continue
            weight, bias, transposed = node.input[1], others[0], False
            out, parts = add.output[0], [node.output[0], add.output[0]]
        else:
            continue
        w_shape = tuple(inits[weight].dims)
        n_out = w_shape[0] if transposed else w_shape[-1]
        if len(w_shape) != 2 or tuple(inits[bias].dims) not in ((n_out,), (1, n_out)):
            raise SpecError(
                f"layer {node.name!r}: weight {weight!r} {list(w_shape)} and bias {bias!r} {list(inits[bias].dims)} "
                f"do not form a dense layer (bias must be [{n_out}])"
            )
        activation = "linear"
        nxt = only_consumer(out)
        if nxt is not None and nxt.op_type in _ACTIVATIONS:
            activation = _ACTIVATIONS[nxt.op_type]
            out = nxt.output[0]
            parts.append(out)
        name = node.name or node.output[0]
        layers.append(DenseNode(name, node.input[0], out, weight, bias, transposed, activation, tuple(parts)))
    return layers


def from_inference_head(
    model: onnx.ModelProto,
    head: int | Sequence[str],
    *,
    loss: str = "softmax_cross_entropy",
) -> TrainableHead:
    """Take the last dense layers of ``model`` as a trainable head.

    ``head`` is a count ``K`` (the last ``K`` dense layers) or the node names of those layers
    (the ``Gemm``/``MatMul`` nodes, in order, ending at the last one). The head must be a
    plain chain: each layer reads the one before, and no other node reads an intermediate.
    A final ``Softmax`` after the last layer is treated as the model's probability output,
    not part of the loss.
    """
    found = dense_layers(model)
    if not found:
        raise SpecError("no dense layer (Gemm or MatMul+Add with initializer weights) in the model")
    names = [layer.name for layer in found]
    if isinstance(head, (int, np.integer)) and not isinstance(head, bool):
        if not 1 <= head <= len(found):
            raise SpecError(f"head count must be in [1, {len(found)}] (the model has {len(found)} dense layers), got {head}")
        chosen = found[len(found) - int(head):]
    else:
        wanted = list(head)
        unknown = [n for n in wanted if n not in names]
        if unknown or not wanted:
            raise SpecError(f"head layers {unknown or wanted} not among the model's dense layers {names}")
        if names[len(names) - len(wanted):] != wanted:
            raise SpecError(f"head layers must be the last ones in order, {names[len(names) - len(wanted):]}, got {wanted}")
        chosen = found[len(found) - len(wanted):]

    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name or node.output[0])
    graph_outputs = {o.name for o in model.graph.output}
    for prev, layer in zip(chosen, chosen[1:]):
        if layer.input != prev.output:
            raise SpecError(
                f"layer {layer.name!r} reads {layer.input!r}, not {prev.output!r} from {prev.name!r}: not a chain"
            )
        if len(consumers.get(prev.output, [])) != 1 or prev.output in graph_outputs:
            raise SpecError(
                f"{prev.output!r} (out of {prev.name!r}) is used outside the head; it cannot be trained as a chain"
            )

    # The head must give the model's output: a layer these patterns do not take (a MatMul with no bias, a Gemm
    # with none) or any other op after it, and the head trained would not be what the model computes (found in
    # audit: a hidden layer 6 wide was trained as the logits of a model of 3 classes).
    last = chosen[-1]
    readers = [node for node in model.graph.node if last.output in node.input]
    beyond = [node for node in readers if node.op_type not in _OUTPUT_OPS or not set(node.output) <= graph_outputs]
    if beyond:
        node = beyond[0]
        raise SpecError(f"{last.output!r} (out of the head's last layer {last.name!r}) is read by "
                        f"{node.name or node.output[0]!r} ({node.op_type}): the head must end at the model's output")
    # Each parameter its own: an initializer read elsewhere too (tied weights, or biases a deduplicating optimizer
    # merged) would be written over that reader on export, or by two head layers, the last one winning (found in
    # audit: the exported model then differed from the head trained).
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for layer in chosen:
        for name in (layer.weight, layer.bias):
            if uses.get(name, 0) != 1:
                raise SpecError(f"initializer {name!r} of head layer {layer.name!r} is read {uses.get(name, 0)} "
                                "times in the model: training it would change more than that layer; give the "
                                "layer initializers of its own")
    inits = {t.name: t for t in model.graph.initializer}
    weights: dict[str, np.ndarray] = {}
    dense: list[Dense] = []
    for i, layer in enumerate(chosen):
        w = numpy_helper.to_array(inits[layer.weight])
        w = w.T if layer.transposed else w
        weights[f"W{i}"] = np.ascontiguousarray(w)
        weights[f"b{i}"] = numpy_helper.to_array(inits[layer.bias]).reshape(-1)
        dense.append(Dense(int(w.shape[1]), layer.activation))
    n_in = int(weights["W0"].shape[0])
    for i in range(1, len(dense)):
        if weights[f"W{i}"].shape[0] != dense[i - 1].units:
            raise SpecError(
                f"layer {chosen[i].name!r} takes {weights[f'W{i}'].shape[0]} inputs, "
                f"the layer before gives {dense[i - 1].units}"
            )
    spec = MlpSpec(n_in, tuple(dense), loss)

    feature = chosen[0].input
    graph_inputs = [i.name for i in model.graph.input if i.name not in inits]
    body = None if feature in graph_inputs else _extract_body(model, feature)
    return TrainableHead(model, spec, weights, tuple(chosen), feature, body)


def _extract_body(model: onnx.ModelProto, feature: str) -> onnx.ModelProto:
    """The nodes ``feature`` depends on, as a model from the original inputs to ``feature``.

    (``onnx.utils.Extractor`` wants a value_info for ``feature``, which exporters often omit;
    the output's type here comes from shape inference, or is the weights' element type.)
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    needed: list[onnx.NodeProto] = []
    seen: set[str] = set()
    stack = [feature]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        needed.append(node)
        stack.extend(t for t in node.input if t)
    nodes = [n for n in graph.node if id(n) in seen]  # original (topological) order
    used = {t for n in nodes for t in n.input}
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    if feature in infos:
        out = onnx.ValueInfoProto()
        out.CopyFrom(infos[feature])
    else:
        elem = next(t.data_type for t in graph.initializer if t.name in used)
        out = onnx.helper.make_tensor_value_info(feature, elem, None)
    body_graph = onnx.helper.make_graph(
        nodes,
        f"{graph.name}_body",
        [i for i in graph.input if i.name in used],
        [out],
        initializer=[t for t in graph.initializer if t.name in used],
    )
    body = onnx.helper.make_model(body_graph, opset_imports=list(model.opset_import))
    body.ir_version = model.ir_version
    onnx.checker.check_model(body)
    return body
