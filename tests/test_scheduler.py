"""Time-tagged commands and stored sequences in a whole agent (flight/agent/scheduler.py): a
released entry runs with its verification reports, tagged; entries and runs survive a restart;
bad time tags and hostile sequence names get a clear answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flight.link.dictionary import FailureCode
from flight.link.messages import Stage, Verification
from tests.inproc import InProcessAgent


@pytest.fixture
def rig(tmp_path):
    agent = InProcessAgent(tmp_path)
    yield agent
    agent.close()


def reports_for(rig: InProcessAgent, cmd_id: int) -> list[Verification]:
    return [i.record for i in rig.seen if isinstance(i.record, Verification) and i.record.cmd_id == cmd_id]


def watch(rig: InProcessAgent) -> InProcessAgent:
    rig.seen = []
    rig.client.listeners.append(rig.seen.append)
    return rig


@pytest.mark.req("AGT-080")
def test_an_entry_that_cannot_be_released_is_said_and_those_due_with_it_still_go(rig, monkeypatch):
    """Found in audit: the entries due in one tick were taken out of the schedule together and released in a
    loop with no guard: one whose dispatch raised ended the loop, and the others never ran, unsaid."""
    for command, args in (("NOOP", {}), ("PING", {"token": 5}), ("PING", {"token": 6})):
        assert rig.send("SCHEDULE_AFTER", delay_s=5.0, command=command, args=json.dumps(args)).completed
    real = rig.agent.scheduler._dispatch  # noqa: SLF001 - the port the scheduler releases through

    def dispatch(name, args, cmd_id):
        if name == "NOOP":
            raise RuntimeError("the encoder refused it")
        return real(name, args, cmd_id)

    monkeypatch.setattr(rig.agent.scheduler, "_dispatch", dispatch)
    rig.advance(6)
    assert sorted(e.args["token"] for e in rig.events("PING_RECEIVED")) == [5, 6]
    [error] = [e.args["reason"] for e in rig.events("SCHEDULE_ERROR")]
    assert error == "entry 1 (NOOP) not released: RuntimeError: the encoder refused it"
    hk = rig.hk()
    assert hk["schedule_release_errors"] == 1 and hk["schedule_entries"] == 0


@pytest.mark.req("AGT-080")
def test_a_time_tagged_command_runs_at_its_time_with_its_reports_tagged_by_its_entry(rig):
    watch(rig)
    result = rig.send("SCHEDULE_AFTER", delay_s=5.0, command="PING", args=json.dumps({"token": 42}))
    assert result.completed and result.result["entry_id"] == 1
    rig.advance(3)
    assert not rig.events("SCHEDULE_RELEASED")
    rig.advance(3)
    [released] = [e.args for e in rig.events("SCHEDULE_RELEASED")]
    assert released["entry_id"] == 1 and released["command"] == "PING"
    stages = [(r.stage, r.success) for r in reports_for(rig, released["cmd_id"])]
    assert stages == [(Stage.ACCEPTED, True), (Stage.STARTED, True), (Stage.COMPLETED, True)]
    assert [e.args["token"] for e in rig.events("PING_RECEIVED")] == [42]
    hk = rig.hk()
    assert hk["schedule_entries"] == 0 and hk["schedule_released"] == 1 and hk["schedule_late_ms"] <= 1000.0


@pytest.mark.req("AGT-080")
def test_entries_survive_a_restart_and_run_once(tmp_path):
    first = InProcessAgent(tmp_path)
    try:
        t = first.clock.now_s() + 30.0
        assert first.send("SCHEDULE_AT", release_unix_s=t, command="NOOP").completed
        assert first.send("SCHEDULE_LIST").result["count"] == 1
    finally:
        first.close()
    again = InProcessAgent(tmp_path)
    try:
        listed = again.send("SCHEDULE_LIST").result
        assert listed["count"] == 1 and listed["entries"][0]["command"] == "NOOP"
        again.advance(40)
        assert len(again.events("SCHEDULE_RELEASED")) == 1
        again.advance(40)
        assert len(again.events("SCHEDULE_RELEASED")) == 1
    finally:
        again.close()


@pytest.mark.req("AGT-080")
@pytest.mark.parametrize("args, field", [
    ({"release_unix_s": -10.0, "command": "NOOP"}, "release_unix_s"),  # relative to now, filled in below
    ({"release_unix_s": 60 * 86400.0, "command": "NOOP"}, "release_unix_s"),
    ({"release_unix_s": 30.0, "command": "LAUNCH_MISSILES"}, "command"),
    ({"release_unix_s": 30.0, "command": "SET_MODE", "args": '{"mode": "WARP"}'}, "args.mode"),
    ({"release_unix_s": 30.0, "command": "SCHEDULE_RESET"}, "command"),
    ({"release_unix_s": 30.0, "command": "NOOP", "args": "[1, 2]"}, "args"),
    ({"release_unix_s": 30.0, "command": "NOOP", "args": "{not json"}, "args"),
    # Found in audit: refused by the command itself with no state needed, taken as time tags, failed at release
    ({"release_unix_s": 30.0, "command": "SET_TLE", "args": '{"line1": "garbage", "line2": "garbage"}'},
     "args.line1"),
    ({"release_unix_s": 30.0, "command": "STORE_DUMP", "args": '{"from_unix_s": 2000.0, "to_unix_s": 1000.0}'},
     "args.to_unix_s: 1000.0 is before from_unix_s 2000.0"),
])
def test_a_bad_time_tag_is_refused_naming_what_is_wrong(rig, args, field):
    args = {**args, "release_unix_s": rig.clock.now_s() + args["release_unix_s"]}
    result = rig.send("SCHEDULE_AT", **args)
    assert result.failed and field in result.failure.reason
    assert rig.send("SCHEDULE_LIST").result["count"] == 0


@pytest.mark.req("AGT-080")
def test_a_good_tle_or_dump_range_is_taken_as_a_time_tag(rig):
    from tests.samples import ISS_TLE

    tle = json.dumps({"line1": ISS_TLE[0], "line2": ISS_TLE[1]})
    assert rig.send("SCHEDULE_AFTER", delay_s=30.0, command="SET_TLE", args=tle).completed
    dump = json.dumps({"from_unix_s": 1000.0, "to_unix_s": 2000.0})
    assert rig.send("SCHEDULE_AFTER", delay_s=30.0, command="STORE_DUMP", args=dump).completed
    assert rig.send("SCHEDULE_LIST").result["count"] == 2


def write_sequence(rig: InProcessAgent, name: str, text: str) -> None:
    directory = Path(rig.config.state_dir) / "sequences"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.toml").write_text(text)



def assert_restart_resumes_nothing(state_dir, advance_s: float, step_event: str) -> None:
    """An agent restarted on ``state_dir`` runs no sequence: none running, and ``step_event`` (what its
    next step would have said) not said within ``advance_s``."""
    again = InProcessAgent(state_dir)
    try:
        again.advance(advance_s)
        assert not again.events(step_event) and again.hk()["sequence_running"] == ""
    finally:
        again.close()

@pytest.mark.req("AGT-081")
def test_a_sequence_waits_on_telemetry_and_runs_its_commands_in_turn(rig):
    watch(rig)
    write_sequence(rig, "charge_then_idle", """
