"""The link service: telecommands in, verification and telemetry out, and the link's counters.

Every packet that arrives is counted; a malformed one, a telemetry packet, one for another
APID or an unknown service is refused with ``BAD_PACKET`` and counted; a PUS ping is answered
on the spot; a TC(8,1) goes to the dispatcher; the ground's store acknowledgement, TC(15,130),
goes to the downlink (flight/agent/downlink.py); a TC(141,1) on APID FILES (a CFDP PDU) goes to the
file manager (flight/agent/files.py). A valid packet from the ground is contact.
Dropped telemetry (a full queue) is reported once per housekeeping period, never silent; malformed packets
past the first few of a period are too (each is counted in ``tc_bad_packets``). What the link refused before
a packet was made of it (a serial frame that is not COBS, a ZeroMQ message of other than two frames: its
``rx_bad_frames``, in ``tc_bad_packets`` too) is taken from it each turn and said in the same way.
"""

from __future__ import annotations

from typing import Any, Callable

from flight.agent.ports import Component, EventPort
from flight.clock import Clock
from flight.link.apid import Apid
from flight.link.interface import FlightLink, Inbound
from flight.link.messages import AckRun, Codec
from flight.link.packets import PacketError, Service, Subtype, Telecommand, unpack
from flight.link.sdls import LINE_DAMAGE, AuthError, KeyRing, ReplayGuard, open_tc

ACCEPTED_APIDS = frozenset({Apid.AGENT, Apid.FILES})
# Said in a refusal, from the set itself (found in audit: it named AGENT's alone, and the files' APID is taken too)
ACCEPTED_SAID = ", ".join(f"{a:#05x} ({a.name})" for a in sorted(ACCEPTED_APIDS))
BAD_PACKETS_SAID = 4  # BAD_PACKET events a housekeeping period, the rest in one more at its end (an audit: a
# flood of 7-byte frames gave an event each, 12 times their bytes, and filled the packet store in minutes)


