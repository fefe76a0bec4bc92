"""CPU load and memory use from ``/proc``, the same on a Jetson and on any Linux PC.

Parsing (pure, text in, numbers out) is kept apart from reading the files, so the numbers
can be checked against hand-written samples.

``/proc/stat`` counts CPU time since boot in USER_HZ ticks; load over an interval is the
busy share of the ticks that passed between two samples (proc(5)). ``/proc/meminfo`` gives
``MemAvailable``, the kernel's own estimate of memory that can be had without swapping
(since Linux 3.14, proc(5)); used = total - available.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate ``cpu`` line of /proc/stat: busy and total ticks since boot."""

    busy_ticks: int
    total_ticks: int


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line. Counts user nice system idle iowait irq softirq steal;
    guest and guest_nice are left out because the kernel already counts them in user and
    nice (proc(5)). idle and iowait are the idle ticks."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                ticks = [int(f) for f in fields[1:9]]
            except ValueError:
                raise ValueError(f"/proc/stat cpu line has a non-integer field: {line!r}") from None
            if len(ticks) < 4:
                raise ValueError(f"/proc/stat cpu line has {len(ticks)} fields, expected at least 4: {line!r}")
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            total = sum(ticks)
            return CpuTimes(busy_ticks=total - idle, total_ticks=total)
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


def cpu_pct_between(before: CpuTimes, after: CpuTimes) -> float | None:
    """Busy share of the ticks between two samples, 0..100; None if no tick passed (or the
    counters went back, as after a CPU is taken offline)."""
    total = after.total_ticks - before.total_ticks
    if total <= 0:
        return None
    busy = after.busy_ticks - before.busy_ticks
    return min(100.0, max(0.0, 100.0 * busy / total))


def parse_meminfo_pct(text: str) -> float:
    """Percent of RAM in use: 100 * (MemTotal - MemAvailable) / MemTotal. Kernels before
    3.14 lack MemAvailable; then MemFree + Buffers + Cached stands in for it."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[key.strip()] = int(parts[0])
    total = kb.get("MemTotal")
    if not total:
        raise ValueError("/proc/meminfo has no MemTotal (or it is 0)")
    if "MemAvailable" in kb:
        available = kb["MemAvailable"]
    elif "MemFree" in kb:
        available = kb["MemFree"] + kb.get("Buffers", 0) + kb.get("Cached", 0)
    else:
        raise ValueError("/proc/meminfo has neither MemAvailable nor MemFree")
    return min(100.0, max(0.0, 100.0 * (total - available) / total))


class ProcSampler:
    """Reads CPU load and memory use under ``proc_dir``, keeping the previous /proc/stat
    sample so each call reports the load since the call before."""

    def __init__(self, proc_dir: Path):
        self.proc_dir = Path(proc_dir)
        self._previous: CpuTimes | None = None
        self.first_note: str | None = None  # the last sample was the first: no load yet (a note, not a fault)

    def sample(self) -> tuple[float | None, float | None, list[str]]:
        """(cpu_pct, mem_pct, missing). The first call has no cpu_pct: load needs two samples; that is said in
        :attr:`first_note`, not in ``missing`` (found in audit: every boot of a healthy board said SENSOR_MISSING
        for cpu_pct, and SENSOR_RESTORED a minute later)."""
        self.first_note = None
        missing: list[str] = []
        cpu_pct: float | None = None
        stat_path = self.proc_dir / "stat"
        try:
            now = parse_proc_stat(stat_path.read_text())
        except (OSError, ValueError) as exc:
            missing.append(f"cpu_pct: cannot read {stat_path}: {exc}")
        else:
            if self._previous is None:
                self.first_note = "cpu_pct: first /proc/stat sample; load needs a second read"
            else:
                cpu_pct = cpu_pct_between(self._previous, now)
                if cpu_pct is None:
                    # No numbers in the text: the same condition must read the same every
                    # time, so whoever reports changes in `missing` is not flooded.
                    missing.append("cpu_pct: no CPU ticks passed since the last read; read less often")
            self._previous = now
        mem_pct: float | None = None
        meminfo_path = self.proc_dir / "meminfo"
        try:
            mem_pct = parse_meminfo_pct(meminfo_path.read_text())
        except (OSError, ValueError) as exc:
            missing.append(f"mem_pct: cannot read {meminfo_path}: {exc}")
        return cpu_pct, mem_pct, missing
