"""Checked inference: the worker runs each model as the checksum pass (flight/compute/abft.py)
rewrites it, with ``abft_checks`` on, and the lean unchecked path with it off.

Real onnxruntime sessions throughout: the shipped cloud-screening model, protected by the worker
itself from the model store's bytes, on buffers its WeightScrubber owns; the worker runs in this
process on a real socket (tests/model_helpers.py). Upsets are bit flips in those buffers.
"""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from flight.compute import abft
from flight.compute import worker as worker_module
from flight.compute import protocol as cp
from flight.compute.abft import describe
from flight.compute.checks import CHECK_OUTPUT, FAILED, PASSED, UNCHECKED, ProductChecks
from flight.compute.package import ReferenceSet, compare_outputs, run_outputs, sha256_hex
from flight.compute.providers import CPU, CUDA, GPU_PROVIDERS, cpu_nchwc_block
from flight.compute.store import Provenance
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_held_out
from flight.link.definitions import DICTIONARY, Admission, FluxClass, Protection
from tests.model_helpers import WorkerBench, admissions

SHIPPED = (MODELS_DIR / MODEL_FILE).read_bytes()
TILES = load_held_out().tiles[:24].astype(np.float32)
QUIET = cp.Radiation(FluxClass.QUIET, False, 10.0, 5700.0)  # a 1500 s scrub period: no step repairs mid-test
BATCH = 8


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    b.worker.install_shipped_models()
    b.data_set("tiles", TILES)
    yield b
    b.close()


def admit(bench, abft: bool, scrub: bool = True, fraction: float = 0.0, threads: int = 1,
          ranges: bool = False) -> None:
    """What the agent sends every tick: here, the parameters under test."""
    bench.worker._handle(cp.Admit(Admission.ALL, threads, BATCH, 1.0, None, "test", radiation=QUIET,  # noqa: SLF001
                                  double_run_fraction=fraction, double_run_all_in_saa=False, scrub_weights=scrub,
                                  abft_checks=abft, range_checks=ranges))


def product(bench, job_id: int, name: str = "tiles"):
    """(receipt, per-tile check, classes, confidence) of a job's product."""
    summary = json.loads((bench.root / "products" / f"job{job_id:05d}-{name}.json").read_text())
    with np.load(bench.root / "products" / f"job{job_id:05d}-{name}.npz", allow_pickle=False) as npz:
        receipt = json.loads(str(npz["receipt"]))
        assert summary["receipt"] == receipt
        return receipt, npz["check"].tolist(), npz["classes"], npz["confidence"]


def infer(bench, job_id: int, model: str = MODEL_NAME):
    job = bench.infer(job_id, "tiles", model=model)
    assert job.state.value == "DONE", job.detail
    return product(bench, job_id)


def unchecked_said(bench) -> list[cp.WorkerEvent]:
    """The worker's word that a model runs without the checksum pass (MODEL_UNCHECKED)."""
    return bench.events("MODEL_UNCHECKED")


def flip(buffer: np.ndarray, byte: int, bit: int) -> None:
    buffer[byte] ^= np.uint8(1 << bit)


def run_all(model, tiles: np.ndarray = TILES) -> list[np.ndarray]:
    """Every output the worker asks of ``model``'s session: the model's own result, then abft_ok."""
    return model.session.run(list(model.outputs), {model.input_name: tiles})


# --- the checked path gives the model's own results, and says it checked them -------------------


