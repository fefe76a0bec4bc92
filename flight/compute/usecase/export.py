"""Write a trained :class:`~flight.compute.usecase.train.CloudNet` as an ONNX graph, node by node.

Build-time only: this module needs the ``onnx`` package, which the board does not (the
board runs the file with onnxruntime alone).

Opset 17 and IR version 8 so that the onnxruntime builds NVIDIA ships for JetPack 5
(onnxruntime 1.16-1.17) load the file; nothing in the graph needs a newer operator.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from flight.compute.usecase.cloud import BANDS, TILE_PX
from flight.compute.usecase.train import CloudNet

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "tiles"
OUTPUT_NAMES = ("logits", "probabilities", "cloud_fraction")


def to_onnx(net: CloudNet, name: str = "cloud_screen", version: str = "1", doc: str = "") -> onnx.ModelProto:
    c1, c2 = len(net.b1), len(net.b2)
    inits = [
        _tensor("band_mean", net.band_mean.reshape(1, -1, 1, 1)),
        _tensor("band_std", net.band_std.reshape(1, -1, 1, 1)),
        _tensor("w1", net.w1),
        _tensor("b1", net.b1),
        _tensor("w2", net.w2),
        _tensor("b2", net.b2),
        _tensor("w3", net.w3),
        _tensor("b3", net.b3),
        _tensor("wh", net.wh),
        _tensor("bh", net.bh),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "band_mean"], ["centred"], name="normalise_sub"),
        helper.make_node("Div", ["centred", "band_std"], ["xn"], name="normalise_div"),
        helper.make_node("Conv", ["xn", "w1", "b1"], ["a1"], name="conv3x3", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["h1"], name="relu1"),
        helper.make_node("Conv", ["h1", "w2", "b2"], ["a2"], name="conv1x1_hidden", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["a2"], ["h2"], name="relu2"),
        helper.make_node("Conv", ["h2", "w3", "b3"], ["pixel_logit"], name="conv1x1_pixel", kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["pixel_logit"], ["pixel_p"], name="pixel_cloud_probability"),
        helper.make_node("GlobalAveragePool", ["pixel_p"], ["fraction_4d"], name="mean_cloud_probability"),
        helper.make_node("Flatten", ["fraction_4d"], ["cloud_fraction"], name="cloud_fraction", axis=1),
        helper.make_node("GlobalAveragePool", ["h2"], ["hmean_4d"], name="mean_hidden"),
        helper.make_node("Flatten", ["hmean_4d"], ["hmean"], name="flatten_hidden", axis=1),
        helper.make_node("Concat", ["cloud_fraction", "hmean"], ["z"], name="tile_features", axis=1),
        helper.make_node("Gemm", ["z", "wh", "bh"], ["logits"], name="head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", len(BANDS), TILE_PX, TILE_PX])],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("cloud_fraction", TensorProto.FLOAT, ["N", 1]),
        ],
        initializer=inits,
        doc_string=f"conv3x3 4->{c1}, conv1x1 {c1}->{c2}, conv1x1 {c2}->1 per-pixel cloud; head {1 + c2}->2",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="sunlit scripts/build_cloud_model.py",
        producer_version=version,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    helper.set_model_props(model, {"name": name, "version": version, "input_units": "reflectance", "bands": ",".join(BANDS)})
    onnx.checker.check_model(model, full_check=True)
    return model


def _tensor(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name=name)
