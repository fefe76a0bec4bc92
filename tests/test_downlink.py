"""The downlink (flight/agent/downlink.py) in a whole agent: packets sent while nobody listened
come down in playback once the ground acknowledges, live housekeeping can be decimated, the
store commands do what they say, and a broken store or acknowledgement costs nothing else."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from flight.agent.tm_store import BackgroundSync, StoreClass, sync_in_thread
from flight.config import ConfigError, parse_config
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import AckRun, Codec, PlaybackRecord
from flight.link.packets import PacketError, Service, Telemetry, unpack
from tests.inproc import InProcessAgent

Key = tuple[int, int, int]  # apid, sequence count, time in ms


def key(tm: Telemetry) -> Key:
    return (tm.apid, tm.seq_count, int(round(tm.time_s * 1000)))


class Ground:
    """The ground end as the test sees it: what arrives live and in playback, and its acks."""

    def __init__(self, rig: InProcessAgent):
        self.rig = rig
        self.codec = Codec(DICTIONARY, Apid.AGENT)
        self.live: dict[Key, Telemetry] = {}
        self.played: dict[Key, Telemetry] = {}
        self.containers = 0
        self.unacked: list[Telemetry] = []
        self.listening = False

    def take(self, raw: bytes) -> None:
        tm = unpack(raw)
        assert isinstance(tm, Telemetry)
        if tm.service == Service.STORAGE:
            self.containers += 1
            record = self.codec.decode_tm(tm)
            assert isinstance(record, PlaybackRecord)
            for inner in record.packets:
                itm = unpack(inner)
                self.played[key(itm)] = itm
                self.unacked.append(itm)
            return
        self.live[key(tm)] = tm
        self.unacked.append(tm)

    def step(self, seconds: float = 1.0, lose: bool = False) -> list[bytes]:
        """Time moves on; the agent runs; the ground takes (or, in an outage, loses) what came."""
        self.rig.clock.advance(seconds)
        self.rig.agent.step(0)
        got = self.rig.link.ground.receive()
        if not lose:
            for raw in got:
                self.take(raw)
            if self.listening:
                runs = [AckRun(tm.apid, tm.seq_count, tm.seq_count, *(2 * (int(round(tm.time_s * 1000)),)))
                        for tm in self.unacked[:512]]
                del self.unacked[:512]
                self.rig.link.ground.send(self.codec.encode_store_ack(runs))
                self.rig.agent.step(0)
                for raw in self.rig.link.ground.receive():
                    self.take(raw)
        return got

    def hk(self) -> dict:
        values = {}
        for tm in sorted(self.live.values(), key=lambda t: t.time_s):
            rec = self.codec.decode_tm(tm)
            if getattr(rec, "values", None) is not None and tm.service == Service.HOUSEKEEPING:
                values.update(rec.values)
        return values


def tm_is_event(record, name: str) -> bool:
    return getattr(getattr(record, "event", None), "name", None) == name


@pytest.fixture
def rig(tmp_path):
    agent = InProcessAgent(tmp_path)
    yield agent
    agent.close()


@pytest.mark.req("AGT-093")
def test_what_was_lost_while_nobody_listened_comes_down_in_playback_once_the_ground_acknowledges(rig):
    ground = Ground(rig)
    for _ in range(3):
        ground.step()
    lost = [unpack(raw) for _ in range(20) for raw in ground.step(lose=True)]  # a 20-s outage
    assert len(lost) >= 20 * 4  # housekeeping and more went nowhere
    assert not ground.played  # nobody acknowledged: nothing is played back
    ground.listening = True
    for _ in range(30):
        ground.step()
    assert {key(tm) for tm in lost} <= set(ground.played)
    assert ground.containers > 0
    events = {ground.codec.decode_tm(tm).event.name for tm in ground.live.values() if tm.service == Service.EVENT}
    assert {"PLAYBACK_STARTED", "PLAYBACK_DONE"} <= events
    hk = ground.hk()
    assert hk["playback_sent"] >= len(lost)
    assert hk["store_records"] < 20  # the rest acknowledged and freed
    assert hk["ground_ack_age_s"] is not None


@pytest.mark.req("AGT-093")
def test_playback_sends_reports_and_events_before_housekeeping(rig):
    ground = Ground(rig)
    rig.client.submit("PING", {"token": 1}, retries=0)  # its reports and event go nowhere
    lost = [unpack(raw) for _ in range(10) for raw in ground.step(lose=True)]
    order: list[int] = []
    original = ground.take

    def take(raw: bytes) -> None:
        tm = unpack(raw)
        if tm.service == Service.STORAGE:
            order.extend(unpack(p).service for p in ground.codec.decode_tm(tm).packets)
        original(raw)

    ground.take = take
    ground.listening = True
    for _ in range(6):  # what went out in the silence goes again 3 s into the pass (playback_grace_s)
        ground.step()
    stored_services = {tm.service for tm in lost}
    assert {Service.EVENT, Service.HOUSEKEEPING} <= stored_services
    rank = [0 if s in (Service.VERIFICATION, Service.EVENT) else 2 if s == Service.HOUSEKEEPING else 1 for s in order]
    assert rank == sorted(rank)  # reports and events, then the rest, then housekeeping
    assert rank[0] == 0 and rank[-1] == 2


@pytest.mark.req("AGT-094")
def test_housekeeping_goes_live_decimated_and_the_rest_comes_in_playback(rig):
    ground = Ground(rig)
    assert rig.send("SET_PARAM", name="hk_live_every", value="5").completed
    ground.live.clear()
    for _ in range(20):
        ground.step()
    agent_hk = [tm for tm in ground.live.values() if tm.service == Service.HOUSEKEEPING
                and ground.codec.decode_tm(tm).packet.sid == 1]
    assert 3 <= len(agent_hk) <= 5  # one in five of 20
    assert ground.hk()["live_deferred"] >= 4 * 12  # four of five of each of the packets
    ground.listening = True
    for _ in range(10):
        ground.step()
    played_hk = [tm for tm in ground.played.values() if tm.service == Service.HOUSEKEEPING]
    assert len(played_hk) >= 4 * 12
    done = [tm for tm in ground.live.values() if tm.service == Service.EVENT
            and ground.codec.decode_tm(tm).event.name == "PLAYBACK_DONE"]
    assert len(done) == 1  # once a pass, however often the decimated housekeeping refills the store


@pytest.mark.req("AGT-095")
def test_store_disable_and_enable_are_kept_across_a_restart(tmp_path):
    rig = InProcessAgent(tmp_path)
    try:
        result = rig.send("STORE_DISABLE", store="HK")
        assert result.completed and result.result["enabled"] == "REPORTS,OTHER"
        store = rig.agent.downlink.store
        hk_before, before = sum(seg.unacked for seg in store.segments[StoreClass.HK]), store.stats.records
        rig.advance(5)
        assert rig.send("NOOP").completed
        assert sum(seg.unacked for seg in store.segments[StoreClass.HK]) == hk_before
        assert store.stats.records > before  # reports and events still kept
    finally:
        rig.close()
    again = InProcessAgent(tmp_path)
    try:
        assert again.hk()["store_enabled"] == "REPORTS,OTHER"
        assert again.send("STORE_ENABLE", store="ALL").result["enabled"] == "REPORTS,OTHER,HK"
        assert [e.args["enabled"] for e in again.events("STORE_CHANGED")] == ["REPORTS,OTHER,HK"]
    finally:
        again.close()


@pytest.mark.req("AGT-095")
def test_store_dump_completes_only_when_its_packets_are_on_the_link(rig):
    ground = Ground(rig)
    for _ in range(5):
        ground.step()
    t_from, t_to = rig.clock.now_s() - 4.0, rig.clock.now_s() - 1.0
    result = rig.client.submit("STORE_DUMP", {"from_unix_s": t_from, "to_unix_s": t_to}, retries=0)
    for _ in range(3):
        ground.step()
        rig.client.poll(0)
    assert not result.completed  # nobody listens: nothing of the dump has gone
    second = rig.send("STORE_DUMP", from_unix_s=t_from, to_unix_s=t_to)
    assert second.failed and "one at a time" in second.failure.reason
    ground.listening = True
    for _ in range(3):
        ground.step()
    # The client sees reports only through its own link reads; give it the stream again.
    done = [tm for tm in ground.live.values() if tm.service == Service.VERIFICATION
            and ground.codec.decode_tm(tm).cmd_id == result.cmd_id and ground.codec.decode_tm(tm).stage.value == "completed"]
    assert done and done[0].subtype == 7
    outcome = ground.codec.decode_tm(done[0]).result
    dumped = [tm for tm in ground.played.values() if t_from * 1000 <= key(tm)[2] <= t_to * 1000]
    assert outcome["packets"] >= len({k for k in ground.played if t_from * 1000 <= k[2] <= t_to * 1000}) > 0
    assert dumped


@pytest.mark.req("AGT-016")
def test_a_store_dump_completed_by_playback_has_its_journal_record_on_disk_before_its_report(rig, monkeypatch):
    store, journal = rig.agent.downlink.store, rig.agent.dispatcher.journal
    journal_unsynced_at_store_sync = []

    def noting(real):  # the store's sync in the loop, or its hand-over to the thread (it starts after)
        def start(*args, **kwargs):
            journal_unsynced_at_store_sync.append(journal._unsynced)
            return real(*args, **kwargs)
        return start

    monkeypatch.setattr(store, "sync", noting(store.sync))
    monkeypatch.setattr(store, "take_dirty", noting(store.take_dirty))
    ground = Ground(rig)
    for _ in range(5):
        ground.step()
    result = rig.client.submit("STORE_DUMP", {"from_unix_s": rig.clock.now_s() - 4.0,
                                              "to_unix_s": rig.clock.now_s() - 1.0}, retries=0)
    ground.listening = True
    for _ in range(3):
        ground.step()
    assert result.cmd_id in {ground.codec.decode_tm(tm).cmd_id for tm in ground.live.values()
                             if tm.service == Service.VERIFICATION and tm.subtype == 7}  # completed in playback
    assert journal_unsynced_at_store_sync and not any(journal_unsynced_at_store_sync)


@pytest.mark.req("AGT-096")
@pytest.mark.parametrize("fsync", ["loop", "thread"])
def test_a_failing_fsync_is_counted_and_said_once_until_one_works_again(tmp_path, monkeypatch, fsync):
    rig = InProcessAgent(tmp_path, store_fsync=fsync)
    try:
        downlink = rig.agent.downlink
        syncer = downlink.syncer
        assert (syncer is not None) == (fsync == "thread")

        def refuse(*args) -> None:  # an eMMC that fails its flushes (EIO)
            raise OSError(5, "Input/output error")

        def refusing(on: bool) -> None:
            if syncer is not None:
                monkeypatch.setattr(syncer, "_fsync", refuse if on else os.fsync)
            elif on:
                monkeypatch.setattr(downlink.store, "sync", refuse)
            else:
                monkeypatch.undo()

        def send(token: int) -> None:
            assert rig.send("PING", token=token).completed
            assert syncer is None or syncer.drain(10.0)  # its fsync has run: the next turn takes its outcome

        refusing(True)
        for token in range(5):  # each turn stores reports and fails to sync them
            send(token)
        rig.pump()  # a turn takes the outcome, and the ground reads what it said
        assert len(rig.events("STORE_ERROR")) == 1 and "fsync" in rig.events("STORE_ERROR")[0].args["reason"]
        assert downlink.store_errors >= 5
        refusing(False)
        send(10)  # it works again ...
        rig.pump()
        refusing(True)
        send(11)  # ... so the next failure is said again
        rig.pump()
        assert len(rig.events("STORE_ERROR")) == 2
    finally:
        rig.close()


def test_where_the_store_syncs_is_configured_and_auto_decides_by_the_cpus():
    assert [sync_in_thread("auto", cpus) for cpus in (1, 2, 3, 4, 12)] == [False, False, False, True, True]
    assert sync_in_thread("thread", 1) and not sync_in_thread("loop", 64)
    with pytest.raises(ValueError, match="'fast' is not one of auto, thread, loop"):
        sync_in_thread("fast")
    assert parse_config({}).store_fsync == "auto" and parse_config({"store": {"fsync": "thread"}}).store_fsync == "thread"
    with pytest.raises(ConfigError, match="store.fsync"):
        parse_config({"store": {"fsync": "fast"}})


@pytest.mark.req("AGT-096")
def test_the_loop_never_waits_for_the_stores_fsync_and_every_report_is_synced_after(tmp_path, monkeypatch):
    """``[store] fsync = "thread"``. A disk that takes its time over a flush (an eMMC's fsync can
    take tens of ms): commands go on being taken and completed while it lasts, and what they
    stored is synced once it ends, and at the latest when the agent closes."""
    rig = InProcessAgent(tmp_path, store_fsync="thread")
    try:
        _loop_goes_on_while_the_disk_flushes(rig, monkeypatch)
    finally:
        rig.close()
    assert not rig.agent.downlink.syncer._thread.is_alive()  # closed with the agent


def _loop_goes_on_while_the_disk_flushes(rig, monkeypatch) -> None:
    downlink, store = rig.agent.downlink, rig.agent.downlink.store
    started, release, synced = threading.Event(), threading.Event(), []

    def slow_fsync(fd: int) -> None:
        started.set()
        assert release.wait(30.0)
        os.fsync(fd)
        synced.append((os.fstat(fd).st_ino, os.fstat(fd).st_size))

    monkeypatch.setattr(downlink.syncer, "_fsync", slow_fsync)
    assert rig.send("PING", token=1).completed
    assert started.wait(10.0)  # the store's fsync is under way, and stuck
    for token in range(2, 40):
        assert rig.send("PING", token=token).completed  # the loop takes and completes commands meanwhile
    # One batch at a time: what the commands stored meanwhile waits, dirty, not a descriptor each.
    assert not synced and StoreClass.REPORTS in store.dirty and not downlink.syncer.idle
    release.set()
    assert downlink.syncer.drain(10.0)
    rig.pump()  # the next turn hands over what waited
    assert downlink.syncer.drain(10.0)
    active = store.segments[StoreClass.REPORTS][-1].path
    size = os.stat(active).st_size
    assert (os.stat(active).st_ino, size) in synced  # the reports' segment, whole, once the disk answered


@pytest.mark.req("AGT-016")
def test_with_the_fsync_in_a_thread_no_report_is_written_ahead_of_its_journal_record(tmp_path, monkeypatch):
    """The thread's fsync may be under way while the loop writes: so every write to the store
    comes after the journal's sync of the commands that finished (their reports follow them)."""
    rig = InProcessAgent(tmp_path, store_fsync="thread")
    try:
        store, journal = rig.agent.downlink.store, rig.agent.dispatcher.journal
        real_append, unsynced_at_append = store.append, []

        def append(*args, **kwargs):
            unsynced_at_append.append(journal._unsynced)
            return real_append(*args, **kwargs)

        monkeypatch.setattr(store, "append", append)
        for value in ("3", "4"):  # journaled: started and finished records, and reports
            assert rig.send("SET_PARAM", name="fault_limit", value=value).completed
        assert unsynced_at_append and not any(unsynced_at_append)
    finally:
        rig.close()


