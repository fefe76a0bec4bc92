"""What every link is: the interface the agent and the console use, its URL and its counters.

One interface over every link, so the agent and the console never ask which one they have.

Two ends with different jobs:

- :class:`FlightLink` (the agent): receives telecommands, answers the peer that sent one,
  and publishes the telemetry stream.
- :class:`GroundLink` (a console, the archive, the HIL harness): sends telecommands and
  receives every telemetry packet, replies and stream alike.

Both are non-blocking: ``receive()`` drains what has arrived, ``pollables()`` gives what
a ``zmq.Poller`` can wait on (ZeroMQ sockets or plain file descriptors), so the agent's
loop waits on its links and its timers together instead of sleeping.

Links are named by URL:

- ``zmq://HOST:PORT`` TCP: commands on PORT, telemetry on PORT+1 (an IPv6 HOST in brackets, ``zmq://[::1]:5550``);
- ``zmq+ipc:///run/sunlit/link``: the same over Unix sockets ``…link.cmd`` and ``…link.tm``;
- ``serial:///dev/ttyUSB0?baud=115200``: COBS frames on a serial line, both directions.

Keys never go into a URL: a ZeroMQ link's CurveZMQ keys travel beside it in
:class:`CurveKeys` (``LinkConfig.curve``; loaded by :mod:`flight.link.curve`).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flight.link.definitions import LinkKind

DEFAULT_BAUD = 115_200
MIN_BAUD, MAX_BAUD = 300, 12_000_000  # the slowest standard rate; the fastest USB serial adapters
DEFAULT_QUEUE_PACKETS = 1000
MAX_QUEUE_PACKETS = 1_000_000  # queue=N at most: a ZeroMQ high-water mark is a C int, and a serial queue is memory
IPC_PATH_MAX_BYTES = 107  # a Unix socket's path (sockaddr_un.sun_path less its NUL), ZeroMQ's IPC_PATH_MAX_LEN
_IPC_SUFFIXES = (".cmd", ".tm")


class LinkConfigError(ValueError):
    """A link URL that cannot be used; the message says which part and what would work."""


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ key material of one end of a ZeroMQ link (Z85 text, 40 bytes a key).

    The agent (a CURVE server) has ``allowed_dir``, the directory of its clients' public
    certificates (``*.key``) that the ZAP handler lets in; a ground end (a CURVE client) has
    ``server_public``, the agent's public key. The secret never shows in a repr."""

    public: bytes
    secret: bytes = field(repr=False)
    server_public: bytes | None = None  # a client: the agent's public key
    allowed_dir: Path | None = None  # a server: the ZAP allow-list, a directory of *.key certificates

    @property
    def is_server(self) -> bool:
        return self.server_public is None


@dataclass(frozen=True)
class LinkConfig:
    kind: LinkKind
    url: str
    cmd_endpoint: str = ""  # ZeroMQ endpoint of the agent's command socket
    tm_endpoint: str = ""  # ZeroMQ endpoint of the agent's telemetry socket
    device: str = ""  # serial device path
    baud: int = DEFAULT_BAUD
    queue_packets: int = DEFAULT_QUEUE_PACKETS  # bound of every outgoing queue
    curve: CurveKeys | None = None  # ZeroMQ only: CurveZMQ encryption and the ZAP allow-list; None: plain


