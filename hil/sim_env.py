"""The harness's end of the ``sim`` backend: feed the agent its environment, step its time.

See ``flight/hal/sim.py`` for the messages. In lockstep, :meth:`SimEnvironment.step` sends
one env message and waits for the agent's answer before returning it, so simulated time
never runs ahead of the agent.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgpack
import zmq


class AgentSilent(TimeoutError):
    """The agent did not answer a step in time (it hung, crashed or is restarting)."""


class SimEnvironment:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._sock = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.bind(endpoint)
        self._peer: bytes | None = None
        self._seq = itertools.count(1)
        self.hello: dict[str, Any] | None = None
        self.last_state: dict[str, Any] = {}

    def _recv(self, timeout_s: float) -> dict[str, Any] | None:
        if not self._sock.poll(int(timeout_s * 1000)):
            return None
        peer, raw = self._sock.recv_multipart()
        msg = msgpack.unpackb(raw, raw=False)
        if msg.get("type") == "hello":
            self._peer = peer  # a restarted agent says hello again from a new identity
            self.hello = msg
        return msg

    def wait_for_agent(self, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self._recv(deadline - time.monotonic())
            if msg is not None and msg.get("type") == "hello":
                return msg
        raise AgentSilent(f"no hello from an agent on {self.endpoint} within {timeout_s} s")

    def _send(self, env: dict[str, Any]) -> None:
        if self._peer is None:
            raise AgentSilent("no agent has connected yet")
        self._sock.send_multipart([self._peer, msgpack.packb(env, use_bin_type=True)])

    def step(self, t_s: float | None, timeout_s: float = 10.0, **env: Any) -> dict[str, Any]:
        """Send the environment at ``t_s``; return the agent's state after it handled the step."""
        seq = next(self._seq)
        self._send({"type": "env", "t": t_s, "seq": seq, **env})
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentSilent(f"agent did not answer step {seq} (t = {t_s} s) within {timeout_s} s")
            msg = self._recv(remaining)
            if msg is None:
                continue
            if msg.get("type") == "hello":  # restarted: resend this step to the new agent
                self._send({"type": "env", "t": t_s, "seq": seq, **env})
            elif msg.get("type") == "state" and msg.get("seq") == seq:
                self.last_state = msg
                return msg

    def close(self) -> None:
        self._sock.close(0)