def test_the_background_sync_syncs_what_it_is_handed_in_order_and_stops_cleanly(tmp_path):
    seen: list[int] = []

    def fsync(fd: int) -> None:
        seen.append(os.fstat(fd).st_size)
        if os.fstat(fd).st_size == 2:
            raise OSError(errno.EIO, "Input/output error")

    syncer = BackgroundSync(fsync=fsync)
    fds = []
    for size in (1, 2, 3):
        fd = os.open(tmp_path / f"f{size}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x" * size)
        fds.append(fd)
    assert syncer.idle and not syncer._thread.is_alive()  # no thread before the first batch
    syncer.submit(fds[:1])
    assert syncer.drain(10.0)
    syncer.submit(fds[1:])  # one batch: a refused fsync and one that works
    assert syncer.drain(10.0)
    outcomes = syncer.outcomes()
    assert seen == [1, 2, 3] and outcomes[0] is None and outcomes[1].errno == errno.EIO and len(outcomes) == 2
    assert syncer.outcomes() == [] and syncer.last_ms is not None
    for fd in fds:  # the thread closed every descriptor it was handed
        with pytest.raises(OSError):
            os.fstat(fd)
    assert syncer.close()
    assert not syncer._thread.is_alive()
    late = os.open(tmp_path / "late", os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(RuntimeError, match="closed"):
        syncer.submit([late])
    with pytest.raises(OSError):
        os.fstat(late)  # refused, and closed all the same: nothing leaks


def store_errors_said(ground: Ground) -> list[str]:
    return [r.args["reason"] for r in map(ground.codec.decode_tm, ground.live.values()) if tm_is_event(r, "STORE_ERROR")]


def outcome_of(ground: Ground, cmd_id: int):
    """The final report of ``cmd_id`` the ground has, live or played back (None: none yet)."""
    for tm in list(ground.live.values()) + list(ground.played.values()):
        if tm.service == Service.VERIFICATION:
            v = ground.codec.decode_tm(tm)
            if v.cmd_id == cmd_id and v.final:
                return v
    return None


def lose_then_listen(rig, seconds: int = 10) -> tuple[Ground, list[Telemetry]]:
    """An outage of ``seconds``, then a ground that listens: what was lost waits for playback."""
    ground = Ground(rig)
    for _ in range(3):
        ground.step()
    lost = [unpack(raw) for _ in range(seconds) for raw in ground.step(lose=True)]
    return ground, lost


def unreadable_record(monkeypatch, seg, i: int, errno_: int) -> None:
    """The blocks under record ``i`` of ``seg`` fail every read with ``errno_`` (the store reads a record with
    one pread on the segment's descriptor)."""
    import flight.agent.tm_store as tm_store_module

    real_pread, offset = tm_store_module.os.pread, seg.offsets[i]

    def pread(fd, n, pos):
        if pos < offset <= pos + n and os.readlink(f"/proc/self/fd/{fd}") == str(seg.path):
            raise OSError(errno_, os.strerror(errno_))
        return real_pread(fd, n, pos)

    monkeypatch.setattr(tm_store_module.os, "pread", pread)


def record_of(store, tm: Telemetry):
    return next((s, j) for segs in store.segments.values() for s in segs for j in range(len(s.ids))
                if (s.apids[j], s.seqs[j]) == (tm.apid, tm.seq_count))


@pytest.mark.req("AGT-096")
def test_a_playback_read_the_disk_refuses_is_counted_said_once_and_rests_before_the_next_try(rig, monkeypatch):
    store, downlink = rig.agent.downlink.store, rig.agent.downlink
    ground, lost = lose_then_listen(rig)
    real_read, tries = store.read, []

    def refuse(seg, i):  # out of file descriptors: it may pass
        tries.append(rig.clock.monotonic_s())
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(store, "read", refuse)
    ground.listening = True
    for _ in range(50):  # what went out unheard is played back a few seconds into the pass
        ground.step(0.1)
        if tries:
            break
    for _ in range(9):  # 0.9 s more of looks every 0.1 s: that one try, then the rest
        ground.step(0.1)
    assert len(tries) == 1 and downlink.store_errors == 1
    for _ in range(30):  # 3 s more: a try a second, the event said once, nothing lost, nothing raised
        ground.step(0.1)
    assert 3 <= len(tries) <= 5 and downlink.store_errors == len(tries) and not ground.played
    said = store_errors_said(ground)
    assert len(said) == 1 and "playback read" in said[0] and "Too many open files" in said[0]
    assert rig.agent.executive.internal_errors == 0
    monkeypatch.setattr(store, "read", real_read)
    for _ in range(30):  # the disk reads again
        ground.step()
    assert {key(tm) for tm in lost} <= set(ground.played)
    assert rig.agent.executive.internal_errors == 0


@pytest.mark.req("AGT-096")
@pytest.mark.parametrize("errno_", [errno.EIO, errno.EBADMSG, errno.EUCLEAN])  # the medium; ext4's checksums
def test_a_stored_record_the_disk_cannot_read_is_counted_corrupt_and_the_rest_comes_down(rig, monkeypatch, errno_):
    store = rig.agent.downlink.store
    ground, lost = lose_then_listen(rig)
    bad = next(tm for tm in lost if tm.service == Service.HOUSEKEEPING)  # the oldest: every other waits behind it
    unreadable_record(monkeypatch, *record_of(store, bad), errno_)
    ground.listening = True
    for _ in range(30):
        ground.step()
    monkeypatch.undo()
    assert key(bad) not in ground.played and {key(tm) for tm in lost} - {key(bad)} <= set(ground.played)
    assert store.stats.corrupt_records == 1 and rig.agent.executive.internal_errors == 0


@pytest.mark.req("AGT-095", "AGT-096")
def test_a_dump_counts_a_record_the_disk_cannot_read_once_and_waits_out_a_refusing_disk(rig, monkeypatch):
    store = rig.agent.downlink.store
    ground, lost = lose_then_listen(rig, 5)
    bad = lost[len(lost) // 2]
    unreadable_record(monkeypatch, *record_of(store, bad), errno.EIO)
    t_from, t_to = lost[0].time_s - 0.5, lost[-1].time_s + 0.5
    dump = rig.client.submit("STORE_DUMP", {"from_unix_s": t_from, "to_unix_s": t_to}, retries=0)
    ground.listening = True
    for _ in range(20):
        ground.step()
    done = outcome_of(ground, dump.cmd_id)
    assert done is not None and done.success and done.result["unreadable"] == 1 and done.result["gone"] == 0
    assert store.stats.corrupt_records == 1  # the routine playback after it does not read it again
    monkeypatch.undo()

    tries = []

    def refuse(seg, i):
        tries.append(1)
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(store, "read", refuse)
    waits = rig.client.submit("STORE_DUMP", {"from_unix_s": t_from, "to_unix_s": t_to}, retries=0)
    for _ in range(20):  # 2 s with a dump waiting: a try a second, not one a look
        ground.step(0.1)
    assert 1 <= len(tries) <= 3 and outcome_of(ground, waits.cmd_id) is None
    for _ in range(65):  # a minute of refusals: the dump fails, saying why; the records stay stored
        ground.step()
    failed = outcome_of(ground, waits.cmd_id)
    assert failed is not None and not failed.success and "Cannot allocate memory" in failed.reason
    assert len(tries) <= 70 and rig.agent.executive.internal_errors == 0


@pytest.mark.req("AGT-096")
def test_an_unreadable_record_whose_acknowledgement_fails_costs_no_internal_error(rig, monkeypatch):
    store = rig.agent.downlink.store
    ground, lost = lose_then_listen(rig)
    unreadable_record(monkeypatch, *record_of(store, lost[0]), errno.EIO)

    def refuse(ids):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "acknowledge_ids", refuse)
    ground.listening = True
    for _ in range(10):
        ground.step()
    assert rig.agent.executive.internal_errors == 0 and rig.agent.downlink.store_errors >= 1
    assert any("not acknowledged" in r for r in store_errors_said(ground))
    assert {key(tm) for tm in lost[1:]} <= set(ground.played)


@pytest.mark.req("AGT-092", "LNK-002")
def test_a_commands_reports_go_out_live_before_the_store_writes_them_and_all_are_written_in_order(rig, monkeypatch):
    """The reports of a command go live without waiting on the disk; once it is handled they
    are written, in the order they went, and nothing of the turn is left unwritten."""
    order: list[tuple[str, int, int]] = []
    link, store = rig.agent.downlink.link, rig.agent.downlink.store
    publish, append = link.publish, store.append
    monkeypatch.setattr(link, "publish", lambda packet: order.append(("live", packet[7], packet[8])) or publish(packet))

    def kept(packet, sent_at=None, *, tm=None):
        order.append(("kept", packet[7], packet[8]))
        return append(packet, sent_at, tm=tm)

    monkeypatch.setattr(store, "append", kept)
    assert rig.send("NOOP").completed
    reports = [(1, 1), (5, 1), (1, 7)]  # acceptance, COMMAND_DISPATCHED, completion
    assert order == [("live", *r) for r in reports] + [("kept", *r) for r in reports]
    assert rig.agent.downlink._held is None  # released: what comes next is written at once
    order.clear()
    rig.advance(1.0)  # housekeeping: not a command's, written as it goes
    assert order and [kind for kind, *_ in order[:2]] == ["live", "kept"]


@pytest.mark.req("AGT-092", "AGT-096")
def test_a_held_report_the_store_fails_on_costs_that_report_only(rig, monkeypatch):
    """A fault in the store's code on one held report (not a refusal of the disk): the rest of
    the command's reports are written, the one is counted, the fault is an internal error, and
    the downlink holds nothing after."""
    store = rig.agent.downlink.store
    append, seen = store.append, []

    def faulty(packet, sent_at=None, *, tm=None):
        seen.append(packet[8])
        if len(seen) == 1:
            raise RuntimeError("a bug in the store")
        return append(packet, sent_at, tm=tm)

    monkeypatch.setattr(store, "append", faulty)
    records, errors = store.stats.records, rig.agent.downlink.store_errors
    assert rig.send("NOOP").completed  # it went live whatever the store did
    # The acceptance lost; the event and the completion kept, and then the internal error's event.
    assert seen == [1, 1, 7, 3] and store.stats.records == records + 3
    assert rig.agent.downlink.store_errors == errors + 1 and rig.agent.executive.internal_errors == 1
    assert rig.agent.downlink._held is None


@pytest.mark.req("AGT-095")
def test_a_store_command_applies_to_what_was_published_before_it(rig):
    """STORE_DISABLE's own acceptance report went out before it ran: it is kept, as the setting
    then was; its completion report, after, is not."""
    def reports_held() -> set[tuple[int, int]]:  # (subtype, request id) of the stored TM(1,x)
        store, codec = rig.agent.downlink.store, Codec(DICTIONARY, Apid.AGENT)
        out = set()
        for seg, i in store.iter_range(0, 2**62, [StoreClass.REPORTS]):
            tm = unpack(store.read(seg, i))
            if tm.service == Service.VERIFICATION:
                out.add((tm.subtype, codec.decode_tm(tm).request_id))
        return out

    result = rig.send("STORE_DISABLE", store="REPORTS")
    assert result.completed
    held = reports_held()
    assert (1, result.request_id) in held and (7, result.request_id) not in held
    assert rig.send("STORE_ENABLE", store="REPORTS").completed
    noop = rig.send("NOOP")
    assert {(1, noop.request_id), (7, noop.request_id)} <= reports_held()


@pytest.mark.req("AGT-095")
def test_store_delete_forgets_up_to_a_time_and_counts(rig):
    rig.advance(10)
    held = rig.agent.downlink.store.stats.records
    result = rig.send("STORE_DELETE", to_unix_s=rig.clock.now_s() - 5.0)
    assert result.completed and 0 < result.result["deleted"] < held + 10


@pytest.mark.req("AGT-093")
def test_a_malformed_store_acknowledgement_is_refused_and_counted(rig):
    from flight.link.packets import pack_tc

    rig.link.ground.send(pack_tc(Apid.AGENT, 1, Service.STORAGE, 130, b"\x91\x93\x01\x02\x03"))
    rig.pump()
    reasons = [e.args["reason"] for e in rig.events("BAD_PACKET")]
    assert any("runs[0]" in r for r in reasons)
    assert rig.hk()["tc_bad_packets"] >= 1
    assert rig.send("NOOP").completed


@pytest.mark.req("LNK-007")
def test_a_flood_of_malformed_packets_is_said_a_few_a_period_and_every_one_counted(rig):
    """Found in an audit: each of 3000 frames of a 7-byte packet gave its own BAD_PACKET event, twelve times
    their bytes, and filled the packet store within minutes at 115200 baud."""
    rig.advance(1.0)
    said, counted = len(rig.events("BAD_PACKET")), rig.hk()["tc_bad_packets"]
    for i in range(50):
        rig.link.ground.send(bytes([0x18, 0x01, 0xC0, i, 0x00, 0x00, 0x00]))
    rig.pump()
    assert len(rig.events("BAD_PACKET")) == said + 4
    rig.advance(1.0)  # a housekeeping period: the rest in one event
    bad = rig.events("BAD_PACKET")
    assert len(bad) == said + 5 and bad[-1].args["reason"].startswith("46 more malformed packets refused, last: ")
    assert rig.hk()["tc_bad_packets"] == counted + 50
    assert rig.send("NOOP").completed


@pytest.mark.req("LNK-004")
def test_a_link_device_away_is_said_once_an_outage_and_counted_at_every_try(rig):
    """A review: LINK_DEVICE_ERROR was said at each housekeeping period while a serial adapter was away (each
    try to reopen it fails), an event a second into the store. Once an outage; every failure counted."""
    link = rig.link.flight
    link.is_open = False  # as a serial link says while its device is away
    for _ in range(5):
        link.stats.device_errors += 1  # a try to reopen it a second, each failing
        rig.advance(1.0)
    assert len(rig.events("LINK_DEVICE_ERROR")) == 1 and rig.hk()["link_device_errors"] == 5
    link.is_open, link.stats.reopens = True, 1
    rig.advance(1.0)
    link.is_open = False
    link.stats.device_errors += 1  # lost again: a new outage, said
    rig.advance(1.0)
    said = rig.events("LINK_DEVICE_ERROR")
    assert len(said) == 2 and rig.hk()["link_reopens"] == 1


@pytest.mark.req("AGT-093")
def test_acknowledgements_the_store_cannot_keep_are_said_once_until_one_is_kept(rig):
    """Found in an audit: with the acknowledgement log unwritable, each of the ground's acknowledgements (one a
    second in contact) gave its own STORE_ERROR."""
    rig.advance(2)
    store = rig.agent.downlink.store
    log = store.dir / "acks.log"
    if log.exists():
        log.rename(store.dir / "acks.saved")
    log.mkdir()  # a directory where the log is: every write of it fails
    said = len(rig.events("STORE_ERROR"))
    for _ in range(10):
        rig.client.acknowledge_store()
        rig.advance(1)
    errors = rig.events("STORE_ERROR")[said:]
    assert len(errors) == 1 and "acknowledgement not kept" in errors[0].args["reason"]
    assert rig.agent.downlink.store_errors >= 10


@pytest.mark.req("AGT-093")
def test_a_disk_that_takes_one_record_and_refuses_the_next_says_it_once_a_minute(rig, monkeypatch):
    """Found in audit: a disk all but full took one record and refused the next, and each refusal after a record
    kept was a new STORE_ERROR (20 in 5 s)."""
    rig.advance(2)
    store = rig.agent.downlink.store
    real, calls = store.append, [0]

    def every_other(*args, **kwargs):
        calls[0] += 1
        if calls[0] % 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "append", every_other)
    said, errors = len(rig.events("STORE_ERROR")), rig.agent.downlink.store_errors
    rig.advance(30)
    assert len(rig.events("STORE_ERROR")) == said + 1 and rig.agent.downlink.store_errors >= errors + 30
    rig.advance(40)  # past the minute: said again, once
    assert len(rig.events("STORE_ERROR")) == said + 2


