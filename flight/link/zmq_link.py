"""ZeroMQ link: ROUTER/DEALER for commands and their replies, XPUB/SUB for the telemetry stream.

Why these socket types:

- Commands want an answer from the agent to the one console that asked, so the agent
  binds a ROUTER (it learns each sender's identity) and a console connects a DEALER. The
  console retries on silence the zguide "Lazy Pirate" way: close the DEALER, open a new
  one, send the same packet again; the agent executes each ``cmd_id`` once.
- Telemetry fans out to any number of consoles, archives and harnesses: the agent binds
  an XPUB with ``XPUB_NODROP`` so a full subscriber queue shows up here as ``zmq.Again``
  and is counted, instead of PUB's silent drop. libzmq's NODROP refuses a packet to every
  subscriber when any one's queue is full (found in audit: one console that stopped reading
  stopped the stream to all, the ground's archive too). So with more than one subscriber (the
  XPUB is verbose: each SUB's subscription is counted) a refused packet is counted
  (``tx_dropped``) and sent again without NODROP: the full subscriber loses it, the others get
  it (``tx_packets`` too) and :meth:`ZmqFlightLink.publish` says True. libzmq then passes that
  subscriber by until it reads again, so its further losses are not seen here, only by it: it
  counts sequence gaps, as a subscriber that joins late does, and the packet store plays back
  what the ground's archive did not acknowledge. With one subscriber a full queue is refused
  as before: False, counted. What libzmq does not say: whether any subscriber took the packet
  sent on. Where every one of two or more is full (a review: the whole ground path stalled),
  the packets are passed by all, said sent and counted once: the store keeps the stored ones
  unacknowledged and plays them back after ``playback_resend_s``, live-only ones are lost.

One copy of each report: a console's SUB also subscribes to a *presence* topic naming its
DEALER (``PRESENCE_PREFIX`` + the DEALER's identity; no packet can match it, a CCSDS packet's
first byte being below 0x20). The XPUB hands the agent that subscription, and its withdrawal
when the SUB goes or is replaced, so the agent knows which senders the stream reaches
(:meth:`ZmqFlightLink.stream_reaches`) and publishes their reports only; a sender the stream is
not known to reach (no SUB, a SUB not joined yet, a proxy in between) gets its reports on its
DEALER as well.

ZeroMQ reconnects by itself when either end restarts; both ends bind/connect once and
keep their sockets, except the DEALER that a retry replaces. The agent's end has a ZeroMQ context
of its own, ended in ``close()``: only a context's end waits out the sockets' linger, so the last
reports of a clean stop leave before the process exits.

CurveZMQ (``LinkConfig.curve``, see :mod:`flight.link.curve`): the agent's ROUTER and XPUB
are CURVE servers, and a ZAP handler (pyzmq's ``ThreadAuthenticator``) lets in only the
client keys of the allow-list. Such a link has a ZeroMQ context of its own, so its ZAP
handler (one per context) is its alone and ends with it in ``close()``. A socket monitor on
each server socket, read without blocking in ``receive()``, counts the handshakes refused
(``LinkStats.rx_auth_refused``). A console's DEALER and SUB are CURVE clients that know the
agent's public key. Without ``curve`` nothing of this exists: plain ZMTP, as before.

Bounded, frame by frame: the ROUTER takes no frame larger than the largest packet (``MAX_PACKET_LEN``,
and CurveZMQ's box around it, which libzmq counts) and the XPUB no subscription larger than
:data:`MAX_SUBSCRIPTION` (ZMQ_MAXMSGSIZE): libzmq drops the connection that sends one, before any
of it is queued (a queue of 1000 messages of any size once let one client take the board's
memory). libzmq says only that the peer disconnected, not why, so these are not counted. What
ZMQ_MAXMSGSIZE does not bound (found in audit): the number of frames of one multipart message.
libzmq hands a message over only once its last frame is in, and its high-water mark counts whole
messages, so a peer that sends frames without end makes libzmq hold them all before
:meth:`receive` can drop the message (8000 frames of 60 kB: 486 MB). The socket types that refuse
multipart messages (SERVER, CLIENT) are libzmq's draft API, not in pyzmq's wheels. So a peer able
to connect can take the board's memory this way: that is the CURVE allow-list's to stop (a link
reachable by processes or hosts that are not the ground's belongs behind ``[security] zmq_curve = "on"``).
"""

