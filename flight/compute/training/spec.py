"""What to train and how: the model and optimizer descriptions (frozen, validated here only).

Every check on a description lives in its ``__post_init__``; there are no setters, so a
value that got past construction stays valid. Errors name the field, carry the number and
say what would be accepted.

Parameter layout: layer ``i`` has ``W{i}`` of shape ``[in, out]`` (so ``z = h @ W + b``,
the ONNX ``Gemm`` with ``transB=0``) and ``b{i}`` of shape ``[out]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
LOSSES = ("softmax_cross_entropy", "mse")
DTYPES = ("float32", "float64")  # float64 is there for gradient checks, float32 for flight


class SpecError(ValueError):
    """A model or optimizer description that cannot be built; the message says what to change."""


def _check_positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"{owner}.{name} must be an integer >= 1, got {value!r}")


def _check_real(owner: str, name: str, value: object, *, low: float, high: float, low_open: bool, high_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise SpecError(f"{owner}.{name} must be a real number, got {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise SpecError(f"{owner}.{name} must be in {lo}{low}, {high}{hi}, got {v!r}")


def check_lr(lr: object, owner: str = "optimizer", dtype: np.dtype | None = None) -> float:
    """A learning rate: finite and > 0 (used by the specs and by ``Trainer.lr``). With ``dtype``, the
    step's: also a rate whose square is a normal number there, since plain SGD's gradient norm is its
    update's over ``lr²`` (found in audit: ``Sgd(lr=1e-30)`` in float32 made that 0/0 and every step was
    refused as not finite; ``1e39`` is inf there)."""
    _check_real(owner, "lr", lr, low=0.0, high=math.inf, low_open=True, high_open=True)
    value = float(lr)  # type: ignore[arg-type]
    if dtype is not None:
        info = np.finfo(dtype)
        with np.errstate(over="ignore", under="ignore"):
            square = float(np.square(np.dtype(dtype).type(value)))  # as the graph computes it
        if not info.tiny <= square < math.inf:
            low, high = math.sqrt(float(info.tiny)), math.sqrt(float(info.max))
            raise SpecError(f"{owner}.lr must be in [{low:.3g}, {high:.3g}] for a {np.dtype(dtype).name} step "
                            f"(its square a normal number there), got {value!r}")
    return value


def check_dtype(dtype: object) -> np.dtype:
    """``"float32"`` or ``"float64"`` (a numpy dtype is accepted too); returns the numpy dtype."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise SpecError(f"dtype must be one of {DTYPES}, got {dtype!r}") from exc
    if dt.name not in DTYPES:
        raise SpecError(f"dtype must be one of {DTYPES}, got {dt.name!r}")
    return dt


@dataclass(frozen=True)
class Dense:
    """A fully connected layer: ``activation(h @ W + b)`` with ``units`` outputs."""

    units: int
    activation: str = "linear"

    def __post_init__(self) -> None:
        _check_positive_int("Dense", "units", self.units)
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"Dense.activation must be one of {ACTIVATIONS}, got {self.activation!r}")


@dataclass(frozen=True)
class MlpSpec:
    """A multilayer perceptron and its loss.

    ``softmax_cross_entropy`` takes int64 class labels ``[B]`` and the last layer's outputs as
    logits, so that layer must be ``linear`` (the softmax is part of the loss) with at least 2
    units. ``mse`` takes float targets ``[B, out]`` and compares them with the last layer's
    activated output; it is the mean over all ``B * out`` elements, as ``torch.nn.MSELoss``.
    ``layers`` may be given as a list; it is stored as a tuple.
    """

    input_dim: int
    layers: tuple[Dense, ...]
    loss: str = "softmax_cross_entropy"

    def __post_init__(self) -> None:
        _check_positive_int("MlpSpec", "input_dim", self.input_dim)
        try:
            layers = tuple(self.layers)
        except TypeError as exc:
            raise SpecError(f"MlpSpec.layers must be a sequence of Dense, got {self.layers!r}") from exc
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise SpecError("MlpSpec.layers is empty; give at least one Dense layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise SpecError(f"MlpSpec.layers[{i}] must be a Dense, got {layer!r}")
        if self.loss not in LOSSES:
            raise SpecError(f"MlpSpec.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "softmax_cross_entropy":
            last = layers[-1]
            if last.activation != "linear":
                raise SpecError(
                    f"softmax_cross_entropy takes logits: the last layer's activation must be 'linear', "
                    f"got {last.activation!r} (the softmax is part of the loss)"
                )
            if last.units < 2:
                raise SpecError(f"softmax_cross_entropy needs at least 2 classes, the last layer has {last.units} unit(s)")

    @property
    def output_dim(self) -> int:
        return self.layers[-1].units

    def layer_dims(self) -> list[tuple[int, int]]:
        """``(in, out)`` of each layer, in order."""
        dims = [self.input_dim] + [layer.units for layer in self.layers]
        return list(zip(dims[:-1], dims[1:]))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names in graph order, with their shapes (``W{i}: [in, out]``, ``b{i}: [out]``)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (n_in, n_out) in enumerate(self.layer_dims()):
            shapes[f"W{i}"] = (n_in, n_out)
            shapes[f"b{i}"] = (n_out,)
        return shapes


@dataclass(frozen=True)
class Sgd:
    """Stochastic gradient descent, PyTorch's convention (dampening 0, not Nesterov).

    ``v ← momentum·v + g``; ``θ ← θ − lr·v``. With ``momentum == 0`` there is no velocity
    state and the update is ``θ ← θ − lr·g``.
    """

    lr: float
    momentum: float = 0.0

    def __post_init__(self) -> None:
        check_lr(self.lr, "Sgd")
        _check_real("Sgd", "momentum", self.momentum, low=0.0, high=1.0, low_open=False, high_open=True)


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1), arranged as ``torch.optim.Adam`` does it.

    ``t ← t+1``; ``m ← β1·m + (1−β1)·g``; ``v ← β2·v + (1−β2)·g²``;
    ``θ ← θ − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)``. No weight decay, no AMSGrad.
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_lr(self.lr, "Adam")
        _check_real("Adam", "beta1", self.beta1, low=0.0, high=1.0, low_open=False, high_open=True)
        _check_real("Adam", "beta2", self.beta2, low=0.0, high=1.0, low_open=False, high_open=True)
        _check_real("Adam", "eps", self.eps, low=0.0, high=math.inf, low_open=True, high_open=True)


