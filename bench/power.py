"""The energy policy over a seeded campaign of generated one-day cases. Prints one JSON object
as its last line.

Cases (``hil/power_cases.py`` says how they are drawn and flown): ``BENCH_POWER_CASES`` (60)
one-day cases from seed ``BENCH_POWER_SEED``: altitudes of 400–800 km, sun-synchronous at
several local times or inclined, sun-tracking or body-fixed arrays under nadir, sun or
inertial attitudes, the three boards, batteries of 20–120 Wh, platform loads with steps the
agent is not told of, starting charges of 45–95 %, and the agent's errors (efficiency off by
up to ±15 %, degradation unknown) and instruments (a fuel gauge of whole percent or tenths, read
each second; solar power as the EPS delivers it, the loads' with the battery full, with 1 % noise;
a battery faded to 80–100 % of the nameplate the agent is configured with, whose gauge reports
the capacity it has learnt within 3 %; cells whose true efficiencies are drawn, the agent assuming
0.95 each way). Each is flown
twice in a 60-s closed loop over the truth:
with the receding-horizon plan (``flight.power.planner``, as the agent runs it) and with
today's rule on the orbit's eclipses (``baseline_*``). The optimum is ``hil/oracle.py`` given
the truth (``hil.power_cases.optimum`` says where it must end); cases where no schedule
keeps the floor are counted (``cases_infeasible``) and left out, and so are cases where an
optimum a ratio is over (the plan's or the baseline's, either ending rule) works less than an hour
of the lowest mode (``cases_little_work``: its only work lies inside the agent's margin above the
floor); their floor violations still count.

- ``work_vs_oracle_min``, ``_p10``, ``_median``: the plan's work over the optimum's, the
  optimum ending at least as full as the agent ended, or as it started where the agent ended
  fuller (``hil/oracle.py``'s rule): a reserve the agent built that day counts as work not
  done (the plan holds the charge it has for ``load_margin_pct``'s reserve, and builds it
  only from energy it did not count on);
- ``same_energy_work_vs_oracle_*``: the same with the optimum always ending at least as full
  as the agent ended: both spend the same energy, and what the agent banked for tomorrow
  counts as the work the optimum made of it;
- ``floor_violation_steps``: 60-s steps below the 30 % floor, summed over all feasible cases;
- ``infeasible_floor_violation_steps``: the same over the cases no schedule keeps the floor in (not
  even idling all day), the plan's and the baseline's: how each goes through a day it cannot win
  (found in audit: these were in no figure);
- ``by_gauge_step_pct``: the plan's figures above, and the feasible cases, for each resolution of the
  agent's fuel gauge;
- ``plan_ms_p99``: one plan's solve time, p99 over every plan of every feasible case (this machine);
  the cases solve with no time limit, where the agent gives HiGHS ``DEFAULT_TIME_LIMIT_S`` (0.2 s)
  and falls back to the rule past it: ``plans_over_flight_limit`` counts the plans here that took longer;
- ``baseline_*``: the same for the rule;
- ``campaign_speedup``: the wall time of ``BENCH_POWER_SPEEDUP_CASES`` (12) of the cases on one
  worker over on two (the same engine; the work per case is the same), the median over
  ``SPEEDUP_PAIRS`` (3) interleaved pairs, which goes first alternating (``campaign_speedup_pairs``:
  each pair's ratio; one unpaired run each before, found in audit).

The cases run on ``sunlit-hil campaign``'s engines (``hil.campaign.run_jobs``): a local process
pool, or Ray with ``BENCH_POWER_ENGINE=ray`` (and ``BENCH_POWER_ADDRESS`` for a cluster).

What the closed loop leaves out (the lockstep HIL flies those): temperature, the 1-s control
period, mode-switch costs.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import numpy as np

from hil.campaign import run_jobs
from hil.power_cases import run_case

N_CASES = int(os.environ.get("BENCH_POWER_CASES", "60"))
SEED = int(os.environ.get("BENCH_POWER_SEED", "2026"))
SPEEDUP_CASES = int(os.environ.get("BENCH_POWER_SPEEDUP_CASES", "12"))
SPEEDUP_PAIRS = 3  # interleaved pairs of runs on one and two workers
WORKERS = int(os.environ.get("BENCH_POWER_WORKERS", str(max(2, os.cpu_count() or 2))))
ENGINE = os.environ.get("BENCH_POWER_ENGINE", "pool")  # or "ray" (BENCH_POWER_ADDRESS: a cluster's)


def _run(seeds: list[int], workers: int) -> tuple[list[dict], float]:
    """The cases as a campaign on ``sunlit-hil campaign``'s engines (hil.campaign.run_jobs)."""
    t0 = time.perf_counter()
    rows: list[dict] = []
    run_jobs(run_case, seeds, rows.append, ENGINE, workers, os.environ.get("BENCH_POWER_ADDRESS") or None)
    return sorted(rows, key=lambda r: r["case"]["seed"]), time.perf_counter() - t0


