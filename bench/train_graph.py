"""On-board training step as a standard ONNX graph. Prints one JSON object as its last line.

- ``train_step_us``: median wall time of one ``Trainer.step`` (64→128→10 MLP, relu, softmax
  cross-entropy, batch 64, plain SGD, CPU provider, one intra-op thread) over
  ``BENCH_TRAIN_STEPS`` steps after ``BENCH_TRAIN_WARMUP`` warm-up steps. The whole call is
  timed: input checks, copying the batch in, the run, reading back loss and correct count.
- ``train_step_adam_us``: the same with Adam.
- ``torch_step_us``: the same model and step in PyTorch eager on one thread
  (``torch.set_num_threads(1)``): ``from_numpy`` for the batch, zero_grad, forward,
  ``cross_entropy``, backward, ``SGD.step``, and ``.item()`` of the loss and of the correct
  count, so both sides return the same two numbers; null when torch is not importable.
- ``train_speedup_vs_torch``: the median, over interleaved chunks of steps (the order swapped each chunk),
  of torch's step time over ours in the chunk.
- ``train_final_accuracy``: held-out accuracy on scikit-learn's bundled ``load_digits``
  (450 held out) after 30 epochs of Adam(1e-3), as tests/test_training_digits.py trains;
  null when scikit-learn is not installed.

Batches are real digits images when scikit-learn is there, else standard normal noise (the
step's cost does not depend on the values, barring denormals).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import onnxruntime as ort

from flight.compute.training import Adam, Dense, MlpSpec, Sgd, Trainer

STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "5000"))
WARMUP = int(os.environ.get("BENCH_TRAIN_WARMUP", "500"))
BATCH = 64
LR = 0.05
SPEC = MlpSpec(64, [Dense(128, "relu"), Dense(10)])
HELD_OUT = 450


def _digits() -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _batches(data, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        if data is None:
            out.append((rng.normal(size=(BATCH, 64)).astype(np.float32), rng.integers(0, 10, BATCH)))
        else:
            idx = rng.choice(len(data[0]), BATCH, replace=False)
            out.append((data[0][idx], data[1][idx]))
    return out


def _median_us(step, batches) -> float:
    for k in range(WARMUP):
        step(*batches[k % len(batches)])
    times = np.empty(STEPS)
    clock = time.perf_counter_ns
    for k in range(STEPS):
        x, y = batches[k % len(batches)]
        t0 = clock()
        step(x, y)
        times[k] = clock() - t0
    return float(np.median(times)) / 1000.0


PAIR_CHUNKS = 10  # ours and torch's steps timed in this many alternating chunks (the order swapped each time)


def _paired_us(steps: dict[str, Any], batches) -> tuple[dict[str, float], float | None]:
    """The median step of each of ``steps`` (name -> step function), timed in :data:`PAIR_CHUNKS` interleaved
    chunks of STEPS // PAIR_CHUNKS steps, the order swapped each chunk; and the median over the chunks of the
    ratio of the second's to the first's (a review: one block after the other put a slow spell on one side)."""
    for step in steps.values():
        for k in range(WARMUP):
            step(*batches[k % len(batches)])
    names = list(steps)
    per: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    n = max(1, STEPS // PAIR_CHUNKS)
    for chunk in range(PAIR_CHUNKS):
        for name in (names if chunk % 2 == 0 else names[::-1]):
            times = np.empty(n)
            for k in range(n):
                x, y = batches[(chunk * n + k) % len(batches)]
                t0 = clock()
                steps[name](x, y)
                times[k] = clock() - t0
            per[name].append(float(np.median(times)) / 1000.0)
    medians = {name: float(np.median(v)) for name, v in per.items()}
    ratio = float(np.median(np.array(per[names[1]]) / np.array(per[names[0]]))) if len(names) == 2 else None
    return medians, ratio


def _torch_step(batches) -> tuple[Any, str | None]:
    """PyTorch's step of the same model, or (None, None) where torch is not importable."""
    try:
        import torch
    except ImportError:
        return None, None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.functional.cross_entropy

    def step(x_np, y_np):
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        return loss.item(), int((logits.argmax(dim=1) == y).sum().item())

    return step, torch.__version__


def _final_accuracy(data) -> float | None:
    if data is None:
        return None
    x, y = data
    order = np.random.default_rng(0).permutation(len(x))
    x_train, y_train, x_test, y_test = x[order[HELD_OUT:]], y[order[HELD_OUT:]], x[order[:HELD_OUT]], y[order[:HELD_OUT]]
    trainer = Trainer(SPEC, Adam(lr=1e-3), BATCH, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(30):
        perm = rng.permutation(len(x_train))
        for k in range(len(perm) // BATCH):
            idx = perm[k * BATCH:(k + 1) * BATCH]
            trainer.step(x_train[idx], y_train[idx])
    session = ort.InferenceSession(trainer.inference_model().SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"x": x_test})[0]
    return round(float((logits.argmax(axis=1) == y_test).mean()), 4)


def figures() -> dict[str, object]:
    """Every training figure above, as a dict (bench.compute reports them too)."""
    data = _digits()
    batches = _batches(data, 64)
    sgd = Trainer(SPEC, Sgd(lr=LR), BATCH, intra_op_num_threads=1)
    adam = Trainer(SPEC, Adam(lr=1e-3), BATCH, intra_op_num_threads=1)
    out: dict[str, object] = {}
    torch_step, torch_version = _torch_step(batches)
    medians, speedup = _paired_us({"ours": sgd.step, **({"torch": torch_step} if torch_step else {})}, batches)
    out["train_step_us"] = round(medians["ours"], 2)
    out["train_step_adam_us"] = round(_median_us(adam.step, batches), 2)
    out["torch_step_us"] = None if torch_step is None else round(medians["torch"], 2)
    out["train_speedup_vs_torch"] = None if speedup is None else round(speedup, 2)
    out["train_final_accuracy"] = _final_accuracy(data)
    out["onnxruntime"] = ort.__version__
    out["torch"] = torch_version
    out["data"] = "load_digits" if data is not None else "random"
    out["steps"] = STEPS
    out["cpu_count"] = os.cpu_count()
    return out


def main() -> int:
    print(json.dumps(figures()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
