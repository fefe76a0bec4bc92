"""Range checks on activations (flight/compute/ranges.py) and the worker's ``range_checks``.

Real onnxruntime sessions on the shipped cloud-screening model throughout: ranges learned from its
reference inputs (the first held-out tiles, as the worker learns them), judged on held-out tiles
not used for learning; faults put into an activation through a ``Where`` hook
(flight/compute/inject.py: with_hooks), or into the weights the worker owns.
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from flight.compute import abft, ranges
from flight.compute import protocol as cp
from flight.compute import worker as worker_module
from flight.compute.checks import CHECK_OUTPUT, PASSED, RANGE_OUTPUT, UNCHECKED, check_flags, protection_of
from flight.compute.inject import flip_bit, with_hooks
from flight.compute.package import REFERENCE_TILES, sha256_hex, shipped_reference_inputs
from flight.compute.providers import CPU
from flight.compute.store import Provenance
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_held_out
from flight.link.definitions import DICTIONARY, Admission, FluxClass, Protection
from tests.model_helpers import WorkerBench, tiny

SHIPPED = (MODELS_DIR / MODEL_FILE).read_bytes()
HELD = load_held_out().tiles.astype(np.float32)
REFERENCE = shipped_reference_inputs()  # HELD[:REFERENCE_TILES]: what the worker learns from
UNSEEN = HELD[REFERENCE_TILES:]  # held-out tiles no range was learned from
LEARNED = ranges.learn(SHIPPED, REFERENCE)
OWN_OUTPUTS = ["logits", "probabilities", "cloud_fraction"]
QUIET = cp.Radiation(FluxClass.QUIET, False, 10.0, 5700.0)
BATCH = 8


def session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | bytes, tiles: np.ndarray, names: list[str],
        **feed: np.ndarray) -> dict[str, np.ndarray]:
    s = session(model)
    return dict(zip(names, s.run(names, {"tiles": tiles, **feed})))


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return out


# --- learning ------------------------------------------------------------------------------------


@pytest.mark.req("RAD-112")
def test_learned_ranges_are_the_unchecked_tensors_and_contain_every_reference_activation():
    # Every tensor the checksum pass does not check, and the outputs; never a Conv output, nor the input.
    assert list(LEARNED) == ["centred", "xn", "h1", "h2", "pixel_p", "fraction_4d", "cloud_fraction", "hmean_4d",
                             "hmean", "z", "logits", "probabilities"]
    values = run(with_outputs(onnx.load_from_string(SHIPPED), list(LEARNED)), REFERENCE, list(LEARNED))
    for name, (lo, hi) in LEARNED.items():
        v = values[name]
        seen_lo, seen_hi = float(v.min()), float(v.max())
        assert lo <= seen_lo and seen_hi <= hi, name
        # widened by the margin times the width on each side (float32-rounded outwards)
        pad = ranges.DEFAULT_MARGIN * (seen_hi - seen_lo)
        assert lo == pytest.approx(seen_lo - pad, rel=1e-6, abs=1e-6) and hi == pytest.approx(seen_hi + pad, rel=1e-6)
    assert ranges.learn(SHIPPED, REFERENCE) == LEARNED  # deterministic
    narrow = ranges.learn(SHIPPED, REFERENCE, margin=0.0)
    assert narrow["h1"] == (0.0, pytest.approx(float(values["h1"].max())))
    with pytest.raises(ValueError, match="no reference inputs"):
        ranges.learn(SHIPPED, REFERENCE[:0])


def test_a_tensor_constant_over_the_reference_data_gets_a_small_width_of_its_own():
    lo, hi = ranges._widened(2.0, 2.0, ranges.DEFAULT_MARGIN)  # noqa: SLF001
    assert lo < 2.0 < hi and hi - 2.0 == pytest.approx(2.0 * ranges.FLAT_WIDENING, rel=0.2)  # a float32 step
    lo, hi = ranges._widened(0.0, 0.0, ranges.DEFAULT_MARGIN)  # noqa: SLF001
    assert lo == pytest.approx(-ranges.FLAT_WIDENING) and hi == pytest.approx(ranges.FLAT_WIDENING)


@pytest.mark.req("RAD-112")
def test_no_flag_on_held_out_tiles_the_ranges_were_not_learned_from():
    both = ranges.protect(abft.protect(onnx.load_from_string(SHIPPED)), LEARNED, margin=ranges.DEFAULT_MARGIN)
    got = run(both, UNSEEN, [CHECK_OUTPUT, RANGE_OUTPUT])
    assert len(UNSEEN) == 784 and got[RANGE_OUTPUT].all() and got[CHECK_OUTPUT].all()
    assert got[RANGE_OUTPUT].dtype == bool and got[RANGE_OUTPUT].shape == (len(UNSEEN),)


# --- what the flag catches ----------------------------------------------------------------------


@pytest.mark.req("RAD-112")
@pytest.mark.parametrize("site", ["xn", "h1", "h2", "pixel_p", "hmean", "z", "probabilities"])
def test_a_high_exponent_bit_flipped_in_an_unchecked_activation_is_flagged_on_that_sample_only(site):
    both = ranges.protect(abft.protect(onnx.load_from_string(SHIPPED)), LEARNED)
    hooked = with_hooks(both, (site,))
    tiles = UNSEEN[:8]
    off = {site + "/mask": np.zeros(1, bool), site + "/value": np.zeros(1, np.float32)}
    names = OWN_OUTPUTS + [CHECK_OUTPUT, RANGE_OUTPUT, site]
    clean = run(hooked, tiles, names, **off)
    assert clean[RANGE_OUTPUT].all()
    # In sample 5, an element in (1e-30, 1): its exponent's top bit set multiplies it by 2**128.
    value = clean[site]
    candidates = np.flatnonzero((np.abs(value[5]) > 1e-30) & (np.abs(value[5]) < 1.0))
    index = (5, *np.unravel_index(int(candidates[len(candidates) // 2]), value.shape[1:]))
    mask = np.zeros(value.shape, bool)
    mask[index] = True
    bad = flip_bit(value[index], 30)
    assert np.isfinite(bad) and abs(bad) > 1e30
    faulty = run(hooked, tiles, names, **{site + "/mask": mask, site + "/value": np.array([bad], np.float32)})
    assert faulty[RANGE_OUTPUT].tolist() == [True] * 5 + [False] + [True] * 2, site
    for name in OWN_OUTPUTS:  # the other samples' results are untouched
        np.testing.assert_array_equal(np.delete(faulty[name], 5, axis=0), np.delete(clean[name], 5, axis=0))


@pytest.mark.parametrize("recompute", [False, True])
def test_the_checksum_pass_alone_misses_such_a_flip_in_the_heads_input_unless_its_checks_recompute_it(recompute):
    # The gap range checks fill where every check after z computes on the flipped z consistently; with
    # its input recomputed (abft.protect's default), the Gemm's check predicts from a copy of z.
    protected = abft.protect(onnx.load_from_string(SHIPPED), recompute_inputs=recompute)
    hooked = with_hooks(ranges.protect(protected, LEARNED), ("z",))
    tiles = UNSEEN[:4]
    clean = run(hooked, tiles, ["probabilities", "z"],
                **{"z/mask": np.zeros(1, bool), "z/value": np.zeros(1, np.float32)})
    mask = np.zeros(clean["z"].shape, bool)
    mask[2, 0] = True  # the cloud fraction, in (0, 1) on these tiles
    assert 0.0 < clean["z"][2, 0] < 1.0
    faulty = run(hooked, tiles, ["probabilities", CHECK_OUTPUT, RANGE_OUTPUT],
                 **{"z/mask": mask, "z/value": np.array([flip_bit(clean["z"][2, 0], 30)], np.float32)})
    assert not np.allclose(faulty["probabilities"][2], clean["probabilities"][2])  # a corrupt result
    assert faulty[CHECK_OUTPUT].tolist() == ([True, True, False, True] if recompute else [True] * 4)
    assert faulty[RANGE_OUTPUT].tolist() == [True, True, False, True]  # the range says not


@pytest.mark.req("RAD-112")
def test_nan_or_infinity_in_the_input_is_flagged_on_that_sample():
    for model in (ranges.protect(onnx.load_from_string(SHIPPED), LEARNED),
                  ranges.protect(abft.protect(onnx.load_from_string(SHIPPED)), LEARNED)):
        tiles = UNSEEN[:6].copy()
        tiles[1, 2, 7, 7] = np.nan
        tiles[4, 0, 0, 0] = np.inf
        got = run(model, tiles, [RANGE_OUTPUT])[RANGE_OUTPUT]
        assert got.tolist() == [True, False, True, True, False, True]


# --- the protected model ------------------------------------------------------------------------


@pytest.mark.req("RAD-113")
def test_protect_adds_one_flag_changes_nothing_of_the_models_own_and_says_what_it_enforces():
    bare = onnx.load_from_string(SHIPPED)
    protected = ranges.protect(bare, LEARNED, margin=ranges.DEFAULT_MARGIN)
    assert [o.name for o in protected.graph.output] == OWN_OUTPUTS + [RANGE_OUTPUT]
    assert list(protected.graph.node)[:len(bare.graph.node)] == list(bare.graph.node)  # its own nodes unchanged
    added = [n for n in protected.graph.node[len(bare.graph.node):]]
    assert all(n.name.startswith(ranges.PREFIX) for n in added)
    assert {o for n in added for o in n.output if not o.startswith(ranges.PREFIX)} == {RANGE_OUTPUT}
    assert {n.op_type for n in added} <= {"GreaterOrEqual", "LessOrEqual", "And", "Cast", "ReduceMin", "Identity"}
    assert all(t.name.startswith(ranges.PREFIX) for t in protected.graph.initializer[len(bare.graph.initializer):])
    # No float tensor added: the HIL's activation hooks (which follow float tensors) never land in a check.
    inferred = onnx.shape_inference.infer_shapes(protected)
    added_types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info
                   if v.name.startswith(ranges.PREFIX)}
    assert added_types and TensorProto.FLOAT not in added_types.values()
    plain, checked = run(bare, UNSEEN, OWN_OUTPUTS), run(protected, UNSEEN, OWN_OUTPUTS)
    for name in OWN_OUTPUTS:
        np.testing.assert_array_equal(checked[name], plain[name], err_msg=name)
    record = ranges.describe(protected)
    assert (record["version"], record["margin"], record["output"]) == (ranges.PASS_VERSION, 1.0, RANGE_OUTPUT)
    assert {k: tuple(v) for k, v in record["ranges"].items()} == LEARNED
    assert ranges.is_protected(protected) and not ranges.is_protected(bare)
    with pytest.raises(ValueError, match="not range-protected"):
        ranges.describe(bare)
    assert ranges.protect_bytes(SHIPPED, LEARNED) == ranges.protect_bytes(SHIPPED, LEARNED)  # stable SHA-256


@pytest.mark.req("RAD-113")
def test_protect_refuses_a_range_protected_model_and_what_it_cannot_range():
    bare = onnx.load_from_string(SHIPPED)
    protected = ranges.protect(bare, LEARNED)
    with pytest.raises(ValueError, match="already range-protected"):
        ranges.protect(protected, LEARNED)
    with pytest.raises(ValueError, match="no node of the model makes 'nothing'"):
        ranges.protect(bare, {"nothing": (0.0, 1.0)})
    with pytest.raises(ValueError, match="no node of the model makes 'band_mean'"):
        ranges.protect(bare, {"band_mean": (0.0, 1.0)})  # an initializer
    copied = onnx.ModelProto()
    copied.CopyFrom(bare)
    copied.graph.node.append(helper.make_node("Identity", ["band_mean"], ["mean_copy"], name="mean_copy"))
    with pytest.raises(ValueError, match="cannot be ranged per sample"):
        ranges.protect(copied, {"mean_copy": (0.0, 1.0)})  # [4, 1, 1]: no batch axis
    assert "mean_copy" not in ranges.candidates(copied)
    with pytest.raises(ValueError, match="lo <= hi"):
        ranges.protect(bare, {"h1": (1.0, 0.0)})
    with pytest.raises(ValueError, match="lo <= hi"):
        ranges.protect(bare, {"h1": (0.0, float("nan"))})


@pytest.mark.req("RAD-112", "RAD-113")
def test_range_checks_compose_with_the_checksum_pass_in_either_order():
    bare = onnx.load_from_string(SHIPPED)
    after = ranges.protect(abft.protect(bare), LEARNED)  # as the worker makes it
    before = abft.protect(ranges.protect(bare, LEARNED))
    for model in (after, before):
        assert [o.name for o in model.graph.output] == OWN_OUTPUTS + (
            [CHECK_OUTPUT, RANGE_OUTPUT] if model is after else [RANGE_OUTPUT, CHECK_OUTPUT])
        assert abft.is_protected(model) and ranges.is_protected(model)
        assert abft.describe(model)["version"] == abft.PASS_VERSION and ranges.describe(model)["ranges"]
        got = run(model, UNSEEN[:64], [CHECK_OUTPUT, RANGE_OUTPUT])
        assert got[CHECK_OUTPUT].all() and got[RANGE_OUTPUT].all()
    # Learning on a checked model ranges the model's own tensors only, never the pass's.
    assert ranges.learn(abft.protect_bytes(SHIPPED), REFERENCE) == LEARNED


# --- the worker -----------------------------------------------------------------------------------


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    b.worker.install_shipped_models()
    b.data_set("tiles", UNSEEN[:24])
    yield b
    b.close()


def admit(bench, abft_on: bool = True, ranges_on: bool = False, scrub: bool = True, threads: int = 1) -> None:
    bench.worker._handle(cp.Admit(Admission.ALL, threads, BATCH, 1.0, None, "test", radiation=QUIET,  # noqa: SLF001
                                  double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=scrub,
                                  abft_checks=abft_on, range_checks=ranges_on))


def infer(bench, job_id: int, model: str = MODEL_NAME, name: str = "tiles"):
    job = bench.infer(job_id, name, model=model)
    assert job.state.value == "DONE", job.detail
    summary = json.loads((bench.root / "products" / f"job{job_id:05d}-{name}.json").read_text())
    with np.load(bench.root / "products" / f"job{job_id:05d}-{name}.npz", allow_pickle=False) as npz:
        assert summary["receipt"] == json.loads(str(npz["receipt"]))
        return summary["receipt"], npz["check"].tolist(), npz["classes"], npz["confidence"]


def test_the_parameter_is_off_by_default_next_to_abft_checks():
    assert DICTIONARY.parameter_defaults["range_checks"] is False
    assert cp.Admit(Admission.ALL, 1, 1, 1.0, None, "", cp.NO_RADIATION, 0.0, False, True).range_checks is False
    assert protection_of(True, True, True) is Protection.ABFT_RANGES_SCRUBBED
    # A tile passes where every flag the model has is true, and the run says which failed; a flag that
    # cannot be read has not passed.
    ok, failed = check_flags(["abft_ok", "range_ok"], [np.array([1, 1, 0]), np.array([True, False, True])], 3)
    assert ok.tolist() == [True, False, False] and failed == "checksum+range"
    ok, failed = check_flags(["abft_ok", "range_ok"], [np.ones(3, bool), np.ones(2, bool)], 3)
    assert ok.tolist() == [False] * 3 and failed == "range"
    assert check_flags(["abft_ok"], [np.ones(3, bool)], 3)[1] == ""
    # Found in review: a NaN flag read as passed, and a flag the run did not give was dropped.
    assert check_flags(["abft_ok"], [np.array([np.nan, 1.0, 2.0], np.float32)], 3)[0].tolist() == [False, True, False]
    ok, failed = check_flags(["abft_ok", "range_ok"], [np.ones(3, bool)], 3)
    assert ok.tolist() == [False] * 3 and failed == "range"
    assert [protection_of(s, a, r).value for a in (False, True) for r in (False, True) for s in (False, True)] == [
        "none", "scrubbed", "ranges", "ranges+scrubbed", "abft", "abft+scrubbed", "abft+ranges", "abft+ranges+scrubbed"]


@pytest.mark.req("RAD-104", "RAD-112")
def test_with_range_checks_on_the_receipt_says_ranges_and_the_results_are_the_models_own(bench):
    admit(bench)
    plain, _, plain_classes, plain_conf = infer(bench, 1)
    assert plain["protection"] == "abft+scrubbed" and plain["range_failures"] == 0
    admit(bench, ranges_on=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert model.outputs == ("probabilities", CHECK_OUTPUT, RANGE_OUTPUT) and model.range_output == RANGE_OUTPUT
    receipt, check, classes, conf = infer(bench, 2)
    np.testing.assert_array_equal(classes, plain_classes)
    np.testing.assert_array_equal(conf, plain_conf)
    assert (receipt["protection"], receipt["provider"], receipt["check_status"], receipt["abft_precision"]) == (
        "abft+ranges+scrubbed", CPU, "passed", "fp32")
    assert check == [PASSED] * 24 and receipt["model_sha256"] == sha256_hex(SHIPPED)
    assert bench.worker.status().model_protection == "abft+ranges+scrubbed"
    # The ranges are those learned from the reference inputs the store keeps with the version.
    made = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    assert (made.abft, made.ranges) == (True, True)
    protected = onnx.load_from_string(made.data)
    assert {k: tuple(v) for k, v in ranges.describe(protected)["ranges"].items()} == LEARNED
    assert abft.describe(protected)["precision"] == "fp32"
    # The range checks' uint8 and bool intermediates hold no weight: only their bounds join the owned ones.
    assert {n for n in model.scrubber.names if n.startswith(ranges.PREFIX)} == {
        f"{ranges.PREFIX}{i}/{b}" for i in range(len(LEARNED)) for b in ("lo", "hi")}
    # Without the checksum pass: the ranges alone.
    admit(bench, abft_on=False, ranges_on=True)
    assert infer(bench, 3)[0]["protection"] == "ranges+scrubbed"
    assert bench.worker._session(MODEL_NAME).outputs == ("probabilities", RANGE_OUTPUT)  # noqa: SLF001
    # ... over the Conv, Gemm and MatMul outputs too, the pass not running (found in review: left to it)
    alone = ranges.describe(onnx.load_from_string(bench.worker._checked_models[MODEL_NAME].data))["ranges"]  # noqa: SLF001
    assert set(alone) > set(LEARNED), sorted(alone)
    admit(bench, abft_on=False, ranges_on=True, scrub=False)
    assert infer(bench, 4)[0]["protection"] == "ranges"
    assert bench.events("MODEL_UNCHECKED") == []


@pytest.mark.req("RAD-112")
def test_with_range_checks_off_nothing_changes_and_the_parameter_reopens_the_session(bench):
    admit(bench)
    checked = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    made = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    assert checked.outputs == ("probabilities", CHECK_OUTPUT) and checked.range_output is None
    assert made.data == abft.protect_bytes(SHIPPED, precision="fp32")  # the checksum pass's bytes, nothing more
    assert not any(n.startswith(ranges.PREFIX) for n in checked.scrubber.names)
    admit(bench, ranges_on=True)
    assert bench.worker._sessions == {}  # noqa: SLF001 - dropped at once
    ranged = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    kept = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    assert ranged.range_output == RANGE_OUTPUT and kept.ranges and kept.data != made.data
    admit(bench, ranges_on=True)  # the same again: nothing reopens
    assert bench.worker._session(MODEL_NAME) is ranged  # noqa: SLF001
    admit(bench, ranges_on=False)  # off again: the protected bytes are those of the parameter now
    again = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    assert again.outputs == ("probabilities", CHECK_OUTPUT) and again.protection is Protection.ABFT_SCRUBBED
    assert bench.worker._checked_models[MODEL_NAME].data == made.data  # noqa: SLF001
    receipt = infer(bench, 1)[0]
    assert (receipt["protection"], receipt["check_status"], receipt["range_failures"]) == ("abft+scrubbed", "passed", 0)
    admit(bench, abft_on=False)
    assert infer(bench, 2)[1] == [UNCHECKED] * 24


@pytest.mark.req("RAD-105")
def test_a_failed_range_flag_is_handled_as_a_failed_checksum_scrubbed_and_run_again(bench, monkeypatch):
    # The checksum pass as version 5 made it, each check reading its node's own input: a flip in the
    # input's normalisation is then the range checks' alone to see (abft.protect's recompute_inputs).
    monkeypatch.setattr(worker_module, "protect_bytes", functools.partial(abft.protect_bytes, recompute_inputs=False))
    admit(bench)
    _, _, want_classes, want_conf = infer(bench, 1)
    admit(bench, ranges_on=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    # band_std, the input normalisation's divisor: an unchecked operator's constant, owned and scrubbed.
    # Its first element's exponent bit 29 cleared: xn of that band 2**-64 times too large for every tile.
    std = model.scrubber.owned_bytes("band_std")
    assert std[3] & 0x20
    std[3] ^= np.uint8(0x20)
    _, abft_ok, range_ok = model.session.run(list(model.outputs), {model.input_name: UNSEEN[:BATCH]})
    assert abft_ok.all() and not range_ok.any()  # the checksum pass cannot see it, the ranges can
    receipt, check, classes, conf = infer(bench, 2)
    np.testing.assert_array_equal(classes, want_classes)  # rerun on the repaired constant
    np.testing.assert_array_equal(conf, want_conf)
    assert check == [PASSED] * 24 and receipt["check_status"] == "passed"
    assert (receipt["range_failures"], receipt["abft_failures"], receipt["reruns"], receipt["weights_repaired"]) == (
        1, 0, 1, 1)
    (failed,) = bench.events("RESULT_CHECK_FAILED")
    assert failed.args == {"job_id": 2, "check": "range", "tiles": BATCH, "outcome": "passed after a scrub and a rerun"}
    assert [e.args["tensor"] for e in bench.events("WEIGHTS_REPAIRED")] == ["band_std"]


@pytest.mark.req("RAD-106", "RAD-112")
def test_a_model_the_checksum_pass_refuses_is_said_once_per_version_however_range_checks_change(bench):
    """Found in audit: each change of ``range_checks`` made the version again, ran the checksum pass again
    and said MODEL_UNCHECKED again. Once per version."""
    bench.worker.store.install("tiny", "1", tiny(2.0), provenance=Provenance("test", False, "", time.time()))
    bench.data_set("pairs", np.random.default_rng(3).uniform(0.1, 1.0, (8, 2)))
    for job_id, ranges_on in enumerate((False, True, False, True), 1):
        admit(bench, ranges_on=ranges_on)
        infer(bench, job_id, model="tiny", name="pairs")
    assert [e.args["name"] for e in bench.events("MODEL_UNCHECKED")] == ["tiny"]


@pytest.mark.req("RAD-112")
def test_a_model_with_no_reference_inputs_runs_without_ranges_and_the_worker_says_why(bench):
    bench.worker.store.install("tiny", "1", tiny(2.0), provenance=Provenance("test", False, "", time.time()))
    bench.data_set("pairs", np.random.default_rng(3).uniform(0.1, 1.0, (8, 2)))
    admit(bench, ranges_on=True)
    receipt, check, _, _ = infer(bench, 1, model="tiny", name="pairs")
    assert receipt["protection"] == "scrubbed" and check == [UNCHECKED] * 8  # nothing for the checksum pass either
    assert bench.worker.range_notes["tiny"].startswith("no reference inputs kept with version 1")
    assert [e.args["name"] for e in bench.events("MODEL_UNCHECKED")] == ["tiny"]  # the checksum pass's word
    (said,) = bench.events("MODEL_RANGES_UNCHECKED")  # and the range checks' own
    assert said.args["name"] == "tiny" and said.args["reason"].startswith("no reference inputs kept with version 1")
    # The shipped model, with its reference set, gets them all the same.
    assert infer(bench, 2)[0]["protection"] == "abft+ranges+scrubbed" and MODEL_NAME not in bench.worker.range_notes


@pytest.mark.req("RAD-112")
def test_the_same_bytes_installed_again_with_reference_inputs_get_their_ranges(bench):
    """Ranges are learned per version: a version with no reference inputs runs without them; the
    very same bytes installed as the next version with a reference set get them."""
    from flight.compute.package import ReferenceSet, expected_outputs

    x = np.random.default_rng(3).uniform(0.1, 1.0, (8, 2)).astype(np.float32)
    bench.worker.store.install("tiny", "1", tiny(2.0), provenance=Provenance("test", False, "", time.time()))
    bench.data_set("pairs", x)
    admit(bench, abft_on=False, ranges_on=True)
    assert infer(bench, 1, model="tiny", name="pairs")[0]["protection"] == "scrubbed"
    bench.worker.store.install("tiny", "2", tiny(2.0), provenance=Provenance("test", False, "", time.time()),
                               reference=ReferenceSet(x, expected_outputs(tiny(2.0), x)).to_bytes())
    bench.worker._forget("tiny")  # noqa: SLF001 - as an install through the worker does
    receipt = infer(bench, 2, model="tiny", name="pairs")[0]
    assert receipt["protection"] == "ranges+scrubbed", bench.worker.range_notes


@pytest.mark.req("RAD-112")
def test_a_model_with_a_fixed_batch_above_one_is_not_ranged_and_says_why():
    """Found in review: with a fixed batch of 4, an axis of 4 was taken for the batch's, and a range
    failure could land on the wrong sample. Such a model is not ranged, and the reason says so."""
    from onnx import TensorProto, helper, numpy_helper

    def model(batch):
        graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
                                  [numpy_helper.from_array(np.ones((3, 2), np.float32), "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    x = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="fixed above 1"):
        ranges.learn(model(4).SerializeToString(), x[:4])
    assert set(ranges.learn(model("N").SerializeToString(), x)) == {"y"}  # h: the Gemm's, the checksum pass's to check
    # A batch fixed at 1 learns from its reference inputs one at a time (found in review: all at once, refused).
    assert ranges.learn(model(1).SerializeToString(), x) == ranges.learn(model("N").SerializeToString(), x)


@pytest.mark.req("RAD-112")
def test_ranges_are_not_learned_from_fewer_than_eight_distinct_reference_inputs():
    """Found in review: bounds from 1 tile flagged every clean held-out tile (784 of 784), from 2 tiles 69."""
    with pytest.raises(ValueError, match="1 distinct reference inputs, fewer than the 8"):
        ranges.learn(SHIPPED, np.repeat(REFERENCE[:1], 16, axis=0))
    with pytest.raises(ValueError, match="7 distinct"):
        ranges.learn(SHIPPED, REFERENCE[:7])
    assert ranges.learn(SHIPPED, REFERENCE[:8])


@pytest.mark.req("RAD-112")
def test_a_model_the_checksum_pass_refuses_has_its_gemm_output_ranged_and_a_flipped_logit_flagged():
    """Found in audit: a quantised model (int8 weights through DequantizeLinear) is refused whole by the
    checksum pass, yet its Gemm's output was left to that pass, unranged: a flipped logit before the
    Softmax changed a tile's class and range_ok stayed true. A model the pass checks keeps it unranged."""
    from onnx import numpy_helper

    rng = np.random.default_rng(7)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
             helper.make_node("Gemm", ["x", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(rng.integers(-100, 100, (6, 3)).astype(np.int8), "wq"),
                               numpy_helper.from_array(np.array(0.003, np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ValueError, match="not a constant"):
        abft.protect(model)
    learned = ranges.learn(model.SerializeToString(), rng.normal(size=(32, 6)).astype(np.float32))
    assert list(learned) == ["logits", "probabilities"]

    s = session(with_hooks(ranges.protect(model, learned), ("logits",)))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    off = {"logits/mask": np.zeros(1, bool), "logits/value": np.zeros(1, np.float32)}
    clean_p, clean_ok, logits = s.run(["probabilities", RANGE_OUTPUT, "logits"], {"x": x, **off})
    assert clean_ok.all()
    k = int(np.argmin(clean_p[1]))
    mask = np.zeros(logits.shape, bool)
    mask[1, k] = True
    bad = flip_bit(np.float32(abs(logits[1, k])), 30)  # its exponent's top bit: x 2**128
    faulty_p, faulty_ok = s.run(["probabilities", RANGE_OUTPUT],
                                {"x": x, "logits/mask": mask, "logits/value": np.array([bad], np.float32)})
    assert int(faulty_p[1].argmax()) == k != int(clean_p[1].argmax())  # a wrong class...
    assert faulty_ok.tolist() == [True, False, True, True]  # ...flagged, on that sample only

    # The same Gemm on a constant weight: the checksum pass checks it, its output stays the pass's.
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    del plain.graph.node[0]
    plain.graph.initializer[0].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(model.graph.initializer[0])
                                                                .astype(np.float32) * 0.003, "w"))
    assert ranges.candidates(plain) == ["probabilities"]
