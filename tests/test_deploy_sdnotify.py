"""flight/sdnotify.py against real AF_UNIX datagram sockets, as systemd's NOTIFY_SOCKET is.

systemd binds a SOCK_DGRAM socket (a path, or an abstract name given as "@name") and reads
one datagram per sd_notify call (sd_notify(3)). These tests bind the same kind of socket and
read what the client sent.
"""

from __future__ import annotations

import doctest
import os
import socket
import uuid

import pytest

import flight.sdnotify as sdnotify


@pytest.fixture
def path_socket(short_dir):
    path = short_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


@pytest.fixture
def abstract_socket():
    name = f"sunlit-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    yield sock, {"NOTIFY_SOCKET": "@" + name}
    sock.close()


def test_notify_sends_one_datagram_to_a_path_socket(path_socket):
    sock, env = path_socket
    assert sdnotify.notify("READY=1\nSTATUS=up on zmq://127.0.0.1:5550", env) is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=up on zmq://127.0.0.1:5550"


def test_notify_reaches_an_abstract_socket(abstract_socket):
    sock, env = abstract_socket
    assert sdnotify.notify(sdnotify.WATCHDOG, env) is True
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_helpers_use_the_environment(monkeypatch, abstract_socket):
    sock, env = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert sdnotify.ready("agent up")
    assert sdnotify.watchdog()
    assert sdnotify.status("SAFE,   battery 80 %")
    assert sdnotify.stopping("SIGTERM")
    got = [sock.recv(4096) for _ in range(4)]
    assert got == [b"READY=1\nSTATUS=agent up", b"WATCHDOG=1", b"STATUS=SAFE, battery 80 %", b"STOPPING=1\nSTATUS=SIGTERM"]


def test_without_systemd_every_call_is_a_quiet_false(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False  # not spoken here


def test_a_socket_nobody_listens_on_is_false_not_an_exception(short_dir):
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(short_dir / "gone")}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@sunlit-nobody-" + uuid.uuid4().hex}) is False


def test_an_abstract_name_not_utf8_is_reached_not_raised(monkeypatch):
    """Found in audit: the environment's bytes come to Python decoded with surrogateescape, and a NOTIFY_SOCKET
    name not UTF-8 raised UnicodeEncodeError out of notify (the agent's start); the name is the bytes as given."""
    name = b"\0sunlit-test-\xff-" + uuid.uuid4().hex.encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + os.fsdecode(name[1:]))
        assert sdnotify.socket_address() == name
        assert sdnotify.ready("up") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    finally:
        sock.close()


@pytest.mark.parametrize("name", ["/run/" + "n" * 200, "@" + "n" * 200])
def test_a_socket_name_past_sun_path_is_false_not_an_exception(name):
    """sun_path holds 108 bytes: a longer NOTIFY_SOCKET cannot be reached, and says so as any send failure."""
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": name}) is False


def test_nul_and_empty_states_are_refused(path_socket):
    _, env = path_socket
    assert sdnotify.notify("", env) is False
    assert sdnotify.notify("READY=1\0", env) is False


@pytest.mark.parametrize(
    ("env", "period_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({}, None),
    ],
)
def test_watchdog_period(env, period_s):
    assert sdnotify.watchdog_period_s(env) == period_s
    assert sdnotify.ping_interval_s(env) == (None if period_s is None else period_s / 2)


def test_watchdog_period_matches_the_unit_file():
    """The unit's WatchdogSec=60 arrives as WATCHDOG_USEC=60000000: at least every 30 s."""
    from pathlib import Path

    unit = (Path(__file__).resolve().parents[1] / "deploy/systemd/sunlit-agent.service").read_text()
    seconds = int(next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("WatchdogSec=")))
    assert sdnotify.ping_interval_s({"WATCHDOG_USEC": str(seconds * 1_000_000)}) == seconds / 2


def test_doctests():
    assert doctest.testmod(sdnotify).failed == 0


def test_status_text_cannot_add_lines(path_socket, monkeypatch):
    """A SHUTDOWN reason comes from the link: a newline in it must not become a second
    KEY=VALUE line (WATCHDOG=trigger would make systemd abort the agent)."""
    sock, env = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert sdnotify.stopping("commanded: x\nWATCHDOG=trigger")
    assert sdnotify.ready("up\r\nMAINPID=1")
    assert sdnotify.status("a\n\nb")
    assert [sock.recv(4096) for _ in range(3)] == [
        b"STOPPING=1\nSTATUS=commanded: x WATCHDOG=trigger",
        b"READY=1\nSTATUS=up MAINPID=1",
        b"STATUS=a b",
    ]


def _datagrams_until(sock: socket.socket, wanted: bytes, seen: list[bytes]) -> None:
    """Read datagrams into ``seen`` until one has the line ``wanted`` (socket timeout: fail)."""
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            pytest.fail(f"no {wanted!r} from the agent; it sent {seen!r}")
        seen.append(data)
        if wanted in data.split(b"\n"):
            return


@pytest.mark.req("DEP-002")
def test_the_agent_process_says_ready_feeds_the_watchdog_and_says_stopping(
    short_dir, monkeypatch, start_agent, make_client, ipc_url
):
    """The real agent under a NOTIFY_SOCKET as systemd gives it: READY=1 after boot, then
    WATCHDOG=1 from its loop, then STOPPING=1 with the commanded reason (newline folded)."""
    path = short_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # feed every second
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        agent = start_agent(ipc_url, "--hal", "linux")
        seen: list[bytes] = []
        _datagrams_until(sock, b"READY=1", seen)
        assert seen[-1] == b"READY=1\nSTATUS=boot 1, mode SAFE, link ZMQ"
        after_ready: list[bytes] = []
        _datagrams_until(sock, b"WATCHDOG=1", after_ready)
        _datagrams_until(sock, b"WATCHDOG=1", after_ready)  # and again: it keeps feeding
        client = make_client(ipc_url)
        assert client.send("SHUTDOWN", {"reason": "test\nWATCHDOG=trigger", "then": "STAY_DOWN"}).completed
        stop: list[bytes] = []
        _datagrams_until(sock, b"STOPPING=1", stop)
        assert stop[-1] == b"STOPPING=1\nSTATUS=commanded: test WATCHDOG=trigger; then STAY_DOWN"
        assert agent.proc.wait(30) == 0  # STAY_DOWN: the unit leaves it down (RESTART_SAFE exits 75)
    finally:
        sock.close()
