"""Findings of an audit of on-board file transfers: two real cfdp-py entities (flight/files) on a simulated clock,
and the agent's file manager, as tests/test_files.py runs them."""

from __future__ import annotations

import os
import time
from collections import namedtuple

import pytest
from spacepackets.cfdp import ConditionCode, DeliveryCode, FileStatus, TransmissionMode
from spacepackets.cfdp.conf import PduConfig
from spacepackets.cfdp.defs import Direction
from spacepackets.cfdp.pdu import AckPdu, DirectiveType, FinishedPdu, NakPdu, PduFactory, TransactionStatus
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.util import ByteFieldU16, ByteFieldU32

import flight.agent.files as files_module
from flight.files.entity import EntityConfig, FileEntity
from tests.test_files import GroundFilesRig, Pair, _manager


def _towards_sender(seq: int, mode=TransmissionMode.ACKNOWLEDGED) -> PduConfig:
    """A PDU's header for the board's (entity 2) transaction ``seq``, coming back from the ground."""
    conf = PduConfig(ByteFieldU16(2), ByteFieldU16(1), ByteFieldU32(seq), mode)
    conf.direction = Direction.TOWARDS_SENDER
    return conf


@pytest.mark.req("FIL-009")
def test_uploads_at_once_are_admitted_against_what_those_coming_in_still_have_to_write(tmp_path, monkeypatch):
    """Found in audit: each upload was admitted against the free space alone, so two at once that each fitted above
    disk_reserve_mb took the disk past it together (shown on a real 8 MB tmpfs). The disk here is a small one: its
    free space is its size less the bytes of the files really written in the file area, partial files included."""
    from flight.clock import SimClock
    from flight.link.memory_link import MemoryLink

    disk_bytes, reserve_mb = 1_300_000, 1.0  # 0.3 MB above the reserve
    usage = namedtuple("usage", "total used free")

    def small_disk(path):
        used = sum(p.stat().st_size for p in (tmp_path / "area").rglob("*") if p.is_file())
        return usage(disk_bytes, used, disk_bytes - used)

    monkeypatch.setattr(files_module.shutil, "disk_usage", small_disk)
    (tmp_path / "state").mkdir()
    clock = SimClock(1000.0)
    fm = _manager(tmp_path, MemoryLink(queue_packets=100_000).flight, clock, {"disk_reserve_mb": reserve_mb})
    board = fm.entity
    grounds = []
    for n, first_seq in (("a", 1), ("b", 5000)):  # a ground sending two files at once, each its own transaction
        g = FileEntity(1, 2, tmp_path / f"g{n}", clock.monotonic_s, read_tops=frozenset({"uplink"}),
                       write_tops=frozenset({"downlink"}))
        g._seq.restart_at(first_seq)
        (g.root / "uplink").mkdir(parents=True)
        (g.root / f"uplink/{n}.bin").write_bytes(os.urandom(200_000))  # 0.2 MB: each fits alone
        g.put(f"uplink/{n}.bin", f"data/{n}.bin")
        grounds.append(g)
    for _ in range(400):
        clock.set(clock.monotonic_s() + 0.05)
        for g in grounds:
            for pdu in g.pull(8_000):
                board.receive(pdu)
        for pdu in board.pull(50_000):
            seq = PduFactory.from_raw(pdu).transaction_seq_num.value
            grounds[seq >= 5000].receive(pdu)
        if not any(e.pending() for e in (board, *grounds)):
            break
    ends = {t.dest: t for t in board.list()}
    assert ends["data/a.bin"].state == "done"
    b = ends["data/b.bin"]
    assert b.state == "failed" and "still owed them" in b.reason and "disk_reserve_mb 1" in b.reason, b.reason
    assert not (tmp_path / "area/data/b.bin").exists()
    assert small_disk(None).free / 1e6 >= reserve_mb  # the reserve kept
    assert board.promised_in_bytes() == 0  # nothing coming in: nothing owed


