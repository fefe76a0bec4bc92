"""Time-tagged commands and stored sequences (flight/agent/schedule.py, docs/sequences.md)."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

import flight.agent.schedule as schedule_module
from flight.agent.schedule import (
    INTERRUPTED,
    ClockJump,
    CommandStep,
    Finished,
    ScheduleError,
    SendCommand,
    SequenceError,
    SequenceRun,
    TimeSchedule,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
    parse_sequence,
)
from flight.link.dictionary import FailureCode
from flight.storage import write_checked_json

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z: any fixed UTC; nothing here reads the wall clock
DAY_S = 86400.0


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule(tmp_path, **kwargs) -> TimeSchedule:
    s = TimeSchedule(tmp_path / "schedule.json", **kwargs)
    s.check_clock(T0, 0.0)  # the first look: nothing late yet
    return s


# --- time-tagged commands (AGT-080) ----------------------------------------------------------------


REFUSALS = [
    # (call, release or delay, command, args, field, words in the message)
    ("at", T0 - 10.0, "NOOP", {}, "release_unix_s", "10.0 s in the past"),
    ("at", T0 + 31 * DAY_S, "NOOP", {}, "release_unix_s", "31.0 days ahead, at most 30"),
    ("at", math.nan, "NOOP", {}, "release_unix_s", "finite number"),
    ("at", T0 + 60, "NOPE", {}, "command", "unknown command 'NOPE'"),
    ("at", T0 + 60, "SET_MODE", {"mode": "BOOT"}, "args.mode", "not one of SAFE, IDLE, COMPUTE"),
    ("at", T0 + 60, "SET_MODE", {}, "args.mode", "missing argument mode"),
    ("at", T0 + 60, "NOOP", {"x": 1}, "args.x", "unknown argument x"),
    ("at", T0 + 60, "TRAIN_START", {"dataset": "d", "steps": 0}, "args.steps", "below minimum"),
    ("at", T0 + 60, "NOOP", [1, 2], "args", "must be a map"),
    # what SET_PARAM's handler refuses with no state to look at: refused now, not at the release (an audit)
    ("at", T0 + 60, "SET_PARAM", {"name": "hk_period_s", "value": "-1"}, "args.value", "below minimum"),
    ("at", T0 + 60, "SET_PARAM", {"name": "hk_period_s", "value": "banana"}, "args.value", "hk_period_s"),
    # schedule-management commands, refused by name even before the dictionary has them
    ("at", T0 + 60, "SCHEDULE_RESET", {}, "command", "manages the schedule"),
    ("at", T0 + 60, "sequence_start", {}, "command", "send it directly"),
    ("after", -5.0, "NOOP", {}, "delay_s", "0 or more"),
    ("after", 40 * DAY_S, "NOOP", {}, "delay_s", "at most 30"),
]


@pytest.mark.req("AGT-080")
@pytest.mark.parametrize("call, when, command, args, field, words", REFUSALS,
                         ids=[f"{r[4]}-{i}" for i, r in enumerate(REFUSALS)])
def test_an_insertion_is_refused_naming_the_field_and_nothing_changes(tmp_path, call, when, command, args, field,
                                                                       words):
    s = _schedule(tmp_path)
    s.insert_at(T0 + 100, "NOOP", {}, T0)
    before = (tmp_path / "schedule.json").read_bytes()
    insert = s.insert_at if call == "at" else s.insert_after
    with pytest.raises(ScheduleError) as err:
        insert(when, command, args, T0)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and words in str(err.value)
    assert [e.entry_id for e in s.entries()] == [1]
    assert (tmp_path / "schedule.json").read_bytes() == before, "a refusal writes nothing"


@pytest.mark.req("AGT-080")
def test_refusals_carry_the_code_the_agent_reports(tmp_path):
    s = _schedule(tmp_path)
    codes = {}
    for key, (when, command, args) in {"unknown": (T0 + 1, "NOPE", {}), "bad": (T0 + 1, "SET_MODE", {"mode": 3}),
                                       "range": (T0 + 1, "PING", {"token": -1}),
                                       "managing": (T0 + 1, "SCHEDULE_INSERT", {}), "past": (T0 - 5, "NOOP", {})}.items():
        with pytest.raises(ScheduleError) as err:
            s.insert_at(when, command, args, T0)
        codes[key] = err.value.code
    assert codes == {"unknown": FailureCode.UNKNOWN_COMMAND, "bad": FailureCode.BAD_ARGUMENTS,
                     "range": FailureCode.OUT_OF_RANGE, "managing": FailureCode.NOT_ALLOWED_IN_MODE,
                     "past": FailureCode.OUT_OF_RANGE}


@pytest.mark.req("AGT-080")
def test_an_insertion_is_checked_and_kept_as_the_dictionary_checks_it(tmp_path):
    s = _schedule(tmp_path)
    just_late = s.insert_at(T0 - 0.5, "NOOP", {}, T0)  # within the 1 s tolerance: due at once
    e = s.insert_after(90, "set_mode", {"mode": "idle"}, T0, source="sequence demo step 2")
    assert (just_late.entry_id, e.entry_id) == (1, 2)
    assert e.release_unix_s == T0 + 90 and e.inserted_unix_s == T0 and e.source == "sequence demo step 2"
    assert e.command == "SET_MODE" and e.args == {"mode": "IDLE"}, "the dictionary's spelling, as checked"
    ping = s.insert_at(T0 + 30 * DAY_S, "PING", {}, T0)  # exactly the limit: accepted
    assert ping.args == {"token": 0}, "defaults filled as for a direct command"


@pytest.mark.req("AGT-080")
def test_a_full_schedule_says_so_and_how_to_make_room(tmp_path):
    s = _schedule(tmp_path)
    for i in range(256):
        s.insert_at(T0 + 60 + i, "NOOP", {}, T0)
    with pytest.raises(ScheduleError) as err:
        s.insert_at(T0 + 10, "NOOP", {}, T0)
    assert str(err.value) == "schedule full (256 entries); delete or reset first"
    assert err.value.field == "schedule" and err.value.code is FailureCode.BUSY
    s.delete(17)
    assert s.insert_at(T0 + 10, "NOOP", {}, T0).entry_id == 257, "room again after a delete; ids go on"
    assert len(s) == 256


@pytest.mark.req("AGT-080")
def test_a_look_that_finds_nothing_due_walks_no_entry(tmp_path, monkeypatch):
    """An audit: each look of the agent's loop (check_clock, due, next_release_s) sorted the whole schedule,
    256 entries every turn. The order is made when the schedule changes; a look with nothing due reads one
    number, and a change is still seen at once."""
    s = _schedule(tmp_path)
    for i in range(256):
        s.insert_at(T0 + 600 + i, "NOOP", {}, T0)
    s.check_clock(T0 + 1.0, 1.0)
    assert s.next_release_s() == T0 + 600
    keyed = []
    real = schedule_module._order
    monkeypatch.setattr(schedule_module, "_order", lambda e: keyed.append(e) or real(e))
    for k in range(100):  # 100 turns of the loop, nothing due
        now = T0 + 2.0 + k
        assert s.check_clock(now, now - T0) is None and s.due(now) == [] and s.next_release_s() == T0 + 600
    assert keyed == []
    s.delete(1)  # a change: the next look sees it
    assert s.next_release_s() == T0 + 601 and keyed
    assert [e.entry_id for e in s.due(T0 + 602)] == [2, 3]


@pytest.mark.req("AGT-080")
def test_due_releases_in_order_of_time_then_id_and_removes_what_it_returns(tmp_path):
    s = _schedule(tmp_path)
    s.insert_at(T0 + 30, "NOOP", {}, T0)          # 1
    s.insert_at(T0 + 10, "PING", {"token": 2}, T0)  # 2
    s.insert_at(T0 + 30, "PING", {"token": 3}, T0)  # 3: same time as 1, after it
    s.insert_at(T0 + 20, "RESET_COUNTERS", {}, T0)  # 4
    s.insert_at(T0 + 99, "NOOP", {}, T0)          # 5
    assert [e.entry_id for e in s.entries()] == [2, 4, 1, 3, 5]
    assert s.next_release_s() == T0 + 10
    assert s.due(T0 + 9.99) == []
    assert [e.entry_id for e in s.due(T0 + 30)] == [2, 4, 1, 3]
    assert s.due(T0 + 30) == [], "released once"
    assert s.next_release_s() == T0 + 99
    assert s.delete(5).entry_id == 5 and s.next_release_s() is None
    with pytest.raises(ScheduleError, match=r"entry_id: no entry 5 in the schedule"):
        s.delete(5)


@pytest.mark.req("AGT-080")
def test_due_before_the_first_look_at_the_clock_is_a_misuse(tmp_path):
    s = TimeSchedule(tmp_path / "schedule.json")
    with pytest.raises(RuntimeError, match="call check_clock before due"):
        s.due(T0)


@pytest.mark.req("AGT-080")
def test_entries_survive_a_restart_and_ids_continue(tmp_path):
    path = tmp_path / "schedule.json"
    s = _schedule(tmp_path)
    a = s.insert_at(T0 + 60, "SET_MODE", {"mode": "COMPUTE"}, T0)
    b = s.insert_at(T0 + 120, "TRAIN_START", {"dataset": "digits", "steps": 100}, T0)
    c = s.insert_at(T0 + 180, "NOOP", {}, T0)
    s.delete(c.entry_id)  # the highest id is gone: it must still not come back
    again = TimeSchedule(path)
    assert again.load_error is None and again.dropped_at_load == ()
    assert again.entries() == [a, b], "every field, the args as checked, round-trips"
    again.check_clock(T0 + 1, 5.0)
    assert again.insert_at(T0 + 240, "NOOP", {}, T0 + 1).entry_id == 4
    assert again.reset() == 3 and len(TimeSchedule(path)) == 0
    assert TimeSchedule(path).next_id == 5, "a reset does not restart the ids"


@pytest.mark.req("AGT-080")
def test_a_corrupt_schedule_is_reported_moved_aside_and_the_schedule_starts_empty(tmp_path):
    path = tmp_path / "schedule.json"
    s = _schedule(tmp_path)
    for i in range(3):
        s.insert_at(T0 + 60 * (i + 1), "NOOP", {}, T0)
    data = bytearray(path.read_bytes())
    at = data.index(b"NOOP")
    data[at] ^= 0x01  # one flipped bit inside the body: the SHA-256 catches it
    path.write_bytes(bytes(data))

    after = TimeSchedule(path)
    assert after.load_error is not None and "SHA-256 mismatch" in after.load_error
    assert "schedule.json.corrupt" in after.load_error and "starts empty" in after.load_error
    assert after.entries() == [] and not path.exists()
    assert (tmp_path / "schedule.json.corrupt").read_bytes() == bytes(data), "kept for inspection"
    after.check_clock(T0, 0.0)
    new = after.insert_at(T0 + 60, "NOOP", {}, T0)
    assert new.entry_id > 3, "ids reserved on disk: none handed out before the corruption comes back"
    assert TimeSchedule(path).entries() == [new]


@pytest.mark.req("AGT-080")
@pytest.mark.parametrize("body", [
    ["not", "a", "map"],
    {"format": 1, "next_id": 2, "entries": [{"entry_id": 1}]},
    {"format": 1, "next_id": 1, "entries": [
        {"entry_id": 1, "release_unix_s": T0, "command": "NOOP", "args": {}, "source": "timetag",
         "inserted_unix_s": T0, "held": False}]},  # an id at or above next_id could be handed out twice
    {"format": 99, "next_id": 1, "entries": []},
])
def test_a_checked_file_that_is_not_a_schedule_is_corrupt_too(tmp_path, body):
    path = tmp_path / "schedule.json"
    write_checked_json(path, body)
    s = TimeSchedule(path)
    assert s.load_error is not None and s.entries() == [] and (tmp_path / "schedule.json.corrupt").exists()
    assert "entry ids start again at 1" in s.load_error, "no reservation file: said, not hidden"


@pytest.mark.req("AGT-080")
def test_an_entry_the_dictionary_no_longer_accepts_is_left_out_and_named(tmp_path):
    path = tmp_path / "schedule.json"
    entry = {"entry_id": 1, "release_unix_s": T0 + 60, "command": "OLD_COMMAND", "args": {}, "source": "timetag",
             "inserted_unix_s": T0, "held": False}
    kept = {**entry, "entry_id": 2, "command": "PING", "args": {"token": "7"}}
    write_checked_json(path, {"format": 1, "next_id": 3, "entries": [entry, kept]})
    s = TimeSchedule(path)
    assert s.load_error is None
    assert len(s.dropped_at_load) == 1 and "entry 1 (OLD_COMMAND)" in s.dropped_at_load[0]
    assert [(e.entry_id, e.args) for e in s.entries()] == [(2, {"token": 7})]


@pytest.mark.req("AGT-080")
def test_a_forward_clock_jump_holds_what_it_made_due(tmp_path):
    path = tmp_path / "schedule.json"
    s = _schedule(tmp_path)  # look: UTC T0 at monotonic 0
    s.insert_at(T0 + 10, "NOOP", {}, T0)           # 1: due anyway after 20 s of real time
    s.insert_at(T0 + 100, "PING", {"token": 2}, T0)  # 2: made due by the jump
    s.insert_at(T0 + 3600, "PING", {"token": 3}, T0)  # 3: made due by the jump
    s.insert_at(T0 + 7200, "NOOP", {}, T0)         # 4: still ahead
    assert s.check_clock(T0 + 10, 10.0) is None
    jump = s.check_clock(T0 + 3700, 20.0)  # 10 s of real time, 3690 s of UTC
    assert isinstance(jump, ClockJump) and jump.delta_s == pytest.approx(3680.0)
    assert [e.entry_id for e in jump.overdue] == [2, 3] and all(e.held for e in jump.overdue)
    assert "held for the operator" in jump.reason
    assert [e.entry_id for e in s.due(T0 + 3700)] == [1], "held entries are not released"
    assert s.next_release_s() == T0 + 7200
    assert [e.entry_id for e in TimeSchedule(path).held()] == [2, 3], "the hold survives a restart"
    assert [e.entry_id for e in s.release_held(3)] == [3]
    assert [e.entry_id for e in s.due(T0 + 3701)] == [3], "released by the operator: due at the next look"
    with pytest.raises(ScheduleError, match=r"entry_id: entry 3 is not held \(held: 2\)"):
        s.release_held(3)
    assert s.delete(2).held


@pytest.mark.req("AGT-080")
def test_a_backward_clock_jump_only_delays_and_small_drift_is_no_jump(tmp_path):
    s = _schedule(tmp_path)
    s.insert_at(T0 + 60, "NOOP", {}, T0)
    assert s.check_clock(T0 + 104.0, 100.0) is None, "4 s of slew within the 5 s tolerance"
    jump = s.check_clock(T0 - 3496.0, 110.0)  # UTC stepped back an hour
    assert jump is not None and jump.delta_s == pytest.approx(-3610.0) and jump.overdue == ()
    assert "fall due that much later" in jump.reason
    assert s.due(T0 - 3496.0) == [] and s.held() == []
    assert s.check_clock(T0 + 54, 3660.0) is None
    assert [e.entry_id for e in s.due(T0 + 60)] == [1], "released at its own UTC time, an hour later in real time"


class SteppedUtc:
    """UTC the board's clock can step; monotonic time that never does (the agent's Clock port)."""

    def __init__(self):
        self.utc, self.mono = T0, 1000.0

    def now_s(self):
        return self.utc

    def monotonic_s(self):
        return self.mono

    def timeout_until(self, deadline_s):
        return 0.0

    def tick(self, dt_s):
        self.utc += dt_s
        self.mono += dt_s


@pytest.mark.req("AGT-080")
def test_every_step_of_utc_is_said_and_counted_not_only_one_that_made_entries_due(tmp_path):
    """Found in audit: a step back, or one forward that made nothing due, went unsaid (docs/sequences.md said it
    was reported): every time tag slipped by the step without a word."""
    from flight.agent.scheduler import Scheduler

    clock, said = SteppedUtc(), []
    scheduler = Scheduler(tmp_path, clock, lambda event, **args: said.append((event, args)),
                          lambda name, args, cmd_id: None, lambda: {})
    scheduler.time_began()
    scheduler.schedule.insert_at(T0 + 7200, "NOOP", {}, clock.now_s())
    for step_s, held in ((-3600.0, 0), (600.0, 0), (12000.0, 1)):
        said.clear()
        clock.tick(1.0)
        clock.utc += step_s
        scheduler.service()
        jumped = [args for event, args in said if event == "CLOCK_JUMPED"]
        assert len(jumped) == 1 and jumped[0]["delta_s"] == pytest.approx(step_s), said
        assert len([e for e, _ in said if e == "SCHEDULE_HELD"]) == held
    assert scheduler.telemetry()["clock_jumps"] == 3
    said.clear()
    clock.tick(60.0)
    scheduler.service()
    assert not [e for e, _ in said if e == "CLOCK_JUMPED"]  # time going on as it should: no jump


@pytest.mark.req("AGT-081")
def test_a_running_sequences_wait_keeps_its_length_across_a_utc_jump(tmp_path):
    """A step of UTC (NTP, GNSS) once cut a 600 s wait to nothing, so the next command went at once, in
    the very tick the time tags were held for the same jump; a step back stretched it by the step (review)."""
    from flight.agent.scheduler import Scheduler

    (tmp_path / "sequences").mkdir()
    (tmp_path / "sequences" / "pass.toml").write_text(
        'name = "pass"\n[[step]]\ncommand = "NOOP"\n[[step]]\nwait_s = 600\n[[step]]\ncommand = "PING"\n'
        'args = { token = 7 }\n')
    clock, sent = SteppedUtc(), []
    scheduler = None

    def dispatch(name, args, cmd_id):
        sent.append((round(clock.mono - 1000.0), name))
        scheduler.command_final(cmd_id, True, "")

    scheduler = Scheduler(tmp_path, clock, lambda event, **args: None, dispatch, lambda: {})
    scheduler.time_began()
    for jump_s in (3600.0, -86400.0):
        sent.clear()
        start = round(clock.mono - 1000.0)
        scheduler.run = SequenceRun(schedule_module.load_sequence(tmp_path / "sequences" / "pass.toml"), clock.utc)
        scheduler.service()
        clock.tick(10)
        scheduler.service()
        clock.utc += jump_s  # no real time passes
        clock.tick(1)
        scheduler.service()
        assert sent == [(start, "NOOP")], (jump_s, sent)
        clock.tick(590)
        scheduler.service()
        assert [name for _, name in sent] == ["NOOP", "PING"] and sent[1][0] - start == 601, (jump_s, sent)


@pytest.mark.req("AGT-080")
def test_entries_that_fell_due_while_the_agent_was_down_are_held_at_the_first_look(tmp_path):
    path = tmp_path / "schedule.json"
    s = _schedule(tmp_path)
    s.insert_at(T0 + 10, "NOOP", {}, T0)    # 1: 3 s late at the restart: within the tolerance
    s.insert_at(T0 + 5, "PING", {}, T0)     # 2: 8 s late: held
    s.insert_at(T0 + 500, "NOOP", {}, T0)   # 3: ahead
    restarted = TimeSchedule(path)          # a new process: the monotonic clock started again
    jump = restarted.check_clock(T0 + 13, 2.0)
    assert jump is not None and jump.delta_s == 0.0 and [e.entry_id for e in jump.overdue] == [2]
    assert "while the agent was not running" in jump.reason
    assert [e.entry_id for e in restarted.due(T0 + 13)] == [1]


@pytest.mark.req("AGT-080")
def test_a_failed_write_refuses_the_ground_s_change_and_never_runs_a_release_twice(tmp_path, monkeypatch):
    path = tmp_path / "schedule.json"
    s = _schedule(tmp_path)
    s.insert_at(T0 + 10, "NOOP", {}, T0)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(schedule_module, "write_checked_json", disk_full)
    with pytest.raises(OSError):
        s.insert_at(T0 + 20, "NOOP", {}, T0)
    assert len(s) == 1, "not durable: not inserted"
    released = s.due(T0 + 10)  # the schedule's own change goes ahead, and says so
    assert [e.entry_id for e in released] == [1] and "No space left" in s.persist_error
    monkeypatch.undo()
    # A reset now: the file still lists entry 1, which has been released. It must not run again.
    restarted = TimeSchedule(path)
    jump = restarted.check_clock(T0 + 30, 1.0)
    assert jump is not None and [e.entry_id for e in jump.overdue] == [1]
    assert restarted.due(T0 + 30) == []


# --- stored sequences: the format (AGT-081) -----------------------------------------------------------


def _doc_example() -> str:
    text = (ROOT / "docs" / "sequences.md").read_text()
    return re.search(r"```toml\n(.*?)```", text, re.DOTALL).group(1)


@pytest.mark.req("AGT-081")
def test_the_documented_example_parses_into_each_step_kind():
    seq = parse_sequence(_doc_example(), "docs/sequences.md")
    assert seq.name == "downlink_pass" and len(seq.steps) == 5
    until = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc).timestamp()
    assert seq.steps == (
        CommandStep("SET_MODE", {"mode": "IDLE"}, "abort", 60.0),
        WaitStep(30.0),
        WaitUntilStep(until),
        WaitForStep("battery_soc_pct", ">=", 60.0, 600.0),
        CommandStep("INFER_START", {"input_set": "tiles", "model": "cloud_screen", "priority": 5, "continuous": False},
                    "abort", 120.0),
    )
    native = parse_sequence('name = "x"\n[[step]]\nwait_until = 2026-12-03T11:00:00+01:00\n', "x.toml")
    assert native.steps == (WaitUntilStep(until),), "a TOML date-time with an offset is the same instant"


_HEAD = 'name = "seq"\n'
_OK_STEP = '[[step]]\ncommand = "NOOP"\n'
MALFORMED = [
    # (text, key path named, words in the reason)
    ('name = "seq"\n[[step]\n', "", "not valid TOML"),
    ('name = "seq"\ncolour = "red"\n' + _OK_STEP, "colour", "unknown key"),
    (_OK_STEP, "name", "missing"),
    ('name = "has space"\n' + _OK_STEP, "name", "1 to 32 characters"),
    (f'name = "{"n" * 33}"\n' + _OK_STEP, "name", "1 to 32 characters"),
    ("name = 7\n" + _OK_STEP, "name", "1 to 32 characters"),
    (_HEAD + 'description = "' + "d" * 257 + '"\n' + _OK_STEP, "description", "at most 256"),
    (_HEAD, "step", "missing"),
    (_HEAD + "step = 3\n", "step", "one or more"),
    (_HEAD + "step = [1]\n", "step[0]", "must be a table"),
    (_HEAD + _OK_STEP * 257, "step", "257 steps, at most 256"),
    (_HEAD + "[[step]]\n", "step[0]", "has none"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\nwait_s = 3\n', "step[0].wait_s", "exactly one of"),
    (_HEAD + "[[step]]\nwait_s = 3\nwait_for = { channel = \"mode\", op = \"==\", value = \"SAFE\", timeout_s = 5 }\n",
     "step[0].wait_for", "also wait_s"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\ncolour = 1\n', "step[0].colour", "unknown key for a command step"),
    (_HEAD + '[[step]]\nwait_s = 3\non_failure = "continue"\n', "step[0].on_failure", "unknown key for a wait_s step"),
    # Found in audit: a wait_for's timeout_s written beside it got only "unknown key", nothing said where it goes
    (_HEAD + '[[step]]\nwait_for = { channel = "mode", op = "==", value = "SAFE" }\ntimeout_s = 60\n',
     "step[0].timeout_s", "a wait_for's timeout_s goes inside it: wait_for = { channel, op, value, timeout_s }"),
    (_HEAD + '[[step]]\ncommand = "NOPE"\n', "step[0].command", "unknown command 'NOPE'"),
    (_HEAD + "[[step]]\ncommand = 5\n", "step[0].command", "must be a command name"),
    (_HEAD + '[[step]]\ncommand = "SEQUENCE_START"\n', "step[0].command", "manages the schedule"),
    (_HEAD + _OK_STEP + '[[step]]\ncommand = "SET_MODE"\nargs = { mode = "BOOT" }\n', "step[1].args.mode",
     "not one of SAFE, IDLE, COMPUTE"),
    (_HEAD + '[[step]]\ncommand = "SET_MODE"\n', "step[0].args.mode", "missing argument mode"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\nargs = { bogus = 1 }\n', "step[0].args.bogus", "unknown argument"),
    (_HEAD + '[[step]]\ncommand = "PING"\nargs = { token = 1.5 }\n', "step[0].args.token", "not a valid u32"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\nargs = 3\n', "step[0].args", "must be a map"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\non_failure = "retry"\n', "step[0].on_failure", "abort, continue"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\ntimeout_s = 0\n', "step[0].timeout_s", "above 0"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\ntimeout_s = "soon"\n', "step[0].timeout_s", "number of seconds"),
    (_HEAD + '[[step]]\ncommand = "NOOP"\ntimeout_s = 90000\n', "step[0].timeout_s", "at most 86400"),
    (_HEAD + '[[step]]\nwait_s = "ten"\n', "step[0].wait_s", "number of seconds"),
    (_HEAD + "[[step]]\nwait_s = -1\n", "step[0].wait_s", "0 or more"),
    (_HEAD + "[[step]]\nwait_s = nan\n", "step[0].wait_s", "number of seconds"),
    (_HEAD + "[[step]]\nwait_s = true\n", "step[0].wait_s", "number of seconds"),
    (_HEAD + '[[step]]\nwait_until = "2026-12-03T10:00:00"\n', "step[0].wait_until", "no time zone"),
    (_HEAD + "[[step]]\nwait_until = 2026-12-03T10:00:00\n", "step[0].wait_until", "no time zone"),
    (_HEAD + '[[step]]\nwait_until = "tomorrow"\n', "step[0].wait_until", "not an ISO 8601"),
    (_HEAD + "[[step]]\nwait_until = 2026-12-03\n", "step[0].wait_until", "a date without a time"),
    (_HEAD + "[[step]]\nwait_for = 3\n", "step[0].wait_for", "must be a table"),
    (_OK_STEP.join([_HEAD, "", "", ""]) + '[[step]]\nwait_for = { channel = "battery", op = ">=", value = 60, '
     'timeout_s = 600 }\n', "step[3].wait_for.channel", "not a telemetry channel"),
    (_HEAD + '[[step]]\nwait_for = { channel = "battery_soc_pct", op = "=>", value = 60, timeout_s = 9 }\n',
     "step[0].wait_for.op", "not one of == != < <= > >="),
    (_HEAD + '[[step]]\nwait_for = { channel = "battery_soc_pct", op = ">=", value = 60 }\n',
     "step[0].wait_for.timeout_s", "missing"),
    (_HEAD + '[[step]]\nwait_for = { channel = "battery_soc_pct", op = ">=", value = "full", timeout_s = 9 }\n',
     "step[0].wait_for.value", "is a number"),
    (_HEAD + '[[step]]\nwait_for = { channel = "mode", op = "==", value = "BOOTING", timeout_s = 9 }\n',
     "step[0].wait_for.value", "not one of BOOT, SAFE, IDLE, COMPUTE"),
    (_HEAD + '[[step]]\nwait_for = { channel = "mode", op = "<", value = "SAFE", timeout_s = 9 }\n',
     "step[0].wait_for.op", "only == and !="),
    (_HEAD + '[[step]]\nwait_for = { channel = "in_eclipse", op = "==", value = 1, timeout_s = 9 }\n',
     "step[0].wait_for.value", "true or false"),
    (_HEAD + '[[step]]\nwait_for = { channel = "mode", op = "==", value = "SAFE", timeout_s = 9, every = 1 }\n',
     "step[0].wait_for.every", "unknown key"),
    (_HEAD + "x" * (64 * 1024), "", "at most 65536"),
]


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("text, path, words", MALFORMED, ids=[f"{i}-{m[1] or 'file'}" for i, m in enumerate(MALFORMED)])
def test_a_malformed_sequence_is_refused_naming_the_key_path(text, path, words):
    with pytest.raises(SequenceError) as err:
        parse_sequence(text, "seq.toml")
    assert err.value.path == path and err.value.source == "seq.toml"
    assert str(err.value).startswith(f"seq.toml: {path}: " if path else "seq.toml: ")
    assert words in err.value.reason


# --- stored sequences: running one (AGT-081) ----------------------------------------------------------


def _run(steps: str, name: str = "seq") -> SequenceRun:
    return SequenceRun(parse_sequence(f'name = "{name}"\n' + steps, f"{name}.toml"), T0)


@pytest.mark.req("AGT-081")
def test_a_run_goes_through_each_step_kind():
    text = _doc_example().replace("2026-12-03T10:00:00Z", _iso(T0 + 100))
    run = SequenceRun(parse_sequence(text, "downlink.toml"), T0)
    assert run.next_wake_s() == 0.0 and run.waiting_on == "start"
    assert run.poll(T0, {}) == SendCommand(0, "SET_MODE", {"mode": "IDLE"})
    assert run.poll(T0 + 1, {}) is None and run.waiting_on == "command"
    assert run.next_wake_s() == T0 + 60, "the completion's timeout"
    assert run.command_done(3, True) is False, "not the step waiting: ignored"
    assert run.command_done(0, True) is True and run.command_done(0, True) is False, "a repeat is ignored"
    assert run.next_wake_s() == 0.0 and run.waiting_on == "poll"
    assert run.poll(T0 + 2, {}) is None and run.waiting_on == "time"  # wait_s 30 from T0 + 2
    assert run.next_wake_s() == T0 + 32
    assert run.poll(T0 + 31.9, {}) is None
    assert run.poll(T0 + 32, {}) is None and run.next_wake_s() == T0 + 100  # on to wait_until
    assert run.poll(T0 + 100, {"battery_soc_pct": 41.0}) is None and run.waiting_on == "telemetry"
    assert run.next_wake_s() == T0 + 700, "the condition's timeout"
    assert run.poll(T0 + 150, {}) is None, "no value yet: not met"
    assert run.poll(T0 + 160, {"battery_soc_pct": math.nan}) is None, "NaN: not met"
    action = run.poll(T0 + 200, {"battery_soc_pct": 60.0})
    assert action == SendCommand(4, "INFER_START", {"input_set": "tiles", "model": "cloud_screen", "priority": 5,
                                                    "continuous": False})
    run.command_done(4, True, "")
    done = run.poll(T0 + 201, {})
    assert done == Finished(True, "sequence downlink_pass: 5 steps done")
    assert run.poll(T0 + 202, {}) is None and run.result == done and run.next_wake_s() is None


@pytest.mark.req("AGT-081")
def test_commands_in_a_row_and_a_past_absolute_time_go_straight_on():
    run = _run(f'[[step]]\ncommand = "NOOP"\n[[step]]\nwait_until = "{_iso(T0 - 50)}"\n[[step]]\nwait_s = 0\n'
               '[[step]]\ncommand = "PING"\n')
    assert run.poll(T0, {}) == SendCommand(0, "NOOP", {})
    run.command_done(0, True)
    assert run.poll(T0, {}) == SendCommand(3, "PING", {"token": 0})


@pytest.mark.req("AGT-081")
def test_a_failed_command_aborts_unless_the_step_says_continue():
    steps = '[[step]]\ncommand = "SET_MODE"\nargs = { mode = "COMPUTE" }\n{}[[step]]\ncommand = "NOOP"\n'
    abort = _run(steps.replace("{}", ""))
    abort.poll(T0, {})
    abort.command_done(0, False, "battery below the floor")
    assert abort.poll(T0 + 1, {}) == Finished(False, "sequence seq: step[0] SET_MODE failed: battery below the floor")

    go_on = _run(steps.replace("{}", 'on_failure = "continue"\n'))
    go_on.poll(T0, {})
    go_on.command_done(0, False, "battery below the floor")
    assert go_on.poll(T0 + 1, {}) == SendCommand(1, "NOOP", {})
    go_on.command_done(1, True)
    end = go_on.poll(T0 + 2, {})
    assert end.ok and "1 failed and were continued past: step[0] SET_MODE failed" in end.reason


@pytest.mark.req("AGT-081")
def test_no_completion_within_the_timeout_aborts_even_with_continue():
    run = _run('[[step]]\ncommand = "NOOP"\ntimeout_s = 120\non_failure = "continue"\n[[step]]\ncommand = "PING"\n')
    run.poll(T0, {})
    assert run.poll(T0 + 119.9, {}) is None
    end = run.poll(T0 + 120, {})
    assert end == Finished(False, "sequence seq: step[0] NOOP: no completion within 120 s; aborted (the command "
                                  "may still be running: check before sending it again)")
    assert run.command_done(0, True) is False, "too late: the run is over"


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("on_failure, expected", [("abort", Finished), ("continue", SendCommand)])
def test_a_telemetry_wait_that_times_out_aborts_or_continues(on_failure, expected):
    run = _run('[[step]]\nwait_for = { channel = "mode", op = "==", value = "idle", timeout_s = 30 }\n'
               f'on_failure = "{on_failure}"\n[[step]]\ncommand = "NOOP"\n')
    assert run.sequence.steps[0].value == "IDLE", "an enumeration's value in the dictionary's spelling"
    assert run.poll(T0, {"mode": "SAFE"}) is None
    assert run.poll(T0 + 29, {"mode": "SAFE"}) is None
    action = run.poll(T0 + 30, {"mode": "SAFE"})
    assert isinstance(action, expected)
    if expected is Finished:
        assert not action.ok and "step[0] wait_for mode == 'IDLE': not met within 30 s (last value 'SAFE')" in action.reason


def _json(state: dict) -> dict:
    return json.loads(json.dumps(state))  # what a checked file gives back


@pytest.mark.req("AGT-081")
def test_a_run_s_state_round_trips_at_every_stage():
    text = _doc_example().replace("2026-12-03T10:00:00Z", _iso(T0 + 100))
    seq = parse_sequence(text, "downlink.toml")
    run = SequenceRun(seq, T0)
    script = [(T0, {}, None), (T0 + 2, {}, (0, True)), (T0 + 32, {}, None), (T0 + 100, {"battery_soc_pct": 10.0}, None),
              (T0 + 300, {"battery_soc_pct": 70.0}, None)]
    for now, tm, done in script:
        if done:  # the completion came before the restart: kept, not taken for an interruption
            run.command_done(*done)
        copy = SequenceRun.from_state(seq, _json(run.to_state()))
        assert copy.to_state() == run.to_state() and copy.next_wake_s() == run.next_wake_s()
        assert copy.poll(now, tm) == run.poll(now, tm)
    assert run.waiting_on == "command"  # INFER_START sent: the next test covers the restart there


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("on_failure", ["abort", "continue"])
def test_a_command_sent_but_unanswered_before_a_reset_is_not_sent_again(on_failure):
    seq = parse_sequence(f'name = "seq"\n[[step]]\ncommand = "NOOP"\non_failure = "{on_failure}"\n'
                         '[[step]]\nwait_s = 10\n', "seq.toml")
    run = SequenceRun(seq, T0)
    assert run.poll(T0, {}) == SendCommand(0, "NOOP", {})
    resumed = SequenceRun.from_state(seq, _json(run.to_state()))  # the reset, before the completion came
    assert resumed.command_done(0, True) is False, "the outcome is already decided: interrupted"
    action = resumed.poll(T0 + 5, {})
    assert not isinstance(action, SendCommand)
    if on_failure == "abort":
        assert action == Finished(False, f"sequence seq: step[0] NOOP failed: {INTERRUPTED}")
    else:
        assert action is None and resumed.index == 1 and resumed.continued == [f"step[0] NOOP failed: {INTERRUPTED}"]
        assert resumed.poll(T0 + 15, {}).ok


@pytest.mark.req("AGT-081")
def test_a_wait_resumes_where_it_was_and_a_changed_file_is_not_resumed():
    seq = parse_sequence('name = "seq"\n[[step]]\nwait_s = 100\n', "seq.toml")
    run = SequenceRun(seq, T0)
    run.poll(T0 + 10, {})
    resumed = SequenceRun.from_state(seq, _json(run.to_state()))
    assert resumed.poll(T0 + 109, {}) is None and resumed.poll(T0 + 110, {}).ok, "counted from T0 + 10 still"

    changed = parse_sequence('name = "seq"\n[[step]]\nwait_s = 50\n', "seq.toml")
    with pytest.raises(SequenceError, match=r"seq.toml: state.digest: .*the file changed"):
        SequenceRun.from_state(changed, run.to_state())
    for bad in ({**run.to_state(), "index": 7}, {**run.to_state(), "phase": "sent"}, {"format": 2}):
        with pytest.raises(SequenceError, match=r"seq.toml: state"):
            SequenceRun.from_state(seq, bad)


# --- the board's checks and the waits' reach, when given (AGT-080, AGT-081) ---------------------------------------


@pytest.mark.req("AGT-080")
def test_a_time_tag_of_a_power_mode_the_board_lacks_is_refused_naming_the_modes_it_has(tmp_path):
    """Found in review: a SET_POWER_MODE of a mode the board has not was taken, and failed at its release, out of
    contact. The board's modes, a port given at wiring, refuse it when it is scheduled, as the command does."""
    s = _schedule(tmp_path, power_modes=lambda: ("10W", "15W", "MAXN"))
    with pytest.raises(ScheduleError) as err:
        s.insert_at(T0 + 60, "SET_POWER_MODE", {"name": "25W"}, T0)
    assert err.value.field == "args.name" and err.value.code is FailureCode.OUT_OF_RANGE
    assert str(err.value) == "args.name: unknown power mode '25W': this board offers 10W, 15W, MAXN"
    with pytest.raises(ScheduleError, match="names are case-sensitive, did you mean 'MAXN'"):
        s.insert_after(60, "SET_POWER_MODE", {"name": "maxn"}, T0)
    assert [s.insert_after(60, "SET_POWER_MODE", {"name": n}, T0).args["name"] for n in ("15W", "auto")] == [
        "15W", "auto"], "a mode the board has, and AUTO in any case, as the command takes them"
    # Where the modes are not known (no board: the ground's check of a schedule file; the board cannot say), taken.
    for unknown in (None, lambda: None):
        kept = TimeSchedule(tmp_path / f"{unknown is None}.json", power_modes=unknown)
        assert kept.insert_at(T0 + 60, "SET_POWER_MODE", {"name": "25W"}, T0).args == {"name": "25W"}


