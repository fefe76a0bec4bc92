"""The HIL harness flips bits in the real worker's memory at the profile's upset rate x a scale,
and its report counts them to their end (HIL-022, RAD-111)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenario import ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SSO = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"
# The shipped orbit's first 600 s are far from the SAA (the truth's rate there is ~6e-9 per s):
# this scale makes some ten upsets of them, a stress factor, as the scenario docs say.
SCALE = 2.5e6


def scenario(**radiation):
    return {
        "name": "memory-upsets", "profile": str(SSO), "duration_s": 600, "step_s": 10, "speed": 400, "seed": 3,
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
    sc = parse_scenario(scenario(memory_upset_scale=10.0))
    assert sc.memory_targets == ("weights", "activations", "outputs") and sc.memory_upset_scale == 10.0
