"""An audit of the packet store, the downlink and the link's counters: what an acknowledgement costs on a full
store, drops said across a stop and a counter reset, the RESET_COUNTERS packet still received after it, and no
packet twice in one playback container."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from flight.agent.tm_store import ACKED, MAX_SEQ_COUNT, PacketStore
from flight.link.apid import Apid
from flight.link.packets import Service, unpack
from tests.inproc import InProcessAgent
from tests.test_downlink import Ground, key
from tests.test_tm_store import SEG, codec, event, hk


def _fill(path: Path, n: int) -> tuple[PacketStore, list]:
    store = PacketStore(path, max_bytes=16 * SEG, segment_bytes=SEG)
    c = codec()
    return store, [store.append(hk(c, i) if i % 3 else event(c, i)) for i in range(n)]


@pytest.mark.req("AGT-090")
def test_an_acknowledgement_over_all_times_costs_what_it_names_not_the_whole_store(tmp_path):
    """Found in audit: a run walked every record of its times in every segment, so a run over all times walked
    the whole store, and an acknowledgement of 512 such (the most one may carry) 512 times over: 6.8 s of the
    loop on a store of 300,000 records. Cost counted in records looked at, not time."""
    store, kept = _fill(tmp_path, 6000)
    held = sum(len(seg.ids) for segs in store.segments.values() for seg in segs)
    assert held > 3000 and sum(store.stats.dropped.values()) > 0  # full: its size bound at work
    last = kept[-1]

    def visits(runs) -> int:
        before = store.stats.ack_visited
        store.acknowledge(runs)
        return store.stats.ack_visited - before

    assert visits([(last.apid, last.seq_count, last.seq_count, last.time_ms, last.time_ms)]) <= 2
    one_count = visits([(last.apid, 7, 7, 0, 2 ** 53)])  # one count, every time: a record or two per segment
    assert one_count < held // 10, (one_count, held)
    hostile = visits([(0x7FF - k, 0, MAX_SEQ_COUNT, 0, 2 ** 53) for k in range(512)])  # unknown APIDs, all times
    assert hostile < held, (hostile, held)  # was 512 times the store
    # What it names it still finds: every record of the APID whose count is unique among those held.
    named = visits([(last.apid, 0, MAX_SEQ_COUNT, 0, 2 ** 53)])
    assert named < 2 * held and store.records_held() == 0


def _reference(store: PacketStore, runs) -> set[int]:
    """The rule of :meth:`PacketStore.acknowledge` as it was written before its index: every record walked."""
    ids: set[int] = set()
    for apid, seq_lo, seq_hi, t_lo, t_hi in runs:
        width = (seq_hi - seq_lo) & MAX_SEQ_COUNT
        by_count: dict[int, list[tuple[int, int, bool]]] = {}
        for segs in store.segments.values():
            for seg in segs:
                for i in range(len(seg.ids)):
                    if (seg.apids[i] == apid and t_lo <= seg.times[i] <= t_hi
                            and (seg.seqs[i] - seq_lo) & MAX_SEQ_COUNT <= width):
                        by_count.setdefault(seg.seqs[i], []).append((seg.times[i], seg.ids[i], seg.state[i] == ACKED))
        for found in by_count.values():
            if len({t for t, _i, _a in found}) == 1:
                ids |= {i for _t, i, acked in found if not acked}
    return ids


@pytest.mark.req("AGT-090")
def test_the_indexed_acknowledgement_frees_exactly_what_the_rule_says(tmp_path):
    """Two boots whose counts begin again and whose clock steps back, a count near the wrap, two APIDs: random
    runs (wrapped, reversed, of unknown APIDs) free what a walk of every record frees, no more, no less."""
    rng = random.Random(7)
    store = PacketStore(tmp_path, max_bytes=64 * SEG, segment_bytes=SEG)
    for boot, start in enumerate((0, -300)):  # the second boot's clock begins 300 s earlier
        c = codec()
        c.seq.set(Apid.AGENT, MAX_SEQ_COUNT - 200 if boot else 0)
        for i in range(1200):
            packet = hk(c, start + i) if i % 4 else c.encode_event("PING_RECEIVED", {"token": i}, 1_790_000_000.0
                                                                    + start + i, apid=Apid.COMPUTE)
            store.append(packet)
    times = [seg.times[i] for segs in store.segments.values() for seg in segs for i in range(len(seg.ids))]
    for _ in range(60):
        runs = []
        for _ in range(rng.randint(1, 6)):
            a, b = rng.randrange(MAX_SEQ_COUNT + 1), rng.randrange(MAX_SEQ_COUNT + 1)
            if rng.random() < 0.5:
                b = (a + rng.randint(0, 80)) & MAX_SEQ_COUNT
            t1, t2 = sorted((rng.choice(times), rng.choice(times)))
            runs.append((rng.choice([Apid.AGENT, Apid.COMPUTE, 0x123]), a, b, t1, t2))
        expected = _reference(store, runs)
        before = store.records_held()
        assert store.acknowledge(runs) == len(expected)
        assert before - store.records_held() == len(expected)
        for segs in store.segments.values():
            for seg in segs:
                assert not {seg.ids[i] for i in range(len(seg.ids)) if seg.state[i] != ACKED} & expected


@pytest.mark.req("AGT-013")
def test_after_reset_counters_its_own_packet_stays_received_as_it_stays_accepted(tmp_path):
    """Found in audit: tc_received read 0 and cmd_accepted 1 after RESET_COUNTERS: the command counted accepted
    had, by the link's count, never been received."""
    with InProcessAgent(tmp_path / "state") as rig:
        rig.send("NOOP")
        assert rig.send("RESET_COUNTERS").completed
        values = rig.hk()
        assert values["tc_received"] == values["cmd_accepted"] == 1


