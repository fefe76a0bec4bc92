"""Agent footprint. Prints one JSON object as its last line.

- ``idle_cpu_pct``: the agent idle (SAFE, linux backend, 1 Hz housekeeping and control),
  CPU time over wall time for one core, from /proc/PID/stat over ``BENCH_AGENT_IDLE_S`` (target < 1).
- ``rss_mb``: its resident memory at the end of that window (target < 120).
- ``loop_jitter_p99_ms``: a second agent with the control loop at 10 Hz; the agent's own
  measure of how late its control timer fires (``control_late_p99_ms`` in housekeeping,
  over its last 600 ticks), after ``BENCH_AGENT_JITTER_S`` (target < 5).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from flight.link.messages import HkRecord
from ground.client import GroundClient
from hil.agent_process import AgentProcess, free_tcp_port_pair

IDLE_S = float(os.environ.get("BENCH_AGENT_IDLE_S", "30"))
JITTER_S = float(os.environ.get("BENCH_AGENT_JITTER_S", "65"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def _start(tmp: str, name: str, *args: str) -> tuple[AgentProcess, GroundClient]:
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    agent = AgentProcess(url, Path(tmp) / f"{name}.log", ["--hal", "linux", "--state-dir", f"{tmp}/{name}", *args]).start()
    client = GroundClient(url)
    if not client.dictionary_matches(timeout_s=30):
        raise RuntimeError(f"agent {name} did not come up:\n{agent.log()}")
    return agent, client


def main() -> int:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        agent, client = _start(tmp, "idle", "--hk-period", "1", "--control-period", "1")
        try:
            time.sleep(3)  # let start-up settle (imports, first reads)
            pid = agent.proc.pid
            c0, t0 = _cpu_s(pid), time.monotonic()
            time.sleep(IDLE_S)  # the agent idles; this process only watches
            c1, t1 = _cpu_s(pid), time.monotonic()
            out["idle_cpu_pct"] = round(100.0 * (c1 - c0) / (t1 - t0), 3)
            out["rss_mb"] = round(_rss_mb(pid), 1)
        finally:
            client.close()
            agent.stop()
        agent, client = _start(tmp, "jitter", "--hk-period", "1", "--control-period", "0.1")
        try:
            deadline = time.monotonic() + JITTER_S
            late = None
            while time.monotonic() < deadline:
                for item in client.poll(1.0):
                    if isinstance(item.record, HkRecord) and "control_late_p99_ms" in item.record.values:
                        late = item.record.values["control_late_p99_ms"]
            out["loop_jitter_p99_ms"] = late
            out["control_period_s"] = 0.1
        finally:
            client.close()
            agent.stop()
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
