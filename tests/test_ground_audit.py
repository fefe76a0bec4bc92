"""Audit findings of the ground's file CLI against a real agent process (``sunlit-flight run``) on a real ZeroMQ
link, ``sunlit-ground file ... --direct`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.req("GND-025")
def test_file_list_prints_the_boards_names_printable(ipc_url, start_agent, tmp_path):
    """A file on board whose name holds an escape or a line break (FILE_LIST names whatever is there) drove the
    operator's terminal or forged a line of `file list`, as an event's text once did in `sunlit-ground events`."""
    agent = start_agent(ipc_url)
    data = agent.state_dir / "compute" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "a\x1b[2J\nFORGED.npz").write_bytes(b"x" * 10)
    (data / "plain.npz").write_bytes(b"y")
    out = subprocess.run([sys.executable, "-m", "ground.cli", "--direct", ipc_url, "file", "list", "data",
                          "--timeout", "60"], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "\x1b" not in out.stdout and not any(line.startswith("FORGED") for line in lines), out.stdout
    # escaped on board as FILE_LIST gives it (flight.storage.printable), printable on the ground as it comes
    assert any(line.endswith("data/a\\x1b[2J\\nFORGED.npz") for line in lines), out.stdout
    assert any(line.endswith("data/plain.npz") for line in lines) and lines[-1].startswith("2 entries"), out.stdout
