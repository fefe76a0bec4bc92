"""The Trainer: state round-trips bit for bit, bad input and bad checkpoints are refused,
a non-finite step is discarded, the learning rate changes without a rebuild."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flight.compute.training import (
    STEP_KEY,
    Adam,
    Dense,
    MlpSpec,
    NonFiniteLossError,
    Sgd,
    SpecError,
    StepRefusedError,
    Trainer,
    init_weights,
)

SPEC = MlpSpec(12, [Dense(16, "relu"), Dense(8, "tanh"), Dense(4)])
MSE = MlpSpec(12, [Dense(16, "sigmoid"), Dense(3, "linear")], "mse")
BATCH = 8
OPTIMIZERS = [Sgd(0.1), Sgd(0.05, momentum=0.9), Adam(1e-2)]


def _batches(spec: MlpSpec, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=(BATCH, spec.input_dim)).astype(np.float32)
        if spec.loss == "mse":
            yield x, rng.normal(size=(BATCH, spec.output_dim)).astype(np.float32)
        else:
            yield x, rng.integers(0, spec.output_dim, BATCH)


def _assert_same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize("spec", [SPEC, MSE], ids=["ce", "mse"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
def test_state_round_trip_gives_identical_next_step(optimizer, spec):
    batches = list(_batches(spec, 6))
    first = Trainer(spec, optimizer, BATCH, seed=1)
    for x, y in batches[:5]:  # an odd count: the first trainer's state sits in its second buffer set
        first.step(x, y)
    saved = first.state_arrays()
    assert int(saved[STEP_KEY]) == 5
    second = Trainer(spec, optimizer, BATCH, seed=99)  # other weights, overwritten by the load
    second.load_state(saved)
    assert second.steps == 5
    _assert_same_bits(second.state_arrays(), saved)
    x, y = batches[5]
    r1, r2 = first.step(x, y), second.step(x, y)
    assert r1 == r2 and np.float32(r1.loss).tobytes() == np.float32(r2.loss).tobytes()
    _assert_same_bits(first.state_arrays(), second.state_arrays())


def test_state_arrays_are_copies():
    trainer = Trainer(SPEC, Adam(1e-2), BATCH)
    before = trainer.state_arrays()
    kept = {n: a.copy() for n, a in before.items()}
    for x, y in _batches(SPEC, 3):
        trainer.step(x, y)
    _assert_same_bits(before, kept)  # later steps did not write into an earlier checkpoint
    assert not np.array_equal(trainer.weights()["W0"], before["W0"])


def test_lr_setter_equals_building_with_that_lr():
    a = Trainer(SPEC, Sgd(0.3), BATCH)
    a.lr = 0.05
    b = Trainer(SPEC, Sgd(0.05), BATCH)
    for x, y in _batches(SPEC, 3):
        assert a.step(x, y) == b.step(x, y)
    _assert_same_bits(a.state_arrays(), b.state_arrays())
    with pytest.raises(SpecError, match="Trainer.lr"):
        a.lr = 0.0
    assert a.lr == 0.05


def test_non_finite_step_is_discarded():
    trainer = Trainer(SPEC, Adam(1e-2), BATCH)
    batches = list(_batches(SPEC, 2))
    trainer.step(*batches[0])
    before = trainer.state_arrays()
    x_bad = batches[1][0].copy()
    x_bad[3, 2] = np.nan  # a radiation-flipped exponent, say
    with pytest.raises(NonFiniteLossError) as info:
        trainer.step(x_bad, batches[1][1])
    assert info.value.step == 2 and np.isnan(info.value.loss)
    assert trainer.steps == 1
    _assert_same_bits(trainer.state_arrays(), before)
    assert np.isfinite(trainer.step(*batches[1]).loss)


def test_bad_batches_are_refused_with_the_numbers():
    trainer = Trainer(SPEC, Sgd(0.1), BATCH)
    x, y = next(_batches(SPEC, 1))
    with pytest.raises(ValueError, match=r"\(7, 12\).*\(8, 12\)"):
        trainer.step(x[:7], y[:7])
    # A label out of range is a bad sample (a bit flipped in memory, or in the data set): refused, the
    # state unchanged, so the job retries, then skips it, as for a bad x (found in review).
    with pytest.raises(StepRefusedError, match=r"\[0, 4\).*max 4"):
        trainer.step(x, np.full(BATCH, 4))
    with pytest.raises(StepRefusedError, match="min -1"):
        trainer.step(x, np.full(BATCH, -1))
    with pytest.raises(ValueError, match="labels of shape"):
        trainer.step(x, np.zeros((BATCH, 4)))
    mse = Trainer(MSE, Sgd(0.1), BATCH)
    with pytest.raises(ValueError, match=r"targets of shape \(8, 3\)"):
        mse.step(x, np.zeros(BATCH))
    assert trainer.steps == 0 and mse.steps == 0


def test_bad_checkpoints_are_refused_and_change_nothing():
    trainer = Trainer(SPEC, Adam(1e-2), BATCH)
    for x, y in _batches(SPEC, 2):
        trainer.step(x, y)
    good = trainer.state_arrays()
    cases = [
        ({k: v for k, v in good.items() if k != "adam.t"}, re.escape("missing ['adam.t']")),
        ({**good, "W9": np.zeros(3)}, re.escape("unexpected ['W9']")),
        ({**good, "W1": good["W1"].astype(np.float64)}, r"float64\[16, 8\].*float32\[16, 8\].*astype"),
        ({**good, "b0": good["b0"][:5]}, r"float32\[5\].*float32\[16\]"),
        ({**good, "step": np.asarray(-1, np.int64)}, "must be >= 0"),
    ]
    for arrays, pattern in cases:
        with pytest.raises(SpecError, match=pattern):
            trainer.load_state(arrays)
        _assert_same_bits(trainer.state_arrays(), good)


def test_weights_in_and_out():
    w = init_weights(SPEC, seed=7)
    trainer = Trainer(SPEC, Sgd(0.1), BATCH, weights=w)
    _assert_same_bits(trainer.weights(), w)
    with pytest.raises(SpecError, match="missing"):
        Trainer(SPEC, Sgd(0.1), BATCH, weights={"W0": w["W0"]})


def test_threads_and_providers_pass_through():
    trainer = Trainer(SPEC, Sgd(0.1), BATCH, intra_op_num_threads=2, providers=["CPUExecutionProvider"])
    assert trainer.providers == ["CPUExecutionProvider"]
    assert np.isfinite(trainer.step(*next(_batches(SPEC, 1))).loss)


@pytest.mark.parametrize("name,value", [("W1", np.nan), ("b2", np.inf), ("b0", 1e39)], ids=str)
def test_weights_not_finite_in_the_step_dtype_are_refused_naming_the_array(name, value):
    """Starting weights holding a NaN, an infinity or a float64 past float32's range are refused naming the
    array, not taken and every step then refused as a bad batch or rate."""
    w = init_weights(SPEC, seed=7).copy()
    w[name] = w[name].astype(np.float64)
    w[name].reshape(-1)[1] = value
    with pytest.raises(SpecError, match=re.escape(f"weights[{name!r}]") + ".*not a finite float32"):
        Trainer(SPEC, Adam(1e-2), BATCH, weights=w)
    ok = Trainer(SPEC, Adam(1e-2), BATCH, weights=init_weights(SPEC, seed=7), dtype="float64")
    assert np.isfinite(ok.step(*next(_batches(SPEC, 1))).loss)
