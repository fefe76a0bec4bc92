"""What the agent keeps across restarts besides parameters: boot count, counters, orbit, how it stopped.

``STATE_DIR/state.json`` (atomic, SHA-256 checked). ``running`` is set true at start and
false on a clean stop, so the next start knows whether the last one crashed or lost power.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flight.storage import CorruptFile, printable, quarantine, read_checked_json, redact_paths, write_checked_json


@dataclass
class AgentState:
    boot_count: int = 0
    running: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    tle: list[str] | None = None
    power_mode_cap: str = "AUTO"
    next_job_id: int = 1
    mode: str = "BOOT"  # the mode in force, saved on each change: after a reset, what it was doing
    resume_mode: str | None = None  # the mode an automatic, recoverable SAFE fell from (flight/agent/modes.py)
    resume_cause: str | None = None  # why it fell (modes.Pending.cause): a reset keeps it (found in audit: a SAFE for
    # the battery became "reset, while SAFE" and was left with no battery reading); None in a file from before
    waits_for_ground: str | None = None  # the cause of a SAFE only the ground's SET_MODE lifts (modes.WAITS_FOR_GROUND)
    recoveries_s: list[float] = field(default_factory=list)  # times (agent UTC) of automatic recoveries
    tc_replay_kept: bool = False  # a telecommand replay window was written: its absence later is a loss
    file_transfers_kept: bool = False  # the file transfers' state (files.json) was written: its absence later is a loss
    last_contact_utc_s: float | None = None  # the last valid packet from the ground (UTC), saved periodically


def _check_types(state: AgentState, path: Path) -> None:
    """A file can pass its hash and still hold nonsense (written by a bug): check every field."""
    ok = (
        isinstance(state.boot_count, int) and not isinstance(state.boot_count, bool) and state.boot_count >= 0
        and isinstance(state.running, bool)
        and isinstance(state.counters, dict)
        and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in state.counters.items())
        and (state.tle is None or (isinstance(state.tle, list) and len(state.tle) == 2
                                   and all(isinstance(line, str) for line in state.tle)))
        and isinstance(state.power_mode_cap, str)
        and isinstance(state.next_job_id, int) and state.next_job_id >= 1
        and isinstance(state.mode, str) and (state.resume_mode is None or isinstance(state.resume_mode, str))
        and (state.resume_cause is None or isinstance(state.resume_cause, str))
        and (state.waits_for_ground is None or isinstance(state.waits_for_ground, str))
        and isinstance(state.recoveries_s, list)
        and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in state.recoveries_s)
        and isinstance(state.tc_replay_kept, bool)
        and isinstance(state.file_transfers_kept, bool)
        and (state.last_contact_utc_s is None or (isinstance(state.last_contact_utc_s, (int, float))
                                                  and not isinstance(state.last_contact_utc_s, bool)
                                                  and math.isfinite(state.last_contact_utc_s)))
    )
    if not ok:
        raise CorruptFile(f"{path}: a field has the wrong type or range")


class StateFile:
    """``state.json`` and the copy before its last write, ``state.json.bak``: each write renames the file in
    force to the copy, then writes the new one (temp file, fsync, rename), so no byte more is written. A file
    that fails its check, or that a power cut between the two renames left missing, gives way to the copy: the
    state one write older, not the defaults (found in audit: one flipped bit in the only copy lifted a
    commanded power-mode cap and restarted the boot count)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".bak")
        self.load_error: str | None = None  # what was wrong at start and what is in force (STATE_CORRUPT)
        self._last_written: dict[str, Any] | None = None

    def _read(self, path: Path) -> AgentState:
        body = read_checked_json(path)
        if not isinstance(body, dict):
            raise CorruptFile(f"{path}: expected a map")
        state = AgentState(**{k: v for k, v in body.items() if k in AgentState.__dataclass_fields__})
        _check_types(state, path)
        return state

    def load(self) -> AgentState:
        errors = []
        for copy in (self.path, self.backup):
            if not copy.exists():
                continue
            try:
                state = self._read(copy)
            except (CorruptFile, TypeError, AttributeError) as exc:
                errors.append(f"{exc}; moved aside ({copy.name}.corrupt)" if quarantine(copy) else str(exc))
                continue
            if errors:  # (no error, and the copy read: a power cut between a write's two renames, the last state)
                self.load_error = f"{'; '.join(errors)}, the copy before its last write ({copy.name}) in force"
            return state
        if errors:
            self.load_error = f"{'; '.join(errors)}, defaults in force (power-mode cap AUTO, the configured TLE)"
        return AgentState()

    def save(self, state: AgentState) -> bool:
        """Write if anything changed since the last write (flash wears); True if written."""
        body = asdict(state)
        if body == self._last_written:
            return False
        if self.path.exists():
            os.replace(self.path, self.backup)  # the file in force becomes the copy; the new one's rename follows
        write_checked_json(self.path, body)
        self._last_written = body
        return True


STATE_SAVE_PERIOD_S = 60.0  # counters alone are saved at most this often (flash wears)


