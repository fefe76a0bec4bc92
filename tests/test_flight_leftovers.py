"""Leftovers of the flight-side audit: link URLs, CurveZMQ off on an open address, dates for seconds."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flight.cli import main
from flight.link.curve import plain_off_board
from flight.link.interface import LinkConfigError, parse_link_url
from hil.agent_process import free_tcp_port_pair

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.req("LNK-004")
@pytest.mark.parametrize("url", ["zmq://127.0.0.1:5550/agent", "tcp://127.0.0.1:5550/x/y",
                                 "zmq://127.0.0.1:5550#cmd", "zmq://me@127.0.0.1:5550"])
def test_a_zmq_url_with_more_than_host_and_port_is_refused_naming_it(url):
    """Found in audit: zmq://HOST:PORT/path bound HOST:PORT, the path dropped without a word (someone
    meaning a socket per spacecraft got one shared port). Now the URL is refused, named, where it is read."""
    with pytest.raises(LinkConfigError, match="names a host and port only") as caught:
        parse_link_url(url)
    assert str(caught.value).startswith(f"{url}: ")


def test_a_zmq_url_still_takes_a_trailing_slash_and_a_queue():
    """What the refusal leaves alone: nothing after the port but ``/`` or ``?queue=N``."""
    assert parse_link_url("zmq://127.0.0.1:5550/").cmd_endpoint == "tcp://127.0.0.1:5550"
    assert parse_link_url("zmq://[::1]:5550?queue=7").queue_packets == 7


def test_the_agent_refuses_a_link_url_with_a_path_in_one_line(tmp_path, capsys):
    """The refusal reaches whoever started the agent as its one line, naming the flag and the URL, exit 2."""
    url = "zmq://127.0.0.1:5550/agent"
    assert main(["run", "--link", url, "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sunlit-flight: --link (link.url): {url}: ")
    assert not (tmp_path / "state").exists()


@pytest.mark.req("SEC-008")
@pytest.mark.parametrize("url,setting,said", [
    ("zmq://0.0.0.0:5550", "off", True),            # every interface
    ("zmq://192.168.1.20:5550", "off", True),       # a LAN address
    ("zmq://orin.local:5550", "off", True),         # a host name may be any address
    ("zmq://127.0.0.1:5550", "off", False),         # loopback: nothing off the board reaches it
    ("zmq://[::1]:5550", "off", False),
    ("zmq+ipc:///run/sunlit/link", "off", False),
    ("serial:///dev/ttyTHS1?baud=115200", "off", False),
    ("zmq://0.0.0.0:5550", "auto", False),          # CURVE on: nothing to say
    ("zmq://0.0.0.0:5550", "on", False),
])
def test_curve_off_is_said_only_where_other_hosts_reach_the_link(url, setting, said):
    assert plain_off_board(url, setting) is said


@pytest.mark.req("SEC-008")
def test_an_agent_with_curve_off_on_every_interface_says_so_at_start(tmp_path, start_agent, make_client):
    """Found in audit: zmq_curve = "off" on zmq://0.0.0.0 started without a word, while any host that reaches
    the port reads the telemetry and (without tc_keys) commands the agent. Allowed (a bench), now said."""
    config = tmp_path / "agent.toml"
    config.write_text('[security]\nzmq_curve = "off"\n')
    port = free_tcp_port_pair()
    url = f"zmq://0.0.0.0:{port}"
    agent = start_agent(url, "--config", str(config))
    make_client(f"zmq://127.0.0.1:{port}")  # it is up: its start-up lines are written
    lines = [line for line in agent.log().splitlines() if "zmq_curve" in line]
    assert len(lines) == 1 and lines[0].startswith(f"sunlit-flight: warning: link {url} is plain ZeroMQ")
    assert "can command this agent (no [security] tc_keys either)" in lines[0]


def encode(*args):
    return subprocess.run([sys.executable, "-m", "flight", "packet", "encode", *args], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.req("LNK-008")
def test_a_date_given_for_unix_seconds_is_answered_with_its_number():
    """Found in audit: ``SCHEDULE_AT release_unix_s=2025-01-01T00:00:00Z`` was refused as "not a valid f64"
    with no hint. The refusal now says what the argument takes and the number the date is, which is taken."""
    res = encode("SCHEDULE_AT", "release_unix_s=2025-01-01T00:00:00Z", "command=NOOP")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "release_unix_s is seconds since 1970-01-01 UTC, not a date" in res.stderr
    assert res.stderr.rstrip().endswith("is release_unix_s=1735689600)")
    assert encode("SCHEDULE_AT", "release_unix_s=1735689600", "command=NOOP").returncode == 0


@pytest.mark.parametrize("arg,said", [
    ("release_unix_s=2025-01-01", "a date and time with its zone"),  # no zone: no number guessed
    ("delay_s=2025-01-01T00:00:00Z", "delay_s is a number of seconds, not a date"),
])
def test_a_date_for_seconds_without_a_zone_or_for_a_delay_is_said_too(arg, said, capsys):
    command = "SCHEDULE_AT" if arg.startswith("release") else "SCHEDULE_AFTER"
    assert main(["packet", "encode", command, arg, "command=NOOP"]) == 2
    err = capsys.readouterr().err
    assert said in err and "=17" not in err


@pytest.mark.req("LNK-004")
@pytest.mark.parametrize("url, path", [("zmq+ipc:///run/sunlit/link#a", "socket's path"),
                                       ("zmq+ipc:///run/sunlit/link#", "socket's path"),
                                       ("serial:///dev/ttyTHS1?baud=115200#2", "device's path")])
def test_an_ipc_or_serial_url_with_a_fragment_is_refused_naming_it(url, path):
    """Found in audit: zmq+ipc:///run/sunlit/link#a and ...#b both bound /run/sunlit/link.cmd (the fragment
    dropped without a word, two agents on one socket), and a serial URL's fragment was dropped as quietly."""
    with pytest.raises(LinkConfigError) as caught:
        parse_link_url(url)
    assert str(caught.value) == (f"{url}: a # in a URL starts a fragment, no part of the {path}: name the "
                                 f"{'path' if 'socket' in path else 'device'} without one")
    assert parse_link_url(url.partition("#")[0]).url == url.partition("#")[0]  # without it: taken


@pytest.mark.req("LNK-005")
@pytest.mark.parametrize("url, said", [("zmq://127.0.0.1:5550?queue=", "queue must be a whole number of packets"),
                                       ("serial:///dev/ttyTHS1?baud=", "baud must be a whole number"),
                                       ("zmq+ipc:///run/sunlit/link?queue", "queue must be a whole number"),
                                       ("zmq://127.0.0.1:5550?qeueu", "unknown option qeueu"),
                                       ("serial:///dev/ttyTHS1?baud=9600&parity=", "unknown option parity")])
def test_an_option_given_no_value_is_refused_not_left_at_its_default(url, said):
    """Found in audit: ``?queue=`` and ``?baud=`` (an unset shell variable) and a bare ``?qeueu`` were dropped by
    the query's parse, so the link opened on the default queue and baud with no word of the option given."""
    with pytest.raises(LinkConfigError, match=rf"^{re.escape(url)}: {said}"):
        parse_link_url(url)
    assert parse_link_url("zmq://127.0.0.1:5550?").queue_packets == 1000  # an empty query is none
