"""The agent's energy plans (TM(140,1)) in the ground archive: kept per spacecraft with their
packet time, outside the housekeeping chunks, found again as the client decoded them, and aged
out under their own retention kind.

Packets are real: encoded by flight.link.messages.Codec.encode_plan and decoded by the same
intake as GroundClient's, never hand-built records.
"""

from __future__ import annotations

import math

import msgpack
import pytest

from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec, PlanRecord
from flight.link.packets import PacketError, Service, Subtype, pack_tm, unpack
from ground.archive import Archive, Retention, RetentionPolicy
from ground.client import Received
from tests.test_ground_archive import archive_cli

T0_S = 1_794_830_400.0  # 2026-11-16T12:00:00Z
DAY_S = 86_400.0
AGENT_HK = DICTIONARY.packet_by_name["AGENT_HK"]
MODES = ("7W", "15W", "MAXN")


def make_plan(t_s: float, n: int = 70, step_s: float = 120.0, names: tuple[str, ...] = MODES) -> PlanRecord:
    """A plan as the agent makes one: charge falling in shadow and rising in sun, the mode
    lower in shadow, idle in the second shadow."""
    umbra = tuple(20 <= i < 35 or 60 <= i < 66 for i in range(n))
    mode = tuple(-1 if 60 <= i < 66 else (0 if u else len(names) - 1) for i, u in enumerate(umbra))
    soc, charge = [80.0], 80.0
    for u in umbra:
        charge = min(100.0, max(0.0, charge + (-1.0 if u else 0.5)))
        soc.append(charge)
    solar = tuple(0.0 if u else 42.0 for u in umbra)
    return PlanRecord(t_s, step_s, tuple(soc), mode, names, solar, umbra, 25.0, 3.5)


def encode(codec: Codec, plan: PlanRecord, time_s: float | None = None) -> bytes:
    return codec.encode_plan(plan, plan.start_unix_s if time_s is None else time_s)


def intake(codec: Codec, raw: bytes) -> Received:
    """What GroundClient's intake makes of any packet: decoded, or kept with its error."""
    try:
        packet = unpack(raw)
        return Received(raw, packet, codec.decode_tm(packet))
    except PacketError as exc:
        return Received(raw, None, None, error=str(exc))


def hk(codec: Codec, i: int, t_s: float) -> bytes:
    values = {name: None for name in AGENT_HK.channels}
    values.update(mode="COMPUTE", uptime_s=float(i), dict_hash=DICTIONARY.version_hash)
    return codec.encode_hk(AGENT_HK.sid, values, t_s)


@pytest.fixture
def archive(tmp_path):
    with Archive(tmp_path / "ground.sqlite", chunk_packets=8) as a:
        yield a


@pytest.mark.req("GND-034", "GND-001", "GND-007")
def test_plans_round_trip_per_spacecraft_outside_the_housekeeping_chunks(archive):
    codec = Codec(DICTIONARY, Apid.AGENT)
    sent: dict[str, list[PlanRecord]] = {"sat-a": [], "sat-b": []}
    with archive.batch():
        for i in range(40):
            t = T0_S + 30.0 * i
            archive.record(intake(codec, hk(codec, i, t)), t, "sat-a")
            if i % 4 == 0:
                for sc, offset in (("sat-a", 0.0), ("sat-b", 1.0)):
                    item = intake(codec, encode(codec, make_plan(t + offset)))
                    assert isinstance(item.record, PlanRecord)
                    sent[sc].append(item.record)
                    archive.record(item, t + 0.5, sc)
    archive.seal(force=True)

    latest = archive.latest_plan("sat-a")
    assert latest is not None and latest.spacecraft == "sat-a"
    assert latest.plan == sent["sat-a"][-1], "exactly what the client decoded (the wire's quantisation included)"
    assert latest.time_s == T0_S + 30.0 * 36 and latest.received_s == T0_S + 30.0 * 36 + 0.5
    assert archive.latest_plan("sat-b").plan == sent["sat-b"][-1]
    assert archive.latest_plan("never-heard-of") is None

    # A window on packet time, inclusive, oldest first; a limit keeps the newest.
    window = archive.plans(T0_S + 120.0, T0_S + 600.0, spacecraft="sat-a")
    assert [p.time_s for p in window] == [T0_S + 120.0 * k for k in range(1, 6)]
    assert [p.plan for p in window] == sent["sat-a"][1:6]
    assert [p.time_s for p in archive.plans(spacecraft="sat-a", limit=2)] == [T0_S + 960.0, T0_S + 1080.0]
    assert archive.plans(spacecraft="sat-a", limit=0) == []
    assert all(p.spacecraft == "sat-b" for p in archive.plans(spacecraft="sat-b"))
    assert len(archive.plans(spacecraft="sat-b")) == 10
    with pytest.raises(ValueError, match="runs backwards"):
        archive.plans(T0_S + 10, T0_S, spacecraft="sat-a")

    # Not housekeeping: none went into a chunk, and housekeeping queries never see them.
    counts = archive.counts("sat-a")
    assert counts["plans"] == 10 and counts["hk_sealed"] == 40 and counts["hk_unsealed"] == 0
    assert counts["other_packets"] == 10 and counts["invalid_packets"] == 0
    assert archive.counts()["plans"] == 20
    assert len(archive.query("uptime_s", spacecraft="sat-a")["uptime_s"][0]) == 40
    assert archive.check() == []


