"""Health check: the agent answers, its dictionary matches, counters and sensors are sane.

SUNLIT_HEALTH_LATE_P99_MS (default 50, the dictionary's warning limit of control_late_p99_ms): how late the
control tick may fire at its 99th percentile, in ms; a bench PC or a shared test machine is no real-time board
(found in CI: eight test workers on two cores made it 176 ms, and a test about what procedures count failed).
"""

import math
import os

from ground.procedure import equals, greater_than, less_than, unmeasured_or, within_range


def _limit_ms(key, default):
    """A limit from the environment, a number of ms above 0: bad input said naming the variable, before anything
    is sent (the procedure is refused as it loads)."""
    text = os.environ.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key}={text!r} is not a number of ms above 0")
    return value


LATE_P99_MS = _limit_ms("SUNLIT_HEALTH_LATE_P99_MS", 50.0)


def _below_85_c(temp_c):
    """from -40 to below 85"""
    return isinstance(temp_c, (int, float)) and -40 <= temp_c < 85


def run(proc):
    with proc.step("link and dictionary"):
        result = proc.send_and_wait("PING", {"token": 4242})
        if result.result.get("token") != 4242:
            raise AssertionError(f"PING echoed {result.result.get('token')}, not 4242")
        proc.wait_for_telemetry("dict_hash", equals(proc.client.dictionary.version_hash))
    with proc.step("command path counts"):
        before = proc.wait_for_telemetry("cmd_executed", lambda v: v is not None)
        proc.send_and_wait("NOOP")
        proc.wait_for_telemetry("cmd_executed", lambda v: v is not None and v >= before + 1)
    with proc.step("no internal errors, no drops (since RESET_COUNTERS: tm_dropped is kept across restarts)"):
        proc.wait_for_telemetry("internal_errors", equals(0))
        proc.wait_for_telemetry("tm_dropped", equals(0))
    with proc.step(f"board load (control tick late by under {LATE_P99_MS:g} ms at its 99th percentile)"):
        proc.wait_for_telemetry("mem_pct", unmeasured_or(within_range(0, 95)))
        proc.wait_for_telemetry("control_late_p99_ms", unmeasured_or(less_than(LATE_P99_MS)))
    with proc.step("temperatures and battery, where measured"):
        proc.wait_for_telemetry("temp_max_c", unmeasured_or(_below_85_c))
        proc.wait_for_telemetry("battery_soc_pct", unmeasured_or(greater_than(30)))
