"""Found in an audit of the ground server's core: what its link drops before decoding, how it stops when its terminal
closes, and how it pushes a burst to a program. Real servers, a real pseudo-terminal line, real ZeroMQ, a real
WebSocket client, a real subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.framing import encode_frame
from flight.link.messages import Codec
from flight.link.packets import Service, pack_tm
from ground.archive import Archive
from ground.auth import UserStore
from ground.server import GroundServer, quick_config
from ground.server_config import ServerConfig, SpacecraftConfig
from tests.test_ground_server import PASSWORDS, make_users, wait_until


@pytest.fixture
def source(short_dir):
    """The agent's side of a real ZeroMQ link, with no agent behind it."""
    from flight.link.transport import open_flight_link

    url = f"zmq+ipc://{short_dir}/source"
    link = open_flight_link(url)
    yield url, link
    link.close()


@pytest.mark.req("GND-025")
def test_frames_a_noisy_serial_line_drops_are_counted_as_bad_packets_and_said(tmp_path):
    """GND-025. Found in audit: on a serial link (the radio's), a frame cut short and a burst of noise were dropped by
    the link before the packet codec, counted only in the link's own statistics: the server's status said
    bad_packets 0 and no event said anything. Now counted and said, and the good packet after them is taken."""
    from flight.link.transport import open_flight_link
    from hil.ptyline import A_TO_B, PtyLine

    users = make_users(tmp_path / "users.toml")
    codec = Codec(DICTIONARY)
    hk = DICTIONARY.packet_by_name["AGENT_HK"]
    values = {name: None for name in hk.channels}
    values.update(mode="SAFE", uptime_s=1.0)
    good = codec.encode_hk(hk.sid, values, 1.7e9)
    with PtyLine() as line:
        agent = open_flight_link(f"serial://{line.a_link}?baud=115200")
        config = ServerConfig(spacecraft=(SpacecraftConfig("sat-s", f"serial://{line.b_link}?baud=115200"),),
                              port=0, archive=tmp_path / "g.sqlite", users=users)
        server = GroundServer(config, UserStore.load(users), connect_timeout_s=0).start()
        try:
            # a frame cut short on the line, then noise: one write, though the link may take them apart
            line.inject(A_TO_B, b"\x00" + encode_frame(good)[:-5] + b"\x00" + b"\x01\x02\x03\x04\x00")
            agent.publish(good)
            link = server.links["sat-s"]

            def said() -> list[str]:
                return [e["text"] for e in list(link.events) if e["name"] == "GROUND_BAD_PACKET"]

            wait_until(lambda: "mode" in link.latest and sum(int(t.split()[0]) for t in said()) >= 2,
                       what="the good packet taken, the two dropped frames counted and said")
            assert link.status()["bad_packets"] == 2 and link.latest["mode"][0] == "SAFE"
            assert all(" frame(s) dropped by the link before decoding" in t for t in said()), said()
            assert any("COBS" in t or "length" in t for t in said()), said()  # why, as the link said it
        finally:
            server.stop()
            agent.close()


@pytest.mark.req("GND-023")
def test_a_closed_terminal_stops_the_server_cleanly_its_queue_filed_in_the_archive(source, tmp_path):
    """GND-023. Found in audit: SIGHUP (the terminal `sunlit-ground server` ran in closed, an ssh session dropped)
    killed the server: the NOOP it had taken (202) was missing from the archive's history altogether, and it exited
    by the signal. Now a stop as SIGTERM's: exit 0, the command filed as never sent."""
    url, _link = source
    make_users(tmp_path / "users.toml")
    (tmp_path / "server.toml").write_text(f'[server]\nport = 0\narchive = "g.sqlite"\nusers = "users.toml"\n'
                                          f'[[spacecraft]]\nid = "sc"\nlink = "{url}"\n')

    def as_from_a_terminal() -> None:  # a runner started with nohup, or in the background, ignores them
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "ground", "server", "--config", str(tmp_path / "server.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)
    try:
        base = re.search(r"(http://\S+)/ ", proc.stdout.readline()).group(1)

        def post(path: str, body: dict, token: str = "") -> dict:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
            with urllib.request.urlopen(urllib.request.Request(base + path, json.dumps(body).encode(), headers),
                                        timeout=15) as answer:
                return json.loads(answer.read())

        token = post("/api/login", {"user": "alice", "password": PASSWORDS["alice"]})["token"]
        entry = post("/api/commands", {"name": "NOOP"}, token)
        assert entry["state"] == "queued", entry  # the agent is silent: it waits
        proc.send_signal(signal.SIGHUP)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err)
    archive = Archive(tmp_path / "g.sqlite")
    try:
        assert [(c.queue_id, c.state) for c in archive.commands()] == [(entry["id"], "cancelled")]
    finally:
        archive.close()


@pytest.mark.req("GND-020")
def test_a_burst_larger_than_a_programs_message_bound_reaches_it_in_several_pushes(source, tmp_path):
    """GND-020. Found in audit: the packets a program's batch held went as one WebSocket message, however many: a
    burst of 17 MB (or a backlog behind a slow network) was more than the program's client takes (16 MiB), which
    closed the connection (1009, "message too big"), every packet after it lost. Now several pushes: the program
    stays connected and gets every packet the server took in."""
    from ground.api import ApiClient, ServerLink

    url, link = source
    users = make_users(tmp_path / "users.toml")
    # Pushes at most once a second: the burst, sent well within one, goes in one batch
    server = GroundServer(quick_config(url, port=0, archive=None, users=users), UserStore.load(users),
                          connect_timeout_s=0, batch_interval_s=1.0).start()
    program = None
    try:
        api = ApiClient(server.url)
        api.login("vera", PASSWORDS["vera"])
        program = ServerLink(api, "sunlit-1")
        wait_until(lambda: program.hello, what="the program's hello")
        for i in range(800):  # 24 MB: events no decoder takes, each with 30 kB of data, each pushed raw
            link.publish(pack_tm(Apid.AGENT, i, Service.EVENT, 5, bytes([0xC1]) * 30_000, 1.7e9 + i))
        taken = server.links["sunlit-1"]
        # Every packet taken so far at the program (read in one look: the link may take more meanwhile), or closed
        wait_until(lambda: program.closed_reason or (taken.packets >= 700 and len(program._packets) == taken.packets),
                   what="the burst at the program")
        assert program.closed_reason == "" and program.dropped == 0, program.closed_reason
    finally:
        if program is not None:
            program.close()
        server.stop()
