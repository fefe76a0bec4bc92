"""Checked products where the checks meet what they cannot cure: a fault the scrub cannot settle
(its copies agree) that makes outputs non-finite, range checks from too little reference data or
brought in by the model itself, and the receipt's weakest guarantee."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from flight.compute import protocol as cp
from flight.compute import ranges
from flight.compute.package import ReferenceSet, expected_outputs
from flight.compute.store import Provenance
from flight.compute.checks import FAILED, PASSED, ProductChecks
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_held_out
from flight.compute.worker import NO_CLASS, REPAIR_EVENTS_PER_STEP, JobState
from flight.link.definitions import Admission, FluxClass, JobKind, Protection
from tests.model_helpers import WorkerBench

TILES = load_held_out().tiles.astype(np.float32)
SHIPPED = (MODELS_DIR / MODEL_FILE).read_bytes()
QUIET = cp.Radiation(FluxClass.QUIET, False, 10.0, 5700.0)


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    b.worker.install_shipped_models()
    yield b
    b.close()


def admit(bench, radiation=QUIET, abft_checks=True, range_checks=False, double=0.0, all_in_saa=False):
    bench.worker._handle(cp.Admit(Admission.ALL, 1, 8, 1.0, None, "test", radiation=radiation,  # noqa: SLF001
                                  double_run_fraction=double, double_run_all_in_saa=all_in_saa,
                                  scrub_weights=True, abft_checks=abft_checks, range_checks=range_checks))


def poison_everywhere(bench, name="w2", index=17):
    """One exponent flip in a weight, in the owned buffer and all three golden copies alike: no
    vote can repair it, and the weight becomes NaN."""
    sc = bench.worker._session(MODEL_NAME).scrubber  # noqa: SLF001
    for view in (sc.owned_bytes(name), *(sc.golden_bytes(k, name) for k in range(3))):
        view[4 * index + 3] ^= np.uint8(1 << 6)
    assert np.isnan(sc.owned[name].reshape(-1)[index])


@pytest.mark.req("RAD-105")
def test_tiles_whose_checks_failed_on_non_numbers_are_written_marked_and_the_job_finishes(bench):
    """RAD-105: the checks caught the fault; the product says so rather than vanishing with the job."""
    bench.data_set("tiles", TILES[:24])
    admit(bench)
    poison_everywhere(bench)
    job = bench.infer(1, "tiles", model=MODEL_NAME)
    assert job.state is JobState.DONE, job.detail
    # the receipt's gist goes down with JOB_DONE
    assert [e.args["summary"] for e in bench.events("JOB_DONE")] == [
        "24 tiles, product job00001-tiles.npz; checks failed (16 failed), abft+scrubbed"]
    product = bench.root / "products" / "job00001-tiles"
    npz = np.load(product.with_suffix(".npz"))
    failed = npz["check"] == FAILED
    assert failed[:16].all() and (npz["check"][16:] == PASSED).all()  # the rebuild from the store cured it
    assert (npz["classes"][failed] == NO_CLASS).all() and np.isnan(npz["confidence"][failed]).all()
    assert (npz["classes"][~failed] >= 0).all() and np.isfinite(npz["confidence"][~failed]).all()
    summary = json.loads(product.with_suffix(".json").read_text())  # strict JSON: no NaN in it
    assert summary["classes"][str(NO_CLASS)] == 16 and np.isfinite(summary["confidence_mean"])
    assert summary["receipt"]["check_status"] == "failed" and summary["receipt"]["tiles_failed"] == 16
    assert bench.worker.totals.count == 8  # the marked tiles are not counted as classified


@pytest.mark.req("RAD-105")
def test_a_continuous_job_writes_each_file_with_its_marked_tiles_and_keeps_going(bench):
    admit(bench)
    reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME,
                                                              continuous=True)))
    assert reply.ok, reply.reason
    poison_everywhere(bench)
    for i in range(3):
        np.save(bench.root / "incoming" / f"f{i}.npy", TILES[8 * i:8 * i + 8])
    for _ in range(10):
        bench.worker.work_slice()
    assert bench.worker.jobs[1].state is JobState.RUNNING
    assert not list((bench.root / "incoming").glob("*.npy"))
    checks = [np.load(bench.root / "products" / f"job00001-f{i}.npz")["check"] for i in range(3)]
    assert (checks[0] == FAILED).all() and (checks[2] == PASSED).all()
    # No JOB_DONE for a job that never ends: a product with failed tiles is said (found in audit), at most one
    # every 10 s, with how many more there were
    said = [e.args for e in bench.events("PRODUCT_MARKED")]
    marked = [i for i, c in enumerate(checks) if (c == FAILED).any()]
    first = marked[0]
    assert said == [{"job_id": 1, "name": f"job00001-f{first}.npz", "failed": int((checks[first] == FAILED).sum()),
                     "tiles": 8, "protection": "abft+scrubbed", "unsaid": 0}]
    assert bench.worker._marked_unsaid == len(marked) - 1  # noqa: SLF001 - said with the next one


def install(bench, name: str, data: bytes, reference: np.ndarray) -> None:
    bench.worker.store.install(name, "1", data, provenance=Provenance("op", False, "", time.time()),
                               reference=ReferenceSet(reference, expected_outputs(data, reference)).to_bytes())


def receipt(bench, job_id: int, name: str = "tiles") -> dict:
    return json.loads((bench.root / "products" / f"job{job_id:05d}-{name}.json").read_text())["receipt"]


@pytest.mark.req("RAD-112")
def test_a_version_with_too_few_reference_inputs_runs_without_ranges_and_says_why(bench):
    """Found in review: ranges learned from 2 tiles marked 20 of 256 clean tiles failed, with no word."""
    install(bench, "few", SHIPPED, TILES[:2])
    bench.data_set("tiles", TILES[16:48])
    admit(bench, range_checks=True)
    assert bench.infer(1, "tiles", model="few").state is JobState.DONE
    r = receipt(bench, 1)
    assert r["protection"] == "abft+scrubbed" and r["check_status"] == "passed"
    said = [e.args for e in bench.events("MODEL_RANGES_UNCHECKED")]
    assert said == [{"name": "few", "reason": said[0]["reason"]}] and "2 distinct reference inputs" in said[0]["reason"]


@pytest.mark.req("RAD-112")
def test_a_corrupt_reference_set_is_said_counted_and_named_as_the_reason_for_no_ranges(bench):
    """Found in audit: a reference set that failed its SHA-256 was taken for none kept, unsaid and uncounted."""
    for name in ("refd", "refe"):  # two, one after the other: each said (found in review: one limit hid the second)
        install(bench, name, SHIPPED, TILES[:16])
        ref = bench.root / "models" / f"{name}@1.ref.npz"
        raw = bytearray(ref.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        ref.write_bytes(bytes(raw))
    bench.data_set("tiles", TILES[16:40])
    admit(bench, range_checks=True)
    assert bench.infer(1, "tiles", model="refd").state is JobState.DONE
    assert bench.infer(2, "tiles", model="refe").state is JobState.DONE
    said = bench.events("COMPUTE_STATE_CORRUPT")
    assert [e.args["what"] for e in said] == ["refd version 1's reference set", "refe version 1's reference set"]
    assert all("SHA-256" in e.args["reason"] and "new version" in e.args["outcome"] for e in said)
    reasons = [e.args["reason"] for e in bench.events("MODEL_RANGES_UNCHECKED")]
    assert reasons and all("is corrupt" in why for why in reasons)
    assert "ranges" not in receipt(bench, 1)["protection"]
    admit(bench, range_checks=False)
    admit(bench, range_checks=True)  # the sessions made again: the same file is not said again
    assert bench.infer(3, "tiles", model="refd").state is JobState.DONE
    assert len(bench.events("COMPUTE_STATE_CORRUPT")) == 2 and bench.worker.status().compute_state_corrupt == 2


@pytest.mark.req("RAD-106")
def test_a_protected_model_changed_while_kept_is_said_counted_and_made_again(bench):
    """Found in audit: the kept bytes failing their SHA-256 were made again without a word."""
    bench.data_set("tiles", TILES[:16])
    admit(bench)
    assert bench.infer(1, "tiles", model=MODEL_NAME).state is JobState.DONE
    kept = bench.worker._checked_models[MODEL_NAME]  # noqa: SLF001
    raw = bytearray(kept.data)
    raw[len(raw) // 2] ^= 0x01
    bench.worker._checked_models[MODEL_NAME] = kept._replace(data=bytes(raw))  # noqa: SLF001
    bench.worker._handle(cp.Admit(Admission.ALL, 2, 8, 1.0, None, "test", radiation=QUIET,  # noqa: SLF001 - threads:
                                  double_run_fraction=0.0, double_run_all_in_saa=False,  # the session opens again
                                  scrub_weights=True, abft_checks=True, range_checks=False))
    assert bench.infer(2, "tiles", model=MODEL_NAME).state is JobState.DONE
    (said,) = bench.events("COMPUTE_STATE_CORRUPT")
    assert said.args["what"].startswith(f"the protected model of {MODEL_NAME}") and "made again" in said.args["outcome"]
    assert bench.worker._checked_models[MODEL_NAME].data == kept.data  # noqa: SLF001
    assert receipt(bench, 2)["check_status"] == "passed" and bench.worker.status().compute_state_corrupt == 1


@pytest.mark.req("RAD-112")
def test_range_checks_a_model_brings_are_never_read(bench):
    """Found in review: an uplinked model's own range_ok (bounds of +-3e38: they catch only NaN) was
    read as this worker's checks, named in every receipt, and read even with range_checks off."""
    wide = ranges.protect_bytes(SHIPPED, {n: (-3e38, 3e38) for n in ranges.candidates(onnx.load_from_string(SHIPPED))},
                                margin=ranges.DEFAULT_MARGIN)
    install(bench, "wide", wide, TILES[:16])
    bench.data_set("tiles", TILES[16:40])
    for job_id, (abft_checks, range_checks) in enumerate(((False, False), (False, True), (True, True)), 1):
        admit(bench, abft_checks=abft_checks, range_checks=range_checks)
        assert bench.infer(job_id, "tiles", model="wide").state is JobState.DONE
        r = receipt(bench, job_id)
        assert "ranges" not in r["protection"], (job_id, r["protection"])
        assert r["check_status"] == ("passed" if abft_checks else "unchecked")
    said = [e.args["reason"] for e in bench.events("MODEL_RANGES_UNCHECKED")]
    assert said and all("range_ok of its own" in why for why in said)


