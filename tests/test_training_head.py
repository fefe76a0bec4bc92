"""Retraining the head of an inference model: read the last K dense layers, train them on the
frozen body's features, write them back."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from flight.compute.training import (
    Adam,
    Dense,
    MlpSpec,
    SpecError,
    Trainer,
    build_inference_model,
    dense_layers,
    from_inference_head,
    init_weights,
)
from flight.compute.training import reference as ref

FULL = MlpSpec(20, [Dense(32, "relu"), Dense(16, "tanh"), Dense(12, "sigmoid"), Dense(5)])


def _run(model: onnx.ModelProto, x: np.ndarray, output: str | None = None) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([output or session.get_outputs()[0].name], {session.get_inputs()[0].name: x})[0]


@pytest.fixture
def model_and_weights():
    weights = init_weights(FULL, seed=3)
    for i in range(4):
        weights[f"b{i}"] = np.random.default_rng(i).normal(scale=0.1, size=weights[f"b{i}"].shape).astype(np.float32)
    return build_inference_model(FULL, weights), weights


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_head_of_own_inference_model(model_and_weights, k):
    model, weights = model_and_weights
    head = from_inference_head(model, k)
    first = 4 - k
    assert head.spec == MlpSpec(FULL.layer_dims()[first][0], FULL.layers[first:])
    for i in range(k):
        np.testing.assert_array_equal(head.weights[f"W{i}"], weights[f"W{first + i}"])
        np.testing.assert_array_equal(head.weights[f"b{i}"], weights[f"b{first + i}"])
    x = np.random.default_rng(0).normal(size=(9, 20)).astype(np.float32)
    if k == 4:
        assert head.body is None and head.feature == "x"
        features = x
    else:
        body_spec = MlpSpec(20, FULL.layers[:first], "mse")
        features = _run(head.body, x)
        np.testing.assert_allclose(features, ref.forward(body_spec, weights, x), rtol=1e-5, atol=1e-6)
    # the head on the body's features reproduces the whole model
    np.testing.assert_allclose(ref.forward(head.spec, head.weights, features), _run(model, x, "logits"), rtol=1e-5, atol=1e-5)


def test_train_head_and_export(model_and_weights):
    model, weights = model_and_weights
    head = from_inference_head(model, ["dense2", "dense3"])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 20)).astype(np.float32)
    features = _run(head.body, x)
    y = (features @ rng.normal(size=(features.shape[1], 5))).argmax(axis=1)  # learnable from the features
    trainer = Trainer(head.spec, Adam(3e-2), 32, weights=head.weights)
    losses = [trainer.step(features, y).loss for _ in range(150)]
    assert losses[-1] < 0.5 * losses[0]
    trained = trainer.weights()
    exported = head.export(trained)
    # the frozen layers are untouched, the head's are the trained ones
    inits = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    for name in ("W0", "b0", "W1", "b1"):
        np.testing.assert_array_equal(inits[name], weights[name])
    np.testing.assert_array_equal(inits["W2"], trained["W0"])
    np.testing.assert_array_equal(inits["b3"], trained["b1"])
    logits = _run(exported, x, "logits")
    np.testing.assert_allclose(logits, ref.forward(head.spec, trained, features), rtol=1e-5, atol=1e-5)
    assert float((logits.argmax(axis=1) == y).mean()) > 0.8


def _torch_style_model(rng) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """What a PyTorch export looks like: Gemm with transB=1 (weights [out, in]), and a
    MatMul + Add pair with a [1, out] bias, activations in between."""
    w = {
        "fc1.weight": rng.normal(size=(16, 10)).astype(np.float32) * 0.3,  # [out, in]
        "fc1.bias": rng.normal(size=16).astype(np.float32) * 0.1,
        "fc2.weight_t": rng.normal(size=(16, 8)).astype(np.float32) * 0.3,  # [in, out] for MatMul
        "fc2.bias": rng.normal(size=(1, 8)).astype(np.float32) * 0.1,
        "fc3.weight": rng.normal(size=(3, 8)).astype(np.float32) * 0.3,
        "fc3.bias": rng.normal(size=3).astype(np.float32) * 0.1,
    }
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h1"], name="/fc1/Gemm", transB=1),
        helper.make_node("Relu", ["h1"], ["a1"], name="/act1/Relu"),
        helper.make_node("MatMul", ["a1", "fc2.weight_t"], ["m2"], name="/fc2/MatMul"),
        helper.make_node("Add", ["fc2.bias", "m2"], ["h2"], name="/fc2/Add"),
        helper.make_node("Tanh", ["h2"], ["a2"], name="/act2/Tanh"),
        helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["logits"], name="/fc3/Gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "torch_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, w


def test_head_of_torch_style_model():
    rng = np.random.default_rng(4)
    model, w = _torch_style_model(rng)
    layers = dense_layers(model)
    assert [(l.name, l.activation, l.transposed) for l in layers] == [
        ("/fc1/Gemm", "relu", True), ("/fc2/MatMul", "tanh", False), ("/fc3/Gemm", "linear", True)]
    head = from_inference_head(model, 2)
    assert head.spec == MlpSpec(16, [Dense(8, "tanh"), Dense(3)])
    assert head.feature == "a1"
    np.testing.assert_array_equal(head.weights["W1"], w["fc3.weight"].T)
    assert head.weights["b0"].shape == (8,)
    x = rng.normal(size=(6, 10)).astype(np.float32)
    features = _run(head.body, x)
    np.testing.assert_allclose(features, np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0), rtol=1e-5, atol=1e-6)
    new = {k: v * 1.5 for k, v in head.weights.items()}
    exported = head.export(new)
    inits = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    assert inits["fc3.weight"].shape == (3, 8) and inits["fc2.bias"].shape == (1, 8)  # layouts kept
    np.testing.assert_allclose(_run(exported, x, "logits"), ref.forward(head.spec, new, features), rtol=1e-5, atol=1e-5)
    # unchanged weights give back the source model's initializers exactly
    same = head.export(head.weights)
    for a, b in zip(same.graph.initializer, model.graph.initializer):
        assert a.name == b.name and np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


@pytest.mark.parametrize(
    "head,words",
    [
        (0, ["[1, 4]", "got 0"]),
        (5, ["[1, 4]", "got 5"]),
        (["dense2"], ["must be the last ones", "dense3"]),
        (["dense9"], ["dense9", "not among"]),
    ],
)
def test_bad_head_choices(model_and_weights, head, words):
    model, _ = model_and_weights
    with pytest.raises(SpecError) as info:
        from_inference_head(model, head)
    for word in words:
        assert word in str(info.value)


def test_cross_entropy_head_must_end_in_logits(model_and_weights):
    model, _ = model_and_weights
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    # drop the last layer: the head would end in a sigmoid, which cannot feed a softmax CE
    nodes = [n for n in cut.graph.node if n.name not in ("dense3", "softmax")]
    del cut.graph.node[:]
    cut.graph.node.extend(nodes)
    with pytest.raises(SpecError, match="'linear'"):
        from_inference_head(cut, 1)
    assert from_inference_head(cut, 1, loss="mse").spec.layers == (Dense(12, "sigmoid"),)


def _two_layer_model(last: onnx.NodeProto, w: dict[str, np.ndarray], n_out: int, b0: str = "b0") -> onnx.ModelProto:
    """x [n, 4] -> fc1 (Gemm, W0 [4, 6], bias ``b0``) -> relu -> ``last`` -> logits [n, n_out]."""
    nodes = [helper.make_node("Gemm", ["x", "W0", b0], ["z0"], name="fc1"),
             helper.make_node("Relu", ["z0"], ["h"], name="relu"), last]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", n_out])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_head_that_does_not_end_at_the_model_output_is_refused():
    """A last layer the patterns do not take (``nn.Linear(bias=False)``: a MatMul alone) is not passed over:
    the layer before it is not trained as the logits of the model (it is 6 wide, the model 3), it is refused
    naming the tensor and its reader; the same model with a bias is taken whole."""
    rng = np.random.default_rng(5)
    w = {"W0": rng.normal(size=(4, 6)).astype(np.float32), "b0": np.zeros(6, np.float32),
         "W1": rng.normal(size=(6, 3)).astype(np.float32), "b1": np.zeros(3, np.float32)}
    no_bias = _two_layer_model(helper.make_node("MatMul", ["h", "W1"], ["logits"], name="fc2"),
                               {k: v for k, v in w.items() if k != "b1"}, 3)
    with pytest.raises(SpecError, match=r"'h' \(out of the head's last layer 'fc1'\) is read by 'fc2' \(MatMul\)"):
        from_inference_head(no_bias, 1, loss="mse")
    biased = _two_layer_model(helper.make_node("Gemm", ["h", "W1", "b1"], ["logits"], name="fc2"), w, 3)
    head = from_inference_head(biased, 2)
    assert [layer.name for layer in head.layers] == ["fc1", "fc2"] and head.spec.output_dim == 3


def test_head_whose_initializers_are_shared_is_refused():
    """A bias shared by two layers (a deduplicating optimizer merges equal zero biases) is not trained as two
    and written back as one, the last winning, nor a head's bias trained under the body that reads it too:
    refused naming the initializer; without the sharing, the exported model is the head trained."""
    rng = np.random.default_rng(6)
    w = {"W0": rng.normal(size=(4, 6)).astype(np.float32), "W1": rng.normal(size=(6, 6)).astype(np.float32),
         "bias": np.zeros(6, np.float32)}
    shared = _two_layer_model(helper.make_node("Gemm", ["h", "W1", "bias"], ["logits"], name="fc2"), w, 6, b0="bias")
    for k in (1, 2):
        with pytest.raises(SpecError, match="initializer 'bias' of head layer '(fc1|fc2)' is read 2 times"):
            from_inference_head(shared, k)
    own = {**w, "b1": np.zeros(6, np.float32)}
    model = _two_layer_model(helper.make_node("Gemm", ["h", "W1", "b1"], ["logits"], name="fc2"), own, 6, b0="bias")
    head = from_inference_head(model, 1)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    features = _run(head.body, x)
    trainer = Trainer(head.spec, Adam(5e-2), 8, weights=head.weights)
    for _ in range(20):
        trainer.step(features, rng.integers(0, 6, 8))
    np.testing.assert_allclose(_run(head.export(trainer.weights()), x),
                               ref.forward(head.spec, trainer.weights(), features), rtol=1e-5, atol=1e-5)