@pytest.mark.req("AGT-096")
def test_an_unusable_store_costs_the_store_not_the_agent(tmp_path):
    (tmp_path / "store").write_text("a file where the store's directory should be")
    rig = InProcessAgent(tmp_path)
    try:
        assert any("store" in e.args["reason"] for e in rig.events("STORE_ERROR"))
        hk = rig.hk()
        assert hk["store_enabled"] == "none" and hk["store_records"] == 0
        assert rig.send("NOOP").completed
        failed = rig.send("STORE_DUMP", from_unix_s=0.0, to_unix_s=1.0)
        assert failed.failed and "no packet store" in failed.failure.reason
    finally:
        rig.close()


def test_decoding_refuses_a_run_whose_times_go_backwards():
    codec = Codec(DICTIONARY, Apid.AGENT)
    packet = codec.encode_store_ack([AckRun(Apid.AGENT, 1, 2, 10, 20)])
    tc = unpack(packet)
    assert codec.decode_store_ack(tc) == [AckRun(Apid.AGENT, 1, 2, 10, 20)]
    bad = unpack(codec.encode_store_ack([AckRun(Apid.AGENT, 1, 2, 30, 20)]))
    with pytest.raises(PacketError) as info:
        codec.decode_store_ack(bad)
    assert info.value.field == "runs[0].first_ms"



