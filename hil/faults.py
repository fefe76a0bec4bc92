"""The judge of a run's faults: for each fault kind, what must detect it, what must answer, and by when.

:data:`EXPECTED` says, per kind in :data:`hil.scenario.FAULT_KINDS`, the detection and the
response the agent owes. :func:`judge` takes a run's :class:`Timeline` (events on the run's
time axis, the per-step trace, the command log, the agent's parameters) and the fault log the
loop wrote, and returns one :class:`FaultVerdict` per fault: detected by what and when, the
response, the time to recover, the work lost, and PASS, FAIL or N/A. A fault that is not
detected by its deadline, or not recovered from by the end of the run, is a FAIL, and any
FAIL fails the run (criterion ``faults_handled``). N/A is a fault there is nothing to judge on:
an upset drawn from the profile's rate that hit nothing (no model on the store yet), or one whose answer
was not yet due when the run ended (power back too late for a restart to be seen), said so in the
``why``. A fault the scenario scheduled that hit nothing (a hang with no worker running, a flip with no
model on the store) is a FAIL: it tested nothing. A loss of signal the run ended in is judged on
what the run saw of it.

:func:`idle_in_safe` flags the other way of losing a day: sitting in SAFE after a fault with a
healthy battery, in sunlight and cool, for longer than the agent's own recovery would take.

Pure: data in, data out. Times are seconds from the start of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from flight.link.definitions import DICTIONARY, Mode

WORKING = {Mode.IDLE.value, Mode.COMPUTE.value}  # modes a fault can take the agent out of
SAFE = Mode.SAFE.value
DOWN = "DOWN"  # the trace's mode while the agent is off (hil/loop.py)
PACKET_FAULT_UNSENT = "not applied: no telecommand was sent after it"  # hil/loop.py's note for a packet fault

# What each kind owes, in words for the report (the rules are in the _judge_* functions below).
EXPECTED = {
    "reboot": "AGENT_STARTED (previous stop unclean) within 60 s; SAFE, then back to the mode before "
              "(MODE_RECOVERED after recovery_clear_s, or a command) by the end of the run",
    "brownout": "AGENT_STARTED (previous stop unclean) within 60 s of power returning; SAFE, then back to the "
                "mode before (MODE_RECOVERED after recovery_clear_s, or a command) by the end of the run",
    "sensor_dropout": "SENSOR_MISSING naming the zone within a control period (or the zone still reported missing); "
                      "SENSOR_RESTORED sensor_restore_s after it is back for good, give or take a step and two "
                      "control periods (none if a restart took the agent first: the new one reads it from boot)",
    "sensor_stuck": "none possible (a plausible stuck value); protection from the hottest zone must hold: the "
                    "board never above the hard limit outside SAFE",
    "compute_hang": "COMPUTE_HUNG within compute_watchdog_s and COMPUTE_STARTED (a new worker) after it; a hang "
                    "shorter than the watchdog (with those overlapping it on the worker) may instead end by itself",
    "seu_weights": "MODEL_GOLDEN_USED at the next load of the model (the store checks SHA-256 when it loads); "
                   "the corrupt copy never runs",
    "packet_corrupt": "BAD_PACKET for the damaged copy; the command retried and completed",
    "packet_drop": "the ground's retry (no report within attempt_timeout_s); the command completed",
    "los": "commands held until the signal returns, then completed; CONTACT_LOST only if it lasts "
           "contact_timeout_s",
}

LOOKBACK_S = 600.0  # work rate before a fault is taken over this long (or since the start)
BOOT_DEADLINE_S = 60.0  # a restarted agent must say it started within this (it imports, opens, boots)
RESTART_DEADLINE_S = 60.0  # a new compute worker must say hello within this of the hang being found


@dataclass(frozen=True)
class Timeline:
    """What a run left, on one time axis (seconds from the start)."""

    time_s: np.ndarray
    mode: Sequence[str]
    work: np.ndarray  # cumulative
    agent_up: np.ndarray
    soc_pct: np.ndarray
    temp_board_c: np.ndarray
    shadow_factor: np.ndarray
    events: Sequence[Mapping[str, Any]]  # rel_s, name, text, args
    commands: Sequence[Mapping[str, Any]] = ()
    params: Mapping[str, Any] = field(default_factory=dict)  # the agent's parameters (dictionary defaults filled)
    step_s: float = 10.0
    control_period_s: float = 10.0
    compute_threads: np.ndarray | None = None
    work_label: str = "tiles"

    @property
    def end_s(self) -> float:
        return float(self.time_s[-1]) if len(self.time_s) else 0.0

    @property
    def tick_s(self) -> float:
        """Slack for anything the agent notices on a control tick: one tick, and the step it lands in."""
        return self.control_period_s + self.step_s

    def first(self, name: str, after_s: float, before_s: float = math.inf, where: Any = None
              ) -> Mapping[str, Any] | None:
        for e in self.events:
            if e["name"] == name and after_s <= e["rel_s"] <= before_s and (where is None or where(e)):
                return e
        return None

    def mode_at(self, t_s: float) -> str:
        i = int(np.searchsorted(self.time_s, t_s, side="right")) - 1
        return self.mode[max(i, 0)] if len(self.mode) else "DOWN"

    def work_at(self, t_s: float) -> float:
        return float(np.interp(t_s, self.time_s, self.work)) if len(self.time_s) else 0.0


def agent_parameters(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's parameter values in a run: the dictionary's defaults, then the scenario's [parameters]."""
    return {**{p.name: p.default for p in DICTIONARY.parameters}, **dict(overrides)}