@pytest.mark.req("AGT-080")
def test_a_kept_time_tag_of_a_power_mode_the_board_no_longer_has_is_left_out_and_named(tmp_path):
    TimeSchedule(tmp_path / "schedule.json").insert_at(T0 + 60, "SET_POWER_MODE", {"name": "25W"}, T0)
    swapped = TimeSchedule(tmp_path / "schedule.json", power_modes=lambda: ("15W",))
    assert len(swapped) == 0
    assert swapped.dropped_at_load == (
        "entry 1 (SET_POWER_MODE): args.name: unknown power mode '25W': this board offers 15W",)


@pytest.mark.req("AGT-081")
def test_a_sequence_step_of_a_power_mode_the_board_lacks_is_refused_naming_the_step():
    text = _HEAD + _OK_STEP + '[[step]]\ncommand = "SET_POWER_MODE"\nargs = { name = "25W" }\n'
    with pytest.raises(SequenceError) as err:
        parse_sequence(text, "seq.toml", power_modes=lambda: ("10W", "15W"))
    assert err.value.path == "step[1].args.name" and "unknown power mode '25W': this board offers 10W, 15W" in str(
        err.value)
    assert parse_sequence(text, "seq.toml").steps[1] == CommandStep("SET_POWER_MODE", {"name": "25W"}), "no board"