@pytest.mark.req("RAD-114")
@pytest.mark.parametrize("abft_checks", [True, False])
def test_the_range_checks_bounds_are_watched_and_a_flipped_one_is_repaired(bench, abft_checks):
    """Found in review: a flip that widens a bound raises no flag, and the bounds were not watched:
    that tensor's range check was off until the periodic scrub came round, with "ranges" in every receipt."""
    admit(bench, abft_checks=abft_checks, range_checks=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    bounds = {n for n in model.scrubber.names if n.startswith(ranges.PREFIX)}
    assert bounds and bounds <= model.scrubber.watched
    # covered by the checks; with ranges alone every weight is watched (ranges miss a weight's fault that
    # stays in range), checked before a slice whose tiles they passed is released
    assert ("band_std" in model.scrubber.watched) == (not abft_checks)
    hi = sorted(n for n in bounds if n.endswith("/hi"))[0]
    before = float(model.scrubber.owned[hi])
    model.scrubber.owned_bytes(hi)[3] ^= np.uint8(0x20)  # an exponent bit
    assert float(model.scrubber.owned[hi]) != before
    assert model.scrubber.check_watched(0.0) and float(model.scrubber.owned[hi]) == before


@pytest.mark.req("RAD-104")
def test_a_receipt_claims_the_weakest_environment_any_of_its_batches_ran_in():
    """Found in review: 49 batches under a 1500 s scrub period and one in the SAA at 30 s said 30 s,
    and batches run with the orbit unknown hid behind QUIET."""
    checks = ProductChecks("ab" * 32, Protection.ABFT_SCRUBBED, "CPUExecutionProvider", "fp32")
    checks.add_batch(64, None, batches=49, scrub_period_s=1500.0, flux=FluxClass.QUIET, lat_deg=10.0)
    checks.add_batch(64, None, scrub_period_s=30.0, flux=FluxClass.SAA, in_saa=True, lat_deg=-29.0)
    r = checks.receipt()
    assert (r["scrub_period_s"], r["flux_class"], r["in_saa"]) == (1500.0, "SAA", True)
    checks.add_batch(64, None, scrub_period_s=300.0, flux=FluxClass.UNKNOWN)
    checks.add_batch(64, None, scrub_period_s=1500.0, flux=FluxClass.QUIET)
    assert (checks.receipt()["flux_class"], checks.receipt()["in_saa"]) == ("UNKNOWN", True)
    assert ProductChecks("ab" * 32, Protection.NONE, "CPUExecutionProvider").receipt()["flux_class"] == "UNKNOWN"


@pytest.mark.req("RAD-105")
def test_with_the_orbit_unknown_every_batch_runs_twice_where_the_saa_asks_for_it(bench):
    """Found in review: with no TLE the board might be in the SAA (the scrub assumes so), but batches ran once."""
    bench.data_set("tiles", TILES[:24])
    admit(bench, radiation=cp.NO_RADIATION, abft_checks=False, all_in_saa=True)
    assert bench.infer(1, "tiles", model=MODEL_NAME).state is JobState.DONE
    r = receipt(bench, 1)
    assert (r["double_runs"], r["check_status"], r["flux_class"]) == (3, "passed", "UNKNOWN")
    admit(bench, radiation=QUIET, abft_checks=False, all_in_saa=True)
    assert bench.infer(2, "tiles", model=MODEL_NAME).state is JobState.DONE
    assert (receipt(bench, 2)["double_runs"], receipt(bench, 2)["check_status"]) == (0, "unchecked")


@pytest.mark.req("RAD-105")
def test_a_run_onnxruntime_refuses_after_an_upset_in_an_integer_weight_is_scrubbed_and_run_again(bench):
    """Found in review: a flip in one of the checks' shapes made onnxruntime refuse every batch, and every
    job failed for up to a scrub period, with no check failed."""
    bench.data_set("tiles", TILES[:24])
    admit(bench)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    shapes = sorted(n for n in model.scrubber.names if model.scrubber.owned[n].dtype == np.int64)
    assert shapes and set(shapes) <= model.scrubber.watched
    for name in shapes:  # each in turn: every one of them breaks the run
        model.scrubber.owned_bytes(name)[0] ^= np.uint8(0x80)
        with pytest.raises(Exception, match="ONNXRuntimeError"):
            model.session.run(list(model.outputs), {model.input_name: TILES[:8]})
        model.scrubber.owned_bytes(name)[0] ^= np.uint8(0x80)
    model.scrubber.owned_bytes(shapes[0])[0] ^= np.uint8(0x80)
    job = bench.infer(1, "tiles", model=MODEL_NAME)
    assert job.state is JobState.DONE, job.detail
    assert (receipt(bench, 1)["check_status"], receipt(bench, 1)["reruns"]) == ("passed", 1)
    said = [e.args for e in bench.events("RESULT_CHECK_FAILED")]
    assert [(e["check"], e["tiles"]) for e in said] == [("run refused", 8)] and "ran after a scrub" in said[0]["outcome"]
    assert "abft/" in said[0]["outcome"] and "onnxruntime_src" not in said[0]["outcome"]  # the node, not a source path
    assert bench.worker.status().checks_failed == 1


@pytest.mark.req("RAD-105")
def test_an_unchecked_run_refused_after_an_upset_in_an_integer_weight_is_scrubbed_and_run_again(bench):
    """The unchecked path (no checks, no double runs: its lean loop) recovers from a refused run as the
    checked one does: a Reshape's shape flipped, a scrub, the batch again; the product says unchecked."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["z"]),
         helper.make_node("Softmax", ["z"], ["probabilities"], axis=-1)], "reshaped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array([-1, 64], np.int64), "shape"),
         numpy_helper.from_array(np.random.default_rng(1).standard_normal((64, 2)).astype(np.float32), "w")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    bench.worker.store.install("reshaped", "1", data, golden=True, provenance=Provenance("t", False, "", time.time()))
    bench.data_set("tiles", np.random.default_rng(2).random((24, 4, 4, 4), np.float32))
    admit(bench, abft_checks=False)
    model = bench.worker._session("reshaped")  # noqa: SLF001
    assert not model.checked and "shape" in model.scrubber.watched
    model.scrubber.owned_bytes("shape")[8] ^= np.uint8(0x01)  # 64 becomes 65: the product of the dims is wrong
    with pytest.raises(Exception, match="ONNXRuntimeError"):
        model.session.run(list(model.outputs), {model.input_name: np.zeros((8, 4, 4, 4), np.float32)})
    lean = []
    real_lean = bench.worker._lean_batches  # noqa: SLF001
    bench.worker._lean_batches = lambda *a: lean.append(a[3]) or real_lean(*a)  # noqa: SLF001
    job = bench.infer(1, "tiles", model="reshaped")
    assert job.state is JobState.DONE, job.detail
    assert lean and lean[0] == 0  # its batches went through the lean loop, from the first tile
    r = receipt(bench, 1)
    assert (r["check_status"], r["reruns"], r["tiles_unchecked"], r["batches"]) == ("unchecked", 1, 24, 3)
    said = [e.args for e in bench.events("RESULT_CHECK_FAILED")]
    assert [(e["check"], e["tiles"]) for e in said] == [("run refused", 8)] and "ran after a scrub" in said[0]["outcome"]
    assert bench.worker.status().checks_failed == 1


@pytest.mark.req("RAD-102")
def test_repairs_past_the_events_cap_are_said_in_one_more_event(bench):
    """Found in review: a full scrub that repaired 20 chunks said 8 and the other 12 nowhere."""
    w = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB: 64 chunks
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["probabilities"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 1024])],
                              [numpy_helper.from_array(w, "w")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    bench.worker.store.install("big", "1", data, golden=True, provenance=Provenance("t", False, "", time.time()))
    admit(bench, abft_checks=False)
    session = bench.worker._session("big")  # noqa: SLF001
    owned = session.scrubber.owned_bytes("w")
    for k in range(20):
        owned[k * 65536 + 7] ^= 0x10  # one flip in each of 20 chunks
    bench.worker._scrub_now(session)  # noqa: SLF001
    said = [e.args for e in bench.events("WEIGHTS_REPAIRED")]
    assert bench.worker.scrub_repairs == 20 and len(said) == REPAIR_EVENTS_PER_STEP
    assert [e["chunk"] for e in said[:-1]] == list(range(REPAIR_EVENTS_PER_STEP - 1))
    assert said[-1]["chunk"] == -1 and said[-1]["source"] == "more" and said[-1]["tensor"] == "13 more chunks: w"
    assert said[-1]["bytes"] == 13


@pytest.mark.req("RAD-106")
def test_an_uplinked_models_own_checksum_flags_are_not_read_with_abft_checks_off(bench):
    """Found in review: a model protected on the ground was named abft in every receipt, and its flags
    read, with the parameter off."""
    from flight.compute import abft

    install(bench, "guarded", abft.protect_bytes(SHIPPED), TILES[:16])
    bench.data_set("tiles", TILES[16:24])
    admit(bench, abft_checks=False)
    assert bench.infer(1, "tiles", model="guarded").state is JobState.DONE
    assert (receipt(bench, 1)["protection"], receipt(bench, 1)["check_status"]) == ("scrubbed", "unchecked")
    admit(bench, abft_checks=True)  # on: this build's pass made it, at its own tolerance: read
    assert bench.infer(2, "tiles", model="guarded").state is JobState.DONE
    assert (receipt(bench, 2)["protection"], receipt(bench, 2)["check_status"]) == ("abft+scrubbed", "passed")


@pytest.mark.req("RAD-101", "RAD-105")
def test_secondary_outputs_keep_the_models_scrubbed_weights_and_a_clean_minus_inf_passes(bench):
    """Found in review of pass version 7: a model with an integer output (an ArgMax of the logits) lost
    its "scrubbed" claim, as the probe moved the compare's constants, which clean data never reads; a
    second output that is legitimately -inf (the log of a probability that underflowed), which the
    worker does not read, failed every tile."""
    model = onnx.load_from_string(SHIPPED)
    model.graph.node.extend([helper.make_node("ArgMax", ["logits"], ["klass"], axis=1, keepdims=0),
                             helper.make_node("Mul", ["logits", "big"], ["hot"]),
                             helper.make_node("Softmax", ["hot"], ["sharp"], axis=1),
                             helper.make_node("Log", ["sharp"], ["log_probabilities"])])
    model.graph.initializer.append(numpy_helper.from_array(np.array(1e4, np.float32), "big"))  # -inf where it underflows
    model.graph.output.extend([helper.make_tensor_value_info("klass", TensorProto.INT64, ["N"]),
                               helper.make_tensor_value_info("log_probabilities", TensorProto.FLOAT, ["N", 2])])
    install(bench, "more", model.SerializeToString(), TILES[:16])
    bench.data_set("tiles", TILES[16:48])
    admit(bench)
    assert bench.infer(1, "tiles", model="more").state is JobState.DONE
    r = receipt(bench, 1)
    assert r["protection"] == Protection.ABFT_SCRUBBED.value and r["check_status"] == "passed", r
    assert not bench.events("RESULT_CHECK_FAILED")
    session = bench.worker._session("more")  # noqa: SLF001
    out = session.session.run(["log_probabilities"], {session.input_name: TILES[16:48]})[0]
    assert np.isneginf(out).any()  # the -inf was there, and passed


def _continuous_file(bench, name: str, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``tiles`` screened as one camera file by continuous job 1; the product's (classes, check statuses)."""
    reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(1, JobKind.INFERENCE, "incoming", model=MODEL_NAME,
                                                              continuous=True)))
    assert reply.ok, reply.reason
    (bench.root / "incoming").mkdir(parents=True, exist_ok=True)
    np.save(bench.root / "incoming" / f".{name}.npy", tiles)
    (bench.root / "incoming" / f".{name}.npy").rename(bench.root / "incoming" / f"{name}.npy")
    for _ in range(400):
        if (bench.root / "incoming" / "done" / f"{name}.npy").exists():
            break
        bench.worker.work_slice()
    with np.load(bench.root / "products" / f"job00001-{name}.npz", allow_pickle=False) as npz:
        return npz["classes"], npz["check"]


