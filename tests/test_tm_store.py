"""The on-board packet store (flight/agent/tm_store.py): kept across restarts and crashes,
acknowledged by the ground's runs, bounded with the lowest class dropped first, damage found
by CRC and skipped without losing the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flight.agent.tm_store import SENT, PacketStore, StoreClass, _records
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec

T0 = 1_790_000_000.0
SEG = 16 * 1024


def codec() -> Codec:
    return Codec(DICTIONARY, Apid.AGENT)


def event(c: Codec, i: int) -> bytes:
    return c.encode_event("PING_RECEIVED", {"token": i}, T0 + i)


_THERMAL = next(p for p in DICTIONARY.packets if p.name == "THERMAL_HK")


def hk(c: Codec, i: int) -> bytes:
    return c.encode_hk(_THERMAL.sid, {ch: None for ch in _THERMAL.channels}, T0 + i)


def open_store(path: Path, max_bytes: int = 64 * SEG) -> PacketStore:
    return PacketStore(path, max_bytes=max_bytes, segment_bytes=SEG)


def pending_ids(store: PacketStore, now_s: float = 0.0, resend_s: float = 30.0) -> list[int]:
    return [seg.ids[i] for seg, i in store.pending(now_s, resend_s)]


@pytest.mark.req("AGT-090")
def test_packets_survive_a_reopen_and_ids_keep_rising(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    first = [store.append(event(c, i)) for i in range(50)]
    store.close()
    again = open_store(tmp_path)
    assert again.records_held() == 50
    assert pending_ids(again) == [p.store_id for p in first]
    got = [again.read(seg, i) for seg, i in again.pending(0.0, 30.0)]
    assert got == [p.packet for p in first]
    later = again.append(event(c, 99))
    assert later.store_id == first[-1].store_id + 1


@pytest.mark.req("AGT-090")
def test_playback_reads_a_segment_through_one_descriptor_and_lets_it_go_with_the_segment(tmp_path, monkeypatch):
    """An audit: playback opened the segment file for every record it read (100,000 opens in a pass)."""
    import flight.agent.tm_store as tm_store_module

    c = codec()
    store = open_store(tmp_path, max_bytes=4 * SEG)
    kept = [store.append(event(c, i)) for i in range(400)]  # several segments
    opened = []
    real_open = tm_store_module.os.open
    monkeypatch.setattr(tm_store_module.os, "open",
                        lambda path, flags, *a: opened.append((Path(path), flags)) or real_open(path, flags, *a))
    held = list(store.pending(0.0, 30.0))
    got = [store.read(seg, i) for seg, i in held]
    assert got == [p.packet for p in kept[-len(held):]] and len(held) > 50
    reads = [path for path, flags in opened if flags == os.O_RDONLY]
    assert len(reads) == len({seg.path for seg, _ in held}), reads  # one open a segment, not one a record
    first = held[0][0]
    store.read(first, 0)  # the descriptor now on the oldest segment, which new records push out
    for i in range(400, 2000):
        store.append(event(c, i))
    assert not first.path.exists() and store.read(first, 0) is None  # gone with its segment, descriptor and all
    assert store.read(*next(iter(store.pending(0.0, 30.0)))) is not None
    reader = store._reader[1]  # noqa: SLF001 - the descriptor playback holds now
    store.close()
    with pytest.raises(OSError):
        os.fstat(reader)  # closed with the store


@pytest.mark.req("AGT-090")
def test_the_grounds_runs_acknowledge_exactly_their_packets_and_that_is_kept(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(40)]
    # The ground got 0..9 and 20..29 (one run each), not 10..19 nor 30..39.
    runs = [(p[0].apid, p[0].seq_count, p[-1].seq_count, p[0].time_ms, p[-1].time_ms)
            for p in (kept[0:10], kept[20:30])]
    assert store.acknowledge(runs) == 20
    assert store.acknowledge(runs) == 0  # again: nothing new
    expected = [p.store_id for p in kept[10:20] + kept[30:40]]
    assert pending_ids(store) == expected
    store.close()
    assert pending_ids(open_store(tmp_path)) == expected


@pytest.mark.req("AGT-090")
def test_a_run_covers_only_its_apid_its_times_and_its_sequence_counts(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    a = store.append(event(c, 1))
    b = store.append(c.encode_event("PING_RECEIVED", {"token": 2}, T0 + 1, apid=Apid.COMPUTE))
    # Same APID and time as a, another sequence count; same count, another APID; a's count at another time.
    assert store.acknowledge([(a.apid, (a.seq_count + 1) & 0x3FFF, (a.seq_count + 5) & 0x3FFF, a.time_ms, a.time_ms),
                              (Apid.HIL, a.seq_count, a.seq_count, a.time_ms, a.time_ms),
                              (a.apid, a.seq_count, a.seq_count, a.time_ms + 1, a.time_ms + 10)]) == 0
    assert store.acknowledge([(b.apid, b.seq_count, b.seq_count, b.time_ms, b.time_ms)]) == 1
    assert pending_ids(store) == [a.store_id]


@pytest.mark.req("AGT-090", "GND-041")
@pytest.mark.parametrize("across", ["reboot", "wrap"])
def test_a_run_the_ground_joined_across_a_reboot_or_a_wrap_frees_none_of_what_it_never_had(tmp_path, across):
    """Found in audit: after AOS the ground heard boot 1's last counts in playback and boot 2's next count live,
    joined them in one run (consecutive counts), and the store freed boot 2's first packets with them, which the
    ground never had. A count two unacknowledged records share within a run is not taken from it; played back
    again, both come down, and the runs of what then comes are one boot's each: all freed, nothing lost."""
    from ground.completeness import CompletenessTracker

    store = open_store(tmp_path)
    first, second = codec(), codec()  # boot 2's counts start again at 0
    if across == "wrap":  # one boot, the counter one turn further on: the same counts again
        second = first
        first.seq.set(Apid.AGENT, 100)
    early = [store.append(hk(first, i)) for i in range(10)]
    if across == "wrap":
        first.seq.set(Apid.AGENT, 100)
    later = [store.append(hk(second, (16384 if across == "wrap" else 100) + i)) for i in range(11)]
    ground = CompletenessTracker()
    ground.add(later[-1].apid, later[-1].seq_count, later[-1].time_ms, received_s=1.0)  # live, at AOS
    for p in early:  # played back in the same acknowledgement period
        ground.add(p.apid, p.seq_count, p.time_ms, received_s=1.1, played_back=True)
    (run,) = ground.take_runs()
    assert store.acknowledge([run.as_tuple()]) == 1  # the live one alone: every other count is two packets'
    assert sorted(pending_ids(store)) == sorted(p.store_id for p in early + later[:-1])
    for seg, i in store.pending(0.0, 30.0):  # played back: the ground has all of them now
        ground.add(seg.apids[i], seg.seqs[i], seg.times[i], received_s=2.0, played_back=True)
    assert store.acknowledge(r.as_tuple() for r in ground.take_runs()) == 20
    assert pending_ids(store) == [] and store.stats.acks_ambiguous == 20


