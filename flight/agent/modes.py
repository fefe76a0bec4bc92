"""Agent modes and the rules for moving between them (pure logic, no I/O).

    BOOT ──auto──► SAFE ◄──────── any mode (commanded, or automatic on a fault)
                    │ ▲
            command │ │ command / auto
                    ▼ │
                   IDLE ◄──► COMPUTE   (command; COMPUTE also leaves automatically)

SAFE is where the agent starts (after a crash as after a clean stop) and where it falls
back to; leaving it takes a command, or autonomous recovery. COMPUTE is only reached from
IDLE by command, so an operator always passes through a mode where nothing runs.

Autonomous recovery (:func:`recovery_step`): after a fall to SAFE whose cause clears by
itself (a reset or brownout: an unclean stop; a low battery; the hard thermal limit) the agent
returns on its own to the mode it was in, once every cause has been clear for
``recovery_clear_s`` and at most ``recovery_max`` times per ``recovery_window_s``. A commanded
SAFE, repeated faults and lost contact are not recovered: the first is the operator's choice,
the other two mean something a person should look at before the agent carries on.

Stored commands (:func:`stored_refusal`): a time-tagged or sequenced SET_MODE was planned before
whatever the agent has found since; it does not take the agent out of SAFE while ground contact is
lost, nor out of a SAFE that waits for a person (lost contact, repeated faults: :data:`WAITS_FOR_GROUND`)
until the ground has commanded a mode (the stored commands of cFS and F Prime do not override
autonomy's safing either). The battery and thermal guards of :func:`commanded_refusal` hold for them
as for any command.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from flight.link.definitions import MODES_COMMANDABLE as COMMANDABLE, Admission, Mode

__all__ = ["COMMANDABLE", "CONTACT_CAUSE", "Conditions", "Mode", "Pending", "RecoverySettings", "RecoveryStep",
           "cause_after_reset", "commanded_refusal", "recoverable_cause", "recovery_blocker", "recovery_step",
           "stored_refusal", "WAITS_FOR_GROUND"]

# (from, to) pairs a command may ask for; automatic transitions have their own rule below.
_COMMANDED = {
    (Mode.SAFE, Mode.IDLE),
    (Mode.IDLE, Mode.COMPUTE),
    (Mode.COMPUTE, Mode.IDLE),
    (Mode.IDLE, Mode.SAFE),
    (Mode.COMPUTE, Mode.SAFE),
}


@dataclass(frozen=True)
class Conditions:
    """What the guards look at; the agent fills it from its latest readings."""

    battery_soc_pct: float | None
    battery_floor_pct: float
    temp_max_c: float | None
    thermal_soft_limit_c: float
    thermal_hard_limit_c: float
    thermal_hysteresis_c: float = 0.0
    # For autonomous recovery only (the commanded guards do not look at them; a stored command's, contact_lost):
    compute_admission: Admission | None = None  # what the power plan would admit in COMPUTE now (None: no plan yet)
    contact_lost: bool = False
    # The thermal governor's hard-limit latch: tripped and not yet read back below the limit less its hysteresis.
    thermal_latched: bool = False


def commanded_refusal(current: Mode, target: Mode, c: Conditions) -> str | None:
    """Why a commanded change from ``current`` to ``target`` is not allowed now, or None."""
    if target == current:
        return None
    if (current, target) not in _COMMANDED:
        if current is Mode.SAFE and target is Mode.COMPUTE:
            return "SAFE → COMPUTE is not allowed: command IDLE first"
        return f"{current.value} → {target.value} is not a commandable transition"
    if target in (Mode.IDLE, Mode.COMPUTE):
        if c.battery_soc_pct is not None and c.battery_soc_pct < c.battery_floor_pct:
            return f"battery {c.battery_soc_pct:.1f} % is below the floor {c.battery_floor_pct:.1f} %"
        if c.temp_max_c is not None and c.temp_max_c >= c.thermal_hard_limit_c:
            return f"temperature {c.temp_max_c:.1f} °C is at or above the hard limit {c.thermal_hard_limit_c:.1f} °C"
    if target is Mode.COMPUTE and c.temp_max_c is not None and c.temp_max_c >= c.thermal_soft_limit_c:
        return f"temperature {c.temp_max_c:.1f} °C is at or above the soft limit {c.thermal_soft_limit_c:.1f} °C"
    if target is Mode.COMPUTE and c.thermal_latched:  # found in audit: taken with the zones missing meanwhile
        return ("the hard thermal limit has not cleared: no temperature has read "
                f"{c.thermal_hard_limit_c - c.thermal_hysteresis_c:.1f} °C or below since it tripped")
    return None


def stored_refusal(current: Mode, target: Mode, c: Conditions, waits_for_ground: str | None) -> str | None:
    """Why a SET_MODE released on board (a time tag, a sequence step) may not go from ``current`` to ``target``
    now, beyond :func:`commanded_refusal`, or None. ``waits_for_ground``: the cause of this SAFE where it waits for
    the ground (:data:`WAITS_FOR_GROUND`) and the ground has commanded no mode since. Only out of SAFE: a stored
    SAFE is always taken."""
    if current is not Mode.SAFE or target is Mode.SAFE:
        return None
    why = (f"SAFE since {waits_for_ground}" if waits_for_ground else
           "ground contact is lost" if c.contact_lost else None)
    if why is None:
        return None
    return (f"{why}: a time-tagged or sequenced SET_MODE does not take the agent out of SAFE (it waits for the "
            f"ground); command SET_MODE from the ground")


# --- autonomous recovery ---------------------------------------------------------------------

# Automatic SAFE reasons (flight/agent/control_core.py words them) whose cause clears by itself.
# Anything else, repeated faults and lost contact included, waits for a command: an unknown
# reason is not recovered, so a new protection is safe until someone decides otherwise.
_RECOVERABLE_PREFIXES = ("battery ", "hard thermal limit")
BATTERY_CAUSE = "battery "  # how a fall to SAFE for the battery's charge begins (control_core)
CONTACT_CAUSE = "ground contact lost"  # a fall to SAFE that waits for a command from the ground (control_core)
REPEATED_FAULTS = "repeated faults"  # a fall to SAFE that waits for a command
WAITS_FOR_GROUND = (CONTACT_CAUSE, REPEATED_FAULTS)
"""Automatic SAFE causes that wait for a person: only a SET_MODE from the ground lifts them, not a stored one
(:func:`stored_refusal`; found in review: a time tag lifted them, with no one to see)."""
RESET_CAUSE = "reset (previous stop unclean)"
RESET_WHILE_SAFE = f"{RESET_CAUSE}, while SAFE"
"""A reset while waiting to leave a SAFE whose cause the state file did not keep (one written before it did): it
may have been the battery's, so its return needs a battery reading too."""


