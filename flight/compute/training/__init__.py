"""On-board training with plain onnxruntime: each step is one standard ONNX graph.

The ``onnxruntime-training`` package is no option on a Jetson (it stopped at 1.19, has no
aarch64 wheel and imports torch; FACTS.md, "ONNX Runtime training"). Here a step — forward,
loss, backward written out by hand, optimizer update — is built as an ordinary ONNX graph,
so any onnxruntime build runs it on any execution provider (CPU, CUDA, TensorRT).

Modules: ``spec`` (what to train: :class:`MlpSpec`, :class:`Dense`, :class:`Sgd`,
:class:`Adam`, validated once), ``graph`` (pure builders: specs in, ``ModelProto`` out),
``head`` (take the last layers of an inference model as a trainable head), ``trainer``
(:class:`Trainer`: the session and the state as ``OrtValue``\\ s), ``guard`` (each step's
gradient and update checked before it is committed), ``reference`` (the same
step in numpy, the yardstick for the graphs).

>>> from flight.compute.training import Adam, Dense, MlpSpec, Trainer
>>> spec = MlpSpec(4, [Dense(8, "relu"), Dense(3)])
>>> trainer = Trainer(spec, Adam(lr=1e-2), batch_size=2)
>>> loss, correct = trainer.step([[0.0, 1, 2, 3], [3, 2, 1, 0]], [0, 2])
>>> sorted(trainer.state_arrays())[:3]
['W0', 'W0.adam_m', 'W0.adam_v']
"""

from flight.compute.training.graph import (
    IR_VERSION,
    OPSET,
    build_inference_model,
    build_training_step,
    export_weights,
    init_state,
    init_weights,
)
from flight.compute.training.guard import StepGuard, StepLimits
from flight.compute.training.head import DenseNode, TrainableHead, dense_layers, from_inference_head
from flight.compute.training.spec import (
    ACTIVATIONS,
    LOSSES,
    Adam,
    Dense,
    MlpSpec,
    Sgd,
    SpecError,
    StepSignature,
    next_name,
    step_signature,
)
from flight.compute.training.trainer import STEP_KEY, NonFiniteLossError, StepRefusedError, StepResult, Trainer

__all__ = [
    "ACTIVATIONS",
    "IR_VERSION",
    "LOSSES",
    "OPSET",
    "STEP_KEY",
    "Adam",
    "Dense",
    "DenseNode",
    "MlpSpec",
    "NonFiniteLossError",
    "Sgd",
    "SpecError",
    "StepGuard",
    "StepLimits",
    "StepRefusedError",
    "StepResult",
    "StepSignature",
    "TrainableHead",
    "Trainer",
    "build_inference_model",
    "build_training_step",
    "dense_layers",
    "export_weights",
    "from_inference_head",
    "init_state",
    "init_weights",
    "next_name",
    "step_signature",
]
