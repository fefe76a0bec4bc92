"""The executive: the agent's identity and life (start, stop, counters, internal errors).

It answers the commands every Sunlit agent has whatever its payload (cFS's NOOP and
RESET_COUNTERS, a PING that says who answers, SHUTDOWN), tells the ground how the agent
started and how the last run ended, and counts the errors the loop caught.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.ports import Component, EventPort, FaultLog, ModePort
from flight.clock import Clock
from flight.link.messages import CommandRequest


# How the process ends, for its service manager (deploy/systemd: RestartForceExitStatus=75).
EXIT_STAY_DOWN = 0        # a SHUTDOWN ... then=STAY_DOWN, or SIGTERM: not restarted until the next boot
EXIT_RESTART_SAFE = 75    # EX_TEMPFAIL: SHUTDOWN then=RESTART_SAFE: started again, in SAFE as every start
SHUTDOWN_EXIT = {"RESTART_SAFE": EXIT_RESTART_SAFE, "STAY_DOWN": EXIT_STAY_DOWN}


class Executive(Component):
    NAME = "executive"
    COMMANDS = ("NOOP", "PING", "RESET_COUNTERS", "SHUTDOWN")
    EVENTS = ("AGENT_STARTED", "AGENT_STOPPING", "PING_RECEIVED", "COUNTERS_RESET", "INTERNAL_ERROR",
              "STATE_CORRUPT", "TEMP_FILES_REMOVED", "STATE_NOT_WRITTEN", "EARLY_EVENTS_DROPPED")
    CHANNELS = ("boot_count", "uptime_s", "dict_hash", "internal_errors", "hal_backend", "control_late_p99_ms",
                "state_corrupt", "state_write_failures")

    def __init__(self, emit: EventPort, clock: Clock, faults: FaultLog, modes: ModePort, *, boot_count: int,
                 dict_hash: str, hal_backend: str, control_late_p99_s: Callable[[], float | None],
                 stop: Callable[[str, int], int], resets: Iterable[Callable[[], None]]):
        """``stop(reason, exit_status)`` ends the loop after this turn; ``resets`` zero the other
        components' counters."""
        self._emit = emit
        self._clock = clock
        self._faults = faults
        self._modes = modes
        self.boot_count = boot_count
        self.dict_hash = dict_hash
        self.hal_backend = hal_backend
        self._late_p99_s = control_late_p99_s
        self._stop = stop
        self._resets = tuple(resets)
        self.started_s = clock.monotonic_s()
        self.internal_errors = 0
        self.state_corrupt = 0  # stored files found wrong at start, each said as STATE_CORRUPT
        self.state_write_failures = 0  # writes of the state file the disk refused, said as STATE_NOT_WRITTEN
        self._state_failures_seen = 0  # the state file's own count, as of the last look

    def uptime_s(self) -> float:
        return self._clock.monotonic_s() - self.started_s

    def booted(self, *, previous_stop: str, link: str, problems: Iterable[tuple[str, str]],
               removed: int) -> None:
        """Time begins: say how the last run ended and what was found on the way up."""
        self.started_s = self._clock.monotonic_s()
        for what, reason in problems:
            self.state_corrupt += 1
            self._emit("STATE_CORRUPT", what=what, reason=reason)
        if removed:
            self._emit("TEMP_FILES_REMOVED", count=removed, where="state directory")
        self._emit("AGENT_STARTED", boot_count=self.boot_count, previous_stop=previous_stop, dict_hash=self.dict_hash,
                   link=link, hal=self.hal_backend)

    def early_events_dropped(self, count: int, kept: int) -> None:
        """After the events held from before time began: how many did not fit (said, not only lost)."""
        if count:
            self._emit("EARLY_EVENTS_DROPPED", count=count, kept=kept)

    def state_writes(self, failures: int, reason: str | None) -> None:
        """Once a housekeeping period: writes of the state file that failed since the last look (``failures``:
        the file's count this boot), said in one STATE_NOT_WRITTEN with the last reason. Not a fault: the agent
        runs on from memory, and the operators free the disk (DISK_LOW says how)."""
        new = failures - self._state_failures_seen
        self._state_failures_seen = failures
        if new > 0:
            self.state_write_failures += new
            self._emit("STATE_NOT_WRITTEN", count=new, reason=reason or "written since")

    def stopping(self, reason: str) -> None:
        self._emit("AGENT_STOPPING", reason=reason)

    def internal_error(self, where: str, exc: BaseException) -> None:
        """The last line of defence: count, record a fault, report; the loop carries on."""
        self.internal_errors += 1
        self._faults.record(where)
        self._emit("INTERNAL_ERROR", where=where, reason=f"{type(exc).__name__}: {exc}")

    # --- commands ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"NOOP": Handler(lambda req: None), "PING": Handler(self._ping),
                "RESET_COUNTERS": Handler(self._reset_counters), "SHUTDOWN": Handler(self._shutdown)}

    def _ping(self, req: CommandRequest) -> dict[str, Any]:
        token = req.args["token"]
        self._emit("PING_RECEIVED", token=token)
        return {"token": token, "uptime_s": round(self.uptime_s(), 3), "dict_hash": self.dict_hash,
                "mode": self._modes.mode.value, "boot_count": self.boot_count}

    def _reset_counters(self, req: CommandRequest) -> None:
        self.internal_errors = self.state_corrupt = self.state_write_failures = 0
        for reset in self._resets:
            reset()
        self._emit("COUNTERS_RESET")

    def _shutdown(self, req: CommandRequest) -> dict[str, Any]:
        then = req.args["then"]
        status = self._stop(f"commanded: {req.args['reason']}; then {then}", SHUTDOWN_EXIT[then])
        if status != SHUTDOWN_EXIT[then]:  # a stop asked before this one decides how the run ends
            raise CommandFailed(f"then: a stop is already under way and exits with status {status}, not "
                                f"{SHUTDOWN_EXIT[then]} ({then})")
        return {"stopping": True, "then": then, "exit_status": status}

    def telemetry(self) -> dict[str, Any]:
        late = self._late_p99_s()
        return {"boot_count": self.boot_count, "uptime_s": round(self.uptime_s(), 3), "dict_hash": self.dict_hash,
                "internal_errors": self.internal_errors, "hal_backend": self.hal_backend,
                "control_late_p99_ms": None if late is None else round(late * 1000.0, 3),
                "state_corrupt": self.state_corrupt, "state_write_failures": self.state_write_failures}