name = "charge_then_idle"
[[step]]
command = "PING"
args = { token = 1 }
[[step]]
wait_for = { channel = "battery_soc_pct", op = ">=", value = 95.0, timeout_s = 120 }
[[step]]
command = "SET_MODE"
args = { mode = "IDLE" }
""")
    assert rig.send("SEQUENCE_START", name="charge_then_idle").completed
    rig.advance(10)
    assert [e.args["token"] for e in rig.events("PING_RECEIVED")] == [1]
    assert rig.hk()["sequence_step"] == 1 and rig.agent.mode.value == "SAFE"
    rig.eps.reading = type(rig.eps.reading)(soc_pct=96.0, bus_voltage_v=8.2, solar_power_w=80.0)
    rig.advance(5)
    assert rig.agent.mode.value == "IDLE"
    [done] = [e.args for e in rig.events("SEQUENCE_DONE")]
    assert done["ok"] is True
    assert rig.hk()["sequence_running"] == ""


@pytest.mark.req("AGT-081")
def test_a_sequence_named_other_than_its_file_is_refused(rig):
    """It once ran, then could not be resumed after a restart: the run was kept by the name inside the
    file, and a resume opens the file of that name (an audit)."""
    write_sequence(rig, "pass1", 'name = "downlink_pass"\n[[step]]\ncommand = "NOOP"\n')
    refused = rig.send("SEQUENCE_START", name="pass1")
    assert not refused.completed and "name 'downlink_pass' is not the file's" in refused.outcome, refused.outcome


@pytest.mark.req("AGT-081")
def test_a_failed_step_aborts_the_sequence_and_says_why(rig):
    write_sequence(rig, "too_far", """
name = "too_far"
[[step]]
command = "SET_MODE"
args = { mode = "COMPUTE" }
[[step]]
command = "NOOP"
""")
    assert rig.send("SEQUENCE_START", name="too_far").completed
    rig.advance(2)
    [done] = [e.args for e in rig.events("SEQUENCE_DONE")]
    assert done["ok"] is False and "step[0] SET_MODE failed" in done["reason"]
    assert rig.hk()["cmd_executed"] == 1  # SEQUENCE_START only: the NOOP after the failure never ran


@pytest.mark.req("AGT-081")
def test_a_sequence_resumes_after_a_restart_where_it_was(tmp_path):
    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "slow", """