def cause_after_reset(kept: str | None) -> str:
    """The cause of a pending recovery rebuilt after a reset while SAFE, from ``kept``, the one saved before it:
    kept first, so the checks on why it went SAFE still hold (found in audit: a SAFE for the battery became
    "reset, while SAFE" and left with no battery reading); said once however many resets (bounded)."""
    if not kept:
        return RESET_WHILE_SAFE
    then = f", then a {RESET_CAUSE}"
    return kept if kept.endswith(then) or kept.startswith(RESET_WHILE_SAFE) else f"{kept}{then}"


def recoverable_cause(reason: str) -> bool:
    """Whether an automatic fall to SAFE for ``reason`` may be recovered from without a command."""
    return reason == RESET_CAUSE or reason.startswith(_RECOVERABLE_PREFIXES)


@dataclass(frozen=True)
class RecoverySettings:
    """The parameters ``recovery_enabled``, ``recovery_clear_s``, ``recovery_max``, ``recovery_window_s``."""

    enabled: bool
    clear_s: float
    max_count: int
    window_s: float


@dataclass(frozen=True)
class Pending:
    """A SAFE the agent may leave on its own: for ``target``, because of ``cause``."""

    target: Mode  # IDLE or COMPUTE: the mode it was in
    cause: str
    clear_since_s: float | None = None  # agent monotonic time since when nothing blocks it; None: blocked now
    held_reported: bool = False  # RECOVERY_HELD said once per episode

    def __post_init__(self) -> None:
        assert self.target in (Mode.IDLE, Mode.COMPUTE), self.target