@pytest.mark.req("AGT-081")
def test_a_sequence_s_waits_reach_no_further_than_a_time_tag_may():
    """Found in review: a wait_until in the year 9999 was taken, and the run held the one slot for sequences for
    good. The waits, counted from the run's start as the run counts them, reach at most 30 days (a time tag's)."""
    def refused(steps: str, start: float | None = T0) -> SequenceError:
        with pytest.raises(SequenceError) as err:
            parse_sequence(_HEAD + steps, "seq.toml", start_unix_s=start)
        return err.value

    far = refused(_OK_STEP + '[[step]]\nwait_until = "9999-12-31T23:59:59Z"\n')
    assert far.path == "step[1].wait_until" and "until 9999-12-31T23:59:59Z" in far.reason
    assert "at most 30, as far ahead as a time tag may be" in far.reason
    until = f'[[step]]\nwait_until = "{_iso(T0 + 29 * DAY_S)}"\n'
    after = refused(until + "[[step]]\nwait_s = 172800\n")  # 29 days, then two more
    assert after.path == "step[1].wait_s" and "31.0 days after it starts" in after.reason
    summed = refused("[[step]]\nwait_s = 1728000\n" * 2, start=None)  # 20 days twice: no start needed to see it
    assert summed.path == "step[1].wait_s" and "40.0 days after it starts" in summed.reason
    edge = f'[[step]]\nwait_until = "{_iso(T0 + 30 * DAY_S)}"\n[[step]]\nwait_s = 0\n'
    assert len(parse_sequence(_HEAD + edge, "seq.toml", start_unix_s=T0).steps) == 2, "exactly the limit: taken"
    back = f'[[step]]\nwait_until = "{_iso(T0 - DAY_S)}"\n[[step]]\nwait_s = 2592000\n'  # a past time waits nothing
    assert len(parse_sequence(_HEAD + back, "seq.toml", start_unix_s=T0).steps) == 2