@pytest.mark.req("FIL-006")
def test_stray_pdus_of_transactions_no_longer_going_out_are_counted_and_a_finished_is_still_answered(tmp_path):
    """Found in audit: an ACK, a NAK or a class-1 Finished of a transaction of the board's that is over (closed,
    restarted, before a reset) was dropped uncounted; the receiver counts its strays. A class-2 Finished is still
    acknowledged, so the receiver stops asking, as before. Nothing is said per PDU: a counter and the last reason."""
    pair = Pair(tmp_path)
    finished = FinishedParams(ConditionCode.NO_ERROR, DeliveryCode.DATA_COMPLETE, FileStatus.FILE_RETAINED)
    stray = [AckPdu(_towards_sender(7), DirectiveType.EOF_PDU, ConditionCode.NO_ERROR, TransactionStatus.TERMINATED),
             NakPdu(_towards_sender(8), start_of_scope=0, end_of_scope=100, segment_requests=[(0, 100)]),
             FinishedPdu(_towards_sender(9, TransmissionMode.UNACKNOWLEDGED), finished)]
    for pdu in stray:
        pair.board.receive(bytes(pdu.pack()))
    assert pair.board.counts()["bad_pdus"] == 3
    assert pair.board.last_error == "transaction 2-9: FINISHED_PDU of no transfer going out here"
    pair.board.receive(bytes(FinishedPdu(_towards_sender(10), finished).pack()))
    assert pair.board.counts()["bad_pdus"] == 3
    [ack] = [PduFactory.from_raw(p) for p in pair.board.pull(10_000)]
    assert ack.directive_type == DirectiveType.ACK_PDU and ack.transaction_seq_num.value == 10
    assert pair.board.list() == [] and not [entry for entry in pair.log if entry[0] == "b"]


@pytest.mark.req("SEC-006", "FIL-007")
@pytest.mark.parametrize("command, argument, value", [
    ("FILE_DOWNLINK", "name", "/etc/passwd"),
    ("FILE_DELETE", "name", "/etc/passwd"),
    ("FILE_LIST", "directory", "/etc"),
])
def test_an_absolute_path_is_refused_saying_so_without_the_path(files_rig, command, argument, value):
    """Found in audit: every text the board sends cuts an absolute path to its last part, so FILE_DOWNLINK of
    /etc/passwd was refused with "name: 'passwd' must be a relative name", which is not what was sent nor why."""
    res = files_rig.rig.send(command, **{argument: value})
    assert not res.completed and "BAD_ARGUMENTS" in res.outcome
    assert f"{argument}: an absolute path is refused" in res.outcome, res.outcome
    assert "passwd" not in res.outcome and "etc" not in res.outcome


@pytest.fixture
def files_rig(tmp_path):
    r = GroundFilesRig(tmp_path)
    yield r
    r.rig.close()


@pytest.mark.req("FIL-005")
def test_the_fault_of_a_file_received_whose_finished_is_never_acknowledged_is_not_kept(tmp_path):
    """Found in audit: a file received whole whose Finished the sender never acknowledged ended at the positive
    acknowledgement limit and was given up at inactivity_s, and its fault was kept in the entity for good, one more
    for every such file."""
    pair = Pair(tmp_path, config=EntityConfig(ack_timer_s=1.0, ack_limit=3, inactivity_s=10.0))
    clean = pair.carry

    def carry(pdu: bytes, to: FileEntity) -> None:
        p = PduFactory.from_raw(pdu)
        if (to is pair.board and p.pdu_type.name == "FILE_DIRECTIVE" and p.directive_type == DirectiveType.ACK_PDU
                and p.directive_code_of_acked_pdu == DirectiveType.FINISHED_PDU):
            return  # every ACK(Finished) lost
        clean(pdu, to)

    pair.carry = carry
    for i in range(2):
        (tmp_path / f"g/uplink/f{i}").write_bytes(os.urandom(3000))
        pair.ground.put(f"uplink/f{i}", f"staging/f{i}")
    pair.run(60, dt=0.2)
    assert [t.state for t in pair.board.list()] == ["done", "done"]
    assert pair.board.counts()["active_in"] == 0
    assert pair.board._faults == {}


@pytest.mark.req("FIL-005")
@pytest.mark.parametrize("lost", ["damaged", "missing"])
def test_a_lost_transfer_state_does_not_take_transaction_numbers_the_peer_has_just_seen_end(tmp_path, lost):
    """Found in audit: the ground's transfer state damaged, its numbers began again at 1; the board, which had seen
    transactions 1-1..1-4 end, dropped the next upload's PDUs as of those, and it failed after its restarts. Found
    in review: so did a state file missing (deleted, a new data folder)."""
    pair = Pair(tmp_path, config=EntityConfig(inactivity_s=10.0))
    for i in range(4):
        (tmp_path / f"g/uplink/a{i}").write_bytes(b"first")
        pair.ground.put(f"uplink/a{i}", f"staging/a{i}")
        pair.run(60)
    if lost == "damaged":
        (tmp_path / "g.json").write_bytes(b"{damaged")
    else:
        (tmp_path / "g.json").unlink()
    pair.ground = pair.make_ground(utc_s=lambda: time.time() + 3600.0)  # it starts again, an hour on
    assert bool(pair.ground.load_error) == (lost == "damaged")
    (tmp_path / "g/uplink/b").write_bytes(b"second")
    t = pair.ground.put("uplink/b", "staging/b")
    pair.run(600)
    assert pair.ground.find(t.id).state == "done", pair.ground.find(t.id).reason
    assert (tmp_path / "b/staging/b").read_bytes() == b"second"
    assert int(pair.ground.find(t.id).transaction.split("-")[1]) > 4