@pytest.mark.req("AGT-090", "GND-041")
def test_a_count_acknowledged_before_still_makes_a_run_ambiguous_and_one_packet_twice_stored_goes_at_once(tmp_path):
    """Found in review: records acknowledged already were not counted, so a second copy of boot 1's last packet in
    a run with boot 2's next freed boot 2's packet of that count, never received; and two records of one count at
    one time (a board clock that starts at the same value each boot), one packet to the ground, were kept and
    played back for ever."""
    from ground.completeness import CompletenessTracker

    store = open_store(tmp_path)
    first, second = codec(), codec()
    first.seq.set(Apid.AGENT, 90)
    early = [store.append(hk(first, i)) for i in range(10)]  # counts 90..99
    ground = CompletenessTracker()
    for p in early:
        ground.add(p.apid, p.seq_count, p.time_ms, received_s=1.0)
    assert store.acknowledge(r.as_tuple() for r in ground.take_runs()) == 10
    later = [store.append(hk(second, 100 + i)) for i in range(101)]  # boot 2: counts 0..100
    ground.add(later[-1].apid, later[-1].seq_count, later[-1].time_ms, received_s=2.0)
    ground.add(early[-1].apid, early[-1].seq_count, early[-1].time_ms, received_s=2.0, played_back=True)
    store.acknowledge(r.as_tuple() for r in ground.take_runs())
    assert later[-2].store_id in pending_ids(store)  # boot 2's count 99, never received, kept
    twice = open_store(tmp_path / "same-clock")
    a, b = codec(), codec()
    kept = [twice.append(hk(c, i)) for c in (a, b) for i in range(3)]  # the same counts at the same times
    ground = CompletenessTracker()
    for seg, i in twice.pending(0.0, 30.0):
        ground.add(seg.apids[i], seg.seqs[i], seg.times[i], received_s=1.0, played_back=True)
    assert twice.acknowledge(r.as_tuple() for r in ground.take_runs()) == len(kept) and not pending_ids(twice)


