"""The step graph's gradients and optimizer updates, against finite differences and numpy.

Gradients are read off a float64 step graph run as SGD with ``lr = 1`` and no momentum,
where ``W − W_next`` is the gradient itself, and compared with central differences of the
loss computed by ``reference.loss`` (plain numpy, float64).

Tolerance of the finite-difference check, ``|g − g_fd| ≤ 1e-8 + 1e-6·|g_fd|``: with step
``h = 1e-6`` the truncation error is ``h²/6·|L'''| ≈ 1e-13`` and the rounding error about
``ε·|L|/h ≈ 2.2e-16 · 2 / 1e-6 ≈ 4e-10`` (losses here are below 2); 1e-8 leaves a factor of
~25 over that. The relu kink is kept away from: the data are drawn so no pre-activation is
within 1e-3 of 0, far beyond the ``h·|x| < 1e-5`` a perturbation moves it.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from flight.compute.training import (
    ACTIVATIONS,
    Adam,
    Dense,
    MlpSpec,
    Sgd,
    Trainer,
    build_training_step,
    init_state,
    init_weights,
    next_name,
    step_signature,
)
from flight.compute.training import reference as ref

BATCH = 6
FD_STEP = 1e-6
FD_ATOL, FD_RTOL = 1e-8, 1e-6
CASES = [(act, loss) for loss in ("softmax_cross_entropy", "mse") for act in ACTIVATIONS]


def _spec(act: str, loss: str) -> MlpSpec:
    # Three layers, so a gradient passes through two activation derivatives; under mse the
    # output layer has the activation too (its derivative enters G_L).
    last = "linear" if loss == "softmax_cross_entropy" else act
    return MlpSpec(5, [Dense(7, act), Dense(4, act), Dense(3, last)], loss)


def _data(spec: MlpSpec, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Weights and a batch with every pre-activation at least 1e-3 away from 0."""
    for s in range(seed, seed + 100):
        rng = np.random.default_rng(s)
        w = init_weights(spec, seed=s, dtype="float64")
        for i in range(len(spec.layers)):
            w[f"b{i}"] = rng.normal(scale=0.3, size=w[f"b{i}"].shape)
        x = rng.normal(size=(BATCH, spec.input_dim))
        if spec.loss == "softmax_cross_entropy":
            y = rng.integers(0, spec.output_dim, BATCH)
        else:
            y = rng.normal(scale=0.5, size=(BATCH, spec.output_dim))
        h, nearest = x, np.inf
        for i, layer in enumerate(spec.layers):
            z = h @ w[f"W{i}"] + w[f"b{i}"]
            nearest = min(nearest, np.abs(z).min())
            h = ref._act(layer.activation, z)
        if nearest > 1e-3:
            return w, x, y
    raise AssertionError("no seed kept the pre-activations away from 0")


def _run_step(model, feeds: dict) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _graph_grads(spec: MlpSpec, w: dict, x: np.ndarray, y: np.ndarray, dtype: str) -> tuple[dict, dict]:
    dt = np.dtype(dtype)
    model = build_training_step(spec, Sgd(lr=1.0), BATCH, dtype=dtype)
    feeds = {"x": x.astype(dt), "y": y if y.dtype == np.int64 else y.astype(dt), "lr": np.array(1.0, dt)}
    feeds.update({n: a.astype(dt) for n, a in w.items()})
    out = _run_step(model, feeds)
    grads = {n: feeds[n].astype(np.float64) - out[next_name(n)].astype(np.float64) for n in w}
    return grads, out


