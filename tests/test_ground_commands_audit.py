"""Found in an audit of commanding through the ground server and the console: what the board would refuse refused
at submission, the date hint, a body's unknown field, a hostile command name, and "queued" said only once it is.
Real servers, real HTTP, real ZeroMQ links, a real agent in this process."""

from __future__ import annotations

import io

import pytest

from ground.api import ServerError
from ground.auth import UserStore
from ground.console import Console
from ground.server import GroundServer, quick_config
from tests.test_ground_server import client_for, http, login, make_users


@pytest.fixture
def server(short_dir, tmp_path):
    """A server on the agent's side of a real link that never answers: what is submitted waits in the queue."""
    from flight.link.transport import open_flight_link

    url = f"zmq+ipc://{short_dir}/source"
    source = open_flight_link(url)
    users = make_users(tmp_path / "users.toml")
    config = quick_config(url, port=0, archive=tmp_path / "g.sqlite", users=users)
    started = GroundServer(config, UserStore.load(users), connect_timeout_s=0).start()
    yield started
    started.stop()
    source.close()


def _refused(server: GroundServer, token: str) -> int:
    return http(server, "GET", "/api/status", token=token)[1]["refused_requests"]


@pytest.mark.req("GND-053", "GND-021")
def test_the_server_refuses_at_submission_what_the_board_would_refuse_naming_the_field(server):
    """Found in audit: `sunlit-ground send` made the board's stateless checks before sending, the server did not:
    SET_PARAM value=nan or FILE_DELETE name=../x posted by the web console or the API was queued (202), to fail on
    board a pass later. Now a 400 naming the field, counted in refused_requests, nothing queued; the API client's
    path (ServerClient) gets the same refusal."""
    token = login(server, "alice")
    before = _refused(server, token)
    for body, said in (
            ({"name": "SET_PARAM", "args": {"name": "hk_period_s", "value": "nan"}, "confirm": True},
             "SET_PARAM args.value: hk_period_s=nan is not a finite number"),
            ({"name": "FILE_DELETE", "args": {"name": "../x"}, "confirm": True}, "FILE_DELETE args.name: '../x'")):
        status, answer, _ = http(server, "POST", "/api/commands", body, token)
        assert status == 400 and answer["error"].startswith(said), answer
    assert _refused(server, token) == before + 2
    client = client_for(server, "alice")
    try:
        with pytest.raises(ServerError, match="FILE_DELETE args.name") as refused:
            client.submit_entry("FILE_DELETE", {"name": "../x"})
        assert refused.value.status == 400
    finally:
        client.close()
    assert server.links["sunlit-1"].queue.entries() == []
    status, entry, _ = http(server, "POST", "/api/commands", {"name": "SET_PARAM", "confirm": True,
                                                              "args": {"name": "hk_period_s", "value": "5"}}, token)
    assert status == 202 and entry["args"] == {"name": "hk_period_s", "value": "5"}  # a good one still goes


@pytest.mark.req("GND-021")
def test_a_command_body_with_an_unknown_field_or_a_hostile_name_is_refused_naming_it_cut(server):
    """Found in audit: {"name": "PING", "arg": {"token": 7}} (a typo of args) was queued as PING token=0, the typo
    unsaid; an unknown command name of 100 kB came back whole in its 400. Now the field is named, the name cut."""
    token = login(server, "alice")
    status, answer, _ = http(server, "POST", "/api/commands", {"name": "PING", "arg": {"token": 7}}, token)
    assert status == 400 and answer["error"].startswith("'arg': not a field of a command (takes spacecraft, name, "
                                                        "args, confirm, acks)"), answer
    status, answer, _ = http(server, "POST", "/api/commands", {"name": "X" * 100_000}, token)
    assert status == 400 and answer["code"] == "UNKNOWN_COMMAND" and len(answer["error"]) < 100, answer["error"][:99]
    assert answer["error"] == f"unknown command '{'X' * 36}..."  # cut where the dictionary says it
    status, answer, _ = http(server, "POST", "/api/commands", {"name": "PIN"}, token)
    assert status == 400 and "did you mean PING?" in answer["error"]  # a plain typo keeps its hint
    assert server.links["sunlit-1"].queue.entries() == []


@pytest.mark.req("GND-022")
def test_the_console_says_queued_on_the_server_only_once_the_server_has_it(server):
    """Found in audit: the console said "NOOP queued on the server" before posting it, then "not queued: vera is a
    viewer": a refused command said queued. Now said only for an entry the server answered with."""
    vera = client_for(server, "vera")
    try:
        out = io.StringIO()
        Console(vera, out=out, colour=False, confirm=lambda text: True).handle("NOOP")
    finally:
        vera.close()
    assert out.getvalue().splitlines() == ["  NOOP: not queued: vera is a viewer; this needs operator"], out.getvalue()
    alice = client_for(server, "alice")
    alice.command_timeout_s = 0.5  # the link never answers: taken back off the queue as the wait ends
    try:
        out = io.StringIO()
        Console(alice, out=out, colour=False, confirm=lambda text: True).handle("NOOP")
    finally:
        alice.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "NOOP queued on the server" and "never left the ground" in lines[1], lines


@pytest.mark.req("GND-053")
def test_the_console_refuses_before_sending_what_the_board_would_refuse_and_says_a_date_as_its_number(tmp_path):
    """Found in audit: the console sent SET_PARAM value=nan and FILE_DELETE name=../x, each FAILED on board, and
    a date for SCHEDULE_AT's release_unix_s was only "not a valid f64"; `sunlit-ground send` refuses the first two
    and says the date's number. The console now does the same with the same functions."""
    from tests.inproc import InProcessAgent

    with InProcessAgent(tmp_path / "state") as rig:
        out = io.StringIO()
        console = Console(rig.client, out=out, colour=False, limits_path=tmp_path / "l.json",
                          confirm=lambda text: True)
        sent: list = []
        console.on_command.append(sent.append)
        for line in ("SCHEDULE_AT release_unix_s=2026-12-07T12:00:00Z command=NOOP",
                     "SET_PARAM name=hk_period_s value=nan", "FILE_DELETE name=../x", "PING token=3"):
            console.handle(line)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "not sent: release_unix_s='2026-12-07T12:00:00Z' is not a valid f64 (release_unix_s is seconds since "
        "1970-01-01 UTC, not a date: 2026-12-07T12:00:00Z is release_unix_s=1796644800)",
        "not sent: SET_PARAM args.value: hk_period_s=nan is not a finite number",
        "not sent: FILE_DELETE args.name: '../x': component '..' is not a plain name (letters, digits, _ . + -, not "
        "starting with . or -)"], lines
    assert [r.name for r in sent] == ["PING"] and "PING: completed" in out.getvalue()
