"""The harness's end of the sim backend: feed the agent its environment, step its time.

The messages are the typed records of :mod:`flight.hal.sim_protocol`, the agent's end is
``flight/hal/sim.py``. In lockstep, :meth:`SimEnvironment.step` sends one :class:`Env` and
waits for the agent's :class:`Load` before returning it, so simulated time never runs ahead
of the agent.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable

import zmq

from flight.hal import sim_protocol as sp
from flight.records import ProtocolError


class AgentSilent(TimeoutError):
    """The agent did not answer a step in time (it hung, crashed or is restarting)."""


class AgentDied(AgentSilent):
    """The agent's process exited while the harness waited for it: no answer will ever come, so
    the wait ends at once rather than at its timeout (found in audit: each step of a crashed
    agent waited 30 s and was flown at its last answer)."""


ALIVE_POLL_S = 0.2  # how often a wait asks whether the agent's process still runs: a crash ends it this soon


class SimEnvironment:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._sock = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.bind(endpoint)
        self._peer: bytes | None = None
        self._seq = itertools.count(1)
        self.hello: sp.Hello | None = None
        self.last_load: sp.Load | None = None
        self.bad_messages = 0
        self.last_error = ""  # why the last of them could not be read

    def _recv(self, timeout_s: float) -> Any:
        if not self._sock.poll(int(timeout_s * 1000)):
            return None
        frames = self._sock.recv_multipart()
        if len(frames) != 2:
            self.bad_messages += 1
            self.last_error = f"{len(frames) - 1} frames, not one"
            return None
        peer, raw = frames
        try:
            msg = sp.decode(raw)
        except ProtocolError as exc:
            self.bad_messages += 1
            self.last_error = str(exc)[:200]
            return None
        if isinstance(msg, sp.Hello):
            self._peer = peer  # a restarted agent says hello again from a new identity
            self.hello = msg
        return msg

    def wait_for_agent(self, timeout_s: float = 20.0, alive: Callable[[], bool] | None = None) -> sp.Hello:
        """The agent's hello; ``alive`` (the process still runs) is asked while waiting: AgentDied if not."""
        deadline = time.monotonic() + timeout_s
        bad = self.bad_messages
        while time.monotonic() < deadline:
            msg = self._recv(self._slice(deadline - time.monotonic(), alive))
            if isinstance(msg, sp.Hello):
                return msg
            if msg is None and alive is not None and not alive():
                raise AgentDied(f"the agent's process exited before it said hello on {self.endpoint}")
        raise AgentSilent(f"no hello from an agent on {self.endpoint} within {timeout_s} s{self._unread(bad)}")

    def _unread(self, before: int) -> str:
        """What the agent sent that could not be read since the count was ``before``: an agent that answered in a
        form the harness cannot read is not a silent one (found in audit: it was said hung, the reason dropped)."""
        n = self.bad_messages - before
        return f"; it sent {n} message(s) the harness could not read (the last: {self.last_error})" if n else ""

    def _send(self, env: sp.Env) -> None:
        if self._peer is None:
            raise AgentSilent("no agent has connected yet")
        self._sock.send_multipart([self._peer, sp.encode(env)])

    def send_raw(self, t_s: float | None, fields: dict[str, Any], timeout_s: float = 10.0) -> sp.Load:
        """Send an Env built by hand, bad values and all (a harness fault, a test of the agent's
        input checks), and wait for the answer as :meth:`step` does."""
        import msgpack

        seq = next(self._seq)
        if self._peer is None:
            raise AgentSilent("no agent has connected yet")
        self._sock.send_multipart([self._peer, msgpack.packb(["Env", {"seq": seq, "t_s": t_s, **fields}])])
        return self._wait(seq, t_s, timeout_s, None)

    def step(
        self,
        t_s: float | None,
        timeout_s: float = 10.0,
        *,
        temps_c: dict[str, float | None] | None = None,
        rails_w: dict[str, float | None] | None = None,
        board_power_w: float | None = None,
        eps: sp.EpsValues | None = None,
        cpu_pct: float | None = None,
        mem_pct: float | None = None,
        link_in: int | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> sp.Load:
        """Send the environment at ``t_s``; return the agent's load after it handled the step.
        ``link_in``: how many ground packets the agent must have taken in before it takes the step
        (its count at its last answer, plus what went on the link since); None: no wait.
        ``alive``: whether the agent's process still runs, asked while waiting (AgentDied if not)."""
        seq = next(self._seq)
        env = sp.Env(seq, t_s, dict(temps_c or {}), dict(rails_w or {}), board_power_w, eps or sp.EpsValues(),
                     cpu_pct, mem_pct, link_in)
        self._send(env)
        return self._wait(seq, t_s, timeout_s, env, alive)

    @staticmethod
    def _slice(remaining: float, alive: Callable[[], bool] | None) -> float:
        return max(0.0, remaining if alive is None else min(remaining, ALIVE_POLL_S))

    def _wait(self, seq: int, t_s: float | None, timeout_s: float, env: sp.Env | None,
              alive: Callable[[], bool] | None = None) -> sp.Load:
        deadline = time.monotonic() + timeout_s
        bad = self.bad_messages
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentSilent(f"the agent did not answer step {seq} within {timeout_s:g} s{self._unread(bad)}")
            msg = self._recv(self._slice(remaining, alive))
            if isinstance(msg, sp.Hello) and env is not None:  # restarted: resend this step to the new agent
                self._send(env)
            elif isinstance(msg, sp.Load) and msg.seq == seq:
                self.last_load = msg
                return msg
            elif msg is None and alive is not None and not alive():  # what it sent before it went was taken first
                raise AgentDied(f"the agent's process exited while the harness waited for step {seq}")

    def close(self) -> None:
        self._sock.close(0)