@dataclass(frozen=True)
class RecoveryStep:
    """What one review decides: the pending recovery left, and whether to go now or say it is held."""

    pending: Pending | None
    recover: bool = False  # go to the pending target now
    held: bool = False  # emit RECOVERY_HELD now (the budget is spent)
    count: int = 0  # recoveries within the window, this one included when recover
    blocker: str | None = None  # what holds it in SAFE now, if anything


def recovery_blocker(target: Mode, c: Conditions, cause: str = "") -> str | None:
    """What still keeps the agent from returning to ``target`` on its own, or None when all is clear.

    Stricter than the commanded guard: a reading must be there to be judged (no temperature:
    no return; no battery reading, where ``cause``, why it went SAFE, was the battery: found in
    audit, a gauge that dropped out let the agent leave a low-battery SAFE), the hard limit must
    be cleared by its hysteresis, and COMPUTE only when the power plan would admit work now, so a
    recovery never lands in a mode the power and thermal managers would refuse.
    """
    if c.contact_lost:
        return "ground contact lost"
    if c.temp_max_c is None:
        return "no temperature reading"
    if c.thermal_latched:
        return "the hard thermal limit has not cleared"
    if c.temp_max_c >= c.thermal_hard_limit_c - c.thermal_hysteresis_c:
        return (f"temperature {c.temp_max_c:.1f} °C not yet below the hard limit {c.thermal_hard_limit_c:.1f} °C "
                f"minus {c.thermal_hysteresis_c:.1f} °C")
    if c.battery_soc_pct is not None and c.battery_soc_pct < c.battery_floor_pct:
        return f"battery {c.battery_soc_pct:.1f} % below the floor {c.battery_floor_pct:.1f} %"
    if c.battery_soc_pct is None and cause.startswith(BATTERY_CAUSE):
        return "no battery reading: it went SAFE for the battery"
    if c.battery_soc_pct is None and cause.startswith(RESET_WHILE_SAFE):
        return "no battery reading: it went SAFE before a reset for a cause not kept (the battery's, maybe)"
    if target is Mode.COMPUTE:
        if c.temp_max_c >= c.thermal_soft_limit_c:
            return f"temperature {c.temp_max_c:.1f} °C at or above the soft limit {c.thermal_soft_limit_c:.1f} °C"
        if c.compute_admission is None:
            return "no power plan yet"
        if c.compute_admission is Admission.NONE:
            return "the power plan admits no compute now"
    return None


def recovery_step(pending: Pending | None, c: Conditions, now_mono_s: float, recent_s: tuple[float, ...],
                  now_s: float, s: RecoverySettings) -> RecoveryStep:
    """One review of a pending recovery (pure): ``recent_s`` are the times (UTC, ``now_s``'s clock)
    of earlier automatic recoveries, kept across restarts."""
    if pending is None or not s.enabled:
        return RecoveryStep(pending)
    blocker = recovery_blocker(pending.target, c, pending.cause)
    if blocker is not None:
        return RecoveryStep(replace(pending, clear_since_s=None), blocker=blocker)
    if pending.clear_since_s is None:
        pending = replace(pending, clear_since_s=now_mono_s)
    # Within the window either way: a recovery stamped ahead of now was made before the clock went back (a board
    # without RTC at reboot), and still counts (found in audit: it did not, and a step back gave a fresh budget).
    count = sum(1 for t in recent_s if abs(now_s - t) < s.window_s)
    if now_mono_s - pending.clear_since_s < s.clear_s:
        return RecoveryStep(pending, count=count, blocker=f"clear for {now_mono_s - pending.clear_since_s:.0f} s "
                                                           f"of {s.clear_s:.0f} s")
    if count >= s.max_count:
        held = not pending.held_reported
        return RecoveryStep(replace(pending, held_reported=True), held=held, count=count,
                            blocker=f"{count} recoveries within {s.window_s:.0f} s")
    return RecoveryStep(None, recover=True, count=count + 1)
