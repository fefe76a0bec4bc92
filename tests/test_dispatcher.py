"""The dispatcher alone: PUS 1 stages, execute-once retries, and commands that complete later."""

from __future__ import annotations

import pytest

from flight.agent.dispatcher import CommandFailed, Deferred, Dispatcher, Handler
from flight.agent.ports import EventPort
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import FailureCode
from flight.link.messages import Codec, Stage
from flight.link.packets import unpack


class Bench:
    def __init__(self):
        self.codec = Codec(DICTIONARY)
        self.reports: list = []
        self.events: list = []
        emit = EventPort("dispatcher", Dispatcher.EVENTS, DICTIONARY, lambda name, args: self.events.append(name))
        self.dispatcher = Dispatcher(self.codec, lambda peer, packet: self.reports.append(packet), lambda: 0.0, emit)

    def send(self, name: str, args: dict | None = None, cmd_id: int | None = None):
        packet, cmd_id = self.codec.encode_command(name, args or {}, cmd_id)
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