@dataclass(frozen=True)
class FaultVerdict:
    kind: str
    at_s: float
    verdict: str  # PASS | FAIL | N/A
    why: str
    detected_by: str | None = None  # an event name, or what else noticed it
    detected_at_s: float | None = None
    response: str = ""
    recovered_at_s: float | None = None
    work_lost: float | None = None
    work_window_s: tuple[float, float] | None = None  # the span whose work is counted against this fault

    @property
    def passed(self) -> bool:
        return self.verdict != "FAIL"

    @property
    def time_to_recover_s(self) -> float | None:
        return None if self.recovered_at_s is None else self.recovered_at_s - self.at_s

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "at_s": self.at_s, "verdict": self.verdict, "why": self.why,
                "detected_by": self.detected_by, "detected_at_s": self.detected_at_s, "response": self.response,
                "time_to_recover_s": self.time_to_recover_s, "work_lost": self.work_lost,
                "expected": EXPECTED.get(self.kind, "")}


def judge(faults: Sequence[Mapping[str, Any]], tl: Timeline) -> list[FaultVerdict]:
    """One verdict per fault of the loop's fault log, in order."""
    out: list[FaultVerdict] = []
    for f in faults:
        rule = _RULES.get(f["kind"])
        if rule is None:
            out.append(FaultVerdict(f["kind"], f["at_s"], "FAIL", f"no expectation for fault kind {f['kind']!r}"))
            continue
        if str(f.get("note", "")).startswith(PACKET_FAULT_UNSENT):  # validation saw a command for it: it was held (a
            out.append(FaultVerdict(f["kind"], f["at_s"], "FAIL", f["note"] + ": held by a los or the agent down to "
                                    "the end; end those before it, or move it"))  # los to the end): the fault tested
            continue  # nothing (found in audit: N/A, and the run passed)
        if str(f.get("note", "")).startswith("not applied"):
            out.append(FaultVerdict(f["kind"], f["at_s"], "N/A", f["note"]))
            continue
        if f["kind"] == "sensor_dropout":
            restore_s = float(tl.params.get("sensor_restore_s", 0.0))
            out.append(_judge_sensor_dropout(f, tl, _dropout_end_s(f, faults, restore_s, -tl.tick_s),
                                             _dropout_end_s(f, faults, restore_s, tl.tick_s)))
            continue
        out.append(rule(f, tl))
    return _attribute_work(out, tl)


def _attribute_work(verdicts: list[FaultVerdict], tl: Timeline) -> list[FaultVerdict]:
    """Work lost per fault, each span counted once: a span an earlier fault already holds (a loss of
    signal while the agent is still down from a brownout) is not lost again."""
    taken: list[tuple[float, float]] = []
    out = []
    for v in verdicts:
        if v.work_window_s is None:
            out.append(v)
            continue
        start, end = v.work_window_s
        pieces = [(start, end)]
        for a, b in taken:
            pieces = [q for lo, hi in pieces for q in ((lo, min(hi, a)), (max(lo, b), hi)) if q[1] > q[0]]
        lost = sum(work_lost(tl, start, hi, lo) for lo, hi in pieces)
        taken.append((start, end))
        out.append(replace(v, work_lost=round(lost, 1)))
    return out


