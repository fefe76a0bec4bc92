"""The model lifecycle on board: verify → reference check → activate with a fallback, rollback by
command and by itself, provenance in products and housekeeping, deltas, restarts.

The worker runs in this process on a real socket (tests/model_helpers.py), with real
onnxruntime sessions on small real models; the last test flies it in a real agent.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flight.compute.opening import RECORD_FILE, UNFINISHED_LIMIT, OpenRecord
from flight.compute.package import Delta, Manifest, StagedFiles, npz_bytes, sha256_hex
from flight.compute.providers import CPU
from flight.compute.store import Copy, ModelIntegrityError, ModelStore, Problem
from flight.compute.uplink import ReadRefused, read_limited
from flight.link.dictionary import FailureCode
from ground.model_package import pack_delta, pack_full
from tests.model_helpers import (
    ALICE,
    ALICE_KEY,
    BOB,
    BOB_KEY,
    REF_X,
    WorkerBench,
    pack,
    resign,
    stage_by_hand,
    stage_delta,
    tiny,
    trusted_file,
    with_external_weights,
)
V1, V2 = tiny(2.0), tiny(3.0)
NAN_MODEL = tiny(3.0, op="Sqrt")  # finite on the (positive) reference inputs, NaN on negative tiles
RNG_TILES = np.random.default_rng(3).uniform(0.1, 1.0, size=(10, 2)).astype(np.float32)


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", trusted_file(tmp_path, (ALICE, ALICE_KEY)))
    yield b
    b.close()


def installed(bench, model: bytes, version: str, name: str = "tiny"):
    manifest = pack(bench.staging, model, version, name).manifest
    reply = bench.install(version, manifest.sha256, name)
    assert reply.ok, reply.reason
    return manifest


@pytest.mark.req("MDL-004", "MDL-001")
def test_a_signed_install_activates_and_keeps_the_previous_version_as_the_fallback(bench):
    first = installed(bench, V1, "1")
    event = bench.events("MODEL_INSTALLED")[-1].args
    assert event == {"name": "tiny", "version": "1", "sha256": sha256_hex(V1)[:16], "uplinked_by": ALICE,
                     "fallback": "none"}
    reply = bench.install("2", pack(bench.staging, V2, "2").manifest.sha256)
    assert reply.ok and reply.result["fallback_version"] == "1" and reply.result["uplinked_by"] == ALICE
    assert reply.result["max_error"] == 0.0  # the same CPU build ran it here and on the "ground"
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version, state.probation) == ("2", "1", True)
    assert state.active.sha256 == sha256_hex(V2) and state.provenance_of("1").uplinked_by == ALICE
    assert bench.worker.store.load_fallback("tiny").bytes == V1  # kept, and checked when read
    assert state.provenance_of("1").created_utc == first.created_utc
    # a third version, once the second has run a job: the first is forgotten, files and all (the store keeps two)
    bench.worker.store.end_probation("tiny")
    installed(bench, tiny(4.0), "3")
    files = sorted(p.name for p in bench.worker.store.root.iterdir() if p.name.startswith("tiny@"))
    assert files == ["tiny@2.onnx", "tiny@2.ref.npz", "tiny@3.onnx", "tiny@3.ref.npz"]
    assert bench.worker.store.verify_all() == []
    refused = bench.install("3", sha256_hex(tiny(4.0)))  # the active version again
    assert not refused.ok and "is the active version of 'tiny' already" in refused.reason
    pack(bench.staging, tiny(5.0), "2")  # the fallback's version: its file is never rewritten in place
    refused = bench.install("2", sha256_hex(tiny(5.0)))
    assert not refused.ok and "is the fallback version of 'tiny' already" in refused.reason
    assert bench.worker.store.load_fallback("tiny").bytes == V2


@pytest.mark.req("MDL-001")
def test_a_bad_signature_an_unknown_key_or_no_trusted_keys_is_refused(bench, tmp_path):
    sha = pack(bench.staging, V1, "1", operator=BOB, key=BOB_KEY).manifest.sha256
    unknown = bench.install("1", sha)
    assert not unknown.ok and unknown.code == FailureCode.BAD_ARGUMENTS
    assert "signed by 'bob', whose key is not trusted here (trusted: alice)" in unknown.reason
    assert "trusted here" in bench.events("MODEL_REFUSED")[-1].args["reason"]
    # Bob signs as Alice: the name is hers, the key is not.
    resign(bench.staging, "tiny", key=BOB_KEY, uplinked_by=ALICE)
    forged = bench.install("1", sha)
    assert not forged.ok and "the signature of 'alice' does not verify" in forged.reason
    # Alice's manifest, edited after she signed it (a looser tolerance).
    pack(bench.staging, V1, "1")
    path = bench.staging / StagedFiles.of("tiny").manifest
    doc = json.loads(path.read_text())
    doc["body"]["tolerance"] = 10.0
    path.write_text(json.dumps(doc))
    edited = bench.install("1", sha)
    assert not edited.ok and "changed after it was signed" in edited.reason
    assert bench.worker.store.list() == []  # nothing was installed

    no_keys = WorkerBench(tmp_path / "other")
    try:
        pack(no_keys.staging, V1, "1")
        refused = no_keys.install("1", sha)
        assert not refused.ok and refused.code == FailureCode.EXECUTION_ERROR
        assert "none are configured: set [models] trusted_keys" in refused.reason
        # whole in a command's report (found in review: the hint at its end was cut off there)
        from flight.link.messages import MAX_REASON_LEN

        assert len(refused.reason.encode()) <= MAX_REASON_LEN and refused.reason.endswith("keygen prints one)")
    finally:
        no_keys.close()


@pytest.mark.req("MDL-001")
def test_an_unsigned_model_is_taken_only_when_the_configuration_allows_it(tmp_path):
    for allow in (False, True):
        bench = WorkerBench(tmp_path / f"allow-{allow}", allow_unsigned=allow)
        try:
            bench.staging.mkdir(parents=True, exist_ok=True)
            (bench.staging / "tiny.onnx").write_bytes(V1)
            reply = bench.install("1", sha256_hex(V1))
            if allow:
                assert reply.ok and reply.result["uplinked_by"] == "unsigned" and reply.result["max_error"] is None
                assert bench.worker.store.state("tiny").active_provenance.signed is False
            else:
                assert not reply.ok and "unsigned models are refused ([models] allow_unsigned = false)" in reply.reason
        finally:
            bench.close()


@pytest.mark.req("MDL-002")
def test_a_tampered_file_is_refused_before_it_is_parsed(bench):
    manifest = pack(bench.staging, V1, "1").manifest
    model = bench.staging / "tiny.onnx"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit, as the link or the flash would flip it
    model.write_bytes(bytes(raw))
    flipped = bench.install("1", manifest.sha256)
    assert not flipped.ok and "staging/tiny.onnx: SHA-256" in flipped.reason and "is not the signed" in flipped.reason
    pack(bench.staging, V1, "1")
    (bench.staging / "tiny.ref.npz").write_bytes(b"PK\x03\x04 cut short")
    cut = bench.install("1", manifest.sha256)
    assert not cut.ok and "staging/tiny.ref.npz: SHA-256" in cut.reason
    pack(bench.staging, V1, "1")
    other = bench.install("1", sha256_hex(V2))  # the command names another model than the one signed
    assert not other.ok and "the command names tiny version 1" in other.reason
    ghost = bench.install("1", manifest.sha256, name="ghost")
    assert not ghost.ok and "no uplinked file staging/ghost.onnx" in ghost.reason
    assert bench.worker.store.list() == []


@pytest.mark.req("MDL-003")
def test_the_reference_check_runs_the_model_and_refuses_one_off_its_expected_outputs(bench):
    installed(bench, V1, "1")
    # Version 2 packed with version 1's expected outputs (signed, so only the check can catch it).
    v1_ref = (bench.staging / "tiny.ref.npz").read_bytes()
    pack(bench.staging, V2, "2", tolerance=1e-3)
    (bench.staging / "tiny.ref.npz").write_bytes(v1_ref)
    resign(bench.staging, "tiny", reference_sha256=sha256_hex(v1_ref))
    reply = bench.install("2", sha256_hex(V2))
    expected_error = float(np.max(np.abs(REF_X * 3.0 - REF_X * 2.0)))  # |3x| - |2x| on positive inputs
    assert not reply.ok and reply.code == FailureCode.EXECUTION_ERROR
    assert reply.reason.startswith("reference check failed, not activated: max error")
    [event] = bench.events("MODEL_REFERENCE_FAILED")
    assert event.args["version"] == "2" and event.args["tolerance"] == 1e-3
    assert math.isclose(event.args["max_error"], expected_error, rel_tol=1e-5)
    state = bench.worker.store.state("tiny")
    assert state.active.version == "1" and state.fallback is None  # nothing changed
    # within its tolerance it passes: the same package with a tolerance above the difference
    resign(bench.staging, "tiny", tolerance=expected_error * 1.01)
    assert bench.install("2", sha256_hex(V2)).ok


@pytest.mark.req("MDL-004")
def test_the_same_use_rule_takes_dynamic_and_unknown_ranks_and_refuses_a_fixed_size_or_type_that_differs():
    """Found in review: onnxruntime reports an output whose rank it cannot infer as [], which the rule read as a
    scalar and refused. A symbolic or None dimension fits any size; a fixed one must match, and so must the type."""
    from flight.compute.store import InvalidModel, TensorSpec, check_same_use

    def specs(x_shape, p_shape, dtype="tensor(float)"):
        return (TensorSpec("x", x_shape, dtype),), (TensorSpec("probabilities", p_shape, "tensor(float)"),)

    active = specs(("N", 2), ("N", 2))
    for fits in (specs(("N", 2), ()), specs((None, 2), ("batch", 2)), specs((8, 2), (8, 2))):
        check_same_use("m", "2", fits, "the active version 1", active)
    check_same_use("m", "2", active, "the active version 1", specs(("N", 2), ()))
    for differs, said in ((specs(("N", 3), ("N", 2)), "takes x [N, 3]"), (specs(("N", 2), ("N", 3)), "gives"),
                          (specs(("N", 2), ("N", 2), "tensor(double)"), "tensor(double)")):
        with pytest.raises(InvalidModel, match=re.escape(said)):
            check_same_use("m", "2", differs, "the active version 1", active)


@pytest.mark.req("MDL-004")
def test_a_version_whose_inputs_or_result_the_models_jobs_cannot_use_is_refused_naming_both_shapes(bench):
    """Found in audit: a version taking [N, 3], packed with reference inputs of its own shape, passed its check and
    was installed, completed; every job of the model then failed as bad input, which rolls nothing back. So too a
    version whose probabilities were of rank 1 (its jobs failed "AxisError: axis 1 is out of bounds")."""
    from onnx import TensorProto, helper

    installed(bench, V1, "1")
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("ReduceMax", ["a"], ["probabilities"], keepdims=0,
                                                                 axes=[1])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N"])])
    flat = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    reply = bench.install("2", pack(bench.staging, flat, "2").manifest.sha256)
    assert not reply.ok and "'tiny' v2 gives probabilities [N] tensor(float); the active version 1: probabilities " \
        "[N, 2]" in reply.reason
    wide = tiny(2.0, features=3)
    x3 = np.random.default_rng(5).uniform(0.1, 1.0, size=(8, 3)).astype(np.float32)
    manifest = pack_full(wide, "tiny", "2", ALICE, ALICE_KEY, bench.staging, x3).manifest
    reply = bench.install("2", manifest.sha256)
    assert not reply.ok and "takes x [N, 3] tensor(float); the active version 1: x [N, 2]" in reply.reason
    assert "its jobs could not use it (another use case: another name)" in reply.reason, reply.reason
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback) == ("1", None)
    assert sorted(p.name for p in bench.worker.store.root.glob("tiny@2*")) == []
    # the same model under its own name is a model of its own, installed
    pack_full(wide, "wide", "1", ALICE, ALICE_KEY, bench.staging, x3)
    assert bench.install("1", manifest.sha256, "wide").ok
    # a version taking the same inputs is installed as before
    assert bench.install("2", pack(bench.staging, V2, "2").manifest.sha256).ok


@pytest.mark.req("MDL-003", "MDL-004")
@pytest.mark.parametrize("spoil, says", [("opset", "Opset 99 is"),
                                         ("ir_version", "Unsupported model IR version: 99"),
                                         ("operator", "NoSuchOp")])
def test_a_model_onnxruntime_will_not_open_is_refused_saying_why(bench, tmp_path, spoil, says):
    """Found in audit: onnxruntime's refusal of a model of a newer opset or IR version reached the operator cut to
    fit the event and the reply, after the providers not in the build and a C++ function signature: "no execution
    provider could open the model: TensorrtExecutionProvider: not in this onnxruntime build...", never what was
    wrong. Signed (its reference check opens it) or not (the store opens it to describe it): said, nothing kept."""
    import onnx

    installed(bench, V1, "1")
    model = onnx.load_from_string(V2)
    if spoil == "opset":
        model.opset_import[0].version = 99
    elif spoil == "ir_version":
        model.ir_version = 99
    else:
        model.graph.node[1].op_type = "NoSuchOp"
    data = model.SerializeToString()
    manifest = stage_by_hand(bench.staging, "tiny", "2", data, V2)
    reply = bench.install("2", manifest.sha256)
    assert not reply.ok and says in reply.reason and "onnxruntime will not open it" in reply.reason
    [event] = bench.events("MODEL_REFERENCE_FAILED")
    assert says in event.args["reason"]
    assert bench.worker.store.state("tiny").active.version == "1"
    assert sorted(p.name for p in bench.worker.store.root.glob("tiny@2*")) == []
    unsigned = WorkerBench(tmp_path / "unsigned", allow_unsigned=True)
    try:
        unsigned.staging.mkdir(parents=True, exist_ok=True)
        (unsigned.staging / "tiny.onnx").write_bytes(data)
        refused = unsigned.install("2", sha256_hex(data))
        assert not refused.ok and says in refused.reason
        [event] = unsigned.events("MODEL_REFUSED")
        assert says in event.args["reason"] and "onnxruntime cannot load this model" in event.args["reason"]
    finally:
        unsigned.close()


@pytest.mark.req("MDL-004")
def test_model_rollback_swaps_active_and_fallback_and_fails_cleanly_without_one(bench):
    installed(bench, V1, "1")
    none = bench.rollback()
    assert not none.ok and none.code == FailureCode.NOT_ALLOWED_IN_MODE
    assert "has no fallback version to roll back to (active: version 1)" in none.reason
    unknown = bench.rollback("nope")
    assert not unknown.ok and unknown.code == FailureCode.BAD_ARGUMENTS and "no model 'nope'" in unknown.reason
    installed(bench, V2, "2")
    back = bench.rollback()
    assert back.ok and back.result["version"] == "1" and back.result["from_version"] == "2"
    [event] = bench.events("MODEL_ROLLED_BACK")
    assert event.args == {"name": "tiny", "from_version": "2", "to_version": "1", "automatic": False,
                          "reason": "commanded"}
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version, state.probation) == ("1", "2", True)
    assert bench.rollback().result["version"] == "2"  # and forward again
    # a corrupt fallback is refused, and nothing changes
    fallback = bench.worker.store.root / "tiny@1.onnx"
    fallback.write_bytes(fallback.read_bytes()[:-3])
    bad = bench.rollback()
    assert not bad.ok and "the fallback version failed its check" in bad.reason
    assert bench.worker.store.state("tiny").active.version == "2"


@pytest.mark.req("MDL-005", "MDL-007")
def test_a_new_version_giving_nan_is_rolled_back_by_itself_and_the_job_runs_again(bench):
    installed(bench, V1, "1")
    installed(bench, NAN_MODEL, "2")  # passes its reference check: the reference inputs are positive
    bench.data_set("night", -RNG_TILES)
    job = bench.infer(1, "night")
    assert job.state.value == "DONE", job.detail
    [event] = bench.events("MODEL_ROLLED_BACK")
    assert event.args["automatic"] is True and (event.args["from_version"], event.args["to_version"]) == ("2", "1")
    assert "gave non-finite outputs on its first job, 1" in event.args["reason"]
    product = np.load(bench.root / "products" / "job00001-night.npz")
    assert str(product["model_version"]) == "1" and str(product["model_sha256"]) == sha256_hex(V1)
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version, state.probation) == ("1", "2", False)
    assert state.last_rollback["automatic"] is True and state.last_rollback["from"] == "2"
    # The operator wants version 2 anyway: on probation again, it proves itself on daylight tiles;
    # from then on a NaN fails the job (no product) and nothing is swapped behind the operator's back.
    assert bench.rollback().ok
    bench.data_set("day", RNG_TILES)
    assert bench.infer(2, "day").state.value == "DONE"
    failed = bench.infer(3, "night")
    assert failed.state.value == "FAILED" and "non-finite outputs" in failed.detail
    assert len(bench.events("MODEL_ROLLED_BACK")) == 2  # the automatic one and the commanded one
    assert bench.worker.store.state("tiny").active.version == "2"


@pytest.mark.req("MDL-005", "RAD-105")
@pytest.mark.parametrize("abft_checks, range_checks", [(True, False), (False, True), (True, True)])
def test_a_new_version_giving_nan_is_rolled_back_though_its_checks_flag_it(bench, abft_checks, range_checks):
    """Found in review: with the checks on, the NaN tiles were flagged, written as failed, and the
    version's first product ended its probation: a bad model kept, its failures read as radiation."""
    bench.worker.abft_checks, bench.worker.range_checks, bench.worker.scrub_weights = abft_checks, range_checks, True
    installed(bench, V1, "1")
    installed(bench, NAN_MODEL, "2")
    bench.data_set("night", -RNG_TILES)
    job = bench.infer(1, "night")
    assert job.state.value == "DONE", job.detail
    [event] = bench.events("MODEL_ROLLED_BACK")
    assert (event.args["from_version"], event.args["to_version"]) == ("2", "1")
    assert str(np.load(bench.root / "products" / "job00001-night.npz")["model_version"]) == "1"


