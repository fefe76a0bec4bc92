"""Ground completeness (issue 14, part 2): the ground keeps one copy of every packet however
often it comes (live, a reply and its stream copy, played back from the agent's packet store,
played back again), acknowledges what it has to the agent's store, finds what is missing per
APID, counts each pass, and a command whose completion report was lost live ends as what it
was (completed) when the report comes played back, never as a timeout.

Real parts: the tracker (pure), the client on a memory link, the agent in this process on a
simulated clock (tests/inproc.py), the archive on a file, and (system tier) the ground server
on a real ZeroMQ link whose spacecraft side is a source the test scripts.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from flight.agent.agent import Agent
from flight.agent.tm_store import PacketStore
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.memory_link import MemoryLink
from flight.link.messages import AckRun, Codec, Stage, Verification
from flight.link.packets import GapCounter, Service, Subtype, pack_tm, unpack
from ground.archive import Archive, ArchiveRecorder
from ground.client import CommandOutcomeUnknown, CommandTimeout, GroundClient
from ground.completeness import CompletenessTracker, Gap, PassCounts, PassReport, packet_key
from ground.queue import CommandQueue, State, Timeouts
from tests.inproc import InProcessAgent
from tests.test_ground_archive import AGENT_HK, T0_S, agent_hk_values, archive_cli, decoded, intake

AGENT = int(Apid.AGENT)
COMPUTE = int(Apid.COMPUTE)
FILES = int(Apid.FILES)


def hk_packets(codec: Codec, n: int, t0_s: float = T0_S) -> list[bytes]:
    """``n`` AGENT_HK packets a second apart, sequence counts 0.. as the codec draws them."""
    return [codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), t0_s + i) for i in range(n)]


def key_of(raw: bytes) -> tuple[int, int, int]:
    tm = unpack(raw)
    return packet_key(tm.apid, tm.seq_count, tm.time_s)


# --- the tracker (pure) ------------------------------------------------------------------------


@pytest.mark.req("GND-041")
def test_runs_group_consecutive_counts_and_the_store_frees_exactly_those(tmp_path):
    codec = Codec(DICTIONARY)
    raws = hk_packets(codec, 9)  # counts 0..8 at T0 + 0..8 s
    store = PacketStore(tmp_path / "store", max_bytes=4 * 65536, segment_bytes=65536)
    for raw in raws:
        store.append(raw, sent_at=0.0)
    tracker = CompletenessTracker()
    for k in (5, 3, 4, 7, 8, 0):  # in the order they arrived; 1, 2 and 6 lost
        assert tracker.add(*key_of(raws[k]), received_s=0.0)
    ms = [key_of(r)[2] for r in raws]
    runs = tracker.take_runs()
    assert runs == [AckRun(AGENT, 0, 0, ms[0], ms[0]), AckRun(AGENT, 3, 5, ms[3], ms[5]),
                    AckRun(AGENT, 7, 8, ms[7], ms[8])]
    assert tracker.take_runs() == [], "each key is acknowledged once"
    assert store.acknowledge(r.as_tuple() for r in runs) == 6
    assert store.records_held() == 3, "the agent keeps what the ground lacks: counts 1, 2 and 6"

    # A wrap of the 14-bit count is one run; what one acknowledgement cannot carry waits.
    tracker.add(COMPUTE, 16383, 5000, 1.0)
    tracker.add(COMPUTE, 0, 5001, 1.0)
    for seq in (20, 22, 24, 26):
        tracker.add(COMPUTE, seq, 6000 + seq, 1.0)
    first = tracker.take_runs(max_runs=2)
    assert first == [AckRun(COMPUTE, 16383, 0, 5000, 5001), AckRun(COMPUTE, 20, 20, 6020, 6020)]
    assert [r.first_seq for r in tracker.take_runs()] == [22, 24, 26]

    # A copy played back again means the agent lacks the acknowledgement: it is acknowledged again.
    assert not tracker.add(*key_of(raws[3]), received_s=2.0, played_back=True)
    assert not tracker.add(*key_of(raws[4]), received_s=2.0)  # a live copy (a reply's): nothing to say
    assert tracker.take_runs() == [AckRun(AGENT, 3, 3, ms[3], ms[3])]
    store.close()


@pytest.mark.req("GND-040")
def test_gaps_are_found_per_apid_in_time_order_and_never_across_a_boot():
    tracker = CompletenessTracker()
    for seq, ms in ((0, 1000), (1, 1001), (4, 1004), (5, 1005)):
        tracker.add(AGENT, seq, ms, 0.0)
    tracker.add(COMPUTE, 7, 1002, 0.0)
    assert tracker.gaps() == [Gap(AGENT, 2, 2, 1001, 1004)]
    assert tracker.gaps()[0].last_seq == 3
    tracker.add(AGENT, 3, 1003, 1.0, played_back=True)  # played back into place
    assert tracker.gaps() == [Gap(AGENT, 2, 1, 1001, 1003)]
    tracker.add(AGENT, 2, 1002, 1.0, played_back=True)
    assert tracker.gaps() == [] and tracker.missing() == 0

    tracker.add(AGENT, 0, 5000, 2.0)  # the count went back, later: a new boot, not 16 000 lost
    tracker.add(AGENT, 1, 5001, 2.0)
    assert tracker.gaps() == []
    tracker.add(AGENT, 10, 9010, 3.0)  # another boot whose first ten packets were lost: 1 -> 10 looks like 8 lost
    assert tracker.gaps() == [Gap(AGENT, 2, 8, 5001, 9010)]
    tracker.boot_at(9000)  # housekeeping says the agent started at 9000 ms (packet time minus uptime)
    assert tracker.gaps() == []

    for seq, ms in ((16382, 20000), (16383, 20001), (1, 20003)):  # across the wrap: count 0 is missing
        tracker.add(COMPUTE, seq, ms, 4.0)
    assert tracker.gaps(COMPUTE) == [Gap(COMPUTE, 0, 1, 20001, 20003)]
    assert tracker.gaps(COMPUTE, from_ms=20002) == [], "a window holds only gaps between packets inside it"

    # Found in an audit: 700 lost across the wrap (a store that overflowed), with no boot between, counted as
    # none. They are a gap where housekeeping of one boot is known on both sides; without it, a boot (a review:
    # a crash loop before its first housekeeping made 16,000 false losses a restart).
    for seq, ms in ((15999, 100_000), (316, 240_000)):
        tracker.add(FILES, seq, ms, 5.0)
    assert tracker.gaps(FILES) == []  # nothing known of the boots yet
    tracker.boot_at(50_000, 260_000)  # housekeeping at 260 s: a boot that began at 50 s
    assert tracker.gaps(FILES) == [Gap(FILES, 16000, 700, 100_000, 240_000)]
    for seq, ms in ((8000, 300_000), (3, 360_000)):  # back, and its boot's housekeeping last seen at 260 s
        tracker.add(FILES, seq, ms, 6.0)
    assert tracker.gaps(FILES, from_ms=300_000) == []

    # What the live gap count asks (GapCounter): a boot between two packet times, one spanning them, or unknown.
    tracker = CompletenessTracker()
    tracker.boot_at(1000, 1500)
    tracker.boot_at(1000, 5000)
    assert tracker.boot_between(2000, 4000) is False and tracker.boot_between(2000, 6000) is None
    tracker.boot_at(7000, 7200)
    tracker.boot_at(7000, 8000)
    assert tracker.boot_between(5500, 7500) is True and tracker.boot_between(7500, 7900) is False
    assert tracker.boot_between(7900, 7500) is None, "a clock set back says nothing of the boots"
    # Found in review: a board with no clock of its own restarted behind its old time; the new boot's start fell
    # before the last packet of the old one, and one boot "spanned" them: a wrap, 12 083 lost. Spanning needs
    # the boot seen running by the first packet; else unknown.
    tracker = CompletenessTracker()
    tracker.boot_at(0, 3_600_000)
    tracker.boot_at(3_030_000, 3_700_000)
    assert tracker.boot_between(3_600_000, 3_700_000) is None
    gaps = GapCounter(tracker.boot_between)
    assert gaps.observe(0x10, 5000, 3_600_000) == 0 and gaps.observe(0x10, 700, 3_700_000) == 0
    assert gaps.missing == 0 and gaps.restarts == 1
    # and a boot's first packet, 1 ms before its start as packet time less uptime (each rounded) gives it, has
    # that boot after it by the tolerance, not between it and the next packet: not a restart
    tracker = CompletenessTracker()
    tracker.boot_at(20_001, 20_000)
    assert tracker.boot_between(20_000, 20_500) is not True


@pytest.mark.req("GND-040")
def test_a_packet_already_here_is_seen_and_counted():
    tracker = CompletenessTracker()
    assert not tracker.seen(AGENT, 4, 1000)
    assert tracker.add(AGENT, 4, 1000, 0.0)
    assert tracker.seen(AGENT, 4, 1000) and not tracker.seen(AGENT, 4, 1001) and not tracker.seen(COMPUTE, 4, 1000)
    assert not tracker.add(AGENT, 4, 1000, 0.5)
    assert not tracker.add(AGENT, 4, 1000, 0.6, played_back=True)
    stats = tracker.stats()
    assert (stats.keys, stats.received, stats.duplicates, stats.played_back) == (1, 1, 2, 0)
    with pytest.raises(ValueError, match="sequence count"):
        tracker.add(AGENT, 1 << 14, 1000, 0.0)


@pytest.mark.req("GND-040")
def test_each_pass_counts_received_played_back_duplicates_and_missing():
    tracker = CompletenessTracker(pass_gap_s=60.0)
    for seq in range(10):  # pass 1, ground clock 0..9 s: counts 4 and 5 lost
        if seq not in (4, 5):
            tracker.add(AGENT, seq, 1000 + seq, received_s=float(seq))
    tracker.add(COMPUTE, 0, 1003, 3.0)
    assert tracker.pass_index == 1
    for seq in (10, 11, 12):  # pass 2, after 8 min of silence
        tracker.add(AGENT, seq, 480_000 + seq, received_s=490.0 + seq)
    tracker.add(AGENT, 4, 1004, 501.0, played_back=True)  # one of the lost two comes back
    tracker.add(AGENT, 3, 1003, 501.5, played_back=True)  # played back again: a copy
    assert tracker.pass_index == 2
    first, second = tracker.passes(now_s=502.0)
    assert (first.index, first.start_s, first.end_s, first.first_ms, first.last_ms, first.open) == (
        1, 0.0, 9.0, 1000, 1009, False)
    assert first.apids == ((AGENT, PassCounts(received=8, missing=1)), (COMPUTE, PassCounts(received=1)))
    assert second.open and second.apids == ((AGENT, PassCounts(received=3, played_back=1, duplicates=1)),)
    assert second.totals == PassCounts(3, 1, 1, 0)
    assert not tracker.passes(now_s=600.0)[-1].open, "a silence longer than the gap ends it"
    assert second.to_json()["apids"] == [{"apid": AGENT, "received": 3, "played_back": 1, "duplicates": 1,
                                          "missing": 0}]

    assert [p.index for p in tracker.take_changed()] == [1, 2]
    assert tracker.take_changed() == [], "nothing new"
    tracker.add(AGENT, 5, 1005, 503.0, played_back=True)  # the last one: pass 1 is whole now
    changed = tracker.take_changed()
    assert [p.index for p in changed] == [1, 2]  # pass 1's missing changed, pass 2 got one more
    assert changed[0].apids[0][1].missing == 0 and changed[1].totals.played_back == 2


@pytest.mark.req("GND-040")
def test_memory_is_bounded_by_a_horizon_and_a_count_and_says_so():
    tracker = CompletenessTracker(horizon_s=10.0)
    for i in range(50):  # 50 s of packet time, a horizon of 10 s
        tracker.add(AGENT, i, i * 1000, float(i))
    tracker.add(AGENT, 1, 1000, 50.0)
    assert tracker.prune() == 39
    stats = tracker.stats()
    assert (stats.keys, stats.forgotten, stats.known_from_ms) == (11, 39, 39_000)
    assert not tracker.seen(AGENT, 0, 0) and tracker.seen(AGENT, 39, 39_000)

    capped = CompletenessTracker(max_keys=100)
    for i in range(250):
        capped.add(AGENT, i, 10_000 + i, 0.0)
    stats = capped.stats()
    assert stats.keys <= 100 and stats.forgotten == 250 - stats.keys
    assert capped.seen(AGENT, 249, 10_249) and not capped.seen(AGENT, 0, 10_000)
    assert capped.gaps() == [], "nothing is missing in what is held"


def test_a_cap_of_a_few_keys_keeps_the_newest_and_never_runs_past_them():
    """A tracker made with fewer than 10 keys (the constructor takes 1) raised IndexError at the add that
    passed its cap: its pruning cut at a tenth of room, none for a cap below 10."""
    for max_keys in (1, 5, 9):
        tracker = CompletenessTracker(max_keys=max_keys)
        for i in range(30):
            assert tracker.add(AGENT, i, 10_000 + i, 0.0)
        stats = tracker.stats()
        assert 1 <= stats.keys <= max_keys and stats.forgotten == 30 - stats.keys
        assert tracker.seen(AGENT, 29, 10_029) and not tracker.seen(AGENT, 0, 10_000)


def test_keys_of_a_clock_standing_still_are_held_to_the_cap_too():
    """Found in audit: the cap cut at a packet time, so keys that all had one (a board clock standing still, a
    simulation paused) never went: held past ``max_keys`` without end, each add sorting them all."""
    tracker = CompletenessTracker(max_keys=100)
    for i in range(1000):
        assert tracker.add(FILES, i, 5000, 0.0)
    stats = tracker.stats()
    assert 1 <= stats.keys <= 100 and stats.forgotten == 1000 - stats.keys
    assert tracker.seen(FILES, 999, 5000) and not tracker.seen(FILES, 0, 5000), "the newest kept, by count"
    assert tracker.gaps() == []


@pytest.mark.req("GND-040")
def test_a_burst_of_one_millisecond_across_the_wrap_is_no_gap_and_its_losses_are_counted():
    """Found in audit: packets of one APID in one millisecond (a burst of file PDUs; the key's time is whole ms)
    across the 14-bit wrap sorted as 0, 1, 16382, 16383, and the pass said 16,380 missing where none was."""
    tracker = CompletenessTracker()
    for seq, ms in ((16381, 4999), (16382, 5000), (16383, 5000), (0, 5000), (1, 5000), (2, 5001)):
        tracker.add(FILES, seq, ms, 0.0)
    assert tracker.gaps() == [] and tracker.missing() == 0
    assert tracker.passes()[0].apids == ((FILES, PassCounts(received=6)),)
    # What is lost around such a burst is still counted, once, where it is.
    tracker.add(COMPUTE, 16380, 7000, 1.0)
    for seq in (16383, 1, 3):  # 16381, 16382, 0 and 2 lost; 16383, 1 and 3 in one millisecond
        tracker.add(COMPUTE, seq, 7001, 1.0)
    assert tracker.gaps(COMPUTE) == [Gap(COMPUTE, 16381, 2, 7000, 7001), Gap(COMPUTE, 0, 1, 7001, 7001),
                                     Gap(COMPUTE, 2, 1, 7001, 7001)]


# --- the client --------------------------------------------------------------------------------


@pytest.mark.req("GND-040")
def test_the_client_unwraps_playback_keeps_one_copy_and_never_goes_back_in_time(tmp_path):
    pair = MemoryLink()
    client = GroundClient(pair.ground)
    archive = Archive(tmp_path / "ground.sqlite")
    recorder = ArchiveRecorder(archive).attach(client)
    heard: list = []
    client.listeners.append(heard.append)
    codec = Codec(DICTIONARY)
    raws = hk_packets(codec, 5)  # uptime_s 10 + i

    pair.flight.reply("ground", raws[0])  # a reply, then its stream copy
    for k in (0, 1, 3):  # 2 and 4 lost live
        pair.flight.publish(raws[k])
    items = client.poll()
    assert [(i.packet.seq_count, i.duplicate) for i in items] == [(0, False), (0, True), (1, False), (3, False)]
    assert client.gaps.missing == 1 and client.duplicates == 1
    assert client.latest["uptime_s"] == (13.0, T0_S + 3)

    pair.flight.publish(codec.encode_playback([raws[2], raws[1], b"\x00junk"], T0_S + 10))
    items = client.poll()
    assert [(i.packet.seq_count if i.packet else None, i.played_back, i.duplicate, bool(i.error)) for i in items] == [
        (2, True, False, False), (1, True, True, False), (None, True, False, True)]
    assert client.latest["uptime_s"] == (13.0, T0_S + 3), "a played-back value is history, not the latest"
    pair.flight.publish(codec.encode_playback([raws[4]], T0_S + 11))
    client.poll()
    assert client.latest["uptime_s"] == (14.0, T0_S + 4), "... unless nothing newer came"

    assert [i.packet.seq_count for i in heard if i.packet] == [0, 1, 3, 2, 4], "listeners get each packet once"
    assert [i.played_back for i in heard if i.packet] == [False, False, False, True, True]
    assert (client.duplicates, client.played_back, client.bad_packets) == (2, 2, 1)
    assert client.gaps.missing == 1 and client.gaps.restarts == 0, "played-back counts are not the live sequence"
    assert client.tracker.gaps() == []
    ms = [key_of(r)[2] for r in raws]
    assert client.tracker.take_runs() == [AckRun(AGENT, 0, 4, ms[0], ms[4])]

    recorder.close()
    out = tmp_path / "all.hex"
    assert archive.export_raw(out, valid_only=True) == 5
    archived = [bytes.fromhex(ln) for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert sorted(archived, key=key_of) == raws, "archived in place by packet time, each once"
    archive.close()


def lose_on_the_air(rig: InProcessAgent) -> dict:
    """A loss of signal: while ``los["on"]`` every packet the agent publishes is lost on the air (the agent stores it,
    as over a real pass gap), counted per APID in ``los["lost"]``; ``los["until"]``, where set, ends it at the first
    packet it is true of, which is heard."""
    los: dict = {"on": True, "lost": {}, "until": None}
    publish = rig.link.flight.publish

    def hook(packet: bytes) -> bool:
        if los["on"]:
            tm = unpack(packet)
            if los["until"] is None or not los["until"](tm):
                los["lost"][tm.apid] = los["lost"].get(tm.apid, 0) + 1
                return True
            los["on"] = False
        return publish(packet)

    rig.link.flight.publish = hook
    return los


def is_hk(tm) -> bool:
    return tm.apid == AGENT and (tm.service, tm.subtype) == (Service.HOUSEKEEPING, Subtype.HK_REPORT)


def live(heard: list, apid: int = AGENT) -> list:
    return [i for i in heard if i.packet is not None and i.packet.apid == apid and not i.played_back]


@pytest.mark.req("GND-040", "LNK-006")
@pytest.mark.parametrize("first", ["housekeeping", "a report"])
def test_a_loss_of_signal_across_the_wrap_is_counted_live_as_what_was_lost(tmp_path, first):
    """Found in audit: the live gap count took a count gone back outside the wrap's margin (16 127 .. 255) for a
    restart, so ~1,800 packets of AGENT lost over a 5-minute loss of signal across the 14-bit wrap (stored-only
    housekeeping) were counted as none: no GAP line, no gaps row, lost_live too low. Housekeeping's uptime now
    tells a wrap from a restart: where the first packet heard is housekeeping, at once; where it is a command's
    report, the loss is counted with the first housekeeping after it (before it, nothing could tell)."""
    rig = InProcessAgent(tmp_path / "state", start=False)
    try:
        rig.agent.codec.seq.set(AGENT, 15_900)
        rig.start()
        rig.advance(5)
        assert rig.client.gaps.missing == 0 and rig.client.gaps.restarts == 0
        los = lose_on_the_air(rig)
        rig.advance(300)
        lost = los["lost"]
        assert lost[AGENT] > 1000, lost
        heard: list = []
        rig.client.listeners.append(heard.append)
        if first == "housekeeping":
            los["until"] = is_hk
        else:
            los["on"] = False
            assert rig.send("NOOP").completed  # its reports are the first heard: no time passes
        rig.advance(2)
        after = live(heard)
        assert after[0].packet.seq_count < 15_900 - 256, "the count went back, and not at the wrap's margin"
        if first == "housekeeping":
            assert after[0].gap == lost[AGENT]
        else:
            assert after[0].packet.service == Service.VERIFICATION
            reports = [i for i in after if i.packet.service == Service.VERIFICATION]
            assert all(i.gap == 0 for i in reports), "nothing knew the boot yet: taken as a restart"
            hk = next(i for i in after if is_hk(i.packet))
            assert hk.gap == lost[AGENT], "counted with the first housekeeping after it, which told the boot"
        assert sum(i.gap for i in after) == lost[AGENT]
        assert rig.client.gaps.missing == sum(lost.values()) and rig.client.gaps.restarts == 0
        assert rig.client.agent_restarts == 0
        assert rig.client.tracker.missing(AGENT) == lost[AGENT]
    finally:
        rig.close()


@pytest.mark.req("GND-040", "LNK-006")
@pytest.mark.parametrize("count, first", [("below", "housekeeping"), ("below", "a report"),
                                          ("above", "housekeeping")])
def test_an_agent_restarted_during_a_loss_of_signal_is_a_restart_with_no_loss_counted(tmp_path, count, first):
    """The other side of the wrap's test above: the agent restarted during the silence (its counts began again at
    0, ~600 of them lost) is a restart, nothing counted lost, whether the first count heard is below its old one
    or above it (found in audit: housekeeping that said the agent restarted had its count judged before that was
    taken in: 30 then 600 counted 569 lost)."""
    rig = InProcessAgent(tmp_path / "state", start=False)
    try:
        if count == "below":
            rig.agent.codec.seq.set(AGENT, 15_900)
        rig.start()
        rig.advance(5)
        assert rig.client.gaps.missing == 0
        los = lose_on_the_air(rig)
        rig.advance(20)
        rig.agent.close()  # the agent restarts, unheard
        rig.agent = Agent(rig.config, link=rig.link.flight, board=rig.board)
        rig.start()
        rig.advance(100)
        assert los["lost"][AGENT] > 256, los["lost"]
        heard: list = []
        rig.client.listeners.append(heard.append)
        if first == "housekeeping":
            los["until"] = is_hk
        else:
            los["on"] = False
            assert rig.send("NOOP").completed
        rig.advance(2)
        after = live(heard)
        assert after[0].packet.seq_count >= 256 and is_hk(after[0].packet) == (first == "housekeeping")
        assert [i.gap for i in after if i.gap] == [] and rig.client.gaps.missing == 0
        assert rig.client.agent_restarts == 1
        assert rig.client.tracker.missing(AGENT) == 0
    finally:
        rig.close()


def lose_completion(rig: InProcessAgent, cmd_id: int) -> dict:
    """Lose on the air (sent, never received) every completion report of ``cmd_id`` while
    ``switch["on"]``: the agent's store still has it."""
    codec = Codec(DICTIONARY)
    switch = {"on": True}

    def lost(packet: bytes) -> bool:
        tm = unpack(packet)
        if not switch["on"] or tm.service != Service.VERIFICATION:
            return False
        rec = codec.decode_tm(tm)
        return isinstance(rec, Verification) and rec.cmd_id == cmd_id and rec.stage is Stage.COMPLETED

    publish, reply = rig.link.flight.publish, rig.link.flight.reply
    rig.link.flight.publish = lambda packet: True if lost(packet) else publish(packet)
    rig.link.flight.reply = lambda peer, packet: True if lost(packet) else reply(peer, packet)
    return switch


