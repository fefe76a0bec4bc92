"""Shared fixtures: agents as real subprocesses, ground clients on real links; the test tiers;
and a session-wide check that no process started by the tests outlives them.

Tiers: a test that needs real sockets, subprocesses, a pseudo-terminal or a browser is in the
*system* tier (marker ``system``): every test that uses one of :data:`SYSTEM_FIXTURES`, and
every test of :data:`SYSTEM_MODULES`. The rest is the fast tier: ``make test-fast``
(``pytest -m "not system"``). ``make test`` runs both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from ground.client import GroundClient, direct_client
from hil.agent_process import AgentProcess, free_tcp_port_pair


@pytest.fixture
def worker():
    """A real process standing in for a compute worker, the test's child: the test process is its parent, as the
    agent is its worker's (the harness's compute_hang stops and resumes it)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


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


COMMAND_BOUND_S = 30.0


@pytest.fixture
def make_client():
    clients: list[GroundClient] = []

    def make(url: str, wait_for_agent: bool = True, tc_keys: Path | str | None = None) -> GroundClient:
        """``tc_keys``: seal every telecommand with that key file (an agent with [security] tc_keys)."""
        client = GroundClient(url) if tc_keys is None else direct_client(url, str(tc_keys))
        # A bound, not a measure: a command the worker completes (INFER_START, MODEL_INSTALL) waits
        # on a worker that a loaded CI machine (three test workers on two cores) may still be starting.
        client.command_timeout_s = COMMAND_BOUND_S
        clients.append(client)
        if wait_for_agent:
            # a bound as COMMAND_BOUND_S is: an agent starting on a machine whose load is 20 took longer than 20 s
            assert client.dictionary_matches(timeout_s=COMMAND_BOUND_S * 2) is True, \
                "agent did not come up with our dictionary"
        return client

    yield make
    for client in clients:
        client.close()


# --- tiers -------------------------------------------------------------------------------------

# Fixtures used through other fixtures count too (pytest lists them all in ``fixturenames``).
SYSTEM_FIXTURES = frozenset({"start_agent", "make_client", "line", "ipc_url", "tcp_url", "short_dir"})
SYSTEM_MODULES = frozenset({"test_agent_sim", "test_cli_packet", "test_deploy", "test_deploy_sdnotify",
                            "test_ground_web", "test_hil_loop", "test_link_serial_agent", "test_link_zmq",
                            "test_selftest", "test_processes", "test_path_escape"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SYSTEM_MODULES or SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)


# --- no process outlives the tests ---------------------------------------------------------------

RUN_MARK = "SUNLIT_TEST_RUN"  # in the environment of every process the tests start, and their children
LEFTOVER_GRACE_S = 30.0  # a worker told by PR_SET_PDEATHSIG may still be checkpointing (slower on a loaded machine)


def _processes_of_this_run(mark: str) -> list[int]:
    """Pids (other than this one) whose environment carries this run's mark, zombies left out."""
    found = []
    needle = f"{RUN_MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone, or not ours to read
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests():
    """Mark every process the tests start (children inherit the environment, reparented or not);
    at the end, any still alive after a grace period is killed by its pid and fails the run."""
    mark = uuid.uuid4().hex
    os.environ[RUN_MARK] = mark
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = _processes_of_this_run(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_of_this_run(mark)
    if left:
        described = []
        for pid in left:
            try:
                described.append(f"{pid}: {(Path('/proc') / str(pid) / 'cmdline').read_bytes().replace(bytes(1), b' ').decode(errors='replace')[:160]}")
                os.kill(pid, signal.SIGKILL)  # started by this run (it carries the mark): ours to end
            except OSError:
                pass
        pytest.fail("processes started by the tests outlived them (killed now):\n" + "\n".join(described),
                    pytrace=False)
