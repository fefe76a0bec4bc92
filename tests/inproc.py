"""The agent built inside the test process: a memory link, a scripted board, a simulated clock.

No sockets to the ground, no subprocess, no harness: a test sets what the board reads, moves
time with :meth:`InProcessAgent.advance`, and talks to the agent through a real
:class:`ground.client.GroundClient` on the other end of a :class:`MemoryLink`. The fast tier
is built on it; what needs real processes and sockets is the system tier.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from flight.agent.agent import Agent
from flight.clock import SimClock
from flight.config import Config
from flight.hal.base import (
    Board,
    EpsReader,
    EpsReading,
    Hal,
    HalReading,
    PowerControl,
    PowerMode,
    RailReading,
    SensorSet,
    find_power_mode,
)
from flight.hal.boards import load_board
from flight.link.definitions import EpsSource
from flight.link.memory_link import MemoryLink
from ground.client import CommandResult, GroundClient

T0_S = 1_795_000_000.0  # simulated UTC at boot, 2026-11-18


class ScriptedHal(Hal):
    """A board whose readings the test writes; its power modes are a real board profile's."""

    backend = "scripted"

    def __init__(self, board_id: str = "orin_nx_16gb"):
        self.profile = load_board(board_id)
        self._modes = tuple(PowerMode(m.name, i, m.budget_w, "profile") for i, m in enumerate(self.profile.modes))
        self._mode = self._modes[0]
        self.temps_c: dict[str, float] = {"tj-thermal": 50.0, "cpu-thermal": 48.0}
        self.board_power_w: float | None = 10.0
        self.missing: list[str] = []
        self.fail_next_set: str | None = None  # a HalError text for the next set_power_mode
        self.read_error: Exception | None = None

    def read(self) -> HalReading:
        if self.read_error is not None:
            raise self.read_error
        rails = {"VDD_IN": RailReading(None, None, self.board_power_w)} if self.board_power_w is not None else {}
        return HalReading(dict(self.temps_c), rails, self.board_power_w, 20.0, 40.0, tuple(self.missing))

    def power_modes(self) -> tuple[PowerMode, ...]:
        return self._modes

    def current_power_mode(self) -> PowerMode | None:
        return self._mode

    def set_power_mode(self, name: str) -> PowerMode:
        from flight.hal.base import HalError

        mode = find_power_mode(self._modes, name)
        if self.fail_next_set:
            why, self.fail_next_set = self.fail_next_set, None
            raise HalError(why)
        self._mode = mode
        return mode

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "note": "readings written by the test"}


class ScriptedEps(EpsReader):
    source = EpsSource.SIM

    def __init__(self) -> None:
        self.reading = EpsReading(soc_pct=90.0, bus_voltage_v=8.2, solar_power_w=80.0)

    def read_eps(self) -> EpsReading:
        return self.reading


def scripted_board(clock: SimClock, eps: bool = True) -> Board:
    hal = ScriptedHal()
    return Board("scripted", hal, clock, SensorSet.SIMULATED, PowerControl.SIMULATED, profile=hal.profile,
                 eps=ScriptedEps() if eps else None)


class InProcessAgent:
    """An :class:`Agent` and a ground client in this process, time moved by the test."""

    def __init__(self, state_dir: Path, eps: bool = True, start: bool = True,
                 board: Callable[[SimClock], Board] | None = None, **config: Any):
        """``start=False``: built and answering its link, time not begun (as under the harness before its
        first step); :meth:`start` begins it. ``board``: makes the board on the test's clock (a fake Jetson
        tree's) instead of the scripted one."""
        self.clock = SimClock(T0_S)
        self.board = board(self.clock) if board is not None else scripted_board(self.clock, eps)
        self.hal: ScriptedHal = self.board.hal  # type: ignore[assignment]
        self.link = MemoryLink()
        # The store's fsync in the loop, whatever the machine's CPUs ([store] fsync = "auto" would
        # decide by them): the same run everywhere; tests that want the thread say so.
        base = Config(state_dir=Path(state_dir), hk_period_s=1.0, control_period_s=1.0, compute_enabled=False,
                      store_fsync="loop")
        self.config = replace(base, **config)
        self.agent = Agent(self.config, link=self.link.flight, board=self.board)
        self.client = GroundClient(self.link.ground)
        self.link.serve = lambda: self.agent.step(0)
        if start:
            self.start()

    def start(self) -> None:
        self.agent.start()
        self.pump()

    @property
    def eps(self) -> ScriptedEps:
        return self.board.eps  # type: ignore[return-value]

    def pump(self) -> None:
        """Let the agent handle what is waiting, then hand its output to the ground."""
        self.client.poll(0)  # the memory link runs agent.step(0) before the ground reads

    def advance(self, seconds: float, step_s: float = 1.0) -> None:
        """Move simulated time forward, a step at a time, the agent running what falls due."""
        left = seconds
        while left > 1e-9:
            dt = min(step_s, left)
            self.clock.advance(dt)
            left -= dt
            self.pump()

    def send(self, command: str, /, **args: Any) -> CommandResult:
        """A command through the ground client, answered as over a real link."""
        return self.client.send(command, args, timeout_s=2.0, retries=0)

    def events(self, name: str) -> list:
        return [e for e in self.client.events if e.event.name == name]

    def hk(self) -> dict[str, Any]:
        """Every channel's latest value (after one more housekeeping period)."""
        self.advance(self.config.hk_period_s)
        return {k: v for k, (v, _t) in self.client.latest.items()}

    def close(self) -> None:
        self.agent.close()
        self.client.close()

    def __enter__(self) -> InProcessAgent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
