"""Health check: the agent answers, its dictionary matches, counters and sensors are sane."""

from ground.procedure import equals, greater_than, less_than, unmeasured_or, within_range


def _below_85_c(temp_c):
    """from -40 to below 85"""
    return isinstance(temp_c, (int, float)) and -40 <= temp_c < 85


def run(proc):
    with proc.step("link and dictionary"):
        result = proc.send_and_wait("PING", {"token": 4242})
        if result.result.get("token") != 4242:
            raise AssertionError(f"PING echoed {result.result.get('token')}, not 4242")
        proc.wait_for_telemetry("dict_hash", equals(proc.client.dictionary.version_hash), timeout_s=10)
    with proc.step("command path counts"):
        before = proc.wait_for_telemetry("cmd_executed", lambda v: v is not None)
        proc.send_and_wait("NOOP")
        proc.wait_for_telemetry("cmd_executed", lambda v: v is not None and v >= before + 1)
    with proc.step("no internal errors, no drops (since RESET_COUNTERS: tm_dropped is kept across restarts)"):
        proc.wait_for_telemetry("internal_errors", equals(0))
        proc.wait_for_telemetry("tm_dropped", equals(0))
    with proc.step("board load"):
        proc.wait_for_telemetry("mem_pct", unmeasured_or(within_range(0, 95)))
        proc.wait_for_telemetry("control_late_p99_ms", unmeasured_or(less_than(50)))
    with proc.step("temperatures and battery, where measured"):
        proc.wait_for_telemetry("temp_max_c", unmeasured_or(_below_85_c))
        proc.wait_for_telemetry("battery_soc_pct", unmeasured_or(greater_than(30)))
