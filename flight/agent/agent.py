"""The flight agent's loop: wait on the link and the timers, dispatch, report.

Driven by events, never by sleeps: each turn waits in ``zmq.Poller`` on the link's
sockets or file descriptors (and a signal wake-up pipe) for at most the time until the
next timer is due, as the clock says. Nothing a packet contains can stop the loop: bad
packets are counted and reported, handler errors fail their command.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

import zmq

from flight.agent.dispatcher import Dispatcher
from flight.agent.timers import Timers
from flight.clock import Clock, RealClock
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary
from flight.link.messages import Codec, CommandRequest
from flight.link.packets import PacketError, Service, Subtype, Telecommand, unpack
from flight.link.transport import FlightLink, Inbound

ACCEPTED_APIDS = frozenset({Apid.AGENT})


class Agent:
    def __init__(
        self,
        link: FlightLink,
        clock: Clock | None = None,
        dictionary: Dictionary = DICTIONARY,
        hk_period_s: float | None = None,
    ):
        self.link = link
        self.clock = clock or RealClock()
        self.dictionary = dictionary
        self.codec = Codec(dictionary, Apid.AGENT)
        self.started_s = self.clock.monotonic_s()
        self.tc_received = 0
        self.tc_bad_packets = 0
        self.internal_errors = 0
        self._reported_drops = 0
        self._stop_reason: str | None = None
        self.dispatcher = Dispatcher(self.codec, self._send_report, self.clock.now_s, self.emit)
        self.dispatcher.register("NOOP", lambda req: None)
        self.dispatcher.register("PING", self._cmd_ping)
        self.dispatcher.register("RESET_COUNTERS", self._cmd_reset_counters)
        self.timers = Timers(self.clock)
        period = hk_period_s if hk_period_s is not None else dictionary.parameter_by_name["hk_period_s"].default
        self.timers.every("housekeeping", period, self.send_housekeeping)
        self._poller = zmq.Poller()
        for item in link.pollables():
            self._poller.register(item, zmq.POLLIN)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)

    # --- output --------------------------------------------------------------------------

    def emit(self, event: str, /, **args: Any) -> None:
        """Publish an event from the dictionary."""
        self.link.publish(self.codec.encode_event(event, args, self.clock.now_s()))

    def _send_report(self, peer: Any, packet: bytes) -> None:
        # The requester gets its reports directly; every other console sees them on the stream.
        if peer is not None:
            self.link.reply(peer, packet)
        self.link.publish(packet)

    def housekeeping(self) -> dict[str, Any]:
        c = self.dispatcher.counters
        s = self.link.stats
        return {
            "uptime_s": round(self.clock.monotonic_s() - self.started_s, 3),
            "dict_hash": self.dictionary.version_hash,
            "cmd_accepted": c.accepted,
            "cmd_rejected": c.rejected,
            "cmd_executed": c.executed,
            "cmd_failed": c.failed,
            "tc_received": self.tc_received,
            "tc_bad_packets": self.tc_bad_packets + s.rx_bad_frames,
            "tc_duplicates": c.duplicates,
            "tm_sent": s.tx_packets,
            "tm_dropped": s.tx_dropped,
            "link_kind": self.link.kind,
            "internal_errors": self.internal_errors,
        }

    def send_housekeeping(self) -> None:
        now = self.clock.now_s()
        values = self.housekeeping()
        for packet in self.dictionary.packets:
            if packet.apid == Apid.AGENT:
                self.link.publish(self.codec.encode_hk(packet.sid, values, now))
        dropped = self.link.stats.tx_dropped
        if dropped > self._reported_drops:
            self.emit("TM_DROPPED", count=dropped - self._reported_drops)
            self._reported_drops = dropped

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
        if packet.service == Service.TEST and packet.subtype == Subtype.PING:
            pong = self.codec.encode_pong(self.clock.now_s())
            self._send_report(inbound.peer, pong)
            return
        if packet.service == Service.FUNCTION and packet.subtype == Subtype.PERFORM_FUNCTION:
            self.dispatcher.handle(packet, inbound.peer)
            return
        self._bad_packet(f"no PUS service {packet.service},{packet.subtype} in this agent")

    def _bad_packet(self, reason: str) -> None:
        self.tc_bad_packets += 1
        self.emit("BAD_PACKET", reason=reason[:200])

    # --- command handlers ----------------------------------------------------------------

    def _cmd_ping(self, req: CommandRequest) -> dict[str, Any]:
        token = req.args["token"]
        self.emit("PING_RECEIVED", token=token)
        return {
            "token": token,
            "uptime_s": round(self.clock.monotonic_s() - self.started_s, 3),
            "dict_hash": self.dictionary.version_hash,
        }

    def _cmd_reset_counters(self, req: CommandRequest) -> None:
        self.dispatcher.counters.__init__()
        self.link.stats.reset()
        self.tc_received = 0
        self.tc_bad_packets = 0
        self._reported_drops = 0
        self.emit("COUNTERS_RESET")

    # --- loop ----------------------------------------------------------------------------

    def step(self, max_wait_s: float | None = 1.0) -> None:
        """One turn: wait for input or the next timer, handle what came, fire what is due."""
        timeout_s = self.clock.timeout_until(self.timers.next_due_s())
        if timeout_s is None or (max_wait_s is not None and timeout_s > max_wait_s):
            timeout_s = max_wait_s
        write_items = self.link.write_pollables() if self.link.wants_write() else []
        for item in write_items:
            self._poller.register(item, zmq.POLLIN | zmq.POLLOUT)
        ready = dict(self._poller.poll(None if timeout_s is None else int(timeout_s * 1000) + 1))
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
                self.internal_errors += 1
                self.emit("INTERNAL_ERROR", where="command input", reason=f"{type(exc).__name__}: {exc}"[:200])
        self.timers.run_due()
        self.link.flush()

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
        self.emit("AGENT_STARTED", dict_hash=self.dictionary.version_hash, link=self.link.kind)
        self.send_housekeeping()
        while self._stop_reason is None:
            self.step()
        self.emit("AGENT_STOPPING", reason=self._stop_reason)
        self.link.flush()
        return self._stop_reason

    def close(self) -> None:
        self.link.close()
        self._wake_r.close()
        self._wake_w.close()
