"""CFDP file transfer: two real cfdp-py entities (flight/files) exchanging PDUs through a seeded
lossy channel on a simulated clock, and the agent's file manager in process."""

from __future__ import annotations

import hashlib
import os
import time
import random
from pathlib import Path
from typing import Callable

import pytest

from flight.files.entity import EntityConfig, FileEntity, FileError
from flight.files.filestore import NameRefused, check_name, resolve
from flight.link.dictionary import FailureCode
from flight.link.messages import Codec
from tests.inproc import InProcessAgent


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Pair:
    """Ground (entity 1, tops uplink/downlink) and board (entity 2, tops staging/products) with a
    channel that loses and corrupts each way; corrupted PDUs are dropped as the packet CRC would."""

    def __init__(self, tmp: Path, loss: float = 0.0, seed: int = 1, config: EntityConfig | None = None):
        self.tmp = tmp
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.loss = loss
        self.config = config
        self.in_contact = True
        self.log: list[tuple[str, str, str | None]] = []
        (tmp / "g" / "uplink").mkdir(parents=True, exist_ok=True)
        (tmp / "b" / "products").mkdir(parents=True, exist_ok=True)
        self.ground = self.make_ground()
        self.board = self.make_board()

    def make_ground(self, utc_s: Callable[[], float] = time.time) -> FileEntity:
        return FileEntity(1, 2, self.tmp / "g", self.clock, utc_s=utc_s, read_tops=frozenset({"uplink"}),
                          write_tops=frozenset({"downlink"}), state_path=self.tmp / "g.json", config=self.config,
                          on_change=lambda w, t: self.log.append(("g", w, t and t.id)))

    def make_board(self) -> FileEntity:
        return FileEntity(2, 1, self.tmp / "b", self.clock, read_tops=frozenset({"products"}),
                          write_tops=frozenset({"staging"}), state_path=self.tmp / "b.json", config=self.config,
                          on_change=lambda w, t: self.log.append(("b", w, t and t.id)))

    def carry(self, pdu: bytes, to: FileEntity) -> None:
        if not self.in_contact or self.rng.random() < self.loss:
            return
        to.receive(pdu)

    def run(self, seconds: float, dt: float = 0.05, budget: int = 4000, stop_when_idle: bool = True) -> None:
        for _ in range(int(seconds / dt)):
            self.clock.t += dt
            self.ground.set_contact(self.in_contact)
            self.board.set_contact(self.in_contact)
            for pdu in self.ground.pull(budget):
                self.carry(pdu, self.board)
            for pdu in self.board.pull(budget):
                self.carry(pdu, self.ground)
            if stop_when_idle and not self.ground.pending() and not self.board.pending():
                return


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.req("AGT-013", "AGT-012")
def test_damaged_file_and_schedule_state_is_said_counted_and_moved_aside_and_leaves_nothing_behind(tmp_path):
    """Found in an audit: a damaged files_delivered.json was neither moved aside (the next save overwrote it) nor
    counted; files.json and schedule.json.ids damage went uncounted (the ids unsaid too); a damaged files.json
    left the partial uplinks of before on disk; and the packet store's interrupted writes were never removed."""
    from tests.inproc import InProcessAgent

    state = tmp_path / "state"
    with InProcessAgent(state) as rig:
        rig.advance(2.0)
        assert rig.send("SCHEDULE_AFTER", delay_s=600.0, command="NOOP").completed
        rig.agent.files._remember("products/x.npz")  # noqa: SLF001 - as a confirmed downlink does
    for name in ("files_delivered.json", "schedule.json.ids"):
        data = bytearray((state / name).read_bytes())
        data[len(data) // 2] ^= 0x20
        (state / name).write_bytes(bytes(data))
    (state / "files.json").write_text("not json")
    partial = state / "compute" / ".partial" / "0002-7.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half an uplink")
    stray = state / "store" / ".acks.log.abcd1234.tmp"
    stray.write_bytes(b"torn")
    (state / "sequence_run.json").write_text("damaged")  # a run's saved state: said, and now counted
    with InProcessAgent(state) as rig:
        said = {e.args["what"] for e in rig.events("STATE_CORRUPT")}
        assert {"files delivered", "file transfers", "schedule", "sequence run"} <= said, said
        assert rig.hk()["state_corrupt"] >= 4
        assert (state / "files_delivered.json.corrupt").exists() and (state / "schedule.json.ids.corrupt").exists()
        assert not partial.exists() and not stray.exists()


@pytest.mark.req("AGT-013", "FIL-005")
def test_a_transfer_state_missing_where_one_was_written_before_is_said_as_lost_and_a_first_start_says_nothing(
        tmp_path):
    """Found in audit: files.json missing at a restart (not damaged) was said nowhere, so the ground never learnt
    that the gets queued on board had gone with it (they stayed queued there for ever). Missing where the agent's
    state says one was written (``transfers_expected``) it is a loss, said as a damaged one is; at a first start
    nothing is said, and the file is written, so that its absence later is a loss."""
    from flight.agent.files import FileManager
    from flight.agent.ports import EventPort
    from flight.clock import SimClock
    from flight.link.definitions import DICTIONARY
    from flight.link.memory_link import MemoryLink

    events: list = []
    port = EventPort(FileManager.NAME, FileManager.EVENTS, DICTIONARY, lambda name, args: events.append((name, args)))
    params = {p.name: p.default for p in DICTIONARY.parameters}
    state = tmp_path / "state"

    def start(expected: bool) -> FileManager:
        return FileManager(tmp_path / "area", state, MemoryLink().flight, Codec(DICTIONARY).encode_file_pdu_tm,
                           SimClock(1_795_000_000.0), port, params, contact_age_s=lambda: 0.0,
                           transfers_expected=expected)

    first = start(False)
    assert first.load_errors == [] and (state / "files.json").exists()
    (tmp_path / "area" / "products").mkdir(parents=True)
    (tmp_path / "area" / "products" / "a.npz").write_bytes(b"a" * 100)
    first.entity.put("products/a.npz", "downlink/products/a.npz", 2, 5, {})
    assert start(True).load_errors == [] and [t.source for t in start(True).entity.list()] == ["products/a.npz"]
    (state / "files.json").unlink()
    lost = start(True)
    assert [what for what, _why in lost.load_errors] == ["file transfers"]
    assert "files.json missing" in lost.load_errors[0][1] and not lost.entity.list()
    lost.time_began()
    assert ("FILE_FAILED", {"transfer": "-", "name": "state", "reason": lost.load_errors[0][1]}) in events
    assert start(True).load_errors == []  # written again as it was said: said once


@pytest.mark.req("FIL-007")
def test_past_the_delivered_files_it_holds_the_oldest_is_cleaned_not_kept_for_ever(tmp_path):
    """Found in an audit: the list of files the ground has was cut to 1024 by dropping the oldest entries, whose
    files then stayed in products/ for ever (past 512 products a day at the default keep time)."""
    from flight.agent.files import MAX_DELIVERED
    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state") as rig:
        files = rig.agent.files
        products = files.root / "products"
        products.mkdir(parents=True, exist_ok=True)
        for i in range(MAX_DELIVERED + 20):
            (products / f"p{i:04d}.npz").write_bytes(b"x")
            files._remember(f"products/p{i:04d}.npz")  # noqa: SLF001 - as a confirmed downlink does
        assert len(list(products.iterdir())) == MAX_DELIVERED  # the oldest 20 cleaned at once, said
        rig.pump()
        assert len(rig.events("FILE_DELETED")) == 20 and not (products / "p0000.npz").exists()
        rig.clock.advance(2 * 86_400.0)
        files._clean_delivered()  # noqa: SLF001
        assert not list(products.iterdir())  # the rest at their keep time: none left behind


@pytest.mark.req("FIL-001", "FIL-003")
@pytest.mark.parametrize("cls", [1, 2])
def test_a_file_goes_up_whole_in_either_class(tmp_path, cls):
    pair = Pair(tmp_path)
    data = os.urandom(150_000)
    (tmp_path / "g/uplink/m.onnx").write_bytes(data)
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx", cls=cls)
    pair.run(60)
    assert (tmp_path / "b/staging/m.onnx").read_bytes() == data
    got = pair.board.list()[0]
    assert (got.state, got.dest, got.sha256, got.cls) == ("done", "staging/m.onnx", sha(data), cls)
    assert pair.ground.find(t.id).state == "done"
    assert not list((tmp_path / "b/.partial").iterdir())


@pytest.mark.req("FIL-001", "FIL-002")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_class_2_completes_through_ten_percent_loss_both_ways(tmp_path, seed):
    pair = Pair(tmp_path, loss=0.1, seed=seed)
    data = os.urandom(200_000)
    (tmp_path / "b/products/p.npz").write_bytes(data)
    t = pair.board.put("products/p.npz", "downlink/p.npz", cls=2)
    pair.run(600)
    assert (tmp_path / "g/downlink/p.npz").read_bytes() == data
    assert pair.board.find(t.id).state == "done"
    assert pair.board.counts()["bytes_out"] > len(data)  # lost segments went again


@pytest.mark.req("FIL-001")
def test_a_file_replaced_while_it_goes_arrives_whole_as_it_was_when_it_started(tmp_path):
    """Found in an audit: a running training job's checkpoint, replaced atomically every few steps, was read
    again by name for each segment, and failed its checksum on the ground at every try. A file is sent from a
    snapshot taken when its transaction starts; the snapshot goes when the transfer ends."""
    pair = Pair(tmp_path)
    path = tmp_path / "b/products/job.ck"
    first = os.urandom(300_000)
    path.write_bytes(first)
    t = pair.board.put("products/job.ck", "downlink/job.ck", cls=2)
    for i in range(20):  # the writer replaces it while it goes: temporary file, then rename
        pair.run(0.2, stop_when_idle=False)
        (tmp_path / "b/products/.job.ck.tmp").write_bytes(os.urandom(300_000 + i))
        os.replace(tmp_path / "b/products/.job.ck.tmp", path)
    pair.run(120)
    assert pair.board.find(t.id).state == "done" and pair.board.find(t.id).sha256 == sha(first)
    assert (tmp_path / "g/downlink/job.ck").read_bytes() == first
    assert not (tmp_path / "b/.partial/send.snapshot").exists()  # gone as the transfer ended


@pytest.mark.req("FIL-001")
def test_a_file_appended_to_as_it_goes_arrives_as_long_as_it_was_when_it_started(tmp_path):
    """A log is appended to, not replaced: its snapshot (a hard link) shares what is appended. The SHA-256
    the ground checks was taken over the file as it was, and CFDP read its size again a moment later: a line
    written in between made every transfer of a busy log fail its check. The size is held with the snapshot."""
    pair = Pair(tmp_path)
    path = tmp_path / "b/products/worker.log"
    first = b"started\n" * 20_000
    path.write_bytes(first)
    store = pair.board._send_store  # noqa: SLF001 - the writer's line lands between the snapshot and the read
    taken = store.snapshot

    def snapshot_then_a_line(name):
        held = taken(name)
        with open(path, "ab") as log:
            log.write(b"a line the worker wrote just then\n")
        return held

    store.snapshot = snapshot_then_a_line
    t = pair.board.put("products/worker.log", "downlink/worker.log", cls=2)
    for _ in range(10):  # and more as it goes
        pair.run(0.2, stop_when_idle=False)
        with open(path, "ab") as log:
            log.write(b"another line\n")
    pair.run(120)
    assert pair.board.find(t.id).state == "done", pair.board.find(t.id)
    assert (tmp_path / "g/downlink/worker.log").read_bytes() == first
    assert pair.board.find(t.id).sha256 == sha(first)


