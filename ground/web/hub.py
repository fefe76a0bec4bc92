"""The web console's fan-out, free of sockets: per-browser queues, batches, push-lag arithmetic.

The link thread must never wait for a browser. Each browser gets a :class:`ClientQueue`
bounded in telemetry *points*; when it is full the oldest samples go and the count of what
went is carried in the next batch, so a slow page says "N points dropped" instead of
silently falling behind or holding up the link. Control messages (events, command stages,
alarms, status) are few and matter more: they have their own, larger bound.

Push lag (packet received by the server → drawn by the page) is measured with the page's
echo of each batch, NTP-style, so the two clocks need not agree; see :class:`LagTracker`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_QUEUE_POINTS = 20_000  # 20 s of telemetry at 1000 points/s: rides out a stalled tab, bounds memory
DEFAULT_QUEUE_CONTROL = 2_000  # events and command stages come at a few per second
LAG_WINDOW_MS = 10_000.0  # the status line's lag percentile covers the last 10 s


def json_safe(value: Any) -> Any:
    """A telemetry value as JSON can carry it: NaN and infinities as text, bytes as hex.

    JSON has no NaN (``eclipse_in_s`` is NaN with no eclipse ahead) and a browser's
    ``JSON.parse`` refuses Python's ``NaN`` literal, so non-finite floats travel as strings.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays from the archive
        return json_safe(value.tolist())
    return str(value)


@dataclass(frozen=True)
class Sample:
    """One housekeeping packet as received: its SID, packet time, values in the packet's
    channel order, and when the server took it in (monotonic ms)."""

    sid: int
    time_s: float
    values: tuple[Any, ...]
    recv_ms: float

    @property
    def points(self) -> int:
        return len(self.values)


@dataclass
class Batch:
    """What one flush takes out of a queue."""

    samples: list[Sample] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    dropped_points: int = 0
    dropped_control: int = 0

    @property
    def empty(self) -> bool:
        return not (self.samples or self.control or self.dropped_points or self.dropped_control)


