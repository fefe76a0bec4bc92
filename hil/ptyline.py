"""A null-modem cable made of pseudo-terminals, with a hand on the wire, for serial tests.

Each end is a real ``/dev/pts/N`` that pyserial opens exactly as it opens ``/dev/ttyTHS1``
(termios, exclusive lock, non-blocking descriptor), so the serial link is tested on its
flight code path. A background thread copies bytes between the two pty masters and can
damage them on the way: ``faults`` per direction are functions ``bytes -> bytes`` applied
to every chunk (see :class:`StreamFaults` and :class:`RandomNoise`), ``inject()`` puts
garbage on the line now, ``pause()`` stops the cable carrying anything (a peer that does
not read), and ``unplug()``/``replug()`` make one end vanish and come back like a USB
adapter (its ``/dev/pts`` path disappears; ``a_link``/``b_link`` are stable symlinks to
the current path, as ``/dev/serial/by-id`` names are).

The cable is lossless and applies back-pressure (a full end stops the copying), unless a
fault or an unplugged end says otherwise. A pty carries bytes as fast as they come; with
``rate_bps`` the cable carries at most that many bytes a second each way, as a UART at
``baud`` does (``rate_bps = baud / 10``: a start and a stop bit per byte), bursting no more
than a 64-byte FIFO's worth beyond it.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import tempfile
import threading
import time
import tty
from typing import Callable, Iterable

Fault = Callable[[bytes], bytes]

A_TO_B = "a->b"
B_TO_A = "b->a"
_DIRECTIONS = {A_TO_B: ("a", "b"), B_TO_A: ("b", "a")}
_PENDING_MAX_BYTES = 4096  # bytes held in the cable per direction before it stops reading
_FIFO_BYTES = 64  # a UART's FIFO: what a rate-limited line may carry at once (it also absorbs this
#                   thread's own wake-up jitter, some 5 ms at 115200 baud, without losing line time)


class StreamFaults:
    """Damage at fixed offsets of one direction's stream, whatever the chunking.

    Offsets count the bytes that entered the cable (0 = first byte ever sent that way).
    ``flip``: offset -> XOR mask; ``drop``: offsets removed; ``insert``: offset -> bytes
    put on the line before that byte. ``damaged`` lists the offsets touched so far.
    """

    def __init__(
        self,
        flip: dict[int, int] | None = None,
        drop: Iterable[int] = (),
        insert: dict[int, bytes] | None = None,
    ):
        self.flip = dict(flip or {})
        self.drop = set(drop)
        self.insert = dict(insert or {})
        self.position = 0
        self.damaged: list[int] = []

    def __call__(self, chunk: bytes) -> bytes:
        start, end = self.position, self.position + len(chunk)
        self.position = end
        if not any(start <= k < end for k in (*self.flip, *self.drop, *self.insert)):
            return chunk
        out = bytearray()
        for offset in range(start, end):
            byte = chunk[offset - start]
            if offset in self.insert:
                out += self.insert[offset]
                self.damaged.append(offset)
            if offset in self.drop:
                self.damaged.append(offset)
                continue
            if offset in self.flip:
                byte ^= self.flip[offset]
                self.damaged.append(offset)
            out.append(byte)
        return bytes(out)


class RandomNoise:
    """Flips one random bit in a byte with probability ``rate`` (seeded, so repeatable)."""

    def __init__(self, rate: float, seed: int = 1):
        self.rate = rate
        self.rng = random.Random(seed)
        self.position = 0
        self.damaged: list[int] = []  # stream offsets of the flipped bytes

    def __call__(self, chunk: bytes) -> bytes:
        out = bytearray(chunk)
        for i in range(len(out)):
            if self.rng.random() < self.rate:
                out[i] ^= 1 << self.rng.randrange(8)
                self.damaged.append(self.position + i)
        self.position += len(out)
        return bytes(out)


class _End:
    """One connector: the pty pair, the slave kept open so the pty lives between programs."""

    def __init__(self, link_path: str):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no byte translated, echoed or taken as a signal
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.link_path = link_path
        tmp = link_path + ".new"
        os.symlink(self.path, tmp)
        os.replace(tmp, link_path)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self.link_path)
        except FileNotFoundError:
            pass


class PtyLine:
    """Two pty ends joined by a copying thread; see the module docstring."""

    def __init__(self, a_to_b: Fault | None = None, b_to_a: Fault | None = None, rate_bps: float | None = None):
        if rate_bps is not None and not rate_bps > 0:
            raise ValueError(f"rate_bps must be positive, got {rate_bps}")
        self.rate_bps = rate_bps
        self._tokens = {A_TO_B: 0.0, B_TO_A: 0.0}
        self._tokens_at = time.monotonic()
        self._dir = tempfile.mkdtemp(prefix="sunlit-pty-")
        self._lock = threading.Lock()
        self._ends: dict[str, _End | None] = {
            "a": _End(os.path.join(self._dir, "a")),
            "b": _End(os.path.join(self._dir, "b")),
        }
        self.faults: dict[str, Fault | None] = {A_TO_B: a_to_b, B_TO_A: b_to_a}
        self.moved_bytes = {A_TO_B: 0, B_TO_A: 0}  # delivered to the far end
        self.lost_bytes = {A_TO_B: 0, B_TO_A: 0}  # thrown away because the far end was unplugged
        self._pending = {A_TO_B: bytearray(), B_TO_A: bytearray()}
        self._paused = False
        self._stopping = False
        self._requests: list[tuple[str, threading.Event]] = []  # ends to unplug, done when closed
        # Why the copying thread stopped, if it failed (a fault function that raised): close() and unplug() raise it
        # (found in audit: the line went dead in silence, so a test saw a link fault that was the harness's).
        self._failure: BaseException | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._run, name="pty-line", daemon=True)
        self._thread.start()

    # --- the ends ------------------------------------------------------------------------

    @property
    def a_path(self) -> str:
        return self._end("a").path

    @property
    def b_path(self) -> str:
        return self._end("b").path

    @property
    def a_link(self) -> str:
        return os.path.join(self._dir, "a")

    @property
    def b_link(self) -> str:
        return os.path.join(self._dir, "b")

    def _end(self, name: str) -> _End:
        end = self._ends[name]
        if end is None:
            raise RuntimeError(f"end {name} is unplugged")
        return end

    def unplug(self, name: str) -> None:
        """End ``name`` vanishes: its program sees EIO/hang-up and its path disappears.

        The copying thread closes the master itself, between two selects: a descriptor
        closed while another thread selects on it stays open in the kernel until that
        select returns, and the hang-up would come late.
        """
        done = threading.Event()
        with self._lock:
            self._requests.append((name, done))
        self._wake()
        deadline = time.monotonic() + 5.0
        while not done.wait(timeout=0.05):
            if self._failure is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                self._raise_failure()
                raise RuntimeError(f"the copying thread did not unplug end {name}")

    def replug(self, name: str) -> None:
        """End ``name`` comes back as a new /dev/pts, reachable at the same link path."""
        with self._lock:
            if self._ends[name] is None:
                self._ends[name] = _End(os.path.join(self._dir, name))
        self._wake()

    # --- the wire --------------------------------------------------------------------------

    def set_fault(self, direction: str, fault: Fault | None) -> None:
        with self._lock:
            self.faults[direction] = fault

    def inject(self, direction: str, data: bytes) -> None:
        """Put ``data`` on the line now, between whatever the sender has already sent and what follows."""
        with self._lock:
            self._pending[direction] += data
        self._wake()

    def pause(self) -> None:
        """Stop carrying bytes: the sender's buffers fill as if the peer never read."""
        with self._lock:
            self._paused = True
        self._wake()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
        self._wake()

    def close(self) -> None:
        """Stop the thread, close both ends; raises if the thread had failed (what crossed the line after is lost)."""
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(timeout=5)
        for name in ("a", "b"):
            end, self._ends[name] = self._ends[name], None
            if end is not None:
                end.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)
        self._raise_failure()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None  # raised once
        if failure is not None:
            raise RuntimeError(f"the pty line's copying thread failed: {failure!r}") from failure

    def __enter__(self) -> "PtyLine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the copying thread -------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # closing, or the pipe is full: the thread is awake anyway

    def _run(self) -> None:
        try:
            self._carry()
        except BaseException as exc:  # kept for close() to raise: a line that died must not look like a quiet peer
            self._failure = exc

    def _carry(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                for name, done in self._requests:
                    end, self._ends[name] = self._ends[name], None
                    if end is not None:
                        end.close()
                    done.set()
                self._requests.clear()
                readers, writers = [self._wake_r], []
                timeout = 0.1
                self._refill()
                for direction, (src, dst) in _DIRECTIONS.items():
                    src_end, dst_end = self._ends[src], self._ends[dst]
                    if self._paused:
                        continue
                    if src_end is not None and len(self._pending[direction]) < _PENDING_MAX_BYTES:
                        readers.append(src_end.master)
                    if self._pending[direction] and dst_end is not None:
                        if self.rate_bps is None or self._tokens[direction] >= 1.0:
                            writers.append(dst_end.master)
                        else:  # the line is busy with the bytes before: wake when the next may go
                            timeout = min(timeout, (1.0 - self._tokens[direction]) / self.rate_bps)
            try:
                readable, _writable, _ = select.select(readers, writers, [], timeout)
            except (OSError, ValueError):
                continue  # an end was closed under us; the next round sees the new state
            with self._lock:
                if self._wake_r in readable:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
                if self._paused or self._stopping:
                    continue
                self._refill()
                for direction, (src, dst) in _DIRECTIONS.items():
                    self._copy(direction, self._ends[src], self._ends[dst], readable)

    def _copy(self, direction: str, src: _End | None, dst: _End | None, readable: list) -> None:
        """One step of one direction; readiness may be stale, so every call tolerates EAGAIN."""
        pending = self._pending[direction]
        if src is not None and src.master in readable:
            try:
                chunk = os.read(src.master, _PENDING_MAX_BYTES)
            except OSError:
                chunk = b""  # EAGAIN, or EIO while no program holds the port: nothing to carry
            fault = self.faults[direction]
            if chunk and fault is not None:
                chunk = fault(chunk)
            pending += chunk
        if not pending:
            return
        if dst is None:
            self.lost_bytes[direction] += len(pending)
            pending.clear()
            return
        allowed = len(pending) if self.rate_bps is None else int(self._tokens[direction])
        if allowed <= 0:
            return
        try:
            n = os.write(dst.master, bytes(pending[:allowed]))
        except OSError:
            return  # full (EAGAIN): back-pressure, the select on writability says when to retry
        self.moved_bytes[direction] += n
        if self.rate_bps is not None:
            self._tokens[direction] -= n
        del pending[:n]

    def _refill(self) -> None:
        """The line's allowance, bytes per direction, at ``rate_bps`` (a FIFO's worth at most)."""
        now = time.monotonic()
        if self.rate_bps is not None:
            for direction in self._tokens:
                self._tokens[direction] = min(float(_FIFO_BYTES), self._tokens[direction]
                                              + (now - self._tokens_at) * self.rate_bps)
        self._tokens_at = now


__all__ = ["A_TO_B", "B_TO_A", "PtyLine", "RandomNoise", "StreamFaults"]
