"""The run's verdict: pass/fail criteria, a JSON summary, JUnit XML for CI, an HTML report with plots."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from flight.compute.inject import CONSEQUENCE
from flight.storage import fsync_path, write_atomic
from hil.accounting import compute_account
from hil.faults import FaultVerdict, idle_in_safe, judge, timeline_of
from hil.loop import MAX_DRAWN_FAULTS_PER_STEP, RunResult
from hil.scenario import Scenario


ENVIRONMENT = ("simulated by the HIL harness: battery, solar input, temperatures and radiation are models, and so is "
               "the board's power draw (the board profile's idle and loaded power of the agent's power mode and duty, "
               "never measured: the agent reads the harness's figure through its sim backend, whatever machine it "
               "and its compute worker run on)")
"""What the summary and report.html say the harness modelled (found in audit: they said nothing of the board's power,
which is the board profile's, whatever the compute)."""
REPORT_FILES = ("summary.json", "junit.xml", "report.html", "trace.npz", "agent.log")
"""What a run writes into its report directory; an earlier run's are removed before a run (hil/run.py)."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def work_done(result: RunResult) -> float:
    """Tiles the agent got through: the real worker's count when compute was real, else the model's."""
    if result.scenario.compute_real:
        return float(result.real_tiles or 0)
    work = result.trace.work
    return float(work[-1]) if work else 0.0


def fault_verdicts(result: RunResult) -> list[FaultVerdict]:
    """Each fault of the run judged against what it owes (hil/faults.py)."""
    if not result.faults or not len(result.trace.time_s):
        return []
    return judge(result.faults, timeline_of(result))


def _no_value(values: np.ndarray) -> str:
    """What a check says of the steps whose value is NaN, which no comparison judges ('' if none): found in audit,
    a trace whose charge was NaN passed charge_above_floor ("lowest charge nan %, 0 steps below")."""
    n = int(np.isnan(values).sum()) if values.dtype.kind == "f" else 0
    return f"; {n} steps with no value (NaN), not judged: the run fails on them" if n else ""


def evaluate(result: RunResult, verdicts: list[FaultVerdict] | None = None) -> list[Check]:
    sc, tr = result.scenario, result.trace.arrays()
    crit = sc.criteria
    checks: list[Check] = []
    if crit.charge_floor_pct is not None:
        low = float(np.nanmin(tr["soc_pct"])) if not np.isnan(tr["soc_pct"]).all() else float("nan")
        below = int((tr["soc_pct"] < crit.charge_floor_pct).sum())
        nan = _no_value(tr["soc_pct"])
        checks.append(Check("charge_above_floor", below == 0 and not nan,
                            f"lowest charge {low:.1f} % (floor {crit.charge_floor_pct} %), {below} steps below{nan}"))
    # Always on: an empty battery is a brownout of the whole bus, whatever the criteria (an audit: a run whose
    # battery sat at 0 % for 98 steps, the board still working, passed on minimum work alone)
    if len(tr["unserved_wh"]) and _no_value(tr["unserved_wh"]):
        checks.append(Check("battery_never_empty", False, "the battery's energy not supplied is unknown"
                            + _no_value(tr["unserved_wh"])))
    elif len(tr["unserved_wh"]) and tr["unserved_wh"][-1] > 0.0:
        first = int(np.argmax(tr["unserved_wh"] > 0.0))
        steps = int((np.diff(tr["unserved_wh"]) > 0.0).sum())
        checks.append(Check("battery_never_empty", False,
                            f"the battery ran empty: {tr['unserved_wh'][-1]:.2f} Wh not supplied (bus side) in {steps} "
                            "steps, "
                            f"the first ending at {tr['time_s'][first] - tr['time_s'][0]:.0f} s (no work credited "
                            "for the part not supplied)"))
    elif len(tr["unserved_wh"]):
        checks.append(Check("battery_never_empty", True, "the battery never ran empty"))
    # Always on: an agent whose process died is no agent (found in audit: a crashed agent was flown on at its
    # last answer, credited with work, and the run passed with no_unhandled_fault off).
    if sc.agent != "naive" and result.agent_died_at_s is not None:
        checks.append(Check("agent_alive", False,
                            f"the agent's process died at {result.agent_died_at_s:.0f} s ({result.agent_died_how}); "
                            "flown as down from then on: no work, no commands"))
    elif sc.agent != "naive" and result.agent_silences:  # alive and not answering is hung (found in audit: passed)
        checks.append(Check("agent_alive", False,
                            f"the agent's process ran, but did not answer {result.agent_silences} steps (hung): those "
                            "were flown idle at its last mode, with no work"))
    elif sc.agent != "naive":
        checks.append(Check("agent_alive", True, "the agent's process ran and answered to the end (restarts by "
                                                 "faults aside)"))
    # Always on in real time: a step that started late means the environment did not follow the wall clock
    # (found in audit: max_lag_ms was measured and judged by nothing).
    if sc.time_mode == "realtime" and result.late_bound_ms is not None:
        late = result.late_steps
        checks.append(Check("on_time", late == 0,
                            f"{late} of {len(tr['time_s'])} steps started more than {result.late_bound_ms:.0f} ms "
                            f"after their wall-clock time, past the time the harness spent restarting the agent for a "
                            f"fault (the latest by {result.max_lag_ms or 0.0:.0f} ms, that time included)"
                            + ("; the notes say which" if late else "")))
    if crit.temp_max_c is not None:
        high = float(tr["temp_board_c"].max())
        checks.append(Check("temperature_below_limit", high <= crit.temp_max_c,
                            f"hottest {high:.1f} °C (limit {crit.temp_max_c} °C){_no_value(tr['temp_board_c'])}"))
    # What the ground heard: the criteria read from the agent's events judge nothing where none came down (found in
    # audit: with the downlink dropping everything, or gated by contact on a profile with none, "0 internal errors"
    # passed on 0 events).
    deaf = ("" if result.events else "; no event came down from the agent in the whole run (the link carried none), "
            "so none could be seen")
    if crit.no_unhandled_fault and sc.agent != "naive":
        internal = [e for e in result.events if e["name"] == "INTERNAL_ERROR"]
        ok = not internal and result.agent_silences == 0 and not deaf
        checks.append(Check("no_unhandled_fault", ok,
                            f"{len(internal)} internal errors, agent silent {result.agent_silences} times{deaf}"))
    # Always on when the run had faults: a fault nothing detected, or nothing recovered from, fails the run.
    if result.faults and sc.agent != "naive":
        verdicts = fault_verdicts(result) if verdicts is None else verdicts
        failed_faults = [v for v in verdicts if not v.passed]
        na = sum(v.verdict == "N/A" for v in verdicts)
        skipped = result.faults_not_drawn  # drawn from fault_rate_scale past a step's limit: never applied
        checks.append(Check("faults_handled", not failed_faults and not skipped,
                            f"{len(verdicts) - len(failed_faults) - na} of {len(verdicts)} faults detected and "
                            f"answered" + (f", {na} not to judge (N/A: hit nothing, or the run ended first)" if na else "")
                            + (f"; first failure: {failed_faults[0].kind} at {failed_faults[0].at_s:.0f} s: "
                               f"{failed_faults[0].why}" if failed_faults else "")
                            + (f"; {skipped} upsets drawn past {MAX_DRAWN_FAULTS_PER_STEP} a step were not applied "
                               "(lower fault_rate_scale)" if skipped else "")))
    if sc.agent != "naive" and len(tr["time_s"]):
        idle = idle_in_safe(timeline_of(result))
        checks.append(Check("idle_in_safe", idle.passed, idle.detail + (
            "; not judged: no event came down from the agent (SAFE_ENTERED, a restart), so no SAFE after a fault "
            "could be seen" if deaf else "")))
    # A scenario that asked for it and sent no command verified nothing: it fails (found in review: it passed on "0 of
    # 0"); left at its default, with no [[commands]], it is not applicable and not listed (as a criterion not asked).
    if crit.commands_verified and sc.agent != "naive" and not result.commands and "commands_verified" in crit.stated:
        checks.append(Check("commands_verified", False, "no commands were sent: nothing verified (the scenario asks "
                                                        "for commands_verified and has no [[commands]])"))
    elif crit.commands_verified and sc.agent != "naive" and result.commands:
        failed = [c for c in result.commands if c["outcome"] != "completed"]
        checks.append(Check("commands_verified", not failed,
                            f"{len(result.commands) - len(failed)} of {len(result.commands)} commands completed"
                            + (f"; first failure: {failed[0]['command']}: {failed[0]['outcome']}" if failed else "")))
    if result.memory_upsets or (sc.memory_upset_scale > 0 and sc.agent != "naive"):
        checks.append(corrupt_results_check(result))  # upsets into the worker's memory
    if crit.min_work is not None:
        work = work_done(result)
        how = "screened by the real worker" if result.scenario.compute_real else "done (modelled)"
        checks.append(Check("minimum_work", work >= crit.min_work, f"{work:.0f} tiles {how} (minimum {crit.min_work})"))
    return checks


def not_judged(result: RunResult) -> list[str]:
    """The criteria a run of the naive agent cannot be judged by (it takes no command and detects no fault), each said
    as such: a scenario stating them passed with them left out in silence (found in audit)."""
    sc = result.scenario
    if sc.agent != "naive":
        return []
    why = "not judged: the naive agent takes no command and detects no fault"
    out = [f"{name}: {why}" for name in ("no_unhandled_fault", "commands_verified")
           if name in sc.criteria.stated and getattr(sc.criteria, name)]  # one switched off is not asked (review)
    if result.faults:
        out.append(f"faults_handled: {len(result.faults)} faults flown, {why}")
    return out


def corrupt_results_check(result: RunResult) -> Check:
    """``no_corrupt_result_reported_good``: a corrupt tile its product said passed fails the run, and so
    does a run that asked for upsets and has none to judge (no ledger, none applied, none judged): it
    proved nothing. Corrupt tiles nothing checked (checks off) are said apart: their product said unchecked, not good."""
    account = result.memory_upsets
    totals, batches = account.get("totals", {}), account.get("batches", {})
    requested = sum(account.get("requested", {}).values())
    applied = sum(t.get("applied", 0) for t in totals.values())
    detected = sum(t.get("detected", 0) for t in totals.values())
    good, unchecked = batches.get("corrupt_reported_good", 0), batches.get("corrupt_unchecked", 0)
    detail = (f"{applied} upsets in the worker's memory, {detected} detected; {good} tiles reported passed while "
              f"corrupt; {unchecked} corrupt tiles unchecked")
    golden = totals.get("golden", {})
    if golden.get("applied"):  # no result reads a golden copy: judged by what found them (the scrub, a reload)
        detail += f"; {golden['applied']} in the golden copies, {golden.get('detected', 0)} found and put right"
    if account.get("restarts"):
        detail += f"; the ledger carried across {account['restarts']} worker restart(s)"
    followed = sum(t.get("requested", 0) for t in totals.values())
    lost = max(0, requested - followed - account.get("unread", 0) - account.get("bad_requests", 0)
               - account.get("dropped", 0))
    # What the harness could not account for is as bad as a corrupt result reported good: it proved nothing of it.
    unaccounted = [why for why, n in (
        (f"{account.get('not_written', 0)} drawn past {account.get('per_step_max')} a step were not asked for "
         "(lower memory_upset_scale)", account.get("not_written", 0)),
        (f"{account.get('dropped', 0)} refused by the worker, over its limit of pending upsets",
         account.get("dropped", 0)),
        (f"{account.get('unjudged', 0)} batches carrying upsets not judged ({'; '.join(account.get('errors', [])[:1])})",
         account.get("unjudged", 0)),
        ("the worker's ledger found corrupt at a restart (moved aside as ledger.json.corrupt): what it counted "
         "before is lost", account.get("ledgers_lost", 0)),
        (f"{lost} asked for and in no ledger", lost),
        (f"{account.get('unread_stale', 0)} never taken by the worker (waiting more than "
         f"{account.get('unread_grace_s', 0):g} s when the run ended: it hung or was gone)", account.get("unread_stale", 0)),
    ) if n]
    if not account:
        empty = "no account of them from the run"
    elif not requested:
        empty = "the harness drew none (the profile's upset rate x the scale x the run's steps)"
    elif account.get("ledger_error"):
        empty = f"{requested} asked for, but no ledger from the worker ({account['ledger_error']})"
    elif not applied:
        why = next((u.get("note") for u in account.get("examples", []) if u.get("note")), "")
        empty = f"{requested} asked for, none applied" + (f" (first reason: {why})" if why else "")
    elif not batches.get("judged", 0) and any(n for t, n in account.get("requested", {}).items() if t != "golden"):
        empty = f"{applied} applied, but no batch ran while one was live (no compute job in the run?)"
    elif not batches.get("judged", 0) and not golden.get("detected"):  # golden copies alone: the scrub must find one
        empty = (f"{applied} applied in the golden copies, none found by the scrub (it checks one copy a pass: "
                 "a run of them alone must last three scrub periods)")
    elif unaccounted:
        return Check("no_corrupt_result_reported_good", False,
                     f"memory upsets not all accounted for: {'; '.join(unaccounted)}; {detail}")
    else:
        return Check("no_corrupt_result_reported_good", good == 0, detail)
    return Check("no_corrupt_result_reported_good", False,
                 f"memory upsets asked for (memory_upset_scale {result.scenario.memory_upset_scale:g}) but none "
                 f"judged: {empty}; {detail}")


def instruments(sc: Scenario) -> str:
    """What the agent read of the truth ([sensors]): the report's charge and power are the truth, not its readings."""
    if sc.agent == "naive":
        return "the naive agent reads nothing (always COMPUTE at the top mode); the charge, power and temperatures " \
               "here are the truth"
    gauge = f"a fuel gauge of {sc.soc_step_pct:g} % steps" if sc.soc_step_pct > 0 else "the exact charge"
    power = (f"solar and board power with {sc.power_noise_pct:g} % noise" if sc.power_noise_pct > 0
             else "the exact solar and board power")
    capacity = (f"its gauge's full-charge capacity {sc.capacity_error_pct:+g} % off" if sc.gauge_capacity
                 else f"no capacity from its gauge (its configuration's {sc.nameplate_wh or sc.capacity_wh:g} Wh)")
    temps = f"temperatures with {sc.temp_noise_c:g} °C of noise" if sc.temp_noise_c > 0 else "exact temperatures"
    volts = (f"the bus voltage with {sc.bus_voltage_noise_v:g} V of noise" if sc.bus_voltage_noise_v > 0
             else "the exact bus voltage")
    tle = (f" and a TLE {sc.tle_along_track_km:+g} km along track of the truth's orbit (where the profile has one)"
           if sc.time_mode == "lockstep" else "")  # in real time the agent is given no TLE (ClosedLoop.agent_config)
    n = len(sc.load_steps)
    steps = f" (before its {n} step{'s' if n > 1 else ''} nobody announced)" if n else ""
    belief = (f"it was configured with a platform load {sc.platform_load_error_pct:+g} % off the truth's{steps}{tle}, "
              f"and assumes 95 % battery efficiencies each way (the truth's: {sc.charge_efficiency:g} charging, "
              f"{sc.discharge_efficiency:g} discharging)")
    return (f"the agent read {gauge}, {capacity}, {power}, {temps} and {volts}; {belief}; the charge, power and "
            "temperatures here are the truth")


def flown(sc: Scenario) -> dict[str, Any]:
    """The profile file the run flew, as the loader found it, and the seed: what tells this run from another of the
    same scenario file (found in audit: a relative profile found from the working directory flew another file, and
    neither the summary nor the page said which)."""
    return {"profile": str(Path(sc.profile).resolve()) if sc.profile is not None else "generated from [orbit]",
            "seed": sc.seed}


def summary(result: RunResult, checks: list[Check], verdicts: list[FaultVerdict] | None = None) -> dict[str, Any]:
    sc, tr = result.scenario, result.trace.arrays()
    verdicts = fault_verdicts(result) if verdicts is None else verdicts
    return {
        "scenario": sc.name,
        "source": sc.source,
        **flown(sc),
        "passed": all(c.passed for c in checks),
        "checks": [c.__dict__ for c in checks],
        "time_mode": sc.time_mode,
        # compute_mode, compute, work_counts, modelled_capacity_counts: from [compute] real alone, whatever the
        # time mode (found in audit: a modelled real-time run's report.html said its compute was real)
        **compute_account(sc, {}),
        "environment": ENVIRONMENT,
        "instruments": instruments(sc),
        "agent": sc.agent,
        "board": sc.board,
        # [thermal]: the radiator the board flew with (the two-node model's truth, hil/physics/thermal.py)
        "radiator": {"area_m2": sc.radiator_area_m2, "board_to_radiator_w_per_k": sc.board_to_radiator_w_per_k,
                     "heat_capacity_j_per_k": sc.radiator_heat_capacity_j_per_k},
        "sim_s": result.sim_s,
        "wall_s": round(result.wall_s, 3),
        "speedup": round(result.sim_s / result.wall_s, 1) if result.wall_s > 0 else None,
        "max_lag_ms": result.max_lag_ms,
        # Real time: steps that started more than late_bound_ms after their wall-clock time (on_time fails on one).
        "late_steps": result.late_steps if sc.time_mode == "realtime" else None,
        "late_bound_ms": result.late_bound_ms,
        "work_tiles": work_done(result),
        "real_tiles": result.real_tiles,
        "modelled_capacity_tiles": float(tr["work"][-1]) if len(tr["work"]) else 0.0,
        "soc_min_pct": float(tr["soc_pct"].min()),
        "soc_end_pct": float(tr["soc_pct"][-1]),
        "temp_max_c": float(tr["temp_board_c"].max()),
        # One row per fault: what it was, what detected it, the answer, the cost (hil/faults.py).
        "faults": [{**{k: v for k, v in f.items() if k not in ("kind", "at_s")}, **v.to_json()}
                   for f, v in zip(result.faults, verdicts)] if verdicts else list(result.faults),
        "commands": result.commands,
        "events": len(result.events),
        # [link]: the proxy's packets per direction (passed, dropped, corrupted, duplicated, reordered,
        # los_dropped, undeliverable) and whether it gated by contact; None without a proxy.
        "link": result.link or None,
        # [radiation] memory_upset_scale: per target, the upsets asked for, applied, detected,
        # corrected, and the tiles reported passed while corrupt (flight/compute/inject.py); None without.
        "memory_upsets": result.memory_upsets or None,
        # Corrupt tiles their product said unchecked (checks off, or batches no check ran on): not
        # reported good, not caught either; None without memory upsets.
        "corrupt_results_unchecked": (result.memory_upsets.get("batches", {}).get("corrupt_unchecked", 0)
                                      if result.memory_upsets else None),
        # The agent's energy plans (TM(140,1)) held against the harness's battery.
        **plan_error(result),
        "not_judged": not_judged(result),
        "notes": result.notes,
    }


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold replaced (found in audit: a scenario name or an agent's
    log line with a control character made junit.xml that no CI parser reads)."""
    return _NOT_XML.sub("\ufffd", str(text))


def junit_xml(result: RunResult, checks: list[Check]) -> bytes:
    return _junit(result.scenario.name, [(c.name, c.passed, c.detail) for c in checks], result.wall_s)


def _junit(scenario: str, cases: list[tuple[str, bool, str]], wall_s: float) -> bytes:
    suite = ET.Element("testsuite", name=_xml_text(f"hil.{scenario}"), tests=str(len(cases)),
                       failures=str(sum(not passed for _name, passed, _detail in cases)), time=f"{wall_s:.3f}")
    for name, passed, detail in cases:
        case = ET.SubElement(suite, "testcase", classname=_xml_text(f"hil.{scenario}"), name=_xml_text(name))
        if not passed:
            ET.SubElement(case, "failure", message=_xml_text(detail)).text = _xml_text(detail)
        else:
            ET.SubElement(case, "system-out").text = _xml_text(detail)
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True)


def _plots(result: RunResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = result.trace.arrays()
    t_min = (tr["time_s"] - tr["time_s"][0]) / 60.0
    from flight.hal.boards import load_board

    modes = [m.name for m in load_board(result.scenario.board).modes]
    modes += [m for m in dict.fromkeys(tr["power_mode"]) if m not in modes]  # OFF while the agent is down
    agent_modes = ["DOWN", "BOOT", "SAFE", "IDLE", "COMPUTE"]
    rows = [
        ("Battery charge (%)", [("charge", tr["soc_pct"])]),
        # The arrays' available power (the profile's) and what the EPS took of it (with the battery full, what the
        # loads drew: the rest stayed on the arrays), which is what the agent read
        ("Power (W)", [("solar available", tr["solar_power_w"]),
                       *([("solar delivered", tr["solar_delivered_w"])]
                         if len(tr.get("solar_delivered_w", ())) == len(tr["solar_power_w"]) else []),
                       ("board", tr["board_power_w"])]),
        ("Temperature (°C)", [("board", tr["temp_board_c"]), ("radiator", tr["temp_radiator_c"])]),
        ("Power mode", [("mode", np.array([modes.index(m) for m in tr["power_mode"]]))]),
        ("Agent mode", [("mode", np.array([agent_modes.index(m) if m in agent_modes else -1 for m in tr["mode"]]))]),
        ("Work (tiles/s)" if not result.scenario.compute_real else "Capacity (tiles/s, modelled)",
         [("throughput", np.gradient(tr["work"], tr["time_s"]) if len(tr["work"]) > 1 else tr["work"])]),
        ("Proton flux (/cm²/s)", [(">10 MeV", tr["proton_flux_cm2_s"])]),
    ]
    fig, axes = plt.subplots(len(rows) + 1, 1, figsize=(11, 2.0 * (len(rows) + 1)), sharex=True)
    for ax, (title, series) in zip(axes, rows):
        for label, y in series:
            ax.plot(t_min, y, label=label, lw=1.2)
        ax.set_ylabel(title, fontsize=8)
        ax.fill_between(t_min, 0, 1, where=tr["shadow_factor"] < 0.5, transform=ax.get_xaxis_transform(),
                        color="0.85", zorder=0)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="upper right")
    axes[3].set_yticks(range(len(modes)), modes, fontsize=7)
    axes[4].set_yticks(range(len(agent_modes)), agent_modes, fontsize=7)
    if result.scenario.criteria.charge_floor_pct is not None:
        axes[0].axhline(result.scenario.criteria.charge_floor_pct, color="red", ls="--", lw=1)
    for i, plan in enumerate(_plans_to_draw(result.plans)):  # what the agent predicted, against what happened
        steps = np.arange(len(plan["soc_pct"])) * plan["step_s"] + plan["start_unix_s"]
        axes[0].plot((steps - tr["time_s"][0]) / 60.0, plan["soc_pct"], color="tab:orange", lw=0.8, ls="--",
                     alpha=0.8, label="plan (predicted)" if i == 0 else None)
    if result.plans:
        axes[0].legend(fontsize=7, loc="upper right")
        axes[0].set_xlim(t_min[0], t_min[-1])  # a plan reaches past the run's end: the run is what is judged
    ax = axes[-1]
    t0 = tr["time_s"][0]
    sev_y = {"FATAL": 4, "WARNING_HI": 3, "WARNING_LO": 2, "ACTIVITY_HI": 1, "COMMAND": 1}
    for e in result.events:
        ax.plot((e["t"] - t0) / 60.0, sev_y.get(e["severity"], 0), "|", color="tab:blue", ms=8)
    for f in result.faults:
        ax.plot(f["at_s"] / 60.0, 5, "v", color="red", ms=7)
    ax.set_yticks([0, 1, 2, 3, 4, 5], ["diag", "activity", "warn lo", "warn hi", "fatal", "FAULT"], fontsize=7)
    ax.set_xlabel("minutes (grey: eclipse)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plans_to_draw(plans: list[dict[str, Any]], every_s: float = 1800.0) -> list[dict[str, Any]]:
    """One plan each ``every_s`` (the first made after each mark): enough to see the
    prediction against the truth without a thicket of lines."""
    out: list[dict[str, Any]] = []
    for plan in plans:
        if not out or plan["start_unix_s"] - out[-1]["start_unix_s"] >= every_s:
            out.append(plan)
    return out


def plan_error(result: RunResult) -> dict[str, Any]:
    """How far the plans' predicted charge was from the truth (the battery the harness
    flew), over every predicted point within the run: the 50th and 95th percentiles of
    |predicted − true| in % and the number of plans. None figures without plans."""
    tr = result.trace.arrays()
    errors: list[float] = []
    for plan in result.plans:
        times = plan["start_unix_s"] + np.arange(len(plan["soc_pct"])) * plan["step_s"]
        inside = (times >= tr["time_s"][0]) & (times <= tr["time_s"][-1])
        if inside.any():
            truth = np.interp(times[inside], tr["time_s"], tr["soc_pct"])
            errors.extend(np.abs(np.asarray(plan["soc_pct"])[inside] - truth).tolist())
    return {"plans": max(len(result.plans), result.plans_received), "plans_kept": len(result.plans),
            "plan_soc_error_pct_p50": round(float(np.percentile(errors, 50)), 2) if errors else None,
            "plan_soc_error_pct_p95": round(float(np.percentile(errors, 95)), 2) if errors else None}


def _plan_paragraph(body: dict[str, Any]) -> str:
    if not body["plans"]:
        return ("<p>No plan was downlinked: the agent plans over a forecast only with an array model "
                "(the scenario's [array]); otherwise it runs the rule on the predicted eclipses.</p>")
    kept = "" if body["plans_kept"] == body["plans"] else f" (the newest {body['plans_kept']} kept)"
    text = (f"<p>{body['plans']} plans downlinked (TM(140,1)){kept}; the dashed lines in the charge panel are "
            f"one each half hour, against the eclipses (grey). ")
    if body["plan_soc_error_pct_p50"] is None:
        return text + "No predicted point fell inside the run, so none is held against the truth.</p>"
    return text + (f"Their predicted charge was off the harness's battery by {body['plan_soc_error_pct_p50']} % "
                   f"(median) and {body['plan_soc_error_pct_p95']} % (95th percentile) over every predicted point "
                   "inside the run.</p>")


def _s(value: float | None, unit: str = " s") -> str:
    return "—" if value is None else f"{value:.0f}{unit}"


def _fault_table(result: RunResult, verdicts: list[FaultVerdict]) -> str:
    if not result.faults:
        return "<p>none</p>"
    label = "tiles, modelled capacity" if result.scenario.compute_real else "tiles, modelled"
    rows = "".join(
        f"<tr class={'bad' if not v.passed else 'ok'}><td>{html.escape(v.kind)}{_fault_what(f)}</td>"
        f"<td>{v.verdict}</td><td>{v.at_s:.0f} s</td>"
        f"<td>{html.escape(v.detected_by or '—')}{' at ' + _s(v.detected_at_s) if v.detected_at_s is not None else ''}</td>"
        f"<td>{html.escape(v.response or '—')}</td><td>{_s(v.time_to_recover_s)}</td>"
        f"<td>{_s(v.work_lost, '')}</td><td>{html.escape(v.why)}</td></tr>"
        for f, v in zip(result.faults, verdicts))
    return (f"<table><tr><th>fault</th><th>verdict</th><th>at</th><th>detected by</th><th>response</th>"
            f"<th>time to recover</th><th>work lost ({label}, against the rate of the 10 min before)</th>"
            f"<th>why</th></tr>{rows}</table>")


def _memory_table(result: RunResult) -> str:
    account = result.memory_upsets
    if not account:
        return "<p>none asked ([radiation] memory_upset_scale = 0)</p>"
    requested = account.get("requested", {})
    columns = ("applied", "not_applied", "waiting", "detected", "corrected", "harmful", "corrupt_tiles",
               "corrupt_reported_good", "corrupt_unchecked", "corrupt_marked_failed", "shared")
    rows = "".join(
        f"<tr class={'bad' if t.get('corrupt_reported_good') else 'ok'}><td>{html.escape(name)}</td>"
        f"<td>{requested.get(name, 0)}</td>" + "".join(f"<td>{t.get(c, 0)}</td>" for c in columns) + "</tr>"
        for name, t in account.get("totals", {}).items()
        if name in account.get("targets", []) or requested.get(name) or t.get("requested"))  # a target of this run
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in ("asked", *columns))
    b = account.get("batches", {})
    batches = (f"<p>{b.get('judged', 0)} batches judged while an upset was live: {b.get('corrupt_tiles', 0)} corrupt "
               f"tiles, {b.get('corrupt_reported_good', 0)} of them reported passed, {b.get('corrupt_unchecked', 0)} "
               f"unchecked, {b.get('corrupt_marked_failed', 0)} marked failed (each tile once). The table's tile counts "
               f"are per upset, on the tiles it can reach (an activation's sample, an output's row, every tile for a "
               f"weight); 'shared': upsets that another in the same batch could reach the tiles of, whose counts "
               f"there are not theirs alone.</p>")
    sneaked = "".join(f"<li>{html.escape(u.get('target', ''))}: {html.escape(u.get('site', ''))} "
                      f"({u.get('corrupt_passed', 0)} tiles)</li>" for u in account.get("reported_good_while_corrupt", []))
    return (f"<p>At the profile's upset rate × {account.get('scale')}, into {', '.join(account.get('targets', []))} "
            f"(modelled by the harness: the bits are flipped in the real worker's memory). Detected: by a failed "
            f"checksum, a double run, the output CRC, the scrub, or a reload; corrupt: a tile whose class or a "
            f"probability (by more than {CONSEQUENCE:g}) differs from a reference run.</p>"
            f"<table><tr><th>target</th>{head}</tr>{rows}</table>{batches}"
            + (f"<p>Reported passed while corrupt:</p><ul>{sneaked}</ul>" if sneaked else ""))


def _fault_what(f: dict[str, Any]) -> str:
    parts = [f"{f['duration_s']:.0f} s" if f.get("duration_s") else "", f.get("zone", ""),
             f"{f['energy_wh']} Wh" if f.get("energy_wh") else "", f.get("resumed", "")]
    more = ", ".join(p for p in parts if p)
    return f"<br><small>{html.escape(more)}</small>" if more else ""


def _command_table(result: RunResult) -> str:
    if not result.commands:
        return "<p>none</p>"
    rows = "".join(
        f"<tr class={'ok' if c['outcome'] == 'completed' else 'bad'}><td>{c['at_s']:.0f} s</td>"
        f"<td>{html.escape(c['command'])}</td><td>{html.escape(', '.join(f'{k}={v}' for k, v in c['args'].items()))}"
        f"</td><td>{html.escape(str(c['outcome']))}</td><td>{c.get('attempts', '—')}</td>"
        f"<td>{html.escape(c.get('fault', ''))}</td></tr>" for c in result.commands)
    return (f"<table><tr><th>sent</th><th>command</th><th>arguments</th><th>outcome</th><th>attempts</th>"
            f"<th>fault</th></tr>{rows}</table>")


def write_report(result: RunResult, out_dir: Path) -> tuple[bool, dict[str, Any]]:
    """Write summary.json, junit.xml, trace.npz and report.html into ``out_dir``; return (passed, summary).

    All are made before any is written, then each is written atomically (a temp file renamed over it), the
    summary last: a report that cannot be made or written leaves no verdict of this run (found in audit: the page
    failed after summary.json and junit.xml said PASS, and the run exited 3)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = fault_verdicts(result)
    checks = evaluate(result, verdicts)
    body = summary(result, checks, verdicts)
    trace = io.BytesIO()
    np.savez_compressed(trace, **{k: np.asarray(v) for k, v in result.trace.__dict__.items()})
    rows = "".join(
        f"<tr class={'ok' if c.passed else 'bad'}><td>{html.escape(c.name)}</td><td>{'PASS' if c.passed else 'FAIL'}"
        f"</td><td>{html.escape(c.detail)}</td></tr>" for c in checks
    )
    events = "".join(
        f"<tr><td>{e['t'] - result.trace.time_s[0]:.0f}</td><td>{html.escape(e['severity'])}</td>"
        f"<td>{html.escape(e['name'])}</td><td>{html.escape(e['text'])}</td></tr>" for e in result.events[-400:]
    )
    verdict = "PASS" if body["passed"] else "FAIL"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Sunlit HIL: {html.escape(body['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{padding:2px 8px}} .ok td:nth-child(2){{color:green}}
.bad td:nth-child(2){{color:red;font-weight:bold}} table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body><h1>{html.escape(body['scenario'])}: {verdict}</h1>
<p>Time: <b>{body['time_mode']}</b>, {body['sim_s']:.0f} simulated s in {body['wall_s']:.1f} wall s
(× {body['speedup']}). Profile: <code>{html.escape(body['profile'])}</code>, seed {body['seed']}.
Compute: <b>{html.escape(body['compute'])}</b>. Environment: {html.escape(body['environment'])}.
Instruments: {html.escape(body['instruments'])}.
Agent: {html.escape(body['agent'])}; board profile {html.escape(body['board'])}, cooled by a modelled radiator of
{body['radiator']['area_m2']:.3g} m² through {body['radiator']['board_to_radiator_w_per_k']:.3g} W/K.</p>
<table><tr><th>criterion</th><th></th><th>detail</th></tr>{rows}</table>
<h2>Timeline</h2><img src="data:image/png;base64,{_plots(result)}" alt="charge, power, temperatures, modes, work, flux, events">
<h2>Energy plan</h2>{_plan_paragraph(body)}
<h2>Faults</h2>{_fault_table(result, verdicts)}
<h2>Upsets in the worker's memory</h2>{_memory_table(result)}
<h2>Commands</h2>{_command_table(result)}
<h2>Events (last 400)</h2><table><tr><th>t (s)</th><th>severity</th><th>event</th><th>text</th></tr>{events}</table>
<h2>Notes</h2><pre>{html.escape(chr(10).join([*body['not_judged'], *result.notes]) or 'none')}</pre></body></html>"""
    _write_all(out_dir, [("trace.npz", trace.getvalue()), ("report.html", page.encode()),
                         ("junit.xml", junit_xml(result, checks)), ("summary.json", summary_json(body))])
    return body["passed"], body


def strict_json(value: Any) -> tuple[Any, list[str]]:
    """``value`` made fit for strict JSON (RFC 8259), and the paths of what was not: a number that is not finite
    (NaN, ±Infinity) becomes None, which ``json.dumps`` would write as the tokens NaN and Infinity that jq and a
    browser's JSON.parse refuse (found in review: a summary.json with NaN in it); numpy's scalars and arrays become
    numbers and lists."""
    found: list[str] = []

    def clean(v: Any, path: str) -> Any:
        if isinstance(v, dict):
            return {k: clean(item, f"{path}.{k}" if path else str(k)) for k, item in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [clean(item, f"{path}[{i}]") for i, item in enumerate(v)]
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            found.append(path)
            return None
        return v

    return clean(value, ""), found


def json_text(value: Any) -> str:
    """Strict JSON of ``value`` (:func:`strict_json`: a number that is not finite is written as null)."""
    return json.dumps(strict_json(value)[0], indent=1, default=str, allow_nan=False)


def summary_json(body: dict[str, Any]) -> bytes:
    """summary.json: strict JSON, a figure that is not a finite number (NaN, infinite) written as null and its path
    listed in ``non_finite_as_null`` (empty: none), so that a null there is told from one that means "none"."""
    clean, found = strict_json(body)
    return json.dumps({**clean, "non_finite_as_null": found}, indent=1, default=str, allow_nan=False).encode()


def _write_all(out_dir: Path, files: list[tuple[str, bytes]]) -> None:
    """Each file atomically, in the order given (the verdict last), then the directory synced once. Where one cannot
    be written, those written before it go again (an unlink needs no room): a disk that filled after junit.xml left
    its PASS beside no summary (found in review)."""
    written: list[Path] = []
    try:
        for name, data in files:
            write_atomic(out_dir / name, data, sync_dir=False)
            written.append(out_dir / name)
            os.chmod(out_dir / name, 0o644)  # a report is for reading: not the temp file's 0600
        fsync_path(out_dir)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def clear_report(out_dir: Path) -> None:
    """Remove an earlier run's report from ``out_dir``: a run that ends without one must not leave another run's
    verdict there as if it were its own. Raises the first that could not be removed, once it has tried every one."""
    failed: list[OSError] = []
    for name in REPORT_FILES:
        try:
            (Path(out_dir) / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(exc)
    if failed:
        raise failed[0]


def write_unfinished_report(scenario: Scenario, out_dir: Path, exc: BaseException) -> None:
    """summary.json and junit.xml of a run the harness did not finish (an internal error, Ctrl-C): failed, and
    why (found in audit: such a run left no verdict, or an earlier run's PASS). Best effort: a directory that
    cannot take them leaves none, and the caller raises ``exc`` either way."""
    why = (f"interrupted{f' ({exc})' if str(exc) else ''}" if isinstance(exc, KeyboardInterrupt)
           else f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}"[:500])
    detail = f"the harness did not finish the run: {why}"
    body = {"scenario": scenario.name, "source": scenario.source, **flown(scenario), "passed": False, "error": why,
            "checks": [{"name": "harness", "passed": False, "detail": detail}], "time_mode": scenario.time_mode,
            **compute_account(scenario, {}), "environment": ENVIRONMENT, "agent": scenario.agent,
            "board": scenario.board}
    try:
        _write_all(Path(out_dir), [("junit.xml", _junit(scenario.name, [("harness", False, detail)], 0.0)),
                                   ("summary.json", summary_json(body))])
    except OSError:
        pass