@pytest.mark.req("FIL-001", "FIL-005")
@pytest.mark.parametrize("ending", ["done class 2", "done class 1", "cancelled", "refused", "abandoned"])
def test_a_snapshot_goes_as_its_transfer_ends_however_it_ends(tmp_path, ending):
    """Found in audit: the hard link a file is sent from went only as the next file started, so a transfer
    that ended with nothing to send after it (its last PDU the budget's last, a cancel during loss of signal)
    kept it, and the disk of a version since replaced, until the next downlink, if ever. It goes as the
    transfer is said to end (or to restart: the restart takes its own), before anything else looks."""
    pair = Pair(tmp_path, config=EntityConfig(inactivity_s=5.0, max_restarts=1) if ending == "abandoned" else None)
    held = tmp_path / "b/.partial/send.snapshot"
    said: list[tuple[str, bool]] = []
    pair.board._on_change = lambda what, t: t is not None and said.append((what, held.exists()))  # noqa: SLF001
    (tmp_path / "b/products/p.npz").write_bytes(os.urandom(60_000))
    t = pair.board.put("products/p.npz", "elsewhere/p.npz" if ending == "refused" else "downlink/p.npz",
                       cls=1 if ending == "done class 1" else 2)
    if ending == "abandoned":  # the ground never answers: restarted once, then failed
        for _ in range(400):
            pair.clock.t += 0.1
            pair.board.pull(4000)
            if pair.board.find(t.id).settled:
                break
    else:
        pair.run(0.2, stop_when_idle=False)
        if ending == "cancelled":
            pair.board.cancel(t.id)
        pair.run(60)
    state = {"done class 2": "done", "done class 1": "done", "cancelled": "cancelled"}.get(ending, "failed")
    assert pair.board.find(t.id).state == state, pair.board.find(t.id)
    expected = [("queued", False), ("started", True)]
    expected += [("restarted", False), ("started", True)] if ending == "abandoned" else []
    assert said == [*expected, (state, False)]
    assert not list((tmp_path / "b/.partial").iterdir())


@pytest.mark.req("FIL-005")
def test_a_snapshot_left_by_a_restart_mid_transfer_is_swept_as_the_agent_starts(files_rig, tmp_path):
    """An agent stopped while a file goes leaves its snapshot (a hard link) under .partial/: the next start
    removes it before anything else, so the version it held (replaced since, as a checkpoint is) is freed;
    the transfer starts again from a snapshot of its own."""
    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    product = r.area / "products/big.npz"
    product.write_bytes(os.urandom(400_000))
    assert r.rig.send("FILE_DOWNLINK", name="products/big.npz").completed
    r.rig.advance(0.5, 0.1)
    held = r.area / ".partial/send.snapshot"
    assert held.stat().st_ino == product.stat().st_ino  # going: held
    r.rig.close()
    (r.area / "products/.big.npz.tmp").write_bytes(os.urandom(400_000))
    os.replace(r.area / "products/.big.npz.tmp", product)  # its writer replaces it while the agent is down
    stale = held.stat().st_ino
    r.rig = InProcessAgent(tmp_path / "agent", start=False)  # built: the state read, nothing run yet
    assert not held.exists()
    r.rig.client.listeners.append(r._heard)  # noqa: SLF001 - the ground's entity hears the new agent
    r.rig.start()
    r.run(60)
    assert r.rig.events("FILE_SENT")[-1].args["name"] == "products/big.npz"
    assert (r.root / "downlink/products/big.npz").read_bytes() == product.read_bytes()
    assert not held.exists() and stale != product.stat().st_ino


@pytest.mark.req("FIL-003")
def test_a_digest_taken_as_the_file_was_written_is_sent_while_the_file_is_still_that_one(tmp_path, monkeypatch):
    """Found in audit: the sender read the whole file for its SHA-256 in the owner's loop as the transfer
    started (seconds for a GiB, the ground's link thread stopped). A digest the owner took as it wrote the file
    is sent instead, but only for that file: one replaced or appended to since is hashed again as it is held."""
    import flight.files.entity as entity

    hashed: list[Path] = []
    real = entity._sha256_file
    monkeypatch.setattr(entity, "_sha256_file", lambda path, size: hashed.append(path) or real(path, size))
    pair = Pair(tmp_path)
    data = os.urandom(120_000)
    (tmp_path / "g/uplink/m.onnx").write_bytes(data)
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx", sha256=sha(data))
    pair.run(60)
    assert pair.ground.find(t.id).state == "done" and (tmp_path / "b/staging/m.onnx").read_bytes() == data
    assert pair.board.list()[0].sha256 == sha(data)  # the board checked the file against the digest given
    sent_hashed = [p for p in hashed if "g" in p.relative_to(tmp_path).parts[:1]]
    assert sent_hashed == [], "the sender read the file again for a digest it was given"
    # Given, then the file replaced (a new inode) or appended to: the digest is not the file's, taken again.
    for change in ("replace", "append"):
        path = tmp_path / f"g/uplink/{change}.bin"
        first = os.urandom(50_000)
        path.write_bytes(first)
        t = pair.ground.put(f"uplink/{change}.bin", f"staging/{change}.bin", sha256=sha(first))
        if change == "replace":
            (tmp_path / "g/uplink/.new").write_bytes(second := os.urandom(50_000))
            os.replace(tmp_path / "g/uplink/.new", path)
        else:
            with open(path, "ab") as f:
                f.write(second := b"more")
            second = first + second
        pair.run(60)
        assert pair.ground.find(t.id).state == "done", pair.ground.find(t.id)
        assert (tmp_path / f"b/staging/{change}.bin").read_bytes() == second
        assert pair.ground.find(t.id).sha256 == sha(second)
    with pytest.raises(FileError, match="sha256: 'abc' is not a SHA-256"):
        pair.ground.put("uplink/m.onnx", "staging/m2.onnx", sha256="abc")


@pytest.mark.req("FIL-003")
def test_nothing_appears_under_its_name_before_the_file_is_whole(tmp_path):
    pair = Pair(tmp_path)
    data = os.urandom(100_000)
    (tmp_path / "g/uplink/m.onnx").write_bytes(data)
    pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(0.2, stop_when_idle=False)  # some segments only
    assert pair.board.counts()["bytes_in"] > 0
    assert not (tmp_path / "b/staging/m.onnx").exists()
    pair.run(60)
    assert (tmp_path / "b/staging/m.onnx").read_bytes() == data


@pytest.mark.req("FIL-004")
def test_a_loss_of_signal_longer_than_every_timer_suspends_and_resumes(tmp_path):
    pair = Pair(tmp_path, config=EntityConfig(ack_timer_s=2, ack_limit=3, nak_timer_s=2, nak_limit=3, inactivity_s=30))
    data = os.urandom(300_000)
    (tmp_path / "g/uplink/m.onnx").write_bytes(data)
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(1.0, stop_when_idle=False)
    pair.in_contact = False
    pair.run(900, dt=1.0, stop_when_idle=False)  # 15 minutes out of contact: far past 3 x 2 s and 30 s
    assert ("g", "suspended", None) in pair.log and ("b", "suspended", None) in pair.log
    assert pair.ground.find(t.id).state == "active"
    pair.in_contact = True
    pair.run(120)
    assert ("g", "resumed", None) in pair.log
    assert pair.ground.find(t.id).state == "done"
    assert (tmp_path / "b/staging/m.onnx").read_bytes() == data
    assert pair.ground.find(t.id).restarts == 0


@pytest.mark.req("FIL-005")
@pytest.mark.parametrize("up_s", [0.0, 10_800.0])
def test_the_receiver_restarting_mid_file_continues_the_same_transaction(tmp_path, up_s):
    """``up_s``: the owner's monotonic clock at the start (a board up for hours; found in audit: the wait for the
    sender was counted from the clock's zero, and the transfer failed at the first housekeeping)."""
    pair = Pair(tmp_path)
    pair.clock.t = up_s
    data = os.urandom(400_000)
    (tmp_path / "g/uplink/m.onnx").write_bytes(data)
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(1.0, stop_when_idle=False)
    assert 0 < pair.board.counts()["bytes_in"] < len(data)
    pair.board = pair.make_board()  # a reset: the state file is all that is left
    assert pair.board.expire_resumable() == []  # the owner's first housekeeping: its sender has inactivity_s
    pair.run(300)
    assert (tmp_path / "b/staging/m.onnx").read_bytes() == data
    mine = [x for x in pair.board.list() if x.direction == "in"]
    assert len(mine) == 1 and mine[0].state == "done" and mine[0].restarts == 1
    assert pair.ground.find(t.id).restarts == 0  # the same transaction
    assert ("b", "resumed", mine[0].id) in pair.log


@pytest.mark.req("FIL-005")
def test_a_file_coming_in_whose_sender_never_continues_fails_inactivity_s_after_the_restart(tmp_path):
    pair = Pair(tmp_path)
    pair.clock.t = 10_800.0
    (tmp_path / "g/uplink/m.onnx").write_bytes(os.urandom(400_000))
    pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(1.0, stop_when_idle=False)
    pair.board = pair.make_board()
    pair.carry = lambda pdu, to: None  # the sender is not heard again
    inactivity_s = pair.board.config.inactivity_s
    assert pair.board.expire_resumable() == []
    pair.run(inactivity_s - 5.0, stop_when_idle=False)
    assert pair.board.expire_resumable() == []
    pair.run(10.0, stop_when_idle=False)
    [gone] = pair.board.expire_resumable()
    assert gone.state == "failed" and "did not continue after the restart" in gone.reason
    assert not list((tmp_path / "b/.partial").glob("*.part"))


def _losing(carry, start: int, end: int):
    """``carry`` that loses the file data from ``start`` to ``end`` (bytes) on the way, every time it is sent."""
    from spacepackets.cfdp.pdu import PduFactory

    def lossy(pdu: bytes, to: FileEntity) -> None:
        x = PduFactory.from_raw(pdu)
        if x.pdu_type.name == "FILE_DATA" and start <= x.offset < end:
            return
        carry(pdu, to)

    return lossy


@pytest.mark.req("FIL-002", "FIL-007")
def test_a_transfer_that_ends_with_data_missing_leaves_nothing_for_the_next_ones(tmp_path):
    """Found in audit: cfdp-py 0.7 shares one lost-segment tracker among all transactions of a process, so the gaps
    of a transfer cancelled with data missing were asked for again at the EOF of every later one, each ending
    NAK_LIMIT_REACHED after three restarts. Later files on a clean link now arrive whole, at the first try."""
    pair = Pair(tmp_path)
    (tmp_path / "b/products/big.npz").write_bytes(os.urandom(400_000))
    clean = pair.carry
    pair.carry = _losing(clean, 200_000, 300_000)
    big = pair.board.put("products/big.npz", "downlink/big.npz")
    pair.run(12.0, stop_when_idle=False)  # the gap seen: the ground asks for it
    pair.board.cancel(big.id)
    pair.run(30)
    assert pair.board.find(big.id).state == "cancelled"
    pair.carry = clean
    for name, size in (("small.json", 50_000), ("med.npz", 250_000)):
        data = os.urandom(size)
        (tmp_path / f"b/products/{name}").write_bytes(data)
        t = pair.board.put(f"products/{name}", f"downlink/{name}")
        pair.run(900)
        done = pair.board.find(t.id)
        assert (done.state, done.restarts) == ("done", 0), (done.state, done.reason)
        assert (tmp_path / f"g/downlink/{name}").read_bytes() == data
    assert pair.ground.counts()["bad_pdus"] == 0


