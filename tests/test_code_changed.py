"""Software updated under a running agent (install.sh or push.sh replace the code in place): a worker of the new
code never speaks to the old agent (found in audit: the next worker a running agent started, after a crash or a
SAFE recovery, was the new code, and nothing checked the two spoke the same messages)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import flight.compute.protocol as cp
from flight.link.definitions import ComputeState
from tests.inproc import InProcessAgent


@pytest.mark.req("DEP-005")
def test_a_worker_of_other_code_exits_at_start_and_saying_why(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flight.compute.worker", "--endpoint", "ipc:///nowhere",
                           "--root", str(tmp_path), "--agent-code", "0123456789ab-0123456789abcdef"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == cp.CODE_CHANGED_EXIT
    assert "updated under the running agent" in done.stderr and cp.CODE_ID in done.stderr
    assert not (tmp_path / ".worker.lock").exists()  # it left before taking the directory


@pytest.mark.req("DEP-005", "CMP-012")
def test_the_agent_starts_no_other_worker_and_its_compute_commands_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(cp, "CODE_ID", "0123456789ab-0123456789abcdef")  # the code this agent read, before an update
    rig = InProcessAgent(tmp_path / "state", compute_enabled=True, allow_unsigned_models=True)
    try:
        deadline = time.monotonic() + 90.0
        while not rig.events("COMPUTE_CODE_CHANGED"):
            assert time.monotonic() < deadline, "the worker's refusal was not said"
            rig.advance(0.05, 0.05)
            time.sleep(0.05)
        compute = rig.agent.compute
        rig.advance(30.0)  # past the watchdog: nothing restarted, nothing counted as a hang
        assert compute.state is ComputeState.DOWN and compute.restarts == 0 and compute.proc.poll() is not None
        assert not rig.events("COMPUTE_HUNG") and not rig.events("COMPUTE_STARTED")
        assert len(rig.events("COMPUTE_CODE_CHANGED")) == 1
        refused = rig.send("INFER_START", input_set="cloud_tiles_test")
        assert refused.failed and "updated under it; restart the agent" in refused.failure.reason
    finally:
        rig.close()


@pytest.mark.req("DEP-005", "AGT-030")
def test_the_code_id_changes_with_the_codec_as_with_the_records(tmp_path, monkeypatch):
    """An update of flight/records.py alone (the wire form both ends must share) gives the worker another CODE_ID,
    so a new worker is not taken by an old agent (found in audit: the id covered protocol.py and the dictionary
    only)."""
    from flight import records

    assert cp._code_id() == cp.CODE_ID
    changed = tmp_path / "records.py"
    changed.write_bytes(Path(records.__file__).read_bytes().replace(b"return value.value", b"return value.name"))
    monkeypatch.setattr(records, "__file__", str(changed))
    other = cp._code_id()
    assert other != cp.CODE_ID
    assert other.split("-")[1] == cp.CODE_ID.split("-")[1]  # the dictionary is the same
