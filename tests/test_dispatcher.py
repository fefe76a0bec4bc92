"""The dispatcher alone: PUS 1 stages, execute-once retries, and commands that complete later."""

from __future__ import annotations

import msgpack
import pytest

from flight.agent.dispatcher import CommandFailed, Deferred, Dispatcher, Handler
from flight.agent.ports import EventPort
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import FailureCode
from flight.link.messages import Codec, Stage
from flight.link.apid import Apid
from flight.link.packets import ACK_ACCEPTANCE, ACK_ALL, ACK_COMPLETION, ACK_START, Service, Subtype, pack_tc, unpack


class Bench:
    def __init__(self):
        self.codec = Codec(DICTIONARY)
        self.reports: list = []
        self.events: list = []
        emit = EventPort("dispatcher", Dispatcher.EVENTS, DICTIONARY, lambda name, args: self.events.append(name))
        self.dispatcher = Dispatcher(self.codec, lambda peer, packet: self.reports.append(packet), lambda: 0.0, emit)

    def send(self, name: str, args: dict | None = None, cmd_id: int | None = None, ack_flags: int = ACK_ALL):
        packet, cmd_id = self.codec.encode_command(name, args or {}, cmd_id, ack_flags=ack_flags)
        self.dispatcher.handle(unpack(packet), "peer")
        return cmd_id

    def stages(self) -> list[tuple[str, bool]]:
        out = []
        for raw in self.reports:
            v = self.codec.decode_tm(unpack(raw))
            out.append((v.stage.value, v.success))
        return out


@pytest.mark.req("AGT-040")
def test_a_deferred_command_completes_only_when_the_work_is_done():
    bench = Bench()
    pending: list[Deferred] = []

    def later(req):
        pending.append(Deferred())
        return pending[-1]

    bench.dispatcher.register("JOB_CANCEL", Handler(later))
    cmd_id = bench.send("JOB_CANCEL", {"job_id": 3})
    assert bench.stages() == [("accepted", True), ("started", True)]  # not completed yet
    bench.send("JOB_CANCEL", {"job_id": 3}, cmd_id)  # a retry meanwhile: the reports so far, not a second run
    assert len(pending) == 1 and bench.stages()[2:] == [("accepted", True), ("started", True)]
    pending[0].complete({"job_id": 3})
    assert bench.stages()[-1] == ("completed", True)
    assert bench.dispatcher.counters.executed == 1 and bench.dispatcher.counters.duplicates == 1
    with pytest.raises(RuntimeError, match="completes once"):
        pending[0].fail("again")


@pytest.mark.req("AGT-040")
def test_a_deferred_failure_carries_its_code_and_reason():
    bench = Bench()
    deferred = Deferred()
    bench.dispatcher.register("JOB_CANCEL", Handler(lambda req: deferred))
    bench.send("JOB_CANCEL", {"job_id": 9})
    deferred.fail("no job 9 on this board", FailureCode.BAD_ARGUMENTS)
    v = bench.codec.decode_tm(unpack(bench.reports[-1]))
    assert (v.stage, v.success, v.code, v.reason) == (Stage.COMPLETED, False, FailureCode.BAD_ARGUMENTS,
                                                       "no job 9 on this board")
    assert bench.events == ["COMMAND_DISPATCHED", "COMMAND_FAILED"] and bench.dispatcher.counters.failed == 1


def test_guards_and_handler_errors_are_answered():
    bench = Bench()

    def guard(req):
        raise CommandFailed("not now", FailureCode.NOT_ALLOWED_IN_MODE)

    bench.dispatcher.register("NOOP", Handler(lambda req: None, guard))
    bench.dispatcher.register("PING", Handler(lambda req: 1 / 0))
    bench.send("NOOP")
    bench.send("PING", {"token": 1})
    assert bench.stages() == [("accepted", True), ("started", False), ("accepted", True), ("started", True),
                              ("completed", False)]
    assert "ZeroDivisionError" in bench.codec.decode_tm(unpack(bench.reports[-1])).reason