from __future__ import annotations

import os
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from flight.link.definitions import LinkKind
from flight.link.interface import CurveKeys, FlightLink, GroundLink, Inbound, LinkConfig, LinkStats, Refusals, Refused
from flight.link.packets import MAX_PACKET_LEN

_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 1000
_HEARTBEAT_IVL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 5000
_CLOSE_LINGER_MS = 500  # a clean stop gives its last reports and events this long to leave
_MAX_DRAIN = 10_000  # bound one receive() call so a flood cannot starve the agent's timers
PRESENCE_PREFIX = b"\xffsunlit-present:"  # + a DEALER's identity: that console's SUB is joined
MAX_PRESENT = 4096  # senders remembered as subscribed; past it a sender just gets its replies directly
MAX_SUBSCRIPTION = 512  # bytes of a subscription: its flag, the presence prefix and a DEALER's identity (<= 255)
CURVE_BOX = 64  # bytes CurveZMQ adds around a message (a MESSAGE command: 33), which the limits count
MAX_COMMAND_MESSAGE = MAX_PACKET_LEN + CURVE_BOX
ZAP_DOMAIN = b"sunlit"  # the agent's sockets' ZAP domain: the allow-list is configured for it
# Handshakes that a CURVE server refused: the ZAP handler said no (a key not in the allow-list),
# or the peer spoke no CURVE or not with this server's key (a plain client, a wrong server key).
_AUTH_REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                 zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_AUTH_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def _context() -> zmq.Context:
    return zmq.Context.instance()


def _common(sock: zmq.Socket, hwm: int, endpoint: str = "") -> None:
    sock.linger = 0
    if endpoint.startswith("tcp://["):  # an IPv6 address: without ZMQ_IPV6 libzmq binds and connects to nothing
        sock.ipv6 = True
    sock.sndhwm = hwm
    sock.rcvhwm = hwm
    sock.reconnect_ivl = _RECONNECT_IVL_MS
    sock.reconnect_ivl_max = _RECONNECT_IVL_MAX_MS
    # ZMTP heartbeats: a peer that vanished without closing (a console's host lost power) is
    # disconnected after HEARTBEAT_TIMEOUT, which frees its queue. Without this one dead
    # subscriber would hold the XPUB's NODROP back-pressure forever.
    sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)