def work_lost(tl: Timeline, at_s: float, until_s: float, from_s: float | None = None) -> float:
    """Work not done between ``from_s`` (default ``at_s``) and ``until_s``, against the work rate of the
    LOOKBACK_S before the fault at ``at_s`` (a rough measure: the rate would have changed anyway with
    eclipses and the power plan; 0 for a fault at the very start, with no rate to go by)."""
    from_s = at_s if from_s is None else from_s
    until_s = min(max(until_s, from_s), tl.end_s)
    start = max(0.0, at_s - LOOKBACK_S)
    if until_s <= from_s or at_s <= start:
        return 0.0
    rate = (tl.work_at(at_s) - tl.work_at(start)) / (at_s - start)
    return max(0.0, rate * (until_s - from_s) - (tl.work_at(until_s) - tl.work_at(from_s)))


def _verdict(f: Mapping[str, Any], tl: Timeline, ok: bool, why: str, detected: Mapping[str, Any] | None = None,
             detected_by: str | None = None, response: str = "", recovered_at_s: float | None = None,
             lost_until_s: float | None = None) -> FaultVerdict:
    at = float(f["at_s"])
    if lost_until_s is None:
        lost_until_s = recovered_at_s if recovered_at_s is not None else (tl.end_s if not ok else at)
    return FaultVerdict(f["kind"], at, "PASS" if ok else "FAIL", why,
                        detected_by or (detected["name"] if detected else None),
                        float(detected["rel_s"]) if detected else None, response, recovered_at_s,
                        round(work_lost(tl, at, lost_until_s), 1), (at, max(at, min(lost_until_s, tl.end_s))))


# --- the rules, one per kind -----------------------------------------------------------------