@pytest.mark.req("GND-042")
def test_a_completion_lost_live_comes_in_playback_and_settles_an_unknown_outcome(tmp_path):
    rig = InProcessAgent(tmp_path / "state")
    try:
        cmd_id = 0x5EED
        switch = lose_completion(rig, cmd_id)
        with pytest.raises(CommandOutcomeUnknown) as waited:
            rig.client.send("NOOP", {}, timeout_s=0.3, retries=0, cmd_id=cmd_id)
        result = waited.value.result
        assert isinstance(waited.value, CommandTimeout), "callers that know only timeouts still stop"
        assert result.outcome == "unknown" and result.gave_up and result.stage_reached(Stage.ACCEPTED)
        assert not result.final and rig.client.unsettled() == [result]
        settled: list = []
        rig.client.settled_listeners.append(settled.append)
        how: list = []
        rig.client.listeners.append(lambda item: how.append(item.played_back)
                                    if getattr(item.record, "cmd_id", None) == cmd_id else None)
        switch["on"] = False  # the link is whole again; the report waits in the agent's store
        for _ in range(60):  # the ground listens: it acknowledges once a simulated second
            rig.clock.advance(1.0)
            rig.client.acknowledge_store()
            rig.pump()
            if settled:
                break
        assert settled == [result] and result.completed and result.outcome == "completed"
        assert how == [True], "the completion came played back"
        assert rig.client.unsettled() == []
        assert rig.hk()["cmd_executed"] == 1
    finally:
        rig.close()


