"""The HIL harness flips bits in the real worker's memory at the profile's upset rate x a scale,
and its report counts them to their end (HIL-022, RAD-111)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flight.compute import protocol as cp
from flight.compute.inject import LEDGER, REQUEST_DIR
from flight.compute.usecase.shipped import MODEL_NAME, load_held_out
from flight.link.definitions import Admission, FluxClass
from flight.storage import write_checked_json
from hil.scenario import ScenarioError, parse_scenario
from tests.model_helpers import WorkerBench, protect_as_version_6

ROOT = Path(__file__).resolve().parent.parent
SSO = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"
# The shipped orbit's first 600 s, with the truth's anomaly where AP8 placed it (no drift: moved west,
# its edge leaves this stretch at zero flux), are far from the SAA (the truth's rate there is ~6e-9
# per s): this scale makes some ten upsets of them, a stress factor, as the scenario docs say.
SCALE = 2.5e6
PROFILE: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def undrifted_profile(tmp_path_factory):
    """The shipped SSO profile's first 600 s made again with no drift, for every scenario() here."""
    import dataclasses

    from hil.profiles import read_profile, regenerate, write_profile

    shipped = read_profile(SSO)
    still = {"saa_drift_west_deg_per_yr": 0.0, "saa_drift_north_deg_per_yr": 0.0}
    meta = {**shipped.metadata, "radiation": {**shipped.metadata["radiation"], **still}}
    made = regenerate(dataclasses.replace(shipped, metadata=meta), 600.0)  # the same orbit, craft and stations
    assert made.columns["upset_rate_per_s"].max() > 0.0
    PROFILE["path"] = write_profile(made, tmp_path_factory.mktemp("profile") / "sso.parquet")


def scenario(**radiation):
    return {
        "name": "memory-upsets", "profile": str(PROFILE["path"]), "duration_s": 600, "step_s": 10, "speed": 400,
        "seed": 3,
        "compute": {"real": True, "capture_every_s": 30, "tiles_per_capture": 32},
        "radiation": radiation,
        "commands": [{"at_s": 0, "command": "SET_MODE", "args": {"mode": "IDLE"}},
                     {"at_s": 0, "command": "SET_MODE", "args": {"mode": "COMPUTE"}},
                     {"at_s": 0, "command": "INFER_START", "args": {"input_set": "incoming", "continuous": True}}],
    }