@pytest.mark.req("RAD-001", "RAD-104", "RAD-106")
def test_a_checked_job_gives_the_same_results_as_an_unchecked_one_and_says_it_checked_them(bench):
    admit(bench, abft=False)
    plain, plain_check, plain_classes, plain_conf = infer(bench, 1)
    admit(bench, abft=True)
    receipt, check, classes, conf = infer(bench, 2)
    # The pass only reads: the model's own outputs are bit for bit those of the model as uplinked.
    np.testing.assert_array_equal(classes, plain_classes)
    np.testing.assert_array_equal(conf, plain_conf)
    assert (plain["protection"], plain["check_status"], plain_check) == ("scrubbed", "unchecked", [UNCHECKED] * 24)
    assert (receipt["protection"], receipt["provider"], receipt["check_status"]) == ("abft+scrubbed", CPU, "passed")
    assert (receipt["tiles_checked"], receipt["tiles_passed"], receipt["tiles_unchecked"], receipt["batches"],
            receipt["abft_failures"], receipt["reruns"]) == (24, 24, 0, 3, 0, 0)
    assert check == [PASSED] * 24
    # The receipt names the model the ground uplinked, not the bytes the pass made from it.
    assert receipt["model_sha256"] == plain["model_sha256"] == sha256_hex(SHIPPED)
    assert bench.worker.status().model_protection == "abft+scrubbed"
    assert unchecked_said(bench) == []
    # With a double run every other batch too: every tile still checked, once per batch at least.
    admit(bench, abft=True, fraction=0.5)
    receipt, check, classes, _ = infer(bench, 3)
    assert (receipt["batches"], receipt["double_runs"], receipt["tiles_checked"], check) == (3, 1, 24, [PASSED] * 24)
    np.testing.assert_array_equal(classes, plain_classes)
    # Without owned weights the checks still run: protection abft alone.
    admit(bench, abft=True, scrub=False)
    assert infer(bench, 4)[0]["protection"] == "abft"