name = "slow"
[[step]]
command = "NOOP"
[[step]]
wait_s = 30
[[step]]
command = "PING"
args = { token = 9 }
""")
        assert first.send("SEQUENCE_START", name="slow").completed
        first.advance(10)
        assert first.hk()["sequence_step"] == 1
    finally:
        first.close()
    again = InProcessAgent(tmp_path)
    try:
        assert again.hk()["sequence_running"] == "slow"
        again.advance(40)
        assert [e.args["token"] for e in again.events("PING_RECEIVED")] == [9]
        assert [e.args["ok"] for e in again.events("SEQUENCE_DONE")] == [True]
    finally:
        again.close()


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("name", ["../state", "/etc/passwd", ".hidden", "a/b", "", "missing"])
def test_a_hostile_or_unknown_sequence_name_is_refused(rig, name):
    result = rig.send("SEQUENCE_START", name=name)
    assert result.failed and "name" in result.failure.reason
    assert str(rig.config.state_dir) not in result.failure.reason


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("name, said", [
    ("pass_1.toml", "; did you mean pass_1 (the file's name without .toml, case-sensitive)?"),
    ("PASS_1", "; did you mean pass_1 (the file's name without .toml, case-sensitive)?"),
    ("pass_2", " (it holds charge, pass_1)"),
])
def test_a_sequence_name_not_there_says_what_the_operator_may_have_meant(rig, name, said):
    """Found in audit: the file's name with .toml, or in another case, got only "no sequence NAME", and the
    operator out of contact could not tell what was there."""
    for there in ("pass_1", "charge"):
        write_sequence(rig, there, f'name = "{there}"\n[[step]]\ncommand = "NOOP"\n')
    result = rig.send("SEQUENCE_START", name=name)
    assert result.failed and result.failure.reason == f"name: no sequence {name} in the sequences directory{said}"


@pytest.mark.req("AGT-081")
def test_a_sequence_that_is_a_symlink_out_is_refused(rig, tmp_path):
    outside = tmp_path.parent / "outside.toml"
    outside.write_text('name = "outside"\n[[step]]\ncommand = "NOOP"\n')
    directory = Path(rig.config.state_dir) / "sequences"
    directory.mkdir(exist_ok=True)
    (directory / "link.toml").symlink_to(outside)
    result = rig.send("SEQUENCE_START", name="link")
    assert result.failed and "symbolic link" in result.failure.reason


@pytest.mark.req("AGT-081")
def test_a_malformed_sequence_is_refused_naming_the_key(rig):
    write_sequence(rig, "bad", 'name = "bad"\n[[step]]\ncommand = "SET_MODE"\nargs = { mode = "WARP" }\n')
    result = rig.send("SEQUENCE_START", name="bad")
    assert result.failed and "step[0].args.mode" in result.failure.reason
    assert rig.hk()["sequence_running"] == ""


@pytest.mark.req("AGT-080")
def test_a_time_tag_released_when_the_schedule_could_not_record_it_runs_once_across_a_restart(tmp_path, monkeypatch):
    """Found in audit: on a full disk the schedule could not record a release, the entry ran, and after a restart
    it was released and ran again. A time tag's command identity is its entry's: the journal answers the second."""
    import errno

    import flight.agent.schedule as schedule_module

    real = schedule_module.write_checked_json
    first = InProcessAgent(tmp_path)
    try:
        assert first.send("SCHEDULE_AFTER", delay_s=5.0, command="RESET_COUNTERS").completed

        def full(path, body):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(schedule_module, "write_checked_json", full)
        first.advance(8)
        assert len(first.events("COUNTERS_RESET")) == 1 and first.agent.scheduler.schedule.persist_error
    finally:
        first.close()
    monkeypatch.setattr(schedule_module, "write_checked_json", real)
    again = InProcessAgent(tmp_path)
    try:
        again.advance(8)
        assert len(again.events("SCHEDULE_RELEASED")) == 1  # released again: the file still held it
        assert not again.events("COUNTERS_RESET") and again.hk()["tc_duplicates"] >= 1  # answered, not run
    finally:
        again.close()


@pytest.mark.req("AGT-081")
def test_a_sequence_step_whose_state_cannot_be_kept_is_not_sent_and_the_run_ends_saying_why(tmp_path, monkeypatch):
    """Found in audit: the step was sent though the run's state could not be written, and after a restart the
    file's older state sent it again."""
    import errno

    import flight.agent.scheduler as scheduler_module

    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 5\n[[step]]\ncommand = "RESET_COUNTERS"\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(2)

        def full(path, body):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(scheduler_module, "write_checked_json", full)
        first.advance(6)
        [done] = [e.args for e in first.events("SEQUENCE_DONE")]
        assert not done["ok"] and done["reason"].startswith("step[1] not sent: the sequence state could not be kept")
        assert not first.events("COUNTERS_RESET")
    finally:
        first.close()
    monkeypatch.undo()
    assert_restart_resumes_nothing(tmp_path, 10, "COUNTERS_RESET")


@pytest.mark.req("AGT-081")
def test_a_sequence_whose_state_cannot_be_kept_is_not_started_and_says_why(tmp_path, monkeypatch):
    """Found in audit: with the disk full SEQUENCE_START reported `completed` and SEQUENCE_STARTED, no state was
    kept, and a reset lost the run without a word (its SCHEDULE_ERROR spoke of a "last state kept" there was not)."""
    import errno

    import flight.agent.scheduler as scheduler_module

    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 60\n'
                                   '[[step]]\ncommand = "PING"\nargs = { token = 3 }\n')

        def full(path, body):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(scheduler_module, "write_checked_json", full)
        refused = first.send("SEQUENCE_START", name="s")
        why = "not started: the sequence state could not be kept (No space left on device)"
        assert not refused.completed and why in refused.outcome and "free space" in refused.outcome, refused.outcome
        monkeypatch.undo()
        first.advance(2)
        assert not first.events("SEQUENCE_STARTED") and first.hk()["sequence_running"] == ""
        assert first.send("SEQUENCE_START", name="s").completed  # the disk back: it starts, and is kept
        assert (tmp_path / RUN_STATE).exists()
    finally:
        first.close()