@pytest.mark.req("GND-042")
def test_asking_again_settles_an_unknown_outcome_without_running_the_command_twice(tmp_path):
    rig = InProcessAgent(tmp_path / "state")
    try:
        cmd_id = 0xA5CED
        switch = lose_completion(rig, cmd_id)
        with pytest.raises(CommandOutcomeUnknown) as waited:
            rig.client.send("RESET_COUNTERS", {}, timeout_s=0.3, retries=0, cmd_id=cmd_id)
        result = waited.value.result
        switch["on"] = False
        assert rig.client.ask(cmd_id)  # the same packet, same cmd_id
        rig.pump()
        assert result.completed and rig.client.unsettled() == []
        values = rig.hk()
        assert values["cmd_executed"] == 1 and values["tc_duplicates"] == 1, "answered, not run again"
        assert not rig.client.ask(cmd_id), "settled: nothing left to ask about"
    finally:
        rig.close()


@pytest.mark.req("GND-042", "AGT-017")
def test_a_command_with_no_report_is_unknown_until_the_agent_says_it_never_received_it(tmp_path):
    """No report at all: it may have run (its reports on board), so not a timeout; COMMAND_STATUS
    asks the agent, which runs nothing, and its "not received" makes it a timeout: it never ran."""
    rig = InProcessAgent(tmp_path / "state")
    try:
        send = rig.link.ground.send
        rig.link.ground.send = lambda packet: True  # lost on the way up
        with pytest.raises(CommandOutcomeUnknown) as waited:
            rig.client.send("NOOP", {}, timeout_s=1.0, retries=1, attempt_timeout_s=0.05)
        result = waited.value.result
        assert result.outcome == "unknown" and result.attempts == 2 and rig.client.unsettled() == [result]
        rig.link.ground.send = send
        assert rig.client.status(result.cmd_id)["state"] == "not_received"
        assert result.outcome == "timeout" and rig.client.unsettled() == []
        assert rig.hk()["cmd_executed"] == 1  # COMMAND_STATUS itself; the NOOP never ran
    finally:
        rig.close()


@pytest.mark.req("GND-042", "AGT-017")
def test_a_command_that_ran_with_every_report_lost_is_settled_completed_by_asking(tmp_path):
    rig = InProcessAgent(tmp_path / "state")
    try:
        ground = rig.link.ground
        receive_tagged = ground.receive_tagged
        ground.receive_tagged = lambda: (receive_tagged(), [])[1]  # the agent runs; every report is lost
        with pytest.raises(CommandOutcomeUnknown) as waited:
            rig.client.send("PING", {"token": 8}, timeout_s=0.2, retries=0)
        ground.receive_tagged = receive_tagged
        assert [e.args["token"] for e in rig.events("PING_RECEIVED")] == []  # the ground saw nothing
        result = waited.value.result
        assert rig.client.status(result.cmd_id)["state"] == "completed"
        assert result.outcome == "completed"
    finally:
        rig.close()


# --- the queue (pure) ---------------------------------------------------------------------------

T = Timeouts(approval_s=60, release_s=5, accepted_s=2, completed_s=10)


