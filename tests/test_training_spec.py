"""Model and optimizer descriptions: validated once, frozen; the step graph's interface."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from flight.compute.training import (
    IR_VERSION,
    OPSET,
    Adam,
    Dense,
    MlpSpec,
    Sgd,
    SpecError,
    build_inference_model,
    build_training_step,
    init_weights,
    next_name,
    step_signature,
)

MLP = MlpSpec(64, [Dense(128, "relu"), Dense(10)])


def test_layers_list_is_stored_as_tuple_and_specs_are_frozen():
    spec = MlpSpec(3, [Dense(4, "tanh"), Dense(2)])
    assert spec.layers == (Dense(4, "tanh"), Dense(2, "linear"))
    assert spec == MlpSpec(3, (Dense(4, "tanh"), Dense(2)))
    hash(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.input_dim = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sgd(0.1).lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: Dense(0), ["Dense.units", "0"]),
        (lambda: Dense(3, "gelu"), ["Dense.activation", "'gelu'"]),
        (lambda: Dense(True), ["Dense.units"]),
        (lambda: MlpSpec(0, [Dense(2)]), ["MlpSpec.input_dim", "0"]),
        (lambda: MlpSpec(3, []), ["empty"]),
        (lambda: MlpSpec(3, [4]), ["layers[0]", "Dense"]),
        (lambda: MlpSpec(3, [Dense(2)], "hinge"), ["MlpSpec.loss", "'hinge'"]),
        (lambda: MlpSpec(3, [Dense(2, "relu")]), ["'linear'", "'relu'"]),
        (lambda: MlpSpec(3, [Dense(1)]), ["2 classes", "1 unit"]),
        (lambda: Sgd(0.0), ["Sgd.lr", "0.0"]),
        (lambda: Sgd(float("nan")), ["Sgd.lr"]),
        (lambda: Sgd(0.1, momentum=1.0), ["Sgd.momentum", "[0.0, 1.0)", "1.0"]),
        (lambda: Adam(-1e-3), ["Adam.lr", "-0.001"]),
        (lambda: Adam(1e-3, beta1=1.0), ["Adam.beta1"]),
        (lambda: Adam(1e-3, beta2=-0.1), ["Adam.beta2"]),
        (lambda: Adam(1e-3, eps=0.0), ["Adam.eps"]),
        (lambda: build_training_step(MLP, Sgd(0.1), 0), ["batch_size", "0"]),
        (lambda: build_training_step(MLP, "sgd", 8), ["Sgd(...) or Adam(...)"]),
        (lambda: build_training_step(MLP, Sgd(0.1), 8, dtype="float16"), ["float16", "float32"]),
        (lambda: build_inference_model(MLP, {"W0": np.zeros((64, 128))}), ["missing", "'b0'"]),
        (
            lambda: build_inference_model(MLP, {**init_weights(MLP), "W1": np.zeros((10, 128))}),
            ["W1", "(10, 128)", "(128, 10)"],
        ),
    ],
)
def test_invalid_descriptions_say_what_is_wrong(make, words):
    with pytest.raises(SpecError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_mse_takes_any_output_activation():
    for act in ("relu", "sigmoid", "tanh", "linear"):
        assert MlpSpec(2, [Dense(1, act)], "mse").output_dim == 1


def test_step_signature_names_and_shapes():
    sgd = step_signature(MLP, Sgd(0.1))
    assert sgd.params == ("W0", "b0", "W1", "b1") and sgd.states == ()
    assert sgd.shapes["W0"] == (64, 128) and sgd.shapes["b1"] == (10,)
    mom = step_signature(MLP, Sgd(0.1, momentum=0.9))
    assert mom.states == ("W0.velocity", "b0.velocity", "W1.velocity", "b1.velocity")
    adam = step_signature(MLP, Adam(1e-3))
    assert adam.states[:2] == ("W0.adam_m", "W0.adam_v") and adam.states[-1] == "adam.t"
    assert adam.shapes["adam.t"] == ()


@pytest.mark.parametrize("optimizer", [Sgd(0.1), Sgd(0.1, 0.5), Adam(1e-3)], ids=repr)
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_step_graph_interface(optimizer, loss):
    spec = MlpSpec(6, [Dense(5, "sigmoid"), Dense(3)], loss)
    model = build_training_step(spec, optimizer, 8)
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    onnx.checker.check_model(model, full_check=True)
    sig = step_signature(spec, optimizer)
    inputs = {i.name: i for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    assert list(inputs) == ["x", "y", "lr", *sig.carried]
    assert outputs == ["loss", "correct", *map(next_name, sig.carried)]
    y_type = inputs["y"].type.tensor_type
    if loss == "softmax_cross_entropy":
        assert y_type.elem_type == onnx.TensorProto.INT64 and [d.dim_value for d in y_type.shape.dim] == [8]
    else:
        assert y_type.elem_type == onnx.TensorProto.FLOAT and [d.dim_value for d in y_type.shape.dim] == [8, 3]
    # only standard ONNX ops, nothing from a training or contrib domain
    assert {n.domain for n in model.graph.node} == {""}


@pytest.mark.parametrize(
    "optimizer,words",
    [
        (Sgd(1e-30), ["Sgd.lr", "float32", "1e-30"]),  # lr² is 0 in float32: plain SGD's gradient norm 0/0
        (Sgd(1e39), ["Sgd.lr", "float32", "1e+39"]),  # inf in float32
        (Adam(1e-3, beta1=0.99999999), ["Adam.beta1", "1.0 in float32", "at most 0.99999994"]),
        (Adam(1e-3, beta2=0.999999999), ["Adam.beta2", "1.0 in float32"]),
        (Adam(1e-3, eps=1e-50), ["Adam.eps", "0 in float32"]),
        (Sgd(0.1, momentum=0.999999999), ["Sgd.momentum", "1.0 in float32"]),
    ],
    ids=repr,
)
def test_hyperparameters_the_step_dtype_cannot_hold_are_refused_at_build(optimizer, words):
    """RAD-110: a rate or constant valid as a float64 but rounded out of range in the float32 step (0, 1.0,
    inf) is refused where the trainer is made, naming the field, not by refusing every clean step as not
    finite; the same optimizer trains in a float64 step, where it holds."""
    from flight.compute.training import Trainer

    with pytest.raises(SpecError) as info:
        Trainer(MLP, optimizer, 4)
    for word in words:
        assert word in str(info.value)
    trainer = Trainer(MlpSpec(3, [Dense(4, "tanh"), Dense(2)]), optimizer, 2, dtype="float64")
    if optimizer.lr > 1.0:
        return  # built; a step at 1e39 is refused for its size in any dtype
    before = trainer.weights()
    trainer.step(np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]]), [0, 1])
    assert trainer.steps == 1 and any((before[k] != v).any() for k, v in trainer.weights().items())


def test_learning_rate_the_step_dtype_cannot_hold_is_refused_and_the_rate_kept():
    """RAD-110: ``Trainer.lr`` set to a rate float32 makes 0 or inf (or whose square it does) is refused naming
    the field; the rate, and steps at it, are as before."""
    from flight.compute.training import Trainer

    trainer = Trainer(MlpSpec(3, [Dense(2)]), Sgd(0.1), 2)
    for rate in (1e-30, 1e39):
        with pytest.raises(SpecError, match=r"Trainer\.lr .*float32"):
            trainer.lr = rate
        assert trainer.lr == 0.1
    trainer.lr = 1e-6  # the smallest TRAIN_START gives
    trainer.step(np.ones((2, 3)), [0, 1])
    assert trainer.steps == 1
