"""Regenerate the cloud-screening data and model, deterministically, into a directory.

``scripts/build_cloud_model.py`` is the command-line face of :func:`build`. Build-time
only (needs ``onnx``). Seeds: training tiles ``seed``, held-out tiles ``seed + 1``,
weight initialisation and batch order ``seed + 2`` — three streams that never overlap,
so changing ``n_train`` leaves the held-out set as it was.

The accuracy written into the card is measured with onnxruntime on the exported file
and on the held-out tiles exactly as stored (uint16 DNs), i.e. on what ships.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from flight.compute.usecase import shipped
from flight.compute.usecase.cloud import (
    BANDS,
    CLASSES,
    CLOUD_PIXEL_OPACITY,
    CLOUDY_FRACTION,
    DN_PER_REFLECTANCE,
    TILE_PX,
    evaluate,
    generate_tileset,
)
from flight.compute.usecase.export import INPUT_NAME, IR_VERSION, OPSET, to_onnx
from flight.compute.usecase.train import TrainConfig, train
from flight.storage import write_atomic

DEFAULT_SEED = 2020  # the year Phi-sat-1 flew
DEFAULT_N_TRAIN = 4000
DEFAULT_N_TEST = 800  # 800 tiles x 2 KiB of DNs: the shipped set stays well under 2 MB
MODEL_VERSION = "1.0"
DEFAULT_CONFIG = TrainConfig(conv1_channels=16, conv2_channels=12, epochs=20, batch_tiles=64, learning_rate=0.02)

# The numpy forward pass and onnxruntime must agree; float32 summation order differs
# between them, which moves a probability by ~1e-6, so 1e-4 is generous yet catches
# any layout mistake (a transposed weight moves it by O(0.1)).
_MAX_ORT_NUMPY_DIFF = 1e-4


def build(
    out_dir: Path | str = shipped.MODELS_DIR,
    seed: int = DEFAULT_SEED,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    config: TrainConfig = DEFAULT_CONFIG,
) -> dict[str, Any]:
    """Generate, train, export, evaluate; write the model, held-out set and card; return the card."""
    out_dir = Path(out_dir)
    train_set = generate_tileset(n_train, seed)
    test_set = generate_tileset(n_test, seed + 1)
    net = train(train_set.tiles, train_set.labels, train_set.cloud_mask, seed + 2, config)

    doc = (
        "Cloud screening of 4-band 16x16 tiles (blue, green, red, NIR reflectance). "
        "Outputs: logits and probabilities over (CLEAR, CLOUDY); cloud_fraction, the mean per-pixel "
        "cloud probability. See cloud_screen.json."
    )
    model = to_onnx(net, shipped.MODEL_NAME, MODEL_VERSION, doc)
    model_bytes = model.SerializeToString()

    # Evaluate what ships: the held-out tiles after their trip through uint16 DNs.
    held_out_bytes = shipped.held_out_bytes(test_set)
    stored = shipped.load_held_out(io.BytesIO(held_out_bytes))
    assert np.array_equal(stored.tiles, test_set.tiles), "held-out tiles did not survive the DN round trip"

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    logits, probs, fraction = session.run(None, {INPUT_NAME: stored.tiles})
    reference = net.forward(stored.tiles)
    diff = float(np.max(np.abs(probs - reference["probabilities"]))) if len(probs) else 0.0
    if diff > _MAX_ORT_NUMPY_DIFF:
        raise AssertionError(f"onnxruntime and the numpy forward pass differ by {diff:.2e} (> {_MAX_ORT_NUMPY_DIFF})")
    held_out = evaluate(probs, stored, fraction)
    train_probs = net.forward(train_set.tiles)["probabilities"]
    train_accuracy = round(float((train_probs.argmax(axis=1) == train_set.labels).mean()), 4)

    write_atomic(out_dir / shipped.MODEL_FILE, model_bytes)
    write_atomic(out_dir / shipped.HELD_OUT_FILE, held_out_bytes)
    card = _card(seed, n_train, n_test, config, held_out, train_accuracy, model, model_bytes, held_out_bytes, diff)
    write_atomic(out_dir / shipped.CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    for name in (shipped.MODEL_FILE, shipped.HELD_OUT_FILE, shipped.CARD_FILE):
        (out_dir / name).chmod(0o644)  # write_atomic's temporary files are 0600; these ship
    return card


def _card(seed, n_train, n_test, config, held_out, train_accuracy, model, model_bytes, held_out_bytes, diff) -> dict[str, Any]:
    return {
        "name": shipped.MODEL_NAME,
        "version": MODEL_VERSION,
        "task": (
            "Screen image tiles before downlink: CLOUDY tiles stay on board (dropped from the downlink), "
            "CLEAR tiles go down. After ESA Phi-sat-1 (2020)."
        ),
        "classes": list(CLASSES),
        "label_rule": (
            f"CLOUDY when more than {CLOUDY_FRACTION} of the tile's pixels have cloud opacity "
            f">= {CLOUD_PIXEL_OPACITY} (thick cloud and cirrus together)"
        ),
        "decision": "downlink when P(CLOUDY) < drop_threshold (0.5 by default); see flight.compute.usecase.cloud.screen",
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", len(BANDS), TILE_PX, TILE_PX],
            "dtype": "float32",
            "units": f"top-of-atmosphere reflectance (Sentinel-2 L1C DN / {DN_PER_REFLECTANCE:g})",
            "bands": list(BANDS),
        },
        "outputs": [
            {"name": "logits", "shape": ["N", 2]},
            {"name": "probabilities", "shape": ["N", 2], "note": "softmax of logits, columns in 'classes' order"},
            {"name": "cloud_fraction", "shape": ["N", 1], "note": "mean per-pixel cloud probability, an estimate"},
        ],
        "architecture": model.graph.doc_string,
        "parameters": int(sum(int(np.prod(t.dims)) for t in model.graph.initializer)),
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "data": {
            "source": "procedural (flight.compute.usecase.cloud.generate_tiles); nothing downloaded",
            "seed": seed,
            "train_seed": seed,
            "held_out_seed": seed + 1,
            "init_seed": seed + 2,
            "n_train": n_train,
            "n_held_out": n_test,
        },
        "train_config": asdict(config),
        "train_accuracy": train_accuracy,
        "held_out": held_out,
        "onnxruntime_vs_numpy_max_abs_diff": float(f"{diff:.3g}"),
        "files": {
            shipped.MODEL_FILE: {"sha256": hashlib.sha256(model_bytes).hexdigest(), "size_bytes": len(model_bytes)},
            shipped.HELD_OUT_FILE: {"sha256": hashlib.sha256(held_out_bytes).hexdigest(), "size_bytes": len(held_out_bytes)},
        },
        "rebuild": f"python scripts/build_cloud_model.py --seed {seed} --n-train {n_train} --n-test {n_test}",
        "built_with": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "limitations": [
            "Trained and tested on procedural tiles, not on real imagery: the accuracy says the pipeline works, "
            "not how the model would do on a real sensor.",
            "Four visible/NIR bands only: snow and bright desert are the main confusions (no SWIR or thermal band).",
            "Float32 BLAS rounding can differ between machines, so a rebuild elsewhere may give slightly "
            "different weights; the held-out set is bit-exact for the same numpy.",
        ],
    }
