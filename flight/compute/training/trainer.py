"""Run training steps with plain onnxruntime, the state kept in OrtValues between steps.

The parameters and optimizer state live in two sets of ``OrtValue`` buffers on the
session's device. Two ``IOBinding``\\ s are made once: one reads set A and writes set B, the
other reads B and writes A; a step runs one of them and the roles swap. So a step moves no
state through numpy and binds nothing: it copies the batch into the bound ``x``/``y``
buffers (``update_inplace``) and reads back two scalars. The set a step read from is left
intact, which is what lets a step with a non-finite loss be discarded for free.

Checked steps (``checks``, on by default; :mod:`flight.compute.training.guard`): the graph
also gives the squared norms of the gradient and of the update, two more scalars read back,
and a step whose gradient or update is not finite or out of range is refused the same way,
before it is committed (:class:`StepRefusedError`; the state is as before the step).

Measured on the 64-128-10 SGD step (onnxruntime 1.32, one thread, a 2-core x86 box where
this path takes ~40 µs): passing a ``RunOptions`` to ``run_with_iobinding`` adds ~20 µs per
step in its Python wrapper (it looks up a config entry, and a missing one raises), and
``run_with_ort_values`` costs ~25 µs more than this path (per-value checks in its wrapper);
hence no run options and no per-step binding here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort

from flight.compute.training.graph import build_inference_model, build_training_step, check_weights, init_state, init_weights
from flight.compute.training.guard import (
    DEFAULT_LIMITS,
    EVER_KEY,
    STATE_KEYS,
    Anchor,
    StepGuard,
    StepLimits,
    anchor_of,
    not_finite,
    state_fault,
)
from flight.compute.training.spec import (
    ADAM_T,
    Adam,
    MlpSpec,
    Sgd,
    SpecError,
    check_batch_size,
    check_dtype,
    check_lr,
    check_optimizer,
    next_name,
    step_signature,
)

STEP_KEY = "step"  # the trainer's step count in ``state_arrays``; int64 scalar
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class StepResult(NamedTuple):
    loss: float  # batch mean, before the update
    correct: int  # rows whose argmax is the label (0 for mse)


class StepRefusedError(ArithmeticError):
    """A step the checks refused before it was committed; the trainer kept the state from before it.

    ``reason`` says which check and carries the numbers; ``grad_norm`` and ``update_norm`` are
    NaN where the step was refused before they were looked at.
    """

    def __init__(self, step: int, reason: str, *, loss: float = math.nan, grad_norm: float = math.nan,
                 update_norm: float = math.nan, message: str | None = None) -> None:
        super().__init__(message or f"step {step} refused: {reason}; the step was discarded and the state is "
                                    "as before it")
        self.step = step
        self.reason = reason
        self.loss = loss
        self.grad_norm = grad_norm
        self.update_norm = update_norm


class NonFiniteLossError(StepRefusedError):
    """A step's loss came out NaN or infinite; the trainer kept the state from before that step."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(
            step, f"loss {loss}", loss=loss,
            message=f"step {step} gave loss {loss}; the step was discarded and the state is as before it "
                    "(check the batch, or lower the learning rate)",
        )


def _norm(squared: ort.OrtValue) -> float:
    """The square root of a sum of squares read back from the step; NaN for one that is not a
    non-negative number (NaN, or upset itself), inf for one that overflowed."""
    v = float(squared.numpy())
    return math.sqrt(v) if v >= 0.0 else math.nan


def _device(session: ort.InferenceSession) -> tuple[str, int]:
    """Where the session's first execution provider wants its inputs: ``("cpu", 0)`` or ``("cuda", id)``."""
    first = session.get_providers()[0]
    if first in _GPU_PROVIDERS:
        options = session.get_provider_options().get(first, {})
        return "cuda", int(options.get("device_id", 0))
    return "cpu", 0