def _curve_client(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE client of the agent (before it connects); nothing without keys."""
    if keys is None:
        return
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: an enum's & costs more than the call


def _readable(sock: zmq.Socket) -> bool:
    """Whether a whole message waits on ``sock``: asked of the socket (ZMQ_EVENTS) before each
    read, because a read that finds nothing costs a raised Again, several times the read itself."""
    return bool(sock.get(_EVENTS) & _POLLIN)


def _send_counted(sock: zmq.Socket, packet: bytes, stats: LinkStats) -> bool:
    """Send without blocking; a full queue is a counted drop, never a stall or a silent loss."""
    try:
        sock.send(packet, zmq.NOBLOCK, copy=len(packet) < 4096)
    except zmq.Again:
        stats.tx_dropped += 1
        return False
    stats.tx_packets += 1
    stats.tx_bytes += len(packet)
    return True


class ZmqFlightLink(FlightLink):
    kind = LinkKind.ZMQ

    def __init__(self, config: LinkConfig):
        self.config = config
        self.stats = LinkStats()
        self.refused = Refusals(self.stats)  # messages not of our two frames, with why, for the agent to say
        self.subscribers = 0  # subscriptions to the stream (a console's SUB: one), its presence apart
        self._present: set[bytes] = set()  # DEALER identities whose console's SUB is joined
        # This link's own context, so close() can end it: only a context's end waits out the sockets' linger
        # (found in audit: on the process's shared one an agent's exit cut off the stop's last reports)
        self._ctx: zmq.Context | None = None
        self._auth: Any = None  # CURVE only: the ThreadAuthenticator
        self._monitors: list[zmq.Socket] = []
        keys = config.curve
        if keys is not None and keys.allowed_dir is None:
            raise ValueError("an agent's CURVE keys need the allow-list directory (allowed_dir)")
        ctx = self._ctx = zmq.Context() if keys is None else self._start_curve(keys)
        self._cmd = ctx.socket(zmq.ROUTER)
        _common(self._cmd, config.queue_packets, config.cmd_endpoint)
        self._cmd.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unreachable peer raises instead of vanishing
        self._cmd.setsockopt(zmq.MAXMSGSIZE, MAX_COMMAND_MESSAGE)
        self._tm = ctx.socket(zmq.XPUB)
        _common(self._tm, config.queue_packets, config.tm_endpoint)
        self._tm.setsockopt(zmq.XPUB_NODROP, 1)
        # Every SUB's subscription and its withdrawal handed over, not only a topic's first and last: the
        # subscriber count is true with two consoles, which publish() needs to know whether others remain
        self._tm.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._tm.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._tm.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
        try:
            if keys is not None:
                for sock in (self._cmd, self._tm):
                    # ZAP enforced: with no handler answering (its thread gone) libzmq would let any
                    # CURVE client in; enforced, it lets none in.
                    sock.zap_domain = ZAP_DOMAIN
                    sock.zap_enforce_domain = True
                    sock.curve_server = True
                    sock.curve_secretkey = keys.secret
                    sock.curve_publickey = keys.public
                    self._monitors.append(sock.get_monitor_socket(_AUTH_EVENTS))
            self._cmd.bind(config.cmd_endpoint)
            self._tm.bind(config.tm_endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(f"cannot bind {config.url} ({config.cmd_endpoint}, {config.tm_endpoint}): {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _start_curve(self, keys: CurveKeys) -> zmq.Context:
        """A context of this link's own, with a ZAP handler that lets in the allow-list only."""
        from zmq.auth.thread import ThreadAuthenticator

        from flight.link.curve import load_allowed

        load_allowed(keys.allowed_dir)  # pyzmq would only log a bad directory, and let nobody in
        self._ctx = zmq.Context()
        try:
            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(keys.allowed_dir))
        except BaseException:
            self.close()
            raise
        return self._ctx

    def pollables(self) -> list[Any]:
        return [self._cmd, self._tm]

    def _count_refused(self) -> None:
        for monitor in self._monitors:
            for _ in range(_MAX_DRAIN):
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                if event["event"] in _AUTH_REFUSED:
                    self.stats.rx_auth_refused += 1

    def receive(self) -> list[Inbound]:
        if self._monitors:
            self._count_refused()
        out: list[Inbound] = []
        for _ in range(_MAX_DRAIN):
            if not _readable(self._cmd):
                break
            try:
                frames = self._cmd.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            if len(frames) != 2:  # identity + one packet; anything else is not ours
                self.refused.add(f"ZeroMQ message of {len(frames)} frames, expected 2 (an identity and a packet)")
                continue
            identity, packet = frames
            self.stats.rx_packets += 1
            self.stats.rx_bytes += len(packet)
            out.append(Inbound(packet, identity))
        for _ in range(_MAX_DRAIN):  # subscription messages: a subscriber count, and who is present
            if not _readable(self._tm):
                break
            try:
                msg = self._tm.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            kind, topic = msg[:1], msg[1:]
            if topic.startswith(PRESENCE_PREFIX):
                identity = topic[len(PRESENCE_PREFIX):]
                if kind == b"\x01" and len(self._present) < MAX_PRESENT:
                    self._present.add(identity)
                elif kind == b"\x00":
                    self._present.discard(identity)
            elif kind == b"\x01":
                self.subscribers += 1
            elif kind == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)
        return out

    def stream_reaches(self, peer: Any) -> bool:
        return peer in self._present

    def take_refused(self) -> Refused:
        return self.refused.take()

    def reply(self, peer: Any, packet: bytes) -> bool:
        try:
            self._cmd.send_multipart([peer, packet], zmq.NOBLOCK)
        except zmq.Again:
            self.stats.tx_dropped += 1
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            # The console that asked has gone (a retry replaced its socket); the report
            # still reaches every console on the telemetry stream.
            self.stats.tx_unroutable += 1
            return False
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)
        return True

    def publish(self, packet: bytes) -> bool:
        """On the stream; a subscriber whose queue is full loses this packet (counted), the others get it."""
        if _send_counted(self._tm, packet, self.stats):
            return True
        if self.subscribers < 2:
            return False  # the one subscriber's queue is full: nobody took it, the caller keeps it for later
        # NODROP refused it to all for one full queue: to the rest without NODROP, which drops it for that one alone
        self._tm.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self._tm.send(packet, zmq.NOBLOCK, copy=len(packet) < 4096)
        except zmq.Again:
            return False
        finally:
            self._tm.setsockopt(zmq.XPUB_NODROP, 1)
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)
        return True

    def close(self) -> None:
        for sock in (getattr(self, "_cmd", None), getattr(self, "_tm", None)):
            if sock is not None and not sock.closed:
                if getattr(self, "_monitors", None):
                    try:
                        sock.disable_monitor()
                    except zmq.ZMQError:
                        pass
                sock.close(linger=_CLOSE_LINGER_MS)
        for monitor in getattr(self, "_monitors", []):
            monitor.close(linger=0)
        self._monitors = []
        if getattr(self, "_auth", None) is not None:
            self._auth.stop()  # its thread joined: no ZAP handler outlives the link
            self._auth = None
        if getattr(self, "_ctx", None) is not None:
            self._ctx.term()  # waits at most the sockets' linger for the last reports to leave
            self._ctx = None


