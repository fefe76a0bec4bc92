"""Fly one scenario and say how it went: what ``sunlit-hil run`` and ``make demo`` share."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def progress_bar(label: str):
    """A progress callback drawing on stderr (only when it is a terminal, to keep CI logs clean)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=label, unit="‰", leave=False, file=sys.stderr)

    def update(fraction: float) -> None:
        target = int(fraction * 1000)
        if target > bar.n:
            bar.update(target - bar.n)
            if target >= 1000:
                bar.close()

    return update


def run_scenario(path: Path, report_dir: Path, quiet: bool = False) -> tuple[bool, dict]:
    from hil.loop import ClosedLoop
    from hil.report import write_report
    from hil.scenario import load_scenario

    scenario = load_scenario(path)
    with tempfile.TemporaryDirectory(prefix="sunlit-hil-", dir="/tmp") as tmp:
        loop = ClosedLoop(scenario, Path(tmp), progress=None if quiet else progress_bar(scenario.name))
        result = loop.run()
        passed, body = write_report(result, report_dir)
        log = Path(tmp) / "agent.log"
        if log.exists():
            (Path(report_dir) / "agent.log").write_text(log.read_text(errors="replace"))
    return passed, body


def one_screen(body: dict, report_dir: Path) -> str:
    lines = [
        f"{body['scenario']}: {'PASS' if body['passed'] else 'FAIL'}   ({body['time_mode']}, compute {body['compute']})",
        f"  {body['sim_s']:.0f} simulated s in {body['wall_s']:.1f} wall s (x{body['speedup']})",
        f"  charge min {body['soc_min_pct']:.1f} %, end {body['soc_end_pct']:.1f} %; hottest {body['temp_max_c']:.1f} °C",
        (f"  real inference: {body['work_tiles']:.0f} tiles screened by ONNX Runtime "
         f"(modelled capacity {body['modelled_capacity_tiles']:.0f})" if body.get("real_tiles") is not None
         else f"  work {body['work_tiles']:.0f} tiles (modelled)"),
        f"  {len(body['faults'])} faults, {len(body['commands'])} commands, {body['events']} events",
    ]
    for c in body["checks"]:
        lines.append(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
    lines.append(f"  report: {Path(report_dir).resolve() / 'report.html'}")
    return "\n".join(lines)
