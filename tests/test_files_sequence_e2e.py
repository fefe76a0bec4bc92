"""End to end, as an operator works: a stored sequence goes up with ``sunlit-ground file put LOCAL
sequences/NAME.toml`` (the CLI as a real subprocess, ``--direct``) to a real agent (``sunlit-flight run``) on a real
ZeroMQ link, is checked as it arrives (SEQUENCE_STORED), and runs on SEQUENCE_START; a bad one is said with its step
and key and never replaces the good one; one over 64 KiB is refused before anything goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flight.link.messages import EventRecord

REPO = Path(__file__).resolve().parents[1]
GOOD = ('name = "pass1"\n[[step]]\ncommand = "NOOP"\n[[step]]\nwait_s = 1\n'
        '[[step]]\ncommand = "PING"\nargs = { token = 4242 }\n')
BAD = 'name = "pass1"\n[[step]]\ncommand = "NOOP"\n[[step]]\ncommand = "SET_MODE"\nargs = { mode = "WARP" }\n'


def put(url: str, local: Path, name: str, area: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ground.cli", "--direct", url, "file", "put", str(local), name,
                           "--area", str(area), "--timeout", "120"], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ), timeout=180)


def event(client, name: str, seen: int = 0, timeout_s: float = 60.0) -> EventRecord:
    """The first event ``name`` after the ``seen`` ones already had."""
    def mine() -> list[EventRecord]:
        return [e for e in client.events if e.event.name == name]

    if len(mine()) <= seen:
        client.wait_for(lambda i: isinstance(i.record, EventRecord) and len(mine()) > seen, timeout_s)
    return mine()[seen]


@pytest.mark.system
@pytest.mark.req("FIL-011", "AGT-081")
def test_a_sequence_put_from_the_ground_is_checked_on_arrival_and_runs(start_agent, make_client, ipc_url, tmp_path):
    agent = start_agent(ipc_url)
    client = make_client(ipc_url)
    area = tmp_path / "area"
    good, bad, big = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "big.toml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    big.write_text('name = "big"\n' + "#" * 70_000 + '\n[[step]]\ncommand = "NOOP"\n')

    done = put(ipc_url, good, "sequences/pass1.toml", area)
    assert done.returncode == 0 and "delivered" in done.stdout, done.stdout + done.stderr
    stored = event(client, "SEQUENCE_STORED")
    assert stored.args["name"] == "sequences/pass1.toml" and stored.args["ok"] is True, stored.args
    assert "3 steps" in stored.args["reason"] and "SEQUENCE_START pass1 runs it" in stored.args["reason"]
    assert (agent.state_dir / "sequences" / "pass1.toml").read_text() == GOOD

    started = client.send("SEQUENCE_START", {"name": "pass1"})
    assert started.completed and started.result["steps"] == 3, started.outcome
    ended = event(client, "SEQUENCE_DONE")
    assert ended.args["name"] == "pass1" and ended.args["ok"] is True, ended.args
    assert any(e.event.name == "PING_RECEIVED" and e.args["token"] == 4242 for e in client.events)

    refused = put(ipc_url, bad, "sequences/pass1.toml", area)
    assert refused.returncode == 1 and "failed" in refused.stderr, refused.stdout + refused.stderr
    # Why, from the agent (its FILE_FAILED for that transfer), not CFDP's condition code alone (found in use)
    assert "the agent says: " in refused.stderr and "step[1].args.mode" in refused.stderr, refused.stderr
    stored = event(client, "SEQUENCE_STORED", seen=1)
    assert stored.args["ok"] is False and "sequences/pass1.toml: step[1].args.mode" in stored.args["reason"], \
        stored.args
    assert (agent.state_dir / "sequences" / "pass1.toml").read_text() == GOOD  # the good one kept

    oversize = put(ipc_url, big, "sequences/big.toml", area)
    assert oversize.returncode == 2, oversize.stdout + oversize.stderr
    assert "refused before sending" in oversize.stderr and "at most 65536 bytes (64 KiB)" in oversize.stderr
    assert not (agent.state_dir / "sequences" / "big.toml").exists()


@pytest.mark.req("FIL-011")
def test_the_ground_refuses_a_sequence_named_or_sized_as_none_can_be_before_sending_and_keeps_no_copy(tmp_path):
    """The server's path (an upload written to uplink/, then queued) and the CLI's (a local file) refuse alike, and
    a refused upload leaves nothing in uplink/."""
    from flight.link.memory_link import MemoryLink
    from ground.client import GroundClient
    from ground.files import FileError, GroundFiles, check_remote

    assert check_remote("sequences/pass1.toml", "up", 65536) == "sequences/pass1.toml"
    for name, size, rule in (("sequences/pass1.txt", None, "a sequence goes up as sequences/NAME.toml"),
                             ("sequences/a/b.toml", None, "a sequence goes up as sequences/NAME.toml"),
                             ("sequences/" + "a" * 33 + ".toml", None, "is not a sequence name"),
                             ("sequences/pass1.toml", 65537, "is 65537 bytes; a sequence file is at most 65536")):
        with pytest.raises(FileError, match=rule):
            check_remote(name, "up", size)
    assert check_remote("sequences/pass1.toml", "down") == "sequences/pass1.toml"

    client = GroundClient(MemoryLink().ground)
    files = GroundFiles(client, tmp_path / "ground")
    try:
        big = tmp_path / "big.toml"
        big.write_bytes(b"#" * 65537)
        with pytest.raises(FileError, match="at most 65536 bytes"):
            files.put(big, "sequences/big.toml")
        staged, tmp = files.upload_path("sequences/big.toml")
        tmp.write_bytes(big.read_bytes())
        os.replace(tmp, files.area / staged)  # as the server installs an upload before queueing it
        with pytest.raises(FileError, match="at most 65536 bytes"):
            files.queue_put(staged, "sequences/big.toml")
        assert not [p for p in (files.area / "uplink").iterdir()] and not files.records
    finally:
        files.close()
        client.close()