@pytest.mark.system
@pytest.mark.req("HIL-022", "RAD-111")
def test_upsets_in_the_workers_memory_are_asked_applied_and_accounted_for(tmp_path):
    from hil.loop import ClosedLoop
    from hil.report import evaluate, write_report

    sc = parse_scenario(scenario(memory_upset_scale=SCALE))
    result = ClosedLoop(sc, tmp_path / "run").run()
    account = result.memory_upsets
    # Every event in the run's time: the worker's hello, heard before time began, was stamped at a clock of 0
    # (an audit: the report listed COMPUTE_STARTED at -1795478400 s)
    early = [(e["name"], e["t"]) for e in result.events if e["t"] < result.trace.time_s[0] - 1.0]
    assert not early and any(e["name"] == "COMPUTE_STARTED" for e in result.events), early
    asked = sum(account["requested"].values())
    assert asked >= 3 and set(account["requested"]) <= {"weights", "activations", "outputs"}
    totals = account["totals"]
    # Every request the harness wrote is in the worker's ledger, in one state or another.
    for target, n in account["requested"].items():
        t = totals[target]
        assert t["requested"] == n == t["applied"] + t["not_applied"] + t["waiting"], (target, t)
    out = totals.get("outputs")
    if out and out["applied"]:  # a result changed while held is always caught by its CRC and made again
        assert out["detected"] == out["applied"] and out["corrected"] == out["applied"]
        assert out["corrupt_reported_good"] == 0
    batches = account["batches"]
    assert batches["judged"] >= 1 and batches["corrupt_reported_good"] <= batches["corrupt_tiles"]
    # The criterion follows the ledger: one tile reported passed while corrupt fails the run.
    measured = batches["corrupt_reported_good"]
    for good, passes in ((0, True), (1, False)):
        batches["corrupt_reported_good"] = good
        check = {c.name: c for c in evaluate(result)}["no_corrupt_result_reported_good"]
        assert check.passed is passes and f"{good} tiles reported passed while corrupt" in check.detail
    batches["corrupt_reported_good"] = measured
    passed, body = write_report(result, tmp_path / "report")
    assert body["memory_upsets"]["requested"] == account["requested"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Upsets in the worker's memory" in page and "corrupt reported good" in page


@pytest.mark.req("HIL-022")
def test_memory_upsets_need_the_real_worker_and_known_targets():
    with pytest.raises(ScenarioError, match="radiation.memory_upset_scale"):
        parse_scenario({**scenario(memory_upset_scale=1.0), "compute": {"real": False}})
    with pytest.raises(ScenarioError, match="radiation.memory_targets"):
        parse_scenario(scenario(memory_upset_scale=1.0, memory_targets=["cache"]))
    with pytest.raises(ScenarioError, match="radiation.memory_targets"):
        parse_scenario(scenario(memory_upset_scale=1.0, memory_targets=[]))
    with pytest.raises(ScenarioError, match=r"radiation.memory_upset_scale: 1e\+30 is outside \[0, 1e\+09\]"):  # the draws overflow
        parse_scenario(scenario(memory_upset_scale=1e30))
    sc = parse_scenario(scenario(memory_upset_scale=10.0))
    assert sc.memory_targets == ("weights", "activations", "outputs") and sc.memory_upset_scale == 10.0
    sc = parse_scenario(scenario(memory_upset_scale=10.0, memory_targets=["weights", "golden"]))
    assert sc.memory_targets == ("weights", "golden")  # the golden copies, only where asked for


# --- the criterion judges what the worker's ledger says, and fails a run that has nothing to judge --------

QUIET = cp.Radiation(FluxClass.QUIET, False, 10.0, 5700.0, None)
STEP_S = 10  # scenario()'s step
THREE_UPSETS_PER_S = 3.0 / (SCALE * STEP_S)  # a profile rate that makes Poisson(3) upsets in one step


def made_up_run(sc, account):
    """Three steps of a run, made up (no agent), carrying the harness's account of the memory upsets."""
    from hil.loop import RunResult, Trace

    tr = Trace()
    for k in range(3):
        for name, value in [("time_s", 1.8e9 + STEP_S * k), ("soc_pct", 80.0), ("bus_voltage_v", 16.0),
                            ("solar_power_w", 50.0), ("board_power_w", 10.0), ("temp_board_c", 40.0),
                            ("temp_radiator_c", 20.0), ("power_mode", "15W"), ("mode", "COMPUTE"), ("duty", 1.0),
                            ("work", 0.0), ("shadow_factor", 1.0), ("proton_flux_cm2_s", 0.0), ("agent_up", True)]:
            getattr(tr, name).append(value)
    return RunResult(scenario=sc, trace=tr, events=[], faults=[], commands=[], wall_s=0.5, sim_s=20.0,
                     max_lag_ms=None, agent_silences=0, real_tiles=32, notes=[], memory_upsets=account)


def harness_and_worker(tmp_path, targets, abft=True, scrub=True):
    """The harness's loop (not flown) and a real worker with upset injection on the compute directory
    the loop writes its requests into, as the agent's worker would be."""
    from hil.loop import ClosedLoop

    loop = ClosedLoop(parse_scenario(scenario(memory_upset_scale=SCALE, memory_targets=targets)), tmp_path / "run")
    bench = WorkerBench(tmp_path / "run" / "state" / "compute", allow_unsigned=True, upset_injection=True)
    bench.worker.install_shipped_models()
    bench.worker._handle(cp.Admit(Admission.ALL, 1, 16, 1.0, None, "test", radiation=QUIET,  # noqa: SLF001
                                  double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=scrub,
                                  abft_checks=abft))
    bench.data_set("held", load_held_out().tiles[:32].astype(np.float32))
    return loop, bench


def restarted(bench, abft=True, scrub=True) -> None:
    """A new worker process on the same compute directory, admitted as the first was."""
    bench.restart()
    bench.worker._handle(cp.Admit(Admission.ALL, 1, 16, 1.0, None, "test", radiation=QUIET,  # noqa: SLF001
                                  double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=scrub,
                                  abft_checks=abft))


def judged(loop, bench=None, job_id=1):
    """The worker runs a job on the upsets asked (if there is a worker); the criterion on the loop's account."""
    from hil.report import evaluate, summary

    if bench is not None:
        job = bench.infer(job_id, "held", model=MODEL_NAME)
        assert job.state.value == "DONE", job.detail
        bench.close()
    result = made_up_run(loop.sc, loop._memory_account())  # noqa: SLF001
    checks = evaluate(result)
    return {c.name: c for c in checks}["no_corrupt_result_reported_good"], result, summary(result, checks)


@pytest.mark.req("HIL-022")
def test_upsets_asked_for_with_no_ledger_from_the_worker_fail_the_criterion(tmp_path):
    from hil.loop import ClosedLoop

    loop = ClosedLoop(parse_scenario(scenario(memory_upset_scale=SCALE)), tmp_path / "run")
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001 - asked; no worker takes them
    asked = sum(loop.memory_requested.values())
    assert asked >= 1
    check, result, _ = judged(loop)
    assert not check.passed and f"{asked} asked for, but no ledger from the worker" in check.detail
    assert "0 tiles reported passed while corrupt" in check.detail  # which alone would have passed
    assert "cannot be read" in result.memory_upsets["ledger_error"]  # the loop says why it has no ledger
    # The scale asks for upsets but the rate over the run drew none: nothing was tested either.
    loop = ClosedLoop(parse_scenario(scenario(memory_upset_scale=SCALE)), tmp_path / "quiet")
    loop._memory_upsets({"upset_rate_per_s": 0.0}, 0.0)  # noqa: SLF001
    check, _, _ = judged(loop)
    assert not check.passed and "the harness drew none" in check.detail


@pytest.mark.req("HIL-022", "RAD-111")
def test_upsets_asked_for_and_none_applied_fail_the_criterion_with_the_reason(tmp_path):
    # Without owned weights (weights_scrub off) there is nowhere for a weight upset to land.
    loop, bench = harness_and_worker(tmp_path, ["weights"], scrub=False)
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    asked = sum(loop.memory_requested.values())
    check, result, _ = judged(loop, bench)
    weights = result.memory_upsets["totals"]["weights"]
    assert asked >= 1 and (weights["requested"], weights["applied"], weights["not_applied"]) == (asked, 0, asked)
    assert not check.passed and f"{asked} asked for, none applied" in check.detail
    assert "not buffers the worker owns" in check.detail  # the worker's reason, from its ledger


@pytest.mark.req("HIL-022", "RAD-111")
def test_a_run_of_golden_copy_upsets_alone_is_judged_by_the_scrub_not_by_batches(tmp_path):
    """No result reads a golden copy, so no batch is judged for one; such a run is not failed as having
    tested nothing: it says how many the scrub put right."""
    loop, bench = harness_and_worker(tmp_path, ["golden"])
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    asked = loop.memory_requested["golden"]
    job = bench.infer(1, "held", model=MODEL_NAME)  # takes them in and strikes them
    assert job.state.value == "DONE", job.detail
    bench.worker._scrub_now(bench.worker._session(MODEL_NAME))  # noqa: SLF001 - every copy checked and voted
    bench.close()
    check, result, _ = judged(loop)
    golden = result.memory_upsets["totals"]["golden"]
    assert asked >= 1 and (golden["applied"], golden["corrected"], golden["harmful"]) == (asked, asked, 0)
    assert result.memory_upsets["batches"].get("judged", 0) == 0
    assert check.passed and f"{asked} in the golden copies, {asked} found and put right" in check.detail


@pytest.mark.req("HIL-022")
def test_golden_copy_upsets_do_not_stand_in_for_batches_nor_pass_a_run_the_scrub_found_none_of():
    """Found in review: activations asked for and never struck (no batch ran), golden ones applied, passed;
    and golden ones alone that no scrub reached (it checks one copy a pass) passed too."""
    from hil.report import corrupt_results_check

    sc = parse_scenario(scenario(memory_upset_scale=SCALE, memory_targets=["activations", "golden"]))
    golden = {"requested": 2, "applied": 2, "detected": 2, "corrected": 2}
    account = {"scale": SCALE, "targets": ["activations", "golden"], "requested": {"activations": 1, "golden": 2},
               "not_written": 0, "per_step_max": 1000, "batches": {"judged": 0},
               "totals": {"activations": {"requested": 1, "waiting": 1}, "golden": golden}}
    check = corrupt_results_check(made_up_run(sc, account))
    assert not check.passed and "no batch ran while one was live" in check.detail
    account = {**account, "requested": {"golden": 2}, "totals": {"golden": {**golden, "detected": 0}}}
    check = corrupt_results_check(made_up_run(sc, account))
    assert not check.passed and "none found by the scrub" in check.detail
    account["totals"]["golden"]["detected"] = 2
    check = corrupt_results_check(made_up_run(sc, account))
    assert check.passed and "2 in the golden copies, 2 found and put right" in check.detail


@pytest.mark.req("HIL-022", "RAD-111")
def test_a_run_whose_upsets_were_applied_and_none_reported_good_passes_as_before(tmp_path):
    loop, bench = harness_and_worker(tmp_path, ["outputs"])  # each caught by its CRC and made again
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    check, result, body = judged(loop, bench)
    applied = result.memory_upsets["totals"]["outputs"]["applied"]
    assert applied >= 1 and check.passed, check.detail
    assert check.detail.startswith(f"{applied} upsets in the worker's memory, {applied} detected; 0 tiles reported "
                                   f"passed while corrupt; 0 corrupt tiles unchecked")
    assert body["corrupt_results_unchecked"] == 0


@pytest.mark.req("HIL-022", "RAD-111")
def test_with_checks_off_corrupt_tiles_are_counted_as_unchecked_not_dropped(tmp_path):
    loop, bench = harness_and_worker(tmp_path, ["activations"], abft=False)
    # A flip no check could see even with checks on (the head's input): its tiles are corrupt.
    write_checked_json(bench.root / REQUEST_DIR / "u000001.json", {"target": "activations", "seed": 7,
                                                                    "tensor": "z", "bit": 30})
    loop.memory_requested["activations"] = 1
    check, result, body = judged(loop, bench)
    unchecked = result.memory_upsets["batches"]["corrupt_unchecked"]
    assert unchecked >= 1 and result.memory_upsets["batches"]["corrupt_reported_good"] == 0
    assert check.passed and f"0 tiles reported passed while corrupt; {unchecked} corrupt tiles unchecked" in check.detail
    assert body["corrupt_results_unchecked"] == unchecked


@pytest.mark.req("HIL-022", "RAD-111")
def test_upsets_applied_with_no_batch_run_while_live_fail_the_criterion(tmp_path):
    loop, bench = harness_and_worker(tmp_path, ["weights"])
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    bench.worker._session(MODEL_NAME)  # noqa: SLF001 - its owned weights, where they land
    bench.worker.scrub_tick(0.0)  # taken in and applied; no job runs on them
    bench.close()
    check, result, _ = judged(loop)
    assert result.memory_upsets["totals"]["weights"]["applied"] >= 1, result.memory_upsets
    assert result.memory_upsets["batches"]["judged"] == 0
    assert not check.passed and "no batch ran while one was live" in check.detail


@pytest.mark.req("HIL-022", "RAD-111")
def test_a_worker_restart_carries_the_ledger_on_and_its_corrupt_results_still_fail_the_run(tmp_path, monkeypatch):
    """A reboot, the watchdog or a crash starts a new worker: it takes up the ledger its predecessor
    wrote. Before, its first change wrote over it, and the corrupt tile reported good was lost to
    the report (the run passed)."""
    loop, bench = harness_and_worker(tmp_path, ["activations"], abft=True)
    # A flip no check can see (the model's output, after the last checked node, in a model protected as
    # version 6 did): its tile is reported good while corrupt.
    protect_as_version_6(monkeypatch)
    write_checked_json(bench.root / REQUEST_DIR / "u000001.json", {"target": "activations", "seed": 7,
                                                                    "tensor": "probabilities", "bit": 30})
    loop.memory_requested["activations"] = 1
    assert bench.infer(1, "held", model=MODEL_NAME).state.value == "DONE"
    restarted(bench)  # a new worker process on the same compute directory
    write_checked_json(bench.root / REQUEST_DIR / "u000002.json", {"target": "outputs", "seed": 3, "bit": 30})
    loop.memory_requested["outputs"] = 1
    check, result, _ = judged(loop, bench, job_id=2)
    account = result.memory_upsets
    assert account["restarts"] == 1 and sum(t["requested"] for t in account["totals"].values()) == 2
    assert account["batches"]["corrupt_reported_good"] >= 1 and not check.passed
    assert "worker restart" in check.detail


@pytest.mark.req("HIL-022", "RAD-111")
def test_a_ledger_found_corrupt_at_a_restart_is_moved_aside_and_fails_the_run_naming_it(tmp_path, monkeypatch):
    """Found in audit: a corrupt ledger was written over at the next change, its corrupt tiles lost, and
    the run failed on "asked for and in no ledger", which named the wrong cause."""
    loop, bench = harness_and_worker(tmp_path, ["outputs"], abft=True)
    write_checked_json(bench.root / REQUEST_DIR / "u000001.json", {"target": "outputs", "seed": 7, "bit": 30})
    loop.memory_requested["outputs"] = 1
    assert bench.infer(1, "held", model=MODEL_NAME).state.value == "DONE"
    path = bench.root / REQUEST_DIR / LEDGER
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x08
    path.write_bytes(bytes(raw))
    restarted(bench)
    write_checked_json(bench.root / REQUEST_DIR / "u000002.json", {"target": "outputs", "seed": 3, "bit": 30})
    loop.memory_requested["outputs"] = 2
    check, result, _ = judged(loop, bench, job_id=2)
    assert (bench.root / REQUEST_DIR / f"{LEDGER}.corrupt").exists()
    assert result.memory_upsets["ledgers_lost"] == 1 and not check.passed
    assert "ledger found corrupt" in check.detail


@pytest.mark.req("HIL-022")
def test_upsets_the_harness_could_not_account_for_fail_the_run(tmp_path):
    """Asked for and in no ledger (a request lost), refused by the worker over its limit, or drawn past
    what the harness writes a step: each fails the criterion, as a corrupt result reported good does."""
    from hil.loop import MAX_MEMORY_UPSETS_PER_STEP, ClosedLoop

    loop, bench = harness_and_worker(tmp_path, ["outputs"])
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    loop.memory_requested["outputs"] += 2  # two the worker never saw: their files are gone
    check, result, _ = judged(loop, bench)
    assert not check.passed and "2 asked for and in no ledger" in check.detail, check.detail
    loop = ClosedLoop(parse_scenario(scenario(memory_upset_scale=SCALE)), tmp_path / "many")
    loop._memory_upsets({"upset_rate_per_s": 100 * MAX_MEMORY_UPSETS_PER_STEP / (SCALE * STEP_S)}, 0.0)  # noqa: SLF001
    assert sum(loop.memory_requested.values()) == MAX_MEMORY_UPSETS_PER_STEP
    assert loop.memory_not_written > 50 * MAX_MEMORY_UPSETS_PER_STEP  # a Poisson draw near 100,000, not ~745
    account = loop._memory_account()  # noqa: SLF001
    assert account["not_written"] == loop.memory_not_written and account["unread"] == MAX_MEMORY_UPSETS_PER_STEP


@pytest.mark.req("HIL-022")
def test_upsets_the_worker_never_took_fail_the_run_unless_the_run_just_ended(tmp_path):
    """Found in review: requests still on disk were subtracted from the lost ones and failed nothing,
    so a worker that stopped taking them (hung, gone) lost every later upset and the run passed."""
    import os
    import time

    from hil.loop import INJECT_DIR, UNREAD_GRACE_S
    from hil.report import evaluate

    loop, bench = harness_and_worker(tmp_path, ["outputs"])
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    assert bench.infer(1, "held", model=MODEL_NAME).state.value == "DONE"
    bench.close()  # the worker is gone: what follows is never taken
    for k in range(1, 4):
        loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 10.0 * k)  # noqa: SLF001

    def check():
        result = made_up_run(loop.sc, loop._memory_account())  # noqa: SLF001
        return {c.name: c for c in evaluate(result)}["no_corrupt_result_reported_good"]

    assert check().passed, check().detail  # written just now: the run may simply have ended first
    waiting = list((tmp_path / "run" / "state" / "compute" / INJECT_DIR).glob("u*.json"))
    assert waiting
    then = time.time() - 2 * UNREAD_GRACE_S
    for path in waiting:
        os.utime(path, (then, then))
    late = check()
    assert not late.passed and f"{len(waiting)} never taken by the worker" in late.detail, late.detail