@pytest.mark.req("AGT-081")
def test_a_resumed_run_s_waits_left_reach_no_further_than_a_time_tag_may_from_now():
    """A resume checks the waits left from now: the step it is in, from when it began (a clock set back over the
    restart makes it long), then those after it; a new run, every wait from its start, as parse_sequence does."""
    text = _HEAD + ('[[step]]\nwait_for = { channel = "battery_soc_pct", op = ">=", value = 60.0, timeout_s = 600 }\n'
                    f'[[step]]\nwait_s = 60\n[[step]]\nwait_until = "{_iso(T0 + 20 * DAY_S)}"\n')
    seq = parse_sequence(text, "seq.toml", start_unix_s=T0)
    run = SequenceRun(seq, T0)
    run.check_reach(T0)  # what SEQUENCE_START checks
    run.poll(T0, {"battery_soc_pct": 10.0})  # in step[0], from T0
    resumed = SequenceRun.from_state(seq, _json(run.to_state()))
    resumed.check_reach(T0 + 5)  # a restart, the clock as it was: goes on
    with pytest.raises(SequenceError) as err:
        resumed.check_reach(T0 - 31 * DAY_S)  # the clock set back 31 days: the timeout ends 31 days from now
    assert err.value.path == "step[0].wait_for.timeout_s", err.value
    assert "31.0 days from now, at most 30: check the board's clock" in err.value.reason
    with pytest.raises(SequenceError) as err:
        resumed.check_reach(T0 - 11 * DAY_S)  # the wait_until after it is 31 days from now
    assert err.value.path == "step[2].wait_until" and "31.0 days from now" in err.value.reason
    done = SequenceRun.from_state(seq, _json(run.to_state()))
    done.poll(T0 + 1, {"battery_soc_pct": 70.0})  # step[0] met, step[1] begun at T0 + 1
    done.check_reach(T0 + 2)
    with pytest.raises(SequenceError, match=r"seq.toml: step\[1\].wait_s: would wait until"):
        done.check_reach(T0 - 30 * DAY_S)