def run_state_not_removable(monkeypatch) -> None:
    """The sequence run's kept state cannot be removed (a file system gone read-only) until monkeypatch.undo()."""
    import errno

    real_unlink = Path.unlink

    def read_only(path, missing_ok=False):
        if path.name == RUN_STATE:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)


@pytest.mark.req("AGT-081")
def test_an_abort_whose_state_cannot_be_removed_says_so_and_the_run_never_resumes(tmp_path, monkeypatch):
    """Found in audit: on a file system gone read-only SEQUENCE_ABORT reported `completed` though the run's state
    stayed, and after a reset the aborted sequence went on and ran its remaining commands."""
    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 30\n'
                                   '[[step]]\ncommand = "PING"\nargs = { token = 4 }\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(2)
        run_state_not_removable(monkeypatch)
        aborted = first.send("SEQUENCE_ABORT")
        assert not aborted.completed and "its kept state could not be removed: a reset would resume it" in \
            aborted.outcome, aborted.outcome
        assert [e.args["ok"] for e in first.events("SEQUENCE_DONE")] == [False]  # stopped now all the same
        first.advance(2)
        assert (tmp_path / RUN_STATE).exists()
        monkeypatch.undo()
        first.advance(2)  # the disk writable again: removed at the next look
        assert not (tmp_path / RUN_STATE).exists()
    finally:
        first.close()
    assert_restart_resumes_nothing(tmp_path, 40, "PING_RECEIVED")


@pytest.mark.req("AGT-080")
def test_a_time_tags_command_identity_is_its_entrys_and_not_its_id_alone():
    """Found in review: an identity made of the entry id alone came again for an entry that took a lost schedule's
    id (the schedule and its ids file both lost): answered from the journal, or refused as a collision."""
    from flight.agent.schedule import ScheduleEntry
    from flight.agent.scheduler import time_tag_cmd_id

    entry = ScheduleEntry(1, 1_795_000_100.0, "RESET_COUNTERS", {}, "ground", 1_795_000_000.0)
    again = ScheduleEntry(1, 1_795_000_100.0, "RESET_COUNTERS", {}, "ground", 1_795_000_000.0, held=True)
    reused = ScheduleEntry(1, 1_795_000_100.0, "RESET_COUNTERS", {}, "ground", 1_795_900_000.0)
    assert time_tag_cmd_id(entry) == time_tag_cmd_id(again) != time_tag_cmd_id(reused)
    assert 0 < time_tag_cmd_id(entry) < 2 ** 63


@pytest.mark.req("AGT-080", "AGT-081")
def test_a_power_mode_the_board_lacks_is_refused_when_time_tagged_or_stored_as_a_step_as_when_sent(rig):
    """Found in review: taken as a time tag, it failed at its release, hours later and out of contact."""
    direct = rig.send("SET_POWER_MODE", name="WARP")
    assert direct.failed and "this board offers" in direct.failure.reason
    tagged = rig.send("SCHEDULE_AFTER", delay_s=60.0, command="SET_POWER_MODE", args=json.dumps({"name": "WARP"}))
    assert tagged.failed and tagged.failure.reason == f"args.name: {direct.failure.reason}"
    assert tagged.failure.code == direct.failure.code
    top = rig.hal.power_modes()[-1].name
    assert rig.send("SCHEDULE_AFTER", delay_s=60.0, command="SET_POWER_MODE", args=json.dumps({"name": top})).completed
    assert rig.send("SCHEDULE_LIST").result["count"] == 1
    write_sequence(rig, "warp", 'name = "warp"\n[[step]]\ncommand = "SET_POWER_MODE"\nargs = { name = "WARP" }\n')
    stored = rig.send("SEQUENCE_START", name="warp")
    assert stored.failed and f"step[0].args.name: {direct.failure.reason}" in stored.failure.reason


@pytest.mark.req("AGT-081")
def test_a_sequence_waiting_past_a_time_tag_s_horizon_is_refused_when_started(rig):
    """Found in review: a wait_until in the year 9999 was taken and held the one slot for sequences for good."""
    write_sequence(rig, "forever", 'name = "forever"\n[[step]]\ncommand = "NOOP"\n'
                                   '[[step]]\nwait_until = 9999-12-31T23:59:59Z\n')
    result = rig.send("SEQUENCE_START", name="forever")
    assert result.failed and "step[1].wait_until: the sequence would wait until 9999-12-31T23:59:59Z" in \
        result.failure.reason
    assert rig.hk()["sequence_running"] == ""


def set_mode_failures(rig: InProcessAgent) -> list[str]:
    return [e.args["reason"] for e in rig.events("COMMAND_FAILED") if e.args["name"] == "SET_MODE"]