def test_the_harness_poisson_draws_have_the_mean_asked_at_any_rate():
    """The product method topped out near 745 draws whatever the mean (exp(-lam) underflows): a
    scale asking for more was silently under-drawn."""
    import random

    from hil.loop import _poisson

    rng = random.Random(5)
    for lam in (3.0, 400.0, 800.0, 20_000.0):
        mean = sum(_poisson(rng, lam) for _ in range(200)) / 200
        assert abs(mean - lam) < 5 * (lam / 200) ** 0.5 + 0.5, (lam, mean)


@pytest.mark.req("HIL-022")
def test_a_request_file_left_on_disk_after_its_ledger_listed_it_is_not_counted_twice(tmp_path):
    """A worker killed between writing its ledger and removing the request files (or a file it
    could not remove) leaves files the ledger lists: they are neither unread nor lost."""
    loop, bench = harness_and_worker(tmp_path, ["outputs"])
    loop._memory_upsets({"upset_rate_per_s": THREE_UPSETS_PER_S}, 0.0)  # noqa: SLF001
    names = sorted(p.name for p in (bench.root / REQUEST_DIR).glob("u*.json"))
    assert bench.infer(1, "held", model=MODEL_NAME).state.value == "DONE"
    bench.close()
    for name in names:  # back on disk, as if their removal had failed
        write_checked_json(bench.root / REQUEST_DIR / name, {"target": "outputs", "seed": 1})
    check, result, _ = judged(loop)
    assert result.memory_upsets["unread"] == 0 and check.passed, check.detail