@pytest.mark.req("MDL-005")
def test_bad_input_data_fails_its_job_and_rolls_nothing_back(bench):
    installed(bench, V1, "1")
    installed(bench, V2, "2")
    bench.data_set("wrong", np.ones((4, 3), np.float32))  # three features, not two
    job = bench.infer(1, "wrong")
    assert job.state.value == "FAILED"
    assert bench.events("MODEL_ROLLED_BACK") == []
    assert bench.worker.store.state("tiny").active.version == "2"


@pytest.mark.req("MDL-005")
def test_a_new_version_that_fails_to_load_is_rolled_back(bench):
    installed(bench, V1, "1")
    installed(bench, V2, "2")
    active = bench.worker.store.root / "tiny@2.onnx"
    raw = bytearray(active.read_bytes())
    raw[-5] ^= 0x10
    active.write_bytes(bytes(raw))
    bench.data_set("day", RNG_TILES)
    job = bench.infer(1, "day")
    assert job.state.value == "DONE"
    [event] = bench.events("MODEL_ROLLED_BACK")
    assert "version 2 failed to load" in event.args["reason"] and "SHA-256 mismatch" in event.args["reason"]
    assert bench.events("MODEL_GOLDEN_USED") == []  # on probation: the fallback, not the golden copy


@pytest.mark.req("MDL-007", "MDL-005")
def test_products_and_status_carry_the_models_provenance_and_a_good_job_ends_probation(bench):
    installed(bench, V1, "1")
    installed(bench, V2, "2")
    status = bench.worker.status()
    assert (status.model_name, status.model_version, status.model_sha256, status.model_uplinked_by,
            status.model_fallback_version, status.model_probation) == ("tiny", "2", sha256_hex(V2), ALICE, "1", True)
    bench.data_set("day", RNG_TILES)
    assert bench.infer(1, "day").state.value == "DONE"
    header = {"model": "tiny", "model_version": "2", "model_sha256": sha256_hex(V2), "model_uplinked_by": ALICE}
    summary = json.loads((bench.root / "products" / "job00001-day.json").read_text())
    assert {k: summary[k] for k in header} == header
    with np.load(bench.root / "products" / "job00001-day.npz", allow_pickle=False) as product:
        assert {k: str(product[k]) for k in header} == header
        np.testing.assert_array_equal(product["classes"], np.abs(RNG_TILES * 3.0).argmax(axis=1))
    assert bench.worker.status().model_probation is False  # proven by its first job
    assert bench.events("MODEL_ROLLED_BACK") == []


