"""The scheduler: time-tagged commands and stored sequences (PUS service 11) run through the
same dispatcher as the ground's commands, with every verification report (the logic and its
files: :mod:`flight.agent.schedule`; the format: ``docs/sequences.md``).

- A released entry or a sequence step is dispatched as an ordinary TC(8,1) with a fresh
  cmd_id: acceptance, start and completion go out on the stream, and ``SCHEDULE_RELEASED``
  ties the cmd_id to its entry (the "tag"). Release is at most once (the schedule is written
  before the dispatch), so a reset between the two loses the command instead of running it
  twice; ``SCHEDULE_HELD`` reports entries held after a clock jump or a restart.
- One sequence runs at a time, from ``STATE_DIR/sequences/NAME.toml``; its state is kept after
  each step (atomic, checksummed) and resumed after a restart, checked again as ``SEQUENCE_START``
  checks it (or ended, ``SEQUENCE_DONE``), a command cut off by the reset counting as failed,
  never sent again.
- A sequence file sent up by CFDP is checked here before the file manager puts it in place
  (:meth:`Scheduler.check_upload`), and the running sequence's file is not deleted nor replaced
  (:meth:`Scheduler.file_in_use`): a resume needs the very file the run started from.
- The loop wakes for the next release or wait (:meth:`Scheduler.next_due_s`, monotonic):
  nothing polls.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.file_args import SEQUENCE, check_value
from flight.agent.ports import Component, EventPort
from flight.agent.schedule import (
    SEQUENCES_DIR,
    Finished,
    PowerModes,
    ScheduleEntry,
    ScheduleError,
    SendCommand,
    Sequence,
    SequenceError,
    SequenceRun,
    TimeSchedule,
    load_sequence,
)
from flight.clock import Clock
from flight.files.filestore import NameRefused, resolve
from flight.link.dictionary import FailureCode
from flight.link.messages import CommandRequest, new_cmd_id
from flight.storage import CorruptFile, fsync_path, quarantine, read_checked_json, write_checked_json

LIST_MAX = 40  # entries in SCHEDULE_LIST's completion report (the count is always whole)
TELEMETRY_POLL_S = 1.0  # a wait_for step looks at telemetry this often


def time_tag_cmd_id(entry: ScheduleEntry) -> int:
    """A time tag's command identity, its entry's own: 63 bits of a hash of its id, when it was inserted, its release
    time and its command, the same at every release of it (after a restart too), and another for an entry that
    took a lost schedule's id again (found in review: the id alone repeated where the schedule and its ids file
    were both lost)."""
    key = repr((entry.entry_id, entry.inserted_unix_s, entry.release_unix_s, entry.command)).encode()
    return (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1) or 1


@contextlib.contextmanager
def _answered(not_done: str) -> Iterator[None]:
    """A schedule change as a command's answer: the schedule's refusal with its code, or a disk
    that would not keep it (then ``not_done``: nothing changed)."""
    try:
        yield
    except ScheduleError as exc:
        raise CommandFailed(str(exc), exc.code) from None
    except OSError as exc:
        raise CommandFailed(f"{not_done}: the schedule could not be kept ({exc.strerror or exc})") from None


class Scheduler(Component):
    NAME = "scheduler"
    COMMANDS = ("SCHEDULE_AT", "SCHEDULE_AFTER", "SCHEDULE_DELETE", "SCHEDULE_RESET", "SCHEDULE_LIST",
                "SCHEDULE_RELEASE", "SEQUENCE_START", "SEQUENCE_ABORT")
    EVENTS = ("SCHEDULE_RELEASED", "SCHEDULE_HELD", "SCHEDULE_ERROR", "SEQUENCE_STARTED", "SEQUENCE_RESUMED",
              "SEQUENCE_DONE", "CLOCK_JUMPED")
    CHANNELS = ("schedule_entries", "schedule_held", "schedule_next_in_s", "schedule_released",
                "schedule_release_errors", "schedule_late_ms", "sequence_running", "sequence_step", "clock_jumps",
                "sequences_not_resumed")

    def __init__(self, state_dir: Path, clock: Clock, emit: EventPort,
                 dispatch: Callable[[str, dict[str, Any], int], None], telemetry: Callable[[], Mapping[str, Any]],
                 power_modes: PowerModes | None = None):
        """``dispatch(name, args, cmd_id)``: run a command through the dispatcher as if the ground
        had sent it; ``telemetry()``: every channel's value now (for wait_for steps); ``power_modes()``: the
        board's power-mode names, or None where it cannot say, so that a time tag or a step of SET_POWER_MODE
        naming a mode the board lacks is refused when given, not at its release (without it: at its release)."""
        self._clock = clock
        self._emit = emit
        self._dispatch = dispatch
        self._telemetry = telemetry
        self.state_dir = Path(state_dir)
        self._power_modes = power_modes
        self.schedule = TimeSchedule(Path(state_dir) / "schedule.json", power_modes=power_modes)
        self.sequences_dir = Path(state_dir) / "sequences"
        self._run_path = Path(state_dir) / "sequence_run.json"
        self.run: SequenceRun | None = None
        self._run_cmd: tuple[int, int] | None = None  # (cmd_id, step) of the step command in flight
        self._run_error: str | None = None
        self._run_damaged = False
        self._state_left = False  # an ended run's state that could not be removed (tried again at each look)
        self._not_resumed: tuple[str, str] | None = None  # (name, why) of a kept run that failed its checks
        self.not_resumed = 0  # kept runs not resumed at this start: damaged, or refused by the checks
        self.released = 0
        self.release_errors = 0  # due entries whose release raised (SCHEDULE_ERROR each)
        self.clock_jumps = 0  # UTC steps seen against the monotonic clock (CLOCK_JUMPED)
        self.late_ms: float | None = None
        self._telemetry_at = -math.inf
        self._persist_reported: str | None = None
        self._resume()

    # --- the loop ----------------------------------------------------------------------------

    def time_began(self) -> None:
        """Boot: report what loading found, then take the first look (which holds what fell
        due while the agent was down)."""
        if self.schedule.load_error:
            self._emit("SCHEDULE_ERROR", reason=self._relative(self.schedule.load_error))
        for dropped in self.schedule.dropped_at_load:
            self._emit("SCHEDULE_ERROR", reason=self._relative(f"entry left out at load: {dropped}"))
        if self._run_error:
            self._emit("SCHEDULE_ERROR", reason=self._relative(self._run_error))
        if self.run is not None:  # said before its next step runs (found in audit: silent until its SEQUENCE_DONE)
            self._emit("SEQUENCE_RESUMED", name=self.run.sequence.name, step=self.run.index,
                       steps=len(self.run.sequence.steps))
        if self._not_resumed is not None:  # it ends, as any run does (an audit: said as a SCHEDULE_ERROR only)
            name, why = self._not_resumed
            self._emit("SEQUENCE_DONE", name=name, ok=False, reason=self._relative(why))
            failed = self._forget_run()  # only once its end is said (found in review: removed before, in __init__)
            self._state_left = failed is not None  # tried again at each look, as an ended run's (found in review)
            if failed:
                self._emit("SCHEDULE_ERROR", reason=failed + "; a reset now would try to resume the ended run")
        self.service()

    def service(self) -> None:
        """Release what is due, advance the sequence."""
        now, mono = self._clock.now_s(), self._clock.monotonic_s()
        jump = self.schedule.check_clock(now, mono)
        if jump is not None and jump.delta_s:  # every step of UTC said, not only one that made entries due (an
            self.clock_jumps += 1               # audit: a step back, or one forward with nothing due, went unsaid)
            self._emit("CLOCK_JUMPED", delta_s=jump.delta_s, reason=jump.reason)
        if jump is not None and jump.overdue:
            self._emit("SCHEDULE_HELD", count=len(jump.overdue), reason=jump.reason)
        if jump is not None and jump.delta_s and self.run is not None:  # its waits keep their length
            self.run.shift(jump.delta_s)
            self._save_run()
        for entry in self.schedule.due(now):
            try:  # each on its own (found in audit: one that failed to go out lost those due with it, unsaid)
                self._release(entry, now)
            except Exception as exc:  # noqa: BLE001 - this entry is said; the others due with it still go
                self.release_errors += 1
                self._emit("SCHEDULE_ERROR", reason=self._relative(
                    f"entry {entry.entry_id} ({entry.command}) not released: {type(exc).__name__}: {exc}"))
        if self.schedule.persist_error != self._persist_reported:
            self._persist_reported = self.schedule.persist_error
            if self._persist_reported:
                self._emit("SCHEDULE_ERROR", reason=self._relative(self._persist_reported))
        if self.run is not None:
            self._advance(now, mono)
        elif self._state_left and self._forget_run() is None:  # an ended run's state, removed at last
            self._state_left = False

    def _relative(self, text: str) -> str:
        """``text`` with the state directory's absolute path taken out (a file error names its
        file): events never give away the board's paths."""
        for root in {str(self.state_dir.absolute()), os.path.realpath(self.state_dir)}:
            text = text.replace(root + os.sep, "").replace(root, ".")
        return text

    def next_due_s(self) -> float | None:
        """When the loop must look again (the agent's monotonic clock), None if nothing waits."""
        now, mono = self._clock.now_s(), self._clock.monotonic_s()
        times = []
        release = self.schedule.next_release_s()
        if release is not None:
            times.append(mono + max(0.0, release - now))
        if self.run is not None:
            wake = self.run.next_wake_s()
            if wake is not None:
                times.append(mono + max(0.0, wake - now))
            if self.run.waiting_on == "telemetry":
                times.append(self._telemetry_at + TELEMETRY_POLL_S)
        return min(times) if times else None

    def command_final(self, cmd_id: int, ok: bool, reason: str) -> None:
        """The dispatcher's final report of any command: feeds the sequence step waiting for it."""
        if self.run is None or self._run_cmd is None or self._run_cmd[0] != cmd_id:
            return
        step = self._run_cmd[1]
        self._run_cmd = None
        self.run.command_done(step, ok, reason)
        self._save_run()

    def _release(self, entry: ScheduleEntry, now: float) -> None:
        # The entry's own command identity (ids are never given twice): released again after a restart whose
        # schedule could not record its release, it is answered from the command journal, not run a second time
        # (found in audit: a full disk, a restart, and the time tag ran twice).
        cmd_id = time_tag_cmd_id(entry)
        self.released += 1
        self.late_ms = max(0.0, now - entry.release_unix_s) * 1000.0
        self._emit("SCHEDULE_RELEASED", entry_id=entry.entry_id, command=entry.command, cmd_id=cmd_id,
                   late_ms=round(self.late_ms, 3))
        self._dispatch(entry.command, dict(entry.args), cmd_id)

    def _advance(self, now: float, mono: float) -> None:
        run = self.run
        for _ in range(len(run.sequence.steps) + 2):
            telemetry: Mapping[str, Any] = {}
            if run.waiting_on == "telemetry":
                if mono < self._telemetry_at + TELEMETRY_POLL_S and run.next_wake_s() > now:
                    return
                self._telemetry_at = mono
                telemetry = self._telemetry()
            before = run.to_state()
            action = run.poll(now, telemetry)
            if action is None:
                if run.to_state() != before:
                    self._save_run()
                return
            if isinstance(action, Finished):
                self._end_run(action.ok, action.reason)
                return
            assert isinstance(action, SendCommand)
            cmd_id = new_cmd_id()
            self._run_cmd = (cmd_id, action.step_index)
            failed = self._save_run()  # sent is on disk before it goes: after a reset it is never sent again
            if failed is not None:  # not kept: not sent, and the run ends (found in audit: sent, and after a reset
                self._end_run(False, f"step[{action.step_index}] not sent: the sequence state could not be "  # sent
                                     f"kept ({failed}), and a reset would send it again")  # again from the state kept
                return
            self._dispatch(action.command, action.args, cmd_id)
            if self.run is None or self._run_cmd is not None:
                return  # waits for its completion (a deferred one comes later)

    def _end_run(self, ok: bool, reason: str) -> str | None:
        """The run ended and its state removed; None, or why the state is still there (said, and removed again at
        each look until it goes: left, the next start would resume the ended run)."""
        name = self.run.sequence.name
        self.run, self._run_cmd = None, None
        failed = self._forget_run()
        self._state_left = failed is not None
        if failed:
            self._emit("SCHEDULE_ERROR", reason=failed + "; a reset now would resume the ended run")
        self._emit("SEQUENCE_DONE", name=name, ok=ok, reason=self._relative(reason))
        return failed

    def _forget_run(self) -> str | None:
        """The run's state removed, and the removal kept (after a power cut an ended run must not resume); None, or
        why not."""
        try:
            self._run_path.unlink(missing_ok=True)
            fsync_path(self._run_path.parent)
        except OSError as exc:
            return f"sequence state not removed: {exc.strerror or exc.__class__.__name__}"
        return None

    # --- persistence of the run -------------------------------------------------------------

    def _save_run(self) -> str | None:
        """The run's state to disk; None if kept, else why not (said)."""
        if self.run is None:
            return None
        try:
            write_checked_json(self._run_path, self.run.to_state())
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            self._emit("SCHEDULE_ERROR", reason=f"sequence state not kept ({why}); a reset now would take the run up "
                                                "from the last state kept")
            return why
        return None

    def _resume(self) -> None:
        """The run kept across the restart, checked again as SEQUENCE_START checks it (:meth:`_open_run`): the board's
        modes, the clock, the file may have changed since. A damaged state is set aside (``state_corrupt``); a run
        that fails a check ends (SEQUENCE_DONE at :meth:`time_began`). Either way counted, and the agent goes on."""
        if not self._run_path.exists():
            return
        name = ""
        try:
            state = read_checked_json(self._run_path)
            kept = state.get("sequence") if isinstance(state, dict) else None
            if not isinstance(kept, str):
                raise CorruptFile(f"{self._run_path}: no sequence name")
            name = kept
            self.run = self._open_run(name, self._clock.now_s(), state)
            return
        except CorruptFile as exc:  # the state file itself: kept aside to look at
            self._run_error = f"sequence run not resumed: {exc}"
            self._run_damaged = True
            quarantine(self._run_path)
        except CommandFailed as exc:  # a sound state whose run no longer passes: it ends
            self._refused(name, exc.reason)
        except Exception as exc:  # noqa: BLE001 - an unforeseen error here would stop every start of the agent
            self._refused(name, f"{type(exc).__name__}: {exc}")
        self.not_resumed += 1
        self.run = None

    def _refused(self, name: str, why: str) -> None:
        """A kept run that will not resume: its end said at :meth:`time_began`, and its state removed only then (it
        would be refused again at every start): a start that fails before it, or a power cut, leaves the state, so
        the next start says the run's end rather than never."""
        self._not_resumed = (name, f"not resumed at the restart: {why}")

    # --- commands ----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "SCHEDULE_AT": Handler(lambda req: self._insert(req, at=True)),
            "SCHEDULE_AFTER": Handler(lambda req: self._insert(req, at=False)),
            "SCHEDULE_DELETE": Handler(self._delete),
            "SCHEDULE_RESET": Handler(self._reset),
            "SCHEDULE_LIST": Handler(self._list),
            "SCHEDULE_RELEASE": Handler(self._release_held),
            "SEQUENCE_START": Handler(self._start),
            "SEQUENCE_ABORT": Handler(self._abort),
        }

    def _insert(self, req: CommandRequest, at: bool) -> dict[str, Any]:
        try:
            args = json.loads(req.args["args"])
        except ValueError as exc:
            raise CommandFailed(f"args: not JSON ({exc})", FailureCode.BAD_ARGUMENTS) from None
        if not isinstance(args, dict):
            raise CommandFailed("args: a JSON object of the command's arguments, e.g. {\"mode\": \"IDLE\"}",
                                FailureCode.BAD_ARGUMENTS)
        now = self._clock.now_s()
        with _answered("nothing was scheduled"):
            if at:
                entry = self.schedule.insert_at(req.args["release_unix_s"], req.args["command"], args, now)
            else:
                entry = self.schedule.insert_after(req.args["delay_s"], req.args["command"], args, now)
        return {"entry_id": entry.entry_id, "release_unix_s": entry.release_unix_s}

    def _delete(self, req: CommandRequest) -> dict[str, Any]:
        with _answered("not deleted"):
            entry = self.schedule.delete(req.args["entry_id"])
        return {"entry_id": entry.entry_id, "command": entry.command}

    def _reset(self, _req: CommandRequest) -> dict[str, Any]:
        with _answered("not reset"):
            return {"deleted": self.schedule.reset()}

    def _list(self, _req: CommandRequest) -> dict[str, Any]:
        entries = self.schedule.entries()
        return {"count": len(entries), "next_id": self.schedule.next_id,
                "entries": [{"id": e.entry_id, "at": e.release_unix_s, "command": e.command, "held": e.held}
                            for e in entries[:LIST_MAX]]}

    def _release_held(self, req: CommandRequest) -> dict[str, Any]:
        entry_id = req.args["entry_id"] or None
        with _answered("not released"):
            released = self.schedule.release_held(entry_id)
        return {"released": len(released)}

    def _path_of(self, name: str) -> Path:
        """``sequences/NAME.toml``, confined: no path, no hidden file, no symlink (nor a sequences/
        that is one) out of the state directory."""
        try:
            check_value(SEQUENCE, "name", name)
            path = resolve(self.state_dir, f"sequences/{name}.toml", None, "name")
        except NameRefused as exc:
            raise CommandFailed(str(exc).replace("the file area", "the state directory (a symbolic link)"),
                                FailureCode.BAD_ARGUMENTS) from None
        if path.is_symlink():
            raise CommandFailed(f"name: sequence {name} is a symbolic link; sequences are plain files",
                                FailureCode.BAD_ARGUMENTS)
        return path

    def _open_run(self, name: str, now: float, state: Mapping[str, Any] | None = None) -> SequenceRun:
        """SEQUENCE_START's checks of ``sequences/NAME.toml`` (confined, parsed, every step against the dictionary
        and the board's power modes, the waits within 30 days of now) and its run: a new one, or the one ``state``
        kept, on the very file it was started from (its digest). One function for both, so a resume is checked as a
        start is (found in review: a resume took the file with none of the board's checks, nor the waits' bound).
        :class:`CommandFailed` naming the file, the step and the key."""
        path = self._path_of(name)
        if not path.is_file():
            raise CommandFailed(f"name: no sequence {name} in the sequences directory{self._names_near(name)}",
                                FailureCode.BAD_ARGUMENTS)
        sequence = self._checked(name, path)
        try:
            run = SequenceRun(sequence, now) if state is None else SequenceRun.from_state(sequence, state)
            run.check_reach(now)
        except SequenceError as exc:
            raise CommandFailed(str(exc).replace(str(self.sequences_dir), SEQUENCES_DIR), FailureCode.BAD_ARGUMENTS) \
                from None
        return run

    def _names_near(self, name: str) -> str:
        """What the operator may have meant by a sequence ``name`` not there (found in audit: "w.toml" or "W" for
        sequences/w.toml got only "no sequence"): the name without .toml, another case, else what there is."""
        try:
            names = sorted(p.stem for p in self.sequences_dir.glob("*.toml") if p.is_file() and not p.is_symlink())
        except OSError:
            return ""
        stem = name[:-len(".toml")] if name.lower().endswith(".toml") else name
        near = [n for n in names if n.casefold() == stem.casefold()]
        if near:
            return f"; did you mean {near[0]} (the file's name without .toml, case-sensitive)?"
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f" (it holds {shown})" if names else " (it holds none: send one up as sequences/NAME.toml)"

    def _checked(self, name: str, path: Path) -> Sequence:
        """The sequence in ``path`` as ``sequences/NAME.toml``: parsed, each step against the dictionary and the
        board's power modes, its name the file's. The checks of a start, a resume and an upload
        (:meth:`check_upload`), so that each refuses the same files; :class:`CommandFailed` naming
        ``sequences/NAME.toml``, the step and the key."""
        try:
            sequence = load_sequence(path, power_modes=self._power_modes)
        except SequenceError as exc:
            raise CommandFailed(str(exc).replace(str(path), f"{SEQUENCES_DIR}/{name}.toml"),
                                FailureCode.BAD_ARGUMENTS) from None
        if sequence.name != name:  # a run resumes after a restart from the file of its name (an audit: not found)
            raise CommandFailed(f"sequences/{name}.toml: name {sequence.name!r} is not the file's; a sequence is "
                                f"found by its file, after a restart too: name it {name!r} or the file "
                                f"{sequence.name}.toml", FailureCode.BAD_ARGUMENTS)
        return sequence

    def check_upload(self, name: str, path: Path) -> tuple[bool, str]:
        """A sequence file come up by CFDP for ``sequences/NAME.toml``, at ``path`` before it is put in place: (True,
        what it is) where SEQUENCE_START would take it, else (False, why, the step and key named), so that the
        operator knows at once and a bad file never replaces a good one. The reach of its waits is SEQUENCE_START's
        alone: a ``wait_until``'s depends on when the run starts."""
        try:
            sequence = self._checked(name, path)
        except CommandFailed as exc:
            return False, exc.reason
        return True, (f"{SEQUENCES_DIR}/{name}.toml: {len(sequence.steps)} steps, digest {sequence.digest}, checked "
                      f"against the dictionary and the board's power modes; SEQUENCE_START {name} runs it")

    def file_in_use(self, name: str) -> str | None:
        """Whose the file area's ``name`` is where the running sequence runs from it (``sequences/NAME.toml``), else
        None: the file manager neither deletes nor replaces it (a resume after a restart needs the very file the run
        started from, its digest: a file changed under a run would end it at the next restart)."""
        run = self.run
        if run is not None and name == f"{SEQUENCES_DIR}/{run.sequence.name}.toml":
            return f"the file of the running sequence {run.sequence.name} (at step {run.index})"
        return None

    def _start(self, req: CommandRequest) -> dict[str, Any]:
        if self.run is not None:
            raise CommandFailed(f"sequence {self.run.sequence.name} is running (step {self.run.index}); "
                                f"SEQUENCE_ABORT it first", FailureCode.BUSY)
        run = self._open_run(req.args["name"], self._clock.now_s())
        sequence = run.sequence
        try:  # kept before it counts as started (found in audit: a full disk, `completed`, and a reset lost the run
            write_checked_json(self._run_path, run.to_state())  # without a word, the event saying a state was kept)
        except OSError as exc:
            fix = "free space and start it again" if exc.errno == errno.ENOSPC else "start it again once it can be"
            raise CommandFailed(f"not started: the sequence state could not be kept ({exc.strerror or exc}), and a "
                                f"reset would lose the run unsaid; {fix}") from None
        self.run = run
        self._emit("SEQUENCE_STARTED", name=sequence.name, steps=len(sequence.steps))
        return {"name": sequence.name, "steps": len(sequence.steps), "digest": sequence.digest}

    def _abort(self, _req: CommandRequest) -> dict[str, Any]:
        if self.run is None:
            raise CommandFailed("no sequence is running", FailureCode.NOT_ALLOWED_IN_MODE)
        step, name = self.run.index, self.run.sequence.name
        if self._end_run(False, f"aborted by command at step {step}"):  # stopped, but would resume after a reset
            raise CommandFailed(f"sequence {name} stopped at step {step}, but its kept state could not be removed: a "
                                f"reset would resume it; the removal is tried again at each look (SCHEDULE_ERROR "
                                f"says it)")  # found in audit: `completed`, and after a reset the aborted run went on
        return {"step": step}

    @property
    def run_damage(self) -> str | None:
        """Why the sequence run saved before the start was not resumed where its file was damaged (not where its
        sequence changed or went), or None: counted by the agent's ``state_corrupt`` as well as said (an audit:
        said only)."""
        return self._run_error if self._run_damaged else None

    def reset_counters(self) -> None:
        """RESET_COUNTERS: zero the error counts, the releases that failed and the runs not resumed (found in audit:
        ``sequences_not_resumed``, whose warning limit is 1, stayed raised for the whole boot). What is scheduled or
        running is untouched."""
        self.release_errors = self.not_resumed = 0

    # --- telemetry ---------------------------------------------------------------------------

    def telemetry(self) -> dict[str, Any]:
        entries = self.schedule.entries()
        release = self.schedule.next_release_s()
        return {
            "schedule_entries": len(entries),
            "schedule_held": sum(e.held for e in entries),
            "schedule_next_in_s": None if release is None else round(release - self._clock.now_s(), 3),
            "schedule_released": self.released,
            "schedule_release_errors": self.release_errors,
            "clock_jumps": self.clock_jumps,
            "schedule_late_ms": None if self.late_ms is None else round(self.late_ms, 3),
            "sequence_running": self.run.sequence.name if self.run is not None else "",
            "sequence_step": self.run.index if self.run is not None else 0,
            "sequences_not_resumed": self.not_resumed,
        }