@pytest.mark.req("AGT-090")
def test_a_fully_acknowledged_sealed_segment_is_deleted(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(600)]
    segs = list(store.segments[StoreClass.REPORTS])
    assert len(segs) >= 3
    files_before = sorted(p.name for p in tmp_path.glob("*.seg"))
    first = segs[0]
    n = len(first.ids)
    store.acknowledge([(kept[0].apid, kept[0].seq_count, kept[n - 1].seq_count, kept[0].time_ms, kept[n - 1].time_ms)])
    assert not first.path.exists()
    assert sorted(p.name for p in tmp_path.glob("*.seg")) == files_before[1:]
    assert store.records_held() == 600 - n


@pytest.mark.req("AGT-091")
def test_when_full_housekeeping_goes_first_and_reports_last_and_drops_are_counted(tmp_path):
    c = codec()
    store = open_store(tmp_path, max_bytes=4 * SEG)
    reports = [store.append(event(c, i)) for i in range(50)]
    for i in range(2000):
        store.append(hk(c, 100 + i))
    assert store.stats.bytes <= 4 * SEG
    assert store.stats.dropped[StoreClass.HK] > 0
    assert store.stats.dropped[StoreClass.REPORTS] == 0
    assert pending_ids(store)[:50] == [p.store_id for p in reports]  # every report still there, first in line
    # The housekeeping kept is the newest.
    kept_hk = [seg.times[i] for seg in store.segments[StoreClass.HK] for i in range(len(seg.ids))]
    assert max(kept_hk) == int((T0 + 2099) * 1000)
    assert min(kept_hk) > int((T0 + 100) * 1000)


@pytest.mark.req("AGT-091")
def test_housekeeping_all_in_the_segment_being_written_still_goes_before_any_report(tmp_path):
    """Found in audit: the oldest sealed segment of any class went first, so with events filling the store and
    housekeeping all in its segment being written, the oldest events were dropped and the housekeeping kept."""
    c = codec()
    store = open_store(tmp_path, max_bytes=4 * SEG)
    i = 0
    while store.stats.bytes < 3 * SEG + SEG // 2:
        store.append(event(c, i))
        i += 1
    while not any(store.stats.dropped.values()):
        store.append(hk(c, 10_000 + i))
        i += 1
    assert store.stats.dropped[StoreClass.HK] > 0 and store.stats.dropped[StoreClass.REPORTS] == 0
    assert store.stats.bytes <= 4 * SEG


@pytest.mark.req("AGT-091")
def test_only_reports_left_their_oldest_go(tmp_path):
    c = codec()
    store = open_store(tmp_path, max_bytes=4 * SEG)
    kept = [store.append(event(c, i)) for i in range(3000)]
    assert store.stats.bytes <= 4 * SEG
    assert store.stats.dropped[StoreClass.REPORTS] > 0
    ids = pending_ids(store)
    assert ids[-1] == kept[-1].store_id and ids[0] > kept[0].store_id