@pytest.mark.req("AGT-081")
def test_a_run_not_resumed_keeps_its_state_until_its_end_is_said(tmp_path):
    """Found in review: a kept run that failed its checks again had its state removed as the scheduler was made,
    its SEQUENCE_DONE said only at time_began; a start that failed between the two (or a power cut) left the ground
    with a SEQUENCE_STARTED and no end, ever. The state stays until the end is said, then goes."""
    from flight.agent.scheduler import Scheduler

    sequences = tmp_path / "sequences"
    sequences.mkdir()
    (sequences / "pass.toml").write_text('name = "pass"\n[[step]]\nwait_s = 600\n[[step]]\ncommand = "NOOP"\n')
    clock = SteppedUtc()
    first = Scheduler(tmp_path, clock, lambda event, **args: None, lambda name, args, cmd_id: None, lambda: {})
    first.time_began()
    first.run = SequenceRun(schedule_module.load_sequence(sequences / "pass.toml"), clock.utc)
    first._save_run()
    state = first._run_path
    assert state.exists()
    (sequences / "pass.toml").write_text('name = "pass"\n[[step]]\nwait_s = 60\n[[step]]\ncommand = "NOOP"\n')
    said = []
    for _ in range(2):  # the first start dies before time_began: the next still says the run's end
        said.clear()
        again = Scheduler(tmp_path, clock, lambda event, **args: said.append((event, args)),
                          lambda name, args, cmd_id: None, lambda: {})
        assert again.run is None and state.exists() and not said
    again.time_began()
    [done] = [args for event, args in said if event == "SEQUENCE_DONE"]
    assert done["name"] == "pass" and done["ok"] is False and "not resumed at the restart" in done["reason"]
    assert not state.exists()
    assert again.telemetry()["sequences_not_resumed"] == 1


