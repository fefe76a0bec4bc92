"""The flight agent's loop: wait on the link, the harness and the timers; dispatch; control; report.

Driven by events, never by sleeps: each turn waits in ``zmq.Poller`` on the link's
sockets or file descriptors, the ``sim`` backend's socket and a signal wake-up pipe, for
at most the time until the next timer is due, as the clock says. Nothing a packet
contains can stop the loop: bad packets are counted and reported, handler errors fail
their command, anything else is caught, counted and reported.
"""

from __future__ import annotations

import math
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from flight.agent.commands import register_standard_commands
from flight.agent.compute import ComputeSupervisor
from flight.agent.control import Controller
from flight.agent.dispatcher import Dispatcher
from flight.agent.modes import Mode
from flight.agent.params import ParameterStore
from flight.agent.state import AgentState, StateFile
from flight.agent.timers import Timers
from flight import sdnotify
from flight.clock import Clock, RealClock
from flight.config import Config
from flight.hal.base import Hal, PowerMode, open_hal
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary
from flight.link.messages import Codec
from flight.link.packets import PacketError, Service, Subtype, Telecommand, unpack
from flight.link.transport import FlightLink, Inbound, open_flight_link
from flight.orbit import Orbit

ACCEPTED_APIDS = frozenset({Apid.AGENT})
STATE_SAVE_PERIOD_S = 60.0
DEFAULT_BOARD = "orin_nx_16gb"  # for the sim and linux backends when the config names none
_COUNTERS = ("accepted", "rejected", "executed", "failed", "duplicates")


def open_board_hal(config: Config) -> tuple[Hal, dict[str, tuple[float, ...]]]:
    """The configured backend and the board profile's (idle_w, loaded_w, throughput_rel) per power mode."""
    from flight.hal.boards import load_board

    if config.hal_backend == "jetson":
        # The device tree names the module; a board in the config overrides it.
        hal = open_hal("jetson", root=config.hal_root, nvpmodel=config.nvpmodel, board=config.board)
        board = load_board(hal.board) if getattr(hal, "board", None) else None
    else:
        board = load_board(config.board or DEFAULT_BOARD)
        if config.hal_backend == "sim":
            from flight.hal.sim import SimHal

            modes = tuple(PowerMode(m.name, i, m.budget_w, "profile") for i, m in enumerate(board.modes))
            hal = SimHal(config.sim_endpoint, modes, config.lockstep, board.id)
        else:
            hal = open_hal("linux", root=config.hal_root)
    mode_power = ({m.name: (m.idle_power_w, m.loaded_power_w, m.inference_rel_maxn) for m in board.modes}
                  if board else {})
    return hal, mode_power


# Feed systemd's watchdog at most this often (and at least every half period it asks for).
_WATCHDOG_FEED_MAX_S = 1.0


