"""Start a training campaign: IDLE → COMPUTE, queue a training job, watch it make progress."""

from ground.procedure import equals, greater_than

DATASET = "cloud_tiles_test"
STEPS = 200


def run(proc):
    with proc.step("to COMPUTE, one step at a time"):
        mode = proc.wait_for_telemetry("mode", lambda v: v is not None)
        if mode == "SAFE":
            proc.send_and_wait("SET_MODE", {"mode": "IDLE"})
        if mode != "COMPUTE":
            proc.send_and_wait("SET_MODE", {"mode": "COMPUTE"})
        proc.wait_for_telemetry("mode", equals("COMPUTE"))
    with proc.step("the power manager admits training"):
        proc.wait_for_telemetry("admission", equals("ALL"), timeout_s=max(30, proc.fresh_s()))
        proc.wait_for_telemetry("compute_state", equals("RUNNING"), timeout_s=max(30, proc.fresh_s()))
    with proc.step(f"queue {STEPS} steps on {DATASET}"):
        products = proc.wait_for_telemetry("products", lambda v: v is not None)  # what the board held before
        job = proc.send_and_wait("TRAIN_START", {"dataset": DATASET, "steps": STEPS, "checkpoint_every": 50})
        job_id = job.result["job_id"]
        proc.assert_event("JOB_STARTED", lambda e: e.args["job_id"] == job_id, timeout_s=30)
    with proc.step("it learns"):
        done = proc.assert_event("JOB_DONE", lambda e: e.args["job_id"] == job_id, timeout_s=120,
                                unless=("JOB_FAILED", "JOB_CANCELLED"))
        if f"{STEPS} steps" not in done.args["summary"]:
            raise AssertionError(f"job ended early: {done.args['summary']}")
        proc.wait_for_telemetry("products", greater_than(products))  # the trained model, for downlink
