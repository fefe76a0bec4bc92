"""The mode manager: owns the agent's mode, the commanded transitions, the fall-back to SAFE and the way back.

The rules are pure (flight/agent/modes.py); this component keeps the mode, checks a
``SET_MODE`` against the latest conditions, and tells its listeners (the controller applies
the new mode's power plan at once; systemd's status line follows) when the mode changes.

Autonomous recovery: an automatic SAFE whose cause clears by itself (a reset, a low battery,
the hard thermal limit) leaves a *pending* recovery to the mode the agent fell from. Each
control tick :meth:`ModeManager.review` asks :func:`flight.agent.modes.recovery_step` whether
its causes have been clear for ``recovery_clear_s`` and the budget (``recovery_max`` per
``recovery_window_s``) allows it; if so the agent returns, saying so with ``MODE_RECOVERED``.
The mode, the mode to resume, why it fell and the times of past recoveries are kept in the state file, so
after an unclean stop (a watchdog reset, a brownout) the agent knows what it was doing and
the budget still counts the recoveries of the previous runs. A command ends any pending
recovery: the operator has taken over.

A SET_MODE released on board (a time tag, a sequence step) does not lift a SAFE while ground contact is lost,
nor one the agent fell to for lost contact or repeated faults until the ground has commanded a mode
(:func:`flight.agent.modes.stored_refusal`): refused, with the reason, as the battery and thermal guards refuse.
That SAFE's cause is kept across a restart (the state file), with the time since contact.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.modes import (
    RESET_CAUSE,
    WAITS_FOR_GROUND,
    Conditions,
    Pending,
    RecoverySettings,
    cause_after_reset,
    commanded_refusal,
    recoverable_cause,
    recovery_step,
    stored_refusal,
)
from flight.agent.ports import Component, EventPort
from flight.link.definitions import Mode
from flight.link.dictionary import FailureCode
from flight.link.messages import CommandRequest


class ModeMemory(Protocol):
    """What the mode manager keeps across restarts (flight.agent.state.PersistentState)."""

    @property
    def mode(self) -> str: ...

    @property
    def resume_mode(self) -> str | None: ...

    @property
    def resume_cause(self) -> str | None: ...

    @property
    def recoveries_s(self) -> tuple[float, ...]: ...

    @property
    def waits_for_ground(self) -> str | None: ...

    def remember_mode(self, mode: str, resume_mode: str | None, waits_for_ground: str | None = None,
                      resume_cause: str | None = None) -> None: ...

    def remember_recovery(self, t_s: float, keep_after_s: float) -> None: ...


class _VolatileMemory:
    """A memory that forgets at exit: for a mode manager built without a state file (tests, tools)."""

    def __init__(self) -> None:
        self.mode, self.resume_mode, self._recoveries = Mode.BOOT.value, None, []
        self.waits_for_ground: str | None = None
        self.resume_cause: str | None = None

    @property
    def recoveries_s(self) -> tuple[float, ...]:
        return tuple(self._recoveries)

    def remember_mode(self, mode: str, resume_mode: str | None, waits_for_ground: str | None = None,
                      resume_cause: str | None = None) -> None:
        self.mode, self.resume_mode, self.waits_for_ground = mode, resume_mode, waits_for_ground
        self.resume_cause = resume_cause

    def remember_recovery(self, t_s: float, keep_after_s: float) -> None:
        self._recoveries = [t for t in self._recoveries if t > keep_after_s] + [t_s]


_RESUMABLE = (Mode.IDLE, Mode.COMPUTE)


class ModeManager(Component):
    NAME = "mode manager"
    COMMANDS = ("SET_MODE",)
    EVENTS = ("MODE_CHANGED", "SAFE_ENTERED", "MODE_RECOVERED", "RECOVERY_HELD")
    CHANNELS = ("mode",)

    def __init__(self, emit: EventPort, conditions: Callable[[], Conditions], memory: ModeMemory | None = None,
                 clock: Any = None, params: Mapping[str, Any] | None = None,
                 on_board: Callable[[], bool] | None = None):
        """``memory`` keeps the mode across restarts; ``clock`` and ``params`` time recoveries
        (without them the agent never recovers on its own); ``on_board()``: whether the command being handled
        was released on board (a time tag, a sequence step), not sent by the ground (without it: every one is the
        ground's)."""
        self._emit = emit
        self._conditions = conditions
        self._memory: ModeMemory = memory if memory is not None else _VolatileMemory()
        self._clock = clock
        self._params = params
        self._on_board = on_board
        self._mode = Mode.BOOT
        self.waits_for_ground: str | None = None  # this SAFE's cause where it waits for a person (WAITS_FOR_GROUND)
        # and the ground has commanded no mode since
        self.pending: Pending | None = None
        self.blocker: str | None = None  # what holds a pending recovery now (for tests and the status line)
        self._safe_reason: str | None = None  # the last automatic fall to SAFE's, for a command it undid at once
        self.on_change: list[Callable[[Mode, Mode], None]] = []  # (old, new)
        self.on_commanded: list[Callable[[], None]] = []  # after a commanded change: apply it now

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, new: Mode, reason: str) -> None:
        if new is self._mode:
            return
        old, self._mode = self._mode, new
        if new is not Mode.SAFE:
            self.waits_for_ground = None
        self._remember()
        self._emit("MODE_CHANGED", old=old.value, new=new.value, reason=reason)
        for listener in self.on_change:
            listener(old, new)

    def _remember(self) -> None:
        resume = self.pending.target.value if self.pending is not None else None
        cause = self.pending.cause if self.pending is not None else None
        self._memory.remember_mode(self._mode.value, resume, self.waits_for_ground, cause)

    def booted(self, previous_stop: str) -> None:
        """Start of time: go SAFE; after an unclean stop, remember what to return to once clear."""
        before = _mode_or_none(self._memory.mode)
        resume = _mode_or_none(self._memory.resume_mode)
        self.pending = None
        kept = self._memory.waits_for_ground  # a SAFE that waited for the ground still does (found in review)
        self.waits_for_ground = kept if before is Mode.SAFE and kept in WAITS_FOR_GROUND else None
        if previous_stop == "unclean":
            if before in _RESUMABLE:
                self.pending = Pending(before, RESET_CAUSE)
            elif before is Mode.SAFE and resume in _RESUMABLE:  # it was waiting to recover when it went down
                self.pending = Pending(resume, cause_after_reset(self._memory.resume_cause))
        self.set_mode(Mode.SAFE, f"boot complete (previous stop {previous_stop})")
        self._remember()  # the pending target, even when the mode did not change

    def enter_safe(self, reason: str) -> None:
        """Automatic fall-back to SAFE: lowest power mode, compute stopped (on the same tick). Already SAFE, a
        cause it does not return from on its own (repeated faults) cancels the return it was waiting for."""
        if reason in WAITS_FOR_GROUND:  # already SAFE too: it now waits for the ground
            self.waits_for_ground = reason
        if self._mode is Mode.SAFE:
            if self.pending is not None and not recoverable_cause(reason):
                self.pending = None
            self._remember()
            return
        self._safe_reason = reason
        self.pending = Pending(self._mode, reason) if self._mode in _RESUMABLE and recoverable_cause(reason) else None
        self._emit("SAFE_ENTERED", reason=reason)
        self.set_mode(Mode.SAFE, reason)

    def settings(self) -> RecoverySettings | None:
        if self._clock is None or self._params is None:
            return None
        p = self._params
        return RecoverySettings(bool(p["recovery_enabled"]), float(p["recovery_clear_s"]), int(p["recovery_max"]),
                                float(p["recovery_window_s"]))

    def review(self) -> None:
        """Each control tick: return from SAFE on its own if a pending recovery is due."""
        settings = self.settings()
        if self.pending is None or settings is None or self._mode is not Mode.SAFE:
            self.blocker = None
            return
        now_s = self._clock.now_s()
        pending = self.pending
        step = recovery_step(pending, self._conditions(), self._clock.monotonic_s(), self._memory.recoveries_s,
                             now_s, settings)
        self.pending, self.blocker = step.pending, step.blocker
        if step.held:
            self._emit("RECOVERY_HELD", count=step.count, window_s=settings.window_s, limit=settings.max_count,
                       reason=f"it went SAFE for: {pending.cause}")
        if not step.recover:
            return
        self._memory.remember_recovery(now_s, keep_after_s=now_s - settings.window_s)
        reason = f"causes clear for {settings.clear_s:.0f} s since: {pending.cause}"
        self._emit("MODE_RECOVERED", old=self._mode.value, new=pending.target.value, reason=reason[:200],
                   count=step.count, limit=settings.max_count)
        self.set_mode(pending.target, "recovered on its own")
        for apply in self.on_commanded:
            apply()

    def telemetry(self) -> dict[str, Any]:
        return {"mode": self._mode.value}

    def handlers(self) -> dict[str, Handler]:
        return {"SET_MODE": Handler(self._set_mode, self._guard)}

    def _guard(self, req: CommandRequest) -> None:
        target, conditions = Mode(req.args["mode"]), self._conditions()
        refusal = stored_refusal(self._mode, target, conditions, self.waits_for_ground) if self._stored() else None
        refusal = refusal or commanded_refusal(self._mode, target, conditions)
        if refusal:
            raise CommandFailed(refusal, FailureCode.NOT_ALLOWED_IN_MODE)

    def _stored(self) -> bool:
        return self._on_board is not None and bool(self._on_board())

    def _set_mode(self, req: CommandRequest) -> dict[str, Any]:
        old = self._mode
        if not self._stored():
            self.waits_for_ground = None  # the ground has seen it
        self.pending = None  # the operator has taken over
        target = Mode(req.args["mode"])
        self._safe_reason = None
        self.set_mode(target, "commanded")
        self._remember()
        for apply in self.on_commanded:
            apply()
        if self._mode is not target:  # found in audit: the tick that applies it fell to SAFE (a reading since the
            # guard's: heat, the battery) and SET_MODE said completed, {"new": "SAFE"} in its result only
            # Said as it stands: the mode was changed twice, and a recoverable cause leaves a return to the mode
            # asked for, which this command does not take away (found in review)
            then = (f"; it returns to {self.pending.target.value} on its own once that clears (a SET_MODE ends that)"
                    if self.pending is not None else "")
            raise CommandFailed(f"{old.value} → {target.value} taken, then SAFE at once: "
                                f"{self._safe_reason or 'fell back'}{then}", FailureCode.EXECUTION_ERROR)
        return {"old": old.value, "new": self._mode.value}


def _mode_or_none(value: str | None) -> Mode | None:
    try:
        return Mode(value) if value is not None else None
    except ValueError:
        return None