@pytest.mark.req("MDL-006")
def test_active_fallback_probation_and_provenance_survive_a_restart(bench):
    installed(bench, V1, "1")
    installed(bench, V2, "2")
    before = bench.worker.store.state("tiny")
    bench.restart()
    worker = bench.worker
    after = worker.store.state("tiny")
    assert after == before and after.probation is True
    status = worker.status()  # the model last activated, whatever the worker ran before its restart
    assert (status.model_name, status.model_version, status.model_fallback_version) == ("tiny", "2", "1")
    # the probation survived too: the restarted worker still rolls back a version that fails its first job
    (worker.store.root / "tiny@2.onnx").unlink()
    bench.data_set("day", RNG_TILES)
    assert bench.infer(1, "day").state.value == "DONE"
    assert bench.events("MODEL_ROLLED_BACK")[-1].args["to_version"] == "1"
    assert ModelStore(worker.store.root).state("tiny").active.version == "1"  # on disk, not only in memory


@pytest.mark.req("MDL-008")
def test_a_delta_is_applied_to_its_base_checked_and_activated(bench):
    base = installed(bench, tiny(2.0, offset=(0.0, 0.5)), "1")
    base_bytes = tiny(2.0, offset=(0.0, 0.5))
    tuned = tiny(2.0, offset=(0.1, 0.4))  # only the head's bias changed
    (bench.staging / "tiny.onnx").unlink()
    package = pack_delta(base_bytes, tuned, "tiny", "2", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5)
    assert set(package.files) == {"tiny.delta.npz", "tiny.ref.npz", "tiny.manifest.json"}
    assert Delta.from_bytes((bench.staging / "tiny.delta.npz").read_bytes()).tensors.keys() == {"offset"}
    reply = bench.install("2", package.manifest.sha256)
    assert reply.ok, reply.reason
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version) == ("2", "1")
    assert state.active.sha256 == package.manifest.sha256 and state.fallback.sha256 == base.sha256
    # the reference inputs came from the base's kept reference set; the new version keeps them too
    assert bench.worker.store.load_reference("tiny", "2") is not None
    bench.data_set("day", RNG_TILES)
    assert bench.infer(1, "day").state.value == "DONE"
    # a delta on the fallback version is fine too (its base is either of the two)
    again = pack_delta(base_bytes, tiny(2.0, offset=(0.2, 0.3)), "tiny", "3", ALICE, ALICE_KEY, bench.staging,
                       REF_X, 1e-5)
    assert bench.install("3", again.manifest.sha256).ok


