"""A hand on the ZeroMQ link: a man in the middle that drops, corrupts, duplicates, reorders and
delays packets both ways, and cuts the link when the ground station cannot see the satellite.

The ZeroMQ counterpart of :mod:`hil.ptyline` (the serial line's null-modem cable): the ground
connects to the proxy's *front* URL as if it were the agent, and the proxy connects to the
agent's *back* URL (the agent binds, flight/link/zmq_link.py). Both are link URLs,
``zmq://HOST:PORT`` or ``zmq+ipc:///PATH``, parsed by flight/link/interface.py::

    ground DEALER ──► front ROUTER ══ up ══► one DEALER per ground peer ──► agent ROUTER
    ground DEALER ◄── front ROUTER ◄═ down ═ that DEALER (replies) ◄─────── agent ROUTER
    ground SUB ◄───── front XPUB ◄══ down ══ SUB (everything) ◄──────────── agent XPUB

Replies go back to the ground peer that sent the command: each ground DEALER gets its own
DEALER towards the agent, so the agent's ROUTER still tells consoles apart and a Lazy Pirate
retry (a new DEALER) is a new peer there too. The newest :data:`MAX_PEERS` are kept: replies
waiting in the DEALER of one pushed out are counted ``undeliverable``; commands its DEALER still
queued for an agent not connected yet are lost counted ``passed`` (ZeroMQ does not say what a
socket still queues).

Faults (:class:`LinkFaults`) are per direction, ``up`` (ground to agent: commands) and
``down`` (agent to ground: replies and the telemetry stream), and are decided per packet by
:func:`decide`, a pure function of a seeded ``random.Random``: the same seed on the same
packet sequence gives the same faults. Each path (commands up, replies down, the stream down)
draws from its own generator, so the interleaving of the paths, which the threads decide, does
not move one path's faults. A corrupted packet has one bit flipped, so the receiver's CRC
refuses it (the agent counts ``tc_bad_packets`` and emits BAD_PACKET; a console counts
``bad_packets``).

The gate (``gate()``: True while in contact) is loss of signal: while it is closed nothing
passes either way, at the proxy's input and again at its output (a delayed packet still in
flight when the signal goes is lost). The harness gates by the profile's ``in_contact`` at
its own simulated time (hil/loop.py). Delays and jitter are wall-clock seconds, as are the
ground's command timeouts they are meant to test.

Every packet is counted once where it ends (:class:`DirectionStats`); nothing is lost silently.
The front XPUB refuses a packet to every subscriber when one's queue is full (libzmq's
``XPUB_NODROP``); with two or more subscribers (consoles, a ground server: the front stands for
the agent) such a packet goes again without NODROP, as flight/link/zmq_link.py sends it, so the
others get it and the full one loses it: counted ``passed`` and ``undeliverable`` both (found in
audit: one console that stopped reading stopped the stream to all). libzmq then passes that
subscriber by until it reads again, so its further losses are not seen here, only by it (sequence gaps).
Where every one of two or more subscribers is full, libzmq does not say that none took the packet sent on:
counted ``passed`` (a review), as the agent's link says such packets sent.
One thread with one ``zmq.Poller`` moves everything; delays are a time-ordered heap and the
poll's timeout, not sleeps. ``close()`` (or the ``with`` block's end) stops and joins it.

As a bench tool::

    python -m hil.link_proxy --front zmq://127.0.0.1:7000 --back zmq://127.0.0.1:6000 --drop 0.1

runs until SIGINT or SIGTERM and prints its counters as one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import json
import math
import numbers
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Sequence

import zmq

from flight.link.definitions import LinkKind
from flight.link.interface import LinkConfig, LinkConfigError, parse_link_url
from flight.link.zmq_link import PRESENCE_PREFIX

UP = "up"
DOWN = "down"
DIRECTIONS = (UP, DOWN)
# The three paths through the proxy, each with its own random sequence: (path, direction).
_COMMANDS, _REPLIES, _STREAM = "commands", "replies", "stream"
_PATH_DIRECTION = {_COMMANDS: UP, _REPLIES: DOWN, _STREAM: DOWN}

MAX_PEERS = 64  # ground peers with a DEALER towards the agent; a console retrying makes one per retry
REORDER_HOLD_MAX_S = 1.0  # a packet held for reordering that no later one overtakes goes out after this
_HWM = 1000  # packets queued per socket, as flight/link/interface.py's default queue
_MAX_DRAIN = 1000  # packets taken from one socket per round, so one busy path cannot starve the others
_RECONNECT_IVL_MS = 100  # as flight/link/zmq_link.py: an agent that restarts is reconnected quickly
_RECONNECT_IVL_MAX_MS = 1000
_HEARTBEAT_IVL_MS = 1000
_HEARTBEAT_TIMEOUT_MS = 5000
_JOIN_TIMEOUT_S = 5.0


class LinkFaultError(ValueError):
    """A fault setting that cannot be used; ``field`` names it (``drop``, ``up.delay_s``)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# --- the fault model (pure) ---------------------------------------------------------------------

