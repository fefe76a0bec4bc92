"""Found in an audit of the ground server's core: one server per archive, what a stop does to the queue, and a
users file the server will not read again said, not kept quiet. Real servers, real HTTP, real files."""

from __future__ import annotations

import os
import re
import time

import pytest

from flight.storage import DirectoryBusy
from ground.archive import Archive
from ground.auth import UserStore
from ground.queue import CommandQueue, State
from ground.server import GroundServer, quick_config
from ground.server_config import ServerConfigError
from tests.test_ground_server import http, login, make_users


@pytest.fixture
def source(short_dir):
    """The agent's side of a real link that never answers: commands wait in the queue."""
    from flight.link.transport import open_flight_link

    url = f"zmq+ipc://{short_dir}/source"
    link = open_flight_link(url)
    yield url
    link.close()


def _server(url, tmp_path, **kw) -> GroundServer:
    users = make_users(tmp_path / "users.toml")
    config = quick_config(url, port=0, archive=kw.pop("archive", tmp_path / "g.sqlite"), users=users, **kw)
    return GroundServer(config, UserStore.load(users), connect_timeout_s=0)


@pytest.mark.req("GND-020", "GND-023")
def test_a_second_server_on_the_same_archive_is_refused_naming_it_and_the_first_keeps_its_history(source, tmp_path):
    """Found in audit: two servers on one archive both started, numbered their commands from the same queue id, and
    the second's NOOP was filed over the first's (the history said bob sent alice's command)."""
    first = _server(source, tmp_path).start()
    try:
        with pytest.raises(DirectoryBusy, match=r"server\.archive: .*g\.sqlite: .* is in use by another ground server "
                                                 rf"\(pid {os.getpid()}\)"):
            _server(source, tmp_path).start()
        status, entry, _ = http(first, "POST", "/api/commands", {"name": "NOOP"}, login(first, "alice"))
        assert status == 202, entry
    finally:
        first.stop()
    again = _server(source, tmp_path).start()  # the first stopped: its lock went with it
    again.stop()
    archive = Archive(tmp_path / "g.sqlite")
    try:
        assert [(c.queue_id, c.who) for c in archive.commands()] == [(entry["id"], "alice")]
    finally:
        archive.close()


def test_an_archive_whose_directory_cannot_be_made_is_refused_naming_the_key(source, tmp_path):
    """Found in audit: "[Errno 17] File exists: 'users.toml'", with no key and no archive named."""
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(ServerConfigError, match=r"^server\.archive: .*plain/g\.sqlite: its directory cannot be used"):
        _server(source, tmp_path, archive=tmp_path / "plain" / "g.sqlite").start()


@pytest.mark.req("GND-023", "GND-042")
def test_commands_still_to_go_when_the_server_stops_end_cancelled_in_the_archive_not_queued_for_good(source,
                                                                                                    tmp_path):
    """Found in audit: a command queued (the agent silent) and one waiting for approval when the server stopped
    stayed `queued` and `pending_approval` in the archive's history for good, and the restarted server's queue had
    never heard of them: nothing said they would never go."""
    server = _server(source, tmp_path, two_person=frozenset({"RESET_COUNTERS"})).start()
    try:
        token = login(server, "alice")
        queued = http(server, "POST", "/api/commands", {"name": "NOOP"}, token)[1]
        waiting = http(server, "POST", "/api/commands", {"name": "RESET_COUNTERS", "confirm": True}, token)[1]
        assert (queued["state"], waiting["state"]) == ("queued", "pending_approval")
    finally:
        server.stop()
    archive = Archive(tmp_path / "g.sqlite")
    try:
        rows = {c.queue_id: c for c in archive.commands()}
    finally:
        archive.close()
    for entry_id in (queued["id"], waiting["id"]):
        row = rows[entry_id]
        assert row.state == "cancelled", row
        assert row.stages[-1]["code"] == "SERVER_STOPPED" and "it never ran" in row.stages[-1]["reason"], row.stages