@pytest.mark.req("AGT-093")
def test_what_went_out_just_before_the_ground_was_heard_is_played_back_and_what_came_after_is_not(rig):
    """Under a simulated clock the packets just before the ground's first acknowledgement and those
    it causes (PLAYBACK_STARTED, sent to a ground that listens) carry the same time: only the
    former went out during the silence. Before, the agent played back its own PLAYBACK_STARTED
    whenever its next turn came before the ground's next acknowledgement, so what a HIL run
    counted hung on which came first."""
    ground = Ground(rig)
    lost = [unpack(raw) for _ in range(3) for raw in ground.step(lose=True)]
    heard_s = max(tm.time_s for tm in lost)
    rig.link.ground.send(ground.codec.encode_store_ack([]))  # heard at that instant: listening, nothing taken
    rig.agent.step(0)
    after = [unpack(raw) for raw in rig.link.ground.receive()]
    assert any(tm.service == Service.EVENT and tm_is_event(ground.codec.decode_tm(tm), "PLAYBACK_STARTED")
               for tm in after)
    assert all(tm.time_s == heard_s for tm in after)
    rig.clock.advance(10.0)  # a harness step: the agent's next turn comes before the ground's next acknowledgement
    rig.agent.step(0)
    for raw in rig.link.ground.receive():
        ground.take(raw)
    played = set(ground.played)
    assert {key(tm) for tm in lost if tm.time_s == heard_s} & played  # the silence's last instant comes again
    assert not {key(tm) for tm in after} & played  # what went to a listening ground does not