@pytest.mark.req("AGT-090")
def test_playback_order_is_reports_then_other_then_housekeeping_oldest_first_and_resends_wait(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    h = store.append(hk(c, 0))
    p = store.append(c.encode_param_report({"hk_period_s": 1.0}, T0 + 1))
    e1 = store.append(event(c, 2))
    e2 = store.append(event(c, 3), sent_at=100.0)  # went out live at t=100
    assert pending_ids(store, now_s=110.0, resend_s=30.0) == [e1.store_id, p.store_id, h.store_id]
    assert pending_ids(store, now_s=130.0, resend_s=30.0) == [e1.store_id, e2.store_id, p.store_id, h.store_id]
    seg, i = next(store.pending(0.0, 30.0))
    store.mark_sent(seg, i, 200.0)
    assert seg.state[i] == SENT and seg.ids[i] == e1.store_id
    assert e1.store_id not in pending_ids(store, now_s=210.0)


@pytest.mark.req("AGT-090")
def test_delete_until_a_time_and_dump_a_range(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(20)]
    store.acknowledge([(kept[0].apid, kept[0].seq_count, kept[4].seq_count, kept[0].time_ms, kept[4].time_ms)])
    dumped = store.in_range(kept[2].time_ms, kept[7].time_ms)
    assert [seg.ids[i] for seg, i in dumped] == [p.store_id for p in kept[2:8]]  # acknowledged ones too
    assert store.delete_until(kept[9].time_ms) == 5  # 5..9: 0..4 were acknowledged already
    assert pending_ids(store) == [p.store_id for p in kept[10:]]
    store.close()
    assert pending_ids(open_store(tmp_path)) == [p.store_id for p in kept[10:]]


@pytest.mark.req("AGT-092")
def test_a_damaged_record_is_skipped_and_counted_and_the_rest_kept(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(30)]
    seg = store.segments[StoreClass.REPORTS][0]
    offset = seg.offsets[10]  # a byte inside record 10's packet
    store.close()
    data = bytearray(seg.path.read_bytes())
    data[offset + 3] ^= 0x40
    seg.path.write_bytes(bytes(data))
    again = open_store(tmp_path)
    assert again.stats.corrupt_records == 1
    assert pending_ids(again) == [p.store_id for k, p in enumerate(kept) if k != 10]


@pytest.mark.req("AGT-092")
def test_a_damaged_length_does_not_swallow_the_records_after_it(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(30)]
    seg = store.segments[StoreClass.REPORTS][0]
    start = seg.offsets[5] - 20 - 6  # the record's frame: magic (2) and length (4), then the meta (20)
    store.close()
    data = bytearray(seg.path.read_bytes())
    assert data[start:start + 2] == b"\xa5\x5a"
    data[start + 4:start + 6] = b"\xff\xff"  # a plausible length that runs far past the end of the file
    seg.path.write_bytes(bytes(data))
    again = open_store(tmp_path)
    assert again.stats.corrupt_records == 1
    assert again.stats.torn_tails == 0
    assert pending_ids(again) == [p.store_id for k, p in enumerate(kept) if k != 5]


@pytest.mark.req("AGT-092")
def test_a_torn_last_record_is_cut_and_appends_frame_again(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(10)]
    seg = store.segments[StoreClass.REPORTS][0]
    store.close()
    data = seg.path.read_bytes()
    seg.path.write_bytes(data[:-7])  # the power failed in the middle of the last append
    again = open_store(tmp_path)
    assert again.stats.torn_tails == 1 and again.stats.corrupt_records == 0
    new = again.append(event(c, 50))
    again.close()
    third = open_store(tmp_path)
    assert third.stats.corrupt_records == 0 and third.stats.torn_tails == 0
    assert pending_ids(third) == [p.store_id for p in kept[:-1]] + [new.store_id]


def test_the_record_walker_reports_damage_and_the_good_end():
    frame = lambda payload: b"\xa5\x5a" + len(payload).to_bytes(4, "big") + payload + \
        __import__("zlib").crc32(payload).to_bytes(4, "big")  # noqa: E731
    good = frame(b"one") + frame(b"two")
    walked, end = _records(good + b"\x00garbage" + frame(b"three") + b"\xa5\x5a\x00\x00", 100)
    assert [p for _s, _e, p in walked] == [b"one", b"two", None, b"three"]
    assert end == len(good) + 8 + len(frame(b"three"))


@pytest.mark.req("AGT-092")
def test_acknowledgements_survive_a_damaged_acks_log(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(10)]
    for p in kept[:4]:
        store.acknowledge([(p.apid, p.seq_count, p.seq_count, p.time_ms, p.time_ms)])
    store.close()
    log = tmp_path / "acks.log"
    log.write_bytes(log.read_bytes() + b"\xa5\x5a\x00\x00\x00\x10torn")
    again = open_store(tmp_path)
    assert pending_ids(again) == [p.store_id for p in kept[4:]]


_WRITER = textwrap.dedent("""
    import sys
    from flight.agent.tm_store import PacketStore
    from flight.link.apid import Apid
    from flight.link.definitions import DICTIONARY
    from flight.link.messages import Codec
    store = PacketStore(sys.argv[1], max_bytes=64 * 16384, segment_bytes=16384)
    c = Codec(DICTIONARY, Apid.AGENT)
    i = 0
    while True:
        p = store.append(c.encode_event("PING_RECEIVED", {"token": i}, 1.79e9 + i))
        sys.stdout.write(f"{p.store_id}\\n")
        sys.stdout.flush()
        i += 1
""")


@pytest.mark.system
@pytest.mark.req("AGT-092")
def test_kill_9_in_the_middle_of_appends_loses_nothing_appended_and_corrupts_nothing(tmp_path):
    """A real writer process killed with SIGKILL at a random moment, five times over the same
    store: every record it had appended (it prints each store id after the append returns)
    is there after the restart, and nothing fails its CRC."""
    reported: list[int] = []
    root = Path(__file__).resolve().parents[1]
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                                cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        try:
            for _ in range(200 + 97 * round_):
                line = proc.stdout.readline()
                assert line, "the writer died on its own"
                reported.append(int(line))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        store = open_store(tmp_path, max_bytes=64 * 16384)
        assert store.stats.corrupt_records == 0
        held = set(pending_ids(store))
        assert set(reported) <= held
        store.close()
    assert len(set(reported)) == len(reported)  # ids never reused across the restarts



_SHORT_WRITE = textwrap.dedent("""
    import os, resource, signal, sys
    from flight.agent.tm_store import PacketStore
    from flight.link.apid import Apid
    from flight.link.definitions import DICTIONARY
    from flight.link.messages import Codec
    c = Codec(DICTIONARY, Apid.AGENT)
    ev = lambda i: c.encode_event("PING_RECEIVED", {"token": i}, 1_790_000_000.0 + i)
    s = PacketStore(sys.argv[1], max_bytes=64 * 16384, segment_bytes=16384)
    for i in range(5):
        s.append(ev(i))
    seg = s.segments[0][-1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the disk full: a write cut short, then EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(seg.path) + 10, hard))
    try:
        s.append(ev(5))
        print("kept 5")
    except OSError:
        print("refused 5")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    for i in range(6, 10):
        s.append(ev(i))
    print("read", sum(s.read(seg, i) is not None for i in range(len(seg.ids))), "of", len(seg.ids))
    s.close()
""")


@pytest.mark.req("AGT-090")
def test_a_record_the_full_disk_cut_short_is_refused_and_the_records_after_it_stay_readable(tmp_path):
    """The kernel wrote part of a record and said so; the count was ignored, every later record of the
    segment was indexed wrong, failed its CRC, and playback acknowledged them away (review)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _SHORT_WRITE, str(tmp_path)], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert out.stdout.split() == ["refused", "5", "read", "9", "of", "9"], out.stdout + out.stderr
    store = open_store(tmp_path, max_bytes=64 * 16384)
    assert store.stats.corrupt_records == 0 and len(pending_ids(store)) == 9


@pytest.mark.req("AGT-090")
def test_a_segment_the_disk_cannot_give_back_costs_its_records_not_the_store(tmp_path):
    """A segment that failed to read at start (EIO; here a directory in its place) once made the whole
    store unopenable, and the agent flew without one (review)."""
    c = codec()
    store = open_store(tmp_path)
    for i in range(3):
        store.append(event(c, i))
    store.close()
    (tmp_path / "HK-00000000000000ff.seg").mkdir()
    again = open_store(tmp_path)
    assert again.unreadable_segments == ["HK-00000000000000ff.seg"] and again.stats.corrupt_records == 1
    assert len(pending_ids(again)) == 3
    assert again.append(event(c, 9)).store_id > 0xFF, "ids rise past the unreadable segment's"
    again.close()
    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state", store_dir=tmp_path) as rig:  # the agent says it at boot
        said = [e.args["reason"] for e in rig.events("STATE_CORRUPT") if e.args["what"] == "packet store"]
        assert len(said) == 1 and "1 segment file(s) unreadable (HK-00000000000000ff.seg)" in said[0], said
        assert rig.hk()["state_corrupt"] >= 1


@pytest.mark.req("AGT-090")
def test_ids_are_not_given_again_past_a_segment_unreadable_at_one_start_whose_records_come_back_at_the_next(
        tmp_path, monkeypatch):
    """Found in audit: only the unreadable segment's first id was passed, so new records took the ids in it, and
    once the disk read it again, the ground's acknowledgements of the new records freed its own, never sent."""
    import errno

    c = codec()
    store = open_store(tmp_path)
    held = [store.append(hk(c, i)) for i in range(20)]
    name = store.segments[StoreClass.HK][0].path.name
    store.close()
    real = Path.read_bytes

    def failing(path: Path) -> bytes:
        if path.name == name:
            raise OSError(errno.EIO, "Input/output error")
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", failing)  # this start, the disk cannot give it back
    again = open_store(tmp_path)
    new = [again.append(event(c, i)) for i in range(20)]
    assert min(p.store_id for p in new) > max(p.store_id for p in held)
    again.acknowledge_ids([p.store_id for p in new])  # the ground has the new ones
    again.close()
    monkeypatch.undo()  # the disk reads it again
    third = open_store(tmp_path)
    assert sorted(pending_ids(third)) == [p.store_id for p in held]  # all still to be played back


@pytest.mark.req("AGT-093")
def test_of_the_packets_sent_at_the_instant_the_silence_ended_only_those_kept_before_it_are_due(tmp_path):
    c = codec()
    store = open_store(tmp_path)
    early = store.append(event(c, 0), sent_at=99.0)
    before = store.append(event(c, 1), sent_at=100.0)
    first_after = store.next_id
    after = store.append(event(c, 2), sent_at=100.0)
    later = store.append(event(c, 3), sent_at=100.5)
    assert after.store_id == first_after
    due = [seg.ids[i] for seg, i in store.pending(104.0, 30.0, 100.0, first_after)]
    assert due == [early.store_id, before.store_id]
    assert [seg.ids[i] for seg, i in store.pending(104.0, 30.0, 100.0)] == [early.store_id]  # by time alone
    assert [seg.ids[i] for seg, i in store.pending(131.0, 30.0)] == [early.store_id, before.store_id, after.store_id,
                                                                    later.store_id]  # resent after 30 s, all


@pytest.mark.req("AGT-091")
def test_what_opening_a_smaller_store_drops_is_said_not_only_counted(tmp_path):
    """Found in audit: an agent restarted with a smaller store.max_mb dropped the oldest housekeeping as the store
    opened, counted in store_dropped, but no STORE_DROPPED ever said it."""
    from tests.inproc import InProcessAgent

    c = codec()
    store = PacketStore(tmp_path / "store")
    while store.stats.bytes < int(1.5 * 1024 * 1024):
        store.append(hk(c, store.next_id))
    store.close()
    with InProcessAgent(tmp_path / "state", store_dir=tmp_path / "store", store_max_mb=1.0) as rig:
        rig.advance(30.0)
        dropped = rig.hk()["store_dropped"]
        said = [e.args for e in rig.events("STORE_DROPPED")]
        assert dropped > 0 and said and said[0]["count"] == dropped and said[0]["store"].startswith("HK ")


@pytest.mark.req("AGT-096")
def test_a_segment_whose_directory_will_not_sync_leaks_no_descriptor_at_each_refused_append(tmp_path, monkeypatch):
    """Found in audit: a new segment whose directory's fsync failed (EIO) kept its descriptor open, one more at each
    append the disk refused, until the agent had none left for its sockets."""
    c = codec()
    store = PacketStore(tmp_path, max_bytes=64 * 1024, segment_bytes=1024)

    def eio():
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store, "_fsync_dir", eio)
    def open_here() -> int:  # this store's descriptors alone: another test's file closed meanwhile is not counted
        held = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                held += os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path))
            except OSError:
                pass  # closed as it was looked at
        return held

    before = open_here()
    for i in range(50):
        with pytest.raises(OSError):
            store.append(event(c, i))
    assert open_here() == before and not store._fds
    monkeypatch.undo()  # the disk answers again: appends go on
    assert store.append(event(c, 50)).store_id == 1 and store.records_held() == 1
    store.close()