@pytest.mark.req("AGT-080", "SEC-011")
@pytest.mark.parametrize("command, args, field", [
    ("KEY_LOAD", {"spi": 5, "master": 100, "wrapped": "zz" * 40}, "args.wrapped"),
    ("KEY_LOAD", {"spi": 5, "master": 100, "wrapped": "ab" * 10}, "args.wrapped"),
    ("MODEL_INSTALL", {"name": "m", "version": "1", "sha256": "ab" * 16}, "args.sha256"),
    ("MODEL_INSTALL", {"name": "m", "version": "1", "sha256": "g" * 64}, "args.sha256"),
])
def test_a_malformed_key_or_digest_is_refused_when_time_tagged_or_stored_not_at_release(tmp_path, command, args,
                                                                                         field):
    """Found in audit: a time tag of KEY_LOAD with a wrapped key that is not hex (or cut short), or of MODEL_INSTALL
    with a digest that is not 64 hex digits, was taken, and its handler refused it at the release, out of contact.
    Refused when given, naming the argument; a sequence step likewise when its file is read."""
    s = _schedule(tmp_path)
    with pytest.raises(ScheduleError) as err:
        s.insert_at(T0 + 60, command, args, T0)
    assert err.value.field == field and err.value.code is FailureCode.BAD_ARGUMENTS and len(s) == 0
    inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items())
    text = f'name = "s"\n[[step]]\ncommand = "{command}"\nargs = {{ {inline} }}\n'
    with pytest.raises(SequenceError, match=rf"step\[0\]\.{re.escape(field)}: "):
        parse_sequence(text, "s.toml")


