"""What a run's summary and report say compute was and what its work figure counts: one source for
summary.json, report.html and the one-screen report (found in audit: report.html said "real: the
compute worker ran ONNX Runtime" for a real-time run whose compute was modelled)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.scenario import Scenario

# What the work figure counts, in the words the summary and the one-screen report use. Modelled
# and real figures count different things and must never be printed side by side unexplained.
WORK_COUNTS = {
    "real": "real: tiles screened by ONNX Runtime in the worker",
    "modelled": ("modelled: tile-equivalents of the board's modelled throughput; "
                 "INFER_START is refused in modelled mode"),
}
COMPUTE_SAYS = {
    "real": ("real: the agent's compute worker ran ONNX Runtime on the tiles the harness dropped into its "
             "incoming/ directory as the camera would"),
    "modelled": ("modelled: no compute worker ran; the harness counted the board's throughput per power mode "
                 "(tiles_per_s_at_maxn x inference_rel_maxn x the agent's duty)"),
}
MODEL_REFERENCE = ("tile-equivalents: what the board's throughput model gives for the same power modes and duty, "
                   "had it unlimited input (a reference, not work done)")


def compute_account(scenario: "Scenario", body: dict[str, Any]) -> dict[str, Any]:
    """The summary's keys that say whether compute was modelled or real and what the work counts.

    ``compute_mode`` is "real" or "modelled" (from the scenario's ``[compute] real``, whatever
    the time mode); ``compute`` and ``work_counts`` say it in words; with real compute the
    model's figure stays as ``modelled_capacity_tiles``, explained by ``modelled_capacity_counts``.
    """
    mode = "real" if scenario.compute_real else "modelled"
    account: dict[str, Any] = {"compute_mode": mode, "compute": COMPUTE_SAYS[mode], "work_counts": WORK_COUNTS[mode]}
    if mode == "real":
        account["modelled_capacity_counts"] = MODEL_REFERENCE
    else:  # the same number as work_tiles: one figure, said once
        account["modelled_capacity_counts"] = "the same figure as work_tiles (compute was modelled)"
    return account