@pytest.mark.req("MDL-008")
def test_a_delta_for_another_base_or_naming_a_wrong_tensor_is_refused_naming_it(bench):
    base_bytes = tiny(2.0)
    base = installed(bench, base_bytes, "1")
    f32 = np.float32
    cases = {
        "another base": (Delta(sha256_hex(tiny(9.0)), "0" * 64, {"scale": np.array([1.0], f32)}),
                         "delta: model 'tiny' has no version"),
        "a bad name": (Delta(base.sha256, "0" * 64, {"sacle": np.array([1.0], f32)}),
                       "delta: tensor 'sacle': no initializer of that name in the base model (it has: offset, scale)"),
        "a wrong shape": (Delta(base.sha256, "0" * 64, {"scale": np.array([1.0, 2.0], f32)}),
                          "delta: tensor 'scale': shape [2] in the delta, [1] in the base"),
        "a wrong dtype": (Delta(base.sha256, "0" * 64, {"offset": np.array([1.0, 2.0], np.float64)}),
                          "delta: tensor 'offset': dtype float64 in the delta, float32 in the base"),
        "a wrong result": (Delta(base.sha256, "0" * 64, {"scale": np.array([5.0], f32)}),
                           "delta: the model built from it is"),
    }
    manifest = Manifest.from_bytes((bench.staging / "tiny.manifest.json").read_bytes())
    for what, (delta, reason) in cases.items():
        signed = stage_delta(bench.staging, "tiny", delta, "2", manifest)
        reply = bench.install("2", signed.sha256)
        assert not reply.ok and reason in reply.reason, (what, reply.reason)
    assert bench.worker.store.state("tiny").active.version == "1"


