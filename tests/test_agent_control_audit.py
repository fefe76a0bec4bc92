"""Audit of the agent's control core: housekeeping counters, the dispatcher's deferred completions, timers."""

from __future__ import annotations

import pytest

from flight.agent.dispatcher import Deferred, Handler
from flight.agent.timers import Timers
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import INT_BOUNDS, ValueType
from flight.link.messages import Stage
from flight.link.packets import ACK_ALL, unpack
from tests.inproc import InProcessAgent
from tests.test_dispatcher import Bench
from tests.test_timers import StepClock

U32_MAX = INT_BOUNDS[ValueType.U32][1]


@pytest.mark.req("AGT-010", "AGT-013")
def test_a_counter_past_its_u32_is_sent_saturated_and_its_packet_still_reaches_the_ground(tmp_path):
    """Found in audit: tc_bad_packets (kept across restarts) past 2^32 - 1 went out as it was, the ground's decoder
    refused the whole AGENT_HK, and the mode, the boot count and every other counter in it were lost at each
    period. Saturated, not wrapped: a wrapped count would read 0 and clear the ground's alarm on it."""
    assert DICTIONARY.channel_by_name["tc_bad_packets"].type is ValueType.U32
    with InProcessAgent(tmp_path) as rig:
        rig.advance(2.0)
        rig.agent.link_service.tc_bad_packets = 2**32 + 5
        rig.agent.dispatcher.counters.executed = 2**40
        rig.client.latest.clear()
        values = rig.hk()
        assert values["tc_bad_packets"] == U32_MAX and values["cmd_executed"] == U32_MAX
        assert values["mode"] == "SAFE" and values["boot_count"] == 1  # the rest of the packet with them
        assert rig.agent.link_service.tc_bad_packets == 2**32 + 5  # the count itself goes on
        assert rig.send("RESET_COUNTERS").completed
        assert rig.hk()["tc_bad_packets"] == 0


@pytest.mark.req("LNK-002", "AGT-040", "AGT-017")
def test_a_deferred_completion_whose_result_no_report_can_carry_ends_completed_with_a_note(tmp_path):
    """Found in audit: a deferred command completed with a result too big for a report raised into whoever
    completed it (the compute supervisor), and no final report went out: the sender waited for good,
    COMMAND_STATUS said running, a sequence step never ended, and the journal said completed. In review: the work
    was done, and a retry already got the success with a note (whatever the flags): so does the first report."""
    from flight.agent.journal import CommandJournal

    bench = Bench()
    bench.dispatcher.journal = CommandJournal(tmp_path / "journal")
    finals: list[tuple[int, bool]] = []
    bench.dispatcher.on_final.append(lambda cmd_id, ok, reason: finals.append((cmd_id, ok)))
    pending: list[Deferred] = []
    bench.dispatcher.register("JOB_CANCEL", Handler(lambda req: pending.append(Deferred()) or pending[-1]))
    bench.dispatcher.register("COMMAND_STATUS", bench.dispatcher.handlers()["COMMAND_STATUS"])
    cmd_id = bench.send("JOB_CANCEL", {"job_id": 3}, ack_flags=ACK_ALL)
    pending[0].complete({"blob": "x" * 70_000})  # nothing raised into the completer
    assert bench.stages() == [("accepted", True), ("started", True), ("completed", True)]
    last = bench.codec.decode_tm(unpack(bench.reports[-1]))
    assert last.cmd_id == cmd_id and last.result["note"].startswith("its result does not fit a report: ")
    assert finals == [(cmd_id, True)]
    counters = bench.dispatcher.counters
    assert (counters.executed, counters.failed) == (1, 0)
    assert bench.dispatcher.journal.get(cmd_id).ok is True  # a restart answers it as it was answered
    bench.send("COMMAND_STATUS", {"cmd_id": cmd_id})
    status = bench.codec.decode_tm(unpack(bench.reports[-1]))
    assert status.stage is Stage.COMPLETED and status.result["state"] == "completed"
    bench.dispatcher.journal.close()


def test_a_timer_whose_callback_raises_does_not_keep_the_others_from_firing():
    """Found in audit: housekeeping raising skipped the control tick due in the same pass; under lockstep the
    harness's step was then answered with no thermal or battery check made at its time. The error still goes
    to the loop (counted there as an internal error), once every due timer has fired."""
    clock = StepClock()
    timers = Timers(clock)
    fired: list[str] = []

    def housekeeping() -> None:
        fired.append("housekeeping")
        raise ValueError("a telemetry bug")

    timers.every("housekeeping", 1.0, housekeeping)
    timers.every("control", 1.0, lambda: fired.append("control"))
    with pytest.raises(ValueError, match="a telemetry bug"):
        timers.run_due()
    assert fired == ["housekeeping", "control"]
    assert timers.next_due_s() == 1.0  # each moved on by its period: no burst, nothing fired twice
    clock.t = 1.0
    with pytest.raises(ValueError):
        timers.run_due()
    assert fired == ["housekeeping", "control"] * 2
    # The agent's way: each error said with its timer's name (found in review: raised, the second of two was lost)
    timers.every("control", 1.0, lambda: (_ for _ in ()).throw(KeyError("temp_max_c")))
    clock.t = 2.0
    said: list[tuple[str, str]] = []
    assert timers.run_due(lambda name, exc: said.append((name, type(exc).__name__))) == 2
    assert said == [("housekeeping", "ValueError"), ("control", "KeyError")]
    # Saying one fails too (an event its text cannot be encoded in): the others still fire, then it is raised
    fired.clear()
    timers.every("control", 1.0, lambda: fired.append("control"))
    clock.t = 3.0

    def unsayable(name, exc):
        raise UnicodeEncodeError("utf-8", "caf\udcff", 3, 4, "surrogates not allowed")

    with pytest.raises(UnicodeEncodeError):
        timers.run_due(unsayable)
    assert fired == ["housekeeping", "control"]


@pytest.mark.req("LNK-002", "AGT-040")
def test_a_listeners_error_after_a_success_went_out_is_not_taken_for_an_unreportable_result():
    """Found in review: the catch for a result no report can carry took in an error raised by a final listener
    (the scheduler's) after the success report had gone: a second, failed COMPLETED report for the same command,
    counted failed. The listener's error goes on to the loop; the command stays completed."""
    bench = Bench()
    pending: list[Deferred] = []
    bench.dispatcher.register("JOB_CANCEL", Handler(lambda req: pending.append(Deferred()) or pending[-1]))

    def listener(cmd_id, ok, reason):
        raise OSError(28, "No space left on device")

    bench.dispatcher.on_final.append(listener)
    bench.send("JOB_CANCEL", {"job_id": 3}, ack_flags=ACK_ALL)
    with pytest.raises(OSError, match="No space left"):
        pending[0].complete({"job_id": 3})
    assert bench.stages() == [("accepted", True), ("started", True), ("completed", True)]
    assert (bench.dispatcher.counters.executed, bench.dispatcher.counters.failed) == (1, 0)
