"""The ``sim`` backend: a board whose sensors, battery and time come from the HIL harness.

On a rig the agent runs on a Jetson with ``--hal sim`` pointed at the harness PC; here both
may run on one machine. The agent connects a DEALER to the harness's ROUTER
(``sim_endpoint``) and the two exchange msgpack maps:

- harness → agent ``{"type": "env", "t": SIM_TIME_S | None, "temps_c": {...},
  "rails": {name: power_w}, "board_power_w": W, "eps": {"soc_pct", "bus_voltage_v",
  "solar_power_w"}, "seq": N}``. With ``t`` (lockstep) the agent's SimClock jumps to it,
  the agent runs whatever is due, then answers; without it (real time) the values just
  replace the previous ones.
- agent → harness ``{"type": "state", "seq": N, "t": ..., "power_mode": NAME, "mode": ...,
  "admission": ..., "compute_duty": 0..1}``: the load the harness feeds back into its
  battery and thermal models. ``seq`` echoes the env message it answers.

Every value the agent reads here is *simulated*; ``describe()`` and the readings' notes say so.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgpack
import zmq

from flight.clock import SimClock
from flight.hal.base import Hal, HalError, HalReading, PowerMode, RailReading, find_power_mode

SIM_NOTE = "simulated by the HIL harness"
HELLO_INTERVAL_S = 2.0  # real seconds without a step before saying hello again (a harness restarted)


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (a harness bug must not reach the policies)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class SimHal(Hal):
    backend = "sim"

    def __init__(self, sim_endpoint: str, power_modes: tuple[PowerMode, ...], lockstep: bool = True, board: str = "sim"):
        if not power_modes:
            raise HalError("the sim backend needs the board profile's power modes")
        self.endpoint = sim_endpoint
        self.board = board
        self.lockstep = lockstep
        self.clock = SimClock(0.0) if lockstep else None
        self._modes = tuple(power_modes)
        self._mode = self._modes[0]
        self._env: dict[str, Any] = {}
        self._pending_seq: int | None = None
        self.load: dict[str, Any] = {}
        self.bad_messages = 0
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.linger = 0
        self._sock.sndhwm = 100
        self._sock.reconnect_ivl = 100
        self._sock.reconnect_ivl_max = 1000
        self._sock.connect(sim_endpoint)
        self._last_env_real_s = -math.inf
        self._last_hello_real_s = -math.inf
        self.say_hello()

    def say_hello(self) -> None:
        """Announce this agent; repeated while no step comes, so a restarted harness finds it."""
        now = time.monotonic()
        if now - self._last_env_real_s >= HELLO_INTERVAL_S and now - self._last_hello_real_s >= HELLO_INTERVAL_S:
            self._last_hello_real_s = now
            self._send({"type": "hello", "board": self.board, "lockstep": self.lockstep,
                        "modes": [m.name for m in self._modes], "t": self.clock.now_s() if self.clock else None})

    # --- harness exchange ---------------------------------------------------------------

    def pollables(self) -> list[Any]:
        return [self._sock]

    def receive(self) -> bool:
        """Take in every env message; True if simulated time moved (timers may be due)."""
        moved = False
        while True:
            try:
                raw = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return moved
            try:
                msg = msgpack.unpackb(raw, raw=False)
                if not isinstance(msg, dict) or msg.get("type") != "env":
                    raise ValueError("not an env message")
                t = msg.get("t")
                if t is not None and self.clock is not None:
                    if t > self.clock.now_s():
                        self.clock.set(float(t))
                        moved = True
                    elif self.clock.now_s() == 0.0:
                        self.clock.set(float(t))
                        moved = True
                self._env = msg
                self._pending_seq = msg.get("seq")
                self._last_env_real_s = time.monotonic()
            except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                self.bad_messages += 1

    def answer(self, state: dict[str, Any]) -> None:
        """Tell the harness the load after this step (its battery and thermal models need it)."""
        if self._pending_seq is None and self.lockstep:
            return
        self.load = state
        self._send({"type": "state", "seq": self._pending_seq, "t": self.clock.now_s() if self.clock else None,
                    "power_mode": self._mode.name, **state})
        self._pending_seq = None

    @property
    def has_pending_step(self) -> bool:
        return self._pending_seq is not None

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self._sock.send(msgpack.packb(msg, use_bin_type=True), zmq.NOBLOCK)
        except zmq.Again:
            pass  # harness gone or slow: it resends its step; nothing here must block the agent

    # --- Hal ----------------------------------------------------------------------------

    def read(self) -> HalReading:
        env = self._env
        if not env:
            return HalReading({}, {}, None, None, None, missing=("all sensors: no data from the harness yet",),
                              notes=(SIM_NOTE,))
        temps: dict[str, float] = {}
        rails: dict[str, RailReading] = {}
        missing: list[str] = []
        raw_temps = env.get("temps_c") if isinstance(env.get("temps_c"), dict) else {}
        for k, v in raw_temps.items():
            value = _number(v)
            if value is None or not -100.0 <= value <= 200.0:
                missing.append(f"{k}: no valid value ({v!r}; simulated fault)"[:120])
            else:
                temps[str(k)] = value
        raw_rails = env.get("rails") if isinstance(env.get("rails"), dict) else {}
        for k, v in raw_rails.items():
            value = _number(v)
            if value is None:
                missing.append(f"{k}: no valid value ({v!r}; simulated fault)"[:120])
            else:
                rails[str(k)] = RailReading(None, None, value)
        pct = [(_number(env.get(k))) for k in ("cpu_pct", "mem_pct")]
        pct = [p if p is not None and 0.0 <= p <= 100.0 else None for p in pct]
        return HalReading(temps, rails, _number(env.get("board_power_w")), pct[0], pct[1],
                          missing=tuple(missing), notes=(SIM_NOTE,))

    def read_eps(self) -> dict[str, float | None]:
        eps = self._env.get("eps") if isinstance(self._env.get("eps"), dict) else {}
        return {k: _number(eps.get(k)) for k in ("soc_pct", "bus_voltage_v", "solar_power_w")}

    def power_modes(self) -> tuple[PowerMode, ...]:
        return self._modes

    def current_power_mode(self) -> PowerMode | None:
        return self._mode

    def set_power_mode(self, name: str) -> PowerMode:
        self._mode = find_power_mode(self._modes, name)
        return self._mode

    def describe(self) -> dict[str, Any]:
        return {"backend": "sim", "board": self.board, "endpoint": self.endpoint, "lockstep": self.lockstep,
                "note": f"every reading is {SIM_NOTE}"}

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(0)
