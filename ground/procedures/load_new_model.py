"""Load a new model: once its file is uplinked to staging/, install it by SHA-256 and prove it runs.

Set SUNLIT_MODEL_FILE (its path on this ground station; default the shipped model, from the repository's
root), SUNLIT_MODEL_NAME and SUNLIT_MODEL_VERSION before running; the file must already be on the
board at STATE_DIR/compute/staging/<SUNLIT_MODEL_NAME>.onnx (file uplink, or deploy/push.sh), with the
rest of its signed package (`sunlit-ground model pack`: NAME.ref.npz, NAME.manifest.json) unless
the agent takes unsigned models ([models] allow_unsigned, a bench only).
"""

import hashlib
import os
from pathlib import Path

MODEL_NAME = os.environ.get("SUNLIT_MODEL_NAME", "cloud_screen_v2")
MODEL_VERSION = os.environ.get("SUNLIT_MODEL_VERSION", "2")
MODEL_FILE = Path(os.environ.get("SUNLIT_MODEL_FILE", "flight/compute/models/cloud_screen.onnx"))


def run(proc):
    with proc.step(f"install {MODEL_NAME} {MODEL_VERSION} by its SHA-256"):
        sha256 = hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
        proc.send_and_wait("MODEL_INSTALL", {"name": MODEL_NAME, "version": MODEL_VERSION, "sha256": sha256})
        proc.assert_event("MODEL_INSTALLED", lambda e: e.args["name"] == MODEL_NAME, timeout_s=30)
    with proc.step("it runs: screen the shipped held-out tiles with it"):
        mode = proc.wait_for_telemetry("mode", lambda v: v is not None)
        if mode == "SAFE":
            proc.send_and_wait("SET_MODE", {"mode": "IDLE"})
        if mode != "COMPUTE":
            proc.send_and_wait("SET_MODE", {"mode": "COMPUTE"})
        job = proc.send_and_wait("INFER_START", {"input_set": "cloud_tiles_test", "model": MODEL_NAME, "priority": 0})
        job_id = job.result["job_id"]
        done = proc.assert_event("JOB_DONE", lambda e: e.args["job_id"] == job_id, timeout_s=60,
                                unless=("JOB_FAILED", "JOB_CANCELLED"))
        if "800 tiles" not in done.args["summary"]:
            raise AssertionError(f"unexpected result: {done.args['summary']}")