def parse_link_url(url: str) -> LinkConfig:
    """Parse a link URL (see the module docstring); raise :class:`LinkConfigError` if unusable."""
    parts = urlsplit(url)
    # Blank values kept (found in audit: ?queue= and ?baud=, an unset shell variable, and a bare ?bogus were
    # dropped without a word, the defaults taken)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    try:
        queue = int(query.pop("queue", DEFAULT_QUEUE_PACKETS))
    except ValueError:
        raise LinkConfigError(f"{url}: queue must be a whole number of packets") from None
    if queue < 1:
        raise LinkConfigError(f"{url}: queue must hold at least one packet")
    if queue > MAX_QUEUE_PACKETS:  # found in audit: past a C int, an OverflowError as the link opened
        raise LinkConfigError(f"{url}: queue must hold at most {MAX_QUEUE_PACKETS} packets")
    if parts.scheme in ("zmq", "tcp"):
        host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            port = None
        if not host or port is None or not 1 <= port <= 65534:
            raise LinkConfigError(f"{url}: expected zmq://HOST:PORT with PORT in 1..65534 (telemetry uses PORT+1)")
        if query:
            raise LinkConfigError(f"{url}: unknown option {', '.join(query)} (zmq takes queue=N)")
        if parts.path not in ("", "/") or parts.fragment or parts.username is not None:
            # found in audit: zmq://HOST:PORT/path bound HOST:PORT, its path dropped without a word
            raise LinkConfigError(f"{url}: a zmq URL names a host and port only, zmq://HOST:PORT?queue=N: a path, "
                                  "user@ or #fragment names no socket (a Unix socket: zmq+ipc:///PATH)")
        if ":" in host:  # an IPv6 literal (urlsplit took its brackets off): ZeroMQ wants them back (found in audit:
            host = f"[{unquote(host)}]"  # tcp://::1:5550 bound nothing, "No such device")
        return LinkConfig(LinkKind.ZMQ, url, f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}", queue_packets=queue)
    if parts.scheme in ("zmq+ipc", "ipc"):
        path = parts.path
        if parts.netloc:  # found in audit: zmq+ipc://tmp/x was the socket /x, its "tmp" dropped without a word
            raise LinkConfigError(f"{url}: an ipc URL has three slashes and no host: zmq+ipc:///PATH")
        if not path:
            raise LinkConfigError(f"{url}: expected zmq+ipc:///PATH")
        if "#" in url:  # found in audit: zmq+ipc:///run/link#a and #b both bound /run/link.cmd, the rest dropped
            raise LinkConfigError(f"{url}: a # in a URL starts a fragment, no part of the socket's path: "
                                  "name the path without one")
        if query:
            raise LinkConfigError(f"{url}: unknown option {', '.join(query)} (zmq+ipc takes queue=N)")
        longest = len(path.encode()) + max(map(len, _IPC_SUFFIXES))
        if longest > IPC_PATH_MAX_BYTES:  # found in audit: ZeroMQ refused it only as the link opened (a traceback)
            raise LinkConfigError(f"{url}: the path is {len(path.encode())} bytes; with its {'/'.join(_IPC_SUFFIXES)} "
                                  f"it must fit a Unix socket's {IPC_PATH_MAX_BYTES}")
        return LinkConfig(LinkKind.ZMQ, url, f"ipc://{path}.cmd", f"ipc://{path}.tm", queue_packets=queue)
    if parts.scheme == "serial":
        device = parts.path
        if parts.netloc:
            raise LinkConfigError(f"{url}: a serial URL has three slashes and no host: serial:///dev/DEVICE?baud=N")
        if not device:
            raise LinkConfigError(f"{url}: expected serial:///dev/DEVICE?baud=N")
        if "#" in url:  # as for ipc: the device opened would not be the one the URL says
            raise LinkConfigError(f"{url}: a # in a URL starts a fragment, no part of the device's path: "
                                  "name the device without one")
        try:
            baud = int(query.pop("baud", DEFAULT_BAUD))
        except ValueError:
            raise LinkConfigError(f"{url}: baud must be a whole number") from None
        if not MIN_BAUD <= baud <= MAX_BAUD:  # pyserial overflowed past a C int (an audit), and 1 baud sends nothing
            raise LinkConfigError(f"{url}: baud {baud} is outside {MIN_BAUD}..{MAX_BAUD}")
        if query:
            raise LinkConfigError(f"{url}: unknown option {', '.join(query)} (serial takes baud=N, queue=N)")
        return LinkConfig(LinkKind.SERIAL, url, device=device, baud=baud, queue_packets=queue)
    raise LinkConfigError(f"{url}: unknown link scheme {parts.scheme!r}; use zmq://, zmq+ipc:// or serial://")


@dataclass
class LinkStats:
    """Counters every link keeps; they go into housekeeping, so nothing is lost silently."""

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_bad_frames: int = 0  # frames that failed framing or length checks before the packet codec
    rx_skipped_bytes: int = 0  # bytes thrown away while resynchronising
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # packets refused because an outgoing queue was full
    tx_unroutable: int = 0  # replies whose requester had gone (they still went out on the stream)
    rx_auth_refused: int = 0  # ZeroMQ with CURVE: handshakes refused (key not allowed, no or bad CURVE)
    device_errors: int = 0  # serial: opens, reads and writes the device failed (an adapter unplugged, EIO)
    reopens: int = 0  # serial: the device opened again after a loss

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for key in self.as_dict():
            setattr(self, key, 0)


REFUSED_KEPT = 8  # reasons a link keeps between two takes; a flood's others are counted, the last one kept
REFUSED_REASON_LEN = 160