class ClientQueue:
    """One browser's outgoing queue; ``put_*`` never blocks (beyond a short lock) and never fails.

    ``wake`` is called when the queue goes from drained to holding something, so the
    sender is woken once per batch, not once per packet (a cross-thread wake-up costs more
    than the append).
    """

    def __init__(
        self,
        wake: Callable[[], None] = lambda: None,
        max_points: int = DEFAULT_QUEUE_POINTS,
        max_control: int = DEFAULT_QUEUE_CONTROL,
    ):
        if max_points < 1 or max_control < 1:
            raise ValueError(f"queue bounds must be at least 1 (max_points={max_points}, max_control={max_control})")
        self.max_points = max_points
        self.max_control = max_control
        self._wake = wake
        self._lock = threading.Lock()
        self._samples: deque[Sample] = deque()
        self._points = 0
        self._control: deque[dict[str, Any]] = deque()
        self._dropped_points = 0
        self._dropped_control = 0
        self._armed = True  # the next put wakes the sender
        self._overflow_since: float | None = None  # monotonic s of the first drop since the last take
        self.dropped_points_total = 0
        self.dropped_control_total = 0

    def put_sample(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
            self._points += sample.points
            # Keep at least the newest sample even if it alone exceeds the bound.
            while self._points > self.max_points and len(self._samples) > 1:
                old = self._samples.popleft()
                self._points -= old.points
                self._dropped_points += old.points
                self.dropped_points_total += old.points
                if self._overflow_since is None:
                    self._overflow_since = time.monotonic()
            assert self._points >= 0 and (self._points <= self.max_points or len(self._samples) == 1)
            wake, self._armed = self._armed, False
        if wake:
            self._wake()

    def put_control(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._control.append(message)
            if len(self._control) > self.max_control:
                self._control.popleft()
                self._dropped_control += 1
                self.dropped_control_total += 1
                if self._overflow_since is None:
                    self._overflow_since = time.monotonic()
            wake, self._armed = self._armed, False
        if wake:
            self._wake()

    def take(self) -> Batch:
        """Everything queued, and what was dropped since the last take; re-arms the wake-up."""
        with self._lock:
            batch = Batch(list(self._samples), list(self._control), self._dropped_points, self._dropped_control)
            self._samples.clear()
            self._control.clear()
            self._points = self._dropped_points = self._dropped_control = 0
            self._armed = True
            self._overflow_since = None
        return batch

    def overflowing_s(self, now: float | None = None) -> float:
        """How long this queue has been dropping without being taken (monotonic s; 0 when it is not): a
        sender that takes it each batch keeps this near 0, one stuck on a client that stopped reading not."""
        since = self._overflow_since
        return 0.0 if since is None else max(0.0, (time.monotonic() if now is None else now) - since)

    @property
    def queued_points(self) -> int:
        return self._points


def batch_message(batch: Batch, seq: int, client: ClientQueue) -> dict[str, Any]:
    """The JSON body of one push to a page.

    ``hk`` rows are ``[sid, time_s, [values in the packet's channel order]]``: the page maps
    them with the dictionary's packet definitions, so channel names are not repeated at
    1000 points per second.
    """
    return {
        "type": "batch",
        "seq": seq,
        "hk": [[s.sid, s.time_s, list(s.values)] for s in batch.samples],
        "control": batch.control,
        "dropped": {
            "points": batch.dropped_points,
            "control": batch.dropped_control,
            "points_total": client.dropped_points_total,
            "control_total": client.dropped_control_total,
        },
    }


@dataclass(frozen=True)
class LagSample:
    at_ms: float  # server monotonic time the echo arrived
    lag_ms: float  # packet received → painted by the page, on the server's clock (echo method)
    lag_raf_ms: float | None  # packet received → end of the requestAnimationFrame callback that drew it
    error_ms: float  # half the batch's round-trip transit: the echo method's error bound
    lag_wall_ms: float | None  # the same from wall clocks (timeOrigin + now vs time.time()); a cross-check
    points: int


class LagTracker:
    """Push lag from each batch's echo.

    The server sends batch ``seq`` at S (its monotonic ms) holding samples received at
    ``recv_ms``. The page notes when the message arrived (R, its ``performance.now()``),
    when it was drawn (D: in a task posted from the requestAnimationFrame callback that
    applied it, which runs after that frame's style, layout and paint; the callback's own
    end is kept too, as ``lag_raf_ms``) and when it sent the echo (X); the echo reaches the
    server at E. With a and b the one-way transits,

        E − S = a + (X − R) + b,  so  a + b = (E − S) − (X − R),

    and the draw happened at S + a + (D − R) on the server's clock. Taking a = (a + b)/2
    leaves an error of at most ±(a + b)/2, reported per sample as ``error_ms`` (tens of
    microseconds on one machine). Both a and b are non-negative, so the bound is exact.
    """

    def __init__(self, keep: int = 200_000, outstanding: int = 4096):
        self._lock = threading.Lock()
        self._sent: dict[Hashable, tuple[float, list[tuple[float, int]]]] = {}
        self._outstanding = outstanding
        self.samples: deque[LagSample] = deque(maxlen=keep)

    def sent(self, key: Hashable, sent_ms: float, samples: list[Sample]) -> None:
        """Note that the batch ``key`` (a page and its batch seq) left at ``sent_ms``."""
        if not samples:
            return
        with self._lock:
            self._sent[key] = (sent_ms, [(s.recv_ms, s.points) for s in samples])
            while len(self._sent) > self._outstanding:  # a page that never echoes must not grow this
                self._sent.pop(next(iter(self._sent)))

    def drawn(
        self,
        key: Hashable,
        page_recv_ms: float,
        page_draw_ms: float,
        page_echo_ms: float,
        echo_at_ms: float,
        page_origin_ms: float | None = None,
        wall_minus_mono_ms: float | None = None,
        page_raf_ms: float | None = None,
    ) -> list[LagSample]:
        """Record the page's echo of batch ``key``; return the lag samples it gave (none for an
        unknown or repeated key). A time that is not a finite number (JSON's NaN, 1e999) is a
        ValueError naming it and leaves the batch outstanding: no lag can be made of it, and one
        NaN among the samples makes every percentile of them meaningless."""
        times = {"page_recv_ms": page_recv_ms, "page_draw_ms": page_draw_ms, "page_echo_ms": page_echo_ms,
                 "echo_at_ms": echo_at_ms, "page_origin_ms": page_origin_ms, "page_raf_ms": page_raf_ms}
        for name, value in times.items():
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}: {value} is not a time")
        with self._lock:
            entry = self._sent.pop(key, None)
        if entry is None:
            return []
        sent_ms, recvs = entry
        transit_ms = max(0.0, (echo_at_ms - sent_ms) - (page_echo_ms - page_recv_ms))
        drawn_ms = sent_ms + transit_ms / 2 + (page_draw_ms - page_recv_ms)
        raf_ms = None if page_raf_ms is None else sent_ms + transit_ms / 2 + (page_raf_ms - page_recv_ms)
        drawn_wall_ms = None if page_origin_ms is None else page_origin_ms + page_draw_ms
        out = []
        for recv_ms, points in recvs:
            wall = None
            if drawn_wall_ms is not None and wall_minus_mono_ms is not None:
                wall = drawn_wall_ms - (recv_ms + wall_minus_mono_ms)
            raf_lag = None if raf_ms is None else raf_ms - recv_ms
            out.append(LagSample(echo_at_ms, drawn_ms - recv_ms, raf_lag, transit_ms / 2, wall, points))
        with self._lock:
            self.samples.extend(out)
        return out

    def window(self, since_ms: float) -> list[LagSample]:
        with self._lock:
            return [s for s in self.samples if s.at_ms >= since_ms]

    def clear(self) -> None:
        with self._lock:
            self.samples.clear()


def weighted_percentile(values: list[float], weights: list[int], pct: float) -> float:
    """The smallest value at or below which ``pct`` % of the total weight lies (points, not batches).

    >>> weighted_percentile([10.0, 20.0, 30.0], [1, 1, 98], 50)
    30.0
    >>> weighted_percentile([5.0, 1.0], [1, 1], 50)
    1.0
    """
    if not values:
        return math.nan
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} values but {len(weights)} weights")
    pairs = sorted(zip(values, weights))
    total = sum(weights)
    need = pct / 100.0 * total
    seen = 0
    for value, weight in pairs:
        seen += weight
        if seen >= need:
            return value
    return pairs[-1][0]
