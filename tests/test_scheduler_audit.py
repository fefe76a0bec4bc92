"""An audit of the scheduler and sequences (flight/agent/scheduler.py, flight/agent/schedule.py): what a
sequence's end says where its text is cut to an event's 200 characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from flight.agent.ports import MAX_TEXT_ARG
from flight.agent.schedule import SequenceRun, parse_sequence
from tests.inproc import InProcessAgent

T0 = 1_800_000_000.0  # any fixed UTC; nothing here reads the wall clock
LONG_NAME = "downlink_pass_over_svalbard_0042"  # 32 characters, the most a sequence name may have


def write_sequence(state_dir: Path, name: str, text: str) -> None:
    directory = Path(state_dir) / "sequences"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.toml").write_text(text)


@pytest.mark.req("AGT-081")
def test_the_end_of_a_run_names_every_step_continued_past_within_an_events_text():
    """Found in audit: the failures were listed whole, one after the other, and the first one's reason pushed the
    steps failed after it out of the 200 characters SEQUENCE_DONE carries."""
    step = '[[step]]\ncommand = "NOOP"\non_failure = "continue"\n'
    run = SequenceRun(parse_sequence(f'name = "{LONG_NAME}"\n' + step * 3 + '[[step]]\ncommand = "PING"\n', "s.toml"),
                      T0)
    for index in range(3):
        assert run.poll(T0, {}).step_index == index
        run.command_done(index, False, f"refused by a long reason number {index}: " + "x" * 120)
    assert run.poll(T0, {}).step_index == 3
    run.command_done(3, True)
    end = run.poll(T0, {})
    assert end.ok and "3 failed and were continued past: step[0] NOOP, step[1] NOOP, step[2] NOOP (" in end.reason
    assert "step[2] NOOP" in end.reason[:MAX_TEXT_ARG]
    assert "step[2] NOOP failed: refused by a long reason number 2" in end.reason  # the reasons still there, after


@pytest.mark.req("AGT-081")
def test_a_sequence_done_cut_to_an_events_text_is_marked_as_cut(tmp_path):
    """Found in audit: cut silently at 200 characters by the event port, the reason read as whole."""
    with InProcessAgent(tmp_path) as rig:
        write_sequence(tmp_path, LONG_NAME, f'name = "{LONG_NAME}"\n' + '[[step]]\ncommand = "SET_MODE"\n'
                       'args = { mode = "COMPUTE" }\non_failure = "continue"\n' * 3)
        assert rig.send("SEQUENCE_START", name=LONG_NAME).completed
        rig.advance(3)
        [done] = [e.args for e in rig.events("SEQUENCE_DONE")]
    assert done["ok"] is True and len(done["reason"]) == MAX_TEXT_ARG and done["reason"].endswith("…")
    assert "continued past: step[0] SET_MODE, step[1] SET_MODE, step[2] SET_MODE (" in done["reason"]


@pytest.mark.req("AGT-081")
def test_a_run_whose_long_named_file_changed_over_a_restart_says_so_within_an_events_text(tmp_path):
    """Found in audit: the run's and the file's names and digests came first, and a 32-character name pushed "the
    file changed since the run started; start it again" out of the 200 characters of SEQUENCE_DONE."""
    with InProcessAgent(tmp_path) as first:
        write_sequence(tmp_path, LONG_NAME,
                       f'name = "{LONG_NAME}"\n[[step]]\nwait_s = 60\n[[step]]\ncommand = "NOOP"\n')
        assert first.send("SEQUENCE_START", name=LONG_NAME).completed
        first.advance(5)
    write_sequence(tmp_path, LONG_NAME, f'name = "{LONG_NAME}"\n[[step]]\nwait_s = 1\n[[step]]\ncommand = "NOOP"\n')
    with InProcessAgent(tmp_path) as again:
        [done] = [e.args for e in again.events("SEQUENCE_DONE")]
        assert again.hk()["sequences_not_resumed"] == 1
    assert done["name"] == LONG_NAME and done["ok"] is False
    assert "the file changed since the run started; start it again" in done["reason"], done["reason"]


@pytest.mark.req("AGT-081")
def test_a_run_kept_across_a_restart_is_said_resumed_with_its_step(tmp_path):
    """Found in audit: a resumed run was silent until its SEQUENCE_DONE; the operator could not tell it went on."""
    text = 'name = "slow"\n[[step]]\ncommand = "NOOP"\n[[step]]\nwait_s = 60\n[[step]]\ncommand = "NOOP"\n'
    with InProcessAgent(tmp_path) as first:
        write_sequence(tmp_path, "slow", text)
        assert first.send("SEQUENCE_START", name="slow").completed
        first.advance(5)
        assert first.events("SEQUENCE_RESUMED") == []  # a start is not a resume
    with InProcessAgent(tmp_path) as again:
        [resumed] = [e.args for e in again.events("SEQUENCE_RESUMED")]
        assert again.hk()["sequence_running"] == "slow"
    assert resumed == {"name": "slow", "step": 1, "steps": 3}


@pytest.mark.req("AGT-081")
def test_reset_counters_zeroes_the_runs_not_resumed_and_keeps_the_schedule(tmp_path):
    """Found in audit: ``sequences_not_resumed`` (warning at 1) stayed raised for the whole boot after
    RESET_COUNTERS, which zeroes the other error counts."""
    with InProcessAgent(tmp_path) as first:
        write_sequence(tmp_path, "slow", 'name = "slow"\n[[step]]\nwait_s = 60\n[[step]]\ncommand = "NOOP"\n')
        assert first.send("SEQUENCE_START", name="slow").completed
        first.advance(2)
    (tmp_path / "sequences" / "slow.toml").unlink()
    with InProcessAgent(tmp_path) as again:
        assert again.send("SCHEDULE_AFTER", delay_s=600.0, command="NOOP", args="{}").completed
        assert again.hk()["sequences_not_resumed"] == 1
        assert again.send("RESET_COUNTERS").completed
        hk = again.hk()
    assert hk["sequences_not_resumed"] == 0 and hk["schedule_entries"] == 1


def test_an_event_text_cut_to_its_limit_is_marked_and_one_within_it_is_not():
    """Found in audit: every event text was cut silently at 200 characters; a cut one now ends with a mark."""
    from flight.agent.ports import cut_text

    assert cut_text("x" * MAX_TEXT_ARG) == "x" * MAX_TEXT_ARG
    cut = cut_text("y" * (MAX_TEXT_ARG + 1))
    assert len(cut) == MAX_TEXT_ARG and cut == "y" * (MAX_TEXT_ARG - 1) + "…"
