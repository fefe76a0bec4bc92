"""The agent's energy plan (TM(140,1)) through the ground server: taken in once, archived, kept
as the spacecraft's latest, pushed to the pages that watch that spacecraft, served to viewers
on ``GET /api/plan``, printed by ``sunlit-ground plan``; a malformed plan is a bad packet and
costs nothing else.

Real sockets, a real server and real subprocesses for the CLI; the spacecraft's side of each
link is a source that publishes packets encoded by flight.link.messages.Codec (no agent: a
plan needs an orbit and a battery, and the test must choose what is sent and when).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec, PlanRecord
from flight.link.packets import Service, Subtype, pack_tm, unpack
from ground.auth import Role, UserStore
from ground.server import PLAN_STALE_S, GroundServer, quick_config
from ground.server_config import ServerConfig, SpacecraftConfig
from tests.test_ground_plan_archive import T0_S, encode, hk, make_plan
from tests.test_ground_server import REPO, Lines, http, login, make_users, wait_until

SC = "sunlit-1"


def decoded(raw: bytes) -> PlanRecord:
    rec = Codec(DICTIONARY).decode_tm(unpack(raw))
    assert isinstance(rec, PlanRecord)
    return rec


def without_received(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "received_s"}


@pytest.fixture
def plan_ground(tmp_path, short_dir):
    """``make(ids)``: one source per spacecraft (the agent's side of a real ZeroMQ link) and a
    server with an archive on them; all closed at the end."""
    from flight.link.transport import open_flight_link

    made: list = []

    def make(ids: tuple[str, ...] = (SC,)) -> tuple[dict, GroundServer]:
        sources = {sc: open_flight_link(f"zmq+ipc://{short_dir}/{sc}") for sc in ids}
        made.extend(sources.values())
        users = make_users(tmp_path / "users.toml")
        if ids == (SC,):
            config = quick_config(f"zmq+ipc://{short_dir}/{SC}", port=0, archive=tmp_path / "g.sqlite", users=users)
        else:
            config = ServerConfig(spacecraft=tuple(SpacecraftConfig(sc, f"zmq+ipc://{short_dir}/{sc}") for sc in ids),
                                  port=0, archive=tmp_path / "g.sqlite", users=users)
        server = GroundServer(config, UserStore.load(users), connect_timeout_s=0).start()
        made.insert(0, server)
        return sources, server

    yield make
    for thing in made:
        (thing.stop if isinstance(thing, GroundServer) else thing.close)()


def ws_connect(server: GroundServer, token: str, spacecraft: str | None = None):
    from websockets.sync.client import connect

    url = server.url.replace("http", "ws") + "ws" + (f"?spacecraft={spacecraft}" if spacecraft else "")
    return connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)


def plans_pushed(ws, into: list, wait_s: float = 0.2) -> None:
    """Take what the WebSocket has (waiting at most ``wait_s``) and keep its plan messages."""
    try:
        message = json.loads(ws.recv(timeout=wait_s))
    except TimeoutError:
        return
    into.extend(m for m in message.get("control", []) if m.get("kind") == "plan")


@pytest.mark.req("GND-034", "GND-020", "GND-021", "GND-022")
def test_a_plan_is_pushed_to_pages_served_to_viewers_and_archived_once(plan_ground):
    sources, server = plan_ground()
    source, link = sources[SC], server.links[SC]
    codec = Codec(DICTIONARY, Apid.AGENT)
    vera = login(server, "vera")

    # Nothing yet: said plainly, and only to a session.
    status, answer, _ = http(server, "GET", "/api/plan", token=vera)
    assert status == 200 and answer["available"] is False, answer
    assert f"no power plan received from {SC}" in answer["reason"]
    assert server.route_roles[("GET", "/api/plan")] is Role.VIEWER
    assert http(server, "GET", "/api/plan")[0] == 401
    status, answer, _ = http(server, "GET", "/api/plan?spacecraft=nope", token=vera)
    assert status == 404 and "'nope'" in answer["error"]

    plan_raw = encode(codec, make_plan(T0_S))
    hk_raw = hk(codec, 1, T0_S + 10.0)
    pushed: list = []
    with ws_connect(server, vera, SC) as ws:
        hello = json.loads(ws.recv(timeout=10))["control"][0]
        assert hello["kind"] == "hello" and hello["states"][SC]["plan"] is None
        assert hello["states"][SC]["plan_stale_after_s"] == PLAN_STALE_S

        def delivered() -> bool:  # a PUB/SUB link drops what it sends before the server subscribed: resend
            source.publish(hk_raw)
            source.publish(plan_raw)
            source.receive()
            plans_pushed(ws, pushed)
            return bool(pushed)

        wait_until(delivered, what="the plan pushed to the page")
    want = decoded(plan_raw).to_json()
    assert pushed[0]["spacecraft"] == SC and without_received(pushed[0]["plan"]) == want
    assert all(without_received(m["plan"]) == want for m in pushed)

    # The HTTP route: the same plan, judged against the newest housekeeping (10 s newer: current).
    wait_until(lambda: link.hk_time_s == T0_S + 10.0, what="the housekeeping taken in")
    status, answer, _ = http(server, "GET", f"/api/plan?spacecraft={SC}", token=vera)
    assert status == 200 and answer["available"] is True and without_received(answer["plan"]) == want
    assert answer["age_s"] == 10.0 and answer["stale"] is False and answer["stale_after_s"] == PLAN_STALE_S
    assert without_received(http(server, "GET", "/api/state", token=vera)[1]["plan"]) == want

    # Each packet once: the same bytes again (a resent packet) are dropped as duplicates, not archived.
    dropped_before = link.duplicates

    def resent() -> bool:
        source.publish(plan_raw)
        source.receive()
        return link.duplicates >= dropped_before + 2

    wait_until(resent, what="the resent plan dropped as a duplicate")
    link.recorder.flush()
    assert server.archive.counts(SC)["plans"] == 1
    status, answer, _ = http(server, "GET", f"/api/plan?since={T0_S - 1}", token=vera)
    assert status == 200 and [without_received(p) for p in answer["plans"]] == [want], answer
    assert http(server, "GET", f"/api/plan?since={T0_S + 1}", token=vera)[1]["plans"] == []
    for query, field in (("since=yesterday", "since"), ("limit=5", "since"), (f"since={T0_S}&limit=0", "limit"),
                         (f"since={T0_S}&limit=many", "limit"), (f"since={T0_S}&until={T0_S - 5}", "until")):
        status, answer, _ = http(server, "GET", f"/api/plan?{query}", token=vera)
        assert status == 400 and answer["error"].startswith(field), (query, answer)

    # Telemetry moves on and no new plan comes: the plan is stale, by the agent's own clock.
    later = hk(codec, 2, T0_S + 600.0)

    def moved_on() -> bool:
        source.publish(later)
        source.receive()
        return link.hk_time_s == T0_S + 600.0

    wait_until(moved_on, what="the later housekeeping")
    answer = http(server, "GET", "/api/plan", token=vera)[1]
    assert answer["stale"] is True and answer["age_s"] == 600.0
    assert link.internal_errors == 0 and server.internal_errors == 0


@pytest.mark.req("GND-024")
def test_a_plan_goes_only_to_pages_that_watch_its_spacecraft(plan_ground):
    sources, server = plan_ground(("sat-a", "sat-b"))
    codec = Codec(DICTIONARY, Apid.AGENT)
    vera = login(server, "vera")
    plan_a = encode(codec, make_plan(T0_S))
    plan_b = encode(codec, make_plan(T0_S + 5.0, names=("LOW", "HIGH")))
    pushed: list = []
    with ws_connect(server, vera, "sat-b") as ws:
        assert list(json.loads(ws.recv(timeout=10))["control"][0]["states"]) == ["sat-b"]

        def a_taken() -> bool:
            sources["sat-a"].publish(plan_a)
            sources["sat-a"].receive()
            plans_pushed(ws, pushed, 0.05)
            return server.links["sat-a"].plan is not None

        wait_until(a_taken, what="sat-a's plan taken in")

        def b_pushed() -> bool:
            sources["sat-b"].publish(plan_b)
            sources["sat-b"].receive()
            plans_pushed(ws, pushed)
            return any(m["spacecraft"] == "sat-b" for m in pushed)

        wait_until(b_pushed, what="sat-b's plan pushed")
    assert {m["spacecraft"] for m in pushed} == {"sat-b"}
    assert pushed[0]["plan"]["mode_names"] == ["LOW", "HIGH"]
    status, answer, _ = http(server, "GET", "/api/plan?spacecraft=sat-a", token=vera)
    assert status == 200 and without_received(answer["plan"]) == decoded(plan_a).to_json()
    status, answer, _ = http(server, "GET", "/api/plan", token=vera)
    assert status == 400 and "name the spacecraft" in answer["error"]


@pytest.mark.req("GND-001", "GND-025")
def test_a_malformed_plan_is_a_bad_packet_and_nothing_else_is_lost(plan_ground):
    """Three plans no decoder accepts (not msgpack, a field missing, a mode index beyond the
    names), each with a valid CRC and the next sequence count, between good packets."""
    import msgpack

    sources, server = plan_ground()
    source, link = sources[SC], server.links[SC]
    codec = Codec(DICTIONARY, Apid.AGENT)
    vera = login(server, "vera")
    first = hk(codec, 1, T0_S)

    def heard() -> bool:
        source.publish(first)
        source.receive()
        return link.hk_time_s is not None

    wait_until(heard, what="the first housekeeping")
    body = msgpack.unpackb(unpack(encode(Codec(DICTIONARY), make_plan(T0_S))).source_data, raw=False)
    bad = [b"\xc1 not msgpack", msgpack.packb({k: v for k, v in body.items() if k != "umbra"}, use_bin_type=True),
           msgpack.packb({**body, "mode": bytes([9] * len(body["mode"]))}, use_bin_type=True)]
    sequence = [pack_tm(Apid.AGENT, codec.seq.next(Apid.AGENT), Service.POWER_PLAN, Subtype.PLAN_REPORT, data,
                        T0_S + 1 + k) for k, data in enumerate(bad)]
    good_plan = encode(codec, make_plan(T0_S + 10.0))
    sequence += [good_plan, hk(codec, 2, T0_S + 11.0)]

    def all_taken() -> bool:  # the link is up: one pass delivers them all, in order; a resend is a duplicate
        for raw in sequence:
            source.publish(raw)
        source.receive()
        return link.hk_time_s == T0_S + 11.0

    wait_until(all_taken, what="the bad plans and the good packets after them")
    status = http(server, "GET", "/api/status", token=vera)[1]["spacecraft"][SC]
    assert status["bad_packets"] == 3 and status["internal_errors"] == 0 and status["gaps_missing"] == 0, status
    events = http(server, "GET", "/api/state", token=vera)[1]["events"]
    bad_events = [e for e in events if e["name"] == "GROUND_BAD_PACKET"]
    assert len(bad_events) == 3 and all("plan" in e["text"] for e in bad_events[1:]), bad_events
    answer = http(server, "GET", "/api/plan", token=vera)[1]
    assert answer["available"] and without_received(answer["plan"]) == decoded(good_plan).to_json()
    link.recorder.flush()
    counts = server.archive.counts(SC)
    assert counts["invalid_packets"] == 3 and counts["plans"] == 1 and counts["hk_unsealed"] + counts["hk_sealed"] == 2


def run_cli(*args: str, env: dict, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ground.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.mark.req("GND-025")
def test_cli_plan_prints_the_latest_plan_and_tm_follow_says_one_line(plan_ground, tmp_path):
    sources, server = plan_ground()
    source, link = sources[SC], server.links[SC]
    codec = Codec(DICTIONARY, Apid.AGENT)
    env = {**os.environ, "SUNLIT_GROUND_SERVER": server.url, "SUNLIT_GROUND_TOKEN": login(server, "vera"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}

    out = run_cli("plan", env=env)
    assert out.returncode == 1 and f"{SC}: no power plan" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("plan", "--spacecraft", "nope", env=env)
    assert out.returncode == 2 and "'nope'" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("plan", env={**env, "SUNLIT_GROUND_TOKEN": ""})
    assert out.returncode == 2 and "not logged in" in out.stderr

    # A mode name with an escape sequence in it (agent data) is printed harmless.
    plan_raw = encode(codec, make_plan(T0_S, names=("7W", "15W", "MAX\x1b[31mN")))
    wanted = hk(codec, 1, T0_S + 30.0)

    def taken() -> bool:
        source.publish(plan_raw)
        source.publish(wanted)
        source.receive()
        return link.plan is not None and link.hk_time_s == T0_S + 30.0

    wait_until(taken, what="the plan taken in")
    out = run_cli("plan", env=env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"{SC} power plan made 12:00:00 UTC, 70 steps of 120 s (140 min), solve 3.5 ms")
    assert "from min" in lines[1] and "SoC" in lines[1] and "umbra" in lines[1]
    rows = [line.split() for line in lines[2:]]
    # Runs of one mode and shadow: sun, shadow, sun, the idle shadow, sun.
    assert [(r[4], r[5]) for r in rows] == [("MAX?[31mN", "-"), ("7W", "UMBRA"), ("MAX?[31mN", "-"),
                                           ("idle", "UMBRA"), ("MAX?[31mN", "-")]
    assert [(float(r[0]), float(r[1])) for r in rows] == [(0, 40), (40, 70), (70, 120), (120, 132), (132, 140)]
    assert float(rows[0][2]) == 80.0 and "\x1b" not in out.stdout and "STALE" not in out.stderr
    out = run_cli("--spacecraft", SC, "plan", "--steps", env=env)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2 + 70

    # tm --follow prints any packet it takes in; a plan is one line, not a traceback.
    proc = subprocess.Popen([sys.executable, "-m", "ground.cli", "tm", "--follow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines_out = Lines(proc)
    sent = [0]

    def plan_line(lines: list[str]) -> bool:  # new plans until the CLI, once connected, has printed one
        sent[0] += 1
        source.publish(encode(codec, make_plan(T0_S + 60.0 * sent[0])))
        return any(" PLAN  made " in line for line in lines)

    try:
        lines = lines_out.until(plan_line)
    finally:
        proc.terminate()
        proc.wait(10)
    line = next(line for line in lines if " PLAN  made " in line)
    assert "70 steps of 120 s" in line and "solve 3.5 ms" in line and "keeps 25.0 %" in line
    assert "Traceback" not in proc.stderr.read()
