"""Push lag of the web console: packet received by the server → drawn in a real browser page.

``python -m ground.web.benchlag`` prints one JSON object as its last line, like ``bench/``.

Set-up: a synthetic source publishes the dictionary's four housekeeping packets in turn on a
real flight link (ZeroMQ over a Unix socket, the agent's own link code) at 1000 points per
second; a :class:`~ground.web.server.WebConsole` takes them in through its GroundClient as it
would from an agent, stamping each packet on receipt (monotonic clock), and pushes them to a
headless Chromium page that shows the live table and two live plots.

Measurement (see :class:`ground.web.hub.LagTracker`): for every batch the page echoes when the
message arrived, when the requestAnimationFrame callback that applied it ended, and when the
frame's rendering was done (a task posted from that callback, which runs after style, layout
and paint); the server puts those on its own clock from the echo's round trip, NTP-style. The
error of that mapping is at most half the batch's round-trip transit and is reported
(``error_ms_p99``); as a cross-check, the same lag from wall clocks (the page's
``performance.timeOrigin + now`` against the server's ``time.time()``, one machine, one
system clock) is reported too. What is *not* included: the compositor's hand-over to the
screen after paint (at most one display frame, 16.7 ms at 60 Hz; a headless page has no
display).

The lag is per point (each packet weighs its number of channels); p99 over ``duration_s``
after ``warmup_s``. The server batches at most once per ``batch_interval_s`` (50 ms), which
alone accounts for up to 50 ms.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Channel, Dictionary, ValueType
from flight.link.messages import Codec
from flight.link.transport import open_flight_link
from ground.web.browser import CHROMIUM_PATH
from ground.web.hub import weighted_percentile
from ground.web.server import DEFAULT_BATCH_INTERVAL_S, WebConsole

POINTS_PER_S = 1000.0


def _value(ch: Channel, t_s: float, k: int) -> Any:
    """A plausible value that stays inside the channel's limits (no alarm storm in a lag bench)."""
    if ch.type is ValueType.ENUM:
        return ch.choices[0]
    if ch.type is ValueType.STRING:
        return "synthetic"
    if ch.type is ValueType.BOOL:
        return False
    if ch.type in (ValueType.F32, ValueType.F64):
        lim = DICTIONARY.limits(ch.name)
        lows = [v for v in (lim.warn_low, lim.crit_low) if v is not None]
        highs = [v for v in (lim.warn_high, lim.crit_high) if v is not None]
        lo = max(lows) if lows else None
        hi = min(highs) if highs else None
        if lo is not None and hi is not None:
            centre, swing = (lo + hi) / 2, (hi - lo) / 4
        elif lo is not None:
            centre, swing = lo + 20.0, 5.0
        elif hi is not None:
            centre, swing = hi / 2, hi / 8
        else:
            centre, swing = 20.0, 5.0
        return centre + swing * math.sin(2 * math.pi * t_s / 10.0 + k)
    return 0  # counters: zero keeps every warn_high=1 limit quiet


class SyntheticTelemetry:
    """Publishes housekeeping on a real flight link at ``points_per_s`` (one point = one channel value)."""

    def __init__(self, link_url: str, points_per_s: float = POINTS_PER_S, dictionary: Dictionary = DICTIONARY):
        self.link = open_flight_link(link_url)
        self.points_per_s = points_per_s
        self.dictionary = dictionary
        self.codec = Codec(dictionary)
        self.published_points = 0
        self.published_packets = 0
        self.dropped_packets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="synthetic-tm", daemon=True)

    def start(self) -> SyntheticTelemetry:
        self._thread.start()
        return self

    def _run(self) -> None:
        packets = self.dictionary.packets
        channels = [[self.dictionary.channel_by_name[n] for n in p.channels] for p in packets]
        start = time.monotonic()
        sent_points = 0
        i = 0
        while not self._stop.is_set():
            # Packet i goes out when the points before it are due: an even point rate, whatever the sizes.
            due = start + sent_points / self.points_per_s
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            packet, chans = packets[i % len(packets)], channels[i % len(packets)]
            now = time.time()
            values = {ch.name: _value(ch, now, k) for k, ch in enumerate(chans)}
            if self.link.publish(self.codec.encode_hk(packet.sid, values, now)):
                self.published_points += len(chans)
                self.published_packets += 1
            else:
                self.dropped_packets += 1
            self.link.receive()  # take the subscriptions in (XPUB), as the agent's loop does
            sent_points += len(chans)
            i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.link.close()