@pytest.mark.req("FIL-007")
def test_a_sender_cancelling_while_the_receiver_asks_for_missing_data_ends_it_there_at_once(tmp_path):
    """Found in audit: the EOF(cancel) that came while the receiver asked for missing data was taken as a repeated
    EOF and dropped; it asked on for 100 s, holding its slot and partial file, and ended NAK_LIMIT_REACHED."""
    pair = Pair(tmp_path)
    (tmp_path / "b/products/big.npz").write_bytes(os.urandom(400_000))
    pair.carry = _losing(pair.carry, 200_000, 300_000)
    big = pair.board.put("products/big.npz", "downlink/big.npz")
    pair.run(12.0, stop_when_idle=False)
    [coming] = [t for t in pair.ground.list() if t.direction == "in"]
    assert coming.state == "active"
    pair.board.cancel(big.id)
    pair.run(5.0, stop_when_idle=False)
    ended = pair.ground.find(coming.id)
    assert ended.settled and "CANCEL" in ended.reason and "NAK_LIMIT" not in ended.reason, (ended.state, ended.reason)
    assert not list((tmp_path / "g/.partial").glob("*.part"))


@pytest.mark.req("FIL-005")
def test_the_sender_restarting_starts_the_file_again_and_the_stale_transaction_ends(tmp_path):
    pair = Pair(tmp_path)
    data = os.urandom(400_000)
    (tmp_path / "b/products/p.npz").write_bytes(data)
    first = pair.board.put("products/p.npz", "downlink/p.npz", priority=3)
    pair.run(1.0, stop_when_idle=False)
    pair.board = pair.make_board()
    again = pair.board.find(first.id)
    assert again is not None and again.state == "queued" and again.restarts == 1
    pair.run(300)
    assert (tmp_path / "g/downlink/p.npz").read_bytes() == data
    ground_side = [x for x in pair.ground.list() if x.direction == "in"]
    assert sorted(x.state for x in ground_side) == ["done", "failed"]
    assert any("superseded" in x.reason for x in ground_side)


@pytest.mark.req("FIL-005")
def test_a_file_done_whose_finished_ack_is_lost_is_not_failed_by_the_next_file_of_its_name(tmp_path):
    """Found in audit: a transfer done but kept until its Finished is acknowledged was settled again as failed
    ("superseded") when the next file of its name started: counted, said, listed twice, its file discarded."""
    from spacepackets.cfdp.pdu import DirectiveType, PduFactory

    pair = Pair(tmp_path)
    lost = []

    def carry(pdu: bytes, to: FileEntity) -> None:
        p = PduFactory.from_raw(pdu)
        if (to is pair.board and not lost and p.pdu_type.name == "FILE_DIRECTIVE"
                and p.directive_type == DirectiveType.ACK_PDU
                and p.directive_code_of_acked_pdu == DirectiveType.FINISHED_PDU):
            lost.append(p)  # the ground's first ACK(Finished) lost on the way up
            return
        to.receive(pdu)

    pair.carry = carry
    first, second = os.urandom(50_000), os.urandom(60_000)
    (tmp_path / "g/uplink/a").write_bytes(first)
    (tmp_path / "g/uplink/b").write_bytes(second)
    pair.ground.put("uplink/a", "staging/model.onnx")
    pair.ground.put("uplink/b", "staging/model.onnx")
    pair.run(600)
    assert lost and (tmp_path / "b/staging/model.onnx").read_bytes() == second
    board = [(x.id, x.state) for x in pair.board.list() if x.direction == "in"]
    first_id = min(x for x, _ in board)  # numbered from the ground's first start's UTC millisecond
    n = int(first_id.rsplit("-", 1)[1])
    assert board == [(f"in-1-{n + 1}", "done"), (first_id, "done")], board  # each once, as it ended
    assert (pair.board.counts()["done"], pair.board.counts()["failed"]) == (2, 0)
    assert [w for who, w, tid in pair.log if who == "b" and tid == first_id] == ["started", "done"]


@pytest.mark.req("FIL-005")
def test_transaction_numbers_are_saved_a_block_at_a_time_and_never_used_again_after_a_reset(tmp_path, monkeypatch):
    """An audit: the state was written (and fsync'd) for every transaction number taken, one of four saves a
    file sent. A block of SEQ_BLOCK is written down before its first number is used; a reset skips the rest."""
    import flight.files.entity as entity_module

    pair = Pair(tmp_path)
    saves = []
    real = entity_module.write_checked_json
    monkeypatch.setattr(entity_module, "write_checked_json", lambda path, body: saves.append(body) or real(path, body))
    for i in range(5):
        (tmp_path / f"b/products/{i}.json").write_bytes(b"x" * 100)
        pair.board.put(f"products/{i}.json", f"downlink/{i}.json")
    pair.run(120)
    used = sorted(int(t.transaction.split("-")[1]) for t in pair.board.list() if t.transaction)
    assert len(used) == 5 and len(set(used)) == 5, used
    board_saves = [b for b in saves if b.get("seq") is not None and any(t["direction"] == "out" for t in
                                                                          b["transfers"] + b["history"])]
    seqs = [b["seq"] for b in board_saves]
    assert sorted(set(seqs)) == [used[0], used[0] + entity_module.SEQ_BLOCK], seqs  # one block, reserved once
    pair.board = pair.make_board()  # a reset: the state file is all that is left
    (tmp_path / "b/products/after.json").write_bytes(b"y" * 100)
    t = pair.board.put("products/after.json", "downlink/after.json")
    pair.run(120)
    after = int(pair.board.find(t.id).transaction.split("-")[1])
    assert after == used[0] + entity_module.SEQ_BLOCK  # past the block: none of it used again


@pytest.mark.req("FIL-005")
def test_the_queue_survives_a_restart_in_priority_order(tmp_path):
    pair = Pair(tmp_path)
    for name in ("a", "b", "c"):
        (tmp_path / f"b/products/{name}.json").write_bytes(name.encode() * 3000)
    pair.board.put("products/a.json", "downlink/a.json", priority=9)
    pair.board.put("products/b.json", "downlink/b.json", priority=1)
    pair.board.put("products/c.json", "downlink/c.json", priority=5)
    pair.board = pair.make_board()  # before anything was sent
    order = []
    pair.board._on_change = lambda w, t: w == "done" and order.append(t.source)
    pair.run(120)
    assert order == ["products/b.json", "products/c.json", "products/a.json"]


@pytest.mark.req("FIL-005")
def test_a_corrupt_transfer_state_file_is_set_aside_and_said(tmp_path):
    pair = Pair(tmp_path)
    (tmp_path / "b.json").write_text('{"not": "checked"}')
    board = pair.make_board()
    assert board.load_error and "b.json" in board.load_error
    assert (tmp_path / "b.json.corrupt").exists()


@pytest.mark.req("FIL-006")
@pytest.mark.parametrize("dest", ["../escape.bin", "/etc/passwd", "staging/.hidden", "products/x.bin",
                                  "staging/a/b/c/d/e", "staging/a\\b"])
def test_a_hostile_destination_is_refused_and_nothing_is_written_outside(tmp_path, dest):
    pair = Pair(tmp_path)
    (tmp_path / "g/uplink/m.onnx").write_bytes(b"x" * 5000)
    t = pair.ground.put("uplink/m.onnx", dest)
    pair.run(200)
    board_side = [x for x in pair.board.list() if x.direction == "in"]
    assert board_side and board_side[0].state == "failed"
    assert pair.ground.find(t.id).state == "failed"
    assert "FILESTORE_REJECTION" in pair.ground.find(t.id).reason
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"x" * 5000]
    assert written == [tmp_path / "g/uplink/m.onnx"]


@pytest.mark.req("FIL-006")
@pytest.mark.parametrize("name, rule", [("", "empty"), ("/abs", "relative"), ("a/../b", "plain name"),
                                        ("models/m.onnx", "not under"), ("products/" + "x" * 300, "characters")])
def test_names_are_checked_naming_the_rule(name, rule):
    with pytest.raises(NameRefused, match=rule):
        check_name(name, frozenset({"products", "staging"}))


@pytest.mark.req("FIL-006")
def test_a_link_cannot_lead_out_of_the_file_area(tmp_path):
    (tmp_path / "area" / "products").mkdir(parents=True)
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", tmp_path / "area" / "products" / "link")
    with pytest.raises(NameRefused, match="outside"):
        resolve(tmp_path / "area", "products/link", frozenset({"products"}))


@pytest.mark.req("FIL-006")
def test_bad_requests_and_bad_pdus_are_refused_naming_the_field(tmp_path):
    pair = Pair(tmp_path)
    with pytest.raises(FileError, match="source: no file"):
        pair.board.put("products/none.bin", "downlink/x")
    (tmp_path / "b/products/p").write_bytes(b"p")
    with pytest.raises(FileError, match="class"):
        pair.board.put("products/p", "downlink/x", cls=3)
    with pytest.raises(FileError, match="priority"):
        pair.board.put("products/p", "downlink/x", priority=300)
    with pytest.raises(FileError, match="transfer: no transfer"):
        pair.board.cancel("out-99")
    for junk in (b"", b"\x00", bytes(range(0xD0, 0xF8)), bytes(200)):
        pair.board.receive(junk)
    assert pair.board.counts()["bad_pdus"] == 4 and pair.board.last_error


@pytest.mark.req("FIL-009")
def test_a_full_disk_refuses_an_incoming_file_with_the_reason(tmp_path):
    pair = Pair(tmp_path)
    pair.board.admit_incoming = lambda size_bytes: "disk low: 10 MB free"
    (tmp_path / "g/uplink/m.onnx").write_bytes(b"m" * 20_000)
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(100)
    assert pair.ground.find(t.id).state == "failed"
    assert [x.reason for x in pair.board.list()] == ["disk low: 10 MB free"]
    assert not (tmp_path / "b/staging/m.onnx").exists()


@pytest.mark.req("FIL-007")
def test_cancelling_a_transfer_tells_the_peer(tmp_path):
    pair = Pair(tmp_path)
    (tmp_path / "b/products/p.npz").write_bytes(os.urandom(500_000))
    t = pair.board.put("products/p.npz", "downlink/p.npz")
    pair.run(0.5, stop_when_idle=False)
    pair.board.cancel(t.id)
    pair.run(100)
    assert pair.board.find(t.id).state == "cancelled"
    assert [x.state for x in pair.ground.list()] == ["failed"]
    assert not (tmp_path / "g/downlink/p.npz").exists()