@pytest.mark.req("RAD-001")
def test_the_checked_session_gives_the_reference_outputs_of_the_model_as_uplinked(bench):
    state = bench.worker.store.state(MODEL_NAME)
    reference = ReferenceSet.from_bytes(bench.worker.store.load_reference(MODEL_NAME, state.active.version))
    names = list(reference.outputs)
    assert sorted(names) == ["cloud_fraction", "logits", "probabilities"]  # every output of the file
    admit(bench, abft=False)
    plain = run_outputs(bench.worker._session(MODEL_NAME).session, reference.x, names, BATCH)  # noqa: SLF001
    admit(bench, abft=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert model.check_output == CHECK_OUTPUT and model.outputs == ("probabilities", CHECK_OUTPUT)
    assert [o.name for o in model.session.get_outputs()] == ["logits", "probabilities", "cloud_fraction", CHECK_OUTPUT]
    checked = run_outputs(model.session, reference.x, names + [CHECK_OUTPUT], BATCH)
    # Bit for bit the outputs of the same session options without the checks...
    for name in names:
        np.testing.assert_array_equal(checked[name], plain[name], err_msg=name)
    assert checked[CHECK_OUTPUT].all()
    # ...and within float32 rounding of those the reference set holds, computed when the model was
    # installed, in a session of onnxruntime's default options (optimisation "all", pre-packed
    # weights: another summation order, measured 4.8e-7 on logits of order 1). 1e-5 is 100 times
    # tighter than the tolerance uplinks are signed with (package.DEFAULT_TOLERANCE, 1e-3).
    result = compare_outputs({n: checked[n] for n in names}, reference.outputs, 1e-5)
    assert result.ok, result.describe()


# --- upsets: caught by the flags, scrubbed, run again ---------------------------------------------


@pytest.mark.req("RAD-105", "RAD-104")
def test_a_flipped_model_weight_is_caught_by_the_checksum_repaired_and_the_batch_run_again(bench):
    admit(bench, abft=False)
    _, _, want_classes, want_conf = infer(bench, 1)  # the unchecked path, on intact weights
    admit(bench, abft=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    clean_probs, clean_ok = run_all(model)
    assert clean_ok.all()
    flip(model.scrubber.owned_bytes("w2"), 4 * 5 + 3, 5)  # w2[5], a Conv weight: its exponent, 2**32 times
    hit_probs, hit_ok = run_all(model)
    assert not np.array_equal(hit_probs, clean_probs)  # the session computes from the flipped buffer
    assert not hit_ok.any()  # and every sample's checksum says so

    receipt, check, classes, conf = infer(bench, 2)
    np.testing.assert_array_equal(classes, want_classes)  # computed on the repaired weights
    np.testing.assert_array_equal(conf, want_conf)
    assert check == [PASSED] * 24 and receipt["check_status"] == "passed"
    assert (receipt["abft_failures"], receipt["reruns"], receipt["weights_repaired"], receipt["tiles_failed"],
            receipt["batches"], receipt["tiles_checked"]) == (1, 1, 1, 0, 3, 24)
    (repaired,) = bench.events("WEIGHTS_REPAIRED")
    assert (repaired.args["tensor"], repaired.args["source"], repaired.args["bytes"]) == ("w2", "vote", 1)
    (failed,) = bench.events("RESULT_CHECK_FAILED")
    assert failed.args == {"job_id": 2, "check": "checksum", "tiles": BATCH,
                           "outcome": "passed after a scrub and a rerun"}


@pytest.mark.req("RAD-101", "RAD-102", "RAD-105")
def test_a_flipped_checksum_weight_is_owned_scrubbed_and_repaired_too(bench):
    admit(bench, abft=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    added = [n for n in model.scrubber.names if n.startswith("abft/")]
    assert "abft/2/g" in added and len(added) >= 10  # the pass's weights are in the owned, scrubbed set
    clean_probs, _ = run_all(model)
    g = model.scrubber.owned["abft/2/g"]
    element = int(np.flatnonzero(g)[0])
    flip(model.scrubber.owned_bytes("abft/2/g"), 4 * element + 3, 6)  # its exponent's top bit
    probs, ok = run_all(model)
    np.testing.assert_array_equal(probs, clean_probs)  # the model's own result does not read it...
    assert not ok.any()  # ...the check does, from the owned buffer

    receipt, check, _, _ = infer(bench, 1)
    assert check == [PASSED] * 24 and receipt["check_status"] == "passed"
    assert (receipt["abft_failures"], receipt["reruns"], receipt["weights_repaired"]) == (1, 1, 1)
    assert [e.args["tensor"] for e in bench.events("WEIGHTS_REPAIRED")] == ["abft/2/g"]
    assert model.scrubber.verify() and run_all(model)[1].all()


@pytest.mark.req("RAD-105")
def test_a_flip_in_every_copy_marks_the_tiles_failed_until_the_model_is_loaded_again(bench):
    admit(bench, abft=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    sc = model.scrubber
    # The same flip in the owned buffer and all three golden copies (as if the weight had been hit
    # before the copies were taken): four copies agree, so the scrub trusts them over the CRC.
    for view in (sc.owned_bytes("w2"), *(sc.golden_bytes(k, "w2") for k in range(3))):
        flip(view, 4 * 5 + 3, 5)
    receipt, check, _, _ = infer(bench, 1)
    # Two batches fail again after the scrub; then the session is built anew from the store's bytes.
    assert check == [FAILED] * 16 + [PASSED] * 8
    assert (receipt["check_status"], receipt["tiles_failed"], receipt["tiles_passed"], receipt["tiles_checked"]) == (
        "failed", 16, 8, 24)
    assert receipt["abft_failures"] == receipt["reruns"] == 2  # each: failed, run again, failed again
    first, rebuilt = bench.events("RESULT_CHECK_FAILED")  # the rebuild is said even within 10 s
    assert first.args["outcome"].startswith("failed again after a scrub (checksum)")
    assert rebuilt.args["outcome"].endswith("the model is loaded again from the store")
    assert [e.args["source"] for e in bench.events("WEIGHTS_REPAIRED")] == ["crc table"]
    status = bench.worker.status()
    assert (status.checks_failed, status.reruns, status.results_marked) == (2, 2, 2)
    assert bench.worker._session(MODEL_NAME) is not model  # noqa: SLF001


# --- the unchecked path, and the parameter ---------------------------------------------------------


@pytest.mark.req("RAD-104")
def test_abft_checks_off_runs_unchecked_and_the_receipt_counts_every_tile_in_order(bench):
    admit(bench, abft=False)
    receipt, check, _, _ = infer(bench, 1)
    assert (receipt["protection"], receipt["check_status"], receipt["tiles_unchecked"], receipt["tiles_checked"],
            receipt["batches"]) == ("scrubbed", "unchecked", 24, 0, 3)
    assert check == [UNCHECKED] * 24 and bench.worker._session(MODEL_NAME).check_output is None  # noqa: SLF001
    # Every other batch run twice: the unchecked batches around it keep their places in the product.
    admit(bench, abft=False, fraction=0.5)
    receipt, check, _, _ = infer(bench, 2)
    assert check == [UNCHECKED] * BATCH + [PASSED] * BATCH + [UNCHECKED] * BATCH
    assert (receipt["batches"], receipt["double_runs"], receipt["tiles_checked"], receipt["tiles_unchecked"]) == (
        3, 1, 8, 16)
    assert receipt["check_status"] == "partial"  # a sample passed, the rest never checked: not "passed"
    admit(bench, abft=False, scrub=False)
    receipt, check, _, _ = infer(bench, 3)
    assert (receipt["protection"], receipt["check_status"], receipt["scrub_age_s"]) == ("none", "unchecked", None)


def test_unchecked_batches_enter_the_receipt_together_with_exact_counts():
    many = ProductChecks("ab" * 32, Protection.SCRUBBED, CPU)
    one_by_one = ProductChecks("ab" * 32, Protection.SCRUBBED, CPU)
    many.add_batch(20, None, batches=3, scrub_age_s=2.0, flux=FluxClass.QUIET)
    for n in (8, 8, 4):
        one_by_one.add_batch(n, None, scrub_age_s=2.0, flux=FluxClass.QUIET)
    assert many.receipt() == one_by_one.receipt()
    np.testing.assert_array_equal(many.tile_status(), one_by_one.tile_status())
    with pytest.raises(ValueError, match="batches must be at least 1, got 0"):
        many.add_batch(4, None, batches=0)


@pytest.mark.req("RAD-105", "RAD-106")
def test_changing_abft_checks_reopens_the_session_and_the_pass_runs_once_per_version(bench):
    admit(bench, abft=True)
    checked = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    made = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    assert checked.check_output == CHECK_OUTPUT and made.source_sha256 == sha256_hex(SHIPPED)
    admit(bench, abft=False)
    assert bench.worker._sessions == {}  # noqa: SLF001 - dropped at once
    plain = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert plain.check_output is None and plain.protection.value == "scrubbed"
    assert "abft/2/g" not in plain.scrubber.names
    admit(bench, abft=False)  # the same again: nothing reopens
    assert bench.worker._session(MODEL_NAME) is plain  # noqa: SLF001
    admit(bench, abft=True, threads=2)  # on again (and the threads changed): the pass is not run again
    again = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert again.check_output == CHECK_OUTPUT and again is not checked
    assert bench.worker._checked_models[MODEL_NAME].data is made.data  # noqa: SLF001
    # Kept bytes hit while kept (one bit of a weight) are not built on: made again from the store's.
    hit = bytearray(made.data)
    hit[len(hit) // 2] ^= 0x40
    bench.worker._checked_models[MODEL_NAME] = made._replace(data=bytes(hit))  # noqa: SLF001
    admit(bench, abft=True, threads=1)
    rebuilt = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert bench.worker._checked_models[MODEL_NAME].data == made.data  # noqa: SLF001
    assert rebuilt.scrubber.verify() and run_all(rebuilt)[1].all()


@pytest.mark.skipif(bool(set(GPU_PROVIDERS) & set(ort.get_available_providers())),
                    reason="checks the CPU-only build; with a GPU provider the worker checks at tf32 where TF32 is allowed")
@pytest.mark.req("RAD-104", "RAD-106")
def test_on_the_cpu_the_worker_checks_at_fp32_says_so_and_keeps_each_precision_apart(bench):
    admit(bench, abft=False)
    assert infer(bench, 1)[0]["abft_precision"] is None  # no checksum pass: no precision claimed
    admit(bench, abft=True)
    receipt = infer(bench, 2)[0]
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    made = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    # Only the CPU provider is in this onnxruntime build: float32 arithmetic, float32 tolerance.
    assert (receipt["abft_precision"], receipt["provider"], receipt["check_status"]) == ("fp32", CPU, "passed")
    assert model.abft_precision == made.precision == describe(onnx.load_from_string(made.data))["precision"] == "fp32"
    # A GPU provider the build lacks changes nothing: onnxruntime would run the model on the CPU.
    bench.worker.providers = (CUDA, CPU)
    again = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert again is not model and again.abft_precision == "fp32"
    assert bench.worker._checked_models[MODEL_NAME].data is made.data  # noqa: SLF001 - the same precision: reused
    # The kept model is kept per precision: one made for tf32 is never reused for fp32, nor the other way.
    sha = sha256_hex(SHIPPED)
    tf32 = bench.worker._checked_bytes(MODEL_NAME, SHIPPED, sha, "tf32")  # noqa: SLF001
    assert tf32 != made.data and describe(onnx.load_from_string(tf32))["precision"] == "tf32"
    fp32 = bench.worker._checked_bytes(MODEL_NAME, SHIPPED, sha, "fp32")  # noqa: SLF001
    assert fp32 == made.data and describe(onnx.load_from_string(fp32))["precision"] == "fp32"


@pytest.mark.req("RAD-106")
def test_the_pass_reads_for_the_layout_the_session_runs_in_and_is_made_again_when_it_changes(bench):
    """Owned weights run at ``extended``: plain sums. Without them the session runs at ``all``, where
    an x86 onnxruntime keeps Conv outputs blocked (asked of onnxruntime itself): the pass then sums
    h1 with a GlobalAveragePool and a1's runs with an AveragePool, which read that layout. Either way
    the model passes clean tiles."""
    admit(bench, abft=True, scrub=True)
    owned = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    made = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    assert made.nchwc == 0 and describe(onnx.load_from_string(made.data))["nchwc"] is False
    # h1's sums, a1's over runs of rows, h1's copy, pixel_logit's read for the copies
    assert describe(onnx.load_from_string(made.data))["layout_sums"] == 4
    assert run_all(owned)[1].all()
    admit(bench, abft=True, scrub=False)
    plain = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    remade = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    blocked = cpu_nchwc_block() > 0  # 16 channels, whole blocks where the layout is used (8 or 16)
    assert remade.nchwc == cpu_nchwc_block() and describe(onnx.load_from_string(remade.data))["nchwc"] is blocked
    assert describe(onnx.load_from_string(remade.data))["nchwc_block"] == cpu_nchwc_block()
    readers = [n.op_type for n in onnx.load_from_string(remade.data).graph.node  # h1 as the check reads it, its copy
               if f"{abft.PREFIX}copy/h1" in n.input and n.name.startswith(abft.PREFIX)]
    assert readers == ["GlobalAveragePool" if blocked else "ReduceSum"]
    pooled = [n.op_type for n in onnx.load_from_string(remade.data).graph.node
              if n.name == f"{abft.PREFIX}2/y_sums_pool"]
    assert pooled == (["AveragePool"] if blocked else [])
    assert (remade.data != made.data) is blocked
    assert run_all(plain)[1].all()
    admit(bench, abft=True, scrub=True)  # back: the plain sums again
    bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert bench.worker._checked_models[MODEL_NAME].data == made.data  # noqa: SLF001


@pytest.mark.req("RAD-106", "RAD-112")
@pytest.mark.parametrize("abft_on, ranges_on, said", [(True, False, "MODEL_UNCHECKED"),
                                                      (False, True, "MODEL_RANGES_UNCHECKED")])
def test_a_weights_scrub_change_remakes_only_what_reads_for_the_layout(bench, abft_on, ranges_on, said):
    """A model the checksum pass refuses, or range checks alone, do not depend on the layout: turning
    owned weights off and on again runs neither pass again, and each refusal is said once (found in
    review: three times)."""
    bench.worker.store.install("mixer", "1", unprotectable(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    bench.data_set("tiles", np.random.default_rng(3).uniform(-1.0, 1.0, size=(12, 2)).astype(np.float32))
    for job_id, scrub in enumerate((True, False, True), start=1):
        admit(bench, abft=abft_on, scrub=scrub, ranges=ranges_on)
        infer(bench, job_id, model="mixer")
        assert bench.worker._checked_models["mixer"].nchwc is None  # noqa: SLF001
    assert len(bench.events(said)) == 1


@pytest.mark.req("RAD-106", "RAD-112")
def test_a_model_made_again_for_the_other_layout_learns_its_ranges_once_and_says_a_refusal_once(bench, monkeypatch):
    """With both passes on, a weights_scrub change makes the checksum pass's bytes again (they read
    for the layout) but reuses the ranges learned for the version, and a refusal is not said again
    (found in review: said on every change)."""
    learned = []
    learn = worker_module.range_pass.learn
    monkeypatch.setattr(worker_module.range_pass, "learn", lambda *a, **k: learned.append(1) or learn(*a, **k))
    bench.worker.store.install("copy", "1", SHIPPED, golden=True,  # no reference inputs: no ranges to learn
                               provenance=Provenance("test", False, "", time.time()))
    protections = []
    for job_id, scrub in enumerate((True, False, True, False), start=1):
        admit(bench, abft=True, scrub=scrub, ranges=True)
        protections.append((infer(bench, 2 * job_id - 1)[0]["protection"],
                            infer(bench, 2 * job_id, model="copy")[0]["protection"]))
    assert len(learned) == 1  # the shipped model's ranges, from its reference tiles
    assert [e.args["name"] for e in bench.events("MODEL_RANGES_UNCHECKED")] == ["copy"]
    assert protections == [("abft+ranges+scrubbed", "abft+scrubbed"), ("abft+ranges", "abft")] * 2
    assert bench.worker._checked_models["copy"].nchwc == cpu_nchwc_block()  # noqa: SLF001 - made for "all"


@pytest.mark.system  # a real ZeroMQ socket pair
@pytest.mark.req("RAD-106", "RAD-112")
@pytest.mark.parametrize("param, default", [("abft_checks", True), ("range_checks", False)])
def test_the_agent_sends_each_check_parameter_with_every_admission(tmp_path, param, default):
    assert DICTIONARY.parameter_defaults[param] is default
    for value in (True, False):
        admits, _ = admissions(tmp_path / f"{param}{value}", dict(DICTIONARY.parameter_defaults, **{param: value}))
        assert admits and all(getattr(a, param) is value for a in admits)


# --- a model the pass refuses --------------------------------------------------------------------


def unprotectable() -> bytes:
    """probabilities = softmax(x . w), w an initializer a graph input may override: not a constant,
    so the checksum pass refuses the MatMul by name; onnxruntime runs it on the initializer."""
    w = numpy_helper.from_array(np.array([[2.0, -1.0], [0.5, 3.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mix"),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "unprotectable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.req("RAD-106")
def test_a_model_the_pass_refuses_runs_unchecked_and_says_so_once(bench):
    bench.worker.store.install("mixer", "1", unprotectable(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    x = np.random.default_rng(3).uniform(-1.0, 1.0, size=(12, 2)).astype(np.float32)
    bench.data_set("tiles", x)
    admit(bench, abft=True)
    receipt, check, classes, _ = infer(bench, 1, model="mixer")
    np.testing.assert_array_equal(classes, (x @ np.array([[2.0, -1.0], [0.5, 3.0]], np.float32)).argmax(axis=1))
    assert (receipt["protection"], receipt["check_status"], check) == ("scrubbed", "unchecked", [UNCHECKED] * 12)
    (said,) = unchecked_said(bench)
    assert said.args["name"] == "mixer" and said.args["reason"].startswith("the checksum pass refused it")
    assert "MatMul node 'mix'" in said.args["reason"]
    admit(bench, abft=True, threads=2)  # a new session on the same version: nothing said again
    infer(bench, 2, model="mixer")
    assert len(unchecked_said(bench)) == 1


def always_ok() -> bytes:
    """A model whose output named abft_ok says true whatever happens: not the checksum pass's."""
    w = numpy_helper.from_array(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["logits"], name="fc"),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ReduceMax", ["probabilities"], ["top"], axes=[1], keepdims=0),
         helper.make_node("GreaterOrEqual", ["top", "zero"], [CHECK_OUTPUT])],
        "always_ok",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info(CHECK_OUTPUT, TensorProto.BOOL, ["N"])],
        initializer=[w, numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.req("RAD-106")
def test_a_flag_the_pass_of_this_build_did_not_make_is_never_read_as_a_check(bench):
    bench.worker.store.install("always", "1", always_ok(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    bench.data_set("tiles", np.random.default_rng(4).uniform(-1.0, 1.0, size=(12, 2)).astype(np.float32))
    admit(bench, abft=True)
    receipt, check, _, _ = infer(bench, 1, model="always")
    assert (receipt["protection"], receipt["check_status"], check) == ("scrubbed", "unchecked", [UNCHECKED] * 12)
    (said,) = unchecked_said(bench)
    assert said.args["name"] == "always" and "did not make" in said.args["reason"]


@pytest.mark.req("RAD-106")
@pytest.mark.parametrize("how", ["strict=False", "rtol"])
def test_a_model_protected_to_check_less_than_the_pass_does_is_not_read_as_checked(bench, how):
    """Found in review: a model protected on the ground with ``strict=False`` (a node left unchecked)
    or with a tolerance of its own was trusted on its pass version alone, and a fault in the node it
    skipped was reported passed."""
    rng = np.random.default_rng(9)
    second = "w2i" if how == "strict=False" else "w2"  # through an Identity: not a constant, so not checkable
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Identity", ["w2"], ["w2i"]), helper.make_node("MatMul", ["r", second], ["l"], name="fc2"),
             helper.make_node("Softmax", ["l"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "w1"),
                               numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    protected = abft.protect(model, strict=False) if how == "strict=False" else abft.protect(model, rtol=0.5)
    bench.worker.store.install("ground", "1", protected.SerializeToString(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    bench.data_set("tiles", rng.uniform(-1.0, 1.0, size=(12, 2)).astype(np.float32))
    admit(bench, abft=True)
    receipt, check, _, _ = infer(bench, 1, model="ground")
    assert "abft" not in receipt["protection"] and (receipt["check_status"], check) == ("unchecked", [UNCHECKED] * 12)
    (said,) = unchecked_said(bench)
    assert ("leave 1 node(s) unchecked (fc2)" if how == "strict=False" else "a tolerance other than the pass's own") \
        in said.args["reason"], said.args


@pytest.mark.req("RAD-106")
@pytest.mark.parametrize("version,trusted", [(abft.PASS_VERSION, True), (6, True), (5, True), (4, True), (3, False)])
def test_a_model_protected_on_the_ground_is_read_as_checked_where_this_build_vouches_for_its_pass(
        bench, version, trusted):
    """Version 5 of the pass reads a large Conv's P by windows; version 4 read it from G or checked it
    per pixel, never unsoundly: a model protected on the ground with it is still trusted, as is one of
    version 5 or 6 (each check on its node's own input; no compare of the outputs). An older one is
    not, and says so."""
    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["l"], name="fc2"),
             helper.make_node("Softmax", ["l"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "w1"),
                               numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "w2")])
    protected = abft.protect(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    entry = next(e for e in protected.metadata_props if e.key == abft.META_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "version": version}, sort_keys=True)
    bench.worker.store.install("ground", "1", protected.SerializeToString(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    bench.data_set("tiles", rng.uniform(-1.0, 1.0, size=(12, 2)).astype(np.float32))
    admit(bench, abft=True)
    receipt, check, _, _ = infer(bench, 1, model="ground")
    if trusted:
        assert receipt["protection"].startswith("abft")
        assert (receipt["check_status"], check) == ("passed", [PASSED] * 12)
        assert unchecked_said(bench) == []
    else:
        assert "abft" not in receipt["protection"]
        assert (receipt["check_status"], check) == ("unchecked", [UNCHECKED] * 12)
        (said,) = unchecked_said(bench)
        vouched = f"did not make it, nor one it vouches for (versions 4, 5, 6, {abft.PASS_VERSION})"
        assert f"(version {abft.PASS_VERSION}) {vouched}" in said.args["reason"], said.args


@pytest.mark.req("RAD-106")
@pytest.mark.parametrize("made_for, read", [("fp32", False), ("tf32", True)])
def test_a_model_protected_on_the_ground_is_read_as_checked_only_for_arithmetic_no_coarser_than_its_own(
        bench, monkeypatch, made_for, read):
    """Found in review: a model protected on the ground for fp32 was read as checked on a session the worker
    checks for tf32 (a GPU provider with ``[compute] gpu_tf32``), where its tolerance is too tight for every
    tile. This CPU-only build never runs in tf32: the worker's choice of precision is made to say tf32, as it
    says on such a board; the model, its checks and the session are real."""
    monkeypatch.setattr(worker_module, "abft_precision", lambda providers=None, *a, **k: "tf32")
    bench.worker.store.install("ground", "1", abft.protect_bytes(SHIPPED, precision=made_for), golden=True,
                               provenance=Provenance("test", False, "", time.time()))
    admit(bench, abft=True)
    receipt, check, _, _ = infer(bench, 1, model="ground")
    if read:
        assert (receipt["protection"], receipt["abft_precision"]) == ("abft+scrubbed", "tf32")
        assert receipt["check_status"] == "passed" and unchecked_said(bench) == []
    else:
        assert (receipt["protection"], receipt["abft_precision"], receipt["check_status"]) == (
            "scrubbed", None, "unchecked") and set(check) == {UNCHECKED}
        (said,) = unchecked_said(bench)
        assert "protected for fp32 arithmetic, and this session may run in tf32" in said.args["reason"]


@pytest.mark.req("RAD-104")
def test_a_model_installed_while_a_job_runs_starts_the_job_again_so_its_product_comes_from_one_model(
        tmp_path, monkeypatch):
    """A data-set job spans slices; a version installed between two of them would have made a
    product half of each, its receipt naming the last. The job starts again on the new one."""
    import flight.compute.worker as worker_module
    from flight.link.definitions import JobKind
    from tests.model_helpers import tiny

    # Batches of one tile, half a millisecond a slice: at most about a hundred tiles a slice (a
    # session.run costs microseconds), so the job of 2000 spans many whatever the machine's speed
    # (200 tiles in batches of 4 all ran in one slice on a fast one).
    monkeypatch.setattr(worker_module, "SLICE_S", 0.0005)
    v1, v2 = tiny(1.0), tiny(2.0)
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    b.worker.batch = 1
    try:
        b.staging.mkdir(parents=True, exist_ok=True)
        (b.staging / "tiny.onnx").write_bytes(v1)
        assert b.install("1", sha256_hex(v1)).ok
        x = np.random.default_rng(0).uniform(0.1, 1.0, (2000, 2)).astype(np.float32)
        b.data_set("set", x)
        assert b.request(lambda r: cp.StartJob(r, cp.JobSpec(1, JobKind.INFERENCE, "set", model="tiny"))).ok
        job = b.worker.jobs[1]
        for _ in range(100):
            b.worker.work_slice()
            if job.progress >= 20:
                break
        assert 0 < job.progress < len(x)
        (b.staging / "tiny.onnx").write_bytes(v2)
        assert b.install("2", sha256_hex(v2)).ok
        for _ in range(10 * len(x)):  # a tile a slice at the least
            if job.state.value != "RUNNING":
                break
            b.worker.work_slice()
        assert job.state.value == "DONE", job.detail
        product = json.loads(next((b.root / "products").glob("*.json")).read_text())
        with np.load(next((b.root / "products").glob("*.npz"))) as z:
            conf = z["confidence"]
        assert np.allclose(conf, 2.0 * np.abs(x).max(axis=1), rtol=1e-6)  # every tile by version 2
        assert product["model_version"] == "2" and product["receipt"]["model_sha256"] == sha256_hex(v2)
        receipt = product["receipt"]
        assert receipt["tiles_checked"] + receipt["tiles_unchecked"] == len(x)  # counted once, not once a version
    finally:
        b.close()
