"""A link inside one process: the agent's end and the ground's end of a pair of bounded queues.

For building an agent in a test or a tool without sockets: ``pair = MemoryLink()``, give
``pair.flight`` to the agent and ``pair.ground`` to a :class:`ground.client.GroundClient`.
It keeps the rules of the real links: queues are bounded and a full one drops and counts, a
reply goes to the requester, the stream goes to the ground. There is nothing to poll; set
``serve`` to something that runs the agent (``agent.step(0)``) and the ground's end calls
it each time it looks for telemetry, so a client's ``send`` gets its answer as on a real link.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from flight.link.definitions import LinkKind
from flight.link.interface import DEFAULT_QUEUE_PACKETS, FlightLink, GroundLink, Inbound, LinkStats

_PEER = "ground"  # the one requester a memory link has


class _Queue:
    def __init__(self, bound: int):
        self.items: deque[Any] = deque()
        self.bound = bound

    def put(self, item: Any, stats: LinkStats) -> bool:
        if len(self.items) >= self.bound:
            stats.tx_dropped += 1
            return False
        self.items.append(item)
        stats.tx_packets += 1
        stats.tx_bytes += len(item[0] if isinstance(item, tuple) else item)
        return True

    def take(self, stats: LinkStats) -> list[Any]:
        """Everything queued, counted as received by the end that ``stats`` belongs to."""
        out = list(self.items)
        self.items.clear()
        stats.rx_packets += len(out)
        stats.rx_bytes += sum(len(item[0] if isinstance(item, tuple) else item) for item in out)
        return out


class MemoryFlightLink(FlightLink):
    kind = LinkKind.MEMORY
    # One peer and one queue to it, as on a serial line (found in audit: every report went twice, the stream's
    # copy and a reply's, filling the queue twice as fast and counted by the ground as duplicates; LNK-009)
    reply_shares_queue = True

    def __init__(self, pair: "MemoryLink"):
        self._pair = pair
        self.stats = LinkStats()

    def pollables(self) -> list[Any]:
        return []

    def receive(self) -> list[Inbound]:
        return [Inbound(p, _PEER) for p in self._pair.to_flight.take(self.stats)]

    def reply(self, peer: Any, packet: bytes) -> bool:
        if peer != _PEER:
            self.stats.tx_unroutable += 1
            return False
        return self._pair.to_ground.put((packet, False), self.stats)

    def publish(self, packet: bytes) -> bool:
        return self._pair.to_ground.put((packet, True), self.stats)

    def stream_reaches(self, peer: Any) -> bool:
        return peer == _PEER  # the stream goes to the one requester there is

    def close(self) -> None:
        pass


class MemoryGroundLink(GroundLink):
    kind = LinkKind.MEMORY

    def __init__(self, pair: "MemoryLink"):
        self._pair = pair
        self.stats = LinkStats()

    def pollables(self) -> list[Any]:
        return []

    def send(self, packet: bytes) -> bool:
        return self._pair.to_flight.put(packet, self.stats)

    def receive(self) -> list[bytes]:
        return [packet for packet, _stream in self.receive_tagged()]

    def receive_tagged(self) -> list[tuple[bytes, bool]]:
        if self._pair.serve is not None:
            self._pair.serve()
        return self._pair.to_ground.take(self.stats)

    def close(self) -> None:
        pass


class MemoryLink:
    """Both ends of one in-process link, each direction bounded at ``queue_packets``."""

    def __init__(self, queue_packets: int = DEFAULT_QUEUE_PACKETS):
        self.to_flight = _Queue(queue_packets)
        self.to_ground = _Queue(queue_packets)
        self.flight = MemoryFlightLink(self)
        self.ground = MemoryGroundLink(self)
        self.serve: Callable[[], None] | None = None  # runs the agent's side before the ground reads