@pytest.mark.req("GND-042")
def test_the_queue_keeps_an_acknowledged_command_unknown_until_its_report_settles_it():
    q = CommandQueue("sc", T, unknown_after="accepted")
    e = q.submit("NOOP", {}, "alice", False, 0.0)
    q.next_to_send(0.0)
    q.sent(e.id, 7, 1, 0.0)
    q.report(7, "accepted", True, "", "", {}, 0.5)
    assert q.tick(10.4) == [] and q.tick(10.5) == [e]
    assert e.state is State.UNKNOWN and not e.state.final and e.outcome == "unknown" and q.in_flight() == [e]
    assert e.stages[-1]["stage"] == "unknown" and e.stages[-1]["ok"] and "may have run" in e.stages[-1]["reason"]
    assert q.tick(10_000.0) == [], "no window: it waits for its report"
    q.asked(e.id, 20.0)
    assert e.stages[-1]["stage"] == "asked" and e.attempts == 2
    assert q.report(7, "started", True, "", "", {}, 21.0) is e and e.state is State.UNKNOWN
    assert q.report(7, "completed", True, "", "", {"n": 1}, 22.0) is e
    assert e.state is State.COMPLETED and e.outcome == "completed" and e.result == {"n": 1} and q.in_flight() == []

    f = q.submit("NOOP", {}, "alice", False, 30.0)  # never acknowledged: that is a timeout
    q.next_to_send(30.0)
    q.sent(f.id, 8, 1, 30.0)
    assert q.tick(32.0) == [f] and f.state is State.TIMEOUT

    g = q.submit("NOOP", {}, "alice", False, 40.0)  # a late failure settles an unknown one too
    q.next_to_send(40.0)
    q.sent(g.id, 9, 1, 40.0)
    q.report(9, "accepted", True, "", "", {}, 40.1)
    q.tick(50.1)
    assert g.state is State.UNKNOWN
    q.report(9, "completed", False, "EXECUTION_ERROR", "disk full", {}, 60.0)
    assert g.state is State.FAILED and g.outcome == "failed at completed: EXECUTION_ERROR disk full"

    plain = CommandQueue("sc", T)  # by default only a start makes it unknown
    h = plain.submit("NOOP", {}, "alice", False, 0.0)
    plain.next_to_send(0.0)
    plain.sent(h.id, 1, 1, 0.0)
    plain.report(1, "started", True, "", "", {}, 0.1)
    plain.tick(10.1)
    assert h.state is State.UNKNOWN
    i = plain.submit("NOOP", {}, "alice", False, 20.0)  # no start report asked for: accepted is as far as it says
    plain.next_to_send(20.0)
    plain.sent(i.id, 2, 1, 20.0, acks=["accepted", "completed"])
    plain.report(2, "accepted", True, "", "", {}, 20.1)
    plain.tick(30.1)
    assert i.state is State.UNKNOWN and plain.snapshot(i)["acks"] == ["accepted", "completed"]
    j = plain.submit("NOOP", {}, "alice", False, 40.0)  # a start asked for and not come: accepted is not enough
    plain.next_to_send(40.0)
    plain.sent(j.id, 3, 1, 40.0, acks=["accepted", "started", "completed"])
    plain.report(3, "accepted", True, "", "", {}, 40.1)
    plain.tick(50.1)
    assert j.state is State.TIMEOUT
    with pytest.raises(ValueError, match="unknown_after"):
        CommandQueue("sc", T, unknown_after="completed")


# --- the archive --------------------------------------------------------------------------------


@pytest.mark.req("GND-040")
def test_the_archive_keeps_each_packet_once_across_copies_and_a_reopening(tmp_path):
    codec = Codec(DICTIONARY)
    path = tmp_path / "ground.sqlite"
    raws = hk_packets(codec, 40) + [codec.encode_event("PING_RECEIVED", {"token": 1}, T0_S + 41)]
    bad = pack_tm(Apid.AGENT, 999, Service.HOUSEKEEPING, 25, b"\xc1", T0_S + 42)  # header good, data not msgpack
    with Archive(path, chunk_packets=16) as archive:  # housekeeping sealed in chunks of 16
        for raw in raws:
            assert archive.record(decoded(codec, raw), T0_S) is not None
        assert archive.record(intake(codec, bad), T0_S) is not None  # kept as invalid, and known by its header
        for raw in (raws[0], raws[-1], bad):
            assert archive.record(intake(codec, raw), T0_S + 60) is None
        assert archive.duplicates == 3
        assert archive.counts()["packets"] == len(raws) + 1 and archive.counts()["events"] == 1
    with Archive(path, chunk_packets=16) as archive:  # a restarted server remembers nothing; the file does
        recorder = ArchiveRecorder(archive)
        for raw in (*raws, bad):
            recorder(intake(codec, raw))
        assert recorder.flush() == 0
        stats = recorder.statistics()
        assert stats.duplicates == len(raws) + 1 and stats.recorded == 0
        assert archive.counts()["packets"] == len(raws) + 1 and archive.counts()["hk_sealed"] >= 32
        assert archive.check() == []
        recorder.close()


@pytest.mark.req("GND-040")
def test_a_file_from_before_the_key_table_gets_it_with_the_keys_a_playback_could_bring_again(tmp_path):
    codec = Codec(DICTIONARY)
    path = tmp_path / "ground.sqlite"
    old = hk_packets(codec, 20, T0_S - 30 * 86_400.0)  # a month before: beyond any playback
    recent = hk_packets(codec, 40)
    with Archive(path, chunk_packets=16) as archive:
        for raw in old + recent:
            archive.record(decoded(codec, raw), T0_S)
        archive.seal(force=True)
    with sqlite3.connect(path) as db:  # the file as a ground server before these tables wrote it
        db.execute("DROP TABLE packet_keys")
        db.execute("DROP TABLE passes")
    with Archive(path, chunk_packets=16) as archive:
        assert archive.keys_added == len(recent), "the last 7 days of packet time, sealed chunks included"
        assert archive._db.execute("PRAGMA user_version").fetchone()[0] == 2  # noqa: SLF001 - added to, not changed
        assert all(archive.record(decoded(codec, raw), T0_S + 100) is None for raw in recent)
        assert archive.counts()["packets"] == len(old) + len(recent) and archive.check() == []
        assert archive.passes() == []


def key_count(archive: Archive) -> int:
    return archive._db.execute("SELECT count(*) FROM packet_keys").fetchone()[0]  # noqa: SLF001 - the table itself


@pytest.mark.req("GND-040")
def test_packet_keys_age_out_after_their_horizon_of_reception(tmp_path):
    codec = Codec(DICTIONARY)
    with Archive(tmp_path / "ground.sqlite", key_horizon_days=1.0) as archive:
        early = codec.encode_hk(AGENT_HK.sid, agent_hk_values(0), T0_S - 3 * 86_400.0)
        late = codec.encode_hk(AGENT_HK.sid, agent_hk_values(1), T0_S)
        archive.record(decoded(codec, early), T0_S - 3 * 86_400.0)  # received then
        archive.record(decoded(codec, late), T0_S)
        archive.retain(now_s=T0_S)
        assert archive.record(decoded(codec, late), T0_S) is None
        assert archive.record(decoded(codec, early), T0_S) is not None, \
            "received beyond the horizon a packet is not known any more (no store holds it that long)"


@pytest.mark.req("GND-040", "GND-008")
def test_a_packet_from_a_board_fallen_back_to_1970_played_back_again_is_archived_once(tmp_path):
    """Found in audit: keys aged by packet time, so the key of a packet dated 1970 (the board's clock lost in a power
    cut) went at the next retention and the store's second playback of it was archived twice. Keys age by reception:
    the copy is dropped, and retention still lets every key go a horizon after it came."""
    codec = Codec(DICTIONARY)
    with Archive(tmp_path / "ground.sqlite", key_horizon_days=1.0) as archive:
        before = hk_packets(codec, 5)  # the board's clock right, then a power cut
        after = hk_packets(codec, 5, t0_s=100.0)  # since: 1970-01-01T00:01:40Z on
        for raw in before:
            archive.record(decoded(codec, raw), T0_S)
        for raw in after:
            archive.record(decoded(codec, raw), T0_S + 600.0)
        archive.retain(now_s=T0_S + 660.0)
        assert all(archive.record(decoded(codec, raw), T0_S + 700.0) is None for raw in after), \
            "played back again: each is archived once"
        assert archive.duplicates == len(after)
        assert archive.counts()["packets"] == len(before) + len(after)
        archive.retain(now_s=T0_S + 600.0 + 86_400.0 + 1.0)  # a horizon after the last of them came
        assert key_count(archive) == 0, "retention still bounds the keys"
        assert archive.record(decoded(codec, after[0]), T0_S + 86_400.0 * 2) is not None


@pytest.mark.req("GND-040")
def test_keys_from_before_receptions_were_kept_are_kept_a_horizon_from_the_upgrade(tmp_path):
    codec = Codec(DICTIONARY)
    path = tmp_path / "ground.sqlite"
    dated_1970 = hk_packets(codec, 3, t0_s=100.0)
    with Archive(path) as archive:
        for raw in dated_1970:
            archive.record(decoded(codec, raw), T0_S)
    with sqlite3.connect(path) as db:  # the key table as a ground server before receptions wrote it
        db.execute("DROP INDEX packet_keys_unreceived")
        db.execute("ALTER TABLE packet_keys DROP COLUMN received_s")
    with Archive(path, key_horizon_days=1.0) as archive:
        columns = {row[1] for row in archive._db.execute("PRAGMA table_info(packet_keys)")}  # noqa: SLF001
        assert "received_s" in columns and key_count(archive) == len(dated_1970)
        archive.retain(now_s=T0_S + 2 * 86_400.0)  # no reception known: taken as received now, not at 1970
        assert all(archive.record(decoded(codec, raw), T0_S + 2 * 86_400.0) is None for raw in dated_1970)
        archive.retain(now_s=T0_S + 3 * 86_400.0 + 1.0)
        assert key_count(archive) == 0


