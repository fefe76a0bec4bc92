"""The ground server's WebSockets with real sockets: what a client that stops reading may cost the
server (its memory, its link thread, its stop), and how many one session or the server may hold."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time

import pytest

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from ground.auth import UserStore
from ground.server import GroundServer, quick_config
from tests.test_ground_server import PASSWORDS, http, login, make_users, wait_until

CODEC = Codec(DICTIONARY)
HK = DICTIONARY.packet_by_name["AGENT_HK"]


@pytest.fixture
def source_and_server(tmp_path, short_dir):
    """A source that speaks the agent's side of a real link, and a server on it (no archive); the
    server is stopped here too (a test that stops it itself leaves this a no-op)."""
    from flight.link.transport import open_flight_link

    url = f"zmq+ipc://{short_dir}/source"
    source = open_flight_link(url)
    users = make_users(tmp_path / "users.toml")
    made: list[GroundServer] = []

    def start(**kw) -> GroundServer:
        server = GroundServer(quick_config(url, port=0, archive=None, users=users), UserStore.load(users),
                              connect_timeout_s=0, **kw).start()
        made.append(server)
        return server

    yield source, start
    for server in made:
        server.stop()
    source.close()


def host_port(server: GroundServer) -> tuple[str, int]:
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    return host, int(port)


def stalled_socket(server: GroundServer, token: str) -> socket.socket:
    """A WebSocket client that asks for every packet (raw) and never reads a byte: its receive buffer is
    kept small, so the server's writes back up at once."""
    host, port = host_port(server)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?raw=1 HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n")
              .encode())
    return s


# A page queue this long is taken every batch (50 ms) while its socket writes: at the source's few thousand
# packets a second it overflows only once its sender waits on a socket that does not drain.
STALL_POINTS = 5000


def stalled_pages(server: GroundServer) -> int:
    """Raw pages whose queue overflowed: their sender is stuck on a socket whose client does not read."""
    return sum(q.dropped_points_total > 0 for q, _wants, raw in server._pages if raw)


