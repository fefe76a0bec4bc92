"""Shared fixtures: agents as real subprocesses, ground clients on real links."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from ground.client import GroundClient
from hil.agent_process import AgentProcess, free_tcp_port_pair


@pytest.fixture
def short_dir():
    """A short temporary directory: Unix socket paths must stay under ~100 characters."""
    path = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ipc_url(short_dir):
    return f"zmq+ipc://{short_dir}/link"


@pytest.fixture
def tcp_url():
    return f"zmq://127.0.0.1:{free_tcp_port_pair()}"


@pytest.fixture
def start_agent(tmp_path):
    """Start ``sunlit-flight run`` as a subprocess; everything started is stopped at the end."""
    procs: list[AgentProcess] = []

    def start(url: str, *args: str) -> AgentProcess:
        state_dir = tmp_path / f"state{len(procs)}"
        defaults = ["--hk-period", "0.2", "--state-dir", str(state_dir)]
        proc = AgentProcess(url, tmp_path / f"agent{len(procs)}.log", [*defaults, *args]).start()
        proc.state_dir = state_dir if "--state-dir" not in args else Path(args[args.index("--state-dir") + 1])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def make_client():
    clients: list[GroundClient] = []

    def make(url: str, wait_for_agent: bool = True) -> GroundClient:
        client = GroundClient(url)
        clients.append(client)
        if wait_for_agent:
            assert client.dictionary_matches(timeout_s=20.0) is True, "agent did not come up with our dictionary"
        return client

    yield make
    for client in clients:
        client.close()