PROBABILITIES = ("drop", "corrupt", "duplicate", "reorder")
DURATIONS = ("delay_s", "jitter_s")


@dataclass(frozen=True)
class DirectionFaults:
    """What happens to each packet of one direction; probabilities 0..1, delays in wall seconds.

    ``drop``: lost; ``corrupt``: one random bit flipped; ``duplicate``: delivered twice;
    ``reorder``: held and released after the next packet; ``delay_s`` + uniform(0, ``jitter_s``):
    how late it goes out (jitter may reorder packets, as a network's does).
    """

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        for name in PROBABILITIES + DURATIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise LinkFaultError(f"{name}: expected a finite number, got {value!r}", name)
            if name in PROBABILITIES and not 0.0 <= value <= 1.0:
                raise LinkFaultError(f"{name}: {value:g} is outside [0, 1] (a probability)", name)
            if name in DURATIONS and value < 0.0:
                raise LinkFaultError(f"{name}: {value:g} is below 0 (seconds)", name)
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class LinkFaults:
    """The faults of both directions: ``up`` (ground to agent), ``down`` (agent to ground)."""

    up: DirectionFaults = field(default_factory=DirectionFaults)
    down: DirectionFaults = field(default_factory=DirectionFaults)

    def __post_init__(self) -> None:
        for name in DIRECTIONS:
            if not isinstance(getattr(self, name), DirectionFaults):
                raise LinkFaultError(f"{name}: expected DirectionFaults, got {getattr(self, name)!r}", name)

    @classmethod
    def both(cls, **settings: float) -> "LinkFaults":
        """The same faults both ways: ``LinkFaults.both(drop=0.1, delay_s=0.05)``."""
        one = DirectionFaults(**settings)
        return cls(one, one)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` chose for one packet."""

    drop: bool = False
    corrupt_bit: int | None = None  # the bit to flip, counted from the first byte's most significant bit
    duplicate: bool = False
    hold: bool = False  # reorder: release after the next packet
    delay_s: float = 0.0


_DRAWS_PER_PACKET = 6  # drop, corrupt, which bit, duplicate, reorder, jitter: all drawn for every packet


def decide(rng: random.Random, faults: DirectionFaults, size_bytes: int) -> Decision:
    """The faults for one packet of ``size_bytes``: a pure function of the generator's state.

    Every call draws the same number of values whatever it decides, so packet n's faults
    depend on the seed and n only, not on what happened to the packets before it.
    """
    u = [rng.random() for _ in range(_DRAWS_PER_PACKET)]
    bits = 8 * size_bytes
    corrupt = u[1] < faults.corrupt and bits > 0
    return Decision(
        drop=u[0] < faults.drop,
        corrupt_bit=min(int(u[2] * bits), bits - 1) if corrupt else None,
        duplicate=u[3] < faults.duplicate,
        hold=u[4] < faults.reorder,
        delay_s=faults.delay_s + u[5] * faults.jitter_s,
    )


def flip_bit(packet: bytes, bit: int) -> bytes:
    """``packet`` with bit ``bit`` flipped (0: the most significant bit of the first byte)."""
    if not 0 <= bit < 8 * len(packet):
        raise ValueError(f"bit {bit} is outside a packet of {len(packet)} bytes")
    out = bytearray(packet)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def path_rng(seed: int, path: str) -> random.Random:
    """The generator of one path; a string seed is hashed with SHA-512, so it is the same in every process."""
    return random.Random(f"sunlit-link:{seed}:{path}")


# --- counters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionStats:
    """Where one direction's packets ended. ``passed`` counts packets handed on, copies included;
    ``undeliverable``: refused by a full queue, for a peer that has gone, or in flight at close. A
    telemetry packet one full subscriber lost and the others got is counted in both."""

    passed: int = 0
    dropped: int = 0
    corrupted: int = 0
    duplicated: int = 0
    reordered: int = 0
    los_dropped: int = 0
    undeliverable: int = 0


@dataclass(frozen=True)
class ProxyStats:
    up: DirectionStats
    down: DirectionStats

    def as_dict(self) -> dict[str, dict[str, int]]:
        return asdict(self)


# --- the proxy ---------------------------------------------------------------------------------


def _zmq_config(url: str, role: str) -> LinkConfig:
    config = parse_link_url(url)
    if config.kind is not LinkKind.ZMQ:
        raise LinkConfigError(f"{url}: the {role} of a link proxy is a zmq:// or zmq+ipc:// URL "
                              "(a serial line has its own cable with faults: hil/ptyline.py)")
    return config


def _shared_endpoint(front: LinkConfig, back: LinkConfig) -> str | None:
    """An endpoint front and back both use (a link takes two: commands, and telemetry next to them), or None.
    Spelled alike only: ``localhost`` and ``127.0.0.1`` are not taken for one host."""
    shared = sorted({front.cmd_endpoint, front.tm_endpoint} & {back.cmd_endpoint, back.tm_endpoint})
    return shared[0] if shared else None


def _socket(ctx: zmq.Context, kind: int, endpoint: str) -> zmq.Socket:
    """Socket options as flight/link/zmq_link.py sets them: no linger, bounded queues, heartbeats, IPv6 for an
    IPv6 address (found in review: zmq://[::1]:PORT bound nothing, "No such device")."""
    sock = ctx.socket(kind)
    sock.linger = 0
    if endpoint.startswith("tcp://["):
        sock.ipv6 = True
    sock.sndhwm = _HWM
    sock.rcvhwm = _HWM
    sock.reconnect_ivl = _RECONNECT_IVL_MS
    sock.reconnect_ivl_max = _RECONNECT_IVL_MAX_MS
    sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
    return sock


@dataclass
class _Held:
    """A packet held back for reordering, with its copies and where it goes."""

    packets: list[bytes]
    route: bytes | None
    until_s: float


class LinkProxy:
    """The man in the middle; see the module docstring.

    ``front_url``: where the ground connects (the proxy binds it); ``back_url``: the agent's
    link URL (the proxy connects to it). ``gate``: called for every packet, True while the
    link is up (None: always up); it runs on the proxy's thread, so it must be quick and
    thread-safe (reading a flag is); if it raises, the proxy stops and ``close()`` raises it.
    ``seed`` starts each path's random sequence.
    """

    def __init__(self, front_url: str, back_url: str, faults: LinkFaults | None = None,
                 gate: Callable[[], bool] | None = None, seed: int = 0):
        self.front = _zmq_config(front_url, "front")
        self.back = _zmq_config(back_url, "back")
        shared = _shared_endpoint(self.front, self.back)
        if shared is not None:
            raise LinkConfigError(f"front {front_url} and back {back_url} share {shared}: the proxy would talk to "
                                  "itself; give the agent's link URL as back and another address as front")
        self.front_url, self.back_url = front_url, back_url
        self._gate = gate
        self._seed = int(seed)
        self._faults = faults if faults is not None else LinkFaults()
        if not isinstance(self._faults, LinkFaults):
            raise LinkFaultError(f"faults: expected LinkFaults, got {self._faults!r}", "faults")
        self._rngs = {path: path_rng(self._seed, path) for path in _PATH_DIRECTION}
        self._lock = threading.Lock()  # guards the counters, the faults and the generators
        self._changed = threading.Condition(self._lock)  # a packet taken in, or its fate counted
        self._counts = {d: collections.Counter() for d in DIRECTIONS}
        self._taken = {d: 0 for d in DIRECTIONS}  # packets taken in from either side, per direction
        self._in_hand = {d: 0 for d in DIRECTIONS}  # taken off the heap, not yet counted where they ended
        self._heap: list[tuple[float, int, str, bytes | None, bytes]] = []  # (due, order, path, route, packet)
        self._order = itertools.count()
        self._held: dict[str, _Held | None] = {path: None for path in _PATH_DIRECTION}
        self._peers: collections.OrderedDict[bytes, zmq.Socket] = collections.OrderedDict()  # ground id -> DEALER
        self._peer_of: dict[zmq.Socket, bytes] = {}
        self._subscribers = 0  # subscriptions to the front's stream, presence topics apart; the thread's own
        self._stopping = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ctx = zmq.Context()  # its own: close() ends every socket of it and nothing else
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            # Made here, so a front address in use is an error from the constructor; only the
            # proxy's thread touches them after start() (its start is the memory barrier ZeroMQ asks for).
            self._front_cmd = _socket(self._ctx, zmq.ROUTER, self.front.cmd_endpoint)
            self._front_cmd.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply for a gone console raises: counted
            self._front_tm = _socket(self._ctx, zmq.XPUB, self.front.tm_endpoint)
            self._front_tm.setsockopt(zmq.XPUB_NODROP, 1)  # a full subscriber shows as zmq.Again: counted
            # Every SUB's subscription and its withdrawal handed over, so the subscribers are counted (_deliver)
            self._front_tm.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._front_tm.setsockopt(zmq.XPUB_VERBOSER, 1)
            self._back_tm = _socket(self._ctx, zmq.SUB, self.back.tm_endpoint)
            self._back_tm.setsockopt(zmq.SUBSCRIBE, b"")
            self._front_cmd.bind(self.front.cmd_endpoint)
            self._front_tm.bind(self.front.tm_endpoint)
            self._back_tm.connect(self.back.tm_endpoint)
        except zmq.ZMQError as exc:
            self._release()
            raise OSError(f"link proxy: cannot bind {front_url} ({self.front.cmd_endpoint}, "
                          f"{self.front.tm_endpoint}): {exc}") from exc

    # --- the caller's side ---------------------------------------------------------------

    def start(self) -> "LinkProxy":
        if self._closed:
            raise RuntimeError("this link proxy is closed; make a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="link-proxy", daemon=True)
            self._thread.start()
        return self

    @property
    def faults(self) -> LinkFaults:
        return self._faults

    def set_faults(self, faults: LinkFaults) -> None:
        """New faults from the next packet on, each path's random sequence started again from the seed
        (so a run's faults count from when they were set, whatever traffic came before)."""
        if not isinstance(faults, LinkFaults):
            raise LinkFaultError(f"faults: expected LinkFaults, got {faults!r}", "faults")
        with self._lock:
            self._faults = faults
            self._rngs = {path: path_rng(self._seed, path) for path in _PATH_DIRECTION}

    def handed_on(self, direction: str, taken: int, timeout_s: float) -> tuple[int, int]:
        """``(passed, taken)``: the packets handed on in ``direction`` and those taken in, once the
        proxy has taken in ``taken`` of them and handed on or lost every packet due by now (those
        it delays, or holds for reordering, are still in flight). Without this a caller that has
        just sent a packet reads ``passed`` before the proxy's thread took it. It waits
        ``timeout_s`` (wall seconds) at most, as where a socket closed with packets queued
        dropped them, and not at all once the proxy's thread has stopped."""

        def settled() -> bool:
            if self._failure is not None or self._thread is None or not self._thread.is_alive():
                return True  # nothing more will come: close() says why
            if self._taken[direction] < taken or any(self._in_hand.values()):
                return False
            now = time.monotonic()
            return (not (self._heap and self._heap[0][0] <= now)
                    and not any(held is not None and held.until_s <= now for held in self._held.values()))

        with self._changed:
            self._changed.wait_for(settled, timeout_s)
            return self._counts[direction]["passed"], self._taken[direction]

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(*(DirectionStats(**{f.name: self._counts[d][f.name] for f in fields(DirectionStats)})
                                for d in DIRECTIONS))

    def close(self) -> None:
        """Stop the thread and close every socket; raises if the thread had failed."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                raise RuntimeError(f"the link proxy's thread did not stop within {_JOIN_TIMEOUT_S} s")
        self._release()
        if self._failure is not None:
            raise RuntimeError(f"the link proxy failed: {self._failure!r}") from self._failure

    def __enter__(self) -> "LinkProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self) -> None:
        with self._lock:
            in_flight = [_PATH_DIRECTION[path] for _due, _n, path, _route, _packet in self._heap]
            in_flight += [_PATH_DIRECTION[path] for path, held in self._held.items() if held
                          for _ in held.packets]
            for direction in in_flight:
                self._counts[direction]["undeliverable"] += 1
            self._heap.clear()
            self._held = {path: None for path in _PATH_DIRECTION}
        for sock in [*self._peers.values(), getattr(self, "_front_cmd", None), getattr(self, "_front_tm", None),
                     getattr(self, "_back_tm", None)]:
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        self._peers.clear()
        self._peer_of.clear()
        self._ctx.term()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # the pipe is full (the thread is awake anyway) or closed

    # --- the proxy's thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            poller = zmq.Poller()
            for item in (self._wake_r, self._front_cmd, self._front_tm, self._back_tm):
                poller.register(item, zmq.POLLIN)
            self._poller = poller
            while not self._stopping:
                ready = dict(poller.poll(self._timeout_ms()))
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
                if self._stopping:
                    break
                if self._front_cmd in ready:
                    self._take_commands()
                if self._front_tm in ready:
                    self._take_subscriptions()
                if self._back_tm in ready:
                    for packet in _drain(self._back_tm):
                        self._offer(_STREAM, None, packet)
                for sock, peer in list(self._peer_of.items()):
                    if sock in ready:
                        for packet in _drain(sock):
                            self._offer(_REPLIES, peer, packet)
                self._release_due(time.monotonic())
        except BaseException as exc:  # kept for close() to raise: a proxy that died must not look like LOS
            with self._changed:
                self._failure = exc
                self._changed.notify_all()  # nobody waits on a thread that has stopped
        finally:
            for sock in self._peers.values():
                sock.close(linger=0)

    def _timeout_ms(self) -> int | None:
        """How long the poll may wait: until the next delayed or held packet is due; None: for input."""
        with self._lock:
            due = [self._heap[0][0]] if self._heap else []
            due += [held.until_s for held in self._held.values() if held is not None]
        if not due:
            return None
        return max(0, math.ceil((min(due) - time.monotonic()) * 1000.0))

    def _take_commands(self) -> None:
        for _ in range(_MAX_DRAIN):
            try:
                frames = self._front_cmd.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:  # a ground DEALER sends one packet: identity + packet
                with self._lock:
                    self._counts[UP]["undeliverable"] += 1
                continue
            self._offer(_COMMANDS, frames[0], frames[1])

    def _take_subscriptions(self) -> None:
        """Count the front's subscribers; the proxy takes everything upstream anyway. A console's presence
        topic (flight/link/zmq_link.py) is not a subscriber: no packet matches it."""
        for msg in _drain(self._front_tm):
            kind, topic = msg[:1], msg[1:]
            if topic.startswith(PRESENCE_PREFIX):
                continue
            if kind == b"\x01":
                self._subscribers += 1
            elif kind == b"\x00":
                self._subscribers = max(0, self._subscribers - 1)

    def _gate_open(self) -> bool:
        return True if self._gate is None else bool(self._gate())

    def _offer(self, path: str, route: bytes | None, packet: bytes) -> None:
        """A packet arrived on ``path``: decide its faults, then drop it, hold it or schedule it."""
        direction = _PATH_DIRECTION[path]
        now = time.monotonic()
        link_up = self._gate_open()  # outside the lock: the gate is the caller's code
        with self._lock:
            self._taken[direction] += 1
            self._changed.notify_all()
            faults = getattr(self._faults, direction)
            d = decide(self._rngs[path], faults, len(packet))  # drawn for every packet, so the gate moves no fault
            counts = self._counts[direction]
            if not link_up:
                counts["los_dropped"] += 1
                return
            if d.drop:
                counts["dropped"] += 1
                return
            if d.corrupt_bit is not None:
                packet = flip_bit(packet, d.corrupt_bit)
                counts["corrupted"] += 1
            copies = [packet, packet] if d.duplicate else [packet]
            counts["duplicated"] += d.duplicate
            held = self._held[path]
            if d.hold and held is None:
                self._held[path] = _Held(copies, route, now + REORDER_HOLD_MAX_S)
                return
            due = now + d.delay_s
            for copy in copies:
                heapq.heappush(self._heap, (due, next(self._order), path, route, copy))
            if held is not None:  # overtaken: the held packet goes out right after this one
                self._held[path] = None
                counts["reordered"] += 1
                for copy in held.packets:
                    heapq.heappush(self._heap, (due, next(self._order), path, held.route, copy))

    def _release_due(self, now: float) -> None:
        out: list[tuple[str, bytes | None, bytes]] = []
        with self._lock:
            for path, held in self._held.items():
                if held is not None and held.until_s <= now:  # nothing overtook it: late, not reordered
                    self._held[path] = None
                    out += [(path, held.route, packet) for packet in held.packets]
            while self._heap and self._heap[0][0] <= now:
                _due, _n, path, route, packet = heapq.heappop(self._heap)
                out.append((path, route, packet))
            for path, _route, _packet in out:
                self._in_hand[_PATH_DIRECTION[path]] += 1
        for i, (path, route, packet) in enumerate(out):
            try:
                self._deliver(path, route, packet)
            except BaseException:
                with self._lock:  # the thread dies: what it had in hand is counted where it ended
                    for later, _route, _packet in out[i:]:
                        self._in_hand[_PATH_DIRECTION[later]] -= 1
                        self._counts[_PATH_DIRECTION[later]]["undeliverable"] += 1
                    self._changed.notify_all()
                raise
            with self._lock:
                self._in_hand[_PATH_DIRECTION[path]] -= 1
                self._changed.notify_all()

    def _deliver(self, path: str, route: bytes | None, packet: bytes) -> None:
        direction = _PATH_DIRECTION[path]
        if not self._gate_open():  # the signal went while the packet was in flight
            self._count(direction, "los_dropped")
            return
        try:
            if path == _COMMANDS:
                self._dealer_for(route).send(packet, zmq.NOBLOCK)
            elif path == _REPLIES:
                self._front_cmd.send_multipart([route, packet], zmq.NOBLOCK)
            elif not self._publish(packet):
                self._count(direction, "undeliverable")  # taken by the others: passed as well, below
        except zmq.Again:
            self._count(direction, "undeliverable")
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:  # the console that asked has gone: anything else is a bug
                raise
            self._count(direction, "undeliverable")
            return
        self._count(direction, "passed")

    def _publish(self, packet: bytes) -> bool:
        """On the front's stream; False: a full subscriber lost it, the others got it. Raises zmq.Again
        when nobody took it (the one subscriber is full)."""
        try:
            self._front_tm.send(packet, zmq.NOBLOCK)
            return True
        except zmq.Again:
            if self._subscribers < 2:
                raise
        # NODROP refused it to all for one full queue: to the rest without NODROP, which drops it for that one alone
        self._front_tm.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            self._front_tm.send(packet, zmq.NOBLOCK)
        finally:
            self._front_tm.setsockopt(zmq.XPUB_NODROP, 1)
        return False

    def _count(self, direction: str, name: str) -> None:
        with self._lock:
            self._counts[direction][name] += 1

    def _dealer_for(self, peer: bytes) -> zmq.Socket:
        """The DEALER that speaks for ground peer ``peer``; the least recently used goes beyond MAX_PEERS."""
        sock = self._peers.get(peer)
        if sock is not None:
            self._peers.move_to_end(peer)
            return sock
        if len(self._peers) >= MAX_PEERS:
            _old, stale = self._peers.popitem(last=False)
            self._poller.unregister(stale)
            del self._peer_of[stale]
            lost = 0  # replies the agent sent it, not read yet: lost with it, counted (found in audit: uncounted)
            while batch := _drain(stale):  # bounded: the agent answers only what was sent through this DEALER
                lost += len(batch)
            stale.close(linger=0)
            if lost:
                with self._lock:
                    self._counts[DOWN]["undeliverable"] += lost
        sock = _socket(self._ctx, zmq.DEALER, self.back.cmd_endpoint)
        sock.connect(self.back.cmd_endpoint)
        self._peers[peer] = sock
        self._peer_of[sock] = peer
        self._poller.register(sock, zmq.POLLIN)
        return sock


def _drain(sock: zmq.Socket) -> list[bytes]:
    out = []
    for _ in range(_MAX_DRAIN):
        try:
            out.append(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return out


# --- the bench tool ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.link_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--front", required=True, help="link URL the ground connects to (bound here)")
    parser.add_argument("--back", required=True, help="the agent's link URL (connected to)")
    parser.add_argument("--direction", choices=("both", UP, DOWN), default="both",
                        help="which way the faults apply (default both)")
    for name in PROBABILITIES:
        parser.add_argument(f"--{name}", type=float, default=0.0, metavar="P", help=f"{name} probability, 0..1")
    for name in DURATIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=0.0, metavar="S",
                            help=f"{name.removesuffix('_s')}, wall-clock seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        shared = _shared_endpoint(_zmq_config(args.front, "front"), _zmq_config(args.back, "back"))
        if shared is not None:  # before the signals are blocked: a usage error, said as one line
            print(f"link proxy: --front {args.front} and --back {args.back} share {shared}: the proxy would talk to "
                  "itself; give the agent's link URL as --back and another address as --front", file=sys.stderr)
            return 2
        one = DirectionFaults(**{name: getattr(args, name) for name in PROBABILITIES + DURATIONS})
        none = DirectionFaults()
        faults = LinkFaults(one if args.direction != DOWN else none, one if args.direction != UP else none)
        # Signals blocked before the thread starts (it inherits the mask), taken here by sigwait: no sleep loop.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        proxy = LinkProxy(args.front, args.back, faults, seed=args.seed).start()
    except (LinkFaultError, LinkConfigError, OSError) as exc:
        print(f"link proxy: {exc}", file=sys.stderr)
        return 2
    print(f"link proxy: {args.front} -> {args.back}, faults {json.dumps(faults.as_dict())}; Ctrl-C stops it",
          file=sys.stderr)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    proxy.close()
    print(json.dumps(proxy.stats().as_dict()))
    return 0


__all__ = ["DOWN", "Decision", "DirectionFaults", "DirectionStats", "LinkFaultError", "LinkFaults", "LinkProxy",
           "ProxyStats", "UP", "decide", "flip_bit", "path_rng"]


if __name__ == "__main__":
    sys.exit(main())
