"""The agent's command path, items an earlier audit left: reports the link refuses, hostile argument names,
the counts a RESET_COUNTERS leaves, what the link service says it takes, and what is contact."""

from __future__ import annotations

import json

import msgpack
import pytest

from flight.agent.dispatcher import Deferred, Dispatcher, Handler, ReportNotSent
from flight.agent.journal import CommandJournal
from flight.agent.ports import EventPort
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import FailureCode
from flight.link.messages import Stage
from flight.link.packets import ACK_ALL, Service, Subtype, pack_tc, unpack
from flight.link.sdls import Sealer
from tests.inproc import InProcessAgent
from tests.test_auth_agent import OTHER, keyed_rig
from tests.test_dispatcher import Bench


class _LinkDown:
    """The link's send, failing while ``down`` (a socket or a serial device's error raised to the caller)."""

    def __init__(self, send):
        self._send = send
        self.down = False

    def __call__(self, peer, packet):
        if self.down:
            raise OSError(5, "link down")
        self._send(peer, packet)


def _with_link(bench: Bench) -> _LinkDown:
    link = _LinkDown(bench.dispatcher._send_report)
    bench.dispatcher._send_report = link
    bench.dispatcher.register("COMMAND_STATUS", bench.dispatcher.handlers()["COMMAND_STATUS"])
    return link


def _status(bench: Bench, cmd_id: int) -> dict:
    bench.send("COMMAND_STATUS", {"cmd_id": cmd_id})
    return bench.codec.decode_tm(unpack(bench.reports[-1])).result


@pytest.mark.req("AGT-017", "AGT-040", "LNK-002")
def test_a_deferred_command_whose_completion_the_link_refused_ends_and_the_error_goes_to_its_completer():
    """Found in audit: the link's send raising in a deferred completion left the command running for good:
    COMMAND_STATUS said running, its listeners (a sequence waiting on the step) were never told, and the retry
    cache kept it as running. It ends as it ended, its report kept for a retry, and the error is raised to the
    completer (the loop counts it as an internal error)."""
    bench = Bench()
    link = _with_link(bench)
    finals: list[tuple[int, bool]] = []
    bench.dispatcher.on_final.append(lambda cmd_id, ok, reason: finals.append((cmd_id, ok)))
    pending: list[Deferred] = []
    bench.dispatcher.register("JOB_CANCEL", Handler(lambda req: pending.append(Deferred()) or pending[-1]))
    cmd_id = bench.send("JOB_CANCEL", {"job_id": 3})
    link.down = True
    with pytest.raises(ReportNotSent, match=f"cmd_id {cmd_id} not sent.*link down"):
        pending[0].complete({"job_id": 3})
    link.down = False
    assert finals == [(cmd_id, True)]
    assert _status(bench, cmd_id)["state"] == "completed"
    bench.reports.clear()
    bench.send("JOB_CANCEL", {"job_id": 3}, cmd_id)  # the retry: its reports, the completion among them, no rerun
    assert bench.stages() == [("accepted", True), ("started", True), ("completed", True)] and len(pending) == 1
    c = bench.dispatcher.counters
    assert (c.executed, c.failed, c.duplicates) == (2, 0, 1)  # the job and COMMAND_STATUS; the retry not run


@pytest.mark.req("LNK-007")
def test_the_agent_counts_and_says_reports_its_link_refused_and_goes_on(tmp_path):
    """The loop's part: the ReportNotSent a command's handling raises is an internal error, counted and said."""
    with InProcessAgent(tmp_path / "state") as rig:
        link = _LinkDown(rig.agent.dispatcher._send_report)
        rig.agent.dispatcher._send_report = link
        link.down = True
        packet, cmd_id = rig.client.codec.encode_command("NOOP", {})
        rig.link.ground.send(packet)
        rig.pump()
        link.down = False
        said = [e.args for e in rig.events("INTERNAL_ERROR")]
        assert len(said) == 1 and said[0]["reason"].startswith(f"ReportNotSent: 3 verification report(s) of cmd_id "
                                                               f"{cmd_id} not sent")
        values = rig.hk()
        assert values["internal_errors"] == 1 and values["cmd_executed"] == 1
        assert rig.client.send("NOOP", {}, cmd_id=cmd_id, timeout_s=2.0, retries=0).completed  # the retry: told