def _judge_restart(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    at = float(f["at_s"])
    back_s = _up_again_s(tl, at + (float(f.get("duration_s", 0.0)) if f["kind"] == "brownout" else 0.0))
    before = tl.mode_at(at - tl.step_s) if at >= tl.step_s else "BOOT"
    started = tl.first("AGENT_STARTED", at, back_s + BOOT_DEADLINE_S + tl.tick_s,
                       lambda e: e.get("args", {}).get("previous_stop") == "unclean")
    if started is None and back_s + BOOT_DEADLINE_S + tl.tick_s > tl.end_s:
        return FaultVerdict(f["kind"], at, "N/A", f"the run ended at {tl.end_s:.0f} s, before a restart was due "
                            f"(power back at {back_s:.0f} s, then up to {BOOT_DEADLINE_S:.0f} s to boot)")
    if started is None:
        return _verdict(f, tl, False, f"no AGENT_STARTED with previous stop unclean within {BOOT_DEADLINE_S:.0f} s "
                        f"of {back_s:.0f} s: the restart was not seen")
    booted = float(started["rel_s"])
    if before not in WORKING:
        return _verdict(f, tl, True, f"restarted; it was {before}, so SAFE is where it belongs", started,
                        response="SAFE at boot", recovered_at_s=booted)
    recovered = tl.first("MODE_RECOVERED", booted, where=lambda e: e.get("args", {}).get("new") == before)
    commanded = tl.first("MODE_CHANGED", booted, where=lambda e: e.get("args", {}).get("reason") == "commanded"
                         and e.get("args", {}).get("new") == before)
    back = min((e for e in (recovered, commanded) if e is not None), key=lambda e: e["rel_s"], default=None)
    enabled = bool(tl.params.get("recovery_enabled", True))
    if back is None:
        if not enabled:
            return _verdict(f, tl, True, "restarted; recovery_enabled is false, so it waits SAFE for a command",
                            started, response="SAFE at boot, waiting for a command", lost_until_s=tl.end_s)
        clear_s = float(tl.params.get("recovery_clear_s", 600.0))
        if booted + clear_s + 2 * tl.tick_s + tl.step_s > tl.end_s:  # as a boot not yet due (found in audit: FAIL)
            return FaultVerdict(f["kind"], at, "N/A", f"restarted at {booted:.0f} s; the run ended at {tl.end_s:.0f} s, "
                                f"before a return to {before} was due (recovery_clear_s {clear_s:.0f} s)")
        return _verdict(f, tl, False, f"restarted but never went back to {before} (recovery_clear_s "
                        f"{tl.params.get('recovery_clear_s')} s): still {tl.mode[-1]} at the end", started,
                        response="SAFE at boot, not recovered")
    how = "on its own (MODE_RECOVERED)" if back is recovered else "by command"
    return _verdict(f, tl, True, f"restarted, SAFE, back to {before} {how}", started,
                    response=f"SAFE at boot; {before} again {how}", recovered_at_s=float(back["rel_s"]))


def _up_again_s(tl: Timeline, t_s: float) -> float:
    """When the agent was up again from ``t_s`` on: later than ``t_s`` where a brownout still held the board off
    then (found in audit: a reboot inside a longer brownout failed "no AGENT_STARTED within 60 s", the agent blamed
    for the harness's holding it down); ``t_s`` if it never was (died, or down to the end)."""
    up = np.flatnonzero((tl.time_s >= t_s - 1e-9) & np.asarray(tl.agent_up, bool))
    return max(t_s, float(tl.time_s[up[0]])) if len(up) else t_s


def _dropout_end_s(f: Mapping[str, Any], faults: Sequence[Mapping[str, Any]], restore_s: float,
                   slack_s: float = 0.0) -> float:
    """When the zone of dropout ``f`` is back for good: the end of the last of the dropouts of that zone
    each beginning before the one before had read again for ``restore_s`` (the agent says SENSOR_RESTORED
    only after that: a flapping zone is one dropout to it, counted in that event). ``slack_s``: added to
    that wait (the agent starts it at the first tick that reads the zone again, up to a tick late, and sees
    the next dropout up to a tick late: the judge takes a next dropout within a tick of it either way)."""
    zone = str(f.get("zone", ""))
    end = float(f["at_s"]) + float(f.get("duration_s", 0.0))
    for g in sorted(faults, key=lambda g: float(g["at_s"])):
        if g["kind"] != "sensor_dropout" or str(g.get("zone", "")) != zone or float(g["at_s"]) <= float(f["at_s"]):
            continue
        if str(g.get("note", "")).startswith("not applied") or float(g.get("duration_s", 0.0)) <= 0:
            continue
        if float(g["at_s"]) >= end + restore_s + slack_s:
            break
        end = max(end, float(g["at_s"]) + float(g["duration_s"]))
    return end


def _judge_sensor_dropout(f: Mapping[str, Any], tl: Timeline, back_s: float | None = None,
                          back_late_s: float | None = None) -> FaultVerdict:
    """``back_s``: when the zone is back for good (:func:`_dropout_end_s`; default this dropout's end);
    ``back_late_s``: the same where a next dropout within a tick of the agent's wait counts in it (the
    agent may see it either way): a SENSOR_RESTORED after either is right."""
    at, dur, zone = float(f["at_s"]), float(f.get("duration_s", 0.0)), str(f.get("zone", ""))
    if dur <= 0:
        return FaultVerdict(f["kind"], at, "N/A", "lasted 0 s: no reading was ever missing")
    back = at + dur if back_s is None else back_s
    back_late = back if back_late_s is None else max(back, back_late_s)
    restore = float(tl.params.get("sensor_restore_s", 0.0))

    def names_zone(e: Mapping[str, Any]) -> bool:
        return zone in e.get("text", "")

    missing = tl.first("SENSOR_MISSING", at, at + tl.tick_s, names_zone)
    if missing is None:  # still reported missing from a dropout of the same zone before (not said restored)?
        said = [e for e in tl.events if e["rel_s"] < at and (e["name"] == "AGENT_STARTED" or (
                e["name"] in ("SENSOR_MISSING", "SENSOR_RESTORED") and names_zone(e)))]  # an agent started since
        # forgot it (found in audit: a dead agent's SENSOR_MISSING was taken for a later dropout's detection)
        if said and said[-1]["name"] == "SENSOR_MISSING":
            missing = said[-1]
    if missing is None:
        return _verdict(f, tl, False, f"no SENSOR_MISSING naming {zone} within {tl.tick_s:.0f} s", lost_until_s=at + dur)
    if back_late + restore >= tl.end_s:
        return _verdict(f, tl, True, "reported missing; the run ended before it was back for sensor_restore_s",
                        missing, response="reported missing", lost_until_s=tl.end_s)
    # Noticed back within a tick, then held for sensor_restore_s, said at the tick after: not before that
    # (the agent said it back early), nor later.
    low = back + restore - (tl.step_s if restore > 0 else 0.0)
    high = back_late + restore + tl.tick_s + tl.control_period_s
    restored = tl.first("SENSOR_RESTORED", low, high, names_zone)
    fresh = None if restored is not None else _restarted_after(tl, missing, back, high, names_zone)
    if fresh is not None:  # found in audit: failed "no SENSOR_RESTORED", which only the agent killed could say
        return _verdict(f, tl, True, f"reported missing; back at {back:.0f} s while the agent was down or about "
                        f"to restart: the agent up again at {fresh:.0f} s read it from its boot, so no "
                        "SENSOR_RESTORED was owed (the restart is judged on its own)", missing,
                        response="reported missing; read again after the restart", recovered_at_s=fresh,
                        lost_until_s=back)
    if restored is None:
        return _verdict(f, tl, False, f"no SENSOR_RESTORED naming {zone} between {low - back:.0f} and "
                        f"{high - back:.0f} s after it was back (sensor_restore_s {restore:.0f} s)", missing,
                        response="reported missing, not restored as it should be")
    return _verdict(f, tl, True, "reported missing and restored", missing, response="SENSOR_RESTORED",
                    recovered_at_s=float(restored["rel_s"]), lost_until_s=back)


def _restarted_after(tl: Timeline, missing: Mapping[str, Any], back_s: float, due_s: float,
                     names_zone: Any) -> float | None:
    """When an agent restarted after the one that said ``missing`` (a reboot, a brownout) was first up, if the
    zone was back by then, the one before was killed before its SENSOR_RESTORED was due (``due_s``), and the new
    one never said the zone missing: it has no memory of the dropout, so the SENSOR_RESTORED was the killed
    agent's to say; None otherwise."""
    later = tl.events[next((i for i, e in enumerate(tl.events) if e is missing), len(tl.events)):]
    agent_up = np.asarray(tl.agent_up, bool)
    for n, started in enumerate(later):
        if started["name"] != "AGENT_STARTED":
            continue
        up = np.flatnonzero((tl.time_s >= float(started["rel_s"])) & agent_up)
        if not len(up):
            return None
        first_up_s = float(tl.time_s[up[0]])
        down = up[0]  # the agent before was killed where the stretch down before the new one's first step began
        while down > 0 and not agent_up[down - 1]:
            down -= 1
        if min(float(tl.time_s[down]), float(started["rel_s"])) > due_s:  # killed after its restore was due: its miss
            return None
        if first_up_s >= back_s and not any(e["name"] == "SENSOR_MISSING" and names_zone(e) and
                                            e["rel_s"] >= first_up_s for e in later[n:]):
            return first_up_s
    return None


def _judge_sensor_stuck(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    at, dur = float(f["at_s"]), float(f.get("duration_s", 0.0))
    hard = float(tl.params.get("thermal_hard_limit_c", 95.0))
    window = (tl.time_s >= at) & (tl.time_s < at + dur)
    unsafe = window & (tl.temp_board_c >= hard) & np.array([m not in (SAFE, DOWN) for m in tl.mode], bool)
    if unsafe.any():
        t = float(tl.time_s[np.argmax(unsafe)])
        return _verdict(f, tl, False, f"board at or above the hard limit {hard:.0f} °C outside SAFE at {t:.0f} s "
                        "while the zone was stuck: the stuck value hid the heat", lost_until_s=at + dur)
    return _verdict(f, tl, True, "not detectable as a fault (a plausible value); protection held on the hottest zone",
                    detected_by="— (none possible)", response="tolerated", recovered_at_s=at + dur,
                    lost_until_s=at + dur)


def _judge_compute_hang(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    at, dur = float(f["at_s"]), float(f.get("duration_s", 0.0))
    if "pid" not in f:  # nothing hung: the scenario's hang tested nothing (found in audit: N/A, and the run passed)
        return FaultVerdict(f["kind"], at, "FAIL", str(f.get("note", "no compute worker was running")) +
                            " (schedule it once the agent's worker runs)")
    watchdog = float(tl.params.get("compute_watchdog_s", 10.0))
    deadline = at + watchdog + tl.tick_s + tl.step_s
    hung = tl.first("COMPUTE_HUNG", at, deadline)
    if hung is None:
        # Hangs overlapping on one worker are one hang to the agent (hil/loop.py holds the worker stopped to the
        # end of the last): from the first stop to that end, only that whole shorter than the watchdog may end by
        # itself (found in audit: each was judged by its own duration_s, so two that together outlasted the
        # watchdog passed with no COMPUTE_HUNG).
        overlapped = "held_until_s" in f or "stopped_since_s" in f
        held = f.get("held_until_s", at + dur)
        whole = dur if not overlapped else ((math.inf if held is None else max(at + dur, float(held)))
                                            - float(f.get("stopped_since_s", at)))
        if 0 < dur and whole < watchdog and f.get("resumed_at_s") is not None:
            with_others = " with the hangs overlapping it" if overlapped else ""
            return _verdict(f, tl, True, f"resumed by itself after {whole:.0f} s{with_others}, inside the "
                            f"{watchdog:.0f} s watchdog",
                            detected_by="— (shorter than the watchdog)", response="worker resumed (SIGCONT)",
                            recovered_at_s=float(f["resumed_at_s"]))
        cut = f.get("cut_at_s")  # the harness resumed it, its agent killed (a reboot) or the run over (hil/loop.py)
        if cut is not None and float(cut) < deadline:  # found in audit: failed as the watchdog's miss
            return _verdict(f, tl, False, f"{f.get('resumed', 'resumed by the harness')}, before a COMPUTE_HUNG was "
                            f"due (compute_watchdog_s {watchdog:.0f} s +{tl.tick_s + tl.step_s:.0f} s of ticks): the "
                            "hang tested nothing; schedule it apart from reboots and brownouts, and a watchdog's time "
                            "before the end of the run")
        return _verdict(f, tl, False, f"no COMPUTE_HUNG within compute_watchdog_s {watchdog:.0f} s "
                        f"(+{tl.tick_s + tl.step_s:.0f} s of ticks) of the hang")
    found = float(hung["rel_s"])
    started = tl.first("COMPUTE_STARTED", found, found + RESTART_DEADLINE_S)
    if started is None:
        return _verdict(f, tl, False, f"COMPUTE_HUNG but no new worker within {RESTART_DEADLINE_S:.0f} s", hung,
                        response="killed, not restarted")
    return _verdict(f, tl, True, f"found after {found - at:.0f} s, worker replaced", hung,
                    response="worker killed and restarted (COMPUTE_STARTED)", recovered_at_s=float(started["rel_s"]))


def _judge_seu(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    at = float(f["at_s"])
    note = str(f.get("note", ""))
    if not note.startswith("bit flipped") and f.get("drawn"):  # a random upset that hit nothing: nothing to judge
        return FaultVerdict(f["kind"], at, "N/A", note or "nothing flipped")
    if not note.startswith("bit flipped"):  # the scenario's own: it tested nothing (found in audit: N/A, and passed)
        return FaultVerdict(f["kind"], at, "FAIL", (note or "nothing flipped") + " (schedule it once the agent's "
                            "worker has its model on the store)")
    golden = tl.first("MODEL_GOLDEN_USED", at)
    if golden is not None:
        return _verdict(f, tl, True, "the working copy failed its SHA-256 at the next load; the golden copy runs",
                        golden, response="golden copy used", recovered_at_s=float(golden["rel_s"]),
                        lost_until_s=float(golden["rel_s"]))
    refused = tl.first("JOB_FAILED", at, where=lambda e: "model refused" in e.get("text", ""))
    if refused is not None:
        return _verdict(f, tl, True, "refused at load (both copies failed): the job failed rather than run a corrupt "
                        "model", refused, response="job failed", lost_until_s=tl.end_s)
    loads = _loads_after(tl, at)
    if loads:
        return _verdict(f, tl, False, f"the model was loaded again at {loads[0]:.0f} s and the flip went unnoticed")
    return _verdict(f, tl, False, "latent to the end of the run: the store checks a model only when it loads it "
                    "(flight/compute/store.py) and nothing loaded it after the flip; the corrupt working copy is "
                    "still on the store (a periodic ModelStore.verify_all in the worker would find it)",
                    lost_until_s=at)


def _loads_after(tl: Timeline, at_s: float) -> list[float]:
    """When the worker will have loaded its model again: a new worker, or a new thread count (new sessions)."""
    times = [float(e["rel_s"]) for e in tl.events if e["name"] == "COMPUTE_STARTED" and e["rel_s"] >= at_s]
    if tl.compute_threads is not None and len(tl.compute_threads) == len(tl.time_s):
        th = np.asarray(tl.compute_threads, float)
        after = tl.time_s >= at_s
        idx = np.flatnonzero(after[1:] & np.isfinite(th[1:]) & np.isfinite(th[:-1]) & (th[1:] != th[:-1])) + 1
        times += [float(tl.time_s[i]) for i in idx]
    return sorted(times)


def _command_hit(f: Mapping[str, Any], tl: Timeline, marker: str) -> Mapping[str, Any] | None:
    """The telecommand this packet fault hit, as the loop wrote it down (``command_index``): each fault its own
    command (found in audit: the first command after it with such a fault, so two drops were both credited to
    one command that was dropped once)."""
    idx = f.get("command_index")
    if isinstance(idx, int) and 0 <= idx < len(tl.commands) and marker in str(tl.commands[idx].get("fault", "")):
        return tl.commands[idx]
    return None


def _judge_packet_corrupt(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    cmd = _command_hit(f, tl, "corrupted")
    if cmd is None:
        return FaultVerdict(f["kind"], float(f["at_s"]), "N/A", "no telecommand was sent after it")
    sent = float(cmd["at_s"])
    bad = tl.first("BAD_PACKET", sent - tl.step_s, sent + tl.tick_s + 30.0)
    done = cmd.get("outcome") == "completed"
    if bad is None:
        return _verdict(f, tl, False, f"no BAD_PACKET for the damaged copy of {cmd['command']}",
                        response=f"{cmd['command']}: {cmd.get('outcome')}")
    return _verdict(f, tl, done, f"damaged copy refused; {cmd['command']} {cmd.get('outcome')}", bad,
                    response=f"{cmd['command']} {cmd.get('outcome')} in {cmd.get('attempts', '?')} attempt(s)",
                    recovered_at_s=float(bad["rel_s"]) if done else None)


def _judge_packet_drop(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    cmd = _command_hit(f, tl, "dropped")
    if cmd is None:
        return FaultVerdict(f["kind"], float(f["at_s"]), "N/A", "no telecommand was sent after it")
    done = cmd.get("outcome") == "completed" and int(cmd.get("attempts", 1)) >= 2
    return _verdict(f, tl, done, f"{cmd['command']} {cmd.get('outcome')} after {cmd.get('attempts', '?')} attempts",
                    detected_by="ground retry (Lazy Pirate)" if done else None,
                    response=f"{cmd['command']} resent and {cmd.get('outcome')}",
                    recovered_at_s=float(cmd["at_s"]) if done else None)


def _judge_los(f: Mapping[str, Any], tl: Timeline) -> FaultVerdict:
    at, dur = float(f["at_s"]), float(f.get("duration_s", 0.0))
    timeout = float(tl.params.get("contact_timeout_s", 86400.0))
    after = [c for c in tl.commands if c.get("at_s", -1) >= at]
    failed = [c for c in after if c.get("outcome") != "completed"]
    lost = tl.first("CONTACT_LOST", at, at + dur + tl.tick_s)
    silent = min(dur, tl.end_s - at)  # what of it the run saw
    if silent >= timeout and lost is None:
        return _verdict(f, tl, False, f"silent {silent:.0f} s, over contact_timeout_s {timeout:.0f} s, and no "
                        "CONTACT_LOST", lost_until_s=at + silent)
    if at + dur > tl.end_s:  # the run ended in it: the commands after it were never due to go
        return _verdict(f, tl, True, f"the run ended {silent:.0f} s into it, before contact came back"
                        + ("; CONTACT_LOST said" if lost else f" (under contact_timeout_s {timeout:.0f} s)"), lost,
                        detected_by=None if lost else "— (shorter than contact_timeout_s)",
                        response="commands held", lost_until_s=tl.end_s)
    why = (f"{len(after) - len(failed)} of {len(after)} later commands completed" if after
           else "no command was due after it")
    return _verdict(f, tl, not failed, why, lost, detected_by=None if lost else "— (shorter than contact_timeout_s)",
                    response="commands held, then sent" if after else "nothing to hold",
                    recovered_at_s=at + dur if not failed else None, lost_until_s=at + dur)


_RULES = {
    "reboot": _judge_restart,
    "brownout": _judge_restart,
    "sensor_dropout": _judge_sensor_dropout,
    "sensor_stuck": _judge_sensor_stuck,
    "compute_hang": _judge_compute_hang,
    "seu_weights": _judge_seu,
    "packet_corrupt": _judge_packet_corrupt,
    "packet_drop": _judge_packet_drop,
    "los": _judge_los,
}


# --- sitting in SAFE for no reason -----------------------------------------------------------

@dataclass(frozen=True)
class IdleInSafe:
    passed: bool
    longest_s: float
    since_s: float | None
    limit_s: float | None
    detail: str


def idle_in_safe(tl: Timeline, healthy_above_pct: float = 10.0) -> IdleInSafe:
    """The longest stretch in SAFE after a fault (an automatic SAFE, or a boot after an unclean stop;
    never a commanded SAFE nor the first boot) with nothing holding it there: the battery
    ``healthy_above_pct`` points above floor plus margin, the board in sunlight and below the soft limit
    minus its hysteresis. Longer than ``recovery_clear_s`` + 600 s fails (with recovery enabled)."""
    p = tl.params
    if not p.get("recovery_enabled", True):
        return IdleInSafe(True, 0.0, None, None, "recovery_enabled is false: SAFE waits for a command by design")
    limit = float(p.get("recovery_clear_s", 600.0)) + 600.0
    healthy_pct = float(p.get("battery_floor_pct", 30.0)) + float(p.get("battery_margin_pct", 5.0)) + healthy_above_pct
    cool_c = float(p.get("thermal_soft_limit_c", 85.0)) - float(p.get("thermal_hysteresis_c", 5.0))
    starts = sorted(float(e["rel_s"]) for e in tl.events
                    if e["name"] == "SAFE_ENTERED"
                    or (e["name"] == "AGENT_STARTED" and e.get("args", {}).get("previous_stop") == "unclean"))
    commanded_safe = sorted(float(e["rel_s"]) for e in tl.events if e["name"] == "MODE_CHANGED"
                            and e.get("args", {}).get("reason") == "commanded" and e.get("args", {}).get("new") == SAFE)
    longest, since, run, run_since = 0.0, None, 0.0, None
    episode = False
    si = ci = 0
    for i, t in enumerate(tl.time_s):
        while si < len(starts) and starts[si] <= t:
            episode, si = True, si + 1
        while ci < len(commanded_safe) and commanded_safe[ci] <= t:
            episode, ci = False, ci + 1
        mode = tl.mode[i]
        if mode in WORKING:
            episode = False
        idle = (episode and mode == SAFE and bool(tl.agent_up[i]) and tl.soc_pct[i] >= healthy_pct
                and tl.temp_board_c[i] < cool_c and tl.shadow_factor[i] >= 0.5)
        if idle:
            run_since = t if run_since is None else run_since
            run = t - run_since + tl.step_s
            if run > longest:
                longest, since = run, run_since
        else:
            run, run_since = 0.0, None
    ok = bool(longest <= limit)  # a plain bool: summary.json must say true, not "True"
    detail = (f"longest {longest:.0f} s in SAFE after a fault with a healthy battery (≥ {healthy_pct:.0f} %), in "
              f"sunlight and cool (limit {limit:.0f} s = recovery_clear_s + 600 s)"
              + (f", from {since:.0f} s" if since is not None else ""))
    return IdleInSafe(ok, longest, since, limit, detail)


def timeline_of(result: Any) -> Timeline:
    """The :class:`Timeline` of a :class:`hil.loop.RunResult`."""
    sc = result.scenario
    tr = result.trace.arrays()
    t = tr["time_s"] - tr["time_s"][0] if len(tr["time_s"]) else tr["time_s"]
    events = [e if "rel_s" in e else {**e, "rel_s": e["t"] - (result.trace.time_s[0] if result.trace.time_s else 0)}
              for e in result.events]
    lockstep = sc.time_mode == "lockstep"
    threads = tr.get("compute_threads")
    return Timeline(
        time_s=t, mode=list(tr["mode"]), work=tr["work"], agent_up=tr["agent_up"], soc_pct=tr["soc_pct"],
        temp_board_c=tr["temp_board_c"], shadow_factor=tr["shadow_factor"], events=events,
        commands=result.commands, params=agent_parameters(sc.agent_parameters), step_s=sc.step_s,
        control_period_s=10.0 if lockstep else 1.0,  # hil/loop.py ClosedLoop.agent_config
        compute_threads=threads if threads is not None and len(threads) == len(t) else None,
        work_label="tiles (modelled capacity)" if sc.compute_real else "tiles (modelled)",
    )