@pytest.mark.req("AGT-090", "AGT-096")
def test_an_acknowledgement_the_log_refuses_is_written_with_the_next_and_a_retry_says_so(tmp_path, monkeypatch):
    """Found in audit: a refused write of acks.log was forgotten, the records acknowledged in memory only: a retry
    found nothing new to write, and the next start played them back (STORE_DELETE: FAILED, then COMPLETED,
    then the packets back)."""
    c = codec()
    store = open_store(tmp_path)
    for i in range(6):
        store.append(event(c, i))
    real_open = os.open

    def full(path, *args, **kwargs):
        if str(path).endswith("acks.log"):
            raise OSError(28, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(OSError):
        store.delete_until(int((T0 + 2) * 1000))
    assert store.records_held() == 3 and pending_ids(store) == [4, 5, 6], "the ground's wish holds in memory"
    with pytest.raises(OSError):  # a retry on a disk still full says so: nothing is recorded yet
        store.delete_until(int((T0 + 2) * 1000))
    monkeypatch.undo()
    store.delete_until(int((T0 + 2) * 1000))  # room again: the retry records what the first could not
    store.close()
    again = open_store(tmp_path)
    assert again.records_held() == 3 and pending_ids(again) == [4, 5, 6]
    again.close()


@pytest.mark.req("AGT-090", "AGT-096")
def test_an_acks_log_the_disk_cannot_give_back_costs_its_acknowledgements_not_the_store(tmp_path):
    """Found in audit: an acks.log that could not be read (EIO; here a directory in its place) made the whole store
    unopenable, and the agent flew without one, its stored packets never played back."""
    c = codec()
    store = open_store(tmp_path)
    for i in range(3):
        store.append(event(c, i))
    store.acknowledge_ids([1])
    store.close()
    (tmp_path / "acks.log").unlink()
    (tmp_path / "acks.log").mkdir()
    again = open_store(tmp_path)
    assert "acks.log unreadable" in again.acks_error and again.stats.corrupt_records == 1
    assert pending_ids(again) == [1, 2, 3], "what it acknowledged comes again; nothing else is lost"
    assert (tmp_path / "acks.log.corrupt").is_dir(), "moved aside: no later start reads it"
    again.acknowledge_ids([2])
    again.close()
    assert pending_ids(open_store(tmp_path)) == [1, 3]
    (tmp_path / "acks.log").unlink()
    (tmp_path / "acks.log").mkdir()
    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state", store_dir=tmp_path) as rig:  # the agent flies with its store, says it
        assert any("acks.log unreadable" in e.args["reason"] for e in rig.events("STORE_ERROR"))
        assert rig.hk()["store_enabled"] != "none" and rig.hk()["store_records"] >= 3


@pytest.mark.req("AGT-090", "AGT-096")
def test_a_compaction_the_disk_refuses_after_the_acknowledgement_is_kept_costs_nothing_asked(tmp_path, monkeypatch):
    """Found in review: acks.log's compaction runs after the acknowledgement is appended and synced; refused (a full
    disk), it raised out of acknowledge_ids: STORE_DELETE said its deletion undone (it was on disk), and each later
    acknowledgement raised as well."""
    import flight.agent.tm_store as tm_store

    c = codec()
    store = open_store(tmp_path)
    for i in range(6):
        store.append(event(c, i))

    tried = []

    def full(*args, **kwargs):
        tried.append(args[0])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tm_store, "write_atomic", full)
    store._ack_records = 10_000  # noqa: SLF001 - past the compaction's threshold
    assert store.delete_until(int((T0 + 2) * 1000)) == 3  # recorded: no error for the compaction's refusal
    assert store.acknowledge_ids([4]) == 1  # nor for the next
    assert len(tried) == 1, "the compaction is not tried again at each acknowledgement"
    monkeypatch.undo()
    store.close()
    again = open_store(tmp_path)
    assert pending_ids(again) == [5, 6]
    again.close()