@pytest.mark.req("AGT-004", "AGT-015", "AGT-080")
def test_a_time_tag_does_not_lift_a_safe_for_lost_contact_only_the_ground_does(rig):
    """Found in review: a SET_MODE time-tagged before contact was lost took the agent out of the SAFE it fell to
    for it, with no one to see. Stored commands do not override autonomy's safing (cFS, F Prime): refused, said
    and counted, until the ground commands a mode itself, contact back or not."""
    watch(rig)
    assert rig.send("SET_PARAM", name="contact_timeout_s", value="60").completed
    assert rig.send("SET_MODE", mode="IDLE").completed
    for delay_s in (100.0, 200.0):
        assert rig.send("SCHEDULE_AFTER", delay_s=delay_s, command="SET_MODE", args='{"mode": "IDLE"}').completed
    rig.advance(90.0, step_s=5.0)
    assert rig.agent.mode.value == "SAFE" and len(rig.events("CONTACT_LOST")) == 1
    rig.advance(15.0, step_s=5.0)  # the first released, out of contact
    [first] = [e.args for e in rig.events("SCHEDULE_RELEASED")]
    final = reports_for(rig, first["cmd_id"])[-1]
    assert (final.stage, final.success, final.code) == (Stage.STARTED, False, FailureCode.NOT_ALLOWED_IN_MODE)
    assert final.reason.startswith("SAFE since ground contact lost: a time-tagged or sequenced SET_MODE does "
                                   "not take the agent out of SAFE")
    assert rig.agent.mode.value == "SAFE" and set_mode_failures(rig) == [final.reason]
    for _ in range(2):  # contact again (the ground's NOOPs), and no mode commanded: the second is refused too
        assert rig.send("NOOP").completed
        rig.advance(50.0, step_s=5.0)
    assert len(rig.events("SCHEDULE_RELEASED")) == 2 and rig.agent.mode.value == "SAFE"
    assert len(set_mode_failures(rig)) == 2 and rig.hk()["cmd_failed"] == 2
    assert rig.send("SET_MODE", mode="IDLE").completed and rig.agent.mode.value == "IDLE"  # the ground's own


@pytest.mark.req("AGT-004", "AGT-080")
def test_a_time_tag_does_not_take_the_agent_out_of_any_safe_while_contact_is_lost(rig):
    """However it came to be SAFE (here, the start's, where no CONTACT_LOST is said): out of contact, a stored
    SET_MODE would leave it IDLE with no one to see, and the fall for lost contact, said once a loss, not again."""
    assert rig.send("SET_PARAM", name="contact_timeout_s", value="60").completed
    assert rig.send("SCHEDULE_AFTER", delay_s=90.0, command="SET_MODE", args='{"mode": "IDLE"}').completed
    rig.advance(95.0, step_s=5.0)
    assert rig.events("SCHEDULE_RELEASED") and rig.agent.mode.value == "SAFE"
    [reason] = set_mode_failures(rig)
    assert reason.startswith("ground contact is lost: a time-tagged or sequenced SET_MODE")
    assert rig.send("SET_MODE", mode="IDLE").completed  # the ground's, live: contact came back with it


@pytest.mark.req("AGT-002", "AGT-015", "AGT-080")
def test_a_time_tag_does_not_lift_a_safe_for_repeated_faults_in_contact_or_not(rig):
    """Found in review: repeated faults wait for a person as lost contact does, and a SET_MODE time-tagged before
    them took the agent out of that SAFE. The cause is latched when the faults come while it is SAFE already."""
    assert rig.send("SET_MODE", mode="IDLE").completed
    for delay_s in (60.0, 120.0):
        assert rig.send("SCHEDULE_AFTER", delay_s=delay_s, command="SET_MODE", args='{"mode": "IDLE"}').completed
    rig.hal.read_error = OSError("i2c bus stuck")
    rig.advance(8.0)
    rig.hal.read_error = None
    assert rig.events("FAULTS_REPEATED") and rig.agent.mode.value == "SAFE"
    assert rig.send("NOOP").completed  # in contact
    rig.advance(60.0, step_s=5.0)
    assert len(rig.events("SCHEDULE_RELEASED")) == 1 and rig.agent.mode.value == "SAFE"
    [reason] = set_mode_failures(rig)
    assert reason.startswith("SAFE since repeated faults: a time-tagged or sequenced SET_MODE does not take")
    assert rig.send("SET_MODE", mode="SAFE").completed  # the ground's, live: it has seen it
    rig.advance(60.0, step_s=5.0)
    assert len(rig.events("SCHEDULE_RELEASED")) == 2 and rig.agent.mode.value == "IDLE"
    assert len(set_mode_failures(rig)) == 1
    # Faults while SAFE already (the ground's SAFE here): that SAFE now waits for the ground too.
    assert rig.send("SET_MODE", mode="SAFE").completed
    assert rig.send("SCHEDULE_AFTER", delay_s=60.0, command="SET_MODE", args='{"mode": "IDLE"}').completed
    rig.hal.read_error = OSError("i2c bus stuck")
    rig.advance(8.0)
    rig.hal.read_error = None
    assert len(rig.events("FAULTS_REPEATED")) == 2
    assert rig.send("NOOP").completed
    rig.advance(60.0, step_s=5.0)
    assert rig.agent.mode.value == "SAFE" and len(set_mode_failures(rig)) == 2