@dataclass(frozen=True)
class Refused:
    """What a link refused before the packet codec since it was last asked: ``count`` frames (each also in
    ``rx_bad_frames``), the first of them with why in ``reasons``, and why the last one was refused."""

    reasons: tuple[str, ...] = ()
    count: int = 0
    last: str = ""


class Refusals:
    """Frames a link refused, with why, until its owner takes them (:meth:`FlightLink.take_refused`): bounded, the
    first :data:`REFUSED_KEPT` reasons and the last, so a flood of bad frames grows no memory (found in audit: they
    were counted in tc_bad_packets and never said). Each :meth:`add` counts one in ``stats.rx_bad_frames``."""

    def __init__(self, stats: LinkStats):
        self._stats = stats
        self._reasons: list[str] = []
        self._count = 0
        self._last = ""

    def add(self, reason: str) -> None:
        self._stats.rx_bad_frames += 1
        self._count += 1
        self._last = reason[:REFUSED_REASON_LEN]
        if len(self._reasons) < REFUSED_KEPT:
            self._reasons.append(self._last)

    def take(self) -> Refused:
        taken = Refused(tuple(self._reasons), self._count, self._last)
        self._reasons, self._count, self._last = [], 0, ""
        return taken


@dataclass(frozen=True)
class Inbound:
    """A packet as received, with whatever the link needs to answer its sender."""

    packet: bytes
    peer: Any = None


class FlightLink(abc.ABC):
    kind: LinkKind
    stats: LinkStats

    @abc.abstractmethod
    def pollables(self) -> list[Any]:
        """ZeroMQ sockets or file descriptors to wait on for input."""

    @abc.abstractmethod
    def receive(self) -> list[Inbound]:
        """Every packet that has arrived, without blocking."""

    def take_refused(self) -> Refused:
        """The frames refused before the packet codec since the last call (links that refuse none: nothing);
        the agent's link service says them as it says malformed packets."""
        return Refused()

    @abc.abstractmethod
    def reply(self, peer: Any, packet: bytes) -> bool:
        """Send ``packet`` to the sender of a command; False (and counted) if it was dropped."""

    @abc.abstractmethod
    def publish(self, packet: bytes) -> bool:
        """Put ``packet`` on the telemetry stream; False (and counted) if it was dropped."""

    def stream_reaches(self, peer: Any) -> bool:
        """True when the telemetry stream is known to reach the sender ``peer``, so a report
        published needs no copy of its own to that sender (one copy a report, not two)."""
        return False

    # True where a reply waits in the same outgoing queue as the stream (one line, one peer): a reply to a
    # report the stream's queue refused would be refused, and counted, again
    reply_shares_queue = False

    def flush(self) -> None:
        """Move queued output to the line; links that queue override this."""

    def backlog_bytes(self) -> int:
        """Bytes of output queued and not yet on the line (links without a queue of their own: 0)."""
        return 0

    def line_rate_bps(self) -> float | None:
        """Bytes per second the line carries, where the link knows it (a serial line); None otherwise."""
        return None

    def wants_write(self) -> bool:
        """True while output is queued, so the loop also waits for the line to take it."""
        return False

    def write_pollables(self) -> list[Any]:
        return []

    @abc.abstractmethod
    def close(self) -> None: ...


class GroundLink(abc.ABC):
    kind: LinkKind
    stats: LinkStats

    @abc.abstractmethod
    def pollables(self) -> list[Any]: ...

    @abc.abstractmethod
    def send(self, packet: bytes) -> bool:
        """Send a telecommand; False (and counted) if the queue to the link was full."""

    @abc.abstractmethod
    def receive(self) -> list[bytes]:
        """Every telemetry packet that has arrived (replies and stream), without blocking."""

    def receive_tagged(self) -> list[tuple[bytes, bool]]:
        """Like receive(), each packet with True if it came on the telemetry stream, False if it
        was a direct reply (a reply repeats a stream packet's sequence count, so gap counting
        must look at the stream alone). On a single line everything is the stream."""
        return [(packet, True) for packet in self.receive()]

    def reset_commands(self) -> None:
        """Forget queued commands and reconnect the command path (the Lazy Pirate step before a retry)."""

    def backlog_bytes(self) -> int:
        """Bytes of output queued and not yet on the line (links without a queue of their own: 0)."""
        return 0

    def line_rate_bps(self) -> float | None:
        """Bytes per second the line carries, where the link knows it (a serial line); None otherwise."""
        return None

    def flush(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...