@pytest.mark.req("GND-023")
def test_a_sent_command_whose_outcome_never_came_ends_unresolved_when_its_server_stops():
    """The queue's side of a stop: a command that left the ground may have run, so it is never said cancelled;
    one still to go never left, so it is; a final one is left as it ended."""
    q = CommandQueue("sc", unknown_after="sent")
    sent = q.submit("NOOP", {}, "alice", False, 0.0)
    q.next_to_send(0.0)
    q.sent(sent.id, 77, 1, 0.0)
    done = q.submit("PING", {}, "alice", False, 0.0)
    q.next_to_send(0.0)
    q.sent(done.id, 78, 1, 0.0)
    q.report(78, "completed", True, "", "", {}, 0.5)
    waiting = q.submit("NOOP", {}, "bob", False, 1.0)
    changed = q.close(2.0)
    assert {e.id: e.state for e in changed} == {sent.id: State.UNRESOLVED, waiting.id: State.CANCELLED}
    assert q.get(done.id).state is State.COMPLETED
    assert "may have run" in q.get(sent.id).stages[-1]["reason"]
    assert all(e.state.final and e.deadline_s is None for e in q.entries())
    assert q.close(3.0) == []  # nothing left to end


@pytest.mark.req("GND-021")
def test_a_users_file_change_the_server_refuses_is_said_on_stderr_and_in_status_not_kept_quiet(source, tmp_path,
                                                                                               capfd):
    """Found in audit: an admin removed an operator by editing the users file, which came out mode 644; the server
    refused to read it again, kept the removed operator commanding, and said so nowhere (``reload_error`` was
    never shown). A file taken away was not even noticed."""
    server = _server(source, tmp_path, archive=None).start()
    try:
        alice, bob = login(server, "alice"), login(server, "bob")
        users = server.users.path
        text = re.sub(r"\[users\.bob\][^\[]*", "", users.read_text())
        users.unlink()
        users.write_text(text)
        os.chmod(users, 0o644)
        server.users.refresh(force=True)
        answer = http(server, "GET", "/api/status", token=alice)[1]
        assert "mode 644" in answer["users_file_error"] and f"chmod 600 {users}" in answer["users_file_error"]
        deadline = time.monotonic() + 10.0
        said = ""
        while "users file not read again" not in said:  # the status task says it within a period
            assert time.monotonic() < deadline, said
            time.sleep(0.05)
            said += capfd.readouterr().err
        assert "mode 644" in said and said.count("users file not read again") == 1
        os.chmod(users, 0o600)
        server.users.refresh(force=True)
        assert http(server, "GET", "/api/status", token=alice)[1]["users_file_error"] is None
        assert http(server, "POST", "/api/commands", {"name": "NOOP"}, bob)[0] == 401  # now bob is gone
        users.unlink()
        server.users.refresh(force=True)
        answer = http(server, "GET", "/api/status", token=alice)[1]
        assert answer["users_file_error"] == f"{users}: the users file is gone or cannot be looked at"
    finally:
        server.stop()