@pytest.mark.req("AGT-015", "AGT-081")
def test_a_sequence_step_does_not_lift_a_safe_for_lost_contact(rig):
    assert rig.send("SET_PARAM", name="contact_timeout_s", value="60").completed
    assert rig.send("SET_MODE", mode="IDLE").completed
    write_sequence(rig, "later", 'name = "later"\n[[step]]\nwait_s = 100\n[[step]]\ncommand = "SET_MODE"\n'
                                 'args = { mode = "IDLE" }\n[[step]]\ncommand = "NOOP"\n')
    assert rig.send("SEQUENCE_START", name="later").completed
    rig.advance(110.0, step_s=5.0)
    assert rig.agent.mode.value == "SAFE" and len(rig.events("CONTACT_LOST")) == 1
    [done] = [e.args for e in rig.events("SEQUENCE_DONE")]
    assert not done["ok"] and "step[1] SET_MODE failed: SAFE since ground contact lost" in done["reason"]


@pytest.mark.req("AGT-004", "AGT-080")
def test_after_a_restart_out_of_contact_a_time_tag_is_refused_while_contact_is_still_lost(tmp_path, monkeypatch):
    """However it went SAFE before (here the start's, no cause kept), the time since contact is kept across the
    restart, and out of contact a stored SET_MODE is refused after the restart too."""
    import tests.inproc as inproc

    params = {"contact_timeout_s": 60.0}
    first = InProcessAgent(tmp_path, parameters=params)
    try:
        release = first.clock.now_s() + 200.0
        assert first.send("SCHEDULE_AT", release_unix_s=release, command="SET_MODE", args='{"mode": "IDLE"}').completed
        first.advance(2.0)  # the last contact's time saved with the state
    finally:
        first.close()
    monkeypatch.setattr(inproc, "T0_S", release - 3.0)  # back up 197 s after the last contact
    again = InProcessAgent(tmp_path, parameters=params)
    try:
        again.advance(5.0)
        assert again.events("SCHEDULE_RELEASED") and again.agent.mode.value == "SAFE"
        [reason] = set_mode_failures(again)
        assert reason.startswith("ground contact is lost")
    finally:
        again.close()


@pytest.mark.req("AGT-013", "AGT-015", "AGT-080")
def test_a_safe_that_waits_for_the_ground_still_does_after_a_restart_in_contact(tmp_path, monkeypatch):
    """Found in review: the cause was in memory only, so after a restart, contact back (the ground server's own
    acknowledgements are contact), a time tag lifted the SAFE for lost contact with no operator in the loop."""
    import tests.inproc as inproc

    params = {"contact_timeout_s": 60.0}
    first = InProcessAgent(tmp_path, parameters=params)
    try:
        assert first.send("SET_MODE", mode="IDLE").completed
        release = first.clock.now_s() + 300.0
        for at in (release, release + 60.0):
            assert first.send("SCHEDULE_AT", release_unix_s=at, command="SET_MODE", args='{"mode": "IDLE"}').completed
        first.advance(90.0, step_s=5.0)
        assert first.agent.mode.value == "SAFE" and first.events("CONTACT_LOST")
    finally:
        first.close()
    monkeypatch.setattr(inproc, "T0_S", release - 20.0)
    again = InProcessAgent(tmp_path, parameters=params)
    try:
        assert again.send("NOOP").completed  # in contact again
        again.advance(25.0, step_s=5.0)
        assert again.events("SCHEDULE_RELEASED") and again.agent.mode.value == "SAFE"
        [reason] = set_mode_failures(again)
        assert reason.startswith("SAFE since ground contact lost")
        assert again.send("SET_MODE", mode="SAFE").completed  # the ground's: the next time tag may lift it
    finally:
        again.close()  # still SAFE: what is kept is that nothing waits for the ground any more (found in review)
    third = InProcessAgent(tmp_path, parameters=params)
    try:
        assert third.agent.modes.waits_for_ground is None
        for _ in range(2):  # in contact (the timeout is 60 s) until the second time tag's release, at 80 s
            assert third.send("NOOP").completed
            third.advance(45.0, step_s=5.0)
        assert third.events("SCHEDULE_RELEASED") and third.agent.mode.value == "IDLE"
        assert not set_mode_failures(third)
    finally:
        third.close()


@pytest.mark.req("AGT-004", "AGT-080")
def test_a_time_tag_is_judged_on_contact_as_it_is_not_as_the_last_control_tick_found_it(tmp_path):
    """Between two ticks contact may be lost already: taken then, the SET_MODE said completed and the next tick
    took the agent back to SAFE for lost contact."""
    with InProcessAgent(tmp_path, parameters={"contact_timeout_s": 60.0}, control_period_s=10.0) as rig:
        assert rig.send("SCHEDULE_AFTER", delay_s=65.0, command="SET_MODE", args='{"mode": "IDLE"}').completed
        rig.advance(67.0)  # released at 65 s, the last tick at 60 s (contact not lost yet), the next at 70 s
        assert rig.events("SCHEDULE_RELEASED") and not rig.events("MODE_CHANGED")[1:]
        [reason] = set_mode_failures(rig)
        assert reason.startswith("ground contact is lost") and rig.agent.mode.value == "SAFE"