@pytest.mark.req("AGT-095", "AGT-096")
def test_a_store_delete_whose_log_write_fails_says_so_and_its_retry_deletes_for_good(tmp_path, monkeypatch):
    """Found in audit: STORE_DELETE failed on a full disk having freed its records in memory; the retry found none
    to record, completed, and after a restart every one of them was back."""
    rig = InProcessAgent(tmp_path)
    try:
        rig.advance(10)
        cut = rig.clock.now_s() - 5.0
        real_open = os.open

        def full(path, *args, **kwargs):
            if str(path).endswith("acks.log"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", full)
        failed = rig.send("STORE_DELETE", to_unix_s=cut)
        assert failed.failed and "cannot record the deletion" in failed.failure.reason
        monkeypatch.undo()
        assert rig.send("STORE_DELETE", to_unix_s=cut).completed
    finally:
        rig.close()
    from flight.agent.tm_store import ACKED, PacketStore

    store = PacketStore(tmp_path / "store")
    back = [seg.ids[i] for segs in store.segments.values() for seg in segs for i in range(len(seg.ids))
            if seg.times[i] <= cut * 1000 and seg.state[i] != ACKED]
    store.close()
    assert back == []
    assert "a restart brings them back unless a retry records it" in failed.failure.reason


@pytest.mark.req("AGT-093")
def test_playback_lost_on_the_link_is_resent_though_it_filled_its_containers_exactly(tmp_path):
    """Found in audit: 64 stored events (one full container) played back and lost on the link were never sent
    again: the walk for the next container ended their segment's and set its resend bound to none."""
    from flight.agent.downlink import Downlink
    from flight.agent.tm_store import PacketStore
    from flight.clock import SimClock
    from flight.link.memory_link import MemoryLink

    c = Codec(DICTIONARY, Apid.AGENT)
    store = PacketStore(tmp_path, max_bytes=64 * 16 * 1024, segment_bytes=16 * 1024)
    for i in range(64):
        store.append(c.encode_event("PING_RECEIVED", {"token": i}, 1_790_000_000.0 + i))
    clock, link, said = SimClock(1000.0), MemoryLink(), []
    params = {"playback_rate_bps": 1e6, "playback_resend_s": 30.0, "ground_window_s": 10.0, "hk_live_every": 1,
              "playback_grace_s": 3.0}
    downlink = Downlink(link.flight, store, c.encode_playback, clock, lambda name, **args: said.append(name), params,
                        fsync="loop")
    played: list[int] = []
    try:
        for _ in range(40):  # the ground listens, acknowledging nothing: every container is lost
            downlink.acknowledged([])
            downlink.play()
            clock.advance(1.0)
            played.append(sum(len(c.decode_tm(unpack(raw)).packets) for raw in link.ground.receive()))
    finally:
        downlink.close()
    assert played[1] == 64 and sum(played) >= 128  # sent, then sent again once playback_resend_s passed
    assert "PLAYBACK_STARTED" in said
