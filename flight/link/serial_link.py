"""The serial link: COBS frames (flight.link.framing) on a UART or USB serial adapter.

One line carries both directions, so the flight end and the ground end are the same
machine with different method names: :class:`_SerialEnd` does the work.

Everything is non-blocking. The port is opened by pyserial (termios, exclusive lock,
baud), but bytes move with ``os.read``/``os.write`` on its non-blocking descriptor:
pyserial's own ``write()`` with ``write_timeout=0`` spins while the kernel buffer is
full (it retries EAGAIN in a loop), and a flight loop must never spin.

Output goes through a bounded queue of ``config.queue_packets`` frames; a full queue
refuses the packet and counts it in ``tx_dropped``. ``flush()`` writes what the kernel
takes and keeps the rest, partial frames included.

If the device goes away (a USB adapter unplugged, EIO on a UART), the link closes the
port, counts the error in ``device_errors`` and tries to reopen it from ``receive()`` or
``flush()`` at most once every :data:`REOPEN_INTERVAL_S`; output keeps queueing (and
dropping when full) meanwhile. A frame cut short by the loss is sent again whole after
the reopen; the peer drops the fragment at the next frame's leading 0x00. While closed,
``pollables()`` is empty, so the owner's loop must call ``receive()`` on its timers
(housekeeping does) for the reopen to happen.

``rx_bytes``/``tx_bytes`` in :class:`LinkStats` count packet bytes, as every link does;
the bytes on the wire (framing, noise) are in ``rx_wire_bytes``/``tx_wire_bytes``.
"""

from __future__ import annotations

import collections
import errno
import itertools
import os
import select
import termios
from time import monotonic
from typing import Any

import serial

from flight.link.framing import Deframer, encode_frame
from flight.link.definitions import LinkKind
from flight.link.interface import FlightLink, GroundLink, Inbound, LinkConfig, LinkStats, Refusals, Refused

REOPEN_INTERVAL_S = 1.0  # least time between two attempts to reopen a lost device
READ_CHUNK_BYTES = 65536  # one os.read; a UART at 115200 baud fills this in ~5.7 s
MAX_READ_PER_CALL_BYTES = 4 * READ_CHUNK_BYTES  # bound one receive() so a flood cannot starve the loop
WRITE_CHUNK_BYTES = 4096  # frames joined into one os.write, to save system calls on small packets
# What a failing device raises: pyserial lets termios.error (not an OSError) through from tcsetattr and tcflush,
# as an adapter dropping off the bus during a reopen gives (an audit: it escaped the agent's loop)
DEVICE_ERRORS = (OSError, ValueError, termios.error)