class PersistentState:
    """The agent's state file with its write policy, and narrow accessors for the components.

    Saved at once when something that must not be lost changes (a job id handed out, the
    orbit, the power-mode cap); counters only every :data:`STATE_SAVE_PERIOD_S` of agent time,
    so a console pinging every second does not mean 86 400 flash writes a day (found in audit: the
    command counters were saved as soon as they changed, a PING's too), but at once where the
    caller says a command that changes something ran (``urgent``): it must still count after a
    power cut.
    """

    def __init__(self, path: Path, clock: Any):
        self.file = StateFile(path)
        self.state = self.file.load()
        self._clock = clock
        self.previous_stop = "clean" if not self.state.running else "unclean"
        if self.state.boot_count == 0 and self.file.load_error is None:
            self.previous_stop = "first start"
        elif self.file.load_error is not None:  # the defaults say nothing of how it stopped (an audit: "clean")
            self.previous_stop = "unclean"
        self.state.boot_count += 1
        self.state.running = True
        self._saved_at_s = float("-inf")
        self.write_failures = 0  # writes of the state file the disk refused, this boot
        self.write_error: str | None = None  # why the last one failed; None once one succeeds

    @property
    def boot_count(self) -> int:
        return self.state.boot_count

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.state.counters)

    # --- for the controller -------------------------------------------------------------------

    @property
    def tle(self) -> list[str] | None:
        return self.state.tle

    def remember_tle(self, lines: list[str] | None) -> bool:
        """In force now; True where also kept for the next start (the file written)."""
        self.state.tle = lines
        return self.save(force=True)

    @property
    def power_mode_cap(self) -> str:
        return self.state.power_mode_cap

    def remember_cap(self, name: str) -> bool:
        """In force now; True where also kept for the next start (the file written)."""
        self.state.power_mode_cap = name
        return self.save(force=True)

    # --- for the mode manager -----------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.state.mode

    @property
    def resume_mode(self) -> str | None:
        return self.state.resume_mode

    @property
    def resume_cause(self) -> str | None:
        return self.state.resume_cause

    @property
    def recoveries_s(self) -> tuple[float, ...]:
        return tuple(self.state.recoveries_s)

    @property
    def waits_for_ground(self) -> str | None:
        return self.state.waits_for_ground

    def remember_mode(self, mode: str, resume_mode: str | None, waits_for_ground: str | None = None,
                      resume_cause: str | None = None) -> None:
        """Saved at once: modes change rarely, and a reset must find what the agent was doing (and a SAFE that
        waits for the ground, that it still does: found in review, a restart let a time tag lift it; and why a SAFE
        it would leave on its own fell, so that its return still needs what it needed)."""
        self.state.mode, self.state.resume_mode, self.state.waits_for_ground = mode, resume_mode, waits_for_ground
        self.state.resume_cause = resume_cause
        self.save(force=True)

    def remember_recovery(self, t_s: float, keep_after_s: float) -> None:
        """An automatic recovery at ``t_s``; those at or before ``keep_after_s`` are forgotten (bounded)."""
        self.state.recoveries_s = [t for t in self.state.recoveries_s if t > keep_after_s][-99:] + [float(t_s)]
        self.save(force=True)

    # --- for the link service's contact --------------------------------------------------------------

    @property
    def last_contact_utc_s(self) -> float | None:
        return self.state.last_contact_utc_s

    def note_contact(self, utc_s: float) -> None:
        """The last contact's time, kept with the next save (periodic: at most a minute old after a reset)."""
        self.state.last_contact_utc_s = float(utc_s)

    # --- for the link service's replay window ---------------------------------------------------

    @property
    def tc_replay_kept(self) -> bool:
        return self.state.tc_replay_kept

    def remember_tc_replay_kept(self) -> None:
        """Saved at once: from now on a replay window that is not there was lost (flight/link/sdls.py)."""
        if not self.state.tc_replay_kept:
            self.state.tc_replay_kept = True
            self.save(force=True)

    # --- for the file transfers ------------------------------------------------------------------

    @property
    def file_transfers_kept(self) -> bool:
        return self.state.file_transfers_kept

    def remember_file_transfers_kept(self) -> None:
        """Saved at once: from now on a transfer state (files.json) that is not there was lost (the ground's gets
        queued on board with it: STATE_CORRUPT says it)."""
        if not self.state.file_transfers_kept:
            self.state.file_transfers_kept = True
            self.save(force=True)

    # --- for the compute supervisor -----------------------------------------------------------

    def job_ids_above(self, highest: int) -> None:
        """No job id at or below ``highest`` is handed out again (the highest a product or checkpoint on the
        board names: an audit found a damaged state file restarting ids at 1, over products not yet down)."""
        if highest >= self.state.next_job_id:
            self.state.next_job_id = highest + 1
            self.save(force=True)

    def allocate_job_id(self) -> int:
        """A job id never handed out before, saved before it is used: OSError where it could not be."""
        job_id = self.state.next_job_id
        self.state.next_job_id += 1
        if not self.save(force=True):
            raise OSError(f"no job id handed out unsaved: the agent's state file could not be written "
                          f"({self.write_error})")
        return job_id

    # --- the policy -----------------------------------------------------------------------------

    def save(self, counters: dict[str, int] | None = None, force: bool = False, stopping: bool = False,
             urgent: bool = False) -> bool:
        """Write if something important changed, or counters are due (``urgent``: with ``counters`` now, a
        command that changes something having run). False where the disk refused the write (full, read-only,
        failing): counted (:attr:`write_failures`, :attr:`write_error`) and the state kept in memory, tried
        again at the next change or period. Found in audit: the error went to whoever changed the state, and a
        full disk stopped the agent at boot (its mode to SAFE), for good, SAFE's own unit included."""
        now = self._clock.monotonic_s()
        due = force or stopping or now - self._saved_at_s >= STATE_SAVE_PERIOD_S
        if counters is not None:
            due = due or urgent
            if due:
                self.state.counters = dict(counters)
        if stopping:
            self.state.running = False
        if not due:
            return True
        self._saved_at_s = now
        try:
            self.file.save(self.state)
        except OSError as exc:
            self.write_failures += 1
            self.write_error = printable(redact_paths(exc.strerror or str(exc)))[:160]
            return False
        self.write_error = None
        return True