# --- the agent's file manager, in process ----------------------------------------------------


class GroundFilesRig:
    """An in-process agent and a ground CFDP entity fed from the ground client's telemetry."""

    def __init__(self, tmp: Path, **config):
        self.rig = InProcessAgent(tmp / "agent", **config)
        self.root = tmp / "ground"
        (self.root / "uplink").mkdir(parents=True)
        self.area = tmp / "agent" / "compute"
        self.entity = FileEntity(1, 2, self.root, self.rig.clock.monotonic_s, read_tops=frozenset({"uplink"}),
                                 write_tops=frozenset({"downlink"}))
        self.rig.client.listeners.append(self._heard)

    def _heard(self, item) -> None:
        pdu = Codec.file_pdu(item.packet) if item.packet is not None else None
        if pdu is not None:
            self.entity.receive(pdu)

    def run(self, seconds: float, dt: float = 0.1) -> None:
        for _ in range(int(seconds / dt)):
            for pdu in self.entity.pull(50_000):
                self.rig.link.ground.send(self.rig.client.codec.encode_file_pdu_tc(pdu))
            self.rig.advance(dt, dt)
            if not self.entity.pending() and not self.rig.agent.files.entity.pending():
                return


@pytest.fixture
def files_rig(tmp_path):
    r = GroundFilesRig(tmp_path)
    yield r
    r.rig.close()


@pytest.mark.req("FIL-001", "FIL-007")
def test_the_agent_receives_an_uplink_and_sends_a_product_down(files_rig):
    r = files_rig
    data = os.urandom(120_000)
    (r.root / "uplink/model.onnx").write_bytes(data)
    r.entity.put("uplink/model.onnx", "staging/model.onnx")
    r.run(30)
    assert (r.area / "staging/model.onnx").read_bytes() == data
    got = r.rig.events("FILE_RECEIVED")
    assert got and got[-1].args["name"] == "staging/model.onnx" and got[-1].args["sha256"] == sha(data)[:16]

    (r.area / "products").mkdir(parents=True, exist_ok=True)
    (r.area / "products/job-1.json").write_bytes(b'{"tiles": 3}')
    res = r.rig.send("FILE_DOWNLINK", name="products/job-1.json", priority=1)
    assert res.completed and res.result["transfer"].startswith("out-")
    r.run(30)
    assert (r.root / "downlink/products/job-1.json").read_bytes() == b'{"tiles": 3}'
    assert r.rig.events("FILE_SENT")[-1].args["name"] == "products/job-1.json"
    hk = r.rig.hk()
    assert (hk["files_done"], hk["files_failed"], hk["file_bytes_in"]) == (2, 0, len(data))
    status = r.rig.send("FILE_STATUS").result
    assert [row[5] for row in status["transfers"]] == ["done", "done"]


@pytest.mark.req("FIL-007", "FIL-006")
def test_list_and_delete_on_board_are_confined(files_rig):
    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    (r.area / "products/a.npz").write_bytes(b"a" * 10)
    listing = r.rig.send("FILE_LIST", directory="products")
    assert listing.completed and listing.result["entries"][0][:2] == ["a.npz", 10]
    assert listing.result["free_mb"] > 0
    for bad in ("../state.json", "models", "/etc"):
        res = r.rig.send("FILE_LIST", directory=bad)
        assert not res.completed and "BAD_ARGUMENTS" in res.outcome
    res = r.rig.send("FILE_DELETE", name="models/cloud.onnx")
    assert not res.completed and "not under" in res.outcome
    assert r.rig.send("FILE_DELETE", name="products/a.npz").completed
    assert not (r.area / "products/a.npz").exists()
    assert r.rig.events("FILE_DELETED")[-1].args == {"name": "products/a.npz", "reason": "FILE_DELETE"}


@pytest.mark.req("FIL-009")
def test_a_file_rewritten_since_it_went_and_dropped_from_a_full_list_of_delivered_is_sent_again(tmp_path,
                                                                                                monkeypatch):
    """Found in audit: past MAX_DELIVERED the oldest entry is dropped; one whose file was rewritten since it went
    (a checkpoint of the same name) stayed known to the automatic downlink, so the new file was neither sent nor
    in the list for the rest of the run."""
    import flight.agent.files as files_module
    from flight.clock import SimClock
    from flight.link.memory_link import MemoryLink

    monkeypatch.setattr(files_module, "MAX_DELIVERED", 2)
    clock = SimClock(1_795_000_000.0)
    fm = _manager(tmp_path, MemoryLink().flight, clock, {"file_auto_downlink": True})
    checkpoints = tmp_path / "area" / "checkpoints"
    checkpoints.mkdir()
    for name in ("a", "b", "c"):
        (checkpoints / f"{name}.ck").write_bytes(b"v1")
    fm.housekeeping()  # the automatic downlink queues all three
    assert sorted(t.source for t in fm.entity.transfers.values()) == [f"checkpoints/{n}.ck" for n in "abc"]
    for t in list(fm.entity.transfers.values()):
        fm.entity.cancel(t.id)
    fm._remember("checkpoints/a.ck", files_module._stamp_of(checkpoints / "a.ck"))  # noqa: SLF001 - as a
    (checkpoints / "a.ck").unlink()  # confirmed downlink does; then a new checkpoint under its name
    (checkpoints / "a.ck").write_bytes(b"v2, longer")
    fm._remember("checkpoints/b.ck", files_module._stamp_of(checkpoints / "b.ck"))  # noqa: SLF001
    fm._remember("checkpoints/c.ck", files_module._stamp_of(checkpoints / "c.ck"))  # noqa: SLF001 - a dropped
    clock.advance(files_module.RELIST_S + 1)
    fm.housekeeping()
    assert [t.source for t in fm.entity.transfers.values()] == ["checkpoints/a.ck"]


@pytest.mark.req("FIL-007")
def test_a_listing_with_a_name_not_utf8_or_not_printable_lists_every_file_escaped(files_rig):
    """Found in audit: one file in the directory whose name was not UTF-8 (written on board by another program)
    made FILE_LIST's result unsendable: the command completed with no listing at all. A control character in a
    name went down raw, to the operator's terminal."""
    r = files_rig
    products = r.area / "products"
    products.mkdir(parents=True, exist_ok=True)
    (products / "a.npz").write_bytes(b"a" * 10)
    (products / "b\x1b[2J.npz").write_bytes(b"b")
    with open(os.fsencode(products) + b"/\xff.npz", "wb") as f:
        f.write(b"cc")
    listing = r.rig.send("FILE_LIST", directory="products")
    assert listing.completed and listing.result["count"] == 3, listing
    assert [e[:2] for e in listing.result["entries"]] == [["a.npz", 10], ["b\\x1b[2J.npz", 1], ["\\udcff.npz", 2]]


@pytest.mark.req("FIL-007")
def test_a_file_being_sent_cannot_be_deleted(files_rig):
    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    (r.area / "products/big.npz").write_bytes(os.urandom(200_000))
    assert r.rig.send("FILE_DOWNLINK", name="products/big.npz").completed
    res = r.rig.send("FILE_DELETE", name="products/big.npz")
    assert not res.completed and "BUSY" in res.outcome


@pytest.mark.req("FIL-004")
def test_the_agent_suspends_its_transfers_when_the_ground_falls_silent(files_rig):
    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    (r.area / "products/big.npz").write_bytes(os.urandom(50_000))
    r.rig.advance(40)  # nothing from the ground for longer than file_los_s (30 s)
    assert r.rig.events("FILES_SUSPENDED")
    assert r.rig.hk()["files_suspended"] is True
    res = r.rig.send("FILE_DOWNLINK", name="products/big.npz")  # a command is contact
    assert res.completed
    r.run(30)
    assert r.rig.events("FILES_RESUMED")
    assert (r.root / "downlink/products/big.npz").exists()


@pytest.mark.req("FIL-009")
def test_products_the_ground_confirmed_are_cleaned_and_new_ones_go_down_by_themselves(files_rig):
    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    assert r.rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
    assert r.rig.send("SET_PARAM", name="file_keep_done_s", value="0").completed
    (r.area / "products/new.json").write_bytes(b"{}")
    r.rig.advance(2)  # a housekeeping period sees it
    r.run(30)
    assert (r.root / "downlink/products/new.json").read_bytes() == b"{}"
    r.rig.advance(2)
    assert not (r.area / "products/new.json").exists()
    assert r.rig.events("FILE_DELETED")[-1].args["name"] == "products/new.json"


@pytest.mark.req("FIL-006")
def test_a_malformed_file_packet_is_counted_and_the_agent_goes_on(files_rig):
    r = files_rig
    from flight.link.apid import Apid
    from flight.link.packets import pack_tc

    r.rig.link.ground.send(pack_tc(Apid.FILES, 1, 141, 1, b"\x01\x02"))
    r.rig.link.ground.send(pack_tc(Apid.FILES, 2, 8, 1, b"x"))
    r.rig.advance(2)
    assert r.rig.hk()["file_bad_pdus"] == 1
    assert any("141" in e.args["reason"] for e in r.rig.events("BAD_PACKET"))
    assert r.rig.send("NOOP").completed


# --- sharing the link ------------------------------------------------------------------------


def _manager(tmp: Path, link, clock, params: dict):
    from flight.agent.files import FileManager
    from flight.agent.ports import EventPort
    from flight.link.definitions import DICTIONARY

    events: list = []
    port = EventPort(FileManager.NAME, FileManager.EVENTS, DICTIONARY, lambda name, args: events.append(name))
    defaults = {p.name: p.default for p in DICTIONARY.parameters}
    fm = FileManager(tmp / "area", tmp / "state", link, Codec(DICTIONARY).encode_file_pdu_tm, clock, port,
                     {**defaults, **params}, contact_age_s=lambda: 0.0)
    (tmp / "area" / "products").mkdir(parents=True, exist_ok=True)
    return fm


@pytest.mark.req("FIL-008")
def test_file_pdus_keep_to_their_rate_budget(tmp_path):
    from flight.clock import SimClock
    from flight.link.memory_link import MemoryLink

    (tmp_path / "state").mkdir()
    clock = SimClock(1000.0)
    pair = MemoryLink(queue_packets=100_000)
    fm = _manager(tmp_path, pair.flight, clock, {"file_rate_bps": 10_000.0})
    (tmp_path / "area/products/big.bin").write_bytes(os.urandom(400_000))
    fm.entity.put("products/big.bin", "downlink/big.bin")
    sent = 0
    for _ in range(100):  # 10 s, a turn every 0.1 s
        clock.set(clock.monotonic_s() + 0.1)
        fm.end_turn()
        sent += sum(len(p) for p in pair.ground.receive())
    assert 0.8 * 10_000 * 10 <= sent <= 10_000 * 10 + 10_000 * 0.5 + 2048 + 1100