@pytest.mark.req("FIL-002", "FIL-006")
def test_a_nak_past_the_end_of_the_file_is_counted_and_queues_nothing(tmp_path):
    """Found in audit: cfdp-py queues a file-data PDU for every segment a NAK asks for, past the file's end too: one
    NAK of (0, 50 MB) for a 20 kB file queued 48,829 PDUs, one of (0, 4 GiB) would queue four million. Refused,
    counted, naming the field; the file still arrives whole, and a NAK within the file is still answered."""
    pair = Pair(tmp_path)
    data = os.urandom(20_000)
    (tmp_path / "b/products/p.bin").write_bytes(data)
    t = pair.board.put("products/p.bin", "downlink/p.bin")
    pair.board.pull(3000)  # it starts: the metadata and the first segments out (lost)
    seq = int(t.transaction.split("-")[1])
    pair.board.receive(bytes(NakPdu(_towards_sender(seq), start_of_scope=0, end_of_scope=2**32 - 1,
                                    segment_requests=[(0, 2**32 - 1)]).pack()))
    assert pair.board.counts()["bad_pdus"] == 1
    assert "NAK segment_requests (0, 4294967295) go past the file's 20000 bytes" in pair.board.last_error
    assert len(pair.board.pull(10**9)) < 40  # what it had queued of 20 segments, not four million
    pair.run(300)
    assert pair.board.find(t.id).state == "done"
    assert (tmp_path / "g/downlink/p.bin").read_bytes() == data


@pytest.mark.req("FIL-009")
def test_a_file_in_place_whose_finished_waits_for_its_ack_is_not_owed_again(tmp_path):
    """Found in review: a file received whole and put in place stays among those coming in until its Finished is
    acknowledged (a minute and more, across a loss of signal); its partial gone, its whole declared size was counted
    again as still owed, and a next upload refused for room the disk had."""
    pair = Pair(tmp_path)

    def carry(pdu: bytes, to: FileEntity) -> None:
        p = PduFactory.from_raw(pdu)
        if (to is pair.board and p.pdu_type.name == "FILE_DIRECTIVE" and p.directive_type == DirectiveType.ACK_PDU
                and p.directive_code_of_acked_pdu == DirectiveType.FINISHED_PDU):
            return  # every ACK(Finished) lost on the way up
        to.receive(pdu)

    pair.carry = carry
    (tmp_path / "g/uplink/a").write_bytes(os.urandom(50_000))
    pair.ground.put("uplink/a", "staging/a")
    pair.run(20)
    assert (tmp_path / "b/staging/a").stat().st_size == 50_000 and pair.board.counts()["active_in"] == 1
    assert pair.board.promised_in_bytes() == 0


@pytest.mark.req("FIL-005")
@pytest.mark.parametrize("lost", ["damaged", "missing"])
def test_a_lost_transfer_state_a_second_after_files_went_fast_takes_no_number_the_peer_has_seen_end(tmp_path, lost):
    """Found in audit: with its state lost, the ground drew its numbers from the UTC second; five files sent within
    that second used five numbers ahead of the clock, and a start one second later took again numbers the board had
    just seen end: it answered them as settled, and the upload failed after its three restarts, counted nowhere."""
    start_s = 1_800_000_000.0
    pair = Pair(tmp_path, config=EntityConfig(inactivity_s=10.0))
    (tmp_path / "g.json").unlink(missing_ok=True)
    pair.ground = pair.make_ground(utc_s=lambda: start_s)  # no saved state: numbers from UTC
    for i in range(5):
        (tmp_path / f"g/uplink/a{i}").write_bytes(b"first")
        pair.ground.put(f"uplink/a{i}", f"staging/a{i}")
    pair.run(10)
    assert [t.state for t in pair.ground.list()] == ["done"] * 5
    if lost == "damaged":
        (tmp_path / "g.json").write_bytes(b"{damaged")
    else:
        (tmp_path / "g.json").unlink()
    pair.ground = pair.make_ground(utc_s=lambda: start_s + 1.0)  # it starts again, one second on
    (tmp_path / "g/uplink/b").write_bytes(b"second")
    t = pair.ground.put("uplink/b", "staging/b")
    pair.run(120)
    ended = pair.ground.find(t.id)
    assert (ended.state, ended.restarts) == ("done", 0), (ended.state, ended.restarts, ended.reason)
    assert (tmp_path / "b/staging/b").read_bytes() == b"second"