class LinkService(Component):
    NAME = "link service"
    EVENTS = ("BAD_PACKET", "TM_DROPPED", "TC_AUTH_REJECTED", "TC_REPLAY_NOT_KEPT", "LINK_DEVICE_ERROR")
    CHANNELS = ("tc_received", "tc_bad_packets", "tm_sent", "tm_dropped", "link_kind", "contact_age_s", "tc_auth",
                "tc_auth_rejected", "zmq_auth_refused", "link_device_errors", "link_reopens")

    def __init__(self, link: FlightLink, codec: Codec, clock: Clock, emit: EventPort,
                 dispatch: Callable[[Telecommand, Any], None], counters: dict[str, int] | None = None,
                 reply: Callable[[Any, bytes], None] | None = None,
                 store_ack: Callable[[list[AckRun]], None] | None = None,
                 file_pdu: Callable[[bytes], None] | None = None,
                 keys: KeyRing | None = None, replay: ReplayGuard | None = None):
        """``reply``: how an answer reaches the sender and the stream (the downlink; default: the
        link itself). ``store_ack``: where the ground's store acknowledgements go (none: refused).
        ``keys``: the telecommand key slots: every packet must then be sealed (flight/link/sdls.py)
        and pass ``replay``; None: packets are taken as they come."""
        self.link = link
        self._reply = reply
        self._store_ack = store_ack
        self._file_pdu = file_pdu
        self._keys = keys
        self._replay = replay
        self.tc_auth_rejected = 0
        self._auth_unreported = 0
        self._auth_last: tuple[str, str] = ("", "")
        self._replay_failures_reported = 0
        self._sealed_with: int | None = None
        self._codec = codec
        self._clock = clock
        self._emit = emit
        self._dispatch = dispatch
        counters = counters or {}
        self.tc_received = int(counters.get("tc_received", 0))
        self.tc_bad_packets = int(counters.get("tc_bad_packets", 0))
        # Drops counted before this start (kept with the counters, AGT-013), and those of them never said in a
        # TM_DROPPED: said at the first period (found in audit: the drops of a run's last period, the stop's own
        # events among them, were never said and tm_dropped read 0 again after the restart)
        self._dropped_before = int(counters.get("tm_dropped", 0))
        self._dropped_unsaid = int(counters.get("tm_dropped_unsaid", 0))
        self._carried_said = False  # drops carried from before said, not yet written down as said
        self._reported_drops = 0
        self._handling = False  # a packet is being handled now (counted in tc_received)
        self._reported_device_errors = 0
        self._device_down_said = False  # LINK_DEVICE_ERROR said for this outage
        self._bad_said = 0  # BAD_PACKET events this period
        self._bad_unsaid = 0  # malformed packets counted and not said this period
        self._bad_last = ""
        self.last_contact_s = clock.monotonic_s()
        self.contact_this_boot = False  # a valid packet from the ground since the start

    # --- output ------------------------------------------------------------------------

    def send_report(self, peer: Any, packet: bytes) -> None:
        """The requester gets its reports directly; every other console sees them on the stream."""
        if self._reply is not None:
            self._reply(peer, packet)
            return
        if peer is not None:
            self.link.reply(peer, packet)
        self.link.publish(packet)

    def report_auth(self) -> None:
        """Once per housekeeping period: refused telecommands since the last report, as one event;
        failed writes of the replay window since the last report, as another."""
        if self._auth_unreported:
            kind, reason = self._auth_last
            self._emit("TC_AUTH_REJECTED", count=self._auth_unreported, kind=kind, reason=reason)
            self._auth_unreported = 0
        replay = self._replay
        if replay is not None and replay.store_failures > self._replay_failures_reported:
            self._emit("TC_REPLAY_NOT_KEPT", count=replay.store_failures - self._replay_failures_reported,
                       reason=replay.store_error or "written since")
            self._replay_failures_reported = replay.store_failures

    def report_bad_packets(self) -> None:
        """Once per housekeeping period: the malformed packets past :data:`BAD_PACKETS_SAID` since the last
        report, as one event naming the last one's fault."""
        self.report_refused_frames()  # those refused since the last turn belong to this period
        if self._bad_unsaid:
            self._emit("BAD_PACKET", reason=f"{self._bad_unsaid} more malformed packets refused, last: "
                                         f"{self._bad_last}")
        self._bad_said = self._bad_unsaid = 0

    def report_drops(self) -> None:
        dropped = self.link.stats.tx_dropped
        unsaid = self._dropped_unsaid + max(0, dropped - self._reported_drops)
        if unsaid:
            self._emit("TM_DROPPED", count=unsaid)
            self._reported_drops = dropped
            self._carried_said = self._carried_said or self._dropped_unsaid > 0
            self._dropped_unsaid = 0
        # A serial device lost: said once an outage, not only counted (an audit), nor at each try to reopen it (a
        # review: an event a second while an adapter was away); link_device_errors counts every failure
        failed = self.link.stats.device_errors
        if failed > self._reported_device_errors and not self._device_down_said:
            self._emit("LINK_DEVICE_ERROR", count=failed - self._reported_device_errors,
                       reason=str(getattr(self.link, "last_error", ""))[:160])
            self._device_down_said = True
        self._reported_device_errors = failed
        if self._device_down_said and getattr(self.link, "is_open", True):
            self._device_down_said = False  # open again: the next loss is said

    # --- input -------------------------------------------------------------------------

    def handle(self, inbound: Inbound) -> None:
        self.tc_received += 1
        self._handling = True
        try:
            self._handle(inbound)
        finally:
            self._handling = False

    def _handle(self, inbound: Inbound) -> None:
        raw = inbound.packet
        spi = None
        if self._keys is not None:
            try:
                spi, _sn, raw = open_tc(raw, self._keys, self._replay)
            except AuthError as exc:  # dropped unread and unanswered: a forger learns nothing
                if exc.kind in LINE_DAMAGE:  # a packet the line damaged, no seal judged: malformed, not an attack
                    self._bad_packet(str(exc))
                    return
                self.tc_auth_rejected += 1
                self._auth_unreported += 1
                self._auth_last = (exc.kind, str(exc)[:160])
                return
        self._sealed_with = spi
        try:
            self._take(inbound, raw)
        finally:
            self._sealed_with = None

    def sealed_with(self) -> int | None:
        """The key slot that sealed the telecommand being handled now; None outside one (a time-tagged
        command released later) or with authentication OFF. KEY_REVOKE refuses to revoke it."""
        return self._sealed_with

    def _take(self, inbound: Inbound, raw: bytes) -> None:
        """An authenticated (or, with authentication OFF, a plain) packet: parsed and routed."""
        try:
            packet = unpack(raw)
        except PacketError as exc:
            self._bad_packet(str(exc))
            return
        if not isinstance(packet, Telecommand):
            self._bad_packet(f"telemetry packet (APID {packet.apid}) sent to the agent's command input")
            return
        if packet.apid not in ACCEPTED_APIDS:
            self._bad_packet(f"telecommand for APID {packet.apid:#05x}, this agent takes {ACCEPTED_SAID}")
            return
        self.last_contact_s = self._clock.monotonic_s()  # a valid packet from the ground is contact
        self.contact_this_boot = True
        if packet.apid == Apid.FILES:
            pdu = Codec.file_pdu(packet)
            if pdu is None or self._file_pdu is None:
                self._bad_packet(f"APID {Apid.FILES:#05x} carries CFDP PDUs in TC(141,1) only; got "
                                 f"TC({packet.service},{packet.subtype})" if pdu is None else "no file service")
                return
            self._file_pdu(pdu)
            return
        if packet.service == Service.TEST and packet.subtype == Subtype.PING:
            self.send_report(inbound.peer, self._codec.encode_pong(self._clock.now_s()))
            return
        if packet.service == Service.FUNCTION and packet.subtype == Subtype.PERFORM_FUNCTION:
            self._dispatch(packet, inbound.peer)
            return
        if packet.service == Service.STORAGE and packet.subtype == Subtype.STORE_ACK and self._store_ack is not None:
            try:
                runs = self._codec.decode_store_ack(packet)
            except PacketError as exc:
                self._bad_packet(f"store acknowledgement: {exc}")
                return
            self._store_ack(runs)
            return
        self._bad_packet(f"no PUS service {packet.service},{packet.subtype} in this agent")

    def report_refused_frames(self) -> None:
        """Each turn: the frames the link refused before the packet codec, said as malformed packets are, under
        the same limit (found in audit: counted in tc_bad_packets through rx_bad_frames, never said). Counted by
        the link already: not again here."""
        refused = self.link.take_refused()
        for reason in refused.reasons:
            self._say_bad(reason)
        # A flood past the reasons the link kept (REFUSED_KEPT, more than BAD_PACKETS_SAID: the period's events are
        # spent on them) goes in the period's last event, with the last one's reason. (A branch saying the last
        # reason again while events were left could never run: found in review.)
        more = refused.count - len(refused.reasons)
        if more > 0:
            self._bad_unsaid += more
            self._bad_last = refused.last[:160]

    def _bad_packet(self, reason: str) -> None:
        self.tc_bad_packets += 1
        self._say_bad(reason)

    def _say_bad(self, reason: str) -> None:
        if self._bad_said < BAD_PACKETS_SAID:
            self._bad_said += 1
            self._emit("BAD_PACKET", reason=reason)
        else:
            self._bad_unsaid += 1
            self._bad_last = reason[:160]

    def contact_age_s(self) -> float:
        return self._clock.monotonic_s() - self.last_contact_s

    def restart_contact(self, age_s: float = 0.0) -> None:
        """Time begins (boot): contact is counted from ``age_s`` ago, the age the last contact kept across the
        restart had (found in audit: counted from each start, resets more often than contact_timeout_s kept
        the agent from ever losing contact)."""
        self.last_contact_s = self._clock.monotonic_s() - max(0.0, age_s)

    def said_carried_drops(self) -> bool:
        """Whether drops carried from before the start (or a counter reset) were said since the last ask: the owner
        then saves the counters at once, so that a reset before the next periodic save does not say them again."""
        said, self._carried_said = self._carried_said, False
        return said

    def tm_dropped(self) -> int:
        """Telemetry the link refused, since the last RESET_COUNTERS, across restarts."""
        return self._dropped_before + self.link.stats.tx_dropped

    def bad_packets(self) -> int:
        """Malformed packets and the frames the link refused before a packet was made of them (its
        ``rx_bad_frames``), since the last RESET_COUNTERS, across restarts: the frames are kept with the
        packets (found in audit: only the packets were, and tc_bad_packets fell back at each restart)."""
        return self.tc_bad_packets + self.link.stats.rx_bad_frames

    def counters(self) -> dict[str, int]:
        return {"tc_received": self.tc_received, "tc_bad_packets": self.bad_packets(),
                "tm_dropped": self.tm_dropped(),
                "tm_dropped_unsaid": self._dropped_unsaid + max(0, self.link.stats.tx_dropped - self._reported_drops)}

    def reset_counters(self) -> None:
        """Zero the counts. The packet being handled (the RESET_COUNTERS itself) stays received, as the dispatcher
        keeps it accepted (found in audit: tc_received 0 and cmd_accepted 1 after the reset); drops not yet said
        are said at the period's end all the same (LNK-005: a reset is not a silence)."""
        self._dropped_unsaid += max(0, self.link.stats.tx_dropped - self._reported_drops)
        self.link.stats.reset()
        self.tc_received = 1 if self._handling else 0
        self.tc_bad_packets = self.tc_auth_rejected = 0
        self._dropped_before = 0
        self._reported_drops = self._reported_device_errors = 0

    def telemetry(self) -> dict[str, Any]:
        s = self.link.stats
        return {
            "tc_received": self.tc_received,
            "tc_bad_packets": self.bad_packets(),
            "tm_sent": s.tx_packets,
            "tm_dropped": self.tm_dropped(),
            "link_kind": self.link.kind.value,
            "contact_age_s": round(self.contact_age_s(), 3),
            "tc_auth": "OFF" if self._keys is None else "HMAC-SHA256",
            "tc_auth_rejected": self.tc_auth_rejected,
            "zmq_auth_refused": getattr(s, "rx_auth_refused", 0),
            "link_device_errors": s.device_errors,
            "link_reopens": s.reopens,
        }
