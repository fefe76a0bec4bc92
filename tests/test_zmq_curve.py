"""CurveZMQ and the ZAP allow-list on the ZeroMQ links (flight/link/curve.py, flight/link/zmq_link.py).

Real sockets on tcp://127.0.0.1 with ``zmq_curve = "on"`` forced (loopback is off by default).
Every link opened here is closed by the ``links`` fixture, and no thread (a ZAP handler)
outlives its test.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from flight.config import ConfigError, parse_config
from flight.link.definitions import DICTIONARY
from flight.link.curve import CurveKeyError, client_keys, curve_wanted, load_secret, make_certificate, server_keys
from flight.link.interface import LinkConfig, LinkConfigError
from flight.link.transport import open_flight_link, open_ground_link, parse_link_url
from flight.link.packets import MAX_PACKET_LEN
from flight.link.zmq_link import ZmqFlightLink
from ground.client import direct_client
from ground.server_config import ServerConfigError, server_config_from_mapping
from hil.agent_process import free_tcp_port_pair

pytestmark = pytest.mark.system  # real sockets

WAIT_S = 30.0  # a bound on a wait for a condition, never a measure: a loaded CI machine is slow to hand shake


@pytest.fixture
def keys(tmp_path):
    """The agent's pair, an allowed ground's pair (its public key in clients/) and a stranger's."""
    clients = tmp_path / "clients"
    clients.mkdir()
    clients.chmod(0o750)  # as install.sh makes it, whatever this process's umask: others may not write to it
    make_certificate(tmp_path, "agent")
    public, _ = make_certificate(tmp_path, "ground")
    os.replace(public, clients / "ground.key")
    (clients / "ground.key").chmod(0o644)
    make_certificate(tmp_path, "stranger")  # stranger.key stays outside the allow-list
    return tmp_path


@pytest.fixture
def links():
    """Open links through ``opened(link)``; all closed at the end, and no thread left over."""
    before = set(threading.enumerate())
    opened: list = []
    yield lambda link: opened.append(link) or link
    for link in reversed(opened):
        link.close()
    from zmq.utils.garbage import GarbageCollectorThread  # pyzmq's own, one a process, for zero-copy sends

    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()
                and not isinstance(t, GarbageCollectorThread)]
    assert leftover == [], f"threads outlived the test: {leftover}"


def agent_config(keys: Path, url: str, curve: str = "on", **security):
    raw = {"link": {"url": url}, "security": {"zmq_curve": curve, "zmq_server_secret": str(keys / "agent.key_secret"),
                                              "zmq_clients": str(keys / "clients"), **security}}
    return parse_config(raw, "agent.toml")


def agent_link(keys: Path, url: str):
    """The agent's link as the agent opens it: from its config, zmq_curve forced on."""
    config = agent_config(keys, url)
    assert config.curve_on
    return open_flight_link(config.link_url, curve=config.link_curve())