class _SerialEnd:
    """Port, output queue, deframer and counters shared by both ends of the line."""

    kind = LinkKind.SERIAL

    def __init__(self, config: LinkConfig, wait_for_device: bool = False):
        """``wait_for_device``: a device that does not open now is counted and tried again, as a lost one is
        (the agent, and a ground server of several spacecraft); else its error is raised, as an OSError."""
        if not config.device:
            raise ValueError(f"{config.url}: a serial link needs a device path")
        if config.queue_packets < 1:
            raise ValueError(f"{config.url}: queue must hold at least one packet, got {config.queue_packets}")
        self.config = config
        self.stats = LinkStats()
        # Each frame dropped is counted (rx_bad_frames) and kept with why, bounded, for the agent to say; the
        # one a reopen abandons too (it was in no count: the reset is outside receive()'s)
        self.refused = Refusals(self.stats)
        self.deframer = Deframer(on_drop=lambda why: self.refused.add(f"serial {why}"))
        self.rx_wire_bytes = 0
        self.tx_wire_bytes = 0
        self.last_error = ""
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()  # (frame, packet length)
        self._head_sent = 0  # bytes of the queue's first frame already written
        self._queued_bytes = 0  # bytes of frames in the queue, less what of the first is written
        self._closed = False  # close() was called: stay closed
        self._next_open_s = 0.0
        self._ser: serial.Serial | None = None
        try:
            self._open()
        except DEVICE_ERRORS as exc:
            if not wait_for_device:  # a wrong path at start-up is loud, and names it (found in audit: pyserial's
                # "Could not configure port: (25, 'Inappropriate ioctl for device')" for a path that is no tty did not)
                if isinstance(exc, OSError) and config.device in str(exc):
                    raise exc
                raise serial.SerialException(f"{config.device}: {exc}") from None
            self.stats.device_errors += 1
            self.last_error = f"open {config.device}: {exc}"
            self._next_open_s = monotonic() + REOPEN_INTERVAL_S

    @property
    def device_errors(self) -> int:
        """Opens, reads and writes of the device that failed (in :class:`LinkStats`, so housekeeping has them)."""
        return self.stats.device_errors

    @property
    def reopens(self) -> int:
        return self.stats.reopens

    # --- port -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def _open(self) -> None:
        self._ser = serial.Serial(
            self.config.device, self.config.baud, timeout=0, write_timeout=0, exclusive=True
        )

    def _ensure_open(self) -> bool:
        """True if the port is usable, reopening a lost one when the back-off allows."""
        if self._ser is not None:
            return True
        if self._closed:
            return False
        now = monotonic()
        if now < self._next_open_s:
            return False
        self._next_open_s = now + REOPEN_INTERVAL_S
        try:
            self._open()
        except DEVICE_ERRORS as exc:  # SerialException is an OSError
            self.stats.device_errors += 1
            self.last_error = f"reopen {self.config.device}: {exc}"
            return False
        self.stats.reopens += 1
        skipped0 = self.deframer.skipped_bytes
        self.deframer.reset()  # a frame begun before the loss can never be finished
        # its bytes thrown away too (found in audit: counted a bad frame, they were in no rx_skipped_bytes)
        self.stats.rx_skipped_bytes += self.deframer.skipped_bytes - skipped0
        return True

    def _lost(self, exc: Exception, during: str) -> None:
        """The device failed: count it, close it, retry later; queued output waits."""
        self.stats.device_errors += 1
        self.last_error = f"{during} {self.config.device}: {exc}"
        self._release()
        self._next_open_s = monotonic() + REOPEN_INTERVAL_S
        if self._queue and self._head_sent >= len(self._queue[0][0]) - 1:
            self._consume(1)  # only the closing 0x00 is missing: the next frame's opening one ends it
        self._queued_bytes += self._head_sent
        self._head_sent = 0  # the peer drops a fragment at the next 0x00; send the frame again whole

    def _release(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except DEVICE_ERRORS:
                pass  # the device is already gone; the descriptor is closed either way

    def close(self) -> None:
        self._closed = True
        self._release()

    def take_refused(self) -> Refused:
        return self.refused.take()

    def pollables(self) -> list[Any]:
        """The port's file descriptor (zmq.Poller takes raw fds), or nothing while it is lost."""
        return [self._ser.fileno()] if self._ser is not None else []

    def write_pollables(self) -> list[Any]:
        return self.pollables()

    # --- input --------------------------------------------------------------------------------

    def _receive_packets(self) -> list[bytes]:
        if not self._ensure_open():
            return []
        packets: list[bytes] = []
        read_bytes = 0
        skipped0 = self.deframer.skipped_bytes
        while read_bytes < MAX_READ_PER_CALL_BYTES and self._ser is not None:
            try:
                data = self._read_available(READ_CHUNK_BYTES)
            except DEVICE_ERRORS as exc:
                self._lost(exc, "read")
                break
            if not data:
                break
            read_bytes += len(data)
            packets.extend(self.deframer.feed(data))
        self.rx_wire_bytes += read_bytes
        self.stats.rx_skipped_bytes += self.deframer.skipped_bytes - skipped0
        self.stats.rx_packets += len(packets)
        self.stats.rx_bytes += sum(map(len, packets))
        return packets

    def _read_available(self, size: int) -> bytes:
        """Up to ``size`` bytes the port holds now, b"" if none. poll(0) and one os.read, not pyserial's
        read(): its select() refuses a descriptor above 1023, so in a process with many files open (a ground
        server and its clients) every read was a device error and nothing was ever received (found in audit).
        The port's VMIN=0 read returns b"" when empty, so "readable but no data" is a vanished device, as
        pyserial says it."""
        fd = self._ser.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        events = poller.poll(0)
        if not events:
            return b""
        if events[0][1] & select.POLLNVAL:
            raise OSError(errno.EBADF, "descriptor no longer open")
        try:
            data = os.read(fd, size)
        except (BlockingIOError, InterruptedError):
            return b""
        if not data:
            raise serial.SerialException("device reports readiness to read but returned no data (device disconnected?)")
        return data

    # --- output -------------------------------------------------------------------------------

    def _enqueue(self, packet: bytes) -> bool:
        frame = encode_frame(packet)
        if len(self._queue) >= self.config.queue_packets:
            self.flush()  # make room if the line can take bytes now
            if len(self._queue) >= self.config.queue_packets:
                self.stats.tx_dropped += 1
                return False
        self._queue.append((frame, len(packet)))
        self._queued_bytes += len(frame)
        self.flush()
        return True

    def backlog_bytes(self) -> int:
        """Bytes waiting in this end's queue for the line (not those in the kernel's buffer)."""
        return self._queued_bytes

    def line_rate_bps(self) -> float:
        """What the line carries, bytes per second: 8 data bits, a start and a stop bit each."""
        return self.config.baud / 10.0

    def wants_write(self) -> bool:
        return bool(self._queue)

    @property
    def queued_packets(self) -> int:
        return len(self._queue)

    def flush(self) -> None:
        """Write queued frames until the kernel's buffer is full; never blocks."""
        if not self._queue or not self._ensure_open():
            return
        fd = self._ser.fileno()
        while self._queue:
            chunk = self._next_chunk()
            try:
                n = os.write(fd, chunk)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(exc, "write")
                return
            self.tx_wire_bytes += n
            self._consume(n)
            if n < len(chunk):
                return  # the kernel took what it could; POLLOUT says when to go on

    def _next_chunk(self) -> bytes:
        """The unsent rest of the first frame, joined with following frames up to WRITE_CHUNK_BYTES."""
        first = self._queue[0][0]
        parts = [first[self._head_sent :]] if self._head_sent else [first]
        size = len(parts[0])
        for frame, _ in itertools.islice(self._queue, 1, None):
            if size + len(frame) > WRITE_CHUNK_BYTES:
                break
            parts.append(frame)
            size += len(frame)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _consume(self, n: int) -> None:
        """Account ``n`` written bytes against the queue: whole frames leave it, counted."""
        while n and self._queue:
            frame, packet_len = self._queue[0]
            left = len(frame) - self._head_sent
            if n < left:
                self._head_sent += n
                self._queued_bytes -= n
                return
            n -= left
            self._queued_bytes -= left
            self._queue.popleft()
            self._head_sent = 0
            self.stats.tx_packets += 1
            self.stats.tx_bytes += packet_len

    def _forget_queue(self) -> None:
        """Drop every queued frame not yet begun, counted; a begun one finishes so the line stays framed."""
        keep = 1 if self._head_sent else 0
        while len(self._queue) > keep:
            frame, _ = self._queue.pop()
            self._queued_bytes -= len(frame)
            self.stats.tx_dropped += 1


class SerialFlightLink(_SerialEnd, FlightLink):
    """The agent's end of a serial line: commands in, replies and telemetry out."""

    reply_shares_queue = True

    def receive(self) -> list[Inbound]:
        return [Inbound(p) for p in self._receive_packets()]

    def publish(self, packet: bytes) -> bool:
        return self._enqueue(packet)

    def reply(self, peer: Any, packet: bytes) -> bool:
        return self._enqueue(packet)  # one line, one peer: a reply is just the next packet out

    def stream_reaches(self, peer: Any) -> bool:
        return True  # one line, one peer: what is published reaches the sender


class SerialGroundLink(_SerialEnd, GroundLink):
    """A console's end of a serial line: commands out, all telemetry in."""

    def receive(self) -> list[bytes]:
        return self._receive_packets()

    def send(self, packet: bytes) -> bool:
        return self._enqueue(packet)

    def reset_commands(self) -> None:
        """Drop queued, unsent commands (counted in tx_dropped) before a retry sends them again.

        The line itself is not reopened: it is healthy, and telemetry shares it.
        """
        self._forget_queue()


__all__ = ["DEVICE_ERRORS", "REOPEN_INTERVAL_S", "SerialFlightLink", "SerialGroundLink"]