def check_optimizer(optimizer: object) -> None:
    if not isinstance(optimizer, (Sgd, Adam)):
        raise SpecError(f"optimizer must be Sgd(...) or Adam(...), got {optimizer!r}")


def check_constants(optimizer: Sgd | Adam, dtype: np.dtype) -> None:
    """The optimizer's constants still in range as the step graph holds them, in ``dtype``: a beta or a
    momentum below 1 in float64 can round to 1.0 in float32 (``Adam(beta1=0.99999999)``: a bias
    correction of 0, and every step refused as not finite), an ``eps`` to 0 (found in audit)."""
    name = type(optimizer).__name__
    below_one = ("beta1", "beta2") if isinstance(optimizer, Adam) else ("momentum",)
    for field_name in below_one:
        value = getattr(optimizer, field_name)
        if float(dtype.type(value)) >= 1.0:
            largest = float(np.nextafter(dtype.type(1.0), dtype.type(0.0)))
            raise SpecError(f"{name}.{field_name} {value!r} is 1.0 in {dtype.name}, the step's dtype; "
                            f"give at most {largest!r}")
    if isinstance(optimizer, Adam) and float(dtype.type(optimizer.eps)) <= 0.0:
        smallest = float(np.finfo(dtype).smallest_subnormal)
        raise SpecError(f"Adam.eps {optimizer.eps!r} is 0 in {dtype.name}, the step's dtype; "
                        f"give at least {smallest!r}")


def check_batch_size(batch_size: object) -> int:
    _check_positive_int("training step", "batch_size", batch_size)
    return int(batch_size)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StepSignature:
    """The names a training-step graph takes and gives back.

    ``carried`` are the tensors that go round: each input ``name`` comes back as output
    ``next_name(name)`` and is fed in as ``name`` on the next step. ``params`` come first,
    then the optimizer ``states`` (velocities; Adam's ``m``, ``v`` and the int64 step ``adam.t``).
    """

    params: tuple[str, ...]
    states: tuple[str, ...]
    x: str = "x"
    y: str = "y"
    lr: str = "lr"
    loss: str = "loss"
    correct: str = "correct"
    logits: str = "logits"  # only when built with ``emit_outputs=True``
    grad_sq: str = "grad_sq"  # only when built with ``emit_checks=True``: sum of squared gradients
    update_sq: str = "update_sq"  # likewise: sum of squared parameter updates
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)

    @property
    def carried(self) -> tuple[str, ...]:
        return self.params + self.states


ADAM_T = "adam.t"


def next_name(name: str) -> str:
    """The output that carries the updated value of step input ``name``."""
    return f"{name}.next"


def step_signature(spec: MlpSpec, optimizer: Sgd | Adam) -> StepSignature:
    """Names and shapes of everything a step graph for ``spec`` and ``optimizer`` carries."""
    check_optimizer(optimizer)
    pshapes = spec.param_shapes()
    shapes = dict(pshapes)
    states: list[str] = []
    if isinstance(optimizer, Sgd) and optimizer.momentum > 0.0:
        for p, s in pshapes.items():
            shapes[f"{p}.velocity"] = s
            states.append(f"{p}.velocity")
    elif isinstance(optimizer, Adam):
        for p, s in pshapes.items():
            shapes[f"{p}.adam_m"] = s
            shapes[f"{p}.adam_v"] = s
            states += [f"{p}.adam_m", f"{p}.adam_v"]
        shapes[ADAM_T] = ()
        states.append(ADAM_T)
    return StepSignature(params=tuple(pshapes), states=tuple(states), shapes=shapes)