@pytest.mark.req("LNK-002")
def test_success_reports_go_out_as_the_acknowledgement_flags_ask_and_failures_always():
    bench = Bench()
    bench.dispatcher.register("NOOP", Handler(lambda req: None))

    def refuse(req):
        raise CommandFailed("not now", FailureCode.NOT_ALLOWED_IN_MODE)

    bench.dispatcher.register("PING", Handler(lambda req: {}, refuse))
    bench.send("NOOP", ack_flags=ACK_ACCEPTANCE | ACK_COMPLETION)
    assert bench.stages() == [("accepted", True), ("completed", True)]
    bench.send("NOOP", ack_flags=ACK_START)
    assert bench.stages()[2:] == [("started", True)]
    bench.send("PING", {"token": 1}, ack_flags=ACK_COMPLETION)  # refused at start: said, though not asked
    assert bench.stages()[3:] == [("started", False)]
    opcode = DICTIONARY.command_by_name["NOOP"].opcode
    bad = pack_tc(Apid.AGENT, 1, Service.FUNCTION, Subtype.PERFORM_FUNCTION,
                  msgpack.packb([opcode, 77, {"bogus": 1}]), ack_flags=0)  # asks for nothing, has a bad argument
    bench.dispatcher.handle(unpack(bad), "peer")
    assert bench.stages()[4:] == [("accepted", False)]


@pytest.mark.req("LNK-002")
def test_a_command_that_asked_for_no_report_runs_once_however_often_it_is_sent():
    bench = Bench()
    runs, pending = [], []

    def later(req):
        runs.append(req.cmd_id)
        pending.append(Deferred())
        return pending[-1]

    bench.dispatcher.register("JOB_CANCEL", Handler(later))
    cmd_id = bench.send("JOB_CANCEL", {"job_id": 3}, ack_flags=0)
    bench.send("JOB_CANCEL", {"job_id": 3}, cmd_id, ack_flags=0)  # a resend: answered (with nothing), not run
    assert runs == [cmd_id] and bench.reports == [] and bench.dispatcher.counters.duplicates == 1
    cmd_id = bench.send("JOB_CANCEL", {"job_id": 4}, ack_flags=ACK_COMPLETION)
    bench.send("JOB_CANCEL", {"job_id": 4}, cmd_id, ack_flags=ACK_COMPLETION)
    assert len(runs) == 2 and bench.reports == []
    pending[1].complete({"job_id": 4})
    assert bench.stages() == [("completed", True)]
    bench.send("JOB_CANCEL", {"job_id": 4}, cmd_id, ack_flags=ACK_COMPLETION)  # after it ended: its report again
    assert len(runs) == 2 and bench.stages() == [("completed", True)] * 2


@pytest.mark.req("LNK-002")
def test_a_retry_is_answered_with_the_reports_its_own_flags_ask_for_from_the_first_run():
    """The retry cache keeps every report of the run, sent or not: a resend that asks for
    other stages gets those (failures always), the very reports of the one run."""
    bench = Bench()
    runs = []
    bench.dispatcher.register("PING", Handler(lambda req: runs.append(req.cmd_id) or {"token": req.args["token"]}))
    cmd_id = bench.send("PING", {"token": 5}, ack_flags=ACK_COMPLETION)
    assert bench.stages() == [("completed", True)]
    first = bench.reports[0]
    bench.send("PING", {"token": 5}, cmd_id, ack_flags=ACK_ALL)  # the operator resends, asking for every stage
    assert bench.stages()[1:] == [("accepted", True), ("started", True), ("completed", True)]
    assert bench.reports[3] == first  # the completion as it was sent, not made anew
    assert bench.codec.decode_tm(unpack(bench.reports[3])).result == {"token": 5}
    bench.send("PING", {"token": 5}, cmd_id, ack_flags=ACK_START)  # asks for less: gets less
    assert bench.stages()[4:] == [("started", True)]
    bench.send("PING", {"token": 5}, cmd_id, ack_flags=0)
    assert len(bench.reports) == 5 and runs == [cmd_id] and bench.dispatcher.counters.duplicates == 3

    def not_now(req):
        raise CommandFailed("not now", FailureCode.NOT_ALLOWED_IN_MODE)

    bench.dispatcher.register("SET_PARAM", Handler(lambda req: None, not_now))
    failing = bench.send("SET_PARAM", {"name": "hk_period_s", "value": "1"}, ack_flags=0)  # refused at start
    told = len(bench.reports)
    assert bench.stages()[-1] == ("started", False)
    bench.send("SET_PARAM", {"name": "hk_period_s", "value": "1"}, failing, ack_flags=0)  # the failure, always
    assert bench.stages()[told:] == [("started", False)]
    bench.send("SET_PARAM", {"name": "hk_period_s", "value": "1"}, failing, ack_flags=ACK_ALL)
    assert bench.stages()[told + 1:] == [("accepted", True), ("started", False)]