@pytest.mark.req("GND-025", "GND-023")
def test_a_second_ctrl_c_while_the_server_stops_is_said_and_waited_out_never_a_stop_left_half_done(source, tmp_path):
    """Found in audit: Ctrl-C twice (the stop waits up to 2 s on a WebSocket that does not answer its close) ended
    the server "interrupted", exit 1, mid-stop, and a second SIGTERM killed it: the queue was never ended, its
    command left `queued` in the archive for good. A subprocess: signals as an operator's terminal sends them."""
    import base64
    import json
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    make_users(tmp_path / "users.toml")
    (tmp_path / "server.toml").write_text(f'[server]\nport = 0\narchive = "g.sqlite"\nusers = "users.toml"\n'
                                          f'[[spacecraft]]\nid = "sc"\nlink = "{source}"\n')
    # SIGINT as a terminal delivers it: a non-interactive shell running the suite in the background (`.ci/run &`)
    # ignores it, and every child inherits that (tests/test_ground_ops.py: seen in CI, the server never stopped)
    proc = subprocess.Popen([sys.executable, "-m", "ground", "server", "--config", str(tmp_path / "server.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = re.search(r"(http://\S+)/ ", proc.stdout.readline()).group(1)

        def post(path: str, body: dict, token: str = "") -> dict:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
            request = urllib.request.Request(url + path, json.dumps(body).encode(), headers)
            with urllib.request.urlopen(request, timeout=15) as answer:
                return json.loads(answer.read())

        token = post("/api/login", {"user": "alice", "password": "alice-pass"})["token"]
        entry = post("/api/commands", {"name": "NOOP"}, token)
        host, port = url.split("//")[1].rsplit(":", 1)
        quiet = socket.create_connection((host, int(port)), timeout=30)  # never answers the close: stop waits on it
        key = base64.b64encode(os.urandom(16)).decode()
        quiet.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                       f"Authorization: Bearer {token}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += quiet.recv(4096)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        # Read as it comes, from now on, never answering (its pings neither: the server's heartbeat would cut it, with
        # no close frame, some 30 s on, were the stop to wait that long)
        import threading

        got, ended = [head.split(b"\r\n\r\n", 1)[1]], []
        changed = threading.Condition()

        def read() -> None:
            while True:
                try:
                    more = quiet.recv(65536)
                except OSError:
                    more = b""
                with changed:
                    if more:
                        got.append(more)
                    else:
                        ended.append(True)
                    changed.notify_all()
                if not more:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        proc.send_signal(signal.SIGINT)
        def closing() -> bool:
            return _opcodes(b"".join(got))[-1:] == [0x8]

        with changed:  # the close frame: the stop has begun, and waits for its answer
            assert changed.wait_for(lambda: closing() or ended, 60)
            assert closing(), "the server cut the socket before it sent its close frame"
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        quiet.close()
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, err)
    assert "stopping already" in err and "Traceback" not in err and "interrupted" not in err, err
    archive = Archive(tmp_path / "g.sqlite")
    try:
        assert [(c.queue_id, c.state) for c in archive.commands()] == [(entry["id"], "cancelled")]
    finally:
        archive.close()


def _opcodes(data: bytes) -> list[int]:
    """The opcodes of the whole WebSocket frames (a server's: unmasked) at the start of ``data``."""
    out, at = [], 0
    while at + 2 <= len(data):
        size, at_payload = data[at + 1] & 0x7F, at + 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if at_payload + width > len(data):
                break
            size, at_payload = int.from_bytes(data[at_payload:at_payload + width], "big"), at_payload + width
        if at_payload + size > len(data):
            break
        out.append(data[at] & 0x0F)
        at = at_payload + size
    return out


@pytest.mark.req("GND-021")
def test_a_hostile_query_value_is_refused_naming_its_field_never_echoed_whole(source, tmp_path):
    """Found in audit: a 6 KB ``limit``, ``since``, ``from``, ``cfdp_class`` or transfer id came back whole in its
    error (6 KB of one line, in the page and in the CLI's message). Each error names the field and quotes the
    value's start."""
    server = _server(source, tmp_path).start()
    try:
        token = login(server, "alice")
        long = "x" * 6000
        for path, field in (("/api/passes?limit=" + long, "limit"), ("/api/passes?limit=" + "9" * 4000, "limit"),
                            ("/api/plan?since=0&limit=" + long, "limit"), ("/api/plan?since=" + long, "since:"),
                            ("/api/archive?channel=mode&to=1&from=" + long, "from:"),
                            ("/api/files/" + "a" * 6000 + "/content", "no transfer")):
            status, answer, _ = http(server, "GET", path, token=token)
            assert status in (400, 404) and answer["error"].startswith(field), (path[:40], answer["error"][:80])
            assert len(answer["error"]) < 200, (path[:40], len(answer["error"]))
        status, answer, _ = http(server, "POST", "/api/files/put?name=staging/x&cfdp_class=" + long, token=token,
                                 headers={"Content-Type": "application/octet-stream"})
        assert status == 400 and answer["error"].startswith("cfdp_class: 'xxx") and len(answer["error"]) < 200, \
            answer["error"][:80]
        status, answer, _ = http(server, "GET", "/ws?spacecraft=" + long, token=token)  # found in review
        assert status == 404 and answer["error"].startswith("no spacecraft 'xxx") and len(answer["error"]) < 200, \
            answer["error"][:80]
        status, answer, _ = http(server, "GET", "/api/passes?limit=abc", token=token)  # a short one is said whole
        assert (status, answer["error"]) == (400, "limit 'abc': a whole number, 1..200"), answer
    finally:
        server.stop()


@pytest.mark.req("GND-022")
def test_a_time_tag_carrying_a_two_person_command_waits_for_a_second_operator(source, tmp_path):
    """Found in audit: with SHUTDOWN under the two-person rule, SCHEDULE_AFTER delay_s=0 command=shutdown was queued
    to go at once, and SHUTDOWN ran on board with one operator; the time tag needs the approval its command does."""
    server = _server(source, tmp_path, two_person=frozenset({"SHUTDOWN"})).start()
    try:
        alice, bob = login(server, "alice"), login(server, "bob")
        for name, args in (("SCHEDULE_AFTER", {"delay_s": 0, "command": "shutdown"}),
                           ("SCHEDULE_AT", {"release_unix_s": time.time() + 3600, "command": "SHUTDOWN"})):
            status, entry, _ = http(server, "POST", "/api/commands", {"name": name, "args": args, "confirm": True},
                                    alice)
            assert status == 202, entry
            assert (entry["state"], entry["needs_approval"]) == ("pending_approval", True), name
            status, refused, _ = http(server, "POST", f"/api/commands/{entry['id']}/approve", {}, alice)
            assert status == 403 and "second operator" in refused["error"]
            status, approved, _ = http(server, "POST", f"/api/commands/{entry['id']}/approve", {}, bob)
            assert (status, approved["state"], approved["approved_by"]) == (200, "queued", "bob")
        status, other, _ = http(server, "POST", "/api/commands",
                                {"name": "SCHEDULE_AFTER", "args": {"delay_s": 60, "command": "NOOP"}, "confirm": True},
                                alice)
        assert (status, other["state"]) == (202, "queued"), "a time tag of a command under no rule needs no approval"
    finally:
        server.stop()


@pytest.mark.req("GND-025", "GND-023")
def test_a_sigterm_while_the_server_starts_stops_it_in_order_once_started_never_kills_it(source, tmp_path):
    """Found in audit: a SIGTERM that came while the server started (its archive busy a moment, a `systemctl stop`
    just after a start) found no handler yet and killed it outright: no orderly stop, nothing said. It is taken from
    before the start: the server starts, then stops in order, exit 0. A subprocess, the signal as systemd sends it;
    the start held where it opens its archive (another process holds the file's lock) so the signal lands there."""
    import signal
    import sqlite3
    import subprocess
    import sys

    make_users(tmp_path / "users.toml")
    Archive(tmp_path / "g.sqlite").close()
    (tmp_path / "server.toml").write_text(f'[server]\nport = 0\narchive = "g.sqlite"\nusers = "users.toml"\n'
                                          f'[[spacecraft]]\nid = "sc"\nlink = "{source}"\n')
    holder = sqlite3.connect(tmp_path / "g.sqlite", isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE held (x)")  # the lock taken: the server's open waits on it (its busy timeout)
    proc = subprocess.Popen([sys.executable, "-m", "ground", "server", "--config", str(tmp_path / "server.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        archive_file = str(tmp_path / "g.sqlite")

        def opening() -> bool:  # the server has the archive's file open: in its start, past reading the users
            try:
                return any(os.readlink(f"/proc/{proc.pid}/fd/{fd}") == archive_file
                           for fd in os.listdir(f"/proc/{proc.pid}/fd"))
            except OSError:  # a descriptor closed as it was read
                return False

        deadline = time.monotonic() + 60
        while not opening() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert opening(), proc.poll()
        proc.send_signal(signal.SIGTERM)
        holder.rollback()
        holder.close()  # the start goes on
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, err)
    assert "Ctrl-C stops" in out and "Traceback" not in err, (out, err)
    assert not (tmp_path / "g.sqlite-wal").exists(), "the archive was not closed"