@pytest.mark.req("AGT-017", "LNK-002")
def test_a_time_tag_whose_reports_the_link_refused_is_released_and_the_loss_said_as_an_internal_error(tmp_path):
    """Found in review: the ReportNotSent raised into the scheduler made it say a time tag that had run "not
    released" (an operator would send it again); and raised into a completion, it stopped whoever completed it
    half-way. The dispatcher says it through its port, to the executive, and raises into no one."""
    with InProcessAgent(tmp_path / "state") as rig:
        assert rig.send("SCHEDULE_AFTER", delay_s=5.0, command="PING", args=json.dumps({"token": 42})).completed
        link = _LinkDown(rig.agent.dispatcher._send_report)
        rig.agent.dispatcher._send_report = link
        link.down = True
        rig.advance(6)
        link.down = False
        assert [e.args["token"] for e in rig.events("PING_RECEIVED")] == [42]
        assert rig.events("SCHEDULE_ERROR") == []
        said = [e.args for e in rig.events("INTERNAL_ERROR")]
        assert len(said) == 1 and said[0]["where"] == "verification report", said
        values = rig.hk()
        assert values["schedule_released"] == 1 and values["schedule_release_errors"] == 0
        assert values["internal_errors"] == 1


@pytest.mark.req("AGT-016", "LNK-003")
def test_a_command_whose_reports_the_link_refused_runs_once_and_a_retry_gets_its_outcome(tmp_path):
    """Before: the acceptance report's send raised before the handler ran, the command was counted failed with no
    report, and its journal record stayed open, so a retry was told "interrupted by a reset" though none happened
    and nothing had run. Now it runs, as after a report lost on the line, and the retry gets the outcome."""
    bench = Bench()
    bench.dispatcher.journal = CommandJournal(tmp_path / "journal")
    link = _with_link(bench)
    runs: list[int] = []
    bench.dispatcher.register("RESET_COUNTERS", Handler(lambda req: runs.append(req.cmd_id)))
    link.down = True
    with pytest.raises(ReportNotSent, match="3 verification report"):
        bench.send("RESET_COUNTERS", cmd_id=77)
    link.down = False
    assert runs == [77] and bench.dispatcher.journal.get(77).finished
    bench.send("RESET_COUNTERS", cmd_id=77)
    assert bench.stages() == [("accepted", True), ("started", True), ("completed", True)] and runs == [77]
    assert bench.dispatcher.counters.executed == 1 and bench.dispatcher.counters.failed == 0


@pytest.mark.req("LNK-007")
def test_an_unknown_argument_with_a_hostile_name_is_refused_in_a_short_printable_line():
    """Found in audit: an unknown argument's name went whole into the failure report and COMMAND_REJECTED: a 4 KiB
    name pushed out what the command takes, and a newline or an escape sequence reached the ground's consoles."""
    bench = Bench()
    said: list[dict] = []
    bench.dispatcher._emit = EventPort("dispatcher", Dispatcher.EVENTS, DICTIONARY,
                                       lambda name, args: said.append(dict(args, event=name)))
    bench.dispatcher.register("NOOP", Handler(lambda req: None))
    opcode = DICTIONARY.command_by_name["NOOP"].opcode
    for cmd_id, name in ((11, "x" * 4096), (12, "evil\nCommand SHUTDOWN completed\x1b[2J")):
        data = msgpack.packb([opcode, cmd_id, {name: 1}])
        bench.dispatcher.handle(unpack(pack_tc(Apid.AGENT, cmd_id, Service.FUNCTION, Subtype.PERFORM_FUNCTION, data,
                                               ack_flags=ACK_ALL)), "peer")
        v = bench.codec.decode_tm(unpack(bench.reports[-1]))
        assert (v.stage, v.success, v.code) == (Stage.ACCEPTED, False, FailureCode.BAD_ARGUMENTS)
        for text in (v.reason, said[-1]["reason"]):
            assert text.isprintable() and "unknown argument" in text and len(text) <= 120, text
        assert v.reason.endswith("(takes no arguments)")
    assert v.reason.startswith("NOOP: unknown argument evil\\nCommand SHUTDOWN")  # escaped, still readable
    assert [e["event"] for e in said] == ["COMMAND_REJECTED"] * 2 and bench.dispatcher.counters.rejected == 2
    assert bench.send("NOOP") and bench.stages()[-1] == ("completed", True)  # the next command goes on


