"""The mode manager: owns the agent's mode, the commanded transitions and the fall-back to SAFE.

The rules are pure (flight/agent/modes.py); this component keeps the mode, checks a
``SET_MODE`` against the latest conditions, and tells its listeners (the controller applies
the new mode's power plan at once; systemd's status line follows) when the mode changes.
"""

from __future__ import annotations

from typing import Any, Callable

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.modes import Conditions, commanded_refusal
from flight.agent.ports import Component, EventPort
from flight.link.definitions import Mode
from flight.link.dictionary import FailureCode
from flight.link.messages import CommandRequest


class ModeManager(Component):
    NAME = "mode manager"
    COMMANDS = ("SET_MODE",)
    EVENTS = ("MODE_CHANGED", "SAFE_ENTERED")
    CHANNELS = ("mode",)

    def __init__(self, emit: EventPort, conditions: Callable[[], Conditions]):
        self._emit = emit
        self._conditions = conditions
        self._mode = Mode.BOOT
        self.on_change: list[Callable[[Mode, Mode], None]] = []  # (old, new)
        self.on_commanded: list[Callable[[], None]] = []  # after a commanded change: apply it now

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, new: Mode, reason: str) -> None:
        if new is self._mode:
            return
        old, self._mode = self._mode, new
        self._emit("MODE_CHANGED", old=old.value, new=new.value, reason=reason)
        for listener in self.on_change:
            listener(old, new)

    def enter_safe(self, reason: str) -> None:
        """Automatic fall-back to SAFE: lowest power mode, compute stopped (on the same tick)."""
        if self._mode is Mode.SAFE:
            return
        self._emit("SAFE_ENTERED", reason=reason)
        self.set_mode(Mode.SAFE, reason)

    def telemetry(self) -> dict[str, Any]:
        return {"mode": self._mode.value}

    def handlers(self) -> dict[str, Handler]:
        return {"SET_MODE": Handler(self._set_mode, self._guard)}

    def _guard(self, req: CommandRequest) -> None:
        refusal = commanded_refusal(self._mode, Mode(req.args["mode"]), self._conditions())
        if refusal:
            raise CommandFailed(refusal, FailureCode.NOT_ALLOWED_IN_MODE)

    def _set_mode(self, req: CommandRequest) -> dict[str, Any]:
        old = self._mode
        self.set_mode(Mode(req.args["mode"]), "commanded")
        for apply in self.on_commanded:
            apply()
        return {"old": old.value, "new": self._mode.value}
