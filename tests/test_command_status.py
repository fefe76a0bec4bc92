"""COMMAND_STATUS: the ground asks what became of a command without running anything (AGT-017)."""

from __future__ import annotations

import pytest

from flight.agent.journal import CommandJournal
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