@pytest.mark.req("RAD-105", "RAD-114")
@pytest.mark.parametrize("repairable", [True, False], ids=["repaired", "unrepairable"])
def test_each_part_of_a_long_camera_file_is_made_again_when_a_later_parts_scrub_finds_a_weight_it_used(
        bench, repairable):
    """Found in audit: a file of more than 64 tiles runs in parts; one count of repairs for the whole file, read
    after its last part, released a first part made with a wrong weight no range check sees as passed, once the
    second part's failed check scrubbed it; and where nothing could repair it (the session dropped), the later
    parts ran on the dropped session, its weight still wrong, and passed."""
    admit(bench, abft_checks=False, range_checks=True)
    model = bench.worker._session(MODEL_NAME)  # noqa: SLF001
    tiles = TILES[:80].copy()
    clean = model.session.run(["probabilities"], {"tiles": tiles})[0].argmax(axis=1)
    bias = model.scrubber.owned["b1"].reshape(-1)
    bias[int(np.argmax(np.abs(bias)))] *= np.float32(-1.0)  # a sign flipped: no range check sees it
    if not repairable:  # the golden copies disagree too: nothing settles the chunk
        for copy, byte in ((0, 0), (1, 0), (2, 1)):
            model.scrubber.golden_bytes(copy, "b1")[byte] ^= np.uint8(1)
    wrong = model.session.run(["probabilities"], {"tiles": tiles})[0].argmax(axis=1) != clean
    out_of_range = slice(64, 80) if repairable else slice(0, 64)  # the part whose range check fails
    assert wrong[slice(0, 64) if repairable else slice(64, 80)].any()
    tiles[out_of_range] *= 50.0
    classes, status = _continuous_file(bench, "scene", tiles)
    kept = np.ones(80, bool)
    kept[out_of_range] = False
    assert not ((classes != clean) & (status == PASSED) & kept).any()  # nothing wrong goes out as passed