@pytest.mark.req("GND-040")
def test_passes_are_archived_updated_in_place_and_printed(tmp_path, capsys):
    tracker = CompletenessTracker(pass_gap_s=60.0)
    for seq in range(10):
        if seq != 4:
            tracker.add(AGENT, seq, int(T0_S * 1000) + seq * 1000, T0_S + seq)
    tracker.add(COMPUTE, 3, int(T0_S * 1000) + 3000, T0_S + 3)
    for seq in (10, 11):
        tracker.add(AGENT, seq, int(T0_S * 1000) + 600_000 + seq, T0_S + 600 + seq)
    path = tmp_path / "ground.sqlite"
    with Archive(path) as archive:
        assert archive.record_passes(tracker.take_changed(), "sunlit-1") == 3  # rows: pass 1 twice (2 APIDs)
        tracker.add(AGENT, 4, int(T0_S * 1000) + 4000, T0_S + 612, played_back=True)
        tracker.add(AGENT, 3, int(T0_S * 1000) + 3000, T0_S + 612, played_back=True)
        archive.record_passes(tracker.take_changed(), "sunlit-1")
        first, second = archive.passes()
        assert (first.start_s, first.end_s, first.first_s, first.last_s) == (T0_S, T0_S + 9, T0_S, T0_S + 9)
        assert first.apids == ((AGENT, PassCounts(received=9)), (COMPUTE, PassCounts(received=1)))
        assert second.totals == PassCounts(received=2, played_back=1, duplicates=1, missing=0)
        assert [p.start_s for p in archive.passes(limit=1)] == [second.start_s]
        assert archive.passes(spacecraft="sunlit-2") == []
        assert second.to_json()["played_back"] == 1 and archive.check() == []
    assert archive_cli("passes", "--db", str(path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["pass", "start", "(UTC)"] and len(out) == 1 + 3 + 2
    assert out[1].startswith("2026-11-16T12:00:00.000Z") and out[1].split()[-5:] == ["all", "10", "0", "0", "0"]
    assert out[4].split()[-5:] == ["all", "2", "1", "0", "1"]
    assert archive_cli("passes", "--db", str(path), "--spacecraft", "sunlit-2") == 2  # never heard of: said
    assert "--spacecraft sunlit-2: not in" in capsys.readouterr().err


# --- end to end: the agent in this process ------------------------------------------------------


@pytest.mark.req("GND-040", "GND-041")
def test_what_the_agent_sent_while_nobody_listened_is_archived_once_when_the_ground_does(tmp_path):
    rig = InProcessAgent(tmp_path / "state")
    try:
        store = rig.agent.downlink.store
        sent: dict[tuple[int, int, int], bytes] = {}
        for seg, i in store.in_range(-(2**62), 2**62):  # what the agent sent before this ground listened
            raw = store.read(seg, i)
            sent[key_of(raw)] = raw
        air = {"up": True}
        publish = rig.link.flight.publish

        def on_the_air(packet: bytes) -> bool:
            if unpack(packet).apid != Apid.PLAYBACK:
                sent[key_of(packet)] = packet
            return publish(packet) if air["up"] else True  # out of contact: sent, and lost

        rig.link.flight.publish = on_the_air
        client = rig.client = GroundClient(rig.link.ground, tracker=CompletenessTracker(pass_gap_s=30.0),
                                           clock=rig.clock.now_s)
        archive = Archive(tmp_path / "ground.sqlite", chunk_packets=32)
        recorder = ArchiveRecorder(archive).attach(client)

        rig.advance(20.0)  # heard live, never acknowledged
        air["up"] = False
        rig.advance(45.0)  # out of contact, longer than a pass gap
        air["up"] = True
        for _ in range(90):  # a pass: the ground acknowledges once a simulated second
            rig.clock.advance(1.0)
            client.acknowledge_store()
            rig.pump()
        client.acknowledge_store()
        rig.pump()
        recorder.close()

        out = tmp_path / "all.hex"
        archive.export_raw(out)
        archived = [bytes.fromhex(ln) for ln in out.read_text().splitlines() if not ln.startswith("#")]
        keys = [key_of(raw) for raw in archived]
        assert len(keys) == len(set(keys)), "a packet archived twice"
        assert dict(zip(keys, archived)) == sent, "every packet the agent sent, byte for byte, and nothing else"
        assert client.played_back > 0 and recorder.statistics().duplicates == 0, "copies stop at the client"
        assert client.tracker.gaps() == []
        assert store.records_held() == 0, "acknowledged: the agent's store let go of all of it"
        first, second = client.tracker.passes()
        assert first.totals.played_back == 0 and second.totals.played_back == client.played_back
        assert first.totals.missing == second.totals.missing == 0
        assert first.totals.received + second.totals.received + client.played_back == len(sent)
        archive.close()
    finally:
        rig.close()


@pytest.mark.req("GND-040", "GND-041")
def test_a_restarted_ground_goes_on_with_its_last_pass_and_counts_what_the_archive_had_as_duplicates(tmp_path):
    """Found in review: a ground server restarted mid-pass split the pass in two and counted what the
    agent played back again (archived, not yet acknowledged) as new playback. A restarted server's
    tracker goes on with the archive's last pass when it hears the link within the pass gap of that
    pass's end, and a packet the archive had is a duplicate: known at intake (the keys of the pass's
    live span), or found by the archive (one played back in it from before that span)."""
    codec = Codec(DICTIONARY)
    old = codec.encode_hk(AGENT_HK.sid, agent_hk_values(99), T0_S - 600)  # made in a silence before the pass
    raws = hk_packets(codec, 12)
    archive = Archive(tmp_path / "ground.sqlite")
    recorder = ArchiveRecorder(archive, max_delay_s=3600.0, collect_keys=True)

    def take(tracker: CompletenessTracker, raw: bytes, received_s: float, played_back: bool = False) -> bool:
        new = tracker.add(*key_of(raw), received_s, played_back)
        if new:
            recorder(decoded(codec, raw))
        return new

    def file(tracker: CompletenessTracker) -> None:  # what the server does every few seconds and at its stop
        recorder.flush()
        committed, _lost, copies = recorder.take_keys()
        tracker.committed(committed, copies)
        archive.record_passes(tracker.take_changed())

    first = CompletenessTracker(pass_gap_s=60.0, hold_acks=True)
    for i in (0, 1, 2, 4, 5, 6, 7):  # live; count 3 lost
        take(first, raws[i], T0_S + i)
    take(first, old, T0_S + 5, played_back=True)
    file(first)
    assert archive.passes()[0].totals == PassCounts(received=7, played_back=1, missing=1)

    second = CompletenessTracker(pass_gap_s=60.0, hold_acks=True)  # the server restarted: the same archive
    second.resume(*archive.last_pass())
    assert second.take_changed() == [], "nothing new to write until the link is heard"
    # heard 23 s after the pass's last reception: the same pass. Played back again: 6 and 7 (archived, in the
    # pass's live span), the old one (archived, played back in it); 3 for the first time. Then live again.
    assert not take(second, raws[6], T0_S + 30, played_back=True)
    assert not take(second, raws[7], T0_S + 30, played_back=True)
    assert take(second, old, T0_S + 30, played_back=True), "not in the live span: only the archive knows it"
    assert take(second, raws[3], T0_S + 30, played_back=True)
    for i in (8, 9):
        take(second, raws[i], T0_S + 31 + i)
    file(second)
    (one,) = archive.passes()
    assert (one.start_s, one.end_s) == (T0_S, T0_S + 40), "one pass, continued across the restart"
    assert one.totals == PassCounts(received=9, played_back=2, duplicates=3, missing=0)
    assert second.archived_copies == second.archived_copies_played_back == 1 and second.played_back == 1
    assert second.take_runs() and recorder.statistics().duplicates == 1

    third = CompletenessTracker(pass_gap_s=60.0, hold_acks=True)  # restarted again, and silent for longer
    third.resume(*archive.last_pass())
    assert not take(third, raws[9], T0_S + 101, played_back=True)  # 61 s after: a pass of its own
    take(third, raws[10], T0_S + 102)
    file(third)
    again, new = archive.passes()
    assert again.start_s == T0_S and again.totals == one.totals, "the earlier pass as it was"
    assert new.start_s == T0_S + 101 and new.totals == PassCounts(received=1, duplicates=1)

    with pytest.raises(ValueError, match="only before any packet"):
        third.resume(*archive.last_pass())
    report, keys = archive.last_pass()
    damaged = PassReport(1, report.start_s, report.start_s - 1.0, report.first_ms, report.last_ms, False, report.apids)
    with pytest.raises(ValueError, match="end_s"):
        CompletenessTracker().resume(damaged, keys)
    with pytest.raises(ValueError, match="sequence count"):
        CompletenessTracker().resume(report, [(AGENT, 1 << 14, 0)])
    assert archive.last_pass("sunlit-2") is None
    recorder.close()
    archive.close()


@pytest.mark.req("GND-041")
def test_only_what_the_archive_committed_durably_is_acknowledged_and_what_it_dropped_is_taken_again(tmp_path):
    """Found in audit: the ground acknowledged packets held only in memory (the agent deletes what is
    acknowledged). A held tracker acknowledges a key once the recorder says it is committed, in a
    transaction synced to disk; a key the recorder had to drop is forgotten, so its playback is new."""
    codec = Codec(DICTIONARY)
    path = tmp_path / "ground.sqlite"
    archive = Archive(path, busy_timeout_s=0.05)
    recorder = ArchiveRecorder(archive, max_delay_s=3600.0, max_pending=3, collect_keys=True)
    synchronous: list[int] = []
    record = archive.record

    def recording(*args, **kwargs):
        synchronous.append(archive._db.execute("PRAGMA synchronous").fetchone()[0])
        return record(*args, **kwargs)
    archive.record = recording
    tracker = CompletenessTracker(hold_acks=True)
    raws = hk_packets(codec, 4)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file (in the field: a full disk)
    for raw in raws:
        assert tracker.add(*key_of(raw), received_s=0.0)
        recorder(decoded(codec, raw))
    assert recorder.flush() == 0 and recorder.failing
    assert recorder.statistics().dropped == 1
    committed, lost, copies = recorder.take_keys()
    assert committed == [] and lost == [key_of(raws[0])] and copies == []
    tracker.committed(committed)
    tracker.lost(lost)
    assert tracker.take_runs() == [], "nothing the archive does not hold is acknowledged"
    assert not tracker.add(*key_of(raws[1]), received_s=1.0, played_back=True)  # a copy in playback: still held
    assert tracker.take_runs() == []
    assert tracker.add(*key_of(raws[0]), received_s=1.0, played_back=True), "a dropped packet is new again"
    blocker.execute("COMMIT")
    assert recorder.flush() == 3 and not recorder.failing
    committed, lost, copies = recorder.take_keys()
    assert committed == [key_of(r) for r in raws[1:]] and lost == [] and copies == []
    assert synchronous[-1] == 2, "the recorder's commit is synced (FULL), not left to the next checkpoint"
    assert archive._db.execute("PRAGMA synchronous").fetchone()[0] == 1, "other writes stay NORMAL"
    tracker.committed(committed)
    ms = [key_of(r)[2] for r in raws]
    assert tracker.take_runs() == [AckRun(AGENT, 1, 3, ms[1], ms[3])]
    plain = ArchiveRecorder(archive, max_delay_s=3600.0)  # nobody takes its keys: it keeps none
    plain(decoded(codec, codec.encode_hk(AGENT_HK.sid, agent_hk_values(9), T0_S + 9)))
    assert plain.flush() == 1 and plain.take_keys() == ([], [], [])
    blocker.close()
    archive.close()


# --- the ground server (system tier: real sockets) ------------------------------------------------


@pytest.fixture
def scripted(tmp_path, short_dir, monkeypatch):
    """``make(**server_kwargs)``: a source speaking the agent's side of a real ZeroMQ link and a
    server with an archive on it, passes filed every 0.2 s; both closed at the end."""
    import ground.server as server_module
    from flight.link.transport import open_flight_link
    from ground.auth import UserStore
    from ground.server import GroundServer, quick_config
    from tests.test_ground_server import make_users

    monkeypatch.setattr(server_module, "PASS_WRITE_PERIOD_S", 0.2)
    made: list = []

    def make(timeouts: Timeouts = Timeouts(), **kwargs):
        url = f"zmq+ipc://{short_dir}/sc"
        source = open_flight_link(url)
        made.append(source)
        users = make_users(tmp_path / "users.toml")
        server = GroundServer(quick_config(url, port=0, archive=tmp_path / "g.sqlite", users=users, timeouts=timeouts),
                              UserStore.load(users), connect_timeout_s=0, **kwargs).start()
        made.insert(0, server)
        return Source(source), server

    yield make
    for thing in made:
        (thing.stop if hasattr(thing, "stop") else thing.close)()


class Source:
    """The spacecraft's side: housekeeping on demand, and every telecommand the ground sent."""

    def __init__(self, link):
        self.link = link
        self.codec = Codec(DICTIONARY)
        self.raws: list[bytes] = []
        self.acks: list[list[AckRun]] = []
        self.commands: list = []  # Inbound TC(8,1)

    def hk(self, publish: bool = True) -> bytes:
        i = len(self.raws)
        raw = self.codec.encode_hk(AGENT_HK.sid, agent_hk_values(i), T0_S + i)
        self.raws.append(raw)
        if publish:
            self.link.publish(raw)
        return raw

    def take(self) -> None:
        for inbound in self.link.receive():
            tc = unpack(inbound.packet)
            if tc.service == Service.STORAGE and tc.subtype == Subtype.STORE_ACK:
                self.acks.append(Codec.decode_store_ack(tc))
            elif tc.service == Service.FUNCTION:
                self.commands.append(inbound)


def _until(predicate, what: str, timeout_s: float = 20.0):
    from tests.test_ground_server import wait_until

    return wait_until(predicate, timeout_s, what)


@pytest.mark.req("GND-040", "GND-041")
def test_the_server_acknowledges_archives_playback_in_place_and_counts_the_pass(scripted):
    from ground.auth import Role
    from tests.test_ground_server import client_for, http, login

    source, server = scripted()
    link = server.links["sunlit-1"]
    _until(lambda: source.hk() and link.packets > 0, "the first housekeeping (a subscriber joins late)")
    first = len(source.raws) - 1
    source.hk()
    lost = source.hk(publish=False)  # lost live
    source.hk()
    _until(lambda: link.hk_time_s == T0_S + first + 3, "the live packets")
    assert link.client.gaps.missing == 1
    program = client_for(server, "vera")  # a program on the server's WebSocket (raw packets)
    source.link.publish(source.codec.encode_playback([lost, source.raws[first]], T0_S + 100))
    _until(lambda: link.client.played_back == 1 and link.duplicates >= 1, "the playback")
    try:  # the program takes it as played back too: its own gap count and latest values stay right
        got = _until(lambda: next((i for i in program.poll(0.1) if i.packet is not None and
                                   key_of(i.raw) == key_of(lost)), None), "the played-back packet at a program")
        assert got.played_back and program.gaps.missing == 0 and program.gaps.restarts == 0
        assert program.latest["uptime_s"][1] >= T0_S + first + 3
    finally:
        program.close()

    lost_seq = unpack(lost).seq_count

    def acknowledged() -> bool:
        source.take()
        covered = any(r.apid == AGENT and r.first_seq <= lost_seq <= r.last_seq for runs in source.acks for r in runs)
        return covered and [] in source.acks  # and once all is acknowledged, "listening" alone
    _until(acknowledged, "acknowledgements of the played-back packet, then keepalives")
    # Found in audit: the status's gaps_missing was the live link's count of losses, never cleared by playback.
    link._next_pass_write_s = 0.0  # noqa: SLF001 - the next turn counts the gaps (every 10 s otherwise)
    _until(lambda: server.status()["spacecraft"]["sunlit-1"]["gaps_missing"] == 0, "the gap counted filled")
    assert server.status()["spacecraft"]["sunlit-1"]["lost_live"] == 1

    vera = login(server, "vera")
    assert server.route_roles[("GET", "/api/passes")] is Role.VIEWER and http(server, "GET", "/api/passes")[0] == 401

    def counted() -> dict | None:
        status, answer, _ = http(server, "GET", "/api/passes", token=vera)
        assert status == 200 and answer["source"] == "archive", answer
        return answer["passes"][-1] if answer["passes"] and answer["passes"][-1]["played_back"] == 1 else None
    this = _until(counted, "the pass filed")
    assert this["open"] and this["missing"] == 0 and this["duplicates"] >= 1 and this["received"] >= 3
    assert [a["apid"] for a in this["apids"]] == [AGENT]
    assert http(server, "GET", "/api/passes?limit=0", token=vera)[0] == 400
    status = http(server, "GET", "/api/status", token=vera)[1]["spacecraft"]["sunlit-1"]
    assert status["played_back"] == 1 and status["store_acks"] > 0 and status["pass"]["played_back"] == 1

    link.recorder.flush()
    keys = [key_of(bytes.fromhex(line)) for line in _raw_lines(server)]
    assert len(keys) == len(set(keys)) and key_of(lost) in keys and key_of(source.raws[first]) in keys
    assert link.internal_errors == 0 and server.internal_errors == 0


@pytest.mark.req("GND-041")
def test_the_server_acknowledges_only_what_its_archive_holds_and_nothing_while_it_refuses(scripted, tmp_path,
                                                                                           monkeypatch):
    """Found in audit: with the archive's write lock held by another process, 40 packets were
    acknowledged (the agent deleted them) and none was in the archive after a crash."""
    import ground.server as server_module

    monkeypatch.setattr(server_module, "STORE_ACK_PERIOD_S", 0.2)
    source, server = scripted()
    link = server.links["sunlit-1"]
    _until(lambda: source.hk() and link.packets > 0, "the first housekeeping (a subscriber joins late)")
    seq = unpack(source.raws[-1]).seq_count

    def covered(keys: set[int]) -> set[int]:
        source.take()
        return {s for runs in source.acks for r in runs if r.apid == AGENT for s in keys
                if r.first_seq <= s <= r.last_seq}
    _until(lambda: covered({seq}), "the first packet acknowledged once archived")
    with server.archive._lock:  # refuse at once rather than after the 10 s busy wait
        server.archive._db.execute("PRAGMA busy_timeout = 200")
    blocker = sqlite3.connect(tmp_path / "g.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the archive
    try:
        first = len(source.raws)
        for _ in range(10):
            source.hk()
        _until(lambda: link.hk_time_s == T0_S + first + 9, "the packets taken in")
        held = {unpack(r).seq_count for r in source.raws[first:]}
        errors = link.recorder.statistics().errors
        _until(lambda: link.recorder.statistics().errors >= errors + 3, "the archive refusing them, again")
        assert not covered(held), "no acknowledgement covers a packet the archive does not hold"
        acks = len(source.acks)
        _until(lambda: link.store_acks_held >= 5, "acknowledgements held while the archive refuses")
        source.take()
        assert len(source.acks) == acks, "none at all while the archive refuses: playback would pile up in memory"
        assert link.recorder.failing and link.status()["store_acks_held"] >= 5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    _until(lambda: covered(held) == held, "the packets acknowledged once the archive took them")
    reader = sqlite3.connect(tmp_path / "g.sqlite")
    archived = {s for (s,) in reader.execute("SELECT seq_count FROM packet_keys WHERE apid = ?", (AGENT,))}
    reader.close()
    assert held <= archived


@pytest.fixture
def agent_servers(start_agent, short_dir, tmp_path, monkeypatch):
    """A real agent (a subprocess; a ground silent for 1 s is not listening, ``ground_window_s``) and
    ``start(**server_kwargs)``: a ground server on its link with an archive, the same file each time,
    acknowledging and filing passes every 0.2 s; ``start.stop(server)``; any still running stopped at the end."""
    import ground.server as server_module
    from ground.auth import UserStore
    from ground.server import GroundServer, quick_config
    from tests.test_ground_server import make_users

    monkeypatch.setattr(server_module, "PASS_WRITE_PERIOD_S", 0.2)
    monkeypatch.setattr(server_module, "STORE_ACK_PERIOD_S", 0.2)
    url = f"zmq+ipc://{short_dir}/link"
    config = tmp_path / "agent.toml"
    config.write_text("[parameters]\nground_window_s = 1.0\n")
    start_agent(url, "--config", str(config))
    users = make_users(tmp_path / "users.toml")
    running: list = []

    def start(**kwargs):
        server = GroundServer(quick_config(url, port=0, archive=tmp_path / "g.sqlite", users=users),
                              UserStore.load(users), connect_timeout_s=20.0, **kwargs).start()
        running.append(server)
        return server

    def stop(server) -> None:
        running.remove(server)
        server.stop()

    start.stop = stop
    start.path = tmp_path / "g.sqlite"
    yield start
    for server in running:
        server.stop()


def _archived(path) -> tuple[list, int]:
    """The passes filed and how many packets are archived (their keys)."""
    with Archive(path) as archive:
        return archive.passes(), archive._db.execute("SELECT count(*) FROM packet_keys").fetchone()[0]


def _stop_leaving_unacknowledged(start, monkeypatch, held: int = 10, **server_kwargs) -> list:
    """Run a server until the agent is heard and acknowledged, then acknowledge nothing more and stop it
    once the archive holds ``held`` packets the agent made more than its ``ground_window_s`` (1 s) after
    the last acknowledgement (a 1 s margin besides): made while the ground seemed silent, the agent plays
    them back again at the next server's first acknowledgements (as after a stop or a crash in a pass:
    what came last was archived and not yet acknowledged). Returns the passes the stopped server left."""
    import ground.server as server_module

    server = start(**server_kwargs)
    link = server.links["sunlit-1"]
    _until(lambda: link.client.store_acks > 0 and link.packets > 10, "the agent heard and acknowledged", 60.0)
    monkeypatch.setattr(server_module, "STORE_ACK_PERIOD_S", 1e9)
    acks = link.client.store_acks
    _until(lambda: link.client.store_acks > acks, "the last acknowledgement")
    silent_ms = int((time.time() + 2.0) * 1000)

    def archived_in_silence() -> int:
        link.recorder.flush()
        with server.archive._lock:
            return server.archive._db.execute("SELECT count(*) FROM packet_keys WHERE time_ms > ?",
                                              (silent_ms,)).fetchone()[0]
    _until(lambda: archived_in_silence() >= held, f"{held} packets archived, made while the ground seemed silent")
    start.stop(server)
    monkeypatch.setattr(server_module, "STORE_ACK_PERIOD_S", 0.2)
    return _archived(start.path)[0]


@pytest.mark.req("GND-040")
def test_a_server_restarted_mid_pass_goes_on_with_the_pass_and_counts_what_it_had_archived_as_duplicates(
        agent_servers, monkeypatch):
    """Found in review: restarted while the agent was in contact, the server split the pass in two and
    counted the packets the agent played back again, which the archive already held, as new playback."""
    before = _stop_leaving_unacknowledged(agent_servers, monkeypatch)
    server = agent_servers()  # the link heard again well within the pass gap (120 s)
    link = server.links["sunlit-1"]
    _until(lambda: link.duplicates >= 10, "the packets archived before the restart, played back again, as duplicates")
    agent_servers.stop(server)
    passes, archived = _archived(agent_servers.path)
    assert [p.start_s for p in passes] == [before[-1].start_s], "one pass, continued across the restart"
    one, was = passes[0].totals, before[-1].totals
    assert passes[0].end_s > before[-1].end_s and one.received > was.received
    assert one.received + one.played_back == archived, "each packet archived counted new once, no more"
    assert one.duplicates >= was.duplicates + 10
    assert link.played_back == one.played_back - was.played_back, "the status says the same"
    assert link.internal_errors == 0


@pytest.mark.req("GND-040")
def test_a_server_restarted_after_a_silence_longer_than_the_pass_gap_begins_a_new_pass(agent_servers, monkeypatch):
    """A restart is no reason to join two passes: a silence longer than the pass gap ends one as ever."""
    before = _stop_leaving_unacknowledged(agent_servers, monkeypatch, pass_gap_s=3.0)
    _until(lambda: time.time() > before[-1].end_s + 3.0, "a silence longer than the pass gap")
    server = agent_servers(pass_gap_s=3.0)
    link = server.links["sunlit-1"]
    _until(lambda: link.duplicates >= 10, "the packets archived before the restart, played back again, as duplicates")
    agent_servers.stop(server)
    passes, archived = _archived(agent_servers.path)
    assert len(passes) == len(before) + 1 and passes[-1].start_s > before[-1].end_s + 3.0, "a pass of its own"
    assert [(p.start_s, p.end_s, p.totals.received, p.totals.played_back) for p in passes[:-1]] == [
        (p.start_s, p.end_s, p.totals.received, p.totals.played_back) for p in before], "the earlier as they were"
    assert sum(p.totals.received + p.totals.played_back for p in passes) == archived
    assert passes[-1].totals.duplicates >= 10, "what the archive had is a duplicate in the new pass too"
    assert link.internal_errors == 0


def _raw_lines(server) -> list[str]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.hex"
        server.archive.export_raw(out)
        return [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]


@pytest.mark.req("GND-042")
def test_the_server_keeps_an_unknown_outcome_asks_at_the_next_contact_and_settles_it(scripted, monkeypatch):
    import ground.server as server_module

    monkeypatch.setattr(server_module, "HEARD_LATELY_S", 0.0)  # ask at the next contact, not at once
    source, server = scripted(Timeouts(accepted_s=10.0, completed_s=0.5), pass_gap_s=1.0)
    link = server.links["sunlit-1"]
    _until(lambda: source.hk() and link.client is not None and link.client.agent_dict_hash is not None,
           "the agent's dictionary (housekeeping)")
    entry = server.submit(None, "NOOP", {}, "alice")

    def commanded() -> bool:
        source.take()
        return bool(source.commands)
    _until(commanded, "the command on the link")
    sent = source.commands[0]
    tc = unpack(sent.packet)
    opcode, cmd_id = Codec.peek_cmd_id(tc)
    codec = source.codec
    for k, stage in enumerate((Stage.ACCEPTED, Stage.STARTED)):  # its completion report is lost
        report = codec.encode_verification(Verification(stage, True, tc.request_id, cmd_id, opcode), T0_S + 50 + k)
        source.link.reply(sent.peer, report)
        source.link.publish(report)
    _until(lambda: entry.state is State.UNKNOWN, "the completion window passed")
    assert not entry.state.final and entry.outcome == "unknown"
    _until(lambda: any(c.cmd_id == cmd_id and c.outcome == "unknown" and not c.final
                       for c in server.archive.commands()), "the archive's row: unknown, not final")

    _until(lambda: time.time() - link.last_packet_wall_s > 1.5, "a silence longer than the pass gap")
    source.hk()  # contact again

    def asked() -> bool:
        source.take()
        return any(c.packet == sent.packet for c in source.commands[1:])
    _until(asked, "the same command again, same cmd_id")
    # The server records the question once the link took it: the packet can be seen here first.
    _until(lambda: [s["stage"] for s in entry.stages][-1] == "asked", "the queue's record of the question")
    assert entry.state is State.UNKNOWN

    done = codec.encode_verification(Verification(Stage.COMPLETED, True, tc.request_id, cmd_id, opcode), T0_S + 52)
    source.link.publish(codec.encode_playback([done], T0_S + 200))  # it comes played back
    _until(lambda: entry.state is State.COMPLETED, "the late report settles it")
    link.recorder.flush()  # the report's packet, and with it its verification row
    row = _until(lambda: next((c for c in server.archive.commands() if c.cmd_id == cmd_id and c.state == "completed"
                               and len(c.reports) == 3), None), "the archive's row settled")
    assert row.outcome == "completed" and row.final
    assert [r.stage for r in row.reports] == ["accepted", "started", "completed"]


@pytest.mark.req("GND-042", "AGT-016", "AGT-017")
def test_with_no_report_at_all_the_server_asks_by_status_but_resends_a_read_only_command(scripted, monkeypatch):
    """Two commands that got no report at all. RESET_COUNTERS: the server asks with COMMAND_STATUS
    (the same packet would run it now, late), and the agent's "not received" ends it in timeout.
    NOOP: read-only, so the agent does not journal it and, after a restart, could not say whether it
    ran; the server sends the same packet again, and its reports settle it."""
    import ground.server as server_module

    monkeypatch.setattr(server_module, "HEARD_LATELY_S", 0.0)
    source, server = scripted(Timeouts(accepted_s=0.5, completed_s=0.5), pass_gap_s=1.0)
    link = server.links["sunlit-1"]
    _until(lambda: source.hk() and link.client is not None and link.client.agent_dict_hash is not None,
           "the agent's dictionary (housekeeping)")
    changes = server.submit(None, "RESET_COUNTERS", {}, "alice")
    noop = server.submit(None, "NOOP", {}, "alice")

    def got(n: int):
        return lambda: (source.take(), len(source.commands) >= n)[1]
    _until(got(2), "both commands on the link")
    by_name = {DICTIONARY.command_by_opcode[Codec.peek_cmd_id(unpack(c.packet))[0]].name: c for c in source.commands}
    _until(lambda: changes.state is State.UNKNOWN and noop.state is State.UNKNOWN, "no report: both unknown")

    _until(lambda: time.time() - link.last_packet_wall_s > 1.5, "a silence longer than the pass gap")
    mark = len(source.commands)
    source.hk()  # contact again
    codec = source.codec

    def names_since() -> list[str]:
        source.take()
        return [codec.decode_command(unpack(c.packet)).command.name for c in source.commands[mark:]]
    _until(lambda: "COMMAND_STATUS" in names_since() and noop.stages[-1]["stage"] == "asked", "the server asking")
    asked = source.commands[mark:]
    statuses = [codec.decode_command(unpack(c.packet)) for c in asked]
    assert [r.args["cmd_id"] for r in statuses if r.command.name == "COMMAND_STATUS"] == [changes.cmd_id]
    assert any(c.packet == by_name["NOOP"].packet for c in asked), "the same NOOP packet, same cmd_id"
    assert "read-only" in noop.stages[-1]["reason"] and noop.state is State.UNKNOWN
    assert changes.state is State.UNKNOWN

    for c in asked:
        tc = unpack(c.packet)
        body = codec.decode_command(tc)
        if body.command.name == "RESET_COUNTERS":
            continue  # a Lazy Pirate retry of the client's: the agent never got it
        result = {"state": "not_received", "code": "NONE", "reason": "never arrived"} \
            if body.command.name == "COMMAND_STATUS" else {}
        for k, stage in enumerate((Stage.ACCEPTED, Stage.STARTED, Stage.COMPLETED)):
            source.link.publish(codec.encode_verification(
                Verification(stage, True, tc.request_id, body.cmd_id, body.command.opcode,
                             result=result if stage is Stage.COMPLETED else {}), T0_S + 300 + k))
    _until(lambda: noop.state is State.COMPLETED and changes.state is State.TIMEOUT, "both settled")
    assert "never arrived" in changes.stages[-1]["reason"]


@pytest.mark.req("GND-023", "GND-042")
def test_a_command_the_server_stops_following_ends_unresolved_in_memory_and_the_archive(scripted, monkeypatch):
    """Found in audit: past FOLLOW_UNKNOWN_S (or MAX_FOLLOWED) a command whose outcome never came was
    forgotten by the link and stayed 'unknown' for ever, in the queue (never trimmed: 700 held past its
    bound of 500) and the archive. Let go, it ends 'unresolved': final, its outcome unknown."""
    import ground.server as server_module

    monkeypatch.setattr(server_module, "FOLLOW_UNKNOWN_S", 1.0)
    monkeypatch.setattr(server_module, "MAX_FOLLOWED", 3)
    source, server = scripted(Timeouts(accepted_s=10.0, completed_s=0.3))
    link = server.links["sunlit-1"]
    _until(lambda: source.hk() and link.client is not None and link.client.agent_dict_hash is not None,
           "the agent's dictionary (housekeeping)")
    entries = [server.submit(None, "NOOP", {}, "alice") for _ in range(4)]
    link.queue.keep = 3

    def acknowledged() -> bool:  # each acknowledged (PUS 1,1), never completed
        source.take()
        for c in source.commands:
            tc = unpack(c.packet)
            opcode, cmd_id = Codec.peek_cmd_id(tc)
            source.link.publish(source.codec.encode_verification(
                Verification(Stage.ACCEPTED, True, tc.request_id, cmd_id, opcode), T0_S + 50))
        source.commands.clear()
        return all(e.state.final for e in entries)
    _until(acknowledged, "every command let go")
    assert [e.state for e in entries] == [State.UNRESOLVED] * 4
    assert "the oldest of more than 3" in entries[0].stages[-1]["reason"]
    assert all("no outcome in 1 s" in e.stages[-1]["reason"] for e in entries[1:])
    assert all("unknown" in [s["stage"] for s in e.stages] for e in entries[1:]), "unknown first, then let go"
    assert link._inflight == {} and link.queue.entries() == entries[1:], "final past the bound: forgotten"
    _until(lambda: len([c for c in server.archive.commands() if c.state == "unresolved"]) == 4, "the archive's rows")
    rows = server.archive.commands()
    assert all(c.final and c.state == "unresolved" for c in rows)


@pytest.mark.req("GND-023", "GND-042")
def test_a_long_job_is_followed_through_its_configured_completion_window_not_let_go_before(scripted, monkeypatch):
    """Found in audit: a command whose completion window (``completed_by_command_s``, up to a day, for a long
    training job) outlasts FOLLOW_AFTER_SEND_S (3600 s) was let go at that age, ``unresolved`` with its window
    still open, and the completion report that came within the window never reached its entry."""
    import ground.server as server_module

    monkeypatch.setattr(server_module, "FOLLOW_AFTER_SEND_S", 0.2)  # stands for the hour; the window is 30 s
    source, server = scripted(Timeouts(accepted_s=10.0, completed_by_command_s={"NOOP": 30.0}))
    link = server.links["sunlit-1"]
    _until(lambda: source.hk() and link.client is not None and link.client.agent_dict_hash is not None,
           "the agent's dictionary (housekeeping)")
    entry = server.submit(None, "NOOP", {}, "alice")
    sent: list = []

    def report(stages) -> None:
        for tc, cmd_id, opcode in sent:
            for k, stage in enumerate(stages):
                source.link.publish(source.codec.encode_verification(
                    Verification(stage, True, tc.request_id, cmd_id, opcode), T0_S + 50 + k))

    def started() -> bool:
        source.take()
        fresh = [(unpack(c.packet), *Codec.peek_cmd_id(unpack(c.packet))[::-1]) for c in source.commands]
        source.commands.clear()
        sent.extend(fresh)
        report((Stage.ACCEPTED, Stage.STARTED))
        return entry.state is State.STARTED
    _until(started, "the command accepted and started")
    time.sleep(0.5)  # past FOLLOW_AFTER_SEND_S, well within the window: the link thread looked many times
    assert entry.state is State.STARTED and entry.waiting_for == "completed", entry.stages[-1]
    report((Stage.COMPLETED,))
    _until(lambda: entry.state is State.COMPLETED, "the completion, within its window, on the entry")


@pytest.mark.req("GND-041")
def test_an_old_played_back_packet_is_still_acknowledged_after_the_tracker_forgets_it():
    """A store that holds more than the tracker's horizon: the old packet is acknowledged all the
    same, so the agent does not play it back for ever."""
    from ground.completeness import CompletenessTracker

    tracker = CompletenessTracker(horizon_s=3600.0)
    day_ms = 86_400_000
    tracker.add(Apid.AGENT, 10, 3 * day_ms, 0.0)  # live, now
    tracker.take_runs()
    assert tracker.add(Apid.AGENT, 5, day_ms, 1.0, played_back=True)  # two days old, in playback
    tracker.prune()
    assert AckRun(Apid.AGENT, 5, 5, day_ms, day_ms) in tracker.take_runs()


@pytest.mark.req("GND-041")
def test_a_tracker_fed_only_playback_stays_bounded_and_a_run_spans_at_most_2_14_counts():
    from ground.completeness import CompletenessTracker

    tracker = CompletenessTracker(horizon_s=60.0, max_keys=1000)
    for k in range(5000):
        tracker.add(Apid.AGENT, k & 0x3FFF, 1000 * k, float(k), played_back=True)
    tracker.prune()
    assert tracker._count <= 1000
    long = CompletenessTracker(max_keys=100_000)
    for k in range(20_000):
        long.add(Apid.AGENT, k & 0x3FFF, k, 0.0)
    runs = long.take_runs()
    assert all(((r.last_seq - r.first_seq) & 0x3FFF) + 1 <= 0x4000 for r in runs)
    assert sum(((r.last_seq - r.first_seq) & 0x3FFF) + 1 for r in runs) == 20_000


@pytest.mark.req("GND-042", "AGT-017")
def test_the_servers_queue_keeps_a_command_with_no_report_unknown_until_the_agent_answers():
    q = CommandQueue("sc", T, unknown_after="sent")
    e = q.submit("NOOP", {}, "alice", False, 0.0)
    q.next_to_send(0.0)
    q.sent(e.id, 7, 1, 0.0)
    assert q.tick(2.0) == [e] and e.state is State.UNKNOWN and "COMMAND_STATUS" in e.stages[-1]["reason"]
    assert q.settle_from_status(e.id, {"state": "running"}, 3.0) is None and e.state is State.UNKNOWN
    assert q.settle_from_status(e.id, {"state": "not_received", "reason": "never arrived"}, 4.0) is e
    assert e.state is State.TIMEOUT and e.state.final and "never arrived" in e.stages[-1]["reason"]
    f = q.submit("NOOP", {}, "alice", False, 10.0)
    q.next_to_send(10.0)
    q.sent(f.id, 8, 1, 10.0)
    q.tick(12.0)
    assert q.settle_from_status(f.id, {"state": "completed"}, 13.0) is f and f.state is State.COMPLETED
    g = q.submit("NOOP", {}, "alice", False, 20.0)
    q.next_to_send(20.0)
    q.sent(g.id, 9, 1, 20.0)
    q.tick(22.0)
    q.settle_from_status(g.id, {"state": "interrupted", "code": "EXECUTION_ERROR", "reason": "cut off"}, 23.0)
    assert g.state is State.FAILED and "cut off" in g.stages[-1]["reason"]


@pytest.mark.req("GND-025")
def test_a_listener_that_fails_on_one_packet_costs_it_that_packet_not_the_others_taken_with_it():
    codec = Codec(DICTIONARY)
    packet = DICTIONARY.packet_by_name["AGENT_HK"]
    pair = MemoryLink()
    client = GroundClient(pair.ground)
    seen: list[float] = []

    def listener(item) -> None:
        uptime = item.record.values["uptime_s"]
        seen.append(uptime)
        if uptime == 1.0:
            raise RuntimeError("a listener's bug")

    client.listeners.append(listener)
    for k in (1.0, 2.0, 3.0):
        values = {name: None for name in packet.channels}
        values.update(mode="SAFE", uptime_s=k)
        pair.flight.publish(codec.encode_hk(packet.sid, values, 1.7e9 + k))
    got = client.poll(0.0)
    assert len(got) == 3 and seen == [1.0, 2.0, 3.0]
    assert client.internal_errors == 1 and "a listener's bug" in client.last_internal_error