def run(
    duration_s: float = 10.0,
    points_per_s: float = POINTS_PER_S,
    warmup_s: float = 2.0,
    batch_interval_s: float = DEFAULT_BATCH_INTERVAL_S,
    plots: tuple[str, ...] = ("temp_cpu_c", "battery_soc_pct"),
    browser: Any = None,
) -> dict[str, Any]:
    """Run the bench; return every figure (``web_push_lag_ms_p99`` among them).

    ``browser``: a Playwright Chromium already launched (tests share theirs); else one is
    started and closed here.
    """
    tmp = Path(tempfile.mkdtemp(prefix="sl-web-", dir="/tmp"))  # short: Unix socket paths
    url = f"zmq+ipc://{tmp}/link"
    source = SyntheticTelemetry(url, points_per_s).start()
    console = WebConsole(url, batch_interval_s=batch_interval_s, connect_timeout_s=0)
    try:
        console.start()
        deadline = time.monotonic() + 10.0
        while console.packets == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the web console received nothing from the synthetic source in 10 s")
            time.sleep(0.05)
        if browser is not None:
            measured = _measure(browser, console, source, duration_s, warmup_s, plots)
        else:
            from playwright.sync_api import sync_playwright

            from ground.web.browser import launch

            with sync_playwright() as pw:
                own = launch(pw)
                try:
                    measured = _measure(own, console, source, duration_s, warmup_s, plots)
                finally:
                    own.close()
    finally:
        console.stop()
        source.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    samples, published, dropped = measured
    if not samples:
        raise RuntimeError("the page echoed no drawn batch: no lag measured")
    weights = [s.points for s in samples]

    def p(values: list[float | None], pct: float) -> float | None:
        kept = [(v, w) for v, w in zip(values, weights) if v is not None]
        if len(kept) < len(values):
            return None
        return round(weighted_percentile([v for v, _ in kept], [w for _, w in kept], pct), 2)

    lag = [s.lag_ms for s in samples]
    drawn_points = sum(weights)
    return {
        "web_push_lag_ms_p99": p(lag, 99),
        "web_push_lag_ms_p50": p(lag, 50),
        "web_push_lag_ms_max": round(max(lag), 2),
        "web_push_lag_raf_ms_p99": p([s.lag_raf_ms for s in samples], 99),
        "web_push_lag_wallclock_ms_p99": p([s.lag_wall_ms for s in samples], 99),
        "error_ms_p99": p([s.error_ms for s in samples], 99),
        "points_per_s": points_per_s,
        "duration_s": duration_s,
        "batch_interval_ms": batch_interval_s * 1000.0,
        "points_published": published,
        "points_drawn": drawn_points,
        "points_dropped": dropped,
        "source_dropped_packets": source.dropped_packets,
        "chromium": str(CHROMIUM_PATH),
    }


def _measure(browser: Any, console: WebConsole, source: SyntheticTelemetry, duration_s: float, warmup_s: float,
             plots: tuple[str, ...]) -> tuple[list, int, int]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(console.url)
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        for name in plots:
            page.evaluate("(name) => addPlot(name)", name)
        page.wait_for_selector("#tm-temp_cpu_c[data-state=nominal]", timeout=10_000)
        time.sleep(warmup_s)  # page JIT, plots filled, ZeroMQ joined: measured after
        console.lag.clear()
        published0, t0_ms = source.published_points, time.monotonic() * 1000.0
        time.sleep(duration_s)  # a measurement window, not a wait for a condition
        published = source.published_points - published0
        samples = console.lag.window(t0_ms)
        dropped = console.dropped_points_total()
        if errors:
            raise RuntimeError(f"page errors during the bench: {errors}")
    finally:
        page.close()
    return samples, published, dropped


def measure_push_lag_ms_p99(duration_s: float = 10.0, points_per_s: float = POINTS_PER_S) -> float:
    """p99 push lag in ms (server receipt → painted in the page) at ``points_per_s``; see the module doc."""
    return run(duration_s=duration_s, points_per_s=points_per_s)["web_push_lag_ms_p99"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ground.web.benchlag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, metavar="S")
    parser.add_argument("--rate", type=float, default=POINTS_PER_S, metavar="POINTS_PER_S")
    parser.add_argument("--batch-interval", type=float, default=DEFAULT_BATCH_INTERVAL_S, metavar="S")
    args = parser.parse_args(argv)
    result = run(duration_s=args.duration, points_per_s=args.rate, batch_interval_s=args.batch_interval)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