def _ratios(rows: list[dict], key: str, name: str) -> dict[str, Any]:
    ratios = sorted(r[key] for r in rows if r["feasible"] and not r["little_work"] and r[key] is not None)
    return {
        f"{name}_min": round(ratios[0], 3) if ratios else None,
        f"{name}_p10": round(float(np.percentile(ratios, 10)), 3) if ratios else None,
        f"{name}_median": round(statistics.median(ratios), 3) if ratios else None,
    }


def _figures(rows: list[dict], prefix: str) -> dict[str, Any]:
    return {
        **_ratios(rows, f"{prefix}work_vs_oracle_start", f"{prefix}work_vs_oracle"),
        f"{prefix}floor_violation_steps": int(sum(r[f"{prefix}floor_violation_steps"] for r in rows if r["feasible"])),
        **_ratios(rows, f"{prefix}work_vs_oracle", f"{prefix}same_energy_work_vs_oracle"),
    }


def main() -> dict[str, Any]:
    seeds = [SEED + i for i in range(N_CASES)]
    rows, wall_s = _run(seeds, WORKERS)
    feasible = [r for r in rows if r["feasible"]]
    out: dict[str, Any] = {"cases": N_CASES, "cases_infeasible": N_CASES - len(feasible),
                           "cases_little_work": sum(r["little_work"] for r in feasible), "seed": SEED}
    out.update(_figures(rows, ""))
    infeasible = [r for r in rows if not r["feasible"]]
    out["infeasible_floor_violation_steps"] = {who: int(sum(r[f"{prefix}floor_violation_steps"] for r in infeasible))
                                               for who, prefix in (("plan", ""), ("baseline", "baseline_"))}
    plan_ms = [ms for r in feasible for ms in r["plan_ms"]]
    out["plan_ms_p99"] = round(float(np.percentile(plan_ms, 99)), 2) if plan_ms else None
    out["plans"] = len(plan_ms)
    # Solved here without the flight limit (a case's result must not depend on this machine's load); on a board a
    # solve past it falls back to the rule: how many here would have (found in audit: not said)
    from flight.power.planner import DEFAULT_TIME_LIMIT_S

    out["plans_over_flight_limit"] = sum(ms > DEFAULT_TIME_LIMIT_S * 1000.0 for ms in plan_ms)
    out.update(_figures(rows, "baseline_"))
    # The plan's figures by the agent's gauge: a gauge of whole percent must not cost the floor or the work.
    out["by_gauge_step_pct"] = {str(step): {**_figures([r for r in rows if r["case"]["soc_step_pct"] == step], ""),
                                            "cases": sum(r["case"]["soc_step_pct"] == step for r in feasible)}
                                for step in sorted({r["case"]["soc_step_pct"] for r in rows})}
    judged = [r for r in feasible if not r["little_work"]]
    worst = min(judged, key=lambda r: r["work_vs_oracle_start"]) if judged else None
    if worst is not None:
        c = worst["case"]
        out["worst_case"] = {"seed": c["seed"], "pointing": c["pointing"], "attitude": c["attitude"], "board": c["board"],
                             "capacity_wh": round(c["capacity_wh"], 1), "work_vs_oracle": round(worst["work_vs_oracle_start"], 3),
                             "same_energy_work_vs_oracle": round(worst["work_vs_oracle"], 3),
                             "final_soc_pct": round(worst["final_soc_pct"], 1), "start_soc_pct": round(c["soc0_pct"], 1)}
    subset = seeds[:SPEEDUP_CASES]
    ratios = []
    for pair in range(SPEEDUP_PAIRS):  # interleaved, which goes first alternating: one run each was unpaired
        walls = {}
        for workers in ((1, 2) if pair % 2 == 0 else (2, 1)):
            walls[workers] = _run(subset, workers)[1]
        ratios.append(walls[1] / walls[2])
    out["campaign_speedup"] = round(float(np.median(ratios)), 2)
    out["campaign_speedup_pairs"] = [round(r, 2) for r in ratios]
    out["campaign_wall_s"] = round(wall_s, 1)
    out["workers"] = WORKERS
    out["engine"] = ENGINE
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
