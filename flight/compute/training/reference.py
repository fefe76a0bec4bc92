"""The same training step in plain numpy, written independently of the graph builder.

It is the yardstick for the ONNX graphs (tests compare them, in float64) and a way for the
ground side to check a downlinked checkpoint without onnxruntime. Slow and simple on purpose:
no folding of ``1/B`` or ``lr``, each formula as a textbook writes it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flight.compute.training.spec import ADAM_T, Adam, MlpSpec, Sgd


def _act(a: str, z: np.ndarray) -> np.ndarray:
    if a == "relu":
        return np.maximum(z, 0.0)
    if a == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if a == "tanh":
        return np.tanh(z)
    return z


def _act_grad(a: str, z: np.ndarray) -> np.ndarray:
    """d act / d z, from the pre-activation ``z``."""
    if a == "relu":
        return (z > 0).astype(z.dtype)
    if a == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if a == "tanh":
        return 1.0 - np.tanh(z) ** 2
    return np.ones_like(z)


def forward(spec: MlpSpec, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The network's output: logits for softmax CE, the activated last layer for mse."""
    h = x
    for i, layer in enumerate(spec.layers):
        h = _act(layer.activation, h @ weights[f"W{i}"] + weights[f"b{i}"])
    return h


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss(spec: MlpSpec, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Batch-mean loss (mean over all elements for mse)."""
    out = forward(spec, weights, x)
    if spec.loss == "softmax_cross_entropy":
        return float(-log_softmax(out)[np.arange(len(y)), y].mean())
    return float(((out - y) ** 2).mean())


def loss_and_grads(
    spec: MlpSpec, weights: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, int, dict[str, np.ndarray]]:
    """``(loss, correct, {param: ∂loss/∂param})`` by backpropagation."""
    hs, zs = [x], []
    for i, layer in enumerate(spec.layers):
        zs.append(hs[-1] @ weights[f"W{i}"] + weights[f"b{i}"])
        hs.append(_act(layer.activation, zs[-1]))
    out, n = hs[-1], x.shape[0]
    if spec.loss == "softmax_cross_entropy":
        logp = log_softmax(out)
        onehot = np.zeros_like(out)
        onehot[np.arange(n), y] = 1.0
        value = float(-(onehot * logp).sum() / n)
        correct = int((out.argmax(axis=1) == y).sum())
        dz = (np.exp(logp) - onehot) / n
    else:
        value = float(((out - y) ** 2).mean())
        correct = 0
        dz = 2.0 * (out - y) / out.size * _act_grad(spec.layers[-1].activation, zs[-1])
    grads: dict[str, np.ndarray] = {}
    for i in reversed(range(len(spec.layers))):
        grads[f"W{i}"] = hs[i].T @ dz
        grads[f"b{i}"] = dz.sum(axis=0)
        if i > 0:
            dz = (dz @ weights[f"W{i}"].T) * _act_grad(spec.layers[i - 1].activation, zs[i - 1])
    return value, correct, {k: grads[k] for k in spec.param_shapes()}


def step(
    spec: MlpSpec,
    optimizer: Sgd | Adam,
    state: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
) -> tuple[float, int, dict[str, np.ndarray]]:
    """One step on ``state`` (parameters and optimizer state, the step graph's names).

    Returns ``(loss, correct, new_state)``; ``state`` is not modified.
    """
    params = {k: state[k] for k in spec.param_shapes()}
    value, correct, grads = loss_and_grads(spec, params, x, y)
    new: dict[str, np.ndarray] = {}
    if isinstance(optimizer, Sgd):
        for p, g in grads.items():
            if optimizer.momentum > 0.0:
                v = optimizer.momentum * state[f"{p}.velocity"] + g
                new[f"{p}.velocity"] = v
                new[p] = params[p] - lr * v
            else:
                new[p] = params[p] - lr * g
    else:
        t = int(state[ADAM_T]) + 1
        new[ADAM_T] = np.asarray(t, dtype=np.int64)
        bc1 = 1.0 - optimizer.beta1**t
        bc2 = 1.0 - optimizer.beta2**t
        for p, g in grads.items():
            m = optimizer.beta1 * state[f"{p}.adam_m"] + (1.0 - optimizer.beta1) * g
            v = optimizer.beta2 * state[f"{p}.adam_v"] + (1.0 - optimizer.beta2) * g * g
            new[f"{p}.adam_m"], new[f"{p}.adam_v"] = m, v
            new[p] = params[p] - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + optimizer.eps)
    return value, correct, new
