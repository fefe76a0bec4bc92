"""End to end, as an operator works: a signed model goes up by CFDP to a real agent (a process with
its compute worker), passes its checks, runs the next job, and that job's products come down by
CFDP with the new model's hash in their header; a model that fails its reference check is not
made active, with an event saying why."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from flight.compute.package import Manifest, ReferenceSet, StagedFiles, sha256_hex
from flight.link.messages import EventRecord
from ground.files import GroundFiles
from ground.model_package import key_from_seed
from tests.samples import SAMPLE_MODEL, SAMPLE_OPERATOR, SAMPLE_OPERATOR_SEED, pack_sample_model, sample_agent_args


def _until(files: GroundFiles, done, timeout_s: float = 60.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        files.client.poll(0.02)
        files.service()
        value = done()
        if value:
            return value
    raise AssertionError("timed out")


def _event(client, name: str, timeout_s: float = 60.0) -> EventRecord:
    for e in client.events:
        if e.event.name == name:
            return e
    return client.wait_for(lambda i: isinstance(i.record, EventRecord) and i.record.event.name == name,
                           timeout_s).record


def _upload(files: GroundFiles, package: Path) -> None:
    records = [files.put(path, f"staging/{path.name}", who=SAMPLE_OPERATOR) for path in sorted(package.iterdir())]
    _until(files, lambda: all(files.find(r.id).settled for r in records))
    assert [files.find(r.id).state for r in records] == ["done"] * len(records), \
        [(files.find(r.id).remote, files.find(r.id).reason) for r in records]


@pytest.mark.system
@pytest.mark.req("FIL-010")
def test_a_model_goes_up_runs_the_next_job_and_its_products_come_down_with_its_hash(
        start_agent, make_client, ipc_url, tmp_path):
    state = tmp_path / "state"
    start_agent(ipc_url, "--bench-supply", "--state-dir", str(state), "--hk-period", "0.5", "--control-period", "0.5",
                *sample_agent_args(tmp_path))
    client = make_client(ipc_url)
    files = GroundFiles(client, tmp_path / "ground")
    assert client.send("SET_MODE", {"mode": "IDLE"}).completed
    assert client.send("SET_MODE", {"mode": "COMPUTE"}).completed

    package = tmp_path / "package"
    package.mkdir()
    pack_sample_model(package, version="2")
    manifest = Manifest.from_bytes((package / StagedFiles.of(SAMPLE_MODEL).manifest).read_bytes())
    _upload(files, package)
    assert {e.args["name"] for e in client.events if e.event.name == "FILE_RECEIVED"} == \
        {f"staging/{p.name}" for p in package.iterdir()}

    installed = client.send("MODEL_INSTALL", {"name": SAMPLE_MODEL, "version": "2", "sha256": manifest.sha256},
                            timeout_s=60)
    assert installed.completed, installed.outcome
    assert installed.result["uplinked_by"] == SAMPLE_OPERATOR

    job = client.send("INFER_START", {"input_set": "cloud_tiles_test", "model": SAMPLE_MODEL, "priority": 1})
    assert job.completed, job.outcome
    job_id = job.result["job_id"]
    client.wait_for(lambda i: isinstance(i.record, EventRecord) and i.record.event.name == "JOB_DONE"
                    and i.record.args["job_id"] == job_id, 120)
    listing = client.send("FILE_LIST", {"directory": "products"}).result["entries"]
    mine = sorted(name for name, _size, _t in listing if name.startswith(f"job{job_id:05d}-"))
    assert [n.rsplit(".", 1)[1] for n in mine] == ["json", "npz"]

    gets = [files.get(f"products/{name}") for name in mine]
    _until(files, lambda: all(files.find(g.id).settled for g in gets), 120)
    assert [files.find(g.id).state for g in gets] == ["done", "done"]
    summary = json.loads((files.area / "downlink" / "products" / mine[0]).read_text())
    assert (summary["model_version"], summary["model_sha256"], summary["model_uplinked_by"]) == \
        ("2", manifest.sha256, SAMPLE_OPERATOR)
    with np.load(files.area / "downlink" / "products" / mine[1]) as npz:
        assert str(npz["model_sha256"]) == manifest.sha256 and len(npz["classes"]) == 800


@pytest.mark.system
@pytest.mark.req("FIL-010")
def test_a_model_that_fails_its_reference_check_on_board_is_not_made_active(start_agent, make_client, ipc_url,
                                                                          tmp_path):
    state = tmp_path / "state"
    start_agent(ipc_url, "--state-dir", str(state), "--hk-period", "0.5", *sample_agent_args(tmp_path))
    client = make_client(ipc_url)
    files = GroundFiles(client, tmp_path / "ground")
    package = tmp_path / "package"
    package.mkdir()
    pack_sample_model(package, version="3")
    staged = StagedFiles.of(SAMPLE_MODEL)
    # The ground expected other outputs (a model trained elsewhere, a packaging mistake), and
    # the operator signed that: only running the model on board can tell.
    ref = ReferenceSet.from_bytes((package / staged.reference).read_bytes())
    wrong = ReferenceSet(ref.x, {k: (v + 0.25).astype(v.dtype) for k, v in ref.outputs.items()}).to_bytes()
    (package / staged.reference).write_bytes(wrong)
    manifest = Manifest.from_bytes((package / staged.manifest).read_bytes())
    body = {**{f: getattr(manifest, f) for f in manifest.__dataclass_fields__}, "reference_sha256": sha256_hex(wrong),
            "signature": ""}
    signed = Manifest(**body).sign(key_from_seed(SAMPLE_OPERATOR_SEED))
    (package / staged.manifest).write_bytes(signed.to_bytes())
    _upload(files, package)

    result = client.send("MODEL_INSTALL", {"name": SAMPLE_MODEL, "version": "3", "sha256": signed.sha256},
                         timeout_s=60)
    assert not result.completed
    failed = _event(client, "MODEL_REFERENCE_FAILED")
    assert failed.args["name"] == SAMPLE_MODEL and failed.args["max_error"] > failed.args["tolerance"]
    values = client.wait_for(lambda i: getattr(i.record, "values", {}).get("model_version") is not None, 30).record.values
    assert values["model_version"] == "1.0"  # the shipped model still runs