class Trainer:
    """Trains an :class:`MlpSpec` one fixed-size batch at a time.

    ``providers`` goes to ``onnxruntime.InferenceSession`` as given (default CPU); with the
    CUDA or TensorRT provider first, the state buffers are allocated on that GPU.
    ``weights`` defaults to :func:`init_weights` with ``seed``. The optimizer's ``lr`` is the
    starting learning rate; set :attr:`lr` to change it between steps. ``checks``: the limits
    every step is held to before it is committed (:class:`StepLimits`); None builds the step
    without the check outputs and refuses only a non-finite loss.
    """

    def __init__(
        self,
        spec: MlpSpec,
        optimizer: Sgd | Adam,
        batch_size: int,
        *,
        weights: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
        dtype: str = "float32",
        providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
        intra_op_num_threads: int = 1,
        checks: StepLimits | None = DEFAULT_LIMITS,
    ) -> None:
        check_optimizer(optimizer)
        self.spec = spec
        self.optimizer = optimizer
        self.batch_size = check_batch_size(batch_size)
        self._dt = check_dtype(dtype)
        self.signature = step_signature(spec, optimizer)
        self.guard = StepGuard(checks) if checks is not None else None
        self.step_model: onnx.ModelProto = build_training_step(spec, optimizer, self.batch_size, dtype=self._dt.name,
                                                               emit_checks=self.guard is not None)

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(self.step_model.SerializeToString(), options, providers=list(providers))
        self._device_type, self._device_id = _device(self._session)

        if weights is None:
            weights = init_weights(spec, seed=seed, dtype=self._dt.name)
        check_weights(spec, weights)
        with np.errstate(over="ignore", invalid="ignore"):  # said below, naming the array
            initial = {n: np.asarray(a, dtype=self._dt) for n, a in weights.items()}
        bad = not_finite(initial)
        if bad is not None:  # else every step is refused, blaming the batch or the rate (found in audit)
            raise SpecError(f"weights[{bad!r}] holds a value that is not a finite {self._dt.name} "
                            "(NaN, infinite, or past its range)")
        initial.update(init_state(spec, optimizer, dtype=self._dt.name))

        sig = self.signature
        self._bufs = [{n: self._empty(a.shape, a.dtype) for n, a in initial.items()} for _ in range(2)]
        for n, a in initial.items():
            self._bufs[0][n].update_inplace(np.asarray(a, order="C"))  # (ascontiguousarray would make 0-d 1-d)
        self._cur = 0  # index of the buffer set that holds the current state
        self._steps = 0
        self._anchor: Anchor | None = None
        self.mark(initial)

        ce = spec.loss == "softmax_cross_entropy"
        self._x = self._empty((self.batch_size, spec.input_dim), self._dt)
        self._y = self._empty((self.batch_size,) if ce else (self.batch_size, spec.output_dim), np.int64 if ce else self._dt)
        self._lr_value = check_lr(optimizer.lr, type(optimizer).__name__, self._dt)
        self._lr = self._empty((), self._dt)
        self._lr.update_inplace(np.array(self._lr_value, dtype=self._dt))
        self._loss = self._empty((), self._dt)
        self._correct = self._empty((), np.int64)
        self._grad_sq = self._empty((), self._dt)
        self._update_sq = self._empty((), self._dt)
        self.last_norms = (math.nan, math.nan)  # (gradient, update) of the last step run, committed or not
        self._bindings = []
        for src, dst in ((0, 1), (1, 0)):
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(sig.x, self._x)
            binding.bind_ortvalue_input(sig.y, self._y)
            binding.bind_ortvalue_input(sig.lr, self._lr)
            binding.bind_ortvalue_output(sig.loss, self._loss)
            binding.bind_ortvalue_output(sig.correct, self._correct)
            if self.guard is not None:
                binding.bind_ortvalue_output(sig.grad_sq, self._grad_sq)
                binding.bind_ortvalue_output(sig.update_sq, self._update_sq)
            for n in sig.carried:
                binding.bind_ortvalue_input(n, self._bufs[src][n])
                binding.bind_ortvalue_output(next_name(n), self._bufs[dst][n])
            self._bindings.append(binding)

    def _empty(self, shape: tuple[int, ...], dtype) -> ort.OrtValue:
        element = np.dtype(dtype).type
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), element, self._device_type, self._device_id)

    # -- stepping ---------------------------------------------------------------------------

    def step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        """One optimizer step on a batch of exactly ``batch_size`` rows.

        ``x``: ``[B, input_dim]``; ``y``: int labels ``[B]`` in ``[0, classes)`` (softmax CE)
        or targets ``[B, output_dim]`` (mse). Raises :class:`NonFiniteLossError`, keeping the
        previous state, when the loss is not finite, and :class:`StepRefusedError` likewise when
        a label is out of range or the gradient or the update fails the checks.
        """
        x = np.ascontiguousarray(x, dtype=self._dt)
        if x.shape != (self.batch_size, self.spec.input_dim):
            raise ValueError(
                f"x has shape {x.shape}, the step graph takes {(self.batch_size, self.spec.input_dim)}; "
                "drop or pad a short last batch"
            )
        if self.spec.loss == "softmax_cross_entropy":
            y = np.ascontiguousarray(y, dtype=np.int64)
            if y.shape != (self.batch_size,):
                raise ValueError(f"y has shape {y.shape}, softmax cross-entropy takes labels of shape {(self.batch_size,)}")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.spec.output_dim:
                # Refused, not a ValueError: a label flipped in memory is a bad sample like a flipped
                # x, retried, then skipped (found in review: it failed the whole job).
                raise StepRefusedError(self._steps + 1, f"labels must be in [0, {self.spec.output_dim}) (the model's "
                                                        f"classes), got min {lo} max {hi}")
        else:
            y = np.ascontiguousarray(y, dtype=self._dt)
            if y.shape != (self.batch_size, self.spec.output_dim):
                want = (self.batch_size, self.spec.output_dim)
                raise ValueError(f"y has shape {y.shape}, mse takes targets of shape {want}")
        self._x.update_inplace(x)
        self._y.update_inplace(y)
        # No RunOptions: onnxruntime 1.32's wrapper spends ~20 µs on one (module docstring).
        self._session.run_with_iobinding(self._bindings[self._cur])
        loss = float(self._loss.numpy())
        if not math.isfinite(loss):
            self.last_norms = (math.nan, math.nan)
            raise NonFiniteLossError(self._steps + 1, loss)
        guard = self.guard
        if guard is not None:
            # sqrt(inf) is inf and sqrt(nan) nan: a square that overflowed stays "not finite".
            norms = self.last_norms = (_norm(self._grad_sq), _norm(self._update_sq))
            reason = guard.verdict(*norms)
            if reason:
                raise StepRefusedError(self._steps + 1, reason, loss=loss, grad_norm=norms[0], update_norm=norms[1])
            guard.accept(*norms)
        self._cur ^= 1  # commit: the buffers just written hold the state now
        self._steps += 1
        return StepResult(loss, int(self._correct.numpy()))

    @property
    def steps(self) -> int:
        """Steps taken (committed) since the start or since the last :meth:`load_state`."""
        return self._steps

    @property
    def lr(self) -> float:
        return self._lr_value

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr_value = check_lr(value, "Trainer", self._dt)
        self._lr.update_inplace(np.array(self._lr_value, dtype=self._dt))

    @property
    def providers(self) -> list[str]:
        """The execution providers the session ended up with (onnxruntime may drop unavailable ones)."""
        return self._session.get_providers()

    # -- state in and out (the only numpy copies) ---------------------------------------------

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of the parameters (``W{i}: [in, out]``, ``b{i}``)."""
        cur = self._bufs[self._cur]
        return {n: np.array(cur[n].numpy(), copy=True) for n in self.signature.params}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Copies of everything a checkpoint needs: parameters, optimizer state, ``"step"``, and the
        step checks' history (``guard.*``, with checks on)."""
        cur = self._bufs[self._cur]
        arrays = {n: np.array(cur[n].numpy(), copy=True) for n in self.signature.carried}
        arrays[STEP_KEY] = np.asarray(self._steps, dtype=np.int64)
        if self.guard is not None:
            arrays.update(self.guard.state())
        return arrays

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the whole state with ``arrays`` (as :meth:`state_arrays` gives them).

        All names, shapes and dtypes are checked before anything is written, so a bad
        checkpoint leaves the trainer as it was.
        """
        expected = {**{n: self._dt for n in self.signature.carried}, STEP_KEY: np.dtype(np.int64)}
        if ADAM_T in expected:
            expected[ADAM_T] = np.dtype(np.int64)
        missing = [n for n in expected if n not in arrays]
        extra = [n for n in arrays if n not in expected and n not in STATE_KEYS and n != EVER_KEY]
        history = [n for n in STATE_KEYS if n in arrays]
        if history and len(history) != len(STATE_KEYS):
            missing += [n for n in STATE_KEYS if n not in arrays]
        if missing or extra:
            raise SpecError(f"state does not fit this trainer: missing {missing}, unexpected {extra}")
        checked: dict[str, np.ndarray] = {}
        for n, dt in expected.items():
            a = np.asarray(arrays[n])
            shape = () if n == STEP_KEY else self.signature.shapes[n]
            if a.shape != shape or a.dtype != dt:
                raise SpecError(
                    f"state[{n!r}] is {a.dtype.name}{list(a.shape)}, this trainer needs {dt.name}{list(shape)}"
                    + (" (cast it with .astype first)" if a.shape == shape else "")
                )
            checked[n] = np.asarray(a, order="C")
        if int(checked[STEP_KEY]) < 0:
            raise SpecError(f"state['step'] must be >= 0, got {int(checked[STEP_KEY])}")
        guard = StepGuard(self.guard.limits) if self.guard is not None else None
        if guard is not None and history:  # the history that goes with these weights (a checkpoint's)
            try:
                guard.load(arrays)
            except ValueError as exc:
                raise SpecError(f"state: {exc}") from None
        cur = self._bufs[self._cur]
        for n in self.signature.carried:
            cur[n].update_inplace(checked[n])
        self._steps = int(checked[STEP_KEY])
        if guard is not None:
            self.guard = guard  # the state's own history, else none: the norms before were another state's
        self.mark(checked)  # what was loaded is the anchor (a checkpoint's, whose SHA-256 was checked)
        self._lr.update_inplace(np.array(self._lr_value, dtype=self._dt))  # and the rate as set, anew

    # -- the state between steps (training/guard.py: state_fault) ---------------------------------

    def _moments(self) -> tuple[str, ...]:
        return tuple(n for n in self.signature.carried if n not in self.signature.params and n != ADAM_T)

    def mark(self, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Take ``arrays`` (as :meth:`state_arrays` gives them; default: the state now) as the anchor
        :meth:`state_fault` holds the state to: call it with a state checked and written."""
        arrays = self.state_arrays() if arrays is None else arrays
        adam_t = ADAM_T if ADAM_T in self.signature.carried else None
        self._anchor = anchor_of(arrays, self.signature.params, self._moments(), adam_t)
        if self.guard is not None:
            self.guard.mark()

    def state_fault(self, arrays: Mapping[str, np.ndarray] | None = None) -> str:
        """Empty if the state (``arrays``, else the state now) is one the steps accepted since the anchor
        (:meth:`mark`, :meth:`load_state`) can have made; else what is wrong with it, with the numbers: an
        upset in memory between steps, which no step check sees (:func:`~flight.compute.training.guard.state_fault`).
        Without step checks there are no norms to hold it to: only non-finite values are found."""
        arrays = self.state_arrays() if arrays is None else arrays
        adam_t = ADAM_T if ADAM_T in self.signature.carried else None
        lr = float(self._lr.numpy())
        if lr != float(np.asarray(self._lr_value, dtype=self._dt)):  # in memory too (found in review: x 256 passed)
            return f"the learning rate in memory is {lr:.6g}, set to {self._lr_value:.6g}"
        if self.guard is None or self._anchor is None:
            bad = not_finite(arrays)
            return f"{bad} is not finite in memory between steps" if bad else ""
        momentum = self.optimizer.momentum if isinstance(self.optimizer, Sgd) else None
        return state_fault(arrays, self._anchor, self.guard, momentum, adam_t)

    def flip_bit(self, name: str, flat_index: int, bit: int) -> None:
        """Flip one bit of one element of the live state ``name`` (or of the learning rate, the step's
        ``lr`` input), as an upset in its memory would (the tests' injection: :meth:`load_state` would
        take the result as a new anchor)."""
        if name != self.signature.lr and name not in self.signature.carried:
            raise KeyError(f"{name!r} is not in the state (one of {[self.signature.lr, *self.signature.carried]})")
        value = self._lr if name == self.signature.lr else self._bufs[self._cur][name]
        a = np.array(value.numpy(), copy=True)
        if not 0 <= flat_index < a.size or not 0 <= bit < 8 * a.itemsize:
            raise ValueError(f"element {flat_index} bit {bit} is outside {name} ({a.size} elements of "
                             f"{8 * a.itemsize} bits)")
        a.reshape(-1).view(f"u{a.itemsize}")[flat_index] ^= np.array(1 << bit).astype(f"u{a.itemsize}")
        value.update_inplace(a)

    def inference_model(self) -> onnx.ModelProto:
        """The forward pass with the current weights (:func:`build_inference_model`)."""
        return build_inference_model(self.spec, self.weights(), dtype=self._dt.name)