@pytest.mark.system
@pytest.mark.req("FIL-008")
def test_file_pdus_never_queue_more_than_a_quarter_second_of_a_serial_line(tmp_path):
    from flight.clock import RealClock
    from flight.link.transport import open_flight_link
    from hil.ptyline import PtyLine

    (tmp_path / "state").mkdir()
    with PtyLine(rate_bps=11520) as line:
        link = open_flight_link(f"serial://{line.a_path}?baud=115200")
        try:
            fm = _manager(tmp_path, link, RealClock(), {})
            (tmp_path / "area/products/big.bin").write_bytes(os.urandom(300_000))
            fm.entity.put("products/big.bin", "downlink/big.bin")
            line.pause()  # the far end stops taking bytes: whatever is offered stays queued here
            turns = 0
            while link.backlog_bytes() == 0 and turns < 100_000:  # until the cable's buffers are full
                fm.end_turn()
                link.flush()
                turns += 1
            assert link.backlog_bytes() > 0, "the line never filled"
            before = fm.entity.counts()["bytes_out"]
            wire_before = link.tx_wire_bytes
            most = 0
            for _ in range(2000):
                fm.end_turn()
                link.flush()
                most = max(most, link.backlog_bytes())
            assert most <= 0.25 * 11520 + 1100  # a quarter second of the line, and one PDU past it
            # The kernel's pty buffer may still take a few KB after it first refused (its flip
            # buffer drains into the line discipline on its own): the entity may offer what left,
            # never more.
            taken_by_kernel = link.tx_wire_bytes - wire_before
            assert fm.entity.counts()["bytes_out"] - before <= 0.25 * 11520 + 1100 + taken_by_kernel
        finally:
            link.close()


@pytest.mark.system  # a compute worker process
@pytest.mark.req("FIL-009")
def test_below_the_disk_reserve_new_jobs_and_uplinks_are_refused_with_the_reason(tmp_path):
    r = GroundFilesRig(tmp_path, compute_enabled=True, parameters={"disk_reserve_mb": 1e6})  # a terabyte free
    try:
        r.rig.advance(2)
        low = r.rig.events("DISK_LOW")
        assert len(low) == 1 and low[0].args["reserve_mb"] == 1e6
        res = r.rig.send("INFER_START", input_set="cloud_tiles_test")
        assert not res.completed and "BUSY" in res.outcome and "disk low" in res.outcome
        (r.root / "uplink/m.onnx").write_bytes(b"m" * 5000)
        t = r.entity.put("uplink/m.onnx", "staging/m.onnx")
        r.run(30)
        assert r.entity.find(t.id).state == "failed"
        assert "disk low" in r.rig.events("FILE_FAILED")[-1].args["reason"]
        assert not (r.area / "staging/m.onnx").exists()
    finally:
        r.rig.close()


@pytest.mark.req("FIL-009")
def test_a_file_the_disk_will_not_delete_is_said_once_counted_and_tried_again(tmp_path, monkeypatch):
    """Found in an audit: a failed deletion was dropped from the list of files the ground has, unsaid and
    uncounted, and the file stayed on the board for good."""
    import errno
    import pathlib

    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state") as rig:
        files = rig.agent.files
        products = files.root / "products"
        products.mkdir(parents=True, exist_ok=True)
        (products / "stuck.npz").write_bytes(b"x")
        files._remember("products/stuck.npz")  # noqa: SLF001 - as a confirmed downlink does
        real_unlink = pathlib.Path.unlink
        refusing = [True]

        def unlink(path, missing_ok=False):
            if refusing[0] and path.name == "stuck.npz":
                raise OSError(errno.EIO, "Input/output error", str(path))
            return real_unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(pathlib.Path, "unlink", unlink)
        rig.clock.advance(2 * 86_400.0)
        for _ in range(3):
            files._clean_delivered()  # noqa: SLF001 - a clean-up look, again and again
        rig.pump()
        said = [e.args for e in rig.events("FILE_FAILED") if e.args["name"] == "products/stuck.npz"]
        assert len(said) == 1 and "not deleted" in said[0]["reason"] and "Input/output error" in said[0]["reason"]
        assert rig.hk()["files_failed"] == 1 and (products / "stuck.npz").exists()
        refusing[0] = False  # the disk lets it go: the next look deletes it
        files._clean_delivered()  # noqa: SLF001
        rig.pump()
        assert not (products / "stuck.npz").exists()
        assert rig.events("FILE_DELETED")[-1].args["name"] == "products/stuck.npz"
        assert rig.hk()["files_failed"] == 1  # counted once


@pytest.mark.req("FIL-009", "FIL-007")
def test_the_clean_up_keeps_a_file_queued_to_go_down_and_deletes_it_once_it_has_gone(files_rig):
    """Found in audit: the clean-up deleted a confirmed product that was queued to go down again, a file that
    FILE_DELETE refuses as busy; it is now kept while queued or going and cleaned at the next look after."""
    r = files_rig
    products = r.area / "products"
    products.mkdir(parents=True, exist_ok=True)
    (products / "big.npz").write_bytes(os.urandom(3_000_000))
    (products / "a.npz").write_bytes(b"x" * 100)
    r.rig.agent.files._remember("products/a.npz")  # noqa: SLF001 - the ground confirmed it once
    assert r.rig.send("SET_PARAM", name="file_keep_done_s", value="0").completed
    assert r.rig.send("FILE_DOWNLINK", name="products/big.npz", priority=0).completed
    assert r.rig.send("FILE_DOWNLINK", name="products/a.npz").completed  # asked for again: queued behind big
    assert "BUSY" in r.rig.send("FILE_DELETE", name="products/a.npz").outcome
    r.rig.advance(3)  # housekeeping periods while it waits its turn
    assert (products / "a.npz").exists() and not r.rig.events("FILE_DELETED")
    r.run(300)  # both go down; a.npz confirmed anew
    assert (r.root / "downlink/products/a.npz").read_bytes() == b"x" * 100
    r.rig.advance(3)
    assert not (products / "a.npz").exists()
    assert "products/a.npz" in [e.args["name"] for e in r.rig.events("FILE_DELETED")]


@pytest.mark.req("FIL-009")
def test_a_product_rewritten_under_a_name_the_ground_has_goes_down_again_and_is_not_cleaned(files_rig):
    """Found in audit: the files the ground has were known by name alone, so a product written again under a
    confirmed name was never sent, and deleted at its keep time. Each is kept with the file's inode, size and
    mtime as it went; a file there that is no longer that one is new."""
    from flight.storage import read_checked_json

    r = files_rig
    products = r.area / "products"
    products.mkdir(parents=True, exist_ok=True)
    assert r.rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
    assert r.rig.send("SET_PARAM", name="file_keep_done_s", value="600").completed

    def write(data: bytes) -> None:  # as products are written: whole, then put in place
        (products / ".scene.tmp").write_bytes(data)
        os.replace(products / ".scene.tmp", products / "job00003-scene.json")

    write(b'{"v": 1}')
    r.rig.advance(2)
    r.run(30)
    assert (r.root / "downlink/products/job00003-scene.json").read_bytes() == b'{"v": 1}'
    r.rig.advance(2)
    saved = read_checked_json(r.rig.agent.files._delivered_path)["products/job00003-scene.json"]  # noqa: SLF001
    st = (products / "job00003-scene.json").stat()
    assert saved[1:] == [st.st_ino, st.st_size, st.st_mtime_ns]
    write(b'{"v": 2}')  # the same input came again: a new product under the confirmed name
    r.rig.advance(2)
    r.run(30)
    assert (r.root / "downlink/products/job00003-scene.json").read_bytes() == b'{"v": 2}'
    r.rig.clock.advance(300.0)
    write(b'{"v": 3}')  # written again before the keep time of version 2: not the ground's, never cleaned
    r.rig.clock.advance(400.0)
    r.rig.agent.files._clean_delivered()  # noqa: SLF001 - past version 2's keep time
    assert (products / "job00003-scene.json").read_bytes() == b'{"v": 3}'
    assert not r.rig.events("FILE_DELETED")


@pytest.mark.req("FIL-009", "AGT-013")
def test_the_files_the_ground_has_are_read_as_saved_before_stamps_and_checked(tmp_path):
    """The saved list of files the ground has: an entry saved before stamps (a time) is read and cleaned as it
    was; one that is neither a time nor [time, inode, size, mtime ns] sets the file aside as damaged."""
    from flight.storage import write_checked_json

    state = tmp_path / "state"
    products = state / "compute/products"
    products.mkdir(parents=True)
    for name in ("old.npz", "new.npz", "changed.npz"):
        (products / name).write_bytes(b"x")
    st = (products / "new.npz").stat()
    write_checked_json(state / "files_delivered.json", {
        "products/old.npz": 1.0, "products/new.npz": [2.0, st.st_ino, st.st_size, st.st_mtime_ns],
        "products/changed.npz": [3.0, st.st_ino, st.st_size, st.st_mtime_ns]})  # not the file there
    with InProcessAgent(state) as rig:
        assert not rig.events("STATE_CORRUPT")
        assert rig.send("SET_PARAM", name="file_keep_done_s", value="0").completed
        rig.advance(3)
        assert sorted(e.args["name"] for e in rig.events("FILE_DELETED")) == ["products/new.npz", "products/old.npz"]
        assert [p.name for p in products.iterdir()] == ["changed.npz"]
    write_checked_json(state / "files_delivered.json", {"products/old.npz": [1.0, "inode", 1, 2]})
    with InProcessAgent(state) as rig:
        assert "files delivered" in {e.args["what"] for e in rig.events("STATE_CORRUPT")}
        assert (state / "files_delivered.json.corrupt").exists()


@pytest.mark.req("FIL-009")
def test_a_confirmation_nothing_would_send_again_is_on_disk_at_once(files_rig):
    """Found in review: confirmations saved once a housekeeping period are sent again after a power cut only
    where the automatic downlink is on (the default is off): otherwise a lost one kept its product for good."""
    from flight.storage import read_checked_json

    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    (r.area / "products/job-2.json").write_bytes(b"{}")
    assert r.rig.send("FILE_DOWNLINK", name="products/job-2.json").completed
    r.run(30)
    assert r.rig.events("FILE_SENT")
    assert "products/job-2.json" in read_checked_json(r.rig.agent.files._delivered_path)  # noqa: SLF001


@pytest.mark.req("FIL-009")
def test_an_uplinked_input_is_cleaned_once_a_job_has_taken_it(files_rig):
    r = files_rig
    assert r.rig.send("SET_PARAM", name="file_keep_done_s", value="0").completed
    (r.root / "uplink/tile.npy").write_bytes(b"t" * 1000)
    r.entity.put("uplink/tile.npy", "incoming/tile.npy")
    r.run(30)
    r.rig.advance(3)
    assert (r.area / "incoming/tile.npy").exists()  # not taken yet: kept
    (r.area / "incoming/done").mkdir(parents=True)
    os.replace(r.area / "incoming/tile.npy", r.area / "incoming/done/tile.npy")  # as a continuous job does
    r.rig.advance(2)
    assert not (r.area / "incoming/done/tile.npy").exists()
    assert r.rig.events("FILE_DELETED")[-1].args["name"] == "incoming/done/tile.npy"