@pytest.mark.req("MDL-007", "MDL-004")
def test_an_agent_installs_a_signed_package_reports_its_provenance_and_rolls_back(start_agent, make_client,
                                                                                   ipc_url, tmp_path):
    from flight.link.messages import HkRecord
    from tests.samples import SAMPLE_MODEL_SHA256, SAMPLE_OPERATOR, pack_sample_model, sample_agent_args

    state = tmp_path / "state"
    start_agent(ipc_url, "--state-dir", str(state), *sample_agent_args(tmp_path))
    client = make_client(ipc_url)

    def hk(predicate, timeout_s=30.0):
        return client.wait_for(lambda i: isinstance(i.record, HkRecord) and i.record.packet.name == "COMPUTE_HK"
                               and predicate(i.record.values), timeout_s).record.values

    shipped = hk(lambda v: v["model_version"] is not None)
    assert (shipped["model_name"], shipped["model_version"], shipped["model_uplinked_by"]) == \
        ("cloud_screen", "1.0", "shipped")
    pack_sample_model(state / "compute" / "staging", version="2")
    result = client.send("MODEL_INSTALL", {"name": "cloud_screen", "version": "2", "sha256": SAMPLE_MODEL_SHA256},
                         timeout_s=30)
    assert result.completed, result.outcome
    assert result.result["uplinked_by"] == SAMPLE_OPERATOR and result.result["fallback_version"] == "1.0"
    values = hk(lambda v: v["model_version"] == "2")
    assert values["model_sha256"] == SAMPLE_MODEL_SHA256 and values["model_uplinked_by"] == SAMPLE_OPERATOR
    assert values["model_fallback_version"] == "1.0" and values["model_probation"] is True
    assert client.send("MODEL_ROLLBACK", {"name": "cloud_screen"}, timeout_s=30).completed
    back = hk(lambda v: v["model_version"] == "1.0")
    assert back["model_fallback_version"] == "2" and back["model_uplinked_by"] == "shipped"


def install_both_then_corrupt_them(bench, golden_model) -> None:
    """Version 1 (``golden_model``, golden) then version 2 on probation, each working copy then failing its
    SHA-256 (a flipped bit): only the golden copy is left to run."""
    for version, model, golden in (("1", golden_model, True), ("2", V2, False)):
        reply = bench.install(version, pack(bench.staging, model, version).manifest.sha256, golden=golden)
        assert reply.ok, reply.reason
    for name in ("tiny@1.onnx", "tiny@2.onnx"):
        path = bench.worker.store.root / name
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x10
        path.write_bytes(bytes(raw))


@pytest.mark.req("MDL-005", "CMP-004")
def test_a_version_on_probation_whose_fallback_is_bad_too_runs_the_golden_copy(bench):
    """Found in audit: with the version on probation and its fallback both failing their SHA-256, the rollback was
    refused and every job failed, the golden copy intact and never used."""
    install_both_then_corrupt_them(bench, V1)
    bench.data_set("pos", RNG_TILES)
    job = bench.infer(1, "pos")
    assert job.state.value == "DONE", job.detail
    assert bench.events("MODEL_GOLDEN_USED")


