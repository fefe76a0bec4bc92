"""The ``sim`` backend: a board whose sensors, battery and time come from the HIL harness.

On a rig the agent runs on a Jetson with ``--hal sim`` pointed at the harness PC; here both
may run on one machine. The agent connects a DEALER to the harness's ROUTER
(``sim_endpoint``); the messages are the typed records of :mod:`flight.hal.sim_protocol`.

:func:`open_board` returns a :class:`Board` with all three abilities of a simulated board:

- ``hal``: :class:`SimHal`, the latest readings the harness sent, and the profile's power modes;
- ``eps``: :class:`SimEps`, battery and solar input from the harness;
- ``stepper``: :class:`HarnessLink`, the connection itself; in lockstep it moves the agent's
  :class:`~flight.clock.SimClock` to each step's time and the agent answers each step with
  its load.

Every value the agent reads here is *simulated*; ``describe()``, ``eps_source`` and the
readings' notes say so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import zmq

from flight.clock import RealClock, SimClock
from flight.hal import sim_protocol as sp
from flight.hal.base import (
    Board,
    BoardOptions,
    EpsReader,
    EpsReading,
    Hal,
    HalError,
    HalReading,
    PowerControl,
    PowerMode,
    RailReading,
    SensorSet,
    Stepper,
    find_power_mode,
)
from flight.link.definitions import EpsSource
from flight.link.packets import DAYS_1958_TO_1970
from flight.records import ProtocolError

# 2137-06-07 less a second: CDS short's 16-bit day after 1958 (a time within half a millisecond of it rounds past)
PACKET_TIME_END_S = (0x10000 - DAYS_1958_TO_1970) * 86_400.0 - 1.0

SIM_NOTE = "simulated by the HIL harness"
HELLO_INTERVAL_S = 2.0  # real seconds without a step before saying hello again (a harness restarted)
LINK_HOLD_S = 1.0  # real seconds a step waits for the ground packets the harness says it sent before it
LINK_AHEAD_MAX = 100_000  # a step's link_in further ahead of what the link took is refused, not waited for
DEFAULT_BOARD = "orin_nx_16gb"  # the profile simulated when the configuration names none
TEMP_RANGE_C = (-100.0, 200.0)  # outside it a simulated sensor reads as broken, as a real one would


class HarnessLink(Stepper):
    """The connection to the harness: latest environment in, the agent's load out.

    It connects on first use (the agent's loop polling it), so opening the board to look at
    it (``sunlit-flight selftest``) never greets a running harness. Two things here read the
    wall clock, as simulated time stands still meanwhile: hello is repeated on real time (the
    harness may restart), and a step held for the harness's ground packets is held
    :data:`LINK_HOLD_S` of real time at most.
    """

    def __init__(self, endpoint: str, lockstep: bool, board: str, modes: tuple[str, ...]):
        self.endpoint = endpoint
        self.lockstep = lockstep
        self.board = board
        self.modes = modes
        self.clock = SimClock(0.0) if lockstep else None
        self.env: sp.Env | None = None
        self.env_problems: tuple[str, ...] = ()  # fields of the latest Env that were refused
        self.bad_messages = 0
        self.last_error = ""
        self.link_holds_expired = 0  # steps taken without every ground packet the harness said it sent
        self._packets_in: Callable[[], int] | None = None
        self._held: tuple[sp.Env, tuple[str, ...], float] | None = None  # a step, its problems, held since
        self._pending_seq: int | None = None
        self._power_mode = modes[0]
        self._sock: zmq.Socket | None = None
        self._last_env_real_s = -math.inf
        self._last_hello_real_s = -math.inf

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = zmq.Context.instance().socket(zmq.DEALER)
            self._sock.linger = 0
            self._sock.sndhwm = 100
            self._sock.reconnect_ivl = 100
            self._sock.reconnect_ivl_max = 1000
            self._sock.connect(self.endpoint)
        return self._sock

    def greet(self) -> None:
        if self._held is not None:
            return  # a step is here, held: the harness is not gone
        now = time.monotonic()
        if now - self._last_env_real_s >= HELLO_INTERVAL_S and now - self._last_hello_real_s >= HELLO_INTERVAL_S:
            self._last_hello_real_s = now
            self._send(sp.Hello(self.board, self.lockstep, self.modes, self.clock.now_s() if self.clock else None))

    def pollables(self) -> list[Any]:
        return [self._socket()]

    def attach_link(self, packets_in: Callable[[], int]) -> None:
        self._packets_in = packets_in

    def hold_s(self) -> float | None:
        if self._held is None:
            return None
        return max(0.0, self._held[2] + LINK_HOLD_S - time.monotonic())

    def receive(self) -> bool:
        """Take in the harness's steps. In lockstep a step whose ``link_in`` the agent's link has
        not reached yet is held (the agent's loop keeps taking in the link meanwhile, at the
        previous step's time) until it has, or for :data:`LINK_HOLD_S` of wall time at most
        (counted: a packet the harness counted was lost, as a command socket closed for a retry
        drops its queue). Each answer says how many the link had taken (``Load.link_taken``),
        and the harness counts the next step's from there: a packet lost, late or sent to the
        agent before a restart costs one step's hold at most, never the steps after it."""
        moved = False
        sock = self._socket()
        while True:
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                # Lenient: one broken value (a harness bug, a fault it plays) costs that value only.
                msg, problems = sp.CODEC.decode_lenient(raw)
                if not isinstance(msg, sp.Env):
                    raise ProtocolError(f"sim protocol: the harness sent {type(msg).__name__}, expected Env")
            except ProtocolError as exc:
                self.bad_messages += 1
                self.last_error = str(exc)
                continue
            self._last_env_real_s = time.monotonic()
            problems = list(problems)
            refused = self._refused_link_in(msg.link_in)
            if refused:
                self.bad_messages += 1
                self.last_error = refused
                problems.append(refused)  # shown as a refused field, as any other
                msg = dataclasses.replace(msg, link_in=None)
            if self._waits_for_link(msg):
                self._held = (msg, tuple(problems), time.monotonic())  # a resent step replaces the held one
                continue
            self._held = None
            moved = self._take(msg, tuple(problems)) or moved
        if self._held is not None:
            msg, problems, since = self._held
            if not self._waits_for_link(msg) or time.monotonic() - since >= LINK_HOLD_S:
                if self._waits_for_link(msg):
                    self.link_holds_expired += 1
                self._held = None
                moved = self._take(msg, problems) or moved
        return moved

    def _refused_link_in(self, link_in: int | None) -> str:
        """Why a step's ``link_in`` is not to be waited for ("" if it is good): below zero, or so
        far ahead of what the link took that no harness sent that many (a bug)."""
        if link_in is None or self._packets_in is None:
            return ""
        if link_in < 0 or link_in - self._packets_in() > LINK_AHEAD_MAX:
            return (f"Env.link_in: {link_in} is below 0 or more than {LINK_AHEAD_MAX} ahead of the "
                    f"{self._packets_in()} packets the link took; not waited for")
        return ""

    def _waits_for_link(self, msg: sp.Env) -> bool:
        return (self.lockstep and self._packets_in is not None and msg.link_in is not None
                and self._packets_in() < msg.link_in)

    def _take(self, msg: sp.Env, problems: tuple[str, ...]) -> bool:
        """Apply one step: its readings, and in lockstep its time. True if simulated time moved."""
        moved = False
        self.env_problems = problems
        self._last_env_real_s = time.monotonic()  # no hello for a step just taken, however long it was held
        if msg.t_s is not None and not (math.isfinite(msg.t_s) and 0.0 <= msg.t_s < PACKET_TIME_END_S):
            # Simulated UTC before 1970, past what a packet's time holds (milliseconds sent by mistake: every
            # packet then raised, found in audit) or not a number: the field refused, the step's readings kept (an
            # audit: a first step at -5.0 s raised out of the agent's loop)
            refused = (f"Env.t_s: {msg.t_s!r} is not a time (UTC seconds from 1970, at least 0 and below "
                       f"{PACKET_TIME_END_S:.0f}, the end of the packets' CDS days); not taken")
            self.bad_messages += 1
            self.last_error = refused
            self.env_problems = (*problems, refused)
        elif msg.t_s is not None and self.clock is not None:
            if msg.t_s > self.clock.now_s() or self.clock.now_s() == 0.0:
                self.clock.set(msg.t_s)
                moved = True
        self.env = msg
        self._pending_seq = msg.seq
        return moved

    @property
    def pending_step(self) -> bool:
        return self._pending_seq is not None

    def set_power_mode(self, name: str) -> None:
        self._power_mode = name

    def answer(self, mode: Any, admission: Any, compute_duty: float) -> None:
        if self._pending_seq is None and self.lockstep:
            return
        self._send(sp.Load(self._pending_seq, self.clock.now_s() if self.clock else None, self._power_mode,
                           mode, admission, float(compute_duty), self.link_holds_expired,
                           self._packets_in() if self._packets_in is not None else None))
        self._pending_seq = None

    def _send(self, msg: Any) -> None:
        try:
            self._socket().send(sp.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            pass  # harness gone or slow: it resends its step; nothing here must block the agent

    def close(self) -> None:
        if self._sock is not None and not self._sock.closed:
            self._sock.close(0)


def _reading(value: float | None, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A finite value inside the range, or None: how a broken simulated sensor reads."""
    return value if value is not None and math.isfinite(value) and low <= value <= high else None


class SimHal(Hal):
    """Sensors from the harness's latest environment; power modes from the board profile."""

    backend = "sim"

    def __init__(self, link: HarnessLink, power_modes: tuple[PowerMode, ...]):
        if not power_modes:
            raise HalError("the sim backend needs the board profile's power modes")
        self.link = link
        self._modes = tuple(power_modes)
        self._mode = self._modes[0]

    def read(self) -> HalReading:
        env = self.link.env
        if env is None:
            return HalReading({}, {}, None, None, None, missing=("all sensors: no data from the harness yet",),
                              notes=(SIM_NOTE,))
        temps: dict[str, float] = {}
        rails: dict[str, RailReading] = {}
        missing = [f"{problem[:110]} (refused from the harness)" for problem in self.link.env_problems]
        for zone, value in env.temps_c.items():
            good = _reading(value, *TEMP_RANGE_C)
            if good is None:
                missing.append(f"{zone}: no valid value ({value!r}; simulated fault)"[:120])
            else:
                temps[zone] = good
        for rail, value in env.rails_w.items():
            good = _reading(value)
            if good is None:
                missing.append(f"{rail}: no valid value ({value!r}; simulated fault)"[:120])
            else:
                rails[rail] = RailReading(None, None, good)
        values = {}
        for name, value, bounds in (("board_power_w", env.board_power_w, (0.0, math.inf)),
                                    ("cpu_pct", env.cpu_pct, (0.0, 100.0)), ("mem_pct", env.mem_pct, (0.0, 100.0))):
            values[name] = _reading(value, *bounds)
            if values[name] is None and value is not None:  # said by name, as a zone's (found in audit: dropped unsaid)
                missing.append(f"{name}: no valid value ({value!r}; simulated fault)"[:120])
        return HalReading(temps, rails, values["board_power_w"], values["cpu_pct"], values["mem_pct"],
                          missing=tuple(missing), notes=(SIM_NOTE,))

    def power_modes(self) -> tuple[PowerMode, ...]:
        return self._modes

    def current_power_mode(self) -> PowerMode | None:
        return self._mode

    def set_power_mode(self, name: str) -> PowerMode:
        self._mode = find_power_mode(self._modes, name)
        self.link.set_power_mode(self._mode.name)
        return self._mode

    def describe(self) -> dict[str, Any]:
        return {"backend": "sim", "board": self.link.board, "endpoint": self.link.endpoint,
                "lockstep": self.link.lockstep, "bad_messages": self.link.bad_messages,
                "link_holds_expired": self.link.link_holds_expired,
                "note": f"every reading is {SIM_NOTE}"}


class SimEps(EpsReader):
    """Battery and solar input as the harness's battery model gives them."""

    source = EpsSource.SIM

    def __init__(self, link: HarnessLink):
        self.link = link

    def read_eps(self) -> EpsReading:
        eps = self.link.env.eps if self.link.env is not None else sp.EpsValues()
        checked = {"soc_pct": (eps.soc_pct, 0.0, 100.0), "bus_voltage_v": (eps.bus_voltage_v, 0.0, math.inf),
                   "solar_power_w": (eps.solar_power_w, 0.0, math.inf),
                   "full_charge_wh": (eps.full_charge_wh, 0.0, math.inf)}
        values = {name: _reading(v, low, high) for name, (v, low, high) in checked.items()}
        # A value given that is no reading is a sensor gone (SENSOR_MISSING names it), not a silent None.
        missing = tuple(f"eps {name}: not a reading in {low:g}..{high:g}" for name, (v, low, high) in checked.items()
                        if v is not None and values[name] is None)
        return EpsReading(**values, missing=missing)


def open_board(options: BoardOptions) -> Board:
    """The ``sim`` backend for the profile ``options.board`` (default :data:`DEFAULT_BOARD`)."""
    from flight.hal.boards import BoardProfileError, load_board

    try:
        profile = load_board(options.board or DEFAULT_BOARD)
    except BoardProfileError as exc:
        raise HalError(str(exc)) from None
    modes = tuple(PowerMode(m.name, i, m.budget_w, "profile") for i, m in enumerate(profile.modes))
    link = HarnessLink(options.sim_endpoint, options.lockstep, profile.id, tuple(m.name for m in modes))
    clock = link.clock if link.clock is not None else RealClock()
    return Board("sim", SimHal(link, modes), clock, SensorSet.SIMULATED, PowerControl.SIMULATED, profile=profile,
                 eps=SimEps(link), stepper=link)