# --- a run resumed after a restart is checked again, as at its start (AGT-081) ---------------------------------------

DAY_S = 86400.0
RUN_STATE = "sequence_run.json"


def resume_refusal(again: InProcessAgent, name: str) -> str:
    """The one SEQUENCE_DONE of a run not resumed: ended, not ok, named, counted, the slot free."""
    [done] = [e.args for e in again.events("SEQUENCE_DONE")]
    assert done["name"] == name and done["ok"] is False, done
    hk = again.hk()
    assert hk["sequence_running"] == "" and hk["sequences_not_resumed"] == 1
    return done["reason"]


@pytest.mark.req("AGT-081")
def test_a_resumed_sequence_is_checked_again_and_one_the_board_no_longer_allows_ends_saying_why(tmp_path):
    """Found in review: a resume took the kept run with none of SEQUENCE_START's checks. A Jetson whose
    nvpmodel.conf changed over the restart (its modes are discovered at start) no longer has the mode a step
    sets: the run is not resumed, none of its steps runs, and the agent goes on."""
    from dataclasses import replace

    from flight.hal import BoardOptions, open_board
    from tests.fakeboard import make_board

    fake = make_board(tmp_path, "orin_nano")

    def jetson(clock):
        return replace(open_board("jetson", BoardOptions(root=str(fake.root), nvpmodel=str(fake.nvpmodel))),
                       clock=clock)

    state = tmp_path / "state"
    with InProcessAgent(state, board=jetson) as first:
        write_sequence(first, "boost", 'name = "boost"\n[[step]]\nwait_s = 30\n[[step]]\ncommand = "PING"\n'
                                       'args = { token = 3 }\n[[step]]\ncommand = "SET_POWER_MODE"\n'
                                       'args = { name = "MAXN_SUPER" }\n')
        assert first.send("SEQUENCE_START", name="boost").completed
        first.advance(5)
    (fake.root / "etc" / "nvpmodel.conf").write_text(  # an older JetPack's: no MAXN_SUPER
        "< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=3 NAME=7W >\n"
        "CPU_ONLINE CORE_0 1\n< PM_CONFIG DEFAULT=3 >\n")
    with InProcessAgent(state, board=jetson) as again:
        reason = resume_refusal(again, "boost")
        assert reason == ("not resumed at the restart: sequences/boost.toml: step[2].args.name: unknown power mode "
                          "'MAXN_SUPER': this board offers 7W, 15W"), reason
        again.advance(40)
        assert not again.events("PING_RECEIVED") and not (state / RUN_STATE).exists()
        write_sequence(again, "ping", 'name = "ping"\n[[step]]\ncommand = "PING"\nargs = { token = 4 }\n')
        assert again.send("SEQUENCE_START", name="ping").completed  # the agent goes on
        again.advance(2)
        assert [e.args["token"] for e in again.events("PING_RECEIVED")] == [4]


@pytest.mark.req("AGT-081")
def test_a_resumed_wait_that_a_clock_set_back_pushes_past_the_horizon_ends_the_run_saying_why(tmp_path):
    """Found in review: a board whose clock went 40 days back over the restart (no RTC battery) resumed a
    10-minute wait counted from a start 40 days ahead of it: 40 days of waiting, the one slot held. The waits
    left are held to SEQUENCE_START's 30 days, from the resume."""
    first = InProcessAgent(tmp_path, start=False)
    try:
        first.clock.set(first.clock.now_s() + 40 * DAY_S)
        first.start()
        write_sequence(first, "slow", 'name = "slow"\n[[step]]\nwait_s = 600\n[[step]]\ncommand = "PING"\n'
                                      'args = { token = 9 }\n')
        assert first.send("SEQUENCE_START", name="slow").completed
        first.advance(5)
    finally:
        first.close()
    with InProcessAgent(tmp_path) as again:  # UTC back at T0_S
        reason = resume_refusal(again, "slow")
        assert reason.startswith("not resumed at the restart: sequences/slow.toml: step[0].wait_s: would wait until "
                                 "2026-12-28T"), reason
        assert reason.endswith(", 40.0 days from now, at most 30: check the board's clock, then start it again"), reason
        again.advance(5)
        assert not again.events("PING_RECEIVED")


@pytest.mark.req("AGT-081")
@pytest.mark.parametrize("change, said", [
    ("deleted", "name: no sequence s in the sequences directory"),
    ("edited", "sequences/s.toml: state.digest: saved for 's'"),
])
def test_a_sequence_whose_file_went_or_changed_while_it_ran_ends_saying_so_after_a_restart(tmp_path, change, said):
    """Found in review: not resumed, and said only as a SCHEDULE_ERROR: the ground, which saw SEQUENCE_STARTED,
    never saw it end; and its sound state was moved aside as if corrupt."""
    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 60\n[[step]]\ncommand = "NOOP"\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(5)
    finally:
        first.close()
    path = tmp_path / "sequences" / "s.toml"
    if change == "deleted":
        path.unlink()
    else:
        path.write_text('name = "s"\n[[step]]\nwait_s = 1\n[[step]]\ncommand = "NOOP"\n')
    with InProcessAgent(tmp_path) as again:
        reason = resume_refusal(again, "s")
        assert reason.startswith(f"not resumed at the restart: {said}"), reason
        assert not again.events("STATE_CORRUPT") and not again.events("SCHEDULE_ERROR")
        assert not list(tmp_path.glob(RUN_STATE + "*")), "a sound state is removed, not set aside as corrupt"