@pytest.mark.req("FIL-009")
def test_files_in_incoming_no_job_takes_are_deleted_once_left_unchanged_and_never_while_a_transfer_needs_them(
        files_rig):
    """Found in review: a file in incoming/ that no continuous job takes (a name not *.npy, a hidden write never
    finished, a file in a directory of its own) was kept for good, so a stream of uplinked junk filled the disk.
    Each is deleted once it has been there unchanged for JUNK_AFTER_S, said and counted, a bounded number a look;
    never an input, the worker's done/ and rejected/, a file still being written, or one a transfer needs."""
    from flight.agent.files import JUNK_AFTER_S, JUNK_PER_LOOK

    r = files_rig
    incoming = r.area / "incoming"
    (r.root / "uplink/notes.txt").write_bytes(b"n" * 1000)
    r.entity.put("uplink/notes.txt", "incoming/notes.txt")  # sent up as the ground sends any file
    r.run(30)
    assert (incoming / "notes.txt").is_file()
    (incoming / ".capture-000007.npy").write_bytes(b"half")  # a write never finished
    (incoming / "sub").mkdir()
    (incoming / "sub" / "x.npy").write_bytes(b"x")  # in a directory no job reads
    for k in range(JUNK_PER_LOOK):
        (incoming / f"junk-{k:02d}.bin").write_bytes(b"j")
    kept = [incoming / "tile.npy", incoming / "done" / "old.npy", incoming / "rejected" / "old.bin"]
    for path in kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"k")
    (incoming / "growing.bin").write_bytes(b"g")
    (incoming / "wanted.bin").write_bytes(os.urandom(100_000))
    sent = r.rig.send("FILE_DOWNLINK", name="incoming/wanted.bin")  # the ground wants it: it goes at the next pass
    assert sent.completed
    r.rig.advance(2)  # first seen now
    r.rig.clock.advance(JUNK_AFTER_S - 10.0)
    r.rig.advance(2)
    assert not r.rig.events("FILE_DELETED") and (incoming / "notes.txt").is_file()
    (incoming / "growing.bin").write_bytes(b"gg")  # still being written: its time starts again
    r.rig.clock.advance(20.0)
    r.rig.advance(1)
    junk = {"incoming/notes.txt", "incoming/.capture-000007.npy", "incoming/sub/x.npy",
            *(f"incoming/junk-{k:02d}.bin" for k in range(JUNK_PER_LOOK))}
    deleted = [e.args for e in r.rig.events("FILE_DELETED")]
    assert len(deleted) == JUNK_PER_LOOK  # a bounded number a look: the rest at the next
    r.rig.advance(1)
    deleted = [e.args for e in r.rig.events("FILE_DELETED")]
    assert {d["name"] for d in deleted} == junk and len(deleted) == len(junk)
    assert all("no job takes it" in d["reason"] and "unchanged for" in d["reason"] for d in deleted)
    assert not any(Path(r.area / name).exists() for name in junk)
    assert all(path.is_file() for path in kept) and (incoming / "growing.bin").is_file()
    assert r.rig.hk()["incoming_removed"] == len(junk)

    r.rig.clock.advance(JUNK_AFTER_S)
    r.rig.advance(2)
    assert not (incoming / "growing.bin").exists()  # unchanged long enough now
    assert (incoming / "wanted.bin").is_file()  # its downlink waits for the ground: kept
    assert r.rig.send("FILE_CANCEL", transfer=sent.result["transfer"]).completed
    r.rig.advance(2)
    assert not (incoming / "wanted.bin").exists()
    assert all(path.is_file() for path in kept) and r.rig.hk()["incoming_removed"] == len(junk) + 2


@pytest.mark.req("FIL-007")
def test_cancelling_a_file_coming_in_stops_it_for_good_and_tells_the_sender(tmp_path):
    pair = Pair(tmp_path)
    (tmp_path / "g/uplink/m.onnx").write_bytes(os.urandom(400_000))
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(0.5, stop_when_idle=False)
    incoming = [x for x in pair.board.list() if x.direction == "in"][0]
    pair.board.cancel(incoming.id)
    pair.run(300)
    assert not (tmp_path / "b/staging/m.onnx").exists()
    assert [(x.id, x.state) for x in pair.board.list()] == [(incoming.id, "cancelled")]  # not reopened
    assert pair.ground.find(t.id).state == "failed" and "CANCEL" in pair.ground.find(t.id).reason
    assert not list((tmp_path / "b/.partial").iterdir())


@pytest.mark.req("FIL-007", "FIL-005")
def test_cancelling_a_file_that_was_coming_in_before_a_restart(tmp_path):
    pair = Pair(tmp_path)
    (tmp_path / "g/uplink/m.onnx").write_bytes(os.urandom(400_000))
    t = pair.ground.put("uplink/m.onnx", "staging/m.onnx")
    pair.run(0.5, stop_when_idle=False)
    pair.board = pair.make_board()
    resumable = [x for x in pair.board.list() if x.direction == "in"][0]
    pair.board.cancel(resumable.id)
    pair.run(300)
    assert not (tmp_path / "b/staging/m.onnx").exists()
    assert pair.ground.find(t.id).state == "failed"
    assert not list((tmp_path / "b/.partial").iterdir())


@pytest.mark.req("FIL-007")
def test_cancelling_a_class_1_file_going_out_is_not_taken_for_a_fault(tmp_path):
    pair = Pair(tmp_path)
    (tmp_path / "b/products/p.npz").write_bytes(os.urandom(300_000))
    t = pair.board.put("products/p.npz", "downlink/p.npz", cls=1)
    pair.run(0.5, stop_when_idle=False)
    pair.board.cancel(t.id)
    pair.run(30)
    assert ("b", "restarted", t.id) not in pair.log
    assert pair.board.find(t.id).state == "cancelled"
    assert [x.state for x in pair.ground.list()] == ["failed"]  # the EOF(cancel) reached it


@pytest.mark.req("FIL-006")
def test_an_eof_with_an_undefined_condition_code_is_counted_not_raised(tmp_path):
    from spacepackets.cfdp import ConditionCode, TransmissionMode
    from spacepackets.cfdp.conf import PduConfig
    from spacepackets.cfdp.pdu import EofPdu
    from spacepackets.util import ByteFieldU16, ByteFieldU32

    pair = Pair(tmp_path)
    conf = PduConfig(ByteFieldU16(1), ByteFieldU16(2), ByteFieldU32(5), TransmissionMode.ACKNOWLEDGED)
    raw = bytearray(EofPdu(pdu_conf=conf, file_checksum=b"\0\0\0\0", file_size=10,
                           condition_code=ConditionCode.NO_ERROR).pack())
    raw[conf_len(raw)] = 9 << 4  # condition code 9 is not defined
    pair.board.receive(bytes(raw))
    assert pair.board.counts()["bad_pdus"] == 1 and "condition code 9" in pair.board.last_error


@pytest.mark.req("FIL-001", "FIL-006")
def test_a_pdu_that_cannot_begin_a_transaction_is_counted_and_makes_no_transfer(tmp_path):
    """A late ACK of a Finished sent before a restart, a Prompt, a class-1 segment whose metadata was lost, metadata
    from an entity that is not the peer: each counted as a bad PDU naming its transaction, none a transfer said and
    counted as failed "abandoned" for a file nobody sent; a file sent afterwards still arrives."""
    from spacepackets.cfdp import ChecksumType, ConditionCode, TransmissionMode
    from spacepackets.cfdp.conf import PduConfig
    from spacepackets.cfdp.pdu import AckPdu, DirectiveType, FileDataPdu, MetadataPdu, PromptPdu, TransactionStatus
    from spacepackets.cfdp.pdu.file_data import FileDataParams
    from spacepackets.cfdp.pdu.metadata import MetadataParams
    from spacepackets.cfdp.pdu.prompt import ResponseRequired
    from spacepackets.util import ByteFieldU16, ByteFieldU32

    def conf(seq: int, mode=TransmissionMode.ACKNOWLEDGED, source: int = 1) -> PduConfig:
        return PduConfig(ByteFieldU16(source), ByteFieldU16(2), ByteFieldU32(seq), mode)

    pair = Pair(tmp_path)
    stray = [
        AckPdu(conf(40), DirectiveType.FINISHED_PDU, ConditionCode.NO_ERROR, TransactionStatus.TERMINATED),
        PromptPdu(conf(41), ResponseRequired.NAK),
        FileDataPdu(conf(42, TransmissionMode.UNACKNOWLEDGED), FileDataParams(file_data=b"late", offset=0)),
        MetadataPdu(conf(43, source=9), MetadataParams(True, ChecksumType.CRC_32, 4, "uplink/x", "staging/x")),
    ]
    for pdu in stray:
        pair.board.receive(bytes(pdu.pack()))
    assert pair.board.counts()["bad_pdus"] == len(stray)
    assert "transaction 9-43: from entity 9" in pair.board.last_error
    pair.clock.t += 1.0
    pair.board.pull(10_000)  # a tick: where a transfer had been made, it failed here
    assert pair.board.list() == [] and pair.board.counts()["failed"] == 0
    assert not [entry for entry in pair.log if entry[0] == "b"]

    (tmp_path / "g/uplink/m.bin").write_bytes(b"model")
    pair.ground.put("uplink/m.bin", "staging/m.bin")
    pair.run(30)
    assert (tmp_path / "b/staging/m.bin").read_bytes() == b"model"


def conf_len(raw: bytearray) -> int:
    """Offset of an EOF's condition-code byte: after the header and the directive code."""
    ids = ((raw[3] >> 4) & 0x7) + 1
    seq = (raw[3] & 0x7) + 1
    return 4 + 2 * ids + seq + 1


@pytest.mark.req("FIL-006")
def test_a_name_with_a_final_newline_is_refused():
    with pytest.raises(NameRefused):
        check_name("staging/a.onnx\n", frozenset({"staging"}))


@pytest.mark.req("FIL-009")
def test_a_file_too_big_for_the_reserve_is_refused_from_its_metadata(tmp_path):
    pair = Pair(tmp_path)
    seen = []
    pair.board.admit_incoming = lambda size_bytes: seen.append(size_bytes) or (
        "too big" if size_bytes and size_bytes > 10_000 else None)
    (tmp_path / "g/uplink/big.onnx").write_bytes(b"b" * 20_000)
    t = pair.ground.put("uplink/big.onnx", "staging/big.onnx")
    pair.run(100)
    assert seen[:2] == [None, 20_000]
    assert pair.ground.find(t.id).state == "failed"
    assert not (tmp_path / "b/staging/big.onnx").exists()


@pytest.mark.req("FIL-009")
def test_automatic_downlink_takes_every_product_even_past_a_full_queue(files_rig):
    r = files_rig
    (r.area / "products").mkdir(parents=True, exist_ok=True)
    for i in range(70):  # more than the queue holds (64)
        (r.area / f"products/p{i:02d}.json").write_bytes(b"{}")
    assert r.rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
    for _ in range(10):
        r.rig.advance(1.5)
        r.run(20)
    assert len(list((r.root / "downlink/products").iterdir())) == 70