class Agent:
    def __init__(
        self,
        config: Config,
        link: FlightLink | None = None,
        hal: Hal | None = None,
        mode_power: dict[str, tuple[float, ...]] | None = None,
        clock: Clock | None = None,
        dictionary: Dictionary = DICTIONARY,
    ):
        self.config = config
        self.dictionary = dictionary
        if hal is None:
            hal, mode_power = open_board_hal(config)
        self.hal = hal
        self.link = link or open_flight_link(config.link_url)
        self.clock = clock or getattr(hal, "clock", None) or RealClock()
        self.codec = Codec(dictionary, Apid.AGENT)
        self.state_dir = Path(config.state_dir)
        # The config's [rates] hk_period_s is the parameter's start-up value unless [parameters] says otherwise.
        self.params = ParameterStore(dictionary, self.state_dir / "params.json",
                                     {"hk_period_s": config.hk_period_s, **config.parameters})
        self._state_file = StateFile(self.state_dir / "state.json")
        self.state: AgentState = self._state_file.load()
        self.previous_stop = "clean" if not self.state.running else "unclean"
        if self.state.boot_count == 0 and self._state_file.load_error is None:
            self.previous_stop = "first start"
        self.state.boot_count += 1
        self.state.running = True
        self.power_mode_cap = self.state.power_mode_cap
        self.started_s = self.clock.monotonic_s()
        self.last_contact_s = self.started_s
        self.mode = Mode.BOOT
        self.internal_errors = 0
        self._reported_drops = 0
        self._stop_reason: str | None = None
        self._booted = False
        # The systemd watchdog runs on the wall clock, whatever the agent's clock: fed from the
        # loop itself, so a hung loop (not just a dead process) gets the agent restarted. Fed at
        # the start and the end of every turn, at most once a second: a slow turn (nvpmodel
        # calls time out after 10 s) then costs a restart only if it alone outlasts the period.
        period_s = sdnotify.ping_interval_s()
        self._watchdog_every_s = None if period_s is None else min(period_s, _WATCHDOG_FEED_MAX_S)
        self._watchdog_fed_s = -math.inf
        self._saved_important: tuple = ()
        self._saved_at_s = -math.inf
        self.dispatcher = Dispatcher(self.codec, self._send_report, self.clock.now_s, self.emit)
        counters = self.state.counters  # types checked when the state file was read
        for name in _COUNTERS:
            setattr(self.dispatcher.counters, name, int(counters.get(f"cmd_{name}", 0)))
        self.tc_received = int(counters.get("tc_received", 0))
        self.tc_bad_packets = int(counters.get("tc_bad_packets", 0))
        register_standard_commands(self)
        self.controller = Controller(self, mode_power or {})
        lockstep = bool(getattr(self.hal, "lockstep", False))
        compute_on = config.compute_enabled if config.compute_enabled is not None else not lockstep
        self.compute = ComputeSupervisor(self, config.compute_dir or self.state_dir / "compute", compute_on)
        tle = self.state.tle or (list(config.tle) if config.tle else None)
        if tle:
            try:
                self.controller.set_orbit(Orbit.from_tle(*tle))
            except ValueError:
                self.state.tle = None
        self.timers = Timers(self.clock)
        self.timers.every("housekeeping", self.params["hk_period_s"], self.send_housekeeping)
        self.timers.every("control", config.control_period_s, self._control_tick)
        self._poller = zmq.Poller()
        self._link_items: list[Any] = []
        self._register_link()
        for item in [*getattr(self.hal, "pollables", lambda: [])(), *self.compute.pollables()]:
            self._poller.register(item, zmq.POLLIN)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._save_state(force=True)

    # --- output --------------------------------------------------------------------------

    def emit(self, event: str, /, **args: Any) -> None:
        """Publish an event from the dictionary."""
        self.link.publish(self.codec.encode_event(event, args, self.clock.now_s()))

    def _send_report(self, peer: Any, packet: bytes) -> None:
        # The requester gets its reports directly; every other console sees them on the stream.
        if peer is not None:
            self.link.reply(peer, packet)
        self.link.publish(packet)

    def contact_age_s(self) -> float:
        return self.clock.monotonic_s() - self.last_contact_s

    def agent_hk(self) -> dict[str, Any]:
        c = self.dispatcher.counters
        s = self.link.stats
        reading = self.controller.status.reading
        late = self.timers.late_p99_s("control")
        return {
            "mode": self.mode.value,
            "boot_count": self.state.boot_count,
            "uptime_s": round(self.clock.monotonic_s() - self.started_s, 3),
            "dict_hash": self.dictionary.version_hash,
            "cmd_accepted": c.accepted,
            "cmd_rejected": c.rejected,
            "cmd_executed": c.executed,
            "cmd_failed": c.failed,
            "internal_errors": self.internal_errors,
            "tc_received": self.tc_received,
            "tc_bad_packets": self.tc_bad_packets + s.rx_bad_frames,
            "tc_duplicates": c.duplicates,
            "tm_sent": s.tx_packets,
            "tm_dropped": s.tx_dropped,
            "link_kind": self.link.kind,
            "contact_age_s": round(self.contact_age_s(), 3),
            "cpu_pct": reading.cpu_pct if reading else None,
            "mem_pct": reading.mem_pct if reading else None,
            "hal_backend": self.hal.backend,
            "sensors_missing": len(reading.missing) if reading else 0,
            "control_late_p99_ms": None if late is None else round(late * 1000.0, 3),
        }

    def housekeeping(self) -> dict[str, Any]:
        return {**self.agent_hk(), **self.controller.power_hk(), **self.controller.thermal_hk(), **self.compute.hk()}

    def send_housekeeping(self) -> None:
        now = self.clock.now_s()
        values = self.housekeeping()
        for packet in self.dictionary.packets:
            self.link.publish(self.codec.encode_hk(packet.sid, values, now))
        dropped = self.link.stats.tx_dropped
        if dropped > self._reported_drops:
            self.emit("TM_DROPPED", count=dropped - self._reported_drops)
            self._reported_drops = dropped
        self._save_state()

    def _save_state(self, force: bool = False) -> None:
        """Persist state when something that matters changed (commands, cap, orbit) or every
        STATE_SAVE_PERIOD_S for the packet counters: a console pinging every second must not
        mean 86 400 flash writes a day."""
        c = self.dispatcher.counters
        important = (tuple(getattr(c, n) for n in _COUNTERS), self.power_mode_cap, tuple(self.state.tle or ()))
        now = self.clock.monotonic_s()
        if not force and important == self._saved_important and now - self._saved_at_s < STATE_SAVE_PERIOD_S:
            return
        self.state.counters = {f"cmd_{n}": getattr(c, n) for n in _COUNTERS}
        self.state.counters.update(tc_received=self.tc_received, tc_bad_packets=self.tc_bad_packets)
        self.state.power_mode_cap = self.power_mode_cap
        try:
            self._state_file.save(self.state)
            self._saved_important, self._saved_at_s = important, now
        except OSError as exc:
            self._internal_error("state save", exc)

    # --- modes ---------------------------------------------------------------------------

    def set_mode(self, new: Mode, reason: str) -> None:
        if new is self.mode:
            return
        old, self.mode = self.mode, new
        self.emit("MODE_CHANGED", old=old.value, new=new.value, reason=reason[:200])
        if self._booted:
            sdnotify.status(self._systemd_status())

    def enter_safe(self, reason: str) -> None:
        """Automatic fall-back to SAFE: lowest power mode, compute stopped (on the same tick)."""
        if self.mode is Mode.SAFE:
            return
        self.emit("SAFE_ENTERED", reason=reason[:200])
        self.set_mode(Mode.SAFE, reason)

    # --- input ---------------------------------------------------------------------------

    def handle(self, inbound: Inbound) -> None:
        self.tc_received += 1
        try:
            packet = unpack(inbound.packet)
        except PacketError as exc:
            self._bad_packet(str(exc))
            return
        if not isinstance(packet, Telecommand):
            self._bad_packet(f"telemetry packet (APID {packet.apid}) sent to the agent's command input")
            return
        if packet.apid not in ACCEPTED_APIDS:
            self._bad_packet(f"telecommand for APID {packet.apid:#05x}, this agent answers {Apid.AGENT:#05x}")
            return
        self.last_contact_s = self.clock.monotonic_s()  # a valid packet from the ground is contact
        if packet.service == Service.TEST and packet.subtype == Subtype.PING:
            self._send_report(inbound.peer, self.codec.encode_pong(self.clock.now_s()))
            return
        if packet.service == Service.FUNCTION and packet.subtype == Subtype.PERFORM_FUNCTION:
            self.dispatcher.handle(packet, inbound.peer)
            return
        self._bad_packet(f"no PUS service {packet.service},{packet.subtype} in this agent")

    def _bad_packet(self, reason: str) -> None:
        self.tc_bad_packets += 1
        self.emit("BAD_PACKET", reason=reason[:200])

    def _internal_error(self, where: str, exc: BaseException) -> None:
        self.internal_errors += 1
        if hasattr(self, "controller"):
            self.controller.record_fault(where)
        self.emit("INTERNAL_ERROR", where=where, reason=f"{type(exc).__name__}: {exc}"[:200])

    def _control_tick(self) -> None:
        self.controller.tick()

    # --- loop ----------------------------------------------------------------------------

    def _register_link(self) -> None:
        """(Re-)register the link's sockets or descriptors: a serial port reopened gets a new fd."""
        items = self.link.pollables()
        if items == self._link_items:
            return
        for item in self._link_items:
            try:
                self._poller.unregister(item)
            except KeyError:
                pass
        for item in items:
            self._poller.register(item, zmq.POLLIN)
        self._link_items = items

    def step(self, max_wait_s: float | None = 1.0) -> None:
        """One turn: wait for input or the next timer, handle what came, fire what is due."""
        self._register_link()
        if self._watchdog_every_s is not None:
            self._feed_watchdog()
            # Never sleep past the next feed, whatever the caller asked (None: no limit).
            max_wait_s = self._watchdog_every_s if max_wait_s is None else min(max_wait_s, self._watchdog_every_s)
        # Before boot (lockstep, waiting for the harness) no timer is due: wait for I/O only.
        timeout_s = self.clock.timeout_until(self.timers.next_due_s()) if self._booted else None
        if timeout_s is None or (max_wait_s is not None and timeout_s > max_wait_s):
            timeout_s = max_wait_s
        write_items = self.link.write_pollables() if self.link.wants_write() else []
        for item in write_items:
            self._poller.register(item, zmq.POLLIN | zmq.POLLOUT)
        # Round the wait up to the poller's millisecond, never down: waking early costs a turn,
        # and int(ms) + 1 would make every timer up to a millisecond late.
        ready = dict(self._poller.poll(None if timeout_s is None else math.ceil(timeout_s * 1000)))
        for item in write_items:
            self._poller.register(item, zmq.POLLIN)
        if self._wake_r.fileno() in ready:
            try:
                self._wake_r.recv(64)
            except BlockingIOError:
                pass
        for inbound in self.link.receive():
            try:
                self.handle(inbound)
            except Exception as exc:  # noqa: BLE001 - the last line of defence: count, report, carry on
                self._internal_error("command input", exc)
        try:
            self.compute.receive()
        except Exception as exc:  # noqa: BLE001
            self._internal_error("compute input", exc)
        receive_env = getattr(self.hal, "receive", None)
        if receive_env is not None:
            if receive_env() and not self._booted:
                self._boot()  # lockstep: simulated time has begun
            self.hal.say_hello()
        if self._booted:
            try:
                self.timers.run_due()
            except Exception as exc:  # noqa: BLE001
                self._internal_error("timers", exc)
        if getattr(self.hal, "has_pending_step", False):
            self.controller.answer_sim()  # every harness step gets exactly one answer
        self.link.flush()
        if self._watchdog_every_s is not None:
            self._feed_watchdog()

    def _systemd_status(self) -> str:
        """The line ``systemctl status`` shows for the agent."""
        return f"boot {self.state.boot_count}, mode {self.mode.value}, link {self.link.kind}"

    def _feed_watchdog(self) -> None:
        """``WATCHDOG=1`` to systemd if a feed is due (wall clock: systemd's timer is wall time)."""
        now_s = time.monotonic()
        if now_s - self._watchdog_fed_s >= self._watchdog_every_s:
            sdnotify.watchdog()
            self._watchdog_fed_s = now_s

    def _boot(self) -> None:
        """Start of time for this run: report how the last one ended, go SAFE, start the timers."""
        self._booted = True
        self.started_s = self.last_contact_s = self.clock.monotonic_s()
        for name in ("housekeeping", "control"):
            self.timers.restart(name)
        for problem, what in ((self.params.load_error, "parameters"), (self._state_file.load_error, "state")):
            if problem:
                self.emit("STATE_CORRUPT", what=what, reason=problem[:200])
        self.emit("AGENT_STARTED", boot_count=self.state.boot_count, previous_stop=self.previous_stop,
                  dict_hash=self.dictionary.version_hash, link=self.link.kind, hal=self.hal.backend)
        self.set_mode(Mode.SAFE, f"boot complete (previous stop {self.previous_stop})")
        sdnotify.ready(self._systemd_status())

    def stop(self, reason: str) -> None:
        """Ask the loop to end after this turn; safe from a signal handler or another thread."""
        self._stop_reason = reason
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def run(self) -> str:
        """Run until stopped; return why it stopped."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.stop(signal.Signals(signum).name))
        self.compute.start()
        if not getattr(self.hal, "lockstep", False):
            self._boot()
        # Under lockstep the loop already answers the link, and boots on the harness's first step.
        while self._stop_reason is None:
            self.step()
        sdnotify.stopping(self._stop_reason)
        self.emit("AGENT_STOPPING", reason=self._stop_reason)
        self.state.running = False
        self._save_state(force=True)
        self.link.flush()
        return self._stop_reason

    def close(self) -> None:
        self.compute.close()
        self.link.close()
        self.hal.close()
        self._wake_r.close()
        self._wake_w.close()