@pytest.mark.req("RAD-111")
def test_upsets_on_one_byte_are_right_again_only_when_the_byte_is_as_before_the_first(tmp_path):
    """Found in audit: each upset took the byte as it found it: a second flip of the same bit ended the first as put
    right by a scrub that never ran and left the second live for ever (every batch judged); on another bit, the
    first ended at the scrub and the second never. Flips that undo each other end both, found by nothing; two
    that do not end both when the scrub puts the byte back."""
    from flight.storage import read_checked_json

    bench = WorkerBench(tmp_path / "compute", allow_unsigned=True, upset_injection=True)
    try:
        bench.worker.install_shipped_models()
        bench.worker._handle(cp.Admit(Admission.ALL, 1, 16, 1.0, None, "test", radiation=QUIET,  # noqa: SLF001
                                      double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=True,
                                      abft_checks=True))
        session = bench.worker._session(MODEL_NAME)  # noqa: SLF001
        requests = bench.root / REQUEST_DIR
        for name, byte, bit in (("u1", 5, 3), ("u2", 5, 3), ("u3", 9, 1), ("u4", 9, 6)):
            write_checked_json(requests / f"{name}.json", {"seed": 7, "target": "weights", "tensor": "w1",
                                                           "byte": byte, "bit": bit})
        bench.worker.scrub_tick(0.0)
        bench.worker._scrub_now(session)  # noqa: SLF001 - puts byte 9 back
        bench.worker.scrub_tick(100.0)
        upsets = {u["id"]: u for u in read_checked_json(requests / LEDGER)["upsets"]}
        assert all(u["state"] == "ended" and u["corrected"] for u in upsets.values()), upsets
        assert upsets["u1"]["detected_by"] == upsets["u2"]["detected_by"] == ""
        assert upsets["u3"]["detected_by"] == upsets["u4"]["detected_by"] == "scrub"
        assert not bench.worker._injector.live()  # noqa: SLF001
    finally:
        bench.close()