@pytest.mark.req("FIL-009")
def test_the_automatic_downlink_walks_its_directories_only_when_they_change(files_rig, monkeypatch):
    """An audit measured the walk of products/ at every housekeeping period: 9 ms for 1000 files, 52 ms
    for 5000, the same when nothing changed. A directory is walked again where its mtime changed (and at
    least every RELIST_S); a file that comes, even deep, is still sent within a period."""
    from flight.agent import files as files_module

    r = files_rig
    monkeypatch.setattr(files_module, "RACY_NS", 0)  # the directories were just made: trusted at once here
    deep = r.area / "products/deep"
    deep.mkdir(parents=True, exist_ok=True)
    for i in range(20):
        (r.area / f"products/p{i:02d}.json").write_bytes(b"{}")
    assert r.rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
    r.rig.advance(1.5)
    r.run(30)
    walked = []
    real = files_module.os.scandir
    monkeypatch.setattr(files_module.os, "scandir", lambda path: walked.append(path) or real(path))
    r.rig.advance(5.0)  # five housekeeping periods, nothing changed
    assert walked == []
    (deep / "new.json").write_bytes(b"{}")  # a job's product, one level down: deep's mtime moves
    r.rig.advance(1.5)
    r.run(30)
    assert walked and (r.root / "downlink/products/deep/new.json").exists()
    assert len(list((r.root / "downlink/products").glob("p*.json"))) == 20
    # A file put in with its directory's mtime set back (rsync -a, tar x, touch -d): its ctime moves all the same
    before = os.stat(r.area / "products")
    (r.area / "products/restored.json").write_bytes(b"{}")
    os.utime(r.area / "products", ns=(before.st_atime_ns, before.st_mtime_ns))
    r.rig.advance(1.5)
    r.run(30)
    assert (r.root / "downlink/products/restored.json").exists()


@pytest.mark.req("FIL-009")
def test_files_sent_by_themselves_cost_a_state_save_a_look_and_their_confirmations_one_a_period(tmp_path,
                                                                                                monkeypatch):
    """An audit: each product sent by the automatic downlink wrote the transfer state (fsync'd) four times and
    the list of files the ground has once (7 ms at 1024 entries); the first look at a full products/ held the
    loop for 136 fsyncs. The look saves once; the list is saved once a housekeeping period, and as the agent
    stops."""
    import flight.agent.files as files_module
    import flight.files.entity as entity_module

    r = GroundFilesRig(tmp_path)
    try:
        (r.area / "products").mkdir(parents=True, exist_ok=True)
        for i in range(30):
            (r.area / f"products/p{i:02d}.json").write_bytes(b"{}")
        written = []
        for module in (files_module, entity_module):
            real = module.write_checked_json
            monkeypatch.setattr(module, "write_checked_json",
                                lambda path, body, _real=real: written.append(Path(path).name) or _real(path, body))
        assert r.rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
        r.rig.advance(1.0)  # one look queues all 30 (a save), and the first starts (its number's block, its start)
        assert written.count("files.json") <= 3, written
        written.clear()
        r.run(30)
        assert len(list((r.root / "downlink/products").iterdir())) == 30
        delivered = r.rig.agent.files._delivered_path  # noqa: SLF001
        assert written.count("files_delivered.json") <= 4  # a few housekeeping periods, not 30 files
        assert written.count("files.json") <= 2 * 30 + 1  # each file's start and end, no save per number
    finally:
        r.rig.advance(0.1)
        r.rig.close()  # a clean stop writes what the last period confirmed
    from flight.storage import read_checked_json

    assert len(read_checked_json(delivered)) == 30


@pytest.mark.req("FIL-009")
@pytest.mark.parametrize("root", [".", "./", "area"])
def test_the_automatic_downlink_names_files_by_their_top_whatever_the_root_is_written_as(tmp_path, monkeypatch,
                                                                                        root):
    """Found in review: a compute directory given as "." lost the first letter of every name
    ("oducts/job1.json"), and the automatic downlink refused them all."""
    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state") as rig:
        files = rig.agent.files
        (files.root / "products/deep").mkdir(parents=True, exist_ok=True)
        (files.root / "products/job1.json").write_bytes(b"{}")
        (files.root / "products/deep/job2.json").write_bytes(b"{}")
        monkeypatch.chdir(files.root if root != "area" else files.root.parent)
        files.root = Path(root if root != "area" else files.root.name)
        assert files._names_under("products") == ["products/deep/job2.json", "products/job1.json"]  # noqa: SLF001


@pytest.mark.req("FIL-009")
def test_a_file_the_automatic_downlink_cannot_send_is_said_once_and_the_rest_still_go(files_rig):
    """A product whose name the file rules refuse was once taken for a full queue: every file after
    it, that look and every later one, never went, and nothing said why."""
    r = files_rig
    (r.area / "products/deep/er").mkdir(parents=True, exist_ok=True)
    (r.area / "products/a.json").write_bytes(b"{}")
    (r.area / ("products/" + "b" * 129 + ".json")).write_bytes(b"{}")  # past the 128 a name's part may have
    (r.area / "products/deep/er/c.json").write_bytes(b"{}")  # deeper than the ground files
    (r.area / "products/z.json").write_bytes(b"{}")
    assert r.rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
    for _ in range(4):
        r.rig.advance(1.5)
        r.run(20)
    assert sorted(p.name for p in (r.root / "downlink/products").iterdir() if p.is_file()) == ["a.json", "z.json"]
    said = [e.args for e in r.rig.events("FILE_FAILED")]
    assert len(said) == 2 and all(a["transfer"] == "-" and "not sent by itself" in a["reason"] for a in said), said
    assert any("b" * 129 in a["name"] and "component" in a["reason"] for a in said), said
    assert any(a["name"] == "products/deep/er/c.json" and "levels deep" in a["reason"] for a in said), said
    assert r.rig.hk()["files_failed"] == 2


@pytest.mark.req("FIL-001", "SEC-006")
def test_a_put_to_a_top_directory_itself_is_refused_on_both_sides(files_rig):
    """`file put small.txt data` once made the board's data/ a 3-byte file, and every later upload under
    data/ failed (an audit)."""
    from ground.files import FileError, check_remote

    r = files_rig
    for top in ("data", "staging", "incoming"):
        with pytest.raises(FileError, match=f"'{top}' is a directory; name a file under it"):
            check_remote(top, "up")
    (r.root / "uplink").mkdir(parents=True, exist_ok=True)
    (r.root / "uplink/small.bin").write_bytes(b"abc")
    (r.area / "data").mkdir(parents=True, exist_ok=True)
    t = r.entity.put("uplink/small.bin", "data")  # past the ground's check, as another ground could send it
    r.run(30)
    assert r.entity.find(t.id).state == "failed" and (r.area / "data").is_dir()
    assert any("'data' is a directory" in e.args["reason"] for e in r.rig.events("FILE_FAILED"))


@pytest.mark.req("FIL-007")
def test_a_name_too_deep_for_the_ground_is_refused_at_once(files_rig):
    res = files_rig.rig.send("FILE_DOWNLINK", name="products/a/b/c.npz")
    assert not res.completed and "levels deep" in res.outcome


@pytest.mark.req("FIL-009", "FIL-007")
def test_what_the_automatic_downlink_delivered_is_remembered_while_it_is_there_and_a_name_freed_is_new(tmp_path):
    """Found in audit: a checkpoint or log the ground had (never deleted by the clean-up) left the delivered list
    once file_keep_done_s passed, so every restart sent it again and a rewrite of it went unseen; a name freed by
    FILE_DELETE stayed known, so a new file of it was never sent by itself; FILE_DELETE of the worker's live log
    completed, and the worker wrote on into the unlinked file; a class-1 FILE_DOWNLINK kept the automatic
    downlink from ever sending the file acknowledged."""
    files = GroundFilesRig(tmp_path)
    rig = files.rig
    try:
        assert rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
        assert rig.send("SET_PARAM", name="file_keep_done_s", value="60").completed
        ck = files.area / "checkpoints" / "job00007.ck"
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"v1" * 500)
        rig.advance(2)
        files.run(60)
        assert [e.args["name"] for e in rig.events("FILE_SENT")] == ["checkpoints/job00007.ck"]
        rig.advance(120)  # past file_keep_done_s: the checkpoint is not the clean-up's to delete
        assert "checkpoints/job00007.ck" in rig.agent.files._delivered  # noqa: SLF001 - so no restart sends it again
        assert rig.send("NOOP").completed  # contact again: the file link resumes
        manager = rig.agent.files
        product = files.area / "products" / "job00001-scene.json"
        product.parent.mkdir(parents=True, exist_ok=True)
        product.write_bytes(b'{"v": 1}')
        rig.advance(2)
        files.run(60)
        deleted = rig.send("FILE_DELETE", name="products/job00001-scene.json")
        assert deleted.completed, deleted.failure
        product.write_bytes(b'{"v": 2}')  # the name given again
        rig.advance(2)
        files.run(60)
        assert (files.root / "downlink/products/job00001-scene.json").read_bytes() == b'{"v": 2}'
        from flight.agent.compute import WORKER_LOG

        live = files.area / WORKER_LOG
        live.parent.mkdir(exist_ok=True)
        live.write_bytes(b"line\n")
        refused = rig.send("FILE_DELETE", name=WORKER_LOG)
        assert refused.failure.code is FailureCode.BUSY and live.exists()
        other = files.area / "products" / "job00002-scene.json"
        other.write_bytes(b'{"w": 1}')
        assert rig.send("FILE_DOWNLINK", name="products/job00002-scene.json", cfdp_class=1).completed
        assert "products/job00002-scene.json" not in manager._known  # noqa: SLF001 - still sent acknowledged
    finally:
        rig.close()


@pytest.mark.req("FIL-006", "SEC-006")
def test_a_top_directory_that_is_a_link_within_the_file_area_is_not_followed(tmp_path):
    """Found in audit: a top that is itself a link to elsewhere in the file area (logs -> ., products -> models) was
    followed: FILE_LIST listed the model store and jobs.json, FILE_DELETE deleted them, the automatic downlink sent
    the models. A link under a top to the same places was refused already."""
    files = GroundFilesRig(tmp_path)
    rig, area = files.rig, files.area
    try:
        (area / "models").mkdir(parents=True, exist_ok=True)
        (area / "models" / "manifest.json").write_bytes(b'{"active": 1}')
        (area / "jobs.json").write_bytes(b"{}")
        for top in ("logs", "products"):
            if (area / top).exists():
                os.rmdir(area / top)
        os.symlink(".", area / "logs")
        os.symlink("models", area / "products")
        for command, args in (("FILE_LIST", {"directory": "logs"}), ("FILE_LIST", {"directory": "products"}),
                              ("FILE_DELETE", {"name": "logs/jobs.json"}),
                              ("FILE_DELETE", {"name": "products/manifest.json"})):
            refused = rig.send(command, **args)
            assert refused.failure.code is FailureCode.BAD_ARGUMENTS, (command, args)
            assert "is not the file area's own directory (a link)" in refused.failure.reason
        assert (area / "jobs.json").exists() and (area / "models" / "manifest.json").exists()
        assert rig.send("SET_PARAM", name="file_auto_downlink", value="true").completed
        rig.advance(2)
        files.run(30)
        assert not rig.events("FILE_SENT")
    finally:
        rig.close()


# --- stored sequences sent up, inputs made on board ---------------------------------------------

GOOD_SEQUENCE = b'name = "pass1"\n[[step]]\ncommand = "NOOP"\n[[step]]\nwait_s = 100\n'
BAD_SEQUENCE = b'name = "pass1"\n[[step]]\ncommand = "NOOP"\n[[step]]\ncommand = "SET_MODE"\nargs = { mode = "WARP" }\n'


