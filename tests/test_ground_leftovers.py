"""Leftovers of an audit of the ground archive and server: a read-only archive, refusals counted, integers past
JavaScript's safe range, output folders that do not exist.

Real parts: archive files written by :class:`ground.archive.Archive`, the archive CLI run as a process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from flight.link.packets import unpack
from ground.archive import Archive
from ground.archive_cli import main as archive_main
from ground.client import Received
from tests.test_ground_server import http, login, source_and_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
T0_S = 1_794_830_400.0  # 2026-11-16T12:00:00Z


@pytest.fixture
def server(source_and_server):  # noqa: F811
    """A server with an archive on the agent's side of a real link that never answers: commands wait queued."""
    return source_and_server[1]


def _record_events(db: Path, n: int) -> None:
    codec = Codec(DICTIONARY)
    with Archive(db) as archive:
        for i in range(n):
            raw = codec.encode_event("PING_RECEIVED", {"token": i}, T0_S + i)
            packet = unpack(raw)
            archive.record(Received(raw, packet, codec.decode_tm(packet)), T0_S + i)


def _in_read_only_folder(folder: Path, tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """``script`` run by Python where ``folder`` cannot be written: modes 555 (its files 444), or as root (who
    writes whatever the modes say) a read-only bind mount in a mount namespace of its own."""
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("as root, needs unshare to mount the archive's folder read-only")
        mounted = tmp_path / "mounted"
        shell = (f"set -e\nmount --bind {folder} {folder}\nmount -o remount,bind,ro {folder}\n"
                 f"touch {mounted}\nexec {shlex.quote(sys.executable)} -c {shlex.quote(script)}\n")
        proc = subprocess.run([unshare, "--mount", "--propagation", "private", "bash", "-c", shell], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if not mounted.exists():
            pytest.skip(f"cannot mount a folder read-only in a private mount namespace here: {proc.stderr[:200]}")
        return proc
    for f in folder.iterdir():
        f.chmod(0o444)
    folder.chmod(0o555)
    try:
        return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    finally:
        folder.chmod(0o755)


@pytest.mark.req("GND-025")
def test_a_read_only_archive_in_a_folder_it_may_not_write_is_read_by_the_query_and_export_commands(tmp_path):
    """Found in audit: an archive kept read-only (a copy on a read-only mount; file 444 in a folder 555), closed
    clean with no -wal or -shm beside it, could not be read at all: every command said "attempt to write a readonly
    database", since SQLite's WAL wants a -shm it may not make there. It is read, immutable, and an export is
    whole."""
    folder, out = tmp_path / "archive", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    db = folder / "ground.sqlite"
    _record_events(db, 5)
    assert sorted(p.name for p in folder.iterdir()) == ["ground.sqlite"]  # closed clean: nothing beside it
    script = ("import sys\nfrom ground.archive_cli import main\n"
              f"a = main(['events', '--db', {str(db)!r}])\n"
              f"b = main(['export', '--raw', {str(out / 'p.hex')!r}, '--db', {str(db)!r}])\n"
              "sys.exit(a * 10 + b)\n")
    proc = _in_read_only_folder(folder, tmp_path, script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("PING_RECEIVED") == 5, proc.stdout
    lines = [ln for ln in (out / "p.hex").read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 5 and "5 packets written" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["ground.sqlite"]  # read as it was: nothing made beside it


@pytest.mark.req("GND-025")
def test_a_read_only_archive_with_a_wal_beside_it_is_refused_saying_what_to_do_never_read_without_it(tmp_path):
    """Opened immutable, SQLite would leave a -wal's changes out: where one lies beside a read-only archive that
    SQLite cannot open as it is, the command says so, naming it and what to do (exit 2)."""
    folder = tmp_path / "archive"
    folder.mkdir()
    db = folder / "ground.sqlite"
    _record_events(db, 1)
    (folder / "ground.sqlite-wal").write_bytes(b"")  # a copy taken with its -wal, without the -shm
    script = f"import sys\nfrom ground.archive_cli import main\nsys.exit(main(['events', '--db', {str(db)!r}]))\n"
    proc = _in_read_only_folder(folder, tmp_path, script)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"sunlit-ground archive: {db} cannot be read here: {db}-wal beside it and SQLite may not "
                           f"write in {folder}; copy the file with them into a folder you may write in, and give "
                           "that --db\n"), proc.stderr


@pytest.mark.req("GND-025")
def test_a_read_only_archive_with_a_hot_journal_beside_it_is_refused_never_read_without_it(tmp_path):
    """Found in review: a copy taken in the middle of a rollback-mode transaction, its -journal beside it, was read
    immutable, the transaction's pages as they were cut: "no events", where 50 had been committed."""
    folder = tmp_path / "archive"
    folder.mkdir()
    db = folder / "ground.sqlite"
    _record_events(db, 1)
    (folder / "ground.sqlite-journal").write_bytes(b"")
    script = f"import sys\nfrom ground.archive_cli import main\nsys.exit(main(['events', '--db', {str(db)!r}]))\n"
    proc = _in_read_only_folder(folder, tmp_path, script)
    assert proc.returncode == 2 and f"{db}-journal beside it" in proc.stderr, proc.stderr


@pytest.mark.req("GND-025")
def test_retain_on_a_read_only_archive_says_it_is_read_only_naming_it_and_deletes_nothing(tmp_path):
    """Found in audit: `archive retain` on a copy kept read-only said only "attempt to write a readonly database".
    It says the archive is read-only here, naming it and what to do (exit 2), and the file is as it was."""
    folder = tmp_path / "archive"
    folder.mkdir()
    db = folder / "ground.sqlite"
    _record_events(db, 3)
    before = db.read_bytes()
    script = ("import sys\nfrom ground.archive_cli import main\n"
              f"sys.exit(main(['retain', '--db', {str(db)!r}, '--now', '2099-01-01T00:00:00Z', '--force']))\n")
    proc = _in_read_only_folder(folder, tmp_path, script)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith(f"sunlit-ground archive: {db} is read-only here") and "retain deletes" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "readonly database" not in proc.stderr, proc.stderr
    assert db.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["ground.sqlite"]


@pytest.mark.req("GND-025")
def test_an_archive_on_a_full_disk_is_said_to_be_on_a_full_disk_not_damaged(tmp_path):
    """Found in audit: a whole archive on a disk with no space left (SQLite cannot make its -shm) was said "not a
    usable archive: disk I/O error" at the server's start and by every archive command, as if damaged (an operator
    might delete it). Each says the disk is full, naming the file and the folder; the archive is as it was."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs and fill it")
    disk, made = tmp_path / "disk", tmp_path / "made"
    disk.mkdir()
    db = disk / "ground.sqlite"
    source = tmp_path / "source.sqlite"
    _record_events(source, 5)  # copied onto the small disk once it is mounted
    script = ("import shutil, sys\nfrom pathlib import Path\n"
              "from ground.archive import Archive, ArchiveError\nfrom ground.archive_cli import main\n"
              f"shutil.copyfile({str(source)!r}, {str(db)!r})\n"
              f"before = Path({str(db)!r}).read_bytes()\n"
              f"with open({str(disk / 'filler')!r}, 'wb') as f:\n"
              "    try:\n        while True:\n            f.write(bytes(65536))\n            f.flush()\n"
              "    except OSError:\n        pass\n"
              f"try:\n    Archive({str(db)!r})\nexcept ArchiveError as exc:\n    print('server:', exc)\n"
              f"code = main(['events', '--db', {str(db)!r}])\n"
              f"print('same:', Path({str(db)!r}).read_bytes() == before)\nsys.exit(code)\n")
    shell = (f"set -e\nmount -t tmpfs -o size=4m tmpfs {disk}\ntouch {made}\n"
             f"exec {shlex.quote(sys.executable)} -c {shlex.quote(script)}\n")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", shell], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if not made.exists():
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {proc.stderr[:200]}")
    full = f"{db} cannot be opened: the disk holding it is full ("
    assert proc.returncode == 2 and proc.stderr.startswith(f"sunlit-ground archive: {full}"), (proc.returncode,
                                                                                               proc.stderr)
    assert f"server: {full}" in proc.stdout and "same: True" in proc.stdout, proc.stdout
    assert "not a usable archive" not in proc.stdout + proc.stderr


@pytest.mark.req("GND-025")
def test_only_a_file_nothing_can_write_is_taken_for_immutable(tmp_path):
    """Found in review: a file a server may still write (its folder closed to this reader alone) read immutable
    while the server started and checkpointed was read torn ("malformed"). Immutable only where nothing can
    write it: no write permission for anyone, or a read-only mount (the tests above)."""
    from ground.archive import _unwritable

    f = tmp_path / "ground.sqlite"
    f.write_bytes(b"")
    for mode, nothing_writes in ((0o644, False), (0o600, False), (0o444, True), (0o400, True)):
        f.chmod(mode)
        assert _unwritable(f) is nothing_writes, oct(mode)
    assert _unwritable(tmp_path / "absent") is False


@pytest.mark.req("GND-021")
def test_a_malformed_request_answered_400_is_counted_with_the_other_refusals(server):
    """Found in audit: a bad field a route answered 400 for (a limit that is no count, an unknown channel or
    command) was counted nowhere, while a body no parser takes (the 400 raised before the route) was counted in
    ``refused_requests``. Each is counted once now, and a request that is taken is not."""
    token = login(server, "alice")
    before = http(server, "GET", "/api/status", token=token)[1]["refused_requests"]
    bad = [("GET", "/api/events?limit=abc", None), ("GET", "/api/archive?channel=nope&from=0&to=1", None),
           ("POST", "/api/commands", {"name": "NOPE"}), ("POST", "/api/limits", {"channel": 5})]
    for method, path, body in bad:
        status, answer, _ = http(server, method, path, body, token)
        assert status == 400 and answer["error"], (path, answer)
    assert http(server, "GET", "/api/events?limit=5", token=token)[0] == 200
    assert http(server, "GET", "/api/status", token=token)[1]["refused_requests"] == before + len(bad)


@pytest.mark.req("GND-021")
def test_a_request_the_http_parser_refuses_is_counted_and_said_in_one_line(server, capfd):
    """Found in review: a request aiohttp's parser refuses before any route (a bad header line, a Content-Length
    that is no number) printed aiohttp's whole traceback on the server's stderr and was counted nowhere, though
    anyone who can reach the port may send one. Counted in ``refused_requests``, said in one line each."""
    token = login(server, "alice")
    before = http(server, "GET", "/api/status", token=token)[1]["refused_requests"]
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    capfd.readouterr()
    head = b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n"
    for bad in (b"GET /api/status" + head + b"Bad Header\r\n\r\n",
                b"GET /api/status" + head + b"Content-Length: abc\r\n\r\n",
                b"G@T /api/status" + head + b"\r\n"):  # no method: aiohttp keeps it at debug, counted unsaid
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(bad)
            assert sock.recv(200).startswith(b"HTTP/1.0 400 "), bad
    assert http(server, "GET", "/api/status", token=token)[1]["refused_requests"] == before + 3
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "Error handling request" in line]
    assert len(said) == 2 and "Traceback" not in err, err
    assert "header" in said[0].lower() and "Content-Length" in said[1], said  # llhttp's words or aiohttp's own


@pytest.mark.req("GND-021")
def test_an_error_past_the_servers_guard_is_counted_as_internal_and_said_with_where_it_was_raised(capsys):
    """Found in review: aiohttp's log gives a handler's error that escaped the guard (a response that failed as it
    was sent) to the same method as a parser's refusal; it is the server's fault: counted in ``internal_errors``,
    one line naming where it was raised, never aiohttp's traceback."""
    from types import SimpleNamespace

    from ground.server import _HttpLog

    server = SimpleNamespace(internal_errors=0, sessions=SimpleNamespace(refused_requests=0))
    try:
        {}["missing"]
    except KeyError as exc:
        _HttpLog(server).exception("Unhandled exception", exc_info=exc)
    err = capsys.readouterr().err
    assert (server.internal_errors, server.sessions.refused_requests) == (1, 0)
    assert err.startswith("sunlit-ground server: Unhandled exception: KeyError: 'missing' (") and err.count("\n") == 1
    assert "test_ground_leftovers.py:" in err, err


@pytest.mark.req("GND-035")
def test_a_plain_get_of_the_socket_is_answered_by_its_bounds_and_counts_no_refusal(server):
    """The web console asks whether it may open a socket with a plain GET of /ws (a refused socket's status never
    reaches a page's script): 204 where there is room, counted nowhere (a 400 would count as a malformed request)."""
    token = login(server, "alice")
    before = http(server, "GET", "/api/status", token=token)[1]
    assert http(server, "GET", "/ws", token=token)[0] == 204
    after = http(server, "GET", "/api/status", token=token)[1]
    assert (after["refused_requests"], after["sockets_refused"]) == (before["refused_requests"],
                                                                    before["sockets_refused"])


@pytest.mark.req("GND-023", "GND-030")
def test_a_64_bit_argument_reaches_the_console_as_its_digits_and_the_archive_as_the_number(server, tmp_path):
    """Found in audit: COMMAND_STATUS's cmd_id (63 random bits) went to the web console as a JSON number, which
    JavaScript rounds past 2**53: the history showed cmd_id=7566047373982433000 for ...281. A whole number past
    that range goes as its digits (as the entry's own cmd_id does); the archive's history keeps the number, and
    one within the range stays a number."""
    token = login(server, "alice")
    big = 7_566_047_373_982_433_281
    status, entry, _ = http(server, "POST", "/api/commands", {"name": "COMMAND_STATUS", "args": {"cmd_id": str(big)}},
                            token)
    assert status == 202, entry
    assert entry["args"] == {"cmd_id": str(big)}
    status, ping, _ = http(server, "POST", "/api/commands", {"name": "PING", "args": {"token": 5}}, token)
    assert status == 202 and ping["args"] == {"token": 5}
    listed = {e["id"]: e for e in http(server, "GET", "/api/commands", token=token)[1]["commands"]}
    assert listed[entry["id"]]["args"] == {"cmd_id": str(big)} and listed[ping["id"]]["args"] == {"token": 5}
    server.stop()  # its archive hand-over done
    with Archive(tmp_path / "g.sqlite", create=False) as archive:
        rows = {c.queue_id: c for c in archive.commands()}
    assert rows[entry["id"]].args == {"cmd_id": big} and rows[ping["id"]].args == {"token": 5}


@pytest.mark.req("GND-025")
def test_an_export_or_plot_into_a_folder_that_is_not_there_is_refused_naming_it_and_makes_none(tmp_path, capsys):
    """Found in audit: `archive export --csv` and `--raw`, and `plot --out`, made any folder missing on the way to
    OUT, silently (a typing error in it made a new tree), where `file get --out` refuses one. Refused now, exit 2,
    naming the folder, and nothing made."""
    db = tmp_path / "g.sqlite"
    _record_events(db, 1)
    for flag, argv in (("csv", ("export", "--csv", "{out}", "cpu_pct")), ("raw", ("export", "--raw", "{out}")),
                       ("png", ("plot", "cpu_pct", "--out", "{out}"))):
        out = tmp_path / "typo" / "deeper" / f"a.{flag}"
        capsys.readouterr()
        assert archive_main([*(a.format(out=out) for a in argv), "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert err == f"sunlit-ground archive: {out}: no folder {out.parent} to write it in\n", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.sqlite"]