@pytest.mark.req("AGT-080", "SEC-011")
def test_a_well_formed_key_or_digest_is_taken_as_a_time_tag(tmp_path):
    """Only the form is judged when it is taken: whether the key unwraps under the board's master, or a file has the
    digest, is for the handler at the release."""
    import os

    from flight.link.sdls import wrap_key

    s = _schedule(tmp_path)
    wrapped = wrap_key(os.urandom(32), os.urandom(32)).hex().upper()
    key = s.insert_at(T0 + 60, "KEY_LOAD", {"spi": 5, "master": 100, "wrapped": wrapped}, T0)
    digest = s.insert_at(T0 + 60, "MODEL_INSTALL", {"name": "m", "version": "1", "sha256": "AB" * 32}, T0)
    assert key.args["wrapped"] == wrapped and digest.args["sha256"] == "AB" * 32


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("text, path, words", [
    (_HEAD + '[[step]]\nwait_for = { channel = "mode", op = ["=="], value = "SAFE", timeout_s = 9 }\n',
     "step[0].wait_for.op", "is not one of == !="),
    (_HEAD + '[[step]]\nwait_for = { channel = "mode", op = { eq = 1 }, value = "SAFE", timeout_s = 9 }\n',
     "step[0].wait_for.op", "is not one of == !="),
    (_HEAD + "x = " + "[" * 3000 + "]" * 3000 + "\n", "", "nested too deeply"),
    (_HEAD + "x = " + "{ a = " * 3000 + "1" + " }" * 3000 + "\n", "", "nested too deeply"),
], ids=["op-array", "op-table", "deep-array", "deep-table"])
def test_a_sequence_whose_op_is_no_text_or_nested_too_deep_is_refused_naming_the_key(text, path, words):
    """Found in audit: an op that was a TOML array or table raised TypeError (unhashable), and 6 KB of nested
    brackets RecursionError, out of the parser: SEQUENCE_START failed with a Python error naming no key."""
    with pytest.raises(SequenceError) as err:
        parse_sequence(text, "seq.toml")
    assert err.value.path == path and words in err.value.reason


@pytest.mark.req("AGT-080")
def test_a_time_tag_too_far_ahead_says_the_board_s_utc_so_a_lost_clock_shows(tmp_path):
    """Found in audit: a board whose clock was lost (2000-01-01) answered a tag an hour ahead of the ground's UTC with
    "9876.3 days ahead, at most 30: uplink it closer to its time", hiding that its own clock was the fault."""
    s = _schedule(tmp_path)
    board_now = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
    with pytest.raises(ScheduleError) as err:
        s.insert_at(T0 + 3600.0, "NOOP", {}, board_now)
    assert err.value.field == "release_unix_s" and "days ahead, at most 30" in str(err.value)
    assert "on-board UTC is 2000-01-01T00:00:00Z" in str(err.value) and "board's clocks" in str(err.value)
    assert len(s) == 0