@pytest.mark.req("MDL-004")
def test_a_golden_install_cut_between_its_two_manifests_completes_when_sent_again(bench):
    """Found in audit: cut after the working manifest and before the golden one, the new version was active, the
    golden copy still the old one, and the same install sent again was refused as the active version for good."""
    from flight.compute.store import Provenance

    assert bench.install("1", pack(bench.staging, V1, "1").manifest.sha256, golden=True).ok
    manifest = pack(bench.staging, V2, "2").manifest
    store = bench.worker.store
    store.activate("tiny", "2", V2, Provenance("alice", True))  # the working manifest written, the cut before golden
    assert store.state("tiny").active.version == "2" and store.load_golden("tiny").version == "1"
    reply = bench.install("2", manifest.sha256, golden=True)
    assert reply.ok, reply.reason
    assert store.load_golden("tiny").version == "2" and store.state("tiny").active.version == "2"


@pytest.mark.req("MDL-005", "CMP-016")
def test_a_job_whose_models_end_of_probation_cannot_be_written_is_done_and_the_write_said(bench, monkeypatch):
    """Found in audit: the store's manifest not written (a full disk) as a good job ended the new version's
    probation failed the job, its product written, and every later one, with no COMPUTE_WRITE_FAILED."""
    installed(bench, V1, "1")
    installed(bench, V2, "2")
    bench.data_set("pos", RNG_TILES)

    def full(name):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench.worker.store, "end_probation", full)
    job = bench.infer(1, "pos")
    assert job.state.value == "DONE", job.detail
    assert bench.worker.store.state("tiny").probation and bench.events("COMPUTE_WRITE_FAILED")
    monkeypatch.undo()
    assert bench.infer(2, "pos").state.value == "DONE" and not bench.worker.store.state("tiny").probation


@pytest.mark.req("MDL-005", "CMP-004")
def test_a_corrupt_state_read_as_probation_ends_is_said_corrupt_not_a_failed_write(bench, monkeypatch):
    """Found in review: a manifest that failed its check as a good job ended the new version's probation was
    counted and said as a failed write (COMPUTE_WRITE_FAILED), hiding corrupt state behind a full disk."""
    installed(bench, V1, "1")
    installed(bench, V2, "2")
    bench.data_set("pos", RNG_TILES)

    def corrupt(name):
        raise ModelIntegrityError(None, Copy.WORKING, Problem.MANIFEST_CORRUPT,
                                  bench.worker.store.root / "manifest.json")

    monkeypatch.setattr(bench.worker.store, "end_probation", corrupt)
    job = bench.infer(1, "pos")
    assert job.state.value == "DONE", job.detail
    said = bench.events("COMPUTE_STATE_CORRUPT")
    assert said and said[-1].args["what"] == "model tiny's state", said
    assert "manifest corrupt" in said[-1].args["reason"], said
    assert not bench.events("COMPUTE_WRITE_FAILED") and bench.worker.compute_writes_failed == 0
    assert bench.worker.store.state("tiny").probation


@pytest.mark.req("MDL-005")
def test_a_version_replaced_while_on_probation_gives_way_to_the_proven_fallback(bench):
    """Found in audit: a third version installed while the second had not yet run a job made the second, never
    proven, the fallback and deleted the first; the third failing, the second was restored off probation."""
    installed(bench, V1, "1")
    installed(bench, V2, "2")  # on probation: never ran
    installed(bench, tiny(4.0), "3")
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version) == ("3", "1")
    files = sorted(p.name for p in bench.worker.store.root.iterdir() if p.name.startswith("tiny@"))
    assert files == ["tiny@1.onnx", "tiny@1.ref.npz", "tiny@3.onnx", "tiny@3.ref.npz"]


@pytest.mark.req("MDL-005", "MDL-004", "MDL-006")
def test_a_version_installed_after_a_commanded_rollback_keeps_the_version_that_ran_as_its_fallback(bench):
    """Found in audit: a commanded rollback puts the version it restores on probation, and the next install took
    that for a version that never ran: the version rolled back from (which never ran) became the fallback and
    the one that ran was deleted; the new version failing its first job, the worker restored the one the operator
    had rolled back from, off probation. What ran is kept in the manifest, through a restart."""
    installed(bench, V1, "1")
    bench.data_set("day", RNG_TILES)
    assert bench.infer(1, "day").state.value == "DONE"  # version 1 ran: off probation
    installed(bench, V2, "2")
    assert bench.rollback().ok  # the operator wants version 1 back before version 2 ever ran
    assert bench.rollback().ok and bench.rollback().ok  # twice more: back and forth, nothing lost
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version, state.probation) == ("1", "2", True)
    bench.restart()
    installed(bench, NAN_MODEL, "3")  # the fix, which gives NaN on the night's tiles
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version) == ("3", "1")
    assert sorted(p.name for p in bench.worker.store.root.glob("tiny@*.onnx")) == ["tiny@1.onnx", "tiny@3.onnx"]
    bench.data_set("night", -RNG_TILES)
    assert bench.infer(2, "night").state.value == "DONE"
    rolled = bench.events("MODEL_ROLLED_BACK")[-1].args
    assert (rolled["automatic"], rolled["from_version"], rolled["to_version"]) == (True, "3", "1")
    assert str(np.load(bench.root / "products" / "job00002-night.npz")["model_version"]) == "1"