def test_a_retry_asking_for_a_completion_whose_result_no_report_can_carry_gets_the_success_without_it():
    bench = Bench()
    bench.dispatcher.register("NOOP", Handler(lambda req: {"blob": object()}))  # no codec can pack it
    cmd_id = bench.send("NOOP", ack_flags=ACK_ACCEPTANCE)  # its completion was not asked for, so never made
    assert bench.stages() == [("accepted", True)] and bench.dispatcher.counters.executed == 1
    bench.send("NOOP", cmd_id=cmd_id, ack_flags=ACK_COMPLETION)
    v = bench.codec.decode_tm(unpack(bench.reports[-1]))
    assert (v.stage, v.success, v.result) == (Stage.COMPLETED, True, {"note": "its result does not fit a report"})


@pytest.mark.req("LNK-002", "AGT-016")
def test_a_command_that_asked_for_no_report_is_not_run_again_after_a_restart(tmp_path):
    from flight.agent.journal import CommandJournal

    runs = []

    def boot() -> Bench:  # a new dispatcher on the same journal, its retry cache empty
        bench = Bench()
        bench.dispatcher.journal = CommandJournal(tmp_path / "journal")
        bench.dispatcher.register("RESET_COUNTERS", Handler(lambda req: runs.append(req.cmd_id)))
        return bench

    first = boot()
    cmd_id = first.send("RESET_COUNTERS", ack_flags=0)
    first.dispatcher.end_turn()
    first.dispatcher.journal.close()
    again = boot()
    again.send("RESET_COUNTERS", cmd_id=cmd_id, ack_flags=0)
    again.dispatcher.journal.close()
    assert runs == [cmd_id] and first.reports == again.reports == []
    third = boot()
    third.send("RESET_COUNTERS", cmd_id=cmd_id, ack_flags=ACK_COMPLETION)  # asked now: told, still not run
    third.dispatcher.journal.close()
    assert runs == [cmd_id] and third.stages() == [("completed", True)]


@pytest.mark.req("LNK-002")
def test_a_completion_report_that_cannot_be_made_still_ends_the_command():
    bench = Bench()
    finals = []
    bench.dispatcher.on_final.append(lambda cmd_id, ok, reason: finals.append(ok))
    bench.dispatcher.register("NOOP", Handler(lambda req: {"kinds": {1, 2}}))  # a set: msgpack cannot say it
    bench.send("NOOP", ack_flags=ACK_ACCEPTANCE | ACK_COMPLETION)  # it ran: the success, its result a note
    assert bench.stages() == [("accepted", True), ("completed", True)] and finals == [True]
    last = bench.codec.decode_tm(unpack(bench.reports[-1]))
    assert last.result == {"note": "its result does not fit a report: TypeError: can not serialize 'set' object"}