def _put_sequence(r: GroundFilesRig, data: bytes, dest: str):
    local = f"uplink/{dest.rsplit('/', 1)[-1]}"
    (r.root / local).write_bytes(data)
    t = r.entity.put(local, dest)
    r.run(30)
    return r.entity.find(t.id)


@pytest.mark.req("FIL-011", "AGT-081")
def test_a_sequence_sent_up_lands_checked_where_sequence_start_finds_it_and_a_bad_one_never_replaces_it(files_rig):
    """Found in review: the file transfer wrote only under staging/, incoming/ and data/, so a sequence could not be
    put on a board in orbit. A file sent up as sequences/NAME.toml lands in the state directory's sequences/
    (atomically, as every file), checked as SEQUENCE_START checks it and said (SEQUENCE_STORED); one that fails the
    checks, is over 64 KiB or is not named as a sequence is refused, and the file there before is kept."""
    r = files_rig
    sequences = r.rig.config.state_dir / "sequences"
    assert _put_sequence(r, GOOD_SEQUENCE, "sequences/pass1.toml").state == "done"
    assert (sequences / "pass1.toml").read_bytes() == GOOD_SEQUENCE
    assert not (r.area / "sequences").exists()  # the state directory's, not the file area's
    stored = r.rig.events("SEQUENCE_STORED")[-1].args
    assert stored["name"] == "sequences/pass1.toml" and stored["ok"] is True and "2 steps" in stored["reason"]
    listing = r.rig.send("FILE_LIST", directory="sequences")
    assert listing.completed and listing.result["entries"][0][:2] == ["pass1.toml", len(GOOD_SEQUENCE)]

    assert _put_sequence(r, BAD_SEQUENCE, "sequences/pass1.toml").state == "failed"
    stored = r.rig.events("SEQUENCE_STORED")[-1].args
    assert stored["ok"] is False and "sequences/pass1.toml: step[1].args.mode" in stored["reason"], stored
    assert "WARP" in stored["reason"] and stored["reason"].startswith("not stored: ")
    assert (sequences / "pass1.toml").read_bytes() == GOOD_SEQUENCE  # the good one stays
    assert sorted(p.name for p in sequences.iterdir()) == ["pass1.toml"]  # nothing half-written beside it

    oversize = b'name = "big"\n' + b"#" * 70_000 + b'\n[[step]]\ncommand = "NOOP"\n'
    assert _put_sequence(r, oversize, "sequences/big.toml").state == "failed"
    stored = r.rig.events("SEQUENCE_STORED")[-1].args
    assert stored["name"] == "sequences/big.toml" and stored["ok"] is False
    assert f"is {len(oversize)} bytes; a sequence file is at most 65536 bytes (64 KiB)" in stored["reason"]
    assert not list((r.area / ".partial").glob("*.part"))  # none of it kept
    for dest in ("sequences/pass1.txt", "sequences/sub/pass1.toml"):
        assert _put_sequence(r, GOOD_SEQUENCE, dest).state == "failed"
        assert "a sequence goes up as sequences/NAME.toml" in r.rig.events("FILE_FAILED")[-1].args["reason"]
    assert sorted(p.name for p in sequences.iterdir()) == ["pass1.toml"]

    assert r.rig.send("FILE_DOWNLINK", name="sequences/pass1.toml").completed  # what the board holds, fetched
    r.run(30)
    assert (r.root / "downlink/sequences/pass1.toml").read_bytes() == GOOD_SEQUENCE
    started = r.rig.send("SEQUENCE_START", name="pass1")
    assert started.completed and started.result["steps"] == 2
    assert r.rig.send("SEQUENCE_ABORT").completed
    assert r.rig.send("FILE_DELETE", name="sequences/pass1.toml").completed
    assert not (sequences / "pass1.toml").exists()


@pytest.mark.req("FIL-011", "FIL-007", "AGT-081")
def test_the_running_sequence_s_file_is_neither_replaced_by_an_upload_nor_deleted(files_rig):
    """A run resumes after a restart only from the very file it started from (its digest): while it runs, an upload
    of its name is refused and FILE_DELETE of it is BUSY, each naming SEQUENCE_ABORT; once it has ended, both go."""
    r = files_rig
    sequences = r.rig.config.state_dir / "sequences"
    sequences.mkdir()
    (sequences / "pass1.toml").write_bytes(GOOD_SEQUENCE)
    assert r.rig.send("SEQUENCE_START", name="pass1").completed
    newer = GOOD_SEQUENCE.replace(b"wait_s = 100", b"wait_s = 5")
    assert _put_sequence(r, newer, "sequences/pass1.toml").state == "failed"
    stored = r.rig.events("SEQUENCE_STORED")[-1].args
    assert not stored["ok"] and "the file of the running sequence pass1 (at step 1)" in stored["reason"], stored
    assert "SEQUENCE_ABORT" in stored["reason"]
    deleted = r.rig.send("FILE_DELETE", name="sequences/pass1.toml")
    assert deleted.failure.code is FailureCode.BUSY and "SEQUENCE_ABORT" in deleted.failure.reason
    assert (sequences / "pass1.toml").read_bytes() == GOOD_SEQUENCE
    assert r.rig.hk()["sequence_running"] == "pass1"

    assert r.rig.send("SEQUENCE_ABORT").completed
    assert _put_sequence(r, newer, "sequences/pass1.toml").state == "done"
    assert (sequences / "pass1.toml").read_bytes() == newer and r.rig.events("SEQUENCE_STORED")[-1].args["ok"]
    assert r.rig.send("FILE_DELETE", name="sequences/pass1.toml").completed


@pytest.mark.req("FIL-009")
def test_inputs_made_on_board_are_deleted_file_keep_done_s_after_a_job_took_them_and_past_their_bound(files_rig,
                                                                                                    monkeypatch):
    """Found in review: incoming/done/ was cleaned only of the inputs the ground sent; those made on board (a
    camera's, the harness's capture-NNNNNN.npy) stayed for good, so done/ grew without bound. Each is now deleted
    file_keep_done_s after a job took it, and the oldest taken at once past the bound (files or bytes); never one a
    transfer sends, never by this rule one the ground sent (the list of files it has cleans those); each said and
    counted."""
    from flight.agent import files as agent_files

    r = files_rig
    monkeypatch.setattr(agent_files, "DONE_KEEP", 4)
    assert r.rig.send("SET_PARAM", name="file_keep_done_s", value="3600").completed
    done = r.area / "incoming" / "done"
    done.mkdir(parents=True)
    (r.root / "uplink/up.npy").write_bytes(b"u" * 1000)
    r.entity.put("uplink/up.npy", "incoming/up.npy")  # sent by the ground
    r.run(30)
    os.replace(r.area / "incoming/up.npy", done / "up.npy")  # taken, as a continuous job moves it

    def made(*ks: int, size: int = 100) -> None:  # taken by a job, as the worker moves a camera's file
        for k in ks:
            (done / f"capture-{k:06d}.npy").write_bytes(b"c" * size)

    def captures_deleted() -> list[dict]:
        return [e.args for e in r.rig.events("FILE_DELETED") if "capture-" in e.args["name"]]

    made(0, 1, 2)
    r.rig.advance(2)
    r.rig.clock.advance(100)
    made(3, 4)
    assert r.rig.send("FILE_DOWNLINK", name="incoming/done/capture-000000.npy").completed  # wanted: kept meanwhile
    r.rig.advance(2)
    deleted = captures_deleted()
    assert [d["name"] for d in deleted] == ["incoming/done/capture-000001.npy"]  # 5 made on board, 4 kept
    assert "over 4 files" in deleted[0]["reason"] and "the oldest taken goes first" in deleted[0]["reason"]
    assert (done / "up.npy").exists() and r.rig.hk()["inputs_removed"] == 1

    r.rig.clock.advance(3600 - 140)
    r.rig.advance(2)
    assert len(captures_deleted()) == 1  # not yet kept file_keep_done_s
    r.rig.clock.advance(60)
    r.rig.advance(2)
    deleted = captures_deleted()
    assert [d["name"] for d in deleted[1:]] == ["incoming/done/capture-000002.npy"]
    assert "taken by a job" in deleted[1]["reason"] and "(file_keep_done_s)" in deleted[1]["reason"]
    up = [e.args for e in r.rig.events("FILE_DELETED") if e.args["name"] == "incoming/done/up.npy"]
    assert len(up) == 1 and "the ground confirmed it" in up[0]["reason"]  # its own rule, from when it came up
    assert sorted(p.name for p in done.iterdir()) == ["capture-000000.npy", "capture-000003.npy",
                                                      "capture-000004.npy"]

    monkeypatch.setattr(agent_files, "DONE_KEEP_BYTES", 350)
    made(5, size=200)  # 500 bytes made on board (000000's kept for its downlink): the oldest go until 350 are left
    r.rig.advance(2)
    assert [d["name"] for d in captures_deleted()[2:]] == ["incoming/done/capture-000003.npy",
                                                         "incoming/done/capture-000004.npy"]
    assert "or 0 MiB of them are kept" in captures_deleted()[-1]["reason"]
    r.rig.clock.advance(3600)
    r.rig.advance(2)
    assert sorted(p.name for p in done.iterdir()) == ["capture-000000.npy"]  # its downlink waits for the ground
    assert r.rig.hk()["inputs_removed"] == 5 and r.rig.hk()["files_failed"] == 0


@pytest.mark.req("FIL-006", "FIL-011", "SEC-006")
def test_sequences_are_confined_to_the_state_directory_s_sequences_as_the_file_area_s_tops_are(files_rig, tmp_path):
    """sequences/ is another directory than the file area (the state directory's): names there are confined there
    alike. A link in it leading out, or sequences/ itself a link, is neither listed, deleted through, sent from nor
    written through, and nothing outside changes."""
    r = files_rig
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.toml").write_bytes(GOOD_SEQUENCE)
    sequences = r.rig.config.state_dir / "sequences"
    sequences.mkdir()
    os.symlink(outside / "evil.toml", sequences / "evil.toml")
    for command, args in (("FILE_DELETE", {"name": "sequences/evil.toml"}),
                          ("FILE_DOWNLINK", {"name": "sequences/evil.toml"})):
        refused = r.rig.send(command, **args)
        assert refused.failure.code is FailureCode.BAD_ARGUMENTS and "leads outside" in refused.failure.reason
    assert _put_sequence(r, BAD_SEQUENCE.replace(b"pass1", b"evil"), "sequences/evil.toml").state == "failed"
    assert (outside / "evil.toml").read_bytes() == GOOD_SEQUENCE
    os.unlink(sequences / "evil.toml")
    os.rmdir(sequences)
    os.symlink(outside, sequences)
    for command, args in (("FILE_LIST", {"directory": "sequences"}), ("FILE_DELETE", {"name": "sequences/evil.toml"})):
        refused = r.rig.send(command, **args)
        assert refused.failure.code is FailureCode.BAD_ARGUMENTS and "(a link)" in refused.failure.reason
    assert _put_sequence(r, GOOD_SEQUENCE.replace(b"pass1", b"new"), "sequences/new.toml").state == "failed"
    assert sorted(p.name for p in outside.iterdir()) == ["evil.toml"]
    assert (outside / "evil.toml").read_bytes() == GOOD_SEQUENCE