@pytest.mark.req("MDL-002")
def test_a_model_with_external_weights_is_refused_naming_the_tensor_and_its_file_before_a_session_opens(tmp_path):
    """Found in audit: a signed model whose initializers lay in an external file (ONNX external data, which no
    SHA-256 covers) reached the reference check and was refused with onnxruntime's own error, naming neither."""
    for allow_unsigned in (False, True):
        bench = WorkerBench(tmp_path / f"unsigned-{allow_unsigned}", trusted_file(tmp_path, (ALICE, ALICE_KEY)),
                            allow_unsigned=allow_unsigned)
        try:
            installed(bench, V1, "1")
            data = with_external_weights(V2, bench.staging, "tiny.onnx")  # tiny.weights beside it, uplinked too
            if allow_unsigned:
                (bench.staging / "tiny.manifest.json").unlink()
            else:
                stage_by_hand(bench.staging, "tiny", "2", data, V2)  # signed: the ground tool refuses to pack it
            reply = bench.install("2", sha256_hex(data))
            assert not reply.ok and reply.code == FailureCode.BAD_ARGUMENTS
            assert reply.reason.startswith("staging/tiny.onnx: tensor 'scale' keeps its data in the external file "
                                           "'tiny.weights' (and 1 more tensor)"), reply.reason
            [refused] = bench.events("MODEL_REFUSED")
            assert "'scale'" in refused.args["reason"] and "'tiny.weights'" in refused.args["reason"]
            assert bench.events("MODEL_REFERENCE_FAILED") == []  # refused before any session opened it
            assert bench.worker.store.state("tiny").active.version == "1"
        finally:
            bench.close()


def _lost_opens(bench, model: bytes) -> None:
    """Every attempt to open ``model`` lost twice in a row (a crash in the provider, a power cut, as CMP-018
    counts them): the next worker does not open those bytes again."""
    for _ in range(UNFINISHED_LIMIT):
        OpenRecord(bench.root / RECORD_FILE).begin(sha256_hex(model), CPU)
    bench.restart()
    bench.worker.providers = (CPU,)


@pytest.mark.req("MDL-005", "CMP-018")
@pytest.mark.parametrize("unopened", ["the new version", "the golden copy of the fallback"])
def test_a_refused_automatic_rollback_is_said_once(bench, unopened):
    """Found in audit: a version on probation that would not open, its fallback failing its check, said
    MODEL_REFUSED as it failed to load and again as its job failed: two events for one refusal."""
    for version, model, golden in (("1", V1, True), ("2", V2, False)):
        reply = bench.install(version, pack(bench.staging, model, version).manifest.sha256, golden=golden)
        assert reply.ok, reply.reason
    spoiled = ["tiny@1.onnx"] if unopened == "the new version" else ["tiny@1.onnx", "tiny@2.onnx"]
    for name in spoiled:  # the fallback fails its check (and, for the golden copy's turn, the new version too)
        path = bench.worker.store.root / name
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x10
        path.write_bytes(bytes(raw))
    _lost_opens(bench, V2 if unopened == "the new version" else V1)
    bench.data_set("day", RNG_TILES)
    job = bench.infer(1, "day")
    assert job.state.value == "FAILED" and "OpenNeverEnded" in job.detail, job.detail
    [refused] = bench.events("MODEL_REFUSED")
    assert "version 2 failed to load" in refused.args["reason"] and "no rollback" in refused.args["reason"]
    assert bench.events("MODEL_ROLLED_BACK") == []
    assert bench.worker.store.state("tiny").active.version == "2"
    assert bool(bench.events("MODEL_GOLDEN_USED")) == (unopened == "the golden copy of the fallback")


@pytest.mark.req("MDL-005")
def test_a_golden_copy_failing_after_a_refused_rollback_is_not_blamed_on_the_new_version(bench):
    """Found in review: the new version failing its check and its fallback too, the golden copy ran; its NaN
    outputs then tried the rollback again, a second MODEL_REFUSED blaming version 2 for version 1's NaN."""
    install_both_then_corrupt_them(bench, NAN_MODEL)
    bench.data_set("night", -RNG_TILES)  # NaN from NAN_MODEL, version 1's golden copy
    job = bench.infer(1, "night")
    assert job.state.value == "FAILED" and "NonFiniteOutput" in job.detail, job.detail
    assert len(bench.events("MODEL_GOLDEN_USED")) == 1
    [refused] = bench.events("MODEL_REFUSED")
    assert "version 2 failed to load" in refused.args["reason"], refused.args
    assert bench.worker.store.state("tiny").active.version == "2"


# A worker in a process of its own, given staged files that a full read could not hold: its address space is capped
# at 1 GiB over what it holds once started, and its peak resident memory is measured around the installs.
HUGE_STAGED_FILES = r"""
import json, os, resource, sys
from pathlib import Path

from flight.compute.package import StagedFiles
from flight.compute.uplink import MAX_REFERENCE_BYTES
from tests.model_helpers import ALICE, ALICE_KEY, WorkerBench, pack, tiny, trusted_file

root = Path(sys.argv[1])
TiB = 1 << 40
signed = WorkerBench(root / "signed", trusted_file(root, (ALICE, ALICE_KEY)))
unsigned = WorkerBench(root / "unsigned", allow_unsigned=True)
model = tiny(2.0)  # V1
files = StagedFiles.of("tiny")
held = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + (1 << 30), resource.RLIM_INFINITY))
rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
said = {}

def refused(bench, case, sha256):
    reply = bench.install("1", sha256)
    said[case] = [reply.ok, reply.reason]

unsigned.staging.mkdir(parents=True, exist_ok=True)
(unsigned.staging / files.model).touch()
os.truncate(unsigned.staging / files.model, TiB)  # sparse: nothing on the disk, a terabyte to read
refused(unsigned, "unsigned model", "0" * 64)
for case, staged, size in (("model", files.model, TiB), ("reference", files.reference, MAX_REFERENCE_BYTES + 1),
                           ("manifest", files.manifest, TiB)):
    sha256 = pack(signed.staging, model, "1").manifest.sha256
    os.truncate(signed.staging / staged, size)
    refused(signed, case, sha256)
sha256 = pack(signed.staging, model, "1").manifest.sha256
with open(signed.staging / files.model, "ab") as f:
    f.write(b"more")  # under the limit, but not the size the signed manifest gives
refused(signed, "longer than signed", sha256)
sha256 = pack(signed.staging, model, "1").manifest.sha256
(signed.staging / files.reference).unlink()
os.mkfifo(signed.staging / files.reference)  # nothing ever writes to it: a read would wait for good
refused(signed, "fifo", sha256)
said["rss_growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib
said["installed"] = [b.worker.store.list() == [] for b in (signed, unsigned)]
print(json.dumps(said))
"""