@pytest.mark.req("AGT-081")
def test_a_run_not_resumed_whose_state_cannot_be_removed_is_removed_at_a_later_look(tmp_path, monkeypatch):
    """Found in review: a kept run refused at boot (its file changed) ended with SEQUENCE_DONE, but a state the disk
    would not let go was never tried again; a later boot, its check passing then, could resume a run said ended."""
    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 60\n[[step]]\ncommand = "NOOP"\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(5)
    finally:
        first.close()
    (tmp_path / "sequences" / "s.toml").write_text('name = "s"\n[[step]]\nwait_s = 1\n[[step]]\ncommand = "NOOP"\n')
    run_state_not_removable(monkeypatch)
    with InProcessAgent(tmp_path) as again:
        assert [e.args["ok"] for e in again.events("SEQUENCE_DONE")] == [False]
        errors = [e.args["reason"] for e in again.events("SCHEDULE_ERROR")]
        assert any("a reset now would try to resume the ended run" in e for e in errors), errors
        again.advance(2)
        assert (tmp_path / RUN_STATE).exists()
        monkeypatch.undo()
        again.advance(2)  # the disk writable again: removed at the next look
        assert not (tmp_path / RUN_STATE).exists()


@pytest.mark.req("AGT-081")
def test_a_kept_run_state_that_fails_its_check_is_set_aside_said_counted_and_the_agent_starts(tmp_path):
    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 60\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(2)
    finally:
        first.close()
    kept = tmp_path / RUN_STATE
    kept.write_bytes(kept.read_bytes().replace(b'\\"index\\":0', b'\\"index\\":1'))  # a flipped bit, in effect
    with InProcessAgent(tmp_path) as again:
        [error] = [e.args["reason"] for e in again.events("SCHEDULE_ERROR")]
        assert error.startswith("sequence run not resumed: sequence_run.json: SHA-256 mismatch"), error
        assert [e.args["what"] for e in again.events("STATE_CORRUPT")] == ["sequence run"]
        hk = again.hk()
        assert hk["sequence_running"] == "" and hk["sequences_not_resumed"] == 1
        assert (tmp_path / (RUN_STATE + ".corrupt")).exists() and not kept.exists()


@pytest.mark.req("AGT-081")
def test_a_kept_run_state_with_a_number_no_float_holds_is_refused_and_the_agent_starts(tmp_path):
    """Found in review: a checked state whose t0 was an integer past a float's range (written by hand or by
    another build) raised OverflowError out of the resume, and the agent did not start at all."""
    from flight.storage import read_checked_json, write_checked_json

    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 60\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(2)
    finally:
        first.close()
    write_checked_json(tmp_path / RUN_STATE, {**read_checked_json(tmp_path / RUN_STATE), "t0": 10 ** 400})
    with InProcessAgent(tmp_path) as again:
        reason = resume_refusal(again, "s")
        assert reason == "not resumed at the restart: sequences/s.toml: state.t0: started_unix_s and t0 must be numbers"


@pytest.mark.req("AGT-081")
def test_an_unforeseen_error_in_a_resume_ends_the_run_and_the_agent_starts(tmp_path, monkeypatch):
    """A resume runs in the agent's construction: whatever it raises must not stop every start of the agent."""
    import flight.agent.scheduler as scheduler_module

    first = InProcessAgent(tmp_path)
    try:
        write_sequence(first, "s", 'name = "s"\n[[step]]\nwait_s = 60\n')
        assert first.send("SEQUENCE_START", name="s").completed
        first.advance(2)
    finally:
        first.close()

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr(scheduler_module, "load_sequence", broken)
    with InProcessAgent(tmp_path) as again:
        assert resume_refusal(again, "s") == "not resumed at the restart: RuntimeError: a bug in the parser"


@pytest.mark.req("AGT-081")
def test_a_sequence_whose_op_is_a_toml_array_is_refused_naming_the_key_at_start_and_upload(rig):
    """Found in audit: SEQUENCE_START answered "EXECUTION_ERROR TypeError: unhashable type: 'list'", and the check of
    a file come up said the same, naming no step nor key."""
    write_sequence(rig, "odd", 'name = "odd"\n[[step]]\nwait_for = { channel = "mode", op = ["=="], value = "IDLE", '
                               'timeout_s = 5 }\n')
    result = rig.send("SEQUENCE_START", name="odd")
    assert result.failed and result.failure.code == FailureCode.BAD_ARGUMENTS
    assert "sequences/odd.toml: step[0].wait_for.op:" in result.failure.reason and "Error" not in result.failure.reason
    ok, said = rig.agent.scheduler.check_upload("odd", Path(rig.config.state_dir) / "sequences" / "odd.toml")
    assert not ok and said.startswith("sequences/odd.toml: step[0].wait_for.op:")
    assert rig.hk()["sequence_running"] == ""
