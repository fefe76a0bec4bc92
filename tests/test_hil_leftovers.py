"""What an audit of the HIL harness found and left: an agent that cannot start keeps no log file
open, the link proxy counts the replies lost with a peer it pushes out and refuses to be its own
agent, and the oracle's work refuses a share that is not a number.

Real sockets and processes; the waits are deadlines that only keep a broken test from hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from flight.link.interface import LinkConfigError, parse_link_url
from hil.agent_process import AgentProcess
from hil.link_proxy import MAX_PEERS, LinkProxy
from hil.oracle import ComputeMode, work_done

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 20_000


def _open_paths() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the directory's own descriptor, gone by now
    return out


def test_an_agent_that_cannot_start_leaves_its_log_closed(tmp_path):
    """The log was opened, then Popen raised: the handle lived as long as the exception's traceback
    (a campaign keeping the failure, a test's report), one descriptor per failed start."""
    agent = AgentProcess("zmq+ipc:///nowhere", tmp_path / "logs" / "agent.log")
    agent.args[0] = str(tmp_path / "no-such-python")
    with pytest.raises(FileNotFoundError) as failed:
        agent.start()
    assert failed.value.__traceback__ is not None  # the frames that held the file are still alive here
    assert str(tmp_path / "logs" / "agent.log") not in _open_paths()
    assert agent.proc is None and not agent.running


@pytest.mark.req("HIL-020")
def test_a_reply_waiting_for_a_peer_pushed_out_is_counted_undeliverable(short_dir):
    """A reply the agent sent to a peer's DEALER, not read yet when a 65th peer pushes that DEALER
    out, was lost and counted nowhere. Driven through the proxy's own calls on its (unstarted)
    sockets, so the reply is surely waiting at the moment of the push: on the thread it is a race."""
    back = f"zmq+ipc://{short_dir}/agent"
    ctx = zmq.Context.instance()
    agent = ctx.socket(zmq.ROUTER)
    agent.linger = 0
    agent.bind(parse_link_url(back).cmd_endpoint)
    proxy = LinkProxy(f"zmq+ipc://{short_dir}/front", back)
    try:
        proxy._poller = zmq.Poller()  # as _run sets it
        first = proxy._dealer_for(b"peer-0")
        first.send(b"command")
        assert agent.poll(WAIT_MS), "the command never reached the agent"
        peer, _command = agent.recv_multipart()
        agent.send_multipart([peer, b"reply"])
        agent.send_multipart([peer, b"reply again"])
        assert first.poll(WAIT_MS), "the replies never reached the peer's DEALER"
        for i in range(1, MAX_PEERS + 1):
            proxy._dealer_for(b"peer-%d" % i)
        assert first.closed and b"peer-0" not in proxy._peers
    finally:
        proxy.close()
        agent.close()
    stats = proxy.stats()
    assert stats.down.undeliverable == 2 and stats.down.passed == 0
    assert stats.up.undeliverable == 0


@pytest.mark.req("HIL-020")
def test_the_proxy_refuses_front_and_back_on_one_address(short_dir):
    """One address both ways: the proxy bound it and connected to itself, and every command went round
    in a loop, the tool saying it ran. Also where one's telemetry port is the other's command port."""
    ipc = f"zmq+ipc://{short_dir}/agent"
    for front, back in ((ipc, ipc), ("zmq://127.0.0.1:17000", "zmq://127.0.0.1:17001")):
        with pytest.raises(LinkConfigError, match="the proxy would talk to itself"):
            LinkProxy(front, back)
        tool = subprocess.run([sys.executable, "-m", "hil.link_proxy", "--front", front, "--back", back],
                              capture_output=True, text=True, cwd=ROOT, timeout=WAIT_MS / 1000)
        assert tool.returncode == 2, tool.stderr
        (line,) = tool.stderr.splitlines()
        assert "--front" in line and "--back" in line and "talk to itself" in line and "Traceback" not in line
    # A different address is still a proxy.
    LinkProxy(f"zmq+ipc://{short_dir}/front", ipc).close()


@pytest.mark.req("HIL-005")
def test_the_oracles_work_refuses_a_share_that_is_not_a_number():
    """NaN compared false with both bounds: it passed the check and made the run's work NaN."""
    modes = [ComputeMode("10W", 5.0, 10.5, 800.0)]
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"loaded_per_step\[1\] = .*within \[0, 1\]"):
            work_done(["10W", "10W"], [1.0, bad], modes, 10.0)
    with pytest.raises(ValueError, match=r"loaded_per_step\[0\]"):
        work_done(["OFF"], [np.nan], modes, 10.0)  # not a mode, and NaN is not "nothing ran"
    assert work_done(["10W", "OFF"], [0.5, 0.0], modes, 10.0) == 4000.0