@pytest.mark.req("MDL-002")
def test_a_staged_file_over_its_limit_or_not_a_file_is_refused_unread_naming_the_limit(tmp_path):
    """Found in review: a staged model was read whole before its size was looked at, so a huge one cost the board
    its memory before it was refused. Each staged file's size is looked at on the opened file against its limit
    (and a full model's against its signed size_bytes) before anything is read; a FIFO is never waited on."""
    out = subprocess.run([sys.executable, "-c", HUGE_STAGED_FILES, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    said = json.loads(out.stdout.splitlines()[-1])
    tib = 1 << 40
    for case, why in (("unsigned model", f"staging/tiny.onnx: {tib} bytes, over the limit of 2147483647 bytes; "
                                         "nothing of it was read (MAX_MODEL_BYTES)"),
                      ("model", f"staging/tiny.onnx: {tib} bytes, over the limit of 2147483647 bytes"),
                      ("reference", f"staging/tiny.ref.npz: {256 * 1024 * 1024 + 1} bytes, over the limit of "
                                    f"{256 * 1024 * 1024} bytes; nothing of it was read (MAX_REFERENCE_BYTES)"),
                      ("manifest", f"staging/tiny.manifest.json: {tib} bytes, over the limit of 65536 bytes; "
                                   "nothing of it was read (MAX_MANIFEST_BYTES)"),
                      ("longer than signed", f"staging/tiny.onnx: {len(V1) + 4} bytes, not the {len(V1)} expected; "
                                             "nothing of it was read (the signed manifest's size_bytes: cut short "
                                             "or altered on the way, uplink it again)"),
                      ("fifo", "staging/tiny.ref.npz: not a regular file (a FIFO, a device or a directory)")):
        ok, reason = said[case]
        assert not ok and why in reason, (case, reason)
    assert said["rss_growth_kib"] < 64 * 1024, said["rss_growth_kib"]  # nothing of the terabyte came in
    assert said["installed"] == [True, True]


@pytest.mark.req("MDL-002")
def test_a_file_that_grows_as_it_is_read_is_refused_and_one_gone_is_an_os_error(tmp_path):
    """The bounded read itself: a file longer than it said when opened (here /proc's, which say 0 bytes and give
    more: as a file still being written) is refused, never read on past its size; one gone raises as a file."""
    with pytest.raises(ReadRefused, match=r"grew as it was read \(from 0 bytes\): it is still being written"):
        read_limited(Path("/proc/self/status"), 1 << 20)
    with pytest.raises(FileNotFoundError):
        read_limited(tmp_path / "gone.onnx", 1 << 20)
    (tmp_path / "whole.onnx").write_bytes(b"12345")
    data, st = read_limited(tmp_path / "whole.onnx", 5, expected_bytes=5)
    assert data == b"12345" and st.st_size == 5 and st.st_ino == os.stat(tmp_path / "whole.onnx").st_ino


@pytest.mark.req("MDL-005")
def test_a_version_that_ran_is_not_swapped_automatically_after_a_commanded_rollback_to_it(bench):
    """Found in audit: a commanded rollback to a version that had run jobs puts it on probation; its next job
    failing (NaN), the worker swapped it for the version the operator had just rolled back from, which never
    ran, and took that one off probation. A version that has run a job fails the job instead, and stays."""
    installed(bench, NAN_MODEL, "1")
    bench.data_set("day", RNG_TILES)
    assert bench.infer(1, "day").state.value == "DONE"  # version 1 ran a job
    installed(bench, V2, "2")
    assert bench.rollback().ok  # the operator rejects version 2 before it ever ran
    bench.data_set("night", -RNG_TILES)
    for job_id in (2, 3):  # each failing job fails alone, no rollback tried (a review: a MODEL_REFUSED each,
        failed = bench.infer(job_id, "night")  # every one saying "on its first job")
        assert failed.state.value == "FAILED" and "non-finite outputs" in failed.detail
    assert [e.args["automatic"] for e in bench.events("MODEL_ROLLED_BACK")] == [False]  # only the command's
    assert bench.events("MODEL_REFUSED") == []
    state = bench.worker.store.state("tiny")
    assert (state.active.version, state.fallback.version) == ("1", "2")
    assert bench.rollback().ok and bench.worker.store.state("tiny").active.version == "2"  # the operator still can


@pytest.mark.req("MDL-003", "MDL-002")
def test_a_reference_set_of_strings_is_refused_naming_the_file_and_the_array(bench):
    """Found in audit: a signed reference set whose expected output held strings failed the install with
    "the worker could not handle InstallModel (ValueError: could not convert string to float)", naming
    neither the file nor the array."""
    installed(bench, V1, "1")
    pack(bench.staging, V2, "2")
    reference = npz_bytes({"x": REF_X, "y.probabilities": np.full((len(REF_X), 2), "abc", dtype="U3")})
    (bench.staging / "tiny.ref.npz").write_bytes(reference)
    manifest = resign(bench.staging, "tiny", reference_sha256=sha256_hex(reference))
    reply = bench.install("2", manifest.sha256)
    assert not reply.ok and reply.code == FailureCode.BAD_ARGUMENTS
    assert reply.reason == "staging/tiny.ref.npz: reference set: y.probabilities holds <U3 values, not numbers"
    [refused] = bench.events("MODEL_REFUSED")
    assert refused.args["reason"] == reply.reason
    assert bench.worker.store.state("tiny").active.version == "1"