def publish_until(source, predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Housekeeping from the source, a hundred packets at a time, until ``predicate()``."""
    values = {n: None for n in HK.channels}
    values.update(mode="SAFE", uptime_s=1.0, dict_hash=DICTIONARY.version_hash)
    t = 1.7e9
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        for _ in range(100):
            t += 0.001
            source.publish(CODEC.encode_hk(HK.sid, values, t))
        source.receive()
        time.sleep(0.01)


@pytest.mark.req("GND-035")
def test_stop_cuts_a_websocket_whose_client_stopped_reading_and_frees_the_port(source_and_server, capfd):
    """Found in audit: stop() closed the sockets one by one; one whose client had stopped reading held it 10 s,
    it failed with an empty message, and the rest of the shutdown was skipped: the port kept listening."""
    from websockets.sync.client import connect

    source, start = source_and_server
    server = start(queue_points=STALL_POINTS)
    token = login(server, "vera")
    stalled = [stalled_socket(server, token) for _ in range(2)]
    host, port = host_port(server)
    with contextlib.ExitStack() as stack:
        for s in stalled:
            stack.callback(s.close)
        reader = stack.enter_context(connect(f"ws://{host}:{port}/ws", max_queue=None, max_size=None,
                                             additional_headers={"Authorization": f"Bearer {token}"}))
        publish_until(source, lambda: stalled_pages(server) == 2, what="both stalled sockets backed up")
        server.stop()
        assert "web shutdown" not in capfd.readouterr().err
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()
        # The client that reads was told why, in the close frame.
        from websockets.exceptions import ConnectionClosed

        with pytest.raises(ConnectionClosed) as closed:
            while True:
                reader.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert closed.value.rcvd.reason == "server stopping"


def open_ws(server: GroundServer, token: str, **kw):
    from websockets.sync.client import connect

    host, port = host_port(server)
    return connect(f"ws://{host}:{port}/ws?raw=1", additional_headers={"Authorization": f"Bearer {token}"}, **kw)


def refused(server: GroundServer, token: str) -> tuple[int, str]:
    """The HTTP status and error of a WebSocket the server refuses."""
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refusal:
        open_ws(server, token)
    return refusal.value.response.status_code, json.loads(refusal.value.response.body)["error"]


@pytest.mark.req("GND-035")
def test_websockets_are_bounded_per_session_and_in_all_and_refusals_are_counted(source_and_server):
    """Found in audit: one viewer's token opened a hundred WebSockets, each with its page queue, and the link
    thread copied every packet to each."""
    _source, start = source_and_server
    server = start(max_sockets_per_session=2, max_sockets=3)
    vera, bob = login(server, "vera"), login(server, "bob")
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(open_ws(server, vera))
        stack.enter_context(open_ws(server, vera))
        status, error = refused(server, vera)
        assert status == 429 and "this session has 2 open, at most 2" in error, error
        stack.enter_context(open_ws(server, bob))  # another session has its own share
        status, error = refused(server, bob)
        assert status == 429 and "the server has 3" in error, error
        assert len(server._pages) == 3
        _s, answer, _h = http(server, "GET", "/api/status", token=bob)
        assert answer["sockets_refused"] == 2
        first.close()  # one closed frees its place
        deadline = time.monotonic() + 10
        while len(server._pages) > 2:
            assert time.monotonic() < deadline, "the closed WebSocket's page was not taken out"
            time.sleep(0.05)
        stack.enter_context(open_ws(server, vera))


@pytest.mark.req("GND-035")
def test_a_viewer_in_many_sessions_cannot_take_the_sockets_an_operator_needs(source_and_server, monkeypatch):
    """Found in review: a viewer logged in 8 times held all 64 WebSockets, and every operator's console (and
    every program's ServerClient) was refused (429)."""
    import ground.server

    _source, start = source_and_server
    server = start(max_sockets_per_session=2, max_sockets=8)  # two kept for operators (a quarter, at most 16)
    with contextlib.ExitStack() as stack:
        for _ in range(3):  # three sessions of hers, two each: the viewers' room (8 less 2) is full
            token = login(server, "vera")
            for _ in range(2):
                stack.enter_context(open_ws(server, token))
        status, error = refused(server, login(server, "vera"))
        assert status == 429 and "the server has 6 open, 6 at most to viewers" in error, error
        bob = login(server, "bob")
        for _ in range(2):
            stack.enter_context(open_ws(server, bob))  # the operators' two
        status, error = refused(server, login(server, "alice"))
        assert status == 429 and "the server has 8 open, 8 at most to operators" in error, error
    deadline = time.monotonic() + 10
    while server._socket_counts:  # the closed sockets' places given back
        assert time.monotonic() < deadline, "the closed WebSockets were not counted out"
        time.sleep(0.05)
    monkeypatch.setattr(ground.server, "MAX_SOCKETS_PER_USER", 3)
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            token = login(server, "vera")
            stack.enter_context(open_ws(server, token))
        stack.enter_context(open_ws(server, token))
        status, error = refused(server, login(server, "vera"))  # her sessions together, not each one's share
        assert status == 429 and "vera's sessions have 3 open, at most 3" in error, error


@pytest.mark.req("GND-035", "GND-032")
def test_a_page_that_stops_reading_is_closed_saying_why_and_no_longer_fed(source_and_server, monkeypatch):
    """Found in audit: a page whose client stopped reading kept its full queue for good, and the link thread
    went on copying every packet to it. Here the client reads again once the server gave up on it, and finds
    the reason in the close frame (given time to take it: one that never reads is cut off, as at stop)."""
    import ground.server
    from websockets.exceptions import ConnectionClosed

    monkeypatch.setattr(ground.server, "WS_CLOSE_S", 60.0)
    source, start = source_and_server
    server = start(queue_points=STALL_POINTS, page_stall_s=1.0)
    token = login(server, "vera")
    host, port = host_port(server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    # The client's own queue holds one message, then it stops reading the socket: the server's writes back up.
    with open_ws(server, token, sock=sock, max_queue=1, max_size=None) as slow:
        publish_until(source, lambda: server.pages_closed_stalled == 1, what="the stalled page closed")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                slow.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
    assert closed.value.rcvd.reason.startswith("not reading: dropping for "), closed.value.rcvd.reason
    deadline = time.monotonic() + 10
    while server._pages:
        assert time.monotonic() < deadline, "the closed page is still fed"
        time.sleep(0.05)
    _s, answer, _h = http(server, "GET", "/api/status", token=token)
    assert answer["pages_closed_stalled"] == 1 and answer["pages"] == 0


@pytest.mark.req("GND-021", "GND-002")
def test_odd_requests_get_a_json_answer_naming_the_fault_never_a_500_and_logout_ends_the_cookies_session(
        source_and_server):
    """Found in audit: a CSRF header with a character past ASCII made compare_digest raise (500, a traceback); a
    limit of 10**400 overflowed (500); a body over the limit, an unknown route and a wrong method were answered in
    plain text; a 5000-digit command id with Python's own error; a page's binary message went uncounted; and a
    logout with a proxy's Basic Authorization header beside the cookie ended no session."""
    import urllib.request

    _source, start = source_and_server
    server = start()
    token = login(server, "alice")
    status, answer, headers = http(server, "POST", "/api/login", {"user": "alice", "password": PASSWORDS["alice"]})
    jar = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}
    status, answer, _ = http(server, "POST", "/api/queue/hold", {"spacecraft": "sunlit-1"},
                             headers={**jar, "X-CSRF-Token": "\u00e9t\u00e9"})
    assert (status, answer["code"]) == (403, "CSRF")
    status, answer, _ = http(server, "POST", "/api/limits", {"spacecraft": "sunlit-1", "channel": "temp_max_c",
                                                             "limits": {"warn_high": 10 ** 400}}, token=token)
    assert status == 400 and answer["error"].startswith("limits.warn_high: ")
    for given, why in (({"warn_high": 50.0, "crit_high": 40.0}, "limits.crit_high: crit_high 40 is below warn_high 50"),
                       ({"warn_low": 30.0, "warn_high": 30.0}, "warn_high 30 is not above warn_low 30")):
        status, answer, _ = http(server, "POST", "/api/limits", {"spacecraft": "sunlit-1", "channel": "cpu_pct",
                                                                 "limits": given}, token=token)
        assert status == 400 and why in answer["error"], answer  # found in audit: taken, and alarms said critical
    status, answer, _ = http(server, "POST", "/api/limits", {"spacecraft": "sunlit-1", "channel": "mode",
                                                             "limits": {"warn_high": 1.0}}, token=token)
    assert status == 400 and answer["error"].startswith("channel: mode is not a number (enum)"), answer  # never applied
    status, answer, _ = http(server, "GET", "/api/state?spacecraft=" + "x" * 3000, token=token)
    assert status == 404 and len(answer["error"]) < 200  # not a long id echoed whole
    for method, path, code in (("GET", "/api/nothing", "NOT_FOUND"), ("PUT", "/api/commands", "METHOD_NOT_ALLOWED")):
        status, answer, _ = http(server, method, path, token=token)
        assert answer["code"] == code and status == (404 if code == "NOT_FOUND" else 405), (status, answer)
    status, answer, _ = http(server, "POST", "/api/commands/" + "9" * 5000 + "/approve", {"spacecraft": "sunlit-1"},
                             token=token)
    assert status == 400 and answer["code"] == "BAD_ARGUMENTS" and answer["error"].startswith("id: '999")
    request = urllib.request.Request(server.url.rstrip("/") + "/api/commands", method="POST",
                                     data=b'{"name": "' + b"x" * 300_000 + b'"}',
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as too_large:
        urllib.request.urlopen(request, timeout=15)
    assert too_large.value.code == 413 and json.loads(too_large.value.read())["code"] == "TOO_LARGE"
    before = server.status()["page_messages_refused"]
    with open_ws(server, token) as ws:
        ws.send(b"\x00binary")
        ws.send('{"type": "nothing"}')
        wait_until(lambda: server.status()["page_messages_refused"] >= before + 2, what="both refused and counted")
    csrf = http(server, "GET", "/api/session", headers=jar)[1]["csrf"]
    status, answer, _ = http(server, "POST", "/api/logout", {},
                             headers={**jar, "X-CSRF-Token": csrf, "Authorization": "Basic YWxpY2U6cHJveHk="})
    assert status == 200 and answer["logged_out"]
    assert http(server, "GET", "/api/session", headers=jar)[0] == 401  # the cookie's session ended


@pytest.mark.req("GND-035")
def test_a_refused_socket_counts_once_however_often_the_page_probes_for_room(source_and_server):
    """Found in audit: the web console, its socket refused, asks again by a plain GET of /ws (app.js); each such
    probe was counted in sockets_refused too, so one refused socket counted 2, and 1 more at every retry. A probe
    is answered by the same bounds (429, 204 where there is room) and counts nothing."""
    _source, start = source_and_server
    server = start(max_sockets_per_session=1)
    token = login(server, "alice")
    with open_ws(server, token):
        status, error = refused(server, token)  # the page's socket, refused: counted
        assert status == 429 and "this session has 1 open, at most 1" in error, error
        for _ in range(3):  # the page's probes after it, refused as the socket was
            status, answer, _h = http(server, "GET", "/ws", token=token)
            assert status == 429 and answer["code"] == "TOO_MANY_SOCKETS", answer
        assert http(server, "GET", "/api/status", token=token)[1]["sockets_refused"] == 1
    wait_until(lambda: not server._pages, what="the closed WebSocket's place freed")
    assert http(server, "GET", "/ws", token=token)[0] == 204  # room now: the probe says so, and counts nothing
    assert server.sockets_refused == 1
