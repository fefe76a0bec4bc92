"""COMMAND_STATUS: the ground asks what became of a command without running anything (AGT-017)."""

from __future__ import annotations

import pytest

from flight.agent.journal import CommandJournal
from ground.client import CommandOutcomeUnknown
from flight.link.definitions import DICTIONARY
from tests.inproc import InProcessAgent


@pytest.mark.req("AGT-017")
def test_the_agent_says_what_became_of_a_command_and_runs_nothing(tmp_path):
    rig = InProcessAgent(tmp_path)
    try:
        assert rig.client.send("PING", {"token": 3}, cmd_id=1001, retries=0).completed
        assert rig.client.send("SET_MODE", {"mode": "COMPUTE"}, cmd_id=1002, retries=0).failed
        answers = {c: rig.send("COMMAND_STATUS", cmd_id=c).result for c in (1001, 1002, 1003)}
        assert answers[1001]["state"] == "completed"
        assert answers[1002]["state"] == "failed" and answers[1002]["reason"]
        assert answers[1003]["state"] == "not_received"
        assert [e.args["token"] for e in rig.events("PING_RECEIVED")] == [3]  # asking ran nothing
    finally:
        rig.close()


@pytest.mark.req("AGT-017")
def test_after_a_restart_the_journal_answers_and_a_cut_off_command_is_interrupted(tmp_path):
    rig = InProcessAgent(tmp_path)
    try:
        assert rig.client.send("SET_PARAM", {"name": "hk_period_s", "value": "1"}, cmd_id=2001, retries=0).completed
        assert rig.client.send("NOOP", {}, cmd_id=2003, retries=0).completed  # read-only: not journaled
    finally:
        rig.close()
    opcode = DICTIONARY.command_by_name["SET_PARAM"].opcode
    CommandJournal(tmp_path / "commands.journal").started(2002, b"\0" * 16, opcode)  # a reset in mid-command
    again = InProcessAgent(tmp_path)
    try:
        assert again.send("COMMAND_STATUS", cmd_id=2001).result["state"] == "completed"
        cut = again.send("COMMAND_STATUS", cmd_id=2002).result
        assert cut["state"] == "interrupted" and "reset" in cut["reason"]
        read_only = again.send("COMMAND_STATUS", cmd_id=2003).result
        assert read_only["state"] == "not_received" and "read-only" in read_only["reason"]
    finally:
        again.close()


@pytest.mark.req("AGT-017")
def test_a_reused_cmd_id_is_refused_to_its_sender_alone_and_the_first_command_keeps_its_outcome(tmp_path):
    """Found in audit: the refusal of a second command on a known cmd_id was taken for the first one's final
    report (COMMAND_STATUS said failed; a sequence waiting on it failed; a retry of the first was refused)."""
    rig = InProcessAgent(tmp_path)
    try:
        finals = []
        rig.agent.dispatcher.on_final.append(lambda cmd_id, ok, reason: cmd_id < 4000 and finals.append((cmd_id, ok)))
        assert rig.client.send("SET_PARAM", {"name": "hk_period_s", "value": "2"}, cmd_id=3001, retries=0).completed
        assert rig.client.send("NOOP", {}, cmd_id=3002, retries=0).completed
        for cmd_id in (3001, 3002):  # journaled, and read-only (the retry cache's alone)
            clash = rig.client.send("PING", {"token": 9}, cmd_id=cmd_id, retries=0)
            assert clash.failed and "already used" in clash.failure.reason
            assert rig.send("COMMAND_STATUS", cmd_id=cmd_id).result["state"] == "completed"
        assert finals == [(3001, True), (3002, True)]
        # The first command sent again is its retry: answered from the cache (its reports name the first TC, which
        # the client's own retries resend), not refused as a clash, and not run again.
        counters = rig.agent.dispatcher.counters
        assert (counters.rejected, counters.duplicates) == (2, 0)
        executed = counters.executed
        with pytest.raises(CommandOutcomeUnknown):
            rig.client.send("SET_PARAM", {"name": "hk_period_s", "value": "2"}, cmd_id=3001, retries=0, timeout_s=1.0)
        assert (counters.rejected, counters.duplicates, counters.executed) == (2, 1, executed)
    finally:
        rig.close()
    # After a restart the journal holds the first: a clash is refused, the first's retry answered from it.
    again = InProcessAgent(tmp_path)
    try:
        assert again.client.send("NOOP", {}, cmd_id=3001, retries=0).failed
        assert again.client.send("SET_PARAM", {"name": "hk_period_s", "value": "2"}, cmd_id=3001, retries=0).completed
        assert again.send("COMMAND_STATUS", cmd_id=3001).result["state"] == "completed"
    finally:
        again.close()


@pytest.mark.req("GND-042")
def test_a_command_the_link_did_not_take_is_never_said_sent():
    """Found in audit: ``send(wait="sent")`` returned its result when the link's full queue refused the packet, its
    outcome "sent": `sunlit-ground send --wait sent` said so and exited 0, and a procedure's step logged it sent. It
    is a timeout now (it never left the ground: exit 4), and a packet the link takes is still sent."""
    from flight.link.memory_link import MemoryLink
    from ground.client import CommandTimeout, GroundClient

    pair = MemoryLink(queue_packets=1)
    assert pair.ground.send(b"\0")  # the queue up to the agent is full: the next packet is refused
    client = GroundClient(pair.ground)
    with pytest.raises(CommandTimeout, match="NOOP: timeout: the link took none of 1 attempt") as caught:
        client.send("NOOP", {}, wait="sent", retries=0)
    assert type(caught.value) is CommandTimeout and caught.value.result.handed == 0
    assert caught.value.result.outcome == "timeout" and client.unsettled() == []
    pair.to_flight.items.clear()  # room again: taken, and sent
    assert client.send("NOOP", {}, wait="sent", retries=0).handed == 1


@pytest.mark.req("GND-042")
def test_an_unknown_outcome_names_the_cmd_id_to_ask_about():
    """Found in audit: an unknown outcome on a direct link said "COMMAND_STATUS asks the agent without running
    anything", and COMMAND_STATUS needs the cmd_id, which nothing printed (`send`, the console): the way to ask
    was closed to the operator. The message names it."""
    from flight.link.memory_link import MemoryLink
    from ground.client import GroundClient

    client = GroundClient(MemoryLink().ground)  # taken by the link, and no agent behind it answers
    with pytest.raises(CommandOutcomeUnknown) as caught:
        client.send("NOOP", {}, timeout_s=0.05, retries=0)
    cmd_id = caught.value.result.cmd_id
    assert f"COMMAND_STATUS cmd_id={cmd_id} asks the agent" in str(caught.value), caught.value
    assert [r.cmd_id for r in client.unsettled()] == [cmd_id]