@pytest.mark.req("GND-001")
def test_a_malformed_plan_is_kept_invalid_and_the_good_ones_still_come_back(archive):
    codec = Codec(DICTIONARY, Apid.AGENT)
    good = intake(codec, encode(codec, make_plan(T0_S)))
    archive.record(good, T0_S)
    body = msgpack.unpackb(unpack(encode(codec, make_plan(T0_S + 60))).source_data, raw=False)
    del body["umbra"]
    bad_bodies = (b"\xc1 not msgpack", msgpack.packb(body, use_bin_type=True),
                  msgpack.packb({**body, "umbra": bytes(70), "mode": bytes([9] * 70)}, use_bin_type=True))
    for k, data in enumerate(bad_bodies):
        raw = pack_tm(Apid.AGENT, codec.seq.next(Apid.AGENT), Service.POWER_PLAN, Subtype.PLAN_REPORT, data,
                      T0_S + 60 + k)
        item = intake(codec, raw)
        assert item.record is None and item.error, "the client's intake refuses it, naming why"
        archive.record(item, T0_S + 60 + k)
    assert archive.counts()["invalid_packets"] == 3 and archive.counts()["plans"] == 1
    assert archive.latest_plan().plan == good.record
    assert [p.plan for p in archive.plans()] == [good.record]
    assert archive.check() == []


def test_plans_an_older_ground_server_archived_undecoded_come_back_decoded(archive):
    """Before the ground knew TM(140,1) its intake took the packet in with no record: the row is
    the same, so a file written then gives its plans back now (schema 2 unchanged)."""
    codec = Codec(DICTIONARY, Apid.AGENT)
    raw = encode(codec, make_plan(T0_S))
    archive.record(Received(raw, unpack(raw), None), T0_S + 1)
    got = archive.latest_plan()
    assert got is not None and got.plan == intake(codec, raw).record and got.received_s == T0_S + 1
    assert archive._db.execute("PRAGMA user_version").fetchone()[0] == 2  # noqa: SLF001


@pytest.mark.req("GND-034", "GND-008")
def test_plans_age_out_under_their_own_retention_kind(tmp_path):
    path = tmp_path / "ground.sqlite"
    codec = Codec(DICTIONARY, Apid.AGENT)
    archive = Archive(path)
    now = T0_S + 30 * DAY_S
    with archive.batch():
        for sc in ("sat-a", "sat-b"):
            for day in range(0, 30):  # one plan and one parameter report a day, 30 days back
                t = T0_S + day * DAY_S
                archive.record(intake(codec, encode(codec, make_plan(t))), t, sc)
                archive.record(intake(codec, codec.encode_param_report({}, t)), t, sc)
        bad = pack_tm(Apid.AGENT, codec.seq.next(Apid.AGENT), Service.POWER_PLAN, Subtype.PLAN_REPORT, b"\xc1", T0_S)
        archive.record(intake(codec, bad), T0_S, "sat-a")  # an invalid one is a bad packet: kept as such
    assert RetentionPolicy().rule("plans") == Retention(7.0, 64.0)

    # The defaults: a week of plans, 90 days of packets, before each spacecraft's newest packet (day 29)
    deleted = archive.retain(RetentionPolicy(), now_s=now)
    assert deleted["plans"]["deleted"] == 2 * 22 and deleted["plans"]["bytes"] > 0
    assert deleted["packets"]["deleted"] == 0
    for sc in ("sat-a", "sat-b"):
        assert [p.time_s for p in archive.plans(spacecraft=sc)] == [T0_S + d * DAY_S for d in range(22, 30)]
        assert archive.latest_plan(sc).time_s == T0_S + 29 * DAY_S
    assert archive.counts("sat-a")["other_packets"] == 8 + 30 + 1
    assert archive.counts("sat-a")["invalid_packets"] == 1

    # By size: the newest plans that fit; and a TOML table sets the kind like any other.
    one_plan_bytes = deleted["plans"]["bytes"] / deleted["plans"]["deleted"]
    policy = RetentionPolicy.from_mapping({"plans": {"max_mb": 3.5 * one_plan_bytes / 1e6}})
    assert policy.rule("plans") == Retention(7.0, 3.5 * one_plan_bytes / 1e6)
    deleted = archive.retain(policy, now_s=now)
    assert deleted["plans"]["deleted"] == 2 * 5
    assert [p.time_s for p in archive.plans(spacecraft="sat-b")] == [T0_S + d * DAY_S for d in range(27, 30)]
    assert archive.check() == []
    archive.close()
    with pytest.raises(ValueError, match=r"retention\.plans\.max_days"):
        RetentionPolicy.from_mapping({"plans": {"max_days": 1}})

    # The retain command names the kind and its rule.
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[retention]\nplans = { max_age_days = 1 }\n")
    # --force: this simulated "now" may be days ahead of the computer's clock (refused without it)
    assert archive_cli("retain", "--db", str(path), "--policy", str(policy_file), "--now", str(now), "--force") == 0
    with Archive(path, create=False) as again:
        # a day before its newest (day 29): day 28 is at the cutoff, kept
        assert [p.time_s for p in again.plans(spacecraft="sat-a")] == [T0_S + 28 * DAY_S, T0_S + 29 * DAY_S]


def test_a_plan_round_trips_its_quantised_values_exactly_once_decoded():
    """What the archive returns is what the client decoded: charge to 0.5 %, solar to 1/255 of
    its peak, so a test compares decoded with decoded (never with the agent's floats)."""
    codec = Codec(DICTIONARY, Apid.AGENT)
    plan = make_plan(T0_S)
    got = intake(codec, encode(codec, plan)).record
    assert got.mode == plan.mode and got.umbra == plan.umbra and got.mode_names == plan.mode_names
    assert all(math.isclose(a, b, abs_tol=0.25) for a, b in zip(got.soc_pct, plan.soc_pct))
    assert got.time_s == T0_S