@pytest.mark.req("AGT-013")
def test_reset_counters_leaves_the_commands_still_running_counted_as_accepted(tmp_path):
    """Found in audit: after RESET_COUNTERS, cmd_executed read 1 (the reset, counted as it ended) and cmd_accepted
    0 (its acceptance zeroed). A command accepted and not ended at the reset stays accepted, the reset itself and a
    deferred one still at work, so that no end outnumbers the acceptances."""
    bench = Bench()
    pending: list[Deferred] = []
    bench.dispatcher.register("JOB_CANCEL", Handler(lambda req: pending.append(Deferred()) or pending[-1]))
    bench.dispatcher.register("RESET_COUNTERS", Handler(lambda req: bench.dispatcher.reset_counters()))
    bench.send("NOOP")  # no handler: rejected, and zeroed with the rest
    bench.send("JOB_CANCEL", {"job_id": 1})
    bench.send("RESET_COUNTERS")
    c = bench.dispatcher.counters
    assert (c.accepted, c.executed, c.rejected) == (2, 1, 0)
    pending[0].complete()
    assert (c.accepted, c.executed, c.failed) == (2, 2, 0)
    with InProcessAgent(tmp_path / "state") as rig:
        rig.send("NOOP")
        assert rig.send("RESET_COUNTERS").completed
        values = rig.hk()
        assert values["cmd_accepted"] == values["cmd_executed"] == 1 and values["cmd_failed"] == 0


@pytest.mark.req("LNK-007")
def test_a_telecommand_for_an_apid_the_agent_does_not_serve_is_refused_naming_those_it_takes(tmp_path):
    """Found in audit: the refusal named APID 0x010 alone, though the agent takes the files' 0x014 too."""
    with InProcessAgent(tmp_path / "state") as rig:
        rig.link.ground.send(pack_tc(Apid.COMPUTE, 1, Service.TEST, Subtype.PING, b""))
        rig.pump()
        reasons = [e.args["reason"] for e in rig.events("BAD_PACKET")]
        assert reasons == [f"telecommand for APID {Apid.COMPUTE:#05x}, this agent takes "
                           f"{Apid.AGENT:#05x} (AGENT), {Apid.FILES:#05x} (FILES)"]
        assert rig.hk()["tc_bad_packets"] == 1


@pytest.mark.req("SEC-004")
def test_a_packet_refused_at_authentication_is_not_contact_whatever_service_it_names(tmp_path):
    """Checked in audit: a packet for a service the agent lacks is contact only once authenticated (a ground that
    sealed it is there); unsealed, or sealed under a key the agent lacks, it leaves the contact age as it was."""
    rig = keyed_rig(tmp_path)
    try:
        rig.advance(30.0)
        unknown = pack_tc(Apid.AGENT, 2, 99, 9, b"\0" * 64)
        rig.link.ground.send(unknown)
        rig.link.ground.send(Sealer(1, OTHER).seal(unknown))
        rig.pump()
        assert rig.agent.link_service.tc_auth_rejected == 2
        assert rig.agent.link_service.contact_age_s() >= 30.0
    finally:
        rig.close()