def pump(flight, ground, until, send: bytes | None = None, timeout_s: float = WAIT_S):
    """Run both ends (the agent answers each command and publishes) until ``until()`` or the time is up."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if send is not None:
            ground.send(send)
        for inbound in flight.receive():
            flight.reply(inbound.peer, b"reply:" + inbound.packet)
        flight.publish(b"telemetry")
        got += ground.receive()
        if until(got):
            break
        time.sleep(0.02)
    return got


@pytest.mark.req("SEC-007")
def test_a_listed_client_exchanges_commands_and_telemetry(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    flight = links(agent_link(keys, url))
    assert flight.config.curve is not None and flight.config.curve.is_server
    ground = links(open_ground_link(url, curve=client_keys(keys / "agent.key", keys / "ground.key_secret")))
    got = pump(flight, ground, lambda got: b"reply:cmd-1" in got and b"telemetry" in got, send=b"cmd-1")
    assert b"reply:cmd-1" in got and b"telemetry" in got
    assert flight.stats.rx_auth_refused == 0
    # The Lazy Pirate retry's new DEALER is a CURVE client too: its command still gets through.
    ground.reset_commands()
    got = pump(flight, ground, lambda got: b"reply:cmd-2" in got, send=b"cmd-2")
    assert b"reply:cmd-2" in got
    # The largest packet there can be, in CurveZMQ's box: under the command socket's limit on messages.
    largest = b"L" * MAX_PACKET_LEN
    got = pump(flight, ground, lambda got: b"reply:" + largest in got, send=largest)
    assert b"reply:" + largest in got


def refused_client(keys: Path, links, url: str, client):
    """A listed client and ``client`` side by side: the listed one proves the agent was serving."""
    flight = links(agent_link(keys, url))
    listed = links(open_ground_link(url, curve=client_keys(keys / "agent.key", keys / "ground.key_secret")))
    other = links(client)
    got = pump(flight, listed, lambda got: b"telemetry" in got and flight.stats.rx_auth_refused >= 2)
    assert b"telemetry" in got
    other.send(b"from-outside")
    seen: list[bytes] = []
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # the agent keeps publishing; the outsider keeps trying
        seen += [i.packet for i in flight.receive()]
        flight.publish(b"telemetry")
        time.sleep(0.02)
    assert seen == [] and other.receive() == [] and other.stats.rx_packets == 0
    assert flight.subscribers == 1  # the listed console's subscription only
    return flight


@pytest.mark.req("SEC-007")
def test_a_client_whose_key_is_not_listed_gets_nothing_and_is_counted(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    stranger = open_ground_link(url, curve=client_keys(keys / "agent.key", keys / "stranger.key_secret"))
    flight = refused_client(keys, links, url, stranger)
    assert flight.stats.rx_auth_refused >= 2  # its DEALER and its SUB, each refused by the ZAP handler


@pytest.mark.req("SEC-007")
def test_a_plain_client_gets_nothing_and_is_counted(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    flight = refused_client(keys, links, url, open_ground_link(url))
    assert flight.stats.rx_auth_refused >= 2


@pytest.mark.req("SEC-007")
def test_a_client_that_does_not_know_the_agents_key_gets_nothing(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    # A listed client key, but a server key that is not the agent's (an impostor's, say).
    wrong = client_keys(keys / "stranger.key", keys / "ground.key_secret")
    flight = refused_client(keys, links, url, open_ground_link(url, curve=wrong))
    assert flight.stats.rx_auth_refused >= 2


@pytest.mark.req("SEC-007")
def test_the_zap_handler_does_not_outlive_a_link_that_failed_to_bind(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    links(agent_link(keys, url))
    threads = set(threading.enumerate())
    with pytest.raises(OSError, match="cannot bind"):
        agent_link(keys, url)  # the port is taken: its authenticator and context are closed again
    assert set(threading.enumerate()) <= threads


@pytest.mark.req("SEC-007")
def test_curve_off_is_the_plain_link_as_before(links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    config = parse_config({"link": {"url": url}})  # loopback: auto is off, no keys needed
    assert config.zmq_curve == "auto" and not config.curve_on and config.link_curve() is None
    before = set(threading.enumerate())
    flight = links(open_flight_link(config.link_url, curve=config.link_curve()))
    assert isinstance(flight, ZmqFlightLink) and flight.config.curve is None
    assert flight._auth is None and flight._monitors == [] and set(threading.enumerate()) == before
    ground = links(open_ground_link(url))
    got = pump(flight, ground, lambda got: b"reply:x" in got and b"telemetry" in got, send=b"x")
    assert b"reply:x" in got and b"telemetry" in got and flight.stats.rx_auth_refused == 0


@pytest.mark.req("SEC-008")
@pytest.mark.parametrize("url, on", [
    ("zmq://10.0.0.5:5550", True),
    ("zmq://0.0.0.0:5550", True),  # every interface: reachable from off the board
    ("zmq://*:5550", True),
    ("zmq://board.example:5550", True),
    ("zmq://127.0.0.1:5550", False),
    ("zmq://127.3.2.1:5550", False),  # all of 127.0.0.0/8
    ("zmq://[::1]:5550", False),
    ("zmq://localhost:5550", False),
    ("zmq://LOCALHOST:5550", False),
    ("zmq+ipc:///run/sunlit/link", False),
    ("serial:///dev/ttyTHS1?baud=115200", False),  # serial links have no CURVE
])
def test_auto_is_on_except_on_loopback_and_ipc(url, on):
    assert curve_wanted(url, "auto") is on
    zmq_link = not url.startswith("serial")
    assert curve_wanted(url, "on") is zmq_link and curve_wanted(url, "off") is False


@pytest.mark.req("SEC-008")
def test_a_serial_link_ignores_curve(keys):
    config = agent_config(keys, "serial:///dev/ttyTHS1", curve="on", zmq_server_secret="/nonexistent")
    assert not config.curve_on and config.link_curve() is None
    keys_ = server_keys(keys / "agent.key_secret", keys / "clients")
    assert parse_link_url("serial:///dev/ttyTHS1").curve is None
    from flight.link.transport import _with_curve

    assert _with_curve("serial:///dev/ttyTHS1", keys_).curve is None


@pytest.mark.req("SEC-009")
def test_agent_config_errors_name_the_key(keys):
    off_board = "zmq://10.1.2.3:5550"  # auto: on; nothing is bound here
    assert agent_config(keys, off_board, curve="auto").curve_on
    with pytest.raises(ConfigError, match=r"security\.zmq_server_secret: required: zmq_curve is auto"):
        parse_config({"link": {"url": off_board}}, "agent.toml")
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: required: zmq_curve is on"):
        parse_config({"link": {"url": "zmq://127.0.0.1:5550"},
                      "security": {"zmq_curve": "on", "zmq_server_secret": str(keys / "agent.key_secret")}})
    with pytest.raises(ConfigError, match=r"security\.zmq_server_secret: .*missing\.key_secret: No such file"):
        agent_config(keys, off_board, zmq_server_secret=str(keys / "missing.key_secret"))
    with pytest.raises(ConfigError, match=r"security\.zmq_curve: 'yes' is not one of auto, on, off"):
        agent_config(keys, off_board, curve="yes")
    # A secret others may read is refused, like tc.keys.
    os.chmod(keys / "agent.key_secret", 0o640)
    with pytest.raises(ConfigError, match=r"security\.zmq_server_secret: .*mode 640, readable by others; chmod 600"):
        agent_config(keys, off_board)
    os.chmod(keys / "agent.key_secret", 0o600)
    # A public certificate is not a secret one.
    os.chmod(keys / "clients" / "ground.key", 0o600)
    with pytest.raises(ConfigError, match=r"security\.zmq_server_secret: .*no secret key"):
        agent_config(keys, off_board, zmq_server_secret=str(keys / "clients" / "ground.key"))
    # A malformed allow-list entry, an empty allow-list (nobody could connect), no directory at all.
    (keys / "clients" / "bad.key").write_text('curve\n    public-key = "short"\n')
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*bad\.key: no public key of 40 Z85"):
        agent_config(keys, off_board)
    empty = keys / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*no client certificate"):
        agent_config(keys, off_board, zmq_clients=str(empty))
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*not a directory"):
        agent_config(keys, off_board, zmq_clients=str(keys / "nowhere"))
    # Off: nothing is required, nothing is read.
    assert not parse_config({"link": {"url": off_board}, "security": {"zmq_curve": "off"}}).curve_on


@pytest.mark.req("SEC-009")
def test_make_certificate_writes_a_private_secret(tmp_path):
    public, secret = make_certificate(tmp_path / "zmq", "agent")
    assert (public.stat().st_mode & 0o777, secret.stat().st_mode & 0o777) == (0o644, 0o600)
    assert sorted(p.name for p in public.parent.iterdir()) == ["agent.key", "agent.key_secret"]  # no leftovers
    pub, sec = load_secret(secret)
    assert len(pub) == len(sec) == 40
    with pytest.raises(FileExistsError):
        make_certificate(tmp_path / "zmq", "agent")  # never overwrites a key in use
    _, other = load_secret(make_certificate(tmp_path / "zmq", "other")[1])
    secret.write_text(secret.read_text().replace(sec.decode(), other.decode()))
    with pytest.raises(CurveKeyError, match="does not belong"):
        load_secret(secret)
    secret.write_text(secret.read_text().replace(other.decode(), "~" * 40))
    with pytest.raises(CurveKeyError, match="secret key is not Z85"):
        load_secret(secret)


@pytest.mark.req("SEC-009", "SEC-010")
def test_ground_server_config_takes_both_keys_or_neither(keys):
    def parse(**sc):
        return server_config_from_mapping({"spacecraft": [{"id": "sunlit-1", "link": "zmq://10.1.2.3:5550", **sc}]},
                                          DICTIONARY)

    assert parse().spacecraft[0].link_curve() is None
    both = parse(zmq_server_public=str(keys / "agent.key"), zmq_client_secret=str(keys / "ground.key_secret"))
    curve = both.spacecraft[0].link_curve()
    assert curve.server_public == load_secret(keys / "agent.key_secret")[0] and not curve.is_server
    with pytest.raises(ServerConfigError, match=r"spacecraft\[0\]\.zmq_client_secret: required with zmq_server_public"):
        parse(zmq_server_public=str(keys / "agent.key"))
    with pytest.raises(ServerConfigError, match=r"spacecraft\[0\]\.zmq_server_public: required with zmq_client_secret"):
        parse(zmq_client_secret=str(keys / "ground.key_secret"))
    with pytest.raises(ServerConfigError, match=r"spacecraft\[0\]\.zmq_server_public: .*nowhere\.key"):
        parse(zmq_server_public=str(keys / "nowhere.key"), zmq_client_secret=str(keys / "ground.key_secret"))
    os.chmod(keys / "ground.key_secret", 0o644)
    with pytest.raises(ServerConfigError, match=r"spacecraft\[0\]\.zmq_client_secret: .*mode 644.*chmod 600"):
        parse(zmq_server_public=str(keys / "agent.key"), zmq_client_secret=str(keys / "ground.key_secret"))


@pytest.mark.req("SEC-010")
def test_a_direct_client_talks_curve(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    flight = links(agent_link(keys, url))
    client = links(direct_client(url, None, str(keys / "agent.key"), str(keys / "ground.key_secret")))
    assert isinstance(client.link.config, LinkConfig) and client.link.config.curve is not None
    got = pump(flight, client.link, lambda got: b"reply:d" in got, send=b"d")
    assert b"reply:d" in got
    with pytest.raises(LinkConfigError, match="go together"):
        direct_client(url, None, str(keys / "agent.key"), None)
    with pytest.raises(LinkConfigError, match="CurveZMQ keys: .*nowhere"):
        direct_client(url, None, str(keys / "agent.key"), str(keys / "nowhere.key_secret"))


def test_the_selftest_does_not_ping_an_agent_that_takes_listed_clients_only(keys, links):
    from flight.selftest import Status, _check_link

    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    links(agent_link(keys, url))
    [row] = _check_link(agent_config(keys, url), True, 0.2)
    assert row.status is Status.WARN and "CurveZMQ is on" in row.detail and row.data["curve"] is True


@pytest.mark.req("SEC-009")
def test_the_zmq_keys_command_makes_a_pair_and_refuses_to_overwrite(tmp_path, capsys):
    from flight.cli import main

    assert main(["zmq-keys", str(tmp_path), "ground"]) == 0
    assert "ground.key_secret" in capsys.readouterr().out and load_secret(tmp_path / "ground.key_secret")
    assert main(["zmq-keys", str(tmp_path), "ground"]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and "Traceback" not in err


@pytest.mark.req("SEC-007")
def test_with_its_zap_handler_gone_the_agent_lets_nobody_in(keys, links):
    url = f"zmq://127.0.0.1:{free_tcp_port_pair()}"
    flight = links(agent_link(keys, url))
    flight._auth.stop()  # the handler's thread ended (a crash of it): ZAP is enforced, so none get in
    stranger = links(open_ground_link(url, curve=client_keys(keys / "agent.key", keys / "stranger.key_secret")))
    listed = links(open_ground_link(url, curve=client_keys(keys / "agent.key", keys / "ground.key_secret")))
    end = time.monotonic() + 1.0
    seen: list[bytes] = []
    while time.monotonic() < end:
        stranger.send(b"from-outside")
        seen += [i.packet for i in flight.receive()]
        flight.publish(b"telemetry")
        time.sleep(0.02)
    assert seen == [] and stranger.receive() == [] and listed.receive() == []


@pytest.mark.req("SEC-009")
def test_the_allow_list_is_checked_as_the_zap_handler_reads_it_hidden_files_left_out(keys):
    """pyzmq's ZAP handler skips hidden ``*.key`` files: so does the check. A list of only a hidden one
    is empty (found in audit: it passed, and the agent started letting nobody in), and a hidden broken
    one stops nothing."""
    import zmq.auth

    off_board = "zmq://10.1.2.3:5550"
    os.replace(keys / "clients" / "ground.key", keys / "clients" / ".ground.key")
    assert zmq.auth.load_certificates(str(keys / "clients")) == {}  # what the ZAP handler would let in
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*no client certificate"):
        agent_config(keys, off_board)
    (keys / "clients" / ".ground.key").write_text("not a certificate\n")  # set aside, and broken
    os.replace(keys / "stranger.key", keys / "clients" / "stranger.key")
    assert agent_config(keys, off_board).curve_on


@pytest.mark.req("SEC-009")
def test_an_allow_list_others_may_write_to_is_refused_naming_it(keys):
    """Any user who can write to the allow-list can let their own key in at the agent's next start (found in
    audit: a clients directory of mode 777, or a certificate of mode 666 in it, was taken without a word)."""
    off_board = "zmq://10.1.2.3:5550"
    assert agent_config(keys, off_board).curve_on  # as install.sh leaves it
    os.chmod(keys / "clients", 0o777)
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*clients: mode 777, writable by others.*chmod o-w"):
        agent_config(keys, off_board)
    os.chmod(keys / "clients", 0o750)
    os.chmod(keys / "clients" / "ground.key", 0o666)
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*ground\.key: mode 666, writable by others"):
        agent_config(keys, off_board)
    os.chmod(keys / "clients" / "ground.key", 0o664)  # writable by its group only: the owner's to choose
    assert agent_config(keys, off_board).curve_on


@pytest.mark.req("SEC-009")
def test_a_key_line_without_its_value_is_refused_naming_the_file_not_a_traceback(keys, capsys):
    """pyzmq's reader raises IndexError on a ``public-key`` or ``secret-key`` line without ``=`` (found in audit:
    a traceback at the agent's config check and out of ``sunlit-ground --direct``); a key error naming the file."""
    from ground.cli import main as ground_main

    off_board = "zmq://10.1.2.3:5550"
    (keys / "clients" / "cut.key").write_text("curve\n    public-key\n")
    with pytest.raises(ConfigError, match=r"security\.zmq_clients: .*cut\.key: a public-key or secret-key line"):
        agent_config(keys, off_board)
    (keys / "clients" / "cut.key").unlink()
    secret = keys / "agent.key_secret"
    secret.write_text(re.sub(r"secret-key = .*", "secret-key", secret.read_text()))  # a Z85 key may hold '='
    with pytest.raises(ConfigError, match=r"security\.zmq_server_secret: .*agent\.key_secret: a public-key or secret"):
        agent_config(keys, off_board)
    assert ground_main(["--direct", off_board, "--zmq-server-public", str(keys / "agent.key"),
                        "--zmq-client-secret", str(secret), "send", "NOOP"]) == 2
    err = capsys.readouterr().err
    assert "agent.key_secret: a public-key or secret-key line" in err and "Traceback" not in err


@pytest.mark.req("SEC-009")
def test_make_certificate_syncs_both_files_before_their_renames_and_the_directory_after(tmp_path, monkeypatch):
    """A pair made and then a power cut must not leave an empty certificate that refuses to be made again (found
    in audit: make_certificate synced nothing; install.sh syncs its own pair)."""
    import flight.link.curve as curve_module

    directory = tmp_path / "zmq"
    synced: list[tuple[str, bool]] = []  # (name synced, whether the pair was in place then)
    real = curve_module.fsync_path
    monkeypatch.setattr(curve_module, "fsync_path", lambda p: (
        synced.append((Path(p).name, (directory / "agent.key_secret").exists())), real(p))[1])
    make_certificate(directory, "agent")
    assert synced == [("agent.key_secret", False), ("agent.key", False), ("zmq", True)]