def _fd_grads(spec: MlpSpec, w: dict, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    grads = {}
    for name, value in w.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus = {**w, name: value.copy()}
            minus = {**w, name: value.copy()}
            plus[name][idx] += FD_STEP
            minus[name][idx] -= FD_STEP
            g[idx] = (ref.loss(spec, plus, x, y) - ref.loss(spec, minus, x, y)) / (2 * FD_STEP)
        grads[name] = g
    return grads


@pytest.mark.parametrize("act,loss", CASES)
def test_gradients_match_central_differences(act, loss):
    spec = _spec(act, loss)
    w, x, y = _data(spec, seed=10)
    grads, out = _graph_grads(spec, w, x, y, "float64")
    fd = _fd_grads(spec, w, x, y)
    for name in w:
        np.testing.assert_allclose(grads[name], fd[name], rtol=FD_RTOL, atol=FD_ATOL, err_msg=name)
        assert np.abs(fd[name]).max() > 1e-4, f"{name}: gradient too small for the check to mean anything"
    assert float(out["loss"]) == pytest.approx(ref.loss(spec, w, x, y), rel=1e-14, abs=1e-15)
    _, correct, _ = ref.loss_and_grads(spec, w, x, y)
    assert int(out["correct"]) == correct


@pytest.mark.parametrize("act,loss", CASES)
def test_float32_graph_matches_float64_gradients(act, loss):
    """The flight dtype: the float32 graph's gradients agree with the float64 backprop.

    ``W − W_next`` in float32 carries the rounding of ``W_next`` (|W| ≤ 1.3 here, half an ulp
    ≤ 6e-8) plus the float32 forward and backward error, which grows with the gradient's size;
    2e-6 absolute + 1e-4 relative: the largest difference seen over the eight cases is 4.8e-7.
    (The float64 finite-difference check above sees at most 4.8e-10 against its 1e-8.)
    """
    spec = _spec(act, loss)
    w, x, y = _data(spec, seed=20)
    grads32, _ = _graph_grads(spec, w, x, y, "float32")
    w32 = {n: a.astype(np.float32).astype(np.float64) for n, a in w.items()}
    x32 = x.astype(np.float32).astype(np.float64)
    y32 = y if y.dtype == np.int64 else y.astype(np.float32).astype(np.float64)
    _, _, exact = ref.loss_and_grads(spec, w32, x32, y32)
    for name in w:
        np.testing.assert_allclose(grads32[name], exact[name], rtol=1e-4, atol=2e-6, err_msg=name)


def _batches(spec: MlpSpec, n: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=(batch, spec.input_dim))
        if spec.loss == "softmax_cross_entropy":
            yield x, rng.integers(0, spec.output_dim, batch)
        else:
            yield x, rng.normal(size=(batch, spec.output_dim))


OPTIMIZERS = [Sgd(lr=0.1), Sgd(lr=0.1, momentum=0.9), Adam(lr=0.01), Adam(lr=0.003, beta1=0.8, beta2=0.99, eps=1e-6)]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_optimizer_updates_match_numpy_reference(optimizer, loss):
    """Six steps through the Trainer (so through its double buffer), the learning rate changed
    half-way, against ``reference.step``. float64 throughout: the two differ only in the order
    of summation, ~1e-16 relative per op; 1e-10 relative leaves room for six steps of Adam's
    division by ``√v`` amplifying it."""
    spec = MlpSpec(5, [Dense(8, "tanh"), Dense(6, "relu"), Dense(3, "linear" if loss != "mse" else "sigmoid")], loss)
    batch = 4
    w = init_weights(spec, seed=3, dtype="float64")
    trainer = Trainer(spec, optimizer, batch, weights=w, dtype="float64")
    state = {**w, **init_state(spec, optimizer, dtype="float64")}
    lr = optimizer.lr
    for k, (x, y) in enumerate(_batches(spec, 6, batch, seed=4)):
        if k == 3:
            lr = lr / 2
            trainer.lr = lr
        loss_ref, correct_ref, state = ref.step(spec, optimizer, state, x, y, lr)
        result = trainer.step(x, y)
        assert result.loss == pytest.approx(loss_ref, rel=1e-12)
        assert result.correct == correct_ref
    got = trainer.state_arrays()
    assert int(got.pop("step")) == 6
    assert int(got.pop("guard.accepted")) == 6  # the step checks' history (training/guard.py), kept with the weights
    got = {k: v for k, v in got.items() if not k.startswith("guard.")}
    assert set(got) == set(step_signature(spec, optimizer).carried)
    for name, value in state.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_float32_trainer_tracks_float64_reference(optimizer):
    """The float32 step over six steps stays within float32 rounding of the float64 reference
    (relative 1e-4: each step's update is ~1e-2 of the weights, their float32 error ~1e-7)."""
    spec = MlpSpec(5, [Dense(8, "relu"), Dense(3)])
    w = init_weights(spec, seed=5, dtype="float64")
    trainer = Trainer(spec, optimizer, 4, weights=w)
    state = {**w, **init_state(spec, optimizer, dtype="float64")}
    for x, y in _batches(spec, 6, 4, seed=6):
        x = x.astype(np.float32).astype(np.float64)
        _, _, state = ref.step(spec, optimizer, state, x, y, optimizer.lr)
        trainer.step(x, y)
    got = trainer.state_arrays()
    for name, value in state.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