@pytest.mark.req("AGT-017")
def test_a_read_only_command_the_retry_cache_still_holds_is_never_answered_as_running_once_ended():
    """A read-only command is answered by COMMAND_STATUS from this boot's outcomes only (it is not
    journaled); one the ground keeps retrying stays in the retry cache, and its outcome with it,
    however many commands pass meanwhile."""
    from flight.agent.dispatcher import FINALS_KEPT

    bench = Bench()
    bench.dispatcher.register("NOOP", Handler(lambda req: {}))
    bench.dispatcher.register("PING", Handler(lambda req: {"token": req.args["token"]}))
    for name, handler in bench.dispatcher.handlers().items():
        bench.dispatcher.register(name, handler)
    kept = bench.send("PING", {"token": 1}, 0xBEEF)
    for i in range(FINALS_KEPT + 100):
        bench.send("NOOP", {}, 10_000 + i)
        if i % 100 == 0:
            bench.send("PING", {"token": 1}, kept)  # the same command again: answered from the cache
    assert bench.dispatcher.counters.duplicates >= FINALS_KEPT // 100
    bench.send("COMMAND_STATUS", {"cmd_id": kept})
    answer = bench.codec.decode_tm(unpack(bench.reports[-1])).result
    assert answer["state"] == "completed", answer
    bench.send("COMMAND_STATUS", {"cmd_id": 10_000})  # long gone: said so, with the read-only rule
    gone = bench.codec.decode_tm(unpack(bench.reports[-1])).result
    assert gone["state"] == "not_received" and f"last {FINALS_KEPT}" in gone["reason"]
    assert str(FINALS_KEPT) in DICTIONARY.command_by_name["COMMAND_STATUS"].description


@pytest.mark.req("SEC-006")
def test_command_status_and_the_journal_say_a_failure_as_its_report_did_with_paths_cut(tmp_path):
    from flight.agent.journal import CommandJournal

    bench = Bench()
    bench.dispatcher.journal = CommandJournal(tmp_path / "commands.journal")

    def fail(req):
        raise CommandFailed("could not read /var/lib/sunlit/state/keys/overlay.json", FailureCode.EXECUTION_ERROR)

    bench.dispatcher.register("RESET_COUNTERS", Handler(fail))  # journaled: its reason kept on disk too
    for name, handler in bench.dispatcher.handlers().items():
        bench.dispatcher.register(name, handler)
    cmd_id = bench.send("RESET_COUNTERS")
    assert bench.codec.decode_tm(unpack(bench.reports[-1])).reason == "could not read overlay.json"
    bench.send("COMMAND_STATUS", {"cmd_id": cmd_id})
    status = bench.codec.decode_tm(unpack(bench.reports[-1])).result
    assert "/var/lib" not in str(status) and "overlay.json" in str(status)
    assert "/var/lib" not in (tmp_path / "commands.journal").read_bytes().decode("latin-1")


@pytest.mark.req("AGT-040", "AGT-017")
def test_a_command_still_running_stays_running_however_many_commands_come_after_it(tmp_path):
    """Found in audit: 512 commands after a deferred STORE_DUMP began (PINGs, the ground's own COMMAND_STATUS
    polls), it dropped out of the retry cache, and the journal's "started, not finished" was read as cut off by a
    reset: COMMAND_STATUS said interrupted, a retry was failed, and then its real completion came."""
    from flight.agent.dispatcher import RETRY_CACHE_COMMANDS
    from flight.agent.journal import CommandJournal

    bench = Bench()
    bench.dispatcher.journal = CommandJournal(tmp_path / "commands.journal")
    pending: list[Deferred] = []
    bench.dispatcher.register("STORE_DUMP", Handler(lambda req: pending.append(Deferred()) or pending[-1]))
    for name, handler in bench.dispatcher.handlers().items():
        bench.dispatcher.register(name, handler)
    dump = bench.send("STORE_DUMP", {"from_unix_s": 0.0, "to_unix_s": 1.0})

    def status() -> dict:
        bench.send("COMMAND_STATUS", {"cmd_id": dump})
        return bench.codec.decode_tm(unpack(bench.reports[-1])).result

    for _ in range(RETRY_CACHE_COMMANDS + 10):
        assert status()["state"] == "running"
    bench.reports.clear()
    bench.send("STORE_DUMP", {"from_unix_s": 0.0, "to_unix_s": 1.0}, dump)  # a retry of the same telecommand
    assert bench.stages() == [("accepted", True), ("started", True)] and len(pending) == 1
    pending[0].complete({"packets": 5})
    assert bench.stages()[-1] == ("completed", True) and status()["state"] == "completed"
    bench.dispatcher.journal.close()