@pytest.mark.req("LNK-005", "AGT-013")
def test_drops_of_the_last_period_before_a_stop_are_said_and_counted_after_the_restart(tmp_path):
    """Found in audit: a packet the link refused after the last housekeeping period (here the stop's own event)
    was never said in TM_DROPPED, and tm_dropped read 0 again after the restart."""
    rig = InProcessAgent(tmp_path / "state")
    rig.hk()
    rig.link.to_ground.bound = 0  # the ground's queue full: what the agent publishes now is refused
    rig.agent.stop("test")
    rig.agent.finish()
    dropped = rig.agent.link.stats.tx_dropped
    rig.link.to_ground.bound = 10_000
    rig.close()
    assert dropped >= 1 and not rig.events("TM_DROPPED")
    again = InProcessAgent(tmp_path / "state")
    try:
        values = again.hk()
        assert [e.args["count"] for e in again.events("TM_DROPPED")] == [dropped]
        assert values["tm_dropped"] == dropped
        values = again.hk()
        assert len(again.events("TM_DROPPED")) == 1 and values["tm_dropped"] == dropped  # said once
        assert again.send("RESET_COUNTERS").completed
        assert again.hk()["tm_dropped"] == 0
    finally:
        again.close()


@pytest.mark.req("LNK-005")
def test_a_counter_reset_does_not_silence_drops_not_yet_said(tmp_path):
    """Found in audit: RESET_COUNTERS zeroed the drops of the period before they were said: never reported."""
    with InProcessAgent(tmp_path / "state") as rig:
        rig.hk()
        rig.link.to_ground.bound = 0
        rig.client.submit("NOOP", {}, retries=0)  # its reports refused by the full queue (kept in the store)
        rig.pump()
        rig.link.to_ground.bound = 10_000
        dropped = rig.agent.link.stats.tx_dropped
        assert dropped >= 1 and not rig.events("TM_DROPPED")
        assert rig.send("RESET_COUNTERS").completed
        values = rig.hk()
        assert sum(e.args["count"] for e in rig.events("TM_DROPPED")) == dropped
        assert values["tm_dropped"] == 0  # the count itself starts again


@pytest.mark.req("AGT-095", "AGT-093")
def test_a_dump_and_routine_playback_put_no_packet_twice_in_one_container(tmp_path):
    """Found in audit: the dump's packets not yet sent (decimated housekeeping) went once for the dump and again,
    in the same container, for routine playback."""
    with InProcessAgent(tmp_path / "state") as rig:
        assert rig.send("SET_PARAM", name="hk_live_every", value="5").completed
        ground = Ground(rig)
        for _ in range(6):
            ground.step()
        t_from, t_to = rig.clock.now_s() - 4.0, rig.clock.now_s() - 1.0
        rig.client.submit("STORE_DUMP", {"from_unix_s": t_from, "to_unix_s": t_to}, retries=0)
        ground.step()
        containers: list[Counter] = []
        take = ground.take

        def counting(raw: bytes) -> None:
            tm = unpack(raw)
            if tm.service == Service.STORAGE:
                containers.append(Counter(key(unpack(p)) for p in ground.codec.decode_tm(tm).packets))
            take(raw)

        ground.take = counting
        ground.listening = True
        for _ in range(3):
            ground.step()
        assert containers and sum(len(c) for c in containers) > 10
        assert [k for c in containers for k, n in c.items() if n > 1] == []


@pytest.mark.req("LNK-005")
def test_drops_carried_over_a_restart_are_said_once_though_a_reset_follows_within_the_minute(tmp_path):
    """Found in review: the drops carried over a restart were said, then written down as said only at the next
    periodic save (a minute on): a reset before it said them again at the next start, and at every start of a loop
    of resets."""
    rig = InProcessAgent(tmp_path / "state")
    rig.hk()
    rig.link.to_ground.bound = 0
    rig.agent.stop("test")
    rig.agent.finish()
    dropped = rig.agent.link.stats.tx_dropped
    rig.link.to_ground.bound = 10_000
    rig.close()
    again = InProcessAgent(tmp_path / "state")
    again.hk()
    assert [e.args["count"] for e in again.events("TM_DROPPED")] == [dropped]
    again.close()  # a reset seconds later: no clean stop
    third = InProcessAgent(tmp_path / "state")
    try:
        values = third.hk()
        assert third.events("TM_DROPPED") == [] and values["tm_dropped"] == dropped  # counted, not said again
    finally:
        third.close()