class ZmqGroundLink(GroundLink):
    kind = LinkKind.ZMQ

    def __init__(self, config: LinkConfig):
        self.config = config
        self.stats = LinkStats()
        self.stream_packets = 0  # received on the telemetry stream (not replies): proves the SUB is joined
        if config.curve is not None and config.curve.server_public is None:
            raise ValueError("a ground link's CURVE keys need the agent's public key (server_public)")
        ctx = _context()
        self._tm = ctx.socket(zmq.SUB)
        _common(self._tm, config.queue_packets, config.tm_endpoint)
        _curve_client(self._tm, config.curve)
        self._tm.setsockopt(zmq.SUBSCRIBE, b"")
        self._identity = b""
        try:
            self._tm.connect(config.tm_endpoint)
            self._cmd = self._open_dealer()
        except zmq.ZMQError as exc:  # found in audit: a host ZeroMQ cannot take (zmq://*:5550, the agent's bind
            self.close()  # address) ended the ground's CLI in a traceback, its SUB left open
            raise OSError(f"cannot connect {config.url} ({config.cmd_endpoint}, {config.tm_endpoint}): {exc}") \
                from exc

    def _open_dealer(self) -> zmq.Socket:
        sock = _context().socket(zmq.DEALER)
        _common(sock, self.config.queue_packets, self.config.cmd_endpoint)
        # A unique identity per socket, so the agent's ROUTER never mixes two consoles; random, so
        # no other console can guess it (and claim this one's presence, silencing its replies).
        identity = f"g{os.urandom(12).hex()}".encode()
        sock.setsockopt(zmq.IDENTITY, identity)
        _curve_client(sock, self.config.curve)  # the retry's new DEALER too
        try:
            sock.connect(self.config.cmd_endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        # This SUB reaches that DEALER's console: the agent publishes its reports once, not twice.
        if self._identity:
            self._tm.setsockopt(zmq.UNSUBSCRIBE, PRESENCE_PREFIX + self._identity)
        self._tm.setsockopt(zmq.SUBSCRIBE, PRESENCE_PREFIX + identity)
        self._identity = identity
        return sock

    def pollables(self) -> list[Any]:
        return [self._cmd, self._tm]

    def send(self, packet: bytes) -> bool:
        return _send_counted(self._cmd, packet, self.stats)

    def receive(self) -> list[bytes]:
        return [packet for packet, _stream in self.receive_tagged()]

    def receive_tagged(self) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        for sock in (self._cmd, self._tm):
            stream = sock is self._tm
            for _ in range(_MAX_DRAIN):
                if not _readable(sock):
                    break
                try:
                    packet = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.stats.rx_packets += 1
                self.stats.rx_bytes += len(packet)
                self.stream_packets += stream
                out.append((packet, stream))
        return out

    def reset_commands(self) -> None:
        self._cmd.close(linger=0)
        self._cmd = self._open_dealer()

    def close(self) -> None:
        for sock in (getattr(self, "_cmd", None), getattr(self, "_tm", None)):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