@pytest.mark.req("AGT-091")
def test_a_segment_wholly_acknowledged_while_it_was_written_goes_when_sealed_and_costs_no_housekeeping(tmp_path):
    """Found in audit: a segment the ground had acknowledged in full before its last append was sealed and kept
    (only an acknowledgement deleted a sealed segment, and none more came for it): in contact the store filled with
    packets nobody needed, its fill read high with nothing held, and an outage then dropped unacknowledged
    housekeeping to keep them."""
    c = codec()
    store = open_store(tmp_path, max_bytes=8 * SEG)
    for i in range(1600):  # a pass: every event sent live and acknowledged at once, several segments' worth
        p = store.append(event(c, i), sent_at=float(i))
        store.acknowledge([(p.apid, p.seq_count, p.seq_count, p.time_ms, p.time_ms)])
    assert store.records_held() == 0
    assert len(store.segments[StoreClass.REPORTS]) == 1 and len(list(tmp_path.glob("*.seg"))) == 1
    assert store.stats.bytes <= SEG and store.fill_pct() < 100.0 / 8
    for i in range(2000, 3000):  # the ground away: housekeeping, never acknowledged, fits the store
        store.append(hk(c, i))
    assert store.stats.dropped[StoreClass.HK] == 0 and store.records_held() == 1000


@pytest.mark.req("AGT-093")
def test_a_segment_whose_last_due_record_ends_a_walk_step_is_still_resent_when_unacknowledged(tmp_path):
    """Found in audit: playback takes a container's worth of records from the walk, sends and marks them, and the
    walk goes on for the next container; a segment all of whose due records had gone in earlier containers ended
    its walk with their sends unseen, its resend bound set to none, and its records were never sent again."""
    c = codec()
    store = open_store(tmp_path)
    kept = [store.append(event(c, i)) for i in range(64)]
    walk = store.pending(100.0, 30.0)
    for _ in range(64):  # one container: the segment's every record, sent as the walk goes
        seg, i = next(walk)
        store.mark_sent(seg, i, 100.0)
    assert next(walk, None) is None  # the next container's look ends the segment's walk
    assert pending_ids(store, now_s=110.0) == []  # not due yet
    assert pending_ids(store, now_s=131.0) == [p.store_id for p in kept]  # lost on the link: sent again
